//! The only crate in Cove with `unsafe` code: small, checked wrappers over
//! the Linux calls that `std` does not offer (namespaces, mounts,
//! capabilities, signals, fork and exec). They are built on `rustix` and,
//! for signals, fork and exec, on `nix`; `libc` is called directly only for
//! `close_range` and `_exit`, which neither wraps. Every other crate has
//! `#![forbid(unsafe_code)]`; each `unsafe` block here says why it is sound.
//!
//! The few calls left `unsafe` are so by nature, not for want of a wrapper:
//! adopting a descriptor by its number, an ioctl on a C struct, `fork`, and
//! code that runs between fork and exec.

pub mod fd;
pub mod mount;
pub mod namespace;
pub mod net;
pub mod process;
pub mod seccomp;
pub mod signal;

pub use fd::*;
pub use mount::*;
pub use namespace::*;
pub use net::*;
pub use process::*;
pub use signal::*;

/// The typed flags and values callers pass, re-exported so no other crate
/// needs `libc`, `rustix` or `nix` for them.
pub use nix::sys::signal::Signal;
pub use rustix::io::Errno;
pub use rustix::mount::{MountFlags, MountPropagationFlags};
pub use rustix::thread::{CapabilitySet, UnshareFlags};

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;

pub fn cstr(s: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(s.as_ref().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a string"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, IntoRawFd};

    #[test]
    fn a_pipe_carries_bytes_and_ends_at_close() {
        let (r, w) = pipe().unwrap();
        write_all(&w, b"hello").unwrap();
        drop(w);
        assert_eq!(read_to_end(&r, 3).unwrap(), b"hel");
    }

    #[test]
    fn only_open_non_stdio_descriptors_are_taken() {
        assert!(take_inherited(1).is_none());
        assert!(take_inherited(-1).is_none());
        let (r, _w) = pipe().unwrap();
        let raw = r.into_raw_fd();
        let taken = take_inherited(raw).expect("an open descriptor");
        assert_eq!(taken.as_raw_fd(), raw);
        drop(taken);
        assert!(take_inherited(raw).is_none(), "a closed descriptor");
    }

    #[test]
    fn poll_reports_only_the_readable_end_and_skips_absent_ones() {
        let (r1, w1) = pipe().unwrap();
        let (r2, _w2) = pipe().unwrap();
        write_all(&w1, b"x").unwrap();
        let ready = poll_readable(
            &[Some(r2.as_fd()), None, Some(r1.as_fd())],
            std::time::Duration::from_millis(50),
        )
        .unwrap();
        assert_eq!(ready, [false, false, true]);
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

    #[test]
    fn unsharing_the_descriptor_table_is_refused() {
        let err = unshare(UnshareFlags::FILES).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::INVAL.raw_os_error()));
    }

    #[test]
    fn fork_is_refused_in_a_multithreaded_process() {
        // The test harness runs each test on a thread of its own.
        let err = fork().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::AGAIN.raw_os_error()));
    }

    #[test]
    // The children are reaped by the `wait` under test, not by `Child`.
    #[allow(clippy::zombie_processes)]
    fn a_child_is_reaped_with_its_exit_code_or_its_signal() {
        let pid_of = |c: &std::process::Child| i32::try_from(c.id()).unwrap();
        let exits = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        assert_eq!(wait(pid_of(&exits)).unwrap(), Ended::Exited(7));
        // Any child, including one in a session (and process group) of its
        // own, as a container's main process is.
        let own_session = std::process::Command::new("setsid")
            .args(["sh", "-c", "exit 3"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let reaped = loop {
            match try_wait(None).unwrap() {
                Some(reaped) => break reaped,
                None if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                None => panic!("the child was never reaped"),
            }
        };
        assert_eq!(reaped, (pid_of(&own_session), Ended::Exited(3)));
        let sleeps = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert_eq!(try_wait(Some(pid_of(&sleeps))).unwrap(), None);
        kill(pid_of(&sleeps), Signal::SIGKILL).unwrap();
        assert_eq!(
            wait(pid_of(&sleeps)).unwrap(),
            Ended::Signaled(Signal::SIGKILL as i32)
        );
    }

    use std::os::fd::AsFd;
}
