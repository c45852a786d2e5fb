//! Models and endpoint configurations: definitions SageMaker stores and
//! describes, which endpoints and batch transform jobs then use. Checks what
//! the schema cannot (unique names, models that exist, `VpcConfig` ids in one
//! VPC) with AWS's messages.

use crate::common::{check_vpc_config, page, validation, Row};
use cove_model::ids::now_rfc3339;
use cove_model::jobs::SageMakerDefinition;
use cove_model::world::World;
use cove_model::AwsResult;
use cove_store::Store;
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
    format!(
        "arn:aws:sagemaker:{}:{}:{}/{name}",
        ctx.region,
        ctx.account_id(),
        kind.arn_word()
    )
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
        .get(&SageMakerDefinition::key_of(kind.arn_word(), name))
        .filter(|d| d.region == ctx.region)
        .ok_or_else(|| not_found(ctx, kind, name))
}

fn check_model(world: &World, ctx: &RequestContext, input: &Value) -> AwsResult<()> {
    let primary = input.get("PrimaryContainer").is_some();
    let containers = input["Containers"]
        .as_array()
        .is_some_and(|c| !c.is_empty());
    if primary == containers {
        return Err(validation(
            "Exactly one of PrimaryContainer or Containers must be specified.",
        ));
    }
    if let Some(config) = input.get("VpcConfig") {
        check_vpc_config(world, &ctx.region, config)?;
    }
    Ok(())
}

fn check_endpoint_config(world: &World, ctx: &RequestContext, input: &Value) -> AwsResult<()> {
    let mut names = BTreeSet::new();
    for v in input["ProductionVariants"].as_array().into_iter().flatten() {
        let variant = v["VariantName"].as_str().unwrap_or_default();
        if !names.insert(variant) {
            return Err(validation(format!(
                "Variant names must be unique: {variant} is given more than once."
            )));
        }
        let model = v["ModelName"].as_str().unwrap_or_default();
        find(world, ctx, Definition::Model, model)?;
        if v.get("InstanceType").is_none() {
            return Err(validation(format!(
                "Variant {variant}: InstanceType is required (serverless variants are not supported by Cove)."
            )));
        }
    }
    if let Some(config) = input.get("VpcConfig") {
        check_vpc_config(world, &ctx.region, config)?;
    }
    Ok(())
}

pub fn create(
    store: &Store,
    ctx: &RequestContext,
    kind: Definition,
    input: Value,
) -> AwsResult<Value> {
    let name = input[kind.name_field()]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let arn = arn(ctx, kind, &name);
    store.write(|tx| {
        let key = SageMakerDefinition::key_of(kind.arn_word(), &name);
        if tx.world.sagemaker_definitions.contains_key(&key) {
            return Err(validation(format!(
                "Cannot create already existing {} \"{arn}\".",
                kind.noun()
            )));
        }
        match kind {
            Definition::Model => check_model(&tx.world, ctx, &input)?,
            Definition::EndpointConfig => check_endpoint_config(&tx.world, ctx, &input)?,
        }
        tx.put(SageMakerDefinition {
            kind: kind.arn_word().to_string(),
            name: name.clone(),
            arn: arn.clone(),
            region: ctx.region.clone(),
            request: input.clone(),
            creation_time: now_rfc3339(),
        });
        Ok(())
    })?;
    Ok(json!({ kind.arn_field(): arn }))
}

pub fn describe(
    store: &Store,
    ctx: &RequestContext,
    kind: Definition,
    input: &Value,
) -> AwsResult<Value> {
    let world = store.snapshot();
    let name = input[kind.name_field()].as_str().unwrap_or_default();
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
    store: &Store,
    ctx: &RequestContext,
    kind: Definition,
    input: &Value,
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
    page(input, rows, key)
}

pub fn delete(
    store: &Store,
    ctx: &RequestContext,
    kind: Definition,
    input: &Value,
) -> AwsResult<Value> {
    let name = input[kind.name_field()].as_str().unwrap_or_default();
    store.write(|tx| {
        let key = find(&tx.world, ctx, kind, name)?
            .arn
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string();
        tx.delete::<SageMakerDefinition>(&key);
        Ok(())
    })?;
    Ok(json!({}))
}
