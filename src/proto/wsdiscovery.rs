//! WS-Discovery messages, pure: the SOAP `Probe` for `dn:NetworkVideoTransmitter` and the
//! `ProbeMatches` parser (by local name, at most [`MAX_MATCHES`], bounded by the XML reader).

use std::net::Ipv4Addr;

use serde::Serialize;

pub const MULTICAST: Ipv4Addr = Ipv4Addr::new(239, 255, 255, 250);
pub const PORT: u16 = 3702;

/// The Probe message, with its MessageID.
pub fn probe(message_id: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope" xmlns:w="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl"><e:Header><w:MessageID>{message_id}</w:MessageID><w:To e:mustUnderstand="true">urn:schemas-xmlsoap-org:ws:2005:04:discovery</w:To><w:Action e:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</w:Action></e:Header><e:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></e:Body></e:Envelope>"#
    )
}

/// One `ProbeMatch`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Match {
    /// The endpoint reference (`urn:uuid:…`), stable per device.
    pub endpoint: String,
    pub types: Vec<String>,
    pub scopes: Vec<String>,
    pub xaddrs: Vec<String>,
}

impl Match {
    /// A scope's value (`onvif://www.onvif.org/{key}/{value}`), percent-decoded.
    pub fn scope(&self, key: &str) -> Option<String> {
        let prefix = format!("onvif://www.onvif.org/{key}/");
        self.scopes
            .iter()
            .find_map(|s| s.strip_prefix(&prefix))
            .filter(|v| !v.is_empty())
            .map(percent_decode)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The most matches read from one message (a real one carries one).
pub const MAX_MATCHES: usize = 64;

/// Parses a `ProbeMatches` message: (RelatesTo, matches). Matches by local name, since
/// cameras use every namespace prefix there is.
pub fn parse_matches(xml: &[u8]) -> Result<(Option<String>, Vec<Match>), String> {
    use crate::proto::xml::Node;
    use std::ops::ControlFlow;
    let mut relates = None;
    let mut matches = Vec::new();
    let mut cur: Option<Match> = None;
    let mut saw_matches = false;
    crate::proto::xml::walk(xml, |path, node| {
        match node {
            Node::Open(_) => match path.last() {
                Some("ProbeMatch") => cur = Some(Match::default()),
                Some("ProbeMatches") => saw_matches = true,
                _ => {}
            },
            Node::Close => {
                if path.last() == Some("ProbeMatch") {
                    if let Some(m) = cur.take() {
                        if matches.len() < MAX_MATCHES {
                            matches.push(m);
                        }
                    }
                }
            }
            Node::Text(text) => {
                let words = || {
                    text.split_whitespace()
                        .take(64)
                        .map(String::from)
                        .collect::<Vec<_>>()
                };
                match (path.last(), cur.as_mut()) {
                    (Some("RelatesTo"), _) => relates = Some(text.to_string()),
                    (Some("Address"), Some(m)) => m.endpoint = text.to_string(),
                    (Some("Types"), Some(m)) => m.types = words(),
                    (Some("Scopes"), Some(m)) => m.scopes = words(),
                    (Some("XAddrs"), Some(m)) => m.xaddrs = words(),
                    _ => {}
                }
            }
        }
        ControlFlow::Continue(())
    })
    .map_err(|e| e.to_string())?;
    if !saw_matches {
        return Err("not a ProbeMatches message".into());
    }
    Ok((relates, matches))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_percent_decoded_safely() {
        assert_eq!(percent_decode("HIKVISION%20DS"), "HIKVISION DS");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%é1x"), "%é1x");
        assert_eq!(percent_decode("%"), "%");
    }
}
