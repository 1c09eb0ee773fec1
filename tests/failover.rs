//! `mqtt.urls`: the agent walks its brokers in order on every reconnect, keeps the first that
//! works, says which in its status and telemetry, and what the old broker had not
//! acknowledged goes to the new one: every event answered 202 reaches one of the brokers.
//! The station's own tools take several brokers the same way (`--mqtt A,B`).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

fn url(port: u16) -> String {
    format!("mqtt://127.0.0.1:{port}")
}

/// The agent on `urls`, cam01 and cam02, `sync = "always"`.
fn agent_on(dir: &std::path::Path, urls: &[u16]) -> Agent {
    let ingest: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let data_dir = dir.join("data");
    let list: Vec<toml::Value> = urls.iter().map(|p| url(*p).into()).collect();
    let c = TestConfig::new(urls[0], ingest, &data_dir)
        .unset("mqtt", "url")
        .set("mqtt", "urls", toml::Value::Array(list))
        .set("mqtt", "telemetry_interval_s", 1)
        .set("buffer", "sync", "always");
    let text = default_cameras(c).text();
    Agent::from_text(dir, data_dir, urls[0], ingest, &text, Vec::new())
}

/// `n` motion events posted to the agent, the ids it answered 202 with.
fn posted(agent: &Agent, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| {
            agent.motion("cam01", "pulse").1["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// The status the agent last published retained on this subscriber's broker.
fn last_status(sub: &Subscriber) -> serde_json::Value {
    sub.on("status").last().cloned().unwrap_or_default()
}

#[test]
fn with_two_brokers_the_first_killed_every_event_answered_202_arrives_at_one_of_them() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Broker::start();
    let b = Broker::start();
    let filter = format!("camgw/{WARD}/{GW}/+");
    let mut sub_a = Subscriber::new(a.port, &filter);
    let mut sub_b = Subscriber::new(b.port, &filter);
    let mut agent = agent_on(tmp.path(), &[a.port, b.port]);
    // It starts on the first broker and says so.
    sub_a.wait_until(Duration::from_secs(10), "the status on A", |seen| {
        seen.iter()
            .any(|m| m.leaf() == "status" && m.json()["broker"] == url(a.port))
    });
    let poster = Poster::start(&agent);
    poster.wait_for(200);
    a.stop(); // kill -9, mid-burst
    let at_kill = poster.count();
    poster.wait_for(at_kill + 300);
    let want = poster.stop();
    wait_delivered(&mut [&mut sub_a, &mut sub_b], &want, "after A was killed");
    // It moved to B, kept it, and says so in its status and telemetry.
    sub_b.wait_until(Duration::from_secs(10), "telemetry naming B", |seen| {
        seen.iter()
            .any(|m| m.leaf() == "telemetry" && m.json()["broker"] == url(b.port))
    });
    assert_eq!(last_status(&sub_b)["broker"], url(b.port));
    assert_eq!(last_status(&sub_b)["online"], true);
    let on_b = event_ids(&[&sub_b]).len();
    assert!(on_b > 0, "nothing reached B");
    assert!(
        agent.log().contains("trying the next broker"),
        "the log says it moved on"
    );
    agent.term();
}

#[test]
fn every_reconnect_tries_the_brokers_in_order_and_keeps_the_first_that_works() {
    let tmp = tempfile::tempdir().unwrap();
    let dead = free_port(); // nothing listens here
    let mut a = Broker::start();
    let mut b = Broker::start();
    let filter = format!("camgw/{WARD}/{GW}/+");
    let mut sub_a = Subscriber::new(a.port, &filter);
    let mut sub_b = Subscriber::new(b.port, &filter);
    // The first broker is down from the start: the agent goes on to A.
    let mut agent = agent_on(tmp.path(), &[dead, a.port, b.port]);
    let first = posted(&agent, 20);
    wait_delivered(&mut [&mut sub_a], &first, "on A");
    assert_eq!(last_status(&sub_a)["broker"], url(a.port));
    // A goes: B. Then A comes back: the agent stays on B while B works.
    a.stop();
    sub_b.wait_until(Duration::from_secs(15), "the status on B", |seen| {
        seen.iter()
            .any(|m| m.leaf() == "status" && m.json()["broker"] == url(b.port))
    });
    a.restart();
    let mut sub_a2 = Subscriber::new(a.port, &filter);
    let second = posted(&agent, 20);
    wait_delivered(&mut [&mut sub_b], &second, "on B, A being back");
    sub_a2.drain_for(Duration::from_millis(300));
    assert!(
        event_ids(&[&sub_a2]).is_empty(),
        "moved back to A while B worked"
    );
    // B goes: the next round starts at the first broker again and reaches A.
    b.stop();
    let third = posted(&agent, 20);
    wait_delivered(&mut [&mut sub_a2], &third, "on A again");
    agent.term();
}

#[test]
fn station_watch_takes_several_brokers_and_goes_on_to_the_next() {
    let dead = free_port();
    let b = Broker::start();
    let mut agent = Agent::start(b.port, "");
    let mut sub = Subscriber::new(b.port, &format!("camgw/{WARD}/{GW}/status"));
    sub.wait_until(Duration::from_secs(10), "the status", |s| !s.is_empty());
    let out = camgw_command(BIN)
        .args([
            "station",
            "watch",
            "--once",
            "--json",
            "--mqtt",
            &format!("{},{}", url(dead), url(b.port)),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(GW), "{stdout}");
    for bad in [",", "mqtt://a:1,,mqtt://b:1", "mqtt://a:1,mqtt://a:1"] {
        let out = camgw_command(BIN)
            .args(["station", "watch", "--once", "--mqtt", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad} was taken");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--mqtt"), "{bad}: {err}");
    }
    agent.term();
}
