//! Fleet scale: `cargo bench --bench fleet` runs N simulated gateways (default 3,000; set
//! CAMGW_FLEET_GATEWAYS) in one process, each an rumqttc session with its own client id,
//! publishing the contract's topics (status and 10 cameras' health retained on connect;
//! events and alerts QoS 1, telemetry QoS 0) at 5 messages/s on average with a night-time
//! burst, against one Mosquitto. Each gateway keeps what it cannot send in a backlog and
//! drains it through a 64-message window, like the agent's buffer and uplink.
//!
//! Reports: the sustained publish rate (PUBACKs/s, median of 1 s samples), the burst rate,
//! the connect storm after a broker restart (time until every gateway is back, and until
//! every backlog is drained), and how long a command-centre subscriber takes to receive all
//! the retained health messages (10 per gateway).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};

const CAMERAS: usize = 10;
const WINDOW: u64 = 64;

#[derive(Default)]
struct Gw {
    connected: AtomicBool,
    connects: AtomicU64,
    published: AtomicU64,
    acked: AtomicU64,
    backlog: AtomicU64,
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
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\nmax_inflight_messages 100\n"),
    )
    .unwrap();
    let m = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
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
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// One simulated gateway: the session driver and the message generator.
fn spawn_gateway(
    i: usize,
    port: u16,
    g: Arc<Gw>,
    rate_x100: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let ward = format!("w{:03}", i / 10);
    let id = format!("gw{i:04}");
    let root = camgw::topics::root("camgw", &ward, &id);
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
    let (client, mut el) = AsyncClient::new(o, (WINDOW as usize) * 2);
    let (g2, c2, root2, stop2) = (g.clone(), client.clone(), root.clone(), stop.clone());
    // Session driver.
    tokio::spawn(async move {
        let mut fails = 0u32;
        while !stop2.load(Ordering::Relaxed) {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    fails = 0;
                    g2.connected.store(true, Ordering::Relaxed);
                    g2.connects.fetch_add(1, Ordering::Relaxed);
                    let _ = c2.try_publish(
                        camgw::topics::topic(&root2, camgw::topics::Leaf::Status),
                        QoS::AtLeastOnce,
                        true,
                        r#"{"online":true,"version":"0.1.0"}"#,
                    );
                    g2.published.fetch_add(1, Ordering::Relaxed);
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
                            g2.published.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    g2.acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => {
                    g2.connected.store(false, Ordering::Relaxed);
                    fails = fails.saturating_add(1);
                    // Backoff with jitter, capped at 5 s: 3,000 gateways must not reconnect in step.
                    let cap = 250u64 << fails.min(5);
                    let ms = 100 + rand::random::<u64>() % cap.min(5000);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
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
            let rate = rate_x100.load(Ordering::Relaxed).max(1);
            // Exponential inter-arrival times: a Poisson stream at `rate`.
            let u: f64 = rand::random::<f64>().max(1e-9);
            let gap = (-u.ln() * 100_000.0 / rate as f64) as u64;
            tokio::time::sleep(Duration::from_millis(gap.min(5000))).await;
            g.backlog.fetch_add(1, Ordering::Relaxed);
            if !g.connected.load(Ordering::Relaxed) {
                continue;
            }
            if Instant::now() >= next_telemetry {
                next_telemetry += Duration::from_secs(10);
                let _ = client.try_publish(
                    camgw::topics::topic(&root, camgw::topics::Leaf::Telemetry),
                    QoS::AtMostOnce,
                    false,
                    r#"{"buffer":{"events":0,"alerts":0}}"#,
                );
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
                    r#"{{"id":"{id}-{seq}","seq":{seq},"ts":"2026-11-29T00:00:00Z","clock_synced":true,"kind":"{kind}","camera":"cam01","source":"onvif","state":"start"}}"#
                );
                if client
                    .try_publish(
                        camgw::topics::topic(&root, leaf),
                        QoS::AtLeastOnce,
                        false,
                        body,
                    )
                    .is_err()
                {
                    break;
                }
                g.published.fetch_add(1, Ordering::Relaxed);
                g.backlog.fetch_sub(1, Ordering::Relaxed);
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
    let mut o = MqttOptions::new("command-centre", "127.0.0.1", port);
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
    (t0.elapsed(), got)
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
    raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut broker = mosquitto(port, dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let fleet = Fleet {
            gws: (0..n).map(|_| Arc::new(Gw::default())).collect(),
            rate_x100: Arc::new(AtomicU64::new(500)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let me = std::process::id();
        let t0 = Instant::now();
        for (i, g) in fleet.gws.iter().enumerate() {
            spawn_gateway(i, port, g.clone(), fleet.rate_x100.clone(), fleet.stop.clone());
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
        println!("fleet: {connected}/{n} gateways connected in {:.1} s (ramped 100 per 20 ms)", t0.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(3)).await;

        // Steady state.
        let (cpu_b0, cpu_m0) = (cpu_ticks(broker.id()), cpu_ticks(me));
        let mut rates = sample_rate(&fleet, steady).await;
        let (cpu_b1, cpu_m1) = (cpu_ticks(broker.id()), cpu_ticks(me));
        let hz = 100.0;
        let steady_rate = median(&mut rates);
        let backlog = total(&fleet, |g| g.backlog.load(Ordering::Relaxed));
        println!(
            "steady: offered {:.0} msg/s; broker PUBACKed median {:.0} msg/s over {steady} s (min {:.0}, max {:.0}); backlog at the end {backlog}; mosquitto CPU {:.0} %, RSS {} MiB; load generator CPU {:.0} %",
            n as f64 * 5.0,
            steady_rate,
            rates.first().unwrap(),
            rates.last().unwrap(),
            (cpu_b1 - cpu_b0) as f64 / hz / steady as f64 * 100.0,
            rss_kb(broker.id()) / 1024,
            (cpu_m1 - cpu_m0) as f64 / hz / steady as f64 * 100.0,
        );

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
            "night burst: offered {:.0} msg/s for 10 s; PUBACKed median {:.0} msg/s; backlog back to normal {:.1} s after the burst",
            n as f64 * 20.0,
            burst_median,
            t.elapsed().as_secs_f64()
        );

        // Command centre: every retained health message.
        let (took, got) = retained_fetch(port, n * CAMERAS).await;
        println!(
            "command centre: {got}/{} retained health messages in {:.2} s",
            n * CAMERAS,
            took.as_secs_f64()
        );

        // Connect storm: the broker dies, stays down 10 s, comes back.
        let _ = broker.kill();
        let _ = broker.wait();
        let down = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let queued = total(&fleet, |g| g.backlog.load(Ordering::Relaxed));
        broker = mosquitto(port, dir.path());
        let restarted = Instant::now();
        let _ = down;
        let mut all_back = None;
        let mut drained = None;
        while restarted.elapsed() < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let c = total(&fleet, |g| g.connected.load(Ordering::Relaxed) as u64);
            if all_back.is_none() && c == n as u64 {
                all_back = Some(restarted.elapsed());
            }
            // Drained: less than one message per gateway waiting (steady state has ~0-1).
            let b = total(&fleet, |g| g.backlog.load(Ordering::Relaxed));
            if all_back.is_some() && b <= n as u64 {
                drained = Some(restarted.elapsed());
                break;
            }
        }
        println!(
            "connect storm: {queued} messages queued on the gateways during a 10 s outage; all {n} back after {}; backlogs drained after {}",
            all_back.map(|d| format!("{:.1} s", d.as_secs_f64())).unwrap_or("NOT within 300 s".into()),
            drained.map(|d| format!("{:.1} s", d.as_secs_f64())).unwrap_or("NOT within 300 s".into()),
        );
        fleet.stop.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = broker.kill();
        let _ = broker.wait();
    });
}
