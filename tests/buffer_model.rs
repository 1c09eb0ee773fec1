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

struct Model {
    recs: BTreeMap<u64, (Class, St)>,
}

impl Model {
    /// What the buffer must hand out next: alerts first, each class in seq order.
    fn next_unsent(&self) -> Option<u64> {
        [Class::Alert, Class::Event].iter().find_map(|c| {
            self.recs
                .iter()
                .find(|(_, (k, st))| k == c && *st == St::Unsent)
                .map(|(s, _)| *s)
        })
    }

    fn frontier(&self, class: Class) -> u64 {
        let mut f = 0;
        for (s, (k, st)) in &self.recs {
            if *k != class {
                continue;
            }
            if *st != St::Acked {
                break;
            }
            f = *s;
        }
        f
    }
}

fn open(dir: &std::path::Path) -> Buffer {
    let opts = Options {
        max_bytes: 64 << 20,
        sync: SyncMode::Interval,
        sync_interval: Duration::from_millis(50),
        segment_bytes: 2048, // small, so sequences cross and delete many segments
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
            Body::alert("camera_down", Some("cam01"), serde_json::json!({"n": 1}))
        } else {
            Body::motion("cam01", "ingest", "start")
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn buffer_matches_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = open(dir.path());
        let mut model = Model { recs: BTreeMap::new() };
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
                        let want = model.next_unsent();
                        let got = buf.next_unsent().map(|r| r.seq);
                        prop_assert_eq!(got, want);
                        match got {
                            Some(s) => model.recs.get_mut(&s).unwrap().1 = St::InFlight,
                            None => break,
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
                    for v in model.recs.values_mut() {
                        if v.1 == St::InFlight { v.1 = St::Unsent; }
                    }
                }
                Op::Restart => {
                    buf.close();
                    let fr = [model.frontier(Class::Event), model.frontier(Class::Alert)];
                    // In flight goes back to unsent; acks above the persisted frontier are
                    // forgotten (those records are sent again: at-least-once); the rest are gone.
                    model.recs.retain(|s, (c, _)| *s > fr[c.index()]);
                    for v in model.recs.values_mut() { v.1 = St::Unsent; }
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
        for v in model.recs.values_mut() {
            if v.1 == St::InFlight { v.1 = St::Unsent; }
        }
        while let Some(want) = model.next_unsent() {
            prop_assert_eq!(buf.next_unsent().map(|r| r.seq), Some(want));
            model.recs.get_mut(&want).unwrap().1 = St::InFlight;
        }
        prop_assert_eq!(buf.next_unsent().map(|r| r.seq), None);
        buf.close();
    }
}
