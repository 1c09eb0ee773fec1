//! `GET /metrics` in the Prometheus text format (version 0.0.4): the recorder's counters and
//! the recorded state, with label values escaped (they come from the broker). Pure: renders
//! what it is given.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::recorder::Stats;
use super::store::Counts;
use crate::metrics::{head, label};

pub fn render(c: &Counts, s: &Stats) -> String {
    let mut o = String::new();
    head(
        &mut o,
        "camgw_station_gateway_online",
        "gauge",
        "1 when the gateway's retained status says online, 0 when offline.",
    );
    for (w, g, online) in &c.gateways {
        if let Some(on) = online {
            let _ = writeln!(
                o,
                "camgw_station_gateway_online{{ward=\"{}\",gateway=\"{}\"}} {}",
                label(w),
                label(g),
                *on as u8
            );
        }
    }
    head(
        &mut o,
        "camgw_station_cameras",
        "gauge",
        "Cameras per gateway in each health state.",
    );
    for (w, g, st, n) in &c.camera_states {
        let _ = writeln!(
            o,
            "camgw_station_cameras{{ward=\"{}\",gateway=\"{}\",state=\"{}\"}} {n}",
            label(w),
            label(g),
            label(st)
        );
    }
    head(
        &mut o,
        "camgw_station_alerts",
        "gauge",
        "Alerts kept in the database (within retention), per kind.",
    );
    for (k, n) in &c.alerts {
        let _ = writeln!(o, "camgw_station_alerts{{kind=\"{}\"}} {n}", label(k));
    }
    head(
        &mut o,
        "camgw_station_alerts_unacknowledged",
        "gauge",
        "Alerts nobody has acknowledged yet.",
    );
    let _ = writeln!(o, "camgw_station_alerts_unacknowledged {}", c.unacked);
    head(
        &mut o,
        "camgw_station_events",
        "gauge",
        "Events kept in the database (within retention), per gateway.",
    );
    for (w, g, n) in &c.events {
        let _ = writeln!(
            o,
            "camgw_station_events{{ward=\"{}\",gateway=\"{}\"}} {n}",
            label(w),
            label(g)
        );
    }
    head(
        &mut o,
        "camgw_station_stills",
        "gauge",
        "Event stills kept.",
    );
    let _ = writeln!(o, "camgw_station_stills {}", c.stills);
    let counters = [
        (
            "camgw_station_messages_received_total",
            "MQTT messages received from the broker.",
            s.received.load(Ordering::Relaxed),
        ),
        (
            "camgw_station_messages_recorded_total",
            "MQTT messages committed to the database.",
            s.recorded.load(Ordering::Relaxed),
        ),
        (
            "camgw_station_record_errors_total",
            "Failed attempts to record a batch (each is retried).",
            s.errors.load(Ordering::Relaxed),
        ),
        (
            "camgw_station_mqtt_connects_total",
            "Connections made to the broker.",
            s.connects.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, v) in counters {
        head(&mut o, name, "counter", help);
        let _ = writeln!(o, "{name} {v}");
    }
    head(
        &mut o,
        "camgw_station_mqtt_connected",
        "gauge",
        "1 while the recorder is connected to the broker.",
    );
    let _ = writeln!(
        o,
        "camgw_station_mqtt_connected {}",
        s.connected.load(Ordering::Relaxed) as u8
    );
    head(
        &mut o,
        "camgw_station_recorder_lag_seconds",
        "gauge",
        "From receipt to commit, for the oldest message of the last batch.",
    );
    let _ = writeln!(
        o,
        "camgw_station_recorder_lag_seconds {:.3}",
        s.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0
    );
    head(
        &mut o,
        "camgw_station_recorder_queue",
        "gauge",
        "Messages received and waiting to be recorded.",
    );
    let _ = writeln!(
        o,
        "camgw_station_recorder_queue {}",
        s.queued.load(Ordering::Relaxed)
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let c = Counts {
            gateways: vec![("w".into(), "g\"}x".into(), Some(true))],
            camera_states: vec![("w".into(), "g".into(), "down".into(), 2)],
            ..Default::default()
        };
        let text = render(&c, &Stats::default());
        assert!(text.contains("camgw_station_gateway_online{ward=\"w\",gateway=\"g\\\"}x\"} 1"));
        assert!(text.contains("camgw_station_cameras{ward=\"w\",gateway=\"g\",state=\"down\"} 2"));
        assert!(text.contains("# TYPE camgw_station_messages_received_total counter"));
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(l.rsplit_once(' ').unwrap().1.parse::<f64>().is_ok(), "{l}");
        }
    }
}
