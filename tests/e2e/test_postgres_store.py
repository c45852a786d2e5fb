"""The store on PostgreSQL (`cove serve --store postgres://…`): the same API
as on SQLite, state kept when Cove is killed, writes refused cleanly while
PostgreSQL is away and accepted again when it is back, and one server per
store."""

import os
import signal
import subprocess
import tempfile
import time
import uuid

import boto3
import botocore.config
import botocore.exceptions
import pytest

from conftest import (ACCESS_KEY, BINARY, REGION, ROOT, SECRET_KEY, Cove, drop_postgres_database, free_port,
                      new_postgres_database)
from helpers import wait_status
from test_training_jobs import model_of, subnet_with_s3_endpoint, training_bucket, training_request, wait_for


@pytest.fixture
def postgres_cove():
    url = new_postgres_database()
    with tempfile.TemporaryDirectory(prefix="cove-e2e-pg-") as d:
        server = Cove(d, store=url).start()
        try:
            yield server
        finally:
            server.stop(signal.SIGKILL)
            server.teardown()
            drop_postgres_database(url)


def network_snapshot(ec2):
    return (ec2.describe_vpcs()["Vpcs"], ec2.describe_subnets()["Subnets"],
            ec2.describe_security_groups()["SecurityGroups"], ec2.describe_network_interfaces()["NetworkInterfaces"],
            ec2.describe_route_tables()["RouteTables"], ec2.describe_tags()["Tags"])


def test_state_in_postgres_survives_kill_and_restart(postgres_cove):
    ec2 = postgres_cove.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16",
                         TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "k", "Value": "v"}]}])["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="g", Description="g", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    eni = ec2.create_network_interface(SubnetId=subnet, Groups=[sg])["NetworkInterface"]
    before = network_snapshot(ec2)
    postgres_cove.stop(signal.SIGKILL)
    postgres_cove.start()
    ec2 = postgres_cove.client("ec2")
    assert network_snapshot(ec2) == before
    second = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]
    assert second["PrivateIpAddress"] != eni["PrivateIpAddress"]
    # Nothing was written to a SQLite file beside it.
    assert not os.path.exists(os.path.join(postgres_cove.data_dir, "cove.db"))
    # `cove reach` reads the same store: `second` (the default group) may
    # open port 22 on `eni` (its group admits 10.0.0.0/8), not the reverse.
    def reach(source, target):
        return subprocess.run([BINARY, "reach", "--data-dir", postgres_cove.data_dir, source, target, "--port", "22"],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
    allowed = reach(second["NetworkInterfaceId"], eni["NetworkInterfaceId"])
    assert allowed.returncode == 0, allowed
    blocked = reach(eni["NetworkInterfaceId"], second["NetworkInterfaceId"])
    assert blocked.returncode == 1, blocked


def test_a_second_server_on_the_same_store_is_refused(postgres_cove):
    with tempfile.TemporaryDirectory(prefix="cove-e2e-pg-") as d:
        second = Cove(d, store=postgres_cove.store)
        with pytest.raises(RuntimeError, match="already controls the store"):
            second.start()
    # The first is untouched.
    assert postgres_cove.client("ec2").describe_vpcs()["Vpcs"]


def postgres_script(*args, port):
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", "test-postgres.sh"), *args], check=True,
                          capture_output=True, text=True, env={**os.environ, "COVE_TEST_PG_PORT": str(port)},
                          stdin=subprocess.DEVNULL).stdout.strip()


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of the test's own, so stopping it disturbs no other
    test: yields (server URL, stop, start)."""
    if not os.environ.get("COVE_TEST_POSTGRES"):
        new_postgres_database()  # fails in CI, skips elsewhere
    port = free_port()
    server_url = postgres_script(port=port)
    try:
        yield server_url, lambda: postgres_script("stop", port=port), lambda: postgres_script(port=port)
    finally:
        postgres_script("remove", port=port)


@pytest.fixture
def cove_on_own_postgres(own_postgres):
    server_url, stop, start = own_postgres
    with tempfile.TemporaryDirectory(prefix="cove-e2e-pg-") as d:
        cove = Cove(d, store=new_postgres_database(server_url)).start()
        try:
            yield cove, stop, start
        finally:
            cove.stop(signal.SIGKILL)
            cove.teardown()


def retrying_client(cove, service):
    """A client with the SDKs' standard retries, as applications have."""
    return boto3.client(service, endpoint_url=cove.endpoint, region_name=REGION,
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        config=botocore.config.Config(retries={"max_attempts": 5, "mode": "standard"}))


def test_writes_fail_cleanly_while_postgres_is_away_and_resume_when_it_is_back(cove_on_own_postgres):
    cove, stop_postgres, start_postgres = cove_on_own_postgres
    ec2, logs, s3 = cove.client("ec2"), cove.client("logs"), cove.client("s3")
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    before = ec2.describe_vpcs()["Vpcs"]
    logs.create_log_group(logGroupName="/outage")
    logs.create_log_stream(logGroupName="/outage", logStreamName="s")
    s3.create_bucket(Bucket="outage")
    stop_postgres()
    # CloudWatch Logs and S3 keep their tables there too: refused while it
    # is away, with their services' 5xx errors, which the SDKs retry.
    now = int(time.time() * 1000)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        logs.put_log_events(logGroupName="/outage", logStreamName="s",
                            logEvents=[{"timestamp": now, "message": "lost?"}])
    assert refused.value.response["Error"]["Code"] == "ServiceUnavailableException"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        s3.put_object(Bucket="outage", Key="k", Body=b"lost?")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] >= 500
    # Reads are answered from memory; a write is refused with AWS's
    # internal error and changes nothing.
    assert ec2.describe_vpcs()["Vpcs"] == before
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        ec2.create_vpc(CidrBlock="10.2.0.0/16")
    assert refused.value.response["Error"]["Code"] == "InternalError"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert ec2.describe_vpcs()["Vpcs"] == before
    start_postgres()
    subnet = retrying_client(cove, "ec2").create_subnet(VpcId=vpc, CidrBlock="10.1.1.0/24")["Subnet"]["SubnetId"]
    retrying_client(cove, "logs").put_log_events(logGroupName="/outage", logStreamName="s",
                                                 logEvents=[{"timestamp": now, "message": "after"}])
    retrying_client(cove, "s3").put_object(Bucket="outage", Key="k", Body=b"after")
    assert cove.alive()
    cove.stop(signal.SIGKILL)
    cove.start()
    ec2 = cove.client("ec2")
    assert [s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]] == [subnet]
    assert len(ec2.describe_vpcs()["Vpcs"]) == len(before)
    # What was refused is not there; what came after is.
    events = cove.client("logs").get_log_events(logGroupName="/outage", logStreamName="s",
                                                startFromHead=True)["events"]
    assert [e["message"] for e in events] == ["after"]
    assert cove.client("s3").get_object(Bucket="outage", Key="k")["Body"].read() == b"after"


def test_a_training_job_goes_on_while_postgres_restarts(cove_on_own_postgres):
    cove, stop_postgres, start_postgres = cove_on_own_postgres
    ec2, s3, sm = (retrying_client(cove, s) for s in ("ec2", "s3", "sagemaker"))
    bucket = training_bucket(s3)
    net = subnet_with_s3_endpoint(ec2)
    name = f"pg-restart-{uuid.uuid4().hex[:8]}"
    sm.create_training_job(**training_request(name, bucket, net, sleep=2))
    wait_status(lambda: sm.describe_training_job(TrainingJobName=name), "SecondaryStatus", ("Training",), 60, name)
    # The script ends while PostgreSQL is away: the supervisor's next status
    # writes (Uploading, Completed) must wait for it, not fail the job.
    stop_postgres()
    time.sleep(5)
    start_postgres()
    d = wait_for(sm, name)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert [t["Status"] for t in d["SecondaryStatusTransitions"]] == [
        "Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert model_of(s3, bucket, name)["rows"] == 30
    # The outage did fall on the job's writes: its driver retried them.
    retried = [line for line in open(cove.log_path) if "step failed; retrying" in line and name in line]
    assert retried and "InternalError" in retried[0], "the job wrote nothing while PostgreSQL was away"
    # And what the server acknowledged is what it reloads.
    cove.stop(signal.SIGKILL)
    cove.start()
    assert cove.client("sagemaker").describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "Completed"
