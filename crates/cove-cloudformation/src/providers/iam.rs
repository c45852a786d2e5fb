//! IAM roles and their policies, stored by Cove's IAM (and enforced by it
//! under `--iam enforce`): `Role` (with inline `Policies` and
//! `ManagedPolicyArns`), `Policy` (inline, on roles) and `ManagedPolicy`.

use super::{created, document, need, s, strings, tag_list, Api, Created, Naming};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

fn iam(api: &dyn Api, operation: &str, input: Value) -> Result<Value, String> {
    super::call(api, "iam", operation, input)
}

pub fn create(
    api: &dyn Api,
    kind: &str,
    props: &Map<String, Value>,
    naming: &Naming,
) -> Result<Created, String> {
    match kind {
        "AWS::IAM::Role" => {
            let name = s(props, "RoleName").unwrap_or_else(|| super::generated_name(kind, naming));
            let mut input = json!({
                "RoleName": name,
                "AssumeRolePolicyDocument": document(props, "AssumeRolePolicyDocument")?,
                "Path": s(props, "Path").unwrap_or_else(|| "/".into()),
            });
            for key in ["Description", "MaxSessionDuration", "PermissionsBoundary"] {
                if let Some(v) = s(props, key) {
                    input[key] = json!(v);
                }
            }
            let tags = tag_list(props);
            if !tags.is_empty() {
                input["Tags"] = json!(tags);
            }
            let reply = iam(api, "CreateRole", input)?;
            let role = &reply["Role"];
            for policy in props
                .get("Policies")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
            {
                iam(
                    api,
                    "PutRolePolicy",
                    json!({"RoleName": name, "PolicyName": need(policy, "PolicyName")?, "PolicyDocument": document(policy, "PolicyDocument")?}),
                )?;
            }
            for arn in strings(props, "ManagedPolicyArns") {
                iam(
                    api,
                    "AttachRolePolicy",
                    json!({"RoleName": name, "PolicyArn": arn}),
                )?;
            }
            Ok(created(
                name.clone(),
                &[
                    ("Arn", role["Arn"].clone()),
                    ("RoleId", role["RoleId"].clone()),
                ],
            ))
        }
        "AWS::IAM::Policy" => {
            if !strings(props, "Users").is_empty() || !strings(props, "Groups").is_empty() {
                return Err("Cove attaches AWS::IAM::Policy to Roles only (it has no IAM users' or groups' inline policies)".into());
            }
            let name = need(props, "PolicyName")?;
            let doc = document(props, "PolicyDocument")?;
            let roles = strings(props, "Roles");
            for role in &roles {
                iam(
                    api,
                    "PutRolePolicy",
                    json!({"RoleName": role, "PolicyName": name, "PolicyDocument": doc}),
                )?;
            }
            Ok(created(
                naming.generate(64, false),
                &[("PolicyName", json!(name)), ("Roles", json!(roles))],
            ))
        }
        "AWS::IAM::ManagedPolicy" => {
            let name = s(props, "ManagedPolicyName").unwrap_or_else(|| naming.generate(128, false));
            let mut input = json!({
                "PolicyName": name,
                "PolicyDocument": document(props, "PolicyDocument")?,
                "Path": s(props, "Path").unwrap_or_else(|| "/".into()),
            });
            if let Some(d) = s(props, "Description") {
                input["Description"] = json!(d);
            }
            let reply = iam(api, "CreatePolicy", input)?;
            let arn = reply["Policy"]["Arn"]
                .as_str()
                .ok_or("the reply carried no Policy.Arn")?
                .to_string();
            let roles = strings(props, "Roles");
            for role in &roles {
                iam(
                    api,
                    "AttachRolePolicy",
                    json!({"RoleName": role, "PolicyArn": arn}),
                )?;
            }
            Ok(created(
                arn.clone(),
                &[
                    ("PolicyArn", json!(arn)),
                    ("PolicyName", json!(name)),
                    ("Roles", json!(roles)),
                ],
            ))
        }
        other => Err(format!("Cove does not create resources of type {other}")),
    }
}

fn names(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

pub fn delete(
    api: &dyn Api,
    kind: &str,
    physical_id: &str,
    attributes: &BTreeMap<String, Value>,
) -> Result<(), String> {
    let attr = |k: &str| attributes.get(k).cloned().unwrap_or(Value::Null);
    match kind {
        "AWS::IAM::Role" => {
            // IAM deletes no role that still has policies.
            let inline = iam(api, "ListRolePolicies", json!({"RoleName": physical_id}))?;
            for policy in names(&inline["PolicyNames"]) {
                iam(
                    api,
                    "DeleteRolePolicy",
                    json!({"RoleName": physical_id, "PolicyName": policy}),
                )?;
            }
            let attached = iam(
                api,
                "ListAttachedRolePolicies",
                json!({"RoleName": physical_id}),
            )?;
            for policy in attached["AttachedPolicies"]
                .as_array()
                .into_iter()
                .flatten()
            {
                iam(
                    api,
                    "DetachRolePolicy",
                    json!({"RoleName": physical_id, "PolicyArn": policy["PolicyArn"]}),
                )?;
            }
            iam(api, "DeleteRole", json!({"RoleName": physical_id})).map(|_| ())
        }
        "AWS::IAM::Policy" => {
            let name = attr("PolicyName");
            for role in names(&attr("Roles")) {
                match iam(
                    api,
                    "DeleteRolePolicy",
                    json!({"RoleName": role, "PolicyName": name}),
                ) {
                    Err(e) if super::is_gone(&e) => {}
                    other => {
                        other?;
                    }
                }
            }
            Ok(())
        }
        "AWS::IAM::ManagedPolicy" => {
            for role in names(&attr("Roles")) {
                match iam(
                    api,
                    "DetachRolePolicy",
                    json!({"RoleName": role, "PolicyArn": physical_id}),
                ) {
                    Err(e) if super::is_gone(&e) => {}
                    other => {
                        other?;
                    }
                }
            }
            iam(api, "DeletePolicy", json!({"PolicyArn": physical_id})).map(|_| ())
        }
        other => Err(format!("Cove does not delete resources of type {other}")),
    }
}

pub fn updatable(kind: &str) -> &'static [&'static str] {
    match kind {
        "AWS::IAM::Role" => &[
            "AssumeRolePolicyDocument",
            "Policies",
            "ManagedPolicyArns",
            "Description",
            "MaxSessionDuration",
        ],
        "AWS::IAM::Policy" => &["PolicyDocument", "Roles"],
        "AWS::IAM::ManagedPolicy" => &["PolicyDocument", "Roles"],
        _ => &[],
    }
}

/// Inline policies by name.
fn inline(props: &Map<String, Value>) -> BTreeMap<String, Map<String, Value>> {
    props
        .get("Policies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .filter_map(|p| Some((s(p, "PolicyName")?, p.clone())))
        .collect()
}

fn ignoring_gone(result: Result<Value, String>) -> Result<(), String> {
    match result {
        Err(e) if super::is_gone(&e) => Ok(()),
        other => other.map(|_| ()),
    }
}

pub fn update(
    api: &dyn Api,
    kind: &str,
    physical_id: &str,
    (old, new): (&Map<String, Value>, &Map<String, Value>),
    changed: &[String],
) -> Result<(), String> {
    for key in changed {
        match (kind, key.as_str()) {
            ("AWS::IAM::Role", "AssumeRolePolicyDocument") => {
                iam(
                    api,
                    "UpdateAssumeRolePolicy",
                    json!({"RoleName": physical_id, "PolicyDocument": document(new, key)?}),
                )?;
            }
            ("AWS::IAM::Role", "Description" | "MaxSessionDuration") => {
                let mut input = json!({"RoleName": physical_id});
                for k in ["Description", "MaxSessionDuration"] {
                    if let Some(v) = s(new, k) {
                        input[k] = json!(v);
                    }
                }
                iam(api, "UpdateRole", input)?;
            }
            ("AWS::IAM::Role", "Policies") => {
                let (before, after) = (inline(old), inline(new));
                for (name, policy) in &after {
                    if before.get(name) != Some(policy) {
                        iam(
                            api,
                            "PutRolePolicy",
                            json!({"RoleName": physical_id, "PolicyName": name, "PolicyDocument": document(policy, "PolicyDocument")?}),
                        )?;
                    }
                }
                for name in before.keys().filter(|n| !after.contains_key(*n)) {
                    ignoring_gone(iam(
                        api,
                        "DeleteRolePolicy",
                        json!({"RoleName": physical_id, "PolicyName": name}),
                    ))?;
                }
            }
            ("AWS::IAM::Role", "ManagedPolicyArns") => {
                let (before, after) = (
                    strings(old, "ManagedPolicyArns"),
                    strings(new, "ManagedPolicyArns"),
                );
                for arn in after.iter().filter(|a| !before.contains(a)) {
                    iam(
                        api,
                        "AttachRolePolicy",
                        json!({"RoleName": physical_id, "PolicyArn": arn}),
                    )?;
                }
                for arn in before.iter().filter(|a| !after.contains(a)) {
                    ignoring_gone(iam(
                        api,
                        "DetachRolePolicy",
                        json!({"RoleName": physical_id, "PolicyArn": arn}),
                    ))?;
                }
            }
            ("AWS::IAM::Policy", _) => {
                let name = need(new, "PolicyName")?;
                let doc = document(new, "PolicyDocument")?;
                let (before, after) = (strings(old, "Roles"), strings(new, "Roles"));
                for role in &after {
                    iam(
                        api,
                        "PutRolePolicy",
                        json!({"RoleName": role, "PolicyName": name, "PolicyDocument": doc}),
                    )?;
                }
                for role in before.iter().filter(|r| !after.contains(r)) {
                    ignoring_gone(iam(
                        api,
                        "DeleteRolePolicy",
                        json!({"RoleName": role, "PolicyName": name}),
                    ))?;
                }
                break;
            }
            ("AWS::IAM::ManagedPolicy", "PolicyDocument") => {
                iam(
                    api,
                    "CreatePolicyVersion",
                    json!({"PolicyArn": physical_id, "PolicyDocument": document(new, key)?, "SetAsDefault": true}),
                )?;
            }
            ("AWS::IAM::ManagedPolicy", "Roles") => {
                let (before, after) = (strings(old, "Roles"), strings(new, "Roles"));
                for role in after.iter().filter(|r| !before.contains(r)) {
                    iam(
                        api,
                        "AttachRolePolicy",
                        json!({"RoleName": role, "PolicyArn": physical_id}),
                    )?;
                }
                for role in before.iter().filter(|r| !after.contains(r)) {
                    ignoring_gone(iam(
                        api,
                        "DetachRolePolicy",
                        json!({"RoleName": role, "PolicyArn": physical_id}),
                    ))?;
                }
            }
            (kind, key) => return Err(format!("Cove cannot update {key} of {kind} in place")),
        }
    }
    Ok(())
}

/// The attributes an updated resource answers to `Fn::GetAtt`: a policy's
/// roles are kept so that its delete finds them.
pub fn attributes_after_update(
    kind: &str,
    new: &Map<String, Value>,
    attributes: &BTreeMap<String, Value>,
) -> BTreeMap<String, Value> {
    let mut out = attributes.clone();
    if matches!(kind, "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy") {
        out.insert("Roles".into(), json!(strings(new, "Roles")));
    }
    out
}
