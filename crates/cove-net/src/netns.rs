//! Running code inside a named network namespace. A thread enters the
//! namespace (`setns`) and runs the closure there; sockets it opens stay in
//! that namespace for life, which is how Cove listens on service addresses
//! inside the region network and how tests send real packets from an ENI.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Runs `f` on a fresh thread inside namespace `name` and returns its result.
pub fn run_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    run_in_path(&format!("{NETNS_DIR}/{name}"), f)
}

/// [`run_in`] for a namespace given by path (`/proc/<pid>/ns/net` names the
/// namespace of a process, such as a network-isolated container).
pub fn run_in_path<T: Send + 'static>(
    path: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let ns = File::open(path)?;
    std::thread::spawn(move || {
        // SAFETY: setns only changes this thread's network namespace; the
        // descriptor is valid for the duration of the call.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("thread inside the namespace panicked"))?
}
