"""Nothing is lost on restart, whether Cove stops cleanly or is killed."""

import signal


def test_state_survives_kill_and_restart(fresh_cove):
    ec2 = fresh_cove.client("ec2")
    default_vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16", TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "k", "Value": "v"}]}])["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="g", Description="g", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    eni = ec2.create_network_interface(SubnetId=subnet, Groups=[sg])["NetworkInterface"]
    snapshot = lambda c: (c.describe_vpcs()["Vpcs"], c.describe_subnets()["Subnets"], c.describe_security_groups()["SecurityGroups"],
                          c.describe_network_interfaces()["NetworkInterfaces"], c.describe_route_tables()["RouteTables"],
                          c.describe_network_acls()["NetworkAcls"], c.describe_tags()["Tags"])
    before = snapshot(ec2)
    for sig in (signal.SIGKILL, signal.SIGTERM):
        fresh_cove.stop(sig)
        fresh_cove.start()
        ec2 = fresh_cove.client("ec2")
        assert snapshot(ec2) == before
    # The default VPC is not recreated on restart.
    assert [v["VpcId"] for v in ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]] == [default_vpc]
    # And the next address allocation continues where it was.
    second = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]
    assert second["PrivateIpAddress"] != eni["PrivateIpAddress"]
