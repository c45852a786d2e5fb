"""EFS through boto3 (REST-JSON): file systems, mount targets as ENIs in
the VPC with their security groups, access points, policies, lifecycle and
backup settings, tags and paging, with EFS's errors. Reaching a file system
over NFS through the VPC is checked in test_efs_channels.py."""

import json
import urllib.error
import urllib.request
import uuid

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest

from conftest import ACCESS_KEY, SECRET_KEY
from helpers import aws_error


@pytest.fixture
def efs(cove_server):
    return cove_server.client("efs")


@pytest.fixture
def file_system(efs):
    """A fresh file system, deleted with its mount targets and access points after the test."""
    fs = efs.create_file_system(CreationToken=str(uuid.uuid4()), Tags=[{"Key": "Name", "Value": "data"}])
    yield fs
    fs_id = fs["FileSystemId"]
    for m in efs.describe_mount_targets(FileSystemId=fs_id)["MountTargets"]:
        efs.delete_mount_target(MountTargetId=m["MountTargetId"])
    efs.delete_file_system(FileSystemId=fs_id)


def test_file_system_lifecycle_paging_and_errors(efs, file_system):
    fs = file_system
    assert fs["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert fs["FileSystemId"].startswith("fs-") and len(fs["FileSystemId"]) == 20
    assert fs["LifeCycleState"] == "creating" and fs["Name"] == "data"
    assert fs["PerformanceMode"] == "generalPurpose" and fs["ThroughputMode"] == "bursting"
    assert fs["Encrypted"] is False and "KmsKeyId" not in fs
    assert fs["FileSystemArn"] == f"arn:aws:elasticfilesystem:us-east-1:123456789012:file-system/{fs['FileSystemId']}"
    assert fs["SizeInBytes"]["Value"] == 0 and fs["NumberOfMountTargets"] == 0
    described = efs.describe_file_systems(FileSystemId=fs["FileSystemId"])["FileSystems"][0]
    assert described["LifeCycleState"] == "available"
    assert described["CreationTime"] == fs["CreationTime"]
    by_token = efs.describe_file_systems(CreationToken=fs["CreationToken"])["FileSystems"]
    assert [f["FileSystemId"] for f in by_token] == [fs["FileSystemId"]]

    msg = aws_error("FileSystemAlreadyExists", efs.create_file_system, CreationToken=fs["CreationToken"])
    assert fs["FileSystemId"] in msg
    aws_error("FileSystemNotFound", efs.describe_file_systems, FileSystemId="fs-0123456789abcdef0")
    aws_error("BadRequest", efs.create_file_system, CreationToken="t-" + str(uuid.uuid4()),
              ThroughputMode="provisioned")
    aws_error("BadRequest", efs.create_file_system, CreationToken=str(uuid.uuid4()), KmsKeyId="alias/x")

    updated = efs.update_file_system(FileSystemId=fs["FileSystemId"], ThroughputMode="provisioned",
                                     ProvisionedThroughputInMibps=64.0)
    assert updated["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert updated["ThroughputMode"] == "provisioned" and updated["ProvisionedThroughputInMibps"] == 64.0

    # Paging over several file systems, with the SDK's paginator.
    made = [efs.create_file_system(CreationToken=str(uuid.uuid4()), Encrypted=True)["FileSystemId"] for _ in range(3)]
    try:
        first = efs.describe_file_systems(MaxItems=2)
        assert len(first["FileSystems"]) == 2 and "NextMarker" in first
        listed = [f["FileSystemId"] for p in efs.get_paginator("describe_file_systems").paginate(
            PaginationConfig={"PageSize": 2}) for f in p["FileSystems"]]
        assert set(made + [fs["FileSystemId"]]) <= set(listed) and len(listed) == len(set(listed))
        enc = efs.describe_file_systems(FileSystemId=made[0])["FileSystems"][0]
        assert enc["Encrypted"] is True and enc["KmsKeyId"].startswith("arn:aws:kms:us-east-1:123456789012:key/")
    finally:
        for f in made:
            efs.delete_file_system(FileSystemId=f)
    aws_error("FileSystemNotFound", efs.delete_file_system, FileSystemId=made[0])


def test_mount_targets_are_enis_in_the_vpc_with_their_groups(efs, ec2, vpc, file_system):
    fs_id = file_system["FileSystemId"]
    a = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    a2 = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    b = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.3.0/24", AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]
    nfs = ec2.create_security_group(VpcId=vpc, GroupName="nfs", Description="NFS")["GroupId"]
    default = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                    {"Name": "group-name", "Values": ["default"]}])["SecurityGroups"][0]["GroupId"]

    mt = efs.create_mount_target(FileSystemId=fs_id, SubnetId=a, SecurityGroups=[nfs], IpAddress="10.0.1.50")
    assert mt["LifeCycleState"] == "creating" and mt["IpAddress"] == "10.0.1.50"
    assert (mt["VpcId"], mt["AvailabilityZoneName"], mt["AvailabilityZoneId"]) == (vpc, "us-east-1a", "use1-az1")
    eni = ec2.describe_network_interfaces(NetworkInterfaceIds=[mt["NetworkInterfaceId"]])["NetworkInterfaces"][0]
    assert eni["PrivateIpAddress"] == "10.0.1.50" and eni["RequesterManaged"] is True
    assert eni["Description"] == f"EFS mount target for {fs_id} ({mt['MountTargetId']})"
    assert [g["GroupId"] for g in eni["Groups"]] == [nfs]
    assert efs.describe_mount_target_security_groups(MountTargetId=mt["MountTargetId"])["SecurityGroups"] == [nfs]

    # One per zone, all in one VPC; addresses and groups checked as EFS does.
    msg = aws_error("MountTargetConflict", efs.create_mount_target, FileSystemId=fs_id, SubnetId=a2)
    assert "us-east-1a" in msg
    taken = ec2.create_network_interface(SubnetId=b, PrivateIpAddress="10.0.3.20")["NetworkInterface"]
    aws_error("IpAddressInUse", efs.create_mount_target, FileSystemId=fs_id, SubnetId=b, IpAddress="10.0.3.20")
    ec2.delete_network_interface(NetworkInterfaceId=taken["NetworkInterfaceId"])
    aws_error("BadRequest", efs.create_mount_target, FileSystemId=fs_id, SubnetId=b, IpAddress="10.0.1.51")
    aws_error("SubnetNotFound", efs.create_mount_target, FileSystemId=fs_id, SubnetId="subnet-0123456789abcdef0")
    aws_error("SecurityGroupNotFound", efs.create_mount_target, FileSystemId=fs_id, SubnetId=b,
              SecurityGroups=["sg-0123456789abcdef0"])
    other_vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    try:
        c = ec2.create_subnet(VpcId=other_vpc, CidrBlock="10.9.1.0/24", AvailabilityZone="us-east-1c")["Subnet"]["SubnetId"]
        aws_error("MountTargetConflict", efs.create_mount_target, FileSystemId=fs_id, SubnetId=c)
        ec2.delete_subnet(SubnetId=c)
    finally:
        ec2.delete_vpc(VpcId=other_vpc)
    mt_b = efs.create_mount_target(FileSystemId=fs_id, SubnetId=b)
    assert efs.describe_mount_target_security_groups(MountTargetId=mt_b["MountTargetId"])["SecurityGroups"] == [default]

    listed = efs.describe_mount_targets(FileSystemId=fs_id)["MountTargets"]
    assert sorted(m["MountTargetId"] for m in listed) == sorted([mt["MountTargetId"], mt_b["MountTargetId"]])
    assert all(m["LifeCycleState"] == "available" for m in listed)
    assert efs.describe_file_systems(FileSystemId=fs_id)["FileSystems"][0]["NumberOfMountTargets"] == 2
    aws_error("BadRequest", efs.describe_mount_targets)
    aws_error("MountTargetNotFound", efs.describe_mount_targets, MountTargetId="fsmt-0123456789abcdef0")

    # The ENI belongs to EFS: the subnet and the group cannot go while it is there.
    aws_error("DependencyViolation", ec2.delete_subnet, SubnetId=a)
    efs.modify_mount_target_security_groups(MountTargetId=mt["MountTargetId"], SecurityGroups=[default])
    eni = ec2.describe_network_interfaces(NetworkInterfaceIds=[mt["NetworkInterfaceId"]])["NetworkInterfaces"][0]
    assert [g["GroupId"] for g in eni["Groups"]] == [default]
    ec2.delete_security_group(GroupId=nfs)

    msg = aws_error("FileSystemInUse", efs.delete_file_system, FileSystemId=fs_id)
    assert "mount targets" in msg
    efs.delete_mount_target(MountTargetId=mt["MountTargetId"])
    aws_error("InvalidNetworkInterfaceID.NotFound", ec2.describe_network_interfaces,
              NetworkInterfaceIds=[mt["NetworkInterfaceId"]])
    ec2.delete_subnet(SubnetId=a)


def test_access_points_policies_and_tags(efs, file_system):
    fs_id = file_system["FileSystemId"]
    ap = efs.create_access_point(FileSystemId=fs_id, PosixUser={"Uid": 1000, "Gid": 1000},
                                 RootDirectory={"Path": "/home//user1/", "CreationInfo": {
                                     "OwnerUid": 1000, "OwnerGid": 1000, "Permissions": "750"}},
                                 Tags=[{"Key": "Name", "Value": "user1"}])
    assert ap["AccessPointId"].startswith("fsap-") and ap["LifeCycleState"] == "creating"
    assert ap["RootDirectory"]["Path"] == "/home/user1" and ap["Name"] == "user1"
    assert ap["PosixUser"] == {"Uid": 1000, "Gid": 1000, "SecondaryGids": []}
    aws_error("AccessPointAlreadyExists", efs.create_access_point, FileSystemId=fs_id, ClientToken=ap["ClientToken"])
    aws_error("BadRequest", efs.create_access_point, FileSystemId=fs_id, RootDirectory={"Path": "/a/../b"})
    aws_error("FileSystemNotFound", efs.create_access_point, FileSystemId="fs-0123456789abcdef0")
    got = efs.describe_access_points(FileSystemId=fs_id)["AccessPoints"]
    assert [a["AccessPointId"] for a in got] == [ap["AccessPointId"]] and got[0]["LifeCycleState"] == "available"
    aws_error("AccessPointNotFound", efs.describe_access_points, AccessPointId="fsap-0123456789abcdef0")

    aws_error("PolicyNotFound", efs.describe_file_system_policy, FileSystemId=fs_id)
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["elasticfilesystem:ClientMount"]}]})
    assert efs.put_file_system_policy(FileSystemId=fs_id, Policy=policy)["Policy"] == policy
    assert efs.describe_file_system_policy(FileSystemId=fs_id)["Policy"] == policy
    aws_error("InvalidPolicyException", efs.put_file_system_policy, FileSystemId=fs_id, Policy="{not json")
    efs.delete_file_system_policy(FileSystemId=fs_id)
    aws_error("PolicyNotFound", efs.describe_file_system_policy, FileSystemId=fs_id)

    assert efs.describe_lifecycle_configuration(FileSystemId=fs_id)["LifecyclePolicies"] == []
    efs.put_lifecycle_configuration(FileSystemId=fs_id, LifecyclePolicies=[{"TransitionToIA": "AFTER_30_DAYS"}])
    assert efs.describe_lifecycle_configuration(FileSystemId=fs_id)["LifecyclePolicies"] == [
        {"TransitionToIA": "AFTER_30_DAYS"}]
    assert efs.describe_backup_policy(FileSystemId=fs_id)["BackupPolicy"]["Status"] == "DISABLED"
    efs.put_backup_policy(FileSystemId=fs_id, BackupPolicy={"Status": "ENABLED"})
    assert efs.describe_backup_policy(FileSystemId=fs_id)["BackupPolicy"]["Status"] == "ENABLED"

    efs.tag_resource(ResourceId=fs_id, Tags=[{"Key": "team", "Value": "ml"}, {"Key": "Name", "Value": "renamed"}])
    tags = efs.list_tags_for_resource(ResourceId=fs_id)["Tags"]
    assert {t["Key"]: t["Value"] for t in tags} == {"Name": "renamed", "team": "ml"}
    assert efs.describe_file_systems(FileSystemId=fs_id)["FileSystems"][0]["Name"] == "renamed"
    efs.untag_resource(ResourceId=fs_id, TagKeys=["team"])
    assert [t["Key"] for t in efs.describe_tags(FileSystemId=fs_id)["Tags"]] == ["Name"]
    aws_error("BadRequest", efs.tag_resource, ResourceId=fs_id, Tags=[{"Key": "aws:x", "Value": "y"}])
    efs.tag_resource(ResourceId=ap["AccessPointId"], Tags=[{"Key": "k", "Value": "v"}])
    assert len(efs.list_tags_for_resource(ResourceId=ap["AccessPointId"])["Tags"]) == 2

    # Deleting the file system takes its access points with it.
    efs.delete_access_point(AccessPointId=ap["AccessPointId"])
    aws_error("AccessPointNotFound", efs.delete_access_point, AccessPointId=ap["AccessPointId"])
    efs.create_access_point(FileSystemId=fs_id)


def raw(cove_server, method, path, body=b""):
    """A SigV4-signed EFS request that boto3 would refuse to build: (status, headers, JSON body)."""
    req = botocore.awsrequest.AWSRequest(method=method, url=cove_server.endpoint + path, data=body,
                                         headers={"Content-Type": "application/json"})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY),
                            "elasticfilesystem", "us-east-1").add_auth(req)
    try:
        with urllib.request.urlopen(urllib.request.Request(
                req.url, data=body or None, headers=dict(req.headers.items()), method=method)) as r:
            return r.status, r.headers, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


def test_requests_that_break_the_protocol_get_rest_json_errors(cove_server):
    # A mistyped member is refused before validation, in EFS's envelope.
    status, headers, body = raw(cove_server, "POST", "/2015-02-01/file-systems", b'{"CreationToken": 5}')
    assert status == 400 and headers["x-amzn-errortype"] == "SerializationException"
    assert body["ErrorCode"] == "SerializationException"
    status, _, body = raw(cove_server, "POST", "/2015-02-01/file-systems", b'{"CreationToken": ')
    assert status == 400 and body["ErrorCode"] == "SerializationException"
    status, _, body = raw(cove_server, "POST", "/2015-02-01/file-systems", b'{"CreationToken": ""}')
    assert status == 400 and body["ErrorCode"] == "ValidationException"
    assert "creationtoken" in body["Message"].lower()
    status, _, body = raw(cove_server, "GET", "/2015-02-01/nothing-here")
    assert status == 404 and body["ErrorCode"] == "UnknownOperationException"
    status, _, body = raw(cove_server, "GET", "/2015-02-01/file-systems?MaxItems=many")
    assert status == 400 and body["ErrorCode"] == "BadRequest"
