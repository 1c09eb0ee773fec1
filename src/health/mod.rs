//! Camera health: every way a camera fails, detected and reported.
//!
//! Per camera, every `health.interval_s` (with jitter, and at most `health.max_concurrent`
//! cameras at once), one probe round: TCP reachability of the camera's ports (so
//! `unreachable` is told apart from everything else), then concurrently the HTTP snapshot
//! (JPEG, black, frozen), the RTSP stream (frames actually arrive) and the ONVIF device
//! service (clock offset, identity, credentials); each probe is bounded by
//! `health.timeout_ms`. The round's problems feed the pure [`state::Hysteresis`]; state
//! changes publish the retained `T/camera/{id}/health` and raise `camera_down`,
//! `camera_up` or `camera_degraded` alerts (through the buffer, like every alert).

pub mod image;
pub mod rtsp;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::buffer::Buffer;
use crate::bus::Retained;
use crate::clock::{rfc3339_ms, Clock};
use crate::config::{Camera, Config};
use crate::proto::http;
use crate::proto::onvif::device as onvif;
use crate::record::{AlertKind, Body, NewRecord};

pub use state::{Hysteresis, Problem, State, Transition};

/// What one probe round found.
#[derive(Debug, Clone, Default)]
pub struct Round {
    pub problems: BTreeSet<Problem>,
    /// Measurements and, per problem, what exactly went wrong. Never holds a password.
    pub detail: Map<String, Value>,
}

impl Round {
    pub fn fail(&mut self, p: Problem, why: impl Into<String>) {
        self.problems.insert(p);
        let key = p.name();
        // Camera replies end up in here (an error message quoting what it sent): bounded, so
        // no camera can make a health message too large to publish.
        let why = crate::logs::clip_to(&why.into(), crate::logs::DETAIL);
        match self.detail.get_mut(key) {
            Some(Value::String(s)) if s.len() < 4 * crate::logs::DETAIL => {
                s.push_str("; ");
                s.push_str(&why);
            }
            Some(Value::String(_)) => {}
            _ => {
                self.detail.insert(key.into(), Value::String(why));
            }
        }
    }
}

/// What a camera's probes remember between rounds.
#[derive(Debug, Default)]
pub struct Memory {
    pub thumb: Option<image::Thumb>,
}

/// The (host, port) pairs a camera should accept TCP connections on.
fn ports(cam: &Camera) -> Vec<(String, u16)> {
    let mut v: Vec<(String, u16)> = [
        Some(&cam.http_base),
        cam.snapshot_url.as_ref(),
        cam.rtsp_url.as_ref(),
        cam.onvif_url.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|u| (u.host.clone(), u.port))
    .collect();
    v.sort();
    v.dedup();
    v
}

/// One probe round for one camera.
pub async fn probe_round(
    cam: &Camera,
    mem: &mut Memory,
    timeout: Duration,
    clock: &dyn Clock,
    drift_max: Duration,
) -> Round {
    let mut round = Round::default();
    // 1. Reachability.
    let targets = ports(cam);
    let attempts = targets.iter().map(|(h, p)| async move {
        match tokio::time::timeout(timeout, TcpStream::connect((h.as_str(), *p))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{h}:{p}: {e}")),
            Err(_) => Err(format!(
                "{h}:{p}: no answer within {} ms",
                timeout.as_millis()
            )),
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    if !results.is_empty() && results.iter().all(|r| r.is_err()) {
        let why: Vec<String> = results.into_iter().filter_map(|r| r.err()).collect();
        round.fail(Problem::Unreachable, why.join("; "));
        return round;
    }
    // 2-4. Snapshot, RTSP, ONVIF, concurrently.
    let snap = async {
        let u = cam.snapshot_url.as_ref()?;
        Some(
            tokio::time::timeout(
                timeout,
                http::request_auth(u, "GET", &[], &[], cam.creds(), MAX_SNAPSHOT),
            )
            .await,
        )
    };
    let rtsp = async {
        let u = cam.rtsp_url.as_ref()?;
        Some(
            rtsp::probe(
                u,
                cam.creds().map(|c| (c.user, c.password)),
                cam.basic_auth,
                Instant::now() + timeout,
            )
            .await,
        )
    };
    let onvif = async {
        let u = cam.onvif_url.as_ref()?;
        Some(
            tokio::time::timeout(
                timeout,
                onvif::probe(u, cam.creds(), timeout, || clock.now_ms()),
            )
            .await,
        )
    };
    let (snap, rtsp, onvif) = tokio::join!(snap, rtsp, onvif);

    match snap {
        None => {}
        Some(Err(_)) => round.fail(
            Problem::HttpError,
            format!("snapshot: no answer within {} ms", timeout.as_millis()),
        ),
        Some(Ok(Err(e))) => round.fail(Problem::HttpError, format!("snapshot: {e}")),
        Some(Ok(Ok(r)))
            if r.status == 401
                && cam.password.is_some()
                && !cam.basic_auth
                && http::only_basic(&r.headers) =>
        {
            round.fail(
                Problem::BasicAuthOnly,
                format!("snapshot: {}", http::BASIC_ONLY),
            )
        }
        Some(Ok(Ok(r))) if r.status == 401 || r.status == 403 => round.fail(
            Problem::AuthFailed,
            if cam.password.is_some() {
                format!(
                    "snapshot: HTTP {} with the configured credentials",
                    r.status
                )
            } else {
                format!(
                    "snapshot: HTTP {} and no credentials are configured",
                    r.status
                )
            },
        ),
        Some(Ok(Ok(r))) if r.status != 200 => {
            round.fail(Problem::HttpError, format!("snapshot: HTTP {}", r.status))
        }
        Some(Ok(Ok(r))) => {
            let bytes = r.body.len();
            match analyze_off_worker(r.body, timeout).await {
                Err((p, e)) => round.fail(p, format!("snapshot: {e}")),
                Ok(a) => {
                    round.detail.insert("snapshot".into(), json!({"width": a.width, "height": a.height, "mean_luma": (a.mean * 10.0).round() / 10.0, "bytes": bytes}));
                    if a.black {
                        round.fail(
                            Problem::Black,
                            format!(
                                "picture is black (mean luma {:.1}, contrast {:.1})",
                                a.mean, a.stddev
                            ),
                        );
                    }
                    if mem
                        .thumb
                        .as_ref()
                        .is_some_and(|t| image::frozen(t, &a.thumb))
                    {
                        round.fail(
                            Problem::Frozen,
                            "picture unchanged since the previous snapshot",
                        );
                    }
                    mem.thumb = Some(a.thumb);
                }
            }
        }
    }
    match rtsp {
        None => {}
        Some(rtsp::Outcome::Frames { first_packet }) => {
            round.detail.insert(
                "rtsp_first_packet_ms".into(),
                json!(first_packet.as_millis() as u64),
            );
        }
        Some(rtsp::Outcome::AuthFailed) => {
            round.fail(Problem::AuthFailed, "rtsp: credentials refused")
        }
        Some(rtsp::Outcome::BasicOnly) => round.fail(
            Problem::BasicAuthOnly,
            format!("rtsp: {}", http::BASIC_ONLY),
        ),
        Some(rtsp::Outcome::NoFrames) => round.fail(
            Problem::NoFrames,
            format!(
                "rtsp: PLAY accepted but no video packet within {} ms",
                timeout.as_millis()
            ),
        ),
        Some(rtsp::Outcome::Error(e)) => round.fail(Problem::RtspError, format!("rtsp: {e}")),
        Some(rtsp::Outcome::Unreachable(e)) => {
            round.fail(Problem::RtspError, format!("rtsp: cannot connect: {e}"))
        }
    }
    match onvif {
        None => {}
        Some(Err(_)) => round.fail(
            Problem::HttpError,
            format!("onvif: no answer within {} ms", timeout.as_millis()),
        ),
        Some(Ok(o)) => {
            let offset = match &o {
                onvif::Outcome::Ok { offset_ms, .. } | onvif::Outcome::AuthFailed { offset_ms } => {
                    Some(*offset_ms)
                }
                _ => None,
            };
            if let Some(off) = offset {
                round.detail.insert("clock_offset_ms".into(), json!(off));
                if clock.synced() && off.unsigned_abs() > drift_max.as_millis() as u64 {
                    round.fail(
                        Problem::ClockDrift,
                        format!(
                            "camera clock is {:+.1} s off (bound {} s)",
                            off as f64 / 1000.0,
                            drift_max.as_secs()
                        ),
                    );
                }
            }
            match o {
                onvif::Outcome::Ok {
                    info: Some(info), ..
                } => {
                    round.detail.insert(
                        "device".into(),
                        serde_json::to_value(info).unwrap_or_default(),
                    );
                }
                onvif::Outcome::Ok { .. } => {}
                onvif::Outcome::AuthFailed { .. } => {
                    round.fail(Problem::AuthFailed, "onvif: credentials refused")
                }
                onvif::Outcome::Unreachable(e) | onvif::Outcome::Error(e) => {
                    round.fail(Problem::HttpError, format!("onvif: {e}"))
                }
            }
        }
    }
    round
}

/// The largest snapshot body read from a camera (an 8 MP still is under 2 MiB).
pub const MAX_SNAPSHOT: usize = 4 << 20;

/// Decodes a still in the heavy pool (never on an async worker), bounded by `deadline`.
/// A still refused undecoded (too many pixels) or a decode that overran its deadline or
/// failed inside is `snapshot_rejected`; one that is not a decodable JPEG is `http_error`.
async fn analyze_off_worker(
    jpeg: Vec<u8>,
    deadline: Duration,
) -> Result<image::Analysis, (Problem, String)> {
    match crate::heavy::run(deadline, move || image::analyze(&jpeg)).await {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(e @ image::ImageError::TooLarge { .. })) => {
            Err((Problem::SnapshotRejected, e.to_string()))
        }
        Ok(Err(e)) => Err((Problem::HttpError, e.to_string())),
        Err(e) => Err((Problem::SnapshotRejected, format!("decoding {e}"))),
    }
}

/// The retained health payload.
pub fn health_json(
    camera: &str,
    h: &Hysteresis,
    detail: &Map<String, Value>,
    now_ms: i64,
) -> Value {
    json!({
        "camera": camera,
        "state": h.state().name(),
        "problems": h.problems().iter().map(|p| p.name()).collect::<Vec<_>>(),
        "since": rfc3339_ms(h.since_ms()),
        "ts": rfc3339_ms(now_ms),
        "detail": detail,
    })
}

pub fn health_topic(config: &Config, camera: &str) -> String {
    config.topic(crate::topics::Leaf::Health(camera))
}

/// The alert for a transition, if it deserves one (a gateway start finding cameras up is not
/// news; a camera found down or degraded is).
pub fn alert_for(camera: &str, t: &Transition, detail: &Map<String, Value>) -> Option<Body> {
    let kind = match (t.from, t.to) {
        (State::Unknown, State::Up) => return None,
        (_, State::Up) => AlertKind::CameraUp,
        (_, State::Down) => AlertKind::CameraDown,
        (_, State::Degraded) => AlertKind::CameraDegraded,
        (_, State::Unknown) => return None,
    };
    Some(Body::alert(
        kind,
        Some(camera),
        json!({
            "from": t.from.name(),
            "state": t.to.name(),
            "problems": t.problems.iter().map(|p| p.name()).collect::<Vec<_>>(),
            "detail": detail,
        }),
    ))
}

/// Runs the health monitor for every camera until `shutdown`.
pub struct Monitor {
    pub config: Arc<Config>,
    pub buffer: Buffer,
    pub clock: Arc<dyn Clock>,
    pub retained: Arc<Retained>,
    /// `check_now` wakes every camera's loop at once.
    pub check_now: Arc<tokio::sync::Notify>,
    pub progress: Arc<crate::bus::Counter>,
    /// Each camera's state and last round, for `/metrics`.
    pub probes: Arc<crate::bus::Probes>,
    /// Bumped every second while no probe round has overrun its bound.
    pub beat: Arc<crate::watchdog::Beat>,
    /// Event-stream state (stream down, video loss) joins the probe results.
    pub hub: Arc<crate::events::Hub>,
}

impl Monitor {
    pub async fn run(self, shutdown: CancellationToken) {
        let sem = Arc::new(tokio::sync::Semaphore::new(
            self.config.health.max_concurrent,
        ));
        let mut tasks = Vec::new();
        let running: Running = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let probed: Vec<&str> = self
            .config
            .cameras
            .iter()
            .filter(|c| c.probe)
            .map(|c| c.id.as_str())
            .collect();
        self.probes.retain(&probed);
        let this = Arc::new(self);
        for cam in this.config.cameras.iter().filter(|c| c.probe).cloned() {
            let (this, sem, sd, run) =
                (this.clone(), sem.clone(), shutdown.clone(), running.clone());
            tasks.push(tokio::spawn(async move {
                this.camera_loop(cam, sem, sd, run).await
            }));
        }
        // Heartbeat for the watchdog: a round that overran every probe's bound means a loop
        // is stuck.
        let bound = this.config.health.timeout * 4 + Duration::from_secs(5);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    let overrun = running.lock().unwrap().values().any(|t: &Instant| t.elapsed() > bound);
                    if !overrun {
                        this.beat.bump();
                    }
                }
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn camera_loop(
        &self,
        cam: Camera,
        sem: Arc<tokio::sync::Semaphore>,
        shutdown: CancellationToken,
        running: Running,
    ) {
        let h = &self.config.health;
        let mut hyst = Hysteresis::new(h.fail_threshold, h.recover_threshold, self.clock.now_ms());
        let mut mem = Memory::default();
        let mut last_published: Option<(State, BTreeSet<Problem>)> = None;
        let mut crashes = 0u32;
        // Spread the first rounds over the interval so 64 cameras do not probe in one burst.
        let mut next = tokio::time::Instant::now() + h.interval.mul_f64(rand::random::<f64>());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
                _ = self.check_now.notified() => {}
            }
            let round_started;
            let round = {
                let Ok(_permit) = sem.acquire().await else {
                    return;
                };
                // The round's own time, not the wait for a permit.
                round_started = Instant::now();
                running
                    .lock()
                    .unwrap()
                    .insert(cam.id.clone(), Instant::now());
                // Its own task: the round's state (I/O buffers) exists only while it runs, at
                // most `max_concurrent` at a time; and a panic inside a probe (bytes from a
                // hostile camera) ends that round only, never this loop or another camera.
                let (c, clock, timeout, drift) = (
                    cam.clone(),
                    self.clock.clone(),
                    h.timeout,
                    h.clock_drift_max,
                );
                let mut m = std::mem::take(&mut mem);
                let task = tokio::spawn(async move {
                    crate::faults::panic_point("probe", &c.id);
                    let r = probe_round(&c, &mut m, timeout, clock.as_ref(), drift).await;
                    (r, m)
                });
                let abort = task.abort_handle();
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        abort.abort();
                        return;
                    }
                    r = task => match r {
                        Ok((r, m)) => {
                            mem = m;
                            crashes = 0;
                            r
                        }
                        Err(e) => {
                            crashes += 1;
                            let why = if e.is_panic() {
                                crate::heavy::panic_message(e.into_panic())
                            } else {
                                "cancelled".into()
                            };
                            tracing::error!(camera = %cam.id, "a probe failed inside the agent: {}", crate::logs::clip(&why));
                            let mut r = Round::default();
                            r.fail(Problem::ProbeCrashed, format!("a probe of this camera failed inside the agent ({}); the next round is in {} s", crate::logs::clip(&why), crash_delay(h.interval, crashes).as_secs()));
                            r
                        }
                    }
                }
            };
            running.lock().unwrap().remove(&cam.id);
            let mut round = round;
            let (stream_down, video_loss) = self.hub.problems(&cam.id);
            if let Some(why) = stream_down {
                round.fail(Problem::EventStream, why);
            }
            if video_loss {
                round.fail(
                    Problem::VideoLoss,
                    "the camera reports video loss on its input",
                );
            }
            self.progress.bump();
            let now = self.clock.now_ms();
            let transition = hyst.observe(round.problems.clone(), now);
            self.probes.record(
                &cam.id,
                hyst.state().name(),
                round_started.elapsed().as_secs_f64(),
                !round.problems.is_empty(),
            );
            if let Some(t) = &transition {
                tracing::info!(camera = %cam.id, from = t.from.name(), to = t.to.name(), problems = ?t.problems.iter().map(|p| p.name()).collect::<Vec<_>>(), "camera health changed");
                if let Some(body) = alert_for(&cam.id, t, &round.detail) {
                    let rec = NewRecord::stamped(self.clock.as_ref(), body);
                    if let Err(e) = self.buffer.append(rec).await {
                        tracing::error!("cannot buffer the health alert: {e}");
                    }
                }
            }
            let key = (hyst.state(), hyst.problems().clone());
            if hyst.state() != State::Unknown && last_published.as_ref() != Some(&key) {
                let payload = health_json(&cam.id, &hyst, &round.detail, now);
                self.retained.set_health(
                    health_topic(&self.config, &cam.id),
                    payload.to_string().into_bytes(),
                    hyst.state() == State::Up,
                );
                last_published = Some(key);
            }
            // ±10 % jitter keeps cameras from drifting into lockstep.
            let jitter = 0.9 + 0.2 * rand::random::<f64>();
            next = tokio::time::Instant::now() + crash_delay(h.interval, crashes).mul_f64(jitter);
        }
    }
}

/// The wait before the next round: the interval, doubled for every crashed round in a row
/// (a camera whose replies crash a probe is not hammered), at most 16 times.
fn crash_delay(interval: Duration, crashes: u32) -> Duration {
    interval * (1u32 << crashes.min(4))
}

/// Cameras mid-round, and since when.
type Running = Arc<std::sync::Mutex<BTreeMap<String, Instant>>>;

/// Latest detail per camera, for `get_health`-style queries (kept small).
pub type Details = BTreeMap<String, Map<String, Value>>;
