//! awsJson 1.1 (SageMaker, CloudWatch Logs): the operation comes from
//! `X-Amz-Target`, input and output are JSON documents keyed by member names,
//! errors are `{"__type": ..., "message": ...}`. Timestamps travel as epoch
//! seconds; handlers keep ISO-8601 strings and this module converts them.

use crate::model::{Kind, ServiceModel, Shape};
use serde_json::{Map, Value};

/// Converts handler output to the wire form: ISO-8601 timestamps become epoch seconds.
pub fn encode_output(model: &ServiceModel, shape: &Shape, value: &Value) -> Value {
    match (shape.kind, value) {
        (Kind::Structure, Value::Object(obj)) => {
            let mut out = Map::new();
            for (name, m) in &shape.members {
                if let Some(v) = obj.get(name) {
                    if !v.is_null() {
                        out.insert(name.clone(), encode_output(model, model.shape(&m.shape), v));
                    }
                }
            }
            Value::Object(out)
        }
        (Kind::List, Value::Array(items)) => {
            let item = model.shape(&shape.member.as_ref().expect("lists have a member").shape);
            Value::Array(
                items
                    .iter()
                    .map(|v| encode_output(model, item, v))
                    .collect(),
            )
        }
        (Kind::Map, Value::Object(obj)) => {
            let vs = model.shape(&shape.value.as_ref().expect("maps have a value").shape);
            Value::Object(
                obj.iter()
                    .map(|(k, v)| (k.clone(), encode_output(model, vs, v)))
                    .collect(),
            )
        }
        (Kind::Timestamp, Value::String(s)) => {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .ok()
                .and_then(|t| serde_json::Number::from_f64(t.unix_timestamp_nanos() as f64 / 1e9))
                .map(Value::Number)
                .unwrap_or_else(|| value.clone())
        }
        _ => value.clone(),
    }
}

/// Checks that every member has the JSON type its shape needs; AWS answers a
/// mistyped member with `SerializationException` before any validation.
pub fn type_check(
    model: &ServiceModel,
    shape: &Shape,
    value: &Value,
    path: &str,
) -> Result<(), String> {
    let ok = match shape.kind {
        Kind::Structure => {
            let Value::Object(obj) = value else {
                return Err(format!("Expected an object at '{path}'"));
            };
            for (k, v) in obj {
                if v.is_null() {
                    continue;
                }
                // AWS ignores unknown members in awsJson.
                if let Some(m) = shape.member(k) {
                    type_check(model, model.shape(&m.shape), v, &format!("{path}.{k}"))?;
                }
            }
            true
        }
        Kind::List => {
            let Value::Array(items) = value else {
                return Err(format!("Expected a list at '{path}'"));
            };
            let item = model.shape(&shape.member.as_ref().expect("lists have a member").shape);
            for (i, v) in items.iter().enumerate() {
                type_check(model, item, v, &format!("{path}[{i}]"))?;
            }
            true
        }
        Kind::Map => value.is_object(),
        Kind::String | Kind::Blob => value.is_string(),
        Kind::Boolean => value.is_boolean(),
        Kind::Integer | Kind::Long => value.is_i64() || value.is_u64(),
        Kind::Double | Kind::Float => value.is_number(),
        Kind::Timestamp => value.is_number() || value.is_string(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Unexpected value type at '{}'",
            path.trim_start_matches('.')
        ))
    }
}
