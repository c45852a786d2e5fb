//! The names of the registry, parsed once at the boundary: repository names,
//! tags, digests, registry hosts (`<account>.dkr.ecr.<region>.amazonaws.com`)
//! and the image URIs that SageMaker requests name.

use oci_spec::image::{Digest, DigestAlgorithm};
use regex::Regex;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// A repository name as ECR accepts it: lowercase components separated by
/// `/`, each of letters and digits joined by `.`, `_`, `__` or dashes; 2 to
/// 256 characters.
pub fn valid_repository_name(name: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")
            .expect("static pattern")
    });
    (2..=256).contains(&name.len()) && re.is_match(name)
}

/// A tag as the distribution API accepts it.
pub fn valid_tag(tag: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").expect("static"));
    re.is_match(tag)
}

/// A SHA-256 content digest (`sha256:<64 hex>`), the only algorithm ECR uses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentDigest(String);

impl ContentDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> ContentDigest {
        use sha2::Digest as _;
        ContentDigest(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(bytes))
        ))
    }
    /// The digest whose SHA-256 hash is `hash`.
    pub fn from_sha256(hash: [u8; 32]) -> ContentDigest {
        ContentDigest(format!("sha256:{}", hex::encode(hash)))
    }
    /// The 64 hexadecimal characters.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ContentDigest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<ContentDigest, DigestError> {
        let d = Digest::from_str(s).map_err(|_| DigestError::Invalid)?;
        match d.algorithm() {
            DigestAlgorithm::Sha256 => Ok(ContentDigest(d.to_string())),
            _ => Err(DigestError::Unsupported),
        }
    }
}

impl fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a digest was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestError {
    /// Not of the form `algorithm:hex`.
    Invalid,
    /// Well formed, but not SHA-256.
    Unsupported,
}

/// What a manifest is fetched or stored by: a tag or its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(ContentDigest),
}

impl Reference {
    /// A reference from the distribution API's path: a digest when it has
    /// the form of one, else a tag.
    pub fn parse(s: &str) -> Option<Reference> {
        if s.contains(':') {
            s.parse().ok().map(Reference::Digest)
        } else if valid_tag(s) {
            Some(Reference::Tag(s.to_string()))
        } else {
            None
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// A private registry's host: `<account>.dkr.ecr.<region>.amazonaws.com`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryHost {
    pub account: String,
    pub region: String,
}

impl RegistryHost {
    /// Reads a host name (a port is ignored); `None` for any other host.
    pub fn parse(host: &str) -> Option<RegistryHost> {
        let host = host.split(':').next().unwrap_or(host);
        let rest = host.strip_suffix(".amazonaws.com")?;
        let (account, rest) = rest.split_once(".dkr.ecr.")?;
        let region = rest.strip_suffix("-fips").unwrap_or(rest);
        let ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
        (ok && !region.is_empty() && !region.contains('.')).then(|| RegistryHost {
            account: account.to_string(),
            region: region.to_string(),
        })
    }

    pub fn name(&self) -> String {
        format!("{}.dkr.ecr.{}.amazonaws.com", self.account, self.region)
    }
}

/// An image URI as SageMaker takes it: `<registry>/<repository>[:tag|@digest]`;
/// without either, the tag `latest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageUri {
    pub registry: RegistryHost,
    pub repository: String,
    pub reference: Reference,
}

impl FromStr for ImageUri {
    type Err = ();
    fn from_str(uri: &str) -> Result<ImageUri, ()> {
        let (host, path) = uri.split_once('/').ok_or(())?;
        let registry = RegistryHost::parse(host).ok_or(())?;
        let (repository, reference) = if let Some((repo, digest)) = path.split_once('@') {
            (repo, Reference::Digest(digest.parse().map_err(|_| ())?))
        } else {
            match path.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => {
                    if !valid_tag(tag) {
                        return Err(());
                    }
                    (repo, Reference::Tag(tag.to_string()))
                }
                _ => (path, Reference::Tag("latest".into())),
            }
        };
        if !valid_repository_name(repository) {
            return Err(());
        }
        Ok(ImageUri {
            registry,
            repository: repository.to_string(),
            reference,
        })
    }
}

impl fmt::Display for ImageUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = match self.reference {
            Reference::Tag(_) => ':',
            Reference::Digest(_) => '@',
        };
        write!(
            f,
            "{}/{}{sep}{}",
            self.registry.name(),
            self.repository,
            self.reference
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn repository_names() {
        for ok in ["ab", "my-repo", "team/model_v2", "a.b/c__d", "x--y/z"] {
            assert!(valid_repository_name(ok), "{ok}");
        }
        for bad in [
            "a", "My-repo", "-x", "x-", "a//b", "/ab", "ab/", "a b", "a:b",
        ] {
            assert!(!valid_repository_name(bad), "{bad}");
        }
        assert!(!valid_repository_name(&"a".repeat(257)));
    }

    #[test]
    fn digests_and_references() {
        let d: ContentDigest = format!("sha256:{HEX}").parse().unwrap();
        assert_eq!(d.hex(), HEX);
        assert_eq!(ContentDigest::of(b""), d);
        assert_eq!(
            "sha256:abc".parse::<ContentDigest>(),
            Err(DigestError::Invalid)
        );
        assert_eq!(
            format!("sha512:{}", "a".repeat(128)).parse::<ContentDigest>(),
            Err(DigestError::Unsupported)
        );
        assert_eq!(
            Reference::parse("v1.0"),
            Some(Reference::Tag("v1.0".into()))
        );
        assert_eq!(
            Reference::parse(&format!("sha256:{HEX}")),
            Some(Reference::Digest(d))
        );
        assert_eq!(Reference::parse(".bad"), None);
    }

    #[test]
    fn registry_hosts_and_image_uris() {
        let host = RegistryHost::parse("123456789012.dkr.ecr.us-east-1.amazonaws.com:443").unwrap();
        assert_eq!(host.region, "us-east-1");
        assert_eq!(
            RegistryHost::parse("12345.dkr.ecr.us-east-1.amazonaws.com"),
            None
        );
        assert_eq!(RegistryHost::parse("s3.us-east-1.amazonaws.com"), None);

        let uri: ImageUri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/model:v2"
            .parse()
            .unwrap();
        assert_eq!(uri.repository, "team/model");
        assert_eq!(uri.reference, Reference::Tag("v2".into()));
        let bare: ImageUri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/model"
            .parse()
            .unwrap();
        assert_eq!(bare.reference, Reference::Tag("latest".into()));
        let pinned = format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/model@sha256:{HEX}");
        let by_digest: ImageUri = pinned.parse().unwrap();
        assert_eq!(by_digest.to_string(), pinned);
        assert!("docker.io/library/python:3".parse::<ImageUri>().is_err());
        assert!("123456789012.dkr.ecr.us-east-1.amazonaws.com/Model:1"
            .parse::<ImageUri>()
            .is_err());
    }
}
