//! The training and processing job API: Create/Describe/List/Stop. Handlers
//! check what the schema cannot (names unique, `VpcConfig` ids existing in
//! one VPC, channels distinct) and store the job; its driver in `cove-jobs`
//! does the rest.

use crate::common::Caller;
use crate::common::*;
use crate::requests::{CreateProcessingJobRequest, CreateTrainingJobRequest};
use cove_model::ids::now_rfc3339;
use cove_model::instance;
use cove_model::jobs::{
    JobHost, JobKind, JobPhase, JobRequest, JobStatus, SageMakerJob, SecondaryStatus,
};
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_wire::RequestContext;
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn not_found() -> AwsError {
    validation("Requested resource not found.")
}

/// Checks a Create request beyond its schema and builds the stored job,
/// which keeps the request for Describe to echo and its driver to read.
pub fn new_job(
    world: &World,
    ctx: &RequestContext,
    request: &JobRequest,
) -> AwsResult<SageMakerJob> {
    let kind = request.kind();
    let name = request.name().to_string();
    let arn = kind.key(&ctx.region, ctx.account_id(), &name);
    if world.sagemaker_jobs.contains_key(&arn) {
        let what = match kind {
            JobKind::Training => "Training",
            JobKind::Processing => "Processing",
        };
        return Err(AwsError::client(
            "ResourceInUse",
            format!(
                "{what} job names must be unique within an AWS account and region, and a {} job with this name already exists ({arn})",
                what.to_lowercase()
            ),
        ));
    }
    if let Some(config) = request.vpc_config() {
        check_vpc_config(
            world,
            &ctx.region,
            &config.subnets,
            &config.security_group_ids,
        )?;
    }
    let (instance_type, count) = request.cluster();
    instance::resources(&instance_type).ok_or_else(|| {
        validation(format!(
            "Instance type {instance_type} is not supported by Cove."
        ))
    })?;
    match request {
        JobRequest::Training(r) => check_training(r)?,
        JobRequest::Processing(r) => check_processing(r)?,
    }
    let now = now_rfc3339();
    let hosts = (1..=count)
        .map(|i| JobHost::new(format!("algo-{i}")))
        .collect();
    let mut job = SageMakerJob {
        kind,
        name,
        arn,
        region: ctx.region.clone(),
        account_id: ctx.account_id().to_string(),
        request: request.clone(),
        status: JobStatus::InProgress,
        secondary_status: SecondaryStatus::Starting,
        transitions: Vec::new(),
        failure_reason: None,
        exit_message: None,
        creation_time: now.clone(),
        start_time: None,
        end_time: None,
        last_modified_time: now.clone(),
        phase: JobPhase::Starting,
        hosts,
        stop_requested: false,
        model_artifacts: None,
        billable_seconds: None,
        session_access_key: None,
        outcome: None,
        terminate_containers: false,
        image_pull: None,
    };
    job.transition(
        SecondaryStatus::Starting,
        "Preparing the instances for training",
        &now,
    );
    Ok(job)
}

fn check_training(request: &CreateTrainingJobRequest) -> AwsResult<()> {
    let algo = request.algorithm_specification.as_ref();
    let image = algo.and_then(|a| a.training_image.as_ref());
    let algorithm = algo.and_then(|a| a.algorithm_name.as_ref());
    if image.is_none() && algorithm.is_none() {
        return Err(validation(
            "Either the training image or the algorithm name must be specified.",
        ));
    }
    if algorithm.is_some() {
        return Err(validation(
            "AlgorithmName: algorithm resources are not supported by Cove; give a TrainingImage.",
        ));
    }
    let mut seen = BTreeSet::new();
    for channel in request.input_data_config.iter().flatten() {
        let name = channel.channel_name.as_str();
        if !seen.insert(name) {
            return Err(validation(format!(
                "Channel names must be unique: {name} is given more than once."
            )));
        }
        let mode = channel
            .input_mode
            .as_deref()
            .or(algo.map(|a| a.training_input_mode.as_str()))
            .unwrap_or("File");
        match (
            &channel.data_source.s3_data_source,
            &channel.data_source.file_system_data_source,
        ) {
            (Some(_), None) => {}
            (None, Some(fs)) => check_file_system_channel(name, fs, request, mode)?,
            _ => {
                return Err(validation(format!(
                    "Channel {name}: give exactly one of S3DataSource and FileSystemDataSource."
                )))
            }
        }
        if mode != "File" {
            return Err(validation(format!(
                "Channel {name}: input mode {mode} is not supported by Cove; use File."
            )));
        }
    }
    Ok(())
}

/// A channel on a file system is reached through the job's own ENIs, so
/// it needs a `VpcConfig`; it is mounted, so only File mode applies. Cove
/// serves EFS, not FSx for Lustre.
fn check_file_system_channel(
    name: &str,
    fs: &cove_shapes::sagemaker::FileSystemDataSource,
    request: &CreateTrainingJobRequest,
    mode: &str,
) -> AwsResult<()> {
    if request.vpc_config.is_none() {
        return Err(validation(format!(
            "Channel {name}: a FileSystemDataSource needs a VpcConfig; the file system is reached through the job's subnets."
        )));
    }
    if fs.file_system_type != "EFS" {
        return Err(validation(format!(
            "Channel {name}: FileSystemType {} is not served by Cove; use EFS.",
            fs.file_system_type
        )));
    }
    if mode != "File" {
        return Err(validation(format!(
            "Channel {name}: a FileSystemDataSource is mounted and supports only the File input mode, not {mode}."
        )));
    }
    if !fs.directory_path.starts_with('/') {
        return Err(validation(format!(
            "Channel {name}: DirectoryPath must be an absolute path, not {:?}.",
            fs.directory_path
        )));
    }
    Ok(())
}

fn check_processing(request: &CreateProcessingJobRequest) -> AwsResult<()> {
    let mut seen = BTreeSet::new();
    for input in request.processing_inputs.iter().flatten() {
        let name = input.input_name.as_str();
        if !seen.insert(name) {
            return Err(validation(format!(
                "ProcessingInput names must be unique: {name} is given more than once."
            )));
        }
        if input.s3_input.is_none() {
            return Err(validation(format!(
                "ProcessingInput {name}: only S3Input is supported by Cove."
            )));
        }
    }
    for output in request
        .processing_output_config
        .iter()
        .flat_map(|c| &c.outputs)
    {
        let name = &output.output_name;
        if output.s3_output.is_none() {
            return Err(validation(format!(
                "ProcessingOutput {name}: only S3Output is supported by Cove."
            )));
        }
    }
    Ok(())
}

/// `CreateTrainingJob`, `CreateProcessingJob`: the job keeps the request
/// for Describe to echo and its driver to read.
pub fn create(
    store: &Caller,
    ctx: &RequestContext,
    request: &JobRequest,
    bucket_policies: &crate::BucketPolicies,
) -> AwsResult<Value> {
    let kind = request.kind();
    // The checks read the published world and the buckets' policies outside
    // the store's write lock, which every API write waits on.
    let warnings = network_warnings(&store.snapshot(), ctx, request, bucket_policies);
    let job = store.write(|tx| {
        let mut job = new_job(&tx.world, ctx, request)?;
        if let (Some(t), false) = (job.transitions.first_mut(), warnings.is_empty()) {
            t.status_message = format!("{} Warning: {}", t.status_message, warnings.join(" "));
        }
        tx.put(job.clone());
        Ok(job)
    })?;
    for w in &warnings {
        tracing::warn!(job = %job.name, "{w}");
    }
    tracing::info!(job = %job.name, kind = ?kind, "job created");
    Ok(match kind {
        JobKind::Training => json!({"TrainingJobArn": job.arn}),
        JobKind::Processing => json!({"ProcessingJobArn": job.arn}),
    })
}

/// The reachability checks for a job in a VPC: one line per check the job
/// needs that fails. They go into its first status message (which
/// `DescribeTrainingJob` and the SDK's `logs=True` show) and Cove's log, so
/// the job says why it will fail before it does.
fn network_warnings(
    world: &World,
    ctx: &RequestContext,
    request: &JobRequest,
    bucket_policies: &crate::BucketPolicies,
) -> Vec<String> {
    let processing = request.kind() == JobKind::Processing;
    // cove-reach reads a request's JSON (it also checks request files).
    let json = serde_json::to_value(request).unwrap_or_default();
    let Some(network) = cove_reach::sagemaker::JobNetwork::from_request(
        processing,
        &json,
        &ctx.region,
        ctx.account_id(),
    ) else {
        return vec![];
    };
    let checks = cove_reach::sagemaker::check_job(world, &network, &|b| bucket_policies(b));
    cove_reach::sagemaker::warnings(&checks)
}

fn find<'w>(
    world: &'w World,
    store: &Caller,
    kind: JobKind,
    name: &str,
) -> AwsResult<&'w SageMakerJob> {
    world
        .sagemaker_jobs
        .get(&kind.key(store.region, store.account(), name))
        .map(std::sync::Arc::as_ref)
        .ok_or_else(not_found)
}

pub fn describe(store: &Caller, kind: JobKind, name: &str) -> AwsResult<Value> {
    let world = store.snapshot();
    let job = find(&world, store, kind, name)?;
    Ok(render(job))
}

/// Describe's answer: the request echoed back plus what happened since.
pub fn render(job: &SageMakerJob) -> Value {
    let mut out = echoed(&job.request);
    let mut set = |k: &str, v: Value| {
        if !v.is_null() {
            out.insert(k.to_string(), v);
        }
    };
    set("CreationTime", json!(job.creation_time));
    set("LastModifiedTime", json!(job.last_modified_time));
    set("FailureReason", json!(job.failure_reason));
    match job.kind {
        JobKind::Training => {
            set("TrainingJobArn", json!(job.arn));
            set("TrainingJobStatus", json!(job.status));
            set("SecondaryStatus", json!(job.secondary_status));
            set("TrainingStartTime", json!(job.start_time));
            set("TrainingEndTime", json!(job.end_time));
            set(
                "ModelArtifacts",
                json!({"S3ModelArtifacts": job.model_artifacts.clone().unwrap_or_default()}),
            );
            let transitions: Vec<Value> = job
                .transitions
                .iter()
                .map(|t| {
                    let mut v = json!({
                        "Status": t.status,
                        "StartTime": t.start_time,
                        "StatusMessage": t.status_message,
                    });
                    if let Some(end) = &t.end_time {
                        v["EndTime"] = json!(end);
                    }
                    v
                })
                .collect();
            set("SecondaryStatusTransitions", Value::Array(transitions));
            if let (Some(start), Some(end)) = (&job.start_time, &job.end_time) {
                let secs = seconds_between(start, end);
                set("TrainingTimeInSeconds", json!(secs));
                set(
                    "BillableTimeInSeconds",
                    json!(job.billable_seconds.unwrap_or(secs)),
                );
            }
            if !out.contains_key("EnableNetworkIsolation") {
                out.insert("EnableNetworkIsolation".into(), json!(false));
            }
        }
        JobKind::Processing => {
            set("ProcessingJobArn", json!(job.arn));
            set("ProcessingJobStatus", json!(job.status));
            set("ProcessingStartTime", json!(job.start_time));
            set("ProcessingEndTime", json!(job.end_time));
            set("ExitMessage", json!(job.exit_message));
        }
    }
    Value::Object(out)
}

/// Whole seconds between two RFC 3339 timestamps, at least 1 as AWS bills.
fn summary(job: &SageMakerJob) -> Value {
    match job.kind {
        JobKind::Training => json!({
            "TrainingJobName": job.name,
            "TrainingJobArn": job.arn,
            "CreationTime": job.creation_time,
            "TrainingEndTime": job.end_time,
            "LastModifiedTime": job.last_modified_time,
            "TrainingJobStatus": job.status,
            "SecondaryStatus": job.secondary_status,
        }),
        JobKind::Processing => json!({
            "ProcessingJobName": job.name,
            "ProcessingJobArn": job.arn,
            "CreationTime": job.creation_time,
            "ProcessingEndTime": job.end_time,
            "LastModifiedTime": job.last_modified_time,
            "ProcessingJobStatus": job.status,
            "FailureReason": job.failure_reason,
            "ExitMessage": job.exit_message,
        }),
    }
}

pub fn list(
    store: &Caller,
    ctx: &RequestContext,
    kind: JobKind,
    query: &ListQuery,
) -> AwsResult<Value> {
    let world = store.snapshot();
    let rows = world
        .sagemaker_jobs
        .values()
        .filter(|j| j.kind == kind && j.region == ctx.region)
        .map(|j| Row {
            name: &j.name,
            created: &j.creation_time,
            modified: &j.last_modified_time,
            status: j.status.as_str(),
            summary: summary(j),
        })
        .collect();
    let key = match kind {
        JobKind::Training => "TrainingJobSummaries",
        JobKind::Processing => "ProcessingJobSummaries",
    };
    page(query, rows, key)
}

pub fn stop(store: &Caller, kind: JobKind, name: &str) -> AwsResult<Value> {
    store.write(|tx| {
        let mut job = find(&tx.world, store, kind, name)?.clone();
        if job.status != JobStatus::InProgress {
            return Err(validation(format!(
                "The request was rejected because the {} job is in status {}.",
                match kind {
                    JobKind::Training => "training",
                    JobKind::Processing => "processing",
                },
                job.status
            )));
        }
        let now = now_rfc3339();
        job.stop_requested = true;
        job.status = JobStatus::Stopping;
        if kind == JobKind::Training {
            job.transition(SecondaryStatus::Stopping, "Stopping the training job", &now);
        }
        job.last_modified_time = now;
        tx.put(job);
        Ok(())
    })?;
    Ok(json!({}))
}
