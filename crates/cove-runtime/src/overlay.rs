//! Writable views of imported images: one overlay mount per host of a job,
//! made on the host before the container starts, whose lower layer is the
//! shared, untouched image, so hosts never see each other's writes and the
//! image is never changed.

use anyhow::{Context, Result};
use cove_sys as sys;
use std::path::{Path, PathBuf};

/// Mounts (once; a restart finds it mounted) an overlay of `image` under
/// `host_dir` and returns its merged root, `host_dir/rootfs`.
pub fn overlay(image: &Path, host_dir: &Path) -> Result<PathBuf> {
    let (upper, work, merged) = (
        host_dir.join("upper"),
        host_dir.join("work"),
        host_dir.join("rootfs"),
    );
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    if sys::is_mountpoint(&merged) {
        return Ok(merged);
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        image.display(),
        upper.display(),
        work.display()
    );
    sys::mount_fs(
        "overlay",
        "overlay",
        &merged,
        sys::MountFlags::empty(),
        Some(&options),
    )
    .context("mounting the image overlay")?;
    Ok(merged)
}

/// Detaches a host's overlay, if it is mounted; a lazy detach cannot fail
/// half-way, and an unmounted path is left alone.
pub fn unmount(root: &Path) {
    if sys::is_mountpoint(root) {
        let _ = sys::umount_detach(root);
    }
}

/// The mount points listed in `mountinfo` (the text of `/proc/self/mountinfo`)
/// that lie under `dir`, deepest first.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    mounts_of_type_under(mountinfo, dir, None)
}

/// [`mounts_under`], only those whose file-system type is `fstype` when
/// one is given (`fuse.cove-nfs` for EFS mounts).
pub fn mounts_of_type_under(mountinfo: &str, dir: &Path, fstype: Option<&str>) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter(|line| {
            fstype.is_none_or(|t| {
                line.split_once(" - ")
                    .and_then(|(_, rest)| rest.split(' ').next())
                    == Some(t)
            })
        })
        .filter_map(|line| line.split(' ').nth(4))
        .map(crate::cgroup::unescape)
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Detaches every mount under `dir` (the overlays of jobs whose cleanup a
/// crash interrupted); returns how many.
pub fn unmount_all_under(dir: &Path) -> usize {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return 0;
    };
    let mounts = mounts_under(&info, dir);
    for m in &mounts {
        let _ = sys::umount_detach(m);
    }
    mounts.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_under_a_directory_deepest_first() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/vda rw
90 22 0:50 / /data/jobs/t/j/algo-1/rootfs rw - overlay overlay rw
91 22 0:51 / /data/jobs/t/j/my\\040host/rootfs rw - overlay overlay rw
92 90 0:52 / /data/jobs/t/j/algo-1/rootfs/proc rw - proc proc rw
93 22 0:53 / /database rw - tmpfs tmpfs rw";
        assert_eq!(
            mounts_of_type_under(info, Path::new("/data"), Some("proc")),
            vec![PathBuf::from("/data/jobs/t/j/algo-1/rootfs/proc")]
        );
        assert_eq!(
            mounts_under(info, Path::new("/data")),
            vec![
                PathBuf::from("/data/jobs/t/j/algo-1/rootfs/proc"),
                PathBuf::from("/data/jobs/t/j/algo-1/rootfs"),
                PathBuf::from("/data/jobs/t/j/my host/rootfs"),
            ]
        );
    }
}
