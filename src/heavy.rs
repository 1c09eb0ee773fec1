//! CPU-heavy work on bytes from peers (JPEG decoding, large XML) runs here, off the async
//! workers: a small pool of blocking threads, bounded in how many run at once, with a deadline.
//!
//! The async workers keep the uplink, the buffer, ingest, signals and the watchdog on time
//! whatever the cameras send. A job that overruns its deadline is abandoned by the caller
//! (the thread finishes it and drops the result, still holding its slot, so hostile inputs
//! can never occupy more than [`SLOTS`] threads). A job that panics is reported as an error;
//! the panic never reaches the caller's task.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Semaphore;

/// Heavy jobs running at once (the gateways have 2 to 4 cores; the async runtime keeps one).
pub const SLOTS: usize = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeavyError {
    #[error("took longer than {0} ms")]
    Deadline(u64),
    #[error("failed inside: {0}")]
    Panicked(String),
}

/// A bounded pool of blocking threads; [`run`] uses the process's shared one.
#[derive(Debug, Clone)]
pub struct Pool {
    slots: Arc<Semaphore>,
}

impl Pool {
    pub fn new(slots: usize) -> Pool {
        Pool {
            slots: Arc::new(Semaphore::new(slots)),
        }
    }

    /// The process's pool, with [`SLOTS`] slots.
    pub fn shared() -> &'static Pool {
        static P: OnceLock<Pool> = OnceLock::new();
        P.get_or_init(|| Pool::new(SLOTS))
    }

    /// Runs `f` on a blocking thread once a slot is free; gives up after `deadline` (waiting
    /// for a slot included).
    pub async fn run<T, F>(&self, deadline: Duration, f: F) -> Result<T, HeavyError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let ms = deadline.as_millis() as u64;
        let job = async {
            let permit = self
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("a pool's semaphore is never closed");
            tokio::task::spawn_blocking(move || {
                let _slot = permit; // released when the work is really done
                f()
            })
            .await
        };
        match tokio::time::timeout(deadline, job).await {
            Err(_) => Err(HeavyError::Deadline(ms)),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(HeavyError::Panicked(panic_message(e.into_panic()))),
        }
    }
}

/// [`Pool::run`] on the shared pool.
pub async fn run<T, F>(deadline: Duration, f: F) -> Result<T, HeavyError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    Pool::shared().run(deadline, f).await
}

/// Bytes up to this size are parsed inline: cheaper than a thread hop, and bounded.
pub const INLINE_BYTES: usize = 32 * 1024;

/// The deadline for parsing one reply in the pool.
pub const PARSE_DEADLINE: Duration = Duration::from_secs(2);

/// Parses `bytes` with `f`: inline when small, in the shared pool (with [`PARSE_DEADLINE`])
/// when large, so that a megabyte reply never occupies an async worker.
pub async fn parse<T, E>(bytes: Vec<u8>, f: fn(&[u8]) -> Result<T, E>) -> Result<T, String>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    if bytes.len() <= INLINE_BYTES {
        return f(&bytes).map_err(|e| e.to_string());
    }
    match run(PARSE_DEADLINE, move || f(&bytes)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("parsing {e}")),
    }
}

/// The text of a panic payload (`&str` or `String`), for a report.
pub fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_returns_its_value() {
        assert_eq!(run(Duration::from_secs(5), || 6 * 7).await, Ok(42));
    }

    #[tokio::test]
    async fn large_input_is_parsed_in_the_pool_and_small_inline() {
        fn len(b: &[u8]) -> Result<usize, String> {
            Ok(b.len())
        }
        assert_eq!(parse(vec![0; 10], len).await, Ok(10));
        assert_eq!(
            parse(vec![0; INLINE_BYTES + 1], len).await,
            Ok(INLINE_BYTES + 1)
        );
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_not_a_panic() {
        let e = run(Duration::from_secs(5), || -> u8 { panic!("boom") })
            .await
            .unwrap_err();
        assert_eq!(e, HeavyError::Panicked("boom".into()));
    }

    #[tokio::test]
    async fn jobs_past_the_deadline_are_abandoned_and_never_exceed_the_slots() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let pool = Pool::new(2);
        let mut hung = Vec::new();
        for _ in 0..2 {
            let (rx, pool) = (rx.clone(), pool.clone());
            hung.push(tokio::spawn(async move {
                pool.run(Duration::from_millis(100), move || {
                    let _ = rx.lock().unwrap().recv();
                })
                .await
            }));
        }
        for h in hung {
            assert_eq!(h.await.unwrap(), Err(HeavyError::Deadline(100)));
        }
        // Every slot is still held by a hung job: a new one waits and misses its deadline.
        assert_eq!(
            pool.run(Duration::from_millis(100), || 1).await,
            Err(HeavyError::Deadline(100))
        );
        for _ in 0..2 {
            tx.send(()).unwrap();
        }
        assert_eq!(pool.run(Duration::from_secs(5), || 1).await, Ok(1));
    }
}
