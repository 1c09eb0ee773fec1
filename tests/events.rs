//! Motion events end to end: simulated Hikvision and Dahua cameras stream their real
//! multipart formats to the agent binary, which delivers events to a real broker.

mod common;

use std::time::{Duration, Instant};

use camgw::sim::{SimCamera, SimControl};
use common::*;

const T: &str = "camgw/w-test/gw-test";

fn wait_listeners(sim: &SimCamera, hik: bool) {
    let deadline = Instant::now() + scaled(Duration::from_secs(15));
    loop {
        let (h, d) = sim.event_listeners();
        if (hik && h > 0) || (!hik && d > 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never attached to the event stream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn motions(sub: &Subscriber, camera: &str) -> Vec<serde_json::Value> {
    distinct(&sub.seen, "event")
        .into_iter()
        .filter(|e| e["camera"] == camera)
        .collect()
}

#[test]
fn hikvision_vmd_becomes_a_start_and_an_end_after_silence_and_tamper_an_alert() {
    let rt = rt();
    let sim = sim_camera(&rt, SimControl::new("hik-pw"));
    let broker = Broker::start();
    let mut sub = Subscriber::new(broker.port, &format!("{T}/+"));
    let agent = Agent::start(
        broker.port,
        &format!(
            "--\n[events]\nmotion_silence_s = 2\n{}",
            CameraToml::new("cam09", "hikvision")
                .login("hik-pw")
                .events_of("hikvision", &sim)
                .text()
        ),
    );
    wait_listeners(&sim, true);
    for _ in 0..3 {
        sim.hik_event("VMD", "active");
        std::thread::sleep(Duration::from_millis(300));
    }
    sub.wait_until(Duration::from_secs(15), "start then end", |m| {
        let states: Vec<_> = distinct(m, "event")
            .iter()
            .map(|e| e["state"].as_str().unwrap().to_string())
            .collect();
        states == ["start", "end"]
    });
    let ev = motions(&sub, "cam09");
    assert_eq!(ev[0]["source"], "hikvision");
    assert_eq!(ev[0]["detail"]["event"], "VMD");
    assert!(
        ev[0]["detail"]["camera_time"]
            .as_str()
            .unwrap()
            .ends_with("+07:00"),
        "{}",
        ev[0]
    );
    assert!(ev[0]["detail"]["camera_ts"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(ev[1]["detail"]["reason"], "silence");

    sim.hik_event("shelteralarm", "active");
    sub.wait_until(Duration::from_secs(10), "tamper alert", |m| {
        m.iter().any(|m| m.json()["kind"] == "tamper")
    });
    let t = sub
        .on("alert")
        .into_iter()
        .find(|a| a["kind"] == "tamper")
        .unwrap();
    assert_eq!(t["camera"], "cam09");
    assert!(!agent.log().contains("hik-pw"));
}

#[test]
fn dahua_start_stop_and_videoblind() {
    let rt = rt();
    let sim = sim_camera(&rt, SimControl::new("dh-pw"));
    let broker = Broker::start();
    let mut sub = Subscriber::new(broker.port, &format!("{T}/+"));
    let _agent = Agent::start(
        broker.port,
        &format!(
            "--\n{}",
            CameraToml::new("cam08", "dahua")
                .login("dh-pw")
                .events_of("dahua", &sim)
                .text()
        ),
    );
    wait_listeners(&sim, false);
    sim.dahua_event("VideoMotion", "Start");
    sim.dahua_event("VideoMotion", "Stop");
    sim.dahua_event("VideoBlind", "Start");
    sub.wait_until(Duration::from_secs(10), "start, end, tamper", |m| {
        distinct(m, "event").len() == 2 && m.iter().any(|m| m.json()["kind"] == "tamper")
    });
    let ev = motions(&sub, "cam08");
    assert_eq!(
        (ev[0]["state"].as_str(), ev[1]["state"].as_str()),
        (Some("start"), Some("end"))
    );
    assert_eq!(ev[0]["source"], "dahua");
    assert_eq!(ev[0]["detail"]["event"], "VideoMotion");
}

#[test]
fn a_stream_cut_mid_part_reconnects_and_loses_no_later_event() {
    let rt = rt();
    let sim = sim_camera(&rt, SimControl::new("pw"));
    let broker = Broker::start();
    let mut sub = Subscriber::new(broker.port, &format!("{T}/event"));
    let agent = Agent::start(
        broker.port,
        &format!(
            "--\n{}",
            CameraToml::new("cam08", "dahua")
                .login("pw")
                .events_of("dahua", &sim)
                .text()
        ),
    );
    wait_listeners(&sim, false);
    sim.cut_event_streams_mid_part();
    // The agent reconnects (backoff starts at 0.5 s) and attaches again.
    let deadline = Instant::now() + scaled(Duration::from_secs(15));
    while !agent.log().contains("event stream lost") {
        assert!(
            Instant::now() < deadline,
            "the cut was not noticed:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_listeners(&sim, false);
    sim.dahua_event("VideoMotion", "Start");
    sub.wait_until(Duration::from_secs(10), "the event after the cut", |m| {
        !m.is_empty()
    });
    // Long enough for a second event, had the half part made one, to arrive too.
    sub.drain_for(scaled(Duration::from_secs(2)));
    assert_eq!(
        distinct(&sub.seen, "event").len(),
        1,
        "the half part was not delivered as an event"
    );
    assert_eq!(sub.seen[0].json()["state"], "start");
}

#[test]
fn a_hikvision_camera_pushing_to_ingest_delivers_motion() {
    let broker = Broker::start();
    let mut sub = Subscriber::new(broker.port, &format!("{T}/event"));
    let agent = Agent::start(broker.port, "");
    let xml = br#"<?xml version="1.0" encoding="UTF-8"?><EventNotificationAlert version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema"><channelID>1</channelID><dateTime>2026-11-29T10:00:00+07:00</dateTime><eventType>VMD</eventType><eventState>active</eventState></EventNotificationAlert>"#;
    let (code, _) = http_post(agent.ingest, "/v1/hikvision/cam01", xml);
    assert_eq!(code, 200);
    let (code, _) = http_post(agent.ingest, "/v1/hikvision/nope", xml);
    assert_eq!(code, 404);
    let (code, _) = http_post(agent.ingest, "/v1/hikvision/cam01", b"<not-an-alert/>");
    assert_eq!(code, 400);
    sub.wait_until(Duration::from_secs(10), "pushed motion", |m| !m.is_empty());
    let e = sub.seen[0].json();
    assert_eq!(
        (
            e["camera"].as_str(),
            e["source"].as_str(),
            e["state"].as_str()
        ),
        (Some("cam01"), Some("hikvision"), Some("start"))
    );
    assert_eq!(e["detail"]["camera_ts"], "2026-11-29T03:00:00.000Z");
}

#[test]
fn onvif_pull_point_motion_renewal_and_unsubscribe() {
    let rt = rt();
    let mut ctl = SimControl::new("ov-pw");
    ctl.onvif_lease_s = 4; // renewed every ~2 s
    ctl.clock_offset_s = -3 * 365 * 86_400; // a camera clock years off: leases still work
    let sim = sim_camera(&rt, ctl);
    let broker = Broker::start();
    let mut sub = Subscriber::new(broker.port, &format!("{T}/+"));
    let block = format!(
        "\n[[camera]]\nid = \"cam07\"\nvendor = \"onvif\"\nhost = \"127.0.0.1\"\nusername = \"admin\"\npassword = \"ov-pw\"\nonvif_url = \"{}\"\nevents = [\"onvif\"]\nprobe = false\n",
        sim.onvif_url()
    );
    let mut agent = Agent::start(broker.port, &format!("--\n{block}"));
    let deadline = Instant::now() + scaled(Duration::from_secs(15));
    while sim.control().subscriptions == 0 {
        assert!(
            Instant::now() < deadline,
            "no subscription:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let motion = "tns1:RuleEngine/CellMotionDetector/Motion";
    sim.onvif_event(motion, "IsMotion", "true", true); // Initialized: state only, no event
    sim.onvif_event(motion, "IsMotion", "true", false);
    sim.onvif_event("tns1:VideoSource/MotionAlarm", "State", "false", false);
    sim.onvif_event(
        "tns1:VideoSource/GlobalSceneChange/ImagingService",
        "State",
        "true",
        false,
    );
    sub.wait_until(Duration::from_secs(15), "start, end and tamper", |m| {
        distinct(m, "event").len() >= 2 && m.iter().any(|m| m.json()["kind"] == "tamper")
    });
    let ev = motions(&sub, "cam07");
    assert_eq!(
        ev.len(),
        2,
        "the Initialized notification made no event: {ev:?}"
    );
    assert_eq!(
        (ev[0]["state"].as_str(), ev[1]["state"].as_str()),
        (Some("start"), Some("end"))
    );
    assert_eq!(ev[0]["source"], "onvif");
    assert_eq!(
        ev[0]["detail"]["event"],
        "RuleEngine/CellMotionDetector/Motion"
    );
    let deadline = Instant::now() + scaled(Duration::from_secs(15));
    while sim.control().renews < 2 {
        assert!(
            Instant::now() < deadline,
            "the subscription was not renewed:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sim.control().subscriptions, 1, "renewed, not re-created");
    assert_eq!(agent.term().code(), Some(0));
    assert!(sim.control().unsubscribes >= 1, "unsubscribed at shutdown");
}
