//! The read side: the uplink's cursor through the segments of a class, reading frames at
//! offsets and skipping past a frame found corrupt at runtime.

use super::*;

impl Inner {
    /// Reads the next unsent record of `class`, advancing its cursor.
    pub(super) fn read_next(&mut self, class: Class) -> Option<Record> {
        let ci = class.index();
        loop {
            let stream = &self.streams[ci];
            let cur = match stream.cursor {
                Some(c) => c,
                None => {
                    let first = stream.segs.front()?;
                    Pos {
                        seg: first.name,
                        offset: HEADER_LEN as u64,
                    }
                }
            };
            let Some(seg) = stream.seg(cur.seg) else {
                // Deleted or evicted under the cursor: go on with the next segment.
                let next = stream.segs.iter().find(|s| s.name > cur.seg)?;
                self.streams[ci].cursor = Some(Pos {
                    seg: next.name,
                    offset: HEADER_LEN as u64,
                });
                continue;
            };
            if cur.offset >= seg.bytes {
                if !seg.sealed {
                    self.streams[ci].cursor = Some(cur);
                    return None;
                }
                let next = stream.segs.iter().find(|s| s.name > cur.seg)?;
                self.streams[ci].cursor = Some(Pos {
                    seg: next.name,
                    offset: HEADER_LEN as u64,
                });
                continue;
            }
            let seg_bytes = seg.bytes;
            match self.read_frame(class, cur, seg_bytes) {
                Ok(Some((rec, n))) => {
                    let next = Pos {
                        seg: cur.seg,
                        offset: cur.offset + n as u64,
                    };
                    if rec.seq <= self.streams[ci].last_read {
                        self.streams[ci].cursor = Some(next);
                        continue;
                    }
                    if self.streams[ci].mark_read(rec.seq, cur, next) {
                        return Some(rec);
                    }
                }
                Ok(None) => {
                    // Corrupt at runtime (bit rot since recovery): skip to the next valid frame.
                    self.corrupt_total += 1;
                    let skip_to = self.resync(class, cur, seg_bytes);
                    tracing::warn!(
                        segment = cur.seg,
                        offset = cur.offset,
                        "skipped a corrupt buffer record"
                    );
                    self.streams[ci].cursor = Some(Pos {
                        seg: cur.seg,
                        offset: skip_to,
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the buffer; will retry");
                    self.readers[ci] = None;
                    self.streams[ci].cursor = Some(cur);
                    return None;
                }
            }
        }
    }

    pub(super) fn reader(&mut self, class: Class, seg: u64) -> io::Result<&dyn FsFile> {
        let ci = class.index();
        if self.readers[ci].as_ref().is_none_or(|(n, _)| *n != seg) {
            let f = self.fs.open_read(&seg_path(&self.dir, class, seg))?;
            self.readers[ci] = Some((seg, f));
        }
        Ok(self.readers[ci].as_ref().unwrap().1.as_ref())
    }

    pub(super) fn read_frame(
        &mut self,
        class: Class,
        at: Pos,
        seg_bytes: u64,
    ) -> io::Result<Option<(Record, usize)>> {
        let f = self.reader(class, at.seg)?;
        let mut head = [0u8; FRAME_HEAD];
        if at.offset + FRAME_HEAD as u64 > seg_bytes {
            return Ok(None);
        }
        f.read_exact_at(&mut head, at.offset)?;
        let Some(len) = frame::declared_len(&head) else {
            return Ok(None);
        };
        if at.offset + (FRAME_HEAD + len) as u64 > seg_bytes {
            return Ok(None);
        }
        let mut buf = vec![0u8; FRAME_HEAD + len];
        buf[..FRAME_HEAD].copy_from_slice(&head);
        f.read_exact_at(&mut buf[FRAME_HEAD..], at.offset + FRAME_HEAD as u64)?;
        Ok(match frame::decode_frame(&buf) {
            Frame::Ok(r, n) => Some((r, n)),
            _ => None,
        })
    }

    pub(super) fn resync(&mut self, class: Class, at: Pos, seg_bytes: u64) -> u64 {
        let rest = (|| -> io::Result<Vec<u8>> {
            let f = self.reader(class, at.seg)?;
            let mut buf = vec![0u8; (seg_bytes - at.offset) as usize];
            f.read_exact_at(&mut buf, at.offset)?;
            Ok(buf)
        })();
        match rest.ok().and_then(|b| frame::resync(&b, 1)) {
            Some(off) => at.offset + off as u64,
            None => seg_bytes,
        }
    }
}
