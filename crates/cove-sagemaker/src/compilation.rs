//! SageMaker Neo compilation jobs: CreateCompilationJob,
//! DescribeCompilationJob, ListCompilationJobs, StopCompilationJob, and the
//! driver that runs one.
//!
//! A job with a `VpcConfig` gets one requester-managed ENI in its first
//! subnet with its security groups; the model archive comes from S3 and the
//! compiled archive goes back through that ENI, with the execution role's
//! session, so the subnet's routes, ACL, groups, endpoint policy and bucket
//! policy decide as they do for training. The compiler itself
//! ([`cove_neo`]) runs as a child process (`cove compile-model`) in an empty
//! network namespace: a hostile model file cannot reach anything, and Stop
//! or `MaxRuntimeInSeconds` simply kill it. Its output goes to CloudWatch
//! Logs (`/aws/sagemaker/CompilationJobs`, stream `<job name>`).

use crate::common::Caller;
use crate::common::{check_vpc_config, page, validation, ListQuery, Row};
use crate::requests::CreateCompilationJobRequest;
use cove_model::ids::now_rfc3339;
use cove_model::jobs::{CompilationJob, CompilationPhase, CompilationStatus};
use cove_model::s3_uri::parse_s3_uri;
use cove_model::{AwsError, AwsResult};
use cove_neo::Target;
use cove_wire::RequestContext;
use serde_json::{json, Value};

/// `StoppingCondition.MaxRuntimeInSeconds` when the request gives none (AWS: 900 s).
const DEFAULT_MAX_RUNTIME: u64 = 900;

fn find<'w>(
    world: &'w cove_model::world::World,
    store: &Caller,
    name: &str,
) -> AwsResult<&'w CompilationJob> {
    world
        .compilation_jobs
        .get(&CompilationJob::key_of(store.region, store.account(), name))
        .map(std::sync::Arc::as_ref)
        .ok_or_else(|| {
            AwsError::client(
                "ResourceNotFound",
                format!("Compilation job {name} does not exist."),
            )
        })
}

/// `CreateCompilationJob`: the job keeps the request for Describe to echo
/// and its driver to read.
pub fn create(
    store: &Caller,
    ctx: &RequestContext,
    request: CreateCompilationJobRequest,
) -> AwsResult<Value> {
    let name = request.compilation_job_name.clone();
    let arn = CompilationJob::key_of(&ctx.region, ctx.account_id(), &name);
    if request.model_package_version_arn.is_some() {
        return Err(validation(
            "ModelPackageVersionArn is not supported by Cove; give InputConfig.",
        ));
    }
    let Some(input) = &request.input_config else {
        return Err(validation("InputConfig is required."));
    };
    let output = &request.output_config;
    // One target, as `cove_neo::Target::from_output_config` reads it.
    if output.target_device.is_some() == output.target_platform.is_some() {
        return Err(validation(
            "Exactly one of TargetDevice and TargetPlatform must be specified in OutputConfig.",
        ));
    }
    let uri = input.s3_uri.as_str();
    if parse_s3_uri(uri).is_none() {
        return Err(validation(format!(
            "InputConfig.S3Uri {uri} is not an S3 URI."
        )));
    }
    let out_uri = output.s3_output_location.as_str();
    if parse_s3_uri(out_uri).is_none() {
        return Err(validation(format!(
            "OutputConfig.S3OutputLocation {out_uri} is not an S3 URI."
        )));
    }
    store.write(|tx| {
        if tx.world.compilation_jobs.contains_key(&arn) {
            return Err(AwsError::client(
                "ResourceInUse",
                format!("Compilation job names must be unique within an AWS account and region, and a compilation job with this name already exists ({arn})"),
            ));
        }
        if let Some(config) = &request.vpc_config {
            check_vpc_config(&tx.world, &ctx.region, &config.subnets, &config.security_group_ids)?;
        }
        let now = now_rfc3339();
        tx.put(CompilationJob {
            name: name.clone(),
            arn: arn.clone(),
            region: ctx.region.clone(),
            account_id: ctx.account_id().to_string(),
            request: Box::new(request.clone()),
            status: CompilationStatus::Starting,
            failure_reason: None,
            creation_time: now.clone(),
            start_time: None,
            end_time: None,
            last_modified_time: now,
            phase: CompilationPhase::Starting,
            eni_id: None,
            session_access_key: None,
            stop_requested: false,
            model_artifacts: None,
            artifact_digest: None,
            derived_data_input_config: None,
        });
        Ok(())
    })?;
    tracing::info!(job = %name, "compilation job created");
    Ok(json!({ "CompilationJobArn": arn }))
}

pub fn describe(store: &Caller, name: &str) -> AwsResult<Value> {
    let world = store.snapshot();
    let j = find(&world, store, name)?;
    let mut out = crate::common::echoed(&j.request);
    out.insert("CompilationJobArn".into(), json!(j.arn));
    out.insert("CompilationJobStatus".into(), json!(j.status));
    out.insert("CreationTime".into(), json!(j.creation_time));
    out.insert("LastModifiedTime".into(), json!(j.last_modified_time));
    out.insert(
        "StoppingCondition".into(),
        json!({"MaxRuntimeInSeconds": max_runtime(&j.request)}),
    );
    // Both are required members of the answer; AWS gives them empty until known.
    out.insert(
        "FailureReason".into(),
        json!(j.failure_reason.clone().unwrap_or_default()),
    );
    out.insert(
        "ModelArtifacts".into(),
        json!({"S3ModelArtifacts": j.model_artifacts.clone().unwrap_or_default()}),
    );
    for (k, v) in [
        ("CompilationStartTime", &j.start_time),
        ("CompilationEndTime", &j.end_time),
    ] {
        if let Some(v) = v {
            out.insert(k.into(), json!(v));
        }
    }
    if let Some(d) = &j.artifact_digest {
        out.insert("ModelDigests".into(), json!({"ArtifactDigest": d}));
    }
    if let Some(d) = &j.derived_data_input_config {
        out.insert(
            "DerivedInformation".into(),
            json!({"DerivedDataInputConfig": d}),
        );
    }
    Ok(Value::Object(out))
}

pub fn list(store: &Caller, ctx: &RequestContext, query: &ListQuery) -> AwsResult<Value> {
    let world = store.snapshot();
    let rows = world
        .compilation_jobs
        .values()
        .filter(|j| j.region == ctx.region)
        .map(|j| {
            let output = &j.request.output_config;
            let platform = output.target_platform.as_ref();
            Row {
                name: &j.name,
                created: &j.creation_time,
                modified: &j.last_modified_time,
                status: j.status.as_str(),
                summary: json!({
                    "CompilationJobName": j.name,
                    "CompilationJobArn": j.arn,
                    "CreationTime": j.creation_time,
                    "CompilationStartTime": j.start_time,
                    "CompilationEndTime": j.end_time,
                    "CompilationTargetDevice": output.target_device,
                    "CompilationTargetPlatformOs": platform.map(|p| &p.os),
                    "CompilationTargetPlatformArch": platform.map(|p| &p.arch),
                    "CompilationTargetPlatformAccelerator": platform.and_then(|p| p.accelerator.as_ref()),
                    "LastModifiedTime": j.last_modified_time,
                    "CompilationJobStatus": j.status,
                }),
            }
        })
        .collect();
    page(query, rows, "CompilationJobSummaries")
}

pub fn stop(store: &Caller, name: &str) -> AwsResult<Value> {
    crate::stopping::stop(store, "compilation job", |w| find(w, store, name))
}

crate::stopping::stoppable!(CompilationJob, CompilationStatus::Stopping, |j| !j
    .is_finished()
    && j.status != CompilationStatus::Stopping);

pub fn max_runtime(request: &CreateCompilationJobRequest) -> u64 {
    // A negative value reads as none, as JSON's `as_u64` read it.
    request
        .stopping_condition
        .max_runtime_in_seconds
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(DEFAULT_MAX_RUNTIME)
}

/// The compiled archive's S3 URI, named as Neo names it: the input object's
/// name without `.tar.gz`, a dash and the target (`model-ml_c5.tar.gz`).
pub fn artifact_uri(request: &CreateCompilationJobRequest) -> String {
    let input = request
        .input_config
        .as_ref()
        .map(|i| i.s3_uri.as_str())
        .unwrap_or_default();
    let file = input.rsplit('/').next().unwrap_or_default();
    let stem = file
        .strip_suffix(".tar.gz")
        .or_else(|| file.strip_suffix(".tgz"))
        .unwrap_or(file);
    let stem = if stem.is_empty() { "model" } else { stem };
    let target = Target::from_output_config(&request.output_config)
        .map(|t| t.suffix())
        .unwrap_or_default();
    let out = request
        .output_config
        .s3_output_location
        .trim_end_matches('/');
    format!("{out}/{stem}-{target}.tar.gz")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_named_after_the_input_and_the_target() {
        let typed = |mut v: Value| {
            // The members the test does not vary, required by the type.
            v["CompilationJobName"] = json!("c");
            v["RoleArn"] = json!("arn:aws:iam::123456789012:role/r");
            v["StoppingCondition"] = json!({});
            v["InputConfig"]["Framework"] = json!("ONNX");
            serde_json::from_value::<CreateCompilationJobRequest>(v).unwrap()
        };
        let request = typed(json!({
            "InputConfig": {"S3Uri": "s3://b/models/model.tar.gz"},
            "OutputConfig": {"S3OutputLocation": "s3://b/compiled/", "TargetDevice": "ml_c5"},
        }));
        assert_eq!(artifact_uri(&request), "s3://b/compiled/model-ml_c5.tar.gz");
        let request = typed(json!({
            "InputConfig": {"S3Uri": "s3://b/resnet.tgz"},
            "OutputConfig": {"S3OutputLocation": "s3://b/out",
                             "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}},
        }));
        assert_eq!(
            artifact_uri(&request),
            "s3://b/out/resnet-LINUX_X86_64.tar.gz"
        );
    }
}
