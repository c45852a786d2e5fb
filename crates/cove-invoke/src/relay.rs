//! The tunnel from the control plane's fronts (the runtime's
//! `InvokeEndpoint`, the Studio proxy) to a container on an agent's host.
//! The agent listens on its underlay address (the port and a token it
//! registered with its host document); a caller sends `CONNECT
//! <target>:<port>` with `Authorization: Bearer <token>`, and the agent
//! opens 127.0.0.1:<port> inside the target's namespace and joins the two
//! connections byte for byte. HTTP then runs end to end between the caller
//! and the container, so keep-alive, pooling and WebSockets work across
//! hosts as they do on one.
//!
//! A target is an endpoint instance in service or draining (`i-…`, port
//! 8080) or a Studio app (`studio-…`, port 8888) placed on the agent,
//! looked up in the store: a caller cannot name a namespace or another
//! port. The tunnel is plaintext on the underlay, like the VPC overlay
//! beside it.

use bytes::Bytes;
use cove_model::studio::AppStatus;
use cove_store::Store;
use http_body_util::Empty;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The port of every serving container.
const SERVING_PORT: u16 = 8080;
/// The port of every Studio app.
const STUDIO_PORT: u16 = 8888;
/// The longest answer head the caller reads before giving up.
const MAX_HEAD: usize = 4096;

/// Where a caller finds one container through its host's relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRoute {
    pub address: SocketAddr,
    pub token: String,
    /// `<endpoint instance id>:8080` or `<Studio app's tunnel id>:8888`.
    pub target: String,
}

/// Opens a tunnel to `route.target` through its host's relay: a TCP
/// stream on which the caller speaks HTTP to the container.
pub async fn connect(
    route: &RelayRoute,
    timeout: Duration,
) -> std::io::Result<TokioIo<tokio::net::TcpStream>> {
    let mut stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(route.address))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "relay connect timed out")
        })??;
    stream.set_nodelay(true)?;
    let head = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nAuthorization: Bearer {token}\r\n\r\n",
        target = route.target,
        token = route.token,
    );
    stream.write_all(head.as_bytes()).await?;
    // The relay sends nothing after its answer's head until the caller
    // speaks, so reading up to the blank line takes no bytes of the tunnel.
    let mut answer = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    let read_head = async {
        while !answer.ends_with(b"\r\n\r\n") {
            if answer.len() > MAX_HEAD {
                return Err(std::io::Error::other("the relay's answer is too long"));
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the relay closed the connection",
                ));
            }
            answer.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(timeout, read_head)
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "relay answer timed out")
        })??;
    let status = status_of(&answer);
    if status != Some(200) {
        let line = String::from_utf8_lossy(&answer);
        let line = line.lines().next().unwrap_or_default().to_string();
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("the relay refused the tunnel: {line}"),
        ));
    }
    Ok(TokioIo::new(stream))
}

/// The status code of an HTTP/1 answer head.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// What a `CONNECT` target names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target<'a> {
    /// An endpoint instance's serving container (`i-<17 hex>:8080`).
    Instance(&'a str),
    /// A Studio app (`studio-<16 hex>:8888`).
    App(&'a str),
}

fn parse_target(target: &str) -> Option<Target<'_>> {
    let (id, port) = target.rsplit_once(':')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match (id.split_once('-')?, port.parse::<u16>().ok()?) {
        (("i", digits), SERVING_PORT) if hex(digits, 17) => Some(Target::Instance(id)),
        (("studio", digits), STUDIO_PORT) if hex(digits, 16) => Some(Target::App(id)),
        _ => None,
    }
}

/// Whether `header` is `Bearer <token>`, compared in constant time.
fn authorized(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The relay an agent runs for the serving containers placed on its host.
pub struct Relay {
    pub store: Arc<Store>,
    /// This host's id: only instances placed here are reachable.
    pub host: String,
    pub token: String,
}

impl Relay {
    /// Serves tunnels on `listener` until the process ends.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(err) => {
                    tracing::warn!(error = %err, "serving relay: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let me = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let me = me.clone();
                    async move { Ok::<_, std::convert::Infallible>(me.open(req).await) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
                if let Err(err) = served {
                    tracing::debug!(%peer, error = %err, "serving relay connection ended");
                }
            });
        }
    }

    /// The namespace and port of `target` when it is placed on this host
    /// and answers requests (an endpoint instance in service or draining).
    fn namespace_of(&self, target: Target<'_>) -> Option<(String, u16)> {
        let world = self.store.snapshot();
        let here = Some(self.host.as_str());
        match target {
            Target::Instance(id) => world
                .sagemaker_endpoints
                .values()
                .flat_map(|e| &e.instances)
                .find(|i| i.id == id && i.answers_requests() && i.placed_on.as_deref() == here)
                .and_then(|i| i.netns_path.clone())
                .map(|ns| (ns, SERVING_PORT)),
            Target::App(id) => world
                .studio_apps
                .values()
                .find(|a| {
                    a.tunnel_id() == id
                        && a.status == AppStatus::InService
                        && a.placed_on.as_deref() == here
                })
                .and_then(|a| a.netns_path.clone())
                .map(|ns| (ns, STUDIO_PORT)),
        }
    }

    /// Answers one `CONNECT`: checks the token and the instance, opens the
    /// container's port, and joins the two once the caller's connection is
    /// handed over.
    async fn open(&self, req: Request<hyper::body::Incoming>) -> Response<Empty<Bytes>> {
        let answer = |status: StatusCode| {
            let mut r = Response::new(Empty::new());
            *r.status_mut() = status;
            r
        };
        if req.method() != Method::CONNECT {
            return answer(StatusCode::METHOD_NOT_ALLOWED);
        }
        let auth = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !authorized(auth, &self.token) {
            return answer(StatusCode::UNAUTHORIZED);
        }
        let target = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .unwrap_or_default();
        let Some(parsed) = parse_target(target) else {
            return answer(StatusCode::NOT_FOUND);
        };
        let found = match self.namespace_of(parsed) {
            Some(found) => Some(found),
            // The caller saw the target's InService in the database; this
            // host wrote it, but a commit is visible to other processes a
            // moment before its writer has published it here. Catching up
            // waits for that (and reads what others committed since).
            None => {
                let store = self.store.clone();
                let _ = tokio::task::spawn_blocking(move || store.catch_up_now()).await;
                self.namespace_of(parsed)
            }
        };
        let Some((netns, port)) = found else {
            tracing::info!(target, "serving relay: no such container answers here");
            return answer(StatusCode::NOT_FOUND);
        };
        let container = match crate::connect_in_namespace(netns, port).await {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(target, error = %err, "serving relay: the container did not answer");
                return answer(StatusCode::BAD_GATEWAY);
            }
        };
        tokio::spawn(async move {
            let caller = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(err) => {
                    tracing::debug!(error = %err, "serving relay: no tunnel");
                    return;
                }
            };
            let mut caller = TokioIo::new(caller);
            let mut container = container.into_inner();
            let _ = tokio::io::copy_bidirectional(&mut caller, &mut container).await;
        });
        answer(StatusCode::OK)
    }
}

/// A new relay token: 32 random bytes, hex.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_an_instance_or_an_app_on_its_own_port() {
        assert_eq!(
            parse_target("i-0123456789abcdef0:8080"),
            Some(Target::Instance("i-0123456789abcdef0"))
        );
        assert_eq!(
            parse_target("studio-0123456789abcdef:8888"),
            Some(Target::App("studio-0123456789abcdef"))
        );
        assert_eq!(parse_target("i-0123456789abcdef0:22"), None);
        assert_eq!(parse_target("i-0123456789abcdef0:8888"), None);
        assert_eq!(parse_target("studio-0123456789abcdef:8080"), None);
        assert_eq!(parse_target("/run/netns/x:8080"), None);
        assert_eq!(parse_target("i-0123:8080"), None);
        assert_eq!(parse_target("i-0123456789abcdefg:8080"), None);
    }

    #[test]
    fn only_the_token_opens_a_tunnel() {
        assert!(authorized(Some("Bearer abc"), "abc"));
        assert!(!authorized(Some("Bearer abd"), "abc"));
        assert!(!authorized(Some("Bearer abcd"), "abc"));
        assert!(!authorized(Some("abc"), "abc"));
        assert!(!authorized(None, "abc"));
        assert_eq!(new_token().len(), 64);
        assert_ne!(new_token(), new_token());
    }

    #[test]
    fn answer_heads_give_their_status() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n\r\n"), Some(200));
        assert_eq!(status_of(b"HTTP/1.1 401 Unauthorized\r\n\r\n"), Some(401));
        assert_eq!(status_of(b"SSH-2.0\r\n\r\n"), None);
    }
}
