//! What the parts share with the uplink besides the buffer: [`Retained`] latest values (camera
//! health), the [`Outbox`] of one-off messages (command results), [`Gauges`] that other
//! parts keep current for telemetry, and [`Counter`]s that a task can wait on. Health, remote, board and the system sampler write here;
//! only the uplink reads it out to the broker, so none of them imports the uplink.

/// Latest-value retained messages (camera health): not buffered, since only the newest value
/// matters; every value is (re)published on each connect, and changes as they happen.
#[derive(Default)]
pub struct Retained {
    inner: std::sync::Mutex<RetainedInner>,
    notify: tokio::sync::Notify,
}

#[derive(Default)]
struct RetainedInner {
    values: std::collections::BTreeMap<String, Vec<u8>>,
    dirty: std::collections::BTreeSet<String>,
    /// Camera health topics whose state is not `up` (set by [`Retained::set_health`]).
    not_up: std::collections::BTreeSet<String>,
}

impl Retained {
    /// Sets `topic` to `payload` (an empty payload clears the retained message).
    pub fn set(&self, topic: String, payload: Vec<u8>) {
        let mut g = self.inner.lock().unwrap();
        if payload.is_empty() {
            g.not_up.remove(&topic);
        }
        Self::store(g, &self.notify, topic, payload);
    }

    fn store(
        mut g: std::sync::MutexGuard<'_, RetainedInner>,
        notify: &tokio::sync::Notify,
        topic: String,
        payload: Vec<u8>,
    ) {
        if g.values.get(&topic) == Some(&payload) {
            return;
        }
        g.values.insert(topic.clone(), payload);
        g.dirty.insert(topic);
        drop(g);
        notify.notify_one();
    }

    /// Resolves when a value changes (for the uplink's loop).
    pub async fn changed(&self) {
        self.notify.notified().await
    }

    pub fn get(&self, topic: &str) -> Option<Vec<u8>> {
        self.inner.lock().unwrap().values.get(topic).cloned()
    }

    /// A camera's health message, and whether it says `up` (the LED and telemetry count the
    /// cameras that are not).
    pub fn set_health(&self, topic: String, payload: Vec<u8>, up: bool) {
        let mut g = self.inner.lock().unwrap();
        if up || payload.is_empty() {
            g.not_up.remove(&topic);
        } else {
            g.not_up.insert(topic.clone());
        }
        Self::store(g, &self.notify, topic, payload);
    }

    /// How many cameras' health says anything but `up`.
    pub fn cameras_not_up(&self) -> usize {
        self.inner.lock().unwrap().not_up.len()
    }

    /// On a new connection: every value goes out again.
    pub fn mark_all_dirty(&self) {
        let mut g = self.inner.lock().unwrap();
        let keys: Vec<String> = g.values.keys().cloned().collect();
        g.dirty.extend(keys);
    }

    /// What changed since the last call (the uplink publishes it).
    pub fn take_dirty(&self) -> Vec<(String, Vec<u8>)> {
        let mut g = self.inner.lock().unwrap();
        let dirty = std::mem::take(&mut g.dirty);
        let out = dirty
            .into_iter()
            .filter_map(|t| g.values.get(&t).map(|v| (t, v.clone())))
            .collect();
        // Cleared topics are published once, then forgotten.
        g.values.retain(|_, v| !v.is_empty());
        out
    }

    /// Puts back what could not be published.
    pub fn restore(&self, items: Vec<(String, Vec<u8>)>) {
        let mut g = self.inner.lock().unwrap();
        for (t, v) in items {
            g.values.entry(t.clone()).or_insert(v);
            g.dirty.insert(t);
        }
    }
}

/// Messages to publish once, QoS 1, not retained and not buffered (command results).
#[derive(Default)]
pub struct Outbox {
    queue: std::sync::Mutex<std::collections::VecDeque<(String, Vec<u8>)>>,
    notify: tokio::sync::Notify,
}

impl Outbox {
    /// Resolves when a message is pushed (for the uplink's loop).
    pub async fn pushed(&self) {
        self.notify.notified().await
    }

    pub fn push(&self, topic: String, payload: Vec<u8>) {
        self.queue.lock().unwrap().push_back((topic, payload));
        self.notify.notify_one();
    }

    pub fn pop(&self) -> Option<(String, Vec<u8>)> {
        self.queue.lock().unwrap().pop_front()
    }

    /// Whether everything pushed has been handed to the MQTT client.
    pub fn is_empty(&self) -> bool {
        self.queue.lock().unwrap().is_empty()
    }

    /// Puts back an item that could not be published.
    pub fn push_front(&self, item: (String, Vec<u8>)) {
        self.queue.lock().unwrap().push_front(item);
    }
}

/// Named telemetry readings that other parts keep current.
#[derive(Default)]
pub struct Gauges(std::sync::Mutex<serde_json::Map<String, serde_json::Value>>);

impl Gauges {
    pub fn set(&self, key: &str, value: serde_json::Value) {
        self.0.lock().unwrap().insert(key.to_string(), value);
    }
    pub fn get(&self, key: &str) -> Option<serde_json::Value> {
        self.0.lock().unwrap().get(key).cloned()
    }
    pub fn snapshot(&self) -> serde_json::Map<String, serde_json::Value> {
        self.0.lock().unwrap().clone()
    }
}

/// What the health monitor last saw of each camera, for the gateway's `/metrics`.
#[derive(Default)]
pub struct Probes(
    std::sync::Mutex<std::collections::BTreeMap<String, ProbeReading>>,
    /// The cameras the health monitor in force probes (None until it has started).
    std::sync::Mutex<Option<Vec<String>>>,
);

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProbeReading {
    /// The camera's state after the round ("up", "down", ...).
    pub state: &'static str,
    /// How long the last round took.
    pub round_seconds: f64,
    pub rounds: u64,
    /// Rounds that found at least one problem.
    pub failed_rounds: u64,
}

impl Probes {
    pub fn record(&self, camera: &str, state: &'static str, round_seconds: f64, failed: bool) {
        let mut m = self.0.lock().unwrap();
        let r = m.entry(camera.to_string()).or_default();
        r.state = state;
        r.round_seconds = round_seconds;
        r.rounds += 1;
        r.failed_rounds += failed as u64;
    }

    /// Forgets cameras no longer configured; `cameras` are the ones probed from now on.
    pub fn retain(&self, cameras: &[&str]) {
        self.0
            .lock()
            .unwrap()
            .retain(|k, _| cameras.contains(&k.as_str()));
        *self.1.lock().unwrap() = Some(cameras.iter().map(|c| c.to_string()).collect());
    }

    /// Whether every camera the monitor in force probes has finished a round (false until a
    /// monitor has started), whatever changed in the config since.
    pub fn every_camera_probed(&self) -> bool {
        let Some(expected) = self.1.lock().unwrap().clone() else {
            return false;
        };
        let m = self.0.lock().unwrap();
        expected
            .iter()
            .all(|c| m.get(c).is_some_and(|r| r.rounds > 0))
    }

    pub fn snapshot(&self) -> Vec<(String, ProbeReading)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A motion start whose camera wants a still: the event it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StillRequest {
    pub camera: String,
    pub seq: u64,
    pub event_id: u128,
    /// When the event was accepted (the still's latency is measured from here).
    pub at: std::time::Instant,
}

/// Where event sources ask for stills (the snapshot service reads them). Never blocks the
/// source: when the queue is full the request is dropped and counted (the event went out
/// regardless).
#[derive(Debug, Clone, Default)]
pub struct StillRequests {
    tx: Option<tokio::sync::mpsc::Sender<StillRequest>>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl StillRequests {
    /// Requests go nowhere (no camera wants stills, or tests).
    pub fn none() -> StillRequests {
        StillRequests::default()
    }

    pub fn channel(capacity: usize) -> (StillRequests, tokio::sync::mpsc::Receiver<StillRequest>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        (
            StillRequests {
                tx: Some(tx),
                dropped: Default::default(),
            },
            rx,
        )
    }

    pub fn motion_started(&self, camera: &str, seq: u64, event_id: u128) {
        let Some(tx) = &self.tx else { return };
        let req = StillRequest {
            camera: camera.to_string(),
            seq,
            event_id,
            at: std::time::Instant::now(),
        };
        if tx.try_send(req).is_err() {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Requests dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A count that only rises (broker connects, probe rounds) and that a task can wait on
/// instead of polling it.
#[derive(Debug)]
pub struct Counter(tokio::sync::watch::Sender<u64>);

impl Default for Counter {
    fn default() -> Counter {
        Counter(tokio::sync::watch::channel(0).0)
    }
}

impl Counter {
    pub fn bump(&self) {
        self.0.send_modify(|n| *n += 1);
    }

    pub fn get(&self) -> u64 {
        *self.0.borrow()
    }

    /// Whether the count reaches `target` within `timeout`.
    pub async fn reaches(&self, target: u64, timeout: std::time::Duration) -> bool {
        let mut rx = self.0.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_camera_probed_follows_the_monitor_in_force() {
        let p = Probes::default();
        assert!(!p.every_camera_probed(), "no monitor yet");
        p.retain(&["a", "b"]);
        p.record("a", "up", 0.1, false);
        assert!(!p.every_camera_probed());
        // A config change drops b: a is all there is to wait for.
        p.retain(&["a"]);
        assert!(p.every_camera_probed());
        p.retain(&[]);
        assert!(
            p.every_camera_probed(),
            "nothing probed: nothing to wait for"
        );
    }

    #[test]
    fn cameras_not_up_follow_the_typed_state_and_clearing() {
        let r = Retained::default();
        r.set_health(
            "t/camera/a/health".into(),
            br#"{"state":"down"}"#.to_vec(),
            false,
        );
        // The payload's bytes do not decide: a detail quoting "state":"up" is still down.
        r.set_health(
            "t/camera/b/health".into(),
            br#"{"state":"degraded","detail":{"x":"\"state\":\"up\""}}"#.to_vec(),
            false,
        );
        assert_eq!(r.cameras_not_up(), 2);
        r.set_health(
            "t/camera/a/health".into(),
            br#"{"state":"up"}"#.to_vec(),
            true,
        );
        assert_eq!(r.cameras_not_up(), 1);
        r.set("t/camera/b/health".into(), Vec::new());
        assert_eq!(r.cameras_not_up(), 0);
        let dirty = r.take_dirty();
        assert_eq!(dirty.len(), 2, "both changed topics go out once");
        assert!(r.take_dirty().is_empty());
        r.mark_all_dirty();
        assert_eq!(r.take_dirty().len(), 1, "the cleared one was forgotten");
    }
}
