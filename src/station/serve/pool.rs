//! The console's database connections: a few threads, each owning one [`Store`], fed by one
//! bounded queue. Handlers `call` a closure on one of them and await its answer, so a query
//! never runs on an async worker, and a flood of requests gets a "busy" error instead of an
//! unbounded queue.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use super::db::Target;
use super::store::Store;

type Job = Box<dyn FnOnce(&mut Store) + Send>;

/// Requests waiting for a connection before callers are told the store is busy.
pub const QUEUE: usize = 256;

#[derive(Clone)]
pub struct Pool {
    tx: SyncSender<Job>,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the database is busy")]
    Busy,
    #[error("the database threads stopped")]
    Gone,
    #[error(transparent)]
    Query(#[from] anyhow::Error),
}

/// Opens a store on a new thread called `name` and runs `body` with it there (database
/// clients live on their own threads; PostgreSQL's refuses to be opened inside the async
/// runtime at all). Returns once the store is open, or with the reason it could not be.
pub async fn on_own_thread(
    name: String,
    target: &Target,
    body: impl FnOnce(Store) + Send + 'static,
) -> anyhow::Result<()> {
    let (opened, wait) = tokio::sync::oneshot::channel();
    let target = target.clone();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || match Store::open(&target) {
            Ok(store) => {
                let _ = opened.send(Ok(()));
                body(store)
            }
            Err(e) => {
                let _ = opened.send(Err(e));
            }
        })?;
    wait.await
        .map_err(|_| anyhow::anyhow!("the thread {name} stopped"))?
}

impl Pool {
    /// Opens `threads` connections (at least one) to `target`, each on its own thread.
    pub async fn start(target: &Target, threads: usize) -> anyhow::Result<Pool> {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx: Arc<Mutex<Receiver<Job>>> = rx.clone();
            on_own_thread(format!("station-db-{i}"), target, move |mut store| loop {
                let job = match rx.lock() {
                    Ok(r) => r.recv(),
                    Err(_) => return,
                };
                match job {
                    Ok(job) => job(&mut store),
                    Err(_) => return,
                }
            })
            .await?;
        }
        Ok(Pool { tx })
    }

    pub async fn call<T, F>(&self, f: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> anyhow::Result<T> + Send + 'static,
    {
        let (done, wait) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |s| {
            let _ = done.send(f(s));
        });
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(PoolError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(PoolError::Gone),
        }
        match wait.await {
            Ok(r) => r.map_err(PoolError::Query),
            Err(_) => Err(PoolError::Gone),
        }
    }
}
