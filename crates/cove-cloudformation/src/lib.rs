//! The CloudFormation API (query protocol), as far as Cove serves it:
//! `ValidateTemplate` and `GetTemplateSummary` over a template body, with
//! the template engine of `cove-cfn`, and stacks of the EC2 VPC resource
//! types ([`providers`]): `CreateStack` stores the stack and the
//! [`deployer`] makes it; `DeleteStack` the same in reverse
//! (docs/cloudformation.md).

pub mod deployer;
pub mod providers;

use cove_cfn::summary::{summarize, DeclaredParameter, Summary};
use cove_model::cfn::{Stack, StackStatus};
use cove_model::ids::{now_rfc3339, random_string};
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_shapes::cloudformation::*;
use cove_store::Store;
use cove_wire::{model::ServiceModel, Protocol, RequestContext, Service};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

pub struct CloudFormationService {
    store: Arc<Store>,
}

impl CloudFormationService {
    pub fn new(store: Arc<Store>) -> CloudFormationService {
        CloudFormationService { store }
    }
}

fn validation(message: impl Into<String>) -> AwsError {
    AwsError::client("ValidationError", message.into())
}

/// The template of a call: its body; a URL is not read (yet).
fn template_of(body: Option<&str>, url: Option<&str>) -> AwsResult<Value> {
    match (body, url) {
        (Some(_), Some(_)) => Err(validation(
            "Specify exactly one of TemplateBody and TemplateURL.",
        )),
        (Some(body), None) => cove_cfn::parse::parse_template(body).map_err(validation),
        (None, Some(_)) => Err(validation(
            "Cove reads templates from TemplateBody; TemplateURL is not supported yet.",
        )),
        (None, None) => Err(validation(
            "Either Template URL or Template Body must be specified.",
        )),
    }
}

fn capabilities(s: &Summary, out: &mut serde_json::Map<String, Value>) {
    if !s.capabilities.is_empty() {
        out.insert("Capabilities".into(), json!(s.capabilities));
    }
    if let Some(r) = &s.capabilities_reason {
        out.insert("CapabilitiesReason".into(), json!(r));
    }
    if let Some(d) = &s.description {
        out.insert("Description".into(), json!(d));
    }
    if !s.transforms.is_empty() {
        out.insert("DeclaredTransforms".into(), json!(s.transforms));
    }
}

/// A declared parameter's `base` with its default and description, when it has them.
fn parameter(p: &DeclaredParameter, mut base: Value) -> Value {
    if let Some(d) = &p.default {
        base["DefaultValue"] = json!(d);
    }
    if let Some(d) = &p.description {
        base["Description"] = json!(d);
    }
    base
}

fn validate_template(s: &Summary) -> Value {
    let parameters: Vec<Value> = s
        .parameters
        .iter()
        .map(|p| parameter(p, json!({"ParameterKey": p.key, "NoEcho": p.no_echo})))
        .collect();
    let mut out = serde_json::Map::new();
    out.insert("Parameters".into(), json!(parameters));
    capabilities(s, &mut out);
    Value::Object(out)
}

fn template_summary(s: &Summary) -> Value {
    let parameters: Vec<Value> = s
        .parameters
        .iter()
        .map(|p| {
            parameter(
                p,
                json!({
                    "ParameterKey": p.key,
                    "ParameterType": p.kind,
                    "NoEcho": p.no_echo,
                    "ParameterConstraints": {"AllowedValues": p.allowed_values},
                }),
            )
        })
        .collect();
    let mut out = serde_json::Map::new();
    out.insert("Parameters".into(), json!(parameters));
    out.insert("ResourceTypes".into(), json!(s.resource_types));
    if let Some(v) = &s.version {
        out.insert("Version".into(), json!(v));
    }
    if let Some(m) = &s.metadata {
        out.insert("Metadata".into(), json!(m));
    }
    capabilities(s, &mut out);
    Value::Object(out)
}

impl Service for CloudFormationService {
    fn signing_name(&self) -> &'static str {
        "cloudformation"
    }
    fn protocol(&self) -> Protocol {
        Protocol::Query
    }
    fn model(&self) -> &'static ServiceModel {
        cove_wire::model::cloudformation()
    }
    fn handle(&self, ctx: &RequestContext, input: Value) -> AwsResult<Value> {
        let request = match Request::parse(&ctx.operation, &input) {
            Some(Ok(r)) => r,
            Some(Err(e)) => return Err(validation(e.to_string())),
            None => {
                return Err(AwsError::client(
                    "InvalidAction",
                    format!(
                        "Could not find operation {} for version 2010-05-15",
                        ctx.operation
                    ),
                ))
            }
        };
        let (region, account) = (ctx.region.as_str(), ctx.account_id());
        match request {
            Request::ValidateTemplate(r) => {
                let t = template_of(r.template_body.as_deref(), r.template_url.as_deref())?;
                Ok(validate_template(&summarize(&t).map_err(validation)?))
            }
            Request::GetTemplateSummary(r) => {
                if let Some(name) = r.stack_name.as_deref() {
                    let world = self.store.view(account);
                    let stack = find(&world, region, name)?;
                    let t = cove_cfn::parse::parse_template(&stack.template_body)
                        .map_err(validation)?;
                    return Ok(template_summary(&summarize(&t).map_err(validation)?));
                }
                if let Some(set) = r.stack_set_name.as_deref() {
                    return Err(validation(format!("StackSet {set} not found")));
                }
                let t = template_of(r.template_body.as_deref(), r.template_url.as_deref())?;
                Ok(template_summary(&summarize(&t).map_err(validation)?))
            }
            Request::CreateStack(r) => self.create_stack(region, account, &r),
            Request::DescribeStacks(r) => {
                let world = self.store.view(account);
                let stacks: Vec<Value> = match r.stack_name.as_deref() {
                    Some(name) => vec![stack_out(find(&world, region, name)?)],
                    None => stacks_in(&world, region)
                        .filter(|s| s.status != StackStatus::DeleteComplete)
                        .map(stack_out)
                        .collect(),
                };
                Ok(json!({"Stacks": stacks}))
            }
            Request::DescribeStackEvents(r) => {
                let world = self.store.view(account);
                let stack = find(&world, region, &r.stack_name)?;
                let events: Vec<Value> = stack
                    .events
                    .iter()
                    .rev()
                    .map(|e| {
                        let mut v = json!({
                            "StackId": stack.arn, "StackName": stack.name, "EventId": e.event_id,
                            "LogicalResourceId": e.logical_id, "ResourceType": e.resource_type,
                            "Timestamp": e.timestamp, "ResourceStatus": e.status,
                        });
                        if let Some(p) = &e.physical_id {
                            v["PhysicalResourceId"] = json!(p);
                        }
                        if let Some(reason) = &e.status_reason {
                            v["ResourceStatusReason"] = json!(reason);
                        }
                        v
                    })
                    .collect();
                Ok(json!({"StackEvents": events}))
            }
            Request::DescribeStackResources(r) => {
                let world = self.store.view(account);
                let stack = match (r.stack_name.as_deref(), r.physical_resource_id.as_deref()) {
                    (Some(name), _) => find(&world, region, name)?,
                    (None, Some(physical)) => stacks_in(&world, region)
                        .find(|s| {
                            s.resources
                                .values()
                                .any(|x| x.physical_id.as_deref() == Some(physical))
                        })
                        .ok_or_else(|| {
                            validation(format!("Stack for {physical} does not exist"))
                        })?,
                    (None, None) => {
                        return Err(validation(
                            "Either StackName or PhysicalResourceId must be specified.",
                        ))
                    }
                };
                let resources: Vec<Value> = stack
                    .resources
                    .values()
                    .filter(|x| {
                        r.logical_resource_id
                            .as_deref()
                            .is_none_or(|l| l == x.logical_id)
                    })
                    .map(|x| resource_out(stack, x, "Timestamp"))
                    .collect();
                Ok(json!({"StackResources": resources}))
            }
            Request::DescribeStackResource(r) => {
                let world = self.store.view(account);
                let stack = find(&world, region, &r.stack_name)?;
                let x = stack.resources.get(&r.logical_resource_id).ok_or_else(|| {
                    validation(format!(
                        "Resource {} does not exist for stack {}",
                        r.logical_resource_id, r.stack_name
                    ))
                })?;
                Ok(json!({"StackResourceDetail": resource_out(stack, x, "LastUpdatedTimestamp")}))
            }
            Request::ListStackResources(r) => {
                let world = self.store.view(account);
                let stack = find(&world, region, &r.stack_name)?;
                let summaries: Vec<Value> = stack
                    .resources
                    .values()
                    .map(|x| {
                        let mut v = resource_out(stack, x, "LastUpdatedTimestamp");
                        if let Some(m) = v.as_object_mut() {
                            m.remove("StackName");
                            m.remove("StackId");
                        }
                        v
                    })
                    .collect();
                Ok(json!({"StackResourceSummaries": summaries}))
            }
            Request::GetTemplate(r) => {
                let world = self.store.view(account);
                let name = r
                    .stack_name
                    .as_deref()
                    .ok_or_else(|| validation("StackName must be specified."))?;
                let stack = find(&world, region, name)?;
                Ok(
                    json!({"TemplateBody": stack.template_body, "StagesAvailable": ["Original", "Processed"]}),
                )
            }
            Request::DeleteStack(r) => self.delete_stack(region, account, &r.stack_name),
            Request::ListStacks(r) => {
                let world = self.store.view(account);
                let wanted = r.stack_status_filter.unwrap_or_default();
                let summaries: Vec<Value> = stacks_in(&world, region)
                    .filter(|s| wanted.is_empty() || wanted.iter().any(|w| w == s.status.as_str()))
                    .map(|s| {
                        let mut v = json!({
                            "StackId": s.arn, "StackName": s.name, "CreationTime": s.creation_time,
                            "StackStatus": s.status.as_str(),
                        });
                        if let Some(d) = &s.description {
                            v["TemplateDescription"] = json!(d);
                        }
                        if let Some(t) = &s.deletion_time {
                            v["DeletionTime"] = json!(t);
                        }
                        if let Some(reason) = &s.status_reason {
                            v["StackStatusReason"] = json!(reason);
                        }
                        v
                    })
                    .collect();
                Ok(json!({"StackSummaries": summaries}))
            }
        }
    }
}

/// The account's stacks in a region, deleted ones too.
fn stacks_in<'w>(world: &'w World, region: &str) -> impl Iterator<Item = &'w Stack> {
    let region = region.to_string();
    world
        .cfn_stacks
        .values()
        .map(|s| s.as_ref())
        .filter(move |s| s.region == region)
}

/// A stack by ARN (deleted ones too), or by name (the live one).
fn find<'w>(world: &'w World, region: &str, name_or_id: &str) -> AwsResult<&'w Stack> {
    let found = if name_or_id.starts_with("arn:") {
        world.cfn_stacks.get(name_or_id).map(|s| s.as_ref())
    } else {
        stacks_in(world, region)
            .find(|s| s.name == name_or_id && s.status != StackStatus::DeleteComplete)
    };
    found.ok_or_else(|| validation(format!("Stack with id {name_or_id} does not exist")))
}

fn stack_out(s: &Stack) -> Value {
    let parameters: Vec<Value> = s
        .parameters
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::Array(items) => items
                    .iter()
                    .filter_map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                other => cove_cfn::intrinsics::text(other).unwrap_or_default(),
            };
            json!({"ParameterKey": k, "ParameterValue": text})
        })
        .collect();
    let outputs: Vec<Value> = s
        .outputs
        .iter()
        .map(|(k, v, d)| {
            let mut o = json!({"OutputKey": k, "OutputValue": v});
            if let Some(d) = d {
                o["Description"] = json!(d);
            }
            o
        })
        .collect();
    let tags: Vec<Value> = s
        .tags
        .iter()
        .map(|(k, v)| json!({"Key": k, "Value": v}))
        .collect();
    let mut out = json!({
        "StackId": s.arn, "StackName": s.name, "CreationTime": s.creation_time,
        "StackStatus": s.status.as_str(), "DisableRollback": s.disable_rollback,
        "Parameters": parameters, "Outputs": outputs, "Tags": tags, "Capabilities": s.capabilities,
        "EnableTerminationProtection": false,
        "DriftInformation": {"StackDriftStatus": "NOT_CHECKED"},
    });
    for (key, v) in [
        ("Description", &s.description),
        ("StackStatusReason", &s.status_reason),
        ("LastUpdatedTime", &s.last_updated),
        ("DeletionTime", &s.deletion_time),
    ] {
        if let Some(v) = v {
            out[key] = json!(v);
        }
    }
    out
}

fn resource_out(stack: &Stack, r: &cove_model::cfn::StackResource, time_key: &str) -> Value {
    let mut v = json!({
        "StackName": stack.name, "StackId": stack.arn, "LogicalResourceId": r.logical_id,
        "ResourceType": r.resource_type, "ResourceStatus": r.status.as_str(), time_key: r.last_updated,
        "DriftInformation": {"StackResourceDriftStatus": "NOT_CHECKED"},
    });
    if let Some(p) = &r.physical_id {
        v["PhysicalResourceId"] = json!(p);
    }
    if let Some(reason) = &r.status_reason {
        v["ResourceStatusReason"] = json!(reason);
    }
    v
}

impl CloudFormationService {
    fn create_stack(&self, region: &str, account: &str, r: &CreateStackInput) -> AwsResult<Value> {
        let body = r
            .template_body
            .clone()
            .ok_or_else(|| match r.template_url {
                Some(_) => validation(
                    "Cove reads templates from TemplateBody; TemplateURL is not supported yet.",
                ),
                None => validation("Either Template URL or Template Body must be specified."),
            })?;
        let template = cove_cfn::parse::parse_template(&body).map_err(validation)?;
        let summary = summarize(&template).map_err(validation)?;
        let unsupported: Vec<&str> = summary
            .resource_types
            .iter()
            .map(String::as_str)
            .filter(|t| !providers::SUPPORTED.contains(t))
            .collect();
        if !unsupported.is_empty() {
            return Err(validation(format!(
                "Template format error: Unrecognized resource types: [{}]",
                unsupported.join(", ")
            )));
        }
        let given_caps = r.capabilities.clone().unwrap_or_default();
        if let Some(missing) = summary
            .capabilities
            .iter()
            .find(|c| !given_caps.contains(c))
        {
            return Err(AwsError::client(
                "InsufficientCapabilitiesException",
                format!("Requires capabilities : [{missing}]"),
            ));
        }
        let world = self.store.view(account);
        let given: BTreeMap<String, String> = r
            .parameters
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.parameter_key.clone()?,
                    p.parameter_value.clone().unwrap_or_default(),
                ))
            })
            .collect();
        let exists = |kind: &str, v: &str| match kind {
            "AWS::EC2::VPC::Id" => world.vpcs.contains_key(v),
            "AWS::EC2::Subnet::Id" => world.subnets.contains_key(v),
            "AWS::EC2::SecurityGroup::Id" => world.security_groups.contains_key(v),
            _ => true,
        };
        let id = format!(
            "{}-{}-{}-{}-{}",
            random_string(b"0123456789abcdef", 8),
            random_string(b"0123456789abcdef", 4),
            random_string(b"0123456789abcdef", 4),
            random_string(b"0123456789abcdef", 4),
            random_string(b"0123456789abcdef", 12)
        );
        let arn = Stack::arn_of(region, account, &r.stack_name, &id);
        let mut parameters =
            cove_cfn::parameters::resolve(&template, &given, &exists).map_err(validation)?;
        parameters.extend(cove_cfn::parameters::pseudo_parameters(
            account,
            region,
            &r.stack_name,
            &arn,
        ));
        let no_resources = deployer::StackLookups(&Stack::placeholder());
        let conditions = cove_cfn::intrinsics::conditions(
            &template,
            &cove_cfn::intrinsics::Context {
                parameters: &parameters,
                mappings: template.get("Mappings").unwrap_or(&Value::Null),
                conditions: &BTreeMap::new(),
                region,
                lookups: &no_resources,
            },
        )
        .map_err(validation)?;
        let disable_rollback =
            r.disable_rollback.unwrap_or(false) || r.on_failure.as_deref() == Some("DO_NOTHING");
        let now = now_rfc3339();
        let mut stack = Stack {
            arn: arn.clone(),
            name: r.stack_name.clone(),
            region: region.into(),
            account_id: account.into(),
            description: summary.description.clone(),
            template_body: body,
            template,
            parameters,
            conditions,
            status: StackStatus::CreateInProgress,
            status_reason: Some("User Initiated".into()),
            disable_rollback,
            capabilities: given_caps,
            tags: r
                .tags
                .iter()
                .flatten()
                .map(|t| (t.key.clone(), t.value.clone()))
                .collect(),
            creation_time: now,
            last_updated: None,
            deletion_time: None,
            resources: BTreeMap::new(),
            events: Vec::new(),
            outputs: Vec::new(),
        };
        stack.record(deployer::event(
            &stack.name,
            Some(&arn),
            "AWS::CloudFormation::Stack",
            "CREATE_IN_PROGRESS",
            Some("User Initiated"),
        ));
        self.store.write_as(account, |tx| {
            let taken = tx.world.cfn_stacks.values().any(|s| {
                s.region == stack.region
                    && s.name == stack.name
                    && s.status != StackStatus::DeleteComplete
            });
            if taken {
                return Err(AwsError::client(
                    "AlreadyExistsException",
                    format!("Stack [{}] already exists", stack.name),
                ));
            }
            tx.put(stack);
            Ok(())
        })?;
        Ok(json!({"StackId": arn}))
    }

    fn delete_stack(&self, region: &str, account: &str, name: &str) -> AwsResult<Value> {
        self.store.write_as(account, |tx| {
            // Deleting a stack that does not exist succeeds, as on AWS.
            let Ok(found) = find(&tx.world, region, name) else {
                return Ok(json!({}));
            };
            if matches!(
                found.status,
                StackStatus::DeleteComplete | StackStatus::DeleteInProgress
            ) {
                return Ok(json!({}));
            }
            if found.status.in_progress() {
                return Err(validation(format!(
                    "Stack [{}] cannot be deleted while in status {}",
                    found.name,
                    found.status.as_str()
                )));
            }
            let mut s = found.clone();
            s.status = StackStatus::DeleteInProgress;
            s.status_reason = Some("User Initiated".into());
            let ev = deployer::event(
                &s.name,
                Some(&s.arn),
                "AWS::CloudFormation::Stack",
                "DELETE_IN_PROGRESS",
                Some("User Initiated"),
            );
            s.record(ev);
            tx.put(s);
            Ok(json!({}))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(operation: &str, input: Value) -> AwsResult<Value> {
        let ctx = RequestContext::internal(
            operation,
            "us-east-1",
            "123456789012",
            "arn:aws:iam::123456789012:root",
            "AKID",
        );
        CloudFormationService::new(Arc::new(Store::in_memory().unwrap())).handle(&ctx, input)
    }

    #[test]
    fn validate_and_summarise_a_template_body() {
        let body = "Parameters:\n  Env: {Type: String, Default: dev}\nResources:\n  Vpc: {Type: AWS::EC2::VPC, Properties: {CidrBlock: 10.0.0.0/16}}\n";
        let v = call("ValidateTemplate", json!({"TemplateBody": body})).unwrap();
        assert_eq!(
            v["Parameters"][0],
            json!({"ParameterKey": "Env", "DefaultValue": "dev", "NoEcho": false})
        );
        let s = call("GetTemplateSummary", json!({"TemplateBody": body})).unwrap();
        assert_eq!(s["ResourceTypes"], json!(["AWS::EC2::VPC"]));
        assert_eq!(s["Parameters"][0]["ParameterType"], "String");
    }

    #[test]
    fn errors_are_validation_errors_with_cloudformations_words() {
        let e = call("ValidateTemplate", json!({})).unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            (
                "ValidationError",
                "Either Template URL or Template Body must be specified."
            )
        );
        let e = call(
            "ValidateTemplate",
            json!({"TemplateBody": "Resources: {A: {Type: T, Properties: {X: !Ref B}}}"}),
        )
        .unwrap_err();
        assert!(
            e.message.contains("Unresolved resource dependencies [B]"),
            "{}",
            e.message
        );
        let e = call("GetTemplateSummary", json!({"StackName": "net"})).unwrap_err();
        assert_eq!(e.message, "Stack with id net does not exist");
        assert_eq!(
            call("UpdateStack", json!({})).unwrap_err().code,
            "InvalidAction"
        );
    }
}
