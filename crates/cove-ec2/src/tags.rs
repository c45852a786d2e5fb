//! Tags on every EC2 resource: CreateTags, DeleteTags and DescribeTags, with
//! AWS's resource types, key rules and the 50-tag limit.

use crate::common::*;
use cove_model::filter::{matches_all, FieldValues};
use cove_model::world::{Tags, World};
use cove_model::{AwsError, AwsResult};
use cove_shapes::ec2::{CreateTagsRequest, DeleteTagsRequest, DescribeTagsRequest, Tag};
use serde_json::{json, Value};

/// The resource type DescribeTags reports for an id, if the resource exists.
fn resource_type(world: &World, id: &str, region: &str) -> AwsResult<&'static str> {
    let prefix = cove_model::ids::prefix_of(id);
    let found = |exists: bool, ty: &'static str, not_found: fn(&str) -> AwsError| {
        if exists {
            Ok(ty)
        } else {
            Err(not_found(id))
        }
    };
    match prefix {
        "vpc" => found(
            world.vpcs.get(id).is_some_and(|x| x.region == region),
            "vpc",
            vpc_not_found,
        ),
        "subnet" => found(
            world.subnets.get(id).is_some_and(|x| x.region == region),
            "subnet",
            subnet_not_found,
        ),
        "sg" => found(
            world
                .security_groups
                .get(id)
                .is_some_and(|x| x.region == region),
            "security-group",
            group_not_found,
        ),
        "sgr" => found(
            world.security_groups.values().any(|g| {
                g.region == region && g.ingress.iter().chain(&g.egress).any(|r| r.id == id)
            }),
            "security-group-rule",
            |id| {
                AwsError::client(
                    "InvalidSecurityGroupRuleId.NotFound",
                    format!("The security group rule ID '{id}' does not exist"),
                )
            },
        ),
        "acl" => found(
            world
                .network_acls
                .get(id)
                .is_some_and(|x| x.region == region),
            "network-acl",
            network_acl_not_found,
        ),
        "rtb" => found(
            world
                .route_tables
                .get(id)
                .is_some_and(|x| x.region == region),
            "route-table",
            route_table_not_found,
        ),
        "igw" => found(
            world
                .internet_gateways
                .get(id)
                .is_some_and(|x| x.region == region),
            "internet-gateway",
            igw_not_found,
        ),
        "eipalloc" => found(
            world.addresses.get(id).is_some_and(|x| x.region == region),
            "elastic-ip",
            allocation_not_found,
        ),
        "nat" => found(
            world
                .nat_gateways
                .get(id)
                .is_some_and(|x| x.region == region),
            "natgateway",
            nat_not_found,
        ),
        "vpce" => found(
            world
                .vpc_endpoints
                .get(id)
                .is_some_and(|x| x.region == region),
            "vpc-endpoint",
            endpoint_not_found,
        ),
        "eni" => found(
            world
                .network_interfaces
                .get(id)
                .is_some_and(|x| x.region == region),
            "network-interface",
            eni_not_found,
        ),
        "fl" => found(
            world.flow_logs.get(id).is_some_and(|x| x.region == region),
            "vpc-flow-log",
            flow_log_not_found,
        ),
        "pl" => found(
            world
                .managed_prefix_lists
                .get(id)
                .is_some_and(|x| x.region == region),
            "prefix-list",
            crate::prefix_lists::prefix_list_not_found,
        ),
        "pcx" => found(
            world
                .vpc_peering_connections
                .get(id)
                .is_some_and(|x| x.region == region),
            "vpc-peering-connection",
            crate::peering::peering_not_found,
        ),
        "dopt" => found(
            world
                .dhcp_options
                .get(id)
                .is_some_and(|x| x.region == region),
            "dhcp-options",
            crate::dhcp_options::not_found,
        ),
        "nip" => found(
            world
                .network_insights_paths
                .get(id)
                .is_some_and(|x| x.region == region),
            "network-insights-path",
            crate::insights::path_not_found,
        ),
        "nia" => found(
            world
                .network_insights_analyses
                .get(id)
                .is_some_and(|x| x.region == region),
            "network-insights-analysis",
            crate::insights::analysis_not_found,
        ),
        _ => Err(AwsError::client(
            "InvalidID",
            format!("The ID '{id}' is not valid"),
        )),
    }
}

fn requested_tags(tags: &Option<Vec<Tag>>) -> Vec<(String, Option<String>)> {
    list(tags)
        .iter()
        .map(|t| (t.key.clone().unwrap_or_default(), t.value.clone()))
        .collect()
}

pub fn create_tags(r: &Req, q: &CreateTagsRequest) -> AwsResult<Value> {
    let resources = list(&q.resources);
    if resources.is_empty() {
        return Err(AwsError::missing_parameter("ResourceId"));
    }
    let tags = requested_tags(&q.tags);
    if tags.is_empty() {
        return Err(AwsError::missing_parameter("Tag"));
    }
    for (k, v) in &tags {
        validate_tag(k, v.as_deref().unwrap_or_default())?;
    }
    let region = r.region();
    r.write(|tx| {
        let mut updates: Vec<(String, Tags)> = Vec::new();
        for id in resources {
            resource_type(&tx.world, id, region)?;
            let mut current = tx.world.tags_of(id);
            for (k, v) in &tags {
                current.insert(k.clone(), v.clone().unwrap_or_default());
            }
            check_tag_count(&current)?;
            updates.push((id.clone(), current));
        }
        for (id, t) in updates {
            tx.set_tags(&id, t);
        }
        Ok(json!({}))
    })
}

pub fn delete_tags(r: &Req, q: &DeleteTagsRequest) -> AwsResult<Value> {
    let resources = list(&q.resources);
    if resources.is_empty() {
        return Err(AwsError::missing_parameter("ResourceId"));
    }
    let tags = requested_tags(&q.tags);
    let region = r.region();
    r.write(|tx| {
        let mut updates: Vec<(String, Tags)> = Vec::new();
        for id in resources {
            resource_type(&tx.world, id, region)?;
            let mut current = tx.world.tags_of(id);
            if tags.is_empty() {
                current.clear();
            }
            for (k, v) in &tags {
                // A value given deletes the tag only when it matches.
                if v.as_ref().is_none_or(|v| current.get(k) == Some(v)) {
                    current.remove(k);
                }
            }
            updates.push((id.clone(), current));
        }
        for (id, t) in updates {
            tx.set_tags(&id, t);
        }
        Ok(json!({}))
    })
}

pub fn describe_tags(r: &Req, q: &DescribeTagsRequest) -> AwsResult<Value> {
    let w = r.world();
    let region = r.region();
    let filters = filters(&q.filters);
    // A negative MaxResults reads as 0 (an empty page and a token), as 0 does.
    let max = q
        .max_results
        .map(|m| usize::try_from(m.max(0)).unwrap_or(usize::MAX));
    let start = q.next_token.clone().unwrap_or_default();
    let mut rows = Vec::new();
    let mut next = None;
    for (id, tags) in w
        .tags
        .iter()
        .filter(|(id, _)| id.as_str() >= start.as_str())
    {
        let Ok(ty) = resource_type(&w, id, region) else {
            continue;
        };
        for (k, v) in tags {
            let field = |name: &str| -> FieldValues {
                match name {
                    "key" => one(k),
                    "value" => one(v),
                    "resource-id" => one(id),
                    "resource-type" => one(ty),
                    other => other.strip_prefix("tag:").map(|tk| {
                        if tk == k {
                            vec![v.clone()]
                        } else {
                            vec![]
                        }
                    }),
                }
            };
            let keep = matches_all(&filters, field).map_err(|n| {
                AwsError::invalid_parameter_value(format!("The filter '{n}' is invalid"))
            })?;
            if keep {
                rows.push((
                    id.clone(),
                    json!({"Key": k, "ResourceId": id, "ResourceType": ty, "Value": v}),
                ));
            }
        }
        if max.is_some_and(|m| rows.len() >= m) {
            break;
        }
    }
    // Page on resource boundaries, so a resource's tags never split across pages.
    if let Some(m) = max {
        if rows.len() > m {
            let cut_id = rows[m].0.clone();
            let first_of_cut = rows.iter().position(|(id, _)| *id == cut_id).unwrap_or(0);
            let keep = if first_of_cut == 0 { m } else { first_of_cut };
            next = Some(rows[keep].0.clone());
            rows.truncate(keep);
        } else if let Some((last, _)) = rows.last() {
            let after = w
                .tags
                .range(last.clone()..)
                .nth(1)
                .map(|(id, _)| id.clone());
            if rows.len() == m {
                next = after;
            }
        }
    }
    Ok(paged(
        json!({"Tags": rows.into_iter().map(|(_, v)| v).collect::<Vec<_>>()}),
        next,
    ))
}
