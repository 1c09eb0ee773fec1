//! Motion events from the cameras: Hikvision ISAPI `alertStream` (and its push variant on the
//! ingest server), Dahua/KBVision/Imou `eventManager.cgi?action=attach`, and ONVIF pull-point
//! subscriptions ([`onvif`], the task in `pullpoint`). GPIO inputs arrive through
//! [`Hub::gpio`] from the board task.
//!
//! Per camera and source a task keeps the long-lived multipart stream open (Digest auth, a
//! fresh connection after the first 401), feeds the pure [`multipart::Parser`], turns parts
//! into signals ([`hikvision`], [`dahua`]), and the signals into events through the pure
//! [`coalesce::Coalescer`]. A read timeout (`events.read_timeout_s`, longer than twice the
//! cameras' heartbeat) notices a silent stream; any failure reconnects with capped backoff.
//! The stream's state (connected, video loss) goes into the camera's health. The camera's own
//! timestamp goes in the event detail; `ts` is the gateway's.

pub mod coalesce;
mod pullpoint;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::buffer::Buffer;
use crate::clock::{rfc3339_ms, Clock};
use crate::config::{Camera, Config, EventSource};
use crate::proto::backoff::Backoff;
use crate::proto::http::{self, Creds, Url};
use crate::proto::{camtime, dahua, hikvision, multipart};
use crate::record::{AlertKind, Body, NewRecord, Source};
use coalesce::{Coalescer, Input, Output};

/// What health needs to know about a camera's event stream.
#[derive(Debug, Clone, Default)]
pub struct StreamState {
    pub connected: bool,
    pub last_error: Option<String>,
    pub video_loss: bool,
    pub last_heartbeat_ms: Option<i64>,
}

/// Shared by the stream tasks, the ingest push endpoint and the health monitor.
pub struct Hub {
    pub config: Arc<Config>,
    pub buffer: Buffer,
    pub clock: Arc<dyn Clock>,
    pub states: Mutex<HashMap<(String, Source), StreamState>>,
    coalescers: Mutex<HashMap<(String, Source), Coalescer>>,
    last_tamper: Mutex<HashMap<String, i64>>,
    /// Woken on every change of `states` (for [`Hub::check_source`]).
    state_changed: tokio::sync::Notify,
    /// Live ONVIF pull-point subscriptions, to unsubscribe at shutdown.
    /// (subscription address, camera clock offset in ms).
    onvif_subs: Mutex<HashMap<String, (Url, i64)>>,
    /// Motion starts of cameras with `snapshot = true` ask for a still here.
    stills: crate::bus::StillRequests,
}

/// Tamper alerts from one camera are raised at most this often.
const TAMPER_SPACING_MS: i64 = 60_000;

impl Hub {
    pub fn new(config: Arc<Config>, buffer: Buffer, clock: Arc<dyn Clock>) -> Arc<Hub> {
        Hub::with_stills(config, buffer, clock, crate::bus::StillRequests::none())
    }

    /// A hub whose motion starts ask `stills` for a still (cameras with `snapshot = true`).
    pub fn with_stills(
        config: Arc<Config>,
        buffer: Buffer,
        clock: Arc<dyn Clock>,
        stills: crate::bus::StillRequests,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            stills,
            config,
            buffer,
            clock,
            states: Mutex::new(HashMap::new()),
            coalescers: Mutex::new(HashMap::new()),
            last_tamper: Mutex::new(HashMap::new()),
            state_changed: tokio::sync::Notify::new(),
            onvif_subs: Mutex::new(HashMap::new()),
        })
    }

    fn coalescer_input(
        &self,
        camera: &str,
        source: Source,
        input: Input,
        now: i64,
    ) -> Option<Output> {
        let e = &self.config.events;
        let silence = (source == Source::Hikvision).then_some(e.motion_silence.as_millis() as i64);
        let mut map = self.coalescers.lock().unwrap();
        let c = map
            .entry((camera.to_string(), source))
            .or_insert_with(|| Coalescer::new(e.min_spacing.as_millis() as i64, silence));
        c.input(input, now)
    }

    async fn emit(&self, camera: &str, source: Source, out: Output, detail: serde_json::Value) {
        let rec = NewRecord::stamped(
            self.clock.as_ref(),
            Body::motion(camera, source, out, detail),
        );
        match self.buffer.append(rec).await {
            Ok(a) => self.accepted(camera, out, a),
            Err(e) => tracing::error!(camera, "cannot buffer a motion event: {e}"),
        }
    }

    /// A motion event was accepted (from a stream, GPIO or ingest): a start of a camera that
    /// wants stills asks for one. The event itself has already gone to the buffer.
    pub fn accepted(&self, camera: &str, state: Output, a: crate::buffer::Appended) {
        if state == crate::record::MotionState::Start
            && self.config.camera(camera).is_some_and(|c| c.snapshot)
        {
            self.stills.motion_started(camera, a.seq, a.id);
        }
    }

    async fn tamper(&self, camera: &str, source: Source, detail: serde_json::Value) {
        let now = self.clock.now_ms();
        {
            let mut last = self.last_tamper.lock().unwrap();
            if last
                .get(camera)
                .is_some_and(|t| now - t < TAMPER_SPACING_MS)
            {
                return;
            }
            last.insert(camera.to_string(), now);
        }
        self.buffer
            .alert(
                self.clock.as_ref(),
                AlertKind::Tamper,
                Some(camera),
                json!({"source": source.name(), "camera_event": detail}),
            )
            .await;
    }

    fn state(&self, camera: &str, source: Source, f: impl FnOnce(&mut StreamState)) {
        let mut s = self.states.lock().unwrap();
        f(s.entry((camera.to_string(), source)).or_default());
        drop(s);
        self.state_changed.notify_waiters();
    }

    /// Health problems from a camera's event streams: (stream down?, video loss?).
    pub fn problems(&self, camera: &str) -> (Option<String>, bool) {
        let s = self.states.lock().unwrap();
        let mut down = None;
        let mut loss = false;
        for ((cam, src), st) in s.iter() {
            if cam == camera {
                if !st.connected {
                    down = Some(format!(
                        "{src} event stream: {}",
                        st.last_error
                            .clone()
                            .unwrap_or_else(|| "not connected".into())
                    ));
                }
                loss |= st.video_loss;
            }
        }
        (down, loss)
    }

    /// One Hikvision `EventNotificationAlert` (from the stream or pushed to ingest).
    pub async fn hikvision(&self, camera: &str, xml: &[u8]) -> Result<(), String> {
        let a = hikvision::parse(xml)?;
        let now = self.clock.now_ms();
        let detail = json!({
            "event": a.event_type,
            "channel": a.channel,
            "camera_time": a.date_time,
            "camera_ts": a.date_time.as_deref().and_then(camtime::parse).map(rfc3339_ms),
        });
        match hikvision::classify(&a) {
            hikvision::Signal::Motion => {
                if let Some(o) = self.coalescer_input(camera, Source::Hikvision, Input::Active, now)
                {
                    self.emit(camera, Source::Hikvision, o, detail).await;
                }
            }
            hikvision::Signal::Tamper => self.tamper(camera, Source::Hikvision, detail).await,
            hikvision::Signal::VideoLoss(on) => {
                self.state(camera, Source::Hikvision, |s| s.video_loss = on)
            }
            hikvision::Signal::Heartbeat => self.state(camera, Source::Hikvision, |s| {
                s.video_loss = false;
                s.last_heartbeat_ms = Some(now);
            }),
            hikvision::Signal::Other(_) => {}
        }
        Ok(())
    }

    /// One Dahua event part.
    pub async fn dahua(&self, camera: &str, body: &[u8]) -> Result<(), String> {
        let e = dahua::parse(body)?;
        let now = self.clock.now_ms();
        let detail = json!({"event": e.code, "action": e.action, "channel": e.index});
        let input = match dahua::classify(&e) {
            dahua::Signal::MotionStart => Some(Input::Active),
            dahua::Signal::MotionStop => Some(Input::Inactive),
            dahua::Signal::Tamper => {
                self.tamper(camera, Source::Dahua, detail.clone()).await;
                None
            }
            dahua::Signal::VideoLoss(on) => {
                self.state(camera, Source::Dahua, |s| s.video_loss = on);
                None
            }
            dahua::Signal::Heartbeat => {
                self.state(camera, Source::Dahua, |s| s.last_heartbeat_ms = Some(now));
                None
            }
            dahua::Signal::Other(_) => None,
        };
        if let Some(i) = input {
            if let Some(o) = self.coalescer_input(camera, Source::Dahua, i, now) {
                self.emit(camera, Source::Dahua, o, detail).await;
            }
        }
        Ok(())
    }

    /// A debounced GPIO motion input changed (`active`: motion seen / door open).
    pub async fn gpio(&self, pin: &str, camera: &str, active: bool) {
        let now = self.clock.now_ms();
        let input = if active {
            Input::Active
        } else {
            Input::Inactive
        };
        if let Some(o) = self.coalescer_input(camera, Source::Gpio, input, now) {
            self.emit(camera, Source::Gpio, o, json!({"pin": pin}))
                .await;
        }
    }

    /// Ends motion that went silent (Hikvision sends no end).
    pub async fn tick(&self) {
        let now = self.clock.now_ms();
        let ended: Vec<(String, Source)> = {
            let mut map = self.coalescers.lock().unwrap();
            map.iter_mut()
                .filter_map(|(k, c)| c.tick(now).map(|_| k.clone()))
                .collect()
        };
        for (camera, source) in ended {
            self.emit(&camera, source, Output::End, json!({"reason": "silence"}))
                .await;
        }
    }

    /// The stream tasks for every camera and source, plus the silence ticker, until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tasks = Vec::new();
        for cam in &self.config.cameras {
            for src in &cam.events {
                let source = src.source();
                self.state(&cam.id, source, |s| {
                    s.last_error = Some("connecting".into())
                });
                let (hub, cam, sd) = (self.clone(), cam.clone(), shutdown.clone());
                tasks.push(tokio::spawn(
                    async move { hub.supervise(cam, source, sd).await },
                ));
            }
        }
        let mut t = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = t.tick() => self.tick().await,
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// For `camgw doctor`: runs one camera's event source until it is connected (stream open
    /// or subscription created) or failed once, at most `timeout`; then stops it (an ONVIF
    /// subscription is unsubscribed).
    pub async fn check_source(
        self: Arc<Self>,
        cam: Camera,
        source: EventSource,
        timeout: Duration,
    ) -> Result<(), String> {
        let source = source.source();
        let token = CancellationToken::new();
        let task = tokio::spawn(self.clone().stream_loop(cam.clone(), source, token.clone()));
        let deadline = tokio::time::Instant::now() + timeout;
        let key = (cam.id.clone(), source);
        let result = loop {
            // Registered before the state is read, so a change in between is not missed.
            let changed = self.state_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let st = self.states.lock().unwrap().get(&key).cloned();
            match st {
                Some(s) if s.connected => break Ok(()),
                Some(s) if s.last_error.is_some() => break Err(s.last_error.unwrap()),
                _ => {}
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                break Err(format!("not connected within {} s", timeout.as_secs()));
            }
        };
        token.cancel();
        let _ = task.await;
        result
    }

    /// Runs a stream's loop in a task of its own and restarts it with backoff when it panics
    /// (bytes from a hostile camera): that stream's state says what happened, and every
    /// other stream, camera and task of the agent goes on untouched.
    async fn supervise(self: Arc<Self>, cam: Camera, source: Source, sd: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let task = tokio::spawn(self.clone().stream_loop(cam.clone(), source, sd.clone()));
            let why = match task.await {
                Ok(()) => return,
                Err(e) if e.is_panic() => crate::heavy::panic_message(e.into_panic()),
                Err(_) => return,
            };
            let wait = backoff.next_delay(rand::random::<f64>());
            tracing::error!(camera = %cam.id, %source, "the event stream failed inside the agent: {}; restarting in {} ms", crate::logs::clip(&why), wait.as_millis());
            self.state(&cam.id, source, |st| {
                st.connected = false;
                st.last_error = Some(format!(
                    "the stream failed inside the agent ({}); restarting",
                    crate::logs::clip(&why)
                ));
            });
            tokio::select! {
                _ = sd.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn stream_loop(
        self: Arc<Self>,
        cam: Camera,
        source: Source,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            let r = tokio::select! {
                _ = shutdown.cancelled() => {
                    self.onvif_unsubscribe(&cam).await;
                    return;
                }
                r = async {
                    if source == Source::Onvif {
                        self.onvif_once(&cam, &mut backoff).await
                    } else {
                        self.stream_once(&cam, source, &mut backoff).await
                    }
                } => r,
            };
            let why = r
                .err()
                .unwrap_or_else(|| "the camera closed the stream".into());
            // The reason may quote the camera: bounded in the log and in health.
            let why = crate::logs::clip_to(&why, crate::logs::DETAIL);
            tracing::warn!(camera = %cam.id, %source, "event stream lost: {}", crate::logs::clip(&why));
            self.state(&cam.id, source, |s| {
                s.connected = false;
                s.last_error = Some(why);
            });
            let delay = backoff.next_delay(rand::random::<f64>());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn stream_once(
        &self,
        cam: &Camera,
        source: Source,
        backoff: &mut Backoff,
    ) -> Result<(), String> {
        crate::faults::panic_point("stream", &cam.id);
        let path = match source {
            Source::Hikvision => "/ISAPI/Event/notification/alertStream",
            _ => "/cgi-bin/eventManager.cgi?action=attach&codes=[All]&heartbeat=5",
        };
        let mut url = cam.http_base.clone();
        url.path = format!("{}{path}", url.path.trim_end_matches('/'));
        let creds = cam
            .creds()
            .map(|c| (c.user.to_string(), c.password.to_string()));
        let basic = cam.basic_auth;
        let timeout = self.config.events.read_timeout;
        let open = |auth: Option<String>| {
            let url = url.clone();
            async move {
                let hs: Vec<(&str, String)> =
                    auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
                tokio::time::timeout(timeout, http::open(&url, "GET", &hs, &[]))
                    .await
                    .map_err(|_| "no answer in time".to_string())?
                    .map_err(|e| e.to_string())
            }
        };
        let (mut s, mut status, mut headers, mut rest) = open(None).await?;
        if status == 401 {
            let (u, p) = creds
                .as_ref()
                .ok_or("the camera wants credentials and none are configured")?;
            let auth = http::answer_challenge(
                &headers,
                Creds {
                    user: u,
                    password: p,
                    basic,
                },
                "GET",
                &url.path,
            )
            .ok_or_else(|| {
                if !basic && http::only_basic(&headers) {
                    http::BASIC_ONLY.to_string()
                } else {
                    "no usable auth challenge".to_string()
                }
            })?;
            (s, status, headers, rest) = open(Some(auth)).await?;
        }
        if status == 401 || status == 403 {
            return Err(format!("credentials refused (HTTP {status})"));
        }
        if status != 200 {
            return Err(format!("HTTP {status}"));
        }
        let ct = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let boundary = multipart::boundary(&ct)
            .ok_or_else(|| format!("not a multipart stream (Content-Type {ct:?})"))?;
        let mut parser = multipart::Parser::new(&boundary);
        parser.push(&rest);
        rest.clear();
        self.state(&cam.id, source, |st| {
            st.connected = true;
            st.last_error = None;
        });
        backoff.reset();
        tracing::info!(camera = %cam.id, %source, "event stream connected");
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            while let Some(part) = parser.pull() {
                let r = match source {
                    Source::Hikvision => self.hikvision(&cam.id, &part.body).await,
                    _ => self.dahua(&cam.id, &part.body).await,
                };
                if let Err(e) = r {
                    tracing::debug!(camera = %cam.id, "ignored an event part: {}", crate::logs::clip(&e));
                }
            }
            let n = tokio::time::timeout(timeout, s.read(&mut buf))
                .await
                .map_err(|_| format!("silent for {} s (no event or heartbeat)", timeout.as_secs()))?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the camera closed the stream".into());
            }
            parser.push(&buf[..n]);
        }
    }
}
