//! The reconciler's thread in a server: every store commit wakes it, it
//! brings the kernel to the new world, and it marks the generation applied
//! (`Store::mark_applied`), which job workers wait on before they send a
//! job's first packet. A failed pass is logged and retried a second later.

use crate::backend::Backend;
use crate::reconcile::{Pass, Reconciler};
use cove_model::world::World;
use cove_store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a pass ended, for whoever watches the reconciler.
pub enum Outcome<'a> {
    /// The kernel holds `world`; `changes` counts the kernel objects
    /// converged and the rule operations applied.
    Applied {
        world: &'a World,
        changes: u64,
        took: Duration,
    },
    Failed {
        took: Duration,
    },
}

/// Starts the thread. `after_pass` runs after each pass (the server syncs
/// the listeners it keeps inside namespaces after a successful one, and
/// counts passes in its metrics).
pub fn spawn<B: Backend + Send + 'static>(
    store: Arc<Store>,
    instance: String,
    locality: cove_model::hosts::Locality,
    backend: B,
    mut after_pass: impl FnMut(Outcome<'_>) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("cove-reconcile".into())
        .spawn(move || {
            let mut reconciler = Reconciler::new(&instance, backend).at(locality);
            loop {
                let generation = store.generation();
                let started = Instant::now();
                let (world, position) = store.snapshot_at();
                match reconciler.reconcile(&world) {
                    Ok(pass) => {
                        after_pass(Outcome::Applied {
                            world: &world,
                            changes: pass.changes(),
                            took: started.elapsed(),
                        });
                        if pass != Pass::default() {
                            tracing::info!(
                                ?pass,
                                micros = cove_model::convert::micros(started.elapsed()),
                                "data plane reconciled"
                            );
                        }
                        store.mark_applied(generation);
                        store.mark_applied_position(position);
                        store.wait_for_change(generation, Duration::from_secs(30));
                    }
                    Err(e) => {
                        after_pass(Outcome::Failed {
                            took: started.elapsed(),
                        });
                        tracing::error!(error = %e, "data plane reconcile failed; retrying");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })
}
