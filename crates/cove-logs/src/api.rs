//! The awsJson side: parses the decoded, model-validated input once into
//! `cove_shapes::logs` types, calls the same functions the Rust API uses,
//! and shapes the answers as AWS does.

use crate::groups::{group_arn, group_not_found, invalid, parse_group_arn, stream_arn};
use crate::{
    DescribeGroupsRequest, DescribeStreamsRequest, FilterRequest, GetEventsRequest, LogGroupInfo,
    LogStreamInfo, LogsService, NewLogGroup, StreamOrder,
};
use cove_model::{AwsError, AwsResult};
use cove_shapes::logs::Request;
use cove_wire::RequestContext;
use serde_json::{json, Map, Value};

fn limit_of(limit: Option<i64>) -> Option<usize> {
    limit.map(|l| usize::try_from(l).unwrap_or(0))
}

/// Logs' answer to input the generated types refuse. The wire layer has
/// already checked the input against the model, so this only happens to a
/// caller that skips it; a missing member gets the message the wire layer
/// would have given.
fn malformed(e: &serde_json::Error) -> AwsError {
    let text = e.to_string();
    match text
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        Some(key) => AwsError::client(
            "InvalidParameterException",
            format!("1 validation error detected: Value null at '{key}' failed to satisfy constraint: Member must not be null"),
        ),
        None => AwsError::client("SerializationException", text),
    }
}

/// A log group named by `logGroupName`, or by `logGroupIdentifier` (a name
/// or an ARN of this account and region).
fn group_name<'a>(
    region: &str,
    account: &str,
    name: Option<&'a str>,
    group_identifier: Option<&'a str>,
) -> AwsResult<&'a str> {
    match (name, group_identifier) {
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
    let request = match Request::parse(&ctx.operation, input) {
        Some(Ok(r)) => r,
        Some(Err(e)) => return Err(malformed(&e)),
        None => {
            return Err(AwsError::client(
                "UnknownOperationException",
                format!("Unknown operation {}", ctx.operation),
            ))
        }
    };
    match request {
        Request::CreateLogGroup(r) => {
            let options = NewLogGroup {
                kms_key_id: r.kms_key_id,
                tags: r.tags.unwrap_or_default(),
                class: r.log_group_class,
                deletion_protection: r.deletion_protection_enabled.unwrap_or(false),
            };
            svc.create_log_group(region, account, &r.log_group_name, &options)?;
            Ok(empty())
        }
        Request::DeleteLogGroup(r) => {
            svc.delete_log_group(region, account, &r.log_group_name)?;
            Ok(empty())
        }
        Request::DescribeLogGroups(r) => {
            let names = match &r.log_group_identifiers {
                None => None,
                Some(ids) => {
                    let mut names = Vec::new();
                    for id in ids {
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
                name_prefix: r.log_group_name_prefix,
                name_pattern: r.log_group_name_pattern,
                class: r.log_group_class,
                names,
                limit: limit_of(r.limit),
                next_token: r.next_token,
            };
            let (groups, token) = svc.describe_log_groups(region, account, &req)?;
            Ok(json!({
                "logGroups": groups.iter().map(|g| group_json(region, account, g)).collect::<Vec<_>>(),
                "nextToken": token,
            }))
        }
        Request::CreateLogStream(r) => {
            svc.create_log_stream(region, account, &r.log_group_name, &r.log_stream_name)?;
            Ok(empty())
        }
        Request::DeleteLogStream(r) => {
            svc.delete_log_stream(region, account, &r.log_group_name, &r.log_stream_name)?;
            Ok(empty())
        }
        Request::DescribeLogStreams(r) => {
            let group = group_name(
                region,
                account,
                r.log_group_name.as_deref(),
                r.log_group_identifier.as_deref(),
            )?;
            let order = match r.order_by.as_deref() {
                Some("LastEventTime") => StreamOrder::LastEventTime,
                _ => StreamOrder::LogStreamName,
            };
            let req = DescribeStreamsRequest {
                name_prefix: r.log_stream_name_prefix.clone(),
                order,
                descending: r.descending.unwrap_or(false),
                limit: limit_of(r.limit),
                next_token: r.next_token.clone(),
            };
            let (streams, token) = svc.describe_log_streams(region, account, group, &req)?;
            Ok(json!({
                "logStreams": streams.iter().map(|s| stream_json(region, account, group, s)).collect::<Vec<_>>(),
                "nextToken": token,
            }))
        }
        Request::PutLogEvents(r) => {
            let events: Vec<(i64, &str)> = r
                .log_events
                .iter()
                .map(|e| (e.timestamp, e.message.as_str()))
                .collect();
            let outcome = svc.put_events(
                region,
                account,
                &r.log_group_name,
                &r.log_stream_name,
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
        Request::GetLogEvents(r) => {
            let group = group_name(
                region,
                account,
                r.log_group_name.as_deref(),
                r.log_group_identifier.as_deref(),
            )?;
            let req = GetEventsRequest {
                start_time: r.start_time,
                end_time: r.end_time,
                limit: limit_of(r.limit),
                start_from_head: r.start_from_head.unwrap_or(false),
                next_token: r.next_token.clone(),
            };
            let page = svc.get_log_events(region, account, group, &r.log_stream_name, &req)?;
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
        Request::FilterLogEvents(r) => {
            let group = group_name(
                region,
                account,
                r.log_group_name.as_deref(),
                r.log_group_identifier.as_deref(),
            )?;
            let req = FilterRequest {
                stream_names: r.log_stream_names.clone(),
                stream_name_prefix: r.log_stream_name_prefix.clone(),
                start_time: r.start_time,
                end_time: r.end_time,
                filter_pattern: r.filter_pattern.clone(),
                limit: limit_of(r.limit),
                next_token: r.next_token.clone(),
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
        Request::PutRetentionPolicy(r) => {
            svc.put_retention_policy(region, account, &r.log_group_name, r.retention_in_days)?;
            Ok(empty())
        }
        Request::DeleteRetentionPolicy(r) => {
            svc.delete_retention_policy(region, account, &r.log_group_name)?;
            Ok(empty())
        }
        Request::TagResource(r) => {
            svc.tag_resource(region, account, &r.resource_arn, &r.tags)?;
            Ok(empty())
        }
        Request::UntagResource(r) => {
            svc.untag_resource(region, account, &r.resource_arn, &r.tag_keys)?;
            Ok(empty())
        }
        Request::ListTagsForResource(r) => {
            let tags = svc.list_tags_for_resource(region, account, &r.resource_arn)?;
            Ok(json!({ "tags": tags }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_member_gets_the_wire_layers_message() {
        let e = Request::parse("DeleteLogGroup", &json!({}))
            .unwrap()
            .unwrap_err();
        let e = malformed(&e);
        assert_eq!(e.code, "InvalidParameterException");
        assert_eq!(e.message, "1 validation error detected: Value null at 'logGroupName' failed to satisfy constraint: Member must not be null");
    }
}
