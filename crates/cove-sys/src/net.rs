//! The network bits a fresh container needs without an `ip` binary: its
//! loopback up and its host name.

use crate::check;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Brings a network interface up with the classic ioctl, so a fresh network
/// namespace needs no `ip` binary inside.
pub fn interface_up(name: &str) -> io::Result<()> {
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: a plain socket call.
    let sock =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: the socket is fresh and owned here.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    let up = libc::c_short::try_from(libc::IFF_UP | libc::IFF_RUNNING).expect("16-bit flags");
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write a struct ifreq, which
    // IfReq matches in layout and size (40 bytes).
    unsafe {
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req))?;
        req.flags |= up;
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req))?;
    }
    Ok(())
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe a live byte string.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}
