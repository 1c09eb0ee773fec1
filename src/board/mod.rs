//! The gateway's own hardware: board pin maps ([`crate::boardmap`]), drivers generic over embedded-hal
//! 1.0 ([`input`], [`led`], [`relay`], [`temp`]), the Linux and simulated backends ([`hw`]),
//! and the board task that ties them to the agent: `enclosure_open`/`enclosure_closed` from
//! the tamper switch, `over_temperature`/`temperature_ok` with hysteresis, GPIO motion events
//! (`source: "gpio"`), the status LED pattern, and relay power-cycles for `reboot_camera`.
//!
//! Everything with a decision in it is pure and takes `now`; the task only samples, awaits
//! and appends. A part that cannot be opened (a missing chip, a busy line, a silent sensor)
//! is left out and reported in a `board_fault` alert and the telemetry; the rest of the
//! agent runs on.

pub mod hw;
pub mod input;
pub mod led;
pub mod relay;
#[cfg(feature = "sim")]
pub mod simhw;
pub mod temp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::boardmap::{self as map, Backend, BoardMap, Role};
use crate::config::Config;
use crate::record::AlertKind;
use hw::{Bus, Pin};
use input::DebouncedInput;
use led::{Pattern, StatusLed};
use relay::{Cycles, Relay};
use temp::{Hysteresis, TempSensor};

/// The opened board: each driver owns its pin or bus.
pub struct Board {
    pub map: BoardMap,
    led: Option<StatusLed<Pin>>,
    tamper: Option<DebouncedInput<Pin>>,
    /// (pin, camera, input)
    inputs: Vec<(String, String, DebouncedInput<Pin>)>,
    relays: BTreeMap<String, Relay<Pin>>,
    sensors: Vec<(String, TempSensor<Bus>)>,
}

/// Where the simulated board's files live.
pub fn sim_dir(config: &Config) -> PathBuf {
    std::env::var_os("CAMGW_SIM_BOARD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| config.gateway.data_dir.join("sim-board"))
}

/// Resolves `gateway.board` (auto-detecting from the device tree) and checks the config's
/// inputs and relays against it. None for "none".
pub fn load_map(config: &Config) -> Result<Option<BoardMap>, String> {
    let Some(m) = map::resolve(&config.gateway.board, Path::new(map::DEVICE_TREE))? else {
        return Ok(None);
    };
    for pin in config.board.inputs.keys() {
        if m.pin(pin).map(|p| p.role) != Some(Role::Motion) {
            return Err(format!(
                "board.inputs.{pin}: board {} has no input {pin}",
                m.name
            ));
        }
    }
    for c in &config.cameras {
        if let Some(r) = &c.relay {
            if m.pin(r).map(|p| p.role) != Some(Role::Relay) {
                return Err(format!(
                    "camera {}: board {} has no relay {r}",
                    c.id, m.name
                ));
            }
        }
    }
    Ok(Some(m))
}

/// What a firmware build says about a board file with `backend = "sim"`.
#[cfg(not(feature = "sim"))]
const NO_SIM: &str =
    "this board file uses the simulated backend, which this build does not have (firmware builds leave it out): use a real board or board = \"none\"";

impl Board {
    /// Opens every part the config uses: the status LED, the tamper switch, the configured
    /// inputs, every relay (driven to its default at once) and every sensor. Parts that fail
    /// are left out; their problems are returned.
    pub fn open(map: BoardMap, config: &Config) -> (Board, Vec<String>) {
        let dir = sim_dir(config);
        let mut problems = Vec::new();
        if map.backend == Backend::Sim {
            if let Err(e) = std::fs::create_dir_all(&dir) {
                problems.push(format!("cannot create {}: {e}", dir.display()));
            }
        }
        let open_pin = |spec: &map::Pin, initial_high: Option<bool>| match map.backend {
            Backend::Linux => hw::open_cdev(spec, initial_high),
            #[cfg(feature = "sim")]
            Backend::Sim => simhw::SimPin::open(&dir, spec, initial_high),
            #[cfg(not(feature = "sim"))]
            Backend::Sim => Err(NO_SIM.to_string()),
        };
        let debounce = config.board.debounce.as_millis() as u64;
        let mut board = Board {
            led: None,
            tamper: None,
            inputs: Vec::new(),
            relays: BTreeMap::new(),
            sensors: Vec::new(),
            map: map.clone(),
        };
        for spec in &map.pins {
            match spec.role {
                Role::StatusLed => match open_pin(spec, Some(spec.active_low)) {
                    Ok(p) => board.led = Some(StatusLed::new(p, spec.active_low)),
                    Err(e) => problems.push(e),
                },
                Role::Tamper => match open_pin(spec, None) {
                    Ok(p) => board.tamper = Some(DebouncedInput::new(p, spec.active_low, debounce)),
                    Err(e) => problems.push(e),
                },
                Role::Motion => {
                    let Some(camera) = config.board.inputs.get(&spec.name) else {
                        continue; // not wired on this gateway
                    };
                    match open_pin(spec, None) {
                        Ok(p) => board.inputs.push((
                            spec.name.clone(),
                            camera.clone(),
                            DebouncedInput::new(p, spec.active_low, debounce),
                        )),
                        Err(e) => problems.push(e),
                    }
                }
                Role::Relay => {
                    // Requested as an output already at its default level: no glitch.
                    let level = spec.default_on != spec.active_low;
                    match open_pin(spec, Some(level)) {
                        Ok(p) => match Relay::new(p, spec.active_low, spec.default_on) {
                            Ok(r) => {
                                board.relays.insert(spec.name.clone(), r);
                            }
                            Err((_, e)) => problems.push(format!("relay {}: {e}", spec.name)),
                        },
                        Err(e) => problems.push(e),
                    }
                }
            }
        }
        let mut buses: BTreeMap<String, ()> = BTreeMap::new();
        for s in &map.sensors {
            let bus = match map.backend {
                Backend::Linux => hw::open_i2c(&s.bus),
                #[cfg(feature = "sim")]
                Backend::Sim => Ok(simhw::SimBus::bus(
                    &dir,
                    map.sensors
                        .iter()
                        .filter(|o| o.bus == s.bus)
                        .map(|o| (o.address, o.kind, o.name.clone()))
                        .collect(),
                )),
                #[cfg(not(feature = "sim"))]
                Backend::Sim => Err(NO_SIM.to_string()),
            };
            buses.insert(s.bus.clone(), ());
            match bus {
                Ok(b) => board
                    .sensors
                    .push((s.name.clone(), TempSensor::new(b, s.kind, s.address))),
                Err(e) => problems.push(format!("sensor {} ({}): {e}", s.name, s.kind.name())),
            }
        }
        (board, problems)
    }

    /// Reads every sensor once, blocking for conversions (`camgw doctor`).
    pub fn sample_sensors(&mut self) -> Vec<(String, &'static str, Result<f64, String>)> {
        self.sensors
            .iter_mut()
            .map(|(name, s)| {
                let r = s.start().and_then(|_| {
                    std::thread::sleep(Duration::from_millis(s.conversion_ms()));
                    s.finish()
                });
                (
                    name.clone(),
                    s.kind().name(),
                    r.map(|c| c as f64).map_err(|e| e.to_string()),
                )
            })
            .collect()
    }

    /// Reads the tamper switch once: Some(Ok(open)), or None without one.
    pub fn tamper_open(&mut self) -> Option<Result<bool, String>> {
        let t = self.tamper.as_mut()?;
        Some(match t.poll(0) {
            Ok(_) => Ok(t.active().unwrap_or(false)),
            Err(e) => Err(e.to_string()),
        })
    }

    /// The relay names this board drives.
    pub fn relay_names(&self) -> Vec<String> {
        self.relays.keys().cloned().collect()
    }
}

/// What the board reports (telemetry, `camgw doctor`, tests).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct BoardStatus {
    pub board: String,
    pub enclosure_open: Option<bool>,
    pub temperatures_c: BTreeMap<String, f64>,
    pub over_temperature: bool,
    pub relays: BTreeMap<String, bool>,
    pub inputs: BTreeMap<String, bool>,
    pub led: &'static str,
    pub faults: Vec<String>,
}

/// Requests to the board task.
pub enum Command {
    /// Switch the relay off for `off`, then on again. Answers how long it stays off, or why
    /// it cannot.
    PowerCycle {
        relay: String,
        reply: oneshot::Sender<Result<Duration, String>>,
    },
}

/// The agent's handle on the running board task.
#[derive(Clone)]
pub struct Handle {
    pub status: Arc<Mutex<BoardStatus>>,
    tx: mpsc::Sender<Command>,
}

impl Handle {
    pub async fn power_cycle(&self, relay: &str) -> Result<Duration, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::PowerCycle {
                relay: relay.to_string(),
                reply,
            })
            .await
            .map_err(|_| "the board task is not running".to_string())?;
        rx.await.map_err(|_| "the board task stopped".to_string())?
    }
}

/// What the LED needs to know about the rest of the agent.
pub trait AgentState: Send + Sync + 'static {
    fn connected(&self) -> bool;
    fn camera_problem(&self) -> bool;
    fn fault(&self) -> bool;
}

/// The board loop's collaborators.
pub struct Task {
    pub board: Board,
    pub config: Arc<Config>,
    pub buffer: crate::buffer::Buffer,
    pub clock: Arc<dyn crate::clock::Clock>,
    pub hub: Arc<crate::events::Hub>,
    pub state: Arc<dyn AgentState>,
    pub beat: Arc<crate::watchdog::Beat>,
    /// Problems from opening the board.
    pub open_problems: Vec<String>,
}

impl Task {
    async fn alert(&self, kind: AlertKind, detail: serde_json::Value) {
        self.buffer
            .alert(self.clock.as_ref(), kind, None, detail)
            .await;
    }

    /// Starts the board loop; returns the handle and the task.
    pub fn spawn(self, shutdown: CancellationToken) -> (Handle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(8);
        let status = Arc::new(Mutex::new(BoardStatus {
            board: self.board.map.name.clone(),
            faults: self.open_problems.clone(),
            led: Pattern::Off.name(),
            ..Default::default()
        }));
        let handle = Handle {
            status: status.clone(),
            tx,
        };
        let task = tokio::spawn(self.run(rx, status, shutdown));
        (handle, task)
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        status: Arc<Mutex<BoardStatus>>,
        shutdown: CancellationToken,
    ) {
        let cfg = self.config.board.clone();
        self.beat.set_active(true);
        let start = tokio::time::Instant::now();
        let ms = move || start.elapsed().as_millis() as u64;
        if !self.open_problems.is_empty() {
            tracing::error!(problems = ?self.open_problems, board = %self.board.map.name, "board parts could not be opened");
            self.alert(
                AlertKind::BoardFault,
                json!({"board": self.board.map.name, "problems": self.open_problems}),
            )
            .await;
        }
        let over = cfg.over_temperature_c;
        let mut heat = Hysteresis::new(over, over - cfg.temperature_hysteresis_c);
        let mut cycles = Cycles::default();
        let mut sensor_faults: BTreeMap<String, String> = BTreeMap::new();
        let mut pin_fault: Option<String> = None;
        let mut poll = tokio::time::interval(cfg.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut temp_tick = tokio::time::interval(cfg.temperature_interval);
        temp_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        {
            let mut st = status.lock().unwrap();
            st.relays = self
                .board
                .relays
                .iter()
                .map(|(n, r)| (n.clone(), r.is_on()))
                .collect();
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(cmd) = rx.recv() => match cmd {
                    Command::PowerCycle { relay, reply } => {
                        let r = self.begin_cycle(&relay, &mut cycles, ms(), cfg.relay_off);
                        if r.is_ok() {
                            status.lock().unwrap().relays.insert(relay.clone(), false);
                            self.alert(AlertKind::CameraPowerCycled, json!({"relay": relay, "off_s": cfg.relay_off.as_secs()})).await;
                        }
                        let _ = reply.send(r);
                    }
                },
                _ = poll.tick() => {
                    let now = ms();
                    let mut errors = Vec::new();
                    if let Some(t) = self.board.tamper.as_mut() {
                        match t.poll(now) {
                            Ok(Some(open)) => {
                                status.lock().unwrap().enclosure_open = Some(open);
                                let kind = if open { AlertKind::EnclosureOpen } else { AlertKind::EnclosureClosed };
                                tracing::warn!(%kind, "enclosure tamper switch changed");
                                self.alert(kind, json!({"open": open, "board": self.board.map.name})).await;
                            }
                            Ok(None) => {
                                let s = t.active();
                                let open_at_start = {
                                    let mut st = status.lock().unwrap();
                                    let first = st.enclosure_open.is_none() && s.is_some();
                                    if first {
                                        st.enclosure_open = s;
                                    }
                                    first && s == Some(true)
                                };
                                if open_at_start {
                                    // Open at start-up: a state the station must know.
                                    self.alert(AlertKind::EnclosureOpen, json!({"open": true, "board": self.board.map.name, "at_start": true})).await;
                                }
                            }
                            Err(e) => errors.push(format!("tamper: {e}")),
                        }
                    }
                    for (pin, camera, input) in self.board.inputs.iter_mut() {
                        match input.poll(now) {
                            Ok(Some(active)) => {
                                status.lock().unwrap().inputs.insert(pin.clone(), active);
                                self.hub.gpio(pin, camera, active).await;
                            }
                            Ok(None) => {}
                            Err(e) => errors.push(format!("{pin}: {e}")),
                        }
                    }
                    for relay in cycles.due(now) {
                        match self.board.relays.get_mut(&relay).map(|r| r.set(true)) {
                            Some(Ok(())) => {
                                status.lock().unwrap().relays.insert(relay.clone(), true);
                                tracing::info!(relay, "power-cycle done: relay back on");
                            }
                            Some(Err(e)) => {
                                errors.push(format!("{relay}: {e}"));
                                // Try again on the next tick: a camera must not stay off.
                                cycles.begin(&relay, now, 0);
                            }
                            None => {}
                        }
                    }
                    let fault = !sensor_faults.is_empty() || pin_fault.is_some() || heat.active() || !self.open_problems.is_empty() || self.state.fault();
                    let pattern = Pattern::choose(fault, self.state.connected(), self.state.camera_problem());
                    if let Some(led) = self.board.led.as_mut() {
                        if let Err(e) = led.show(pattern, now) {
                            errors.push(format!("status_led: {e}"));
                        }
                    }
                    status.lock().unwrap().led = pattern.name();
                    let joined = (!errors.is_empty()).then(|| errors.join("; "));
                    if joined != pin_fault {
                        if let Some(e) = &joined {
                            tracing::error!("board pin error: {e}");
                            self.alert(AlertKind::BoardFault, json!({"board": self.board.map.name, "problems": errors})).await;
                        }
                        pin_fault = joined;
                    }
                    self.beat.bump();
                }
                _ = temp_tick.tick() => {
                    let mut readings = BTreeMap::new();
                    let mut new_faults = Vec::new();
                    for (name, sensor) in self.board.sensors.iter_mut() {
                        let r = match sensor.start() {
                            Ok(()) => {
                                let wait = sensor.conversion_ms();
                                if wait > 0 {
                                    tokio::time::sleep(Duration::from_millis(wait)).await;
                                }
                                sensor.finish()
                            }
                            Err(e) => Err(e),
                        };
                        match r {
                            Ok(c) => {
                                // Two decimals: the parts are no more accurate than that.
                                readings.insert(name.clone(), (c as f64 * 100.0).round() / 100.0);
                                if sensor_faults.remove(name).is_some() {
                                    tracing::info!(sensor = %name, "temperature sensor answers again");
                                }
                            }
                            Err(e) => {
                                let msg = format!("sensor {name} ({}): {e}", sensor.kind().name());
                                if sensor_faults.insert(name.clone(), msg.clone()).is_none() {
                                    tracing::error!("{msg}");
                                    new_faults.push(msg);
                                }
                            }
                        }
                    }
                    if !new_faults.is_empty() {
                        self.alert(AlertKind::BoardFault, json!({"board": self.board.map.name, "problems": new_faults})).await;
                    }
                    // The enclosure sensor decides; a board without one uses its first sensor.
                    let decisive = readings.get("enclosure").or_else(|| readings.values().next()).copied();
                    if let Some(c) = decisive {
                        match heat.update(c) {
                            Some(true) => {
                                tracing::warn!(celsius = c, limit = over, "enclosure over temperature");
                                self.alert(AlertKind::OverTemperature, json!({"celsius": c, "limit_c": over, "sensors": readings})).await;
                            }
                            Some(false) => {
                                tracing::info!(celsius = c, "enclosure temperature back to normal");
                                self.alert(AlertKind::TemperatureOk, json!({"celsius": c, "limit_c": over, "clear_below_c": over - cfg.temperature_hysteresis_c})).await;
                            }
                            None => {}
                        }
                    }
                    let mut st = status.lock().unwrap();
                    st.temperatures_c = readings;
                    st.over_temperature = heat.active();
                    st.faults = self.open_problems.iter().chain(sensor_faults.values()).chain(pin_fault.iter()).cloned().collect();
                }
            }
        }
        // A camera must not stay off because the agent stopped mid-cycle.
        for relay in cycles.due(u64::MAX) {
            if let Some(r) = self.board.relays.get_mut(&relay) {
                let _ = r.set(true);
            }
        }
        if let Some(led) = self.board.led.as_mut() {
            let _ = led.set(false);
        }
        self.beat.set_active(false);
    }

    fn begin_cycle(
        &mut self,
        relay: &str,
        cycles: &mut Cycles,
        now: u64,
        off: Duration,
    ) -> Result<Duration, String> {
        let Some(r) = self.board.relays.get_mut(relay) else {
            return Err(format!(
                "board {} has no relay {relay} (or it could not be opened)",
                self.board.map.name
            ));
        };
        if cycles.cycling(relay) {
            return Err(format!("{relay} is already being power-cycled"));
        }
        r.set(false)
            .map_err(|e| format!("{relay}: cannot switch off: {e}"))?;
        cycles.begin(relay, now, off.as_millis() as u64);
        tracing::info!(relay, off_s = off.as_secs(), "power-cycling a camera");
        Ok(off)
    }
}
