//! Where a camera's still comes from, and one fetch of it: `snapshot_url` when configured,
//! otherwise the vendor's own endpoint under `http_base` (Hikvision ISAPI with the NVR
//! fallback, Dahua `snapshot.cgi`, ONVIF `GetSnapshotUri` discovered once and cached).
//! HTTP Digest (and Basic only where the camera's config allows it), as for probes.

use std::time::Duration;

use crate::config::{Camera, Url, Vendor};
use crate::proto::http::{self, Response};
use crate::proto::onvif::{self as soap, device, media};

pub const HIKVISION: &str = "/ISAPI/Streaming/channels/101/picture";
/// Hikvision NVRs serve their cameras' stills here (the camera path answers an error).
pub const HIKVISION_NVR: &str = "/ISAPI/ContentMgmt/StreamingProxy/channels/101/picture";
pub const DAHUA: &str = "/cgi-bin/snapshot.cgi?channel=1";
/// The ONVIF device service when `onvif_url` is not set (the contract's default path).
pub const ONVIF_DEVICE: &str = "/onvif/device_service";
/// The largest still read from a camera (an 8 MP still is under 2 MiB).
pub const MAX_STILL_BODY: usize = 4 << 20;

/// What a camera's fetches learnt and keep.
#[derive(Debug, Clone, Default)]
pub struct Cache {
    /// The Hikvision camera path failed and the NVR path worked.
    pub hikvision_nvr: bool,
    /// The still URL the ONVIF media service gave.
    pub onvif_uri: Option<Url>,
}

async fn get(url: &Url, cam: &Camera) -> Result<Response, String> {
    http::request_auth(url, "GET", &[], &[], cam.creds(), MAX_STILL_BODY)
        .await
        .map_err(|e| e.to_string())
}

/// The body of a good answer, or why there is none.
fn still_of(r: Response, cam: &Camera) -> Result<Vec<u8>, String> {
    match r.status {
        200 if !r.body.is_empty() => Ok(r.body),
        200 => Err("HTTP 200 with an empty body".into()),
        401 if cam.password.is_some() && !cam.basic_auth && http::only_basic(&r.headers) => {
            Err(http::BASIC_ONLY.into())
        }
        401 | 403 if cam.password.is_some() => {
            Err(format!("HTTP {} with the configured credentials", r.status))
        }
        401 | 403 => Err(format!(
            "HTTP {} and no credentials are configured",
            r.status
        )),
        s => Err(format!("HTTP {s}")),
    }
}

/// One still from `cam` (unbounded in time: the caller bounds it).
pub async fn fetch(
    cam: &Camera,
    cache: &mut Cache,
    timeout: Duration,
    now_ms: &(dyn Fn() -> i64 + Sync),
) -> Result<Vec<u8>, String> {
    if let Some(u) = &cam.snapshot_url {
        return still_of(get(u, cam).await?, cam);
    }
    match cam.vendor {
        Vendor::Hikvision => {
            if !cache.hikvision_nvr {
                let r = get(&cam.http_base.join(HIKVISION), cam).await?;
                if r.status == 200 || r.status == 401 {
                    return still_of(r, cam);
                }
                let first = r.status;
                let r = get(&cam.http_base.join(HIKVISION_NVR), cam).await?;
                if r.status != 200 {
                    return Err(format!(
                        "HTTP {first} at {HIKVISION}, HTTP {} at the NVR path",
                        r.status
                    ));
                }
                cache.hikvision_nvr = true;
                tracing::info!(camera = %cam.id, "stills come through the NVR path");
                return still_of(r, cam);
            }
            still_of(get(&cam.http_base.join(HIKVISION_NVR), cam).await?, cam)
        }
        Vendor::Dahua => still_of(get(&cam.http_base.join(DAHUA), cam).await?, cam),
        Vendor::Onvif => {
            let uri = match &cache.onvif_uri {
                Some(u) => u.clone(),
                None => {
                    let u = onvif_snapshot_uri(cam, timeout, now_ms).await?;
                    // The query may carry credentials (some firmwares put user= and pwd= there).
                    let path = u.path.split('?').next().unwrap_or("");
                    tracing::info!(camera = %cam.id, path = %crate::logs::clip(path), "ONVIF still URL found");
                    cache.onvif_uri = Some(u.clone());
                    u
                }
            };
            let r = still_of(get(&uri, cam).await?, cam);
            if r.is_err() {
                // The URL may have changed (a reboot, a new profile): ask again next time.
                cache.onvif_uri = None;
            }
            r
        }
        Vendor::Generic => Err("a generic camera needs snapshot_url for stills".into()),
    }
}

/// GetCapabilities (Media) → GetProfiles → GetSnapshotUri on the first profile; every
/// address the camera reports is kept on the configured host and port.
async fn onvif_snapshot_uri(
    cam: &Camera,
    timeout: Duration,
    now_ms: &(dyn Fn() -> i64 + Sync),
) -> Result<Url, String> {
    let device_url = cam
        .onvif_url
        .clone()
        .unwrap_or_else(|| cam.http_base.join(ONVIF_DEVICE));
    let (user, pass) = cam
        .creds()
        .map(|c| (c.user.to_string(), c.password.to_string()))
        .unwrap_or_default();
    let offset = device::clock_offset(&device_url, timeout, now_ms)
        .await
        .unwrap_or(0);
    let header =
        || (!user.is_empty()).then(|| soap::token(&user, &pass, &soap::created(now_ms(), offset)));
    let call = |url: Url, action: &'static str, body: String, h: Option<String>| async move {
        let r = soap::call(
            &url,
            action,
            soap::envelope(h.as_deref(), &body),
            None,
            timeout,
        )
        .await
        .map_err(|e| format!("{}: {e}", soap::action_name(action)))?;
        if r.status != 200 {
            return Err(format!(
                "{} answered HTTP {}",
                soap::action_name(action),
                r.status
            ));
        }
        Ok(r.body)
    };
    let (a, b) = media::GET_CAPABILITIES;
    let caps = call(device_url.clone(), a, b.into(), header()).await?;
    let media_url = crate::heavy::parse(caps, |x| Ok::<_, String>(media::media_xaddr(x)))
        .await?
        .and_then(|x| Url::parse(&x).ok())
        .map(|x| device_url.rebased(&x))
        .unwrap_or_else(|| device_url.clone());
    let (a, b) = media::GET_PROFILES;
    let profiles = call(media_url.clone(), a, b.into(), header()).await?;
    let token = crate::heavy::parse(profiles, |x| Ok::<_, String>(media::first_profile(x)))
        .await?
        .ok_or("GetProfiles listed no profile")?;
    let body = media::snapshot_uri_body(&token);
    let answer = call(media_url, media::GET_SNAPSHOT_URI, body, header()).await?;
    let uri = crate::heavy::parse(answer, |x| Ok::<_, String>(media::snapshot_uri(x)))
        .await?
        .ok_or("GetSnapshotUri gave no URI")?;
    let reported = Url::parse(&uri).map_err(|e| format!("GetSnapshotUri gave a bad URI: {e}"))?;
    Ok(device_url.rebased(&reported))
}
