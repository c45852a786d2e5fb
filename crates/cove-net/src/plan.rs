//! The desired data plane of one VPC, computed from a `World` snapshot:
//! its router namespace, one namespace per ENI with its address and
//! gateway, the named sets (security-group members, prefix lists), and
//! every ENI's effective security-group rules and every subnet's network
//! ACL. The plan does not depend on the backend (Linux today; an OVN backend
//! would read the same plan).

use crate::naming;
use cove_model::cidr::{self, Cidr};
use cove_model::protocol::Protocol;
use cove_model::region;
use cove_model::vpc::*;
use cove_model::world::World;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    All,
    Tcp,
    Udp,
    Icmp,
    Number(u8),
}

impl Proto {
    /// What the kernel matches for a rule's protocol; `None` for ICMPv6,
    /// which only IPv6 carries: Cove's VPCs are IPv4, so such a rule
    /// matches nothing and is left out.
    pub fn of_rule(p: Protocol) -> Option<Proto> {
        Some(match p {
            Protocol::All => Proto::All,
            Protocol::Tcp => Proto::Tcp,
            Protocol::Udp => Proto::Udp,
            Protocol::Icmp => Proto::Icmp,
            Protocol::Icmpv6 => return None,
            Protocol::Number(n) => Proto::Number(n),
        })
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
    /// Whether the router drops packets from this ENI that carry another
    /// source address (off for NAT gateways, which forward for others).
    pub source_check: bool,
    /// Whether security groups apply (NAT gateways have none on AWS).
    pub firewalled: bool,
    pub netns: String,
    pub router_link: String,
    pub subnet_id: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    /// What the ENI's resolv.conf says: from its VPC's DHCP options set.
    pub resolv: ResolverConfig,
    /// The union of the egress rules of all the ENI's groups.
    pub egress: Vec<Match>,
    /// The union of the ingress rules of all the ENI's groups.
    pub ingress: Vec<Match>,
}

/// Where a route sends packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Out through the internet gateway link.
    InternetGateway,
    /// Out through a gateway endpoint's link (the prefix list's CIDRs).
    Endpoint { link: String, ip: Ipv4Addr },
    /// To another ENI of the VPC (a NAT gateway's, or an appliance's).
    Eni { link: String, ip: Ipv4Addr },
    /// To a peered VPC's router, over the peering connection's veth.
    Peering { link: String, ip: Ipv4Addr },
    /// Dropped: an explicit blackhole, or a target that is gone.
    Blackhole,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    pub dest: Cidr,
    pub via: Via,
}

/// One route table as a kernel routing table, used by the subnets it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    pub id: String,
    pub kernel_table: u32,
    pub subnets: Vec<Cidr>,
    pub routes: Vec<RoutePlan>,
}

/// A gateway endpoint's veth to the region network. Traffic leaving through
/// it is source-NATed to `router_ip`, an address unique to the endpoint, so
/// the service can tell which endpoint (and so which VPC) a request came
/// through: `aws:SourceVpce` and `aws:SourceVpc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPlan {
    pub id: String,
    pub link: IgwPlan,
    /// The nftables set of the service's prefix list: the only
    /// destinations the link carries. `None` for a service without one,
    /// whose link then carries nothing.
    pub prefix_list_set: Option<String>,
}

/// The veth to a peered VPC's router, for an active peering connection.
/// `link.region_link` and `link.region_ip` are the far end's, in `peer_netns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeeringPlan {
    pub id: String,
    pub peer_netns: String,
    pub link: IgwPlan,
}

/// The veth between the router and the region network, for an attached internet gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgwPlan {
    pub router_link: String,
    pub region_link: String,
    pub router_ip: Ipv4Addr,
    pub region_ip: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterPlan {
    pub vpc_id: String,
    pub netns: String,
    /// Active peering connections: a veth to each peer's router.
    pub peerings: Vec<PeeringPlan>,
    /// The VPC's IPv4 CIDR blocks, the primary first.
    pub cidrs: Vec<Cidr>,
    /// Addresses the router answers for: every subnet's `.1` and the VPC's `.2` (DNS).
    pub local_addrs: Vec<Ipv4Addr>,
    pub dns: Ipv4Addr,
    pub enis: Vec<EniPlan>,
    /// Named address sets: security-group members and prefix lists.
    pub sets: BTreeMap<String, Vec<Cidr>>,
    pub acls: BTreeMap<String, Acl>,
    /// Which ACL each subnet uses, and its CIDR.
    pub subnets: BTreeMap<String, (Cidr, String)>,
    pub tables: Vec<TablePlan>,
    pub igw: Option<IgwPlan>,
    /// Private address → public address (Elastic IPs), translated at the internet gateway.
    pub public_ips: Vec<(Ipv4Addr, Ipv4Addr)>,
    pub endpoints: Vec<EndpointPlan>,
    /// ENIs covered by a flow log (of the VPC, their subnet or themselves):
    /// the router accounts their accepted and rejected packets.
    pub flow_enis: Vec<String>,
}

/// The region network of one Cove instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionPlan {
    pub netns: String,
    /// Addresses in the region network that processes can listen on: the
    /// simulated internet host, the simulated web and Cove's service addresses.
    pub internet_hosts: Vec<Ipv4Addr>,
    /// Gateway endpoint links (routes back to their addresses are connected).
    pub endpoints: Vec<IgwPlan>,
    /// Per VPC with an internet gateway: its link and the public IPs behind it.
    pub vpcs: Vec<(IgwPlan, Vec<Ipv4Addr>)>,
}

/// The point-to-point addresses of a VPC's gateway link: a /30 in the shared
/// address space 100.64.0.0/10, picked by hashing the VPC id (stable).
pub fn link_addresses(vpc_id: &str) -> (Ipv4Addr, Ipv4Addr) {
    let h = cove_model::ids::fnv32(vpc_id);
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0)) + (h % (1 << 20)) * 4;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

/// The region network of one Cove instance, from the plans of its VPCs.
pub fn region_from<'a>(
    instance: &str,
    plans: impl IntoIterator<Item = &'a RouterPlan>,
) -> RegionPlan {
    let mut vpcs = Vec::new();
    let mut endpoints = Vec::new();
    for plan in plans {
        endpoints.extend(plan.endpoints.iter().map(|e| e.link.clone()));
        if let Some(igw) = &plan.igw {
            vpcs.push((
                igw.clone(),
                plan.public_ips.iter().map(|(_, public)| *public).collect(),
            ));
        }
    }
    RegionPlan {
        netns: naming::region_netns(instance),
        internet_hosts: [region::INTERNET_HOST, region::WEB_HOST]
            .into_iter()
            .chain(
                crate::listen::service_addresses()
                    .into_iter()
                    .map(|(ip, _)| ip),
            )
            .collect(),
        vpcs,
        endpoints,
    }
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
    // Negative ports read as 0, ports above 65535 as 65535.
    u16::try_from(p.unwrap_or(0).max(0)).unwrap_or(u16::MAX)
}

fn icmp_part(v: Option<i64>) -> Option<u8> {
    v.filter(|x| *x >= 0)
        .map(|x| u8::try_from(x).unwrap_or(u8::MAX))
}

/// The VPCs actively peered with `vpc_id`.
pub fn peered_vpcs<'w>(world: &'w World, vpc_id: &str) -> BTreeSet<&'w str> {
    world
        .vpc_peering_connections
        .values()
        .filter(|p| p.is_active())
        .filter_map(|p| p.peer_of(vpc_id))
        .filter(|peer| world.vpcs.contains_key(*peer))
        .collect()
}

/// The member sets of the groups of `group_vpc`, held by a router of a VPC
/// peered with it (its rules may name them).
fn peer_group_sets(
    world: &World,
    group_vpc: &str,
    only: Option<&BTreeSet<&str>>,
) -> BTreeMap<String, Vec<Cidr>> {
    let groups: BTreeSet<&str> = world
        .security_groups
        .values()
        .filter(|g| g.vpc_id == group_vpc)
        .map(|g| g.id.as_str())
        .filter(|g| only.is_none_or(|o| o.contains(g)))
        .collect();
    if groups.is_empty() {
        return BTreeMap::new();
    }
    let members = world
        .network_interfaces
        .values()
        .filter(|e| e.vpc_id == group_vpc)
        .map(Arc::as_ref);
    group_sets(members, &groups)
}

/// The customer-managed prefix lists a VPC's security groups and route
/// tables name.
fn referenced_prefix_lists(world: &World, vpc_id: &str) -> BTreeSet<String> {
    let in_rules = world
        .security_groups
        .values()
        .filter(|g| g.vpc_id == vpc_id)
        .flat_map(|g| g.ingress.iter().chain(&g.egress))
        .filter_map(|r| match &r.peer {
            SgPeer::PrefixList { id } => Some(id.clone()),
            _ => None,
        });
    let in_routes = world
        .route_tables
        .values()
        .filter(|t| t.vpc_id == vpc_id)
        .flat_map(|t| &t.routes)
        .filter_map(|r| r.destination_prefix_list_id.clone());
    in_rules
        .chain(in_routes)
        .filter(|id| world.managed_prefix_lists.contains_key(id))
        .collect()
}

/// A security-group rule as a match, or `None` for one that matches no
/// IPv4 packet (ICMPv6).
fn sg_match(rule: &SgRule) -> Option<Match> {
    let proto = Proto::of_rule(rule.protocol)?;
    let peer = match &rule.peer {
        SgPeer::Cidr { cidr } => Peer::Cidr(*cidr),
        SgPeer::Group { group_id, .. } => Peer::Set(naming::group_set(group_id)),
        SgPeer::PrefixList { id } => Peer::Set(naming::prefix_list_set(id)),
    };
    let (ports, icmp_type, icmp_code) = match proto {
        Proto::Tcp | Proto::Udp => (Some((port(rule.from_port), port(rule.to_port))), None, None),
        Proto::Icmp => (None, icmp_part(rule.from_port), icmp_part(rule.to_port)),
        _ => (None, None, None),
    };
    Some(Match {
        proto,
        ports,
        icmp_type,
        icmp_code,
        peer,
    })
}

/// A network ACL entry, or `None` for one that matches no IPv4 packet (ICMPv6).
fn acl_rule(e: &NaclEntry) -> Option<AclRule> {
    let (proto, cidr) = (Proto::of_rule(e.protocol)?, e.cidr);
    let (ports, icmp_type, icmp_code) = match proto {
        Proto::Tcp | Proto::Udp => (Some((port(e.from_port), port(e.to_port))), None, None),
        Proto::Icmp => (None, icmp_part(e.icmp_type), icmp_part(e.icmp_code)),
        _ => (None, None, None),
    };
    Some(AclRule {
        number: e.rule_number,
        allow: e.allow,
        rule: Match {
            proto,
            ports,
            icmp_type,
            icmp_code,
            peer: Peer::Cidr(cidr),
        },
    })
}

/// Union of several groups' rules, without duplicates, in a stable order.
fn union(groups: &[&SecurityGroup], egress: bool) -> Vec<Match> {
    let mut out: Vec<Match> = groups
        .iter()
        .flat_map(|g| if egress { &g.egress } else { &g.ingress })
        .filter_map(sg_match)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether a flow log (of the ENI's VPC, its subnet or itself) covers the ENI.
pub fn flow_logged(world: &World, eni_id: &str) -> bool {
    world
        .network_interfaces
        .get(eni_id)
        .is_some_and(|e| world.flow_logs.values().any(|f| f.covers(e)))
}

/// The member sets (`sg_<id>`: the private IPs of the ENIs in the group) of
/// `groups`, from one walk over `enis`.
pub fn group_sets<'a>(
    enis: impl Iterator<Item = &'a NetworkInterface>,
    groups: &BTreeSet<&str>,
) -> BTreeMap<String, Vec<Cidr>> {
    let mut members: BTreeMap<&str, Vec<Cidr>> = groups.iter().map(|g| (*g, vec![])).collect();
    for e in enis {
        for g in &e.group_ids {
            if let Some(list) = members.get_mut(g.as_str()) {
                list.push(Cidr {
                    base: u32::from(e.private_ip),
                    prefix: 32,
                });
            }
        }
    }
    members
        .into_iter()
        .map(|(g, mut list)| {
            list.sort();
            list.dedup();
            (naming::group_set(g), list)
        })
        .collect()
}

/// An ENI's DNS settings, as DHCP would give them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolverConfig {
    pub nameservers: Vec<Ipv4Addr>,
    pub search: Vec<String>,
}

/// What a VPC's DHCP options set tells its ENIs: `domain-name-servers`
/// (AmazonProvidedDNS is the VPC resolver at `vpc_dns`) and `domain-name`
/// (its space-separated domains are the search list). The account's
/// default set (any id not stored) is AmazonProvidedDNS and the region's
/// private domain; `default` (no set) gives neither, as on AWS.
pub fn resolver_config(world: &World, vpc: &Vpc, vpc_dns: Ipv4Addr) -> ResolverConfig {
    if vpc.dhcp_options_id == "default" {
        return ResolverConfig::default();
    }
    let Some(set) = world.dhcp_options.get(&vpc.dhcp_options_id) else {
        return ResolverConfig {
            nameservers: vec![vpc_dns],
            search: vec![region::private_dns_domain(&vpc.region)],
        };
    };
    ResolverConfig {
        nameservers: set
            .values("domain-name-servers")
            .iter()
            .filter_map(|v| match v.as_str() {
                "AmazonProvidedDNS" => Some(vpc_dns),
                ip => ip.parse().ok(),
            })
            .collect(),
        search: set
            .values("domain-name")
            .iter()
            .flat_map(|d| d.split_whitespace().map(str::to_string))
            .collect(),
    }
}

/// What every ENI plan of one VPC shares.
pub struct EniContext<'a> {
    pub instance: &'a str,
    /// The VPC's subnets: CIDR and network ACL.
    pub subnets: &'a BTreeMap<String, (Cidr, String)>,
    pub resolv: ResolverConfig,
}

impl EniContext<'_> {
    /// One ENI's plan, or `None` when it has no subnet of the VPC.
    pub fn plan(&self, world: &World, e: &NetworkInterface) -> Option<EniPlan> {
        let (subnet_cidr, _) = self.subnets.get(&e.subnet_id)?;
        let ip = e.private_ip;
        let groups: Vec<&SecurityGroup> = e
            .group_ids
            .iter()
            .filter_map(|g| world.security_groups.get(g).map(Arc::as_ref))
            .collect();
        let nat = e.interface_type == InterfaceType::NatGateway;
        Some(EniPlan {
            id: e.id.clone(),
            source_check: e.source_dest_check && !nat,
            firewalled: !nat,
            netns: naming::eni_netns(self.instance, &e.id),
            router_link: naming::eni_router_link(&e.id),
            subnet_id: e.subnet_id.clone(),
            ip,
            prefix: subnet_cidr.prefix,
            gateway: subnet_cidr.nth(1),
            resolv: self.resolv.clone(),
            egress: union(&groups, true),
            ingress: union(&groups, false),
        })
    }
}

/// The plan of a VPC after a change that touched only some of its ENIs
/// and the rules of some of its security groups, made from the plan
/// before the change: `enis` are re-planned (or dropped when gone from
/// the VPC) and the member sets of `groups` recomputed; everything else is
/// kept. The caller names every ENI whose record changed or whose groups'
/// rules changed, and every group an ENI joined or left. The result equals
/// [`plan_vpc`] of `world` (tested), at a cost that follows the change.
pub fn replan_enis(
    world: &World,
    instance: &str,
    mut plan: RouterPlan,
    enis: &BTreeSet<String>,
    groups: &BTreeSet<String>,
) -> RouterPlan {
    let resolv = world
        .vpcs
        .get(&plan.vpc_id)
        .map(|v| resolver_config(world, v, plan.dns))
        .unwrap_or_default();
    let context = EniContext {
        instance,
        subnets: &plan.subnets,
        resolv,
    };
    let mut fresh: Vec<EniPlan> = enis
        .iter()
        .filter_map(|id| world.network_interfaces.get(id))
        .filter(|e| e.vpc_id == plan.vpc_id)
        .filter_map(|e| context.plan(world, e))
        .collect();
    plan.enis.retain(|e| !enis.contains(&e.id));
    plan.flow_enis.retain(|id| !enis.contains(id));
    plan.flow_enis.extend(
        fresh
            .iter()
            .filter(|e| flow_logged(world, &e.id))
            .map(|e| e.id.clone()),
    );
    plan.flow_enis.sort();
    plan.enis.append(&mut fresh);
    plan.enis.sort_by(|a, b| a.id.cmp(&b.id));
    // Groups of an actively peered VPC have their sets here too.
    for peer in peered_vpcs(world, &plan.vpc_id) {
        let theirs: BTreeSet<&str> = groups.iter().map(String::as_str).collect();
        plan.sets
            .extend(peer_group_sets(world, peer, Some(&theirs)));
    }
    let groups: BTreeSet<&str> = groups
        .iter()
        .filter(|g| {
            world
                .security_groups
                .get(*g)
                .is_some_and(|g| g.vpc_id == plan.vpc_id)
        })
        .map(String::as_str)
        .collect();
    if !groups.is_empty() {
        let members = group_sets(
            world
                .network_interfaces
                .values()
                .map(Arc::as_ref)
                .filter(|e| e.vpc_id == plan.vpc_id),
            &groups,
        );
        plan.sets.extend(members);
    }
    plan
}

/// Kernel routing-table numbers for a VPC's route tables, derived from
/// their ids so that adding or deleting a table never renumbers another
/// while packets flow. Two ids that hash alike (one chance in a million
/// per pair) are told apart by probing upward in id order.
fn kernel_table_ids<'a>(ids: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, u32> {
    const FIRST: u32 = 1000;
    const SPAN: u32 = 1 << 20;
    let mut ids: Vec<(u32, &str)> = ids
        .map(|id| (cove_model::ids::fnv32(id) % SPAN, id))
        .collect();
    ids.sort();
    let mut taken = std::collections::BTreeSet::new();
    let mut out = BTreeMap::new();
    for (mut n, id) in ids {
        while !taken.insert(n) {
            n = (n + 1) % SPAN;
        }
        out.insert(id, FIRST + n);
    }
    out
}

/// The plan for one VPC of Cove instance `instance`, or `None` when the VPC does not exist.
pub fn plan_vpc(world: &World, instance: &str, vpc_id: &str) -> Option<RouterPlan> {
    let vpc = world.vpcs.get(vpc_id)?;
    let subnets: Vec<&Subnet> = world
        .subnets
        .values()
        .filter(|s| s.vpc_id == vpc_id)
        .map(Arc::as_ref)
        .collect();

    let mut local_addrs: Vec<Ipv4Addr> = subnets.iter().map(|s| s.cidr.nth(1)).collect();
    // The resolver lives at the primary block's base+2, as on AWS.
    let dns = vpc.cidr.nth(2);
    local_addrs.push(dns);
    local_addrs.sort();
    local_addrs.dedup();

    let enis: Vec<&NetworkInterface> = world
        .network_interfaces
        .values()
        .filter(|e| e.vpc_id == vpc_id)
        .map(Arc::as_ref)
        .collect();
    let groups: BTreeSet<&str> = world
        .security_groups
        .values()
        .filter(|g| g.vpc_id == vpc_id)
        .map(|g| g.id.as_str())
        .collect();
    let mut sets = group_sets(enis.iter().copied(), &groups);
    // The groups of actively peered VPCs, which this VPC's rules may name.
    for peer in peered_vpcs(world, vpc_id) {
        sets.extend(peer_group_sets(world, peer, None));
    }
    for (id, _, cidrs) in region::prefix_lists(&vpc.region) {
        sets.insert(naming::prefix_list_set(&id), cidrs);
    }
    // Customer lists only where this VPC's groups or routes name them, so a
    // list's change touches the routers that use it.
    for id in referenced_prefix_lists(world, vpc_id) {
        if let Some(cidrs) = world.prefix_list_cidrs(&vpc.region, &id) {
            sets.insert(naming::prefix_list_set(&id), cidr::outermost(&cidrs));
        }
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
                    .filter_map(|e| acl_rule(e))
                    .collect(),
                egress: entries
                    .iter()
                    .filter(|e| e.egress)
                    .filter_map(|e| acl_rule(e))
                    .collect(),
            },
        );
        for a in &acl.associations {
            subnet_acls.insert(a.subnet_id.clone(), acl.id.clone());
        }
    }
    let subnet_map: BTreeMap<String, (Cidr, String)> = subnets
        .iter()
        .map(|s| {
            (
                s.id.clone(),
                (s.cidr, subnet_acls.get(&s.id).cloned().unwrap_or_default()),
            )
        })
        .collect();

    let eni_context = EniContext {
        instance,
        subnets: &subnet_map,
        resolv: resolver_config(world, vpc, dns),
    };
    let eni_plans: Vec<EniPlan> = enis
        .iter()
        .filter_map(|e| eni_context.plan(world, e))
        .collect();
    let igw = world.attached_internet_gateway(vpc_id).map(|_| {
        let (router_ip, region_ip) = link_addresses(vpc_id);
        IgwPlan {
            router_link: naming::igw_link(vpc_id),
            region_link: naming::region_link(vpc_id),
            router_ip,
            region_ip,
        }
    });
    let mut public_ips: Vec<(Ipv4Addr, Ipv4Addr)> = world
        .addresses
        .values()
        .filter_map(|a| {
            let assoc = a.association.as_ref()?;
            let eni = world.network_interfaces.get(&assoc.network_interface_id)?;
            (eni.vpc_id == vpc_id).then_some(())?;
            Some((assoc.private_ip, a.public_ip))
        })
        .collect();
    public_ips.sort();

    let region_prefix_lists = region::prefix_lists(&vpc.region);
    let endpoints: Vec<EndpointPlan> = world
        .vpc_endpoints
        .values()
        .filter(|e| e.vpc_id == vpc_id && e.endpoint_type == EndpointType::Gateway)
        .map(|e| {
            let (router_ip, region_ip) = link_addresses(&e.id);
            let prefix_list_set = region_prefix_lists
                .iter()
                .find(|(_, name, _)| *name == e.service_name)
                .map(|(id, _, _)| naming::prefix_list_set(id));
            EndpointPlan {
                prefix_list_set,
                id: e.id.clone(),
                link: IgwPlan {
                    router_link: naming::endpoint_link(&e.id),
                    region_link: naming::endpoint_region_link(&e.id),
                    router_ip,
                    region_ip,
                },
            }
        })
        .collect();
    let peerings: Vec<PeeringPlan> = world
        .vpc_peering_connections
        .values()
        .filter(|p| p.is_active())
        .filter_map(|p| {
            let peer = p.peer_of(vpc_id)?;
            world.vpcs.get(peer)?;
            let requester = p.requester_vpc_id == vpc_id;
            let (a, b) = link_addresses(&p.id);
            let (ours, theirs) = if requester { (a, b) } else { (b, a) };
            Some(PeeringPlan {
                id: p.id.clone(),
                peer_netns: naming::router_netns(instance, peer),
                link: IgwPlan {
                    router_link: naming::peering_link(&p.id, requester),
                    region_link: naming::peering_link(&p.id, !requester),
                    router_ip: ours,
                    region_ip: theirs,
                },
            })
        })
        .collect();
    let via_of = |target: &RouteTarget| -> Option<Via> {
        match target {
            RouteTarget::Local => None,
            RouteTarget::VpcPeeringConnection(id) => Some(
                peerings
                    .iter()
                    .find(|p| &p.id == id)
                    .map(|p| Via::Peering {
                        link: p.link.router_link.clone(),
                        ip: p.link.region_ip,
                    })
                    .unwrap_or(Via::Blackhole),
            ),
            RouteTarget::VpcEndpoint(id) => Some(
                endpoints
                    .iter()
                    .find(|e| &e.id == id)
                    .map(|e| Via::Endpoint {
                        link: e.link.router_link.clone(),
                        ip: e.link.region_ip,
                    })
                    .unwrap_or(Via::Blackhole),
            ),
            RouteTarget::Gateway(id) => Some(
                if igw.is_some()
                    && world
                        .internet_gateways
                        .get(id)
                        .is_some_and(|g| g.attached_vpc_id.as_deref() == Some(vpc_id))
                {
                    Via::InternetGateway
                } else {
                    Via::Blackhole
                },
            ),
            RouteTarget::NatGateway(id) => Some(
                world
                    .nat_gateways
                    .get(id)
                    .filter(|n| n.state == NatGatewayState::Available)
                    .and_then(|n| world.network_interfaces.get(&n.network_interface_id))
                    .map(|e| Via::Eni {
                        link: naming::eni_router_link(&e.id),
                        ip: e.private_ip,
                    })
                    .unwrap_or(Via::Blackhole),
            ),
            RouteTarget::NetworkInterface(id) => Some(
                world
                    .network_interfaces
                    .get(id)
                    .map(|e| Via::Eni {
                        link: naming::eni_router_link(&e.id),
                        ip: e.private_ip,
                    })
                    .unwrap_or(Via::Blackhole),
            ),
        }
    };
    let main_table = world.main_route_table(vpc_id).map(|t| t.id.clone());
    let mut tables = Vec::new();
    let kernel_tables = kernel_table_ids(
        world
            .route_tables
            .values()
            .filter(|t| t.vpc_id == vpc_id)
            .map(|t| t.id.as_str()),
    );
    for t in world.route_tables.values().filter(|t| t.vpc_id == vpc_id) {
        let served: Vec<Cidr> = subnet_map
            .iter()
            .filter(|(sid, _)| {
                let explicit = world.route_tables.values().find(|x| {
                    x.associations
                        .iter()
                        .any(|a| a.subnet_id.as_deref() == Some(sid.as_str()))
                });
                match explicit {
                    Some(x) => x.id == t.id,
                    None => main_table.as_deref() == Some(t.id.as_str()),
                }
            })
            .map(|(_, (c, _))| *c)
            .collect();
        let mut routes: Vec<RoutePlan> = Vec::new();
        for r in &t.routes {
            let Some(via) = via_of(&r.target) else {
                continue;
            };
            // A prefix-list destination becomes one kernel route per CIDR of the list.
            let dests: Vec<Cidr> = match (&r.destination_cidr, &r.destination_prefix_list_id) {
                (Some(c), _) => vec![*c],
                (None, Some(pl)) => world.prefix_list_cidrs(&vpc.region, pl).unwrap_or_default(),
                (None, None) => vec![],
            };
            routes.extend(dests.into_iter().map(|dest| RoutePlan {
                dest,
                via: via.clone(),
            }));
        }
        routes.sort_by(|a, b| {
            (a.dest.prefix, a.dest.base)
                .cmp(&(b.dest.prefix, b.dest.base))
                .reverse()
        });
        tables.push(TablePlan {
            id: t.id.clone(),
            kernel_table: kernel_tables[t.id.as_str()],
            subnets: served,
            routes,
        });
    }

    let mut flow_enis: Vec<String> = eni_plans
        .iter()
        .filter(|p| flow_logged(world, &p.id))
        .map(|p| p.id.clone())
        .collect();
    flow_enis.sort();

    Some(RouterPlan {
        flow_enis,
        tables,
        igw,
        public_ips,
        endpoints,
        vpc_id: vpc_id.to_string(),
        netns: naming::router_netns(instance, vpc_id),
        peerings,
        cidrs: vpc.cidrs(),
        local_addrs,
        dns,
        enis: eni_plans,
        sets,
        acls,
        subnets: subnet_map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn plan_has_gateways_dns_member_sets_and_prefix_lists() {
        let default = group(
            "sg-default",
            vec![rule(
                "-1",
                None,
                None,
                SgPeer::Group {
                    group_id: "sg-default".into(),
                    user_id: ACCOUNT.into(),
                },
            )],
            vec![],
        );
        let w = world(
            "",
            vec![default],
            [&["sg-default"], &["sg-default"], &[]],
            vec![allow_all_acl("acl-default", &["subnet-a", "subnet-b"])],
        );
        let plan = plan_vpc(&w, "t", "vpc-1").unwrap();
        assert_eq!(
            plan.local_addrs,
            vec![ip("10.0.0.2"), ip("10.0.1.1"), ip("10.0.2.1")]
        );
        assert_eq!(plan.dns, ip("10.0.0.2"));
        let a1 = plan.eni_by_ip(ip("10.0.1.4")).unwrap();
        assert_eq!((a1.prefix, a1.gateway), (24, ip("10.0.1.1")));
        assert_eq!(plan.sets["sg_default"].len(), 2);
        assert!(plan.set_contains("sg_default", ip("10.0.1.5")));
        assert!(!plan.set_contains("sg_default", ip("10.0.2.4")));
        assert!(plan.sets.keys().any(|k| k.starts_with("pl_")));
        assert!(plan_vpc(&w, "t", "vpc-missing").is_none());
    }

    #[test]
    fn icmpv6_rules_are_left_out() {
        let v6 = rule("icmpv6", Some(-1), Some(-1), cidr("0.0.0.0/0"));
        let open = group("sg-x", vec![v6], vec![]);
        let mut acl = allow_all_acl("acl-d", &["subnet-a", "subnet-b"]);
        acl.entries
            .push(entry(10, true, "icmpv6", false, "0.0.0.0/0", None));
        let w = world("", vec![open], [&["sg-x"], &[], &[]], vec![acl]);
        let plan = plan_vpc(&w, "t", "vpc-1").unwrap();
        let a1 = plan.eni_by_ip(ip("10.0.1.4")).unwrap();
        assert!(
            a1.ingress.is_empty(),
            "an ICMPv6 rule admits no IPv4 packet"
        );
        let acl = &plan.acls["acl-d"];
        assert!(
            acl.egress.iter().all(|r| r.number != 10),
            "an ICMPv6 deny denies no IPv4 packet"
        );
    }

    #[test]
    fn a_customer_prefix_list_is_a_set_where_it_is_named() {
        let list = ManagedPrefixList {
            id: "pl-mine".into(),
            region: "us-east-1".into(),
            owner_id: ACCOUNT.into(),
            name: "mine".into(),
            max_entries: 5,
            versions: vec![vec![
                PrefixListEntry {
                    cidr: net("10.0.0.0/16"),
                    description: None,
                },
                PrefixListEntry {
                    cidr: net("10.0.1.0/24"),
                    description: None,
                },
            ]],
        };
        let named = group(
            "sg-x",
            vec![rule(
                "tcp",
                Some(80),
                Some(80),
                SgPeer::PrefixList {
                    id: "pl-mine".into(),
                },
            )],
            vec![],
        );
        let mut w = world(
            "",
            vec![named],
            [&["sg-x"], &[], &[]],
            vec![allow_all_acl("acl-d", &["subnet-a", "subnet-b"])],
        );
        w.managed_prefix_lists
            .insert(list.id.clone(), Arc::new(list.clone()));
        let plan = plan_vpc(&w, "t", "vpc-1").unwrap();
        // Nested entries collapse: the kernel refuses overlapping intervals.
        assert_eq!(plan.sets["pl_mine"], vec![net("10.0.0.0/16")]);
        // Not named by this VPC: not in its router.
        let mut unused = list;
        unused.id = "pl-other".into();
        w.managed_prefix_lists
            .insert(unused.id.clone(), Arc::new(unused));
        assert!(!plan_vpc(&w, "t", "vpc-1")
            .unwrap()
            .sets
            .contains_key("pl_other"));
    }

    #[test]
    fn resolv_conf_follows_the_dhcp_options_set() {
        let mut w = world("", vec![], [&[], &[], &[]], vec![]);
        let vpc = |w: &World| (*w.vpcs["vpc-1"]).clone();
        let dns = ip("10.0.0.2");
        let default = resolver_config(&w, &vpc(&w), dns);
        assert_eq!(default.nameservers, vec![dns]);
        assert_eq!(default.search, vec!["ec2.internal".to_string()]);
        w.dhcp_options.insert(
            "dopt-corp".into(),
            Arc::new(DhcpOptions {
                id: "dopt-corp".into(),
                region: "us-east-1".into(),
                owner_id: ACCOUNT.into(),
                configurations: vec![
                    (
                        "domain-name".into(),
                        vec!["corp.example lab.example".into()],
                    ),
                    (
                        "domain-name-servers".into(),
                        vec!["10.0.0.53".into(), "AmazonProvidedDNS".into()],
                    ),
                ],
            }),
        );
        let mut v = vpc(&w);
        v.dhcp_options_id = "dopt-corp".into();
        let corp = resolver_config(&w, &v, dns);
        assert_eq!(corp.nameservers, vec![ip("10.0.0.53"), dns]);
        assert_eq!(
            corp.search,
            vec!["corp.example".to_string(), "lab.example".into()]
        );
        v.dhcp_options_id = "default".into();
        assert_eq!(resolver_config(&w, &v, dns), ResolverConfig::default());
    }
}
