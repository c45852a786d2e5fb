//! Route tables: the main table every VPC gets, custom tables, routes to
//! internet gateways, NAT gateways and network interfaces (plus the
//! prefix-list routes gateway endpoints manage), subnet and gateway (edge)
//! associations, and each route's `active` / `blackhole` state, which is
//! computed from the world at render time so it never goes stale.

use crate::common::*;
use cove_model::cidr::Cidr;
use cove_model::filter::FieldValues;
use cove_model::ids::new_id;
use cove_model::vpc::*;
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_shapes::ec2::{
    AssociateRouteTableRequest, CreateRouteRequest, CreateRouteTableRequest, DeleteRouteRequest,
    DeleteRouteTableRequest, DescribeRouteTablesRequest, DisassociateRouteTableRequest,
    ReplaceRouteRequest, ReplaceRouteTableAssociationRequest,
};
use cove_store::Tx;
use serde_json::{json, Value};

/// The `local` route every table of a VPC carries for each of its CIDR blocks.
pub(crate) fn local_route_for(cidr: Cidr) -> Route {
    Route {
        destination_cidr: Some(cidr),
        destination_prefix_list_id: None,
        target: RouteTarget::Local,
        origin: RouteOrigin::CreateRouteTable,
    }
}

fn new_table(vpc: &Vpc) -> RouteTable {
    RouteTable {
        id: new_id("rtb"),
        region: vpc.region.clone(),
        vpc_id: vpc.id.clone(),
        routes: vpc.cidrs().into_iter().map(local_route_for).collect(),
        associations: Vec::new(),
    }
}

/// Creates a new VPC's main route table: the local route and the main association.
pub fn new_main_table(tx: &mut Tx, vpc: &Vpc) {
    let mut table = new_table(vpc);
    table.associations.push(RouteTableAssociation {
        id: new_id("rtbassoc"),
        subnet_id: None,
        gateway_id: None,
        main: true,
    });
    tx.put(table);
}

/// Removes a deleted subnet's explicit association, wherever it is.
pub fn drop_subnet(tx: &mut Tx, subnet_id: &str) {
    let touched: Vec<RouteTable> = tx
        .world
        .route_tables
        .values()
        .filter(|t| {
            t.associations
                .iter()
                .any(|a| a.subnet_id.as_deref() == Some(subnet_id))
        })
        .map(|x| (**x).clone())
        .collect();
    for mut t in touched {
        t.associations
            .retain(|a| a.subnet_id.as_deref() != Some(subnet_id));
        tx.put(t);
    }
}

/// Whether a route's target can carry traffic right now: `active`, or
/// `blackhole` when the target is gone (or, for an internet gateway, no
/// longer attached to the table's VPC; for a NAT gateway, deleted or failed).
pub fn route_state(world: &World, table: &RouteTable, route: &Route) -> &'static str {
    let active = match &route.target {
        RouteTarget::Local => true,
        RouteTarget::Gateway(id) => world
            .internet_gateways
            .get(id)
            .is_some_and(|g| g.attached_vpc_id.as_deref() == Some(table.vpc_id.as_str())),
        RouteTarget::NatGateway(id) => world.nat_gateways.get(id).is_some_and(|n| {
            !matches!(
                n.state,
                NatGatewayState::Deleted | NatGatewayState::Deleting | NatGatewayState::Failed
            )
        }),
        RouteTarget::VpcEndpoint(id) => world.vpc_endpoints.contains_key(id),
        RouteTarget::NetworkInterface(id) => world.network_interfaces.contains_key(id),
        RouteTarget::VpcPeeringConnection(id) => world
            .vpc_peering_connections
            .get(id)
            .is_some_and(|p| crate::peering::current_status(p) == PeeringStatus::Active),
    };
    if active {
        "active"
    } else {
        "blackhole"
    }
}

fn render_route(world: &World, table: &RouteTable, route: &Route) -> Value {
    let mut v = json!({
        "Origin": route.origin,
        "State": route_state(world, table, route),
    });
    if let Some(c) = &route.destination_cidr {
        v["DestinationCidrBlock"] = json!(c);
    }
    if let Some(p) = &route.destination_prefix_list_id {
        v["DestinationPrefixListId"] = json!(p);
    }
    let (member, id) = route.target.member();
    v[member] = json!(id);
    v
}

fn render_association(table: &RouteTable, a: &RouteTableAssociation) -> Value {
    let mut v = json!({
        "Main": a.main,
        "RouteTableAssociationId": a.id,
        "RouteTableId": table.id,
        "AssociationState": {"State": "associated"},
    });
    if let Some(s) = &a.subnet_id {
        v["SubnetId"] = json!(s);
    }
    if let Some(g) = &a.gateway_id {
        v["GatewayId"] = json!(g);
    }
    v
}

pub fn render_route_table(world: &World, t: &RouteTable, account: &str) -> Value {
    let mut v = json!({
        "RouteTableId": t.id,
        "VpcId": t.vpc_id,
        "OwnerId": account,
        "PropagatingVgws": [],
    });
    v["Routes"] = Value::Array(t.routes.iter().map(|r| render_route(world, t, r)).collect());
    v["Associations"] = Value::Array(
        t.associations
            .iter()
            .map(|a| render_association(t, a))
            .collect(),
    );
    with_tags(v, world, &t.id, "Tags")
}

pub fn create_route_table(r: &Req, q: &CreateRouteTableRequest) -> AwsResult<Value> {
    let vpc_id = need(&q.vpc_id, "VpcId")?.to_string();
    let tags = tag_specs(r, &q.tag_specifications, "route-table")?;
    let (region, account) = (r.region(), r.account());
    let token = q.client_token.clone();
    r.write(|tx| {
        let vpc = find::<Vpc>(&tx.world, &vpc_id, region, |v| &v.region, vpc_not_found)?.clone();
        let table = new_table(&vpc);
        tx.put(table.clone());
        if !tags.is_empty() {
            tx.set_tags(&table.id, tags.clone());
        }
        let mut out = json!({"RouteTable": render_route_table(&tx.world, &table, account)});
        if let Some(t) = &token {
            out["ClientToken"] = json!(t);
        }
        Ok(out)
    })
}

pub fn delete_route_table(r: &Req, q: &DeleteRouteTableRequest) -> AwsResult<Value> {
    let id = need(&q.route_table_id, "RouteTableId")?.to_string();
    let region = r.region();
    r.write(|tx| {
        let table =
            find::<RouteTable>(&tx.world, &id, region, |t| &t.region, route_table_not_found)?;
        // The main association, subnet associations and gateway (edge)
        // associations all keep a table in use.
        if !table.associations.is_empty() {
            return Err(AwsError::dependency_violation(format!(
                "The routeTable '{id}' has dependencies and cannot be deleted."
            )));
        }
        // Gateway endpoints that listed this table simply stop listing it:
        // their routes go away with the table.
        let endpoints: Vec<VpcEndpoint> = tx
            .world
            .vpc_endpoints
            .values()
            .filter(|e| e.route_table_ids.contains(&id))
            .map(|x| (**x).clone())
            .collect();
        for mut e in endpoints {
            e.route_table_ids.retain(|t| t != &id);
            tx.put(e);
        }
        tx.delete::<RouteTable>(&id);
        Ok(json!({}))
    })
}

fn route_gateway_ids(route: &Route) -> Option<String> {
    match &route.target {
        RouteTarget::Local => Some("local".into()),
        RouteTarget::Gateway(id) | RouteTarget::VpcEndpoint(id) => Some(id.clone()),
        _ => None,
    }
}

fn table_field(w: &World, t: &RouteTable, account: &str, name: &str) -> FieldValues {
    let assoc = |f: &dyn Fn(&RouteTableAssociation) -> Option<String>| -> FieldValues {
        Some(t.associations.iter().filter_map(f).collect())
    };
    let routes = |f: &dyn Fn(&Route) -> Option<String>| -> FieldValues {
        Some(t.routes.iter().filter_map(f).collect())
    };
    match name {
        "route-table-id" => one(&t.id),
        "vpc-id" => one(&t.vpc_id),
        "association.route-table-association-id" => assoc(&|a| Some(a.id.clone())),
        "association.route-table-id" => assoc(&|_| Some(t.id.clone())),
        "association.subnet-id" => assoc(&|a| a.subnet_id.clone()),
        "association.gateway-id" => assoc(&|a| a.gateway_id.clone()),
        // One value per association, as AWS: a table without associations
        // matches neither `true` nor `false`.
        "association.main" => assoc(&|a| Some(a.main.to_string())),
        "route.destination-cidr-block" => routes(&|r| r.destination_cidr.map(|c| c.to_string())),
        "route.destination-prefix-list-id" => routes(&|r| r.destination_prefix_list_id.clone()),
        "route.gateway-id" => routes(&route_gateway_ids),
        "route.nat-gateway-id" => routes(&|r| match &r.target {
            RouteTarget::NatGateway(id) => Some(id.clone()),
            _ => None,
        }),
        "route.network-interface-id" => routes(&|r| match &r.target {
            RouteTarget::NetworkInterface(id) => Some(id.clone()),
            _ => None,
        }),
        "route.vpc-peering-connection-id" => routes(&|r| match &r.target {
            RouteTarget::VpcPeeringConnection(id) => Some(id.clone()),
            _ => None,
        }),
        "route.origin" => routes(&|r| Some(r.origin.to_string())),
        "route.state" => routes(&|r| Some(route_state(w, t, r).to_string())),
        // Valid AWS filters for targets Cove never stores: they match nothing.
        "route.destination-ipv6-cidr-block"
        | "route.egress-only-internet-gateway-id"
        | "route.instance-id"
        | "route.transit-gateway-id" => Some(Vec::new()),
        _ => common_field(w, &t.id, account, name),
    }
}

pub fn describe_route_tables(r: &Req, q: &DescribeRouteTablesRequest) -> AwsResult<Value> {
    describe_all(
        r,
        &Describe::of(q, "RouteTableIds", &q.route_table_ids),
        "RouteTables",
        |t: &RouteTable| &t.region,
        route_table_not_found,
        table_field,
        render_route_table,
    )
}

/// A route's destination, canonical.
#[derive(Debug, Clone, PartialEq)]
enum Destination {
    Cidr(Cidr),
    PrefixList(String),
}

impl Destination {
    fn matches(&self, route: &Route) -> bool {
        match self {
            Destination::Cidr(c) => route.destination_cidr == Some(*c),
            Destination::PrefixList(p) => {
                route.destination_prefix_list_id.as_deref() == Some(p.as_str())
            }
        }
    }
    fn text(&self) -> String {
        match self {
            Destination::Cidr(c) => c.to_string(),
            Destination::PrefixList(p) => p.clone(),
        }
    }
    /// The filter-style name AWS uses in route error messages.
    fn kind(&self) -> &'static str {
        match self {
            Destination::Cidr(_) => "destination-cidr-block",
            Destination::PrefixList(_) => "destination-prefix-list-id",
        }
    }
}

/// The destination members CreateRoute, ReplaceRoute and DeleteRoute share.
struct DestinationInput<'q> {
    cidr: Option<&'q str>,
    ipv6_cidr: Option<&'q str>,
    prefix_list: Option<&'q str>,
}

macro_rules! destination_input {
    ($q:expr) => {
        DestinationInput {
            cidr: $q.destination_cidr_block.as_deref(),
            ipv6_cidr: $q.destination_ipv6_cidr_block.as_deref(),
            prefix_list: $q.destination_prefix_list_id.as_deref(),
        }
    };
}

fn destination(d: &DestinationInput) -> AwsResult<Destination> {
    if d.ipv6_cidr.is_some() {
        return Err(AwsError::invalid_parameter_value(
            "IPv6 routes (destinationIpv6CidrBlock) are not supported by Cove.",
        ));
    }
    match (d.cidr, d.prefix_list) {
        (Some(_), Some(_)) => Err(AwsError::invalid_parameter_combination(
            "Only one of destinationCidrBlock or destinationPrefixListId may be specified.",
        )),
        (None, None) => Err(AwsError::missing_parameter(
            "destinationCidrBlock or destinationPrefixListId",
        )),
        (Some(raw), None) => {
            if raw.contains(':') {
                return Err(AwsError::invalid_parameter_value(
                    "IPv6 routes are not supported by Cove.",
                ));
            }
            let cidr: Cidr = raw.parse().map_err(|_| {
                AwsError::invalid_parameter_value(format!(
                    "Value ({raw}) for parameter destinationCidrBlock is invalid. This is not a valid CIDR block."
                ))
            })?;
            Ok(Destination::Cidr(cidr))
        }
        (None, Some(pl)) => Ok(Destination::PrefixList(pl.to_string())),
    }
}

/// The members of a CreateRoute or ReplaceRoute: each target by its AWS
/// name, the ones Cove models and (in the order the first one given is
/// reported) the ones it does not.
struct RouteInput<'q> {
    route_table_id: &'q Option<String>,
    destination: DestinationInput<'q>,
    supported: [(&'static str, Option<&'q str>); 4],
    unsupported: [(&'static str, Option<&'q str>); 8],
    local_target: bool,
}

macro_rules! route_input {
    ($q:expr, local_target: $local:expr) => {
        RouteInput {
            route_table_id: &$q.route_table_id,
            destination: destination_input!($q),
            supported: [
                ("GatewayId", $q.gateway_id.as_deref()),
                ("NatGatewayId", $q.nat_gateway_id.as_deref()),
                ("NetworkInterfaceId", $q.network_interface_id.as_deref()),
                (
                    "VpcPeeringConnectionId",
                    $q.vpc_peering_connection_id.as_deref(),
                ),
            ],
            unsupported: [
                ("TransitGatewayId", $q.transit_gateway_id.as_deref()),
                (
                    "EgressOnlyInternetGatewayId",
                    $q.egress_only_internet_gateway_id.as_deref(),
                ),
                ("LocalGatewayId", $q.local_gateway_id.as_deref()),
                ("CarrierGatewayId", $q.carrier_gateway_id.as_deref()),
                ("CoreNetworkArn", $q.core_network_arn.as_deref()),
                ("VpcEndpointId", $q.vpc_endpoint_id.as_deref()),
                ("OdbNetworkArn", $q.odb_network_arn.as_deref()),
                ("InstanceId", $q.instance_id.as_deref()),
            ],
            local_target: $local,
        }
    };
}

/// The one target a CreateRoute/ReplaceRoute names, not yet checked against the world.
enum TargetParam {
    Gateway(String),
    Nat(String),
    Eni(String),
    Peering(String),
}

fn target_param(q: &RouteInput) -> AwsResult<TargetParam> {
    let supported: Vec<(&str, &str)> = q
        .supported
        .iter()
        .filter_map(|(k, v)| v.map(|v| (*k, v)))
        .collect();
    let unsupported: Vec<&str> = q
        .unsupported
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| *k)
        .collect();
    // ReplaceRoute's LocalTarget restores a more specific route to `local`;
    // Cove keeps only the one local route, so it is refused as well.
    let local_target = q.local_target;
    let given = supported.len() + unsupported.len() + usize::from(local_target);
    if given > 1 {
        return Err(AwsError::invalid_parameter_combination(
            "More than one target specified",
        ));
    }
    if let Some(k) = unsupported.first() {
        return Err(AwsError::invalid_parameter_value(format!(
            "The route target {k} is not supported by Cove."
        )));
    }
    if local_target {
        return Err(AwsError::invalid_parameter_value(
            "The route target LocalTarget is not supported by Cove.",
        ));
    }
    match supported.first() {
        None => Err(AwsError::missing_parameter(
            "gatewayId, natGatewayId, networkInterfaceId or vpcPeeringConnectionId",
        )),
        Some(("GatewayId", v)) => Ok(TargetParam::Gateway(v.to_string())),
        Some(("NatGatewayId", v)) => Ok(TargetParam::Nat(v.to_string())),
        Some(("VpcPeeringConnectionId", v)) => Ok(TargetParam::Peering(v.to_string())),
        Some((_, v)) => Ok(TargetParam::Eni(v.to_string())),
    }
}

fn gateway_not_found(id: &str) -> AwsError {
    AwsError::client(
        "InvalidGatewayID.NotFound",
        format!("The gateway ID '{id}' does not exist"),
    )
}

fn different_networks(table: &str, what: &str, id: &str) -> AwsError {
    AwsError::invalid_parameter_value(format!(
        "route table {table} and {what} {id} belong to different networks"
    ))
}

/// Checks a target against the world: it exists in the region and lives in
/// (or, for an internet gateway, is attached to) the table's VPC.
fn resolve_target(
    w: &World,
    seen: &World,
    table: &RouteTable,
    region: &str,
    t: TargetParam,
) -> AwsResult<RouteTarget> {
    match t {
        TargetParam::Gateway(id) => {
            let g = find::<InternetGateway>(w, &id, region, |g| &g.region, gateway_not_found)?;
            if g.attached_vpc_id.as_deref() != Some(table.vpc_id.as_str()) {
                return Err(different_networks(&table.id, "network gateway", &id));
            }
            Ok(RouteTarget::Gateway(id))
        }
        TargetParam::Nat(id) => {
            let nat_missing = |id: &str| {
                AwsError::client(
                    "InvalidNatGatewayID.NotFound",
                    format!("The natGateway ID '{id}' does not exist"),
                )
            };
            let n = find::<NatGateway>(w, &id, region, |n| &n.region, nat_missing)?;
            if n.state == NatGatewayState::Deleted {
                return Err(nat_missing(&id));
            }
            if n.vpc_id != table.vpc_id {
                return Err(different_networks(&table.id, "network gateway", &id));
            }
            Ok(RouteTarget::NatGateway(id))
        }
        TargetParam::Eni(id) => {
            let e = find::<NetworkInterface>(w, &id, region, |e| &e.region, eni_not_found)?;
            if e.vpc_id != table.vpc_id {
                return Err(different_networks(&table.id, "interface", &id));
            }
            Ok(RouteTarget::NetworkInterface(id))
        }
        // A route may name a connection still waiting to be accepted (it
        // is a blackhole until then), not one that has ended.
        TargetParam::Peering(id) => {
            let p = seen
                .vpc_peering_connections
                .get(&id)
                .filter(|p| p.peer_of(&table.vpc_id).is_some())
                .ok_or_else(|| crate::peering::peering_not_found(&id))?;
            let status = crate::peering::current_status(p);
            if !matches!(
                status,
                PeeringStatus::Active | PeeringStatus::PendingAcceptance
            ) {
                return Err(crate::peering::peering_not_found(&id));
            }
            Ok(RouteTarget::VpcPeeringConnection(id))
        }
    }
}

/// AWS accepts routes more specific than the local route only when they
/// cover exactly one subnet of the VPC and point at a NAT gateway or an
/// interface (a "middlebox" route).
fn check_within_vpc(
    w: &World,
    vpc: &Vpc,
    dest: &Destination,
    target: &RouteTarget,
) -> AwsResult<()> {
    let Destination::Cidr(dc) = *dest else {
        return Ok(());
    };
    let Some(vpc_cidr) = vpc.cidr_holding(&dc) else {
        return Ok(());
    };
    if dc == vpc_cidr {
        return Ok(());
    }
    if !matches!(
        target,
        RouteTarget::NatGateway(_) | RouteTarget::NetworkInterface(_)
    ) {
        return Err(AwsError::invalid_parameter_value(format!(
            "The destination CIDR block {dc} is equal to or more specific than one of this VPC's CIDR blocks. This route can target only an interface or an instance."
        )));
    }
    let is_subnet = w
        .subnets
        .values()
        .any(|s| s.vpc_id == vpc.id && s.cidr == dc);
    if !is_subnet {
        return Err(AwsError::invalid_parameter_value(
            "Route destination doesn't match any subnet CIDR blocks.",
        ));
    }
    Ok(())
}

fn endpoint_managed(dest: &Destination, table: &str, endpoint: &str, verb: &str) -> AwsError {
    AwsError::invalid_parameter_value(format!(
        "Route with {} {} in route table {table} is managed by {endpoint} and cannot be {verb}. Use ModifyVpcEndpoint instead.",
        dest.kind(),
        dest.text()
    ))
}

pub fn create_route(r: &Req, q: &CreateRouteRequest) -> AwsResult<Value> {
    put_route(r, &route_input!(q, local_target: false), false)
}

pub fn replace_route(r: &Req, q: &ReplaceRouteRequest) -> AwsResult<Value> {
    put_route(
        r,
        &route_input!(q, local_target: q.local_target == Some(true)),
        true,
    )
}

/// CreateRoute (`replace` false) and ReplaceRoute (`replace` true).
fn put_route(r: &Req, q: &RouteInput, replace: bool) -> AwsResult<Value> {
    let table_id = need(q.route_table_id, "RouteTableId")?.to_string();
    let dest = destination(&q.destination)?;
    let target = target_param(q)?;
    let region = r.region();
    // With the peering connections the account accepted, which it does not store.
    let seen = r.world();
    r.write(|tx| {
        let w = &tx.world;
        let mut table = find::<RouteTable>(w, &table_id, region, |t| &t.region, route_table_not_found)?
            .clone();
        if let Destination::PrefixList(pl) = &dest {
            if w.prefix_list_cidrs(region, pl).is_none() {
                return Err(AwsError::client(
                    "InvalidPrefixListID.NotFound",
                    format!("The prefix list ID '{pl}' does not exist"),
                ));
            }
        }
        let target = resolve_target(w, &seen, &table, region, target)?;
        let vpc = find::<Vpc>(w, &table.vpc_id, region, |v| &v.region, vpc_not_found)?;
        let existing = table.routes.iter().position(|rt| dest.matches(rt));
        if replace {
            let Some(i) = existing else {
                return Err(AwsError::invalid_parameter_value(format!(
                    "There is no route defined for '{}' in the route table. Use CreateRoute instead.",
                    dest.text()
                )));
            };
            match &table.routes[i].target {
                // AWS lets newer clients point the local route at an interface
                // (LocalTarget / "middlebox" routing); Cove keeps the local
                // route fixed to keep the data plane simple.
                RouteTarget::Local => {
                    return Err(AwsError::invalid_parameter_value(format!(
                        "cannot replace local route {} in route table {table_id}",
                        dest.text()
                    )))
                }
                RouteTarget::VpcEndpoint(e) => {
                    return Err(endpoint_managed(&dest, &table_id, e, "replaced"))
                }
                _ => {}
            }
            check_within_vpc(w, vpc, &dest, &target)?;
            table.routes[i].target = target;
            table.routes[i].origin = RouteOrigin::CreateRoute;
            tx.put(table);
            Ok(json!({}))
        } else {
            if existing.is_some() || vpc.cidrs().iter().any(|c| dest == Destination::Cidr(*c)) {
                return Err(AwsError::client(
                    "RouteAlreadyExists",
                    format!("The route identified by {} already exists.", dest.text()),
                ));
            }
            check_within_vpc(w, vpc, &dest, &target)?;
            let (destination_cidr, destination_prefix_list_id) = match &dest {
                Destination::Cidr(c) => (Some(*c), None),
                Destination::PrefixList(p) => (None, Some(p.clone())),
            };
            table.routes.push(Route {
                destination_cidr,
                destination_prefix_list_id,
                target,
                origin: RouteOrigin::CreateRoute,
            });
            tx.put(table);
            Ok(json!({"Return": true}))
        }
    })
}

pub fn delete_route(r: &Req, q: &DeleteRouteRequest) -> AwsResult<Value> {
    let table_id = need(&q.route_table_id, "RouteTableId")?.to_string();
    let dest = destination(&destination_input!(q))?;
    let region = r.region();
    r.write(|tx| {
        let mut table = find::<RouteTable>(
            &tx.world,
            &table_id,
            region,
            |t| &t.region,
            route_table_not_found,
        )?
        .clone();
        let Some(i) = table.routes.iter().position(|rt| dest.matches(rt)) else {
            return Err(AwsError::client(
                "InvalidRoute.NotFound",
                format!(
                    "no route with {} {} in route table {table_id}",
                    dest.kind(),
                    dest.text()
                ),
            ));
        };
        match &table.routes[i].target {
            RouteTarget::Local => {
                return Err(AwsError::invalid_parameter_value(format!(
                    "cannot remove local route {} in route table {table_id}",
                    dest.text()
                )))
            }
            RouteTarget::VpcEndpoint(e) => {
                return Err(endpoint_managed(&dest, &table_id, e, "deleted"))
            }
            _ => {}
        }
        table.routes.remove(i);
        tx.put(table);
        Ok(json!({}))
    })
}

fn already_associated(table: &str) -> AwsError {
    AwsError::client(
        "Resource.AlreadyAssociated",
        format!("the specified association for route table {table} conflicts with an existing association"),
    )
}

pub fn associate(r: &Req, q: &AssociateRouteTableRequest) -> AwsResult<Value> {
    let table_id = need(&q.route_table_id, "RouteTableId")?.to_string();
    if q.public_ipv4_pool.is_some() {
        return Err(AwsError::invalid_parameter_value(
            "Associating a route table with a public IPv4 pool is not supported by Cove.",
        ));
    }
    let (subnet_id, gateway_id) = match (q.subnet_id.as_deref(), q.gateway_id.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(AwsError::invalid_parameter_combination(
                "Only one of subnetId or gatewayId may be specified.",
            ))
        }
        (None, None) => return Err(AwsError::missing_parameter("subnetId or gatewayId")),
        (s, g) => (s.map(str::to_string), g.map(str::to_string)),
    };
    let region = r.region();
    r.write(|tx| {
        let w = &tx.world;
        let mut table =
            find::<RouteTable>(w, &table_id, region, |t| &t.region, route_table_not_found)?.clone();
        if let Some(sid) = &subnet_id {
            let s = find::<Subnet>(w, sid, region, |s| &s.region, subnet_not_found)?;
            if s.vpc_id != table.vpc_id {
                return Err(different_networks(&table_id, "subnet", sid));
            }
            let taken = w.route_tables.values().any(|t| {
                t.associations
                    .iter()
                    .any(|a| a.subnet_id.as_deref() == Some(sid.as_str()))
            });
            if taken {
                return Err(already_associated(&table_id));
            }
        }
        if let Some(gid) = &gateway_id {
            let g = find::<InternetGateway>(w, gid, region, |g| &g.region, gateway_not_found)?;
            if g.attached_vpc_id.as_deref() != Some(table.vpc_id.as_str()) {
                return Err(different_networks(&table_id, "network gateway", gid));
            }
            let taken = w.route_tables.values().any(|t| {
                t.associations
                    .iter()
                    .any(|a| a.gateway_id.as_deref() == Some(gid.as_str()))
            });
            if taken {
                return Err(already_associated(&table_id));
            }
        }
        let id = new_id("rtbassoc");
        table.associations.push(RouteTableAssociation {
            id: id.clone(),
            subnet_id: subnet_id.clone(),
            gateway_id: gateway_id.clone(),
            main: false,
        });
        tx.put(table);
        Ok(json!({"AssociationId": id, "AssociationState": {"State": "associated"}}))
    })
}

/// The table holding an association (in the region) and the association itself.
fn find_association<'w>(
    w: &'w World,
    assoc_id: &str,
    region: &str,
) -> AwsResult<(&'w RouteTable, &'w RouteTableAssociation)> {
    w.route_tables
        .values()
        .filter(|t| t.region == region)
        .find_map(|t| {
            t.associations
                .iter()
                .find(|a| a.id == assoc_id)
                .map(|a| (t.as_ref(), a))
        })
        .ok_or_else(|| association_not_found(assoc_id))
}

pub fn disassociate(r: &Req, q: &DisassociateRouteTableRequest) -> AwsResult<Value> {
    let assoc_id = need(&q.association_id, "AssociationId")?.to_string();
    let region = r.region();
    r.write(|tx| {
        let (table, assoc) = find_association(&tx.world, &assoc_id, region)?;
        if assoc.main {
            return Err(AwsError::invalid_parameter_value(format!(
                "cannot disassociate the main route table association {assoc_id}"
            )));
        }
        let mut table = table.clone();
        table.associations.retain(|a| a.id != assoc_id);
        tx.put(table);
        Ok(json!({}))
    })
}

pub fn replace_association(r: &Req, q: &ReplaceRouteTableAssociationRequest) -> AwsResult<Value> {
    let assoc_id = need(&q.association_id, "AssociationId")?.to_string();
    let new_table_id = need(&q.route_table_id, "RouteTableId")?.to_string();
    let region = r.region();
    r.write(|tx| {
        let (old, assoc) = find_association(&tx.world, &assoc_id, region)?;
        let new = find::<RouteTable>(
            &tx.world,
            &new_table_id,
            region,
            |t| &t.region,
            route_table_not_found,
        )?;
        if new.vpc_id != old.vpc_id {
            return Err(AwsError::invalid_parameter_value(format!(
                "route table {new_table_id} and association {assoc_id} belong to different networks"
            )));
        }
        let moved = RouteTableAssociation {
            id: new_id("rtbassoc"),
            ..assoc.clone()
        };
        let mut old = old.clone();
        old.associations.retain(|a| a.id != assoc_id);
        if old.id == new_table_id {
            old.associations.push(moved.clone());
            tx.put(old);
        } else {
            let mut new = new.clone();
            new.associations.push(moved.clone());
            tx.put(old);
            tx.put(new);
        }
        Ok(json!({"NewAssociationId": moved.id, "AssociationState": {"State": "associated"}}))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interfaces::tests::{call_typed as call, ACCOUNT, REGION};
    use cove_store::Store;

    /// A VPC 10.0.0.0/16 with one subnet 10.0.1.0/24 and an unattached igw.
    fn setup() -> (Store, Vpc, String, String) {
        let store = Store::in_memory().unwrap();
        let (vpc, subnet, igw) = store
            .write_as(ACCOUNT, |tx| {
                let vpc = crate::vpcs::create_vpc_tx(
                    tx,
                    REGION,
                    "123456789012",
                    "10.0.0.0/16".parse().unwrap(),
                    false,
                );
                let s = crate::subnets::create_subnet_tx(
                    tx,
                    &vpc,
                    "10.0.1.0/24".parse().unwrap(),
                    "us-east-1a",
                    "use1-az1",
                    false,
                );
                let igw = crate::gateways::new_internet_gateway(tx, REGION, None);
                Ok((vpc, s.id, igw))
            })
            .unwrap();
        (store, vpc, subnet, igw)
    }

    fn main_table(store: &Store, vpc: &str) -> RouteTable {
        store.snapshot().main_route_table(vpc).cloned().unwrap()
    }

    fn code(r: AwsResult<Value>) -> String {
        r.err().map(|e| e.code).unwrap_or_else(|| "ok".into())
    }

    #[test]
    fn main_table_has_local_route_and_main_association() {
        let (store, vpc, _, _) = setup();
        let t = main_table(&store, &vpc.id);
        assert_eq!(t.routes.len(), 1);
        assert_eq!(t.routes[0].target, RouteTarget::Local);
        assert_eq!(
            t.routes[0]
                .destination_cidr
                .map(|c| c.to_string())
                .as_deref(),
            Some("10.0.0.0/16")
        );
        let out = call(
            &store,
            describe_route_tables,
            json!({"RouteTableIds": [t.id]}),
        )
        .unwrap();
        let rt = &out["RouteTables"][0];
        assert_eq!(rt["Routes"][0]["GatewayId"], "local");
        assert_eq!(rt["Routes"][0]["State"], "active");
        assert_eq!(rt["Routes"][0]["Origin"], "CreateRouteTable");
        assert_eq!(rt["Associations"][0]["Main"], true);
        assert_eq!(
            code(call(
                &store,
                delete_route_table,
                json!({"RouteTableId": t.id})
            )),
            "DependencyViolation"
        );
    }

    #[test]
    fn route_state_follows_the_gateway_attachment() {
        let (store, vpc, _, igw) = setup();
        let t = main_table(&store, &vpc.id);
        let route = Route {
            destination_cidr: Some(Cidr::ANY),
            destination_prefix_list_id: None,
            target: RouteTarget::Gateway(igw.clone()),
            origin: RouteOrigin::CreateRoute,
        };
        assert_eq!(route_state(&store.snapshot(), &t, &route), "blackhole");
        store
            .write_as(ACCOUNT, |tx| {
                let mut g = (*tx.world.internet_gateways[&igw]).clone();
                g.attached_vpc_id = Some(vpc.id.clone());
                tx.put(g);
                Ok(())
            })
            .unwrap();
        assert_eq!(route_state(&store.snapshot(), &t, &route), "active");
        let nat = Route {
            target: RouteTarget::NatGateway("nat-gone".into()),
            ..route.clone()
        };
        assert_eq!(route_state(&store.snapshot(), &t, &nat), "blackhole");
        let eni = Route {
            target: RouteTarget::NetworkInterface("eni-gone".into()),
            ..route
        };
        assert_eq!(route_state(&store.snapshot(), &t, &eni), "blackhole");
    }

    #[test]
    fn create_replace_delete_routes() {
        let (store, vpc, _, igw) = setup();
        let t = main_table(&store, &vpc.id);
        let add = |input: Value| call(&store, create_route, input);
        // Not attached yet: different networks.
        assert_eq!(
            code(add(
                json!({"RouteTableId": t.id, "DestinationCidrBlock": "0.0.0.0/0", "GatewayId": igw})
            )),
            "InvalidParameterValue"
        );
        store
            .write_as(ACCOUNT, |tx| {
                let mut g = (*tx.world.internet_gateways[&igw]).clone();
                g.attached_vpc_id = Some(vpc.id.clone());
                tx.put(g);
                Ok(())
            })
            .unwrap();
        assert_eq!(
            code(add(
                json!({"RouteTableId": t.id, "DestinationCidrBlock": "0.0.0.0/0"})
            )),
            "MissingParameter"
        );
        assert_eq!(
            code(add(json!({"RouteTableId": t.id, "GatewayId": igw}))),
            "MissingParameter"
        );
        assert_eq!(
            code(add(
                json!({"RouteTableId": t.id, "DestinationCidrBlock": "0.0.0.0/0", "GatewayId": igw, "NatGatewayId": "nat-1"})
            )),
            "InvalidParameterCombination"
        );
        assert_eq!(
            code(add(
                json!({"RouteTableId": t.id, "DestinationCidrBlock": "0.0.0.0/0", "TransitGatewayId": "tgw-1"})
            )),
            "InvalidParameterValue"
        );
        assert_eq!(
            code(add(
                json!({"RouteTableId": t.id, "DestinationCidrBlock": "banana", "GatewayId": igw})
            )),
            "InvalidParameterValue"
        );
        assert_eq!(
            code(add(
                json!({"RouteTableId": t.id, "DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "igw-nope"})
            )),
            "InvalidGatewayID.NotFound"
        );
        assert_eq!(
            add(
                json!({"RouteTableId": t.id, "DestinationCidrBlock": "0.0.0.7/0", "GatewayId": igw})
            )
            .unwrap(),
            json!({"Return": true})
        );
        assert_eq!(
            code(add(
                json!({"RouteTableId": t.id, "DestinationCidrBlock": "0.0.0.0/0", "GatewayId": igw})
            )),
            "RouteAlreadyExists"
        );
        assert_eq!(
            code(add(
                json!({"RouteTableId": t.id, "DestinationCidrBlock": "10.0.0.0/16", "GatewayId": igw})
            )),
            "RouteAlreadyExists"
        );
        // More specific than the VPC CIDR may not point at an igw.
        assert_eq!(
            code(add(
                json!({"RouteTableId": t.id, "DestinationCidrBlock": "10.0.1.0/24", "GatewayId": igw})
            )),
            "InvalidParameterValue"
        );
        let rep = |input: Value| call(&store, replace_route, input);
        assert_eq!(
            code(rep(
                json!({"RouteTableId": t.id, "DestinationCidrBlock": "10.0.0.0/16", "GatewayId": igw})
            )),
            "InvalidParameterValue"
        );
        assert_eq!(
            code(rep(
                json!({"RouteTableId": t.id, "DestinationCidrBlock": "8.8.8.0/24", "GatewayId": igw})
            )),
            "InvalidParameterValue"
        );
        assert_eq!(
            rep(
                json!({"RouteTableId": t.id, "DestinationCidrBlock": "0.0.0.0/0", "GatewayId": igw})
            )
            .unwrap(),
            json!({})
        );
        let del = |input: Value| call(&store, delete_route, input);
        assert_eq!(
            code(del(
                json!({"RouteTableId": t.id, "DestinationCidrBlock": "10.0.0.0/16"})
            )),
            "InvalidParameterValue"
        );
        assert_eq!(
            code(del(
                json!({"RouteTableId": t.id, "DestinationCidrBlock": "1.2.3.0/24"})
            )),
            "InvalidRoute.NotFound"
        );
        del(json!({"RouteTableId": t.id, "DestinationCidrBlock": "0.0.0.0/0"})).unwrap();
        assert_eq!(main_table(&store, &vpc.id).routes.len(), 1);
    }

    #[test]
    fn endpoint_routes_are_managed_by_the_endpoint() {
        let (store, vpc, _, _) = setup();
        let pl = cove_model::region::s3_prefix_list_id(REGION);
        let t = main_table(&store, &vpc.id);
        store
            .write_as(ACCOUNT, |tx| {
                let mut t = t.clone();
                t.routes.push(Route {
                    destination_cidr: None,
                    destination_prefix_list_id: Some(pl.clone()),
                    target: RouteTarget::VpcEndpoint("vpce-1".into()),
                    origin: RouteOrigin::CreateRoute,
                });
                tx.put(t);
                Ok(())
            })
            .unwrap();
        let out = call(
            &store,
            describe_route_tables,
            json!({"Filters": [{"Name": "route.destination-prefix-list-id", "Values": [pl]}]}),
        )
        .unwrap();
        let route = &out["RouteTables"][0]["Routes"][1];
        assert_eq!(route["GatewayId"], "vpce-1");
        assert_eq!(route["State"], "blackhole");
        let err = call(
            &store,
            delete_route,
            json!({"RouteTableId": t.id, "DestinationPrefixListId": pl}),
        )
        .unwrap_err();
        assert!(err.message.contains("managed by vpce-1"), "{}", err.message);
    }

    #[test]
    fn associations() {
        let (store, vpc, subnet, _) = setup();
        let main = main_table(&store, &vpc.id);
        let custom = call(&store, create_route_table, json!({"VpcId": vpc.id})).unwrap();
        let custom_id = custom["RouteTable"]["RouteTableId"]
            .as_str()
            .unwrap()
            .to_string();
        let a = call(
            &store,
            associate,
            json!({"RouteTableId": custom_id, "SubnetId": subnet}),
        )
        .unwrap();
        let assoc = a["AssociationId"].as_str().unwrap().to_string();
        assert_eq!(
            code(call(
                &store,
                associate,
                json!({"RouteTableId": main.id, "SubnetId": subnet})
            )),
            "Resource.AlreadyAssociated"
        );
        let by_subnet = call(
            &store,
            describe_route_tables,
            json!({"Filters": [{"Name": "association.subnet-id", "Values": [subnet]}]}),
        )
        .unwrap();
        assert_eq!(
            by_subnet["RouteTables"][0]["RouteTableId"],
            json!(custom_id)
        );
        assert_eq!(
            code(call(
                &store,
                delete_route_table,
                json!({"RouteTableId": custom_id})
            )),
            "DependencyViolation"
        );
        // Move the subnet back to main via replace: new id.
        let rep = call(
            &store,
            replace_association,
            json!({"AssociationId": assoc, "RouteTableId": main.id}),
        )
        .unwrap();
        assert_ne!(rep["NewAssociationId"], json!(assoc));
        assert_eq!(
            code(call(&store, disassociate, json!({"AssociationId": assoc}))),
            "InvalidAssociationID.NotFound"
        );
        let main_assoc = main.associations[0].id.clone();
        assert_eq!(
            code(call(
                &store,
                disassociate,
                json!({"AssociationId": main_assoc})
            )),
            "InvalidParameterValue"
        );
        // Make the custom table main.
        let rep = call(
            &store,
            replace_association,
            json!({"AssociationId": main_assoc, "RouteTableId": custom_id}),
        )
        .unwrap();
        let new_main = main_table(&store, &vpc.id);
        assert_eq!(new_main.id, custom_id);
        assert_eq!(
            new_main.associations[0].id,
            rep["NewAssociationId"].as_str().unwrap()
        );
        let main_filter = call(&store, describe_route_tables, json!({"Filters": [{"Name": "association.main", "Values": ["true"]}, {"Name": "vpc-id", "Values": [vpc.id]}]})).unwrap();
        assert_eq!(main_filter["RouteTables"].as_array().unwrap().len(), 1);
        // The old main table still holds the subnet association; drop_subnet clears it.
        store
            .write_as(ACCOUNT, |tx| {
                drop_subnet(tx, &subnet);
                Ok(())
            })
            .unwrap();
        call(&store, delete_route_table, json!({"RouteTableId": main.id})).unwrap();
        assert_eq!(
            code(call(
                &store,
                describe_route_tables,
                json!({"RouteTableIds": [main.id]})
            )),
            "InvalidRouteTableID.NotFound"
        );
    }
}
