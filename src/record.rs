//! The one thing that flows from sources to the station: a [`Record`] (an alert or an event),
//! as stored in the buffer and as published on `T/alert` and `T/event`.
//!
//! Stored form: postcard of [`Record`] (see `buffer`). Wire forms: JSON per the contract, or
//! postcard of [`WireAlert`] / [`WireEvent`] when `mqtt.payload = "postcard"`. `detail` is
//! free-form JSON; inside postcard it travels as JSON text, since postcard is not
//! self-describing.

use serde::{Deserialize, Serialize};

use crate::clock::rfc3339_ms;

/// Which stream (and topic) a record belongs to. Eviction drops events before alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Class {
    Event = 0,
    Alert = 1,
}

impl Class {
    pub const ALL: [Class; 2] = [Class::Event, Class::Alert];
    pub fn name(self) -> &'static str {
        match self {
            Class::Event => "event",
            Class::Alert => "alert",
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Defines a closed set of wire names: the enum, `ALL`, `name()` and `parse()`.
macro_rules! wire_names {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $v,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// The name on the wire.
            pub fn name(self) -> &'static str {
                match self { $($name::$v => $s,)* }
            }
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($s => Some($name::$v),)* _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

wire_names! {
    /// Where a motion event came from: `source` on `T/event`.
    Source {
        Onvif => "onvif",
        Hikvision => "hikvision",
        Dahua => "dahua",
        Gpio => "gpio",
        Ingest => "ingest",
    }
}

wire_names! {
    /// Every alert the agent raises: `kind` on `T/alert` (docs/reference.md says when).
    AlertKind {
        CameraDown => "camera_down",
        CameraDegraded => "camera_degraded",
        CameraUp => "camera_up",
        Tamper => "tamper",
        EnclosureOpen => "enclosure_open",
        EnclosureClosed => "enclosure_closed",
        CameraPowerCycled => "camera_power_cycled",
        OverTemperature => "over_temperature",
        TemperatureOk => "temperature_ok",
        BoardFault => "board_fault",
        DiskLow => "disk_low",
        DiskOk => "disk_ok",
        BufferDropped => "buffer_dropped",
        BufferCorrupt => "buffer_corrupt",
        UncleanShutdown => "unclean_shutdown",
        ConfigApplied => "config_applied",
        ConfigRejected => "config_rejected",
        ConfigRolledBack => "config_rolled_back",
        CommandRefused => "command_refused",
        SnapshotBudgetReached => "snapshot_budget_reached",
        UpdateApplied => "update_applied",
        UpdateFailed => "update_failed",
    }
}

impl AlertKind {
    /// Whether a duty officer should look now (the station shows these first).
    pub fn urgent(self) -> bool {
        matches!(
            self,
            AlertKind::CameraDown
                | AlertKind::Tamper
                | AlertKind::EnclosureOpen
                | AlertKind::OverTemperature
                | AlertKind::DiskLow
                | AlertKind::BufferDropped
                | AlertKind::BoardFault
                | AlertKind::ConfigRolledBack
                | AlertKind::UpdateFailed
        )
    }
}

wire_names! {
    /// `state` of a motion event.
    MotionState {
        Start => "start",
        End => "end",
        Pulse => "pulse",
    }
}

/// What a source hands to the buffer; the buffer adds `seq` and `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRecord {
    pub ts_ms: i64,
    pub clock_synced: bool,
    pub body: Body,
}

impl NewRecord {
    /// `body` stamped with the gateway's time and whether its clock is synchronised: the one
    /// place records get their `ts` and `clock_synced`.
    pub fn stamped(clock: &dyn crate::clock::Clock, body: Body) -> NewRecord {
        NewRecord {
            ts_ms: clock.now_ms(),
            clock_synced: clock.synced(),
            body,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    Alert {
        kind: String,
        camera: Option<String>,
        /// JSON object text, `{}` when empty.
        detail: String,
    },
    Event {
        kind: String,
        camera: String,
        source: String,
        state: String,
        /// JSON object text, `{}` when empty.
        detail: String,
    },
}

impl Body {
    pub fn class(&self) -> Class {
        match self {
            Body::Alert { .. } => Class::Alert,
            Body::Event { .. } => Class::Event,
        }
    }

    /// An alert with a JSON detail.
    pub fn alert(kind: AlertKind, camera: Option<&str>, detail: serde_json::Value) -> Body {
        Body::Alert {
            kind: kind.name().to_string(),
            camera: camera.map(str::to_string),
            detail: detail.to_string(),
        }
    }

    /// A motion event with a JSON detail (`{}` when there is nothing to add).
    pub fn motion(
        camera: &str,
        source: Source,
        state: MotionState,
        detail: serde_json::Value,
    ) -> Body {
        let detail = match detail {
            serde_json::Value::Null => "{}".into(),
            d => d.to_string(),
        };
        Body::Event {
            kind: "motion".into(),
            camera: camera.into(),
            source: source.name().into(),
            state: state.name().into(),
            detail,
        }
    }
}

/// A buffered record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// 128 random bits; unique per gateway forever.
    pub id: u128,
    pub ts_ms: i64,
    pub clock_synced: bool,
    pub body: Body,
}

impl Record {
    pub fn class(&self) -> Class {
        self.body.class()
    }

    pub fn id_string(&self) -> String {
        format_id(self.id)
    }

    /// The contract's JSON payload.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": self.id_string(),
            "seq": self.seq,
            "ts": rfc3339_ms(self.ts_ms),
            "clock_synced": self.clock_synced,
        });
        let m = v.as_object_mut().expect("object");
        match &self.body {
            Body::Alert {
                kind,
                camera,
                detail,
            } => {
                m.insert("kind".into(), kind.as_str().into());
                m.insert(
                    "camera".into(),
                    camera
                        .as_deref()
                        .map(Into::into)
                        .unwrap_or(serde_json::Value::Null),
                );
                m.insert("detail".into(), detail_value(detail));
            }
            Body::Event {
                kind,
                camera,
                source,
                state,
                detail,
            } => {
                m.insert("kind".into(), kind.as_str().into());
                m.insert("camera".into(), camera.as_str().into());
                m.insert("source".into(), source.as_str().into());
                m.insert("state".into(), state.as_str().into());
                let d = detail_value(detail);
                if d.as_object().is_some_and(|o| !o.is_empty()) {
                    m.insert("detail".into(), d);
                }
            }
        }
        v
    }

    /// The postcard wire payload.
    pub fn to_postcard(&self) -> Vec<u8> {
        let r = match &self.body {
            Body::Alert {
                kind,
                camera,
                detail,
            } => postcard::to_allocvec(&WireAlert {
                id: self.id_string(),
                seq: self.seq,
                ts: rfc3339_ms(self.ts_ms),
                clock_synced: self.clock_synced,
                kind: kind.clone(),
                camera: camera.clone(),
                detail: detail.clone(),
            }),
            Body::Event {
                kind,
                camera,
                source,
                state,
                detail,
            } => postcard::to_allocvec(&WireEvent {
                id: self.id_string(),
                seq: self.seq,
                ts: rfc3339_ms(self.ts_ms),
                clock_synced: self.clock_synced,
                kind: kind.clone(),
                camera: camera.clone(),
                source: source.clone(),
                state: state.clone(),
                detail: detail.clone(),
            }),
        };
        r.expect("postcard encoding of owned strings cannot fail")
    }
}

fn detail_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::json!({}))
}

/// `T/alert` in postcard form (field order is the wire order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireAlert {
    pub id: String,
    pub seq: u64,
    pub ts: String,
    pub clock_synced: bool,
    pub kind: String,
    pub camera: Option<String>,
    /// JSON object text.
    pub detail: String,
}

/// `T/event` in postcard form (field order is the wire order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireEvent {
    pub id: String,
    pub seq: u64,
    pub ts: String,
    pub clock_synced: bool,
    pub kind: String,
    pub camera: String,
    pub source: String,
    pub state: String,
    /// JSON object text.
    pub detail: String,
}

/// `0123456789abcdef0123456789abcdef` → `01234567-89ab-cdef-0123-456789abcdef`.
pub fn format_id(id: u128) -> String {
    let h = format!("{id:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A fresh random id with the UUID version-4 bits set.
pub fn new_id() -> u128 {
    let r: u128 = rand::random();
    (r & !(0xF000u128 << 64) & !(0xC000u128 << 48)) | (0x4000u128 << 64) | (0x8000u128 << 48)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Record {
        Record {
            seq: 42,
            id: 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
            ts_ms: 1_796_000_000_000,
            clock_synced: true,
            body: Body::motion(
                "cam01",
                Source::Ingest,
                MotionState::Start,
                serde_json::Value::Null,
            ),
        }
    }

    /// The 4G bill (docs/scale.md): what a motion event costs on the wire in each format.
    #[test]
    fn postcard_events_are_well_under_json() {
        let mut r = event();
        r.body = Body::motion(
            "cam01",
            Source::Hikvision,
            MotionState::Start,
            serde_json::Value::Null,
        );
        let json = r.to_json().to_string().len();
        let pc = r.to_postcard().len();
        eprintln!("motion event: JSON {json} bytes, postcard {pc} bytes");
        assert!(pc * 10 < json * 6, "JSON {json}, postcard {pc}");
    }

    #[test]
    fn event_json_has_every_contract_field() {
        let v = event().to_json();
        assert_eq!(v["id"], "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(v["seq"], 42);
        assert_eq!(v["clock_synced"], true);
        assert_eq!(v["kind"], "motion");
        assert_eq!(v["camera"], "cam01");
        assert_eq!(v["source"], "ingest");
        assert_eq!(v["state"], "start");
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
        assert!(v.get("detail").is_none());
    }

    #[test]
    fn wire_names_are_unique_snake_case_and_parse_back() {
        let mut names = std::collections::HashSet::new();
        let all = AlertKind::ALL.iter().map(|k| k.name());
        let all = all.chain(Source::ALL.iter().map(|s| s.name()));
        for n in all.chain(MotionState::ALL.iter().map(|s| s.name())) {
            assert!(names.insert(n), "{n} named twice");
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{n}"
            );
        }
        for k in AlertKind::ALL {
            assert_eq!(AlertKind::parse(k.name()), Some(*k));
        }
        for s in Source::ALL {
            assert_eq!(Source::parse(s.name()), Some(*s));
        }
        assert_eq!(AlertKind::parse("Camera_Down"), None);
        assert_eq!(Source::ALL.len(), 5, "the contract names five sources");
    }

    #[test]
    fn alert_json_carries_null_camera_and_detail() {
        let r = Record {
            body: Body::alert(
                AlertKind::BufferDropped,
                None,
                serde_json::json!({"count": 7}),
            ),
            ..event()
        };
        let v = r.to_json();
        assert_eq!(v["camera"], serde_json::Value::Null);
        assert_eq!(v["detail"]["count"], 7);
    }

    #[test]
    fn new_ids_are_distinct_v4() {
        let a = format_id(new_id());
        let b = format_id(new_id());
        assert_ne!(a, b);
        assert_eq!(&a[14..15], "4");
    }
}
