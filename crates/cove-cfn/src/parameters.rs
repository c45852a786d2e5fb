//! A stack's parameters: the values given checked against the template's
//! declarations (type, default, `AllowedValues`, `AllowedPattern`, lengths,
//! bounds), the pseudo parameters beside them, and the resulting values as
//! `Ref` answers them (strings, or lists of strings for list types).

use serde_json::Value;
use std::collections::BTreeMap;

/// The pseudo parameters of a stack.
pub fn pseudo_parameters(
    account: &str,
    region: &str,
    stack_name: &str,
    stack_id: &str,
) -> BTreeMap<String, Value> {
    [
        ("AWS::AccountId", Value::from(account)),
        ("AWS::Region", Value::from(region)),
        ("AWS::StackName", Value::from(stack_name)),
        ("AWS::StackId", Value::from(stack_id)),
        ("AWS::Partition", Value::from("aws")),
        ("AWS::URLSuffix", Value::from("amazonaws.com")),
        ("AWS::NotificationARNs", Value::Array(vec![])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Whether a value of an `AWS::EC2::…` parameter type names something that
/// exists (`AWS::EC2::VPC::Id`, `vpc-…`).
pub type Exists<'a> = &'a dyn Fn(&str, &str) -> bool;

fn is_list(kind: &str) -> bool {
    kind == "CommaDelimitedList" || kind.starts_with("List<")
}

/// The element type of a list type (`List<Number>` → `Number`).
fn element(kind: &str) -> &str {
    kind.strip_prefix("List<")
        .and_then(|k| k.strip_suffix('>'))
        .unwrap_or("String")
}

/// Checks the declarations themselves, as `ValidateTemplate` does: every
/// parameter's type is one Cove knows, every `AllowedPattern` is a pattern.
pub fn check_declarations(template: &Value) -> Result<(), String> {
    let Some(declared) = template.get("Parameters").and_then(Value::as_object) else {
        return Ok(());
    };
    for (name, decl) in declared {
        let kind = decl.get("Type").and_then(Value::as_str).unwrap_or("");
        if !supported(kind) {
            return Err(format!(
                "Template format error: Unrecognized parameter type: {kind}"
            ));
        }
        if let Some(pattern) = decl.get("AllowedPattern").and_then(Value::as_str) {
            regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|_| {
                format!("Template format error: AllowedPattern of parameter '{name}' is not a valid pattern")
            })?;
        }
    }
    Ok(())
}

fn supported(kind: &str) -> bool {
    let one = |k: &str| {
        k == "String"
            || k == "Number"
            || (k.starts_with("AWS::EC2::")
                && (k.ends_with("::Id") || k.ends_with("::Name") || k.ends_with("::KeyName")))
    };
    one(kind) || kind == "CommaDelimitedList" || (kind.starts_with("List<") && one(element(kind)))
}

fn number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

fn check_one(name: &str, decl: &Value, kind: &str, v: &str, exists: Exists) -> Result<(), String> {
    let constraint = |default: String| -> String {
        match decl.get("ConstraintDescription").and_then(Value::as_str) {
            Some(d) => format!("Parameter '{name}' failed to satisfy constraint: {d}"),
            None => default,
        }
    };
    if kind == "Number" {
        let n = number(v).ok_or_else(|| format!("Parameter '{name}' must be a number"))?;
        if let Some(min) = decl
            .get("MinValue")
            .and_then(|m| number(&crate::intrinsics::text(m).ok()?))
        {
            if n < min {
                return Err(constraint(format!(
                    "Parameter '{name}' must be a number not less than {min}"
                )));
            }
        }
        if let Some(max) = decl
            .get("MaxValue")
            .and_then(|m| number(&crate::intrinsics::text(m).ok()?))
        {
            if n > max {
                return Err(constraint(format!(
                    "Parameter '{name}' must be a number not greater than {max}"
                )));
            }
        }
    }
    if let Some(min) = decl.get("MinLength").and_then(Value::as_u64) {
        if (v.chars().count() as u64) < min {
            return Err(constraint(format!(
                "Parameter '{name}' must contain at least {min} characters"
            )));
        }
    }
    if let Some(max) = decl.get("MaxLength").and_then(Value::as_u64) {
        if v.chars().count() as u64 > max {
            return Err(constraint(format!(
                "Parameter '{name}' must contain at most {max} characters"
            )));
        }
    }
    if let Some(pattern) = decl.get("AllowedPattern").and_then(Value::as_str) {
        // CloudFormation matches the whole value.
        let re = regex::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|_| format!("Template format error: AllowedPattern of parameter '{name}' is not a valid pattern"))?;
        if !re.is_match(v) {
            return Err(constraint(format!(
                "Parameter '{name}' must match pattern {pattern}"
            )));
        }
    }
    if let Some(allowed) = decl.get("AllowedValues").and_then(Value::as_array) {
        let allowed: Vec<String> = allowed
            .iter()
            .filter_map(|a| crate::intrinsics::text(a).ok())
            .collect();
        if !allowed.iter().any(|a| a == v) {
            return Err(constraint(format!(
                "Parameter '{name}' must be one of AllowedValues"
            )));
        }
    }
    if kind.starts_with("AWS::EC2::") && !exists(kind, v) {
        return Err(format!(
            "Parameter validation failed: parameter value {v} for parameter name {name} does not exist"
        ));
    }
    Ok(())
}

/// The parameters' values (by name, as `Ref` answers them), from the values
/// given and the declarations' defaults; the error is CloudFormation's
/// `ValidationError` message.
pub fn resolve(
    template: &Value,
    given: &BTreeMap<String, String>,
    exists: Exists,
) -> Result<BTreeMap<String, Value>, String> {
    check_declarations(template)?;
    let empty = serde_json::Map::new();
    let declared = template
        .get("Parameters")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let unknown: Vec<&str> = given
        .keys()
        .filter(|k| !declared.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "Parameters: [{}] do not exist in the template",
            unknown.join(", ")
        ));
    }
    let mut missing = Vec::new();
    let mut out = BTreeMap::new();
    for (name, decl) in declared {
        let kind = decl.get("Type").and_then(Value::as_str).unwrap_or("");
        let raw = match given.get(name) {
            Some(v) => v.clone(),
            None => match decl.get("Default") {
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|i| crate::intrinsics::text(i).ok())
                    .collect::<Vec<_>>()
                    .join(","),
                Some(d) => match crate::intrinsics::text(d) {
                    Ok(s) => s,
                    Err(_) => {
                        return Err(format!(
                            "Template format error: Default of parameter '{name}' must be a string"
                        ))
                    }
                },
                None => {
                    missing.push(name.as_str());
                    continue;
                }
            },
        };
        let value = if is_list(kind) {
            let items: Vec<String> = if raw.is_empty() {
                vec![]
            } else {
                raw.split(',').map(|s| s.trim().to_string()).collect()
            };
            let each = if kind == "CommaDelimitedList" {
                "String"
            } else {
                element(kind)
            };
            for item in &items {
                check_one(name, decl, each, item, exists)?;
            }
            Value::Array(items.into_iter().map(Value::from).collect())
        } else {
            check_one(name, decl, kind, &raw, exists)?;
            Value::String(raw)
        };
        out.insert(name.clone(), value);
    }
    if !missing.is_empty() {
        return Err(format!(
            "Parameters: [{}] must have values",
            missing.join(", ")
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template() -> Value {
        json!({"Parameters": {
            "Env": {"Type": "String", "Default": "dev", "AllowedValues": ["dev", "prod"]},
            "Name": {"Type": "String", "AllowedPattern": "[a-z][a-z0-9-]*", "MaxLength": 12},
            "Count": {"Type": "Number", "Default": 2, "MinValue": 1, "MaxValue": 8},
            "Zones": {"Type": "CommaDelimitedList", "Default": "us-east-1a, us-east-1b"},
            "Vpc": {"Type": "AWS::EC2::VPC::Id"},
            "Subnets": {"Type": "List<AWS::EC2::Subnet::Id>", "Default": ""},
            "Tag": {"Type": "String", "Default": "x", "AllowedPattern": "x+", "ConstraintDescription": "only x"}
        }})
    }

    fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn exists(kind: &str, v: &str) -> bool {
        kind == "AWS::EC2::VPC::Id" && v == "vpc-1"
            || kind == "AWS::EC2::Subnet::Id" && v.starts_with("subnet-")
    }

    #[test]
    fn values_defaults_and_lists() {
        let p = resolve(
            &template(),
            &given(&[
                ("Name", "jobs"),
                ("Vpc", "vpc-1"),
                ("Subnets", "subnet-a,subnet-b"),
            ]),
            &exists,
        )
        .unwrap();
        assert_eq!(p["Env"], json!("dev"));
        assert_eq!(
            p["Count"],
            json!("2"),
            "Ref of a Number parameter is a string"
        );
        assert_eq!(p["Zones"], json!(["us-east-1a", "us-east-1b"]));
        assert_eq!(p["Subnets"], json!(["subnet-a", "subnet-b"]));
        let pseudo = pseudo_parameters(
            "123456789012",
            "us-east-1",
            "net",
            "arn:aws:cloudformation:us-east-1:123456789012:stack/net/1",
        );
        assert_eq!(pseudo["AWS::Partition"], json!("aws"));
    }

    #[test]
    fn each_constraint_has_cloudformations_message() {
        let t = template();
        let base = [("Name", "jobs"), ("Vpc", "vpc-1")];
        let with = |extra: (&str, &str)| {
            let mut g = given(&base);
            g.insert(extra.0.into(), extra.1.into());
            resolve(&t, &g, &exists).unwrap_err()
        };
        assert_eq!(
            with(("Env", "test")),
            "Parameter 'Env' must be one of AllowedValues"
        );
        assert_eq!(
            with(("Name", "Jobs")),
            "Parameter 'Name' must match pattern [a-z][a-z0-9-]*"
        );
        assert_eq!(
            with(("Name", "a-very-long-name")),
            "Parameter 'Name' must contain at most 12 characters"
        );
        assert_eq!(
            with(("Count", "nine")),
            "Parameter 'Count' must be a number"
        );
        assert_eq!(
            with(("Count", "9")),
            "Parameter 'Count' must be a number not greater than 8"
        );
        assert_eq!(
            with(("Tag", "y")),
            "Parameter 'Tag' failed to satisfy constraint: only x"
        );
        assert_eq!(
            with(("Vpc", "vpc-2")),
            "Parameter validation failed: parameter value vpc-2 for parameter name Vpc does not exist"
        );
        assert_eq!(
            with(("Bogus", "1")),
            "Parameters: [Bogus] do not exist in the template"
        );
        assert_eq!(
            resolve(&t, &BTreeMap::new(), &exists).unwrap_err(),
            "Parameters: [Name, Vpc] must have values"
        );
        let ssm = json!({"Parameters": {"P": {"Type": "AWS::SSM::Parameter::Value<String>"}}});
        assert!(resolve(&ssm, &BTreeMap::new(), &exists)
            .unwrap_err()
            .contains("Unrecognized parameter type"));
    }
}
