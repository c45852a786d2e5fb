//! Pipes, reads and writes on raw descriptors, and `poll`, for the code
//! between fork and exec where `std`'s types cannot be used.

use crate::check;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A pipe whose ends are closed on exec, so only the processes meant to hold
/// an end do.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array on success.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Writes all of `buf`, retrying on EINTR and short writes.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: the pointer and length describe a live slice.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // n >= 0 here.
        buf = &buf[n.unsigned_abs()..];
    }
    Ok(())
}

/// One read; `Ok(0)` is end of file.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length describe a live, writable slice.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n.unsigned_abs());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads until end of file (at most `limit` bytes are kept).
pub fn read_to_end(fd: RawFd, limit: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = read(fd, &mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() < limit {
            out.extend_from_slice(&buf[..n.min(limit - out.len())]);
        }
    }
}

pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 only manipulates the descriptor table.
    check(unsafe { libc::dup2(from, to) }).map(drop)
}

/// Marks every descriptor from `first` up close-on-exec, so nothing the
/// runtime holds leaks into the job.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    let flags = libc::c_int::try_from(libc::CLOSE_RANGE_CLOEXEC).expect("a small flag");
    // SAFETY: close_range only changes descriptor flags.
    check(unsafe { libc::close_range(first, u32::MAX, flags) }).map(drop)
}

/// `poll` over descriptors, each waited on for input; returns which became
/// readable or hung up. Negative descriptors are skipped.
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: the vector holds fds.len() initialised pollfd structs.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// Takes ownership of a descriptor this process inherited by number (from
/// an environment variable, say), if it is open and not stdio.
pub fn take_inherited(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    let open = fd > 2 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
    // SAFETY: the descriptor is open, and the parent handed it to this
    // process alone, so nothing else owns it.
    open.then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}
