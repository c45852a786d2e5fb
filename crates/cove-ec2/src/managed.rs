//! Networks and groups Cove's other services make in the customer's
//! account, as AWS's do: a Studio domain's NFS security groups, and the
//! managed network where `PublicInternetOnly` Studio apps run (AWS runs
//! them in a service VPC with internet access; Cove's is a real VPC,
//! tagged `cove:managed=sagemaker-studio`, so every rule of the data plane
//! applies to it too).

use cove_model::ids::new_id;
use cove_model::vpc::{Address, AddressAssociation, SecurityGroup, SgPeer, SgRule};
use cove_model::{region, AwsError, AwsResult};
use cove_store::Tx;

/// The tag that marks Cove's managed Studio network.
pub const MANAGED_TAG: (&str, &str) = ("cove:managed", "sagemaker-studio");
const STUDIO_CIDR: &str = "10.255.0.0/16";
const STUDIO_SUBNET: &str = "10.255.0.0/20";
const STUDIO_GROUP: &str = "sagemaker-studio-apps";

/// The two groups a SageMaker Studio domain makes in its VPC for the home
/// file system: `security-group-for-inbound-nfs-<domain>` admits TCP 2049
/// from the outbound group, and `security-group-for-outbound-nfs-<domain>`
/// sends TCP 2049 to the inbound group (and nothing else). Returns
/// (inbound, outbound).
pub fn create_studio_nfs_groups(
    tx: &mut cove_store::Tx,
    region: &str,
    account: &str,
    vpc_id: &str,
    domain_id: &str,
) -> (String, String) {
    let (inbound, outbound) = (cove_model::ids::new_id("sg"), cove_model::ids::new_id("sg"));
    let nfs = |peer: &str| SgRule {
        id: cove_model::ids::new_id("sgr"),
        protocol: "tcp".into(),
        from_port: Some(2049),
        to_port: Some(2049),
        peer: SgPeer::Group {
            group_id: peer.to_string(),
            user_id: account.to_string(),
        },
        description: None,
    };
    for (id, direction, peer) in [
        (&inbound, "inbound", &outbound),
        (&outbound, "outbound", &inbound),
    ] {
        let rule = nfs(peer);
        let (ingress, egress) = match direction {
            "inbound" => (vec![rule], vec![]),
            _ => (vec![], vec![rule]),
        };
        tx.put(SecurityGroup {
            id: id.clone(),
            region: region.to_string(),
            vpc_id: vpc_id.to_string(),
            name: format!("security-group-for-{direction}-nfs-{domain_id}"),
            description: format!(
                "[DO NOT DELETE] Security Group that allows {direction} NFS traffic for SageMaker Notebooks Domain [{domain_id}]"
            ),
            ingress,
            egress,
        });
        tx.set_tags(
            id,
            [(
                "ManagedByAmazonSageMakerResource".to_string(),
                format!("arn:aws:sagemaker:{region}:{account}:domain/{domain_id}"),
            )]
            .into_iter()
            .collect(),
        );
    }
    (inbound, outbound)
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

/// Whether a resource carries Cove's managed tag.
pub fn is_managed(world: &cove_model::world::World, id: &str) -> bool {
    world.tags_of(id).get(MANAGED_TAG.0).map(String::as_str) == Some(MANAGED_TAG.1)
}

fn managed_tag() -> cove_model::world::Tags {
    [(MANAGED_TAG.0.to_string(), MANAGED_TAG.1.to_string())]
        .into_iter()
        .collect()
}

/// The managed Studio network of a region, made on first use: a VPC with
/// one public subnet, an internet gateway and a default route to it, and a
/// group that lets apps out and nothing in. Returns (subnet, group).
pub fn ensure_studio_network(
    tx: &mut Tx,
    region: &str,
    account: &str,
) -> AwsResult<(String, String)> {
    let existing = tx
        .world
        .vpcs
        .values()
        .find(|v| v.region == region && is_managed(&tx.world, &v.id))
        .cloned();
    let vpc = match existing {
        Some(v) => v,
        None => {
            let vpc = crate::vpcs::create_vpc_tx(
                tx,
                region,
                account,
                STUDIO_CIDR.parse().expect("constant"),
                false,
            );
            let (zone, zone_id) = region::zones(region).into_iter().next().ok_or_else(|| {
                AwsError::invalid_parameter_value(format!("No availability zones in {region}"))
            })?;
            let subnet = crate::subnets::create_subnet_tx(
                tx,
                &vpc,
                STUDIO_SUBNET.parse().expect("constant"),
                &zone,
                &zone_id,
                false,
            );
            let igw = crate::vpcs::attach_internet_route(tx, &vpc);
            tx.put(SecurityGroup {
                id: new_id("sg"),
                region: region.to_string(),
                vpc_id: vpc.id.clone(),
                name: STUDIO_GROUP.into(),
                description: "Studio apps in Cove's managed network: all traffic out, nothing in"
                    .into(),
                ingress: vec![],
                egress: vec![crate::security_groups::all_traffic_rule(SgPeer::Cidr {
                    cidr: "0.0.0.0/0".into(),
                })],
            });
            for id in [&vpc.id, &subnet.id, &igw] {
                let mut tags = managed_tag();
                tags.insert("Name".into(), "SageMaker Studio (Cove-managed)".into());
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
            AwsError::invalid_parameter_value("Cove's managed Studio network has no subnet")
        })?;
    let group = tx
        .world
        .security_groups
        .values()
        .find(|g| g.vpc_id == vpc.id && g.name == STUDIO_GROUP)
        .map(|g| g.id.clone())
        .ok_or_else(|| {
            AwsError::invalid_parameter_value("Cove's managed Studio network has no group")
        })?;
    Ok((subnet, group))
}

/// Allocates an Elastic IP for a managed ENI and associates it.
pub fn give_public_address(tx: &mut Tx, eni_id: &str, _account: &str) -> AwsResult<()> {
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
            private_ip: eni.private_ip.clone(),
        }),
    };
    tx.set_tags(&address.allocation_id, managed_tag());
    tx.put(address);
    Ok(())
}
