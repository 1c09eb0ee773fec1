//! Event stills end to end (issue 15), against a real Mosquitto and simulated cameras that
//! serve every vendor still path: each path and the Hikvision NVR fallback, scaling and
//! quality, a still endpoint that hangs, `snapshot = false`, one request in flight per
//! camera, the daily budget, a broker outage and kill -9 with stills pending, eviction order
//! under a small bound, and a slow link where events must not wait behind stills.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use camgw::sim::{SimCamera, SimControl};
use common::*;

const T: &str = "camgw/w-test/gw-test";
const PASSWORD: &str = "still-SECRET-pw";

/// A rig: a broker, simulated cameras, the agent and a subscriber on everything it sends.
struct Rig {
    _rt: tokio::runtime::Runtime,
    broker: Broker,
    cams: HashMap<String, SimCamera>,
    agent: Agent,
    sub: Subscriber,
    _tmp: tempfile::TempDir,
}

/// `cams`: (id, vendor, how the simulator behaves, extra camera keys).
fn rig(
    cams: Vec<(&str, &str, SimControl, Vec<(&str, toml::Value)>)>,
    tune: impl FnOnce(TestConfig) -> TestConfig,
) -> Rig {
    let rt = rt();
    let broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let ingest: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let data = tmp.path().join("data");
    let mut c = TestConfig::new(broker.port, ingest, &data).set("mqtt", "telemetry_interval_s", 1);
    let mut sims = HashMap::new();
    for (id, vendor, ctl, keys) in cams {
        let sim = sim_camera(&rt, ctl);
        let mut ct = CameraToml::new(id, vendor)
            .login(PASSWORD)
            .set("http_base", sim.http_base())
            .set("probe", false);
        if vendor == "onvif" {
            ct = ct.set("onvif_url", sim.onvif_url());
        }
        if vendor == "generic" {
            ct = ct.set("snapshot_url", sim.snapshot_url());
        }
        for (k, v) in keys {
            ct = ct.set(k, v);
        }
        c = c.camera(ct);
        sims.insert(id.to_string(), sim);
    }
    let c = tune(c);
    let sub = Subscriber::new(broker.port, &format!("{T}/#"));
    let agent = Agent::from_text(tmp.path(), data, broker.port, ingest, &c.text(), Vec::new());
    Rig {
        _rt: rt,
        broker,
        cams: sims,
        agent,
        sub,
        _tmp: tmp,
    }
}

fn ctl() -> SimControl {
    SimControl::new(PASSWORD)
}

/// Posts a motion start; returns the event id.
fn start(a: &Agent, cam: &str) -> String {
    let (code, body) = a.motion(cam, "start");
    assert_eq!(code, 202, "{body}");
    body["id"].as_str().unwrap().to_string()
}

fn stills(msgs: &[Msg]) -> Vec<&Msg> {
    msgs.iter().filter(|m| m.topic.contains("/snapshot/")).collect()
}

/// (camera, event id) of a still's topic.
fn still_of(m: &Msg) -> (String, String) {
    let rest = m.topic.strip_prefix(&format!("{T}/camera/")).unwrap();
    let (cam, id) = rest.split_once("/snapshot/").unwrap();
    (cam.to_string(), id.to_string())
}

fn jpeg_size(b: &[u8]) -> (u16, u16) {
    let (_, info) = camgw::proto::jpeg::open(b).expect("a still is a JPEG");
    (info.width, info.height)
}

fn telemetry_stills(msgs: &[Msg]) -> Option<serde_json::Value> {
    msgs.iter()
        .rev()
        .filter(|m| m.topic.ends_with("/telemetry"))
        .map(|m| m.json())
        .find(|v| v.get("stills").is_some())
        .map(|v| v["stills"].clone())
}

fn no_secret_anywhere(r: &Rig) {
    for m in &r.sub.seen {
        assert!(!m.topic.contains(PASSWORD), "{}", m.topic);
        assert!(
            !String::from_utf8_lossy(&m.payload).contains(PASSWORD),
            "password in a payload on {}",
            m.topic
        );
    }
    assert!(!r.agent.log().contains(PASSWORD), "password in the log");
}

#[test]
fn every_vendor_path_gives_one_scaled_still_after_its_event() {
    let mut nvr = ctl();
    nvr.nvr = true;
    let mut big = ctl();
    big.still_size = (1920, 1080);
    let mut r = rig(
        vec![
            ("hik", "hikvision", big, vec![]),
            ("nvr", "hikvision", nvr, vec![]),
            ("dahua", "dahua", ctl(), vec![]),
            ("onvif", "onvif", ctl(), vec![]),
            ("plain", "generic", ctl(), vec![]),
            ("off", "hikvision", ctl(), vec![("snapshot", false.into())]),
        ],
        |c| c,
    );
    // The generic camera's still comes from its snapshot_url.
    let mut ids = HashMap::new();
    for cam in ["hik", "nvr", "dahua", "onvif", "plain", "off"] {
        ids.insert(start(&r.agent, cam), cam);
    }
    // Ends never ask for a still.
    for cam in ["hik", "dahua"] {
        assert_eq!(r.agent.motion(cam, "end").0, 202);
    }
    r.sub.wait_until(Duration::from_secs(20), "five stills", |m| stills(m).len() >= 5);
    r.sub.drain_for(scaled(Duration::from_millis(1500)));
    let got = stills(&r.sub.seen);
    assert_eq!(got.len(), 5, "one still per start of a camera with snapshot on");
    for m in &got {
        let (cam, id) = still_of(m);
        assert_eq!(ids.get(&id).copied(), Some(cam.as_str()), "the still names its event: {}", m.topic);
        assert!(!m.retain, "stills are not retained");
        let (w, h) = jpeg_size(&m.payload);
        assert!(w <= 640, "{cam}: {w}x{h}");
        let pos = r.sub.seen.iter().position(|x| std::ptr::eq(x, *m)).unwrap();
        let ev = r.sub.seen[..pos]
            .iter()
            .position(|x| x.topic.ends_with("/event") && x.json()["id"] == id.as_str());
        assert!(ev.is_some(), "{cam}: the still came after its event");
    }
    let hik = got.iter().find(|m| still_of(m).0 == "hik").unwrap();
    assert_eq!(jpeg_size(&hik.payload), (640, 360), "1920x1080 scaled to 640 wide");
    assert!(r.cams["nvr"].control().still_requests == 1, "the NVR path served it");
    assert!(r.cams["off"].control().still_requests == 0, "snapshot = false: never asked");
    for cam in ["hik", "dahua", "onvif"] {
        assert_eq!(r.cams[cam].control().still_requests, 1, "{cam}: one request per start");
    }
    r.sub.wait_until(Duration::from_secs(10), "telemetry with still counts", |m| {
        telemetry_stills(m).is_some_and(|s| s["buffered"] == 5)
    });
    let s = telemetry_stills(&r.sub.seen).unwrap();
    assert_eq!(s["failed"], 0, "{s}");
    assert!(s["last_bytes"].as_u64().unwrap() > 1000, "{s}");
    let log = r.agent.log();
    assert!(log.contains("still buffered"), "bytes and time are logged per still");
    assert!(log.contains("stills come through the NVR path"));
    no_secret_anywhere(&r);
    let _ = &r.broker;
}

#[test]
fn quality_and_width_change_what_is_sent() {
    let mut big = ctl();
    big.still_size = (1920, 1080);
    let big2 = big.clone();
    let mut r = rig(vec![("a", "dahua", big, vec![])], |c| {
        c.set("snapshot", "max_width", 320).set("snapshot", "quality", 30)
    });
    start(&r.agent, "a");
    r.sub.wait_until(Duration::from_secs(20), "the still", |m| !stills(m).is_empty());
    let small = stills(&r.sub.seen)[0].payload.clone();
    assert_eq!(jpeg_size(&small), (320, 180));
    drop(r);
    let mut r = rig(vec![("a", "dahua", big2, vec![])], |c| {
        c.set("snapshot", "max_width", 320).set("snapshot", "quality", 90)
    });
    start(&r.agent, "a");
    r.sub.wait_until(Duration::from_secs(20), "the still", |m| !stills(m).is_empty());
    let fine = stills(&r.sub.seen)[0].payload.clone();
    assert_eq!(jpeg_size(&fine), (320, 180));
    assert!(
        small.len() * 3 < fine.len() * 2,
        "quality 30 is smaller than 90: {} vs {}",
        small.len(),
        fine.len()
    );
}

#[test]
fn a_still_endpoint_that_hangs_delays_no_event_and_is_counted() {
    let mut hang = ctl();
    hang.still_hang = true;
    let mut r = rig(vec![("stuck", "hikvision", hang, vec![])], |c| {
        c.set("snapshot", "timeout_ms", 500)
    });
    let t0 = Instant::now();
    let id = start(&r.agent, "stuck");
    r.sub.wait_until(Duration::from_secs(5), "the event", |m| {
        m.iter().any(|x| x.topic.ends_with("/event") && x.json()["id"] == id.as_str())
    });
    let event_after = t0.elapsed();
    assert!(
        event_after < scaled(Duration::from_millis(450)),
        "the event waited for its still: {event_after:?}"
    );
    r.sub.wait_until(Duration::from_secs(10), "the failure counted", |m| {
        telemetry_stills(m).is_some_and(|s| s["failed"] == 1)
    });
    // A second start after the timeout is tried again (the camera is not stuck "busy").
    start(&r.agent, "stuck");
    r.sub.wait_until(Duration::from_secs(10), "the second failure", |m| {
        telemetry_stills(m).is_some_and(|s| s["failed"] == 2)
    });
    assert!(stills(&r.sub.seen).is_empty());
    assert!(r.agent.log().contains("no still within 500 ms"));
}

#[test]
fn one_still_request_in_flight_per_camera() {
    let mut slow = ctl();
    slow.still_delay_ms = 800;
    let mut r = rig(vec![("d", "dahua", slow, vec![])], |c| c);
    start(&r.agent, "d");
    start(&r.agent, "d");
    start(&r.agent, "d");
    r.sub.wait_until(Duration::from_secs(15), "one still, two skipped", |m| {
        !stills(m).is_empty() && telemetry_stills(m).is_some_and(|s| s["skipped_busy"] == 2)
    });
    r.sub.drain_for(scaled(Duration::from_secs(1)));
    assert_eq!(stills(&r.sub.seen).len(), 1);
    let c = r.cams["d"].control();
    assert_eq!((c.still_requests, c.still_busy), (1, 0), "the camera never saw two at once");
}
