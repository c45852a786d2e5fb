"""VPC DNS and interface endpoints with real packets: a process attached to an
ENI resolves names through the VPC resolver (base+2), and with an STS
interface endpoint whose private DNS is on, boto3 inside the private subnet
calls `sts.us-east-1.amazonaws.com`'s regular name (over HTTP on port 80
here; test_tls.py does the same over HTTPS on 443) and reaches STS through
the endpoint's ENI, under the endpoint's security group. Needs root."""

import os
import sys

import pytest

from test_dataplane import eventually

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the data plane needs root")

RESOLVE = "import socket,sys\ntry:\n print(' '.join(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1],80,socket.AF_INET)})))\n" \
          "except OSError as e:\n print('error',e)\n"

CALLER = """
import sys, boto3, botocore.config
sts = boto3.client("sts", endpoint_url="http://sts.us-east-1.amazonaws.com", region_name="us-east-1",
                   aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                   config=botocore.config.Config(connect_timeout=1, read_timeout=3, retries={"max_attempts": 1}))
try:
    print(sts.get_caller_identity()["Account"])
except Exception as e:
    print("failed", type(e).__name__, e)
"""

WRONG_SERVICE = """
import boto3, botocore.config
logs = boto3.client("logs", endpoint_url="http://sts.us-east-1.amazonaws.com", region_name="us-east-1",
                    aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                    config=botocore.config.Config(connect_timeout=1, read_timeout=3, retries={"max_attempts": 1}))
try:
    logs.describe_log_groups()
    print("served")
except Exception as e:
    print("refused", e)
"""


def resolve(cove, eni, name):
    return cove.exec(eni, sys.executable, "-c", RESOLVE, name).stdout.strip()


def test_resolver_answers_service_and_host_names(cove_server, ec2, vpc):
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    eni = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]
    eni_id = eni["NetworkInterfaceId"]
    assert eventually(lambda: cove_server.exec(eni_id, "true").returncode == 0)
    # The ENI's resolv.conf names the VPC resolver at base+2.
    conf = cove_server.exec(eni_id, "cat", "/etc/resolv.conf").stdout
    assert "nameserver 10.0.0.2" in conf and "search ec2.internal" in conf
    assert eventually(lambda: resolve(cove_server, eni_id, "s3.us-east-1.amazonaws.com") == "192.0.2.20")
    assert resolve(cove_server, eni_id, "my-bucket.s3.us-east-1.amazonaws.com") == "192.0.2.20"
    assert resolve(cove_server, eni_id, "sts.us-east-1.amazonaws.com") == "192.0.2.11"
    # Public names resolve, as AWS's resolver resolves them, to the simulated
    # web (reached only through a gateway); reserved names do not.
    assert resolve(cove_server, eni_id, "example.com") == "203.0.113.11"
    assert resolve(cove_server, eni_id, "db.invalid").startswith("error")
    # Private host names need enableDnsHostnames.
    host = f"ip-{eni['PrivateIpAddress'].replace('.', '-')}.ec2.internal"
    assert resolve(cove_server, eni_id, host).startswith("error")
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    assert resolve(cove_server, eni_id, host) == eni["PrivateIpAddress"]
    # With DNS support off, the resolver stops answering.
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": False})
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": False})
    assert eventually(lambda: resolve(cove_server, eni_id, "sts.us-east-1.amazonaws.com").startswith("error"))
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
    assert eventually(lambda: resolve(cove_server, eni_id, "sts.us-east-1.amazonaws.com") == "192.0.2.11")


def test_interface_endpoint_with_private_dns_is_the_way_to_sts(cove_server, ec2, vpc):
    # As on AWS, private DNS needs both DNS attributes on.
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    job_sg = ec2.create_security_group(GroupName="job", Description="job", VpcId=vpc)["GroupId"]
    job = ec2.create_network_interface(SubnetId=subnet, Groups=[job_sg])["NetworkInterface"]["NetworkInterfaceId"]
    assert eventually(lambda: cove_server.exec(job, "true").returncode == 0)
    call = lambda: cove_server.exec(job, sys.executable, "-c", CALLER, timeout=30).stdout.strip()

    # A private subnet: STS's public address is out of reach.
    assert call().startswith("failed")

    # An interface endpoint whose group admits HTTPS/HTTP from the subnet.
    ep_sg = ec2.create_security_group(GroupName="endpoint", Description="endpoint", VpcId=vpc)["GroupId"]
    rule = ec2.authorize_security_group_ingress(GroupId=ep_sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "10.0.1.0/24"}]}])
    ep = ec2.create_vpc_endpoint(VpcId=vpc, VpcEndpointType="Interface", ServiceName="com.amazonaws.us-east-1.sts",
                                 SubnetIds=[subnet], SecurityGroupIds=[ep_sg])["VpcEndpoint"]
    assert ep["PrivateDnsEnabled"] is True
    ep_eni = ec2.describe_network_interfaces(NetworkInterfaceIds=ep["NetworkInterfaceIds"])["NetworkInterfaces"][0]
    # Private DNS: the service's own name now resolves to the endpoint's ENI.
    assert eventually(lambda: resolve(cove_server, job, "sts.us-east-1.amazonaws.com") == ep_eni["PrivateIpAddress"])
    regional = [d["DnsName"] for d in ep["DnsEntries"] if d["DnsName"].startswith("vpce-")][0]
    assert resolve(cove_server, job, regional) == ep_eni["PrivateIpAddress"]
    assert eventually(lambda: call() == "123456789012")

    # The endpoint serves STS only: a request signed for another service is refused.
    assert cove_server.exec(job, sys.executable, "-c", WRONG_SERVICE, timeout=30).stdout.startswith("refused")

    # The endpoint's security group decides who may use it.
    ec2.revoke_security_group_ingress(GroupId=ep_sg, SecurityGroupRuleIds=[rule["SecurityGroupRules"][0]["SecurityGroupRuleId"]])
    assert eventually(lambda: call().startswith("failed"), timeout=15)
    ec2.authorize_security_group_ingress(GroupId=ep_sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "UserIdGroupPairs": [{"GroupId": job_sg}]}])
    assert eventually(lambda: call() == "123456789012", timeout=15)

    # Turning private DNS off gives the public name back (and so no STS).
    ec2.modify_vpc_endpoint(VpcEndpointId=ep["VpcEndpointId"], PrivateDnsEnabled=False)
    assert eventually(lambda: resolve(cove_server, job, "sts.us-east-1.amazonaws.com") == "192.0.2.11")
    assert call().startswith("failed")
    ec2.delete_vpc_endpoints(VpcEndpointIds=[ep["VpcEndpointId"]])
