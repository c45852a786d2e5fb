//! Pipes, reads and writes on descriptors, and `poll`, for the code around
//! fork and exec where `std`'s buffered types do not fit.

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A pipe whose ends are closed on exec, so only the processes meant to hold
/// an end do.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Writes all of `buf`, retrying on EINTR and short writes.
pub fn write_all(fd: impl AsFd, mut buf: &[u8]) -> io::Result<()> {
    let fd = fd.as_fd();
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// One read; `Ok(0)` is end of file.
pub fn read(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    let fd = fd.as_fd();
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Err(Errno::INTR) => {}
            other => return Ok(other?),
        }
    }
}

/// Reads until end of file (at most `limit` bytes are kept).
pub fn read_to_end(fd: impl AsFd, limit: usize) -> io::Result<Vec<u8>> {
    let fd = fd.as_fd();
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

/// Makes `fd` this process's standard output.
pub fn redirect_stdout(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::stdio::dup2_stdout(fd)?)
}

/// Makes `fd` this process's standard error.
pub fn redirect_stderr(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::stdio::dup2_stderr(fd)?)
}

/// Marks every descriptor from `first` up close-on-exec, so nothing the
/// runtime holds leaks into the job.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    let flags = libc::c_int::try_from(libc::CLOSE_RANGE_CLOEXEC).expect("a small flag");
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC closes nothing; it only
    // sets a flag that takes effect at exec. (Neither rustix nor nix wraps
    // close_range.)
    let rc = unsafe { libc::close_range(first, u32::MAX, flags) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `poll` for input over descriptors; says which became readable or hung
/// up. `None` entries are skipped (and reported not ready). An interrupted
/// wait reports nothing ready.
pub fn poll_readable(fds: &[Option<BorrowedFd<'_>>], timeout: Duration) -> io::Result<Vec<bool>> {
    let mut polled: Vec<PollFd<'_>> = fds
        .iter()
        .flatten()
        .map(|&fd| PollFd::from_borrowed_fd(fd, PollFlags::IN))
        .collect();
    let timeout = Timespec::try_from(timeout).map_err(|_| Errno::INVAL)?;
    match rustix::event::poll(&mut polled, Some(&timeout)) {
        Ok(_) => {}
        Err(Errno::INTR) => return Ok(vec![false; fds.len()]),
        Err(e) => return Err(e.into()),
    }
    let mut results = polled.iter().map(|p| !p.revents().is_empty());
    Ok(fds
        .iter()
        .map(|fd| fd.is_some() && results.next().unwrap_or(false))
        .collect())
}

/// Takes ownership of a descriptor this process inherited by number (from
/// an environment variable, say), if it is open and not stdio.
pub fn take_inherited(fd: RawFd) -> Option<OwnedFd> {
    if fd <= 2 {
        return None;
    }
    // Asking /proc rather than fcntl: a descriptor may only be borrowed
    // once it is known to be open.
    std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).ok()?;
    // SAFETY: the descriptor is open, and the parent handed it to this
    // process alone, so nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}
