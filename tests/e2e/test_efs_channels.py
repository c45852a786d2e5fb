"""Training channels on EFS (FileSystemDataSource), mounted through each
job host's own ENI from the mount target in its zone: the mount target's
security groups and the subnets' network ACLs decide, on real packets to
port 2049, as on AWS. The file system's bytes are real files under Cove's
data directory."""

import json
import os
import time
import uuid

import pytest

from helpers import aws_error, wait_status
from test_training_jobs import ROLE, IMAGE, job_name, model_of, s3, s3_endpoint, sm, source_archive, wait_for  # noqa: F401

SCRIPT = r'''
import errno, json, os, sys, time
hps = json.loads(os.environ["SM_HPS"])
out = {"channels": json.loads(os.environ["SM_CHANNELS"])}
if hps["mode"] == "restart":
    shared = os.environ["SM_CHANNEL_SHARED"]
    held = open(os.path.join(shared, "in.txt"))
    open(os.path.join(shared, "started"), "w").close()
    # Cove restarts now; the file system answers again after it.
    while not os.path.exists(os.path.join(shared, "go")):
        time.sleep(0.2)
    with open(os.path.join(shared, "out.txt"), "w") as f:
        f.write(held.read().upper())
    out["restarted"] = True
elif hps["mode"] == "write":
    shared = os.environ["SM_CHANNEL_SHARED"]
    os.makedirs(os.path.join(shared, "data"), exist_ok=True)
    for i in range(3):
        with open(os.path.join(shared, "data", f"part-{i}.csv"), "w") as f:
            f.write("".join(f"{i},{n}\n" for n in range(10)))
    big = os.path.join(shared, "data", "big.bin")
    with open(big, "wb") as f:
        f.write(os.urandom(4 << 20))
    out["written"] = sorted(os.listdir(os.path.join(shared, "data")))
    import socket
    out["resolved"] = socket.gethostbyname(hps["fs_name"])
else:
    train = os.environ["SM_CHANNEL_TRAIN"]
    rows = 0
    for name in sorted(os.listdir(train)):
        if name.endswith(".csv"):
            with open(os.path.join(train, name)) as f:
                rows += sum(1 for _ in f)
    out["rows"] = rows
    out["big"] = os.path.getsize(os.path.join(train, "big.bin"))
    try:
        open(os.path.join(train, "nope"), "w").close()
        out["write"] = "allowed"
    except OSError as e:
        out["write"] = errno.errorcode.get(e.errno, str(e.errno))
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
    json.dump(out, f)
'''


@pytest.fixture(scope="module")
def efs(cove_server):
    return cove_server.client("efs")


@pytest.fixture(scope="module")
def bucket(s3):
    name = f"efs-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="code/sourcedir.tar.gz", Body=source_archive(SCRIPT))
    return name


@pytest.fixture
def efs_net(ec2, efs, vpc):
    """A private subnet for jobs and one for the file system's mount target
    (in the same zone: traffic between them crosses both subnets' network
    ACLs, as on AWS), whose only way out is an S3 gateway endpoint; a job
    group, and a mount-target group admitting NFS from the job group."""
    job_subnet, efs_subnet = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
        for i in (1, 2)
    ]
    subnets = [job_subnet]
    job_sg = ec2.create_security_group(GroupName="job", Description="training job", VpcId=vpc)["GroupId"]
    efs_sg = ec2.create_security_group(GroupName="efs", Description="mount targets", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=efs_sg, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 2049, "ToPort": 2049, "UserIdGroupPairs": [{"GroupId": job_sg}]}])
    main_rt = ec2.describe_route_tables(Filters=[
        {"Name": "vpc-id", "Values": [vpc]}, {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]["RouteTableId"]
    net = {"vpc": vpc, "subnets": subnets, "sg": job_sg, "efs_sg": efs_sg, "rt": main_rt}
    s3_endpoint(ec2, net)
    # The file system's DNS name resolves in the VPC with DNS hostnames on.
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    fs = efs.create_file_system(CreationToken=str(uuid.uuid4()))["FileSystemId"]
    net["fs"] = fs
    net["mount_targets"] = [
        efs.create_mount_target(FileSystemId=fs, SubnetId=efs_subnet, SecurityGroups=[efs_sg])["MountTargetId"]
    ]
    yield net
    for mt in net["mount_targets"]:
        efs.delete_mount_target(MountTargetId=mt)
    efs.delete_file_system(FileSystemId=fs)


def efs_request(name, bucket, net, channel, directory, mode, script_mode):
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "HyperParameters": {
            "sagemaker_program": json.dumps("train.py"),
            "sagemaker_submit_directory": json.dumps(f"s3://{bucket}/code/sourcedir.tar.gz"),
            "mode": json.dumps(script_mode),
            "fs_name": json.dumps(f"{net['fs']}.efs.us-east-1.amazonaws.com"),
        },
        "InputDataConfig": [{
            "ChannelName": channel,
            "DataSource": {"FileSystemDataSource": {
                "FileSystemId": net["fs"], "FileSystemType": "EFS",
                "DirectoryPath": directory, "FileSystemAccessMode": mode}},
        }],
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "VpcConfig": {"Subnets": net["subnets"], "SecurityGroupIds": [net["sg"]]},
    }


def unable(net, directory):
    return (f"ClientError: Unable to mount file system: {net['fs']} directory path: {directory}. Please ensure "
            "the file system exists, the directory path is valid, and the mount target is accessible from the "
            "subnet with proper security group settings.")


def test_a_job_writes_a_channel_on_efs_and_the_next_job_reads_it(cove_server, efs, s3, sm, bucket, efs_net):
    writer = job_name("efs-w")
    sm.create_training_job(**efs_request(writer, bucket, efs_net, "shared", "/", "rw", "write"))
    d = wait_for(sm, writer)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert d["InputDataConfig"][0]["DataSource"]["FileSystemDataSource"]["FileSystemAccessMode"] == "rw"
    written = model_of(s3, bucket, writer)
    assert written["written"] == ["big.bin", "part-0.csv", "part-1.csv", "part-2.csv"]
    target = efs.describe_mount_targets(FileSystemId=efs_net["fs"])["MountTargets"][0]
    assert written["resolved"] == target["IpAddress"]
    # The bytes are on the file system's disk, and EFS meters them.
    on_disk = os.path.join(cove_server.data_dir, "efs", efs_net["fs"], "data")
    assert sorted(os.listdir(on_disk)) == ["big.bin", "part-0.csv", "part-1.csv", "part-2.csv"]
    size = efs.describe_file_systems(FileSystemId=efs_net["fs"])["FileSystems"][0]["SizeInBytes"]["Value"]
    assert size >= 4 << 20

    reader = job_name("efs-r")
    sm.create_training_job(**efs_request(reader, bucket, efs_net, "train", "/data", "ro", "read"))
    d = wait_for(sm, reader)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    model = model_of(s3, bucket, reader)
    assert model["rows"] == 30 and model["big"] == 4 << 20
    assert model["write"] == "EROFS", "a read-only channel refuses writes"
    assert model["channels"] == ["train"]


def test_without_the_nfs_rule_or_through_an_acl_dropping_2049_the_job_fails(ec2, sm, bucket, efs_net):
    # The mount target's group no longer admits the job's group.
    ec2.revoke_security_group_ingress(GroupId=efs_net["efs_sg"], IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 2049, "ToPort": 2049, "UserIdGroupPairs": [{"GroupId": efs_net["sg"]}]}])
    name = job_name("efs-sg")
    started = time.time()
    sm.create_training_job(**efs_request(name, bucket, efs_net, "train", "/", "ro", "read"))
    d = wait_for(sm, name)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"].startswith(unable(efs_net, "/")), d["FailureReason"]
    assert "did not answer on" in d["FailureReason"] and ":2049" in d["FailureReason"]
    # Cove said so when the job was created, naming the group in the way.
    first = d["SecondaryStatusTransitions"][0]["StatusMessage"]
    assert "File system access will fail" in first and efs_net["efs_sg"] in first, first
    assert time.time() - started < 45

    # The group admits NFS again, but the subnets' ACL drops it.
    ec2.authorize_security_group_ingress(GroupId=efs_net["efs_sg"], IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 2049, "ToPort": 2049, "UserIdGroupPairs": [{"GroupId": efs_net["sg"]}]}])
    acl = ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [efs_net["vpc"]]},
                                             {"Name": "default", "Values": ["true"]}])["NetworkAcls"][0]["NetworkAclId"]
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=10, Protocol="6", RuleAction="deny", Egress=False,
                                 CidrBlock="0.0.0.0/0", PortRange={"From": 2049, "To": 2049})
    try:
        name = job_name("efs-acl")
        sm.create_training_job(**efs_request(name, bucket, efs_net, "train", "/", "ro", "read"))
        d = wait_for(sm, name)
        assert d["TrainingJobStatus"] == "Failed"
        assert d["FailureReason"].startswith(unable(efs_net, "/")), d["FailureReason"]
    finally:
        ec2.delete_network_acl_entry(NetworkAclId=acl, RuleNumber=10, Egress=False)


def test_a_missing_directory_or_file_system_fails_the_job(sm, efs, bucket, efs_net):
    name = job_name("efs-dir")
    sm.create_training_job(**efs_request(name, bucket, efs_net, "train", "/no/such/dir", "ro", "read"))
    d = wait_for(sm, name)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"].startswith(unable(efs_net, "/no/such/dir")), d["FailureReason"]
    assert "no such directory" in d["FailureReason"]

    other = dict(efs_net, fs="fs-0123456789abcdef0")
    name = job_name("efs-nofs")
    sm.create_training_job(**efs_request(name, bucket, other, "train", "/", "ro", "read"))
    d = wait_for(sm, name)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"].startswith(unable(other, "/")), d["FailureReason"]
    assert "fs-0123456789abcdef0 does not exist" in d["FailureReason"]


def test_file_system_channels_are_validated_when_the_job_is_created(sm, bucket, efs_net):
    req = efs_request(job_name("efs-v"), bucket, efs_net, "train", "/", "ro", "read")
    no_vpc = {k: v for k, v in req.items() if k != "VpcConfig"}
    assert "VpcConfig" in aws_error("ValidationException", sm.create_training_job, **no_vpc)
    fsx = json.loads(json.dumps(req))
    fsx["InputDataConfig"][0]["DataSource"]["FileSystemDataSource"]["FileSystemType"] = "FSxLustre"
    assert "FSxLustre" in aws_error("ValidationException", sm.create_training_job, **fsx)
    pipe = json.loads(json.dumps(req))
    pipe["InputDataConfig"][0]["InputMode"] = "Pipe"
    aws_error("ValidationException", sm.create_training_job, **pipe)


def test_a_job_keeps_its_efs_channel_across_a_restart_of_cove(fresh_cove):
    import signal
    ec2, efs, s3, sm = (fresh_cove.client(s) for s in ("ec2", "efs", "s3", "sagemaker"))
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    job_sg = ec2.create_security_group(GroupName="job", Description="job", VpcId=vpc)["GroupId"]
    efs_sg = ec2.create_security_group(GroupName="efs", Description="efs", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=efs_sg, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 2049, "ToPort": 2049, "UserIdGroupPairs": [{"GroupId": job_sg}]}])
    rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
    s3_endpoint(ec2, {"vpc": vpc, "rt": rt})
    fs = efs.create_file_system(CreationToken=str(uuid.uuid4()))["FileSystemId"]
    efs.create_mount_target(FileSystemId=fs, SubnetId=subnet, SecurityGroups=[efs_sg])
    on_disk = os.path.join(fresh_cove.data_dir, "efs", fs)
    os.makedirs(on_disk, exist_ok=True)
    with open(os.path.join(on_disk, "in.txt"), "w") as f:
        f.write("hello")
    bucket = f"efs-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=source_archive(SCRIPT))
    net = {"fs": fs, "subnets": [subnet], "sg": job_sg}
    name = job_name("efs-restart")
    sm.create_training_job(**efs_request(name, bucket, net, "shared", "/", "rw", "restart"))
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(on_disk, "started")):
        assert time.time() < deadline, sm.describe_training_job(TrainingJobName=name).get("FailureReason")
        time.sleep(0.1)
    fresh_cove.stop(signal.SIGKILL)
    time.sleep(1)
    fresh_cove.start()
    open(os.path.join(on_disk, "go"), "w").close()
    d = wait_for(sm, name, timeout=120)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert open(os.path.join(on_disk, "out.txt")).read() == "HELLO"
    assert model_of(s3, bucket, name)["restarted"] is True
