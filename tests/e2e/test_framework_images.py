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


@pytest.fixture
def sklearn_cove(fresh_cove):
    """A Cove whose registry holds the scikit-learn framework image."""
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "framework-images.sh"),
                          "--data-dir", fresh_cove.data_dir, "sklearn"],
                         capture_output=True, text=True, timeout=1200, env={**os.environ, "COVE_BIN": BINARY})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sagemaker-scikit-learn:1.2-1-cpu-py3@sha256:" in out.stdout
    return fresh_cove


def test_sklearn_image_trains_with_numpy_pandas_and_serves_from_the_same_image(sklearn_cove, monkeypatch, tmp_path):
    cove = sklearn_cove
    ec2 = cove.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    try:
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        sg = ec2.create_security_group(GroupName="job", Description="job", VpcId=vpc)["GroupId"]
        rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
        ec2.create_vpc_endpoint(VpcId=vpc, ServiceName=f"com.amazonaws.{REGION}.s3", RouteTableIds=[rt])
        public = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.9.0/24")["Subnet"]["SubnetId"]
        nat, _ = nat_gateway(ec2, vpc, public)
        ec2.create_route(RouteTableId=rt, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
        index = os.path.join(cove.data_dir, "pypi")
        os.makedirs(index, exist_ok=True)
        demo_wheel(index)

        monkeypatch.setenv("AWS_ENDPOINT_URL", cove.endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
        boto = boto3.Session(region_name=REGION)
        bucket = "sklearn-image-test"
        boto.client("s3").create_bucket(Bucket=bucket)
        session = sagemaker.Session(boto_session=boto, default_bucket=bucket)
        session.wait_for_endpoint = functools.partial(session.wait_for_endpoint, poll=1)
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
