//! VPCs: creation with AWS's companions (main route table, default network
//! ACL, default security group), the per-region default VPC, attributes,
//! and deletion guarded by DependencyViolation.

use crate::common::*;
use crate::{gateways, network_acls, route_tables, security_groups, subnets};
use cove_model::cidr::Cidr;
use cove_model::ids::new_id;
use cove_model::region;
use cove_model::vpc::*;
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_shapes::ec2::{
    AssociateSubnetCidrBlockRequest, AssociateVpcCidrBlockRequest, CreateDefaultSubnetRequest,
    CreateDefaultVpcRequest, CreateVpcRequest, DeleteVpcRequest, DescribeVpcAttributeRequest,
    DescribeVpcsRequest, DisassociateSubnetCidrBlockRequest, DisassociateVpcCidrBlockRequest,
    ModifyVpcAttributeRequest,
};
use cove_store::Tx;
use serde_json::{json, Value};

/// Creates a VPC and everything AWS creates with it.
pub fn create_vpc_tx(
    tx: &mut Tx,
    region: &str,
    account: &str,
    cidr: Cidr,
    is_default: bool,
) -> Vpc {
    let vpc = Vpc {
        id: new_id("vpc"),
        region: region.to_string(),
        cidr,
        cidr_association_id: new_id("vpc-cidr-assoc"),
        is_default,
        instance_tenancy: Tenancy::Default,
        enable_dns_support: true,
        enable_dns_hostnames: is_default,
        enable_network_address_usage_metrics: false,
        dhcp_options_id: crate::dhcp_options::default_set_id(account, region),
        secondary_cidrs: vec![],
    };
    tx.put(vpc.clone());
    route_tables::new_main_table(tx, &vpc);
    network_acls::new_default_acl(tx, &vpc);
    security_groups::new_default_group(tx, &vpc, account);
    vpc
}

/// The default VPC: 172.31.0.0/16, a public /20 per zone, an attached
/// internet gateway and a 0.0.0.0/0 route to it in the main table.
pub fn create_default_vpc(tx: &mut Tx, region: &str, account: &str) -> AwsResult<()> {
    let vpc = create_vpc_tx(tx, region, account, region::DEFAULT_VPC_CIDR, true);
    for (i, (zone, zone_id)) in region::zones(region).into_iter().enumerate() {
        subnets::create_subnet_tx(
            tx,
            &vpc,
            region::default_subnet_cidr(i),
            &zone,
            &zone_id,
            true,
        );
    }
    attach_internet_route(tx, &vpc);
    Ok(())
}

/// CreateDefaultVpc: a new default VPC, as the account first had, when the
/// region has none (after the first was deleted).
pub fn create_default_vpc_call(r: &Req, _q: &CreateDefaultVpcRequest) -> AwsResult<Value> {
    let (region, account) = (r.region(), r.account());
    r.write(|tx| {
        if tx
            .world
            .vpcs
            .values()
            .any(|v| v.region == region && v.is_default)
        {
            return Err(AwsError::client(
                "DefaultVpcAlreadyExists",
                "A Default VPC already exists for this account in this region.",
            ));
        }
        create_default_vpc(tx, region, account)?;
        let vpc = tx
            .world
            .vpcs
            .values()
            .find(|v| v.region == region && v.is_default)
            .cloned()
            .expect("just made");
        Ok(json!({"Vpc": render_vpc(&tx.world, &vpc, account, "pending")}))
    })
}

/// CreateDefaultSubnet: the default VPC's /20 for a zone that has lost
/// its default subnet (the zone's own block, or the first free one).
pub fn create_default_subnet(r: &Req, q: &CreateDefaultSubnetRequest) -> AwsResult<Value> {
    if q.ipv6_native == Some(true) {
        return Err(AwsError::invalid_parameter_value(
            "IPv6 subnets are not supported by Cove.",
        ));
    }
    let (region, account) = (r.region(), r.account());
    let zones = region::zones(region);
    let (zone, found) = match (&q.availability_zone, &q.availability_zone_id) {
        (Some(z), _) => (z.as_str(), zones.iter().position(|(name, _)| name == z)),
        (None, Some(id)) => (id.as_str(), zones.iter().position(|(_, zid)| zid == id)),
        (None, None) => return Err(AwsError::missing_parameter("AvailabilityZone")),
    };
    let Some(index) = found else {
        return Err(AwsError::invalid_parameter_value(format!(
            "Value ({zone}) for parameter availabilityZone is invalid. Subnets can currently only be created in the following availability zones: {}.",
            zones.iter().map(|(z, _)| z.as_str()).collect::<Vec<_>>().join(", ")
        )));
    };
    r.write(|tx| {
        let Some(vpc) = tx
            .world
            .vpcs
            .values()
            .find(|v| v.region == region && v.is_default)
            .map(|v| (**v).clone())
        else {
            return Err(AwsError::client(
                "DefaultVpcDoesNotExist",
                "No default VPC for this user. GroupName is only supported for EC2-Classic and default VPC.",
            ));
        };
        let subnets: Vec<Subnet> = tx
            .world
            .subnets
            .values()
            .filter(|s| s.vpc_id == vpc.id)
            .map(|s| (**s).clone())
            .collect();
        let (zone_name, zone_id) = &zones[index];
        if subnets.iter().any(|s| s.default_for_az && &s.availability_zone == zone_name) {
            return Err(AwsError::client(
                "DefaultSubnetAlreadyExistsInAvailabilityZone",
                format!("A default subnet already exists in availability zone {zone_name}."),
            ));
        }
        let free = |c: &Cidr| !subnets.iter().any(|s| s.cidr.overlaps(c));
        let cidr = std::iter::once(region::default_subnet_cidr(index))
            .chain((0..16).map(region::default_subnet_cidr))
            .find(|c| free(c))
            .ok_or_else(|| {
                AwsError::client(
                    "InsufficientFreeAddressesInSubnet",
                    "The default VPC has no free /20 left for a default subnet.",
                )
            })?;
        let s = subnets::create_subnet_tx(tx, &vpc, cidr, zone_name, zone_id, true);
        Ok(json!({"Subnet": subnets::render_subnet(&tx.world, &s, account, "available")}))
    })
}

/// Attaches a new internet gateway to `vpc` and routes 0.0.0.0/0 to it in
/// the main table, as the default VPC has; returns the gateway's id.
pub(crate) fn attach_internet_route(tx: &mut Tx, vpc: &Vpc) -> String {
    let igw = gateways::new_internet_gateway(tx, &vpc.region, Some(vpc.id.clone()));
    let mut main = tx
        .world
        .main_route_table(&vpc.id)
        .cloned()
        .expect("new VPCs have a main route table");
    main.routes.push(Route {
        destination_cidr: Some(Cidr::ANY),
        destination_prefix_list_id: None,
        target: RouteTarget::Gateway(igw.clone()),
        origin: RouteOrigin::CreateRoute,
    });
    tx.put(main);
    igw
}

/// The VPC's IPv4 CIDR blocks as `CidrBlockAssociationSet` shows them.
fn cidr_associations(v: &Vpc) -> Vec<Value> {
    std::iter::once((v.cidr_association_id.as_str(), v.cidr))
        .chain(v.secondary_cidrs.iter().map(|a| (a.id.as_str(), a.cidr)))
        .map(|(id, cidr)| association(id, cidr, "associated"))
        .collect()
}

fn association(id: &str, cidr: Cidr, state: &str) -> Value {
    json!({"AssociationId": id, "CidrBlock": cidr, "CidrBlockState": {"State": state}})
}

/// A VPC's IPv4 CIDR block as given: well formed, /16 to /28.
fn vpc_block(raw: &str) -> AwsResult<Cidr> {
    let cidr: Cidr = raw.parse().map_err(|_| {
        AwsError::invalid_parameter_value(format!(
            "Value ({raw}) for parameter cidrBlock is invalid. This is not a valid CIDR block."
        ))
    })?;
    if !(16..=28).contains(&cidr.prefix) {
        return Err(AwsError::client(
            "InvalidVpc.Range",
            format!("The CIDR '{raw}' is invalid."),
        ));
    }
    Ok(cidr)
}

/// AWS's default quota of IPv4 CIDR blocks per VPC, the primary included.
const MAX_CIDR_BLOCKS: usize = 5;

/// The RFC 1918 range a CIDR lies in, if any: a VPC's blocks may not mix them.
fn private_range(c: &Cidr) -> Option<Cidr> {
    [
        Cidr::from_octets([10, 0, 0, 0], 8),
        Cidr::from_octets([172, 16, 0, 0], 12),
        Cidr::from_octets([192, 168, 0, 0], 16),
    ]
    .into_iter()
    .find(|r| r.overlaps(c))
}

/// Adds a secondary IPv4 CIDR block, with AWS's rules: /16 to /28, no
/// overlap with the VPC's blocks or a route's destination in its tables,
/// not another RFC 1918 range than the primary's, at most five blocks.
/// Every route table of the VPC gets its `local` route.
pub fn associate_vpc_cidr_block(r: &Req, q: &AssociateVpcCidrBlockRequest) -> AwsResult<Value> {
    let vpc_id = need(&q.vpc_id, "VpcId")?;
    if q.amazon_provided_ipv6_cidr_block == Some(true)
        || q.ipv6_cidr_block.is_some()
        || q.ipv6_pool.is_some()
        || q.ipv6_ipam_pool_id.is_some()
    {
        return Err(AwsError::invalid_parameter_value(
            "IPv6 CIDR blocks are not supported by Cove.",
        ));
    }
    if q.ipv4_ipam_pool_id.is_some() {
        return Err(AwsError::invalid_parameter_value(
            "IPAM pools are not supported by Cove.",
        ));
    }
    let raw = need(&q.cidr_block, "CidrBlock")?;
    let cidr = vpc_block(raw)?;
    let range = |why: String| AwsError::client("InvalidVpc.Range", why);
    let region = r.region();
    r.write(|tx| {
        let mut vpc = find::<Vpc>(&tx.world, vpc_id, region, |v| &v.region, vpc_not_found)?.clone();
        if vpc.cidrs().iter().any(|c| c.overlaps(&cidr)) {
            return Err(range(format!(
                "The CIDR '{raw}' conflicts with another CIDR block of the VPC {vpc_id}."
            )));
        }
        if private_range(&vpc.cidr).is_some_and(|p| private_range(&cidr).is_some_and(|q| q != p)) {
            return Err(range(format!(
                "The CIDR '{raw}' is restricted: a VPC whose primary block is in {} takes no block of another RFC 1918 range.",
                private_range(&vpc.cidr).expect("checked")
            )));
        }
        let tables: Vec<RouteTable> = tx
            .world
            .route_tables
            .values()
            .filter(|t| t.vpc_id == vpc.id)
            .map(|t| (**t).clone())
            .collect();
        let clash = tables
            .iter()
            .flat_map(|t| &t.routes)
            .filter_map(|rt| rt.destination_cidr)
            .find(|d| d.contains(&cidr) || (cidr.contains(d) && d.prefix > cidr.prefix));
        if let Some(d) = clash {
            return Err(range(format!(
                "The CIDR '{raw}' conflicts with the route to {d} in a route table of the VPC."
            )));
        }
        if vpc.secondary_cidrs.len() + 1 >= MAX_CIDR_BLOCKS {
            return Err(AwsError::client(
                "CidrLimitExceeded",
                format!("The VPC {vpc_id} has {MAX_CIDR_BLOCKS} CIDR blocks, the most it may have."),
            ));
        }
        let id = new_id("vpc-cidr-assoc");
        vpc.secondary_cidrs.push(CidrBlockAssociation { id: id.clone(), cidr });
        for mut t in tables {
            t.routes.push(route_tables::local_route_for(cidr));
            tx.put(t);
        }
        tx.put(vpc);
        Ok(json!({"CidrBlockAssociation": association(&id, cidr, "associating"), "VpcId": vpc_id}))
    })
}

/// Removes a secondary CIDR block with its `local` routes; the primary
/// block stays, and a block with subnets is refused.
pub fn disassociate_vpc_cidr_block(
    r: &Req,
    q: &DisassociateVpcCidrBlockRequest,
) -> AwsResult<Value> {
    let id = need(&q.association_id, "AssociationId")?;
    let region = r.region();
    r.write(|tx| {
        let Some(mut vpc) = tx
            .world
            .vpcs
            .values()
            .find(|v| {
                v.region == region
                    && (v.cidr_association_id == id || v.secondary_cidrs.iter().any(|a| a.id == id))
            })
            .map(|v| (**v).clone())
        else {
            return Err(association_not_found(id));
        };
        if vpc.cidr_association_id == id {
            return Err(AwsError::client(
                "OperationNotPermitted",
                format!("The vpc {} has only the primary CIDR block {} left to it from {id}; the primary block cannot be disassociated.", vpc.id, vpc.cidr),
            ));
        }
        let pos = vpc.secondary_cidrs.iter().position(|a| a.id == id).expect("found above");
        let cidr = vpc.secondary_cidrs[pos].cidr;
        if tx.world.subnets.values().any(|s| s.vpc_id == vpc.id && cidr.contains(&s.cidr)) {
            return Err(AwsError::client(
                "InvalidCidrBlock.InUse",
                format!("The vpc {} currently has a subnet within CIDR block {cidr}.", vpc.id),
            ));
        }
        vpc.secondary_cidrs.remove(pos);
        let tables: Vec<RouteTable> = tx
            .world
            .route_tables
            .values()
            .filter(|t| t.vpc_id == vpc.id)
            .map(|t| (**t).clone())
            .collect();
        for mut t in tables {
            t.routes.retain(|rt| !(rt.target == RouteTarget::Local && rt.destination_cidr == Some(cidr)));
            tx.put(t);
        }
        let vpc_id = vpc.id.clone();
        tx.put(vpc);
        Ok(json!({"CidrBlockAssociation": association(id, cidr, "disassociating"), "VpcId": vpc_id}))
    })
}

/// Subnet CIDR blocks are IPv6 only, which Cove does not serve.
pub fn associate_subnet_cidr_block(
    _r: &Req,
    _q: &AssociateSubnetCidrBlockRequest,
) -> AwsResult<Value> {
    Err(AwsError::invalid_parameter_value(
        "IPv6 CIDR blocks are not supported by Cove.",
    ))
}

pub fn disassociate_subnet_cidr_block(
    _r: &Req,
    _q: &DisassociateSubnetCidrBlockRequest,
) -> AwsResult<Value> {
    Err(AwsError::invalid_parameter_value(
        "IPv6 CIDR blocks are not supported by Cove.",
    ))
}

pub fn render_vpc(world: &World, v: &Vpc, account: &str, state: &str) -> Value {
    with_tags(
        json!({
            "VpcId": v.id,
            "State": state,
            "CidrBlock": v.cidr,
            "DhcpOptionsId": v.dhcp_options_id,
            "InstanceTenancy": v.instance_tenancy,
            "IsDefault": v.is_default,
            "OwnerId": account,
            "CidrBlockAssociationSet": cidr_associations(v),
            "BlockPublicAccessStates": {"InternetGatewayBlockMode": "off"},
        }),
        world,
        &v.id,
        "Tags",
    )
}

pub fn create_vpc(r: &Req, q: &CreateVpcRequest) -> AwsResult<Value> {
    if q.ipv4_ipam_pool_id.is_some() || q.ipv6_ipam_pool_id.is_some() || q.ipv6_pool.is_some() {
        return Err(AwsError::invalid_parameter_value(
            "IPAM and IPv6 pools are not supported by Cove.",
        ));
    }
    if q.amazon_provided_ipv6_cidr_block == Some(true) {
        return Err(AwsError::invalid_parameter_value(
            "IPv6 CIDR blocks are not supported by Cove.",
        ));
    }
    let cidr = vpc_block(need(&q.cidr_block, "CidrBlock")?)?;
    let raw_tenancy = q.instance_tenancy.as_deref().unwrap_or("default");
    let tenancy = match raw_tenancy.parse() {
        Ok(t @ (Tenancy::Default | Tenancy::Dedicated)) => t,
        Ok(Tenancy::Host) | Err(()) => {
            return Err(AwsError::invalid_parameter_value(format!(
                "Value ({raw_tenancy}) for parameter instanceTenancy is invalid. Valid values: default, dedicated"
            )))
        }
    };
    let tags = tag_specs(r, &q.tag_specifications, "vpc")?;
    let (region, account) = (r.region(), r.account());
    r.write(|tx| {
        let mut vpc = create_vpc_tx(tx, region, account, cidr, false);
        if tenancy != Tenancy::Default {
            vpc.instance_tenancy = tenancy;
            tx.put(vpc.clone());
        }
        if !tags.is_empty() {
            tx.set_tags(&vpc.id, tags.clone());
        }
        Ok(json!({"Vpc": render_vpc(&tx.world, &vpc, account, "pending")}))
    })
}

pub fn delete_vpc(r: &Req, q: &DeleteVpcRequest) -> AwsResult<Value> {
    let id = need(&q.vpc_id, "VpcId")?.to_string();
    let region = r.region();
    let out = r.write(|tx| {
        let w = &tx.world;
        find::<Vpc>(w, &id, region, |v| &v.region, vpc_not_found)?;
        let in_vpc_subnets = w.subnets.values().any(|s| s.vpc_id == id);
        let igw = w.attached_internet_gateway(&id).is_some();
        let endpoints = w.vpc_endpoints.values().any(|e| e.vpc_id == id);
        let nats = w
            .nat_gateways
            .values()
            .any(|n| n.vpc_id == id && !n.state.is_over());
        let enis = w.network_interfaces.values().any(|e| e.vpc_id == id);
        let groups = w
            .security_groups
            .values()
            .any(|g| g.vpc_id == id && g.name != "default");
        let tables = w
            .route_tables
            .values()
            .any(|t| t.vpc_id == id && !t.associations.iter().any(|a| a.main));
        let acls = w
            .network_acls
            .values()
            .any(|a| a.vpc_id == id && !a.is_default);
        if in_vpc_subnets || igw || endpoints || nats || enis || groups || tables || acls {
            return Err(AwsError::dependency_violation(format!(
                "The vpc '{id}' has dependencies and cannot be deleted."
            )));
        }
        let owned_groups: Vec<String> = w
            .security_groups
            .values()
            .filter(|g| g.vpc_id == id)
            .map(|g| g.id.clone())
            .collect();
        let owned_tables: Vec<String> = w
            .route_tables
            .values()
            .filter(|t| t.vpc_id == id)
            .map(|t| t.id.clone())
            .collect();
        let owned_acls: Vec<String> = w
            .network_acls
            .values()
            .filter(|a| a.vpc_id == id)
            .map(|a| a.id.clone())
            .collect();
        let flow_logs: Vec<String> = w
            .flow_logs
            .values()
            .filter(|f| f.resource_id == id)
            .map(|f| f.id.clone())
            .collect();
        let deleted_nats: Vec<String> = w
            .nat_gateways
            .values()
            .filter(|n| n.vpc_id == id)
            .map(|n| n.id.clone())
            .collect();
        for g in owned_groups {
            tx.delete::<SecurityGroup>(&g);
        }
        for t in owned_tables {
            tx.delete::<RouteTable>(&t);
        }
        for a in owned_acls {
            tx.delete::<NetworkAcl>(&a);
        }
        for f in flow_logs {
            tx.delete::<FlowLog>(&f);
        }
        for n in deleted_nats {
            tx.delete::<NatGateway>(&n);
        }
        tx.delete::<Vpc>(&id);
        Ok(json!({}))
    })?;
    // Its peering connections go with it, whichever account stores them.
    let account = r.account();
    r.store.write(|tx| {
        crate::peering::delete_with_vpc(tx, &id, account);
        Ok(())
    })?;
    Ok(out)
}

fn vpc_field(w: &World, v: &Vpc, account: &str, name: &str) -> cove_model::filter::FieldValues {
    match name {
        "vpc-id" => one(&v.id),
        "cidr" => one(v.cidr),
        "cidr-block-association.cidr-block" => {
            Some(v.cidrs().iter().map(ToString::to_string).collect())
        }
        "cidr-block-association.association-id" => Some(
            std::iter::once(v.cidr_association_id.clone())
                .chain(v.secondary_cidrs.iter().map(|a| a.id.clone()))
                .collect(),
        ),
        "cidr-block-association.state" => one("associated"),
        "dhcp-options-id" => one(&v.dhcp_options_id),
        "is-default" | "isDefault" => flag(v.is_default),
        "state" => one("available"),
        "instance-tenancy" => one(v.instance_tenancy),
        _ => common_field(w, &v.id, account, name),
    }
}

pub fn describe_vpcs(r: &Req, q: &DescribeVpcsRequest) -> AwsResult<Value> {
    describe_all(
        r,
        &Describe::of(q, "VpcIds", &q.vpc_ids),
        "Vpcs",
        |v: &Vpc| &v.region,
        vpc_not_found,
        vpc_field,
        |w, v, a| render_vpc(w, v, a, "available"),
    )
}

const ATTRIBUTES: [&str; 3] = [
    "EnableDnsSupport",
    "EnableDnsHostnames",
    "EnableNetworkAddressUsageMetrics",
];

pub fn modify_vpc_attribute(r: &Req, q: &ModifyVpcAttributeRequest) -> AwsResult<Value> {
    let id = need(&q.vpc_id, "VpcId")?.to_string();
    let members = [
        &q.enable_dns_support,
        &q.enable_dns_hostnames,
        &q.enable_network_address_usage_metrics,
    ];
    let given: Vec<(&str, bool)> = ATTRIBUTES
        .iter()
        .zip(members)
        .filter_map(|(a, m)| attribute(m).map(|v| (*a, v)))
        .collect();
    match given.len() {
        0 => {
            return Err(AwsError::missing_parameter(
                "EnableDnsSupport, EnableDnsHostnames or EnableNetworkAddressUsageMetrics",
            ))
        }
        1 => {}
        _ => {
            let names: Vec<String> = given.iter().map(|(a, _)| lower_first(a)).collect();
            return Err(AwsError::invalid_parameter_combination(format!(
                "Fields for multiple attribute types specified: {}",
                names.join(", ")
            )));
        }
    }
    let (attr, value) = given[0];
    let region = r.region();
    r.write(|tx| {
        let mut vpc = find::<Vpc>(&tx.world, &id, region, |v| &v.region, vpc_not_found)?.clone();
        match attr {
            "EnableDnsSupport" => vpc.enable_dns_support = value,
            "EnableDnsHostnames" => vpc.enable_dns_hostnames = value,
            _ => vpc.enable_network_address_usage_metrics = value,
        }
        tx.put(vpc);
        Ok(json!({}))
    })
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
}

pub fn describe_vpc_attribute(r: &Req, q: &DescribeVpcAttributeRequest) -> AwsResult<Value> {
    let id = need(&q.vpc_id, "VpcId")?;
    let attr = need(&q.attribute, "Attribute")?;
    let w = r.world();
    let vpc = find::<Vpc>(&w, id, r.region(), |v| &v.region, vpc_not_found)?;
    let (member, value) = match attr {
        "enableDnsSupport" => ("EnableDnsSupport", vpc.enable_dns_support),
        "enableDnsHostnames" => ("EnableDnsHostnames", vpc.enable_dns_hostnames),
        "enableNetworkAddressUsageMetrics" => (
            "EnableNetworkAddressUsageMetrics",
            vpc.enable_network_address_usage_metrics,
        ),
        other => {
            return Err(AwsError::invalid_parameter_value(format!(
                "Value ({other}) for parameter attribute is invalid. Unknown attribute."
            )))
        }
    };
    let mut out = json!({"VpcId": id});
    out[member] = json!({"Value": value});
    Ok(out)
}
