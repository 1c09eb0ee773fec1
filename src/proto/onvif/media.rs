//! ONVIF media service, for event stills: where the media service is (GetCapabilities,
//! `Media/XAddr`), the first media profile (GetProfiles), and its still URL
//! (GetSnapshotUri). Pure parsing and the requests; the caller caches what it found.

use std::ops::ControlFlow;

use crate::proto::xml::{walk, Node};

pub use super::events::Request;

/// GetCapabilities (device service) for the media service's address.
pub const GET_CAPABILITIES: Request = (
    "http://www.onvif.org/ver10/device/wsdl/GetCapabilities",
    r#"<GetCapabilities xmlns="http://www.onvif.org/ver10/device/wsdl"><Category>Media</Category></GetCapabilities>"#,
);
pub const GET_PROFILES: Request = (
    "http://www.onvif.org/ver10/media/wsdl/GetProfiles",
    r#"<GetProfiles xmlns="http://www.onvif.org/ver10/media/wsdl"/>"#,
);
/// The action of GetSnapshotUri; the body names a profile ([`snapshot_uri_body`]).
pub const GET_SNAPSHOT_URI: &str = "http://www.onvif.org/ver10/media/wsdl/GetSnapshotUri";

/// The GetSnapshotUri request body for `profile` (escaped).
pub fn snapshot_uri_body(profile: &str) -> String {
    format!(
        r#"<GetSnapshotUri xmlns="http://www.onvif.org/ver10/media/wsdl"><ProfileToken>{}</ProfileToken></GetSnapshotUri>"#,
        super::xml_escape(profile)
    )
}

/// The media service address in a GetCapabilitiesResponse (`Media/XAddr`).
pub fn media_xaddr(xml: &[u8]) -> Option<String> {
    let mut found = None;
    walk(xml, |path, node| match node {
        Node::Text(t) if path.last() == Some("XAddr") && path.parent() == Some("Media") => {
            found = Some(t.to_string());
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .ok()?;
    found
}

/// The token of the first profile in a GetProfilesResponse (the main stream on every
/// camera we know).
pub fn first_profile(xml: &[u8]) -> Option<String> {
    let mut found = None;
    walk(xml, |path, node| match node {
        Node::Open(e) if path.last() == Some("Profiles") => {
            found = e.attr("token").filter(|t| !t.is_empty() && t.len() <= 64);
            if found.is_some() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        _ => ControlFlow::Continue(()),
    })
    .ok()?;
    found
}

/// The still URL in a GetSnapshotUriResponse (`MediaUri/Uri`).
pub fn snapshot_uri(xml: &[u8]) -> Option<String> {
    let mut found = None;
    walk(xml, |path, node| match node {
        Node::Text(t) if path.last() == Some("Uri") && path.parent() == Some("MediaUri") => {
            found = Some(t.to_string());
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .ok()?;
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::own;

    #[test]
    fn real_shaped_answers_give_the_media_address_profile_and_still_url() {
        assert_eq!(
            media_xaddr(&own("onvif_getcapabilities_media.xml")).as_deref(),
            Some("http://192.168.1.64/onvif/Media")
        );
        assert_eq!(
            first_profile(&own("onvif_getprofiles.xml")).as_deref(),
            Some("Profile_1")
        );
        assert_eq!(
            snapshot_uri(&own("onvif_getsnapshoturi.xml")).as_deref(),
            Some("http://192.168.1.64/onvif-http/snapshot?Profile_1")
        );
    }

    #[test]
    fn answers_without_the_parts_give_none() {
        let fault =
            br#"<Envelope><Body><Fault><Reason><Text>no</Text></Reason></Fault></Body></Envelope>"#;
        assert_eq!(media_xaddr(fault), None);
        assert_eq!(first_profile(fault), None);
        assert_eq!(snapshot_uri(fault), None);
        assert!(snapshot_uri_body("a<b").contains("a&lt;b"));
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = (media_xaddr(&b), first_profile(&b), snapshot_uri(&b));
        }
    }
}
