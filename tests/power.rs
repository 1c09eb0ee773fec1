//! Real power cuts: the agent's data_dir on lossfs (tests/common/lossfs.rs), events posted
//! continuously, and at random moments the power goes: everything not made durable is gone
//! at the instant the agent is killed, then the agent boots again on what the "card" kept.
//! An independent subscriber on the station broker checks what arrived.
//!
//! - `sync = "always"`: every event answered 202 is delivered, every restart comes up and
//!   every cut is reported by `unclean_shutdown`.
//! - `sync = "interval"`: a cut loses at most what was accepted in the last
//!   `sync_interval_ms` (plus one fsync's time), and says so.
//! - Both with the uplink up and with it down for the whole run (everything accepted waits
//!   on the card; the station comes back after the last cut).
//! - The Mosquitto bridge (tests/common/bridge.rs) under the same script, for comparison.
//!
//! CI runs a few cuts; the figures in docs/reliability.md come from
//! `CAMGW_POWER_CUTS=100 cargo test --release --test power -- --nocapture --test-threads 1`.

#[path = "common/bridge.rs"]
mod bridge;
mod common;
#[path = "common/lossfs.rs"]
mod lossfs;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge::Bridge;
use common::*;

fn env_u64(k: &str, default: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn skip() -> bool {
    if emulated_suite() {
        eprintln!("*** SKIPPED: power cuts run natively, not under qemu ***");
        return true;
    }
    if let Some(why) = lossfs::unavailable() {
        if std::env::var_os("CAMGW_REQUIRE_LOSSFS").is_some() {
            panic!("lossfs required but unavailable: {why}");
        }
        eprintln!("*** SKIPPED: {why} ***");
        return true;
    }
    false
}

/// POST without panicking: Some(id) when the agent answered 202.
fn try_post(addr: SocketAddr) -> Option<String> {
    let body = r#"{"camera":"cam01","kind":"motion","state":"pulse"}"#;
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
    Some(v["id"].as_str()?.to_string())
}

#[derive(Debug, Default)]
struct Run {
    cuts: usize,
    accepted: usize,
    lost: usize,
    /// Per cut: ids accepted before it and never delivered, and how long before the cut
    /// the oldest of them was accepted.
    lost_per_cut: Vec<(usize, u64)>,
    /// Lost ids accepted after the last cut: no cut can explain them.
    unexplained: usize,
    /// unclean_shutdown alerts (distinct ids) and their accepted_records_at_risk_ms.
    unclean: Vec<u64>,
    volatile_bytes: Vec<u64>,
}

/// What is put through the cuts: the agent with a sync mode, or the Mosquitto bridge.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Under {
    Camgw(&'static str),
    Bridge,
}

/// The system under test, running on the card.
enum Peer {
    Camgw(Agent),
    Bridge(Bridge),
}

impl Peer {
    /// One accepted event per call: Some(id) when it was accepted (202, or PUBACK).
    fn poster(&self) -> Box<dyn FnMut() -> Option<String> + Send> {
        match self {
            Peer::Camgw(a) => {
                let addr = a.ingest;
                Box::new(move || try_post(addr))
            }
            Peer::Bridge(b) => {
                let mut publish = b.publisher();
                Box::new(move || publish().map(|s| format!("seq-{s}")))
            }
        }
    }
    fn kill9(&mut self) {
        match self {
            Peer::Camgw(a) => a.kill9(),
            Peer::Bridge(b) => b.kill9(),
        }
    }
    fn spawn(&mut self) {
        match self {
            Peer::Camgw(a) => a.spawn(),
            Peer::Bridge(b) => b.spawn(),
        }
    }
    fn log(&self) -> String {
        match self {
            Peer::Camgw(a) => a.log(),
            Peer::Bridge(b) => b.log(),
        }
    }
    fn stop(&mut self) {
        match self {
            Peer::Camgw(a) => {
                a.term();
            }
            Peer::Bridge(b) => b.kill9(),
        }
    }
}

/// The id a delivered event carries: the agent's `id`, or the bridge publisher's `seq`.
fn delivered_id(v: &serde_json::Value) -> Option<String> {
    v["id"]
        .as_str()
        .map(String::from)
        .or_else(|| v["seq"].as_u64().map(|s| format!("seq-{s}")))
}

/// `cuts` power cuts at random moments under steady load. With `uplink_down` the station
/// cannot be reached during the cuts (everything accepted waits on the card) and comes back
/// after the last one.
fn power_cuts(under: Under, cuts: usize, uplink_down: bool) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let mut fs = lossfs::LossFs::mount(&tmp.path().join("card")).expect("mount lossfs");
    let broker = Broker::start();
    let proxy = StallProxy::start(broker.port);
    let mut sub = Subscriber::new(broker.port, &format!("camgw/{WARD}/{GW}/+"));
    if uplink_down {
        proxy.close();
        proxy.stall();
    }
    let mut peer = match under {
        Under::Camgw(sync) => {
            // First boot without the package's postinst: the agent creates its data_dir (two
            // levels).
            let data_dir = fs.path().join("var/lib/camgw");
            let extra = format!("--\n[buffer]\nsync = \"{sync}\"\nsync_interval_ms = 200\n");
            Peer::Camgw(Agent::in_dir(tmp.path(), data_dir, proxy.port, &extra))
        }
        Under::Bridge => {
            let mut b = Bridge::new(fs.path().to_path_buf(), proxy.port, true);
            b.spawn();
            Peer::Bridge(b)
        }
    };
    let sync = match under {
        Under::Camgw(s) => s,
        Under::Bridge => "bridge",
    };

    // Steady load: one poster as fast as the peer answers, each acceptance stamped with its
    // time.
    let accepted: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let poster = {
        let (acc, stop) = (accepted.clone(), stop.clone());
        let mut post = peer.poster();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match post() {
                    Some(id) => acc.lock().unwrap().push((id, Instant::now())),
                    None => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    };
    let mut run = Run::default();
    let mut cut_at = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..cuts {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(300 + rng % 700));
        cut_at.push(Instant::now());
        let report = fs
            .cut(|| peer.kill9())
            .expect("the card mounts again after a cut");
        run.volatile_bytes.push(report.volatile_bytes);
        // Every restart comes up (Agent::spawn panics with the log otherwise).
        peer.spawn();
        run.cuts += 1;
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    poster.join().unwrap();
    if uplink_down {
        proxy.open();
    }
    let accepted = accepted.lock().unwrap().clone();
    let want: BTreeSet<String> = accepted.iter().map(|(i, _)| i.clone()).collect();
    // Everything durable arrives, and one unclean_shutdown per cut (bounded). What arrives
    // is taken in incrementally: tens of thousands of messages.
    let all_sure = under == Under::Camgw("always");
    let reports = matches!(under, Under::Camgw(_));
    let mut got = BTreeSet::new();
    let mut unclean = BTreeMap::new();
    let mut taken = 0;
    let mut settling: Option<Instant> = None;
    let mut last_growth = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        sub.drain_for(Duration::from_millis(200));
        for m in &sub.seen[taken..] {
            let v = m.json();
            match m.leaf() {
                "event" => {
                    if let Some(id) = delivered_id(&v) {
                        got.insert(id);
                    }
                }
                "alert" if v["kind"] == "unclean_shutdown" => {
                    unclean.insert(
                        v["id"].as_str().unwrap_or("").to_string(),
                        v["detail"]["accepted_records_at_risk_ms"]
                            .as_u64()
                            .unwrap_or(u64::MAX),
                    );
                }
                _ => {}
            }
        }
        if sub.seen.len() > taken {
            last_growth = Instant::now();
        }
        taken = sub.seen.len();
        if (!reports || unclean.len() >= cuts) && want.is_subset(&got) {
            break;
        }
        // With interval (and for the bridge), what a cut lost is gone for good: once every
        // cut is reported (the bridge reports nothing) and nothing more has come for 3 s, stop.
        if !all_sure && (!reports || unclean.len() >= cuts) {
            let since = *settling.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(3)
                && last_growth.elapsed() > Duration::from_secs(3)
            {
                break;
            }
        }
        if Instant::now() > deadline {
            eprintln!("gave up waiting after 120 s");
            break;
        }
    }
    run.accepted = want.len();
    run.lost = want.difference(&got).count();
    run.unclean = unclean.into_values().collect();
    // Attribute each lost id to its cut: the first cut after it was accepted. The poster
    // stamps a 202 when it has read it, and an answer sent just before a cut may be read just
    // after it: a 202 read within 100 ms after a cut belongs to that cut.
    let mut per_cut = vec![(0usize, 0u64); cut_at.len()];
    for (id, t) in &accepted {
        if got.contains(id) {
            continue;
        }
        match cut_at
            .iter()
            .position(|c| *c + Duration::from_millis(100) > *t)
        {
            Some(k) => {
                per_cut[k].0 += 1;
                let age = cut_at[k].saturating_duration_since(*t).as_millis() as u64;
                per_cut[k].1 = per_cut[k].1.max(age);
            }
            None => run.unexplained += 1,
        }
    }
    run.lost_per_cut = per_cut;
    if run.lost > 0 {
        let log = peer.log();
        let tail: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("DEBUG") && !l.starts_with(' '))
            .rev()
            .take(80)
            .collect();
        eprintln!(
            "agent log, last lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    peer.stop();
    eprintln!(
        "{sync}{}: {} cuts, {} accepted, {} lost; lost per cut (count, oldest ms before the cut): {:?}; unclean_shutdown at-risk figures: {:?}; volatile bytes per cut: {:?}",
        if uplink_down { " (uplink down)" } else { "" },
        run.cuts, run.accepted, run.lost, run.lost_per_cut, run.unclean, run.volatile_bytes
    );
    run
}

/// `sync = "always"`: nothing answered 202 lost, every cut reported with 0 ms at risk.
fn always_survives(uplink_down: bool) {
    if skip() {
        return;
    }
    let cuts = env_u64("CAMGW_POWER_CUTS", 4) as usize;
    let r = power_cuts(Under::Camgw("always"), cuts, uplink_down);
    assert!(
        r.accepted > 20 * cuts,
        "too little load to mean anything: {r:?}"
    );
    assert_eq!(r.lost, 0, "events answered 202 were lost: {r:?}");
    assert_eq!(r.unclean.len(), cuts, "every cut is reported: {r:?}");
    assert!(r.unclean.iter().all(|ms| *ms == 0), "{r:?}");
}

/// `sync = "interval"` (200 ms): a cut loses at most what the last interval accepted, and
/// every cut is reported with 200 ms at risk.
fn interval_bounded(uplink_down: bool) {
    if skip() {
        return;
    }
    let cuts = env_u64("CAMGW_POWER_CUTS", 4) as usize;
    let r = power_cuts(Under::Camgw("interval"), cuts, uplink_down);
    assert!(
        r.accepted > 20 * cuts,
        "too little load to mean anything: {r:?}"
    );
    assert_eq!(r.unclean.len(), cuts, "every cut is reported: {r:?}");
    assert!(r.unclean.iter().all(|ms| *ms == 200), "{r:?}");
    assert_eq!(r.unexplained, 0, "lost without a cut: {r:?}");
    // 200 ms of interval, plus the time one fsync and the kill take.
    for (n, oldest) in &r.lost_per_cut {
        assert!(
            *oldest <= 200 + 150,
            "a cut lost {n} events, the oldest accepted {oldest} ms before it: {r:?}"
        );
    }
}

#[test]
fn with_sync_always_every_event_answered_202_survives_power_cuts() {
    always_survives(false);
}

#[test]
fn with_sync_interval_a_cut_loses_at_most_the_last_interval_and_says_so() {
    interval_bounded(false);
}

#[test]
fn with_sync_always_and_the_uplink_down_every_event_answered_202_survives_power_cuts() {
    always_survives(true);
}

/// With the uplink down nothing leaves the card before a cut: this is where the interval
/// bound is really tested (with the uplink up most records are delivered before any cut).
#[test]
fn with_sync_interval_and_the_uplink_down_a_cut_loses_at_most_the_last_interval() {
    interval_bounded(true);
}

/// The peer under the same script: a local Mosquitto with persistence bridged to the
/// station (tests/common/bridge.rs), its publisher's PUBACK taken as "accepted". Reported,
/// not asserted: it keeps only what its last autosave wrote. Figures in docs/reliability.md.
#[test]
fn the_mosquitto_bridge_under_the_same_power_cuts() {
    if skip() {
        return;
    }
    if !Broker::is_mosquitto() {
        eprintln!("*** SKIPPED: needs Mosquitto ***");
        return;
    }
    let cuts = env_u64("CAMGW_POWER_CUTS", 4) as usize;
    for uplink_down in [false, true] {
        let r = power_cuts(Under::Bridge, cuts, uplink_down);
        assert!(
            r.accepted > 20 * cuts,
            "too little load to mean anything: {r:?}"
        );
    }
}

/// `n` events answered 202 with the uplink down, a cut, a restart: data_dir is still there and
/// every event arrives once the uplink is back. `precreate`: data_dir exists (never synced)
/// before the agent starts; otherwise the agent creates it.
fn data_dir_survives_a_cut(precreate: bool, n: usize) {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut fs = lossfs::LossFs::mount(&tmp.path().join("card")).expect("mount lossfs");
    let broker = Broker::start();
    let proxy = StallProxy::start(broker.port);
    let mut sub = Subscriber::new(broker.port, &format!("camgw/{WARD}/{GW}/event"));
    proxy.close();
    proxy.stall();
    let data_dir = fs.path().join("var/lib/camgw");
    if precreate {
        std::fs::create_dir_all(&data_dir).unwrap();
    }
    let extra = "--\n[buffer]\nsync = \"always\"\n";
    let mut agent = Agent::in_dir(tmp.path(), data_dir, proxy.port, extra);
    let ids: BTreeSet<String> = (0..n)
        .map(|_| try_post(agent.ingest).expect("202"))
        .collect();
    let report = fs.cut(|| agent.kill9()).unwrap();
    assert!(
        fs.path().join("var/lib/camgw/buffer").is_dir(),
        "the cut took data_dir: {report:?}"
    );
    agent.spawn();
    proxy.open();
    sub.wait_until(
        Duration::from_secs(30),
        &format!("the {n} events"),
        |seen| {
            let got: BTreeSet<String> = seen
                .iter()
                .filter_map(|m| m.json()["id"].as_str().map(String::from))
                .collect();
            ids.is_subset(&got)
        },
    );
    agent.term();
}

/// Regression (issue 19): on a first boot without the package's postinst the agent creates
/// data_dir itself; nothing made the levels it created durable, so a power cut while the
/// uplink was down took the whole directory, and every event answered 202 with it.
#[test]
fn a_data_dir_the_agent_created_survives_a_power_cut_with_the_uplink_down() {
    data_dir_survives_a_cut(false, 30);
}

/// Regression (review of issue 19): a data_dir that was there at start but never made
/// durable (made by `camgw doctor`, or by a run cut before it synced) is made durable by the
/// next start, not taken for durable because it exists.
#[test]
fn a_data_dir_that_exists_but_was_never_synced_survives_a_power_cut() {
    data_dir_survives_a_cut(true, 10);
}

/// Regression (issue 19): the replay memory is made durable with its name, so a signed
/// command re-published verbatim after a power cut is refused as a replay, not obeyed again.
#[test]
fn a_command_replayed_after_a_power_cut_is_refused() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut fs = lossfs::LossFs::mount(&tmp.path().join("card")).expect("mount lossfs");
    let st = station();
    let broker = Broker::start();
    let mut sub = Subscriber::new(broker.port, &format!("camgw/{WARD}/{GW}/#"));
    let data_dir = fs.path().join("var/lib/camgw");
    let extra = format!("--\n{}", security(&st));
    let mut agent = Agent::in_dir(tmp.path(), data_dir, broker.port, &extra);
    let once = camgw::remote::envelope::sign(
        &st.key,
        &signed("pc1", serde_json::json!({"op": "buffer_stats"})),
    );
    assert_eq!(
        raw(broker.port, &mut sub, once.clone(), Some("pc1"))["ok"],
        true
    );
    fs.cut(|| agent.kill9()).unwrap();
    agent.spawn();
    let r = raw(broker.port, &mut sub, once, Some("pc1"));
    assert!(
        r["error"].as_str().unwrap_or("").contains("replay"),
        "obeyed again after a power cut: {r}"
    );
    agent.term();
}
