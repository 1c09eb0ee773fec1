//! The RTSP probe against a real RTSP server none of us wrote: GStreamer's gst-rtsp-server
//! serving a live H.264 test pattern (installed by .ci/run from Debian's packages).

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use camgw::health::rtsp::{probe, Outcome};
use camgw::proto::http::Url;

struct Gst(Child);

impl Drop for Gst {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gst_available() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start(port: u16, creds: Option<(&str, &str)>) -> Gst {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/gst_rtsp_server.py"
    );
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script).arg(port.to_string());
    if let Some((u, p)) = creds {
        cmd.args([u, p]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("gst-rtsp-server did not start");
    assert_eq!(line.trim(), "ready");
    Gst(child)
}

fn run(url: &Url, creds: Option<(&str, &str)>, timeout: Duration) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(probe(url, creds, false, Instant::now() + timeout))
}

#[test]
fn gstreamer_rtsp_server_with_and_without_credentials() {
    if !gst_available() {
        eprintln!("*** SKIPPED: GStreamer's RTSP server is not installed (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly) ***");
        return;
    }
    // Open: frames arrive.
    let port = common::free_port();
    let server = start(port, None);
    let url = Url::parse(&format!("rtsp://127.0.0.1:{port}/test")).unwrap();
    match run(&url, None, Duration::from_secs(10)) {
        Outcome::Frames { first_packet } => {
            eprintln!("gst open: first RTP packet after {first_packet:?}")
        }
        other => panic!("expected frames, got {other:?}"),
    }
    // Stopped: refused, which the health round reports as rtsp_error.
    drop(server);
    assert!(matches!(
        run(&url, None, Duration::from_secs(3)),
        Outcome::Unreachable(_)
    ));

    // Digest-protected.
    let port = common::free_port();
    let _server = start(port, Some(("viewer", "pa55")));
    let url = Url::parse(&format!("rtsp://127.0.0.1:{port}/test")).unwrap();
    match run(&url, Some(("viewer", "pa55")), Duration::from_secs(10)) {
        Outcome::Frames { first_packet } => {
            eprintln!("gst digest: first RTP packet after {first_packet:?}")
        }
        other => panic!("expected frames with digest, got {other:?}"),
    }
    assert_eq!(
        run(&url, Some(("viewer", "wrong")), Duration::from_secs(10)),
        Outcome::AuthFailed
    );
    assert_eq!(
        run(&url, None, Duration::from_secs(10)),
        Outcome::AuthFailed
    );
}
