//! The endpoint API: CreateEndpoint, DescribeEndpoint, ListEndpoints,
//! DeleteEndpoint, UpdateEndpoint and UpdateEndpointWeightsAndCapacities.
//! Handlers check what the schema cannot (the configuration and its models
//! exist, the endpoint is in a state that allows the change) and store the
//! wish; the hosting supervisor brings instances up and down to match it.

use crate::common::Caller;
use crate::common::{count, page, validation, ListQuery, Row};
use crate::definitions::{self, Definition};
use crate::requests::{
    ContainerDefinition, CreateEndpointInput, CreateModelInput, UpdateEndpointInput,
    UpdateEndpointWeightsAndCapacitiesInput,
};
use cove_model::endpoints::{EndpointStatus, EndpointVariant, InstanceState, SageMakerEndpoint};
use cove_model::ids::now_rfc3339;
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_wire::RequestContext;
use serde_json::{json, Value};

fn arn(ctx: &RequestContext, name: &str) -> String {
    SageMakerEndpoint::key_of(&ctx.region, ctx.account_id(), name)
}

fn not_found(ctx: &RequestContext, name: &str) -> AwsError {
    validation(format!("Could not find endpoint \"{}\".", arn(ctx, name)))
}

pub fn find<'w>(
    world: &'w World,
    ctx: &RequestContext,
    name: &str,
) -> AwsResult<&'w SageMakerEndpoint> {
    world
        .sagemaker_endpoints
        .get(&SageMakerEndpoint::key_of(
            &ctx.region,
            ctx.account_id(),
            name,
        ))
        .map(std::sync::Arc::as_ref)
        .ok_or_else(|| not_found(ctx, name))
}

/// The container a model runs (its primary container, or the first of
/// `Containers`); `None` for a model with neither.
pub fn model_container(model: &CreateModelInput) -> Option<&ContainerDefinition> {
    model
        .primary_container
        .as_ref()
        .or_else(|| model.containers.as_ref()?.first())
}

/// The variants of an endpoint configuration, as an endpoint starts them.
fn variants_of(
    world: &World,
    ctx: &RequestContext,
    config_name: &str,
) -> AwsResult<Vec<EndpointVariant>> {
    let config = definitions::find(world, ctx, Definition::EndpointConfig, config_name)?;
    let mut out = Vec::new();
    for v in config
        .request
        .endpoint_config()
        .map(|c| c.production_variants.as_slice())
        .unwrap_or_default()
    {
        let model_name = v.model_name.as_deref().unwrap_or_default();
        let model = definitions::find(world, ctx, Definition::Model, model_name)?;
        let weight = v.initial_variant_weight.unwrap_or(1.0);
        // A negative count reads as none, as JSON's `as_u64` read it.
        let count = match v.initial_instance_count {
            None => 1,
            Some(n) => u64::try_from(n).unwrap_or(1),
        };
        out.push(EndpointVariant {
            name: v.variant_name.clone(),
            model_name: model_name.to_string(),
            instance_type: v.instance_type.clone().unwrap_or_default(),
            current_weight: weight,
            desired_weight: weight,
            current_instance_count: 0,
            desired_instance_count: u32::try_from(count).unwrap_or(u32::MAX),
            image: model
                .request
                .model()
                .and_then(model_container)
                .and_then(|c| c.image.clone())
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// `CreateEndpoint`: the endpoint keeps the request (its `DeploymentConfig`
/// is Describe's `LastDeploymentConfig`).
pub fn create(
    store: &Caller,
    ctx: &RequestContext,
    request: CreateEndpointInput,
) -> AwsResult<Value> {
    let name = request.endpoint_name.clone();
    let config_name = request.endpoint_config_name.as_str();
    let arn = arn(ctx, &name);
    store.write(|tx| {
        if tx.world.sagemaker_endpoints.contains_key(&arn) {
            return Err(validation(format!(
                "Cannot create already existing endpoint \"{arn}\"."
            )));
        }
        let variants = variants_of(&tx.world, ctx, config_name)?;
        let now = now_rfc3339();
        tx.put(SageMakerEndpoint {
            name: name.clone(),
            arn: arn.clone(),
            region: ctx.region.clone(),
            account_id: ctx.account_id().to_string(),
            config_name: config_name.to_string(),
            variants,
            pending_config: None,
            pending_variants: vec![],
            pending_since: None,
            status: EndpointStatus::Creating,
            failure_reason: None,
            creation_time: now.clone(),
            last_modified_time: now,
            instances: vec![],
            delete_requested: false,
            request: Box::new(request.clone()),
        });
        Ok(())
    })?;
    Ok(json!({ "EndpointArn": arn }))
}

fn variant_summary(e: &SageMakerEndpoint, v: &EndpointVariant, creating: bool) -> Value {
    let mut out = json!({
        "VariantName": v.name,
        "DeployedImages": [{
            "SpecifiedImage": v.image,
            "ResolvedImage": v.image,
            "ResolutionTime": e.creation_time,
        }],
        "CurrentWeight": v.current_weight,
        "DesiredWeight": v.desired_weight,
        "CurrentInstanceCount": v.current_instance_count,
        "DesiredInstanceCount": v.desired_instance_count,
    });
    if creating {
        out["VariantStatus"] = json!([{ "Status": "Creating", "StartTime": e.last_modified_time }]);
    }
    out
}

pub fn describe(store: &Caller, ctx: &RequestContext, name: &str) -> AwsResult<Value> {
    let world = store.snapshot();
    let e = find(&world, ctx, name)?;
    let creating = e.status == EndpointStatus::Creating;
    let mut out = json!({
        "EndpointName": e.name,
        "EndpointArn": e.arn,
        "EndpointConfigName": e.config_name,
        "ProductionVariants": e.variants.iter().map(|v| variant_summary(e, v, creating)).collect::<Vec<_>>(),
        "EndpointStatus": e.status,
        "CreationTime": e.creation_time,
        "LastModifiedTime": e.last_modified_time,
    });
    if let Some(r) = &e.failure_reason {
        out["FailureReason"] = json!(r);
    }
    if let Some(c) = &e.request.deployment_config {
        out["LastDeploymentConfig"] = json!(c);
    }
    if let Some(pending) = &e.pending_config {
        out["PendingDeploymentSummary"] = json!({
            "EndpointConfigName": pending,
            "StartTime": e.pending_since,
            "ProductionVariants": e.pending_variants.iter().map(|v| json!({
                "VariantName": v.name,
                "DeployedImages": [{"SpecifiedImage": v.image, "ResolvedImage": v.image}],
                "CurrentWeight": v.current_weight,
                "DesiredWeight": v.desired_weight,
                "CurrentInstanceCount": e.instances.iter().filter(|i| {
                    i.config_name == *pending && i.variant == v.name && i.state == InstanceState::InService
                }).count(),
                "DesiredInstanceCount": v.desired_instance_count,
                "VariantStatus": [{"Status": "Creating", "StartTime": e.pending_since}],
            })).collect::<Vec<_>>(),
        });
    }
    Ok(out)
}

pub fn list(store: &Caller, ctx: &RequestContext, query: &ListQuery) -> AwsResult<Value> {
    let world = store.snapshot();
    let rows = world
        .sagemaker_endpoints
        .values()
        .filter(|e| e.region == ctx.region)
        .map(|e| Row {
            name: &e.name,
            created: &e.creation_time,
            modified: &e.last_modified_time,
            status: e.status.as_str(),
            summary: json!({
                "EndpointName": e.name,
                "EndpointArn": e.arn,
                "CreationTime": e.creation_time,
                "LastModifiedTime": e.last_modified_time,
                "EndpointStatus": e.status,
            }),
        })
        .collect();
    page(query, rows, "Endpoints")
}

pub fn delete(store: &Caller, ctx: &RequestContext, name: &str) -> AwsResult<Value> {
    store.write(|tx| {
        let mut e = find(&tx.world, ctx, name)?.clone();
        if !e.delete_requested {
            e.delete_requested = true;
            e.status = EndpointStatus::Deleting;
            e.last_modified_time = now_rfc3339();
            tx.put(e);
        }
        Ok(())
    })?;
    Ok(json!({}))
}

/// An update needs a settled endpoint, as on AWS.
fn check_updatable(e: &SageMakerEndpoint) -> AwsResult<()> {
    if e.status != EndpointStatus::InService {
        return Err(validation(format!(
            "Cannot update in-progress endpoint \"{}\".",
            e.arn
        )));
    }
    Ok(())
}

/// `UpdateEndpoint`: a `DeploymentConfig` it gives replaces the stored one.
pub fn update(
    store: &Caller,
    ctx: &RequestContext,
    request: &UpdateEndpointInput,
) -> AwsResult<Value> {
    let name = request.endpoint_name.as_str();
    let config_name = request.endpoint_config_name.as_str();
    let retain = request.retain_all_variant_properties.unwrap_or(false);
    let arn = store.write(|tx| {
        let mut e = find(&tx.world, ctx, name)?.clone();
        check_updatable(&e)?;
        let mut variants = variants_of(&tx.world, ctx, config_name)?;
        if retain {
            for v in &mut variants {
                if let Some(old) = e.variants.iter().find(|o| o.name == v.name) {
                    v.current_weight = old.current_weight;
                    v.desired_weight = old.desired_weight;
                    v.desired_instance_count = old.desired_instance_count;
                }
            }
        }
        let now = now_rfc3339();
        e.pending_config = Some(config_name.to_string());
        e.pending_variants = variants;
        e.pending_since = Some(now.clone());
        e.status = EndpointStatus::Updating;
        e.failure_reason = None;
        e.last_modified_time = now;
        if let Some(c) = &request.deployment_config {
            e.request.deployment_config = Some(c.clone());
        }
        let arn = e.arn.clone();
        tx.put(e);
        Ok(arn)
    })?;
    Ok(json!({ "EndpointArn": arn }))
}

pub fn update_weights_and_capacities(
    store: &Caller,
    ctx: &RequestContext,
    request: &UpdateEndpointWeightsAndCapacitiesInput,
) -> AwsResult<Value> {
    let name = request.endpoint_name.as_str();
    let arn = store.write(|tx| {
        let mut e = find(&tx.world, ctx, name)?.clone();
        check_updatable(&e)?;
        let wanted = &request.desired_weights_and_capacities;
        let missing: Vec<&str> = wanted
            .iter()
            .map(|w| w.variant_name.as_str())
            .filter(|n| !e.variants.iter().any(|v| v.name == *n))
            .collect();
        if !missing.is_empty() {
            return Err(validation(format!(
                "The variant(s) \"[{}]\" is/are not present in the endpoint \"{}\".",
                missing.join(", "),
                e.arn
            )));
        }
        for w in wanted {
            let v = e
                .variants
                .iter_mut()
                .find(|v| v.name == w.variant_name)
                .expect("checked above");
            if let Some(weight) = w.desired_weight {
                v.desired_weight = weight;
            }
            if let Some(count) = count(w.desired_instance_count) {
                v.desired_instance_count = u32::try_from(count).unwrap_or(u32::MAX);
            }
        }
        e.status = EndpointStatus::Updating;
        e.last_modified_time = now_rfc3339();
        let arn = e.arn.clone();
        tx.put(e);
        Ok(arn)
    })?;
    Ok(json!({ "EndpointArn": arn }))
}
