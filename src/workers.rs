//! Supervision of the background workers (the outbox worker, the pool keeper, the number buyer).
//!
//! A worker is a loop that should run until shutdown. If one ends early — a panic, or an exit
//! nobody asked for — it is logged (`WORKER_DIED`), counted (`onboard_worker_restarts_total`) and
//! started again after a backoff that doubles ([`Restart`], 1 s up to 60 s). While it
//! is down, [`Workers::down`] names it and `/readyz` answers 503: a replica whose outbox is not
//! running must not look healthy.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::domain::mask_pii;

/// How long a dead worker waits before it is started again.
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    /// The first wait; each restart in a row doubles it.
    pub min: Duration,
    pub max: Duration,
    /// A worker that ran this long before dying waits only `min` again: it was not failing in a
    /// loop.
    pub healthy_run: Duration,
}

impl Default for Restart {
    fn default() -> Self {
        Self {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
            healthy_run: Duration::from_secs(300),
        }
    }
}

impl Restart {
    /// The wait before the next restart, after one of `previous` for a worker that ran `ran_for`.
    fn next(&self, previous: Option<Duration>, ran_for: Duration) -> Duration {
        match previous {
            Some(wait) if ran_for < self.healthy_run => (wait * 2).clamp(self.min, self.max),
            _ => self.min,
        }
    }
}

/// Which background workers are running: shared by the supervisors and the readiness probe.
#[derive(Debug, Clone, Default)]
pub struct Workers(Arc<Mutex<BTreeMap<&'static str, bool>>>);

impl Workers {
    /// The workers that died and are waiting to be restarted, by name.
    pub fn down(&self) -> Vec<&'static str> {
        self.lock()
            .iter()
            .filter(|(_, running)| !**running)
            .map(|(name, _)| *name)
            .collect()
    }

    /// Every supervised worker, with whether it is running.
    pub fn all(&self) -> Vec<(&'static str, bool)> {
        self.lock().iter().map(|(n, r)| (*n, *r)).collect()
    }

    fn set(&self, name: &'static str, running: bool) {
        self.lock().insert(name, running);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, bool>> {
        // A poisoned map is still a valid map of booleans.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs the worker `start` makes, restarting it whenever it ends before `shutdown` turns true.
/// The returned task ends once shutdown is asked for and the worker has finished.
pub fn supervise<F, Fut>(
    workers: Workers,
    name: &'static str,
    restart: Restart,
    mut shutdown: watch::Receiver<bool>,
    start: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    workers.set(name, true);
    tokio::spawn(async move {
        let mut backoff = None;
        loop {
            workers.set(name, true);
            let started = Instant::now();
            let ended = tokio::spawn(start()).await;
            if *shutdown.borrow() {
                break;
            }
            let cause = match ended {
                Ok(()) => "exited".to_owned(),
                Err(e) if e.is_panic() => format!("panicked: {}", panic_text(e.into_panic())),
                Err(e) => format!("ended: {e}"),
            };
            let wait = restart.next(backoff, started.elapsed());
            backoff = Some(wait);
            workers.set(name, false);
            metrics::counter!("onboard_worker_restarts_total", "worker" => name).increment(1);
            tracing::error!(
                event = "WORKER_DIED",
                worker = name,
                cause = %mask_pii(&cause),
                restart_in_ms = wait.as_millis() as u64,
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
            tracing::info!(event = "WORKER_RESTARTED", worker = name);
        }
        workers.set(name, true);
    })
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "(no message)".to_owned(), |s| (*s).to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Waits (up to 10 s) until `ready` holds.
    async fn until(mut ready: impl FnMut() -> bool) {
        for _ in 0..2000 {
            if ready() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition never held");
    }

    #[tokio::test]
    async fn a_worker_that_panics_is_reported_down_and_restarted() {
        let workers = Workers::default();
        let (stop, stopped) = watch::channel(false);
        let runs = Arc::new(AtomicUsize::new(0));
        let restart = Restart {
            min: Duration::from_secs(1),
            ..Restart::default()
        };
        let handle = supervise(workers.clone(), "outbox", restart, stopped.clone(), {
            let runs = runs.clone();
            move || {
                let run = runs.fetch_add(1, Ordering::SeqCst);
                let mut stopped = stopped.clone();
                async move {
                    if run == 0 {
                        panic!("first run dies");
                    }
                    let _ = stopped.wait_for(|s| *s).await;
                }
            }
        });
        until(|| workers.down() == vec!["outbox"]).await;
        until(|| runs.load(Ordering::SeqCst) == 2).await;
        until(|| workers.down().is_empty()).await;

        stop.send(true).unwrap();
        handle.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2, "not restarted on shutdown");
        assert_eq!(workers.all(), vec![("outbox", true)]);
    }

    #[tokio::test]
    async fn a_worker_that_returns_early_is_restarted_too() {
        let workers = Workers::default();
        let (stop, stopped) = watch::channel(false);
        let runs = Arc::new(AtomicUsize::new(0));
        let restart = Restart {
            min: Duration::from_millis(10),
            ..Restart::default()
        };
        let handle = supervise(workers.clone(), "pool_keeper", restart, stopped, {
            let runs = runs.clone();
            move || {
                runs.fetch_add(1, Ordering::SeqCst);
                async {}
            }
        });
        until(|| runs.load(Ordering::SeqCst) >= 3).await;
        stop.send(true).unwrap();
        handle.await.unwrap();
    }

    #[test]
    fn restarts_in_a_row_wait_twice_as_long_up_to_the_maximum() {
        let restart = Restart::default();
        let quick = Duration::from_secs(2);
        let waits: Vec<u64> = std::iter::successors(Some(restart.next(None, quick)), |w| {
            Some(restart.next(Some(*w), quick))
        })
        .take(8)
        .map(|w| w.as_secs())
        .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        let after_a_long_run = restart.next(Some(Duration::from_secs(60)), restart.healthy_run);
        assert_eq!(after_a_long_run, restart.min);
    }
}
