//! The ward station in tests: `camgw station serve` as a child process, a small HTTP client
//! that keeps the session cookie and CSRF token, and a real PostgreSQL server started from
//! Debian's binaries in a temporary directory on a free loopback port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{camgw_command, free_port, scaled, term_within, wait_port, BIN};

pub struct StationServer {
    pub port: u16,
    pub db: String,
    /// `--mqtt`: one broker URL, or several separated by commas.
    mqtt: String,
    extra: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl StationServer {
    /// `station serve` on a free port, recording from the broker into `db`.
    pub fn start(broker: u16, db: &str, extra: &[&str]) -> StationServer {
        StationServer::start_on(&format!("mqtt://127.0.0.1:{broker}"), db, extra)
    }

    /// The same on `--mqtt URLS` as given (several brokers separated by commas).
    pub fn start_on(mqtt: &str, db: &str, extra: &[&str]) -> StationServer {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StationServer {
            port: free_port(),
            db: db.to_string(),
            mqtt: mqtt.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            log: dir.path().join("station.log"),
            _dir: dir,
        };
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = camgw_command(BIN)
            .args(["station", "serve", "--mqtt", &self.mqtt])
            .args(["--db", &self.db, "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.extra)
            .env("CAMGW_LOG", "info")
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn camgw station serve");
        self.child = Some(child);
        assert!(
            wait_port(self.port, scaled(Duration::from_secs(20))),
            "station did not listen on {}:\n{}",
            self.port,
            self.log()
        );
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn term(&mut self) {
        if let Some(mut c) = self.child.take() {
            let exited = term_within(&mut c, Duration::from_secs(15));
            assert!(exited.is_some(), "station ignored SIGTERM");
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn web(&self) -> Web {
        Web::new(self.port)
    }
}

impl Drop for StationServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `camgw station user add`, the password on stdin.
pub fn user_add(db: &str, name: &str, role: &str, password: &str) {
    let mut c = camgw_command(BIN)
        .args([
            "station", "user", "add", "--db", db, "--name", name, "--role", role,
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One HTTP answer.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP/1.1 client for the console's API that keeps what a browser keeps.
pub struct Web {
    pub port: u16,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
}

impl Web {
    pub fn new(port: u16) -> Web {
        Web {
            port,
            cookie: None,
            csrf: None,
        }
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&str>, csrf: bool) -> Answer {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(scaled(Duration::from_secs(30))))
            .unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
            self.port
        );
        if let Some(c) = &self.cookie {
            head.push_str(&format!("Cookie: {c}\r\n"));
        }
        if csrf {
            if let Some(t) = &self.csrf {
                head.push_str(&format!("X-CSRF-Token: {t}\r\n"));
            }
        }
        let body = body.unwrap_or("");
        if method != "GET" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        parse_answer(&raw)
    }

    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None, false)
    }

    /// A POST carrying the CSRF token (as the console sends it).
    pub fn post(&self, path: &str, body: &str) -> Answer {
        self.request("POST", path, Some(body), true)
    }

    /// Logs in; keeps the cookie and CSRF token. Returns the status.
    pub fn login(&mut self, name: &str, password: &str) -> u16 {
        let body = serde_json::json!({"name": name, "password": password}).to_string();
        let a = self.request("POST", "/api/login", Some(&body), false);
        if a.status == 200 {
            let set = a.header("set-cookie").expect("a session cookie");
            self.cookie = Some(set.split(';').next().unwrap().to_string());
            self.csrf = a.json()["csrf"].as_str().map(String::from);
        }
        a.status
    }

    /// GET that must answer 200 with JSON.
    pub fn json(&self, path: &str) -> serde_json::Value {
        let a = self.get(path);
        assert_eq!(a.status, 200, "GET {path}: {}", a.text());
        a.json()
    }

    /// Waits until GET `path` satisfies `done`.
    pub fn wait_json(
        &self,
        path: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            let v = self.json(path);
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {v}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn parse_answer(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(p) = rest.windows(2).position(|w| w == b"\r\n") {
            let n =
                usize::from_str_radix(String::from_utf8_lossy(&rest[..p]).trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[p + 2..p + 2 + n]);
            rest = &rest[p + 2 + n + 2..];
        }
        body = out;
    }
    Answer {
        status,
        headers,
        body,
    }
}

/// A PostgreSQL server of the test's own: initdb into a temporary directory, `postgres` on
/// a free loopback port, stopped (fast shutdown) on drop. As root it runs as Debian's
/// `postgres` user (PostgreSQL refuses to run as root).
pub struct Postgres {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    run_as: Option<String>,
    bin: PathBuf,
}

fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("postgres").exists())
        .collect();
    found.sort();
    found.pop()
}

impl Postgres {
    /// None (and why) when no PostgreSQL server binaries are installed.
    pub fn start() -> Result<Postgres, String> {
        let bin = pg_bin().ok_or("no PostgreSQL server in /usr/lib/postgresql/*/bin")?;
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = root.then(|| "postgres".to_string());
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        if let Some(u) = &run_as {
            let ok = Command::new("chown")
                .args(["-R", u])
                .arg(dir.path())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return Err(format!("cannot chown the data directory to {u}"));
            }
        }
        let pg = Postgres {
            port: free_port(),
            child: None,
            dir,
            run_as,
            bin,
        };
        let out = pg
            .command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "camgw",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut pg = pg;
        pg.spawn()?;
        Ok(pg)
    }

    fn command(&self, prog: &str) -> Command {
        let exe = self.bin.join(prog);
        match &self.run_as {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let data = self.dir.path().join("data");
        let log = std::fs::File::create(self.dir.path().join("pg.log")).unwrap();
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-k")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        self.child = Some(child);
        // The port opens before the server accepts logins: ask until a query answers.
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        while Instant::now() < deadline {
            if wait_port(self.port, Duration::from_millis(200))
                && postgres::Client::connect(&self.url(), postgres::NoTls).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("postgres did not start:\n{}", self.log()))
    }

    pub fn url(&self) -> String {
        format!("postgres://camgw@127.0.0.1:{}/postgres", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "fast", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// PostgreSQL for a test, or the reason it cannot run here. With CAMGW_REQUIRE_POSTGRES=1
/// (CI) a missing server fails the test instead of skipping it.
pub fn postgres_or_skip(test: &str) -> Option<Postgres> {
    match Postgres::start() {
        Ok(p) => Some(p),
        Err(why) if std::env::var_os("CAMGW_REQUIRE_POSTGRES").is_none() => {
            eprintln!("*** {test}: skipped, no PostgreSQL here: {why} ***");
            None
        }
        Err(why) => panic!("{test}: PostgreSQL is required (CAMGW_REQUIRE_POSTGRES): {why}"),
    }
}

/// Publishes one message at QoS 1 (retained or not) and waits for the broker's PUBACK.
pub fn publish(broker: u16, topic: &str, payload: &[u8], retain: bool) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let id = format!("test-pub-{}", rand_suffix());
        let mut o = MqttOptions::new(id, "127.0.0.1", broker);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (c, mut el) = AsyncClient::new(o, 8);
        c.publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("publish to {broker}: {e}"),
                Err(_) => panic!("no PUBACK from the broker within 10 s"),
            }
        }
        let _ = c.disconnect().await;
    });
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Publishes `n` QoS 1 events (`m-0`, `m-1`, ... on `camgw/w1/gw{0,1,2}/event`) as fast as the
/// broker takes them; returns the rate.
pub fn publish_events(port: u16, n: usize) -> f64 {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut o = MqttOptions::new("bench-publisher", "127.0.0.1", port);
        o.set_inflight(1000);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (c, mut el) = AsyncClient::new(o, 10_000);
        let t0 = Instant::now();
        let pubs = tokio::spawn(async move {
            let now = camgw::clock::Clock::now_ms(&camgw::clock::SystemClock);
            for i in 0..n as i64 {
                let gw = format!("gw{}", i % 3);
                let p = serde_json::json!({"id": format!("m-{i}"), "seq": i, "ts": camgw::clock::rfc3339_ms(now + i), "clock_synced": true,
                    "kind": "motion", "camera": format!("cam{:02}", i % 31), "source": "onvif", "state": "pulse"});
                c.publish(format!("camgw/w1/{gw}/event"), QoS::AtLeastOnce, false, p.to_string()).await.unwrap();
            }
            c
        });
        let mut acked = 0;
        while acked < n {
            if let Event::Incoming(Packet::PubAck(_)) = el.poll().await.unwrap() {
                acked += 1;
            }
        }
        let _c = pubs.await.unwrap();
        n as f64 / t0.elapsed().as_secs_f64()
    })
}
