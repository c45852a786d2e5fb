//! Worker threads keyed by what they drive (a job, an endpoint, an
//! instance): a key has at most one running thread, and a new one can start
//! once the last has returned. The supervisors call [`Workers::run_once`] on
//! every pass over the store.

use cove_model::world::{Resource, World};
use cove_store::Store;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Starts a thread named `name` that calls `pass` with the current world at
/// once, after every change to the store, and at least every 5 s: a
/// supervisor's loop, which gives whatever needs driving a worker.
pub(crate) fn watch_store(
    store: Arc<Store>,
    name: &str,
    pass: impl FnMut(&World) + Send + 'static,
) -> std::io::Result<()> {
    watch_store_every(store, name, Duration::from_secs(5), pass)
}

/// [`watch_store`] with a pass at least every `period`, for a loop that
/// also watches what changes outside the store (a container ending).
pub(crate) fn watch_store_every(
    store: Arc<Store>,
    name: &str,
    period: Duration,
    mut pass: impl FnMut(&World) + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || loop {
            let generation = store.generation();
            pass(&store.snapshot());
            store.wait_for_change(generation, period);
        })
        .map(|_| ())
}

/// A chore done at most once per period, the first time at once: the
/// sweeps of leftovers, which walk directories and need not follow every
/// change to the store.
pub(crate) struct Every {
    period: Duration,
    last: Mutex<Option<std::time::Instant>>,
}

impl Every {
    pub(crate) fn new(period: Duration) -> Every {
        Every {
            period,
            last: Mutex::new(None),
        }
    }

    /// Whether the chore is due now; if so, the period starts again.
    pub(crate) fn due(&self) -> bool {
        let mut last = self.last.lock().expect("lock");
        if last.is_some_and(|t| t.elapsed() < self.period) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }
}

/// How often a host looks for what instances that no longer run on it left.
pub(crate) const LEFTOVER_SWEEP: Duration = Duration::from_secs(30);

/// Applies `f` to the stored resource `key` in one write.
pub(crate) fn update<R: Resource>(
    store: &Store,
    key: &str,
    f: impl FnOnce(&mut R),
) -> anyhow::Result<()> {
    store.write(|tx| {
        let mut r = tx.cloned::<R>(key)?;
        f(&mut r);
        tx.put(r);
        Ok(())
    })?;
    Ok(())
}

/// How a piece of a job's work (a compilation, a benchmark) ended.
pub(crate) enum Ended<T> {
    Done(T),
    /// With the job's `FailureReason`.
    Failed(String),
    Stopped,
}

/// Whether the job under `key` has been asked to stop since its worker read
/// it (a job that is gone counts as stopped).
pub(crate) fn stop_requested<R: cove_sagemaker::stopping::Stoppable>(
    store: &Store,
    key: &str,
) -> bool {
    R::table(&store.snapshot())
        .get(key)
        .is_none_or(|r| r.stop_requested())
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Workers {
    active: Arc<Mutex<HashSet<String>>>,
}

impl Workers {
    /// Whether a thread runs under `key` now.
    pub(crate) fn busy(&self, key: &str) -> bool {
        self.active.lock().expect("lock").contains(key)
    }

    /// Runs `f` on a thread named `thread_name` unless one is already
    /// running under `key`.
    pub(crate) fn run_once(
        &self,
        key: &str,
        thread_name: String,
        f: impl FnOnce() + Send + 'static,
    ) {
        if !self.active.lock().expect("lock").insert(key.to_string()) {
            return;
        }
        let active = self.active.clone();
        let owned = key.to_string();
        let spawned = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                f();
                active.lock().expect("lock").remove(&owned);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, key, "cannot start a worker thread");
            self.active.lock().expect("lock").remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn one_thread_per_key_at_a_time() {
        let workers = Workers::default();
        let (release, hold) = mpsc::channel::<()>();
        let (ran, runs) = mpsc::channel();
        let first = ran.clone();
        workers.run_once("k", "w".into(), move || {
            first.send(1).unwrap();
            hold.recv().unwrap();
        });
        assert_eq!(runs.recv_timeout(Duration::from_secs(5)), Ok(1));
        let second = ran.clone();
        workers.run_once("k", "w".into(), move || second.send(2).unwrap());
        assert!(
            runs.recv_timeout(Duration::from_millis(100)).is_err(),
            "a second thread for a busy key"
        );
        release.send(()).unwrap();
        while workers.active.lock().unwrap().contains("k") {
            std::thread::sleep(Duration::from_millis(5));
        }
        workers.run_once("k", "w".into(), move || ran.send(3).unwrap());
        assert_eq!(runs.recv_timeout(Duration::from_secs(5)), Ok(3));
    }
}
