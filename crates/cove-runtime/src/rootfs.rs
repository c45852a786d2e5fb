//! The container's file system: a new root assembled from read-only pieces
//! of the host (script mode) or an unpacked image, the caller's bind mounts,
//! and fresh /proc, /dev, /sys and /tmp, then `pivot_root` into it and the
//! host's tree detached. Runs in the container's init, inside its private
//! mount namespace, so none of these mounts is visible on the host and all
//! of them vanish with the container.
//!
//! What the host's /etc would tell about the host is replaced: the user and
//! group databases hold only root, nobody and the workload's own identity
//! (an image's own entries are kept), /etc/hostname is the container's, and
//! /etc/netns (every network namespace of every Cove on the host) is empty.

use crate::{Bind, ContainerSpec, RootFs};
use anyhow::{bail, Context, Result};
use cove_sys::{self as sys, MountFlags};
use std::path::{Component, Path, PathBuf};

/// The host directories script mode shows, read-only. Debian's merged /usr
/// makes /bin, /sbin and /lib* symlinks into /usr; they are recreated as the
/// same symlinks.
const HOST_DIRS: &[&str] = &[
    "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc",
];

/// Device nodes a job may use, bound from the host's /dev.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// /proc entries that describe or change the host rather than the
/// container; read-only, as Docker does.
const PROC_READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];
/// /proc files that leak host memory or kernel state; hidden behind /dev/null.
const PROC_MASKED: &[&str] = &["kcore", "keys", "timer_list", "sched_debug"];

/// Assembles the container's root at `root` (an empty directory), for a
/// workload running as `identity`.
pub fn build(spec: &ContainerSpec, identity: u32, root: &Path) -> Result<()> {
    match &spec.root {
        RootFs::Host => {
            sys::mount_fs(
                "tmpfs",
                "tmpfs",
                root,
                MountFlags::NOSUID | MountFlags::NODEV,
                Some("mode=0755,size=16m"),
            )
            .context("mounting the root tmpfs")?;
            for name in HOST_DIRS {
                let host = Path::new("/").join(name);
                let Ok(meta) = std::fs::symlink_metadata(&host) else {
                    continue;
                };
                let inside = root.join(name);
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&host)?;
                    std::os::unix::fs::symlink(&target, &inside)
                        .with_context(|| format!("linking /{name}"))?;
                } else if meta.is_dir() {
                    std::fs::create_dir(&inside)?;
                    sys::bind(
                        &host,
                        &inside,
                        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
                    )
                    .with_context(|| format!("binding /{name} read-only"))?;
                }
            }
        }
        RootFs::Image(image) => {
            if !image.is_dir() {
                bail!("the image root {} is not a directory", image.display());
            }
            sys::bind(image, root, MountFlags::NOSUID | MountFlags::NODEV)
                .with_context(|| format!("binding the image root {}", image.display()))?;
        }
    }

    let proc = mount_point_dir(root, Path::new("/proc"))?;
    sys::mount_fs(
        "proc",
        "proc",
        &proc,
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .context("mounting /proc")?;
    for name in PROC_READ_ONLY {
        let p = proc.join(name);
        if p.exists() {
            sys::bind(
                &p,
                &p,
                MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            )
            .with_context(|| format!("making /proc/{name} read-only"))?;
        }
    }
    for name in PROC_MASKED {
        let p = proc.join(name);
        if p.exists() {
            sys::bind(Path::new("/dev/null"), &p, MountFlags::empty())
                .with_context(|| format!("masking /proc/{name}"))?;
        }
    }

    build_dev(root, &spec.devices)?;

    let sysfs = mount_point_dir(root, Path::new("/sys"))?;
    // Mounted from inside the container's network namespace, sysfs lists
    // that namespace's interfaces only.
    sys::mount_fs(
        "sysfs",
        "sysfs",
        &sysfs,
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .context("mounting /sys read-only")?;

    let tmp = mount_point_dir(root, Path::new("/tmp"))?;
    sys::mount_fs(
        "tmpfs",
        "tmpfs",
        &tmp,
        MountFlags::NOSUID | MountFlags::NODEV,
        Some("mode=1777"),
    )
    .context("mounting /tmp")?;

    // Parents before children, so a bind inside another bind lands on top.
    let mut binds: Vec<&crate::Bind> = spec.binds.iter().collect();
    binds.sort_by_key(|b| b.target.components().count());
    for b in binds {
        let meta = std::fs::metadata(&b.source)
            .with_context(|| format!("bind source {}", b.source.display()))?;
        let at = if meta.is_dir() {
            mount_point_dir(root, &b.target)?
        } else {
            mount_point_file(root, &b.target)?
        };
        let mut flags = MountFlags::NOSUID | MountFlags::NODEV;
        if b.read_only {
            flags |= MountFlags::RDONLY;
        }
        sys::bind(&b.source, &at, flags)
            .with_context(|| format!("binding {} at {}", b.source.display(), b.target.display()))?;
    }
    replace_host_identity(spec, identity, root)
}

/// The first lines of the generated user and group databases.
const BASE_PASSWD: &str = "root:x:0:0:root:/root:/usr/sbin/nologin\n\
    nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const BASE_GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// The largest /etc/passwd or /etc/group of an image that is kept.
const MAX_DATABASE: u64 = 1 << 20;

fn replace_host_identity(spec: &ContainerSpec, identity: u32, root: &Path) -> Result<()> {
    let image = matches!(spec.root, RootFs::Image(_));
    let home = spec
        .env
        .iter()
        .find(|(k, _)| k == "HOME")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/tmp");
    let user = crate::WORKLOAD_USER;
    let passwd_line = format!("{user}:x:{identity}:{identity}::{home}:/bin/sh\n");
    let group_line = format!("{user}:x:{identity}:\n");
    for (name, base, line) in [
        ("passwd", BASE_PASSWD, passwd_line),
        ("group", BASE_GROUP, group_line),
    ] {
        let target = Path::new("/etc").join(name);
        // An image's own users stay (its programs may run as them); the
        // host's are nobody's business inside.
        let mut content = if image {
            let at = mount_point_file(root, &target)?;
            read_database(&at)
        } else {
            base.to_string()
        };
        content = without_entry(&content, user, identity);
        if !content.is_empty() && !content.ends_with('\n') {
            content.push('\n');
        }
        content.push_str(&line);
        bind_generated(spec, root, &target, name, &content, image)?;
    }
    bind_generated(
        spec,
        root,
        Path::new("/etc/hostname"),
        "hostname",
        &format!("{}\n", spec.hostname),
        image,
    )?;
    if !image && root.join("etc/netns").is_dir() {
        sys::mount_fs(
            "tmpfs",
            "tmpfs",
            &root.join("etc/netns"),
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            Some("size=4k,mode=0755"),
        )
        .context("hiding /etc/netns")?;
    }
    Ok(())
}

/// The image's database at `at` (already resolved inside the root), or
/// nothing when it is not a plain, reasonably small file.
fn read_database(at: &Path) -> String {
    match std::fs::symlink_metadata(at) {
        Ok(m) if m.is_file() && m.len() <= MAX_DATABASE => {
            std::fs::read_to_string(at).unwrap_or_default()
        }
        _ => String::new(),
    }
}

/// `content` without entries named `user` or numbered `id`.
fn without_entry(content: &str, user: &str, id: u32) -> String {
    let id = id.to_string();
    content
        .lines()
        .filter(|l| {
            let mut fields = l.split(':');
            fields.next() != Some(user) && fields.nth(1) != Some(id.as_str())
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Writes `content` to the state directory and binds it read-only at
/// `target`; a target missing from the host's read-only /etc is skipped.
fn bind_generated(
    spec: &ContainerSpec,
    root: &Path,
    target: &Path,
    file: &str,
    content: &str,
    create: bool,
) -> Result<()> {
    let inside = root.join(target.strip_prefix("/").unwrap_or(target));
    if !create && !inside.is_file() {
        return Ok(());
    }
    let source = spec.state_dir.join(file);
    std::fs::write(&source, content).with_context(|| format!("writing {}", source.display()))?;
    set_world_readable(&source)?;
    let at = mount_point_file(root, target)?;
    sys::bind(
        &source,
        &at,
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
    )
    .with_context(|| format!("binding {}", target.display()))?;
    Ok(())
}

fn set_world_readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

fn build_dev(root: &Path, devices: &[Bind]) -> Result<()> {
    let dev = mount_point_dir(root, Path::new("/dev"))?;
    sys::mount_fs(
        "tmpfs",
        "tmpfs",
        &dev,
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some("mode=0755,size=64k"),
    )
    .context("mounting /dev")?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let at = dev.join(name);
        std::fs::File::create(&at)?;
        sys::bind(&host, &at, MountFlags::empty())
            .with_context(|| format!("binding /dev/{name}"))?;
    }
    // The spec's devices (checked by `validate` to be device nodes under
    // /dev on both sides), beside the standard ones.
    for d in devices {
        let inside = d.target.strip_prefix("/dev").unwrap_or(&d.target);
        let at = dev.join(inside);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::File::create(&at)?;
        sys::bind(&d.source, &at, MountFlags::empty())
            .with_context(|| format!("binding device {}", d.source.display()))?;
    }
    let shm = dev.join("shm");
    std::fs::create_dir(&shm)?;
    sys::mount_fs(
        "tmpfs",
        "shm",
        &shm,
        MountFlags::NOSUID | MountFlags::NODEV,
        Some("mode=1777"),
    )
    .context("mounting /dev/shm")?;
    let pts = dev.join("pts");
    std::fs::create_dir(&pts)?;
    // A private devpts instance: the job's terminals, none of the host's.
    // Optional (older kernels without newinstance semantics).
    if sys::mount_fs(
        "devpts",
        "devpts",
        &pts,
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .is_ok()
    {
        std::os::unix::fs::symlink("pts/ptmx", dev.join("ptmx"))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name))?;
    }
    Ok(())
}

/// Makes `root` the root of this mount namespace and detaches the old one,
/// so nothing of the host's tree stays reachable.
pub fn pivot(root: &Path, read_only: bool) -> Result<()> {
    std::env::set_current_dir(root).context("entering the new root")?;
    let dot = Path::new(".");
    // With new and old root the same directory, the old root ends up
    // stacked on the new one, and a lazy unmount of "." removes it.
    sys::pivot_root(dot, dot).context("pivot_root")?;
    sys::umount_detach(Path::new(".")).context("detaching the host's root")?;
    std::env::set_current_dir("/")?;
    if read_only {
        sys::remount_bind(
            Path::new("/"),
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
        )
        .context("making the root read-only")?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

fn mount_point_dir(root: &Path, target: &Path) -> Result<PathBuf> {
    resolve_in_root(root, target, Kind::Dir)
}

fn mount_point_file(root: &Path, target: &Path) -> Result<PathBuf> {
    resolve_in_root(root, target, Kind::File)
}

/// Resolves `target` inside `root` the way the container will see it:
/// symlinks are followed, but an absolute link restarts at `root` and `..`
/// stops there, so an image cannot point a mount point (say /opt/ml) at a
/// host directory and have the bind land on the host. This is also what
/// lets a bind over a symlink work, such as /etc/resolv.conf pointing into
/// /run on systemd-resolved hosts. Missing directories are created, and the
/// last component as `kind`; no process of the container runs yet, so
/// nothing can swap a component in between.
fn resolve_in_root(root: &Path, target: &Path, kind: Kind) -> Result<PathBuf> {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    if !target.is_absolute() {
        bail!("{} is not an absolute path", target.display());
    }
    let parts = |p: &Path| -> VecDeque<OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect()
    };
    let mut queue = parts(target);
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0;
    let here = |done: &[OsString]| done.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    while let Some(name) = queue.pop_front() {
        if name == ".." {
            done.pop();
            continue;
        }
        let path = here(&done).join(&name);
        let last = queue.is_empty();
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    bail!("mount point {}: too many symlinks", target.display());
                }
                let link = std::fs::read_link(&path)?;
                if link.is_absolute() {
                    done.clear();
                }
                let mut rest = parts(&link);
                rest.extend(queue);
                queue = rest;
            }
            Ok(m) if !last && !m.is_dir() => bail!(
                "mount point {}: {} is not a directory",
                target.display(),
                path.display()
            ),
            Ok(_) => done.push(name),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if last && kind == Kind::File {
                    std::fs::File::create(&path).map(drop)
                } else {
                    std::fs::create_dir(&path)
                }
                .with_context(|| format!("creating the mount point {}", target.display()))?;
                done.push(name);
            }
            Err(e) => return Err(e).with_context(|| format!("mount point {}", target.display())),
        }
    }
    let path = here(&done);
    let is_dir = path.is_dir();
    if done.is_empty() && kind == Kind::File {
        bail!("cannot bind a file over /");
    }
    if is_dir != (kind == Kind::Dir) {
        bail!(
            "mount point {} is a {} but the source is a {}",
            target.display(),
            if is_dir { "directory" } else { "file" },
            if kind == Kind::Dir {
                "directory"
            } else {
                "file"
            },
        );
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_database_loses_only_entries_that_clash_with_the_workload() {
        let image = "root:x:0:0::/root:/bin/sh\nmodel-server:x:1000:1000::/home/m:/bin/sh\n\
                     sagemaker-user:x:1001:1001::/x:/bin/sh\nsquatter:x:1879048200:1::/:/bin/sh";
        assert_eq!(
            without_entry(image, "sagemaker-user", 1_879_048_200),
            "root:x:0:0::/root:/bin/sh\nmodel-server:x:1000:1000::/home/m:/bin/sh\n"
        );
        assert_eq!(without_entry("", "u", 1), "");
    }
}
