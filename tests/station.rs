//! The ward station service (issue 17) against a real Mosquitto, a running agent with
//! simulated cameras, and a real database: SQLite, and a PostgreSQL server the test starts.
//! The recorder keeps every event ingest answered 202 for, once each, across kill -9 of the
//! service and a broker restart; the API's sessions, roles, 401s, CSRF, filters,
//! acknowledgements and admin commands; hostile text from the broker stays text.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::station::*;
use common::*;
use serde_json::Value;

const T: &str = "camgw/w-test/gw-test";
const CAM_PW: &str = "cam-SECRET-pw";

struct Rig {
    _rt: tokio::runtime::Runtime,
    broker: Broker,
    cams: Vec<camgw::sim::SimCamera>,
    agent: Agent,
    station: StationServer,
    _keys: Station,
    tmp: tempfile::TempDir,
}

/// A persistent Mosquitto, two simulated cameras (cam01 serves stills), the agent with
/// ingest and fast health rounds, and `station serve` recording into `db` (a path inside the
/// rig's folder when it is "sqlite").
fn rig(db: Option<&str>) -> Rig {
    let rt = rt();
    let broker = Broker::start_persistent();
    let tmp = tempfile::tempdir().unwrap();
    let cam1 = sim_camera(&rt, camgw::sim::SimControl::new(CAM_PW));
    let cam2 = sim_camera(&rt, camgw::sim::SimControl::new(CAM_PW));
    let ingest: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let data = tmp.path().join("data");
    let keys = station();
    let public = keys.public.clone();
    let c = TestConfig::new(broker.port, ingest, &data)
        .set("mqtt", "telemetry_interval_s", 1)
        .set(
            "security",
            "command_keys",
            toml::Value::Array(vec![public.into()]),
        )
        .merge(&health_block(1, 1000, 2, 1))
        .camera(
            CameraToml::new("cam01", "generic")
                .login(CAM_PW)
                .set("snapshot_url", cam1.snapshot_url()),
        )
        .camera(
            CameraToml::new("cam02", "generic")
                .login(CAM_PW)
                .set("snapshot_url", cam2.snapshot_url())
                .set("snapshot", false),
        );
    let agent = Agent::from_text(tmp.path(), data, broker.port, ingest, &c.text(), Vec::new());
    let db = db
        .map(String::from)
        .unwrap_or_else(|| tmp.path().join("station.db").display().to_string());
    user_add(&db, "officer1", "officer", "officer pw");
    user_add(&db, "admin1", "admin", "admin pw");
    let key_file = keys.dir.path().join("ward.key").display().to_string();
    let station = StationServer::start(broker.port, &db, &["--command-key", &key_file]);
    Rig {
        _keys: keys,
        _rt: rt,
        broker,
        cams: vec![cam1, cam2],
        agent,
        station,
        tmp,
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- station log ---\n{}\n--- agent log ---\n{}",
                self.station.log(),
                self.agent.log()
            );
        }
    }
}

/// Posts a motion event; returns its id (202) or None.
fn motion(a: &Agent, cam: &str, state: &str) -> Option<String> {
    let (code, body) = a.motion(cam, state);
    (code == 202).then(|| body["id"].as_str().unwrap().to_string())
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every id answered 202 is recorded once, across kill -9 of the service and a broker
/// restart; stills, health, alerts, gateways and commands all arrive.
fn recorder_end_to_end(db: Option<&str>) {
    let mut r = rig(db);
    let mut web = r.station.web();
    assert_eq!(web.login("officer1", "officer pw"), 200);
    let mut accepted: Vec<String> = Vec::new();
    // Cameras up first (health rounds run every second).
    web.wait_json(
        "/api/cameras",
        Duration::from_secs(20),
        "both cameras up",
        |v| {
            v.as_array().unwrap().len() == 2
                && v.as_array().unwrap().iter().all(|c| c["state"] == "up")
        },
    );
    for i in 0..20 {
        let cam = if i % 2 == 0 { "cam01" } else { "cam02" };
        accepted.extend(motion(
            &r.agent,
            cam,
            if i % 4 == 0 { "start" } else { "pulse" },
        ));
    }
    // The service killed mid-burst; the agent goes on; the service comes back.
    for i in 0..30 {
        if i == 10 {
            r.station.kill9();
        }
        accepted.extend(motion(&r.agent, "cam02", "pulse"));
    }
    r.station.spawn();
    // The broker restarted (its persistent sessions kept), events accepted meanwhile.
    r.broker.stop_graceful();
    for _ in 0..15 {
        accepted.extend(motion(&r.agent, "cam02", "pulse"));
    }
    r.broker.restart();
    for _ in 0..15 {
        accepted.extend(motion(&r.agent, "cam01", "pulse"));
    }
    assert_eq!(accepted.len(), 80, "ingest refused events");
    let mut web = r.station.web();
    assert_eq!(web.login("officer1", "officer pw"), 200);
    let want: BTreeSet<String> = accepted.iter().cloned().collect();
    let events = web.wait_json(
        "/api/events?limit=5000",
        Duration::from_secs(if std::env::var_os("DEBUG_ST").is_some() {
            10
        } else {
            60
        }),
        "every accepted event recorded",
        |v| {
            let have: BTreeSet<_> = ids(v).into_iter().collect();
            if std::env::var_os("DEBUG_ST").is_some() {
                let missing: Vec<usize> = accepted
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| !have.contains(*a))
                    .map(|(i, _)| i)
                    .collect();
                eprintln!("missing {missing:?}");
            }
            have.is_superset(&want)
        },
    );
    let got = ids(&events);
    let distinct: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(got.len(), distinct.len(), "an event recorded twice");
    let seqs: BTreeSet<u64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len(), got.len(), "seqs are unique per gateway");
    for e in events.as_array().unwrap() {
        for k in ["id", "seq", "ts", "camera", "source", "state"] {
            assert!(!e[k].is_null(), "event without {k}: {e}");
        }
        assert!(e.get("snapshot").is_some(), "{e}");
    }

    // A QoS 1 re-send (the same message again) is recorded once.
    let first = &events.as_array().unwrap()[0];
    let again = serde_json::json!({
        "id": first["id"], "seq": first["seq"], "ts": first["ts"], "clock_synced": true,
        "kind": "motion", "camera": first["camera"], "source": first["source"], "state": first["state"],
    });
    publish(
        r.broker.port,
        &format!("{T}/event"),
        again.to_string().as_bytes(),
        false,
    );
    // A fresh marker event after it: once the marker is in, the duplicate was handled.
    let marker = motion(&r.agent, "cam02", "pulse").unwrap();
    let after = web.wait_json(
        "/api/events?limit=5000",
        Duration::from_secs(20),
        "the marker event",
        |v| ids(v).contains(&marker),
    );
    assert_eq!(
        ids(&after).len(),
        got.len() + 1,
        "the re-sent event was recorded again"
    );

    // Stills: cam01's starts have one, served as a JPEG; cam02 has snapshot = false.
    let with_still = web.wait_json(
        "/api/events?camera=cam01&state=start&limit=100",
        Duration::from_secs(30),
        // One still request is in flight per camera: starts in a quick burst share one.
        "a still of one of cam01's starts",
        |v| {
            v.as_array()
                .unwrap()
                .iter()
                .any(|e| e["snapshot"].is_string())
        },
    );
    let url = with_still
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["snapshot"].as_str())
        .unwrap()
        .to_string();
    let jpeg = web.get(&url);
    assert_eq!(jpeg.status, 200);
    assert_eq!(jpeg.header("content-type"), Some("image/jpeg"));
    assert_eq!(&jpeg.body[..2], b"\xff\xd8");
    let cam2_events = web.json("/api/events?camera=cam02&limit=5000");
    assert!(cam2_events
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["snapshot"].is_null() && e["camera"] == "cam02"));
    // The camera grid's latest still.
    let cams = web.json("/api/cameras");
    let c1 = cams
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["camera"] == "cam01")
        .unwrap();
    assert!(c1["snapshot"].is_string(), "{c1}");

    // A camera down: its state, and the alert.
    r.cams[1].set_down();
    web.wait_json("/api/cameras", Duration::from_secs(30), "cam02 down", |v| {
        v.as_array().unwrap().iter().any(|c| {
            c["camera"] == "cam02"
                && c["state"] == "down"
                && c["problems"].as_array().is_some_and(|p| !p.is_empty())
        })
    });
    let alerts = web.wait_json(
        "/api/alerts",
        Duration::from_secs(30),
        "camera_down alert",
        |v| {
            v.as_array()
                .unwrap()
                .iter()
                .any(|a| a["kind"] == "camera_down" && a["camera"] == "cam02")
        },
    );
    for a in alerts.as_array().unwrap() {
        assert!(a.get("acked_by").is_some() && a.get("acked_at").is_some());
    }

    // The gateway: online, its version, buffer depth and when it was last seen.
    let gws = web.wait_json("/api/gateways", Duration::from_secs(20), "telemetry", |v| {
        v.as_array()
            .unwrap()
            .iter()
            .any(|g| g["buffer_depth"].is_number())
    });
    let g = &gws.as_array().unwrap()[0];
    assert_eq!(g["gateway"], "gw-test");
    assert_eq!(g["online"], true);
    assert_eq!(g["version"], env!("CARGO_PKG_VERSION"));
    assert!(g["last_seen"].is_string());

    // An admin's check_now goes to the gateway signed with the station's key.
    let mut admin = r.station.web();
    assert_eq!(admin.login("admin1", "admin pw"), 200);
    let res = admin.post(
        "/api/commands",
        r#"{"ward":"w-test","gateway":"gw-test","op":"check_now"}"#,
    );
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["ok"], true, "{}", res.text());
    // An officer may not.
    let res = web.post(
        "/api/commands",
        r#"{"ward":"w-test","gateway":"gw-test","op":"check_now"}"#,
    );
    assert_eq!(res.status, 403);

    // Metrics, without a session.
    let m = Web::new(r.station.port).get("/metrics");
    assert_eq!(m.status, 200);
    let text = m.text();
    assert!(
        text.contains(
            "camgw_station_cameras{ward=\"w-test\",gateway=\"gw-test\",state=\"down\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("camgw_station_gateway_online{ward=\"w-test\",gateway=\"gw-test\"} 1"));
    // Nothing secret anywhere the station keeps or shows.
    let log = r.station.log();
    assert!(!log.contains(CAM_PW) && !log.contains("admin pw") && !log.contains("officer pw"));
    if let Some(path) = db.is_none().then(|| r.tmp.path().join("station.db")) {
        let bytes = std::fs::read(&path).unwrap();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(!hay.contains(CAM_PW) && !hay.contains("officer pw"));
    }
}

#[test]
fn sqlite_records_everything_across_restarts_of_the_service_and_the_broker() {
    if !Broker::is_mosquitto() || emulated_suite() {
        eprintln!("skipped: needs Mosquitto (persistent sessions), and runs natively only (the station is not gateway firmware)");
        return;
    }
    recorder_end_to_end(None);
}

#[test]
fn postgres_records_everything_across_restarts_of_the_service_and_the_broker() {
    if !Broker::is_mosquitto() || emulated_suite() {
        eprintln!("skipped: needs Mosquitto, runs natively only");
        return;
    }
    let Some(pg) = postgres_or_skip("postgres_records_everything") else {
        return;
    };
    recorder_end_to_end(Some(&pg.url()));
    drop(pg);
}

/// The API on messages published straight to the broker (no agent): sessions, 401s, CSRF,
/// roles, filters, acknowledgement, hostile text.
#[test]
fn api_sessions_roles_csrf_filters_and_ack() {
    if emulated_suite() {
        eprintln!("skipped under emulation: the station runs natively");
        return;
    }
    let broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("st.db").display().to_string();
    user_add(&db, "officer1", "officer", "pw one");
    user_add(&db, "admin1", "admin", "pw two");
    let station = StationServer::start(broker.port, &db, &["--ward", "w-test"]);

    let anon = station.web();
    for path in [
        "/api/gateways",
        "/api/cameras",
        "/api/alerts",
        "/api/events",
        "/api/me",
        "/api/stream",
        "/api/snapshots/x.jpg",
    ] {
        assert_eq!(anon.get(path).status, 401, "GET {path} without a session");
    }
    for path in ["/api/alerts/a1/ack", "/api/commands", "/api/logout"] {
        assert_eq!(
            anon.post(path, "{}").status,
            401,
            "POST {path} without a session"
        );
    }
    let page = anon.get("/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<!doctype html>"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(anon.get("/app.js").status, 200);
    assert_eq!(anon.get("/metrics").status, 200);

    let mut bad = station.web();
    assert_eq!(bad.login("officer1", "wrong"), 401);
    assert_eq!(bad.login("nobody", "pw one"), 401);
    assert_eq!(
        bad.request("POST", "/api/login", Some("not json"), false)
            .status,
        400
    );
    assert!(bad.cookie.is_none());

    let mut off = station.web();
    let login = off.request(
        "POST",
        "/api/login",
        Some(r#"{"name":"officer1","password":"pw one"}"#),
        false,
    );
    assert_eq!(login.status, 200);
    let cookie = login.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert_eq!(off.login("officer1", "pw one"), 200);
    let me = off.json("/api/me");
    assert_eq!(me["role"], "officer");
    assert_eq!(me["tz"], "Asia/Ho_Chi_Minh");

    // Messages straight from the "gateway", some of them hostile.
    let ev = |id: &str, seq: u64, cam: &str, ts: &str, state: &str| {
        serde_json::json!({"id": id, "seq": seq, "ts": ts, "clock_synced": true, "kind": "motion",
            "camera": cam, "source": "ingest", "state": state})
        .to_string()
    };
    publish(
        broker.port,
        &format!("{T}/event"),
        ev("e1", 1, "cam01", "2026-12-01T01:00:00.000Z", "start").as_bytes(),
        false,
    );
    publish(
        broker.port,
        &format!("{T}/event"),
        ev("e2", 2, "cam02", "2026-12-01T02:00:00.000Z", "start").as_bytes(),
        false,
    );
    publish(
        broker.port,
        &format!("{T}/event"),
        ev("e3", 3, "cam01", "2026-12-01T03:00:00.000Z", "end").as_bytes(),
        false,
    );
    let alert = serde_json::json!({"id": "a1", "seq": 4, "ts": "2026-12-01T03:30:00.000Z", "clock_synced": true,
        "kind": "camera_down", "camera": "cam01", "detail": {"problems": ["unreachable"]}});
    publish(
        broker.port,
        &format!("{T}/alert"),
        alert.to_string().as_bytes(),
        false,
    );
    let evil = "<img src=x onerror=alert(1)>";
    publish(
        broker.port,
        &format!("{T}/camera/{evil}/health"),
        serde_json::json!({"camera": evil, "state": "down", "problems": ["<script>alert(2)</script>"],
            "since": "2026-12-01T03:00:00Z", "ts": "2026-12-01T03:00:00.000Z"})
        .to_string()
        .as_bytes(),
        true,
    );
    publish(
        broker.port,
        &format!("{T}/event"),
        b"\xff\xfe not json <b>",
        false,
    );
    publish(broker.port, "camgw/w-test", b"outside the grammar", false);
    publish(
        broker.port,
        "camgw/other-ward/gw/event",
        ev("x9", 9, "cam09", "2026-12-01T03:00:00.000Z", "start").as_bytes(),
        false,
    );

    let all = off.wait_json(
        "/api/events",
        Duration::from_secs(10),
        "three events",
        |v| v.as_array().unwrap().len() >= 3,
    );
    assert_eq!(
        ids(&all),
        ["e3", "e2", "e1"],
        "newest first, only this ward"
    );
    assert_eq!(ids(&off.json("/api/events?camera=cam01")), ["e3", "e1"]);
    assert_eq!(
        ids(&off.json("/api/events?since=2026-12-01T01:30:00Z&until=2026-12-01T02:30:00Z")),
        ["e2"]
    );
    assert_eq!(ids(&off.json("/api/events?state=end")), ["e3"]);
    assert_eq!(off.get("/api/events?since=yesterday").status, 400);
    let cams = off.wait_json(
        "/api/cameras",
        Duration::from_secs(10),
        "the hostile camera",
        |v| !v.as_array().unwrap().is_empty(),
    );
    assert_eq!(cams[0]["camera"], evil, "stored as text");
    assert_eq!(cams[0]["problems"][0], "<script>alert(2)</script>");
    let alerts = off.json("/api/alerts?since=2026-12-01T00:00:00Z");
    assert_eq!(alerts.as_array().unwrap().len(), 1);
    assert!(alerts[0]["acked_by"].is_null() && alerts[0]["acked_at"].is_null());
    assert_eq!(
        off.json("/api/alerts?since=2026-12-02T00:00:00Z"),
        serde_json::json!([])
    );

    // CSRF: every POST but login carries the token.
    assert_eq!(
        off.request("POST", "/api/alerts/a1/ack", Some("{}"), false)
            .status,
        403
    );
    let mut wrong = Web::new(station.port);
    wrong.cookie = off.cookie.clone();
    wrong.csrf = Some("not-the-token".into());
    assert_eq!(wrong.post("/api/alerts/a1/ack", "{}").status, 403);
    assert_eq!(off.post("/api/alerts/nope/ack", "{}").status, 404);
    let acked = off.post("/api/alerts/a1/ack", "{}");
    assert_eq!(acked.status, 200, "{}", acked.text());
    assert_eq!(acked.json()["acked_by"], "officer1");
    assert!(acked.json()["acked_at"].is_string());
    let mut admin = station.web();
    assert_eq!(admin.login("admin1", "pw two"), 200);
    assert_eq!(
        admin.post("/api/alerts/a1/ack", "{}").json()["acked_by"],
        "officer1",
        "the first ack stands"
    );
    // Roles: an officer sends no commands; this station has no command key at all.
    assert_eq!(
        off.post(
            "/api/commands",
            r#"{"ward":"w-test","gateway":"gw-test","op":"check_now"}"#
        )
        .status,
        403
    );
    assert_eq!(
        admin
            .post(
                "/api/commands",
                r#"{"ward":"w-test","gateway":"gw-test","op":"check_now"}"#
            )
            .status,
        501
    );
    assert_eq!(off.get("/api/snapshots/e1.jpg").status, 404);

    // Logout ends the session for good.
    assert_eq!(off.post("/api/logout", "{}").status, 200);
    assert_eq!(off.get("/api/cameras").status, 401);
    // A new password ends every session of that user.
    assert_eq!(admin.get("/api/cameras").status, 200);
    user_add(&db, "admin1", "admin", "pw three");
    assert_eq!(admin.get("/api/cameras").status, 401);
    // The recorder survived the hostile messages and says how many it got.
    let m = Web::new(station.port).get("/metrics").text();
    assert!(m.contains("camgw_station_record_errors_total 0"), "{m}");
}

/// The gateway's own `/metrics` (`[metrics] listen`): off by default; when on, buffer depth,
/// delivered counts, uplink state and each camera's state and probe rounds; anything but
/// `GET /metrics` is refused.
#[test]
fn gateway_metrics_when_configured() {
    let rt = rt();
    let broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let cam = sim_camera(&rt, camgw::sim::SimControl::new(CAM_PW));
    let ingest: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let port = free_port();
    let c = TestConfig::new(broker.port, ingest, &tmp.path().join("data"))
        .set("metrics", "listen", format!("127.0.0.1:{port}"))
        .merge(&health_block(1, 1000, 2, 1))
        .camera(
            CameraToml::new("cam01", "generic")
                .login(CAM_PW)
                .urls_of(&cam),
        );
    let agent = Agent::from_text(
        tmp.path(),
        tmp.path().join("data"),
        broker.port,
        ingest,
        &c.text(),
        Vec::new(),
    );
    let web = Web::new(port);
    assert!(
        wait_port(port, scaled(Duration::from_secs(10))),
        "{}",
        agent.log()
    );
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(20));
    let text = loop {
        let a = web.get("/metrics");
        assert_eq!(a.status, 200);
        assert!(a
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        let t = a.text();
        if t.contains("camgw_camera_state{camera=\"cam01\",state=\"up\"} 1")
            && t.contains("camgw_uplink_connected 1")
        {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no up camera in:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for family in [
        "camgw_buffer_pending_records{class=\"event\"}",
        "camgw_uplink_delivered_records_total",
        "camgw_buffer_dropped_records_total 0",
        "camgw_probe_round_seconds{camera=\"cam01\"}",
        "camgw_probe_rounds_total{camera=\"cam01\"}",
    ] {
        assert!(text.contains(family), "{family}");
    }
    assert!(!text.contains(CAM_PW));
    // Delivered counts follow.
    for _ in 0..5 {
        agent.accepted("cam01");
    }
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(10));
    loop {
        let t = web.get("/metrics").text();
        let n: u64 = t
            .lines()
            .find_map(|l| l.strip_prefix("camgw_uplink_delivered_records_total "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        if n >= 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivered stayed at {n}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(web.get("/other").status, 404);
    assert_eq!(web.post("/metrics", "{}").status, 400);
    // Off by default: the ingest-only agent of any other test listens on no metrics port.
    let text = c.text();
    assert!(text.contains("[metrics]"));
    let plain = TestConfig::new(broker.port, ingest, &tmp.path().join("data")).text();
    assert!(camgw::config::Config::parse(&plain)
        .unwrap()
        .metrics
        .is_none());
}

/// A misbehaving "gateway" on the ward broker floods the station with junk (payloads that
/// are not JSON, 512 KiB each, topics outside the grammar, huge health texts): it is kept as
/// text, nothing fails, and a real event behind the flood is recorded within seconds.
#[test]
fn a_flood_of_junk_from_the_broker_does_not_stall_the_recorder() {
    if emulated_suite() {
        eprintln!("skipped under emulation: the station runs natively");
        return;
    }
    let broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("st.db").display().to_string();
    user_add(&db, "officer1", "officer", "pw");
    let station = StationServer::start(broker.port, &db, &[]);
    let mut web = station.web();
    assert_eq!(web.login("officer1", "pw"), 200);
    web.wait_json(
        "/api/cameras",
        Duration::from_secs(10),
        "the session",
        |_| true,
    );
    let junk = vec![0xffu8; 512 * 1024];
    let huge = format!(
        r#"{{"state":"down","problems":["{}"],"ts":"2026-12-02T00:00:00Z"}}"#,
        "<".repeat(200_000)
    );
    for i in 0..40 {
        publish(broker.port, "camgw/w-test/gw-evil/event", &junk, false);
        publish(
            broker.port,
            &format!("camgw/w-test/gw-evil/x/{i}"),
            &junk,
            false,
        );
        publish(
            broker.port,
            &format!("camgw/w-test/gw-evil/camera/c{i}/health"),
            huge.as_bytes(),
            true,
        );
    }
    let t0 = std::time::Instant::now();
    let ev = r#"{"id":"real-1","seq":1,"ts":"2026-12-02T00:00:00.000Z","clock_synced":true,"kind":"motion","camera":"cam01","source":"ingest","state":"start"}"#;
    publish(broker.port, &format!("{T}/event"), ev.as_bytes(), false);
    web.wait_json(
        "/api/events",
        Duration::from_secs(10),
        "the real event",
        |v| ids(v).contains(&"real-1".to_string()),
    );
    eprintln!(
        "real event recorded {} ms after the flood",
        t0.elapsed().as_millis()
    );
    let cams = web.json("/api/cameras");
    assert_eq!(cams.as_array().unwrap().len(), 40);
    assert!(
        cams[0]["problems"][0].as_str().unwrap().len() <= 4096,
        "clipped"
    );
    let m = Web::new(station.port).get("/metrics").text();
    assert!(m.contains("camgw_station_record_errors_total 0"), "{m}");
    assert!(
        m.contains("camgw_station_messages_recorded_total 121"),
        "{m}"
    );
}

/// Clients that connect to the gateway's /metrics and send nothing hold at most its four
/// slots until the 5 s head deadline: ingest keeps answering at once meanwhile, and
/// /metrics answers again afterwards.
#[test]
fn idle_metrics_clients_do_not_slow_the_gateway() {
    let broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let ingest: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let port = free_port();
    let c = default_cameras(
        TestConfig::new(broker.port, ingest, &tmp.path().join("data")).set(
            "metrics",
            "listen",
            format!("127.0.0.1:{port}"),
        ),
    );
    let agent = Agent::from_text(
        tmp.path(),
        tmp.path().join("data"),
        broker.port,
        ingest,
        &c.text(),
        Vec::new(),
    );
    assert!(
        wait_port(port, scaled(Duration::from_secs(10))),
        "{}",
        agent.log()
    );
    use std::io::{Read, Write};
    let get = || -> bool {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf.starts_with(b"HTTP/1.1 200")
    };
    // Idle clients until every slot is held: a GET is then turned away.
    let mut idle = Vec::new();
    while get() {
        assert!(idle.len() < 64, "the metrics server never filled up");
        idle.push(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    eprintln!("{} idle clients fill the metrics server", idle.len());
    let t0 = std::time::Instant::now();
    for _ in 0..20 {
        agent.accepted("cam01");
    }
    let took = t0.elapsed();
    assert!(
        took < scaled(Duration::from_secs(2)),
        "ingest took {took:?} with idle metrics clients"
    );
    // The head deadline frees the slots.
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(15));
    while !get() {
        assert!(
            std::time::Instant::now() < deadline,
            "/metrics never answered again"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("/metrics answered again after {:?}", t0.elapsed());
    drop(idle);
}

/// Regression (found by the ingest benchmark): with more messages waiting at the broker than
/// the recorder's queue holds, the writer blocked handing acknowledgements to the MQTT client
/// while the client's event loop blocked handing it messages; it stopped after ~2,000. Now
/// every one of a 20,000-message backlog is recorded.
#[test]
fn a_backlog_larger_than_the_recorder_queue_is_recorded_in_full() {
    if !Broker::is_mosquitto() || emulated_suite() {
        eprintln!("skipped: needs Mosquitto (persistent sessions), runs natively");
        return;
    }
    const N: u64 = 20_000;
    let broker = Broker::start_persistent();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("st.db").display().to_string();
    let mut st = StationServer::start(broker.port, &db, &[]);
    let metric = |port: u16, name: &str| -> u64 {
        Web::new(port)
            .get("/metrics")
            .text()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(20));
    while metric(st.port, "camgw_station_mqtt_connected") != 1 {
        assert!(std::time::Instant::now() < deadline, "{}", st.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    st.term();
    publish_events(broker.port, N as usize);
    st.spawn();
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(60));
    loop {
        let n = metric(st.port, "camgw_station_messages_recorded_total");
        if n >= N {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {n} of {N} recorded:\n{}",
            st.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut web = st.web();
    user_add(&db, "o", "officer", "pw");
    assert_eq!(web.login("o", "pw"), 200);
    let ev = web.json("/api/events?limit=5000");
    assert_eq!(ev.as_array().unwrap().len(), 5000);
    assert_eq!(
        metric(st.port, "camgw_station_events{ward=\"w1\",gateway=\"gw0\"}"),
        N / 3 + 1
    );
}
