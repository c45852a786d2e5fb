//! The CloudFormation API (query protocol), as far as Cove serves it:
//! `ValidateTemplate` and `GetTemplateSummary` over a template body, with
//! the template engine of `cove-cfn`. Stacks are not served yet
//! (docs/cloudformation.md).

use cove_cfn::summary::{summarize, DeclaredParameter, Summary};
use cove_model::{AwsError, AwsResult};
use cove_shapes::cloudformation::Request;
use cove_wire::{model::ServiceModel, Protocol, RequestContext, Service};
use serde_json::{json, Value};

#[derive(Default)]
pub struct CloudFormationService;

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
        match Request::parse(&ctx.operation, &input) {
            Some(Ok(Request::ValidateTemplate(r))) => {
                let t = template_of(r.template_body.as_deref(), r.template_url.as_deref())?;
                Ok(validate_template(&summarize(&t).map_err(validation)?))
            }
            Some(Ok(Request::GetTemplateSummary(r))) => {
                if let Some(stack) = r.stack_name.as_deref().or(r.stack_set_name.as_deref()) {
                    // No stack exists yet: Cove does not create them.
                    return Err(validation(format!("Stack with id {stack} does not exist")));
                }
                let t = template_of(r.template_body.as_deref(), r.template_url.as_deref())?;
                Ok(template_summary(&summarize(&t).map_err(validation)?))
            }
            Some(Err(e)) => Err(validation(e.to_string())),
            None => Err(AwsError::client(
                "InvalidAction",
                format!(
                    "Could not find operation {} for version 2010-05-15",
                    ctx.operation
                ),
            )),
        }
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
        CloudFormationService.handle(&ctx, input)
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
            call("CreateStack", json!({})).unwrap_err().code,
            "InvalidAction"
        );
    }
}
