//! The runner: `cove run-container <state_dir>/spec.json`, one process per
//! container, started by `launch` in a session of its own so it outlives a
//! Cove that is restarted or killed.
//!
//! It forks the container's init into a new PID namespace, copies the
//! job's stdout and stderr line by line into the log file, and when the
//! container ends records how in `status.json`. It is the container's
//! parent, and init dies with it (PR_SET_PDEATHSIG), so a container never
//! runs unrecorded.

use crate::init::{self, InitFds};
use crate::state::{self, Outcome, Plan, ProcId, RunnerRecord, StatusRecord};
use anyhow::{Context, Result};
use cove_sys::{self as sys, Ended, Signal, UnshareFlags};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// The environment variable naming the descriptor on which the runner tells
/// `launch` that the job started (`ok`) or why it did not (`error ...`).
pub const READY_FD_ENV: &str = "COVE_RUNTIME_READY_FD";

/// The line the runner sends once the container's files are prepared (its
/// binds handed to the workload's identity), before `ok` or `error`.
pub const PREPARED: &[u8] = b"prepared\n";

/// A partial line is written out after this long without its newline (a
/// progress bar), so the log never lags far behind the job.
const PARTIAL_LINE_DELAY: Duration = Duration::from_secs(2);
/// A line longer than this is split.
const MAX_LINE: usize = 64 * 1024;
/// After init ended, output still in the pipes is read for this long.
const DRAIN: Duration = Duration::from_secs(2);

struct Ready(Option<OwnedFd>);

impl Ready {
    fn from_env() -> Ready {
        let fd = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<RawFd>().ok())
            .and_then(sys::take_inherited);
        Ready(fd)
    }

    fn send(&mut self, line: &str) {
        if let Some(fd) = self.0.take() {
            let msg = format!("{}\n", line.replace('\n', " "));
            let _ = sys::write_all(&fd, msg.as_bytes());
        }
    }

    /// Says the files are prepared; the final answer is still to come.
    fn prepared(&self) {
        if let Some(fd) = &self.0 {
            let _ = sys::write_all(fd, PREPARED);
        }
    }
}

/// The body of `cove run-container <spec>` (`launch` names the spec
/// relative to the state directory, the runner's first working directory).
pub fn run_container_main(spec_path: &Path) -> ! {
    let mut ready = Ready::from_env();
    let spec_path = std::fs::canonicalize(spec_path).unwrap_or_else(|_| spec_path.to_path_buf());
    let _ = std::env::set_current_dir("/");
    let state_dir = spec_path.parent().unwrap_or(Path::new("/"));
    match run(&spec_path, state_dir, &mut ready) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("cove-runtime: {e:#}");
            ready.send(&format!("error {e:#}"));
            if !state::path(state_dir, state::STATUS_FILE).exists() {
                let _ = state::write(
                    state_dir,
                    state::STATUS_FILE,
                    &StatusRecord {
                        outcome: Outcome::Exited(init::EXIT_SETUP_FAILED),
                        oom_killed: false,
                        finished_ms: state::now_ms(),
                    },
                );
            }
            std::process::exit(1)
        }
    }
}

fn run(spec_path: &Path, state_dir: &Path, ready: &mut Ready) -> Result<()> {
    let plan: Plan = state::read(state_dir, state::SPEC_FILE)?
        .with_context(|| format!("{} does not exist", spec_path.display()))?;
    // Nothing the runner inherited may reach the job.
    sys::cloexec_from(3)?;
    let me = ProcId::of(sys::getpid()).context("reading /proc/self/stat")?;
    let identity = crate::workload_id(me.pid);
    state::write(
        state_dir,
        state::RUNNER_FILE,
        &RunnerRecord {
            runner: me,
            init: None,
            identity: Some(identity),
        },
    )?;
    // A file system mounted over NFS (an EFS channel or home) keeps its
    // owners: several workloads write it at once, each as root does on AWS
    // (its mount leaves permission checks to the server).
    for b in plan
        .spec
        .binds
        .iter()
        .filter(|b| !b.read_only && !sys::is_on_fuse(&b.source))
    {
        crate::chown_tree(&b.source, identity, identity).with_context(|| {
            format!("handing {} to the container's identity", b.source.display())
        })?;
    }
    ready.prepared();

    // Blocked here, inherited blocked by init, which waits for them with
    // sigwaitinfo; the runner reads its own through a signalfd.
    let mut blocked = init::FORWARDED.to_vec();
    blocked.push(Signal::SIGCHLD);
    sys::block_signals(&blocked)?;
    let sigfd = sys::signal_fd(&[
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ])?;

    let (out_r, out_w) = sys::pipe()?;
    let (err_r, err_w) = sys::pipe()?;
    let (rep_r, rep_w) = sys::pipe()?;
    let root = state_dir.join(state::ROOT_DIR);
    std::fs::create_dir_all(&root)?;

    sys::unshare(UnshareFlags::NEWPID).context("unshare(CLONE_NEWPID)")?;
    let pid = match sys::fork()? {
        sys::Fork::Child => {
            drop(ready.0.take());
            drop((out_r, err_r, rep_r, sigfd));
            init::run(
                &plan,
                identity,
                &root,
                InitFds {
                    report: rep_w,
                    stdout: out_w,
                    stderr: err_w,
                },
                // With the runner gone its end of the pipe is closed: EPIPE.
                |report| sys::write_all(report, b"init\n").is_err(),
            );
        }
        sys::Fork::Parent(pid) => pid,
    };
    drop((out_w, err_w, rep_w));
    let init = ProcId::of(pid).context("reading the init's /proc entry")?;
    state::write(
        state_dir,
        state::RUNNER_FILE,
        &RunnerRecord {
            runner: me,
            init: Some(init),
            identity: Some(identity),
        },
    )?;

    let mut out = Stream::new(out_r);
    let mut err = Stream::new(err_r);
    let mut rep = Stream::new(rep_r);
    let mut reported: Option<Outcome> = None;
    let mut init_ended: Option<Ended> = None;
    let mut drain_until: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if init_ended.is_none() {
            if let Ok(Some((_, e))) = sys::try_wait(Some(pid)) {
                init_ended = Some(e);
                drain_until = Some(Instant::now() + DRAIN);
            }
        }
        let closed = out.fd.is_none() && err.fd.is_none() && rep.fd.is_none();
        if let (Some(_), Some(until)) = (init_ended, drain_until) {
            if closed || Instant::now() >= until {
                break;
            }
        }
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(1);
        for s in [&out, &err] {
            if let Some(since) = s.since {
                wake = wake.min(since + PARTIAL_LINE_DELAY);
            }
        }
        if let Some(until) = drain_until {
            wake = wake.min(until);
        }
        let timeout = wake.saturating_duration_since(now);
        let fds = [out.fd(), err.fd(), rep.fd(), Some(sigfd.as_fd())];
        let readable = sys::poll_readable(&fds, timeout.max(Duration::from_millis(1)))?;
        for (i, s) in [&mut out, &mut err].into_iter().enumerate() {
            if readable[i] {
                s.read_into_log(&mut buf);
            }
        }
        if readable[2] {
            for line in rep.read_lines(&mut buf) {
                handle_report(&line, ready, &mut reported);
            }
        }
        if readable[3] {
            if let Ok(Some(Signal::SIGTERM | Signal::SIGINT)) = sys::read_signal(&sigfd) {
                // Stopping the runner means stopping the job, gracefully.
                let _ = sys::kill(pid, Signal::SIGTERM);
            }
        }
        let now = Instant::now();
        for s in [&mut out, &mut err] {
            if s.since.is_some_and(|t| now >= t + PARTIAL_LINE_DELAY) {
                s.flush_partial();
            }
        }
    }
    out.flush_partial();
    err.flush_partial();

    let outcome = reported.unwrap_or(match init_ended {
        Some(Ended::Exited(c)) => Outcome::Exited(c),
        Some(Ended::Signaled(s)) => Outcome::Signaled(s),
        None => Outcome::Exited(init::EXIT_SETUP_FAILED),
    });
    ready.send(&format!(
        "error the container ended before its program started ({outcome:?})"
    ));
    state::write(
        state_dir,
        state::STATUS_FILE,
        &StatusRecord {
            outcome,
            oom_killed: plan.cgroups.oom_kills() > 0,
            finished_ms: state::now_ms(),
        },
    )?;
    Ok(())
}

fn handle_report(line: &str, ready: &mut Ready, reported: &mut Option<Outcome>) {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    match word {
        "started" => ready.send("ok"),
        "error" => {
            eprintln!("cove-runtime: {rest}");
            ready.send(&format!("error {rest}"));
        }
        "exit" => *reported = rest.parse().ok().map(Outcome::Exited),
        "signal" => *reported = rest.parse().ok().map(Outcome::Signaled),
        _ => {}
    }
}

/// One pipe from the container and the part of a line read from it.
struct Stream {
    fd: Option<OwnedFd>,
    pending: Vec<u8>,
    /// When the pending partial line began.
    since: Option<Instant>,
}

impl Stream {
    fn new(fd: OwnedFd) -> Stream {
        Stream {
            fd: Some(fd),
            pending: Vec::new(),
            since: None,
        }
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    /// Reads what is there; `None` at end of file (the descriptor is closed).
    fn read(&mut self, buf: &mut [u8]) -> Option<usize> {
        match sys::read(self.fd.as_ref()?, buf) {
            Ok(0) | Err(_) => {
                self.fd = None;
                None
            }
            Ok(n) => Some(n),
        }
    }

    /// Appends complete lines to the log (the runner's stdout, opened
    /// O_APPEND), each batch in one write, so lines of stdout and stderr
    /// never mix mid-line.
    fn read_into_log(&mut self, buf: &mut [u8]) {
        let Some(n) = self.read(buf) else {
            self.flush_partial();
            return;
        };
        self.pending.extend_from_slice(&buf[..n]);
        if let Some(pos) = self.pending.iter().rposition(|&b| b == b'\n') {
            let _ = sys::write_all(std::io::stdout(), &self.pending[..=pos]);
            self.pending.drain(..=pos);
            self.since = None;
        }
        if self.pending.len() >= MAX_LINE {
            self.flush_partial();
        }
        if !self.pending.is_empty() && self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    fn flush_partial(&mut self) {
        if !self.pending.is_empty() {
            self.pending.push(b'\n');
            let _ = sys::write_all(std::io::stdout(), &self.pending);
            self.pending.clear();
        }
        self.since = None;
    }

    /// Complete lines read (the report channel).
    fn read_lines(&mut self, buf: &mut [u8]) -> Vec<String> {
        if let Some(n) = self.read(buf) {
            self.pending.extend_from_slice(&buf[..n]);
        } else {
            self.pending.push(b'\n');
        }
        let mut lines = Vec::new();
        while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line[..pos]).trim().to_string();
            if !line.is_empty() {
                lines.push(line);
            }
        }
        lines
    }
}
