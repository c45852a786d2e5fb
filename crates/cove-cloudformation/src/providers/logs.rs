//! CloudWatch Logs log groups (where flow logs and jobs' logs go).

use super::{created, s, tag_list, Api, Created, Naming};
use serde_json::{json, Map, Value};

fn logs(api: &dyn Api, operation: &str, input: Value) -> Result<Value, String> {
    super::call(api, "logs", operation, input)
}

pub fn create(
    api: &dyn Api,
    kind: &str,
    props: &Map<String, Value>,
    naming: &Naming,
) -> Result<Created, String> {
    if kind != "AWS::Logs::LogGroup" {
        return Err(format!("Cove does not create resources of type {kind}"));
    }
    let name = s(props, "LogGroupName").unwrap_or_else(|| super::generated_name(kind, naming));
    let mut input = json!({"logGroupName": name});
    let tags: Map<String, Value> = tag_list(props)
        .into_iter()
        .filter_map(|t| Some((t["Key"].as_str()?.to_string(), t["Value"].clone())))
        .collect();
    if !tags.is_empty() {
        input["tags"] = Value::Object(tags);
    }
    if let Some(k) = s(props, "KmsKeyId") {
        input["kmsKeyId"] = json!(k);
    }
    logs(api, "CreateLogGroup", input)?;
    if let Some(days) = s(props, "RetentionInDays") {
        logs(
            api,
            "PutRetentionPolicy",
            json!({"logGroupName": name, "retentionInDays": days}),
        )?;
    }
    let described = logs(
        api,
        "DescribeLogGroups",
        json!({"logGroupNamePrefix": name}),
    )?;
    let arn = described["logGroups"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["logGroupName"] == name.as_str())
        .map(|g| g["arn"].clone())
        .unwrap_or(Value::Null);
    Ok(created(name, &[("Arn", arn)]))
}

pub fn delete(api: &dyn Api, physical_id: &str) -> Result<(), String> {
    logs(api, "DeleteLogGroup", json!({"logGroupName": physical_id})).map(|_| ())
}

pub fn updatable(kind: &str) -> &'static [&'static str] {
    match kind {
        "AWS::Logs::LogGroup" => &["RetentionInDays"],
        _ => &[],
    }
}

pub fn update(api: &dyn Api, physical_id: &str, new: &Map<String, Value>) -> Result<(), String> {
    match s(new, "RetentionInDays") {
        Some(days) => logs(
            api,
            "PutRetentionPolicy",
            json!({"logGroupName": physical_id, "retentionInDays": days}),
        ),
        None => logs(
            api,
            "DeleteRetentionPolicy",
            json!({"logGroupName": physical_id}),
        ),
    }
    .map(|_| ())
}
