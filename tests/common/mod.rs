//! Test harness: a real broker per test (Mosquitto from Debian, or the embedded broker where
//! Mosquitto is absent, said loudly), the agent binary as a child process, an MQTT subscriber
//! and a tiny HTTP client. Every wait is bounded.
#![allow(dead_code)]

pub mod station;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_camgw");

/// Builds the firmware binary (no demo, no embedded broker) that gateways run, and points
/// the harness at it, unless CAMGW_BIN already names one.
pub fn use_firmware_binary() {
    if std::env::var_os("CAMGW_BIN").is_some() {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--no-default-features",
            "--target-dir",
        ])
        .arg(format!("{root}/target/firmware"))
        .current_dir(root)
        .status()
        .expect("cargo build of the firmware binary");
    assert!(status.success());
    std::env::set_var("CAMGW_BIN", format!("{root}/target/firmware/release/camgw"));
}

/// A `Command` for a camgw binary, through qemu-user when it was cross-built for another
/// architecture (`cargo test --target aarch64-unknown-linux-gnu` runs the tests under the
/// runner from .cargo/config.toml, but the binaries they spawn need the emulator too).
pub fn camgw_command(bin: &str) -> Command {
    match foreign_arch(bin) {
        Some((qemu, sysroot)) => {
            let mut c = Command::new(qemu);
            if let Some(root) = sysroot {
                c.arg("-L").arg(root);
            }
            c.arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// Whether `bin` runs under an emulator here (a cross-built binary without binfmt_misc).
pub fn emulated(bin: &str) -> bool {
    foreign_arch(bin).is_some()
}

/// (emulator, sysroot) when `bin` cannot be executed directly here (cross-built, and no
/// binfmt_misc registration). Under qemu-user the test process itself believes it is ARM, so
/// the only reliable test is to try once.
fn foreign_arch(bin: &str) -> Option<(&'static str, Option<&'static str>)> {
    static DIRECT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let direct = *DIRECT.get_or_init(|| {
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if direct {
        return None;
    }
    let mut head = [0u8; 20];
    std::fs::File::open(bin).ok()?.read_exact(&mut head).ok()?;
    let (qemu, root) = match u16::from_le_bytes([head[18], head[19]]) {
        183 => ("qemu-aarch64", "/usr/aarch64-linux-gnu"),
        40 => ("qemu-arm", "/usr/arm-linux-gnueabihf"),
        _ => return None,
    };
    Some((
        qemu,
        Some(root).filter(|r| std::path::Path::new(r).exists()),
    ))
}

/// The agent binary to run: `CAMGW_BIN` when set (benchmarks point it at the firmware
/// build), else the one cargo built for this test.
pub fn agent_bin() -> String {
    std::env::var("CAMGW_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// True when the suite runs under qemu-user (CI's aarch64 pass sets `CAMGW_TEST_TIME_SCALE`):
/// pace and memory figures are then the emulator's, so bounds on them are checked natively.
pub fn emulated_suite() -> bool {
    std::env::var("CAMGW_TEST_TIME_SCALE").is_ok_and(|v| v != "1")
}

/// Waits scale by `CAMGW_TEST_TIME_SCALE` (CI sets it for the suite under qemu, where
/// everything runs several times slower).
/// The runtime the simulated cameras (and in-process probe rounds) of a test run on.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The one way a test starts a simulated camera (HTTP/JPEG, ONVIF, RTSP, event streams) on
/// loopback.
pub fn sim_camera(
    rt: &tokio::runtime::Runtime,
    ctl: camgw::sim::SimControl,
) -> camgw::sim::SimCamera {
    rt.block_on(camgw::sim::SimCamera::start(ctl))
        .expect("start a simulated camera")
}

/// A `[[camera]]` of a test config, built by key and rendered by the `toml` crate, so every
/// value is quoted and escaped as the agent's parser expects.
#[derive(Clone)]
pub struct CameraToml(toml::Table);

impl CameraToml {
    /// A camera on loopback.
    pub fn new(id: &str, vendor: &str) -> CameraToml {
        CameraToml(toml::Table::new())
            .set("id", id)
            .set("vendor", vendor)
            .set("host", "127.0.0.1")
    }

    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> CameraToml {
        self.0.insert(key.to_string(), value.into());
        self
    }

    /// `username = "admin"` and this password.
    pub fn login(self, password: &str) -> CameraToml {
        self.set("username", "admin").set("password", password)
    }

    /// Every URL of a simulated camera: probed for health through all of them.
    pub fn urls_of(self, cam: &camgw::sim::SimCamera) -> CameraToml {
        self.set("http_base", cam.http_base())
            .set("snapshot_url", cam.snapshot_url())
            .set("rtsp_url", cam.rtsp_url())
            .set("onvif_url", cam.onvif_url())
    }

    /// Subscribes to the camera's own event stream and leaves health probes off.
    pub fn events_of(self, vendor: &str, cam: &camgw::sim::SimCamera) -> CameraToml {
        self.set("http_base", cam.http_base())
            .set("events", toml::Value::Array(vec![vendor.into()]))
            .set("probe", false)
    }

    /// The TOML text, a `[[camera]]` block.
    pub fn text(&self) -> String {
        format!("\n[[camera]]\n{}", toml::to_string(&self.0).unwrap())
    }
}

/// A `[health]` table with the probe interval and timeout scaled like every wait: under
/// emulation a healthy round that runs slow must not count as a failed one.
pub fn health_block(interval_s: u64, timeout_ms: u64, fail: u32, recover: u32) -> String {
    let interval = scaled(Duration::from_secs(interval_s)).as_secs_f64().ceil() as u64;
    let timeout = scaled(Duration::from_millis(timeout_ms)).as_millis();
    format!("[health]\ninterval_s = {interval}\ntimeout_ms = {timeout}\nfail_threshold = {fail}\nrecover_threshold = {recover}\n")
}

/// Alerts or events on `leaf`, each seq once (a QoS 1 re-send after a reconnect or restart
/// repeats a message with its seq), in arrival order.
pub fn distinct(msgs: &[Msg], leaf: &str) -> Vec<serde_json::Value> {
    let mut seen = std::collections::HashSet::new();
    msgs.iter()
        .filter(|m| m.leaf() == leaf)
        .map(|m| m.json())
        .filter(|v| seen.insert(v["seq"].as_u64().expect("seq")))
        .collect()
}

pub fn scaled(d: Duration) -> Duration {
    let k: f64 = std::env::var("CAMGW_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    d.mul_f64(k.max(1.0))
}

/// Sends SIGTERM to a child and waits at most `within` for it to exit: its status, or None
/// when it is still running (the caller decides what that means).
pub fn term_within(c: &mut Child, within: Duration) -> Option<ExitStatus> {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(c.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A `/proc/{pid}/status` figure in KiB (`VmRSS:`, `VmHWM:`), 0 when unreadable.
pub fn proc_status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU time of `pid` in ms (from `/proc/{pid}/stat`), 0 when unreadable.
pub fn proc_cpu_ms(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1000 / hz
}

/// Debian's (or a local) Mosquitto binary, when installed.
pub fn mosquitto_path() -> Option<PathBuf> {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A broker on a free loopback port that a test can stop and restart.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: String,
    persistent: bool,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with("")
    }

    /// `extra` is appended to the Mosquitto listener config (TLS settings, say).
    pub fn start_with(extra: &str) -> Broker {
        let mut b = Broker {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.to_string(),
            persistent: false,
        };
        b.restart();
        b
    }

    /// Mosquitto with persistence on: sessions and queued messages survive a restart after
    /// [`Broker::stop_graceful`] (SIGTERM makes it write its database).
    pub fn start_persistent() -> Broker {
        let mut b = Broker {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
            extra: String::new(),
            persistent: true,
        };
        b.restart();
        b
    }

    /// SIGTERM, and wait for the exit (killed after 10 s).
    pub fn stop_graceful(&mut self) {
        if let Some(mut c) = self.child.take() {
            if term_within(&mut c, Duration::from_secs(10)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// The broker process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_mosquitto() -> bool {
        mosquitto_path().is_some()
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let child = match mosquitto_path() {
            Some(m) => {
                let conf = self.dir.path().join("mosquitto.conf");
                let persistence = if self.persistent {
                    format!(
                        // As root Mosquitto drops to its own user, which cannot write the
                        // test's private folder: stay root to keep the database.
                        "persistence true\npersistence_location {}/\nuser root\n",
                        self.dir.path().display()
                    )
                } else {
                    "persistence false\n".to_string()
                };
                std::fs::write(
                    &conf,
                    format!(
                        "listener {} 127.0.0.1\nallow_anonymous true\n{persistence}max_inflight_messages 0\nmax_queued_messages 100000\n{}\n",
                        self.port, self.extra
                    ),
                )
                .unwrap();
                let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).unwrap();
                Command::new(m)
                    .arg("-c")
                    .arg(&conf)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("spawn mosquitto")
            }
            None => {
                assert!(
                    self.extra.is_empty(),
                    "this test needs Mosquitto (TLS listener)"
                );
                eprintln!("*** mosquitto not found: using camgw's embedded broker instead ***");
                camgw_command(BIN)
                    .args(["embedded-broker", "--port", &self.port.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn embedded broker")
            }
        };
        self.child = Some(child);
        assert!(
            wait_port(self.port, Duration::from_secs(10)),
            "broker did not start on port {}: {}",
            self.port,
            std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One message seen by a subscriber.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }
    pub fn leaf(&self) -> &str {
        self.topic.rsplit('/').next().unwrap_or("")
    }
}

/// A subscriber on its own thread; resubscribes after reconnects.
pub struct Subscriber {
    rx: mpsc::Receiver<(Msg, Instant)>,
    pub seen: Vec<Msg>,
    /// When each message of `seen` arrived at the subscriber's thread.
    pub arrived: Vec<Instant>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Subscriber {
    pub fn new(port: u16, filter: &str) -> Subscriber {
        Subscriber::with(port, filter, &format!("test-sub-{}", rand_suffix()), true)
    }

    /// A persistent session (clean session off) under a fixed client id: what the broker
    /// queued for `id` while it was away arrives when it comes back.
    pub fn persistent(port: u16, filter: &str, id: &str) -> Subscriber {
        Subscriber::with(port, filter, id, false)
    }

    fn with(port: u16, filter: &str, id: &str, clean: bool) -> Subscriber {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let filter = filter.to_string();
        let id = id.to_string();
        std::thread::spawn(move || {
            let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
            opts.set_keep_alive(Duration::from_secs(5));
            opts.set_clean_session(clean);
            // Large enough for what a hostile peer may publish (tests/hostile.rs).
            opts.set_max_packet_size(8 << 20, 8 << 20);
            let (client, mut conn) = rumqttc::Client::new(opts, 100);
            for ev in conn.iter() {
                if stop2.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                match ev {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(filter.clone(), rumqttc::QoS::AtLeastOnce);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        if tx
                            .send((
                                Msg {
                                    topic: p.topic.clone(),
                                    payload: p.payload.to_vec(),
                                    retain: p.retain,
                                },
                                Instant::now(),
                            ))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("test subscriber: {e} (reconnecting)");
                        std::thread::sleep(Duration::from_millis(100))
                    }
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("subscriber did not get its SUBACK");
        Subscriber {
            rx,
            seen: Vec::new(),
            arrived: Vec::new(),
            stop,
        }
    }

    /// Collects messages until `done(&seen)` holds; panics after `timeout`.
    pub fn wait_until(&mut self, timeout: Duration, what: &str, done: impl Fn(&[Msg]) -> bool) {
        let timeout = scaled(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.seen) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; saw {} messages, last: {:?}",
                    self.seen.len(),
                    self.seen
                        .last()
                        .map(|m| (&m.topic, String::from_utf8_lossy(&m.payload)))
                );
            }
            if let Ok((m, t)) = self.rx.recv_timeout(left.min(Duration::from_millis(200))) {
                self.seen.push(m);
                self.arrived.push(t);
            }
        }
    }

    /// Takes whatever has arrived, waiting at most `d` for more (for asserting absence).
    pub fn drain_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok((m, t)) => {
                    self.seen.push(m);
                    self.arrived.push(t);
                }
                Err(_) => break,
            }
        }
    }

    pub fn on(&self, leaf: &str) -> Vec<serde_json::Value> {
        self.seen
            .iter()
            .filter(|m| m.leaf() == leaf)
            .map(|m| m.json())
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn rand_suffix() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{n:x}-{}", std::process::id())
}

/// Distinct seqs of the events seen, and how many were duplicates.
pub fn event_seqs(msgs: &[Msg]) -> (std::collections::BTreeSet<u64>, usize) {
    let mut set = std::collections::BTreeSet::new();
    let mut dups = 0;
    for m in msgs.iter().filter(|m| m.leaf() == "event") {
        if !set.insert(m.json()["seq"].as_u64().unwrap()) {
            dups += 1;
        }
    }
    (set, dups)
}

/// In arrival order (across reconnect re-sends), each new seq is larger than the last new one.
pub fn assert_seq_order(msgs: &[Msg], leaf: &str) {
    let mut max = 0;
    let mut seen = std::collections::HashSet::new();
    for m in msgs.iter().filter(|m| m.leaf() == leaf) {
        let s = m.json()["seq"].as_u64().unwrap();
        if seen.insert(s) {
            assert!(s > max, "seq {s} arrived after {max} on {leaf}");
            max = s;
        }
    }
}

/// The agent binary with a config in its own directory.
pub struct Agent {
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub ingest: SocketAddr,
    pub broker_port: u16,
    /// Extra environment for the agent process.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

pub const GW: &str = "gw-test";
pub const WARD: &str = "w-test";

/// A gateway config for a test, typed: tables of keys rendered by the `toml` crate (values
/// quoted and escaped as the agent's parser expects), `[[camera]]` blocks in order.
#[derive(Clone)]
pub struct TestConfig {
    doc: toml::Table,
    cameras: Vec<toml::Table>,
}

impl TestConfig {
    /// What every test starts from: this gateway, the test's broker and ingest port, fast
    /// reconnects, and no camera.
    pub fn new(broker_port: u16, ingest: SocketAddr, data_dir: &Path) -> TestConfig {
        TestConfig {
            doc: toml::Table::new(),
            cameras: Vec::new(),
        }
        .set("gateway", "id", GW)
        .set("gateway", "ward", WARD)
        .set("gateway", "data_dir", data_dir.display().to_string())
        .set("mqtt", "url", format!("mqtt://127.0.0.1:{broker_port}"))
        .set("mqtt", "keep_alive_s", 5)
        .set("mqtt", "reconnect_min_ms", 50)
        .set("mqtt", "reconnect_max_s", 1)
        .set("ingest", "listen", ingest.to_string())
    }

    /// Sets `table.key` (creating the table).
    pub fn set(mut self, table: &str, key: &str, value: impl Into<toml::Value>) -> TestConfig {
        let t = self
            .doc
            .entry(table.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t.as_table_mut()
            .expect("a table")
            .insert(key.to_string(), value.into());
        self
    }

    /// Removes `table.key`.
    pub fn unset(mut self, table: &str, key: &str) -> TestConfig {
        if let Some(t) = self.doc.get_mut(table).and_then(|t| t.as_table_mut()) {
            t.remove(key);
        }
        self
    }

    pub fn camera(mut self, cam: CameraToml) -> TestConfig {
        self.cameras.push(cam.0);
        self
    }

    /// Merges TOML text (whole tables and `[[camera]]` blocks, as a test writes them): its
    /// keys win, its cameras come after the ones already there.
    pub fn merge(mut self, text: &str) -> TestConfig {
        let extra: toml::Table = text
            .parse()
            .unwrap_or_else(|e| panic!("test config is not TOML: {e}\n{text}"));
        for (name, v) in extra {
            match (name.as_str(), v) {
                ("camera", toml::Value::Array(cams)) => {
                    for c in cams {
                        self.cameras
                            .push(c.as_table().expect("a camera table").clone());
                    }
                }
                (_, toml::Value::Table(t)) => {
                    for (k, v) in t {
                        self = self.set(&name, &k, v);
                    }
                }
                (_, v) => {
                    self.doc.insert(name, v);
                }
            }
        }
        self
    }

    /// Merges `key = value` lines into one table.
    pub fn merge_into(self, table: &str, lines: &str) -> TestConfig {
        self.merge(&format!("[{table}]\n{lines}"))
    }

    pub fn text(&self) -> String {
        let mut doc = self.doc.clone();
        if !self.cameras.is_empty() {
            doc.insert(
                "camera".into(),
                toml::Value::Array(
                    self.cameras
                        .iter()
                        .cloned()
                        .map(toml::Value::Table)
                        .collect(),
                ),
            );
        }
        toml::to_string(&doc).unwrap()
    }
}

/// The two cameras most tests use: cam01 (Hikvision, with a password) and cam02 (Dahua),
/// neither probed.
pub fn default_cameras(c: TestConfig) -> TestConfig {
    c.camera(
        CameraToml::new("cam01", "hikvision")
            .login("pa55-SECRET-word")
            .set("probe", false),
    )
    .camera(CameraToml::new("cam02", "dahua").set("probe", false))
}

/// The base config with `extra`: `mqtt key lines--\n[tables and cameras]` (the part before
/// `--` goes into `[mqtt]`), then cam01 and cam02.
pub fn config_text(broker_port: u16, ingest: SocketAddr, data_dir: &Path, extra: &str) -> String {
    let (mqtt_extra, rest) = extra.split_once("--\n").unwrap_or(("", extra));
    let c = TestConfig::new(broker_port, ingest, data_dir)
        .merge_into("mqtt", mqtt_extra)
        .merge(rest);
    default_cameras(c).text()
}

impl Agent {
    /// `extra`: mqtt keys, then a line `--`, then more sections (see [`config_text`]).
    pub fn start(broker_port: u16, extra: &str) -> Agent {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut a = Agent::in_dir(&dir, dir.join("data"), broker_port, extra);
        a._tmp = Some(tmp);
        a
    }

    pub fn in_dir(dir: &Path, data_dir: PathBuf, broker_port: u16, extra: &str) -> Agent {
        Agent::in_dir_env(dir, data_dir, broker_port, extra, Vec::new())
    }

    pub fn in_dir_env(
        dir: &Path,
        data_dir: PathBuf,
        broker_port: u16,
        extra: &str,
        env: Vec<(String, String)>,
    ) -> Agent {
        let ingest: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let text = config_text(broker_port, ingest, &data_dir, extra);
        Agent::from_text(dir, data_dir, broker_port, ingest, &text, env)
    }

    /// Starts the agent on a whole config text (which must use `ingest` as `ingest.listen`).
    pub fn from_text(
        dir: &Path,
        data_dir: PathBuf,
        broker_port: u16,
        ingest: SocketAddr,
        text: &str,
        env: Vec<(String, String)>,
    ) -> Agent {
        let config_path = dir.join("camgw.toml");
        std::fs::write(&config_path, text).unwrap();
        let mut a = Agent {
            dir: dir.to_path_buf(),
            data_dir,
            config_path,
            ingest,
            broker_port,
            env,
            child: None,
            _tmp: None,
        };
        a.spawn();
        a
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none());
        let log_mark = self.log().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .unwrap();
        let mut command = camgw_command(&agent_bin());
        command
            .args(["run", "--config"])
            .arg(&self.config_path)
            .env("CAMGW_LOG", "debug")
            // As the systemd unit runs it: a contained panic (the containment tests inject
            // them) does not symbolise a backtrace, which costs a debug binary ~40 MiB.
            .env("RUST_BACKTRACE", "0")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log);
        // CAMGW_TEST_NOFILE=N: the agent runs with a file-descriptor limit of N (soft and hard).
        if let Some(n) = self
            .env
            .iter()
            .find(|(k, _)| k == "CAMGW_TEST_NOFILE")
            .and_then(|(_, v)| v.parse::<u64>().ok())
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let l = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + scaled(Duration::from_secs(15));
        while TcpStream::connect(self.ingest).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("agent exited with {status} at start:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "agent ingest never came up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // A command sent before the command link subscribed is dropped by the broker (and
        // `camgw cmd` sends once): with command keys configured, wait until it listens. Best
        // effort and bounded: a test whose broker is down at start goes on after the bound.
        let commandable =
            std::fs::read_to_string(&self.config_path).is_ok_and(|t| t.contains("command_keys"));
        let deadline = Instant::now() + scaled(Duration::from_secs(15));
        while commandable && Instant::now() < deadline {
            if self
                .log()
                .get(log_mark..)
                .is_some_and(|l| l.contains("listening for commands"))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    /// (VmRSS, VmHWM) in KiB.
    pub fn rss_kb(&self) -> (u64, u64) {
        let pid = self.pid();
        (proc_status_kb(pid, "VmRSS:"), proc_status_kb(pid, "VmHWM:"))
    }

    /// Anonymous (heap, stacks) plus shared memory in KiB: the RSS that what peers send can
    /// grow, without the file-backed text pages of the binary (large for a debug build).
    pub fn rss_anon_kb(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .filter(|l| l.starts_with("RssAnon:") || l.starts_with("RssShmem:"))
            .filter_map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .sum()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn term(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("agent running");
        match term_within(&mut c, Duration::from_secs(15)) {
            Some(s) => s,
            None => {
                let _ = c.kill();
                panic!("agent did not exit within 15 s of SIGTERM:\n{}", self.log());
            }
        }
    }

    pub fn post(&self, body: &[u8]) -> (u16, serde_json::Value) {
        http_post(self.ingest, "/v1/events", body)
    }

    pub fn motion(&self, cam: &str, state: &str) -> (u16, serde_json::Value) {
        self.post(format!(r#"{{"camera":"{cam}","kind":"motion","state":"{state}"}}"#).as_bytes())
    }

    /// Posts motion and returns the seq of a 202.
    pub fn accepted(&self, cam: &str) -> u64 {
        let (code, body) = self.motion(cam, "pulse");
        assert_eq!(code, 202, "{body}");
        body["seq"].as_u64().unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// (utime + stime in seconds, VmHWM in KiB) of a process, from /proc (benchmarks).
pub fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, hwm) // USER_HZ is 100 on Linux
}

/// A blocking HTTP/1.1 POST; returns the status and the JSON body (Null when not JSON).
pub fn http_post(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        code,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// A loopback TCP proxy to the broker. `stall()` makes every open connection silently stop
/// forwarding (sockets stay open: only a keep-alive can notice); new connections work.
pub struct StallProxy {
    pub port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stalled_upto: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// While closed, new connections are dropped at once (the agent cannot reconnect yet).
    gate: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StallProxy {
    pub fn start(target: u16) -> StallProxy {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU64::new(0));
        let stalled_upto = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (acc, stl, g) = (accepted.clone(), stalled_upto.clone(), gate.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if !g.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let conn = acc.fetch_add(1, Ordering::SeqCst) + 1;
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let stl = stl.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => {
                                    let _ = to.shutdown(std::net::Shutdown::Both);
                                    return;
                                }
                                Ok(n) => n,
                            };
                            // A connection opened before the stall swallows everything, forever.
                            if stl.load(Ordering::SeqCst) >= conn {
                                continue;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        StallProxy {
            port,
            accepted,
            stalled_upto,
            gate,
        }
    }

    /// New connections are refused until [`StallProxy::open`]: lets a test subscribe to a
    /// restarted broker before the agent can reconnect and publish.
    pub fn close(&self) {
        self.gate.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn open(&self) {
        self.gate.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every connection accepted so far goes silent.
    pub fn stall(&self) {
        use std::sync::atomic::Ordering;
        self.stalled_upto
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    pub fn connections(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

// ---- The station side of signed commands (tests/remote.rs, tests/hostile.rs). ----

use camgw::remote::envelope::{self, Signed};
use ed25519_dalek::SigningKey;

/// A ward station's key pair, made by `camgw keygen`.
pub struct Station {
    pub dir: tempfile::TempDir,
    pub key: SigningKey,
    pub public: String,
}

pub fn station() -> Station {
    let dir = tempfile::tempdir().unwrap();
    let out = camgw_command(BIN)
        .arg("keygen")
        .arg("--out")
        .arg(dir.path().join("ward"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = camgw::station::load_key(&dir.path().join("ward.key")).unwrap();
    let public = std::fs::read_to_string(dir.path().join("ward.pub"))
        .unwrap()
        .trim()
        .to_string();
    Station { dir, key, public }
}

pub fn security(st: &Station) -> String {
    format!(
        "\n[security]\ncommand_keys = [\"{}\"]\nrollback_timeout_s = 3\n",
        st.public
    )
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn signed(id: &str, command: serde_json::Value) -> Signed {
    envelope::new_signed(id, GW, WARD, now_ms(), 60_000, command)
}

/// `camgw cmd` as the station runs it: (exit code, result JSON).
pub fn cmd(st: &Station, port: u16, json: &str, timeout_s: u64) -> (i32, serde_json::Value) {
    let out = camgw_command(BIN)
        .args(["cmd", "--key"])
        .arg(st.dir.path().join("ward.key"))
        .args([
            "--mqtt",
            &format!("mqtt://127.0.0.1:{port}"),
            "--ward",
            WARD,
            "--gateway",
            GW,
            "--timeout-s",
            &scaled(Duration::from_secs(timeout_s)).as_secs().to_string(),
            json,
        ])
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap(), v)
}

/// Publishes a raw payload on T/cmd and returns the result carrying `id` (or with a null id).
pub fn raw(
    port: u16,
    sub: &mut Subscriber,
    payload: Vec<u8>,
    id: Option<&str>,
) -> serde_json::Value {
    let mut o = rumqttc::MqttOptions::new(format!("raw-{}", free_port()), "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (c, mut conn) = rumqttc::Client::new(o, 10);
    c.publish(
        format!("camgw/{WARD}/{GW}/cmd"),
        rumqttc::QoS::AtLeastOnce,
        false,
        payload,
    )
    .unwrap();
    for ev in conn.iter().take(20) {
        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = ev {
            break;
        }
    }
    let before = sub.seen.len();
    let want = id.map(str::to_string);
    let is_it =
        |m: &Msg| m.leaf() == "result" && m.json()["id"].as_str().map(str::to_string) == want;
    sub.wait_until(Duration::from_secs(10), "command result", |m| {
        m[before.min(m.len())..].iter().any(is_it)
    });
    sub.seen[before..].iter().find(|m| is_it(m)).unwrap().json()
}

pub fn config_of(st: &Station, port: u16) -> String {
    let (code, v) = cmd(st, port, r#"{"op":"get_config"}"#, 10);
    assert_eq!(code, 0, "{v}");
    v["config"].as_str().unwrap().to_string()
}

/// A loopback TCP proxy that models a slow link (a 4G uplink at `bytes_per_s`): every
/// connection's bytes, in each direction, go through one shared FIFO paced at that rate, so
/// whatever is ahead on the link delays what follows (as on a real bottleneck).
pub struct ThrottleProxy {
    pub port: u16,
}

impl ThrottleProxy {
    pub fn start(target: u16, bytes_per_s: u64) -> ThrottleProxy {
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Per direction: when the link is next free (the pacing clock).
        let links = [
            Arc::new(Mutex::new(Instant::now())),
            Arc::new(Mutex::new(Instant::now())),
        ];
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                for (dir, (mut from, mut to)) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ]
                .into_iter()
                .enumerate()
                {
                    let link = links[dir].clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 1460];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => {
                                    let _ = to.shutdown(std::net::Shutdown::Both);
                                    return;
                                }
                                Ok(n) => n,
                            };
                            // The link carries n bytes from when it is free; this chunk
                            // arrives when its last byte has crossed.
                            let due = {
                                let mut free = link.lock().unwrap();
                                let begin = (*free).max(Instant::now());
                                *free =
                                    begin + Duration::from_secs_f64(n as f64 / bytes_per_s as f64);
                                *free
                            };
                            // Pacing the link (the thing modelled), not a synchronisation.
                            std::thread::sleep(due.saturating_duration_since(Instant::now()));
                            if to.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        ThrottleProxy { port }
    }
}

/// Posts events as fast as the agent answers until stopped; the ids answered 202.
pub struct Poster {
    ids: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poster {
    pub fn start(agent: &Agent) -> Poster {
        let addr = agent.ingest;
        let ids: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (ids, stop) = (ids.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let (code, v) = http_post(
                        addr,
                        "/v1/events",
                        br#"{"camera":"cam01","kind":"motion","state":"pulse"}"#,
                    );
                    match (code, v["id"].as_str()) {
                        (202, Some(id)) => ids.lock().unwrap().push(id.to_string()),
                        _ => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Poster {
            ids,
            stop,
            thread: Some(thread),
        }
    }

    pub fn count(&self) -> usize {
        self.ids.lock().unwrap().len()
    }

    pub fn wait_for(&self, n: usize) {
        let deadline = std::time::Instant::now() + scaled(Duration::from_secs(20));
        while self.count() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} events accepted",
                self.count()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stop(mut self) -> std::collections::BTreeSet<String> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.ids.lock().unwrap().iter().cloned().collect()
    }
}

/// The ids of the events these subscribers saw.
pub fn event_ids(subs: &[&Subscriber]) -> std::collections::BTreeSet<String> {
    subs.iter()
        .flat_map(|s| s.on("event"))
        .filter_map(|v| v["id"].as_str().map(String::from))
        .collect()
}

/// Waits (bounded, 30 s scaled) until every id of `want` reached one of `subs`.
pub fn wait_delivered(
    subs: &mut [&mut Subscriber],
    want: &std::collections::BTreeSet<String>,
    what: &str,
) {
    wait_delivered_within(subs, want, what, Duration::from_secs(30))
}

/// [`wait_delivered`] with its own bound (a cluster that moves stream leaders after a node
/// died delivers a large backlog slowly on a loaded machine).
pub fn wait_delivered_within(
    subs: &mut [&mut Subscriber],
    want: &std::collections::BTreeSet<String>,
    what: &str,
    bound: Duration,
) {
    let deadline = std::time::Instant::now() + scaled(bound);
    loop {
        for s in subs.iter_mut() {
            s.drain_for(Duration::from_millis(100));
        }
        let got = event_ids(&subs.iter().map(|s| &**s).collect::<Vec<_>>());
        let missing: Vec<&String> = want.difference(&got).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {} of {} events answered 202 reached no broker, e.g. {:?}",
            missing.len(),
            want.len(),
            &missing[..missing.len().min(5)]
        );
    }
}
