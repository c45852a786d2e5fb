//! Mounts: file systems, binds, propagation, pivot_root and lazy unmounts.

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use std::io;
use std::path::Path;

/// Mounts a file system of type `fstype` from `source` at `target`.
pub fn mount_fs(
    fstype: &str,
    source: &str,
    target: &Path,
    flags: MountFlags,
    data: Option<&str>,
) -> io::Result<()> {
    let data = data.map(crate::cstr).transpose()?;
    Ok(rustix::mount::mount(
        source,
        target,
        fstype,
        flags,
        data.as_deref(),
    )?)
}

/// A bind mount of `source` at `target`, then (because the kernel ignores
/// those flags on the first call) a remount that applies `flags` to it.
pub fn bind(source: &Path, target: &Path, flags: MountFlags) -> io::Result<()> {
    rustix::mount::mount_bind(source, target)?;
    if !flags.is_empty() {
        remount_bind(target, flags)?;
    }
    Ok(())
}

/// Changes the flags of the bind mount at `target` (read-only, nosuid...).
pub fn remount_bind(target: &Path, flags: MountFlags) -> io::Result<()> {
    Ok(rustix::mount::mount_remount(
        target,
        MountFlags::BIND | flags,
        "",
    )?)
}

/// Sets how mounts under `target` propagate (private, slave, recursively).
pub fn set_propagation(target: &Path, how: MountPropagationFlags) -> io::Result<()> {
    Ok(rustix::mount::mount_change(target, how)?)
}

pub fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    Ok(rustix::process::pivot_root(new_root, put_old)?)
}

pub fn umount_detach(target: &Path) -> io::Result<()> {
    Ok(rustix::mount::unmount(target, UnmountFlags::DETACH)?)
}

/// `statfs`'s type of a FUSE file system.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Whether `path` is on a FUSE file system (an NFS mount of Cove's, say).
pub fn is_on_fuse(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type == FUSE_SUPER_MAGIC)
}

/// Whether `path` is a mount point (its device differs from its parent's).
pub fn is_mountpoint(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(me), Some(Ok(parent))) => me.dev() != parent.dev(),
        _ => false,
    }
}
