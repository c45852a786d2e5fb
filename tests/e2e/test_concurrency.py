"""Concurrent requests are safe: racing creates never break AWS's invariants."""

from concurrent.futures import ThreadPoolExecutor

import botocore.exceptions


def test_racing_subnets_and_enis_keep_invariants(cove_server, vpc):
    clients = [cove_server.client("ec2") for _ in range(16)]

    def create_subnet(i):
        try:
            return clients[i % 16].create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i % 4}.0/24")["Subnet"]["SubnetId"]
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "InvalidSubnet.Conflict"
            return None

    with ThreadPoolExecutor(16) as pool:
        made = [s for s in pool.map(create_subnet, range(32)) if s]
    # 32 racing requests for 4 CIDRs: exactly one winner per CIDR.
    assert len(made) == 4
    subnets = clients[0].describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    assert sorted(s["CidrBlock"] for s in subnets) == [f"10.0.{i}.0/24" for i in range(4)]

    target = made[0]

    def create_eni(i):
        return clients[i % 16].create_network_interface(SubnetId=target)["NetworkInterface"]["PrivateIpAddress"]

    with ThreadPoolExecutor(16) as pool:
        ips = list(pool.map(create_eni, range(48)))
    # Every racing allocation got its own address.
    assert len(set(ips)) == 48
    assert clients[0].describe_subnets(SubnetIds=[target])["Subnets"][0]["AvailableIpAddressCount"] == 251 - 48
