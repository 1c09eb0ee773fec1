//! The buffer under faults, end to end: eviction at max_bytes, damaged segment files, a full
//! disk, and the postcard payload encoding.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use camgw::buffer::frame::{self, Frame, HEADER_LEN};
use camgw::record::{WireAlert, WireEvent};
use common::*;

const T: &str = "camgw/w-test/gw-test";

fn segments(data_dir: &Path, class: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(data_dir.join("buffer").join(class))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// (offset, frame length, seq) of every frame in an intact segment file.
fn frames(path: &Path) -> Vec<(usize, usize, u64)> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = HEADER_LEN;
    while pos < bytes.len() {
        match frame::decode_frame(&bytes[pos..]) {
            Frame::Ok(rec, n) => {
                out.push((pos, n, rec.seq));
                pos += n;
            }
            other => panic!("{} is not intact at {pos}: {other:?}", path.display()),
        }
    }
    out
}

#[test]
fn at_max_bytes_the_oldest_events_are_evicted_and_the_count_is_reported() {
    let mut broker = Broker::start();
    let gate = StallProxy::start(broker.port);
    let agent = Agent::start(gate.port, "--\n[buffer]\nmax_bytes = 65536\n");
    gate.close();
    broker.stop();
    let mut accepted = Vec::new();
    for i in 0..3000 {
        accepted.push(agent.accepted(if i % 2 == 0 { "cam01" } else { "cam02" }));
    }
    broker.restart();
    let mut sub = Subscriber::new(broker.port, &format!("{T}/+"));
    gate.open();
    // Each report once: a QoS 1 re-send repeats one with its seq.
    let dropped = |m: &[Msg]| -> u64 {
        distinct(m, "alert")
            .iter()
            .filter(|a| a["kind"] == "buffer_dropped")
            .map(|a| a["detail"]["count"].as_u64().unwrap())
            .sum()
    };
    let total = accepted.len() as u64;
    sub.wait_until(
        Duration::from_secs(30),
        "every event delivered or reported dropped",
        |m| event_seqs(m).0.len() as u64 + dropped(m) >= total,
    );
    let (got, _) = event_seqs(&sub.seen);
    let n_dropped = dropped(&sub.seen);
    assert!(
        n_dropped > 1000,
        "3000 events of ~75 bytes cannot fit 64 KiB: {n_dropped}"
    );
    assert_eq!(got.len() as u64 + n_dropped, total);
    // The survivors are exactly the newest ones.
    let newest: BTreeSet<u64> = accepted[accepted.len() - got.len()..]
        .iter()
        .copied()
        .collect();
    assert_eq!(got, newest, "eviction takes the oldest events first");
    let disk: u64 = ["events", "alerts"]
        .iter()
        .flat_map(|c| segments(&agent.data_dir, c))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(disk <= 65536 + 4096, "disk use {disk} stays near max_bytes");
}

#[test]
fn damaged_segments_and_stray_files_skip_only_what_is_damaged() {
    let mut broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut agent = Agent::in_dir(
        tmp.path(),
        data.clone(),
        broker.port,
        "--\n[buffer]\nmax_bytes = 262144\n",
    );
    broker.stop();
    let mut accepted = BTreeSet::new();
    for _ in 0..800 {
        accepted.insert(agent.accepted("cam01"));
    }
    assert_eq!(agent.term().code(), Some(0));
    let segs = segments(&data, "events");
    assert!(segs.len() >= 3, "want several segments, got {}", segs.len());

    // 1. Flip one bit in the payload of the 10th record of the first segment.
    let a = frames(&segs[0]);
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[a[9].0 + 20] ^= 0x04;
    std::fs::write(&segs[0], &bytes).unwrap();
    let mut expected = accepted.clone();
    expected.remove(&a[9].2);
    // 2. Cut the second segment in the middle of its 50th record.
    let b = frames(&segs[1]);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&segs[1])
        .unwrap();
    f.set_len((b[49].0 + 5) as u64).unwrap();
    for (_, _, seq) in &b[49..] {
        expected.remove(seq);
    }
    // 3. An empty segment and stray files.
    std::fs::write(data.join("buffer/events/00000000000099999999.seg"), b"").unwrap();
    std::fs::write(
        data.join("buffer/events/notes.txt"),
        b"left by a technician",
    )
    .unwrap();
    std::fs::write(data.join("buffer/core"), b"\x7fELF").unwrap();

    broker.restart();
    let mut sub = Subscriber::new(broker.port, &format!("{T}/+"));
    agent.spawn();
    sub.wait_until(
        Duration::from_secs(30),
        "every intact record and the report",
        |m| {
            event_seqs(m).0.len() >= expected.len()
                && m.iter().any(|m| m.json()["kind"] == "buffer_corrupt")
        },
    );
    sub.drain_for(Duration::from_millis(300));
    assert_eq!(
        event_seqs(&sub.seen).0,
        expected,
        "exactly the intact records"
    );
    let report = sub
        .on("alert")
        .into_iter()
        .find(|a| a["kind"] == "buffer_corrupt")
        .unwrap();
    let d = &report["detail"];
    assert_eq!(d["corrupt_records"], 1, "{report}");
    assert!(d["torn_tail_bytes"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(d["empty_segments_removed"], 1, "{report}");
    let strays = d["stray_files"].to_string();
    assert!(
        strays.contains("notes.txt") && strays.contains("core"),
        "{report}"
    );
    assert!(
        data.join("buffer/events/notes.txt").exists(),
        "stray files are left alone"
    );
    assert!(!data.join("buffer/events/00000000000099999999.seg").exists());
}

#[test]
fn a_segment_that_cannot_be_read_is_quarantined_and_the_rest_is_delivered() {
    // The crash loop on a failing SD card: any I/O error while opening the buffer made every
    // start fail. Now one bad segment is set aside, reported, and the rest goes out.
    let mut broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut agent = Agent::in_dir(
        tmp.path(),
        data.clone(),
        broker.port,
        "--\n[buffer]\nmax_bytes = 262144\n",
    );
    broker.stop();
    let mut accepted = BTreeSet::new();
    for _ in 0..800 {
        accepted.insert(agent.accepted("cam01"));
    }
    assert_eq!(agent.term().code(), Some(0));
    let segs = segments(&data, "events");
    assert!(segs.len() >= 3, "want several segments, got {}", segs.len());
    // 1. A directory where a segment should be (EISDIR on read).
    let dir_seg = data.join("buffer/events/00000000000088888888.seg");
    std::fs::create_dir(&dir_seg).unwrap();
    // 2. A "segment" far larger than any the agent writes (garbage on a failing card):
    //    never read into memory.
    let huge = data.join("buffer/events/00000000000077777777.seg");
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(64 << 20).unwrap();
    // 3. A real segment made unreadable: replaced by a dangling symlink (ENOENT on open).
    let lost: BTreeSet<u64> = frames(&segs[1]).iter().map(|f| f.2).collect();
    std::fs::remove_file(&segs[1]).unwrap();
    std::os::unix::fs::symlink("/nonexistent/segment", &segs[1]).unwrap();
    let expected: BTreeSet<u64> = accepted.difference(&lost).copied().collect();

    broker.restart();
    let mut sub = Subscriber::new(broker.port, &format!("{T}/+"));
    agent.spawn();
    sub.wait_until(
        Duration::from_secs(30),
        "every readable record and the report",
        |m| {
            event_seqs(m).0.len() >= expected.len()
                && m.iter().any(|m| m.json()["kind"] == "buffer_corrupt")
        },
    );
    assert_eq!(event_seqs(&sub.seen).0, expected, "the readable records");
    let report = sub
        .on("alert")
        .into_iter()
        .find(|a| a["kind"] == "buffer_corrupt")
        .unwrap();
    let q = report["detail"]["quarantined"].as_array().unwrap().clone();
    assert_eq!(q.len(), 3, "{report}");
    let q = serde_json::Value::Array(q).to_string();
    assert!(
        q.contains("88888888") && q.contains("not a regular file"),
        "{q}"
    );
    assert!(
        q.contains("77777777") && q.contains("larger than any segment"),
        "{q}"
    );
    // Set aside, not deleted.
    let qdir = data.join("buffer/quarantine");
    assert!(qdir.join("events-00000000000088888888.seg").is_dir());
    assert!(qdir.join("events-00000000000077777777.seg").exists());
    assert!(!dir_seg.exists() && !huge.exists());
    // Under qemu-user the figure is the emulator's (75 MiB at rest in CI), so the bound on the
    // agent's own memory is checked natively.
    if !emulated_suite() {
        let rss = agent.rss_kb().1;
        assert!(
            rss < 32 * 1024,
            "peak RSS {rss} KiB: the 64 MiB file was not read"
        );
    }
}

struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// How a test fills the disk under the agent and frees it again.
enum Disk {
    /// A real 1 MiB tmpfs, filled with a file (needs root to mount).
    Tmpfs(PathBuf),
    /// The agent's filesystem seam (`CAMGW_FAULTS=disk_full=FLAG`): full while FLAG exists.
    Flag(PathBuf),
}

impl Disk {
    fn fill(&self) {
        match self {
            Disk::Tmpfs(mnt) => {
                use std::io::Write;
                let mut f = std::fs::File::create(mnt.join("filler")).unwrap();
                let chunk = vec![0xA5u8; 4096];
                while f.write_all(&chunk).is_ok() {}
            }
            Disk::Flag(flag) => std::fs::write(flag, b"full").unwrap(),
        }
    }
    fn free(&self) {
        match self {
            Disk::Tmpfs(mnt) => std::fs::remove_file(mnt.join("filler")).unwrap(),
            Disk::Flag(flag) => std::fs::remove_file(flag).unwrap(),
        }
    }
}

/// On a full disk ingest answers 503 (never 202 for what it cannot keep); once space returns
/// it takes events again without a restart, and everything it accepted is delivered.
fn full_disk_answers_503_loses_nothing_and_recovers(tmp: &Path, data: PathBuf, disk: Disk) {
    let env = match &disk {
        Disk::Flag(flag) => vec![(
            "CAMGW_FAULTS".to_string(),
            format!("disk_full={}", flag.display()),
        )],
        Disk::Tmpfs(_) => Vec::new(),
    };
    let mut broker = Broker::start();
    let gate = StallProxy::start(broker.port);
    let mut agent = Agent::in_dir_env(
        tmp,
        data,
        gate.port,
        "--\n[buffer]\nsync = \"always\"\n",
        env,
    );
    gate.close();
    broker.stop();
    let mut accepted = BTreeSet::new();
    for _ in 0..50 {
        accepted.insert(agent.accepted("cam01"));
    }
    disk.fill();
    let mut saw_503 = false;
    for _ in 0..400 {
        let (code, body) = agent.motion("cam02", "pulse");
        match code {
            202 => {
                accepted.insert(body["seq"].as_u64().unwrap());
            }
            503 => {
                assert!(body["error"].as_str().is_some());
                saw_503 = true;
                break;
            }
            other => panic!("unexpected {other} {body}"),
        }
    }
    assert!(
        saw_503,
        "a full disk must refuse with 503:\n{}",
        agent.log()
    );
    // Space returns; the agent takes events again without a restart.
    disk.free();
    for _ in 0..20 {
        accepted.insert(agent.accepted("cam01"));
    }
    broker.restart();
    let mut sub = Subscriber::new(broker.port, &format!("{T}/event"));
    gate.open();
    sub.wait_until(Duration::from_secs(30), "everything accepted", |m| {
        event_seqs(m).0.is_superset(&accepted)
    });
    assert_seq_order(&sub.seen, "event");
    agent.kill9();
}

#[test]
fn a_full_disk_answers_503_loses_nothing_and_recovers_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let flag = tmp.path().join("disk-full");
    full_disk_answers_503_loses_nothing_and_recovers(
        tmp.path(),
        tmp.path().join("data"),
        Disk::Flag(flag),
    );
}

#[test]
fn a_full_tmpfs_answers_503_loses_nothing_and_recovers_by_itself() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("*** SKIPPED: mounting a small tmpfs needs root (CI runs as root); a_full_disk_answers_503_loses_nothing_and_recovers_by_itself covers the same through the filesystem seam ***");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs");
    let _guard = Tmpfs(mnt.clone());
    full_disk_answers_503_loses_nothing_and_recovers(
        tmp.path(),
        mnt.join("data"),
        Disk::Tmpfs(mnt.clone()),
    );
}

#[test]
fn postcard_payloads_round_trip_every_field_of_an_alert_and_an_event() {
    let broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // A stray file makes recovery raise a buffer_corrupt alert at start.
    std::fs::create_dir_all(data.join("buffer")).unwrap();
    std::fs::write(data.join("buffer/stray.bin"), b"?").unwrap();
    let mut sub = Subscriber::new(broker.port, &format!("{T}/+"));
    let agent = Agent::in_dir(
        tmp.path(),
        data,
        broker.port,
        "payload = \"postcard\"\n--\n",
    );
    let seq = agent.accepted("cam02");
    sub.wait_until(Duration::from_secs(10), "alert and event", |m| {
        m.iter().any(|m| m.leaf() == "event") && m.iter().any(|m| m.leaf() == "alert")
    });
    let ev = sub.seen.iter().find(|m| m.leaf() == "event").unwrap();
    let ev: WireEvent = postcard::from_bytes(&ev.payload).expect("postcard event");
    assert_eq!(ev.seq, seq);
    assert_eq!(ev.id.len(), 36);
    assert!(camgw::clock::parse_rfc3339_ms(&ev.ts).is_some());
    assert_eq!(
        (
            ev.kind.as_str(),
            ev.camera.as_str(),
            ev.source.as_str(),
            ev.state.as_str()
        ),
        ("motion", "cam02", "ingest", "pulse")
    );
    assert_eq!(ev.detail, "{}");
    let al = sub.seen.iter().find(|m| m.leaf() == "alert").unwrap();
    let al: WireAlert = postcard::from_bytes(&al.payload).expect("postcard alert");
    assert_eq!(al.kind, "buffer_corrupt");
    assert_eq!(al.camera, None);
    assert!(al.seq < ev.seq);
    let detail: serde_json::Value = serde_json::from_str(&al.detail).unwrap();
    assert!(detail["stray_files"].to_string().contains("stray.bin"));
    // Status stays JSON whatever the payload setting.
    assert!(sub
        .seen
        .iter()
        .any(|m| m.leaf() == "status" && m.json()["online"] == true));
    let _ = ev.clock_synced;
    let _ = al.clock_synced;
}

#[test]
fn an_unclean_shutdown_is_reported_with_what_the_sync_mode_put_at_risk() {
    let broker = Broker::start();
    let mut sub = Subscriber::new(broker.port, &format!("{T}/+"));
    // sync = "interval" (the default, 200 ms): a kill -9 stands in for the power cut.
    let mut agent = Agent::start(broker.port, "");
    agent.accepted("cam01");
    agent.kill9();
    agent.spawn();
    sub.wait_until(Duration::from_secs(15), "unclean_shutdown", |m| {
        m.iter().any(|m| m.json()["kind"] == "unclean_shutdown")
    });
    let a = sub
        .on("alert")
        .into_iter()
        .find(|a| a["kind"] == "unclean_shutdown")
        .unwrap();
    assert_eq!(a["detail"]["sync"], "interval", "{a}");
    assert_eq!(a["detail"]["accepted_records_at_risk_ms"], 200, "{a}");
    // A clean stop and start says nothing.
    assert_eq!(agent.term().code(), Some(0));
    agent.spawn();
    let seq = agent.accepted("cam01");
    // Alerts go out before events: once this event arrived, any start-up alert has too.
    sub.wait_until(
        Duration::from_secs(15),
        "the event after the clean restart",
        |m| event_seqs(m).0.contains(&seq),
    );
    // Delivery is at least once: an alert whose PUBACK had not come back before the SIGTERM
    // is sent again after the restart with its own seq. A second report would carry a new one.
    let unclean: std::collections::BTreeSet<u64> = sub
        .on("alert")
        .iter()
        .filter(|a| a["kind"] == "unclean_shutdown")
        .map(|a| a["seq"].as_u64().expect("alert seq"))
        .collect();
    assert_eq!(
        unclean.len(),
        1,
        "only the kill -9 is reported: {unclean:?}"
    );
}
