//! Crash states of the buffer (the idea of the ALICE and CrashMonkey work): the buffer runs
//! on a model filesystem that records, after every operation, what a power cut at that
//! instant could leave on disk; for every such instant and several ways the cut can fall,
//! recovery must succeed, every record answered as accepted (and not yet acknowledged) must
//! be there with its id, and the next seq must be larger than any seq handed out before.
//!
//! The model's rules (the ones `durable` states and the code relies on):
//! - a file's data is durable up to its last `sync_data`; after a cut it holds that, and in
//!   the "torn" and "zero tail" variants also half of the unsynced tail or zeros up to its
//!   length (a size that reached the disk before the data);
//! - a name (create, rename, unlink, mkdir) is durable once its directory is synced; a name
//!   is reachable only through durable directories. The "everything" variant keeps every
//!   operation (a process crash: the kernel still writes what it was given), and "names as
//!   now" keeps every name with only synced data (metadata journaled ahead of data).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use camgw::buffer::{Buffer, Options};
use camgw::clock::FixedClock;
use camgw::config::SyncMode;
use camgw::durable::{Fs, FsFile, Meta};
use camgw::record::{AlertKind, Body, Class, MotionState, NewRecord, Source};

#[derive(Clone, Default)]
struct Ino {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ent {
    File(usize),
    Dir,
}

/// The model filesystem's state: inodes, the names as the running process sees them, and
/// the names a cut would keep.
#[derive(Clone)]
struct Disk {
    inos: Vec<Ino>,
    names: BTreeMap<PathBuf, Ent>,
    durable: BTreeMap<PathBuf, Ent>,
}

#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Only what was synced.
    Durable,
    /// Synced data plus half of each file's unsynced appended tail.
    Torn,
    /// Every operation (the process died, the kernel did not).
    Everything,
    /// Every name, with only synced data, zero-filled to the size the process saw.
    ZeroTail,
}

const CUTS: [Cut; 4] = [Cut::Durable, Cut::Torn, Cut::Everything, Cut::ZeroTail];

impl Disk {
    fn new(root: &Path) -> Disk {
        let mut names = BTreeMap::new();
        for a in root.ancestors() {
            names.insert(a.to_path_buf(), Ent::Dir);
        }
        Disk {
            inos: Vec::new(),
            durable: names.clone(),
            names,
        }
    }

    /// A new empty file named `path`; its inode.
    fn new_file(&mut self, path: &Path) -> usize {
        self.inos.push(Ino::default());
        self.names
            .insert(path.to_path_buf(), Ent::File(self.inos.len() - 1));
        self.inos.len() - 1
    }

    /// What the disk holds after a cut of kind `cut`.
    fn cut(&self, cut: Cut) -> Disk {
        let source = match cut {
            Cut::Durable | Cut::Torn => &self.durable,
            Cut::Everything | Cut::ZeroTail => &self.names,
        };
        // Reachable only through directories that are themselves there.
        let names: BTreeMap<PathBuf, Ent> = source
            .iter()
            .filter(|(p, _)| {
                p.ancestors()
                    .skip(1)
                    .all(|a| source.get(a) == Some(&Ent::Dir))
            })
            .map(|(p, e)| (p.clone(), *e))
            .collect();
        let inos = self
            .inos
            .iter()
            .map(|i| {
                let data = match cut {
                    Cut::Durable => i.durable.clone(),
                    Cut::Everything => i.data.clone(),
                    Cut::Torn => {
                        let mut d = i.durable.clone();
                        if i.data.len() > d.len() && i.data.starts_with(&d) {
                            let tail = &i.data[d.len()..];
                            d.extend_from_slice(&tail[..tail.len() / 2]);
                        }
                        d
                    }
                    Cut::ZeroTail => {
                        let mut d = i.durable.clone();
                        d.resize(i.data.len().max(d.len()), 0);
                        d
                    }
                };
                Ino {
                    durable: data.clone(),
                    data,
                }
            })
            .collect();
        Disk {
            inos,
            durable: names.clone(),
            names,
        }
    }
}

/// The model filesystem: the live disk and, when recording, a copy after every operation.
struct Model {
    disk: Mutex<Disk>,
    states: Mutex<Option<Vec<(String, Disk)>>>,
}

impl Model {
    fn new(disk: Disk, record: bool) -> Arc<Model> {
        let states = record.then(|| vec![("start".to_string(), disk.clone())]);
        Arc::new(Model {
            disk: Mutex::new(disk),
            states: Mutex::new(states),
        })
    }

    /// Index of the latest recorded state: every operation done so far is in it.
    fn now(&self) -> usize {
        self.states
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, |s| s.len() - 1)
    }

    fn op<T>(
        &self,
        what: impl FnOnce() -> String,
        f: impl FnOnce(&mut Disk) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut d = self.disk.lock().unwrap();
        let r = f(&mut d)?;
        if let Some(s) = self.states.lock().unwrap().as_mut() {
            s.push((what(), d.clone()));
        }
        Ok(r)
    }

    fn look<T>(&self, f: impl FnOnce(&Disk) -> io::Result<T>) -> io::Result<T> {
        f(&self.disk.lock().unwrap())
    }
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", p.display()),
    )
}

fn file_of(d: &Disk, p: &Path) -> io::Result<usize> {
    match d.names.get(p) {
        Some(Ent::File(i)) => Ok(*i),
        Some(Ent::Dir) => Err(io::Error::other(format!("{} is a directory", p.display()))),
        None => Err(not_found(p)),
    }
}

fn parent_ok(d: &Disk, p: &Path) -> io::Result<()> {
    match p.parent().and_then(|a| d.names.get(a)) {
        Some(Ent::Dir) => Ok(()),
        _ => Err(not_found(p)),
    }
}

struct ModelFile {
    model: Arc<Model>,
    ino: usize,
}

impl FsFile for ModelFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let i = self.ino;
        self.model.op(
            || format!("write {} bytes to inode {i}", bytes.len()),
            |d| {
                d.inos[i].data.extend_from_slice(bytes);
                Ok(())
            },
        )
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.model.look(|d| {
            let data = &d.inos[self.ino].data;
            let end = offset as usize + buf.len();
            if end > data.len() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.copy_from_slice(&data[offset as usize..end]);
            Ok(())
        })
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let i = self.ino;
        self.model.op(
            || format!("cut inode {i} to {len}"),
            |d| {
                d.inos[i].data.resize(len as usize, 0);
                Ok(())
            },
        )
    }
    fn sync_data(&self) -> io::Result<()> {
        let i = self.ino;
        self.model.op(
            || format!("fsync inode {i}"),
            |d| {
                d.inos[i].durable = d.inos[i].data.clone();
                Ok(())
            },
        )
    }
    fn try_clone(&self) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(ModelFile {
            model: self.model.clone(),
            ino: self.ino,
        }))
    }
}

/// The [`Fs`] on a shared [`Model`].
#[derive(Clone)]
struct ModelFs(Arc<Model>);

impl ModelFs {
    fn file(&self, ino: usize) -> Box<dyn FsFile> {
        Box::new(ModelFile {
            model: self.0.clone(),
            ino,
        })
    }
}

impl Fs for ModelFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.0.op(
            || format!("mkdir -p {}", dir.display()),
            |d| {
                for a in dir.ancestors() {
                    match d.names.get(a) {
                        Some(Ent::Dir) => {}
                        Some(Ent::File(_)) => return Err(io::Error::other("a file in the way")),
                        None => {
                            d.names.insert(a.to_path_buf(), Ent::Dir);
                        }
                    }
                }
                Ok(())
            },
        )
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.op(
            || format!("fsync dir {}", dir.display()),
            |d| {
                if d.names.get(dir) != Some(&Ent::Dir) {
                    return Err(not_found(dir));
                }
                let children: BTreeSet<PathBuf> = d
                    .names
                    .keys()
                    .chain(d.durable.keys())
                    .filter(|p| p.parent() == Some(dir))
                    .cloned()
                    .collect();
                for c in children {
                    match d.names.get(&c) {
                        Some(e) => {
                            d.durable.insert(c, *e);
                        }
                        None => {
                            d.durable.remove(&c);
                        }
                    }
                }
                Ok(())
            },
        )
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.0.look(|d| {
            if d.names.get(dir) != Some(&Ent::Dir) {
                return Err(not_found(dir));
            }
            Ok(d.names
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect())
        })
    }
    fn metadata(&self, path: &Path) -> io::Result<Meta> {
        self.0.look(|d| match d.names.get(path) {
            Some(Ent::File(i)) => Ok(Meta {
                is_file: true,
                len: d.inos[*i].data.len() as u64,
            }),
            Some(Ent::Dir) => Ok(Meta {
                is_file: false,
                len: 0,
            }),
            None => Err(not_found(path)),
        })
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.0.look(|d| Ok(d.inos[file_of(d, path)?].data.clone()))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.0.op(
            || format!("unlink {}", path.display()),
            |d| {
                file_of(d, path)?;
                d.names.remove(path);
                Ok(())
            },
        )
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.op(
            || format!("rename {} -> {}", from.display(), to.display()),
            |d| {
                let e = *d.names.get(from).ok_or_else(|| not_found(from))?;
                parent_ok(d, to)?;
                let moved: Vec<(PathBuf, Ent)> = d
                    .names
                    .iter()
                    .filter(|(p, _)| p.starts_with(from))
                    .map(|(p, e)| (p.clone(), *e))
                    .collect();
                for (p, _) in &moved {
                    d.names.remove(p);
                }
                d.names.insert(to.to_path_buf(), e);
                for (p, e) in moved {
                    if p != from {
                        d.names.insert(to.join(p.strip_prefix(from).unwrap()), e);
                    }
                }
                Ok(())
            },
        )
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let ino = self.0.op(
            || format!("create {}", path.display()),
            |d| {
                if d.names.contains_key(path) {
                    return Err(io::ErrorKind::AlreadyExists.into());
                }
                parent_ok(d, path)?;
                Ok(d.new_file(path))
            },
        )?;
        Ok(self.file(ino))
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let ino = self.0.op(
            || format!("create or truncate {}", path.display()),
            |d| {
                parent_ok(d, path)?;
                if let Some(Ent::File(i)) = d.names.get(path) {
                    let i = *i;
                    d.inos[i].data.clear();
                    return Ok(i);
                }
                Ok(d.new_file(path))
            },
        )?;
        Ok(self.file(ino))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let ino = self.0.look(|d| file_of(d, path))?;
        Ok(self.file(ino))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.open_read(path)
    }
    fn lock(&self, _path: &Path) -> io::Result<Box<dyn Send + Sync>> {
        Ok(Box::new(()))
    }
}

const ROOT: &str = "/data";

fn opts(max_bytes: u64, sync: SyncMode) -> Options {
    Options {
        max_bytes,
        sync,
        sync_interval: Duration::from_millis(200),
        segment_bytes: 700, // several segments, sealed and opened along the way
        still_max_bytes: max_bytes / 4,
    }
}

fn open(fs: &ModelFs, max_bytes: u64, sync: SyncMode) -> io::Result<Buffer> {
    let clock = Arc::new(FixedClock::new(1_796_000_000_000, true));
    Buffer::open_on(
        Arc::new(fs.clone()),
        Path::new(ROOT),
        opts(max_bytes, sync),
        clock,
    )
    .map(|(b, _)| b)
}

fn record(i: u64) -> NewRecord {
    let body = if i % 7 == 3 {
        Body::alert(
            AlertKind::CameraDown,
            Some("cam01"),
            serde_json::json!({"n": i}),
        )
    } else {
        Body::motion(
            "cam01",
            Source::Ingest,
            MotionState::Pulse,
            serde_json::json!({"n": i}),
        )
    };
    NewRecord {
        ts_ms: 1_796_000_000_000 + i as i64,
        clock_synced: true,
        body,
    }
}

/// What the workload saw, with the index of the model state that held every operation
/// done by then.
struct Trace {
    sync: SyncMode,
    /// seq -> (id, class, durable from): the state from which a cut must keep it (its
    /// acceptance with `sync = "always"`; the flush after it with "interval").
    accepted: BTreeMap<u64, (u128, Class, usize)>,
    /// seq -> acknowledged at
    acked: BTreeMap<u64, usize>,
    /// The largest seq handed out by each state index (accepted or read).
    handed_out: Vec<(usize, u64)>,
}

impl Trace {
    fn new(sync: SyncMode) -> Trace {
        Trace {
            sync,
            accepted: BTreeMap::new(),
            acked: BTreeMap::new(),
            handed_out: Vec::new(),
        }
    }

    fn accept(&mut self, m: &Model, b: &Buffer, i: u64) {
        let rec = record(i);
        let class = rec.body.class();
        let a = b.append_blocking(rec).expect("append on a healthy disk");
        let at = m.now();
        let durable = match self.sync {
            SyncMode::Always => at,
            SyncMode::Interval => usize::MAX,
        };
        self.accepted.insert(a.seq, (a.id, class, durable));
        self.handed_out.push((at, a.seq));
    }

    /// `flush_blocking`: from here on a cut keeps everything accepted before it.
    fn flush(&mut self, m: &Model, b: &Buffer) {
        b.flush_blocking().unwrap();
        let now = m.now();
        for (_, _, at) in self.accepted.values_mut() {
            if *at == usize::MAX {
                *at = now;
            }
        }
    }

    fn read_and_ack(&mut self, m: &Model, b: &Buffer, n: usize) {
        for _ in 0..n {
            let Some(r) = b.next_unsent() else { break };
            // From the state before the ack on, the record may be gone (a maintenance tick
            // can persist the frontier right after it).
            self.acked.insert(r.seq, m.now());
            b.ack(r.body.class(), r.seq);
        }
    }

    fn max_handed_out(&self, k: usize) -> u64 {
        self.handed_out
            .iter()
            .filter(|(at, _)| *at <= k)
            .map(|(_, s)| *s)
            .max()
            .unwrap_or(0)
    }
}

/// Opens the buffer on a crash state and checks it; returns how many required records were
/// missing and how many the recovered `buffer_dropped` reports account for.
fn check(
    disk: &Disk,
    trace: &Trace,
    k: usize,
    cut: Cut,
    what: &str,
    max_bytes: u64,
) -> (usize, u64) {
    let fs = ModelFs(Model::new(disk.clone(), false));
    let b = open(&fs, max_bytes, trace.sync)
        .unwrap_or_else(|e| panic!("recovery failed after a cut ({cut:?}) after #{k} {what}: {e}"));
    let mut seen: BTreeMap<u64, u128> = BTreeMap::new();
    let mut reported_dropped = 0;
    let mut last = [0u64; 2];
    while let Some(r) = b.next_unsent() {
        let c = r.body.class().index();
        assert!(
            r.seq > last[c],
            "seq order after a cut ({cut:?}) after #{k} {what}"
        );
        last[c] = r.seq;
        assert!(seen.insert(r.seq, r.id).is_none(), "seq {} twice", r.seq);
        if let Body::Alert { kind, detail, .. } = &r.body {
            if kind == "buffer_dropped" {
                let d: serde_json::Value = serde_json::from_str(detail).unwrap();
                reported_dropped += d["count"].as_u64().unwrap();
            }
        }
    }
    let mut missing = 0;
    for (seq, (id, _, at)) in &trace.accepted {
        let required = *at <= k && trace.acked.get(seq).is_none_or(|a| *a > k);
        match seen.get(seq) {
            Some(got) => assert_eq!(
                got, id,
                "seq {seq} came back with another id ({cut:?}, #{k} {what})"
            ),
            None if required => missing += 1,
            None => {}
        }
    }
    // The next seq is new: never one that was handed out before the cut.
    let next = b.append_blocking(record(10_000)).unwrap_or_else(|e| {
        panic!(
            "append after a cut ({cut:?}) after #{k} {what}: {e}; {:?}; recovered {} records",
            b.stats(),
            seen.len()
        )
    });
    assert!(
        next.seq > trace.max_handed_out(k),
        "seq {} reused after a cut ({cut:?}) after #{k} {what}",
        next.seq
    );
    b.close();
    (missing, reported_dropped)
}

fn states(m: &Model) -> Vec<(String, Disk)> {
    m.states.lock().unwrap().take().unwrap()
}

#[test]
fn every_crash_state_of_append_ack_delete_and_recovery_recovers_what_was_accepted() {
    let max = 64 << 20;
    let model = Model::new(Disk::new(Path::new(ROOT)), true);
    let fs = ModelFs(model.clone());
    let mut t = Trace::new(SyncMode::Always);
    let b = open(&fs, max, t.sync).unwrap();
    for i in 0..30 {
        t.accept(&model, &b, i);
    }
    t.read_and_ack(&model, &b, 18);
    t.flush(&model, &b); // acknowledgements persisted, delivered segments deleted
    for i in 30..40 {
        t.accept(&model, &b, i);
    }
    b.close();
    // A second run: recovery's own operations are crash points too.
    let b = open(&fs, max, t.sync).unwrap();
    for i in 40..46 {
        t.accept(&model, &b, i);
    }
    t.read_and_ack(&model, &b, 100);
    t.flush(&model, &b);
    b.close();
    let states = states(&model);
    assert!(
        states.len() > 150,
        "too few operations to mean much: {}",
        states.len()
    );
    let mut checked = 0;
    for (k, (what, disk)) in states.iter().enumerate() {
        for cut in CUTS {
            let (missing, _) = check(&disk.cut(cut), &t, k, cut, what, max);
            assert_eq!(
                missing, 0,
                "accepted records lost after a cut ({cut:?}) after #{k} {what}"
            );
            checked += 1;
        }
    }
    eprintln!(
        "{} operations, {checked} crash states recovered",
        states.len()
    );
}

/// Eviction under both sync modes: a record that a cut may no longer hold must be counted
/// in a `buffer_dropped` report that the cut kept (the report is durable before any victim
/// goes), and an append still fits after the eviction it caused.
fn eviction_accounts_for_what_it_dropped(sync: SyncMode) {
    let max = 6000;
    let model = Model::new(Disk::new(Path::new(ROOT)), true);
    let fs = ModelFs(model.clone());
    let mut t = Trace::new(sync);
    let b = open(&fs, max, sync).unwrap();
    for i in 0..120 {
        t.accept(&model, &b, i);
        if i % 10 == 9 {
            t.flush(&model, &b);
        }
    }
    b.close();
    let states = states(&model);
    let mut evictions = 0;
    for (k, (what, disk)) in states.iter().enumerate() {
        for cut in CUTS {
            let (missing, reported) = check(&disk.cut(cut), &t, k, cut, what, max);
            assert!(
                missing as u64 <= reported,
                "{missing} accepted records gone but {reported} reported dropped ({sync:?}, {cut:?}, #{k} {what})"
            );
            evictions = evictions.max(reported);
        }
    }
    assert!(
        evictions > 0,
        "the workload never evicted: it tests nothing"
    );
}

#[test]
fn every_crash_state_of_eviction_accounts_for_what_it_dropped_with_sync_always() {
    eviction_accounts_for_what_it_dropped(SyncMode::Always);
}

#[test]
fn every_crash_state_of_eviction_accounts_for_what_it_dropped_with_sync_interval() {
    eviction_accounts_for_what_it_dropped(SyncMode::Interval);
}
