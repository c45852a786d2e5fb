//! What the REST protocols share (REST-XML for Route 53, REST-JSON for
//! EFS): an operation is found by its method and URI template, and its
//! input comes from the URI's labels, the query string and headers, plus a
//! body each protocol reads its own way.

use crate::dispatch::HttpRequest;
use crate::model::{Kind, Operation, ServiceModel, Shape};
use cove_model::{AwsError, AwsResult};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The labels of `path` if it fits `template` (`/2013-04-01/hostedzone/{Id}`).
pub fn match_template(template: &str, path: &str) -> Option<BTreeMap<String, String>> {
    let template = template.split('?').next().unwrap_or_default();
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    if t.len() != p.len() {
        return None;
    }
    let mut labels = BTreeMap::new();
    for (ts, ps) in t.iter().zip(&p) {
        match ts.strip_prefix('{').and_then(|l| l.strip_suffix('}')) {
            Some(label) => {
                if ps.is_empty() {
                    return None;
                }
                let value = percent_encoding::percent_decode_str(ps)
                    .decode_utf8()
                    .ok()?
                    .into_owned();
                labels.insert(label.trim_end_matches('+').to_string(), value);
            }
            None if ts == ps => {}
            None => return None,
        }
    }
    Some(labels)
}

/// The operation `method path` names, with the URI's labels. A template
/// without labels wins over one with labels (`/file-systems/replication-
/// configurations` is not the file system `replication-configurations`).
fn find<'m>(
    model: &'m ServiceModel,
    method: &str,
    path: &str,
) -> Option<(&'m Operation, BTreeMap<String, String>)> {
    let mut found: Vec<_> = model
        .operations
        .values()
        .filter(|op| op.http.method.eq_ignore_ascii_case(method))
        .filter_map(|op| Some((op, match_template(&op.http.request_uri, path)?)))
        .collect();
    found.sort_by_key(|(op, labels)| (labels.len(), op.name.clone()));
    found.into_iter().next()
}

/// A scalar member's value from its text, typed by its shape.
pub fn scalar(
    shape: &Shape,
    text: &str,
    name: &str,
    invalid: fn(String) -> AwsError,
) -> AwsResult<Value> {
    Ok(match shape.kind {
        Kind::Integer | Kind::Long => Value::from(text.trim().parse::<i64>().map_err(|_| {
            invalid(format!(
                "Invalid value '{text}' for {name}: an integer is expected"
            ))
        })?),
        Kind::Boolean => Value::Bool(match text.trim() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(invalid(format!(
                    "Invalid value '{text}' for {name}: true or false is expected"
                )))
            }
        }),
        _ => Value::String(text.to_string()),
    })
}

/// Every value of query parameter `name`, in order (a list member repeats
/// its parameter: `?tagKeys=a&tagKeys=b`).
fn query_values(raw_query: &str, name: &str) -> Vec<String> {
    form_urlencoded::parse(raw_query.as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// The operation a request names and its input, keyed by member names:
/// the body (when the input has body members and one was sent) read by
/// `body`, then the URI labels, query parameters and headers.
pub fn decode(
    model: &ServiceModel,
    req: &HttpRequest,
    params: &BTreeMap<String, String>,
    invalid: fn(String) -> AwsError,
    body: impl FnOnce(&Shape) -> AwsResult<Value>,
) -> AwsResult<(String, Value)> {
    let path = req.raw_path.split('?').next().unwrap_or_default();
    let (op, labels) = find(model, &req.method, path).ok_or_else(|| {
        AwsError::new(
            404,
            "UnknownOperationException",
            format!("No operation is served at {} {path}", req.method),
        )
    })?;
    let mut input = Map::new();
    if let Some(shape_ref) = &op.input {
        let shape = model.shape(&shape_ref.shape);
        let has_body = shape.members.iter().any(|(_, m)| m.location.is_none());
        if has_body && !req.body.iter().all(u8::is_ascii_whitespace) {
            if let Value::Object(fields) = body(shape)? {
                input.extend(fields);
            }
        }
        for (name, m) in &shape.members {
            let wire = m.location_name.as_deref().unwrap_or(name);
            let member_shape = model.shape(&m.shape);
            if m.location.as_deref() == Some("querystring") && member_shape.kind == Kind::List {
                let item = model.shape(&member_shape.member.as_ref().expect("a member").shape);
                let values = query_values(&req.raw_query, wire);
                if !values.is_empty() {
                    let items = values
                        .iter()
                        .map(|v| scalar(item, v, wire, invalid))
                        .collect::<AwsResult<Vec<_>>>()?;
                    input.insert(name.clone(), Value::Array(items));
                }
                continue;
            }
            let raw = match m.location.as_deref() {
                Some("uri") => labels.get(wire).cloned(),
                Some("querystring") => params.get(wire).cloned(),
                Some("header") => req.header(wire).map(str::to_string),
                _ => None,
            };
            if let Some(raw) = raw {
                input.insert(name.clone(), scalar(member_shape, &raw, wire, invalid)?);
            }
        }
    }
    Ok((op.name.clone(), Value::Object(input)))
}
