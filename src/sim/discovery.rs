//! A simulated WS-Discovery responder: answers each `Probe` it receives on its UDP socket
//! with a `ProbeMatches` (RelatesTo the probe's MessageID) describing one camera, as an
//! ONVIF camera does on 239.255.255.250:3702.

use std::net::UdpSocket;

/// What the responder says about its camera.
#[derive(Debug, Clone)]
pub struct Device {
    pub endpoint: String,
    pub scopes: Vec<String>,
    pub xaddr: String,
}

pub fn probe_matches(relates_to: &str, d: &Device) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:wsdd="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl" xmlns:tds="http://www.onvif.org/ver10/device/wsdl"><SOAP-ENV:Header><wsa:MessageID>urn:uuid:sim-{}</wsa:MessageID><wsa:RelatesTo>{relates_to}</wsa:RelatesTo><wsa:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To><wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsa:Action></SOAP-ENV:Header><SOAP-ENV:Body><wsdd:ProbeMatches><wsdd:ProbeMatch><wsa:EndpointReference><wsa:Address>{}</wsa:Address></wsa:EndpointReference><wsdd:Types>dn:NetworkVideoTransmitter tds:Device</wsdd:Types><wsdd:Scopes>{}</wsdd:Scopes><wsdd:XAddrs>{}</wsdd:XAddrs><wsdd:MetadataVersion>1</wsdd:MetadataVersion></wsdd:ProbeMatch></wsdd:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"#,
        rand::random::<u32>(),
        d.endpoint,
        d.scopes.join(" "),
        d.xaddr
    )
}

/// The MessageID of a Probe, or None for anything else.
pub fn probe_id(msg: &[u8]) -> Option<String> {
    let texts = crate::proto::onvif::texts(msg).ok()?;
    let is_probe = texts
        .iter()
        .any(|(n, t)| n == "Action" && t.ends_with("/discovery/Probe"));
    if !is_probe {
        return None;
    }
    texts
        .into_iter()
        .find(|(n, _)| n == "MessageID")
        .map(|(_, t)| t)
}

/// Answers probes on `sock` (already bound, and joined to the multicast group if wanted)
/// until the socket fails; runs on its own thread.
pub fn serve(sock: UdpSocket, devices: Vec<Device>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 8192];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if let Some(id) = probe_id(&buf[..n]) {
                for d in &devices {
                    let _ = sock.send_to(probe_matches(&id, d).as_bytes(), from);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_and_relate_to_the_probe() {
        let probe = crate::proto::wsdiscovery::probe("urn:uuid:p1");
        assert_eq!(probe_id(probe.as_bytes()).as_deref(), Some("urn:uuid:p1"));
        let d = Device {
            endpoint: "urn:uuid:cam".into(),
            scopes: vec!["onvif://www.onvif.org/name/SIM".into()],
            xaddr: "http://127.0.0.1:80/onvif/device_service".into(),
        };
        let answer = probe_matches("urn:uuid:p1", &d);
        assert_eq!(
            probe_id(answer.as_bytes()),
            None,
            "an answer is not a probe"
        );
        let (rel, m) = crate::proto::wsdiscovery::parse_matches(answer.as_bytes()).unwrap();
        assert_eq!(rel.as_deref(), Some("urn:uuid:p1"));
        assert_eq!(m[0].endpoint, "urn:uuid:cam");
    }
}
