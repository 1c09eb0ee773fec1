//! Uplink benchmarks against a local Mosquitto: draining 100,000 buffered events at QoS 1,
//! the agent's peak RSS with 100,000 events buffered, and ingest-to-broker latency.
//! Run: `cargo bench --bench uplink` (`-- quick` for a smoke run). Reports medians.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use camgw::buffer::{Buffer, Options};
use camgw::clock::FixedClock;
use camgw::config::SyncMode;
use camgw::record::{Body, NewRecord};
use common::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn prefill(data: &std::path::Path, n: usize) {
    let opts = Options::new(64 << 20, SyncMode::Interval, Duration::from_millis(200));
    let (buf, _) = Buffer::open(
        data,
        opts,
        Arc::new(FixedClock::new(1_796_000_000_000, true)),
    )
    .unwrap();
    for i in 0..n {
        buf.append_blocking(NewRecord {
            ts_ms: 1_796_000_000_000 + i as i64,
            clock_synced: true,
            body: Body::motion(
                if i % 2 == 0 { "cam01" } else { "cam02" },
                camgw::record::Source::Ingest,
                camgw::record::MotionState::Pulse,
                serde_json::Value::Null,
            ),
        })
        .unwrap();
    }
    buf.flush_blocking().unwrap();
    buf.close();
}

/// A subscriber that timestamps every event's arrival by seq.
fn timed_subscriber(
    port: u16,
) -> (
    Arc<Mutex<HashMap<u64, Instant>>>,
    std::sync::mpsc::Receiver<()>,
) {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let s2 = seen.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut o =
            rumqttc::MqttOptions::new(format!("bench-sub-{}", free_port()), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        let (c, mut conn) = rumqttc::Client::new(o, 1000);
        c.subscribe(
            camgw::topics::topic(
                &camgw::topics::root("camgw", "+", "+"),
                camgw::topics::Leaf::Event,
            ),
            rumqttc::QoS::AtMostOnce,
        )
        .unwrap();
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    let _ = ready_tx.send(());
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let now = Instant::now();
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    s2.lock()
                        .unwrap()
                        .entry(v["seq"].as_u64().unwrap())
                        .or_insert(now);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    (seen, ready_rx)
}

fn wait_count(seen: &Mutex<HashMap<u64, Instant>>, n: usize, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        {
            let s = seen.lock().unwrap();
            if s.len() >= n {
                return *s.values().max().unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} arrived",
            seen.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn main() {
    use_firmware_binary();
    let quick = std::env::args().any(|a| a == "quick");
    let runs = if quick { 1 } else { 3 };
    let n = if quick { 10_000 } else { 100_000 };
    println!(
        "camgw uplink benchmarks against {} (median of {runs} runs)",
        if Broker::is_mosquitto() {
            "Mosquitto"
        } else {
            "the embedded broker (Mosquitto absent)"
        }
    );

    let mut rates = Vec::new();
    let mut hwm_buffered = Vec::new();
    let mut hwm_drained = Vec::new();
    for _ in 0..runs {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        prefill(&data, n);
        let mut broker = Broker::start();
        broker.stop();
        let agent = Agent::in_dir(tmp.path(), data, broker.port, "max_inflight = 256\n--\n");
        std::thread::sleep(Duration::from_millis(500)); // let it settle with everything buffered
        hwm_buffered.push(agent.rss_kb().1 as f64);
        broker.restart();
        let (seen, ready) = timed_subscriber(broker.port);
        ready.recv_timeout(Duration::from_secs(10)).unwrap();
        let t0 = Instant::now();
        let last = wait_count(&seen, n, Duration::from_secs(120));
        // The agent's reconnect backoff is at most 1 s here; count from its first publish.
        let first = *seen.lock().unwrap().values().min().unwrap();
        let _ = t0;
        rates.push(n as f64 / (last - first).as_secs_f64());
        hwm_drained.push(agent.rss_kb().1 as f64);
    }
    println!(
        "drain of {n} buffered events at QoS 1: {:>8.0} msg/s (target >= 20000)",
        median(rates)
    );
    println!(
        "peak RSS (VmHWM) with {n} events buffered: {:.1} MiB; after draining them: {:.1} MiB (target < 10 MiB)",
        median(hwm_buffered) / 1024.0,
        median(hwm_drained) / 1024.0
    );

    // Ingest-to-broker latency, one event at a time.
    let broker = Broker::start();
    let (seen, ready) = timed_subscriber(broker.port);
    ready.recv_timeout(Duration::from_secs(10)).unwrap();
    for sync in ["interval", "always"] {
        let agent = Agent::start(broker.port, &format!("--\n[buffer]\nsync = \"{sync}\"\n"));
        let count = if quick { 200 } else { 2000 };
        let mut sent = Vec::new();
        for _ in 0..count {
            let t = Instant::now();
            let (code, body) = agent.motion("cam01", "pulse");
            assert_eq!(code, 202);
            sent.push((body["seq"].as_u64().unwrap(), t));
        }
        let mut lat: Vec<f64> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        for (seq, t) in &sent {
            loop {
                if let Some(a) = seen.lock().unwrap().get(seq) {
                    lat.push((*a - *t).as_secs_f64() * 1000.0);
                    break;
                }
                assert!(Instant::now() < deadline, "seq {seq} never arrived");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        seen.lock().unwrap().clear();
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
        println!(
            "ingest-to-broker latency, sync={sync:<8} ({count} events): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 < 20 ms)",
            p(0.5),
            p(0.99),
            p(1.0)
        );
    }
}
