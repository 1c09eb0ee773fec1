//! `camgw discover`: finds ONVIF cameras with WS-Discovery (a SOAP `Probe` for
//! `dn:NetworkVideoTransmitter` sent over UDP to 239.255.255.250:3702 from a chosen
//! interface, and optionally unicast to given addresses), asks each for its device
//! information when credentials are given, and prints a ready-to-paste `[[camera]]` block
//! per camera with the vendor guessed and that vendor's usual snapshot and RTSP URLs.
//!
//! The probe and the `ProbeMatches` parser are pure; the socket work is in [`discover`].

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use serde::Serialize;

use crate::proto::http::{Creds, Url};
use crate::proto::onvif::device;
use crate::proto::wsdiscovery::{parse_matches, probe, Match, MULTICAST, PORT};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    Hikvision,
    Dahua,
    Onvif,
}

impl Vendor {
    pub fn name(self) -> &'static str {
        match self {
            Vendor::Hikvision => "hikvision",
            Vendor::Dahua => "dahua",
            Vendor::Onvif => "onvif",
        }
    }
}

/// Guesses the vendor from what the camera says about itself: the manufacturer from
/// GetDeviceInformation when known, else the `name` and `hardware` scopes. KBVision and
/// Imou are Dahua inside; HiLook and EZVIZ are Hikvision inside.
pub fn guess_vendor(manufacturer: Option<&str>, m: &Match) -> Vendor {
    let mut hay = String::new();
    for s in [
        manufacturer.map(String::from),
        m.scope("name"),
        m.scope("hardware"),
    ]
    .into_iter()
    .flatten()
    {
        hay.push_str(&s.to_ascii_lowercase());
        hay.push(' ');
    }
    let hw = m.scope("hardware").unwrap_or_default().to_ascii_uppercase();
    if ["hikvision", "hilook", "ezviz"]
        .iter()
        .any(|v| hay.contains(v))
        || hw.starts_with("DS-")
    {
        Vendor::Hikvision
    } else if ["dahua", "kbvision", "imou", "lechange"]
        .iter()
        .any(|v| hay.contains(v))
        || ["DH-", "IPC-H", "KX-", "IPC-K"]
            .iter()
            .any(|p| hw.starts_with(p))
    {
        Vendor::Dahua
    } else {
        Vendor::Onvif
    }
}

/// One camera found.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub host: String,
    pub vendor: Vendor,
    pub device_service: String,
    pub endpoint: String,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    /// Why the device information could not be read (when credentials were given).
    pub info_error: Option<String>,
    pub scopes: Vec<String>,
}

/// A camera id from the address: `cam-192-168-1-64`.
pub fn camera_id(host: &str) -> String {
    let s: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let mut id = format!("cam-{}", s.trim_matches('-'));
    id.truncate(64);
    id
}

/// The `[[camera]]` block for a camera found. The password is never printed: the
/// technician fills it in.
pub fn camera_block(f: &Found, username: Option<&str>) -> String {
    let h = &f.host;
    let (snapshot, rtsp) = match f.vendor {
        Vendor::Hikvision => (
            Some(format!("http://{h}/ISAPI/Streaming/channels/101/picture")),
            Some(format!("rtsp://{h}:554/Streaming/Channels/101")),
        ),
        Vendor::Dahua => (
            Some(format!("http://{h}/cgi-bin/snapshot.cgi?channel=1")),
            Some(format!(
                "rtsp://{h}:554/cam/realmonitor?channel=1&subtype=0"
            )),
        ),
        Vendor::Onvif => (None, None),
    };
    let what = [f.manufacturer.as_deref(), f.model.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let mut s = format!(
        "# {} at {} ({})\n[[camera]]\nid = \"{}\"\nvendor = \"{}\"\nhost = \"{h}\"\n",
        if what.is_empty() {
            "ONVIF camera".to_string()
        } else {
            what
        },
        f.device_service,
        f.endpoint,
        camera_id(h),
        f.vendor.name()
    );
    s.push_str(&format!("username = \"{}\"\n", username.unwrap_or("admin")));
    s.push_str("password = \"\"                   # fill in: never printed by camgw\n");
    if let Some(u) = snapshot {
        s.push_str(&format!("snapshot_url = \"{u}\"\n"));
    }
    if let Some(u) = rtsp {
        s.push_str(&format!("rtsp_url = \"{u}\"\n"));
    }
    s.push_str(&format!("onvif_url = \"{}\"\n", f.device_service));
    s.push_str(&format!("events = [\"{}\"]\n", f.vendor.name()));
    s
}

pub struct Args<'a> {
    /// An interface name (`eth0`) or one of this box's IPv4 addresses; None: the default.
    pub interface: Option<&'a str>,
    /// Extra unicast targets (cameras on a routed subnet).
    pub to: Vec<SocketAddr>,
    pub timeout: Duration,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
}

/// The IPv4 address of an interface given by name or address.
pub fn interface_addr(iface: &str) -> Result<Ipv4Addr, String> {
    if let Ok(a) = iface.parse::<Ipv4Addr>() {
        return Ok(a);
    }
    let mut found = None;
    let mut names = Vec::new();
    // SAFETY: getifaddrs fills a linked list we only read and then free.
    unsafe {
        let mut ifs: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut ifs) != 0 {
            return Err(format!(
                "cannot list interfaces: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut p = ifs;
        while !p.is_null() {
            let ifa = &*p;
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                .to_string_lossy()
                .into_owned();
            if !ifa.ifa_addr.is_null() && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if name == iface && found.is_none() {
                    found = Some(addr);
                }
                names.push(format!("{name} ({addr})"));
            }
            p = ifa.ifa_next;
        }
        libc::freeifaddrs(ifs);
    }
    found.ok_or_else(|| {
        format!(
            "no IPv4 interface \"{iface}\" (this box has: {})",
            names.join(", ")
        )
    })
}

/// Sends the probe (multicast on the interface, and to every `to`), collects answers until
/// `timeout`, and follows up each camera with GetDeviceInformation when credentials are given.
pub async fn discover(a: Args<'_>) -> anyhow::Result<Vec<Found>> {
    use anyhow::Context;
    let local = match a.interface {
        Some(i) => interface_addr(i).map_err(anyhow::Error::msg)?,
        None => Ipv4Addr::UNSPECIFIED,
    };
    let sock = std::net::UdpSocket::bind(SocketAddrV4::new(local, 0))
        .with_context(|| format!("cannot bind a UDP socket on {local}"))?;
    if !local.is_unspecified() {
        // SAFETY: setsockopt with a valid ip_mreqn for IP_MULTICAST_IF (the kernel also takes
        // a bare in_addr, but emulators such as qemu-user only translate the struct forms).
        let rc = unsafe {
            let req = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr { s_addr: 0 },
                imr_address: libc::in_addr {
                    s_addr: u32::from(local).to_be(),
                },
                imr_ifindex: 0,
            };
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                &req as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::ip_mreqn>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            // The socket is bound to the interface's address; the multicast route decides.
            eprintln!(
                "camgw discover: cannot pin multicast to {local} ({}); the probe follows the multicast route",
                std::io::Error::last_os_error()
            );
        }
    }
    sock.set_multicast_ttl_v4(1).ok();
    sock.set_nonblocking(true)?;
    let sock = tokio::net::UdpSocket::from_std(sock)?;
    let id = format!(
        "urn:uuid:{}",
        crate::record::format_id(crate::record::new_id())
    );
    let msg = probe(&id);
    let multicast_sent = sock
        .send_to(msg.as_bytes(), SocketAddrV4::new(MULTICAST, PORT))
        .await;
    if let Err(e) = &multicast_sent {
        if a.to.is_empty() {
            anyhow::bail!("cannot send the multicast probe from {local}: {e} (choose an interface with --interface)");
        }
    }
    for t in &a.to {
        sock.send_to(msg.as_bytes(), t)
            .await
            .with_context(|| format!("cannot send a probe to {t}"))?;
    }
    let deadline = tokio::time::Instant::now() + a.timeout;
    let mut seen: Vec<(String, Match)> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let r = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await;
        let Ok(Ok((n, from))) = r else { break };
        let Ok((relates, matches)) = parse_matches(&buf[..n]) else {
            continue; // not an answer (our own multicast echo, another probe, noise)
        };
        if relates.as_deref().is_some_and(|r| r != id) {
            continue;
        }
        for m in matches {
            if !seen
                .iter()
                .any(|(_, s)| s.endpoint == m.endpoint && !m.endpoint.is_empty())
            {
                seen.push((from.ip().to_string(), m));
            }
        }
    }
    let mut found = Vec::new();
    for (from, m) in seen {
        let xaddr = m
            .xaddrs
            .iter()
            .filter_map(|x| Url::parse(x).ok().map(|u| (x.clone(), u)))
            .find(|(_, u)| !u.host.contains(':')) // prefer IPv4
            .or_else(|| {
                m.xaddrs
                    .first()
                    .and_then(|x| Url::parse(x).ok().map(|u| (x.clone(), u)))
            });
        let (service, host, url) = match xaddr {
            Some((x, u)) => (x, u.host.clone(), Some(u)),
            None => (
                format!("http://{from}/onvif/device_service"),
                from.clone(),
                None,
            ),
        };
        let (mut manufacturer, mut model, mut firmware, mut info_error) = (None, None, None, None);
        if let (Some(user), Some(url)) = (a.username, &url) {
            let creds = Creds {
                user,
                password: a.password.unwrap_or(""),
                basic: false,
            };
            let now = || crate::clock::Clock::now_ms(&crate::clock::SystemClock);
            match tokio::time::timeout(
                Duration::from_secs(5),
                device::probe(url, Some(creds), Duration::from_secs(5), now),
            )
            .await
            {
                Ok(device::Outcome::Ok { info: Some(i), .. }) => {
                    manufacturer = Some(i.manufacturer);
                    model = Some(i.model);
                    firmware = Some(i.firmware);
                }
                Ok(device::Outcome::AuthFailed { .. }) => {
                    info_error = Some("credentials refused".into())
                }
                Ok(device::Outcome::Ok { info: None, .. }) => {
                    info_error = Some("no device information".into())
                }
                Ok(device::Outcome::Unreachable(e) | device::Outcome::Error(e)) => {
                    info_error = Some(e)
                }
                Err(_) => info_error = Some("no answer within 5 s".into()),
            }
        }
        if model.is_none() {
            model = m.scope("hardware");
        }
        found.push(Found {
            vendor: guess_vendor(manufacturer.as_deref(), &m),
            host,
            device_service: service,
            endpoint: m.endpoint.clone(),
            manufacturer: manufacturer.or_else(|| m.scope("name")),
            model,
            firmware,
            info_error,
            scopes: m.scopes.clone(),
        });
    }
    found.sort_by(|a, b| a.host.cmp(&b.host));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HIK: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:wsadis="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl"><env:Header><wsadis:MessageID>urn:uuid:a1b2</wsadis:MessageID><wsadis:RelatesTo>urn:uuid:probe-1</wsadis:RelatesTo><wsadis:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsadis:To><wsadis:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsadis:Action></env:Header><env:Body><d:ProbeMatches><d:ProbeMatch><wsadis:EndpointReference><wsadis:Address>urn:uuid:4419a8b0-a6f1-11b3-8205-a41437c1d2e8</wsadis:Address></wsadis:EndpointReference><d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types><d:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/Profile/Streaming onvif://www.onvif.org/hardware/DS-2CD2043G0-I onvif://www.onvif.org/name/HIKVISION%20DS-2CD2043G0-I onvif://www.onvif.org/location/city/hangzhou</d:Scopes><d:XAddrs>http://[fe80::a614:37ff:fec1:d2e8]/onvif/device_service http://192.168.1.64/onvif/device_service</d:XAddrs><d:MetadataVersion>10</d:MetadataVersion></d:ProbeMatch></d:ProbeMatches></env:Body></env:Envelope>"#;

    #[test]
    fn our_probematches_capture_parses() {
        let (relates, m) =
            parse_matches(&crate::testdata::own("wsdiscovery_probematches.xml")).unwrap();
        assert_eq!(
            relates.as_deref(),
            Some("uuid:9d1e2f30-1111-4222-8333-444455556666")
        );
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].xaddrs, vec!["http://10.20.30.43/onvif/device_service"]);
        assert_eq!(m[0].scope("hardware").as_deref(), Some("KX-C2121S5"));
        // KBVision is Dahua inside.
        assert_eq!(guess_vendor(None, &m[0]), Vendor::Dahua);
    }

    #[test]
    fn the_shared_probematches_capture_parses() {
        let Some(xml) = crate::testdata::fixture("wsdiscovery_probematches_agsh_mockup.xml") else {
            return;
        };
        let (relates, m) = parse_matches(&xml).unwrap();
        assert_eq!(
            relates.as_deref(),
            Some("urn:uuid:01234567-dead-beef-baad-abcdeffedcba")
        );
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].endpoint, "uuid:c9790c3a-701b-464d-a189-0060351c8ada");
        assert_eq!(m[0].types, vec!["dn:NetworkVideoTransmitter", "tds:Device"]);
        assert_eq!(m[0].scope("hardware").as_deref(), Some("HD_PREDATOR"));
        assert_eq!(m[0].scope("location"), None);
        assert_eq!(m[0].xaddrs, vec!["SERVICE_URI"]);
        assert_eq!(guess_vendor(None, &m[0]), Vendor::Onvif);
    }

    #[test]
    fn a_hikvision_answer_gives_a_hikvision_block() {
        let (relates, m) = parse_matches(HIK.as_bytes()).unwrap();
        assert_eq!(relates.as_deref(), Some("urn:uuid:probe-1"));
        let m = &m[0];
        assert_eq!(m.scope("name").as_deref(), Some("HIKVISION DS-2CD2043G0-I"));
        assert_eq!(m.xaddrs.len(), 2);
        assert_eq!(guess_vendor(None, m), Vendor::Hikvision);
        let f = Found {
            host: "192.168.1.64".into(),
            vendor: Vendor::Hikvision,
            device_service: "http://192.168.1.64/onvif/device_service".into(),
            endpoint: m.endpoint.clone(),
            manufacturer: Some("HIKVISION".into()),
            model: Some("DS-2CD2043G0-I".into()),
            firmware: None,
            info_error: None,
            scopes: vec![],
        };
        let block = camera_block(&f, Some("admin"));
        let text = format!(
            "[gateway]\nid = \"g\"\nward = \"w\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n{block}"
        );
        let c = crate::config::Config::parse(&text.replace("password = \"\"", "password = \"x\""))
            .unwrap();
        let cam = &c.cameras[0];
        assert_eq!(cam.id, "cam-192-168-1-64");
        assert_eq!(
            cam.snapshot_url.as_ref().map(|u| u.absolute()).as_deref(),
            Some("http://192.168.1.64:80/ISAPI/Streaming/channels/101/picture")
        );
        assert_eq!(
            cam.rtsp_url.as_ref().map(|u| u.absolute()).as_deref(),
            Some("rtsp://192.168.1.64:554/Streaming/Channels/101")
        );
        assert!(block
            .starts_with("# HIKVISION DS-2CD2043G0-I at http://192.168.1.64/onvif/device_service"));
    }

    #[test]
    fn vendors_are_guessed_from_oem_names_too() {
        let m = |hw: &str, name: &str| Match {
            scopes: vec![
                format!("onvif://www.onvif.org/hardware/{hw}"),
                format!("onvif://www.onvif.org/name/{name}"),
            ],
            ..Default::default()
        };
        assert_eq!(guess_vendor(None, &m("IPC-HFW1230S", "IPC")), Vendor::Dahua);
        assert_eq!(
            guess_vendor(None, &m("KX-2003N", "KBVISION")),
            Vendor::Dahua
        );
        assert_eq!(guess_vendor(Some("Dahua"), &m("X", "Y")), Vendor::Dahua);
        assert_eq!(guess_vendor(None, &m("DS-2CD1023", "x")), Vendor::Hikvision);
        assert_eq!(
            guess_vendor(Some("EZVIZ"), &m("CS-C6N", "x")),
            Vendor::Hikvision
        );
        assert_eq!(guess_vendor(None, &m("VN-123", "Vantech")), Vendor::Onvif);
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        assert!(
            parse_matches(b"<a><b>").is_err() || parse_matches(b"<a><b>").unwrap().1.is_empty()
        );
        assert!(
            parse_matches(probe("urn:uuid:x").as_bytes()).is_err(),
            "a Probe is not an answer"
        );
        assert!(parse_matches(b"\xff\xfe garbage").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let _ = parse_matches(&bytes);
        }

        #[test]
        fn never_panics_on_mangled_answers(cut in 0usize..1400, flip in 0usize..1400) {
            let mut b = HIK.as_bytes().to_vec();
            let f = flip % b.len();
            b[f] ^= 0x20;
            b.truncate(cut.min(b.len()));
            let _ = parse_matches(&b);
        }
    }
}
