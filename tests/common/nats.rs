//! A 3-node NATS cluster from Debian's `nats-server` (2.9): JetStream, its MQTT listener with
//! `stream_replicas: 3`, cluster routes, every port a free loopback one. Included by path in
//! the tests and benches that need a real clustered broker (tests/city.rs, benches/fleet.rs).
//!
//! Each node: a client port (NATS), an MQTT port, a cluster port and a monitoring port; its
//! JetStream store under the cluster's directory (kept across a node's kill -9 and restart).
//! [`Cluster::start`] returns once the JetStream meta group has a leader and every node's MQTT
//! port answers.

#![allow(dead_code)] // each test uses its part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, mosquitto_path, proc_cpu_ms, proc_status_kb, wait_port};

pub struct Node {
    pub name: String,
    pub client: u16,
    pub mqtt: u16,
    pub cluster: u16,
    pub monitor: u16,
    child: Option<Child>,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

pub fn nats_server() -> Option<PathBuf> {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Why the cluster cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    if nats_server().is_none() {
        return Some("nats-server is not installed (Debian: apt-get install nats-server)".into());
    }
    None
}

/// A bare HTTP GET on loopback (the monitoring endpoint), the body as JSON.
fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(1),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

impl Cluster {
    /// Three nodes, started and ready (panics with their logs after 30 s).
    pub fn start() -> Cluster {
        Cluster::start_n(3)
    }

    pub fn start_n(n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let nodes = (0..n)
            .map(|i| Node {
                name: format!("n{}", i + 1),
                client: free_port(),
                mqtt: free_port(),
                cluster: free_port(),
                monitor: free_port(),
                child: None,
            })
            .collect();
        let mut c = Cluster { nodes, dir };
        for i in 0..n {
            c.start_node(i);
        }
        c.wait_ready(Duration::from_secs(60));
        c
    }

    fn conf(&self, i: usize) -> String {
        let me = &self.nodes[i];
        let routes: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.name != me.name)
            .map(|n| format!("nats-route://127.0.0.1:{}", n.cluster))
            .collect();
        format!(
            "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
             jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 256MB\n  max_file_store: 4GB\n}}\n\
             cluster {{\n  name: camgw-city\n  listen: 127.0.0.1:{cluster}\n  routes: [{routes}]\n}}\n\
             mqtt {{\n  listen: 127.0.0.1:{mqtt}\n  stream_replicas: {replicas}\n  max_ack_pending: 10000\n}}\n",
            name = me.name,
            client = me.client,
            monitor = me.monitor,
            store = self.dir.path().join(&me.name).display(),
            cluster = me.cluster,
            routes = routes.join(", "),
            mqtt = me.mqtt,
            replicas = self.nodes.len().min(3),
        )
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.nodes[i].name))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts node `i` (again): its store is kept.
    pub fn start_node(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node already running");
        let conf = self.dir.path().join(format!("{}.conf", self.nodes[i].name));
        std::fs::write(&conf, self.conf(i)).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .unwrap();
        let child = Command::new(nats_server().expect("nats-server"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        self.nodes[i].child = Some(child);
    }

    /// kill -9 of node `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// The MQTT URL of node `i`.
    pub fn mqtt_url(&self, i: usize) -> String {
        format!("mqtt://127.0.0.1:{}", self.nodes[i].mqtt)
    }

    /// The JetStream meta leader as the running nodes see it, once they agree on one.
    pub fn meta_leader(&self) -> Option<String> {
        let mut leader: Option<String> = None;
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            let v = get_json(n.monitor, "/jsz")?;
            let l = v["meta_cluster"]["leader"].as_str()?.to_string();
            if l.is_empty() || leader.as_ref().is_some_and(|x| *x != l) {
                return None;
            }
            leader = Some(l);
        }
        leader
    }

    /// Waits until the running nodes agree on a meta leader and answer on MQTT.
    pub fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let mqtt_up = self
                .nodes
                .iter()
                .filter(|n| n.child.is_some())
                .all(|n| wait_port(n.mqtt, Duration::from_millis(100)));
            if mqtt_up && self.meta_leader().is_some() {
                return;
            }
            if Instant::now() > deadline {
                panic!("the NATS cluster did not become ready:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The tail of every node's log, for a failure message.
    pub fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!(
                    "--- {} ---\n{}",
                    self.nodes[i].name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Resident memory (KiB) and CPU time (ms, user + system) of node `i`.
    pub fn usage(&self, i: usize) -> Option<(u64, u64)> {
        let pid = self.nodes[i].child.as_ref()?.id();
        Some((proc_status_kb(pid, "VmRSS:"), proc_cpu_ms(pid)))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
    }
}

/// A ward Mosquitto bridged into the cluster the way docs/scale.md describes: the ward's
/// topics `out 1`, its gateways' commands `in 1`, clean session off, persistence on, queue
/// limits raised so an outage of the cluster link is held, not dropped. The bridge lists
/// several cluster nodes and moves to the next when one goes.
pub struct WardBroker {
    pub port: u16,
    dir: tempfile::TempDir,
    nodes: Vec<u16>,
    ward: String,
    child: Option<Child>,
}

impl WardBroker {
    /// Bridged to the MQTT ports `nodes`, in that order; `ward` is the ward's name.
    pub fn start(nodes: &[u16], ward: &str) -> WardBroker {
        let mut w = WardBroker {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            nodes: nodes.to_vec(),
            ward: ward.to_string(),
            child: None,
        };
        w.restart();
        w
    }

    fn conf(&self) -> String {
        let addresses: Vec<String> = self
            .nodes
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\n\
             persistence true\npersistence_location {dir}/\nuser root\nautosave_interval 1\n\
             max_queued_messages 1000000\nmax_queued_bytes 0\nmax_inflight_messages 100\n\
             connection city\naddress {addresses}\n\
             topic camgw/{ward}/# out 1\ntopic camgw/{ward}/+/cmd in 1\n\
             cleansession false\nlocal_clientid ward-{ward}-local\nremote_clientid ward-{ward}-bridge\n\
             keepalive_interval 5\nrestart_timeout 1 2\nbridge_protocol_version mqttv311\n\
             try_private false\nnotifications false\nstart_type automatic\n",
            port = self.port,
            dir = self.dir.path().display(),
            addresses = addresses.join(" "),
            ward = self.ward,
        )
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "ward broker already running");
        let conf = self.dir.path().join("ward.conf");
        std::fs::write(&conf, self.conf()).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("ward.log"))
            .unwrap();
        let m = mosquitto_path().expect("mosquitto");
        self.child = Some(
            Command::new(m)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn mosquitto"),
        );
        assert!(
            wait_port(self.port, Duration::from_secs(10)),
            "the ward broker did not start:\n{}",
            self.log()
        );
    }

    /// SIGTERM (Mosquitto writes its database), and wait.
    pub fn stop_graceful(&mut self) {
        if let Some(mut c) = self.child.take() {
            if crate::common::term_within(&mut c, Duration::from_secs(10)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ward.log")).unwrap_or_default()
    }
}

impl Drop for WardBroker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
