//! A pure, incremental parser for the never-ending multipart responses cameras stream events
//! in (Hikvision `alertStream`, Dahua `eventManager.cgi?action=attach`).
//!
//! Push bytes as they arrive, pull whole parts. Liberal in what it accepts, because cameras
//! are: parts split across reads anywhere, `Content-Length` absent, wrong, or written without
//! a space (`Content-Length:135`), LF or CRLF line ends, junk between parts, a stream that ends
//! mid-part (the incomplete part is dropped, never half-delivered). Memory is bounded: a part
//! larger than [`MAX_PART`] is skipped, and the buffer never holds more than about twice that.

pub const MAX_PART: usize = 1 << 20;

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

#[derive(Debug)]
pub struct Parser {
    marker: Vec<u8>,
    buf: Vec<u8>,
    /// Parts skipped for being too large or malformed.
    pub skipped: u64,
}

/// The boundary named by a `Content-Type: multipart/...; boundary=...` value.
pub fn boundary(content_type: &str) -> Option<String> {
    let lower = content_type.to_ascii_lowercase();
    if !lower.trim_start().starts_with("multipart/") {
        return None;
    }
    content_type.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("boundary")).then(|| v.trim().trim_matches('"').to_string())
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// End of the header block starting at `from`: (index after the blank line).
fn headers_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    // An empty header block: the blank line comes right away.
    loop {
        let rest = &buf[i..];
        let nl = rest.iter().position(|&b| b == b'\n')?;
        let line = &rest[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        i += nl + 1;
        if line.is_empty() {
            return Some(i);
        }
    }
}

fn trim_line_end(mut b: &[u8]) -> &[u8] {
    while let Some(x) = b.strip_suffix(b"\n").or_else(|| b.strip_suffix(b"\r")) {
        b = x;
    }
    b
}

impl Parser {
    pub fn new(boundary: &str) -> Parser {
        let b = boundary.strip_prefix("--").unwrap_or(boundary);
        Parser {
            marker: format!("--{b}").into_bytes(),
            buf: Vec::new(),
            skipped: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held, for tests of the memory bound.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole part, or `None` until more bytes arrive.
    pub fn pull(&mut self) -> Option<Part> {
        loop {
            let Some(m) = find(&self.buf, &self.marker) else {
                // No boundary in sight: keep only what could be the start of one.
                if self.buf.len() > 2 * MAX_PART {
                    let keep = self.marker.len();
                    let cut = self.buf.len() - keep;
                    self.buf.drain(..cut);
                    self.skipped += 1;
                }
                return None;
            };
            let after = m + self.marker.len();
            // The rest of the boundary line (`--` marks the end of the stream).
            let nl = self.buf[after..].iter().position(|&b| b == b'\n')?;
            let line_end = after + nl + 1;
            if self.buf[after..].starts_with(b"--") {
                self.buf.drain(..line_end);
                continue;
            }
            let Some(hend) = headers_end(&self.buf, line_end) else {
                if self.buf.len() - line_end > 64 * 1024 {
                    // Headers that never end: skip this boundary.
                    self.buf.drain(..after);
                    self.skipped += 1;
                    continue;
                }
                return None;
            };
            let headers: Vec<(String, String)> = String::from_utf8_lossy(&self.buf[line_end..hend])
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            let declared = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse::<usize>().ok());
            let rest = &self.buf[hend..];
            let next_marker = find(rest, &self.marker);
            let body_end = match (declared, next_marker) {
                // A length that runs into the next boundary is wrong: trust the boundary.
                (Some(len), Some(nm)) if len > nm => nm,
                (Some(len), _) if len <= rest.len() => len,
                (Some(len), _) => {
                    if len > MAX_PART {
                        self.buf.drain(..after);
                        self.skipped += 1;
                        continue;
                    }
                    return None;
                }
                (None, Some(nm)) => nm,
                (None, None) => {
                    if rest.len() > MAX_PART {
                        self.buf.drain(..after);
                        self.skipped += 1;
                        continue;
                    }
                    return None;
                }
            };
            let body = trim_line_end(&rest[..body_end]).to_vec();
            self.buf.drain(..hend + body_end);
            if body.len() > MAX_PART {
                self.skipped += 1;
                continue;
            }
            return Some(Part { headers, body });
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
            assert!(p.buffered() <= 2 * MAX_PART + junk.len());
        }
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
