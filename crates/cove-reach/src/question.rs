//! A reachability question as a person asks it (`cove reach`, the
//! console): a source and a destination named by id, address, `internet`
//! or service, turned into the [`Source`] and [`Target`] the analysis takes.

use crate::sagemaker::with_planned_eni;
use crate::{Source, Target};
use cove_model::vpc::EndpointType;
use cove_model::world::World;
use std::net::Ipv4Addr;

/// The id `cove reach` gives "a new ENI in this subnet".
pub const PLANNED: &str = "eni-planned";

/// The source; a subnet becomes a planned ENI in it (with `groups`, else the
/// VPC's default group), added to the world the question is asked of.
pub fn source_of(world: &mut World, from: &str, groups: &[String]) -> Result<Source, String> {
    if from.starts_with("subnet-") {
        let vpc = world
            .subnets
            .get(from)
            .map(|s| s.vpc_id.clone())
            .ok_or_else(|| format!("The subnet '{from}' does not exist"))?;
        let groups: Vec<String> = if groups.is_empty() {
            world
                .security_groups
                .values()
                .filter(|g| g.vpc_id == vpc && g.name == "default")
                .map(|g| g.id.clone())
                .collect()
        } else {
            groups.to_vec()
        };
        *world = with_planned_eni(world, from, &groups, PLANNED)?;
        return Ok(Source::Eni(PLANNED.into()));
    }
    Ok(match from {
        "internet" => Source::Internet { igw: None, ip: None },
        f if f.starts_with("igw-") => Source::Internet {
            igw: Some(f.to_string()),
            ip: None,
        },
        f if f.starts_with("eni-") => Source::Eni(f.to_string()),
        other => return Err(format!(
            "{other}: the source must be an ENI id (eni-…), a subnet id (subnet-…), an internet gateway id (igw-…) or `internet`"
        )),
    })
}

/// A destination: an id, an address, `internet`, or a service name
/// (`s3`, `sts`, `logs`, `api.sagemaker`, `runtime.sagemaker`, `ec2`), which
/// is reached through its interface endpoint when the source's VPC has one
/// with private DNS, as the VPC resolver would answer, else at its public address.
pub fn target_of(world: &World, source: &Source, to: &str) -> Result<Target, String> {
    if let Ok(ip) = to.parse::<Ipv4Addr>() {
        return Ok(Target::Address(ip));
    }
    if to.starts_with("s3://") {
        return Ok(Target::Address(cove_model::region::S3_ADDRESS));
    }
    if to.starts_with("eni-") {
        return Ok(Target::Eni(to.into()));
    }
    if to.starts_with("vpce-") {
        return Ok(Target::VpcEndpoint(to.into()));
    }
    if to.starts_with("igw-") {
        return Ok(Target::InternetGateway {
            igw: to.into(),
            ip: None,
        });
    }
    let Source::Eni(eni) = source else {
        return Err(format!(
            "{to}: from the internet, give a destination ENI or its public address"
        ));
    };
    let e = world
        .network_interfaces
        .get(eni)
        .ok_or_else(|| format!("The network interface '{eni}' does not exist"))?;
    let region = world
        .vpcs
        .get(&e.vpc_id)
        .map(|v| v.region.clone())
        .unwrap_or_default();
    if to == "internet" {
        return Ok(match world.attached_internet_gateway(&e.vpc_id) {
            Some(g) => Target::InternetGateway {
                igw: g.id.clone(),
                ip: None,
            },
            None => Target::Address(crate::INTERNET_HOST),
        });
    }
    let host = cove_model::services::service_hosts(&region)
        .into_iter()
        .find(|h| h.api == to)
        .ok_or_else(|| format!("{to}: not an id, an address, `internet` or a service (s3, sts, logs, ec2, api.sagemaker, runtime.sagemaker)"))?;
    let private = world.vpc_endpoints.values().find(|v| {
        v.vpc_id == e.vpc_id
            && v.endpoint_type == EndpointType::Interface
            && v.private_dns_enabled
            && cove_model::services::service_for(&region, &v.service_name, EndpointType::Interface)
                .is_some_and(|s| s.api == Some(host.api) && s.private_dns.is_some())
    });
    Ok(match private {
        Some(v) => Target::VpcEndpoint(v.id.clone()),
        None => Target::Address(host.address),
    })
}
