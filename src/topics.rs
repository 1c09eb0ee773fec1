//! Topic names, built and parsed in one place: the contract's layout
//! `{topic_prefix}/{ward}/{gateway}/{leaf}`, with the leaves `status`, `telemetry`, `event`,
//! `alert`, `cmd`, `cmd/result`, `camera/{id}/health` and `camera/{id}/snapshot/{event id}`. The gateway, the station tools, the
//! demo and the benches all use this module. Pure.

/// A topic's leaf below the gateway's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf<'a> {
    /// Birth, Last Will and clean offline (retained).
    Status,
    Telemetry,
    Event,
    Alert,
    /// Signed commands to the gateway.
    Cmd,
    CmdResult,
    /// A camera's health (retained).
    Health(&'a str),
    /// The still of a motion event: (camera, event id), raw JPEG bytes.
    Snapshot(&'a str, &'a str),
    /// Anything else below the root (e.g. the doctor's probe topic).
    Other(&'a str),
}

impl Leaf<'_> {
    /// The leaf as it appears in a topic.
    pub fn path(&self) -> String {
        match self {
            Leaf::Status => "status".into(),
            Leaf::Telemetry => "telemetry".into(),
            Leaf::Event => "event".into(),
            Leaf::Alert => "alert".into(),
            Leaf::Cmd => "cmd".into(),
            Leaf::CmdResult => "cmd/result".into(),
            Leaf::Health(cam) => format!("camera/{cam}/health"),
            Leaf::Snapshot(cam, id) => format!("camera/{cam}/snapshot/{id}"),
            Leaf::Other(s) => (*s).into(),
        }
    }
}

/// `{prefix}/{ward}/{gateway}`.
pub fn root(prefix: &str, ward: &str, gateway: &str) -> String {
    format!("{prefix}/{ward}/{gateway}")
}

/// `{root}/{leaf}`.
pub fn topic(root: &str, leaf: Leaf<'_>) -> String {
    format!("{root}/{}", leaf.path())
}

/// The filter for everything from every gateway of a ward (`+` for every ward).
pub fn ward_filter(prefix: &str, ward: &str) -> String {
    format!("{prefix}/{ward}/#")
}

/// A parsed topic: (ward, gateway, leaf), or `None` outside `{prefix}/{ward}/{gateway}/...`.
pub fn parse<'a>(prefix: &str, topic: &'a str) -> Option<(&'a str, &'a str, Leaf<'a>)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let mut parts = rest.splitn(3, '/');
    let (ward, gw, leaf) = (parts.next()?, parts.next()?, parts.next()?);
    if ward.is_empty() || gw.is_empty() || leaf.is_empty() {
        return None;
    }
    let leaf = match leaf {
        "status" => Leaf::Status,
        "telemetry" => Leaf::Telemetry,
        "event" => Leaf::Event,
        "alert" => Leaf::Alert,
        "cmd" => Leaf::Cmd,
        "cmd/result" => Leaf::CmdResult,
        other => {
            let cam = other.strip_prefix("camera/");
            match (
                cam.and_then(|c| c.strip_suffix("/health")),
                cam.and_then(|c| c.split_once("/snapshot/")),
            ) {
                (Some(cam), _) if !cam.is_empty() && !cam.contains('/') => Leaf::Health(cam),
                (_, Some((cam, id)))
                    if !cam.is_empty()
                        && !cam.contains('/')
                        && !id.is_empty()
                        && !id.contains('/') =>
                {
                    Leaf::Snapshot(cam, id)
                }
                _ => Leaf::Other(other),
            }
        }
    };
    Some((ward, gw, leaf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leaf_round_trips() {
        let r = root("camgw", "q1-p05", "gw03");
        assert_eq!(r, "camgw/q1-p05/gw03");
        for leaf in [
            Leaf::Status,
            Leaf::Telemetry,
            Leaf::Event,
            Leaf::Alert,
            Leaf::Cmd,
            Leaf::CmdResult,
            Leaf::Health("cam01"),
            Leaf::Snapshot("cam01", "01234567-89ab-cdef-0123-456789abcdef"),
            Leaf::Other("doctor/0000abcd"),
        ] {
            let t = topic(&r, leaf);
            assert_eq!(parse("camgw", &t), Some(("q1-p05", "gw03", leaf)), "{t}");
        }
        assert_eq!(
            topic(&r, Leaf::Health("cam01")),
            "camgw/q1-p05/gw03/camera/cam01/health"
        );
    }

    #[test]
    fn foreign_and_short_topics_are_not_ours() {
        assert_eq!(parse("camgw", "other/q1/gw/status"), None);
        assert_eq!(parse("camgw", "camgwx/q1/gw/status"), None);
        assert_eq!(parse("camgw", "camgw/q1/gw"), None);
        assert_eq!(parse("camgw", "camgw//gw/status"), None);
        assert_eq!(
            parse("camgw", "camgw/q1/gw/camera/a/b/health"),
            Some(("q1", "gw", Leaf::Other("camera/a/b/health")))
        );
        assert_eq!(
            parse("camgw", "camgw/q1/gw/camera/a/snapshot/x/y"),
            Some(("q1", "gw", Leaf::Other("camera/a/snapshot/x/y")))
        );
    }
}
