//! Dahua (and KBVision, Imou, other OEMs) `eventManager.cgi?action=attach` parts, pure:
//! `Code=VideoMotion;action=Start;index=0;data={...}`. `VideoMotion` Start/Stop → motion
//! start/end, `VideoBlind` Start → tamper, `VideoLoss` Start/Stop → video loss, `Heartbeat`
//! (or a bare `Heartbeat` body when attached with `heartbeat=N`) → stream liveness.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub code: String,
    pub action: String,
    pub index: Option<u32>,
    pub data: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    MotionStart,
    MotionStop,
    Tamper,
    VideoLoss(bool),
    Heartbeat,
    Other(String),
}

pub fn parse(body: &[u8]) -> Result<Event, String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.eq_ignore_ascii_case("heartbeat") {
        return Ok(Event {
            code: "Heartbeat".into(),
            action: "Pulse".into(),
            index: None,
            data: None,
        });
    }
    let mut code = None;
    let mut action = None;
    let mut index = None;
    let mut data = None;
    let mut rest = text;
    while !rest.is_empty() {
        let (field, tail) = if rest.starts_with("data=") {
            (rest, "")
        } else {
            match rest.split_once(';') {
                Some((f, t)) => (f, t),
                None => (rest, ""),
            }
        };
        match field.split_once('=') {
            Some(("Code", v)) => code = Some(v.trim().to_string()),
            Some(("action", v)) => action = Some(v.trim().to_string()),
            Some(("index", v)) => index = v.trim().parse().ok(),
            Some(("data", v)) => data = Some(v.trim().to_string()),
            _ => {}
        }
        rest = tail.trim_start();
    }
    Ok(Event {
        code: code.ok_or("no Code= in the event")?,
        action: action.unwrap_or_default(),
        index,
        data,
    })
}

pub fn classify(e: &Event) -> Signal {
    let start = e.action.eq_ignore_ascii_case("start");
    let stop = e.action.eq_ignore_ascii_case("stop");
    match e.code.as_str() {
        "VideoMotion" if start => Signal::MotionStart,
        "VideoMotion" if stop => Signal::MotionStop,
        "VideoBlind" if start => Signal::Tamper,
        "VideoLoss" if start || stop => Signal::VideoLoss(start),
        "Heartbeat" => Signal::Heartbeat,
        other => Signal::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_attach_capture_parses_with_its_quirks() {
        let x = crate::testdata::own("dahua_eventmanager_attach.multipart");
        let mut mp = crate::proto::multipart::Parser::new("myboundary");
        mp.push(&x);
        let got: Vec<_> = std::iter::from_fn(|| mp.pull())
            .map(|p| classify(&parse(&p.body).unwrap()))
            .collect();
        // "Content-Length:N" without a space, parts ended by a blank line, and a last part
        // cut off mid-way (the stream dropped): four whole parts, the cut one never emitted.
        assert_eq!(
            got,
            [
                Signal::MotionStart,
                Signal::Heartbeat,
                Signal::Tamper,
                Signal::MotionStop
            ]
        );
        let mut mp = crate::proto::multipart::Parser::new("myboundary");
        mp.push(&x);
        let first = parse(&mp.pull().unwrap().body).unwrap();
        assert_eq!(first.index, Some(0));
        assert!(first.data.unwrap().contains("Cong truoc"));
    }

    #[test]
    fn the_attach_capture_parses_with_its_quirks() {
        let Some(x) = crate::testdata::fixture("dahua_eventmanager_timechange_ntp.multipart")
        else {
            return;
        };
        let mut mp = crate::proto::multipart::Parser::new("myboundary");
        mp.push(&x);
        let parts: Vec<_> = std::iter::from_fn(|| mp.pull()).collect();
        assert_eq!(
            parts.len(),
            2,
            "Content-Length:135 without a space, no final boundary"
        );
        let a = parse(&parts[0].body).unwrap();
        assert_eq!(
            (a.code.as_str(), a.action.as_str(), a.index),
            ("TimeChange", "Pulse", Some(0))
        );
        assert!(a.data.unwrap().contains("BeforeModifyTime"));
        assert_eq!(parse(&parts[1].body).unwrap().code, "NTPAdjustTime");
    }

    #[test]
    fn motion_blind_loss_and_heartbeat() {
        let c = |s: &str| classify(&parse(s.as_bytes()).unwrap());
        assert_eq!(
            c("Code=VideoMotion;action=Start;index=0"),
            Signal::MotionStart
        );
        assert_eq!(
            c("Code=VideoMotion;action=Stop;index=0"),
            Signal::MotionStop
        );
        assert_eq!(c("Code=VideoBlind;action=Start;index=0"), Signal::Tamper);
        assert_eq!(
            c("Code=VideoLoss;action=Stop;index=0"),
            Signal::VideoLoss(false)
        );
        assert_eq!(c("Heartbeat"), Signal::Heartbeat);
        assert!(parse(b"garbage").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = parse(s.as_bytes()).map(|e| classify(&e));
        }
    }
}
