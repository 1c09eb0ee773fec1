//! The download of a release: one HTTP/1.1 GET (HTTPS through rustls), streamed to a file and
//! hashed as it comes, never held in memory. Everything the server sends is bounded: the head
//! (the HTTP layer's limit), the body (never more than the manifest's size), each read (a
//! stall is a cut), the whole download (a deadline). A cut is resumed with `Range` from the
//! bytes already on disk when the server answers 206, started over when it answers 200, and
//! given up after a bounded number of attempts.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::durable::{Fs, FsFile};
use crate::proto::http::{read_head, Url};

/// The bounds of one download.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The whole download, every attempt included.
    pub deadline: Duration,
    /// Connections tried, the first included.
    pub attempts: u32,
    /// The longest wait for the next bytes before the connection counts as cut.
    pub stall: Duration,
    /// The pause before attempt n is n times this.
    pub pause: Duration,
}

impl Limits {
    /// For a release of `size` bytes: at least 2 minutes, plus a second per 64 KiB (a slow
    /// 4G link), at most an hour.
    pub fn for_size(size: u64) -> Limits {
        Limits {
            deadline: Duration::from_secs((120 + size / 65_536).min(3600)),
            attempts: 6,
            stall: Duration::from_secs(30),
            pause: Duration::from_millis(500),
        }
    }
}

/// Why a download failed: `reason()` goes into `update_failed`'s `detail.reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("the server answered HTTP {0}")]
    Status(u16),
    #[error("the download failed after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: String },
    #[error("the download did not finish within {0} s")]
    Timeout(u64),
    #[error("the disk is full: {0}")]
    NoSpace(String),
    #[error("cannot write the download: {0}")]
    Write(String),
    #[error("the server sent {got} bytes, the manifest says {size}")]
    BadSize { got: u64, size: u64 },
    #[error("the file's sha256 is {got}, the manifest says {want}")]
    BadSha256 { got: String, want: String },
    #[error("{0}")]
    Unsupported(String),
}

impl Failure {
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Status(_) | Failure::GaveUp { .. } | Failure::Timeout(_) => "download_failed",
            Failure::Unsupported(_) => "download_failed",
            Failure::NoSpace(_) => "no_space",
            Failure::Write(_) => "write_failed",
            Failure::BadSize { .. } => "bad_size",
            Failure::BadSha256 { .. } => "bad_sha256",
        }
    }
}

/// What a finished download tells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Body bytes received, over every attempt (more than the size when one started over).
    pub received: u64,
    pub attempts: u32,
    /// Attempts that went on from where a cut left off (206).
    pub resumed: u32,
}

/// How one attempt ended, short of success.
enum Cut {
    /// Worth another attempt (a cut, a stall, a refused connection, a 5xx).
    Again(String),
    Fatal(Failure),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Where the bytes go: the file, the running hash, the count.
struct Sink<'a> {
    fs: &'a dyn Fs,
    dest: &'a Path,
    file: Box<dyn FsFile>,
    hash: sha2::Sha256,
    have: u64,
    size: u64,
    received: u64,
    resumed: u32,
}

impl Sink<'_> {
    /// Starts the file over: a new, empty file (cutting the length alone would leave the
    /// write position where it was, and the next bytes after a hole).
    fn restart(&mut self) -> Result<(), Cut> {
        self.file = self
            .fs
            .create(self.dest)
            .map_err(|e| Cut::Fatal(write_failure(e)))?;
        self.hash = sha2::Sha256::new();
        self.have = 0;
        Ok(())
    }

    fn take(&mut self, bytes: &[u8]) -> Result<(), Cut> {
        if self.have + bytes.len() as u64 > self.size {
            return Err(Cut::Fatal(Failure::BadSize {
                got: self.have + bytes.len() as u64,
                size: self.size,
            }));
        }
        self.file
            .write_all(bytes)
            .map_err(|e| Cut::Fatal(write_failure(e)))?;
        self.hash.update(bytes);
        self.have += bytes.len() as u64;
        self.received += bytes.len() as u64;
        Ok(())
    }
}

fn write_failure(e: std::io::Error) -> Failure {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        Failure::NoSpace(e.to_string())
    } else {
        Failure::Write(e.to_string())
    }
}

/// Downloads `url` into `dest` (created or truncated through `fs`), expecting exactly `size`
/// bytes whose sha256 is `sha256`. On any failure the caller removes `dest`.
pub async fn fetch(
    url: &Url,
    tls: Option<Arc<rustls::ClientConfig>>,
    fs: &dyn Fs,
    dest: &Path,
    size: u64,
    sha256: &[u8; 32],
    limits: Limits,
) -> Result<Fetched, Failure> {
    if !matches!(url.scheme.as_str(), "http" | "https") {
        return Err(Failure::Unsupported(format!(
            "{}:// is not supported for updates (use http:// or https://)",
            url.scheme
        )));
    }
    if url.scheme == "https" && tls.is_none() {
        return Err(Failure::Unsupported(
            "no TLS configuration for https://".into(),
        ));
    }
    let file = fs.create(dest).map_err(write_failure)?;
    let mut sink = Sink {
        fs,
        dest,
        file,
        hash: sha2::Sha256::new(),
        have: 0,
        size,
        received: 0,
        resumed: 0,
    };
    let mut out = Fetched::default();
    let work = async {
        let mut last = String::new();
        for attempt in 1..=limits.attempts {
            out.attempts = attempt;
            if attempt > 1 {
                tokio::time::sleep(limits.pause * (attempt - 1)).await;
            }
            match attempt_once(url, tls.clone(), &mut sink, limits.stall).await {
                Ok(()) => return Ok(()),
                Err(Cut::Fatal(f)) => return Err(f),
                Err(Cut::Again(why)) => {
                    tracing::warn!(
                        attempt,
                        have = sink.have,
                        size,
                        "update download cut: {why}"
                    );
                    last = why;
                }
            }
        }
        Err(Failure::GaveUp {
            attempts: limits.attempts,
            last,
        })
    };
    match tokio::time::timeout(limits.deadline, work).await {
        Err(_) => return Err(Failure::Timeout(limits.deadline.as_secs())),
        Ok(r) => r?,
    }
    out.received = sink.received;
    out.resumed = sink.resumed;
    sink.file
        .sync_data()
        .map_err(|e| write_failure(std::io::Error::new(e.kind(), e.to_string())))?;
    let got: [u8; 32] = sink.hash.finalize().into();
    if got != *sha256 {
        return Err(Failure::BadSha256 {
            got: crate::release::hex(&got),
            want: crate::release::hex(sha256),
        });
    }
    Ok(out)
}

async fn connect(
    url: &Url,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Box<dyn Stream>, Cut> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| Cut::Again(format!("cannot connect to {}: {e}", url.host_port())))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Box::new(tcp)),
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from(url.host.clone()).map_err(|e| {
                Cut::Fatal(Failure::Unsupported(format!(
                    "{} is not a TLS server name: {e}",
                    crate::logs::clip(&url.host)
                )))
            })?;
            let s = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    // A certificate the CA does not vouch for will not change on a retry.
                    let fatal = e
                        .get_ref()
                        .and_then(|i| i.downcast_ref::<rustls::Error>())
                        .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
                    let why = format!("TLS with {}: {e}", url.host_port());
                    if fatal {
                        Cut::Fatal(Failure::Unsupported(why))
                    } else {
                        Cut::Again(why)
                    }
                })?;
            Ok(Box::new(s))
        }
    }
}

/// `bytes START-END/TOTAL` → (START, TOTAL).
fn content_range(v: &str) -> Option<(u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, _end) = span.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()?))
}

async fn attempt_once(
    url: &Url,
    tls: Option<Arc<rustls::ClientConfig>>,
    sink: &mut Sink<'_>,
    stall: Duration,
) -> Result<(), Cut> {
    let mut s = tokio::time::timeout(stall, connect(url, tls))
        .await
        .map_err(|_| Cut::Again("connecting timed out".into()))??;
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: camgw/{}\r\nConnection: close\r\nAccept-Encoding: identity\r\n",
        url.path,
        url.host_port(),
        crate::release::VERSION
    );
    if sink.have > 0 {
        req.push_str(&format!("Range: bytes={}-\r\n", sink.have));
    }
    req.push_str("\r\n");
    let io = |e: std::io::Error| Cut::Again(format!("connection failed: {e}"));
    tokio::time::timeout(stall, s.write_all(req.as_bytes()))
        .await
        .map_err(|_| Cut::Again("sending the request timed out".into()))?
        .map_err(io)?;
    let (status, headers, rest) = tokio::time::timeout(stall, read_head(&mut s))
        .await
        .map_err(|_| Cut::Again("no answer".into()))?
        .map_err(|e| Cut::Again(e.to_string()))?;
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    };
    match status {
        200 => {
            // A fresh answer (the server ignored the range, or this is the first attempt).
            if sink.have > 0 {
                sink.restart()?;
            }
        }
        206 if sink.have > 0 => match header("content-range").and_then(content_range) {
            Some((start, total)) if start == sink.have && total == sink.size => sink.resumed += 1,
            Some((_, total)) if total != sink.size => {
                return Err(Cut::Fatal(Failure::BadSize {
                    got: total,
                    size: sink.size,
                }))
            }
            _ => {
                sink.restart()?;
                return Err(Cut::Again(
                    "the server resumed from another offset: starting over".into(),
                ));
            }
        },
        500..=599 => return Err(Cut::Again(format!("HTTP {status}"))),
        other => return Err(Cut::Fatal(Failure::Status(other))),
    }
    if header("transfer-encoding").is_some_and(|v| !v.eq_ignore_ascii_case("identity")) {
        return Err(Cut::Fatal(Failure::Unsupported(
            "the server sent a chunked or encoded body; serve the file as is".into(),
        )));
    }
    if let Some(len) = header("content-length") {
        let len: u64 = len
            .trim()
            .parse()
            .map_err(|_| Cut::Again(format!("bad Content-Length {:?}", crate::logs::clip(len))))?;
        if sink.have + len != sink.size {
            return Err(Cut::Fatal(Failure::BadSize {
                got: sink.have + len,
                size: sink.size,
            }));
        }
    }
    sink.take(&rest)?;
    let mut buf = vec![0u8; 64 * 1024];
    while sink.have < sink.size {
        let n = tokio::time::timeout(stall, s.read(&mut buf))
            .await
            .map_err(|_| Cut::Again(format!("stalled for {} s", stall.as_secs())))?
            .map_err(io)?;
        if n == 0 {
            return Err(Cut::Again(format!(
                "the connection closed after {} of {} bytes",
                sink.have, sink.size
            )));
        }
        sink.take(&buf[..n])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_read_strictly() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, 200)));
        assert_eq!(content_range("bytes */200"), None);
        assert_eq!(content_range("items 1-2/3"), None);
        assert_eq!(content_range("bytes x-1/2"), None);
    }

    #[test]
    fn limits_grow_with_the_size_and_stay_bounded() {
        assert_eq!(Limits::for_size(0).deadline, Duration::from_secs(120));
        assert_eq!(
            Limits::for_size(64 << 20).deadline,
            Duration::from_secs(120 + 1024)
        );
        assert_eq!(
            Limits::for_size(u64::MAX).deadline,
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn every_failure_has_a_reason() {
        assert_eq!(Failure::Status(404).reason(), "download_failed");
        assert_eq!(Failure::NoSpace("x".into()).reason(), "no_space");
        assert_eq!(
            Failure::BadSha256 {
                got: "a".into(),
                want: "b".into()
            }
            .reason(),
            "bad_sha256"
        );
    }
}
