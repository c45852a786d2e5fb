"""Customer-managed prefix lists, rule edits in place and DHCP options sets,
enforced: a prefix list named in a security-group rule admits exactly its
CIDRs as its entries change version by version, a rule rewritten with
ModifySecurityGroupRules keeps its id and changes what passes, and a VPC's
DHCP options set is what its ENIs' resolv.conf says. Needs root."""

import os
import sys
import time

import pytest

from helpers import aws_error, eventually
from test_dataplane import reaches, topology  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the data plane needs root")


def web_rule(**peer):
    return [{"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, **peer}]


def test_a_prefix_list_in_a_rule_follows_its_versions(cove_server, ec2, topology):
    client = f"{topology['client']['PrivateIpAddress']}/32"
    pl = ec2.create_managed_prefix_list(
        PrefixListName="clients", MaxEntries=3, AddressFamily="IPv4",
        Entries=[{"Cidr": "10.0.9.0/24", "Description": "elsewhere"}],
        TagSpecifications=[{"ResourceType": "prefix-list", "Tags": [{"Key": "team", "Value": "ml"}]}])["PrefixList"]
    pl_id = pl["PrefixListId"]
    assert pl["State"] == "create-in-progress" and pl["Version"] == 1 and pl["MaxEntries"] == 3
    assert pl["PrefixListArn"] == f"arn:aws:ec2:us-east-1:123456789012:prefix-list/{pl_id}"
    ec2.authorize_security_group_ingress(GroupId=topology["web_sg"],
                                         IpPermissions=web_rule(PrefixListIds=[{"PrefixListId": pl_id}]))
    time.sleep(1)
    assert not reaches(cove_server, topology)

    # Version 2 holds the client: it gets in, with no change to the rule.
    v2 = ec2.modify_managed_prefix_list(PrefixListId=pl_id, CurrentVersion=1,
                                        AddEntries=[{"Cidr": client}])["PrefixList"]
    assert v2["Version"] == 2 and v2["State"] == "modify-in-progress"
    assert eventually(lambda: reaches(cove_server, topology))
    aws_error("PrefixListVersionMismatch", ec2.modify_managed_prefix_list, PrefixListId=pl_id,
              CurrentVersion=1, RemoveEntries=[{"Cidr": client}])
    aws_error("PrefixListMaxEntriesExceeded", ec2.modify_managed_prefix_list, PrefixListId=pl_id,
              AddEntries=[{"Cidr": "10.0.10.0/24"}, {"Cidr": "10.0.11.0/24"}])
    aws_error("InvalidPrefixListModification", ec2.modify_managed_prefix_list, PrefixListId=pl_id,
              RemoveEntries=[{"Cidr": "10.0.12.0/24"}])

    # Version 3 drops it again; version 2 stays readable and restorable.
    ec2.modify_managed_prefix_list(PrefixListId=pl_id, CurrentVersion=2, RemoveEntries=[{"Cidr": client}])
    assert eventually(lambda: not reaches(cove_server, topology))
    cidrs = lambda **v: sorted(e["Cidr"] for e in ec2.get_managed_prefix_list_entries(PrefixListId=pl_id, **v)["Entries"])
    assert cidrs() == ["10.0.9.0/24"] and cidrs(TargetVersion=2) == sorted([client, "10.0.9.0/24"])
    restored = ec2.restore_managed_prefix_list_version(PrefixListId=pl_id, PreviousVersion=2, CurrentVersion=3)
    assert restored["PrefixList"]["Version"] == 4
    assert eventually(lambda: reaches(cove_server, topology))

    # Described beside AWS's own lists; its users listed; in use, it stays.
    described = ec2.describe_managed_prefix_lists()["PrefixLists"]
    ours = [p for p in described if p["PrefixListId"] == pl_id][0]
    assert ours["State"] == "create-complete" and ours["Version"] == 4 and ours["Tags"] == [{"Key": "team", "Value": "ml"}]
    assert any(p["OwnerId"] == "AWS" and p["PrefixListName"] == "com.amazonaws.us-east-1.s3" for p in described)
    by_name = ec2.describe_managed_prefix_lists(Filters=[{"Name": "prefix-list-name", "Values": ["clients"]}])
    assert [p["PrefixListId"] for p in by_name["PrefixLists"]] == [pl_id]
    users = ec2.get_managed_prefix_list_associations(PrefixListId=pl_id)["PrefixListAssociations"]
    assert users == [{"ResourceId": topology["web_sg"], "ResourceOwner": "123456789012"}]
    aws_error("DependencyViolation", ec2.delete_managed_prefix_list, PrefixListId=pl_id)

    # A route may name it too.
    rt = ec2.create_route_table(VpcId=topology["vpc"])["RouteTable"]["RouteTableId"]
    eni = topology["web"]["NetworkInterfaceId"]
    ec2.create_route(RouteTableId=rt, DestinationPrefixListId=pl_id, NetworkInterfaceId=eni)
    routes = ec2.describe_route_tables(RouteTableIds=[rt])["RouteTables"][0]["Routes"]
    assert any(r.get("DestinationPrefixListId") == pl_id for r in routes)
    ec2.delete_route_table(RouteTableId=rt)

    ec2.revoke_security_group_ingress(GroupId=topology["web_sg"],
                                      IpPermissions=web_rule(PrefixListIds=[{"PrefixListId": pl_id}]))
    assert ec2.delete_managed_prefix_list(PrefixListId=pl_id)["PrefixList"]["State"] == "delete-in-progress"
    aws_error("InvalidPrefixListID.NotFound", ec2.describe_managed_prefix_lists, PrefixListIds=[pl_id])
    aws_error("InvalidParameterValue", ec2.create_managed_prefix_list, PrefixListName="com.amazonaws.mine",
              MaxEntries=1, AddressFamily="IPv4")


def test_a_rule_modified_in_place_keeps_its_id_and_changes_enforcement(cove_server, ec2, topology):
    added = ec2.authorize_security_group_ingress(GroupId=topology["web_sg"],
                                                 IpPermissions=web_rule(IpRanges=[{"CidrIp": "10.0.9.0/24"}]))
    rule_id = added["SecurityGroupRules"][0]["SecurityGroupRuleId"]
    time.sleep(1)
    assert not reaches(cove_server, topology)
    ec2.modify_security_group_rules(GroupId=topology["web_sg"], SecurityGroupRules=[{
        "SecurityGroupRuleId": rule_id,
        "SecurityGroupRule": {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080,
                              "CidrIpv4": "10.0.2.0/24", "Description": "clients"}}])
    assert eventually(lambda: reaches(cove_server, topology))
    rules = ec2.describe_security_group_rules(SecurityGroupRuleIds=[rule_id])["SecurityGroupRules"]
    assert rules[0]["CidrIpv4"] == "10.0.2.0/24" and rules[0]["Description"] == "clients"

    ec2.update_security_group_rule_descriptions_ingress(
        GroupId=topology["web_sg"], SecurityGroupRuleDescriptions=[{"SecurityGroupRuleId": rule_id, "Description": "by id"}])
    assert ec2.describe_security_group_rules(SecurityGroupRuleIds=[rule_id])["SecurityGroupRules"][0]["Description"] == "by id"
    ec2.update_security_group_rule_descriptions_ingress(
        GroupId=topology["web_sg"], IpPermissions=web_rule(IpRanges=[{"CidrIp": "10.0.2.0/24", "Description": "by rule"}]))
    assert ec2.describe_security_group_rules(SecurityGroupRuleIds=[rule_id])["SecurityGroupRules"][0]["Description"] == "by rule"

    aws_error("InvalidSecurityGroupRuleId.NotFound", ec2.modify_security_group_rules, GroupId=topology["web_sg"],
              SecurityGroupRules=[{"SecurityGroupRuleId": "sgr-0123456789abcdef0",
                                   "SecurityGroupRule": {"IpProtocol": "-1", "CidrIpv4": "10.0.0.0/8"}}])
    aws_error("InvalidPermission.NotFound", ec2.update_security_group_rule_descriptions_egress,
              GroupId=topology["web_sg"], IpPermissions=web_rule(IpRanges=[{"CidrIp": "10.9.9.0/24"}]))


def resolv_conf(cove_server, eni):
    return cove_server.exec(eni, "cat", "/etc/resolv.conf").stdout


def test_a_dhcp_options_set_is_what_enis_resolve_with(cove_server, ec2, vpc):
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.7.0/24")["Subnet"]["SubnetId"]
    eni = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
    assert eventually(lambda: "nameserver 10.0.0.2" in resolv_conf(cove_server, eni))
    assert "search ec2.internal" in resolv_conf(cove_server, eni)
    default_id = ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["DhcpOptionsId"]
    default = ec2.describe_dhcp_options(DhcpOptionsIds=[default_id])["DhcpOptions"][0]
    assert {c["Key"]: [v["Value"] for v in c["Values"]] for c in default["DhcpConfigurations"]} == {
        "domain-name": ["ec2.internal"], "domain-name-servers": ["AmazonProvidedDNS"]}

    corp = ec2.create_dhcp_options(DhcpConfigurations=[
        {"Key": "domain-name", "Values": ["corp.example internal.example"]},
        {"Key": "domain-name-servers", "Values": ["AmazonProvidedDNS", "10.0.7.53"]},
    ])["DhcpOptions"]["DhcpOptionsId"]
    ec2.associate_dhcp_options(DhcpOptionsId=corp, VpcId=vpc)
    assert ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["DhcpOptionsId"] == corp
    assert eventually(lambda: "search corp.example internal.example" in resolv_conf(cove_server, eni))
    conf = resolv_conf(cove_server, eni)
    assert conf.index("nameserver 10.0.0.2") < conf.index("nameserver 10.0.7.53"), conf
    aws_error("DependencyViolation", ec2.delete_dhcp_options, DhcpOptionsId=corp)
    found = ec2.describe_dhcp_options(Filters=[{"Name": "value", "Values": ["10.0.7.53"]}])["DhcpOptions"]
    assert [d["DhcpOptionsId"] for d in found] == [corp]

    # `default` is no set at all: nothing to resolve with.
    ec2.associate_dhcp_options(DhcpOptionsId="default", VpcId=vpc)
    assert eventually(lambda: "nameserver" not in resolv_conf(cove_server, eni))
    ec2.delete_dhcp_options(DhcpOptionsId=corp)
    aws_error("InvalidDhcpOptionID.NotFound", ec2.associate_dhcp_options, DhcpOptionsId=corp, VpcId=vpc)
    ec2.associate_dhcp_options(DhcpOptionsId=default_id, VpcId=vpc)
    assert eventually(lambda: "nameserver 10.0.0.2" in resolv_conf(cove_server, eni))

    aws_error("InvalidParameterValue", ec2.create_dhcp_options,
              DhcpConfigurations=[{"Key": "colour", "Values": ["blue"]}])
    aws_error("InvalidParameterValue", ec2.create_dhcp_options,
              DhcpConfigurations=[{"Key": "domain-name-servers", "Values": ["dns.example"]}])
    ec2.delete_network_interface(NetworkInterfaceId=eni)


def test_a_secondary_cidr_block_is_part_of_the_vpc(cove_server, ec2, vpc):
    from test_reachability import analyze, reaches as connects

    added = ec2.associate_vpc_cidr_block(VpcId=vpc, CidrBlock="10.1.0.0/16")
    assoc = added["CidrBlockAssociation"]
    assert assoc["CidrBlock"] == "10.1.0.0/16" and assoc["CidrBlockState"]["State"] == "associating"
    blocks = ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlockAssociationSet"]
    assert [(b["CidrBlock"], b["CidrBlockState"]["State"]) for b in blocks] == [
        ("10.0.0.0/16", "associated"), ("10.1.0.0/16", "associated")]
    found = ec2.describe_vpcs(Filters=[{"Name": "cidr-block-association.cidr-block", "Values": ["10.1.0.0/16"]}])
    assert [v["VpcId"] for v in found["Vpcs"]] == [vpc]
    main = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]
    assert {(r["DestinationCidrBlock"], r["GatewayId"]) for r in main["Routes"]} >= {
        ("10.0.0.0/16", "local"), ("10.1.0.0/16", "local")}

    # AWS's rules for a new block.
    aws_error("InvalidVpc.Range", ec2.associate_vpc_cidr_block, VpcId=vpc, CidrBlock="10.0.128.0/17")
    aws_error("InvalidVpc.Range", ec2.associate_vpc_cidr_block, VpcId=vpc, CidrBlock="192.168.0.0/16")
    aws_error("InvalidVpc.Range", ec2.associate_vpc_cidr_block, VpcId=vpc, CidrBlock="10.2.0.0/29")
    aws_error("OperationNotPermitted", ec2.disassociate_vpc_cidr_block, AssociationId=blocks[0]["AssociationId"])
    aws_error("InvalidParameterValue", ec2.associate_vpc_cidr_block, VpcId=vpc, AmazonProvidedIpv6CidrBlock=True)

    # A subnet in the new block is a subnet of the VPC like any other: its
    # ENIs and those of the primary block reach each other through the router.
    old = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    new = ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.1.0/24")["Subnet"]["SubnetId"]
    aws_error("InvalidSubnet.Range", ec2.create_subnet, VpcId=vpc, CidrBlock="10.2.1.0/24")
    a = ec2.create_network_interface(SubnetId=old)["NetworkInterface"]
    b = ec2.create_network_interface(SubnetId=new)["NetworkInterface"]
    assert b["PrivateIpAddress"] == "10.1.1.4"
    assert eventually(lambda: connects(cove_server, a["NetworkInterfaceId"], "10.1.1.4", 9))
    assert connects(cove_server, b["NetworkInterfaceId"], a["PrivateIpAddress"], 9)
    assert analyze(ec2, Source=a["NetworkInterfaceId"], Destination=b["NetworkInterfaceId"],
                   DestinationPort=9)["NetworkPathFound"] is True
    # An address of the new block that no ENI has goes nowhere, as in the primary.
    assert not connects(cove_server, a["NetworkInterfaceId"], "10.1.1.99", 9)

    aws_error("InvalidCidrBlock.InUse", ec2.disassociate_vpc_cidr_block, AssociationId=assoc["AssociationId"])
    ec2.delete_network_interface(NetworkInterfaceId=b["NetworkInterfaceId"])
    ec2.delete_subnet(SubnetId=new)
    gone = ec2.disassociate_vpc_cidr_block(AssociationId=assoc["AssociationId"])
    assert gone["CidrBlockAssociation"]["CidrBlockState"]["State"] == "disassociating"
    main = ec2.describe_route_tables(RouteTableIds=[main["RouteTableId"]])["RouteTables"][0]
    assert "10.1.0.0/16" not in {r["DestinationCidrBlock"] for r in main["Routes"]}
    assert len(ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlockAssociationSet"]) == 1
    ec2.delete_network_interface(NetworkInterfaceId=a["NetworkInterfaceId"])
