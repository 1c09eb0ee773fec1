//! Event stills (snapshots) waiting for the broker: the pure half (no I/O) of their own class
//! in the buffer.
//!
//! ```text
//! {data_dir}/buffer/stills/{event seq:020}-{event id:032x}-{camera}.jpg
//!   file = "CGWS" | version 1 | 3 zero bytes | crc32(jpeg) u32 LE | jpeg
//! ```
//! One file per still, named by what its topic needs (the camera, the event's id) and the
//! event's seq, which orders them. A file is written under a temporary name, fsynced, renamed
//! and its directory fsynced before it counts, so a crash leaves either no still or a whole
//! one (the temporary names are removed at the next start). Stills have their own byte bound
//! and count in `max_bytes`; they are evicted, oldest first, before any event or alert. They
//! go out only when no alert or event is waiting, one at a time, so an event is never held
//! back by a still and a still always follows the event it belongs to. Delivered stills are
//! unlinked; a crash before that sends one again (at-least-once, like records).

use std::collections::BTreeMap;

pub const MAGIC: [u8; 4] = *b"CGWS";
pub const VERSION: u8 = 1;
pub const HEAD_LEN: usize = 12;
/// A still file larger than this is not one we wrote (stills are bounded by the uplink's
/// packet limit): it is set aside unread.
pub const MAX_FILE: u64 = 2 << 20;
/// Temporary names start with this.
pub const TEMP_PREFIX: &str = ".tmp-";

/// What the buffer knows about a still without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StillMeta {
    /// The seq of the event it belongs to (the order stills go out in).
    pub seq: u64,
    pub event_id: u128,
    pub camera: String,
    /// The file's size.
    pub bytes: u64,
}

impl StillMeta {
    pub fn file_name(&self) -> String {
        format!(
            "{:020}-{:032x}-{}.jpg",
            self.seq, self.event_id, self.camera
        )
    }

    /// The meta a file name stands for (`bytes` from the file's size).
    pub fn parse_name(name: &str, bytes: u64) -> Option<StillMeta> {
        let stem = name.strip_suffix(".jpg")?;
        let (seq, rest) = stem.split_once('-')?;
        let (id, camera) = rest.split_once('-')?;
        if seq.len() != 20 || id.len() != 32 || crate::config::check_name(camera).is_err() {
            return None;
        }
        let m = StillMeta {
            seq: seq.parse().ok()?,
            event_id: u128::from_str_radix(id, 16).ok()?,
            camera: camera.to_string(),
            bytes,
        };
        // Only the names this module writes (no `+`, no upper-case hex): the path a meta
        // stands for must be the file it was read from.
        (m.file_name() == name).then_some(m)
    }
}

/// A still read back for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Still {
    pub meta: StillMeta,
    pub jpeg: Vec<u8>,
}

/// The file's bytes for `jpeg`.
pub fn encode(jpeg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD_LEN + jpeg.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, 0, 0, 0]);
    out.extend_from_slice(&crc32fast::hash(jpeg).to_le_bytes());
    out.extend_from_slice(jpeg);
    out
}

/// The JPEG inside a still file, or `None` when the file is not whole.
pub fn decode(file: &[u8]) -> Option<&[u8]> {
    if file.len() < HEAD_LEN || file[..4] != MAGIC || file[4] != VERSION {
        return None;
    }
    let crc = u32::from_le_bytes(file[8..12].try_into().ok()?);
    let jpeg = &file[HEAD_LEN..];
    (crc32fast::hash(jpeg) == crc).then_some(jpeg)
}

/// The stills on disk, in event order, with their bytes and the one in flight.
#[derive(Debug, Clone, Default)]
pub struct Index {
    files: BTreeMap<u64, StillMeta>,
    bytes: u64,
    /// Room promised to stills being written.
    reserved: u64,
    inflight: Option<u64>,
}

impl Index {
    pub fn insert(&mut self, m: StillMeta) {
        self.bytes += m.bytes;
        if let Some(old) = self.files.insert(m.seq, m) {
            self.bytes -= old.bytes;
        }
    }

    pub fn remove(&mut self, seq: u64) -> Option<StillMeta> {
        let m = self.files.remove(&seq)?;
        self.bytes -= m.bytes;
        if self.inflight == Some(seq) {
            self.inflight = None;
        }
        Some(m)
    }

    /// Bytes on disk and promised.
    pub fn bytes(&self) -> u64 {
        self.bytes + self.reserved
    }

    /// Bytes on disk only (what evicting every still would free).
    pub fn on_disk(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn reserve(&mut self, n: u64) {
        self.reserved += n;
    }

    pub fn unreserve(&mut self, n: u64) {
        self.reserved = self.reserved.saturating_sub(n);
    }

    /// The oldest still: the next to send, and the first to evict.
    pub fn oldest(&self) -> Option<&StillMeta> {
        self.files.values().next()
    }

    /// The next still to send, unless one is in flight.
    pub fn next_to_send(&self) -> Option<&StillMeta> {
        match self.inflight {
            Some(_) => None,
            None => self.oldest(),
        }
    }

    pub fn mark_inflight(&mut self, seq: u64) {
        self.inflight = Some(seq);
    }

    pub fn inflight(&self) -> Option<u64> {
        self.inflight
    }

    /// The connection dropped: the still in flight is unsent again.
    pub fn rewind(&mut self) {
        self.inflight = None;
    }

    /// Oldest stills to evict so that at most `room` bytes of stills remain (every still on
    /// disk when that is not enough: room promised to stills being written stays).
    pub fn victims_down_to(&self, room: u64) -> Vec<u64> {
        self.victims(0, room)
            .unwrap_or_else(|| self.files.keys().copied().collect())
    }

    /// Oldest stills to evict so that `need` more bytes fit in `room` (the stills' share of
    /// the buffer); `None` when even evicting every still would not make room.
    pub fn victims(&self, need: u64, room: u64) -> Option<Vec<u64>> {
        let mut total = self.bytes();
        let mut out = Vec::new();
        for m in self.files.values() {
            if total + need <= room {
                break;
            }
            total -= m.bytes;
            out.push(m.seq);
        }
        (total + need <= room).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(seq: u64, bytes: u64) -> StillMeta {
        StillMeta {
            seq,
            event_id: 0xabc0_0000_0000_0000_0000_0000_0000_0001 + seq as u128,
            camera: "cam-01".into(),
            bytes,
        }
    }

    #[test]
    fn names_round_trip_and_strangers_are_not_stills() {
        let m = meta(42, 1234);
        assert_eq!(StillMeta::parse_name(&m.file_name(), 1234), Some(m));
        for bad in [
            "x.jpg",
            "00000000000000000042-abc-cam.jpg",
            "00000000000000000042-abc00000000000000000000000000001-CAM.jpg",
            ".tmp-00000000000000000042-abc00000000000000000000000000001-cam.jpg",
            "00000000000000000042-abc00000000000000000000000000001-cam.seg",
            "+0000000000000000042-abc00000000000000000000000000001-cam.jpg",
            "00000000000000000042-ABC00000000000000000000000000001-cam.jpg",
        ] {
            assert_eq!(StillMeta::parse_name(bad, 1), None, "{bad}");
        }
    }

    #[test]
    fn a_flipped_bit_or_a_cut_file_is_not_a_still() {
        let f = encode(b"\xff\xd8jpeg\xff\xd9");
        assert_eq!(decode(&f), Some(&b"\xff\xd8jpeg\xff\xd9"[..]));
        let mut g = f.clone();
        g[14] ^= 1;
        assert_eq!(decode(&g), None);
        assert_eq!(decode(&f[..f.len() - 1]), None);
        assert_eq!(decode(&f[..5]), None);
    }

    #[test]
    fn the_oldest_go_first_and_only_as_many_as_needed() {
        let mut ix = Index::default();
        for s in [5, 3, 9] {
            ix.insert(meta(s, 100));
        }
        assert_eq!(ix.bytes(), 300);
        assert_eq!(ix.victims(50, 400), Some(vec![]));
        assert_eq!(ix.victims(150, 400), Some(vec![3]));
        assert_eq!(ix.victims(250, 400), Some(vec![3, 5]));
        assert_eq!(ix.victims(401, 400), None);
        assert_eq!(ix.victims_down_to(150), vec![3, 5]);
        assert_eq!(ix.victims_down_to(0), vec![3, 5, 9]);
        ix.reserve(100);
        assert_eq!(ix.victims(50, 400), Some(vec![3]));
        assert_eq!(ix.next_to_send().unwrap().seq, 3);
        ix.mark_inflight(3);
        assert_eq!(ix.next_to_send(), None);
        ix.rewind();
        assert_eq!(ix.next_to_send().unwrap().seq, 3);
        ix.mark_inflight(3);
        ix.remove(3);
        assert_eq!(ix.next_to_send().unwrap().seq, 5);
        assert_eq!(ix.bytes(), 300);
    }
}
