//! Batch transform: CreateTransformJob, DescribeTransformJob,
//! ListTransformJobs, StopTransformJob, and the driver that runs a job.
//!
//! A job's instances come up exactly as an endpoint's do (see
//! [`crate::hosting`]): an ENI in the model's subnets, the model data
//! through it, the serving container, `/ping`. Then, from inside each
//! instance's network, Cove reads its share of the input objects from S3,
//! splits them (`SplitType` `Line` or `None`), batches the records
//! (`BatchStrategy`, `MaxPayloadInMB`), posts them to the container's
//! `/invocations` over `MaxConcurrentTransforms` connections, assembles the
//! answers (`AssembleWith`) and writes `<input>.out` under `S3OutputPath`.
//! Values the request leaves out come from the container's
//! `/execution-parameters`, as on AWS.

use crate::common::Caller;
use crate::common::{page, validation, ListQuery, Row};
use crate::definitions::{self, Definition};
use crate::requests::CreateTransformJobRequest;
use cove_model::endpoints::{TransformJob, TransformPhase};
use cove_model::ids::now_rfc3339;
use cove_model::jobs::JobStatus;
use cove_model::{AwsError, AwsResult};
use cove_wire::RequestContext;
use serde_json::{json, Value};

fn arn(ctx: &RequestContext, name: &str) -> String {
    TransformJob::key_of(&ctx.region, ctx.account_id(), name)
}

fn find<'w>(
    world: &'w cove_model::world::World,
    store: &Caller,
    name: &str,
) -> AwsResult<&'w TransformJob> {
    world
        .transform_jobs
        .get(&TransformJob::key_of(store.region, store.account(), name))
        .map(std::sync::Arc::as_ref)
        .ok_or_else(|| validation("Could not find requested job with name ".to_string() + name))
}

/// `CreateTransformJob`: the job keeps the request for Describe to echo and
/// its driver to read.
pub fn create(
    store: &Caller,
    ctx: &RequestContext,
    request: CreateTransformJobRequest,
) -> AwsResult<Value> {
    let name = request.transform_job_name.clone();
    let arn = arn(ctx, &name);
    let input = &request.transform_input;
    for (field, given, supported) in [
        ("SplitType", &input.split_type, &["None", "Line"][..]),
        (
            "CompressionType",
            &input.compression_type,
            &["None", "Gzip"][..],
        ),
    ] {
        if let Some(v) = given.as_deref() {
            if !supported.contains(&v) {
                return Err(validation(format!(
                    "{field} {v} is not supported by Cove (supported: {}).",
                    supported.join(", ")
                )));
            }
        }
    }
    if input.data_source.s3_data_source.s3_data_type == "AugmentedManifestFile" {
        return Err(validation(
            "S3DataType AugmentedManifestFile is not supported by Cove.",
        ));
    }
    store.write(|tx| {
        if tx.world.transform_jobs.contains_key(&arn) {
            return Err(AwsError::client(
                "ResourceInUse",
                format!("Job name must be unique within an AWS account and region, and a job with this name already exists ({arn})"),
            ));
        }
        let model = definitions::find(&tx.world, ctx, Definition::Model, &request.model_name)?
            .request
            .model()
            .cloned()
            .unwrap_or_default();
        cove_model::instance::resources(&request.transform_resources.instance_type)
            .ok_or_else(|| validation("Instance type is not supported by Cove."))?;
        let now = now_rfc3339();
        tx.put(TransformJob {
            name: name.clone(),
            arn: arn.clone(),
            region: ctx.region.clone(),
            account_id: ctx.account_id().to_string(),
            request: Box::new(request.clone()),
            model: Box::new(model),
            status: JobStatus::InProgress,
            failure_reason: None,
            creation_time: now.clone(),
            start_time: None,
            end_time: None,
            last_modified_time: now,
            instances: vec![],
            stop_requested: false,
            phase: TransformPhase::Starting,
        });
        Ok(())
    })?;
    Ok(json!({ "TransformJobArn": arn }))
}

pub fn describe(store: &Caller, name: &str) -> AwsResult<Value> {
    let world = store.snapshot();
    let j = find(&world, store, name)?;
    let mut out = crate::common::echoed(&j.request);
    out.insert("TransformJobArn".into(), json!(j.arn));
    out.insert("TransformJobStatus".into(), json!(j.status));
    out.insert("CreationTime".into(), json!(j.creation_time));
    for (k, v) in [
        ("FailureReason", &j.failure_reason),
        ("TransformStartTime", &j.start_time),
        ("TransformEndTime", &j.end_time),
    ] {
        if let Some(v) = v {
            out.insert(k.into(), json!(v));
        }
    }
    Ok(Value::Object(out))
}

pub fn list(store: &Caller, ctx: &RequestContext, query: &ListQuery) -> AwsResult<Value> {
    let world = store.snapshot();
    let rows = world
        .transform_jobs
        .values()
        .filter(|j| j.region == ctx.region)
        .map(|j| Row {
            name: &j.name,
            created: &j.creation_time,
            modified: &j.last_modified_time,
            status: j.status.as_str(),
            summary: json!({
                "TransformJobName": j.name,
                "TransformJobArn": j.arn,
                "CreationTime": j.creation_time,
                "LastModifiedTime": j.last_modified_time,
                "TransformEndTime": j.end_time,
                "TransformJobStatus": j.status,
                "FailureReason": j.failure_reason,
            }),
        })
        .collect();
    page(query, rows, "TransformJobSummaries")
}

pub fn stop(store: &Caller, name: &str) -> AwsResult<Value> {
    crate::stopping::stop(store, "transform job", |w| find(w, store, name))
}

crate::stopping::stoppable!(TransformJob, JobStatus::Stopping, |j| {
    j.status == JobStatus::InProgress
});
