//! Processes: fork, exec, wait, identities and capabilities.

use rustix::io::Errno;
use rustix::process::{Pid, WaitOptions, WaitStatus};
use rustix::thread::{CapabilitySet, CapabilitySets};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;

/// Which side of a [`fork`] this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    Child,
    Parent(i32),
}

/// `fork`, in a process that has a single thread only (anything else is
/// refused with EAGAIN). The child of a multithreaded process may run only
/// async-signal-safe code, which ordinary Rust is not; with one thread the
/// child is an ordinary process.
pub fn fork() -> io::Result<Fork> {
    if !single_threaded() {
        return Err(Errno::AGAIN.into());
    }
    // SAFETY: the process has one thread (checked above), so no lock can be
    // held by a thread that does not exist in the child.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => Ok(Fork::Child),
        nix::unistd::ForkResult::Parent { child } => Ok(Fork::Parent(child.as_raw())),
    }
}

fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1)
}

fn pid(raw: i32) -> io::Result<Pid> {
    Pid::from_raw(raw).ok_or_else(|| Errno::INVAL.into())
}

/// The highest capability number this kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// Drops every capability except those in `keep` from the bounding set
/// (which caps what the process and its children can ever gain, even by
/// exec of a file with capabilities) and clears the ambient set. Needs
/// CAP_SETPCAP, so it comes before a uid change; [`set_capabilities`] then
/// trims the process's own sets.
pub fn drop_bounding_and_ambient(keep: CapabilitySet, last_cap: u32) -> io::Result<()> {
    for cap in 0..=last_cap.min(63) {
        let one = CapabilitySet::from_bits_retain(1 << cap);
        if keep.contains(one) {
            continue;
        }
        match rustix::thread::remove_capability_from_bounding_set(one) {
            // A capability this kernel does not know: nothing to drop.
            Ok(()) | Err(Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(rustix::thread::clear_ambient_capability_set()?)
}

/// Sets the calling thread's effective, permitted and inheritable sets.
pub fn set_capabilities(
    effective: CapabilitySet,
    permitted: CapabilitySet,
    inheritable: CapabilitySet,
) -> io::Result<()> {
    let sets = CapabilitySets {
        effective,
        permitted,
        inheritable,
    };
    Ok(rustix::thread::set_capabilities(None, sets)?)
}

/// `PR_SET_NO_NEW_PRIVS`: exec can never grant privileges again.
pub fn set_no_new_privs() -> io::Result<()> {
    Ok(rustix::thread::set_no_new_privs(true)?)
}

/// Becomes `uid`/`gid` with no supplementary groups, for real, effective and
/// saved ids alike. The kernel calls change the calling thread only, so this
/// is for single-threaded processes (a forked child before exec).
pub fn become_user(uid: u32, gid: u32) -> io::Result<()> {
    use rustix::process::{Gid, Uid};
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    rustix::thread::set_thread_groups(&[])?;
    rustix::thread::set_thread_res_gid(gid, gid, gid)?;
    rustix::thread::set_thread_res_uid(uid, uid, uid)?;
    Ok(())
}

/// Gives up root for good: `no_new_privs`, every capability out of the
/// bounding and ambient sets (which needs CAP_SETPCAP, so before the uid
/// changes), then `uid`/`gid` with no supplementary groups, then empty
/// effective, permitted and inheritable sets. For single-threaded
/// processes, as [`become_user`].
pub fn drop_to_user(uid: u32, gid: u32, last_cap: u32) -> io::Result<()> {
    let none = CapabilitySet::empty();
    set_no_new_privs()?;
    drop_bounding_and_ambient(none, last_cap)?;
    become_user(uid, gid)?;
    set_capabilities(none, none, none)
}

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

impl Ended {
    fn from_wait_status(status: WaitStatus) -> Option<Ended> {
        if let Some(code) = status.exit_status() {
            Some(Ended::Exited(code))
        } else {
            status.terminating_signal().map(Ended::Signaled)
        }
    }
}

/// Reaps `pid` (or any child with `None`) without blocking; `None` while
/// nothing has ended.
pub fn try_wait(pid: Option<i32>) -> io::Result<Option<(i32, Ended)>> {
    let pid = pid.map(self::pid).transpose()?;
    loop {
        // rustix's `waitpid(None)` is waitpid(0), children of this process
        // group only; a child that started its own session is not one.
        let reaped = match pid {
            Some(pid) => rustix::process::waitpid(Some(pid), WaitOptions::NOHANG),
            None => rustix::process::wait(WaitOptions::NOHANG),
        };
        match reaped {
            Ok(None) => return Ok(None),
            Ok(Some((who, status))) => {
                if let Some(ended) = Ended::from_wait_status(status) {
                    return Ok(Some((who.as_raw_nonzero().get(), ended)));
                }
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Blocks until `pid` ends.
pub fn wait(pid: i32) -> io::Result<Ended> {
    let pid = self::pid(pid)?;
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => {
                if let Some(ended) = Ended::from_wait_status(status) {
                    return Ok(ended);
                }
            }
            Ok(None) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Leaves the process at once, without running destructors, `atexit`
/// handlers or flushing buffers: the only right exit from a forked child.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process and touches no Rust state. (Neither
    // rustix, outside its libc-free runtime layer, nor nix wraps it.)
    unsafe { libc::_exit(code) }
}

pub fn getpid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// The parent's pid; 0 when the parent is outside this PID namespace.
pub fn getppid() -> i32 {
    rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get())
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Starts a new session (so no terminal signal reaches the process) and
/// sets the file-mode mask a fresh process expects.
pub fn new_session(umask: u32) {
    let _ = rustix::process::setsid();
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(umask));
}

/// Makes `command` start as a daemon: between fork and exec the child forks
/// again and the middle process exits (so `spawn` then `wait` return at
/// once and the grandchild is nobody's child but init's), the grandchild
/// starts a new session, and `keep` stays open across exec.
pub fn daemonize_before_exec(command: &mut std::process::Command, keep: RawFd) {
    // SAFETY: the closure runs in the forked child, which has one thread,
    // and calls only async-signal-safe functions (fork, _exit, setsid,
    // fcntl). `keep` is open in the child: `spawn` closes only descriptors
    // marked close-on-exec, at exec.
    unsafe {
        command.pre_exec(move || {
            match nix::unistd::fork()? {
                nix::unistd::ForkResult::Parent { .. } => libc::_exit(0),
                nix::unistd::ForkResult::Child => {}
            }
            rustix::process::setsid()?;
            rustix::io::fcntl_setfd(BorrowedFd::borrow_raw(keep), rustix::io::FdFlags::empty())?;
            Ok(())
        });
    }
}

/// `execve`; returns only on failure, with the error.
pub fn execve(path: &CStr, argv: &[CString], env: &[CString]) -> io::Error {
    match nix::unistd::execve(path, argv, env) {
        Err(errno) => errno.into(),
        Ok(never) => match never {},
    }
}
