//! The client's file system: FUSE requests from the kernel turned into
//! NFSv3 calls.
//!
//! FUSE inode numbers are the server's file ids (inode numbers of the
//! exported files), with the export root swapped to FUSE's fixed root id
//! 1, so `stat` shows the same numbers on both sides.
//!
//! Small sequential writes are gathered per file into calls of the
//! server's write size (the kernel's own write-back cache would do that,
//! but it then ignores file sizes the server reports, so a file another
//! client grew would never grow here). Full-size calls go out from
//! background threads, a few per file at once, so the application fills
//! the next while the server stores the previous ones. Everything written
//! is sent before anything that reads the file or its attributes, and when
//! it is closed or synced. Writes go out `UNSTABLE` and are committed on
//! `fsync`, `close` and release, as the kernel's NFS client does; a changed
//! write verifier at commit time means the server restarted and lost them,
//! which the caller sees as `EIO`. Errors of writes already acknowledged to
//! the application surface at its next write, `fsync` or `close`, as with
//! NFS.
//!
//! Attributes and names are cached by the kernel for [`TTL`]; file data
//! stays in the kernel's page cache across opens for as long as the file's
//! modification time and size on the server are those the cache was filled
//! from (NFS's close-to-open consistency).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use nfs3_types::nfs3::{
    cookieverf3, createhow3, diropargs3, fattr3, filename3, ftype3, nfs_fh3, nfspath3, nfstime3,
    post_op_attr, post_op_fh3, pre_op_attr, sattr3, set_atime, set_gid3, set_mode3, set_mtime,
    set_size3, set_uid3, stable_how, symlinkdata3, wcc_data, writeverf3, COMMIT3args, CREATE3args,
    FSSTAT3args, GETATTR3args, LOOKUP3args, MKDIR3args, Nfs3Option, READ3args, READDIRPLUS3args,
    READLINK3args, REMOVE3args, RENAME3args, RMDIR3args, SETATTR3args, SYMLINK3args, WRITE3args,
    WRITE3resok,
};
use nfs3_types::xdr_codec::{Opaque, Pack, Unpack};
use rustix::fs::OFlags;

use crate::rpc::{block_on, Rpc};

/// How long the kernel may trust attributes and names without asking:
/// close to the Linux NFS client's minimum attribute cache time, so that
/// changes made by other clients show within a second.
const TTL: Duration = Duration::from_secs(1);

/// READDIRPLUS reply sizes: names per call, and bytes with attributes.
const DIR_COUNT: u32 = 64 * 1024;
const DIR_MAX: u32 = 512 * 1024;

pub(crate) struct NfsFuse {
    rpc: Arc<Rpc>,
    read_only: bool,
    root_fileid: u64,
    rsize: u32,
    wsize: u32,
    /// What the kernel holds a reference to, by FUSE inode number.
    nodes: RwLock<HashMap<u64, Node>>,
    /// Directory listings taken at `opendir`, by handle.
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    /// Write state of files written through this mount, by inode.
    writes: Mutex<HashMap<u64, Arc<WriteState>>>,
    next_handle: AtomicU64,
}

struct Node {
    fh: nfs_fh3,
    lookups: u64,
    /// The version of the file the kernel's cached pages hold.
    cached: Option<Version>,
}

/// What tells one content of a file from another: mtime and size.
type Version = (nfstime3, u64);

struct DirEntry {
    ino: u64,
    kind: FileType,
    name: OsString,
}

#[derive(Default)]
struct WriteState {
    writes: Mutex<Writes>,
    /// Signalled when a background send finishes.
    sent: Condvar,
}

#[derive(Default)]
struct Writes {
    /// Bytes written and not yet sent: where they start, and the bytes.
    gathered: Option<(u64, Vec<u8>)>,
    /// Full-size sends running in the background, and where the last one
    /// ends: only the next sequential one may join them.
    in_flight: usize,
    flight_end: u64,
    /// The first failure of a background send, for the next write, fsync
    /// or close to report.
    failed: Option<Errno>,
    /// Verifier of the server that took writes not yet committed.
    uncommitted: Option<writeverf3>,
    /// Uncommitted writes went to a server that has since restarted.
    lost: bool,
}

impl Writes {
    fn took(&mut self, verf: writeverf3) {
        if self.uncommitted.is_some_and(|v| v != verf) {
            self.lost = true;
        }
        self.uncommitted = Some(verf);
    }
}

/// Full-size writes of one file sent at once: the application fills the
/// next while the server stores the previous ones.
const MAX_IN_FLIGHT: usize = 4;

impl NfsFuse {
    pub(crate) fn new(
        rpc: Arc<Rpc>,
        root: nfs_fh3,
        root_fileid: u64,
        rsize: u32,
        wsize: u32,
        read_only: bool,
    ) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            INodeNo::ROOT.0,
            Node {
                fh: root,
                lookups: 1,
                cached: None,
            },
        );
        Self {
            rpc,
            read_only,
            root_fileid,
            rsize,
            wsize,
            nodes: RwLock::new(nodes),
            dirs: Mutex::default(),
            writes: Mutex::default(),
            next_handle: AtomicU64::new(1),
        }
    }

    /// The FUSE inode number of a server file id.
    fn ino(&self, fileid: u64) -> u64 {
        if fileid == self.root_fileid {
            INodeNo::ROOT.0
        } else if fileid == INodeNo::ROOT.0 {
            self.root_fileid
        } else {
            fileid
        }
    }

    fn fh(&self, ino: INodeNo) -> Result<nfs_fh3, Errno> {
        read(&self.nodes)
            .get(&ino.0)
            .map(|node| node.fh.clone())
            .ok_or(Errno::ESTALE)
    }

    /// Records a reference the kernel now holds (an entry it was given).
    fn remember(&self, fh: nfs_fh3, attr: &fattr3) -> FileAttr {
        let attr = self.attr(attr);
        let mut nodes = write(&self.nodes);
        let node = nodes.entry(attr.ino.0).or_insert(Node {
            fh: fh.clone(),
            lookups: 0,
            cached: None,
        });
        node.fh = fh;
        node.lookups += 1;
        attr
    }

    fn attr(&self, a: &fattr3) -> FileAttr {
        let kind = file_type(a.type_);
        FileAttr {
            ino: INodeNo(self.ino(a.fileid)),
            size: a.size,
            blocks: a.used.div_ceil(512),
            atime: time(a.atime),
            mtime: time(a.mtime),
            ctime: time(a.ctime),
            crtime: time(a.ctime),
            kind,
            perm: u16::try_from(a.mode & 0o7777).unwrap_or(0),
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: u32::try_from(rustix::fs::makedev(a.rdev.specdata1, a.rdev.specdata2))
                .unwrap_or(0),
            // stdio and cp size their buffers by st_blksize: a large one
            // turns into large NFS calls.
            blksize: self.wsize,
            flags: 0,
        }
    }

    /// The attributes a reply carried, or a GETATTR when it carried none.
    fn attr_of(&self, post: post_op_attr, fh: &nfs_fh3) -> Result<fattr3, Errno> {
        match post {
            post_op_attr::Some(attr) => Ok(attr),
            post_op_attr::None => self.getattr_fh(fh),
        }
    }

    fn getattr_fh(&self, fh: &nfs_fh3) -> Result<fattr3, Errno> {
        let args = GETATTR3args { object: fh.clone() };
        let ok = self.rpc.call("GETATTR", |c| block_on(c.getattr(&args)))?;
        Ok(ok.obj_attributes)
    }

    fn lookup_fh(&self, dir: &nfs_fh3, name: &OsStr) -> Result<(nfs_fh3, fattr3), Errno> {
        let args = LOOKUP3args {
            what: dirop(dir, name),
        };
        let ok = self.rpc.call("LOOKUP", |c| block_on(c.lookup(&args)))?;
        let attr = self.attr_of(ok.obj_attributes, &ok.object)?;
        Ok((ok.object, attr))
    }

    /// The new object of a CREATE, MKDIR or SYMLINK reply, looked up by
    /// name when the reply left it out.
    fn created(
        &self,
        obj: post_op_fh3,
        attr: post_op_attr,
        dir: &nfs_fh3,
        name: &OsStr,
    ) -> Result<(nfs_fh3, fattr3), Errno> {
        match obj {
            post_op_fh3::Some(fh) => {
                let attr = self.attr_of(attr, &fh)?;
                Ok((fh, attr))
            }
            post_op_fh3::None => self.lookup_fh(dir, name),
        }
    }

    fn writable(&self) -> Result<(), Errno> {
        if self.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    fn new_handle(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    fn do_lookup(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let (fh, mut attr) = self.lookup_fh(&self.fh(parent)?, name)?;
        let ino = INodeNo(self.ino(attr.fileid));
        if lock(&self.writes).contains_key(&ino.0) {
            // The size the kernel is told must include gathered bytes.
            self.send_writes(ino)?;
            attr = self.getattr_fh(&fh)?;
        }
        Ok(self.remember(fh, &attr))
    }

    fn do_getattr(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        self.send_writes(ino)?;
        Ok(self.attr(&self.getattr_fh(&self.fh(ino)?)?))
    }

    fn do_setattr(&self, ino: INodeNo, change: sattr3) -> Result<FileAttr, Errno> {
        self.writable()?;
        // Gathered bytes belong before a truncation or a new mtime.
        self.send_writes(ino)?;
        let fh = self.fh(ino)?;
        let args = SETATTR3args {
            object: fh.clone(),
            new_attributes: change,
            guard: Nfs3Option::None,
        };
        let ok = self.rpc.call("SETATTR", |c| block_on(c.setattr(&args)))?;
        self.changed(ino, &ok.obj_wcc);
        Ok(self.attr(&self.attr_of(ok.obj_wcc.after, &fh)?))
    }

    /// Opens a file, keeping the kernel's cached pages only if the file on
    /// the server is still the version they were read from.
    fn do_open(&self, ino: INodeNo) -> Result<(u64, FopenFlags), Errno> {
        self.send_writes(ino)?;
        let attr = self.getattr_fh(&self.fh(ino)?)?;
        let now = version(&attr);
        let keep = write(&self.nodes)
            .get_mut(&ino.0)
            .is_some_and(|node| node.cached.replace(now) == Some(now));
        let handle = self.new_handle();
        let flags = if keep {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        Ok((handle, flags))
    }

    /// Follows a change this client made: the cache stays valid if the
    /// file was the cached version just before it (else someone else
    /// changed it too, and the next open reads afresh).
    fn changed(&self, ino: INodeNo, wcc: &wcc_data) {
        if let Some(node) = write(&self.nodes).get_mut(&ino.0) {
            node.cached = match (&wcc.before, &wcc.after, node.cached) {
                (pre_op_attr::Some(before), post_op_attr::Some(after), Some(cached))
                    if (before.mtime, before.size) == cached =>
                {
                    Some(version(after))
                }
                _ => None,
            };
        }
    }

    fn do_read(&self, ino: INodeNo, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        self.send_writes(ino)?;
        let fh = self.fh(ino)?;
        let mut out: Vec<u8> = Vec::new();
        let mut done = 0u32;
        while done < size {
            let args = READ3args {
                file: fh.clone(),
                offset: offset + u64::from(done),
                count: (size - done).min(self.rsize),
            };
            let ok = self.rpc.call("READ", |c| block_on(c.read(&args)))?;
            let got = u32::try_from(ok.data.len()).map_err(|_| Errno::EIO)?;
            let eof = ok.eof || got == 0;
            if out.is_empty() && (eof || got == size) {
                // One call answered it all: hand its buffer on uncopied.
                return Ok(ok.data.into_owned());
            }
            out.extend_from_slice(&ok.data);
            done += got;
            if eof {
                break;
            }
        }
        Ok(out)
    }

    fn writes(&self, ino: INodeNo) -> Arc<WriteState> {
        Arc::clone(lock(&self.writes).entry(ino.0).or_default())
    }

    fn do_write(&self, ino: INodeNo, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        self.writable()?;
        let written = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        let wsize = usize::try_from(self.wsize).unwrap_or(usize::MAX);
        let state = self.writes(ino);
        let mut writes = lock(&state.writes);
        if let Some(e) = writes.failed.take() {
            return Err(e);
        }
        if let Some((start, gathered)) = &mut writes.gathered {
            if *start + gathered.len() as u64 == offset && gathered.len() + data.len() <= wsize {
                gathered.extend_from_slice(data);
                if gathered.len() == wsize {
                    if let Some((start, full)) = writes.gathered.take() {
                        drop(self.send_behind(ino, &state, writes, start, full)?);
                    }
                }
                return Ok(written);
            }
        }
        if let Some((start, gathered)) = writes.gathered.take() {
            writes = self.send_behind(ino, &state, writes, start, gathered)?;
        }
        if data.len() >= wsize {
            drop(self.send_behind(ino, &state, writes, offset, data.to_vec())?);
        } else {
            let mut gathered = Vec::with_capacity(wsize);
            gathered.extend_from_slice(data);
            writes.gathered = Some((offset, gathered));
        }
        Ok(written)
    }

    /// Sends bytes from a background thread, after the sends before them
    /// unless they follow on sequentially: writes to the same bytes must
    /// reach the server in order.
    fn send_behind<'a>(
        &self,
        ino: INodeNo,
        state: &'a Arc<WriteState>,
        writes: MutexGuard<'a, Writes>,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<MutexGuard<'a, Writes>, Errno> {
        let mut writes = state
            .sent
            .wait_while(writes, |w| {
                w.in_flight >= MAX_IN_FLIGHT || (w.in_flight > 0 && w.flight_end != offset)
            })
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = writes.failed.take() {
            return Err(e);
        }
        let fh = self.fh(ino)?;
        // The page cache holds these bytes, but which server version they
        // make depends on the order the sends land in: read afresh next
        // time.
        if let Some(node) = write(&self.nodes).get_mut(&ino.0) {
            node.cached = None;
        }
        writes.in_flight += 1;
        writes.flight_end = offset + data.len() as u64;
        let job = {
            let (rpc, state, wsize) = (Arc::clone(&self.rpc), Arc::clone(state), self.wsize);
            move || {
                let mut verfs = Vec::new();
                let result = send_chunks(&rpc, &fh, offset, &data, wsize, |ok| {
                    if ok.committed == stable_how::UNSTABLE {
                        verfs.push(ok.verf);
                    }
                });
                let mut writes = lock(&state.writes);
                for verf in verfs {
                    writes.took(verf);
                }
                if let Err(e) = result {
                    writes.failed.get_or_insert(e);
                }
                writes.in_flight -= 1;
                state.sent.notify_all();
            }
        };
        let spawned = std::thread::Builder::new()
            .name("cove-nfs-write".into())
            .spawn(job);
        if spawned.is_err() {
            writes.in_flight -= 1;
            return Err(Errno::EAGAIN);
        }
        Ok(writes)
    }

    /// Waits for background sends, then sends what was gathered, so that
    /// the server has every byte written so far. A failure is returned if
    /// `report` (fsync, close), else kept for them: a read or a stat is no
    /// place to learn that a write was lost, and must not swallow it.
    fn drain<'a>(
        &self,
        ino: INodeNo,
        state: &'a WriteState,
        report: bool,
    ) -> Result<MutexGuard<'a, Writes>, Errno> {
        let mut writes = state
            .sent
            .wait_while(lock(&state.writes), |w| w.in_flight > 0)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((offset, data)) = writes.gathered.take() {
            let mut verfs = Vec::new();
            let sent = self.fh(ino).and_then(|fh| {
                send_chunks(&self.rpc, &fh, offset, &data, self.wsize, |ok| {
                    self.changed(ino, &ok.file_wcc);
                    if ok.committed == stable_how::UNSTABLE {
                        verfs.push(ok.verf);
                    }
                })
            });
            for verf in verfs {
                writes.took(verf);
            }
            if let Err(e) = sent {
                writes.failed.get_or_insert(e);
            }
        }
        if report {
            if let Some(e) = writes.failed.take() {
                return Err(e);
            }
        }
        Ok(writes)
    }

    /// Sends the bytes written to a file and not yet sent, so that the
    /// server's answers about it (data, size, times) include them.
    fn send_writes(&self, ino: INodeNo) -> Result<(), Errno> {
        let Some(state) = lock(&self.writes).get(&ino.0).cloned() else {
            return Ok(());
        };
        self.drain(ino, &state, false).map(drop)
    }

    /// Sends what was gathered and makes all of a file's writes durable on
    /// the server.
    fn commit(&self, ino: INodeNo) -> Result<(), Errno> {
        let Some(state) = lock(&self.writes).get(&ino.0).cloned() else {
            return Ok(());
        };
        let mut writes = self.drain(ino, &state, true)?;
        let lost = std::mem::take(&mut writes.lost);
        let Some(verf) = writes.uncommitted.take() else {
            return Ok(());
        };
        let args = COMMIT3args {
            file: self.fh(ino)?,
            offset: 0,
            count: 0,
        };
        let ok = self.rpc.call("COMMIT", |c| block_on(c.commit(&args)))?;
        if lost || ok.verf != verf {
            tracing::error!(
                ino = ino.0,
                "nfs server restarted before a commit; writes lost"
            );
            return Err(Errno::EIO);
        }
        Ok(())
    }

    /// Forgets a file's write state once nothing is left to send. Only
    /// when the kernel forgets the inode: while it is open, a writer may
    /// hold the state and gather into it.
    fn settle(&self, ino: INodeNo) {
        let mut all = lock(&self.writes);
        let idle = all.get(&ino.0).is_some_and(|state| {
            state
                .writes
                .try_lock()
                .is_ok_and(|w| w.gathered.is_none() && w.uncommitted.is_none() && w.in_flight == 0)
        });
        if idle {
            all.remove(&ino.0);
        }
    }

    fn do_create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(FileAttr, u64), Errno> {
        self.writable()?;
        let dir = self.fh(parent)?;
        let flags = OFlags::from_bits_retain(flags.cast_unsigned());
        let attr = sattr3 {
            mode: set_mode3::Some(mode & 0o7777),
            uid: set_uid3::Some(req.uid()),
            gid: set_gid3::Some(req.gid()),
            size: if flags.contains(OFlags::TRUNC) {
                set_size3::Some(0)
            } else {
                set_size3::None
            },
            ..sattr3::default()
        };
        let args = CREATE3args {
            where_: dirop(&dir, name),
            how: if flags.contains(OFlags::EXCL) {
                createhow3::GUARDED(attr)
            } else {
                createhow3::UNCHECKED(attr)
            },
        };
        let ok = self.rpc.call("CREATE", |c| block_on(c.create(&args)))?;
        let (fh, attr) = self.created(ok.obj, ok.obj_attributes, &dir, name)?;
        let handle = self.new_handle();
        let fuse_attr = self.remember(fh, &attr);
        if let Some(node) = write(&self.nodes).get_mut(&fuse_attr.ino.0) {
            node.cached = Some(version(&attr));
        }
        Ok((fuse_attr, handle))
    }

    fn do_mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
    ) -> Result<FileAttr, Errno> {
        self.writable()?;
        let dir = self.fh(parent)?;
        let owner = sattr3 {
            mode: set_mode3::Some(mode & 0o7777),
            uid: set_uid3::Some(req.uid()),
            gid: set_gid3::Some(req.gid()),
            ..sattr3::default()
        };
        let args = MKDIR3args {
            where_: dirop(&dir, name),
            attributes: owner.clone(),
        };
        let ok = self.rpc.call("MKDIR", |c| block_on(c.mkdir(&args)))?;
        let (fh, _) = self.created(ok.obj, ok.obj_attributes, &dir, name)?;
        // nfs3_server drops MKDIR's attributes; set them as a second call.
        let args = SETATTR3args {
            object: fh.clone(),
            new_attributes: owner,
            guard: Nfs3Option::None,
        };
        let ok = self.rpc.call("SETATTR", |c| block_on(c.setattr(&args)))?;
        let attr = self.attr_of(ok.obj_wcc.after, &fh)?;
        Ok(self.remember(fh, &attr))
    }

    fn do_symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &OsStr,
    ) -> Result<FileAttr, Errno> {
        self.writable()?;
        let dir = self.fh(parent)?;
        let args = SYMLINK3args {
            where_: dirop(&dir, name),
            symlink: symlinkdata3 {
                symlink_attributes: sattr3 {
                    uid: set_uid3::Some(req.uid()),
                    gid: set_gid3::Some(req.gid()),
                    ..sattr3::default()
                },
                symlink_data: nfspath3(Opaque::borrowed(target.as_bytes())),
            },
        };
        let ok = self.rpc.call("SYMLINK", |c| block_on(c.symlink(&args)))?;
        let (fh, attr) = self.created(ok.obj, ok.obj_attributes, &dir, name)?;
        Ok(self.remember(fh, &attr))
    }

    fn do_remove(&self, parent: INodeNo, name: &OsStr, dir: bool) -> Result<(), Errno> {
        self.writable()?;
        let object = dirop(&self.fh(parent)?, name);
        if dir {
            let args = RMDIR3args { object };
            self.rpc.call("RMDIR", |c| block_on(c.rmdir(&args)))?;
        } else {
            let args = REMOVE3args { object };
            self.rpc.call("REMOVE", |c| block_on(c.remove(&args)))?;
        }
        Ok(())
    }

    fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        self.writable()?;
        let from = self.fh(parent)?;
        let to = self.fh(newparent)?;
        if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            // NFSv3 has no such rename; a lookup comes close (racy, as the
            // kernel's own NFS client is).
            match self.lookup_fh(&to, newname) {
                Ok(_) => return Err(Errno::EEXIST),
                Err(e) if e.code() == Errno::ENOENT.code() => {}
                Err(e) => return Err(e),
            }
        }
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return Err(Errno::EINVAL);
        }
        let args = RENAME3args {
            from: dirop(&from, name),
            to: dirop(&to, newname),
        };
        self.rpc.call("RENAME", |c| block_on(c.rename(&args)))?;
        Ok(())
    }

    fn do_opendir(&self, ino: INodeNo) -> Result<u64, Errno> {
        let fh = self.fh(ino)?;
        let mut entries = vec![
            DirEntry {
                ino: ino.0,
                kind: FileType::Directory,
                name: ".".into(),
            },
            DirEntry {
                ino: ino.0,
                kind: FileType::Directory,
                name: "..".into(),
            },
        ];
        let mut cookie = 0;
        let mut cookieverf = cookieverf3::default();
        loop {
            let args = READDIRPLUS3args {
                dir: fh.clone(),
                cookie,
                cookieverf,
                dircount: DIR_COUNT,
                maxcount: DIR_MAX,
            };
            let ok = self
                .rpc
                .call("READDIRPLUS", |c| block_on(c.readdirplus(&args)))?;
            cookieverf = ok.cookieverf;
            let page = ok.reply.entries.0;
            let empty = page.is_empty();
            for entry in page {
                cookie = entry.cookie;
                let kind = match &entry.name_attributes {
                    post_op_attr::Some(attr) => file_type(attr.type_),
                    post_op_attr::None => FileType::RegularFile,
                };
                entries.push(DirEntry {
                    ino: self.ino(entry.fileid),
                    kind,
                    name: OsString::from_vec(entry.name.0.into_owned()),
                });
            }
            if ok.reply.eof || empty {
                break;
            }
        }
        let handle = self.new_handle();
        lock(&self.dirs).insert(handle, Arc::new(entries));
        Ok(handle)
    }

    fn do_statfs(&self) -> Result<[u64; 5], Errno> {
        let args = FSSTAT3args {
            fsroot: self.fh(INodeNo::ROOT)?,
        };
        let ok = self.rpc.call("FSSTAT", |c| block_on(c.fsstat(&args)))?;
        let block = u64::from(STATFS_BLOCK);
        Ok([
            ok.tbytes / block,
            ok.fbytes / block,
            ok.abytes / block,
            ok.tfiles,
            ok.ffiles,
        ])
    }
}

const STATFS_BLOCK: u32 = 4096;

impl fuser::Filesystem for NfsFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Kernel requests as large as the server's transfer size: few, big
        // calls are what sequential throughput needs.
        let _ = config
            .set_max_write(self.wsize)
            .or_else(|max| config.set_max_write(max));
        let _ = config
            .set_max_readahead(self.rsize)
            .or_else(|max| config.set_max_readahead(max));
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino == INodeNo::ROOT {
            return;
        }
        let mut nodes = write(&self.nodes);
        if let Some(node) = nodes.get_mut(&ino.0) {
            node.lookups = node.lookups.saturating_sub(nlookup);
            if node.lookups == 0 {
                nodes.remove(&ino.0);
                drop(nodes);
                self.settle(ino);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.do_getattr(ino) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = sattr3 {
            mode: option(mode.map(|m| m & 0o7777)),
            uid: option(uid),
            gid: option(gid),
            size: option(size),
            atime: match atime {
                None => set_atime::DONT_CHANGE,
                Some(TimeOrNow::Now) => set_atime::SET_TO_SERVER_TIME,
                Some(TimeOrNow::SpecificTime(t)) => set_atime::SET_TO_CLIENT_TIME(nfs_time(t)),
            },
            mtime: match mtime {
                None => set_mtime::DONT_CHANGE,
                Some(TimeOrNow::Now) => set_mtime::SET_TO_SERVER_TIME,
                Some(TimeOrNow::SpecificTime(t)) => set_mtime::SET_TO_CLIENT_TIME(nfs_time(t)),
            },
        };
        match self.do_setattr(ino, change) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let result = self.fh(ino).and_then(|fh| {
            let args = READLINK3args { symlink: fh };
            self.rpc.call("READLINK", |c| block_on(c.readlink(&args)))
        });
        match result {
            Ok(ok) => reply.data(&ok.data.0),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.do_mkdir(req, parent, name, mode & !umask) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_remove(parent, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_remove(parent, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        match self.do_symlink(req, parent, link_name, target.as_os_str()) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.do_rename(parent, name, newparent, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.read_only && flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.do_open(ino) {
            Ok((handle, flags)) => reply.opened(FileHandle(handle), flags),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.do_read(ino, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.do_write(ino, offset, data) {
            Ok(written) => reply.written(written),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) reports what was lost: commit now, as NFS does on close.
        match self.commit(ino) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Writes through mmap can arrive after the last close.
        let result = self.commit(ino);
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.commit(ino) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.do_opendir(ino) {
            Ok(handle) => reply.opened(FileHandle(handle), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(entries) = lock(&self.dirs).get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, entry) in entries.iter().enumerate().skip(start) {
            if reply.add(INodeNo(entry.ino), i as u64 + 1, entry.kind, &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.dirs).remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // The server commits every namespace change before replying.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.do_statfs() {
            Ok([blocks, bfree, bavail, files, ffree]) => reply.statfs(
                blocks,
                bfree,
                bavail,
                files,
                ffree,
                STATFS_BLOCK,
                255,
                STATFS_BLOCK,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.do_create(req, parent, name, mode & !umask, flags) {
            Ok((attr, handle)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(handle),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }
}

/// WRITE calls for `data` at `offset`, at most `wsize` bytes each; `each`
/// sees every reply.
fn send_chunks(
    rpc: &Rpc,
    fh: &nfs_fh3,
    offset: u64,
    data: &[u8],
    wsize: u32,
    mut each: impl FnMut(&WRITE3resok),
) -> Result<(), Errno> {
    let wsize = usize::try_from(wsize).unwrap_or(usize::MAX);
    let mut done = 0usize;
    while done < data.len() {
        let chunk = &data[done..data.len().min(done + wsize)];
        let args = WRITE3args {
            file: fh.clone(),
            offset: offset + done as u64,
            count: u32::try_from(chunk.len()).map_err(|_| Errno::EINVAL)?,
            stable: stable_how::UNSTABLE,
            data: Opaque::borrowed(chunk),
        };
        let ok = rpc.call("WRITE", |c| block_on(c.write(&args)))?;
        each(&ok);
        if ok.count == 0 {
            return Err(Errno::EIO);
        }
        done += usize::try_from(ok.count).map_err(|_| Errno::EIO)?;
    }
    Ok(())
}

fn option<T: Pack + Unpack>(value: Option<T>) -> Nfs3Option<T> {
    value.map_or(Nfs3Option::None, Nfs3Option::Some)
}

fn dirop<'a>(dir: &nfs_fh3, name: &'a OsStr) -> diropargs3<'a> {
    diropargs3 {
        dir: dir.clone(),
        name: filename3(Opaque::borrowed(name.as_bytes())),
    }
}

fn version(attr: &fattr3) -> Version {
    (attr.mtime, attr.size)
}

fn file_type(kind: ftype3) -> FileType {
    match kind {
        ftype3::NF3REG => FileType::RegularFile,
        ftype3::NF3DIR => FileType::Directory,
        ftype3::NF3BLK => FileType::BlockDevice,
        ftype3::NF3CHR => FileType::CharDevice,
        ftype3::NF3LNK => FileType::Symlink,
        ftype3::NF3SOCK => FileType::Socket,
        ftype3::NF3FIFO => FileType::NamedPipe,
    }
}

fn time(t: nfstime3) -> SystemTime {
    UNIX_EPOCH + Duration::new(u64::from(t.seconds), t.nseconds.min(999_999_999))
}

fn nfs_time(t: SystemTime) -> nfstime3 {
    // Before 1970 and after 2106 do not fit NFSv3's unsigned seconds.
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    nfstime3 {
        seconds: u32::try_from(since.as_secs()).unwrap_or(u32::MAX),
        nseconds: since.subsec_nanos(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_clamp() {
        let t = nfstime3 {
            seconds: 1_700_000_000,
            nseconds: 123,
        };
        assert_eq!(nfs_time(time(t)), t);
        let before_1970 = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(nfs_time(before_1970).seconds, 0);
    }
}
