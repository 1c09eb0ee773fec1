//! A hostile camera: one TCP listener that answers every connection with one attack, as
//! compromised or broken firmware would. For the hostile-peer tests and benchmarks.
//!
//! Plain threads, one per connection, so an attack never depends on the agent's runtime.
//! Endless streams are paced (a few MB/s) so that the machine under test is not simply
//! starved by the attacker's own CPU.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes a second that endless attacks send.
pub const PACE: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// A multipart event stream: the boundary marker, then bytes without a newline, forever.
    BoundaryNoNewline,
    /// A multipart event stream of junk with no boundary in it, forever.
    JunkStream,
    /// A 200 with a JPEG whose header claims 65000 x 65000 pixels.
    JpegBomb,
    /// A 200 SOAP answer of 1 MiB of nested elements.
    DeepXml,
    /// A chunked body whose first chunk claims `ffffffffffffffff` bytes.
    ChunkOverflow,
    /// 401 with only a Basic challenge; counts every Authorization: Basic it is sent.
    BasicOnly,
    /// A response head dripped one byte every 20 ms, forever.
    SlowDrip,
    /// Content-Length 1 MB, 1000 bytes, then a reset.
    ResetMidBody,
    /// 200 text/html (a login page) for everything, including the event stream.
    WrongContentType,
    /// RTSP: OPTIONS and DESCRIBE answered, then interleaved binary frames forever, never
    /// another response.
    RtspInterleave,
    /// An endless response head (header lines forever).
    EndlessHeaders,
    /// ONVIF: every SOAP request answered with a SOAP 1.2 fault (HTTP 500,
    /// `ter:ActionNotSupported`), as firmware that half-implements ONVIF does.
    OnvifFault,
    /// A 200 SOAP answer of 1 MiB that is one malformed tag (`<a></bbbb…>`): the parser's
    /// error quotes it, and a health message carrying that would exceed the MQTT packet limit.
    LongErrorXml,
}

/// A running hostile camera; dropping it stops accepting.
pub struct HostileCamera {
    pub port: u16,
    pub attack: Attack,
    stop: Arc<AtomicBool>,
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
    /// Requests that carried `Authorization: Basic` (a password in clear).
    pub basic_seen: Arc<AtomicU64>,
}

impl HostileCamera {
    pub fn start(attack: Attack) -> std::io::Result<HostileCamera> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        l.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let basic_seen = Arc::new(AtomicU64::new(0));
        let (st, co, bs) = (stop.clone(), connections.clone(), basic_seen.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((s, _)) => {
                        co.fetch_add(1, Ordering::SeqCst);
                        let (st, bs) = (st.clone(), bs.clone());
                        std::thread::spawn(move || {
                            let _ = s.set_nonblocking(false);
                            let _ = serve(s, attack, &st, &bs);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(HostileCamera {
            port,
            attack,
            stop,
            connections,
            basic_seen,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn rtsp_url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/live", self.port)
    }

    /// A `[[camera]]` block whose attacked URL (event stream, snapshot, ONVIF or RTSP, as the
    /// attack needs) points at this camera.
    pub fn camera_block(&self, id: &str, password: &str) -> String {
        let base = format!(
            "\n[[camera]]\nid = \"{id}\"\nhost = \"127.0.0.1\"\nusername = \"admin\"\npassword = \"{password}\"\nhttp_base = \"{}\"\n",
            self.url("")
        );
        match self.attack {
            Attack::BoundaryNoNewline | Attack::JunkStream => {
                format!("{base}vendor = \"hikvision\"\nevents = [\"hikvision\"]\nprobe = false\n")
            }
            Attack::WrongContentType => format!(
                "{base}vendor = \"dahua\"\nevents = [\"dahua\"]\nsnapshot_url = \"{}\"\n",
                self.url("/snap.jpg")
            ),
            Attack::DeepXml | Attack::LongErrorXml | Attack::OnvifFault => format!(
                "{base}vendor = \"onvif\"\nevents = [\"onvif\"]\nonvif_url = \"{}\"\n",
                self.url("/onvif/device_service")
            ),
            Attack::RtspInterleave => {
                format!(
                    "{base}vendor = \"generic\"\nrtsp_url = \"{}\"\n",
                    self.rtsp_url()
                )
            }
            _ => format!(
                "{base}vendor = \"generic\"\nsnapshot_url = \"{}\"\n",
                self.url("/snap.jpg")
            ),
        }
    }
}

impl Drop for HostileCamera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads a request head (bounded); returns it as text.
fn read_head(s: &mut TcpStream) -> std::io::Result<String> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        if s.read(&mut b)? == 0 {
            break;
        }
        head.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Writes `fill` repeatedly at [`PACE`] until the peer goes or the camera stops.
fn endless(s: &mut TcpStream, stop: &AtomicBool, fill: &[u8]) -> std::io::Result<()> {
    let chunk: Vec<u8> = fill.iter().copied().cycle().take(64 * 1024).collect();
    let start = Instant::now();
    let mut sent = 0usize;
    while !stop.load(Ordering::SeqCst) {
        s.write_all(&chunk)?;
        sent += chunk.len();
        let due = Duration::from_secs_f64(sent as f64 / PACE as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    Ok(())
}

fn serve(
    mut s: TcpStream,
    attack: Attack,
    stop: &AtomicBool,
    basic: &AtomicU64,
) -> std::io::Result<()> {
    let head = read_head(&mut s)?;
    if head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("authorization: basic"))
    {
        basic.fetch_add(1, Ordering::SeqCst);
    }
    match attack {
        Attack::BoundaryNoNewline => {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: multipart/mixed; boundary=boundary\r\n\r\n--boundary")?;
            endless(&mut s, stop, b"xyzzy")
        }
        Attack::JunkStream => {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=myboundary\r\n\r\n")?;
            endless(&mut s, stop, b"\x00\xffjunk\r\n-- not a boundary --\r\n")
        }
        Attack::JpegBomb => {
            let j = crate::sim::jpeg::claiming(65000, 65000);
            write!(s, "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", j.len())?;
            s.write_all(&j)
        }
        Attack::DeepXml => {
            let mut x = Vec::with_capacity(1 << 20);
            while x.len() < (1 << 20) - 16 {
                x.extend_from_slice(b"<a:n>");
            }
            write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml\r\nContent-Length: {}\r\n\r\n", x.len())?;
            s.write_all(&x)
        }
        Attack::OnvifFault => {
            let x = r#"<?xml version="1.0" encoding="UTF-8"?><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:ter="http://www.onvif.org/ver10/error"><env:Body><env:Fault><env:Code><env:Value>env:Receiver</env:Value><env:Subcode><env:Value>ter:ActionNotSupported</env:Value></env:Subcode></env:Code><env:Reason><env:Text xml:lang="en">Optional Action Not Implemented</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>"#;
            write!(s, "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/soap+xml; charset=utf-8\r\nContent-Length: {}\r\n\r\n", x.len())?;
            s.write_all(x.as_bytes())
        }
        Attack::LongErrorXml => {
            let mut x = b"<a></".to_vec();
            x.resize((1 << 20) - 1, b'b');
            x.push(b'>');
            write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml\r\nContent-Length: {}\r\n\r\n", x.len())?;
            s.write_all(&x)
        }
        Attack::ChunkOverflow => s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n\xff\xd8\xff",
        ),
        Attack::BasicOnly => s.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\nContent-Length: 0\r\n\r\n",
        ),
        Attack::SlowDrip => {
            for b in b"HTTP/1.1 200 OK\r\nX-Drip: ".iter().chain(std::iter::repeat(&b'.')) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                s.write_all(&[*b])?;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        }
        Attack::ResetMidBody => {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 1000000\r\n\r\n\xff\xd8")?;
            s.write_all(&[0u8; 998])?;
            // SO_LINGER 0: close sends a reset.
            let _ = socket_linger_zero(&s);
            Ok(())
        }
        Attack::WrongContentType => {
            let body = b"<html><body>Please log in</body></html>";
            write!(s, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n", body.len())?;
            s.write_all(body)
        }
        Attack::RtspInterleave => {
            let cseq = |h: &str| {
                h.lines()
                    .find_map(|l| l.strip_prefix("CSeq:").map(|v| v.trim().to_string()))
                    .unwrap_or_else(|| "1".into())
            };
            write!(s, "RTSP/1.0 200 OK\r\nCSeq: {}\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY\r\n\r\n", cseq(&head))?;
            let h = read_head(&mut s)?;
            let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=control:track1\r\na=rtpmap:96 H264/90000\r\n";
            write!(s, "RTSP/1.0 200 OK\r\nCSeq: {}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", cseq(&h), sdp.len())?;
            let _ = read_head(&mut s)?;
            // Interleaved frames on channel 7 (no track), forever; never a response to SETUP.
            let mut frame = vec![b'$', 7, 0x04, 0x00];
            frame.extend(std::iter::repeat_n(0x5a, 1024));
            endless(&mut s, stop, &frame)
        }
        Attack::EndlessHeaders => {
            s.write_all(b"HTTP/1.1 200 OK\r\n")?;
            endless(&mut s, stop, b"X-Junk: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n")
        }
    }
}

fn socket_linger_zero(s: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a valid fd and a correctly sized struct.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
