//! Event stills: for each motion start of a camera with `snapshot = true`, one still is
//! fetched right away ([`source`]), scaled down on the box (`proto::jpeg::scale`, in the
//! heavy pool), checked against the daily budget ([`budget`]) and buffered in the stills
//! class; the uplink publishes it on `T/camera/{camera}/snapshot/{event_id}` after the event.
//!
//! At most one request is in flight per camera (Dahua firmware refuses concurrent still
//! requests): a motion start that arrives while its camera's still is being fetched goes
//! without one, counted. Every step is bounded (`snapshot.timeout_ms` for the fetch, the same
//! for the scaling); a still that cannot be had is counted and the event stays as it was:
//! events never wait for stills.

pub mod budget;
pub mod source;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::buffer::Buffer;
use crate::bus::{Gauges, StillRequest, StillRequests};
use crate::clock::Clock;
use crate::config::Config;
use crate::durable::Fs;
use crate::record::AlertKind;
use budget::{Admit, Budget};

/// The largest still sent: it must fit the uplink's MQTT packet limit (1 MiB, with the topic
/// and the packet header), with room to spare.
pub const MAX_STILL_BYTES: usize = 768 * 1024;

/// What the service counts (telemetry `stills`).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counts {
    /// Stills buffered since the start.
    pub buffered: u64,
    /// Motion starts that went without a still, by reason.
    pub failed: u64,
    pub skipped_busy: u64,
    pub skipped_budget: u64,
    pub skipped_queue: u64,
    pub refused_by_buffer: u64,
    /// The last still: bytes sent, fetch and scale time, source size.
    pub last_bytes: u64,
    pub last_fetch_ms: u64,
    pub last_scale_ms: u64,
    pub last_source: Option<(u16, u16)>,
    /// Bytes of stills buffered today (UTC), against the budget.
    pub budget_used_today: u64,
}

struct State {
    busy: HashSet<String>,
    caches: HashMap<String, source::Cache>,
    budget: Budget,
    counts: Counts,
}

/// The snapshot service; [`Service::run`] until shutdown.
pub struct Service {
    pub config: Arc<Config>,
    pub buffer: Buffer,
    pub clock: Arc<dyn Clock>,
    pub gauges: Arc<Gauges>,
    /// The requests' sender side (for the count of requests dropped on a full queue).
    pub requests: StillRequests,
}

fn budget_path(config: &Config) -> PathBuf {
    config.gateway.data_dir.join("stills_budget")
}

impl Service {
    pub async fn run(
        self,
        mut rx: tokio::sync::mpsc::Receiver<StillRequest>,
        shutdown: CancellationToken,
    ) {
        let budget = std::fs::read(budget_path(&self.config))
            .ok()
            .and_then(|b| serde_json::from_slice::<Budget>(&b).ok())
            .unwrap_or_default();
        let state = Arc::new(Mutex::new(State {
            busy: HashSet::new(),
            caches: HashMap::new(),
            budget,
            counts: Counts::default(),
        }));
        let this = Arc::new(self);
        let tasks = tokio_util::task::TaskTracker::new();
        this.publish_counts(&state);
        loop {
            let req = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = rx.recv() => match r { Some(r) => r, None => break },
            };
            let Some(cam) = this.config.camera(&req.camera).filter(|c| c.snapshot) else {
                continue;
            };
            let limit = this.config.snapshot.daily_budget_bytes;
            let now = this.clock.now_ms();
            let over_budget = {
                let mut st = state.lock().unwrap();
                if st.busy.contains(&cam.id) {
                    st.counts.skipped_busy += 1;
                    tracing::debug!(camera = %cam.id, "a still is already being fetched: this motion start goes without one");
                    continue;
                }
                match st.budget.admit(now, limit, 0) {
                    Admit::No { alert } => {
                        st.counts.skipped_budget += 1;
                        Some(alert)
                    }
                    Admit::Yes => {
                        st.busy.insert(cam.id.clone());
                        None
                    }
                }
            };
            if let Some(alert) = over_budget {
                this.over_budget(&state, alert).await;
                this.publish_counts(&state);
                continue;
            }
            let (this2, state2, cam_id) = (this.clone(), state.clone(), cam.id.clone());
            tasks.spawn(async move {
                this2.one(&state2, req).await;
                state2.lock().unwrap().busy.remove(&cam_id);
                this2.publish_counts(&state2);
            });
        }
        tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
    }

    /// One still for one motion start: fetch, scale, budget, buffer.
    async fn one(&self, state: &Mutex<State>, req: StillRequest) {
        let Some(cam) = self.config.camera(&req.camera) else {
            return;
        };
        let s = &self.config.snapshot;
        let mut cache = state
            .lock()
            .unwrap()
            .caches
            .get(&cam.id)
            .cloned()
            .unwrap_or_default();
        let clock = self.clock.clone();
        let now_ms = move || clock.now_ms();
        let t0 = Instant::now();
        let fetched = tokio::time::timeout(
            s.timeout,
            source::fetch(cam, &mut cache, s.timeout, &now_ms),
        )
        .await;
        state.lock().unwrap().caches.insert(cam.id.clone(), cache);
        let fetch_ms = t0.elapsed().as_millis() as u64;
        let jpeg = match fetched {
            Ok(Ok(j)) => j,
            Ok(Err(e)) => return self.failed(state, &cam.id, &format!("fetch: {e}")),
            Err(_) => {
                return self.failed(
                    state,
                    &cam.id,
                    &format!("fetch: no still within {} ms", s.timeout.as_millis()),
                )
            }
        };
        let (max_width, quality) = (s.max_width, s.quality);
        let t1 = Instant::now();
        let scaled = crate::heavy::run(s.timeout, move || {
            crate::proto::jpeg::scale(&jpeg, max_width, quality)
        })
        .await;
        let scale_ms = t1.elapsed().as_millis() as u64;
        let scaled = match scaled {
            Ok(Ok(sc)) => sc,
            Ok(Err(e)) => return self.failed(state, &cam.id, &format!("scale: {e}")),
            Err(e) => return self.failed(state, &cam.id, &format!("scale: {e}")),
        };
        if scaled.jpeg.len() > MAX_STILL_BYTES {
            return self.failed(
                state,
                &cam.id,
                &format!(
                    "the still is {} bytes at {}x{}, over the {MAX_STILL_BYTES}-byte limit: lower snapshot.max_width or quality",
                    scaled.jpeg.len(),
                    scaled.width,
                    scaled.height
                ),
            );
        }
        let bytes = scaled.jpeg.len() as u64;
        let admitted = {
            let mut st = state.lock().unwrap();
            let a = st
                .budget
                .admit(self.clock.now_ms(), s.daily_budget_bytes, bytes);
            if a != Admit::Yes {
                st.counts.skipped_budget += 1;
            }
            a
        };
        if let Admit::No { alert } = admitted {
            return self.over_budget(state, alert).await;
        }
        self.save_budget(state);
        let buffer = self.buffer.clone();
        let (seq, id, camera) = (req.seq, req.event_id, cam.id.clone());
        let jpeg = scaled.jpeg;
        let stored = tokio::task::spawn_blocking(move || {
            buffer.append_still_blocking(seq, id, &camera, &jpeg)
        })
        .await;
        let mut st = state.lock().unwrap();
        match stored {
            Ok(Ok(())) => {
                st.counts.buffered += 1;
                st.counts.last_bytes = bytes;
                st.counts.last_fetch_ms = fetch_ms;
                st.counts.last_scale_ms = scale_ms;
                st.counts.last_source = Some((scaled.source_width, scaled.source_height));
                tracing::info!(
                    camera = %cam.id,
                    seq = req.seq,
                    bytes,
                    width = scaled.width,
                    height = scaled.height,
                    source_width = scaled.source_width,
                    source_height = scaled.source_height,
                    fetch_ms,
                    scale_ms,
                    since_event_ms = req.at.elapsed().as_millis() as u64,
                    "still buffered"
                );
            }
            Ok(Err(e)) => {
                st.counts.refused_by_buffer += 1;
                tracing::warn!(camera = %cam.id, "the buffer refused a still: {e}");
            }
            Err(e) => {
                st.counts.failed += 1;
                tracing::error!(camera = %cam.id, "storing a still failed inside: {e}");
            }
        }
    }

    fn failed(&self, state: &Mutex<State>, camera: &str, why: &str) {
        state.lock().unwrap().counts.failed += 1;
        tracing::warn!(
            camera,
            "no still for this motion start: {}",
            crate::logs::clip(why)
        );
    }

    async fn over_budget(&self, state: &Mutex<State>, alert: bool) {
        self.save_budget(state);
        if !alert {
            return;
        }
        let (used, skipped, day) = {
            let st = state.lock().unwrap();
            (st.budget.used, st.budget.skipped, st.budget.day)
        };
        let limit = self.config.snapshot.daily_budget_bytes;
        tracing::warn!(
            used,
            limit,
            "the daily budget for stills is spent: events go without stills until 00:00 UTC"
        );
        let day = crate::clock::rfc3339_ms(day * 86_400_000);
        self.buffer
            .alert(
                self.clock.as_ref(),
                AlertKind::SnapshotBudgetReached,
                None,
                json!({"budget_bytes": limit, "used_bytes": used, "skipped": skipped,
                    "day": day.get(..10).unwrap_or(&day)}),
            )
            .await;
    }

    /// The budget survives restarts (a crash loop must not reset it).
    fn save_budget(&self, state: &Mutex<State>) {
        if self.config.snapshot.daily_budget_bytes == 0 {
            return;
        }
        let b = state.lock().unwrap().budget.clone();
        let bytes = serde_json::to_vec(&b).expect("a budget serialises");
        if let Err(e) = crate::durable::Os.replace(&budget_path(&self.config), &bytes) {
            tracing::warn!("cannot save the stills budget: {e}");
        }
    }

    fn publish_counts(&self, state: &Mutex<State>) {
        let mut st = state.lock().unwrap();
        let now = self.clock.now_ms();
        st.counts.budget_used_today = st.budget.today(now).used;
        st.counts.skipped_queue = self.requests.dropped();
        let v = serde_json::to_value(&st.counts).unwrap_or_default();
        drop(st);
        self.gauges.set("stills", v);
    }
}
