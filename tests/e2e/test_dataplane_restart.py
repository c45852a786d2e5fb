"""Restart safety and leaks, with real kernel state: a server killed with
SIGKILL while ENIs carry traffic leaves enforcement in place; the restarted
server adopts every object and keeps obeying the API; and once everything
is deleted, the namespaces, links, resolver files and nftables tables are
exactly what they were before. Needs root."""

import os
import signal
import subprocess
import sys

import pytest

from conftest import nat_gateway, teardown_vpc
from test_dataplane import SERVER, eventually, reaches

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the data plane needs root")


def kernel_state(instance_prefix):
    """Namespaces, per-namespace links and nft tables of one Cove instance, plus host links and /etc/netns."""
    names = sorted(l.split()[0] for l in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
                   if l.startswith(instance_prefix))
    state = {"netns": names}
    for ns in names:
        links = subprocess.run(["ip", "-n", ns, "-o", "link", "show"], capture_output=True, text=True).stdout
        state[f"links {ns}"] = sorted(l.split(": ")[1].split("@")[0] for l in links.splitlines())
        tables = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "tables"], capture_output=True, text=True).stdout
        state[f"tables {ns}"] = sorted(tables.splitlines())
    host = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    state["host cv links"] = sorted(l.split(": ")[1] for l in host.splitlines() if l.split(": ")[1].startswith("cv"))
    etc = "/etc/netns"
    state["etc/netns"] = sorted(d for d in (os.listdir(etc) if os.path.isdir(etc) else []) if d.startswith(instance_prefix))
    return state


def test_killed_server_restarts_adopts_and_leaks_nothing(fresh_cove):
    cove = fresh_cove
    ec2 = cove.client("ec2")
    # The data plane of an idle server (region network, default VPC's router).
    default_vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    probe = ec2.create_network_interface(SubnetId=ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [default_vpc]}])["Subnets"][0]["SubnetId"])["NetworkInterface"]["NetworkInterfaceId"]
    netns_of_probe = lambda: [l.split()[0] for l in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
                              if l.split()[0].endswith("-eni-" + probe.split("-")[1][-12:])]
    assert eventually(lambda: netns_of_probe())
    prefix = netns_of_probe()[0].split("-eni-")[0] + "-"
    ec2.delete_network_interface(NetworkInterfaceId=probe)
    assert eventually(lambda: not netns_of_probe())
    before = kernel_state(prefix)
    assert any(n.endswith("-region") for n in before["netns"])

    # A VPC with a bit of everything: two subnets, a public route table with an
    # internet gateway, a NAT gateway, S3 gateway and STS interface endpoints,
    # a flow log, and a web server behind a security group.
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    a = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    b = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24")["Subnet"]["SubnetId"]
    nat, eip = nat_gateway(ec2, vpc, a)
    private_rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.associate_route_table(RouteTableId=private_rt, SubnetId=b)
    ec2.create_route(RouteTableId=private_rt, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.us-east-1.s3", RouteTableIds=[private_rt])
    ec2.create_vpc_endpoint(VpcId=vpc, VpcEndpointType="Interface", ServiceName="com.amazonaws.us-east-1.sts", SubnetIds=[b])
    ec2.create_flow_logs(ResourceIds=[vpc], ResourceType="VPC", TrafficType="ALL", LogGroupName="/restart",
                         DeliverLogsPermissionArn="arn:aws:iam::123456789012:role/r")
    sg = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    rule = {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "IpRanges": [{"CidrIp": "10.0.2.0/24"}]}
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[rule])
    web = ec2.create_network_interface(SubnetId=a, Groups=[sg])["NetworkInterface"]
    client = ec2.create_network_interface(SubnetId=b)["NetworkInterface"]
    topo = {"web": web, "client": client}
    assert eventually(lambda: cove.exec(web["NetworkInterfaceId"], "true").returncode == 0)
    server = cove.spawn(web["NetworkInterfaceId"], sys.executable, "-c", SERVER, web["PrivateIpAddress"], "8080")
    try:
        assert server.stdout.readline().strip() == "ready"
        assert eventually(lambda: reaches(cove, topo))
        during = kernel_state(prefix)
        assert len(during["netns"]) > len(before["netns"])

        cove.stop(signal.SIGKILL)
        assert reaches(cove, topo), "enforcement continues while Cove is down"
        cove.start()
        # Adoption changes nothing that exists...
        assert eventually(lambda: kernel_state(prefix)["netns"] == during["netns"])
        assert reaches(cove, topo)
        # ...and the API still drives it.
        ec2 = cove.client("ec2")
        ec2.revoke_security_group_ingress(GroupId=sg, IpPermissions=[rule])
        assert eventually(lambda: not reaches(cove, topo))
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()

    for f in ec2.describe_flow_logs()["FlowLogs"]:
        ec2.delete_flow_logs(FlowLogIds=[f["FlowLogId"]])
    teardown_vpc(ec2, vpc)
    ec2.release_address(AllocationId=eip["AllocationId"])
    assert eventually(lambda: kernel_state(prefix) == before, timeout=15), (kernel_state(prefix), before)
