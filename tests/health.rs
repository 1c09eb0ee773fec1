//! Camera health end to end: simulated cameras speaking HTTP/Digest/JPEG, ONVIF and RTSP drive
//! every state, through the agent binary, to a real broker.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use camgw::clock::FixedClock;
use camgw::health::{self, Memory, Problem};
use camgw::sim::jpeg::Scene;
use camgw::sim::{SimCamera, SimControl};
use common::*;

const T: &str = "camgw/w-test/gw-test";

/// A broker, a subscriber to the gateway's topics, and an agent probing `cam` as cam09
/// every second.
fn watched_camera(cam: &SimCamera, password: &str) -> (Broker, Subscriber, Agent) {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, &format!("{T}/#"));
    let extra = format!(
        "--\n{}{}",
        health_block(1, 700, 2, 2),
        CameraToml::new("cam09", "onvif")
            .login(password)
            .urls_of(cam)
            .text()
    );
    let agent = Agent::start(broker.port, &extra);
    (broker, sub, agent)
}

fn camera_config(cam: &SimCamera, password: &str) -> camgw::config::Camera {
    let text = format!(
        "[gateway]\nid = \"g\"\nward = \"w\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n{}",
        CameraToml::new("cam09", "onvif")
            .login(password)
            .urls_of(cam)
            .text()
    );
    camgw::config::Config::parse(&text)
        .unwrap()
        .cameras
        .remove(0)
}

fn problems(r: &health::Round) -> BTreeSet<&'static str> {
    r.problems.iter().map(|p| p.name()).collect()
}

/// One probe round in-process against a simulated camera.
fn round(
    rt: &tokio::runtime::Runtime,
    cam: &SimCamera,
    mem: &mut Memory,
    password: &str,
    clock: &FixedClock,
) -> health::Round {
    let c = camera_config(cam, password);
    rt.block_on(health::probe_round(
        &c,
        mem,
        scaled(Duration::from_millis(800)),
        clock,
        Duration::from_secs(30),
    ))
}

#[test]
fn each_failure_a_camera_shows_is_named_by_one_probe_round() {
    let rt = rt();
    let cam = sim_camera(&rt, SimControl::new("s3cret"));
    let clock = FixedClock::new(now_ms(), true);
    let mut mem = Memory::default();

    let r = round(&rt, &cam, &mut mem, "s3cret", &clock);
    assert!(r.problems.is_empty(), "{:?}", r.detail);
    assert_eq!(r.detail["device"]["manufacturer"], "camgw-sim");
    assert_eq!(r.detail["snapshot"]["width"], 640);
    assert!(r.detail["rtsp_first_packet_ms"].as_u64().is_some());
    assert!(r.detail["clock_offset_ms"].as_i64().unwrap().abs() < 2000);

    cam.control().frozen = true;
    round(&rt, &cam, &mut mem, "s3cret", &clock);
    assert_eq!(
        problems(&round(&rt, &cam, &mut mem, "s3cret", &clock)),
        BTreeSet::from(["frozen"])
    );
    cam.control().frozen = false;

    cam.control().scene = Scene::Black;
    assert_eq!(
        problems(&round(&rt, &cam, &mut mem, "s3cret", &clock)),
        BTreeSet::from(["black"])
    );
    cam.control().scene = Scene::Live;

    cam.control().clock_offset_s = 300;
    let r = round(&rt, &cam, &mut mem, "s3cret", &clock);
    assert_eq!(
        problems(&r),
        BTreeSet::from(["clock_drift"]),
        "{:?}",
        r.detail
    );
    assert!(
        r.detail.contains_key("device"),
        "the token's Created was corrected by the offset"
    );
    let unsynced = FixedClock::new(now_ms(), false);
    assert!(
        round(&rt, &cam, &mut mem, "s3cret", &unsynced)
            .problems
            .is_empty(),
        "drift is judged only with a synced gateway clock"
    );
    cam.control().clock_offset_s = 0;

    cam.control().accepted_password = "changed-by-someone".into();
    let r = round(&rt, &cam, &mut mem, "s3cret", &clock);
    assert_eq!(
        problems(&r),
        BTreeSet::from(["auth_failed"]),
        "{:?}",
        r.detail
    );
    assert!(!format!("{:?}", r.detail).contains("s3cret"));
    cam.control().accepted_password = "s3cret".into();

    cam.control().no_frames = true;
    assert_eq!(
        problems(&round(&rt, &cam, &mut mem, "s3cret", &clock)),
        BTreeSet::from(["no_frames"])
    );
    cam.control().no_frames = false;

    cam.control().silent = true;
    let r = round(&rt, &cam, &mut mem, "s3cret", &clock);
    assert!(
        !r.problems.contains(&Problem::Unreachable),
        "TCP is accepted: {:?}",
        r.detail
    );
    assert!(
        r.problems.contains(&Problem::HttpError) && r.problems.contains(&Problem::RtspError),
        "{:?}",
        r.detail
    );
    cam.control().silent = false;

    cam.set_down();
    assert!(rt.block_on(cam.wait_down()));
    let r = round(&rt, &cam, &mut mem, "s3cret", &clock);
    assert_eq!(
        problems(&r),
        BTreeSet::from(["unreachable"]),
        "{:?}",
        r.detail
    );
    rt.block_on(cam.set_up()).unwrap();
    let r = round(&rt, &cam, &mut mem, "s3cret", &clock);
    assert!(r.problems.is_empty(), "{:?}", r.detail);
}

#[test]
fn a_camera_that_keeps_the_connection_after_a_401_works_too() {
    let rt = rt();
    let mut ctl = SimControl::new("pw");
    ctl.close_after_401 = false;
    let cam = sim_camera(&rt, ctl);
    let mut mem = Memory::default();
    let r = round(&rt, &cam, &mut mem, "pw", &FixedClock::new(now_ms(), true));
    assert!(r.problems.is_empty(), "{:?}", r.detail);
}

fn health_of(sub: &Subscriber, cam: &str) -> Vec<serde_json::Value> {
    sub.seen
        .iter()
        .filter(|m| m.topic == format!("{T}/camera/{cam}/health") && !m.payload.is_empty())
        .map(|m| m.json())
        .collect()
}

fn health_of_msgs(m: &[Msg]) -> Vec<serde_json::Value> {
    m.iter()
        .filter(|m| m.topic.ends_with("cam09/health") && !m.payload.is_empty())
        .map(|m| m.json())
        .collect()
}

fn alerts(sub: &Subscriber, kind: &str) -> Vec<serde_json::Value> {
    distinct(&sub.seen, "alert")
        .into_iter()
        .filter(|a| a["kind"] == kind)
        .collect()
}

#[test]
fn down_and_back_up_raise_one_alert_each_and_retained_health_follows() {
    let rt = rt();
    let cam = sim_camera(&rt, SimControl::new("pw1"));
    let (broker, mut sub, agent) = watched_camera(&cam, "pw1");
    sub.wait_until(Duration::from_secs(15), "health up", |m| {
        m.iter()
            .any(|m| m.topic.ends_with("cam09/health") && m.json()["state"] == "up")
    });
    let up = health_of(&sub, "cam09").pop().unwrap();
    assert_eq!(up["problems"], serde_json::json!([]));
    assert_eq!(up["detail"]["device"]["model"], "SIM-4MP");
    assert!(
        alerts(&sub, "camera_up").is_empty(),
        "finding a camera up at start is not news"
    );

    cam.set_down();
    sub.wait_until(
        Duration::from_secs(15),
        "camera_down alert and health",
        |m| {
            m.iter()
                .any(|m| m.leaf() == "alert" && m.json()["kind"] == "camera_down")
                && m.iter()
                    .any(|m| m.topic.ends_with("cam09/health") && m.json()["state"] == "down")
        },
    );
    let down = health_of(&sub, "cam09").pop().unwrap();
    assert_eq!(down["state"], "down");
    assert_eq!(down["problems"], serde_json::json!(["unreachable"]));
    let a = alerts(&sub, "camera_down").pop().unwrap();
    assert_eq!(a["camera"], "cam09");

    rt.block_on(cam.set_up()).unwrap();
    sub.wait_until(Duration::from_secs(15), "camera_up alert and health", |m| {
        m.iter()
            .any(|m| m.leaf() == "alert" && m.json()["kind"] == "camera_up")
            && health_of_msgs(m).last().is_some_and(|h| h["state"] == "up")
    });
    assert_eq!(health_of(&sub, "cam09").pop().unwrap()["state"], "up");
    // A late subscriber (the station after a restart) gets the retained state.
    let mut late = Subscriber::new(broker.port, &format!("{T}/camera/+/health"));
    late.wait_until(Duration::from_secs(10), "retained health", |m| {
        !m.is_empty()
    });
    assert!(late.seen[0].retain);
    assert_eq!(late.seen[0].json()["state"], "up");
    assert_eq!(alerts(&sub, "camera_down").len(), 1);
    assert_eq!(alerts(&sub, "camera_up").len(), 1);
    assert!(!agent.log().contains("pw1"), "password in the log");
    assert!(
        !sub.seen
            .iter()
            .any(|m| String::from_utf8_lossy(&m.payload).contains("pw1")),
        "password on the wire"
    );
}

#[test]
fn a_flapping_camera_does_not_flood_the_station() {
    let rt = rt();
    let mut ctl = SimControl::new("pw");
    ctl.flap = true; // every other snapshot fails with HTTP 500
    let cam = sim_camera(&rt, ctl);
    let (_broker, mut sub, _agent) = watched_camera(&cam, "pw");
    sub.wait_until(Duration::from_secs(15), "health up", |m| {
        m.iter().any(|m| m.topic.ends_with("cam09/health"))
    });
    // Eight more rounds of flapping.
    sub.drain_for(scaled(Duration::from_secs(8)));
    let kinds: Vec<_> = sub
        .on("alert")
        .iter()
        .map(|a| a["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.is_empty(), "alerts while flapping: {kinds:?}");
}

#[test]
fn a_frozen_camera_is_degraded_and_recovers_with_one_alert_each() {
    let rt = rt();
    let cam = sim_camera(&rt, SimControl::new("pw"));
    let (_broker, mut sub, _agent) = watched_camera(&cam, "pw");
    sub.wait_until(Duration::from_secs(15), "health up", |m| {
        health_of_msgs(m).last().is_some_and(|h| h["state"] == "up")
    });
    cam.control().frozen = true;
    sub.wait_until(Duration::from_secs(15), "camera_degraded", |m| {
        m.iter()
            .any(|m| m.leaf() == "alert" && m.json()["kind"] == "camera_degraded")
            && health_of_msgs(m)
                .last()
                .is_some_and(|h| h["state"] == "degraded")
    });
    let a = alerts(&sub, "camera_degraded").pop().unwrap();
    assert_eq!(a["detail"]["problems"], serde_json::json!(["frozen"]));
    cam.control().frozen = false;
    sub.wait_until(Duration::from_secs(15), "camera_up", |m| {
        m.iter()
            .any(|m| m.leaf() == "alert" && m.json()["kind"] == "camera_up")
    });
    assert_eq!(alerts(&sub, "camera_degraded").len(), 1);
}
