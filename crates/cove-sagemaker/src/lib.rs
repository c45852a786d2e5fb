//! The SageMaker API for Cove (awsJson 1.1, `SageMaker.*`, signing name
//! `sagemaker`): one module per resource family. Handlers validate what the
//! schema cannot, store the wish in one transaction and answer; the drivers
//! in `cove-jobs` do the work, so nothing here starts a thread or touches
//! the host.
//!
//! - [`training`]: training and processing jobs.
//! - [`definitions`]: models and endpoint configurations.
//! - [`endpoints`]: endpoints (create, update, delete, describe).
//! - [`transform`]: batch transform jobs.
//! - [`compilation`]: Neo compilation jobs.
//! - [`recommender`]: Inference Recommender jobs.
//! - [`studio`]: Studio domains, user profiles, apps and presigned URLs.
//! - [`common`], [`stopping`]: what the handlers share.

pub mod common;
pub mod compilation;
pub mod definitions;
pub mod endpoints;
pub mod recommender;
pub mod requests;
pub mod stopping;
pub mod studio;
pub mod training;
pub mod transform;

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
            "CreateTrainingJob" => {
                training::create(store, ctx, Training, input, &self.bucket_policies)
            }
            "DescribeTrainingJob" => training::describe(store, Training, &input),
            "ListTrainingJobs" => training::list(store, ctx, Training, &input),
            "StopTrainingJob" => training::stop(store, Training, &input),
            "CreateProcessingJob" => {
                training::create(store, ctx, Processing, input, &self.bucket_policies)
            }
            "DescribeProcessingJob" => training::describe(store, Processing, &input),
            "ListProcessingJobs" => training::list(store, ctx, Processing, &input),
            "StopProcessingJob" => training::stop(store, Processing, &input),
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
