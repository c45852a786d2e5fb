//! HTTP/1.1 client connections on hyper, for the job drivers: to a serving
//! container on 127.0.0.1:8080 inside its network namespace (`/ping`,
//! `/execution-parameters`, `/invocations` of batch transform and the
//! recommender), to S3 from a job host's network ([`crate::s3`]), and with
//! TLS to the registry from a job host's network ([`crate::pull`]).
//!
//! The drivers are plain threads, so a [`Connection`] carries its own
//! single-threaded tokio runtime and blocks on it. The socket is opened from
//! the thread (and so the network namespace) that calls
//! [`Connection::open`]; once open it stays in that namespace whichever
//! thread drives it.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The port a serving container listens on (the SageMaker contract).
pub const SERVING_PORT: u16 = 8080;

/// How long a transform or benchmark request may take to be answered.
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(600);

/// A request body: bytes in memory or a stream (a file being uploaded).
pub type Body = BoxBody<Bytes, io::Error>;

/// A body of bytes already in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// One kept-alive HTTP/1.1 connection.
pub struct Connection {
    runtime: tokio::runtime::Runtime,
    sender: SendRequest<Body>,
    /// `Host` for requests that do not set it.
    authority: String,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

async fn tcp(addr: SocketAddr, connect_timeout: Duration) -> io::Result<tokio::net::TcpStream> {
    let stream = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out(&format!("connecting to {addr}")))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn handshake<IO>(io: IO) -> io::Result<SendRequest<Body>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(io::Error::other)?;
    // Driven whenever the runtime is, that is during each request.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

impl Connection {
    /// Connects to `addr` from the calling thread's network namespace.
    pub fn open(addr: SocketAddr, connect_timeout: Duration) -> io::Result<Connection> {
        let runtime = runtime()?;
        let sender =
            runtime.block_on(async { handshake(tcp(addr, connect_timeout).await?).await })?;
        Ok(Connection {
            runtime,
            sender,
            authority: addr.to_string(),
        })
    }

    /// Connects with TLS to `server_name` at `addr` from the calling
    /// thread's network namespace, trusting what `tls` trusts.
    pub fn open_tls(
        addr: SocketAddr,
        server_name: &str,
        tls: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
    ) -> io::Result<Connection> {
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let runtime = runtime()?;
        let sender = runtime.block_on(async {
            let stream = tcp(addr, connect_timeout).await?;
            let stream = tokio::time::timeout(
                connect_timeout,
                tokio_rustls::TlsConnector::from(tls).connect(name, stream),
            )
            .await
            .map_err(|_| timed_out(&format!("the TLS handshake with {server_name}")))??;
            handshake(stream).await
        })?;
        Ok(Connection {
            runtime,
            sender,
            authority: server_name.to_string(),
        })
    }

    /// Connects to the serving container inside the namespace at
    /// `netns_path` (`/run/netns/<name>` or `/proc/<pid>/ns/net`).
    pub fn to_container(netns_path: &str, connect_timeout: Duration) -> io::Result<Connection> {
        let addr = SocketAddr::from(([127, 0, 0, 1], SERVING_PORT));
        let mut c = cove_net::netns::run_in_path(netns_path, move || {
            Connection::open(addr, connect_timeout)
        })??;
        c.authority = "localhost".into();
        Ok(c)
    }

    /// Whether the peer has closed the connection (it cannot carry another
    /// request).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends `request` and waits up to `timeout` for the response head;
    /// `Host` is added when the request has none.
    pub fn send(
        &mut self,
        mut request: Request<Body>,
        timeout: Duration,
    ) -> io::Result<Response<Incoming>> {
        if !request.headers().contains_key(hyper::header::HOST) {
            let host = self.authority.parse().map_err(io::Error::other)?;
            request.headers_mut().insert(hyper::header::HOST, host);
        }
        let sender = &mut self.sender;
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, async {
                sender.ready().await.map_err(io::Error::other)?;
                sender.send_request(request).await.map_err(io::Error::other)
            })
            .await
            .map_err(|_| timed_out("waiting for the response"))?
        })
    }

    /// Reads a response body to its end, whatever its framing (length or
    /// chunked).
    pub fn read_body(&mut self, body: Incoming) -> io::Result<Bytes> {
        self.runtime.block_on(async {
            body.collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(io::Error::other)
        })
    }

    /// Streams a response body into `out`, chunk by chunk; returns its length.
    pub fn copy_body(&mut self, mut body: Incoming, out: &mut impl io::Write) -> io::Result<u64> {
        self.runtime.block_on(async {
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(io::Error::other)?;
                if let Ok(data) = frame.into_data() {
                    out.write_all(&data)?;
                    n += data.len() as u64;
                }
            }
            Ok(n)
        })
    }

    /// Runs `f` on this connection's runtime (to build a streaming body
    /// that needs one, such as a tokio file).
    pub fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(f)
    }

    /// One request with a body in memory, answered with its status and
    /// whole body.
    pub fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<(u16, Vec<u8>)> {
        let mut request = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(full(body.to_vec()))
            .map_err(io::Error::other)?;
        let response = self.send(request, INVOCATION_TIMEOUT)?;
        let status = response.status().as_u16();
        let body = self.read_body(response.into_body())?;
        Ok((status, body.to_vec()))
    }
}

/// A connection to the serving container inside the namespace at
/// `netns_path`, for transform and the recommender.
pub fn connect(netns_path: &str) -> io::Result<Connection> {
    Connection::to_container(netns_path, Duration::from_secs(5))
}

/// `GET /ping` on the serving container inside the namespace at
/// `netns_path`: whether it answered 200 within 2 s.
pub fn ping(netns_path: &str) -> bool {
    let Ok(mut c) = Connection::to_container(netns_path, Duration::from_millis(500)) else {
        return false;
    };
    let Ok(request) = Request::get("/ping").body(full(Bytes::new())) else {
        return false;
    };
    c.send(request, Duration::from_secs(2))
        .is_ok_and(|r| r.status() == hyper::StatusCode::OK)
}
