//! The container logs of instances on agents: an agent's shippers hand
//! each batch to the store ([`ThroughStore`]), and the control plane stores
//! the batches in CloudWatch Logs ([`spawn_delivery`]). Each batch carries
//! the file offset it ends at, which CloudWatch Logs records with it, so a
//! batch sent twice (an agent that stopped between sending and noting it)
//! is stored once.

use cove_host::logs::{store_batch, LogSink, ShippedBatch};
use cove_logs::LogsService;
use cove_store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The store's message topic of container-log batches.
const TOPIC: &str = "container-logs";

/// An agent's sink: the store, and a file per log noting how far it was sent.
pub struct ThroughStore {
    store: Arc<Store>,
    /// `<agent data dir>/log-offsets`.
    offsets: PathBuf,
}

impl ThroughStore {
    pub fn new(store: Arc<Store>, offsets: PathBuf) -> std::io::Result<ThroughStore> {
        std::fs::create_dir_all(&offsets)?;
        Ok(ThroughStore { store, offsets })
    }

    /// The file of `source` (a UUID the shipper made, so a safe name).
    fn offset_file(&self, source: &str) -> PathBuf {
        self.offsets.join(source.replace(['/', '.'], "_"))
    }
}

impl LogSink for ThroughStore {
    fn shipped_offset(&self, source: &str) -> Result<u64, String> {
        match std::fs::read_to_string(self.offset_file(source)) {
            Ok(s) => s.trim().parse().map_err(|e| format!("{e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e.to_string()),
        }
    }

    fn put(&self, batch: &ShippedBatch) -> Result<(), String> {
        let payload = serde_json::to_string(batch).map_err(|e| e.to_string())?;
        self.store
            .send(TOPIC, &[payload])
            .map_err(|e| format!("{e:#}"))?;
        let file = self.offset_file(&batch.source);
        let partial = file.with_extension("partial");
        std::fs::write(&partial, batch.end.to_string())
            .and_then(|()| std::fs::rename(&partial, &file))
            .map_err(|e| e.to_string())
    }
}

/// The control plane: stores the batches the agents sent, as they come.
pub fn spawn_delivery(store: Arc<Store>, logs: Arc<LogsService>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("container-logs".into())
        .spawn(move || loop {
            match deliver(&store, &logs) {
                Ok(0) => std::thread::sleep(Duration::from_millis(500)),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "delivering the agents' container logs failed");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        })
        .map(drop)
}

/// Stores the batches the agents have sent so far in CloudWatch Logs;
/// returns how many it handled. A job's driver calls it once its
/// containers have ended, so their last lines are in place before the job
/// moves on, as they are for containers on the control plane's host.
pub fn deliver(store: &Store, logs: &LogsService) -> anyhow::Result<usize> {
    store.drain(TOPIC, 50, |payload| {
        let batch = match serde_json::from_str::<ShippedBatch>(payload) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(error = %e, "an agent sent container logs this Cove cannot read");
                return Ok(());
            }
        };
        match store_batch(logs, &batch) {
            Ok(()) => Ok(()),
            // CloudWatch Logs refuses the batch itself: dropped.
            Err(e) if e.sender => {
                tracing::warn!(group = %batch.group, stream = %batch.stream, error = %e.message, "an agent's container logs were refused");
                Ok(())
            }
            // Kept, and tried again.
            Err(e) => Err(format!("storing {}'s logs: {}", batch.stream, e.message)),
        }
    })
}
