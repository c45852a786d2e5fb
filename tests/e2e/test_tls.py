"""HTTPS inside the VPC, as on AWS: Cove serves every API on 443 at the
services' public addresses and on interface-endpoint ENIs, with a
certificate from its own CA, and `cove exec --eni` trusts that CA the way a
job does (the bundle over /etc/ssl/certs/ca-certificates.crt, and
AWS_CA_BUNDLE, REQUESTS_CA_BUNDLE, SSL_CERT_FILE). Python's ssl module and
boto3 with its default endpoints verify the chain and the host name. Needs
root."""

import json
import os
import shutil
import stat
import subprocess
import sys
import uuid

import boto3
import botocore.config
import pytest

from conftest import ACCESS_KEY, BINARY, REGION, SECRET_KEY
from test_dataplane import eventually

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the data plane needs root")

# One HTTPS GET with Python's default context (system trust, host name
# checked); prints what came back as JSON.
GET = r"""
import json, os, ssl, sys, urllib.error, urllib.request
out = {"env": {k: os.environ.get(k) for k in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")}}
ctx = ssl.create_default_context()
assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2, context=ctx) as r:
        out.update(status=r.status, body=r.read().decode(errors="replace"))
except urllib.error.HTTPError as e:
    out.update(status=e.code, body=e.read().decode(errors="replace"))
except Exception as e:
    out.update(error=f"{type(e).__name__}: {e}")
print(json.dumps(out))
"""

# boto3 with no endpoint_url: https://<service>.<region>.amazonaws.com, as in a job.
BOTO = r"""
import sys, boto3, botocore.config
cfg = botocore.config.Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1})
kw = dict(region_name="us-east-1", aws_access_key_id=sys.argv[1], aws_secret_access_key=sys.argv[2], config=cfg)
try:
    if sys.argv[3] == "s3":
        print(boto3.client("s3", **kw).get_object(Bucket=sys.argv[4], Key=sys.argv[5])["Body"].read().decode())
    else:
        c = boto3.client("sts", **kw)
        print(c.meta.endpoint_url, c.get_caller_identity()["Account"])
except Exception as e:
    print("failed", type(e).__name__, e)
"""


def get(cove, eni, url):
    out = cove.exec(eni, sys.executable, "-c", GET, url, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def boto(cove, eni, *args):
    return cove.exec(eni, sys.executable, "-c", BOTO, ACCESS_KEY, SECRET_KEY, *args, timeout=30).stdout.strip()


def presigner(addressing_style):
    """A client that only signs URLs for S3's real HTTPS name (no request is sent)."""
    return boto3.client("s3", endpoint_url=f"https://s3.{REGION}.amazonaws.com", region_name=REGION,
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        config=botocore.config.Config(signature_version="s3v4",
                                                      s3={"addressing_style": addressing_style}))


@pytest.fixture
def private_eni(ec2, vpc):
    """An ENI in a private subnet with its own route table (local route only)."""
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.associate_route_table(RouteTableId=rt, SubnetId=subnet)
    sg = ec2.create_security_group(GroupName="job", Description="job", VpcId=vpc)["GroupId"]
    eni = ec2.create_network_interface(SubnetId=subnet, Groups=[sg])["NetworkInterface"]["NetworkInterfaceId"]
    return {"vpc": vpc, "subnet": subnet, "rt": rt, "sg": sg, "eni": eni}


def test_https_to_s3_verifies_coves_certificate_through_the_gateway_endpoint(cove_server, ec2, private_eni):
    s3 = cove_server.client("s3")
    bucket = f"tls-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="hello.txt", Body=b"hello over TLS")
    eni = private_eni["eni"]
    assert eventually(lambda: cove_server.exec(eni, "true").returncode == 0)
    base = f"https://s3.{REGION}.amazonaws.com/"

    # No endpoint, no NAT: S3's address is out of reach, over TLS as over anything.
    out = get(cove_server, eni, base)
    assert "error" in out and "status" not in out, out
    # The process on the ENI sees the bundle where jobs see it.
    assert set(out["env"].values()) == {"/etc/ssl/certs/ca-certificates.crt"}
    bundle = cove_server.exec(eni, "cat", "/etc/ssl/certs/ca-certificates.crt").stdout
    ca = open(os.path.join(cove_server.data_dir, "ca", "ca.pem")).read()
    web_ca = open(os.path.join(cove_server.data_dir, "ca", "web-ca.pem")).read()
    assert bundle.rstrip().endswith(ca.rstrip() + "\n# Cove Simulated Web CA\n" + web_ca.rstrip())

    ep = ec2.create_vpc_endpoint(VpcId=private_eni["vpc"], ServiceName=f"com.amazonaws.{REGION}.s3",
                                 RouteTableIds=[private_eni["rt"]])["VpcEndpoint"]["VpcEndpointId"]
    # Through the endpoint the handshake verifies (chain and host name) and S3
    # answers: an anonymous listing is refused, as on AWS.
    assert eventually(lambda: "status" in get(cove_server, eni, base), timeout=15)
    out = get(cove_server, eni, base)
    assert out["status"] == 403 and "<Code>AccessDenied</Code>" in out["body"], out

    # Presigned URLs for S3's real names, path style and virtual-hosted
    # (`<bucket>.s3.<region>.amazonaws.com`, the certificate's wildcard).
    for style in ("path", "virtual"):
        url = presigner(style).generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "hello.txt"})
        assert url.startswith("https://"), url
        out = get(cove_server, eni, url)
        assert (out.get("status"), out.get("body")) == (200, "hello over TLS"), (style, out)

    # The host name is checked: the same server by its address is not S3's name.
    out = get(cove_server, eni, "https://192.0.2.20/")
    assert "CERTIFICATE_VERIFY_FAILED" in out.get("error", ""), out

    # curl, with nothing but its defaults (the system bundle).
    if shutil.which("curl"):
        out = cove_server.exec(eni, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", base)
        assert out.stdout == "403", (out.stdout, out.stderr)

    # boto3 with its default endpoint (https://s3.us-east-1.amazonaws.com), unchanged.
    assert boto(cove_server, eni, "s3", bucket, "hello.txt") == "hello over TLS"

    # Plain HTTP on 80 is still served.
    out = get(cove_server, eni, f"http://s3.{REGION}.amazonaws.com/")
    assert out.get("status") == 403, out

    # aws:SecureTransport tells them apart: a bucket that refuses plain HTTP.
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}))
    url = presigner("path").generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "hello.txt"})
    assert get(cove_server, eni, url).get("status") == 200
    out = get(cove_server, eni, "http://" + url[len("https://"):])
    assert out.get("status") == 403 and "AccessDenied" in out.get("body", ""), out
    s3.delete_bucket_policy(Bucket=bucket)

    # Without the endpoint's route, S3 is cut off again.
    ec2.modify_vpc_endpoint(VpcEndpointId=ep, RemoveRouteTableIds=[private_eni["rt"]])
    assert eventually(lambda: "error" in get(cove_server, eni, base), timeout=15)


def test_https_on_an_interface_endpoint(cove_server, ec2, vpc):
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    job_sg = ec2.create_security_group(GroupName="job", Description="job", VpcId=vpc)["GroupId"]
    job = ec2.create_network_interface(SubnetId=subnet, Groups=[job_sg])["NetworkInterface"]["NetworkInterfaceId"]
    assert eventually(lambda: cove_server.exec(job, "true").returncode == 0)
    # The endpoint's group admits HTTPS only.
    ep_sg = ec2.create_security_group(GroupName="endpoint", Description="endpoint", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=ep_sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.0.1.0/24"}]}])
    ep = ec2.create_vpc_endpoint(VpcId=vpc, VpcEndpointType="Interface", ServiceName=f"com.amazonaws.{REGION}.sts",
                                 SubnetIds=[subnet], SecurityGroupIds=[ep_sg])["VpcEndpoint"]
    ep_ip = ec2.describe_network_interfaces(NetworkInterfaceIds=ep["NetworkInterfaceIds"])[
        "NetworkInterfaces"][0]["PrivateIpAddress"]

    # boto3's default STS endpoint resolves to the endpoint's ENI (private
    # DNS) and verifies the certificate the ENI's listener presents.
    expected = f"https://sts.{REGION}.amazonaws.com 123456789012"
    assert eventually(lambda: boto(cove_server, job, "sts") == expected, timeout=20)
    # HTTP/2 (ALPN), where the host is `:authority`: SigV4 still verifies.
    if shutil.which("curl") and "HTTP2" in subprocess.run(["curl", "-V"], capture_output=True, text=True).stdout:
        out = cove_server.exec(job, "curl", "-sS", "--http2", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                               "--aws-sigv4", f"aws:amz:{REGION}:sts", "--user", f"{ACCESS_KEY}:{SECRET_KEY}",
                               "-d", "Action=GetCallerIdentity&Version=2011-06-15", f"https://sts.{REGION}.amazonaws.com/")
        assert out.stdout == "200 2", (out.stdout, out.stderr)
    # The endpoint-specific names are covered too (`*.sts.<region>.vpce.amazonaws.com`).
    for entry in ep["DnsEntries"]:
        out = get(cove_server, job, f"https://{entry['DnsName']}/")
        assert "status" in out, (entry["DnsName"], out)
    # Port 80 on the endpoint is closed by its group: only 443 was allowed.
    out = get(cove_server, job, f"http://{ep_ip}/")
    assert "error" in out, out
    ec2.delete_vpc_endpoints(VpcEndpointIds=[ep["VpcEndpointId"]])


def test_cove_ca_prints_the_ca_and_the_key_is_private(cove_server):
    ca_dir = os.path.join(cove_server.data_dir, "ca")
    out = subprocess.run([BINARY, "ca", "--data-dir", cove_server.data_dir],
                         capture_output=True, text=True, check=True)
    assert out.stdout == open(os.path.join(ca_dir, "ca.pem")).read()
    assert out.stdout.startswith("-----BEGIN CERTIFICATE-----")
    assert stat.S_IMODE(os.stat(os.path.join(ca_dir, "ca.key")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(ca_dir, f"{REGION}.key")).st_mode) == 0o600
    missing = subprocess.run([BINARY, "ca", "--data-dir", os.path.join(cove_server.data_dir, "nowhere")],
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "cove serve" in missing.stderr


def test_the_ca_survives_a_restart(fresh_cove):
    ca = os.path.join(fresh_cove.data_dir, "ca", "ca.pem")
    cert = os.path.join(fresh_cove.data_dir, "ca", f"{REGION}.pem")
    before = (open(ca).read(), open(cert).read())
    fresh_cove.stop()
    fresh_cove.start()
    assert (open(ca).read(), open(cert).read()) == before
