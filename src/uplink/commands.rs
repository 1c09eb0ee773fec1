//! The command link: a second MQTT connection, only for `T/cmd`.
//!
//! Anyone who can publish on the ward broker can publish on `T/cmd`: any size, retained or
//! not, at any rate. rumqttc cannot skip a packet larger than its incoming limit (the stream
//! is lost, so is the connection), so on the main connection one oversized retained message
//! would drop the link on every subscribe: the Last Will would flap the status, and events
//! and alerts would wait. Commands therefore arrive on a connection of their own, with no
//! Last Will and nothing to deliver; what happens to it never touches the main uplink.
//!
//! On it: an incoming limit of [`MAX_INCOMING`]; a
//! message over it costs this connection only, is counted, and the next connection first
//! clears any retained message on `T/cmd` (an empty retained publish) before it subscribes,
//! so a retained oversized message cannot make it loop. Retained commands are refused (a
//! station publishes commands without retain) and counted. Both raise a `command_refused`
//! alert, at most one per reason every [`ALERT_EVERY`], with the count since the last one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, ConnectionError, Event, Packet, QoS, StateError};
use tokio_util::sync::CancellationToken;

use crate::buffer::Buffer;
use crate::clock::Clock;
use crate::config::Config;
use crate::proto::backoff::Backoff;

/// The largest packet read on the command link. Envelopes above their own bound (256 KiB)
/// but below this one are read and refused with a result that says so; above this one the
/// link itself is cut (rumqttc cannot skip a packet), which costs this connection only.
pub const MAX_INCOMING: usize = 1 << 20;
/// At most one `command_refused` alert per reason in this period.
pub const ALERT_EVERY: Duration = Duration::from_secs(600);

/// Counts of what the command link refused, for telemetry.
#[derive(Debug, Default)]
pub struct CommandStats {
    pub received: AtomicU64,
    pub oversize: AtomicU64,
    pub retained: AtomicU64,
    /// Dropped because the command handler's queue was full (a flood).
    pub dropped: AtomicU64,
    /// Whether the command link is subscribed now; `ready` is notified when it becomes so.
    pub subscribed: std::sync::atomic::AtomicBool,
    pub ready: tokio::sync::Notify,
}

impl CommandStats {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "received": self.received.load(Ordering::Relaxed),
            "refused_oversize": self.oversize.load(Ordering::Relaxed),
            "refused_retained": self.retained.load(Ordering::Relaxed),
            "dropped_flood": self.dropped.load(Ordering::Relaxed),
        })
    }
}

/// Rate-limited alerts per refusal reason: (last alert, count since).
struct Alerts {
    last: [Option<Instant>; 2],
    since: [u64; 2],
}

impl Alerts {
    /// The count to report when an alert for reason `i` is due now.
    fn due(&mut self, i: usize, now: Instant) -> Option<u64> {
        self.since[i] += 1;
        match self.last[i] {
            Some(t) if now.duration_since(t) < ALERT_EVERY => None,
            _ => {
                self.last[i] = Some(now);
                Some(std::mem::take(&mut self.since[i]))
            }
        }
    }
}

pub struct CommandLink {
    pub config: Arc<Config>,
    pub buffer: Buffer,
    pub clock: Arc<dyn Clock>,
    pub stats: Arc<super::UplinkStats>,
    pub commands: tokio::sync::mpsc::Sender<Vec<u8>>,
}

fn is_oversize(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(_)
        ))
    )
}

impl CommandLink {
    async fn alert(&self, alerts: &mut Alerts, reason: &str) {
        let i = usize::from(reason == "retained");
        let Some(count) = alerts.due(i, Instant::now()) else {
            return;
        };
        let detail = match reason {
            "oversize" => {
                serde_json::json!({"reason": "oversize", "count": count, "max_bytes": MAX_INCOMING, "what": format!("a message larger than {MAX_INCOMING} bytes was published on the command topic; it was not read, and any retained message there was cleared")})
            }
            _ => {
                serde_json::json!({"reason": "retained", "count": count, "what": "a retained message was delivered on the command topic; commands are never retained, so it was not obeyed"})
            }
        };
        self.buffer
            .alert(
                self.clock.as_ref(),
                crate::record::AlertKind::CommandRefused,
                None,
                detail,
            )
            .await;
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        // Not subscribed once this link is gone, however it ends (the stats outlive it).
        struct Unsubscribed<'a>(&'a CommandStats);
        impl Drop for Unsubscribed<'_> {
            fn drop(&mut self) {
                self.0.subscribed.store(false, Ordering::SeqCst);
            }
        }
        let _unsubscribed = Unsubscribed(&self.stats.commands);
        let m = &self.config.mqtt;
        let mut backoff = Backoff::new(m.reconnect_min, m.reconnect_max);
        let cmd_topic = self.config.topic(crate::topics::Leaf::Cmd);
        let mut clear_retained = false;
        let mut alerts = Alerts {
            last: [None; 2],
            since: [0; 2],
        };
        loop {
            let id = format!(
                "camgw-{}-{}-cmd",
                self.config.gateway.ward, self.config.gateway.id
            );
            let broker = m.brokers.get(self.stats.broker.load(Ordering::SeqCst));
            let mut opts = match super::mqtt_options(m, broker, id) {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!("mqtt settings unusable for the command link: {e:#}");
                    return;
                }
            };
            opts.set_clean_session(true);
            opts.set_max_packet_size(MAX_INCOMING, MAX_INCOMING);
            let (client, mut eventloop) = AsyncClient::new(opts, 16);
            let failure = loop {
                let ev = tokio::select! {
                    _ = shutdown.cancelled() => {
                        let _ = client.try_disconnect();
                        return;
                    }
                    ev = eventloop.poll() => ev,
                };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if ack.code != rumqttc::ConnectReturnCode::Success {
                            break format!("broker refused the command link: {:?}", ack.code);
                        }
                        backoff.reset();
                        if clear_retained {
                            // Whatever is retained on T/cmd is cleared before subscribing, so
                            // an oversized retained message cannot bring the link down again.
                            let _ =
                                client.try_publish(&cmd_topic, QoS::AtLeastOnce, true, Vec::new());
                            clear_retained = false;
                        }
                        let _ = client.try_subscribe(&cmd_topic, QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if ack
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                        {
                            self.stats.commands.subscribed.store(true, Ordering::SeqCst);
                            self.stats.commands.ready.notify_waiters();
                            tracing::info!(topic = %cmd_topic, "listening for commands");
                        } else {
                            break format!(
                                "the broker refused the subscription to {cmd_topic} ({:?})",
                                ack.return_codes
                            );
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == cmd_topic => {
                        if p.payload.is_empty() {
                            continue; // a cleared retained message
                        }
                        self.stats.commands.received.fetch_add(1, Ordering::Relaxed);
                        if p.retain {
                            self.stats.commands.retained.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                bytes = p.payload.len(),
                                "a retained message on the command topic was refused"
                            );
                            self.alert(&mut alerts, "retained").await;
                            continue;
                        }
                        if self.commands.try_send(p.payload.to_vec()).is_err() {
                            self.stats.commands.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(e) if is_oversize(&e) => {
                        self.stats.commands.oversize.fetch_add(1, Ordering::Relaxed);
                        clear_retained = true;
                        self.alert(&mut alerts, "oversize").await;
                        break format!("{e}");
                    }
                    Err(e) => break format!("{e}"),
                }
            };
            self.stats
                .commands
                .subscribed
                .store(false, Ordering::SeqCst);
            let delay = backoff.next_delay(rand::random::<f64>());
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "command link lost ({}); reconnecting",
                crate::logs::clip(&failure)
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_alert_per_reason_and_period_with_the_count_since() {
        let mut a = Alerts {
            last: [None; 2],
            since: [0; 2],
        };
        let t0 = Instant::now();
        assert_eq!(a.due(0, t0), Some(1));
        for _ in 0..50 {
            assert_eq!(a.due(0, t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(a.due(1, t0), Some(1));
        assert_eq!(a.due(0, t0 + ALERT_EVERY), Some(51));
    }
}
