//! The stills link: event stills go to the broker on a connection of their own
//! (`camgw-{ward}-{id}-stills`), so that a still on the wire never sits in front of an event
//! or alert in the main connection's byte stream. On a slow link the two connections share
//! the bandwidth as the link schedules them (per flow, on Linux's default fq_codel), and an
//! event waits at most for the link's share, not for a whole picture.
//!
//! A still is published only when no alert or event is waiting or in flight on the main
//! connection (the buffer decides), so it reaches the broker after the event it belongs to;
//! one at a time; it is deleted from the buffer on PUBACK and sent again after a reconnect
//! otherwise. The link connects only while stills are waiting and closes after [`IDLE`]
//! without any, so an idle gateway holds no extra broker connection (3,000 gateways are
//! 3,000 connections more only while they all send pictures).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use tokio_util::sync::CancellationToken;

use crate::buffer::Buffer;
use crate::clock::Clock;
use crate::config::Config;
use crate::proto::backoff::Backoff;
use crate::topics::Leaf;

use super::UplinkStats;

/// The link closes after this long with no still waiting.
pub const IDLE: Duration = Duration::from_secs(30);

pub struct StillLink {
    pub config: Arc<Config>,
    pub buffer: Buffer,
    pub clock: Arc<dyn Clock>,
    pub stats: Arc<UplinkStats>,
}

/// How a connection of the stills link ended.
enum End {
    Shutdown,
    Idle,
    Failed(String),
}

/// The still in flight: its event seq, and its packet id once written.
struct InFlight {
    seq: u64,
    pkid: Option<u16>,
}

impl StillLink {
    pub async fn run(self, shutdown: CancellationToken) {
        let m = &self.config.mqtt;
        let mut backoff = Backoff::new(m.reconnect_min, m.reconnect_max);
        loop {
            // Connect only when there is something to send.
            while self.buffer.stats().stills == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.buffer.stills_notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            let id = format!(
                "camgw-{}-{}-stills",
                self.config.gateway.ward, self.config.gateway.id
            );
            let broker = m.brokers.get(self.stats.broker.load(Ordering::SeqCst));
            let mut opts = match super::mqtt_options(m, broker, id) {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!("mqtt settings unusable for the stills link: {e:#}");
                    return;
                }
            };
            opts.set_clean_session(true);
            let failure = self.connection(opts, &shutdown, &mut backoff).await;
            self.buffer.rewind_stills();
            let failure = match failure {
                End::Shutdown => return,
                End::Idle => continue,
                End::Failed(f) => f,
            };
            let delay = backoff.next_delay(rand::random::<f64>());
            tracing::debug!(
                delay_ms = delay.as_millis() as u64,
                "stills link lost ({}); reconnecting",
                crate::logs::clip(&failure)
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One connection, until shutdown, [`IDLE`] without a still, or a failure.
    async fn connection(
        &self,
        opts: rumqttc::MqttOptions,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> End {
        let (client, mut eventloop) = AsyncClient::new(opts, 4);
        let mut connected = false;
        let mut inflight: Option<InFlight> = None;
        let mut idle_since = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = client.try_disconnect();
                    return End::Shutdown;
                }
                ev = eventloop.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if ack.code != rumqttc::ConnectReturnCode::Success {
                            return End::Failed(format!("broker refused the stills link: {:?}", ack.code));
                        }
                        connected = true;
                        backoff.reset();
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(f) = inflight.as_mut() {
                            f.pkid = Some(pkid);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(f) = inflight.take_if(|f| f.pkid == Some(ack.pkid)) {
                            if let Some(bytes) = self.buffer.ack_still(f.seq) {
                                self.stats.still_sent(self.clock.now_ms(), bytes);
                                self.stats.delivered_stills.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return End::Failed(e.to_string()),
                },
                _ = self.buffer.stills_notified(), if connected && inflight.is_none() => {}
                _ = tick.tick() => {}
            }
            if inflight.is_some() || self.buffer.stats().stills > 0 {
                idle_since = tokio::time::Instant::now();
            } else if idle_since.elapsed() >= IDLE {
                let _ = client.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    while eventloop.poll().await.is_ok() {}
                })
                .await;
                return End::Idle;
            }
            if connected && inflight.is_none() {
                if let Some(still) = self.buffer.next_still() {
                    let topic = self.config.topic(Leaf::Snapshot(
                        &still.meta.camera,
                        &crate::record::format_id(still.meta.event_id),
                    ));
                    if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, still.jpeg) {
                        return End::Failed(format!("cannot queue a still: {e}"));
                    }
                    inflight = Some(InFlight {
                        seq: still.meta.seq,
                        pkid: None,
                    });
                }
            }
        }
    }
}
