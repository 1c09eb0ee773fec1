//! Remote configuration and commands over MQTT: verify the signed envelope (pure, in
//! [`envelope`]), refuse replays durably ([`replay`]), run the op, answer on `T/cmd/result`
//! with `{"id","op","ok",…}` (and `"error"` saying why when not ok). A refused command
//! changes nothing.
//!
//! Ops: `get_config` (passwords redacted), `set_config` (`config`: TOML text; validated like
//! `check-config`, applied as a whole or rolled back), `check_now` (probe every camera now and
//! return their health), `reboot_camera` (`camera`: a power-cycle through the camera's
//! board relay when it has one, otherwise ONVIF SystemReboot), `buffer_stats`, `get_health`,
//! `update` (`url`, `manifest`: its result comes when the download is verified and installed,
//! or refused), `doctor` (the checklist, run on the box; its result when it is done),
//! `log_tail` (`lines`: the end of the agent's own log).

pub mod envelope;
pub mod replay;

use std::time::Duration;

use serde_json::{json, Value};

use std::sync::Arc;

use crate::buffer::Buffer;
use crate::bus::Retained;
use crate::clock::Clock;
use crate::config::Config;
use crate::health::health_topic;
use crate::proto::onvif::device;

/// The config text with every `password` value replaced by `"***"`.
pub fn redact(text: &str) -> String {
    fn walk(v: &mut toml::Value) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t.iter_mut() {
                    if k == "password" {
                        *v = toml::Value::String("***".into());
                    } else if let toml::Value::String(s) = v {
                        *s = crate::config::redact_url(s);
                    } else {
                        walk(v);
                    }
                }
            }
            toml::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    match text.parse::<toml::Table>() {
        Ok(t) => {
            let mut v = toml::Value::Table(t);
            walk(&mut v);
            toml::to_string(&v).unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

/// Remote management must survive a `set_config`: the new config keeps at least one command
/// key, and keeps the key that signed this command unless the command says it rotates keys
/// (`"rotate_keys": true`). A config that does not parse is left to the validator.
pub fn keys_kept(text: &str, signer: &[u8; 32], rotate: bool) -> Result<(), String> {
    let Ok(new) = crate::config::Config::parse(text) else {
        return Ok(());
    };
    let keys = &new.security.command_keys;
    if keys.is_empty() {
        return Err("security.command_keys: the new config has no command key: the gateway could never be managed remotely again".into());
    }
    if !rotate && !keys.contains(signer) {
        return Err("security.command_keys: the new config drops the key that signed this command (say \"rotate_keys\": true in the command to rotate keys)".into());
    }
    Ok(())
}

/// A command key must not be able to choose who signs software: `set_config` keeps
/// `security.release_keys` as they are (they change only in the file on the box, or with a
/// new package). A config that does not parse is left to the validator.
pub fn release_keys_kept(text: &str, current: &[[u8; 32]]) -> Result<(), String> {
    let Ok(new) = crate::config::Config::parse(text) else {
        return Ok(());
    };
    if new.security.release_keys != current {
        return Err("security.release_keys: cannot be changed remotely (a command key must not choose who signs software; change the file on the box)".into());
    }
    Ok(())
}

/// What a command acts on. The agent's supervisor implements it, so this module never names
/// the agent (the agent depends on remote, not the reverse).
#[allow(async_fn_in_trait)] // implemented once, by the agent, and awaited in its own task
pub trait Control {
    /// The config in force.
    fn config(&self) -> Arc<Config>;
    /// Its text, for `get_config` (redacted before it leaves).
    fn config_text(&self) -> &str;
    fn clock(&self) -> Arc<dyn Clock>;
    /// The durable memory of accepted command ids.
    fn replay(&mut self) -> &mut replay::Replay;
    /// Publishes once, QoS 1, not buffered (command results).
    fn publish(&self, topic: String, payload: Vec<u8>);
    fn buffer(&self) -> &Buffer;
    /// Latest camera health.
    fn retained(&self) -> &Retained;
    /// Probe rounds completed so far, all cameras together.
    fn probe_rounds(&self) -> &crate::bus::Counter;
    /// Wakes every camera's probe loop at once.
    fn check_now(&self);
    /// The board task, when one runs (relays).
    fn board(&self) -> Option<crate::board::Handle>;
    /// Refuses a config change for `problems`, reported like any refused change.
    async fn refuse_config(&mut self, problems: Vec<String>) -> String;
    /// Applies a config text as a whole, or nothing of it.
    async fn apply_config(&mut self, text: String) -> Result<Value, String>;
    /// Checks an `update` and starts its download: `Ok` means its result comes later (when
    /// the download is verified and installed, or refused); `Err` refuses it now.
    async fn update(&mut self, id: &str, command: &Value) -> Result<(), String>;
    /// Runs the doctor's checklist on the box; its result is published when it is done.
    fn doctor(&self, id: String);
}

/// The limiter for refused-command warnings (anyone on the broker can cause them).
fn refusals() -> &'static crate::logs::RateLimit {
    static R: std::sync::OnceLock<crate::logs::RateLimit> = std::sync::OnceLock::new();
    R.get_or_init(|| crate::logs::RateLimit::new(Duration::from_secs(10)))
}

/// At most 5 results a second (bursts of 20) for commands refused before they verified.
fn refusal_answers() -> &'static crate::logs::Bucket {
    static B: std::sync::OnceLock<crate::logs::Bucket> = std::sync::OnceLock::new();
    B.get_or_init(|| crate::logs::Bucket::new(5.0, 20.0))
}

fn publish_result(sup: &impl Control, result: Value) {
    let topic = sup.config().topic(crate::topics::Leaf::CmdResult);
    sup.publish(topic, result.to_string().into_bytes());
}

/// Handles one `T/cmd` payload.
pub async fn handle(sup: &mut impl Control, payload: &[u8]) {
    let config = sup.config();
    let now = sup.clock().now_ms();
    let verified = envelope::verify(
        payload,
        &config.security.command_keys,
        &config.gateway.id,
        &config.gateway.ward,
        now,
        config.security.max_clock_skew.as_millis() as i64,
    );
    let v = match verified {
        Ok(v) if sup.replay().contains(&v.id, now) => {
            let why = envelope::Refusal::Replayed(v.id.clone());
            crate::warn_limited!(refusals(), "replayed", id = %v.id, "command refused: {why}");
            publish_result(
                sup,
                json!({"id": v.id, "ok": false, "error": why.to_string()}),
            );
            return;
        }
        Ok(v) => v,
        Err((id, why)) => {
            let mut error = why.to_string();
            if !sup.clock().synced()
                && matches!(
                    why,
                    envelope::Refusal::Expired(_) | envelope::Refusal::FromTheFuture(..)
                )
            {
                error.push_str(" (note: the gateway clock is not NTP-synchronised)");
            }
            // The error may quote the payload (a serde message): clipped, and at most one
            // line per period, whatever the rate of garbage on T/cmd.
            let error = crate::logs::clip(&error);
            crate::warn_limited!(refusals(), "refused", ?id, "command refused: {error}");
            // Answers to refused commands are rate-limited too: a flood of garbage on T/cmd
            // must not become a flood of results competing with events for the uplink.
            if refusal_answers().take(std::time::Instant::now()) {
                publish_result(sup, json!({"id": id, "ok": false, "error": error}));
            }
            return;
        }
    };
    // Remember the id durably before acting, so a crash cannot reopen it for a replay.
    if let Err(e) = sup.replay().insert(&v.id, v.expires_ms, now) {
        tracing::error!("cannot record the command id: {e}");
        publish_result(
            sup,
            json!({"id": v.id, "ok": false, "error": format!("cannot record the command id durably: {e}")}),
        );
        return;
    }
    let op = v.command["op"].as_str().unwrap_or("").to_string();
    tracing::info!(id = %v.id, %op, "command accepted");
    let outcome: Result<Value, String> = match op.as_str() {
        "get_config" => Ok(json!({"config": redact(sup.config_text())})),
        "set_config" => match v.command["config"].as_str() {
            Some(text) => match keys_kept(text, &v.key, v.command["rotate_keys"] == json!(true))
                .and_then(|()| release_keys_kept(text, &config.security.release_keys))
            {
                Err(why) => Err(sup.refuse_config(vec![why]).await),
                Ok(()) => sup.apply_config(text.to_string()).await.map(|d| json!({"applied": d})),
            },
            None => Err("set_config needs \"config\": the TOML text".into()),
        },
        "check_now" => Ok(check_now(sup).await),
        "get_health" => Ok(json!({"health": health_map(sup)})),
        "buffer_stats" => Ok(json!({"buffer": sup.buffer().stats(), "inflight": sup.buffer().inflight()})),
        "reboot_camera" => reboot_camera(sup, v.command["camera"].as_str()).await,
        "update" => match sup.update(&v.id, &v.command).await {
            Ok(()) => return,
            Err(e) => Err(e),
        },
        "doctor" => {
            sup.doctor(v.id.clone());
            return;
        }
        "log_tail" => log_tail(&v.command),
        other => Err(format!("unknown op \"{other}\" (known: get_config, set_config, check_now, get_health, buffer_stats, reboot_camera, update, doctor, log_tail)")),
    };
    let mut result = json!({"id": v.id, "op": op});
    match outcome {
        Ok(Value::Object(m)) => {
            result["ok"] = true.into();
            for (k, val) in m {
                result[k] = val;
            }
        }
        Ok(other) => {
            result["ok"] = true.into();
            result["result"] = other;
        }
        Err(e) => {
            result["ok"] = false.into();
            result["error"] = e.into();
        }
    }
    publish_result(sup, result);
}

/// `log_tail`: the last `lines` (1..=1000, default 100) lines of the agent's own log, from
/// its bounded in-memory ring (credentials in URLs already masked).
fn log_tail(command: &Value) -> Result<Value, String> {
    let lines = match &command["lines"] {
        Value::Null => 100,
        v => v
            .as_u64()
            .filter(|n| (1..=1000).contains(n))
            .ok_or("log_tail: \"lines\" must be a whole number from 1 to 1000")?,
    };
    let tail = crate::logs::ring().tail(lines as usize);
    Ok(json!({"lines": tail, "kept": crate::logs::RING_LINES}))
}

fn health_map(sup: &impl Control) -> Value {
    let config = sup.config();
    let mut m = serde_json::Map::new();
    for c in &config.cameras {
        let v = sup
            .retained()
            .get(&health_topic(&config, &c.id))
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(
                || json!({"camera": c.id, "state": if c.probe { "unknown" } else { "not_probed" }}),
            );
        m.insert(c.id.clone(), v);
    }
    Value::Object(m)
}

async fn check_now(sup: &impl Control) -> Value {
    let config = sup.config();
    let probed = config.cameras.iter().filter(|c| c.probe).count() as u64;
    let before = sup.probe_rounds().get();
    sup.check_now();
    // Every probe is bounded by the timeout; rounds run max_concurrent at a time.
    let waves = probed.div_ceil(config.health.max_concurrent as u64).max(1) as u32;
    let bound = config.health.timeout * 4 * waves + Duration::from_secs(1);
    sup.probe_rounds().reaches(before + probed, bound).await;
    json!({"probed": probed, "health": health_map(sup)})
}

async fn reboot_camera(sup: &impl Control, camera: Option<&str>) -> Result<Value, String> {
    let config = sup.config();
    let id = camera.ok_or("reboot_camera needs \"camera\"")?;
    let cam = config
        .camera(id)
        .ok_or_else(|| format!("unknown camera \"{id}\""))?;
    if let Some(relay) = &cam.relay {
        // A relay cuts the power: it works even when the camera's firmware is hung.
        let board = sup
            .board()
            .ok_or_else(|| format!("camera \"{id}\" is on {relay}, but the board is not running (see the board_fault alert)"))?;
        let off = board.power_cycle(relay).await?;
        return Ok(
            json!({"camera": id, "method": "relay", "relay": relay, "off_s": off.as_secs()}),
        );
    }
    let url = cam.onvif_url.clone().ok_or_else(|| {
        format!("camera \"{id}\" has no relay on this board and no onvif_url to reboot it through")
    })?;
    let creds = cam
        .creds()
        .ok_or_else(|| format!("camera \"{id}\" has no username for ONVIF SystemReboot"))?;
    // The camera's clock may be off: measure it, as the health probe does.
    let clock = sup.clock();
    let offset = device::clock_offset(&url, config.health.timeout, move || clock.now_ms())
        .await
        .unwrap_or(0);
    let created = crate::proto::onvif::created(sup.clock().now_ms(), offset);
    let message = device::reboot(&url, creds, &created, config.health.timeout * 2).await?;
    Ok(json!({"camera": id, "method": "onvif", "message": message}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_every_password_and_keeps_the_rest() {
        let text = "[gateway]\nid = \"g\"\n[mqtt]\nurl = \"mqtt://h\"\nusername = \"u\"\npassword = \"mqtt-pw\"\n[[camera]]\nid = \"c\"\npassword = \"cam-pw\"\n";
        let r = redact(text);
        assert!(!r.contains("mqtt-pw") && !r.contains("cam-pw"), "{r}");
        assert_eq!(r.matches("***").count(), 2);
        assert!(r.contains("username = \"u\""));
    }

    #[test]
    fn set_config_cannot_change_the_release_keys() {
        use base64::Engine as _;
        let b64 = |k: &[u8; 32]| base64::engine::general_purpose::STANDARD.encode(k);
        let with = |keys: &[[u8; 32]]| {
            let list: Vec<String> = keys.iter().map(|k| format!("\"{}\"", b64(k))).collect();
            format!(
                "[gateway]\nid = \"g\"\nward = \"w\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[security]\ncommand_keys = [\"{}\"]\nrelease_keys = [{}]\n",
                b64(&[1u8; 32]),
                list.join(", ")
            )
        };
        let (a, b) = ([5u8; 32], [6u8; 32]);
        assert_eq!(release_keys_kept(&with(&[a]), &[a]), Ok(()));
        assert!(release_keys_kept(&with(&[a, b]), &[a])
            .unwrap_err()
            .contains("remotely"));
        assert!(release_keys_kept(&with(&[]), &[a]).is_err(), "nor removed");
        assert!(release_keys_kept(&with(&[b]), &[]).is_err(), "nor added");
    }

    #[test]
    fn a_new_config_keeps_a_command_key_and_the_signers_unless_it_rotates() {
        use base64::Engine as _;
        let b64 = |k: &[u8; 32]| base64::engine::general_purpose::STANDARD.encode(k);
        let (signer, other) = ([7u8; 32], [9u8; 32]);
        let with = |keys: &[[u8; 32]]| {
            let list: Vec<String> = keys.iter().map(|k| format!("\"{}\"", b64(k))).collect();
            format!(
                "[gateway]\nid = \"g\"\nward = \"w\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[security]\ncommand_keys = [{}]\n",
                list.join(", ")
            )
        };
        assert_eq!(keys_kept(&with(&[signer]), &signer, false), Ok(()));
        assert_eq!(keys_kept(&with(&[other, signer]), &signer, false), Ok(()));
        let e = keys_kept(&with(&[]), &signer, true).unwrap_err();
        assert!(e.contains("no command key"), "{e}");
        let e = keys_kept(&with(&[other]), &signer, false).unwrap_err();
        assert!(e.contains("drops the key that signed"), "{e}");
        assert_eq!(
            keys_kept(&with(&[other]), &signer, true),
            Ok(()),
            "a rotation that says so"
        );
        assert_eq!(
            keys_kept("not toml [", &signer, false),
            Ok(()),
            "left to the validator"
        );
    }
}
