//! Checks a decoded input against its shape's constraints (required members,
//! enums, lengths, ranges, patterns) and reports every violation, in the
//! order AWS's validator reports them. Each protocol renders the list its own way.

use crate::model::{Kind, ServiceModel, Shape};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// AWS's path, e.g. `vpcConfig.securityGroupIds` (lowerCamel members, `.N.member` for list items).
    pub path: String,
    /// The member name as the API spells it, e.g. `CidrBlock`.
    pub member: String,
    /// The value as AWS prints it in messages (`null` when missing).
    pub value: String,
    pub constraint: String,
    pub missing: bool,
}

fn lower_camel(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// AWS prints strings bare, lists as `[a, b]`, and missing values as `null`.
pub fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(display_value)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(_) => "{...}".into(),
        other => other.to_string(),
    }
}

/// A model bound (`min`/`max`) as AWS writes it: whole numbers without a
/// fraction.
// why: the value has no fractional part, so the cast only changes it beyond
// i64's range, where `as` saturates: a Long bound, 2^63 once stored in f64,
// prints as i64::MAX (9223372036854775807) as it should.
#[allow(clippy::cast_possible_truncation)]
fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

pub fn validate(model: &ServiceModel, shape_name: &str, value: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    check(model, model.shape(shape_name), value, "", "", &mut out);
    out
}

fn check(
    model: &ServiceModel,
    shape: &Shape,
    value: &Value,
    path: &str,
    member: &str,
    out: &mut Vec<Violation>,
) {
    let violation = |constraint: String| Violation {
        path: path.to_string(),
        member: member.to_string(),
        value: display_value(value),
        constraint,
        missing: false,
    };
    match shape.kind {
        Kind::Structure => {
            let Some(obj) = value.as_object() else { return };
            for (name, m) in &shape.members {
                let child_path = if path.is_empty() {
                    lower_camel(name)
                } else {
                    format!("{path}.{}", lower_camel(name))
                };
                match obj.get(name) {
                    Some(v) if !v.is_null() => {
                        check(model, model.shape(&m.shape), v, &child_path, name, out)
                    }
                    _ if shape.required.iter().any(|r| r == name) => out.push(Violation {
                        path: child_path,
                        member: name.clone(),
                        value: "null".into(),
                        constraint: "Member must not be null".into(),
                        missing: true,
                    }),
                    _ => {}
                }
            }
        }
        Kind::List => {
            let Some(items) = value.as_array() else {
                return;
            };
            length_checks(shape, items.len() as f64, &mut |c| out.push(violation(c)));
            if let Some(m) = &shape.member {
                let item_shape = model.shape(&m.shape);
                for (i, item) in items.iter().enumerate() {
                    check(
                        model,
                        item_shape,
                        item,
                        &format!("{path}.{}.member", i + 1),
                        member,
                        out,
                    );
                }
            }
        }
        Kind::Map => {
            let Some(obj) = value.as_object() else { return };
            length_checks(shape, obj.len() as f64, &mut |c| out.push(violation(c)));
            if let (Some(k), Some(v)) = (&shape.key, &shape.value) {
                for (key, val) in obj {
                    check(
                        model,
                        model.shape(&k.shape),
                        &Value::String(key.clone()),
                        &format!("{path}.{key}.key"),
                        member,
                        out,
                    );
                    check(
                        model,
                        model.shape(&v.shape),
                        val,
                        &format!("{path}.{key}.value"),
                        member,
                        out,
                    );
                }
            }
        }
        Kind::String => {
            let Some(s) = value.as_str() else { return };
            length_checks(shape, s.chars().count() as f64, &mut |c| {
                out.push(violation(c))
            });
            if let Some(values) = &shape.enum_values {
                if !values.iter().any(|v| v == s) {
                    out.push(violation(format!(
                        "Member must satisfy enum value set: [{}]",
                        values.join(", ")
                    )));
                }
            }
            if let (Some(p), Some(re)) = (&shape.pattern, shape.pattern_regex()) {
                if !re.is_match(s) {
                    out.push(violation(format!(
                        "Member must satisfy regular expression pattern: {p}"
                    )));
                }
            }
        }
        Kind::Integer | Kind::Long | Kind::Double | Kind::Float => {
            let Some(n) = value.as_f64() else { return };
            if let Some(min) = shape.min {
                if n < min {
                    out.push(violation(format!(
                        "Member must have value greater than or equal to {}",
                        fmt_num(min)
                    )));
                }
            }
            if let Some(max) = shape.max {
                if n > max {
                    out.push(violation(format!(
                        "Member must have value less than or equal to {}",
                        fmt_num(max)
                    )));
                }
            }
        }
        Kind::Blob => {
            let Some(s) = value.as_str() else { return };
            length_checks(shape, s.len() as f64, &mut |c| out.push(violation(c)));
        }
        Kind::Boolean | Kind::Timestamp => {}
    }
}

fn length_checks(shape: &Shape, len: f64, push: &mut dyn FnMut(String)) {
    if let Some(min) = shape.min {
        if len < min {
            push(format!(
                "Member must have length greater than or equal to {}",
                fmt_num(min)
            ));
        }
    }
    if let Some(max) = shape.max {
        if len > max {
            push(format!(
                "Member must have length less than or equal to {}",
                fmt_num(max)
            ));
        }
    }
}

/// The awsJson / Coral message: `1 validation error detected: Value '[]' at 'x' failed to satisfy constraint: ...`.
pub fn coral_message(violations: &[Violation]) -> String {
    let n = violations.len();
    let parts: Vec<String> = violations
        .iter()
        .map(|v| {
            let value = if v.missing {
                "null".to_string()
            } else {
                format!("'{}'", v.value)
            };
            format!(
                "Value {value} at '{}' failed to satisfy constraint: {}",
                v.path, v.constraint
            )
        })
        .collect();
    format!(
        "{n} validation error{} detected: {}",
        if n == 1 { "" } else { "s" },
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServiceModel;
    use serde_json::json;

    fn model() -> ServiceModel {
        ServiceModel::from_json(
            r#"{"metadata":{"apiVersion":"1","protocol":"json"},"operations":{},"shapes":{
            "Req":{"type":"structure","required":["Name","VpcConfig"],"members":{
                "Name":{"shape":"Name"},"VpcConfig":{"shape":"VpcConfig"},"Count":{"shape":"Count"},"Mode":{"shape":"Mode"}}},
            "VpcConfig":{"type":"structure","required":["SecurityGroupIds"],"members":{"SecurityGroupIds":{"shape":"Ids"}}},
            "Ids":{"type":"list","member":{"shape":"Id"},"min":1,"max":5},
            "Id":{"type":"string","max":32,"pattern":"[-0-9a-zA-Z]+"},
            "Name":{"type":"string","min":1,"max":63},
            "Count":{"type":"integer","min":1,"max":10},
            "Mode":{"type":"string","enum":["File","Pipe"]}}}"#,
        )
    }

    #[test]
    fn reports_aws_style_messages() {
        let m = model();
        let v = validate(
            &m,
            "Req",
            &json!({"Name": "ok", "VpcConfig": {"SecurityGroupIds": []}}),
        );
        assert_eq!(
            coral_message(&v),
            "1 validation error detected: Value '[]' at 'vpcConfig.securityGroupIds' failed to satisfy constraint: Member must have length greater than or equal to 1"
        );
        let v = validate(
            &m,
            "Req",
            &json!({"Count": 11, "Mode": "Stream", "VpcConfig": {"SecurityGroupIds": ["sg_1!"]}}),
        );
        let msg = coral_message(&v);
        assert!(msg.starts_with("4 validation errors detected: Value null at 'name' failed to satisfy constraint: Member must not be null"), "{msg}");
        assert!(msg.contains("Value 'sg_1!' at 'vpcConfig.securityGroupIds.1.member' failed to satisfy constraint: Member must satisfy regular expression pattern: [-0-9a-zA-Z]+"), "{msg}");
        assert!(msg.contains("Value '11' at 'count' failed to satisfy constraint: Member must have value less than or equal to 10"), "{msg}");
        assert!(
            msg.contains("Member must satisfy enum value set: [File, Pipe]"),
            "{msg}"
        );
        assert!(validate(
            &m,
            "Req",
            &json!({"Name": "a", "VpcConfig": {"SecurityGroupIds": ["sg-1"]}})
        )
        .is_empty());
    }
}
