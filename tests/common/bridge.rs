//! The peer the agent is compared with: Mosquitto as the gateway-side store-and-forward, a
//! local broker with persistence, bridged (QoS 1, persistent session) to the station broker.
//! Included by path in the tests that put it through the same faults as the agent
//! (tests/chaos.rs, tests/power.rs).

#![allow(dead_code)] // each test uses its part

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{free_port, mosquitto_path, proc_status_kb, wait_port};

pub struct Bridge {
    pub port: u16,
    pub dir: PathBuf,
    /// Where the bridge connects: the station broker, or a proxy in front of it.
    pub station: u16,
    child: Option<Child>,
    next_seq: Arc<AtomicU64>,
    /// On lossfs (only root may use the mount: Mosquitto keeps its privileges there).
    lossfs: bool,
}

impl Bridge {
    /// Not started yet: [`Bridge::spawn`].
    pub fn new(dir: PathBuf, station: u16, lossfs: bool) -> Bridge {
        Bridge {
            port: free_port(),
            dir,
            station,
            child: None,
            next_seq: Arc::new(AtomicU64::new(1)),
            lossfs,
        }
    }

    pub fn on_lossfs(&self) -> bool {
        self.lossfs
    }

    fn conf(&self) -> String {
        format!(
            "{}listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 60\nmax_queued_messages 100000\nmax_inflight_messages 20\n\
             connection station\naddress 127.0.0.1:{}\ntopic camgw/# out 1\ncleansession false\nkeepalive_interval 5\nrestart_timeout 1 2\nbridge_protocol_version mqttv311\n",
            if self.lossfs { "user root\n" } else { "" },
            self.port,
            self.dir.display(),
            self.station
        )
    }

    pub fn spawn(&mut self) {
        let conf = self.dir.join("local.conf");
        std::fs::write(&conf, self.conf()).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("local.log"))
            .unwrap();
        let m = mosquitto_path().expect("mosquitto");
        self.child = Some(
            Command::new(m)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        // A corrupted database may keep it from starting: that is a finding, not a hang.
        wait_port(self.port, Duration::from_secs(5));
    }

    /// Publishes one event at QoS 1 to the local broker and waits for its PUBACK (the
    /// bridge's "accepted"): Some(seq) then. The payload carries `seq` for the checker.
    pub fn publisher(&self) -> Box<dyn FnMut() -> Option<u64> + Send> {
        let (port, next) = (self.port, self.next_seq.clone());
        let mut conn: Option<(rumqttc::Client, rumqttc::Connection)> = None;
        Box::new(move || {
            let seq = next.fetch_add(1, Ordering::SeqCst);
            if conn.is_none() {
                let mut o = rumqttc::MqttOptions::new(
                    format!("bridge-pub-{}", free_port()),
                    "127.0.0.1",
                    port,
                );
                o.set_keep_alive(Duration::from_secs(5));
                conn = Some(rumqttc::Client::new(o, 10));
            }
            let (client, c) = conn.as_mut().unwrap();
            let payload = format!(
                r#"{{"seq":{seq},"kind":"motion","camera":"cam01","source":"ingest","state":"pulse"}}"#
            );
            if client
                .publish(
                    "camgw/w-test/gw-test/event",
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .is_err()
            {
                conn = None;
                return None;
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match c.recv_timeout(left) {
                    Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => {
                        return Some(seq)
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) | Err(_) => {
                        conn = None;
                        std::thread::sleep(Duration::from_millis(50));
                        return None;
                    }
                }
            }
        })
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// kill -9, optionally garble the end of its database, and start again.
    pub fn crash_restart(&mut self, corrupt: bool) {
        self.kill9();
        if corrupt {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .append(true)
                .open(self.dir.join("mosquitto.db"))
            {
                let _ = f.write_all(&[0xa5, 0x5a, 0x13, 0x37, 0x00, 0x00, 0x01, 0x02, 0xff]);
            }
        }
        self.spawn();
    }

    pub fn rss_kb(&self) -> u64 {
        self.child
            .as_ref()
            .map_or(0, |c| proc_status_kb(c.id(), "VmRSS:"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("local.log")).unwrap_or_default()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.kill9();
    }
}
