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
- when the SDK's `distribution` asked for `mpi` (`sagemaker_mpi_enabled`),
  as the toolkit's MPI runner does: every host starts `sshd` on port 22
  (its own host key, the image's key pair); the first host waits until
  every other host's port 22 answers, then runs `mpirun` over all hosts
  (`sagemaker_mpi_num_of_processes_per_host` ranks each, the toolkit's MCA
  options, `sagemaker_mpi_custom_mpi_options`, the job's environment with
  `-x`) on `python -m mpi4py <entry point>`; the other hosts wait until
  the `orted` that mpirun started on them through ssh has ended;
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
import shutil
import subprocess
import sys
import time

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
    with proc:
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
        with open(FAILURE_FILE) as f:
            own = f.read().strip()
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


def job_hosts(env):
    """The job's hosts, the first one the master (`algo-1` alone outside a job)."""
    return json.loads(env.get("SM_HOSTS", "[]")) or [env.get("SM_CURRENT_HOST", "algo-1")]


def script_command(python, env):
    """The command that runs the user's script on this host."""
    entry_point = env["SM_USER_ENTRY_POINT"]
    args = json.loads(env.get("SM_USER_ARGS", "[]"))
    # `pytorchddp` too: AWS's toolkit starts it with mpirun; Cove with
    # torchrun, which sets the same env:// variables (RANK, WORLD_SIZE,
    # LOCAL_RANK, MASTER_ADDR, MASTER_PORT) but no OMPI_* ones.
    if any(hyperparameter(name) in (True, "true", "True") for name in TORCHRUN_LAUNCHERS):
        hosts = job_hosts(env)
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


MPI_ENABLED = "sagemaker_mpi_enabled"
# Where a host keeps its sshd's and ssh's files: the container's own /tmp.
MPI_DIR = "/tmp/.cove-mpi"
# The key pair the image carries (scripts/framework-images.sh makes it when
# it builds the image), as AWS's framework images carry one for mpirun.
IMAGE_KEY = "/etc/cove/mpi/id_ed25519"
SSH_PORT = 22
# How long the first host waits for every other host's sshd.
WORKERS_TIMEOUT = 300
# The environment the job's processes do not take from mpirun's host.
NOT_EXPORTED = {"HOSTNAME", "PWD", "OLDPWD", "SHLVL", "_", "TERM"}


def mpi_file(name):
    """A file of this host's MPI setup: `ssh_config`, `sshd_config`, keys,
    and `orted.ended`, written on a worker by the wrapper mpirun starts
    there instead of orted."""
    return os.path.join(MPI_DIR, name)


def mpi_enabled():
    return hyperparameter(MPI_ENABLED) in (True, "true", "True")


def mpi_command(python, env):
    """The toolkit's mpirun command line, run on the first host."""
    hosts = job_hosts(env)
    per_host = int(hyperparameter("sagemaker_mpi_num_of_processes_per_host") or 1)
    custom = hyperparameter("sagemaker_mpi_custom_mpi_options") or ""
    entry_point = env["SM_USER_ENTRY_POINT"]
    args = json.loads(env.get("SM_USER_ARGS", "[]"))
    command = ["mpirun", "--host", ",".join(f"{h}:{per_host}" for h in hosts),
               "-np", str(len(hosts) * per_host),
               "--allow-run-as-root", "--display-map", "--tag-output",
               "-mca", "btl_tcp_if_include", "eth0", "-mca", "oob_tcp_if_include", "eth0",
               "-mca", "plm_rsh_no_tree_spawn", "1", "-bind-to", "none", "-map-by", "slot",
               "-mca", "pml", "ob1", "-mca", "btl", "^openib",
               "-mca", "orte_abort_on_non_zero_status", "1",
               "-mca", "btl_vader_single_copy_mechanism", "none",
               # Cove's: ssh with this host's files, and orted started in
               # the foreground through a wrapper that tells its host's
               # toolkit when it has ended.
               "-mca", "plm_rsh_args", f"-F {mpi_file('ssh_config')}", "--leave-session-attached",
               "-mca", "orte_launch_agent", f"{python} {os.path.abspath(__file__)} orted",
               "-x", "NCCL_MIN_NRINGS=4", "-x", "NCCL_SOCKET_IFNAME=eth0", "-x", "NCCL_DEBUG=INFO",
               *shlex.split(custom)]
    for name in sorted(env):
        if name not in NOT_EXPORTED and name.isidentifier():
            command += ["-x", name]
    return command + [python, "-m", "mpi4py", entry_point, *args]


def start_sshd():
    """Starts sshd on port 22 as the job's user, with a host key of its
    own and the image's public key as the one key it accepts; writes the
    ssh client's configuration beside it."""
    if not os.path.exists(IMAGE_KEY) or shutil.which("sshd", path="/usr/sbin:/usr/bin") is None:
        raise RuntimeError("this image has no sshd or no MPI key pair (" + IMAGE_KEY + "): "
                           "the mpi distribution needs an image built with OpenMPI and OpenSSH, "
                           "as Cove's PyTorch image is (scripts/framework-images.sh pytorch)")
    os.makedirs(MPI_DIR, mode=0o700, exist_ok=True)
    host_key = mpi_file("ssh_host_ed25519_key")
    if not os.path.exists(host_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key], check=True)
    identity = mpi_file("id_ed25519")
    shutil.copyfile(IMAGE_KEY, identity)
    os.chmod(identity, 0o600)
    shutil.copyfile(IMAGE_KEY + ".pub", mpi_file("authorized_keys"))
    files = {
        "sshd_config": f"""Port {SSH_PORT}
HostKey {host_key}
PidFile {mpi_file("sshd.pid")}
AuthorizedKeysFile {mpi_file("authorized_keys")}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
LogLevel ERROR
""",
        "ssh_config": f"""Host *
    Port {SSH_PORT}
    IdentityFile {identity}
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
""",
    }
    for name, text in files.items():
        path = mpi_file(name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
    sshd = shutil.which("sshd", path="/usr/sbin:/usr/bin")
    subprocess.Popen([sshd, "-D", "-e", "-f", mpi_file("sshd_config")])


def wait_for_workers(hosts, timeout=WORKERS_TIMEOUT):
    """Waits until ssh logs in to every host, as the toolkit does before
    mpirun (which would fail on a host whose sshd is not up yet). Returns
    the ones that never let it in."""
    waiting = list(hosts)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for host in list(waiting):
            probe = subprocess.run(["ssh", "-F", mpi_file("ssh_config"), "-o", "BatchMode=yes",
                                    "-o", "ConnectTimeout=2", host, "true"],
                                   stdin=subprocess.DEVNULL, capture_output=True)
            if probe.returncode == 0:
                waiting.remove(host)
        if waiting:
            time.sleep(0.5)
    return waiting


def run_orted(args):
    """Runs on a worker as mpirun's launch agent: orted, then the marker
    its host's toolkit waits for."""
    os.makedirs(MPI_DIR, mode=0o700, exist_ok=True)
    code = subprocess.call(["orted", *args])
    with open(mpi_file("orted.ended"), "w") as f:
        f.write(str(code))
    sys.exit(code)


def run_mpi(python, env):
    """The MPI runner: the first host launches, the others serve."""
    hosts = job_hosts(env)
    current = env.get("SM_CURRENT_HOST", hosts[0])
    try:
        start_sshd()
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        fail("ExecuteUserScriptError", 1, [f"{type(e).__name__}: {e}"], ["sshd"])
    if current != hosts[0]:
        print(f"cove: {current} waits for mpirun on {hosts[0]}", file=sys.stderr, flush=True)
        while not os.path.exists(mpi_file("orted.ended")):
            time.sleep(0.2)
        print(f"cove: MPI process on {current} finished", file=sys.stderr, flush=True)
        return
    missing = wait_for_workers(hosts[1:])
    if missing:
        message = (f"TimeoutError: ssh could not log in to {', '.join(missing)} (port {SSH_PORT}) "
                   f"in {WORKERS_TIMEOUT} s: the hosts' security groups must let them reach each other")
        fail("ExecuteUserScriptError", 1, [message], ["mpirun"])
    command = mpi_command(python, env)
    code, lines = run(command, env, CODE_DIR)
    if code != 0:
        hint(lines)
        fail("ExecuteUserScriptError", code, lines, command)


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
    if mpi_enabled():
        run_mpi(python, env)
        return
    command = script_command(python, env)
    code, lines = run(command, env, CODE_DIR)
    if code != 0:
        hint(lines)
        fail("ExecuteUserScriptError", code, lines, command)


if __name__ == "__main__":
    if sys.argv[1:2] == ["orted"]:
        run_orted(sys.argv[2:])
    main()
