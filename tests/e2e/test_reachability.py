"""Reachability analysis through boto3 (network insights paths and
analyses), `cove reach` and `cove reach-job`, with every answer checked
against real packets sent with `cove exec`. Needs root (namespaces)."""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import BINARY
from helpers import aws_error, eventually

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the data plane needs root")

# Reached: the connection is accepted or refused (a refusal comes from the
# destination's kernel, so the packets got there and back). Blocked: silence.
PROBE = "import socket,sys\ns=socket.socket();s.settimeout(1)\n" \
        "try:\n s.connect((sys.argv[1],int(sys.argv[2])));print('reached')\n" \
        "except ConnectionRefusedError:\n print('reached')\nexcept OSError:\n print('blocked')\n"


def reaches(cove, eni, ip, port):
    out = cove.exec(eni, sys.executable, "-c", PROBE, ip, str(port))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip() == "reached"



def analyze(ec2, **path):
    """Creates a path, analyzes it, and returns the finished analysis."""
    p = ec2.create_network_insights_path(Protocol=path.pop("Protocol", "tcp"), **path)["NetworkInsightsPath"]
    started = ec2.start_network_insights_analysis(NetworkInsightsPathId=p["NetworkInsightsPathId"])
    a = started["NetworkInsightsAnalysis"]
    assert a["Status"] == "running"
    deadline = time.time() + 10
    while True:
        d = ec2.describe_network_insights_analyses(
            NetworkInsightsAnalysisIds=[a["NetworkInsightsAnalysisId"]])["NetworkInsightsAnalyses"][0]
        if d["Status"] != "running":
            return d
        assert time.time() < deadline
        time.sleep(0.1)


@pytest.fixture
def two_subnets(cove_server, ec2, vpc):
    a = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    b = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24")["Subnet"]["SubnetId"]
    app_sg = ec2.create_security_group(GroupName="app", Description="app", VpcId=vpc)["GroupId"]
    db_sg = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
    app = ec2.create_network_interface(SubnetId=a, Groups=[app_sg])["NetworkInterface"]
    db = ec2.create_network_interface(SubnetId=b, Groups=[db_sg])["NetworkInterface"]
    for e in (app, db):
        assert eventually(lambda: cove_server.exec(e["NetworkInterfaceId"], "true").returncode == 0)
    return {"vpc": vpc, "a": a, "b": b, "app_sg": app_sg, "db_sg": db_sg, "app": app, "db": db}


def test_analysis_explains_groups_and_acls_and_agrees_with_packets(cove_server, ec2, two_subnets):
    t = two_subnets
    app, db = t["app"]["NetworkInterfaceId"], t["db"]["NetworkInterfaceId"]
    db_ip = t["db"]["PrivateIpAddress"]

    a = analyze(ec2, Source=app, Destination=db, DestinationPort=5432)
    assert a["NetworkPathFound"] is False
    [e] = a["Explanations"]
    assert e["ExplanationCode"] == "ENI_SG_RULES_MISMATCH"
    assert e["Direction"] == "ingress" and e["Component"]["Id"] == db
    assert [g["Id"] for g in e["SecurityGroups"]] == [t["db_sg"]]
    assert not reaches(cove_server, app, db_ip, 5432)

    ec2.authorize_security_group_ingress(GroupId=t["db_sg"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": t["app_sg"]}]}])
    a = analyze(ec2, Source=app, Destination=db, DestinationPort=5432)
    assert a["NetworkPathFound"] is True and a.get("Explanations", []) == []
    ids = [c["Component"]["Id"] for c in a["ForwardPathComponents"]]
    assert ids[0] == app and ids[-1] == db
    ingress = [c for c in a["ForwardPathComponents"] if c.get("SecurityGroupRule", {}).get("Direction") == "ingress"]
    assert ingress[0]["SecurityGroupRule"]["SecurityGroupId"] == t["app_sg"]
    assert ingress[0]["SecurityGroupRule"]["PortRange"] == {"From": 5432, "To": 5432}
    assert [c["SequenceNumber"] for c in a["ForwardPathComponents"]] == list(range(1, len(ids) + 1))
    assert a["ReturnPathComponents"][0]["Component"]["Id"] == db
    assert eventually(lambda: reaches(cove_server, app, db_ip, 5432))

    # A port range instead of a port: the analysis finds the port that gets through, or none.
    a = analyze(ec2, Source=app, Destination=db, FilterAtSource={"DestinationPortRange": {"FromPort": 5000, "ToPort": 5500}})
    assert a["NetworkPathFound"] is True
    assert a["ForwardPathComponents"][-1]["InboundHeader"]["DestinationPortRanges"] == [{"From": 5432, "To": 5432}]
    a = analyze(ec2, Source=app, Destination=db, FilterAtDestination={"DestinationPortRange": {"FromPort": 6000, "ToPort": 7000}})
    assert a["NetworkPathFound"] is False

    # A custom ACL on subnet b that lets the request in but no reply out.
    acl = ec2.create_network_acl(VpcId=t["vpc"])["NetworkAcl"]["NetworkAclId"]
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=100, Protocol="6", RuleAction="allow",
                                 Egress=False, CidrBlock="10.0.1.0/24", PortRange={"From": 5432, "To": 5432})
    assoc = [x for n in ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [t["b"]]}])[
        "NetworkAcls"] for x in n["Associations"] if x["SubnetId"] == t["b"]][0]["NetworkAclAssociationId"]
    ec2.replace_network_acl_association(AssociationId=assoc, NetworkAclId=acl)
    a = analyze(ec2, Source=app, Destination=db, DestinationPort=5432)
    assert a["NetworkPathFound"] is False
    [e] = a["Explanations"]
    assert e["ExplanationCode"] == "SUBNET_ACL_RESTRICTION" and e["Direction"] == "egress"
    assert e["Acl"]["Id"] == acl and e["AclRule"]["RuleNumber"] == 32767 and e["AclRule"]["RuleAction"] == "deny"
    assert eventually(lambda: not reaches(cove_server, app, db_ip, 5432))

    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=100, Protocol="6", RuleAction="allow",
                                 Egress=True, CidrBlock="10.0.1.0/24", PortRange={"From": 32768, "To": 60999})
    assert analyze(ec2, Source=app, Destination=db, DestinationPort=5432)["NetworkPathFound"] is True
    assert eventually(lambda: reaches(cove_server, app, db_ip, 5432))


def test_services_endpoints_and_the_internet(cove_server, ec2, two_subnets):
    t = two_subnets
    app = t["app"]["NetworkInterfaceId"]
    # The main route table has only the local route: S3's public address is unreachable.
    a = analyze(ec2, Source=app, DestinationIp="192.0.2.20", DestinationPort=443)
    [e] = a["Explanations"]
    assert e["ExplanationCode"] == "NO_ROUTE_TO_DESTINATION"
    main_rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [t["vpc"]]},
                                                 {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]
    assert e["RouteTable"]["Id"] == main_rt["RouteTableId"]
    assert not reaches(cove_server, app, "192.0.2.20", 443)

    vpce = ec2.create_vpc_endpoint(VpcId=t["vpc"], ServiceName="com.amazonaws.us-east-1.s3", VpcEndpointType="Gateway",
                                   RouteTableIds=[main_rt["RouteTableId"]])["VpcEndpoint"]["VpcEndpointId"]
    a = analyze(ec2, Source=app, Destination=vpce, DestinationPort=443)
    assert a["NetworkPathFound"] is True
    hop = [c for c in a["ForwardPathComponents"] if c["Component"]["Id"] == vpce][0]
    assert hop["ServiceName"] == "com.amazonaws.us-east-1.s3"
    route = [c["RouteTableRoute"] for c in a["ForwardPathComponents"] if "RouteTableRoute" in c][0]
    assert route["GatewayId"] == vpce and route["DestinationPrefixListId"].startswith("pl-")
    assert eventually(lambda: reaches(cove_server, app, "192.0.2.20", 443))
    # The internet is still out of reach, and the gateway endpoint only carries TCP.
    udp = analyze(ec2, Source=app, Destination=vpce, DestinationPort=53, Protocol="udp")
    assert udp["Explanations"][0]["ExplanationCode"] == "VPCE_GATEWAY_PROTOCOL_RESTRICTION"
    assert not reaches(cove_server, app, "203.0.113.10", 443)

    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=t["vpc"])
    ec2.create_route(RouteTableId=main_rt["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    a = analyze(ec2, Source=app, Destination=igw, DestinationPort=443)
    assert a["Explanations"][0]["ExplanationCode"] == "IGW_PUBLIC_IP_ASSOCIATION_FOR_EGRESS"
    a = analyze(ec2, Source=igw, Destination=app, DestinationPort=22)
    assert a["Explanations"][0]["ExplanationCode"] == "IGW_PRIVATE_IP_ASSOCIATION_FOR_INGRESS"
    assert not reaches(cove_server, app, "203.0.113.10", 443)

    eip = ec2.allocate_address()
    ec2.associate_address(AllocationId=eip["AllocationId"], NetworkInterfaceId=app)
    a = analyze(ec2, Source=app, Destination=igw, DestinationPort=443)
    assert a["NetworkPathFound"] is True
    out = [c for c in a["ForwardPathComponents"] if c["Component"]["Id"] == igw][0]
    assert out["OutboundHeader"]["SourceAddresses"] == [f"{eip['PublicIp']}/32"]
    assert eventually(lambda: reaches(cove_server, app, "203.0.113.10", 443))
    ec2.disassociate_address(AssociationId=ec2.describe_addresses(AllocationIds=[eip["AllocationId"]])[
        "Addresses"][0]["AssociationId"])
    ec2.release_address(AllocationId=eip["AllocationId"])
    ec2.delete_route(RouteTableId=main_rt["RouteTableId"], DestinationCidrBlock="0.0.0.0/0")
    ec2.detach_internet_gateway(InternetGatewayId=igw, VpcId=t["vpc"])
    ec2.delete_internet_gateway(InternetGatewayId=igw)


def test_paths_are_validated_described_tagged_and_deleted(ec2, two_subnets):
    app = two_subnets["app"]["NetworkInterfaceId"]
    aws_error("InvalidNetworkInterfaceID.NotFound", ec2.create_network_insights_path,
              Source="eni-0123456789abcdef0", DestinationIp="10.0.2.9", Protocol="tcp")
    aws_error("MissingParameter", ec2.create_network_insights_path, Source=app, Protocol="tcp")
    aws_error("InvalidParameterValue", ec2.create_network_insights_path,
              Source=app, DestinationIp="10.0.2.9", Protocol="tcp", SourceIp="10.0.9.9")
    aws_error("InvalidNetworkInsightsPathId.NotFound", ec2.start_network_insights_analysis,
              NetworkInsightsPathId="nip-0123456789abcdef0")
    aws_error("InvalidParameterCombination", ec2.create_network_insights_path, Source=app, DestinationIp="10.0.2.9",
              Protocol="tcp", DestinationPort=22, FilterAtSource={"DestinationPortRange": {"FromPort": 1, "ToPort": 9}})
    aws_error("InvalidParameterValue", ec2.create_network_insights_path, Source=app, DestinationIp="10.0.2.9",
              Protocol="tcp", FilterAtSource={"DestinationPortRange": {"FromPort": 9, "ToPort": 1}})
    aws_error("InvalidParameterCombination", ec2.create_network_insights_path, Source=app, DestinationIp="10.0.2.9",
              Protocol="tcp", FilterAtDestination={"DestinationAddress": "10.0.2.10"})
    filtered = ec2.create_network_insights_path(Source=app, Protocol="tcp",
                                                FilterAtDestination={"DestinationAddress": "10.0.2.9"})["NetworkInsightsPath"]
    assert filtered["FilterAtDestination"] == {"DestinationAddress": "10.0.2.9"}
    ec2.delete_network_insights_path(NetworkInsightsPathId=filtered["NetworkInsightsPathId"])

    arn = f"arn:aws:ec2:us-east-1:123456789012:network-interface/{app}"
    p = ec2.create_network_insights_path(
        Source=arn, DestinationIp="10.0.2.9", Protocol="udp", DestinationPort=53,
        TagSpecifications=[{"ResourceType": "network-insights-path", "Tags": [{"Key": "team", "Value": "ml"}]}],
    )["NetworkInsightsPath"]
    pid = p["NetworkInsightsPathId"]
    assert p["Source"] == app and p["SourceArn"] == arn and p["Protocol"] == "udp"
    assert p["NetworkInsightsPathArn"].endswith(f":network-insights-path/{pid}")
    listed = ec2.describe_network_insights_paths(Filters=[{"Name": "tag:team", "Values": ["ml"]}])["NetworkInsightsPaths"]
    assert [x["NetworkInsightsPathId"] for x in listed] == [pid]
    assert ec2.describe_network_insights_paths(Filters=[{"Name": "protocol", "Values": ["tcp"]}, {
        "Name": "network-insights-path-id", "Values": [pid]}])["NetworkInsightsPaths"] == []

    # No ENI has 10.0.2.9: the analysis says so rather than failing.
    aid = ec2.start_network_insights_analysis(NetworkInsightsPathId=pid)["NetworkInsightsAnalysis"]["NetworkInsightsAnalysisId"]
    a = ec2.describe_network_insights_analyses(NetworkInsightsPathId=pid)["NetworkInsightsAnalyses"]
    assert [x["NetworkInsightsAnalysisId"] for x in a] == [aid]
    assert a[0]["Status"] == "succeeded" and a[0]["NetworkPathFound"] is False
    assert a[0]["Explanations"][0]["ExplanationCode"] == "NO_ROUTE_TO_DESTINATION"
    found = ec2.describe_network_insights_analyses(Filters=[{"Name": "path-found", "Values": ["true"]}])
    assert aid not in [x["NetworkInsightsAnalysisId"] for x in found["NetworkInsightsAnalyses"]]

    # Deleting the path deletes its analyses.
    assert ec2.delete_network_insights_path(NetworkInsightsPathId=pid)["NetworkInsightsPathId"] == pid
    aws_error("InvalidNetworkInsightsPathId.NotFound", ec2.describe_network_insights_paths, NetworkInsightsPathIds=[pid])
    aws_error("InvalidNetworkInsightsAnalysisId.NotFound", ec2.describe_network_insights_analyses,
              NetworkInsightsAnalysisIds=[aid])


def cove(cove_server, *args):
    return subprocess.run([BINARY, *args, "--data-dir", cove_server.data_dir], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)


def test_cove_reach_and_reach_job_on_the_terminal(cove_server, ec2, two_subnets, tmp_path):
    t = two_subnets
    app = t["app"]["NetworkInterfaceId"]
    out = cove(cove_server, "reach", app, "s3", "--port", "443")
    assert out.returncode == 1, out.stderr
    assert "NOT REACHABLE" in out.stdout and "NO_ROUTE_TO_DESTINATION" in out.stdout, out.stdout

    out = cove(cove_server, "reach", app, t["db"]["NetworkInterfaceId"], "--port", "5432", "--json")
    assert out.returncode == 1
    assert json.loads(out.stdout)["analysis"]["explanations"][0]["code"] == "ENI_SG_RULES_MISMATCH"

    request = {
        "TrainingJobName": "planned", "RoleArn": "arn:aws:iam::123456789012:role/Train",
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {"S3Uri": "s3://data/train"}}}],
        "OutputDataConfig": {"S3OutputPath": "s3://data/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 1},
        "VpcConfig": {"Subnets": [t["a"], t["b"]], "SecurityGroupIds": [t["app_sg"]]},
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(request))
    out = cove(cove_server, "reach-job", "--request", str(path))
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert any(l.startswith("FAIL S3 data download") for l in lines), out.stdout
    assert any(l.startswith("FAIL Traffic between hosts") for l in lines), out.stdout

    # A model in the same subnets: its endpoint instances could not fetch their model data.
    sm = cove_server.client("sagemaker")
    model = f"reach-model-{int(time.time() * 1000)}"
    sm.create_model(ModelName=model, ExecutionRoleArn="arn:aws:iam::123456789012:role/Serve",
                    PrimaryContainer={"Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3", "ModelDataUrl": "s3://data/model.tar.gz"},
                    VpcConfig={"Subnets": [t["a"], t["b"]], "SecurityGroupIds": [t["app_sg"]]})
    out = cove(cove_server, "reach-job", "--model", model)
    assert out.returncode == 1, out.stdout + out.stderr
    assert sum(l.startswith("FAIL S3 data download") for l in out.stdout.splitlines()) == 2, out.stdout
    assert "Traffic between hosts" not in out.stdout and "Artifact upload" not in out.stdout

    main_rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [t["vpc"]]},
                                                 {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]
    vpce = ec2.create_vpc_endpoint(VpcId=t["vpc"], ServiceName="com.amazonaws.us-east-1.s3", VpcEndpointType="Gateway",
                                   RouteTableIds=[main_rt["RouteTableId"]])["VpcEndpoint"]["VpcEndpointId"]
    ec2.authorize_security_group_ingress(GroupId=t["app_sg"], IpPermissions=[
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": t["app_sg"]}]}])
    out = cove(cove_server, "reach-job", "--request", str(path))
    assert out.returncode == 0, out.stdout
    assert "ok   S3 data download" in out.stdout and "no   Internet access" in out.stdout, out.stdout
    assert cove(cove_server, "reach-job", "--model", model).returncode == 0

    # A new ENI in subnet b, and one S3 object: the path, then the endpoint's policy.
    ec2.modify_vpc_endpoint(VpcEndpointId=vpce, PolicyDocument=json.dumps({"Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::data/*"}]}))
    out = cove(cove_server, "reach", t["b"], "s3://data/train/part-0", "--security-groups", t["app_sg"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "REACHABLE" in out.stdout and "is allowed" in out.stdout, out.stdout
    out = cove(cove_server, "reach", t["b"], "s3://data/out/model.tar.gz", "--action", "s3:PutObject")
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"the policy of endpoint {vpce} does not allow s3:PutObject" in out.stdout, out.stdout
