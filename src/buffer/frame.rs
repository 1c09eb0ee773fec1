//! Pure encoding and decoding of segment headers and record frames (no I/O).
//!
//! ```text
//! segment header (16 bytes)            frame
//! +----------+----+-----+--------+     +--------+--------+-----------------+-----------+
//! | CAMGWSEG | v1 | cls | 0 x 6  |     | mark 4 | len u32| crc32 u32       | payload   |
//! +----------+----+-----+--------+     | C4 6D 67 77     | (len ‖ payload) | len bytes |
//!                                      +--------+--------+-----------------+-----------+
//! ```
//! All integers little-endian. The CRC-32 (IEEE) covers the length bytes and the payload, so a
//! flipped bit in either is caught. The mark lets a reader find the next frame after a corrupt
//! one. The payload is postcard of [`Record`].

use crate::record::{Class, Record};

pub const SEGMENT_MAGIC: [u8; 8] = *b"CAMGWSEG";
pub const SEGMENT_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 16;
pub const FRAME_MARK: [u8; 4] = [0xC4, 0x6D, 0x67, 0x77];
pub const FRAME_HEAD: usize = 12;
/// Larger payloads are refused at append and treated as corruption when read.
pub const MAX_PAYLOAD: usize = 256 * 1024;

pub fn segment_header(class: Class) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8] = SEGMENT_VERSION;
    h[9] = class as u8;
    h
}

/// The class a header declares, or `None` when it is not a valid camgw segment header.
pub fn parse_header(buf: &[u8]) -> Option<Class> {
    if buf.len() < HEADER_LEN || buf[..8] != SEGMENT_MAGIC || buf[8] != SEGMENT_VERSION {
        return None;
    }
    match buf[9] {
        0 => Some(Class::Event),
        1 => Some(Class::Alert),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("record of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
}

/// Appends one frame for `rec` to `out`; returns the frame's length.
pub fn encode_frame(rec: &Record, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
    let payload = postcard::to_allocvec(rec).expect("postcard encoding of a record cannot fail");
    if payload.len() > MAX_PAYLOAD {
        return Err(EncodeError::TooLarge(payload.len()));
    }
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(&payload);
    out.extend_from_slice(&FRAME_MARK);
    out.extend_from_slice(&len);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(FRAME_HEAD + payload.len())
}

#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A valid frame of this many bytes.
    Ok(Record, usize),
    /// The buffer ends before the frame does (a torn write, or more to read).
    Incomplete,
    /// Not a valid frame here.
    Corrupt,
}

/// Payload length a frame header declares, when the header is intact enough to say.
pub fn declared_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < FRAME_HEAD || buf[..4] != FRAME_MARK {
        return None;
    }
    let len = u32::from_le_bytes(buf[4..8].try_into().unwrap()) as usize;
    (len <= MAX_PAYLOAD).then_some(len)
}

/// Decodes the frame at the start of `buf`.
pub fn decode_frame(buf: &[u8]) -> Frame {
    if buf.len() < FRAME_HEAD {
        return if FRAME_MARK.starts_with(&buf[..buf.len().min(4)]) {
            Frame::Incomplete
        } else {
            Frame::Corrupt
        };
    }
    let Some(len) = declared_len(buf) else {
        return Frame::Corrupt;
    };
    if buf.len() < FRAME_HEAD + len {
        return Frame::Incomplete;
    }
    let crc = u32::from_le_bytes(buf[8..12].try_into().unwrap());
    let payload = &buf[FRAME_HEAD..FRAME_HEAD + len];
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[4..8]);
    h.update(payload);
    if h.finalize() != crc {
        return Frame::Corrupt;
    }
    match postcard::from_bytes::<Record>(payload) {
        Ok(r) => Frame::Ok(r, FRAME_HEAD + len),
        Err(_) => Frame::Corrupt,
    }
}

/// The offset of the next valid frame at or after `from`, if any.
pub fn resync(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + FRAME_HEAD <= buf.len() {
        match buf[i..].iter().position(|&b| b == FRAME_MARK[0]) {
            None => return None,
            Some(p) => {
                i += p;
                if let Frame::Ok(..) = decode_frame(&buf[i..]) {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// What a scan of a segment's frames found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanEnd {
    /// Offset just past the last valid frame: where a torn tail starts.
    pub valid_end: usize,
    /// Corrupt regions skipped (each held at least one record).
    pub corrupt: u64,
    /// Bytes after `valid_end` that held no valid frame.
    pub tail_bytes: usize,
}

/// Walks every valid frame in `buf` (frames only, header already stripped), calling
/// `f(offset, record, frame_len)`, skipping corrupt regions and stopping at a torn tail.
pub fn scan(buf: &[u8], mut f: impl FnMut(usize, Record, usize)) -> ScanEnd {
    let mut pos = 0;
    let mut end = ScanEnd::default();
    while pos < buf.len() {
        match decode_frame(&buf[pos..]) {
            Frame::Ok(rec, n) => {
                f(pos, rec, n);
                pos += n;
                end.valid_end = pos;
            }
            Frame::Incomplete | Frame::Corrupt => match resync(buf, pos + 1) {
                Some(next) => {
                    end.corrupt += 1;
                    pos = next;
                }
                None => {
                    // Nothing valid follows. A frame whose bytes are all present but fail the
                    // check is corruption; a frame cut short is a torn write.
                    if let Some(len) = declared_len(&buf[pos..]) {
                        if buf.len() - pos >= FRAME_HEAD + len {
                            end.corrupt += 1;
                        }
                    } else if buf.len() - pos >= FRAME_HEAD {
                        end.corrupt += 1;
                    }
                    break;
                }
            },
        }
    }
    end.tail_bytes = buf.len() - end.valid_end;
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Body;

    fn rec(seq: u64) -> Record {
        Record {
            seq,
            id: seq as u128 * 7919,
            ts_ms: 1_700_000_000_000 + seq as i64,
            clock_synced: seq % 2 == 0,
            body: Body::motion(
                "cam01",
                crate::record::Source::Ingest,
                crate::record::MotionState::Start,
                serde_json::Value::Null,
            ),
        }
    }

    fn frames(n: u64) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        for s in 1..=n {
            offsets.push(out.len());
            encode_frame(&rec(s), &mut out).unwrap();
        }
        (out, offsets)
    }

    fn seqs(buf: &[u8]) -> (Vec<u64>, ScanEnd) {
        let mut v = Vec::new();
        let end = scan(buf, |_, r, _| v.push(r.seq));
        (v, end)
    }

    #[test]
    fn frames_round_trip() {
        let (buf, _) = frames(3);
        let (v, end) = seqs(&buf);
        assert_eq!(v, vec![1, 2, 3]);
        assert_eq!(
            end,
            ScanEnd {
                valid_end: buf.len(),
                corrupt: 0,
                tail_bytes: 0
            }
        );
    }

    #[test]
    fn a_flipped_payload_bit_skips_exactly_that_record() {
        let (mut buf, off) = frames(5);
        buf[off[2] + FRAME_HEAD + 3] ^= 0x10;
        let (v, end) = seqs(&buf);
        assert_eq!(v, vec![1, 2, 4, 5]);
        assert_eq!(end.corrupt, 1);
        assert_eq!(end.valid_end, buf.len());
    }

    #[test]
    fn a_flipped_length_bit_is_caught_by_the_crc() {
        let (mut buf, off) = frames(4);
        buf[off[1] + 4] ^= 0x01;
        let (v, end) = seqs(&buf);
        assert_eq!(v, vec![1, 3, 4]);
        assert_eq!(end.corrupt, 1);
    }

    #[test]
    fn a_torn_tail_is_not_counted_as_corruption() {
        let (buf, off) = frames(4);
        let cut = off[3] + 7;
        let (v, end) = seqs(&buf[..cut]);
        assert_eq!(v, vec![1, 2, 3]);
        assert_eq!(end.corrupt, 0);
        assert_eq!(end.valid_end, off[3]);
        assert_eq!(end.tail_bytes, 7);
    }

    #[test]
    fn zeroed_tail_after_power_loss_is_a_tail() {
        let (mut buf, off) = frames(2);
        buf.extend_from_slice(&[0u8; 40]);
        let (v, end) = seqs(&buf);
        assert_eq!(v, vec![1, 2]);
        assert_eq!(end.valid_end, off[1] + (off[1] - off[0]));
        assert_eq!(end.tail_bytes, 40);
    }

    #[test]
    fn headers_round_trip_and_reject_garbage() {
        assert_eq!(
            parse_header(&segment_header(Class::Alert)),
            Some(Class::Alert)
        );
        assert_eq!(
            parse_header(&segment_header(Class::Event)),
            Some(Class::Event)
        );
        assert_eq!(parse_header(b"not a segment hdr"), None);
        assert_eq!(parse_header(&[]), None);
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode_frame(&bytes);
            let _ = scan(&bytes, |_, _, _| {});
        }

        #[test]
        fn any_single_corruption_loses_at_most_one_record(n in 2u64..20, victim in 0usize..20, byte in 0usize..40, bit in 0u8..8) {
            let (mut buf, off) = frames(n);
            let victim = victim % n as usize;
            let at = (off[victim] + byte).min(buf.len() - 1);
            buf[at] ^= 1 << bit;
            let (v, _) = seqs(&buf);
            proptest::prop_assert!(v.len() as u64 >= n - 2, "{} of {}", v.len(), n);
            proptest::prop_assert!(v.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
