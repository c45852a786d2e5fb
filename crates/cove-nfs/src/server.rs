//! The NFS service: NFSv3 and MOUNT on one already-bound TCP listener, so
//! the caller picks the network namespace and address (an EFS mount
//! target's port 2049) and clients need no portmapper.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nfs3_server::test_reexports::{process_socket, RPCContext, TransactionTracker};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

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
}

/// How long a reply is remembered to answer a retransmitted call (same
/// connection, same XID) without running it twice; nfs3_server's own
/// listener uses the same numbers.
const RETRANSMIT_MEMORY: Duration = Duration::from_secs(60);
const MAX_CALLS_IN_FLIGHT: u16 = 256;
const REMEMBERED_CALLS: usize = 2048;

/// Serves `export` over NFSv3 (with MOUNT on the same port) to every
/// connection `listener` accepts, until the future is dropped or its task
/// aborted; that closes every connection too.
///
/// Returns early only if the export cannot be opened (missing directory) or
/// the listener fails for good. Writes land in the directory: `UNSTABLE`
/// writes in the page cache, `FILE_SYNC`/`DATA_SYNC` writes and `COMMIT`
/// are fsynced, and namespace changes (create, mkdir, remove, rename,
/// symlink) fsync their directories before replying, as NFSv3 requires.
pub async fn serve(listener: TcpListener, export: Export) -> std::io::Result<()> {
    let fs = LocalFs::open(&export.root, export.read_only)?;
    // One context, so one file-handle generation, for every connection: a
    // client may reconnect and keep using its handles. nfs3_server offers
    // no other way to build one around an accepted socket.
    let base = RPCContext::test_ctx("/", Arc::new(fs));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) if is_transient(&e) => {
                        // Out of descriptors or an aborted handshake: keep
                        // serving the connections that exist.
                        tracing::warn!(error = %e, "nfs accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let _ = socket.set_nodelay(true);
                let mut context = base.clone();
                // Retransmissions are recognised per connection: XIDs of
                // different clients may collide.
                context.client_addr = peer.to_string();
                context.transaction_tracker = Arc::new(TransactionTracker::new(
                    RETRANSMIT_MEMORY,
                    MAX_CALLS_IN_FLIGHT,
                    REMEMBERED_CALLS,
                ));
                tracing::debug!(%peer, "nfs connection");
                connections.spawn(async move {
                    if let Err(e) = process_socket(socket, context).await {
                        tracing::debug!(%peer, error = %e, "nfs connection closed");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
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
