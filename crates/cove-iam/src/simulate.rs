//! `SimulatePrincipalPolicy`: a role's identity policies (inline, attached
//! and any `PolicyInputList` extras) evaluated for each action and resource
//! with IAM's rules. An explicit Deny in any policy wins; otherwise an Allow
//! in any policy allows, if the permissions boundary (when the role has one)
//! allows too; otherwise the answer is an implicit deny. Conditions are
//! evaluated against `ContextEntries` (and the caller's `aws:PrincipalArn`
//! and `aws:PrincipalAccount`); keys they need and do not get are reported
//! as `MissingContextValues`, as IAM does.

use crate::managed::aws_managed;
use crate::{page, parse, role};
use cove_model::policy::{Decision, Kind, Policy, RequestContext};
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_shapes::iam::SimulatePrincipalPolicyRequest;
use serde_json::{json, Value};

/// One policy taking part in a simulation, named as the answer names it.
struct Source {
    id: String,
    kind: &'static str,
    policy: Policy,
}

pub fn simulate_principal_policy(
    w: &World,
    account: &str,
    r: &SimulatePrincipalPolicyRequest,
) -> AwsResult<Value> {
    let (kind, name) = principal_of(&r.policy_source_arn, account)?;
    let (arn, inline, attached, permissions_boundary) = match kind {
        "role" => {
            let x = role(w, account, name)?;
            (
                &x.arn,
                &x.inline_policies,
                &x.attached_policies,
                &x.permissions_boundary,
            )
        }
        _ => {
            let x = crate::users::user(w, account, name)?;
            (
                &x.arn,
                &x.inline_policies,
                &x.attached_policies,
                &x.permissions_boundary,
            )
        }
    };
    let mut sources = Vec::new();
    for (name, doc) in inline {
        sources.push(Source {
            id: name.clone(),
            kind,
            policy: parse(doc, Kind::Identity)?,
        });
    }
    for arn in attached {
        let (id, kind, doc) = match aws_managed(arn) {
            Some(m) => (m.name.to_string(), "aws-managed", m.document.to_string()),
            None => match w.iam_policies.get(arn) {
                Some(p) => (
                    p.name.clone(),
                    "user-managed",
                    p.default_document().unwrap_or_default().to_string(),
                ),
                None => continue,
            },
        };
        sources.push(Source {
            id,
            kind,
            policy: parse(&doc, Kind::Identity)?,
        });
    }
    for (i, doc) in r.policy_input_list.iter().flatten().enumerate() {
        sources.push(Source {
            id: format!("PolicyInputList.{}", i + 1),
            kind: "none",
            policy: parse(doc, Kind::Identity)?,
        });
    }
    let boundary = boundary_of(w, permissions_boundary.as_deref(), r)?;

    let all = ["*".to_string()];
    let resources = match r.resource_arns.as_deref() {
        Some(list) if !list.is_empty() => list,
        _ => &all[..],
    };
    let mut results = Vec::new();
    for action in &r.action_names {
        for resource in resources {
            let mut cx = RequestContext::new(action, resource, arn, account);
            for entry in r.context_entries.iter().flatten() {
                if let (Some(name), Some(values)) =
                    (&entry.context_key_name, &entry.context_key_values)
                {
                    cx.set_all(name, values.clone());
                }
            }
            results.push(evaluate(&sources, boundary.as_ref(), &cx));
        }
    }
    page(
        "EvaluationResults",
        results,
        r.marker.as_deref(),
        r.max_items,
    )
}

/// The kind (`role` or `user`) and name of a role's or user's ARN of this
/// account; IAM groups do not exist in Cove.
fn principal_of<'a>(arn: &'a str, account: &str) -> AwsResult<(&'static str, &'a str)> {
    let invalid = || AwsError::client("InvalidInput", format!("Invalid ARN: {arn}"));
    let rest = arn.strip_prefix("arn:aws:iam::").ok_or_else(invalid)?;
    let (arn_account, resource) = rest.split_once(':').ok_or_else(invalid)?;
    let (kind, path_and_name) = resource.split_once('/').ok_or_else(invalid)?;
    let name = path_and_name.rsplit('/').next().unwrap_or_default();
    if name.is_empty() {
        return Err(invalid());
    }
    let missing = |what: &str| {
        AwsError::new(
            404,
            "NoSuchEntity",
            format!("The {what} with name {name} cannot be found."),
        )
    };
    match kind {
        "role" if arn_account == account => Ok(("role", name)),
        "user" if arn_account == account => Ok(("user", name)),
        "role" => Err(missing("role")),
        "user" => Err(missing("user")),
        "group" => Err(missing("group")),
        _ => Err(invalid()),
    }
}

fn boundary_of(
    w: &World,
    attached: Option<&str>,
    r: &SimulatePrincipalPolicyRequest,
) -> AwsResult<Option<Vec<Policy>>> {
    let mut docs: Vec<String> = r
        .permissions_boundary_policy_input_list
        .clone()
        .unwrap_or_default();
    if docs.is_empty() {
        if let Some(arn) = attached {
            docs.push(crate::managed::default_document(w, arn).unwrap_or_default());
        }
    }
    if docs.is_empty() {
        return Ok(None);
    }
    docs.iter()
        .map(|d| parse(d, Kind::Identity))
        .collect::<AwsResult<Vec<_>>>()
        .map(Some)
}

fn evaluate(sources: &[Source], boundary: Option<&Vec<Policy>>, cx: &RequestContext) -> Value {
    let mut denied_by = Vec::new();
    let mut allowed_by = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for s in sources {
        let (decision, _) = s.policy.evaluate_statements(cx);
        let matched = json!({"SourcePolicyId": s.id, "SourcePolicyType": s.kind});
        match decision {
            Decision::Deny => denied_by.push(matched),
            Decision::Allow => allowed_by.push(matched),
            Decision::NotApplicable => {}
        }
        missing.extend(s.policy.missing_context_keys(cx));
    }
    let boundary_allows = boundary.map(|policies| {
        let decisions: Vec<Decision> = policies.iter().map(|p| p.evaluate(cx)).collect();
        !decisions.contains(&Decision::Deny) && decisions.contains(&Decision::Allow)
    });
    let (decision, matched) = if !denied_by.is_empty() {
        ("explicitDeny", denied_by)
    } else if !allowed_by.is_empty() && boundary_allows != Some(false) {
        ("allowed", allowed_by)
    } else {
        ("implicitDeny", Vec::new())
    };
    missing.sort();
    missing.dedup();
    let mut out = json!({
        "EvalActionName": cx.action,
        "EvalResourceName": cx.resource,
        "EvalDecision": decision,
        "MatchedStatements": matched,
        "MissingContextValues": missing,
    });
    if let Some(allowed) = boundary_allows {
        out["PermissionsBoundaryDecisionDetail"] = json!({"AllowedByPermissionsBoundary": allowed});
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_accounts_roles_and_users_are_simulated() {
        let account = "000000000000";
        assert_eq!(
            principal_of("arn:aws:iam::000000000000:role/service-role/R", account).unwrap(),
            ("role", "R")
        );
        assert_eq!(
            principal_of("arn:aws:iam::000000000000:user/bob", account).unwrap(),
            ("user", "bob")
        );
        let other = principal_of("arn:aws:iam::111111111111:role/R", account).unwrap_err();
        assert_eq!(other.code, "NoSuchEntity");
        let user = principal_of("arn:aws:iam::111111111111:user/bob", account).unwrap_err();
        assert_eq!(user.message, "The user with name bob cannot be found.");
        let bad = principal_of("SageMakerRole", account).unwrap_err();
        assert_eq!(bad.code, "InvalidInput");
    }
}
