//! Pulling an image from Cove's registry over HTTPS through a job host's
//! own network, as `TrainingRepositoryAccessMode: Vpc` asks: the manifest
//! and every blob travel from the registry's address (an `ecr.dkr`
//! endpoint's ENI, or the public address behind the VPC's gateways) to the
//! host's ENI, so the VPC's routes, ACLs, security groups and flow logs see
//! the whole transfer. Every body is checked against its digest. The
//! container's root is then unpacked from the registry's store, which holds
//! the same bytes.

use crate::http::{full, Connection};
use bytes::Bytes;
use hyper::Request;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long one blob may take to arrive.
const BLOB_TIMEOUT: Duration = Duration::from_secs(600);

/// What to pull, and from where.
pub struct Pull<'a> {
    /// The registry's host name (`<account>.dkr.ecr.<region>.amazonaws.com`).
    pub host: &'a str,
    /// Its address as the host's VPC resolves the name.
    pub address: std::net::IpAddr,
    pub repository: &'a str,
    /// `sha256:<hex>` of the manifest.
    pub manifest: &'a str,
    /// `sha256:<hex>` of the config and layers.
    pub blobs: &'a [String],
    /// The `Authorization` header (`Basic <AWS:password>`).
    pub authorization: &'a str,
}

/// Pulls the manifest and every blob over HTTPS from the calling thread's
/// network namespace; returns the bytes received. The error says which
/// request failed and why.
pub fn pull(
    p: &Pull<'_>,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> Result<u64, String> {
    let addr = SocketAddr::from((p.address, 443));
    let mut connection = Connection::open_tls(addr, p.host, tls, connect_timeout)
        .map_err(|e| format!("connecting to {} ({addr}): {e}", p.host))?;
    let manifest_path = format!("/v2/{}/manifests/{}", p.repository, p.manifest);
    let mut received = get_checked(&mut connection, p, &manifest_path, p.manifest)?;
    for blob in p.blobs {
        let path = format!("/v2/{}/blobs/{blob}", p.repository);
        received += get_checked(&mut connection, p, &path, blob)?;
    }
    Ok(received)
}

/// Verifies what it reads as it reads it: a hashing sink.
struct Hashing {
    hash: Sha256,
}

impl std::io::Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hash.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn get_checked(
    connection: &mut Connection,
    p: &Pull<'_>,
    path: &str,
    digest: &str,
) -> Result<u64, String> {
    let request = Request::get(path)
        .header(hyper::header::AUTHORIZATION, p.authorization)
        .header(
            hyper::header::ACCEPT,
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, */*",
        )
        .body(full(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = connection
        .send(request, BLOB_TIMEOUT)
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GET {path}: HTTP {}", status.as_u16()));
    }
    let mut sink = Hashing {
        hash: Sha256::new(),
    };
    let n = connection
        .copy_body(response.into_body(), &mut sink)
        .map_err(|e| format!("GET {path}: {e}"))?;
    let got = format!("sha256:{}", hex::encode(sink.hash.finalize()));
    if got != digest {
        return Err(format!(
            "GET {path}: the body's digest is {got}, not {digest}"
        ));
    }
    Ok(n)
}
