//! The awsJson side: reads the decoded, model-validated input, calls the same
//! functions the Rust API uses, and shapes the answers as AWS does.

use crate::groups::{group_arn, group_not_found, invalid, parse_group_arn, stream_arn};
use crate::{
    DescribeGroupsRequest, DescribeStreamsRequest, FilterRequest, GetEventsRequest, LogGroupInfo,
    LogStreamInfo, LogsService, NewLogGroup, StreamOrder,
};
use cove_model::{AwsError, AwsResult};
use cove_wire::RequestContext;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

fn str_of<'a>(input: &'a Value, key: &str) -> Option<&'a str> {
    input.get(key).and_then(Value::as_str)
}

fn i64_of(input: &Value, key: &str) -> Option<i64> {
    input.get(key).and_then(Value::as_i64)
}

fn bool_of(input: &Value, key: &str) -> Option<bool> {
    input.get(key).and_then(Value::as_bool)
}

fn limit_of(input: &Value) -> Option<usize> {
    i64_of(input, "limit").map(|l| usize::try_from(l).unwrap_or(0))
}

fn strings_of(input: &Value, key: &str) -> Option<Vec<String>> {
    input.get(key).and_then(Value::as_array).map(|items| {
        items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    })
}

/// A member the model marks required (the dispatcher has checked it).
fn required<'a>(input: &'a Value, key: &str) -> AwsResult<&'a str> {
    str_of(input, key).ok_or_else(|| {
        AwsError::client(
            "ValidationException",
            format!("1 validation error detected: Value null at '{key}' failed to satisfy constraint: Member must not be null"),
        )
    })
}

fn tags_of(input: &Value, key: &str) -> BTreeMap<String, String> {
    input
        .get(key)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A log group named by `logGroupName`, or by `logGroupIdentifier` (a name
/// or an ARN of this account and region).
fn group_name<'a>(region: &str, account: &str, input: &'a Value) -> AwsResult<&'a str> {
    match (
        str_of(input, "logGroupName"),
        str_of(input, "logGroupIdentifier"),
    ) {
        (Some(_), Some(_)) => Err(invalid(
            "LogGroup name and LogGroup ARN are mutually exclusive parameters.",
        )),
        (Some(name), None) => Ok(name),
        (None, Some(id)) => identifier(region, account, id),
        (None, None) => Err(invalid(
            "Either logGroupName or logGroupIdentifier must be specified.",
        )),
    }
}

fn identifier<'a>(region: &str, account: &str, id: &'a str) -> AwsResult<&'a str> {
    if !id.starts_with("arn:") {
        return Ok(id);
    }
    let (r, a, name) =
        parse_group_arn(id).ok_or_else(|| invalid(format!("Invalid log group ARN '{id}'")))?;
    if r != region || a != account {
        return Err(group_not_found());
    }
    Ok(name)
}

fn group_json(region: &str, account: &str, g: &LogGroupInfo) -> Value {
    let arn = group_arn(region, account, &g.name);
    json!({
        "logGroupName": g.name,
        "creationTime": g.creation_time,
        "retentionInDays": g.retention_days,
        "metricFilterCount": 0,
        "arn": format!("{arn}:*"),
        "logGroupArn": arn,
        "storedBytes": g.stored_bytes,
        "kmsKeyId": g.kms_key_id,
        "logGroupClass": g.class,
        "deletionProtectionEnabled": g.deletion_protection,
    })
}

fn stream_json(region: &str, account: &str, group: &str, s: &LogStreamInfo) -> Value {
    json!({
        "logStreamName": s.name,
        "creationTime": s.creation_time,
        "firstEventTimestamp": s.first_event_timestamp,
        "lastEventTimestamp": s.last_event_timestamp,
        "lastIngestionTime": s.last_ingestion_time,
        "uploadSequenceToken": s.upload_sequence_token,
        "arn": stream_arn(region, account, group, &s.name),
        "storedBytes": 0,
    })
}

fn empty() -> Value {
    Value::Object(Map::new())
}

pub(crate) fn handle(svc: &LogsService, ctx: &RequestContext, input: &Value) -> AwsResult<Value> {
    let region = ctx.region.as_str();
    let account = ctx.account_id();
    match ctx.operation.as_str() {
        "CreateLogGroup" => {
            let options = NewLogGroup {
                kms_key_id: str_of(input, "kmsKeyId").map(str::to_string),
                tags: tags_of(input, "tags"),
                class: str_of(input, "logGroupClass").map(str::to_string),
                deletion_protection: bool_of(input, "deletionProtectionEnabled").unwrap_or(false),
            };
            svc.create_log_group(region, account, required(input, "logGroupName")?, &options)?;
            Ok(empty())
        }
        "DeleteLogGroup" => {
            svc.delete_log_group(region, account, required(input, "logGroupName")?)?;
            Ok(empty())
        }
        "DescribeLogGroups" => {
            let names = match input.get("logGroupIdentifiers").and_then(Value::as_array) {
                None => None,
                Some(ids) => {
                    let mut names = Vec::new();
                    for id in ids.iter().filter_map(Value::as_str) {
                        match identifier(region, account, id) {
                            Ok(name) => names.push(name.to_string()),
                            // Another account's or region's group is never listed here.
                            Err(e) if e.code == "ResourceNotFoundException" => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Some(names)
                }
            };
            let req = DescribeGroupsRequest {
                name_prefix: str_of(input, "logGroupNamePrefix").map(str::to_string),
                name_pattern: str_of(input, "logGroupNamePattern").map(str::to_string),
                class: str_of(input, "logGroupClass").map(str::to_string),
                names,
                limit: limit_of(input),
                next_token: str_of(input, "nextToken").map(str::to_string),
            };
            let (groups, token) = svc.describe_log_groups(region, account, &req)?;
            Ok(json!({
                "logGroups": groups.iter().map(|g| group_json(region, account, g)).collect::<Vec<_>>(),
                "nextToken": token,
            }))
        }
        "CreateLogStream" => {
            svc.create_log_stream(
                region,
                account,
                required(input, "logGroupName")?,
                required(input, "logStreamName")?,
            )?;
            Ok(empty())
        }
        "DeleteLogStream" => {
            svc.delete_log_stream(
                region,
                account,
                required(input, "logGroupName")?,
                required(input, "logStreamName")?,
            )?;
            Ok(empty())
        }
        "DescribeLogStreams" => {
            let group = group_name(region, account, input)?;
            let order = match str_of(input, "orderBy") {
                Some("LastEventTime") => StreamOrder::LastEventTime,
                _ => StreamOrder::LogStreamName,
            };
            let req = DescribeStreamsRequest {
                name_prefix: str_of(input, "logStreamNamePrefix").map(str::to_string),
                order,
                descending: bool_of(input, "descending").unwrap_or(false),
                limit: limit_of(input),
                next_token: str_of(input, "nextToken").map(str::to_string),
            };
            let (streams, token) = svc.describe_log_streams(region, account, group, &req)?;
            Ok(json!({
                "logStreams": streams.iter().map(|s| stream_json(region, account, group, s)).collect::<Vec<_>>(),
                "nextToken": token,
            }))
        }
        "PutLogEvents" => {
            let events: Vec<(i64, &str)> = input
                .get("logEvents")
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|e| Some((i64_of(e, "timestamp")?, str_of(e, "message")?)))
                        .collect()
                })
                .unwrap_or_default();
            let outcome = svc.put_events(
                region,
                account,
                required(input, "logGroupName")?,
                required(input, "logStreamName")?,
                &events,
            )?;
            let mut out = json!({ "nextSequenceToken": outcome.next_sequence_token });
            if outcome.rejected.any() {
                out["rejectedLogEventsInfo"] = json!({
                    "tooNewLogEventStartIndex": outcome.rejected.too_new_start,
                    "tooOldLogEventEndIndex": outcome.rejected.too_old_end,
                    "expiredLogEventEndIndex": outcome.rejected.expired_end,
                });
            }
            Ok(out)
        }
        "GetLogEvents" => {
            let group = group_name(region, account, input)?;
            let req = GetEventsRequest {
                start_time: i64_of(input, "startTime"),
                end_time: i64_of(input, "endTime"),
                limit: limit_of(input),
                start_from_head: bool_of(input, "startFromHead").unwrap_or(false),
                next_token: str_of(input, "nextToken").map(str::to_string),
            };
            let page = svc.get_log_events(
                region,
                account,
                group,
                required(input, "logStreamName")?,
                &req,
            )?;
            let events: Vec<Value> = page
                .events
                .iter()
                .map(|e| {
                    json!({
                        "timestamp": e.timestamp,
                        "message": e.message,
                        "ingestionTime": e.ingestion_time,
                    })
                })
                .collect();
            Ok(json!({
                "events": events,
                "nextForwardToken": page.next_forward_token,
                "nextBackwardToken": page.next_backward_token,
            }))
        }
        "FilterLogEvents" => {
            let group = group_name(region, account, input)?;
            let req = FilterRequest {
                stream_names: strings_of(input, "logStreamNames"),
                stream_name_prefix: str_of(input, "logStreamNamePrefix").map(str::to_string),
                start_time: i64_of(input, "startTime"),
                end_time: i64_of(input, "endTime"),
                filter_pattern: str_of(input, "filterPattern").map(str::to_string),
                limit: limit_of(input),
                next_token: str_of(input, "nextToken").map(str::to_string),
            };
            let page = svc.filter_log_events(region, account, group, &req)?;
            let events: Vec<Value> = page
                .events
                .iter()
                .map(|e| {
                    json!({
                        "logStreamName": e.stream_name,
                        "timestamp": e.timestamp,
                        "message": e.message,
                        "ingestionTime": e.ingestion_time,
                        "eventId": e.event_id,
                    })
                })
                .collect();
            Ok(json!({ "events": events, "nextToken": page.next_token }))
        }
        "PutRetentionPolicy" => {
            let days = i64_of(input, "retentionInDays").unwrap_or(0);
            svc.put_retention_policy(region, account, required(input, "logGroupName")?, days)?;
            Ok(empty())
        }
        "DeleteRetentionPolicy" => {
            svc.delete_retention_policy(region, account, required(input, "logGroupName")?)?;
            Ok(empty())
        }
        "TagResource" => {
            svc.tag_resource(
                region,
                account,
                required(input, "resourceArn")?,
                &tags_of(input, "tags"),
            )?;
            Ok(empty())
        }
        "UntagResource" => {
            svc.untag_resource(
                region,
                account,
                required(input, "resourceArn")?,
                &strings_of(input, "tagKeys").unwrap_or_default(),
            )?;
            Ok(empty())
        }
        "ListTagsForResource" => {
            let tags =
                svc.list_tags_for_resource(region, account, required(input, "resourceArn")?)?;
            Ok(json!({ "tags": tags }))
        }
        other => Err(AwsError::client(
            "UnknownOperationException",
            format!("Unknown operation {other}"),
        )),
    }
}
