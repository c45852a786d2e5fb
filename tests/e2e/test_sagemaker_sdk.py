"""The SageMaker Python SDK, unchanged, against Cove: a framework Estimator
and a Processor with `subnets` and `security_group_ids`, in a private subnet
whose only way to S3 is a gateway endpoint. The SDK uploads the source
directory, creates the job, follows it with `logs=True` and reads the
result exactly as it does on AWS."""

import json
import os
import tarfile
import io
import uuid

import boto3
import pytest

from conftest import ACCESS_KEY, REGION, SECRET_KEY
from test_training_jobs import ROLE, private_net, s3_endpoint, tar_gz  # noqa: F401  (fixture re-export)

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
sagemaker = pytest.importorskip("sagemaker")
from sagemaker.network import NetworkConfig  # noqa: E402
from sagemaker.processing import ProcessingInput, ProcessingOutput  # noqa: E402
from sagemaker.sklearn import SKLearn, SKLearnProcessor  # noqa: E402

TRAIN = '''
import argparse, json, os
p = argparse.ArgumentParser()
p.add_argument("--alpha", type=float)
args = p.parse_args()
rows = sum(1 for n in os.listdir(os.environ["SM_CHANNEL_TRAIN"])
           for _ in open(os.path.join(os.environ["SM_CHANNEL_TRAIN"], n)))
print(f"fitting {rows} rows with alpha={args.alpha}", flush=True)
json.dump({"rows": rows, "alpha": args.alpha}, open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w"))
'''

PREPROCESS = '''
import os
rows = open("/opt/ml/processing/input/data/raw.csv").read().splitlines()
open("/opt/ml/processing/output/clean.csv", "w").write("\\n".join(r.strip().lower() for r in rows) + "\\n")
print("cleaned", len(rows), "rows", flush=True)
'''


@pytest.fixture
def sdk_session(cove_server, monkeypatch, tmp_path):
    # Every client the SDK makes (S3, SageMaker, Logs, STS) goes to Cove.
    monkeypatch.setenv("AWS_ENDPOINT_URL", cove_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    bucket = f"sdk-{uuid.uuid4().hex[:12]}"
    boto = boto3.Session(region_name=REGION)
    boto.client("s3").create_bucket(Bucket=bucket)
    return sagemaker.Session(boto_session=boto, default_bucket=bucket), bucket, tmp_path


def test_estimator_fit_in_private_subnet(ec2, sdk_session, private_net):  # noqa: F811
    session, bucket, tmp = sdk_session
    s3_endpoint(ec2, private_net)
    s3 = session.boto_session.client("s3")
    for i in range(2):
        s3.put_object(Bucket=bucket, Key=f"train/part-{i}.csv", Body="".join(f"{n},{n}\n" for n in range(5)))
    src = tmp / "src"
    src.mkdir()
    (src / "train.py").write_text(TRAIN)
    estimator = SKLearn(
        entry_point="train.py", source_dir=str(src), framework_version="1.2-1", py_version="py3",
        role=ROLE, instance_type="ml.m5.large", instance_count=1, hyperparameters={"alpha": 0.5},
        subnets=private_net["subnets"], security_group_ids=[private_net["sg"]],
        sagemaker_session=session, base_job_name="sdk-sklearn",
    )
    estimator.fit({"train": f"s3://{bucket}/train"}, wait=True, logs=True)
    job = estimator.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Completed"
    assert job["VpcConfig"] == {"Subnets": private_net["subnets"], "SecurityGroupIds": [private_net["sg"]]}
    model = estimator.model_data
    bucket_name, key = model[len("s3://"):].split("/", 1)
    body = s3.get_object(Bucket=bucket_name, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as t:
        assert json.load(t.extractfile("model.json")) == {"rows": 10, "alpha": 0.5}


def test_estimator_fit_on_an_efs_file_system_input(cove_server, ec2, sdk_session, private_net):  # noqa: F811
    from sagemaker.inputs import FileSystemInput
    session, bucket, tmp = sdk_session
    s3_endpoint(ec2, private_net)
    efs = cove_server.client("efs")
    efs_sg = ec2.create_security_group(GroupName="efs", Description="mount targets", VpcId=private_net["vpc"])["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=efs_sg, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 2049, "ToPort": 2049, "UserIdGroupPairs": [{"GroupId": private_net["sg"]}]}])
    fs = efs.create_file_system(CreationToken=str(uuid.uuid4()))["FileSystemId"]
    targets = [efs.create_mount_target(FileSystemId=fs, SubnetId=s, SecurityGroups=[efs_sg])["MountTargetId"]
               for s in private_net["subnets"]]
    try:
        # The dataset, as another machine would have put it on the file system.
        data = os.path.join(cove_server.data_dir, "efs", fs, "datasets", "train")
        os.makedirs(data)
        for i in range(3):
            with open(os.path.join(data, f"part-{i}.csv"), "w") as f:
                f.write("".join(f"{n},{n}\n" for n in range(4)))
        src = tmp / "src"
        src.mkdir()
        (src / "train.py").write_text(TRAIN)
        estimator = SKLearn(
            entry_point="train.py", source_dir=str(src), framework_version="1.2-1", py_version="py3",
            role=ROLE, instance_type="ml.m5.large", instance_count=1, hyperparameters={"alpha": 0.1},
            subnets=private_net["subnets"], security_group_ids=[private_net["sg"]],
            sagemaker_session=session, base_job_name="sdk-efs",
        )
        estimator.fit({"train": FileSystemInput(file_system_id=fs, file_system_type="EFS",
                                                directory_path="/datasets/train", file_system_access_mode="ro")},
                      wait=True, logs=False)
        job = estimator.latest_training_job.describe()
        assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
        assert job["InputDataConfig"][0]["DataSource"]["FileSystemDataSource"]["DirectoryPath"] == "/datasets/train"
        bucket_name, key = estimator.model_data[len("s3://"):].split("/", 1)
        body = session.boto_session.client("s3").get_object(Bucket=bucket_name, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as t:
            assert json.load(t.extractfile("model.json")) == {"rows": 12, "alpha": 0.1}
    finally:
        for mt in targets:
            efs.delete_mount_target(MountTargetId=mt)
        efs.delete_file_system(FileSystemId=fs)


def test_processor_run_in_private_subnet(ec2, sdk_session, private_net):  # noqa: F811
    session, bucket, tmp = sdk_session
    s3_endpoint(ec2, private_net)
    s3 = session.boto_session.client("s3")
    s3.put_object(Bucket=bucket, Key="raw/raw.csv", Body="A,B\nC,D\n")
    code = tmp / "preprocess.py"
    code.write_text(PREPROCESS)
    processor = SKLearnProcessor(
        framework_version="1.2-1", role=ROLE, instance_type="ml.m5.large", instance_count=1,
        network_config=NetworkConfig(subnets=private_net["subnets"], security_group_ids=[private_net["sg"]]),
        sagemaker_session=session, base_job_name="sdk-proc",
    )
    processor.run(
        code=str(code),
        inputs=[ProcessingInput(source=f"s3://{bucket}/raw", destination="/opt/ml/processing/input/data")],
        outputs=[ProcessingOutput(source="/opt/ml/processing/output", destination=f"s3://{bucket}/clean")],
        wait=True, logs=True,
    )
    assert processor.latest_job.describe()["ProcessingJobStatus"] == "Completed"
    assert s3.get_object(Bucket=bucket, Key="clean/clean.csv")["Body"].read() == b"a,b\nc,d\n"


def test_model_deploy_predict_and_transform_in_private_subnets(ec2, sdk_session, private_net):  # noqa: F811
    import functools
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import JSONSerializer
    from sagemaker.sklearn import SKLearnModel
    from test_hosting import INFERENCE

    session, bucket, tmp = sdk_session
    # The SDK polls endpoints every 30 s; a second is enough here.
    session.wait_for_endpoint = functools.partial(session.wait_for_endpoint, poll=1)
    s3_endpoint(ec2, private_net)
    s3 = session.boto_session.client("s3")
    s3.put_object(Bucket=bucket, Key="model/model.tar.gz", Body=tar_gz({"model.json": json.dumps({"version": 7, "scale": 3})}))
    src = tmp / "serve"
    src.mkdir()
    (src / "inference.py").write_text(INFERENCE)
    model = SKLearnModel(
        model_data=f"s3://{bucket}/model/model.tar.gz", role=ROLE, entry_point="inference.py", source_dir=str(src),
        framework_version="1.2-1", py_version="py3", sagemaker_session=session,
        vpc_config={"Subnets": private_net["subnets"], "SecurityGroupIds": [private_net["sg"]]},
    )
    predictor = model.deploy(initial_instance_count=1, instance_type="ml.m5.large",
                             serializer=JSONSerializer(), deserializer=JSONDeserializer())
    try:
        out = predictor.predict({"inputs": [1, 2, 3]})
        assert (out["version"], out["outputs"]) == (7, [3, 6, 9])
        described = session.sagemaker_client.describe_model(ModelName=model.name)
        assert described["VpcConfig"]["Subnets"] == private_net["subnets"]

        s3.put_object(Bucket=bucket, Key="batch/in/a.jsonl", Body="\n".join(json.dumps({"inputs": [i]}) for i in range(4)))
        transformer = model.transformer(instance_count=1, instance_type="ml.m5.large", strategy="SingleRecord",
                                        assemble_with="Line", accept="application/json",
                                        output_path=f"s3://{bucket}/batch/out")
        transformer.transform(f"s3://{bucket}/batch/in", content_type="application/json", split_type="Line",
                              wait=True, logs=False)
        body = s3.get_object(Bucket=bucket, Key="batch/out/a.jsonl.out")["Body"].read().decode()
        assert [json.loads(line)["outputs"] for line in body.splitlines()] == [[0], [3], [6], [9]]
    finally:
        predictor.delete_endpoint(delete_endpoint_config=True)


def test_clarify_processor_pre_training_bias_in_private_subnet(ec2, sdk_session, private_net):  # noqa: F811
    """`SageMakerClarifyProcessor.run_pre_training_bias`, unchanged: the SDK
    picks AWS's Clarify image, writes analysis_config.json and creates the
    processing job; Cove's analyzer answers with Clarify's analysis.json."""
    from sagemaker import clarify
    from test_clarify import HEADERS, dataset, expected_metrics
    session, bucket, _ = sdk_session
    s3_endpoint(ec2, private_net)
    s3 = session.boto_session.client("s3")
    rows = dataset()
    s3.put_object(Bucket=bucket, Key="clarify/train.csv", Body="".join(",".join(map(str, r)) + "\n" for r in rows))
    processor = clarify.SageMakerClarifyProcessor(
        role=ROLE, instance_count=1, instance_type="ml.m5.large", sagemaker_session=session,
        network_config=NetworkConfig(subnets=private_net["subnets"], security_group_ids=[private_net["sg"]]))
    data = clarify.DataConfig(s3_data_input_path=f"s3://{bucket}/clarify/train.csv",
                              s3_output_path=f"s3://{bucket}/clarify/out", label="approved", headers=HEADERS,
                              dataset_type="text/csv")
    bias = clarify.BiasConfig(label_values_or_threshold=[1], facet_name="gender", facet_values_or_threshold=[1])
    processor.run_pre_training_bias(data, bias, methods=["CI", "DPL", "KL", "JS"], wait=True, logs=False)
    job = processor.latest_job.describe()
    assert job["ProcessingJobStatus"] == "Completed", job.get("ExitMessage")
    assert "sagemaker-clarify-processing" in job["AppSpecification"]["ImageUri"]
    analysis = json.loads(s3.get_object(Bucket=bucket, Key="clarify/out/analysis.json")["Body"].read())
    metrics = {m["name"]: m["value"] for m in analysis["pre_training_bias_metrics"]["facets"]["gender"][0]["metrics"]}
    want = expected_metrics(rows, [r[0] for r in rows])
    for name in ("CI", "DPL", "KL", "JS"):
        assert metrics[name] == pytest.approx(want[name], abs=1e-9), name
