//! The network bits a fresh container needs without an `ip` binary: its
//! loopback up and its host name.

use rustix::ioctl::{ioctl, Opcode, Updater};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use std::io;

/// `struct ifreq` with the member used here, `ifr_flags`, padded to the
/// kernel's size.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

// The values fit; the kernel's ioctl numbers are 32-bit.
#[allow(clippy::cast_possible_truncation)]
const SIOCGIFFLAGS: Opcode = libc::SIOCGIFFLAGS as Opcode;
#[allow(clippy::cast_possible_truncation)]
const SIOCSIFFLAGS: Opcode = libc::SIOCSIFFLAGS as Opcode;

/// Brings a network interface up with the classic ioctl, so a fresh network
/// namespace needs no `ip` binary inside.
pub fn interface_up(name: &str) -> io::Result<()> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    let sock = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let up = libc::c_short::try_from(libc::IFF_UP | libc::IFF_RUNNING).expect("16-bit flags");
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write a struct ifreq,
    // which IfReqFlags matches in layout and size (40 bytes), and the
    // kernel touches no memory beyond it.
    unsafe {
        ioctl(&sock, Updater::<SIOCGIFFLAGS, _>::new(&mut req))?;
        req.flags |= up;
        ioctl(&sock, Updater::<SIOCSIFFLAGS, _>::new(&mut req))?;
    }
    Ok(())
}

pub fn sethostname(name: &str) -> io::Result<()> {
    Ok(rustix::system::sethostname(name.as_bytes())?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ifreq_has_the_kernels_size() {
        assert_eq!(std::mem::size_of::<super::IfReqFlags>(), 40);
        assert_eq!(
            std::mem::size_of::<super::IfReqFlags>(),
            std::mem::size_of::<libc::ifreq>()
        );
    }
}
