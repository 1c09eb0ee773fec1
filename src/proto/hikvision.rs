//! Hikvision ISAPI events: the `EventNotificationAlert` XML (in the `alertStream` multipart,
//! or POSTed by cameras configured to push to our ingest server). Pure.
//!
//! `VMD` active → motion (Hikvision sends no "inactive" for VMD: the coalescer ends motion
//! after a silence); `shelteralarm` / `tamperdetection` active → tamper; `videoloss` active →
//! video loss (a health problem); `videoloss` inactive is the camera's heartbeat.

use crate::proto::onvif::texts;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub event_type: String,
    pub active: bool,
    pub channel: Option<String>,
    pub date_time: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    Motion,
    Tamper,
    VideoLoss(bool),
    Heartbeat,
    Other(String),
}

pub fn parse(xml: &[u8]) -> Result<Alert, String> {
    let t = texts(xml)?;
    let get = |k: &str| {
        t.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
    };
    let event_type = get("eventType").ok_or("no eventType: not an EventNotificationAlert")?;
    Ok(Alert {
        active: get("eventState").is_some_and(|s| s.eq_ignore_ascii_case("active")),
        event_type,
        channel: get("channelID").or_else(|| get("dynChannelID")),
        date_time: get("dateTime"),
        description: get("eventDescription"),
    })
}

pub fn classify(a: &Alert) -> Signal {
    match a.event_type.to_ascii_lowercase().as_str() {
        "vmd" | "motion" | "linedetection" | "fielddetection" if a.active => Signal::Motion,
        "shelteralarm" | "tamperdetection" if a.active => Signal::Tamper,
        "videoloss" if a.active => Signal::VideoLoss(true),
        "videoloss" => Signal::Heartbeat,
        other => Signal::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::fixture;

    #[test]
    fn our_alert_stream_capture_has_motion_heartbeat_and_tamper() {
        let x = crate::testdata::own("hikvision_alertstream.multipart");
        let mut p = crate::proto::multipart::Parser::new("boundary");
        p.push(&x);
        p.push(b"--boundary\r\n");
        let parts: Vec<_> = std::iter::from_fn(|| p.pull()).collect();
        let got: Vec<_> = parts
            .iter()
            .map(|part| classify(&parse(&part.body).unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                Signal::Motion,
                Signal::Motion,
                Signal::Heartbeat,
                Signal::Tamper
            ]
        );
        // Offsets as cameras write them, "+7:00" included, are passed on untouched.
        let a = parse(&parts[1].body).unwrap();
        assert_eq!(a.date_time.as_deref(), Some("2026-11-30T21:04:06+7:00"));
        let a = parse(&crate::testdata::own("hikvision_alert_vmd_no_seconds.xml")).unwrap();
        assert_eq!(
            (a.event_type.as_str(), a.active, a.date_time.as_deref()),
            ("VMD", true, Some("2026-11-30T21:07Z"))
        );
    }

    #[test]
    fn vmd_active_from_the_isapi_example_is_motion() {
        let Some(x) = fixture("hikvision_alert_vmd_active_stdcgi.xml") else {
            return;
        };
        let a = parse(&x).unwrap();
        assert_eq!(a.event_type, "VMD");
        assert!(a.active);
        assert_eq!(a.date_time.as_deref(), Some("2009-11-14T15:27Z"));
        assert_eq!(classify(&a), Signal::Motion);
    }

    #[test]
    fn the_alert_stream_capture_is_two_heartbeats() {
        let Some(x) = fixture("hikvision_alertstream_videoloss_heartbeat.multipart") else {
            return;
        };
        let mut p = crate::proto::multipart::Parser::new("boundary");
        p.push(&x);
        p.push(b"\r\n--boundary\r\n");
        let parts: Vec<_> = std::iter::from_fn(|| p.pull()).collect();
        assert_eq!(parts.len(), 2);
        for part in parts {
            let a = parse(&part.body).unwrap();
            assert_eq!(classify(&a), Signal::Heartbeat);
            assert_eq!(a.date_time.as_deref(), Some("2019-02-20T15:22:34-8:00"));
        }
    }

    #[test]
    fn tamper_and_video_loss() {
        let x = |t: &str, s: &str| {
            format!("<EventNotificationAlert><eventType>{t}</eventType><eventState>{s}</eventState></EventNotificationAlert>")
        };
        assert_eq!(
            classify(&parse(x("shelteralarm", "active").as_bytes()).unwrap()),
            Signal::Tamper
        );
        assert_eq!(
            classify(&parse(x("videoloss", "active").as_bytes()).unwrap()),
            Signal::VideoLoss(true)
        );
        assert!(parse(b"<html/>").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse(&b).map(|a| classify(&a));
        }
    }
}
