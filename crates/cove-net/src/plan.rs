//! The desired data plane of one VPC, computed from a `World` snapshot:
//! its router namespace, one namespace per ENI with its address and
//! gateway, the named sets (security-group members, prefix lists), and
//! every ENI's effective security-group rules and every subnet's network
//! ACL. The plan does not depend on the backend (Linux today; an OVN backend
//! would read the same plan).

use crate::naming;
use cove_model::cidr::Cidr;
use cove_model::region;
use cove_model::vpc::*;
use cove_model::world::World;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    All,
    Tcp,
    Udp,
    Icmp,
    Number(u8),
}

impl Proto {
    /// From Cove's normalised protocol strings (`tcp`, `6`, `-1`, `50` …).
    pub fn parse(p: &str) -> Proto {
        match p {
            "-1" | "all" => Proto::All,
            "tcp" | "6" => Proto::Tcp,
            "udp" | "17" => Proto::Udp,
            "icmp" | "1" => Proto::Icmp,
            other => other.parse().map(Proto::Number).unwrap_or(Proto::All),
        }
    }

    pub fn number(self) -> Option<u8> {
        match self {
            Proto::All => None,
            Proto::Tcp => Some(6),
            Proto::Udp => Some(17),
            Proto::Icmp => Some(1),
            Proto::Number(n) => Some(n),
        }
    }
}

/// Who a rule is about: an address range, or the members of a named set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    Cidr(Cidr),
    Set(String),
}

/// The traffic one rule matches (besides its peer).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Match {
    pub proto: Proto,
    /// TCP/UDP destination port range (inclusive).
    pub ports: Option<(u16, u16)>,
    /// ICMP type and code; `None` means any.
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub peer: Peer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRule {
    pub number: i64,
    pub allow: bool,
    pub rule: Match,
}

/// A network ACL's entries per direction, in evaluation order (the `*` deny is implicit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub id: String,
    pub ingress: Vec<AclRule>,
    pub egress: Vec<AclRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EniPlan {
    pub id: String,
    pub netns: String,
    pub router_link: String,
    pub subnet_id: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    /// The union of the egress rules of all the ENI's groups.
    pub egress: Vec<Match>,
    /// The union of the ingress rules of all the ENI's groups.
    pub ingress: Vec<Match>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterPlan {
    pub vpc_id: String,
    pub netns: String,
    pub cidr: Cidr,
    /// Addresses the router answers for: every subnet's `.1` and the VPC's `.2` (DNS).
    pub local_addrs: Vec<Ipv4Addr>,
    pub dns: Ipv4Addr,
    pub enis: Vec<EniPlan>,
    /// Named address sets: security-group members and prefix lists.
    pub sets: BTreeMap<String, Vec<Cidr>>,
    pub acls: BTreeMap<String, Acl>,
    /// Which ACL each subnet uses, and its CIDR.
    pub subnets: BTreeMap<String, (Cidr, String)>,
}

impl RouterPlan {
    pub fn eni_by_ip(&self, ip: Ipv4Addr) -> Option<&EniPlan> {
        self.enis.iter().find(|e| e.ip == ip)
    }

    pub fn set_contains(&self, set: &str, ip: Ipv4Addr) -> bool {
        self.sets
            .get(set)
            .is_some_and(|cidrs| cidrs.iter().any(|c| c.contains_addr(ip)))
    }

    pub fn peer_contains(&self, peer: &Peer, ip: Ipv4Addr) -> bool {
        match peer {
            Peer::Cidr(c) => c.contains_addr(ip),
            Peer::Set(s) => self.set_contains(s, ip),
        }
    }
}

fn port(p: Option<i64>) -> u16 {
    p.unwrap_or(0).clamp(0, 65535) as u16
}

fn icmp_part(v: Option<i64>) -> Option<u8> {
    v.filter(|x| *x >= 0).map(|x| x.min(255) as u8)
}

fn sg_match(rule: &SgRule) -> Match {
    let proto = Proto::parse(&rule.protocol);
    let peer = match &rule.peer {
        SgPeer::Cidr { cidr } => Peer::Cidr(cidr.parse().unwrap_or(Cidr { base: 0, prefix: 0 })),
        SgPeer::Group { group_id, .. } => Peer::Set(naming::group_set(group_id)),
        SgPeer::PrefixList { id } => Peer::Set(naming::prefix_list_set(id)),
    };
    let (ports, icmp_type, icmp_code) = match proto {
        Proto::Tcp | Proto::Udp => (Some((port(rule.from_port), port(rule.to_port))), None, None),
        Proto::Icmp => (None, icmp_part(rule.from_port), icmp_part(rule.to_port)),
        _ => (None, None, None),
    };
    Match {
        proto,
        ports,
        icmp_type,
        icmp_code,
        peer,
    }
}

fn acl_rule(e: &NaclEntry) -> AclRule {
    let proto = Proto::parse(&e.protocol);
    let (ports, icmp_type, icmp_code) = match proto {
        Proto::Tcp | Proto::Udp => (Some((port(e.from_port), port(e.to_port))), None, None),
        Proto::Icmp => (None, icmp_part(e.icmp_type), icmp_part(e.icmp_code)),
        _ => (None, None, None),
    };
    let peer = Peer::Cidr(e.cidr.parse().unwrap_or(Cidr { base: 0, prefix: 0 }));
    AclRule {
        number: e.rule_number,
        allow: e.allow,
        rule: Match {
            proto,
            ports,
            icmp_type,
            icmp_code,
            peer,
        },
    }
}

/// Union of several groups' rules, without duplicates, in a stable order.
fn union(groups: &[&SecurityGroup], egress: bool) -> Vec<Match> {
    let mut out: Vec<Match> = groups
        .iter()
        .flat_map(|g| if egress { &g.egress } else { &g.ingress })
        .map(sg_match)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The plan for one VPC of Cove instance `instance`, or `None` when the VPC does not exist.
pub fn plan_vpc(world: &World, instance: &str, vpc_id: &str) -> Option<RouterPlan> {
    let vpc = world.vpcs.get(vpc_id)?;
    let cidr: Cidr = vpc.cidr.parse().ok()?;
    let subnets: Vec<&Subnet> = world
        .subnets
        .values()
        .filter(|s| s.vpc_id == vpc_id)
        .collect();

    let mut local_addrs: Vec<Ipv4Addr> = subnets
        .iter()
        .filter_map(|s| s.cidr.parse::<Cidr>().ok())
        .map(|c| c.nth(1))
        .collect();
    let dns = cidr.nth(2);
    local_addrs.push(dns);
    local_addrs.sort();
    local_addrs.dedup();

    let enis: Vec<&NetworkInterface> = world
        .network_interfaces
        .values()
        .filter(|e| e.vpc_id == vpc_id)
        .collect();
    let mut sets: BTreeMap<String, Vec<Cidr>> = BTreeMap::new();
    for g in world
        .security_groups
        .values()
        .filter(|g| g.vpc_id == vpc_id)
    {
        let mut members: Vec<Cidr> = enis
            .iter()
            .filter(|e| e.group_ids.contains(&g.id))
            .filter_map(|e| e.private_ip.parse::<Ipv4Addr>().ok())
            .map(|ip| Cidr {
                base: u32::from(ip),
                prefix: 32,
            })
            .collect();
        members.sort();
        sets.insert(naming::group_set(&g.id), members);
    }
    for (id, _, cidrs) in region::prefix_lists(&vpc.region) {
        sets.insert(
            naming::prefix_list_set(&id),
            cidrs.iter().filter_map(|c| c.parse().ok()).collect(),
        );
    }

    let mut acls = BTreeMap::new();
    let mut subnet_acls = BTreeMap::new();
    for acl in world.network_acls.values().filter(|a| a.vpc_id == vpc_id) {
        let mut entries: Vec<&NaclEntry> = acl.entries.iter().collect();
        entries.sort_by_key(|e| e.rule_number);
        acls.insert(
            acl.id.clone(),
            Acl {
                id: acl.id.clone(),
                ingress: entries
                    .iter()
                    .filter(|e| !e.egress)
                    .map(|e| acl_rule(e))
                    .collect(),
                egress: entries
                    .iter()
                    .filter(|e| e.egress)
                    .map(|e| acl_rule(e))
                    .collect(),
            },
        );
        for a in &acl.associations {
            subnet_acls.insert(a.subnet_id.clone(), acl.id.clone());
        }
    }
    let subnet_map: BTreeMap<String, (Cidr, String)> = subnets
        .iter()
        .filter_map(|s| {
            let c: Cidr = s.cidr.parse().ok()?;
            Some((
                s.id.clone(),
                (c, subnet_acls.get(&s.id).cloned().unwrap_or_default()),
            ))
        })
        .collect();

    let mut eni_plans = Vec::new();
    for e in &enis {
        let Some((subnet_cidr, _)) = subnet_map.get(&e.subnet_id) else {
            continue;
        };
        let Ok(ip) = e.private_ip.parse::<Ipv4Addr>() else {
            continue;
        };
        let groups: Vec<&SecurityGroup> = e
            .group_ids
            .iter()
            .filter_map(|g| world.security_groups.get(g))
            .collect();
        eni_plans.push(EniPlan {
            id: e.id.clone(),
            netns: naming::eni_netns(instance, &e.id),
            router_link: naming::eni_router_link(&e.id),
            subnet_id: e.subnet_id.clone(),
            ip,
            prefix: subnet_cidr.prefix,
            gateway: subnet_cidr.nth(1),
            egress: union(&groups, true),
            ingress: union(&groups, false),
        });
    }
    Some(RouterPlan {
        vpc_id: vpc_id.to_string(),
        netns: naming::router_netns(instance, vpc_id),
        cidr,
        local_addrs,
        dns,
        enis: eni_plans,
        sets,
        acls,
        subnets: subnet_map,
    })
}
