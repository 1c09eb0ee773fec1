//! The MQTT uplink: one connection to the ward broker at a time, publishing the buffer in
//! `seq` order per topic with a bounded in-flight window, acknowledging records in the buffer
//! on PUBACK, plus birth/Last Will on `T/status` and telemetry.
//!
//! Each connection attempt gets a fresh rumqttc `EventLoop` (clean session), polled in its own
//! task that forwards events here; this task only publishes (with `try_publish`, never
//! blocking on the poller) and keeps the pure [`session::Session`]. When a connection dies,
//! in-flight records go back to unsent ([`Buffer::rewind`]) and are published again on the next
//! connection (QoS 1 duplicates are expected by the contract), on whichever broker of
//! `mqtt.urls` the reconnect reaches ([`failover`]: in order, the first that works is kept).
//! Reconnects back off exponentially with jitter after a whole round of brokers failed; a dead
//! link is found by the MQTT keep-alive.

pub mod commands;
pub mod failover;
pub mod session;
pub mod stills;
pub mod tls;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport};
use tokio_util::sync::CancellationToken;

use crate::buffer::Buffer;
use crate::bus::{Gauges, Outbox, Retained};
use crate::clock::{rfc3339_ms, Clock};
use crate::config::{Config, PayloadFormat};
use crate::record::{Class, Record};
use crate::topics::Leaf;

use crate::proto::backoff::Backoff;
use session::{Item, Session};

pub const VERSION: &str = crate::release::VERSION;

/// What the uplink reports about itself (read by telemetry, the demo and tests).
#[derive(Debug, Default)]
pub struct UplinkStats {
    pub connected: AtomicBool,
    /// The index in `mqtt.brokers` of the broker the uplink is connected to (or trying): the
    /// command and stills links follow it.
    pub broker: std::sync::atomic::AtomicUsize,
    pub connects: crate::bus::Counter,
    pub delivered: AtomicU64,
    /// Stills the broker acknowledged (the stills link).
    pub delivered_stills: AtomicU64,
    /// What the command link received and refused.
    pub commands: commands::CommandStats,
    /// Bytes of stills delivered on the UTC day given (day number, bytes).
    pub stills_sent: std::sync::Mutex<(i64, u64)>,
    /// Where the running software came from (`update::Local::origin`), for status and
    /// telemetry; unset outside `camgw run`.
    pub origin: std::sync::Mutex<Option<serde_json::Value>>,
    /// Publishes the online status again (its `software` changed: a trial was confirmed).
    pub republish_status: tokio::sync::Notify,
}

impl UplinkStats {
    pub(crate) fn still_sent(&self, now_ms: i64, bytes: u64) {
        let day = crate::clock::utc_day(now_ms);
        let mut g = self.stills_sent.lock().unwrap();
        if g.0 != day {
            *g = (day, 0);
        }
        g.1 += bytes;
    }

    /// Bytes of stills delivered today (UTC).
    pub fn stills_sent_today(&self, now_ms: i64) -> u64 {
        let g = self.stills_sent.lock().unwrap();
        if g.0 == crate::clock::utc_day(now_ms) {
            g.1
        } else {
            0
        }
    }
}

/// Everything the uplink needs, fixed for its lifetime.
pub struct Uplink {
    pub config: Arc<Config>,
    pub buffer: Buffer,
    pub clock: Arc<dyn Clock>,
    pub boot_id: String,
    pub started: Instant,
    pub stats: Arc<UplinkStats>,
    pub retained: Arc<Retained>,
    pub outbox: Arc<Outbox>,
    /// Payloads received on `T/cmd`, for the command handler.
    pub commands: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    /// Set when the agent itself stops (publish the offline status); unset when only this
    /// connection is being replaced by a reconfiguration.
    pub final_shutdown: Arc<AtomicBool>,
    /// Bumped at least every second while the uplink loop runs.
    pub beat: Arc<crate::watchdog::Beat>,
    /// Readings other parts add to the telemetry (board, system).
    pub gauges: Arc<Gauges>,
}

/// rumqttc's packet limit on the uplink, each way (its default is 10 KiB).
pub const MAX_PACKET: usize = 1 << 20;

/// Whether a publish fits [`MAX_PACKET`] (a larger one would make rumqttc drop the whole
/// connection): otherwise it is skipped and said.
fn fits(topic: &str, payload: &[u8]) -> bool {
    let ok = topic.len() + payload.len() + 16 <= MAX_PACKET;
    if !ok {
        tracing::error!(topic = %crate::logs::clip(topic), bytes = payload.len(), "a message over the MQTT packet limit was not published");
    }
    ok
}

/// Connection options from `[mqtt]` for one of its brokers: address, keep-alive,
/// credentials, TLS.
pub fn mqtt_options(
    m: &crate::config::Mqtt,
    broker: &crate::config::BrokerUrl,
    client_id: String,
) -> anyhow::Result<MqttOptions> {
    let mut o = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    o.set_keep_alive(m.keep_alive);
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    if let Some(u) = &m.username {
        let p = m.password.as_ref().map(|p| p.expose().to_string());
        o.set_credentials(u.clone(), p.unwrap_or_default());
    }
    if broker.tls {
        o.set_transport(Transport::Tls(tls::client_config(m)?));
    }
    Ok(o)
}

/// Topic names under `T = {prefix}/{ward}/{gateway}`.
pub fn record_topic(config: &Config, class: Class) -> String {
    config.topic(match class {
        Class::Event => Leaf::Event,
        Class::Alert => Leaf::Alert,
    })
}

/// The wire payload of a buffered record in the configured format.
pub fn encode_record(rec: &Record, format: PayloadFormat) -> Vec<u8> {
    match format {
        PayloadFormat::Json => rec.to_json().to_string().into_bytes(),
        PayloadFormat::Postcard => rec.to_postcard(),
    }
}

impl Uplink {
    fn status_online(&self) -> Vec<u8> {
        serde_json::json!({
            "online": true,
            "version": VERSION,
            "boot_id": self.boot_id,
            "ts": rfc3339_ms(self.clock.now_ms()),
            "clock_synced": self.clock.synced(),
            "broker": self.broker_url(),
            "software": self.stats.origin.lock().unwrap().clone(),
        })
        .to_string()
        .into_bytes()
    }

    /// The broker the uplink is on (or trying), as its URL (never with credentials).
    fn broker_url(&self) -> String {
        self.config
            .mqtt
            .brokers
            .get(self.stats.broker.load(Ordering::SeqCst))
            .to_string()
    }

    fn status_offline(&self, reason: Option<&str>) -> Vec<u8> {
        let mut v = serde_json::json!({"online": false, "boot_id": self.boot_id});
        if let Some(r) = reason {
            v["reason"] = r.into();
        }
        v.to_string().into_bytes()
    }

    pub fn telemetry(&self) -> serde_json::Value {
        let b = self.buffer.stats();
        let mut v = serde_json::json!({
            "ts": rfc3339_ms(self.clock.now_ms()),
            "boot_id": self.boot_id,
            "version": VERSION,
            "software": self.stats.origin.lock().unwrap().clone(),
            "uptime_s": self.started.elapsed().as_secs(),
            "clock_synced": self.clock.synced(),
            "buffer": b,
            "delivered": self.stats.delivered.load(Ordering::Relaxed),
            "connects": self.stats.connects.get(),
            "broker": self.broker_url(),
            "uplink_connected": self.stats.connected.load(Ordering::SeqCst),
            "delivered_stills": self.stats.delivered_stills.load(Ordering::Relaxed),
            "stills_sent_today_bytes": self.stats.stills_sent_today(self.clock.now_ms()),
            "commands": self.stats.commands.json(),
            "rss_kb": rss_kb(),
        });
        if let serde_json::Value::Object(m) = &mut v {
            m.extend(self.gauges.snapshot());
        }
        v
    }

    fn options(&self, broker: usize) -> anyhow::Result<MqttOptions> {
        let m = &self.config.mqtt;
        let mut o = mqtt_options(
            m,
            m.brokers.get(broker),
            format!(
                "camgw-{}-{}",
                self.config.gateway.ward, self.config.gateway.id
            ),
        )?;
        o.set_clean_session(true);
        o.set_inflight(m.max_inflight.saturating_add(8));
        o.set_last_will(LastWill::new(
            self.config.topic(Leaf::Status),
            self.status_offline(None),
            QoS::AtLeastOnce,
            true,
        ));
        Ok(o)
    }

    /// Runs until `shutdown`; then publishes the offline status (when connected) and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let m = &self.config.mqtt;
        let mut backoff = Backoff::new(m.reconnect_min, m.reconnect_max);
        let window = m.max_inflight as usize;
        // Commands arrive on a connection of their own (see `commands`): nothing published
        // on T/cmd can take this one down.
        // Stills go on a connection of their own, open only while stills wait (`stills`).
        let _stills = {
            let link = stills::StillLink {
                config: self.config.clone(),
                buffer: self.buffer.clone(),
                clock: self.clock.clone(),
                stats: self.stats.clone(),
            };
            AbortOnDrop(tokio::spawn(link.run(shutdown.clone())))
        };
        let _link = self.commands.clone().map(|tx| {
            let link = commands::CommandLink {
                config: self.config.clone(),
                buffer: self.buffer.clone(),
                clock: self.clock.clone(),
                stats: self.stats.clone(),
                commands: tx,
            };
            AbortOnDrop(tokio::spawn(link.run(shutdown.clone())))
        });
        let mut failover = failover::Failover::new(m.brokers.len());
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let at = failover.attempt();
            self.stats.broker.store(at, Ordering::SeqCst);
            let then = match self.options(at) {
                Ok(opts) => {
                    let clean_exit = self.connection(opts, window, &shutdown, &mut backoff).await;
                    let had_connected = self.stats.connected.swap(false, Ordering::SeqCst);
                    // Whatever the old broker had not acknowledged goes to the next one.
                    self.buffer.rewind();
                    if clean_exit {
                        return;
                    }
                    if had_connected {
                        failover.lost()
                    } else {
                        failover.failed()
                    }
                }
                Err(e) => {
                    tracing::error!(broker = %m.brokers.get(at), "mqtt settings unusable: {e:#}");
                    failover.failed()
                }
            };
            if then == failover::Then::TryNext {
                tracing::info!(
                    broker = %m.brokers.get(failover.attempt()),
                    "trying the next broker"
                );
                continue;
            }
            let delay = backoff.next_delay(rand::random::<f64>());
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "reconnecting to the broker"
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One connection, until it fails (false) or shutdown completes (true).
    async fn connection(
        &self,
        opts: MqttOptions,
        window: usize,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> bool {
        let (client, mut eventloop) = AsyncClient::new(opts, window * 2 + 64);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let poller = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let failed = ev.is_err();
                if tx.send(ev).is_err() || failed {
                    return;
                }
            }
        });
        let _abort = AbortOnDrop(poller);
        let mut session = Session::new(window);
        let mut connected = false;
        let keep_alive = self.config.mqtt.keep_alive;
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut liveness = tokio::time::interval(Duration::from_millis(250));
        liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut telemetry = tokio::time::interval(self.config.mqtt.telemetry_interval);
        telemetry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let status_topic = self.config.topic(Leaf::Status);
        let format = self.config.mqtt.payload;
        let topics = [
            record_topic(&self.config, Class::Event),
            record_topic(&self.config, Class::Alert),
        ];
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    if connected && self.final_shutdown.load(Ordering::SeqCst) {
                        self.say_goodbye(&client, &mut rx, &mut session, &status_topic).await;
                    } else if connected {
                        let _ = client.try_disconnect();
                        let _ = tokio::time::timeout(Duration::from_millis(300), async {
                            while let Some(Ok(_)) = rx.recv().await {}
                        })
                        .await;
                    }
                    return true;
                }
                ev = rx.recv() => {
                    if let Some(Ok(Event::Incoming(_))) = &ev {
                        session.on_incoming();
                    }
                    match ev {
                        Some(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                            if ack.code != rumqttc::ConnectReturnCode::Success {
                                tracing::warn!(code = ?ack.code, "broker refused the connection");
                                return false;
                            }
                            tracing::info!(broker = %self.broker_url(), "connected to the broker");
                            connected = true;
                            backoff.reset();
                            self.stats.connected.store(true, Ordering::SeqCst);
                            self.stats.connects.bump();
                            if self.commands.is_some() {
                                // "Online" means commandable: give the command link (its own
                                // connection) a moment to subscribe first, so a station that
                                // sends a command on seeing the status is heard.
                                let c = &self.stats.commands;
                                let ready = c.ready.notified();
                                if !c.subscribed.load(Ordering::SeqCst) {
                                    let _ = tokio::time::timeout(Duration::from_secs(2), ready).await;
                                }
                            }
                            if client.try_publish(&status_topic, QoS::AtLeastOnce, true, self.status_online()).is_err() {
                                return false;
                            }
                            session.submitted(Item::Control, Instant::now());
                            self.retained.mark_all_dirty();
                        }
                        Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => session.on_outgoing_publish(pkid),
                        Some(Ok(Event::Outgoing(Outgoing::PingReq))) => session.on_ping_sent(Instant::now()),
                        Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                            if let Some(item) = session.on_puback(ack.pkid) {
                                self.acked(item);
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            tracing::warn!("broker connection lost: {e}");
                            return false;
                        }
                        None => return false,
                    }
                }
                _ = self.buffer.notified(), if connected && session.can_send() => {}
                _ = self.retained.changed(), if connected => {}
                _ = self.outbox.pushed(), if connected => {}
                _ = self.stats.republish_status.notified(), if connected => {
                    if client.try_publish(&status_topic, QoS::AtLeastOnce, true, self.status_online()).is_err() {
                        return false;
                    }
                    session.submitted(Item::Control, Instant::now());
                }
                _ = heartbeat.tick() => self.beat.bump(),
                _ = liveness.tick(), if connected => {
                    if session.link_dead(Instant::now(), keep_alive) {
                        tracing::warn!("broker connection lost: no answer from the broker (keep-alive {}s)", keep_alive.as_secs());
                        return false;
                    }
                }
                _ = telemetry.tick(), if connected => {
                    let _ = client.try_publish(self.config.topic(Leaf::Telemetry), QoS::AtMostOnce, false, self.telemetry().to_string());
                }
            }
            if connected {
                let items = self.retained.take_dirty();
                let mut iter = items.into_iter();
                while let Some((topic, payload)) = iter.next() {
                    if !fits(&topic, &payload) {
                        continue;
                    }
                    if client
                        .try_publish(&topic, QoS::AtLeastOnce, true, payload.clone())
                        .is_err()
                    {
                        let mut rest = vec![(topic, payload)];
                        rest.extend(iter);
                        self.retained.restore(rest);
                        return false;
                    }
                    session.submitted(Item::Control, Instant::now());
                }
                while let Some((topic, payload)) = self.outbox.pop() {
                    if !fits(&topic, &payload) {
                        continue;
                    }
                    if client
                        .try_publish(&topic, QoS::AtLeastOnce, false, payload.clone())
                        .is_err()
                    {
                        self.outbox.push_front((topic, payload));
                        return false;
                    }
                    session.submitted(Item::Control, Instant::now());
                }
                if !self.fill(&client, &mut session, &topics, format) {
                    return false;
                }
            }
        }
    }

    /// Publishes buffered records until the window is full or the buffer is caught up.
    fn fill(
        &self,
        client: &AsyncClient,
        session: &mut Session,
        topics: &[String; 2],
        format: PayloadFormat,
    ) -> bool {
        while session.can_send() {
            let Some(rec) = self.buffer.next_unsent() else {
                break;
            };
            let class = rec.class();
            let payload = encode_record(&rec, format);
            if let Err(e) =
                client.try_publish(&topics[class.index()], QoS::AtLeastOnce, false, payload)
            {
                tracing::warn!("cannot queue a publish: {e}");
                return false;
            }
            session.submitted(Item::Record(class, rec.seq), Instant::now());
        }
        true
    }

    /// The broker acknowledged what `item` carried.
    fn acked(&self, item: Item) {
        match item {
            Item::Control => {}
            Item::Record(class, seq) => {
                self.buffer.ack(class, seq);
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn say_goodbye(
        &self,
        client: &AsyncClient,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<Result<Event, rumqttc::ConnectionError>>,
        session: &mut Session,
        status_topic: &str,
    ) {
        if client
            .try_publish(
                status_topic,
                QoS::AtLeastOnce,
                true,
                self.status_offline(Some("shutdown")),
            )
            .is_err()
        {
            return;
        }
        session.submitted(Item::Control, Instant::now());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        // Wait until the offline status is acknowledged (records acked meanwhile count too).
        let mut pending_status = 1usize;
        while pending_status > 0 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Ok(Event::Outgoing(Outgoing::Publish(pkid))))) => {
                    session.on_outgoing_publish(pkid)
                }
                Ok(Some(Ok(Event::Incoming(Packet::PubAck(ack))))) => {
                    match session.on_puback(ack.pkid) {
                        Some(Item::Control) => pending_status -= 1,
                        Some(item) => self.acked(item),
                        None => {}
                    }
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Some(Ok(_)) = rx.recv().await {}
        })
        .await;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resident set size in KiB, from /proc (0 where unavailable).
pub fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
