//! A pure, incremental parser for the never-ending multipart responses cameras stream events
//! in (Hikvision `alertStream`, Dahua `eventManager.cgi?action=attach`).
//!
//! Push bytes as they arrive, pull whole parts. Liberal in what it accepts, because cameras
//! are: parts split across reads anywhere, `Content-Length` absent, wrong, or written without
//! a space (`Content-Length:135`), LF or CRLF line ends, junk between parts, a stream that ends
//! mid-part (the incomplete part is dropped, never half-delivered).
//!
//! Hostile streams are bounded, in memory and in time:
//! - memory: the parser holds at most one part in progress, [`MAX_PART`] of body plus
//!   [`MAX_HEADERS`] of headers plus a boundary line of at most [`MAX_LINE`]; anything longer is
//!   skipped (counted in `skipped`) and its bytes are dropped as they arrive;
//! - time: every byte pushed is examined a bounded number of times. The parser remembers how
//!   far it has searched (`scan`), so a stream drip-fed a byte at a time, or megabytes of junk
//!   without a boundary, costs time linear in the bytes received, never a re-scan of the buffer.

/// The largest part body kept. Event parts are XML or `key=value` text of a few KiB; a
/// camera that attaches pictures to its alert stream gets those pictures skipped.
pub const MAX_PART: usize = 64 * 1024;
/// The largest header block of one part.
pub const MAX_HEADERS: usize = 8 * 1024;
/// The longest boundary line (the marker and whatever follows it up to the newline).
pub const MAX_LINE: usize = 256;
/// The longest boundary accepted (RFC 2046 allows 70 characters).
pub const MAX_BOUNDARY: usize = 70;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Part {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Where the parser is inside the stream. Offsets are relative to `Parser::start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the next boundary marker.
    Seek,
    /// A marker starts at `at`; looking for the end of its line.
    Line { at: usize },
    /// Headers start at `from`; looking for the blank line.
    Headers { from: usize },
    /// The body starts at `from`, headers parsed; looking for its end.
    Body { from: usize },
}

#[derive(Debug)]
pub struct Parser {
    marker: Vec<u8>,
    finder: memchr::memmem::Finder<'static>,
    /// Bytes received and not yet consumed are `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    /// Offset (relative to `start`) up to which the current state has searched.
    scan: usize,
    state: State,
    headers: Vec<(String, String)>,
    declared: Option<usize>,
    /// Parts skipped for being too large or malformed.
    pub skipped: u64,
}

/// The boundary named by a `Content-Type: multipart/...; boundary=...` value (at most
/// [`MAX_BOUNDARY`] characters, not empty).
pub fn boundary(content_type: &str) -> Option<String> {
    let lower = content_type.to_ascii_lowercase();
    if !lower.trim_start().starts_with("multipart/") {
        return None;
    }
    content_type.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        let v = v.trim().trim_matches('"');
        let v = v.strip_prefix("--").unwrap_or(v);
        (k.trim().eq_ignore_ascii_case("boundary") && !v.is_empty() && v.len() <= MAX_BOUNDARY)
            .then(|| v.to_string())
    })
}

fn trim_line_end(mut b: &[u8]) -> &[u8] {
    while let Some(x) = b.strip_suffix(b"\n").or_else(|| b.strip_suffix(b"\r")) {
        b = x;
    }
    b
}

fn parse_headers(block: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(block)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .take(64)
        .collect()
}

impl Parser {
    /// A parser for parts separated by `--{boundary}` (a leading `--` in `boundary` is
    /// accepted too). A boundary longer than [`MAX_BOUNDARY`] is cut to that length.
    pub fn new(boundary: &str) -> Parser {
        let b = boundary.strip_prefix("--").unwrap_or(boundary);
        let b = &b.as_bytes()[..b.len().min(MAX_BOUNDARY)];
        let mut marker = b"--".to_vec();
        marker.extend_from_slice(b);
        Parser {
            finder: memchr::memmem::Finder::new(&marker).into_owned(),
            marker,
            buf: Vec::new(),
            start: 0,
            scan: 0,
            state: State::Seek,
            headers: Vec::new(),
            declared: None,
            skipped: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        // Compact when the consumed prefix is at least half the buffer: amortised O(1) a byte.
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held, for tests of the memory bound.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn rest(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Drops `n` bytes of the unconsumed input and starts the next search where they ended.
    fn consume(&mut self, n: usize) {
        self.start += n;
        self.scan = 0;
    }

    /// Searches for the marker in `rest[from..]`, starting at `self.scan` when that is further;
    /// returns its offset in `rest`. On a miss, remembers where to resume (a marker may
    /// straddle the end).
    fn find_marker(&mut self, from: usize) -> Option<usize> {
        let begin = self.scan.max(from);
        let rest = &self.buf[self.start..];
        if begin >= rest.len() {
            return None;
        }
        match self.finder.find(&rest[begin..]) {
            Some(i) => Some(begin + i),
            None => {
                self.scan = rest.len().saturating_sub(self.marker.len() - 1).max(begin);
                None
            }
        }
    }

    /// Gives up on the part in progress: its bytes are dropped and the search for the next
    /// boundary resumes after `keep_from` (the bytes from there on may hold it).
    fn skip(&mut self, keep_from: usize) {
        self.skipped += 1;
        self.consume(keep_from);
        self.state = State::Seek;
    }

    /// The next whole part, or `None` until more bytes arrive.
    pub fn pull(&mut self) -> Option<Part> {
        loop {
            match self.state {
                State::Seek => match self.find_marker(0) {
                    Some(m) => {
                        // Junk before the marker is dropped.
                        self.consume(m);
                        self.state = State::Line { at: 0 };
                    }
                    None => {
                        // Keep only what could be the start of a marker.
                        let keep = self.marker.len() - 1;
                        let n = self.rest().len().saturating_sub(keep);
                        self.consume(n);
                        self.scan = 0;
                        return None;
                    }
                },
                State::Line { at } => {
                    let after = at + self.marker.len();
                    let begin = self.scan.max(after);
                    let rest = self.rest();
                    let limit = rest.len().min(at + MAX_LINE);
                    let nl = rest
                        .get(begin..limit)
                        .and_then(|s| memchr::memchr(b'\n', s))
                        .map(|i| begin + i);
                    match nl {
                        Some(nl) => {
                            let end_of_stream = rest[after..].starts_with(b"--");
                            self.consume(nl + 1);
                            if end_of_stream {
                                self.state = State::Seek;
                            } else {
                                self.state = State::Headers { from: 0 };
                            }
                        }
                        None if limit - at >= MAX_LINE => self.skip(after),
                        None => {
                            self.scan = limit;
                            return None;
                        }
                    }
                }
                State::Headers { from } => {
                    // Line by line from `scan`; the block ends at an empty line.
                    let mut i = self.scan.max(from);
                    let rest = self.rest();
                    let limit = rest.len().min(from + MAX_HEADERS);
                    let mut end = None;
                    while let Some(nl) = rest.get(i..limit).and_then(|s| memchr::memchr(b'\n', s)) {
                        let line = &rest[i..i + nl];
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        i += nl + 1;
                        if line.is_empty() {
                            end = Some(i);
                            break;
                        }
                    }
                    match end {
                        Some(hend) => {
                            self.headers = parse_headers(&rest[from..hend]);
                            self.declared = self
                                .headers
                                .iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                                .and_then(|(_, v)| v.parse::<usize>().ok());
                            self.consume(hend);
                            self.state = State::Body { from: 0 };
                        }
                        // Headers that never end: skip this boundary.
                        None if limit - from >= MAX_HEADERS => self.skip(0),
                        None => {
                            // Resume at the start of the incomplete line.
                            self.scan = i;
                            return None;
                        }
                    }
                }
                State::Body { from } => {
                    let have = self.rest().len() - from;
                    let next = self.find_marker(from).map(|m| m - from);
                    let body_end = match (self.declared, next) {
                        // A length that runs into the next boundary is wrong: trust the boundary.
                        (Some(len), Some(nm)) if len > nm => nm,
                        (Some(len), _) if len <= have => len,
                        (Some(len), None) if len > MAX_PART => {
                            self.skip(from);
                            continue;
                        }
                        (None, Some(nm)) => nm,
                        (None, None) if have > MAX_PART => {
                            // Keep the tail that may hold the start of the next marker.
                            let keep = self.marker.len() - 1;
                            self.skip(from + have - keep.min(have));
                            continue;
                        }
                        _ => return None,
                    };
                    let body = trim_line_end(&self.rest()[from..from + body_end]).to_vec();
                    if body.len() > MAX_PART {
                        self.skip(from + body_end);
                        continue;
                    }
                    let part = Part {
                        headers: std::mem::take(&mut self.headers),
                        body,
                    };
                    self.consume(from + body_end);
                    self.state = State::Seek;
                    return Some(part);
                }
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn all(p: &mut Parser) -> Vec<Part> {
        std::iter::from_fn(|| p.pull()).collect()
    }

    #[test]
    fn boundary_from_content_type() {
        assert_eq!(
            boundary("multipart/x-mixed-replace; boundary=myboundary").as_deref(),
            Some("myboundary")
        );
        assert_eq!(
            boundary("multipart/mixed;boundary=\"b o\"").as_deref(),
            Some("b o")
        );
        assert_eq!(boundary("text/plain"), None);
    }

    #[test]
    fn parts_with_and_without_length_split_at_every_byte() {
        let stream = b"--b\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello\r\n--b\nContent-Type: text/plain\n\nworld\n--b\r\nContent-Length:3\r\n\r\nxyz\r\n\r\n--b\r\n";
        for split in 1..stream.len() {
            let mut p = Parser::new("b");
            let mut got = Vec::new();
            for chunk in stream.chunks(split) {
                p.push(chunk);
                got.extend(all(&mut p));
            }
            let bodies: Vec<_> = got
                .iter()
                .map(|p| String::from_utf8_lossy(&p.body).to_string())
                .collect();
            assert_eq!(bodies, vec!["hello", "world", "xyz"], "split {split}");
        }
    }

    #[test]
    fn a_wrong_content_length_does_not_swallow_the_next_part() {
        let mut p = Parser::new("b");
        p.push(b"--b\r\nContent-Length: 500\r\n\r\nshort\r\n--b\r\nContent-Length: 4\r\n\r\nnext\r\n--b\r\n");
        let bodies: Vec<_> = all(&mut p).into_iter().map(|p| p.body).collect();
        assert_eq!(bodies, vec![b"short".to_vec(), b"next".to_vec()]);
    }

    #[test]
    fn a_stream_ending_mid_part_delivers_nothing_half_done() {
        let mut p = Parser::new("b");
        p.push(b"--b\r\nContent-Type: text/plain\r\n\r\nhalf a mess");
        assert_eq!(p.pull(), None);
        p.push(b"age\r\n--b\r\n");
        assert_eq!(p.pull().unwrap().body, b"half a message");
    }

    #[test]
    fn memory_stays_bounded_on_endless_junk() {
        let mut p = Parser::new("b");
        let junk = vec![b'x'; 64 * 1024];
        for _ in 0..100 {
            p.push(&junk);
            assert!(p.pull().is_none());
            assert!(p.buffered() < 64);
        }
    }

    #[test]
    fn a_boundary_line_that_never_ends_is_skipped_and_memory_stays_bounded() {
        // The attack: a marker, then bytes without a newline, forever.
        let mut p = Parser::new("b");
        p.push(b"--b");
        let junk = vec![b'x'; 16 * 1024];
        for _ in 0..1000 {
            p.push(&junk);
            assert!(p.pull().is_none());
            assert!(p.buffered() <= MAX_PART + MAX_HEADERS + MAX_LINE + junk.len());
        }
        assert!(p.skipped >= 1);
        // The stream recovers at the next real part.
        p.push(b"\r\n--b\r\nContent-Length: 2\r\n\r\nok\r\n--b\r\n");
        assert_eq!(p.pull().unwrap().body, b"ok");
    }

    #[test]
    fn headers_that_never_end_and_bodies_without_end_are_skipped() {
        let mut p = Parser::new("b");
        p.push(b"--b\r\n");
        for _ in 0..400 {
            p.push(b"X-Junk: 0123456789012345678901234567890123456789\r\n");
            assert!(p.pull().is_none());
            assert!(p.buffered() <= MAX_HEADERS + 64);
        }
        assert_eq!(p.skipped, 1);
        p.push(b"--b\r\n\r\n");
        let body = vec![b'y'; 1024];
        for _ in 0..200 {
            p.push(&body);
            assert!(p.pull().is_none());
            assert!(p.buffered() <= MAX_PART + 2 * body.len());
        }
        assert!(p.skipped >= 2);
        p.push(b"\r\n--b\r\n\r\nfine\r\n--b\r\n");
        assert_eq!(p.pull().unwrap().body, b"fine");
    }

    #[test]
    fn a_drip_fed_stream_is_parsed_without_rescanning() {
        // One byte at a time over a large part: each byte is looked at a bounded number of
        // times, so this finishes quickly even in a debug build (a re-scan per byte would
        // take ~10^10 steps).
        let body = vec![b'z'; MAX_PART - 10];
        let mut stream = b"--b\r\n\r\n".to_vec();
        stream.extend_from_slice(&body);
        stream.extend_from_slice(b"\r\n--b\r\n");
        let mut p = Parser::new("b");
        let mut got = Vec::new();
        for b in stream.chunks(1) {
            p.push(b);
            got.extend(all(&mut p));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, body);
    }

    #[test]
    fn boundaries_that_are_empty_or_too_long_are_refused() {
        assert_eq!(boundary("multipart/mixed; boundary="), None);
        let long = "x".repeat(MAX_BOUNDARY + 1);
        assert_eq!(boundary(&format!("multipart/mixed; boundary={long}")), None);
        assert_eq!(
            boundary("multipart/mixed; boundary=--b").as_deref(),
            Some("b")
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..80), 0..20)) {
            let mut p = Parser::new("b");
            for c in chunks {
                p.push(&c);
                while p.pull().is_some() {}
            }
        }

        #[test]
        fn parts_survive_any_split(bodies in proptest::collection::vec("[a-z0-9 ={}]{0,40}", 1..6), split in 1usize..30) {
            let mut stream = Vec::new();
            for b in &bodies {
                stream.extend_from_slice(format!("--bnd\r\nContent-Length: {}\r\n\r\n{b}\r\n", b.len()).as_bytes());
            }
            stream.extend_from_slice(b"--bnd\r\n");
            let mut p = Parser::new("bnd");
            let mut got = Vec::new();
            for c in stream.chunks(split) {
                p.push(c);
                while let Some(part) = p.pull() { got.push(String::from_utf8(part.body).unwrap()); }
            }
            let want: Vec<String> = bodies.iter().map(|b| b.trim_end_matches(['\r', '\n']).to_string()).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
