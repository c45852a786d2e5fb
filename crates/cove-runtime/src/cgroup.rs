//! Control groups for one container: the CPU and memory limits of its
//! instance type, a cap on tasks, a usage counter, and a handle to kill
//! every process of the container at once.
//!
//! Hosts differ: cgroup v2 alone (`/sys/fs/cgroup` is `cgroup2` with the
//! controllers), or v1 hierarchies per controller, often with an empty v2
//! hierarchy beside them ("hybrid", `/sys/fs/cgroup/unified`). The mounts in
//! /proc/self/mountinfo say which; a container gets a `cove/<id>` group in
//! every hierarchy that matters, so in hybrid mode it also gets a v2 group,
//! whose `cgroup.kill` kills the whole container atomically.
//!
//! Groups go under the hierarchy's root, as Docker's cgroupfs driver puts
//! them, so their path does not depend on where the launching Cove happened
//! to run (a restarted Cove may sit in another group); the chosen paths are
//! recorded in the state directory anyway. When the root is not writable the
//! launcher's own group is tried.

use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The v1 controllers the runtime uses; other hierarchies are left alone.
const V1_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "pids"];
/// The v2 controllers enabled for containers.
const V2_CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];
/// CFS period: 100 ms, the kernel's default.
const CPU_PERIOD_US: u64 = 100_000;
/// Enough tasks for data loaders with many threads, few enough that a fork
/// bomb cannot exhaust the host's pid space.
pub const PIDS_MAX: u64 = 16_384;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CgroupSet {
    pub groups: Vec<Group>,
    /// The CPU limit was applied (or none was asked for).
    pub cpu_limited: bool,
    /// The memory limit was applied (or none was asked for).
    pub memory_limited: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    pub path: PathBuf,
    /// The controllers of this hierarchy that the runtime uses.
    pub controllers: Vec<String>,
    /// A cgroup v2 group (cgroup.kill, cpu.stat, memory.events).
    pub v2: bool,
}

/// One mounted hierarchy.
#[derive(Debug)]
struct Hierarchy {
    mount_point: PathBuf,
    /// The part of the hierarchy the mount shows (not "/" inside a cgroup
    /// namespace or a container with a bind-mounted subtree).
    mount_root: String,
    controllers: Vec<String>,
    v2: bool,
}

fn hierarchies() -> Vec<Hierarchy> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 5 || right.len() < 3 {
            continue;
        }
        let (root, mount_point, fstype, super_opts) = (left[3], left[4], right[0], right[2]);
        let h = match fstype {
            "cgroup2" => Hierarchy {
                mount_point: unescape(mount_point),
                mount_root: root.to_string(),
                controllers: std::fs::read_to_string(
                    Path::new(&unescape(mount_point)).join("cgroup.controllers"),
                )
                .unwrap_or_default()
                .split_whitespace()
                .filter(|c| V2_CONTROLLERS.contains(c))
                .map(String::from)
                .collect(),
                v2: true,
            },
            "cgroup" => {
                let controllers: Vec<String> = super_opts
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o))
                    .map(String::from)
                    .collect();
                if controllers.is_empty() {
                    continue;
                }
                Hierarchy {
                    mount_point: unescape(mount_point),
                    mount_root: root.to_string(),
                    controllers,
                    v2: false,
                }
            }
            _ => continue,
        };
        // The same hierarchy mounted twice: keep the first mount.
        if out
            .iter()
            .any(|o| o.v2 == h.v2 && o.controllers == h.controllers)
        {
            continue;
        }
        out.push(h);
    }
    out
}

/// mountinfo escapes spaces and friends as octal.
pub(crate) fn unescape(s: &str) -> PathBuf {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// This process's group in a hierarchy, as a directory under its mount.
fn current_dir(h: &Hierarchy) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if h.v2 {
            ctrls.is_empty()
        } else {
            let c: Vec<&str> = ctrls.split(',').collect();
            h.controllers.iter().all(|x| c.contains(&x.as_str()))
        };
        if matches {
            let rel = path.strip_prefix(h.mount_root.as_str()).unwrap_or(path);
            return Some(h.mount_point.join(rel.trim_start_matches('/')));
        }
    }
    None
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    std::fs::write(dir.join(file), value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing {value:?} to {}: {e}", dir.join(file).display()),
        )
    })
}

/// v2 only lets a group's children use the controllers its parent enabled
/// in `cgroup.subtree_control`.
fn enable_v2_controllers(dir: &Path, controllers: &[String]) {
    for c in controllers {
        let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
    }
}

/// Creates `<base>/cove/<id>`; an existing empty group left by an earlier
/// run is reused.
fn make_group(base: &Path, h: &Hierarchy, id: &str) -> io::Result<PathBuf> {
    if h.v2 {
        enable_v2_controllers(base, &h.controllers);
    }
    let parent = base.join("cove");
    match std::fs::create_dir(&parent) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if h.v2 {
        enable_v2_controllers(&parent, &h.controllers);
    }
    let dir = parent.join(id);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if !procs(&dir).is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} still has processes", dir.display()),
                ));
            }
        }
        Err(e) => return Err(e),
    }
    if h.v2 {
        // The controllers must show up in the group itself, or the parent
        // could not delegate them (a v2 parent with processes of its own).
        let have = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let missing: Vec<&String> = h
            .controllers
            .iter()
            .filter(|c| !have.split_whitespace().any(|x| x == c.as_str()))
            .collect();
        if !missing.is_empty() {
            let _ = std::fs::remove_dir(&dir);
            return Err(io::Error::other(format!(
                "controllers {missing:?} are not available in {}",
                dir.display()
            )));
        }
    }
    Ok(dir)
}

/// Creates the container's groups and applies its limits. Failures are
/// logged and leave the affected limit off: a container without limits is
/// better than no container, and `cpu_limited`/`memory_limited` tell.
pub fn create(id: &str, cpus: f64, memory_bytes: u64) -> CgroupSet {
    let mut set = CgroupSet {
        groups: Vec::new(),
        cpu_limited: cpus <= 0.0,
        memory_limited: memory_bytes == 0,
    };
    let all = hierarchies();
    let v1 = all.iter().any(|h| !h.v2);
    for h in &all {
        // In hybrid mode the v2 hierarchy has no controllers; a group there
        // is still worth it for cgroup.kill, when the kernel has it.
        let mut bases = vec![h.mount_point.clone()];
        if let Some(cur) = current_dir(h) {
            if cur != h.mount_point {
                bases.push(cur);
            }
        }
        let mut last_err = None;
        let dir = bases.iter().find_map(|b| match make_group(b, h, id) {
            Ok(d) => Some(d),
            Err(e) => {
                last_err = Some(e);
                None
            }
        });
        let Some(dir) = dir else {
            tracing::warn!(
                container = id,
                hierarchy = %h.mount_point.display(),
                error = %last_err.map(|e| e.to_string()).unwrap_or_default(),
                "cannot create a cgroup; the container runs without this hierarchy's limits"
            );
            continue;
        };
        if h.v2 && v1 && !dir.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&dir);
            continue;
        }
        let has = |c: &str| h.controllers.iter().any(|x| x == c);
        let warn = |what: &str, e: io::Error| {
            tracing::warn!(container = id, error = %e, "cannot set the {what}; the container runs without it");
        };
        if cpus > 0.0 && has("cpu") {
            #[allow(clippy::cast_precision_loss)] // why: the period is a small constant.
            let quota =
                cove_model::convert::f64_to_u64((cpus * CPU_PERIOD_US as f64).round()).max(1_000);
            let r = if h.v2 {
                write(&dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))
            } else {
                write(&dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())
                    .and_then(|_| write(&dir, "cpu.cfs_quota_us", &quota.to_string()))
                    .and_then(|_| {
                        let shares = cove_model::convert::f64_to_u64(cpus * 1024.0).max(2);
                        write(&dir, "cpu.shares", &shares.to_string())
                    })
            };
            match r {
                Ok(()) => set.cpu_limited = true,
                Err(e) => warn("CPU limit", e),
            }
        }
        if memory_bytes > 0 && has("memory") {
            let r = if h.v2 {
                let r = write(&dir, "memory.max", &memory_bytes.to_string());
                // No swapping past the limit (fails only without swap accounting).
                let _ = write(&dir, "memory.swap.max", "0");
                r
            } else {
                let r = write(&dir, "memory.limit_in_bytes", &memory_bytes.to_string());
                if dir.join("memory.memsw.limit_in_bytes").exists() {
                    let _ = write(
                        &dir,
                        "memory.memsw.limit_in_bytes",
                        &memory_bytes.to_string(),
                    );
                }
                r
            };
            match r {
                Ok(()) => set.memory_limited = true,
                Err(e) => warn("memory limit", e),
            }
        }
        if has("pids") {
            if let Err(e) = write(&dir, "pids.max", &PIDS_MAX.to_string()) {
                warn("task limit", e);
            }
        }
        set.groups.push(Group {
            path: dir,
            controllers: h.controllers.clone(),
            v2: h.v2,
        });
    }
    set
}

impl CgroupSet {
    /// Moves the calling process into every group. Called by the
    /// container's init before it starts anything, so every process of the
    /// container is born inside.
    pub fn join_self(&self) -> io::Result<()> {
        for g in &self.groups {
            write(&g.path, "cgroup.procs", "0")?;
        }
        Ok(())
    }

    /// Every process in the container's groups (host pids).
    pub fn procs(&self) -> Vec<i32> {
        let mut all: Vec<i32> = self.groups.iter().flat_map(|g| procs(&g.path)).collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// SIGKILL to every process of the container: `cgroup.kill` where the
    /// kernel has it, then (and on v1 alone) by listing the members until
    /// none is left, which also catches processes forked meanwhile. Waits up
    /// to `timeout` for the groups to be empty; returns whether they are.
    pub fn kill_all(&self, timeout: Duration) -> bool {
        for g in self.groups.iter().filter(|g| g.v2) {
            let _ = std::fs::write(g.path.join("cgroup.kill"), "1");
        }
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.procs();
            if pids.is_empty() {
                return true;
            }
            for pid in pids {
                let _ = cove_sys::kill(pid, cove_sys::Signal::SIGKILL);
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Removes the groups. A group empties a moment after its last process
    /// is reaped, so `EBUSY` is retried until `timeout`.
    pub fn remove(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        for g in &self.groups {
            loop {
                match std::fs::remove_dir(&g.path) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("removing {}: {e}", g.path.display()),
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    fn with(&self, controller: &str) -> Option<&Group> {
        self.groups
            .iter()
            .find(|g| g.controllers.iter().any(|c| c == controller))
    }

    /// CPU time used by the container so far, in nanoseconds.
    pub fn cpu_usage_ns(&self) -> Option<u64> {
        if let Some(g) = self.with("cpuacct").filter(|g| !g.v2) {
            return std::fs::read_to_string(g.path.join("cpuacct.usage"))
                .ok()?
                .trim()
                .parse()
                .ok();
        }
        let g = self.groups.iter().find(|g| g.v2)?;
        let stat = std::fs::read_to_string(g.path.join("cpu.stat")).ok()?;
        keyed(&stat, "usage_usec").map(|us| us * 1000)
    }

    /// Memory charged to the container now, in bytes.
    pub fn memory_usage_bytes(&self) -> Option<u64> {
        let g = self.with("memory")?;
        let file = if g.v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        std::fs::read_to_string(g.path.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// How many processes the memory cgroup's OOM killer has killed.
    pub fn oom_kills(&self) -> u64 {
        let Some(g) = self.with("memory") else {
            return 0;
        };
        let (file, key) = if g.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        std::fs::read_to_string(g.path.join(file))
            .ok()
            .and_then(|s| keyed(&s, key))
            .unwrap_or(0)
    }
}

fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keyed_files() {
        let s = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed(s, "oom_kill"), Some(3));
        assert_eq!(keyed(s, "missing"), None);
    }

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape("/a\\040b"), PathBuf::from("/a b"));
        assert_eq!(unescape("/sys/fs/cgroup"), PathBuf::from("/sys/fs/cgroup"));
    }
}
