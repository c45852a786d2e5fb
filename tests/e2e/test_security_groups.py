"""Security groups and rules through boto3: defaults, rule ids, duplicates,
limits, group peers, revocation and the undeletable default group."""

import botocore.exceptions
import pytest

from helpers import aws_error


@pytest.fixture
def group(ec2, vpc):
    return ec2.create_security_group(GroupName="web", Description="web tier", VpcId=vpc)["GroupId"]


def test_new_group_has_only_the_default_egress_rule(ec2, vpc, group):
    g = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]
    assert g["GroupName"] == "web" and g["Description"] == "web tier" and g["VpcId"] == vpc
    assert g["IpPermissions"] == []
    assert g["IpPermissionsEgress"] == [
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "Ipv6Ranges": [], "PrefixListIds": [], "UserIdGroupPairs": []}
    ]
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])["SecurityGroupRules"]
    assert len(rules) == 1 and rules[0]["IsEgress"] and rules[0]["SecurityGroupRuleId"].startswith("sgr-")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": ["foobar"]}])
    assert e.value.response["Error"]["Code"] == "InvalidGroupId.Malformed"
    assert e.value.response["Error"]["Message"] == 'Invalid id: "foobar" (expecting "sg-...")'


def test_names_are_unique_per_vpc(ec2, vpc, group):
    msg = aws_error("InvalidGroup.Duplicate", ec2.create_security_group, GroupName="web", Description="x", VpcId=vpc)
    assert msg == f"The security group 'web' already exists for VPC '{vpc}'"
    aws_error("InvalidGroup.Duplicate", ec2.create_security_group, GroupName="default", Description="x", VpcId=vpc)
    aws_error("InvalidParameterValue", ec2.create_security_group, GroupName="sg-abc", Description="x", VpcId=vpc)
    aws_error("InvalidVpcID.NotFound", ec2.create_security_group, GroupName="a", Description="x", VpcId="vpc-00000000000000000")


def test_authorize_cidr_group_and_prefix_list_peers(ec2, vpc, group):
    other = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
    pl = ec2.describe_prefix_lists()["PrefixLists"][0]["PrefixListId"]
    out = ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
         "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "https"}, {"CidrIp": "10.0.0.5/16"}]},
        {"IpProtocol": "6", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": other}]},
        {"IpProtocol": "icmp", "FromPort": 8, "ToPort": -1, "IpRanges": [{"CidrIp": "10.0.0.0/16"}]},
    ])
    assert out["Return"] is True
    assert len(out["SecurityGroupRules"]) == 4
    assert {r["IpProtocol"] for r in out["SecurityGroupRules"]} == {"tcp", "icmp"}
    ec2.authorize_security_group_egress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "PrefixListIds": [{"PrefixListId": pl}]},
    ])
    g = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]
    https = [p for p in g["IpPermissions"] if p.get("FromPort") == 443][0]
    assert https["IpRanges"] == [{"CidrIp": "0.0.0.0/0", "Description": "https"}, {"CidrIp": "10.0.0.0/16"}]
    db = [p for p in g["IpPermissions"] if p.get("FromPort") == 5432][0]
    assert db["UserIdGroupPairs"][0]["GroupId"] == other
    assert any(p.get("PrefixListIds") == [{"PrefixListId": pl}] for p in g["IpPermissionsEgress"])
    found = ec2.describe_security_groups(Filters=[{"Name": "ip-permission.group-id", "Values": [other]}])["SecurityGroups"]
    assert [x["GroupId"] for x in found] == [group]
    # A group referenced by another group's rule cannot be deleted.
    aws_error("DependencyViolation", ec2.delete_security_group, GroupId=other)
    ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": other}]}])
    ec2.delete_security_group(GroupId=other)


def test_duplicate_and_invalid_rules(ec2, group):
    perm = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "192.0.2.0/24"}]}
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[perm])
    msg = aws_error("InvalidPermission.Duplicate", ec2.authorize_security_group_ingress, GroupId=group, IpPermissions=[perm])
    assert msg == 'the specified rule "peer: 192.0.2.0/24, TCP, from port: 22, to port: 22, ALLOW" already exists'
    aws_error("InvalidParameterValue", ec2.authorize_security_group_ingress, GroupId=group,
              IpPermissions=[{"IpProtocol": "tcp", "FromPort": 30, "ToPort": 20, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    aws_error("InvalidParameterValue", ec2.authorize_security_group_ingress, GroupId=group,
              IpPermissions=[{"IpProtocol": "bogus", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    aws_error("InvalidParameterValue", ec2.authorize_security_group_ingress, GroupId=group,
              IpPermissions=[{"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "IpRanges": [{"CidrIp": "nope"}]}])
    aws_error("InvalidGroup.NotFound", ec2.authorize_security_group_ingress, GroupId=group,
              IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-00000000000000000"}]}])
    aws_error("InvalidGroup.NotFound", ec2.authorize_security_group_ingress, GroupId="sg-00000000000000000",
              IpPermissions=[perm])
    # A rejected call changes nothing.
    g = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]
    assert len(g["IpPermissions"]) == 1


def test_all_protocols_drop_ports_and_legacy_form(ec2, group):
    ec2.authorize_security_group_ingress(GroupId=group, IpProtocol="-1", CidrIp="10.1.0.0/16")
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "50", "FromPort": 1, "ToPort": 2, "IpRanges": [{"CidrIp": "10.2.0.0/16"}]}])
    perms = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    assert {p["IpProtocol"] for p in perms} == {"-1", "50"}
    assert all("FromPort" not in p for p in perms)


def test_rule_limit(ec2, group):
    perms = [{"IpProtocol": "tcp", "FromPort": 1000 + i, "ToPort": 1000 + i, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]} for i in range(60)]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=perms)
    msg = aws_error("RulesPerSecurityGroupLimitExceeded", ec2.authorize_security_group_ingress, GroupId=group,
                    IpPermissions=[{"IpProtocol": "tcp", "FromPort": 1, "ToPort": 1, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    assert msg == "The maximum number of rules per security group has been reached."
    # Egress is counted separately: the default rule plus 59 fit.
    ec2.authorize_security_group_egress(GroupId=group, IpPermissions=perms[:59])


def test_revoke_by_permission_and_by_rule_id(ec2, group):
    out = ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "10.0.0.0/16"}, {"CidrIp": "10.1.0.0/16"}]}])
    first, second = [r["SecurityGroupRuleId"] for r in out["SecurityGroupRules"]]
    ec2.revoke_security_group_ingress(GroupId=group, SecurityGroupRuleIds=[first])
    ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "10.1.0.0/16"}]}])
    assert ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"] == []
    aws_error("InvalidPermission.NotFound", ec2.revoke_security_group_ingress, GroupId=group, IpPermissions=[
        {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "10.1.0.0/16"}]}])
    aws_error("InvalidSecurityGroupRuleId.NotFound", ec2.revoke_security_group_ingress, GroupId=group, SecurityGroupRuleIds=[second])
    # With no egress rules nothing goes out; the group shows none.
    default_egress = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group]}])["SecurityGroupRules"][0]["SecurityGroupRuleId"]
    ec2.revoke_security_group_egress(GroupId=group, SecurityGroupRuleIds=[default_egress])
    assert ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissionsEgress"] == []


def test_default_group_cannot_be_deleted(ec2, vpc):
    default = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["default"]}])["SecurityGroups"][0]
    msg = aws_error("CannotDelete", ec2.delete_security_group, GroupId=default["GroupId"])
    assert msg == f'the specified group: "{default["GroupId"]}" name: "default" cannot be deleted by a user'


def test_group_in_use_by_eni_cannot_be_deleted(ec2, vpc, group):
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.7.0/24")["Subnet"]["SubnetId"]
    eni = ec2.create_network_interface(SubnetId=subnet, Groups=[group])["NetworkInterface"]["NetworkInterfaceId"]
    assert aws_error("DependencyViolation", ec2.delete_security_group, GroupId=group) == f"resource {group} has a dependent object"
    ec2.delete_network_interface(NetworkInterfaceId=eni)


def test_cross_vpc_group_reference_is_refused(ec2, vpc, group):
    other_vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    foreign = ec2.create_security_group(GroupName="x", Description="x", VpcId=other_vpc)["GroupId"]
    aws_error("InvalidParameterValue", ec2.authorize_security_group_ingress, GroupId=group,
              IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": foreign}]}])
    ec2.delete_security_group(GroupId=foreign)
    ec2.delete_vpc(VpcId=other_vpc)
