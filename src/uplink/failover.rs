//! Which broker of `mqtt.urls` to try next: pure, no I/O, no clock.
//!
//! The rule: every reconnect starts a round at the first broker and walks the list in order,
//! one attempt each; the first that connects is kept for as long as its connection lives.
//! Only when a whole round has failed does the uplink back off (its exponential backoff)
//! before the next round. A connection that worked and then ended also backs off once (the
//! backoff was reset on connect: its shortest delay) and starts a new round at the first,
//! preferred, broker. With one broker this is exactly the single-URL behaviour.

#[derive(Debug, Clone)]
pub struct Failover {
    n: usize,
    next: usize,
    failed_in_round: usize,
}

/// What to do after an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Try the next broker at once.
    TryNext,
    /// Back off, then start a new round at the first broker.
    BackOff,
}

impl Failover {
    pub fn new(brokers: usize) -> Failover {
        Failover {
            n: brokers.max(1),
            next: 0,
            failed_in_round: 0,
        }
    }

    /// The index of the broker to try now.
    pub fn attempt(&self) -> usize {
        self.next
    }

    /// The attempt on [`Failover::attempt`] never connected.
    pub fn failed(&mut self) -> Then {
        self.failed_in_round += 1;
        if self.failed_in_round >= self.n {
            self.next = 0;
            self.failed_in_round = 0;
            Then::BackOff
        } else {
            self.next = (self.next + 1) % self.n;
            Then::TryNext
        }
    }

    /// The attempt connected and later ended: a new round, from the first broker.
    pub fn lost(&mut self) -> Then {
        self.next = 0;
        self.failed_in_round = 0;
        Then::BackOff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_broker_backs_off_after_every_failure() {
        let mut f = Failover::new(1);
        for _ in 0..3 {
            assert_eq!(f.attempt(), 0);
            assert_eq!(f.failed(), Then::BackOff);
        }
        assert_eq!(f.lost(), Then::BackOff);
        assert_eq!(f.attempt(), 0);
    }

    #[test]
    fn a_round_walks_the_list_in_order_then_backs_off_and_starts_again() {
        let mut f = Failover::new(3);
        let mut tried = Vec::new();
        let mut backoffs = 0;
        for _ in 0..6 {
            tried.push(f.attempt());
            if f.failed() == Then::BackOff {
                backoffs += 1;
            }
        }
        assert_eq!(tried, [0, 1, 2, 0, 1, 2]);
        assert_eq!(backoffs, 2);
    }

    #[test]
    fn the_broker_that_works_is_kept_and_a_lost_one_starts_over_at_the_first() {
        let mut f = Failover::new(3);
        assert_eq!(f.failed(), Then::TryNext); // 0 down
        assert_eq!(f.attempt(), 1); // 1 connects: kept until its connection ends
        assert_eq!(f.lost(), Then::BackOff);
        assert_eq!(f.attempt(), 0, "the preferred broker is tried first again");
        assert_eq!(f.failed(), Then::TryNext);
        assert_eq!(f.failed(), Then::TryNext);
        assert_eq!(f.attempt(), 2);
        // A round counts from its start: 0 and 1 failed, 2 failing ends it.
        assert_eq!(f.failed(), Then::BackOff);
        assert_eq!(f.attempt(), 0);
    }

    #[test]
    fn zero_brokers_is_treated_as_one() {
        let mut f = Failover::new(0);
        assert_eq!(f.attempt(), 0);
        assert_eq!(f.failed(), Then::BackOff);
    }
}
