//! The durable trial of a config that `set_config` received.
//!
//! A new config with new MQTT settings may cut the gateway off for good (a wrong broker, a
//! wrong password). It is therefore on trial until the uplink has connected with it, and the
//! trial is on disk, so that a crash or kill -9 at any moment of it cannot leave the gateway on
//! an unproven config:
//!
//! ```text
//! begin:   FILE.prev <- last good text   (temp, fsync, rename, fsync dir)
//!          FILE.trial <- marker          (same)
//!          FILE <- new text              (same)
//! confirm: unlink FILE.trial, fsync dir  (connected: the new config is the good one)
//! abort:   FILE <- FILE.prev's text, then unlink FILE.trial
//! start:   FILE.trial exists -> FILE <- FILE.prev, unlink FILE.trial (see `recover`)
//! ```
//!
//! At every point a start finds either no marker (FILE is good: the old one before `begin`
//! wrote the marker, the confirmed new one after `confirm`) or a marker and a complete
//! FILE.prev (written before the marker), which `recover` restores. A start never runs an
//! unproven config; a trial interrupted by a crash ends on the last good config, which the
//! agent then reports with `config_rolled_back`.

use std::io;
use std::path::{Path, PathBuf};

use crate::durable::{replace as write_durably, unlink as unlink_durably, with_suffix};

pub fn prev_path(path: &Path) -> PathBuf {
    with_suffix(path, ".prev")
}

pub fn marker_path(path: &Path) -> PathBuf {
    with_suffix(path, ".trial")
}

/// Replaces the config at `path` with `new` without a trial (the last good text goes to
/// `FILE.prev`).
pub fn replace(path: &Path, old: &str, new: &str) -> io::Result<()> {
    write_durably(&prev_path(path), old.as_bytes())?;
    write_durably(path, new.as_bytes())?;
    // The config in force (`old`) is a proven one; a marker left by a failed `confirm` is
    // stale and would make the next start undo this change.
    unlink_durably(&marker_path(path))
}

/// Starts the trial of `new` (the config in force is `old`).
pub fn begin(path: &Path, old: &str, new: &str) -> io::Result<()> {
    write_durably(&prev_path(path), old.as_bytes())?;
    write_durably(&marker_path(path), b"a config on trial: see FILE.prev\n")?;
    write_durably(path, new.as_bytes())
}

/// The new config has proven itself: the trial ends.
pub fn confirm(path: &Path) -> io::Result<()> {
    unlink_durably(&marker_path(path))
}

/// The trial failed: the last good text `old` returns.
pub fn abort(path: &Path, old: &str) -> io::Result<()> {
    write_durably(path, old.as_bytes())?;
    unlink_durably(&marker_path(path))
}

/// At start-up, before the config is read: a trial that a crash interrupted ends on the last
/// good config. Returns what happened, for the `config_rolled_back` alert.
pub fn recover(path: &Path) -> io::Result<Option<String>> {
    if !marker_path(path).exists() {
        return Ok(None);
    }
    let good = std::fs::read(prev_path(path))?;
    write_durably(path, &good)?;
    unlink_durably(&marker_path(path))?;
    Ok(Some(
        "the agent stopped while a new config was on trial (not yet proven to connect): \
         the last good config was restored"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn a_start_inside_a_trial_restores_the_last_good_config() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("camgw.toml");
        std::fs::write(&f, "good").unwrap();
        begin(&f, "good", "unproven").unwrap();
        assert_eq!(read(&f), "unproven");
        // kill -9 here; the next start:
        assert!(recover(&f).unwrap().is_some());
        assert_eq!(read(&f), "good");
        assert!(!marker_path(&f).exists());
        assert_eq!(recover(&f).unwrap(), None, "once");
    }

    #[test]
    fn a_confirmed_trial_stays_and_an_aborted_one_is_undone() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("camgw.toml");
        std::fs::write(&f, "good").unwrap();
        begin(&f, "good", "new").unwrap();
        confirm(&f).unwrap();
        assert_eq!(recover(&f).unwrap(), None);
        assert_eq!(read(&f), "new");
        begin(&f, "new", "bad").unwrap();
        abort(&f, "new").unwrap();
        assert_eq!(read(&f), "new");
        assert_eq!(recover(&f).unwrap(), None);
    }

    #[test]
    fn a_crash_at_every_step_of_begin_starts_on_a_good_config() {
        // The marker is written only after FILE.prev is complete, and FILE only after the
        // marker: replay each prefix of `begin` and recover.
        for step in 0..=3 {
            let d = tempfile::tempdir().unwrap();
            let f = d.path().join("camgw.toml");
            std::fs::write(&f, "good").unwrap();
            if step >= 1 {
                write_durably(&prev_path(&f), b"good").unwrap();
            }
            if step >= 2 {
                write_durably(&marker_path(&f), b"x").unwrap();
            }
            if step >= 3 {
                write_durably(&f, b"unproven").unwrap();
            }
            recover(&f).unwrap();
            assert_eq!(read(&f), "good", "crash after step {step}");
        }
    }
}
