//! One simulated camera: an HTTP port (snapshot, ONVIF) and an RTSP port on 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::proto::http::{digest, find};
use crate::sim::jpeg::{frame, Scene};

/// What the camera does; change it at any time through [`SimCamera::control`].
#[derive(Debug, Clone)]
pub struct SimControl {
    pub user: String,
    pub password: String,
    /// The password the camera now accepts (differs from `password` after "someone changed it").
    pub accepted_password: String,
    pub scene: Scene,
    pub frozen: bool,
    /// Accept connections but never answer.
    pub silent: bool,
    /// RTSP PLAY succeeds but no RTP packet is ever sent.
    pub no_frames: bool,
    /// Close the connection after every 401 (many Dahua and Hikvision firmwares do).
    pub close_after_401: bool,
    /// Camera clock minus real time.
    pub clock_offset_s: i64,
    /// Alternate good and failing (HTTP 500) snapshots.
    pub flap: bool,
    /// Serve snapshots without authentication (for comparisons with tools lacking Digest).
    pub open_snapshots: bool,
    pub manufacturer: String,
    pub model: String,
    pub reboots: u32,
    /// ONVIF pull-point lease the camera grants, and what it has seen.
    pub onvif_lease_s: i64,
    pub subscriptions: u32,
    pub renews: u32,
    pub unsubscribes: u32,
    /// Event stills (the vendor still paths: ISAPI picture, Dahua snapshot.cgi, the ONVIF
    /// snapshot URI): their size, how long the camera takes, whether it never answers.
    pub still_size: (u16, u16),
    pub still_delay_ms: u64,
    pub still_hang: bool,
    /// A Hikvision NVR: the camera path answers 404 with an ISAPI error, the StreamingProxy
    /// path serves the still.
    pub nvr: bool,
    /// Still requests answered, and refused with 503 because another was in flight (Dahua
    /// firmware serves one at a time).
    pub still_requests: u32,
    pub still_busy: u32,
}

impl SimControl {
    pub fn new(password: &str) -> SimControl {
        SimControl {
            user: "admin".into(),
            password: password.into(),
            accepted_password: password.into(),
            scene: Scene::Live,
            frozen: false,
            silent: false,
            no_frames: false,
            close_after_401: true,
            clock_offset_s: 0,
            flap: false,
            open_snapshots: false,
            manufacturer: "camgw-sim".into(),
            model: "SIM-4MP".into(),
            reboots: 0,
            onvif_lease_s: 60,
            subscriptions: 0,
            renews: 0,
            unsubscribes: 0,
            still_size: (1280, 720),
            still_delay_ms: 0,
            still_hang: false,
            nvr: false,
            still_requests: 0,
            still_busy: 0,
        }
    }
}

struct Shared {
    ctl: Mutex<SimControl>,
    counter: Mutex<u64>,
    /// Raw bytes for the open Hikvision alertStream / Dahua attach responses; an empty
    /// message cuts the streams.
    hik: tokio::sync::broadcast::Sender<Vec<u8>>,
    dahua: tokio::sync::broadcast::Sender<Vec<u8>>,
    /// ONVIF notifications waiting for the next PullMessages.
    onvif_queue: Mutex<std::collections::VecDeque<String>>,
    onvif_notify: tokio::sync::Notify,
    /// Still requests being answered now, and the still served (made once per size).
    stills_in_flight: std::sync::atomic::AtomicUsize,
    still: Mutex<Option<ServedStill>>,
}

/// A still as served: its size, and the JPEG.
type ServedStill = ((u16, u16), Arc<Vec<u8>>);

/// The vendor still paths the simulator serves.
fn is_still_path(path: &str) -> bool {
    path.starts_with("/ISAPI/Streaming/channels/101/picture")
        || path.starts_with("/ISAPI/ContentMgmt/StreamingProxy/channels/101/picture")
        || path.starts_with("/cgi-bin/snapshot.cgi")
        || path.starts_with("/onvif-http/snapshot")
}

/// A running simulated camera. Dropping it stops it.
pub struct SimCamera {
    pub http_port: u16,
    pub rtsp_port: u16,
    shared: Arc<Shared>,
    stop: Mutex<CancellationToken>,
}

impl SimCamera {
    pub async fn start(ctl: SimControl) -> std::io::Result<SimCamera> {
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let rtsp = TcpListener::bind("127.0.0.1:0").await?;
        let cam = SimCamera {
            http_port: http.local_addr()?.port(),
            rtsp_port: rtsp.local_addr()?.port(),
            shared: Arc::new(Shared {
                ctl: Mutex::new(ctl),
                counter: Mutex::new(0),
                hik: tokio::sync::broadcast::channel(256).0,
                dahua: tokio::sync::broadcast::channel(256).0,
                onvif_queue: Mutex::new(Default::default()),
                onvif_notify: tokio::sync::Notify::new(),
                stills_in_flight: Default::default(),
                still: Mutex::new(None),
            }),
            stop: Mutex::new(CancellationToken::new()),
        };
        cam.serve(http, rtsp);
        Ok(cam)
    }

    fn serve(&self, http: TcpListener, rtsp: TcpListener) {
        let stop = self.stop.lock().unwrap().clone();
        let (s1, s2) = (self.shared.clone(), self.shared.clone());
        let st = stop.clone();
        tokio::spawn(async move { accept_loop(http, st, s1, false).await });
        tokio::spawn(async move { accept_loop(rtsp, stop, s2, true).await });
    }

    pub fn control(&self) -> std::sync::MutexGuard<'_, SimControl> {
        self.shared.ctl.lock().unwrap()
    }

    pub fn snapshot_url(&self) -> String {
        format!("http://127.0.0.1:{}/snapshot.jpg", self.http_port)
    }
    pub fn onvif_url(&self) -> String {
        format!("http://127.0.0.1:{}/onvif/device_service", self.http_port)
    }
    pub fn rtsp_url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/live/main", self.rtsp_port)
    }
    pub fn http_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Connected event-stream clients: (Hikvision alertStream, Dahua attach).
    pub fn event_listeners(&self) -> (usize, usize) {
        (
            self.shared.hik.receiver_count(),
            self.shared.dahua.receiver_count(),
        )
    }

    /// A Hikvision `EventNotificationAlert` on the alertStream.
    pub fn hik_event(&self, event_type: &str, state: &str) {
        let _ = self.shared.hik.send(hik_part(event_type, state));
    }

    /// A Dahua event on the attach stream, e.g. ("VideoMotion", "Start").
    pub fn dahua_event(&self, code: &str, action: &str) {
        let _ = self.shared.dahua.send(dahua_part(code, action));
    }

    /// An ONVIF notification for the next PullMessages, e.g.
    /// ("tns1:RuleEngine/CellMotionDetector/Motion", "IsMotion", "true", false).
    pub fn onvif_event(&self, topic: &str, name: &str, value: &str, initialized: bool) {
        let now = time::OffsetDateTime::now_utc();
        let op = if initialized {
            "Initialized"
        } else {
            "Changed"
        };
        let xml = format!(
            r#"<wsnt:NotificationMessage><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">{topic}</wsnt:Topic><wsnt:Message><tt:Message UtcTime="{}" PropertyOperation="{op}"><tt:Source><tt:SimpleItem Name="VideoSourceConfigurationToken" Value="00000"/></tt:Source><tt:Data><tt:SimpleItem Name="{name}" Value="{value}"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>"#,
            soap_time(now)
        );
        self.shared.onvif_queue.lock().unwrap().push_back(xml);
        self.shared.onvif_notify.notify_waiters();
    }

    /// Sends the first half of a part, then cuts every event stream.
    pub fn cut_event_streams_mid_part(&self) {
        let h = hik_part("VMD", "active");
        let d = dahua_part("VideoMotion", "Start");
        let _ = self.shared.hik.send(h[..h.len() / 2].to_vec());
        let _ = self.shared.dahua.send(d[..d.len() / 2].to_vec());
        let _ = self.shared.hik.send(Vec::new());
        let _ = self.shared.dahua.send(Vec::new());
    }

    /// Unplugs the camera: both ports stop accepting (connections are refused).
    pub fn set_down(&self) {
        self.stop.lock().unwrap().cancel();
    }

    /// Waits (at most 5 s) until both ports refuse connections after [`SimCamera::set_down`].
    pub async fn wait_down(&self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline {
            let h = TcpStream::connect(("127.0.0.1", self.http_port))
                .await
                .is_err();
            let r = TcpStream::connect(("127.0.0.1", self.rtsp_port))
                .await
                .is_err();
            if h && r {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Plugs it back in on the same ports.
    pub async fn set_up(&self) -> std::io::Result<()> {
        *self.stop.lock().unwrap() = CancellationToken::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let h = TcpListener::bind(("127.0.0.1", self.http_port)).await;
            let r = TcpListener::bind(("127.0.0.1", self.rtsp_port)).await;
            match (h, r) {
                (Ok(h), Ok(r)) => {
                    self.serve(h, r);
                    return Ok(());
                }
                (Err(e), _) | (_, Err(e)) if tokio::time::Instant::now() > deadline => {
                    return Err(e)
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

impl Drop for SimCamera {
    fn drop(&mut self) {
        self.stop.lock().unwrap().cancel();
    }
}

async fn accept_loop(l: TcpListener, stop: CancellationToken, shared: Arc<Shared>, rtsp: bool) {
    loop {
        let s = tokio::select! {
            _ = stop.cancelled() => return,
            r = l.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
        };
        let (sh, st) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = st.cancelled() => {}
                _ = async { if rtsp { rtsp_conn(s, sh).await } else { http_conn(s, sh).await } } => {}
            }
        });
    }
}

/// Reads one request: (method, path, headers, body).
async fn read_request(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, String, Vec<(String, String)>, Vec<u8>)> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let mut lines = head.split("\r\n");
            let mut first = lines.next()?.split_whitespace();
            let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some((method, path, headers, body));
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn authorized(ctl: &SimControl, h: &[(String, String)], method: &str) -> bool {
    header(h, "authorization").is_some_and(|a| digest::verify(a, &ctl.accepted_password, method))
}

fn challenge() -> String {
    format!(
        r#"Digest realm="camgw-sim", qop="auth", nonce="{:016x}", opaque="5ccc""#,
        rand::random::<u64>()
    )
}

async fn http_conn(mut s: TcpStream, sh: Arc<Shared>) {
    let mut buf = Vec::new();
    while let Some((method, path, headers, body)) = read_request(&mut s, &mut buf).await {
        let ctl = sh.ctl.lock().unwrap().clone();
        if ctl.silent {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        let stream = if path.starts_with("/ISAPI/Event/notification/alertStream") {
            Some(("multipart/mixed; boundary=boundary", true))
        } else if path.starts_with("/cgi-bin/eventManager.cgi") {
            Some(("multipart/x-mixed-replace; boundary=myboundary", false))
        } else {
            None
        };
        if let Some((ct, hik)) = stream {
            if !authorized(&ctl, &headers, &method) {
                let resp = format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", challenge());
                let _ = s.write_all(resp.as_bytes()).await;
                return;
            }
            // Subscribed only once streaming, so `event_listeners` counts real streams.
            let mut rx = if hik {
                sh.hik.subscribe()
            } else {
                sh.dahua.subscribe()
            };
            let head =
                format!("HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nConnection: close\r\n\r\n");
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let mut hb = tokio::time::interval(Duration::from_secs(1));
            loop {
                let bytes = tokio::select! {
                    m = rx.recv() => match m {
                        Ok(b) if b.is_empty() => return,
                        Ok(b) => b,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return,
                    },
                    _ = hb.tick() => if hik { hik_part("videoloss", "inactive") } else { dahua_heartbeat() },
                };
                if s.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }
        if path.starts_with("/onvif/") && String::from_utf8_lossy(&body).contains("PullMessages") {
            // A short long-poll: wait (at most 1 s) for a notification.
            let waiting = sh.onvif_queue.lock().unwrap().is_empty();
            if waiting {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), sh.onvif_notify.notified()).await;
            }
        }
        if is_still_path(&path) {
            if !authorized(&ctl, &headers, &method) {
                let resp = format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", challenge());
                let _ = s.write_all(resp.as_bytes()).await;
                return;
            }
            if !serve_still(&mut s, &sh, &ctl, &path).await {
                return;
            }
            continue;
        }
        let (status, ctype, payload, close) = if path.starts_with("/onvif/") {
            onvif_answer(&sh, &ctl, &body)
        } else if path.starts_with("/snapshot") {
            if !ctl.open_snapshots && !authorized(&ctl, &headers, &method) {
                let resp = format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {}\r\nContent-Length: 0\r\n{}\r\n", challenge(), if ctl.close_after_401 { "Connection: close\r\n" } else { "" });
                if s.write_all(resp.as_bytes()).await.is_err() || ctl.close_after_401 {
                    return;
                }
                continue;
            }
            let n = {
                let mut c = sh.counter.lock().unwrap();
                *c += 1;
                *c
            };
            if ctl.flap && n % 2 == 0 {
                (500, "text/plain", b"encoder error".to_vec(), false)
            } else {
                (
                    200,
                    "image/jpeg",
                    frame(ctl.scene, if ctl.frozen { 42 } else { n }),
                    false,
                )
            }
        } else {
            (404, "text/plain", b"not found".to_vec(), false)
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        );
        if s.write_all(head.as_bytes()).await.is_err()
            || s.write_all(&payload).await.is_err()
            || close
        {
            return;
        }
    }
}

/// Answers one still request; false when the connection is done.
async fn serve_still(s: &mut TcpStream, sh: &Shared, ctl: &SimControl, path: &str) -> bool {
    use std::sync::atomic::Ordering;
    if ctl.nvr && path.starts_with("/ISAPI/Streaming/") {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<ResponseStatus version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema"><requestURL>/ISAPI/Streaming/channels/101/picture</requestURL><statusCode>4</statusCode><statusString>Invalid Operation</statusString><subStatusCode>notSupport</subStatusCode></ResponseStatus>"#;
        let head = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        return s.write_all(head.as_bytes()).await.is_ok()
            && s.write_all(body.as_bytes()).await.is_ok();
    }
    if sh.stills_in_flight.fetch_add(1, Ordering::SeqCst) > 0 {
        sh.stills_in_flight.fetch_sub(1, Ordering::SeqCst);
        sh.ctl.lock().unwrap().still_busy += 1;
        let body = "Service Unavailable";
        let head = format!("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n", body.len());
        return s.write_all(head.as_bytes()).await.is_ok()
            && s.write_all(body.as_bytes()).await.is_ok();
    }
    struct Done<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let _done = Done(&sh.stills_in_flight);
    if ctl.still_hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return false;
    }
    if ctl.still_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(ctl.still_delay_ms)).await;
    }
    let jpeg = {
        let mut g = sh.still.lock().unwrap();
        match &*g {
            Some((size, j)) if *size == ctl.still_size => j.clone(),
            _ => {
                let j = Arc::new(crate::sim::jpeg::still(ctl.still_size.0, ctl.still_size.1));
                *g = Some((ctl.still_size, j.clone()));
                j
            }
        }
    };
    sh.ctl.lock().unwrap().still_requests += 1;
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
        jpeg.len()
    );
    s.write_all(head.as_bytes()).await.is_ok() && s.write_all(&jpeg).await.is_ok()
}

fn onvif_answer(sh: &Shared, ctl: &SimControl, body: &[u8]) -> (u16, &'static str, Vec<u8>, bool) {
    let text = String::from_utf8_lossy(body);
    let now = time::OffsetDateTime::now_utc() + time::Duration::seconds(ctl.clock_offset_s);
    let env = |inner: String| {
        format!(r#"<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope" xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:ter="http://www.onvif.org/ver10/error"><SOAP-ENV:Body>{inner}</SOAP-ENV:Body></SOAP-ENV:Envelope>"#).into_bytes()
    };
    let ct = "application/soap+xml; charset=utf-8";
    if text.contains("GetSystemDateAndTime") {
        let inner = format!(
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings><tt:UTCDateTime><tt:Time><tt:Hour>{}</tt:Hour><tt:Minute>{}</tt:Minute><tt:Second>{}</tt:Second></tt:Time><tt:Date><tt:Year>{}</tt:Year><tt:Month>{}</tt:Month><tt:Day>{}</tt:Day></tt:Date></tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>",
            now.hour(), now.minute(), now.second(), now.year(), u8::from(now.month()), now.day()
        );
        return (200, ct, env(inner), false);
    }
    // Everything else needs a valid UsernameToken within the camera's clock window.
    if !token_ok(ctl, &text, now) {
        let fault = "<SOAP-ENV:Fault><SOAP-ENV:Code><SOAP-ENV:Value>SOAP-ENV:Sender</SOAP-ENV:Value><SOAP-ENV:Subcode><SOAP-ENV:Value>ter:NotAuthorized</SOAP-ENV:Value></SOAP-ENV:Subcode></SOAP-ENV:Code><SOAP-ENV:Reason><SOAP-ENV:Text xml:lang=\"en\">Sender not Authorized</SOAP-ENV:Text></SOAP-ENV:Reason></SOAP-ENV:Fault>";
        return (400, ct, env(fault.into()), false);
    }
    if text.contains("GetDeviceInformation") {
        let inner = format!("<tds:GetDeviceInformationResponse><tds:Manufacturer>{}</tds:Manufacturer><tds:Model>{}</tds:Model><tds:FirmwareVersion>V5.7.3 build 221010</tds:FirmwareVersion><tds:SerialNumber>SIM0001</tds:SerialNumber><tds:HardwareId>88</tds:HardwareId></tds:GetDeviceInformationResponse>", ctl.manufacturer, ctl.model);
        return (200, ct, env(inner), false);
    }
    let lease = ctl.onvif_lease_s;
    let times = format!(
        "<wsnt:CurrentTime>{}</wsnt:CurrentTime><wsnt:TerminationTime>{}</wsnt:TerminationTime>",
        soap_time(now),
        soap_time(now + time::Duration::seconds(lease))
    );
    let ns = r#"xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" xmlns:tev="http://www.onvif.org/ver10/events/wsdl" xmlns:wsa5="http://www.w3.org/2005/08/addressing""#;
    if text.contains("PullMessages") {
        let msgs: Vec<String> = sh.onvif_queue.lock().unwrap().drain(..).collect();
        let inner = format!(
            "<tev:PullMessagesResponse {ns}>{}{}</tev:PullMessagesResponse>",
            times.replace("wsnt:", "tev:"),
            msgs.join("")
        );
        return (200, ct, env(inner), false);
    }
    if text.contains("GetCapabilities") {
        // A LAN address the gateway may not reach: it must keep the configured host.
        let inner = "<tds:GetCapabilitiesResponse><tds:Capabilities><tt:Events><tt:XAddr>http://192.0.2.1/onvif/event_service</tt:XAddr><tt:WSPullPointSupport>true</tt:WSPullPointSupport></tt:Events><tt:Media><tt:XAddr>http://192.0.2.1/onvif/Media</tt:XAddr></tt:Media></tds:Capabilities></tds:GetCapabilitiesResponse>";
        return (200, ct, env(inner.into()), false);
    }
    if text.contains("GetProfiles") {
        let inner = r#"<trt:GetProfilesResponse xmlns:trt="http://www.onvif.org/ver10/media/wsdl"><trt:Profiles token="Profile_1" fixed="true"><tt:Name>mainStream</tt:Name></trt:Profiles><trt:Profiles token="Profile_2" fixed="true"><tt:Name>subStream</tt:Name></trt:Profiles></trt:GetProfilesResponse>"#;
        return (200, ct, env(inner.into()), false);
    }
    if text.contains("GetSnapshotUri") {
        let inner = r#"<trt:GetSnapshotUriResponse xmlns:trt="http://www.onvif.org/ver10/media/wsdl"><trt:MediaUri><tt:Uri>http://192.0.2.1/onvif-http/snapshot?Profile_1</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetSnapshotUriResponse>"#;
        return (200, ct, env(inner.into()), false);
    }
    if text.contains("CreatePullPointSubscription") {
        sh.ctl.lock().unwrap().subscriptions += 1;
        let inner = format!("<tev:CreatePullPointSubscriptionResponse {ns}><tev:SubscriptionReference><wsa5:Address>http://192.0.2.1/onvif/Subscription?Idx=7</wsa5:Address></tev:SubscriptionReference>{times}</tev:CreatePullPointSubscriptionResponse>");
        return (200, ct, env(inner), false);
    }
    if text.contains("<Renew") {
        sh.ctl.lock().unwrap().renews += 1;
        return (
            200,
            ct,
            env(format!(
                "<wsnt:RenewResponse {ns}>{}</wsnt:RenewResponse>",
                times
            )),
            false,
        );
    }
    if text.contains("<Unsubscribe") {
        sh.ctl.lock().unwrap().unsubscribes += 1;
        return (
            200,
            ct,
            env(format!("<wsnt:UnsubscribeResponse {ns}/>")),
            false,
        );
    }
    if text.contains("SystemReboot") {
        sh.ctl.lock().unwrap().reboots += 1;
        return (200, ct, env("<tds:SystemRebootResponse><tds:Message>Rebooting in 30 seconds</tds:Message></tds:SystemRebootResponse>".into()), false);
    }
    (400, ct, env("<SOAP-ENV:Fault><SOAP-ENV:Code><SOAP-ENV:Value>SOAP-ENV:Sender</SOAP-ENV:Value></SOAP-ENV:Code></SOAP-ENV:Fault>".into()), false)
}

fn token_ok(ctl: &SimControl, text: &str, camera_now: time::OffsetDateTime) -> bool {
    let Ok(t) = crate::proto::onvif::texts(text.as_bytes()) else {
        return false;
    };
    let get = |k: &str| t.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (Some(user), Some(pw), Some(nonce), Some(created)) = (
        get("Username"),
        get("Password"),
        get("Nonce"),
        get("Created"),
    ) else {
        return false;
    };
    use base64::Engine as _;
    let Ok(nonce) = base64::engine::general_purpose::STANDARD.decode(nonce.trim()) else {
        return false;
    };
    let Some(created_ms) = crate::clock::parse_rfc3339_ms(created.trim()) else {
        return false;
    };
    let skew = (created_ms / 1000 - camera_now.unix_timestamp()).abs();
    user == ctl.user
        && skew <= 10
        && crate::proto::onvif::password_digest(&nonce, created.trim(), &ctl.accepted_password)
            == pw.trim()
}

const SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=camgw-sim\r\nt=0 0\r\na=control:*\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/16000/1\r\na=control:trackID=1\r\n";

async fn rtsp_conn(mut s: TcpStream, sh: Arc<Shared>) {
    let mut buf = Vec::new();
    let mut playing = false;
    let mut seq: u16 = 0;
    loop {
        let req = if playing {
            tokio::select! {
                r = read_request(&mut s, &mut buf) => r,
                _ = tokio::time::sleep(Duration::from_millis(40)) => {
                    if !sh.ctl.lock().unwrap().no_frames {
                        seq = seq.wrapping_add(1);
                        let mut pkt = vec![b'$', 0, 0, 20, 0x80, 96];
                        pkt.extend_from_slice(&seq.to_be_bytes());
                        pkt.extend_from_slice(&[0u8; 16]);
                        if s.write_all(&pkt).await.is_err() { return; }
                    }
                    continue;
                }
            }
        } else {
            read_request(&mut s, &mut buf).await
        };
        let Some((method, url, headers, _)) = req else {
            return;
        };
        let ctl = sh.ctl.lock().unwrap().clone();
        if ctl.silent {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        let cseq = header(&headers, "cseq").unwrap_or("0").to_string();
        let base = url
            .split("/trackID")
            .next()
            .unwrap_or(&url)
            .trim_end_matches('/')
            .to_string();
        if method != "OPTIONS" && !authorized(&ctl, &headers, &method) {
            let resp = format!(
                "RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: {}\r\n\r\n",
                challenge()
            );
            if s.write_all(resp.as_bytes()).await.is_err() || ctl.close_after_401 {
                return;
            }
            continue;
        }
        let resp = match method.as_str() {
            "OPTIONS" => format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n"),
            "DESCRIBE" => format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\nContent-Base: {base}/\r\nContent-Length: {}\r\n\r\n{SDP}", SDP.len()),
            "SETUP" => format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 12345678;timeout=60\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"),
            "PLAY" => {
                playing = true;
                format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 12345678\r\nRange: npt=0.000-\r\n\r\n")
            }
            "TEARDOWN" => {
                let _ = s.write_all(format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n\r\n").as_bytes()).await;
                return;
            }
            _ => format!("RTSP/1.0 501 Not Implemented\r\nCSeq: {cseq}\r\n\r\n"),
        };
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn hik_part(event_type: &str, state: &str) -> Vec<u8> {
    let now = time::OffsetDateTime::now_utc();
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<EventNotificationAlert version=\"2.0\" xmlns=\"http://www.hikvision.com/ver20/XMLSchema\">\r\n<ipAddress>127.0.0.1</ipAddress>\r\n<channelID>1</channelID>\r\n<dateTime>{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+07:00</dateTime>\r\n<activePostCount>1</activePostCount>\r\n<eventType>{event_type}</eventType>\r\n<eventState>{state}</eventState>\r\n<eventDescription>{event_type} alarm</eventDescription>\r\n</EventNotificationAlert>\r\n",
        now.year(), u8::from(now.month()), now.day(), (now.hour() + 7) % 24, now.minute(), now.second()
    );
    format!("--boundary\r\nContent-Type: application/xml; charset=\"UTF-8\"\r\nContent-Length: {}\r\n\r\n{xml}", xml.len()).into_bytes()
}

fn dahua_part(code: &str, action: &str) -> Vec<u8> {
    let body = format!("Code={code};action={action};index=0");
    format!(
        "--myboundary\r\nContent-Type: text/plain\r\nContent-Length:{}\r\n\r\n{body}\r\n\r\n",
        body.len()
    )
    .into_bytes()
}

fn dahua_heartbeat() -> Vec<u8> {
    b"--myboundary\r\nContent-Type: text/plain\r\nContent-Length:9\r\n\r\nHeartbeat\r\n\r\n"
        .to_vec()
}

fn soap_time(t: time::OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
