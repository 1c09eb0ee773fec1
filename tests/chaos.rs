//! Chaos harness: the agent (and, for comparison, a local Mosquitto bridge with persistence,
//! the usual store-and-forward set-up) runs against a real Mosquitto while a seeded script
//! injects faults: broker kill -9 and restart, gateway kill -9 and restart (with corrupted
//! buffer files between), a link that stalls silently, cameras flapping, motion bursts, and
//! the disk filling; on lossfs (tests/common/lossfs.rs) also real power cuts and SD-card
//! faults. An independent checker subscribes to the station broker and counts what arrived:
//! accepted, delivered, lost, duplicated, out of order, and how long each recovery took.
//!
//! CI runs short runs (`CAMGW_CHAOS_SECS`, default 30; 15 on lossfs). A long run on demand:
//! `CAMGW_CHAOS_SECS=600 CAMGW_CHAOS_SEED=7 cargo test --release --test chaos -- --nocapture`.
//! Each run writes `target/chaos/{system}-seed{seed}.json`.

#[path = "common/bridge.rs"]
mod bridge;
mod common;
#[path = "common/lossfs.rs"]
mod lossfs;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge::Bridge;
use common::*;

/// xorshift64*: a seeded generator, so a run can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

fn env_u64(k: &str, default: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A small tmpfs (so the disk can really fill), or a plain directory when not root; or
/// lossfs, the power-loss filesystem (real power cuts and SD-card faults).
struct Disk {
    path: PathBuf,
    mounted: bool,
    loss: Option<lossfs::LossFs>,
    _tmp: tempfile::TempDir,
}

impl Disk {
    fn new(size_mb: u64) -> Disk {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let mounted = is_root()
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
                .arg(&path)
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("*** disk-full faults skipped: mounting a tmpfs needs root ***");
        }
        Disk {
            path,
            mounted,
            loss: None,
            _tmp: tmp,
        }
    }

    /// lossfs: what is not made durable is gone at a cut.
    fn lossfs() -> Disk {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("card");
        let loss = lossfs::LossFs::mount(&path).expect("mount lossfs");
        Disk {
            path,
            mounted: false,
            loss: Some(loss),
            _tmp: tmp,
        }
    }

    /// Fills the filesystem to the last byte; returns the filler to remove.
    fn fill(&self) -> PathBuf {
        let f = self.path.join("filler");
        let mut file = std::fs::File::create(&f).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let small = [0u8; 512];
        while file.write_all(&small).is_ok() {}
        let _ = file.write_all(&[0u8]);
        f
    }

    /// Bytes the system keeps on the disk (the filler excluded).
    fn used_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(p) else {
                return 0;
            };
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name() != "filler")
                .map(|e| {
                    let Ok(m) = e.metadata() else { return 0 };
                    if m.is_dir() {
                        walk(&e.path())
                    } else {
                        m.len()
                    }
                })
                .sum()
        }
        walk(&self.path)
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// What the checker saw on the station broker.
#[derive(Default)]
struct Seen {
    /// Event seqs in arrival order (re-sends included).
    events: Vec<u64>,
    alerts: Vec<(u64, String)>,
}

/// The independent checker: its own connection to the station broker, resubscribing after
/// every reconnect, counting SUBACKs so a test can wait for it.
struct Checker {
    seen: Arc<Mutex<Seen>>,
    subacks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Checker {
    fn start(port: u16, filter: &str, seq_of: SeqOf) -> Checker {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let subacks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, sa, st, filter) = (
            seen.clone(),
            subacks.clone(),
            stop.clone(),
            filter.to_string(),
        );
        std::thread::spawn(move || {
            let mut o = rumqttc::MqttOptions::new(
                format!("chaos-checker-{}", free_port()),
                "127.0.0.1",
                port,
            );
            o.set_keep_alive(Duration::from_secs(5));
            o.set_max_packet_size(1 << 20, 1 << 20);
            let (client, mut conn) = rumqttc::Client::new(o, 1000);
            for ev in conn.iter() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                match ev {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(filter.clone(), rumqttc::QoS::AtLeastOnce);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        sa.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        if let Some((leaf, seq, kind)) = seq_of(&p.payload) {
                            let mut g = s.lock().unwrap();
                            if leaf == "event" {
                                g.events.push(seq);
                            } else {
                                g.alerts.push((seq, kind));
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        let c = Checker {
            seen,
            subacks,
            stop,
        };
        c.wait_subscribed(0);
        c
    }

    fn wait_subscribed(&self, before: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.subacks.load(Ordering::SeqCst) <= before {
            assert!(Instant::now() < deadline, "the checker could not subscribe");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn received(&self) -> BTreeSet<u64> {
        self.seen.lock().unwrap().events.iter().copied().collect()
    }

    /// Waits until every seq in `want` arrived; returns how long that took.
    fn wait_for(&self, want: &BTreeSet<u64>, timeout: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        loop {
            let got = self.received();
            if want.is_subset(&got) {
                return Some(t0.elapsed());
            }
            if t0.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// (topic leaf, seq, alert kind) of a message, or None for one the checker ignores.
type SeqOf = fn(&[u8]) -> Option<(String, u64, String)>;

/// camgw's payload: the contract's `seq` per topic.
fn camgw_seq(payload: &[u8]) -> Option<(String, u64, String)> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let seq = v["seq"].as_u64()?;
    let leaf = if v["kind"] == "motion" {
        "event"
    } else {
        "alert"
    };
    Some((leaf.into(), seq, v["kind"].as_str().unwrap_or("").into()))
}

/// POST without panicking: Some(seq) when the agent answered 202.
fn try_post(addr: SocketAddr, body: &str) -> Option<u64> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp);
    if !text.starts_with("HTTP/1.1 202") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()?;
    v["seq"].as_u64()
}

/// The system under test, as the fault script sees it.
trait System {
    fn name(&self) -> &'static str;
    /// One message into the system; Some(seq) once the system accepted it (ingest 202 /
    /// local broker PUBACK).
    fn poster(&self) -> Box<dyn FnMut() -> Option<u64> + Send>;
    /// The gateway-side process dies (kill -9) and comes back; `corrupt` damages its files
    /// in between the way a power cut does (a torn tail, a stray temp file).
    fn crash_restart(&mut self, corrupt: bool);
    fn rss_kb(&self) -> u64;
    /// Camera flapping (only camgw watches cameras).
    fn flap_camera(&mut self, down: bool) -> bool;
    /// The gateway-side process dies at once (kill -9, waited for).
    fn kill9(&mut self);
    /// ... and starts again.
    fn start(&mut self);
    /// A name part of its data files (for the SD-card read fault).
    fn data_files(&self) -> &'static str;
}

struct Camgw {
    name: &'static str,
    agent: Agent,
    cams: Vec<camgw::sim::SimCamera>,
    rt: tokio::runtime::Runtime,
}

impl System for Camgw {
    fn name(&self) -> &'static str {
        self.name
    }
    fn poster(&self) -> Box<dyn FnMut() -> Option<u64> + Send> {
        let addr = self.agent.ingest;
        Box::new(move || {
            try_post(
                addr,
                r#"{"camera":"cam01","kind":"motion","state":"pulse"}"#,
            )
        })
    }
    fn crash_restart(&mut self, corrupt: bool) {
        self.agent.kill9();
        if corrupt {
            let dir = self.agent.data_dir.join("buffer/events");
            if let Some(seg) = std::fs::read_dir(&dir)
                .ok()
                .and_then(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).max())
            {
                // A torn write: half a frame of garbage at the end of the newest segment.
                let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
                let _ = f.write_all(&[0xa5, 0x5a, 0x13, 0x37, 0x00, 0x00, 0x01, 0x02, 0xff]);
            }
            let _ = std::fs::write(dir.join("00000000000000000001.seg.tmp"), b"partial");
        }
        self.agent.spawn();
    }
    fn rss_kb(&self) -> u64 {
        self.agent.rss_kb().0
    }
    fn flap_camera(&mut self, down: bool) -> bool {
        let cam = &self.cams[0];
        if down {
            cam.set_down();
        } else {
            self.rt.block_on(cam.set_up()).unwrap();
        }
        true
    }
    fn kill9(&mut self) {
        self.agent.kill9();
    }
    fn start(&mut self) {
        self.agent.spawn();
    }
    fn data_files(&self) -> &'static str {
        ".seg"
    }
}

impl System for Bridge {
    fn name(&self) -> &'static str {
        if self.on_lossfs() {
            "mosquitto-bridge-lossfs"
        } else {
            "mosquitto-bridge"
        }
    }
    fn poster(&self) -> Box<dyn FnMut() -> Option<u64> + Send> {
        self.publisher()
    }
    fn crash_restart(&mut self, corrupt: bool) {
        Bridge::crash_restart(self, corrupt)
    }
    fn rss_kb(&self) -> u64 {
        Bridge::rss_kb(self)
    }
    fn flap_camera(&mut self, _down: bool) -> bool {
        false
    }
    fn kill9(&mut self) {
        Bridge::kill9(self)
    }
    fn start(&mut self) {
        self.spawn();
    }
    fn data_files(&self) -> &'static str {
        "mosquitto.db"
    }
}

#[derive(Debug, Default, serde::Serialize)]
struct Report {
    system: String,
    seed: u64,
    seconds: u64,
    faults: BTreeMap<String, u64>,
    accepted: usize,
    delivered: usize,
    lost: usize,
    duplicates: usize,
    out_of_order: usize,
    longest_recovery_ms: u64,
    unrecovered_faults: u64,
    /// Time from a silent stall to the gateway's new connection, each time.
    stall_detection_ms: Vec<u64>,
    keep_alive_s: u64,
    peak_rss_kb: u64,
    peak_disk_bytes: u64,
    alerts: BTreeMap<String, u64>,
    camera_flaps: u64,
    /// On lossfs: real power cuts, what they discarded, torn writes that reached the card.
    power_cuts: u64,
    volatile_bytes_discarded: u64,
    torn_writes: u64,
}

/// Where the fault script runs: the station broker, the link to it, the checker, the disk.
struct Stage<'a> {
    broker: &'a mut Broker,
    proxy: &'a StallProxy,
    checker: &'a Checker,
    disk: &'a mut Disk,
}

/// The fault script, the same for every system.
fn chaos(
    sys: &mut dyn System,
    stage: Stage<'_>,
    seed: u64,
    secs: u64,
    keep_alive_s: u64,
) -> Report {
    let Stage {
        broker,
        proxy,
        checker,
        disk,
    } = stage;
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut r = Report {
        system: sys.name().into(),
        seed,
        seconds: secs,
        keep_alive_s,
        ..Default::default()
    };
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // Steady traffic: about 25 messages a second.
    let poster = {
        let (acc, stop, mut post) = (accepted.clone(), stop.clone(), sys.poster());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(s) = post() {
                    acc.lock().unwrap().insert(s);
                }
                std::thread::sleep(Duration::from_millis(40));
            }
        })
    };
    let t0 = Instant::now();
    let fault = |name: &str, r: &mut Report| *r.faults.entry(name.into()).or_default() += 1;
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(rng.ms(300, 1500));
        r.peak_rss_kb = r.peak_rss_kb.max(sys.rss_kb());
        r.peak_disk_bytes = r.peak_disk_bytes.max(disk.used_bytes());
        // On lossfs four more faults (the tmpfs runs keep their seeded sequence).
        let kind = if disk.loss.is_some() {
            rng.below(11)
        } else {
            rng.below(7)
        };
        let before = accepted.lock().unwrap().clone();
        match kind {
            0 => {
                fault("broker_kill_restart", &mut r);
                proxy.close();
                broker.stop();
                std::thread::sleep(rng.ms(500, 3000));
                let before = checker.subacks.load(Ordering::SeqCst);
                broker.restart();
                checker.wait_subscribed(before);
                proxy.open();
            }
            1 => {
                fault("gateway_kill9_restart", &mut r);
                sys.crash_restart(false);
            }
            2 if disk.loss.is_some() => {
                // The worst case in the field, for real: the 4G link is down (what arrives
                // is held on the box), then the power goes.
                fault("uplink_down_then_real_power_cut", &mut r);
                proxy.close();
                proxy.stall();
                std::thread::sleep(rng.ms(1000, 2500));
                real_cut(sys, disk, false, &mut r);
                std::thread::sleep(rng.ms(200, 1000));
                proxy.open();
            }
            2 => {
                // The worst case in the field: the 4G link is down (what arrives is held on
                // the box), then the power goes, and the files are damaged by the cut.
                fault("uplink_down_then_power_cut_with_torn_files", &mut r);
                proxy.close();
                proxy.stall();
                std::thread::sleep(rng.ms(1000, 2500));
                sys.crash_restart(true);
                std::thread::sleep(rng.ms(200, 1000));
                proxy.open();
            }
            7 => {
                fault("power_cut", &mut r);
                real_cut(sys, disk, false, &mut r);
            }
            8 => {
                fault("power_cut_with_a_torn_write", &mut r);
                real_cut(sys, disk, true, &mut r);
            }
            9 => {
                // A failing card: every read of a data file fails for a while.
                fault("sd_read_eio", &mut r);
                let fs = disk.loss.as_ref().unwrap();
                fs.faults(lossfs::Faults {
                    eio_reading: Some(sys.data_files().into()),
                    ..Default::default()
                });
                std::thread::sleep(rng.ms(1000, 3000));
                fs.faults(lossfs::Faults::default());
            }
            10 => {
                // The card is full in the middle of a write (a short write, then ENOSPC).
                fault("sd_enospc_mid_write", &mut r);
                let used = disk.used_bytes();
                let fs = disk.loss.as_ref().unwrap();
                fs.faults(lossfs::Faults {
                    capacity: Some(used + 1500),
                    ..Default::default()
                });
                std::thread::sleep(rng.ms(1000, 3000));
                fs.faults(lossfs::Faults::default());
            }
            3 => {
                fault("link_stall", &mut r);
                let before = proxy.connections();
                let t = Instant::now();
                proxy.stall();
                let deadline = t + Duration::from_secs(keep_alive_s * 5 + 10);
                while proxy.connections() == before && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                r.stall_detection_ms.push(t.elapsed().as_millis() as u64);
            }
            4 => {
                if sys.flap_camera(true) {
                    fault("camera_flapping", &mut r);
                    for i in 0..6 {
                        std::thread::sleep(rng.ms(200, 700));
                        sys.flap_camera(i % 2 == 1);
                        r.camera_flaps += 1;
                    }
                    sys.flap_camera(false);
                } else {
                    continue;
                }
            }
            5 => {
                fault("motion_burst", &mut r);
                let mut post = sys.poster();
                for _ in 0..300 {
                    if let Some(s) = post() {
                        accepted.lock().unwrap().insert(s);
                    }
                }
            }
            _ => {
                if !disk.mounted {
                    continue;
                }
                fault("disk_full", &mut r);
                let filler = disk.fill();
                std::thread::sleep(rng.ms(1000, 3000));
                r.peak_disk_bytes = r.peak_disk_bytes.max(disk.used_bytes());
                std::fs::remove_file(filler).unwrap();
            }
        }
        // Recovery: everything accepted since this fault began reaches the station (what an
        // earlier fault lost must not hide how this one was recovered from).
        let want: BTreeSet<u64> = accepted
            .lock()
            .unwrap()
            .difference(&before)
            .copied()
            .collect();
        match checker.wait_for(&want, Duration::from_secs(20)) {
            Some(d) => r.longest_recovery_ms = r.longest_recovery_ms.max(d.as_millis() as u64),
            None => r.unrecovered_faults += 1,
        }
    }
    stop.store(true, Ordering::SeqCst);
    poster.join().unwrap();
    let want = accepted.lock().unwrap().clone();
    let _ = checker.wait_for(&want, Duration::from_secs(20));
    let seen = checker.seen.lock().unwrap();
    let got: BTreeSet<u64> = seen.events.iter().copied().collect();
    r.accepted = want.len();
    r.delivered = want.intersection(&got).count();
    r.lost = want.difference(&got).count();
    r.duplicates = seen.events.len() - got.len();
    let mut max = 0;
    let mut firsts = BTreeSet::new();
    for s in &seen.events {
        if firsts.insert(*s) {
            if *s < max {
                r.out_of_order += 1;
            }
            max = max.max(*s);
        }
    }
    // Each alert once: re-sends after broker kills and kill -9 repeat one with its seq.
    let alerts: std::collections::BTreeMap<u64, &String> =
        seen.alerts.iter().map(|(s, k)| (*s, k)).collect();
    for k in alerts.values() {
        *r.alerts.entry((*k).clone()).or_default() += 1;
    }
    r
}

/// A real power cut on lossfs: at one instant what was not durable is gone, the process is
/// killed, the card is mounted again and the process starts on what it kept.
fn real_cut(sys: &mut dyn System, disk: &mut Disk, torn: bool, r: &mut Report) {
    let fs = disk.loss.as_mut().unwrap();
    if torn {
        fs.faults(lossfs::Faults {
            torn_write_at_cut: true,
            ..Default::default()
        });
    }
    let cut = fs.cut(|| sys.kill9()).expect("the card mounts again");
    fs.faults(lossfs::Faults::default());
    r.power_cuts += 1;
    r.volatile_bytes_discarded += cut.volatile_bytes;
    if cut.torn.is_some() {
        r.torn_writes += 1;
    }
    sys.start();
}

fn write_report(r: &Report) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chaos");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{}-seed{}.json", r.system, r.seed));
    let text = serde_json::to_string_pretty(r).unwrap();
    let _ = std::fs::write(&path, &text);
    eprintln!("{}: {text}\n(written to {})", r.system, path.display());
}

fn skip_under_emulation() -> bool {
    if emulated_suite() {
        eprintln!(
            "*** SKIPPED: the chaos run is timing-bound; it runs natively, not under qemu ***"
        );
        return true;
    }
    if !Broker::is_mosquitto() {
        eprintln!("*** SKIPPED: the chaos run needs Mosquitto ***");
        return true;
    }
    false
}

#[test]
fn camgw_under_chaos_loses_nothing() {
    if skip_under_emulation() {
        return;
    }
    camgw_chaos(Disk::new(8));
}

/// The same harness on lossfs: real power cuts (also during an uplink outage and with a torn
/// write) and SD-card faults (EIO reading the buffer's segments, ENOSPC mid-write).
#[test]
fn camgw_under_real_power_cuts_and_sd_card_faults_loses_nothing() {
    if skip_under_emulation() || skip_without_lossfs() {
        return;
    }
    camgw_chaos(Disk::lossfs());
}

fn skip_without_lossfs() -> bool {
    match lossfs::unavailable() {
        Some(why) if std::env::var_os("CAMGW_REQUIRE_LOSSFS").is_some() => {
            panic!("lossfs required but unavailable: {why}")
        }
        Some(why) => {
            eprintln!("*** SKIPPED: {why} ***");
            true
        }
        None => false,
    }
}

fn camgw_chaos(mut disk: Disk) {
    let seed = env_u64("CAMGW_CHAOS_SEED", 1);
    // The lossfs runs are shorter by default: four chaos runs share CI's two cores.
    let secs = env_u64(
        "CAMGW_CHAOS_SECS",
        if disk.loss.is_some() { 15 } else { 30 },
    );
    // "always" (the default here) or "interval": CAMGW_CHAOS_SYNC=interval.
    let sync = std::env::var("CAMGW_CHAOS_SYNC").unwrap_or_else(|_| "always".into());
    let keep_alive = 5;
    let mut broker = Broker::start();
    let proxy = StallProxy::start(broker.port);
    let checker = Checker::start(broker.port, "camgw/w-test/gw-test/+", camgw_seq);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cam = rt
        .block_on(camgw::sim::SimCamera::start(camgw::sim::SimControl::new(
            "pw",
        )))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ingest: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let text = format!(
        r#"[gateway]
id = "{GW}"
ward = "{WARD}"
data_dir = "{}"
disk_low_mb = 0

[mqtt]
url = "mqtt://127.0.0.1:{}"
keep_alive_s = {keep_alive}
reconnect_min_ms = 100
reconnect_max_s = 1

[buffer]
sync = "{sync}"

[health]
interval_s = 1
timeout_ms = 500
fail_threshold = 2
recover_threshold = 2

[ingest]
listen = "{ingest}"

[[camera]]
id = "cam01"
vendor = "generic"
host = "127.0.0.1"
username = "admin"
password = "pw"
snapshot_url = "{}"
"#,
        disk.path.join("data").display(),
        proxy.port,
        cam.snapshot_url()
    );
    let agent = Agent::from_text(
        tmp.path(),
        disk.path.join("data"),
        proxy.port,
        ingest,
        &text,
        vec![],
    );
    let mut sys = Camgw {
        name: match (sync == "interval", disk.loss.is_some()) {
            (false, false) => "camgw",
            (true, false) => "camgw-sync-interval",
            (false, true) => "camgw-lossfs",
            (true, true) => "camgw-sync-interval-lossfs",
        },
        agent,
        cams: vec![cam],
        rt,
    };
    let stage = Stage {
        broker: &mut broker,
        proxy: &proxy,
        checker: &checker,
        disk: &mut disk,
    };
    let r = chaos(&mut sys, stage, seed, secs, keep_alive);
    write_report(&r);
    assert!(
        r.accepted > 100,
        "the run accepted too little to mean anything: {r:?}"
    );
    assert_eq!(r.lost, 0, "accepted events were lost: {r:?}");
    assert_eq!(r.out_of_order, 0, "events out of seq order: {r:?}");
    assert_eq!(r.unrecovered_faults, 0, "{r:?}");
    for d in &r.stall_detection_ms {
        // The agent must notice within 1.5x the keep-alive, plus reconnect time.
        assert!(
            *d <= keep_alive * 1500 + 1000,
            "a stalled link took {d} ms to notice: {r:?}"
        );
    }
    // Flapping is damped by the hysteresis: never more than one down/up pair per flap.
    let storms = r.alerts.get("camera_down").copied().unwrap_or(0)
        + r.alerts.get("camera_up").copied().unwrap_or(0);
    assert!(
        storms <= r.camera_flaps + 2,
        "alert storm: {storms} down/up alerts for {} flaps",
        r.camera_flaps
    );
    assert!(r.peak_rss_kb < 64 * 1024, "memory: {} KiB", r.peak_rss_kb);
}

#[test]
fn mosquitto_bridge_under_the_same_faults() {
    if skip_under_emulation() {
        return;
    }
    bridge_chaos(Disk::new(8));
}

#[test]
fn mosquitto_bridge_under_the_same_power_cuts() {
    if skip_under_emulation() || skip_without_lossfs() {
        return;
    }
    bridge_chaos(Disk::lossfs());
}

fn bridge_chaos(mut disk: Disk) {
    let seed = env_u64("CAMGW_CHAOS_SEED", 1);
    // The lossfs runs are shorter by default: four chaos runs share CI's two cores.
    let secs = env_u64(
        "CAMGW_CHAOS_SECS",
        if disk.loss.is_some() { 15 } else { 30 },
    );
    let keep_alive = 5;
    let mut broker = Broker::start();
    let proxy = StallProxy::start(broker.port);
    let checker = Checker::start(broker.port, "camgw/w-test/gw-test/+", camgw_seq);
    let mut bridge = Bridge::new(disk.path.clone(), proxy.port, disk.loss.is_some());
    bridge.spawn();
    let stage = Stage {
        broker: &mut broker,
        proxy: &proxy,
        checker: &checker,
        disk: &mut disk,
    };
    let r = chaos(&mut bridge, stage, seed, secs, keep_alive);
    write_report(&r);
    // The comparison is reported, not asserted: the bridge is expected to lose what it
    // accepted since its last autosave on every kill -9.
    assert!(r.accepted > 100, "{r:?}");
}
