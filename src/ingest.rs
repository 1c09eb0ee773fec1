//! HTTP ingest: `POST /v1/events` with `{"camera","kind":"motion","state"}`.
//!
//! Answers 202 `{"id","seq"}` only once the buffer accepted the event under the sync mode in
//! force (after the fsync with `always`), 400 for malformed input, 404 for an unknown camera,
//! 413 for bodies over 64 KiB, 503 while the buffer cannot take it. Every error is a JSON body
//! `{"error": "..."}`; nothing is buffered for a refused request.

use std::sync::Arc;

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
use crate::record::{format_id, Body as RecordBody, NewRecord};

pub const MAX_BODY: usize = 64 * 1024;

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
    let bytes = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body exceeds {MAX_BODY} bytes"),
            )
        }
    };
    let ev: EventIn = match serde_json::from_slice(&bytes) {
        Ok(e) => e,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed event: {e}")),
    };
    if ev.kind != "motion" {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "kind \"{}\" is not supported (expected \"motion\")",
                ev.kind
            ),
        );
    }
    if !["start", "end", "pulse"].contains(&ev.state.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "state \"{}\" is not one of \"start\", \"end\", \"pulse\"",
                ev.state
            ),
        );
    }
    if ing.config.camera(&ev.camera).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown camera \"{}\"", ev.camera),
        );
    }
    let detail = ev
        .detail
        .map(|d| serde_json::Value::Object(d).to_string())
        .unwrap_or_else(|| "{}".into());
    let rec = NewRecord {
        ts_ms: ing.clock.now_ms(),
        clock_synced: ing.clock.synced(),
        body: RecordBody::Event {
            kind: ev.kind,
            camera: ev.camera,
            source: "ingest".into(),
            state: ev.state,
            detail,
        },
    };
    match ing.buffer.append(rec).await {
        Ok(a) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({"id": format_id(a.id), "seq": a.seq})),
        )
            .into_response(),
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
            format!("unknown camera \"{camera}\""),
        );
    }
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = match axum::body::to_bytes(req.into_body(), 4 * MAX_BODY * 16).await {
        Ok(b) => b,
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
    };
    let mut xmls: Vec<Vec<u8>> = Vec::new();
    match crate::events::multipart::boundary(&ct) {
        Some(b) => {
            let mut p = crate::events::multipart::Parser::new(&b);
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

/// Serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    ing: Ingest,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(ing))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
