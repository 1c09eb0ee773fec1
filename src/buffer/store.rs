//! The buffer's I/O half: recovery, the writer thread (group commit), reading for the uplink,
//! acknowledgements and the periodic persist-and-delete step. Pure parts live in `frame` and
//! `index`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::config::SyncMode;
use crate::durable::{Fs, FsFile, Os};
use crate::record::{new_id, Body, Class, NewRecord, Record};

use super::frame::{self, Frame, FRAME_HEAD, HEADER_LEN};
use super::index::{Pos, SegMeta, Stream};

/// Seqs are reserved on disk this many at a time.
const SEQ_BLOCK: u64 = 1 << 16;
/// Room kept for a `buffer_dropped` report when evicting: its frame (well under 256 bytes)
/// and the header of a segment it may have to open.
const DROP_REPORT_ROOM: u64 = 256 + HEADER_LEN as u64;
/// Appends taken from the queue per group commit, at most.
const MAX_BATCH: usize = 4096;

#[derive(Debug, Clone)]
pub struct Options {
    pub max_bytes: u64,
    pub sync: SyncMode,
    pub sync_interval: Duration,
    /// A segment is sealed once it reaches this size.
    pub segment_bytes: u64,
}

impl Options {
    pub fn new(max_bytes: u64, sync: SyncMode, sync_interval: Duration) -> Options {
        Options {
            max_bytes,
            sync,
            sync_interval,
            segment_bytes: (max_bytes / 16).clamp(16 << 10, 1 << 20),
        }
    }
}

/// What an accepted append was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub id: u128,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AppendError {
    #[error("buffer full: nothing left to evict for a record of {0} bytes")]
    Full(u64),
    #[error("record too large: {0}")]
    TooLarge(String),
    #[error("buffer write failed: {0}")]
    Io(String),
    #[error("buffer is closed")]
    Closed,
}

/// What recovery found at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    /// Records waiting to be delivered.
    pub pending: u64,
    /// Corrupt regions skipped (each at least one record).
    pub corrupt: u64,
    /// Bytes cut from torn tails.
    pub torn_bytes: u64,
    /// Empty or header-only segments deleted.
    pub empty_removed: usize,
    /// Files in the buffer directory that are not ours, left alone.
    pub strays: Vec<String>,
    /// Segments that could not be read (an I/O error, a directory where a segment should
    /// be, a size no segment has): moved aside to `buffer/quarantine/`, never deleted, each
    /// with what failed. The rest of the buffer is delivered.
    pub quarantined: Vec<String>,
    /// The previous run did not close the buffer (a crash, kill -9 or power cut). With
    /// `sync = "always"` nothing it accepted can be missing; with `interval`, what it accepted
    /// in the last `sync_interval` before a power cut may be.
    pub unclean: bool,
}

impl Recovery {
    pub fn anything_skipped(&self) -> bool {
        self.corrupt > 0
            || self.torn_bytes > 0
            || !self.strays.is_empty()
            || !self.quarantined.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub events: u64,
    pub alerts: u64,
    pub bytes: u64,
    pub segments: usize,
    pub dropped_total: u64,
    pub corrupt_total: u64,
}

enum Cmd {
    Append(
        NewRecord,
        tokio::sync::oneshot::Sender<Result<Appended, AppendError>>,
    ),
    Flush(tokio::sync::oneshot::Sender<io::Result<()>>),
}

/// A handle to the buffer; cheap to clone. The writer thread stops when [`Buffer::close`] is
/// called or every handle is dropped.
#[derive(Clone)]
pub struct Buffer {
    shared: Arc<Shared>,
    tx: Arc<Mutex<Option<mpsc::Sender<Cmd>>>>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

struct Shared {
    inner: Mutex<Inner>,
    notify: tokio::sync::Notify,
    /// Bumped by every turn of the writer thread (at least every 250 ms).
    beat: Arc<crate::watchdog::Beat>,
}

struct Inner {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    opts: Options,
    clock: Arc<dyn Clock>,
    streams: [Stream; 2],
    writers: [Option<Box<dyn FsFile>>; 2],
    readers: [Option<(u64, Box<dyn FsFile>)>; 2],
    next_seq: u64,
    reserved: u64,
    durable_frontier: [u64; 2],
    dirty: [bool; 2],
    dropped_total: u64,
    corrupt_total: u64,
    /// The flock on the buffer directory, released by `close`.
    lock: Option<Box<dyn Send + Sync>>,
    /// Frames encoded in this batch, not yet written, per class.
    pending: [Pending; 2],
    /// Records whose write failed in this batch, with the error.
    failed: Vec<(Vec<u64>, String)>,
    scratch: Vec<u8>,
    /// Segments sealed since the last sync that still need one.
    sealed_dirty: Vec<Box<dyn FsFile>>,
    /// Tests: the eviction report fails to write.
    #[cfg(test)]
    fail_drop_report: bool,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    seqs: Vec<u64>,
    /// The open segment's (bytes, records, last_seq) before these frames.
    base: (u64, u64, u64),
}

fn class_dir_name(class: Class) -> &'static str {
    match class {
        Class::Event => "events",
        Class::Alert => "alerts",
    }
}

pub(crate) fn class_dir(dir: &Path, class: Class) -> PathBuf {
    dir.join(class_dir_name(class))
}

fn seg_path(dir: &Path, class: Class, name: u64) -> PathBuf {
    class_dir(dir, class).join(format!("{name:020}.seg"))
}

fn with_crc(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

fn check_crc(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() < 4 {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    (crc32fast::hash(body) == u32::from_le_bytes(crc.try_into().ok()?)).then_some(body)
}

pub(crate) fn read_seq_file(fs: &dyn Fs, dir: &Path) -> u64 {
    fs.read(&dir.join("seq"))
        .ok()
        .and_then(|b| {
            check_crc(&b)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        })
        .unwrap_or(0)
}

pub(crate) fn read_acked_file(fs: &dyn Fs, dir: &Path) -> [u64; 2] {
    let parse = |b: &[u8]| -> Option<[u64; 2]> {
        let body = check_crc(b)?;
        if body.len() != 20 || &body[..4] != b"CGWA" {
            return None;
        }
        Some([
            u64::from_le_bytes(body[4..12].try_into().ok()?),
            u64::from_le_bytes(body[12..20].try_into().ok()?),
        ])
    };
    fs.read(&dir.join("acked"))
        .ok()
        .and_then(|b| parse(&b))
        .unwrap_or([0, 0])
}

fn lock_dir(fs: &dyn Fs, dir: &Path) -> io::Result<Box<dyn Send + Sync>> {
    fs.lock(&dir.join("lock")).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "{} is in use by another camgw process",
                dir.parent().unwrap_or(dir).display()
            ),
        ),
        _ => e,
    })
}

impl Buffer {
    /// Opens (recovering) the buffer under `{data_dir}/buffer` and starts its writer thread.
    pub fn open(
        data_dir: &Path,
        opts: Options,
        clock: Arc<dyn Clock>,
    ) -> io::Result<(Buffer, Recovery)> {
        Buffer::open_on(Arc::new(Os), data_dir, opts, clock)
    }

    /// [`Buffer::open`] on the filesystem `fs` (tests: one that fills up or records what a
    /// power cut would keep).
    pub fn open_on(
        fs: Arc<dyn Fs>,
        data_dir: &Path,
        opts: Options,
        clock: Arc<dyn Clock>,
    ) -> io::Result<(Buffer, Recovery)> {
        let dir = data_dir.join("buffer");
        fs.create_dir_all(&class_dir(&dir, Class::Event))?;
        fs.create_dir_all(&class_dir(&dir, Class::Alert))?;
        fs.sync_dir(&dir)?;
        fs.sync_dir(data_dir)?;
        // When the agent created data_dir itself (no package postinst), its name is durable
        // only once its parent is synced: a power cut could take the whole directory.
        if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Err(e) = fs.sync_dir(parent) {
                tracing::warn!("cannot sync {}: {e}", parent.display());
            }
        }
        let lock = lock_dir(fs.as_ref(), &dir)?;
        // Present while a buffer is open: finding it at open means the last run never closed.
        let marker = dir.join("open");
        let unclean = fs.exists(&marker);
        let (inner, mut report) = recover(fs.clone(), dir.clone(), opts, clock, lock)?;
        report.unclean = unclean;
        fs.create(&marker)?.sync_data()?;
        fs.sync_dir(&dir)?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            notify: tokio::sync::Notify::new(),
            beat: Arc::new(crate::watchdog::Beat::default()),
        });
        let (tx, rx) = mpsc::channel();
        let s2 = shared.clone();
        let thread = std::thread::Builder::new()
            .name("camgw-buffer".into())
            .spawn(move || writer_loop(s2, rx))?;
        let buffer = Buffer {
            shared,
            tx: Arc::new(Mutex::new(Some(tx))),
            thread: Arc::new(Mutex::new(Some(thread))),
        };
        if report.pending > 0 {
            buffer.shared.notify.notify_one();
        }
        Ok((buffer, report))
    }

    fn send(&self, cmd: Cmd) -> bool {
        match &*self.tx.lock().unwrap() {
            Some(tx) => tx.send(cmd).is_ok(),
            None => false,
        }
    }

    /// Appends a record; resolves once it is accepted under the sync mode in force.
    /// Appends an alert stamped now; a refusal (full disk, closed) is logged, not returned:
    /// an alert must never stop the part that raises it.
    pub async fn alert(
        &self,
        clock: &dyn crate::clock::Clock,
        kind: crate::record::AlertKind,
        camera: Option<&str>,
        detail: serde_json::Value,
    ) {
        let rec = NewRecord::stamped(clock, crate::record::Body::alert(kind, camera, detail));
        if let Err(e) = self.append(rec).await {
            tracing::error!(camera, "cannot record the {kind} alert: {e}");
        }
    }

    pub async fn append(&self, rec: NewRecord) -> Result<Appended, AppendError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.send(Cmd::Append(rec, tx)) {
            return Err(AppendError::Closed);
        }
        rx.await.unwrap_or(Err(AppendError::Closed))
    }

    /// [`Buffer::append`] for threads outside the runtime.
    pub fn append_blocking(&self, rec: NewRecord) -> Result<Appended, AppendError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.send(Cmd::Append(rec, tx)) {
            return Err(AppendError::Closed);
        }
        rx.blocking_recv().unwrap_or(Err(AppendError::Closed))
    }

    /// Syncs every file and persists the ack frontiers.
    pub fn flush_blocking(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.send(Cmd::Flush(tx)) {
            return Err(io::Error::other("buffer is closed"));
        }
        rx.blocking_recv()
            .unwrap_or_else(|_| Err(io::Error::other("buffer is closed")))
    }

    /// Flushes and stops the writer thread. Later appends fail with `Closed`.
    pub fn close(&self) {
        self.tx.lock().unwrap().take();
        let joined = match self.thread.lock().unwrap().take() {
            Some(t) => t.join().is_ok(),
            None => false,
        };
        let mut inner = self.inner();
        if joined {
            // The writer flushed everything on its way out: a clean close.
            let _ = inner.fs.remove_file(&inner.dir.join("open"));
            let _ = inner.fs.sync_dir(&inner.dir);
        }
        inner.lock = None;
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next record not yet handed out (alerts first, then events; each in seq order),
    /// marking it in flight.
    pub fn next_unsent(&self) -> Option<Record> {
        let mut inner = self.inner();
        for class in [Class::Alert, Class::Event] {
            if let Some(r) = inner.read_next(class) {
                return Some(r);
            }
        }
        None
    }

    /// The broker acknowledged `seq`.
    pub fn ack(&self, class: Class, seq: u64) {
        self.inner().streams[class.index()].ack(seq);
    }

    /// The connection dropped: every in-flight record is unsent again.
    pub fn rewind(&self) {
        let mut inner = self.inner();
        for s in inner.streams.iter_mut() {
            s.rewind();
        }
    }

    /// Resolves when records may be waiting (a permit is stored if nobody is waiting).
    pub async fn notified(&self) {
        self.shared.notify.notified().await
    }

    pub fn stats(&self) -> Stats {
        let inner = self.inner();
        let [e, a] = &inner.streams;
        Stats {
            events: e.unacked(),
            alerts: a.unacked(),
            bytes: e.bytes() + a.bytes(),
            segments: e.segs.len() + a.segs.len(),
            dropped_total: inner.dropped_total,
            corrupt_total: inner.corrupt_total,
        }
    }

    /// The writer thread's heartbeat, for the watchdog.
    pub fn beat(&self) -> Arc<crate::watchdog::Beat> {
        self.shared.beat.clone()
    }

    /// Records read but not acknowledged.
    pub fn inflight(&self) -> usize {
        let inner = self.inner();
        inner.streams.iter().map(|s| s.inflight.len()).sum()
    }
}

/// The largest segment file recovery reads: the segment size bound plus one frame of slack.
/// Anything larger is not a segment this agent wrote: it is quarantined unread.
pub const MAX_SEGMENT_FILE: u64 = (1 << 20) + frame::MAX_PAYLOAD as u64 + 1024;

/// Moves an unreadable segment aside (`buffer/quarantine/{class}-{name}`), so it is kept for
/// a post-mortem and never read again, and notes it in the report.
fn quarantine(
    fs: &dyn Fs,
    dir: &Path,
    class: Class,
    fname: &str,
    why: &str,
    report: &mut Recovery,
) {
    let from = class_dir(dir, class).join(fname);
    let qdir = dir.join("quarantine");
    // Never over an earlier quarantined file of the same name.
    let to = (0..)
        .map(|n| match n {
            0 => qdir.join(format!("{}-{fname}", class_dir_name(class))),
            n => qdir.join(format!("{}-{fname}.{n}", class_dir_name(class))),
        })
        .find(|p| !fs.exists(p))
        .expect("an unused name");
    let moved = fs
        .create_dir_all(&qdir)
        .and_then(|()| fs.rename(&from, &to))
        .and_then(|()| fs.sync_dir(&class_dir(dir, class)))
        .and_then(|()| fs.sync_dir(&qdir));
    let what = format!("buffer/{}/{fname}: {why}", class_dir_name(class));
    tracing::error!("buffer segment quarantined: {what}");
    report.quarantined.push(match moved {
        Ok(()) => format!("{what} (moved to buffer/quarantine/)"),
        Err(e) => format!("{what} (could not be moved aside: {e}; skipped)"),
    });
}

fn recover(
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    opts: Options,
    clock: Arc<dyn Clock>,
    lock: Box<dyn Send + Sync>,
) -> io::Result<(Inner, Recovery)> {
    let mut report = Recovery::default();
    for file in ["seq", "acked"] {
        let _ = fs.remove_file(&crate::durable::temp_of(&dir.join(file)));
    }
    for name in fs.list(&dir)? {
        if ![
            "seq",
            "acked",
            "lock",
            "open",
            "events",
            "alerts",
            "quarantine",
        ]
        .contains(&name.as_str())
        {
            report.strays.push(format!("buffer/{name}"));
        }
    }
    let frontiers = read_acked_file(fs.as_ref(), &dir);
    let mut max_seq = read_seq_file(fs.as_ref(), &dir)
        .saturating_sub(1)
        .max(frontiers[0])
        .max(frontiers[1]);
    let mut streams = [Stream::default(), Stream::default()];
    for class in Class::ALL {
        let cdir = class_dir(&dir, class);
        let mut names = Vec::new();
        let entries = match fs.list(&cdir) {
            Ok(e) => e,
            Err(e) => {
                // The class directory itself cannot be listed: set it aside whole and start
                // the class afresh.
                let qdir = dir.join("quarantine");
                let to = qdir.join(class_dir_name(class));
                let moved = fs
                    .create_dir_all(&qdir)
                    .and_then(|()| fs.rename(&cdir, &to));
                report.quarantined.push(format!(
                    "buffer/{}/: cannot be listed: {e}{}",
                    class_dir_name(class),
                    if moved.is_ok() {
                        " (moved to buffer/quarantine/)"
                    } else {
                        ""
                    }
                ));
                fs.create_dir_all(&cdir)?;
                continue;
            }
        };
        for fname in entries {
            let parsed = fname
                .strip_suffix(".seg")
                .filter(|n| n.len() == 20)
                .and_then(|n| n.parse::<u64>().ok());
            match parsed {
                Some(n) => names.push(n),
                None => report.strays.push(format!(
                    "buffer/{}/{fname}",
                    cdir.file_name().unwrap().to_string_lossy()
                )),
            }
        }
        names.sort_unstable();
        let frontier = frontiers[class.index()];
        let stream = &mut streams[class.index()];
        stream.last_read = frontier;
        for name in names {
            let path = seg_path(&dir, class, name);
            let fname = format!("{name:020}.seg");
            // One bad segment (an I/O error on a failing SD card, a directory in its place, a
            // size no segment has) must never stop the start: it is set aside, the rest goes on.
            let read = fs.metadata(&path).and_then(|m| {
                if !m.is_file {
                    Err(io::Error::other("not a regular file"))
                } else if m.len > MAX_SEGMENT_FILE {
                    Err(io::Error::other(format!(
                        "{} bytes, larger than any segment ({MAX_SEGMENT_FILE})",
                        m.len
                    )))
                } else {
                    fs.read(&path)
                }
            });
            let bytes = match read {
                Ok(b) => b,
                Err(e) => {
                    quarantine(
                        fs.as_ref(),
                        &dir,
                        class,
                        &fname,
                        &e.to_string(),
                        &mut report,
                    );
                    continue;
                }
            };
            if bytes.len() <= HEADER_LEN {
                if let Err(e) = fs.remove_file(&path) {
                    tracing::warn!("cannot remove the empty segment {}: {e}", path.display());
                }
                report.empty_removed += 1;
                continue;
            }
            if frame::parse_header(&bytes) != Some(class) {
                report.corrupt += 1;
            }
            let mut meta = SegMeta::new(name);
            meta.sealed = true;
            let mut first_unacked = None;
            let mut last_valid_seq = 0;
            let end = frame::scan(&bytes[HEADER_LEN..], |off, rec, _| {
                if rec.class() != class || rec.seq <= last_valid_seq {
                    report.corrupt += 1;
                    return;
                }
                last_valid_seq = rec.seq;
                meta.records += 1;
                meta.last_seq = rec.seq;
                if rec.seq <= frontier {
                    meta.acked += 1;
                } else if first_unacked.is_none() {
                    first_unacked = Some((HEADER_LEN + off) as u64);
                }
            });
            report.corrupt += end.corrupt;
            max_seq = max_seq.max(meta.last_seq);
            let valid_len = (HEADER_LEN + end.valid_end) as u64;
            if end.tail_bytes > 0 {
                let cut = fs
                    .open_write(&path)
                    .and_then(|mut f| f.set_len(valid_len).and_then(|()| f.sync_data()));
                if let Err(e) = cut {
                    // The valid frames are indexed up to valid_len; the torn tail stays on disk
                    // (the segment is sealed and never appended to, and reads stop at
                    // meta.bytes), to be cut at a later start.
                    tracing::warn!("cannot cut the torn tail of {}: {e}", path.display());
                }
                report.torn_bytes += end.tail_bytes as u64;
            }
            meta.bytes = valid_len;
            if meta.records == 0 || meta.acked == meta.records {
                if let Err(e) = fs.remove_file(&path) {
                    tracing::warn!(
                        "cannot remove the delivered segment {}: {e}",
                        path.display()
                    );
                }
                if meta.records == 0 {
                    report.empty_removed += 1;
                }
                continue;
            }
            if stream.cursor.is_none() {
                stream.cursor = first_unacked.map(|offset| Pos { seg: name, offset });
            }
            report.pending += meta.unacked();
            report.segments += 1;
            stream.segs.push_back(meta);
        }
    }
    for class in Class::ALL {
        if let Err(e) = fs.sync_dir(&class_dir(&dir, class)) {
            tracing::warn!("cannot sync buffer/{}/: {e}", class.name());
        }
    }
    let inner = Inner {
        fs,
        dir,
        opts,
        clock,
        streams,
        writers: [None, None],
        readers: [None, None],
        next_seq: max_seq + 1,
        reserved: 0,
        durable_frontier: frontiers,
        dirty: [false, false],
        dropped_total: 0,
        corrupt_total: report.corrupt,
        lock: Some(lock),
        pending: Default::default(),
        failed: Vec::new(),
        scratch: Vec::with_capacity(256),
        sealed_dirty: Vec::new(),
        #[cfg(test)]
        fail_drop_report: false,
    };
    Ok((inner, report))
}

/// Work the writer thread must finish after releasing the lock.
#[derive(Default)]
struct AfterWrite {
    sync: Vec<Box<dyn FsFile>>,
    unlink: Vec<PathBuf>,
}

impl Inner {
    fn total_bytes(&self) -> u64 {
        self.streams.iter().map(|s| s.bytes()).sum()
    }

    fn reserve_seq(&mut self) -> io::Result<()> {
        if self.next_seq < self.reserved {
            return Ok(());
        }
        let reserved = self.next_seq + SEQ_BLOCK;
        self.fs.replace(
            &self.dir.join("seq"),
            &with_crc(reserved.to_le_bytes().to_vec()),
        )?;
        self.reserved = reserved;
        Ok(())
    }

    /// Seals the open segment of `class`.
    fn seal(&mut self, class: Class) {
        self.flush_class(class);
        if let Some(s) = self.streams[class.index()].active_mut() {
            s.sealed = true;
        }
        // A sealed segment with unsynced frames is synced with the next sync, like the open one.
        if let Some(f) = self.writers[class.index()].take() {
            if self.dirty[class.index()] {
                self.sealed_dirty.push(f);
                self.dirty[class.index()] = false;
            }
        }
    }

    fn open_segment(&mut self, class: Class, name: u64) -> io::Result<()> {
        self.seal(class);
        let path = seg_path(&self.dir, class, name);
        let res = (|| {
            let mut f = self.fs.create_new(&path)?;
            f.write_all(&frame::segment_header(class))?;
            f.sync_data()?;
            self.fs.sync_dir(&class_dir(&self.dir, class))?;
            Ok::<_, io::Error>(f)
        })();
        match res {
            Ok(f) => {
                self.writers[class.index()] = Some(f);
                self.streams[class.index()]
                    .segs
                    .push_back(SegMeta::new(name));
                Ok(())
            }
            Err(e) => {
                let _ = self.fs.remove_file(&path);
                Err(e)
            }
        }
    }

    /// Evicts until `need` more bytes fit under `max_bytes`. Returns false when it cannot.
    fn make_room(&mut self, need: u64, after: &mut AfterWrite) -> Result<(), AppendError> {
        if self.total_bytes() + need <= self.opts.max_bytes {
            return Ok(());
        }
        // Choose the victims on a copy of the index first: nothing changes until the report
        // of what will go is durable.
        let mut trial = self.streams.clone();
        let mut victims = Vec::new();
        let mut dropped = 0u64;
        // The eviction report takes room too (and may open a segment): leave it its place,
        // or the append that caused the eviction would still not fit after it.
        let need_with_report = need + DROP_REPORT_ROOM;
        while trial.iter().map(|s| s.bytes()).sum::<u64>() + need_with_report > self.opts.max_bytes
        {
            let victim = [Class::Event, Class::Alert]
                .into_iter()
                .find_map(|c| trial[c.index()].eviction_candidate().map(|s| (c, s.name)));
            let Some((class, name)) = victim else {
                break;
            };
            dropped += trial[class.index()].remove(name);
            victims.push((class, name));
        }
        if !victims.is_empty() {
            tracing::warn!(dropped, "buffer full: evicting the oldest records");
            // The report must not land in a segment that is about to go.
            if victims.iter().any(|&(c, n)| {
                c == Class::Alert
                    && self.streams[c.index()]
                        .active()
                        .is_some_and(|a| a.name == n)
            }) {
                self.seal(Class::Alert);
            }
            let rec = NewRecord {
                ts_ms: self.clock.now_ms(),
                clock_synced: self.clock.synced(),
                body: Body::alert(
                    crate::record::AlertKind::BufferDropped,
                    None,
                    serde_json::json!({"count": dropped, "reason": "max_bytes",
                        "max_bytes": self.opts.max_bytes}),
                ),
            };
            // The report is durable before the victims go (synced even in interval mode). If
            // it cannot be made durable, nothing is evicted and the append fails.
            if let Err(e) = self.write_drop_report(rec) {
                tracing::error!(
                    dropped,
                    "cannot record the eviction report; nothing was evicted: {e}"
                );
                return Err(AppendError::Io(format!(
                    "the buffer is full and the eviction report cannot be written ({e})"
                )));
            }
            for (class, name) in victims {
                if self.streams[class.index()]
                    .active()
                    .is_some_and(|a| a.name == name)
                {
                    self.seal(class);
                }
                if self.readers[class.index()]
                    .as_ref()
                    .is_some_and(|(n, _)| *n == name)
                {
                    self.readers[class.index()] = None;
                }
                self.streams[class.index()].remove(name);
                after.unlink.push(seg_path(&self.dir, class, name));
            }
            self.dropped_total += dropped;
        }
        if self.total_bytes() + need > self.opts.max_bytes {
            return Err(AppendError::Full(need));
        }
        Ok(())
    }

    /// Appends the `buffer_dropped` record and makes it durable (write and fdatasync), or
    /// says why it could not.
    fn write_drop_report(&mut self, rec: NewRecord) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_drop_report {
            return Err(io::Error::other("injected: the report write fails"));
        }
        let failed_before = self.failed.len();
        let report = self.write_one(rec)?;
        self.flush_class(Class::Alert);
        // A failed flush lists every record of that write (other callers' alerts of this batch
        // too): the entry stays for the batch's drain to answer them; here it only says that
        // the report did not make it.
        if let Some((_, why)) = self.failed[failed_before..]
            .iter()
            .find(|(seqs, _)| seqs.contains(&report.seq))
        {
            return Err(io::Error::other(why.clone()));
        }
        match &self.writers[Class::Alert.index()] {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }

    /// Encodes one frame into the open segment's pending bytes (opening a segment if needed),
    /// without any space check. The bytes reach the file in [`Inner::flush_class`], called
    /// before the lock is released, so readers never see a record that is not written.
    fn write_one(&mut self, rec: NewRecord) -> io::Result<Appended> {
        self.reserve_seq()?;
        let class = rec.body.class();
        let ci = class.index();
        let record = Record {
            seq: self.next_seq,
            id: new_id(),
            ts_ms: rec.ts_ms,
            clock_synced: rec.clock_synced,
            body: rec.body,
        };
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        frame::encode_frame(&record, &mut buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let seg_max = self.opts.segment_bytes;
        let need_new = match self.streams[ci].active() {
            None => true,
            Some(a) => a.bytes + buf.len() as u64 > seg_max && a.records > 0,
        } || self.writers[ci].is_none();
        if need_new {
            if let Err(e) = self.open_segment(class, record.seq) {
                self.scratch = buf;
                return Err(e);
            }
        }
        let seg = self.streams[ci].active_mut().expect("open segment");
        if self.pending[ci].bytes.is_empty() {
            self.pending[ci].base = (seg.bytes, seg.records, seg.last_seq);
        }
        seg.records += 1;
        seg.last_seq = record.seq;
        seg.bytes += buf.len() as u64;
        self.pending[ci].bytes.extend_from_slice(&buf);
        self.pending[ci].seqs.push(record.seq);
        self.scratch = buf;
        self.next_seq += 1;
        Ok(Appended {
            seq: record.seq,
            id: record.id,
        })
    }

    /// Writes the pending frames of `class` with one `write`. On failure the file is cut back
    /// to its last whole frame (or the segment sealed if even that fails), the index is
    /// restored, and the records are listed in `failed`.
    fn flush_class(&mut self, class: Class) {
        let ci = class.index();
        if self.pending[ci].bytes.is_empty() {
            return;
        }
        let p = std::mem::take(&mut self.pending[ci]);
        let f = self.writers[ci]
            .as_mut()
            .expect("pending frames have an open segment");
        match f.write_all(&p.bytes) {
            Ok(()) => self.dirty[ci] = true,
            Err(e) => {
                tracing::warn!(error = %e, records = p.seqs.len(), "buffer write failed");
                let cut = f.set_len(p.base.0).is_ok();
                if let Some(seg) = self.streams[ci].active_mut() {
                    (seg.bytes, seg.records, seg.last_seq) = p.base;
                }
                if !cut {
                    self.seal(class);
                }
                self.failed.push((p.seqs, e.to_string()));
            }
        }
        let mut bytes = p.bytes;
        bytes.clear();
        self.pending[ci].bytes = bytes;
    }

    fn append(&mut self, rec: NewRecord, after: &mut AfterWrite) -> Result<Appended, AppendError> {
        // Frame overhead is small and bounded; estimate generously for the room check.
        let estimate = match &rec.body {
            Body::Alert {
                kind,
                camera,
                detail,
            } => kind.len() + camera.as_ref().map_or(0, |c| c.len()) + detail.len(),
            Body::Event {
                kind,
                camera,
                source,
                state,
                detail,
            } => kind.len() + camera.len() + source.len() + state.len() + detail.len(),
        } as u64
            + 64
            + HEADER_LEN as u64;
        if estimate > frame::MAX_PAYLOAD as u64 {
            return Err(AppendError::TooLarge(format!(
                "{estimate} bytes exceeds {}",
                frame::MAX_PAYLOAD
            )));
        }
        self.make_room(estimate, after)?;
        self.write_one(rec)
            .map_err(|e| AppendError::Io(e.to_string()))
    }

    /// Reads the next unsent record of `class`, advancing its cursor.
    fn read_next(&mut self, class: Class) -> Option<Record> {
        let ci = class.index();
        loop {
            let stream = &self.streams[ci];
            let cur = match stream.cursor {
                Some(c) => c,
                None => {
                    let first = stream.segs.front()?;
                    Pos {
                        seg: first.name,
                        offset: HEADER_LEN as u64,
                    }
                }
            };
            let Some(seg) = stream.seg(cur.seg) else {
                // Deleted or evicted under the cursor: go on with the next segment.
                let next = stream.segs.iter().find(|s| s.name > cur.seg)?;
                self.streams[ci].cursor = Some(Pos {
                    seg: next.name,
                    offset: HEADER_LEN as u64,
                });
                continue;
            };
            if cur.offset >= seg.bytes {
                if !seg.sealed {
                    self.streams[ci].cursor = Some(cur);
                    return None;
                }
                let next = stream.segs.iter().find(|s| s.name > cur.seg)?;
                self.streams[ci].cursor = Some(Pos {
                    seg: next.name,
                    offset: HEADER_LEN as u64,
                });
                continue;
            }
            let seg_bytes = seg.bytes;
            match self.read_frame(class, cur, seg_bytes) {
                Ok(Some((rec, n))) => {
                    let next = Pos {
                        seg: cur.seg,
                        offset: cur.offset + n as u64,
                    };
                    if rec.seq <= self.streams[ci].last_read {
                        self.streams[ci].cursor = Some(next);
                        continue;
                    }
                    if self.streams[ci].mark_read(rec.seq, cur, next) {
                        return Some(rec);
                    }
                }
                Ok(None) => {
                    // Corrupt at runtime (bit rot since recovery): skip to the next valid frame.
                    self.corrupt_total += 1;
                    let skip_to = self.resync(class, cur, seg_bytes);
                    tracing::warn!(
                        segment = cur.seg,
                        offset = cur.offset,
                        "skipped a corrupt buffer record"
                    );
                    self.streams[ci].cursor = Some(Pos {
                        seg: cur.seg,
                        offset: skip_to,
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the buffer; will retry");
                    self.readers[ci] = None;
                    self.streams[ci].cursor = Some(cur);
                    return None;
                }
            }
        }
    }

    fn reader(&mut self, class: Class, seg: u64) -> io::Result<&dyn FsFile> {
        let ci = class.index();
        if self.readers[ci].as_ref().is_none_or(|(n, _)| *n != seg) {
            let f = self.fs.open_read(&seg_path(&self.dir, class, seg))?;
            self.readers[ci] = Some((seg, f));
        }
        Ok(self.readers[ci].as_ref().unwrap().1.as_ref())
    }

    fn read_frame(
        &mut self,
        class: Class,
        at: Pos,
        seg_bytes: u64,
    ) -> io::Result<Option<(Record, usize)>> {
        let f = self.reader(class, at.seg)?;
        let mut head = [0u8; FRAME_HEAD];
        if at.offset + FRAME_HEAD as u64 > seg_bytes {
            return Ok(None);
        }
        f.read_exact_at(&mut head, at.offset)?;
        let Some(len) = frame::declared_len(&head) else {
            return Ok(None);
        };
        if at.offset + (FRAME_HEAD + len) as u64 > seg_bytes {
            return Ok(None);
        }
        let mut buf = vec![0u8; FRAME_HEAD + len];
        buf[..FRAME_HEAD].copy_from_slice(&head);
        f.read_exact_at(&mut buf[FRAME_HEAD..], at.offset + FRAME_HEAD as u64)?;
        Ok(match frame::decode_frame(&buf) {
            Frame::Ok(r, n) => Some((r, n)),
            _ => None,
        })
    }

    fn resync(&mut self, class: Class, at: Pos, seg_bytes: u64) -> u64 {
        let rest = (|| -> io::Result<Vec<u8>> {
            let f = self.reader(class, at.seg)?;
            let mut buf = vec![0u8; (seg_bytes - at.offset) as usize];
            f.read_exact_at(&mut buf, at.offset)?;
            Ok(buf)
        })();
        match rest.ok().and_then(|b| frame::resync(&b, 1)) {
            Some(off) => at.offset + off as u64,
            None => seg_bytes,
        }
    }

    /// Dirty open segments, as handles the writer can sync without the lock.
    fn take_dirty(&mut self, after: &mut AfterWrite) {
        after.sync.append(&mut self.sealed_dirty);
        for ci in 0..2 {
            if self.dirty[ci] {
                if let Some(f) = self.writers[ci].as_ref().and_then(|f| f.try_clone().ok()) {
                    after.sync.push(f);
                }
                self.dirty[ci] = false;
            }
        }
    }

    /// Persists changed frontiers, then lists the segments that may now be deleted.
    fn persist_acks(&mut self) -> io::Result<Vec<PathBuf>> {
        let fr = [self.streams[0].frontier(), self.streams[1].frontier()];
        if fr != self.durable_frontier {
            let mut body = b"CGWA".to_vec();
            body.extend_from_slice(&fr[0].to_le_bytes());
            body.extend_from_slice(&fr[1].to_le_bytes());
            self.fs.replace(&self.dir.join("acked"), &with_crc(body))?;
            self.durable_frontier = fr;
        }
        let mut gone = Vec::new();
        for class in Class::ALL {
            let ci = class.index();
            for name in self.streams[ci].deletable(self.durable_frontier[ci]) {
                self.streams[ci].remove(name);
                if self.readers[ci].as_ref().is_some_and(|(n, _)| *n == name) {
                    self.readers[ci] = None;
                }
                gone.push(seg_path(&self.dir, class, name));
            }
        }
        Ok(gone)
    }
}

fn sync_all(files: &[Box<dyn FsFile>]) -> io::Result<()> {
    for f in files {
        f.sync_data()?;
    }
    Ok(())
}

fn writer_loop(shared: Arc<Shared>, rx: mpsc::Receiver<Cmd>) {
    let (sync_mode, interval, fs) = {
        let inner = shared.inner.lock().unwrap();
        (inner.opts.sync, inner.opts.sync_interval, inner.fs.clone())
    };
    let tick = interval.min(Duration::from_millis(250));
    let mut last_sync = Instant::now();
    let mut last_maint = Instant::now();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        shared.beat.bump();
        let wait = tick.saturating_sub(last_maint.elapsed().min(last_sync.elapsed()));
        let closed = match rx.recv_timeout(wait) {
            Ok(cmd) => {
                batch.push(cmd);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(c) => batch.push(c),
                        Err(_) => break,
                    }
                }
                false
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Err(mpsc::RecvTimeoutError::Disconnected) => true,
        };

        let mut after = AfterWrite::default();
        let mut results = Vec::with_capacity(batch.len());
        let mut flushes = Vec::new();
        let must_sync = sync_mode == SyncMode::Always || closed || last_sync.elapsed() >= interval;
        {
            let mut inner = shared.inner.lock().unwrap_or_else(|e| e.into_inner());
            for cmd in batch.drain(..) {
                match cmd {
                    Cmd::Append(rec, reply) => {
                        let r = inner.append(rec, &mut after);
                        results.push((reply, r));
                    }
                    Cmd::Flush(reply) => flushes.push(reply),
                }
            }
            inner.flush_class(Class::Event);
            inner.flush_class(Class::Alert);
            for (seqs, err) in inner.failed.drain(..) {
                for (_, r) in results.iter_mut() {
                    if r.as_ref().is_ok_and(|a| seqs.contains(&a.seq)) {
                        *r = Err(AppendError::Io(err.clone()));
                    }
                }
            }
            if must_sync || !flushes.is_empty() {
                inner.take_dirty(&mut after);
            }
        }
        let must_sync = must_sync || !flushes.is_empty();
        let mut sync_err = None;
        if must_sync && !after.sync.is_empty() {
            if let Err(e) = sync_all(&after.sync) {
                tracing::error!(error = %e, "fsync of the buffer failed");
                sync_err = Some(e.to_string());
                // The data may not be on disk: start new segments rather than trust these.
                let mut inner = shared.inner.lock().unwrap_or_else(|e| e.into_inner());
                inner.seal(Class::Event);
                inner.seal(Class::Alert);
            }
            after.sync.clear();
        }
        if must_sync {
            last_sync = Instant::now();
        }
        for p in after.unlink.drain(..) {
            let _ = fs.remove_file(&p);
        }
        let any_ok = results.iter().any(|(_, r)| r.is_ok());
        for (reply, r) in results {
            let r = match (&sync_err, sync_mode, r) {
                (Some(e), SyncMode::Always, Ok(_)) => Err(AppendError::Io(e.clone())),
                (_, _, r) => r,
            };
            let _ = reply.send(r);
        }
        if any_ok {
            shared.notify.notify_one();
        }
        if last_maint.elapsed() >= tick || !flushes.is_empty() || closed {
            last_maint = Instant::now();
            let gone = {
                let mut inner = shared.inner.lock().unwrap_or_else(|e| e.into_inner());
                inner.persist_acks()
            };
            match gone {
                Ok(paths) => {
                    for p in paths {
                        let _ = fs.remove_file(&p);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot persist buffer acknowledgements"),
            }
        }
        for reply in flushes {
            let _ = reply.send(match &sync_err {
                Some(e) => Err(io::Error::other(e.clone())),
                None => Ok(()),
            });
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u64) -> NewRecord {
        NewRecord {
            ts_ms: i as i64,
            clock_synced: true,
            body: Body::Event {
                kind: "motion".into(),
                camera: format!("cam{i:04}"),
                source: "ingest".into(),
                state: "pulse".into(),
                detail: "{}".into(),
            },
        }
    }

    fn seg_files(dir: &Path) -> usize {
        Class::ALL
            .iter()
            .map(|&c| {
                std::fs::read_dir(class_dir(&dir.join("buffer"), c))
                    .unwrap()
                    .count()
            })
            .sum()
    }

    #[test]
    fn the_largest_eviction_report_fits_the_room_kept_for_it() {
        let rec = Record {
            seq: u64::MAX,
            id: u128::MAX,
            ts_ms: i64::MAX,
            clock_synced: true,
            body: Body::alert(
                crate::record::AlertKind::BufferDropped,
                None,
                serde_json::json!({"count": u64::MAX, "reason": "max_bytes", "max_bytes": u64::MAX}),
            ),
        };
        let mut buf = Vec::new();
        let n = frame::encode_frame(&rec, &mut buf).unwrap();
        assert!((n as u64) < DROP_REPORT_ROOM - HEADER_LEN as u64, "{n}");
    }

    #[test]
    fn a_failed_eviction_report_deletes_nothing_and_the_next_start_delivers_everything() {
        let d = tempfile::tempdir().unwrap();
        let clock = Arc::new(crate::clock::FixedClock::new(1_000, true));
        let opts = Options::new(
            64 * 1024,
            crate::config::SyncMode::Always,
            Duration::from_millis(200),
        );
        let (b, _) = Buffer::open(d.path(), opts.clone(), clock.clone()).unwrap();
        // Fill to the brim, then make the report fail.
        let mut accepted = 0u64;
        loop {
            if b.shared.inner.lock().unwrap().total_bytes() + 512 > 64 * 1024 {
                break;
            }
            b.append_blocking(event(accepted)).unwrap();
            accepted += 1;
        }
        b.shared.inner.lock().unwrap().fail_drop_report = true;
        let files_before = seg_files(d.path());
        let mut refused = 0;
        for i in 0..200 {
            match b.append_blocking(event(accepted + i)) {
                Ok(_) => accepted += 1,
                Err(AppendError::Io(e)) => {
                    assert!(e.contains("eviction report"), "{e}");
                    refused += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            refused > 0,
            "the buffer was full: appends needed an eviction"
        );
        assert!(
            seg_files(d.path()) >= files_before,
            "no segment was deleted"
        );
        assert_eq!(b.stats().dropped_total, 0, "nothing counted as dropped");
        b.close();
        drop(b);
        // The regression: the victims vanished without a report. Now the next start finds
        // every accepted record still on disk.
        let (b, rec) = Buffer::open(d.path(), opts, clock).unwrap();
        assert_eq!(rec.pending, accepted, "{rec:?}");
        b.close();
    }
}
