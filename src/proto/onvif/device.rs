//! The ONVIF device service: GetSystemDateAndTime without auth (liveness and the camera's
//! clock offset), GetDeviceInformation and SystemReboot with a token whose `Created` is
//! corrected by that offset. Parsers are pure; [`probe`] and [`reboot`] do the I/O.

use std::time::Duration;

use super::{call, created, envelope, is_auth_fault, texts, token, CallError};
use crate::proto::http::{Creds, Url};

/// The UTC time in a GetSystemDateAndTimeResponse, as Unix milliseconds.
pub fn parse_system_date_time(xml: &[u8]) -> Result<i64, String> {
    use crate::proto::xml::Node;
    let mut fields = [None::<i64>; 6];
    crate::proto::xml::walk(xml, |path, node| {
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

const DEVICE_NS: &str = "http://www.onvif.org/ver10/device/wsdl";

fn request(op: &str) -> (String, String) {
    (
        format!("{DEVICE_NS}/{op}"),
        format!(r#"<{op} xmlns="{DEVICE_NS}"/>"#),
    )
}

/// Why the camera's clock could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetError {
    Unreachable(String),
    Other(String),
}

impl std::fmt::Display for OffsetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OffsetError::Unreachable(e) | OffsetError::Other(e) => f.write_str(e),
        }
    }
}

/// GetSystemDateAndTime without auth: camera clock − our clock in ms, compared with the middle
/// of the round trip (the camera's clock has one-second resolution).
pub async fn clock_offset(
    url: &Url,
    timeout: Duration,
    now_ms: impl Fn() -> i64,
) -> Result<i64, OffsetError> {
    let t0 = now_ms();
    let (action, body) = request("GetSystemDateAndTime");
    let r = match call(url, &action, envelope(None, &body), None, timeout).await {
        Ok(r) => r,
        Err(CallError::Connect(e)) => return Err(OffsetError::Unreachable(e)),
        Err(e) => return Err(OffsetError::Other(format!("GetSystemDateAndTime: {e}"))),
    };
    let t1 = now_ms();
    if r.status != 200 {
        return Err(OffsetError::Other(format!(
            "GetSystemDateAndTime answered HTTP {}",
            r.status
        )));
    }
    let camera_ms = crate::heavy::parse(r.body, parse_system_date_time)
        .await
        .map_err(|e| OffsetError::Other(format!("GetSystemDateAndTime: {e}")))?;
    Ok(camera_ms - (t0 + t1) / 2)
}

/// GetSystemDateAndTime, then (with credentials) GetDeviceInformation; each request bounded
/// by `timeout`.
pub async fn probe(
    url: &Url,
    creds: Option<Creds<'_>>,
    timeout: Duration,
    now_ms: impl Fn() -> i64,
) -> Outcome {
    let offset_ms = match clock_offset(url, timeout, &now_ms).await {
        Ok(o) => o,
        Err(OffsetError::Unreachable(e)) => return Outcome::Unreachable(e),
        Err(OffsetError::Other(e)) => return Outcome::Error(e),
    };
    let Some(c) = creds else {
        return Outcome::Ok {
            offset_ms,
            info: None,
        };
    };
    let header = token(c.user, c.password, &created(now_ms(), offset_ms));
    let (action, body) = request("GetDeviceInformation");
    let r = match call(
        url,
        &action,
        envelope(Some(&header), &body),
        Some(c),
        timeout,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return Outcome::Error(format!("GetDeviceInformation: {e}")),
    };
    if r.status == 401 || r.status == 403 {
        return Outcome::AuthFailed { offset_ms };
    }
    let status = r.status;
    // One pass in the heavy pool when the answer is large: the fault check, then the parse.
    let parsed = crate::heavy::parse(r.body, |b| {
        if is_auth_fault(b) {
            Ok(None)
        } else {
            parse_device_information(b).map(Some)
        }
    })
    .await;
    match parsed {
        Ok(None) => Outcome::AuthFailed { offset_ms },
        Ok(Some(_)) | Err(_) if status != 200 => {
            Outcome::Error(format!("GetDeviceInformation answered HTTP {status}"))
        }
        Ok(Some(info)) => Outcome::Ok {
            offset_ms,
            info: Some(info),
        },
        Err(e) => Outcome::Error(format!("GetDeviceInformation: {e}")),
    }
}

/// SystemReboot; the camera's `Message` (often the seconds until it is back) on success.
/// `created` is the token time on the camera's clock ([`super::created`]).
pub async fn reboot(
    url: &Url,
    creds: Creds<'_>,
    created: &str,
    timeout: Duration,
) -> Result<String, String> {
    let header = token(creds.user, creds.password, created);
    let (action, body) = request("SystemReboot");
    let r = call(
        url,
        &action,
        envelope(Some(&header), &body),
        Some(creds),
        timeout,
    )
    .await
    .map_err(|e| format!("SystemReboot: {e}"))?;
    let status = r.status;
    let message = crate::heavy::parse(r.body, |b| {
        if is_auth_fault(b) {
            return Err("an authentication fault".to_string());
        }
        Ok(texts(b)
            .ok()
            .and_then(|t| t.into_iter().find(|(k, _)| k == "Message").map(|(_, v)| v))
            .unwrap_or_default())
    })
    .await;
    match message {
        Ok(m) if status == 200 => Ok(m),
        _ => Err(format!("SystemReboot answered HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::fixture;

    #[test]
    fn our_device_answers_parse() {
        let ms = parse_system_date_time(&crate::testdata::own("onvif_getsystemdateandtime.xml"))
            .unwrap();
        assert_eq!(crate::clock::rfc3339_ms(ms), "2026-11-30T14:03:09.000Z");
        let d = parse_device_information(&crate::testdata::own("onvif_getdeviceinformation.xml"))
            .unwrap();
        assert_eq!(
            (d.manufacturer.as_str(), d.model.as_str()),
            ("KBVISION", "KX-C2121S5")
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

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = parse_system_date_time(&s);
            let _ = parse_device_information(&s);
        }
    }
}
