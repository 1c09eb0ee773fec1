//! The agent's side of an update (issue 16): the `update` command (checks, then the download
//! in its own task, then the install), the trial of a version just installed (confirmed once
//! it has connected and finished one health round, ended by `security.update_confirm_s`),
//! and the `update_applied` / `update_failed` reports, published once each.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::record::AlertKind;
use crate::release::Manifest;
use crate::update::{download, Local};
use crate::upgrade::Report;

use super::parts::Shared;

/// What the update tasks tell the supervisor's loop.
#[derive(Debug)]
pub enum Event {
    /// A download finished: installed (hand over to the launcher) or refused.
    Done {
        id: String,
        version: semver::Version,
        outcome: Result<Value, (String, &'static str)>,
    },
    /// The trial ran out without confirming: hand over to the launcher.
    TrialEnded,
    /// The trial confirmed this version: publish `update_applied`.
    Confirmed,
}

/// Publishes an update's result (and `update_failed` when it failed). Returns whether it was
/// installed (the agent then hands over, unless it is stopping).
pub async fn answer(
    shared: &Shared,
    config: &crate::config::Config,
    id: &str,
    version: &semver::Version,
    outcome: Result<Value, (String, &'static str)>,
) -> bool {
    let topic = config.topic(crate::topics::Leaf::CmdResult);
    let mut result = json!({"id": id, "op": "update"});
    let installed = match outcome {
        Ok(detail) => {
            result["ok"] = true.into();
            for (k, v) in detail.as_object().into_iter().flatten() {
                result[k] = v.clone();
            }
            true
        }
        Err((error, reason)) => {
            refused(shared, reason, Some(version), &error).await;
            result["ok"] = false.into();
            result["error"] = format!("{error} ({reason})").into();
            false
        }
    };
    shared.outbox.push(topic, result.to_string().into_bytes());
    installed
}

/// Raises `update_failed` for a refusal. The reason may be a full disk, which refuses the
/// alert too: it is then tried again every 2 s for 10 minutes (the command's result has
/// already said why).
pub async fn refused(
    shared: &Shared,
    reason: &str,
    version: Option<&semver::Version>,
    error: &str,
) {
    tracing::warn!(reason, "update refused: {error}");
    let detail =
        json!({"reason": reason, "version": version.map(|v| v.to_string()), "error": error});
    let rec = crate::record::NewRecord::stamped(
        shared.clock.as_ref(),
        crate::record::Body::alert(AlertKind::UpdateFailed, None, detail),
    );
    if shared.buffer.append(rec.clone()).await.is_ok() {
        return;
    }
    tracing::warn!("cannot record the update_failed alert now; trying again");
    let buffer = shared.buffer.clone();
    tokio::spawn(async move {
        for _ in 0..300 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            match buffer.append(rec.clone()).await {
                Ok(_) => return,
                Err(crate::buffer::AppendError::Closed) => return,
                Err(_) => {}
            }
        }
        tracing::error!("gave up recording the update_failed alert");
    });
}

/// Checks an `update` command and starts its download. `Err((error, reason))` refuses it at
/// once (nothing downloaded, nothing changed).
pub fn begin(
    shared: &Shared,
    config: &crate::config::Config,
    busy: bool,
    id: &str,
    command: &Value,
    events: mpsc::Sender<Event>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<semver::Version, (String, &'static str, Option<semver::Version>)> {
    let Some(local) = shared.updates.clone() else {
        return Err((
            "updates need `camgw run` (this agent is embedded)".into(),
            "busy",
            None,
        ));
    };
    let m = Manifest::check(
        &command["manifest"],
        &config.security.release_keys,
        &local.own,
        crate::release::TARGET,
    )
    .map_err(|r| (r.to_string(), r.reason(), None))?;
    let v = Some(m.version.clone());
    if busy {
        return Err(("an update is already being downloaded".into(), "busy", v));
    }
    if local.on_trial() {
        return Err((
            format!(
                "this version ({}) is on trial: update once it is confirmed",
                local.own
            ),
            "busy",
            v,
        ));
    }
    let url = command["url"]
        .as_str()
        .ok_or("update needs \"url\"")
        .and_then(|u| crate::proto::http::Url::parse(u).map_err(|_| "\"url\" is not a URL"))
        .map_err(|e| (e.to_string(), "bad_url", v.clone()))?;
    if !matches!(url.scheme.as_str(), "http" | "https") {
        return Err(("\"url\" must be http:// or https://".into(), "bad_url", v));
    }
    let tls = if url.scheme == "https" {
        // security.update_ca_file, else the broker's CA, else the system's roots.
        let ca = config
            .security
            .update_ca_file
            .as_deref()
            .or(config.mqtt.ca_file.as_deref());
        Some(
            crate::uplink::tls::rustls_config(ca, None, None)
                .map_err(|e| (format!("TLS: {e:#}"), "bad_url", v.clone()))?,
        )
    } else {
        None
    };
    // Room for the file and the disk_low reserve, which the buffer keeps for events.
    let reserve = config.gateway.disk_low_mb;
    let need_mb = m.size.div_ceil(1 << 20) + reserve;
    if let Some((free, _)) = crate::system::disk_space_mb(&config.gateway.data_dir) {
        if free < need_mb {
            return Err((
                format!(
                    "{free} MB free under data_dir, the update needs {need_mb} MB ({} MB plus the {reserve} MB gateway.disk_low_mb keeps)",
                    m.size.div_ceil(1 << 20)
                ),
                "no_space",
                v,
            ));
        }
    }
    let version = m.version.clone();
    let id = id.to_string();
    let fs = crate::faults::buffer_fs();
    tokio::spawn(async move {
        let outcome = fetch_and_install(&local, &url, tls, fs, &m, stop).await;
        let _ = events
            .send(Event::Done {
                id,
                version: m.version.clone(),
                outcome,
            })
            .await;
    });
    Ok(version)
}

async fn fetch_and_install(
    local: &Arc<Local>,
    url: &crate::proto::http::Url,
    tls: Option<Arc<rustls::ClientConfig>>,
    fs: Arc<dyn crate::durable::Fs>,
    m: &Manifest,
    stop: tokio_util::sync::CancellationToken,
) -> Result<Value, (String, &'static str)> {
    let incoming = local.dir.incoming();
    let dest = incoming.join(format!("{}.part", m.version));
    let made = {
        let d = incoming.clone();
        tokio::task::spawn_blocking(move || crate::durable::create_dir_all_durable(&d)).await
    };
    if let Ok(Err(e)) | Err(e) = made.map_err(std::io::Error::other) {
        return Err((
            format!("cannot create {}: {e}", incoming.display()),
            "write_failed",
        ));
    }
    let started = std::time::Instant::now();
    tracing::info!(version = %m.version, size = m.size, url = %crate::logs::clip(&url.absolute()), "downloading an update");
    // A stop ends the download; once it is verified, the install always runs to its end
    // (the state is then either before it or after it, never half-way).
    let fetched = tokio::select! {
        f = download::fetch(
            url,
            tls,
            fs.as_ref(),
            &dest,
            m.size,
            &m.sha256,
            download::Limits::for_size(m.size),
        ) => f,
        _ = stop.cancelled() => {
            let _ = std::fs::remove_file(&dest);
            return Err((
                "the agent was stopped during the download; send the update again".into(),
                "interrupted",
            ));
        }
    };
    let fetched = match fetched {
        Ok(f) => f,
        Err(f) => {
            let _ = std::fs::remove_file(&dest);
            return Err((f.to_string(), f.reason()));
        }
    };
    crate::faults::die_point("update_downloaded");
    // Read back from the disk and hashed again, off the workers: what runs is what was signed.
    let (l, mm, d) = (local.clone(), m.clone(), dest.clone());
    let installed =
        tokio::task::spawn_blocking(move || -> Result<PathBuf, (String, &'static str)> {
            let h = crate::update::file_sha256(&d).map_err(|e| {
                (
                    format!("cannot read the download back: {e}"),
                    "write_failed",
                )
            })?;
            if h != mm.sha256 {
                return Err((
                    format!(
                        "the file on disk no longer matches its sha256 ({})",
                        crate::release::hex(&h)
                    ),
                    "bad_sha256",
                ));
            }
            l.install(&d, &mm)
                .map_err(|e| (format!("cannot install: {e}"), "install_failed"))
        })
        .await
        .map_err(|e| (format!("install task: {e}"), "install_failed"))?;
    let path = match installed {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_file(&dest);
            return Err(e);
        }
    };
    crate::faults::die_point("update_installed");
    tracing::info!(version = %m.version, received = fetched.received, attempts = fetched.attempts, resumed = fetched.resumed, "update verified and installed: handing over");
    Ok(json!({
        "version": m.version.to_string(),
        "from": local.own.to_string(),
        "installed": path.display().to_string(),
        "received_bytes": fetched.received,
        "attempts": fetched.attempts,
        "resumed": fetched.resumed,
        "download_ms": started.elapsed().as_millis() as u64,
    }))
}

/// Publishes the reports not yet published (as alerts, durably in the buffer first), then
/// removes what is no longer needed.
pub async fn report(shared: &Shared) {
    let Some(local) = shared.updates.clone() else {
        return;
    };
    let l = local.clone();
    let pending = tokio::task::spawn_blocking(move || l.pending())
        .await
        .unwrap_or_default();
    for r in pending {
        let (kind, detail) = match &r {
            Report::Applied { from, to } => (
                AlertKind::UpdateApplied,
                json!({"from": from.to_string(), "to": to.to_string()}),
            ),
            Report::Failed { version, from, why } => (
                AlertKind::UpdateFailed,
                json!({"reason": "trial_failed", "version": version.to_string(), "from": from.to_string(), "why": why, "error": why, "running": local.own.to_string()}),
            ),
        };
        tracing::info!(%detail, "update report");
        let rec = crate::record::NewRecord::stamped(
            shared.clock.as_ref(),
            crate::record::Body::alert(kind, None, detail),
        );
        // Marked published only once it is in the buffer: otherwise the next start says it.
        if let Err(e) = shared.buffer.append(rec).await {
            tracing::error!(
                "cannot record the {kind} alert now ({e}); it is raised at the next start"
            );
            continue;
        }
        let (l, buffer) = (local.clone(), shared.buffer.clone());
        let _ = tokio::task::spawn_blocking(move || {
            // On disk before it is marked (with sync = "interval" it may not be yet).
            if let Err(e) = buffer.flush_blocking() {
                tracing::error!(
                    "cannot flush the buffer: {e}; the report is raised again at the next start"
                );
                return;
            }
            if let Err(e) = l.reported(&r) {
                tracing::error!("cannot record the update report: {e}");
            }
        })
        .await;
    }
    let l = local.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(e) = l.tidy() {
            tracing::warn!("cannot remove old versions: {e}");
        }
    })
    .await;
}

/// The trial of this version: confirmed once the uplink has connected and every probed camera
/// has finished one health round; otherwise ended when `confirm` has passed since the start.
pub async fn trial(shared: Arc<TrialInputs>, confirm: Duration, events: mpsc::Sender<Event>) {
    let local = shared.local.clone();
    let deadline = tokio::time::Instant::now() + confirm;
    let connected = shared.stats.connects.reaches(1, confirm).await;
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    // Probe every camera now rather than at each one's spread-out first round.
    shared.check_now.notify_waiters();
    let rounds = connected && every_camera_probed(&shared, left).await;
    let own = local.own.clone();
    if rounds {
        let l = local.clone();
        let done = tokio::task::spawn_blocking(move || l.modify(|st| st.confirm(&own))).await;
        match done {
            Ok(Ok(_)) => {
                local.confirmed();
                tracing::info!(version = %local.own, "update confirmed: connected and one health round finished")
            }
            Ok(Err(e)) => tracing::error!("cannot record the confirmation: {e}"),
            Err(e) => tracing::error!("confirmation task: {e}"),
        }
        let _ = events.send(Event::Confirmed).await;
        return;
    }
    let why = if connected {
        format!(
            "connected, but no health round finished within update_confirm_s ({} s)",
            confirm.as_secs()
        )
    } else {
        format!(
            "did not connect to a broker within update_confirm_s ({} s)",
            confirm.as_secs()
        )
    };
    tracing::error!(version = %local.own, "update trial ended: {why}");
    let l = local.clone();
    let _ =
        tokio::task::spawn_blocking(move || l.modify(|st| st.trial_timed_out(&own, &why))).await;
    let _ = events.send(Event::TrialEnded).await;
}

/// Waits (at most `within`) until every probed camera has finished a health round.
async fn every_camera_probed(t: &TrialInputs, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if t.probes.every_camera_probed() {
            return true;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        // A round's count is bumped just before its reading is kept: look again soon.
        let next = t.progress.get() + 1;
        t.progress
            .reaches(next, left.min(Duration::from_millis(200)))
            .await;
    }
}

/// What the trial watches.
pub struct TrialInputs {
    pub local: Arc<Local>,
    pub stats: Arc<crate::uplink::UplinkStats>,
    pub progress: Arc<crate::bus::Counter>,
    pub probes: Arc<crate::bus::Probes>,
    pub check_now: Arc<tokio::sync::Notify>,
}
