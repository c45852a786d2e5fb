//! What `ValidateTemplate` and `GetTemplateSummary` answer about a
//! template: its structure checked (sections, resource types, outputs,
//! parameter types, dependencies), its parameters as declared, the
//! capabilities it needs (IAM resources), its resource types.

use serde_json::Value;
use std::collections::BTreeSet;

/// The top-level sections a template may have.
const SECTIONS: [&str; 10] = [
    "AWSTemplateFormatVersion",
    "Description",
    "Metadata",
    "Parameters",
    "Rules",
    "Mappings",
    "Conditions",
    "Transform",
    "Resources",
    "Outputs",
];

/// Resource types whose creation needs `CAPABILITY_IAM`
/// (`CAPABILITY_NAMED_IAM` when they are given a name).
const IAM_TYPES: [(&str, &str); 6] = [
    ("AWS::IAM::Role", "RoleName"),
    ("AWS::IAM::User", "UserName"),
    ("AWS::IAM::Group", "GroupName"),
    ("AWS::IAM::ManagedPolicy", "ManagedPolicyName"),
    ("AWS::IAM::Policy", ""),
    ("AWS::IAM::InstanceProfile", "InstanceProfileName"),
];

/// A declared parameter, as the two calls describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredParameter {
    pub key: String,
    pub kind: String,
    pub default: Option<String>,
    pub no_echo: bool,
    pub description: Option<String>,
    pub allowed_values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    pub description: Option<String>,
    pub version: Option<String>,
    pub parameters: Vec<DeclaredParameter>,
    /// `CAPABILITY_IAM` or `CAPABILITY_NAMED_IAM`, and why.
    pub capabilities: Vec<String>,
    pub capabilities_reason: Option<String>,
    pub resource_types: Vec<String>,
    pub transforms: Vec<String>,
    pub metadata: Option<String>,
}

fn text(v: &Value) -> Option<String> {
    crate::intrinsics::text(v).ok()
}

/// Checks a parsed template's structure as `ValidateTemplate` does and
/// summarises it; the error is its `ValidationError` message.
pub fn summarize(template: &Value) -> Result<Summary, String> {
    let top = template
        .as_object()
        .ok_or("Template format error: unsupported structure.")?;
    let unknown: Vec<&str> = top
        .keys()
        .map(String::as_str)
        .filter(|k| !SECTIONS.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "Template format error: Invalid template property or properties [{}]",
            unknown.join(", ")
        ));
    }
    if let Some(v) = top.get("AWSTemplateFormatVersion") {
        if text(v).as_deref() != Some("2010-09-09") {
            return Err("Template format error: Unsupported template version".into());
        }
    }
    let resources = top
        .get("Resources")
        .and_then(Value::as_object)
        .filter(|r| !r.is_empty())
        .ok_or("Template format error: At least one Resources member must be defined.")?;
    let mut types = BTreeSet::new();
    let mut iam = BTreeSet::new();
    let mut named_iam = false;
    for (id, r) in resources {
        let kind = r.get("Type").and_then(Value::as_str).ok_or_else(|| {
            format!("Template format error: [/Resources/{id}] Every Resources object must contain a Type member.")
        })?;
        types.insert(kind.to_string());
        if let Some((_, name_key)) = IAM_TYPES.iter().find(|(t, _)| *t == kind) {
            iam.insert(kind.to_string());
            if !name_key.is_empty() && r.get("Properties").and_then(|p| p.get(*name_key)).is_some()
            {
                named_iam = true;
            }
        }
    }
    if let Some(outputs) = top.get("Outputs").and_then(Value::as_object) {
        if let Some((id, _)) = outputs.iter().find(|(_, o)| o.get("Value").is_none()) {
            return Err(format!(
                "Template format error: Every Outputs member must contain a Value object, the Outputs member {id} does not"
            ));
        }
    }
    crate::graph::dependencies(template)?;
    crate::parameters::check_declarations(template)?;
    let parameters = top
        .get("Parameters")
        .and_then(Value::as_object)
        .map(|ps| {
            ps.iter()
                .map(|(key, d)| DeclaredParameter {
                    key: key.clone(),
                    kind: d
                        .get("Type")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    default: d.get("Default").and_then(|v| match v {
                        Value::Array(items) => {
                            Some(items.iter().filter_map(text).collect::<Vec<_>>().join(","))
                        }
                        other => text(other),
                    }),
                    no_echo: d
                        .get("NoEcho")
                        .is_some_and(|v| v == &Value::Bool(true) || v == "true"),
                    description: d.get("Description").and_then(text),
                    allowed_values: d
                        .get("AllowedValues")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(text).collect())
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    let (capabilities, capabilities_reason) = if iam.is_empty() {
        (vec![], None)
    } else {
        let cap = if named_iam {
            "CAPABILITY_NAMED_IAM"
        } else {
            "CAPABILITY_IAM"
        };
        let kinds: Vec<String> = iam.into_iter().collect();
        (
            vec![cap.to_string()],
            Some(format!(
                "The following resource(s) require capabilities: [{}]",
                kinds.join(", ")
            )),
        )
    };
    let transforms = match top.get("Transform") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts.iter().filter_map(text).collect(),
        _ => vec![],
    };
    Ok(Summary {
        description: top.get("Description").and_then(text),
        version: top.get("AWSTemplateFormatVersion").and_then(text),
        parameters,
        capabilities,
        capabilities_reason,
        resource_types: types.into_iter().collect(),
        transforms,
        metadata: top.get("Metadata").map(Value::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_template_is_summarised() {
        let t = crate::parse::parse_template(
            r#"
AWSTemplateFormatVersion: "2010-09-09"
Description: private SageMaker network
Parameters:
  Env: {Type: String, Default: dev, AllowedValues: [dev, prod], Description: stage}
  Secret: {Type: String, NoEcho: true}
Resources:
  Vpc: {Type: AWS::EC2::VPC, Properties: {CidrBlock: 10.0.0.0/16}}
  Role:
    Type: AWS::IAM::Role
    Properties:
      RoleName: !Sub "${Env}-jobs"
      AssumeRolePolicyDocument: {}
Outputs:
  VpcId: {Value: !Ref Vpc}
"#,
        )
        .unwrap();
        let s = summarize(&t).unwrap();
        assert_eq!(s.description.as_deref(), Some("private SageMaker network"));
        assert_eq!(s.resource_types, ["AWS::EC2::VPC", "AWS::IAM::Role"]);
        assert_eq!(s.capabilities, ["CAPABILITY_NAMED_IAM"]);
        assert_eq!(
            s.capabilities_reason.as_deref(),
            Some("The following resource(s) require capabilities: [AWS::IAM::Role]")
        );
        assert_eq!(s.parameters[0].key, "Env");
        assert_eq!(s.parameters[0].allowed_values, ["dev", "prod"]);
        assert!(s.parameters[1].no_echo && s.parameters[1].default.is_none());
    }

    #[test]
    fn structural_errors_get_cloudformations_messages() {
        let err = |t: Value| summarize(&t).unwrap_err();
        assert_eq!(
            err(json!({"Resources": {"A": {"Type": "T"}}, "Resource": {}})),
            "Template format error: Invalid template property or properties [Resource]"
        );
        assert_eq!(
            err(json!({"Description": "x"})),
            "Template format error: At least one Resources member must be defined."
        );
        assert_eq!(
            err(json!({"Resources": {"A": {"Properties": {}}}})),
            "Template format error: [/Resources/A] Every Resources object must contain a Type member."
        );
        assert!(err(
            json!({"Resources": {"A": {"Type": "T"}}, "Outputs": {"O": {"Description": "d"}}})
        )
        .starts_with("Template format error: Every Outputs member must contain a Value object"));
        assert!(
            err(json!({"Resources": {"A": {"Type": "T", "Properties": {"X": {"Ref": "B"}}}}}))
                .contains("Unresolved resource dependencies [B]")
        );
        assert!(err(
            json!({"Parameters": {"P": {"Type": "Text"}}, "Resources": {"A": {"Type": "T"}}})
        )
        .contains("Unrecognized parameter type: Text"));
        assert_eq!(
            err(
                json!({"AWSTemplateFormatVersion": "2011-01-01", "Resources": {"A": {"Type": "T"}}})
            ),
            "Template format error: Unsupported template version"
        );
    }
}
