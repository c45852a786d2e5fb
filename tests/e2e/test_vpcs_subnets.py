"""VPCs and subnets through boto3: AWS's defaults, CIDR rules and errors."""

import ipaddress

from helpers import aws_error


def test_default_vpc_exists_from_first_start(ec2):
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    assert len(vpcs) == 1
    default = vpcs[0]
    assert default["CidrBlock"] == "172.31.0.0/16"
    assert default["State"] == "available"
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [default["VpcId"]]}])["Subnets"]
    assert sorted(s["AvailabilityZone"] for s in subnets) == ["us-east-1a", "us-east-1b", "us-east-1c"]
    assert all(s["DefaultForAz"] and s["MapPublicIpOnLaunch"] for s in subnets)
    assert sorted(s["CidrBlock"] for s in subnets) == ["172.31.0.0/20", "172.31.16.0/20", "172.31.32.0/20"]
    igws = ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [default["VpcId"]]}])["InternetGateways"]
    assert len(igws) == 1
    main = ec2.describe_route_tables(
        Filters=[{"Name": "vpc-id", "Values": [default["VpcId"]]}, {"Name": "association.main", "Values": ["true"]}]
    )["RouteTables"][0]
    routes = {r.get("DestinationCidrBlock"): r for r in main["Routes"]}
    assert routes["172.31.0.0/16"]["GatewayId"] == "local"
    assert routes["0.0.0.0/0"]["GatewayId"] == igws[0]["InternetGatewayId"]
    assert routes["0.0.0.0/0"]["State"] == "active"
    attrs = ec2.describe_account_attributes(AttributeNames=["default-vpc"])["AccountAttributes"]
    assert attrs[0]["AttributeValues"][0]["AttributeValue"] == default["VpcId"]


def test_other_regions_get_their_own_default_vpc(cove_server):
    west = cove_server.client("ec2", region="eu-west-1")
    vpcs = west.describe_vpcs()["Vpcs"]
    assert [v["IsDefault"] for v in vpcs] == [True]
    zones = [z["ZoneName"] for z in west.describe_availability_zones()["AvailabilityZones"]]
    assert zones == ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    east_ids = {v["VpcId"] for v in cove_server.client("ec2").describe_vpcs()["Vpcs"]}
    assert vpcs[0]["VpcId"] not in east_ids


def test_new_vpc_gets_main_table_default_acl_and_default_group(ec2, vpc):
    v = ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]
    assert v["CidrBlock"] == "10.0.0.0/16" and not v["IsDefault"]
    assert v["CidrBlockAssociationSet"][0]["CidrBlockState"]["State"] == "associated"
    f = [{"Name": "vpc-id", "Values": [vpc]}]
    tables = ec2.describe_route_tables(Filters=f)["RouteTables"]
    assert len(tables) == 1 and tables[0]["Associations"][0]["Main"]
    assert tables[0]["Routes"] == [
        {"DestinationCidrBlock": "10.0.0.0/16", "GatewayId": "local", "Origin": "CreateRouteTable", "State": "active"}
    ]
    acls = ec2.describe_network_acls(Filters=f)["NetworkAcls"]
    assert len(acls) == 1 and acls[0]["IsDefault"]
    numbers = sorted((e["Egress"], e["RuleNumber"], e["RuleAction"]) for e in acls[0]["Entries"])
    assert numbers == [(False, 100, "allow"), (False, 32767, "deny"), (True, 100, "allow"), (True, 32767, "deny")]
    groups = ec2.describe_security_groups(Filters=f)["SecurityGroups"]
    assert [g["GroupName"] for g in groups] == ["default"]
    g = groups[0]
    assert g["IpPermissions"][0]["IpProtocol"] == "-1"
    assert g["IpPermissions"][0]["UserIdGroupPairs"][0]["GroupId"] == g["GroupId"]
    assert g["IpPermissionsEgress"][0]["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]
    assert ec2.describe_vpc_attribute(VpcId=vpc, Attribute="enableDnsSupport")["EnableDnsSupport"]["Value"] is True
    assert ec2.describe_vpc_attribute(VpcId=vpc, Attribute="enableDnsHostnames")["EnableDnsHostnames"]["Value"] is False


def test_vpc_cidr_is_canonicalised_and_range_checked(ec2):
    v = ec2.create_vpc(CidrBlock="100.68.0.18/18")["Vpc"]
    assert v["CidrBlock"] == "100.68.0.0/18"
    assert v["State"] == "pending"
    ec2.delete_vpc(VpcId=v["VpcId"])
    aws_error("InvalidVpc.Range", ec2.create_vpc, CidrBlock="10.0.0.0/8")
    aws_error("InvalidVpc.Range", ec2.create_vpc, CidrBlock="10.0.0.0/29")
    aws_error("InvalidParameterValue", ec2.create_vpc, CidrBlock="10.0.0.300/16")
    aws_error("MissingParameter", ec2.create_vpc)


def test_modify_vpc_attributes(ec2, vpc):
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    assert ec2.describe_vpc_attribute(VpcId=vpc, Attribute="enableDnsHostnames")["EnableDnsHostnames"]["Value"] is True
    msg = aws_error(
        "InvalidParameterCombination", ec2.modify_vpc_attribute, VpcId=vpc,
        EnableDnsHostnames={"Value": True}, EnableDnsSupport={"Value": True},
    )
    assert "multiple attribute" in msg
    aws_error("InvalidVpcID.NotFound", ec2.modify_vpc_attribute, VpcId="vpc-0123456789abcdef0", EnableDnsSupport={"Value": False})


def test_subnet_cidr_rules_and_address_count(ec2, vpc):
    s = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1b")["Subnet"]
    assert s["AvailableIpAddressCount"] == 251
    assert s["AvailabilityZone"] == "us-east-1b" and s["AvailabilityZoneId"] == "use1-az2"
    assert not s["MapPublicIpOnLaunch"] and not s["DefaultForAz"]
    assert s["SubnetArn"].endswith(f":subnet/{s['SubnetId']}")
    small = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/28")["Subnet"]
    assert small["AvailableIpAddressCount"] == 11
    msg = aws_error("InvalidSubnet.Conflict", ec2.create_subnet, VpcId=vpc, CidrBlock="10.0.1.128/25")
    assert msg == "The CIDR '10.0.1.128/25' conflicts with another subnet"
    assert aws_error("InvalidSubnet.Range", ec2.create_subnet, VpcId=vpc, CidrBlock="10.1.0.0/24") == "The CIDR '10.1.0.0/24' is invalid."
    aws_error("InvalidSubnet.Range", ec2.create_subnet, VpcId=vpc, CidrBlock="10.0.3.0/29")
    aws_error("InvalidParameterValue", ec2.create_subnet, VpcId=vpc, CidrBlock="10.0.4.0/24", AvailabilityZone="us-east-1z")
    aws_error("InvalidVpcID.NotFound", ec2.create_subnet, VpcId="vpc-0000000000000000f", CidrBlock="10.0.5.0/24")
    aws_error("MissingParameter", ec2.create_subnet, VpcId=vpc)
    ec2.modify_subnet_attribute(SubnetId=s["SubnetId"], MapPublicIpOnLaunch={"Value": True})
    assert ec2.describe_subnets(SubnetIds=[s["SubnetId"]])["Subnets"][0]["MapPublicIpOnLaunch"] is True
    found = ec2.describe_subnets(Filters=[{"Name": "cidr-block", "Values": ["10.0.*"]}, {"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    assert {x["SubnetId"] for x in found} == {s["SubnetId"], small["SubnetId"]}


def test_subnet_is_associated_with_default_acl_and_counts_enis(ec2, vpc):
    s = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/28")["Subnet"]
    acl = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [s["SubnetId"]]}])["NetworkAcls"]
    assert len(acl) == 1 and acl[0]["IsDefault"]
    eni = ec2.create_network_interface(SubnetId=s["SubnetId"])["NetworkInterface"]
    assert eni["PrivateIpAddress"] == "10.0.1.4"
    assert ec2.describe_subnets(SubnetIds=[s["SubnetId"]])["Subnets"][0]["AvailableIpAddressCount"] == 10
    msg = aws_error("DependencyViolation", ec2.delete_subnet, SubnetId=s["SubnetId"])
    assert msg == f"The subnet '{s['SubnetId']}' has dependencies and cannot be deleted."
    ec2.delete_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"])
    ec2.delete_subnet(SubnetId=s["SubnetId"])
    aws_error("InvalidSubnetID.NotFound", ec2.describe_subnets, SubnetIds=[s["SubnetId"]])


def test_delete_vpc_with_dependencies_is_refused(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.0.0/24")["Subnet"]["SubnetId"]
    msg = aws_error("DependencyViolation", ec2.delete_vpc, VpcId=vpc)
    assert msg == f"The vpc '{vpc}' has dependencies and cannot be deleted."
    ec2.delete_subnet(SubnetId=subnet)
    ec2.delete_vpc(VpcId=vpc)
    aws_error("InvalidVpcID.NotFound", ec2.describe_vpcs, VpcIds=[vpc])
    # The VPC's own companions went with it.
    assert ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"] == []
    assert ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"] == []


def test_overlapping_vpcs_are_allowed(ec2):
    a = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    b = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    sa = ec2.create_subnet(VpcId=a, CidrBlock="10.50.1.0/24")["Subnet"]["SubnetId"]
    sb = ec2.create_subnet(VpcId=b, CidrBlock="10.50.1.0/24")["Subnet"]["SubnetId"]
    for s in (sa, sb):
        ec2.delete_subnet(SubnetId=s)
    for v in (a, b):
        ec2.delete_vpc(VpcId=v)


def test_zones_regions(ec2):
    zones = ec2.describe_availability_zones(Filters=[{"Name": "zone-name", "Values": ["us-east-1a"]}])["AvailabilityZones"]
    assert zones == [{
        "State": "available", "OptInStatus": "opt-in-not-required", "Messages": [], "RegionName": "us-east-1",
        "ZoneName": "us-east-1a", "ZoneId": "use1-az1", "GroupName": "us-east-1", "NetworkBorderGroup": "us-east-1",
        "ZoneType": "availability-zone", "GroupLongName": "us-east-1",
    }]
    regions = [r["RegionName"] for r in ec2.describe_regions()["Regions"]]
    assert "us-east-1" in regions and "eu-west-1" in regions
    # Opt-in regions are served as opted in: named, listed with all, usable.
    assert ec2.describe_regions(RegionNames=["ap-east-1"])["Regions"] == [
        {"Endpoint": "ec2.ap-east-1.amazonaws.com", "RegionName": "ap-east-1", "OptInStatus": "opted-in"}]
    every = {r["RegionName"] for r in ec2.describe_regions(AllRegions=True)["Regions"]}
    assert {"us-east-1", "ap-east-1", "me-central-1", "ap-northeast-3"} <= every
    assert aws_error("InvalidParameterValue", ec2.describe_regions, RegionNames=["us-east-9"]) == "Invalid region: us-east-9"
    aws_error("InvalidParameterValue", ec2.describe_availability_zones, Filters=[{"Name": "colour", "Values": ["x"]}])
    ipaddress.ip_network("10.0.0.0/16")


def test_zone_ids_and_unknown_regions(cove_server):
    jakarta = cove_server.client("ec2", region="ap-southeast-3")
    zones = jakarta.describe_availability_zones()["AvailabilityZones"]
    assert [(z["ZoneName"], z["ZoneId"]) for z in zones][:1] == [("ap-southeast-3a", "apse3-az1")]
    # A region AWS does not have is refused by every service.
    expected = {"ec2": "AuthFailure", "sts": "SignatureDoesNotMatch", "sagemaker": "InvalidSignatureException",
                "logs": "InvalidSignatureException"}
    calls = {"ec2": "describe_vpcs", "sts": "get_caller_identity", "sagemaker": "list_training_jobs",
             "logs": "describe_log_groups"}
    for service, code in expected.items():
        client = cove_server.client(service, region="us-east-9")
        msg = aws_error(code, getattr(client, calls[service]))
        assert msg.startswith("Credential should be scoped to a valid region, not 'us-east-9'."), msg
