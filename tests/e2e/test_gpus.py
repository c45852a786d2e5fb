"""GPU instance types get the host's GPUs through its Container Device
Interface spec, as NVIDIA's tools write one (`nvidia-ctk cdi generate`).
The machines that run the tests have no GPU: the spec here names two
character devices every Linux host has (/dev/net/tun, /dev/fuse) as the two
GPUs' nodes, /dev/null as the control node and a file as the driver
library. What is real is everything Cove does with a spec: which container
gets which GPU, the device nodes in its /dev, the library bound in, the
variables, SM_NUM_GPUS."""
import json
import os
import tempfile

import pytest

from conftest import Cove
from test_training_jobs import model_of, tar_gz, training_request, wait_for

SPEC = """\
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - {path: /dev/nvidia0, hostPath: /dev/net/tun}
- name: "1"
  containerEdits:
    deviceNodes:
    - {path: /dev/nvidia1, hostPath: /dev/fuse}
- name: all
  containerEdits:
    deviceNodes:
    - {path: /dev/nvidia0, hostPath: /dev/net/tun}
    - {path: /dev/nvidia1, hostPath: /dev/fuse}
containerEdits:
  env: [NVIDIA_VISIBLE_DEVICES=void]
  deviceNodes:
  - {path: /dev/nvidiactl, hostPath: /dev/null}
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-ctk
    args: [nvidia-ctk, hook, update-ldcache, --folder, /opt/nvidia/lib]
  mounts:
  - hostPath: LIBRARY
    containerPath: /opt/nvidia/lib/libcuda.so.999.1
    options: [ro, nosuid, nodev, bind]
"""

SCRIPT = """
import json, os, stat, time
nodes = [d for d in ("/dev/nvidia0", "/dev/nvidia1", "/dev/nvidiactl") if os.path.exists(d)]
seen = {
    "nodes": nodes,
    "char_devices": all(stat.S_ISCHR(os.stat(d).st_mode) for d in nodes),
    "sm_num_gpus": os.environ["SM_NUM_GPUS"],
    "training_env_gpus": json.loads(os.environ["SM_TRAINING_ENV"])["num_gpus"],
    "visible": os.environ.get("NVIDIA_VISIBLE_DEVICES"),
    "ld_library_path": os.environ.get("LD_LIBRARY_PATH"),
    "library": open("/opt/nvidia/lib/libcuda.so.999.1").read() if nodes else None,
}
time.sleep(4)  # the two GPU jobs overlap
json.dump(seen, open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w"))
"""


@pytest.fixture
def gpu_cove():
    if not (os.path.exists("/dev/net/tun") and os.path.exists("/dev/fuse")):
        pytest.skip("needs /dev/net/tun and /dev/fuse to stand for GPUs")
    if os.environ.get("COVE_E2E_HOSTS") == "3":
        pytest.skip("one host's GPUs")
    with tempfile.TemporaryDirectory(prefix="cove-e2e-gpu-") as d:
        cdi = os.path.join(d, "cdi")
        os.makedirs(cdi)
        library = os.path.join(d, "libcuda.so.999.1")
        with open(library, "w") as f:
            f.write("a driver library")
        os.chmod(library, 0o644)
        os.chmod(d, 0o755)
        with open(os.path.join(cdi, "nvidia.yaml"), "w") as f:
            f.write(SPEC.replace("LIBRARY", library))
        data = os.path.join(d, "data")
        os.makedirs(data, mode=0o700)
        server = Cove(data, env={"COVE_CDI_DIRS": cdi}).start()
        yield server
        server.stop()
        server.teardown()


def test_gpu_instances_get_gpus_of_their_own_from_the_hosts_cdi_spec(gpu_cove):
    s3, sm, logs = gpu_cove.client("s3"), gpu_cove.client("sagemaker"), gpu_cove.client("logs")
    bucket = "gpus"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=tar_gz({"train.py": SCRIPT}))
    s3.put_object(Bucket=bucket, Key="data/train/x.csv", Body="1\n")
    jobs = {"gpu-a": "ml.g5.xlarge", "gpu-b": "ml.g5.xlarge", "cpu": "ml.m5.large"}
    for name, instance_type in jobs.items():
        req = training_request(name, bucket)
        req["ResourceConfig"]["InstanceType"] = instance_type
        sm.create_training_job(**req)
    seen = {}
    for name in jobs:
        d = wait_for(sm, name)
        assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
        seen[name] = model_of(s3, bucket, name)
    # One GPU each, not the same one; the spec's own nodes and edits too.
    gpus = sorted(next(n for n in seen[j]["nodes"] if n != "/dev/nvidiactl") for j in ("gpu-a", "gpu-b"))
    assert gpus == ["/dev/nvidia0", "/dev/nvidia1"], seen
    for j in ("gpu-a", "gpu-b"):
        assert len(seen[j]["nodes"]) == 2 and "/dev/nvidiactl" in seen[j]["nodes"], seen[j]
        assert seen[j]["char_devices"], seen[j]
        assert (seen[j]["sm_num_gpus"], seen[j]["training_env_gpus"]) == ("1", 1), seen[j]
        assert seen[j]["visible"] == "void"
        assert seen[j]["ld_library_path"].split(":")[0] == "/opt/nvidia/lib"
        assert seen[j]["library"] == "a driver library"
        stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                           logStreamNamePrefix=j)["logStreams"][0]["logStreamName"]
        first = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream,
                                    startFromHead=True)["events"][0]["message"]
        assert first.startswith("cove: ml.g5.xlarge has 1 GPU(s) on AWS; this container gets 1 of this host's "
                                "(CDI nvidia.com/gpu "), first
    # A CPU instance type gets none of it.
    assert seen["cpu"]["nodes"] == [] and seen["cpu"]["sm_num_gpus"] == "0", seen["cpu"]
    assert json.dumps(seen["cpu"]["visible"]) == "null"
