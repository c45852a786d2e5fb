//! Linux namespaces: leaving, entering and creating them, for a process or
//! for one thread.

use rustix::io::Errno;
use rustix::thread::{LinkNameSpaceType, UnshareFlags};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;

/// `unshare` for namespaces. Splitting the descriptor table
/// (`CLONE_FILES`) is refused: Rust code on other threads could then hold
/// descriptors this thread no longer has, which is what makes the raw call
/// unsafe.
pub fn unshare(flags: UnshareFlags) -> io::Result<()> {
    if flags.contains(UnshareFlags::FILES) {
        return Err(Errno::INVAL.into());
    }
    // SAFETY: without CLONE_FILES the descriptor table stays shared, so
    // every descriptor Rust holds stays valid on every thread.
    Ok(unsafe { rustix::thread::unshare_unsafe(flags) }?)
}

/// Moves the calling thread into the network namespace `ns` (a descriptor of
/// `/run/netns/<name>` or `/proc/<pid>/ns/net`). Sockets this thread opens
/// afterwards live there. In a single-threaded process the whole process
/// moves.
pub fn enter_net_namespace(ns: impl AsFd) -> io::Result<()> {
    rustix::thread::move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(io::Error::from)
}

/// Gives the calling thread a new, empty network namespace of its own.
pub fn unshare_net_namespace_of_thread() -> io::Result<()> {
    unshare(UnshareFlags::NEWNET)
}

/// Makes `command`'s child leave for new namespaces between fork and exec.
pub fn unshare_before_exec(command: &mut std::process::Command, flags: UnshareFlags) {
    // SAFETY: the closure runs in the forked child, which has one thread,
    // and makes one system call (unshare, async-signal-safe); CLONE_FILES
    // is refused by `unshare` as everywhere.
    unsafe {
        command.pre_exec(move || unshare(flags));
    }
}
