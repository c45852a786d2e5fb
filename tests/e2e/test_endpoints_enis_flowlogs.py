"""VPC endpoints (gateway and interface), network interfaces and flow logs."""

import time

import pytest

from helpers import aws_error

REGION = "us-east-1"


@pytest.fixture
def subnets(ec2, vpc):
    a = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    b = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24", AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]
    return a, b


def test_endpoint_services_and_prefix_lists(ec2):
    names = ec2.describe_vpc_endpoint_services()["ServiceNames"]
    for svc in ("s3", "sagemaker.api", "sagemaker.runtime", "logs", "sts"):
        assert f"com.amazonaws.{REGION}.{svc}" in names
    details = ec2.describe_vpc_endpoint_services(ServiceNames=[f"com.amazonaws.{REGION}.sagemaker.runtime"])["ServiceDetails"]
    assert details[0]["PrivateDnsName"] == f"runtime.sagemaker.{REGION}.amazonaws.com"
    assert details[0]["ServiceType"] == [{"ServiceType": "Interface"}]
    aws_error("InvalidServiceName", ec2.describe_vpc_endpoint_services, ServiceNames=["com.amazonaws.us-east-1.nope"])
    pls = ec2.describe_prefix_lists(Filters=[{"Name": "prefix-list-name", "Values": [f"com.amazonaws.{REGION}.s3"]}])["PrefixLists"]
    assert len(pls) == 1 and pls[0]["PrefixListId"].startswith("pl-") and pls[0]["Cidrs"]


def test_gateway_endpoint_adds_prefix_list_routes(ec2, vpc):
    main = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
    other = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ep = ec2.create_vpc_endpoint(VpcId=vpc, ServiceName=f"com.amazonaws.{REGION}.s3", RouteTableIds=[main])["VpcEndpoint"]
    assert ep["VpcEndpointType"] == "Gateway" and ep["State"] == "available"
    assert '"Effect":"Allow"' in ep["PolicyDocument"].replace(" ", "")
    pl = ec2.describe_prefix_lists()["PrefixLists"][0]["PrefixListId"]
    route = [r for r in ec2.describe_route_tables(RouteTableIds=[main])["RouteTables"][0]["Routes"] if r.get("DestinationPrefixListId") == pl]
    assert route and route[0]["GatewayId"] == ep["VpcEndpointId"] and route[0]["State"] == "active"
    aws_error("RouteAlreadyExists", ec2.create_vpc_endpoint, VpcId=vpc, ServiceName=f"com.amazonaws.{REGION}.s3", RouteTableIds=[main])
    ec2.modify_vpc_endpoint(VpcEndpointId=ep["VpcEndpointId"], AddRouteTableIds=[other], RemoveRouteTableIds=[main])
    assert not any(r.get("DestinationPrefixListId") for r in ec2.describe_route_tables(RouteTableIds=[main])["RouteTables"][0]["Routes"])
    assert any(r.get("DestinationPrefixListId") == pl for r in ec2.describe_route_tables(RouteTableIds=[other])["RouteTables"][0]["Routes"])
    policy = '{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"*"}]}'
    ec2.modify_vpc_endpoint(VpcEndpointId=ep["VpcEndpointId"], PolicyDocument=policy)
    assert "Deny" in ec2.describe_vpc_endpoints(VpcEndpointIds=[ep["VpcEndpointId"]])["VpcEndpoints"][0]["PolicyDocument"]
    aws_error("DependencyViolation", ec2.delete_vpc, VpcId=vpc)
    out = ec2.delete_vpc_endpoints(VpcEndpointIds=[ep["VpcEndpointId"], "vpce-00000000000000000"])
    assert [u["ResourceId"] for u in out["Unsuccessful"]] == ["vpce-00000000000000000"]
    assert not any(r.get("DestinationPrefixListId") for r in ec2.describe_route_tables(RouteTableIds=[other])["RouteTables"][0]["Routes"])


def test_interface_endpoint_gets_an_eni_per_subnet(ec2, vpc, subnets):
    svc = f"com.amazonaws.{REGION}.sagemaker.runtime"
    msg = aws_error("InvalidParameter", ec2.create_vpc_endpoint, VpcId=vpc, ServiceName=svc, VpcEndpointType="Interface",
                    SubnetIds=list(subnets))
    assert "enableDnsSupport and enableDnsHostnames" in msg
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    ep = ec2.create_vpc_endpoint(VpcId=vpc, ServiceName=svc, VpcEndpointType="Interface", SubnetIds=list(subnets))["VpcEndpoint"]
    assert ep["PrivateDnsEnabled"] is True and len(ep["NetworkInterfaceIds"]) == 2
    names = [d["DnsName"] for d in ep["DnsEntries"]]
    assert f"runtime.sagemaker.{REGION}.amazonaws.com" in names
    assert any(n.startswith(ep["VpcEndpointId"]) and n.endswith(f".runtime.sagemaker.{REGION}.vpce.amazonaws.com") for n in names)
    enis = ec2.describe_network_interfaces(NetworkInterfaceIds=ep["NetworkInterfaceIds"])["NetworkInterfaces"]
    cidr_of = {subnets[0]: "10.0.1.", subnets[1]: "10.0.2."}
    for e in enis:
        assert e["RequesterManaged"] and e["InterfaceType"] == "vpc_endpoint" and e["Status"] == "in-use"
        assert e["PrivateIpAddress"].startswith(cidr_of[e["SubnetId"]])
    deadline = time.time() + 10
    while ec2.describe_vpc_endpoints(VpcEndpointIds=[ep["VpcEndpointId"]])["VpcEndpoints"][0]["State"] != "available":
        assert time.time() < deadline
        time.sleep(0.1)
    msg = aws_error("InvalidParameter", ec2.create_vpc_endpoint, VpcId=vpc, ServiceName=svc, VpcEndpointType="Interface",
                    SubnetIds=[subnets[0]])
    assert "conflicting DNS domain" in msg
    third = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.3.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    aws_error("DuplicateSubnetsInSameZone", ec2.create_vpc_endpoint, VpcId=vpc, ServiceName=f"com.amazonaws.{REGION}.sts",
              VpcEndpointType="Interface", SubnetIds=[subnets[0], third])
    aws_error("InvalidNetworkInterface.InUse", ec2.delete_network_interface, NetworkInterfaceId=ep["NetworkInterfaceIds"][0])
    ec2.delete_vpc_endpoints(VpcEndpointIds=[ep["VpcEndpointId"]])
    assert ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["NetworkInterfaces"] == []
    aws_error("InvalidServiceName", ec2.create_vpc_endpoint, VpcId=vpc, ServiceName="com.amazonaws.us-east-1.nope")


def test_network_interfaces(ec2, vpc, subnets):
    sg = ec2.create_security_group(GroupName="eni", Description="eni", VpcId=vpc)["GroupId"]
    eni = ec2.create_network_interface(SubnetId=subnets[0], Groups=[sg], Description="db", PrivateIpAddress="10.0.1.50",
                                       TagSpecifications=[{"ResourceType": "network-interface", "Tags": [{"Key": "role", "Value": "db"}]}])["NetworkInterface"]
    assert eni["PrivateIpAddress"] == "10.0.1.50" and eni["Status"] == "available" and not eni["RequesterManaged"]
    assert eni["Groups"] == [{"GroupId": sg, "GroupName": "eni"}]
    assert eni["PrivateDnsName"] == "ip-10-0-1-50.ec2.internal"
    assert eni["TagSet"] == [{"Key": "role", "Value": "db"}]
    assert eni["MacAddress"].startswith("02:")
    aws_error("InvalidIPAddress.InUse", ec2.create_network_interface, SubnetId=subnets[0], PrivateIpAddress="10.0.1.50")
    aws_error("InvalidParameterValue", ec2.create_network_interface, SubnetId=subnets[0], PrivateIpAddress="10.0.2.50")
    aws_error("InvalidParameterValue", ec2.create_network_interface, SubnetId=subnets[0], PrivateIpAddress="10.0.1.1")
    aws_error("InvalidGroup.NotFound", ec2.create_network_interface, SubnetId=subnets[0], Groups=["sg-00000000000000000"])
    default_eni = ec2.create_network_interface(SubnetId=subnets[1])["NetworkInterface"]
    assert default_eni["Groups"][0]["GroupName"] == "default"
    found = ec2.describe_network_interfaces(Filters=[{"Name": "group-id", "Values": [sg]}])["NetworkInterfaces"]
    assert [e["NetworkInterfaceId"] for e in found] == [eni["NetworkInterfaceId"]]
    found = ec2.describe_network_interfaces(Filters=[{"Name": "private-ip-address", "Values": ["10.0.1.50"]}])["NetworkInterfaces"]
    assert len(found) == 1
    for e in (eni, default_eni):
        ec2.delete_network_interface(NetworkInterfaceId=e["NetworkInterfaceId"])
    aws_error("InvalidNetworkInterfaceID.NotFound", ec2.delete_network_interface, NetworkInterfaceId=eni["NetworkInterfaceId"])
    ec2.delete_security_group(GroupId=sg)


def test_subnet_full(ec2, vpc):
    tiny = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.9.0/28")["Subnet"]["SubnetId"]
    made = [ec2.create_network_interface(SubnetId=tiny)["NetworkInterface"]["NetworkInterfaceId"] for _ in range(11)]
    aws_error("InsufficientFreeAddressesInSubnet", ec2.create_network_interface, SubnetId=tiny)
    for e in made:
        ec2.delete_network_interface(NetworkInterfaceId=e)


def test_flow_logs(ec2, vpc, subnets):
    role = "arn:aws:iam::123456789012:role/flow-logs"
    out = ec2.create_flow_logs(ResourceIds=[vpc, "vpc-00000000000000000"], ResourceType="VPC", TrafficType="ALL",
                               LogGroupName="/cove/flow", DeliverLogsPermissionArn=role, MaxAggregationInterval=60)
    assert len(out["FlowLogIds"]) == 1
    assert out["Unsuccessful"][0]["ResourceId"] == "vpc-00000000000000000"
    assert out["Unsuccessful"][0]["Error"]["Code"] == "InvalidVpcID.NotFound"
    fl = ec2.describe_flow_logs(FlowLogIds=out["FlowLogIds"])["FlowLogs"][0]
    assert fl["LogDestinationType"] == "cloud-watch-logs" and fl["LogGroupName"] == "/cove/flow"
    assert fl["LogFormat"].startswith("${version} ${account-id} ${interface-id}")
    assert fl["MaxAggregationInterval"] == 60 and fl["FlowLogStatus"] == "ACTIVE"
    dup = ec2.create_flow_logs(ResourceIds=[vpc], ResourceType="VPC", TrafficType="ALL", LogGroupName="/cove/flow", DeliverLogsPermissionArn=role)
    assert dup["FlowLogIds"] == [] and dup["Unsuccessful"][0]["Error"]["Code"] == "FlowLogAlreadyExists"
    s3 = ec2.create_flow_logs(ResourceIds=[subnets[0]], ResourceType="Subnet", TrafficType="REJECT", LogDestinationType="s3",
                              LogDestination="arn:aws:s3:::flow-bucket/prefix",
                              LogFormat="${srcaddr} ${dstaddr} ${action}")["FlowLogIds"][0]
    assert ec2.describe_flow_logs(Filters=[{"Name": "log-destination-type", "Values": ["s3"]}])["FlowLogs"][0]["FlowLogId"] == s3
    aws_error("InvalidParameter", ec2.create_flow_logs, ResourceIds=[vpc], ResourceType="VPC", TrafficType="ALL",
              LogGroupName="/x", DeliverLogsPermissionArn=role, MaxAggregationInterval=30)
    aws_error("InvalidParameter", ec2.create_flow_logs, ResourceIds=[vpc], ResourceType="VPC", TrafficType="ALL",
              LogGroupName="/x", DeliverLogsPermissionArn=role, LogFormat="${srcaddr} ${colour}")
    aws_error("InvalidParameter", ec2.create_flow_logs, ResourceIds=[vpc], ResourceType="VPC", TrafficType="ALL", LogGroupName="/x")
    out = ec2.delete_flow_logs(FlowLogIds=[s3, "fl-00000000000000000"])
    assert [u["ResourceId"] for u in out["Unsuccessful"]] == ["fl-00000000000000000"]
