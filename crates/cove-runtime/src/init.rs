//! Pid 1 of the container and the start of its main process.
//!
//! The runner forks this init into a new PID namespace. It finishes the
//! isolation (mount, UTS, IPC and network namespaces, the new root), forks
//! the job's main process, which sheds every privilege and execs the job,
//! and then does what `docker run --init` (tini) does: forwards SIGTERM and
//! friends to the main process, because the kernel gives pid 1 no default
//! signal actions, and reaps orphans. When the main process ends, init
//! exits with its status and the kernel kills whatever else is left in the
//! namespace.
//!
//! Init reports to the runner over a pipe, one line per event:
//! `started`, `error <message>`, `exit <code>`, `signal <number>`.

use crate::state::Plan;
use anyhow::{Context, Result};
use cove_sys::{
    self as sys, CapabilitySet, Ended, Errno, MountPropagationFlags, Signal, UnshareFlags,
};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// The signals init passes on to the main process.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Exit codes with Docker's meaning: the runtime failed, the command could
/// not be run, the command was not found.
pub const EXIT_SETUP_FAILED: i32 = 125;
pub const EXIT_CANNOT_EXEC: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;

/// The descriptors init is handed by the runner.
pub struct InitFds {
    /// Events to the runner.
    pub report: OwnedFd,
    /// The job's stdout and stderr (pipes the runner reads).
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// The job's output pipes, which init moves to its stdout and stderr.
struct Output {
    stdout: OwnedFd,
    stderr: OwnedFd,
}

fn report(fd: BorrowedFd<'_>, line: &str) {
    let mut msg = line.replace('\n', " ");
    msg.push('\n');
    let _ = sys::write_all(fd, msg.as_bytes());
}

/// The body of init; never returns.
pub fn run(
    plan: &Plan,
    identity: u32,
    root: &Path,
    fds: InitFds,
    runner_gone: impl FnOnce(BorrowedFd<'_>) -> bool,
) -> ! {
    let InitFds {
        report: report_pipe,
        stdout,
        stderr,
    } = fds;
    let report_fd = report_pipe.as_fd();
    // Nothing of the container may outlive the runner that records it.
    if sys::set_parent_death_signal(Signal::SIGKILL).is_err() || runner_gone(report_fd) {
        sys::exit_now(EXIT_SETUP_FAILED);
    }
    match setup_and_start(plan, identity, root, Output { stdout, stderr }) {
        Ok(main) => supervise(main, report_fd),
        Err((code, e)) => {
            report(report_fd, &format!("error {e:#}"));
            sys::exit_now(code);
        }
    }
}

fn setup_and_start(
    plan: &Plan,
    identity: u32,
    root: &Path,
    fds: Output,
) -> Result<i32, (i32, anyhow::Error)> {
    let setup = |e: anyhow::Error| (EXIT_SETUP_FAILED, e);
    let spec = &plan.spec;
    plan.cgroups
        .join_self()
        .context("joining the container's cgroups")
        .map_err(setup)?;
    sys::redirect_stdout(&fds.stdout).map_err(|e| setup(e.into()))?;
    sys::redirect_stderr(&fds.stderr).map_err(|e| setup(e.into()))?;
    drop(fds.stdout);
    drop(fds.stderr);

    let mut flags = UnshareFlags::NEWNS | UnshareFlags::NEWUTS | UnshareFlags::NEWIPC;
    match &spec.netns {
        Some(name) => {
            let path = Path::new(crate::NETNS_DIR).join(name);
            let ns = std::fs::File::open(&path)
                .with_context(|| format!("opening network namespace {}", path.display()))
                .map_err(setup)?;
            sys::enter_net_namespace(&ns)
                .with_context(|| format!("joining network namespace {name}"))
                .map_err(setup)?;
        }
        None => flags |= UnshareFlags::NEWNET,
    }
    sys::unshare(flags).context("unshare").map_err(setup)?;
    // Nothing mounted from here on may propagate back to the host.
    sys::set_propagation(
        Path::new("/"),
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .context("making mounts private")
    .map_err(setup)?;
    sys::sethostname(&spec.hostname)
        .context("setting the hostname")
        .map_err(setup)?;
    if spec.netns.is_none() {
        sys::interface_up("lo")
            .context("bringing up lo")
            .map_err(setup)?;
    }
    crate::rootfs::build(spec, identity, root).map_err(setup)?;
    crate::rootfs::pivot(root, matches!(spec.root, crate::RootFs::Host)).map_err(setup)?;
    let last_cap = sys::last_cap();

    let (exec_r, exec_w) = sys::pipe().map_err(|e| setup(e.into()))?;
    let pid = match sys::fork().map_err(|e| setup(e.into()))? {
        sys::Fork::Child => {
            drop(exec_r);
            start_main(plan, identity, last_cap, exec_w);
        }
        sys::Fork::Parent(pid) => pid,
    };
    drop(exec_w);
    // The pipe closes on a successful exec; otherwise the child explains.
    let err = sys::read_to_end(&exec_r, 4096).unwrap_or_default();
    if !err.is_empty() {
        let ended = sys::wait(pid).ok();
        let code = match ended {
            Some(Ended::Exited(c)) => c,
            _ => EXIT_CANNOT_EXEC,
        };
        return Err((
            code,
            anyhow::anyhow!(String::from_utf8_lossy(&err).into_owned()),
        ));
    }
    Ok(pid)
}

/// Forwards signals and reaps until the main process ends, then exits with
/// its status.
fn supervise(main: i32, report_fd: BorrowedFd<'_>) -> ! {
    report(report_fd, "started");
    // Init is never the process the OOM killer should pick: the job is.
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    // Init keeps only what it needs: the right to signal the job's uid.
    let kill_only = CapabilitySet::KILL;
    let _ = sys::drop_bounding_and_ambient(kill_only, sys::last_cap());
    let _ = sys::set_capabilities(kill_only, kill_only, CapabilitySet::empty());
    let _ = sys::set_no_new_privs();

    let mut signals = FORWARDED.to_vec();
    signals.push(Signal::SIGCHLD);
    let set = sys::signal_set(&signals);
    loop {
        let sig = match sys::wait_for_signal(&set) {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = sys::kill(main, sig);
            continue;
        }
        while let Ok(Some((pid, ended))) = sys::try_wait(None) {
            if pid != main {
                continue;
            }
            let code = match ended {
                Ended::Exited(c) => {
                    report(report_fd, &format!("exit {c}"));
                    c
                }
                Ended::Signaled(s) => {
                    report(report_fd, &format!("signal {s}"));
                    128 + s
                }
            };
            // Leaving pid 1: the kernel ends the rest of the namespace.
            sys::exit_now(code);
        }
    }
}

/// In the forked main process: drop every privilege and exec the job.
fn start_main(plan: &Plan, identity: u32, last_cap: u32, exec_w: OwnedFd) -> ! {
    let (code, msg) = match become_job(plan, identity, last_cap) {
        Err(e) => (EXIT_SETUP_FAILED, format!("{e:#}")),
        Ok(()) => exec(&plan.spec.argv, &plan.spec.env),
    };
    let _ = sys::write_all(&exec_w, msg.as_bytes());
    sys::exit_now(code);
}

fn become_job(plan: &Plan, identity: u32, last_cap: u32) -> Result<()> {
    sys::new_session(0o022);
    sys::reset_signals();
    sys::drop_to_user(identity, identity, last_cap)
        .with_context(|| format!("dropping privileges for uid and gid {identity}"))?;
    // The uid change reset the parent-death signal; set it again, and make
    // sure init did not die in between.
    sys::set_parent_death_signal(Signal::SIGKILL)?;
    if sys::getppid() != 1 {
        anyhow::bail!("the container's init is gone");
    }
    std::env::set_current_dir(&plan.spec.workdir)
        .with_context(|| format!("working directory {}", plan.spec.workdir.display()))?;
    sys::cloexec_from(3)?;
    // Last: from here on only what the exec below needs is called.
    sys::seccomp::confine_to_workload_profile().context("installing the system-call filter")?;
    Ok(())
}

/// execve with a `PATH` search like `execvp`, but in the job's environment,
/// not Cove's. Returns only on failure: an exit code and a message.
fn exec(argv: &[String], env: &[(String, String)]) -> (i32, String) {
    let to_c = |s: &str| sys::cstr(s).ok();
    let Some(c_argv) = argv.iter().map(|a| to_c(a)).collect::<Option<Vec<_>>>() else {
        return (EXIT_CANNOT_EXEC, "argv contains a NUL byte".into());
    };
    let Some(c_env) = env
        .iter()
        .map(|(k, v)| to_c(&format!("{k}={v}")))
        .collect::<Option<Vec<_>>>()
    else {
        return (
            EXIT_CANNOT_EXEC,
            "the environment contains a NUL byte".into(),
        );
    };
    let program = &argv[0];
    let try_exec = |path: &str| -> std::io::Error {
        match sys::cstr(path) {
            Ok(p) => sys::execve(&p, &c_argv, &c_env),
            Err(e) => e,
        }
    };
    let code_of = |e: &std::io::Error| {
        if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) {
            EXIT_NOT_FOUND
        } else {
            EXIT_CANNOT_EXEC
        }
    };
    if program.contains('/') {
        let e = try_exec(program);
        return (code_of(&e), format!("exec {program}: {e}"));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(crate::DEFAULT_PATH);
    let mut denied = None;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let e = try_exec(&format!("{dir}/{program}"));
        match e.raw_os_error().map(Errno::from_raw_os_error) {
            Some(Errno::NOENT | Errno::NOTDIR) => {}
            Some(Errno::ACCESS) => denied = Some(e),
            _ => return (EXIT_CANNOT_EXEC, format!("exec {dir}/{program}: {e}")),
        }
    }
    match denied {
        Some(e) => (EXIT_CANNOT_EXEC, format!("exec {program}: {e}")),
        None => (
            EXIT_NOT_FOUND,
            format!("exec {program}: executable file not found in PATH ({path})"),
        ),
    }
}
