//! The RTSP probe: OPTIONS, DESCRIBE (Digest or Basic auth), SETUP over TCP-interleaved, PLAY,
//! then wait for one RTP packet of the video track, then TEARDOWN. A DESCRIBE that answers is
//! not a live stream; only a packet is. The wire format is [`crate::proto::rtsp`].

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proto::http::{answer_challenge, Creds, Url};
use crate::proto::rtsp::{header, video_control, Item, Reader};

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
            crate::release::VERSION
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
                if !self.basic && crate::proto::http::only_basic(&headers) {
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
