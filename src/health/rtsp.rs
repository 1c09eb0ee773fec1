//! The RTSP probe: OPTIONS, DESCRIBE (Digest or Basic auth), SETUP over TCP-interleaved, PLAY,
//! then wait for one RTP packet of the video track, then TEARDOWN. A DESCRIBE that answers is
//! not a live stream; only a packet is.
//!
//! [`Reader`] is the pure incremental parser (push bytes, pull responses and interleaved
//! packets); [`video_control`] picks the video track out of the SDP.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::{answer_challenge, Creds, Url};

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
        let Some(end) = crate::http::find(&self.buf, b"\r\n\r\n") else {
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

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
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

/// How the probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A video RTP packet arrived this long after PLAY was sent.
    Frames {
        first_packet: Duration,
    },
    AuthFailed,
    /// The camera offers only Basic auth and the config does not allow it.
    BasicOnly,
    /// The server answered but the stream could not be set up.
    Error(String),
    /// PLAY succeeded but no packet came in time.
    NoFrames,
    Unreachable(String),
}

struct Conn {
    s: TcpStream,
    r: Reader,
    cseq: u32,
    url: Url,
    creds: Option<(String, String)>,
    /// Whether the credentials may go out with Basic auth.
    basic: bool,
    auth: Option<Vec<(String, String)>>,
}

impl Conn {
    async fn read_item(&mut self) -> Result<Item, String> {
        let mut chunk = [0u8; 8192];
        loop {
            match self.r.pull() {
                Ok(Some(item)) => return Ok(item),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            let n = self.s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed by the camera".into());
            }
            self.r.push(&chunk[..n]);
        }
    }

    async fn send(
        &mut self,
        method: &str,
        url: &str,
        extra: &[(&str, String)],
    ) -> Result<(), String> {
        self.cseq += 1;
        let mut req = format!(
            "{method} {url} RTSP/1.0\r\nCSeq: {}\r\nUser-Agent: camgw/{}\r\n",
            self.cseq,
            env!("CARGO_PKG_VERSION")
        );
        if let (Some(hs), Some((u, p))) = (&self.auth, &self.creds) {
            let creds = Creds {
                user: u,
                password: p,
                basic: self.basic,
            };
            if let Some(a) = answer_challenge(hs, creds, method, url) {
                req.push_str(&format!("Authorization: {a}\r\n"));
            }
        }
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.s
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())
    }

    /// Sends a request and returns its response (skipping interleaved data), answering one
    /// 401 with the credentials.
    async fn call(
        &mut self,
        method: &str,
        url: &str,
        extra: &[(&str, String)],
    ) -> Result<(u16, Vec<(String, String)>, Vec<u8>), Outcome> {
        for attempt in 0..2 {
            self.send(method, url, extra)
                .await
                .map_err(Outcome::Error)?;
            let (status, headers, body) = loop {
                match self.read_item().await.map_err(Outcome::Error)? {
                    Item::Response {
                        status,
                        headers,
                        body,
                    } => break (status, headers, body),
                    Item::Interleaved { .. } => continue,
                }
            };
            if status == 401 {
                if attempt == 1 || self.creds.is_none() {
                    return Err(Outcome::AuthFailed);
                }
                if !self.basic && crate::http::only_basic(&headers) {
                    return Err(Outcome::BasicOnly);
                }
                self.auth = Some(headers);
                // Many cameras close the connection after a 401: answer on a fresh one.
                let s = TcpStream::connect((self.url.host.as_str(), self.url.port))
                    .await
                    .map_err(|e| Outcome::Error(format!("reconnect after 401: {e}")))?;
                let _ = s.set_nodelay(true);
                self.s = s;
                self.r = Reader::default();
                continue;
            }
            return Ok((status, headers, body));
        }
        Err(Outcome::AuthFailed)
    }
}

/// Runs the probe against `url`; the caller bounds it with a timeout (and gets `NoFrames`
/// when the timeout strikes after PLAY: see [`probe_with_deadline`]).
pub async fn probe(
    url: &Url,
    creds: Option<(&str, &str)>,
    basic: bool,
    deadline: Instant,
) -> Outcome {
    let mut url = url.clone();
    let creds = creds
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .or_else(|| url.userinfo.clone());
    url.userinfo = None;
    let left = || deadline.saturating_duration_since(Instant::now());
    let s = match tokio::time::timeout(left(), TcpStream::connect((url.host.as_str(), url.port)))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Outcome::Unreachable(e.to_string()),
        Err(_) => return Outcome::Unreachable("connect timed out".into()),
    };
    let _ = s.set_nodelay(true);
    let mut c = Conn {
        s,
        r: Reader::default(),
        cseq: 0,
        url: url.clone(),
        creds,
        basic,
        auth: None,
    };
    let steps = async {
        let target = url.absolute();
        let (st, _, _) = c.call("OPTIONS", &target, &[]).await?;
        if st >= 400 && st != 405 && st != 501 {
            return Err(Outcome::Error(format!("OPTIONS answered {st}")));
        }
        let (st, hs, body) = c
            .call("DESCRIBE", &target, &[("Accept", "application/sdp".into())])
            .await?;
        if st != 200 {
            return Err(Outcome::Error(format!("DESCRIBE answered {st}")));
        }
        let base = header(&hs, "content-base")
            .or_else(|| header(&hs, "content-location"))
            .and_then(|b| Url::parse(b).ok())
            .unwrap_or_else(|| url.clone());
        let sdp = String::from_utf8_lossy(&body);
        let track = video_control(&sdp, &base)
            .ok_or_else(|| Outcome::Error("the SDP has no video track".into()))?;
        let (st, hs, _) = c
            .call(
                "SETUP",
                &track.absolute(),
                &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1".into())],
            )
            .await?;
        if st != 200 {
            return Err(Outcome::Error(format!("SETUP answered {st}")));
        }
        let session = header(&hs, "session")
            .map(|s| s.split(';').next().unwrap_or("").trim().to_string())
            .ok_or_else(|| Outcome::Error("SETUP answer has no Session".into()))?;
        let channel = header(&hs, "transport")
            .and_then(|t| {
                t.split(';')
                    .find_map(|p| p.trim().strip_prefix("interleaved="))
            })
            .and_then(|i| i.split('-').next())
            .and_then(|c| c.parse::<u8>().ok())
            .unwrap_or(0);
        c.send(
            "PLAY",
            &base.absolute(),
            &[("Session", session.clone()), ("Range", "npt=0.000-".into())],
        )
        .await
        .map_err(Outcome::Error)?;
        let played = Instant::now();
        loop {
            match c.read_item().await.map_err(Outcome::Error)? {
                Item::Response { status, .. } if status != 200 => {
                    return Err(Outcome::Error(format!("PLAY answered {status}")))
                }
                Item::Response { .. } => {}
                Item::Interleaved {
                    channel: ch,
                    payload,
                } if ch == channel && payload.len() >= 12 && payload[0] >> 6 == 2 => {
                    let first_packet = played.elapsed();
                    let _ = c
                        .send("TEARDOWN", &base.absolute(), &[("Session", session)])
                        .await;
                    return Ok(first_packet);
                }
                Item::Interleaved { .. } => {}
            }
        }
    };
    // Track whether PLAY was reached to tell "no frames" from a stalled handshake.
    match tokio::time::timeout(left(), steps).await {
        Ok(Ok(first_packet)) => Outcome::Frames { first_packet },
        Ok(Err(o)) => o,
        Err(_) => {
            if c.cseq >= 4 {
                Outcome::NoFrames
            } else {
                Outcome::Error(format!("no answer to RTSP request {} in time", c.cseq))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::fixture;

    fn parse_one(bytes: &[u8]) -> Item {
        let mut r = Reader::default();
        r.push(bytes);
        r.pull().unwrap().expect("a whole response")
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
            let a = answer_challenge(
                &headers,
                Creds {
                    user: "admin",
                    password: "x",
                    basic: false,
                },
                "DESCRIBE",
                "rtsp://h/",
            )
            .unwrap();
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
