//! Subnets: CIDR placement inside the VPC (no overlap, /16 to /28), zones,
//! the five reserved addresses, and private IP allocation for ENIs.

use crate::common::*;
use crate::network_acls;
use cove_model::cidr::Cidr;
use cove_model::ids::new_id;
use cove_model::region;
use cove_model::vpc::*;
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_shapes::ec2::{
    CreateSubnetRequest, DeleteSubnetRequest, DescribeSubnetsRequest, ModifySubnetAttributeRequest,
};
use cove_store::Tx;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::Ipv4Addr;

pub fn create_subnet_tx(
    tx: &mut Tx,
    vpc: &Vpc,
    cidr: Cidr,
    zone: &str,
    zone_id: &str,
    default_for_az: bool,
) -> Subnet {
    let subnet = Subnet {
        id: new_id("subnet"),
        region: vpc.region.clone(),
        vpc_id: vpc.id.clone(),
        cidr,
        availability_zone: zone.to_string(),
        availability_zone_id: zone_id.to_string(),
        default_for_az,
        map_public_ip_on_launch: default_for_az,
        held_addresses: Vec::new(),
    };
    tx.put(subnet.clone());
    network_acls::associate_with_default(tx, &subnet);
    subnet
}

/// Addresses taken in a subnet: every ENI's private IP, and the addresses
/// held back after their ENIs were released from a lost host.
pub fn used_addresses(world: &World, subnet_id: &str) -> HashSet<Ipv4Addr> {
    let held = world
        .subnets
        .get(subnet_id)
        .into_iter()
        .flat_map(|s| s.held_addresses.iter().map(|h| h.ip));
    world
        .network_interfaces
        .values()
        .filter(|e| e.subnet_id == subnet_id)
        .map(|e| e.private_ip)
        .chain(held)
        .collect()
}

pub fn available_count(world: &World, s: &Subnet) -> u64 {
    s.cidr
        .usable_count()
        .saturating_sub(used_addresses(world, &s.id).len() as u64)
}

/// Picks the lowest free address, or checks a requested one.
pub fn allocate_ip(world: &World, s: &Subnet, requested: Option<&str>) -> AwsResult<Ipv4Addr> {
    let cidr = s.cidr;
    let used = used_addresses(world, &s.id);
    if let Some(req) = requested {
        let ip: Ipv4Addr = req.parse().map_err(|_| {
            AwsError::invalid_parameter_value(format!("Invalid value '{req}' for IP address."))
        })?;
        if !cidr.contains_addr(ip) {
            return Err(AwsError::invalid_parameter_value(format!(
                "Address {req} does not fall within the subnet's address range"
            )));
        }
        if cidr.is_reserved(ip) {
            return Err(AwsError::invalid_parameter_value(format!(
                "Address {req} is in subnet's reserved address range"
            )));
        }
        if used.contains(&ip) {
            return Err(AwsError::client(
                "InvalidIPAddress.InUse",
                "The specified address is already in use.",
            ));
        }
        return Ok(ip);
    }
    // Subnets are /16 to /28, so the size fits u32; saturating keeps even a
    // /0 from overflowing.
    (4..(u32::try_from(cidr.size()).unwrap_or(u32::MAX) - 1))
        .map(|i| cidr.nth(i))
        .find(|ip| !used.contains(ip))
        .ok_or_else(|| {
            AwsError::client(
                "InsufficientFreeAddressesInSubnet",
                format!("There are not enough free addresses in subnet '{}' to satisfy the requested number of instances.", s.id),
            )
        })
}

pub fn subnet_arn(region: &str, account: &str, id: &str) -> String {
    format!("arn:aws:ec2:{region}:{account}:subnet/{id}")
}

pub fn render_subnet(world: &World, s: &Subnet, account: &str, state: &str) -> Value {
    with_tags(
        json!({
            "AvailabilityZone": s.availability_zone,
            "AvailabilityZoneId": s.availability_zone_id,
            "AvailableIpAddressCount": available_count(world, s),
            "CidrBlock": s.cidr,
            "DefaultForAz": s.default_for_az,
            "MapPublicIpOnLaunch": s.map_public_ip_on_launch,
            "MapCustomerOwnedIpOnLaunch": false,
            "State": state,
            "SubnetId": s.id,
            "VpcId": s.vpc_id,
            "OwnerId": account,
            "AssignIpv6AddressOnCreation": false,
            "Ipv6CidrBlockAssociationSet": [],
            "SubnetArn": subnet_arn(&s.region, account, &s.id),
            "EnableDns64": false,
            "Ipv6Native": false,
            "PrivateDnsNameOptionsOnLaunch": {
                "HostnameType": "ip-name",
                "EnableResourceNameDnsARecord": false,
                "EnableResourceNameDnsAAAARecord": false
            },
            "BlockPublicAccessStates": {"InternetGatewayBlockMode": "off"},
        }),
        world,
        &s.id,
        "Tags",
    )
}

pub fn create_subnet(r: &Req, q: &CreateSubnetRequest) -> AwsResult<Value> {
    let vpc_id = need(&q.vpc_id, "VpcId")?.to_string();
    if q.ipv6_cidr_block.is_some() || q.ipv6_native == Some(true) || q.ipv4_ipam_pool_id.is_some() {
        return Err(AwsError::invalid_parameter_value(
            "IPv6 and IPAM subnets are not supported by Cove.",
        ));
    }
    let raw = need(&q.cidr_block, "CidrBlock")?.to_string();
    let cidr: Cidr = raw.parse().map_err(|_| {
        AwsError::invalid_parameter_value(format!(
            "Value ({raw}) for parameter cidrBlock is invalid. This is not a valid CIDR block."
        ))
    })?;
    let tags = tag_specs(r, &q.tag_specifications, "subnet")?;
    let zones = region::zones(r.region());
    let zone_names: Vec<&str> = zones.iter().map(|(n, _)| n.as_str()).collect();
    let wanted_zone = match (
        q.availability_zone.as_deref(),
        q.availability_zone_id.as_deref(),
    ) {
        (Some(_), Some(_)) => {
            return Err(AwsError::invalid_parameter_combination(
                "Only one of availabilityZone or availabilityZoneId may be specified.",
            ))
        }
        (Some(z), None) => Some(
            zones
                .iter()
                .find(|(n, _)| n == z)
                .cloned()
                .ok_or_else(|| bad_zone(z, &zone_names))?,
        ),
        (None, Some(z)) => Some(
            zones
                .iter()
                .find(|(_, i)| i == z)
                .cloned()
                .ok_or_else(|| bad_zone(z, &zone_names))?,
        ),
        (None, None) => None,
    };
    let (region, account) = (r.region(), r.account());
    r.write(|tx| {
        let vpc = find::<Vpc>(&tx.world, &vpc_id, region, |v| &v.region, vpc_not_found)?.clone();
        if vpc.cidr_holding(&cidr).is_none() || !(16..=28).contains(&cidr.prefix) {
            return Err(AwsError::client(
                "InvalidSubnet.Range",
                format!("The CIDR '{raw}' is invalid."),
            ));
        }
        let clash = tx
            .world
            .subnets
            .values()
            .any(|s| s.vpc_id == vpc_id && s.cidr.overlaps(&cidr));
        if clash {
            return Err(AwsError::client(
                "InvalidSubnet.Conflict",
                format!("The CIDR '{raw}' conflicts with another subnet"),
            ));
        }
        // Without a zone, AWS picks one; Cove picks the zone with fewest subnets in this VPC.
        let (zone, zone_id) = wanted_zone.clone().unwrap_or_else(|| {
            zones
                .iter()
                .min_by_key(|(n, _)| {
                    tx.world
                        .subnets
                        .values()
                        .filter(|s| s.vpc_id == vpc_id && &s.availability_zone == n)
                        .count()
                })
                .cloned()
                .expect("regions have zones")
        });
        let subnet = create_subnet_tx(tx, &vpc, cidr, &zone, &zone_id, false);
        if !tags.is_empty() {
            tx.set_tags(&subnet.id, tags.clone());
        }
        Ok(json!({"Subnet": render_subnet(&tx.world, &subnet, account, "available")}))
    })
}

fn bad_zone(z: &str, zones: &[&str]) -> AwsError {
    AwsError::invalid_parameter_value(format!(
        "Value ({z}) for parameter availabilityZone is invalid. Subnets can currently only be created in the following availability zones: {}.",
        zones.join(", ")
    ))
}

pub fn delete_subnet(r: &Req, q: &DeleteSubnetRequest) -> AwsResult<Value> {
    let id = need(&q.subnet_id, "SubnetId")?.to_string();
    let region = r.region();
    r.write(|tx| {
        find::<Subnet>(&tx.world, &id, region, |s| &s.region, subnet_not_found)?;
        let busy = tx
            .world
            .network_interfaces
            .values()
            .any(|e| e.subnet_id == id)
            || tx
                .world
                .nat_gateways
                .values()
                .any(|n| n.subnet_id == id && !n.state.is_over());
        if busy {
            return Err(AwsError::dependency_violation(format!(
                "The subnet '{id}' has dependencies and cannot be deleted."
            )));
        }
        network_acls::drop_subnet(tx, &id);
        crate::route_tables::drop_subnet(tx, &id);
        let flow_logs: Vec<String> = tx
            .world
            .flow_logs
            .values()
            .filter(|f| f.resource_id == id)
            .map(|f| f.id.clone())
            .collect();
        for f in flow_logs {
            tx.delete::<FlowLog>(&f);
        }
        tx.delete::<Subnet>(&id);
        Ok(json!({}))
    })
}

fn subnet_field(
    w: &World,
    s: &Subnet,
    account: &str,
    name: &str,
) -> cove_model::filter::FieldValues {
    match name {
        "subnet-id" => one(&s.id),
        "vpc-id" => one(&s.vpc_id),
        "cidr" | "cidr-block" | "cidrBlock" => one(s.cidr),
        "availability-zone" | "availabilityZone" => one(&s.availability_zone),
        "availability-zone-id" | "availabilityZoneId" => one(&s.availability_zone_id),
        "available-ip-address-count" => one(available_count(w, s).to_string()),
        "default-for-az" | "defaultForAz" => flag(s.default_for_az),
        "map-public-ip-on-launch" => flag(s.map_public_ip_on_launch),
        "state" => one("available"),
        "subnet-arn" => one(subnet_arn(&s.region, account, &s.id)),
        _ => common_field(w, &s.id, account, name),
    }
}

pub fn describe_subnets(r: &Req, q: &DescribeSubnetsRequest) -> AwsResult<Value> {
    describe_all(
        r,
        &Describe::of(q, "SubnetIds", &q.subnet_ids),
        "Subnets",
        |s: &Subnet| &s.region,
        subnet_not_found,
        subnet_field,
        |w, s, a| render_subnet(w, s, a, "available"),
    )
}

pub fn modify_subnet_attribute(r: &Req, q: &ModifySubnetAttributeRequest) -> AwsResult<Value> {
    let id = need(&q.subnet_id, "SubnetId")?.to_string();
    // Each unsupported attribute, and whether the request turns it on.
    let unsupported = [
        (
            "AssignIpv6AddressOnCreation",
            attribute(&q.assign_ipv6_address_on_creation) == Some(true),
        ),
        (
            "MapCustomerOwnedIpOnLaunch",
            attribute(&q.map_customer_owned_ip_on_launch) == Some(true),
        ),
        ("EnableDns64", attribute(&q.enable_dns64) == Some(true)),
        (
            "EnableResourceNameDnsARecordOnLaunch",
            attribute(&q.enable_resource_name_dns_a_record_on_launch) == Some(true),
        ),
        (
            "EnableResourceNameDnsAAAARecordOnLaunch",
            attribute(&q.enable_resource_name_dns_aaaa_record_on_launch) == Some(true),
        ),
        (
            "EnableLniAtDeviceIndex",
            q.enable_lni_at_device_index.is_some(),
        ),
        (
            "DisableLniAtDeviceIndex",
            attribute(&q.disable_lni_at_device_index) == Some(true),
        ),
    ];
    if let Some((u, _)) = unsupported.iter().find(|(_, on)| *on) {
        return Err(AwsError::invalid_parameter_value(format!(
            "The subnet attribute {u} is not supported by Cove."
        )));
    }
    let map_public = attribute(&q.map_public_ip_on_launch);
    let region = r.region();
    r.write(|tx| {
        let mut s =
            find::<Subnet>(&tx.world, &id, region, |s| &s.region, subnet_not_found)?.clone();
        if let Some(v) = map_public {
            s.map_public_ip_on_launch = v;
            tx.put(s);
        }
        Ok(json!({}))
    })
}
