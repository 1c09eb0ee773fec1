//! ONVIF events over a pull-point subscription: pure parsing of the SOAP answers, and the
//! topic rules. Motion from `RuleEngine/CellMotionDetector/Motion` (`IsMotion`) and
//! `VideoSource/MotionAlarm` (`State`); tamper from `VideoSource/GlobalSceneChange/*`,
//! `VideoSource/ImageTooBlurry|Dark|Bright/*` and `RuleEngine/TamperDetector/Tamper`.
//! `PropertyOperation="Initialized"` sets the initial state and creates no event. Elements and
//! topics are matched by local name: namespaces and prefixes differ by vendor. The requests
//! (with their actions) are built here too; the subscription task is `events::pullpoint`.

use std::ops::ControlFlow;

use crate::proto::xml::{walk, Node};

/// A request of the event service: (action URI, body element).
pub type Request = (&'static str, &'static str);

/// GetCapabilities (device service) for the event service's address.
pub const GET_CAPABILITIES: Request = (
    "http://www.onvif.org/ver10/device/wsdl/GetCapabilities",
    r#"<GetCapabilities xmlns="http://www.onvif.org/ver10/device/wsdl"><Category>Events</Category></GetCapabilities>"#,
);
/// A 60 s subscription.
pub const CREATE_PULL_POINT: Request = (
    "http://www.onvif.org/ver10/events/wsdl/EventPortType/CreatePullPointSubscriptionRequest",
    r#"<CreatePullPointSubscription xmlns="http://www.onvif.org/ver10/events/wsdl"><InitialTerminationTime>PT60S</InitialTerminationTime></CreatePullPointSubscription>"#,
);
/// A long poll of 5 s for at most 32 messages.
pub const PULL_MESSAGES: Request = (
    "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription/PullMessagesRequest",
    r#"<PullMessages xmlns="http://www.onvif.org/ver10/events/wsdl"><Timeout>PT5S</Timeout><MessageLimit>32</MessageLimit></PullMessages>"#,
);
/// How long [`PULL_MESSAGES`] may hold the answer.
pub const PULL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
pub const RENEW: Request = (
    "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/RenewRequest",
    r#"<Renew xmlns="http://docs.oasis-open.org/wsn/b-2"><TerminationTime>PT60S</TerminationTime></Renew>"#,
);
pub const UNSUBSCRIBE: Request = (
    "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/UnsubscribeRequest",
    r#"<Unsubscribe xmlns="http://docs.oasis-open.org/wsn/b-2"/>"#,
);

/// The WS-Addressing `Action` and `To` headers a subscription manager wants.
pub fn addressing(to: &str, action: &str) -> String {
    format!(
        r#"<wsa:Action xmlns:wsa="http://www.w3.org/2005/08/addressing">{action}</wsa:Action><wsa:To xmlns:wsa="http://www.w3.org/2005/08/addressing">{}</wsa:To>"#,
        super::xml_escape(to)
    )
}

/// The most notifications read from one PullMessages answer (cameras send a handful; the
/// request asks for at most 64).
pub const MAX_NOTIFICATIONS: usize = 1024;
/// The most data items kept per notification.
pub const MAX_ITEMS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notification {
    /// The topic without namespace prefixes: `RuleEngine/CellMotionDetector/Motion`.
    pub topic: String,
    pub operation: Option<String>,
    pub utc_time: Option<String>,
    pub data: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pulled {
    pub current_time: Option<String>,
    pub termination_time: Option<String>,
    pub notifications: Vec<Notification>,
}

/// Strips `tns1:` style prefixes from every path segment of a topic.
pub fn clean_topic(t: &str) -> String {
    t.trim()
        .split('/')
        .map(|seg| seg.rsplit(':').next().unwrap_or(seg))
        .collect::<Vec<_>>()
        .join("/")
}

/// Parses a PullMessagesResponse (or a CreatePullPointSubscriptionResponse, for the times and,
/// through [`subscription_address`], the address).
pub fn parse_pull(xml: &[u8]) -> Result<Pulled, String> {
    let mut out = Pulled::default();
    let mut cur: Option<Notification> = None;
    let mut too_many = false;
    walk(xml, |path, node| {
        match node {
            Node::Open(e) => match path.last() {
                Some("NotificationMessage") => cur = Some(Notification::default()),
                Some("Message")
                    if path.parent() == Some("Message")
                        || e.attr("UtcTime").is_some()
                        || e.attr("PropertyOperation").is_some() =>
                {
                    if let Some(n) = cur.as_mut() {
                        n.operation = e.attr("PropertyOperation");
                        n.utc_time = e.attr("UtcTime");
                    }
                }
                Some("SimpleItem") if path.contains("Data") => {
                    if let (Some(n), Some(k), Some(v)) =
                        (cur.as_mut(), e.attr("Name"), e.attr("Value"))
                    {
                        if n.data.len() < MAX_ITEMS {
                            n.data.push((k, v));
                        }
                    }
                }
                _ => {}
            },
            Node::Close => {
                if path.last() == Some("NotificationMessage") {
                    if let Some(n) = cur.take() {
                        if out.notifications.len() >= MAX_NOTIFICATIONS {
                            too_many = true;
                            return ControlFlow::Break(());
                        }
                        out.notifications.push(n);
                    }
                }
            }
            Node::Text(text) => match path.last() {
                Some("Topic") => {
                    if let Some(n) = cur.as_mut() {
                        n.topic = clean_topic(text);
                    }
                }
                Some("CurrentTime") => out.current_time = Some(text.to_string()),
                Some("TerminationTime") => out.termination_time = Some(text.to_string()),
                _ => {}
            },
        }
        ControlFlow::Continue(())
    })
    .map_err(|e| e.to_string())?;
    if too_many {
        return Err(format!(
            "more than {MAX_NOTIFICATIONS} notifications in one answer"
        ));
    }
    Ok(out)
}

/// The pull-point address in a CreatePullPointSubscriptionResponse.
pub fn subscription_address(xml: &[u8]) -> Option<String> {
    let t = crate::proto::onvif::texts(xml).ok()?;
    t.into_iter()
        .find(|(k, _)| k == "Address")
        .map(|(_, v)| v.trim().to_string())
}

/// The event service address in a GetCapabilitiesResponse (`Events/XAddr`).
pub fn events_xaddr(xml: &[u8]) -> Option<String> {
    let mut found = None;
    walk(xml, |path, node| match node {
        Node::Text(t) if path.last() == Some("XAddr") && path.contains("Events") => {
            found = Some(t.to_string());
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .ok()?;
    found
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Motion(bool),
    Tamper(bool),
    Other,
}

fn truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1")
}

pub fn classify(n: &Notification) -> Signal {
    let value = |names: &[&str]| {
        n.data
            .iter()
            .find(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| truthy(v))
    };
    let t = n.topic.as_str();
    if t.ends_with("RuleEngine/CellMotionDetector/Motion") {
        value(&["IsMotion"])
            .map(Signal::Motion)
            .unwrap_or(Signal::Other)
    } else if t.ends_with("VideoSource/MotionAlarm") {
        value(&["State"])
            .map(Signal::Motion)
            .unwrap_or(Signal::Other)
    } else if t.contains("VideoSource/GlobalSceneChange")
        || t.contains("VideoSource/ImageTooBlurry")
        || t.contains("VideoSource/ImageTooDark")
        || t.contains("VideoSource/ImageTooBright")
        || t.ends_with("RuleEngine/TamperDetector/Tamper")
    {
        value(&["State", "IsTamper"])
            .map(Signal::Tamper)
            .unwrap_or(Signal::Other)
    } else {
        Signal::Other
    }
}

pub fn is_initialized(n: &Notification) -> bool {
    n.operation
        .as_deref()
        .is_some_and(|o| o.eq_ignore_ascii_case("Initialized"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::fixture;

    #[test]
    fn our_pull_answers_give_motion_tamper_and_the_subscription() {
        let p = parse_pull(&crate::testdata::own("onvif_pullmessages_motion.xml")).unwrap();
        assert_eq!(p.current_time.as_deref(), Some("2026-11-30T14:04:07Z"));
        let signals: Vec<_> = p
            .notifications
            .iter()
            .filter(|n| !is_initialized(n))
            .map(classify)
            .collect();
        assert_eq!(
            signals,
            [
                Signal::Motion(true),
                Signal::Motion(true),
                Signal::Tamper(true),
                Signal::Motion(false)
            ]
        );
        assert_eq!(
            p.notifications.len(),
            5,
            "the Initialized one is parsed too"
        );
        assert_eq!(
            p.notifications[0].topic,
            "RuleEngine/CellMotionDetector/Motion"
        );
        let empty = parse_pull(&crate::testdata::own("onvif_pullmessages_empty.xml")).unwrap();
        assert!(empty.notifications.is_empty());
        let x = crate::testdata::own("onvif_createpullpoint.xml");
        assert_eq!(
            subscription_address(&x).as_deref(),
            Some("http://10.20.30.43/onvif/Events/PullSubManager_2026-11-30T14:03:10Z_7")
        );
        // The camera's clock is in the year 2000: the lease is read as the camera says.
        let p = parse_pull(&x).unwrap();
        assert_eq!(p.termination_time.as_deref(), Some("2000-01-01T00:12:40Z"));
    }

    #[test]
    fn real_initialized_answers_parse_and_create_no_motion() {
        for (name, count) in [
            ("onvif_pullmessages_hikvision_initialized.xml", 10),
            ("onvif_pullmessages_dahua_initialized.xml", 5),
        ] {
            let Some(x) = fixture(name) else { return };
            let p = parse_pull(&x).unwrap();
            assert_eq!(p.notifications.len(), count, "{name}");
            assert!(p.notifications.iter().all(is_initialized), "{name}");
            let motion: Vec<_> = p
                .notifications
                .iter()
                .filter(|n| matches!(classify(n), Signal::Motion(_)))
                .collect();
            assert!(!motion.is_empty(), "{name}");
            assert!(
                motion.iter().all(|n| classify(n) == Signal::Motion(false)),
                "{name}"
            );
        }
        if let Some(x) = fixture("onvif_pullmessages_dahua_initialized.xml") {
            let p = parse_pull(&x).unwrap();
            assert_eq!(p.current_time.as_deref(), Some("2019-02-11T14:16:01Z"));
            assert_eq!(
                p.notifications[0].topic,
                "RuleEngine/CellMotionDetector/Motion"
            );
        }
    }

    #[test]
    fn empty_pull_and_create_pull_point_answers() {
        if let Some(x) = fixture("onvif_pullmessages_empty_agsh_mockup.xml") {
            assert!(parse_pull(&x).unwrap().notifications.is_empty());
        }
        if let Some(x) = fixture("onvif_createpullpoint_dahua.xml") {
            assert_eq!(
                subscription_address(&x).as_deref(),
                Some("http://192.168.5.108/onvif/Subscription?Idx=11")
            );
            let p = parse_pull(&x).unwrap();
            assert_eq!(p.termination_time.as_deref(), Some("2019-02-10T08:47:20Z"));
        }
        if let Some(x) = fixture("onvif_createpullpoint_agsh_mockup.xml") {
            assert!(subscription_address(&x)
                .unwrap()
                .contains("SubscriptionId=0"));
        }
    }

    #[test]
    fn topics_and_values_by_rule() {
        let n = |topic: &str, k: &str, v: &str| Notification {
            topic: clean_topic(topic),
            data: vec![(k.into(), v.into())],
            ..Default::default()
        };
        assert_eq!(
            classify(&n(
                "tns1:RuleEngine/CellMotionDetector/Motion",
                "IsMotion",
                "true"
            )),
            Signal::Motion(true)
        );
        assert_eq!(
            classify(&n("tns1:VideoSource/MotionAlarm", "State", "1")),
            Signal::Motion(true)
        );
        assert_eq!(
            classify(&n("tns1:VideoSource/MotionAlarm", "State", "0")),
            Signal::Motion(false)
        );
        assert_eq!(
            classify(&n(
                "tns1:VideoSource/GlobalSceneChange/ImagingService",
                "State",
                "true"
            )),
            Signal::Tamper(true)
        );
        assert_eq!(
            classify(&n(
                "tns1:RuleEngine/TamperDetector/Tamper",
                "IsTamper",
                "false"
            )),
            Signal::Tamper(false)
        );
        assert_eq!(
            classify(&n(
                "tns1:Device/HardwareFailure/StorageFailure",
                "Failed",
                "true"
            )),
            Signal::Other
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = parse_pull(&b);
            let _ = subscription_address(&b);
            let _ = events_xaddr(&b);
        }
    }
}
