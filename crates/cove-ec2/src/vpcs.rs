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
    CreateVpcRequest, DeleteVpcRequest, DescribeVpcAttributeRequest, DescribeVpcsRequest,
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
            "CidrBlockAssociationSet": [{
                "AssociationId": v.cidr_association_id,
                "CidrBlock": v.cidr,
                "CidrBlockState": {"State": "associated"}
            }],
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
    let raw = need(&q.cidr_block, "CidrBlock")?;
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
    let raw_tenancy = q.instance_tenancy.as_deref().unwrap_or("default");
    let tenancy = match raw_tenancy.parse() {
        Ok(t @ (Tenancy::Default | Tenancy::Dedicated)) => t,
        Ok(Tenancy::Host) | Err(()) => {
            return Err(AwsError::invalid_parameter_value(format!(
                "Value ({raw_tenancy}) for parameter instanceTenancy is invalid. Valid values: default, dedicated"
            )))
        }
    };
    let tags = tag_specs(&q.tag_specifications, "vpc")?;
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
    r.write(|tx| {
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
    })
}

fn vpc_field(w: &World, v: &Vpc, account: &str, name: &str) -> cove_model::filter::FieldValues {
    match name {
        "vpc-id" => one(&v.id),
        "cidr" | "cidr-block-association.cidr-block" => one(v.cidr),
        "cidr-block-association.association-id" => one(&v.cidr_association_id),
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
