"""Several accounts on one server. Each access key acts in its account (a
`[[credentials]]` entry's `account_id`); an account sees and changes only its
own VPCs, buckets, jobs, roles and log groups, and another account's
resources are reached only where AWS allows it: a bucket policy that names
the account, a role whose trust policy does."""

import base64
import json
import os
import shutil
import signal
import tempfile
import uuid

import boto3
import botocore.exceptions
import pytest

from conftest import Cove
from test_training_jobs import TRAIN, job_name, source_archive, training_request, wait_for

A, B = "111111111111", "222222222222"
KEYS = {A: ("AKIAACCOUNTA00000000", "secret-of-account-a"), B: ("AKIAACCOUNTB00000000", "secret-of-account-b")}


@pytest.fixture(scope="module")
def server():
    with tempfile.TemporaryDirectory(prefix="cove-e2e-") as d:
        config = os.path.join(d, "cove.toml")
        with open(config, "w") as f:
            f.write(f'account_id = "{A}"\n')
            for account, (key, secret) in KEYS.items():
                f.write(f'[[credentials]]\naccess_key_id = "{key}"\nsecret_access_key = "{secret}"\n'
                        f'account_id = "{account}"\n')
        server = Cove(d, env={"COVE_CONFIG": config}).start()
        yield server
        server.stop(signal.SIGKILL)
        server.teardown()


def client(server, account, service):
    key, secret = KEYS[account]
    return server.client(service, access_key=key, secret_key=secret)


def error_of(call, **kw):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call(**kw)
    return e.value.response["Error"]


def test_each_key_acts_in_its_account(server):
    for account in (A, B):
        assert client(server, account, "sts").get_caller_identity()["Account"] == account


def test_an_account_sees_and_changes_only_its_own_network(server):
    a, b = client(server, A, "ec2"), client(server, B, "ec2")
    vpc = a.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    group = a.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"][0]["GroupId"]
    a_vpcs = {v["VpcId"] for v in a.describe_vpcs()["Vpcs"]}
    b_vpcs = {v["VpcId"]: v for v in b.describe_vpcs()["Vpcs"]}
    assert vpc in a_vpcs and vpc not in b_vpcs
    # Each account has its own default VPC, owned by it.
    assert [v["OwnerId"] for v in b_vpcs.values() if v["IsDefault"]] == [B]
    assert not a_vpcs & set(b_vpcs)

    for call, kw, code in (
            (b.describe_vpcs, {"VpcIds": [vpc]}, "InvalidVpcID.NotFound"),
            (b.delete_vpc, {"VpcId": vpc}, "InvalidVpcID.NotFound"),
            (b.create_subnet, {"VpcId": vpc, "CidrBlock": "10.20.1.0/24"}, "InvalidVpcID.NotFound"),
            (b.describe_security_groups, {"GroupIds": [group]}, "InvalidGroup.NotFound"),
            (b.authorize_security_group_ingress,
             {"GroupId": group, "IpPermissions": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]},
             "InvalidGroup.NotFound"),
            (b.create_tags, {"Resources": [vpc], "Tags": [{"Key": "k", "Value": "v"}]}, "InvalidVpcID.NotFound")):
        assert error_of(call, **kw)["Code"] == code, call
    assert a.describe_vpcs(VpcIds=[vpc])["Vpcs"][0].get("Tags") is None
    assert not b.describe_tags(Filters=[{"Name": "resource-id", "Values": [vpc]}])["Tags"]
    # The same CIDR in the other account is another network.
    other = b.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    assert other != vpc
    a.delete_vpc(VpcId=vpc)
    b.delete_vpc(VpcId=other)


def test_buckets_are_private_to_their_account_unless_a_policy_says_otherwise(server):
    a, b = client(server, A, "s3"), client(server, B, "s3")
    bucket = f"acct-{uuid.uuid4().hex[:12]}"
    a.create_bucket(Bucket=bucket)
    a.put_object(Bucket=bucket, Key="data/x", Body=b"a's bytes")
    assert bucket not in [x["Name"] for x in b.list_buckets()["Buckets"]]
    assert bucket in [x["Name"] for x in a.list_buckets()["Buckets"]]
    assert error_of(b.create_bucket, Bucket=bucket)["Code"] == "BucketAlreadyExists"
    for call, kw in ((b.get_object, {"Bucket": bucket, "Key": "data/x"}),
                     (b.list_objects_v2, {"Bucket": bucket}),
                     (b.put_object, {"Bucket": bucket, "Key": "data/y", "Body": b"b"}),
                     (b.put_bucket_policy, {"Bucket": bucket, "Policy": "{}"}),
                     (b.delete_bucket, {"Bucket": bucket})):
        assert error_of(call, **kw)["Code"] == "AccessDenied", call
    a.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{B}:root"}, "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bucket}/data/*"}]}))
    assert b.get_object(Bucket=bucket, Key="data/x")["Body"].read() == b"a's bytes"
    assert error_of(b.put_object, Bucket=bucket, Key="data/y", Body=b"b")["Code"] == "AccessDenied"


def test_roles_and_log_groups_are_per_account_and_trust_crosses_accounts(server):
    trust = lambda account: json.dumps({"Version": "2012-10-17", "Statement": [  # noqa: E731
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"}, "Action": "sts:AssumeRole"}]})
    a_iam, b_iam = client(server, A, "iam"), client(server, B, "iam")
    shared = a_iam.create_role(RoleName="Shared", AssumeRolePolicyDocument=trust(B))["Role"]["Arn"]
    private = a_iam.create_role(RoleName="Private", AssumeRolePolicyDocument=trust(A))["Role"]["Arn"]
    # The same name is another role in another account.
    assert b_iam.create_role(RoleName="Shared", AssumeRolePolicyDocument=trust(B))["Role"]["Arn"] == \
        f"arn:aws:iam::{B}:role/Shared"
    assert [r["RoleName"] for r in b_iam.list_roles()["Roles"]] == ["Shared"]
    assert error_of(b_iam.get_role, RoleName="Private")["Code"] == "NoSuchEntity"

    sts = client(server, B, "sts")
    creds = sts.assume_role(RoleArn=shared, RoleSessionName="from-b")["Credentials"]
    session = boto3.client("sts", endpoint_url=server.endpoint, region_name="us-east-1",
                           aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                           aws_session_token=creds["SessionToken"])
    assert session.get_caller_identity()["Account"] == A
    for arn in (private, f"arn:aws:iam::{A}:role/Missing"):
        assert error_of(sts.assume_role, RoleArn=arn, RoleSessionName="probe")["Code"] == "AccessDenied", arn

    a_logs, b_logs = client(server, A, "logs"), client(server, B, "logs")
    a_logs.create_log_group(logGroupName="/team/shared")
    assert not b_logs.describe_log_groups(logGroupNamePrefix="/team/")["logGroups"]
    b_logs.create_log_group(logGroupName="/team/shared")


def test_jobs_of_the_same_name_run_in_each_account_and_stay_apart(server):
    name = job_name("same")
    sms = {}
    for account in (A, B):
        s3, sm = client(server, account, "s3"), client(server, account, "sagemaker")
        bucket = f"jobs-{account}-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="data/train/part-0.csv", Body="1,2\n3,4\n")
        s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=source_archive(TRAIN))
        role = f"arn:aws:iam::{account}:role/SageMakerRole"
        sm.create_training_job(**{**training_request(name, bucket), "RoleArn": role})
        sms[account] = sm
    for account, sm in sms.items():
        d = wait_for(sm, name)
        assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
        assert d["TrainingJobArn"] == f"arn:aws:sagemaker:us-east-1:{account}:training-job/{name}"
        assert [j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]] == [name]
    only_a = job_name("only-a")
    sms[A].create_training_job(**{**training_request(only_a, "nowhere"), "RoleArn": f"arn:aws:iam::{A}:role/R"})
    err = error_of(sms[B].describe_training_job, TrainingJobName=only_a)
    assert err["Code"] == "ValidationException", err
    assert error_of(sms[B].stop_training_job, TrainingJobName=only_a)["Code"] == "ValidationException"
    # A job's log streams are in its own account's log group.
    streams = client(server, B, "logs").describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                                             logStreamNamePrefix=name)["logStreams"]
    assert streams


def test_an_iam_users_key_acts_as_that_user_in_its_account(server):
    iam = client(server, B, "iam")
    iam.create_user(UserName="builder")
    key = iam.create_access_key(UserName="builder")["AccessKey"]
    as_user = lambda service: server.client(  # noqa: E731
        service, access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    who = as_user("sts").get_caller_identity()
    assert (who["Account"], who["Arn"]) == (B, f"arn:aws:iam::{B}:user/builder")
    assert as_user("iam").get_user()["User"]["UserName"] == "builder"
    b_default = [v["VpcId"] for v in client(server, B, "ec2").describe_vpcs()["Vpcs"] if v["IsDefault"]]
    assert [v["VpcId"] for v in as_user("ec2").describe_vpcs()["Vpcs"] if v["IsDefault"]] == b_default
    # An inactive or deleted key is refused.
    iam.update_access_key(UserName="builder", AccessKeyId=key["AccessKeyId"], Status="Inactive")
    assert error_of(as_user("sts").get_caller_identity)["Code"] in ("InvalidClientTokenId", "AuthFailure")
    iam.delete_access_key(UserName="builder", AccessKeyId=key["AccessKeyId"])
    iam.delete_user(UserName="builder")
    # Users, like roles, are per account.
    assert not client(server, A, "iam").list_users()["Users"]


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_another_accounts_repository_is_pulled_only_where_its_policy_allows(server, tmp_path):
    from test_registry import oci_layout, skopeo

    def creds(account):
        data = client(server, account, "ecr").get_authorization_token()["authorizationData"][0]
        return base64.b64decode(data["authorizationToken"]).decode()

    # The server's own registry is account A's (the listener names no other).
    host = f"127.0.0.1:{server.port}"
    a_ecr = client(server, A, "ecr")
    a_ecr.create_repository(repositoryName="shared-model")
    layout = tmp_path / "layout"
    oci_layout(layout, b"a layer of account A")
    pushed = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds(A),
                    f"oci:{layout}", f"docker://{host}/shared-model:1")
    assert pushed.returncode == 0, pushed.stderr

    pull = lambda: skopeo("copy", "--src-tls-verify=false", "--src-creds", creds(B),  # noqa: E731
                          f"docker://{host}/shared-model:1", f"oci:{tmp_path / 'pulled'}")
    refused = pull()
    assert refused.returncode != 0
    assert (f"User: arn:aws:iam::{B}:root is not authorized to perform: ecr:BatchGetImage on resource: "
            f"arn:aws:ecr:us-east-1:{A}:repository/shared-model") in refused.stderr, refused.stderr
    assert "shared-model" not in [r["repositoryName"] for r in client(server, B, "ecr").describe_repositories()["repositories"]]

    a_ecr.set_repository_policy(repositoryName="shared-model", policyText=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{B}:root"},
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]}]}))
    pulled = pull()
    assert pulled.returncode == 0, pulled.stderr
    # Reading is all it grants: B still cannot push there.
    pushed = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds(B),
                    f"oci:{layout}", f"docker://{host}/shared-model:2")
    assert pushed.returncode != 0 and "ecr:" in pushed.stderr, pushed.stderr
