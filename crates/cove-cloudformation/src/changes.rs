//! What a new version of a stack would change, resource by resource, as a
//! change set describes it: `Add`, `Remove`, or `Modify` with whether the
//! resource is replaced (`True`), updated in place (`False`), or replaced
//! only if something it refers to is (`Conditional`). The deployer makes
//! the same decisions when it applies the version.

use crate::deployer;
use crate::providers;
use cove_model::cfn::{ResourceChange, Stack, StackVersion};
use cove_model::world::World;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

fn change(
    action: &str,
    id: &str,
    physical: Option<&String>,
    kind: &str,
    replacement: Option<&str>,
    properties: Vec<String>,
) -> ResourceChange {
    ResourceChange {
        action: action.into(),
        logical_id: id.into(),
        physical_id: physical.cloned(),
        resource_type: kind.into(),
        replacement: replacement.map(str::to_string),
        properties,
    }
}

/// The template's own `Properties` of `id`, before evaluation.
fn raw_properties(template: &Value, id: &str) -> Map<String, Value> {
    template["Resources"][id]["Properties"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// The changes `next` makes to `stack`, by logical id.
pub fn plan(world: &World, stack: &Stack, next: &StackVersion) -> Vec<ResourceChange> {
    let mut future = stack.clone();
    future.adopt(next.clone());
    let wanted = deployer::included(&future);
    let mut changes: BTreeMap<String, ResourceChange> = BTreeMap::new();
    for (id, kind) in &wanted {
        let Some(current) = stack
            .resources
            .get(id)
            .filter(|r| r.physical_id.is_some() && r.status.made())
        else {
            changes.insert(id.clone(), change("Add", id, None, kind, None, vec![]));
            continue;
        };
        let physical = current.physical_id.as_ref();
        if &current.resource_type != kind {
            changes.insert(
                id.clone(),
                change("Modify", id, physical, kind, Some("True"), vec![]),
            );
            continue;
        }
        let old = current.properties.as_object().cloned().unwrap_or_default();
        match deployer::properties(world, &future, id) {
            Ok(new) => {
                let changed = providers::changed_properties(&old, &new);
                if !changed.is_empty() {
                    let replaced = providers::needs_replacement(kind, &changed);
                    let replacement = if replaced { "True" } else { "False" };
                    changes.insert(
                        id.clone(),
                        change("Modify", id, physical, kind, Some(replacement), changed),
                    );
                }
            }
            // It refers to something not made yet: what changes is known
            // once that is made.
            Err(_) => {
                let changed = providers::changed_properties(
                    &raw_properties(&stack.template, id),
                    &raw_properties(&next.template, id),
                );
                changes.insert(
                    id.clone(),
                    change("Modify", id, physical, kind, Some("Conditional"), changed),
                );
            }
        }
    }
    // What refers to a resource that is replaced may change with it.
    let deps = cove_cfn::graph::dependencies(&next.template).unwrap_or_default();
    loop {
        let moved: Vec<String> = wanted
            .keys()
            .filter(|id| !changes.contains_key(*id))
            .filter(|id| {
                deps.get(*id).into_iter().flatten().any(|d| {
                    changes.get(d).is_some_and(|c| {
                        c.action == "Add" || c.replacement.as_deref() != Some("False")
                    })
                })
            })
            .cloned()
            .collect();
        if moved.is_empty() {
            break;
        }
        for id in moved {
            let current = &stack.resources[&id];
            changes.insert(
                id.clone(),
                change(
                    "Modify",
                    &id,
                    current.physical_id.as_ref(),
                    &wanted[&id],
                    Some("Conditional"),
                    vec![],
                ),
            );
        }
    }
    for r in stack.resources.values() {
        if !wanted.contains_key(&r.logical_id) && r.physical_id.is_some() {
            changes.insert(
                r.logical_id.clone(),
                change(
                    "Remove",
                    &r.logical_id,
                    r.physical_id.as_ref(),
                    &r.resource_type,
                    None,
                    vec![],
                ),
            );
        }
    }
    changes.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_model::cfn::{ResourceStatus, StackResource};
    use serde_json::json;

    fn made(id: &str, kind: &str, physical: &str, props: Value) -> StackResource {
        StackResource {
            logical_id: id.into(),
            resource_type: kind.into(),
            physical_id: Some(physical.into()),
            status: ResourceStatus::CreateComplete,
            status_reason: None,
            attributes: Default::default(),
            last_updated: String::new(),
            properties: props,
        }
    }

    fn version(resources: Value) -> StackVersion {
        StackVersion {
            template_body: String::new(),
            template: json!({"Resources": resources}),
            parameters: Default::default(),
            conditions: Default::default(),
            description: None,
        }
    }

    #[test]
    fn changes_say_add_remove_and_whether_a_modify_replaces() {
        let mut stack = Stack::placeholder();
        stack.adopt(version(json!({
            "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.0.0.0/16"}},
            "Group": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "a", "VpcId": {"Ref": "Vpc"}}},
            "Rule": {"Type": "AWS::EC2::SecurityGroupIngress", "Properties": {"GroupId": {"Ref": "Group"}, "IpProtocol": "-1"}},
            "Old": {"Type": "AWS::EC2::InternetGateway"},
        })));
        for r in [
            made(
                "Vpc",
                "AWS::EC2::VPC",
                "vpc-1",
                json!({"CidrBlock": "10.0.0.0/16"}),
            ),
            made(
                "Group",
                "AWS::EC2::SecurityGroup",
                "sg-1",
                json!({"GroupDescription": "a", "VpcId": "vpc-1"}),
            ),
            made(
                "Rule",
                "AWS::EC2::SecurityGroupIngress",
                "sgr-1",
                json!({"GroupId": "sg-1", "IpProtocol": "-1"}),
            ),
            made("Old", "AWS::EC2::InternetGateway", "igw-1", json!({})),
        ] {
            stack.resources.insert(r.logical_id.clone(), r);
        }
        let next = version(json!({
            "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.0.0.0/16", "EnableDnsHostnames": true}},
            "Group": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "b", "VpcId": {"Ref": "Vpc"}}},
            "Rule": {"Type": "AWS::EC2::SecurityGroupIngress", "Properties": {"GroupId": {"Ref": "Group"}, "IpProtocol": "-1"}},
            "New": {"Type": "AWS::EC2::RouteTable", "Properties": {"VpcId": {"Ref": "Vpc"}}},
        }));
        let world = World::default();
        let got: Vec<(String, String, Option<String>, Vec<String>)> = plan(&world, &stack, &next)
            .into_iter()
            .map(|c| (c.logical_id, c.action, c.replacement, c.properties))
            .collect();
        let s = |x: &str| x.to_string();
        assert_eq!(
            got,
            vec![
                (
                    s("Group"),
                    s("Modify"),
                    Some(s("True")),
                    vec![s("GroupDescription")]
                ),
                (s("New"), s("Add"), None, vec![]),
                (s("Old"), s("Remove"), None, vec![]),
                // It refers to the group that is replaced.
                (s("Rule"), s("Modify"), Some(s("Conditional")), vec![]),
                (
                    s("Vpc"),
                    s("Modify"),
                    Some(s("False")),
                    vec![s("EnableDnsHostnames")]
                ),
            ]
        );
        // The version it is made from changes nothing.
        assert!(plan(&world, &stack, &stack.version()).is_empty());
    }
}
