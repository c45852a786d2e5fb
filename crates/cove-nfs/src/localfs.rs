//! The exported directory: nfs3_server's file-system traits over a local
//! directory, so that NFS clients read and write real files on disk.
//!
//! A file handle is the object's inode number. A table maps inode numbers
//! to paths relative to the export root; a path that no longer leads to
//! that inode (the file was renamed or removed behind the server's back) is
//! found again by walking the export, and an inode that a walk did not find
//! is stale until a lookup sees it again. Inode numbers survive restarts of
//! the server, so the table needs no persistence.
//!
//! Every path is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! from the root's descriptor, and names are only ever resolved one
//! component at a time relative to a directory descriptor: a symlink a
//! client planted can be read but never followed, so no client reaches
//! outside the export. Calls that touch the disk run on tokio's blocking
//! pool.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use nfs3_server::vfs::{
    DirEntryPlus, FileHandleU64, NextResult, NfsFileSystem, NfsReadFileSystem, ReadDirPlusIterator,
    VFSCapabilities,
};
use nfs3_types::nfs3::{
    createverf3, fattr3, filename3, ftype3, nfspath3, nfsstat3, nfstime3, sattr3, set_atime,
    set_gid3, set_mode3, set_mtime, set_size3, set_uid3, specdata3, stable_how,
};
use nfs3_types::xdr_codec::Opaque;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat, Timespec};
use rustix::io::Errno;

use crate::status::{from_errno, from_io};

/// How every path under the root is resolved: never above the root, never
/// through a symlink (a trailing one only with `O_PATH | O_NOFOLLOW`).
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Longest file name Linux file systems take.
const NAME_MAX: usize = 255;

/// A local directory served over NFS.
#[derive(Clone)]
pub(crate) struct LocalFs(Arc<Inner>);

struct Inner {
    root: OwnedFd,
    root_ino: u64,
    read_only: bool,
    table: RwLock<Table>,
}

/// Inode number to path (relative to the root; empty for the root).
#[derive(Default)]
struct Table {
    paths: HashMap<u64, PathBuf>,
    /// Inodes a full walk did not find; refused as stale without walking
    /// again until a lookup registers them.
    gone: HashSet<u64>,
}

impl LocalFs {
    pub(crate) fn open(root: &Path, read_only: bool) -> std::io::Result<Self> {
        let root = rfs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let root_ino = rfs::fstat(&root)?.st_ino;
        let mut table = Table::default();
        table.paths.insert(root_ino, PathBuf::new());
        Ok(Self(Arc::new(Inner {
            root,
            root_ino,
            read_only,
            table: RwLock::new(table),
        })))
    }

    /// Runs `f` on the blocking pool: every call here may wait on the disk.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, nfsstat3> + Send + 'static,
    ) -> Result<T, nfsstat3> {
        let inner = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .unwrap_or(Err(nfsstat3::NFS3ERR_SERVERFAULT))
    }
}

/// An object found by inode number: its path and an `O_PATH` descriptor.
struct Located {
    rel: PathBuf,
    fd: OwnedFd,
    stat: Stat,
}

impl Inner {
    fn writable(&self) -> Result<(), nfsstat3> {
        if self.read_only {
            Err(nfsstat3::NFS3ERR_ROFS)
        } else {
            Ok(())
        }
    }

    fn open_rel(&self, rel: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
        let path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        rfs::openat2(
            &self.root,
            path,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
    }

    /// Opens `rel` as an `O_PATH` descriptor and returns it if it is still
    /// inode `ino`.
    fn try_path(&self, ino: u64, rel: &Path) -> Option<Located> {
        let fd = self.open_rel(rel, OFlags::PATH | OFlags::NOFOLLOW).ok()?;
        let stat = rfs::fstat(&fd).ok()?;
        (stat.st_ino == ino).then(|| Located {
            rel: rel.to_owned(),
            fd,
            stat,
        })
    }

    /// Finds inode `ino`: through the table, else by walking the export.
    fn locate(&self, ino: u64) -> Result<Located, nfsstat3> {
        let cached = self.read_table().paths.get(&ino).cloned();
        if let Some(found) = cached.and_then(|rel| self.try_path(ino, &rel)) {
            return Ok(found);
        }
        if self.read_table().gone.contains(&ino) {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        let found = self.walk_for(ino).and_then(|rel| self.try_path(ino, &rel));
        if found.is_none() {
            let mut table = self.write_table();
            table.paths.remove(&ino);
            table.gone.insert(ino);
        }
        found.ok_or(nfsstat3::NFS3ERR_STALE)
    }

    /// [`Self::locate`] for a directory, opened for reading: `*at` calls
    /// and `fsync` both need a real descriptor.
    fn locate_dir(&self, ino: u64) -> Result<(PathBuf, OwnedFd), nfsstat3> {
        let found = self.locate(ino)?;
        if FileType::from_raw_mode(found.stat.st_mode) != FileType::Directory {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        let fd = self.reopen(&found, OFlags::RDONLY | OFlags::DIRECTORY)?;
        Ok((found.rel, fd))
    }

    /// Opens a located object for I/O, checking that the path still leads
    /// to the same inode.
    fn reopen(&self, found: &Located, flags: OFlags) -> Result<OwnedFd, nfsstat3> {
        let fd = self
            .open_rel(&found.rel, flags | OFlags::NOFOLLOW)
            .map_err(from_errno)?;
        let stat = rfs::fstat(&fd).map_err(from_errno)?;
        if stat.st_ino == found.stat.st_ino {
            Ok(fd)
        } else {
            Err(nfsstat3::NFS3ERR_STALE)
        }
    }

    /// Breadth-first search of the export for inode `want`, registering the
    /// directories it passes so later misses below them are cheap.
    fn walk_for(&self, want: u64) -> Option<PathBuf> {
        let mut queue = VecDeque::from([PathBuf::new()]);
        let mut dirs = Vec::new();
        let mut found = None;
        'walk: while let Some(dir) = queue.pop_front() {
            let Ok(fd) = self.open_rel(&dir, OFlags::RDONLY | OFlags::DIRECTORY) else {
                continue;
            };
            let Ok(entries) = rfs::Dir::new(fd) else {
                continue;
            };
            for entry in entries {
                let Ok(entry) = entry else { break };
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let rel = dir.join(OsStr::from_bytes(name));
                if entry.ino() == want {
                    found = Some(rel);
                    break 'walk;
                }
                if entry.file_type() == FileType::Directory {
                    dirs.push((entry.ino(), rel.clone()));
                    queue.push_back(rel);
                }
            }
        }
        let mut table = self.write_table();
        for (ino, rel) in dirs {
            table.paths.entry(ino).or_insert(rel);
        }
        if let Some(rel) = &found {
            table.paths.insert(want, rel.clone());
        }
        found
    }

    fn register(&self, ino: u64, rel: PathBuf) {
        let mut table = self.write_table();
        table.gone.remove(&ino);
        table.paths.insert(ino, rel);
    }

    fn read_table(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_table(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lookup(&self, dir: u64, name: &[u8]) -> Result<u64, nfsstat3> {
        match name {
            b"." => return Ok(dir),
            b".." => {
                let found = self.locate(dir)?;
                // The root is its own parent: nothing above it is served.
                let parent = found.rel.parent().unwrap_or(Path::new(""));
                let fd = self
                    .open_rel(parent, OFlags::PATH | OFlags::DIRECTORY)
                    .map_err(from_errno)?;
                let ino = rfs::fstat(&fd).map_err(from_errno)?.st_ino;
                self.register(ino, parent.to_owned());
                return Ok(ino);
            }
            _ => {}
        }
        let name = check_name(name)?;
        let (rel, dirfd) = self.locate_dir(dir)?;
        let stat = rfs::statat(&dirfd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(from_errno)?;
        self.register(stat.st_ino, rel.join(name));
        Ok(stat.st_ino)
    }

    fn getattr(&self, ino: u64) -> Result<fattr3, nfsstat3> {
        Ok(fattr(&self.locate(ino)?.stat))
    }

    fn read(&self, ino: u64, offset: u64, count: u32) -> Result<(Vec<u8>, bool), nfsstat3> {
        let found = self.locate(ino)?;
        regular(&found.stat)?;
        let file = File::from(self.reopen(&found, OFlags::RDONLY)?);
        let size = u64::try_from(found.stat.st_size).unwrap_or(0);
        let want = size.saturating_sub(offset).min(u64::from(count));
        let mut buf = vec![0; usize::try_from(want).map_err(|_| nfsstat3::NFS3ERR_INVAL)?];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(from_io(&e)),
            }
        }
        buf.truncate(filled);
        let eof = offset + filled as u64 >= size;
        Ok((buf, eof))
    }

    fn write(
        &self,
        ino: u64,
        offset: u64,
        data: &[u8],
        stable: stable_how,
    ) -> Result<(fattr3, stable_how), nfsstat3> {
        self.writable()?;
        let found = self.locate(ino)?;
        regular(&found.stat)?;
        let file = File::from(self.reopen(&found, OFlags::WRONLY)?);
        file.write_all_at(data, offset).map_err(|e| from_io(&e))?;
        match stable {
            stable_how::UNSTABLE => {}
            stable_how::DATA_SYNC => file.sync_data().map_err(|e| from_io(&e))?,
            stable_how::FILE_SYNC => file.sync_all().map_err(|e| from_io(&e))?,
        }
        let stat = rfs::fstat(&file).map_err(from_errno)?;
        Ok((fattr(&stat), stable))
    }

    fn commit(&self, ino: u64) -> Result<(), nfsstat3> {
        let found = self.locate(ino)?;
        let fd = self.reopen(&found, OFlags::RDONLY | OFlags::NONBLOCK)?;
        rfs::fsync(&fd).map_err(from_errno)
    }

    fn setattr(&self, ino: u64, attr: &sattr3) -> Result<fattr3, nfsstat3> {
        self.writable()?;
        let found = self.locate(ino)?;
        let kind = FileType::from_raw_mode(found.stat.st_mode);
        if let set_size3::Some(size) = attr.size {
            regular(&found.stat)?;
            let fd = self.reopen(&found, OFlags::WRONLY)?;
            rfs::ftruncate(&fd, size).map_err(from_errno)?;
        }
        let (uid, gid) = owner(attr)?;
        let times = timestamps(attr);
        if kind == FileType::Symlink {
            // A symlink has no mode of its own; its owner and times are set
            // through its parent so that the link itself is changed.
            let parent = found.rel.parent().unwrap_or(Path::new(""));
            let name = found.rel.file_name().ok_or(nfsstat3::NFS3ERR_INVAL)?;
            let dirfd = self
                .open_rel(parent, OFlags::PATH | OFlags::DIRECTORY)
                .map_err(from_errno)?;
            if uid.is_some() || gid.is_some() {
                rfs::chownat(&dirfd, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(from_errno)?;
            }
            if let Some(times) = times {
                rfs::utimensat(&dirfd, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(from_errno)?;
            }
        } else {
            // O_NONBLOCK: a FIFO opens without waiting for a writer. The
            // size is done: a read-only descriptor cannot truncate.
            let fd = self.reopen(&found, OFlags::RDONLY | OFlags::NONBLOCK)?;
            let rest = sattr3 {
                size: set_size3::None,
                ..attr.clone()
            };
            apply_to_fd(&fd, &rest)?;
        }
        let stat = rfs::fstat(&found.fd).map_err(from_errno)?;
        Ok(fattr(&stat))
    }

    fn create(&self, dir: u64, name: &[u8], attr: &sattr3) -> Result<(u64, fattr3), nfsstat3> {
        self.writable()?;
        let name = check_name(name)?;
        let (rel, dirfd) = self.locate_dir(dir)?;
        let mode = match attr.mode {
            set_mode3::Some(mode) => mode & 0o7777,
            set_mode3::None => 0o644,
        };
        let fd = rfs::openat(
            &dirfd,
            name,
            OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(from_errno)?;
        apply_to_fd(&fd, attr)?;
        rfs::fsync(&dirfd).map_err(from_errno)?;
        let stat = rfs::fstat(&fd).map_err(from_errno)?;
        self.register(stat.st_ino, rel.join(name));
        Ok((stat.st_ino, fattr(&stat)))
    }

    fn create_exclusive(&self, dir: u64, name: &[u8], verf: &createverf3) -> Result<u64, nfsstat3> {
        self.writable()?;
        let name = check_name(name)?;
        let (rel, dirfd) = self.locate_dir(dir)?;
        // The verifier is kept in the new file's times, as RFC 1813 suggests,
        // so that a retransmitted CREATE finds its own file and succeeds.
        let stamp = verifier_time(verf);
        let created = rfs::openat(
            &dirfd,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        );
        let ino = match created {
            Ok(fd) => {
                let times = rfs::Timestamps {
                    last_access: stamp,
                    last_modification: stamp,
                };
                rfs::futimens(&fd, &times).map_err(from_errno)?;
                rfs::fsync(&dirfd).map_err(from_errno)?;
                rfs::fstat(&fd).map_err(from_errno)?.st_ino
            }
            Err(Errno::EXIST) => {
                let stat =
                    rfs::statat(&dirfd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(from_errno)?;
                let ours = FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
                    && stat.st_mtime == stamp.tv_sec
                    && i64::try_from(stat.st_mtime_nsec).ok() == Some(stamp.tv_nsec);
                if !ours {
                    return Err(nfsstat3::NFS3ERR_EXIST);
                }
                stat.st_ino
            }
            Err(e) => return Err(from_errno(e)),
        };
        self.register(ino, rel.join(name));
        Ok(ino)
    }

    fn mkdir(&self, dir: u64, name: &[u8]) -> Result<(u64, fattr3), nfsstat3> {
        self.writable()?;
        let name = check_name(name)?;
        let (rel, dirfd) = self.locate_dir(dir)?;
        rfs::mkdirat(&dirfd, name, Mode::from_raw_mode(0o755)).map_err(from_errno)?;
        rfs::fsync(&dirfd).map_err(from_errno)?;
        let stat = rfs::statat(&dirfd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(from_errno)?;
        self.register(stat.st_ino, rel.join(name));
        Ok((stat.st_ino, fattr(&stat)))
    }

    /// REMOVE and RMDIR: nfs3_server sends both here, so the entry's type
    /// picks the call.
    fn remove(&self, dir: u64, name: &[u8]) -> Result<(), nfsstat3> {
        self.writable()?;
        let name = check_name(name)?;
        let (rel, dirfd) = self.locate_dir(dir)?;
        let stat = rfs::statat(&dirfd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(from_errno)?;
        let flags = if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        rfs::unlinkat(&dirfd, name, flags).map_err(from_errno)?;
        rfs::fsync(&dirfd).map_err(from_errno)?;
        let path = rel.join(name);
        let mut table = self.write_table();
        if table.paths.get(&stat.st_ino) == Some(&path) {
            table.paths.remove(&stat.st_ino);
        }
        Ok(())
    }

    fn rename(
        &self,
        from_dir: u64,
        from_name: &[u8],
        to_dir: u64,
        to_name: &[u8],
    ) -> Result<(), nfsstat3> {
        self.writable()?;
        let from_name = check_name(from_name)?;
        let to_name = check_name(to_name)?;
        let (from_rel, from_fd) = self.locate_dir(from_dir)?;
        let (to_rel, to_fd) = self.locate_dir(to_dir)?;
        let stat =
            rfs::statat(&from_fd, from_name, AtFlags::SYMLINK_NOFOLLOW).map_err(from_errno)?;
        rfs::renameat(&from_fd, from_name, &to_fd, to_name).map_err(from_errno)?;
        rfs::fsync(&from_fd).map_err(from_errno)?;
        if from_dir != to_dir {
            rfs::fsync(&to_fd).map_err(from_errno)?;
        }
        let old = from_rel.join(from_name);
        let new = to_rel.join(to_name);
        let mut table = self.write_table();
        // Whatever the new name replaced is gone; what lived below a moved
        // directory moved with it.
        table.paths.retain(|_, path| *path != new);
        for path in table.paths.values_mut() {
            if let Ok(below) = path.strip_prefix(&old) {
                *path = new.join(below);
            }
        }
        table.paths.insert(stat.st_ino, new);
        Ok(())
    }

    fn symlink(
        &self,
        dir: u64,
        name: &[u8],
        target: &[u8],
        attr: &sattr3,
    ) -> Result<(u64, fattr3), nfsstat3> {
        self.writable()?;
        let name = check_name(name)?;
        if target.is_empty() || target.contains(&0) {
            return Err(nfsstat3::NFS3ERR_INVAL);
        }
        let (rel, dirfd) = self.locate_dir(dir)?;
        rfs::symlinkat(OsStr::from_bytes(target), &dirfd, name).map_err(from_errno)?;
        let (uid, gid) = owner(attr)?;
        if uid.is_some() || gid.is_some() {
            rfs::chownat(&dirfd, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW).map_err(from_errno)?;
        }
        rfs::fsync(&dirfd).map_err(from_errno)?;
        let stat = rfs::statat(&dirfd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(from_errno)?;
        self.register(stat.st_ino, rel.join(name));
        Ok((stat.st_ino, fattr(&stat)))
    }

    fn readlink(&self, ino: u64) -> Result<Vec<u8>, nfsstat3> {
        let found = self.locate(ino)?;
        if FileType::from_raw_mode(found.stat.st_mode) != FileType::Symlink {
            return Err(nfsstat3::NFS3ERR_INVAL);
        }
        let target = rfs::readlinkat(&found.fd, "", Vec::new()).map_err(from_errno)?;
        Ok(target.into_bytes())
    }

    /// The names in a directory, sorted so that a cookie (an index) means
    /// the same entry from one READDIRPLUS call to the next.
    fn list(&self, dir: u64) -> Result<(PathBuf, OwnedFd, Vec<Vec<u8>>), nfsstat3> {
        let (rel, dirfd) = self.locate_dir(dir)?;
        let entries = rfs::Dir::read_from(&dirfd).map_err(from_errno)?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(from_errno)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        names.sort_unstable();
        Ok((rel, dirfd, names))
    }
}

/// A directory listing handed out page by page; each entry is looked at
/// only when the reply has room for it.
struct Listing {
    fs: Arc<Inner>,
    rel: PathBuf,
    dirfd: OwnedFd,
    names: Vec<Vec<u8>>,
    next: usize,
}

impl ReadDirPlusIterator<FileHandleU64> for Listing {
    async fn next(&mut self) -> NextResult<DirEntryPlus<FileHandleU64>> {
        while let Some(name) = self.names.get(self.next) {
            self.next += 1;
            let os = OsStr::from_bytes(name);
            let stat = match rfs::statat(&self.dirfd, os, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                // Removed since the listing was taken.
                Err(Errno::NOENT) => continue,
                Err(e) => return NextResult::Err(from_errno(e)),
            };
            self.fs.register(stat.st_ino, self.rel.join(os));
            return NextResult::Ok(DirEntryPlus {
                fileid: stat.st_ino,
                name: filename3(Opaque::owned(name.clone())),
                cookie: self.next as u64,
                name_attributes: Some(fattr(&stat)),
                name_handle: Some(FileHandleU64::new(stat.st_ino)),
            });
        }
        NextResult::Eof
    }
}

impl NfsReadFileSystem for LocalFs {
    type Handle = FileHandleU64;

    fn root_dir(&self) -> FileHandleU64 {
        FileHandleU64::new(self.0.root_ino)
    }

    async fn lookup(
        &self,
        dirid: &FileHandleU64,
        filename: &filename3<'_>,
    ) -> Result<FileHandleU64, nfsstat3> {
        let dir = dirid.as_u64();
        let name = filename.as_ref().to_vec();
        self.run(move |fs| fs.lookup(dir, &name))
            .await
            .map(FileHandleU64::new)
    }

    /// MOUNT of a subdirectory: the path must name a directory.
    async fn lookup_by_path(&self, path: &str) -> Result<FileHandleU64, nfsstat3> {
        let path = path.to_owned();
        self.run(move |fs| {
            let mut ino = fs.root_ino;
            for component in path.split('/').filter(|c| !c.is_empty()) {
                if component == ".." {
                    return Err(nfsstat3::NFS3ERR_NOENT);
                }
                ino = fs.lookup(ino, component.as_bytes())?;
            }
            let found = fs.locate(ino)?;
            if FileType::from_raw_mode(found.stat.st_mode) == FileType::Directory {
                Ok(FileHandleU64::new(ino))
            } else {
                Err(nfsstat3::NFS3ERR_NOTDIR)
            }
        })
        .await
    }

    async fn getattr(&self, id: &FileHandleU64) -> Result<fattr3, nfsstat3> {
        let ino = id.as_u64();
        self.run(move |fs| fs.getattr(ino)).await
    }

    async fn read(
        &self,
        id: &FileHandleU64,
        offset: u64,
        count: u32,
    ) -> Result<(Vec<u8>, bool), nfsstat3> {
        let ino = id.as_u64();
        self.run(move |fs| fs.read(ino, offset, count)).await
    }

    async fn readdirplus(
        &self,
        dirid: &FileHandleU64,
        cookie: u64,
    ) -> Result<impl ReadDirPlusIterator<FileHandleU64>, nfsstat3> {
        let dir = dirid.as_u64();
        let (rel, dirfd, names) = self.run(move |fs| fs.list(dir)).await?;
        Ok(Listing {
            fs: Arc::clone(&self.0),
            rel,
            dirfd,
            names,
            next: usize::try_from(cookie).unwrap_or(usize::MAX),
        })
    }

    async fn readlink(&self, id: &FileHandleU64) -> Result<nfspath3<'_>, nfsstat3> {
        let ino = id.as_u64();
        let target = self.run(move |fs| fs.readlink(ino)).await?;
        Ok(nfspath3(Opaque::owned(target)))
    }
}

impl NfsFileSystem for LocalFs {
    fn capabilities(&self) -> VFSCapabilities {
        if self.0.read_only {
            VFSCapabilities::ReadOnly
        } else {
            VFSCapabilities::ReadWrite
        }
    }

    async fn setattr(&self, id: &FileHandleU64, setattr: sattr3) -> Result<fattr3, nfsstat3> {
        let ino = id.as_u64();
        self.run(move |fs| fs.setattr(ino, &setattr)).await
    }

    async fn write(
        &self,
        id: &FileHandleU64,
        offset: u64,
        data: &[u8],
        stable: stable_how,
    ) -> Result<(fattr3, stable_how), nfsstat3> {
        let ino = id.as_u64();
        let data = data.to_vec();
        self.run(move |fs| fs.write(ino, offset, &data, stable))
            .await
    }

    async fn create(
        &self,
        dirid: &FileHandleU64,
        filename: &filename3<'_>,
        attr: sattr3,
    ) -> Result<(FileHandleU64, fattr3), nfsstat3> {
        let dir = dirid.as_u64();
        let name = filename.as_ref().to_vec();
        let (ino, attr) = self.run(move |fs| fs.create(dir, &name, &attr)).await?;
        Ok((FileHandleU64::new(ino), attr))
    }

    async fn create_exclusive(
        &self,
        dirid: &FileHandleU64,
        filename: &filename3<'_>,
        createverf: createverf3,
    ) -> Result<FileHandleU64, nfsstat3> {
        let dir = dirid.as_u64();
        let name = filename.as_ref().to_vec();
        self.run(move |fs| fs.create_exclusive(dir, &name, &createverf))
            .await
            .map(FileHandleU64::new)
    }

    async fn mkdir(
        &self,
        dirid: &FileHandleU64,
        dirname: &filename3<'_>,
    ) -> Result<(FileHandleU64, fattr3), nfsstat3> {
        let dir = dirid.as_u64();
        let name = dirname.as_ref().to_vec();
        let (ino, attr) = self.run(move |fs| fs.mkdir(dir, &name)).await?;
        Ok((FileHandleU64::new(ino), attr))
    }

    async fn remove(
        &self,
        dirid: &FileHandleU64,
        filename: &filename3<'_>,
    ) -> Result<(), nfsstat3> {
        let dir = dirid.as_u64();
        let name = filename.as_ref().to_vec();
        self.run(move |fs| fs.remove(dir, &name)).await
    }

    async fn rename<'a>(
        &self,
        from_dirid: &FileHandleU64,
        from_filename: &filename3<'a>,
        to_dirid: &FileHandleU64,
        to_filename: &filename3<'a>,
    ) -> Result<(), nfsstat3> {
        let (from_dir, to_dir) = (from_dirid.as_u64(), to_dirid.as_u64());
        let from_name = from_filename.as_ref().to_vec();
        let to_name = to_filename.as_ref().to_vec();
        self.run(move |fs| fs.rename(from_dir, &from_name, to_dir, &to_name))
            .await
    }

    async fn symlink<'a>(
        &self,
        dirid: &FileHandleU64,
        linkname: &filename3<'a>,
        symlink: &nfspath3<'a>,
        attr: &sattr3,
    ) -> Result<(FileHandleU64, fattr3), nfsstat3> {
        let dir = dirid.as_u64();
        let name = linkname.as_ref().to_vec();
        let target = symlink.as_ref().to_vec();
        let attr = attr.clone();
        let (ino, attr) = self
            .run(move |fs| fs.symlink(dir, &name, &target, &attr))
            .await?;
        Ok((FileHandleU64::new(ino), attr))
    }

    async fn commit(&self, id: &FileHandleU64, _offset: u64, _count: u32) -> Result<(), nfsstat3> {
        let ino = id.as_u64();
        self.run(move |fs| fs.commit(ino)).await
    }
}

/// A single path component a client may create or look up.
fn check_name(name: &[u8]) -> Result<&OsStr, nfsstat3> {
    if name.len() > NAME_MAX {
        return Err(nfsstat3::NFS3ERR_NAMETOOLONG);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(nfsstat3::NFS3ERR_INVAL);
    }
    Ok(OsStr::from_bytes(name))
}

fn regular(stat: &Stat) -> Result<(), nfsstat3> {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => Ok(()),
        FileType::Directory => Err(nfsstat3::NFS3ERR_ISDIR),
        _ => Err(nfsstat3::NFS3ERR_INVAL),
    }
}

/// Mode, owner, size and times of a SETATTR or CREATE, applied through a
/// descriptor of the object (never a path that could be swapped).
fn apply_to_fd(fd: &OwnedFd, attr: &sattr3) -> Result<(), nfsstat3> {
    let (uid, gid) = owner(attr)?;
    // Owner before mode: chown clears set-id bits the mode may set.
    if uid.is_some() || gid.is_some() {
        rfs::fchown(fd, uid, gid).map_err(from_errno)?;
    }
    if let set_mode3::Some(mode) = attr.mode {
        rfs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777)).map_err(from_errno)?;
    }
    if let set_size3::Some(size) = attr.size {
        rfs::ftruncate(fd, size).map_err(from_errno)?;
    }
    if let Some(times) = timestamps(attr) {
        rfs::futimens(fd, &times).map_err(from_errno)?;
    }
    Ok(())
}

fn owner(attr: &sattr3) -> Result<(Option<rfs::Uid>, Option<rfs::Gid>), nfsstat3> {
    // u32::MAX is -1, "no change" to chown, which rustix refuses to build.
    let uid = match attr.uid {
        set_uid3::Some(u32::MAX) => return Err(nfsstat3::NFS3ERR_INVAL),
        set_uid3::Some(uid) => Some(rfs::Uid::from_raw(uid)),
        set_uid3::None => None,
    };
    let gid = match attr.gid {
        set_gid3::Some(u32::MAX) => return Err(nfsstat3::NFS3ERR_INVAL),
        set_gid3::Some(gid) => Some(rfs::Gid::from_raw(gid)),
        set_gid3::None => None,
    };
    Ok((uid, gid))
}

/// The times a SETATTR asks for, or `None` when it leaves both alone.
fn timestamps(attr: &sattr3) -> Option<rfs::Timestamps> {
    let omit = Timespec {
        tv_sec: 0,
        tv_nsec: rfs::UTIME_OMIT,
    };
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: rfs::UTIME_NOW,
    };
    let at = |t: nfstime3| Timespec {
        tv_sec: i64::from(t.seconds),
        tv_nsec: t.nseconds.min(999_999_999).into(),
    };
    let last_access = match attr.atime {
        set_atime::DONT_CHANGE => omit,
        set_atime::SET_TO_SERVER_TIME => now,
        set_atime::SET_TO_CLIENT_TIME(t) => at(t),
    };
    let last_modification = match attr.mtime {
        set_mtime::DONT_CHANGE => omit,
        set_mtime::SET_TO_SERVER_TIME => now,
        set_mtime::SET_TO_CLIENT_TIME(t) => at(t),
    };
    let unchanged = matches!(attr.atime, set_atime::DONT_CHANGE)
        && matches!(attr.mtime, set_mtime::DONT_CHANGE);
    (!unchanged).then_some(rfs::Timestamps {
        last_access,
        last_modification,
    })
}

/// The time an exclusive CREATE's verifier is stored as.
fn verifier_time(verf: &createverf3) -> Timespec {
    let [a, b, c, d, e, f, g, h] = verf.0;
    Timespec {
        tv_sec: i64::from(u32::from_be_bytes([a, b, c, d])),
        tv_nsec: i64::from(u32::from_be_bytes([e, f, g, h]) % 1_000_000_000),
    }
}

fn ftype(kind: FileType) -> ftype3 {
    match kind {
        FileType::Directory => ftype3::NF3DIR,
        FileType::Symlink => ftype3::NF3LNK,
        FileType::BlockDevice => ftype3::NF3BLK,
        FileType::CharacterDevice => ftype3::NF3CHR,
        FileType::Fifo => ftype3::NF3FIFO,
        FileType::Socket => ftype3::NF3SOCK,
        FileType::RegularFile | FileType::Unknown => ftype3::NF3REG,
    }
}

fn nfstime(seconds: i64, nanos: impl TryInto<u32>) -> nfstime3 {
    nfstime3 {
        // NFSv3 times are unsigned 32-bit: before 1970 reads as 1970.
        seconds: u32::try_from(seconds.max(0)).unwrap_or(u32::MAX),
        nseconds: nanos.try_into().unwrap_or(0),
    }
}

fn fattr(stat: &Stat) -> fattr3 {
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    fattr3 {
        type_: ftype(FileType::from_raw_mode(stat.st_mode)),
        mode: stat.st_mode & 0o7777,
        nlink: u32::try_from(stat.st_nlink).unwrap_or(u32::MAX),
        uid: stat.st_uid,
        gid: stat.st_gid,
        size,
        used: u64::try_from(stat.st_blocks)
            .unwrap_or(0)
            .saturating_mul(512),
        rdev: specdata3 {
            specdata1: rfs::major(stat.st_rdev),
            specdata2: rfs::minor(stat.st_rdev),
        },
        fsid: stat.st_dev,
        fileid: stat.st_ino,
        atime: nfstime(stat.st_atime, stat.st_atime_nsec),
        mtime: nfstime(stat.st_mtime, stat.st_mtime_nsec),
        ctime: nfstime(stat.st_ctime, stat.st_ctime_nsec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(dir: &Path) -> LocalFs {
        LocalFs::open(dir, false).unwrap()
    }

    #[test]
    fn names_that_would_leave_the_directory_are_refused() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert_eq!(check_name(bad), Err(nfsstat3::NFS3ERR_INVAL), "{bad:?}");
        }
        assert_eq!(
            check_name(&[b'x'; NAME_MAX + 1]),
            Err(nfsstat3::NFS3ERR_NAMETOOLONG)
        );
        assert!(check_name(b"ok.txt").is_ok());
    }

    #[test]
    fn lookups_do_not_follow_symlinks_out_of_the_export() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        let export = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), export.path().join("escape")).unwrap();
        let fs = fs(export.path());
        let link = fs.0.lookup(fs.0.root_ino, b"escape").unwrap();
        assert_eq!(fs.0.lookup(link, b"secret"), Err(nfsstat3::NFS3ERR_NOTDIR));
        assert_eq!(
            fs.0.readlink(link).unwrap(),
            outside.path().as_os_str().as_bytes()
        );
        assert_eq!(fs.0.read(link, 0, 10), Err(nfsstat3::NFS3ERR_INVAL));
        assert_eq!(fs.0.lookup(fs.0.root_ino, b"..").unwrap(), fs.0.root_ino);
    }

    #[test]
    fn handles_survive_renames_behind_the_servers_back() {
        let export = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(export.path().join("a/b")).unwrap();
        std::fs::write(export.path().join("a/b/f"), b"hello").unwrap();
        let fs = fs(export.path());
        let a = fs.0.lookup(fs.0.root_ino, b"a").unwrap();
        let b = fs.0.lookup(a, b"b").unwrap();
        let f = fs.0.lookup(b, b"f").unwrap();
        std::fs::rename(export.path().join("a"), export.path().join("z")).unwrap();
        assert_eq!(fs.0.read(f, 0, 100).unwrap(), (b"hello".to_vec(), true));
        // A fresh server knows nothing and still finds it: handles are inodes.
        let fresh = self::fs(export.path());
        assert_eq!(fresh.0.read(f, 1, 2).unwrap(), (b"el".to_vec(), false));
        std::fs::remove_file(export.path().join("z/b/f")).unwrap();
        assert_eq!(fresh.0.getattr(f).unwrap_err(), nfsstat3::NFS3ERR_STALE);
        // Stale stays stale without another walk, until a lookup sees it.
        assert_eq!(fresh.0.getattr(f).unwrap_err(), nfsstat3::NFS3ERR_STALE);
    }

    #[test]
    fn rename_moves_what_is_below_a_directory() {
        let export = tempfile::tempdir().unwrap();
        let fs = fs(export.path());
        let root = fs.0.root_ino;
        let (d, _) = fs.0.mkdir(root, b"d").unwrap();
        let (f, _) = fs.0.create(d, b"f", &sattr3::default()).unwrap();
        fs.0.write(f, 0, b"data", stable_how::FILE_SYNC).unwrap();
        fs.0.rename(root, b"d", root, b"e").unwrap();
        let table = fs.0.read_table();
        assert_eq!(table.paths.get(&f), Some(&PathBuf::from("e/f")));
        drop(table);
        assert_eq!(std::fs::read(export.path().join("e/f")).unwrap(), b"data");
        fs.0.remove(root, b"e").unwrap_err();
        fs.0.remove(fs.0.lookup(root, b"e").unwrap(), b"f").unwrap();
        fs.0.remove(root, b"e").unwrap();
        assert!(!export.path().join("e").exists());
    }

    #[test]
    fn exclusive_create_is_idempotent_for_its_own_verifier() {
        let export = tempfile::tempdir().unwrap();
        let fs = fs(export.path());
        let root = fs.0.root_ino;
        let verf = createverf3([1, 2, 3, 4, 5, 6, 7, 8]);
        let first = fs.0.create_exclusive(root, b"x", &verf).unwrap();
        assert_eq!(fs.0.create_exclusive(root, b"x", &verf).unwrap(), first);
        let other = createverf3([9; 8]);
        assert_eq!(
            fs.0.create_exclusive(root, b"x", &other),
            Err(nfsstat3::NFS3ERR_EXIST)
        );
    }

    #[test]
    fn setattr_truncates_and_sets_mode_and_times() {
        let export = tempfile::tempdir().unwrap();
        std::fs::write(export.path().join("f"), b"0123456789").unwrap();
        let fs = fs(export.path());
        let f = fs.0.lookup(fs.0.root_ino, b"f").unwrap();
        let attr = sattr3 {
            mode: set_mode3::Some(0o600),
            size: set_size3::Some(4),
            mtime: set_mtime::SET_TO_CLIENT_TIME(nfstime3 {
                seconds: 1_000_000,
                nseconds: 5,
            }),
            ..sattr3::default()
        };
        let after = fs.0.setattr(f, &attr).unwrap();
        assert_eq!((after.size, after.mode), (4, 0o600));
        assert_eq!(after.mtime.seconds, 1_000_000);
        assert_eq!(std::fs::read(export.path().join("f")).unwrap(), b"0123");
    }

    #[test]
    fn a_read_only_export_refuses_changes() {
        let export = tempfile::tempdir().unwrap();
        std::fs::write(export.path().join("f"), b"x").unwrap();
        let fs = LocalFs::open(export.path(), true).unwrap();
        let root = fs.0.root_ino;
        let f = fs.0.lookup(root, b"f").unwrap();
        assert_eq!(
            fs.0.write(f, 0, b"y", stable_how::UNSTABLE).unwrap_err(),
            nfsstat3::NFS3ERR_ROFS
        );
        assert_eq!(fs.0.mkdir(root, b"d").unwrap_err(), nfsstat3::NFS3ERR_ROFS);
        assert_eq!(fs.0.remove(root, b"f").unwrap_err(), nfsstat3::NFS3ERR_ROFS);
        assert_eq!(fs.0.read(f, 0, 1).unwrap(), (b"x".to_vec(), true));
    }
}
