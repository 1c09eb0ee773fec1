//! `camgw buffer inspect`: a read-only look at a buffer directory, safe while the agent runs
//! (it takes no lock, writes nothing, and reads each segment once). Per class: records stored
//! and pending (not yet acknowledged by the broker), the oldest and newest pending seq and
//! time, bytes used, corrupt records; plus stray files and the next seq.
//!
//! A segment the agent is appending to may end in a frame being written; such a tail in the
//! newest segment is reported as `tail_bytes`, not as corruption.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::frame::{parse_header, scan, HEADER_LEN};
use super::store::{class_dir, read_acked_file, read_seq_file};
use crate::clock::rfc3339_ms;
use crate::record::Class;

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct ClassReport {
    pub segments: usize,
    pub bytes: u64,
    /// Valid records on disk (acknowledged ones stay until their whole segment is).
    pub stored: u64,
    /// Records the broker has not acknowledged yet.
    pub pending: u64,
    pub ack_frontier: u64,
    pub oldest_pending_seq: Option<u64>,
    pub oldest_pending_ts: Option<String>,
    pub newest_seq: Option<u64>,
    pub newest_ts: Option<String>,
    /// Corrupt regions skipped (each held at least one record).
    pub corrupt: u64,
    /// Bytes after the last whole record: a torn write, or one in progress.
    pub tail_bytes: u64,
    pub bad_segments: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Report {
    pub dir: PathBuf,
    pub next_seq: u64,
    pub events: ClassReport,
    pub alerts: ClassReport,
    /// Event stills waiting (`stills/`).
    pub stills: StillsReport,
    pub stray_files: Vec<String>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct StillsReport {
    pub count: u64,
    pub bytes: u64,
    /// The seq of the event of the oldest still.
    pub oldest_event_seq: Option<u64>,
}

/// Inspects `{data_dir}/buffer`.
pub fn inspect(data_dir: &Path) -> std::io::Result<Report> {
    let dir = data_dir.join("buffer");
    if !dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{} holds no buffer (no {} directory)",
                data_dir.display(),
                dir.display()
            ),
        ));
    }
    let frontiers = read_acked_file(&crate::durable::Os, &dir);
    let mut stray_files = Vec::new();
    for e in std::fs::read_dir(&dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if !super::store::OWN_NAMES.contains(&name.as_str()) {
            stray_files.push(name);
        }
    }
    let mut stills = StillsReport::default();
    if let Ok(entries) = std::fs::read_dir(dir.join("stills")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            match super::stills::StillMeta::parse_name(&name, len) {
                Some(m) => {
                    stills.count += 1;
                    stills.bytes += len;
                    stills.oldest_event_seq =
                        Some(stills.oldest_event_seq.map_or(m.seq, |s| s.min(m.seq)));
                }
                None if name.starts_with(super::stills::TEMP_PREFIX) => {}
                None => stray_files.push(format!("stills/{name}")),
            }
        }
    }
    let mut reports = Vec::new();
    for class in Class::ALL {
        let mut r = ClassReport {
            ack_frontier: frontiers[class.index()],
            ..Default::default()
        };
        let cdir = class_dir(&dir, class);
        let mut segs: Vec<(u64, PathBuf)> = Vec::new();
        if cdir.is_dir() {
            for e in std::fs::read_dir(&cdir)? {
                let p = e?.path();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                match name
                    .strip_suffix(".seg")
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    Some(n) => segs.push((n, p)),
                    None => stray_files.push(format!(
                        "{}/{name}",
                        cdir.file_name().unwrap().to_string_lossy()
                    )),
                }
            }
        }
        segs.sort();
        let last = segs.len().saturating_sub(1);
        for (i, (_, path)) in segs.iter().enumerate() {
            // The agent may delete a segment between listing and reading: that is fine.
            let Ok(buf) = std::fs::read(path) else {
                continue;
            };
            r.segments += 1;
            r.bytes += buf.len() as u64;
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if buf.len() < HEADER_LEN {
                if i != last {
                    r.bad_segments
                        .push(format!("{name}: shorter than its header"));
                }
                continue;
            }
            if parse_header(&buf[..HEADER_LEN]) != Some(class) {
                r.bad_segments.push(format!("{name}: bad header"));
                continue;
            }
            let end = scan(&buf[HEADER_LEN..], |_, rec, _| {
                r.stored += 1;
                if r.newest_seq.is_none_or(|s| rec.seq > s) {
                    r.newest_seq = Some(rec.seq);
                    r.newest_ts = Some(rfc3339_ms(rec.ts_ms));
                }
                if rec.seq > r.ack_frontier {
                    r.pending += 1;
                    if r.oldest_pending_seq.is_none_or(|s| rec.seq < s) {
                        r.oldest_pending_seq = Some(rec.seq);
                        r.oldest_pending_ts = Some(rfc3339_ms(rec.ts_ms));
                    }
                }
            });
            r.corrupt += end.corrupt;
            r.tail_bytes += end.tail_bytes as u64;
        }
        reports.push(r);
    }
    let alerts = reports.pop().unwrap();
    let events = reports.pop().unwrap();
    Ok(Report {
        next_seq: read_seq_file(&crate::durable::Os, &dir),
        dir,
        events,
        alerts,
        stills,
        stray_files,
    })
}

impl Report {
    /// The human-readable form.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = format!("buffer {}\n", self.dir.display());
        for (name, c) in [("events", &self.events), ("alerts", &self.alerts)] {
            let _ = writeln!(
                s,
                "  {name:<7} {} pending of {} stored in {} segment(s), {} bytes; acknowledged up to seq {}",
                c.pending, c.stored, c.segments, c.bytes, c.ack_frontier
            );
            if let (Some(o), Some(ot)) = (c.oldest_pending_seq, &c.oldest_pending_ts) {
                let _ = writeln!(s, "          oldest pending: seq {o} at {ot}");
            }
            if let (Some(n), Some(nt)) = (c.newest_seq, &c.newest_ts) {
                let _ = writeln!(s, "          newest:         seq {n} at {nt}");
            }
            if c.corrupt > 0 || !c.bad_segments.is_empty() {
                let _ = writeln!(
                    s,
                    "          CORRUPT: {} damaged region(s) {}",
                    c.corrupt,
                    c.bad_segments.join("; ")
                );
            }
            if c.tail_bytes > 0 {
                let _ = writeln!(s, "          {} byte(s) after the last whole record (a torn write, or one in progress)", c.tail_bytes);
            }
        }
        let _ = writeln!(
            s,
            "  stills  {} waiting, {} bytes{}",
            self.stills.count,
            self.stills.bytes,
            self.stills
                .oldest_event_seq
                .map(|q| format!("; the oldest is of event seq {q}"))
                .unwrap_or_default()
        );
        let _ = writeln!(s, "  next seq: {}", self.next_seq);
        if !self.stray_files.is_empty() {
            let _ = writeln!(
                s,
                "  stray files (not the agent's): {}",
                self.stray_files.join(", ")
            );
        }
        s
    }
}
