//! The daily budget for stills (`snapshot.daily_budget_mb`, per UTC day): pure, with `now`
//! passed in. Bytes are counted when a still is buffered; past the budget, events go without
//! stills, skips are counted, and one alert is due per day.

use serde::{Deserialize, Serialize};

pub use crate::clock::utc_day;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// The UTC day the counts are for.
    pub day: i64,
    /// Bytes of stills buffered that day.
    pub used: u64,
    /// Stills skipped that day because of the budget.
    pub skipped: u64,
    /// Whether that day's alert was raised.
    pub alerted: bool,
}

/// What [`Budget::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Over the budget; `alert` is true the first time that day.
    No {
        alert: bool,
    },
}

impl Budget {
    /// A new day starts only forwards: a clock set back (a board without an RTC before NTP)
    /// keeps counting against the day already recorded, so a reboot cannot reset the spend.
    fn roll(&mut self, now_ms: i64) {
        let d = utc_day(now_ms);
        if d > self.day {
            *self = Budget {
                day: d,
                ..Budget::default()
            };
        }
    }

    /// Whether a still of `bytes` fits today's `limit` (0: no budget); counts it when it does,
    /// and the skip when it does not. `bytes` 0 asks whether anything fits still (before a
    /// fetch).
    pub fn admit(&mut self, now_ms: i64, limit: u64, bytes: u64) -> Admit {
        self.roll(now_ms);
        if limit == 0 || (self.used + bytes <= limit && (bytes > 0 || self.used < limit)) {
            self.used += bytes;
            return Admit::Yes;
        }
        self.skipped += 1;
        let alert = !self.alerted;
        self.alerted = true;
        Admit::No { alert }
    }

    /// Today's counts (rolled over to `now_ms`'s day).
    pub fn today(&mut self, now_ms: i64) -> &Budget {
        self.roll(now_ms);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_796_000_000_000;
    const DAY_MS: i64 = 86_400_000;

    #[test]
    fn past_the_budget_stills_are_skipped_with_one_alert_a_day_and_the_next_day_starts_afresh() {
        let mut b = Budget::default();
        assert_eq!(b.admit(T, 100, 60), Admit::Yes);
        assert_eq!(b.admit(T, 100, 0), Admit::Yes, "room is left");
        assert_eq!(b.admit(T, 100, 60), Admit::No { alert: true });
        assert_eq!(b.admit(T, 100, 30), Admit::Yes, "a smaller one still fits");
        assert_eq!(b.admit(T, 100, 20), Admit::No { alert: false });
        assert_eq!(b.admit(T, 100, 10), Admit::Yes, "up to the limit exactly");
        assert_eq!(
            b.admit(T, 100, 0),
            Admit::No { alert: false },
            "nothing fits now"
        );
        assert_eq!((b.used, b.skipped), (100, 3));
        let tomorrow = (utc_day(T) + 1) * DAY_MS;
        assert_eq!(b.admit(tomorrow - 1, 100, 10), Admit::No { alert: false });
        assert_eq!(b.admit(tomorrow, 100, 60), Admit::Yes);
        assert_eq!(b.today(tomorrow).used, 60);
        assert_eq!(b.today(tomorrow).skipped, 0);
        assert_eq!(b.admit(tomorrow, 100, 60), Admit::No { alert: true });
    }

    #[test]
    fn a_clock_set_back_does_not_reset_the_spend() {
        let mut b = Budget::default();
        assert_eq!(b.admit(T, 100, 90), Admit::Yes);
        let year_ago = T - 365 * DAY_MS;
        assert_eq!(b.admit(year_ago, 100, 20), Admit::No { alert: true });
        assert_eq!(b.admit(T, 100, 20), Admit::No { alert: false });
        assert_eq!(b.used, 90);
    }

    #[test]
    fn no_budget_admits_everything() {
        let mut b = Budget::default();
        for _ in 0..1000 {
            assert_eq!(b.admit(T, 0, 1 << 20), Admit::Yes);
        }
    }
}
