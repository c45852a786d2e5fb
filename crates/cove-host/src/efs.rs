//! File systems mounted for a workload through its own ENI: one
//! `cove efs-mount` process per mount, started inside the ENI's network
//! namespace, so the NFS connection to the mount target leaves from the
//! workload's address and the VPC's routes, ACLs and security groups
//! decide whether it gets there. The process runs the FUSE side of the
//! mount in a session of its own, so it outlives a restart of Cove as the
//! workload's container does, and ends when the mount is taken away.

use std::io::{BufRead, BufReader};
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What one mount asks for.
#[derive(Debug, Clone)]
pub struct EfsMount {
    /// The network namespace the NFS connection leaves from (its path,
    /// `/run/netns/<name>`).
    pub netns: String,
    /// The mount target's address and NFS port.
    pub server: SocketAddrV4,
    /// The directory of the file system to mount (`/` or below).
    pub export_path: String,
    /// Where on the host the file system appears.
    pub mountpoint: PathBuf,
    pub read_only: bool,
    /// How long the connection to the mount target may take.
    pub connect_timeout: Duration,
    /// Where the mount process writes what goes wrong after it is up.
    pub log: PathBuf,
}

/// Why a mount failed, as the mount process reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountFailure {
    /// Nothing answered on the mount target's NFS port in time (a security
    /// group, a network ACL or a route is in the way).
    Unreachable(String),
    /// The directory does not exist on the file system.
    NoSuchDirectory(String),
    /// Anything else (FUSE, the process itself).
    Other(String),
}

impl std::fmt::Display for MountFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountFailure::Unreachable(m)
            | MountFailure::NoSuchDirectory(m)
            | MountFailure::Other(m) => f.write_str(m),
        }
    }
}

/// The one line the mount process prints on its standard output: `ready`,
/// or `error <kind> <message>`.
pub fn answer_line(result: &Result<(), MountFailure>) -> String {
    match result {
        Ok(()) => "ready".into(),
        Err(MountFailure::Unreachable(m)) => format!("error unreachable {m}"),
        Err(MountFailure::NoSuchDirectory(m)) => format!("error no-such-directory {m}"),
        Err(MountFailure::Other(m)) => format!("error other {m}"),
    }
}

/// Reads [`answer_line`]'s line back.
pub fn parse_answer(line: &str) -> Result<(), MountFailure> {
    let line = line.trim_end();
    if line == "ready" {
        return Ok(());
    }
    let Some(rest) = line.strip_prefix("error ") else {
        return Err(MountFailure::Other(if line.is_empty() {
            "the mount process ended without an answer".into()
        } else {
            format!("the mount process said: {line}")
        }));
    };
    let (kind, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let message = message.to_string();
    Err(match kind {
        "unreachable" => MountFailure::Unreachable(message),
        "no-such-directory" => MountFailure::NoSuchDirectory(message),
        _ => MountFailure::Other(message),
    })
}

/// Mounts `m` with `cove efs-mount` (the `runner` binary) and waits for its
/// answer: the connect timeout and a margin for FUSE.
pub fn mount(runner: &Path, m: &EfsMount) -> Result<(), MountFailure> {
    let other = |e: std::io::Error| MountFailure::Other(e.to_string());
    std::fs::create_dir_all(&m.mountpoint).map_err(other)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&m.log)
        .map_err(other)?;
    let (reader, writer) = std::io::pipe().map_err(other)?;
    let mut cmd = std::process::Command::new(runner);
    cmd.arg("efs-mount")
        .arg("--netns")
        .arg(&m.netns)
        .arg("--server")
        .arg(m.server.to_string())
        .arg("--path")
        .arg(&m.export_path)
        .arg("--mountpoint")
        .arg(&m.mountpoint)
        .arg("--timeout-ms")
        .arg(m.connect_timeout.as_millis().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(log);
    if m.read_only {
        cmd.arg("--read-only");
    }
    // Its own session, nobody's child: it lives as long as the mount.
    cove_sys::daemonize_before_exec(&mut cmd, 1);
    let mut child = cmd.spawn().map_err(other)?;
    child.wait().map_err(other)?;
    drop(cmd);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(reader).read_line(&mut line);
        let _ = tx.send(line);
    });
    let wait = m.connect_timeout + Duration::from_secs(10);
    match rx.recv_timeout(wait) {
        Ok(line) => parse_answer(&line),
        Err(_) => {
            unmount(&m.mountpoint);
            Err(MountFailure::Unreachable(format!(
                "no answer from the mount process within {wait:?}"
            )))
        }
    }
}

/// Takes a mount away (its process then ends); nothing if nothing is there.
pub fn unmount(mountpoint: &Path) {
    // Tried whatever `stat` says: a mount whose process died answers
    // ENOTCONN, and must go all the same.
    match cove_sys::umount_detach(mountpoint) {
        Ok(()) => {}
        // Not a mount point: nothing to take away.
        Err(e) if e.raw_os_error() == Some(cove_sys::Errno::INVAL.raw_os_error()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(mountpoint = %mountpoint.display(), error = %e, "cannot unmount a file system")
        }
    }
}

/// The file-system type of Cove's EFS mounts in `/proc/self/mountinfo`.
pub const MOUNT_TYPE: &str = "fuse.cove-nfs";

/// Detaches every EFS mount under `dir` (a data directory, at teardown:
/// before anything walks it, since a mount whose server is gone answers
/// only after its retries run out); returns how many.
pub fn detach_all_under(dir: &Path) -> usize {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return 0;
    };
    let mounts = cove_runtime::overlay::mounts_of_type_under(&info, dir, Some(MOUNT_TYPE));
    for m in &mounts {
        let _ = cove_sys::umount_detach(m);
    }
    mounts.len()
}

/// Takes away every mount under `dir` (a workload's `efs/` directory).
pub fn unmount_all(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        unmount(&e.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_survive_the_round_trip() {
        for r in [
            Ok(()),
            Err(MountFailure::Unreachable("10.0.1.5:2049: timed out".into())),
            Err(MountFailure::NoSuchDirectory(
                "/data: no such directory".into(),
            )),
            Err(MountFailure::Other("fuse: no device".into())),
        ] {
            assert_eq!(parse_answer(&format!("{}\n", answer_line(&r))), r);
        }
        assert!(matches!(parse_answer(""), Err(MountFailure::Other(_))));
        assert!(matches!(
            parse_answer("garbage"),
            Err(MountFailure::Other(_))
        ));
    }
}
