"""What the Python benchmarks share: Cove's default key pair and a stock
image URI, a `cove serve` of their own on a private data directory (started,
waited for, stopped and torn down), and boto3 clients for it."""

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.request

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


@contextlib.contextmanager
def cove_server(cove_bin, prefix, env=None):
    """Runs `cove serve` on a free loopback port and a fresh data directory;
    yields (endpoint, data directory, process). On exit: SIGTERM, then
    `cove teardown` removes its kernel objects."""
    data = tempfile.mkdtemp(prefix=prefix)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    log = open(os.path.join(data, "cove.log"), "w")
    cove = subprocess.Popen([cove_bin, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{endpoint}/_cove/health", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        yield endpoint, data, cove
    finally:
        cove.send_signal(signal.SIGTERM)
        cove.wait(timeout=30)
        subprocess.run([cove_bin, "teardown", "--data-dir", data], stdout=subprocess.DEVNULL, check=False)


def clients(endpoint, config):
    """A function that makes a boto3 client of a service for `endpoint`."""
    return lambda service: boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                                        aws_access_key_id=KEY, aws_secret_access_key=SECRET, config=config)


def pct(values, p):
    """The p-th percentile of `values` (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def health(endpoint):
    """`/_cove/health`: the store's generation and the one the data plane applied."""
    with urllib.request.urlopen(f"{endpoint}/_cove/health", timeout=5) as r:
        return json.load(r)


def settle(endpoint, timeout=600):
    """Waits until the data plane has applied every write made so far."""
    want = health(endpoint)["generation"]
    deadline = time.monotonic() + timeout
    while health(endpoint)["applied_generation"] < want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"data plane did not reach generation {want} in {timeout} s")
        time.sleep(0.005)


def source_tarball(program):
    """A script-mode source archive (`sourcedir.tar.gz`) holding `train.py`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("train.py")
        info.size = len(program.encode())
        t.addfile(info, io.BytesIO(program.encode()))
    return buf.getvalue()


def script_job(name, bucket, vpc_config, instances=1, output="out", role="arn:aws:iam::123456789012:role/Bench"):
    """CreateTrainingJob's arguments for a script-mode job running
    `s3://bucket/code/sourcedir.tar.gz`'s train.py on the host's Python,
    with the channel `train` from `s3://bucket/data/train`."""
    return dict(
        TrainingJobName=name, RoleArn=role,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        HyperParameters={"sagemaker_program": '"train.py"',
                         "sagemaker_submit_directory": f'"s3://{bucket}/code/sourcedir.tar.gz"'},
        InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/data/train"}}}],
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/{output}"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": instances, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 300},
        VpcConfig=vpc_config)
