//! Serves the API router over TLS on one listening socket: each connection's
//! handshake runs in its own task (a client that connects and says nothing
//! holds up no one), then hyper serves HTTP/1.1 or HTTP/2 (by ALPN) on it.
//! Every request carries `ConnectInfo<SocketAddr>` as on the plain listeners,
//! so S3 sees the same peer address over either port, and a Host header
//! (HTTP/2 requests get theirs from `:authority`).

use axum::extract::ConnectInfo;
use axum::http::header::HOST;
use axum::http::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Marks a request that came over TLS (`aws:SecureTransport` in S3 policies).
#[derive(Debug, Clone, Copy)]
pub struct SecureTransport;

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: axum::Router,
) {
    let acceptor = TlsAcceptor::from(config);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                    req.extensions_mut().insert(SecureTransport);
                    // HTTP/2 carries the host as :authority, not as a Host
                    // header; SigV4 signs `host`, and the services read it there.
                    if !req.headers().contains_key(HOST) {
                        if let Some(host) = req
                            .uri()
                            .authority()
                            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                        {
                            req.headers_mut().insert(HOST, host);
                        }
                    }
                    app.clone().oneshot(req)
                },
            );
            if let Err(e) = Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "HTTPS connection ended");
            }
        });
    }
}
