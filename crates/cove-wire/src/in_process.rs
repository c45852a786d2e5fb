//! Calls of Cove's services that Cove makes itself, not from the wire
//! (CloudFormation's resource providers). The input is shaped like the
//! API's, but its scalars may be written as a template writes them (`"80"`
//! for a port, `"true"` for a flag): they are brought to the model's types,
//! then the input is validated as a call from the wire is, and only then
//! handled, so a bad template value gets the API's own error.

use crate::dispatch::Protocol;
use crate::dispatch::{query_violation, RequestContext, Service};
use crate::model::{Kind, ServiceModel, Shape};
use crate::validate;
use cove_model::{AwsError, AwsResult};
use serde_json::{Map, Value};

/// Runs `ctx.operation` of `service` with `input`.
pub fn call(service: &dyn Service, ctx: &RequestContext, input: Value) -> AwsResult<Value> {
    let model = service.model();
    let operation = model.operation(&ctx.operation).ok_or_else(|| {
        AwsError::client(
            "InvalidAction",
            format!(
                "{} has no operation {}",
                service.signing_name(),
                ctx.operation
            ),
        )
    })?;
    let input = match &operation.input {
        Some(shape) => {
            let typed = typed(model, model.shape(&shape.shape), input);
            let violations = validate::validate(model, &shape.shape, &typed);
            if let Some(first) = violations.first() {
                return Err(match service.protocol() {
                    Protocol::Ec2 | Protocol::Query => {
                        query_violation(service.protocol(), first, &violations)
                    }
                    _ => AwsError::client(
                        service.validation_error_code(),
                        validate::coral_message(&violations),
                    ),
                });
            }
            typed
        }
        None => input,
    };
    service.handle(ctx, input)
}

/// `value` with its scalars converted to the types `shape` declares where
/// the text says so unambiguously; anything else is left for validation.
pub fn typed(model: &ServiceModel, shape: &Shape, value: Value) -> Value {
    let of = |name: &str| model.shape(name);
    match (shape.kind, value) {
        (Kind::Structure, Value::Object(members)) => Value::Object(
            members
                .into_iter()
                .map(|(k, v)| match shape.member(&k) {
                    Some(m) => {
                        let v = typed(model, of(&m.shape), v);
                        (k, v)
                    }
                    None => (k, v),
                })
                .collect::<Map<_, _>>(),
        ),
        (Kind::List, Value::Array(items)) => match &shape.member {
            Some(m) => Value::Array(
                items
                    .into_iter()
                    .map(|v| typed(model, of(&m.shape), v))
                    .collect(),
            ),
            None => Value::Array(items),
        },
        (Kind::Map, Value::Object(entries)) => match &shape.value {
            Some(m) => Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, typed(model, of(&m.shape), v)))
                    .collect(),
            ),
            None => Value::Object(entries),
        },
        (Kind::Integer | Kind::Long, Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::String(s),
        },
        (Kind::Double | Kind::Float, Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::String(s),
        },
        (Kind::Boolean, Value::String(s)) => match s.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(s),
        },
        (Kind::String, Value::Number(n)) => Value::String(n.to_string()),
        (Kind::String, Value::Bool(b)) => Value::String(b.to_string()),
        (_, v) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn template_scalars_take_the_model_types_and_the_rest_is_left_alone() {
        let model = crate::model::ec2();
        let shape = model.shape("AuthorizeSecurityGroupIngressRequest");
        let v = typed(
            model,
            shape,
            json!({"GroupId": "sg-1", "DryRun": "false", "IpPermissions": [
                {"IpProtocol": 6, "FromPort": "80", "ToPort": "eighty", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}
            ], "Unknown": "1"}),
        );
        assert_eq!(
            v,
            json!({"GroupId": "sg-1", "DryRun": false, "IpPermissions": [
                {"IpProtocol": "6", "FromPort": 80, "ToPort": "eighty", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}
            ], "Unknown": "1"})
        );
    }
}
