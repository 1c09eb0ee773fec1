//! Pure MQTT session bookkeeping (no I/O, no clock): which buffered record each packet id
//! carries, the in-flight window, and the reconnect backoff.
//!
//! rumqttc's `publish()` does not return the packet id. It reports `Outgoing::Publish(pkid)`
//! as each QoS 1 publish is written, in the order the requests were made, so a FIFO of what
//! was submitted ties each pkid to its record, and `PubAck(pkid)` to the record to acknowledge.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::record::Class;

/// What a QoS 1 publish carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// A control message (status, retained health, a command result): not in the window.
    Control,
    /// A buffered record.
    Record(Class, u64),
}

#[derive(Debug)]
pub struct Session {
    window: usize,
    submitted: VecDeque<(Item, Instant)>,
    by_pkid: HashMap<u16, (Item, Instant)>,
    inflight: usize,
    ping_sent: Option<Instant>,
}

impl Session {
    pub fn new(window: usize) -> Session {
        Session {
            window: window.max(1),
            submitted: VecDeque::new(),
            by_pkid: HashMap::new(),
            inflight: 0,
            ping_sent: None,
        }
    }

    /// Room for another buffered record in the window.
    pub fn can_send(&self) -> bool {
        self.inflight < self.window
    }

    pub fn inflight(&self) -> usize {
        self.inflight
    }

    /// A QoS 1 publish was handed to the client at `now`.
    pub fn submitted(&mut self, item: Item, now: Instant) {
        if item != Item::Control {
            self.inflight += 1;
        }
        self.submitted.push_back((item, now));
    }

    /// The client wrote a publish with this packet id (0 for QoS 0, ignored).
    pub fn on_outgoing_publish(&mut self, pkid: u16) {
        if pkid == 0 {
            return;
        }
        if let Some(entry) = self.submitted.pop_front() {
            self.by_pkid.insert(pkid, entry);
        }
    }

    /// The broker acknowledged `pkid`: returns what it carried (`None` when unknown).
    pub fn on_puback(&mut self, pkid: u16) -> Option<Item> {
        let (item, _) = self.by_pkid.remove(&pkid)?;
        if item != Item::Control {
            self.inflight -= 1;
        }
        Some(item)
    }

    /// The client sent a PINGREQ.
    pub fn on_ping_sent(&mut self, now: Instant) {
        self.ping_sent.get_or_insert(now);
    }

    /// Anything arrived from the broker: the link is alive.
    pub fn on_incoming(&mut self) {
        self.ping_sent = None;
    }

    /// Whether the link should be declared dead at `now`: a PINGREQ unanswered for half the
    /// keep-alive, or a publish unacknowledged for a whole keep-alive. Together these notice a
    /// silently stalled link within 1.5x the keep-alive, where waiting for the client's next
    /// ping would take 2x.
    pub fn link_dead(&self, now: Instant, keep_alive: Duration) -> bool {
        let ping_late = self
            .ping_sent
            .is_some_and(|t| now.duration_since(t) > keep_alive / 2);
        let oldest = self
            .submitted
            .iter()
            .map(|(_, t)| *t)
            .chain(self.by_pkid.values().map(|(_, t)| *t))
            .min();
        let ack_late = oldest.is_some_and(|t| now.duration_since(t) > keep_alive);
        ping_late || ack_late
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubacks_are_tied_to_records_in_submission_order() {
        let now = Instant::now();
        let mut s = Session::new(4);
        s.submitted(Item::Control, now); // status
        s.submitted(Item::Record(Class::Event, 10), now);
        s.submitted(Item::Record(Class::Alert, 11), now);
        assert_eq!(s.inflight(), 2);
        s.on_outgoing_publish(1);
        s.on_outgoing_publish(0); // telemetry at QoS 0 in between
        s.on_outgoing_publish(2);
        s.on_outgoing_publish(3);
        assert_eq!(s.on_puback(3), Some(Item::Record(Class::Alert, 11)));
        assert_eq!(s.on_puback(1), Some(Item::Control));
        assert_eq!(s.on_puback(2), Some(Item::Record(Class::Event, 10)));
        assert_eq!(s.on_puback(2), None, "a repeated puback is unknown");
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn window_limits_records_not_control_messages() {
        let now = Instant::now();
        let mut s = Session::new(2);
        s.submitted(Item::Record(Class::Event, 1), now);
        s.submitted(Item::Control, now);
        assert!(s.can_send());
        s.submitted(Item::Record(Class::Event, 2), now);
        assert!(!s.can_send());
    }

    #[test]
    fn an_unanswered_ping_kills_the_link_after_half_a_keep_alive() {
        let t0 = Instant::now();
        let ka = Duration::from_secs(10);
        let mut s = Session::new(4);
        assert!(
            !s.link_dead(t0 + Duration::from_secs(100), ka),
            "idle is not dead"
        );
        s.on_ping_sent(t0);
        assert!(!s.link_dead(t0 + Duration::from_secs(4), ka));
        assert!(s.link_dead(t0 + Duration::from_secs(6), ka));
        s.on_incoming();
        assert!(!s.link_dead(t0 + Duration::from_secs(6), ka));
    }

    #[test]
    fn a_publish_unacknowledged_for_a_keep_alive_kills_the_link() {
        let t0 = Instant::now();
        let ka = Duration::from_secs(10);
        let mut s = Session::new(4);
        s.submitted(Item::Record(Class::Event, 1), t0);
        s.on_outgoing_publish(1);
        assert!(!s.link_dead(t0 + Duration::from_secs(9), ka));
        assert!(s.link_dead(t0 + Duration::from_secs(11), ka));
        s.on_puback(1);
        assert!(!s.link_dead(t0 + Duration::from_secs(11), ka));
    }
}
