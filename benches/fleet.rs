//! Fleet scale: `cargo bench --bench fleet [-- mosquitto] [nats]` runs N simulated gateways
//! (default 3,000; CAMGW_FLEET_GATEWAYS) in one process, each an rumqttc session with its own
//! client id, publishing the contract's topics (status and 10 cameras' health retained on
//! connect; events and alerts QoS 1, telemetry QoS 0) at 5 messages/s on average, against
//! one Mosquitto and then against a 3-node NATS cluster (JetStream, MQTT, R3;
//! tests/common/nats.rs), one run each with the same script. Each gateway keeps what it
//! cannot send in a backlog and drains it through a 64-message window, like the agent's
//! buffer and uplink; on the cluster each gateway lists the three nodes (rotated, as a load
//! balancer would spread them) and moves to the next when its node goes.
//!
//! A station subscriber with a persistent session (on the last node) receives every event and
//! alert. Reports, per broker: connect time; the sustained PUBACK rate (median of 1 s samples)
//! at 15,000 msg/s offered; the publish-to-station latency (p50, p99); memory and CPU per
//! node; how long a new subscriber takes for the 30,000 retained health messages; then a
//! node killed mid-run (the one Mosquitto, or one of the three nodes) for 10 s: messages the
//! broker acknowledged that never reached the station (target 0), time until every gateway
//! is publishing again, and until every backlog is drained. Mosquitto alone also gets the
//! night burst (4x for 10 s).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/nats.rs"]
mod nats;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};

const CAMERAS: usize = 10;
const WINDOW: u64 = 64;

#[derive(Default)]
struct Gw {
    connected: AtomicBool,
    connects: AtomicU64,
    published: AtomicU64,
    acked: AtomicU64,
    backlog: AtomicU64,
    /// Seqs of publish requests in the order they were queued (0: not an event or alert),
    /// matched to packet ids as rumqttc sends them out.
    requested: Mutex<VecDeque<u64>>,
    pkids: Mutex<HashMap<u16, u64>>,
    /// Event and alert seqs the broker acknowledged.
    acked_seqs: Mutex<Vec<u32>>,
}

struct Fleet {
    gws: Vec<Arc<Gw>>,
    /// Messages per second per gateway, times 100 (500 = 5/s).
    rate_x100: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
}

fn mosquitto(port: u16, dir: &std::path::Path) -> std::process::Child {
    let conf = dir.join("fleet.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\nmax_inflight_messages 100\n"),
    )
    .unwrap();
    let m = common::mosquitto_path()
        .expect("the fleet benchmark needs Mosquitto (apt-get install mosquitto)");
    let c = std::process::Command::new(m)
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    c
}

fn rss_kb(pid: u32) -> u64 {
    common::proc_status_kb(pid, "VmRSS:")
}

fn cpu_ms(pid: u32) -> u64 {
    common::proc_cpu_ms(pid)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// The broker under test: one Mosquitto, or the 3-node NATS cluster.
enum Target {
    Mosquitto {
        port: u16,
        child: Option<std::process::Child>,
        dir: tempfile::TempDir,
    },
    Nats(nats::Cluster),
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Mosquitto { .. } => "mosquitto",
            Target::Nats(_) => "nats-3",
        }
    }

    fn ports(&self) -> Vec<u16> {
        match self {
            Target::Mosquitto { port, .. } => vec![*port],
            Target::Nats(c) => c.nodes.iter().map(|n| n.mqtt).collect(),
        }
    }

    /// Where the station and the command centre connect: the last node.
    fn station_port(&self) -> u16 {
        *self.ports().last().unwrap()
    }

    /// (node, RSS KiB, CPU ms) of every running node.
    fn usage(&self) -> Vec<(String, u64, u64)> {
        match self {
            Target::Mosquitto { child, .. } => child
                .iter()
                .map(|c| ("mosquitto".to_string(), rss_kb(c.id()), cpu_ms(c.id())))
                .collect(),
            Target::Nats(c) => (0..c.nodes.len())
                .filter_map(|i| c.usage(i).map(|(r, t)| (c.nodes[i].name.clone(), r, t)))
                .collect(),
        }
    }

    /// kill -9 of the first node (for Mosquitto: the broker).
    fn kill_one(&mut self) {
        match self {
            Target::Mosquitto { child, .. } => {
                if let Some(mut c) = child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
            Target::Nats(c) => c.kill9(0),
        }
    }

    fn restore(&mut self) {
        match self {
            Target::Mosquitto { port, child, dir } => *child = Some(mosquitto(*port, dir.path())),
            Target::Nats(c) => {
                c.start_node(0);
                c.wait_ready(Duration::from_secs(60));
            }
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Target::Mosquitto { child: Some(c), .. } = self {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One simulated gateway: the session driver and the message generator.
fn spawn_gateway(
    i: usize,
    ports: Vec<u16>,
    g: Arc<Gw>,
    rate_x100: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let ward = format!("w{:03}", i / 10);
    let id = format!("gw{i:04}");
    let root = camgw::topics::root("camgw", &ward, &id);
    // Each gateway's list starts at a different node, as a load balancer would spread them.
    let opts: Vec<MqttOptions> = (0..ports.len())
        .map(|k| {
            let port = ports[(i + k) % ports.len()];
            let mut o = MqttOptions::new(format!("camgw-{ward}-{id}"), "127.0.0.1", port);
            o.set_keep_alive(Duration::from_secs(30));
            o.set_clean_session(true);
            o.set_inflight(WINDOW as u16 + 8);
            o.set_last_will(LastWill::new(
                camgw::topics::topic(&root, camgw::topics::Leaf::Status),
                r#"{"online":false}"#,
                QoS::AtLeastOnce,
                true,
            ));
            o
        })
        .collect();
    let (client, mut el) = AsyncClient::new(opts[0].clone(), (WINDOW as usize) * 2);
    let (g2, c2, root2, stop2) = (g.clone(), client.clone(), root.clone(), stop.clone());
    // Session driver.
    tokio::spawn(async move {
        let mut fails = 0u32;
        let mut at = 0usize;
        while !stop2.load(Ordering::Relaxed) {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    fails = 0;
                    g2.connected.store(true, Ordering::Relaxed);
                    g2.connects.fetch_add(1, Ordering::Relaxed);
                    let mut req = g2.requested.lock().unwrap();
                    if c2
                        .try_publish(
                            camgw::topics::topic(&root2, camgw::topics::Leaf::Status),
                            QoS::AtLeastOnce,
                            true,
                            r#"{"online":true,"version":"0.1.0"}"#,
                        )
                        .is_ok()
                    {
                        req.push_back(0);
                        g2.published.fetch_add(1, Ordering::Relaxed);
                    }
                    for c in 0..CAMERAS {
                        let body = format!(
                            r#"{{"camera":"cam{c:02}","state":"up","problems":[],"since":"2026-11-29T00:00:00Z"}}"#
                        );
                        if c2
                            .try_publish(
                                camgw::topics::topic(
                                    &root2,
                                    camgw::topics::Leaf::Health(&format!("cam{c:02}")),
                                ),
                                QoS::AtLeastOnce,
                                true,
                                body,
                            )
                            .is_ok()
                        {
                            req.push_back(0);
                            g2.published.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    let seq = g2.requested.lock().unwrap().pop_front().unwrap_or(0);
                    if pkid != 0 {
                        g2.pkids.lock().unwrap().insert(pkid, seq);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    g2.acked.fetch_add(1, Ordering::Relaxed);
                    if let Some(seq) = g2.pkids.lock().unwrap().remove(&ack.pkid) {
                        if seq != 0 {
                            g2.acked_seqs.lock().unwrap().push(seq as u32);
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    g2.connected.store(false, Ordering::Relaxed);
                    // What was in flight is gone with a clean session (the agent would send
                    // it again; here it is simply not counted as acknowledged).
                    g2.pkids.lock().unwrap().clear();
                    fails = fails.saturating_add(1);
                    at = (at + 1) % opts.len();
                    el.mqtt_options = opts[at].clone();
                    // Backoff with jitter, capped at 5 s: 3,000 gateways must not reconnect in
                    // step. The next node is tried at once after a first failure.
                    if fails > 1 || opts.len() == 1 {
                        let cap = 250u64 << fails.min(5);
                        let ms = 100 + rand::random::<u64>() % cap.min(5000);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                }
            }
        }
    });
    // Generator and drainer.
    tokio::spawn(async move {
        let mut seq = 0u64;
        tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 1000)).await;
        let mut next_telemetry = Instant::now() + Duration::from_secs(10);
        while !stop.load(Ordering::Relaxed) {
            let rate = rate_x100.load(Ordering::Relaxed);
            if rate == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            } else {
                // Exponential inter-arrival times: a Poisson stream at `rate`.
                let u: f64 = rand::random::<f64>().max(1e-9);
                let gap = (-u.ln() * 100_000.0 / rate as f64) as u64;
                tokio::time::sleep(Duration::from_millis(gap.min(5000))).await;
                g.backlog.fetch_add(1, Ordering::Relaxed);
            }
            if !g.connected.load(Ordering::Relaxed) {
                continue;
            }
            if Instant::now() >= next_telemetry {
                next_telemetry += Duration::from_secs(10);
                let mut req = g.requested.lock().unwrap();
                if client
                    .try_publish(
                        camgw::topics::topic(&root, camgw::topics::Leaf::Telemetry),
                        QoS::AtMostOnce,
                        false,
                        r#"{"buffer":{"events":0,"alerts":0}}"#,
                    )
                    .is_ok()
                {
                    req.push_back(0);
                }
            }
            // Drain the backlog through the window.
            while g.backlog.load(Ordering::Relaxed) > 0 {
                let inflight = g
                    .published
                    .load(Ordering::Relaxed)
                    .saturating_sub(g.acked.load(Ordering::Relaxed));
                if inflight >= WINDOW {
                    break;
                }
                seq += 1;
                let (leaf, kind) = if seq % 20 == 0 {
                    (
                        camgw::topics::Leaf::Alert,
                        camgw::record::AlertKind::CameraDegraded.name(),
                    )
                } else {
                    (camgw::topics::Leaf::Event, "motion")
                };
                let body = format!(
                    r#"{{"seq":{seq},"g":{i},"t":{t},"id":"{id}-{seq}","ts":"2026-11-29T00:00:00Z","clock_synced":true,"kind":"{kind}","camera":"cam01","source":"onvif","state":"start"}}"#,
                    t = now_us()
                );
                let mut req = g.requested.lock().unwrap();
                if client
                    .try_publish(
                        camgw::topics::topic(&root, leaf),
                        QoS::AtLeastOnce,
                        false,
                        body,
                    )
                    .is_err()
                {
                    seq -= 1;
                    break;
                }
                req.push_back(seq);
                drop(req);
                g.published.fetch_add(1, Ordering::Relaxed);
                g.backlog.fetch_sub(1, Ordering::Relaxed);
            }
        }
    });
}

/// The station: a persistent session receiving every event and alert; what it got, and the
/// publish-to-station latencies while `measure` is set.
#[derive(Default)]
struct Station {
    got: Mutex<HashSet<u64>>,
    latencies_us: Mutex<Vec<u32>>,
    measure: AtomicBool,
    received: AtomicU64,
}

/// The number after `"key":` in a payload the generator wrote.
fn field(p: &[u8], key: &str) -> Option<u64> {
    let s = std::str::from_utf8(p).ok()?;
    let pat = format!("\"{key}\":");
    let at = s.find(&pat)? + pat.len();
    let digits: String = s[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn spawn_station(port: u16, st: Arc<Station>, stop: Arc<AtomicBool>) {
    let mut o = MqttOptions::new("city-station", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(10));
    o.set_clean_session(false);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 1000);
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client
                        .subscribe_many([
                            rumqttc::SubscribeFilter::new(
                                "camgw/+/+/event".into(),
                                QoS::AtLeastOnce,
                            ),
                            rumqttc::SubscribeFilter::new(
                                "camgw/+/+/alert".into(),
                                QoS::AtLeastOnce,
                            ),
                        ])
                        .await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    st.received.fetch_add(1, Ordering::Relaxed);
                    if let (Some(g), Some(seq), Some(t)) = (
                        field(&p.payload, "g"),
                        field(&p.payload, "seq"),
                        field(&p.payload, "t"),
                    ) {
                        st.got.lock().unwrap().insert((g << 32) | seq);
                        if st.measure.load(Ordering::Relaxed) {
                            let us = now_us().saturating_sub(t).min(u32::MAX as u64) as u32;
                            st.latencies_us.lock().unwrap().push(us);
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
}

fn total(f: &Fleet, pick: impl Fn(&Gw) -> u64) -> u64 {
    f.gws.iter().map(|g| pick(g)).sum()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i] as f64 / 1000.0
}

/// PUBACKs per second, sampled every second for `secs`.
async fn sample_rate(f: &Fleet, secs: u64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut last = total(f, |g| g.acked.load(Ordering::Relaxed));
    for _ in 0..secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = total(f, |g| g.acked.load(Ordering::Relaxed));
        out.push((now - last) as f64);
        last = now;
    }
    out
}

async fn retained_fetch(port: u16, want: usize) -> (Duration, usize) {
    let mut o = MqttOptions::new(
        format!("command-centre-{}", rand::random::<u32>()),
        "127.0.0.1",
        port,
    );
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 100);
    let t0 = Instant::now();
    let mut got = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while got < want {
        match tokio::time::timeout_at(deadline, el.poll()).await {
            Err(_) => break,
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                client
                    .subscribe("camgw/+/+/camera/+/health", QoS::AtLeastOnce)
                    .await
                    .unwrap();
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) if p.retain => got += 1,
            Ok(Ok(_)) => {}
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let _ = client.disconnect().await;
    (t0.elapsed(), got)
}

fn usage_line(before: &[(String, u64, u64)], after: &[(String, u64, u64)], secs: f64) -> String {
    after
        .iter()
        .map(|(name, rss, cpu)| {
            let cpu0 = before
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|b| b.2)
                .unwrap_or(*cpu);
            format!(
                "{name} {:.0} % CPU, {} MiB",
                (cpu - cpu0) as f64 / 10.0 / secs,
                rss / 1024
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn run(mut target: Target, n: usize, steady: u64) {
    let ports = target.ports();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let name = target.name();
    rt.block_on(async {
        let fleet = Fleet {
            gws: (0..n).map(|_| Arc::new(Gw::default())).collect(),
            rate_x100: Arc::new(AtomicU64::new(500)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let station = Arc::new(Station::default());
        spawn_station(target.station_port(), station.clone(), fleet.stop.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let me = std::process::id();
        let t0 = Instant::now();
        for (i, g) in fleet.gws.iter().enumerate() {
            spawn_gateway(i, ports.clone(), g.clone(), fleet.rate_x100.clone(), fleet.stop.clone());
            if i % 100 == 99 {
                tokio::time::sleep(Duration::from_millis(20)).await; // a ramp, not a storm
            }
        }
        while total(&fleet, |g| g.connected.load(Ordering::Relaxed) as u64) < n as u64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if t0.elapsed() > Duration::from_secs(300) {
                break;
            }
        }
        let connected = total(&fleet, |g| g.connected.load(Ordering::Relaxed) as u64);
        println!("[{name}] fleet: {connected}/{n} gateways connected in {:.1} s (ramped 100 per 20 ms)", t0.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(3)).await;

        // Steady state.
        let (u0, m0) = (target.usage(), cpu_ms(me));
        station.measure.store(true, Ordering::Relaxed);
        let mut rates = sample_rate(&fleet, steady).await;
        station.measure.store(false, Ordering::Relaxed);
        let (u1, m1) = (target.usage(), cpu_ms(me));
        let steady_rate = median(&mut rates);
        let backlog = total(&fleet, |g| g.backlog.load(Ordering::Relaxed));
        let mut lat = std::mem::take(&mut *station.latencies_us.lock().unwrap());
        println!(
            "[{name}] steady: offered {:.0} msg/s; PUBACKed median {:.0} msg/s over {steady} s (min {:.0}, max {:.0}); backlog at the end {backlog}; publish-to-station p50 {:.1} ms, p99 {:.1} ms ({} samples); {}; load generator and station {:.0} % CPU",
            n as f64 * 5.0,
            steady_rate,
            rates.iter().cloned().fold(f64::MAX, f64::min),
            rates.iter().cloned().fold(0.0, f64::max),
            percentile(&mut lat, 0.5),
            percentile(&mut lat, 0.99),
            lat.len(),
            usage_line(&u0, &u1, steady as f64),
            (m1 - m0) as f64 / 10.0 / steady as f64,
        );

        if matches!(target, Target::Mosquitto { .. }) {
            // Night-time burst: 4x for 10 s.
            fleet.rate_x100.store(2000, Ordering::Relaxed);
            let mut burst = sample_rate(&fleet, 10).await;
            fleet.rate_x100.store(500, Ordering::Relaxed);
            let burst_median = median(&mut burst);
            let t = Instant::now();
            while total(&fleet, |g| g.backlog.load(Ordering::Relaxed)) > n as u64 * 2 && t.elapsed() < Duration::from_secs(120) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            println!(
                "[{name}] night burst: offered {:.0} msg/s for 10 s; PUBACKed median {:.0} msg/s; backlog back to normal {:.1} s after the burst",
                n as f64 * 20.0,
                burst_median,
                t.elapsed().as_secs_f64()
            );
        }

        // Command centre: every retained health message, from a new subscriber.
        let (took, got) = retained_fetch(target.station_port(), n * CAMERAS).await;
        println!(
            "[{name}] command centre: {got}/{} retained health messages in {:.2} s",
            n * CAMERAS,
            took.as_secs_f64()
        );

        // A node dies mid-run at steady load, stays down 10 s, comes back.
        let queued_before = total(&fleet, |g| g.backlog.load(Ordering::Relaxed));
        let killed = Instant::now();
        target.kill_one();
        let mut all_back = None;
        let mut most_back = None;
        let mut drained = None;
        let mut restored = false;
        let mut peak_backlog = 0;
        while killed.elapsed() < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !restored && killed.elapsed() >= Duration::from_secs(10) {
                target.restore();
                restored = true;
            }
            let c = total(&fleet, |g| g.connected.load(Ordering::Relaxed) as u64);
            let b = total(&fleet, |g| g.backlog.load(Ordering::Relaxed));
            peak_backlog = peak_backlog.max(b);
            // "Every gateway publishing again" counts only after the kill took effect.
            if most_back.is_none() && killed.elapsed() > Duration::from_millis(500) && c * 100 >= n as u64 * 99 {
                most_back = Some(killed.elapsed());
            }
            if all_back.is_none() && killed.elapsed() > Duration::from_millis(500) && c == n as u64 {
                all_back = Some(killed.elapsed());
            }
            // Drained: less than one message per gateway waiting (steady state has ~0-1).
            if restored && all_back.is_some() && b <= n as u64 + queued_before {
                drained = Some(killed.elapsed());
                break;
            }
        }
        // Stop offering; everything acknowledged must reach the station.
        fleet.rate_x100.store(0, Ordering::Relaxed);
        let acked: HashSet<u64> = fleet
            .gws
            .iter()
            .enumerate()
            .flat_map(|(i, g)| {
                g.acked_seqs
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|s| ((i as u64) << 32) | *s as u64)
                    .collect::<Vec<_>>()
            })
            .collect();
        let settle = Instant::now();
        let mut last_received = station.received.load(Ordering::Relaxed);
        let mut quiet = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let missing_keys: Vec<u64> = {
                let got = station.got.lock().unwrap();
                acked.iter().filter(|k| !got.contains(k)).copied().collect()
            };
            let missing = missing_keys.len();
            let r = station.received.load(Ordering::Relaxed);
            if r != last_received {
                last_received = r;
                quiet = Instant::now();
            }
            // NATS redelivers what its consumer had not seen acknowledged after its ack wait
            // (30 s): give it that long without news before calling anything lost.
            if missing == 0 || quiet.elapsed() > Duration::from_secs(45) || settle.elapsed() > Duration::from_secs(180) {
                println!(
                    "[{name}] node loss: {} killed with kill -9 for 10 s at {:.0} msg/s offered; 99 % of gateways publishing again after {}, every gateway after {}; backlogs drained after {} (peak backlog {peak_backlog}); {} events and alerts acknowledged by the broker, {missing} of them never reached the station (waited {:.0} s after the load stopped)",
                    if matches!(target, Target::Mosquitto { .. }) { "the broker" } else { "one of three nodes" },
                    n as f64 * 5.0,
                    most_back.map(|d| format!("{:.1} s", d.as_secs_f64())).unwrap_or("NOT within 300 s".into()),
                    all_back.map(|d| format!("{:.1} s", d.as_secs_f64())).unwrap_or("NOT within 300 s".into()),
                    drained.map(|d| format!("{:.1} s", d.as_secs_f64())).unwrap_or("NOT within 300 s".into()),
                    acked.len(),
                    settle.elapsed().as_secs_f64(),
                );
                if missing > 0 {
                    // Which first node each lost message's gateway was on (node k: i % nodes).
                    let mut by_node = vec![0usize; ports.len()];
                    for k in &missing_keys {
                        by_node[(k >> 32) as usize % ports.len()] += 1;
                    }
                    println!("[{name}] the {missing} by the node their gateway used first: {by_node:?} (the killed node is the first)");
                }
                break;
            }
        }
        fleet.stop.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    drop(target);
}

fn main() {
    let n: usize = std::env::var("CAMGW_FLEET_GATEWAYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let steady: u64 = std::env::var("CAMGW_FLEET_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |p: &str| args.is_empty() || args.iter().any(|a| a == p);
    raise_fd_limit();
    if want("mosquitto") {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let child = mosquitto(port, dir.path());
        run(
            Target::Mosquitto {
                port,
                child: Some(child),
                dir,
            },
            n,
            steady,
        );
    }
    if want("nats") {
        if let Some(why) = nats::unavailable() {
            println!("[nats-3] skipped: {why}");
            return;
        }
        run(Target::Nats(nats::Cluster::start()), n, steady);
    }
}
