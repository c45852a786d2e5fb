"""Network ACLs through boto3: default vs custom entries, numbering, the `*`
rule, replacement of associations and deletion rules."""

from helpers import aws_error


def entries(ec2, acl_id):
    acl = ec2.describe_network_acls(NetworkAclIds=[acl_id])["NetworkAcls"][0]
    return [(e["Egress"], e["RuleNumber"], e["RuleAction"], e["Protocol"]) for e in acl["Entries"]]


def test_custom_acl_denies_everything_until_entries_are_added(ec2, vpc):
    acl = ec2.create_network_acl(VpcId=vpc)["NetworkAcl"]
    assert not acl["IsDefault"] and acl["Associations"] == []
    assert sorted(entries(ec2, acl["NetworkAclId"])) == [(False, 32767, "deny", "-1"), (True, 32767, "deny", "-1")]


def test_entries_are_ordered_and_unique_per_direction(ec2, vpc):
    acl = ec2.create_network_acl(VpcId=vpc)["NetworkAcl"]["NetworkAclId"]
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=200, Protocol="6", RuleAction="allow", Egress=False,
                                 CidrBlock="0.0.0.0/0", PortRange={"From": 443, "To": 443})
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=100, Protocol="tcp", RuleAction="deny", Egress=False,
                                 CidrBlock="192.0.2.0/24", PortRange={"From": 443, "To": 443})
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=100, Protocol="-1", RuleAction="allow", Egress=True,
                                 CidrBlock="0.0.0.0/0")
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=110, Protocol="icmp", RuleAction="allow", Egress=True,
                                 CidrBlock="10.0.0.0/16", IcmpTypeCode={"Type": 8, "Code": -1})
    assert entries(ec2, acl) == [
        (True, 100, "allow", "-1"), (True, 110, "allow", "icmp"), (True, 32767, "deny", "-1"),
        (False, 100, "deny", "tcp"), (False, 200, "allow", "tcp"), (False, 32767, "deny", "-1"),
    ]
    msg = aws_error("NetworkAclEntryAlreadyExists", ec2.create_network_acl_entry, NetworkAclId=acl, RuleNumber=100,
                    Protocol="-1", RuleAction="allow", Egress=False, CidrBlock="0.0.0.0/0")
    assert msg == "The network acl entry identified by 100 already exists."
    for bad in (0, 32767, 40000):
        aws_error("InvalidParameterValue", ec2.create_network_acl_entry, NetworkAclId=acl, RuleNumber=bad,
                  Protocol="-1", RuleAction="allow", Egress=False, CidrBlock="0.0.0.0/0")
    aws_error("MissingParameter", ec2.create_network_acl_entry, NetworkAclId=acl, RuleNumber=300,
              Protocol="tcp", RuleAction="allow", Egress=False, CidrBlock="0.0.0.0/0")
    ec2.replace_network_acl_entry(NetworkAclId=acl, RuleNumber=100, Protocol="-1", RuleAction="allow", Egress=False,
                                  CidrBlock="0.0.0.0/0")
    assert (False, 100, "allow", "-1") in entries(ec2, acl)
    aws_error("InvalidNetworkAclEntry.NotFound", ec2.replace_network_acl_entry, NetworkAclId=acl, RuleNumber=999,
              Protocol="-1", RuleAction="allow", Egress=False, CidrBlock="0.0.0.0/0")
    ec2.delete_network_acl_entry(NetworkAclId=acl, RuleNumber=100, Egress=False)
    aws_error("InvalidNetworkAclEntry.NotFound", ec2.delete_network_acl_entry, NetworkAclId=acl, RuleNumber=100, Egress=False)
    found = ec2.describe_network_acls(Filters=[{"Name": "entry.rule-number", "Values": ["110"]}])["NetworkAcls"]
    assert [a["NetworkAclId"] for a in found] == [acl]


def test_association_replacement_and_deletion(ec2, vpc):
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.3.0/24")["Subnet"]["SubnetId"]
    custom = ec2.create_network_acl(VpcId=vpc)["NetworkAcl"]["NetworkAclId"]
    default = ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "default", "Values": ["true"]}])["NetworkAcls"][0]
    assoc = [a for a in default["Associations"] if a["SubnetId"] == subnet][0]["NetworkAclAssociationId"]
    new_assoc = ec2.replace_network_acl_association(AssociationId=assoc, NetworkAclId=custom)["NewAssociationId"]
    assert new_assoc != assoc
    now = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])["NetworkAcls"]
    assert [a["NetworkAclId"] for a in now] == [custom]
    msg = aws_error("DependencyViolation", ec2.delete_network_acl, NetworkAclId=custom)
    assert msg == f"The networkAcl '{custom}' has dependencies and cannot be deleted."
    aws_error("InvalidParameterValue", ec2.delete_network_acl, NetworkAclId=default["NetworkAclId"])
    aws_error("InvalidAssociationID.NotFound", ec2.replace_network_acl_association, AssociationId=assoc, NetworkAclId=custom)
    ec2.replace_network_acl_association(AssociationId=new_assoc, NetworkAclId=default["NetworkAclId"])
    ec2.delete_network_acl(NetworkAclId=custom)
    aws_error("InvalidNetworkAclID.NotFound", ec2.describe_network_acls, NetworkAclIds=[custom])
