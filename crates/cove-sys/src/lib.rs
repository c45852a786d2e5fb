//! The only crate in Cove with `unsafe` code: small, checked wrappers over
//! the Linux calls that `std` does not offer (namespaces, mounts,
//! capabilities, signals, fork and exec), on `rustix` where it has the call
//! and on `libc` where it does not. Every other crate has
//! `#![forbid(unsafe_code)]`; each `unsafe` block here says why it is sound.

pub mod fd;
pub mod mount;
pub mod namespace;
pub mod net;
pub mod process;
pub mod signal;

pub use fd::*;
pub use mount::*;
pub use namespace::*;
pub use net::*;
pub use process::*;
pub use signal::*;

/// Re-exported so callers name flags and signals without a `libc` dependency.
pub use libc;

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;

pub fn cstr(s: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(s.as_ref().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a string"))
}

pub(crate) fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

pub(crate) fn check_long(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, IntoRawFd};

    #[test]
    fn a_pipe_carries_bytes_and_ends_at_close() {
        let (r, w) = pipe().unwrap();
        write_all(w.as_raw_fd(), b"hello").unwrap();
        drop(w);
        assert_eq!(read_to_end(r.as_raw_fd(), 3).unwrap(), b"hel");
    }

    #[test]
    fn only_open_non_stdio_descriptors_are_taken() {
        assert!(take_inherited(1).is_none());
        assert!(take_inherited(-1).is_none());
        let (r, _w) = pipe().unwrap();
        let raw = r.into_raw_fd();
        let taken = take_inherited(raw).expect("an open descriptor");
        assert_eq!(taken.as_raw_fd(), raw);
    }

    #[test]
    fn proc_is_a_mount_point_and_its_children_are_not() {
        assert!(is_mountpoint(std::path::Path::new("/proc")));
        assert!(!is_mountpoint(std::path::Path::new("/proc/self/fd")));
    }

    #[test]
    fn a_nul_byte_is_refused_before_any_call() {
        assert_eq!(
            cstr("a\0b").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
