//! What the VPC resolver (the Amazon-provided DNS server at the VPC's base+2)
//! answers, computed from the model alone. The network server that speaks
//! DNS on the wire lives in the binary; this is the pure part, so every
//! naming rule is unit-tested.
//!
//! In order: a private hosted zone associated with the VPC answers for every
//! name under it (with DNS hostnames and support on, as AWS requires),
//! following CNAMEs within the VPC's zones; an interface endpoint with
//! private DNS takes over its service's
//! regular name inside its VPC; endpoint-specific names (`vpce-…`) resolve
//! to the endpoint's ENIs (the per-zone name to that zone's only); with DNS
//! hostnames on, an EFS file system's name (`fs-….efs.<region>.amazonaws.com`)
//! resolves to its mount target in the asker's zone and the zonal name
//! (`<zone>.fs-….efs…`) to that zone's; the region's service names resolve
//! to their public addresses; with DNS
//! hostnames on, `ip-a-b-c-d.ec2.internal` names resolve for the VPC's ENIs.
//! Any other public name resolves, as AWS's resolver resolves the internet's
//! names, to Cove's simulated web ([`region::WEB_HOST`]), which a VPC
//! reaches only through an internet or NAT gateway; names under the
//! reserved suffixes (RFC 2606, 6761: `.test`, `.invalid`, `.localhost`,
//! `.example`, and `.internal`, `.local`) and unknown `amazonaws.com` names
//! do not.

use cove_model::region;
use cove_model::services;
use cove_model::vpc::EndpointType;
use cove_model::world::World;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name exists; these are its IPv4 addresses.
    Addresses(Vec<Ipv4Addr>),
    /// No such name.
    NxDomain,
    /// The VPC has DNS support turned off: the resolver does not serve it.
    Refused,
}

/// Lower case, without the trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The private IPs of an endpoint's ENIs, optionally only those in `zone`.
fn endpoint_ips(world: &World, eni_ids: &[String], zone: Option<&str>) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = eni_ids
        .iter()
        .filter_map(|id| world.network_interfaces.get(id))
        .filter(|e| zone.is_none_or(|z| e.availability_zone == z))
        .map(|e| e.private_ip)
        .collect();
    ips.sort();
    ips
}

/// The answer of the VPC's private hosted zone for `name`, if one holds it:
/// its A records, a CNAME's target resolved in turn (a few levels deep),
/// an empty answer for a name with only other records, NXDOMAIN for a name
/// the zone does not have.
fn from_private_zones(world: &World, vpc_id: &str, name: &str, depth: u8) -> Option<Answer> {
    let fqdn = format!("{name}.");
    let zone = world.private_zone_for(vpc_id, &fqdn)?;
    let records: Vec<_> = zone.records.iter().filter(|r| r.name == fqdn).collect();
    if records.is_empty() {
        return Some(Answer::NxDomain);
    }
    if let Some(cname) = records.iter().find(|r| r.kind == "CNAME") {
        let target = normalize(cname.values.first().map(String::as_str).unwrap_or_default());
        if depth >= 8 {
            return Some(Answer::Addresses(vec![]));
        }
        return Some(
            from_private_zones(world, vpc_id, &target, depth + 1)
                .unwrap_or_else(|| resolve(world, vpc_id, &target)),
        );
    }
    let mut ips: Vec<Ipv4Addr> = records
        .iter()
        .filter(|r| r.kind == "A")
        .flat_map(|r| r.values.iter().filter_map(|v| v.parse().ok()))
        .collect();
    ips.sort();
    Some(Answer::Addresses(ips))
}

/// Resolves an A query for `name` asked from inside VPC `vpc_id`, by a
/// client whose address is not known (names that depend on the asker's
/// zone do not resolve).
pub fn resolve(world: &World, vpc_id: &str, name: &str) -> Answer {
    resolve_for(world, vpc_id, None, name)
}

/// An EFS file system's DNS names in `vpc`: the plain name gives the mount
/// target in the zone of the asking ENI, the zonal one that zone's; a zone
/// without a mount target has no answer, as on AWS.
fn file_system_name(
    world: &World,
    vpc: &cove_model::vpc::Vpc,
    client: Option<Ipv4Addr>,
    name: &str,
) -> Option<Answer> {
    let head = name.strip_suffix(&format!(".efs.{}.amazonaws.com", vpc.region))?;
    let (zone, fs_id) = match head.split_once('.') {
        Some((zone, fs_id)) => (Some(zone.to_string()), fs_id),
        None => (None, head),
    };
    let zone = zone.or_else(|| {
        let client = client?;
        world
            .network_interfaces
            .values()
            .find(|e| e.vpc_id == vpc.id && e.private_ip == client)
            .map(|e| e.availability_zone.clone())
    });
    let target = zone.and_then(|zone| {
        world.mount_targets.values().find(|m| {
            m.file_system_id == fs_id && m.vpc_id == vpc.id && m.availability_zone == zone
        })
    });
    Some(match target {
        Some(m) => Answer::Addresses(vec![m.ip_address]),
        None => Answer::NxDomain,
    })
}

/// [`resolve`], asked by `client` (an address in the VPC).
pub fn resolve_for(world: &World, vpc_id: &str, client: Option<Ipv4Addr>, name: &str) -> Answer {
    let Some(vpc) = world.vpcs.get(vpc_id) else {
        return Answer::Refused;
    };
    if !vpc.enable_dns_support {
        return Answer::Refused;
    }
    let name = normalize(name);
    if vpc.enable_dns_hostnames {
        if let Some(answer) = from_private_zones(world, vpc_id, &name, 0) {
            return answer;
        }
    }
    let region = vpc.region.as_str();
    for e in world.vpc_endpoints.values().filter(|e| {
        e.region == region && e.endpoint_type == EndpointType::Interface && e.state.serves()
    }) {
        let Some(service) = services::service_for(region, &e.service_name, EndpointType::Interface)
        else {
            continue;
        };
        if e.vpc_id == vpc_id
            && e.private_dns_enabled
            && service
                .private_dns
                .as_deref()
                .is_some_and(|p| services::private_dns_matches(p, &name))
        {
            return Answer::Addresses(endpoint_ips(world, &e.network_interface_ids, None));
        }
        let zones = world.endpoint_zones(e);
        for (dns, zone) in services::endpoint_dns_names(&e.id, &service.base_dns, &zones) {
            if dns == name {
                return Answer::Addresses(endpoint_ips(
                    world,
                    &e.network_interface_ids,
                    zone.as_deref(),
                ));
            }
        }
    }

    if vpc.enable_dns_hostnames {
        if let Some(answer) = file_system_name(world, vpc, client, &name) {
            return answer;
        }
    }
    if let Some(address) = services::public_address(region, &name) {
        return Answer::Addresses(vec![address]);
    }

    if vpc.enable_dns_hostnames {
        let hit = world
            .network_interfaces
            .values()
            .find(|e| e.vpc_id == vpc_id && region::private_dns_name(region, e.private_ip) == name);
        if let Some(e) = hit {
            return Answer::Addresses(vec![e.private_ip]);
        }
    }
    if region::is_public_name(&name) {
        return Answer::Addresses(vec![region::WEB_HOST]);
    }
    Answer::NxDomain
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn a_file_systems_name_gives_the_mount_target_of_the_askers_zone() {
        use cove_model::efs::{LifeCycleState, MountTarget};
        let mut w = two_subnet_world();
        let mut vpc = (**w.vpcs.get(VPC).unwrap()).clone();
        vpc.enable_dns_hostnames = true;
        w.vpcs.insert(VPC.into(), vpc.clone().into());
        let target = |id: &str, zone: &str, ip: &str| MountTarget {
            id: id.into(),
            region: "us-east-1".into(),
            owner_id: fixtures::ACCOUNT.into(),
            file_system_id: "fs-0123456789abcdef0".into(),
            subnet_id: String::new(),
            vpc_id: VPC.into(),
            availability_zone: zone.into(),
            availability_zone_id: String::new(),
            ip_address: fixtures::ip(ip),
            network_interface_id: String::new(),
            state: LifeCycleState::Available,
        };
        w.mount_targets.insert(
            "fsmt-a".into(),
            target("fsmt-a", "us-east-1a", "10.0.1.77").into(),
        );
        let name = "fs-0123456789abcdef0.efs.us-east-1.amazonaws.com";
        let in_a = fixtures::ip("10.0.1.4");
        let b = add_eni(&mut w, "subnet-b", "10.0.2.9");
        let in_b = w.network_interfaces[&b].private_ip;
        let addrs = |ips: &[&str]| Answer::Addresses(ips.iter().map(|i| fixtures::ip(i)).collect());
        assert_eq!(
            resolve_for(&w, VPC, Some(in_a), name),
            addrs(&["10.0.1.77"])
        );
        // No mount target in zone b: no answer there, as on AWS.
        assert_eq!(resolve_for(&w, VPC, Some(in_b), name), Answer::NxDomain);
        assert_eq!(resolve(&w, VPC, name), Answer::NxDomain);
        assert_eq!(
            resolve_for(&w, VPC, Some(in_b), &format!("us-east-1a.{name}")),
            addrs(&["10.0.1.77"])
        );
        w.mount_targets.insert(
            "fsmt-b".into(),
            target("fsmt-b", "us-east-1b", "10.0.2.77").into(),
        );
        assert_eq!(
            resolve_for(&w, VPC, Some(in_b), name),
            addrs(&["10.0.2.77"])
        );
        // Only with DNS hostnames on, as AWS requires.
        vpc.enable_dns_hostnames = false;
        w.vpcs.insert(VPC.into(), vpc.into());
        assert_eq!(resolve_for(&w, VPC, Some(in_b), name), Answer::NxDomain);
    }
    use cove_model::vpc::{EndpointState, NetworkInterface, VpcEndpoint};

    const VPC: &str = "vpc-1";

    /// The fixture VPC, with subnet b moved to zone b.
    fn two_subnet_world() -> World {
        let mut w = fixtures::world("", vec![], [&[], &[], &[]], vec![]);
        let mut b = (**w.subnets.get("subnet-b").unwrap()).clone();
        b.availability_zone = "us-east-1b".into();
        w.subnets.insert(b.id.clone(), b.into());
        w
    }

    fn add_eni(w: &mut World, subnet: &str, ip: &str) -> String {
        let mut e: NetworkInterface = (**w.network_interfaces.get("eni-a1").unwrap()).clone();
        e.id = format!("eni-{}", ip.replace('.', ""));
        e.subnet_id = subnet.into();
        e.availability_zone = w.subnets.get(subnet).unwrap().availability_zone.clone();
        e.private_ip = fixtures::ip(ip);
        w.network_interfaces.insert(e.id.clone(), e.clone().into());
        e.id
    }

    fn add_vpc(w: &mut World, id: &str, cidr: &str) -> String {
        let mut v = (**w.vpcs.get(VPC).unwrap()).clone();
        v.id = id.into();
        v.cidr = fixtures::net(cidr);
        w.vpcs.insert(id.into(), v.into());
        id.into()
    }

    fn interface_endpoint(world: &mut World, private_dns: bool) -> (String, Vec<String>) {
        let a = add_eni(world, "subnet-a", "10.0.1.40");
        let b = add_eni(world, "subnet-b", "10.0.2.40");
        let id = "vpce-0000000000000abcd".to_string();
        world.vpc_endpoints.insert(
            id.clone(),
            VpcEndpoint {
                id: id.clone(),
                region: "us-east-1".into(),
                vpc_id: VPC.into(),
                service_name: "com.amazonaws.us-east-1.sts".into(),
                endpoint_type: EndpointType::Interface,
                policy_document: None,
                route_table_ids: vec![],
                subnet_ids: vec!["subnet-a".into(), "subnet-b".into()],
                group_ids: vec![],
                network_interface_ids: vec![a, b],
                private_dns_enabled: private_dns,
                state: EndpointState::Available,
                create_time: "2026-01-01T00:00:00Z".into(),
            }
            .into(),
        );
        let service = services::service_for(
            "us-east-1",
            "com.amazonaws.us-east-1.sts",
            EndpointType::Interface,
        )
        .unwrap();
        let zones = ["us-east-1a".to_string(), "us-east-1b".to_string()];
        let names = services::endpoint_dns_names(&id, &service.base_dns, &zones)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        (id, names)
    }

    fn ips(list: &[&str]) -> Answer {
        Answer::Addresses(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn service_names_resolve_to_public_addresses_without_an_endpoint() {
        let w = two_subnet_world();
        assert_eq!(
            resolve(&w, VPC, "sts.us-east-1.amazonaws.com."),
            ips(&["192.0.2.11"])
        );
        assert_eq!(
            resolve(&w, VPC, "Bucket.S3.us-east-1.amazonaws.com"),
            ips(&["192.0.2.20"])
        );
    }

    #[test]
    fn public_names_resolve_to_the_simulated_web() {
        let w = two_subnet_world();
        for name in [
            "pypi.org",
            "files.pythonhosted.org.",
            "Example.COM",
            "a-b.co.uk",
        ] {
            assert_eq!(resolve(&w, VPC, name), ips(&["203.0.113.11"]), "{name}");
        }
        for name in [
            "localhost",
            "db.test",
            "x.invalid",
            "printer.local",
            "nothing.us-east-1.amazonaws.com",
            "ip-10-0-1-99.ec2.internal",
            "1.2.3.4",
            "under_score.com",
            "-bad.com",
        ] {
            assert_eq!(resolve(&w, VPC, name), Answer::NxDomain, "{name}");
        }
    }

    #[test]
    fn private_dns_takes_over_the_service_name_in_its_vpc_only() {
        let mut w = two_subnet_world();
        let (_, names) = interface_endpoint(&mut w, true);
        let both = ips(&["10.0.1.40", "10.0.2.40"]);
        assert_eq!(resolve(&w, VPC, "sts.us-east-1.amazonaws.com"), both);
        // The endpoint's own names: regional, then per zone.
        assert_eq!(resolve(&w, VPC, &names[0]), both);
        assert_eq!(resolve(&w, VPC, &names[1]), ips(&["10.0.1.40"]));
        assert_eq!(resolve(&w, VPC, &names[2]), ips(&["10.0.2.40"]));
        // Another VPC keeps the public answer.
        let other = add_vpc(&mut w, "vpc-0000000000000other", "10.9.0.0/16");
        assert_eq!(
            resolve(&w, &other, "sts.us-east-1.amazonaws.com"),
            ips(&["192.0.2.11"])
        );
    }

    #[test]
    fn without_private_dns_the_service_name_stays_public() {
        let mut w = two_subnet_world();
        let (_, names) = interface_endpoint(&mut w, false);
        assert_eq!(
            resolve(&w, VPC, "sts.us-east-1.amazonaws.com"),
            ips(&["192.0.2.11"])
        );
        assert_eq!(
            resolve(&w, VPC, &names[0]),
            ips(&["10.0.1.40", "10.0.2.40"])
        );
    }

    #[test]
    fn hostnames_need_dns_hostnames_and_dns_support_gates_everything() {
        let mut w = two_subnet_world();
        add_eni(&mut w, "subnet-a", "10.0.1.9");
        assert_eq!(
            resolve(&w, VPC, "ip-10-0-1-9.ec2.internal"),
            Answer::NxDomain
        );
        let mut vpc = (**w.vpcs.get(VPC).unwrap()).clone();
        vpc.enable_dns_hostnames = true;
        w.vpcs.insert(VPC.into(), vpc.clone().into());
        assert_eq!(
            resolve(&w, VPC, "ip-10-0-1-9.ec2.internal"),
            ips(&["10.0.1.9"])
        );
        assert_eq!(
            resolve(&w, VPC, "ip-10-0-1-10.ec2.internal"),
            Answer::NxDomain
        );
        vpc.enable_dns_support = false;
        w.vpcs.insert(VPC.into(), vpc.into());
        assert_eq!(
            resolve(&w, VPC, "sts.us-east-1.amazonaws.com"),
            Answer::Refused
        );
    }

    #[test]
    fn a_private_zone_answers_in_its_vpcs_only() {
        use cove_model::route53::{HostedZone, RecordSet, ZoneVpc};
        let mut w = two_subnet_world();
        let set = |name: &str, kind: &str, value: &str| RecordSet {
            name: name.into(),
            kind: kind.into(),
            ttl: Some(60),
            values: vec![value.into()],
        };
        let zone = HostedZone {
            id: "ZCORP".into(),
            name: "corp.internal.".into(),
            caller_reference: "r".into(),
            comment: None,
            private: true,
            vpcs: vec![ZoneVpc {
                vpc_id: VPC.into(),
                region: "us-east-1".into(),
            }],
            records: vec![
                set("db.corp.internal.", "A", "10.2.1.4"),
                set("pg.corp.internal.", "CNAME", "DB.corp.internal"),
                set("mail.corp.internal.", "MX", "10 mx.corp.internal."),
            ],
        };
        w.hosted_zones.insert(zone.id.clone(), zone.into());
        // As on AWS, private zones need DNS hostnames on as well as DNS support.
        assert_eq!(resolve(&w, VPC, "db.corp.internal"), Answer::NxDomain);
        let mut vpc = (*w.vpcs[VPC]).clone();
        vpc.enable_dns_hostnames = true;
        w.vpcs.insert(VPC.into(), vpc.into());
        let db = Answer::Addresses(vec![fixtures::ip("10.2.1.4")]);
        assert_eq!(resolve(&w, VPC, "DB.corp.internal."), db);
        assert_eq!(resolve(&w, VPC, "pg.corp.internal"), db);
        assert_eq!(
            resolve(&w, VPC, "mail.corp.internal"),
            Answer::Addresses(vec![])
        );
        assert_eq!(resolve(&w, VPC, "nothing.corp.internal"), Answer::NxDomain);
        assert_eq!(
            resolve(&w, "vpc-other", "db.corp.internal"),
            Answer::Refused
        );
    }
}
