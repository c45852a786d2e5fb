//! Images without a container engine: a bring-your-own image arrives as an
//! OCI image layout (a directory with `index.json` and `blobs/`, as `skopeo
//! copy … oci:dir` or `docker save` + conversion produce) or as a root
//! filesystem tarball (`docker export`), and is unpacked once into a root
//! filesystem that containers then use read-only through an overlay.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Where an image URI's root filesystem lives under `images_dir`: a stable
/// name derived from the URI, so the supervisor finds it without a registry.
pub fn rootfs_dir(images_dir: &Path, image_uri: &str) -> PathBuf {
    images_dir
        .join(format!("{:016x}", cove_model::ids::fnv64(image_uri)))
        .join("rootfs")
}

/// Unpacks `source` (an OCI layout directory or a tarball, gzipped or not)
/// into `dest`, replacing what was there only once the whole import worked.
pub fn import(source: &Path, dest: &Path) -> Result<()> {
    let parent = dest.parent().context("destination has no parent")?;
    std::fs::create_dir_all(parent)?;
    let staging = parent.join(".importing");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    if source.is_dir() {
        for layer in oci_layers(source)? {
            apply_layer(&layer, &staging)
                .with_context(|| format!("applying layer {}", layer.display()))?;
        }
    } else {
        apply_layer(source, &staging)?;
    }
    if dest.exists() {
        std::fs::remove_dir_all(dest)?;
    }
    std::fs::rename(&staging, dest)?;
    Ok(())
}

/// The layer blobs of the first manifest of an OCI layout, bottom first.
fn oci_layers(layout: &Path) -> Result<Vec<PathBuf>> {
    let blob = |digest: &str| -> Result<PathBuf> {
        let (algo, hex) = digest
            .split_once(':')
            .with_context(|| format!("bad digest {digest}"))?;
        if algo != "sha256" || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("unsupported digest {digest}");
        }
        Ok(layout.join("blobs").join(algo).join(hex))
    };
    let read_json = |p: &Path| -> Result<Value> {
        Ok(serde_json::from_reader(BufReader::new(
            File::open(p).with_context(|| format!("reading {}", p.display()))?,
        ))?)
    };
    let index = read_json(&layout.join("index.json"))?;
    let mut manifest = index["manifests"]
        .get(0)
        .and_then(|m| m["digest"].as_str())
        .context("index.json lists no manifest")
        .and_then(|d| read_json(&blob(d)?))?;
    // A multi-platform index: take the linux/amd64 (or first) image manifest.
    if manifest.get("manifests").is_some() {
        let chosen = manifest["manifests"]
            .as_array()
            .and_then(|ms| {
                ms.iter()
                    .find(|m| m["platform"]["architecture"] == "amd64")
                    .or(ms.first())
            })
            .and_then(|m| m["digest"].as_str())
            .context("image index lists no manifest")?
            .to_string();
        manifest = read_json(&blob(&chosen)?)?;
    }
    manifest["layers"]
        .as_array()
        .context("manifest has no layers")?
        .iter()
        .map(|l| blob(l["digest"].as_str().unwrap_or_default()))
        .collect()
}

/// Applies one layer tarball (gzipped or not) onto `root`, honouring OCI
/// whiteouts (`.wh.<name>` removes a name, `.wh..wh..opq` empties a
/// directory). `unpack_in` refuses entries that would land outside `root`.
fn apply_layer(tarball: &Path, root: &Path) -> Result<()> {
    let mut file = File::open(tarball)?;
    let mut magic = [0u8; 2];
    let gz = file.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
    let file = File::open(tarball)?;
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let dir = root.join(path.parent().unwrap_or(Path::new("")));
            if !dir.starts_with(root) {
                continue;
            }
            if hidden == ".wh..opq" {
                if let Ok(children) = std::fs::read_dir(&dir) {
                    for c in children.flatten() {
                        remove_any(&c.path());
                    }
                }
            } else {
                remove_any(&dir.join(hidden));
            }
            continue;
        }
        entry.unpack_in(root)?;
    }
    Ok(())
}

fn remove_any(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, body) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            b.append_data(&mut h, name, *body).unwrap();
        }
        let raw = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        gz.finish().unwrap()
    }

    fn sha256_hex(data: &[u8]) -> String {
        // The test only needs distinct, valid-looking digests.
        format!(
            "{:064x}",
            u128::from(cove_model::ids::fnv64(&String::from_utf8_lossy(data)))
        )
    }

    #[test]
    fn oci_layers_apply_in_order_with_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("oci");
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let base = layer(&[
            ("usr/local/bin/train", b"#!/bin/sh\necho v1\n"),
            ("etc/old.conf", b"x"),
            ("data/a", b"a"),
        ]);
        let top = layer(&[
            ("usr/local/bin/train", b"#!/bin/sh\necho v2\n"),
            ("etc/.wh.old.conf", b""),
            ("data/.wh..wh..opq", b""),
            ("data/b", b"b"),
        ]);
        let mut digests = vec![];
        for l in [&base, &top] {
            let d = sha256_hex(l);
            std::fs::write(blobs.join(&d), l).unwrap();
            digests.push(format!("sha256:{d}"));
        }
        let manifest = serde_json::json!({"layers": digests.iter().map(|d| serde_json::json!({"digest": d})).collect::<Vec<_>>()});
        let m = serde_json::to_vec(&manifest).unwrap();
        let md = sha256_hex(&m);
        std::fs::write(blobs.join(&md), &m).unwrap();
        std::fs::write(
            layout.join("index.json"),
            serde_json::to_vec(
                &serde_json::json!({"manifests": [{"digest": format!("sha256:{md}")}]}),
            )
            .unwrap(),
        )
        .unwrap();
        let dest = rootfs_dir(
            &dir.path().join("images"),
            "123.dkr.ecr.us-east-1.amazonaws.com/byo:1",
        );
        import(&layout, &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("usr/local/bin/train")).unwrap(),
            "#!/bin/sh\necho v2\n"
        );
        assert!(!dest.join("etc/old.conf").exists());
        assert!(!dest.join("data/a").exists());
        assert_eq!(std::fs::read_to_string(dest.join("data/b")).unwrap(), "b");
    }

    #[test]
    fn tarballs_import_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let tarball = dir.path().join("root.tar.gz");
        std::fs::write(&tarball, layer(&[("bin/tool", b"t")])).unwrap();
        let dest = dir.path().join("img/rootfs");
        import(&tarball, &dest).unwrap();
        assert!(dest.join("bin/tool").exists());
        assert!(!dir.path().join("img/.importing").exists());
    }
}
