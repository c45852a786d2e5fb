"""VPC peering, enforced: a training job in VPC A reads from a "database"
in VPC B across an active peering connection, and only while B's security
group admits it, both VPCs route to each other and the connection exists; a
third VPC peered with B cannot reach A (no transitive routing). Real boto3,
real packets. Needs root."""

import os
import signal
import sys
import time

import pytest

from conftest import teardown_vpc
from helpers import aws_error, eventually
from test_reachability import analyze
from test_training_jobs import s3_endpoint, script_job, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the data plane needs root")

DB = "import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n" \
     "s.bind((sys.argv[1],5432));s.listen(16)\nprint('ready',flush=True)\n" \
     "while True:\n c,_=s.accept();c.sendall(b'rows=42');c.close()\n"
QUERY = "import socket,sys\ns=socket.socket();s.settimeout(1)\n" \
        "try:\n s.connect((sys.argv[1],5432));print(s.recv(16).decode())\nexcept OSError as e:\n print('blocked',e)\n"


def main_table(ec2, vpc):
    return ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                              {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]["RouteTableId"]


@pytest.fixture
def three_vpcs(cove_server, ec2):
    made = {}
    for name, cidr in (("a", "10.0.0.0/16"), ("b", "10.2.0.0/16"), ("c", "10.3.0.0/16")):
        vpc = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
        base = cidr.split(".")[1]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.{base}.1.0/24")["Subnet"]["SubnetId"]
        sg = ec2.create_security_group(GroupName=f"{name}-sg", Description=name, VpcId=vpc)["GroupId"]
        eni = ec2.create_network_interface(SubnetId=subnet, Groups=[sg])["NetworkInterface"]
        made[name] = {"vpc": vpc, "subnet": subnet, "sg": sg, "eni": eni["NetworkInterfaceId"],
                      "ip": eni["PrivateIpAddress"], "rt": main_table(ec2, vpc)}
    assert eventually(lambda: cove_server.exec(made["b"]["eni"], "true").returncode == 0)
    db = cove_server.spawn(made["b"]["eni"], sys.executable, "-c", DB, made["b"]["ip"])
    assert db.stdout.readline().strip() == "ready"
    yield made
    db.send_signal(signal.SIGKILL)
    db.wait()
    for p in ec2.describe_vpc_peering_connections()["VpcPeeringConnections"]:
        if p["Status"]["Code"] in ("active", "pending-acceptance"):
            ec2.delete_vpc_peering_connection(VpcPeeringConnectionId=p["VpcPeeringConnectionId"])
    for v in made.values():
        teardown_vpc(ec2, v["vpc"])


def peer(ec2, requester, accepter):
    created = ec2.create_vpc_peering_connection(VpcId=requester["vpc"], PeerVpcId=accepter["vpc"])
    pcx = created["VpcPeeringConnection"]
    assert pcx["Status"]["Code"] == "initiating-request"
    pcx_id = pcx["VpcPeeringConnectionId"]
    described = ec2.describe_vpc_peering_connections(VpcPeeringConnectionIds=[pcx_id])["VpcPeeringConnections"][0]
    assert described["Status"] == {"Code": "pending-acceptance", "Message": "Pending Acceptance by 123456789012"}
    assert "ExpirationTime" in described and "CidrBlock" not in described["AccepterVpcInfo"]
    accepted = ec2.accept_vpc_peering_connection(VpcPeeringConnectionId=pcx_id)["VpcPeeringConnection"]
    assert accepted["Status"]["Code"] == "provisioning"
    return pcx_id


def query(cove_server, frm, to):
    return cove_server.exec(frm["eni"], sys.executable, "-c", QUERY, to["ip"]).stdout.strip()


def test_peering_carries_only_what_routes_groups_and_the_connection_allow(cove_server, ec2, three_vpcs):
    a, b, c = three_vpcs["a"], three_vpcs["b"], three_vpcs["c"]
    ab = peer(ec2, a, b)
    active = ec2.describe_vpc_peering_connections(Filters=[{"Name": "status-code", "Values": ["active"]},
                                                           {"Name": "accepter-vpc-info.vpc-id", "Values": [b["vpc"]]}])
    [conn] = active["VpcPeeringConnections"]
    assert conn["AccepterVpcInfo"]["CidrBlock"] == "10.2.0.0/16" and conn["RequesterVpcInfo"]["CidrBlock"] == "10.0.0.0/16"
    aws_error("VpcPeeringConnectionAlreadyExists", ec2.create_vpc_peering_connection, VpcId=a["vpc"], PeerVpcId=b["vpc"])
    aws_error("InvalidStateTransition", ec2.accept_vpc_peering_connection, VpcPeeringConnectionId=ab)

    # B admits A's group on 5432 (a peered VPC's group may be named); routes both ways.
    ec2.authorize_security_group_ingress(GroupId=b["sg"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": a["sg"]}]}])
    time.sleep(1)
    assert query(cove_server, a, b).startswith("blocked"), "no route yet"
    ec2.create_route(RouteTableId=a["rt"], DestinationCidrBlock="10.2.0.0/16", VpcPeeringConnectionId=ab)
    time.sleep(1)
    assert query(cove_server, a, b).startswith("blocked"), "no route back from B yet"
    ec2.create_route(RouteTableId=b["rt"], DestinationCidrBlock="10.0.0.0/16", VpcPeeringConnectionId=ab)
    assert eventually(lambda: query(cove_server, a, b) == "rows=42")
    routes = ec2.describe_route_tables(RouteTableIds=[b["rt"]])["RouteTables"][0]["Routes"]
    assert {"DestinationCidrBlock": "10.0.0.0/16", "VpcPeeringConnectionId": ab, "Origin": "CreateRoute",
            "State": "active"} in routes
    assert analyze(ec2, Source=a["eni"], Destination=b["eni"], DestinationPort=5432)["NetworkPathFound"] is True

    # The database has a name in a private hosted zone of A (which needs DNS
    # hostnames on, as on AWS); only associated VPCs resolve it.
    r53 = cove_server.client("route53")
    zone = r53.create_hosted_zone(Name="corp.internal", CallerReference=ab,
                                  HostedZoneConfig={"PrivateZone": True, "Comment": "shared services"},
                                  VPC={"VPCRegion": "us-east-1", "VPCId": a["vpc"]})["HostedZone"]["Id"]
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": {"Name": "db.corp.internal", "Type": "A", "TTL": 60,
                                                   "ResourceRecords": [{"Value": b["ip"]}]}},
        {"Action": "CREATE", "ResourceRecordSet": {"Name": "postgres.corp.internal", "Type": "CNAME", "TTL": 60,
                                                   "ResourceRecords": [{"Value": "db.corp.internal"}]}}]})
    ec2.modify_vpc_attribute(VpcId=a["vpc"], EnableDnsHostnames={"Value": True})
    resolve = ("import socket,sys\ntry:\n print(socket.gethostbyname(sys.argv[1]))\n"
               "except OSError as e:\n print('unresolved', e)\n")
    assert cove_server.exec(a["eni"], sys.executable, "-c", resolve, "postgres.corp.internal").stdout.strip() == b["ip"]
    assert cove_server.exec(a["eni"], sys.executable, "-c", resolve, "nothing.corp.internal").stdout.startswith("unresolved")
    ec2.modify_vpc_attribute(VpcId=c["vpc"], EnableDnsHostnames={"Value": True})
    assert cove_server.exec(c["eni"], sys.executable, "-c", resolve, "db.corp.internal").stdout.startswith("unresolved")

    # A training job in A's private subnet reads the database across the
    # peering, by its private name.
    s3 = cove_server.client("s3")
    sm = cove_server.client("sagemaker")
    bucket = f"peer-{ab[-8:]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/train/part-0.csv", Body="1\n")
    net = {"vpc": a["vpc"], "subnets": [a["subnet"]], "sg": a["sg"], "rt": a["rt"]}
    s3_endpoint(ec2, net)
    script = ("import json,os,socket\ns=socket.create_connection(('db.corp.internal',5432),timeout=5)\n"
              "rows=s.recv(16).decode()\nprint('db says', rows, flush=True)\n"
              "json.dump({'db': rows}, open(os.path.join(os.environ['SM_MODEL_DIR'],'model.json'),'w'))\n")
    name, req = script_job(s3, bucket, net, {"train.py": script})
    sm.create_training_job(**req)
    d = wait_for(sm, name, timeout=120)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    logs = cove_server.client("logs")
    stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                       logStreamNamePrefix=name)["logStreams"][0]["logStreamName"]
    events = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream)["events"]
    assert any("db says rows=42" in e["message"] for e in events)

    # Without B's rule, nothing gets in.
    ec2.revoke_security_group_ingress(GroupId=b["sg"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": a["sg"]}]}])
    assert eventually(lambda: query(cove_server, a, b).startswith("blocked"))
    ec2.authorize_security_group_ingress(GroupId=b["sg"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "IpRanges": [{"CidrIp": "10.0.0.0/16"},
                                                                                {"CidrIp": "10.3.0.0/16"}]}])
    assert eventually(lambda: query(cove_server, a, b) == "rows=42")

    # C, peered with B, reaches B but never A through B.
    bc = peer(ec2, c, b)
    ec2.create_route(RouteTableId=c["rt"], DestinationCidrBlock="10.2.0.0/16", VpcPeeringConnectionId=bc)
    ec2.create_route(RouteTableId=c["rt"], DestinationCidrBlock="10.0.0.0/16", VpcPeeringConnectionId=bc)
    ec2.create_route(RouteTableId=b["rt"], DestinationCidrBlock="10.3.0.0/16", VpcPeeringConnectionId=bc)
    assert eventually(lambda: query(cove_server, c, b) == "rows=42")
    a_db = cove_server.spawn(a["eni"], sys.executable, "-c", DB, a["ip"])
    assert a_db.stdout.readline().strip() == "ready"
    ec2.authorize_security_group_ingress(GroupId=a["sg"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    time.sleep(1)
    assert query(cove_server, c, a).startswith("blocked")
    a_db.send_signal(signal.SIGKILL)
    a_db.wait()
    found = analyze(ec2, Source=c["eni"], Destination=a["eni"], DestinationPort=5432)
    assert found["NetworkPathFound"] is False
    assert "NO_ROUTE_TO_DESTINATION" in [e["ExplanationCode"] for e in found["Explanations"]]

    # A record goes as it came: named with its values.
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
        {"Action": "DELETE", "ResourceRecordSet": {"Name": "postgres.corp.internal", "Type": "CNAME", "TTL": 60,
                                                   "ResourceRecords": [{"Value": "db.corp.internal"}]}}]})

    # Deleted, the connection carries nothing and its routes are blackholes.
    ec2.delete_vpc_peering_connection(VpcPeeringConnectionId=ab)
    assert eventually(lambda: query(cove_server, a, b).startswith("blocked"))
    # The same job now fails: its connection to the database times out.
    again, req = script_job(s3, bucket, net, {"train.py": script})
    sm.create_training_job(**req)
    d = wait_for(sm, again, timeout=120)
    assert d["TrainingJobStatus"] == "Failed" and "AlgorithmError" in d["FailureReason"], d.get("FailureReason")
    gone = ec2.describe_vpc_peering_connections(VpcPeeringConnectionIds=[ab])["VpcPeeringConnections"][0]
    assert gone["Status"] == {"Code": "deleted", "Message": "Deleted by 123456789012"}
    routes = ec2.describe_route_tables(RouteTableIds=[a["rt"]])["RouteTables"][0]["Routes"]
    assert [r["State"] for r in routes if r.get("VpcPeeringConnectionId") == ab] == ["blackhole"]
    aws_error("InvalidVpcPeeringConnectionID.NotFound", ec2.create_route, RouteTableId=a["rt"],
              DestinationCidrBlock="10.9.0.0/16", VpcPeeringConnectionId=ab)
    aws_error("HostedZoneNotEmpty", r53.delete_hosted_zone, Id=zone)
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
        {"Action": "DELETE", "ResourceRecordSet": {"Name": "db.corp.internal", "Type": "A", "TTL": 60,
                                                   "ResourceRecords": [{"Value": b["ip"]}]}}]})
    r53.delete_hosted_zone(Id=zone)


def test_overlapping_vpcs_cannot_peer_and_only_the_accepter_accepts(cove_server, ec2, vpc):
    twin = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    other = ec2.create_vpc(CidrBlock="10.5.0.0/16")["Vpc"]["VpcId"]
    try:
        failed = ec2.create_vpc_peering_connection(VpcId=vpc, PeerVpcId=twin)["VpcPeeringConnection"]
        d = ec2.describe_vpc_peering_connections(
            VpcPeeringConnectionIds=[failed["VpcPeeringConnectionId"]])["VpcPeeringConnections"][0]
        assert d["Status"] == {"Code": "failed", "Message": "Failed due to overlapping CIDR ranges"}
        aws_error("InvalidVpcID.NotFound", ec2.create_vpc_peering_connection, VpcId=vpc, PeerVpcId="vpc-0123456789abcdef0")
        pending = ec2.create_vpc_peering_connection(VpcId=vpc, PeerVpcId=other)["VpcPeeringConnection"]["VpcPeeringConnectionId"]
        ec2.reject_vpc_peering_connection(VpcPeeringConnectionId=pending)
        d = ec2.describe_vpc_peering_connections(VpcPeeringConnectionIds=[pending])["VpcPeeringConnections"][0]
        assert d["Status"]["Code"] == "rejected"
        aws_error("InvalidStateTransition", ec2.accept_vpc_peering_connection, VpcPeeringConnectionId=pending)
    finally:
        ec2.delete_vpc(VpcId=twin)
        ec2.delete_vpc(VpcId=other)


def test_references_across_a_peering_and_stale_ones(cove_server, ec2):
    a = ec2.create_vpc(CidrBlock="10.6.0.0/16")["Vpc"]["VpcId"]
    b = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    try:
        ga = ec2.create_security_group(GroupName="app", Description="app", VpcId=a)["GroupId"]
        gb = ec2.create_security_group(GroupName="db", Description="db", VpcId=b)["GroupId"]
        rule = [{"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": ga}]}]
        # Not peered: another VPC's group cannot be named.
        aws_error("InvalidParameterValue", ec2.authorize_security_group_ingress, GroupId=gb, IpPermissions=rule)
        pcx = ec2.create_vpc_peering_connection(VpcId=a, PeerVpcId=b)["VpcPeeringConnection"]["VpcPeeringConnectionId"]
        ec2.accept_vpc_peering_connection(VpcPeeringConnectionId=pcx)
        ec2.authorize_security_group_ingress(GroupId=gb, IpPermissions=rule)
        refs = ec2.describe_security_group_references(GroupId=[ga])["SecurityGroupReferenceSet"]
        assert refs == [{"GroupId": ga, "ReferencingVpcId": b, "VpcPeeringConnectionId": pcx}]
        assert ec2.describe_stale_security_groups(VpcId=b)["StaleSecurityGroupSet"] == []
        ec2.delete_vpc_peering_connection(VpcPeeringConnectionId=pcx)
        [stale] = ec2.describe_stale_security_groups(VpcId=b)["StaleSecurityGroupSet"]
        assert stale["GroupId"] == gb and stale["StaleIpPermissions"][0]["UserIdGroupPairs"][0]["GroupId"] == ga
        ec2.revoke_security_group_ingress(GroupId=gb, IpPermissions=rule)
    finally:
        teardown_vpc(ec2, a)
        teardown_vpc(ec2, b)


def test_default_vpc_and_subnets_can_be_made_again(fresh_cove):
    ec2 = fresh_cove.client("ec2")
    default = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    aws_error("DefaultVpcAlreadyExists", ec2.create_default_vpc)
    subnet = ec2.describe_subnets(Filters=[{"Name": "availability-zone", "Values": ["us-east-1b"]},
                                           {"Name": "vpc-id", "Values": [default]}])["Subnets"][0]
    aws_error("DefaultSubnetAlreadyExistsInAvailabilityZone", ec2.create_default_subnet, AvailabilityZone="us-east-1b")
    ec2.delete_subnet(SubnetId=subnet["SubnetId"])
    again = ec2.create_default_subnet(AvailabilityZone="us-east-1b")["Subnet"]
    assert again["CidrBlock"] == subnet["CidrBlock"] and again["DefaultForAz"] is True
    teardown_vpc(ec2, default)
    aws_error("DefaultVpcDoesNotExist", ec2.create_default_subnet, AvailabilityZone="us-east-1b")
    made = ec2.create_default_vpc()["Vpc"]
    assert made["IsDefault"] is True and made["CidrBlock"] == "172.31.0.0/16"
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [made["VpcId"]]}])["Subnets"]
    assert sorted(s["AvailabilityZone"] for s in subnets) == ["us-east-1a", "us-east-1b", "us-east-1c"]
