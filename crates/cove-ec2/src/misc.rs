//! Account-level EC2 answers: availability zones, regions and account attributes.

use crate::common::*;
use cove_model::filter::{matches_all, FieldValues, Filter};
use cove_model::region;
use cove_model::{AwsError, AwsResult};
use cove_shapes::ec2::{
    DescribeAccountAttributesRequest, DescribeAvailabilityZonesRequest, DescribeRegionsRequest,
};
use serde_json::{json, Value};

fn keep(filters: &[Filter], f: impl Fn(&str) -> FieldValues) -> AwsResult<bool> {
    matches_all(filters, f)
        .map_err(|n| AwsError::invalid_parameter_value(format!("The filter '{n}' is invalid")))
}

pub fn describe_availability_zones(
    r: &Req,
    q: &DescribeAvailabilityZonesRequest,
) -> AwsResult<Value> {
    let region = r.region();
    let names = list(&q.zone_names);
    let ids = list(&q.zone_ids);
    let zones = region::zones(region);
    for n in names {
        if !zones.iter().any(|(z, _)| z == n) {
            return Err(AwsError::invalid_parameter_value(format!(
                "The zone '{n}' does not exist."
            )));
        }
    }
    for i in ids {
        if !zones.iter().any(|(_, z)| z == i) {
            return Err(AwsError::invalid_parameter_value(format!(
                "The zone id '{i}' does not exist."
            )));
        }
    }
    let filters = filters(&q.filters);
    let mut out = Vec::new();
    for (name, id) in &zones {
        if (!names.is_empty() && !names.contains(name)) || (!ids.is_empty() && !ids.contains(id)) {
            continue;
        }
        let field = |f: &str| -> FieldValues {
            match f {
                "zone-name" => one(name),
                "zone-id" => one(id),
                "state" => one("available"),
                "region-name" => one(region),
                "group-name" | "network-border-group" => one(region),
                "zone-type" => one("availability-zone"),
                "opt-in-status" => one("opt-in-not-required"),
                _ => None,
            }
        };
        if keep(&filters, field)? {
            out.push(json!({
                "State": "available", "OptInStatus": "opt-in-not-required", "Messages": [],
                "RegionName": region, "ZoneName": name, "ZoneId": id, "GroupName": region,
                "NetworkBorderGroup": region, "ZoneType": "availability-zone", "GroupLongName": region,
            }));
        }
    }
    Ok(json!({"AvailabilityZones": out}))
}

pub fn describe_regions(q: &DescribeRegionsRequest) -> AwsResult<Value> {
    let names = list(&q.region_names);
    for n in names {
        if !region::is_known_region(n) {
            return Err(AwsError::client(
                "InvalidParameterValue",
                format!("Invalid region: {n}"),
            ));
        }
    }
    let filters = filters(&q.filters);
    let mut out = Vec::new();
    // Every opt-in region counts as opted in, so `AllRegions` lists the
    // same regions as the default.
    for name in region::REGIONS.iter().chain(region::OPT_IN_REGIONS) {
        if !names.is_empty() && !names.iter().any(|n| n == name) {
            continue;
        }
        let endpoint = format!("ec2.{name}.amazonaws.com");
        let status = region::opt_in_status(name);
        let field = |f: &str| -> FieldValues {
            match f {
                "region-name" => one(*name),
                "endpoint" => one(&endpoint),
                "opt-in-status" => one(status),
                _ => None,
            }
        };
        if keep(&filters, field)? {
            out.push(json!({"Endpoint": endpoint, "RegionName": name, "OptInStatus": status}));
        }
    }
    Ok(json!({"Regions": out}))
}

pub fn describe_account_attributes(
    r: &Req,
    q: &DescribeAccountAttributesRequest,
) -> AwsResult<Value> {
    let w = r.world();
    let default_vpc = w
        .vpcs
        .values()
        .find(|v| v.region == r.region() && v.is_default)
        .map(|v| v.id.clone())
        .unwrap_or_else(|| "none".into());
    let all: Vec<(&str, Vec<String>)> = vec![
        ("supported-platforms", vec!["VPC".into()]),
        ("default-vpc", vec![default_vpc]),
        ("max-instances", vec!["20".into()]),
        ("vpc-max-security-groups-per-interface", vec!["5".into()]),
        ("max-elastic-ips", vec!["5".into()]),
        ("vpc-max-elastic-ips", vec!["5".into()]),
    ];
    let wanted = list(&q.attribute_names);
    for n in wanted {
        if !all.iter().any(|(a, _)| a == n) {
            return Err(AwsError::invalid_parameter_value(format!(
                "Value ({n}) for parameter attributeName is invalid."
            )));
        }
    }
    let out: Vec<Value> = all
        .into_iter()
        .filter(|(n, _)| wanted.is_empty() || wanted.iter().any(|w| w == n))
        .map(|(n, vals)| json!({"AttributeName": n, "AttributeValues": vals.iter().map(|v| json!({"AttributeValue": v})).collect::<Vec<_>>()}))
        .collect();
    Ok(json!({"AccountAttributes": out}))
}
