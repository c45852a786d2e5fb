//! SageMaker models, endpoint configurations, endpoints, and Studio's
//! domains, user profiles and apps, made by Cove's SageMaker API, so an
//! endpoint or a Studio app of a stack is provisioned on its VPC's ENIs
//! like one created by a call. Their properties are the API's members.

use super::{created, s, tag_list, Api, Created, Naming, Readiness};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

fn sagemaker(api: &dyn Api, operation: &str, input: Value) -> Result<Value, String> {
    super::call(api, "sagemaker", operation, input)
}

/// How one SageMaker resource type is made, found and deleted.
struct Type {
    create: &'static str,
    input: &'static str,
    /// The member naming it, generated when the template gives none.
    name: &'static str,
    /// The members that identify it in the describe and delete calls.
    key: &'static [&'static str],
    /// The reply's member `Ref` answers.
    reference: &'static str,
    /// The describe call and its status member, for types made in the background.
    describe: Option<(&'static str, &'static str)>,
    delete: &'static str,
}

fn type_of(kind: &str) -> Option<Type> {
    let t = |create, input, name, key, reference, describe, delete| Type {
        create,
        input,
        name,
        key,
        reference,
        describe,
        delete,
    };
    Some(match kind {
        "AWS::SageMaker::Model" => t(
            "CreateModel",
            "CreateModelInput",
            "ModelName",
            &["ModelName"],
            "ModelArn",
            None,
            "DeleteModel",
        ),
        "AWS::SageMaker::EndpointConfig" => t(
            "CreateEndpointConfig",
            "CreateEndpointConfigInput",
            "EndpointConfigName",
            &["EndpointConfigName"],
            "EndpointConfigArn",
            None,
            "DeleteEndpointConfig",
        ),
        "AWS::SageMaker::Endpoint" => t(
            "CreateEndpoint",
            "CreateEndpointInput",
            "EndpointName",
            &["EndpointName"],
            "EndpointArn",
            Some(("DescribeEndpoint", "EndpointStatus")),
            "DeleteEndpoint",
        ),
        "AWS::SageMaker::Domain" => t(
            "CreateDomain",
            "CreateDomainRequest",
            "DomainName",
            &["DomainId"],
            "DomainId",
            Some(("DescribeDomain", "Status")),
            "DeleteDomain",
        ),
        "AWS::SageMaker::UserProfile" => t(
            "CreateUserProfile",
            "CreateUserProfileRequest",
            "UserProfileName",
            &["DomainId", "UserProfileName"],
            "UserProfileArn",
            Some(("DescribeUserProfile", "Status")),
            "DeleteUserProfile",
        ),
        "AWS::SageMaker::App" => t(
            "CreateApp",
            "CreateAppRequest",
            "AppName",
            &[
                "DomainId",
                "UserProfileName",
                "SpaceName",
                "AppType",
                "AppName",
            ],
            "AppArn",
            Some(("DescribeApp", "Status")),
            "DeleteApp",
        ),
        _ => return None,
    })
}

/// Endpoint properties that only say how an update keeps the old variants.
const UPDATE_ONLY: [&str; 3] = [
    "RetainAllVariantProperties",
    "ExcludeRetainedVariantProperties",
    "RetainDeploymentConfig",
];

/// The members of `key` found in `from`.
fn key_input(key: &[&str], from: &BTreeMap<String, Value>) -> Value {
    Value::Object(
        key.iter()
            .filter_map(|k| {
                Some((
                    k.to_string(),
                    from.get(*k).filter(|v| !v.is_null())?.clone(),
                ))
            })
            .collect(),
    )
}

pub fn create(
    api: &dyn Api,
    kind: &str,
    props: &Map<String, Value>,
    naming: &Naming,
) -> Result<Created, String> {
    let t =
        type_of(kind).ok_or_else(|| format!("Cove does not create resources of type {kind}"))?;
    let shape = cove_wire::model::sagemaker().shape(t.input);
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
    let name = s(props, t.name).unwrap_or_else(|| naming.generate(63, false));
    input.insert(t.name.into(), json!(name));
    let tags = tag_list(props);
    if !tags.is_empty() {
        input.insert("Tags".into(), json!(tags));
    }
    let reply = sagemaker(api, t.create, Value::Object(input.clone()))?;
    let reference = reply[t.reference]
        .as_str()
        .ok_or_else(|| format!("the reply carried no {}", t.reference))?
        .to_string();
    // What identifies it, from the input or the reply, and the reply's ids.
    let mut attributes: BTreeMap<String, Value> = input
        .into_iter()
        .filter(|(k, _)| t.key.contains(&k.as_str()) || k == t.name)
        .collect();
    if let Some(reply) = reply.as_object() {
        attributes.extend(reply.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let mut made = created(reference, &[]);
    made.attributes = attributes;
    Ok(made)
}

/// A type made in the background is ready once `InService`; `Failed`
/// fails the resource with SageMaker's reason.
pub fn readiness(
    api: &dyn Api,
    kind: &str,
    attributes: &BTreeMap<String, Value>,
) -> Result<Readiness, String> {
    let Some((key, (describe, status))) = type_of(kind).and_then(|t| Some((t.key, t.describe?)))
    else {
        return Ok(Readiness::Ready);
    };
    let reply = sagemaker(api, describe, key_input(key, attributes))?;
    match reply[status].as_str() {
        Some("InService") => Ok(Readiness::Ready),
        Some("Failed") => Err(format!(
            "Resource handler returned message: \"{kind} {} failed: {}\"",
            key_input(key, attributes),
            reply["FailureReason"].as_str().unwrap_or_default()
        )),
        _ => Ok(Readiness::Pending),
    }
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
    for key in UPDATE_ONLY.iter().chain(&["DeploymentConfig"]) {
        if let Some(v) = new.get(*key) {
            input[*key] = v.clone();
        }
    }
    sagemaker(api, "UpdateEndpoint", input).map(|_| ())
}

pub fn delete(
    api: &dyn Api,
    kind: &str,
    attributes: &BTreeMap<String, Value>,
) -> Result<(), String> {
    let t =
        type_of(kind).ok_or_else(|| format!("Cove does not delete resources of type {kind}"))?;
    let mut input = key_input(t.key, attributes);
    if kind == "AWS::SageMaker::App" {
        // An app already deleted (as Studio does when its user stops it) is gone.
        let app = sagemaker(api, "DescribeApp", input.clone())?;
        if matches!(app["Status"].as_str(), Some("Deleted" | "Deleting")) {
            return Ok(());
        }
    }
    if kind == "AWS::SageMaker::Domain" {
        // CloudFormation keeps the domain's home EFS, as the API does by default.
        input["RetentionPolicy"] = json!({"HomeEfsFileSystem": "Retain"});
    }
    sagemaker(api, t.delete, input).map(|_| ())
}
