"""Route 53 through boto3 (REST-XML): hosted zones public and private,
their VPC associations, record-set batches with Route 53's errors, paging
and changes. What a private zone answers inside a VPC is checked with real
DNS queries in test_peering.py."""

import uuid

import pytest

from helpers import aws_error


@pytest.fixture
def r53(cove_server):
    return cove_server.client("route53")


def a_record(action, name, value, ttl=60):
    return {"Action": action, "ResourceRecordSet": {"Name": name, "Type": "A", "TTL": ttl,
                                                    "ResourceRecords": [{"Value": value}]}}


def test_public_zone_records_paging_and_changes(r53):
    ref = str(uuid.uuid4())
    made = r53.create_hosted_zone(Name="Example.COM", CallerReference=ref)
    assert made["ResponseMetadata"]["HTTPStatusCode"] == 201
    zone = made["HostedZone"]
    assert zone["Name"] == "example.com." and zone["Config"]["PrivateZone"] is False
    assert made["Location"].endswith(zone["Id"].split("/")[-1])
    assert len(made["DelegationSet"]["NameServers"]) == 4
    assert made["ChangeInfo"]["Status"] == "PENDING"
    assert r53.get_change(Id=made["ChangeInfo"]["Id"])["ChangeInfo"]["Status"] == "INSYNC"
    aws_error("HostedZoneAlreadyExists", r53.create_hosted_zone, Name="example.com", CallerReference=ref)
    zid = zone["Id"]

    r53.change_resource_record_sets(HostedZoneId=zid, ChangeBatch={"Comment": "web", "Changes": [
        a_record("CREATE", f"www{i}.example.com", f"198.51.100.{i}") for i in range(5)]})
    names = [s["Name"] for s in r53.list_resource_record_sets(HostedZoneId=zid)["ResourceRecordSets"]]
    assert names[:2] == ["example.com.", "example.com."] and len(names) == 7
    first = r53.list_resource_record_sets(HostedZoneId=zid, MaxItems="3")
    assert first["IsTruncated"] is True and len(first["ResourceRecordSets"]) == 3
    rest = r53.list_resource_record_sets(HostedZoneId=zid, StartRecordName=first["NextRecordName"],
                                         StartRecordType=first["NextRecordType"])
    assert [s["Name"] for s in first["ResourceRecordSets"] + rest["ResourceRecordSets"]] == names
    paged = [s["Name"] for p in r53.get_paginator("list_resource_record_sets").paginate(
        HostedZoneId=zid, PaginationConfig={"PageSize": 2}) for s in p["ResourceRecordSets"]]
    assert paged == names

    # A batch is all or nothing.
    msg = aws_error("InvalidChangeBatch", r53.change_resource_record_sets, HostedZoneId=zid, ChangeBatch={"Changes": [
        a_record("UPSERT", "api.example.com", "198.51.100.9"), a_record("CREATE", "www0.example.com", "198.51.100.7")]})
    assert msg == "[Tried to create resource record set [name='www0.example.com.', type='A'] but it already exists]"
    assert "api.example.com." not in [s["Name"] for s in r53.list_resource_record_sets(HostedZoneId=zid)["ResourceRecordSets"]]
    msg = aws_error("InvalidChangeBatch", r53.change_resource_record_sets, HostedZoneId=zid,
                    ChangeBatch={"Changes": [a_record("DELETE", "www0.example.com", "198.51.100.99")]})
    assert "do not match the current values" in msg
    aws_error("InvalidChangeBatch", r53.change_resource_record_sets, HostedZoneId=zid,
              ChangeBatch={"Changes": [a_record("CREATE", "www.other.org", "198.51.100.1")]})
    aws_error("InvalidChangeBatch", r53.change_resource_record_sets, HostedZoneId=zid,
              ChangeBatch={"Changes": [a_record("CREATE", "bad.example.com", "not-an-address")]})
    aws_error("InvalidInput", r53.change_resource_record_sets, HostedZoneId=zid,
              ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": {"Name": "x.example.com", "Type": "BOGUS", "TTL": 1, "ResourceRecords": [{"Value": "x"}]}}]})

    aws_error("HostedZoneNotEmpty", r53.delete_hosted_zone, Id=zid)
    r53.change_resource_record_sets(HostedZoneId=zid, ChangeBatch={"Changes": [
        a_record("DELETE", f"www{i}.example.com", f"198.51.100.{i}") for i in range(5)]})
    r53.delete_hosted_zone(Id=zid)
    aws_error("NoSuchHostedZone", r53.get_hosted_zone, Id=zid)
    aws_error("NoSuchChange", r53.get_change, Id="CNOSUCHCHANGE")


def test_private_zone_associations(r53, ec2, vpc):
    other = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    try:
        aws_error("InvalidInput", r53.create_hosted_zone, Name="corp.internal", CallerReference=str(uuid.uuid4()),
                  HostedZoneConfig={"PrivateZone": True})
        aws_error("InvalidVPCId", r53.create_hosted_zone, Name="corp.internal", CallerReference=str(uuid.uuid4()),
                  VPC={"VPCRegion": "us-east-1", "VPCId": "vpc-0123456789abcdef0"})
        made = r53.create_hosted_zone(Name="corp.internal", CallerReference=str(uuid.uuid4()),
                                      VPC={"VPCRegion": "us-east-1", "VPCId": vpc})
        zid = made["HostedZone"]["Id"]
        assert made["HostedZone"]["Config"]["PrivateZone"] is True and made["VPC"]["VPCId"] == vpc
        aws_error("ConflictingDomainExists", r53.create_hosted_zone, Name="corp.internal",
                  CallerReference=str(uuid.uuid4()), VPC={"VPCRegion": "us-east-1", "VPCId": vpc})
        r53.associate_vpc_with_hosted_zone(HostedZoneId=zid, VPC={"VPCRegion": "us-east-1", "VPCId": other})
        got = r53.get_hosted_zone(Id=zid)
        assert {v["VPCId"] for v in got["VPCs"]} == {vpc, other} and "DelegationSet" not in got
        by_vpc = r53.list_hosted_zones_by_vpc(VPCId=other, VPCRegion="us-east-1")["HostedZoneSummaries"]
        assert [s["Name"] for s in by_vpc] == ["corp.internal."]
        private = r53.list_hosted_zones(HostedZoneType="PrivateHostedZone")["HostedZones"]
        assert zid in [z["Id"] for z in private]
        r53.disassociate_vpc_from_hosted_zone(HostedZoneId=zid, VPC={"VPCRegion": "us-east-1", "VPCId": other})
        aws_error("VPCAssociationNotFound", r53.disassociate_vpc_from_hosted_zone, HostedZoneId=zid,
                  VPC={"VPCRegion": "us-east-1", "VPCId": other})
        aws_error("LastVPCAssociation", r53.disassociate_vpc_from_hosted_zone, HostedZoneId=zid,
                  VPC={"VPCRegion": "us-east-1", "VPCId": vpc})
        public = r53.create_hosted_zone(Name="public.example", CallerReference=str(uuid.uuid4()))["HostedZone"]["Id"]
        aws_error("PublicZoneVPCAssociation", r53.associate_vpc_with_hosted_zone, HostedZoneId=public,
                  VPC={"VPCRegion": "us-east-1", "VPCId": vpc})
        for z in (zid, public):
            r53.delete_hosted_zone(Id=z)
    finally:
        ec2.delete_vpc(VpcId=other)
