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

use cove_model::jobs::{JobKind, JobRequest};
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
    /// A job's or model's role is checked (IAM enforced): the caller may
    /// pass it, and it trusts SageMaker.
    enforce_iam: bool,
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
            enforce_iam: false,
        }
    }

    /// With IAM enforced, CreateTrainingJob, CreateProcessingJob and
    /// CreateModel check `iam:PassRole` for the caller on the role they
    /// name, and that the role exists and trusts `sagemaker.amazonaws.com`.
    pub fn enforcing_iam(mut self, enforce: bool) -> SageMakerService {
        self.enforce_iam = enforce;
        self
    }
}

/// The service principal SageMaker assumes a job's role as.
const SAGEMAKER_PRINCIPAL: &str = "sagemaker.amazonaws.com";

/// IAM's checks on a role handed to SageMaker: the caller may pass it
/// (`iam:PassRole`, when identity policies limit the caller), and it
/// exists and trusts SageMaker, with AWS's errors.
fn check_passed_role(
    w: &cove_model::world::World,
    ctx: &RequestContext,
    role: &str,
) -> AwsResult<()> {
    use cove_iam::authority::{identity_policies, may_assume, Assumer};
    use cove_model::policy::{Decision, RequestContext as PolicyContext};
    if let Some(limits) = identity_policies(w, &ctx.principal.arn, &ctx.principal.access_key) {
        let mut cx = PolicyContext::new("iam:PassRole", role, &ctx.principal.arn, ctx.account_id());
        cx.set("iam:PassedToService", SAGEMAKER_PRINCIPAL);
        if limits.decide(&cx) != Decision::Allow {
            return Err(cove_model::AwsError::client(
                "AccessDeniedException",
                format!(
                    "User: {} is not authorized to perform: iam:PassRole on resource: {role}",
                    ctx.principal.arn
                ),
            ));
        }
    }
    if !may_assume(w, role, &Assumer::Service(SAGEMAKER_PRINCIPAL)) {
        return Err(cove_model::AwsError::client(
            "ValidationException",
            format!("Could not assume role {role}. Please ensure that the role exists and allows principal '{SAGEMAKER_PRINCIPAL}' to assume the role."),
        ));
    }
    Ok(())
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
        use definitions::{Definition, NewDefinition};
        use requests::Request;
        use JobKind::*;
        let store = &common::Caller::new(&self.store, ctx);
        let request = match requests::Request::parse(&ctx.operation, &input) {
            None => {
                return Err(AwsError::client(
                    "UnknownOperationException",
                    format!("The operation {} is not supported by Cove.", ctx.operation),
                ))
            }
            Some(Err(e)) => return Err(common::invalid_request(e)),
            Some(Ok(r)) => r,
        };
        if self.enforce_iam {
            let role = match &request {
                Request::CreateTrainingJob(r) => Some(r.role_arn.as_str()),
                Request::CreateProcessingJob(r) => Some(r.role_arn.as_str()),
                Request::CreateModel(r) => r.execution_role_arn.as_deref(),
                _ => None,
            };
            if let Some(role) = role {
                check_passed_role(&store.snapshot(), ctx, role)?;
            }
        }
        // Create handlers store their typed request: Describe echoes it
        // back and the drivers read it.
        match request {
            Request::CreateTrainingJob(r) => training::create(
                store,
                ctx,
                &JobRequest::Training(Box::new(r)),
                &self.bucket_policies,
            ),
            Request::DescribeTrainingJob(r) => {
                training::describe(store, Training, &r.training_job_name)
            }
            Request::ListTrainingJobs(r) => training::list(store, ctx, Training, &(&r).into()),
            Request::StopTrainingJob(r) => training::stop(store, Training, &r.training_job_name),
            Request::CreateProcessingJob(r) => training::create(
                store,
                ctx,
                &JobRequest::Processing(Box::new(r)),
                &self.bucket_policies,
            ),
            Request::DescribeProcessingJob(r) => {
                training::describe(store, Processing, &r.processing_job_name)
            }
            Request::ListProcessingJobs(r) => training::list(store, ctx, Processing, &(&r).into()),
            Request::StopProcessingJob(r) => {
                training::stop(store, Processing, &r.processing_job_name)
            }
            Request::CreateModel(r) => {
                definitions::create(store, ctx, NewDefinition::Model(Box::new(r)))
            }
            Request::DescribeModel(r) => {
                definitions::describe(store, ctx, Definition::Model, &r.model_name)
            }
            Request::ListModels(r) => {
                definitions::list(store, ctx, Definition::Model, &(&r).into())
            }
            Request::DeleteModel(r) => {
                definitions::delete(store, ctx, Definition::Model, &r.model_name)
            }
            Request::CreateEndpointConfig(r) => {
                definitions::create(store, ctx, NewDefinition::EndpointConfig(Box::new(r)))
            }
            Request::DescribeEndpointConfig(r) => definitions::describe(
                store,
                ctx,
                Definition::EndpointConfig,
                &r.endpoint_config_name,
            ),
            Request::ListEndpointConfigs(r) => {
                definitions::list(store, ctx, Definition::EndpointConfig, &(&r).into())
            }
            Request::DeleteEndpointConfig(r) => definitions::delete(
                store,
                ctx,
                Definition::EndpointConfig,
                &r.endpoint_config_name,
            ),
            Request::CreateEndpoint(r) => endpoints::create(store, ctx, r),
            Request::DescribeEndpoint(r) => endpoints::describe(store, ctx, &r.endpoint_name),
            Request::ListEndpoints(r) => endpoints::list(store, ctx, &(&r).into()),
            Request::DeleteEndpoint(r) => endpoints::delete(store, ctx, &r.endpoint_name),
            Request::UpdateEndpoint(r) => endpoints::update(store, ctx, &r),
            Request::UpdateEndpointWeightsAndCapacities(r) => {
                endpoints::update_weights_and_capacities(store, ctx, &r)
            }
            Request::CreateTransformJob(r) => transform::create(store, ctx, r),
            Request::DescribeTransformJob(r) => transform::describe(store, &r.transform_job_name),
            Request::ListTransformJobs(r) => transform::list(store, ctx, &(&r).into()),
            Request::StopTransformJob(r) => transform::stop(store, &r.transform_job_name),
            Request::CreateCompilationJob(r) => compilation::create(store, ctx, r),
            Request::DescribeCompilationJob(r) => {
                compilation::describe(store, &r.compilation_job_name)
            }
            Request::ListCompilationJobs(r) => compilation::list(store, ctx, &(&r).into()),
            Request::StopCompilationJob(r) => compilation::stop(store, &r.compilation_job_name),
            Request::CreateInferenceRecommendationsJob(r) => recommender::create(store, ctx, r),
            Request::DescribeInferenceRecommendationsJob(r) => {
                recommender::describe(store, &r.job_name)
            }
            Request::ListInferenceRecommendationsJobs(r) => recommender::list(store, ctx, &r),
            Request::StopInferenceRecommendationsJob(r) => recommender::stop(store, &r.job_name),
            Request::ListInferenceRecommendationsJobSteps(r) => recommender::steps(store, &r),
            Request::CreateDomain(r) => studio::create_domain(store, ctx, &self.studio, r),
            Request::DescribeDomain(r) => {
                studio::describe_domain(store, ctx, &self.studio, &r.domain_id)
            }
            Request::ListDomains(r) => studio::list_domains(store, ctx, &self.studio, &r),
            Request::UpdateDomain(r) => studio::update_domain(store, ctx, &r),
            Request::DeleteDomain(r) => studio::delete_domain(store, ctx, &self.studio, &r),
            Request::CreateUserProfile(r) => studio::create_user_profile(store, ctx, r),
            Request::DescribeUserProfile(r) => studio::describe_user_profile(store, ctx, &r),
            Request::ListUserProfiles(r) => studio::list_user_profiles(store, ctx, &r),
            Request::DeleteUserProfile(r) => studio::delete_user_profile(store, ctx, &r),
            Request::CreateApp(r) => studio::create_app(store, ctx, r),
            Request::DescribeApp(r) => studio::describe_app(store, &r),
            Request::ListApps(r) => studio::list_apps(store, ctx, &r),
            Request::DeleteApp(r) => studio::delete_app(store, &r),
            Request::CreatePresignedDomainUrl(r) => {
                studio::create_presigned_domain_url(store, ctx, &self.studio, &r)
            }
        }
    }
}
