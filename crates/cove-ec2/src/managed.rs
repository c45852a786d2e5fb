//! What EC2 offers Cove's other services for the resources they manage,
//! with no knowledge of those services: a service network (a real VPC with
//! one public subnet behind an internet gateway and a group that lets
//! everything out and nothing in, or only its own members, tagged
//! `cove:managed=<owner>`, so every
//! rule of the data plane applies to it too), Elastic IPs for managed ENIs,
//! and the removal of groups a service made. What goes into a service's
//! network is the service's business (SageMaker's live in the binary's
//! wiring, see `crates/cove/src/managed_networks.rs`).

use cove_model::cidr::Cidr;
use cove_model::ids::new_id;
use cove_model::vpc::{Address, AddressAssociation, SecurityGroup, SgPeer};
use cove_model::{region, AwsError, AwsResult};
use cove_store::Tx;

/// The tag key that marks what a service manages; its value names the owner.
pub const MANAGED_TAG_KEY: &str = "cove:managed";

/// A service network, as the service that owns it describes it.
#[derive(Debug, Clone)]
pub struct ServiceNetwork<'a> {
    /// The value of `cove:managed` on everything made (`sagemaker-studio`).
    pub owner: &'a str,
    pub vpc_cidr: Cidr,
    pub subnet_cidr: Cidr,
    pub group_name: &'a str,
    pub group_description: &'a str,
    /// The `Name` tag of the VPC, subnet and gateway.
    pub display_name: &'a str,
    /// Whether the group admits all traffic from its own members (the hosts
    /// of one job talk to each other), or nothing.
    pub ingress_from_itself: bool,
}

/// Deletes groups a service made, when no ENI still uses them.
pub fn delete_managed_groups(tx: &mut cove_store::Tx, ids: &[String]) {
    for id in ids {
        let in_use = tx
            .world
            .network_interfaces
            .values()
            .any(|e| e.group_ids.contains(id));
        if !in_use {
            tx.delete::<cove_model::vpc::SecurityGroup>(id);
            tx.set_tags(id, Default::default());
        }
    }
}

/// Which service manages the resource, if one does.
pub fn managed_by(world: &cove_model::world::World, id: &str) -> Option<String> {
    world.tags_of(id).get(MANAGED_TAG_KEY).cloned()
}

fn managed_tag(owner: &str) -> cove_model::world::Tags {
    [(MANAGED_TAG_KEY.to_string(), owner.to_string())]
        .into_iter()
        .collect()
}

/// `spec`'s network in a region, made on first use: a VPC with one public
/// subnet, an internet gateway and a default route to it, and a group that
/// lets everything out and nothing in (or, with `ingress_from_itself`, its
/// own members in). Returns (subnet, group).
pub fn ensure_service_network(
    tx: &mut Tx,
    region: &str,
    account: &str,
    spec: &ServiceNetwork,
) -> AwsResult<(String, String)> {
    let existing = tx
        .world
        .vpcs
        .values()
        .find(|v| v.region == region && managed_by(&tx.world, &v.id).as_deref() == Some(spec.owner))
        .map(|v| (**v).clone());
    let vpc = match existing {
        Some(v) => v,
        None => {
            let vpc = crate::vpcs::create_vpc_tx(tx, region, account, spec.vpc_cidr, false);
            let (zone, zone_id) = region::zones(region).into_iter().next().ok_or_else(|| {
                AwsError::invalid_parameter_value(format!("No availability zones in {region}"))
            })?;
            let subnet = crate::subnets::create_subnet_tx(
                tx,
                &vpc,
                spec.subnet_cidr,
                &zone,
                &zone_id,
                false,
            );
            let igw = crate::vpcs::attach_internet_route(tx, &vpc);
            let group_id = new_id("sg");
            let ingress = if spec.ingress_from_itself {
                vec![crate::security_groups::all_traffic_rule(SgPeer::Group {
                    group_id: group_id.clone(),
                    user_id: account.to_string(),
                })]
            } else {
                vec![]
            };
            tx.put(SecurityGroup {
                id: group_id,
                region: region.to_string(),
                vpc_id: vpc.id.clone(),
                name: spec.group_name.into(),
                description: spec.group_description.into(),
                ingress,
                egress: vec![crate::security_groups::all_traffic_rule(SgPeer::Cidr {
                    cidr: Cidr::ANY,
                })],
            });
            for id in [&vpc.id, &subnet.id, &igw] {
                let mut tags = managed_tag(spec.owner);
                tags.insert("Name".into(), spec.display_name.into());
                tx.set_tags(id, tags);
            }
            vpc
        }
    };
    let subnet = tx
        .world
        .subnets
        .values()
        .find(|s| s.vpc_id == vpc.id)
        .map(|s| s.id.clone())
        .ok_or_else(|| {
            AwsError::invalid_parameter_value(format!("The {} network has no subnet", spec.owner))
        })?;
    let group = tx
        .world
        .security_groups
        .values()
        .find(|g| g.vpc_id == vpc.id && g.name == spec.group_name)
        .map(|g| g.id.clone())
        .ok_or_else(|| {
            AwsError::invalid_parameter_value(format!("The {} network has no group", spec.owner))
        })?;
    Ok((subnet, group))
}

/// Allocates an Elastic IP for a managed ENI and associates it; it goes
/// when the ENI does.
pub fn give_public_address(tx: &mut Tx, eni_id: &str, owner: &str) -> AwsResult<()> {
    let eni = tx
        .world
        .network_interfaces
        .get(eni_id)
        .cloned()
        .ok_or_else(|| {
            AwsError::invalid_parameter_value(format!("No network interface {eni_id}"))
        })?;
    let ip = crate::gateways::next_free_address(&tx.world).ok_or_else(|| {
        AwsError::client(
            "AddressLimitExceeded",
            "The maximum number of addresses has been reached.",
        )
    })?;
    let address = Address {
        allocation_id: new_id("eipalloc"),
        region: eni.region.clone(),
        public_ip: ip,
        network_border_group: eni.region.clone(),
        association: Some(AddressAssociation {
            association_id: new_id("eipassoc"),
            network_interface_id: eni.id.clone(),
            private_ip: eni.private_ip,
        }),
    };
    tx.set_tags(&address.allocation_id, managed_tag(owner));
    tx.put(address);
    Ok(())
}
