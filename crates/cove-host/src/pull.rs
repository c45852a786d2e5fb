//! Pulling an image from Cove's registry over HTTPS, as a registry client
//! does: the image manifest by its digest, then its config and layers, each
//! body checked against its digest as it arrives.
//!
//! Two callers: an instance with `TrainingRepositoryAccessMode: Vpc` pulls
//! from its ENI's namespace (the manifest and every blob travel from the
//! registry's address in the VPC, an `ecr.dkr` endpoint's ENI or the public
//! address behind the VPC's gateways, so routes, ACLs, security groups and
//! flow logs see the whole transfer); and an agent pulls the images of the
//! instances placed on it from the control plane's registry on the
//! underlay. The control plane's own host keeps nothing (its registry's
//! store holds the bytes); an agent keeps the blobs in a content-addressed
//! cache, from which the container's root is unpacked.

use crate::http::{full, Connection};
use bytes::Bytes;
use cove_ecr::names::ContentDigest;
use hyper::Request;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long one blob may take to arrive.
const BLOB_TIMEOUT: Duration = Duration::from_secs(600);

/// The manifest types a pull accepts (the ones Cove's registry stores).
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// What to pull, and from where.
pub struct Pull<'a> {
    /// The registry's host name (`<account>.dkr.ecr.<region>.amazonaws.com`):
    /// the TLS server name and the `Host` of every request.
    pub host: &'a str,
    /// Where to connect: the registry's address as the instance's VPC
    /// resolves its name, or the control plane's registry on the underlay.
    pub address: SocketAddr,
    pub repository: &'a str,
    /// `sha256:<hex>` of the image manifest.
    pub manifest: &'a str,
    /// The `Authorization` header (`Basic <AWS:password>`).
    pub authorization: &'a str,
}

/// What becomes of the blobs a pull receives.
#[derive(Debug, Clone, Copy)]
pub enum Keep<'a> {
    /// Checked, then dropped: this host's registry store holds them.
    Nothing,
    /// Kept in the cache at this directory ([`blob_path`]); a blob already
    /// there is not asked for again.
    Missing(&'a Path),
    /// Kept in the cache, every blob asked for even when it is there: the
    /// transfer itself is what the pull proves (the VPC lets it through).
    All(&'a Path),
}

/// What a pull did.
#[derive(Debug)]
pub struct Pulled {
    /// Bytes received (manifest and blobs).
    pub received: u64,
    /// The layers' files in the cache, bottom first (none with
    /// [`Keep::Nothing`]).
    pub layers: Vec<PathBuf>,
}

/// Where the cache at `cache` keeps the blob `digest`.
pub fn blob_path(cache: &Path, digest: &ContentDigest) -> PathBuf {
    cache.join("sha256").join(digest.hex())
}

/// Pulls the manifest and every blob over HTTPS from the calling thread's
/// network namespace, keeping them as `keep` says. The error says which
/// request failed and why.
pub fn pull(
    p: &Pull<'_>,
    keep: Keep<'_>,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> Result<Pulled, String> {
    let manifest_digest: ContentDigest = p
        .manifest
        .parse()
        .map_err(|_| format!("{} is not a manifest digest", p.manifest))?;
    let mut connection = Connection::open_tls(p.address, p.host, tls, connect_timeout)
        .map_err(|e| format!("connecting to {} ({}): {e}", p.host, p.address))?;
    let manifest_path = format!("/v2/{}/manifests/{}", p.repository, p.manifest);
    let mut manifest = Vec::new();
    let mut received = get_checked(
        &mut connection,
        p,
        &manifest_path,
        &manifest_digest,
        &mut manifest,
    )?;
    let parsed = cove_ecr::manifest::parse(&manifest, None)
        .map_err(|e| format!("GET {manifest_path}: {}", e.message))?;
    if parsed.blobs.is_empty() {
        return Err(format!("GET {manifest_path}: not an image manifest"));
    }
    let mut layers = Vec::new();
    for (i, blob) in parsed.blobs.iter().enumerate() {
        let path = format!("/v2/{}/blobs/{blob}", p.repository);
        let kept = match keep {
            Keep::Nothing => {
                received += get_checked(&mut connection, p, &path, blob, &mut std::io::sink())?;
                continue;
            }
            Keep::Missing(cache) | Keep::All(cache) => {
                let kept = blob_path(cache, blob);
                if !(kept.is_file() && matches!(keep, Keep::Missing(_))) {
                    received += fetch_into_cache(&mut connection, p, &path, blob, &kept)?;
                }
                kept
            }
        };
        // The first blob is the image's config; the others are its layers.
        if i > 0 {
            layers.push(kept);
        }
    }
    Ok(Pulled { received, layers })
}

/// GETs a blob into a file beside `kept` and renames it into place once its
/// digest is right, so the cache holds only whole, checked blobs (a blob
/// already there is read again and dropped).
fn fetch_into_cache(
    connection: &mut Connection,
    p: &Pull<'_>,
    path: &str,
    blob: &ContentDigest,
    kept: &Path,
) -> Result<u64, String> {
    let dir = kept.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("making {}: {e}", dir.display()))?;
    let partial = dir.join(format!(".{}.{}.part", blob.hex(), uuid::Uuid::new_v4()));
    let written = std::fs::File::create(&partial)
        .map_err(|e| format!("creating {}: {e}", partial.display()))
        .and_then(|file| {
            let mut out = std::io::BufWriter::new(file);
            let n = get_checked(connection, p, path, blob, &mut out)?;
            out.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .map_err(|e| format!("writing {}: {e}", partial.display()))?;
            Ok(n)
        })
        .and_then(|n| {
            std::fs::rename(&partial, kept)
                .map(|()| n)
                .map_err(|e| format!("keeping {}: {e}", kept.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Verifies what it passes on as it passes it on: a hashing writer.
struct Hashing<'w, W: Write> {
    hash: Sha256,
    out: &'w mut W,
}

impl<W: Write> Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write_all(buf)?;
        self.hash.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

fn get_checked(
    connection: &mut Connection,
    p: &Pull<'_>,
    path: &str,
    digest: &ContentDigest,
    out: &mut impl Write,
) -> Result<u64, String> {
    let request = Request::get(path)
        .header(hyper::header::HOST, p.host)
        .header(hyper::header::AUTHORIZATION, p.authorization)
        .header(hyper::header::ACCEPT, MANIFEST_TYPES)
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
        out,
    };
    let n = connection
        .copy_body(response.into_body(), &mut sink)
        .map_err(|e| format!("GET {path}: {e}"))?;
    let got = ContentDigest::from_sha256(sink.hash.finalize().into());
    if got != *digest {
        return Err(format!(
            "GET {path}: the body's digest is {got}, not {digest}"
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use std::collections::HashMap;
    use std::sync::Mutex;

    const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    const AUTHORIZATION: &str = "Basic QVdTOnNlY3JldA==";

    /// A registry over TLS on loopback that serves fixed bodies by path,
    /// counting the GETs of each, and refuses a wrong `Authorization`.
    struct FakeRegistry {
        address: SocketAddr,
        gets: Arc<Mutex<HashMap<String, usize>>>,
        tls: Arc<rustls::ClientConfig>,
        _dir: tempfile::TempDir,
    }

    fn registry(bodies: HashMap<String, Vec<u8>>) -> FakeRegistry {
        let dir = tempfile::tempdir().unwrap();
        let ca = cove_tls::Ca::load_or_create(dir.path()).unwrap();
        let issued = ca.issue("registry", &[HOST.to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes());
        use rustls::pki_types::pem::PemObject;
        let server = rustls::ServerConfig::builder_with_provider(cove_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![issued.cert_der.clone()], key.unwrap())
            .unwrap();
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, ca.pem()).unwrap();
        let tls = cove_tls::client_config(&bundle).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let gets = Arc::new(Mutex::new(HashMap::new()));
        let (counted, bodies) = (gets.clone(), Arc::new(bodies));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        continue;
                    };
                    let (counted, bodies) = (counted.clone(), bodies.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req: Request<_>| {
                            let path = req.uri().path().to_string();
                            *counted.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
                            let allowed = req.headers().get(hyper::header::AUTHORIZATION)
                                == Some(&hyper::header::HeaderValue::from_static(AUTHORIZATION));
                            let (status, body) = match bodies.get(&path) {
                                Some(b) if allowed => (200, b.clone()),
                                Some(_) => (401, Vec::new()),
                                None => (404, Vec::new()),
                            };
                            let response = hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap();
                            async move { Ok::<_, std::convert::Infallible>(response) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
        });
        FakeRegistry {
            address,
            gets,
            tls,
            _dir: dir,
        }
    }

    /// An image of one config and two layers, as a registry serves it: the
    /// bodies by path, and the manifest's digest.
    fn image(tamper_with_layer: bool) -> (HashMap<String, Vec<u8>>, String, Vec<Vec<u8>>) {
        let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        let layers = vec![b"layer one".to_vec(), b"layer two".to_vec()];
        let descriptor = |media: &str, data: &[u8]| {
            format!(
                r#"{{"mediaType":"{media}","digest":"{}","size":{}}}"#,
                ContentDigest::of(data),
                data.len()
            )
        };
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[{},{}]}}"#,
            descriptor("application/vnd.oci.image.config.v1+json", &config),
            descriptor("application/vnd.oci.image.layer.v1.tar", &layers[0]),
            descriptor("application/vnd.oci.image.layer.v1.tar", &layers[1]),
        )
        .into_bytes();
        let manifest_digest = ContentDigest::of(&manifest).to_string();
        let mut bodies = HashMap::new();
        bodies.insert(
            format!("/v2/team/model/manifests/{manifest_digest}"),
            manifest,
        );
        for blob in std::iter::once(&config).chain(&layers) {
            let mut body = blob.clone();
            if tamper_with_layer && blob == &layers[1] {
                body.push(b'!');
            }
            bodies.insert(
                format!("/v2/team/model/blobs/{}", ContentDigest::of(blob)),
                body,
            );
        }
        (bodies, manifest_digest, layers)
    }

    fn pull_from(
        r: &FakeRegistry,
        manifest: &str,
        authorization: &str,
        keep: Keep<'_>,
    ) -> Result<Pulled, String> {
        let p = Pull {
            host: HOST,
            address: r.address,
            repository: "team/model",
            manifest,
            authorization,
        };
        pull(&p, keep, r.tls.clone(), Duration::from_secs(5))
    }

    fn blob_gets(r: &FakeRegistry) -> usize {
        let gets = r.gets.lock().unwrap();
        gets.iter()
            .filter(|(path, _)| path.contains("/blobs/"))
            .map(|(_, n)| n)
            .sum()
    }

    #[test]
    fn an_agent_keeps_checked_blobs_and_asks_only_for_missing_ones() {
        let (bodies, manifest, layers) = image(false);
        let r = registry(bodies);
        let cache = tempfile::tempdir().unwrap();
        let first = pull_from(&r, &manifest, AUTHORIZATION, Keep::Missing(cache.path())).unwrap();
        assert_eq!(blob_gets(&r), 3);
        let kept: Vec<Vec<u8>> = first
            .layers
            .iter()
            .map(|l| std::fs::read(l).unwrap())
            .collect();
        assert_eq!(kept, layers, "the layers, bottom first, without the config");
        assert!(first.received > 0);
        // Held already: only the manifest is asked for again.
        pull_from(&r, &manifest, AUTHORIZATION, Keep::Missing(cache.path())).unwrap();
        assert_eq!(blob_gets(&r), 3);
        // A pull that must cross the network asks for every blob again.
        pull_from(&r, &manifest, AUTHORIZATION, Keep::All(cache.path())).unwrap();
        assert_eq!(blob_gets(&r), 6);
        // Nothing is left half-written beside the blobs.
        let names: Vec<String> = std::fs::read_dir(cache.path().join("sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.iter().all(|n| !n.ends_with(".part")), "{names:?}");
    }

    #[test]
    fn a_blob_whose_digest_is_wrong_is_refused_and_not_kept() {
        let (bodies, manifest, _) = image(true);
        let r = registry(bodies);
        let cache = tempfile::tempdir().unwrap();
        let e = pull_from(&r, &manifest, AUTHORIZATION, Keep::Missing(cache.path())).unwrap_err();
        assert!(e.contains("the body's digest is"), "{e}");
        let kept = std::fs::read_dir(cache.path().join("sha256"))
            .unwrap()
            .count();
        assert_eq!(kept, 2, "only the config and the good layer are kept");
        let e = pull_from(&r, &manifest, AUTHORIZATION, Keep::Nothing).unwrap_err();
        assert!(e.contains("the body's digest is"), "{e}");
    }

    #[test]
    fn a_refused_password_or_an_unknown_manifest_says_which_request_failed() {
        let (bodies, manifest, _) = image(false);
        let r = registry(bodies);
        let e = pull_from(&r, &manifest, "Basic bm9wZQ==", Keep::Nothing).unwrap_err();
        assert_eq!(
            e,
            format!("GET /v2/team/model/manifests/{manifest}: HTTP 401")
        );
        let other = ContentDigest::of(b"other").to_string();
        let e = pull_from(&r, &other, AUTHORIZATION, Keep::Nothing).unwrap_err();
        assert_eq!(e, format!("GET /v2/team/model/manifests/{other}: HTTP 404"));
    }
}
