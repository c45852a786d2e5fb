"""Cove's training toolkit for framework images in script mode.

SageMaker's framework images run the user's script through the SageMaker
training toolkit. Cove runs framework-image jobs in script mode on the
host's Python (the image itself is not on the machine), and this program
plays the toolkit's part inside the job's container:

- installs `requirements.txt` from the source directory with pip, through
  the job's own network (so it fails in a private subnet without a route to
  a package index, as on AWS), into a directory on the script's path;
- runs the script as the toolkit does (`python <entry point> <SM_USER_ARGS>`)
  in `/opt/ml/code`, or, when the SDK's `distribution` asked for
  `torch_distributed` or `pytorchddp` (the `sagemaker_torch_distributed_enabled`
  or `sagemaker_pytorch_ddp_enabled` hyperparameter), under `torchrun`
  across the job's hosts, the first host being the master
  (`MASTER_ADDR`/`MASTER_PORT`, `--node_rank`);
- when a step fails, writes the toolkit's error (`InstallRequirementsError`
  or `ExecuteUserScriptError`, with `ExitCode`, `ErrorMessage` and
  `Command`) to `/opt/ml/output/failure`, which becomes the job's
  `FailureReason` (a failure file the script wrote itself is kept), and
  exits with the step's exit code.

Only the standard library: it runs on whatever Python the host has.
"""
import collections
import json
import os
import shlex
import subprocess
import sys

CODE_DIR = "/opt/ml/code"
PACKAGES_DIR = "/opt/ml/code/.cove-packages"
FAILURE_FILE = "/opt/ml/output/failure"
# SageMaker's FailureReason holds 1,024 characters; keep room for the rest.
MAX_ERROR_MESSAGE = 700


def error_message(stderr_lines):
    """The part of a failed command's standard error that says what went
    wrong: the exception that ended a Python traceback, or else the last
    lines."""
    lines = [line.rstrip("\n") for line in stderr_lines]
    start = None
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last):"):
            start = i
    if start is not None:
        tail = [line for line in lines[start + 1:] if line and not line.startswith(" ")]
        message = "\n".join(tail)
    else:
        message = "\n".join([line for line in lines if line.strip()][-5:])
    if len(message) > MAX_ERROR_MESSAGE:
        message = "..." + message[-MAX_ERROR_MESSAGE:]
    return message


def failure_text(kind, exit_code, message, command):
    """The toolkit's report of a failed step."""
    return f'{kind}:\nExitCode {exit_code}\nErrorMessage "{message}"\nCommand "{command}"'


def run(command, env, cwd):
    """Runs `command`, passing its output through to the job's log, and
    returns its exit code and the last lines of its standard error."""
    tail = collections.deque(maxlen=200)
    try:
        proc = subprocess.Popen(command, env=env, cwd=cwd, stderr=subprocess.PIPE,
                                text=True, errors="replace")
    except OSError as e:
        return 127, [f"{type(e).__name__}: {e}"]
    for line in proc.stderr:
        sys.stderr.write(line)
        sys.stderr.flush()
        tail.append(line)
    return proc.wait(), list(tail)


def fail(kind, exit_code, lines, command):
    """Reports a failed step, unless the script wrote its own failure file
    (the contract's way to set the FailureReason), and exits."""
    text = failure_text(kind, exit_code, error_message(lines), shlex.join(command))
    print(text, file=sys.stderr)
    try:
        own = open(FAILURE_FILE).read().strip()
    except OSError:
        own = ""
    if not own:
        os.makedirs(os.path.dirname(FAILURE_FILE), exist_ok=True)
        with open(FAILURE_FILE, "w") as f:
            f.write(text)
    sys.exit(exit_code if 0 < exit_code < 256 else 1)


MASTER_PORT = "7777"
# The `distribution` choices Cove starts under torchrun.
TORCHRUN_LAUNCHERS = ("sagemaker_torch_distributed_enabled", "sagemaker_pytorch_ddp_enabled")


def hyperparameter(name):
    """A `sagemaker_*` hyperparameter as the toolkit reads it (JSON-decoded)."""
    try:
        return json.loads(os.environ.get("SM_FRAMEWORK_PARAMS", "{}")).get(name)
    except ValueError:
        return None


def script_command(python, env):
    """The command that runs the user's script on this host."""
    entry_point = env["SM_USER_ENTRY_POINT"]
    args = json.loads(env.get("SM_USER_ARGS", "[]"))
    # `pytorchddp` too: AWS's toolkit starts it with mpirun; Cove with
    # torchrun, which sets the same env:// variables (RANK, WORLD_SIZE,
    # LOCAL_RANK, MASTER_ADDR, MASTER_PORT) but no OMPI_* ones.
    if any(hyperparameter(name) in (True, "true", "True") for name in TORCHRUN_LAUNCHERS):
        hosts = json.loads(env.get("SM_HOSTS", "[]")) or [env.get("SM_CURRENT_HOST", "algo-1")]
        gpus = int(env.get("SM_NUM_GPUS", "0") or 0)
        env["MASTER_ADDR"], env["MASTER_PORT"] = hosts[0], MASTER_PORT
        # `--redirects 1 --tee 1`: the workers' stdout is teed to the log as
        # it comes (their stderr goes there directly). Spelled out because
        # torch 1.13 on Python 3.11 (Debian 12's) cannot parse the default
        # `0`, nor `3`: its IntFlag lookup finds single-bit values only.
        return [python, "-m", "torch.distributed.run",
                "--nnodes", str(len(hosts)), "--nproc_per_node", str(max(gpus, 1)),
                "--redirects", "1", "--tee", "1",
                "--node_rank", str(hosts.index(env.get("SM_CURRENT_HOST", hosts[0]))),
                "--master_addr", hosts[0], "--master_port", MASTER_PORT,
                entry_point, *args]
    return [python, entry_point, *args]


def hint(lines):
    """Cove's word when a module is missing: script mode runs the host's Python."""
    if any("ModuleNotFoundError" in line for line in lines):
        print(f"cove: script mode runs the host's Python ({sys.executable}), which lacks this "
              "module. List it in requirements.txt (installed through the job's network), "
              "install it on the host, or push an image that has it to Cove's registry.",
              file=sys.stderr)


def main():
    env = dict(os.environ)
    python = sys.executable or "/usr/bin/python3"
    requirements = os.path.join(CODE_DIR, "requirements.txt")
    if os.path.exists(requirements):
        command = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                   "--target", PACKAGES_DIR, "-r", "requirements.txt"]
        print(f"cove: installing {requirements}", file=sys.stderr)
        code, lines = run(command, env, CODE_DIR)
        if code != 0:
            fail("InstallRequirementsError", code, lines, command)
    path = [PACKAGES_DIR, CODE_DIR] + [p for p in env.get("PYTHONPATH", "").split(":") if p]
    env["PYTHONPATH"] = ":".join(path)
    command = script_command(python, env)
    code, lines = run(command, env, CODE_DIR)
    if code != 0:
        hint(lines)
        fail("ExecuteUserScriptError", code, lines, command)


if __name__ == "__main__":
    main()
