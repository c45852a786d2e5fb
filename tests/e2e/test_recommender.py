"""SageMaker Inference Recommender: the model really deployed behind a
temporary endpoint per candidate instance type, on ENIs in the job's
private subnets, loaded at rising concurrency, measured and torn down.
Real boto3 against a real Cove."""

import json
import time
import uuid

import pytest

from helpers import aws_error
from test_training_jobs import ROLE, IMAGE, tar_gz, s3_endpoint, private_net, bucket, s3, sm, logs  # noqa: F401
from test_hosting import INFERENCE

PRICES = {"ml.c5.large": 0.102, "ml.c5.xlarge": 0.204}


def payload_archive():
    return tar_gz({f"payload-{i}.json": json.dumps({"inputs": [i, i + 1]}) for i in range(3)})


@pytest.fixture
def staged(s3, sm, bucket, private_net):  # noqa: F811
    prefix = f"ir-{uuid.uuid4().hex[:8]}"
    s3.put_object(Bucket=bucket, Key=f"{prefix}/model.tar.gz",
                  Body=tar_gz({"model.json": json.dumps({"version": 1, "scale": 3}), "code/inference.py": INFERENCE}))
    s3.put_object(Bucket=bucket, Key=f"{prefix}/payload.tar.gz", Body=payload_archive())
    model = f"ir-model-{uuid.uuid4().hex[:8]}"
    sm.create_model(ModelName=model, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": IMAGE, "ModelDataUrl": f"s3://{bucket}/{prefix}/model.tar.gz",
        "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}})
    return {"model": model, "payload": f"s3://{bucket}/{prefix}/payload.tar.gz"}


def job_request(name, staged, net, job_type="Advanced", types=("ml.c5.large", "ml.c5.xlarge")):
    config = {
        "ModelName": staged["model"],
        "ContainerConfig": {"PayloadConfig": {"SamplePayloadUrl": staged["payload"],
                                              "SupportedContentTypes": ["application/json"]}},
        "TrafficPattern": {"TrafficType": "STAIRS",
                           "Stairs": {"DurationInSeconds": 4, "NumberOfSteps": 2, "UsersPerStep": 2}},
        "VpcConfig": {"Subnets": net["subnets"], "SecurityGroupIds": [net["sg"]]},
    }
    if job_type == "Advanced":
        config["EndpointConfigurations"] = [{"InstanceType": t} for t in types]
    else:
        config["ContainerConfig"]["SupportedInstanceTypes"] = list(types)
    return {"JobName": name, "JobType": job_type, "RoleArn": ROLE, "InputConfig": config,
            "StoppingConditions": {"ModelLatencyThresholds": [{"Percentile": "P95", "ValueInMilliseconds": 500}]}}


def wait_job(sm, name, ec2=None, vpc=None, timeout=180):
    """Waits for the job; with `ec2`, also collects the descriptions of the
    requester-managed ENIs seen in `vpc` meanwhile."""
    seen = set()
    deadline = time.time() + timeout
    while True:
        d = sm.describe_inference_recommendations_job(JobName=name)
        if ec2 is not None:
            for e in ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["NetworkInterfaces"]:
                if e["RequesterManaged"]:
                    seen.add((e["Description"], e["SubnetId"]))
        if d["Status"] in ("COMPLETED", "FAILED", "STOPPED"):
            return d, seen
        assert time.time() < deadline, f"{name} still {d['Status']}"
        time.sleep(0.2)


def test_recommender_measures_two_instance_types_inside_the_vpc(ec2, sm, staged, private_net):  # noqa: F811
    s3_endpoint(ec2, private_net)
    name = f"ir-{uuid.uuid4().hex[:8]}"
    arn = sm.create_inference_recommendations_job(**job_request(name, staged, private_net))["JobArn"]
    assert arn.endswith(f":inference-recommendations-job/{name}")
    d, enis = wait_job(sm, name, ec2, private_net["vpc"])
    assert d["Status"] == "COMPLETED", d.get("FailureReason")

    recs = d["InferenceRecommendations"]
    assert sorted(r["EndpointConfiguration"]["InstanceType"] for r in recs) == sorted(PRICES)
    costs = [r["Metrics"]["CostPerInference"] for r in recs]
    assert costs == sorted(costs), "recommendations are ranked by cost per inference"
    for r in recs:
        m, t = r["Metrics"], r["EndpointConfiguration"]["InstanceType"]
        assert m["CostPerHour"] == pytest.approx(PRICES[t])
        # Measured: more than one call a second at up to four users, each within the threshold.
        assert m["MaxInvocations"] > 60, m
        assert 0 <= m["ModelLatency"] <= 500, m
        assert m["CostPerInference"] == pytest.approx(PRICES[t] / (m["MaxInvocations"] * 60), rel=0.02)
        assert m["ModelSetupTime"] >= 1
        assert r["InvocationStartTime"] <= r["InvocationEndTime"]
        # The temporary endpoint ran on an ENI in the job's subnets, and is gone.
        endpoint = r["EndpointConfiguration"]["EndpointName"]
        assert any(f"Endpoint {endpoint} " in desc and subnet in private_net["subnets"] for desc, subnet in enis), enis
        assert "Could not find endpoint" in aws_error("ValidationException", sm.describe_endpoint, EndpointName=endpoint) \
            or sm.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "Deleting"
        assert "Could not find model" in aws_error("ValidationException", sm.describe_model, ModelName=endpoint)

    steps = sm.list_inference_recommendations_job_steps(JobName=name)["Steps"]
    assert [(s["StepType"], s["Status"]) for s in steps] == [("BENCHMARK", "COMPLETED")] * 2
    assert {s["InferenceBenchmark"]["EndpointConfiguration"]["InstanceType"] for s in steps} == set(PRICES)
    assert all(s["InferenceBenchmark"]["EndpointMetrics"]["MaxInvocations"] > 60 for s in steps)
    listed = sm.list_inference_recommendations_jobs(ModelNameEquals=staged["model"])["InferenceRecommendationsJobs"]
    assert [(j["JobName"], j["Status"], j["JobType"]) for j in listed] == [(name, "COMPLETED", "Advanced")]


def test_recommender_in_a_subnet_without_s3_fails_as_the_endpoint_does(sm, staged, private_net):  # noqa: F811
    name = f"ir-noroute-{uuid.uuid4().hex[:8]}"
    sm.create_inference_recommendations_job(**job_request(name, staged, private_net, "Default", ["ml.c5.large"]))
    d, _ = wait_job(sm, name)
    assert d["Status"] == "FAILED"
    assert "Failed to download model data" in d["FailureReason"], d["FailureReason"]
    steps = sm.list_inference_recommendations_job_steps(JobName=name, Status="FAILED")["Steps"]
    assert len(steps) == 1 and "Failed to download model data" in steps[0]["InferenceBenchmark"]["FailureReason"]


def test_recommender_validation_and_stop(sm, staged, private_net):  # noqa: F811
    bare = job_request(f"ir-{uuid.uuid4().hex[:8]}", staged, private_net)
    del bare["InputConfig"]["EndpointConfigurations"]
    assert "EndpointConfigurations is required" in aws_error(
        "ValidationException", sm.create_inference_recommendations_job, **bare)
    missing = job_request(f"ir-{uuid.uuid4().hex[:8]}", staged, private_net)
    missing["InputConfig"]["ModelName"] = "no-such-model"
    assert "Could not find model" in aws_error("ValidationException", sm.create_inference_recommendations_job, **missing)
    assert aws_error("ResourceNotFound", sm.describe_inference_recommendations_job, JobName="nope") == \
        "Inference recommendations job nope does not exist."

    name = f"ir-stop-{uuid.uuid4().hex[:8]}"
    sm.create_inference_recommendations_job(**job_request(name, staged, private_net))
    sm.stop_inference_recommendations_job(JobName=name)
    d, _ = wait_job(sm, name)
    assert d["Status"] == "STOPPED"
    assert "already exists" in aws_error(
        "ResourceInUse", sm.create_inference_recommendations_job, **job_request(name, staged, private_net))
    assert "status STOPPED" in aws_error("ValidationException", sm.stop_inference_recommendations_job, JobName=name)
