//! Cove's own certificate authority and the certificates its service
//! listeners present on port 443 inside the data plane, so that SDKs in a job
//! reach `https://s3.us-east-1.amazonaws.com` as they do on AWS and verify it.
//!
//! Everything lives in `<data_dir>/ca/`:
//!
//! | File | What |
//! | --- | --- |
//! | `ca.pem`, `ca.key` (0600) | the CA: ECDSA P-256, self-signed, 10 years, name-constrained to `amazonaws.com`; made once, kept across restarts |
//! | `<region>.pem`, `<region>.key` (0600), `<region>.json` | one server certificate per region with every service name of [`names::certificate_names`]; reissued when missing, when the names or the CA change, or 30 days before it expires |
//! | `bundle.pem` | the host's CA bundle followed by `ca.pem`: what jobs and `cove exec` see as `/etc/ssl/certs/ca-certificates.crt` |
//!
//! [`CertStore`] picks the certificate by the name the client sends (SNI):
//! the configured region's is made at start, another known region's the
//! first time a client asks for one of its names.

pub mod names;

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, SerialNumber,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use time::{Duration, OffsetDateTime};

pub use rustls;

/// Where the host's trusted roots usually are (Debian, Ubuntu, Alpine, Arch).
pub const HOST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Where jobs and `cove exec` see the combined bundle, and the variables
/// that point SDKs at it (botocore, requests, OpenSSL-based clients).
pub const BUNDLE_TARGET: &str = HOST_BUNDLE;
pub const BUNDLE_ENV: [&str; 3] = ["AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"];

const CA_COMMON_NAME: &str = "Cove Root CA";
const WEB_CA_COMMON_NAME: &str = "Cove Simulated Web CA";
const ORGANIZATION: &str = "Cove";
/// The only DNS subtree the CA may vouch for: a leaked `ca.key` cannot be
/// used against any other site by a client that trusts it.
const PERMITTED_DOMAIN: &str = "amazonaws.com";
const CA_DAYS: i64 = 3650;
const SERVER_DAYS: i64 = 365;
/// A server certificate this close to its end is replaced.
const RENEW_BEFORE_DAYS: i64 = 30;

/// `<data_dir>/ca`.
pub fn ca_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("ca")
}

/// `<data_dir>/ca/ca.pem`: what a host client trusts to reach Cove over TLS.
pub fn ca_pem_path(data_dir: &Path) -> PathBuf {
    ca_dir(data_dir).join("ca.pem")
}

/// `<data_dir>/ca/bundle.pem`: the host's roots plus Cove's CA.
pub fn bundle_path(data_dir: &Path) -> PathBuf {
    ca_dir(data_dir).join("bundle.pem")
}

/// The environment a process needs to trust the bundle at [`BUNDLE_TARGET`].
pub fn bundle_env() -> Vec<(String, String)> {
    BUNDLE_ENV
        .iter()
        .map(|v| (v.to_string(), BUNDLE_TARGET.to_string()))
        .collect()
}

/// A TLS client configuration that trusts every certificate of the PEM
/// bundle at `bundle` (the one [`Ca::write_bundle_with`] writes: the host's
/// roots and Cove's CAs), for Cove's own clients inside a VPC.
pub fn client_config(bundle: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(bundle)
        .with_context(|| format!("reading {}", bundle.display()))?
    {
        // A host root rustls cannot parse is skipped, as webpki-roots would.
        let _ = roots.add(cert.with_context(|| format!("reading {}", bundle.display()))?);
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The ring crypto provider every TLS object here uses (no aws-lc build).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive, as DER integers for serials must be
    SerialNumber::from_slice(&bytes)
}

/// Which of Cove's two authorities a [`Ca`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaKind {
    /// Cove's services (`ca.pem`): may vouch for `amazonaws.com` names only;
    /// the host's clients trust it.
    Services,
    /// The simulated web (`web-ca.pem`): may vouch for any name except
    /// `amazonaws.com`'s, and only workloads (jobs, `cove exec`) trust it,
    /// through their bundle.
    Web,
}

impl CaKind {
    fn file_stem(self) -> &'static str {
        match self {
            CaKind::Services => "ca",
            CaKind::Web => "web-ca",
        }
    }
    fn common_name(self) -> &'static str {
        match self {
            CaKind::Services => CA_COMMON_NAME,
            CaKind::Web => WEB_CA_COMMON_NAME,
        }
    }
    /// A name the CA may vouch for, to prove its key and certificate match.
    fn probe_name(self) -> &'static str {
        match self {
            CaKind::Services => "probe.amazonaws.com",
            CaKind::Web => "probe.example.org",
        }
    }
    fn constraints(self) -> NameConstraints {
        let aws = vec![GeneralSubtree::DnsName(PERMITTED_DOMAIN.into())];
        match self {
            CaKind::Services => NameConstraints {
                permitted_subtrees: aws,
                excluded_subtrees: vec![],
            },
            CaKind::Web => NameConstraints {
                permitted_subtrees: vec![],
                excluded_subtrees: aws,
            },
        }
    }
}

/// The CA's subject and constraints; the same every time, so an issuer can
/// be rebuilt from the stored key without parsing the stored certificate.
fn ca_params(kind: CaKind) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, kind.common_name());
    dn.push(DnType::OrganizationName, ORGANIZATION);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.name_constraints = Some(kind.constraints());
    params
}

/// Writes `content` to `path` through a temporary file and a rename, with `mode`.
fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(content)?;
    f.sync_all()?;
    drop(f);
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Cove's certificate authority.
pub struct Ca {
    dir: PathBuf,
    kind: CaKind,
    key: KeyPair,
    pem: String,
    der: CertificateDer<'static>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("dir", &self.dir).finish()
    }
}

impl Ca {
    /// Loads the services CA from `dir` (`ca.pem`, `ca.key`), creating both on first use.
    pub fn load_or_create(dir: &Path) -> Result<Ca> {
        Ca::load_or_create_kind(dir, CaKind::Services)
    }

    /// Loads CA `kind` from `dir` (`<stem>.pem`, `<stem>.key`), creating both on first use.
    pub fn load_or_create_kind(dir: &Path, kind: CaKind) -> Result<Ca> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let stem = kind.file_stem();
        let (cert_path, key_path) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {}
            (false, false) => {
                let key = KeyPair::generate()?;
                let mut params = ca_params(kind);
                let now = OffsetDateTime::now_utc();
                params.not_before = now - Duration::hours(1);
                params.not_after = now + Duration::days(CA_DAYS);
                params.serial_number = Some(random_serial());
                let cert = params.self_signed(&key)?;
                // The key first: a crash in between leaves a key without a
                // certificate, which the next start reports instead of
                // silently making a second CA clients do not trust.
                write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
                write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
                tracing::info!(path = %cert_path.display(), "created Cove's CA");
            }
            _ => bail!(
                "{} holds only one of {stem}.pem and {stem}.key; restore the other, or remove both to make a new CA (clients must then trust the new {stem}.pem)",
                dir.display()
            ),
        }
        let pem = std::fs::read_to_string(&cert_path)
            .with_context(|| format!("reading {}", cert_path.display()))?;
        let key_pem = std::fs::read_to_string(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("parsing {}", key_path.display()))?;
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("parsing {}: {e}", cert_path.display()))?;
        let ca = Ca {
            dir: dir.to_path_buf(),
            kind,
            key,
            pem,
            der,
        };
        // The stored certificate must be the one this key and these params
        // make an issuer for; a certificate issued now proves it.
        let probe = ca.issue("probe", &[kind.probe_name().to_string()])?;
        ca.verify(&probe.cert_der, kind.probe_name())
            .with_context(|| {
                format!(
                    "{} does not match {}",
                    cert_path.display(),
                    key_path.display()
                )
            })?;
        Ok(ca)
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// SHA-256 of the CA certificate (hex): what a server certificate records
    /// as its issuer, so a new CA forces new server certificates.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.der.as_ref()))
    }

    /// Issues a server certificate for `names` with a fresh key. Clients
    /// match the names (SANs); `common_name` is only for people.
    pub fn issue(&self, common_name: &str, names: &[String]) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, ORGANIZATION);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(SERVER_DAYS);
        params.serial_number = Some(random_serial());
        let issuer = Issuer::new(ca_params(self.kind), &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            not_after: params.not_after.unix_timestamp(),
        })
    }

    /// Checks that `cert` chains to this CA and is valid for `host`, as a
    /// client that trusts only this CA would.
    pub fn verify(&self, cert: &CertificateDer<'_>, host: &str) -> Result<()> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone())?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()?;
        let name = ServerName::try_from(host.to_string())?;
        verifier.verify_server_cert(cert, &[], &name, &[], UnixTime::now())?;
        Ok(())
    }

    /// Writes `bundle.pem` next to the CA: the roots in `host_bundle` (when
    /// readable) followed by Cove's CA, world-readable, so a job running as
    /// nobody can read it through its bind.
    pub fn write_bundle(&self, host_bundle: &Path) -> Result<PathBuf> {
        self.write_bundle_with(host_bundle, &[])
    }

    /// [`Ca::write_bundle`], with the CAs in `others` after this one.
    pub fn write_bundle_with(&self, host_bundle: &Path, others: &[&Ca]) -> Result<PathBuf> {
        let path = self.dir.join("bundle.pem");
        write_bundle_at(&path, host_bundle, &self.trust_pem(others))?;
        Ok(path)
    }

    /// This CA's certificate and then those of `others`, each after a
    /// comment naming it: what a bundle adds to the host's roots.
    pub fn trust_pem(&self, others: &[&Ca]) -> String {
        std::iter::once(self)
            .chain(others.iter().copied())
            .map(|ca| format!("# {}\n{}", ca.kind.common_name(), ca.pem))
            .collect()
    }
}

/// Writes a bundle at `path`: the roots in `host_bundle` (when readable)
/// followed by `extra` (PEM), world-readable, so a job running as nobody
/// can read it through its bind. An agent writes its own from the control
/// plane's [`Ca::trust_pem`].
pub fn write_bundle_at(path: &Path, host_bundle: &Path, extra: &str) -> Result<()> {
    let mut content = match std::fs::read(host_bundle) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(path = %host_bundle.display(), error = %e, "no host CA bundle; jobs will trust Cove's CA only");
            Vec::new()
        }
    };
    if !content.is_empty() && !content.ends_with(b"\n") {
        content.push(b'\n');
    }
    content.extend_from_slice(extra.as_bytes());
    write_atomic(path, &content, 0o644)
}

/// A certificate just issued.
pub struct Issued {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_pem: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// What `<region>.json` records about the certificate beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ServerMeta {
    names: Vec<String>,
    ca_sha256: String,
    not_after: i64,
}

/// Whether a stored server certificate can still be used.
fn still_good(meta: &ServerMeta, names: &[String], ca_sha256: &str, now: i64) -> bool {
    meta.names == names
        && meta.ca_sha256 == ca_sha256
        && meta.not_after - RENEW_BEFORE_DAYS * 86_400 > now
}

/// A region name safe to use in a file name (the region list's shape).
fn safe_region(region: &str) -> bool {
    !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

struct Loaded {
    key: Arc<CertifiedKey>,
    not_after: i64,
}

/// The server certificates of every region, picked by SNI (see the module doc).
pub struct CertStore {
    ca: Ca,
    default_region: String,
    provider: Arc<CryptoProvider>,
    loaded: Mutex<HashMap<String, Loaded>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("ca", &self.ca)
            .field("default_region", &self.default_region)
            .finish()
    }
}

impl CertStore {
    /// Opens the CA in `<data_dir>/ca` (creating it on first start) and loads
    /// or issues `default_region`'s certificate.
    pub fn open(data_dir: &Path, default_region: &str) -> Result<CertStore> {
        let ca = Ca::load_or_create(&ca_dir(data_dir))?;
        let store = CertStore {
            ca,
            default_region: default_region.to_string(),
            provider: provider(),
            loaded: Mutex::new(HashMap::new()),
        };
        store.for_region(default_region)?;
        Ok(store)
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The certificate for `region`, from memory, from disk, or newly issued.
    pub fn for_region(&self, region: &str) -> Result<Arc<CertifiedKey>> {
        if !safe_region(region) {
            bail!("not a region name: {region:?}");
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = loaded.get(region) {
            if l.not_after - RENEW_BEFORE_DAYS * 86_400 > now {
                return Ok(l.key.clone());
            }
        }
        let names = names::certificate_names(region);
        let (cert_path, key_path, meta_path) = (
            self.ca.dir.join(format!("{region}.pem")),
            self.ca.dir.join(format!("{region}.key")),
            self.ca.dir.join(format!("{region}.json")),
        );
        let fingerprint = self.ca.fingerprint();
        let stored = std::fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<ServerMeta>(&b).ok())
            .filter(|m| still_good(m, &names, &fingerprint, now))
            .and_then(|m| {
                let cert = std::fs::read(&cert_path).ok()?;
                let key = std::fs::read(&key_path).ok()?;
                Some((m, cert, key))
            });
        let (not_after, cert_pem, key_pem) = match stored {
            Some((m, cert, key)) => (m.not_after, cert, key),
            None => {
                let issued = self.ca.issue(&format!("Cove services {region}"), &names)?;
                write_atomic(&key_path, issued.key_pem.as_bytes(), 0o600)?;
                write_atomic(&cert_path, issued.cert_pem.as_bytes(), 0o644)?;
                let meta = ServerMeta {
                    names: names.clone(),
                    ca_sha256: fingerprint,
                    not_after: issued.not_after,
                };
                write_atomic(&meta_path, &serde_json::to_vec_pretty(&meta)?, 0o644)?;
                tracing::info!(%region, names = names.len(), "issued the service certificate");
                (
                    issued.not_after,
                    issued.cert_pem.into_bytes(),
                    issued.key_pem.into_bytes(),
                )
            }
        };
        let cert = CertificateDer::from_pem_slice(&cert_pem)
            .map_err(|e| anyhow::anyhow!("parsing {}: {e}", cert_path.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| anyhow::anyhow!("parsing {}: {e}", key_path.display()))?;
        let certified = Arc::new(CertifiedKey::from_der(vec![cert], key, &self.provider)?);
        loaded.insert(
            region.to_string(),
            Loaded {
                key: certified.clone(),
                not_after,
            },
        );
        Ok(certified)
    }

    /// The region whose certificate answers a client that sent `sni`: the
    /// region the name belongs to when it is one Cove may serve, else the
    /// configured one (global names, no SNI, or a name Cove does not serve,
    /// which the client then rejects).
    fn region_for(&self, sni: Option<&str>) -> String {
        sni.and_then(names::region_of)
            .filter(|r| {
                *r == self.default_region || cove_model::region::is_known_region(r.as_str())
            })
            .unwrap_or_else(|| self.default_region.clone())
    }

    /// A rustls server configuration presenting these certificates, with
    /// HTTP/2 and HTTP/1.1 offered by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let region = self.region_for(hello.server_name());
        match self.for_region(&region) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(%region, error = %e, "no service certificate");
                None
            }
        }
    }
}

/// Certificates of the simulated web, issued by the web CA for whatever
/// public name a client asks for (SNI), kept in memory.
pub struct WebCerts {
    ca: Ca,
    provider: Arc<CryptoProvider>,
    issued: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for WebCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebCerts").field("ca", &self.ca).finish()
    }
}

/// At most this many names' certificates are kept; then the cache starts over.
const MAX_WEB_CERTS: usize = 4096;

impl WebCerts {
    /// Opens the web CA in `<data_dir>/ca` (`web-ca.pem`, `web-ca.key`),
    /// creating it on first start.
    pub fn open(data_dir: &Path) -> Result<WebCerts> {
        Ok(WebCerts {
            ca: Ca::load_or_create_kind(&ca_dir(data_dir), CaKind::Web)?,
            provider: provider(),
            issued: Mutex::new(HashMap::new()),
        })
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The certificate for public name `name`, issued on first use.
    pub fn for_name(&self, name: &str) -> Result<Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !cove_model::region::is_public_name(&name) {
            bail!("{name:?} is not a name of the simulated web");
        }
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = issued.get(&name) {
            return Ok(k.clone());
        }
        let cert = self.ca.issue(&name, std::slice::from_ref(&name))?;
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("parsing a new key: {e}"))?;
        let certified = Arc::new(CertifiedKey::from_der(
            vec![cert.cert_der],
            key,
            &self.provider,
        )?);
        if issued.len() >= MAX_WEB_CERTS {
            issued.clear();
        }
        issued.insert(name, certified.clone());
        Ok(certified)
    }

    /// A rustls server configuration presenting these certificates.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for WebCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        match self.for_name(name) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::debug!(%name, error = %e, "no simulated web certificate");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(store: &CertStore, region: &str) -> CertificateDer<'static> {
        store.for_region(region).unwrap().cert[0].clone()
    }

    #[test]
    fn the_ca_is_made_once_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let dir = ca_dir(d.path());
        let a = Ca::load_or_create(&dir).unwrap();
        let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("ca.key"), 0o600);
        assert_eq!(mode("ca.pem"), 0o644);
        let b = Ca::load_or_create(&dir).unwrap();
        assert_eq!(a.pem(), b.pem());
        assert_eq!(a.fingerprint(), b.fingerprint());
        // A certificate from the reloaded CA verifies against the first.
        let issued = b
            .issue("test", &["s3.us-east-1.amazonaws.com".into()])
            .unwrap();
        a.verify(&issued.cert_der, "s3.us-east-1.amazonaws.com")
            .unwrap();
        // Half a CA is an error, not a silent new CA.
        std::fs::remove_file(dir.join("ca.key")).unwrap();
        assert!(Ca::load_or_create(&dir).is_err());
    }

    #[test]
    fn the_ca_vouches_only_for_amazonaws_com() {
        let d = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(&ca_dir(d.path())).unwrap();
        let evil = ca.issue("evil", &["example.com".into()]).unwrap();
        assert!(ca.verify(&evil.cert_der, "example.com").is_err());
    }

    #[test]
    fn the_service_certificate_covers_every_name_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let store = CertStore::open(d.path(), "us-east-1").unwrap();
        let cert = leaf(&store, "us-east-1");
        for host in [
            "s3.us-east-1.amazonaws.com",
            "my-bucket.s3.us-east-1.amazonaws.com",
            "s3.amazonaws.com",
            "my-bucket.s3.amazonaws.com",
            "sts.amazonaws.com",
            "api.sagemaker.us-east-1.amazonaws.com",
            "vpce-0abc-12345678-us-east-1a.logs.us-east-1.vpce.amazonaws.com",
        ] {
            store.ca().verify(&cert, host).unwrap();
        }
        for host in [
            "s3.eu-west-1.amazonaws.com",
            "my.bucket.s3.us-east-1.amazonaws.com",
            "amazonaws.com",
        ] {
            assert!(store.ca().verify(&cert, host).is_err(), "{host}");
        }
    }

    #[test]
    fn server_certificates_are_kept_and_reissued_when_stale() {
        let d = tempfile::tempdir().unwrap();
        let dir = ca_dir(d.path());
        let first = leaf(
            &CertStore::open(d.path(), "us-east-1").unwrap(),
            "us-east-1",
        );
        let mode = std::fs::metadata(dir.join("us-east-1.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Kept across a restart.
        let again = leaf(
            &CertStore::open(d.path(), "us-east-1").unwrap(),
            "us-east-1",
        );
        assert_eq!(first, again);
        // A different name set (say, a new service) makes a new one.
        let meta_path = dir.join("us-east-1.json");
        let mut meta: ServerMeta =
            serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
        meta.names.pop();
        std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
        let renamed = leaf(
            &CertStore::open(d.path(), "us-east-1").unwrap(),
            "us-east-1",
        );
        assert_ne!(first, renamed);
        // So does a missing file.
        std::fs::remove_file(dir.join("us-east-1.pem")).unwrap();
        let reissued = leaf(
            &CertStore::open(d.path(), "us-east-1").unwrap(),
            "us-east-1",
        );
        assert_ne!(renamed, reissued);
        // And a new CA.
        for f in ["ca.pem", "ca.key"] {
            std::fs::remove_file(dir.join(f)).unwrap();
        }
        let store = CertStore::open(d.path(), "us-east-1").unwrap();
        let fresh = leaf(&store, "us-east-1");
        assert_ne!(reissued, fresh);
        store
            .ca()
            .verify(&fresh, "s3.us-east-1.amazonaws.com")
            .unwrap();
    }

    #[test]
    fn staleness() {
        let names = vec!["a".to_string()];
        let meta = ServerMeta {
            names: names.clone(),
            ca_sha256: "x".into(),
            not_after: 100 * 86_400,
        };
        assert!(still_good(&meta, &names, "x", 0));
        assert!(!still_good(&meta, &names, "y", 0));
        assert!(!still_good(&meta, &["b".to_string()], "x", 0));
        assert!(!still_good(&meta, &names, "x", 71 * 86_400));
    }

    #[test]
    fn sni_picks_the_region() {
        let d = tempfile::tempdir().unwrap();
        let store = CertStore::open(d.path(), "us-east-1").unwrap();
        assert_eq!(store.region_for(None), "us-east-1");
        assert_eq!(store.region_for(Some("s3.amazonaws.com")), "us-east-1");
        assert_eq!(
            store.region_for(Some("logs.eu-west-1.amazonaws.com")),
            "eu-west-1"
        );
        // A made-up region does not get a certificate made for it.
        assert_eq!(
            store.region_for(Some("s3.xx-nowhere-9.amazonaws.com")),
            "us-east-1"
        );
        let eu = leaf(&store, "eu-west-1");
        store
            .ca()
            .verify(&eu, "bucket.s3.eu-west-1.amazonaws.com")
            .unwrap();
        assert!(ca_dir(d.path()).join("eu-west-1.pem").exists());
        assert!(store.for_region("../etc").is_err());
    }

    #[test]
    fn the_bundle_is_the_host_roots_then_coves() {
        let d = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(&ca_dir(d.path())).unwrap();
        let host = d.path().join("host.crt");
        std::fs::write(
            &host,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
        )
        .unwrap();
        let path = ca.write_bundle(&host).unwrap();
        assert_eq!(path, bundle_path(d.path()));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n# Cove Root CA\n"
        ));
        assert!(text.ends_with(ca.pem()));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        // No host bundle: Cove's CA alone.
        let path = ca.write_bundle(&d.path().join("missing")).unwrap();
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            format!("# Cove Root CA\n{}", ca.pem())
        );
    }

    #[test]
    fn the_web_ca_vouches_for_public_names_but_never_amazonaws_com() {
        let d = tempfile::tempdir().unwrap();
        let web = WebCerts::open(d.path()).unwrap();
        let pypi = web.for_name("PyPI.org.").unwrap();
        web.ca().verify(&pypi.cert[0], "pypi.org").unwrap();
        assert!(Arc::ptr_eq(&pypi, &web.for_name("pypi.org").unwrap()));
        assert!(web.for_name("s3.us-east-1.amazonaws.com").is_err());
        assert!(web.for_name("db.internal").is_err());
        // Even a certificate it was made to sign is refused for AWS's names.
        let forged = web
            .ca()
            .issue("forged", &["s3.us-east-1.amazonaws.com".to_string()])
            .unwrap();
        assert!(web
            .ca()
            .verify(&forged.cert_der, "s3.us-east-1.amazonaws.com")
            .is_err());
        // And the services CA stays apart: a second CA, kept across restarts.
        let again = WebCerts::open(d.path()).unwrap();
        assert_eq!(again.ca().pem(), web.ca().pem());
        let services = Ca::load_or_create(&ca_dir(d.path())).unwrap();
        assert_ne!(services.pem(), web.ca().pem());
        let bundle = services
            .write_bundle_with(&d.path().join("none"), &[web.ca()])
            .unwrap();
        let text = std::fs::read_to_string(bundle).unwrap();
        assert!(text.contains("# Cove Root CA") && text.contains("# Cove Simulated Web CA"));
    }
}
