//! Root filesystems from image layers: a job's image (from Cove's registry,
//! `cove-ecr`) is unpacked once per manifest digest into a directory that
//! containers then use read-only through an overlay.

use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Where the root filesystem of the image with manifest digest `hex` is
/// unpacked under `images_dir`.
pub fn unpacked_dir(images_dir: &Path, hex: &str) -> PathBuf {
    images_dir.join(hex).join("rootfs")
}

/// Where `cove image-import` of earlier versions unpacked an image URI's
/// root filesystem (read so that such images keep working).
pub fn legacy_rootfs_dir(images_dir: &Path, image_uri: &str) -> PathBuf {
    images_dir
        .join(format!("{:016x}", cove_model::ids::fnv64(image_uri)))
        .join("rootfs")
}

/// Applies `layers` (tarballs, gzipped or not, bottom first) into `dest`,
/// unless it is there already. The work happens in a staging directory of
/// its own that is renamed into place, so `dest` is whole or absent, and
/// two jobs unpacking the same image at once both end with it.
pub fn unpack(layers: &[PathBuf], dest: &Path) -> Result<()> {
    if dest.is_dir() {
        return Ok(());
    }
    let parent = dest.parent().context("destination has no parent")?;
    std::fs::create_dir_all(parent)?;
    let staging = parent.join(format!(".unpacking-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&staging)?;
    let applied = layers.iter().try_for_each(|layer| {
        apply_layer(layer, &staging).with_context(|| format!("applying layer {}", layer.display()))
    });
    if let Err(e) = applied {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if std::fs::rename(&staging, dest).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        if !dest.is_dir() {
            anyhow::bail!("could not move the unpacked image to {}", dest.display());
        }
    }
    Ok(())
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

    #[test]
    fn layers_apply_in_order_with_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
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
        let paths: Vec<PathBuf> = [base, top]
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let p = dir.path().join(format!("layer{i}"));
                std::fs::write(&p, l).unwrap();
                p
            })
            .collect();
        let dest = unpacked_dir(&dir.path().join("images"), "abc");
        unpack(&paths, &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("usr/local/bin/train")).unwrap(),
            "#!/bin/sh\necho v2\n"
        );
        assert!(!dest.join("etc/old.conf").exists());
        assert!(!dest.join("data/a").exists());
        assert_eq!(std::fs::read_to_string(dest.join("data/b")).unwrap(), "b");
        // Unpacked once: a second call leaves it as it is.
        std::fs::write(dest.join("data/b"), "kept").unwrap();
        unpack(&paths, &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("data/b")).unwrap(),
            "kept"
        );
    }

    #[test]
    fn a_bad_layer_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, layer(&[("bin/tool", b"t")])).unwrap();
        let dest = dir.path().join("img/rootfs");
        let missing = dir.path().join("missing");
        assert!(unpack(&[good.clone(), missing], &dest).is_err());
        assert!(!dest.exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("img")).unwrap().count(),
            0
        );
        unpack(&[good], &dest).unwrap();
        assert!(dest.join("bin/tool").exists());
    }
}
