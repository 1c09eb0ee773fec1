//! The update tests' rig, shared with benches/update.rs: the second build, the agent run the
//! way systemd runs it (started again when it exits), a gateway with its broker, station and
//! release keys, and a feeder of events that survives hand-overs.
#![allow(dead_code)]

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn keygen(prefix: &std::path::Path) -> [u8; 32] {
    let out = camgw_command(BIN)
        .args(["keygen", "--out"])
        .arg(prefix)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .unwrap()
        .try_into()
        .unwrap()
}

pub fn sign(
    key: &std::path::Path,
    version: &str,
    target: &str,
    file: &std::path::Path,
) -> std::process::Output {
    camgw_command(BIN)
        .args(["release", "sign", "--key"])
        .arg(key)
        .args(["--version", version, "--target", target])
        .arg(file)
        .output()
        .unwrap()
}

pub const T: &str = "camgw/w-test/gw-test";
/// The second build's version: newer than anything this crate will be.
pub const V2: &str = "9.0.0";

/// The second build of camgw (CAMGW_BUILD_VERSION = V2, its own target dir), built once per
/// test run. The firmware feature set plus the simulators (for the fault points).
pub fn second_build() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let target_dir = root.join("target").join("update-v2");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = std::process::Command::new(cargo)
                .current_dir(root)
                .args([
                    "build",
                    "--quiet",
                    "--bin",
                    "camgw",
                    "--no-default-features",
                    "--features",
                    "sim",
                    "--target-dir",
                ])
                .arg(&target_dir)
                .env("CAMGW_BUILD_VERSION", V2)
                // A debug build without debug info: a 20-odd MB release instead of 140.
                .env("CARGO_PROFILE_DEV_DEBUG", "0")
                .env("CARGO_PROFILE_DEV_STRIP", "symbols")
                .env_remove("CARGO_TARGET_DIR")
                .output()
                .expect("cargo");
            assert!(
                out.status.success(),
                "the second build failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let bin = target_dir.join("debug").join("camgw");
            let v = std::process::Command::new(&bin)
                .arg("--version")
                .output()
                .unwrap();
            assert!(String::from_utf8_lossy(&v.stdout).contains(V2));
            bin
        })
        .clone()
}

/// Whether one camgw process can exec another here. Under qemu-user without binfmt_misc (CI's
/// aarch64 pass) it cannot: the emulated agent's exec of an aarch64 file fails with ENOEXEC, so
/// the tests that hand over are skipped there (the refusals, which never exec, still run).
pub fn exec_works(test: &str) -> bool {
    if emulated(&agent_bin()) {
        eprintln!("*** {test}: skipped under qemu-user without binfmt_misc: an emulated process cannot exec another foreign binary ***");
        return false;
    }
    true
}

/// The agent as systemd runs it: `camgw run`, started again 200 ms after it exits (at most 12
/// times), its output appended to one log.
pub struct Service {
    pub dir: PathBuf,
    pub ingest: std::net::SocketAddr,
    pub child: Arc<Mutex<Option<Child>>>,
    pub starts: Arc<AtomicU32>,
    pub stop: Arc<AtomicBool>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    pub fn start(
        dir: &Path,
        text: &str,
        ingest: std::net::SocketAddr,
        env: Vec<(String, String)>,
    ) -> Service {
        let config = dir.join("camgw.toml");
        std::fs::write(&config, text).unwrap();
        let child: Arc<Mutex<Option<Child>>> = Arc::default();
        let starts = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (child, starts, stop, dir) = (
                child.clone(),
                starts.clone(),
                stop.clone(),
                dir.to_path_buf(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let running = {
                        let mut g = child.lock().unwrap();
                        match g.as_mut() {
                            Some(c) => c.try_wait().unwrap().is_none(),
                            None => false,
                        }
                    };
                    if !running {
                        if starts.load(Ordering::SeqCst) > 0 {
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        if starts.load(Ordering::SeqCst) >= 12 || stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let log = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(dir.join("agent.log"))
                            .unwrap();
                        let c = camgw_command(&agent_bin())
                            .args(["run", "--config"])
                            .arg(dir.join("camgw.toml"))
                            .env("CAMGW_LOG", "debug")
                            .env("RUST_BACKTRACE", "0")
                            .env_remove("CAMGW_LAUNCHER")
                            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                            .stdout(Stdio::null())
                            .stderr(log)
                            .spawn()
                            .unwrap();
                        starts.fetch_add(1, Ordering::SeqCst);
                        *child.lock().unwrap() = Some(c);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Service {
            dir: dir.to_path_buf(),
            ingest,
            child,
            starts,
            stop,
            thread: Some(thread),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// SIGTERM to whatever runs now (the service starts it again once it exits).
    pub fn term(&self) {
        if let Some(c) = self.child.lock().unwrap().as_ref() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
    }

    /// kill -9 of whatever runs now (the service starts it again).
    pub fn kill9(&self) {
        if let Some(c) = self.child.lock().unwrap().as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn wait_log(&self, what: &str, within: Duration) {
        let deadline = Instant::now() + scaled(within);
        while !self.log().contains(what) {
            assert!(
                Instant::now() < deadline,
                "no {what:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().filter(|l| !l.contains("rumqttc")).collect();
            eprintln!(
                "--- the agent's log, last 60 lines ---\n{}",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One gateway, its broker, its station and release keys, ready for updates.
pub struct Rig {
    pub tmp: tempfile::TempDir,
    pub st: Station,
    pub broker: Broker,
    pub release_key: PathBuf,
    pub release_pub: String,
    pub ingest: std::net::SocketAddr,
    pub sub: Subscriber,
}

impl Rig {
    pub fn new() -> Rig {
        Rig::with(false)
    }

    /// `persistent`: the broker keeps sessions across a graceful stop, and the test's
    /// subscriber has one, so nothing published while the broker was away is missed.
    pub fn with(persistent: bool) -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let st = station();
        let broker = if persistent {
            Broker::start_persistent()
        } else {
            Broker::start()
        };
        let public = keygen(&tmp.path().join("release"));
        use base64::Engine as _;
        let release_pub = base64::engine::general_purpose::STANDARD.encode(public);
        let sub = if persistent {
            Subscriber::persistent(
                broker.port,
                &format!("{T}/#"),
                &format!("upd-{}", free_port()),
            )
        } else {
            Subscriber::new(broker.port, &format!("{T}/#"))
        };
        let ingest = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Rig {
            release_key: tmp.path().join("release.key"),
            tmp,
            st,
            broker,
            release_pub,
            ingest,
            sub,
        }
    }

    pub fn config(&self, confirm_s: u64, extra: &str) -> String {
        let security = format!(
            "\n[security]\ncommand_keys = [\"{}\"]\nrelease_keys = [\"{}\"]\nupdate_confirm_s = {confirm_s}\n{extra}",
            self.st.public, self.release_pub
        );
        config_text(
            self.broker.port,
            self.ingest,
            &self.tmp.path().join("data"),
            &format!("--\n{security}"),
        )
    }

    pub fn service(&self, confirm_s: u64, extra: &str, env: Vec<(String, String)>) -> Service {
        let s = Service::start(
            self.tmp.path(),
            &self.config(confirm_s, extra),
            self.ingest,
            env,
        );
        s.wait_log("listening for commands", Duration::from_secs(20));
        s
    }

    /// Signs `file` as `version` for `target` and returns the manifest.
    pub fn manifest(&self, file: &Path, version: &str, target: &str) -> serde_json::Value {
        // Signed in this rig's own directory: `release sign` writes FILE.manifest.json beside
        // the file, and tests running at once sign the same second build.
        let own = self
            .tmp
            .path()
            .join(format!("signed-{version}-{}", free_port()));
        std::fs::copy(file, &own).unwrap();
        let file = own.as_path();
        let out = sign(&self.release_key, version, target, file);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// Sends `update` and returns its result.
    pub fn update(
        &mut self,
        id: &str,
        url: &str,
        manifest: &serde_json::Value,
    ) -> serde_json::Value {
        let c = serde_json::json!({"op": "update", "url": url, "manifest": manifest});
        raw(
            self.broker.port,
            &mut self.sub,
            camgw::remote::envelope::sign(&self.st.key, &signed(id, c)),
            Some(id),
        )
    }

    pub fn alerts(&self, kind: &str) -> Vec<serde_json::Value> {
        self.sub
            .on("alert")
            .into_iter()
            .filter(|a| a["kind"] == kind)
            .collect()
    }

    pub fn wait_alert(&mut self, kind: &str, within: Duration) -> serde_json::Value {
        self.sub.wait_until(within, kind, |m| {
            m.iter()
                .any(|m| m.leaf() == "alert" && m.json()["kind"] == kind)
        });
        self.alerts(kind).pop().unwrap()
    }

    /// Waits for an online status of `version`, after the first `from` messages.
    pub fn wait_online(
        &mut self,
        version: &str,
        from: usize,
        within: Duration,
    ) -> serde_json::Value {
        let is = |m: &Msg| {
            m.leaf() == "status" && m.json()["online"] == true && m.json()["version"] == version
        };
        self.sub
            .wait_until(within, &format!("status online {version}"), |m| {
                m[from.min(m.len())..].iter().any(is)
            });
        self.sub.seen[from..]
            .iter()
            .rev()
            .find(|m| is(m))
            .unwrap()
            .json()
    }

    pub fn installed(&self) -> camgw::upgrade::Installed {
        camgw::update::Dir::new(&self.tmp.path().join("data")).load()
    }
}

/// Posts a motion pulse every 10 ms through hand-overs and restarts: a refused connection or
/// a cut answer is not an accepted event; each 202's id is kept.
pub struct Feeder {
    pub ids: Arc<Mutex<Vec<String>>>,
    pub stop: Arc<AtomicBool>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

pub fn try_post(addr: std::net::SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let body = br#"{"camera":"cam01","kind":"motion","state":"pulse"}"#;
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out);
    if !text.starts_with("HTTP/1.1 202") {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()?;
    json["id"].as_str().map(String::from)
}

impl Feeder {
    pub fn start(addr: std::net::SocketAddr) -> Feeder {
        let ids: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (ids, stop) = (ids.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Some(id) = try_post(addr) {
                        ids.lock().unwrap().push(id);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Feeder {
            ids,
            stop,
            thread: Some(thread),
        }
    }

    pub fn count(&self) -> usize {
        self.ids.lock().unwrap().len()
    }

    pub fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "only {} events accepted",
                self.count()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stop(mut self) -> std::collections::BTreeSet<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.ids.lock().unwrap().iter().cloned().collect()
    }
}

pub fn own() -> String {
    camgw::release::VERSION.to_string()
}

/// Publishes a command and waits only for the broker's PUBACK (the result may never come).
pub fn publish_cmd(port: u16, payload: Vec<u8>) {
    let mut o = rumqttc::MqttOptions::new(format!("pub-{}", free_port()), "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (c, mut conn) = rumqttc::Client::new(o, 10);
    c.publish(
        format!("{T}/cmd"),
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
}
