//! The ONVIF pull-point subscription task (the I/O around the pure [`super::onvif`]).

use std::time::Duration;

use serde_json::json;

use super::coalesce::Input;
use super::{camtime, onvif, Hub};
use crate::clock::rfc3339_ms;
use crate::config::Camera;
use crate::health::onvif as dev;
use crate::http::{self, Url};
use crate::uplink::session::Backoff;

async fn call(
    url: &Url,
    action: &str,
    body: String,
    timeout: Duration,
) -> Result<http::Response, String> {
    let ct = format!("application/soap+xml; charset=utf-8; action=\"{action}\"");
    tokio::time::timeout(
        timeout,
        http::request(
            url,
            "POST",
            &[("Content-Type", ct)],
            body.as_bytes(),
            1 << 20,
        ),
    )
    .await
    .map_err(|_| {
        format!(
            "no answer to {} in time",
            action.rsplit('/').next().unwrap_or(action)
        )
    })?
    .map_err(|e| e.to_string())
}

/// `reported` with the scheme, host and port of `configured`: cameras behind NAT or with
/// several addresses report one we may not reach.
fn same_host(configured: &Url, reported: &Url) -> Url {
    let mut u = configured.clone();
    u.path = reported.path.clone();
    u
}

fn lease(p: &onvif::Pulled) -> Option<i64> {
    Some(
        camtime::parse(p.termination_time.as_deref()?)?
            - camtime::parse(p.current_time.as_deref()?)?,
    )
}

impl Hub {
    fn token(&self, user: &str, pass: &str, offset: i64, to: Option<(&Url, &str)>) -> String {
        let created = rfc3339_ms(self.clock.now_ms() + offset);
        let created = format!("{}Z", &created[..19]);
        let nonce: [u8; 16] = rand::random();
        let mut h = dev::security_header(user, pass, &nonce, &created);
        if let Some((to, action)) = to {
            h.push_str(&format!(
                r#"<wsa:Action xmlns:wsa="http://www.w3.org/2005/08/addressing">{action}</wsa:Action><wsa:To xmlns:wsa="http://www.w3.org/2005/08/addressing">{}</wsa:To>"#,
                dev::xml_escape(&to.absolute())
            ));
        }
        h
    }

    /// One ONVIF pull-point subscription, until it fails: the clock offset, the event
    /// service, CreatePullPointSubscription, then PullMessages long-polls, renewing half way
    /// through the lease as the camera's own clock counts it (it may be years off ours).
    pub(super) async fn onvif_once(
        &self,
        cam: &Camera,
        backoff: &mut Backoff,
    ) -> Result<(), String> {
        let base = cam
            .onvif_url
            .as_deref()
            .and_then(|u| Url::parse(u).ok())
            .ok_or("events = [\"onvif\"] needs onvif_url")?;
        let (user, pass) = match (&cam.username, &cam.password) {
            (Some(u), Some(p)) => (u.clone(), p.expose().to_string()),
            _ => return Err("ONVIF events need username and password".into()),
        };
        let timeout = self.config.events.read_timeout;
        let t0 = self.clock.now_ms();
        let r = call(
            &base,
            "http://www.onvif.org/ver10/device/wsdl/GetSystemDateAndTime",
            dev::envelope(
                None,
                r#"<GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/>"#,
            ),
            timeout,
        )
        .await?;
        let offset = dev::parse_system_date_time(&r.body)
            .map(|c| c - (t0 + self.clock.now_ms()) / 2)
            .unwrap_or(0);
        let caps = "http://www.onvif.org/ver10/device/wsdl/GetCapabilities";
        let r = call(&base, caps, dev::envelope(Some(&self.token(&user, &pass, offset, None)), r#"<GetCapabilities xmlns="http://www.onvif.org/ver10/device/wsdl"><Category>Events</Category></GetCapabilities>"#), timeout).await?;
        let ev_url = onvif::events_xaddr(&r.body)
            .and_then(|x| Url::parse(&x).ok())
            .map(|x| same_host(&base, &x))
            .unwrap_or_else(|| base.clone());
        let create = "http://www.onvif.org/ver10/events/wsdl/EventPortType/CreatePullPointSubscriptionRequest";
        let r = call(&ev_url, create, dev::envelope(Some(&self.token(&user, &pass, offset, None)), r#"<CreatePullPointSubscription xmlns="http://www.onvif.org/ver10/events/wsdl"><InitialTerminationTime>PT60S</InitialTerminationTime></CreatePullPointSubscription>"#), timeout).await?;
        if r.status != 200 {
            return Err(format!(
                "CreatePullPointSubscription answered HTTP {}",
                r.status
            ));
        }
        let sub = onvif::subscription_address(&r.body)
            .and_then(|a| Url::parse(&a).ok())
            .map(|a| same_host(&base, &a))
            .ok_or("CreatePullPointSubscription gave no address")?;
        self.onvif_subs
            .lock()
            .unwrap()
            .insert(cam.id.clone(), (sub.clone(), offset));
        let mut renew_at = self.clock.now_ms()
            + lease(&onvif::parse_pull(&r.body).unwrap_or_default()).unwrap_or(60_000) / 2;
        self.state(&cam.id, "onvif", |st| {
            st.connected = true;
            st.last_error = None;
        });
        backoff.reset();
        tracing::info!(camera = %cam.id, source = "onvif", "event subscription created");
        let pull =
            "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription/PullMessagesRequest";
        let renew = "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/RenewRequest";
        loop {
            if self.clock.now_ms() >= renew_at {
                let h = self.token(&user, &pass, offset, Some((&sub, renew)));
                let r = call(&sub, renew, dev::envelope(Some(&h), r#"<Renew xmlns="http://docs.oasis-open.org/wsn/b-2"><TerminationTime>PT60S</TerminationTime></Renew>"#), timeout).await?;
                if r.status != 200 {
                    return Err(format!("Renew answered HTTP {}", r.status));
                }
                renew_at = self.clock.now_ms()
                    + lease(&onvif::parse_pull(&r.body).unwrap_or_default()).unwrap_or(60_000) / 2;
            }
            let h = self.token(&user, &pass, offset, Some((&sub, pull)));
            let body = r#"<PullMessages xmlns="http://www.onvif.org/ver10/events/wsdl"><Timeout>PT5S</Timeout><MessageLimit>32</MessageLimit></PullMessages>"#;
            let r = call(
                &sub,
                pull,
                dev::envelope(Some(&h), body),
                timeout + Duration::from_secs(5),
            )
            .await?;
            if r.status != 200 {
                return Err(format!("PullMessages answered HTTP {}", r.status));
            }
            let pulled = crate::heavy::parse(r.body, onvif::parse_pull).await?;
            for n in pulled
                .notifications
                .iter()
                .filter(|n| !onvif::is_initialized(n))
            {
                let now = self.clock.now_ms();
                let detail = json!({
                    "event": n.topic,
                    "camera_time": n.utc_time,
                    "camera_ts": n.utc_time.as_deref().and_then(camtime::parse).map(rfc3339_ms),
                });
                match onvif::classify(n) {
                    onvif::Signal::Motion(on) => {
                        let input = if on { Input::Active } else { Input::Inactive };
                        if let Some(o) = self.coalescer_input(&cam.id, "onvif", input, now) {
                            self.emit(&cam.id, "onvif", o, detail).await;
                        }
                    }
                    onvif::Signal::Tamper(true) => self.tamper(&cam.id, "onvif", detail).await,
                    _ => {}
                }
            }
        }
    }

    /// Best effort at shutdown, so the camera frees the subscription at once.
    pub(super) async fn onvif_unsubscribe(&self, cam: &Camera) {
        let Some((sub, offset)) = self.onvif_subs.lock().unwrap().remove(&cam.id) else {
            return;
        };
        let (Some(user), Some(pass)) = (&cam.username, &cam.password) else {
            return;
        };
        let action = "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/UnsubscribeRequest";
        let h = self.token(user, pass.expose(), offset, Some((&sub, action)));
        let _ = call(
            &sub,
            action,
            dev::envelope(
                Some(&h),
                r#"<Unsubscribe xmlns="http://docs.oasis-open.org/wsn/b-2"/>"#,
            ),
            Duration::from_secs(2),
        )
        .await;
    }
}
