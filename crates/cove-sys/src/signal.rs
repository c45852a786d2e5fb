//! Signal sets, masks, signalfd and sigwait, for the container's init.

use crate::check;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A signal set of the given signals.
pub fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset uses it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

pub fn block_signals(set: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: valid set pointer; the old mask is not needed.
    let rc = unsafe { libc::sigprocmask(libc::SIG_BLOCK, set, std::ptr::null_mut()) };
    check(rc).map(drop)
}

/// Restores what a freshly started process expects: every signal at its
/// default action and none blocked (Rust ignores SIGPIPE, and the init
/// blocks the signals it forwards; neither should reach the job).
pub fn reset_signals() {
    // SAFETY: resetting dispositions and the mask has no memory effects;
    // SIGKILL/SIGSTOP fail harmlessly.
    unsafe {
        for sig in 1..libc::SIGRTMAX() {
            libc::signal(sig, libc::SIG_DFL);
        }
        let empty = sigset(&[]);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

pub fn signalfd(set: &libc::sigset_t) -> io::Result<OwnedFd> {
    // SAFETY: valid set pointer; a new descriptor is returned.
    let fd = check(unsafe { libc::signalfd(-1, set, libc::SFD_CLOEXEC) })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads one pending signal number from a signalfd.
pub fn read_signal(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: signalfd_siginfo is plain data; the read fills it completely.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: the buffer is exactly one signalfd_siginfo.
    let n = unsafe { libc::read(fd, (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
    if usize::try_from(n).ok() != Some(size) {
        return Err(io::Error::last_os_error());
    }
    libc::c_int::try_from(info.ssi_signo).map_err(io::Error::other)
}

/// Waits for a signal in `set` (which must be blocked).
pub fn sigwait(set: &libc::sigset_t) -> io::Result<libc::c_int> {
    loop {
        // SAFETY: valid set pointer; no siginfo requested.
        let rc = unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) };
        if rc >= 0 {
            return Ok(rc);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
