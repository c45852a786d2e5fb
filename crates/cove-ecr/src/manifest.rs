//! Reading pushed manifests (OCI and Docker v2 image manifests and their
//! index/list forms, parsed with `oci-spec`): what they name, so the
//! registry can check that the blobs and images exist before it accepts one.

use crate::names::ContentDigest;
use cove_model::{AwsError, AwsResult};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What a manifest names and how it is described.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub media_type: String,
    /// The config's media type (ECR's `artifactMediaType`).
    pub artifact_media_type: Option<String>,
    /// The config and layers an image manifest names.
    pub blobs: Vec<ContentDigest>,
    /// The manifests an index names.
    pub manifests: Vec<ContentDigest>,
    /// The layers' sizes (ECR's `imageSizeInBytes` adds them up).
    pub sizes: Vec<i64>,
}

pub fn invalid(why: impl std::fmt::Display) -> AwsError {
    AwsError::client(
        "InvalidParameterException",
        format!("Invalid parameter at 'imageManifest' failed to satisfy constraint: '{why}'"),
    )
}

fn digest_of(d: &Descriptor) -> AwsResult<ContentDigest> {
    d.digest()
        .to_string()
        .parse()
        .map_err(|_| invalid(format!("unsupported digest {}", d.digest())))
}

/// Parses a manifest. Its media type comes from its `mediaType` member, or
/// else from the request's `Content-Type`, or else from its shape.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> AwsResult<Parsed> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| invalid("Invalid JSON syntax"))?;
    if value.get("schemaVersion").and_then(|v| v.as_i64()) != Some(2) {
        return Err(invalid(
            "Invalid schemaVersion: only schema version 2 manifests are supported",
        ));
    }
    let declared = value
        .get("mediaType")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or_else(|| {
            content_type
                .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
                .filter(|c| c.contains("manifest") || c.contains("index"))
        });
    let is_index = match declared.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        _ => value.get("manifests").is_some(),
    };
    if is_index {
        let index = ImageIndex::from_reader(bytes).map_err(invalid)?;
        let manifests = index
            .manifests()
            .iter()
            .map(digest_of)
            .collect::<AwsResult<_>>()?;
        Ok(Parsed {
            media_type: declared.unwrap_or_else(|| OCI_INDEX.into()),
            artifact_media_type: None,
            blobs: Vec::new(),
            manifests,
            sizes: Vec::new(),
        })
    } else {
        let manifest = ImageManifest::from_reader(bytes).map_err(invalid)?;
        let mut blobs = vec![digest_of(manifest.config())?];
        let mut sizes = Vec::new();
        for layer in manifest.layers() {
            blobs.push(digest_of(layer)?);
            sizes.push(i64::try_from(layer.size()).unwrap_or(i64::MAX));
        }
        Ok(Parsed {
            media_type: declared.unwrap_or_else(|| OCI_MANIFEST.into()),
            artifact_media_type: Some(manifest.config().media_type().to_string()),
            blobs,
            manifests: Vec::new(),
            sizes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn digest(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    #[test]
    fn image_manifests_name_their_config_and_layers() {
        let m = json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": digest(1), "size": 10},
            "layers": [
                {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                 "digest": digest(2), "size": 300},
                {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                 "digest": digest(3), "size": 40}
            ]
        });
        let p = parse(m.to_string().as_bytes(), None).unwrap();
        assert_eq!(p.media_type, DOCKER_MANIFEST);
        assert_eq!(p.blobs.len(), 3);
        assert_eq!(p.blobs[1].as_str(), digest(2));
        assert_eq!(p.sizes.iter().sum::<i64>(), 340);
        assert_eq!(
            p.artifact_media_type.as_deref(),
            Some("application/vnd.docker.container.image.v1+json")
        );
    }

    #[test]
    fn indexes_name_manifests() {
        let m = json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest(4), "size": 500,
                           "platform": {"architecture": "amd64", "os": "linux"}}]
        });
        let p = parse(m.to_string().as_bytes(), Some(OCI_INDEX)).unwrap();
        assert_eq!(p.media_type, OCI_INDEX);
        assert_eq!(p.manifests[0].as_str(), digest(4));
        assert!(p.blobs.is_empty());
    }

    #[test]
    fn bad_manifests_are_refused() {
        for bad in [
            "not json".to_string(),
            json!({"schemaVersion": 1, "name": "x"}).to_string(),
            json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).to_string(),
            json!({"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:12", "size": 1},
                   "layers": []}).to_string(),
        ] {
            let e = parse(bad.as_bytes(), None).unwrap_err();
            assert_eq!(e.code, "InvalidParameterException", "{bad}");
        }
    }
}
