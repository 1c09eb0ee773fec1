//! The ward station's picture of its gateways, built only from the contract's topics (so it
//! works for any ward): `T/status`, `T/camera/{id}/health`, `T/telemetry`, `T/alert`,
//! `T/event`, `T/cmd/result`. Pure: [`Model::apply`] takes a topic, a payload and the time of
//! receipt; the terminal UI and `--once --json` both render a [`Model`].

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use serde_json::Value;

use crate::clock::rfc3339_ms;
use crate::record::AlertKind;
use crate::topics::{self, Leaf};

/// Lines kept in the scrolling log.
pub const LOG_LINES: usize = 500;

#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Camera {
    pub id: String,
    pub state: String,
    pub problems: Vec<String>,
    pub since: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Gateway {
    pub ward: String,
    pub id: String,
    /// None until a status message arrived.
    pub online: Option<bool>,
    pub offline_reason: Option<String>,
    pub version: Option<String>,
    pub boot_id: Option<String>,
    /// The newest timestamp the gateway put in any message.
    pub last_seen: Option<String>,
    #[serde(skip)]
    pub last_seen_ms: Option<i64>,
    pub buffer_depth: Option<u64>,
    pub temperature_c: Option<f64>,
    /// Event stills received.
    pub stills: u64,
    pub cameras: BTreeMap<String, Camera>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogLine {
    /// The message's own timestamp when it has one, else the time of receipt.
    pub ts: String,
    pub ward: String,
    pub gateway: String,
    /// "alert", "event" or "cmd/result".
    pub topic: String,
    pub text: String,
    /// Alerts that need someone to act (a camera down, the enclosure opened, ...).
    pub urgent: bool,
    /// The record's id (alerts and events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// An event's still arrived: its size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub still_bytes: Option<usize>,
}

#[derive(Debug, Default)]
pub struct Model {
    prefix: String,
    pub gateways: BTreeMap<(String, String), Gateway>,
    pub log: VecDeque<LogLine>,
    /// Messages that could not be read (not JSON, wrong shape).
    pub unreadable: u64,
    /// Log lines ever added (the log itself keeps the last [`LOG_LINES`]).
    pub logged: u64,
    /// Stills whose event line has not arrived (yet), by event id: at most [`LOG_LINES`].
    early_stills: BTreeMap<String, usize>,
}

#[derive(Serialize)]
pub struct Snapshot<'a> {
    pub gateways: Vec<&'a Gateway>,
    pub log: Vec<&'a LogLine>,
    pub unreadable: u64,
}

fn ts_ms(v: &Value) -> Option<i64> {
    let s = v.get("ts")?.as_str()?;
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

impl Model {
    pub fn new(prefix: &str) -> Model {
        Model {
            prefix: prefix.to_string(),
            ..Default::default()
        }
    }

    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            gateways: self.gateways.values().collect(),
            log: self.log.iter().collect(),
            unreadable: self.unreadable,
        }
    }

    /// Folds one message in. Topics outside `{prefix}/{ward}/{gateway}/...` are ignored.
    pub fn apply(&mut self, topic: &str, payload: &[u8], now_ms: i64) {
        let Some((ward, gw, leaf)) = topics::parse(&self.prefix, topic) else {
            return;
        };
        if leaf == Leaf::Cmd {
            return; // the station's own commands
        }
        let key = (ward.to_string(), gw.to_string());
        let g = self.gateways.entry(key).or_insert_with(|| Gateway {
            ward: ward.into(),
            id: gw.into(),
            ..Default::default()
        });
        // A retained health message is cleared with an empty payload.
        if payload.is_empty() {
            if let Leaf::Health(cam) = leaf {
                g.cameras.remove(cam);
            }
            return;
        }
        if let Leaf::Snapshot(_, id) = leaf {
            g.stills += 1;
            let n = payload.len();
            match self
                .log
                .iter_mut()
                .rev()
                .find(|l| l.id.as_deref() == Some(id))
            {
                Some(l) => {
                    l.still_bytes = Some(n);
                    l.text.push_str(&still_mark(n));
                }
                None if self.early_stills.len() < LOG_LINES => {
                    self.early_stills.insert(id.to_string(), n);
                }
                None => {}
            }
            return;
        }
        let name = leaf.path();
        let v: Value = match serde_json::from_slice(payload) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                self.unreadable += 1;
                if matches!(leaf, Leaf::Alert | Leaf::Event) {
                    // payload = "postcard": still worth a line.
                    self.logged += 1;
                    push(
                        &mut self.log,
                        LogLine {
                            ts: rfc3339_ms(now_ms),
                            ward: ward.into(),
                            gateway: gw.into(),
                            topic: name,
                            text: format!("({} bytes, not JSON: postcard payload?)", payload.len()),
                            urgent: false,
                            id: None,
                            still_bytes: None,
                        },
                    );
                }
                return;
            }
        };
        if let Some(t) = ts_ms(&v) {
            if g.last_seen_ms.is_none_or(|l| t > l) {
                g.last_seen_ms = Some(t);
                g.last_seen = v["ts"].as_str().map(String::from);
            }
        }
        let ts = v["ts"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| rfc3339_ms(now_ms));
        match leaf {
            Leaf::Status => {
                g.online = v["online"].as_bool();
                g.offline_reason = v["reason"].as_str().map(String::from);
                if let Some(ver) = v["version"].as_str() {
                    g.version = Some(ver.into());
                }
                if let Some(b) = v["boot_id"].as_str() {
                    g.boot_id = Some(b.into());
                }
            }
            Leaf::Telemetry => {
                let b = &v["buffer"];
                if let (Some(e), Some(a)) = (b["events"].as_u64(), b["alerts"].as_u64()) {
                    g.buffer_depth = Some(e + a);
                }
                g.temperature_c = v["board"]["temperatures_c"]["enclosure"]
                    .as_f64()
                    .or_else(|| v["system"]["cpu_temp_c"].as_f64());
            }
            Leaf::Alert | Leaf::Event | Leaf::CmdResult => {
                let text = describe(&name, &v);
                let urgent = leaf == Leaf::Alert
                    && v["kind"]
                        .as_str()
                        .and_then(AlertKind::parse)
                        .is_some_and(AlertKind::urgent);
                self.logged += 1;
                let id = v["id"].as_str().map(String::from);
                let still_bytes = id.as_ref().and_then(|i| self.early_stills.remove(i));
                let text = match still_bytes {
                    Some(n) => text + &still_mark(n),
                    None => text,
                };
                push(
                    &mut self.log,
                    LogLine {
                        ts,
                        ward: ward.into(),
                        gateway: gw.into(),
                        topic: name,
                        text,
                        urgent,
                        id,
                        still_bytes,
                    },
                );
            }
            Leaf::Health(cam) => {
                g.cameras.insert(
                    cam.to_string(),
                    Camera {
                        id: cam.into(),
                        state: v["state"].as_str().unwrap_or("unknown").into(),
                        problems: v["problems"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|p| p.as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        since: v["since"].as_str().map(String::from),
                    },
                );
            }
            Leaf::Cmd | Leaf::Other(_) | Leaf::Snapshot(..) => {}
        }
    }
}

/// What an event's log line gets when its still arrived.
fn still_mark(bytes: usize) -> String {
    format!(" [still {} KB]", bytes.div_ceil(1024))
}

fn push(log: &mut VecDeque<LogLine>, line: LogLine) {
    if log.len() == LOG_LINES {
        log.pop_front();
    }
    log.push_back(line);
}

/// One line of the station's log for any message of a gateway (the demo prints these): the
/// status, a camera's health, an event or alert with its seq and time, telemetry, a command
/// result. `None` for what the station does not show.
pub fn line(leaf: &Leaf<'_>, v: &Value) -> Option<String> {
    let seq_at = || format!("(seq {}, at {})", v["seq"], v["ts"].as_str().unwrap_or("?"));
    Some(match leaf {
        Leaf::Status if v["online"] == true => "gateway ONLINE".to_string(),
        Leaf::Status => format!(
            "gateway OFFLINE ({})",
            v["reason"].as_str().unwrap_or("connection lost")
        ),
        Leaf::Health(_) => {
            let problems: Vec<&str> = v["problems"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p.as_str()).collect())
                .unwrap_or_default();
            format!(
                "health {} is {}{}",
                v["camera"].as_str().unwrap_or("?"),
                v["state"].as_str().unwrap_or("?").to_uppercase(),
                if problems.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", problems.join(", "))
                }
            )
        }
        Leaf::Event => format!(
            "motion {:<5} camera {} via {} {}",
            v["state"].as_str().unwrap_or("?"),
            v["camera"].as_str().unwrap_or("?"),
            v["source"].as_str().unwrap_or("?"),
            seq_at()
        ),
        Leaf::Alert => format!("ALERT {} {}", describe("alert", v), seq_at()),
        Leaf::Telemetry => format!(
            "telemetry: {} buffered, {} delivered",
            v["buffer"]["events"], v["delivered"]
        ),
        Leaf::CmdResult => describe("result", v),
        _ => return None,
    })
}

/// One line for an alert, event or command result.
pub fn describe(leaf: &str, v: &Value) -> String {
    let cam = v["camera"]
        .as_str()
        .map(|c| format!(" {c}"))
        .unwrap_or_default();
    match leaf {
        "event" => format!(
            "{}{cam} {} ({})",
            v["kind"].as_str().unwrap_or("?"),
            v["state"].as_str().unwrap_or("?"),
            v["source"].as_str().unwrap_or("?")
        ),
        "alert" => {
            let kind = v["kind"].as_str().unwrap_or("?");
            let d = &v["detail"];
            use AlertKind as K;
            let extra = match AlertKind::parse(kind) {
                Some(K::CameraDown | K::CameraDegraded | K::CameraUp) => d["problems"]
                    .as_array()
                    .map(|p| {
                        p.iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
                Some(K::OverTemperature | K::TemperatureOk) => {
                    format!("{} °C", d["celsius"].as_f64().unwrap_or(f64::NAN))
                }
                Some(K::DiskLow | K::DiskOk) => format!("{} MB free", d["free_mb"]),
                Some(K::BufferDropped) if d["stills"].as_u64().is_some() => {
                    format!("{} stills dropped", d["stills"])
                }
                Some(K::BufferDropped) => format!("{} dropped", d["count"]),
                Some(K::SnapshotBudgetReached) => format!(
                    "{} of {} bytes of stills today",
                    d["used_bytes"], d["budget_bytes"]
                ),
                Some(K::BoardFault) => d["problems"]
                    .as_array()
                    .and_then(|p| p.first())
                    .and_then(|p| p.as_str())
                    .unwrap_or("")
                    .to_string(),
                _ => String::new(),
            };
            if extra.is_empty() {
                format!("{kind}{cam}")
            } else {
                format!("{kind}{cam}: {extra}")
            }
        }
        _ => format!(
            "command {} {}",
            v["op"].as_str().unwrap_or(""),
            if v["ok"] == true { "ok" } else { "FAILED" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(m: &mut Model, topic: &str, json: &str) {
        m.apply(topic, json.as_bytes(), 1_800_000_000_000);
    }

    #[test]
    fn events_with_a_still_are_marked_whichever_arrives_first() {
        let mut m = Model::new("camgw");
        let ev = |id: &str| {
            format!(
                r#"{{"id":"{id}","seq":1,"ts":"2026-12-02T06:00:00Z","kind":"motion","camera":"cam01","source":"onvif","state":"start"}}"#
            )
        };
        apply(&mut m, "camgw/w/g/event", &ev("e1"));
        m.apply("camgw/w/g/camera/cam01/snapshot/e1", &[0xFF; 3000], 0);
        m.apply("camgw/w/g/camera/cam01/snapshot/e2", &[0xFF; 500], 0);
        apply(&mut m, "camgw/w/g/event", &ev("e2"));
        apply(&mut m, "camgw/w/g/event", &ev("e3"));
        let lines: Vec<_> = m
            .log
            .iter()
            .map(|l| (l.text.as_str(), l.still_bytes))
            .collect();
        assert!(lines[0].0.ends_with("[still 3 KB]"), "{lines:?}");
        assert_eq!(lines[0].1, Some(3000));
        assert!(lines[1].0.ends_with("[still 1 KB]"), "{lines:?}");
        assert_eq!(lines[2].1, None);
        assert_eq!(m.gateways.values().next().unwrap().stills, 2);
        assert_eq!(m.unreadable, 0, "stills are not JSON and not unreadable");
    }

    #[test]
    fn one_line_per_message_of_a_gateway() {
        let l = |leaf: Leaf<'_>, j: &str| line(&leaf, &serde_json::from_str(j).unwrap());
        assert_eq!(
            l(Leaf::Status, r#"{"online":false,"reason":"shutdown"}"#).unwrap(),
            "gateway OFFLINE (shutdown)"
        );
        assert_eq!(
            l(
                Leaf::Health("cam02"),
                r#"{"camera":"cam02","state":"degraded","problems":["frozen","black"]}"#
            )
            .unwrap(),
            "health cam02 is DEGRADED (frozen, black)"
        );
        assert_eq!(
            l(
                Leaf::Event,
                r#"{"seq":7,"ts":"T","camera":"cam01","source":"gpio","state":"start"}"#
            )
            .unwrap(),
            "motion start camera cam01 via gpio (seq 7, at T)"
        );
        assert_eq!(
            l(
                Leaf::Alert,
                r#"{"seq":8,"ts":"T","kind":"disk_low","camera":null,"detail":{"free_mb":42}}"#
            )
            .unwrap(),
            "ALERT disk_low: 42 MB free (seq 8, at T)"
        );
        assert_eq!(l(Leaf::Cmd, "{}"), None, "commands are not shown");
    }

    #[test]
    fn a_scripted_day_at_the_station() {
        let mut m = Model::new("camgw");
        apply(
            &mut m,
            "camgw/q1/gw1/status",
            r#"{"online":true,"version":"0.1.0","boot_id":"b1","ts":"2026-11-29T10:00:00.000Z"}"#,
        );
        apply(
            &mut m,
            "camgw/q1/gw1/camera/cam01/health",
            r#"{"camera":"cam01","state":"up","problems":[],"since":"2026-11-29T10:00:01.000Z","ts":"2026-11-29T10:00:01.000Z"}"#,
        );
        apply(
            &mut m,
            "camgw/q1/gw1/camera/cam02/health",
            r#"{"camera":"cam02","state":"down","problems":["unreachable"],"since":"2026-11-29T10:05:00.000Z","ts":"2026-11-29T10:05:00.000Z"}"#,
        );
        apply(
            &mut m,
            "camgw/q1/gw1/alert",
            r#"{"id":"a","seq":3,"ts":"2026-11-29T10:05:00.000Z","kind":"camera_down","camera":"cam02","detail":{"problems":["unreachable"]}}"#,
        );
        apply(
            &mut m,
            "camgw/q1/gw1/event",
            r#"{"id":"b","seq":4,"ts":"2026-11-29T10:06:00.000Z","kind":"motion","camera":"cam01","source":"hikvision","state":"start"}"#,
        );
        apply(
            &mut m,
            "camgw/q1/gw1/telemetry",
            r#"{"ts":"2026-11-29T10:07:00.000Z","buffer":{"events":5,"alerts":2},"board":{"temperatures_c":{"enclosure":47.5}}}"#,
        );
        apply(
            &mut m,
            "camgw/q1/gw2/status",
            r#"{"online":false,"boot_id":"x"}"#,
        );
        apply(&mut m, "camgw/q1/gw1/cmd", r#"{"sig":"..."}"#);
        apply(&mut m, "other/q1/gw1/status", r#"{"online":true}"#);
        m.apply("camgw/q1/gw1/event", &[0x01, 0x02], 1_800_000_000_000);

        let g = &m.gateways[&("q1".into(), "gw1".into())];
        assert_eq!(g.online, Some(true));
        assert_eq!(g.last_seen.as_deref(), Some("2026-11-29T10:07:00.000Z"));
        assert_eq!(g.buffer_depth, Some(7));
        assert_eq!(g.temperature_c, Some(47.5));
        assert_eq!(g.cameras["cam02"].state, "down");
        assert_eq!(g.cameras["cam02"].problems, vec!["unreachable"]);
        let g2 = &m.gateways[&("q1".into(), "gw2".into())];
        assert_eq!(g2.online, Some(false));
        assert_eq!(m.gateways.len(), 2, "other prefixes are ignored");
        let texts: Vec<_> = m.log.iter().map(|l| (l.text.as_str(), l.urgent)).collect();
        assert_eq!(
            texts,
            vec![
                ("camera_down cam02: unreachable", true),
                ("motion cam01 start (hikvision)", false),
                ("(2 bytes, not JSON: postcard payload?)", false),
            ]
        );
        assert_eq!(m.unreadable, 1);

        // The camera comes back; a removed camera's retained health is cleared.
        apply(
            &mut m,
            "camgw/q1/gw1/camera/cam02/health",
            r#"{"camera":"cam02","state":"up","problems":[],"since":"2026-11-29T10:09:00.000Z","ts":"2026-11-29T10:09:00.000Z"}"#,
        );
        m.apply("camgw/q1/gw1/camera/cam01/health", b"", 0);
        let g = &m.gateways[&("q1".into(), "gw1".into())];
        assert_eq!(g.cameras.len(), 1);
        assert_eq!(g.cameras["cam02"].state, "up");
    }

    #[test]
    fn the_log_is_bounded() {
        let mut m = Model::new("camgw");
        for i in 0..(LOG_LINES + 50) {
            apply(
                &mut m,
                "camgw/w/g/event",
                &format!(r#"{{"kind":"motion","camera":"c{i}","state":"pulse","source":"gpio"}}"#),
            );
        }
        assert_eq!(m.log.len(), LOG_LINES);
        assert!(m
            .log
            .back()
            .unwrap()
            .text
            .contains(&format!("c{}", LOG_LINES + 49)));
    }
}
