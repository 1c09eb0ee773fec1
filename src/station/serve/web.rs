//! The console's HTTP side (axum): the embedded page and its assets, the JSON API, the live
//! feed (server-sent events), `/metrics`, login with a session cookie, CSRF on every state
//! change, and the admin's signed commands (the station's command key stays on the server).
//! Every answer carries a strict Content-Security-Policy: the page loads nothing from outside
//! the station and runs no inline script, so text from the broker can never become code.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, Semaphore};

use super::auth::{self, Role};
use super::pool::{Pool, PoolError};
use super::recorder::Stats;
use super::store::{EventFilter, Session};
use crate::clock::{parse_rfc3339_ms, Clock, SystemClock};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON: &str = include_str!("assets/icon.svg");

/// Where admin commands go, with the key that signs them.
#[derive(Clone)]
pub struct Commands {
    pub key: PathBuf,
    pub mqtt: String,
    pub topic_prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone)]
pub struct App {
    pub db: Pool,
    pub changes: broadcast::Sender<Arc<str>>,
    pub stats: Arc<Stats>,
    /// IANA zone the console shows times in.
    pub tz: String,
    pub ward: Option<String>,
    pub commands: Option<Commands>,
    /// argon2 verifications running at once (each takes ~20 MB and tens of ms).
    pub logins: Arc<Semaphore>,
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/favicon.ico",
            get(|| async { asset(ICON, "image/svg+xml") }),
        )
        .route("/metrics", get(metrics))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/gateways", get(gateways))
        .route("/api/cameras", get(cameras))
        .route("/api/alerts", get(alerts))
        .route("/api/alerts/{id}/ack", post(ack))
        .route("/api/events", get(events))
        .route("/api/snapshots/{file}", get(snapshot))
        .route("/api/stream", get(stream))
        .route("/api/commands", post(command))
        .fallback(|| async { err(StatusCode::NOT_FOUND, "no such page") })
        .layer(DefaultBodyLimit::max(16 * 1024))
        .layer(axum::middleware::map_response(headers))
        .with_state(app)
}

/// Security headers on every answer.
async fn headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

fn err(code: StatusCode, msg: &str) -> Response {
    (code, Json(json!({ "error": msg }))).into_response()
}

fn db_err(e: PoolError) -> Response {
    match e {
        PoolError::Busy => err(StatusCode::SERVICE_UNAVAILABLE, "the database is busy"),
        e => {
            tracing::error!("database: {e:#}");
            err(StatusCode::INTERNAL_SERVER_ERROR, "database error")
        }
    }
}

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

/// The caller's session, or the 401 to answer.
async fn session(app: &App, h: &HeaderMap) -> Result<(Session, String), Response> {
    let unauthorized = || err(StatusCode::UNAUTHORIZED, "log in first");
    let token = h
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| auth::cookie(c, auth::COOKIE))
        .ok_or_else(unauthorized)?;
    let digest = auth::digest(token);
    let d = digest.clone();
    let s = app
        .db
        .call(move |s| s.session(&d, now_ms()))
        .await
        .map_err(db_err)?
        .ok_or_else(unauthorized)?;
    Ok((s, digest))
}

/// The session, for a state change: the CSRF header must match.
async fn changing(app: &App, h: &HeaderMap) -> Result<(Session, String), Response> {
    let (s, d) = session(app, h).await?;
    let sent = h
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !auth::same(sent, &s.csrf) {
        return Err(err(StatusCode::FORBIDDEN, "missing or wrong X-CSRF-Token"));
    }
    Ok((s, d))
}

#[derive(Deserialize)]
struct Login {
    name: String,
    password: String,
}

async fn login(
    State(app): State<App>,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(l)) = body else {
        return err(StatusCode::BAD_REQUEST, "expected {\"name\",\"password\"}");
    };
    if !auth::valid_name(&l.name) || l.password.len() > auth::MAX_PASSWORD {
        return err(StatusCode::UNAUTHORIZED, "wrong name or password");
    }
    let Ok(_permit) = app.logins.clone().try_acquire_owned() else {
        return err(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many logins at once; try again",
        );
    };
    let name = l.name.clone();
    let user = match app.db.call(move |s| s.user(&name)).await {
        Ok(u) => u,
        Err(e) => return db_err(e),
    };
    // Without the user, verify against a hash anyway: the answer takes as long.
    let stored = user
        .as_ref()
        .map_or_else(|| auth::dummy_hash().to_string(), |u| u.hash.clone());
    let password = l.password;
    let ok = tokio::task::spawn_blocking(move || auth::verify(&password, &stored))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| ok) else {
        tracing::warn!("failed login for {:?}", l.name);
        return err(StatusCode::UNAUTHORIZED, "wrong name or password");
    };
    let token = auth::token();
    let csrf = auth::token();
    let (d, n, c) = (auth::digest(&token), user.name.clone(), csrf.clone());
    let now = now_ms();
    if let Err(e) = app
        .db
        .call(move |s| {
            s.create_session(&d, &n, &c, now, now + auth::SESSION_MS)?;
            s.audit(now, &n, "login", "{}")
        })
        .await
    {
        return db_err(e);
    }
    tracing::info!("{} logged in ({})", user.name, user.role);
    (
        [(header::SET_COOKIE, auth::set_cookie(&token))],
        Json(json!({ "csrf": csrf, "name": user.name, "role": user.role })),
    )
        .into_response()
}

async fn logout(State(app): State<App>, h: HeaderMap) -> Response {
    let (_, digest) = match changing(&app, &h).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(e) = app.db.call(move |s| s.end_session(&digest)).await {
        return db_err(e);
    }
    (
        [(header::SET_COOKIE, auth::clear_cookie())],
        Json(json!({ "ok": true })),
    )
        .into_response()
}

async fn me(State(app): State<App>, h: HeaderMap) -> Response {
    match session(&app, &h).await {
        Ok((s, _)) => Json(json!({
            "name": s.name, "role": s.role, "csrf": s.csrf, "tz": app.tz,
            "ward": app.ward, "commands": app.commands.is_some(),
        }))
        .into_response(),
        Err(r) => r,
    }
}

macro_rules! with_session {
    ($app:expr, $h:expr) => {
        match session(&$app, &$h).await {
            Ok(s) => s,
            Err(r) => return r,
        }
    };
}

async fn gateways(State(app): State<App>, h: HeaderMap) -> Response {
    with_session!(app, h);
    match app.db.call(|s| s.gateways()).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => db_err(e),
    }
}

async fn cameras(State(app): State<App>, h: HeaderMap) -> Response {
    with_session!(app, h);
    match app.db.call(|s| s.cameras()).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => db_err(e),
    }
}

/// Limits on list answers.
const DEFAULT_LIMIT: i64 = 500;
const MAX_LIMIT: i64 = 5000;

fn time_param(v: &Option<String>, name: &str) -> Result<Option<i64>, String> {
    match v.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => parse_rfc3339_ms(s)
            .map(Some)
            .ok_or_else(|| format!("{name}: an RFC 3339 time, like 2026-12-02T08:00:00Z")),
    }
}

fn limit(v: Option<i64>) -> i64 {
    v.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

#[derive(Deserialize)]
struct AlertQuery {
    since: Option<String>,
    limit: Option<i64>,
}

async fn alerts(
    State(app): State<App>,
    h: HeaderMap,
    q: Result<Query<AlertQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    with_session!(app, h);
    let Ok(Query(q)) = q else {
        return err(StatusCode::BAD_REQUEST, "bad query");
    };
    let since = match time_param(&q.since, "since") {
        Ok(s) => s,
        Err(m) => return err(StatusCode::BAD_REQUEST, &m),
    };
    let n = limit(q.limit);
    match app.db.call(move |s| s.alerts(since, n)).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => db_err(e),
    }
}

#[derive(Deserialize)]
struct EventQuery {
    camera: Option<String>,
    gateway: Option<String>,
    state: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
}

async fn events(
    State(app): State<App>,
    h: HeaderMap,
    q: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    with_session!(app, h);
    let Ok(Query(q)) = q else {
        return err(StatusCode::BAD_REQUEST, "bad query");
    };
    let (since, until) = match (time_param(&q.since, "since"), time_param(&q.until, "until")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(m), _) | (_, Err(m)) => return err(StatusCode::BAD_REQUEST, &m),
    };
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let f = EventFilter {
        camera: nonempty(q.camera),
        gateway: nonempty(q.gateway),
        state: nonempty(q.state),
        since_ms: since,
        until_ms: until,
        limit: limit(q.limit),
    };
    match app.db.call(move |s| s.events(&f)).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => db_err(e),
    }
}

async fn ack(State(app): State<App>, h: HeaderMap, Path(id): Path<String>) -> Response {
    let (s, _) = match changing(&app, &h).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let name = s.name.clone();
    let now = now_ms();
    let r = app
        .db
        .call(move |st| {
            let a = st.ack(&id, &name, now)?;
            if a.is_some() {
                st.audit(now, &name, "ack", &json!({ "alert": id }).to_string())?;
            }
            Ok(a)
        })
        .await;
    match r {
        Ok(Some(a)) => {
            let _ = app
                .changes
                .send(json!({"type": "ack", "alert": a}).to_string().into());
            Json(a).into_response()
        }
        Ok(None) => err(StatusCode::NOT_FOUND, "no such alert"),
        Err(e) => db_err(e),
    }
}

async fn snapshot(State(app): State<App>, h: HeaderMap, Path(file): Path<String>) -> Response {
    with_session!(app, h);
    let Some(id) = file.strip_suffix(".jpg").map(String::from) else {
        return err(StatusCode::NOT_FOUND, "no such still");
    };
    match app.db.call(move |s| s.still(&id)).await {
        Ok(Some(jpeg)) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "private, max-age=86400"),
            ],
            jpeg,
        )
            .into_response(),
        Ok(None) => err(StatusCode::NOT_FOUND, "no such still"),
        Err(e) => db_err(e),
    }
}

async fn stream(State(app): State<App>, h: HeaderMap) -> Response {
    with_session!(app, h);
    let rx = app.changes.subscribe();
    let s = futures_util::stream::unfold(rx, |mut rx| async move {
        let data: Arc<str> = match rx.recv().await {
            Ok(m) => m,
            // Too slow to keep up: the page reloads its lists.
            Err(broadcast::error::RecvError::Lagged(_)) => r#"{"type":"resync"}"#.into(),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(SseEvent::default().data(&*data)), rx))
    });
    Sse::new(s)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn metrics(State(app): State<App>) -> Response {
    match app.db.call(|s| s.counts()).await {
        Ok(c) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            super::metrics::render(&c, &app.stats),
        )
            .into_response(),
        Err(e) => db_err(e),
    }
}

#[derive(Deserialize)]
struct CommandReq {
    ward: String,
    gateway: String,
    op: String,
    camera: Option<String>,
}

async fn command(
    State(app): State<App>,
    h: HeaderMap,
    body: Result<Json<CommandReq>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let (s, _) = match changing(&app, &h).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if Role::parse(&s.role) != Some(Role::Admin) {
        return err(StatusCode::FORBIDDEN, "commands need the admin role");
    }
    let Some(cfg) = app.commands.clone() else {
        return err(
            StatusCode::NOT_IMPLEMENTED,
            "this station has no command key (station serve --command-key)",
        );
    };
    let Ok(Json(c)) = body else {
        return err(
            StatusCode::BAD_REQUEST,
            "expected {\"ward\",\"gateway\",\"op\"}",
        );
    };
    let command = match (c.op.as_str(), &c.camera) {
        ("check_now", _) => json!({"op": "check_now"}),
        ("reboot_camera", Some(cam)) => json!({"op": "reboot_camera", "camera": cam}),
        ("reboot_camera", None) => {
            return err(StatusCode::BAD_REQUEST, "reboot_camera needs a camera")
        }
        _ => return err(StatusCode::BAD_REQUEST, "op: check_now or reboot_camera"),
    };
    let ids_ok = |x: &str| crate::config::check_name(x).is_ok();
    if !ids_ok(&c.ward) || !ids_ok(&c.gateway) || c.camera.as_deref().is_some_and(|x| !ids_ok(x)) {
        return err(
            StatusCode::BAD_REQUEST,
            "ward, gateway and camera: [a-z0-9-], 1..64",
        );
    }
    let text = command.to_string();
    let now = now_ms();
    let (name, detail) = (
        s.name.clone(),
        json!({"ward": c.ward, "gateway": c.gateway, "command": command}).to_string(),
    );
    if let Err(e) = app
        .db
        .call(move |st| st.audit(now, &name, "command", &detail))
        .await
    {
        return db_err(e);
    }
    tracing::info!("{} sends {text} to {}/{}", s.name, c.ward, c.gateway);
    let args = crate::station::CmdArgs {
        key: &cfg.key,
        mqtt: &cfg.mqtt,
        ward: &c.ward,
        gateway: &c.gateway,
        command: &text,
        timeout: Duration::from_secs(10),
        topic_prefix: &cfg.topic_prefix,
        ttl: Duration::from_secs(60),
        username: cfg.username.as_deref(),
        password: cfg.password.as_deref(),
        ca_file: cfg.ca_file.as_deref(),
    };
    match crate::station::cmd(args).await {
        Ok(crate::station::CmdOutcome::Result(v)) => Json(v).into_response(),
        Ok(crate::station::CmdOutcome::Timeout) => err(
            StatusCode::GATEWAY_TIMEOUT,
            "the gateway did not answer within 10 s",
        ),
        Err(e) => err(StatusCode::BAD_GATEWAY, &format!("{e:#}")),
    }
}
