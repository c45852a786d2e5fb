//! Packets and what one security-group rule or network-ACL entry matches,
//! read straight from the stored resources (not from the data plane's
//! compiled plan, so the differential test compares two independent
//! readings of the same configuration).

use cove_model::cidr::Cidr;
use cove_model::protocol::Protocol as RuleProtocol;
use cove_model::vpc::{NaclEntry, SecurityGroup, SgPeer, SgRule};
use cove_model::world::World;
use serde::Serialize;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Some(Protocol::Tcp),
            "udp" | "17" => Some(Protocol::Udp),
            "icmp" | "1" => Some(Protocol::Icmp),
            _ => None,
        }
    }

    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }

    pub fn has_ports(self) -> bool {
        self != Protocol::Icmp
    }
}

/// One packet: ports for TCP and UDP, type and code for ICMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: Protocol,
    pub src_port: u16,
    pub dst_port: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
}

impl Packet {
    pub fn new(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: Protocol,
        src_port: u16,
        dst_port: u16,
    ) -> Packet {
        let (icmp_type, icmp_code) = if protocol == Protocol::Icmp {
            (8, 0)
        } else {
            (0, 0)
        };
        Packet {
            src,
            dst,
            protocol,
            src_port,
            dst_port,
            icmp_type,
            icmp_code,
        }
    }

    /// The packet the destination sends back (an echo request is answered by an echo reply).
    pub fn reply(&self) -> Packet {
        Packet {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            icmp_type: if self.protocol == Protocol::Icmp && self.icmp_type == 8 {
                0
            } else {
                self.icmp_type
            },
            ..*self
        }
    }

    pub fn with_src(&self, src: Ipv4Addr) -> Packet {
        Packet { src, ..*self }
    }

    pub fn with_dst(&self, dst: Ipv4Addr) -> Packet {
        Packet { dst, ..*self }
    }
}

fn port_of(v: Option<i64>) -> u16 {
    // Negative ports read as 0, ports above 65535 as 65535.
    u16::try_from(v.unwrap_or(0).max(0)).unwrap_or(u16::MAX)
}

/// ICMP type or code of a rule: absent or -1 means any.
fn icmp_field_matches(rule: Option<i64>, value: u8) -> bool {
    match rule {
        Some(x) if x >= 0 => u8::try_from(x).unwrap_or(u8::MAX) == value,
        _ => true,
    }
}

/// Whether a rule's protocol and ports (or ICMP type and code) match a
/// packet. An ICMPv6 rule matches no packet: only IPv6 carries ICMPv6, and
/// Cove's VPCs carry IPv4 (the data plane leaves such rules out too).
fn traffic_matches(
    protocol: RuleProtocol,
    ports: (Option<i64>, Option<i64>),
    icmp: (Option<i64>, Option<i64>),
    p: &Packet,
) -> bool {
    if protocol == RuleProtocol::Icmpv6 {
        return false;
    }
    let Some(number) = protocol.number() else {
        return true;
    };
    if number != p.protocol.number() {
        return false;
    }
    match p.protocol {
        Protocol::Tcp | Protocol::Udp => {
            (port_of(ports.0)..=port_of(ports.1)).contains(&p.dst_port)
        }
        Protocol::Icmp => {
            icmp_field_matches(icmp.0, p.icmp_type) && icmp_field_matches(icmp.1, p.icmp_code)
        }
    }
}

pub fn sg_rule_matches(
    world: &World,
    vpc_id: &str,
    rule: &SgRule,
    p: &Packet,
    peer: Ipv4Addr,
) -> bool {
    // For a security group rule, ICMP type and code are in FromPort and ToPort.
    let icmp = (rule.from_port, rule.to_port);
    traffic_matches(rule.protocol, (rule.from_port, rule.to_port), icmp, p)
        && sg_peer_contains(world, vpc_id, &rule.peer, peer)
}

/// Whether `ip` is what a rule's peer names: a CIDR, a prefix list's CIDRs,
/// or the private address of an ENI in the referenced group (of this VPC,
/// or of a VPC it is peered with while the peering is active).
pub fn sg_peer_contains(world: &World, vpc_id: &str, peer: &SgPeer, ip: Ipv4Addr) -> bool {
    match peer {
        SgPeer::Cidr { cidr } => cidr.contains_addr(ip),
        SgPeer::PrefixList { id } => prefix_list_contains(world, vpc_id, id, ip),
        SgPeer::Group { group_id, .. } => group_has_member(world, vpc_id, group_id, ip),
    }
}

pub fn group_has_member(world: &World, vpc_id: &str, group_id: &str, ip: Ipv4Addr) -> bool {
    let Some(group_vpc) = world
        .security_groups
        .get(group_id)
        .map(|g| g.vpc_id.as_str())
    else {
        return false;
    };
    if group_vpc != vpc_id && world.active_peering(vpc_id, group_vpc).is_none() {
        return false;
    }
    world.network_interfaces.values().any(|e| {
        e.vpc_id == group_vpc && e.group_ids.iter().any(|g| g == group_id) && e.private_ip == ip
    })
}

pub fn prefix_list_cidrs(world: &World, vpc_id: &str, id: &str) -> Vec<Cidr> {
    let region = world
        .vpcs
        .get(vpc_id)
        .map(|v| v.region.clone())
        .unwrap_or_default();
    world.prefix_list_cidrs(&region, id).unwrap_or_default()
}

fn prefix_list_contains(world: &World, vpc_id: &str, id: &str, ip: Ipv4Addr) -> bool {
    prefix_list_cidrs(world, vpc_id, id)
        .iter()
        .any(|c| c.contains_addr(ip))
}

pub fn acl_entry_matches(e: &NaclEntry, p: &Packet) -> bool {
    let peer = if e.egress { p.dst } else { p.src };
    traffic_matches(
        e.protocol,
        (e.from_port, e.to_port),
        (e.icmp_type, e.icmp_code),
        p,
    ) && e.cidr.contains_addr(peer)
}

/// The first rule of any of the groups that admits the packet, in the groups' order.
pub fn admitting_rule<'w>(
    world: &'w World,
    vpc_id: &str,
    groups: &[&'w SecurityGroup],
    p: &Packet,
    egress: bool,
) -> Option<(&'w SecurityGroup, &'w SgRule)> {
    let peer = if egress { p.dst } else { p.src };
    groups.iter().find_map(|g| {
        let rules = if egress { &g.egress } else { &g.ingress };
        rules
            .iter()
            .find(|r| sg_rule_matches(world, vpc_id, r, p, peer))
            .map(|r| (*g, r))
    })
}

/// Private (RFC 1918) and shared (RFC 6598) ranges, which internet gateways refuse to carry.
pub fn is_rfc1918(ip: Ipv4Addr) -> bool {
    ip.is_private()
}

pub fn is_rfc6598(ip: Ipv4Addr) -> bool {
    const SHARED: Cidr = Cidr::from_octets([100, 64, 0, 0], 10);
    SHARED.contains_addr(ip)
}
