"""The server's own observability: Prometheus metrics at /metrics that agree
with the API, one structured log line per call with no colour codes in a
log file, and a health check that reports each component."""

import json
import os
import re
import urllib.request

import pytest
from helpers import aws_error, eventually

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(cove):
    """{(name, frozenset(labels)): value} of every sample at /metrics."""
    with urllib.request.urlopen(f"{cove.endpoint}/metrics", timeout=5) as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("application/openmetrics-text")
        text = r.read().decode()
    assert text.rstrip().endswith("# EOF"), "an OpenMetrics exposition ends with # EOF"
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def health(cove):
    with urllib.request.urlopen(f"{cove.endpoint}/_cove/health", timeout=5) as r:
        return json.load(r)


def test_metrics_count_calls_by_operation_and_error_code(fresh_cove):
    ec2 = fresh_cove.client("ec2")
    before = scrape(fresh_cove)
    for _ in range(3):
        ec2.describe_vpcs()
    aws_error("InvalidVpcID.NotFound", ec2.describe_vpcs, VpcIds=["vpc-0123456789abcdef0"])
    after = scrape(fresh_cove)
    calls = lambda s, code: value(s, "cove_api_requests_total", service="ec2", operation="DescribeVpcs", code=code)
    assert calls(after, "OK") - calls(before, "OK") == 3
    assert calls(after, "InvalidVpcID.NotFound") - calls(before, "InvalidVpcID.NotFound") == 1
    count = lambda s: value(s, "cove_api_request_duration_seconds_count", service="ec2", operation="DescribeVpcs")
    assert count(after) - count(before) == 4
    # S3 is counted by HTTP method, its errors by status.
    s3 = fresh_cove.client("s3")
    s3.create_bucket(Bucket="metrics-bucket")
    aws_error("NoSuchKey", s3.get_object, Bucket="metrics-bucket", Key="absent")
    s = scrape(fresh_cove)
    assert value(s, "cove_api_requests_total", service="s3", operation="PUT", code="OK") >= 1
    assert value(s, "cove_api_requests_total", service="s3", operation="GET", code="HTTP 404") == 1


def test_resource_gauges_match_the_api(fresh_cove):
    ec2 = fresh_cove.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    for _ in range(2):
        ec2.create_network_interface(SubnetId=subnet)
    enis = ec2.describe_network_interfaces()["NetworkInterfaces"]
    s = scrape(fresh_cove)
    by_state = {}
    for e in enis:
        by_state[e["Status"]] = by_state.get(e["Status"], 0) + 1
    assert by_state == {"available": 2}
    for state, n in by_state.items():
        assert value(s, "cove_resources", kind="network_interface", state=state) == n
    assert value(s, "cove_store_generation") >= 1


def test_health_reports_each_component(fresh_cove):
    if os.geteuid() == 0:
        # The data plane's first pass has made the stored world real.
        assert eventually(lambda: health(fresh_cove)["components"]["data_plane"]["last_pass"] == "applied")
    h = health(fresh_cove)
    assert h["status"] == "ok"
    store = h["components"]["store"]
    assert store["kind"] == ("postgres" if fresh_cove.store else "sqlite")
    assert store["last_commit"] == "succeeded"
    assert store["generation"] == h["generation"]
    plane = h["components"]["data_plane"]
    if os.geteuid() == 0:
        assert plane["state"] == "on" and plane["last_pass"] == "applied", plane
        s = scrape(fresh_cove)
        assert value(s, "cove_dataplane_reconcile_passes_total", outcome="applied") >= 1
        assert value(s, "cove_dataplane_reconcile_duration_seconds_count") >= 1
    else:
        assert plane["state"] == "off" and plane["reason"], plane


def test_one_structured_log_line_per_call_and_no_colour_codes_in_a_file(fresh_cove):
    ec2 = fresh_cove.client("ec2")
    ec2.describe_vpcs()
    aws_error("InvalidVpcID.NotFound", ec2.describe_vpcs, VpcIds=["vpc-0123456789abcdef0"])
    log = open(fresh_cove.log_path).read()
    assert "\x1b[" not in log, "ANSI escape codes in a log file"
    lines = [line for line in log.splitlines() if line.rstrip().endswith("request") or " request " in line]
    found = [line for line in lines if "operation=DescribeVpcs" in line]
    assert any("status=200" in line and "code=OK" in line for line in found), found
    failed = [line for line in found if "code=InvalidVpcID.NotFound" in line]
    assert failed and "service=ec2" in failed[0] and "status=400" in failed[0] and "account=123456789012" in failed[0], found
    assert re.search(r"micros=\d+", failed[0])
