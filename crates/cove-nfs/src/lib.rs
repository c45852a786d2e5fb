//! NFS for Cove's EFS emulation: a server that exports a local directory
//! over NFSv3, and a userspace client that mounts such an export through
//! FUSE (the host kernel has FUSE but no NFS client or server).
//!
//! The caller owns the network: [`bind`] makes the server's socket on the
//! thread that polls it (one that has entered a mount target's network
//! namespace, for port 2049 there), and [`mount`] takes a closure that
//! opens a TCP connection to the server from wherever the client lives (a
//! job's ENI).
//! MOUNT and NFS share that one port, so no portmapper is involved.
//!
//! Mounting uses `/dev/fuse` and the `mount(2)` call directly: it needs
//! root (or `CAP_SYS_ADMIN`), and neither libfuse nor `fusermount3`.

mod fuse;
mod localfs;
mod path;
mod rpc;
mod server;
mod status;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nfs3_client::nfs3_types::mount::{dirpath, mountstat3};
use nfs3_client::nfs3_types::nfs3::{ftype3, nfs_fh3, FSINFO3args, GETATTR3args, Nfs3Result};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::{MountClient, Nfs3Client, RpcError};

pub use crate::path::{parse_directory_path, InvalidPath};
pub use crate::server::{bind, Bound, Export};

use crate::rpc::{block_on, Connector, SyncIo, Timeouts};

/// Largest read and write the client asks for (EFS's `rsize`/`wsize`);
/// smaller if the server's FSINFO says so.
const MAX_TRANSFER: u32 = 1024 * 1024;

/// How a client mount behaves.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Mount read-only: every change fails with `EROFS`.
    pub read_only: bool,
    /// How long one connection attempt may take, the connect closure
    /// included; beyond it [`mount`] fails with
    /// [`MountError::CannotConnect`].
    pub connect_timeout: Duration,
    /// How long one call may wait for the server's reply before the
    /// connection is taken for broken and the call sent again.
    pub rpc_timeout: Duration,
    /// How long a call keeps reconnecting and retrying while the server is
    /// unreachable before the file operation fails with `EIO`.
    pub retry_for: Duration,
    /// FUSE worker threads: how many file operations run at once.
    pub threads: usize,
    /// Let the kernel check each caller's access against the files' owners
    /// and modes, as an NFS client does; without it every caller may do
    /// what the server allows (Cove's EFS mounts, whose workloads act as
    /// root does on AWS).
    pub check_permissions: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            read_only: false,
            connect_timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(60),
            retry_for: Duration::from_secs(120),
            threads: 8,
            check_permissions: true,
        }
    }
}

/// Why [`mount`] failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The server could not be reached: refused, unreachable, timed out, or
    /// it dropped the connection before answering.
    #[error("cannot connect to the NFS server: {0}")]
    CannotConnect(#[source] io::Error),
    /// The export has no directory at the requested path.
    #[error("no such directory on the NFS server: {0}")]
    NoSuchDirectory(String),
    /// The requested path is not a valid directory path.
    #[error(transparent)]
    InvalidPath(#[from] InvalidPath),
    /// The server answered, but not as an NFSv3 server should.
    #[error("NFS server error: {0}")]
    Protocol(String),
    /// The kernel refused the FUSE mount (no `/dev/fuse`, not root, bad
    /// mount point).
    #[error("cannot mount FUSE at {}: {source}", mountpoint.display())]
    Fuse {
        /// Where the mount was attempted.
        mountpoint: PathBuf,
        /// The kernel's answer.
        source: io::Error,
    },
}

/// A connect closure for a plain TCP address, bounded by `timeout`.
pub fn tcp_connector(
    addr: SocketAddr,
    timeout: Duration,
) -> impl Fn() -> io::Result<TcpStream> + Send + Sync + 'static {
    move || TcpStream::connect_timeout(&addr, timeout)
}

/// Mounts directory `export_path` (`/` or a path below it, such as an EFS
/// access point's `/data/train`) of the server that `connect` reaches at
/// `mountpoint`, serving it through FUSE from background threads until the
/// returned [`Mounted`] is dropped or unmounted.
///
/// `connect` is called for the first connection and again whenever a
/// connection breaks or more are needed; it runs on a helper thread, so it
/// may enter a network namespace. Blocks until the kernel has the mount.
pub fn mount<C>(
    connect: C,
    export_path: &str,
    mountpoint: &Path,
    options: &MountOptions,
) -> Result<Mounted, MountError>
where
    C: Fn() -> io::Result<TcpStream> + Send + Sync + 'static,
{
    let path = parse_directory_path(export_path)?;
    let connect: Arc<Connector> = Arc::new(connect);
    let stream = rpc::connect_within(&connect, options.connect_timeout)
        .map_err(MountError::CannotConnect)?;
    // Until the server has answered once, a silent server is an
    // unreachable one: the first calls wait no longer than a connection.
    rpc::prepare(&stream, options.connect_timeout).map_err(MountError::CannotConnect)?;

    let mut mounter = MountClient::new(SyncIo(
        stream.try_clone().map_err(MountError::CannotConnect)?,
    ));
    let mounted = block_on(mounter.mnt(dirpath(Opaque::borrowed(path.as_bytes()))));
    drop(mounter);
    let root = match mounted {
        Ok(ok) => nfs_fh3 { data: ok.fhandle.0 },
        Err(nfs3_client::MountError::Denied(
            mountstat3::MNT3ERR_NOENT | mountstat3::MNT3ERR_NOTDIR,
        )) => return Err(MountError::NoSuchDirectory(path)),
        Err(nfs3_client::MountError::Denied(stat)) => {
            return Err(MountError::Protocol(format!(
                "the server refused to mount {path}: {stat}"
            )))
        }
        Err(nfs3_client::MountError::Rpc(e)) => return Err(rpc_failure("MOUNT", e)),
    };

    // The same connection carries NFS: the server serves both on one port.
    // A second descriptor of the socket lets its timeout change later.
    let control = stream.try_clone().map_err(MountError::CannotConnect)?;
    let mut client = Nfs3Client::new(SyncIo(stream));
    let info = match block_on(client.fsinfo(&FSINFO3args {
        fsroot: root.clone(),
    })) {
        Ok(Nfs3Result::Ok(info)) => info,
        Ok(Nfs3Result::Err((stat, _))) => {
            return Err(MountError::Protocol(format!("FSINFO failed: {stat}")))
        }
        Err(e) => return Err(rpc_failure("FSINFO", e)),
    };
    let attr = match block_on(client.getattr(&GETATTR3args {
        object: root.clone(),
    })) {
        Ok(Nfs3Result::Ok(ok)) => ok.obj_attributes,
        Ok(Nfs3Result::Err((stat, _))) => {
            return Err(MountError::Protocol(format!(
                "GETATTR of the root failed: {stat}"
            )))
        }
        Err(e) => return Err(rpc_failure("GETATTR", e)),
    };
    if attr.type_ != ftype3::NF3DIR {
        return Err(MountError::NoSuchDirectory(path));
    }
    rpc::prepare(&control, options.rpc_timeout).map_err(MountError::CannotConnect)?;
    let timeouts = Timeouts {
        connect: options.connect_timeout,
        rpc: options.rpc_timeout,
        retry_for: options.retry_for,
    };
    let rpc = Arc::new(rpc::Rpc::new(connect, timeouts, client, control));
    let fs = fuse::NfsFuse::new(
        Arc::clone(&rpc),
        root,
        attr.fileid,
        transfer_size(info.rtmax),
        transfer_size(info.wtmax),
        options.read_only,
    );

    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(format!("cove-nfs:{path}")),
        fuser::MountOption::Subtype("cove-nfs".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        if options.read_only {
            fuser::MountOption::RO
        } else {
            fuser::MountOption::RW
        },
    ];
    // Every user may try (jobs need not run as root); with the kernel's
    // checks on, against the server's owners and modes.
    if options.check_permissions {
        config
            .mount_options
            .push(fuser::MountOption::DefaultPermissions);
    }
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(options.threads.max(1));
    config.clone_fd = true;
    let session =
        fuser::spawn_mount(fs, mountpoint, &config).map_err(|source| MountError::Fuse {
            mountpoint: mountpoint.to_owned(),
            source,
        })?;
    raise_readahead(mountpoint, READAHEAD_KIB);
    Ok(Mounted {
        session: Some(session),
        mountpoint: mountpoint.to_owned(),
        rpc,
    })
}

/// Readahead for the mount's backing device. The kernel gives FUSE at most
/// 128 KiB, which makes sequential reads one small call at a time; AWS
/// raises NFS readahead for EFS the same way.
const READAHEAD_KIB: u32 = 8 * 1024;

fn raise_readahead(mountpoint: &Path, kib: u32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = meta.dev();
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        rustix::fs::major(dev),
        rustix::fs::minor(dev)
    );
    if let Err(e) = std::fs::write(&knob, kib.to_string()) {
        tracing::debug!(knob, error = %e, "cannot raise nfs readahead");
    }
}

fn rpc_failure(call: &str, e: RpcError) -> MountError {
    match e {
        RpcError::Io(e) => MountError::CannotConnect(e),
        other => MountError::Protocol(format!("{call} failed: {other}")),
    }
}

/// The transfer size to use given the server's maximum (0: no answer).
fn transfer_size(server_max: u32) -> u32 {
    const FALLBACK: u32 = 64 * 1024;
    match server_max {
        0 => FALLBACK,
        max => max.clamp(4096, MAX_TRANSFER),
    }
}

/// A mounted export. Dropping it unmounts (lazily if the mount is busy).
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    rpc: Arc<rpc::Rpc>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

impl Mounted {
    /// Where the export is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts and waits for the FUSE threads to finish. A busy mount
    /// (open files, a working directory inside) is detached instead: it
    /// disappears from the namespace now and ends when its last user does.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    /// Serves the mount until someone else takes it away (`umount`), then
    /// waits for the FUSE threads to finish: what a process that exists
    /// only to hold a mount does with its life.
    pub fn wait(mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let ended = session.join();
        self.rpc.close();
        ended
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        use rustix::mount::{unmount, UnmountFlags};
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        match unmount(&self.mountpoint, UnmountFlags::empty()) {
            // The kernel ends the FUSE connection; the threads see it and
            // return, at once even if a call was waiting on a dead server.
            Ok(()) => {
                self.rpc.close();
                session.join()
            }
            // Unmounted by someone else already.
            Err(rustix::io::Errno::INVAL) => {
                self.rpc.close();
                drop(session);
                Ok(())
            }
            Err(rustix::io::Errno::BUSY) => {
                unmount(&self.mountpoint, UnmountFlags::DETACH)?;
                tracing::warn!(
                    mountpoint = %self.mountpoint.display(),
                    "nfs mount busy; detached, its remaining users get EIO"
                );
                self.rpc.close();
                drop(session);
                Ok(())
            }
            Err(e) => {
                self.session = Some(session);
                Err(e.into())
            }
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            tracing::warn!(
                mountpoint = %self.mountpoint.display(),
                error = %e,
                "nfs unmount failed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_sizes_follow_the_server_up_to_a_mebibyte() {
        assert_eq!(transfer_size(0), 64 * 1024);
        assert_eq!(transfer_size(512), 4096);
        assert_eq!(transfer_size(128 * 1024), 128 * 1024);
        assert_eq!(transfer_size(16 * 1024 * 1024), MAX_TRANSFER);
    }

    #[test]
    fn mount_errors_say_what_happened() {
        let e = MountError::NoSuchDirectory("/data/train".into());
        assert_eq!(
            e.to_string(),
            "no such directory on the NFS server: /data/train"
        );
        let e = MountError::CannotConnect(io::ErrorKind::ConnectionRefused.into());
        assert!(e.to_string().starts_with("cannot connect"), "{e}");
    }
}
