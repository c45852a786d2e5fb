//! Running code inside a named network namespace. A thread enters the
//! namespace (`setns`) and runs the closure there; sockets it opens stay in
//! that namespace for life, which is how Cove listens on service addresses
//! inside the region network and how tests send real packets from an ENI.

use std::fs::File;
use std::io;

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
        cove_sys::enter_net_namespace(&ns)?;
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("thread inside the namespace panicked"))?
}
