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
    sys::mount(Some("overlay"), &merged, Some("overlay"), 0, Some(&options))
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
