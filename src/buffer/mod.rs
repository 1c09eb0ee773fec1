//! The durable buffer: every accepted alert and event lives here until the broker has
//! acknowledged it (PUBACK). This doc is the spec.
//!
//! # Design constraints
//! - Nothing accepted is lost: across broker outages, agent restarts, and, with
//!   `sync = "always"`, kill -9 and power loss. The only loss is eviction by `max_bytes`,
//!   which is counted and reported (`buffer_dropped`).
//! - Memory stays flat however much is buffered: the index holds per-segment counts and the
//!   in-flight window's positions, never payloads (records are read back from disk to send).
//! - Every state change is crash-safe: a crash between any two syscalls leaves a directory
//!   that recovery turns into a consistent buffer, at worst re-sending acknowledged records.
//! - Recovery never crash-loops: corrupt or torn data is skipped, counted and reported.
//!
//! # On disk
//! ```text
//! {data_dir}/buffer/
//!   seq              next seq reserved: u64 LE ‖ crc32 (replaced atomically)
//!   acked            ack frontiers: "CGWA" ‖ event u64 ‖ alert u64 ‖ crc32 (replaced atomically)
//!   events/00000000000000000001.seg   segment files, named by the first seq they hold
//!   alerts/00000000000000000007.seg
//! ```
//! A segment is a 16-byte header (`CAMGWSEG`, version, class) followed by frames (see
//! [`frame`]): mark, length, CRC-32 over length and payload, postcard [`Record`] payload.
//! Segments are append-only; a new one is started when the open one reaches the segment size
//! and at every start (recovered segments are never appended to). `seq` is one counter for
//! both streams and increases across restarts: blocks of seqs are reserved durably in `seq`
//! before use. The ack frontier of a stream is the highest seq such that every record of
//! that stream at or below it was acknowledged.
//!
//! # State changes and why each is crash-safe
//! - *Create a segment*: create, write header, fsync file, fsync directory. A crash leaves an
//!   empty or header-only file, which recovery deletes.
//! - *Append*: one `write` per frame to the open segment. A crash mid-write leaves a torn tail,
//!   which recovery truncates. With `always`, callers are answered after the `fdatasync`
//!   covering their frame, and concurrent appends share it (group commit: the writer thread
//!   drains its queue, writes everything, syncs once, then answers everyone). With `interval`,
//!   callers are answered after the `write` and the files are synced every `sync_interval`.
//! - *Acknowledge*: in memory; the frontiers are persisted periodically (temp file, fsync,
//!   rename, fsync directory). A crash loses recent acks: those records are sent again.
//! - *Delete*: only sealed segments whose every record is at or below the *persisted*
//!   frontier. A crash between persisting and unlinking leaves a segment that recovery finds
//!   fully acknowledged and deletes.
//! - *Evict* (`max_bytes`): events before alerts, oldest segment first (fully acknowledged
//!   ones first). The `buffer_dropped` alert with the count is appended and synced *before*
//!   the victim is unlinked, so a crash cannot lose the report (at worst it over-reports).
//! - *Full disk*: a failed write is cut back (`set_len`) to the last whole frame and the
//!   append fails (ingest answers 503); nothing already buffered is touched, and the next
//!   append simply tries again.
//!
//! # Recovery
//! Temp files are removed; each segment is read whole (segments are at most 1 MiB) and
//! scanned: valid frames are indexed (counts and the first unacknowledged position only),
//! corrupt frames are skipped by resynchronising on the next frame mark and counted, a torn
//! tail is truncated. Empty and fully acknowledged segments are deleted; unknown files are
//! left alone and reported. The [`Recovery`] report goes out as a `buffer_corrupt` alert when
//! anything was skipped.

pub mod frame;
pub mod index;
pub mod inspect;
pub mod stills;
mod store;

pub use store::{AppendError, Appended, Buffer, Options, Recovery, Stats};

#[allow(unused_imports)]
use crate::record::Record;
