//! `camgw station serve`: the ward station's one process. It records every message of the
//! ward's gateways into a database ([`recorder`], [`store`], [`db`]) and serves the web
//! console, its JSON API, the live feed and `/metrics` ([`web`]). `camgw station user add`
//! creates the console's users ([`auth`]). Messages become rows in the pure [`rows`].

pub mod auth;
pub mod db;
pub mod metrics;
pub mod pool;
pub mod recorder;
pub mod rows;
pub mod store;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::clock::{Clock, SystemClock};
use db::Target;

pub struct ServeArgs {
    pub mqtt: String,
    pub db: String,
    pub listen: SocketAddr,
    pub ward: Option<String>,
    pub topic_prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_id: Option<String>,
    pub retention_days: u32,
    pub tz: String,
    pub command_key: Option<PathBuf>,
}

/// The MQTT client id of the station's persistent session.
pub fn client_id(ward: Option<&str>) -> String {
    format!("camgw-station-{}", ward.unwrap_or("all"))
}

pub async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let target = Target::parse(&a.db)?;
    if let Some(w) = &a.ward {
        crate::config::check_name(w).map_err(|e| anyhow::anyhow!("--ward: {e}"))?;
    }
    if a.tz.is_empty() || a.tz.len() > 64 || a.tz.contains(['"', '<', '>', '\\']) {
        bail!("--tz: an IANA time zone name, like Asia/Ho_Chi_Minh");
    }
    if let Some(k) = &a.command_key {
        crate::station::load_key(k)?;
    }
    let client_id = a
        .client_id
        .clone()
        .unwrap_or_else(|| client_id(a.ward.as_deref()));
    let brokers = crate::station::broker_list(
        &a.mqtt,
        &client_id,
        a.username.as_deref(),
        a.password.as_deref(),
        a.ca_file.as_deref(),
    )?;
    let filter = match &a.ward {
        Some(w) => crate::topics::ward_filter(&a.topic_prefix, w),
        None => format!("{}/#", a.topic_prefix),
    };
    let pool = pool::Pool::start(&target, 2)
        .await
        .with_context(|| format!("cannot open the database {}", target.display()))?;
    let (changes, _) = tokio::sync::broadcast::channel(1024);
    let stats = Arc::new(recorder::Stats::default());
    let _recorder = recorder::start(
        recorder::Args {
            brokers,
            filter,
            prefix: a.topic_prefix.clone(),
            target: target.clone(),
        },
        changes.clone(),
        stats.clone(),
    )
    .await?;
    // Retention: history older than the bound goes, hourly (and once at start).
    let keep_ms = i64::from(a.retention_days) * 86_400_000;
    let prune_pool = pool.clone();
    tokio::spawn(async move {
        loop {
            let now = SystemClock.now_ms();
            match prune_pool.call(move |s| s.prune(now - keep_ms, now)).await {
                Ok(n) if n > 0 => tracing::info!("retention: removed {n} rows"),
                Ok(_) => {}
                Err(e) => tracing::warn!("retention: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
    let app = web::App {
        db: pool,
        changes,
        stats,
        tz: a.tz.clone(),
        ward: a.ward.clone(),
        commands: a.command_key.clone().map(|key| web::Commands {
            key,
            mqtt: a.mqtt.clone(),
            topic_prefix: a.topic_prefix.clone(),
            username: a.username.clone(),
            password: a.password.clone(),
            ca_file: a.ca_file.clone(),
        }),
        logins: Arc::new(tokio::sync::Semaphore::new(2)),
    };
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    tracing::info!(
        "station: recording {} into {}; console on http://{}/",
        a.ward.as_deref().unwrap_or("every ward"),
        target.display(),
        listener.local_addr()?
    );
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    axum::serve(listener, web::router(app))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// `camgw station user add`: creates or replaces a user. Returns true when it replaced one.
pub fn user_add(db: &str, name: &str, role: &str, password: &str) -> anyhow::Result<bool> {
    if !auth::valid_name(name) {
        bail!("--name: 1 to 64 letters, digits, '.', '_' or '-'");
    }
    if auth::Role::parse(role).is_none() {
        bail!("--role: officer or admin");
    }
    if password.is_empty() {
        bail!("the password (on stdin) is empty");
    }
    if password.len() > auth::MAX_PASSWORD {
        bail!("the password is longer than {} bytes", auth::MAX_PASSWORD);
    }
    let mut store = store::Store::open(&Target::parse(db)?)?;
    let hash = auth::hash(password)?;
    store.add_user(name, role, &hash, SystemClock.now_ms())
}

/// The password as `user add` reads it: stdin with one trailing newline (`\n` or `\r\n`)
/// removed.
pub fn password_from(input: &str) -> &str {
    input
        .strip_suffix("\r\n")
        .or_else(|| input.strip_suffix('\n'))
        .unwrap_or(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_stripped() {
        assert_eq!(password_from("pw\n"), "pw");
        assert_eq!(password_from("pw\r\n"), "pw");
        assert_eq!(password_from("pw\n\n"), "pw\n");
        assert_eq!(password_from("pw"), "pw");
    }
}
