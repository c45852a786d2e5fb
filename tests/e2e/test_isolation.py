"""What a job can reach of the host, probed from inside real training jobs:
its own identity, the system-call filter, no host paths or other
installations' names, and an ML storage volume of exactly VolumeSizeInGB."""

import io
import json
import os
import platform
import socket
import subprocess
import tarfile
import time
import uuid

import pytest

from helpers import eventually
from test_training_jobs import job_name, s3, sm, source_archive, training_request, wait_for  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the probes use x86_64 system call numbers")

PROBE = r'''
import ctypes, errno, json, os, pwd, socket, sys
hps = json.loads(os.environ["SM_HPS"])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
params = ctypes.create_string_buffer(120)
found = {
    "uid": os.getuid(),
    "user": pwd.getpwuid(os.getuid()).pw_name,
    "userns": call(272, 0x10000000),
    "io_uring": call(425, 8, ctypes.addressof(params)),
    "keyctl": call(250, 0, -3, 0),
    "data_dir_visible": os.path.exists(hps["data_dir"]),
    "init_cmdline": open("/proc/1/cmdline", "rb").read().replace(b"\0", b" ").decode(),
    "etc_netns": os.listdir("/etc/netns") if os.path.isdir("/etc/netns") else [],
    "etc_users": [l.split(":")[0] for l in open("/etc/passwd")],
}
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
    found["nfnetlink"] = "ok"
except OSError as e:
    found["nfnetlink"] = errno.errorcode[e.errno]
reached = []
for address in hps.get("host_addresses", []):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect((address, int(hps["host_port"])))
        reached.append(address)
    except OSError:
        pass
    finally:
        s.close()
found["host_reached"] = reached
found["host_tried"] = len(hps.get("host_addresses", []))
v = os.statvfs("/opt/ml")
found["volume_bytes"] = v.f_blocks * v.f_frsize
model = os.environ["SM_MODEL_DIR"]
if hps.get("fill"):
    # Past the volume: the write fails, the job with it.
    with open(os.path.join(model, "fill"), "wb") as f:
        chunk = b"\0" * (1 << 20)
        for _ in range(int(hps["fill"])):
            f.write(chunk)
if hps.get("incompressible_mib"):
    # Fits the volume, but its archive does not fit beside it.
    with open(os.path.join(model, "weights.bin"), "wb") as f:
        for _ in range(int(hps["incompressible_mib"])):
            f.write(os.urandom(1 << 20))
with open(os.path.join(model, "probe.json"), "w") as f:
    json.dump(found, f)
'''


@pytest.fixture(scope="module")
def bucket(s3):
    name = f"iso-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="data/train/part-0.csv", Body="1,2\n")
    s3.put_object(Bucket=name, Key="code/sourcedir.tar.gz", Body=source_archive(PROBE))
    return name


def probe_of(s3, bucket, name):
    body = s3.get_object(Bucket=bucket, Key=f"output/{name}/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        return json.load(tar.extractfile("probe.json"))


def volumes_of(data_dir):
    """Loop devices backed by files under the data directory."""
    out = subprocess.run(["losetup", "--list", "--noheadings", "--output", "BACK-FILE"],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if data_dir in line]


def host_addresses():
    """The host's own IPv4 addresses (not loopback, not Cove's)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines()
            if " lo " not in line and line.split()[1] != "lo"]


def test_a_job_runs_as_its_own_identity_and_cannot_reach_the_kernel_or_the_host(cove_server, s3, sm, bucket):
    # A server on every address of the host: the job must reach none of them.
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 0))
    listener.listen(8)
    addresses = host_addresses()
    for address in addresses:  # reachable from the host itself
        socket.create_connection((address, listener.getsockname()[1]), timeout=1).close()
    name = job_name("probe")
    try:
        sm.create_training_job(**training_request(name, bucket, data_dir=cove_server.data_dir,
                                                  host_addresses=addresses, host_port=listener.getsockname()[1]))
        d = wait_for(sm, name)
    finally:
        listener.close()
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    found = probe_of(s3, bucket, name)
    assert found["host_tried"] == len(addresses) > 0, (addresses, found)
    assert found["host_reached"] == [], (addresses, found["host_reached"])
    assert found["uid"] >= 0x70000000 and found["user"] == "sagemaker-user", found
    assert found["etc_users"] == ["root", "nobody", "sagemaker-user"], found
    for call in ("userns", "io_uring", "keyctl", "nfnetlink"):
        assert found[call] == "EPERM", (call, found)
    assert not found["data_dir_visible"], found
    assert cove_server.data_dir not in found["init_cmdline"], found
    assert found["init_cmdline"].strip() == "cove-runtime run-container spec.json", found
    assert found["etc_netns"] == [], found
    # VolumeSizeInGB=1: a file system of 1 GiB (less ext4's own tables).
    assert 0.9 * 2**30 < found["volume_bytes"] <= 2**30, found
    # The volume goes with the job.
    assert eventually(lambda: volumes_of(cove_server.data_dir) == [], timeout=30), volumes_of(cove_server.data_dir)


def test_a_job_that_fills_its_volume_fails_with_no_space_left_and_spares_the_host(cove_server, sm, bucket):
    logs = cove_server.client("logs")
    name = job_name("fill")
    sm.create_training_job(**training_request(name, bucket, data_dir=cove_server.data_dir, fill=1536))
    d = wait_for(sm, name)
    assert d["TrainingJobStatus"] == "Failed", d
    assert d["FailureReason"].startswith("AlgorithmError"), d["FailureReason"]
    stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                       logStreamNamePrefix=name)["logStreams"][0]["logStreamName"]
    text = "\n".join(e["message"] for e in logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream, startFromHead=True)["events"])
    assert "No space left on device" in text, text[-3000:]
    assert eventually(lambda: volumes_of(cove_server.data_dir) == [], timeout=30), volumes_of(cove_server.data_dir)


def test_an_archive_that_does_not_fit_the_volume_fails_the_upload_as_aws_says(cove_server, sm, bucket):
    name = job_name("bigmodel")
    started = time.time()
    sm.create_training_job(**training_request(name, bucket, data_dir=cove_server.data_dir, incompressible_mib=600))
    d = wait_for(sm, name, timeout=240)
    assert d["TrainingJobStatus"] == "Failed", d
    assert d["FailureReason"] == "ClientError: Artifact upload failed:Insufficient disk space", d["FailureReason"]
    assert time.time() - started < 240
