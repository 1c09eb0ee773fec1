//! Stills in the buffer (see `buffer::stills` for the format and the rules): room made by
//! evicting older stills, the file written outside the lock, read back for the uplink only
//! when no alert or event is waiting, unlinked on PUBACK, and evicted stills reported.

use super::writer::AfterWrite;
use super::*;
use crate::buffer::stills::{self, Still, StillMeta};

/// The durable count of evicted stills not yet reported: u64 LE ‖ crc32.
pub(super) const STILLS_DROPPED: &str = "stills_dropped";

/// Evicted stills are reported in one `buffer_dropped` alert at most this often.
const STILL_REPORT_EVERY: Duration = Duration::from_secs(10);

pub(crate) fn stills_dir(dir: &Path) -> PathBuf {
    dir.join("stills")
}

impl Inner {
    /// Bytes of the record segments (events and alerts).
    pub(super) fn log_bytes(&self) -> u64 {
        self.streams.iter().map(|s| s.bytes()).sum()
    }

    fn still_path(&self, m: &StillMeta) -> PathBuf {
        stills_dir(&self.dir).join(m.file_name())
    }

    /// Drops these stills from the index, counted as evicted, and makes the count durable;
    /// returns their files, to unlink only after that (a crash cannot lose the report).
    pub(super) fn evict_stills(&mut self, seqs: Vec<u64>) -> Vec<PathBuf> {
        let mut gone = Vec::new();
        for seq in seqs {
            if let Some(m) = self.stills.remove(seq) {
                self.stills_dropped_unreported += 1;
                self.stills_dropped_total += 1;
                gone.push(self.still_path(&m));
            }
        }
        if !gone.is_empty() {
            if let Err(e) = self.persist_still_drops() {
                tracing::warn!("cannot record the count of evicted stills: {e}");
            }
        }
        gone
    }

    /// Makes the count of evicted, unreported stills durable: called before their files are
    /// unlinked, so a crash cannot lose the report (at worst it over-reports).
    pub(super) fn persist_still_drops(&mut self) -> io::Result<()> {
        let body = with_crc(self.stills_dropped_unreported.to_le_bytes().to_vec());
        self.fs.replace(&self.dir.join(STILLS_DROPPED), &body)
    }

    /// Room for a still of `bytes` under both bounds (the stills' own, and what `max_bytes`
    /// leaves beside the records), evicting older stills; the room is reserved.
    fn still_room(&mut self, bytes: u64) -> Result<Vec<PathBuf>, AppendError> {
        let beside_records = self
            .opts
            .max_bytes
            .saturating_sub(self.log_bytes() + DROP_REPORT_ROOM);
        let room = self.opts.still_max_bytes.min(beside_records);
        let victims = self
            .stills
            .victims(bytes, room)
            .ok_or(AppendError::Full(bytes))?;
        let paths = self.evict_stills(victims);
        self.stills.reserve(bytes);
        Ok(paths)
    }

    /// A `buffer_dropped` alert for the stills evicted since the last one (at most every
    /// [`STILL_REPORT_EVERY`], and at close).
    pub(super) fn report_evicted_stills(&mut self, closing: bool, after: &mut AfterWrite) {
        if self.stills_dropped_unreported == 0 {
            return;
        }
        if !closing
            && self
                .stills_reported_at
                .is_some_and(|t| t.elapsed() < STILL_REPORT_EVERY)
        {
            return;
        }
        let n = self.stills_dropped_unreported;
        let rec = NewRecord {
            ts_ms: self.clock.now_ms(),
            clock_synced: self.clock.synced(),
            body: Body::alert(
                crate::record::AlertKind::BufferDropped,
                None,
                serde_json::json!({"count": 0, "stills": n, "reason": "stills",
                    "still_max_bytes": self.opts.still_max_bytes}),
            ),
        };
        let _ = after;
        // Written and synced at once (as a record eviction's report), then the durable count
        // is cleared: a crash in between reports them twice, never not at all.
        match self.write_drop_report(rec) {
            Ok(()) => {
                tracing::warn!(stills = n, "buffered stills evicted to make room");
                self.stills_dropped_unreported = 0;
                self.stills_reported_at = Some(Instant::now());
                if let Err(e) = self.persist_still_drops() {
                    tracing::warn!("cannot clear the count of evicted stills: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot report evicted stills yet: {e}"),
        }
    }
}

/// What recovery finds in `buffer/stills/`: the index, and what it set aside or removed.
pub(super) fn recover_stills(
    fs: &dyn Fs,
    dir: &Path,
    report: &mut Recovery,
) -> io::Result<stills::Index> {
    let sdir = stills_dir(dir);
    fs.create_dir_all(&sdir)?;
    let mut index = stills::Index::default();
    let names = match fs.list(&sdir) {
        Ok(n) => n,
        Err(e) => {
            report
                .strays
                .push(format!("buffer/stills/: cannot be listed: {e}"));
            return Ok(index);
        }
    };
    for name in names {
        let path = sdir.join(&name);
        if name.starts_with(stills::TEMP_PREFIX) {
            // A still whose write did not finish: it never counted.
            let _ = fs.remove_file(&path);
            continue;
        }
        let meta = fs
            .metadata(&path)
            .ok()
            .filter(|m| m.is_file && m.len <= stills::MAX_FILE);
        match meta.and_then(|m| StillMeta::parse_name(&name, m.len)) {
            Some(m) => index.insert(m),
            None => report.strays.push(format!("buffer/stills/{name}")),
        }
    }
    report.stills = index.len();
    Ok(index)
}

/// Evicted stills that a previous run had not reported yet.
pub(super) fn unreported_drops(fs: &dyn Fs, dir: &Path) -> u64 {
    read_u64_file(fs, &dir.join(STILLS_DROPPED))
}

impl Buffer {
    /// Buffers the still of the event `seq`/`event_id` of `camera`, durably (file fsynced,
    /// then its name). Older stills are evicted to make room; a still that cannot fit even
    /// then is refused (`Full`), and nothing else is touched. Blocking: call it off the async
    /// workers.
    pub fn append_still_blocking(
        &self,
        seq: u64,
        event_id: u128,
        camera: &str,
        jpeg: &[u8],
    ) -> Result<(), AppendError> {
        let file = stills::encode(jpeg);
        let meta = StillMeta {
            seq,
            event_id,
            camera: camera.to_string(),
            bytes: file.len() as u64,
        };
        if crate::config::check_name(camera).is_err() || meta.bytes > stills::MAX_FILE {
            return Err(AppendError::TooLarge(format!(
                "a still of {} bytes for {:?}",
                meta.bytes,
                crate::logs::clip(camera)
            )));
        }
        let (fs, sdir, victims) = {
            let mut inner = self.inner();
            if inner.lock.is_none() {
                return Err(AppendError::Closed);
            }
            let victims = inner.still_room(meta.bytes)?;
            (inner.fs.clone(), stills_dir(&inner.dir), victims)
        };
        for p in victims {
            let _ = fs.remove_file(&p);
        }
        let path = sdir.join(meta.file_name());
        let tmp = sdir.join(format!("{}{}", stills::TEMP_PREFIX, meta.file_name()));
        let written = (|| {
            let mut f = fs.create(&tmp)?;
            f.write_all(&file)?;
            f.sync_data()?;
            drop(f);
            fs.rename(&tmp, &path)?;
            fs.sync_dir(&sdir)
        })();
        let mut inner = self.inner();
        inner.stills.unreserve(meta.bytes);
        match written {
            Ok(()) => {
                inner.stills.insert(meta);
                drop(inner);
                self.shared.stills_notify.notify_one();
                Ok(())
            }
            Err(e) => {
                drop(inner);
                let _ = fs.remove_file(&tmp);
                let _ = fs.remove_file(&path);
                Err(AppendError::Io(e.to_string()))
            }
        }
    }

    /// The next still to publish, marking it in flight: only when no alert or event is
    /// waiting or in flight (they go first) and no other still is in flight. A still file
    /// found damaged is removed and counted as corrupt.
    pub fn next_still(&self) -> Option<Still> {
        let mut inner = self.inner();
        if inner.streams.iter().any(|s| s.unacked() > 0) {
            return None;
        }
        loop {
            let meta = inner.stills.next_to_send()?.clone();
            let path = inner.still_path(&meta);
            let read = match inner.fs.read(&path) {
                Ok(b) => Ok(b),
                // Gone is as good as damaged; any other error (no descriptors left, EIO that
                // may pass) leaves the still for the next try.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
                Err(e) => {
                    tracing::warn!(file = %meta.file_name(), "cannot read a buffered still yet: {e}");
                    return None;
                }
            };
            match read.as_deref().ok().and_then(stills::decode) {
                Some(jpeg) => {
                    let jpeg = jpeg.to_vec();
                    inner.stills.mark_inflight(meta.seq);
                    return Some(Still { meta, jpeg });
                }
                None => {
                    tracing::error!(
                        file = %meta.file_name(),
                        "a buffered still is damaged or gone: dropped"
                    );
                    inner.stills.remove(meta.seq);
                    inner.corrupt_total += 1;
                    let _ = inner.fs.remove_file(&path);
                }
            }
        }
    }

    /// The broker acknowledged the still of the event `seq`: its file goes. Returns the
    /// JPEG's size (`None` when the still was evicted meanwhile).
    pub fn ack_still(&self, seq: u64) -> Option<u64> {
        let (fs, path, bytes) = {
            let mut inner = self.inner();
            let m = inner.stills.remove(seq)?;
            let bytes = m.bytes.saturating_sub(stills::HEAD_LEN as u64);
            (inner.fs.clone(), inner.still_path(&m), bytes)
        };
        let _ = fs.remove_file(&path);
        Some(bytes)
    }

    /// The stills link dropped: the still in flight is unsent again.
    pub fn rewind_stills(&self) {
        self.inner().stills.rewind();
    }

    /// Whether a still is in flight.
    pub fn still_inflight(&self) -> bool {
        self.inner().stills.inflight().is_some()
    }
}
