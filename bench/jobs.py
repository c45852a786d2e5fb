#!/usr/bin/env python3
"""Job start-up and data-path benchmark (run as root, from the repository).

Starts its own `cove serve` (release build) on a private data directory and,
through boto3 only, builds a VPC with a private subnet, a security group and
an S3 gateway endpoint. Then it measures, in one run:

1. Start-up: the time from CreateTrainingJob returning to the first
   instruction of the job's program (its first statement records
   time.time_ns(); same clock, same machine), for a job with its ENI attached
   and a 1 MB input channel downloaded through that ENI. Sequential jobs (1 at
   a time) and a burst of concurrent jobs; p50 and p99.
2. S3 download throughput of one large object through the gateway endpoint
   (curl on an ENI in the private subnet, presigned URL) against the same
   download from the host directly over loopback, side by side.
3. With --compare-image: the same start-up for sequential jobs on the host's
   Python and then, once `scripts/framework-images.sh sklearn` has pushed
   the scikit-learn image into this server's registry, in that image (the
   first image job, which unpacks the image, reported on its own).

Usage:  .venv/bin/python bench/jobs.py [--sequential 20] [--concurrent 50] [--object-mb 256] [--compare-image]
"""
import argparse
import re
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import threading
import time
import uuid

import boto3
import botocore.config

from common import KEY, ROOT, SECRET, clients, cove_server, pct, script_job, source_tarball
PROGRAM = "import time; T0 = time.time_ns()\nimport json, os\njson.dump({'t0': T0}, open(os.path.join(os.environ['SM_MODEL_DIR'], 't0.json'), 'w'))\n"



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cove-bin", default=os.path.join(ROOT, "target/release/cove"))
    ap.add_argument("--sequential", type=int, default=20)
    ap.add_argument("--concurrent", type=int, default=50)
    ap.add_argument("--object-mb", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--startup-only", action="store_true", help="skip the throughput part")
    ap.add_argument("--compare-image", action="store_true",
                    help="only compare start-up on the host's Python and in the scikit-learn framework image")
    args = ap.parse_args()

    with cove_server(args.cove_bin, "cove-bench-jobs-") as (endpoint, data, _):
        run(args, endpoint, data)


def data_plane_waits(data):
    """How long each job waited for the data plane to apply its ENIs (ms), in
    the order the jobs got there, from the server's log (`waited_micros`)."""
    waits = []
    with open(os.path.join(data, "cove.log")) as log:
        for line in log:
            m = re.search(r"waited_micros=(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", line))
            if m:
                waits.append(int(m.group(1)) / 1e3)
    return waits


def run(args, endpoint, data):  # noqa: C901
    cfg = botocore.config.Config(retries={"max_attempts": 1}, max_pool_connections=100)
    client = clients(endpoint, cfg)
    ec2, s3, sm = client("ec2"), client("s3"), client("sagemaker")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/20")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="bench", Description="bench", VpcId=vpc)["GroupId"]
    rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
    ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.us-east-1.s3", VpcEndpointType="Gateway",
                            RouteTableIds=[rt])
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/train/one-mb.bin", Body=os.urandom(1 << 20))
    s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=source_tarball(PROGRAM))

    def one_job():
        name = f"bench-{uuid.uuid4().hex[:10]}"
        sm.create_training_job(**script_job(name, bucket, {"Subnets": [subnet], "SecurityGroupIds": [sg]}))
        returned = time.time_ns()
        while True:
            d = sm.describe_training_job(TrainingJobName=name)
            if d["TrainingJobStatus"] != "InProgress":
                break
            time.sleep(0.05)
        assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
        body = s3.get_object(Bucket=bucket, Key=f"out/{name}/output/model.tar.gz")["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as t:
            t0 = json.load(t.extractfile("t0.json"))["t0"]
        return (t0 - returned) / 1e6

    one_job()  # warm-up: page cache, first ENI namespace
    sequential = [one_job() for _ in range(args.sequential)]
    if args.compare_image:
        env = {**os.environ, "COVE_BIN": args.cove_bin}
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "framework-images.sh"), "--data-dir", data, "sklearn"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        first = one_job()
        in_image = [one_job() for _ in range(args.sequential)]
        print("\n## Job start-up: host Python vs the scikit-learn framework image "
              "(CreateTrainingJob returned → first instruction; ENI attached, 1 MB channel)\n")
        print("| where the script runs | jobs | p50 ms | p99 ms | max ms |")
        print("| --- | ---: | ---: | ---: | ---: |")
        print(f"| host Python (`/usr/bin/python3`) | {len(sequential)} | {pct(sequential, 50):.1f} | "
              f"{pct(sequential, 99):.1f} | {max(sequential):.1f} |")
        print(f"| framework image, first job (unpacks the image) | 1 | {first:.1f} | {first:.1f} | {first:.1f} |")
        print(f"| framework image, later jobs | {len(in_image)} | {pct(in_image, 50):.1f} | "
              f"{pct(in_image, 99):.1f} | {max(in_image):.1f} |")
        return
    burst = []
    lock = threading.Lock()

    def worker():
        ms = one_job()
        with lock:
            burst.append(ms)
    threads = [threading.Thread(target=worker) for _ in range(args.concurrent)]
    [t.start() for t in threads]
    [t.join() for t in threads]

    print("\n## Job start-up: CreateTrainingJob returned → first instruction of the program (ENI attached, 1 MB channel)\n")
    print("| concurrent jobs | jobs | p50 ms | p99 ms | max ms |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for label, xs in ((1, sequential), (args.concurrent, burst)):
        print(f"| {label} | {len(xs)} | {pct(xs, 50):.1f} | {pct(xs, 99):.1f} | {max(xs):.1f} |")
    waits = data_plane_waits(data)
    if len(waits) == 1 + len(sequential) + len(burst):
        print("\nOf which waiting for the data plane to apply the job's ENI (from the server's log):\n")
        print("| concurrent jobs | p50 ms | p99 ms | max ms |")
        print("| ---: | ---: | ---: | ---: |")
        for label, xs in ((1, waits[1:1 + len(sequential)]), (args.concurrent, waits[1 + len(sequential):])):
            print(f"| {label} | {pct(xs, 50):.1f} | {pct(xs, 99):.1f} | {max(xs):.1f} |")
    if args.startup_only:
        return

    # Throughput: one large object, host over loopback vs an ENI through the gateway endpoint.
    size = args.object_mb << 20
    mpu = s3.create_multipart_upload(Bucket=bucket, Key="big.bin")
    part = os.urandom(8 << 20)
    parts = []
    for i in range(size // len(part)):
        etag = s3.upload_part(Bucket=bucket, Key="big.bin", UploadId=mpu["UploadId"], PartNumber=i + 1, Body=part)["ETag"]
        parts.append({"PartNumber": i + 1, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key="big.bin", UploadId=mpu["UploadId"], MultipartUpload={"Parts": parts})
    eni = ec2.create_network_interface(SubnetId=subnet, Groups=[sg])["NetworkInterface"]["NetworkInterfaceId"]
    v4 = botocore.config.Config(signature_version="s3v4")
    vpc_s3 = boto3.client("s3", endpoint_url="http://s3.us-east-1.amazonaws.com", region_name="us-east-1",
                          aws_access_key_id=KEY, aws_secret_access_key=SECRET, config=v4)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=KEY, aws_secret_access_key=SECRET, config=v4)
    for _ in range(100):  # until the data plane has plumbed the ENI
        if subprocess.run([args.cove_bin, "exec", "--data-dir", data, "--eni", eni, "--", "true"],
                          capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    url_in_vpc = vpc_s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "big.bin"}, ExpiresIn=3600)
    url_host = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "big.bin"}, ExpiresIn=3600)
    curl = ["curl", "-sf", "-o", "/dev/null", "-w", "%{speed_download}"]
    host_mbs, eni_mbs = [], []
    for _ in range(args.runs):
        out = subprocess.run(curl + [url_host], capture_output=True, text=True, check=True).stdout
        host_mbs.append(float(out) / 1e6)
        out = subprocess.run([args.cove_bin, "exec", "--data-dir", data, "--eni", eni, "--"] + curl + [url_in_vpc],
                             capture_output=True, text=True, check=True).stdout
        eni_mbs.append(float(out) / 1e6)
    h, e = statistics.median(host_mbs), statistics.median(eni_mbs)
    print(f"\n## S3 GET of a {args.object_mb} MiB object, median of {args.runs} (alternating)\n")
    print("| path | MB/s | runs |")
    print("| --- | ---: | --- |")
    print(f"| host → Cove over loopback | {h:.0f} | {', '.join(f'{x:.0f}' for x in host_mbs)} |")
    print(f"| ENI in a private subnet → gateway endpoint → Cove | {e:.0f} | {', '.join(f'{x:.0f}' for x in eni_mbs)} |")
    print(f"\nendpoint path / direct: {100 * e / h:.0f}%")
    ec2.delete_network_interface(NetworkInterfaceId=eni)


if __name__ == "__main__":
    sys.exit(main())
