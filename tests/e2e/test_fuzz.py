"""A bounded fuzz run over HTTP: signed requests with random actions and
hostile parameters (control characters, huge and negative numbers, deep or
wrongly typed JSON, odd S3 paths) against a real server. Every answer must
be well-formed (XML or JSON as its protocol says), no request may break the
connection or get a 500, and the server's memory must stay bounded.

COVE_FUZZ_SECONDS sets the length (default 40); the seed is printed so a
failure can be replayed with COVE_FUZZ_SEED."""

import collections
import http.client
import json
import os
import random
import re
import time
import urllib.parse
import xml.etree.ElementTree as ET

import botocore.auth
import botocore.awsrequest
import botocore.credentials

from conftest import ACCESS_KEY, REGION, SECRET_KEY

CREDS = botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY)

QUERY = {
    "ec2": ("2016-11-15", ["DescribeVpcs", "CreateVpc", "CreateTags", "DescribeTags", "CreateSubnet",
                           "DescribeSubnets", "CreateSecurityGroup", "AuthorizeSecurityGroupIngress",
                           "DescribeSecurityGroupRules", "CreateRouteTable", "CreateRoute", "DescribeRegions",
                           "CreateNetworkAcl", "CreateNetworkAclEntry", "DescribeNetworkInterfaces",
                           "CreateVpcEndpoint", "DeleteVpc", "ModifyVpcAttribute", "CreateManagedPrefixList",
                           "ModifyManagedPrefixList", "GetManagedPrefixListEntries", "CreateDhcpOptions",
                           "AssociateDhcpOptions", "CreateVpcPeeringConnection", "AcceptVpcPeeringConnection",
                           "AssociateVpcCidrBlock", "ModifySecurityGroupRules", "NoSuchAction"]),
    "sts": ("2011-06-15", ["GetCallerIdentity", "AssumeRole", "GetSessionToken"]),
    "iam": ("2010-05-08", ["CreateRole", "GetRole", "ListRoles", "PutRolePolicy", "CreatePolicy",
                           "SimulatePrincipalPolicy", "AttachRolePolicy", "TagRole"]),
}
JSON = {
    "sagemaker": ("SageMaker", ["CreateTrainingJob", "DescribeTrainingJob", "ListTrainingJobs", "CreateModel",
                                "CreateEndpointConfig", "CreateEndpoint", "ListEndpoints", "CreateDomain",
                                "DescribeDomain", "CreateProcessingJob", "AddTags", "Search"]),
    "logs": ("Logs_20140328", ["CreateLogGroup", "PutLogEvents", "GetLogEvents", "FilterLogEvents",
                               "DescribeLogGroups", "PutRetentionPolicy", "TagResource"]),
}
PARAMS = ["VpcId", "CidrBlock", "MaxResults", "NextToken", "Filter.1.Name", "Filter.1.Value.1", "ResourceId.1",
          "Tag.1.Key", "Tag.1.Value", "GroupName", "Description", "RoleName", "AssumeRolePolicyDocument",
          "PolicyDocument", "RoleArn", "RoleSessionName", "DurationSeconds", "SubnetId", "Port",
          "IpPermissions.1.IpProtocol", "IpPermissions.1.FromPort", "RuleNumber", "DryRun", "RegionName.1",
          "PrefixListName", "MaxEntries", "AddressFamily", "Entry.1.Cidr", "CurrentVersion", "PrefixListId",
          "DhcpConfiguration.1.Key", "DhcpConfiguration.1.Value.1", "PeerVpcId", "VpcPeeringConnectionId",
          "SecurityGroupRule.1.SecurityGroupRuleId", "SecurityGroupRule.1.SecurityGroupRule.CidrIpv4"]
# Route 53's REST-XML: URI templates with their labels, and the elements its bodies hold.
EFS = [("POST", "/2015-02-01/file-systems"), ("GET", "/2015-02-01/file-systems"),
       ("DELETE", "/2015-02-01/file-systems/{}"), ("PUT", "/2015-02-01/file-systems/{}"),
       ("POST", "/2015-02-01/mount-targets"), ("GET", "/2015-02-01/mount-targets"),
       ("DELETE", "/2015-02-01/mount-targets/{}"), ("PUT", "/2015-02-01/mount-targets/{}/security-groups"),
       ("POST", "/2015-02-01/access-points"), ("GET", "/2015-02-01/access-points"),
       ("PUT", "/2015-02-01/file-systems/{}/policy"), ("GET", "/2015-02-01/file-systems/{}/policy"),
       ("POST", "/2015-02-01/resource-tags/{}"), ("DELETE", "/2015-02-01/resource-tags/{}"),
       ("GET", "/2015-02-01/tags/{}/"), ("PUT", "/2015-02-01/file-systems/{}/lifecycle-configuration")]
EFS_KEYS = ["CreationToken", "FileSystemId", "SubnetId", "SecurityGroups", "IpAddress", "ThroughputMode",
            "ProvisionedThroughputInMibps", "Policy", "Tags", "LifecyclePolicies", "ClientToken", "RootDirectory",
            "PosixUser", "Encrypted", "AvailabilityZoneName"]
ROUTE53 = [("POST", "/2013-04-01/hostedzone"), ("GET", "/2013-04-01/hostedzone"),
           ("GET", "/2013-04-01/hostedzone/{}"), ("DELETE", "/2013-04-01/hostedzone/{}"),
           ("POST", "/2013-04-01/hostedzone/{}/rrset/"), ("GET", "/2013-04-01/hostedzone/{}/rrset"),
           ("GET", "/2013-04-01/change/{}"), ("POST", "/2013-04-01/hostedzone/{}/associatevpc"),
           ("GET", "/2013-04-01/hostedzonesbyvpc"), ("PUT", "/2013-04-01/nothing/{}")]
XML_TAGS = ["Name", "CallerReference", "HostedZoneConfig", "PrivateZone", "VPC", "VPCId", "VPCRegion",
            "ChangeBatch", "Changes", "Change", "Action", "ResourceRecordSet", "Type", "TTL",
            "ResourceRecords", "ResourceRecord", "Value", "Comment"]
JSON_KEYS = ["TrainingJobName", "RoleArn", "AlgorithmSpecification", "ResourceConfig", "MaxResults", "NextToken",
             "logGroupName", "logStreamName", "logEvents", "limit", "filterPattern", "Tags", "ModelName",
             "EndpointName", "DomainName", "VpcConfig", "HyperParameters", "retentionInDays", "SearchExpression"]


def text(rng):
    pick = rng.random()
    if pick < 0.15:
        return "".join(chr(rng.randrange(0, 32)) for _ in range(rng.randrange(1, 8)))
    if pick < 0.3:
        return str(rng.choice([-1, 0, -(2**63), 2**63 - 1, 2**64, 10**30, 1e308]))
    if pick < 0.4:
        return "x" * rng.choice([1, 255, 256, 1024, 70000])
    if pick < 0.5:
        return rng.choice(["vpc-1", "10.0.0.0/16", "0.0.0.0/0", "::/0", "arn:aws:iam::123456789012:role/r",
                           "sg-", "subnet-zzz", "true", "false", "{}", "[]", "%zz", "\ud800"[0:0] + "é😀"])
    return "".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(0, 20)))


def value(rng, depth=0):
    pick = rng.random()
    if depth > 3 or pick < 0.35:
        return text(rng)
    if pick < 0.5:
        return rng.choice([None, True, False, -1, 0, 2**63, 1.5, -1e300])
    if pick < 0.75:
        return [value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {rng.choice(JSON_KEYS): value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def xml_body(rng, depth=0):
    """A Route 53 body: elements of its shapes nested at random, with hostile
    text, sometimes not XML at all."""
    if depth == 0 and rng.random() < 0.15:
        return text(rng).encode("utf-8", "surrogatepass")
    inner = "".join(
        f"<{tag}>{xml_body(rng, depth + 1).decode() if depth < 3 and rng.random() < 0.5 else escape(text(rng))}</{tag}>"
        for tag in (rng.choice(XML_TAGS) for _ in range(rng.randrange(0, 4))))
    if depth:
        return inner.encode()
    root = rng.choice(["CreateHostedZoneRequest", "ChangeResourceRecordSetsRequest", "AssociateVPCWithHostedZoneRequest"])
    return f'<?xml version="1.0"?><{root} xmlns="https://route53.amazonaws.com/doc/2013-04-01/">{inner}</{root}>'.encode(
        "utf-8", "surrogatepass")


def escape(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def signed(method, url, body, headers, service):
    req = botocore.awsrequest.AWSRequest(method=method, url=url, data=body, headers=headers)
    auth = botocore.auth.S3SigV4Auth if service == "s3" else botocore.auth.SigV4Auth
    auth(CREDS, service, REGION).add_auth(req)
    return dict(req.headers.items())


def one_request(rng, endpoint):
    kind = rng.random()
    if kind < 0.45:
        service = rng.choice(list(QUERY))
        version, actions = QUERY[service]
        params = {"Action": rng.choice(actions), "Version": version}
        for _ in range(rng.randrange(0, 6)):
            params[rng.choice(PARAMS)] = text(rng)
        body = urllib.parse.urlencode(params)
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        return service, "POST", "/", body.encode(), headers, "xml"
    if kind < 0.8:
        service = rng.choice(list(JSON))
        prefix, ops = JSON[service]
        doc = {rng.choice(JSON_KEYS): value(rng) for _ in range(rng.randrange(0, 6))}
        body = json.dumps(doc) if rng.random() < 0.9 else text(rng)
        headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"{prefix}.{rng.choice(ops)}"}
        return service, "POST", "/", body.encode("utf-8", "surrogatepass"), headers, "json"
    if kind < 0.84:
        method, template = rng.choice(EFS)
        label = urllib.parse.quote(rng.choice([text(rng), "fs-0123456789abcdef0", "fsmt-1", ""]), safe="")
        query = rng.choice(["", "?MaxItems=-1", "?MaxItems=x", "?FileSystemId=fs-1", "?Marker=%zz",
                            "?tagKeys=a&tagKeys=" + urllib.parse.quote(text(rng))])
        doc = {rng.choice(EFS_KEYS): value(rng) for _ in range(rng.randrange(0, 6))}
        body = (json.dumps(doc) if rng.random() < 0.9 else text(rng)).encode("utf-8", "surrogatepass")
        return "elasticfilesystem", method, template.format(label) + query, body, \
            {"Content-Type": "application/json"}, "json"
    if kind < 0.88:
        method, template = rng.choice(ROUTE53)
        label = urllib.parse.quote(rng.choice([text(rng), "Z" + "A" * 20, "/hostedzone/Z1", ""]), safe="")
        query = rng.choice(["", "?maxitems=-1", "?maxitems=x", "?vpcid=vpc-1&vpcregion=us-east-1",
                            f"?name={urllib.parse.quote(text(rng))}&type=A", "?marker=%zz"])
        return "route53", method, template.format(label) + query, xml_body(rng), {}, "xml"
    method = rng.choice(["GET", "PUT", "HEAD", "DELETE", "POST"])
    bucket = rng.choice(["fuzz-bucket", "Bad_Bucket", "a", "x" * 70, "fuzz-bucket"])
    key = urllib.parse.quote(text(rng), safe="/")
    query = rng.choice(["", "?list-type=2&max-keys=-1", "?uploads", "?partNumber=0&uploadId=x", "?tagging",
                        "?policy", "?delete", "?versioning", "?acl", "?max-keys=99999999999999999999"])
    body = text(rng).encode() if method in ("PUT", "POST") else b""
    return "s3", method, f"/{bucket}/{key}{query}", body, {}, "s3"


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# S3 writes control characters in keys as character references (`&#x1c;`),
# as AWS does; XML 1.0 parsers refuse those, so they are read as text here.
CONTROL_REFERENCE = re.compile(rb"&#x(?:[0-8bcdef]|1[0-9a-f]);")


def well_formed(kind, resp, body):
    """Parses an answer as its protocol says: JSON, or XML (S3 answers that
    are not XML, such as an object's bytes, are not parsed)."""
    if not body:
        return
    if kind == "json":
        json.loads(body)
        return
    if kind == "s3" and "xml" not in (resp.getheader("content-type") or ""):
        return
    ET.fromstring(CONTROL_REFERENCE.sub(b"?", body))


def test_hostile_requests_get_well_formed_answers_and_memory_stays_bounded(cove_server):
    seconds = float(os.environ.get("COVE_FUZZ_SECONDS", "40"))
    seed = int(os.environ.get("COVE_FUZZ_SEED", str(random.randrange(2**32))))
    print(f"fuzz seed {seed}")
    rng = random.Random(seed)
    host = urllib.parse.urlsplit(cove_server.endpoint).netloc
    conn = http.client.HTTPConnection(host, timeout=15)
    pid = cove_server.proc.pid
    sent, problems = 0, []
    statuses = collections.Counter()
    # The first seconds allocate what any server keeps (pools, caches).
    warm_until = time.time() + min(5.0, seconds / 4)
    baseline = None
    peak = 0
    end = time.time() + seconds
    while time.time() < end:
        if baseline is None and time.time() >= warm_until:
            baseline = rss_kb(pid)
        service, method, path, body, headers, kind = one_request(rng, cove_server.endpoint)
        headers = signed(method, cove_server.endpoint + path, body, headers, service)
        answer = None
        # A kept-alive connection the server has since closed (it may, after
        # an answer whose body it did not read) is retried once on a new one;
        # a fresh connection that breaks is a failure.
        for fresh in (False, True):
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                answer = (resp, resp.read())
                break
            except (http.client.HTTPException, OSError) as e:
                conn.close()
                conn = http.client.HTTPConnection(host, timeout=15)
                if fresh:
                    problems.append(f"{method} {path[:80]} {headers.get('X-Amz-Target', '')}: connection broke: {e!r}")
        if answer is None:
            continue
        resp, data = answer
        sent += 1
        statuses[resp.status] += 1
        # 501 NotImplemented is S3's own answer for an operation it lacks.
        if resp.status >= 500 and resp.status not in (501, 503):
            problems.append(f"{method} {path[:80]} {headers.get('X-Amz-Target', '')} -> {resp.status} {data[:200]!r}")
        try:
            well_formed(kind, resp, data)
        except (ValueError, ET.ParseError) as e:
            problems.append(f"{method} {path[:80]} -> malformed answer ({e}): {data[:200]!r}")
        if resp.getheader("connection", "").lower() == "close":
            conn.close()
            conn = http.client.HTTPConnection(host, timeout=15)
        peak = max(peak, rss_kb(pid)) if sent % 200 == 0 else peak
    end_rss = rss_kb(pid)
    print(f"fuzz: {sent} requests in {seconds:.0f} s; RSS after warm-up {baseline} kB, end {end_rss} kB, "
          f"peak sampled {peak} kB; answers {dict(sorted(statuses.items()))}")
    assert cove_server.alive()
    assert sent > 100, sent
    assert not problems, f"seed {seed}: {len(problems)} problems, first: " + "\n".join(problems[:10])
    # Bounded: no more than 64 MiB over the warmed-up server.
    assert end_rss - (baseline or end_rss) < 64 * 1024, (baseline, end_rss)
