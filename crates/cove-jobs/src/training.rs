//! The job supervisor: drives every stored training and processing job
//! through its phases on the control plane — Starting (credentials, each
//! instance placed on a host, ENIs in the job's subnets), Downloading,
//! Running (the stop and the time limit; one instance's failure ends the
//! others), Uploading, then cleanup (ENIs and the session released). The
//! instances' own work in each phase runs on their hosts
//! ([`crate::instances`]); this driver waits for every instance's report
//! on the phase and moves the job on with one store write, so after a
//! restart a job resumes where it was. A job with an instance on a host
//! that is lost fails with AWS's internal-error reason.

use crate::driver::{driver, Driver, Failure, Step};
use crate::instances::{model_artifact_uri, script_mode};
use crate::{assume_job_role, release};
use cove_model::hosts::Demand;
use cove_model::ids::now_rfc3339;
use cove_model::jobs::{
    ContainerEnd, InstanceResult, JobKind, JobPhase, JobRequest, JobStatus, Outcome, SageMakerJob,
    SecondaryStatus,
};
use std::time::{Duration, Instant};

pub use crate::instances::{ARTIFACT_UPLOAD_FAILED, DATA_DOWNLOAD_DISK_FULL, DATA_DOWNLOAD_FAILED};

/// AWS's reason for a job that failed for want of its instances (Cove:
/// a host that held one of them stopped answering).
pub const INTERNAL_ERROR: &str =
    "InternalServerError: We encountered an internal error. Please try again.";

fn stopped_message(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Training => "Training job stopped",
        JobKind::Processing => "Processing job stopped",
    }
}

/// How a training or processing job's steps went, before [`Step`].
type Stepped = Result<(), Failure>;

driver!(
    /// Training and processing jobs.
    Training
);

impl Driver for Training {
    type Resource = SageMakerJob;

    fn step(&self, job: &SageMakerJob) -> anyhow::Result<Step> {
        let stepped = match job.phase {
            JobPhase::Starting => self.start(job)?,
            JobPhase::Downloading => self.download(job)?,
            JobPhase::Running => self.run(job)?,
            JobPhase::Uploading => self.upload(job)?,
            JobPhase::Done => self.cleanup(job)?,
            JobPhase::CleanedUp => return Ok(Step::Done),
        };
        Ok(stepped.into())
    }

    fn fail(&self, job: &SageMakerJob, reason: &str) -> anyhow::Result<()> {
        self.finish_failed(&job.key(), reason)
    }
}

impl Training {
    /// Applies `f` to the stored job in one write.
    fn update(&self, key: &str, f: impl Fn(&mut SageMakerJob)) -> anyhow::Result<SageMakerJob> {
        let job = self.store.write(|tx| {
            let mut job = tx.cloned::<SageMakerJob>(key)?;
            f(&mut job);
            tx.put(job.clone());
            Ok(job)
        })?;
        Ok(job)
    }

    fn finish_failed(&self, key: &str, reason: &str) -> anyhow::Result<()> {
        self.update(key, |j| {
            j.finish(
                JobStatus::Failed,
                SecondaryStatus::Failed,
                reason,
                &now_rfc3339(),
            )
        })?;
        Ok(())
    }

    fn stopped_early(&self, job: &SageMakerJob) -> anyhow::Result<bool> {
        if !job.stop_requested {
            return Ok(false);
        }
        self.update(&job.key(), |j| {
            j.finish(
                JobStatus::Stopped,
                SecondaryStatus::Stopped,
                stopped_message(j.kind),
                &now_rfc3339(),
            )
        })?;
        Ok(true)
    }

    /// Waits until every instance has reported on `phase` (an instance on
    /// a lost host counts as reported when `lost_hosts_report`), calling
    /// `meanwhile` with the job at every change and at least every second.
    /// `Ok(job)` once all have; `Err` with the step's result when the job
    /// left the phase meanwhile (done) or an instance that has not reported
    /// is on a lost host (the job fails).
    fn await_reports(
        &self,
        key: &str,
        phase: JobPhase,
        lost_hosts_report: bool,
        mut meanwhile: impl FnMut(&SageMakerJob) -> anyhow::Result<()>,
    ) -> anyhow::Result<Result<SageMakerJob, Stepped>> {
        loop {
            let generation = self.store.generation();
            let world = self.store.snapshot();
            let Some(job) = world.sagemaker_jobs.get(key).map(|j| (**j).clone()) else {
                return Ok(Err(Ok(())));
            };
            if job.phase != phase {
                return Ok(Err(Ok(())));
            }
            let lost = |on: Option<&str>| cove_model::hosts::on_lost_host(&world, on);
            let mut waiting = false;
            for h in &job.hosts {
                if h.reported(phase).is_some() {
                    continue;
                }
                match h.placed_on.as_deref() {
                    on if lost(on) && lost_hosts_report => {}
                    Some(on) if lost(Some(on)) => {
                        tracing::warn!(job = %job.name, host = %on, "a host of the job's instances was lost");
                        return Ok(Err(Err(Failure(INTERNAL_ERROR.into()))));
                    }
                    _ => waiting = true,
                }
            }
            if !waiting {
                return Ok(Ok(job));
            }
            meanwhile(&job)?;
            self.store
                .wait_for_change(generation, Duration::from_secs(1));
        }
    }

    // ---- Starting ----

    fn start(&self, job: &SageMakerJob) -> anyhow::Result<Stepped> {
        if self.stopped_early(job)? {
            return Ok(Ok(()));
        }
        let key = job.key();
        let vpc = job.request.vpc_config().cloned();
        if vpc.is_some() && self.settings.instance.is_none() {
            return Ok(Err(Failure(
                "ClientError: Cove's data plane is off (it needs root, ip and nft), so a job with a VpcConfig cannot get its network interfaces.".into(),
            )));
        }
        if let Some(problem) = vpc
            .as_ref()
            .and_then(|v| crate::dhcp_options_problem(&self.store.snapshot(), &v.subnets))
        {
            return Ok(Err(Failure(problem)));
        }
        let session = match &job.session_access_key {
            Some(s) => s.clone(),
            None => {
                let role = job.request.role_arn();
                let s = assume_job_role(&self.sts, &job.account_id, role)?;
                self.update(&key, |j| j.session_access_key = Some(s.clone()))?;
                s
            }
        };
        let image = job.request.image().unwrap_or_default();
        let image_pull = match &job.image_pull {
            Some(pull) => Some(pull.clone()),
            None => {
                let pull =
                    crate::image_pull(&self.settings, image, &job.account_id, Some(&session));
                if pull.is_some() {
                    self.update(&key, |j| j.image_pull = pull.clone())?;
                }
                pull
            }
        };
        // Each host's ENI: in the job's subnets, or, without a VpcConfig, in
        // SageMaker's own network with internet access, as on AWS (network
        // isolation, or the data plane off, keeps loopback only).
        let in_managed_network =
            vpc.is_none() && self.settings.instance.is_some() && !job.request.network_isolation();
        if vpc.is_some() || in_managed_network {
            let network = crate::ManagedNetwork::Jobs;
            // Hosts belong to no account: placed from the whole world. The
            // placement is kept only with the ENIs, in one write, so a
            // restart never places an instance twice.
            let (instance_type, _) = job.request.cluster();
            let hosts = if self.needs_control_plane(job, image_pull.as_ref()) {
                vec![None; job.hosts.len()]
            } else {
                cove_model::hosts::place_instances(
                    &self.store.snapshot(),
                    job.hosts.len(),
                    Demand::of(&instance_type),
                )
            };
            let made = self.store.write_as(&job.account_id, |tx| {
                let mut j = tx.cloned::<SageMakerJob>(&key)?;
                let kind = match j.kind {
                    JobKind::Training => "Training Job",
                    JobKind::Processing => "Processing Job",
                };
                for (i, (host, placed_on)) in j.hosts.iter_mut().zip(hosts.clone()).enumerate() {
                    if host.eni_id.is_some() {
                        continue;
                    }
                    let placement = crate::Placement::of_host(vpc.as_ref(), i, network);
                    let description = placement
                        .host_eni_description(&format!("{kind} {} ({})", j.name, host.name));
                    let eni = crate::create_workload_eni(
                        tx,
                        self.public_network.as_ref(),
                        placement,
                        (&j.region, &j.account_id),
                        description,
                        placed_on.as_deref(),
                    )?;
                    host.eni_id = Some(eni);
                    host.placed_on = placed_on;
                }
                tx.put(j);
                Ok(())
            });
            if let Err(e) = made {
                let place = if vpc.is_some() {
                    "a network interface in the job's subnets"
                } else {
                    "the job's network interface in SageMaker's network"
                };
                return Ok(Err(Failure(format!(
                    "ClientError: Cannot create {place}: {}",
                    e.message
                ))));
            }
            // This host's routers (the gateways and endpoints are here)
            // know every instance's ENI; each instance's host waits for its
            // own data plane before its first transfer.
            self.wait_for_data_plane()?;
        }
        self.update(&key, |j| {
            let now = now_rfc3339();
            j.start_time = Some(now.clone());
            j.phase = JobPhase::Downloading;
            j.transition(SecondaryStatus::Downloading, "Downloading input data", &now);
        })?;
        Ok(Ok(()))
    }

    /// Whether the job's instances must run on the control plane's host:
    /// its image is a legacy import there or one the registry would not
    /// give it ([`crate::image_needs_control_plane`]), or it has no ENI to
    /// carry its data (network isolation).
    fn needs_control_plane(
        &self,
        job: &SageMakerJob,
        pull: Option<&cove_model::jobs::ImagePull>,
    ) -> bool {
        if job.request.network_isolation() {
            return true;
        }
        let image = job.request.image().unwrap_or_default();
        crate::image_needs_control_plane(&self.settings, image, script_mode(job), pull)
    }

    // ---- Downloading ----

    fn download(&self, job: &SageMakerJob) -> anyhow::Result<Stepped> {
        if self.stopped_early(job)? {
            return Ok(Ok(()));
        }
        let job = match self.await_reports(&job.key(), JobPhase::Downloading, false, |_| Ok(()))? {
            Ok(job) => job,
            Err(stepped) => return Ok(stepped),
        };
        if let Some(reason) = first_failure(&job, JobPhase::Downloading) {
            return Ok(Err(Failure(reason)));
        }
        self.update(&job.key(), |j| {
            let now = now_rfc3339();
            j.phase = JobPhase::Running;
            if j.kind == JobKind::Training {
                j.transition(
                    SecondaryStatus::Training,
                    "Training image download completed. Training in progress.",
                    &now,
                );
            }
        })?;
        Ok(Ok(()))
    }

    // ---- Running ----

    /// Waits for every instance's container to end; asks them all to end
    /// when the job is stopped, its time is up, or one instance failed on
    /// its own (as on AWS, the job then fails with that instance's reason).
    fn run(&self, job: &SageMakerJob) -> anyhow::Result<Stepped> {
        let key = job.key();
        // A negative value reads as none, as JSON's `as_u64` read it.
        let max_runtime = match &job.request {
            JobRequest::Training(r) => r
                .stopping_condition
                .as_ref()
                .and_then(|s| s.max_runtime_in_seconds),
            JobRequest::Processing(r) => r
                .stopping_condition
                .as_ref()
                .map(|s| s.max_runtime_in_seconds),
        }
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(86_400);
        let started = job
            .start_time
            .as_deref()
            .map(|s| {
                u64::try_from(cove_sagemaker::common::seconds_between(s, &now_rfc3339()))
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(max_runtime.saturating_sub(started));
        let reports = self.await_reports(&key, JobPhase::Running, false, |j| {
            if j.terminate_containers {
                return Ok(());
            }
            let failed = j
                .hosts
                .iter()
                .any(|h| h.reported(JobPhase::Running).is_some_and(InstanceResult::failed_on_its_own));
            let outcome = if failed {
                None
            } else if j.stop_requested {
                Some(Outcome::Stopped)
            } else if Instant::now() >= deadline {
                Some(Outcome::MaxRuntimeExceeded)
            } else {
                return Ok(());
            };
            tracing::info!(job = %j.name, outcome = outcome.map_or("Failed", |o| o.as_str()), "stopping containers");
            self.update(&key, |j| {
                j.terminate_containers = true;
                j.outcome = outcome;
            })?;
            Ok(())
        })?;
        let job = match reports {
            Ok(job) => job,
            Err(stepped) => return Ok(stepped),
        };
        // The last lines of containers on agents, before the job moves on.
        crate::container_logs::deliver(&self.store, &self.logs)?;
        self.after_containers(&job)
    }

    fn after_containers(&self, job: &SageMakerJob) -> anyhow::Result<Stepped> {
        let key = job.key();
        if let Some(ran) = how_the_run_failed(job) {
            if let Some(exit_message) = ran.exit_message {
                self.update(&key, |j| {
                    if j.kind == JobKind::Processing {
                        j.exit_message = Some(exit_message.clone());
                    }
                })?;
            }
            return Ok(Err(Failure(ran.reason)));
        }
        self.update(&key, |j| {
            let now = now_rfc3339();
            j.phase = JobPhase::Uploading;
            j.outcome = Some(j.outcome.unwrap_or(Outcome::Completed));
            if j.kind == JobKind::Training {
                j.transition(
                    SecondaryStatus::Uploading,
                    "Uploading generated training model",
                    &now,
                );
            }
        })?;
        Ok(Ok(()))
    }

    // ---- Uploading ----

    fn upload(&self, job: &SageMakerJob) -> anyhow::Result<Stepped> {
        let job = match self.await_reports(&job.key(), JobPhase::Uploading, false, |_| Ok(()))? {
            Ok(job) => job,
            Err(stepped) => return Ok(stepped),
        };
        if let Some(reason) = first_failure(&job, JobPhase::Uploading) {
            return Ok(Err(Failure(reason)));
        }
        let outcome = job.outcome.unwrap_or(Outcome::Completed);
        let artifacts = (job.kind == JobKind::Training).then(|| model_artifact_uri(&job));
        self.update(&job.key(), |j| {
            let now = now_rfc3339();
            j.model_artifacts = artifacts.clone();
            let (status, secondary, message) = match (outcome, j.kind) {
                (Outcome::Completed, JobKind::Training) => (
                    JobStatus::Completed,
                    SecondaryStatus::Completed,
                    "Training job completed",
                ),
                (Outcome::Completed, JobKind::Processing) => (
                    JobStatus::Completed,
                    SecondaryStatus::Completed,
                    "Processing job completed",
                ),
                (Outcome::Stopped, _) => (
                    JobStatus::Stopped,
                    SecondaryStatus::Stopped,
                    stopped_message(j.kind),
                ),
                (Outcome::MaxRuntimeExceeded, _) => (
                    JobStatus::Stopped,
                    SecondaryStatus::MaxRuntimeExceeded,
                    "Job stopped because it exceeded MaxRuntimeInSeconds",
                ),
            };
            j.finish(status, secondary, message, &now);
            if let (Some(s), Some(e)) = (&j.start_time, &j.end_time) {
                j.billable_seconds = Some(cove_sagemaker::common::seconds_between(s, e));
            }
        })?;
        Ok(Ok(()))
    }

    // ---- Cleanup ----

    /// Once every instance has removed its container and files (an
    /// instance on a lost host does when its host comes back), releases the
    /// ENIs and the role's session.
    fn cleanup(&self, job: &SageMakerJob) -> anyhow::Result<Stepped> {
        let key = job.key();
        if self
            .await_reports(&key, JobPhase::Done, true, |_| Ok(()))?
            .is_err()
        {
            return Ok(Ok(()));
        }
        // The flow-log collectors read the kernel's counters once a second;
        // an ENI deleted sooner would take its last packets with it.
        let world = self.store.snapshot();
        let covered = job
            .hosts
            .iter()
            .filter_map(|h| h.eni_id.as_ref())
            .filter_map(|e| world.network_interfaces.get(e))
            .any(|eni| world.flow_logs.values().any(|f| f.covers(eni)));
        if covered {
            std::thread::sleep(Duration::from_millis(2500));
        }
        self.store.write(|tx| {
            let Some(mut j) = tx.world.sagemaker_jobs.get(&key).map(|x| (**x).clone()) else {
                return Ok(());
            };
            for h in &j.hosts {
                release(tx, h.eni_id.as_deref(), None);
            }
            release(tx, None, j.session_access_key.take().as_deref());
            j.phase = JobPhase::CleanedUp;
            tx.put(j);
            Ok(())
        })?;
        let dir = crate::workload_dir(&self.settings.jobs_dir, &job.arn);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(Ok(()))
    }
}

/// Why a job's run failed: its `FailureReason`, and its `ExitMessage`.
#[derive(Debug, PartialEq)]
struct RunFailure {
    reason: String,
    exit_message: Option<String>,
}

/// Whether the job's containers, all reported, failed it: not when it was
/// stopped or ran out of time (its `outcome`); else the instance that
/// failed on its own decides (not one the job told to stop after it), or,
/// failing that, any that did not end well (vanished, killed from outside).
fn how_the_run_failed(job: &SageMakerJob) -> Option<RunFailure> {
    if job.outcome.is_some() {
        return None;
    }
    let results: Vec<&InstanceResult> = job
        .hosts
        .iter()
        .filter_map(|h| h.reported(JobPhase::Running))
        .collect();
    let ended_well = |r: &InstanceResult| {
        matches!(
            r,
            InstanceResult::Done
                | InstanceResult::Exited {
                    end: ContainerEnd::Exited(0),
                    ..
                }
        )
    };
    let failed = results
        .iter()
        .find(|r| r.failed_on_its_own())
        .or_else(|| results.iter().find(|r| !ended_well(r)))?;
    match failed {
        InstanceResult::Failed { reason } => Some(RunFailure {
            reason: reason.clone(),
            exit_message: None,
        }),
        InstanceResult::Exited { end, failure, .. } => {
            let reason = match (job.kind, failure) {
                // A built-in algorithm blames the input as SageMaker's own
                // algorithms do (`ClientError: ...`).
                (JobKind::Training, Some(f)) if f.starts_with("ClientError: ") => f.clone(),
                (JobKind::Training, Some(f)) => format!("AlgorithmError: {f}"),
                (JobKind::Training, None) => {
                    format!("AlgorithmError: the training container failed ({end})")
                }
                (JobKind::Processing, _) => {
                    "AlgorithmError: See job logs for more information".to_string()
                }
            };
            Some(RunFailure {
                reason,
                exit_message: Some(failure.clone().unwrap_or_else(|| end.to_string())),
            })
        }
        InstanceResult::Done => None,
    }
}

/// The reason of the first instance that reported a failure on `phase`.
fn first_failure(job: &SageMakerJob, phase: JobPhase) -> Option<String> {
    job.hosts.iter().find_map(|h| match h.reported(phase) {
        Some(InstanceResult::Failed { reason }) => Some(reason.clone()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_model::jobs::{InstanceReport, JobHost};

    fn ran(kind: JobKind, results: Vec<InstanceResult>) -> SageMakerJob {
        let mut job: SageMakerJob = serde_json::from_value(serde_json::json!({
            "kind": "Training", "name": "j", "arn": "arn", "region": "us-east-1",
            "account_id": "123456789012", "request": {"TrainingJobName": "j",
            "AlgorithmSpecification": {"TrainingInputMode": "File"}, "RoleArn": "r",
            "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
            "StoppingCondition": {}}, "status": "InProgress",
            "secondary_status": "Training", "transitions": [], "failure_reason": null,
            "exit_message": null, "creation_time": "t", "start_time": null,
            "end_time": null, "last_modified_time": "t", "phase": "Running",
            "hosts": [], "stop_requested": false, "model_artifacts": null,
            "billable_seconds": null, "session_access_key": null
        }))
        .unwrap();
        job.kind = kind;
        job.hosts = results
            .into_iter()
            .enumerate()
            .map(|(i, result)| JobHost {
                report: Some(InstanceReport {
                    phase: JobPhase::Running,
                    result,
                }),
                ..JobHost::new(format!("algo-{}", i + 1))
            })
            .collect();
        job
    }

    fn exited(code: i32, failure: Option<&str>, told_to_stop: bool) -> InstanceResult {
        InstanceResult::Exited {
            end: ContainerEnd::Exited(code),
            failure: failure.map(String::from),
            told_to_stop,
        }
    }

    #[test]
    fn the_instance_that_failed_first_on_its_own_decides_the_reason() {
        // algo-1 was told to stop because algo-2 failed: algo-2's reason.
        let job = ran(
            JobKind::Training,
            vec![exited(143, None, true), exited(1, Some("boom"), false)],
        );
        assert_eq!(
            how_the_run_failed(&job),
            Some(RunFailure {
                reason: "AlgorithmError: boom".into(),
                exit_message: Some("boom".into())
            })
        );
        let job = ran(
            JobKind::Training,
            vec![
                exited(0, None, false),
                InstanceResult::Failed {
                    reason: "ClientError: The container could not run its program: x.".into(),
                },
            ],
        );
        assert_eq!(
            how_the_run_failed(&job).unwrap().reason,
            "ClientError: The container could not run its program: x."
        );
        let job = ran(JobKind::Training, vec![exited(2, None, false)]);
        assert_eq!(
            how_the_run_failed(&job).unwrap().reason,
            "AlgorithmError: the training container failed (exit code: 2)"
        );
        let job = ran(JobKind::Processing, vec![exited(2, None, false)]);
        assert_eq!(
            how_the_run_failed(&job),
            Some(RunFailure {
                reason: "AlgorithmError: See job logs for more information".into(),
                exit_message: Some("exit code: 2".into())
            })
        );
    }

    #[test]
    fn a_stop_or_the_time_limit_is_no_failure_and_a_clean_run_is_none() {
        let mut job = ran(JobKind::Training, vec![exited(143, None, true)]);
        job.outcome = Some(Outcome::Stopped);
        assert_eq!(how_the_run_failed(&job), None);
        let job = ran(
            JobKind::Training,
            vec![exited(0, None, false), exited(0, None, true)],
        );
        assert_eq!(how_the_run_failed(&job), None);
        // A container killed from outside, though nobody told it to stop.
        let job = ran(
            JobKind::Training,
            vec![InstanceResult::Exited {
                end: ContainerEnd::Signaled(9),
                failure: None,
                told_to_stop: true,
            }],
        );
        assert_eq!(
            how_the_run_failed(&job).unwrap().reason,
            "AlgorithmError: the training container failed (killed by signal 9)"
        );
    }
}
