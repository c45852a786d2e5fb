//! `cove efs-mount`: the process behind one EFS mount of a workload (see
//! `cove_host::efs`). It enters the workload ENI's network namespace before
//! it starts any thread, so every NFS connection it makes leaves from the
//! ENI; mounts the file system through FUSE; says `ready` or why not on
//! its standard output; and serves the mount until it is taken away.

use cove_host::efs::{answer_line, MountFailure};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub struct Args<'a> {
    pub netns: &'a Path,
    pub server: SocketAddr,
    pub export_path: &'a str,
    pub mountpoint: &'a Path,
    pub read_only: bool,
    pub connect_timeout: Duration,
}

/// Runs the mount; returns only when it ends.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let entered = std::fs::File::open(a.netns)
        .and_then(|ns| cove_sys::enter_net_namespace(&ns))
        .map_err(|e| MountFailure::Other(format!("entering {}: {e}", a.netns.display())));
    let mounted = entered.and_then(|()| {
        // Workloads run as uids of their own; on AWS they are root on their
        // file systems, so the server, not the kernel, decides.
        let options = cove_nfs::MountOptions {
            read_only: a.read_only,
            connect_timeout: a.connect_timeout,
            check_permissions: false,
            ..cove_nfs::MountOptions::default()
        };
        cove_nfs::mount(
            cove_nfs::tcp_connector(a.server, a.connect_timeout),
            a.export_path,
            a.mountpoint,
            &options,
        )
        .map_err(|e| match e {
            cove_nfs::MountError::CannotConnect(e) => MountFailure::Unreachable(e.to_string()),
            cove_nfs::MountError::NoSuchDirectory(p) => {
                MountFailure::NoSuchDirectory(format!("{p}: no such directory on the file system"))
            }
            other => MountFailure::Other(other.to_string()),
        })
    });
    let answer = answer_line(&mounted.as_ref().map(|_| ()).map_err(Clone::clone));
    let mut out = std::io::stdout();
    writeln!(out, "{answer}")?;
    out.flush()?;
    let mounted = match mounted {
        Ok(m) => m,
        Err(e) => anyhow::bail!("{e}"),
    };
    // Nobody reads further: the answer was the one line.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = cove_sys::redirect_stdout(&null);
    }
    mounted.wait()?;
    Ok(())
}
