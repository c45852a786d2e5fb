//! Calls from the client to the server: nfs3_client's typed NFSv3 and MOUNT
//! calls over blocking sockets, a pool of connections so that FUSE threads
//! call in parallel, and reconnection through the caller's connect closure
//! when a connection breaks.
//!
//! nfs3_client is written against its own async I/O traits. Here they are
//! implemented with blocking socket calls, so every future completes the
//! first time it is polled and [`block_on`] needs no runtime: FUSE threads
//! are plain threads, and `mount` may be called from inside or outside a
//! tokio runtime alike.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use nfs3_client::nfs3_types::nfs3::Nfs3Result;
use nfs3_client::{Nfs3Client, RpcError};

use crate::status::to_errno;

/// The caller's way to reach the server (in its network namespace).
pub(crate) type Connector = dyn Fn() -> io::Result<TcpStream> + Send + Sync;

/// A connected socket seen through nfs3_client's I/O traits.
pub(crate) struct SyncIo(pub(crate) TcpStream);

impl nfs3_client::io::AsyncRead for SyncIo {
    async fn async_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                // nfs3_client's read_exact loops until the buffer is full:
                // end of stream must be an error, not zero bytes.
                Ok(0) if !buf.is_empty() => return Err(io::ErrorKind::UnexpectedEof.into()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

impl nfs3_client::io::AsyncWrite for SyncIo {
    async fn async_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Ok(0) if !buf.is_empty() => return Err(io::ErrorKind::WriteZero.into()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

/// Drives a future whose I/O blocks; with [`SyncIo`] it is ready at once.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::yield_now();
    }
}

/// Calls `connect`, giving up after `timeout` even if the closure does not
/// (it then finishes on its own thread and its socket is dropped).
pub(crate) fn connect_within(connect: &Arc<Connector>, timeout: Duration) -> io::Result<TcpStream> {
    let (tx, rx) = mpsc::sync_channel(1);
    let connect = Arc::clone(connect);
    std::thread::Builder::new()
        .name("cove-nfs-connect".into())
        .spawn(move || {
            let _ = tx.send(connect());
        })?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {timeout:?}"),
        )),
    }
}

/// Sets up a new connection: no Nagle delay for small calls, and a bound on
/// how long one call may wait for the server.
pub(crate) fn prepare(stream: &TcpStream, rpc_timeout: Duration) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(rpc_timeout))?;
    stream.set_write_timeout(Some(rpc_timeout))
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) rpc: Duration,
    pub(crate) retry_for: Duration,
}

/// Idle connections kept for reuse; more are opened while more FUSE
/// threads call at once.
const MAX_IDLE: usize = 16;

pub(crate) type Client = Nfs3Client<SyncIo>;

/// A pooled connection; `id` keys its entry in [`Rpc::live`].
pub(crate) struct Conn {
    id: u64,
    client: Client,
}

pub(crate) struct Rpc {
    connect: Arc<Connector>,
    timeouts: Timeouts,
    idle: Mutex<Vec<Conn>>,
    /// A second descriptor of every open connection, to cut them all when
    /// the mount goes away, so no call waits out its timeout.
    live: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
    closed: AtomicBool,
}

impl Rpc {
    /// A pool starting with `first`, the connection `mount` used; `control`
    /// is a second descriptor of its socket.
    pub(crate) fn new(
        connect: Arc<Connector>,
        timeouts: Timeouts,
        first: Client,
        control: TcpStream,
    ) -> Self {
        Self {
            connect,
            timeouts,
            idle: Mutex::new(vec![Conn {
                id: 0,
                client: first,
            }]),
            live: Mutex::new(HashMap::from([(0, control)])),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
        }
    }

    /// Fails every call from now on and breaks the connections of calls
    /// in progress.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for (_, stream) in lock(&self.live).drain() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        lock(&self.idle).clear();
    }

    fn checkout(&self) -> io::Result<Conn> {
        if let Some(conn) = lock(&self.idle).pop() {
            return Ok(conn);
        }
        let stream = connect_within(&self.connect, self.timeouts.connect)?;
        prepare(&stream, self.timeouts.rpc)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.live).insert(id, stream.try_clone()?);
        if self.closed.load(Ordering::SeqCst) {
            // Closed while connecting: this one was not cut.
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        Ok(Conn {
            id,
            client: Nfs3Client::new(SyncIo(stream)),
        })
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE && !self.closed.load(Ordering::SeqCst) {
            idle.push(conn);
        } else {
            drop(idle);
            self.discard(conn);
        }
    }

    fn discard(&self, conn: Conn) {
        lock(&self.live).remove(&conn.id);
    }

    /// Runs one call. If the connection breaks (the server restarted, the
    /// network blinked, a reply timed out) the call is sent again on a new
    /// connection until `retry_for` has passed: NFSv3 is stateless, and
    /// for the few calls that are not idempotent a repeat fails the way
    /// the kernel's NFS client would (EEXIST, ENOENT).
    pub(crate) fn call<T, E>(
        &self,
        what: &'static str,
        mut call: impl FnMut(&mut Client) -> Result<Nfs3Result<T, E>, RpcError>,
    ) -> Result<T, fuser::Errno> {
        let deadline = Instant::now() + self.timeouts.retry_for;
        let mut pause = Duration::ZERO;
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Err(fuser::Errno::EIO);
            }
            let failure = match self.checkout() {
                Ok(mut conn) => match call(&mut conn.client) {
                    Ok(result) => {
                        self.checkin(conn);
                        return match result {
                            Nfs3Result::Ok(ok) => Ok(ok),
                            Nfs3Result::Err((stat, _)) => {
                                tracing::debug!(call = what, %stat, "nfs call failed");
                                Err(to_errno(stat))
                            }
                        };
                    }
                    Err(e) if e.is_connection_reusable() => {
                        // The server answered, but not with a result: a
                        // bug or a mismatch that a repeat will not fix.
                        self.checkin(conn);
                        tracing::warn!(call = what, error = %e, "nfs call refused");
                        return Err(fuser::Errno::EIO);
                    }
                    Err(e) => {
                        self.discard(conn);
                        e.to_string()
                    }
                },
                Err(e) => e.to_string(),
            };
            let now = Instant::now();
            if self.closed.load(Ordering::SeqCst) {
                return Err(fuser::Errno::EIO);
            }
            if now >= deadline {
                tracing::error!(call = what, error = %failure, "nfs server unreachable; giving up");
                return Err(fuser::Errno::EIO);
            }
            tracing::warn!(call = what, error = %failure, "nfs connection lost; reconnecting");
            // The first retry is immediate: a pooled connection may simply
            // have been closed by a restarted server.
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).clamp(Duration::from_millis(50), Duration::from_secs(2));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_within_gives_up_on_a_slow_closure() {
        let slow: Arc<Connector> = Arc::new(|| {
            std::thread::sleep(Duration::from_secs(5));
            Err(io::ErrorKind::ConnectionRefused.into())
        });
        let started = Instant::now();
        let e = connect_within(&slow, Duration::from_millis(100)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn connect_within_passes_the_closures_error_on() {
        let refused: Arc<Connector> = Arc::new(|| Err(io::ErrorKind::ConnectionRefused.into()));
        let e = connect_within(&refused, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn block_on_runs_ready_futures() {
        assert_eq!(block_on(async { 7 }), 7);
    }
}
