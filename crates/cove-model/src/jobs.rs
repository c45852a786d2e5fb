//! SageMaker jobs and STS sessions as stored documents. A job keeps the
//! request it was created with (Describe echoes it), the status AWS shows,
//! and the supervisor's own progress, so a restarted Cove resumes each job
//! from where it was.
//!
//! A record keeps its request as the typed struct from `cove-shapes`,
//! boxed: the store's maps hold records inline in their tree nodes, and
//! requests of up to a few KB inline overflowed a driver thread's stack in
//! a debug build. The box changes nothing in the stored JSON.

use cove_shapes::sagemaker::{
    CreateCompilationJobRequest, CreateEndpointConfigInput,
    CreateInferenceRecommendationsJobRequest, CreateModelInput, CreateProcessingJobRequest,
    CreateTrainingJobRequest, VpcConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Temporary credentials minted by `AssumeRole` (or by Cove for a job's
/// execution role). Keyed by access key id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StsSession {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub role_arn: String,
    pub session_name: String,
    /// `AROA…:<session name>`.
    pub assumed_role_id: String,
    pub account_id: String,
    /// Unix seconds after which the credentials are refused.
    pub expiration: i64,
    /// The session policy `AssumeRole` was given (`Policy`).
    #[serde(default)]
    pub session_policy: Option<String>,
    /// The managed session policies `AssumeRole` was given (`PolicyArns`).
    #[serde(default)]
    pub session_policy_arns: Vec<String>,
}

impl StsSession {
    /// `arn:aws:sts::<account>:assumed-role/<role name>/<session>`.
    pub fn assumed_role_arn(&self) -> String {
        let role_name = self.role_arn.rsplit('/').next().unwrap_or_default();
        format!(
            "arn:aws:sts::{}:assumed-role/{}/{}",
            self.account_id, role_name, self.session_name
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobKind {
    Training,
    Processing,
}

impl JobKind {
    /// The word AWS uses in ARNs (`training-job`) and API names.
    pub fn arn_word(self) -> &'static str {
        match self {
            JobKind::Training => "training-job",
            JobKind::Processing => "processing-job",
        }
    }
    /// The log group SageMaker writes the container's output to.
    pub fn log_group(self) -> &'static str {
        match self {
            JobKind::Training => "/aws/sagemaker/TrainingJobs",
            JobKind::Processing => "/aws/sagemaker/ProcessingJobs",
        }
    }
    /// The job's ARN, which is its key in the world.
    pub fn key(self, region: &str, account: &str, name: &str) -> String {
        sagemaker_arn(region, account, &format!("{}/{name}", self.arn_word()))
    }
}

crate::text_enum! {
    /// `TrainingJobStatus`, `ProcessingJobStatus` and `TransformJobStatus`:
    /// the three use the same words.
    pub enum JobStatus {
        InProgress = "InProgress",
        Completed = "Completed",
        Failed = "Failed",
        Stopping = "Stopping",
        Stopped = "Stopped",
    }
}

impl JobStatus {
    /// Whether the job has ended and will not change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Stopped
        )
    }
}

crate::text_enum! {
    /// A training or processing job's `SecondaryStatus`.
    pub enum SecondaryStatus {
        Starting = "Starting",
        LaunchingMlInstances = "LaunchingMLInstances",
        PreparingTrainingStack = "PreparingTrainingStack",
        Downloading = "Downloading",
        DownloadingTrainingImage = "DownloadingTrainingImage",
        Training = "Training",
        Uploading = "Uploading",
        Stopping = "Stopping",
        Stopped = "Stopped",
        MaxRuntimeExceeded = "MaxRuntimeExceeded",
        Completed = "Completed",
        Failed = "Failed",
        Interrupted = "Interrupted",
        MaxWaitTimeExceeded = "MaxWaitTimeExceeded",
        Updating = "Updating",
        Restarting = "Restarting",
        Pending = "Pending",
    }
}

crate::text_enum! {
    /// `CompilationJobStatus`, in AWS's capitals.
    pub enum CompilationStatus {
        Starting = "STARTING",
        InProgress = "INPROGRESS",
        Completed = "COMPLETED",
        Failed = "FAILED",
        Stopping = "STOPPING",
        Stopped = "STOPPED",
    }
}

crate::text_enum! {
    /// `RecommendationJobStatus`, also the status of each benchmark step.
    pub enum RecommendationStatus {
        Pending = "PENDING",
        InProgress = "IN_PROGRESS",
        Completed = "COMPLETED",
        Failed = "FAILED",
        Stopping = "STOPPING",
        Stopped = "STOPPED",
        Deleting = "DELETING",
        Deleted = "DELETED",
    }
}

crate::text_enum! {
    /// Why a job's containers ended, kept from the run to the upload,
    /// where it decides the final status.
    pub enum Outcome {
        Completed = "Completed",
        Stopped = "Stopped",
        MaxRuntimeExceeded = "MaxRuntimeExceeded",
    }
}

/// One entry of `SecondaryStatusTransitions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusTransition {
    pub status: SecondaryStatus,
    pub start_time: String,
    pub end_time: Option<String>,
    pub status_message: String,
}

/// What the supervisor has done so far; it resumes from here after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobPhase {
    /// ENIs requested, waiting for the data plane to attach them.
    Starting,
    /// Input channels are being copied in through the ENIs.
    Downloading,
    /// The containers run.
    Running,
    /// Outputs are being copied out through the ENIs.
    Uploading,
    /// Finished: nothing left to do but release the ENIs.
    Done,
    /// ENIs released, working files removed.
    CleanedUp,
}

/// One instance of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobHost {
    /// `algo-1`, `algo-2`, …
    pub name: String,
    /// The job's ENI for this host, when the job has a `VpcConfig`.
    pub eni_id: Option<String>,
    /// The Cove host (`crate::hosts::Host`) the instance runs on, chosen
    /// when the job starts; `None`: the control plane's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_on: Option<String>,
    /// What the instance's host did in the phase the report names: the
    /// control plane moves the job on once every instance has reported
    /// on its current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<InstanceReport>,
}

impl JobHost {
    pub fn new(name: String) -> JobHost {
        JobHost {
            name,
            eni_id: None,
            placed_on: None,
            report: None,
        }
    }

    /// The instance's report on `phase`, if it has made it.
    pub fn reported(&self, phase: JobPhase) -> Option<&InstanceResult> {
        self.report
            .as_ref()
            .filter(|r| r.phase == phase)
            .map(|r| &r.result)
    }
}

/// An instance's host's account of one phase of its work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceReport {
    pub phase: JobPhase,
    pub result: InstanceResult,
}

/// How one instance's part of a phase ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum InstanceResult {
    /// Its part is done.
    Done,
    /// It failed, with the job's `FailureReason`.
    Failed { reason: String },
    /// Its container ended (the Running phase).
    Exited {
        end: ContainerEnd,
        /// What the program wrote to `/opt/ml/output/failure`.
        failure: Option<String>,
        /// The container had been told to stop (a stop, the time limit or
        /// another instance's failure) before it ended.
        told_to_stop: bool,
    },
}

impl InstanceResult {
    /// Whether the instance's part failed on its own account.
    pub fn failed_on_its_own(&self) -> bool {
        match self {
            InstanceResult::Done => false,
            InstanceResult::Failed { .. } => true,
            InstanceResult::Exited {
                end, told_to_stop, ..
            } => !told_to_stop && *end != ContainerEnd::Exited(0),
        }
    }
}

/// How a container's program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerEnd {
    Exited(i32),
    Signaled(i32),
}

impl std::fmt::Display for ContainerEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContainerEnd::Exited(c) => write!(f, "exit code: {c}"),
            ContainerEnd::Signaled(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// The Create request a [`SageMakerJob`] was made from, one variant per
/// [`JobKind`].
///
/// Its serde form is exactly the inner request's JSON (`untagged`), which
/// is what the record stored when `request` was the raw request, so a
/// database written then loads unchanged. Untagged tries the variants in
/// order and each kind's required members pick the right one: a processing
/// request has no `TrainingJobName`/`OutputDataConfig` (required for
/// training) and a training request no `ProcessingJobName`/
/// `AppSpecification` (required for processing). The variants are boxed
/// since the requests are large.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JobRequest {
    Training(Box<CreateTrainingJobRequest>),
    Processing(Box<CreateProcessingJobRequest>),
}

impl JobRequest {
    pub fn kind(&self) -> JobKind {
        match self {
            JobRequest::Training(_) => JobKind::Training,
            JobRequest::Processing(_) => JobKind::Processing,
        }
    }

    pub fn training(&self) -> Option<&CreateTrainingJobRequest> {
        match self {
            JobRequest::Training(r) => Some(r),
            JobRequest::Processing(_) => None,
        }
    }

    pub fn processing(&self) -> Option<&CreateProcessingJobRequest> {
        match self {
            JobRequest::Processing(r) => Some(r),
            JobRequest::Training(_) => None,
        }
    }

    /// The job's name (`TrainingJobName` or `ProcessingJobName`).
    pub fn name(&self) -> &str {
        match self {
            JobRequest::Training(r) => &r.training_job_name,
            JobRequest::Processing(r) => &r.processing_job_name,
        }
    }

    pub fn role_arn(&self) -> &str {
        match self {
            JobRequest::Training(r) => &r.role_arn,
            JobRequest::Processing(r) => &r.role_arn,
        }
    }

    /// The `VpcConfig`, if any (processing jobs nest it in `NetworkConfig`).
    pub fn vpc_config(&self) -> Option<&VpcConfig> {
        match self {
            JobRequest::Training(r) => r.vpc_config.as_ref(),
            JobRequest::Processing(r) => r.network_config.as_ref()?.vpc_config.as_ref(),
        }
    }

    /// `EnableNetworkIsolation` (processing jobs nest it in `NetworkConfig`).
    pub fn network_isolation(&self) -> bool {
        match self {
            JobRequest::Training(r) => r.enable_network_isolation,
            JobRequest::Processing(r) => r
                .network_config
                .as_ref()
                .and_then(|n| n.enable_network_isolation),
        }
        .unwrap_or(false)
    }

    /// The user's `Environment` for the containers.
    pub fn environment(&self) -> Option<&std::collections::BTreeMap<String, String>> {
        match self {
            JobRequest::Training(r) => r.environment.as_ref(),
            JobRequest::Processing(r) => r.environment.as_ref(),
        }
    }

    /// The container image.
    pub fn image(&self) -> Option<&str> {
        match self {
            JobRequest::Training(r) => r
                .algorithm_specification
                .as_ref()?
                .training_image
                .as_deref(),
            JobRequest::Processing(r) => Some(&r.app_specification.image_uri),
        }
    }

    /// The instance type and how many instances (at least one).
    pub fn cluster(&self) -> (String, usize) {
        let (instance_type, count) = match self {
            JobRequest::Training(r) => {
                let config = r.resource_config.as_ref();
                (
                    config.and_then(|c| c.instance_type.clone()),
                    config.and_then(|c| c.instance_count),
                )
            }
            JobRequest::Processing(r) => {
                let config = &r.processing_resources.cluster_config;
                (
                    Some(config.instance_type.clone()),
                    Some(config.instance_count),
                )
            }
        };
        let count = crate::convert::count(count).unwrap_or(1).max(1);
        (
            instance_type.unwrap_or_default(),
            crate::convert::u64_to_usize(count),
        )
    }

    /// The ML storage volume of each instance, in GiB (`VolumeSizeInGB`);
    /// `None` when the request gives none.
    pub fn volume_size_gb(&self) -> Option<u64> {
        let size = match self {
            JobRequest::Training(r) => r.resource_config.as_ref()?.volume_size_in_gb?,
            JobRequest::Processing(r) => r.processing_resources.cluster_config.volume_size_in_gb,
        };
        u64::try_from(size).ok().filter(|&s| s > 0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SageMakerJob {
    pub kind: JobKind,
    pub name: String,
    pub arn: String,
    pub region: String,
    pub account_id: String,
    /// The validated Create request.
    pub request: JobRequest,
    pub status: JobStatus,
    pub secondary_status: SecondaryStatus,
    pub transitions: Vec<StatusTransition>,
    pub failure_reason: Option<String>,
    pub exit_message: Option<String>,
    pub creation_time: String,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub last_modified_time: String,
    pub phase: JobPhase,
    pub hosts: Vec<JobHost>,
    /// Set by Stop*Job; the supervisor stops the containers and saves outputs.
    pub stop_requested: bool,
    /// `S3ModelArtifacts` once uploaded.
    pub model_artifacts: Option<String>,
    pub billable_seconds: Option<i64>,
    /// The execution role's session the supervisor moves data with.
    pub session_access_key: Option<String>,
    /// Why the containers ended (`Completed`, `Stopped`, `MaxRuntimeExceeded`),
    /// kept while the outputs are uploaded.
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Set when the containers are to end (a stop, the time limit, or an
    /// instance that failed): each instance's host terminates its
    /// container, and kills it after the grace period.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminate_containers: bool,
    /// How the hosts of its instances pull its image from Cove's registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull: Option<ImagePull>,
}

/// How an instance's host pulls the workload's image from Cove's registry
/// (`cove_host::pull`), set by the control plane when it provisions the
/// workload: the image manifest the URI named then (every instance runs
/// the same image, even if the tag moves) and a registry password for the
/// workload's role session, as `GetAuthorizationToken` gives one (valid 12
/// hours; a host that already holds the image needs none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePull {
    /// `sha256:<hex>` of the image manifest (for an index, of its
    /// linux/amd64 image).
    pub manifest: String,
    /// The `Authorization` header (`Basic <AWS:password>`).
    pub authorization: String,
}

impl SageMakerJob {
    pub fn key(&self) -> String {
        self.arn.clone()
    }

    pub fn is_finished(&self) -> bool {
        self.status.is_final()
    }

    /// Moves to a new secondary status: closes the open transition and opens one.
    pub fn transition(&mut self, secondary: SecondaryStatus, message: &str, now: &str) {
        if let Some(last) = self.transitions.last_mut() {
            if last.end_time.is_none() {
                last.end_time = Some(now.to_string());
            }
        }
        self.secondary_status = secondary;
        self.transitions.push(StatusTransition {
            status: secondary,
            start_time: now.to_string(),
            end_time: None,
            status_message: message.to_string(),
        });
        self.last_modified_time = now.to_string();
    }

    /// Ends the job: the final status, its secondary status and, for a
    /// failure, the reason. The last transition closes at once, as AWS shows it.
    pub fn finish(
        &mut self,
        status: JobStatus,
        secondary: SecondaryStatus,
        message: &str,
        now: &str,
    ) {
        self.transition(secondary, message, now);
        if let Some(last) = self.transitions.last_mut() {
            last.end_time = Some(now.to_string());
        }
        self.status = status;
        self.end_time = Some(now.to_string());
        if status == JobStatus::Failed {
            self.failure_reason = Some(message.to_string());
        }
        self.phase = JobPhase::Done;
    }
}

/// Where a compilation job is; the supervisor resumes from here after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompilationPhase {
    /// The role's session and, with a `VpcConfig`, the job's ENI are being made.
    Starting,
    /// Fetching the model archive, compiling it, uploading the result.
    Compiling,
    /// Finished: the ENI and the session are to be released.
    Done,
    /// Released, working files removed.
    CleanedUp,
}

/// A SageMaker Neo compilation job (`compilation-job/<name>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompilationJob {
    pub name: String,
    pub arn: String,
    pub region: String,
    pub account_id: String,
    /// The validated Create request.
    pub request: Box<CreateCompilationJobRequest>,
    pub status: CompilationStatus,
    pub failure_reason: Option<String>,
    pub creation_time: String,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub last_modified_time: String,
    pub phase: CompilationPhase,
    /// The job's ENI, when it has a `VpcConfig`.
    pub eni_id: Option<String>,
    /// The execution role's session the job moves data with.
    pub session_access_key: Option<String>,
    pub stop_requested: bool,
    /// `S3ModelArtifacts` and its SHA-256, once uploaded.
    pub model_artifacts: Option<String>,
    pub artifact_digest: Option<String>,
    /// The input shapes read from the model when the request gave none.
    pub derived_data_input_config: Option<String>,
}

impl CompilationJob {
    pub fn key_of(region: &str, account: &str, name: &str) -> String {
        sagemaker_arn(region, account, &format!("compilation-job/{name}"))
    }

    pub fn key(&self) -> String {
        self.arn.clone()
    }

    pub fn is_finished(&self) -> bool {
        matches!(
            self.status,
            CompilationStatus::Completed | CompilationStatus::Failed | CompilationStatus::Stopped
        )
    }

    /// Ends the job with a final status (and, for `FAILED`, the reason).
    pub fn finish(&mut self, status: CompilationStatus, reason: Option<String>, now: &str) {
        self.status = status;
        self.failure_reason = reason;
        self.end_time = Some(now.to_string());
        self.last_modified_time = now.to_string();
        self.phase = CompilationPhase::Done;
    }
}

/// Where an inference recommendations job is; resumed from here after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecommendationPhase {
    /// The payloads are being fetched.
    Pending,
    /// The benchmarks run, one instance type after another.
    Benchmarking,
    /// Finished: temporary resources and the session are to be released.
    Done,
    CleanedUp,
}

/// One benchmark of an inference recommendations job: the model on one
/// instance type, behind a temporary endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkStep {
    pub instance_type: String,
    /// The temporary endpoint (and its configuration and model copy).
    pub endpoint_name: String,
    pub status: RecommendationStatus,
    pub failure_reason: Option<String>,
    /// `RecommendationMetrics` once measured.
    pub metrics: Option<Value>,
    pub invocation_start_time: Option<String>,
    pub invocation_end_time: Option<String>,
}

/// A SageMaker Inference Recommender job (`inference-recommendations-job/<name>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendationJob {
    pub name: String,
    pub arn: String,
    pub region: String,
    pub account_id: String,
    /// The validated Create request.
    pub request: Box<CreateInferenceRecommendationsJobRequest>,
    /// The model's Create request when the job was created.
    pub model: Box<CreateModelInput>,
    pub status: RecommendationStatus,
    pub failure_reason: Option<String>,
    pub creation_time: String,
    pub completion_time: Option<String>,
    pub last_modified_time: String,
    pub phase: RecommendationPhase,
    pub steps: Vec<BenchmarkStep>,
    pub stop_requested: bool,
    pub session_access_key: Option<String>,
}

impl RecommendationJob {
    pub fn key_of(region: &str, account: &str, name: &str) -> String {
        sagemaker_arn(
            region,
            account,
            &format!("inference-recommendations-job/{name}"),
        )
    }

    pub fn key(&self) -> String {
        self.arn.clone()
    }

    pub fn is_finished(&self) -> bool {
        matches!(
            self.status,
            RecommendationStatus::Completed
                | RecommendationStatus::Failed
                | RecommendationStatus::Stopped
        )
    }
}

/// A SageMaker definition that is only stored and described: a model
/// (`model/<name>`) or an endpoint configuration (`endpoint-config/<name>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SageMakerDefinition {
    /// `model` or `endpoint-config`, as in the ARN.
    pub kind: String,
    pub name: String,
    pub arn: String,
    pub region: String,
    /// The validated Create request.
    pub request: DefinitionRequest,
    pub creation_time: String,
}

/// The Create request of a [`SageMakerDefinition`]. Like [`JobRequest`],
/// its serde form is the inner request's JSON (`untagged`), as stored when
/// it was a raw request: a model's required `ModelName` is absent from an
/// endpoint configuration's request, whose required `EndpointConfigName`
/// and `ProductionVariants` a model's request lacks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DefinitionRequest {
    Model(Box<CreateModelInput>),
    EndpointConfig(Box<CreateEndpointConfigInput>),
}

impl DefinitionRequest {
    pub fn model(&self) -> Option<&CreateModelInput> {
        match self {
            DefinitionRequest::Model(r) => Some(r),
            DefinitionRequest::EndpointConfig(_) => None,
        }
    }

    pub fn endpoint_config(&self) -> Option<&CreateEndpointConfigInput> {
        match self {
            DefinitionRequest::EndpointConfig(r) => Some(r),
            DefinitionRequest::Model(_) => None,
        }
    }
}

impl SageMakerDefinition {
    pub fn key_of(region: &str, account: &str, kind: &str, name: &str) -> String {
        sagemaker_arn(region, account, &format!("{kind}/{name}"))
    }
}

/// `arn:aws:sagemaker:<region>:<account>:<resource>`: the ARN of a
/// SageMaker resource, and its key in the world.
pub fn sagemaker_arn(region: &str, account: &str, resource: &str) -> String {
    format!("arn:aws:sagemaker:{region}:{account}:{resource}")
}

/// A training job with nothing set, for other modules' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub(crate) fn job() -> SageMakerJob {
        SageMakerJob {
            kind: JobKind::Training,
            name: "j".into(),
            arn: "arn".into(),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            request: JobRequest::Training(Box::default()),
            status: JobStatus::InProgress,
            secondary_status: SecondaryStatus::Starting,
            transitions: vec![],
            failure_reason: None,
            exit_message: None,
            creation_time: "t0".into(),
            start_time: None,
            end_time: None,
            last_modified_time: "t0".into(),
            phase: JobPhase::Starting,
            hosts: vec![],
            stop_requested: false,
            model_artifacts: None,
            billable_seconds: None,
            session_access_key: None,
            outcome: None,
            terminate_containers: false,
            image_pull: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::job;
    use super::*;

    #[test]
    fn transitions_close_in_order_and_failure_sets_the_reason() {
        let mut j = job();
        j.transition(SecondaryStatus::Starting, "Launching", "t1");
        j.transition(SecondaryStatus::Downloading, "Downloading input data", "t2");
        j.finish(
            JobStatus::Failed,
            SecondaryStatus::Failed,
            "ClientError: boom",
            "t3",
        );
        let ends: Vec<_> = j.transitions.iter().map(|t| t.end_time.clone()).collect();
        assert_eq!(
            ends,
            vec![Some("t2".into()), Some("t3".into()), Some("t3".into())]
        );
        assert_eq!(j.failure_reason.as_deref(), Some("ClientError: boom"));
        assert!(j.is_finished());
        assert_eq!(j.key(), j.arn);
        assert_eq!(
            JobKind::Training.key("us-east-1", "000000000000", "j"),
            "arn:aws:sagemaker:us-east-1:000000000000:training-job/j"
        );
    }

    /// A job as the store kept it when `request` was the raw request
    /// (`serde_json::Value`): such databases must load unchanged.
    fn stored_job(kind: &str, request: Value) -> Value {
        serde_json::json!({
            "kind": kind, "name": "j", "arn": "arn", "region": "us-east-1",
            "account_id": "000000000000", "request": request, "status": "InProgress",
            "secondary_status": "Starting",
            "transitions": [{"status": "Starting", "start_time": "t0", "end_time": null,
                             "status_message": "Preparing the instances for training"}],
            "failure_reason": null, "exit_message": null, "creation_time": "t0",
            "start_time": null, "end_time": null, "last_modified_time": "t0",
            "phase": "Starting", "hosts": [{"name": "algo-1", "eni_id": "eni-1"}],
            "stop_requested": false, "model_artifacts": null, "billable_seconds": null,
            "session_access_key": "ASIA1",
        })
    }

    #[test]
    fn records_stored_with_a_raw_request_load_as_typed_ones() {
        let training = serde_json::json!({
            "TrainingJobName": "j",
            "RoleArn": "arn:aws:iam::000000000000:role/r",
            "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File"},
            "HyperParameters": {"epochs": "2", "sagemaker_program": "\"train.py\""},
            "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": "s3://b/train"}}}],
            "OutputDataConfig": {"S3OutputPath": "s3://b/out"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 10},
            "StoppingCondition": {"MaxRuntimeInSeconds": 60},
            "VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]},
            "EnableNetworkIsolation": true,
            "Tags": [{"Key": "k", "Value": "v"}],
        });
        let job: SageMakerJob =
            serde_json::from_value(stored_job("Training", training.clone())).unwrap();
        let JobRequest::Training(r) = &job.request else {
            panic!("{:?}", job.request);
        };
        assert_eq!(r.training_job_name, "j");
        assert_eq!(job.request.cluster(), ("ml.m5.large".to_string(), 2));
        assert_eq!(job.request.volume_size_gb(), Some(10));
        assert_eq!(job.request.vpc_config().unwrap().subnets, ["subnet-1"]);
        assert!(job.request.network_isolation());
        assert_eq!(job.request.image(), Some("img"));
        // Written back, the request is the JSON it was.
        assert_eq!(serde_json::to_value(&job.request).unwrap(), training);

        let processing = serde_json::json!({
            "ProcessingJobName": "p",
            "RoleArn": "arn:aws:iam::000000000000:role/r",
            "AppSpecification": {"ImageUri": "img", "ContainerEntrypoint": ["python3"]},
            "ProcessingResources": {"ClusterConfig": {
                "InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5}},
            "NetworkConfig": {"EnableNetworkIsolation": false,
                              "VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-2"]}},
        });
        let job: SageMakerJob =
            serde_json::from_value(stored_job("Processing", processing.clone())).unwrap();
        assert_eq!(job.request.kind(), JobKind::Processing);
        assert_eq!(job.request.volume_size_gb(), Some(5));
        assert_eq!(job.request.role_arn(), "arn:aws:iam::000000000000:role/r");
        assert_eq!(job.request.vpc_config().unwrap().subnets, ["subnet-2"]);
        assert!(!job.request.network_isolation());
        assert_eq!(serde_json::to_value(&job.request).unwrap(), processing);

        let model: SageMakerDefinition = serde_json::from_value(serde_json::json!({
            "kind": "model", "name": "m", "arn": "arn", "region": "us-east-1",
            "creation_time": "t0",
            "request": {"ModelName": "m", "ExecutionRoleArn": "arn:aws:iam::000000000000:role/r",
                        "PrimaryContainer": {"Image": "img", "ModelDataUrl": "s3://b/m.tar.gz"}},
        }))
        .unwrap();
        assert_eq!(model.request.model().unwrap().model_name, "m");
        let config: SageMakerDefinition = serde_json::from_value(serde_json::json!({
            "kind": "endpoint-config", "name": "c", "arn": "arn", "region": "us-east-1",
            "creation_time": "t0",
            "request": {"EndpointConfigName": "c", "ProductionVariants": [{
                "VariantName": "A", "ModelName": "m", "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1, "InitialVariantWeight": 1}]},
        }))
        .unwrap();
        let variants = &config
            .request
            .endpoint_config()
            .unwrap()
            .production_variants;
        assert_eq!(variants[0].initial_variant_weight, Some(1.0));
    }

    #[test]
    fn assumed_role_arn_names_role_and_session() {
        let s = StsSession {
            access_key_id: "ASIA".into(),
            secret_access_key: "s".into(),
            session_token: "t".into(),
            role_arn: "arn:aws:iam::000000000000:role/service/SageMakerRole".into(),
            session_name: "SageMaker".into(),
            assumed_role_id: "AROA:SageMaker".into(),
            account_id: "000000000000".into(),
            expiration: 0,
            session_policy: None,
            session_policy_arns: Vec::new(),
        };
        assert_eq!(
            s.assumed_role_arn(),
            "arn:aws:sts::000000000000:assumed-role/SageMakerRole/SageMaker"
        );
    }
}
