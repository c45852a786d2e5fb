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

use crate::common::Caller;
use crate::common::{check_vpc_config, count, page, validation, Row};
use crate::definitions::{self, Definition};
use crate::requests::{
    CreateInferenceRecommendationsJobRequest, ListInferenceRecommendationsJobStepsRequest,
    ListInferenceRecommendationsJobsRequest, RecommendationJobInputConfig,
};
use cove_model::ids::now_rfc3339;
use cove_model::jobs::{
    BenchmarkStep, RecommendationJob, RecommendationPhase, RecommendationStatus,
};
use cove_model::s3_uri::parse_s3_uri;
use cove_model::{AwsError, AwsResult};
use cove_wire::RequestContext;
use serde_json::{json, Map, Value};

/// The instance types a `Default` job tries when the request names none.
pub const DEFAULT_CANDIDATES: [&str; 3] = ["ml.c5.large", "ml.m5.large", "ml.c5.xlarge"];

fn find<'w>(
    world: &'w cove_model::world::World,
    store: &Caller,
    name: &str,
) -> AwsResult<&'w RecommendationJob> {
    world
        .recommendation_jobs
        .get(&RecommendationJob::key_of(
            store.region,
            store.account(),
            name,
        ))
        .map(std::sync::Arc::as_ref)
        .ok_or_else(|| {
            AwsError::client(
                "ResourceNotFound",
                format!("Inference recommendations job {name} does not exist."),
            )
        })
}

/// The instance types a job of type `job_type` benchmarks, in order.
fn candidates(job_type: &str, config: &RecommendationJobInputConfig) -> AwsResult<Vec<String>> {
    let advanced = job_type == "Advanced";
    let types: Vec<String> = if advanced {
        let endpoints = config
            .endpoint_configurations
            .as_ref()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| validation("EndpointConfigurations is required for an Advanced job."))?;
        let mut types = vec![];
        for e in endpoints {
            if e.serverless_config.is_some() {
                return Err(validation(
                    "Serverless endpoint configurations are not supported by Cove.",
                ));
            }
            if e.environment_parameter_ranges.is_some() {
                return Err(validation(
                    "EnvironmentParameterRanges are not supported by Cove.",
                ));
            }
            let t = e
                .instance_type
                .as_ref()
                .ok_or_else(|| validation("Every endpoint configuration needs an InstanceType."))?;
            types.push(t.clone());
        }
        types
    } else {
        match config
            .container_config
            .as_ref()
            .and_then(|c| c.supported_instance_types.as_ref())
        {
            Some(a) if !a.is_empty() => a.clone(),
            _ => DEFAULT_CANDIDATES.iter().map(|t| t.to_string()).collect(),
        }
    };
    let mut types = crate::common::unique(types);
    let max_tests = config
        .resource_limit
        .as_ref()
        .and_then(|l| l.max_number_of_tests);
    if let Some(max) = count(max_tests) {
        types.truncate(cove_model::convert::u64_to_usize(max));
    }
    for t in &types {
        cove_model::instance::resources(t)
            .ok_or_else(|| validation(format!("Instance type {t} is not supported by Cove.")))?;
    }
    Ok(types)
}

/// `CreateInferenceRecommendationsJob`: the job keeps the request for
/// Describe to echo and its driver to read.
pub fn create(
    store: &Caller,
    ctx: &RequestContext,
    request: CreateInferenceRecommendationsJobRequest,
) -> AwsResult<Value> {
    let name = request.job_name.clone();
    let arn = RecommendationJob::key_of(&ctx.region, ctx.account_id(), &name);
    let config = &request.input_config;
    for (field, given, what) in [
        (
            "ModelPackageVersionArn",
            config.model_package_version_arn.is_some(),
            "Model packages are",
        ),
        (
            "Endpoints",
            config.endpoints.is_some(),
            "Benchmarking existing endpoints is",
        ),
    ] {
        if given {
            return Err(validation(format!(
                "{what} not supported by Cove ({field})."
            )));
        }
    }
    let model_name = config
        .model_name
        .as_deref()
        .ok_or_else(|| validation("InputConfig.ModelName is required."))?;
    let payload = config
        .container_config
        .as_ref()
        .and_then(|c| c.payload_config.as_ref());
    let url = payload
        .and_then(|p| p.sample_payload_url.as_deref())
        .ok_or_else(|| {
            validation("InputConfig.ContainerConfig.PayloadConfig.SamplePayloadUrl is required.")
        })?;
    if parse_s3_uri(url).is_none() {
        return Err(validation(format!(
            "SamplePayloadUrl {url} is not an S3 URI."
        )));
    }
    if payload
        .and_then(|p| p.supported_content_types.as_ref())
        .is_none_or(|a| a.is_empty())
    {
        return Err(validation(
            "InputConfig.ContainerConfig.PayloadConfig.SupportedContentTypes is required.",
        ));
    }
    let types = candidates(&request.job_type, config)?;
    let short: String = name.chars().take(56).collect();
    store.write(|tx| {
        if tx.world.recommendation_jobs.contains_key(&arn) {
            return Err(AwsError::client(
                "ResourceInUse",
                format!("Job name must be unique within an AWS account and region, and a job with this name already exists ({arn})"),
            ));
        }
        let model = definitions::find(&tx.world, ctx, Definition::Model, model_name)?
            .request
            .model()
            .cloned()
            .unwrap_or_default();
        if let Some(vpc) = &config.vpc_config {
            check_vpc_config(&tx.world, &ctx.region, &vpc.subnets, &vpc.security_group_ids)?;
        }
        let now = now_rfc3339();
        let steps = types
            .iter()
            .enumerate()
            .map(|(n, t)| BenchmarkStep {
                instance_type: t.clone(),
                endpoint_name: format!("{short}-ir{}", n + 1),
                status: RecommendationStatus::Pending,
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
            request: Box::new(request.clone()),
            model: Box::new(model),
            status: RecommendationStatus::Pending,
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

pub fn describe(store: &Caller, name: &str) -> AwsResult<Value> {
    let world = store.snapshot();
    let j = find(&world, store, name)?;
    let r = &j.request;
    let mut out = Map::new();
    // The request's members Describe echoes (absent ones stay absent).
    for (field, v) in [
        ("JobName", Some(json!(r.job_name))),
        (
            "JobDescription",
            r.job_description.as_ref().map(|v| json!(v)),
        ),
        ("JobType", Some(json!(r.job_type))),
        ("RoleArn", Some(json!(r.role_arn))),
        ("InputConfig", Some(json!(r.input_config))),
        (
            "StoppingConditions",
            r.stopping_conditions.as_ref().map(|v| json!(v)),
        ),
    ] {
        if let Some(v) = v {
            out.insert(field.into(), v);
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
        .filter(|s| s.status == RecommendationStatus::Completed && s.metrics.is_some())
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

pub fn list(
    store: &Caller,
    ctx: &RequestContext,
    request: &ListInferenceRecommendationsJobsRequest,
) -> AwsResult<Value> {
    let world = store.snapshot();
    let model = request.model_name_equals.as_deref();
    let rows = world
        .recommendation_jobs
        .values()
        .filter(|j| j.region == ctx.region)
        .filter(|j| model.is_none_or(|m| j.request.input_config.model_name.as_deref() == Some(m)))
        .map(|j| Row {
            name: &j.name,
            created: &j.creation_time,
            modified: &j.last_modified_time,
            status: j.status.as_str(),
            summary: json!({
                "JobName": j.name,
                "JobDescription": j.request.job_description.as_deref().unwrap_or_default(),
                "JobType": j.request.job_type,
                "JobArn": j.arn,
                "Status": j.status,
                "CreationTime": j.creation_time,
                "CompletionTime": j.completion_time,
                "RoleArn": j.request.role_arn,
                "LastModifiedTime": j.last_modified_time,
                "FailureReason": j.failure_reason,
                "ModelName": j.request.input_config.model_name,
                "SamplePayloadUrl": j.request.input_config.container_config.as_ref()
                    .and_then(|c| c.payload_config.as_ref())
                    .and_then(|p| p.sample_payload_url.as_ref()),
            }),
        })
        .collect();
    page(&request.into(), rows, "InferenceRecommendationsJobs")
}

pub fn stop(store: &Caller, name: &str) -> AwsResult<Value> {
    crate::stopping::stop(store, "job", |w| find(w, store, name))
}

crate::stopping::stoppable!(RecommendationJob, RecommendationStatus::Stopping, |j| !j
    .is_finished()
    && j.status != RecommendationStatus::Stopping);

pub fn steps(
    store: &Caller,
    request: &ListInferenceRecommendationsJobStepsRequest,
) -> AwsResult<Value> {
    let world = store.snapshot();
    let j = find(&world, store, &request.job_name)?;
    let status = request.status.as_deref();
    let step_type = request.step_type.as_deref();
    let all: Vec<Value> = j
        .steps
        .iter()
        .filter(|s| status.is_none_or(|st| s.status.as_str() == st))
        .filter(|_| step_type.is_none_or(|t| t == "BENCHMARK"))
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
    Ok(crate::common::paged(
        request.next_token.as_deref(),
        request.max_results,
        all,
        "Steps",
        50,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(job_type: &str, config: Value) -> AwsResult<Vec<String>> {
        let config: RecommendationJobInputConfig = serde_json::from_value(config).unwrap();
        candidates(job_type, &config)
    }

    #[test]
    fn candidates_come_from_the_job_type() {
        let advanced = json!({"EndpointConfigurations": [
            {"InstanceType": "ml.c5.large"}, {"InstanceType": "ml.m5.xlarge"}]});
        assert_eq!(
            of("Advanced", advanced).unwrap(),
            ["ml.c5.large", "ml.m5.xlarge"]
        );
        assert!(of("Advanced", json!({}))
            .unwrap_err()
            .message
            .contains("EndpointConfigurations is required"));
        let default = json!({"ResourceLimit": {"MaxNumberOfTests": 2}});
        assert_eq!(
            of("Default", default).unwrap(),
            ["ml.c5.large", "ml.m5.large"]
        );
        let repeated = json!({"ContainerConfig": {
            "SupportedInstanceTypes": ["ml.c5.large", "ml.m5.large", "ml.c5.large"]}});
        assert_eq!(
            of("Default", repeated).unwrap(),
            ["ml.c5.large", "ml.m5.large"]
        );
        let listed = json!({"ContainerConfig": {"SupportedInstanceTypes": ["ml.q9.large"]}});
        assert!(of("Default", listed)
            .unwrap_err()
            .message
            .contains("ml.q9.large is not supported"));
    }
}
