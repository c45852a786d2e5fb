"""Real ML in Cove's framework images: `scripts/framework-images.sh` builds
the scikit-learn image from Debian's packages and pushes it under AWS's
image URIs; the SageMaker Python SDK, unchanged, trains a scikit-learn model
with numpy, pandas and joblib (and a requirements.txt installed through a
NAT gateway) in a private subnet, then deploys it from the same image and
gets predictions."""
import functools
import os
import subprocess

import boto3
import pytest

from conftest import ACCESS_KEY, REGION, ROOT, SECRET_KEY, BINARY, nat_gateway, teardown_vpc
from test_training_jobs import ROLE, demo_wheel

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
sagemaker = pytest.importorskip("sagemaker")

TRAIN = '''
import argparse, os
import joblib, numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
import cove_demo_pkg

p = argparse.ArgumentParser()
p.add_argument("--C", type=float, default=1.0)
args = p.parse_args()
frame = pd.concat(pd.read_csv(os.path.join(os.environ["SM_CHANNEL_TRAIN"], f), header=None)
                  for f in sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"])))
x, y = frame[[1, 2]].to_numpy(), frame[0].to_numpy()
model = LogisticRegression(C=args.C).fit(x, y)
print(f"accuracy={model.score(x, y):.3f} numpy={np.__version__} demo={cove_demo_pkg.ANSWER}", flush=True)
joblib.dump(model, os.path.join(os.environ["SM_MODEL_DIR"], "model.joblib"))
'''

INFERENCE = '''
import os
import joblib, numpy as np

def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))

def predict_fn(data, model):
    return model.predict(np.asarray(data["instances"], dtype=float)).tolist()
'''


def private_subnet_with_s3(ec2, vpc):
    """A subnet, a job group and an S3 gateway endpoint on the main route table."""
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="job", Description="job", VpcId=vpc)["GroupId"]
    rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
    ec2.create_vpc_endpoint(VpcId=vpc, ServiceName=f"com.amazonaws.{REGION}.s3", RouteTableIds=[rt])
    return subnet, sg, rt


def sdk_session(cove, monkeypatch, bucket):
    """A SageMaker SDK session whose every client goes to `cove`, and its bucket."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", cove.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    boto = boto3.Session(region_name=REGION)
    boto.client("s3").create_bucket(Bucket=bucket)
    session = sagemaker.Session(boto_session=boto, default_bucket=bucket)
    session.wait_for_endpoint = functools.partial(session.wait_for_endpoint, poll=1)
    return boto, session


@pytest.fixture
def sklearn_cove(fresh_cove):
    """A Cove whose registry holds the scikit-learn and XGBoost framework
    images (the script's default: one root filesystem for both)."""
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "framework-images.sh"),
                          "--data-dir", fresh_cove.data_dir],
                         capture_output=True, text=True, timeout=1200, env={**os.environ, "COVE_BIN": BINARY})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sagemaker-scikit-learn:1.2-1-cpu-py3@sha256:" in out.stdout
    assert "sagemaker-xgboost:1.7-1@sha256:" in out.stdout
    return fresh_cove


def test_sklearn_image_trains_with_numpy_pandas_and_serves_from_the_same_image(sklearn_cove, monkeypatch, tmp_path):
    cove = sklearn_cove
    ec2 = cove.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    try:
        subnet, sg, rt = private_subnet_with_s3(ec2, vpc)
        public = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.9.0/24")["Subnet"]["SubnetId"]
        nat, _ = nat_gateway(ec2, vpc, public)
        ec2.create_route(RouteTableId=rt, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
        index = os.path.join(cove.data_dir, "pypi")
        os.makedirs(index, exist_ok=True)
        demo_wheel(index)

        bucket = "sklearn-image-test"
        boto, session = sdk_session(cove, monkeypatch, bucket)
        s3 = boto.client("s3")
        rows = "".join(f"{int(a + b > 10)},{a},{b}\n" for a in range(10) for b in range(10))
        s3.put_object(Bucket=bucket, Key="train/data.csv", Body=rows)

        src = tmp_path / "src"
        src.mkdir()
        (src / "train.py").write_text(TRAIN)
        (src / "requirements.txt").write_text("cove-demo-pkg==1.0\n")
        from sagemaker.sklearn import SKLearn, SKLearnModel
        estimator = SKLearn(
            entry_point="train.py", source_dir=str(src), framework_version="1.2-1", py_version="py3",
            role=ROLE, instance_type="ml.m5.large", instance_count=1, hyperparameters={"C": 10.0},
            subnets=[subnet], security_group_ids=[sg], sagemaker_session=session, base_job_name="real-sklearn",
        )
        estimator.fit({"train": f"s3://{bucket}/train"}, wait=True, logs=False)
        job = estimator.latest_training_job.describe()
        assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
        logs = boto.client("logs")
        stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                           logStreamNamePrefix=job["TrainingJobName"])["logStreams"][0]
        messages = [e["message"] for e in logs.get_log_events(
            logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream["logStreamName"],
            startFromHead=True)["events"]]
        assert any(m.startswith("accuracy=") and "demo=42" in m for m in messages), messages

        serve = tmp_path / "serve"
        serve.mkdir()
        (serve / "inference.py").write_text(INFERENCE)
        from sagemaker.deserializers import JSONDeserializer
        from sagemaker.serializers import JSONSerializer
        model = SKLearnModel(model_data=estimator.model_data, role=ROLE, entry_point="inference.py",
                             source_dir=str(serve), framework_version="1.2-1", py_version="py3",
                             sagemaker_session=session,
                             vpc_config={"Subnets": [subnet], "SecurityGroupIds": [sg]})
        predictor = model.deploy(initial_instance_count=1, instance_type="ml.m5.large",
                                 serializer=JSONSerializer(), deserializer=JSONDeserializer())
        try:
            assert predictor.predict({"instances": [[0, 1], [9, 9]]}) == [0, 1]
        finally:
            predictor.delete_endpoint(delete_endpoint_config=True)
    finally:
        teardown_vpc(ec2, vpc)


DISTRIBUTED = '''
import json, os, socket
import torch, torch.distributed as dist
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
print(f"rank {rank} of {world} on {socket.gethostname()}: sum {t.item()}", flush=True)
if rank == 0:
    json.dump({"world": world, "sum": t.item(), "master": os.environ["MASTER_ADDR"]},
              open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w"))
dist.destroy_process_group()
'''


def job_log(cove, name):
    """Every line the job's hosts logged, stream by stream."""
    logs = cove.client("logs")
    out = []
    for stream in logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                            logStreamNamePrefix=name)["logStreams"]:
        events = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                     logStreamName=stream["logStreamName"], startFromHead=True)["events"]
        out += [f"{stream['logStreamName']}: {e['message']}" for e in events]
    return "\n".join(out)


@pytest.fixture
def pytorch_cove(fresh_cove):
    """A Cove whose registry holds the PyTorch framework image."""
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "framework-images.sh"),
                          "--data-dir", fresh_cove.data_dir, "pytorch"],
                         capture_output=True, text=True, timeout=1800, env={**os.environ, "COVE_BIN": BINARY})
    assert out.returncode == 0, out.stdout + out.stderr
    return fresh_cove


def two_zone_network(ec2, vpc):
    """Two private subnets in two zones, an S3 gateway endpoint, and a group
    whose members reach each other (a distributed job's hosts rendezvous,
    ssh and exchange tensors only as their group allows)."""
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{az}")
               ["Subnet"]["SubnetId"] for i, az in ((1, "a"), (2, "b"))]
    sg = ec2.create_security_group(GroupName="hosts", Description="hosts", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": sg}]}])
    rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
    ec2.create_vpc_endpoint(VpcId=vpc, ServiceName=f"com.amazonaws.{REGION}.s3", RouteTableIds=[rt])
    return subnets, sg


def test_torch_distributed_trains_across_two_hosts_in_two_subnets(pytorch_cove):
    import io
    import json
    import tarfile
    from test_training_jobs import tar_gz
    cove = pytorch_cove
    ec2, s3, sm = cove.client("ec2"), cove.client("s3"), cove.client("sagemaker")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    try:
        subnets, sg = two_zone_network(ec2, vpc)
        bucket = "ddp-test"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=tar_gz({"train.py": DISTRIBUTED}))
        s3.put_object(Bucket=bucket, Key="data/x.csv", Body="1\n")
        image = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.0-cpu-py310"
        sm.create_training_job(
            TrainingJobName="ddp", RoleArn=ROLE,
            AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File"},
            HyperParameters={"sagemaker_program": '"train.py"',
                             "sagemaker_submit_directory": f'"s3://{bucket}/code/sourcedir.tar.gz"',
                             "sagemaker_torch_distributed_enabled": "true"},
            InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/data"}}}],
            OutputDataConfig={"S3OutputPath": f"s3://{bucket}/output"},
            ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 5},
            StoppingCondition={"MaxRuntimeInSeconds": 600},
            VpcConfig={"Subnets": subnets, "SecurityGroupIds": [sg]},
        )
        from helpers import wait_status
        d = wait_status(lambda: sm.describe_training_job(TrainingJobName="ddp"), "TrainingJobStatus",
                        ("Completed", "Failed", "Stopped"), 300, "ddp", interval=0.5)
        if d["TrainingJobStatus"] != "Completed":
            print(job_log(cove, "ddp"))
        assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
        body = s3.get_object(Bucket=bucket, Key="output/ddp/output/model.tar.gz")["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as t:
            assert json.load(t.extractfile("model.json")) == {"world": 2, "sum": 3.0, "master": "algo-1"}
    finally:
        teardown_vpc(ec2, vpc)


MPI_SCRIPT = '''
import json, os, socket
from mpi4py import MPI
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
total = comm.allreduce(rank + 1)
hosts = comm.gather(socket.gethostname(), root=0)
print(f"rank {rank} of {size} on {socket.gethostname()}: sum {total}", flush=True)
if rank == 0:
    json.dump({"world": size, "sum": total, "hosts": sorted(set(hosts)),
               "ompi_world": os.environ["OMPI_COMM_WORLD_SIZE"], "epochs": os.environ["SM_HP_EPOCHS"]},
              open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w"))
'''


def test_mpi_distribution_runs_ranks_on_two_hosts_through_their_sshd(pytorch_cove, monkeypatch, tmp_path):
    """The SDK's `distribution={"mpi": ...}`: mpirun on the first host
    starts two ranks on each host, reaching the second through its sshd
    on port 22, inside the VPC as the security group allows."""
    import io
    import json
    import tarfile
    cove = pytorch_cove
    ec2 = cove.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    try:
        subnets, sg = two_zone_network(ec2, vpc)
        bucket = "mpi-test"
        boto, session = sdk_session(cove, monkeypatch, bucket)
        boto.client("s3").put_object(Bucket=bucket, Key="data/x.csv", Body="1\n")
        src = tmp_path / "src"
        src.mkdir()
        (src / "train.py").write_text(MPI_SCRIPT)
        from sagemaker.pytorch import PyTorch
        estimator = PyTorch(
            entry_point="train.py", source_dir=str(src), framework_version="2.0", py_version="py310",
            role=ROLE, instance_type="ml.m5.large", instance_count=2, hyperparameters={"epochs": 3},
            distribution={"mpi": {"enabled": True, "processes_per_host": 2}},
            subnets=subnets, security_group_ids=[sg], sagemaker_session=session, base_job_name="mpi",
        )
        estimator.fit({"train": f"s3://{bucket}/data"}, wait=False)
        from helpers import wait_status
        job = wait_status(estimator.latest_training_job.describe, "TrainingJobStatus",
                          ("Completed", "Failed", "Stopped"), 300, "mpi", interval=0.5)
        if job["TrainingJobStatus"] != "Completed":
            print(job_log(cove, job["TrainingJobName"]))
        assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
        body = boto.client("s3").get_object(Bucket=bucket, Key=estimator.model_data.split(f"{bucket}/", 1)[1])
        with tarfile.open(fileobj=io.BytesIO(body["Body"].read()), mode="r:gz") as t:
            model = json.load(t.extractfile("model.json"))
        assert model == {"world": 4, "sum": 10, "hosts": ["algo-1", "algo-2"], "ompi_world": "4", "epochs": "3"}
        log = job_log(cove, job["TrainingJobName"])
        assert any("/algo-2-" in line.split(": ", 1)[0] and "cove: algo-2 waits for mpirun on algo-1" in line
                   for line in log.splitlines()), log
    finally:
        teardown_vpc(ec2, vpc)


def test_xgboost_built_in_algorithm_trains_and_serves_csv(sklearn_cove, monkeypatch):
    """The SDK's generic Estimator with XGBoost's image URI and
    hyperparameters instead of a script, as AWS's XGBoost examples do."""
    cove = sklearn_cove
    ec2 = cove.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    try:
        subnet, sg, _ = private_subnet_with_s3(ec2, vpc)
        bucket = "xgboost-builtin-test"
        boto, session = sdk_session(cove, monkeypatch, bucket)
        s3 = boto.client("s3")
        # y = a + 2b, label first, no header.
        train = "".join(f"{a + 2 * b},{a},{b}\n" for a in range(10) for b in range(10))
        s3.put_object(Bucket=bucket, Key="xgb/train/data.csv", Body=train)
        s3.put_object(Bucket=bucket, Key="xgb/validation/data.csv", Body=train[: len(train) // 3])

        from sagemaker.estimator import Estimator
        from sagemaker.inputs import TrainingInput
        from sagemaker.serializers import CSVSerializer
        image = sagemaker.image_uris.retrieve("xgboost", REGION, "1.7-1")
        estimator = Estimator(image_uri=image, role=ROLE, instance_count=1, instance_type="ml.m5.large",
                              output_path=f"s3://{bucket}/xgb/output", sagemaker_session=session,
                              subnets=[subnet], security_group_ids=[sg], base_job_name="xgb-builtin")
        estimator.set_hyperparameters(objective="reg:squarederror", num_round=30, max_depth=4, eta=0.3)
        estimator.fit({"train": TrainingInput(f"s3://{bucket}/xgb/train", content_type="text/csv"),
                       "validation": TrainingInput(f"s3://{bucket}/xgb/validation", content_type="text/csv")},
                      wait=True, logs=False)
        job = estimator.latest_training_job.describe()
        assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
        log = job_log(cove, job["TrainingJobName"])
        assert "[29]\ttrain-rmse:" in log and "validation-rmse:" in log, log[-2000:]

        predictor = estimator.deploy(initial_instance_count=1, instance_type="ml.m5.large",
                                     serializer=CSVSerializer())
        try:
            out = predictor.predict([[1, 1], [9, 9]]).decode()
            predictions = [float(v) for v in out.split(",")]
            assert len(predictions) == 2 and abs(predictions[0] - 3) < 1.5 and abs(predictions[1] - 27) < 1.5, out
        finally:
            predictor.delete_endpoint(delete_endpoint_config=True)

        # A channel the algorithm cannot read fails the job with its ClientError.
        bad = Estimator(image_uri=image, role=ROLE, instance_count=1, instance_type="ml.m5.large",
                        output_path=f"s3://{bucket}/xgb/output", sagemaker_session=session,
                        subnets=[subnet], security_group_ids=[sg], base_job_name="xgb-bad")
        bad.set_hyperparameters(num_round=5)
        with pytest.raises(Exception):
            bad.fit({"train": TrainingInput(f"s3://{bucket}/xgb/train", content_type="application/json")},
                    wait=True, logs=False)
        reason = bad.latest_training_job.describe()["FailureReason"]
        assert reason.startswith("ClientError: Content type application/json is not supported"), reason
    finally:
        teardown_vpc(ec2, vpc)
