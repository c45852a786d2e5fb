//! `cove image-import`: pushes an image that is on disk into the registry,
//! for machines without a registry client. It takes an OCI image layout
//! (`skopeo copy … oci:DIR`), a root filesystem tarball (`docker export`,
//! gzipped or not) or a root filesystem directory (`debootstrap`), and
//! tags it under the image URI given, making the repository if needed.

use crate::manifest::OCI_MANIFEST;
use crate::names::{ContentDigest, ImageUri, Reference};
use crate::registry::{hash_file, Repository};
use crate::Ecr;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Tags the image `digest` of `from`'s repository under `uri` too: its
/// blobs are mounted into `uri`'s repository (made if needed) and the
/// manifest is put there under `uri`'s tag.
pub fn tag_also(ecr: &Ecr, from: &str, digest: &ContentDigest, uri: &str) -> Result<()> {
    let aws = |e: cove_model::AwsError| anyhow::anyhow!("{}: {}", e.code, e.message);
    let source: ImageUri = from
        .parse()
        .map_err(|()| anyhow::anyhow!("bad image URI {from}"))?;
    let target: ImageUri = uri.parse().map_err(|()| {
        anyhow::anyhow!("'{uri}' is not an ECR image URI: <account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag]")
    })?;
    let from_repo = ecr
        .registry
        .repository(
            &source.registry.account,
            &source.registry.region,
            &source.repository,
        )
        .map_err(aws)?;
    let image = ecr
        .registry
        .image(&from_repo, &Reference::Digest(digest.clone()), false)
        .map_err(aws)?
        .with_context(|| format!("{from} has no image {digest}"))?;
    let to_repo = ecr
        .ensure_repository_in(
            &target.registry.account,
            &target.registry.region,
            &target.repository,
        )
        .map_err(aws)?;
    let parsed = crate::manifest::parse(&image.manifest, Some(&image.media_type)).map_err(aws)?;
    for blob in &parsed.blobs {
        ecr.registry
            .mount_blob(&to_repo, &from_repo, blob)
            .map_err(aws)?;
    }
    ecr.registry
        .put_manifest(
            &to_repo,
            &target.reference,
            Some(&image.media_type),
            &image.manifest,
        )
        .map_err(aws)?;
    Ok(())
}

/// Pushes `source` under `uri`; returns the manifest digest.
pub fn import(ecr: &Ecr, uri: &str, source: &Path) -> Result<ContentDigest> {
    let target: ImageUri = uri.parse().map_err(|()| {
        anyhow::anyhow!(
            "'{uri}' is not an ECR image URI: <account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag]"
        )
    })?;
    let Reference::Tag(tag) = &target.reference else {
        bail!("import under a tag, not a digest: the digest is the manifest's");
    };
    let meta =
        std::fs::metadata(source).with_context(|| format!("reading {}", source.display()))?;
    let repo = ecr
        .ensure_repository_in(
            &target.registry.account,
            &target.registry.region,
            &target.repository,
        )
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    let manifest = if meta.is_dir() && source.join("index.json").is_file() {
        layout_manifest(ecr, &repo, source)?
    } else if meta.is_dir() {
        let tarball = ecr
            .registry
            .blob_path(&ContentDigest::of(b""))
            .with_file_name(format!(".import-{}.tar", uuid::Uuid::new_v4()));
        let made = tar_directory(source, &tarball);
        let out = made.and_then(|()| rootfs_manifest(ecr, &repo, &tarball));
        let _ = std::fs::remove_file(&tarball);
        out?
    } else {
        rootfs_manifest(ecr, &repo, source)?
    };
    ecr.registry
        .put_manifest(&repo, &target.reference, None, &manifest)
        .map(|stored| stored.digest)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))
        .with_context(|| format!("tagging {tag}"))
}

/// Copies an OCI layout's image (its first manifest; for an index, the
/// linux/amd64 one) into the repository; returns the manifest's bytes.
fn layout_manifest(ecr: &Ecr, repo: &Repository, layout: &Path) -> Result<Vec<u8>> {
    let blob = |digest: &str| -> Result<PathBuf> {
        let d: ContentDigest = digest
            .parse()
            .map_err(|_| anyhow::anyhow!("{}: unsupported digest {digest}", layout.display()))?;
        Ok(layout.join("blobs/sha256").join(d.hex()))
    };
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let index: Value = serde_json::from_slice(&read(&layout.join("index.json"))?)
        .with_context(|| format!("{}/index.json is not JSON", layout.display()))?;
    let first = index["manifests"][0]["digest"]
        .as_str()
        .with_context(|| format!("{}/index.json lists no manifest", layout.display()))?;
    let mut bytes = read(&blob(first)?)?;
    let mut manifest: Value = serde_json::from_slice(&bytes)?;
    if let Some(children) = manifest["manifests"].as_array() {
        let chosen = children
            .iter()
            .find(|m| m["platform"]["architecture"] == "amd64")
            .or(children.first())
            .and_then(|m| m["digest"].as_str())
            .context("the image index lists no manifest")?
            .to_string();
        bytes = read(&blob(&chosen)?)?;
        manifest = serde_json::from_slice(&bytes)?;
    }
    let mut named = vec![manifest["config"]["digest"]
        .as_str()
        .context("the manifest has no config")?];
    if let Some(layers) = manifest["layers"].as_array() {
        named.extend(layers.iter().filter_map(|l| l["digest"].as_str()));
    }
    for d in named {
        let path = blob(d)?;
        ecr.registry
            .put_blob_file(repo, &path)
            .map_err(|e| anyhow::anyhow!("storing {}: {}", path.display(), e.message))?;
    }
    Ok(bytes)
}

/// Makes a one-layer image of a root filesystem tarball; returns the
/// manifest's bytes.
fn rootfs_manifest(ecr: &Ecr, repo: &Repository, tarball: &Path) -> Result<Vec<u8>> {
    let mut magic = [0u8; 2];
    let mut file =
        std::fs::File::open(tarball).with_context(|| format!("reading {}", tarball.display()))?;
    let gzipped = file.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
    let diff_id = if gzipped {
        let mut hasher = HashingWriter::default();
        std::io::copy(
            &mut flate2::read::GzDecoder::new(std::fs::File::open(tarball)?),
            &mut hasher,
        )
        .with_context(|| format!("{} is not a gzipped tarball", tarball.display()))?;
        hasher.digest()
    } else {
        hash_file(tarball)?.0
    };
    let layer = ecr
        .registry
        .put_blob_file(repo, tarball)
        .map_err(|e| anyhow::anyhow!("storing {}: {}", tarball.display(), e.message))?;
    let layer_size = std::fs::metadata(ecr.registry.blob_path(&layer))?.len();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.as_str()]},
    })
    .to_string();
    let config_digest = ecr
        .registry
        .put_blob(repo, config.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let media = if gzipped {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    };
    Ok(json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.as_str(), "size": config.len()},
        "layers": [{"mediaType": media, "digest": layer.as_str(), "size": layer_size}],
    })
    .to_string()
    .into_bytes())
}

/// Writes directory `dir` as an uncompressed tarball at `out`, keeping
/// owners, modes and symbolic links.
fn tar_directory(dir: &Path, out: &Path) -> Result<()> {
    let file = std::fs::File::create(out).with_context(|| format!("writing {}", out.display()))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    builder.follow_symlinks(false);
    builder
        .append_dir_all(".", dir)
        .with_context(|| format!("reading {}", dir.display()))?;
    builder
        .into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?;
    Ok(())
}

#[derive(Default)]
struct HashingWriter(sha2::Sha256);

impl HashingWriter {
    fn digest(self) -> ContentDigest {
        use sha2::Digest as _;
        ContentDigest::from_sha256(self.0.finalize().into())
    }
}

impl std::io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, body) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            b.append_data(&mut h, name, *body).unwrap();
        }
        b.into_inner().unwrap()
    }

    const URI: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byo:1";

    #[test]
    fn tarballs_directories_and_layouts_become_images() {
        let dir = tempfile::tempdir().unwrap();
        let ecr = Ecr::open(&dir.path().join("ecr"), None, "123456789012", "us-east-1").unwrap();

        let tarball = dir.path().join("root.tar");
        std::fs::write(&tarball, layer(&[("bin/tool", b"t")])).unwrap();
        let d1 = import(&ecr, URI, &tarball).unwrap();
        let image = ecr.resolve(URI).unwrap();
        assert_eq!(image.digest, d1);
        assert_eq!(
            std::fs::read(&image.layers[0]).unwrap(),
            std::fs::read(&tarball).unwrap()
        );
        assert!(tarball.exists(), "the source is copied, not moved");

        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("usr/bin")).unwrap();
        std::fs::write(rootfs.join("usr/bin/serve"), "#!/bin/sh\n").unwrap();
        let uri2 = URI.replace(":1", ":2");
        import(&ecr, &uri2, &rootfs).unwrap();
        let image = ecr.resolve(&uri2).unwrap();
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(std::fs::File::open(&image.layers[0]).unwrap());
        for e in archive.entries().unwrap() {
            names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
        }
        assert!(
            names.iter().any(|n| n.ends_with("usr/bin/serve")),
            "{names:?}"
        );

        // An OCI layout whose index points at a manifest.
        let layout = dir.path().join("oci");
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let l = layer(&[("app", b"x")]);
        let ld = ContentDigest::of(&l);
        std::fs::write(blobs.join(ld.hex()), &l).unwrap();
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let cd = ContentDigest::of(config);
        std::fs::write(blobs.join(cd.hex()), config).unwrap();
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.as_str(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld.as_str(), "size": l.len()}]})
        .to_string();
        let md = ContentDigest::of(manifest.as_bytes());
        std::fs::write(blobs.join(md.hex()), &manifest).unwrap();
        std::fs::write(
            layout.join("index.json"),
            json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": md.as_str(), "size": manifest.len()}]}).to_string(),
        )
        .unwrap();
        let uri3 = URI.replace(":1", ":3");
        assert_eq!(import(&ecr, &uri3, &layout).unwrap(), md);

        // The same image under another repository's tag, its layers mounted there.
        let other = "123456789012.dkr.ecr.us-east-1.amazonaws.com/other/name:v1";
        tag_also(&ecr, &uri3, &md, other).unwrap();
        assert_eq!(ecr.resolve(other).unwrap().digest, md);

        let err = import(&ecr, URI, &dir.path().join("nowhere")).unwrap_err();
        assert!(format!("{err:#}").contains("nowhere"), "{err:#}");
        std::fs::remove_file(blobs.join(ld.hex())).unwrap();
        let err = import(&ecr, &uri3, &layout).unwrap_err();
        assert!(format!("{err:#}").contains(ld.hex()), "{err:#}");
    }
}
