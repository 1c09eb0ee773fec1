//! Durable replay memory: every accepted command id is remembered until its expiry, on disk
//! (`{data_dir}/commands.seen`, one `expires_ms id` line each, fsynced before the command
//! runs), so restarting the agent does not reopen the window for a replay.
//!
//! Ids are stored exactly as verified (the envelope's id grammar has no spaces or line
//! breaks, so a line is unambiguous); nothing is normalised on the way in or out. The file's
//! name is made durable too: when the insert creates it, its directory is fsynced before the
//! command may run. Memory and file stay bounded: an id is dropped once its command expires
//! (windows are at most a day), and the file is compacted when most of its lines are dead.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub struct Replay {
    path: PathBuf,
    seen: HashMap<String, i64>,
    lines: usize,
    /// The file's name is durable (its directory was fsynced since it was created).
    named: bool,
}

impl Replay {
    pub fn open(data_dir: &Path, now_ms: i64) -> io::Result<Replay> {
        let path = data_dir.join("commands.seen");
        let mut seen = HashMap::new();
        let mut lines = 0;
        let mut torn = false;
        match fs::read(&path) {
            // Lossy: bytes a failing card garbled must not make the rest unreadable.
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                torn = !text.is_empty() && !text.ends_with('\n');
                for line in text.lines() {
                    lines += 1;
                    // A torn last line (crash mid-append) is skipped.
                    if let Some((exp, id)) = line.split_once(' ') {
                        if let Ok(exp) = exp.parse::<i64>() {
                            if exp > now_ms && super::envelope::valid_id(id) {
                                seen.insert(id.to_string(), exp);
                            }
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot read {}: {e}", path.display()),
        }
        let named = path.exists() && crate::durable::sync_name(&path).is_ok();
        let mut r = Replay {
            path,
            seen,
            lines,
            named,
        };
        // A torn last line is rewritten away at once: the next append would otherwise join
        // it, and the id it carries would be unreadable at the next start.
        if torn || r.lines > 2 * r.seen.len() + 64 {
            r.compact()?;
        }
        Ok(r)
    }

    pub fn contains(&self, id: &str, now_ms: i64) -> bool {
        self.seen.get(id).is_some_and(|&exp| exp > now_ms)
    }

    /// Remembers `id` durably. Call before acting on the command.
    pub fn insert(&mut self, id: &str, expires_ms: i64, now_ms: i64) -> io::Result<()> {
        if !super::envelope::valid_id(id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a command id of the grammar",
            ));
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(format!("{expires_ms} {id}\n").as_bytes())?;
        f.sync_data()?;
        if !self.named {
            crate::durable::sync_name(&self.path)?;
            self.named = true;
        }
        self.seen.insert(id.to_string(), expires_ms);
        self.lines += 1;
        self.seen.retain(|_, &mut e| e > now_ms);
        if self.lines > 2 * self.seen.len() + 64 {
            self.compact()?;
        }
        Ok(())
    }

    fn compact(&mut self) -> io::Result<()> {
        let mut text = String::new();
        for (id, exp) in &self.seen {
            text.push_str(&format!("{exp} {id}\n"));
        }
        crate::durable::replace(&self.path, text.as_bytes())?;
        self.lines = self.seen.len();
        self.named = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_survive_a_reopen_until_they_expire() {
        let d = tempfile::tempdir().unwrap();
        let mut r = Replay::open(d.path(), 0).unwrap();
        r.insert("a", 1000, 0).unwrap();
        assert!(r.contains("a", 10));
        let r = Replay::open(d.path(), 10).unwrap();
        assert!(r.contains("a", 10));
        let r = Replay::open(d.path(), 2000).unwrap();
        assert!(!r.contains("a", 2000));
    }

    #[test]
    fn ids_are_stored_and_checked_exactly_and_ids_off_the_grammar_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut r = Replay::open(d.path(), 0).unwrap();
        // The regression: an id with spaces was stored without them and checked with them,
        // so its replays were obeyed. Such an id is now refused before it can run at all.
        assert!(r.insert("a b", 1000, 0).is_err());
        assert!(r.insert("", 1000, 0).is_err());
        r.insert("AbC.1_2:3-4", 1000, 0).unwrap();
        assert!(r.contains("AbC.1_2:3-4", 1));
        assert!(!r.contains("abc.1_2:3-4", 1));
        let r = Replay::open(d.path(), 1).unwrap();
        assert!(r.contains("AbC.1_2:3-4", 1));
    }

    /// Regression (review of issue 19): the append after a torn line joined it, and the id
    /// it carried was unreadable at the next start, so its replay would have been obeyed.
    #[test]
    fn an_id_appended_after_a_torn_line_survives_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("commands.seen"), "5000 keep\n5000 to").unwrap();
        let mut r = Replay::open(d.path(), 100).unwrap();
        r.insert("next", 5000, 100).unwrap();
        let r = Replay::open(d.path(), 200).unwrap();
        assert!(r.contains("keep", 200) && r.contains("next", 200));
        // Garbled bytes do not hide the readable lines either.
        std::fs::write(
            d.path().join("commands.seen"),
            b"5000 a\n\xff\xfe\n5000 b\n",
        )
        .unwrap();
        let r = Replay::open(d.path(), 200).unwrap();
        assert!(r.contains("a", 200) && r.contains("b", 200));
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_compaction_keeps_live_ids() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("commands.seen"), "5000 keep\n10 old\n50").unwrap();
        let mut r = Replay::open(d.path(), 100).unwrap();
        assert!(r.contains("keep", 100) && !r.contains("old", 100));
        for i in 0..200 {
            r.insert(&format!("x{i}"), 150, 100).unwrap();
        }
        let r = Replay::open(d.path(), 200).unwrap();
        assert!(r.contains("keep", 200));
        assert!(
            std::fs::read_to_string(d.path().join("commands.seen"))
                .unwrap()
                .lines()
                .count()
                < 210
        );
    }
}
