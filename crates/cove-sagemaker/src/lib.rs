//! SageMaker for Cove: the job API (awsJson 1.1, `SageMaker.*`, signing
//! name `sagemaker`) and the supervisor that runs each job for real: ENIs in
//! the job's subnets, data moved through them, containers under the
//! SageMaker contract, logs to CloudWatch Logs, outputs back to S3.
//!
//! - [`api`]: Create/Describe/List/Stop for training and processing jobs.
//! - [`compilation`]: Neo compilation jobs (API and driver).
//! - [`definitions`]: models and endpoint configurations.
//! - [`endpoints`]: the endpoint API (create, update, delete, describe).
//! - [`hosting`]: the supervisor that runs each endpoint's instances.
//! - [`contract`]: the `/opt/ml` files, `SM_*` environment and command (pure).
//! - [`load`]: the arithmetic of a recommender benchmark (pure).
//! - [`recommender`]: Inference Recommender jobs (API and driver).
//! - [`studio`]: Studio domains, user profiles, apps and presigned URLs.
//! - [`studio_apps`]: the supervisor that runs Studio apps on ENIs.
//! - [`instance`]: instance types to CPU and memory limits (pure).
//! - [`transfer`]: the S3 calls that move a job's data.
//! - [`transform`]: batch transform jobs (API and driver).
//! - [`supervisor`]: the persisted state machine that drives each job.

pub mod api;
pub mod compilation;
pub mod contract;
pub mod definitions;
pub mod endpoints;
pub mod hosting;
pub mod instance;
pub mod load;
pub mod recommender;
pub mod studio;
pub mod studio_apps;
pub mod supervisor;
pub mod transfer;
pub mod transform;
mod workers;

use cove_model::jobs::JobKind;
use cove_model::{AwsError, AwsResult};
use cove_store::Store;
use cove_wire::{model::ServiceModel, Protocol, RequestContext, Service};
use serde_json::Value;
use std::sync::Arc;

/// Finds a bucket's policy, for the network checks run when a job is created.
pub type BucketPolicies = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

pub struct SageMakerService {
    store: Arc<Store>,
    bucket_policies: BucketPolicies,
    studio: studio::StudioConfig,
}

impl SageMakerService {
    pub fn new(
        store: Arc<Store>,
        bucket_policies: BucketPolicies,
        studio: studio::StudioConfig,
    ) -> SageMakerService {
        SageMakerService {
            store,
            bucket_policies,
            studio,
        }
    }
}

impl Service for SageMakerService {
    fn signing_name(&self) -> &'static str {
        "sagemaker"
    }
    fn protocol(&self) -> Protocol {
        Protocol::Json
    }
    fn model(&self) -> &'static ServiceModel {
        cove_wire::model::sagemaker()
    }
    fn handle(&self, ctx: &RequestContext, input: Value) -> AwsResult<Value> {
        use definitions::Definition::*;
        use JobKind::*;
        let store = &self.store;
        match ctx.operation.as_str() {
            "CreateTrainingJob" => api::create(store, ctx, Training, input, &self.bucket_policies),
            "DescribeTrainingJob" => api::describe(store, Training, &input),
            "ListTrainingJobs" => api::list(store, ctx, Training, &input),
            "StopTrainingJob" => api::stop(store, Training, &input),
            "CreateProcessingJob" => {
                api::create(store, ctx, Processing, input, &self.bucket_policies)
            }
            "DescribeProcessingJob" => api::describe(store, Processing, &input),
            "ListProcessingJobs" => api::list(store, ctx, Processing, &input),
            "StopProcessingJob" => api::stop(store, Processing, &input),
            "CreateModel" => definitions::create(store, ctx, Model, input),
            "DescribeModel" => definitions::describe(store, ctx, Model, &input),
            "ListModels" => definitions::list(store, ctx, Model, &input),
            "DeleteModel" => definitions::delete(store, ctx, Model, &input),
            "CreateEndpointConfig" => definitions::create(store, ctx, EndpointConfig, input),
            "DescribeEndpointConfig" => definitions::describe(store, ctx, EndpointConfig, &input),
            "ListEndpointConfigs" => definitions::list(store, ctx, EndpointConfig, &input),
            "DeleteEndpointConfig" => definitions::delete(store, ctx, EndpointConfig, &input),
            "CreateEndpoint" => endpoints::create(store, ctx, input),
            "DescribeEndpoint" => endpoints::describe(store, ctx, &input),
            "ListEndpoints" => endpoints::list(store, ctx, &input),
            "DeleteEndpoint" => endpoints::delete(store, ctx, &input),
            "UpdateEndpoint" => endpoints::update(store, ctx, &input),
            "CreateTransformJob" => transform::create(store, ctx, input),
            "DescribeTransformJob" => transform::describe(store, &input),
            "ListTransformJobs" => transform::list(store, ctx, &input),
            "StopTransformJob" => transform::stop(store, &input),
            "UpdateEndpointWeightsAndCapacities" => {
                endpoints::update_weights_and_capacities(store, ctx, &input)
            }
            "CreateCompilationJob" => compilation::create(store, ctx, input),
            "DescribeCompilationJob" => compilation::describe(store, &input),
            "ListCompilationJobs" => compilation::list(store, ctx, &input),
            "StopCompilationJob" => compilation::stop(store, &input),
            "CreateInferenceRecommendationsJob" => recommender::create(store, ctx, input),
            "DescribeInferenceRecommendationsJob" => recommender::describe(store, &input),
            "ListInferenceRecommendationsJobs" => recommender::list(store, ctx, &input),
            "StopInferenceRecommendationsJob" => recommender::stop(store, &input),
            "ListInferenceRecommendationsJobSteps" => recommender::steps(store, &input),
            "CreateDomain" => studio::create_domain(store, ctx, &self.studio, input),
            "DescribeDomain" => studio::describe_domain(store, ctx, &self.studio, &input),
            "ListDomains" => studio::list_domains(store, ctx, &self.studio, &input),
            "UpdateDomain" => studio::update_domain(store, ctx, &input),
            "DeleteDomain" => studio::delete_domain(store, ctx, &self.studio, &input),
            "CreateUserProfile" => studio::create_user_profile(store, ctx, input),
            "DescribeUserProfile" => studio::describe_user_profile(store, ctx, &input),
            "ListUserProfiles" => studio::list_user_profiles(store, ctx, &input),
            "DeleteUserProfile" => studio::delete_user_profile(store, ctx, &input),
            "CreateApp" => studio::create_app(store, ctx, input),
            "DescribeApp" => studio::describe_app(store, &input),
            "ListApps" => studio::list_apps(store, ctx, &input),
            "DeleteApp" => studio::delete_app(store, &input),
            "CreatePresignedDomainUrl" => {
                studio::create_presigned_domain_url(store, ctx, &self.studio, &input)
            }
            other => Err(AwsError::client(
                "UnknownOperationException",
                format!("The operation {other} is not supported by Cove."),
            )),
        }
    }
}
