"""SageMaker training and processing jobs that really run inside a VPC: the
job's ENIs sit in private subnets, its data moves through them, and the
VPC's routes, endpoints and isolation settings decide what works — with
AWS's own statuses and failure strings. Real boto3 against a real Cove."""

import io
import json
import os
import tarfile
import time
import uuid

import botocore.exceptions
import pytest

from conftest import nat_gateway
from helpers import eventually, wait_status

DATA_DOWNLOAD_FAILED = (
    "ClientError: Data download failed:Please ensure that the subnet's route table has a route to an "
    "S3 VPC endpoint or a NAT device, and both the security groups and the subnet's network ACL allow "
    "outbound traffic to S3."
)
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"

TRAIN = r'''
import json, os, socket, sys, time
print("training starts on", socket.gethostname(), flush=True)
data = os.environ["SM_CHANNEL_TRAIN"]
rows = 0
for name in sorted(os.listdir(data)):
    with open(os.path.join(data, name)) as f:
        rows += sum(1 for _ in f)
hps = json.loads(os.environ["SM_HPS"])
print(f"rows={rows} epochs={hps.get('epochs')}", flush=True)
probe = {}
if hps.get("probe_s3"):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("192.0.2.20", 80))
        probe["s3"] = "reached"
    except OSError as e:
        probe["s3"] = f"blocked: {e}"
    probe["credentials"] = "AWS_ACCESS_KEY_ID" in os.environ
if hps.get("sleep"):
    time.sleep(float(hps["sleep"]))
if hps.get("fail"):
    with open("/opt/ml/output/failure", "w") as f:
        f.write("the loss diverged")
    sys.exit(1)
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
    json.dump({"rows": rows, "host": os.environ["SM_CURRENT_HOST"], "probe": probe,
               "args": sys.argv[1:]}, f)
print("done", flush=True)
'''


def tar_gz(files):
    """A .tar.gz of {path: text}, as SageMaker's source and model archives are."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            body = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def source_archive(script):
    return tar_gz({"train.py": script})


@pytest.fixture(scope="module")
def s3(cove_server):
    return cove_server.client("s3")


@pytest.fixture(scope="module")
def sm(cove_server):
    return cove_server.client("sagemaker")


@pytest.fixture(scope="module")
def logs(cove_server):
    return cove_server.client("logs")


def training_bucket(s3):
    """A new bucket with three 10-row CSV parts under data/train and TRAIN's source archive."""
    name = f"ml-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    for i in range(3):
        s3.put_object(Bucket=name, Key=f"data/train/part-{i}.csv", Body="".join(f"{i},{n}\n" for n in range(10)))
    s3.put_object(Bucket=name, Key="code/sourcedir.tar.gz", Body=source_archive(TRAIN))
    return name


@pytest.fixture(scope="module")
def bucket(s3):
    return training_bucket(s3)


@pytest.fixture
def private_net(ec2, vpc):
    """Two private subnets (main route table: local route only) and a job security group."""
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{az}")["Subnet"]["SubnetId"]
        for i, az in ((1, "a"), (2, "b"))
    ]
    sg = ec2.create_security_group(GroupName="job", Description="training job", VpcId=vpc)["GroupId"]
    main_rt = ec2.describe_route_tables(Filters=[
        {"Name": "vpc-id", "Values": [vpc]}, {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]["RouteTableId"]
    return {"vpc": vpc, "subnets": subnets, "sg": sg, "rt": main_rt}


def s3_endpoint(ec2, net):
    return ec2.create_vpc_endpoint(VpcId=net["vpc"], ServiceName="com.amazonaws.us-east-1.s3",
                                   VpcEndpointType="Gateway", RouteTableIds=[net["rt"]])["VpcEndpoint"]["VpcEndpointId"]


def training_request(name, bucket, net=None, **hps):
    req = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "HyperParameters": {
            "sagemaker_program": json.dumps("train.py"),
            "sagemaker_submit_directory": json.dumps(f"s3://{bucket}/code/sourcedir.tar.gz"),
            "epochs": "3",
            **{k: json.dumps(v) for k, v in hps.items()},
        },
        "InputDataConfig": [{
            "ChannelName": "train",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/data/train",
                                            "S3DataDistributionType": "FullyReplicated"}},
        }],
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    if net:
        req["VpcConfig"] = {"Subnets": net["subnets"], "SecurityGroupIds": [net["sg"]]}
    return req


def program_request(name, bucket, net, archive, count=1, **hps):
    """training_request running the source archive `code/<archive>` of `bucket` on `count` instances."""
    req = training_request(name, bucket, net, **hps)
    req["HyperParameters"]["sagemaker_submit_directory"] = json.dumps(f"s3://{bucket}/code/{archive}")
    req["ResourceConfig"]["InstanceCount"] = count
    return req


def wait_for(sm, name, statuses=("Completed", "Failed", "Stopped"), timeout=90):
    return wait_status(lambda: sm.describe_training_job(TrainingJobName=name), "TrainingJobStatus", statuses,
                       timeout, name, interval=0.2)


def model_of(s3, bucket, name):
    body = s3.get_object(Bucket=bucket, Key=f"output/{name}/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        return json.load(tar.extractfile("model.json"))


def job_name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_training_job_in_private_subnet_reads_s3_through_gateway_endpoint(ec2, s3, sm, logs, bucket, private_net):
    s3_endpoint(ec2, private_net)
    name = job_name("endpoint")
    sm.create_training_job(**training_request(name, bucket, private_net))
    # While it runs, the job's ENI is in one of its subnets, requester-managed, with its group.
    seen_eni = None
    deadline = time.time() + 60
    while time.time() < deadline and seen_eni is None:
        enis = ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [private_net["vpc"]]}])["NetworkInterfaces"]
        seen_eni = next((e for e in enis if e["RequesterManaged"] and name in e["Description"]), None)
        if sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] != "InProgress":
            break
        time.sleep(0.05)
    d = wait_for(sm, name)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert seen_eni is not None, "the job's ENI never showed in DescribeNetworkInterfaces"
    assert seen_eni["SubnetId"] in private_net["subnets"]
    assert [g["GroupId"] for g in seen_eni["Groups"]] == [private_net["sg"]]
    assert d["SecondaryStatus"] == "Completed"
    assert [t["Status"] for t in d["SecondaryStatusTransitions"]] == [
        "Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert d["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{bucket}/output/{name}/output/model.tar.gz"
    assert d["VpcConfig"]["Subnets"] == private_net["subnets"]
    assert d["BillableTimeInSeconds"] >= 1
    model = model_of(s3, bucket, name)
    assert model["rows"] == 30 and model["host"] == "algo-1"
    assert model["args"] == ["--epochs", "3"]
    # The ENI goes with the job's cleanup step, just after its final status.
    assert eventually(lambda: not [
        e for e in ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [private_net["vpc"]]}])
        ["NetworkInterfaces"] if e["RequesterManaged"] and name in e["Description"]])
    # The container's output is in CloudWatch Logs, one stream per host.
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=name)["logStreams"]
    assert len(streams) == 1 and streams[0]["logStreamName"].startswith(f"{name}/algo-1-")
    events = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=streams[0]["logStreamName"],
                                 startFromHead=True)["events"]
    messages = [e["message"] for e in events]
    assert "training starts on algo-1" in messages and "rows=30 epochs=3" in messages


def test_private_subnet_without_endpoint_fails_with_aws_message(sm, bucket, private_net):
    name = job_name("noroute")
    started = time.time()
    sm.create_training_job(**training_request(name, bucket, private_net))
    d = wait_for(sm, name)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"] == DATA_DOWNLOAD_FAILED
    assert d["SecondaryStatus"] == "Failed"
    assert time.time() - started < 30, "a job that cannot reach S3 must fail in seconds"
    # Cove said so when the job was created, and why (the reachability checks).
    first = d["SecondaryStatusTransitions"][0]["StatusMessage"]
    assert "Warning: S3 data download will fail" in first, first
    assert "NO_ROUTE_TO_DESTINATION" in first and private_net["rt"] in first, first


def test_network_isolation_blocks_the_container_but_not_its_data(ec2, s3, sm, bucket, private_net):
    s3_endpoint(ec2, private_net)
    isolated = job_name("isolated")
    open_job = job_name("open")
    sm.create_training_job(**training_request(isolated, bucket, private_net, probe_s3=True), EnableNetworkIsolation=True)
    sm.create_training_job(**training_request(open_job, bucket, private_net, probe_s3=True))
    for name in (isolated, open_job):
        assert wait_for(sm, name)["TrainingJobStatus"] == "Completed"
    iso = model_of(s3, bucket, isolated)
    assert iso["rows"] == 30, "the platform still delivers an isolated job's data"
    assert iso["probe"]["s3"].startswith("blocked"), iso
    assert iso["probe"]["credentials"] is False
    assert sm.describe_training_job(TrainingJobName=isolated)["EnableNetworkIsolation"] is True
    opened = model_of(s3, bucket, open_job)
    assert opened["probe"] == {"s3": "reached", "credentials": True}


def test_failure_file_becomes_the_failure_reason(sm, bucket):
    name = job_name("fails")
    sm.create_training_job(**training_request(name, bucket, fail=True))
    d = wait_for(sm, name)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"] == "AlgorithmError: the loss diverged"


def test_stop_and_max_runtime(sm, s3, bucket):
    stopped = job_name("stopped")
    timed = job_name("timed")
    sm.create_training_job(**training_request(stopped, bucket, sleep=120))
    req = training_request(timed, bucket, sleep=120)
    req["StoppingCondition"] = {"MaxRuntimeInSeconds": 3}
    sm.create_training_job(**req)
    deadline = time.time() + 60
    while sm.describe_training_job(TrainingJobName=stopped)["SecondaryStatus"] != "Training":
        assert time.time() < deadline
        time.sleep(0.1)
    sm.stop_training_job(TrainingJobName=stopped)
    assert sm.describe_training_job(TrainingJobName=stopped)["TrainingJobStatus"] in ("Stopping", "Stopped")
    d = wait_for(sm, stopped, timeout=30)
    assert (d["TrainingJobStatus"], d["SecondaryStatus"]) == ("Stopped", "Stopped")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.stop_training_job(TrainingJobName=stopped)
    assert e.value.response["Error"]["Code"] == "ValidationException"
    d = wait_for(sm, timed, timeout=60)
    assert (d["TrainingJobStatus"], d["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    # Artifacts are saved when a job is stopped, as on AWS.
    s3.head_object(Bucket=bucket, Key=f"output/{timed}/output/model.tar.gz")


def test_create_validates_names_and_vpc_config(ec2, sm, bucket, private_net):
    name = job_name("valid")
    bad = training_request(name, bucket, private_net)
    bad["VpcConfig"] = {"Subnets": ["subnet-0123456789abcdef0"], "SecurityGroupIds": [private_net["sg"]]}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.create_training_job(**bad)
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "subnet-0123456789abcdef0" in e.value.response["Error"]["Message"]
    other_vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    try:
        other = ec2.create_subnet(VpcId=other_vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
        bad["VpcConfig"] = {"Subnets": [private_net["subnets"][0], other], "SecurityGroupIds": [private_net["sg"]]}
        with pytest.raises(botocore.exceptions.ClientError) as e:
            sm.create_training_job(**bad)
        assert e.value.response["Error"]["Code"] == "ValidationException"
        ec2.delete_subnet(SubnetId=other)
    finally:
        ec2.delete_vpc(VpcId=other_vpc)
    bad["VpcConfig"] = {"Subnets": [], "SecurityGroupIds": [private_net["sg"]]}
    with pytest.raises(botocore.exceptions.ParamValidationError):
        sm.create_training_job(**bad)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.describe_training_job(TrainingJobName="does-not-exist")
    assert e.value.response["Error"] == {"Code": "ValidationException", "Message": "Requested resource not found."}
    # Nothing was stored by the rejected calls; a good one is then unique by name.
    assert not sm.list_training_jobs(NameContains=name)["TrainingJobSummaries"]
    sm.create_training_job(**training_request(name, bucket, fail=True))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.create_training_job(**training_request(name, bucket))
    assert e.value.response["Error"]["Code"] == "ResourceInUse"
    listed = sm.list_training_jobs(NameContains=name)["TrainingJobSummaries"]
    assert [j["TrainingJobName"] for j in listed] == [name]
    wait_for(sm, name)


PREPROCESS = r'''
import os
src = "/opt/ml/processing/input/data"
out = "/opt/ml/processing/output"
total = 0
for name in sorted(os.listdir(src)):
    with open(os.path.join(src, name)) as f:
        lines = f.readlines()
    total += len(lines)
    with open(os.path.join(out, name.replace(".csv", ".clean.csv")), "w") as f:
        f.writelines(l.upper() for l in lines)
print("processed", total, "rows", flush=True)
'''


def test_processing_job_through_endpoint(ec2, s3, sm, bucket, private_net):
    s3_endpoint(ec2, private_net)
    s3.put_object(Bucket=bucket, Key="code/preprocess.py", Body=PREPROCESS)
    name = job_name("proc")
    sm.create_processing_job(
        ProcessingJobName=name,
        RoleArn=ROLE,
        AppSpecification={"ImageUri": IMAGE, "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/preprocess.py"]},
        ProcessingInputs=[
            {"InputName": "data", "S3Input": {"S3Uri": f"s3://{bucket}/data/train", "LocalPath": "/opt/ml/processing/input/data",
                                              "S3DataType": "S3Prefix", "S3InputMode": "File"}},
            {"InputName": "code", "S3Input": {"S3Uri": f"s3://{bucket}/code/preprocess.py",
                                              "LocalPath": "/opt/ml/processing/input/code",
                                              "S3DataType": "S3Prefix", "S3InputMode": "File"}},
        ],
        ProcessingOutputConfig={"Outputs": [{"OutputName": "clean", "S3Output": {
            "S3Uri": f"s3://{bucket}/processed/{name}", "LocalPath": "/opt/ml/processing/output", "S3UploadMode": "EndOfJob"}}]},
        ProcessingResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}},
        NetworkConfig={"VpcConfig": {"Subnets": private_net["subnets"][:1], "SecurityGroupIds": [private_net["sg"]]}},
        StoppingCondition={"MaxRuntimeInSeconds": 300},
    )
    deadline = time.time() + 90
    while (d := sm.describe_processing_job(ProcessingJobName=name))["ProcessingJobStatus"] == "InProgress":
        assert time.time() < deadline
        time.sleep(0.2)
    assert d["ProcessingJobStatus"] == "Completed", d.get("FailureReason")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"processed/{name}/")["Contents"])
    assert keys == [f"processed/{name}/part-{i}.clean.csv" for i in range(3)]
    body = s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read().decode()
    assert body.startswith("0,0\n")
    summaries = sm.list_processing_jobs(NameContains=name)["ProcessingJobSummaries"]
    assert summaries[0]["ProcessingJobStatus"] == "Completed"


def nat_route(ec2, net):
    """A public subnet with an internet gateway and a NAT gateway; the job subnets' default route to it."""
    public = ec2.create_subnet(VpcId=net["vpc"], CidrBlock="10.0.100.0/24")["Subnet"]["SubnetId"]
    nat, eip = nat_gateway(ec2, net["vpc"], public)
    ec2.create_route(RouteTableId=net["rt"], DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    return eip


def test_nat_gateway_works_and_a_bucket_policy_can_demand_the_endpoint(ec2, s3, sm, bucket, private_net):
    eip = nat_route(ec2, private_net)
    try:
        via_nat = job_name("nat")
        sm.create_training_job(**training_request(via_nat, bucket, private_net))
        assert wait_for(sm, via_nat)["TrainingJobStatus"] == "Completed"
        assert model_of(s3, bucket, via_nat)["rows"] == 30

        # A bucket that only answers requests from one gateway endpoint.
        locked = f"locked-{uuid.uuid4().hex[:10]}"
        s3.create_bucket(Bucket=locked)
        s3.put_object(Bucket=locked, Key="data/train/part.csv", Body="1,2\n3,4\n")
        s3.put_object(Bucket=locked, Key="code/sourcedir.tar.gz", Body=source_archive(TRAIN))
        vpce = s3_endpoint(ec2, private_net)
        # The endpoint's prefix-list route is more specific than the NAT's default route,
        # so S3 traffic from the job subnets now takes the endpoint.
        s3.put_bucket_policy(Bucket=locked, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::{locked}", f"arn:aws:s3:::{locked}/*"],
            "Condition": {"StringNotEquals": {"aws:SourceVpce": vpce}}}]}))
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.get_object(Bucket=locked, Key="data/train/part.csv")
        assert e.value.response["Error"]["Code"] == "AccessDenied"
        through = job_name("vpce")
        sm.create_training_job(**training_request(through, locked, private_net))
        assert wait_for(sm, through)["TrainingJobStatus"] == "Completed"

        # Without the endpoint, the same job goes out through the NAT and S3 refuses it.
        ec2.delete_vpc_endpoints(VpcEndpointIds=[vpce])
        refused = job_name("refused")
        sm.create_training_job(**training_request(refused, locked, private_net))
        d = wait_for(sm, refused)
        assert d["TrainingJobStatus"] == "Failed"
        assert d["FailureReason"].startswith("ClientError: Data download failed:"), d["FailureReason"]
        assert "AccessDenied" in d["FailureReason"]
        s3.delete_bucket_policy(Bucket=locked)
    finally:
        ec2.delete_route(RouteTableId=private_net["rt"], DestinationCidrBlock="0.0.0.0/0")


DISTRIBUTED = r'''
import json, os, socket, sys, time
host = os.environ["SM_CURRENT_HOST"]
hosts = json.loads(os.environ["SM_HOSTS"])
def fail(msg):
    with open("/opt/ml/output/failure", "w") as f:
        f.write(msg)
    sys.exit(1)
if host == hosts[0]:
    server = socket.socket()
    server.bind(("0.0.0.0", 7000))
    server.listen(8)
    server.settimeout(30)
    peers = []
    for _ in hosts[1:]:
        conn, _ = server.accept()
        peers.append(conn.recv(64).decode())
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
        json.dump({"peers": sorted(peers)}, f)
else:
    deadline = time.time() + 8
    while True:
        try:
            c = socket.create_connection(("algo-1", 7000), timeout=2)
            c.sendall(host.encode())
            break
        except OSError as e:
            if time.time() > deadline:
                fail(f"{host} cannot reach algo-1: {e}")
            time.sleep(0.2)
'''


def test_two_instances_talk_only_with_the_self_referencing_rule(ec2, s3, sm, bucket, private_net):
    s3_endpoint(ec2, private_net)
    s3.put_object(Bucket=bucket, Key="code/distributed.tar.gz", Body=source_archive(DISTRIBUTED))

    def distributed(name):
        return program_request(name, bucket, private_net, "distributed.tar.gz", count=2)

    cut_off = job_name("nopeers")
    sm.create_training_job(**distributed(cut_off))
    d = wait_for(sm, cut_off)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"].startswith("AlgorithmError: algo-2 cannot reach algo-1"), d["FailureReason"]
    first = d["SecondaryStatusTransitions"][0]["StatusMessage"]
    assert "Traffic between hosts will fail" in first and "S3 data download" not in first, first

    ec2.authorize_security_group_ingress(GroupId=private_net["sg"], IpPermissions=[
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": private_net["sg"]}]}])
    together = job_name("peers")
    sm.create_training_job(**distributed(together))
    d = wait_for(sm, together)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert model_of(s3, bucket, together) == {"peers": ["algo-2"]}
    assert "Warning" not in d["SecondaryStatusTransitions"][0]["StatusMessage"]


def subnet_with_s3_endpoint(ec2):
    """A fresh server's VPC: one subnet, a job group, an S3 gateway endpoint."""
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="job", Description="job", VpcId=vpc)["GroupId"]
    rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
    ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.us-east-1.s3", VpcEndpointType="Gateway",
                            RouteTableIds=[rt])
    return {"subnets": [subnet], "sg": sg}


def test_a_running_job_survives_a_server_restart(fresh_cove):
    import signal
    ec2 = fresh_cove.client("ec2")
    s3 = fresh_cove.client("s3")
    sm = fresh_cove.client("sagemaker")
    net = subnet_with_s3_endpoint(ec2)
    name = f"restart-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="data/train/a.csv", Body="1\n2\n")
    s3.put_object(Bucket=name, Key="code/sourcedir.tar.gz", Body=source_archive(TRAIN))
    sm.create_training_job(**training_request(name, name, net, sleep=4))
    while sm.describe_training_job(TrainingJobName=name)["SecondaryStatus"] != "Training":
        time.sleep(0.1)
    fresh_cove.stop(signal.SIGKILL)
    time.sleep(1)
    fresh_cove.start()
    d = wait_for(sm, name, timeout=60)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert [t["Status"] for t in d["SecondaryStatusTransitions"]] == [
        "Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert model_of(s3, name, name)["rows"] == 2
    logs = fresh_cove.client("logs")
    stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=name)["logStreams"][0]
    messages = [e["message"] for e in logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                                        logStreamName=stream["logStreamName"], startFromHead=True)["events"]]
    assert messages.count("training starts on algo-1") == 1 and "done" in messages


def test_a_job_killed_while_downloading_resumes_after_the_restart(fresh_cove):
    """Cove killed with -9 while a job's data is moving: after the restart
    the transfer waits for the data plane to restore the job's network,
    then completes (before, it failed with AWS's "Data download failed")."""
    import signal
    ec2, s3, sm = fresh_cove.client("ec2"), fresh_cove.client("s3"), fresh_cove.client("sagemaker")
    net = subnet_with_s3_endpoint(ec2)
    name = f"dlkill-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    # Enough objects that the download phase lasts long enough to be killed in.
    for i in range(400):
        s3.put_object(Bucket=name, Key=f"data/train/part-{i:04d}.csv", Body="1\n")
    s3.put_object(Bucket=name, Key="code/sourcedir.tar.gz", Body=source_archive(TRAIN))
    sm.create_training_job(**training_request(name, name, net))
    deadline = time.time() + 60
    while sm.describe_training_job(TrainingJobName=name)["SecondaryStatus"] != "Downloading":
        assert time.time() < deadline, "the job never started downloading"
        time.sleep(0.02)
    fresh_cove.stop(signal.SIGKILL)
    fresh_cove.start()
    d = wait_for(sm, name, timeout=120)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert model_of(s3, name, name)["rows"] == 400


def test_flow_logs_of_a_job_delivered_to_s3(ec2, s3, sm, bucket, private_net):
    import gzip
    s3_endpoint(ec2, private_net)
    logs_bucket = f"flowlogs-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=logs_bucket)
    ec2.create_flow_logs(ResourceType="VPC", ResourceIds=[private_net["vpc"]], TrafficType="ALL",
                         LogDestinationType="s3", LogDestination=f"arn:aws:s3:::{logs_bucket}/vpc")
    name = job_name("flows")
    sm.create_training_job(**training_request(name, bucket, private_net))
    assert wait_for(sm, name)["TrainingJobStatus"] == "Completed"
    deadline = time.time() + 20
    records = []
    while time.time() < deadline and not records:
        for obj in s3.list_objects_v2(Bucket=logs_bucket, Prefix="vpc/AWSLogs/").get("Contents", []):
            key = obj["Key"]
            assert key.startswith("vpc/AWSLogs/123456789012/vpcflowlogs/us-east-1/") and key.endswith(".log.gz")
            text = gzip.decompress(s3.get_object(Bucket=logs_bucket, Key=key)["Body"].read()).decode()
            lines = text.splitlines()
            assert lines[0].startswith("version account-id interface-id srcaddr dstaddr")
            records += [line.split() for line in lines[1:]]
        time.sleep(0.5)
    # The job's ENI talked to S3's address through the endpoint, on port 80, and it was accepted.
    to_s3 = [r for r in records if r[4] == "192.0.2.20" and r[6] == "80"]
    assert to_s3 and all(r[12] == "ACCEPT" for r in to_s3), records


BYO_TRAIN = """#!/bin/sh
n=0
for f in /opt/ml/input/data/train/*; do n=$((n+1)); done
marker=no; [ -e /etc/byo-marker ] && marker=yes
python=no; [ -e /usr/bin/python3 ] && python=yes
echo "files=$n marker=$marker python=$python host=$SM_CURRENT_HOST" > /opt/ml/model/result.txt
echo "byo training done"
"""


def byo_rootfs_tarball(path, train=BYO_TRAIN):
    """A minimal image: the host's /bin/sh with its libraries, and a `train` program."""
    import re
    import subprocess
    out = subprocess.run(["ldd", "/bin/sh"], capture_output=True, text=True, check=True).stdout
    libs = re.findall(r"(/\S+) \(0x", out)
    with tarfile.open(path, "w:gz") as t:
        t.add(os.path.realpath("/bin/sh"), arcname="bin/sh")
        for lib in libs:
            t.add(os.path.realpath(lib), arcname=lib.lstrip("/"))
        for name, body, mode in (("usr/local/bin/train", train, 0o755), ("etc/byo-marker", "byo\n", 0o644)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), mode
            t.addfile(info, io.BytesIO(body.encode()))


def test_bring_your_own_image_runs_train_in_its_own_root(cove_server, ec2, s3, sm, bucket, private_net, tmp_path):
    import subprocess
    from conftest import BINARY
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byo-sh:1"
    tarball = tmp_path / "rootfs.tar.gz"
    byo_rootfs_tarball(tarball)
    subprocess.run([BINARY, "image-import", "--data-dir", cove_server.data_dir, image, str(tarball)],
                   check=True, capture_output=True)
    s3_endpoint(ec2, private_net)
    name = job_name("byo")
    req = training_request(name, bucket, private_net)
    req["AlgorithmSpecification"]["TrainingImage"] = image
    del req["HyperParameters"]
    sm.create_training_job(**req)
    d = wait_for(sm, name)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    body = s3.get_object(Bucket=bucket, Key=f"output/{name}/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as t:
        result = t.extractfile("result.txt").read().decode().strip()
    assert result == "files=3 marker=yes python=no host=algo-1"
    # An image nobody imported fails at start with a clear reason.
    missing = job_name("noimage")
    req = training_request(missing, bucket, private_net)
    req["AlgorithmSpecification"]["TrainingImage"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/absent:1"
    del req["HyperParameters"]
    sm.create_training_job(**req)
    d = wait_for(sm, missing)
    assert d["TrainingJobStatus"] == "Failed"
    assert "is not available to Cove" in d["FailureReason"]


def test_manifest_file_channel_and_sharded_hosts(ec2, s3, sm, bucket, private_net):
    """A ManifestFile channel lists objects under a common prefix; ShardedByS3Key splits them over the hosts."""
    s3_endpoint(ec2, private_net)
    ec2.authorize_security_group_ingress(GroupId=private_net["sg"], IpPermissions=[
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": private_net["sg"]}]}])
    s3.put_object(Bucket=bucket, Key="manifest/train.manifest", Body=json.dumps(
        [{"prefix": f"s3://{bucket}/data/train/"}, "part-0.csv", "part-2.csv"]))
    name = job_name("manifest")
    req = training_request(name, bucket, private_net)
    req["InputDataConfig"][0]["DataSource"]["S3DataSource"] = {
        "S3DataType": "ManifestFile", "S3Uri": f"s3://{bucket}/manifest/train.manifest",
        "S3DataDistributionType": "ShardedByS3Key"}
    req["ResourceConfig"]["InstanceCount"] = 2
    sm.create_training_job(**req)
    d = wait_for(sm, name)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    # algo-1 uploads the model: it got the first of the two listed objects (10 rows).
    assert model_of(s3, bucket, name)["rows"] == 10


def test_models_and_endpoint_configs_are_stored_and_described(ec2, sm, bucket, private_net):
    model = job_name("model")
    arn = sm.create_model(
        ModelName=model, ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{bucket}/output/model.tar.gz",
                          "Environment": {"SAGEMAKER_PROGRAM": "inference.py"}},
        VpcConfig={"Subnets": private_net["subnets"], "SecurityGroupIds": [private_net["sg"]]},
    )["ModelArn"]
    assert arn == f"arn:aws:sagemaker:us-east-1:123456789012:model/{model}"
    d = sm.describe_model(ModelName=model)
    assert d["PrimaryContainer"]["ModelDataUrl"] == f"s3://{bucket}/output/model.tar.gz"
    assert d["VpcConfig"]["Subnets"] == private_net["subnets"] and d["EnableNetworkIsolation"] is False
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.create_model(ModelName=model, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})
    assert e.value.response["Error"]["Message"] == f'Cannot create already existing model "{arn}".'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.create_model(ModelName=model + "-bad", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE},
                        VpcConfig={"Subnets": ["subnet-0000000000000000f"], "SecurityGroupIds": [private_net["sg"]]})
    assert e.value.response["Error"]["Code"] == "ValidationException"

    config = job_name("config")
    missing = f"arn:aws:sagemaker:us-east-1:123456789012:model/{model}-absent"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.create_endpoint_config(EndpointConfigName=config, ProductionVariants=[
            {"VariantName": "a", "ModelName": f"{model}-absent", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}])
    assert e.value.response["Error"]["Message"] == f'Could not find model "{missing}".'
    sm.create_endpoint_config(EndpointConfigName=config, ProductionVariants=[
        {"VariantName": "a", "ModelName": model, "InstanceType": "ml.m5.large", "InitialInstanceCount": 2,
         "InitialVariantWeight": 1.0}])
    d = sm.describe_endpoint_config(EndpointConfigName=config)
    assert d["ProductionVariants"][0]["InitialInstanceCount"] == 2
    assert [c["EndpointConfigName"] for c in sm.list_endpoint_configs(NameContains=config)["EndpointConfigs"]] == [config]
    assert [m["ModelName"] for m in sm.list_models(NameContains=model)["Models"]] == [model]

    sm.delete_endpoint_config(EndpointConfigName=config)
    sm.delete_model(ModelName=model)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.describe_model(ModelName=model)
    assert e.value.response["Error"]["Message"] == f'Could not find model "{arn}".'
    assert not sm.list_models(NameContains=model)["Models"]


def test_stop_processing_job(sm, s3, logs, bucket):
    s3.put_object(Bucket=bucket, Key="code/slow.py", Body="import time\nopen('/opt/ml/processing/output/partial.txt','w').write('x')\n"
                  "print('partial written', flush=True)\ntime.sleep(120)\n")
    name = job_name("procstop")
    sm.create_processing_job(
        ProcessingJobName=name, RoleArn=ROLE,
        AppSpecification={"ImageUri": IMAGE, "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/slow.py"]},
        ProcessingInputs=[{"InputName": "code", "S3Input": {"S3Uri": f"s3://{bucket}/code/slow.py",
                           "LocalPath": "/opt/ml/processing/input/code", "S3DataType": "S3Prefix"}}],
        ProcessingOutputConfig={"Outputs": [{"OutputName": "out", "S3Output": {
            "S3Uri": f"s3://{bucket}/procstop/{name}", "LocalPath": "/opt/ml/processing/output", "S3UploadMode": "EndOfJob"}}]},
        ProcessingResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}},
        StoppingCondition={"MaxRuntimeInSeconds": 300},
    )
    def written():
        try:
            streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/ProcessingJobs",
                                                logStreamNamePrefix=name)["logStreams"]
        except botocore.exceptions.ClientError:  # the group comes with the job's first line
            return False
        return any(e["message"] == "partial written" for s in streams for e in logs.get_log_events(
            logGroupName="/aws/sagemaker/ProcessingJobs", logStreamName=s["logStreamName"])["events"])
    assert eventually(written, timeout=30)
    sm.stop_processing_job(ProcessingJobName=name)
    deadline = time.time() + 30
    while (d := sm.describe_processing_job(ProcessingJobName=name))["ProcessingJobStatus"] in ("InProgress", "Stopping"):
        assert time.time() < deadline
        time.sleep(0.2)
    assert d["ProcessingJobStatus"] == "Stopped", d
    # What the job wrote before it was stopped is uploaded, as on AWS.
    s3.head_object(Bucket=bucket, Key=f"procstop/{name}/partial.txt")


def script_job(s3, bucket, net, files):
    """A script-mode job whose source directory holds `files`."""
    name = job_name("toolkit")
    key = f"code/{name}/sourcedir.tar.gz"
    s3.put_object(Bucket=bucket, Key=key, Body=tar_gz(files))
    req = training_request(name, bucket, net)
    req["HyperParameters"]["sagemaker_submit_directory"] = json.dumps(f"s3://{bucket}/{key}")
    req["HyperParameters"]["epochs"] = "1"
    return name, req


def test_script_failures_are_reported_as_the_sagemaker_toolkit_does(ec2, s3, sm, logs, bucket, private_net):
    s3_endpoint(ec2, private_net)
    # A module the host's Python does not have: the toolkit's ExecuteUserScriptError.
    missing, req = script_job(s3, bucket, private_net, {"train.py": "import json\nimport cove_missing_module\n"})
    sm.create_training_job(**req)
    # A requirements.txt in a private subnet with no way to a package index.
    offline, req = script_job(s3, bucket, private_net, {"train.py": "print('never runs')\n",
                                                          "requirements.txt": "cove-missing-package==1.0\n"})
    sm.create_training_job(**req)

    d = wait_for(sm, missing)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"] == (
        'AlgorithmError: ExecuteUserScriptError:\nExitCode 1\n'
        'ErrorMessage "ModuleNotFoundError: No module named \'cove_missing_module\'"\n'
        'Command "/usr/bin/python3 train.py --epochs 1"')
    stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                       logStreamNamePrefix=missing)["logStreams"][0]["logStreamName"]
    events = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream,
                                 startFromHead=True)["events"]
    assert any("script mode runs the host's Python" in e["message"] for e in events)

    d = wait_for(sm, offline, timeout=120)
    assert d["TrainingJobStatus"] == "Failed"
    reason = d["FailureReason"]
    assert reason.startswith("AlgorithmError: InstallRequirementsError:\nExitCode "), reason
    assert "-m pip install" in reason and "-r requirements.txt" in reason, reason
    assert "cove-missing-package" in reason, reason


def demo_wheel(directory):
    """A pure-Python wheel, `cove_demo_pkg` 1.0, written into `directory`."""
    import zipfile
    path = os.path.join(directory, "cove_demo_pkg-1.0-py3-none-any.whl")
    files = {
        "cove_demo_pkg/__init__.py": "ANSWER = 42\n",
        "cove_demo_pkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: cove-demo-pkg\nVersion: 1.0\n",
        "cove_demo_pkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: cove-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + "cove_demo_pkg-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, body in files.items():
            z.writestr(name, body)
        z.writestr("cove_demo_pkg-1.0.dist-info/RECORD", record)
    return path


def test_requirements_install_from_the_package_index_through_a_nat_gateway(cove_server, ec2, s3, sm, bucket,
                                                                           private_net):
    from conftest import nat_gateway
    index = os.path.join(cove_server.data_dir, "pypi")
    os.makedirs(index, exist_ok=True)
    demo_wheel(index)
    s3_endpoint(ec2, private_net)
    public = ec2.create_subnet(VpcId=private_net["vpc"], CidrBlock="10.0.9.0/24")["Subnet"]["SubnetId"]
    nat, _ = nat_gateway(ec2, private_net["vpc"], public)
    ec2.create_route(RouteTableId=private_net["rt"], DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    train = ("import json, os, socket, cove_demo_pkg\n"
             "json.dump({'answer': cove_demo_pkg.ANSWER, 'pypi': socket.gethostbyname('pypi.org')},\n"
             "          open(os.path.join(os.environ['SM_MODEL_DIR'], 'model.json'), 'w'))\n")
    # pip's defaults: https://pypi.org/simple/, verified against the job's CA bundle.
    name, req = script_job(s3, bucket, private_net, {"train.py": train, "requirements.txt": "cove-demo-pkg==1.0\n"})
    sm.create_training_job(**req)
    d = wait_for(sm, name, timeout=120)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert model_of(s3, bucket, name) == {"answer": 42, "pypi": "203.0.113.11"}


def test_a_gpu_instance_type_says_the_host_has_no_gpus(s3, sm, logs, bucket):
    if os.path.exists("/dev/nvidia0"):
        pytest.skip("this host has a GPU")
    name = job_name("gpu")
    req = training_request(name, bucket)
    req["ResourceConfig"]["InstanceType"] = "ml.g5.xlarge"
    sm.create_training_job(**req)
    d = wait_for(sm, name)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                       logStreamNamePrefix=name)["logStreams"][0]["logStreamName"]
    messages = [e["message"] for e in logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream, startFromHead=True)["events"]]
    assert messages[0] == ("cove: ml.g5.xlarge has 1 GPU(s) on AWS; this host has none, "
                           "so the job runs on CPU (SM_NUM_GPUS=0)"), messages


def test_a_job_without_vpc_config_has_internet_access(cove_server, ec2, s3, sm, bucket):
    index = os.path.join(cove_server.data_dir, "pypi")
    os.makedirs(index, exist_ok=True)
    demo_wheel(index)
    train = ("import json, os, cove_demo_pkg\n"
             "json.dump({'answer': cove_demo_pkg.ANSWER},\n"
             "          open(os.path.join(os.environ['SM_MODEL_DIR'], 'model.json'), 'w'))\n")
    name, req = script_job(s3, bucket, None, {"train.py": train, "requirements.txt": "cove-demo-pkg==1.0\n"})
    sm.create_training_job(**req)
    # SageMaker's network: an ENI with a public address in Cove's managed VPC.
    seen = None
    deadline = time.time() + 60
    while seen is None and time.time() < deadline:
        seen = next((e for e in ec2.describe_network_interfaces()["NetworkInterfaces"]
                     if name in e["Description"]), None)
        time.sleep(0.05)
    d = wait_for(sm, name)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert model_of(s3, bucket, name) == {"answer": 42}
    assert "VpcConfig" not in d
    assert seen is not None and seen["Association"]["PublicIp"]
    vpc = ec2.describe_vpcs(VpcIds=[seen["VpcId"]])["Vpcs"][0]
    assert {"Key": "cove:managed", "Value": "sagemaker-jobs"} in vpc["Tags"]
    # Network isolation still keeps the job off every network.
    isolated, req = script_job(s3, bucket, None, {"train.py": "print('no network')\n",
                                                   "requirements.txt": "cove-demo-pkg==1.0\n"})
    req["EnableNetworkIsolation"] = True
    sm.create_training_job(**req)
    d = wait_for(sm, isolated, timeout=120)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"].startswith("AlgorithmError: InstallRequirementsError:"), d["FailureReason"]


def test_a_jobs_resolv_conf_comes_from_the_vpcs_dhcp_options(ec2, s3, sm, logs, bucket, private_net):
    s3_endpoint(ec2, private_net)
    corp = ec2.create_dhcp_options(DhcpConfigurations=[
        {"Key": "domain-name", "Values": ["corp.example"]},
        {"Key": "domain-name-servers", "Values": ["AmazonProvidedDNS"]}])["DhcpOptions"]["DhcpOptionsId"]
    ec2.associate_dhcp_options(DhcpOptionsId=corp, VpcId=private_net["vpc"])
    name, req = script_job(s3, bucket, private_net, {"train.py": "print(open('/etc/resolv.conf').read(), flush=True)\n"})
    sm.create_training_job(**req)
    assert wait_for(sm, name)["TrainingJobStatus"] == "Completed"
    stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                       logStreamNamePrefix=name)["logStreams"][0]["logStreamName"]
    text = "\n".join(e["message"] for e in logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream, startFromHead=True)["events"])
    assert "search corp.example" in text and "nameserver 10.0.0.2" in text, text

    # A set without domain-name-servers fails the job before it starts, as SageMaker does.
    bare = ec2.create_dhcp_options(DhcpConfigurations=[
        {"Key": "domain-name", "Values": ["corp.example"]}])["DhcpOptions"]["DhcpOptionsId"]
    ec2.associate_dhcp_options(DhcpOptionsId=bare, VpcId=private_net["vpc"])
    name, req = script_job(s3, bucket, private_net, {"train.py": "print('never runs')\n"})
    sm.create_training_job(**req)
    d = wait_for(sm, name)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"].startswith("ClientError: The DHCP options of VPC ")
    assert "have no domain-name-servers" in d["FailureReason"]
    ec2.associate_dhcp_options(DhcpOptionsId="default", VpcId=private_net["vpc"])
    for d in (corp, bare):
        ec2.delete_dhcp_options(DhcpOptionsId=d)
