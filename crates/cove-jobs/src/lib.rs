//! The drivers that do the work the SageMaker API stores: one persisted
//! state machine per kind of job, each in its own file, each resuming where
//! it was after a restart. A driver reads its resource, takes the step its
//! phase calls for and writes the result back in one store write.
//!
//! - [`training`]: training and processing jobs.
//! - [`hosting`]: endpoints and their instances (and, with [`transform`],
//!   the instances of batch transform jobs).
//! - [`compilation`]: Neo compilation jobs.
//! - [`recommender`]: Inference Recommender jobs.
//! - [`studio_apps`]: Studio apps.
//! - [`contract`]: the SageMaker container contract, as pure data; the
//!   programs Cove puts inside containers live in `guest/`.
//! - [`load`]: the arithmetic of a recommender benchmark (pure).

pub mod compilation;
pub mod contract;
pub mod hosting;
pub mod load;
pub mod recommender;
pub mod studio_apps;
pub mod training;
pub mod transform;
mod workers;

pub use cove_host::Settings;
pub use hosting::Hosting;

use cove_logs::LogsService;
use cove_model::jobs::{CompilationPhase, JobPhase, RecommendationPhase, StsSession};
use cove_model::studio::AppPhase;
use cove_store::Store;
use cove_sts::StsService;
use std::sync::Arc;
use workers::Workers;

/// Who requests the ENIs of a job, as DescribeNetworkInterfaces shows it.
pub(crate) const REQUESTER: &str = "sagemaker.amazonaws.com";
/// How long the execution role's session lasts: long enough for any job.
const SESSION_SECONDS: i64 = 43_200;

/// Where `PublicInternetOnly` Studio apps get their network (on AWS, a
/// service VPC with internet access). The binary wires Cove's; the drivers
/// know only this.
pub trait PublicAppNetwork: Send + Sync {
    /// The subnet and security group for an app's ENI, made on first use.
    fn subnet_and_group(
        &self,
        tx: &mut cove_store::Tx,
        region: &str,
        account: &str,
    ) -> cove_model::AwsResult<(String, String)>;
    /// A public address for the app's ENI, released with it.
    fn give_public_address(
        &self,
        tx: &mut cove_store::Tx,
        eni_id: &str,
    ) -> cove_model::AwsResult<()>;
}

/// The drivers of jobs and Studio apps, and what they share.
pub struct Supervisor {
    pub(crate) store: Arc<Store>,
    pub(crate) logs: Arc<LogsService>,
    pub(crate) sts: Arc<StsService>,
    pub(crate) settings: Settings,
    pub(crate) public_network: Arc<dyn PublicAppNetwork>,
    workers: Workers,
}

impl Supervisor {
    pub fn new(
        store: Arc<Store>,
        logs: Arc<LogsService>,
        sts: Arc<StsService>,
        settings: Settings,
        public_network: Arc<dyn PublicAppNetwork>,
    ) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            store,
            logs,
            sts,
            settings,
            public_network,
            workers: Workers::default(),
        })
    }

    /// Watches the store and gives every job that is not cleaned up a worker.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let me = self.clone();
        crate::workers::watch_store(self.store.clone(), "cove-jobs", move |world| {
            for job in world.sagemaker_jobs.values() {
                if job.phase != JobPhase::CleanedUp {
                    me.ensure_worker(&job.key());
                }
            }
            // One worker per resource that is not finished, driven by `drive`.
            let run = |key: String, name: String, drive: fn(&Supervisor, &str)| {
                let me2 = me.clone();
                me.workers
                    .run_once(&key.clone(), name, move || drive(&me2, &key));
            };
            for a in world.studio_apps.values() {
                if a.phase != AppPhase::Gone {
                    run(
                        a.key(),
                        format!("app-{}", a.user_profile_name),
                        Supervisor::drive_app,
                    );
                }
            }
            for j in world.recommendation_jobs.values() {
                if j.phase != RecommendationPhase::CleanedUp {
                    run(
                        j.key(),
                        format!("ir-{}", j.name),
                        Supervisor::drive_recommendation,
                    );
                }
            }
            for j in world.compilation_jobs.values() {
                if j.phase != CompilationPhase::CleanedUp {
                    run(
                        j.key(),
                        format!("neo-{}", j.name),
                        Supervisor::drive_compilation,
                    );
                }
            }
        })
    }
}

/// The execution role's session a worker keeps under `key`, if it still exists.
pub(crate) fn session_of(store: &Store, key: Option<&str>) -> Option<StsSession> {
    store.snapshot().sts_sessions.get(key?).cloned()
}

/// A new session of the job's execution role, for a worker to keep.
pub(crate) fn assume_job_role(
    sts: &StsService,
    account: &str,
    role: &str,
) -> anyhow::Result<String> {
    Ok(sts
        .assume_role(account, role, "SageMaker", SESSION_SECONDS)?
        .access_key_id)
}

/// Gives back what a worker held: its managed ENI (with what hangs off it)
/// and its role session.
pub(crate) fn release(tx: &mut cove_store::Tx, eni: Option<&str>, session: Option<&str>) {
    if let Some(eni) = eni {
        if tx.world.network_interfaces.contains_key(eni) {
            cove_ec2::delete_managed_eni(tx, eni);
        }
    }
    if let Some(s) = session {
        tx.delete::<StsSession>(s);
    }
}
