//! VPC flow logs: creation for VPCs, subnets and ENIs (CloudWatch Logs or S3
//! destinations, custom log formats, aggregation interval), deletion and
//! describe. Per-resource failures are reported in `Unsuccessful`, as AWS does.

use crate::common::*;
use cove_model::filter::{FieldValues, Filter};
use cove_model::ids::new_id;
use cove_model::vpc::*;
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_shapes::ec2::{CreateFlowLogsRequest, DeleteFlowLogsRequest, DescribeFlowLogsRequest};
use serde_json::{json, Value};

/// Every field a custom log format may name (versions 2 to 8).
pub const LOG_FIELDS: &[&str] = &[
    // v2
    "version",
    "account-id",
    "interface-id",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "action",
    "log-status",
    // v3
    "vpc-id",
    "subnet-id",
    "instance-id",
    "tcp-flags",
    "type",
    "pkt-srcaddr",
    "pkt-dstaddr",
    // v4
    "region",
    "az-id",
    "sublocation-type",
    "sublocation-id",
    // v5
    "pkt-src-aws-service",
    "pkt-dst-aws-service",
    "flow-direction",
    "traffic-path",
    // v7
    "ecs-cluster-arn",
    "ecs-cluster-name",
    "ecs-container-instance-arn",
    "ecs-container-instance-id",
    "ecs-container-id",
    "ecs-second-container-id",
    "ecs-service-name",
    "ecs-task-definition-arn",
    "ecs-task-arn",
    "ecs-task-id",
    // v8
    "reject-reason",
];

fn invalid_parameter(message: impl Into<String>) -> AwsError {
    AwsError::client("InvalidParameter", message)
}

/// The fields of a log format (`${a} ${b}`), in order. Fields must be
/// `${name}` tokens separated by spaces; unknown names are reported together.
pub fn parse_log_format(format: &str) -> AwsResult<Vec<String>> {
    let mut fields = Vec::new();
    let mut unknown = Vec::new();
    for token in format.split_whitespace() {
        let name = token
            .strip_prefix("${")
            .and_then(|t| t.strip_suffix('}'))
            .filter(|n| !n.is_empty() && !n.contains(['$', '{', '}']));
        match name {
            Some(n) if LOG_FIELDS.contains(&n) => fields.push(n.to_string()),
            Some(n) => unknown.push(n.to_string()),
            None => unknown.push(token.to_string()),
        }
    }
    if !unknown.is_empty() {
        return Err(invalid_parameter(format!(
            "Unknown fields provided: {}",
            unknown.join(", ")
        )));
    }
    if fields.is_empty() {
        return Err(invalid_parameter("LogFormat must name at least one field."));
    }
    Ok(fields)
}

/// The log group name of a CloudWatch Logs log-group ARN
/// (`arn:aws:logs:<region>:<account>:log-group:<name>[:*]`).
pub fn log_group_of_arn(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    if parts.len() != 7
        || parts[0] != "arn"
        || parts[1].is_empty()
        || parts[2] != "logs"
        || parts[3].is_empty()
        || parts[4].is_empty()
        || parts[5] != "log-group"
    {
        return None;
    }
    let name = parts[6].strip_suffix(":*").unwrap_or(parts[6]);
    (!name.is_empty() && !name.contains(':')).then_some(name)
}

/// Whether a destination is an S3 bucket ARN (`arn:aws:s3:::bucket[/prefix]`).
pub fn is_s3_arn(arn: &str) -> bool {
    let Some(rest) = arn.strip_prefix("arn:aws:s3:::") else {
        return false;
    };
    let bucket = rest.split('/').next().unwrap_or_default();
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

/// The destination as compared for `FlowLogAlreadyExists`.
fn destination_key(f: &FlowLog) -> String {
    f.log_destination
        .as_deref()
        .map(|d| d.strip_suffix(":*").unwrap_or(d).to_string())
        .unwrap_or_default()
}

pub fn render_flow_log(world: &World, f: &FlowLog) -> Value {
    let mut v = json!({"CreationTime": f.create_time});
    if let Some(arn) = &f.deliver_logs_permission_arn {
        v["DeliverLogsPermissionArn"] = json!(arn);
    }
    v["DeliverLogsStatus"] = json!("SUCCESS");
    v["FlowLogId"] = json!(f.id);
    v["FlowLogStatus"] = json!("ACTIVE");
    if let Some(g) = &f.log_group_name {
        v["LogGroupName"] = json!(g);
    }
    v["ResourceId"] = json!(f.resource_id);
    v["TrafficType"] = json!(f.traffic_type);
    v["LogDestinationType"] = json!(f.destination_type);
    if let Some(d) = &f.log_destination {
        v["LogDestination"] = json!(d);
    }
    v["LogFormat"] = json!(f.log_format);
    v["MaxAggregationInterval"] = json!(f.max_aggregation_interval);
    with_tags(v, world, &f.id, "Tags")
}

fn unsuccessful(id: &str, code: &str, message: &str) -> Value {
    json!({"Error": {"Code": code, "Message": message}, "ResourceId": id})
}

pub fn create_flow_logs(r: &Req, q: &CreateFlowLogsRequest) -> AwsResult<Value> {
    let mut resource_ids: Vec<String> = Vec::new();
    for id in list(&q.resource_ids) {
        if !resource_ids.contains(id) {
            resource_ids.push(id.clone());
        }
    }
    if resource_ids.is_empty() {
        return Err(AwsError::missing_parameter("ResourceIds"));
    }
    let resource_type = need(&q.resource_type, "ResourceType")?.to_string();
    match resource_type.as_str() {
        "VPC" | "Subnet" | "NetworkInterface" => {}
        "TransitGateway" | "TransitGatewayAttachment" | "RegionalNatGateway" => {
            return Err(AwsError::invalid_parameter_value(format!(
                "Flow logs for resource type {resource_type} are not supported by Cove."
            )))
        }
        other => {
            return Err(AwsError::invalid_parameter_value(format!(
                "Value ({other}) for parameter resourceType is invalid. Valid values: VPC, Subnet, NetworkInterface"
            )))
        }
    }
    let raw_traffic_type = need(&q.traffic_type, "TrafficType")?;
    let traffic_type: TrafficType = raw_traffic_type.parse().map_err(|()| {
        AwsError::invalid_parameter_value(format!(
            "Value ({raw_traffic_type}) for parameter trafficType is invalid. Valid values: ACCEPT, REJECT, ALL"
        ))
    })?;
    if q.deliver_cross_account_role.is_some() {
        return Err(AwsError::invalid_parameter_value(
            "DeliverCrossAccountRole is not supported by Cove.",
        ));
    }
    let destination_type = match q
        .log_destination_type
        .as_deref()
        .unwrap_or("cloud-watch-logs")
    {
        "kinesis-data-firehose" => {
            return Err(AwsError::invalid_parameter_value(
                "LogDestinationType kinesis-data-firehose is not supported by Cove.",
            ))
        }
        other => other.parse::<LogDestinationType>().map_err(|()| {
            AwsError::invalid_parameter_value(format!(
                "Value ({other}) for parameter logDestinationType is invalid. Valid values: cloud-watch-logs, s3, kinesis-data-firehose"
            ))
        })?,
    };
    let (region, account) = (r.region(), r.account());
    let permission = q
        .deliver_logs_permission_arn
        .clone()
        .filter(|a| !a.is_empty());
    let group_name = q.log_group_name.as_deref().filter(|g| !g.is_empty());
    let destination = q.log_destination.as_deref().filter(|d| !d.is_empty());
    let (log_group_name, log_destination) = match destination_type {
        LogDestinationType::CloudWatchLogs => {
            let (name, dest) = match (group_name, destination) {
                (Some(_), Some(_)) => {
                    return Err(invalid_parameter(
                        "Please only provide LogGroupName or only provide LogDestination.",
                    ))
                }
                (None, None) => {
                    return Err(invalid_parameter(
                        "LogDestination can't be empty if LogGroupName is not provided.",
                    ))
                }
                (Some(g), None) => (
                    g.to_string(),
                    format!("arn:aws:logs:{region}:{account}:log-group:{g}"),
                ),
                (None, Some(d)) => {
                    let g = log_group_of_arn(d).ok_or_else(|| {
                        invalid_parameter(format!(
                            "LogDestination: {d} is not a valid CloudWatch Logs log group ARN."
                        ))
                    })?;
                    (g.to_string(), d.to_string())
                }
            };
            if permission.is_none() {
                return Err(invalid_parameter(
                    "DeliverLogsPermissionArn can't be empty if LogDestinationType is cloud-watch-logs.",
                ));
            }
            (Some(name), Some(dest))
        }
        LogDestinationType::S3 => {
            if group_name.is_some() {
                return Err(invalid_parameter(
                    "LogGroupName can only be used with LogDestinationType cloud-watch-logs.",
                ));
            }
            let d = destination.ok_or_else(|| {
                invalid_parameter("LogDestination can't be empty if LogDestinationType is s3.")
            })?;
            if !is_s3_arn(d) {
                return Err(invalid_parameter(format!(
                    "LogDestination: {d} is not a valid S3 ARN."
                )));
            }
            (None, Some(d.to_string()))
        }
    };
    let log_format = match q.log_format.as_deref() {
        Some(f) => {
            parse_log_format(f)?;
            f.to_string()
        }
        None => DEFAULT_FLOW_LOG_FORMAT.to_string(),
    };
    let interval = q.max_aggregation_interval.unwrap_or(600);
    if interval != 60 && interval != 600 {
        return Err(invalid_parameter(format!(
            "Invalid value for MaxAggregationInterval: {interval}. Valid values are 60 and 600"
        )));
    }
    let tags = tag_specs(r, &q.tag_specifications, "vpc-flow-log")?;
    let token = q.client_token.clone();
    r.write(|tx| {
        let mut created = Vec::new();
        let mut failed = Vec::new();
        for id in &resource_ids {
            let found = match resource_type.as_str() {
                "VPC" => {
                    find::<Vpc>(&tx.world, id, region, |v| &v.region, vpc_not_found).map(|_| ())
                }
                "Subnet" => find::<Subnet>(&tx.world, id, region, |s| &s.region, subnet_not_found)
                    .map(|_| ()),
                _ => find::<NetworkInterface>(&tx.world, id, region, |e| &e.region, eni_not_found)
                    .map(|_| ()),
            };
            if let Err(e) = found {
                failed.push(unsuccessful(id, &e.code, &e.message));
                continue;
            }
            let log = FlowLog {
                id: new_id("fl"),
                region: region.to_string(),
                resource_id: id.clone(),
                traffic_type,
                destination_type,
                log_group_name: log_group_name.clone(),
                log_destination: log_destination.clone(),
                deliver_logs_permission_arn: permission.clone(),
                log_format: log_format.clone(),
                max_aggregation_interval: interval,
                create_time: now(),
            };
            let exists = tx.world.flow_logs.values().any(|f| {
                f.region == log.region
                    && f.resource_id == log.resource_id
                    && f.traffic_type == log.traffic_type
                    && f.destination_type == log.destination_type
                    && destination_key(f) == destination_key(&log)
            });
            if exists {
                failed.push(unsuccessful(
                    id,
                    "FlowLogAlreadyExists",
                    "FlowLogAlreadyExists",
                ));
                continue;
            }
            created.push(log.id.clone());
            tx.put(log.clone());
            if !tags.is_empty() {
                tx.set_tags(&log.id, tags.clone());
            }
        }
        let mut out = json!({});
        if let Some(t) = &token {
            out["ClientToken"] = json!(t);
        }
        out["FlowLogIds"] = json!(created);
        out["Unsuccessful"] = json!(failed);
        Ok(out)
    })
}

pub fn delete_flow_logs(r: &Req, q: &DeleteFlowLogsRequest) -> AwsResult<Value> {
    let ids = list(&q.flow_log_ids);
    if ids.is_empty() {
        return Err(AwsError::missing_parameter("FlowLogIds"));
    }
    let region = r.region();
    r.write(|tx| {
        let mut failed = Vec::new();
        for id in ids {
            match tx.world.flow_logs.get(id) {
                Some(f) if f.region == region => tx.delete::<FlowLog>(id),
                _ => failed.push(unsuccessful(
                    id,
                    "InvalidFlowLogId.NotFound",
                    &format!("Flow log '{id}' does not exist"),
                )),
            }
        }
        Ok(json!({"Unsuccessful": failed}))
    })
}

fn flow_log_field(w: &World, f: &FlowLog, account: &str, name: &str) -> FieldValues {
    match name {
        "deliver-log-status" => one("SUCCESS"),
        "log-destination-type" => one(f.destination_type),
        "flow-log-id" => one(&f.id),
        "log-group-name" => opt(f.log_group_name.as_ref()),
        "resource-id" => one(&f.resource_id),
        "traffic-type" => one(f.traffic_type),
        _ => common_field(w, &f.id, account, name),
    }
}

pub fn describe_flow_logs(r: &Req, q: &DescribeFlowLogsRequest) -> AwsResult<Value> {
    let w = r.world();
    let account = r.account();
    // Unknown flow log ids select nothing rather than failing, as in AWS:
    // they are a filter here, not the explicit ids `Describe` checks.
    let mut describe = Describe::of(q, "FlowLogIds", &None);
    let ids = list(&q.flow_log_ids);
    if !ids.is_empty() {
        describe.filters.push(Filter {
            name: "flow-log-id".into(),
            values: ids.to_vec(),
        });
    }
    let (items, next) = describe.run::<FlowLog>(
        &w,
        |f| &f.region,
        r.region(),
        flow_log_not_found,
        |f, n| flow_log_field(&w, f, account, n),
    )?;
    let items: Vec<Value> = items.iter().map(|f| render_flow_log(&w, f)).collect();
    Ok(listing("FlowLogs", items, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interfaces::tests::{call_typed as call, fixture, ACCOUNT, REGION};

    fn code(r: AwsResult<Value>) -> String {
        r.err().map(|e| e.code).unwrap_or_default()
    }

    #[test]
    fn log_format_fields() {
        assert_eq!(parse_log_format(DEFAULT_FLOW_LOG_FORMAT).unwrap().len(), 14);
        assert_eq!(
            parse_log_format("${vpc-id}  ${pkt-srcaddr} ${traffic-path} ${ecs-task-id}").unwrap(),
            vec!["vpc-id", "pkt-srcaddr", "traffic-path", "ecs-task-id"]
        );
        let e = parse_log_format("${version} ${colour} ${size}").unwrap_err();
        assert_eq!(e.code, "InvalidParameter");
        assert_eq!(e.message, "Unknown fields provided: colour, size");
        assert!(parse_log_format("${version}${srcaddr}").is_err());
        assert!(parse_log_format("version").is_err());
        assert!(parse_log_format("${}").is_err());
        assert!(parse_log_format("   ").is_err());
    }

    #[test]
    fn destinations() {
        assert_eq!(
            log_group_of_arn("arn:aws:logs:us-east-1:123456789012:log-group:my/group:*"),
            Some("my/group")
        );
        assert_eq!(
            log_group_of_arn("arn:aws:logs:us-east-1:123456789012:log-group:g"),
            Some("g")
        );
        assert_eq!(log_group_of_arn("arn:aws:s3:::bucket"), None);
        assert_eq!(
            log_group_of_arn("arn:aws:logs:us-east-1:1:log-group:"),
            None
        );
        assert!(is_s3_arn("arn:aws:s3:::my-bucket"));
        assert!(is_s3_arn("arn:aws:s3:::my-bucket/some/prefix/"));
        assert!(!is_s3_arn("arn:aws:s3:::"));
        assert!(!is_s3_arn("s3://my-bucket"));
        assert!(!is_s3_arn("arn:aws:s3:::My_Bucket"));
    }

    #[test]
    fn create_describe_delete() {
        let f = fixture();
        let role = format!("arn:aws:iam::{ACCOUNT}:role/flow");
        let out = call(
            &f.store,
            create_flow_logs,
            json!({"ResourceIds": [f.vpc, "vpc-nope"], "ResourceType": "VPC",
                   "TrafficType": "ALL", "LogGroupName": "g",
                   "DeliverLogsPermissionArn": role, "ClientToken": "c",
                   "TagSpecifications": [{"ResourceType": "vpc-flow-log",
                                          "Tags": [{"Key": "k", "Value": "v"}]}]}),
        )
        .unwrap();
        assert_eq!(out["ClientToken"], "c");
        assert_eq!(out["FlowLogIds"].as_array().unwrap().len(), 1);
        assert_eq!(
            out["Unsuccessful"][0]["Error"]["Code"],
            "InvalidVpcID.NotFound"
        );
        assert_eq!(out["Unsuccessful"][0]["ResourceId"], "vpc-nope");
        let id = out["FlowLogIds"][0].as_str().unwrap().to_string();

        // The same destination given as an ARN is a duplicate.
        let again = call(
            &f.store,
            create_flow_logs,
            json!({"ResourceIds": [f.vpc], "ResourceType": "VPC", "TrafficType": "ALL",
                   "LogDestination": format!("arn:aws:logs:{REGION}:{ACCOUNT}:log-group:g:*"),
                   "DeliverLogsPermissionArn": role}),
        )
        .unwrap();
        assert_eq!(again["FlowLogIds"], json!([]));
        assert_eq!(
            again["Unsuccessful"][0]["Error"]["Code"],
            "FlowLogAlreadyExists"
        );
        // A subnet id with ResourceType VPC is not found.
        let wrong = call(
            &f.store,
            create_flow_logs,
            json!({"ResourceIds": [f.subnet_a], "ResourceType": "VPC", "TrafficType": "ALL",
                   "LogDestinationType": "s3", "LogDestination": "arn:aws:s3:::bucket/x"}),
        )
        .unwrap();
        assert_eq!(
            wrong["Unsuccessful"][0]["Error"]["Code"],
            "InvalidVpcID.NotFound"
        );
        let s3 = call(
            &f.store,
            create_flow_logs,
            json!({"ResourceIds": [f.subnet_a], "ResourceType": "Subnet", "TrafficType": "REJECT",
                   "LogDestinationType": "s3", "LogDestination": "arn:aws:s3:::bucket/x",
                   "LogFormat": "${srcaddr} ${dstaddr} ${action}", "MaxAggregationInterval": 60}),
        )
        .unwrap();
        assert_eq!(s3["FlowLogIds"].as_array().unwrap().len(), 1);

        let d = call(&f.store, describe_flow_logs, json!({"FlowLogIds": [id]})).unwrap();
        let fl = &d["FlowLogs"][0];
        assert_eq!(fl["LogGroupName"], "g");
        assert_eq!(
            fl["LogDestination"],
            format!("arn:aws:logs:{REGION}:{ACCOUNT}:log-group:g")
        );
        assert_eq!(fl["LogFormat"], DEFAULT_FLOW_LOG_FORMAT);
        assert_eq!(fl["MaxAggregationInterval"], 600);
        assert_eq!(fl["FlowLogStatus"], "ACTIVE");
        assert_eq!(fl["DeliverLogsStatus"], "SUCCESS");
        assert_eq!(fl["Tags"][0]["Key"], "k");
        let d = call(
            &f.store,
            describe_flow_logs,
            json!({"Filter": [{"Name": "log-destination-type", "Values": ["s3"]}]}),
        )
        .unwrap();
        assert_eq!(d["FlowLogs"].as_array().unwrap().len(), 1);
        assert_eq!(d["FlowLogs"][0]["TrafficType"], "REJECT");
        assert!(d["FlowLogs"][0].get("LogGroupName").is_none());
        let none = call(
            &f.store,
            describe_flow_logs,
            json!({"FlowLogIds": ["fl-nope"]}),
        )
        .unwrap();
        assert_eq!(none["FlowLogs"], json!([]));

        let del = call(
            &f.store,
            delete_flow_logs,
            json!({"FlowLogIds": [id, "fl-nope"]}),
        )
        .unwrap();
        assert_eq!(
            del["Unsuccessful"],
            json!([{"Error": {"Code": "InvalidFlowLogId.NotFound",
                              "Message": "Flow log 'fl-nope' does not exist"},
                    "ResourceId": "fl-nope"}])
        );
        assert_eq!(f.store.snapshot().flow_logs.len(), 1);
    }

    #[test]
    fn parameter_errors() {
        let f = fixture();
        let base = json!({"ResourceIds": [f.vpc], "ResourceType": "VPC", "TrafficType": "ALL",
                          "LogGroupName": "g", "DeliverLogsPermissionArn": "arn:aws:iam::1:role/r"});
        let with = |k: &str, v: Value| {
            let mut i = base.clone();
            if v.is_null() {
                i.as_object_mut().unwrap().remove(k);
            } else {
                i[k] = v;
            }
            code(call(&f.store, create_flow_logs, i))
        };
        assert_eq!(with("TrafficType", Value::Null), "MissingParameter");
        assert_eq!(with("TrafficType", json!("SOME")), "InvalidParameterValue");
        assert_eq!(
            with("ResourceType", json!("TransitGateway")),
            "InvalidParameterValue"
        );
        assert_eq!(
            with("DeliverLogsPermissionArn", Value::Null),
            "InvalidParameter"
        );
        assert_eq!(
            with(
                "LogDestination",
                json!("arn:aws:logs:us-east-1:1:log-group:g")
            ),
            "InvalidParameter"
        );
        assert_eq!(
            with("MaxAggregationInterval", json!(300)),
            "InvalidParameter"
        );
        assert_eq!(with("LogFormat", json!("${nope}")), "InvalidParameter");
        assert_eq!(
            with("LogDestinationType", json!("kinesis-data-firehose")),
            "InvalidParameterValue"
        );
        assert_eq!(with("LogDestinationType", json!("s3")), "InvalidParameter");
        assert_eq!(with("ResourceIds", json!([])), "MissingParameter");
        assert!(f.store.snapshot().flow_logs.is_empty());
    }
}
