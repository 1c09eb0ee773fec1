//! Everything the station keeps, written once over [`Conn`] for both databases: the schema,
//! [`Store::record`] (one transaction per batch of MQTT messages; QoS 1 re-sends are recorded
//! once, by their natural keys), the console's queries, users, sessions, acknowledgements,
//! the audit log and retention. Stills are files beside a SQLite database (written and
//! fsynced before the row that names them) and rows in PostgreSQL.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::db::{Conn, Dialect, Target, V};
use super::rows::{Origin, Row};
use crate::clock::rfc3339_ms;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS gateways (
  ward TEXT NOT NULL, gateway TEXT NOT NULL,
  online {int}, reason TEXT, version TEXT, boot_id TEXT,
  last_seen_ms {int}, last_received_ms {int}, status_ts_ms {int},
  buffer_depth {int}, temperature_c {real},
  PRIMARY KEY (ward, gateway));
CREATE TABLE IF NOT EXISTS cameras (
  ward TEXT NOT NULL, gateway TEXT NOT NULL, camera TEXT NOT NULL,
  state TEXT NOT NULL, problems TEXT NOT NULL, since TEXT, ts_ms {int}, received_ms {int} NOT NULL,
  PRIMARY KEY (ward, gateway, camera));
CREATE TABLE IF NOT EXISTS health (
  ward TEXT NOT NULL, gateway TEXT NOT NULL, camera TEXT NOT NULL,
  state TEXT NOT NULL, problems TEXT NOT NULL, since TEXT, ts TEXT NOT NULL, ts_ms {int},
  received_ms {int} NOT NULL,
  PRIMARY KEY (ward, gateway, camera, ts, state));
CREATE INDEX IF NOT EXISTS health_received ON health (received_ms);
CREATE TABLE IF NOT EXISTS alerts (
  ward TEXT NOT NULL, gateway TEXT NOT NULL, id TEXT NOT NULL, seq {int} NOT NULL,
  ts TEXT NOT NULL, at_ms {int} NOT NULL, kind TEXT NOT NULL, camera TEXT, detail TEXT NOT NULL,
  clock_synced {int} NOT NULL, received_ms {int} NOT NULL, acked_by TEXT, acked_at_ms {int},
  PRIMARY KEY (ward, gateway, id));
CREATE INDEX IF NOT EXISTS alerts_at ON alerts (at_ms);
CREATE INDEX IF NOT EXISTS alerts_id ON alerts (id);
CREATE INDEX IF NOT EXISTS alerts_received ON alerts (received_ms);
CREATE TABLE IF NOT EXISTS events (
  ward TEXT NOT NULL, gateway TEXT NOT NULL, id TEXT NOT NULL, seq {int} NOT NULL,
  ts TEXT NOT NULL, at_ms {int} NOT NULL, kind TEXT NOT NULL, camera TEXT NOT NULL,
  source TEXT NOT NULL, state TEXT NOT NULL, clock_synced {int} NOT NULL, received_ms {int} NOT NULL,
  PRIMARY KEY (ward, gateway, id));
CREATE INDEX IF NOT EXISTS events_camera ON events (camera, at_ms);
CREATE INDEX IF NOT EXISTS events_at ON events (at_ms);
CREATE INDEX IF NOT EXISTS events_id ON events (id);
CREATE INDEX IF NOT EXISTS events_received ON events (received_ms);
CREATE TABLE IF NOT EXISTS stills (
  ward TEXT NOT NULL, gateway TEXT NOT NULL, camera TEXT NOT NULL, event_id TEXT NOT NULL,
  bytes {int} NOT NULL, file TEXT, jpeg {blob}, received_ms {int} NOT NULL,
  PRIMARY KEY (ward, gateway, event_id));
CREATE INDEX IF NOT EXISTS stills_id ON stills (event_id);
CREATE INDEX IF NOT EXISTS stills_camera ON stills (ward, gateway, camera, received_ms);
CREATE TABLE IF NOT EXISTS statuses (
  ward TEXT NOT NULL, gateway TEXT NOT NULL, online {int} NOT NULL, boot_id TEXT NOT NULL,
  version TEXT, reason TEXT, ts TEXT NOT NULL, received_ms {int} NOT NULL,
  PRIMARY KEY (ward, gateway, boot_id, online, ts));
CREATE TABLE IF NOT EXISTS telemetry (
  ward TEXT NOT NULL, gateway TEXT NOT NULL, ts_ms {int}, received_ms {int} NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS telemetry_received ON telemetry (received_ms);
CREATE TABLE IF NOT EXISTS unreadable (
  topic TEXT NOT NULL, payload TEXT NOT NULL, why TEXT NOT NULL, received_ms {int} NOT NULL);
CREATE TABLE IF NOT EXISTS users (
  name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL, created_ms {int} NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
  token TEXT PRIMARY KEY, name TEXT NOT NULL, csrf TEXT NOT NULL,
  created_ms {int} NOT NULL, expires_ms {int} NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
  at_ms {int} NOT NULL, name TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL);
";

/// What a batch changed, for the live feed: only what is new (a re-sent duplicate changes
/// nothing).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Camera(Value),
    Alert(Value),
    Event(Value),
    Still(Value),
    Gateway { ward: String, gateway: String },
}

pub struct Store {
    c: Box<dyn Conn>,
    stills_dir: Option<PathBuf>,
}

/// Counts for `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// (ward, gateway, online)
    pub gateways: Vec<(String, String, Option<bool>)>,
    /// (ward, gateway, state, cameras)
    pub camera_states: Vec<(String, String, String, i64)>,
    /// (kind, alerts)
    pub alerts: Vec<(String, i64)>,
    /// (ward, gateway, events)
    pub events: Vec<(String, String, i64)>,
    pub unacked: i64,
    pub stills: i64,
}

/// An event query: every field narrows it.
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    pub camera: Option<String>,
    pub gateway: Option<String>,
    pub state: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: i64,
}

/// A user as the login check needs it.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub role: String,
    pub hash: String,
}

/// A live session.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub name: String,
    pub role: String,
    pub csrf: String,
}

/// The URL of an event's still.
pub fn snapshot_url(event_id: &str) -> String {
    format!("/api/snapshots/{}.jpg", percent(event_id))
}

/// Percent-encoding of everything but unreserved characters.
pub fn percent(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

fn json_text(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or(Value::Null)
}

fn opt_ts(ms: &V) -> Value {
    ms.i().map_or(Value::Null, |m| Value::String(rfc3339_ms(m)))
}

fn still_file(dir: &Path, at: &Origin, event_id: &str) -> PathBuf {
    // Names from the broker are hostile: the file name is a digest, never the id itself.
    let mut h = Sha256::new();
    h.update(at.ward.as_bytes());
    h.update([0]);
    h.update(at.gateway.as_bytes());
    h.update([0]);
    h.update(event_id.as_bytes());
    let d = h.finalize();
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{hex}.jpg"))
}

fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

const CAMERA_COLS: &str = "c.ward, c.gateway, c.camera, c.state, c.problems, c.since, c.ts_ms, \
     (SELECT s.event_id FROM stills s WHERE s.ward = c.ward AND s.gateway = c.gateway \
      AND s.camera = c.camera ORDER BY s.received_ms DESC LIMIT 1)";

fn camera_json(r: &[V]) -> Value {
    json!({
        "ward": r[0].text(), "gateway": r[1].text(), "camera": r[2].text(),
        "state": r[3].text(), "problems": json_text(&r[4].text()),
        "since": r[5].opt_text(), "ts": opt_ts(&r[6]),
        "snapshot": r[7].t().map(snapshot_url),
    })
}

const ALERT_COLS: &str = "ward, gateway, id, seq, ts, kind, camera, detail, clock_synced, \
     acked_by, acked_at_ms, received_ms";

fn alert_json(r: &[V]) -> Value {
    json!({
        "ward": r[0].text(), "gateway": r[1].text(), "id": r[2].text(), "seq": r[3].i(),
        "ts": r[4].text(), "kind": r[5].text(), "camera": r[6].opt_text(),
        "detail": json_text(&r[7].text()), "clock_synced": r[8].i() == Some(1),
        "acked_by": r[9].opt_text(), "acked_at": opt_ts(&r[10]),
        "received": opt_ts(&r[11]),
    })
}

const EVENT_COLS: &str = "e.ward, e.gateway, e.id, e.seq, e.ts, e.kind, e.camera, e.source, \
     e.state, e.clock_synced, e.received_ms, \
     (SELECT s.event_id FROM stills s WHERE s.ward = e.ward AND s.gateway = e.gateway \
      AND s.event_id = e.id)";

fn event_json(r: &[V]) -> Value {
    json!({
        "ward": r[0].text(), "gateway": r[1].text(), "id": r[2].text(), "seq": r[3].i(),
        "ts": r[4].text(), "kind": r[5].text(), "camera": r[6].text(), "source": r[7].text(),
        "state": r[8].text(), "clock_synced": r[9].i() == Some(1), "received": opt_ts(&r[10]),
        "snapshot": r[11].t().map(snapshot_url),
    })
}

impl Store {
    pub fn open(target: &Target) -> anyhow::Result<Store> {
        let mut c = target.open()?;
        let ddl = c.dialect().ddl(SCHEMA);
        c.batch(&ddl)
            .with_context(|| format!("cannot create the tables in {}", target.display()))?;
        let stills_dir = target.stills_dir();
        if let Some(d) = &stills_dir {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        Ok(Store { c, stills_dir })
    }

    pub fn dialect(&self) -> Dialect {
        self.c.dialect()
    }

    /// Records one batch in one transaction. Each row comes with its time of receipt. Returns
    /// what changed; on error nothing of the batch is recorded (the caller does not
    /// acknowledge it, so the broker sends it again).
    pub fn record(&mut self, rows: &[(Row, i64)]) -> anyhow::Result<Vec<Change>> {
        // Still files first, outside the transaction: a row never names a missing file.
        if let Some(dir) = &self.stills_dir {
            for (r, _) in rows {
                if let Row::Still {
                    at, event_id, jpeg, ..
                } = r
                {
                    let p = still_file(dir, at, event_id);
                    write_durably(&p, jpeg)
                        .with_context(|| format!("cannot write the still {}", p.display()))?;
                }
            }
        }
        self.c.begin()?;
        match self.record_in_txn(rows) {
            Ok(changes) => {
                self.c.commit()?;
                Ok(changes)
            }
            Err(e) => {
                let _ = self.c.rollback();
                Err(e)
            }
        }
    }

    fn record_in_txn(&mut self, rows: &[(Row, i64)]) -> anyhow::Result<Vec<Change>> {
        // Each gateway of the batch once: when it was last heard from, and the newest
        // timestamp it sent (rows come in order of receipt). Before the rows, which update
        // the gateway's row.
        let mut heard: BTreeMap<(&str, &str), (Option<i64>, i64)> = BTreeMap::new();
        for (row, now) in rows {
            if let Some(at) = row.origin() {
                let seen = match row {
                    Row::Status { ts_ms, .. }
                    | Row::Health { ts_ms, .. }
                    | Row::Alert { ts_ms, .. }
                    | Row::Event { ts_ms, .. }
                    | Row::Telemetry { ts_ms, .. } => *ts_ms,
                    _ => None,
                };
                let e = heard
                    .entry((at.ward.as_str(), at.gateway.as_str()))
                    .or_insert((None, *now));
                e.0 = e.0.max(seen);
                e.1 = e.1.max(*now);
            }
        }
        for ((ward, gateway), (seen, received)) in heard {
            self.c.exec(
                "INSERT INTO gateways (ward, gateway, last_seen_ms, last_received_ms) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (ward, gateway) DO UPDATE SET \
                 last_received_ms = ?4, \
                 last_seen_ms = CASE WHEN gateways.last_seen_ms IS NULL OR \
                   gateways.last_seen_ms < ?3 THEN ?3 ELSE gateways.last_seen_ms END",
                &[ward.into(), gateway.into(), seen.into(), received.into()],
            )?;
        }
        let mut changes = Vec::new();
        for (row, now) in rows {
            let now = *now;
            match row {
                Row::Status {
                    at,
                    online,
                    version,
                    boot_id,
                    reason,
                    ts,
                    ts_ms,
                } => {
                    let ts_text = ts.clone().unwrap_or_default();
                    let new = self.c.exec(
                        "INSERT INTO statuses (ward, gateway, online, boot_id, version, reason, ts, \
                         received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
                        &[
                            (&at.ward).into(),
                            (&at.gateway).into(),
                            (*online).into(),
                            boot_id.clone().unwrap_or_default().into(),
                            version.clone().into(),
                            reason.clone().into(),
                            ts_text.into(),
                            now.into(),
                        ],
                    )?;
                    // The status delivered last wins: the broker orders one topic, and a
                    // Last Will carries no timestamp to compare (a message re-sent after a
                    // station restart was never recorded, so it is not older than what was).
                    let when = ts_ms.unwrap_or(now);
                    self.c.exec(
                        "UPDATE gateways SET online = ?3, reason = ?4, \
                         version = COALESCE(?5, version), boot_id = COALESCE(?6, boot_id), \
                         status_ts_ms = ?7 WHERE ward = ?1 AND gateway = ?2",
                        &[
                            (&at.ward).into(),
                            (&at.gateway).into(),
                            (*online).into(),
                            reason.clone().into(),
                            version.clone().into(),
                            boot_id.clone().into(),
                            when.into(),
                        ],
                    )?;
                    if new > 0 {
                        changes.push(gateway_change(at));
                    }
                }
                Row::Health {
                    at,
                    camera,
                    state,
                    problems,
                    since,
                    ts,
                    ts_ms,
                } => {
                    let problems_text = serde_json::to_string(problems)?;
                    let new = self.c.exec(
                        "INSERT INTO health (ward, gateway, camera, state, problems, since, ts, ts_ms, \
                         received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                         ON CONFLICT DO NOTHING",
                        &[
                            (&at.ward).into(),
                            (&at.gateway).into(),
                            camera.into(),
                            state.into(),
                            (&problems_text).into(),
                            since.clone().into(),
                            ts.clone().unwrap_or_default().into(),
                            (*ts_ms).into(),
                            now.into(),
                        ],
                    )?;
                    let current = self.c.exec(
                        "INSERT INTO cameras (ward, gateway, camera, state, problems, since, ts_ms, \
                         received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                         ON CONFLICT (ward, gateway, camera) DO UPDATE SET state = ?4, \
                         problems = ?5, since = ?6, ts_ms = ?7, received_ms = ?8 \
                         WHERE cameras.ts_ms IS NULL OR ?7 IS NULL OR cameras.ts_ms <= ?7",
                        &[
                            (&at.ward).into(),
                            (&at.gateway).into(),
                            camera.into(),
                            state.into(),
                            (&problems_text).into(),
                            since.clone().into(),
                            (*ts_ms).into(),
                            now.into(),
                        ],
                    )?;
                    if new > 0 && current > 0 {
                        if let Some(v) = self.camera(&at.ward, &at.gateway, camera)? {
                            changes.push(Change::Camera(v));
                        }
                        changes.push(gateway_change(at));
                    }
                }
                Row::HealthCleared { at, camera } => {
                    let n = self.c.exec(
                        "DELETE FROM cameras WHERE ward = ?1 AND gateway = ?2 AND camera = ?3",
                        &[(&at.ward).into(), (&at.gateway).into(), camera.into()],
                    )?;
                    if n > 0 {
                        changes.push(Change::Camera(json!({
                            "ward": at.ward, "gateway": at.gateway, "camera": camera,
                            "removed": true,
                        })));
                        changes.push(gateway_change(at));
                    }
                }
                Row::Alert {
                    at,
                    id,
                    seq,
                    ts,
                    ts_ms,
                    kind,
                    camera,
                    detail,
                    clock_synced,
                } => {
                    let new = self.c.exec(
                        "INSERT INTO alerts (ward, gateway, id, seq, ts, at_ms, kind, camera, detail, \
                         clock_synced, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
                         ?10, ?11) ON CONFLICT DO NOTHING",
                        &[
                            (&at.ward).into(),
                            (&at.gateway).into(),
                            id.into(),
                            (*seq).into(),
                            ts.into(),
                            ts_ms.unwrap_or(now).into(),
                            kind.into(),
                            camera.clone().into(),
                            detail.into(),
                            (*clock_synced).into(),
                            now.into(),
                        ],
                    )?;
                    if new > 0 {
                        if let Some(v) = self.alert(&at.ward, &at.gateway, id)? {
                            changes.push(Change::Alert(v));
                        }
                    }
                }
                Row::Event {
                    at,
                    id,
                    seq,
                    ts,
                    ts_ms,
                    kind,
                    camera,
                    source,
                    state,
                    clock_synced,
                } => {
                    let new = self.c.exec(
                        "INSERT INTO events (ward, gateway, id, seq, ts, at_ms, kind, camera, source, \
                         state, clock_synced, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
                         ?9, ?10, ?11, ?12) ON CONFLICT DO NOTHING",
                        &[
                            (&at.ward).into(),
                            (&at.gateway).into(),
                            id.into(),
                            (*seq).into(),
                            ts.into(),
                            ts_ms.unwrap_or(now).into(),
                            kind.into(),
                            camera.into(),
                            source.into(),
                            state.into(),
                            (*clock_synced).into(),
                            now.into(),
                        ],
                    )?;
                    if new > 0 {
                        let r = self.c.query(
                            &format!(
                                "SELECT {EVENT_COLS} FROM events e WHERE e.ward = ?1 AND \
                                 e.gateway = ?2 AND e.id = ?3"
                            ),
                            &[(&at.ward).into(), (&at.gateway).into(), id.into()],
                        )?;
                        if let Some(r) = r.first() {
                            changes.push(Change::Event(event_json(r)));
                        }
                    }
                }
                Row::Still {
                    at,
                    camera,
                    event_id,
                    jpeg,
                } => {
                    let (file, blob) = match &self.stills_dir {
                        Some(d) => (
                            V::T(
                                still_file(d, at, event_id)
                                    .file_name()
                                    .unwrap_or_default()
                                    .to_string_lossy()
                                    .into_owned(),
                            ),
                            V::Null,
                        ),
                        None => (V::Null, V::B(jpeg.clone())),
                    };
                    let new = self.c.exec(
                        "INSERT INTO stills (ward, gateway, camera, event_id, bytes, file, jpeg, \
                         received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
                        &[
                            (&at.ward).into(),
                            (&at.gateway).into(),
                            camera.into(),
                            event_id.into(),
                            (jpeg.len() as i64).into(),
                            file,
                            blob,
                            now.into(),
                        ],
                    )?;
                    if new > 0 {
                        changes.push(Change::Still(json!({
                            "ward": at.ward, "gateway": at.gateway, "camera": camera,
                            "event_id": event_id, "bytes": jpeg.len(),
                            "snapshot": snapshot_url(event_id),
                        })));
                    }
                }
                Row::Telemetry {
                    at,
                    ts_ms,
                    buffer_depth,
                    temperature_c,
                    version,
                    body,
                } => {
                    self.c.exec(
                        "INSERT INTO telemetry (ward, gateway, ts_ms, received_ms, body) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        &[
                            (&at.ward).into(),
                            (&at.gateway).into(),
                            (*ts_ms).into(),
                            now.into(),
                            body.into(),
                        ],
                    )?;
                    self.c.exec(
                        "UPDATE gateways SET buffer_depth = COALESCE(?3, buffer_depth), \
                         temperature_c = COALESCE(?4, temperature_c), \
                         version = COALESCE(?5, version) WHERE ward = ?1 AND gateway = ?2",
                        &[
                            (&at.ward).into(),
                            (&at.gateway).into(),
                            (*buffer_depth).into(),
                            (*temperature_c).into(),
                            version.clone().into(),
                        ],
                    )?;
                    changes.push(gateway_change(at));
                }
                Row::Unreadable {
                    topic,
                    payload,
                    why,
                } => {
                    self.c.exec(
                        "INSERT INTO unreadable (topic, payload, why, received_ms) \
                         VALUES (?1, ?2, ?3, ?4)",
                        &[topic.into(), payload.into(), (*why).into(), now.into()],
                    )?;
                }
                Row::Ignored => {}
            }
        }
        changes.dedup();
        Ok(changes)
    }

    pub fn camera(
        &mut self,
        ward: &str,
        gateway: &str,
        camera: &str,
    ) -> anyhow::Result<Option<Value>> {
        let r = self.c.query(
            &format!(
                "SELECT {CAMERA_COLS} FROM cameras c WHERE c.ward = ?1 AND c.gateway = ?2 \
                 AND c.camera = ?3"
            ),
            &[ward.into(), gateway.into(), camera.into()],
        )?;
        Ok(r.first().map(|r| camera_json(r)))
    }

    pub fn cameras(&mut self) -> anyhow::Result<Vec<Value>> {
        let r = self.c.query(
            &format!("SELECT {CAMERA_COLS} FROM cameras c ORDER BY c.ward, c.gateway, c.camera"),
            &[],
        )?;
        Ok(r.iter().map(|r| camera_json(r)).collect())
    }

    pub fn gateways(&mut self) -> anyhow::Result<Vec<Value>> {
        let r = self.c.query(
            "SELECT g.ward, g.gateway, g.online, g.reason, g.version, g.boot_id, g.last_seen_ms, \
             g.last_received_ms, g.buffer_depth, g.temperature_c, \
             (SELECT COUNT(*) FROM cameras c WHERE c.ward = g.ward AND c.gateway = g.gateway), \
             (SELECT COUNT(*) FROM cameras c WHERE c.ward = g.ward AND c.gateway = g.gateway \
              AND c.state <> 'up') \
             FROM gateways g ORDER BY g.ward, g.gateway",
            &[],
        )?;
        Ok(r.iter()
            .map(|r| {
                json!({
                    "ward": r[0].text(), "gateway": r[1].text(),
                    "online": r[2].i().map(|i| i == 1), "reason": r[3].opt_text(),
                    "version": r[4].opt_text(), "boot_id": r[5].opt_text(),
                    "last_seen": opt_ts(&r[6]), "last_received": opt_ts(&r[7]),
                    "buffer_depth": r[8].i(), "temperature_c": r[9].f(),
                    "cameras": r[10].i().unwrap_or(0), "cameras_not_up": r[11].i().unwrap_or(0),
                })
            })
            .collect())
    }

    fn alert(&mut self, ward: &str, gateway: &str, id: &str) -> anyhow::Result<Option<Value>> {
        let r = self.c.query(
            &format!(
                "SELECT {ALERT_COLS} FROM alerts WHERE ward = ?1 AND gateway = ?2 AND id = ?3"
            ),
            &[ward.into(), gateway.into(), id.into()],
        )?;
        Ok(r.first().map(|r| alert_json(r)))
    }

    /// Alerts at or after `since_ms` (by the gateway's timestamp), newest first.
    pub fn alerts(&mut self, since_ms: Option<i64>, limit: i64) -> anyhow::Result<Vec<Value>> {
        let r = self.c.query(
            &format!(
                "SELECT {ALERT_COLS} FROM alerts WHERE at_ms >= ?1 \
                 ORDER BY at_ms DESC, seq DESC LIMIT ?2"
            ),
            &[since_ms.unwrap_or(i64::MIN).into(), limit.into()],
        )?;
        Ok(r.iter().map(|r| alert_json(r)).collect())
    }

    pub fn events(&mut self, f: &EventFilter) -> anyhow::Result<Vec<Value>> {
        let r = self.c.query(
            &format!(
                "SELECT {EVENT_COLS} FROM events e WHERE e.at_ms >= ?1 AND e.at_ms <= ?2 \
                 AND (CAST(?3 AS TEXT) IS NULL OR e.camera = ?3) \
                 AND (CAST(?4 AS TEXT) IS NULL OR e.gateway = ?4) \
                 AND (CAST(?5 AS TEXT) IS NULL OR e.state = ?5) \
                 ORDER BY e.at_ms DESC, e.seq DESC LIMIT ?6"
            ),
            &[
                f.since_ms.unwrap_or(i64::MIN).into(),
                f.until_ms.unwrap_or(i64::MAX).into(),
                f.camera.clone().into(),
                f.gateway.clone().into(),
                f.state.clone().into(),
                f.limit.into(),
            ],
        )?;
        Ok(r.iter().map(|r| event_json(r)).collect())
    }

    /// Acknowledges an alert (by its id) for `name`. The first acknowledgement stands.
    /// `None` when no alert has that id.
    pub fn ack(&mut self, id: &str, name: &str, now_ms: i64) -> anyhow::Result<Option<Value>> {
        self.c.exec(
            "UPDATE alerts SET acked_by = ?2, acked_at_ms = ?3 WHERE id = ?1 AND acked_by IS NULL",
            &[id.into(), name.into(), now_ms.into()],
        )?;
        let r = self.c.query(
            &format!("SELECT {ALERT_COLS} FROM alerts WHERE id = ?1 LIMIT 1"),
            &[id.into()],
        )?;
        Ok(r.first().map(|r| alert_json(r)))
    }

    /// The JPEG of an event's still.
    pub fn still(&mut self, event_id: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let r = self.c.query(
            "SELECT file, jpeg FROM stills WHERE event_id = ?1 LIMIT 1",
            &[event_id.into()],
        )?;
        let Some(mut r) = r.into_iter().next() else {
            return Ok(None);
        };
        let blob = r.pop().and_then(V::into_bytes);
        match (r[0].t(), &self.stills_dir, blob) {
            (_, _, Some(b)) => Ok(Some(b)),
            (Some(file), Some(dir), None) => match std::fs::read(dir.join(file)) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("cannot read the still {file}")),
            },
            _ => Ok(None),
        }
    }

    pub fn add_user(
        &mut self,
        name: &str,
        role: &str,
        hash: &str,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        if role != "officer" && role != "admin" {
            bail!("role must be officer or admin");
        }
        let existed = !self
            .c
            .query("SELECT name FROM users WHERE name = ?1", &[name.into()])?
            .is_empty();
        self.c.exec(
            "INSERT INTO users (name, role, hash, created_ms) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name) DO UPDATE SET role = ?2, hash = ?3",
            &[name.into(), role.into(), hash.into(), now_ms.into()],
        )?;
        if existed {
            // A new password ends the user's sessions.
            self.c
                .exec("DELETE FROM sessions WHERE name = ?1", &[name.into()])?;
        }
        Ok(existed)
    }

    pub fn user(&mut self, name: &str) -> anyhow::Result<Option<User>> {
        let r = self.c.query(
            "SELECT name, role, hash FROM users WHERE name = ?1",
            &[name.into()],
        )?;
        Ok(r.first().map(|r| User {
            name: r[0].text(),
            role: r[1].text(),
            hash: r[2].text(),
        }))
    }

    pub fn create_session(
        &mut self,
        token_digest: &str,
        name: &str,
        csrf: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> anyhow::Result<()> {
        self.c.exec(
            "INSERT INTO sessions (token, name, csrf, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            &[token_digest.into(), name.into(), csrf.into(), now_ms.into(), expires_ms.into()],
        )?;
        Ok(())
    }

    pub fn session(&mut self, token_digest: &str, now_ms: i64) -> anyhow::Result<Option<Session>> {
        let r = self.c.query(
            "SELECT s.name, u.role, s.csrf FROM sessions s JOIN users u ON u.name = s.name \
             WHERE s.token = ?1 AND s.expires_ms > ?2",
            &[token_digest.into(), now_ms.into()],
        )?;
        Ok(r.first().map(|r| Session {
            name: r[0].text(),
            role: r[1].text(),
            csrf: r[2].text(),
        }))
    }

    pub fn end_session(&mut self, token_digest: &str) -> anyhow::Result<()> {
        self.c.exec(
            "DELETE FROM sessions WHERE token = ?1",
            &[token_digest.into()],
        )?;
        Ok(())
    }

    pub fn audit(
        &mut self,
        now_ms: i64,
        name: &str,
        action: &str,
        detail: &str,
    ) -> anyhow::Result<()> {
        self.c.exec(
            "INSERT INTO audit (at_ms, name, action, detail) VALUES (?1, ?2, ?3, ?4)",
            &[now_ms.into(), name.into(), action.into(), detail.into()],
        )?;
        Ok(())
    }

    pub fn counts(&mut self) -> anyhow::Result<Counts> {
        let mut c = Counts::default();
        for r in self.c.query(
            "SELECT ward, gateway, online FROM gateways ORDER BY ward, gateway",
            &[],
        )? {
            c.gateways
                .push((r[0].text(), r[1].text(), r[2].i().map(|i| i == 1)));
        }
        for r in self.c.query(
            "SELECT ward, gateway, state, COUNT(*) FROM cameras GROUP BY ward, gateway, state \
             ORDER BY ward, gateway, state",
            &[],
        )? {
            c.camera_states
                .push((r[0].text(), r[1].text(), r[2].text(), r[3].i().unwrap_or(0)));
        }
        for r in self.c.query(
            "SELECT kind, COUNT(*) FROM alerts GROUP BY kind ORDER BY kind",
            &[],
        )? {
            c.alerts.push((r[0].text(), r[1].i().unwrap_or(0)));
        }
        for r in self.c.query(
            "SELECT ward, gateway, COUNT(*) FROM events GROUP BY ward, gateway ORDER BY ward, gateway",
            &[],
        )? {
            c.events.push((r[0].text(), r[1].text(), r[2].i().unwrap_or(0)));
        }
        c.unacked = self
            .c
            .query("SELECT COUNT(*) FROM alerts WHERE acked_by IS NULL", &[])?
            .first()
            .and_then(|r| r[0].i())
            .unwrap_or(0);
        c.stills = self
            .c
            .query("SELECT COUNT(*) FROM stills", &[])?
            .first()
            .and_then(|r| r[0].i())
            .unwrap_or(0);
        Ok(c)
    }

    /// Drops history received before `cutoff_ms` (current camera and gateway state stays),
    /// and expired sessions. Returns the rows removed.
    pub fn prune(&mut self, cutoff_ms: i64, now_ms: i64) -> anyhow::Result<u64> {
        let mut files = Vec::new();
        if self.stills_dir.is_some() {
            for r in self.c.query(
                "SELECT file FROM stills WHERE received_ms < ?1 AND file IS NOT NULL",
                &[cutoff_ms.into()],
            )? {
                files.push(r[0].text());
            }
        }
        let mut n = 0;
        self.c.begin()?;
        for t in [
            "alerts",
            "events",
            "health",
            "statuses",
            "telemetry",
            "unreadable",
            "stills",
        ] {
            n += self.c.exec(
                &format!("DELETE FROM {t} WHERE received_ms < ?1"),
                &[cutoff_ms.into()],
            )?;
        }
        self.c.exec(
            "DELETE FROM sessions WHERE expires_ms <= ?1",
            &[now_ms.into()],
        )?;
        self.c.commit()?;
        if let Some(dir) = &self.stills_dir {
            for f in files {
                let _ = std::fs::remove_file(dir.join(f));
            }
        }
        Ok(n)
    }
}

fn gateway_change(at: &Origin) -> Change {
    Change::Gateway {
        ward: at.ward.clone(),
        gateway: at.gateway.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::rows::classify;
    use super::*;

    fn store(dir: &Path) -> Store {
        Store::open(&Target::Sqlite(dir.join("station.db"))).unwrap()
    }

    fn rows(msgs: &[(&str, &[u8])], now: i64) -> Vec<(Row, i64)> {
        msgs.iter()
            .map(|(t, p)| (classify("camgw", t, p), now))
            .collect()
    }

    const EV: &[u8] = br#"{"id":"e1","seq":1,"ts":"2026-12-02T01:00:00.000Z","clock_synced":true,"kind":"motion","camera":"cam01","source":"ingest","state":"start"}"#;
    const DOWN: &[u8] = br#"{"camera":"cam01","state":"down","problems":["unreachable"],"since":"2026-12-02T01:00:05Z","ts":"2026-12-02T01:00:05.000Z"}"#;
    const UP: &[u8] = br#"{"camera":"cam01","state":"up","problems":[],"since":"2026-12-02T01:00:00Z","ts":"2026-12-02T01:00:00.000Z"}"#;
    const AL: &[u8] = br#"{"id":"a1","seq":2,"ts":"2026-12-02T01:00:05.000Z","clock_synced":true,"kind":"camera_down","camera":"cam01","detail":{"problems":["unreachable"]}}"#;

    #[test]
    fn duplicates_are_recorded_once_and_change_nothing() {
        let d = tempfile::tempdir().unwrap();
        let mut s = store(d.path());
        let batch = rows(
            &[
                ("camgw/w/g/event", EV),
                ("camgw/w/g/alert", AL),
                ("camgw/w/g/camera/cam01/snapshot/e1", b"\xff\xd8jpeg"),
            ],
            1,
        );
        let c = s.record(&batch).unwrap();
        assert_eq!(c.len(), 3, "{c:?}"); // the event, the alert, the still
        let again = s.record(&batch).unwrap();
        assert!(again.is_empty(), "{again:?}");
        let ev = s
            .events(&EventFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0]["snapshot"], "/api/snapshots/e1.jpg");
        assert_eq!(s.alerts(None, 10).unwrap().len(), 1);
        assert_eq!(s.still("e1").unwrap().unwrap(), b"\xff\xd8jpeg");
        assert_eq!(s.still("nope").unwrap(), None);
    }

    #[test]
    fn an_older_health_message_does_not_overwrite_a_newer_one() {
        let d = tempfile::tempdir().unwrap();
        let mut s = store(d.path());
        s.record(&rows(&[("camgw/w/g/camera/cam01/health", DOWN)], 1))
            .unwrap();
        let c = s
            .record(&rows(&[("camgw/w/g/camera/cam01/health", UP)], 2))
            .unwrap();
        assert!(c.iter().all(|c| !matches!(c, Change::Camera(_))), "{c:?}");
        let cams = s.cameras().unwrap();
        assert_eq!(cams[0]["state"], "down");
        assert_eq!(cams[0]["problems"], json!(["unreachable"]));
        s.record(&rows(&[("camgw/w/g/camera/cam01/health", b"")], 3))
            .unwrap();
        assert!(s.cameras().unwrap().is_empty());
    }

    #[test]
    fn acks_sessions_users_and_retention() {
        let d = tempfile::tempdir().unwrap();
        let mut s = store(d.path());
        s.record(&rows(&[("camgw/w/g/alert", AL)], 1_000)).unwrap();
        assert!(!s.add_user("lan", "officer", "h", 0).unwrap());
        assert!(s.add_user("lan", "admin", "h2", 0).unwrap(), "replaced");
        assert_eq!(s.user("lan").unwrap().unwrap().role, "admin");
        assert!(s.add_user("x", "root", "h", 0).is_err());
        let a = s.ack("a1", "lan", 5_000).unwrap().unwrap();
        assert_eq!(a["acked_by"], "lan");
        let a2 = s.ack("a1", "other", 6_000).unwrap().unwrap();
        assert_eq!(a2["acked_by"], "lan", "the first acknowledgement stands");
        assert_eq!(s.ack("zz", "lan", 1).unwrap(), None);
        s.create_session("t", "lan", "c", 0, 100).unwrap();
        assert_eq!(s.session("t", 50).unwrap().unwrap().csrf, "c");
        assert_eq!(s.session("t", 100).unwrap(), None, "expired");
        s.record(&rows(
            &[("camgw/w/g/camera/cam01/snapshot/e1", b"j")],
            1_000,
        ))
        .unwrap();
        let files = || {
            std::fs::read_dir(d.path().join("station.db.stills"))
                .unwrap()
                .count()
        };
        assert_eq!(files(), 1);
        assert!(s.prune(2_000, 2_000).unwrap() >= 2);
        assert!(s.alerts(None, 10).unwrap().is_empty());
        assert_eq!(files(), 0);
    }
}
