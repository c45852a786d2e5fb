#!/usr/bin/env python3
"""Studio and the newer job kinds, timed (run as root, from the repository).

Starts its own `cove serve` (release build) on a private data directory,
builds a VPC with a private subnet, an S3 gateway endpoint and a VpcOnly
Studio domain, and measures:

- Studio app start: CreateApp to `InService` (a JupyterServer app with
  Cove's built-in app server: ENI, data plane, role session, process, port).
- Studio proxy, side by side and alternating: one client on one kept-alive
  connection doing `GET <base>api/status` back to back,
  - through Cove: from the host to Cove's listener, with the session
    cookie (signature check, app lookup, a new connection into the app's
    namespace per request, the app);
  - direct: the same client code inside the app's ENI namespace
    (`cove exec --eni`) to 127.0.0.1:8888, no Cove in between.
- Wall time of a compilation job (a small ONNX model, in the private
  subnet) and of a Clarify pre-training bias job (60 rows), CreateX to
  the final status.
- One Inference Recommender job (Advanced, ml.c5.large and ml.c5.xlarge,
  a small model in the private subnet): its wall time and the figures it
  measured.

Prints each run and a table of medians.

Usage:  .venv/bin/python bench/studio_and_job_kinds.py [--runs 5] [--requests 2000]
"""
import argparse
import http.cookiejar
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid

import botocore.config

from common import ROOT, clients, cove_server

# The compilation tests' ONNX model and archive builders.
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from test_compilation import model_archive as tar_gz, onnx_linear  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
CLARIFY_IMAGE = "205585389593.dkr.ecr.us-east-1.amazonaws.com/sagemaker-clarify-processing:1.0"

# One closed-loop client: `requests` GETs on one kept-alive connection;
# prints the latencies in microseconds as JSON.
CLIENT = r'''
import http.client, json, sys, time
host, port, path, cookie, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
conn = http.client.HTTPConnection(host, port)
headers = {"Cookie": cookie} if cookie else {}
out = []
for _ in range(n):
    t = time.perf_counter()
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    r.read()
    assert r.status == 200, r.status
    out.append((time.perf_counter() - t) * 1e6)
print(json.dumps(out))
'''


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cove-bin", default=os.path.join(ROOT, "target/release/cove"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    with cove_server(args.cove_bin, "cove-bench-studio-", env={"RUST_LOG": "warn"}) as (endpoint, data, _):
        run(args, endpoint, data)


def run(args, endpoint, data):
    client = clients(endpoint, botocore.config.Config(retries={"max_attempts": 1}))
    ec2, s3, sm = client("ec2"), client("s3"), client("sagemaker")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="users", Description="users", VpcId=vpc)["GroupId"]
    rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
    ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.us-east-1.s3", RouteTableIds=[rt])
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    net = {"Subnets": [subnet], "SecurityGroupIds": [sg]}

    domain = sm.create_domain(DomainName="bench", AuthMode="IAM", VpcId=vpc, SubnetIds=[subnet],
                              AppNetworkAccessType="VpcOnly",
                              DefaultUserSettings={"ExecutionRole": ROLE, "SecurityGroups": [sg]})["DomainId"]
    sm.create_user_profile(DomainId=domain, UserProfileName="bench")
    app = dict(DomainId=domain, UserProfileName="bench", AppType="JupyterServer", AppName="default")
    starts = []
    for n in range(args.runs):
        t = time.perf_counter()
        sm.create_app(**app)
        while (status := sm.describe_app(**app)["Status"]) == "Pending":
            time.sleep(0.02)
        assert status == "InService", sm.describe_app(**app)
        starts.append(time.perf_counter() - t)
        print(f"run {n + 1} app start {starts[-1]:.2f} s", flush=True)
        if n + 1 < args.runs:
            sm.delete_app(**app)
            while sm.describe_app(**app)["Status"] != "Deleted":
                time.sleep(0.05)

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    url = sm.create_presigned_domain_url(DomainId=domain, UserProfileName="bench")["AuthorizedUrl"]
    landed = opener.open(url).geturl()
    path = landed.split("://", 1)[1].split("/", 1)[1]
    path = "/" + path.rsplit("/lab", 1)[0] + "/api/status"
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    host, port = endpoint.split("://")[1].split(":")
    eni = next(e["NetworkInterfaceId"] for e in ec2.describe_network_interfaces()["NetworkInterfaces"]
               if domain in e["Description"])

    def measure(way):
        if way == "cove":
            cmd = [sys.executable, "-c", CLIENT, host, port, path, cookie, str(args.requests)]
        else:
            cmd = [args.cove_bin, "exec", "--data-dir", data, "--eni", eni, "--", "/usr/bin/python3", "-c", CLIENT,
                   "127.0.0.1", "8888", path, "", str(args.requests)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
        return json.loads(out.stdout)

    proxy = {"direct": [], "cove": []}
    for n in range(args.runs):
        for way in ("direct", "cove"):
            lat = measure(way)
            proxy[way].append((percentile(lat, 50), percentile(lat, 99)))
            print(f"run {n + 1} {way:6} p50 {proxy[way][-1][0]:7.0f} µs  p99 {proxy[way][-1][1]:7.0f} µs", flush=True)

    s3.put_object(Bucket=bucket, Key="neo/model.tar.gz", Body=tar_gz({"model.onnx": onnx_linear()}))
    compiles = []
    for n in range(args.runs):
        name = f"neo-{uuid.uuid4().hex[:8]}"
        t = time.perf_counter()
        sm.create_compilation_job(CompilationJobName=name, RoleArn=ROLE, VpcConfig=net,
                                  InputConfig={"S3Uri": f"s3://{bucket}/neo/model.tar.gz", "Framework": "ONNX",
                                               "DataInputConfig": '{"x": [2, 4]}'},
                                  OutputConfig={"S3OutputLocation": f"s3://{bucket}/neo/out", "TargetDevice": "ml_c5"},
                                  StoppingCondition={"MaxRuntimeInSeconds": 300})
        while (status := sm.describe_compilation_job(CompilationJobName=name)["CompilationJobStatus"]) not in (
                "COMPLETED", "FAILED", "STOPPED"):
            time.sleep(0.02)
        assert status == "COMPLETED", sm.describe_compilation_job(CompilationJobName=name)["FailureReason"]
        compiles.append(time.perf_counter() - t)
        print(f"run {n + 1} compilation job {compiles[-1]:.2f} s", flush=True)

    rows = "\n".join(f"{1 if (i * 37) % 100 > 40 else 0},{i % 3 == 0:d},{(i * 37) % 100 / 100}" for i in range(60))
    s3.put_object(Bucket=bucket, Key="clarify/data/train.csv", Body=rows + "\n")
    s3.put_object(Bucket=bucket, Key="clarify/config/analysis_config.json", Body=json.dumps({
        "dataset_type": "text/csv", "headers": ["approved", "gender", "income"], "label": "approved",
        "label_values_or_threshold": [1], "facet": [{"name_or_index": "gender", "value_or_threshold": [1]}],
        "methods": {"pre_training_bias": {"methods": "all"}}}))
    clarify = []
    for n in range(args.runs):
        name = f"clarify-{uuid.uuid4().hex[:8]}"
        t = time.perf_counter()
        sm.create_processing_job(
            ProcessingJobName=name, RoleArn=ROLE, AppSpecification={"ImageUri": CLARIFY_IMAGE},
            ProcessingInputs=[
                {"InputName": "dataset", "S3Input": {"S3Uri": f"s3://{bucket}/clarify/data", "S3DataType": "S3Prefix",
                                                     "LocalPath": "/opt/ml/processing/input/data", "S3InputMode": "File"}},
                {"InputName": "analysis_config", "S3Input": {
                    "S3Uri": f"s3://{bucket}/clarify/config", "S3DataType": "S3Prefix",
                    "LocalPath": "/opt/ml/processing/input/config", "S3InputMode": "File"}}],
            ProcessingOutputConfig={"Outputs": [{"OutputName": "analysis_result", "S3Output": {
                "S3Uri": f"s3://{bucket}/clarify/out/{name}", "LocalPath": "/opt/ml/processing/output",
                "S3UploadMode": "EndOfJob"}}]},
            ProcessingResources={"ClusterConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1,
                                                   "VolumeSizeInGB": 1}},
            NetworkConfig={"VpcConfig": net}, StoppingCondition={"MaxRuntimeInSeconds": 300})
        while (status := sm.describe_processing_job(ProcessingJobName=name)["ProcessingJobStatus"]) not in (
                "Completed", "Failed", "Stopped"):
            time.sleep(0.02)
        assert status == "Completed", sm.describe_processing_job(ProcessingJobName=name).get("ExitMessage")
        clarify.append(time.perf_counter() - t)
        print(f"run {n + 1} clarify job {clarify[-1]:.2f} s", flush=True)

    inference = "def predict_fn(data, model):\n    return {'outputs': [x * 2 for x in data['inputs']]}\n"
    s3.put_object(Bucket=bucket, Key="ir/model.tar.gz", Body=tar_gz({"code/inference.py": inference.encode()}))
    s3.put_object(Bucket=bucket, Key="ir/payload.tar.gz",
                  Body=tar_gz({f"p{i}.json": json.dumps({"inputs": [i]}).encode() for i in range(4)}))
    sm.create_model(ModelName="ir-bench", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
        "ModelDataUrl": f"s3://{bucket}/ir/model.tar.gz",
        "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}})
    t = time.perf_counter()
    sm.create_inference_recommendations_job(
        JobName="ir-bench", JobType="Advanced", RoleArn=ROLE,
        InputConfig={"ModelName": "ir-bench", "VpcConfig": net,
                     "EndpointConfigurations": [{"InstanceType": "ml.c5.large"}, {"InstanceType": "ml.c5.xlarge"}],
                     "ContainerConfig": {"PayloadConfig": {"SamplePayloadUrl": f"s3://{bucket}/ir/payload.tar.gz",
                                                           "SupportedContentTypes": ["application/json"]}}},
        StoppingConditions={"ModelLatencyThresholds": [{"Percentile": "P95", "ValueInMilliseconds": 100}]})
    while (job := sm.describe_inference_recommendations_job(JobName="ir-bench"))["Status"] not in (
            "COMPLETED", "FAILED", "STOPPED"):
        time.sleep(0.1)
    assert job["Status"] == "COMPLETED", job.get("FailureReason")
    recommender = time.perf_counter() - t

    med = statistics.median
    print()
    print("| what | median |")
    print("|---|---:|")
    print(f"| Studio app start (CreateApp → InService) | {med(starts):.2f} s |")
    for way, label in (("direct", "GET api/status, direct in the namespace"),
                       ("cove", "GET api/status through Cove's Studio proxy")):
        print(f"| {label}: p50 / p99 | {med(p for p, _ in proxy[way]):.0f} / {med(q for _, q in proxy[way]):.0f} µs |")
    print(f"| compilation job (CreateCompilationJob → COMPLETED) | {med(compiles):.2f} s |")
    print(f"| Clarify pre-training job (CreateProcessingJob → Completed) | {med(clarify):.2f} s |")
    print(f"| Inference Recommender job, 2 instance types, default 1/2/4/8-user ramp (1 run) | {recommender:.1f} s |")
    print()
    print("| instance type | MaxInvocations (/min) | ModelLatency (ms) | ModelSetupTime (s) | CostPerInference (USD) |")
    print("|---|---:|---:|---:|---:|")
    for r in job["InferenceRecommendations"]:
        m = r["Metrics"]
        print(f"| {r['EndpointConfiguration']['InstanceType']} | {m['MaxInvocations']} | {m['ModelLatency']} | "
              f"{m['ModelSetupTime']} | {m['CostPerInference']:.3g} |")
    added = med(p for p, _ in proxy["cove"]) - med(p for p, _ in proxy["direct"])
    print(f"\nThe proxy adds {added:.0f} µs at p50 "
          f"({med(p for p, _ in proxy['cove']) / med(p for p, _ in proxy['direct']):.1f}× direct).")


if __name__ == "__main__":
    main()
