//! Internet gateways (attach/detach to one VPC), Elastic IPs (allocated
//! from the documentation ranges, global across regions) and NAT gateways
//! (a requester-managed ENI plus an Elastic IP, moving through pending →
//! available/failed and deleting → deleted → expired on a timer).

use crate::common::*;
use crate::subnets;
use cove_model::filter::FieldValues;
use cove_model::ids::{new_id, new_mac};
use cove_model::region::{ELASTIC_IP_FIRST_HOST, ELASTIC_IP_POOLS};
use cove_model::vpc::*;
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_shapes::ec2::{
    AllocateAddressRequest, AssociateAddressRequest, AttachInternetGatewayRequest,
    CreateInternetGatewayRequest, CreateNatGatewayRequest, DeleteInternetGatewayRequest,
    DeleteNatGatewayRequest, DescribeAddressesRequest, DescribeInternetGatewaysRequest,
    DescribeNatGatewaysRequest, DetachInternetGatewayRequest, DisassociateAddressRequest,
    ReleaseAddressRequest,
};
use cove_store::Tx;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

// ---------------------------------------------------------------------------
// Internet gateways
// ---------------------------------------------------------------------------

/// Creates an internet gateway, attached to `vpc` when given; returns its id.
pub fn new_internet_gateway(tx: &mut Tx, region: &str, vpc: Option<String>) -> String {
    let g = InternetGateway {
        id: new_id("igw"),
        region: region.to_string(),
        attached_vpc_id: vpc,
    };
    let id = g.id.clone();
    tx.put(g);
    id
}

fn render_igw(world: &World, g: &InternetGateway, account: &str) -> Value {
    let attachments: Vec<Value> = g
        .attached_vpc_id
        .iter()
        .map(|v| json!({"State": "available", "VpcId": v}))
        .collect();
    with_tags(
        json!({
            "InternetGatewayId": g.id,
            "OwnerId": account,
            "Attachments": attachments,
        }),
        world,
        &g.id,
        "Tags",
    )
}

pub fn create_internet_gateway(r: &Req, q: &CreateInternetGatewayRequest) -> AwsResult<Value> {
    let tags = tag_specs(r, &q.tag_specifications, "internet-gateway")?;
    let (region, account) = (r.region(), r.account());
    r.write(|tx| {
        let id = new_internet_gateway(tx, region, None);
        if !tags.is_empty() {
            tx.set_tags(&id, tags.clone());
        }
        let g = InternetGateway {
            id,
            region: region.to_string(),
            attached_vpc_id: None,
        };
        Ok(json!({"InternetGateway": render_igw(&tx.world, &g, account)}))
    })
}

pub fn delete_internet_gateway(r: &Req, q: &DeleteInternetGatewayRequest) -> AwsResult<Value> {
    let id = need(&q.internet_gateway_id, "InternetGatewayId")?.to_string();
    let region = r.region();
    r.write(|tx| {
        let g = find::<InternetGateway>(&tx.world, &id, region, |g| &g.region, igw_not_found)?;
        if g.attached_vpc_id.is_some() {
            return Err(AwsError::dependency_violation(format!(
                "The internetGateway '{id}' has dependencies and cannot be deleted."
            )));
        }
        // Edge associations naming the gateway go with it.
        let tables: Vec<RouteTable> = tx
            .world
            .route_tables
            .values()
            .filter(|t| {
                t.associations
                    .iter()
                    .any(|a| a.gateway_id.as_deref() == Some(id.as_str()))
            })
            .map(|x| (**x).clone())
            .collect();
        for mut t in tables {
            t.associations
                .retain(|a| a.gateway_id.as_deref() != Some(id.as_str()));
            tx.put(t);
        }
        tx.delete::<InternetGateway>(&id);
        Ok(json!({}))
    })
}

fn igw_field(w: &World, g: &InternetGateway, account: &str, name: &str) -> FieldValues {
    match name {
        "internet-gateway-id" => one(&g.id),
        "attachment.vpc-id" => opt(g.attached_vpc_id.as_ref()),
        "attachment.state" => Some(
            g.attached_vpc_id
                .iter()
                .map(|_| "available".to_string())
                .collect(),
        ),
        _ => common_field(w, &g.id, account, name),
    }
}

pub fn describe_internet_gateways(
    r: &Req,
    q: &DescribeInternetGatewaysRequest,
) -> AwsResult<Value> {
    describe_all(
        r,
        &Describe::of(q, "InternetGatewayIds", &q.internet_gateway_ids),
        "InternetGateways",
        |g: &InternetGateway| &g.region,
        igw_not_found,
        igw_field,
        render_igw,
    )
}

pub fn attach_internet_gateway(r: &Req, q: &AttachInternetGatewayRequest) -> AwsResult<Value> {
    let id = need(&q.internet_gateway_id, "InternetGatewayId")?.to_string();
    let vpc_id = need(&q.vpc_id, "VpcId")?.to_string();
    let region = r.region();
    r.write(|tx| {
        let w = &tx.world;
        let mut g = find::<InternetGateway>(w, &id, region, |g| &g.region, igw_not_found)?.clone();
        find::<Vpc>(w, &vpc_id, region, |v| &v.region, vpc_not_found)?;
        if let Some(current) = &g.attached_vpc_id {
            return Err(AwsError::client(
                "Resource.AlreadyAssociated",
                format!("resource {id} is already attached to network {current}"),
            ));
        }
        if let Some(other) = w.attached_internet_gateway(&vpc_id) {
            return Err(AwsError::client(
                "Resource.AlreadyAssociated",
                format!(
                    "resource {vpc_id} is already attached to network {}",
                    other.id
                ),
            ));
        }
        g.attached_vpc_id = Some(vpc_id.clone());
        tx.put(g);
        Ok(json!({}))
    })
}

/// Whether a VPC has public addresses that need its internet gateway: an
/// Elastic IP on one of its interfaces, or a public NAT gateway that still
/// holds one.
fn has_mapped_public_addresses(w: &World, vpc_id: &str) -> bool {
    let eip = w.addresses.values().any(|a| {
        a.association.as_ref().is_some_and(|assoc| {
            w.network_interfaces
                .get(&assoc.network_interface_id)
                .is_some_and(|e| e.vpc_id == vpc_id)
        })
    });
    let nat = w.nat_gateways.values().any(|n| {
        n.vpc_id == vpc_id && n.connectivity_type == Connectivity::Public && !n.state.is_over()
    });
    eip || nat
}

pub fn detach_internet_gateway(r: &Req, q: &DetachInternetGatewayRequest) -> AwsResult<Value> {
    let id = need(&q.internet_gateway_id, "InternetGatewayId")?.to_string();
    let vpc_id = need(&q.vpc_id, "VpcId")?.to_string();
    let region = r.region();
    r.write(|tx| {
        let w = &tx.world;
        let mut g =
            find::<InternetGateway>(w, &id, region, |g| &g.region, igw_not_found)?.clone();
        find::<Vpc>(w, &vpc_id, region, |v| &v.region, vpc_not_found)?;
        if g.attached_vpc_id.as_deref() != Some(vpc_id.as_str()) {
            return Err(AwsError::client(
                "Gateway.NotAttached",
                format!("resource {id} is not attached to network {vpc_id}"),
            ));
        }
        if has_mapped_public_addresses(w, &vpc_id) {
            return Err(AwsError::dependency_violation(format!(
                "Network {vpc_id} has some mapped public address(es). Please unmap those public address(es) before detaching the gateway."
            )));
        }
        g.attached_vpc_id = None;
        tx.put(g);
        Ok(json!({}))
    })
}

// ---------------------------------------------------------------------------
// Elastic IPs
// ---------------------------------------------------------------------------

/// The lowest free Elastic IP: pools in order, hosts from
/// `ELASTIC_IP_FIRST_HOST` to .254. Public addresses are global, so every
/// region's allocations count.
pub(crate) fn next_free_address(w: &World) -> Option<Ipv4Addr> {
    let used: HashSet<Ipv4Addr> = w.addresses.values().map(|a| a.public_ip).collect();
    ELASTIC_IP_POOLS
        .iter()
        .flat_map(|pool| {
            let last = (pool.size().saturating_sub(1)).min(255) as u32;
            (ELASTIC_IP_FIRST_HOST..last).map(move |h| pool.nth(h))
        })
        .find(|ip| !used.contains(ip))
}

fn render_address(w: &World, a: &Address, account: &str) -> Value {
    let mut v = json!({
        "PublicIp": a.public_ip,
        "AllocationId": a.allocation_id,
        "Domain": "vpc",
        "PublicIpv4Pool": "amazon",
        "NetworkBorderGroup": a.network_border_group,
    });
    if let Some(assoc) = &a.association {
        v["AssociationId"] = json!(assoc.association_id);
        v["NetworkInterfaceId"] = json!(assoc.network_interface_id);
        v["NetworkInterfaceOwnerId"] = json!(account);
        v["PrivateIpAddress"] = json!(assoc.private_ip);
    }
    with_tags(v, w, &a.allocation_id, "Tags")
}

pub fn allocate_address(r: &Req, q: &AllocateAddressRequest) -> AwsResult<Value> {
    match q.domain.as_deref() {
        None | Some("vpc") => {}
        Some(d) => {
            return Err(AwsError::invalid_parameter_value(format!(
                "The '{d}' address domain (EC2-Classic) is not supported by Cove."
            )))
        }
    }
    for (k, v) in [
        ("Address", &q.address),
        ("CustomerOwnedIpv4Pool", &q.customer_owned_ipv4_pool),
        ("IpamPoolId", &q.ipam_pool_id),
    ] {
        if v.is_some() {
            return Err(AwsError::invalid_parameter_value(format!(
                "The parameter {k} is not supported by Cove."
            )));
        }
    }
    if q.public_ipv4_pool.as_deref().is_some_and(|p| p != "amazon") {
        return Err(AwsError::invalid_parameter_value(
            "The parameter PublicIpv4Pool is not supported by Cove.",
        ));
    }
    let region = r.region();
    if let Some(g) = q.network_border_group.as_deref() {
        if g != region {
            return Err(AwsError::invalid_parameter_value(format!(
                "The network border group '{g}' is invalid."
            )));
        }
    }
    let tags = tag_specs(r, &q.tag_specifications, "elastic-ip")?;
    r.write(|tx| {
        let ip = next_free_address(&tx.world).ok_or_else(|| {
            AwsError::client(
                "AddressLimitExceeded",
                "The maximum number of addresses has been reached.",
            )
        })?;
        let a = Address {
            allocation_id: new_id("eipalloc"),
            region: region.to_string(),
            public_ip: ip,
            network_border_group: region.to_string(),
            association: None,
        };
        tx.put(a.clone());
        if !tags.is_empty() {
            tx.set_tags(&a.allocation_id, tags.clone());
        }
        Ok(json!({
            "PublicIp": a.public_ip,
            "AllocationId": a.allocation_id,
            "Domain": "vpc",
            "PublicIpv4Pool": "amazon",
            "NetworkBorderGroup": a.network_border_group,
        }))
    })
}

fn address_not_found(ip: &str) -> AwsError {
    AwsError::client(
        "InvalidAddress.NotFound",
        format!("Address '{ip}' not found."),
    )
}

fn address_by_ip<'w>(w: &'w World, ip: &str, region: &str) -> AwsResult<&'w Address> {
    let wanted: Option<Ipv4Addr> = ip.parse().ok();
    w.addresses
        .values()
        .find(|a| a.region == region && Some(a.public_ip) == wanted)
        .map(|a| a.as_ref())
        .ok_or_else(|| address_not_found(ip))
}

pub fn release_address(r: &Req, q: &ReleaseAddressRequest) -> AwsResult<Value> {
    let by_id = q.allocation_id.clone();
    let by_ip = q.public_ip.clone();
    let region = r.region();
    r.write(|tx| {
        let w = &tx.world;
        let a = match (&by_id, &by_ip) {
            (Some(_), Some(_)) => {
                return Err(AwsError::invalid_parameter_combination(
                    "You may specify public IP or allocation id, but not both in the same call",
                ))
            }
            (None, None) => return Err(AwsError::missing_parameter("AllocationId or PublicIp")),
            (Some(id), None) => {
                find::<Address>(w, id, region, |a| &a.region, allocation_not_found)?
            }
            (None, Some(ip)) => address_by_ip(w, ip, region)?,
        };
        if a.association.is_some() {
            return Err(AwsError::client(
                "InvalidIPAddress.InUse",
                format!("Address {} is in use.", a.public_ip),
            ));
        }
        let id = a.allocation_id.clone();
        tx.delete::<Address>(&id);
        Ok(json!({}))
    })
}

/// Associates an Elastic IP with an ENI's private address: the internet
/// gateway then translates between the two (the ENI becomes reachable from,
/// and can reach, the internet).
pub fn associate_address(r: &Req, q: &AssociateAddressRequest) -> AwsResult<Value> {
    if q.instance_id.is_some() {
        return Err(AwsError::invalid_parameter_value(
            "Cove has no EC2 instances: associate the address with a NetworkInterfaceId.",
        ));
    }
    let allocation = need(&q.allocation_id, "AllocationId")?.to_string();
    let eni_id = need(&q.network_interface_id, "NetworkInterfaceId")?.to_string();
    let private = q.private_ip_address.clone();
    let reassociate = q.allow_reassociation.unwrap_or(false);
    let region = r.region().to_string();
    r.write(|tx| {
        let w = &tx.world;
        let mut address = find::<Address>(w, &allocation, &region, |a| &a.region, allocation_not_found)?.clone();
        let eni = find::<NetworkInterface>(w, &eni_id, &region, |e| &e.region, eni_not_found)?.clone();
        if let Some(ip) = &private {
            if ip.parse::<Ipv4Addr>().ok() != Some(eni.private_ip) {
                return Err(AwsError::invalid_parameter_value(format!(
                    "The specified private IP address {ip} is not assigned to network interface {eni_id}"
                )));
            }
        }
        if w.attached_internet_gateway(&eni.vpc_id).is_none() {
            return Err(AwsError::client(
                "Gateway.NotAttached",
                format!("Network {} is not attached to any internet gateway", eni.vpc_id),
            ));
        }
        let taken = |a: &Address| {
            a.association.as_ref().is_some_and(|x| x.network_interface_id == eni_id && x.private_ip == eni.private_ip)
        };
        if let Some(other) = w.addresses.values().find(|a| a.allocation_id != allocation && taken(a)) {
            if !reassociate {
                return Err(AwsError::client(
                    "Resource.AlreadyAssociated",
                    format!("resource {eni_id} is already associated with associate-id {}",
                        other.association.as_ref().map(|x| x.association_id.as_str()).unwrap_or_default()),
                ));
            }
            let mut other = (**other).clone();
            other.association = None;
            tx.put(other);
        }
        if let Some(current) = &address.association {
            if !reassociate && current.network_interface_id != eni_id {
                return Err(AwsError::client(
                    "Resource.AlreadyAssociated",
                    format!("resource {allocation} is already associated with associate-id {}", current.association_id),
                ));
            }
        }
        let association = AddressAssociation {
            association_id: new_id("eipassoc"),
            network_interface_id: eni_id.clone(),
            private_ip: eni.private_ip,
        };
        let id = association.association_id.clone();
        address.association = Some(association);
        tx.put(address);
        Ok(json!({"AssociationId": id}))
    })
}

pub fn disassociate_address(r: &Req, q: &DisassociateAddressRequest) -> AwsResult<Value> {
    let region = r.region().to_string();
    let by_id = q.association_id.clone();
    let by_ip = q.public_ip.clone();
    r.write(|tx| {
        let w = &tx.world;
        let mut a = match (&by_id, &by_ip) {
            (Some(id), _) => w
                .addresses
                .values()
                .find(|a| {
                    a.region == region
                        && a.association
                            .as_ref()
                            .is_some_and(|x| &x.association_id == id)
                })
                .map(|a| (**a).clone())
                .ok_or_else(|| association_not_found(id))?,
            (None, Some(ip)) => address_by_ip(w, ip, &region)?.clone(),
            (None, None) => return Err(AwsError::missing_parameter("AssociationId")),
        };
        let Some(assoc) = &a.association else {
            return Ok(json!({}));
        };
        if let Some(nat) = w
            .nat_gateways
            .values()
            .find(|n| n.network_interface_id == assoc.network_interface_id)
        {
            return Err(AwsError::client(
                "AuthFailure",
                format!(
                    "The address {} is used by NAT gateway {} and cannot be disassociated from it.",
                    a.public_ip, nat.id
                ),
            ));
        }
        a.association = None;
        tx.put(a);
        Ok(json!({}))
    })
}

fn address_field(w: &World, a: &Address, account: &str, name: &str) -> FieldValues {
    let assoc = a.association.as_ref();
    match name {
        "allocation-id" => one(&a.allocation_id),
        "association-id" => opt(assoc.map(|x| &x.association_id)),
        "domain" => one("vpc"),
        "network-interface-id" => opt(assoc.map(|x| &x.network_interface_id)),
        "network-interface-owner-id" => {
            Some(assoc.map(|_| account.to_string()).into_iter().collect())
        }
        "private-ip-address" => opt(assoc.map(|x| &x.private_ip)),
        "public-ip" => one(a.public_ip),
        "network-border-group" => one(&a.network_border_group),
        "public-ipv4-pool" => one("amazon"),
        "instance-id" => Some(Vec::new()),
        _ => common_field(w, &a.allocation_id, account, name),
    }
}

pub fn describe_addresses(r: &Req, q: &DescribeAddressesRequest) -> AwsResult<Value> {
    let w = r.world();
    let account = r.account();
    let region = r.region();
    let ips = list(&q.public_ips);
    for ip in ips {
        address_by_ip(&w, ip, region)?;
    }
    let (items, _) = Describe::of(q, "AllocationIds", &q.allocation_ids).run::<Address>(
        &w,
        |a| &a.region,
        region,
        allocation_not_found,
        |a, n| address_field(&w, a, account, n),
    )?;
    let items: Vec<Value> = items
        .iter()
        .filter(|a| ips.is_empty() || ips.contains(&a.public_ip.to_string()))
        .map(|a| render_address(&w, a, account))
        .collect();
    Ok(json!({"Addresses": items}))
}

// ---------------------------------------------------------------------------
// NAT gateways
// ---------------------------------------------------------------------------

fn nat_gateway_not_found(id: &str) -> AwsError {
    AwsError::client(
        "NatGatewayNotFound",
        format!("The Nat Gateway {id} was not found"),
    )
}

/// Why a public NAT gateway fails: the only failure Cove simulates.
fn failure_message(n: &NatGateway) -> String {
    format!("Network {} has no Internet gateway attached", n.vpc_id)
}

fn render_nat(w: &World, n: &NatGateway) -> Value {
    let failed = n.state == NatGatewayState::Failed;
    let mut addr = json!({
        "NetworkInterfaceId": n.network_interface_id,
        "PrivateIp": n.private_ip,
        "IsPrimary": true,
        "Status": if failed { "failed" } else { "succeeded" },
    });
    if let Some(alloc) = &n.allocation_id {
        addr["AllocationId"] = json!(alloc);
        let assoc = w
            .addresses
            .get(alloc)
            .and_then(|a| a.association.as_ref())
            .filter(|a| a.network_interface_id == n.network_interface_id);
        if let Some(a) = assoc {
            addr["AssociationId"] = json!(a.association_id);
        }
    }
    if let Some(ip) = &n.public_ip {
        addr["PublicIp"] = json!(ip);
    }
    if failed {
        addr["FailureMessage"] = json!(failure_message(n));
    }
    let mut v = json!({
        "NatGatewayId": n.id,
        "SubnetId": n.subnet_id,
        "VpcId": n.vpc_id,
        "State": n.state,
        "ConnectivityType": n.connectivity_type,
        "CreateTime": n.create_time,
        "NatGatewayAddresses": [addr],
    });
    if let Some(t) = &n.delete_time {
        v["DeleteTime"] = json!(t);
    }
    if failed {
        v["FailureCode"] = json!("Gateway.NotAttached");
        v["FailureMessage"] = json!(failure_message(n));
    }
    with_tags(v, w, &n.id, "Tags")
}

pub fn create_nat_gateway(r: &Req, q: &CreateNatGatewayRequest) -> AwsResult<Value> {
    // The unsupported members, in the order the first one given is reported;
    // an empty list counts as absent.
    let unsupported = [
        ("VpcId", q.vpc_id.is_some()),
        (
            "SecondaryPrivateIpAddressCount",
            q.secondary_private_ip_address_count.is_some(),
        ),
        (
            "SecondaryAllocationIds",
            !list(&q.secondary_allocation_ids).is_empty(),
        ),
        (
            "SecondaryPrivateIpAddresses",
            !list(&q.secondary_private_ip_addresses).is_empty(),
        ),
        (
            "AvailabilityZoneAddresses",
            !list(&q.availability_zone_addresses).is_empty(),
        ),
    ];
    if let Some((k, _)) = unsupported.iter().find(|(_, given)| *given) {
        return Err(AwsError::invalid_parameter_value(format!(
            "The parameter {k} is not supported by Cove."
        )));
    }
    if q.availability_mode.as_deref().is_some_and(|m| m != "zonal") {
        return Err(AwsError::invalid_parameter_value(
            "Regional NAT gateways are not supported by Cove.",
        ));
    }
    let subnet_id = need(&q.subnet_id, "SubnetId")?.to_string();
    let raw_connectivity = q.connectivity_type.as_deref().unwrap_or("public");
    let connectivity: Connectivity = raw_connectivity.parse().map_err(|()| {
        AwsError::invalid_parameter_value(format!(
            "Value ({raw_connectivity}) for parameter connectivityType is invalid. Valid values: public, private"
        ))
    })?;
    let allocation_id = q.allocation_id.clone();
    match (connectivity, &allocation_id) {
        (Connectivity::Public, None) => return Err(AwsError::missing_parameter("AllocationId")),
        (Connectivity::Private, Some(_)) => {
            return Err(AwsError::invalid_parameter_combination(
                "AllocationId cannot be specified for a private NAT gateway.",
            ))
        }
        _ => {}
    }
    let requested_ip = q.private_ip_address.clone();
    let tags = tag_specs(r, &q.tag_specifications, "natgateway")?;
    let token = q.client_token.clone();
    let region = r.region();
    r.write(|tx| {
        let w = &tx.world;
        let subnet =
            find::<Subnet>(w, &subnet_id, region, |s| &s.region, subnet_not_found)?.clone();
        let address = match &allocation_id {
            Some(id) => {
                let a = find::<Address>(w, id, region, |a| &a.region, allocation_not_found)?;
                if a.association.is_some() {
                    return Err(AwsError::client(
                        "Resource.AlreadyAssociated",
                        format!("Elastic IP address [{id}] is already associated"),
                    ));
                }
                Some(a.clone())
            }
            None => None,
        };
        let private_ip = subnets::allocate_ip(w, &subnet, requested_ip.as_deref())?;
        let nat_id = new_id("nat");
        let eni = NetworkInterface {
            id: new_id("eni"),
            region: region.to_string(),
            vpc_id: subnet.vpc_id.clone(),
            subnet_id: subnet.id.clone(),
            availability_zone: subnet.availability_zone.clone(),
            private_ip,
            mac_address: new_mac(),
            description: format!("Interface for NAT Gateway {nat_id}"),
            group_ids: Vec::new(),
            status: EniStatus::InUse,
            interface_type: InterfaceType::NatGateway,
            requester_managed: true,
            requester_id: Some("AWS".into()),
            source_dest_check: false,
            attachment: None,
            host: None,
        };
        if let Some(mut a) = address.clone() {
            a.association = Some(AddressAssociation {
                association_id: new_id("eipassoc"),
                network_interface_id: eni.id.clone(),
                private_ip,
            });
            tx.put(a);
        }
        let nat = NatGateway {
            id: nat_id,
            region: region.to_string(),
            vpc_id: subnet.vpc_id.clone(),
            subnet_id: subnet.id.clone(),
            connectivity_type: connectivity,
            allocation_id: allocation_id.clone(),
            public_ip: address.map(|a| a.public_ip),
            private_ip,
            network_interface_id: eni.id.clone(),
            state: NatGatewayState::Pending,
            create_time: now(),
            delete_time: None,
        };
        tx.put(eni);
        tx.put(nat.clone());
        if !tags.is_empty() {
            tx.set_tags(&nat.id, tags.clone());
        }
        let mut out = json!({"NatGateway": render_nat(&tx.world, &nat)});
        if let Some(t) = &token {
            out["ClientToken"] = json!(t);
        }
        Ok(out)
    })
}

pub fn delete_nat_gateway(r: &Req, q: &DeleteNatGatewayRequest) -> AwsResult<Value> {
    let id = need(&q.nat_gateway_id, "NatGatewayId")?.to_string();
    let region = r.region();
    r.write(|tx| {
        let n = find::<NatGateway>(&tx.world, &id, region, |n| &n.region, nat_gateway_not_found)?;
        match n.state {
            NatGatewayState::Deleted => return Err(nat_gateway_not_found(&id)),
            NatGatewayState::Deleting => {}
            _ => {
                let mut n = n.clone();
                n.state = NatGatewayState::Deleting;
                tx.put(n);
            }
        }
        Ok(json!({"NatGatewayId": id}))
    })
}

fn nat_field(w: &World, n: &NatGateway, account: &str, name: &str) -> FieldValues {
    match name {
        "nat-gateway-id" => one(&n.id),
        "state" => one(n.state),
        "subnet-id" => one(&n.subnet_id),
        "vpc-id" => one(&n.vpc_id),
        _ => common_field(w, &n.id, account, name),
    }
}

pub fn describe_nat_gateways(r: &Req, q: &DescribeNatGatewaysRequest) -> AwsResult<Value> {
    let w = r.world();
    let account = r.account();
    let (items, next) = Describe::of(q, "NatGatewayIds", &q.nat_gateway_ids).run::<NatGateway>(
        &w,
        |n| &n.region,
        r.region(),
        nat_gateway_not_found,
        |n, name| nat_field(&w, n, account, name),
    )?;
    let items: Vec<Value> = items.iter().map(|n| render_nat(&w, n)).collect();
    Ok(listing("NatGateways", items, next))
}

/// Frees what a NAT gateway holds: its interface and its Elastic IP association.
fn release_nat_resources(tx: &mut Tx, n: &NatGateway) {
    if tx
        .world
        .network_interfaces
        .contains_key(&n.network_interface_id)
    {
        tx.delete::<NetworkInterface>(&n.network_interface_id);
    }
    let held = n.allocation_id.as_ref().and_then(|id| {
        tx.world.addresses.get(id).filter(|a| {
            a.association
                .as_ref()
                .is_some_and(|x| x.network_interface_id == n.network_interface_id)
        })
    });
    if let Some(a) = held {
        let mut a = (**a).clone();
        a.association = None;
        tx.put(a);
    }
}

/// Whether `t` (RFC 3339) is at least `age` before `now`; unreadable times count as old.
fn older_than(t: &str, now: OffsetDateTime, age: Duration) -> bool {
    OffsetDateTime::parse(t, &Rfc3339).map_or(true, |t| now - t >= age)
}

/// Advances NAT gateways through their timed states. Runs every 500 ms, so
/// it writes only the gateways whose state actually changes.
pub fn advance_nat_gateways(tx: &mut Tx) {
    let now_t = OffsetDateTime::now_utc();
    let due: Vec<NatGateway> = tx
        .world
        .nat_gateways
        .values()
        .filter(|n| match n.state {
            NatGatewayState::Pending => older_than(&n.create_time, now_t, Duration::seconds(1)),
            NatGatewayState::Deleting => true,
            NatGatewayState::Deleted | NatGatewayState::Failed => older_than(
                n.delete_time.as_deref().unwrap_or(&n.create_time),
                now_t,
                Duration::hours(1),
            ),
            NatGatewayState::Available => false,
        })
        .map(|x| (**x).clone())
        .collect();
    for mut n in due {
        match n.state {
            NatGatewayState::Pending => {
                let has_igw = tx.world.attached_internet_gateway(&n.vpc_id).is_some();
                if n.connectivity_type == Connectivity::Public && !has_igw {
                    release_nat_resources(tx, &n);
                    n.state = NatGatewayState::Failed;
                } else {
                    n.state = NatGatewayState::Available;
                }
                tx.put(n);
            }
            NatGatewayState::Deleting => {
                release_nat_resources(tx, &n);
                n.state = NatGatewayState::Deleted;
                n.delete_time = Some(now());
                tx.put(n);
            }
            _ => tx.delete::<NatGateway>(&n.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interfaces::tests::{call_in, call_typed as call, ACCOUNT};
    use cove_store::Store;

    fn code(r: AwsResult<Value>) -> String {
        r.err().map(|e| e.code).unwrap_or_else(|| "ok".into())
    }

    fn setup() -> (Store, Vpc, Subnet) {
        let store = Store::in_memory().unwrap();
        let (vpc, subnet) = store
            .write_as(ACCOUNT, |tx| {
                let vpc = crate::vpcs::create_vpc_tx(
                    tx,
                    "us-east-1",
                    ACCOUNT,
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
                Ok((vpc, s))
            })
            .unwrap();
        (store, vpc, subnet)
    }

    /// Makes every NAT gateway look old enough for its next step.
    fn age_nats(store: &Store, by: Duration) {
        store
            .write_as(ACCOUNT, |tx| {
                let all: Vec<NatGateway> = tx
                    .world
                    .nat_gateways
                    .values()
                    .map(|x| (**x).clone())
                    .collect();
                let shift = |t: &str| {
                    (OffsetDateTime::parse(t, &Rfc3339).unwrap() - by)
                        .format(&Rfc3339)
                        .unwrap()
                };
                for mut n in all {
                    n.create_time = shift(&n.create_time);
                    n.delete_time = n.delete_time.as_deref().map(shift);
                    tx.put(n);
                }
                Ok(())
            })
            .unwrap();
    }

    fn advance(store: &Store) {
        store
            .write_as(ACCOUNT, |tx| {
                advance_nat_gateways(tx);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn elastic_ips_are_lowest_first_and_global() {
        let store = Store::in_memory().unwrap();
        let a = call(&store, allocate_address, json!({})).unwrap();
        assert_eq!(a["PublicIp"], "198.51.100.16");
        assert_eq!(a["Domain"], "vpc");
        assert_eq!(a["NetworkBorderGroup"], "us-east-1");
        let b = call_in(&store, "eu-west-1", allocate_address, json!({})).unwrap();
        assert_eq!(b["PublicIp"], "198.51.100.17");
        call(
            &store,
            release_address,
            json!({"AllocationId": a["AllocationId"]}),
        )
        .unwrap();
        let c = call(&store, allocate_address, json!({})).unwrap();
        assert_eq!(c["PublicIp"], "198.51.100.16");
        // The other region's address is invisible here.
        assert_eq!(
            code(call(
                &store,
                release_address,
                json!({"PublicIp": "198.51.100.17"})
            )),
            "InvalidAddress.NotFound"
        );
        assert_eq!(
            code(call(
                &store,
                describe_addresses,
                json!({"PublicIps": ["198.51.100.17"]})
            )),
            "InvalidAddress.NotFound"
        );
        assert_eq!(
            code(call(
                &store,
                allocate_address,
                json!({"Domain": "standard"})
            )),
            "InvalidParameterValue"
        );
        let d = call(
            &store,
            describe_addresses,
            json!({"Filters": [{"Name": "public-ip", "Values": ["198.51.100.16"]}]}),
        )
        .unwrap();
        assert_eq!(d["Addresses"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn elastic_ip_pools_run_out() {
        let store = Store::in_memory().unwrap();
        let per_pool = 255 - ELASTIC_IP_FIRST_HOST as usize;
        let mut last = Value::Null;
        for _ in 0..per_pool {
            last = call(&store, allocate_address, json!({})).unwrap();
        }
        assert_eq!(last["PublicIp"], "198.51.100.254");
        let next = call(&store, allocate_address, json!({})).unwrap();
        assert_eq!(next["PublicIp"], "203.0.113.16");
        for _ in 1..per_pool {
            call(&store, allocate_address, json!({})).unwrap();
        }
        assert_eq!(
            code(call(&store, allocate_address, json!({}))),
            "AddressLimitExceeded"
        );
    }

    #[test]
    fn internet_gateway_attach_detach() {
        let (store, vpc, _) = setup();
        let g = call(&store, create_internet_gateway, json!({"TagSpecifications": [{"ResourceType": "internet-gateway", "Tags": [{"Key": "Name", "Value": "gw"}]}]})).unwrap();
        let id = g["InternetGateway"]["InternetGatewayId"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(g["InternetGateway"]["Attachments"], json!([]));
        assert_eq!(g["InternetGateway"]["Tags"][0]["Value"], "gw");
        assert_eq!(
            code(call(
                &store,
                detach_internet_gateway,
                json!({"InternetGatewayId": id, "VpcId": vpc.id})
            )),
            "Gateway.NotAttached"
        );
        call(
            &store,
            attach_internet_gateway,
            json!({"InternetGatewayId": id, "VpcId": vpc.id}),
        )
        .unwrap();
        assert_eq!(
            code(call(
                &store,
                attach_internet_gateway,
                json!({"InternetGatewayId": id, "VpcId": vpc.id})
            )),
            "Resource.AlreadyAssociated"
        );
        let other = call(&store, create_internet_gateway, json!({})).unwrap();
        let other = other["InternetGateway"]["InternetGatewayId"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            code(call(
                &store,
                attach_internet_gateway,
                json!({"InternetGatewayId": other, "VpcId": vpc.id})
            )),
            "Resource.AlreadyAssociated"
        );
        let d = call(
            &store,
            describe_internet_gateways,
            json!({"Filters": [{"Name": "attachment.vpc-id", "Values": [vpc.id]}]}),
        )
        .unwrap();
        assert_eq!(d["InternetGateways"].as_array().unwrap().len(), 1);
        assert_eq!(
            d["InternetGateways"][0]["Attachments"][0]["State"],
            "available"
        );
        assert_eq!(
            code(call(
                &store,
                delete_internet_gateway,
                json!({"InternetGatewayId": id})
            )),
            "DependencyViolation"
        );
        call(
            &store,
            detach_internet_gateway,
            json!({"InternetGatewayId": id, "VpcId": vpc.id}),
        )
        .unwrap();
        call(
            &store,
            delete_internet_gateway,
            json!({"InternetGatewayId": id}),
        )
        .unwrap();
        assert_eq!(
            code(call(
                &store,
                describe_internet_gateways,
                json!({"InternetGatewayIds": [id]})
            )),
            "InvalidInternetGatewayID.NotFound"
        );
    }

    #[test]
    fn nat_gateway_lifecycle() {
        let (store, vpc, subnet) = setup();
        let igw = call(&store, create_internet_gateway, json!({})).unwrap();
        let igw = igw["InternetGateway"]["InternetGatewayId"]
            .as_str()
            .unwrap()
            .to_string();
        call(
            &store,
            attach_internet_gateway,
            json!({"InternetGatewayId": igw, "VpcId": vpc.id}),
        )
        .unwrap();
        let eip = call(&store, allocate_address, json!({})).unwrap();
        let alloc = eip["AllocationId"].as_str().unwrap().to_string();
        assert_eq!(
            code(call(
                &store,
                create_nat_gateway,
                json!({"SubnetId": subnet.id})
            )),
            "MissingParameter"
        );
        assert_eq!(
            code(call(
                &store,
                create_nat_gateway,
                json!({"SubnetId": subnet.id, "ConnectivityType": "private", "AllocationId": alloc})
            )),
            "InvalidParameterCombination"
        );
        let out = call(
            &store,
            create_nat_gateway,
            json!({"SubnetId": subnet.id, "AllocationId": alloc, "ClientToken": "tok"}),
        )
        .unwrap();
        assert_eq!(out["ClientToken"], "tok");
        let nat = &out["NatGateway"];
        let nat_id = nat["NatGatewayId"].as_str().unwrap().to_string();
        assert_eq!(nat["State"], "pending");
        assert_eq!(nat["VpcId"], json!(vpc.id));
        assert_eq!(nat["NatGatewayAddresses"][0]["PublicIp"], eip["PublicIp"]);
        assert_eq!(nat["NatGatewayAddresses"][0]["PrivateIp"], "10.0.1.4");
        let eni = nat["NatGatewayAddresses"][0]["NetworkInterfaceId"]
            .as_str()
            .unwrap()
            .to_string();
        let w = store.snapshot();
        assert_eq!(
            w.network_interfaces[&eni].interface_type.as_str(),
            "nat_gateway"
        );
        assert!(w.network_interfaces[&eni].requester_managed);
        assert_eq!(
            w.addresses[&alloc]
                .association
                .as_ref()
                .unwrap()
                .network_interface_id,
            eni
        );
        // The EIP is now taken, and cannot be released.
        assert_eq!(
            code(call(
                &store,
                create_nat_gateway,
                json!({"SubnetId": subnet.id, "AllocationId": alloc})
            )),
            "Resource.AlreadyAssociated"
        );
        assert_eq!(
            code(call(
                &store,
                release_address,
                json!({"AllocationId": alloc})
            )),
            "InvalidIPAddress.InUse"
        );
        assert_eq!(
            code(call(
                &store,
                detach_internet_gateway,
                json!({"InternetGatewayId": igw, "VpcId": vpc.id})
            )),
            "DependencyViolation"
        );
        // Too young to advance: nothing changes.
        advance(&store);
        assert_eq!(
            store.snapshot().nat_gateways[&nat_id].state.as_str(),
            "pending"
        );
        age_nats(&store, Duration::seconds(2));
        advance(&store);
        assert_eq!(
            store.snapshot().nat_gateways[&nat_id].state.as_str(),
            "available"
        );
        // Unknown filter member name `Filters` is ignored; `Filter` works.
        let d = call(
            &store,
            describe_nat_gateways,
            json!({"Filter": [{"Name": "state", "Values": ["available"]}]}),
        )
        .unwrap();
        assert_eq!(d["NatGateways"].as_array().unwrap().len(), 1);
        let d = call(
            &store,
            describe_nat_gateways,
            json!({"Filter": [{"Name": "state", "Values": ["pending"]}]}),
        )
        .unwrap();
        assert_eq!(d["NatGateways"].as_array().unwrap().len(), 0);

        assert_eq!(
            call(&store, delete_nat_gateway, json!({"NatGatewayId": nat_id})).unwrap(),
            json!({"NatGatewayId": nat_id})
        );
        assert_eq!(
            store.snapshot().nat_gateways[&nat_id].state.as_str(),
            "deleting"
        );
        advance(&store);
        let w = store.snapshot();
        assert_eq!(w.nat_gateways[&nat_id].state.as_str(), "deleted");
        assert!(w.nat_gateways[&nat_id].delete_time.is_some());
        assert!(!w.network_interfaces.contains_key(&eni));
        assert!(w.addresses[&alloc].association.is_none());
        assert_eq!(
            code(call(
                &store,
                delete_nat_gateway,
                json!({"NatGatewayId": nat_id})
            )),
            "NatGatewayNotFound"
        );
        call(
            &store,
            detach_internet_gateway,
            json!({"InternetGatewayId": igw, "VpcId": vpc.id}),
        )
        .unwrap();
        call(&store, release_address, json!({"AllocationId": alloc})).unwrap();
        age_nats(&store, Duration::hours(2));
        advance(&store);
        assert!(store.snapshot().nat_gateways.is_empty());
    }

    #[test]
    fn public_nat_without_internet_gateway_fails() {
        let (store, _, subnet) = setup();
        let eip = call(&store, allocate_address, json!({})).unwrap();
        let alloc = eip["AllocationId"].as_str().unwrap().to_string();
        let out = call(
            &store,
            create_nat_gateway,
            json!({"SubnetId": subnet.id, "AllocationId": alloc}),
        )
        .unwrap();
        let nat_id = out["NatGateway"]["NatGatewayId"]
            .as_str()
            .unwrap()
            .to_string();
        let private = call(
            &store,
            create_nat_gateway,
            json!({"SubnetId": subnet.id, "ConnectivityType": "private"}),
        )
        .unwrap();
        let private_id = private["NatGateway"]["NatGatewayId"]
            .as_str()
            .unwrap()
            .to_string();
        age_nats(&store, Duration::seconds(2));
        advance(&store);
        let w = store.snapshot();
        assert_eq!(w.nat_gateways[&nat_id].state.as_str(), "failed");
        assert_eq!(w.nat_gateways[&private_id].state.as_str(), "available");
        assert!(w.addresses[&alloc].association.is_none());
        assert_eq!(w.network_interfaces.len(), 1);
        let d = call(
            &store,
            describe_nat_gateways,
            json!({"NatGatewayIds": [nat_id]}),
        )
        .unwrap();
        assert_eq!(d["NatGateways"][0]["FailureCode"], "Gateway.NotAttached");
        // A settled world needs no writes.
        let mut changed = true;
        store
            .write_as(ACCOUNT, |tx| {
                advance_nat_gateways(tx);
                changed = !tx.is_empty();
                Ok(())
            })
            .unwrap();
        assert!(!changed);
    }
}
