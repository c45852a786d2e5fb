#!/usr/bin/env python3
"""EFS channel throughput: sequential write and read of one file on a
training channel on EFS (NFS through the job's ENI, the VPC router and the
mount target's ENI, into `cove efs-mount`'s FUSE client) against the same
file on the job's local disk (`/opt/ml/output/data`), in the same job, side
by side (run as root, from the repository).

Starts its own `cove serve` (release build) on a private data directory;
through boto3 it builds a VPC with a job subnet and a mount-target subnet,
an S3 gateway endpoint, an NFS rule between the groups, and a file system
with a mount target. Each run is one training job whose program, for each
place: writes the file in 1 MiB blocks and fsyncs it, drops the file's
pages from the page cache (posix_fadvise DONTNEED, so the read goes back
to the disk or, on EFS, to the NFS server), then reads it back. Medians
of --runs jobs.

Usage:  .venv/bin/python bench/efs.py [--mib 256] [--runs 3]
"""
import argparse
import io
import json
import os
import statistics
import tarfile
import time
import uuid

import botocore.config

from common import IMAGE, ROOT, clients, cove_server, source_tarball

PROGRAM = r'''
import json, os, time
hps = json.loads(os.environ["SM_HPS"])
mib = int(hps["mib"])
block = os.urandom(1 << 20)
out = {}
for place, d in (("efs", os.environ["SM_CHANNEL_EFS"]), ("local", "/opt/ml/output/data")):
    path = os.path.join(d, "bench.bin")
    t = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        for _ in range(mib):
            f.write(block)
        os.fsync(f.fileno())
    write = time.perf_counter() - t
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    t = time.perf_counter()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            n += len(chunk)
    read = time.perf_counter() - t
    assert n == mib << 20, (place, n)
    os.remove(path)
    out[place] = {"write": mib / write, "read": mib / read}
json.dump(out, open(os.path.join(os.environ["SM_MODEL_DIR"], "bench.json"), "w"))
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cove-bin", default=os.path.join(ROOT, "target/release/cove"))
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with cove_server(args.cove_bin, "cove-bench-efs-") as (endpoint, _, _):
        run(args, endpoint)


def run(args, endpoint):
    client = clients(endpoint, botocore.config.Config(retries={"max_attempts": 1}))
    ec2, s3, sm, efs = client("ec2"), client("s3"), client("sagemaker"), client("efs")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    job_subnet, efs_subnet = [ec2.create_subnet(VpcId=vpc, CidrBlock=c, AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
                              for c in ("10.0.1.0/24", "10.0.2.0/24")]
    job_sg = ec2.create_security_group(GroupName="job", Description="job", VpcId=vpc)["GroupId"]
    efs_sg = ec2.create_security_group(GroupName="efs", Description="efs", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=efs_sg, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 2049, "ToPort": 2049, "UserIdGroupPairs": [{"GroupId": job_sg}]}])
    rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
    ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.us-east-1.s3", VpcEndpointType="Gateway",
                            RouteTableIds=[rt])
    fs = efs.create_file_system(CreationToken=str(uuid.uuid4()))["FileSystemId"]
    efs.create_mount_target(FileSystemId=fs, SubnetId=efs_subnet, SecurityGroups=[efs_sg])
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=source_tarball(PROGRAM))

    results = []
    for _ in range(args.runs):
        name = f"bench-efs-{uuid.uuid4().hex[:8]}"
        sm.create_training_job(
            TrainingJobName=name, RoleArn="arn:aws:iam::123456789012:role/Bench",
            AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
            HyperParameters={"sagemaker_program": '"train.py"', "mib": str(args.mib),
                             "sagemaker_submit_directory": f'"s3://{bucket}/code/sourcedir.tar.gz"'},
            InputDataConfig=[{"ChannelName": "efs", "DataSource": {"FileSystemDataSource": {
                "FileSystemId": fs, "FileSystemType": "EFS", "DirectoryPath": "/",
                "FileSystemAccessMode": "rw"}}}],
            OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"},
            ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
            StoppingCondition={"MaxRuntimeInSeconds": 900},
            VpcConfig={"Subnets": [job_subnet], "SecurityGroupIds": [job_sg]})
        while (d := sm.describe_training_job(TrainingJobName=name))["TrainingJobStatus"] == "InProgress":
            time.sleep(0.2)
        assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
        body = s3.get_object(Bucket=bucket, Key=f"out/{name}/output/model.tar.gz")["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as t:
            results.append(json.load(t.extractfile("bench.json")))

    def med(place, what):
        return statistics.median(r[place][what] for r in results)

    print(f"\n## EFS channel vs local disk, inside one training job ({args.mib} MiB file, 1 MiB blocks, "
          f"medians of {args.runs} jobs)\n")
    print("| operation | local disk MB/s | EFS channel MB/s | EFS / local |")
    print("| --- | ---: | ---: | ---: |")
    for what, label in (("write", "sequential write + fsync"), ("read", "sequential read, page cache dropped")):
        local, remote = med("local", what), med("efs", what)
        print(f"| {label} | {local:.0f} | {remote:.0f} | {remote / local:.2f} |")
    print("\nper run (MB/s, write/read): " + "; ".join(
        f"local {r['local']['write']:.0f}/{r['local']['read']:.0f}, efs {r['efs']['write']:.0f}/{r['efs']['read']:.0f}"
        for r in results))


if __name__ == "__main__":
    main()
