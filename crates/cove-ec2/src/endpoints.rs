//! VPC endpoints and the services they reach: the region's endpoint-service
//! catalogue (S3, SageMaker API/runtime/notebook/studio, CloudWatch Logs,
//! STS), managed prefix lists, gateway endpoints (prefix-list routes in route
//! tables) and interface endpoints (one requester-managed ENI per subnet,
//! private DNS), with their `pending` → `available` lifecycle.

use crate::common::*;
use crate::{interfaces, subnets};
use cove_model::filter::{matches_all, FieldValues};
use cove_model::ids::new_id;
use cove_model::region;
use cove_model::services;
use cove_model::vpc::*;
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_shapes::ec2;
use cove_store::Tx;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The policy an endpoint has when none is given (or after `ResetPolicy`).
pub const DEFAULT_POLICY: &str = r#"{"Version":"2008-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}"#;

/// The hosted zone AWS reports for regional endpoint DNS names.
pub const VPCE_HOSTED_ZONE_ID: &str = "Z7HUB22UULQXV";

/// The requester id of the ENIs AWS makes for interface endpoints.
pub const ENDPOINT_ENI_REQUESTER: &str = "amazon-vpce";

/// How long an interface endpoint stays `pending`.
const PENDING_MILLIS: i128 = 1000;

pub use cove_model::services::{service_for, services, ServiceEntry};

fn no_such_service(name: &str) -> AwsError {
    AwsError::client(
        "InvalidServiceName",
        format!("The Vpc Endpoint Service '{name}' does not exist"),
    )
}

fn invalid_parameter(message: impl Into<String>) -> AwsError {
    AwsError::client("InvalidParameter", message)
}

fn render_service(s: &ServiceEntry, region: &str) -> Value {
    let zones = region::zones(region);
    let mut v = json!({
        "ServiceName": s.name,
        "ServiceId": s.service_id(),
        "ServiceType": [{"ServiceType": s.service_type}],
        "ServiceRegion": region,
        "AvailabilityZoneIds": zones.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(),
        "AvailabilityZones": zones.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        "Owner": "amazon",
        "BaseEndpointDnsNames": [s.base_dns],
    });
    if let Some(dns) = &s.private_dns {
        v["PrivateDnsName"] = json!(dns);
        v["PrivateDnsNames"] = json!([{"PrivateDnsName": dns}]);
    }
    v["VpcEndpointPolicySupported"] = json!(true);
    v["AcceptanceRequired"] = json!(false);
    v["ManagesVpcEndpoints"] = json!(false);
    v["PayerResponsibility"] = json!("ServiceOwner");
    if s.private_dns.is_some() {
        v["PrivateDnsNameVerificationState"] = json!("verified");
    }
    v["SupportedIpAddressTypes"] = json!(["ipv4"]);
    v
}

fn service_field(s: &ServiceEntry, region: &str, name: &str) -> FieldValues {
    match name {
        "service-name" => one(&s.name),
        "service-type" => one(s.service_type),
        "service-region" => one(region),
        "owner" => one("amazon"),
        "supported-ip-address-types" => one("ipv4"),
        "tag-key" | "tag-value" => Some(vec![]),
        n if n.starts_with("tag:") => Some(vec![]),
        _ => None,
    }
}

fn bad_filter(name: String) -> AwsError {
    AwsError::invalid_parameter_value(format!("The filter '{name}' is invalid"))
}

pub fn describe_vpc_endpoint_services(
    r: &Req,
    q: &ec2::DescribeVpcEndpointServicesRequest,
) -> AwsResult<Value> {
    let region = r.region();
    let catalogue = services(region);
    let names = list(&q.service_names);
    for n in names {
        if !catalogue.iter().any(|s| &s.name == n) {
            return Err(no_such_service(n));
        }
    }
    let regions = list(&q.service_regions);
    let filters = filters(&q.filters);
    let mut selected = Vec::new();
    for s in catalogue {
        if !names.is_empty() && !names.contains(&s.name) {
            continue;
        }
        if !regions.is_empty() && !regions.iter().any(|x| x == region) {
            continue;
        }
        if matches_all(&filters, |n| service_field(&s, region, n)).map_err(bad_filter)? {
            selected.push(s);
        }
    }
    let start = match q.next_token.as_deref() {
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|i| *i <= selected.len())
            .ok_or_else(|| {
                AwsError::client("InvalidNextToken", format!("The token '{t}' is invalid."))
            })?,
        None => 0,
    };
    let limit = q
        .max_results
        .map(|m| usize::try_from(m.max(1)).unwrap_or(usize::MAX))
        .unwrap_or(usize::MAX);
    let page: Vec<&ServiceEntry> = selected.iter().skip(start).take(limit).collect();
    let end = start + page.len();
    let next = (end < selected.len()).then(|| end.to_string());
    let page_names: BTreeSet<&str> = page.iter().map(|s| s.name.as_str()).collect();
    let details: Vec<Value> = page.iter().map(|s| render_service(s, region)).collect();
    Ok(paged(
        json!({"ServiceNames": page_names, "ServiceDetails": details}),
        next,
    ))
}

fn prefix_list_field(id: &str, name: &str, filter: &str) -> FieldValues {
    match filter {
        "prefix-list-id" => one(id),
        "prefix-list-name" => one(name),
        _ => None,
    }
}

pub fn describe_prefix_lists(r: &Req, q: &ec2::DescribePrefixListsRequest) -> AwsResult<Value> {
    let lists = region::prefix_lists(r.region());
    let ids = list(&q.prefix_list_ids);
    for id in ids {
        if !lists.iter().any(|(l, _, _)| l == id) {
            return Err(AwsError::client(
                "InvalidPrefixListID.NotFound",
                format!("The prefix list ID '{id}' does not exist"),
            ));
        }
    }
    let filters = filters(&q.filters);
    let mut out = Vec::new();
    for (id, name, cidrs) in lists {
        if !ids.is_empty() && !ids.contains(&id) {
            continue;
        }
        if matches_all(&filters, |f| prefix_list_field(&id, &name, f)).map_err(bad_filter)? {
            out.push(json!({"PrefixListId": id, "PrefixListName": name, "Cidrs": cidrs}));
        }
    }
    Ok(json!({"PrefixLists": out}))
}

/// The endpoint-specific DNS names of an interface endpoint: a regional one,
/// one per zone of its subnets, and the service's own name with private DNS.
pub fn dns_entries(
    endpoint_id: &str,
    base_dns: &str,
    zones: &[String],
    private_dns: Option<&str>,
) -> Vec<Value> {
    let mut out: Vec<Value> = services::endpoint_dns_names(endpoint_id, base_dns, zones)
        .into_iter()
        .map(|(name, _)| json!({"DnsName": name, "HostedZoneId": VPCE_HOSTED_ZONE_ID}))
        .collect();
    if let Some(dns) = private_dns {
        out.push(json!({"DnsName": dns, "HostedZoneId": "ZONEIDPENDING"}));
    }
    out
}

pub fn render_endpoint(world: &World, e: &VpcEndpoint, account: &str) -> Value {
    let interface = e.endpoint_type == EndpointType::Interface;
    let dns = if interface {
        match service_for(&e.region, &e.service_name, e.endpoint_type) {
            Some(s) => {
                let zones = world.endpoint_zones(e);
                let private = s.private_dns.as_deref().filter(|_| e.private_dns_enabled);
                dns_entries(&e.id, &s.base_dns, &zones, private)
            }
            None => vec![],
        }
    } else {
        vec![]
    };
    with_tags(
        json!({
            "VpcEndpointId": e.id,
            "VpcEndpointType": e.endpoint_type,
            "VpcId": e.vpc_id,
            "ServiceName": e.service_name,
            "State": e.state,
            "PolicyDocument": e.policy_document.as_deref().unwrap_or(DEFAULT_POLICY),
            "RouteTableIds": e.route_table_ids,
            "SubnetIds": e.subnet_ids,
            "Groups": interfaces::group_set(world, &e.group_ids),
            "IpAddressType": "ipv4",
            "DnsOptions": {"DnsRecordIpType": "ipv4"},
            "PrivateDnsEnabled": e.private_dns_enabled,
            "RequesterManaged": false,
            "NetworkInterfaceIds": e.network_interface_ids,
            "DnsEntries": dns,
            "CreationTimestamp": e.create_time,
            "OwnerId": account,
        }),
        world,
        &e.id,
        "Tags",
    )
}

/// Interface endpoints leave `pending` once they are a second old.
pub fn advance_endpoints(tx: &mut Tx) {
    let now = time::OffsetDateTime::now_utc();
    let ready: Vec<VpcEndpoint> = tx
        .world
        .vpc_endpoints
        .values()
        .filter(|e| e.state == EndpointState::Pending)
        .filter(|e| {
            time::OffsetDateTime::parse(
                &e.create_time,
                &time::format_description::well_known::Rfc3339,
            )
            .map(|t| (now - t).whole_milliseconds() >= PENDING_MILLIS)
            .unwrap_or(true)
        })
        .map(|x| (**x).clone())
        .collect();
    for mut e in ready {
        e.state = EndpointState::Available;
        tx.put(e);
    }
}

fn check_policy(doc: &str) -> AwsResult<()> {
    match serde_json::from_str::<Value>(doc) {
        Ok(Value::Object(_)) => Ok(()),
        _ => Err(AwsError::client(
            "InvalidPolicyDocument",
            "The policy document is not a valid JSON policy document.",
        )),
    }
}

/// Whether a request asks for an address type other than IPv4.
fn ipv6_asked(ip_type: &Option<String>, dns: &Option<ec2::DnsOptionsSpecification>) -> bool {
    ip_type.as_deref().is_some_and(|t| t != "ipv4")
        || dns
            .as_ref()
            .and_then(|d| d.dns_record_ip_type.as_deref())
            .is_some_and(|t| t != "ipv4")
}

fn dedup(ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in ids {
        if !out.contains(id) {
            out.push(id.clone());
        }
    }
    out
}

/// The managed prefix list a gateway service's routes point at.
fn prefix_list_of(region: &str, service: &str) -> AwsResult<String> {
    region::prefix_lists(region)
        .into_iter()
        .find(|(_, name, _)| name == service)
        .map(|(id, _, _)| id)
        .ok_or_else(|| AwsError::internal(format!("no prefix list for {service}")))
}

/// Checks route tables a gateway endpoint is to be added to.
fn check_tables_for_add(
    world: &World,
    region: &str,
    vpc_id: &str,
    ids: &[String],
    pl: &str,
) -> AwsResult<Vec<RouteTable>> {
    let mut out = Vec::new();
    for id in ids {
        let t = find::<RouteTable>(world, id, region, |t| &t.region, route_table_not_found)?;
        if t.vpc_id != vpc_id {
            return Err(invalid_parameter(format!(
                "route table {id} is not in {vpc_id}"
            )));
        }
        if t.routes
            .iter()
            .any(|r| r.destination_prefix_list_id.as_deref() == Some(pl))
        {
            return Err(AwsError::client(
                "RouteAlreadyExists",
                format!(
                    "route table {id} already has a route with destination-prefix-list-id {pl}"
                ),
            ));
        }
        out.push(t.clone());
    }
    Ok(out)
}

fn add_route(tx: &mut Tx, mut t: RouteTable, pl: &str, endpoint_id: &str) {
    t.routes.push(Route {
        destination_cidr: None,
        destination_prefix_list_id: Some(pl.to_string()),
        target: RouteTarget::VpcEndpoint(endpoint_id.to_string()),
        origin: RouteOrigin::CreateRoute,
    });
    tx.put(t);
}

/// Removes the routes that target an endpoint from the given tables (all
/// tables when `only` is `None`).
fn remove_routes(tx: &mut Tx, endpoint_id: &str, only: Option<&[String]>) {
    let target = RouteTarget::VpcEndpoint(endpoint_id.to_string());
    let changed: Vec<RouteTable> = tx
        .world
        .route_tables
        .values()
        .filter(|t| only.is_none_or(|ids| ids.contains(&t.id)))
        .filter(|t| t.routes.iter().any(|r| r.target == target))
        .map(|x| (**x).clone())
        .collect();
    for mut t in changed {
        t.routes.retain(|r| r.target != target);
        tx.put(t);
    }
}

/// Checks subnets to be added to an interface endpoint whose other subnets
/// are `kept`: each exists, is in the VPC, and no two share a zone.
fn check_subnets(
    world: &World,
    region: &str,
    vpc_id: &str,
    kept: &[String],
    added: &[String],
) -> AwsResult<Vec<Subnet>> {
    let mut zones: Vec<String> = kept
        .iter()
        .filter_map(|id| world.subnets.get(id))
        .map(|s| s.availability_zone.clone())
        .collect();
    let mut out = Vec::new();
    for id in added {
        let s = find::<Subnet>(world, id, region, |s| &s.region, subnet_not_found)?;
        if s.vpc_id != vpc_id {
            return Err(invalid_parameter(format!(
                "The subnet ID '{id}' does not belong to the VPC '{vpc_id}'"
            )));
        }
        if zones.contains(&s.availability_zone) {
            return Err(AwsError::client(
                "DuplicateSubnetsInSameZone",
                format!("Found another VPC endpoint subnet in the availability zone of {id}. VPC endpoint subnets should be in different availability zones supported by the VPC endpoint service."),
            ));
        }
        zones.push(s.availability_zone.clone());
        out.push(s.clone());
    }
    Ok(out)
}

/// Whether private DNS may be turned on for an endpoint of `service` in `vpc`.
fn check_private_dns(
    world: &World,
    vpc: &Vpc,
    service: &ServiceEntry,
    self_id: Option<&str>,
) -> AwsResult<()> {
    let Some(dns) = &service.private_dns else {
        return Ok(());
    };
    if !(vpc.enable_dns_support && vpc.enable_dns_hostnames) {
        return Err(invalid_parameter(format!(
            "Enabling private DNS requires both enableDnsSupport and enableDnsHostnames VPC attributes set to true for {}",
            vpc.id
        )));
    }
    let conflict = world.vpc_endpoints.values().any(|e| {
        e.vpc_id == vpc.id
            && Some(e.id.as_str()) != self_id
            && e.private_dns_enabled
            && service_for(&e.region, &e.service_name, e.endpoint_type)
                .and_then(|s| s.private_dns)
                .as_ref()
                == Some(dns)
    });
    if conflict {
        return Err(invalid_parameter(format!(
            "private-dns-enabled cannot be set because there is already a conflicting DNS domain for {dns} in the VPC {}",
            vpc.id
        )));
    }
    Ok(())
}

/// Allocates an address in each subnet, then makes the endpoint's ENIs.
fn make_enis(
    tx: &mut Tx,
    endpoint_id: &str,
    subnets_to_use: &[Subnet],
    group_ids: &[String],
) -> AwsResult<Vec<String>> {
    let mut ips = Vec::new();
    for s in subnets_to_use {
        ips.push(subnets::allocate_ip(&tx.world, s, None)?);
    }
    let mut ids = Vec::new();
    for (s, ip) in subnets_to_use.iter().zip(ips) {
        let eni = interfaces::new_eni(
            tx,
            s,
            ip,
            group_ids.to_vec(),
            format!("VPC Endpoint Interface {endpoint_id}"),
            InterfaceType::VpcEndpoint,
            true,
            Some(ENDPOINT_ENI_REQUESTER.to_string()),
        );
        ids.push(eni.id);
    }
    Ok(ids)
}

pub fn create_vpc_endpoint(r: &Req, q: &ec2::CreateVpcEndpointRequest) -> AwsResult<Value> {
    let vpc_id = need(&q.vpc_id, "VpcId")?.to_string();
    let service_name = need(&q.service_name, "ServiceName")?.to_string();
    let raw_type = q.vpc_endpoint_type.as_deref().unwrap_or("Gateway");
    let endpoint_type: EndpointType = raw_type.parse().map_err(|()| {
        AwsError::invalid_parameter_value(format!(
            "The VPC endpoint type {raw_type} is not supported by Cove: only Gateway and Interface endpoints are."
        ))
    })?;
    for (unsupported, given) in [
        ("ServiceNetworkArn", &q.service_network_arn),
        ("ResourceConfigurationArn", &q.resource_configuration_arn),
    ] {
        if given.is_some() {
            return Err(AwsError::invalid_parameter_value(format!(
                "{unsupported} is not supported by Cove."
            )));
        }
    }
    if !list(&q.subnet_configurations).is_empty() {
        return Err(AwsError::invalid_parameter_value(
            "SubnetConfigurations is not supported by Cove.",
        ));
    }
    if ipv6_asked(&q.ip_address_type, &q.dns_options) {
        return Err(AwsError::invalid_parameter_value(
            "Only the ipv4 address type is supported by Cove.",
        ));
    }
    if let Some(sr) = q.service_region.as_deref() {
        if sr != r.region() {
            return Err(AwsError::invalid_parameter_value(
                "Cross-region VPC endpoints are not supported by Cove.",
            ));
        }
    }
    let policy = match q.policy_document.as_deref() {
        Some(p) => {
            check_policy(p)?;
            p.to_string()
        }
        None => DEFAULT_POLICY.to_string(),
    };
    let route_table_ids = dedup(list(&q.route_table_ids));
    let subnet_ids = dedup(list(&q.subnet_ids));
    let group_ids = dedup(list(&q.security_group_ids));
    let gateway = endpoint_type == EndpointType::Gateway;
    if gateway && (!subnet_ids.is_empty() || !group_ids.is_empty()) {
        return Err(invalid_parameter(
            "SubnetIds and SecurityGroupIds are not supported for Gateway endpoints.",
        ));
    }
    if !gateway && !route_table_ids.is_empty() {
        return Err(invalid_parameter(
            "RouteTableIds is not supported for Interface endpoints.",
        ));
    }
    if gateway && q.private_dns_enabled == Some(true) {
        return Err(invalid_parameter(
            "PrivateDnsEnabled is not supported for Gateway endpoints.",
        ));
    }
    let catalogue = services(r.region());
    if !catalogue.iter().any(|s| s.name == service_name) {
        return Err(no_such_service(&service_name));
    }
    let service = catalogue
        .into_iter()
        .find(|s| s.name == service_name && s.service_type == endpoint_type)
        .ok_or_else(|| {
            invalid_parameter(format!(
                "The VPC endpoint service {service_name} does not support the endpoint type {endpoint_type}"
            ))
        })?;
    if !gateway && subnet_ids.is_empty() {
        return Err(AwsError::missing_parameter("SubnetIds"));
    }
    if group_ids.len() > interfaces::MAX_GROUPS_PER_INTERFACE {
        return Err(interfaces::groups_limit_error());
    }
    let want_private_dns =
        !gateway && q.private_dns_enabled.unwrap_or(true) && service.private_dns.is_some();
    let tags = tag_specs(r, &q.tag_specifications, "vpc-endpoint")?;
    let (region, account) = (r.region(), r.account());
    let token = q.client_token.clone();
    r.write(|tx| {
        let vpc = find::<Vpc>(&tx.world, &vpc_id, region, |v| &v.region, vpc_not_found)?.clone();
        let mut ep = VpcEndpoint {
            id: new_id("vpce"),
            region: region.to_string(),
            vpc_id: vpc_id.clone(),
            service_name: service_name.clone(),
            endpoint_type,
            policy_document: Some(policy.clone()),
            route_table_ids: vec![],
            subnet_ids: vec![],
            group_ids: vec![],
            network_interface_ids: vec![],
            private_dns_enabled: false,
            state: if gateway {
                EndpointState::Available
            } else {
                EndpointState::Pending
            },
            create_time: now(),
        };
        if gateway {
            let pl = prefix_list_of(region, &service_name)?;
            let tables = check_tables_for_add(&tx.world, region, &vpc_id, &route_table_ids, &pl)?;
            for t in tables {
                add_route(tx, t, &pl, &ep.id);
            }
            ep.route_table_ids = route_table_ids.clone();
        } else {
            let chosen = check_subnets(&tx.world, region, &vpc_id, &[], &subnet_ids)?;
            let groups = interfaces::check_groups(&tx.world, region, &vpc_id, &group_ids)?;
            if want_private_dns {
                check_private_dns(&tx.world, &vpc, &service, None)?;
            }
            ep.network_interface_ids = make_enis(tx, &ep.id, &chosen, &groups)?;
            ep.subnet_ids = subnet_ids.clone();
            ep.group_ids = groups;
            ep.private_dns_enabled = want_private_dns;
        }
        tx.put(ep.clone());
        if !tags.is_empty() {
            tx.set_tags(&ep.id, tags.clone());
        }
        let mut out = json!({"VpcEndpoint": render_endpoint(&tx.world, &ep, account)});
        if let Some(t) = &token {
            out["ClientToken"] = json!(t);
        }
        Ok(out)
    })
}

pub fn modify_vpc_endpoint(r: &Req, q: &ec2::ModifyVpcEndpointRequest) -> AwsResult<Value> {
    let id = need(&q.vpc_endpoint_id, "VpcEndpointId")?.to_string();
    let add_tables = dedup(list(&q.add_route_table_ids));
    let remove_tables = dedup(list(&q.remove_route_table_ids));
    let add_subnets = dedup(list(&q.add_subnet_ids));
    let remove_subnets = dedup(list(&q.remove_subnet_ids));
    let add_groups = dedup(list(&q.add_security_group_ids));
    let remove_groups = dedup(list(&q.remove_security_group_ids));
    let private_dns = q.private_dns_enabled;
    let reset = q.reset_policy == Some(true);
    let policy = q.policy_document.clone();
    if reset && policy.is_some() {
        return Err(AwsError::invalid_parameter_combination(
            "PolicyDocument and ResetPolicy cannot be used together.",
        ));
    }
    if let Some(p) = &policy {
        check_policy(p)?;
    }
    if ipv6_asked(&q.ip_address_type, &q.dns_options) {
        return Err(AwsError::invalid_parameter_value(
            "Only the ipv4 address type is supported by Cove.",
        ));
    }
    if !list(&q.subnet_configurations).is_empty() {
        return Err(AwsError::invalid_parameter_value(
            "SubnetConfigurations is not supported by Cove.",
        ));
    }
    for (add, remove, what) in [
        (&add_tables, &remove_tables, "route table"),
        (&add_subnets, &remove_subnets, "subnet"),
        (&add_groups, &remove_groups, "security group"),
    ] {
        if let Some(both) = add.iter().find(|x| remove.contains(x)) {
            return Err(invalid_parameter(format!(
                "The {what} {both} cannot be both added and removed."
            )));
        }
    }
    let region = r.region();
    r.write(|tx| {
        let mut ep =
            find::<VpcEndpoint>(&tx.world, &id, region, |e| &e.region, endpoint_not_found)?.clone();
        let gateway = ep.endpoint_type == EndpointType::Gateway;
        let interface_params = !add_subnets.is_empty()
            || !remove_subnets.is_empty()
            || !add_groups.is_empty()
            || !remove_groups.is_empty()
            || private_dns == Some(true);
        if gateway && interface_params {
            return Err(invalid_parameter(
                "Subnets, security groups and private DNS are not supported for Gateway endpoints.",
            ));
        }
        if !gateway && (!add_tables.is_empty() || !remove_tables.is_empty()) {
            return Err(invalid_parameter(
                "Route tables are not supported for Interface endpoints.",
            ));
        }
        if reset {
            ep.policy_document = Some(DEFAULT_POLICY.to_string());
        } else if let Some(p) = &policy {
            ep.policy_document = Some(p.clone());
        }
        if gateway {
            let pl = prefix_list_of(region, &ep.service_name)?;
            let new_tables: Vec<String> = add_tables
                .iter()
                .filter(|t| !ep.route_table_ids.contains(t))
                .cloned()
                .collect();
            let tables = check_tables_for_add(&tx.world, region, &ep.vpc_id, &new_tables, &pl)?;
            for t in &remove_tables {
                find::<RouteTable>(&tx.world, t, region, |t| &t.region, route_table_not_found)?;
            }
            remove_routes(tx, &ep.id, Some(&remove_tables));
            for t in tables {
                add_route(tx, t, &pl, &ep.id);
            }
            ep.route_table_ids.retain(|t| !remove_tables.contains(t));
            ep.route_table_ids.extend(new_tables);
        } else {
            let vpc =
                find::<Vpc>(&tx.world, &ep.vpc_id, region, |v| &v.region, vpc_not_found)?.clone();
            // Subnets: validate the additions against the subnets that stay.
            for s in &remove_subnets {
                find::<Subnet>(&tx.world, s, region, |s| &s.region, subnet_not_found)?;
            }
            let kept: Vec<String> = ep
                .subnet_ids
                .iter()
                .filter(|s| !remove_subnets.contains(s))
                .cloned()
                .collect();
            let new_subnets: Vec<String> = add_subnets
                .iter()
                .filter(|s| !ep.subnet_ids.contains(s))
                .cloned()
                .collect();
            let chosen = check_subnets(&tx.world, region, &ep.vpc_id, &kept, &new_subnets)?;
            // Security groups.
            if !add_groups.is_empty() {
                interfaces::check_groups(&tx.world, region, &ep.vpc_id, &add_groups)?;
            }
            let mut groups: Vec<String> = ep
                .group_ids
                .iter()
                .filter(|g| !remove_groups.contains(g))
                .cloned()
                .collect();
            for g in &add_groups {
                if !groups.contains(g) {
                    groups.push(g.clone());
                }
            }
            if groups.len() > interfaces::MAX_GROUPS_PER_INTERFACE {
                return Err(interfaces::groups_limit_error());
            }
            // Private DNS.
            if let Some(want) = private_dns {
                let service = service_for(region, &ep.service_name, ep.endpoint_type);
                let has_dns = service.as_ref().is_some_and(|s| s.private_dns.is_some());
                if want && has_dns && !ep.private_dns_enabled {
                    if let Some(s) = &service {
                        check_private_dns(&tx.world, &vpc, s, Some(&ep.id))?;
                    }
                }
                ep.private_dns_enabled = want && has_dns;
            }
            // Everything is valid: change the ENIs.
            let removed_enis: Vec<String> = ep
                .network_interface_ids
                .iter()
                .filter(|e| {
                    tx.world
                        .network_interfaces
                        .get(*e)
                        .is_some_and(|e| remove_subnets.contains(&e.subnet_id))
                })
                .cloned()
                .collect();
            for e in &removed_enis {
                interfaces::drop_eni(tx, e);
            }
            ep.network_interface_ids
                .retain(|e| !removed_enis.contains(e));
            let new_enis = make_enis(tx, &ep.id, &chosen, &groups)?;
            ep.network_interface_ids.extend(new_enis);
            ep.subnet_ids = kept;
            ep.subnet_ids.extend(new_subnets);
            ep.group_ids = groups;
            for e in &ep.network_interface_ids {
                if let Some(eni) = tx.world.network_interfaces.get(e) {
                    if eni.group_ids != ep.group_ids {
                        let mut eni = (**eni).clone();
                        eni.group_ids = ep.group_ids.clone();
                        tx.put(eni);
                    }
                }
            }
        }
        tx.put(ep);
        Ok(json!({"Return": true}))
    })
}

pub fn delete_vpc_endpoints(r: &Req, q: &ec2::DeleteVpcEndpointsRequest) -> AwsResult<Value> {
    let ids = list(&q.vpc_endpoint_ids);
    if ids.is_empty() {
        return Err(AwsError::missing_parameter("VpcEndpointIds"));
    }
    let region = r.region();
    r.write(|tx| {
        let mut unsuccessful = Vec::new();
        for id in ids {
            let ep = match tx.world.vpc_endpoints.get(id) {
                Some(e) if e.region == region => e.clone(),
                _ => {
                    unsuccessful.push(json!({
                        "Error": {
                            "Code": "InvalidVpcEndpoint.NotFound",
                            "Message": format!("The VpcEndpoint Id '{id}' does not exist"),
                        },
                        "ResourceId": id,
                    }));
                    continue;
                }
            };
            remove_routes(tx, &ep.id, None);
            for e in &ep.network_interface_ids {
                if tx.world.network_interfaces.contains_key(e) {
                    interfaces::drop_eni(tx, e);
                }
            }
            tx.delete::<VpcEndpoint>(&ep.id);
        }
        Ok(json!({"Unsuccessful": unsuccessful}))
    })
}

fn endpoint_field(w: &World, e: &VpcEndpoint, account: &str, name: &str) -> FieldValues {
    match name {
        "service-name" => one(&e.service_name),
        "vpc-id" => one(&e.vpc_id),
        "vpc-endpoint-id" => one(&e.id),
        "vpc-endpoint-state" => one(e.state),
        "vpc-endpoint-type" => one(e.endpoint_type),
        "ip-address-type" => one("ipv4"),
        _ => common_field(w, &e.id, account, name),
    }
}

pub fn describe_vpc_endpoints(r: &Req, q: &ec2::DescribeVpcEndpointsRequest) -> AwsResult<Value> {
    describe_all(
        r,
        &Describe::of(q, "VpcEndpointIds", &q.vpc_endpoint_ids),
        "VpcEndpoints",
        |e: &VpcEndpoint| &e.region,
        endpoint_not_found,
        endpoint_field,
        render_endpoint,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interfaces::tests::{call_typed as call, fixture, ACCOUNT, REGION};

    fn code(r: AwsResult<Value>) -> String {
        r.err().map(|e| e.code).unwrap_or_default()
    }

    #[test]
    fn catalogue() {
        let all = services("eu-west-1");
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"com.amazonaws.eu-west-1.sagemaker.api"));
        assert!(names.contains(&"aws.sagemaker.eu-west-1.notebook"));
        assert_eq!(
            all.iter()
                .filter(|s| s.name == "com.amazonaws.eu-west-1.s3")
                .count(),
            2
        );
        let api = service_for(
            "eu-west-1",
            "com.amazonaws.eu-west-1.sagemaker.api",
            EndpointType::Interface,
        )
        .unwrap();
        assert_eq!(
            api.private_dns.as_deref(),
            Some("api.sagemaker.eu-west-1.amazonaws.com")
        );
        assert_eq!(api.base_dns, "api.sagemaker.eu-west-1.vpce.amazonaws.com");
        let id = api.service_id();
        assert!(id.starts_with("vpce-svc-"));
        assert_eq!(id.len(), "vpce-svc-".len() + 17);
        assert_eq!(id, api.service_id());
        let s3g = service_for(
            "eu-west-1",
            "com.amazonaws.eu-west-1.s3",
            EndpointType::Gateway,
        )
        .unwrap();
        let s3i = service_for(
            "eu-west-1",
            "com.amazonaws.eu-west-1.s3",
            EndpointType::Interface,
        )
        .unwrap();
        assert_ne!(s3g.service_id(), s3i.service_id());
        assert!(s3g.private_dns.is_none());
        let sts = service_for(
            "eu-west-1",
            "com.amazonaws.eu-west-1.sts",
            EndpointType::Interface,
        )
        .unwrap();
        assert_eq!(sts.base_dns, "sts.eu-west-1.vpce.amazonaws.com");
        assert!(service_for(
            "eu-west-1",
            "com.amazonaws.eu-west-1.sts",
            EndpointType::Gateway
        )
        .is_none());
    }

    #[test]
    fn dns_names() {
        let e = dns_entries(
            "vpce-0123",
            "logs.us-east-1.vpce.amazonaws.com",
            &["us-east-1a".to_string()],
            Some("logs.us-east-1.amazonaws.com"),
        );
        assert_eq!(e.len(), 3);
        let first = e[0]["DnsName"].as_str().unwrap();
        let tag = &first["vpce-0123-".len().."vpce-0123-".len() + 8];
        assert!(tag.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            first,
            format!("vpce-0123-{tag}.logs.us-east-1.vpce.amazonaws.com")
        );
        assert_eq!(
            e[1]["DnsName"],
            format!("vpce-0123-{tag}-us-east-1a.logs.us-east-1.vpce.amazonaws.com")
        );
        assert_eq!(e[1]["HostedZoneId"], VPCE_HOSTED_ZONE_ID);
        assert_eq!(e[2]["DnsName"], "logs.us-east-1.amazonaws.com");
        assert_eq!(e[2]["HostedZoneId"], "ZONEIDPENDING");
        assert_eq!(
            dns_entries("vpce-0123", "logs.us-east-1.vpce.amazonaws.com", &[], None),
            e[..1].to_vec()
        );
    }

    #[test]
    fn describe_services_and_prefix_lists() {
        let f = fixture();
        let out = call(&f.store, describe_vpc_endpoint_services, json!({})).unwrap();
        assert_eq!(out["ServiceDetails"].as_array().unwrap().len(), 10);
        assert_eq!(out["ServiceNames"].as_array().unwrap().len(), 9);
        let out = call(
            &f.store,
            describe_vpc_endpoint_services,
            json!({"ServiceNames": [format!("com.amazonaws.{REGION}.s3")],
                   "Filters": [{"Name": "service-type", "Values": ["Gateway"]}]}),
        )
        .unwrap();
        assert_eq!(out["ServiceDetails"].as_array().unwrap().len(), 1);
        assert_eq!(
            out["ServiceDetails"][0]["ServiceType"][0]["ServiceType"],
            "Gateway"
        );
        let bad = call(
            &f.store,
            describe_vpc_endpoint_services,
            json!({"ServiceNames": ["com.amazonaws.us-east-1.nope"]}),
        );
        assert_eq!(code(bad), "InvalidServiceName");
        let page = call(
            &f.store,
            describe_vpc_endpoint_services,
            json!({"MaxResults": 5}),
        )
        .unwrap();
        assert_eq!(page["ServiceDetails"].as_array().unwrap().len(), 5);
        let rest = call(
            &f.store,
            describe_vpc_endpoint_services,
            json!({"MaxResults": 5, "NextToken": page["NextToken"]}),
        )
        .unwrap();
        assert_eq!(rest["ServiceDetails"].as_array().unwrap().len(), 5);
        assert!(rest.get("NextToken").is_none());

        let pl = call(
            &f.store,
            describe_prefix_lists,
            json!({"Filters": [{"Name": "prefix-list-name", "Values": ["*.s3"]}]}),
        )
        .unwrap();
        assert_eq!(
            pl["PrefixLists"][0]["PrefixListId"],
            region::s3_prefix_list_id(REGION)
        );
        assert_eq!(
            pl["PrefixLists"][0]["Cidrs"][0],
            region::S3_CIDR.to_string()
        );
    }

    #[test]
    fn gateway_endpoint_routes() {
        let f = fixture();
        let s3 = format!("com.amazonaws.{REGION}.s3");
        let pl = region::s3_prefix_list_id(REGION);
        let other = call(
            &f.store,
            create_vpc_endpoint,
            json!({"VpcId": f.vpc, "ServiceName": s3, "RouteTableIds": [f.other_rtb]}),
        );
        assert_eq!(code(other), "InvalidParameter");
        let out = call(
            &f.store,
            create_vpc_endpoint,
            json!({"VpcId": f.vpc, "ServiceName": s3, "RouteTableIds": [f.rtb]}),
        )
        .unwrap();
        let ep = &out["VpcEndpoint"];
        assert_eq!(ep["State"], "available");
        assert_eq!(ep["VpcEndpointType"], "Gateway");
        assert_eq!(ep["PolicyDocument"], DEFAULT_POLICY);
        assert_eq!(ep["DnsEntries"], json!([]));
        let id = ep["VpcEndpointId"].as_str().unwrap().to_string();
        let w = f.store.snapshot();
        let rt = w.route_tables.get(&f.rtb).unwrap();
        assert!(rt
            .routes
            .iter()
            .any(
                |r| r.destination_prefix_list_id.as_deref() == Some(pl.as_str())
                    && r.target == RouteTarget::VpcEndpoint(id.clone())
            ));
        let dup = call(
            &f.store,
            create_vpc_endpoint,
            json!({"VpcId": f.vpc, "ServiceName": s3, "RouteTableIds": [f.rtb]}),
        );
        assert_eq!(code(dup), "RouteAlreadyExists");
        let bad_policy = call(
            &f.store,
            modify_vpc_endpoint,
            json!({"VpcEndpointId": id, "PolicyDocument": "{nope"}),
        );
        assert_eq!(code(bad_policy), "InvalidPolicyDocument");
        call(
            &f.store,
            modify_vpc_endpoint,
            json!({"VpcEndpointId": id, "RemoveRouteTableIds": [f.rtb]}),
        )
        .unwrap();
        let w = f.store.snapshot();
        assert_eq!(w.route_tables.get(&f.rtb).unwrap().routes.len(), 1);
        assert!(w.vpc_endpoints.get(&id).unwrap().route_table_ids.is_empty());
        call(
            &f.store,
            modify_vpc_endpoint,
            json!({"VpcEndpointId": id, "AddRouteTableIds": [f.rtb]}),
        )
        .unwrap();
        let del = call(
            &f.store,
            delete_vpc_endpoints,
            json!({"VpcEndpointIds": [id, "vpce-nope"]}),
        )
        .unwrap();
        assert_eq!(del["Unsuccessful"].as_array().unwrap().len(), 1);
        assert_eq!(
            del["Unsuccessful"][0]["Error"]["Code"],
            "InvalidVpcEndpoint.NotFound"
        );
        assert_eq!(del["Unsuccessful"][0]["ResourceId"], "vpce-nope");
        let w = f.store.snapshot();
        assert!(w.vpc_endpoints.is_empty());
        assert_eq!(w.route_tables.get(&f.rtb).unwrap().routes.len(), 1);
    }

    #[test]
    fn interface_endpoint_enis_and_dns() {
        let f = fixture();
        let api = format!("com.amazonaws.{REGION}.sagemaker.api");
        let wrong_type = call(
            &f.store,
            create_vpc_endpoint,
            json!({"VpcId": f.vpc, "ServiceName": api}),
        );
        assert_eq!(code(wrong_type), "InvalidParameter");
        let unknown = call(
            &f.store,
            create_vpc_endpoint,
            json!({"VpcId": f.vpc, "ServiceName": "com.amazonaws.us-east-1.nope"}),
        );
        assert_eq!(code(unknown), "InvalidServiceName");
        let same_zone = call(
            &f.store,
            create_vpc_endpoint,
            json!({"VpcId": f.vpc, "ServiceName": api, "VpcEndpointType": "Interface",
                   "SubnetIds": [f.subnet_a, f.subnet_a2]}),
        );
        assert_eq!(code(same_zone), "DuplicateSubnetsInSameZone");
        let no_subnets = call(
            &f.store,
            create_vpc_endpoint,
            json!({"VpcId": f.vpc, "ServiceName": api, "VpcEndpointType": "Interface"}),
        );
        assert_eq!(code(no_subnets), "MissingParameter");
        assert!(f.store.snapshot().network_interfaces.is_empty());

        let out = call(
            &f.store,
            create_vpc_endpoint,
            json!({"VpcId": f.vpc, "ServiceName": api, "VpcEndpointType": "Interface",
                   "SubnetIds": [f.subnet_a, f.subnet_b], "ClientToken": "t",
                   "TagSpecifications": [{"ResourceType": "vpc-endpoint",
                                          "Tags": [{"Key": "k", "Value": "v"}]}]}),
        )
        .unwrap();
        assert_eq!(out["ClientToken"], "t");
        let ep = &out["VpcEndpoint"];
        let id = ep["VpcEndpointId"].as_str().unwrap().to_string();
        assert_eq!(ep["State"], "pending");
        assert_eq!(ep["PrivateDnsEnabled"], true);
        assert_eq!(ep["Groups"][0]["GroupId"], f.sg);
        assert_eq!(ep["Tags"][0]["Key"], "k");
        assert_eq!(ep["NetworkInterfaceIds"].as_array().unwrap().len(), 2);
        let dns = ep["DnsEntries"].as_array().unwrap();
        assert_eq!(dns.len(), 4);
        assert_eq!(dns[3]["DnsName"], "api.sagemaker.us-east-1.amazonaws.com");
        let w = f.store.snapshot();
        assert_eq!(w.network_interfaces.len(), 2);
        for e in w.network_interfaces.values() {
            assert!(e.requester_managed);
            assert_eq!(e.status.as_str(), "in-use");
            assert_eq!(e.interface_type.as_str(), "vpc_endpoint");
            assert_eq!(e.description, format!("VPC Endpoint Interface {id}"));
        }

        let conflict = call(
            &f.store,
            create_vpc_endpoint,
            json!({"VpcId": f.vpc, "ServiceName": api, "VpcEndpointType": "Interface",
                   "SubnetIds": [f.subnet_a]}),
        );
        assert_eq!(code(conflict), "InvalidParameter");
        // Without private DNS a second endpoint for the service is fine.
        call(
            &f.store,
            create_vpc_endpoint,
            json!({"VpcId": f.vpc, "ServiceName": api, "VpcEndpointType": "Interface",
                   "SubnetIds": [f.subnet_a], "PrivateDnsEnabled": false}),
        )
        .unwrap();

        // Modify: swap subnet b for nothing, add a group to endpoint and ENIs.
        call(
            &f.store,
            modify_vpc_endpoint,
            json!({"VpcEndpointId": id, "RemoveSubnetIds": [f.subnet_b],
                   "AddSecurityGroupIds": ["sg-3"]}),
        )
        .unwrap();
        let w = f.store.snapshot();
        let e = w.vpc_endpoints.get(&id).unwrap();
        assert_eq!(e.subnet_ids, vec![f.subnet_a.clone()]);
        assert_eq!(e.network_interface_ids.len(), 1);
        let eni = w
            .network_interfaces
            .get(&e.network_interface_ids[0])
            .unwrap();
        assert_eq!(eni.group_ids, vec!["sg-1".to_string(), "sg-3".to_string()]);
        assert_eq!(w.network_interfaces.len(), 2);
        let dup_zone = call(
            &f.store,
            modify_vpc_endpoint,
            json!({"VpcEndpointId": id, "AddSubnetIds": [f.subnet_a2]}),
        );
        assert_eq!(code(dup_zone), "DuplicateSubnetsInSameZone");

        // Lifecycle: pending until a second has passed.
        f.store
            .write_as(ACCOUNT, |tx| {
                let mut e = tx
                    .world
                    .vpc_endpoints
                    .get(&id)
                    .map(|x| (**x).clone())
                    .unwrap();
                e.create_time = "2020-01-01T00:00:00Z".into();
                tx.put(e);
                advance_endpoints(tx);
                Ok(())
            })
            .unwrap();
        let d = call(
            &f.store,
            describe_vpc_endpoints,
            json!({"Filters": [{"Name": "vpc-endpoint-state", "Values": ["available"]},
                               {"Name": "vpc-endpoint-type", "Values": ["Interface"]}]}),
        )
        .unwrap();
        assert_eq!(d["VpcEndpoints"].as_array().unwrap().len(), 1);
        assert_eq!(d["VpcEndpoints"][0]["VpcEndpointId"], id.as_str());

        call(
            &f.store,
            delete_vpc_endpoints,
            json!({"VpcEndpointIds": [id]}),
        )
        .unwrap();
        assert_eq!(f.store.snapshot().network_interfaces.len(), 1);
    }

    #[test]
    fn private_dns_needs_vpc_dns_attributes() {
        let f = fixture();
        f.store
            .write_as(ACCOUNT, |tx| {
                let mut v = tx.world.vpcs.get(&f.vpc).map(|x| (**x).clone()).unwrap();
                v.enable_dns_hostnames = false;
                tx.put(v);
                Ok(())
            })
            .unwrap();
        let logs = format!("com.amazonaws.{REGION}.logs");
        let err = call(
            &f.store,
            create_vpc_endpoint,
            json!({"VpcId": f.vpc, "ServiceName": logs, "VpcEndpointType": "Interface",
                   "SubnetIds": [f.subnet_a]}),
        )
        .unwrap_err();
        assert_eq!(err.code, "InvalidParameter");
        assert!(err.message.contains("enableDnsHostnames"));
        // S3 interface endpoints have no private DNS name, so it is ignored.
        let out = call(
            &f.store,
            create_vpc_endpoint,
            json!({"VpcId": f.vpc, "ServiceName": format!("com.amazonaws.{REGION}.s3"),
                   "VpcEndpointType": "Interface", "SubnetIds": [f.subnet_a],
                   "SecurityGroupIds": ["sg-3"]}),
        )
        .unwrap();
        assert_eq!(out["VpcEndpoint"]["PrivateDnsEnabled"], false);
        assert_eq!(out["VpcEndpoint"]["Groups"][0]["GroupName"], "g3");
        let wrong_vpc_group = call(
            &f.store,
            create_vpc_endpoint,
            json!({"VpcId": f.vpc, "ServiceName": format!("com.amazonaws.{REGION}.s3"),
                   "VpcEndpointType": "Interface", "SubnetIds": [f.subnet_b],
                   "SecurityGroupIds": [f.other_sg]}),
        );
        assert_eq!(code(wrong_vpc_group), "InvalidParameterValue");
        let by_type = cove_model::filter::Filter {
            name: "service-type".into(),
            values: vec!["Interface".into()],
        };
        assert!(matches_all(&[by_type], |n| {
            service_field(
                &service_for(REGION, &logs, EndpointType::Interface).unwrap(),
                REGION,
                n,
            )
        })
        .unwrap());
        let _ = &f.other_vpc;
    }
}
