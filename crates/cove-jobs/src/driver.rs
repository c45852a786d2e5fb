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
    use cove_model::jobs::{CompilationJob, CompilationPhase};
    use std::cell::RefCell;

    fn job() -> CompilationJob {
        CompilationJob {
            name: "c".into(),
            // The store keys SageMaker resources by their ARN's resource part.
            arn: "arn:aws:sagemaker:us-east-1:123456789012:compilation-job/c".into(),
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            request: Default::default(),
            status: cove_model::jobs::CompilationStatus::Starting,
            failure_reason: None,
            creation_time: String::new(),
            start_time: None,
            end_time: None,
            last_modified_time: String::new(),
            phase: CompilationPhase::Starting,
            eni_id: None,
            session_access_key: None,
            stop_requested: false,
            model_artifacts: None,
            artifact_digest: None,
            derived_data_input_config: None,
        }
    }

    /// Answers what `script` says, phase by phase, and records the calls.
    struct Scripted<'s> {
        store: &'s Store,
        script: RefCell<Vec<anyhow::Result<Step>>>,
        seen: RefCell<Vec<String>>,
    }

    impl Driver for Scripted<'_> {
        type Resource = CompilationJob;
        fn step(&self, j: &CompilationJob) -> anyhow::Result<Step> {
            self.seen.borrow_mut().push(format!("{:?}", j.phase));
            let answer = self.script.borrow_mut().remove(0);
            if matches!(answer, Ok(Step::Next)) {
                let next = match j.phase {
                    CompilationPhase::Starting => CompilationPhase::Compiling,
                    _ => CompilationPhase::CleanedUp,
                };
                crate::workers::update(self.store, &j.key(), |j: &mut CompilationJob| {
                    j.phase = next
                })?;
            }
            answer
        }
        fn fail(&self, j: &CompilationJob, reason: &str) -> anyhow::Result<()> {
            self.seen.borrow_mut().push(format!("fail: {reason}"));
            crate::workers::update(self.store, &j.key(), |j: &mut CompilationJob| {
                j.phase = CompilationPhase::Done;
                j.failure_reason = Some(reason.to_string());
            })
        }
    }

    #[test]
    fn the_loop_steps_retries_fails_and_stops() {
        let store = Store::in_memory().unwrap();
        store
            .write(|tx| {
                tx.put(job());
                Ok(())
            })
            .unwrap();
        let driver = Scripted {
            store: &store,
            script: RefCell::new(vec![
                Ok(Step::Next),
                Err(anyhow::anyhow!("transient")),
                Ok(Step::Fail("ClientError: no".into())),
                Ok(Step::Next),
                Ok(Step::Done),
            ]),
            seen: RefCell::new(vec![]),
        };
        drive(&driver, &store, &job().key());
        assert_eq!(
            driver.seen.into_inner(),
            [
                "Starting",
                "Compiling",
                "Compiling",
                "fail: ClientError: no",
                "Done",
                "CleanedUp"
            ]
        );
        let stored = store.snapshot().compilation_jobs[&job().key()].clone();
        assert_eq!(stored.failure_reason.as_deref(), Some("ClientError: no"));
    }

    #[test]
    fn a_resource_that_is_gone_ends_the_loop() {
        let store = Store::in_memory().unwrap();
        let driver = Scripted {
            store: &store,
            script: RefCell::new(vec![]),
            seen: RefCell::new(vec![]),
        };
        drive(&driver, &store, "compilation-job/none");
        assert!(driver.seen.into_inner().is_empty());
    }

    #[test]
    fn a_carried_failure_becomes_a_failing_step() {
        assert_eq!(Step::from(Ok(())), Step::Next);
        assert_eq!(
            Step::from(Err(Failure("AlgorithmError: boom".into()))),
            Step::Fail("AlgorithmError: boom".into())
        );
    }
}
