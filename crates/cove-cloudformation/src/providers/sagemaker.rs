//! SageMaker models, endpoint configurations and endpoints, made by Cove's
//! SageMaker API, so an endpoint of a stack is provisioned on its VPC's
//! ENIs like one created by a call. Their properties are the API's members.

use super::{created, s, tag_list, Api, Created, Naming, Readiness};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

fn sagemaker(api: &dyn Api, operation: &str, input: Value) -> Result<Value, String> {
    super::call(api, "sagemaker", operation, input)
}

/// Per type: the create call, its input shape, the name member, and the
/// reply's ARN member.
fn shape_of(kind: &str) -> Option<(&'static str, &'static str, &'static str, &'static str)> {
    match kind {
        "AWS::SageMaker::Model" => {
            Some(("CreateModel", "CreateModelInput", "ModelName", "ModelArn"))
        }
        "AWS::SageMaker::EndpointConfig" => Some((
            "CreateEndpointConfig",
            "CreateEndpointConfigInput",
            "EndpointConfigName",
            "EndpointConfigArn",
        )),
        "AWS::SageMaker::Endpoint" => Some((
            "CreateEndpoint",
            "CreateEndpointInput",
            "EndpointName",
            "EndpointArn",
        )),
        _ => None,
    }
}

/// Endpoint properties that only say how an update keeps the old variants.
const UPDATE_ONLY: [&str; 3] = [
    "RetainAllVariantProperties",
    "ExcludeRetainedVariantProperties",
    "RetainDeploymentConfig",
];

pub fn create(
    api: &dyn Api,
    kind: &str,
    props: &Map<String, Value>,
    naming: &Naming,
) -> Result<Created, String> {
    let (operation, input_shape, name_member, arn_member) =
        shape_of(kind).ok_or_else(|| format!("Cove does not create resources of type {kind}"))?;
    let shape = cove_wire::model::sagemaker().shape(input_shape);
    let mut input = Map::new();
    for (key, value) in props {
        if UPDATE_ONLY.contains(&key.as_str()) {
            continue;
        }
        if shape.member(key).is_none() {
            return Err(format!(
                "Properties validation failed for resource of type {kind}: extraneous key [{key}] is not permitted"
            ));
        }
        input.insert(key.clone(), value.clone());
    }
    let name = s(props, name_member).unwrap_or_else(|| naming.generate(63, false));
    input.insert(name_member.into(), json!(name));
    let tags = tag_list(props);
    if !tags.is_empty() {
        input.insert("Tags".into(), json!(tags));
    }
    let reply = sagemaker(api, operation, Value::Object(input))?;
    let arn = reply[arn_member]
        .as_str()
        .ok_or_else(|| format!("the reply carried no {arn_member}"))?
        .to_string();
    Ok(created(arn, &[(name_member, json!(name))]))
}

/// An endpoint is ready once `InService`; `Failed` fails the resource with
/// SageMaker's reason.
pub fn endpoint_readiness(
    api: &dyn Api,
    attributes: &BTreeMap<String, Value>,
) -> Result<Readiness, String> {
    let name = attributes
        .get("EndpointName")
        .cloned()
        .unwrap_or(Value::Null);
    let reply = sagemaker(api, "DescribeEndpoint", json!({"EndpointName": name}))?;
    match reply["EndpointStatus"].as_str() {
        Some("InService") => Ok(Readiness::Ready),
        Some("Failed") => Err(format!(
            "Resource handler returned message: \"Endpoint {} failed: {}\"",
            name.as_str().unwrap_or_default(),
            reply["FailureReason"].as_str().unwrap_or_default()
        )),
        _ => Ok(Readiness::Pending),
    }
}

pub fn delete(
    api: &dyn Api,
    kind: &str,
    attributes: &BTreeMap<String, Value>,
) -> Result<(), String> {
    let (_, _, name_member, _) =
        shape_of(kind).ok_or_else(|| format!("Cove does not delete resources of type {kind}"))?;
    let operation = match kind {
        "AWS::SageMaker::Model" => "DeleteModel",
        "AWS::SageMaker::EndpointConfig" => "DeleteEndpointConfig",
        _ => "DeleteEndpoint",
    };
    let name = attributes.get(name_member).cloned().unwrap_or(Value::Null);
    sagemaker(api, operation, json!({name_member: name})).map(|_| ())
}

pub fn updatable(kind: &str) -> &'static [&'static str] {
    match kind {
        "AWS::SageMaker::Endpoint" => &[
            "EndpointConfigName",
            "RetainAllVariantProperties",
            "ExcludeRetainedVariantProperties",
            "RetainDeploymentConfig",
            "DeploymentConfig",
        ],
        _ => &[],
    }
}

/// An endpoint moves to its new configuration as `UpdateEndpoint` does
/// (blue/green); it is waited for until in service again.
pub fn update(
    api: &dyn Api,
    attributes: &BTreeMap<String, Value>,
    new: &Map<String, Value>,
) -> Result<(), String> {
    let mut input = json!({
        "EndpointName": attributes.get("EndpointName"),
        "EndpointConfigName": s(new, "EndpointConfigName"),
    });
    for key in [
        "RetainAllVariantProperties",
        "ExcludeRetainedVariantProperties",
        "RetainDeploymentConfig",
        "DeploymentConfig",
    ] {
        if let Some(v) = new.get(key) {
            input[key] = v.clone();
        }
    }
    sagemaker(api, "UpdateEndpoint", input).map(|_| ())
}
