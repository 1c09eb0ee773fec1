//! The pure, in-memory index of one class's stream: which segments exist, how many of their
//! records were acknowledged, where the delivery cursor is and what is in flight.
//!
//! It holds positions and counts only, never payloads, so its size depends on the number of
//! segments and the in-flight window, not on how much is buffered.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::frame::HEADER_LEN;

/// A segment file of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegMeta {
    /// The seq the file is named after (its first record's seq, or the seq it was opened at).
    pub name: u64,
    pub last_seq: u64,
    pub records: u64,
    pub acked: u64,
    /// File length, header included.
    pub bytes: u64,
    /// No more appends go here.
    pub sealed: bool,
}

impl SegMeta {
    pub fn new(name: u64) -> SegMeta {
        SegMeta {
            name,
            last_seq: 0,
            records: 0,
            acked: 0,
            bytes: HEADER_LEN as u64,
            sealed: false,
        }
    }
    pub fn unacked(&self) -> u64 {
        self.records - self.acked
    }
}

/// A position in a stream: segment name and byte offset of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub seg: u64,
    pub offset: u64,
}

#[derive(Debug, Default, Clone)]
pub struct Stream {
    pub segs: VecDeque<SegMeta>,
    /// The next frame to read.
    pub cursor: Option<Pos>,
    /// Read but not acknowledged: seq → where it starts.
    pub inflight: BTreeMap<u64, Pos>,
    /// The highest seq handed out by the cursor.
    pub last_read: u64,
    /// Acknowledged out of order, above the frontier: skipped if the cursor passes them again
    /// after a rewind (so they are neither re-sent nor counted twice). At most a window's worth.
    pub acked_ahead: BTreeSet<u64>,
}

impl Stream {
    /// Every record of this stream with seq ≤ the frontier has been acknowledged.
    pub fn frontier(&self) -> u64 {
        match self.inflight.keys().next() {
            Some(&min) => min - 1,
            None => self.last_read,
        }
    }

    pub fn seg(&self, name: u64) -> Option<&SegMeta> {
        self.seg_index(name).map(|i| &self.segs[i])
    }

    pub fn seg_mut(&mut self, name: u64) -> Option<&mut SegMeta> {
        self.seg_index(name).map(|i| &mut self.segs[i])
    }

    fn seg_index(&self, name: u64) -> Option<usize> {
        self.segs.binary_search_by_key(&name, |s| s.name).ok()
    }

    /// The segment that holds (or would hold) `seq`.
    fn seg_for_seq(&self, seq: u64) -> Option<usize> {
        let i = self.segs.partition_point(|s| s.name <= seq);
        i.checked_sub(1)
    }

    /// The append target, if one is open.
    pub fn active(&self) -> Option<&SegMeta> {
        self.segs.back().filter(|s| !s.sealed)
    }

    pub fn active_mut(&mut self) -> Option<&mut SegMeta> {
        self.segs.back_mut().filter(|s| !s.sealed)
    }

    pub fn bytes(&self) -> u64 {
        self.segs.iter().map(|s| s.bytes).sum()
    }

    pub fn unacked(&self) -> u64 {
        self.segs.iter().map(|s| s.unacked()).sum()
    }

    /// Records `seq` as read from `pos`, advancing the cursor to `next`. Returns false (and
    /// hands nothing out) for a record already acknowledged ahead of a rewind.
    pub fn mark_read(&mut self, seq: u64, pos: Pos, next: Pos) -> bool {
        self.cursor = Some(next);
        self.last_read = self.last_read.max(seq);
        let fresh = !self.acked_ahead.contains(&seq);
        if fresh {
            self.inflight.insert(seq, pos);
        }
        self.prune_acked_ahead();
        fresh
    }

    /// Forgets out-of-order acks the frontier has passed.
    fn prune_acked_ahead(&mut self) {
        let frontier = self.frontier();
        while self.acked_ahead.first().is_some_and(|&s| s <= frontier) {
            self.acked_ahead.pop_first();
        }
    }

    /// Acknowledges one in-flight record. Returns false for a seq not in flight (a duplicate
    /// ack, or a record evicted meanwhile).
    pub fn ack(&mut self, seq: u64) -> bool {
        if self.inflight.remove(&seq).is_none() {
            return false;
        }
        if self.inflight.keys().next().is_some_and(|&min| min < seq) {
            self.acked_ahead.insert(seq);
        }
        self.prune_acked_ahead();
        if let Some(i) = self.seg_for_seq(seq) {
            let s = &mut self.segs[i];
            if s.acked < s.records {
                s.acked += 1;
            }
        }
        true
    }

    /// Puts every in-flight record back to unsent (the connection they went out on is gone).
    pub fn rewind(&mut self) {
        if let Some((&min, &pos)) = self.inflight.iter().next() {
            self.cursor = Some(pos);
            self.last_read = min - 1;
            self.inflight.clear();
        }
    }

    /// Sealed, fully acknowledged segments whose records are all ≤ `durable_frontier`: the
    /// ones that may be deleted now that the frontier is on disk.
    pub fn deletable(&self, durable_frontier: u64) -> Vec<u64> {
        self.segs
            .iter()
            .filter(|s| s.sealed && s.acked == s.records && s.last_seq <= durable_frontier)
            .map(|s| s.name)
            .collect()
    }

    /// Forgets a segment (deleted or evicted); returns its unacknowledged record count. The
    /// cursor moves past it and its in-flight records are dropped.
    pub fn remove(&mut self, name: u64) -> u64 {
        let Some(i) = self.seg_index(name) else {
            return 0;
        };
        let seg = self.segs.remove(i).expect("index is valid");
        self.inflight.retain(|_, p| p.seg != name);
        self.acked_ahead
            .retain(|&s| s < seg.name || s > seg.last_seq);
        if self.cursor.is_some_and(|c| c.seg == name) {
            self.cursor = self.segs.get(i).map(|s| Pos {
                seg: s.name,
                offset: HEADER_LEN as u64,
            });
        }
        if seg.last_seq > self.last_read {
            self.last_read = seg.last_seq;
        }
        seg.unacked()
    }

    /// The oldest segment eviction would take: fully acknowledged ones first (they cost
    /// nothing), then the oldest with data. `None` when the stream holds nothing.
    pub fn eviction_candidate(&self) -> Option<&SegMeta> {
        self.segs
            .iter()
            .find(|s| s.records > 0 && s.acked == s.records)
            .or_else(|| self.segs.iter().find(|s| s.records > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(segs: &[(u64, u64, u64)]) -> Stream {
        let mut s = Stream::default();
        for &(name, last, records) in segs {
            s.segs.push_back(SegMeta {
                name,
                last_seq: last,
                records,
                acked: 0,
                bytes: 100,
                sealed: true,
            });
        }
        s.segs.back_mut().unwrap().sealed = false;
        s.cursor = Some(Pos {
            seg: segs[0].0,
            offset: 16,
        });
        s
    }

    fn pos(seg: u64, offset: u64) -> Pos {
        Pos { seg, offset }
    }

    #[test]
    fn frontier_is_just_below_the_oldest_unacked_in_flight() {
        let mut s = stream(&[(1, 5, 5)]);
        s.mark_read(1, pos(1, 16), pos(1, 30));
        s.mark_read(3, pos(1, 30), pos(1, 44));
        s.mark_read(4, pos(1, 44), pos(1, 58));
        assert_eq!(s.frontier(), 0);
        assert!(s.ack(3));
        assert_eq!(
            s.frontier(),
            0,
            "an out-of-order ack does not move the frontier"
        );
        assert!(s.ack(1));
        assert_eq!(s.frontier(), 3);
        assert!(s.ack(4));
        assert_eq!(s.frontier(), 4);
        assert!(!s.ack(4), "a duplicate ack is ignored");
        assert_eq!(s.segs[0].acked, 3);
    }

    #[test]
    fn rewind_returns_the_cursor_to_the_oldest_in_flight_record() {
        let mut s = stream(&[(1, 5, 5)]);
        s.mark_read(1, pos(1, 16), pos(1, 30));
        s.mark_read(2, pos(1, 30), pos(1, 44));
        s.ack(1);
        s.rewind();
        assert_eq!(s.cursor, Some(pos(1, 30)));
        assert_eq!(s.frontier(), 1);
        assert!(s.inflight.is_empty());
    }

    #[test]
    fn a_record_acked_out_of_order_is_not_resent_or_counted_twice_after_a_rewind() {
        let mut s = stream(&[(1, 3, 3)]);
        s.mark_read(1, pos(1, 16), pos(1, 30));
        s.mark_read(2, pos(1, 30), pos(1, 44));
        s.mark_read(3, pos(1, 44), pos(1, 58));
        s.ack(2);
        s.rewind();
        assert_eq!(s.cursor, Some(pos(1, 16)));
        assert!(s.mark_read(1, pos(1, 16), pos(1, 30)));
        assert!(
            !s.mark_read(2, pos(1, 30), pos(1, 44)),
            "2 was acknowledged already"
        );
        assert!(s.mark_read(3, pos(1, 44), pos(1, 58)));
        s.ack(1);
        s.ack(3);
        assert_eq!(s.segs[0].acked, 3);
        assert_eq!(s.frontier(), 3);
        assert!(s.acked_ahead.is_empty());
    }

    #[test]
    fn only_sealed_fully_acked_segments_below_the_durable_frontier_are_deletable() {
        let mut s = stream(&[(1, 2, 2), (3, 4, 2)]);
        s.mark_read(1, pos(1, 16), pos(1, 30));
        s.mark_read(2, pos(1, 30), pos(3, 16));
        s.ack(1);
        s.ack(2);
        assert_eq!(
            s.deletable(1),
            Vec::<u64>::new(),
            "frontier not yet durable"
        );
        assert_eq!(s.deletable(2), vec![1]);
        s.mark_read(3, pos(3, 16), pos(3, 30));
        s.mark_read(4, pos(3, 30), pos(3, 44));
        s.ack(3);
        s.ack(4);
        assert_eq!(s.deletable(4), vec![1], "the open segment is never deleted");
    }

    #[test]
    fn removing_a_segment_moves_the_cursor_and_drops_its_inflight() {
        let mut s = stream(&[(1, 2, 2), (3, 4, 2)]);
        s.mark_read(1, pos(1, 16), pos(1, 30));
        assert_eq!(s.remove(1), 2);
        assert!(s.inflight.is_empty());
        assert_eq!(s.cursor, Some(pos(3, 16)));
        assert_eq!(s.frontier(), 2);
        assert!(!s.ack(1));
    }

    #[test]
    fn eviction_prefers_acked_segments_then_the_oldest() {
        let mut s = stream(&[(1, 2, 2), (3, 4, 2), (5, 5, 1)]);
        assert_eq!(s.eviction_candidate().unwrap().name, 1);
        s.segs[1].acked = 2;
        assert_eq!(s.eviction_candidate().unwrap().name, 3);
        let empty = Stream::default();
        assert!(empty.eviction_candidate().is_none());
    }
}
