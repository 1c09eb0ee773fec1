//! ONVIF device service, pure parts and the probe: GetSystemDateAndTime without auth
//! (liveness and the camera's clock offset) and GetDeviceInformation with a WS-UsernameToken
//! PasswordDigest whose `Created` is corrected by the measured offset (cameras refuse tokens
//! outside their clock window). XML is matched by local name: namespaces differ by vendor.

use base64::Engine as _;
use sha1::Digest as _;

use crate::http::{self, Creds, Url};

pub const SOAP_ENV: &str = "http://www.w3.org/2003/05/soap-envelope";

/// `Base64(SHA1(nonce ‖ created ‖ password))`.
pub fn password_digest(nonce: &[u8], created: &str, password: &str) -> String {
    let mut h = sha1::Sha1::new();
    h.update(nonce);
    h.update(created.as_bytes());
    h.update(password.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The WS-Security header for `user`, with `created` (RFC 3339) and a random nonce.
pub fn security_header(user: &str, password: &str, nonce: &[u8], created: &str) -> String {
    let digest = password_digest(nonce, created, password);
    let nonce_b64 = base64::engine::general_purpose::STANDARD.encode(nonce);
    format!(
        concat!(
            r#"<Security s:mustUnderstand="1" xmlns="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd">"#,
            r#"<UsernameToken><Username>{}</Username>"#,
            r#"<Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest">{}</Password>"#,
            r#"<Nonce EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary">{}</Nonce>"#,
            r#"<Created xmlns="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd">{}</Created>"#,
            r#"</UsernameToken></Security>"#
        ),
        xml_escape(user),
        digest,
        nonce_b64,
        created
    )
}

/// A SOAP 1.2 envelope around `body`, with an optional header.
pub fn envelope(header: Option<&str>, body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP_ENV}"><s:Header>{}</s:Header><s:Body>{body}</s:Body></s:Envelope>"#,
        header.unwrap_or("")
    )
}

/// Text of every element by local name, in document order: `(local name, text)`.
pub fn texts(xml: &[u8]) -> Result<Vec<(String, String)>, String> {
    crate::xml::texts(xml).map_err(|e| e.to_string())
}

/// The UTC time in a GetSystemDateAndTimeResponse, as Unix milliseconds.
pub fn parse_system_date_time(xml: &[u8]) -> Result<i64, String> {
    use crate::xml::Node;
    let mut fields = [None::<i64>; 6];
    crate::xml::walk(xml, |path, node| {
        if let Node::Text(t) = node {
            if path.contains("UTCDateTime") {
                let i = match path.last() {
                    Some("Year") => 0,
                    Some("Month") => 1,
                    Some("Day") => 2,
                    Some("Hour") => 3,
                    Some("Minute") => 4,
                    Some("Second") => 5,
                    _ => 6,
                };
                if i < 6 {
                    fields[i] = t.parse().ok();
                }
            }
        }
        std::ops::ControlFlow::Continue(())
    })
    .map_err(|e| e.to_string())?;
    let [Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)] = fields else {
        return Err("no UTCDateTime in the answer".into());
    };
    let date = time::Date::from_calendar_date(
        y as i32,
        time::Month::try_from(mo as u8).map_err(|_| format!("month {mo}"))?,
        d as u8,
    )
    .map_err(|e| format!("date: {e}"))?;
    let t = time::Time::from_hms(h as u8, mi as u8, s.min(59) as u8)
        .map_err(|e| format!("time: {e}"))?;
    Ok(time::PrimitiveDateTime::new(date, t)
        .assume_utc()
        .unix_timestamp()
        * 1000)
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    pub manufacturer: String,
    pub model: String,
    pub firmware: String,
    pub serial: String,
    pub hardware_id: String,
}

pub fn parse_device_information(xml: &[u8]) -> Result<DeviceInfo, String> {
    let t = texts(xml)?;
    let get = |n: &str| {
        t.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if !t.iter().any(|(k, _)| k == "Manufacturer" || k == "Model") {
        return Err("no device information in the answer".into());
    }
    Ok(DeviceInfo {
        manufacturer: get("Manufacturer"),
        model: get("Model"),
        firmware: get("FirmwareVersion"),
        serial: get("SerialNumber"),
        hardware_id: get("HardwareId"),
    })
}

/// Whether a SOAP answer is a fault saying the credentials were refused.
pub fn is_auth_fault(xml: &[u8]) -> bool {
    let Ok(t) = texts(xml) else { return false };
    t.iter().any(|(_, v)| {
        let v = v.to_ascii_lowercase();
        v.contains("notauthorized")
            || v.contains("not authorized")
            || v.contains("failedauthentication")
            || v.contains("sender not authorized")
    })
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok {
        /// camera clock − gateway clock, corrected by half the round trip.
        offset_ms: i64,
        info: Option<DeviceInfo>,
    },
    AuthFailed {
        offset_ms: i64,
    },
    Unreachable(String),
    Error(String),
}

const MAX_SOAP: usize = 1 << 20;

async fn soap(
    url: &Url,
    action: &str,
    body: String,
    creds: Option<Creds<'_>>,
) -> Result<http::Response, http::HttpError> {
    let ct = format!("application/soap+xml; charset=utf-8; action=\"{action}\"");
    http::request_auth(
        url,
        "POST",
        &[("Content-Type", ct)],
        body.as_bytes(),
        creds,
        MAX_SOAP,
    )
    .await
}

/// GetSystemDateAndTime, then (with credentials) GetDeviceInformation.
pub async fn probe(url: &Url, creds: Option<Creds<'_>>, now_ms: impl Fn() -> i64) -> Outcome {
    let t0 = now_ms();
    let r = match soap(
        url,
        "http://www.onvif.org/ver10/device/wsdl/GetSystemDateAndTime",
        envelope(
            None,
            r#"<GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/>"#,
        ),
        None,
    )
    .await
    {
        Ok(r) => r,
        Err(http::HttpError::Connect(e)) => return Outcome::Unreachable(e.to_string()),
        Err(e) => return Outcome::Error(format!("GetSystemDateAndTime: {e}")),
    };
    let t1 = now_ms();
    if r.status != 200 {
        return Outcome::Error(format!("GetSystemDateAndTime answered HTTP {}", r.status));
    }
    let camera_ms = match crate::heavy::parse(r.body, parse_system_date_time).await {
        Ok(t) => t,
        Err(e) => return Outcome::Error(format!("GetSystemDateAndTime: {e}")),
    };
    // The camera's clock has one-second resolution; compare with the middle of the round trip.
    let offset_ms = camera_ms - (t0 + t1) / 2;
    let Some(c) = creds else {
        return Outcome::Ok {
            offset_ms,
            info: None,
        };
    };
    let created = crate::clock::rfc3339_ms(now_ms() + offset_ms);
    let created = format!("{}Z", &created[..19]);
    let nonce: [u8; 16] = rand::random();
    let header = security_header(c.user, c.password, &nonce, &created);
    let r = match soap(
        url,
        "http://www.onvif.org/ver10/device/wsdl/GetDeviceInformation",
        envelope(
            Some(&header),
            r#"<GetDeviceInformation xmlns="http://www.onvif.org/ver10/device/wsdl"/>"#,
        ),
        Some(c),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return Outcome::Error(format!("GetDeviceInformation: {e}")),
    };
    if r.status == 401 || r.status == 403 || is_auth_fault(&r.body) {
        return Outcome::AuthFailed { offset_ms };
    }
    if r.status != 200 {
        return Outcome::Error(format!("GetDeviceInformation answered HTTP {}", r.status));
    }
    match crate::heavy::parse(r.body, parse_device_information).await {
        Ok(info) => Outcome::Ok {
            offset_ms,
            info: Some(info),
        },
        Err(e) => Outcome::Error(format!("GetDeviceInformation: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::fixture;

    #[test]
    fn the_onvif_guide_password_digest_vector_holds() {
        let Some(text) = fixture("onvif_password_digest_vector.txt") else {
            return;
        };
        let text = String::from_utf8(text).unwrap();
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap()
                .trim()
                .to_string()
        };
        let nonce = base64::engine::general_purpose::STANDARD
            .decode(get("nonce_b64"))
            .unwrap();
        assert_eq!(
            password_digest(&nonce, &get("created"), &get("password")),
            get("expected_digest_b64")
        );
    }

    #[test]
    fn system_date_and_time_from_a_real_answer() {
        let Some(x) = fixture("onvif_getsystemdateandtime_onvifrs.xml") else {
            return;
        };
        let ms = parse_system_date_time(&x).unwrap();
        assert_eq!(crate::clock::rfc3339_ms(ms), "2019-11-18T16:20:09.000Z");
    }

    #[test]
    fn device_information_from_a_mockup_answer() {
        let Some(x) = fixture("onvif_getdeviceinformation_agsh_mockup.xml") else {
            return;
        };
        let d = parse_device_information(&x).unwrap();
        assert_eq!(d.manufacturer, "Mockup Manufacturer");
        assert!(!d.model.is_empty());
    }

    #[test]
    fn auth_faults_are_recognised() {
        let fault = br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:ter="http://www.onvif.org/ver10/error"><s:Body><s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>ter:NotAuthorized</s:Value></s:Subcode></s:Code></s:Fault></s:Body></s:Envelope>"#;
        assert!(is_auth_fault(fault));
        assert!(!is_auth_fault(b"<a>fine</a>"));
    }

    #[test]
    fn a_token_we_make_verifies_with_the_same_inputs() {
        let h = security_header("ad<min", "pw", b"0123456789abcdef", "2026-01-01T00:00:00Z");
        assert!(h.contains("<Username>ad&lt;min</Username>"));
        assert!(h.contains(&password_digest(
            b"0123456789abcdef",
            "2026-01-01T00:00:00Z",
            "pw"
        )));
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = parse_system_date_time(&s);
            let _ = parse_device_information(&s);
            let _ = is_auth_fault(&s);
        }
    }
}
