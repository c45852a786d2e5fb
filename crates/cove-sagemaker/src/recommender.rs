//! SageMaker Inference Recommender: CreateInferenceRecommendationsJob
//! (`Default` and `Advanced`), Describe, List, Stop,
//! ListInferenceRecommendationsJobSteps, and the driver that benchmarks.
//!
//! For each candidate instance type the driver deploys the model behind a
//! temporary endpoint (a copy of the model with the job's
//! `InputConfig.VpcConfig`, an endpoint configuration and an endpoint, all
//! through the same code as the API, so the hosting supervisor really
//! brings the instance up on an ENI in those subnets). It then drives the
//! container's `/invocations` from inside the instance's network, as
//! SageMaker's front end does, at the concurrency levels of the job's
//! `TrafficPattern`. It measures every call and deletes the endpoint. The
//! figures: the highest throughput within the latency thresholds, its
//! median latency, the setup time, and cost from the on-demand price
//! ([`crate::load`]).

use crate::common::{check_vpc_config, page, validation, Row};
use crate::definitions::{self, Definition};
use cove_model::ids::now_rfc3339;
use cove_model::jobs::{BenchmarkStep, RecommendationJob, RecommendationPhase};
use cove_model::s3_uri::parse_s3_uri;
use cove_model::{AwsError, AwsResult};
use cove_store::Store;
use cove_wire::RequestContext;
use serde_json::{json, Map, Value};

/// The instance types a `Default` job tries when the request names none.
pub const DEFAULT_CANDIDATES: [&str; 3] = ["ml.c5.large", "ml.m5.large", "ml.c5.xlarge"];

fn find<'w>(
    world: &'w cove_model::world::World,
    input: &Value,
) -> AwsResult<&'w RecommendationJob> {
    let name = input["JobName"].as_str().unwrap_or_default();
    world
        .recommendation_jobs
        .get(&RecommendationJob::key_of(name))
        .ok_or_else(|| {
            AwsError::client(
                "ResourceNotFound",
                format!("Inference recommendations job {name} does not exist."),
            )
        })
}

/// The instance types a job benchmarks, in order.
fn candidates(input: &Value) -> AwsResult<Vec<String>> {
    let config = &input["InputConfig"];
    let advanced = input["JobType"].as_str() == Some("Advanced");
    let types: Vec<String> = if advanced {
        let endpoints = config["EndpointConfigurations"]
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| validation("EndpointConfigurations is required for an Advanced job."))?;
        let mut types = vec![];
        for e in endpoints {
            if e.get("ServerlessConfig").is_some() {
                return Err(validation(
                    "Serverless endpoint configurations are not supported by Cove.",
                ));
            }
            if e.get("EnvironmentParameterRanges").is_some() {
                return Err(validation(
                    "EnvironmentParameterRanges are not supported by Cove.",
                ));
            }
            let t = e["InstanceType"]
                .as_str()
                .ok_or_else(|| validation("Every endpoint configuration needs an InstanceType."))?;
            types.push(t.to_string());
        }
        types
    } else {
        match config["ContainerConfig"]["SupportedInstanceTypes"].as_array() {
            Some(a) if !a.is_empty() => a
                .iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect(),
            _ => DEFAULT_CANDIDATES.iter().map(|t| t.to_string()).collect(),
        }
    };
    let mut types = crate::common::unique(types);
    if let Some(max) = config["ResourceLimit"]["MaxNumberOfTests"].as_u64() {
        types.truncate(max as usize);
    }
    for t in &types {
        cove_model::instance::resources(t)
            .ok_or_else(|| validation(format!("Instance type {t} is not supported by Cove.")))?;
    }
    Ok(types)
}

pub fn create(store: &Store, ctx: &RequestContext, input: Value) -> AwsResult<Value> {
    let name = input["JobName"].as_str().unwrap_or_default().to_string();
    let arn = format!(
        "arn:aws:sagemaker:{}:{}:inference-recommendations-job/{name}",
        ctx.region,
        ctx.account_id()
    );
    let config = &input["InputConfig"];
    for (field, what) in [
        ("ModelPackageVersionArn", "Model packages are"),
        ("Endpoints", "Benchmarking existing endpoints is"),
    ] {
        if config.get(field).is_some() {
            return Err(validation(format!(
                "{what} not supported by Cove ({field})."
            )));
        }
    }
    let model_name = config["ModelName"]
        .as_str()
        .ok_or_else(|| validation("InputConfig.ModelName is required."))?;
    let payload = &config["ContainerConfig"]["PayloadConfig"];
    let url = payload["SamplePayloadUrl"].as_str().ok_or_else(|| {
        validation("InputConfig.ContainerConfig.PayloadConfig.SamplePayloadUrl is required.")
    })?;
    if parse_s3_uri(url).is_none() {
        return Err(validation(format!(
            "SamplePayloadUrl {url} is not an S3 URI."
        )));
    }
    if payload["SupportedContentTypes"]
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        return Err(validation(
            "InputConfig.ContainerConfig.PayloadConfig.SupportedContentTypes is required.",
        ));
    }
    let types = candidates(&input)?;
    let short: String = name.chars().take(56).collect();
    store.write(|tx| {
        if tx.world.recommendation_jobs.contains_key(&RecommendationJob::key_of(&name)) {
            return Err(AwsError::client(
                "ResourceInUse",
                format!("Job name must be unique within an AWS account and region, and a job with this name already exists ({arn})"),
            ));
        }
        let model = definitions::find(&tx.world, ctx, Definition::Model, model_name)?
            .request
            .clone();
        if let Some(vpc) = config.get("VpcConfig") {
            check_vpc_config(&tx.world, &ctx.region, vpc)?;
        }
        let now = now_rfc3339();
        let steps = types
            .iter()
            .enumerate()
            .map(|(n, t)| BenchmarkStep {
                instance_type: t.clone(),
                endpoint_name: format!("{short}-ir{}", n + 1),
                status: "PENDING".into(),
                failure_reason: None,
                metrics: None,
                invocation_start_time: None,
                invocation_end_time: None,
            })
            .collect();
        tx.put(RecommendationJob {
            name: name.clone(),
            arn: arn.clone(),
            region: ctx.region.clone(),
            account_id: ctx.account_id().to_string(),
            request: input.clone(),
            model,
            status: "PENDING".into(),
            failure_reason: None,
            creation_time: now.clone(),
            completion_time: None,
            last_modified_time: now,
            phase: RecommendationPhase::Pending,
            steps,
            stop_requested: false,
            session_access_key: None,
        });
        Ok(())
    })?;
    tracing::info!(job = %name, candidates = ?types, "inference recommendations job created");
    Ok(json!({ "JobArn": arn }))
}

fn endpoint_configuration(step: &BenchmarkStep) -> Value {
    json!({
        "EndpointName": step.endpoint_name,
        "VariantName": "AllTraffic",
        "InstanceType": step.instance_type,
        "InitialInstanceCount": 1,
    })
}

pub fn describe(store: &Store, input: &Value) -> AwsResult<Value> {
    let world = store.snapshot();
    let j = find(&world, input)?;
    let mut out = Map::new();
    for field in [
        "JobName",
        "JobDescription",
        "JobType",
        "RoleArn",
        "InputConfig",
        "StoppingConditions",
    ] {
        if let Some(v) = j.request.get(field) {
            out.insert(field.into(), v.clone());
        }
    }
    out.insert("JobArn".into(), json!(j.arn));
    out.insert("Status".into(), json!(j.status));
    out.insert("CreationTime".into(), json!(j.creation_time));
    out.insert("LastModifiedTime".into(), json!(j.last_modified_time));
    if let Some(t) = &j.completion_time {
        out.insert("CompletionTime".into(), json!(t));
    }
    if let Some(r) = &j.failure_reason {
        out.insert("FailureReason".into(), json!(r));
    }
    // Cheapest per inference first, as the console ranks them.
    let mut done: Vec<&BenchmarkStep> = j
        .steps
        .iter()
        .filter(|s| s.status == "COMPLETED" && s.metrics.is_some())
        .collect();
    done.sort_by(|a, b| {
        let cost = |s: &BenchmarkStep| {
            s.metrics
                .as_ref()
                .and_then(|m| m["CostPerInference"].as_f64())
                .unwrap_or(f64::MAX)
        };
        cost(a).total_cmp(&cost(b))
    });
    if !done.is_empty() {
        let recommendations: Vec<Value> = done
            .iter()
            .map(|s| {
                json!({
                    "RecommendationId": format!("{}/{}", j.name, s.endpoint_name),
                    "Metrics": s.metrics,
                    "EndpointConfiguration": endpoint_configuration(s),
                    "ModelConfiguration": {},
                    "InvocationStartTime": s.invocation_start_time,
                    "InvocationEndTime": s.invocation_end_time,
                })
            })
            .collect();
        out.insert("InferenceRecommendations".into(), json!(recommendations));
    }
    Ok(Value::Object(out))
}

pub fn list(store: &Store, ctx: &RequestContext, input: &Value) -> AwsResult<Value> {
    let world = store.snapshot();
    let model = input["ModelNameEquals"].as_str();
    let rows = world
        .recommendation_jobs
        .values()
        .filter(|j| j.region == ctx.region)
        .filter(|j| model.is_none_or(|m| j.request["InputConfig"]["ModelName"].as_str() == Some(m)))
        .map(|j| Row {
            name: &j.name,
            created: &j.creation_time,
            modified: &j.last_modified_time,
            status: &j.status,
            summary: json!({
                "JobName": j.name,
                "JobDescription": j.request["JobDescription"].as_str().unwrap_or_default(),
                "JobType": j.request["JobType"],
                "JobArn": j.arn,
                "Status": j.status,
                "CreationTime": j.creation_time,
                "CompletionTime": j.completion_time,
                "RoleArn": j.request["RoleArn"],
                "LastModifiedTime": j.last_modified_time,
                "FailureReason": j.failure_reason,
                "ModelName": j.request["InputConfig"]["ModelName"],
                "SamplePayloadUrl": j.request["InputConfig"]["ContainerConfig"]["PayloadConfig"]["SamplePayloadUrl"],
            }),
        })
        .collect();
    page(input, rows, "InferenceRecommendationsJobs")
}

pub fn stop(store: &Store, input: &Value) -> AwsResult<Value> {
    crate::stopping::stop(store, "job", |w| find(w, input))
}

crate::stopping::stoppable!(RecommendationJob, "STOPPING", |j| !j.is_finished()
    && j.status != "STOPPING");

pub fn steps(store: &Store, input: &Value) -> AwsResult<Value> {
    let world = store.snapshot();
    let j = find(&world, input)?;
    let status = input["Status"].as_str();
    let all: Vec<Value> = j
        .steps
        .iter()
        .filter(|s| status.is_none_or(|st| s.status == st))
        .filter(|_| input["StepType"].as_str().is_none_or(|t| t == "BENCHMARK"))
        .map(|s| {
            let mut benchmark = json!({
                "EndpointConfiguration": endpoint_configuration(s),
                "ModelConfiguration": {},
            });
            if let Some(m) = &s.metrics {
                benchmark["Metrics"] = m.clone();
                benchmark["EndpointMetrics"] = json!({
                    "MaxInvocations": m["MaxInvocations"],
                    "ModelLatency": m["ModelLatency"],
                });
            }
            for (k, v) in [
                ("FailureReason", &s.failure_reason),
                ("InvocationStartTime", &s.invocation_start_time),
                ("InvocationEndTime", &s.invocation_end_time),
            ] {
                if let Some(v) = v {
                    benchmark[k] = json!(v);
                }
            }
            json!({"StepType": "BENCHMARK", "JobName": j.name, "Status": s.status,
                   "InferenceBenchmark": benchmark})
        })
        .collect();
    Ok(crate::common::paged(input, all, "Steps", 50))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_come_from_the_job_type() {
        let advanced = json!({"JobType": "Advanced", "InputConfig": {"EndpointConfigurations": [
            {"InstanceType": "ml.c5.large"}, {"InstanceType": "ml.m5.xlarge"}]}});
        assert_eq!(
            candidates(&advanced).unwrap(),
            ["ml.c5.large", "ml.m5.xlarge"]
        );
        let bare = json!({"JobType": "Advanced", "InputConfig": {}});
        assert!(candidates(&bare)
            .unwrap_err()
            .message
            .contains("EndpointConfigurations is required"));
        let default = json!({"JobType": "Default", "InputConfig": {"ResourceLimit": {"MaxNumberOfTests": 2}}});
        assert_eq!(
            candidates(&default).unwrap(),
            ["ml.c5.large", "ml.m5.large"]
        );
        let repeated = json!({"JobType": "Default", "InputConfig": {"ContainerConfig": {
            "SupportedInstanceTypes": ["ml.c5.large", "ml.m5.large", "ml.c5.large"]}}});
        assert_eq!(
            candidates(&repeated).unwrap(),
            ["ml.c5.large", "ml.m5.large"]
        );
        let listed = json!({"JobType": "Default", "InputConfig": {"ContainerConfig": {
            "SupportedInstanceTypes": ["ml.q9.large"]}}});
        assert!(candidates(&listed)
            .unwrap_err()
            .message
            .contains("ml.q9.large is not supported"));
    }
}
