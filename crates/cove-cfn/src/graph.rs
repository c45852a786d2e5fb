//! The resources' dependency graph: what each resource names through
//! `Ref`, `Fn::GetAtt`, `Fn::Sub` and `DependsOn`, checked against the
//! template (an unknown name is CloudFormation's "Unresolved resource
//! dependencies"), and ordered into waves: every resource of a wave
//! depends only on earlier waves, so a wave can be created in parallel
//! (and deleted in the reverse order).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Each resource's logical id → the resources it depends on.
pub type Dependencies = BTreeMap<String, BTreeSet<String>>;

/// The names `v` refers to: `Ref` targets, `Fn::GetAtt` resources and the
/// `${…}` of `Fn::Sub` (without the `Fn::Sub` list form's own variables).
pub fn references(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) if m.len() == 1 => {
            let (k, arg) = m.iter().next().expect("one entry");
            match (k.as_str(), arg) {
                ("Ref", Value::String(name)) => {
                    out.insert(name.clone());
                }
                ("Fn::GetAtt", Value::Array(a)) => {
                    if let Some(Value::String(r)) = a.first() {
                        out.insert(r.clone());
                    }
                    a.iter().skip(1).for_each(|x| references(x, out));
                }
                ("Fn::GetAtt", Value::String(s)) => {
                    out.insert(s.split('.').next().unwrap_or(s).to_string());
                }
                ("Fn::Sub", Value::String(s)) => sub_names(s, &BTreeSet::new(), out),
                ("Fn::Sub", Value::Array(a)) => {
                    let own: BTreeSet<String> = a
                        .get(1)
                        .and_then(Value::as_object)
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_default();
                    if let Some(Value::String(s)) = a.first() {
                        sub_names(s, &own, out);
                    }
                    a.iter().skip(1).for_each(|x| references(x, out));
                }
                _ => references(arg, out),
            }
        }
        Value::Object(m) => m.values().for_each(|x| references(x, out)),
        Value::Array(a) => a.iter().for_each(|x| references(x, out)),
        _ => {}
    }
}

fn sub_names(s: &str, own: &BTreeSet<String>, out: &mut BTreeSet<String>) {
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { return };
        let name = &after[..end];
        if !name.starts_with('!') && !own.contains(name) {
            let head = if name.contains("::") {
                name
            } else {
                name.split('.').next().unwrap_or(name)
            };
            out.insert(head.to_string());
        }
        rest = &after[end + 1..];
    }
}

/// The dependencies of every resource of `template`; names that are
/// parameters or pseudo parameters are not dependencies, and a name that is
/// none of these is an error.
pub fn dependencies(template: &Value) -> Result<Dependencies, String> {
    let empty = serde_json::Map::new();
    let resources = template
        .get("Resources")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let parameters: BTreeSet<&str> = template
        .get("Parameters")
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let mut out = Dependencies::new();
    let mut unresolved = BTreeSet::new();
    for (id, resource) in resources {
        let mut named = BTreeSet::new();
        for key in ["Properties", "Metadata", "CreationPolicy", "UpdatePolicy"] {
            if let Some(v) = resource.get(key) {
                references(v, &mut named);
            }
        }
        match resource.get("DependsOn") {
            Some(Value::String(d)) => {
                named.insert(d.clone());
            }
            Some(Value::Array(ds)) => {
                named.extend(ds.iter().filter_map(Value::as_str).map(str::to_string));
            }
            _ => {}
        }
        let mut on = BTreeSet::new();
        for n in named {
            if resources.contains_key(&n) {
                on.insert(n);
            } else if !parameters.contains(n.as_str()) && !n.starts_with("AWS::") {
                unresolved.insert(n);
            }
        }
        out.insert(id.clone(), on);
    }
    if !unresolved.is_empty() {
        let names: Vec<String> = unresolved.into_iter().collect();
        return Err(format!(
            "Template format error: Unresolved resource dependencies [{}] in the Resources block of the template",
            names.join(", ")
        ));
    }
    Ok(out)
}

/// The resources in waves, each depending only on earlier ones; a cycle is
/// CloudFormation's "Circular dependency between resources".
pub fn waves(deps: &Dependencies) -> Result<Vec<Vec<String>>, String> {
    let mut left: BTreeMap<&str, BTreeSet<&str>> = deps
        .iter()
        .map(|(id, on)| {
            (
                id.as_str(),
                on.iter().map(String::as_str).filter(|d| *d != id).collect(),
            )
        })
        .collect();
    let mut out = Vec::new();
    while !left.is_empty() {
        let ready: Vec<&str> = left
            .iter()
            .filter(|(_, on)| on.is_empty())
            .map(|(id, _)| *id)
            .collect();
        if ready.is_empty() {
            let stuck: Vec<&str> = left.keys().copied().collect();
            return Err(format!(
                "Circular dependency between resources: [{}]",
                stuck.join(", ")
            ));
        }
        for id in &ready {
            left.remove(id);
        }
        for on in left.values_mut() {
            for id in &ready {
                on.remove(id);
            }
        }
        out.push(ready.into_iter().map(str::to_string).collect());
    }
    // A self-reference is a cycle of one.
    if let Some((id, _)) = deps.iter().find(|(id, on)| on.contains(*id)) {
        return Err(format!("Circular dependency between resources: [{id}]"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn private_network() -> Value {
        json!({
            "Parameters": {"Cidr": {"Type": "String"}},
            "Resources": {
                "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": {"Ref": "Cidr"}}},
                "SubnetA": {"Type": "AWS::EC2::Subnet", "Properties": {
                    "VpcId": {"Ref": "Vpc"},
                    "CidrBlock": {"Fn::Select": [0, {"Fn::Cidr": [{"Fn::GetAtt": ["Vpc", "CidrBlock"]}, 2, 8]}]}}},
                "SubnetB": {"Type": "AWS::EC2::Subnet", "Properties": {"VpcId": {"Ref": "Vpc"}, "CidrBlock": "10.0.1.0/24"}},
                "Group": {"Type": "AWS::EC2::SecurityGroup", "Properties": {
                    "GroupDescription": {"Fn::Sub": "${AWS::StackName} jobs in ${Vpc}"}, "VpcId": {"Ref": "Vpc"}}},
                "SelfRule": {"Type": "AWS::EC2::SecurityGroupIngress", "Properties": {
                    "GroupId": {"Ref": "Group"}, "SourceSecurityGroupId": {"Fn::GetAtt": "Group.GroupId"}, "IpProtocol": "-1"}},
                "Endpoint": {"Type": "AWS::EC2::VPCEndpoint", "DependsOn": ["SubnetA", "SubnetB"], "Properties": {
                    "VpcId": {"Ref": "Vpc"},
                    "ServiceName": {"Fn::Sub": ["com.amazonaws.${AWS::Region}.${Svc}", {"Svc": "sagemaker.api"}]}}}
            }
        })
    }

    #[test]
    fn dependencies_come_from_refs_getatts_subs_and_dependson() {
        let d = dependencies(&private_network()).unwrap();
        assert_eq!(d["Vpc"], BTreeSet::new(), "a parameter is not a dependency");
        assert_eq!(d["SubnetA"], ["Vpc".to_string()].into());
        assert_eq!(d["Group"], ["Vpc".to_string()].into());
        assert_eq!(d["SelfRule"], ["Group".to_string()].into());
        assert_eq!(
            d["Endpoint"],
            ["SubnetA".to_string(), "SubnetB".into(), "Vpc".into()].into()
        );
    }

    #[test]
    fn waves_order_what_can_be_made_together() {
        let w = waves(&dependencies(&private_network()).unwrap()).unwrap();
        assert_eq!(
            w,
            vec![
                vec!["Vpc".to_string()],
                vec!["Group".into(), "SubnetA".into(), "SubnetB".into()],
                vec!["Endpoint".into(), "SelfRule".into()],
            ]
        );
    }

    #[test]
    fn unknown_names_and_cycles_are_refused_with_cloudformations_words() {
        let t = json!({"Resources": {"A": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": {"Ref": "Nope"}}, "DependsOn": "Gone"}}});
        assert_eq!(
            dependencies(&t).unwrap_err(),
            "Template format error: Unresolved resource dependencies [Gone, Nope] in the Resources block of the template"
        );
        let t = json!({"Resources": {
            "A": {"Type": "T", "Properties": {"X": {"Ref": "B"}}},
            "B": {"Type": "T", "Properties": {"X": {"Fn::GetAtt": ["C", "Arn"]}}},
            "C": {"Type": "T", "DependsOn": "A"},
            "D": {"Type": "T"}
        }});
        assert_eq!(
            waves(&dependencies(&t).unwrap()).unwrap_err(),
            "Circular dependency between resources: [A, B, C]"
        );
        let t = json!({"Resources": {"A": {"Type": "T", "Properties": {"X": {"Ref": "A"}}}}});
        assert_eq!(
            waves(&dependencies(&t).unwrap()).unwrap_err(),
            "Circular dependency between resources: [A]"
        );
    }

    #[test]
    fn a_subs_own_variables_and_literals_are_not_dependencies() {
        let mut out = BTreeSet::new();
        references(
            &json!({"Fn::Sub": ["${Own}-${!Lit}-${Bucket.Arn}-${AWS::Region}", {"Own": "x"}]}),
            &mut out,
        );
        assert_eq!(out, ["AWS::Region".to_string(), "Bucket".into()].into());
    }
}
