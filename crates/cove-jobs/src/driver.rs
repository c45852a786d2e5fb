//! The shape every driver has, and the one loop that runs them: read the
//! stored resource, take the step its phase calls for, and again, until
//! the resource is finished. A step either moved the resource on (and
//! stored that), failed it with a reason (which the driver stores; its
//! later phases still clean up), or hit a transient error, which is logged
//! and retried a second later, so a restart or a hiccup only delays it.

use cove_model::world::Resource;
use cove_store::Store;
use std::time::Duration;

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The step is done and stored: take the next one.
    Next,
    /// The resource failed with this reason (its `FailureReason`).
    Fail(String),
    /// Nothing is left to do.
    Done,
}

/// A failure that ends the resource with this reason, carried up from deep
/// inside a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure(pub String);

impl From<Result<(), Failure>> for Step {
    fn from(r: Result<(), Failure>) -> Step {
        match r {
            Ok(()) => Step::Next,
            Err(Failure(reason)) => Step::Fail(reason),
        }
    }
}

/// One kind of resource's state machine.
pub trait Driver {
    type Resource: Resource;
    /// Takes the step `r`'s phase calls for.
    fn step(&self, r: &Self::Resource) -> anyhow::Result<Step>;
    /// Stores that `r` failed with `reason`.
    fn fail(&self, r: &Self::Resource, reason: &str) -> anyhow::Result<()>;
}

/// Drives the resource under `key` until it is finished or gone.
pub fn drive<D: Driver>(driver: &D, store: &Store, key: &str) {
    loop {
        let Some(r) = D::Resource::table(&store.snapshot()).get(key).cloned() else {
            return;
        };
        let result = match driver.step(&r) {
            Ok(Step::Next) => Ok(()),
            Ok(Step::Done) => return,
            Ok(Step::Fail(reason)) => {
                tracing::info!(kind = D::Resource::KIND, %key, %reason, "failed");
                driver.fail(&r, &reason)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::error!(kind = D::Resource::KIND, %key, error = %e, "step failed; retrying");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Declares a driver: a view of the shared [`crate::Context`] under its
/// own name, so each kind's steps live in their own `impl`.
macro_rules! driver {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub(crate) struct $name(pub(crate) std::sync::Arc<crate::Context>);

        impl std::ops::Deref for $name {
            type Target = crate::Context;
            fn deref(&self) -> &crate::Context {
                &self.0
            }
        }
    };
}
pub(crate) use driver;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_carried_failure_becomes_a_failing_step() {
        assert_eq!(Step::from(Ok(())), Step::Next);
        assert_eq!(
            Step::from(Err(Failure("AlgorithmError: boom".into()))),
            Step::Fail("AlgorithmError: boom".into())
        );
    }
}
