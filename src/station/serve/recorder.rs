//! The recorder: one persistent MQTT session (clean session off, QoS 1, manual
//! acknowledgements) and one writer thread. A message is acknowledged to the broker only
//! after the transaction that records it has committed, so whatever the broker delivered
//! survives the station's own crash or restart: what was not acknowledged is delivered
//! again, and the store records a re-sent message once. When the database fails, the batch
//! is retried (never acknowledged meanwhile) and the session stops reading, leaving the
//! messages with the broker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use tokio::sync::{broadcast, mpsc};

use super::db::Target;
use super::pool::on_own_thread;
use super::rows::classify;
use super::store::Change;
use crate::clock::{Clock, SystemClock};

/// Messages read from the broker and not yet recorded, at most.
pub const QUEUE: usize = 8192;
/// Most messages in one transaction.
pub const BATCH: usize = 2000;

#[derive(Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub recorded: AtomicU64,
    pub batches: AtomicU64,
    pub errors: AtomicU64,
    pub connects: AtomicU64,
    pub connected: AtomicBool,
    /// Receipt to commit of the newest batch's oldest message.
    pub lag_ms: AtomicI64,
    pub queued: AtomicI64,
}

pub struct Args {
    /// The broker (or brokers, tried in order) of `--mqtt`.
    pub brokers: crate::station::Brokers,
    pub filter: String,
    pub prefix: String,
    pub target: Target,
}

struct Incoming {
    publish: Publish,
    received_ms: i64,
}

/// Starts the recorder; live changes go to `changes` as JSON text.
pub async fn start(
    a: Args,
    changes: broadcast::Sender<Arc<str>>,
    stats: Arc<Stats>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut brokers = a.brokers;
    brokers.set(|o| {
        o.set_clean_session(false);
        o.set_manual_acks(true);
    });
    let (client, mut el) = AsyncClient::new(brokers.first(), 1024);
    let (tx, mut rx) = mpsc::channel::<Incoming>(QUEUE);
    let ack_client = client.clone();
    let prefix = a.prefix.clone();
    let wstats = stats.clone();
    on_own_thread("station-recorder".into(), &a.target, move |mut store| {
            let clock = SystemClock;
            let mut batch: Vec<Incoming> = Vec::with_capacity(BATCH);
            // Acknowledgements the client's request queue had no room for yet. They are never
            // awaited here: the event loop that drains that queue may itself be waiting for
            // room in ours (a backlog from the broker), so waiting on it would deadlock. We
            // keep taking messages instead, which lets the event loop run and drain it.
            let mut unacked: VecDeque<(QoS, u16)> = VecDeque::new();
            loop {
                while let Some(&(qos, pkid)) = unacked.front() {
                    let mut p = Publish::new("", qos, Vec::new());
                    p.pkid = pkid;
                    if ack_client.try_ack(&p).is_err() {
                        break;
                    }
                    unacked.pop_front();
                }
                let first = if unacked.is_empty() {
                    rx.blocking_recv()
                } else {
                    match rx.try_recv() {
                        Ok(m) => Some(m),
                        Err(mpsc::error::TryRecvError::Empty) => {
                            std::thread::sleep(Duration::from_millis(2));
                            continue;
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => None,
                    }
                };
                let Some(first) = first else { break };
                batch.push(first);
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                wstats.queued.store(rx.len() as i64, Ordering::Relaxed);
                let rows: Vec<_> = batch
                    .iter()
                    .map(|m| {
                        (
                            classify(&prefix, &m.publish.topic, &m.publish.payload),
                            m.received_ms,
                        )
                    })
                    .collect();
                let mut delay = Duration::from_millis(200);
                let recorded = loop {
                    match store.record(&rows) {
                        Ok(c) => break c,
                        Err(e) => {
                            wstats.errors.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(
                                "cannot record {} messages (kept, not acknowledged; retrying in {delay:?}): {e:#}",
                                rows.len()
                            );
                            std::thread::sleep(delay);
                            delay = (delay * 2).min(Duration::from_secs(10));
                        }
                    }
                };
                let oldest = batch.iter().map(|m| m.received_ms).min().unwrap_or(0);
                wstats
                    .lag_ms
                    .store(clock.now_ms() - oldest, Ordering::Relaxed);
                wstats
                    .recorded
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                wstats.batches.fetch_add(1, Ordering::Relaxed);
                for m in batch.drain(..) {
                    if m.publish.qos != QoS::AtMostOnce {
                        unacked.push_back((m.publish.qos, m.publish.pkid));
                    }
                }
                for c in recorded {
                    let _ = changes.send(change_json(&c).into());
                }
            }
        })
    .await?;
    let filter = a.filter;
    Ok(tokio::spawn(async move {
        let clock = SystemClock;
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    stats.connects.fetch_add(1, Ordering::Relaxed);
                    stats.connected.store(true, Ordering::Relaxed);
                    brokers.on_connected();
                    tracing::info!(
                        "connected to the broker {} (session present: {}); subscribing to {filter}",
                        brokers.current(),
                        ack.session_present
                    );
                    if let Err(e) = client.subscribe(filter.clone(), QoS::AtLeastOnce).await {
                        tracing::error!("cannot subscribe: {e}");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    stats.received.fetch_add(1, Ordering::Relaxed);
                    let m = Incoming {
                        publish: p,
                        received_ms: clock.now_ms(),
                    };
                    // Waits while the writer is behind: the broker keeps the rest meanwhile.
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if stats.connected.swap(false, Ordering::Relaxed) {
                        tracing::warn!("broker connection lost ({}): {e}", brokers.current());
                    }
                    let wait = brokers.on_error(&mut el);
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    }))
}

/// One live change as the browser receives it.
pub fn change_json(c: &Change) -> String {
    let v = match c {
        Change::Camera(v) => serde_json::json!({"type": "camera", "camera": v}),
        Change::Alert(v) => serde_json::json!({"type": "alert", "alert": v}),
        Change::Event(v) => serde_json::json!({"type": "event", "event": v}),
        Change::Still(v) => serde_json::json!({"type": "still", "still": v}),
        Change::Gateway { ward, gateway } => {
            serde_json::json!({"type": "gateway", "ward": ward, "gateway": gateway})
        }
    };
    v.to_string()
}
