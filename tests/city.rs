//! The city tier on a real clustered broker: three `nats-server` nodes (JetStream, MQTT,
//! stream replicas 3) on loopback (tests/common/nats.rs).
//!
//! - The agent with `mqtt.urls` over the three nodes: the node it is on is killed with kill -9
//!   mid-burst, then restarted; every event answered 202 reaches a persistent station
//!   subscriber on another node, and retained health is readable from every node.
//! - A ward Mosquitto bridged into the cluster: a cluster node killed, the ward broker
//!   restarted; nothing lost end to end, and a command from the city reaches the ward.
//! - The station service with `--mqtt` listing two nodes: its node killed, it resumes its
//!   persistent session on the other and records every event answered 202.

mod common;
#[path = "common/nats.rs"]
mod nats;

use std::collections::BTreeSet;
use std::time::Duration;

use camgw::sim::{SimCamera, SimControl};
use common::station;
use common::*;

/// One cluster at a time: three 3-node clusters at once on a 2-core machine form slowly
/// enough to fail their readiness bounds now and then.
static ONE_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn skip() -> bool {
    if emulated_suite() {
        eprintln!("*** SKIPPED: the city tests run natively, not under qemu ***");
        return true;
    }
    if let Some(why) = nats::unavailable() {
        if std::env::var_os("CAMGW_REQUIRE_NATS").is_some() {
            panic!("the NATS cluster is required but unavailable: {why}");
        }
        eprintln!("*** SKIPPED: {why} ***");
        return true;
    }
    false
}

/// The agent on `urls`, cam01 for ingest and cam09 (a simulated ONVIF camera) probed every
/// second, `sync = "always"`.
fn agent_on(dir: &std::path::Path, urls: &[String], cam: &SimCamera) -> Agent {
    let ingest: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let data_dir = dir.join("data");
    let list: Vec<toml::Value> = urls.iter().map(|u| u.clone().into()).collect();
    let c = TestConfig::new(1, ingest, &data_dir)
        .unset("mqtt", "url")
        .set("mqtt", "urls", toml::Value::Array(list))
        .set("buffer", "sync", "always")
        .merge(&health_block(1, 700, 2, 2));
    let c = default_cameras(c).camera(CameraToml::new("cam09", "onvif").login("pw").urls_of(cam));
    Agent::from_text(dir, data_dir, 1, ingest, &c.text(), Vec::new())
}

fn sim_camera(rt: &tokio::runtime::Runtime) -> SimCamera {
    rt.block_on(SimCamera::start(SimControl::new("pw")))
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A new subscriber on node `i` sees the retained health of cam09 (state up).
fn retained_health_on(cluster: &nats::Cluster, i: usize) {
    let mut sub = Subscriber::new(
        cluster.nodes[i].mqtt,
        &format!("camgw/{WARD}/{GW}/camera/cam09/health"),
    );
    sub.wait_until(
        Duration::from_secs(15),
        &format!("retained health on {}", cluster.nodes[i].name),
        |seen| seen.iter().any(|m| m.retain && m.json()["state"] == "up"),
    );
}

#[test]
fn over_three_nats_nodes_the_agents_node_killed_mid_burst_loses_nothing() {
    if skip() {
        return;
    }
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let cam = sim_camera(&rt);
    let mut cluster = nats::Cluster::start();
    let urls: Vec<String> = (0..3).map(|i| cluster.mqtt_url(i)).collect();
    // The station: a persistent session on the third node, never killed.
    let mut station = Subscriber::persistent(
        cluster.nodes[2].mqtt,
        &format!("camgw/{WARD}/+/+"),
        "station-city-test",
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = agent_on(tmp.path(), &urls, &cam);
    station.wait_until(Duration::from_secs(20), "the status naming n1", |seen| {
        seen.iter()
            .any(|m| m.leaf() == "status" && m.json()["broker"] == urls[0].as_str())
    });
    let poster = Poster::start(&agent);
    poster.wait_for(200);
    cluster.kill9(0);
    let killed = std::time::Instant::now();
    let at_kill = poster.count();
    poster.wait_for(at_kill + 300);
    // The agent is on another node before the first comes back (the cluster takes a few
    // seconds to move the session's stream leaders off the dead node).
    station.wait_until(
        Duration::from_secs(30),
        "a status from another node",
        |seen| {
            seen.iter().any(|m| {
                m.leaf() == "status"
                    && m.json()["online"] == true
                    && m.json()["broker"] != urls[0].as_str()
            })
        },
    );
    let moved_after = killed.elapsed();
    cluster.start_node(0);
    cluster.wait_ready(Duration::from_secs(60));
    let at_restart = poster.count();
    poster.wait_for(at_restart + 100);
    let want = poster.stop();
    wait_delivered_within(
        &mut [&mut station],
        &want,
        "at the station on n3",
        Duration::from_secs(120),
    );
    // The agent moved on to another node and said so. (Once the first node is back, a
    // later reconnect may take it again: every reconnect starts at the first URL.)
    let statuses: Vec<String> = station
        .on("status")
        .into_iter()
        .filter(|s| s["online"] == true)
        .map(|s| s["broker"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        statuses.iter().any(|b| *b != urls[0]),
        "no status from another node: {statuses:?} (urls {urls:?})"
    );
    let log = agent.log();
    let moves: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("broker") && !l.contains("DEBUG"))
        .collect();
    eprintln!("the agent's log on brokers:\n{}", moves.join("\n"));
    // Retained health is cluster state: every node answers with it, the restarted one too.
    for i in 0..3 {
        retained_health_on(&cluster, i);
    }
    eprintln!(
        "nats: {} accepted ({} before the kill, {} before the restart), all at the station; on another node {moved_after:?} after the kill; the agent's brokers in turn: {statuses:?}",
        want.len(),
        at_kill,
        at_restart
    );
    agent.term();
}

#[test]
fn through_a_ward_mosquitto_bridged_into_the_cluster_nothing_is_lost_end_to_end() {
    if skip() {
        return;
    }
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    if !Broker::is_mosquitto() {
        eprintln!("*** SKIPPED: needs Mosquitto ***");
        return;
    }
    let mut cluster = nats::Cluster::start();
    let mut ward = nats::WardBroker::start(&[cluster.nodes[0].mqtt, cluster.nodes[1].mqtt], WARD);
    let mut station = Subscriber::persistent(
        cluster.nodes[2].mqtt,
        &format!("camgw/{WARD}/+/event"),
        "station-ward-test",
    );
    let tmp = tempfile::tempdir().unwrap();
    let extra = "--\n[buffer]\nsync = \"always\"\n";
    let mut agent = Agent::in_dir(tmp.path(), tmp.path().join("data"), ward.port, extra);
    // The bridge is up once a first event crosses it.
    let first = agent.motion("cam01", "pulse").1["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_delivered(
        &mut [&mut station],
        &BTreeSet::from([first]),
        "the first event",
    );
    let poster = Poster::start(&agent);
    poster.wait_for(200);
    // The node the bridge is on goes: the bridge moves to the next address.
    cluster.kill9(0);
    let n = poster.count();
    poster.wait_for(n + 200);
    // The ward broker restarts (its database keeps what it had not forwarded).
    ward.stop_graceful();
    let n = poster.count();
    ward.restart();
    poster.wait_for(n + 200);
    cluster.start_node(0);
    cluster.wait_ready(Duration::from_secs(60));
    let n = poster.count();
    poster.wait_for(n + 100);
    let want = poster.stop();
    wait_delivered_within(
        &mut [&mut station],
        &want,
        "at the city station",
        Duration::from_secs(120),
    );
    // Commands come down: published on the cluster, they reach the ward broker.
    let mut at_ward = Subscriber::new(ward.port, &format!("camgw/{WARD}/{GW}/cmd"));
    let client_port = cluster.nodes[2].mqtt;
    let mut o = rumqttc::MqttOptions::new("city-cmd-test", "127.0.0.1", client_port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = rumqttc::Client::new(o, 10);
    client
        .publish(
            format!("camgw/{WARD}/{GW}/cmd"),
            rumqttc::QoS::AtLeastOnce,
            false,
            "not signed: refused by the agent, but carried",
        )
        .unwrap();
    std::thread::spawn(move || for _ in conn.iter() {});
    at_ward.wait_until(Duration::from_secs(10), "the command at the ward", |seen| {
        !seen.is_empty()
    });
    eprintln!(
        "ward bridge: {} accepted, all at the city station",
        want.len()
    );
    agent.term();
}

#[test]
fn the_station_service_resumes_on_another_node_and_records_every_event() {
    if skip() {
        return;
    }
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = nats::Cluster::start();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("station.db").display().to_string();
    station::user_add(&db, "officer1", "officer", "officer pw");
    let mqtt = format!("{},{}", cluster.mqtt_url(2), cluster.mqtt_url(1));
    let st = station::StationServer::start_on(&mqtt, &db, &["--ward", WARD]);
    let agent = Agent::in_dir(
        tmp.path(),
        tmp.path().join("data"),
        cluster.nodes[0].mqtt,
        "--\n[buffer]\nsync = \"always\"\n",
    );
    let post = |n: usize, ids: &mut Vec<String>| {
        for _ in 0..n {
            let (code, v) = agent.motion("cam01", "pulse");
            assert_eq!(code, 202, "{v}");
            ids.push(v["id"].as_str().unwrap().to_string());
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let mut web = st.web();
    assert_eq!(web.login("officer1", "officer pw"), 200);
    // Ready once an event crosses: until the station's subscription is in place, the cluster
    // keeps nothing for it.
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(60));
    loop {
        let probe = agent.motion("cam01", "pulse").1["id"]
            .as_str()
            .unwrap()
            .to_string();
        std::thread::sleep(Duration::from_millis(500));
        let v = web.json("/api/events?limit=5000");
        if v.as_array()
            .is_some_and(|a| a.iter().any(|e| e["id"] == probe.as_str()))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the station records nothing:\n{}",
            st.log()
        );
    }
    let mut ids = Vec::new();
    post(100, &mut ids);
    // The station's node goes mid-burst; the gateway (on the first node) goes on.
    cluster.kill9(2);
    post(150, &mut ids);
    let want: BTreeSet<String> = ids.iter().cloned().collect();
    let have = |v: &serde_json::Value| -> BTreeSet<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    web.wait_json(
        "/api/events?limit=5000",
        Duration::from_secs(120),
        "every event recorded with the station's node down",
        |v| have(v).is_superset(&want),
    );
    assert!(
        st.log()
            .contains(&format!("connected to the broker {}", cluster.mqtt_url(1))),
        "the station did not say it moved to the second node:\n{}",
        st.log()
    );
    // The node comes back; more events; still every one, each once.
    cluster.start_node(2);
    cluster.wait_ready(Duration::from_secs(60));
    post(100, &mut ids);
    let want: BTreeSet<String> = ids.iter().cloned().collect();
    let v = web.wait_json(
        "/api/events?limit=5000",
        Duration::from_secs(120),
        "every event recorded after the node came back",
        |v| have(v).is_superset(&want),
    );
    let recorded: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_str())
        .filter(|id| want.contains(*id))
        .collect();
    assert_eq!(recorded.len(), want.len(), "an event recorded twice");
}
