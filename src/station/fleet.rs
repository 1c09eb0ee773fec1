//! `camgw fleet update`: rolls a signed release out to a ward's gateways in rings. Each ring of
//! N gateways gets the signed `update` command; the ring is done when every gateway in it has
//! said `update_applied` for the version (or failed: a refused command, `update_failed`, or no
//! confirmation within the wait). The first ring with a failure stops the rollout: the rest is
//! not tried. The decisions are pure ([`Rollout`]); the MQTT driver around them is thin.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde::Serialize;

use crate::remote::envelope;
use crate::topics::{self, Leaf};

/// Where one gateway stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not sent yet (or never: an earlier ring failed).
    Waiting,
    /// Already runs the release's version or a newer one.
    Current,
    /// Runs a version still on trial: not sent; run the rollout again once it is confirmed.
    OnTrial,
    /// Sent; waiting for its result and its trial.
    Sent,
    /// Verified and installed; its trial runs.
    Installing,
    Applied,
    Failed,
    /// The rollout stopped before this gateway's ring.
    NotTried,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub gateway: String,
    pub ring: usize,
    pub from: Option<String>,
    pub state: State,
    /// Why, for a failure; the version otherwise.
    pub detail: String,
    /// Seconds from its command to its outcome.
    pub seconds: Option<f64>,
}

/// The rollout's decisions, pure.
#[derive(Debug)]
pub struct Rollout {
    pub version: semver::Version,
    pub rows: Vec<Row>,
    pub ring_size: usize,
}

impl Rollout {
    /// Gateways in the order given, in rings of `ring_size`; `versions` is what each runs
    /// (from its retained status), when known, and `trials` those whose version is on trial.
    pub fn new(
        version: semver::Version,
        gateways: &[String],
        versions: &BTreeMap<String, String>,
        trials: &std::collections::BTreeSet<String>,
        ring_size: usize,
    ) -> Rollout {
        let ring_size = ring_size.max(1);
        let mut rows = Vec::new();
        let mut pending = 0;
        for g in gateways {
            let from = versions.get(g).cloned();
            let current = from
                .as_deref()
                .and_then(|v| semver::Version::parse(v).ok())
                .is_some_and(|v| v.cmp_precedence(&version) != std::cmp::Ordering::Less);
            let on_trial = trials.contains(g);
            let skip = current || on_trial;
            let ring = if skip { 0 } else { pending / ring_size + 1 };
            if !skip {
                pending += 1;
            }
            let (state, detail) = match (on_trial, current) {
                (true, _) => (
                    State::OnTrial,
                    "its version is on trial: run again once it is confirmed".into(),
                ),
                (false, true) => (State::Current, "already current".into()),
                (false, false) => (State::Waiting, String::new()),
            };
            rows.push(Row {
                gateway: g.clone(),
                ring,
                from,
                state,
                detail,
                seconds: None,
            });
        }
        Rollout {
            version,
            rows,
            ring_size,
        }
    }

    pub fn rings(&self) -> usize {
        self.rows.iter().map(|r| r.ring).max().unwrap_or(0)
    }

    pub fn ring(&self, n: usize) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| r.ring == n && r.state == State::Waiting)
            .map(|r| r.gateway.clone())
            .collect()
    }

    fn row(&mut self, g: &str) -> Option<&mut Row> {
        self.rows.iter_mut().find(|r| r.gateway == g)
    }

    pub fn sent(&mut self, g: &str) {
        if let Some(r) = self.row(g) {
            r.state = State::Sent;
        }
    }

    /// The command's result; `ok` false fails the gateway with its error.
    pub fn result(&mut self, g: &str, ok: bool, error: &str, secs: f64) {
        if let Some(r) = self.row(g).filter(|r| r.state == State::Sent) {
            if ok {
                r.state = State::Installing;
            } else {
                r.state = State::Failed;
                r.detail = error.to_string();
                r.seconds = Some(secs);
            }
        }
    }

    /// An alert from a gateway: `update_applied` to this version, or `update_failed` of it.
    pub fn alert(&mut self, g: &str, kind: &str, detail: &serde_json::Value, secs: f64) {
        use crate::record::AlertKind;
        let v = self.version.to_string();
        let Some(r) = self
            .row(g)
            .filter(|r| matches!(r.state, State::Sent | State::Installing))
        else {
            return;
        };
        match AlertKind::parse(kind) {
            Some(AlertKind::UpdateApplied) if detail["to"] == v.as_str() => {
                r.state = State::Applied;
                r.detail = v;
                r.seconds = Some(secs);
            }
            Some(AlertKind::UpdateFailed) if detail["version"] == v.as_str() => {
                r.state = State::Failed;
                r.detail = format!(
                    "{}: {}",
                    detail["reason"].as_str().unwrap_or("?"),
                    detail["why"]
                        .as_str()
                        .or(detail["error"].as_str())
                        .unwrap_or("")
                );
                r.seconds = Some(secs);
            }
            _ => {}
        }
    }

    /// Whether ring `n` has finished (every gateway in it applied or failed).
    pub fn ring_done(&self, n: usize) -> bool {
        self.rows.iter().filter(|r| r.ring == n).all(|r| {
            matches!(
                r.state,
                State::Applied | State::Failed | State::Current | State::OnTrial
            )
        })
    }

    /// The wait ran out: whoever in ring `n` has not finished failed.
    pub fn ring_timed_out(&mut self, n: usize, wait: Duration) {
        for r in self.rows.iter_mut().filter(|r| r.ring == n) {
            if matches!(r.state, State::Sent | State::Installing) {
                let was = if r.state == State::Sent {
                    "no result"
                } else {
                    "installed, but not confirmed"
                };
                r.state = State::Failed;
                r.detail = format!("{was} within {} s", wait.as_secs());
                r.seconds = Some(wait.as_secs_f64());
            }
        }
    }

    pub fn ring_failed(&self, n: usize) -> bool {
        self.rows
            .iter()
            .any(|r| r.ring == n && r.state == State::Failed)
    }

    /// Stops the rollout: every gateway still waiting is not tried.
    pub fn stop(&mut self) {
        for r in self.rows.iter_mut().filter(|r| r.state == State::Waiting) {
            r.state = State::NotTried;
            r.detail = "an earlier ring failed".into();
        }
    }

    pub fn ok(&self) -> bool {
        self.rows
            .iter()
            .all(|r| matches!(r.state, State::Applied | State::Current))
    }

    /// The table for a terminal.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<24} {:>4} {:<10} {:<12} {:>7}  detail\n",
            "gateway", "ring", "from", "state", "seconds"
        );
        for r in &self.rows {
            let state = serde_json::to_value(&r.state).unwrap();
            out.push_str(&format!(
                "{:<24} {:>4} {:<10} {:<12} {:>7}  {}\n",
                crate::logs::clip_to(&r.gateway, 24),
                r.ring,
                r.from.as_deref().unwrap_or("?"),
                state.as_str().unwrap_or(""),
                r.seconds.map(|s| format!("{s:.1}")).unwrap_or_default(),
                r.detail
            ));
        }
        out
    }
}

pub struct Args<'a> {
    pub key: &'a std::path::Path,
    pub mqtt: &'a str,
    pub ward: &'a str,
    pub topic_prefix: &'a str,
    pub manifest: &'a std::path::Path,
    pub url: &'a str,
    /// None: every gateway of the ward with a retained status.
    pub gateways: Option<Vec<String>>,
    pub ring: usize,
    /// Per ring: the longest wait for every gateway's outcome.
    pub wait: Duration,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub ca_file: Option<&'a std::path::Path>,
}

/// Runs the rollout; returns it finished (every row decided).
pub async fn update(a: Args<'_>) -> anyhow::Result<Rollout> {
    let key = super::load_key(a.key)?;
    let text = std::fs::read(a.manifest)
        .with_context(|| format!("cannot read {}", a.manifest.display()))?;
    let manifest: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not JSON", a.manifest.display()))?;
    let m = crate::release::Manifest::parse(&manifest)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.manifest.display()))?;
    let id = crate::record::format_id(crate::record::new_id());
    let o = super::options(
        a.mqtt,
        &format!("camgw-fleet-{}", &id[..8]),
        a.username,
        a.password,
        a.ca_file,
    )?;
    // Room for a whole ring's commands: publish() waits for room, and nothing polls the
    // event loop while a ring is being sent.
    let (client, mut el) = AsyncClient::new(o, a.ring.max(1) + 64);
    let ward_root = format!("{}/{}", a.topic_prefix, a.ward);
    for leaf in ["status", "alert", "cmd/result"] {
        client
            .subscribe(format!("{ward_root}/+/{leaf}"), QoS::AtLeastOnce)
            .await?;
    }
    // The retained statuses say who is there and what each runs.
    let mut versions: BTreeMap<String, String> = BTreeMap::new();
    let mut trials = std::collections::BTreeSet::new();
    let mut online: Vec<String> = Vec::new();
    let mut subacks = 0;
    let settle = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut quiet_until = None;
    loop {
        let until = quiet_until.unwrap_or(settle).min(settle);
        let ev = match tokio::time::timeout_at(until, el.poll()).await {
            Err(_) => break,
            Ok(Err(e)) => bail!("MQTT connection to {} failed: {e}", a.mqtt),
            Ok(Ok(ev)) => ev,
        };
        match ev {
            Event::Incoming(Packet::SubAck(_)) => {
                subacks += 1;
                if subacks == 3 {
                    // Retained messages follow the SUBACK at once.
                    quiet_until = Some(tokio::time::Instant::now() + Duration::from_millis(700));
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                if let Some((_, gw, Leaf::Status)) = topics::parse(a.topic_prefix, &p.topic) {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
                        if v["online"] == true {
                            if let Some(ver) = v["version"].as_str() {
                                versions.insert(gw.to_string(), ver.to_string());
                            }
                            if v["software"]["trial"] == true {
                                trials.insert(gw.to_string());
                            } else {
                                trials.remove(gw);
                            }
                            if !online.iter().any(|g| g == gw) {
                                online.push(gw.to_string());
                            }
                        }
                    }
                }
                if subacks >= 3 {
                    quiet_until = Some(tokio::time::Instant::now() + Duration::from_millis(700));
                }
            }
            _ => {}
        }
    }
    let gateways = match a.gateways {
        Some(g) => g,
        None => {
            online.sort();
            online
        }
    };
    if gateways.is_empty() {
        bail!(
            "no gateway to update: none named with --gateways, and none of ward {} has an online status",
            a.ward
        );
    }
    let mut r = Rollout::new(m.version.clone(), &gateways, &versions, &trials, a.ring);
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    for n in 1..=r.rings() {
        let ring = r.ring(n);
        let started = tokio::time::Instant::now();
        for g in &ring {
            let cid = crate::record::format_id(crate::record::new_id());
            let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
            let signed = envelope::new_signed(
                &cid,
                g,
                a.ward,
                now,
                a.wait.as_millis() as i64 + 60_000,
                serde_json::json!({"op": "update", "url": a.url, "manifest": manifest}),
            );
            let root = topics::root(a.topic_prefix, a.ward, g);
            client
                .publish(
                    topics::topic(&root, Leaf::Cmd),
                    QoS::AtLeastOnce,
                    false,
                    envelope::sign(&key, &signed),
                )
                .await?;
            ids.insert(cid, g.clone());
            r.sent(g);
        }
        let deadline = started + a.wait;
        while !r.ring_done(n) {
            let ev = match tokio::time::timeout_at(deadline, el.poll()).await {
                Err(_) => {
                    r.ring_timed_out(n, a.wait);
                    break;
                }
                // A lost connection is retried by the next poll (rumqttc reconnects).
                Ok(Err(e)) => {
                    tracing::warn!("MQTT: {e}; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Ok(Ok(ev)) => ev,
            };
            let Event::Incoming(Packet::Publish(p)) = ev else {
                continue;
            };
            let secs = started.elapsed().as_secs_f64();
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                continue;
            };
            match topics::parse(a.topic_prefix, &p.topic) {
                Some((_, _, Leaf::CmdResult)) => {
                    if let Some(g) = v["id"].as_str().and_then(|i| ids.get(i)) {
                        r.result(g, v["ok"] == true, v["error"].as_str().unwrap_or(""), secs);
                    }
                }
                Some((_, gw, Leaf::Alert)) => {
                    r.alert(gw, v["kind"].as_str().unwrap_or(""), &v["detail"], secs)
                }
                _ => {}
            }
        }
        if r.ring_failed(n) {
            r.stop();
            break;
        }
    }
    let _ = client.disconnect().await;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    #[test]
    fn rings_skip_current_gateways_and_a_failed_ring_stops_the_rest() {
        let gws: Vec<String> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut versions = BTreeMap::new();
        versions.insert("b".to_string(), "2.0.0".to_string());
        versions.insert("a".to_string(), "1.0.0".to_string());
        let mut trials = std::collections::BTreeSet::new();
        trials.insert("e".to_string());
        versions.insert("e".to_string(), "2.0.0".to_string());
        let mut r = Rollout::new(v("2.0.0"), &gws, &versions, &trials, 2);
        assert_eq!(r.rings(), 2);
        assert_eq!(r.ring(1), ["a", "c"]);
        assert_eq!(
            r.ring(2),
            ["d"],
            "e runs 2.0.0 on trial: not current, not sent"
        );
        r.sent("a");
        r.sent("c");
        r.result("a", true, "", 1.0);
        assert!(!r.ring_done(1));
        r.alert(
            "a",
            "update_applied",
            &serde_json::json!({"to": "2.0.0"}),
            3.0,
        );
        // An alert about another version is not this rollout's.
        r.alert(
            "c",
            "update_failed",
            &serde_json::json!({"version": "1.5.0"}),
            3.0,
        );
        assert!(!r.ring_done(1));
        r.alert(
            "c",
            "update_failed",
            &serde_json::json!({"version": "2.0.0", "reason": "trial_failed", "why": "exited"}),
            9.0,
        );
        assert!(r.ring_done(1) && r.ring_failed(1));
        r.stop();
        let states: Vec<&State> = r.rows.iter().map(|r| &r.state).collect();
        assert_eq!(
            states,
            [
                &State::Applied,
                &State::Current,
                &State::Failed,
                &State::NotTried,
                &State::OnTrial
            ]
        );
        assert!(!r.ok());
        let t = r.table();
        assert!(
            t.contains("trial_failed: exited") && t.contains("not_tried"),
            "{t}"
        );
    }

    #[test]
    fn a_silent_gateway_fails_its_ring_when_the_wait_runs_out() {
        let gws = vec!["a".to_string(), "b".to_string()];
        let mut r = Rollout::new(v("2.0.0"), &gws, &BTreeMap::new(), &Default::default(), 5);
        r.sent("a");
        r.sent("b");
        r.result("a", true, "", 0.5);
        r.result("b", false, "bad_signature", 0.5);
        r.ring_timed_out(1, Duration::from_secs(30));
        assert_eq!(r.rows[0].state, State::Failed);
        assert!(r.rows[0].detail.contains("not confirmed within 30 s"));
        assert_eq!(r.rows[1].detail, "bad_signature");
    }
}
