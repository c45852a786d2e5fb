//! The walk of one packet through the stored VPC model: from its source
//! (an ENI, or the internet through an internet gateway) across security
//! groups, the network ACLs of every subnet boundary it crosses (both ways:
//! ACLs are stateless, so the reply is walked too), the source subnet's
//! route table, and whatever the route leads to: another ENI, an internet
//! gateway, a NAT gateway (whose own subnet, ACL and route table then
//! apply), a gateway endpoint or an appliance ENI.
//!
//! The walk does not stop at the first refusal of a filter: every group or
//! ACL that would drop the packet or its reply is reported, so the answer
//! lists every setting that has to change. A missing route does stop it.

use crate::traffic::*;
use cove_model::cidr::Cidr;
use cove_model::protocol::Protocol as RuleProtocol;
use cove_model::region;
use cove_model::vpc::*;
use cove_model::world::World;
use serde::Serialize;
use std::net::Ipv4Addr;
use std::sync::Arc;

pub use cove_model::region::INTERNET_HOST;

/// Linux's default ephemeral port range: the source ports clients use, and
/// so the destination ports replies must be let back in on.
pub const EPHEMERAL: (u16, u16) = (32768, 60999);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    NetworkInterface,
    SecurityGroup,
    NetworkAcl,
    RouteTable,
    InternetGateway,
    NatGateway,
    VpcEndpoint,
    VpcPeeringConnection,
    Subnet,
    Vpc,
    /// An address beyond the VPC (the internet or a service's public address).
    Address,
}

impl Kind {
    /// The resource type in the resource's ARN (`arn:aws:ec2:<region>:<account>:<type>/<id>`).
    pub fn arn_type(self) -> Option<&'static str> {
        Some(match self {
            Kind::NetworkInterface => "network-interface",
            Kind::SecurityGroup => "security-group",
            Kind::NetworkAcl => "network-acl",
            Kind::RouteTable => "route-table",
            Kind::InternetGateway => "internet-gateway",
            Kind::NatGateway => "natgateway",
            Kind::VpcEndpoint => "vpc-endpoint",
            Kind::VpcPeeringConnection => "vpc-peering-connection",
            Kind::Subnet => "subnet",
            Kind::Vpc => "vpc",
            Kind::Address => return None,
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::NetworkInterface => "network interface",
            Kind::SecurityGroup => "security group",
            Kind::NetworkAcl => "network ACL",
            Kind::RouteTable => "route table",
            Kind::InternetGateway => "internet gateway",
            Kind::NatGateway => "NAT gateway",
            Kind::VpcEndpoint => "VPC endpoint",
            Kind::VpcPeeringConnection => "VPC peering connection",
            Kind::Subnet => "subnet",
            Kind::Vpc => "VPC",
            Kind::Address => "address",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Component {
    pub kind: Kind,
    pub id: String,
}

impl Component {
    fn new(kind: Kind, id: impl Into<String>) -> Component {
        Component {
            kind,
            id: id.into(),
        }
    }
}

/// The security group rule that admitted a packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SgRuleHit {
    pub group_id: String,
    pub rule_id: String,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    pub protocol: RuleProtocol,
    pub ports: Option<(i64, i64)>,
    pub peer: SgPeer,
}

/// The network ACL entry that decided (number 32767 is the final `*` deny).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AclRuleHit {
    pub acl_id: String,
    pub number: i64,
    pub egress: bool,
    pub allow: bool,
    pub protocol: RuleProtocol,
    pub cidr: Cidr,
    pub ports: Option<(i64, i64)>,
}

/// The route a packet took (or that failed it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteHit {
    pub table_id: String,
    pub destination_cidr: Option<Cidr>,
    pub destination_prefix_list: Option<String>,
    pub target: RouteTarget,
    /// `active`, or `blackhole` when its target is gone or not usable.
    pub state: &'static str,
    pub origin: RouteOrigin,
}

impl RouteHit {
    /// The route's destination: its CIDR or its prefix list.
    pub fn destination(&self) -> String {
        match (&self.destination_cidr, &self.destination_prefix_list) {
            (Some(c), _) => c.to_string(),
            (None, Some(pl)) => pl.clone(),
            (None, None) => String::new(),
        }
    }
}

/// One component a packet crosses, with what admitted it there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    pub component: Component,
    pub vpc: Option<String>,
    pub subnet: Option<String>,
    pub sg_rule: Option<SgRuleHit>,
    pub acl_rule: Option<AclRuleHit>,
    pub route: Option<RouteHit>,
    /// The packet as it arrives at the component and as it leaves it (NAT changes it).
    pub inbound: Option<Packet>,
    pub outbound: Option<Packet>,
    pub service: Option<String>,
}

impl Hop {
    fn at(component: Component) -> Hop {
        Hop {
            component,
            vpc: None,
            subnet: None,
            sg_rule: None,
            acl_rule: None,
            route: None,
            inbound: None,
            outbound: None,
            service: None,
        }
    }
}

/// Why a path is not reachable, with AWS's explanation code and the setting to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub code: &'static str,
    pub component: Component,
    /// `ingress` or `egress`, where a filter decided.
    pub direction: Option<&'static str>,
    pub vpc: Option<String>,
    pub subnet: Option<String>,
    pub acl_rule: Option<AclRuleHit>,
    pub security_groups: Vec<String>,
    pub route_table: Option<String>,
    pub route: Option<RouteHit>,
    pub address: Option<Ipv4Addr>,
    pub packet: Packet,
    /// Whether the reply (rather than the request) is what is dropped.
    pub on_return: bool,
    /// The setting that would have to change, in words.
    pub fix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Analysis {
    pub found: bool,
    /// The packet as the source sends it.
    pub packet: Packet,
    pub forward: Vec<Hop>,
    pub ret: Vec<Hop>,
    pub explanations: Vec<Explanation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Eni(String),
    /// A host on the internet, entering through the destination VPC's
    /// internet gateway (optionally a given one).
    Internet {
        igw: Option<String>,
        ip: Option<Ipv4Addr>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Eni(String),
    Address(Ipv4Addr),
    /// The internet through this gateway (to the simulated internet host unless an address is given).
    InternetGateway {
        igw: String,
        ip: Option<Ipv4Addr>,
    },
    VpcEndpoint(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub source: Source,
    pub target: Target,
    pub protocol: Protocol,
    /// `None`: any destination port will do (the first that works is reported).
    pub port: Option<u16>,
    /// `None`: any port of the ephemeral range.
    pub source_port: Option<u16>,
}

/// A query naming something that does not exist or cannot be a source or destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError(pub String);

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

/// An ENI as the walk sees it.
#[derive(Debug, Clone)]
struct Node<'w> {
    eni: &'w NetworkInterface,
    ip: Ipv4Addr,
    subnet: &'w Subnet,
    firewalled: bool,
}

/// Where a route leads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Via {
    Igw(String),
    Nat(String),
    GatewayEndpoint(String),
    Appliance(String),
    Peering(String),
    Blackhole,
}

/// Where the packet of a walk must end for the path to count as found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Goal {
    Eni(String),
    Beyond { through: Option<Component> },
}

struct Walk<'w> {
    world: &'w World,
    forward: Vec<Hop>,
    ret: Vec<Hop>,
    why: Vec<Explanation>,
    /// The last component the request reached beyond the VPC (an internet gateway, an endpoint).
    exit: Option<Component>,
    /// The ENI of a peered VPC the request reached.
    reached: Option<String>,
}

fn node<'w>(world: &'w World, eni: &str) -> Result<Node<'w>, QueryError> {
    let e = world
        .network_interfaces
        .get(eni)
        .ok_or_else(|| QueryError(format!("The network interface '{eni}' does not exist")))?;
    let subnet = world
        .subnets
        .get(&e.subnet_id)
        .ok_or_else(|| QueryError(format!("The subnet '{}' does not exist", e.subnet_id)))?;
    Ok(Node {
        eni: e,
        ip: e.private_ip,
        subnet,
        firewalled: e.interface_type != InterfaceType::NatGateway,
    })
}

fn eni_by_ip<'w>(world: &'w World, vpc_id: &str, ip: Ipv4Addr) -> Option<&'w NetworkInterface> {
    world
        .network_interfaces
        .values()
        .find(|e| e.vpc_id == vpc_id && e.private_ip == ip)
        .map(Arc::as_ref)
}

/// The VPC's CIDR block (primary or secondary) that holds `ip`: its
/// `local` route is the one that carries a packet to `ip`.
fn vpc_cidr_holding(world: &World, vpc_id: &str, ip: Ipv4Addr) -> Option<Cidr> {
    let v = world.vpcs.get(vpc_id)?;
    v.cidrs().into_iter().find(|c| c.contains_addr(ip))
}

/// The Elastic IP mapped to a private address of the VPC.
pub fn public_ip(world: &World, vpc_id: &str, private: Ipv4Addr) -> Option<Ipv4Addr> {
    world.addresses.values().find_map(|a| {
        let assoc = a.association.as_ref()?;
        let eni = world.network_interfaces.get(&assoc.network_interface_id)?;
        (eni.vpc_id == vpc_id && assoc.private_ip == private).then_some(a.public_ip)
    })
}

/// The route table a subnet uses: its explicit association, else the VPC's main table.
pub fn route_table_of<'w>(world: &'w World, subnet: &Subnet) -> Option<&'w RouteTable> {
    world
        .route_tables
        .values()
        .find(|t| {
            t.associations
                .iter()
                .any(|a| a.subnet_id.as_deref() == Some(subnet.id.as_str()))
        })
        .map(Arc::as_ref)
        .or_else(|| world.main_route_table(&subnet.vpc_id))
}

fn acl_of<'w>(world: &'w World, subnet: &Subnet) -> Option<&'w NetworkAcl> {
    world
        .network_acls
        .values()
        .find(|a| a.associations.iter().any(|x| x.subnet_id == subnet.id))
        .map(Arc::as_ref)
}

fn ports(protocol: RuleProtocol, from: Option<i64>, to: Option<i64>) -> Option<(i64, i64)> {
    protocol
        .has_ports()
        .then(|| (from.unwrap_or(0), to.unwrap_or(0)))
}

/// A packet as the CLI prints it (`TCP 10.0.1.4:40000 -> 10.0.2.4:5432`).
pub fn packet_text(p: &Packet) -> String {
    match p.protocol {
        Protocol::Icmp => format!("ICMP type {} from {} to {}", p.icmp_type, p.src, p.dst),
        _ => format!(
            "{} {}:{} -> {}:{}",
            p.protocol.name().to_uppercase(),
            p.src,
            p.src_port,
            p.dst,
            p.dst_port
        ),
    }
}

fn traffic_words(p: &Packet) -> String {
    match p.protocol {
        Protocol::Icmp => format!("ICMP type {}", p.icmp_type),
        proto => format!("{} port {}", proto.name().to_uppercase(), p.dst_port),
    }
}

impl<'w> Walk<'w> {
    fn hop(&mut self, on_return: bool, hop: Hop) {
        if on_return {
            self.ret.push(hop);
        } else {
            self.forward.push(hop);
        }
    }

    fn explain(&mut self, e: Explanation) {
        self.why.push(e);
    }

    fn blank(
        &self,
        code: &'static str,
        component: Component,
        p: &Packet,
        on_return: bool,
        fix: String,
    ) -> Explanation {
        Explanation {
            code,
            component,
            direction: None,
            vpc: None,
            subnet: None,
            acl_rule: None,
            security_groups: vec![],
            route_table: None,
            route: None,
            address: None,
            packet: *p,
            on_return,
            fix,
        }
    }

    fn eni_hop(&mut self, n: &Node<'w>, p: &Packet, arriving: bool, on_return: bool) {
        let mut h = Hop::at(Component::new(Kind::NetworkInterface, &n.eni.id));
        h.vpc = Some(n.eni.vpc_id.clone());
        h.subnet = Some(n.subnet.id.clone());
        if arriving {
            h.inbound = Some(*p);
        } else {
            h.outbound = Some(*p);
        }
        self.hop(on_return, h);
    }

    /// The security groups of `n` on a new connection (replies need no rule: groups are stateful).
    fn groups(&mut self, n: &Node<'w>, p: &Packet, egress: bool) {
        if !n.firewalled {
            return;
        }
        let groups: Vec<&SecurityGroup> = n
            .eni
            .group_ids
            .iter()
            .filter_map(|g| self.world.security_groups.get(g).map(Arc::as_ref))
            .collect();
        let direction = if egress { "egress" } else { "ingress" };
        match admitting_rule(self.world, &n.eni.vpc_id, &groups, p, egress) {
            Some((g, r)) => {
                let mut h = Hop::at(Component::new(Kind::SecurityGroup, &g.id));
                h.vpc = Some(g.vpc_id.clone());
                h.sg_rule = Some(SgRuleHit {
                    group_id: g.id.clone(),
                    rule_id: r.id.clone(),
                    direction,
                    protocol: r.protocol,
                    ports: ports(r.protocol, r.from_port, r.to_port),
                    peer: r.peer.clone(),
                });
                self.hop(false, h);
            }
            None => {
                let names = n.eni.group_ids.join(", ");
                let (way, peer) = if egress {
                    ("outbound", format!("to {}", p.dst))
                } else {
                    ("inbound", format!("from {}", p.src))
                };
                let fix = format!(
                    "none of the security groups of {} ({}) has an {way} rule allowing {} {peer}: add one",
                    n.eni.id,
                    if names.is_empty() { "none".to_string() } else { names },
                    traffic_words(p),
                );
                let mut e = self.blank(
                    "ENI_SG_RULES_MISMATCH",
                    Component::new(Kind::NetworkInterface, &n.eni.id),
                    p,
                    false,
                    fix,
                );
                e.direction = Some(direction);
                e.security_groups = n.eni.group_ids.clone();
                e.vpc = Some(n.eni.vpc_id.clone());
                e.subnet = Some(n.subnet.id.clone());
                self.explain(e);
            }
        }
    }

    /// The ACL of `subnet` for a packet leaving (egress) or entering it; not
    /// crossed when the packet's other end is inside the subnet.
    fn acl(&mut self, subnet: &'w Subnet, p: &Packet, egress: bool, on_return: bool) {
        let cidr = subnet.cidr;
        let other_end = if egress { p.dst } else { p.src };
        if cidr.contains_addr(other_end) {
            return;
        }
        let Some(acl) = acl_of(self.world, subnet) else {
            return;
        };
        let mut entries: Vec<&NaclEntry> =
            acl.entries.iter().filter(|e| e.egress == egress).collect();
        entries.sort_by_key(|e| e.rule_number);
        let decided = entries.iter().find(|e| acl_entry_matches(e, p));
        let hit = match decided {
            Some(e) => AclRuleHit {
                acl_id: acl.id.clone(),
                number: e.rule_number,
                egress,
                allow: e.allow,
                protocol: e.protocol,
                cidr: e.cidr,
                ports: ports(e.protocol, e.from_port, e.to_port),
            },
            None => AclRuleHit {
                acl_id: acl.id.clone(),
                number: 32767,
                egress,
                allow: false,
                protocol: RuleProtocol::All,
                cidr: Cidr::ANY,
                ports: None,
            },
        };
        let mut h = Hop::at(Component::new(Kind::NetworkAcl, &acl.id));
        h.vpc = Some(acl.vpc_id.clone());
        h.subnet = Some(subnet.id.clone());
        h.acl_rule = Some(hit.clone());
        self.hop(on_return, h);
        if hit.allow {
            return;
        }
        let way = if egress { "outbound" } else { "inbound" };
        let peer = if egress {
            format!("to {}", p.dst)
        } else {
            format!("from {}", p.src)
        };
        let what = if on_return { "the reply: " } else { "" };
        // A reply goes back to the client's source port: any of the ephemeral range.
        let hint = if on_return && p.protocol.has_ports() {
            format!(
                " (replies go to the client's ephemeral ports, {}-{} on Linux)",
                EPHEMERAL.0, EPHEMERAL.1
            )
        } else {
            String::new()
        };
        let fix = if hit.number == 32767 {
            format!(
                "no {way} entry of {} (subnet {}) allows {what}{} {peer}: add an allow entry{hint}",
                acl.id,
                subnet.id,
                traffic_words(p)
            )
        } else {
            format!(
                "{way} entry {} of {} (subnet {}) denies {what}{} {peer}: remove it or allow this traffic with a lower-numbered entry{hint}",
                hit.number,
                acl.id,
                subnet.id,
                traffic_words(p)
            )
        };
        let mut e = self.blank(
            "SUBNET_ACL_RESTRICTION",
            Component::new(Kind::NetworkAcl, &acl.id),
            p,
            on_return,
            fix,
        );
        e.direction = Some(if egress { "egress" } else { "ingress" });
        e.acl_rule = Some(hit);
        e.subnet = Some(subnet.id.clone());
        e.vpc = Some(acl.vpc_id.clone());
        self.explain(e);
    }

    /// The route of `subnet`'s table for a destination outside the VPC:
    /// longest prefix first, a static route before a prefix-list route.
    fn route(
        &self,
        subnet: &Subnet,
        dst: Ipv4Addr,
    ) -> (Option<&'w RouteTable>, Option<(RouteHit, Via)>) {
        let Some(table) = route_table_of(self.world, subnet) else {
            return (None, None);
        };
        let vpc_id = &subnet.vpc_id;
        let mut best: Option<(u8, bool, &Route)> = None;
        for r in &table.routes {
            if r.target == RouteTarget::Local {
                continue;
            }
            let (prefix, static_route) = match (&r.destination_cidr, &r.destination_prefix_list_id)
            {
                (Some(c), _) if c.contains_addr(dst) => (c.prefix, true),
                (Some(_), _) => continue,
                (None, Some(pl)) => {
                    match prefix_list_cidrs(self.world, vpc_id, pl)
                        .iter()
                        .filter(|c| c.contains_addr(dst))
                        .map(|c| c.prefix)
                        .max()
                    {
                        Some(p) => (p, false),
                        None => continue,
                    }
                }
                (None, None) => continue,
            };
            if best.is_none_or(|(bp, bs, _)| (prefix, static_route) > (bp, bs)) {
                best = Some((prefix, static_route, r));
            }
        }
        let Some((_, _, r)) = best else {
            return (Some(table), None);
        };
        let w = self.world;
        let via = match &r.target {
            RouteTarget::Local => Via::Blackhole,
            RouteTarget::Gateway(id) => {
                if w.internet_gateways
                    .get(id)
                    .is_some_and(|g| g.attached_vpc_id.as_deref() == Some(vpc_id.as_str()))
                {
                    Via::Igw(id.clone())
                } else {
                    Via::Blackhole
                }
            }
            RouteTarget::NatGateway(id) => match w.nat_gateways.get(id) {
                Some(n)
                    if n.state == NatGatewayState::Available
                        && w.network_interfaces.contains_key(&n.network_interface_id) =>
                {
                    Via::Nat(id.clone())
                }
                _ => Via::Blackhole,
            },
            RouteTarget::VpcEndpoint(id) => match w.vpc_endpoints.get(id) {
                Some(e) if e.endpoint_type == EndpointType::Gateway => {
                    Via::GatewayEndpoint(id.clone())
                }
                _ => Via::Blackhole,
            },
            RouteTarget::NetworkInterface(id) => {
                if w.network_interfaces.contains_key(id) {
                    Via::Appliance(id.clone())
                } else {
                    Via::Blackhole
                }
            }
            RouteTarget::VpcPeeringConnection(id) => match w.vpc_peering_connections.get(id) {
                Some(pcx)
                    if pcx.is_active()
                        && pcx
                            .peer_of(vpc_id)
                            .is_some_and(|peer| w.vpcs.contains_key(peer)) =>
                {
                    Via::Peering(id.clone())
                }
                _ => Via::Blackhole,
            },
        };
        let hit = RouteHit {
            table_id: table.id.clone(),
            destination_cidr: r.destination_cidr,
            destination_prefix_list: r.destination_prefix_list_id.clone(),
            target: r.target.clone(),
            state: if via == Via::Blackhole {
                "blackhole"
            } else {
                "active"
            },
            origin: r.origin,
        };
        (Some(table), Some((hit, via)))
    }

    /// Explains that reply `r` finds no route back the way it came in
    /// `table` (the destination subnet's); `fix` is told the table's id.
    fn no_route_back(
        &mut self,
        table: Option<&RouteTable>,
        r: &Packet,
        fix: impl FnOnce(&str) -> String,
    ) {
        let table_id = table.map(|t| t.id.clone()).unwrap_or_default();
        let fix = fix(&table_id);
        let mut e = self.blank(
            "NO_ROUTE_TO_DESTINATION",
            Component::new(Kind::RouteTable, &table_id),
            r,
            true,
            fix,
        );
        e.route_table = table.map(|t| t.id.clone());
        e.address = Some(r.dst);
        self.explain(e);
    }

    fn route_hop(&mut self, table: &RouteTable, hit: Option<RouteHit>, on_return: bool) {
        let mut h = Hop::at(Component::new(Kind::RouteTable, &table.id));
        h.vpc = Some(table.vpc_id.clone());
        h.route = hit;
        self.hop(on_return, h);
    }

    fn local_route(&mut self, subnet: &Subnet, vpc_cidr: Cidr) {
        if let Some(table) = route_table_of(self.world, subnet) {
            let hit = RouteHit {
                table_id: table.id.clone(),
                destination_cidr: Some(vpc_cidr),
                destination_prefix_list: None,
                target: RouteTarget::Local,
                state: "active",
                origin: RouteOrigin::CreateRouteTable,
            };
            self.route_hop(table, Some(hit), false);
        }
    }

    /// A new connection between two ENIs of one VPC, and its replies.
    fn between_enis(&mut self, src: &Node<'w>, dst: &Node<'w>, p: &Packet, cidr: Cidr) {
        self.acl(src.subnet, p, true, false);
        self.local_route(src.subnet, cidr);
        self.acl(dst.subnet, p, false, false);
        self.groups(dst, p, false);
        self.eni_hop(dst, p, true, false);
        let r = p.reply();
        self.eni_hop(dst, &r, false, true);
        self.acl(dst.subnet, &r, true, true);
        self.acl(src.subnet, &r, false, true);
        self.eni_hop(src, &r, true, true);
    }

    /// A packet from `n` to an address outside the VPC: `n`'s subnet ACL,
    /// its route, and the target; then the reply back into `n`'s subnet.
    fn leave_vpc(&mut self, n: &Node<'w>, p: &Packet, depth: u8) {
        self.acl(n.subnet, p, true, false);
        let (table, found) = self.route(n.subnet, p.dst);
        let Some(table) = table else {
            let fix = format!("subnet {} has no route table", n.subnet.id);
            let mut e = self.blank(
                "NO_ROUTE_TO_DESTINATION",
                Component::new(Kind::Subnet, &n.subnet.id),
                p,
                false,
                fix,
            );
            e.vpc = Some(n.subnet.vpc_id.clone());
            self.explain(e);
            return;
        };
        let Some((hit, via)) = found else {
            self.route_hop(table, None, false);
            let fix = format!(
                "route table {} (subnet {}) has no route to {}: add one to an internet gateway, a NAT gateway or, for an AWS service, a gateway endpoint",
                table.id, n.subnet.id, p.dst
            );
            let mut e = self.blank(
                "NO_ROUTE_TO_DESTINATION",
                Component::new(Kind::RouteTable, &table.id),
                p,
                false,
                fix,
            );
            e.route_table = Some(table.id.clone());
            e.vpc = Some(table.vpc_id.clone());
            e.address = Some(p.dst);
            self.explain(e);
            return;
        };
        self.route_hop(table, Some(hit.clone()), false);
        match via {
            Via::Blackhole => {
                let fix = format!(
                    "the route of {} to {} leads to {}, which does not exist or is not usable (deleted, detached or not available): replace the route",
                    table.id,
                    hit.destination(),
                    target_id(&hit.target)
                );
                let mut e = self.blank(
                    "BAD_STATE_ROUTE",
                    Component::new(Kind::RouteTable, &table.id),
                    p,
                    false,
                    fix,
                );
                e.route_table = Some(table.id.clone());
                e.route = Some(hit);
                e.vpc = Some(table.vpc_id.clone());
                self.explain(e);
            }
            Via::Igw(id) => self.through_igw(n, p, &id),
            Via::GatewayEndpoint(id) => self.through_gateway_endpoint(n, p, &id),
            Via::Nat(id) if depth < 2 => self.through_nat(n, p, &id, depth),
            Via::Nat(id) | Via::Appliance(id) => self.hand_to_appliance(p, &id),
            Via::Peering(id) => self.through_peering(n, p, &id),
        }
    }

    /// Across an active peering connection: the packet reaches the peer
    /// VPC's ENI only if its address is the peer VPC's (no transitive
    /// routing), through that ENI's subnet ACL and groups; the reply must
    /// be routed back through the same connection.
    fn through_peering(&mut self, n: &Node<'w>, p: &Packet, pcx_id: &str) {
        let w = self.world;
        let pcx = &w.vpc_peering_connections[pcx_id];
        let peer_vpc = pcx.peer_of(&n.eni.vpc_id).unwrap_or_default().to_string();
        let component = Component::new(Kind::VpcPeeringConnection, pcx_id);
        let mut h = Hop::at(component.clone());
        h.vpc = Some(n.eni.vpc_id.clone());
        h.inbound = Some(*p);
        h.outbound = Some(*p);
        self.hop(false, h);
        self.exit = Some(component.clone());
        if vpc_cidr_holding(w, &peer_vpc, p.dst).is_none() {
            let fix = format!(
                "{pcx_id} carries only traffic for {peer_vpc}'s own addresses, and {} is not one: peering is not transitive, so peer with the destination's VPC directly",
                p.dst
            );
            let mut e = self.blank("NO_ROUTE_TO_DESTINATION", component, p, false, fix);
            e.address = Some(p.dst);
            self.explain(e);
            return;
        }
        let Some(dst) = eni_by_ip(w, &peer_vpc, p.dst).and_then(|e| node(w, &e.id).ok()) else {
            let fix = format!(
                "no network interface of {peer_vpc} has the address {}",
                p.dst
            );
            let mut e = self.blank(
                "NO_ROUTE_TO_DESTINATION",
                Component::new(Kind::Vpc, &peer_vpc),
                p,
                false,
                fix,
            );
            e.address = Some(p.dst);
            self.explain(e);
            return;
        };
        self.acl(dst.subnet, p, false, false);
        self.groups(&dst, p, false);
        self.eni_hop(&dst, p, true, false);
        self.reached = Some(dst.eni.id.clone());
        let r = p.reply();
        self.eni_hop(&dst, &r, false, true);
        self.acl(dst.subnet, &r, true, true);
        let (table, found) = self.route(dst.subnet, r.dst);
        let back = matches!(&found, Some((_, Via::Peering(id))) if id == pcx_id);
        if let Some(t) = table {
            self.route_hop(t, found.as_ref().map(|(h, _)| h.clone()), true);
        }
        if !back {
            self.no_route_back(table, &r, |table_id| {
                format!(
                    "replies from subnet {} to {} do not go back through {pcx_id} (route table {table_id}): add a route for {}'s CIDR to it",
                    dst.subnet.id, r.dst, n.eni.vpc_id
                )
            });
        }
        self.acl(n.subnet, &r, false, true);
        self.eni_hop(n, &r, true, true);
    }

    fn through_igw(&mut self, n: &Node<'w>, p: &Packet, igw: &str) {
        let vpc_id = n.eni.vpc_id.clone();
        let component = Component::new(Kind::InternetGateway, igw);
        let mut h = Hop::at(component.clone());
        h.vpc = Some(vpc_id.clone());
        h.inbound = Some(*p);
        let public = public_ip(self.world, &vpc_id, n.ip);
        h.outbound = Some(p.with_src(public.unwrap_or(p.src)));
        self.hop(false, h);
        self.exit = Some(component.clone());
        if is_rfc1918(p.dst) || is_rfc6598(p.dst) {
            let code = if is_rfc1918(p.dst) {
                "IGW_DESTINATION_ADDRESS_NOT_IN_RFC1918_EGRESS"
            } else {
                "IGW_DESTINATION_ADDRESS_NOT_IN_RFC6598_EGRESS"
            };
            let fix = format!(
                "{} is a private address, which no internet gateway carries",
                p.dst
            );
            let mut e = self.blank(code, component, p, false, fix);
            e.address = Some(p.dst);
            self.explain(e);
            return;
        }
        if public.is_none() {
            let fix = format!(
                "{} ({}) has no public IP address, so {} drops its traffic: associate an Elastic IP with it, or route through a NAT gateway",
                n.ip, n.eni.id, igw
            );
            let mut e = self.blank(
                "IGW_PUBLIC_IP_ASSOCIATION_FOR_EGRESS",
                component,
                p,
                false,
                fix,
            );
            e.address = Some(n.ip);
            e.vpc = Some(vpc_id);
            self.explain(e);
        }
        let r = p.reply();
        self.acl(n.subnet, &r, false, true);
    }

    fn through_gateway_endpoint(&mut self, n: &Node<'w>, p: &Packet, id: &str) {
        let component = Component::new(Kind::VpcEndpoint, id);
        let mut h = Hop::at(component.clone());
        h.vpc = Some(n.eni.vpc_id.clone());
        h.service = self
            .world
            .vpc_endpoints
            .get(id)
            .map(|e| e.service_name.clone());
        h.inbound = Some(*p);
        self.hop(false, h);
        self.exit = Some(component.clone());
        let echo = p.protocol == Protocol::Icmp && p.icmp_type == 8;
        if p.protocol != Protocol::Tcp && !echo {
            let fix = format!("gateway endpoint {id} carries only TCP and ICMP echo");
            self.why.push(self.blank(
                "VPCE_GATEWAY_PROTOCOL_RESTRICTION",
                component,
                p,
                false,
                fix,
            ));
        }
        let r = p.reply();
        self.acl(n.subnet, &r, false, true);
    }

    /// Through a NAT gateway: into its subnet, out with its address from its
    /// own subnet (ACL and route table), and the reply back the same way.
    fn through_nat(&mut self, n: &Node<'w>, p: &Packet, id: &str, depth: u8) {
        let nat = &self.world.nat_gateways[id];
        let Ok(nat_node) = node(self.world, &nat.network_interface_id) else {
            return self.hand_to_appliance(p, id);
        };
        self.acl(nat_node.subnet, p, false, false);
        let translated = p.with_src(nat_node.ip);
        let mut h = Hop::at(Component::new(Kind::NatGateway, id));
        h.vpc = Some(nat.vpc_id.clone());
        h.subnet = Some(nat.subnet_id.clone());
        h.inbound = Some(*p);
        h.outbound = Some(translated);
        self.hop(false, h);
        self.leave_vpc(&nat_node, &translated, depth + 1);
        let r = p.reply();
        self.acl(nat_node.subnet, &r, true, true);
        self.acl(n.subnet, &r, false, true);
    }

    /// A route to an ENI (or a NAT gateway behind another NAT): the packet
    /// is handed to something whose forwarding Cove does not model.
    fn hand_to_appliance(&mut self, p: &Packet, id: &str) {
        let kind = if id.starts_with("nat-") {
            Kind::NatGateway
        } else {
            Kind::NetworkInterface
        };
        let fix = format!(
            "the route hands the packet to {id}, whose forwarding the analysis does not follow"
        );
        self.why.push(self.blank(
            "UNKNOWN_DESTINATION",
            Component::new(kind, id),
            p,
            false,
            fix,
        ));
    }

    /// From the internet to an ENI's public address, and the reply, which must leave through the same gateway.
    fn enter_from_internet(&mut self, igw: &InternetGateway, dst: &Node<'w>, p: &Packet) {
        let vpc_id = dst.eni.vpc_id.clone();
        let component = Component::new(Kind::InternetGateway, &igw.id);
        let Some(public) = public_ip(self.world, &vpc_id, dst.ip) else {
            let fix = format!(
                "{} has no public IP address, so {} has nothing to deliver to it: associate an Elastic IP with it",
                dst.eni.id, igw.id
            );
            let mut e = self.blank(
                "IGW_PRIVATE_IP_ASSOCIATION_FOR_INGRESS",
                component,
                p,
                false,
                fix,
            );
            e.address = Some(dst.ip);
            self.explain(e);
            return;
        };
        let outside = p.with_dst(public);
        let mut h = Hop::at(component.clone());
        h.vpc = Some(vpc_id.clone());
        h.inbound = Some(outside);
        h.outbound = Some(*p);
        self.hop(false, h);
        self.acl(dst.subnet, p, false, false);
        self.groups(dst, p, false);
        self.eni_hop(dst, p, true, false);
        let r = p.reply();
        self.eni_hop(dst, &r, false, true);
        self.acl(dst.subnet, &r, true, true);
        let (table, found) = self.route(dst.subnet, r.dst);
        let through_igw = matches!(&found, Some((_, Via::Igw(g))) if *g == igw.id);
        if let Some(t) = table {
            self.route_hop(t, found.as_ref().map(|(h, _)| h.clone()), true);
        }
        if !through_igw {
            self.no_route_back(table, &r, |table_id| {
                format!(
                    "replies from subnet {} to {} do not leave through {} (route table {table_id}): route them to it",
                    dst.subnet.id, r.dst, igw.id
                )
            });
        }
        let mut back = Hop::at(component);
        back.inbound = Some(r);
        back.outbound = Some(r.with_src(public));
        self.hop(true, back);
    }
}

/// A route target as AWS names it: `local` or the target's id.
pub(crate) fn target_id(t: &RouteTarget) -> String {
    t.member().1.to_string()
}

/// The start and end of a query, resolved against the world.
struct Plan<'w> {
    start: Start<'w>,
    dst: Ipv4Addr,
    goal: Goal,
}

enum Start<'w> {
    Eni(Node<'w>),
    Internet {
        igw: &'w InternetGateway,
        dst: Node<'w>,
        src: Ipv4Addr,
    },
}

fn resolve<'w>(world: &'w World, q: &Query) -> Result<Plan<'w>, QueryError> {
    match &q.source {
        Source::Eni(id) => {
            let src = node(world, id)?;
            let vpc_id = src.eni.vpc_id.clone();
            let (dst, goal) = match &q.target {
                Target::Eni(d) => {
                    let d = node(world, d)?;
                    (d.ip, Goal::Eni(d.eni.id.clone()))
                }
                Target::Address(ip) => (
                    *ip,
                    match eni_by_ip(world, &vpc_id, *ip) {
                        Some(e) if vpc_cidr_holding(world, &vpc_id, *ip).is_some() => {
                            Goal::Eni(e.id.clone())
                        }
                        _ => match peered_eni(world, &vpc_id, *ip) {
                            Some(e) => Goal::Eni(e.id.clone()),
                            None => Goal::Beyond { through: None },
                        },
                    },
                ),
                Target::InternetGateway { igw, ip } => {
                    world.internet_gateways.get(igw).ok_or_else(|| {
                        QueryError(format!("The internet gateway '{igw}' does not exist"))
                    })?;
                    (
                        ip.unwrap_or(INTERNET_HOST),
                        Goal::Beyond {
                            through: Some(Component::new(Kind::InternetGateway, igw)),
                        },
                    )
                }
                Target::VpcEndpoint(id) => {
                    let e = world.vpc_endpoints.get(id).ok_or_else(|| {
                        QueryError(format!("The VPC endpoint '{id}' does not exist"))
                    })?;
                    if e.endpoint_type == EndpointType::Gateway {
                        let region = world
                            .vpcs
                            .get(&e.vpc_id)
                            .map(|v| v.region.clone())
                            .unwrap_or_default();
                        let service = e
                            .service_name
                            .rsplit('.')
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        let ip = cove_model::services::service_hosts(&region)
                            .into_iter()
                            .find(|h| h.api == service)
                            .map(|h| h.address)
                            .unwrap_or(region::S3_ADDRESS);
                        (
                            ip,
                            Goal::Beyond {
                                through: Some(Component::new(Kind::VpcEndpoint, id)),
                            },
                        )
                    } else {
                        // The endpoint's ENI in the source's subnet, else in its zone, else any.
                        let enis: Vec<Node> = e
                            .network_interface_ids
                            .iter()
                            .filter_map(|i| node(world, i).ok())
                            .collect();
                        let pick = enis
                            .iter()
                            .find(|n| n.subnet.id == src.subnet.id)
                            .or_else(|| {
                                enis.iter().find(|n| {
                                    n.subnet.availability_zone == src.subnet.availability_zone
                                })
                            })
                            .or(enis.first())
                            .ok_or_else(|| {
                                QueryError(format!(
                                    "The VPC endpoint '{id}' has no network interface"
                                ))
                            })?;
                        (pick.ip, Goal::Eni(pick.eni.id.clone()))
                    }
                }
            };
            Ok(Plan {
                start: Start::Eni(src),
                dst,
                goal,
            })
        }
        Source::Internet { igw, ip } => {
            let dst = match &q.target {
                Target::Eni(d) => node(world, d)?,
                Target::Address(a) => {
                    let owner = world.addresses.values().find_map(|x| {
                        (x.public_ip == *a).then(|| {
                            x.association
                                .as_ref()
                                .map(|s| s.network_interface_id.clone())
                        })?
                    });
                    node(
                        world,
                        &owner.ok_or_else(|| {
                            QueryError(format!("No network interface has the public address {a}"))
                        })?,
                    )?
                }
                _ => {
                    return Err(QueryError(
                        "From the internet, the destination must be a network interface".into(),
                    ))
                }
            };
            let attached = world.attached_internet_gateway(&dst.eni.vpc_id);
            let igw = match (igw, attached) {
                (Some(given), Some(a)) if *given == a.id => a,
                (Some(given), _) => {
                    world.internet_gateways.get(given).ok_or_else(|| {
                        QueryError(format!("The internet gateway '{given}' does not exist"))
                    })?;
                    return Err(QueryError(format!(
                        "The internet gateway '{given}' is not attached to {}",
                        dst.eni.vpc_id
                    )));
                }
                (None, Some(a)) => a,
                (None, None) => {
                    return Err(QueryError(format!(
                        "{} has no internet gateway attached",
                        dst.eni.vpc_id
                    )))
                }
            };
            let d = dst.ip;
            Ok(Plan {
                start: Start::Internet {
                    igw,
                    dst: dst.clone(),
                    src: ip.unwrap_or(INTERNET_HOST),
                },
                dst: d,
                goal: Goal::Eni(dst.eni.id.clone()),
            })
        }
    }
}

/// The ENI with address `ip` in a VPC that `vpc_id` is actively peered with.
fn peered_eni<'w>(world: &'w World, vpc_id: &str, ip: Ipv4Addr) -> Option<&'w NetworkInterface> {
    world
        .vpc_peering_connections
        .values()
        .filter(|p| p.is_active())
        .filter_map(|p| p.peer_of(vpc_id))
        .filter(|peer| vpc_cidr_holding(world, peer, ip).is_some())
        .find_map(|peer| eni_by_ip(world, peer, ip))
}

fn walk_once<'w>(world: &'w World, plan: &Plan<'w>, p: Packet) -> Analysis {
    let mut w = Walk {
        world,
        forward: vec![],
        ret: vec![],
        why: vec![],
        exit: None,
        reached: None,
    };
    match &plan.start {
        Start::Internet { igw, dst, .. } => w.enter_from_internet(igw, dst, &p),
        Start::Eni(src) => {
            w.eni_hop(src, &p, false, false);
            w.groups(src, &p, true);
            let vpc_id = &src.eni.vpc_id;
            if let Some(cidr) = vpc_cidr_holding(world, vpc_id, p.dst) {
                match eni_by_ip(world, vpc_id, p.dst).and_then(|e| node(world, &e.id).ok()) {
                    Some(dst) => w.between_enis(src, &dst, &p, cidr),
                    None => {
                        let fix =
                            format!("no network interface of {vpc_id} has the address {}", p.dst);
                        let mut e = w.blank(
                            "NO_ROUTE_TO_DESTINATION",
                            Component::new(Kind::Vpc, vpc_id),
                            &p,
                            false,
                            fix,
                        );
                        e.address = Some(p.dst);
                        w.explain(e);
                    }
                }
            } else {
                w.leave_vpc(src, &p, 0);
                if let Goal::Beyond {
                    through: Some(want),
                } = &plan.goal
                {
                    if w.why.is_empty() && w.exit.as_ref() != Some(want) {
                        let fix = format!(
                            "the packet does not leave through {}: add a route to it",
                            want.id
                        );
                        let mut e =
                            w.blank("NO_ROUTE_TO_DESTINATION", want.clone(), &p, false, fix);
                        e.address = Some(p.dst);
                        w.explain(e);
                    }
                }
                let reached = matches!(&plan.goal, Goal::Eni(id) if w.reached.as_ref() == Some(id));
                if matches!(plan.goal, Goal::Eni(_)) && w.why.is_empty() && !reached {
                    let fix = format!("{} is not an address of the source's VPC", p.dst);
                    w.why.push(w.blank(
                        "NO_ROUTE_TO_DESTINATION",
                        Component::new(Kind::Vpc, vpc_id),
                        &p,
                        false,
                        fix,
                    ));
                }
            }
        }
    }
    Analysis {
        found: w.why.is_empty(),
        packet: p,
        forward: w.forward,
        ret: w.ret,
        explanations: w.why,
    }
}

/// The ports worth trying in `range`: its start and every boundary of a
/// rule's port range inside it (verdicts only change at those).
fn candidate_ports(world: &World, range: (u16, u16)) -> Vec<u16> {
    let mut out = vec![range.0];
    let mut add = |lo: Option<i64>, hi: Option<i64>| {
        for v in [lo, hi.map(|h| h + 1)].into_iter().flatten() {
            if let Ok(v) = u16::try_from(v) {
                if (range.0..=range.1).contains(&v) {
                    out.push(v);
                }
            }
        }
    };
    for acl in world.network_acls.values() {
        for e in &acl.entries {
            add(e.from_port, e.to_port);
        }
    }
    for g in world.security_groups.values() {
        for r in g.ingress.iter().chain(&g.egress) {
            add(r.from_port, r.to_port);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Analyzes one query. With no destination or source port given, ports
/// are tried at every boundary of the rules' port ranges and the first
/// combination that gets through is reported (or the first tried, if none does).
pub fn analyze(world: &World, q: &Query) -> Result<Analysis, QueryError> {
    analyze_within(world, q, (0, 65535), EPHEMERAL)
}

/// [`analyze`] with the ports left open narrowed to ranges (the API's
/// `FilterAtSource`/`FilterAtDestination` port ranges).
pub fn analyze_within(
    world: &World,
    q: &Query,
    ports: (u16, u16),
    source_ports: (u16, u16),
) -> Result<Analysis, QueryError> {
    if ports.0 > ports.1 || source_ports.0 > source_ports.1 {
        return Err(QueryError(
            "A port range must start at or below its end".into(),
        ));
    }
    let plan = resolve(world, q)?;
    let src_ip = match &plan.start {
        Start::Eni(n) => n.ip,
        Start::Internet { src, .. } => *src,
    };
    let dports = match (q.protocol.has_ports(), q.port) {
        (false, _) => vec![0],
        (true, Some(p)) => vec![p],
        (true, None) => candidate_ports(world, ports),
    };
    let sports = match (q.protocol.has_ports(), q.source_port) {
        (false, _) => vec![0],
        (true, Some(p)) => vec![p],
        (true, None) => candidate_ports(world, source_ports),
    };
    let mut first = None;
    for &d in &dports {
        for &s in &sports {
            let a = walk_once(
                world,
                &plan,
                Packet::new(src_ip, plan.dst, q.protocol, s, d),
            );
            if a.found {
                return Ok(a);
            }
            first.get_or_insert(a);
        }
    }
    Ok(first.expect("at least one port is tried"))
}

/// Whether every destination port of `range` gets through (checked at every
/// rule boundary); the first analysis that fails otherwise.
pub fn analyze_all_ports(
    world: &World,
    q: &Query,
    range: (u16, u16),
) -> Result<Result<Analysis, Analysis>, QueryError> {
    let mut last = None;
    for port in candidate_ports(world, range) {
        let a = analyze(
            world,
            &Query {
                port: Some(port),
                ..q.clone()
            },
        )?;
        if !a.found {
            return Ok(Err(a));
        }
        last = Some(a);
    }
    Ok(Ok(last.expect("at least one port is tried")))
}
