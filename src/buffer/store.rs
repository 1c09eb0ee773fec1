//! The buffer's I/O half, split like vector's disk_v2: this module holds the handle
//! ([`Buffer`]), the state shared with the writer thread, and the on-disk names; `recovery`
//! opens what a previous run left, `writer` is the writer thread (group commit, eviction,
//! acknowledgement persists), `reader` walks the segments for the uplink. All file access goes
//! through the [`Fs`] seam. Pure parts live in `frame` and `index`.

mod reader;
mod recovery;
mod stills;
mod writer;

use recovery::recover;
use writer::writer_loop;

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
    /// Stills may take at most this much of `max_bytes`.
    pub still_max_bytes: u64,
}

impl Options {
    pub fn new(max_bytes: u64, sync: SyncMode, sync_interval: Duration) -> Options {
        Options {
            max_bytes,
            sync,
            sync_interval,
            segment_bytes: (max_bytes / 16).clamp(16 << 10, 1 << 20),
            still_max_bytes: max_bytes / 4,
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
    /// Stills waiting to be delivered.
    pub stills: usize,
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
    /// Stills waiting, their bytes, and how many were evicted since the start.
    pub stills: u64,
    pub still_bytes: u64,
    pub stills_dropped_total: u64,
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
    /// Woken when a still may be sendable (one was buffered, or the records drained).
    stills_notify: tokio::sync::Notify,
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
    /// Stills waiting for the broker (files under `stills/`).
    stills: crate::buffer::stills::Index,
    /// Stills evicted and not yet reported in a `buffer_dropped` alert, and when the last
    /// such report was made.
    stills_dropped_unreported: u64,
    stills_dropped_total: u64,
    stills_reported_at: Option<Instant>,
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

/// A `u64 LE ‖ crc32` file (0 when missing or damaged).
fn read_u64_file(fs: &dyn Fs, path: &Path) -> u64 {
    fs.read(path)
        .ok()
        .and_then(|b| {
            check_crc(&b)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        })
        .unwrap_or(0)
}

pub(crate) fn read_seq_file(fs: &dyn Fs, dir: &Path) -> u64 {
    read_u64_file(fs, &dir.join("seq"))
}

/// Every name the agent keeps directly in `buffer/`; anything else there is a stray.
pub(crate) const OWN_NAMES: &[&str] = &[
    "seq",
    "acked",
    "lock",
    "open",
    "events",
    "alerts",
    "quarantine",
    "stills",
    "stills_dropped",
];

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
        // When the agent creates data_dir itself (no package postinst), every level it
        // creates is made durable: a power cut could otherwise take the whole directory.
        fs.create_dir_all_durable(data_dir)?;
        fs.create_dir_all(&class_dir(&dir, Class::Event))?;
        fs.create_dir_all(&class_dir(&dir, Class::Alert))?;
        fs.sync_dir(&dir)?;
        fs.sync_dir(data_dir)?;
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
            stills_notify: tokio::sync::Notify::new(),
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
        if report.stills > 0 {
            buffer.shared.stills_notify.notify_one();
        }
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
        let mut inner = self.inner();
        inner.streams[class.index()].ack(seq);
        let stills_may_go =
            !inner.stills.is_empty() && inner.streams.iter().all(|s| s.unacked() == 0);
        drop(inner);
        if stills_may_go {
            self.shared.stills_notify.notify_one();
        }
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

    /// Resolves when a still may be sendable (for the stills link).
    pub async fn stills_notified(&self) {
        self.shared.stills_notify.notified().await
    }

    pub fn stats(&self) -> Stats {
        let inner = self.inner();
        let [e, a] = &inner.streams;
        Stats {
            events: e.unacked(),
            alerts: a.unacked(),
            bytes: e.bytes() + a.bytes() + inner.stills.bytes(),
            segments: e.segs.len() + a.segs.len(),
            dropped_total: inner.dropped_total,
            corrupt_total: inner.corrupt_total,
            stills: inner.stills.len() as u64,
            still_bytes: inner.stills.bytes(),
            stills_dropped_total: inner.stills_dropped_total,
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

    fn opts(max: u64) -> Options {
        Options::new(
            max,
            crate::config::SyncMode::Always,
            Duration::from_millis(200),
        )
    }

    #[test]
    fn stills_wait_for_records_go_one_at_a_time_and_survive_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let clock = Arc::new(crate::clock::FixedClock::new(1_000, true));
        let (b, _) = Buffer::open(d.path(), opts(1 << 20), clock.clone()).unwrap();
        let ev = b.append_blocking(event(1)).unwrap();
        b.append_still_blocking(ev.seq, ev.id, "cam0001", b"\xff\xd8one")
            .unwrap();
        b.append_still_blocking(ev.seq + 100, 7, "cam0001", b"\xff\xd8two")
            .unwrap();
        assert_eq!(b.stats().stills, 2);
        // The event goes first; its still only once it is acknowledged.
        assert_eq!(b.next_still(), None);
        let r = b.next_unsent().unwrap();
        assert_eq!(b.next_still(), None, "the event is in flight");
        b.ack(r.class(), r.seq);
        let s = b.next_still().unwrap();
        assert_eq!(
            (s.meta.seq, s.meta.event_id, &s.jpeg[..]),
            (ev.seq, ev.id, &b"\xff\xd8one"[..])
        );
        assert_eq!(b.next_still(), None, "one still in flight at a time");
        b.rewind();
        assert_eq!(
            b.next_still(),
            None,
            "the records' reconnect leaves the still link alone"
        );
        b.rewind_stills();
        assert_eq!(
            b.next_still().unwrap().meta.seq,
            ev.seq,
            "sent again after a reconnect"
        );
        assert_eq!(b.ack_still(ev.seq), Some(5));
        b.close();
        drop(b);
        let (b, rec) = Buffer::open(d.path(), opts(1 << 20), clock).unwrap();
        assert_eq!(rec.stills, 1, "{rec:?}");
        assert!(rec.strays.is_empty(), "{rec:?}");
        assert_eq!(b.next_still().unwrap().jpeg, b"\xff\xd8two");
        b.close();
    }

    #[test]
    fn records_evict_stills_first_and_stills_keep_their_own_bound() {
        let d = tempfile::tempdir().unwrap();
        let clock = Arc::new(crate::clock::FixedClock::new(1_000, true));
        let mut o = opts(256 * 1024);
        o.still_max_bytes = 40 * 1024;
        let (b, _) = Buffer::open(d.path(), o.clone(), clock.clone()).unwrap();
        let jpeg = vec![0xAB; 10 * 1024];
        for i in 0..10u64 {
            b.append_still_blocking(i, i as u128, "cam0001", &jpeg)
                .unwrap();
        }
        let st = b.stats();
        assert!(st.still_bytes <= 40 * 1024, "{st:?}");
        assert_eq!(st.stills, 3, "{st:?}");
        assert_eq!(st.stills_dropped_total, 7);
        // A still larger than its whole bound is refused, the others stay.
        assert!(matches!(
            b.append_still_blocking(99, 99, "cam0001", &vec![0u8; 50 * 1024]),
            Err(AppendError::Full(_))
        ));
        assert_eq!(b.stats().stills, 3);
        // Records filling max_bytes push every still out before any record goes.
        let mut n = 0;
        while b.stats().stills > 0 {
            b.append_blocking(event(n)).unwrap();
            n += 1;
            assert!(n < 10_000);
        }
        assert_eq!(
            b.stats().dropped_total,
            0,
            "no record was evicted for a still"
        );
        assert_eq!(b.stats().events, n);
        b.close();
        drop(b);
        // The evicted stills were reported (at close at the latest).
        let (b, _) = Buffer::open(d.path(), o, clock).unwrap();
        let mut reported = 0;
        while let Some(r) = b.next_unsent() {
            if let Body::Alert { kind, detail, .. } = &r.body {
                assert_eq!(kind, "buffer_dropped");
                let v: serde_json::Value = serde_json::from_str(detail).unwrap();
                reported += v["stills"].as_u64().unwrap();
            }
        }
        assert_eq!(reported, 10);
        b.close();
    }

    #[test]
    fn the_count_of_evicted_stills_survives_a_crash_before_its_report() {
        let d = tempfile::tempdir().unwrap();
        let clock = Arc::new(crate::clock::FixedClock::new(1_000, true));
        let mut o = opts(256 * 1024);
        o.still_max_bytes = 20 * 1024;
        let (b, _) = Buffer::open(d.path(), o.clone(), clock.clone()).unwrap();
        let jpeg = vec![0xAB; 8 * 1024];
        for i in 0..5u64 {
            b.append_still_blocking(i, i as u128, "cam0001", &jpeg)
                .unwrap();
        }
        assert_eq!(b.stats().stills_dropped_total, 3);
        // A crash: the handle is dropped without close, before the 10 s report.
        std::mem::forget(b);
        let dir = d.path().join("buffer");
        std::fs::remove_file(dir.join("lock")).ok();
        let (b, _) = Buffer::open_on(Arc::new(crate::durable::Os), d.path(), o, clock).unwrap();
        b.close();
        let mut reported = 0;
        while let Some(r) = b.next_unsent() {
            if let Body::Alert { detail, .. } = &r.body {
                let v: serde_json::Value = serde_json::from_str(detail).unwrap();
                reported += v["stills"].as_u64().unwrap_or(0);
            }
        }
        assert_eq!(reported, 3, "reported after the restart");
    }
}
