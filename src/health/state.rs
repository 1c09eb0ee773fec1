//! Pure health hysteresis (no I/O, `now` passed in): probe rounds in, state transitions out.
//!
//! A round is `Ok` (no problems), `Degraded` (the camera answers but something is wrong:
//! frozen, black, clock drift, wrong password, a broken API) or `Failed` (no video: unreachable,
//! the stream does not play or delivers no frames). States move only after
//! `fail_threshold` consecutive bad rounds or `recover_threshold` consecutive good ones, so a
//! flapping camera does not flood the station with alerts.

use std::collections::BTreeSet;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    Unreachable,
    AuthFailed,
    HttpError,
    RtspError,
    NoFrames,
    Frozen,
    Black,
    ClockDrift,
    /// The camera's event stream (motion source) is not connected.
    EventStream,
    /// The camera reports video loss on its input.
    VideoLoss,
    /// The camera's still was refused before decoding (a header claiming more pixels than
    /// any camera has, or a decode that overran its deadline).
    SnapshotRejected,
    /// A probe of this camera failed inside the agent (contained; the task restarted).
    ProbeCrashed,
    /// The camera offers only Basic auth (the password in clear), and its config does not
    /// allow that.
    BasicAuthOnly,
}

impl Problem {
    pub fn name(self) -> &'static str {
        match self {
            Problem::Unreachable => "unreachable",
            Problem::AuthFailed => "auth_failed",
            Problem::HttpError => "http_error",
            Problem::RtspError => "rtsp_error",
            Problem::NoFrames => "no_frames",
            Problem::Frozen => "frozen",
            Problem::Black => "black",
            Problem::ClockDrift => "clock_drift",
            Problem::EventStream => "event_stream",
            Problem::VideoLoss => "video_loss",
            Problem::SnapshotRejected => "snapshot_rejected",
            Problem::ProbeCrashed => "probe_crashed",
            Problem::BasicAuthOnly => "basic_auth_only",
        }
    }

    /// Whether this problem alone means the station has no usable video.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Problem::Unreachable | Problem::RtspError | Problem::NoFrames | Problem::VideoLoss
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Unknown,
    Up,
    Degraded,
    Down,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Up => "up",
            State::Degraded => "degraded",
            State::Down => "down",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    Ok,
    Degraded,
    Failed,
}

fn classify(problems: &BTreeSet<Problem>) -> Round {
    if problems.iter().any(|p| p.is_failure()) {
        Round::Failed
    } else if problems.is_empty() {
        Round::Ok
    } else {
        Round::Degraded
    }
}

/// A state change, to publish and alert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub problems: BTreeSet<Problem>,
    pub since_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Hysteresis {
    fail_threshold: u32,
    recover_threshold: u32,
    state: State,
    since_ms: i64,
    /// Consecutive rounds that were Failed / at least Degraded / Ok.
    failed_run: u32,
    bad_run: u32,
    degraded_only_run: u32,
    ok_run: u32,
    problems: BTreeSet<Problem>,
}

impl Hysteresis {
    pub fn new(fail_threshold: u32, recover_threshold: u32, now_ms: i64) -> Hysteresis {
        Hysteresis {
            fail_threshold: fail_threshold.max(1),
            recover_threshold: recover_threshold.max(1),
            state: State::Unknown,
            since_ms: now_ms,
            failed_run: 0,
            bad_run: 0,
            degraded_only_run: 0,
            ok_run: 0,
            problems: BTreeSet::new(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn since_ms(&self) -> i64 {
        self.since_ms
    }

    /// Problems of the latest round.
    pub fn problems(&self) -> &BTreeSet<Problem> {
        &self.problems
    }

    /// Feeds one probe round; returns a transition when the state changes.
    pub fn observe(&mut self, problems: BTreeSet<Problem>, now_ms: i64) -> Option<Transition> {
        let round = classify(&problems);
        self.problems = problems;
        match round {
            Round::Ok => {
                self.ok_run += 1;
                self.failed_run = 0;
                self.bad_run = 0;
                self.degraded_only_run = 0;
            }
            Round::Degraded => {
                self.ok_run = 0;
                self.failed_run = 0;
                self.bad_run += 1;
                self.degraded_only_run += 1;
            }
            Round::Failed => {
                self.ok_run = 0;
                self.failed_run += 1;
                self.bad_run += 1;
                self.degraded_only_run = 0;
            }
        }
        let next = match self.state {
            // Nothing to recover from at start: one good round is enough to say "up".
            State::Unknown if self.ok_run >= 1 => State::Up,
            State::Down | State::Degraded if self.ok_run >= self.recover_threshold => State::Up,
            State::Unknown | State::Up | State::Degraded
                if self.failed_run >= self.fail_threshold =>
            {
                State::Down
            }
            State::Unknown | State::Up if self.bad_run >= self.fail_threshold => State::Degraded,
            State::Down if self.degraded_only_run >= self.recover_threshold => State::Degraded,
            s => s,
        };
        if next == self.state {
            return None;
        }
        let t = Transition {
            from: self.state,
            to: next,
            problems: self.problems.clone(),
            since_ms: now_ms,
        };
        self.state = next;
        self.since_ms = now_ms;
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Problem::*;

    fn set(p: &[Problem]) -> BTreeSet<Problem> {
        p.iter().copied().collect()
    }

    fn run(h: &mut Hysteresis, rounds: &[&[Problem]]) -> Vec<(State, State)> {
        rounds
            .iter()
            .enumerate()
            .filter_map(|(i, r)| h.observe(set(r), i as i64 * 10_000))
            .map(|t| (t.from, t.to))
            .collect()
    }

    #[test]
    fn a_camera_goes_down_after_fail_threshold_rounds_and_up_after_recover_threshold() {
        let mut h = Hysteresis::new(3, 2, 0);
        let t = run(
            &mut h,
            &[
                &[],
                &[Unreachable],
                &[Unreachable],
                &[Unreachable],
                &[],
                &[],
            ],
        );
        assert_eq!(
            t,
            vec![
                (State::Unknown, State::Up),
                (State::Up, State::Down),
                (State::Down, State::Up)
            ]
        );
    }

    #[test]
    fn flapping_never_reaches_a_threshold_so_nothing_is_raised() {
        let mut h = Hysteresis::new(3, 2, 0);
        run(&mut h, &[&[]]);
        let flaps: Vec<&[Problem]> = (0..100)
            .map(|i| if i % 2 == 0 { &[NoFrames][..] } else { &[][..] })
            .collect();
        assert_eq!(run(&mut h, &flaps), vec![]);
        assert_eq!(h.state(), State::Up);
    }

    #[test]
    fn frozen_or_black_degrades_and_a_failure_while_degraded_goes_down() {
        let mut h = Hysteresis::new(2, 2, 0);
        let t = run(
            &mut h,
            &[&[], &[Frozen], &[Black], &[Unreachable], &[Unreachable]],
        );
        assert_eq!(
            t,
            vec![
                (State::Unknown, State::Up),
                (State::Up, State::Degraded),
                (State::Degraded, State::Down)
            ]
        );
    }

    #[test]
    fn a_mix_of_failed_and_degraded_rounds_is_degraded_not_down() {
        let mut h = Hysteresis::new(3, 2, 0);
        let t = run(&mut h, &[&[], &[Frozen], &[NoFrames], &[Frozen]]);
        assert_eq!(
            t,
            vec![(State::Unknown, State::Up), (State::Up, State::Degraded)]
        );
    }

    #[test]
    fn a_down_camera_that_answers_again_but_frozen_becomes_degraded() {
        let mut h = Hysteresis::new(1, 2, 0);
        let t = run(&mut h, &[&[Unreachable], &[Frozen], &[Frozen]]);
        assert_eq!(
            t,
            vec![
                (State::Unknown, State::Down),
                (State::Down, State::Degraded)
            ]
        );
    }

    #[test]
    fn transitions_carry_problems_and_since() {
        let mut h = Hysteresis::new(1, 1, 0);
        h.observe(set(&[]), 5);
        let t = h.observe(set(&[AuthFailed, ClockDrift]), 77).unwrap();
        assert_eq!(t.to, State::Degraded);
        assert_eq!(t.problems, set(&[AuthFailed, ClockDrift]));
        assert_eq!(h.since_ms(), 77);
    }

    proptest::proptest! {
        #[test]
        fn every_transition_is_justified_by_the_last_threshold_rounds(rounds in proptest::collection::vec(0u8..3, 0..200)) {
            let mut h = Hysteresis::new(3, 3, 0);
            let mut kinds = Vec::new();
            for (i, r) in rounds.iter().enumerate() {
                let p = match r { 0 => set(&[]), 1 => set(&[Frozen]), _ => set(&[Unreachable]) };
                kinds.push(*r);
                if let Some(t) = h.observe(p, i as i64) {
                    let last3 = &kinds[kinds.len().saturating_sub(3)..];
                    match (t.from, t.to) {
                        (State::Unknown, State::Up) => proptest::prop_assert_eq!(*r, 0),
                        (_, State::Up) => proptest::prop_assert!(last3.len() == 3 && last3.iter().all(|k| *k == 0)),
                        (_, State::Down) => proptest::prop_assert!(last3.len() == 3 && last3.iter().all(|k| *k == 2)),
                        (State::Down, State::Degraded) => proptest::prop_assert!(last3.iter().all(|k| *k == 1)),
                        (_, State::Degraded) => proptest::prop_assert!(last3.len() == 3 && last3.iter().all(|k| *k != 0)),
                        other => proptest::prop_assert!(false, "unexpected transition {other:?}"),
                    }
                }
            }
        }
    }
}
