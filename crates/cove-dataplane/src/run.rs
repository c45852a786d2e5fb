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

/// Starts the thread. `after_pass` runs after each successful pass with the
/// world it applied (the server syncs the listeners it keeps inside
/// namespaces there).
pub fn spawn<B: Backend + Send + 'static>(
    store: Arc<Store>,
    instance: String,
    backend: B,
    mut after_pass: impl FnMut(&World) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("cove-reconcile".into())
        .spawn(move || {
            let mut reconciler = Reconciler::new(&instance, backend);
            loop {
                let generation = store.generation();
                let started = Instant::now();
                let world = store.snapshot();
                match reconciler.reconcile(&world) {
                    Ok(pass) => {
                        after_pass(&world);
                        if pass != Pass::default() {
                            tracing::info!(
                                ?pass,
                                micros = cove_model::convert::micros(started.elapsed()),
                                "data plane reconciled"
                            );
                        }
                        store.mark_applied(generation);
                        store.wait_for_change(generation, Duration::from_secs(30));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "data plane reconcile failed; retrying");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })
}
