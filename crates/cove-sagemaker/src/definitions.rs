//! Models and endpoint configurations: definitions SageMaker stores and
//! describes, which endpoints and batch transform jobs then use. Checks what
//! the schema cannot (unique names, models that exist, `VpcConfig` ids in one
//! VPC) with AWS's messages.

use crate::common::Caller;
use crate::common::{check_vpc_config, page, validation, ListQuery, Row};
use crate::requests::{CreateEndpointConfigInput, CreateModelInput, VpcConfig};
use cove_model::ids::now_rfc3339;
use cove_model::jobs::{DefinitionRequest, SageMakerDefinition};
use cove_model::world::World;
use cove_model::AwsResult;
use cove_wire::RequestContext;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The two kinds, with the words their API and messages use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Definition {
    Model,
    EndpointConfig,
}

impl Definition {
    fn arn_word(self) -> &'static str {
        match self {
            Definition::Model => "model",
            Definition::EndpointConfig => "endpoint-config",
        }
    }
    /// How AWS names the kind in its messages.
    fn noun(self) -> &'static str {
        match self {
            Definition::Model => "model",
            Definition::EndpointConfig => "endpoint configuration",
        }
    }
    fn name_field(self) -> &'static str {
        match self {
            Definition::Model => "ModelName",
            Definition::EndpointConfig => "EndpointConfigName",
        }
    }
    fn arn_field(self) -> &'static str {
        match self {
            Definition::Model => "ModelArn",
            Definition::EndpointConfig => "EndpointConfigArn",
        }
    }
}

fn arn(ctx: &RequestContext, kind: Definition, name: &str) -> String {
    SageMakerDefinition::key_of(&ctx.region, ctx.account_id(), kind.arn_word(), name)
}

fn not_found(ctx: &RequestContext, kind: Definition, name: &str) -> cove_model::AwsError {
    validation(format!(
        "Could not find {} \"{}\".",
        kind.noun(),
        arn(ctx, kind, name)
    ))
}

/// The stored definition, or AWS's "Could not find" answer.
pub fn find<'w>(
    world: &'w World,
    ctx: &RequestContext,
    kind: Definition,
    name: &str,
) -> AwsResult<&'w SageMakerDefinition> {
    world
        .sagemaker_definitions
        .get(&SageMakerDefinition::key_of(
            &ctx.region,
            ctx.account_id(),
            kind.arn_word(),
            name,
        ))
        .map(std::sync::Arc::as_ref)
        .ok_or_else(|| not_found(ctx, kind, name))
}

/// A CreateModel or CreateEndpointConfig request.
#[derive(Debug, Clone)]
pub enum NewDefinition {
    Model(Box<CreateModelInput>),
    EndpointConfig(Box<CreateEndpointConfigInput>),
}

impl NewDefinition {
    pub fn kind(&self) -> Definition {
        match self {
            NewDefinition::Model(_) => Definition::Model,
            NewDefinition::EndpointConfig(_) => Definition::EndpointConfig,
        }
    }

    fn name(&self) -> &str {
        match self {
            NewDefinition::Model(r) => &r.model_name,
            NewDefinition::EndpointConfig(r) => &r.endpoint_config_name,
        }
    }
}

fn check_vpc(world: &World, ctx: &RequestContext, config: Option<&VpcConfig>) -> AwsResult<()> {
    match config {
        Some(c) => check_vpc_config(world, &ctx.region, &c.subnets, &c.security_group_ids),
        None => Ok(()),
    }
}

fn check_model(world: &World, ctx: &RequestContext, input: &CreateModelInput) -> AwsResult<()> {
    let primary = input.primary_container.is_some();
    let containers = input.containers.as_ref().is_some_and(|c| !c.is_empty());
    if primary == containers {
        return Err(validation(
            "Exactly one of PrimaryContainer or Containers must be specified.",
        ));
    }
    check_vpc(world, ctx, input.vpc_config.as_ref())
}

fn check_endpoint_config(
    world: &World,
    ctx: &RequestContext,
    input: &CreateEndpointConfigInput,
) -> AwsResult<()> {
    let mut names = BTreeSet::new();
    for v in &input.production_variants {
        let variant = v.variant_name.as_str();
        if !names.insert(variant) {
            return Err(validation(format!(
                "Variant names must be unique: {variant} is given more than once."
            )));
        }
        let model = v.model_name.as_deref().unwrap_or_default();
        find(world, ctx, Definition::Model, model)?;
        if v.instance_type.is_none() {
            return Err(validation(format!(
                "Variant {variant}: InstanceType is required (serverless variants are not supported by Cove)."
            )));
        }
    }
    check_vpc(world, ctx, input.vpc_config.as_ref())
}

/// `CreateModel`, `CreateEndpointConfig`: the definition keeps the request
/// for Describe to echo and endpoints to read.
pub fn create(store: &Caller, ctx: &RequestContext, request: NewDefinition) -> AwsResult<Value> {
    let kind = request.kind();
    let name = request.name().to_string();
    let arn = arn(ctx, kind, &name);
    store.write(|tx| {
        if tx.world.sagemaker_definitions.contains_key(&arn) {
            return Err(validation(format!(
                "Cannot create already existing {} \"{arn}\".",
                kind.noun()
            )));
        }
        match &request {
            NewDefinition::Model(r) => check_model(&tx.world, ctx, r)?,
            NewDefinition::EndpointConfig(r) => check_endpoint_config(&tx.world, ctx, r)?,
        }
        tx.put(SageMakerDefinition {
            kind: kind.arn_word().to_string(),
            name: name.clone(),
            arn: arn.clone(),
            region: ctx.region.clone(),
            request: match &request {
                NewDefinition::Model(r) => DefinitionRequest::Model(r.clone()),
                NewDefinition::EndpointConfig(r) => DefinitionRequest::EndpointConfig(r.clone()),
            },
            creation_time: now_rfc3339(),
        });
        Ok(())
    })?;
    Ok(json!({ kind.arn_field(): arn }))
}

pub fn describe(
    store: &Caller,
    ctx: &RequestContext,
    kind: Definition,
    name: &str,
) -> AwsResult<Value> {
    let world = store.snapshot();
    let d = find(&world, ctx, kind, name)?;
    let mut out = crate::common::echoed(&d.request);
    out.insert(kind.arn_field().into(), json!(d.arn));
    out.insert("CreationTime".into(), json!(d.creation_time));
    if kind == Definition::Model && !out.contains_key("EnableNetworkIsolation") {
        out.insert("EnableNetworkIsolation".into(), json!(false));
    }
    Ok(Value::Object(out))
}

pub fn list(
    store: &Caller,
    ctx: &RequestContext,
    kind: Definition,
    query: &ListQuery,
) -> AwsResult<Value> {
    let world = store.snapshot();
    let rows = world
        .sagemaker_definitions
        .values()
        .filter(|d| d.kind == kind.arn_word() && d.region == ctx.region)
        .map(|d| Row {
            name: &d.name,
            created: &d.creation_time,
            modified: &d.creation_time,
            status: "",
            summary: json!({
                kind.name_field(): d.name,
                kind.arn_field(): d.arn,
                "CreationTime": d.creation_time,
            }),
        })
        .collect();
    let key = match kind {
        Definition::Model => "Models",
        Definition::EndpointConfig => "EndpointConfigs",
    };
    page(query, rows, key)
}

pub fn delete(
    store: &Caller,
    ctx: &RequestContext,
    kind: Definition,
    name: &str,
) -> AwsResult<Value> {
    store.write(|tx| {
        let key = find(&tx.world, ctx, kind, name)?.arn.clone();
        tx.delete::<SageMakerDefinition>(&key);
        Ok(())
    })?;
    Ok(json!({}))
}
