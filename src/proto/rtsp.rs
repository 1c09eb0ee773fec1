//! RTSP/1.0 wire messages, pure: [`Reader`] is the incremental parser of what a server sends
//! on a TCP connection (push bytes, pull responses and interleaved packets, every part
//! bounded); [`video_control`] picks the video track out of an SDP.

use crate::proto::http::Url;

/// What the reader yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// `$`, channel, length, payload.
    Interleaved { channel: u8, payload: Vec<u8> },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("not an RTSP response or interleaved frame: {0:?}")]
    Garbage(String),
    #[error("RTSP head larger than 64 KiB")]
    HeadTooLong,
    #[error("bad RTSP response: {0}")]
    Bad(String),
}

/// Incremental parser of what an RTSP server sends on a TCP connection.
#[derive(Debug, Default)]
pub struct Reader {
    buf: Vec<u8>,
}

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 1 << 20;

impl Reader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete item, `Ok(None)` when more bytes are needed.
    pub fn pull(&mut self) -> Result<Option<Item>, ParseError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        if self.buf[0] == b'$' {
            if self.buf.len() < 4 {
                return Ok(None);
            }
            let len = u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
            if self.buf.len() < 4 + len {
                return Ok(None);
            }
            let channel = self.buf[1];
            let payload = self.buf[4..4 + len].to_vec();
            self.buf.drain(..4 + len);
            return Ok(Some(Item::Interleaved { channel, payload }));
        }
        let prefix = &self.buf[..self.buf.len().min(5)];
        if !b"RTSP/".starts_with(prefix) {
            let shown = String::from_utf8_lossy(&self.buf[..self.buf.len().min(16)]).to_string();
            return Err(ParseError::Garbage(shown));
        }
        let Some(end) = crate::proto::http::find(&self.buf, b"\r\n\r\n") else {
            if self.buf.len() > MAX_HEAD {
                return Err(ParseError::HeadTooLong);
            }
            return Ok(None);
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| ParseError::Bad(format!("status line {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse::<usize>())
            .transpose()
            .map_err(|_| ParseError::Bad("Content-Length".into()))?
            .unwrap_or(0);
        if len > MAX_BODY {
            return Err(ParseError::Bad(format!("body of {len} bytes")));
        }
        if self.buf.len() < end + 4 + len {
            return Ok(None);
        }
        let body = self.buf[end + 4..end + 4 + len].to_vec();
        self.buf.drain(..end + 4 + len);
        Ok(Some(Item::Response {
            status,
            headers,
            body,
        }))
    }
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The control URL of the first video track in an SDP, resolved against `base`.
pub fn video_control(sdp: &str, base: &Url) -> Option<Url> {
    let mut in_video = false;
    let mut found_video = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            if found_video {
                break;
            }
            in_video = m.starts_with("video");
            found_video |= in_video;
        } else if in_video {
            if let Some(c) = line.strip_prefix("a=control:") {
                let c = c.trim();
                return Some(if c == "*" { base.clone() } else { base.join(c) });
            }
        }
    }
    found_video.then(|| base.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::{answer_challenge, Creds};
    use crate::testdata::fixture;

    /// The Authorization a DESCRIBE to rtsp://h/ sends after this 401.
    fn describe_answer(headers: &[(String, String)]) -> String {
        let creds = Creds {
            user: "admin",
            password: "x",
            basic: false,
        };
        answer_challenge(headers, creds, "DESCRIBE", "rtsp://h/").expect("an answer")
    }

    fn parse_one(bytes: &[u8]) -> Item {
        let mut r = Reader::default();
        r.push(bytes);
        r.pull().unwrap().expect("a whole response")
    }

    #[test]
    fn our_rtsp_captures_parse_with_their_quirks() {
        let own = crate::testdata::own;
        for (name, want) in [
            (
                "rtsp_describe_absolute.txt",
                "/Streaming/Channels/101/trackID=1?transportmode=unicast",
            ),
            ("rtsp_describe_relative.txt", "trackID=0"),
        ] {
            let Item::Response {
                status,
                headers,
                body,
            } = parse_one(&own(name))
            else {
                panic!("{name}")
            };
            assert_eq!(status, 200);
            let base = Url::parse(header(&headers, "content-base").unwrap()).unwrap();
            let track = video_control(&String::from_utf8_lossy(&body), &base).unwrap();
            assert!(track.path.ends_with(want), "{name}: {}", track.path);
        }
        let Item::Response { headers, .. } = parse_one(&own("rtsp_setup_padded_session.txt"))
        else {
            panic!()
        };
        let session = header(&headers, "session").unwrap();
        assert_eq!(session.split(';').next().unwrap().trim(), "20261130");
        let Item::Response {
            status, headers, ..
        } = parse_one(&own("rtsp_401_no_qop.txt"))
        else {
            panic!()
        };
        assert_eq!(status, 401);
        let a = describe_answer(&headers);
        assert!(
            a.contains("realm=\"IP Camera(C4321)\"") && !a.contains("qop="),
            "{a}"
        );
    }

    #[test]
    fn shared_rtsp_captures_parse() {
        for name in [
            "rtsp_dahua_options.txt",
            "rtsp_dahua_setup.txt",
            "rtsp_hikvision_setup.txt",
            "rtsp_longse_401_unauthorized.txt",
        ] {
            let Some(b) = fixture(name) else { return };
            assert!(matches!(parse_one(&b), Item::Response { .. }), "{name}");
        }
        if let Some(b) = fixture("rtsp_longse_401_unauthorized.txt") {
            let Item::Response {
                status, headers, ..
            } = parse_one(&b)
            else {
                panic!()
            };
            assert_eq!(status, 401);
            let a = describe_answer(&headers);
            assert!(
                a.starts_with("Digest ") && a.contains("realm=\"Surveillance Server\""),
                "{a}"
            );
        }
        if let Some(b) = fixture("rtsp_hikvision_setup.txt") {
            let Item::Response { headers, .. } = parse_one(&b) else {
                panic!()
            };
            assert_eq!(
                header(&headers, "session")
                    .unwrap()
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                "708345999"
            );
        }
    }

    #[test]
    fn shared_describe_captures_yield_the_video_track() {
        let cases = [
            (
                "rtsp_hikvision_describe.txt",
                "/Streaming/Channels/101/trackID=1?transportmode=unicast&profile=Profile_1",
            ),
            ("rtsp_dahua_describe_h264_aac_onvif.txt", "trackID=0"),
        ];
        for (name, want) in cases {
            let Some(b) = fixture(name) else { return };
            let Item::Response {
                status,
                headers,
                body,
            } = parse_one(&b)
            else {
                panic!()
            };
            assert_eq!(status, 200);
            let base = header(&headers, "content-base")
                .map(|b| Url::parse(b).unwrap())
                .unwrap();
            let track = video_control(&String::from_utf8_lossy(&body), &base).unwrap();
            assert!(track.path.ends_with(want), "{name}: {}", track.path);
        }
    }

    #[test]
    fn interleaved_packets_and_responses_split_across_reads() {
        let mut all = b"RTSP/1.0 200 OK\r\nCSeq: 5\r\nContent-Length: 3\r\n\r\nabc".to_vec();
        all.extend_from_slice(&[b'$', 0, 0, 12]);
        all.extend_from_slice(&[0x80; 12]);
        let mut r = Reader::default();
        let mut got = Vec::new();
        for b in &all {
            r.push(&[*b]);
            while let Some(item) = r.pull().unwrap() {
                got.push(item);
            }
        }
        assert_eq!(got.len(), 2);
        assert!(
            matches!(&got[1], Item::Interleaved { channel: 0, payload } if payload.len() == 12)
        );
    }

    proptest::proptest! {
        #[test]
        fn the_reader_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..16)) {
            let mut r = Reader::default();
            for c in chunks {
                r.push(&c);
                while let Ok(Some(_)) = r.pull() {}
            }
        }

        #[test]
        fn sdp_parsing_never_panics(s in ".{0,300}") {
            let _ = video_control(&s, &Url::parse("rtsp://h/x").unwrap());
        }
    }
}
