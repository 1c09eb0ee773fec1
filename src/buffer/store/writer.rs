//! The write side: the writer thread's loop (group commit, sync by mode, deletes after the
//! lock is released), appends with eviction under `max_bytes`, segment rolling, and the
//! periodic persist of acknowledgement frontiers.

use super::*;

/// Work the writer thread must finish after releasing the lock.
#[derive(Default)]
pub(super) struct AfterWrite {
    sync: Vec<Box<dyn FsFile>>,
    unlink: Vec<PathBuf>,
}

impl Inner {
    /// Records and stills.
    pub(super) fn total_bytes(&self) -> u64 {
        self.log_bytes() + self.stills.bytes()
    }

    pub(super) fn reserve_seq(&mut self) -> io::Result<()> {
        if self.next_seq < self.reserved {
            return Ok(());
        }
        let reserved = self.next_seq + SEQ_BLOCK;
        self.fs.replace(
            &self.dir.join("seq"),
            &with_crc(reserved.to_le_bytes().to_vec()),
        )?;
        self.reserved = reserved;
        Ok(())
    }

    /// Seals the open segment of `class`.
    pub(super) fn seal(&mut self, class: Class) {
        self.flush_class(class);
        if let Some(s) = self.streams[class.index()].active_mut() {
            s.sealed = true;
        }
        // A sealed segment with unsynced frames is synced with the next sync, like the open one.
        if let Some(f) = self.writers[class.index()].take() {
            if self.dirty[class.index()] {
                self.sealed_dirty.push(f);
                self.dirty[class.index()] = false;
            }
        }
    }

    pub(super) fn open_segment(&mut self, class: Class, name: u64) -> io::Result<()> {
        self.seal(class);
        let path = seg_path(&self.dir, class, name);
        let res = (|| {
            let mut f = self.fs.create_new(&path)?;
            f.write_all(&frame::segment_header(class))?;
            f.sync_data()?;
            self.fs.sync_dir(&class_dir(&self.dir, class))?;
            Ok::<_, io::Error>(f)
        })();
        match res {
            Ok(f) => {
                self.writers[class.index()] = Some(f);
                self.streams[class.index()]
                    .segs
                    .push_back(SegMeta::new(name));
                Ok(())
            }
            Err(e) => {
                let _ = self.fs.remove_file(&path);
                Err(e)
            }
        }
    }

    /// Evicts until `need` more bytes fit under `max_bytes`. Returns false when it cannot.
    pub(super) fn make_room(
        &mut self,
        need: u64,
        after: &mut AfterWrite,
    ) -> Result<(), AppendError> {
        if self.total_bytes() + need <= self.opts.max_bytes {
            return Ok(());
        }
        // Choose the victims on a copy of the index first: nothing changes until the report
        // of what will go is durable.
        let mut trial = self.streams.clone();
        let mut victims = Vec::new();
        let mut dropped = 0u64;
        // The eviction report takes room too (and may open a segment): leave it its place,
        // or the append that caused the eviction would still not fit after it.
        let need_with_report = need + DROP_REPORT_ROOM;
        // Stills go first, oldest first: a record always wins over a picture.
        let log = self.log_bytes();
        let room_for_stills = self.opts.max_bytes.saturating_sub(log + need_with_report);
        if self.stills.bytes() > room_for_stills {
            let victims = self.stills.victims_down_to(room_for_stills);
            let gone = self.evict_stills(victims);
            after.unlink.extend(gone);
            if self.total_bytes() + need <= self.opts.max_bytes {
                return Ok(());
            }
        }
        // A still being written (its room reserved) is not a reason to evict records: it
        // counts once it is on disk, and goes first at the next append that needs room.
        let stills_left = self.stills.on_disk();
        while trial.iter().map(|s| s.bytes()).sum::<u64>() + stills_left + need_with_report
            > self.opts.max_bytes
        {
            let victim = [Class::Event, Class::Alert]
                .into_iter()
                .find_map(|c| trial[c.index()].eviction_candidate().map(|s| (c, s.name)));
            let Some((class, name)) = victim else {
                break;
            };
            dropped += trial[class.index()].remove(name);
            victims.push((class, name));
        }
        // Evicting everything there is would still not make room (a record nearly as large as
        // max_bytes): refuse it and keep what is buffered.
        if trial.iter().map(|s| s.bytes()).sum::<u64>() + stills_left + need_with_report
            > self.opts.max_bytes
        {
            return Err(AppendError::Full(need));
        }
        if !victims.is_empty() {
            tracing::warn!(dropped, "buffer full: evicting the oldest records");
            // The report must not land in a segment that is about to go.
            if victims.iter().any(|&(c, n)| {
                c == Class::Alert
                    && self.streams[c.index()]
                        .active()
                        .is_some_and(|a| a.name == n)
            }) {
                self.seal(Class::Alert);
            }
            let rec = NewRecord {
                ts_ms: self.clock.now_ms(),
                clock_synced: self.clock.synced(),
                body: Body::alert(
                    crate::record::AlertKind::BufferDropped,
                    None,
                    serde_json::json!({"count": dropped, "reason": "max_bytes",
                        "max_bytes": self.opts.max_bytes}),
                ),
            };
            // The report is durable before the victims go (synced even in interval mode). If
            // it cannot be made durable, nothing is evicted and the append fails.
            if let Err(e) = self.write_drop_report(rec) {
                tracing::error!(
                    dropped,
                    "cannot record the eviction report; nothing was evicted: {e}"
                );
                return Err(AppendError::Io(format!(
                    "the buffer is full and the eviction report cannot be written ({e})"
                )));
            }
            for (class, name) in victims {
                if self.streams[class.index()]
                    .active()
                    .is_some_and(|a| a.name == name)
                {
                    self.seal(class);
                }
                if self.readers[class.index()]
                    .as_ref()
                    .is_some_and(|(n, _)| *n == name)
                {
                    self.readers[class.index()] = None;
                }
                self.streams[class.index()].remove(name);
                after.unlink.push(seg_path(&self.dir, class, name));
            }
            self.dropped_total += dropped;
        }
        if self.total_bytes() + need > self.opts.max_bytes {
            return Err(AppendError::Full(need));
        }
        Ok(())
    }

    /// Appends the `buffer_dropped` record and makes it durable (write and fdatasync), or
    /// says why it could not.
    pub(super) fn write_drop_report(&mut self, rec: NewRecord) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_drop_report {
            return Err(io::Error::other("injected: the report write fails"));
        }
        let failed_before = self.failed.len();
        let report = self.write_one(rec)?;
        self.flush_class(Class::Alert);
        // A failed flush lists every record of that write (other callers' alerts of this batch
        // too): the entry stays for the batch's drain to answer them; here it only says that
        // the report did not make it.
        if let Some((_, why)) = self.failed[failed_before..]
            .iter()
            .find(|(seqs, _)| seqs.contains(&report.seq))
        {
            return Err(io::Error::other(why.clone()));
        }
        match &self.writers[Class::Alert.index()] {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }

    /// Encodes one frame into the open segment's pending bytes (opening a segment if needed),
    /// without any space check. The bytes reach the file in [`Inner::flush_class`], called
    /// before the lock is released, so readers never see a record that is not written.
    pub(super) fn write_one(&mut self, rec: NewRecord) -> io::Result<Appended> {
        self.reserve_seq()?;
        let class = rec.body.class();
        let ci = class.index();
        let record = Record {
            seq: self.next_seq,
            id: new_id(),
            ts_ms: rec.ts_ms,
            clock_synced: rec.clock_synced,
            body: rec.body,
        };
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        frame::encode_frame(&record, &mut buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let seg_max = self.opts.segment_bytes;
        let need_new = match self.streams[ci].active() {
            None => true,
            Some(a) => a.bytes + buf.len() as u64 > seg_max && a.records > 0,
        } || self.writers[ci].is_none();
        if need_new {
            if let Err(e) = self.open_segment(class, record.seq) {
                self.scratch = buf;
                return Err(e);
            }
        }
        let seg = self.streams[ci].active_mut().expect("open segment");
        if self.pending[ci].bytes.is_empty() {
            self.pending[ci].base = (seg.bytes, seg.records, seg.last_seq);
        }
        seg.records += 1;
        seg.last_seq = record.seq;
        seg.bytes += buf.len() as u64;
        self.pending[ci].bytes.extend_from_slice(&buf);
        self.pending[ci].seqs.push(record.seq);
        self.scratch = buf;
        self.next_seq += 1;
        Ok(Appended {
            seq: record.seq,
            id: record.id,
        })
    }

    /// Writes the pending frames of `class` with one `write`. On failure the file is cut back
    /// to its last whole frame (or the segment sealed if even that fails), the index is
    /// restored, and the records are listed in `failed`.
    pub(super) fn flush_class(&mut self, class: Class) {
        let ci = class.index();
        if self.pending[ci].bytes.is_empty() {
            return;
        }
        let p = std::mem::take(&mut self.pending[ci]);
        let f = self.writers[ci]
            .as_mut()
            .expect("pending frames have an open segment");
        match f.write_all(&p.bytes) {
            Ok(()) => self.dirty[ci] = true,
            Err(e) => {
                tracing::warn!(error = %e, records = p.seqs.len(), "buffer write failed");
                let cut = f.set_len(p.base.0).is_ok();
                if let Some(seg) = self.streams[ci].active_mut() {
                    (seg.bytes, seg.records, seg.last_seq) = p.base;
                }
                if !cut {
                    self.seal(class);
                }
                self.failed.push((p.seqs, e.to_string()));
            }
        }
        let mut bytes = p.bytes;
        bytes.clear();
        self.pending[ci].bytes = bytes;
    }

    pub(super) fn append(
        &mut self,
        rec: NewRecord,
        after: &mut AfterWrite,
    ) -> Result<Appended, AppendError> {
        // Frame overhead is small and bounded; estimate generously for the room check.
        let estimate = match &rec.body {
            Body::Alert {
                kind,
                camera,
                detail,
            } => kind.len() + camera.as_ref().map_or(0, |c| c.len()) + detail.len(),
            Body::Event {
                kind,
                camera,
                source,
                state,
                detail,
            } => kind.len() + camera.len() + source.len() + state.len() + detail.len(),
        } as u64
            + 64
            + HEADER_LEN as u64;
        if estimate > frame::MAX_PAYLOAD as u64 {
            return Err(AppendError::TooLarge(format!(
                "{estimate} bytes exceeds {}",
                frame::MAX_PAYLOAD
            )));
        }
        self.make_room(estimate, after)?;
        self.write_one(rec)
            .map_err(|e| AppendError::Io(e.to_string()))
    }

    /// Dirty open segments, as handles the writer can sync without the lock.
    pub(super) fn take_dirty(&mut self, after: &mut AfterWrite) {
        after.sync.append(&mut self.sealed_dirty);
        for ci in 0..2 {
            if self.dirty[ci] {
                if let Some(f) = self.writers[ci].as_ref().and_then(|f| f.try_clone().ok()) {
                    after.sync.push(f);
                }
                self.dirty[ci] = false;
            }
        }
    }

    /// Persists changed frontiers, then lists the segments that may now be deleted.
    pub(super) fn persist_acks(&mut self) -> io::Result<Vec<PathBuf>> {
        let fr = [self.streams[0].frontier(), self.streams[1].frontier()];
        if fr != self.durable_frontier {
            let mut body = b"CGWA".to_vec();
            body.extend_from_slice(&fr[0].to_le_bytes());
            body.extend_from_slice(&fr[1].to_le_bytes());
            self.fs.replace(&self.dir.join("acked"), &with_crc(body))?;
            self.durable_frontier = fr;
        }
        let mut gone = Vec::new();
        for class in Class::ALL {
            let ci = class.index();
            for name in self.streams[ci].deletable(self.durable_frontier[ci]) {
                self.streams[ci].remove(name);
                if self.readers[ci].as_ref().is_some_and(|(n, _)| *n == name) {
                    self.readers[ci] = None;
                }
                gone.push(seg_path(&self.dir, class, name));
            }
        }
        Ok(gone)
    }
}

fn sync_all(files: &[Box<dyn FsFile>]) -> io::Result<()> {
    for f in files {
        f.sync_data()?;
    }
    Ok(())
}

pub(super) fn writer_loop(shared: Arc<Shared>, rx: mpsc::Receiver<Cmd>) {
    let (sync_mode, interval, fs) = {
        let inner = shared.inner.lock().unwrap();
        (inner.opts.sync, inner.opts.sync_interval, inner.fs.clone())
    };
    let tick = interval.min(Duration::from_millis(250));
    let mut last_sync = Instant::now();
    let mut last_maint = Instant::now();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        shared.beat.bump();
        let wait = tick.saturating_sub(last_maint.elapsed().min(last_sync.elapsed()));
        let closed = match rx.recv_timeout(wait) {
            Ok(cmd) => {
                batch.push(cmd);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(c) => batch.push(c),
                        Err(_) => break,
                    }
                }
                false
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Err(mpsc::RecvTimeoutError::Disconnected) => true,
        };

        let mut after = AfterWrite::default();
        let mut results = Vec::with_capacity(batch.len());
        let mut flushes = Vec::new();
        let must_sync = sync_mode == SyncMode::Always || closed || last_sync.elapsed() >= interval;
        {
            let mut inner = shared.inner.lock().unwrap_or_else(|e| e.into_inner());
            for cmd in batch.drain(..) {
                match cmd {
                    Cmd::Append(rec, reply) => {
                        let r = inner.append(rec, &mut after);
                        results.push((reply, r));
                    }
                    Cmd::Flush(reply) => flushes.push(reply),
                }
            }
            if last_maint.elapsed() >= tick || closed {
                inner.report_evicted_stills(closed, &mut after);
            }
            inner.flush_class(Class::Event);
            inner.flush_class(Class::Alert);
            for (seqs, err) in inner.failed.drain(..) {
                for (_, r) in results.iter_mut() {
                    if r.as_ref().is_ok_and(|a| seqs.contains(&a.seq)) {
                        *r = Err(AppendError::Io(err.clone()));
                    }
                }
            }
            if must_sync || !flushes.is_empty() {
                inner.take_dirty(&mut after);
            }
        }
        let must_sync = must_sync || !flushes.is_empty();
        let mut sync_err = None;
        if must_sync && !after.sync.is_empty() {
            if let Err(e) = sync_all(&after.sync) {
                tracing::error!(error = %e, "fsync of the buffer failed");
                sync_err = Some(e.to_string());
                // The data may not be on disk: start new segments rather than trust these.
                let mut inner = shared.inner.lock().unwrap_or_else(|e| e.into_inner());
                inner.seal(Class::Event);
                inner.seal(Class::Alert);
            }
            after.sync.clear();
        }
        if must_sync {
            last_sync = Instant::now();
        }
        for p in after.unlink.drain(..) {
            let _ = fs.remove_file(&p);
        }
        let any_ok = results.iter().any(|(_, r)| r.is_ok());
        for (reply, r) in results {
            let r = match (&sync_err, sync_mode, r) {
                (Some(e), SyncMode::Always, Ok(_)) => Err(AppendError::Io(e.clone())),
                (_, _, r) => r,
            };
            let _ = reply.send(r);
        }
        if any_ok {
            shared.notify.notify_one();
        }
        if last_maint.elapsed() >= tick || !flushes.is_empty() || closed {
            last_maint = Instant::now();
            let gone = {
                let mut inner = shared.inner.lock().unwrap_or_else(|e| e.into_inner());
                inner.persist_acks()
            };
            match gone {
                Ok(paths) => {
                    for p in paths {
                        let _ = fs.remove_file(&p);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot persist buffer acknowledgements"),
            }
        }
        for reply in flushes {
            let _ = reply.send(match &sync_err {
                Some(e) => Err(io::Error::other(e.clone())),
                None => Ok(()),
            });
        }
        if closed {
            return;
        }
    }
}
