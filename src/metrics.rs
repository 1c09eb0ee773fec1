//! The gateway's own `GET /metrics` (`[metrics] listen`, off by default): buffer depth,
//! delivered and dropped counts, uplink state, each camera's state and probe rounds, in the
//! Prometheus text format. [`render`] is pure (it formats a [`Reading`]); [`serve`] is a
//! deliberately small HTTP/1.1 server: one request per connection, a bounded head read with a
//! deadline, a few connections at a time, `GET /metrics` or 404.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::buffer::{Buffer, Stats};
use crate::bus::{ProbeReading, Probes};
use crate::uplink::UplinkStats;

/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 4;
/// Longest request head read.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// A label value, escaped as the text format requires (`\`, `"`, newline).
pub fn label(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// `# HELP` and `# TYPE` lines.
pub fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Everything `/metrics` shows, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub version: String,
    pub boot_id: String,
    pub uptime_seconds: f64,
    pub rss_bytes: u64,
    pub buffer: Stats,
    pub connected: bool,
    pub connects: u64,
    pub delivered: u64,
    pub delivered_stills: u64,
    pub commands_received: u64,
    pub probes: Vec<(String, ProbeReading)>,
}

const STATES: [&str; 4] = ["up", "degraded", "down", "unknown"];

pub fn render(r: &Reading) -> String {
    let mut o = String::new();
    head(
        &mut o,
        "camgw_info",
        "gauge",
        "The running agent (always 1).",
    );
    let _ = writeln!(
        o,
        "camgw_info{{version=\"{}\",boot_id=\"{}\"}} 1",
        label(&r.version),
        label(&r.boot_id)
    );
    head(
        &mut o,
        "camgw_uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
    );
    let _ = writeln!(o, "camgw_uptime_seconds {:.0}", r.uptime_seconds);
    head(
        &mut o,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of the agent.",
    );
    let _ = writeln!(o, "process_resident_memory_bytes {}", r.rss_bytes);
    head(
        &mut o,
        "camgw_buffer_pending_records",
        "gauge",
        "Records buffered and not yet acknowledged by the broker.",
    );
    let _ = writeln!(
        o,
        "camgw_buffer_pending_records{{class=\"event\"}} {}",
        r.buffer.events
    );
    let _ = writeln!(
        o,
        "camgw_buffer_pending_records{{class=\"alert\"}} {}",
        r.buffer.alerts
    );
    let gauges = [
        (
            "camgw_buffer_bytes",
            "Bytes the buffer's segments use on disk.",
            r.buffer.bytes,
        ),
        (
            "camgw_buffer_segments",
            "Segment files of the buffer.",
            r.buffer.segments as u64,
        ),
        (
            "camgw_buffer_stills",
            "Event stills waiting to be sent.",
            r.buffer.stills,
        ),
        (
            "camgw_buffer_still_bytes",
            "Bytes of the stills waiting.",
            r.buffer.still_bytes,
        ),
        (
            "camgw_uplink_connected",
            "1 while connected to the broker.",
            r.connected as u64,
        ),
    ];
    for (name, help, v) in gauges {
        head(&mut o, name, "gauge", help);
        let _ = writeln!(o, "{name} {v}");
    }
    let counters = [
        (
            "camgw_buffer_dropped_records_total",
            "Undelivered records evicted by buffer.max_bytes (each reported by buffer_dropped).",
            r.buffer.dropped_total,
        ),
        (
            "camgw_buffer_corrupt_records_total",
            "Damaged records skipped by recovery.",
            r.buffer.corrupt_total,
        ),
        (
            "camgw_buffer_stills_dropped_total",
            "Buffered stills evicted to make room, since the start.",
            r.buffer.stills_dropped_total,
        ),
        (
            "camgw_uplink_connects_total",
            "Connections made to the broker.",
            r.connects,
        ),
        (
            "camgw_uplink_delivered_records_total",
            "Alerts and events the broker acknowledged.",
            r.delivered,
        ),
        (
            "camgw_uplink_delivered_stills_total",
            "Stills the broker acknowledged.",
            r.delivered_stills,
        ),
        (
            "camgw_commands_received_total",
            "Commands received on T/cmd.",
            r.commands_received,
        ),
    ];
    for (name, help, v) in counters {
        head(&mut o, name, "counter", help);
        let _ = writeln!(o, "{name} {v}");
    }
    head(
        &mut o,
        "camgw_camera_state",
        "gauge",
        "1 for the camera's current health state, 0 for the others.",
    );
    for (cam, p) in &r.probes {
        for st in STATES {
            let _ = writeln!(
                o,
                "camgw_camera_state{{camera=\"{}\",state=\"{st}\"}} {}",
                label(cam),
                (p.state == st) as u8
            );
        }
    }
    type PerCamera = (
        &'static str,
        &'static str,
        &'static str,
        fn(&ProbeReading) -> String,
    );
    let per_camera: [PerCamera; 3] = [
        (
            "camgw_probe_round_seconds",
            "gauge",
            "How long the camera's last probe round took.",
            |p| format!("{:.3}", p.round_seconds),
        ),
        (
            "camgw_probe_rounds_total",
            "counter",
            "Probe rounds run for the camera.",
            |p| p.rounds.to_string(),
        ),
        (
            "camgw_probe_failed_rounds_total",
            "counter",
            "Probe rounds that found a problem.",
            |p| p.failed_rounds.to_string(),
        ),
    ];
    for (name, kind, help, value) in per_camera {
        head(&mut o, name, kind, help);
        for (cam, p) in &r.probes {
            let _ = writeln!(o, "{name}{{camera=\"{}\"}} {}", label(cam), value(p));
        }
    }
    o
}

/// Where a reading comes from.
#[derive(Clone)]
pub struct Source {
    pub buffer: Buffer,
    pub stats: Arc<UplinkStats>,
    pub probes: Arc<Probes>,
    pub boot_id: String,
    pub started: Instant,
}

impl Source {
    pub fn read(&self) -> Reading {
        Reading {
            version: crate::release::VERSION.to_string(),
            boot_id: self.boot_id.clone(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            rss_bytes: crate::uplink::rss_kb() * 1024,
            buffer: self.buffer.stats(),
            connected: self.stats.connected.load(Ordering::Relaxed),
            connects: self.stats.connects.get(),
            delivered: self.stats.delivered.load(Ordering::Relaxed),
            delivered_stills: self.stats.delivered_stills.load(Ordering::Relaxed),
            commands_received: self.stats.commands.received.load(Ordering::Relaxed),
            probes: self.probes.snapshot(),
        }
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, source: Source, shutdown: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (mut sock, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, say: wait instead of spinning.
                    tracing::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // dropped: too many at once
        };
        let source = source.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let answer = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut sock)).await {
                Ok(Some(path)) if path == "/metrics" => {
                    let body = render(&source.read());
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
                Ok(Some(_)) => {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                }
                Ok(None) => {
                    "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                }
                Err(_) => return,
            };
            let _ = tokio::time::timeout(HEAD_TIMEOUT, sock.write_all(answer.as_bytes())).await;
        });
    }
}

/// The path of a GET request, once its whole head has arrived; None for anything else.
async fn read_head(sock: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                return (req.method == Some("GET")).then(|| req.path.unwrap_or("").to_string());
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_escaped_labels() {
        let r = Reading {
            version: "0.1.0".into(),
            boot_id: "b".into(),
            buffer: Stats {
                events: 3,
                alerts: 1,
                dropped_total: 2,
                ..Default::default()
            },
            connected: true,
            probes: vec![(
                "cam\"1".into(),
                ProbeReading {
                    state: "down",
                    round_seconds: 1.5,
                    rounds: 4,
                    failed_rounds: 3,
                },
            )],
            ..Default::default()
        };
        let t = render(&r);
        for want in [
            "camgw_buffer_pending_records{class=\"event\"} 3",
            "camgw_buffer_dropped_records_total 2",
            "camgw_uplink_connected 1",
            "camgw_camera_state{camera=\"cam\\\"1\",state=\"down\"} 1",
            "camgw_camera_state{camera=\"cam\\\"1\",state=\"up\"} 0",
            "camgw_probe_round_seconds{camera=\"cam\\\"1\"} 1.500",
            "camgw_probe_failed_rounds_total{camera=\"cam\\\"1\"} 3",
            "# TYPE camgw_uplink_delivered_records_total counter",
        ] {
            assert!(t.contains(want), "{want} in\n{t}");
        }
        // Every sample line: a name, optional labels, a number.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = l.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{l}");
            assert!(
                name.starts_with("camgw_") || name.starts_with("process_"),
                "{l}"
            );
        }
        assert_eq!(label("a\nb\\"), "a\\nb\\\\");
    }
}
