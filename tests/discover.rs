//! `camgw discover` against simulated WS-Discovery responders: unicast on loopback (with the
//! GetDeviceInformation follow-up on a simulated camera), and multicast to
//! 239.255.255.250:3702 inside a network namespace the test creates.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;

use camgw::sim::discovery::{serve, Device};
use camgw::sim::{SimCamera, SimControl};
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_camgw");

#[test]
fn unicast_probe_finds_the_camera_and_reads_its_model() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut ctl = SimControl::new("pw");
    ctl.manufacturer = "HIKVISION".into();
    ctl.model = "DS-2CD2043G0-I".into();
    let cam = rt.block_on(SimCamera::start(ctl)).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    serve(
        sock,
        vec![Device {
            endpoint: "urn:uuid:4419a8b0-a6f1-11b3-8205-a41437c1d2e8".into(),
            scopes: vec![
                "onvif://www.onvif.org/type/video_encoder".into(),
                "onvif://www.onvif.org/name/IPCAM".into(),
            ],
            xaddr: cam.onvif_url(),
        }],
    );
    let to = format!("127.0.0.1:{port}");
    let out = camgw_command(BIN)
        .args([
            "discover",
            "--interface",
            "127.0.0.1",
            "--to",
            &to,
            "--timeout-s",
            "2",
        ])
        .args(["--username", "admin", "--password", "pw"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("found 1 camera(s)"), "{err}");
    // The vendor comes from GetDeviceInformation (the scopes only say "IPCAM").
    assert!(text.contains("# HIKVISION DS-2CD2043G0-I at "), "{text}");
    assert!(text.contains("vendor = \"hikvision\""), "{text}");
    assert!(
        text.contains(&format!("onvif_url = \"{}\"", cam.onvif_url())),
        "{text}"
    );
    assert!(
        text.contains("/ISAPI/Streaming/channels/101/picture"),
        "{text}"
    );
    assert!(text.contains("events = [\"hikvision\"]"), "{text}");
    assert!(
        !text.contains("\"pw\""),
        "the password is never printed: {text}"
    );
    // The block is valid config once the password is filled in.
    let cfg = format!(
        "[gateway]\nid = \"g\"\nward = \"w\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n{}",
        text.replace("password = \"\"", "password = \"pw\"")
    );
    let c = camgw::config::Config::parse(&cfg).unwrap_or_else(|e| panic!("{e:?}\n{cfg}"));
    assert_eq!(c.cameras[0].id, "cam-127-0-0-1");

    // Wrong password: still found, the model from the scopes, and the reason on stderr.
    let out = camgw_command(BIN)
        .args([
            "discover",
            "--interface",
            "127.0.0.1",
            "--to",
            &to,
            "--timeout-s",
            "1",
            "--json",
        ])
        .args(["--username", "admin", "--password", "nope"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["info_error"], "credentials refused", "{v}");
    assert_eq!(v[0]["vendor"], "onvif", "{v}");
}

/// Runs `f` on a thread inside a fresh network namespace with only a multicast-capable
/// loopback; None when namespaces are not available here.
fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "*** SKIPPED: cannot create a network namespace: {} ***",
                std::io::Error::last_os_error()
            );
            return None;
        }
        for args in [
            &["link", "set", "lo", "up"][..],
            &["link", "set", "lo", "multicast", "on"],
            &["route", "add", "239.0.0.0/8", "dev", "lo"],
        ] {
            let ok = Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!(
                    "*** SKIPPED: `ip {}` failed in the namespace ***",
                    args.join(" ")
                );
                return None;
            }
        }
        Some(f())
    })
    .join()
    .unwrap()
}

#[test]
fn multicast_probe_in_a_network_namespace_finds_every_camera() {
    let bin = BIN.to_string();
    let r = in_netns(move || {
        let sock = UdpSocket::bind("0.0.0.0:3702").unwrap();
        sock.join_multicast_v4(&Ipv4Addr::new(239, 255, 255, 250), &Ipv4Addr::LOCALHOST)
            .unwrap();
        let devices = vec![
            Device {
                endpoint: "urn:uuid:aaaa".into(),
                scopes: vec![
                    "onvif://www.onvif.org/hardware/IPC-HFW1230S".into(),
                    "onvif://www.onvif.org/name/Dahua".into(),
                ],
                xaddr: "http://127.0.0.1:8001/onvif/device_service".into(),
            },
            Device {
                endpoint: "urn:uuid:bbbb".into(),
                scopes: vec!["onvif://www.onvif.org/hardware/DS-2CD1023G0".into()],
                xaddr: "http://127.0.0.1:8002/onvif/device_service".into(),
            },
        ];
        serve(sock, devices);
        camgw_command(&bin)
            .args([
                "discover",
                "--interface",
                "lo",
                "--timeout-s",
                "2",
                "--json",
            ])
            .output()
            .unwrap()
    });
    let Some(out) = r else { return };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = v.as_array().unwrap();
    assert_eq!(found.len(), 2, "{v:#}\n{err}");
    let by = |ep: &str| found.iter().find(|f| f["endpoint"] == ep).unwrap();
    assert_eq!(by("urn:uuid:aaaa")["vendor"], "dahua");
    assert_eq!(by("urn:uuid:bbbb")["vendor"], "hikvision");
    assert_eq!(
        by("urn:uuid:bbbb")["device_service"],
        "http://127.0.0.1:8002/onvif/device_service"
    );

    // An interface that does not exist is named, with the ones that do.
    let out = camgw_command(BIN)
        .args(["discover", "--interface", "eth-nope", "--timeout-s", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no IPv4 interface \"eth-nope\" (this box has: lo (127.0.0.1)"),
        "{err}"
    );
}
