//! SageMaker jobs and STS sessions as stored documents. A job keeps the
//! request it was created with (Describe echoes it), the status AWS shows,
//! and the supervisor's own progress, so a restarted Cove resumes each job
//! from where it was.

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
    pub fn key(self, name: &str) -> String {
        format!("{}/{name}", self.arn_word())
    }
}

/// One entry of `SecondaryStatusTransitions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusTransition {
    pub status: String,
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SageMakerJob {
    pub kind: JobKind,
    pub name: String,
    pub arn: String,
    pub region: String,
    pub account_id: String,
    /// The validated Create request, as the API received it.
    pub request: Value,
    /// `InProgress`, `Completed`, `Failed`, `Stopping`, `Stopped`.
    pub status: String,
    pub secondary_status: String,
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
    pub outcome: Option<String>,
}

impl SageMakerJob {
    pub fn key(&self) -> String {
        self.kind.key(&self.name)
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "Completed" | "Failed" | "Stopped")
    }

    /// Moves to a new secondary status: closes the open transition and opens one.
    pub fn transition(&mut self, secondary: &str, message: &str, now: &str) {
        if let Some(last) = self.transitions.last_mut() {
            if last.end_time.is_none() {
                last.end_time = Some(now.to_string());
            }
        }
        self.secondary_status = secondary.to_string();
        self.transitions.push(StatusTransition {
            status: secondary.to_string(),
            start_time: now.to_string(),
            end_time: None,
            status_message: message.to_string(),
        });
        self.last_modified_time = now.to_string();
    }

    /// Ends the job: the final status, its secondary status and, for a
    /// failure, the reason. The last transition closes at once, as AWS shows it.
    pub fn finish(&mut self, status: &str, secondary: &str, message: &str, now: &str) {
        self.transition(secondary, message, now);
        if let Some(last) = self.transitions.last_mut() {
            last.end_time = Some(now.to_string());
        }
        self.status = status.to_string();
        self.end_time = Some(now.to_string());
        if status == "Failed" {
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
    pub request: Value,
    /// `STARTING`, `INPROGRESS`, `COMPLETED`, `FAILED`, `STOPPING`, `STOPPED`.
    pub status: String,
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
    pub fn key_of(name: &str) -> String {
        format!("compilation-job/{name}")
    }

    pub fn key(&self) -> String {
        Self::key_of(&self.name)
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "COMPLETED" | "FAILED" | "STOPPED")
    }

    /// Ends the job with a final status (and, for `FAILED`, the reason).
    pub fn finish(&mut self, status: &str, reason: Option<String>, now: &str) {
        self.status = status.to_string();
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
    /// `PENDING`, `IN_PROGRESS`, `COMPLETED`, `FAILED`, `STOPPED`.
    pub status: String,
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
    pub request: Value,
    /// The model's Create request when the job was created.
    pub model: Value,
    /// `PENDING`, `IN_PROGRESS`, `COMPLETED`, `FAILED`, `STOPPING`, `STOPPED`.
    pub status: String,
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
    pub fn key_of(name: &str) -> String {
        format!("inference-recommendations-job/{name}")
    }

    pub fn key(&self) -> String {
        Self::key_of(&self.name)
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "COMPLETED" | "FAILED" | "STOPPED")
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
    pub request: Value,
    pub creation_time: String,
}

impl SageMakerDefinition {
    pub fn key_of(kind: &str, name: &str) -> String {
        format!("{kind}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> SageMakerJob {
        SageMakerJob {
            kind: JobKind::Training,
            name: "j".into(),
            arn: "arn".into(),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            request: Value::Null,
            status: "InProgress".into(),
            secondary_status: "Starting".into(),
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
        }
    }

    #[test]
    fn transitions_close_in_order_and_failure_sets_the_reason() {
        let mut j = job();
        j.transition("Starting", "Launching", "t1");
        j.transition("Downloading", "Downloading input data", "t2");
        j.finish("Failed", "Failed", "ClientError: boom", "t3");
        let ends: Vec<_> = j.transitions.iter().map(|t| t.end_time.clone()).collect();
        assert_eq!(
            ends,
            vec![Some("t2".into()), Some("t3".into()), Some("t3".into())]
        );
        assert_eq!(j.failure_reason.as_deref(), Some("ClientError: boom"));
        assert!(j.is_finished());
        assert_eq!(j.key(), "training-job/j");
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
        };
        assert_eq!(
            s.assumed_role_arn(),
            "arn:aws:sts::000000000000:assumed-role/SageMakerRole/SageMaker"
        );
    }
}
