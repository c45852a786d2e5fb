#!/usr/bin/env python3
"""InvokeEndpoint benchmark (run as root, from the repository).

Starts its own `cove serve` (release build) on a private data directory and,
through boto3, builds a VPC with a private subnet, an S3 gateway endpoint and
an endpoint of one instance serving a small model with Cove's script-mode
serving runtime. Then it measures, side by side in one run and alternating:

- through Cove: SigV4-signed `POST /endpoints/<name>/invocations` to Cove's
  listener on loopback (authentication, routing, the pooled connection into
  the instance's namespace, the container);
- direct: `POST /invocations` to the same container at 127.0.0.1:8080 from
  inside its ENI's namespace (`cove exec --eni`), no Cove in between;

with `cove-invoke-bench` (a closed-loop Rust client, one connection per
client) at 1 and 64 concurrent clients. Prints p50/p99 latency and
throughput per path, the medians over the runs, Cove's added p50 and its
throughput as a share of direct.

Usage:  .venv/bin/python bench/hosting.py [--runs 3] [--seconds 5]
"""
import argparse
import io
import json
import os
import statistics
import subprocess
import tarfile
import time
import uuid

import botocore.config

from common import IMAGE, ROOT, clients, cove_server
INFERENCE = "def predict_fn(data, model):\n    return {'outputs': [x * 2 for x in data['inputs']]}\n"


def model_archive():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        body = INFERENCE.encode()
        info = tarfile.TarInfo("code/inference.py")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cove-bin", default=os.path.join(ROOT, "target/release/cove"))
    ap.add_argument("--load-bin", default=os.path.join(ROOT, "target/release/cove-invoke-bench"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()

    with cove_server(args.cove_bin, "cove-bench-hosting-", env={"RUST_LOG": "warn"}) as (endpoint, data, cove):
        run(args, endpoint, data, cove.pid)


def cpu_seconds(pid):
    """User + system CPU a process has used so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serving_model(make, cidr, instance_type):
    """A VPC with a private subnet and an S3 gateway endpoint, the model
    "bench" (script mode) in it and the endpoint configuration "bench" of
    one `instance_type` instance. Returns the VPC's id."""
    ec2, s3, sm = make("ec2"), make("s3"), make("sagemaker")
    vpc = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=cidr.replace(".0.0/16", ".1.0/24"))["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="model", Description="model", VpcId=vpc)["GroupId"]
    rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
    ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.us-east-1.s3", RouteTableIds=[rt])
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="model.tar.gz", Body=model_archive())
    sm.create_model(ModelName="bench", ExecutionRoleArn="arn:aws:iam::123456789012:role/SageMakerRole",
                    PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{bucket}/model.tar.gz",
                                      "Environment": {"SAGEMAKER_PROGRAM": "inference.py",
                                                      "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}},
                    VpcConfig={"Subnets": [subnet], "SecurityGroupIds": [sg]})
    sm.create_endpoint_config(EndpointConfigName="bench", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "bench", "InstanceType": instance_type, "InitialInstanceCount": 1}])
    return vpc


def run(args, endpoint, data, cove_pid):
    cfg = botocore.config.Config(retries={"max_attempts": 1})
    client = clients(endpoint, cfg)
    ec2, sm = client("ec2"), client("sagemaker")
    serving_model(client, "10.0.0.0/16", "ml.m5.xlarge")
    sm.create_endpoint(EndpointName="bench", EndpointConfigName="bench")
    while (status := sm.describe_endpoint(EndpointName="bench")["EndpointStatus"]) == "Creating":
        time.sleep(0.2)
    assert status == "InService", sm.describe_endpoint(EndpointName="bench").get("FailureReason")
    eni = next(e["NetworkInterfaceId"] for e in ec2.describe_network_interfaces()["NetworkInterfaces"]
               if "Endpoint bench " in e.get("Description", ""))

    def load(path, concurrency):
        common = ["--concurrency", str(concurrency), "--seconds", str(args.seconds)]
        if path == "cove":
            cmd = [args.load_bin, "--sign", "--url", f"{endpoint}/endpoints/bench/invocations", *common]
        else:
            cmd = [args.cove_bin, "exec", "--data-dir", data, "--eni", eni, "--",
                   args.load_bin, "--url", "http://127.0.0.1:8080/invocations", *common]
        cpu = cpu_seconds(cove_pid)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        assert r["errors"] == 0, r
        # Cove's own CPU per request (warm-up requests included, so an upper bound).
        r["cove_cpu_us"] = 1e6 * (cpu_seconds(cove_pid) - cpu) / max(1, r["requests"])
        return r

    results = {}
    for run_no in range(args.runs):
        for concurrency in (1, 64):
            for path in ("direct", "cove"):
                r = load(path, concurrency)
                results.setdefault((path, concurrency), []).append(r)
                print(f"run {run_no + 1} {path:6} c={concurrency:<3} p50 {r['p50_us']:>8.0f} µs  "
                      f"p99 {r['p99_us']:>8.0f} µs  {r['rps']:>8.0f} req/s  "
                      f"Cove CPU {r['cove_cpu_us']:>5.0f} µs/req", flush=True)

    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    print()
    print("| clients | path | p50 (µs) | p99 (µs) | req/s | Cove CPU (µs/req) |")
    print("|---:|---|---:|---:|---:|---:|")
    for concurrency in (1, 64):
        for path in ("direct", "cove"):
            rs = results[(path, concurrency)]
            print(f"| {concurrency} | {'InvokeEndpoint via Cove' if path == 'cove' else 'direct /invocations'} | "
                  f"{med(rs, 'p50_us'):.0f} | {med(rs, 'p99_us'):.0f} | {med(rs, 'rps'):.0f} | "
                  f"{med(rs, 'cove_cpu_us'):.0f} |")
    print()
    for concurrency in (1, 64):
        d, c = results[("direct", concurrency)], results[("cove", concurrency)]
        print(f"{concurrency} client(s): Cove adds {med(c, 'p50_us') - med(d, 'p50_us'):.0f} µs at p50; "
              f"throughput {100 * med(c, 'rps') / med(d, 'rps'):.0f}% of direct")


if __name__ == "__main__":
    main()
