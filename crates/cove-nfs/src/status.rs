//! Error translation at the two edges of the protocol: the server turns the
//! local file system's `errno` into an `nfsstat3`, the client turns an
//! `nfsstat3` back into the `errno` the FUSE caller sees. NFS reuses most
//! Linux numbers but not all (`NOTEMPTY`, `NAMETOOLONG`, `STALE`, `DQUOT`
//! differ), so both directions are spelled out.

use nfs3_types::nfs3::nfsstat3;
use rustix::io::Errno;

/// The `nfsstat3` a server reply carries for a failed local call.
pub(crate) fn from_errno(e: Errno) -> nfsstat3 {
    match e {
        Errno::PERM => nfsstat3::NFS3ERR_PERM,
        Errno::NOENT => nfsstat3::NFS3ERR_NOENT,
        Errno::NXIO => nfsstat3::NFS3ERR_NXIO,
        Errno::ACCESS => nfsstat3::NFS3ERR_ACCES,
        Errno::EXIST => nfsstat3::NFS3ERR_EXIST,
        Errno::XDEV => nfsstat3::NFS3ERR_XDEV,
        Errno::NODEV => nfsstat3::NFS3ERR_NODEV,
        Errno::NOTDIR => nfsstat3::NFS3ERR_NOTDIR,
        Errno::ISDIR => nfsstat3::NFS3ERR_ISDIR,
        // ELOOP: a symlink where openat2(RESOLVE_NO_SYMLINKS) wanted a real
        // object; to the client that is an operation on the wrong type.
        Errno::INVAL | Errno::LOOP => nfsstat3::NFS3ERR_INVAL,
        Errno::FBIG => nfsstat3::NFS3ERR_FBIG,
        Errno::NOSPC => nfsstat3::NFS3ERR_NOSPC,
        Errno::ROFS => nfsstat3::NFS3ERR_ROFS,
        Errno::MLINK => nfsstat3::NFS3ERR_MLINK,
        Errno::NAMETOOLONG => nfsstat3::NFS3ERR_NAMETOOLONG,
        Errno::NOTEMPTY => nfsstat3::NFS3ERR_NOTEMPTY,
        Errno::DQUOT => nfsstat3::NFS3ERR_DQUOT,
        Errno::STALE => nfsstat3::NFS3ERR_STALE,
        Errno::OPNOTSUPP => nfsstat3::NFS3ERR_NOTSUPP,
        _ => nfsstat3::NFS3ERR_IO,
    }
}

/// [`from_errno`] for a `std::io::Error` (from `std::fs` calls).
pub(crate) fn from_io(e: &std::io::Error) -> nfsstat3 {
    e.raw_os_error().map_or(nfsstat3::NFS3ERR_IO, |n| {
        from_errno(Errno::from_raw_os_error(n))
    })
}

/// The `errno` a FUSE caller gets for a failed NFS call.
pub(crate) fn to_errno(stat: nfsstat3) -> fuser::Errno {
    use fuser::Errno as E;
    match stat {
        // Not an error; a caller that maps it anyway gets a loud EIO.
        nfsstat3::NFS3_OK | nfsstat3::NFS3ERR_IO | nfsstat3::NFS3ERR_SERVERFAULT => E::EIO,
        nfsstat3::NFS3ERR_PERM => E::EPERM,
        nfsstat3::NFS3ERR_NOENT => E::ENOENT,
        nfsstat3::NFS3ERR_NXIO => E::ENXIO,
        nfsstat3::NFS3ERR_ACCES => E::EACCES,
        nfsstat3::NFS3ERR_EXIST => E::EEXIST,
        nfsstat3::NFS3ERR_XDEV => E::EXDEV,
        nfsstat3::NFS3ERR_NODEV => E::ENODEV,
        nfsstat3::NFS3ERR_NOTDIR => E::ENOTDIR,
        nfsstat3::NFS3ERR_ISDIR => E::EISDIR,
        nfsstat3::NFS3ERR_INVAL | nfsstat3::NFS3ERR_BADTYPE => E::EINVAL,
        nfsstat3::NFS3ERR_FBIG => E::EFBIG,
        nfsstat3::NFS3ERR_NOSPC => E::ENOSPC,
        nfsstat3::NFS3ERR_ROFS => E::EROFS,
        nfsstat3::NFS3ERR_MLINK => E::EMLINK,
        nfsstat3::NFS3ERR_NAMETOOLONG => E::ENAMETOOLONG,
        nfsstat3::NFS3ERR_NOTEMPTY => E::ENOTEMPTY,
        nfsstat3::NFS3ERR_DQUOT => E::EDQUOT,
        nfsstat3::NFS3ERR_STALE | nfsstat3::NFS3ERR_BADHANDLE => E::ESTALE,
        nfsstat3::NFS3ERR_REMOTE => E::EREMOTE,
        nfsstat3::NFS3ERR_NOTSUPP => E::ENOTSUP,
        nfsstat3::NFS3ERR_TOOSMALL | nfsstat3::NFS3ERR_BAD_COOKIE => E::EINVAL,
        nfsstat3::NFS3ERR_NOT_SYNC => E::EAGAIN,
        nfsstat3::NFS3ERR_JUKEBOX => E::EAGAIN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_that_differ_in_number_survive_the_round_trip() {
        for (errno, fuse) in [
            (Errno::NOTEMPTY, fuser::Errno::ENOTEMPTY),
            (Errno::NAMETOOLONG, fuser::Errno::ENAMETOOLONG),
            (Errno::DQUOT, fuser::Errno::EDQUOT),
            (Errno::STALE, fuser::Errno::ESTALE),
            (Errno::NOENT, fuser::Errno::ENOENT),
            (Errno::EXIST, fuser::Errno::EEXIST),
            (Errno::ROFS, fuser::Errno::EROFS),
            (Errno::NOSPC, fuser::Errno::ENOSPC),
        ] {
            assert_eq!(to_errno(from_errno(errno)).code(), fuse.code(), "{errno}");
        }
    }

    #[test]
    fn nfs_numbers_are_not_taken_for_linux_ones() {
        // NFS3ERR_NOTEMPTY is 66, which on Linux is EREMOTE.
        assert_eq!(
            to_errno(nfsstat3::NFS3ERR_NOTEMPTY).code(),
            fuser::Errno::ENOTEMPTY.code()
        );
        assert_eq!(
            to_errno(nfsstat3::NFS3ERR_BADHANDLE).code(),
            fuser::Errno::ESTALE.code()
        );
    }

    #[test]
    fn unknown_local_errors_are_io_errors() {
        assert_eq!(from_errno(Errno::NOMEM), nfsstat3::NFS3ERR_IO);
        let e = std::io::Error::other("no errno");
        assert_eq!(from_io(&e), nfsstat3::NFS3ERR_IO);
        let e = std::io::Error::from_raw_os_error(Errno::NOTDIR.raw_os_error());
        assert_eq!(from_io(&e), nfsstat3::NFS3ERR_NOTDIR);
    }
}
