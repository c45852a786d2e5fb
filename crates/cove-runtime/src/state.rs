//! The files a container keeps in its state directory. They are the only
//! link between Cove and a runner, so a restarted Cove (or a `cove` binary of
//! another build) can find a container again: everything is JSON, written to
//! a temporary name and renamed, so a reader never sees half a file.

use crate::cgroup::CgroupSet;
use crate::ContainerSpec;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// What `launch` hands the runner: the caller's spec and the decisions
/// `launch` made for it.
pub const SPEC_FILE: &str = "spec.json";
/// Written by the runner: its own pid and that of the container's init.
pub const RUNNER_FILE: &str = "runner.json";
/// Written by the runner once the container has ended.
pub const STATUS_FILE: &str = "status.json";
/// An empty directory the container's root is mounted on (inside the
/// container's own mount namespace only).
pub const ROOT_DIR: &str = "root";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub spec: ContainerSpec,
    pub cgroups: CgroupSet,
}

/// A process identified so that a recycled pid is not mistaken for it: the
/// start time (clock ticks after boot, /proc/<pid>/stat field 22) never
/// repeats for a pid number within one boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: i32,
    pub start: u64,
}

impl ProcId {
    pub fn of(pid: i32) -> Option<ProcId> {
        let (start, _) = proc_stat(pid)?;
        Some(ProcId { pid, start })
    }

    /// Whether this very process still exists and has not ended (a zombie
    /// has ended; it only waits to be reaped).
    pub fn alive(&self) -> bool {
        matches!(proc_stat(self.pid), Some((start, state)) if start == self.start && state != 'Z' && state != 'X')
    }
}

/// Start time and state letter of a process, from /proc/<pid>/stat.
fn proc_stat(pid: i32) -> Option<(u64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; the
    // fields after its closing parenthesis are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3) the start time is field 22: 19 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, state))
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RunnerRecord {
    pub runner: ProcId,
    /// The container's init (pid 1 inside), once it has been started.
    pub init: Option<ProcId>,
    /// The uid = gid the container's processes run as
    /// ([`crate::workload_id`] of the runner).
    #[serde(default)]
    pub identity: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Exited(i32),
    Signaled(i32),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusRecord {
    pub outcome: Outcome,
    /// The memory cgroup's OOM killer killed at least one process.
    #[serde(default)]
    pub oom_killed: bool,
    /// Milliseconds since the Unix epoch when the runner saw the end.
    pub finished_ms: u64,
}

pub fn path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(name)
}

/// Writes `value` as JSON to `state_dir/name` atomically.
pub fn write<T: Serialize>(state_dir: &Path, name: &str, value: &T) -> io::Result<()> {
    let tmp = state_dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, state_dir.join(name))
}

/// Reads `state_dir/name`; `Ok(None)` when the file does not exist.
pub fn read<T: for<'de> Deserialize<'de>>(state_dir: &Path, name: &str) -> io::Result<Option<T>> {
    match std::fs::read(state_dir.join(name)) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{name}: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(cove_model::convert::millis)
        .unwrap_or(0)
}
