//! Linux namespaces: leaving, entering and creating them, for a process or
//! for one thread.

use crate::check;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;

pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare has no memory effects.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

pub fn setns(fd: &impl AsRawFd, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: setns on a valid descriptor has no memory effects.
    check(unsafe { libc::setns(fd.as_raw_fd(), nstype) }).map(drop)
}

/// Moves the calling thread into the network namespace `ns` (a descriptor of
/// `/run/netns/<name>` or `/proc/<pid>/ns/net`). Sockets this thread opens
/// afterwards live there.
pub fn enter_net_namespace(ns: impl AsFd) -> io::Result<()> {
    rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(io::Error::from)
}

/// Gives the calling thread a new, empty network namespace of its own.
pub fn unshare_net_namespace_of_thread() -> io::Result<()> {
    // SAFETY: `unshare_unsafe` is unsafe because of `CLONE_FILES`, which
    // would split the thread's descriptor table under Rust's feet; only
    // the network namespace is unshared here.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
        .map_err(io::Error::from)
}

/// Makes `command`'s child leave for new namespaces (`CLONE_NEW*` flags)
/// between fork and exec.
pub fn unshare_before_exec(command: &mut std::process::Command, flags: libc::c_int) {
    // SAFETY: unshare is async-signal-safe and the closure does nothing
    // else between fork and exec.
    unsafe {
        command.pre_exec(move || match libc::unshare(flags) {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        });
    }
}
