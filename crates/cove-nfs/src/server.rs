//! The NFS service: NFSv3 and MOUNT on one TCP port, so clients need no
//! portmapper. [`bind`] makes the socket on the thread that polls it, so a
//! caller that has entered a network namespace binds there (an EFS mount
//! target's port 2049); [`Bound::serve`] then serves it on any runtime
//! thread. File handles carry a generation number that is the same for
//! every run of one export, so a client's handles stay valid across a
//! restart of the server (a mount outlives Cove's restarts).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use nfs3_server::tcp::{NFSTcp, NFSTcpListener};

use crate::localfs::LocalFs;

/// A directory to serve.
#[derive(Debug, Clone)]
pub struct Export {
    /// The directory whose contents clients see as `/`.
    pub root: PathBuf,
    /// Refuse every change (`NFS3ERR_ROFS`).
    pub read_only: bool,
}

impl Export {
    /// A read-write export of `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            read_only: false,
        }
    }

    /// The same export, read-only or not.
    #[must_use]
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// The generation in this export's file handles: a hash of its root
    /// (FNV-1a), the same on every run.
    fn generation(&self) -> u64 {
        self.root
            .to_string_lossy()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
    }
}

/// A server bound to its address, not serving yet.
pub struct Bound {
    listener: NFSTcpListener<LocalFs>,
    addr: SocketAddr,
}

/// Opens `export` and binds `addr` for it (port 0: any free port). The
/// socket is made on the thread that polls this future.
pub async fn bind(addr: SocketAddr, export: Export) -> std::io::Result<Bound> {
    let fs = LocalFs::open(&export.root, export.read_only)?;
    let generation = export.generation();
    let listener = NFSTcpListener::bind_with_generation(&addr.to_string(), fs, generation).await?;
    let addr = SocketAddr::new(listener.get_listen_ip(), listener.get_listen_port());
    Ok(Bound { listener, addr })
}

impl Bound {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves every connection until the task is aborted. Writes land in
    /// the directory: `UNSTABLE` writes in the page cache,
    /// `FILE_SYNC`/`DATA_SYNC` writes and `COMMIT` are fsynced, and
    /// namespace changes (create, mkdir, remove, rename, symlink) fsync
    /// their directories before replying, as NFSv3 requires. Returns only
    /// if accepting fails for good.
    pub async fn serve(self) -> std::io::Result<()> {
        loop {
            match self.listener.handle_forever().await {
                // Out of descriptors or an aborted handshake: keep serving
                // the connections that exist and accept again.
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "nfs accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                ended => return ended,
            }
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::Interrupted | K::WouldBlock
    ) || e.raw_os_error().is_some_and(|n| {
        let errno = rustix::io::Errno::from_raw_os_error(n);
        [
            rustix::io::Errno::MFILE,
            rustix::io::Errno::NFILE,
            rustix::io::Errno::NOBUFS,
            rustix::io::Errno::NOMEM,
        ]
        .contains(&errno)
    })
}
