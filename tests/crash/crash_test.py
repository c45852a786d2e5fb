"""The crash test: training jobs survive `kill -9` of `cove serve` at every
phase, with nothing visible in their results and nothing left behind.

    sudo .venv/bin/python tests/crash/crash_test.py [--jobs-per-phase 10]

For each phase of a training job (Starting, Downloading, Training,
Uploading) in turn, it starts a round of jobs in a private subnet that
reaches S3 through a gateway endpoint and mounts a read-write channel on
EFS (NFS through the job's ENI), waits until one of them is in that
phase, kills Cove with SIGKILL, starts it again on the same data directory
and lets the round finish. Then it checks:
- every job Completed, with the model its script wrote and its file on
  the EFS file system;
- every log line the script printed is in CloudWatch Logs exactly once;
- no job ENI, network namespace, mount (EFS mounts included), loop device,
  cgroup or process of the jobs (`cove efs-mount` included) is left once
  they ended (and none of the server's after its teardown).
It prints one table row per phase and exits non-zero on any failure.
scripts/test.sh runs it with five jobs per phase; its figures go in
docs/benchmarks.md.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

from conftest import BINARY, Cove  # noqa: E402
from test_training_jobs import source_archive, training_request  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/CrashTest"
LINES = 40
SCRIPT = r'''
import os, time
data = os.environ["SM_CHANNEL_TRAIN"]
files = sorted(os.listdir(data))
for i in range(%d):
    print(f"line {i} of {len(files)} files", flush=True)
    time.sleep(0.1)
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.bin"), "wb") as f:
    f.write(os.urandom(8 << 20))
with open(os.path.join(os.environ["SM_MODEL_DIR"], "files.txt"), "w") as f:
    f.write(str(len(files)))
with open(os.path.join(os.environ["SM_CHANNEL_SHARED"], os.environ["TRAINING_JOB_NAME"] + ".txt"), "w") as f:
    f.write(str(len(files)))
''' % LINES
PHASES = ["Starting", "Downloading", "Training", "Uploading"]


def request(name, bucket, net):
    req = training_request(name, bucket, {"subnets": [net["subnet"]], "sg": net["sg"]})
    req["RoleArn"] = ROLE
    req["HyperParameters"] = {k: v for k, v in req["HyperParameters"].items() if k.startswith("sagemaker_")}
    req["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = f"s3://{bucket}/data"
    req["StoppingCondition"]["MaxRuntimeInSeconds"] = 900
    req["InputDataConfig"].append({"ChannelName": "shared", "DataSource": {"FileSystemDataSource": {
        "FileSystemId": net["fs"], "FileSystemType": "EFS", "DirectoryPath": "/", "FileSystemAccessMode": "rw"}}})
    return req


def network(ec2, efs):
    vpc = ec2.create_vpc(CidrBlock="10.88.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.88.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="jobs", Description="crash test", VpcId=vpc)["GroupId"]
    rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
    ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.us-east-1.s3", RouteTableIds=[rt])
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 2049, "ToPort": 2049, "UserIdGroupPairs": [{"GroupId": sg}]}])
    fs = efs.create_file_system(CreationToken=str(uuid.uuid4()))["FileSystemId"]
    efs.create_mount_target(FileSystemId=fs, SubnetId=subnet, SecurityGroups=[sg])
    return {"vpc": vpc, "subnet": subnet, "sg": sg, "fs": fs}


def sh(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True).stdout


def leftovers(data_dir, names):
    """What the ended jobs left in the kernel and the process table."""
    found = []
    mounts = open("/proc/self/mountinfo").read()
    found += [f"mount {line.split()[4]}" for line in mounts.splitlines() if data_dir in line]
    found += [f"loop {line}" for line in sh("losetup", "--list", "--noheadings", "--output", "BACK-FILE").splitlines()
              if data_dir in line]
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        found += [f"cgroup {os.path.join(root, d)}" for d in dirs if any(n in d for n in names)]
        if root.count("/") > 5:
            dirs.clear()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            cgroup = open(f"/proc/{pid}/cgroup").read()
        except OSError:
            continue
        if any(n in cgroup for n in names) or (data_dir in cmd and "serve" not in cmd):
            found.append(f"process {pid} {cmd[:80]}")
    return found


def wait_for_phase(sm, names, phase, timeout=120):
    """The first job seen in `phase`; jobs are polled newest first, since
    the last one created is the most likely to still be Starting."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for n in reversed(names):
            if sm.describe_training_job(TrainingJobName=n)["SecondaryStatus"] == phase:
                return n
        time.sleep(0.02)
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs-per-phase", type=int, default=10)
    parser.add_argument("--objects", type=int, default=200, help="input objects per job (Downloading takes a while)")
    args = parser.parse_args()
    failures = []
    rows = []
    with tempfile.TemporaryDirectory(prefix="cove-crash-") as data_dir:
        os.chmod(data_dir, 0o700)
        server = Cove(data_dir).start()
        try:
            ec2, s3 = server.client("ec2"), server.client("s3")
            net = network(ec2, server.client("efs"))
            bucket = f"crash-{uuid.uuid4().hex[:8]}"
            s3.create_bucket(Bucket=bucket)
            for i in range(args.objects):
                s3.put_object(Bucket=bucket, Key=f"data/part-{i:04}.csv", Body=os.urandom(64 << 10))
            s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=source_archive(SCRIPT))
            all_names = []
            for phase in PHASES:
                sm = server.client("sagemaker")
                names = [f"crash-{phase.lower()}-{i}-{uuid.uuid4().hex[:6]}" for i in range(args.jobs_per_phase)]
                all_names += names
                for n in names:
                    sm.create_training_job(**request(n, bucket, net))
                hit = wait_for_phase(sm, names, phase)
                killed_at = time.time()
                server.stop(signal.SIGKILL)
                server.start()
                restart_s = time.time() - killed_at
                sm = server.client("sagemaker")
                deadline = time.time() + 600
                statuses = {}
                while time.time() < deadline:
                    statuses = {n: sm.describe_training_job(TrainingJobName=n) for n in names}
                    if all(d["TrainingJobStatus"] != "InProgress" for d in statuses.values()):
                        break
                    time.sleep(0.5)
                completed = sum(d["TrainingJobStatus"] == "Completed" for d in statuses.values())
                for n, d in statuses.items():
                    if d["TrainingJobStatus"] != "Completed":
                        failures.append(f"{n}: {d['TrainingJobStatus']} {d.get('FailureReason')}")
                    elif not os.path.exists(os.path.join(data_dir, "efs", net["fs"], f"{n}.txt")):
                        failures.append(f"{n}: its file is not on the EFS file system")
                rows.append((phase, hit is not None, len(names), completed, restart_s))
            # Logs: every line exactly once.
            logs = server.client("logs")
            duplicated = missing = 0
            for n in all_names:
                streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                                    logStreamNamePrefix=n)["logStreams"]
                lines = []
                for st in streams:
                    token = None
                    while True:
                        kw = {"nextToken": token} if token else {}
                        page = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                                   logStreamName=st["logStreamName"], startFromHead=True, **kw)
                        lines += [e["message"] for e in page["events"] if e["message"].startswith("line ")]
                        if page["nextForwardToken"] == token:
                            break
                        token = page["nextForwardToken"]
                numbers = [int(line.split()[1]) for line in lines]
                duplicated += len(numbers) - len(set(numbers))
                missing += len(set(range(LINES)) - set(numbers))
                if len(numbers) != len(set(numbers)) or set(numbers) != set(range(LINES)):
                    failures.append(f"{n}: log lines {sorted(numbers)}")
            # Nothing of the ended jobs is left.
            time.sleep(3)
            enis = [e for e in ec2.describe_network_interfaces()["NetworkInterfaces"]
                    if e.get("RequesterManaged") and "Training" in e.get("Description", "")]
            left = leftovers(data_dir, all_names) + [f"eni {e['NetworkInterfaceId']}" for e in enis]
            failures += [f"left behind: {x}" for x in left]
        finally:
            server.stop(signal.SIGKILL)
            subprocess.run([BINARY, "teardown", "--data-dir", data_dir], capture_output=True)
        after_teardown = [x for x in leftovers(data_dir, all_names) if not x.startswith("process")]
        failures += [f"left after teardown: {x}" for x in after_teardown]

    print("| killed during | reached | jobs | completed | restart to healthy (s) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for phase, reached, n, done, restart in rows:
        print(f"| {phase} | {'yes' if reached else 'no'} | {n} | {done} | {restart:.2f} |")
    print(f"\nlog lines duplicated: {duplicated}, missing: {missing}; leftovers: {len(left)}")
    if failures:
        print("\nFAILURES:")
        for f in failures:
            print(" ", f)
        sys.exit(1)


if __name__ == "__main__":
    main()
