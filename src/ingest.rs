//! HTTP ingest: `POST /v1/events` with `{"camera","kind":"motion","state"}`.
//!
//! Answers 202 `{"id","seq"}` only once the buffer accepted the event under the sync mode in
//! force (after the fsync with `always`), 400 for malformed input, 404 for an unknown camera,
//! 413 for bodies over 64 KiB, 503 while the buffer cannot take it. Every error is a JSON body
//! `{"error": "..."}`; nothing is buffered for a refused request.
//!
//! Anything on the box can reach this port, so the server is bounded (see [`serve`]): at most
//! [`Limits::connections`] connections at once (503 beyond), a request head must arrive within
//! [`HEAD_TIMEOUT`], a body within [`BODY_TIMEOUT`], and no connection lives longer than
//! [`CONN_LIFETIME`]. The connection limit follows from the file descriptors the process may
//! open, with enough reserved for probes, event streams, the broker and the buffer, so
//! half-sent requests can never starve them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::buffer::{AppendError, Buffer};
use crate::clock::Clock;
use crate::config::Config;
use crate::record::{format_id, Body as RecordBody, MotionState, NewRecord, Source};

pub const MAX_BODY: usize = 64 * 1024;
/// A request head must be complete this long after the connection opens (or goes idle).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A request body must be complete this long after its head.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// No ingest connection lives longer than this (keep-alive included).
pub const CONN_LIFETIME: Duration = Duration::from_secs(60);
/// The most ingest connections at once, when file descriptors allow.
pub const MAX_CONNECTIONS: usize = 64;

/// How many connections the server takes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub connections: usize,
}

impl Limits {
    /// From the soft file-descriptor limit and the number of cameras: every camera may need
    /// a few descriptors at once (a probe round opens TCP checks, snapshot, RTSP and ONVIF
    /// connections; event streams hold one each), plus a fixed reserve for the buffer, the
    /// broker links, logs and the board. Ingest gets what is left, at most
    /// [`MAX_CONNECTIONS`] and at least 2.
    pub fn for_fds(soft_limit: u64, cameras: usize) -> Limits {
        let reserved = 64 + 8 * cameras as u64;
        let left = soft_limit.saturating_sub(reserved);
        Limits {
            connections: (left as usize).clamp(2, MAX_CONNECTIONS),
        }
    }
}

/// Raises the soft file-descriptor limit to the hard one; returns the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
    }
    // `rlim_t` is 32 bits on armv7 (glibc), 64 elsewhere.
    #[allow(clippy::useless_conversion)]
    u64::from(r.rlim_cur)
}

#[derive(Clone)]
pub struct Ingest {
    pub config: Arc<Config>,
    pub buffer: Buffer,
    pub clock: Arc<dyn Clock>,
    /// Cameras that push their events here (Hikvision "HTTP listening").
    pub hub: Arc<crate::events::Hub>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn {
    camera: String,
    kind: String,
    state: String,
    #[serde(default)]
    detail: Option<serde_json::Map<String, serde_json::Value>>,
}

fn body_timeout() -> Response {
    error(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the body did not arrive within {} s",
            BODY_TIMEOUT.as_secs()
        ),
    )
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(serde_json::json!({"error": msg.into()}))).into_response()
}

async fn post_event(State(ing): State<Ingest>, req: Request) -> Response {
    let too_big = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_BODY);
    if too_big {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body exceeds {MAX_BODY} bytes"),
        );
    }
    let bytes = match tokio::time::timeout(
        BODY_TIMEOUT,
        axum::body::to_bytes(req.into_body(), MAX_BODY),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body exceeds {MAX_BODY} bytes"),
            )
        }
        Err(_) => return body_timeout(),
    };
    let ev: EventIn = match serde_json::from_slice(&bytes) {
        Ok(e) => e,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("malformed event: {}", crate::logs::clip(&e.to_string())),
            )
        }
    };
    if ev.kind != "motion" {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "kind \"{}\" is not supported (expected \"motion\")",
                crate::logs::clip(&ev.kind)
            ),
        );
    }
    let Some(state) = MotionState::parse(&ev.state) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "state \"{}\" is not one of \"start\", \"end\", \"pulse\"",
                crate::logs::clip(&ev.state)
            ),
        );
    };
    if ing.config.camera(&ev.camera).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown camera \"{}\"", crate::logs::clip(&ev.camera)),
        );
    }
    let detail = ev.detail.map(serde_json::Value::Object).unwrap_or_default();
    let rec = NewRecord::stamped(
        ing.clock.as_ref(),
        RecordBody::motion(&ev.camera, Source::Ingest, state, detail),
    );
    match ing.buffer.append(rec).await {
        Ok(a) => {
            ing.hub.accepted(&ev.camera, state, a);
            (
                StatusCode::ACCEPTED,
                axum::Json(serde_json::json!({"id": format_id(a.id), "seq": a.seq})),
            )
                .into_response()
        }
        Err(e @ (AppendError::Full(_) | AppendError::Io(_) | AppendError::Closed)) => {
            tracing::warn!("ingest refused an event: {e}");
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(e @ AppendError::TooLarge(_)) => error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
    }
}

/// `POST /v1/hikvision/{camera}`: a Hikvision camera configured to push its
/// `EventNotificationAlert`s here (plain XML, or multipart with the XML and a picture).
async fn post_hikvision(
    State(ing): State<Ingest>,
    axum::extract::Path(camera): axum::extract::Path<String>,
    req: Request,
) -> Response {
    if ing.config.camera(&camera).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown camera \"{}\"", crate::logs::clip(&camera)),
        );
    }
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = match tokio::time::timeout(
        BODY_TIMEOUT,
        axum::body::to_bytes(req.into_body(), 4 * MAX_BODY * 16),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
        Err(_) => return body_timeout(),
    };
    let mut xmls: Vec<Vec<u8>> = Vec::new();
    match crate::proto::multipart::boundary(&ct) {
        Some(b) => {
            let mut p = crate::proto::multipart::Parser::new(&b);
            p.push(&bytes);
            p.push(format!("\r\n--{b}--\r\n").as_bytes());
            while let Some(part) = p.pull() {
                if part
                    .header("content-type")
                    .is_none_or(|t| t.contains("xml"))
                {
                    xmls.push(part.body);
                }
            }
        }
        None => xmls.push(bytes.to_vec()),
    }
    let mut handled = 0;
    for x in xmls {
        if ing.hub.hikvision(&camera, &x).await.is_ok() {
            handled += 1;
        }
    }
    if handled == 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "no EventNotificationAlert in the body",
        );
    }
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"handled": handled})),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint (POST /v1/events)")
}

pub fn router(ing: Ingest) -> Router {
    Router::new()
        .route("/v1/events", post(post_event))
        .route("/v1/hikvision/{camera}", post(post_hikvision))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "use POST") })
        .with_state(ing)
}

/// The answer to a connection beyond the limit, written without parsing anything.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 49\r\nConnection: close\r\n\r\n{\"error\":\"too many connections: try again soon\"}";

/// An open connection: the task serving it, and whether a request is being handled on it
/// (its head arrived and its answer is not yet written).
struct Conn {
    opened: tokio::time::Instant,
    task: tokio::task::AbortHandle,
    busy: Arc<std::sync::atomic::AtomicBool>,
}

/// The open connections by id (ids increase: the first is the oldest).
type Open = Arc<std::sync::Mutex<std::collections::BTreeMap<u64, Conn>>>;

/// A connection younger than this is not evicted: a real client's head arrives within
/// milliseconds, so a flood of new connections cannot push out one that just connected.
pub const EVICT_GRACE: Duration = Duration::from_millis(50);

/// Removes a connection from the registry when its task ends, however it ends.
struct Deregister {
    id: u64,
    registry: Open,
}

impl Drop for Deregister {
    fn drop(&mut self) {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// Serves until `shutdown`, within `limits` (see the module doc). At the limit, the oldest
/// connection that is not handling a request (a half-sent head, an idle keep-alive) and is
/// older than [`EVICT_GRACE`] is closed to make room: a stalled head can never hold a slot a
/// real client needs. A request being handled (a drip-fed body included, for at most
/// [`BODY_TIMEOUT`]) keeps its slot; when every slot is busy, the newcomer gets a 503.
pub async fn serve(
    listener: TcpListener,
    ing: Ingest,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tokio::io::AsyncWriteExt;
    let app = router(ing);
    let open: Open = Default::default();
    // Every connection task, so shutdown can wait for the requests in flight.
    let tracker = tokio_util::task::TaskTracker::new();
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or a transient error: do not spin.
                crate::warn_limited!(
                    accept_errors(),
                    "accept",
                    "ingest cannot accept a connection: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let room = {
            let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
            if o.len() < limits.connections {
                true
            } else {
                use std::sync::atomic::Ordering;
                let idle = o
                    .iter()
                    .find(|(_, c)| {
                        !c.busy.load(Ordering::SeqCst) && c.opened.elapsed() >= EVICT_GRACE
                    })
                    .map(|(&id, _)| id);
                match idle.and_then(|id| o.remove(&id)) {
                    Some(c) => {
                        c.task.abort();
                        true
                    }
                    None => false,
                }
            }
        };
        if !room {
            crate::warn_limited!(
                accept_errors(),
                "busy",
                limit = limits.connections,
                "ingest connection limit reached: answering 503"
            );
            tokio::spawn(async move {
                let mut s = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), s.write_all(BUSY)).await;
            });
            continue;
        }
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let svc = {
            let app = hyper_util::service::TowerToHyperService::new(app.clone());
            let busy = busy.clone();
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                use hyper::service::Service as _;
                use std::sync::atomic::Ordering;
                busy.store(true, Ordering::SeqCst);
                let (busy, answer) = (busy.clone(), app.call(req));
                async move {
                    let r = answer.await;
                    busy.store(false, Ordering::SeqCst);
                    r
                }
            })
        };
        let (sd, registry) = (shutdown.clone(), open.clone());
        let id = next_id;
        next_id += 1;
        // Registered under the lock before it can run (and so before it can deregister).
        let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
        let task = tracker.spawn(async move {
            // Deregisters however the task ends: done, evicted (aborted) or panicking.
            let _registered = Deregister { id, registry };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            let lifetime = tokio::time::sleep(CONN_LIFETIME);
            tokio::pin!(lifetime);
            let done = tokio::select! {
                _ = conn.as_mut() => true,
                _ = &mut lifetime => false,
                _ = sd.cancelled() => false,
            };
            if !done {
                // Let the request in progress finish (its answer may be a 202), then close.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
            }
        });
        o.insert(
            id,
            Conn {
                opened: tokio::time::Instant::now(),
                task: task.abort_handle(),
                busy,
            },
        );
    }
    // In-flight requests get a moment to be answered.
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), tracker.wait()).await;
    Ok(())
}

fn accept_errors() -> &'static crate::logs::RateLimit {
    static R: std::sync::OnceLock<crate::logs::RateLimit> = std::sync::OnceLock::new();
    R.get_or_init(|| crate::logs::RateLimit::new(Duration::from_secs(10)))
}
