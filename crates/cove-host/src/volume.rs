//! A job host's ML storage volume: `VolumeSizeInGB` of file system on
//! which the host's `ml/` directory (the container's `/opt/ml`: input data,
//! model, output, checkpoints) lives, so a job that fills it gets "No space
//! left on device" instead of filling the host's disk.
//!
//! The volume is an ext4 file system in a sparse file beside `ml/`
//! (`volume.img`), loop-mounted on `ml/` by util-linux's `mount -o loop`,
//! which frees the loop device when it is unmounted. Only what the job
//! writes takes space on the host's disk. Attaching is idempotent and
//! restart-safe: a mounted volume is kept, an existing image (a restart
//! after the host's mounts were lost) is mounted again, and only a missing
//! one is made. Detaching unmounts and deletes the image.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const IMAGE: &str = "volume.img";
const GIB: u64 = 1 << 30;

fn image(host_dir: &Path) -> PathBuf {
    host_dir.join(IMAGE)
}

fn mount_point(host_dir: &Path) -> PathBuf {
    host_dir.join("ml")
}

/// Whether something is mounted on `dir` (its device differs from its
/// parent's).
fn is_mount_point(dir: &Path) -> bool {
    let (Ok(here), Some(Ok(parent))) =
        (std::fs::metadata(dir), dir.parent().map(std::fs::metadata))
    else {
        return false;
    };
    here.dev() != parent.dev()
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Makes `host_dir/ml` a file system of `size_gb` GiB (see the module
/// comment). Errors leave nothing mounted; the caller decides whether a job
/// runs without a volume.
pub fn attach(host_dir: &Path, size_gb: u64) -> Result<()> {
    let ml = mount_point(host_dir);
    std::fs::create_dir_all(&ml).with_context(|| format!("creating {}", ml.display()))?;
    if is_mount_point(&ml) {
        return Ok(());
    }
    let img = image(host_dir);
    if !img.exists() {
        let size = size_gb
            .checked_mul(GIB)
            .context("the volume size is too large")?;
        let partial = host_dir.join(format!("{IMAGE}.partial"));
        {
            let file = std::fs::File::create(&partial)
                .with_context(|| format!("creating {}", partial.display()))?;
            file.set_len(size)
                .with_context(|| format!("sizing {} to {size_gb} GiB", partial.display()))?;
        }
        // No journal (a volume does not outlive its host's crash), nothing
        // reserved for root (the job is not root), lazy inode tables.
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-O", "^has_journal"])
            .args(["-E", "lazy_itable_init=1,root_owner=0:0"])
            .arg(&partial))?;
        std::fs::rename(&partial, &img)?;
    }
    run(Command::new("mount")
        .args(["-o", "loop,nosuid,nodev"])
        .arg(&img)
        .arg(&ml))?;
    // A fresh file system's lost+found would show in /opt/ml.
    let _ = std::fs::remove_dir(ml.join("lost+found"));
    Ok(())
}

/// [`attach`], or, on a host that cannot have a volume (no loop devices,
/// no mkfs.ext4), a warning in Cove's log and in the workload's own
/// (`host_dir/container.log`): it then runs on the data directory's disk.
pub fn attach_or_say(host_dir: &Path, size_gb: u64) {
    if let Err(e) = attach(host_dir, size_gb) {
        tracing::warn!(dir = %host_dir.display(), error = %format!("{e:#}"), "no ML storage volume; the workload's files go to the data directory's disk");
        let _ = crate::logs::note(
            &host_dir.join("container.log"),
            &format!("cove: no {size_gb} GiB ML storage volume on this host ({e:#}); /opt/ml is not size-limited"),
        );
    }
}

/// Whether `host_dir/ml` is a mounted volume.
pub fn attached(host_dir: &Path) -> bool {
    is_mount_point(&mount_point(host_dir))
}

/// Unmounts the volume (lazily if something still holds it; the loop
/// device goes with the last user) and deletes its image. Nothing to do
/// for a host without a volume.
pub fn detach(host_dir: &Path) -> Result<()> {
    let ml = mount_point(host_dir);
    while is_mount_point(&ml) {
        if run(Command::new("umount").arg(&ml)).is_err() {
            run(Command::new("umount").arg("--lazy").arg(&ml))?;
        }
    }
    for name in [IMAGE.to_string(), format!("{IMAGE}.partial")] {
        match std::fs::remove_file(host_dir.join(&name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {name}"))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
    }

    #[test]
    fn a_volume_holds_its_size_and_no_more_and_leaves_nothing_behind() {
        if !is_root() || Command::new("mkfs.ext4").arg("-V").output().is_err() {
            eprintln!("skipping: volumes need root and mkfs.ext4");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path();
        attach(host, 1).unwrap();
        assert!(attached(host));
        // Idempotent: a second attach keeps the mounted volume and its data.
        std::fs::write(host.join("ml/kept"), b"x").unwrap();
        attach(host, 1).unwrap();
        assert!(host.join("ml/kept").exists());
        assert!(!host.join("ml/lost+found").exists());
        // Writing past the size fails with ENOSPC, not on the host's disk.
        let mut f = std::fs::File::create(host.join("ml/big")).unwrap();
        let chunk = vec![7u8; 1 << 20];
        let err = (0..2048)
            .find_map(|_| std::io::Write::write_all(&mut f, &chunk).err())
            .expect("1 GiB volume takes 2 GiB");
        assert_eq!(err.raw_os_error(), Some(28), "{err}");
        drop(f);
        detach(host).unwrap();
        assert!(!attached(host));
        assert!(!image(host).exists());
        let loops = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!loops.contains(&host.display().to_string()), "{loops}");
        detach(host).unwrap();
    }
}
