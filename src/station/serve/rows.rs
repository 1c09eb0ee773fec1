//! What the recorder stores for one MQTT message: [`classify`] turns a topic, a payload and
//! the time of receipt into a [`Row`]. Pure (no I/O, `now` passed in) and total: every
//! message becomes some row, and a message that breaks the topic grammar or the payload
//! shapes is kept as text in [`Row::Unreadable`], never dropped and never trusted.

use serde_json::Value;

use crate::clock::parse_rfc3339_ms;
use crate::topics::{self, Leaf};

/// Longest text kept from one field (a hostile gateway may send megabytes of it).
pub const MAX_TEXT: usize = 4096;
/// Longest raw payload kept for an unreadable message or a telemetry sample.
pub const MAX_RAW: usize = 64 * 1024;
/// Most problems kept per health message.
pub const MAX_PROBLEMS: usize = 32;

/// Where a message came from: `{prefix}/{ward}/{gateway}/...`.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub ward: String,
    pub gateway: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Status {
        at: Origin,
        online: bool,
        version: Option<String>,
        boot_id: Option<String>,
        reason: Option<String>,
        ts: Option<String>,
        ts_ms: Option<i64>,
    },
    Health {
        at: Origin,
        camera: String,
        state: String,
        problems: Vec<String>,
        since: Option<String>,
        ts: Option<String>,
        ts_ms: Option<i64>,
    },
    /// A retained health topic cleared (empty payload): the camera left the config.
    HealthCleared { at: Origin, camera: String },
    Alert {
        at: Origin,
        id: String,
        seq: i64,
        ts: String,
        ts_ms: Option<i64>,
        kind: String,
        camera: Option<String>,
        /// The `detail` object as JSON text.
        detail: String,
        clock_synced: bool,
    },
    Event {
        at: Origin,
        id: String,
        seq: i64,
        ts: String,
        ts_ms: Option<i64>,
        kind: String,
        camera: String,
        source: String,
        state: String,
        clock_synced: bool,
    },
    Still {
        at: Origin,
        camera: String,
        event_id: String,
        jpeg: Vec<u8>,
    },
    Telemetry {
        at: Origin,
        ts_ms: Option<i64>,
        buffer_depth: Option<i64>,
        temperature_c: Option<f64>,
        version: Option<String>,
        /// The whole sample, as received (clipped at [`MAX_RAW`]).
        body: String,
    },
    /// Anything else: kept as text with its topic, for the record and for a curious admin.
    Unreadable {
        topic: String,
        payload: String,
        why: &'static str,
    },
    /// Messages the station does not record (its own commands, command results).
    Ignored,
}

impl Row {
    /// The gateway a row belongs to, when it belongs to one.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            Row::Status { at, .. }
            | Row::Health { at, .. }
            | Row::HealthCleared { at, .. }
            | Row::Alert { at, .. }
            | Row::Event { at, .. }
            | Row::Still { at, .. }
            | Row::Telemetry { at, .. } => Some(at),
            Row::Unreadable { .. } | Row::Ignored => None,
        }
    }
}

/// Text cut to at most `max` bytes on a character boundary.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn lossy(payload: &[u8], max: usize) -> String {
    clip(
        &String::from_utf8_lossy(&payload[..payload.len().min(max)]),
        max,
    )
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)?.as_str().map(|s| clip(s, MAX_TEXT))
}

fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn unreadable(topic: &str, payload: &[u8], why: &'static str) -> Row {
    Row::Unreadable {
        topic: clip(topic, MAX_TEXT),
        payload: lossy(payload, MAX_RAW),
        why,
    }
}

/// One message, classified. `prefix` is the topic prefix the station subscribed under.
pub fn classify(prefix: &str, topic: &str, payload: &[u8]) -> Row {
    let Some((ward, gateway, leaf)) = topics::parse(prefix, topic) else {
        return unreadable(
            topic,
            payload,
            "topic outside {prefix}/{ward}/{gateway}/...",
        );
    };
    let at = Origin {
        ward: clip(ward, MAX_TEXT),
        gateway: clip(gateway, MAX_TEXT),
    };
    match leaf {
        Leaf::Cmd | Leaf::CmdResult => return Row::Ignored,
        Leaf::Snapshot(camera, id) => {
            return Row::Still {
                at,
                camera: clip(camera, MAX_TEXT),
                event_id: clip(id, MAX_TEXT),
                jpeg: payload.to_vec(),
            }
        }
        Leaf::Health(camera) if payload.is_empty() => {
            return Row::HealthCleared {
                at,
                camera: clip(camera, MAX_TEXT),
            }
        }
        Leaf::Other(_) => return unreadable(topic, payload, "unknown topic"),
        _ => {}
    }
    let v: Value = match serde_json::from_slice(payload) {
        Ok(v @ Value::Object(_)) => v,
        _ => return unreadable(topic, payload, "not a JSON object"),
    };
    let ts = text(&v, "ts");
    let ts_ms = ts.as_deref().and_then(parse_rfc3339_ms);
    match leaf {
        Leaf::Status => match v.get("online").and_then(Value::as_bool) {
            Some(online) => Row::Status {
                at,
                online,
                version: text(&v, "version"),
                boot_id: text(&v, "boot_id"),
                reason: text(&v, "reason"),
                ts,
                ts_ms,
            },
            None => unreadable(topic, payload, "status without \"online\""),
        },
        Leaf::Health(camera) => {
            let Some(state) = text(&v, "state") else {
                return unreadable(topic, payload, "health without \"state\"");
            };
            let problems = v
                .get("problems")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .take(MAX_PROBLEMS)
                        .map(|p| match p.as_str() {
                            Some(s) => clip(s, MAX_TEXT),
                            None => clip(&p.to_string(), MAX_TEXT),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Row::Health {
                at,
                // The topic names the camera; the payload's "camera" may disagree (a hostile
                // or buggy gateway): the topic wins, as it is what retained state is keyed by.
                camera: clip(camera, MAX_TEXT),
                state,
                problems,
                since: text(&v, "since"),
                ts,
                ts_ms,
            }
        }
        Leaf::Alert => {
            let (Some(id), Some(seq), Some(kind)) = (
                text(&v, "id"),
                v.get("seq").and_then(Value::as_i64),
                text(&v, "kind"),
            ) else {
                return unreadable(topic, payload, "alert without id, seq or kind");
            };
            Row::Alert {
                at,
                id,
                seq,
                ts: ts.unwrap_or_default(),
                ts_ms,
                kind,
                camera: text(&v, "camera"),
                detail: clip(
                    &v.get("detail")
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "{}".into()),
                    MAX_RAW,
                ),
                clock_synced: flag(&v, "clock_synced"),
            }
        }
        Leaf::Event => {
            let (Some(id), Some(seq), Some(camera)) = (
                text(&v, "id"),
                v.get("seq").and_then(Value::as_i64),
                text(&v, "camera"),
            ) else {
                return unreadable(topic, payload, "event without id, seq or camera");
            };
            Row::Event {
                at,
                id,
                seq,
                ts: ts.unwrap_or_default(),
                ts_ms,
                kind: text(&v, "kind").unwrap_or_else(|| "motion".into()),
                camera,
                source: text(&v, "source").unwrap_or_default(),
                state: text(&v, "state").unwrap_or_default(),
                clock_synced: flag(&v, "clock_synced"),
            }
        }
        Leaf::Telemetry => {
            let b = &v["buffer"];
            let depth = match (b["events"].as_i64(), b["alerts"].as_i64()) {
                (Some(e), Some(a)) => Some(e.saturating_add(a)),
                _ => None,
            };
            Row::Telemetry {
                at,
                ts_ms,
                buffer_depth: depth,
                temperature_c: v["board"]["temperatures_c"]["enclosure"]
                    .as_f64()
                    .or_else(|| v["system"]["cpu_temp_c"].as_f64()),
                version: text(&v, "version"),
                body: lossy(payload, MAX_RAW),
            }
        }
        Leaf::Cmd | Leaf::CmdResult | Leaf::Snapshot(..) | Leaf::Other(_) => Row::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o() -> Origin {
        Origin {
            ward: "q1-p05".into(),
            gateway: "gw03".into(),
        }
    }

    #[test]
    fn contract_payloads_become_rows() {
        let r = classify(
            "camgw",
            "camgw/q1-p05/gw03/event",
            br#"{"id":"e1","seq":7,"ts":"2026-12-02T01:02:03.000Z","clock_synced":true,"kind":"motion","camera":"cam01","source":"ingest","state":"start"}"#,
        );
        assert_eq!(
            r,
            Row::Event {
                at: o(),
                id: "e1".into(),
                seq: 7,
                ts: "2026-12-02T01:02:03.000Z".into(),
                ts_ms: parse_rfc3339_ms("2026-12-02T01:02:03.000Z"),
                kind: "motion".into(),
                camera: "cam01".into(),
                source: "ingest".into(),
                state: "start".into(),
                clock_synced: true,
            }
        );
        let r = classify(
            "camgw",
            "camgw/q1-p05/gw03/camera/cam01/health",
            br#"{"camera":"cam01","state":"down","problems":["unreachable"],"since":"2026-12-02T01:00:00Z","ts":"2026-12-02T01:00:00Z"}"#,
        );
        assert!(
            matches!(&r, Row::Health { camera, state, problems, .. } if camera == "cam01" && state == "down" && problems == &["unreachable"])
        );
        let r = classify(
            "camgw",
            "camgw/q1-p05/gw03/alert",
            br#"{"id":"a1","seq":3,"ts":"2026-12-02T01:00:00Z","clock_synced":false,"kind":"camera_down","camera":"cam01","detail":{"problems":["unreachable"]}}"#,
        );
        assert!(
            matches!(&r, Row::Alert { kind, camera: Some(c), detail, .. } if kind == "camera_down" && c == "cam01" && detail.contains("unreachable"))
        );
        let r = classify(
            "camgw",
            "camgw/q1-p05/gw03/status",
            br#"{"online":false,"boot_id":"b"}"#,
        );
        assert!(matches!(r, Row::Status { online: false, .. }));
        assert_eq!(
            classify("camgw", "camgw/q1-p05/gw03/camera/cam01/health", b""),
            Row::HealthCleared {
                at: o(),
                camera: "cam01".into()
            }
        );
        let r = classify(
            "camgw",
            "camgw/q1-p05/gw03/camera/cam01/snapshot/e1",
            b"\xff\xd8",
        );
        assert!(matches!(r, Row::Still { ref event_id, .. } if event_id == "e1"));
        assert_eq!(
            classify("camgw", "camgw/q1-p05/gw03/cmd", b"{}"),
            Row::Ignored
        );
    }

    #[test]
    fn hostile_messages_are_kept_as_clipped_text() {
        let r = classify("camgw", "elsewhere/x", b"\xff\xfe<script>");
        assert!(
            matches!(&r, Row::Unreadable { topic, payload, .. } if topic == "elsewhere/x" && payload.contains("<script>"))
        );
        let r = classify("camgw", "camgw/w/g/event", b"[1,2]");
        assert!(matches!(r, Row::Unreadable { .. }));
        let r = classify("camgw", "camgw/w/g/alert", br#"{"id":"a","kind":"x"}"#);
        assert!(matches!(r, Row::Unreadable { .. }), "no seq");
        let huge = format!(
            r#"{{"state":"down","problems":[{}],"ts":"{}"}}"#,
            vec![format!("\"{}\"", "é".repeat(5000)); 100].join(","),
            "x".repeat(10_000)
        );
        let r = classify(
            "camgw",
            "camgw/w/g/camera/<img src=x onerror=alert(1)>/health",
            huge.as_bytes(),
        );
        let Row::Health {
            camera,
            problems,
            ts,
            ts_ms,
            ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(
            camera, "<img src=x onerror=alert(1)>",
            "kept as text, not parsed as markup"
        );
        assert_eq!(problems.len(), MAX_PROBLEMS);
        assert!(problems.iter().all(|p| p.len() <= MAX_TEXT));
        assert!(ts.unwrap().len() <= MAX_TEXT);
        assert_eq!(ts_ms, None);
        let big = vec![b'x'; 3 * MAX_RAW];
        let Row::Unreadable { payload, .. } = classify("camgw", "x", &big) else {
            panic!()
        };
        assert_eq!(payload.len(), MAX_RAW);
    }

    #[test]
    fn clip_keeps_characters_whole() {
        assert_eq!(clip("ééé", 3), "é");
        assert_eq!(clip("abc", 10), "abc");
    }
}
