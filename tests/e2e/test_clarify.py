"""SageMaker Clarify bias analysis in a private subnet: a processing job with
AWS's Clarify image runs Cove's analyzer, which reads the dataset through
the job's ENI, computes pre-training metrics, creates a shadow endpoint
from the model (with the model's VpcConfig) through the SageMaker API
interface endpoint, scores the dataset through the Runtime interface
endpoint, and writes analysis.json and a report. The test computes every
metric itself from the same rows and compares. Real boto3 against a real
Cove."""

import json
import math
import uuid

import pytest

from helpers import wait_status
from test_training_jobs import ROLE, IMAGE, tar_gz, s3_endpoint, private_net, bucket, s3, sm, logs  # noqa: F401
from test_hosting import interface_endpoint

CLARIFY_IMAGE = "205585389593.dkr.ecr.us-east-1.amazonaws.com/sagemaker-clarify-processing:1.0"
HEADERS = ["approved", "gender", "income"]

# The model under audit: approves when income (the second feature) is above 0.5.
MODEL = r'''
def model_fn(model_dir):
    return None

def predict_fn(rows, model, context=None):
    return [1 if row[1] > 0.5 else 0 for row in rows]
'''


def dataset():
    """60 applicants; gender 1 is a third of them, with lower incomes and fewer approvals."""
    rows = []
    for i in range(60):
        gender = 1 if i % 3 == 0 else 0
        income = round(((i * 37) % 100) / 100 - (0.2 if gender else 0), 2)
        approved = 1 if income > 0.4 and i % 7 != 0 else 0
        rows.append([approved, gender, income])
    return rows


def expected_metrics(rows, predicted):
    """The metrics as Clarify defines them, computed here independently."""
    a = [r for r in rows if r[1] != 1]
    d = [r for r in rows if r[1] == 1]
    qa = sum(r[0] for r in a) / len(a)
    qd = sum(r[0] for r in d) / len(d)

    def kl(p, q):
        return sum(x * math.log(x / y) for x, y in zip(p, q) if x > 0 and y > 0)
    pa, pd = [qa, 1 - qa], [qd, 1 - qd]
    m = [(x + y) / 2 for x, y in zip(pa, pd)]
    pred_a = [p for p, r in zip(predicted, rows) if r[1] != 1]
    pred_d = [p for p, r in zip(predicted, rows) if r[1] == 1]
    qpa, qpd = sum(pred_a) / len(pred_a), sum(pred_d) / len(pred_d)
    return {
        "CI": (len(a) - len(d)) / len(rows),
        "DPL": qa - qd,
        "KL": kl(pa, pd),
        "JS": 0.5 * (kl(pa, m) + kl(pd, m)),
        "DPPL": qpa - qpd,
        "DI": qpd / qpa,
    }


def analysis_config(model=None, post=True):
    config = {
        "dataset_type": "text/csv",
        "headers": HEADERS,
        "label": "approved",
        "label_values_or_threshold": [1],
        "facet": [{"name_or_index": "gender", "value_or_threshold": [1]}],
        "methods": {
            "pre_training_bias": {"methods": ["CI", "DPL", "KL", "JS"]},
            "report": {"name": "report", "title": "Loan approvals"},
        },
    }
    if post:
        config["methods"]["post_training_bias"] = {"methods": ["DPPL", "DI"]}
        config["predictor"] = {"model_name": model, "instance_type": "ml.m5.large", "initial_instance_count": 1,
                               "content_type": "text/csv", "accept_type": "text/csv"}
    return config


def clarify_request(name, bucket, prefix, net, isolated=False):
    request = {
        "ProcessingJobName": name,
        "RoleArn": ROLE,
        "AppSpecification": {"ImageUri": CLARIFY_IMAGE},
        "ProcessingInputs": [
            {"InputName": "dataset", "S3Input": {
                "S3Uri": f"s3://{bucket}/{prefix}/data", "LocalPath": "/opt/ml/processing/input/data",
                "S3DataType": "S3Prefix", "S3InputMode": "File"}},
            {"InputName": "analysis_config", "S3Input": {
                "S3Uri": f"s3://{bucket}/{prefix}/config/analysis_config.json",
                "LocalPath": "/opt/ml/processing/input/config", "S3DataType": "S3Prefix", "S3InputMode": "File"}},
        ],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "analysis_result", "S3Output": {
            "S3Uri": f"s3://{bucket}/{prefix}/output", "LocalPath": "/opt/ml/processing/output",
            "S3UploadMode": "EndOfJob"}}]},
        "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1,
                                                  "VolumeSizeInGB": 1}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 300},
        "NetworkConfig": {"EnableNetworkIsolation": isolated,
                          "VpcConfig": {"Subnets": net["subnets"], "SecurityGroupIds": [net["sg"]]}},
    }
    return request


def stage(s3, bucket, config):
    prefix = f"clarify-{uuid.uuid4().hex[:8]}"
    body = "\n".join(",".join(str(v) for v in r) for r in dataset()) + "\n"
    s3.put_object(Bucket=bucket, Key=f"{prefix}/data/train.csv", Body=body)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/config/analysis_config.json", Body=json.dumps(config))
    return prefix


def wait_job(sm, name, timeout=120):
    return wait_status(lambda: sm.describe_processing_job(ProcessingJobName=name), "ProcessingJobStatus",
                       ("Completed", "Failed", "Stopped"), timeout, f"processing job {name}")


def metrics_of(section):
    groups = section["facets"]["gender"]
    assert [g["value_or_threshold"] for g in groups] == ["1"]
    return {m["name"]: m["value"] for m in groups[0]["metrics"]}


@pytest.fixture
def model(s3, sm, bucket, private_net):  # noqa: F811
    s3.put_object(Bucket=bucket, Key="clarify/model.tar.gz", Body=tar_gz({"code/inference.py": MODEL}))
    name = f"audited-{uuid.uuid4().hex[:8]}"
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": IMAGE, "ModelDataUrl": f"s3://{bucket}/clarify/model.tar.gz",
        "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}},
        VpcConfig={"Subnets": private_net["subnets"], "SecurityGroupIds": [private_net["sg"]]})
    return name


def test_clarify_bias_metrics_match_an_independent_computation(ec2, s3, sm, logs, bucket, private_net, model):  # noqa: F811
    ec2.modify_vpc_attribute(VpcId=private_net["vpc"], EnableDnsHostnames={"Value": True})
    s3_endpoint(ec2, private_net)
    interface_endpoint(ec2, private_net, "api", private_net["sg"])
    interface_endpoint(ec2, private_net, "runtime", private_net["sg"])
    prefix = stage(s3, bucket, analysis_config(model))
    name = f"clarify-{uuid.uuid4().hex[:8]}"
    sm.create_processing_job(**clarify_request(name, bucket, prefix, private_net))
    d = wait_job(sm, name)
    assert d["ProcessingJobStatus"] == "Completed", (d.get("FailureReason"), d.get("ExitMessage"))

    analysis = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/output/analysis.json")["Body"].read())
    rows = dataset()
    want = expected_metrics(rows, [1 if r[2] > 0.5 else 0 for r in rows])
    pre = analysis["pre_training_bias_metrics"]
    assert pre["label"] == "approved" and pre["label_value_or_threshold"] == "1"
    post = analysis["post_training_bias_metrics"]
    got = {**metrics_of(pre), **metrics_of(post)}
    assert set(got) == {"CI", "DPL", "KL", "JS", "DPPL", "DI"}
    for metric, value in want.items():
        assert got[metric] == pytest.approx(value, abs=1e-9), (metric, got[metric], value)
    # The dataset is biased and so is the model: the figures are not trivial.
    assert want["DPL"] > 0.1 and 0 < want["DI"] < 0.8 and want["KL"] > 0

    report = s3.get_object(Bucket=bucket, Key=f"{prefix}/output/report.html")["Body"].read().decode()
    assert "<h1>Loan approvals</h1>" in report and "Disparate Impact (DI)" in report
    assert f"{want['DI']:.4f}" in report

    # The shadow endpoint was created from the model and is gone again.
    stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/ProcessingJobs",
                                       logStreamNamePrefix=name)["logStreams"][0]["logStreamName"]
    text = "\n".join(e["message"] for e in logs.get_log_events(
        logGroupName="/aws/sagemaker/ProcessingJobs", logStreamName=stream)["events"])
    assert f"for model {model}" in text and "Deleted shadow endpoint" in text, text
    shadow = [e["EndpointName"] for e in sm.list_endpoints(NameContains="sm-clarify", MaxResults=100)["Endpoints"]
              if model in e["EndpointName"]]
    for endpoint in shadow:
        assert sm.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "Deleting"


def test_network_isolation_fails_post_training_but_not_pre_training(ec2, s3, sm, bucket, private_net, model):  # noqa: F811
    ec2.modify_vpc_attribute(VpcId=private_net["vpc"], EnableDnsHostnames={"Value": True})
    s3_endpoint(ec2, private_net)
    interface_endpoint(ec2, private_net, "api", private_net["sg"])
    interface_endpoint(ec2, private_net, "runtime", private_net["sg"])
    post = f"clarify-iso-{uuid.uuid4().hex[:8]}"
    sm.create_processing_job(**clarify_request(post, bucket, stage(s3, bucket, analysis_config(model)),
                                               private_net, isolated=True))
    pre_prefix = stage(s3, bucket, analysis_config(post=False))
    pre = f"clarify-pre-{uuid.uuid4().hex[:8]}"
    sm.create_processing_job(**clarify_request(pre, bucket, pre_prefix, private_net, isolated=True))

    d = wait_job(sm, post)
    assert d["ProcessingJobStatus"] == "Failed"
    assert d["FailureReason"] == "AlgorithmError: See job logs for more information"
    assert d["ExitMessage"].startswith("ClientError: Unable to reach api.sagemaker.us-east-1.amazonaws.com"), d["ExitMessage"]
    assert "network isolation" in d["ExitMessage"]

    d = wait_job(sm, pre)
    assert d["ProcessingJobStatus"] == "Completed", d.get("ExitMessage")
    analysis = json.loads(s3.get_object(Bucket=bucket, Key=f"{pre_prefix}/output/analysis.json")["Body"].read())
    assert "post_training_bias_metrics" not in analysis
    rows = dataset()
    assert metrics_of(analysis["pre_training_bias_metrics"])["CI"] == pytest.approx(
        expected_metrics(rows, [r[0] for r in rows])["CI"])
