"""IAM enforced (`cove serve --iam enforce`): trust policies decide who may
assume a role, SageMaker checks iam:PassRole and that a job's role trusts
it, a job's S3 access is held to its role's policies together with the
bucket policy, and a stack's resources are made with its caller's
permissions."""

import json
import signal
import tempfile
import time
import uuid

import boto3
import botocore.exceptions
import pytest

from conftest import Cove
from test_training_jobs import job_name, source_archive, training_request, wait_for

ACCOUNT = "123456789012"
TRUST_SAGEMAKER = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
TRUST_ACCOUNT = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}]}

TRAIN = r'''
import os
data = os.environ["SM_CHANNEL_TRAIN"]
rows = sum(1 for name in os.listdir(data) for _ in open(os.path.join(data, name)))
open(os.path.join(os.environ["SM_MODEL_DIR"], "rows.txt"), "w").write(str(rows))
'''


@pytest.fixture(scope="module")
def enforced():
    with tempfile.TemporaryDirectory(prefix="cove-e2e-") as d:
        server = Cove(d, env={"COVE_IAM": "enforce"}).start()
        yield server
        server.stop(signal.SIGKILL)
        server.teardown()


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(actions, resources):
    return {"Effect": "Allow", "Action": actions, "Resource": resources}


def session_client(server, service, creds):
    return boto3.client(service, endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                        aws_session_token=creds["SessionToken"])


def error_of(call, **kw):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call(**kw)
    return e.value.response["Error"]


def test_a_jobs_role_decides_what_it_reads_and_who_may_pass_it(enforced):
    iam, sm, s3 = (enforced.client(s) for s in ("iam", "sagemaker", "s3"))
    bucket = f"iam-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/train/part-0.csv", Body="1\n2\n3\n")
    s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=source_archive(TRAIN))

    role = iam.create_role(RoleName="JobRole", AssumeRolePolicyDocument=json.dumps(TRUST_SAGEMAKER))["Role"]["Arn"]
    # It may list and write, but not read objects.
    iam.put_role_policy(RoleName="JobRole", PolicyName="list-and-write", PolicyDocument=policy(
        allow(["s3:ListBucket"], [f"arn:aws:s3:::{bucket}"]),
        allow(["s3:PutObject"], [f"arn:aws:s3:::{bucket}/output/*"])))

    name = job_name("no-read")
    sm.create_training_job(**{**training_request(name, bucket), "RoleArn": role})
    d = wait_for(sm, name)
    assert d["TrainingJobStatus"] == "Failed", d
    assert d["FailureReason"] == "ClientError: Data download failed:Failed to download data. AccessDenied (403): Access Denied", d

    # Granting s3:GetObject is the fix.
    iam.put_role_policy(RoleName="JobRole", PolicyName="read", PolicyDocument=policy(
        allow(["s3:GetObject"], [f"arn:aws:s3:::{bucket}/*"])))
    name = job_name("reads")
    sm.create_training_job(**{**training_request(name, bucket), "RoleArn": role})
    d = wait_for(sm, name)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")

    # A role that does not exist, or does not trust SageMaker, is refused at once.
    iam.create_role(RoleName="NotForSageMaker", AssumeRolePolicyDocument=json.dumps(TRUST_ACCOUNT))
    for arn in (f"arn:aws:iam::{ACCOUNT}:role/Missing", f"arn:aws:iam::{ACCOUNT}:role/NotForSageMaker"):
        err = error_of(sm.create_training_job, **{**training_request(job_name("bad-role"), bucket), "RoleArn": arn})
        assert err["Code"] == "ValidationException", err
        assert err["Message"] == (f"Could not assume role {arn}. Please ensure that the role exists and allows "
                                  "principal 'sagemaker.amazonaws.com' to assume the role."), err

    # A platform role's session may start jobs only with iam:PassRole on the job's role.
    sts = enforced.client("sts")
    err = error_of(sts.assume_role, RoleArn=f"arn:aws:iam::{ACCOUNT}:role/Missing", RoleSessionName="probe")
    assert err["Code"] == "AccessDenied", err
    platform = iam.create_role(RoleName="Platform", AssumeRolePolicyDocument=json.dumps(TRUST_ACCOUNT))["Role"]["Arn"]
    iam.put_role_policy(RoleName="Platform", PolicyName="sagemaker", PolicyDocument=policy(
        allow(["sagemaker:*"], ["*"])))
    creds = sts.assume_role(RoleArn=platform, RoleSessionName="ci")["Credentials"]
    as_platform = session_client(enforced, "sagemaker", creds)
    err = error_of(as_platform.create_training_job, **{**training_request(job_name("no-pass"), bucket), "RoleArn": role})
    assert err["Code"] == "AccessDeniedException", err
    assert err["Message"] == (f"User: arn:aws:sts::{ACCOUNT}:assumed-role/Platform/ci is not authorized to perform: "
                              f"iam:PassRole on resource: {role}"), err
    iam.put_role_policy(RoleName="Platform", PolicyName="pass", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "iam:PassRole", "Resource": role,
         "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}}))
    name = job_name("passed")
    as_platform.create_training_job(**{**training_request(name, bucket), "RoleArn": role})
    assert wait_for(sm, name)["TrainingJobStatus"] == "Completed"

    # Every other API call of the session is held to its policies too, each
    # service refusing with its own error; GetCallerIdentity always answers.
    assert session_client(enforced, "sts", creds).get_caller_identity()["Arn"].endswith("assumed-role/Platform/ci")
    assert as_platform.list_training_jobs()["TrainingJobSummaries"]
    for service, call, code in (("ec2", "describe_vpcs", "UnauthorizedOperation"),
                                ("logs", "describe_log_groups", "AccessDeniedException"),
                                ("iam", "list_roles", "AccessDenied")):
        err = error_of(getattr(session_client(enforced, service, creds), call))
        assert err["Code"] == code, (service, err)
        assert "because no identity-based policy allows the" in err["Message"], err

    # The platform session itself reads no S3 object its policies do not allow;
    # a bucket policy naming its role lets it.
    as_platform_s3 = session_client(enforced, "s3", creds)
    err = error_of(as_platform_s3.get_object, Bucket=bucket, Key="data/train/part-0.csv")
    assert err["Code"] == "AccessDenied", err
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": platform}, "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bucket}/data/*"}]}))
    assert as_platform_s3.get_object(Bucket=bucket, Key="data/train/part-0.csv")["Body"].read() == b"1\n2\n3\n"


def test_an_iam_user_is_held_to_its_policies(enforced):
    iam = enforced.client("iam")
    iam.create_user(UserName="analyst")
    key = iam.create_access_key(UserName="analyst")["AccessKey"]
    ec2 = enforced.client("ec2", access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    err = error_of(ec2.describe_vpcs)
    assert err["Code"] == "UnauthorizedOperation", err
    assert f"User: arn:aws:iam::{ACCOUNT}:user/analyst is not authorized to perform: ec2:DescribeVpcs" in err["Message"]
    iam.put_user_policy(UserName="analyst", PolicyName="read-network",
                        PolicyDocument=policy(allow(["ec2:Describe*"], ["*"])))
    assert ec2.describe_vpcs()["Vpcs"]
    result = iam.simulate_principal_policy(PolicySourceArn=f"arn:aws:iam::{ACCOUNT}:user/analyst",
                                           ActionNames=["ec2:DescribeVpcs", "ec2:DeleteVpc"])["EvaluationResults"]
    assert [r["EvalDecision"] for r in result] == ["allowed", "implicitDeny"]


def test_a_session_policy_narrows_the_session(enforced):
    iam, sts = enforced.client("iam"), enforced.client("sts")
    role = iam.create_role(RoleName="Narrowed", AssumeRolePolicyDocument=json.dumps(TRUST_ACCOUNT))["Role"]["Arn"]
    iam.put_role_policy(RoleName="Narrowed", PolicyName="network", PolicyDocument=policy(
        allow(["ec2:*"], ["*"])))
    creds = sts.assume_role(RoleArn=role, RoleSessionName="read-only", Policy=policy(
        allow(["ec2:Describe*"], ["*"])))["Credentials"]
    ec2 = session_client(enforced, "ec2", creds)
    assert ec2.describe_vpcs()["Vpcs"]
    err = error_of(ec2.create_vpc, CidrBlock="10.9.0.0/16")
    assert err["Code"] == "UnauthorizedOperation", err
    # Without a session policy the role's own policies apply in full.
    full = session_client(enforced, "ec2", sts.assume_role(RoleArn=role, RoleSessionName="full")["Credentials"])
    vpc = full.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    full.delete_vpc(VpcId=vpc)
    assert error_of(sts.assume_role, RoleArn=role, RoleSessionName="bad", Policy="{}")["Code"] == "MalformedPolicyDocument"


def console_get(server, path, cookie=None):
    """GET a console page without following redirects: (status, location or body)."""
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(f"{server.endpoint}/_cove/console{path}",
                                 headers={"Cookie": cookie} if cookie else {})
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Location") or e.read().decode()


def console_sign_in(server, key):
    import urllib.parse
    import urllib.request
    body = urllib.parse.urlencode({"access_key_id": key["AccessKeyId"],
                                   "secret_access_key": key["SecretAccessKey"]}).encode()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(urllib.request.Request(f"{server.endpoint}/_cove/console/login", data=body), timeout=10)
    except urllib.error.HTTPError as e:
        assert e.code == 303, e.read()
        return e.headers["Set-Cookie"].split(";")[0]
    raise AssertionError("signing in did not redirect")


def test_the_console_shows_an_iam_user_only_what_its_policies_let_it_read(enforced):
    """With IAM enforced, a page needs the read calls behind it: a user
    allowed EC2's Describe calls sees the VPC map but not SageMaker; its
    session ends when its access key is deleted."""
    import urllib.error  # noqa: F401 (console_get)
    iam, ec2 = enforced.client("iam"), enforced.client("ec2")
    user = f"viewer-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="network-viewer",
                        PolicyDocument=policy(allow(["ec2:Describe*"], ["*"])))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    vpc = ec2.create_vpc(CidrBlock="10.64.0.0/16")["Vpc"]["VpcId"]
    try:
        cookie = console_sign_in(enforced, key)
        status, body = console_get(enforced, f"/vpcs/{vpc}", cookie)
        assert status == 200 and vpc in body
        status, body = console_get(enforced, "/sagemaker", cookie)
        assert status == 403 and "sagemaker:ListTrainingJobs" in body
        # Reachability analysis is its own permission.
        status, body = console_get(enforced, "/reach", cookie)
        assert status == 403 and "ec2:StartNetworkInsightsAnalysis" in body
        iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
        status, location = console_get(enforced, f"/vpcs/{vpc}", cookie)
        assert status == 303 and location.endswith("/_cove/console/login")
    finally:
        ec2.delete_vpc(VpcId=vpc)


def test_a_stacks_resources_are_made_with_its_callers_permissions(enforced):
    """CloudFormation calls with its caller's permissions: cloudformation:*
    alone makes no VPC; with ec2:* it does."""
    iam = enforced.client("iam")
    iam.create_user(UserName="deployer")
    key = iam.create_access_key(UserName="deployer")["AccessKey"]
    iam.put_user_policy(UserName="deployer", PolicyName="stacks",
                        PolicyDocument=policy(allow(["cloudformation:*"], ["*"])))
    cfn = enforced.client("cloudformation", access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    body = "Resources:\n  Vpc: {Type: AWS::EC2::VPC, Properties: {CidrBlock: 10.77.0.0/16}}\n"

    def settle(name):
        for _ in range(200):
            s = cfn.describe_stacks(StackName=name)["Stacks"][0]
            if not s["StackStatus"].endswith("IN_PROGRESS"):
                return s
            time.sleep(0.1)
        raise AssertionError(f"{name} stayed {s['StackStatus']}")

    cfn.create_stack(StackName="denied", TemplateBody=body)
    assert settle("denied")["StackStatus"] == "ROLLBACK_COMPLETE"
    failed = [e for e in cfn.describe_stack_events(StackName="denied")["StackEvents"]
              if e["ResourceStatus"] == "CREATE_FAILED"][0]
    assert "User: arn:aws:iam::123456789012:user/deployer is not authorized to perform: ec2:CreateVpc" \
        in failed["ResourceStatusReason"], failed
    assert "UnauthorizedOperation" in failed["ResourceStatusReason"]

    iam.put_user_policy(UserName="deployer", PolicyName="network", PolicyDocument=policy(allow(["ec2:*"], ["*"])))
    allowed = cfn.create_stack(StackName="allowed", TemplateBody=body)["StackId"]
    assert settle(allowed)["StackStatus"] == "CREATE_COMPLETE"
    cfn.delete_stack(StackName="allowed")
    assert settle(allowed)["StackStatus"] == "DELETE_COMPLETE"
