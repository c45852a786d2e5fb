"""Tags, filters, pagination and DryRun across resource types."""

from helpers import aws_error


def test_tags_on_many_resource_types(ec2, vpc):
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="t", Description="t", VpcId=vpc)["GroupId"]
    rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ids = [vpc, subnet, sg, rt]
    ec2.create_tags(Resources=ids, Tags=[{"Key": "team", "Value": "ml"}, {"Key": "Name", "Value": "cove-test"}])
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": ids}, {"Name": "key", "Values": ["team"]}])["Tags"]
    assert {(t["ResourceId"], t["ResourceType"]) for t in tags} == {
        (vpc, "vpc"), (subnet, "subnet"), (sg, "security-group"), (rt, "route-table")}
    found = ec2.describe_subnets(Filters=[{"Name": "tag:Name", "Values": ["cove-*"]}])["Subnets"]
    assert [s["SubnetId"] for s in found] == [subnet]
    assert ec2.describe_vpcs(Filters=[{"Name": "tag-key", "Values": ["team"]}])["Vpcs"][0]["VpcId"] == vpc
    # A value given deletes the tag only when it matches.
    ec2.delete_tags(Resources=[vpc], Tags=[{"Key": "team", "Value": "other"}])
    assert {"Key": "team", "Value": "ml"} in ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["Tags"]
    ec2.delete_tags(Resources=[vpc], Tags=[{"Key": "team"}])
    assert ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["Tags"] == [{"Key": "Name", "Value": "cove-test"}]
    ec2.delete_tags(Resources=[vpc])
    assert "Tags" not in ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]
    aws_error("InvalidParameterValue", ec2.create_tags, Resources=[vpc], Tags=[{"Key": "aws:x", "Value": "y"}])
    aws_error("InvalidSubnetID.NotFound", ec2.create_tags, Resources=["subnet-00000000000000000"], Tags=[{"Key": "a", "Value": "b"}])
    aws_error("InvalidID", ec2.create_tags, Resources=["banana"], Tags=[{"Key": "a", "Value": "b"}])
    many = [{"Key": f"k{i}", "Value": "v"} for i in range(51)]
    aws_error("TagLimitExceeded", ec2.create_tags, Resources=[subnet], Tags=many)
    # The rejected call tagged nothing.
    assert len(ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["Tags"]) == 2


def test_tag_specifications_must_match_the_resource(ec2, vpc):
    aws_error("InvalidParameterValue", ec2.create_subnet, VpcId=vpc, CidrBlock="10.0.8.0/24",
              TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "a", "Value": "b"}]}])
    assert ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"] == []


def test_pagination(cove_server, ec2, vpc):
    made = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24")["Subnet"]["SubnetId"] for i in range(7)]
    f = [{"Name": "vpc-id", "Values": [vpc]}]
    page = ec2.describe_subnets(Filters=f, MaxResults=5)
    assert len(page["Subnets"]) == 5 and page["NextToken"]
    rest = ec2.describe_subnets(Filters=f, MaxResults=5, NextToken=page["NextToken"])
    assert len(rest["Subnets"]) == 2 and "NextToken" not in rest
    assert sorted(s["SubnetId"] for s in page["Subnets"] + rest["Subnets"]) == sorted(made)
    paginator = ec2.get_paginator("describe_subnets")
    seen = [s["SubnetId"] for p in paginator.paginate(Filters=f, PaginationConfig={"PageSize": 5}) for s in p["Subnets"]]
    assert sorted(seen) == sorted(made)
    aws_error("InvalidParameterCombination", ec2.describe_subnets, SubnetIds=made[:1], MaxResults=5)
    unchecked = cove_server.client("ec2", parameter_validation=False)
    msg = aws_error("InvalidParameterValue", unchecked.describe_subnets, MaxResults=4)
    assert msg == "Value (4) for parameter MaxResults is invalid. Member must have value greater than or equal to 5"
    aws_error("InvalidNextToken", ec2.describe_subnets, NextToken="!!!")


def test_dry_run_changes_nothing(ec2):
    before = len(ec2.describe_vpcs()["Vpcs"])
    msg = aws_error("DryRunOperation", ec2.create_vpc, CidrBlock="10.3.0.0/16", DryRun=True)
    assert msg == "Request would have succeeded, but DryRun flag is set."
    aws_error("DryRunOperation", ec2.describe_vpcs, DryRun=True)
    assert len(ec2.describe_vpcs()["Vpcs"]) == before
