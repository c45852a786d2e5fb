//! TLS to PostgreSQL, as the store's URL asks with libpq's parameters:
//! `sslmode=require`, `verify-ca` or `verify-full` encrypt the connection
//! with rustls and verify the server's certificate chain and name against
//! `sslrootcert` (a PEM file) or, without it, the host's CA bundle; Cove
//! never encrypts without verifying, so `require` and `verify-ca` are held
//! to `verify-full`. `disable`, `prefer` and no `sslmode` connect in the
//! clear, as before (Cove does not take the chance `prefer` gives to an
//! unverified server).
//!
//! The `postgres` client knows only `disable`, `prefer` and `require`, and
//! refuses options it does not know, so the URL it is given keeps
//! `sslmode=require` and loses `sslrootcert`.

use anyhow::Context as _;
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The host's CA bundle (Debian's `ca-certificates`).
const HOST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What a store URL says about TLS.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The URL for the `postgres` client.
    pub url: String,
    /// The trust to verify the server with, when the URL asks for TLS.
    pub roots: Option<Arc<rustls::ClientConfig>>,
}

/// Reads `sslmode` and `sslrootcert` out of a `postgres://` URL.
pub(crate) fn settings(url: &str) -> anyhow::Result<Settings> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut kept = Vec::new();
    let (mut mode, mut root_cert) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => mode = Some(value.to_string()),
            Some(("sslrootcert", value)) => root_cert = Some(percent_decoded(value)?),
            _ => kept.push(pair.to_string()),
        }
    }
    let encrypted = match mode.as_deref() {
        None | Some("disable" | "prefer") => false,
        Some("require" | "verify-ca" | "verify-full") => true,
        Some(other) => anyhow::bail!(
            "sslmode={other} in the store URL: Cove knows disable, prefer, require, verify-ca and verify-full"
        ),
    };
    if let Some(mode) = &mode {
        kept.push(format!(
            "sslmode={}",
            if encrypted { "require" } else { mode }
        ));
    }
    anyhow::ensure!(
        encrypted || root_cert.is_none(),
        "sslrootcert in the store URL needs sslmode=verify-full (or require, verify-ca)"
    );
    let roots = match encrypted {
        false => None,
        true => Some(client_config(Path::new(
            root_cert.as_deref().unwrap_or(HOST_BUNDLE),
        ))?),
    };
    let url = match kept.is_empty() {
        true => base.to_string(),
        false => format!("{base}?{}", kept.join("&")),
    };
    Ok(Settings { url, roots })
}

/// `%2F` and the like in a path given in a URL.
fn percent_decoded(value: &str) -> anyhow::Result<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .context("a bad %-escape in sslrootcert")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("sslrootcert is not UTF-8")
}

/// A rustls client configuration trusting the certificates in `pem`.
fn client_config(pem: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(pem)
        .with_context(|| format!("reading the store's CA certificates at {}", pem.display()))?;
    for cert in certs {
        // A certificate of the host's bundle that rustls cannot parse is
        // skipped, as webpki-roots would.
        let _ = roots.add(cert.with_context(|| format!("reading {}", pem.display()))?);
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "{} holds no CA certificate to verify PostgreSQL with",
        pem.display()
    );
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// [`MakeTlsConnect`] for the `postgres` client over rustls.
#[derive(Clone)]
pub(crate) struct Rustls(pub Arc<rustls::ClientConfig>);

impl<S> MakeTlsConnect<S> for Rustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<Connect> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(Connect {
            config: self.0.clone(),
            name,
        })
    }
}

/// One connection's handshake, to the server named `name`.
pub(crate) struct Connect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(Stream(tls))
        })
    }
}

/// An encrypted connection to PostgreSQL.
pub(crate) struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
    // SCRAM's channel binding is optional (`prefer`); the certificate
    // check above is what authenticates the server.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_read_and_the_client_gets_what_it_knows() {
        let plain = settings("postgres://cove@db/cove").unwrap();
        assert_eq!(plain.url, "postgres://cove@db/cove");
        assert!(plain.roots.is_none());
        let prefer = settings("postgres://cove@db/cove?connect_timeout=3&sslmode=prefer").unwrap();
        assert_eq!(
            prefer.url,
            "postgres://cove@db/cove?connect_timeout=3&sslmode=prefer"
        );
        assert!(prefer.roots.is_none());
        let verified = settings("postgres://cove@db/cove?sslmode=verify-full").unwrap();
        assert_eq!(verified.url, "postgres://cove@db/cove?sslmode=require");
        assert!(verified.roots.is_some());
        let e = settings("postgres://db/cove?sslmode=allow").unwrap_err();
        assert!(e.to_string().contains("sslmode=allow"), "{e}");
        let e = settings("postgres://db/cove?sslrootcert=%2Fca.pem").unwrap_err();
        assert!(e.to_string().contains("needs sslmode"), "{e}");
        let e = settings("postgres://db/cove?sslmode=require&sslrootcert=%2Fnowhere%2Fca.pem")
            .unwrap_err();
        assert!(format!("{e:#}").contains("/nowhere/ca.pem"), "{e:#}");
    }
}
