"""The wire layer from outside: SigV4 verification per protocol, STS, the AWS
CLI, and malformed input that must never crash the server or change state."""

import json
import os
import random
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import botocore.auth
import botocore.awsrequest
import botocore.credentials

from conftest import ACCESS_KEY, SECRET_KEY
from helpers import aws_error


def test_sts_get_caller_identity(cove_server):
    ident = cove_server.client("sts").get_caller_identity()
    assert ident["Account"] == "123456789012"
    assert ident["Arn"] == "arn:aws:iam::123456789012:root"


def test_wrong_secret_and_unknown_key(cove_server):
    bad_secret = cove_server.client("ec2", secret_key="not-the-secret")
    msg = aws_error("SignatureDoesNotMatch", bad_secret.describe_vpcs)
    assert msg.startswith("The request signature we calculated does not match the signature you provided.")
    unknown = cove_server.client("ec2", access_key="AKIAUNKNOWNKEY000000")
    assert aws_error("AuthFailure", unknown.describe_vpcs) == "AWS was not able to validate the provided access credentials"
    aws_error("SignatureDoesNotMatch", cove_server.client("sts", secret_key="nope").get_caller_identity)
    msg = aws_error("InvalidClientTokenId", cove_server.client("sts", access_key="AKIAUNKNOWNKEY000000").get_caller_identity)
    assert msg == "The security token included in the request is invalid."
    # The server log names the pairs it does accept.
    lines = [x for x in open(cove_server.log_path) if "unknown access key" in x and "AKIAUNKNOWNKEY000000" in x]
    assert lines and "AKIAIOSFODNN7EXAMPLE" in lines[-1], lines[-1:]


def test_the_local_test_pair_is_accepted_and_still_signed(cove_server):
    assert cove_server.client("sts", access_key="test", secret_key="test").get_caller_identity()["Account"]
    assert aws_error("SignatureDoesNotMatch",
                     cove_server.client("sts", access_key="test", secret_key="wrong").get_caller_identity)


def signed(endpoint, body, service="ec2", region="us-east-1", secret=SECRET_KEY, headers=None):
    """A raw SigV4-signed POST, for requests boto3 would refuse to build."""
    req = botocore.awsrequest.AWSRequest(method="POST", url=endpoint + "/", data=body,
                                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", **(headers or {})})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ACCESS_KEY, secret), service, region).add_auth(req)
    return send(req.url, req.body, dict(req.headers.items()))


def send(url, body, headers):
    data = body if isinstance(body, bytes) else (body or "").encode()
    r = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def code_of(xml):
    start = xml.find("<Code>")
    return xml[start + 6: xml.find("</Code>")] if start >= 0 else None


def test_raw_protocol_errors(cove_server):
    ep = cove_server.endpoint
    status, body = send(ep + "/", "Action=DescribeVpcs&Version=2016-11-15", {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 401 and code_of(body) == "MissingParameter" and "<RequestID>" in body
    status, body = send(ep + "/", "Action=DescribeVpcs", {"Content-Type": "application/x-www-form-urlencoded",
                                                          "Authorization": "AWS4-HMAC-SHA256 garbage"})
    assert status in (400, 401, 403) and code_of(body)
    cases = {
        "Action=LaunchRocket&Version=2016-11-15": "InvalidAction",
        "Version=2016-11-15": "MissingParameter",
        "Action=DescribeVpcs&Version=2016-11-15&MaxResults=lots": "InvalidParameterValue",
        "Action=DescribeVpcs&Version=2016-11-15&Colour=blue": "UnknownParameter",
        "Action=CreateSubnet&Version=2016-11-15&CidrBlock=10.0.0.0/24": "MissingParameter",
        "Action=DescribeVpcs&Version=2016-11-15&DryRun=maybe": "InvalidParameterValue",
        "Action=DescribeVpcs&Version=2016-11-15&Filter.1.Name=%zz&Filter.1.Value.1=x": "InvalidParameterValue",
        "Action=DescribeVpcAttribute&Version=2016-11-15&VpcId=vpc-1&Attribute=colour": "InvalidParameterValue",
    }
    for body, code in cases.items():
        status, text = signed(ep, body)
        assert status == 400 and code_of(text) == code, (body, status, text)
    status, text = signed(ep, "Action=GetCallerIdentity&Version=2011-06-15&Extra=1", service="sts")
    assert status == 400 and "<ErrorResponse" in text


def test_clock_skew_is_refused(cove_server, monkeypatch):
    """A request signed 15+ minutes away from the server's clock is refused."""
    import datetime
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: datetime.datetime(2020, 1, 1))
    status, body = signed(cove_server.endpoint, "Action=DescribeVpcs&Version=2016-11-15")
    assert status == 400 and code_of(body) == "RequestExpired", body
    status, body = signed(cove_server.endpoint, "Action=GetCallerIdentity&Version=2011-06-15", service="sts")
    assert status == 403 and code_of(body) == "SignatureDoesNotMatch" and "Signature expired" in body, body


def test_a_body_swapped_under_a_signed_hash_is_refused(cove_server, ec2):
    """The server hashes the body itself: a declared x-amz-content-sha256
    does not vouch for a different body."""
    import hashlib
    good = "Action=CreateVpc&Version=2016-11-15&CidrBlock=10.77.0.0/16"
    declared = {"x-amz-content-sha256": hashlib.sha256(good.encode()).hexdigest()}
    req = botocore.awsrequest.AWSRequest(method="POST", url=cove_server.endpoint + "/", data=good, headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8", **declared})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY), "ec2", "us-east-1").add_auth(req)
    headers = dict(req.headers.items())
    swapped = "Action=CreateVpc&Version=2016-11-15&CidrBlock=10.66.0.0/16"
    status, body = send(req.url, swapped, headers)
    assert status == 403 and code_of(body) == "SignatureDoesNotMatch", body
    cidrs = [v["CidrBlock"] for v in ec2.describe_vpcs()["Vpcs"]]
    assert "10.66.0.0/16" not in cidrs
    # The same signed request with its own body is accepted.
    status, body = send(req.url, good, headers)
    assert status == 200, body
    vpc = body[body.find("<vpcId>") + 7: body.find("</vpcId>")]
    ec2.delete_vpc(VpcId=vpc)


def test_presigned_urls_expire_when_they_say(cove_server, monkeypatch):
    """X-Amz-Expires decides, not the 15-minute clock skew: a URL signed an
    hour ago for two hours works, one signed for a second has expired."""
    import datetime

    def presign(service, params, expires, at=None):
        if at is not None:
            monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: at)
        url = cove_server.endpoint + "/?" + urllib.parse.urlencode(params)
        req = botocore.awsrequest.AWSRequest(method="GET", url=url)
        botocore.auth.SigV4QueryAuth(botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY), service,
                                     "us-east-1", expires=expires).add_auth(req)
        monkeypatch.undo()
        try:
            with urllib.request.urlopen(req.url, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    ec2 = {"Action": "DescribeVpcs", "Version": "2016-11-15"}
    sts = {"Action": "GetCallerIdentity", "Version": "2011-06-15"}
    an_hour_ago = datetime.datetime.utcnow() - datetime.timedelta(hours=1)
    assert presign("ec2", ec2, 7200, an_hour_ago)[0] == 200
    assert presign("sts", sts, 7200, an_hour_ago)[0] == 200
    short = presign("ec2", ec2, 1, datetime.datetime.utcnow() - datetime.timedelta(seconds=5))
    assert short[0] == 400 and code_of(short[1]) == "RequestExpired", short
    status, body = presign("sts", sts, 1, datetime.datetime.utcnow() - datetime.timedelta(seconds=5))
    assert status == 403 and "Request has expired" in body, body


def test_sigv2_requests_must_be_dated_within_fifteen_minutes(cove_server):
    """S3 still takes SigV2 (botocore's HmacV1Auth signs it); a captured
    request replayed 400 days later, or one without a date, is refused."""
    import email.utils
    import time
    s3 = cove_server.client("s3")
    bucket = "sigv2-" + os.urandom(4).hex()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"v2")
    url = f"{cove_server.endpoint}/{bucket}/k"

    class SignedAt(botocore.auth.HmacV1Auth):
        """botocore's SigV2 signer, dated when the test says (it dates now)."""
        def __init__(self, date):
            super().__init__(botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY))
            self.date = date

        def _get_date(self):
            return self.date or email.utils.formatdate(usegmt=True)

    def get(date):
        req = botocore.awsrequest.AWSRequest(method="GET", url=url)
        SignedAt(date).add_auth(req)
        if not date:
            del req.headers["Date"]
        r = urllib.request.Request(req.url, headers=dict(req.headers.items()), method="GET")
        try:
            with urllib.request.urlopen(r, timeout=10) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    assert get(email.utils.formatdate(usegmt=True)) == (200, "v2")
    old = email.utils.formatdate(time.time() - 400 * 86400, usegmt=True)
    status, body = get(old)
    assert status == 403 and code_of(body) == "RequestTimeTooSkewed", body
    assert f"<RequestTime>{old}</RequestTime>" in body and "<MaxAllowedSkewMilliseconds>900000<" in body, body
    status, body = get(None)
    assert status == 403 and code_of(body) == "AccessDenied", body
    assert "AWS authentication requires a valid Date or x-amz-date header" in body, body


def test_oversized_body_is_refused(cove_server):
    """A body over the limit is refused without being read: the client sees
    413, or a reset when the server closes before the upload ends. Either way
    the server stays up and answers the next request."""
    try:
        status, _ = send(cove_server.endpoint + "/", b"A" * (17 * 1024 * 1024), {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 413
    except (ConnectionError, urllib.error.URLError):
        pass
    assert cove_server.alive()
    assert cove_server.client("sts").get_caller_identity()["Account"] == "123456789012"


def test_fuzzed_signed_requests_never_crash_or_change_state(cove_server, ec2):
    """Seeded mutations of valid requests: every answer is a well-formed AWS
    error or success, never a 5xx, and nothing changes."""
    before = json.dumps([ec2.describe_vpcs()["Vpcs"], ec2.describe_subnets()["Subnets"], ec2.describe_security_groups()["SecurityGroups"]], sort_keys=True)
    rng = random.Random(20261122)
    bases = [
        "Action=DeleteVpc&Version=2016-11-15&VpcId=vpc-00000000000000001",
        "Action=CreateSubnet&Version=2016-11-15&VpcId=vpc-1&CidrBlock=10.0.0.0/24",
        "Action=AuthorizeSecurityGroupIngress&Version=2016-11-15&GroupId=sg-1&IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=1",
        "Action=DescribeVpcs&Version=2016-11-15&Filter.1.Name=vpc-id&Filter.1.Value.1=x&MaxResults=5",
        "Action=CreateNetworkAclEntry&Version=2016-11-15&NetworkAclId=acl-1&RuleNumber=5&Protocol=-1&RuleAction=allow&Egress=true&CidrBlock=0.0.0.0/0",
    ]
    junk = ["", "-1", "99999999999999999999999", "%00", "\u00e9\u00e8", "a" * 3000, "true", "1.5", "..", "[]", "<x>"]
    for i in range(300):
        params = urllib.parse.parse_qsl(rng.choice(bases), keep_blank_values=True)
        for _ in range(rng.randint(1, 3)):
            k = rng.randrange(len(params))
            choice = rng.random()
            if choice < 0.4 and params[k][0] != "Action":
                params[k] = (params[k][0], rng.choice(junk))
            elif choice < 0.6:
                params.append((params[k][0] + "." + str(rng.randint(0, 3)), rng.choice(junk)))
            elif choice < 0.8 and params[k][0] != "Action":
                params.pop(k)
            else:
                params[k] = (params[k][0] + rng.choice([".1", ".member.1", ".", ""]), params[k][1])
        status, text = signed(cove_server.endpoint, urllib.parse.urlencode(params))
        assert status < 500, (params, status, text)
        assert ("<Response><Errors>" in text and "<RequestID>" in text) or "Response xmlns" in text, (params, text)
    assert cove_server.alive()
    after = json.dumps([ec2.describe_vpcs()["Vpcs"], ec2.describe_subnets()["Subnets"], ec2.describe_security_groups()["SecurityGroups"]], sort_keys=True)
    assert before == after


def test_aws_cli(cove_server):
    aws = shutil.which("aws", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    assert aws, "the AWS CLI must be installed (tests/requirements.txt)"
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1")
    run = lambda *a: json.loads(subprocess.run([aws, "--endpoint-url", cove_server.endpoint, "--output", "json", *a],
                                               env=env, check=True, capture_output=True, text=True).stdout or "{}")
    vpc = run("ec2", "create-vpc", "--cidr-block", "10.20.0.0/16",
              "--tag-specifications", "ResourceType=vpc,Tags=[{Key=Name,Value=cli}]")["Vpc"]
    subnet = run("ec2", "create-subnet", "--vpc-id", vpc["VpcId"], "--cidr-block", "10.20.1.0/24")["Subnet"]
    names = run("ec2", "describe-vpcs", "--filters", "Name=tag:Name,Values=cli")["Vpcs"]
    assert [v["VpcId"] for v in names] == [vpc["VpcId"]]
    assert run("sts", "get-caller-identity")["Account"] == "123456789012"
    failed = subprocess.run([aws, "--endpoint-url", cove_server.endpoint, "ec2", "delete-vpc", "--vpc-id", vpc["VpcId"]],
                            env=env, capture_output=True, text=True)
    assert failed.returncode != 0 and "DependencyViolation" in failed.stderr
    run("ec2", "delete-subnet", "--subnet-id", subnet["SubnetId"])
    run("ec2", "delete-vpc", "--vpc-id", vpc["VpcId"])


def test_control_characters_are_refused_and_answers_stay_well_formed(cove_server, ec2):
    """XML cannot carry most control characters: such a value is refused at
    the wire, so nothing stored can make a later answer malformed."""
    from helpers import aws_error
    vpc = ec2.create_vpc(CidrBlock="10.78.0.0/16")["Vpc"]["VpcId"]
    try:
        msg = aws_error("InvalidParameterValue", ec2.create_tags, Resources=[vpc],
                        Tags=[{"Key": "bad\x01key", "Value": "v"}])
        assert msg == "The value of Tag.1.Key contains a control character, which is not allowed."
        assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [vpc]}])["Tags"] == []
        aws_error("InvalidParameterValue", ec2.describe_vpcs, VpcIds=["vpc-\x02"])
        aws_error("ValidationError", cove_server.client("iam").get_role, RoleName="r\x03")
        # Tabs, line feeds and carriage returns are XML and stay as they were.
        ec2.create_tags(Resources=[vpc], Tags=[{"Key": "note", "Value": "a\tb\r\nc"}])
        tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [vpc]}])["Tags"]
        assert tags[0]["Value"] == "a\tb\r\nc", tags
    finally:
        ec2.delete_vpc(VpcId=vpc)
