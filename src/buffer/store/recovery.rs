//! Recovery at open: reads every segment (quarantining what cannot be read), cuts torn
//! tails, deletes what was delivered, and rebuilds the index and the seq counter from the
//! segments and the `seq` / `acked` files. What it skipped goes into the [`Recovery`] report.

use super::*;

/// The largest segment file recovery reads: the segment size bound plus one frame of slack.
/// Anything larger is not a segment this agent wrote: it is quarantined unread.
pub(super) const MAX_SEGMENT_FILE: u64 = (1 << 20) + frame::MAX_PAYLOAD as u64 + 1024;

/// Moves an unreadable segment aside (`buffer/quarantine/{class}-{name}`), so it is kept for
/// a post-mortem and never read again, and notes it in the report.
fn quarantine(
    fs: &dyn Fs,
    dir: &Path,
    class: Class,
    fname: &str,
    why: &str,
    report: &mut Recovery,
) {
    let from = class_dir(dir, class).join(fname);
    let qdir = dir.join("quarantine");
    // Never over an earlier quarantined file of the same name.
    let to = (0..)
        .map(|n| match n {
            0 => qdir.join(format!("{}-{fname}", class_dir_name(class))),
            n => qdir.join(format!("{}-{fname}.{n}", class_dir_name(class))),
        })
        .find(|p| !fs.exists(p))
        .expect("an unused name");
    // Durable in this order, so a power cut leaves the segment in one place or the other:
    // the quarantine directory's name, the new name, then the old name's removal.
    let moved = fs
        .create_dir_all(&qdir)
        .and_then(|()| fs.sync_dir(dir))
        .and_then(|()| fs.rename(&from, &to))
        .and_then(|()| fs.sync_dir(&qdir))
        .and_then(|()| fs.sync_dir(&class_dir(dir, class)));
    let what = format!("buffer/{}/{fname}: {why}", class_dir_name(class));
    tracing::error!("buffer segment quarantined: {what}");
    report.quarantined.push(match moved {
        Ok(()) => format!("{what} (moved to buffer/quarantine/)"),
        Err(e) => format!("{what} (could not be moved aside: {e}; skipped)"),
    });
}

pub(super) fn recover(
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    opts: Options,
    clock: Arc<dyn Clock>,
    lock: Box<dyn Send + Sync>,
) -> io::Result<(Inner, Recovery)> {
    let mut report = Recovery::default();
    for file in ["seq", "acked", stills::STILLS_DROPPED] {
        let _ = fs.remove_file(&crate::durable::temp_of(&dir.join(file)));
    }
    for name in fs.list(&dir)? {
        if !OWN_NAMES.contains(&name.as_str()) {
            report.strays.push(format!("buffer/{name}"));
        }
    }
    let frontiers = read_acked_file(fs.as_ref(), &dir);
    let mut max_seq = read_seq_file(fs.as_ref(), &dir)
        .saturating_sub(1)
        .max(frontiers[0])
        .max(frontiers[1]);
    let mut streams = [Stream::default(), Stream::default()];
    for class in Class::ALL {
        let cdir = class_dir(&dir, class);
        let mut names = Vec::new();
        let entries = match fs.list(&cdir) {
            Ok(e) => e,
            Err(e) => {
                // The class directory itself cannot be listed: set it aside whole and start
                // the class afresh.
                let qdir = dir.join("quarantine");
                let to = qdir.join(class_dir_name(class));
                // Durable in the same order as a quarantined segment: the quarantine
                // directory's name, the new name, then the old name's removal.
                let moved = fs
                    .create_dir_all(&qdir)
                    .and_then(|()| fs.sync_dir(&dir))
                    .and_then(|()| fs.rename(&cdir, &to))
                    .and_then(|()| fs.sync_dir(&qdir))
                    .and_then(|()| fs.sync_dir(&dir));
                report.quarantined.push(format!(
                    "buffer/{}/: cannot be listed: {e}{}",
                    class_dir_name(class),
                    if moved.is_ok() {
                        " (moved to buffer/quarantine/)"
                    } else {
                        ""
                    }
                ));
                fs.create_dir_all(&cdir)?;
                continue;
            }
        };
        for fname in entries {
            let parsed = fname
                .strip_suffix(".seg")
                .filter(|n| n.len() == 20)
                .and_then(|n| n.parse::<u64>().ok());
            match parsed {
                Some(n) => names.push(n),
                None => report.strays.push(format!(
                    "buffer/{}/{fname}",
                    cdir.file_name().unwrap().to_string_lossy()
                )),
            }
        }
        names.sort_unstable();
        let frontier = frontiers[class.index()];
        let stream = &mut streams[class.index()];
        stream.last_read = frontier;
        for name in names {
            let path = seg_path(&dir, class, name);
            let fname = format!("{name:020}.seg");
            // One bad segment (an I/O error on a failing SD card, a directory in its place, a
            // size no segment has) must never stop the start: it is set aside, the rest goes on.
            let read = fs.metadata(&path).and_then(|m| {
                if !m.is_file {
                    Err(io::Error::other("not a regular file"))
                } else if m.len > MAX_SEGMENT_FILE {
                    Err(io::Error::other(format!(
                        "{} bytes, larger than any segment ({MAX_SEGMENT_FILE})",
                        m.len
                    )))
                } else {
                    fs.read(&path)
                }
            });
            let bytes = match read {
                Ok(b) => b,
                Err(e) => {
                    quarantine(
                        fs.as_ref(),
                        &dir,
                        class,
                        &fname,
                        &e.to_string(),
                        &mut report,
                    );
                    continue;
                }
            };
            if bytes.len() <= HEADER_LEN {
                if let Err(e) = fs.remove_file(&path) {
                    tracing::warn!("cannot remove the empty segment {}: {e}", path.display());
                }
                report.empty_removed += 1;
                continue;
            }
            if frame::parse_header(&bytes) != Some(class) {
                report.corrupt += 1;
            }
            let mut meta = SegMeta::new(name);
            meta.sealed = true;
            let mut first_unacked = None;
            let mut last_valid_seq = 0;
            let end = frame::scan(&bytes[HEADER_LEN..], |off, rec, _| {
                if rec.class() != class || rec.seq <= last_valid_seq {
                    report.corrupt += 1;
                    return;
                }
                last_valid_seq = rec.seq;
                meta.records += 1;
                meta.last_seq = rec.seq;
                if rec.seq <= frontier {
                    meta.acked += 1;
                } else if first_unacked.is_none() {
                    first_unacked = Some((HEADER_LEN + off) as u64);
                }
            });
            report.corrupt += end.corrupt;
            max_seq = max_seq.max(meta.last_seq);
            let valid_len = (HEADER_LEN + end.valid_end) as u64;
            if end.tail_bytes > 0 {
                let cut = fs
                    .open_write(&path)
                    .and_then(|mut f| f.set_len(valid_len).and_then(|()| f.sync_data()));
                if let Err(e) = cut {
                    // The valid frames are indexed up to valid_len; the torn tail stays on disk
                    // (the segment is sealed and never appended to, and reads stop at
                    // meta.bytes), to be cut at a later start.
                    tracing::warn!("cannot cut the torn tail of {}: {e}", path.display());
                }
                report.torn_bytes += end.tail_bytes as u64;
            }
            meta.bytes = valid_len;
            if meta.records == 0 || meta.acked == meta.records {
                if let Err(e) = fs.remove_file(&path) {
                    tracing::warn!(
                        "cannot remove the delivered segment {}: {e}",
                        path.display()
                    );
                }
                if meta.records == 0 {
                    report.empty_removed += 1;
                }
                continue;
            }
            if stream.cursor.is_none() {
                stream.cursor = first_unacked.map(|offset| Pos { seg: name, offset });
            }
            report.pending += meta.unacked();
            report.segments += 1;
            stream.segs.push_back(meta);
        }
    }
    for class in Class::ALL {
        if let Err(e) = fs.sync_dir(&class_dir(&dir, class)) {
            tracing::warn!("cannot sync buffer/{}/: {e}", class.name());
        }
    }
    let stills = stills::recover_stills(fs.as_ref(), &dir, &mut report)?;
    let inner = Inner {
        stills,
        stills_dropped_unreported: stills::unreported_drops(fs.as_ref(), &dir),
        stills_dropped_total: 0,
        stills_reported_at: None,
        fs,
        dir,
        opts,
        clock,
        streams,
        writers: [None, None],
        readers: [None, None],
        next_seq: max_seq + 1,
        reserved: 0,
        durable_frontier: frontiers,
        dirty: [false, false],
        dropped_total: 0,
        corrupt_total: report.corrupt,
        lock: Some(lock),
        pending: Default::default(),
        failed: Vec::new(),
        scratch: Vec::with_capacity(256),
        sealed_dirty: Vec::new(),
        #[cfg(test)]
        fail_drop_report: false,
    };
    Ok((inner, report))
}
