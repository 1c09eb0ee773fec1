//! lossfs: a power-loss filesystem for tests (the LazyFS model), mounted with FUSE.
//!
//! Everything a process writes is served back at once, but only what it made durable
//! survives a [`LossFs::cut`]:
//! - **File data** becomes durable at an `fsync`/`fdatasync` of that file: the dirty pages
//!   (4 KiB, held in memory, the volatile layer) are written to the file's backing object
//!   (`{backing}/objects/{ino}`, a real file that is itself fsynced) and the durable size
//!   becomes the live size. A truncate is volatile too until the next fsync.
//! - **Names** (create, mkdir, rename, unlink, rmdir) become durable at an fsync of their
//!   directory: that directory's durable entries become its live entries. Each directory is
//!   made durable on its own, so a rename across directories is durable on each side
//!   separately (after a cut the file may have both names, or neither if only the source
//!   was synced). fsync of a file never makes its name durable; fsync of a directory never
//!   makes a file's data durable.
//! - **A cut** happens at one instant: from it every request fails with EIO (the power is
//!   off, nothing more can become durable), the volatile layer is discarded (live := durable;
//!   files reachable from the root by no durable name are gone), the caller kills the
//!   process under test, and the filesystem is unmounted and mounted again (a reboot: no
//!   kernel cache survives either).
//! - Not modelled: modes, owners and times are not made durable separately (they survive a
//!   cut as they are); hard links, symlinks, xattrs and mmap'ed writes are refused.
//!
//! SD-card faults, armed with [`LossFs::faults`]: EIO on every read of files whose name
//! contains a pattern; a capacity (a write that does not fit is cut short, the next one
//! fails with ENOSPC); and a torn write at the next cut (the first bytes of the last write
//! not yet synced, ending inside a page, reach the medium).
//!
//! Kernel caching is off (`FOPEN_DIRECT_IO`, zero TTLs), so reads always see this layer.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

const PAGE: u64 = 4096;
const TTL: Duration = Duration::ZERO;
const ROOT: u64 = 1;

/// SD-card faults (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Reads of a file whose name contains this fail with EIO.
    pub eio_reading: Option<String>,
    /// Bytes of file data the card holds (live sizes summed); beyond it, ENOSPC.
    pub capacity: Option<u64>,
    /// At the next cut, the last unsynced write is torn: its first bytes (ending inside a
    /// page) become durable.
    pub torn_write_at_cut: bool,
}

/// What a cut discarded.
#[derive(Debug, Clone, Default)]
pub struct CutReport {
    /// Bytes of file data that were live but not durable.
    pub volatile_bytes: u64,
    /// Names (entries) that changed since their directory's last fsync.
    pub volatile_names: usize,
    /// Files gone because no durable name reached them.
    pub orphans: usize,
    /// `(file name, bytes)` of a torn write that reached the medium.
    pub torn: Option<(String, u64)>,
}

enum Kind {
    File {
        /// Live size.
        size: u64,
        /// Durable size (the backing object's length).
        durable: u64,
        /// Live bytes at or after this offset come from dirty pages or are zero (a truncate
        /// below the durable size, not yet synced).
        zero_from: u64,
        dirty: BTreeMap<u64, Box<[u8]>>,
    },
    Dir {
        live: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

struct Inode {
    kind: Kind,
    perm: u16,
    mtime: SystemTime,
    /// Its last name, for the read fault.
    name: OsString,
}

struct State {
    backing: PathBuf,
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    powered: bool,
    faults: Faults,
    /// Writes not yet synced, oldest first (ino, offset, len); the last 256.
    unsynced: Vec<(u64, u64, u64)>,
    /// Bumped at every cut: requests of an earlier boot's connection fail.
    generation: u64,
    cuts: u64,
}

fn err(e: i32) -> Errno {
    Errno::from_i32(e)
}

impl State {
    fn object(&self, ino: u64) -> PathBuf {
        self.backing.join("objects").join(ino.to_string())
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let i = self.inodes.get(&ino)?;
        let (kind, size, nlink) = match &i.kind {
            Kind::File { size, .. } => (FileType::RegularFile, *size, 1),
            Kind::Dir { live, .. } => (FileType::Directory, 4096, 2 + live.len() as u32),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: i.mtime,
            mtime: i.mtime,
            ctime: i.mtime,
            crtime: i.mtime,
            kind,
            perm: i.perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    /// Bytes of the files a live name reaches (unlinked and replaced files free their
    /// space; open descriptors of unlinked files are not counted).
    fn used(&self) -> u64 {
        let mut total = 0;
        let mut seen = BTreeSet::new();
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            if !seen.insert(ino) {
                continue;
            }
            match self.inodes.get(&ino).map(|i| &i.kind) {
                Some(Kind::File { size, .. }) => total += size,
                Some(Kind::Dir { live, .. }) => todo.extend(live.values().copied()),
                None => {}
            }
        }
        total
    }

    fn entries(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.inodes.get_mut(&dir).map(|i| &mut i.kind) {
            Some(Kind::Dir { live, .. }) => Ok(live),
            Some(_) => Err(err(libc::ENOTDIR)),
            None => Err(err(libc::ENOENT)),
        }
    }

    /// The live bytes of page `p` of file `ino` (zero beyond the live size).
    fn page(&self, ino: u64, p: u64) -> io::Result<Vec<u8>> {
        let Some(Inode {
            kind:
                Kind::File {
                    size,
                    durable,
                    zero_from,
                    dirty,
                },
            ..
        }) = self.inodes.get(&ino)
        else {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        };
        if let Some(d) = dirty.get(&p) {
            return Ok(d.to_vec());
        }
        let mut buf = vec![0u8; PAGE as usize];
        let start = p * PAGE;
        let end = (start + PAGE).min(*durable).min(*zero_from).min(*size);
        if end > start {
            let f = std::fs::File::open(self.object(ino))?;
            f.read_exact_at(&mut buf[..(end - start) as usize], start)?;
        }
        Ok(buf)
    }

    fn read(&self, ino: u64, off: u64, len: u64) -> io::Result<Vec<u8>> {
        let size = match self.inodes.get(&ino).map(|i| &i.kind) {
            Some(Kind::File { size, .. }) => *size,
            _ => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
        };
        let end = (off + len).min(size);
        let mut out = Vec::with_capacity(end.saturating_sub(off) as usize);
        let mut at = off;
        while at < end {
            let p = at / PAGE;
            let page = self.page(ino, p)?;
            let from = (at - p * PAGE) as usize;
            let to = ((end - p * PAGE).min(PAGE)) as usize;
            out.extend_from_slice(&page[from..to]);
            at = p * PAGE + to as u64;
        }
        Ok(out)
    }

    fn write(&mut self, ino: u64, off: u64, data: &[u8]) -> io::Result<()> {
        let mut at = off;
        let end = off + data.len() as u64;
        while at < end {
            let p = at / PAGE;
            let mut page = self.page(ino, p)?;
            let from = (at - p * PAGE) as usize;
            let to = ((end - p * PAGE).min(PAGE)) as usize;
            let src = (at - off) as usize;
            page[from..to].copy_from_slice(&data[src..src + (to - from)]);
            if let Some(Inode {
                kind: Kind::File { dirty, .. },
                ..
            }) = self.inodes.get_mut(&ino)
            {
                dirty.insert(p, page.into_boxed_slice());
            }
            at = p * PAGE + to as u64;
        }
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.mtime = SystemTime::now();
            if let Kind::File { size, .. } = &mut i.kind {
                *size = (*size).max(end);
            }
        }
        if self.unsynced.len() >= 256 {
            self.unsynced.remove(0);
        }
        self.unsynced.push((ino, off, data.len() as u64));
        Ok(())
    }

    fn truncate(&mut self, ino: u64, new: u64) -> Result<(), Errno> {
        let Some(Inode {
            kind:
                Kind::File {
                    size,
                    zero_from,
                    dirty,
                    ..
                },
            mtime,
            ..
        }) = self.inodes.get_mut(&ino)
        else {
            return Err(err(libc::EISDIR));
        };
        if new < *size {
            *zero_from = (*zero_from).min(new);
            let keep = new.div_ceil(PAGE);
            dirty.retain(|p, _| *p < keep);
            if let Some(d) = dirty.get_mut(&(new / PAGE)) {
                d[(new % PAGE) as usize..].fill(0);
            }
        }
        *size = new;
        *mtime = SystemTime::now();
        Ok(())
    }

    /// fsync of a file: its dirty pages and size reach the backing object.
    fn sync_file(&mut self, ino: u64) -> io::Result<()> {
        let path = self.object(ino);
        let Some(Inode {
            kind:
                Kind::File {
                    size,
                    durable,
                    zero_from,
                    dirty,
                },
            ..
        }) = self.inodes.get_mut(&ino)
        else {
            return Err(io::Error::from_raw_os_error(libc::ESTALE));
        };
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        if *zero_from < *durable {
            f.set_len(*zero_from)?;
            // Should a later step fail, the object is this long.
            *durable = *zero_from;
        }
        for (p, page) in dirty.iter() {
            let start = p * PAGE;
            let n = (*size - start).min(PAGE) as usize;
            f.write_all_at(&page[..n], start)?;
        }
        f.set_len(*size)?;
        f.sync_all()?;
        *durable = *size;
        *zero_from = *size;
        dirty.clear();
        self.unsynced.retain(|(i, _, _)| *i != ino);
        Ok(())
    }

    /// The power goes off: live := durable.
    fn discard(&mut self) -> CutReport {
        let mut report = CutReport::default();
        if self.faults.torn_write_at_cut {
            // The newest write not yet synced (the kernel may have split a large write(2)
            // into requests of up to 1 MiB: this is the last of them). Older unsynced writes
            // to the file are lost as usual, so the object may read zeros before the tear.
            if let Some((ino, off, len)) = self.unsynced.pop() {
                self.faults.torn_write_at_cut = false;
                // The first bytes of the write, ending inside a page (never on its edge).
                let mut keep = (len / 2).max(1);
                if (off + keep) % PAGE == 0 && keep > 1 {
                    keep -= 1;
                }
                if let Ok(bytes) = self.read(ino, off, keep) {
                    let path = self.object(ino);
                    let torn = (|| -> io::Result<u64> {
                        let f = std::fs::OpenOptions::new()
                            .create(true)
                            .truncate(false)
                            .write(true)
                            .open(&path)?;
                        f.write_all_at(&bytes, off)?;
                        f.sync_all()?;
                        Ok(f.metadata()?.len())
                    })();
                    if let (Ok(len), Some(i)) = (torn, self.inodes.get_mut(&ino)) {
                        if let Kind::File { durable, .. } = &mut i.kind {
                            *durable = len;
                        }
                        report.torn =
                            Some((i.name.to_string_lossy().into_owned(), bytes.len() as u64));
                    }
                }
            }
        }
        for i in self.inodes.values_mut() {
            match &mut i.kind {
                Kind::File {
                    size,
                    durable,
                    zero_from,
                    dirty,
                } => {
                    report.volatile_bytes += dirty
                        .keys()
                        .map(|p| size.saturating_sub(p * PAGE).min(PAGE))
                        .sum::<u64>();
                    *size = *durable;
                    *zero_from = *durable;
                    dirty.clear();
                }
                Kind::Dir { live, durable } => {
                    let names: BTreeSet<_> = live.iter().collect();
                    let kept: BTreeSet<_> = durable.iter().collect();
                    report.volatile_names += names.symmetric_difference(&kept).count();
                    *live = durable.clone();
                }
            }
        }
        // What the root reaches by durable names survives.
        let mut reach = BTreeSet::from([ROOT]);
        let mut todo = vec![ROOT];
        while let Some(d) = todo.pop() {
            if let Some(Inode {
                kind: Kind::Dir { durable, .. },
                ..
            }) = self.inodes.get(&d)
            {
                for ino in durable.values() {
                    if reach.insert(*ino) {
                        todo.push(*ino);
                    }
                }
            }
        }
        let gone: Vec<u64> = self
            .inodes
            .keys()
            .filter(|i| !reach.contains(i))
            .copied()
            .collect();
        for ino in gone {
            if let Some(Inode {
                kind: Kind::File { .. },
                ..
            }) = self.inodes.remove(&ino)
            {
                report.orphans += 1;
                let _ = std::fs::remove_file(self.object(ino));
            }
        }
        self.unsynced.clear();
        report
    }
}

/// One boot's connection: the state, and the generation it was mounted in.
#[derive(Clone)]
struct Fs(Arc<Mutex<State>>, u64);

impl Fs {
    fn on(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let s = self.0.lock().unwrap();
        if s.powered && s.generation == self.1 {
            Ok(s)
        } else {
            Err(err(libc::EIO))
        }
    }
}

fn io_errno(e: io::Error) -> Errno {
    err(e.raw_os_error().unwrap_or(libc::EIO))
}

macro_rules! on_or_reply {
    ($self:ident, $reply:ident) => {
        match $self.on() {
            Ok(s) => s,
            Err(e) => return $reply.error(e),
        }
    };
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = on_or_reply!(self, reply);
        let ino = match s.entries(parent.0) {
            Ok(e) => e.get(name).copied(),
            Err(e) => return reply.error(e),
        };
        match ino.and_then(|i| s.attr(i)) {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(err(libc::ENOENT)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = on_or_reply!(self, reply);
        match s.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(err(libc::ENOENT)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = on_or_reply!(self, reply);
        if let Some(new) = size {
            if let (Some(cap), Some(Kind::File { size: old, .. })) =
                (s.faults.capacity, s.inodes.get(&ino.0).map(|i| &i.kind))
            {
                if new > *old && s.used() + (new - old) > cap {
                    return reply.error(err(libc::ENOSPC));
                }
            }
            if let Err(e) = s.truncate(ino.0, new) {
                return reply.error(e);
            }
        }
        if let (Some(m), Some(i)) = (mode, s.inodes.get_mut(&ino.0)) {
            i.perm = (m & 0o7777) as u16;
        }
        match s.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(err(libc::ENOENT)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = on_or_reply!(self, reply);
        let kind = Kind::Dir {
            live: BTreeMap::new(),
            durable: BTreeMap::new(),
        };
        match s.make(parent.0, name, kind, mode) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = on_or_reply!(self, reply);
        let existing = match s.entries(parent.0) {
            Ok(e) => e.get(name).copied(),
            Err(e) => return reply.error(e),
        };
        let attr = match existing {
            Some(_) if flags & libc::O_EXCL != 0 => return reply.error(err(libc::EEXIST)),
            Some(ino) => {
                if flags & libc::O_TRUNC != 0 {
                    if let Err(e) = s.truncate(ino, 0) {
                        return reply.error(e);
                    }
                }
                s.attr(ino).ok_or(err(libc::ENOENT))
            }
            None => s.make(parent.0, name, Kind::new_file(), mode),
        };
        match attr {
            Ok(a) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let s = on_or_reply!(self, reply);
        if s.inodes.contains_key(&ino.0) {
            reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
        } else {
            reply.error(err(libc::ENOENT));
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
        let s = on_or_reply!(self, reply);
        if let (Some(pat), Some(i)) = (&s.faults.eio_reading, s.inodes.get(&ino.0)) {
            if i.name.to_string_lossy().contains(pat.as_str()) {
                return reply.error(err(libc::EIO));
            }
        }
        match s.read(ino.0, offset, size as u64) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(io_errno(e)),
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
        let mut s = on_or_reply!(self, reply);
        let mut data = data;
        if let (Some(cap), Some(Kind::File { size, .. })) =
            (s.faults.capacity, s.inodes.get(&ino.0).map(|i| &i.kind))
        {
            let grows = (offset + data.len() as u64).saturating_sub(*size);
            let free = cap.saturating_sub(s.used());
            if grows > free {
                // What fits is written (a short write); the rest fails with ENOSPC.
                let fits = (size + free).saturating_sub(offset) as usize;
                if fits == 0 {
                    return reply.error(err(libc::ENOSPC));
                }
                data = &data[..fits.min(data.len())];
            }
        }
        match s.write(ino.0, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(io_errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() makes nothing durable.
        let _s = on_or_reply!(self, reply);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = on_or_reply!(self, reply);
        match s.sync_file(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(io_errno(e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = on_or_reply!(self, reply);
        match s.inodes.get_mut(&ino.0).map(|i| &mut i.kind) {
            Some(Kind::Dir { live, durable }) => {
                *durable = live.clone();
                reply.ok()
            }
            _ => reply.error(err(libc::ENOTDIR)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = on_or_reply!(self, reply);
        let ino = match s.entries(parent.0) {
            Ok(e) => e.get(name).copied(),
            Err(e) => return reply.error(e),
        };
        match ino.map(|i| s.inodes.get(&i).map(|n| matches!(n.kind, Kind::Dir { .. }))) {
            None => reply.error(err(libc::ENOENT)),
            Some(Some(true)) => reply.error(err(libc::EISDIR)),
            _ => {
                if let Ok(e) = s.entries(parent.0) {
                    e.remove(name);
                }
                reply.ok()
            }
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = on_or_reply!(self, reply);
        let ino = match s.entries(parent.0) {
            Ok(e) => e.get(name).copied(),
            Err(e) => return reply.error(e),
        };
        let Some(ino) = ino else {
            return reply.error(err(libc::ENOENT));
        };
        match s.inodes.get(&ino).map(|i| &i.kind) {
            Some(Kind::Dir { live, .. }) if !live.is_empty() => reply.error(err(libc::ENOTEMPTY)),
            Some(Kind::Dir { .. }) => {
                if let Ok(e) = s.entries(parent.0) {
                    e.remove(name);
                }
                reply.ok()
            }
            _ => reply.error(err(libc::ENOTDIR)),
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
        let mut s = on_or_reply!(self, reply);
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(err(libc::EINVAL));
        }
        let ino = match s.entries(parent.0) {
            Ok(e) => e.get(name).copied(),
            Err(e) => return reply.error(e),
        };
        let Some(ino) = ino else {
            return reply.error(err(libc::ENOENT));
        };
        let target = match s.entries(newparent.0) {
            Ok(e) => e.get(newname).copied(),
            Err(e) => return reply.error(e),
        };
        if let Some(t) = target {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return reply.error(err(libc::EEXIST));
            }
            let src_dir = matches!(s.inodes.get(&ino).map(|i| &i.kind), Some(Kind::Dir { .. }));
            match s.inodes.get(&t).map(|i| &i.kind) {
                Some(Kind::Dir { live, .. }) if !src_dir || !live.is_empty() => {
                    return reply.error(err(if src_dir {
                        libc::ENOTEMPTY
                    } else {
                        libc::EISDIR
                    }));
                }
                Some(Kind::File { .. }) if src_dir => return reply.error(err(libc::ENOTDIR)),
                _ => {}
            }
        }
        if let Ok(e) = s.entries(parent.0) {
            e.remove(name);
        }
        if let Ok(e) = s.entries(newparent.0) {
            e.insert(newname.to_owned(), ino);
        }
        if let Some(i) = s.inodes.get_mut(&ino) {
            i.name = newname.to_owned();
        }
        reply.ok()
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut s = on_or_reply!(self, reply);
        let list: Vec<(u64, OsString)> = match s.entries(ino.0) {
            Ok(e) => e.iter().map(|(n, i)| (*i, n.clone())).collect(),
            Err(e) => return reply.error(e),
        };
        let mut all = vec![
            (ino.0, FileType::Directory, OsString::from(".")),
            (ROOT, FileType::Directory, OsString::from("..")),
        ];
        for (i, n) in list {
            let kind = match s.inodes.get(&i).map(|x| &x.kind) {
                Some(Kind::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((i, kind, n));
        }
        for (k, (i, kind, n)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(i), k as u64 + 1, kind, n) {
                break;
            }
        }
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = on_or_reply!(self, reply);
        let cap = s.faults.capacity.unwrap_or(1 << 40);
        let free = cap.saturating_sub(s.used()) / PAGE;
        reply.statfs(
            cap / PAGE,
            free,
            free,
            1 << 20,
            1 << 20,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(err(libc::EOPNOTSUPP))
    }
}

impl Kind {
    fn new_file() -> Kind {
        Kind::File {
            size: 0,
            durable: 0,
            zero_from: 0,
            dirty: BTreeMap::new(),
        }
    }
}

impl State {
    fn make(
        &mut self,
        parent: u64,
        name: &OsStr,
        kind: Kind,
        mode: u32,
    ) -> Result<FileAttr, Errno> {
        if name.as_bytes().len() > 255 {
            return Err(err(libc::ENAMETOOLONG));
        }
        if self.entries(parent)?.contains_key(name) {
            return Err(err(libc::EEXIST));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(
            ino,
            Inode {
                kind,
                perm: (mode & 0o7777) as u16,
                mtime: SystemTime::now(),
                name: name.to_owned(),
            },
        );
        self.entries(parent)?.insert(name.to_owned(), ino);
        self.attr(ino).ok_or(err(libc::ENOENT))
    }
}

/// A mounted lossfs.
pub struct LossFs {
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
    _backing: tempfile::TempDir,
}

/// Why lossfs cannot run here (not root, no /dev/fuse), or None.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("mounting lossfs needs root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    None
}

impl LossFs {
    /// Mounts an empty lossfs on `mountpoint` (created if missing).
    pub fn mount(mountpoint: &Path) -> io::Result<LossFs> {
        std::fs::create_dir_all(mountpoint)?;
        let backing = tempfile::tempdir()?;
        std::fs::create_dir(backing.path().join("objects"))?;
        let mut inodes = BTreeMap::new();
        inodes.insert(
            ROOT,
            Inode {
                kind: Kind::Dir {
                    live: BTreeMap::new(),
                    durable: BTreeMap::new(),
                },
                perm: 0o755,
                mtime: SystemTime::now(),
                name: OsString::from("/"),
            },
        );
        let state = Arc::new(Mutex::new(State {
            backing: backing.path().to_path_buf(),
            inodes,
            next_ino: ROOT + 1,
            powered: true,
            faults: Faults::default(),
            unsynced: Vec::new(),
            generation: 0,
            cuts: 0,
        }));
        let mut fs = LossFs {
            state,
            mountpoint: mountpoint.to_path_buf(),
            session: None,
            _backing: backing,
        };
        fs.attach()?;
        Ok(fs)
    }

    fn attach(&mut self) -> io::Result<()> {
        let mut cfg = Config::default();
        cfg.mount_options = vec![MountOption::FSName("lossfs".into()), MountOption::NoAtime];
        let generation = self.state.lock().unwrap().generation;
        self.session = Some(fuser::spawn_mount(
            Fs(self.state.clone(), generation),
            &self.mountpoint,
            &cfg,
        )?);
        Ok(())
    }

    fn detach(&mut self) -> io::Result<()> {
        if let Some(s) = self.session.take() {
            let c = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path. A lazy unmount: the old connection ends
            // once the killed process's descriptors are gone (until then its requests fail:
            // they carry the old generation).
            let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            let e = io::Error::last_os_error();
            drop(s);
            if r != 0 {
                return Err(io::Error::new(e.kind(), format!("unmounting lossfs: {e}")));
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Arms SD-card faults (replacing those armed before).
    pub fn faults(&self, f: Faults) {
        self.state.lock().unwrap().faults = f;
    }

    /// A power cut: at one instant the volatile layer is gone and every request fails;
    /// then `kill` runs (kill -9 the process under test and wait for it); then a reboot
    /// (unmount, mount again) and the mount holds exactly what was durable.
    pub fn cut(&mut self, kill: impl FnOnce()) -> io::Result<CutReport> {
        let report = {
            let mut s = self.state.lock().unwrap();
            s.powered = false;
            s.cuts += 1;
            s.generation += 1;
            s.discard()
        };
        // The reboot happens even when `kill` panics; the panic goes on after it.
        let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(kill));
        self.detach()?;
        self.state.lock().unwrap().powered = true;
        self.attach()?;
        if let Err(p) = killed {
            std::panic::resume_unwind(p);
        }
        Ok(report)
    }

    pub fn cuts(&self) -> u64 {
        self.state.lock().unwrap().cuts
    }
}

impl Drop for LossFs {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}
