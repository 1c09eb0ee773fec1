//! Model-based property test of the buffer: random append / send / ack / rewind / restart
//! sequences against a simple model of which records are unsent, in flight and acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use camgw::buffer::{Buffer, Options};
use camgw::clock::FixedClock;
use camgw::config::SyncMode;
use camgw::record::{Body, Class, NewRecord};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append(bool),
    Send(u8),
    Ack(u8),
    Rewind,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<bool>().prop_map(Op::Append),
        3 => (1u8..20).prop_map(Op::Send),
        3 => any::<u8>().prop_map(Op::Ack),
        1 => Just(Op::Rewind),
        1 => Just(Op::Restart),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum St {
    Unsent,
    InFlight,
    Acked,
}

/// The model mirrors the buffer's (deliberately conservative) ack frontier: just below the
/// oldest record in flight, else the last record its cursor passed. Records acknowledged
/// above it are remembered only in memory, so a restart sends them again.
struct Model {
    recs: BTreeMap<u64, (Class, St)>,
    last_read: [u64; 2],
}

impl Model {
    fn frontier(&self, class: Class) -> u64 {
        self.recs
            .iter()
            .find(|(_, (k, st))| *k == class && *st == St::InFlight)
            .map(|(s, _)| s - 1)
            .unwrap_or(self.last_read[class.index()])
    }

    /// The buffer read `class` to its end, passing every record acknowledged out of order.
    fn exhausted(&mut self, class: Class) {
        let max_acked = self
            .recs
            .iter()
            .filter(|(_, (k, st))| *k == class && *st == St::Acked)
            .map(|(s, _)| *s)
            .max()
            .unwrap_or(0);
        let lr = &mut self.last_read[class.index()];
        *lr = (*lr).max(max_acked);
    }

    /// Mirrors one `next_unsent` call.
    fn take_next(&mut self) -> Option<u64> {
        for c in [Class::Alert, Class::Event] {
            let next = self
                .recs
                .iter()
                .find(|(_, (k, st))| *k == c && *st == St::Unsent)
                .map(|(s, _)| *s);
            match next {
                Some(s) => {
                    self.recs.get_mut(&s).unwrap().1 = St::InFlight;
                    let lr = &mut self.last_read[c.index()];
                    *lr = (*lr).max(s);
                    return Some(s);
                }
                None => self.exhausted(c),
            }
        }
        None
    }

    fn rewind(&mut self) {
        for c in Class::ALL {
            if let Some(min) = self
                .recs
                .iter()
                .find(|(_, (k, st))| *k == c && *st == St::InFlight)
                .map(|(s, _)| *s)
            {
                self.last_read[c.index()] = min - 1;
            }
        }
        for v in self.recs.values_mut() {
            if v.1 == St::InFlight {
                v.1 = St::Unsent;
            }
        }
    }
}

fn open(dir: &std::path::Path) -> Buffer {
    let opts = Options {
        max_bytes: 64 << 20,
        sync: SyncMode::Interval,
        sync_interval: Duration::from_millis(50),
        segment_bytes: 2048, // small, so sequences cross and delete many segments
        still_max_bytes: 1 << 20,
    };
    Buffer::open(
        dir,
        opts,
        Arc::new(FixedClock::new(1_700_000_000_000, true)),
    )
    .unwrap()
    .0
}

fn rec(alert: bool) -> NewRecord {
    NewRecord {
        ts_ms: 1_700_000_000_000,
        clock_synced: true,
        body: if alert {
            Body::alert(
                camgw::record::AlertKind::CameraDown,
                Some("cam01"),
                serde_json::json!({"n": 1}),
            )
        } else {
            Body::motion(
                "cam01",
                camgw::record::Source::Ingest,
                camgw::record::MotionState::Start,
                serde_json::Value::Null,
            )
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn buffer_matches_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = open(dir.path());
        let mut model = Model { recs: BTreeMap::new(), last_read: [0, 0] };
        let mut last_seq = 0;
        for op in ops {
            match op {
                Op::Append(alert) => {
                    let a = buf.append_blocking(rec(alert)).unwrap();
                    prop_assert!(a.seq > last_seq, "seq increases: {} after {}", a.seq, last_seq);
                    last_seq = a.seq;
                    let class = if alert { Class::Alert } else { Class::Event };
                    model.recs.insert(a.seq, (class, St::Unsent));
                }
                Op::Send(n) => {
                    for _ in 0..n {
                        let want = model.take_next();
                        let got = buf.next_unsent().map(|r| r.seq);
                        prop_assert_eq!(got, want);
                        if got.is_none() {
                            break;
                        }
                    }
                }
                Op::Ack(k) => {
                    let inflight: Vec<_> = model.recs.iter()
                        .filter(|(_, (_, st))| *st == St::InFlight)
                        .map(|(s, (c, _))| (*s, *c)).collect();
                    if !inflight.is_empty() {
                        let (s, c) = inflight[k as usize % inflight.len()];
                        buf.ack(c, s);
                        model.recs.get_mut(&s).unwrap().1 = St::Acked;
                    }
                }
                Op::Rewind => {
                    buf.rewind();
                    model.rewind();
                }
                Op::Restart => {
                    buf.close();
                    let fr = [model.frontier(Class::Event), model.frontier(Class::Alert)];
                    // In flight goes back to unsent; acks above the persisted frontier are
                    // forgotten (those records are sent again: at-least-once); the rest are gone.
                    model.recs.retain(|s, (c, _)| *s > fr[c.index()]);
                    for v in model.recs.values_mut() { v.1 = St::Unsent; }
                    model.last_read = fr;
                    buf = open(dir.path());
                    let stats = buf.stats();
                    prop_assert_eq!(stats.events + stats.alerts, model.recs.len() as u64);
                }
            }
            let stats = buf.stats();
            let unacked = model.recs.values().filter(|v| v.1 != St::Acked).count() as u64;
            prop_assert_eq!(stats.events + stats.alerts, unacked);
        }
        // Drain: everything not acknowledged comes out, in order.
        buf.rewind();
        model.rewind();
        while let Some(want) = model.take_next() {
            prop_assert_eq!(buf.next_unsent().map(|r| r.seq), Some(want));
        }
        prop_assert_eq!(buf.next_unsent().map(|r| r.seq), None);
        buf.close();
    }
}
