//! The supervisor: applies a config change (signed `set_config` or SIGHUP) as a whole by
//! restarting the parts, on a durable trial when the MQTT settings change, and rolls back to
//! the last good config when the new one cannot reach a broker. It is what remote commands
//! act on ([`remote::Control`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::buffer::Buffer;
use crate::bus::Retained;
use crate::clock::Clock;
use crate::config::Config;
use crate::health::health_topic;
use crate::record::AlertKind;
use crate::remote;

use super::parts::{start_parts, Parts, Shared};

/// Where a config change came from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    Command,
    Sighup,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Command => "set_config",
            Source::Sighup => "sighup",
        }
    }
}

/// The supervisor's state.
pub struct Supervisor {
    pub shared: Shared,
    pub parts: Option<Parts>,
    pub config_path: PathBuf,
    /// The text of the config in force (for `get_config`).
    pub config_text: String,
    pub replay: remote::replay::Replay,
    /// Where the update tasks report (see `updates`).
    pub update_events: tokio::sync::mpsc::Sender<super::updates::Event>,
    /// The update being downloaded: its command id, version, and the token that stops it.
    pub update_busy: Option<(String, semver::Version, tokio_util::sync::CancellationToken)>,
}

impl Supervisor {
    pub fn config(&self) -> Arc<Config> {
        self.parts.as_ref().expect("parts running").config.clone()
    }

    /// Applies a validated config as a whole, or nothing of it. Returns a description of the
    /// change, or why it was not applied (after rolling back).
    pub async fn apply(
        &mut self,
        new: Config,
        text: String,
        source: Source,
    ) -> Result<serde_json::Value, String> {
        let old = self.config();
        for (what, a, b) in [
            ("gateway.id", &old.gateway.id, &new.gateway.id),
            ("gateway.ward", &old.gateway.ward, &new.gateway.ward),
        ] {
            if a != b {
                return Err(self
                    .reject(
                        source,
                        vec![format!(
                            "{what}: cannot change while running (change the file and restart)"
                        )],
                    )
                    .await);
            }
        }
        if old.gateway.data_dir != new.gateway.data_dir {
            return Err(self.reject(source, vec!["gateway.data_dir: cannot change while running (change the file and restart)".into()]).await);
        }
        let old_text = std::mem::replace(&mut self.config_text, text.clone());
        let mqtt_changed = old.mqtt != new.mqtt;
        if let Source::Command = source {
            // New MQTT settings are on trial, durably, until they have connected (`trial`).
            let written = if mqtt_changed {
                crate::trial::begin(&self.config_path, &old_text, &text)
            } else {
                crate::trial::replace(&self.config_path, &old_text, &text)
            };
            if let Err(e) = written {
                self.config_text = old_text;
                return Err(format!("cannot write {}: {e}", self.config_path.display()));
            }
        }
        let added: Vec<String> = new
            .cameras
            .iter()
            .filter(|c| old.camera(&c.id).is_none())
            .map(|c| c.id.clone())
            .collect();
        let removed: Vec<String> = old
            .cameras
            .iter()
            .filter(|c| new.camera(&c.id).is_none())
            .map(|c| c.id.clone())
            .collect();
        let changed: Vec<String> = new
            .cameras
            .iter()
            .filter(|c| old.camera(&c.id).is_some_and(|o| o != *c))
            .map(|c| c.id.clone())
            .collect();
        let new = Arc::new(new);
        self.parts.take().expect("parts running").stop().await;
        // Counted after the old uplink stopped: a reconnect of the old settings while they
        // were stopping must not pass for the new ones connecting.
        let connects_before = self.shared.stats.connects.get();
        for id in &removed {
            self.shared.retained.set(health_topic(&old, id), Vec::new());
        }
        let started = start_parts(new.clone(), &self.shared).await;
        let failure = match started {
            Err(e) => Some(format!("{e:#}")),
            Ok(parts) => {
                self.parts = Some(parts);
                if mqtt_changed
                    && !self
                        .wait_connected(connects_before, new.security.rollback_timeout)
                        .await
                {
                    Some(format!(
                        "the new MQTT settings did not reach a broker within {} s",
                        new.security.rollback_timeout.as_secs()
                    ))
                } else {
                    None
                }
            }
        };
        if let Some(why) = failure {
            tracing::error!("config change failed, rolling back: {why}");
            if let Some(p) = self.parts.take() {
                p.stop().await;
            }
            if let Source::Command = source {
                if let Err(e) = crate::trial::abort(&self.config_path, &old_text) {
                    tracing::error!("cannot restore {}: {e}", self.config_path.display());
                }
            }
            self.config_text = old_text;
            match start_parts(old.clone(), &self.shared).await {
                Ok(p) => self.parts = Some(p),
                Err(e) => {
                    // Nothing left to fall back to: let the service manager restart us.
                    tracing::error!("cannot restart with the last good config: {e:#}");
                    std::process::exit(1);
                }
            }
            self.shared
                .alert(
                    AlertKind::ConfigRolledBack,
                    None,
                    serde_json::json!({"source": source.name(), "reason": why}),
                )
                .await;
            return Err(format!("rolled back to the last good config: {why}"));
        }
        if let (Source::Command, true) = (source, mqtt_changed) {
            if let Err(e) = crate::trial::confirm(&self.config_path) {
                tracing::error!("cannot end the config trial: {e}");
            }
        }
        let detail = serde_json::json!({
            "source": source.name(),
            "cameras_added": added,
            "cameras_removed": removed,
            "cameras_changed": changed,
            "mqtt_changed": mqtt_changed,
        });
        tracing::info!(%detail, "config applied");
        self.shared
            .alert(AlertKind::ConfigApplied, None, detail.clone())
            .await;
        Ok(detail)
    }

    pub async fn reject(&self, source: Source, problems: Vec<String>) -> String {
        tracing::warn!(?problems, "config rejected");
        self.shared
            .alert(
                AlertKind::ConfigRejected,
                None,
                serde_json::json!({"source": source.name(), "problems": problems}),
            )
            .await;
        format!("config rejected: {}", problems.join("; "))
    }

    async fn wait_connected(&self, before: u64, timeout: Duration) -> bool {
        self.shared
            .stats
            .connects
            .reaches(before + 1, timeout)
            .await
    }

    /// Validates `text` like `check-config` and applies it.
    pub async fn apply_text(
        &mut self,
        text: String,
        source: Source,
    ) -> Result<serde_json::Value, String> {
        match Config::parse(&text) {
            Ok(c) => self.apply(c, text, source).await,
            Err(inv) => Err(self
                .reject(source, inv.problems.iter().map(|p| p.to_string()).collect())
                .await),
        }
    }
}

impl remote::Control for Supervisor {
    fn config(&self) -> Arc<Config> {
        Supervisor::config(self)
    }
    fn config_text(&self) -> &str {
        &self.config_text
    }
    fn clock(&self) -> Arc<dyn Clock> {
        self.shared.clock.clone()
    }
    fn replay(&mut self) -> &mut remote::replay::Replay {
        &mut self.replay
    }
    fn publish(&self, topic: String, payload: Vec<u8>) {
        self.shared.outbox.push(topic, payload);
    }
    fn buffer(&self) -> &Buffer {
        &self.shared.buffer
    }
    fn retained(&self) -> &Retained {
        &self.shared.retained
    }
    fn probe_rounds(&self) -> &crate::bus::Counter {
        &self.shared.progress
    }
    fn check_now(&self) {
        self.shared.check_now.notify_waiters();
    }
    fn board(&self) -> Option<crate::board::Handle> {
        self.parts.as_ref().and_then(|p| p.board.clone())
    }
    async fn refuse_config(&mut self, problems: Vec<String>) -> String {
        self.reject(Source::Command, problems).await
    }
    async fn apply_config(&mut self, text: String) -> Result<serde_json::Value, String> {
        self.apply_text(text, Source::Command).await
    }
    async fn update(&mut self, id: &str, command: &serde_json::Value) -> Result<(), String> {
        let config = self.config();
        let stop = tokio_util::sync::CancellationToken::new();
        match super::updates::begin(
            &self.shared,
            &config,
            self.update_busy.is_some(),
            id,
            command,
            self.update_events.clone(),
            stop.clone(),
        ) {
            Ok(version) => {
                tracing::info!(%version, "update accepted: downloading");
                self.update_busy = Some((id.to_string(), version.clone(), stop));
                Ok(())
            }
            Err((error, reason, version)) => {
                super::updates::refused(&self.shared, reason, version.as_ref(), &error).await;
                Err(format!("{error} ({reason})"))
            }
        }
    }
    fn doctor(&self, id: String) {
        let (path, clock, outbox) = (
            self.config_path.clone(),
            self.shared.clock.clone(),
            self.shared.outbox.clone(),
        );
        let topic = self.config().topic(crate::topics::Leaf::CmdResult);
        // Its own thread and runtime: the checklist probes every camera and the broker, and
        // must not hold up the agent's workers.
        let spawned = std::thread::Builder::new()
            .name("doctor".into())
            .spawn(move || {
                let result = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        let report = rt.block_on(crate::doctor::run(&path, crate::doctor::Lang::En, clock));
                        serde_json::json!({"id": id, "op": "doctor", "ok": true, "doctor": report})
                    }
                    Err(e) => serde_json::json!({"id": id, "op": "doctor", "ok": false, "error": format!("cannot start the checklist: {e}")}),
                };
                outbox.push(topic, result.to_string().into_bytes());
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the doctor: {e}");
        }
    }
}
