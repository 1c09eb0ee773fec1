//! Which installed version runs, and the trial of a new one (issue 16). Pure: no I/O, no
//! clock; the caller loads and stores [`Installed`] durably (atomic replace) around every
//! transition, and does the exec.
//!
//! The rules (the contract's "Software updates"):
//! - `camgw run` runs the newest installed version that is confirmed or on trial, unless the
//!   binary that was started (the packaged one: the factory fallback) is newer still. An apt
//!   upgrade therefore supersedes what came over the air only when it is newer.
//! - A new version is on trial until it has connected and finished one health round
//!   ([`Installed::confirm`]); the confirmation is reported once as `update_applied`.
//! - Every start of a version on trial is counted before it runs ([`Installed::on_start`]),
//!   by the launcher (the packaged binary) before it hands over: a release that dies before
//!   it could write anything still uses up its starts.
//!   A start that did not confirm (it exited, was killed, lost power, hung until the watchdog
//!   or `update_confirm_s` ended it) is a failed start; two in a row mark the version failed,
//!   and the next start picks the previous version. The failure is reported once as
//!   `update_failed` with why, by whichever version runs next.
//!
//! Every transition is a whole new state written before the step it allows: a cut at any
//! moment leaves either the state before (the step is redone) or after (it is done), and a
//! start never runs a version marked failed.

use serde::{Deserialize, Serialize};

/// Where an installed version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Trial,
    Confirmed,
    Failed,
}

/// One version installed over the air.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub version: semver::Version,
    /// The binary, relative to the install directory.
    pub file: String,
    /// Its sha256 (lowercase hex), checked again before every hand-over.
    #[serde(default)]
    pub sha256: String,
    pub state: State,
    /// The version that ran when this one was installed.
    pub from: semver::Version,
    /// Starts of this version while on trial (counted before each runs).
    pub starts: u32,
    /// Of those, the ones that ended without confirming.
    pub failed_starts: u32,
    /// Why the last failed start failed, when the process could still say so (a timeout);
    /// a crash or a cut leaves nothing, and the next start says that instead.
    pub last_failure: Option<String>,
    /// Whether `update_applied` / `update_failed` for this version has been published.
    pub reported: bool,
}

/// Everything installed over the air (the durable state file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub versions: Vec<Version>,
}

/// What a start should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Go on as the running binary (`trial`: this start is one of its trial starts).
    Run { trial: bool },
    /// Hand over to this installed version (exec its file with the same command line).
    Exec {
        version: semver::Version,
        file: String,
    },
    /// This version must not run (it was just marked failed): exec the binary that was
    /// started first, which chooses again.
    Fallback,
}

/// A report the running version publishes once (then [`Installed::reported`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Applied {
        from: semver::Version,
        to: semver::Version,
    },
    Failed {
        version: semver::Version,
        from: semver::Version,
        why: String,
    },
}

/// Failed starts in a row that mark a version failed.
pub const FAILED_STARTS: u32 = 2;

impl Installed {
    /// The version a start should run: the newest confirmed or on trial, or `own` (the
    /// binary started) when it is at least as new.
    pub fn choice(&self, own: &semver::Version) -> Option<&Version> {
        self.versions
            .iter()
            .filter(|v| {
                v.state != State::Failed
                    && v.version.cmp_precedence(own) == std::cmp::Ordering::Greater
            })
            .max_by(|a, b| a.version.cmp_precedence(&b.version))
    }

    fn get_mut(&mut self, v: &semver::Version) -> Option<&mut Version> {
        self.versions.iter_mut().find(|x| x.version == *v)
    }

    /// A start of the binary whose version is `own`; `fallback` when it is the binary that
    /// was started first (the packaged one, the launcher), not a version it handed over to.
    /// The launcher counts a trial start before it hands over, so a release that crashes
    /// before it could count anything still uses up its starts. Returns the plan; the state it
    /// leaves must be stored durably before the plan is carried out.
    pub fn on_start(&mut self, own: &semver::Version, fallback: bool) -> Plan {
        if fallback {
            // At most once per installed version: each pass marks one failed or returns.
            for _ in 0..=self.versions.len() {
                let Some(c) = self.choice(own).map(|c| c.version.clone()) else {
                    // The packaged binary is at least as new as anything that may run.
                    return Plan::Run { trial: false };
                };
                let v = self.get_mut(&c).expect("chosen from the list");
                if v.state == State::Trial && count_start(v) {
                    continue;
                }
                return Plan::Exec {
                    version: v.version.clone(),
                    file: v.file.clone(),
                };
            }
            return Plan::Run { trial: false };
        }
        match self.get_mut(own) {
            None => Plan::Run { trial: false },
            Some(v) => match v.state {
                State::Confirmed => Plan::Run { trial: false },
                State::Failed => Plan::Fallback,
                // Counted by the launcher that handed over.
                State::Trial => Plan::Run { trial: true },
            },
        }
    }

    /// A version the launcher could not hand over to (its file is missing, damaged or will
    /// not exec): marked failed with why, so the next choice skips it.
    pub fn unusable(&mut self, version: &semver::Version, why: &str) {
        if let Some(v) = self.get_mut(version) {
            v.state = State::Failed;
            v.reported = false;
            v.last_failure = Some(why.to_string());
        }
    }

    /// The version on trial connected and finished a health round.
    pub fn confirm(&mut self, own: &semver::Version) -> bool {
        match self.get_mut(own) {
            Some(v) if v.state == State::Trial => {
                v.state = State::Confirmed;
                v.reported = false;
                true
            }
            _ => false,
        }
    }

    /// The running trial ends without confirming (`update_confirm_s` ran out): says why, for
    /// the report. The start was already counted; the next start counts it as failed.
    pub fn trial_timed_out(&mut self, own: &semver::Version, why: &str) {
        if let Some(v) = self.get_mut(own) {
            if v.state == State::Trial {
                v.last_failure = Some(why.to_string());
            }
        }
    }

    /// A newly installed version (on trial, no starts yet). Installing a version again replaces
    /// its entry; older failed entries are kept for their report.
    pub fn install(
        &mut self,
        version: semver::Version,
        file: String,
        sha256: String,
        from: semver::Version,
    ) {
        self.versions.retain(|v| v.version != version);
        self.versions.push(Version {
            version,
            file,
            sha256,
            state: State::Trial,
            from,
            starts: 0,
            failed_starts: 0,
            last_failure: None,
            reported: false,
        });
    }

    /// Reports not yet published.
    pub fn pending_reports(&self) -> Vec<Report> {
        self.versions
            .iter()
            .filter(|v| !v.reported)
            .filter_map(|v| match v.state {
                State::Confirmed => Some(Report::Applied {
                    from: v.from.clone(),
                    to: v.version.clone(),
                }),
                State::Failed => Some(Report::Failed {
                    version: v.version.clone(),
                    from: v.from.clone(),
                    why: v.last_failure.clone().unwrap_or_else(|| {
                        "it exited or was stopped before it was confirmed".into()
                    }),
                }),
                State::Trial => None,
            })
            .collect()
    }

    pub fn reported(&mut self, r: &Report) {
        let v = match r {
            Report::Applied { to, .. } => to,
            Report::Failed { version, .. } => version,
        };
        if let Some(x) = self.get_mut(v) {
            x.reported = true;
        }
    }

    /// Versions whose files may be removed: failed ones already reported, and confirmed ones
    /// older than the newest confirmed (the newest confirmed is kept as the previous version
    /// of the next update).
    pub fn removable(&self) -> Vec<&Version> {
        let newest_ok = self
            .versions
            .iter()
            .filter(|v| v.state == State::Confirmed)
            .map(|v| &v.version)
            .max();
        self.versions
            .iter()
            .filter(|v| match v.state {
                State::Failed => v.reported,
                State::Confirmed => newest_ok.is_some_and(|n| v.version < *n),
                State::Trial => false,
            })
            .collect()
    }
}

/// Counts a start of a version on trial. Returns true when this marked it failed (the start
/// must then choose again).
fn count_start(v: &mut Version) -> bool {
    if v.starts > 0 {
        // The previous start of this trial did not confirm (it would not be on trial).
        v.failed_starts += 1;
    }
    if v.failed_starts >= FAILED_STARTS {
        v.state = State::Failed;
        v.reported = false;
        if v.last_failure.is_none() {
            v.last_failure = Some(format!(
                "{} starts in a row ended before it was confirmed (it exited, was killed or lost power)",
                v.failed_starts
            ));
        }
        return true;
    }
    v.starts += 1;
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    fn installed(version: &str, from: &str) -> Installed {
        let mut i = Installed::default();
        i.install(
            v(version),
            format!("versions/{version}/camgw"),
            String::new(),
            v(from),
        );
        i
    }

    /// What runs after a start of the packaged binary (version `factory`): follows execs and
    /// fallbacks the way the processes would, and returns the version that goes on running.
    fn boot(i: &mut Installed, factory: &str) -> (semver::Version, bool) {
        let mut own = v(factory);
        let mut fallback = true;
        for _ in 0..4 {
            match i.on_start(&own, fallback) {
                Plan::Run { trial } => return (own, trial),
                Plan::Exec { version, .. } => {
                    own = version;
                    fallback = false;
                }
                Plan::Fallback => {
                    own = v(factory);
                    fallback = true;
                }
            }
        }
        panic!("no version settled: {i:?}");
    }

    #[test]
    fn nothing_installed_runs_the_started_binary() {
        let mut i = Installed::default();
        assert_eq!(i.on_start(&v("0.1.0"), true), Plan::Run { trial: false });
    }

    #[test]
    fn the_packaged_binary_counts_the_trial_start_and_hands_over_to_a_newer_install() {
        let mut i = installed("0.2.0", "0.1.0");
        assert_eq!(
            i.on_start(&v("0.1.0"), true),
            Plan::Exec {
                version: v("0.2.0"),
                file: "versions/0.2.0/camgw".into()
            }
        );
        assert_eq!(i.versions[0].starts, 1, "counted before the hand-over");
        assert_eq!(i.on_start(&v("0.2.0"), false), Plan::Run { trial: true });
        assert_eq!(i.versions[0].starts, 1, "not counted twice");
        assert!(i.confirm(&v("0.2.0")));
        assert_eq!(
            i.pending_reports(),
            [Report::Applied {
                from: v("0.1.0"),
                to: v("0.2.0")
            }]
        );
        let r = i.pending_reports().remove(0);
        i.reported(&r);
        assert!(i.pending_reports().is_empty());
        // Confirmed: later starts are not trial starts.
        assert_eq!(boot(&mut i, "0.1.0"), (v("0.2.0"), false));
    }

    #[test]
    fn two_starts_in_a_row_without_confirming_mark_it_failed_and_the_previous_runs() {
        let mut i = installed("0.2.0", "0.1.0");
        assert_eq!(boot(&mut i, "0.1.0"), (v("0.2.0"), true));
        // It exits; systemd starts the packaged binary again, which hands over again.
        assert_eq!(boot(&mut i, "0.1.0"), (v("0.2.0"), true));
        assert_eq!(i.versions[0].failed_starts, 1);
        // A second failure: the third start marks it failed and the packaged binary runs.
        assert_eq!(boot(&mut i, "0.1.0"), (v("0.1.0"), false));
        assert_eq!(i.versions[0].state, State::Failed);
        assert_eq!(boot(&mut i, "0.1.0"), (v("0.1.0"), false));
        match &i.pending_reports()[..] {
            [Report::Failed { version, why, .. }] => {
                assert_eq!(*version, v("0.2.0"));
                assert!(why.contains("2 starts in a row"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_hang_ended_by_the_confirm_timer_says_so_in_the_report() {
        let mut i = installed("0.2.0", "0.1.0");
        for _ in 0..2 {
            assert_eq!(boot(&mut i, "0.1.0"), (v("0.2.0"), true));
            i.trial_timed_out(&v("0.2.0"), "not connected within 300 s");
        }
        assert_eq!(boot(&mut i, "0.1.0"), (v("0.1.0"), false));
        match &i.pending_reports()[..] {
            [Report::Failed { why, .. }] => assert_eq!(why, "not connected within 300 s"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_newer_package_supersedes_the_over_the_air_version_and_an_older_one_does_not() {
        let mut i = installed("0.2.0", "0.1.0");
        boot(&mut i, "0.1.0");
        i.confirm(&v("0.2.0"));
        assert_eq!(boot(&mut i, "0.1.5"), (v("0.2.0"), false));
        assert_eq!(boot(&mut i, "0.3.0"), (v("0.3.0"), false));
        // The same version packaged and installed over the air: the package runs.
        assert_eq!(boot(&mut i, "0.2.0"), (v("0.2.0"), false));
    }

    #[test]
    fn after_a_failed_update_the_previous_over_the_air_version_runs_again() {
        let mut i = installed("0.2.0", "0.1.0");
        boot(&mut i, "0.1.0");
        i.confirm(&v("0.2.0"));
        i.install(
            v("0.3.0"),
            "versions/0.3.0/camgw".into(),
            String::new(),
            v("0.2.0"),
        );
        for _ in 0..2 {
            assert_eq!(boot(&mut i, "0.1.0"), (v("0.3.0"), true));
        }
        assert_eq!(boot(&mut i, "0.1.0"), (v("0.2.0"), false));
        let reports = i.pending_reports();
        assert!(
            reports.iter().any(|r| matches!(r,
            Report::Failed { version, from, .. } if *version == v("0.3.0") && *from == v("0.2.0")))
        );
        for r in &reports {
            i.reported(r);
        }
        let gone: Vec<_> = i.removable().iter().map(|x| x.version.clone()).collect();
        assert_eq!(gone, [v("0.3.0")]);
    }

    #[test]
    fn a_version_the_launcher_cannot_exec_is_failed_with_why_and_the_previous_runs() {
        let mut i = installed("0.2.0", "0.1.0");
        assert_eq!(boot(&mut i, "0.1.0"), (v("0.2.0"), true));
        i.unusable(&v("0.2.0"), "its file does not match its sha256");
        assert_eq!(boot(&mut i, "0.1.0"), (v("0.1.0"), false));
        match &i.pending_reports()[..] {
            [Report::Failed { why, .. }] => assert!(why.contains("sha256"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    /// Every pattern of confirmed and unconfirmed starts (a crash, a hang, a power cut at any
    /// moment of a trial is an unconfirmed start): no start runs a failed version, a version
    /// is failed only after two unconfirmed starts in a row, and once it failed the packaged
    /// binary runs.
    #[test]
    fn whatever_interrupts_a_trial_a_start_never_runs_a_failed_version() {
        for pattern in 0u32..32 {
            let mut i = installed("0.2.0", "0.1.0");
            let mut unconfirmed = 0;
            for k in 0..5 {
                let (running, trial) = boot(&mut i, "0.1.0");
                let st = i.versions[0].state;
                if running == v("0.2.0") {
                    assert_ne!(st, State::Failed, "{pattern:05b}");
                    assert_eq!(trial, st == State::Trial, "{pattern:05b}");
                } else {
                    assert_eq!(
                        st,
                        State::Failed,
                        "{pattern:05b}: fell back without a failure"
                    );
                    assert_eq!(
                        unconfirmed, FAILED_STARTS,
                        "{pattern:05b}: failed after {unconfirmed}"
                    );
                    break;
                }
                if st == State::Trial {
                    if pattern & (1 << k) != 0 {
                        i.confirm(&v("0.2.0"));
                    } else {
                        unconfirmed += 1;
                    }
                }
            }
        }
    }
}
