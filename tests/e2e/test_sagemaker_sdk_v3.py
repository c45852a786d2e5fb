"""IAM through boto3, and the SageMaker Python SDK v3, unchanged, against
Cove. v3's `ModelTrainer` resolves and validates its execution role through
IAM (`GetRole` for the trust policy, `SimulatePrincipalPolicy` for the
permissions) before it creates a job, so it needs IAM to answer as AWS
does. v3 and v2 cannot share one environment: scripts/test.sh installs v3
into its own venv and names its Python in COVE_SDK3_PYTHON."""

import json
import os
import subprocess
import urllib.parse
import uuid

import boto3
import pytest

from conftest import ACCESS_KEY, REGION, SECRET_KEY
from test_sagemaker_sdk import TRAIN  # the same training script as under v2
from test_training_jobs import IMAGE, private_net, s3_endpoint  # noqa: F401  (fixture re-export)

ACCOUNT = "123456789012"
HERE = os.path.dirname(os.path.abspath(__file__))
TRUST = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
                                                 "Action": "sts:AssumeRole"}]}
# What v3 checks a training role for: the actions of its policy template
# that apply to every resource.
TRAINING = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*", "Action": [
    "ecr:GetAuthorizationToken", "cloudwatch:PutMetricData", "ec2:CreateNetworkInterface",
    "ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface", "ec2:DeleteNetworkInterfacePermission",
    "ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeDhcpOptions", "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups", "sagemaker:*", "s3:*", "logs:*"]}]}



@pytest.fixture
def iam(cove_server):
    return cove_server.client("iam")


def sdk3_python():
    python = os.environ.get("COVE_SDK3_PYTHON") or os.path.join(HERE, "..", "..", ".venv-sdk3", "bin", "python")
    if not os.path.exists(python):
        pytest.fail("the SageMaker SDK v3 venv is missing: run scripts/test.sh, which installs it")
    return python


def make_role(iam, name, policy=None):
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))
    if policy:
        iam.put_role_policy(RoleName=name, PolicyName="training", PolicyDocument=json.dumps(policy))
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


def test_roles_policies_and_the_simulator_through_boto3(iam):
    name = f"r-{uuid.uuid4().hex[:8]}"
    arn = make_role(iam, name, TRAINING)
    role = iam.get_role(RoleName=name.upper())["Role"]
    assert role["Arn"] == arn and role["RoleId"].startswith("AROA")
    # botocore decodes IAM's URL-encoded documents back to JSON.
    assert role["AssumeRolePolicyDocument"] == TRUST
    with pytest.raises(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))
    with pytest.raises(iam.exceptions.MalformedPolicyDocumentException):
        iam.put_role_policy(RoleName=name, PolicyName="bad", PolicyDocument='{"Statement": [{"Effect": "Allow"}]}')
    with pytest.raises(iam.exceptions.NoSuchEntityException) as missing:
        iam.get_role(RoleName="no-such-role")
    assert missing.value.response["Error"]["Message"] == "The role with name no-such-role cannot be found."

    results = iam.simulate_principal_policy(
        PolicySourceArn=arn, ActionNames=["sagemaker:CreateTrainingJob", "iam:CreateRole"])["EvaluationResults"]
    assert [r["EvalDecision"] for r in results] == ["allowed", "implicitDeny"]
    assert results[0]["MatchedStatements"][0]["SourcePolicyId"] == "training"

    deny = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"}]}
    policy_arn = iam.create_policy(PolicyName=f"deny-{name}", PolicyDocument=json.dumps(deny))["Policy"]["Arn"]
    iam.attach_role_policy(RoleName=name, PolicyArn=policy_arn)
    iam.attach_role_policy(RoleName=name, PolicyArn="arn:aws:iam::aws:policy/AmazonSageMakerFullAccess")
    paginator = iam.get_paginator("simulate_principal_policy")
    decisions = [r["EvalDecision"] for page in paginator.paginate(
        PolicySourceArn=arn, ActionNames=["s3:DeleteObject", "s3:GetObject"], PaginationConfig={"PageSize": 1})
        for r in page["EvaluationResults"]]
    assert decisions == ["explicitDeny", "allowed"]
    attached = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    assert [p["PolicyName"] for p in attached] == [f"deny-{name}", "AmazonSageMakerFullAccess"]
    version = iam.get_policy_version(PolicyArn=policy_arn, VersionId="v1")["PolicyVersion"]
    assert version["Document"] == deny and version["IsDefaultVersion"] is True

    with pytest.raises(iam.exceptions.DeleteConflictException):
        iam.delete_role(RoleName=name)
    for p in (policy_arn, "arn:aws:iam::aws:policy/AmazonSageMakerFullAccess"):
        iam.detach_role_policy(RoleName=name, PolicyArn=p)
    iam.delete_role_policy(RoleName=name, PolicyName="training")
    iam.delete_policy(PolicyArn=policy_arn)
    iam.delete_role(RoleName=name)
    assert name not in [r["RoleName"] for r in iam.list_roles()["Roles"]]


def run_v3(cove_server, script, *args):
    env = {**os.environ, "AWS_ENDPOINT_URL": cove_server.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION,
           # No calls home from the SDK's telemetry.
           "SAGEMAKER_TELEMETRY_OPT_OUT": "true"}
    return subprocess.run([sdk3_python(), os.path.join(HERE, "sdk3", script), *args],
                          env=env, capture_output=True, text=True, timeout=300)


def test_model_trainer_v3_trains_in_a_private_subnet(cove_server, ec2, iam, private_net, tmp_path):  # noqa: F811
    s3_endpoint(ec2, private_net)
    bucket = f"sdk3-{uuid.uuid4().hex[:12]}"
    s3 = cove_server.client("s3")
    s3.create_bucket(Bucket=bucket)
    for i in range(2):
        s3.put_object(Bucket=bucket, Key=f"train/part-{i}.csv", Body="".join(f"{n},{n}\n" for n in range(5)))
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(TRAIN)
    net = [",".join(private_net["subnets"]), private_net["sg"]]

    # A role that lacks the permissions v3 checks is refused before any job exists.
    weak = make_role(iam, f"weak-{uuid.uuid4().hex[:8]}")
    refused = run_v3(cove_server, "train_with_model_trainer.py", weak, bucket, IMAGE, str(src), *net)
    assert refused.returncode != 0
    assert "RoleValidationError" in refused.stderr and "ecr:GetAuthorizationToken" in refused.stderr, refused.stderr[-3000:]

    role = make_role(iam, f"train-{uuid.uuid4().hex[:8]}", TRAINING)
    done = run_v3(cove_server, "train_with_model_trainer.py", role, bucket, IMAGE, str(src), *net)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    job = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert job["TrainingJobStatus"] == "Completed"
    assert job["RoleArn"] == role
    assert job["VpcConfig"]["Subnets"] == private_net["subnets"]
    logs = cove_server.client("logs").filter_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=job["TrainingJobName"])["events"]
    assert any("fitting 10 rows with alpha=0.5" in e["message"] for e in logs), logs
    model = urllib.parse.urlparse(job["ModelArtifacts"]["S3ModelArtifacts"])
    assert s3.head_object(Bucket=model.netloc, Key=model.path.lstrip("/"))["ContentLength"] > 0


def test_core_resources_v3_deploy_and_invoke_in_a_private_subnet(cove_server, ec2, iam, private_net):  # noqa: F811
    """v3's resource classes (Model, EndpointConfig, Endpoint): the model's
    instance serves in the private subnet, and `Endpoint.invoke` reaches it."""
    from test_hosting import model_archive
    s3_endpoint(ec2, private_net)
    bucket = f"sdk3-{uuid.uuid4().hex[:12]}"
    s3 = cove_server.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="model.tar.gz", Body=model_archive(3, 10))
    role = make_role(iam, f"serve-{uuid.uuid4().hex[:8]}", TRAINING)
    name = f"sdk3-{uuid.uuid4().hex[:8]}"
    done = run_v3(cove_server, "deploy_with_core_resources.py", role, IMAGE, f"s3://{bucket}/model.tar.gz",
                  ",".join(private_net["subnets"]), private_net["sg"], name)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["status"] == "InService"
    assert result["body"]["version"] == 3 and result["body"]["outputs"] == [10, 20], result
