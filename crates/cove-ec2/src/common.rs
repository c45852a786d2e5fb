//! What every EC2 handler shares: the request's context and store, the
//! typed request's common members (filters, paging, tags at creation),
//! lookups that answer AWS's `*.NotFound` errors, describe filtering and
//! pagination, and timestamps.

use base64::Engine;
use cove_model::filter::{matches_all, FieldValues, Filter};
use cove_model::world::{Resource, Tags, World};
use cove_model::{AwsError, AwsResult};
use cove_shapes::ec2;
use cove_store::{Store, Tx};
use cove_wire::RequestContext;
use serde_json::{json, Value};
use std::sync::Arc;

/// One EC2 request's context and the store; the request's members come
/// to each handler as its typed request.
pub struct Req<'a> {
    pub ctx: &'a RequestContext,
    pub store: &'a Store,
}

impl<'a> Req<'a> {
    pub fn new(ctx: &'a RequestContext, store: &'a Store) -> Req<'a> {
        Req { ctx, store }
    }
    pub fn region(&self) -> &str {
        &self.ctx.region
    }
    pub fn account(&self) -> &str {
        self.ctx.account_id()
    }
    /// What the caller's account owns: no call sees another account's
    /// resources, except the peering connections it accepts (stored as
    /// their requester's, they are its too).
    pub fn world(&self) -> Arc<World> {
        let view = self.store.view(self.account());
        let all = self.store.snapshot();
        let accepted: Vec<_> = all
            .vpc_peering_connections
            .values()
            .filter(|p| {
                p.accepter_owner == self.account()
                    && !view.vpc_peering_connections.contains_key(&p.id)
            })
            .cloned()
            .collect();
        if accepted.is_empty() {
            return view;
        }
        let mut w = (*view).clone();
        for p in accepted {
            w.vpc_peering_connections.insert(p.id.clone(), p);
        }
        Arc::new(w)
    }
    /// A transaction on the caller's account's view (see [`Store::write_as`]).
    pub fn write<T>(&self, f: impl FnOnce(&mut Tx) -> AwsResult<T>) -> AwsResult<T> {
        self.store.write_as(self.account(), f)
    }
}

/// A member the operation cannot do without: EC2's `MissingParameter`,
/// named as AWS names it. The generated EC2 types leave every member
/// optional so that this error comes from here, as AWS words it.
pub fn need<'v>(member: &'v Option<String>, name: &str) -> AwsResult<&'v str> {
    member
        .as_deref()
        .ok_or_else(|| AwsError::missing_parameter(name))
}

/// An `AttributeBooleanValue` member's value (`{ "Value": true }`).
pub fn attribute(member: &Option<ec2::AttributeBooleanValue>) -> Option<bool> {
    member.as_ref().and_then(|a| a.value)
}

/// A list member, empty when absent.
pub fn list<T>(member: &Option<Vec<T>>) -> &[T] {
    member.as_deref().unwrap_or_default()
}

/// The request's filters in the form the matcher takes; a filter without a
/// name or values matches as one with an empty name or no values.
pub fn filters(member: &Option<Vec<ec2::Filter>>) -> Vec<Filter> {
    list(member)
        .iter()
        .map(|f| Filter {
            name: f.name.clone().unwrap_or_default(),
            values: f.values.clone().unwrap_or_default(),
        })
        .collect()
}

/// Tags requested in `TagSpecifications` for a resource of `resource_type`;
/// a service calling for its caller (CloudFormation) may set its own
/// `aws:<service>:` tags.
pub fn tag_specs(
    r: &Req,
    specs: &Option<Vec<ec2::TagSpecification>>,
    resource_type: &str,
) -> AwsResult<Tags> {
    let reserved = r.ctx.on_behalf_of.map(|service| format!("aws:{service}:"));
    let mut tags = Tags::new();
    for spec in list(specs) {
        let rt = spec.resource_type.as_deref().unwrap_or_default();
        if rt != resource_type {
            return Err(AwsError::invalid_parameter_value(format!(
                "'{rt}' is not a valid taggable resource type for this operation."
            )));
        }
        for t in list(&spec.tags) {
            let key = t.key.clone().unwrap_or_default();
            let value = t.value.as_deref().unwrap_or_default();
            if !reserved
                .as_ref()
                .is_some_and(|prefix| key.starts_with(prefix.as_str()))
            {
                validate_tag(&key, value)?;
            }
            tags.insert(key, value.to_string());
        }
    }
    check_tag_count(&tags)?;
    Ok(tags)
}

/// The filter and paging members of a generated `Describe*Request`, which
/// [`Describe`] reads. Not every describe call pages, and two name their
/// filters `Filter`.
pub trait Listing {
    fn filter_members(&self) -> &Option<Vec<ec2::Filter>>;
    fn max_results(&self) -> Option<i64> {
        None
    }
    fn next_token(&self) -> Option<&str> {
        None
    }
}

macro_rules! listing {
    (paged: $($t:ident . $filters:ident),*; unpaged: $($u:ident),*) => {
        $(impl Listing for ec2::$t {
            fn filter_members(&self) -> &Option<Vec<ec2::Filter>> {
                &self.$filters
            }
            fn max_results(&self) -> Option<i64> {
                self.max_results
            }
            fn next_token(&self) -> Option<&str> {
                self.next_token.as_deref()
            }
        })*
        $(impl Listing for ec2::$u {
            fn filter_members(&self) -> &Option<Vec<ec2::Filter>> {
                &self.filters
            }
        })*
    };
}

listing! {
    paged:
        DescribeDhcpOptionsRequest.filters,
        DescribeFlowLogsRequest.filter,
        DescribeInternetGatewaysRequest.filters,
        DescribeNatGatewaysRequest.filter,
        DescribeNetworkAclsRequest.filters,
        DescribeNetworkInsightsAnalysesRequest.filters,
        DescribeNetworkInsightsPathsRequest.filters,
        DescribeNetworkInterfacesRequest.filters,
        DescribePrefixListsRequest.filters,
        DescribeRouteTablesRequest.filters,
        DescribeSecurityGroupRulesRequest.filters,
        DescribeSecurityGroupsRequest.filters,
        DescribeSubnetsRequest.filters,
        DescribeTagsRequest.filters,
        DescribeVpcEndpointServicesRequest.filters,
        DescribeVpcEndpointsRequest.filters,
        DescribeVpcPeeringConnectionsRequest.filters,
        DescribeVpcsRequest.filters;
    unpaged:
        DescribeAddressesRequest,
        DescribeAvailabilityZonesRequest,
        DescribeRegionsRequest
}

pub const MAX_TAGS: usize = 50;

pub fn validate_tag(key: &str, value: &str) -> AwsResult<()> {
    if key.is_empty() || key.chars().count() > 128 {
        return Err(AwsError::client(
            "InvalidParameterValue",
            format!("Tag key '{key}' must be between 1 and 128 characters."),
        ));
    }
    if value.chars().count() > 256 {
        return Err(AwsError::client(
            "InvalidParameterValue",
            format!("Tag value for key '{key}' exceeds 256 characters."),
        ));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(AwsError::client(
            "InvalidParameterValue",
            "Tag keys starting with 'aws:' are reserved for internal use",
        ));
    }
    Ok(())
}

pub fn check_tag_count(tags: &Tags) -> AwsResult<()> {
    if tags.len() > MAX_TAGS {
        return Err(AwsError::client(
            "TagLimitExceeded",
            format!("The maximum number of tags per resource ({MAX_TAGS}) has been exceeded."),
        ));
    }
    Ok(())
}

/// Tags in EC2's `[{Key, Value}]` form.
pub fn tag_list(tags: &Tags) -> Value {
    Value::Array(
        tags.iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}

/// Adds `Tags` (or the member named `key`) to a rendered resource when it has any.
pub fn with_tags(mut v: Value, world: &World, id: &str, key: &str) -> Value {
    if let Some(tags) = world.tags.get(id) {
        if !tags.is_empty() {
            v[key] = tag_list(tags);
        }
    }
    v
}

/// Filter values every resource answers: `tag:Key`, `tag-key`, `tag-value`, `owner-id`.
pub fn common_field(world: &World, id: &str, account: &str, name: &str) -> FieldValues {
    let tags = world.tags.get(id);
    if let Some(key) = name.strip_prefix("tag:") {
        return Some(tags.and_then(|t| t.get(key)).cloned().into_iter().collect());
    }
    match name {
        "tag-key" => Some(
            tags.map(|t| t.keys().cloned().collect())
                .unwrap_or_default(),
        ),
        "tag-value" => Some(
            tags.map(|t| t.values().cloned().collect())
                .unwrap_or_default(),
        ),
        "owner-id" => Some(vec![account.to_string()]),
        _ => None,
    }
}

/// A filter field with one value, in the text AWS describes it with.
pub fn one(s: impl std::fmt::Display) -> FieldValues {
    Some(vec![s.to_string()])
}

pub fn opt(s: Option<impl std::fmt::Display>) -> FieldValues {
    Some(s.map(|s| s.to_string()).into_iter().collect())
}

pub fn flag(b: bool) -> FieldValues {
    one(if b { "true" } else { "false" })
}

/// The rules of one describe call: explicit ids, filters and pagination.
pub struct Describe<'r> {
    pub ids_param: &'r str,
    pub ids: Vec<String>,
    pub filters: Vec<Filter>,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
}

impl<'r> Describe<'r> {
    /// The rules of describe request `q`, whose explicit ids (member
    /// `ids_member`) are `ids`.
    pub fn of(q: &impl Listing, ids_member: &'r str, ids: &Option<Vec<String>>) -> Describe<'r> {
        Describe {
            ids_param: ids_member,
            ids: list(ids).to_vec(),
            filters: filters(q.filter_members()),
            max_results: q.max_results(),
            next_token: q.next_token().map(str::to_string),
        }
    }

    /// Selects, filters and pages resources of one kind in the request's
    /// region. `not_found` names the error for an unknown explicit id.
    pub fn run<'w, R: Resource>(
        &self,
        world: &'w World,
        region_of: impl Fn(&R) -> &str,
        region: &str,
        not_found: impl Fn(&str) -> AwsError,
        fields: impl Fn(&R, &str) -> FieldValues,
    ) -> AwsResult<(Vec<&'w R>, Option<String>)> {
        if self.max_results.is_some() && !self.ids.is_empty() {
            return Err(AwsError::invalid_parameter_combination(format!(
                "The parameter {} cannot be used with the parameter maxResults",
                self.ids_param
            )));
        }
        let table = R::table(world);
        for id in &self.ids {
            match table.get(id) {
                Some(r) if region_of(r) == region => {}
                _ => return Err(not_found(id)),
            }
        }
        let start = match &self.next_token {
            Some(t) => Some(decode_token(t)?),
            None => None,
        };
        let mut out = Vec::new();
        let mut next = None;
        let limit = self
            .max_results
            .map(|m| usize::try_from(m.max(1)).unwrap_or(usize::MAX));
        let candidates: Box<dyn Iterator<Item = (&'w String, &'w Arc<R>)>> = match &start {
            Some(s) => Box::new(table.range(s.clone()..)),
            None => Box::new(table.iter()),
        };
        for (id, r) in candidates {
            let r: &'w R = r;
            if region_of(r) != region || (!self.ids.is_empty() && !self.ids.contains(id)) {
                continue;
            }
            let keep = matches_all(&self.filters, |name| fields(r, name)).map_err(|name| {
                AwsError::invalid_parameter_value(format!("The filter '{name}' is invalid"))
            })?;
            if !keep {
                continue;
            }
            if limit.is_some_and(|l| out.len() == l) {
                next = Some(encode_token(id));
                break;
            }
            out.push(r);
        }
        Ok((out, next))
    }
}

fn encode_token(id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

fn decode_token(t: &str) -> AwsResult<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| AwsError::client("InvalidNextToken", format!("The token '{t}' is invalid.")))
}

/// A describe answer `{key: items, NextToken?}`. Built by moving the items in:
/// `json!` would copy every `Value` it embeds.
pub fn listing(key: &str, items: Vec<Value>, next: Option<String>) -> Value {
    let mut out = serde_json::Map::new();
    out.insert(key.to_string(), Value::Array(items));
    paged(Value::Object(out), next)
}

/// A whole describe call for one resource kind in the request's region: the
/// explicit ids in `ids_member`, the filters (`field` answers a filter name
/// for a resource), paging, and each resource rendered under `key`.
pub fn describe_all<R: Resource>(
    r: &Req,
    d: &Describe,
    key: &str,
    region_of: impl Fn(&R) -> &str,
    not_found: impl Fn(&str) -> AwsError,
    field: impl Fn(&World, &R, &str, &str) -> FieldValues,
    render: impl Fn(&World, &R, &str) -> Value,
) -> AwsResult<Value> {
    let w = r.world();
    let account = r.account();
    let (items, next) = d.run::<R>(&w, region_of, r.region(), not_found, |x, n| {
        field(&w, x, account, n)
    })?;
    let items = items.iter().map(|x| render(&w, x, account)).collect();
    Ok(listing(key, items, next))
}

/// Adds `NextToken` to a describe answer when there is another page.
pub fn paged(mut out: Value, next: Option<String>) -> Value {
    if let Some(t) = next {
        out["NextToken"] = Value::String(t);
    }
    out
}

/// Current time in EC2's timestamp form.
pub fn now() -> String {
    cove_model::ids::now_rfc3339()
}

/// Looks a resource up in the request's region, or answers `code`'s NotFound.
pub fn find<'w, R: Resource>(
    world: &'w World,
    id: &str,
    region: &str,
    region_of: impl Fn(&R) -> &str,
    not_found: impl Fn(&str) -> AwsError,
) -> AwsResult<&'w R> {
    R::table(world)
        .get(id)
        .map(Arc::as_ref)
        .filter(|r| region_of(r) == region)
        .ok_or_else(|| not_found(id))
}

macro_rules! not_found_fns {
    ($($fn:ident => $code:literal, $what:literal;)*) => {
        $(pub fn $fn(id: &str) -> AwsError { AwsError::not_found($code, $what, id) })*
    };
}

not_found_fns! {
    vpc_not_found => "InvalidVpcID.NotFound", "vpc";
    subnet_not_found => "InvalidSubnetID.NotFound", "subnet";
    route_table_not_found => "InvalidRouteTableID.NotFound", "routeTable";
    network_acl_not_found => "InvalidNetworkAclID.NotFound", "network acl";
    igw_not_found => "InvalidInternetGatewayID.NotFound", "internetGateway";
    allocation_not_found => "InvalidAllocationID.NotFound", "allocation";
    nat_not_found => "NatGatewayNotFound", "nat gateway";
    endpoint_not_found => "InvalidVpcEndpointId.NotFound", "VPC endpoint";
    eni_not_found => "InvalidNetworkInterfaceID.NotFound", "network interface";
    flow_log_not_found => "InvalidFlowLogId.NotFound", "flow log";
}

pub fn group_not_found(id: &str) -> AwsError {
    AwsError::client(
        "InvalidGroup.NotFound",
        format!("The security group '{id}' does not exist"),
    )
}

pub fn association_not_found(id: &str) -> AwsError {
    AwsError::client(
        "InvalidAssociationID.NotFound",
        format!("The association ID '{id}' does not exist"),
    )
}

/// The VPC named by `VpcId`, or the region's default VPC when none is given.
pub fn vpc_or_default(req: &Req, vpc_id: Option<&str>, world: &World) -> AwsResult<String> {
    match vpc_id {
        Some(id) => {
            find::<cove_model::vpc::Vpc>(world, id, req.region(), |v| &v.region, vpc_not_found)
                .map(|v| v.id.clone())
        }
        None => world
            .vpcs
            .values()
            .find(|v| v.region == req.region() && v.is_default)
            .map(|v| v.id.clone())
            .ok_or_else(|| AwsError::client("VPCIdNotSpecified", "No default VPC for this user")),
    }
}
