//! `cove-runtime`: runs one SageMaker-style container as an isolated
//! process on this host, the way the job supervisor needs it: in its own
//! mount, UTS, IPC, PID and network namespaces, on a root assembled from
//! the host's read-only /usr (script mode) or an unpacked image, without any
//! capability and as an unprivileged uid, inside cgroups that cap its CPU
//! and memory, and supervised by a runner process that outlives Cove so a
//! restarted Cove can adopt it. See docs/containers.md.
//!
//! ```text
//! Cove ── launch ──► runner (`cove run-container`, own session, logs, status.json)
//!                      └─ init (pid 1 in the new PID namespace: namespaces, root, signals)
//!                           └─ main process (pid 2: no capabilities, its own uid, exec argv)
//! ```

mod cgroup;
pub mod image;
mod init;
pub mod overlay;
mod rootfs;
mod runner;
mod state;
use cove_sys::{self as sys, Signal};

pub use runner::run_container_main;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use state::{Outcome, Plan, ProcId, RunnerRecord, StatusRecord};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every workload runs under an identity (uid = gid) of its own:
/// `WORKLOAD_ID_BASE` plus its runner's pid. A pid is unique among the
/// host's live processes and a container never outlives its runner, so no
/// two running workloads share an identity, across Cove installations too,
/// without any allocation to record or leak. The range (0x70000000 up to
/// 0x70400000 for the largest pid_max) is what systemd leaves unused,
/// above its container ranges and below the ids that break signed code.
pub const WORKLOAD_ID_BASE: u32 = 0x7000_0000;

/// The name the workload's identity has in the container's /etc/passwd
/// and /etc/group.
pub const WORKLOAD_USER: &str = "sagemaker-user";

/// The identity of the workload whose runner has `runner_pid`.
pub fn workload_id(runner_pid: i32) -> u32 {
    WORKLOAD_ID_BASE + runner_pid.unsigned_abs()
}

/// The exit code reported for a container that vanished without a
/// recorded status (its runner was killed, or the host rebooted).
pub const VANISHED_EXIT_CODE: i32 = -1;

/// Where `ip netns` keeps named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// `PATH` for finding `argv[0]` when the spec's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long `launch` waits for the job's program to start once the runner
/// has prepared its files.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the runner may take to hand the writable binds to the
/// workload's identity (a chown of every file of a large dataset).
const PREPARE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The container's root file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootFs {
    /// Script mode: the host's /usr, /bin, /sbin, /lib*, and /etc, read-only,
    /// on an otherwise empty read-only root.
    Host,
    /// An unpacked root file system, bound as the root read-write (a copy
    /// per container is the caller's business). Mount points the container
    /// needs (/proc, /dev, /sys, /tmp, bind targets) are created in it.
    Image(PathBuf),
}

/// A host file or directory shown inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    pub source: PathBuf,
    /// An absolute path inside the container.
    pub target: PathBuf,
    pub read_only: bool,
}

/// What to run and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// A unique name (letters, digits, `-`, `_`, `.`), used for cgroups.
    pub id: String,
    pub root: RootFs,
    /// `Some(name)`: join /run/netns/<name> (the job's ENI). `None`: a new
    /// network namespace with only loopback, up.
    pub netns: Option<String>,
    pub hostname: String,
    pub binds: Vec<Bind>,
    /// Host device nodes (`source`, under /dev) shown at `target` (under
    /// /dev) in the container's /dev: the GPUs given to it.
    #[serde(default)]
    pub devices: Vec<Bind>,
    pub argv: Vec<String>,
    /// The complete environment; nothing is inherited from Cove.
    pub env: Vec<(String, String)>,
    pub workdir: PathBuf,
    /// CPU limit in cores; 0 for none.
    pub cpus: f64,
    /// Memory limit in bytes; 0 for none.
    pub memory_bytes: u64,
    /// The container's stdout and stderr, appended line by line. Runtime
    /// errors (a missing executable, a failed mount) appear here too,
    /// prefixed with `cove-runtime:`.
    pub log_path: PathBuf,
    /// The runtime's files for this container (spec.json, runner.json,
    /// status.json); kept after the container ends.
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Running,
    /// The main process exited with this code. A container whose runner
    /// vanished without recording an end is `Exited(VANISHED_EXIT_CODE)`;
    /// one the runtime could not start is `Exited(125)` (setup failed),
    /// `Exited(126)` (cannot execute) or `Exited(127)` (not found), as Docker
    /// reports them.
    Exited(i32),
    /// The main process was killed by this signal (9 after [`Container::kill`]
    /// or the OOM killer; see [`Container::oom_killed`]).
    Signaled(i32),
}

/// A launched (or adopted) container. Dropping it leaves the container
/// running; [`Container::adopt`] finds it again.
#[derive(Debug, Clone)]
pub struct Container {
    id: String,
    state_dir: PathBuf,
    cgroups: cgroup::CgroupSet,
    runner: ProcId,
    init: Option<ProcId>,
    identity: Option<u32>,
}

impl Container {
    /// Starts the container and returns once its program has been exec'd
    /// (or fails with the reason it could not be, which is also in the log).
    /// `runner` is the `cove` binary, run as `<runner> run-container
    /// <state_dir>/spec.json`.
    pub fn launch(spec: &ContainerSpec, runner: &Path) -> Result<Container> {
        validate(spec)?;
        std::fs::create_dir_all(&spec.state_dir)
            .with_context(|| format!("creating {}", spec.state_dir.display()))?;
        let state_dir = spec.state_dir.canonicalize()?;
        set_mode(&state_dir, 0o700)?;
        // An unreadable record from an earlier run is no reason not to start.
        if let Ok(Some(old)) = Container::adopt(&state_dir) {
            if old.status() == Status::Running {
                bail!(
                    "container {} is already running in {}",
                    old.id,
                    state_dir.display()
                );
            }
        }
        for f in [state::RUNNER_FILE, state::STATUS_FILE] {
            let _ = std::fs::remove_file(state_dir.join(f));
        }
        if let Some(parent) = spec.log_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let log = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(&spec.log_path)
                .with_context(|| format!("opening {}", spec.log_path.display()))?
        };

        let cgroups = cgroup::create(&spec.id, spec.cpus, spec.memory_bytes);
        let mut spec = spec.clone();
        spec.state_dir = state_dir.clone();
        let plan = Plan { spec, cgroups };
        state::write(&state_dir, state::SPEC_FILE, &plan)?;

        match start_runner(&plan, runner, log) {
            Ok(c) => Ok(c),
            Err(e) => {
                // Whatever got started is stopped; the recorded status stays.
                if let Ok(Some(c)) = Container::adopt(&state_dir) {
                    c.kill();
                    let _ = c.cleanup();
                } else {
                    let _ = plan.cgroups.remove(Duration::from_secs(1));
                }
                Err(e)
            }
        }
    }

    /// Finds the container of `state_dir` again, running or ended (its
    /// recorded status then tells how). `None` if no container was ever
    /// started there.
    pub fn adopt(state_dir: &Path) -> Result<Option<Container>> {
        let Some(plan) = state::read::<Plan>(state_dir, state::SPEC_FILE)? else {
            return Ok(None);
        };
        let Some(record) = state::read::<RunnerRecord>(state_dir, state::RUNNER_FILE)? else {
            return Ok(None);
        };
        Ok(Some(Container {
            id: plan.spec.id,
            state_dir: state_dir.to_path_buf(),
            cgroups: plan.cgroups,
            runner: record.runner,
            init: record.init,
            identity: record.identity,
        }))
    }

    /// The uid (and gid) the container's processes run as; `None` for a
    /// container started before it was recorded.
    pub fn identity(&self) -> Option<u32> {
        self.identity
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host pid of the container's init, whose `/proc/<pid>/ns/*` name
    /// the container's namespaces.
    pub fn init_pid(&self) -> Option<i32> {
        self.init.as_ref().map(|p| p.pid)
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn recorded(&self) -> Option<StatusRecord> {
        state::read(&self.state_dir, state::STATUS_FILE)
            .ok()
            .flatten()
    }

    /// Asks the files and /proc, not a child handle, so it works the same
    /// for an adopted container.
    pub fn status(&self) -> Status {
        let from = |r: StatusRecord| match r.outcome {
            Outcome::Exited(c) => Status::Exited(c),
            Outcome::Signaled(s) => Status::Signaled(s),
        };
        if let Some(r) = self.recorded() {
            return from(r);
        }
        if self.runner.alive() {
            return Status::Running;
        }
        // The runner may have recorded the end just before it exited.
        self.recorded()
            .map(from)
            .unwrap_or(Status::Exited(VANISHED_EXIT_CODE))
    }

    /// Polls [`Container::status`] until the container has ended or
    /// `timeout` passed; `None` if it is still running.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Status> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if s != Status::Running {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to the main process (through init, which forwards it).
    pub fn terminate(&self) {
        if let Some(init) = self.init {
            init.signal(Signal::SIGTERM);
        }
    }

    /// SIGKILL to every process of the container, and waits (a few seconds
    /// at most) until the runner has recorded the end.
    pub fn kill(&self) {
        match self.init {
            // Killing pid 1 of a PID namespace kills all of it.
            Some(init) => {
                init.signal(Signal::SIGKILL);
            }
            // Not started yet: the runner's death takes init with it.
            None => {
                self.runner.signal(Signal::SIGKILL);
            }
        }
        if !self.cgroups.kill_all(Duration::from_secs(2)) {
            tracing::warn!(container = %self.id, "processes are left in the container's cgroups after SIGKILL");
        }
        self.wait_timeout(Duration::from_secs(5));
    }

    /// Removes the container's cgroups and its root mount point once it has
    /// ended. The state files stay (they are the record of how it ended).
    pub fn cleanup(&self) -> Result<()> {
        if self.status() == Status::Running {
            bail!("container {} is still running", self.id);
        }
        self.cgroups.remove(Duration::from_secs(3))?;
        let _ = std::fs::remove_dir(self.state_dir.join(state::ROOT_DIR));
        Ok(())
    }

    /// Whether the memory limit's OOM killer killed a process of the
    /// container (the usual reason for `Signaled(9)` without `kill`).
    pub fn oom_killed(&self) -> bool {
        match self.recorded() {
            Some(r) => r.oom_killed,
            None => self.cgroups.oom_kills() > 0,
        }
    }

    /// Whether the CPU and memory limits of the spec are enforced. False
    /// when cgroups could not be created (the container then runs without,
    /// and a warning was logged).
    pub fn limits_enforced(&self) -> bool {
        self.cgroups.cpu_limited && self.cgroups.memory_limited
    }

    /// CPU time the container has used, in nanoseconds (from its cgroup).
    pub fn cpu_usage_ns(&self) -> Option<u64> {
        self.cgroups.cpu_usage_ns()
    }

    /// Memory charged to the container now, in bytes.
    pub fn memory_usage_bytes(&self) -> Option<u64> {
        self.cgroups.memory_usage_bytes()
    }

    /// Host pids of the container's processes (from its cgroups).
    pub fn pids(&self) -> Vec<i32> {
        self.cgroups.procs()
    }

    /// The directories of the container's cgroups.
    pub fn cgroup_paths(&self) -> Vec<PathBuf> {
        self.cgroups.groups.iter().map(|g| g.path.clone()).collect()
    }
}

impl ProcId {
    /// Signals this process if it is still the one recorded: the pidfd is
    /// opened first and the start time checked after, so a pid recycled in
    /// between is never signalled.
    fn signal(&self, sig: Signal) -> bool {
        sys::signal_if(self.pid, sig, || self.alive())
    }
}

/// A path inside the container that cannot climb out of where it names.
fn absolute_without_dotdot(p: &Path) -> bool {
    p.is_absolute()
        && !p
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

fn validate(spec: &ContainerSpec) -> Result<()> {
    let id_ok = !spec.id.is_empty()
        && spec.id.len() <= 200
        && !spec.id.starts_with('.')
        && spec
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !id_ok {
        bail!(
            "container id {:?} must be 1-200 letters, digits, '-', '_' or '.'",
            spec.id
        );
    }
    if spec.argv.is_empty() {
        bail!("container {}: argv is empty", spec.id);
    }
    if let Some(ns) = &spec.netns {
        if ns.is_empty() || ns.contains('/') || ns == "." || ns == ".." {
            bail!("container {}: bad network namespace name {ns:?}", spec.id);
        }
    }
    if spec.hostname.is_empty() || spec.hostname.len() > 64 {
        bail!("container {}: the hostname must be 1-64 bytes", spec.id);
    }
    if !spec.workdir.is_absolute() {
        bail!(
            "container {}: workdir {} is not absolute",
            spec.id,
            spec.workdir.display()
        );
    }
    for b in &spec.binds {
        if !absolute_without_dotdot(&b.target) {
            bail!(
                "container {}: bind target {} must be absolute, without ..",
                spec.id,
                b.target.display()
            );
        }
        if !b.source.exists() {
            bail!(
                "container {}: bind source {} does not exist",
                spec.id,
                b.source.display()
            );
        }
    }
    for d in &spec.devices {
        use std::os::unix::fs::FileTypeExt;
        let under_dev = |p: &Path| p.starts_with("/dev/") && absolute_without_dotdot(p);
        if !under_dev(&d.source) || !under_dev(&d.target) {
            bail!(
                "container {}: device {} -> {} must be under /dev, without ..",
                spec.id,
                d.source.display(),
                d.target.display()
            );
        }
        let kind = std::fs::metadata(&d.source).map(|m| m.file_type());
        if !kind.is_ok_and(|k| k.is_char_device() || k.is_block_device()) {
            bail!(
                "container {}: device {} is not a device node on this host",
                spec.id,
                d.source.display()
            );
        }
    }
    if let RootFs::Image(dir) = &spec.root {
        if !dir.is_dir() {
            bail!(
                "container {}: image root {} is not a directory",
                spec.id,
                dir.display()
            );
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// chown -R without following symlinks.
pub(crate) fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Spawns the runner detached (its own session, reparented to init by a
/// double fork, so Cove never has to reap it and killing Cove's process
/// group spares it) and waits for its verdict on the ready pipe.
fn start_runner(plan: &Plan, runner: &Path, log: std::fs::File) -> Result<Container> {
    let state_dir = &plan.spec.state_dir;
    let (ready_r, ready_w) = sys::pipe()?;
    let w = ready_w.as_raw_fd();
    // The runner's command line is the container's /proc/1/cmdline, which
    // its processes can read: no host path in it (the spec is named
    // relative to the runner's first working directory).
    let mut cmd = std::process::Command::new(runner);
    std::os::unix::process::CommandExt::arg0(&mut cmd, "cove-runtime");
    cmd.arg("run-container")
        .arg(state::SPEC_FILE)
        .env_clear()
        .env(runner::READY_FD_ENV, w.to_string())
        .current_dir(state_dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    sys::daemonize_before_exec(&mut cmd, w);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", runner.display()))?;
    child.wait()?;
    drop(ready_w);

    // The runner says `prepared` once the binds are its workload's, then
    // `ok` or `error …`.
    let mut deadline = Instant::now() + PREPARE_TIMEOUT;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "container {}: its program did not start within {:?}",
                plan.spec.id,
                START_TIMEOUT
            );
        }
        let ready = sys::poll_readable(&[Some(ready_r.as_fd())], left)?;
        if !ready[0] {
            continue;
        }
        let n = sys::read(&ready_r, &mut buf)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        while answer.starts_with(runner::PREPARED) {
            answer.drain(..runner::PREPARED.len());
            deadline = Instant::now() + START_TIMEOUT;
        }
        if answer.contains(&b'\n') {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer).trim().to_string();
    if answer == "ok" {
        return Container::adopt(state_dir)?
            .with_context(|| format!("container {}: the runner left no record", plan.spec.id));
    }
    let why = answer
        .strip_prefix("error ")
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "the runner exited before the container started; see {}",
                plan.spec.log_path.display()
            )
        });
    // The runner records the end right after; wait for it so the state
    // directory tells the same story.
    let path = state::path(state_dir, state::STATUS_FILE);
    let until = Instant::now() + Duration::from_secs(2);
    while !path.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let ended = state::read::<state::StatusRecord>(state_dir, state::STATUS_FILE)
        .ok()
        .flatten()
        .map(|r| r.outcome);
    let message = format!("container {}: {why}", plan.spec.id);
    match ended {
        Some(state::Outcome::Exited(init::EXIT_NOT_FOUND | init::EXIT_CANNOT_EXEC)) => {
            Err(ProgramNotStarted(why).into())
        }
        _ => Err(anyhow::anyhow!(message)),
    }
}

/// The container was set up but its own program could not be run (not
/// found on its `PATH`, not executable): a fault of the image or of the
/// request, which retrying does not mend, unlike the host's own failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramNotStarted(pub String);

impl std::fmt::Display for ProgramNotStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProgramNotStarted {}
