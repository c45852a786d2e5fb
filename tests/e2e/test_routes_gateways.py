"""Route tables, internet gateways, Elastic IPs and NAT gateways through boto3."""


import pytest

from helpers import aws_error, wait_status


@pytest.fixture
def subnet(ec2, vpc):
    return ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]


def wait_nat(ec2, nat_id, states, timeout=10):
    return wait_status(lambda: ec2.describe_nat_gateways(NatGatewayIds=[nat_id])["NatGateways"][0], "State", states,
                       timeout, nat_id)


def test_routes_targets_states_and_errors(ec2, vpc, subnet):
    rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    msg = aws_error("InvalidParameterValue", ec2.create_route, RouteTableId=rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    assert "belong to different networks" in msg
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    assert ec2.create_route(RouteTableId=rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)["Return"] is True
    msg = aws_error("RouteAlreadyExists", ec2.create_route, RouteTableId=rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    assert msg == "The route identified by 0.0.0.0/0 already exists."
    eni = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
    ec2.create_route(RouteTableId=rt, DestinationCidrBlock="192.0.2.0/24", NetworkInterfaceId=eni)
    aws_error("InvalidParameterCombination", ec2.create_route, RouteTableId=rt, DestinationCidrBlock="198.51.100.0/24",
              GatewayId=igw, NetworkInterfaceId=eni)
    aws_error("MissingParameter", ec2.create_route, RouteTableId=rt, DestinationCidrBlock="198.51.100.0/24")
    aws_error("InvalidRouteTableID.NotFound", ec2.create_route, RouteTableId="rtb-00000000000000000",
              DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    routes = {r.get("DestinationCidrBlock"): r for r in ec2.describe_route_tables(RouteTableIds=[rt])["RouteTables"][0]["Routes"]}
    assert routes["0.0.0.0/0"]["State"] == "active" and routes["0.0.0.0/0"]["Origin"] == "CreateRoute"
    assert routes["192.0.2.0/24"]["NetworkInterfaceId"] == eni
    # A deleted target leaves a blackhole route.
    ec2.delete_network_interface(NetworkInterfaceId=eni)
    routes = {r.get("DestinationCidrBlock"): r for r in ec2.describe_route_tables(RouteTableIds=[rt])["RouteTables"][0]["Routes"]}
    assert routes["192.0.2.0/24"]["State"] == "blackhole"
    found = ec2.describe_route_tables(Filters=[{"Name": "route.state", "Values": ["blackhole"]}, {"Name": "vpc-id", "Values": [vpc]}])["RouteTables"]
    assert [t["RouteTableId"] for t in found] == [rt]
    aws_error("InvalidParameterValue", ec2.delete_route, RouteTableId=rt, DestinationCidrBlock="10.0.0.0/16")
    ec2.delete_route(RouteTableId=rt, DestinationCidrBlock="192.0.2.0/24")
    aws_error("InvalidRoute.NotFound", ec2.delete_route, RouteTableId=rt, DestinationCidrBlock="192.0.2.0/24")
    ec2.replace_route(RouteTableId=rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    aws_error("InvalidParameterValue", ec2.replace_route, RouteTableId=rt, DestinationCidrBlock="203.0.113.0/24", GatewayId=igw)


def test_associations_and_main_table(ec2, vpc, subnet):
    rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    out = ec2.associate_route_table(RouteTableId=rt, SubnetId=subnet)
    assert out["AssociationState"]["State"] == "associated"
    other = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    aws_error("Resource.AlreadyAssociated", ec2.associate_route_table, RouteTableId=other, SubnetId=subnet)
    found = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])["RouteTables"]
    assert [t["RouteTableId"] for t in found] == [rt]
    aws_error("DependencyViolation", ec2.delete_route_table, RouteTableId=rt)
    new = ec2.replace_route_table_association(AssociationId=out["AssociationId"], RouteTableId=other)["NewAssociationId"]
    assert new != out["AssociationId"]
    ec2.disassociate_route_table(AssociationId=new)
    aws_error("InvalidAssociationID.NotFound", ec2.disassociate_route_table, AssociationId=new)
    # Making another table main moves the flag; the old main table can then be deleted.
    main = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]
    main_assoc = [a for a in main["Associations"] if a["Main"]][0]["RouteTableAssociationId"]
    aws_error("InvalidParameterValue", ec2.disassociate_route_table, AssociationId=main_assoc)
    aws_error("DependencyViolation", ec2.delete_route_table, RouteTableId=main["RouteTableId"])
    ec2.replace_route_table_association(AssociationId=main_assoc, RouteTableId=rt)
    now_main = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "association.main", "Values": ["true"]}])["RouteTables"]
    assert [t["RouteTableId"] for t in now_main] == [rt]
    ec2.delete_route_table(RouteTableId=main["RouteTableId"])


def test_internet_gateway_attachment_rules(ec2, vpc):
    igw = ec2.create_internet_gateway(TagSpecifications=[{"ResourceType": "internet-gateway", "Tags": [{"Key": "Name", "Value": "gw"}]}])["InternetGateway"]
    assert igw["Attachments"] == [] and igw["Tags"] == [{"Key": "Name", "Value": "gw"}]
    gid = igw["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=gid, VpcId=vpc)
    desc = ec2.describe_internet_gateways(InternetGatewayIds=[gid])["InternetGateways"][0]
    assert desc["Attachments"] == [{"State": "available", "VpcId": vpc}]
    aws_error("Resource.AlreadyAssociated", ec2.attach_internet_gateway, InternetGatewayId=gid, VpcId=vpc)
    second = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    aws_error("Resource.AlreadyAssociated", ec2.attach_internet_gateway, InternetGatewayId=second, VpcId=vpc)
    msg = aws_error("DependencyViolation", ec2.delete_internet_gateway, InternetGatewayId=gid)
    assert msg == f"The internetGateway '{gid}' has dependencies and cannot be deleted."
    aws_error("DependencyViolation", ec2.delete_vpc, VpcId=vpc)
    aws_error("Gateway.NotAttached", ec2.detach_internet_gateway, InternetGatewayId=second, VpcId=vpc)
    ec2.detach_internet_gateway(InternetGatewayId=gid, VpcId=vpc)
    for g in (gid, second):
        ec2.delete_internet_gateway(InternetGatewayId=g)
    aws_error("InvalidInternetGatewayID.NotFound", ec2.describe_internet_gateways, InternetGatewayIds=[gid])


def test_elastic_ips_come_from_documentation_ranges(ec2):
    a = ec2.allocate_address(Domain="vpc")
    assert a["AllocationId"].startswith("eipalloc-") and a["Domain"] == "vpc"
    assert a["PublicIp"].startswith(("198.51.100.", "203.0.113."))
    b = ec2.allocate_address()
    assert b["PublicIp"] != a["PublicIp"]
    listed = {x["AllocationId"] for x in ec2.describe_addresses(AllocationIds=[a["AllocationId"], b["AllocationId"]])["Addresses"]}
    assert listed == {a["AllocationId"], b["AllocationId"]}
    ec2.release_address(AllocationId=a["AllocationId"])
    ec2.release_address(AllocationId=b["AllocationId"])
    aws_error("InvalidAllocationID.NotFound", ec2.release_address, AllocationId=a["AllocationId"])


def test_nat_gateway_lifecycle(ec2, vpc, subnet):
    eip = ec2.allocate_address()["AllocationId"]
    # A public NAT in a VPC without an internet gateway fails, as on AWS.
    nat = ec2.create_nat_gateway(SubnetId=subnet, AllocationId=eip)["NatGateway"]
    assert nat["State"] == "pending"
    failed = wait_nat(ec2, nat["NatGatewayId"], {"failed"})
    assert failed["FailureCode"] == "Gateway.NotAttached"
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    nat = ec2.create_nat_gateway(SubnetId=subnet, AllocationId=eip)["NatGateway"]
    nat_id = nat["NatGatewayId"]
    up = wait_nat(ec2, nat_id, {"available"})
    address = up["NatGatewayAddresses"][0]
    assert address["AllocationId"] == eip and address["PublicIp"].startswith(("198.51.100.", "203.0.113."))
    eni = ec2.describe_network_interfaces(NetworkInterfaceIds=[address["NetworkInterfaceId"]])["NetworkInterfaces"][0]
    assert eni["RequesterManaged"] and eni["InterfaceType"] == "nat_gateway" and eni["SubnetId"] == subnet
    assert ec2.describe_addresses(AllocationIds=[eip])["Addresses"][0]["NetworkInterfaceId"] == eni["NetworkInterfaceId"]
    aws_error("InvalidIPAddress.InUse", ec2.release_address, AllocationId=eip)
    aws_error("InvalidNetworkInterface.InUse", ec2.delete_network_interface, NetworkInterfaceId=eni["NetworkInterfaceId"])
    aws_error("DependencyViolation", ec2.detach_internet_gateway, InternetGatewayId=igw, VpcId=vpc)
    rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
    ec2.create_route(RouteTableId=rt, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat_id)
    ec2.delete_nat_gateway(NatGatewayId=nat_id)
    gone = wait_nat(ec2, nat_id, {"deleted"})
    assert "DeleteTime" in gone
    route = [r for r in ec2.describe_route_tables(RouteTableIds=[rt])["RouteTables"][0]["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"][0]
    assert route["State"] == "blackhole"
    ec2.delete_route(RouteTableId=rt, DestinationCidrBlock="0.0.0.0/0")
    ec2.release_address(AllocationId=eip)
    aws_error("MissingParameter", ec2.create_nat_gateway, SubnetId=subnet)


def test_private_nat_gateway(ec2, vpc, subnet):
    nat = ec2.create_nat_gateway(SubnetId=subnet, ConnectivityType="private")["NatGateway"]
    up = wait_nat(ec2, nat["NatGatewayId"], {"available"})
    assert up["ConnectivityType"] == "private" and "PublicIp" not in up["NatGatewayAddresses"][0]
    ec2.delete_nat_gateway(NatGatewayId=nat["NatGatewayId"])
    wait_nat(ec2, nat["NatGatewayId"], {"deleted"})
