//! The CloudFormation API (query protocol), as far as Cove serves it:
//! `ValidateTemplate` and `GetTemplateSummary` over a template body, with
//! the template engine of `cove-cfn`, and stacks of the resource types of
//! [`providers`]: `CreateStack`, `UpdateStack` and executed change sets
//! store the stack's new version and the [`deployer`] applies it;
//! `DeleteStack` the same in reverse (docs/cloudformation.md).

pub mod changes;
pub mod deployer;
pub mod providers;

use cove_cfn::summary::{summarize, DeclaredParameter, Summary};
use cove_model::cfn::{ChangeSet, Stack, StackCaller, StackStatus, StackVersion};
use cove_model::ids::{now_rfc3339, random_string};
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_shapes::cloudformation::*;
use cove_store::Store;
use cove_wire::{model::ServiceModel, Protocol, RequestContext, Service};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Reads an object of Cove's S3 as an account: `(account, region, bucket,
/// key, at most so many bytes)` → its text, `None` when it is larger (and
/// then not read).
pub type TemplateReader =
    Arc<dyn Fn(&str, &str, &str, &str, usize) -> AwsResult<Option<String>> + Send + Sync>;

pub struct CloudFormationService {
    store: Arc<Store>,
    /// Where `TemplateURL`s are read; `None`: they are refused.
    templates: Option<TemplateReader>,
}

impl CloudFormationService {
    pub fn new(store: Arc<Store>) -> CloudFormationService {
        CloudFormationService {
            store,
            templates: None,
        }
    }

    /// Reads `TemplateURL`s (S3 URLs of Cove's S3) with `reader`.
    pub fn reading_templates_with(mut self, reader: TemplateReader) -> CloudFormationService {
        self.templates = Some(reader);
        self
    }

    /// The text of the template at `url`, read as `account`.
    fn read_template(&self, account: &str, region: &str, url: &str) -> AwsResult<String> {
        let (bucket, key) =
            s3_location(url).ok_or_else(|| validation("TemplateURL must be a supported URL."))?;
        let reader = self
            .templates
            .as_ref()
            .ok_or_else(|| validation("TemplateURL must be a supported URL."))?;
        reader(account, region, &bucket, &key, MAX_TEMPLATE_URL_BYTES)
            .map_err(|e| validation(format!("S3 error: {}", e.message)))?
            .ok_or_else(|| {
                validation(format!(
                    "Template may not exceed {MAX_TEMPLATE_URL_BYTES} bytes in size."
                ))
            })
    }

    /// The template body of a call: given, read from its URL, or the
    /// stack's own (`UsePreviousTemplate`).
    fn body_of(
        &self,
        (account, region): (&str, &str),
        (body, url): (Option<&String>, Option<&String>),
        use_previous: Option<bool>,
        stack: Option<&Stack>,
    ) -> AwsResult<String> {
        match (body, url, use_previous.unwrap_or(false), stack) {
            (Some(_), _, true, _) | (_, Some(_), true, _) => Err(validation(
                "You cannot specify both usePreviousTemplate and Template Body/Template URL",
            )),
            (None, None, true, Some(stack)) => Ok(stack.template_body.clone()),
            (None, None, true, None) => Err(validation(
                "Cannot use previous template: the stack has none",
            )),
            (Some(_), Some(_), false, _) => Err(validation(
                "Specify exactly one of TemplateBody and TemplateURL.",
            )),
            (Some(body), None, false, _) => Ok(body.clone()),
            (None, Some(url), false, _) => self.read_template(account, region, url),
            (None, None, false, _) => Err(validation(
                "Either Template URL or Template Body must be specified.",
            )),
        }
    }

    /// The parsed template of a call that takes a body or a URL.
    fn template_of(
        &self,
        (account, region): (&str, &str),
        body: Option<&String>,
        url: Option<&String>,
    ) -> AwsResult<Value> {
        let body = self.body_of((account, region), (body, url), None, None)?;
        cove_cfn::parse::parse_template(&body).map_err(validation)
    }
}

/// What CloudFormation reads from a `TemplateURL` at most.
const MAX_TEMPLATE_URL_BYTES: usize = 1_000_000;

/// The bucket and key a `TemplateURL` names: a virtual-hosted S3 URL
/// (`https://bucket.s3.region.amazonaws.com/key`), or a path-style one
/// (`https://s3.amazonaws.com/bucket/key`, or Cove's own endpoint, which
/// is what `aws cloudformation deploy --s3-bucket` sends with
/// `--endpoint-url`).
pub fn s3_location(url: &str) -> Option<(String, String)> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let (host, path) = rest.split_once('/')?;
    let host = host.split(':').next()?;
    let path = path.split(['?', '#']).next()?;
    let virtual_hosted = Some(host)
        .filter(|h| h.ends_with(".amazonaws.com"))
        .and_then(|h| h.find(".s3.").or_else(|| h.find(".s3-")).map(|i| &h[..i]))
        .filter(|bucket| !bucket.is_empty());
    let (bucket, key) = match virtual_hosted {
        Some(bucket) => (bucket, path),
        None => path.split_once('/')?,
    };
    let key = percent_decode(key)?;
    (!bucket.is_empty() && !key.is_empty()).then(|| (bucket.to_string(), key))
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

fn validation(message: impl Into<String>) -> AwsError {
    AwsError::client("ValidationError", message.into())
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
        let caller = StackCaller {
            arn: ctx.principal.arn.clone(),
            access_key: ctx.principal.access_key.clone(),
        };
        match request {
            Request::ValidateTemplate(r) => {
                let t = self.template_of(
                    (account, region),
                    r.template_body.as_ref(),
                    r.template_url.as_ref(),
                )?;
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
                let t = self.template_of(
                    (account, region),
                    r.template_body.as_ref(),
                    r.template_url.as_ref(),
                )?;
                Ok(template_summary(&summarize(&t).map_err(validation)?))
            }
            Request::CreateStack(r) => self.create_stack(region, account, &r, caller),
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
            Request::DeleteStack(r) => self.delete_stack(region, account, &r.stack_name, caller),
            Request::UpdateStack(r) => self.update_stack(region, account, &r, caller),
            Request::CreateChangeSet(r) => self.create_change_set(region, account, &r),
            Request::DescribeChangeSet(r) => {
                let world = self.store.view(account);
                let (stack, set) =
                    find_change_set(&world, region, r.stack_name.as_deref(), &r.change_set_name)?;
                Ok(change_set_out(stack, set))
            }
            Request::ListChangeSets(r) => {
                let world = self.store.view(account);
                let stack = find(&world, region, &r.stack_name)?;
                let summaries: Vec<Value> = stack
                    .change_sets
                    .iter()
                    .map(|c| {
                        let mut v = json!({
                            "StackId": stack.arn, "StackName": stack.name, "ChangeSetId": c.arn,
                            "ChangeSetName": c.name, "ExecutionStatus": c.execution_status,
                            "Status": c.status, "CreationTime": c.creation_time,
                            "IncludeNestedStacks": false,
                        });
                        if let Some(reason) = &c.status_reason {
                            v["StatusReason"] = json!(reason);
                        }
                        if let Some(d) = &c.description {
                            v["Description"] = json!(d);
                        }
                        v
                    })
                    .collect();
                Ok(json!({"Summaries": summaries}))
            }
            Request::ExecuteChangeSet(r) => self.execute_change_set(region, account, &r, caller),
            Request::DeleteChangeSet(r) => self.store.write_as(account, |tx| {
                let (stack, set) = find_change_set(
                    &tx.world,
                    region,
                    r.stack_name.as_deref(),
                    &r.change_set_name,
                )?;
                let (mut stack, arn) = (stack.clone(), set.arn.clone());
                stack.change_sets.retain(|c| c.arn != arn);
                tx.put(stack);
                Ok(json!({}))
            }),
            Request::UpdateTerminationProtection(r) => self.store.write_as(account, |tx| {
                let mut stack = find(&tx.world, region, &r.stack_name)?.clone();
                stack.termination_protection = r.enable_termination_protection;
                let arn = stack.arn.clone();
                tx.put(stack);
                Ok(json!({"StackId": arn}))
            }),
            Request::ListExports(_) => {
                let world = self.store.view(account);
                let exports: Vec<Value> = exports_in(&world, account, region)
                    .map(|(stack, name, value)| {
                        json!({"ExportingStackId": stack.arn, "Name": name, "Value": value})
                    })
                    .collect();
                Ok(json!({"Exports": exports}))
            }
            Request::ListImports(r) => {
                let world = self.store.view(account);
                if !exports_in(&world, account, region).any(|(_, name, _)| name == r.export_name) {
                    return Err(validation(format!(
                        "Export '{}' is not exported by any stack in this region.",
                        r.export_name
                    )));
                }
                let importers: Vec<&str> = stacks_in(&world, region)
                    .filter(|s| s.status != StackStatus::DeleteComplete)
                    .filter(|s| deployer::imports(&s.template).contains(&r.export_name))
                    .map(|s| s.name.as_str())
                    .collect();
                if importers.is_empty() {
                    return Err(validation(format!(
                        "Export '{}' is not imported by any stack.",
                        r.export_name
                    )));
                }
                Ok(json!({"Imports": importers}))
            }
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

/// A live stack of the region other than `except` whose template imports
/// export `name`.
pub(crate) fn importer_of<'w>(
    world: &'w World,
    region: &str,
    except: &str,
    name: &str,
) -> Option<&'w Stack> {
    stacks_in(world, region).find(|s| {
        s.status != StackStatus::DeleteComplete
            && s.arn != except
            && deployer::imports(&s.template).contains(name)
    })
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
        .map(|(k, v)| json!({"ParameterKey": k, "ParameterValue": parameter_text(v)}))
        .collect();
    let outputs: Vec<Value> = s
        .outputs
        .iter()
        .map(|(k, v, d)| {
            let mut o = json!({"OutputKey": k, "OutputValue": v});
            if let Some(d) = d {
                o["Description"] = json!(d);
            }
            if let Some(name) = s.exports.get(k) {
                o["ExportName"] = json!(name);
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
        "EnableTerminationProtection": s.termination_protection,
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

/// A parameter's value as the API shows it (lists joined by commas).
fn parameter_text(v: &Value) -> String {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str())
            .collect::<Vec<_>>()
            .join(","),
        other => cove_cfn::intrinsics::text(other).unwrap_or_default(),
    }
}

/// The values a call gives its parameters; `UsePreviousValue` takes the
/// stack's current one.
fn given_parameters(
    parameters: Option<&Vec<Parameter>>,
    stack: Option<&Stack>,
) -> AwsResult<BTreeMap<String, String>> {
    let mut given = BTreeMap::new();
    for p in parameters.into_iter().flatten() {
        let Some(key) = p.parameter_key.clone() else {
            continue;
        };
        let value = if p.use_previous_value == Some(true) {
            if p.parameter_value.is_some() {
                return Err(validation(format!(
                    "Invalid input for parameter key {key}. Cannot specify usePreviousValue as true and non empty value for a parameter"
                )));
            }
            stack
                .and_then(|s| s.parameters.get(&key))
                .map(parameter_text)
                .ok_or_else(|| {
                    validation(format!(
                        "Invalid input for parameter key {key}. Cannot specify usePreviousValue as true for a parameter key not in the previous template"
                    ))
                })?
        } else {
            p.parameter_value.clone().unwrap_or_default()
        };
        given.insert(key, value);
    }
    Ok(given)
}

/// A template and parameters checked as CloudFormation checks them before
/// a stack is made or updated from them: the version the deployer applies.
fn prepare(
    world: &World,
    (region, account): (&str, &str),
    (stack_name, arn): (&str, &str),
    body: String,
    given: &BTreeMap<String, String>,
    capabilities: &[String],
) -> AwsResult<StackVersion> {
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
    if let Some(missing) = summary
        .capabilities
        .iter()
        .find(|c| !capabilities.contains(c))
    {
        return Err(AwsError::client(
            "InsufficientCapabilitiesException",
            format!("Requires capabilities : [{missing}]"),
        ));
    }
    let exists = |kind: &str, v: &str| match kind {
        "AWS::EC2::VPC::Id" => world.vpcs.contains_key(v),
        "AWS::EC2::Subnet::Id" => world.subnets.contains_key(v),
        "AWS::EC2::SecurityGroup::Id" => world.security_groups.contains_key(v),
        _ => true,
    };
    let mut parameters =
        cove_cfn::parameters::resolve(&template, given, &exists).map_err(validation)?;
    parameters.extend(cove_cfn::parameters::pseudo_parameters(
        account, region, stack_name, arn,
    ));
    let no_resources = deployer::StackLookups {
        stack: &Stack::placeholder(),
        world: Some(world),
    };
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
    // An import of an export no stack has fails now, as on AWS.
    for name in deployer::imports(&template) {
        if !exports_in(world, account, region).any(|(_, n, _)| n == name) {
            return Err(validation(format!(
                "No export named {name} found. Rollback requested by user."
            )));
        }
    }
    Ok(StackVersion {
        template_body: body,
        template,
        parameters,
        conditions,
        description: summary.description,
    })
}

/// A new stack id (its ARN's last part).
fn new_id() -> String {
    let hex = |n| random_string(b"0123456789abcdef", n);
    format!("{}-{}-{}-{}-{}", hex(8), hex(4), hex(4), hex(4), hex(12))
}

/// Every export of the region's live stacks: (stack, name, value).
pub(crate) fn exports_in<'w>(
    world: &'w World,
    account: &str,
    region: &str,
) -> impl Iterator<Item = (&'w Stack, &'w str, &'w Value)> {
    let account = account.to_string();
    stacks_in(world, region)
        .filter(move |s| s.status != StackStatus::DeleteComplete && s.account_id == account)
        .flat_map(|s| {
            s.exports.iter().filter_map(move |(key, name)| {
                let (_, value, _) = s.outputs.iter().find(|(k, _, _)| k == key)?;
                Some((s, name.as_str(), value))
            })
        })
}

/// A change set by ARN, or by name within the stack named.
fn find_change_set<'w>(
    world: &'w World,
    region: &str,
    stack_name: Option<&str>,
    name_or_arn: &str,
) -> AwsResult<(&'w Stack, &'w ChangeSet)> {
    let missing = || {
        AwsError::client(
            "ChangeSetNotFound",
            format!("ChangeSet [{name_or_arn}] does not exist"),
        )
    };
    if name_or_arn.starts_with("arn:") {
        return stacks_in(world, region)
            .find_map(|s| {
                s.change_sets
                    .iter()
                    .find(|c| c.arn == name_or_arn)
                    .map(|c| (s, c))
            })
            .ok_or_else(missing);
    }
    let stack_name = stack_name.ok_or_else(|| {
        validation("StackName must be specified if ChangeSetName is not specified as an ARN.")
    })?;
    let stack = find(world, region, stack_name)?;
    let set = stack
        .change_sets
        .iter()
        .find(|c| c.name == name_or_arn)
        .ok_or_else(missing)?;
    Ok((stack, set))
}

fn change_set_out(stack: &Stack, c: &ChangeSet) -> Value {
    let changes: Vec<Value> = c
        .changes
        .iter()
        .map(|x| {
            let mut rc = json!({
                "Action": x.action, "LogicalResourceId": x.logical_id, "ResourceType": x.resource_type,
                "Scope": if x.properties.is_empty() { vec![] } else { vec!["Properties"] },
                "Details": x.properties.iter().map(|p| json!({
                    "Target": {"Attribute": "Properties", "Name": p,
                               "RequiresRecreation": if x.replacement.as_deref() == Some("True") { "Always" } else { "Never" }},
                    "Evaluation": "Static", "ChangeSource": "DirectModification",
                })).collect::<Vec<_>>(),
            });
            if let Some(p) = &x.physical_id {
                rc["PhysicalResourceId"] = json!(p);
            }
            if let Some(r) = &x.replacement {
                rc["Replacement"] = json!(r);
            }
            json!({"Type": "Resource", "ResourceChange": rc})
        })
        .collect();
    let parameters: Vec<Value> = c.version.template["Parameters"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| {
            let v = c.version.parameters.get(k)?;
            Some(json!({"ParameterKey": k, "ParameterValue": parameter_text(v)}))
        })
        .collect();
    let mut out = json!({
        "ChangeSetName": c.name, "ChangeSetId": c.arn, "StackId": stack.arn, "StackName": stack.name,
        "Parameters": parameters, "CreationTime": c.creation_time, "ExecutionStatus": c.execution_status,
        "Status": c.status, "NotificationARNs": [], "Capabilities": c.capabilities, "Tags": [],
        "Changes": changes, "IncludeNestedStacks": false,
    });
    if let Some(reason) = &c.status_reason {
        out["StatusReason"] = json!(reason);
    }
    if let Some(d) = &c.description {
        out["Description"] = json!(d);
    }
    out
}

/// Starts an update of `s` to `next` (the deployer applies it).
fn start_update(s: &mut Stack, next: StackVersion) {
    s.previous = Some(s.version());
    s.adopt(next);
    s.updated.clear();
    s.status = StackStatus::UpdateInProgress;
    s.status_reason = Some("User Initiated".into());
    s.last_updated = Some(now_rfc3339());
    deployer::stack_event(s, "UPDATE_IN_PROGRESS", Some("User Initiated"));
}

fn not_updatable(s: &Stack) -> AwsError {
    validation(format!(
        "Stack:{} is in {} state and can not be updated.",
        s.arn,
        s.status.as_str()
    ))
}

impl CloudFormationService {
    fn create_stack(
        &self,
        region: &str,
        account: &str,
        r: &CreateStackInput,
        caller: StackCaller,
    ) -> AwsResult<Value> {
        let body = self.body_of(
            (account, region),
            (r.template_body.as_ref(), r.template_url.as_ref()),
            None,
            None,
        )?;
        let world = self.store.view(account);
        let given = given_parameters(r.parameters.as_ref(), None)?;
        let arn = Stack::arn_of(region, account, &r.stack_name, &new_id());
        let given_caps = r.capabilities.clone().unwrap_or_default();
        let version = prepare(
            &world,
            (region, account),
            (&r.stack_name, &arn),
            body,
            &given,
            &given_caps,
        )?;
        let disable_rollback =
            r.disable_rollback.unwrap_or(false) || r.on_failure.as_deref() == Some("DO_NOTHING");
        let mut stack = Stack::placeholder();
        stack.arn = arn.clone();
        stack.name = r.stack_name.clone();
        stack.region = region.into();
        stack.account_id = account.into();
        stack.adopt(version);
        stack.status = StackStatus::CreateInProgress;
        stack.status_reason = Some("User Initiated".into());
        stack.disable_rollback = disable_rollback;
        stack.capabilities = given_caps;
        stack.termination_protection = r.enable_termination_protection.unwrap_or(false);
        stack.tags = r
            .tags
            .iter()
            .flatten()
            .map(|t| (t.key.clone(), t.value.clone()))
            .collect();
        stack.creation_time = now_rfc3339();
        stack.caller = Some(caller);
        deployer::stack_event(&mut stack, "CREATE_IN_PROGRESS", Some("User Initiated"));
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

    fn update_stack(
        &self,
        region: &str,
        account: &str,
        r: &UpdateStackInput,
        caller: StackCaller,
    ) -> AwsResult<Value> {
        let world = self.store.view(account);
        let stack = find(&world, region, &r.stack_name)?;
        if !stack.status.updatable() {
            return Err(not_updatable(stack));
        }
        let body = self.body_of(
            (account, region),
            (r.template_body.as_ref(), r.template_url.as_ref()),
            r.use_previous_template,
            Some(stack),
        )?;
        let given = given_parameters(r.parameters.as_ref(), Some(stack))?;
        let caps = r.capabilities.clone().unwrap_or_default();
        let next = prepare(
            &world,
            (region, account),
            (&stack.name, &stack.arn),
            body,
            &given,
            &caps,
        )?;
        if next.template == stack.template && next.parameters == stack.parameters {
            return Err(validation("No updates are to be performed."));
        }
        let arn = stack.arn.clone();
        let tags = r.tags.clone();
        let disable_rollback = r.disable_rollback;
        self.store.write_as(account, |tx| {
            let mut s: Stack = tx.cloned(&arn)?;
            if !s.status.updatable() {
                return Err(not_updatable(&s));
            }
            start_update(&mut s, next);
            s.caller = Some(caller);
            s.capabilities = caps;
            if let Some(tags) = tags {
                s.tags = tags.into_iter().map(|t| (t.key, t.value)).collect();
            }
            if let Some(d) = disable_rollback {
                s.disable_rollback = d;
            }
            for c in &mut s.change_sets {
                c.execution_status = "OBSOLETE".into();
            }
            tx.put(s);
            Ok(())
        })?;
        Ok(json!({"StackId": arn}))
    }

    fn create_change_set(
        &self,
        region: &str,
        account: &str,
        r: &CreateChangeSetInput,
    ) -> AwsResult<Value> {
        let world = self.store.view(account);
        let creating = r.change_set_type.as_deref() == Some("CREATE");
        if let Some(kind) = r.change_set_type.as_deref() {
            if kind != "CREATE" && kind != "UPDATE" {
                return Err(validation(format!(
                    "ChangeSetType {kind} is not supported by Cove (CREATE and UPDATE are)"
                )));
            }
        }
        let existing = find(&world, region, &r.stack_name).ok();
        let stack = match (creating, existing) {
            (true, Some(s)) if s.status != StackStatus::ReviewInProgress => {
                return Err(validation(format!(
                    "Stack [{}] already exists and cannot be created again with the changeSet [{}].",
                    r.stack_name, r.change_set_name
                )))
            }
            (true, Some(s)) => s.clone(),
            (true, None) => {
                let mut s = Stack::placeholder();
                s.arn = Stack::arn_of(region, account, &r.stack_name, &new_id());
                s.name = r.stack_name.clone();
                s.region = region.into();
                s.account_id = account.into();
                s.template = json!({"Resources": {}});
                s.status = StackStatus::ReviewInProgress;
                s.status_reason = Some("User Initiated".into());
                s.creation_time = now_rfc3339();
                deployer::stack_event(&mut s, "REVIEW_IN_PROGRESS", Some("User Initiated"));
                s
            }
            (false, None) => {
                return Err(validation(format!(
                    "Stack [{}] does not exist",
                    r.stack_name
                )))
            }
            (false, Some(s)) if !s.status.updatable() => return Err(not_updatable(s)),
            (false, Some(s)) => s.clone(),
        };
        if stack
            .change_sets
            .iter()
            .any(|c| c.name == r.change_set_name)
        {
            return Err(AwsError::client(
                "AlreadyExistsException",
                format!("ChangeSet [{}] already exists", r.change_set_name),
            ));
        }
        let body = self.body_of(
            (account, region),
            (r.template_body.as_ref(), r.template_url.as_ref()),
            r.use_previous_template,
            (!creating).then_some(&stack),
        )?;
        let given = given_parameters(r.parameters.as_ref(), Some(&stack))?;
        let caps = r.capabilities.clone().unwrap_or_default();
        let next = prepare(
            &world,
            (region, account),
            (&stack.name, &stack.arn),
            body,
            &given,
            &caps,
        )?;
        let changes = changes::plan(&world, &stack, &next);
        let unchanged = !creating
            && changes.is_empty()
            && next.parameters == stack.parameters
            && next.template == stack.template;
        let set = ChangeSet {
            arn: format!(
                "arn:aws:cloudformation:{region}:{account}:changeSet/{}/{}",
                r.change_set_name,
                new_id()
            ),
            name: r.change_set_name.clone(),
            description: r.description.clone(),
            kind: if creating { "CREATE" } else { "UPDATE" }.into(),
            status: if unchanged { "FAILED" } else { "CREATE_COMPLETE" }.into(),
            status_reason: unchanged.then(|| {
                "The submitted information didn't contain changes. Submit different information to create a change set.".to_string()
            }),
            execution_status: if unchanged { "UNAVAILABLE" } else { "AVAILABLE" }.into(),
            creation_time: now_rfc3339(),
            version: next,
            capabilities: caps,
            changes,
        };
        let (stack_arn, set_arn) = (stack.arn.clone(), set.arn.clone());
        self.store.write_as(account, |tx| {
            let mut s = match tx.world.cfn_stacks.get(&stack.arn) {
                Some(current) => (**current).clone(),
                None => stack.clone(),
            };
            s.change_sets.push(set);
            tx.put(s);
            Ok(())
        })?;
        Ok(json!({"Id": set_arn, "StackId": stack_arn}))
    }

    fn execute_change_set(
        &self,
        region: &str,
        account: &str,
        r: &ExecuteChangeSetInput,
        caller: StackCaller,
    ) -> AwsResult<Value> {
        self.store.write_as(account, |tx| {
            let (stack, set) = find_change_set(
                &tx.world,
                region,
                r.stack_name.as_deref(),
                &r.change_set_name,
            )?;
            if set.execution_status != "AVAILABLE" {
                return Err(AwsError::client(
                    "InvalidChangeSetStatus",
                    format!(
                        "ChangeSet [{}] cannot be executed in its current status of [{}]",
                        set.arn, set.status
                    ),
                ));
            }
            let mut s = stack.clone();
            let set = set.clone();
            if s.status == StackStatus::ReviewInProgress {
                s.adopt(set.version.clone());
                s.status = StackStatus::CreateInProgress;
                s.status_reason = Some("User Initiated".into());
                s.capabilities = set.capabilities.clone();
                deployer::stack_event(&mut s, "CREATE_IN_PROGRESS", Some("User Initiated"));
            } else if s.status.updatable() {
                start_update(&mut s, set.version.clone());
                s.capabilities = set.capabilities.clone();
            } else {
                return Err(not_updatable(&s));
            }
            if let Some(d) = r.disable_rollback {
                s.disable_rollback = d;
            }
            s.caller = Some(caller);
            for c in &mut s.change_sets {
                c.execution_status = if c.arn == set.arn {
                    "EXECUTE_COMPLETE"
                } else {
                    "OBSOLETE"
                }
                .into();
            }
            tx.put(s);
            Ok(json!({}))
        })
    }

    fn delete_stack(
        &self,
        region: &str,
        account: &str,
        name: &str,
        caller: StackCaller,
    ) -> AwsResult<Value> {
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
            if found.termination_protection {
                return Err(validation(format!(
                    "Stack [{}] cannot be deleted while TerminationProtection is enabled",
                    found.name
                )));
            }
            for name in found.exports.values() {
                if let Some(user) = importer_of(&tx.world, region, &found.arn, name) {
                    return Err(validation(format!(
                        "Export {name} cannot be deleted as it is in use by {}",
                        user.name
                    )));
                }
            }
            let mut s = found.clone();
            s.caller = Some(caller);
            s.status = StackStatus::DeleteInProgress;
            s.status_reason = Some("User Initiated".into());
            deployer::stack_event(&mut s, "DELETE_IN_PROGRESS", Some("User Initiated"));
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
    fn template_urls_name_a_bucket_and_key_in_every_s3_form() {
        let at = |u: &str| s3_location(u).map(|(b, k)| format!("{b} {k}"));
        for (url, want) in [
            ("https://tpl.s3.amazonaws.com/a/b.yaml", "tpl a/b.yaml"),
            (
                "https://tpl.s3.eu-west-1.amazonaws.com/b.yaml?versionId=1",
                "tpl b.yaml",
            ),
            (
                "https://tpl.s3-eu-west-1.amazonaws.com/b.yaml",
                "tpl b.yaml",
            ),
            ("https://s3.amazonaws.com/tpl/dir/b.yaml", "tpl dir/b.yaml"),
            (
                "https://s3.us-east-2.amazonaws.com/tpl/b%20c.yaml",
                "tpl b c.yaml",
            ),
            (
                "http://127.0.0.1:4747/tpl/packaged.template",
                "tpl packaged.template",
            ),
        ] {
            assert_eq!(at(url).as_deref(), Some(want), "{url}");
        }
        for url in [
            "ftp://x/y/z",
            "https://s3.amazonaws.com/tpl",
            "https://x",
            "tpl/key",
            "https://h/b/%zz",
        ] {
            assert_eq!(at(url), None, "{url}");
        }
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
            call("DetectStackDrift", json!({})).unwrap_err().code,
            "InvalidAction"
        );
    }
}
