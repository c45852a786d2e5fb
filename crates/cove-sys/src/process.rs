//! Processes: fork, exec, wait, signals to one process, identities and
//! capabilities.

use crate::{check, check_long};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;

pub fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: the runtime forks only from single-threaded processes (the
    // runner and the container's init), so the child may run ordinary code.
    check(unsafe { libc::fork() })
}

pub fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the options used here take integer arguments only.
    check(unsafe { libc::prctl(option, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) }).map(drop)
}

pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory effects.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
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
/// CAP_SETPCAP, so it comes before a uid change; [`capset`] then trims the
/// process's own sets.
pub fn drop_bounding_and_ambient(keep: u64, last_cap: u32) -> io::Result<()> {
    for cap in 0..=last_cap {
        if keep & (1 << cap) != 0 {
            continue;
        }
        match prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap)) {
            Ok(()) => {}
            // A capability this kernel does not know: nothing to drop.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    // SAFETY: PR_CAP_AMBIENT with integer arguments.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    check(rc).map(drop)
}

pub fn capset(effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let split = |v: u64| {
        let low = u32::try_from(v & 0xffff_ffff).unwrap_or(0);
        (low, u32::try_from(v >> 32).unwrap_or(0))
    };
    let (e0, e1) = split(effective);
    let (p0, p1) = split(permitted);
    let (i0, i1) = split(inheritable);
    let data = [
        Data {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        Data {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    // SAFETY: capset reads one header and two data structs, laid out as the
    // kernel's _LINUX_CAPABILITY_VERSION_3 ABI.
    check_long(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) }).map(drop)
}

/// Becomes `uid`/`gid` with no supplementary groups, for real, effective and
/// saved ids alike.
pub fn become_user(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: setgroups with an empty list; the id calls have no memory effects.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(gid, gid, gid))?;
        check(libc::setresuid(uid, uid, uid))?;
    }
    Ok(())
}

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

impl Ended {
    fn from_wait_status(status: libc::c_int) -> Option<Ended> {
        if libc::WIFEXITED(status) {
            Some(Ended::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(Ended::Signaled(libc::WTERMSIG(status)))
        } else {
            None
        }
    }
}

/// Reaps `pid` (or any child with -1) without blocking; `None` while nothing
/// has ended.
pub fn try_wait(pid: libc::pid_t) -> io::Result<Option<(libc::pid_t, Ended)>> {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if rc == 0 {
            return Ok(None);
        }
        if let Some(ended) = Ended::from_wait_status(status) {
            return Ok(Some((rc, ended)));
        }
    }
}

/// Blocks until `pid` ends.
pub fn wait(pid: libc::pid_t) -> io::Result<Ended> {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if let Some(ended) = Ended::from_wait_status(status) {
            return Ok(ended);
        }
    }
}

/// Leaves the process at once, without running destructors or flushing
/// buffers: the only right exit from a forked child.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

pub fn getpid() -> libc::pid_t {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// The parent's pid; 0 when the parent is outside this PID namespace.
pub fn getppid() -> libc::pid_t {
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

/// Signals `pid` if it is still the process `still_it` recognises: the
/// pidfd is opened first and the check runs after, so a pid recycled in
/// between is never signalled.
pub fn signal_if(pid: libc::pid_t, sig: libc::c_int, still_it: impl FnOnce() -> bool) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let Ok(fd) = RawFd::try_from(fd) else {
        return false;
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: a fresh descriptor owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if !still_it() {
        return false;
    }
    // SAFETY: pidfd_send_signal with a valid pidfd and no siginfo.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0
}

/// Makes `command` start as a daemon: between fork and exec the child forks
/// again and the middle process exits (so `spawn` then `wait` return at
/// once and the grandchild is nobody's child but init's), the grandchild
/// starts a new session, and `keep` stays open across exec.
pub fn daemonize_before_exec(command: &mut std::process::Command, keep: RawFd) {
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (fork, _exit, setsid, fcntl).
    unsafe {
        command.pre_exec(move || {
            match libc::fork() {
                -1 => return Err(io::Error::last_os_error()),
                0 => {}
                _ => libc::_exit(0),
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::fcntl(keep, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `execve`; returns only on failure, with the error.
pub fn execve(path: &CStr, argv: &[CString], env: &[CString]) -> io::Error {
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|c| c.as_ptr()).collect();
    env_p.push(std::ptr::null());
    // SAFETY: argv_p and env_p are NULL-terminated arrays of valid strings
    // that live until execve returns (it only returns on error).
    unsafe { libc::execve(path.as_ptr(), argv_p.as_ptr(), env_p.as_ptr()) };
    io::Error::last_os_error()
}
