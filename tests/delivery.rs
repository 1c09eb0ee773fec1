//! Delivery over a real broker: birth and will, order, outages, restarts, kill -9.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

const T: &str = "camgw/w-test/gw-test";

#[test]
fn birth_is_retained_and_clean_shutdown_publishes_offline_and_exits_0() {
    let broker = Broker::start();
    let mut early = Subscriber::new(broker.port, &format!("{T}/status"));
    let mut agent = Agent::start(broker.port, "");
    early.wait_until(Duration::from_secs(10), "birth", |m| !m.is_empty());
    // A subscriber arriving after the birth still gets it: it is retained.
    let mut sub = Subscriber::new(broker.port, &format!("{T}/status"));
    sub.wait_until(Duration::from_secs(10), "retained birth", |m| !m.is_empty());
    let birth = sub.seen[0].json();
    assert!(sub.seen[0].retain, "birth must be retained");
    assert_eq!(birth["online"], true);
    assert_eq!(birth["version"], env!("CARGO_PKG_VERSION"));
    assert!(birth["boot_id"].as_str().is_some_and(|s| s.len() == 36));
    assert!(birth["ts"].as_str().is_some_and(|s| s.ends_with('Z')));
    let status = agent.term();
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    sub.wait_until(Duration::from_secs(10), "offline status", |m| {
        m.iter().any(|m| m.json()["online"] == false)
    });
    let off = sub
        .seen
        .iter()
        .find(|m| m.json()["online"] == false)
        .unwrap()
        .json();
    assert_eq!(off["reason"], "shutdown");
    assert_eq!(off["boot_id"], birth["boot_id"]);
    // And it is retained for whoever looks next.
    let mut late = Subscriber::new(broker.port, &format!("{T}/status"));
    late.wait_until(Duration::from_secs(10), "retained offline", |m| {
        !m.is_empty()
    });
    assert_eq!(late.seen[0].json()["online"], false);
    assert!(!agent.log().contains("pa55-SECRET-word"));
}

#[test]
fn last_will_reports_offline_after_kill_9() {
    let broker = Broker::start();
    let mut agent = Agent::start(broker.port, "");
    let mut sub = Subscriber::new(broker.port, &format!("{T}/status"));
    sub.wait_until(Duration::from_secs(10), "birth", |m| {
        m.iter().any(|m| m.json()["online"] == true)
    });
    let boot = sub.seen[0].json()["boot_id"].clone();
    agent.kill9();
    sub.wait_until(Duration::from_secs(15), "last will", |m| {
        m.iter().any(|m| m.json()["online"] == false)
    });
    let will = sub
        .seen
        .iter()
        .find(|m| m.json()["online"] == false)
        .unwrap()
        .json();
    assert_eq!(will["boot_id"], boot);
    assert!(
        will.get("reason").is_none(),
        "a will is not a clean shutdown: {will}"
    );
}

#[test]
fn a_thousand_ingested_events_arrive_in_seq_order() {
    let broker = Broker::start();
    let agent = Agent::start(broker.port, "");
    let mut sub = Subscriber::new(broker.port, &format!("{T}/event"));
    let mut accepted = BTreeSet::new();
    for i in 0..1000 {
        accepted.insert(agent.accepted(if i % 2 == 0 { "cam01" } else { "cam02" }));
    }
    sub.wait_until(Duration::from_secs(30), "1000 events", |m| {
        event_seqs(m).0.len() >= 1000
    });
    let (got, dups) = event_seqs(&sub.seen);
    assert_eq!(got, accepted);
    // A link judged dead (a PUBACK or PINGRESP late on a loaded machine) reconnects and
    // re-sends, which the contract allows; without a reconnect there is no duplicate.
    if agent.log().matches("connected to the broker").count() == 1 {
        assert_eq!(dups, 0, "no reconnect happened, so no duplicates");
    }
    assert_seq_order(&sub.seen, "event");
    let e = sub.seen[0].json();
    for key in [
        "id",
        "seq",
        "ts",
        "clock_synced",
        "kind",
        "camera",
        "source",
        "state",
    ] {
        assert!(e.get(key).is_some(), "{key} missing in {e}");
    }
    assert_eq!(e["source"], "ingest");
}

#[test]
fn a_ten_second_broker_outage_loses_nothing() {
    let mut broker = Broker::start();
    let gate = StallProxy::start(broker.port);
    let agent = Agent::start(gate.port, "");
    let mut first = Subscriber::new(broker.port, &format!("{T}/event"));
    let mut accepted = BTreeSet::new();
    for _ in 0..100 {
        accepted.insert(agent.accepted("cam01"));
    }
    first.wait_until(Duration::from_secs(20), "first 100", |m| {
        event_seqs(m).0.len() >= 100
    });
    gate.close();
    broker.stop();
    let outage = std::time::Instant::now();
    for _ in 0..1000 {
        accepted.insert(agent.accepted("cam02"));
    }
    let left = Duration::from_secs(10).saturating_sub(outage.elapsed());
    std::thread::sleep(left); // the outage itself is what is being tested, not a sync
    broker.restart();
    // A fresh subscriber, subscribed before the agent may reconnect (the restarted broker
    // keeps no sessions), sees everything from then on.
    let mut sub = Subscriber::new(broker.port, &format!("{T}/event"));
    gate.open();
    let before: BTreeSet<u64> = event_seqs(&first.seen).0;
    sub.wait_until(Duration::from_secs(30), "all 1100 after the outage", |m| {
        event_seqs(m).0.union(&before).count() >= accepted.len()
    });
    let mut all = first.seen.clone();
    all.extend(sub.seen.iter().cloned());
    let (got, dups) = event_seqs(&all);
    assert_eq!(got, accepted, "no gap in seq");
    assert_seq_order(&sub.seen, "event");
    eprintln!(
        "outage: {} accepted, {} delivered, {dups} duplicates",
        accepted.len(),
        got.len()
    );
}

#[test]
fn events_pending_at_restart_are_delivered_by_the_next_run() {
    let mut broker = Broker::start();
    let mut agent = Agent::start(broker.port, "");
    broker.stop();
    let mut accepted = BTreeSet::new();
    for _ in 0..300 {
        accepted.insert(agent.accepted("cam01"));
    }
    assert_eq!(agent.term().code(), Some(0), "{}", agent.log());
    broker.restart();
    let mut sub = Subscriber::new(broker.port, &format!("{T}/event"));
    agent.spawn();
    for _ in 0..10 {
        accepted.insert(agent.accepted("cam02"));
    }
    sub.wait_until(Duration::from_secs(30), "pending events", |m| {
        event_seqs(m).0.len() >= accepted.len()
    });
    assert_eq!(event_seqs(&sub.seen).0, accepted);
    assert_seq_order(&sub.seen, "event");
}

#[test]
fn with_sync_always_every_202_survives_kill_9_mid_burst() {
    let mut broker = Broker::start();
    let mut agent = Agent::start(broker.port, "--\n[buffer]\nsync = \"always\"\n");
    broker.stop();
    let addr = agent.ingest;
    // Four writers post as fast as they can; the agent is killed while they do.
    let (tx, rx) = std::sync::mpsc::channel();
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let tx = tx.clone();
            std::thread::spawn(move || loop {
                let r = std::panic::catch_unwind(|| {
                    http_post(
                        addr,
                        "/v1/events",
                        br#"{"camera":"cam01","kind":"motion","state":"pulse"}"#,
                    )
                });
                match r {
                    Ok((202, body)) => {
                        if tx.send(body["seq"].as_u64().unwrap()).is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            })
        })
        .collect();
    drop(tx);
    let mut accepted = BTreeSet::new();
    while accepted.len() < 400 {
        accepted.insert(rx.recv_timeout(Duration::from_secs(10)).expect("202s"));
    }
    agent.kill9();
    for w in writers {
        let _ = w.join();
    }
    accepted.extend(rx.try_iter());
    broker.restart();
    let mut sub = Subscriber::new(broker.port, &format!("{T}/event"));
    agent.spawn();
    sub.wait_until(Duration::from_secs(30), "every 202'd event", |m| {
        event_seqs(m).0.is_superset(&accepted)
    });
    eprintln!(
        "kill -9 mid-burst: {} answered 202, all delivered",
        accepted.len()
    );
}

#[test]
fn bad_input_gets_its_status_and_buffers_nothing() {
    let broker = Broker::start();
    let agent = Agent::start(broker.port, "");
    let mut sub = Subscriber::new(broker.port, &format!("{T}/event"));
    let first = agent.accepted("cam01");
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"{not json".to_vec(), 400),
        (br#"{"camera":"cam01","kind":"motion"}"#.to_vec(), 400),
        (
            br#"{"camera":"cam01","kind":"motion","state":"sideways"}"#.to_vec(),
            400,
        ),
        (
            br#"{"camera":"cam01","kind":"smoke","state":"start"}"#.to_vec(),
            400,
        ),
        (
            br#"{"camera":"cam01","kind":"motion","state":"start","extra":1}"#.to_vec(),
            400,
        ),
        (
            br#"{"camera":"cam99","kind":"motion","state":"start"}"#.to_vec(),
            404,
        ),
        (
            format!(
                r#"{{"camera":"cam01","kind":"motion","state":"start","pad":"{}"}}"#,
                "x".repeat(70_000)
            )
            .into_bytes(),
            413,
        ),
    ];
    for (body, want) in &cases {
        let (code, json) = agent.post(body);
        assert_eq!(
            code,
            *want,
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "JSON error body: {json}"
        );
    }
    let next = agent.accepted("cam01");
    assert_eq!(next, first + 1, "refused requests took no seq");
    sub.wait_until(Duration::from_secs(10), "both good events", |m| {
        event_seqs(m).0.len() >= 2
    });
    sub.drain_for(Duration::from_millis(300));
    assert_eq!(event_seqs(&sub.seen).0, BTreeSet::from([first, next]));
}

#[test]
fn a_silently_stalled_link_is_noticed_by_keep_alive_and_nothing_is_lost() {
    let broker = Broker::start();
    let proxy = StallProxy::start(broker.port);
    let mut sub = Subscriber::new(broker.port, &format!("{T}/event"));
    let agent = Agent::start(proxy.port, "");
    let mut accepted = BTreeSet::new();
    accepted.insert(agent.accepted("cam01"));
    sub.wait_until(Duration::from_secs(10), "first event", |m| {
        event_seqs(m).0.len() == 1
    });
    // The uplink and its command link (a connection of its own; the stills link connects
    // only while stills wait, and none can be had from the test's cameras).
    let before = proxy.connections();
    assert!(
        before <= 2,
        "{before} connections before the stall: {}",
        agent.log()
    );
    proxy.stall();
    let stalled = std::time::Instant::now();
    for _ in 0..20 {
        accepted.insert(agent.accepted("cam02"));
    }
    // keep_alive_s = 5: the agent must give up on the silent connection (unacknowledged
    // publishes for one keep-alive, or a ping unanswered for half of one) and reconnect
    // (backoff at most 1 s here); 12 s leaves room for a loaded machine.
    sub.wait_until(Duration::from_secs(12), "events after the stall", |m| {
        event_seqs(m).0.is_superset(&accepted)
    });
    let took = stalled.elapsed();
    assert!(proxy.connections() > before, "the agent reconnected");
    assert!(
        agent.log().contains("broker connection lost"),
        "{}",
        agent.log()
    );
    eprintln!("stalled link noticed and recovered after {took:?} (keep-alive 5 s)");
}

#[test]
fn telemetry_reports_the_buffer_at_qos_0() {
    let mut broker = Broker::start();
    let agent = Agent::start(broker.port, "telemetry_interval_s = 1\n--\n");
    broker.stop();
    for _ in 0..5 {
        agent.accepted("cam01");
    }
    broker.restart();
    let mut sub = Subscriber::new(broker.port, &format!("{T}/telemetry"));
    sub.wait_until(Duration::from_secs(15), "telemetry", |m| !m.is_empty());
    let t = sub.seen[0].json();
    assert!(!sub.seen[0].retain);
    assert!(t["buffer"]["bytes"].is_u64(), "{t}");
    assert!(
        t["uptime_s"].is_u64() && t["boot_id"].is_string() && t["rss_kb"].is_u64(),
        "{t}"
    );
    assert!(t["clock_synced"].is_boolean());
}
