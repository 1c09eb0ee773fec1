//! A small HTTP/1.1 client for talking to cameras: one connection per request
//! (`Connection: close`; many cameras close after a 401 anyway), Basic and Digest auth
//! ([`digest`]), Content-Length, chunked or read-to-close bodies with a size bound.
//!
//! Hand-written rather than reqwest: the firmware binary has a size budget, cameras need
//! Digest (which reqwest lacks), and the event streams (issue: motion events) need the raw
//! byte stream of a never-ending multipart response, which this module also exposes.
//! Callers bound every call with a timeout.

pub mod digest;

use std::fmt;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed `http://host[:port]/path?query` (also used for `rtsp://`).
#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// `user:password@` from the URL, if any (never printed).
    pub userinfo: Option<(String, String)>,
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Url {
    /// Without credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}:{}{}",
            self.scheme, self.host, self.port, self.path
        )
    }
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let (scheme, rest) = s.split_once("://").ok_or("not a URL")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            "rtsp" => 554,
            "rtsps" => 322,
            "mqtt" => 1883,
            "mqtts" => 8883,
            other => return Err(format!("unsupported scheme {other}")),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((ui, hp)) => {
                let (u, p) = ui.split_once(':').unwrap_or((ui, ""));
                (Some((u.to_string(), p.to_string())), hp)
            }
            None => (None, authority),
        };
        let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or("bad IPv6 host")?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("bad port {p}"))?,
            None => default_port,
        };
        let path = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(Url {
            scheme,
            host,
            port,
            path,
            userinfo,
        })
    }

    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL as sent on a request line (RTSP wants it absolute, without credentials).
    pub fn absolute(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host_port(), self.path)
    }

    /// `reported` (an address a camera gave for one of its services) with this URL's scheme,
    /// host and port: cameras behind NAT or with several addresses report one we may not
    /// reach, so the configured one is kept.
    pub fn rebased(&self, reported: &Url) -> Url {
        let mut u = self.clone();
        u.path = reported.path.clone();
        u
    }

    /// Resolves a (possibly relative) reference against this URL.
    pub fn join(&self, reference: &str) -> Url {
        if reference.contains("://") {
            if let Ok(u) = Url::parse(reference) {
                return u;
            }
        }
        let mut u = self.clone();
        if reference.starts_with('/') {
            u.path = reference.to_string();
        } else if self.path.ends_with('/') {
            // Cameras (Dahua) put a query inside the base: `...?channel=1&subtype=0/`.
            u.path = format!("{}{reference}", self.path);
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            u.path = format!("{base}/{reference}");
        }
        u
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("response body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Unsupported(String),
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Username and password for a camera, and whether they may go out with Basic auth (the
/// password in clear): only where the camera's config asks for it (`basic_auth = true`).
#[derive(Clone, Copy)]
pub struct Creds<'a> {
    pub user: &'a str,
    pub password: &'a str,
    pub basic: bool,
}

fn challenges(headers: &[(String, String)]) -> Vec<digest::Challenge> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("www-authenticate"))
        .flat_map(|(_, v)| digest::parse_challenges(v))
        .collect()
}

/// Whether a 401's challenges offer Basic auth and nothing else.
pub fn only_basic(headers: &[(String, String)]) -> bool {
    let c = challenges(headers);
    !c.is_empty()
        && c.iter()
            .all(|c| matches!(c, digest::Challenge::Basic { .. }))
}

/// What to tell a technician when a camera offers only Basic auth and its config does not
/// allow it.
pub const BASIC_ONLY: &str =
    "the camera offers only Basic auth, which sends the password in clear: \
    enable Digest on the camera, or set basic_auth = true for it to allow Basic";

const MAX_HEAD: usize = 64 * 1024;
/// The longest chunk-size line (`1a2b;ext=…`).
const MAX_CHUNK_LINE: usize = 1024;

/// Reads a response head; returns (status, headers, bytes already read past the head).
/// Linear in the bytes read, however they are dripped: the search for the blank line resumes
/// where the last read left off.
pub async fn read_head<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<(u16, Vec<(String, String)>, Vec<u8>), HttpError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut searched = 0;
    loop {
        if let Some(end) = find(&buf[searched..], b"\r\n\r\n").map(|i| i + searched) {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&buf[..end + 4]) {
                Ok(httparse::Status::Complete(_)) => {
                    let status = resp.code.unwrap_or(0);
                    let hs = resp
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).trim().to_string(),
                            )
                        })
                        .collect();
                    return Ok((status, hs, buf[end + 4..].to_vec()));
                }
                Ok(httparse::Status::Partial) => {
                    return Err(HttpError::Malformed("incomplete head".into()))
                }
                Err(e) => return Err(HttpError::Malformed(e.to_string())),
            }
        }
        searched = buf.len().saturating_sub(3);
        if buf.len() > MAX_HEAD {
            return Err(HttpError::Malformed("head too long".into()));
        }
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Err(HttpError::Malformed(if buf.is_empty() {
                "connection closed without a response".into()
            } else {
                "connection closed inside the response head".into()
            }));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Reads a response body after its head (`have`: bytes already read past the head): chunked,
/// by Content-Length, or to the end; at most `max` bytes.
pub async fn read_body<R: AsyncRead + Unpin>(
    r: &mut R,
    headers: &[(String, String)],
    mut have: Vec<u8>,
    max: usize,
) -> Result<Vec<u8>, HttpError> {
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    };
    let mut chunk = [0u8; 16 * 1024];
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        let mut out = Vec::new();
        let mut start = 0; // consumed prefix of `have`
        loop {
            // Need a size line (bounded: a line that never ends is malformed, not a wait).
            let mut searched = start;
            let line_end = loop {
                if let Some(i) = find(&have[searched..], b"\r\n") {
                    break searched + i;
                }
                if have.len() - start > MAX_CHUNK_LINE {
                    return Err(HttpError::Malformed("chunk size line too long".into()));
                }
                searched = have.len().saturating_sub(1).max(start);
                let n = r.read(&mut chunk).await?;
                if n == 0 {
                    return Err(HttpError::Malformed("chunked body cut short".into()));
                }
                have.extend_from_slice(&chunk[..n]);
            };
            if line_end - start > MAX_CHUNK_LINE {
                return Err(HttpError::Malformed("chunk size line too long".into()));
            }
            let line = String::from_utf8_lossy(&have[start..line_end]).to_string();
            let digits = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(digits, 16)
                .ok()
                .filter(|_| !digits.starts_with('+'))
                .ok_or_else(|| {
                    HttpError::Malformed(format!("bad chunk size {:?}", crate::logs::clip(&line)))
                })?;
            start = line_end + 2;
            if size == 0 {
                return Ok(out);
            }
            // Checked: a size near usize::MAX must be refused, not wrap around.
            if size > max.saturating_sub(out.len()) {
                return Err(HttpError::TooLarge(max));
            }
            let need = start + size + 2;
            while have.len() < need {
                let n = r.read(&mut chunk).await?;
                if n == 0 {
                    return Err(HttpError::Malformed("chunked body cut short".into()));
                }
                have.extend_from_slice(&chunk[..n]);
            }
            out.extend_from_slice(&have[start..start + size]);
            start += size + 2;
            // Drop what is consumed once it is at least half the buffer (amortised O(1) a byte).
            if start >= have.len() / 2 {
                have.drain(..start);
                start = 0;
            }
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = Some(len.trim())
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                HttpError::Malformed(format!("bad Content-Length {:?}", crate::logs::clip(len)))
            })?;
        if len > max {
            return Err(HttpError::TooLarge(max));
        }
        while have.len() < len {
            let n = r.read(&mut chunk).await?;
            if n == 0 {
                return Err(HttpError::Malformed(
                    "body shorter than Content-Length".into(),
                ));
            }
            have.extend_from_slice(&chunk[..n]);
        }
        have.truncate(len);
        Ok(have)
    } else {
        loop {
            if have.len() > max {
                return Err(HttpError::TooLarge(max));
            }
            let n = r.read(&mut chunk).await?;
            if n == 0 {
                return Ok(have);
            }
            have.extend_from_slice(&chunk[..n]);
        }
    }
}

fn request_bytes(url: &Url, method: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: camgw/{}\r\nConnection: close\r\n",
        url.path,
        url.host_port(),
        crate::release::VERSION
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Opens a connection to `url` and sends one request; returns the stream positioned after
/// the response head, with the head.
pub async fn open(
    url: &Url,
    method: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<(TcpStream, u16, Vec<(String, String)>, Vec<u8>), HttpError> {
    if url.scheme != "http" {
        return Err(HttpError::Unsupported(format!(
            "{} is not supported for camera requests (use http://)",
            url.scheme
        )));
    }
    let mut s = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(HttpError::Connect)?;
    let _ = s.set_nodelay(true);
    s.write_all(&request_bytes(url, method, headers, body))
        .await?;
    let (status, hs, rest) = read_head(&mut s).await?;
    Ok((s, status, hs, rest))
}

/// One request without authentication.
pub async fn request(
    url: &Url,
    method: &str,
    headers: &[(&str, String)],
    body: &[u8],
    max_body: usize,
) -> Result<Response, HttpError> {
    let (mut s, status, hs, rest) = open(url, method, headers, body).await?;
    let body = if method == "HEAD" || status == 204 || status == 304 {
        Vec::new()
    } else {
        read_body(&mut s, &hs, rest, max_body).await?
    };
    Ok(Response {
        status,
        headers: hs,
        body,
    })
}

/// The `Authorization` header for a 401 with these headers, if we can answer it.
pub fn answer_challenge(
    headers: &[(String, String)],
    creds: Creds<'_>,
    method: &str,
    uri: &str,
) -> Option<String> {
    let mut challenges = challenges(headers);
    if !creds.basic {
        challenges.retain(|c| !matches!(c, digest::Challenge::Basic { .. }));
    }
    let c = digest::best(&challenges)?;
    let cnonce = format!("{:016x}", rand::random::<u64>());
    Some(digest::authorization(
        c,
        creds.user,
        creds.password,
        method,
        uri,
        1,
        &cnonce,
    ))
}

/// A request that answers a 401 challenge (Basic or Digest) once, on a new connection.
pub async fn request_auth(
    url: &Url,
    method: &str,
    headers: &[(&str, String)],
    body: &[u8],
    creds: Option<Creds<'_>>,
    max_body: usize,
) -> Result<Response, HttpError> {
    let first = request(url, method, headers, body, max_body).await?;
    let Some(creds) = creds else {
        return Ok(first);
    };
    if first.status != 401 {
        return Ok(first);
    }
    let Some(auth) = answer_challenge(&first.headers, creds, method, &url.path) else {
        return Ok(first);
    };
    let mut hs: Vec<(&str, String)> = headers.to_vec();
    hs.push(("Authorization", auth));
    request(url, method, &hs, body, max_body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ours, in the form a Dahua/KBVision camera answers: Digest with qop and opaque.
    #[test]
    fn our_dahua_401_is_answered_with_digest() {
        let x = crate::testdata::own("dahua_http_401.txt");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (status, headers, rest) = rt.block_on(read_head(&mut &x[..])).unwrap();
        assert_eq!((status, rest.len()), (401, 0));
        let creds = Creds {
            user: "admin",
            password: "x",
            basic: false,
        };
        let a = answer_challenge(&headers, creds, "GET", "/cgi-bin/snapshot.cgi").unwrap();
        for part in [
            "Digest ",
            "realm=\"Login to 4K05DCFPAZ00112\"",
            "qop=auth",
            "opaque=\"7b35ab0bd6e7a5dc2cf1f1b4f08e93dd0f0a22a1\"",
            "uri=\"/cgi-bin/snapshot.cgi\"",
        ] {
            assert!(a.contains(part), "{part} in {a}");
        }
    }

    #[test]
    fn urls_parse_with_default_and_explicit_ports_and_hide_credentials() {
        let u = Url::parse(
            "http://admin:pw@192.168.1.64:8080/ISAPI/Streaming/channels/101/picture?x=1",
        )
        .unwrap();
        assert_eq!(u.host, "192.168.1.64");
        assert_eq!(u.port, 8080);
        assert_eq!(u.path, "/ISAPI/Streaming/channels/101/picture?x=1");
        assert_eq!(u.userinfo, Some(("admin".into(), "pw".into())));
        assert!(!u.to_string().contains("pw"));
        assert_eq!(Url::parse("rtsp://cam/stream1").unwrap().port, 554);
        assert_eq!(Url::parse("mqtts://broker").unwrap().port, 8883);
        assert_eq!(Url::parse("mqtt://10.0.0.1:1884/").unwrap().port, 1884);
        assert_eq!(Url::parse("http://cam").unwrap().path, "/");
        assert_eq!(Url::parse("http://[fe80::1]:81/x").unwrap().host, "fe80::1");
        assert!(Url::parse("ftp://x").is_err());
    }

    #[test]
    fn relative_references_join_like_rtsp_control_urls() {
        let base = Url::parse("rtsp://10.0.0.5:554/cam/realmonitor?channel=1&subtype=0/").unwrap();
        assert_eq!(
            base.join("trackID=0").path,
            "/cam/realmonitor?channel=1&subtype=0/trackID=0"
        );
        let base = Url::parse("rtsp://h/live").unwrap();
        assert_eq!(base.join("track1").path, "/live/track1");
        assert_eq!(base.join("rtsp://other:10554/x").host, "other");
    }

    #[tokio::test]
    async fn bodies_by_length_chunked_and_to_close() {
        for (raw, want) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA"[..], &b"hello"[..]),
            (&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n"[..], &b"hello"[..]),
            (&b"HTTP/1.0 200 OK\r\n\r\nhello"[..], &b"hello"[..]),
        ] {
            let mut r = raw;
            let (status, hs, rest) = read_head(&mut r).await.unwrap();
            assert_eq!(status, 200);
            assert_eq!(read_body(&mut r, &hs, rest, 100).await.unwrap(), want);
        }
        for (raw, what) in [
            // The chunk size that overflowed the size arithmetic and panicked the health task.
            (&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nx"[..], "too large"),
            (&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nfffffffffffffffe\r\n"[..], "too large"),
            (&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n"[..], "bad chunk"),
            (&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n"[..], "bad chunk"),
            (&b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"[..], "bad Content-Length"),
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n"[..], "bad Content-Length"),
        ] {
            let mut r = raw;
            let (_, hs, rest) = read_head(&mut r).await.unwrap();
            let e = read_body(&mut r, &hs, rest, 100).await.unwrap_err().to_string();
            assert!(e.contains(what) || (what == "too large" && e.contains("exceeds")), "{e}");
        }
        // A chunk-size line that never ends is refused once it is longer than any real one.
        let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        raw.extend(std::iter::repeat_n(b'0', 100_000));
        let mut r = &raw[..];
        let (_, hs, rest) = read_head(&mut r).await.unwrap();
        let e = read_body(&mut r, &hs, rest, 100).await.unwrap_err();
        assert!(e.to_string().contains("too long"), "{e}");
        let mut r = &b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n"[..];
        let (_, hs, rest) = read_head(&mut r).await.unwrap();
        assert!(matches!(
            read_body(&mut r, &hs, rest, 100).await,
            Err(HttpError::TooLarge(100))
        ));
    }
}
