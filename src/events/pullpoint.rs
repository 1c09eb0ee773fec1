//! The ONVIF pull-point subscription task (the I/O around the pure
//! [`crate::proto::onvif::events`]).

use std::time::Duration;

use serde_json::json;

use super::coalesce::Input;
use super::Hub;
use crate::clock::rfc3339_ms;
use crate::config::Camera;
use crate::proto::backoff::Backoff;
use crate::proto::camtime;
use crate::proto::http::{self, Url};
use crate::proto::onvif::events::{self as onvif, Request};
use crate::proto::onvif::{self as soap, device};
use crate::record::Source;

async fn call(
    url: &Url,
    (action, body): Request,
    header: Option<String>,
    timeout: Duration,
) -> Result<http::Response, String> {
    soap::call(
        url,
        action,
        soap::envelope(header.as_deref(), body),
        None,
        timeout,
    )
    .await
    .map_err(|e| format!("{}: {e}", soap::action_name(action)))
}

fn lease(p: &onvif::Pulled) -> Option<i64> {
    Some(
        camtime::parse(p.termination_time.as_deref()?)?
            - camtime::parse(p.current_time.as_deref()?)?,
    )
}

impl Hub {
    fn token(&self, user: &str, pass: &str, offset: i64, to: Option<(&Url, &str)>) -> String {
        let mut h = soap::token(user, pass, &soap::created(self.clock.now_ms(), offset));
        if let Some((to, action)) = to {
            h.push_str(&onvif::addressing(&to.absolute(), action));
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
            .clone()
            .ok_or("events = [\"onvif\"] needs onvif_url")?;
        let (user, pass) = match cam.creds() {
            Some(c) => (c.user.to_string(), c.password.to_string()),
            None => return Err("ONVIF events need a username".into()),
        };
        let timeout = self.config.events.read_timeout;
        let clock = self.clock.clone();
        // A camera that cannot tell its time still gets a token on ours.
        let offset = match device::clock_offset(&base, timeout, move || clock.now_ms()).await {
            Ok(o) => o,
            Err(device::OffsetError::Unreachable(e)) => return Err(e),
            Err(device::OffsetError::Other(_)) => 0,
        };
        let h = self.token(&user, &pass, offset, None);
        let r = call(&base, onvif::GET_CAPABILITIES, Some(h), timeout).await?;
        // Every answer is parsed off the async workers when it is large (heavy::parse).
        let ev_url = crate::heavy::parse(r.body, |b| Ok::<_, String>(onvif::events_xaddr(b)))
            .await?
            .and_then(|x| Url::parse(&x).ok())
            .map(|x| base.rebased(&x))
            .unwrap_or_else(|| base.clone());
        let h = self.token(&user, &pass, offset, None);
        let r = call(&ev_url, onvif::CREATE_PULL_POINT, Some(h), timeout).await?;
        if r.status != 200 {
            return Err(format!(
                "CreatePullPointSubscription answered HTTP {}",
                r.status
            ));
        }
        let (address, first_lease) = crate::heavy::parse(r.body, |b| {
            Ok::<_, String>((
                onvif::subscription_address(b),
                lease(&onvif::parse_pull(b).unwrap_or_default()),
            ))
        })
        .await?;
        let sub = address
            .and_then(|a| Url::parse(&a).ok())
            .map(|a| base.rebased(&a))
            .ok_or("CreatePullPointSubscription gave no address")?;
        self.onvif_subs
            .lock()
            .unwrap()
            .insert(cam.id.clone(), (sub.clone(), offset));
        let mut renew_at = self.clock.now_ms() + first_lease.unwrap_or(60_000) / 2;
        self.state(&cam.id, Source::Onvif, |st| {
            st.connected = true;
            st.last_error = None;
        });
        backoff.reset();
        tracing::info!(camera = %cam.id, source = %Source::Onvif, "event subscription created");
        loop {
            if self.clock.now_ms() >= renew_at {
                let h = self.token(&user, &pass, offset, Some((&sub, onvif::RENEW.0)));
                let r = call(&sub, onvif::RENEW, Some(h), timeout).await?;
                if r.status != 200 {
                    return Err(format!("Renew answered HTTP {}", r.status));
                }
                let renewed = crate::heavy::parse(r.body, |b| {
                    Ok::<_, String>(lease(&onvif::parse_pull(b).unwrap_or_default()))
                })
                .await?;
                renew_at = self.clock.now_ms() + renewed.unwrap_or(60_000) / 2;
            }
            let h = self.token(&user, &pass, offset, Some((&sub, onvif::PULL_MESSAGES.0)));
            let r = call(
                &sub,
                onvif::PULL_MESSAGES,
                Some(h),
                timeout + onvif::PULL_WAIT,
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
                        if let Some(o) = self.coalescer_input(&cam.id, Source::Onvif, input, now) {
                            self.emit(&cam.id, Source::Onvif, o, detail).await;
                        }
                    }
                    onvif::Signal::Tamper(true) => {
                        self.tamper(&cam.id, Source::Onvif, detail).await
                    }
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
        let Some(c) = cam.creds() else {
            return;
        };
        let h = self.token(
            c.user,
            c.password,
            offset,
            Some((&sub, onvif::UNSUBSCRIBE.0)),
        );
        let _ = call(&sub, onvif::UNSUBSCRIBE, Some(h), Duration::from_secs(2)).await;
    }
}
