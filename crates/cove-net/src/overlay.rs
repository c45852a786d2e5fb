//! The overlay that joins one VPC's routers on several hosts (issue 18;
//! docs/scale-out.md): a VXLAN link per VPC in each host's router namespace,
//! one network identifier per VPC, its UDP socket on the host's underlay
//! address. For every ENI on another host the router holds a host route into
//! the link, that address bound to the other router's overlay MAC (a static
//! neighbour), and that MAC sent to the other host's underlay address (a
//! forwarding entry); no learning, no flooding. Security groups and network
//! ACLs stay where they are: on the host of each ENI, whose router sees the
//! packet leave or reach the ENI's veth. The plan is pure; `cove-dataplane`
//! makes it real.

use crate::naming;
use crate::plan::{RouterPlan, Via};
use std::net::Ipv4Addr;

/// The UDP port of the overlay (IANA's VXLAN port).
pub const VXLAN_PORT: u16 = 4789;

/// The overlay link's MTU: an ENI's, so its full-size packets cross hosts
/// as they are. Encapsulation adds 50 bytes: the underlay needs an MTU of
/// at least 1550 (as any VXLAN deployment); at the kernel's default (1450
/// under a 1500 underlay) every full-size packet would first take an ICMP
/// "fragmentation needed" back to its sender (docs/benchmarks.md).
pub const MTU: u32 = 1500;

/// The smallest underlay MTU that carries [`MTU`]-sized packets.
pub const UNDERLAY_MTU: u32 = MTU + 50;

/// The next hop an agent's router names for what leaves the VPC (internet
/// gateway, gateway endpoints, peering connections): bound to the control
/// plane's router MAC on the overlay link, it only picks that MAC; it is
/// never in a packet and nothing owns it (link-local, never routed).
pub const GATEWAY_HOP: Ipv4Addr = Ipv4Addr::new(169, 254, 254, 1);

/// The overlay of one VPC as one host's router holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayPlan {
    /// The VXLAN link in the router namespace.
    pub link: String,
    pub vni: u32,
    /// This host's underlay address.
    pub local: Ipv4Addr,
    /// This router's MAC on the link.
    pub mac: [u8; 6],
    /// The other hosts with ENIs of the VPC, by underlay address.
    pub peers: Vec<OverlayPeer>,
    /// On an agent: the control plane's host, whose router holds the VPC's
    /// gateways, endpoints and peering connections ([`GATEWAY_HOP`]).
    pub gateway: Option<OverlayGateway>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayGateway {
    pub underlay: Ipv4Addr,
    /// Its router's MAC on the link.
    pub mac: [u8; 6],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayPeer {
    pub underlay: Ipv4Addr,
    /// That host's router MAC on the link.
    pub mac: [u8; 6],
    /// The private addresses of the VPC's ENIs on that host.
    pub enis: Vec<Ipv4Addr>,
}

/// The VPC's VXLAN network identifier: 24 bits from a hash of its id, never
/// 0 (stable, so every host computes the same without asking).
pub fn vni(vpc_id: &str) -> u32 {
    (cove_model::ids::fnv32(vpc_id) & 0x00ff_ffff).max(1)
}

/// The overlay MAC of the VPC's router on the host at `underlay`: locally
/// administered, unicast, from a hash of both (stable across restarts, so
/// the other hosts' entries stay right).
pub fn router_mac(vpc_id: &str, underlay: Ipv4Addr) -> [u8; 6] {
    let h = cove_model::ids::fnv32(&format!("{vpc_id}/{underlay}")).to_be_bytes();
    let v = cove_model::ids::fnv32(vpc_id).to_be_bytes();
    [0x02, v[3], h[0], h[1], h[2], h[3]]
}

/// The link's name: `cvo` and the VPC id's short form.
pub fn link_name(vpc_id: &str) -> String {
    format!("cvo{}", naming::short(vpc_id))
}

/// The overlay of `vpc_id` on the host at `local`, given where the VPC's
/// ENIs are: `(host underlay address, ENI address)` for every ENI, and, on
/// an agent, the control plane's underlay address (`gateway_host`). `None`
/// when no other host holds one and the gateways are here (a VPC on one
/// host needs no overlay).
pub fn plan(
    vpc_id: &str,
    local: Ipv4Addr,
    placed: impl IntoIterator<Item = (Ipv4Addr, Ipv4Addr)>,
    gateway_host: Option<Ipv4Addr>,
) -> Option<OverlayPlan> {
    let gateway = gateway_host
        .filter(|g| *g != local)
        .map(|underlay| OverlayGateway {
            underlay,
            mac: router_mac(vpc_id, underlay),
        });
    let mut by_host: std::collections::BTreeMap<Ipv4Addr, Vec<Ipv4Addr>> = Default::default();
    for (host, eni) in placed {
        if host != local {
            by_host.entry(host).or_default().push(eni);
        }
    }
    if by_host.is_empty() && gateway.is_none() {
        return None;
    }
    let peers = by_host
        .into_iter()
        .map(|(underlay, mut enis)| {
            enis.sort();
            enis.dedup();
            OverlayPeer {
                underlay,
                mac: router_mac(vpc_id, underlay),
                enis,
            }
        })
        .collect();
    Some(OverlayPlan {
        link: link_name(vpc_id),
        vni: vni(vpc_id),
        local,
        mac: router_mac(vpc_id, local),
        peers,
        gateway,
    })
}

/// What changes from one overlay plan of a link to the next, so a host
/// touches only the entries of the ENIs and hosts that changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OverlayChanges {
    /// Forwarding entries (a router MAC → its host's underlay address).
    pub forward_add: Vec<([u8; 6], Ipv4Addr)>,
    pub forward_remove: Vec<([u8; 6], Ipv4Addr)>,
    /// ENIs now reached at this router MAC: a host route and a neighbour each.
    pub enis_add: Vec<(Ipv4Addr, [u8; 6])>,
    /// ENIs no longer reached over the link.
    pub enis_remove: Vec<Ipv4Addr>,
    /// The gateway hop's neighbour entry: `Some(Some(mac))` to set,
    /// `Some(None)` to remove.
    pub gateway: Option<Option<[u8; 6]>>,
}

impl OverlayChanges {
    pub fn is_empty(&self) -> bool {
        *self == OverlayChanges::default()
    }
}

/// Whether two plans are of the same link (same identifier, address and
/// MAC), so one can be changed into the other entry by entry.
pub fn same_link(a: &OverlayPlan, b: &OverlayPlan) -> bool {
    a.link == b.link && a.vni == b.vni && a.local == b.local && a.mac == b.mac
}

/// The entries to add and remove to turn `old` into `new` (of the same link).
pub fn changes(old: &OverlayPlan, new: &OverlayPlan) -> OverlayChanges {
    use std::collections::{BTreeMap, BTreeSet};
    let forwarding = |p: &OverlayPlan| -> BTreeSet<([u8; 6], Ipv4Addr)> {
        p.peers
            .iter()
            .map(|x| (x.mac, x.underlay))
            .chain(p.gateway.iter().map(|g| (g.mac, g.underlay)))
            .collect()
    };
    let enis = |p: &OverlayPlan| -> BTreeMap<Ipv4Addr, [u8; 6]> {
        p.peers
            .iter()
            .flat_map(|x| x.enis.iter().map(move |e| (*e, x.mac)))
            .collect()
    };
    let (old_fwd, new_fwd) = (forwarding(old), forwarding(new));
    let (old_enis, new_enis) = (enis(old), enis(new));
    let gateway = |p: &OverlayPlan| p.gateway.as_ref().map(|g| g.mac);
    OverlayChanges {
        forward_add: new_fwd.difference(&old_fwd).copied().collect(),
        forward_remove: old_fwd.difference(&new_fwd).copied().collect(),
        enis_add: new_enis
            .iter()
            .filter(|(ip, mac)| old_enis.get(ip) != Some(mac))
            .map(|(ip, mac)| (*ip, *mac))
            .collect(),
        enis_remove: old_enis
            .keys()
            .filter(|ip| !new_enis.contains_key(ip))
            .copied()
            .collect(),
        gateway: (gateway(old) != gateway(new)).then(|| gateway(new)),
    }
}

/// Cuts a VPC's plan down to the ENIs of one host (`here` says which): the
/// others are reached over the overlay, so a route towards one of them (a
/// NAT gateway's or an appliance's ENI on another host) goes into the
/// overlay link, to that ENI's address; its own host's router forwards it on.
/// On an agent (`gateways_elsewhere`) the router has no internet gateway,
/// endpoint or peering link of its own: routes to them go into the overlay
/// to [`GATEWAY_HOP`], the control plane's router, which holds them all (and
/// translates, filters and accounts there as it does for its own ENIs).
pub fn localize(plan: &mut RouterPlan, here: impl Fn(&str) -> bool, gateways_elsewhere: bool) {
    let remote: std::collections::BTreeSet<String> = plan
        .enis
        .iter()
        .filter(|e| !here(&e.id))
        .map(|e| e.router_link.clone())
        .collect();
    if remote.is_empty() && !gateways_elsewhere {
        return;
    }
    plan.enis.retain(|e| here(&e.id));
    plan.flow_enis.retain(|id| here(id));
    let overlay = link_name(&plan.vpc_id);
    if gateways_elsewhere {
        plan.igw = None;
        plan.endpoints.clear();
        plan.peerings.clear();
        plan.public_ips.clear();
    }
    for table in &mut plan.tables {
        for route in &mut table.routes {
            let to_gateway = match &route.via {
                Via::InternetGateway | Via::Endpoint { .. } | Via::Peering { .. } => {
                    gateways_elsewhere
                }
                _ => false,
            };
            if to_gateway {
                route.via = Via::Eni {
                    link: overlay.clone(),
                    ip: GATEWAY_HOP,
                };
            } else if let Via::Eni { link, .. } = &mut route.via {
                if remote.contains(link.as_str()) {
                    *link = overlay.clone();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn identifiers_and_macs_are_stable_and_well_formed() {
        let vpc = "vpc-0123456789abcdef0";
        assert_eq!(vni(vpc), vni(vpc));
        assert!((1..1 << 24).contains(&vni(vpc)));
        assert_ne!(vni(vpc), vni("vpc-0fedcba9876543210"));
        let (m1, m2) = (
            router_mac(vpc, a("198.51.100.1")),
            router_mac(vpc, a("198.51.100.2")),
        );
        assert_ne!(m1, m2);
        for m in [m1, m2] {
            assert_eq!(m[0] & 0x03, 0x02, "locally administered unicast: {m:02x?}");
        }
        assert_eq!(link_name(vpc).len(), 15, "fits IFNAMSIZ");
    }

    #[test]
    fn the_plan_lists_every_other_host_with_its_enis() {
        let vpc = "vpc-1";
        let local = a("198.51.100.1");
        let placed = [
            (local, a("10.0.1.4")),
            (a("198.51.100.3"), a("10.0.2.9")),
            (a("198.51.100.2"), a("10.0.2.5")),
            (a("198.51.100.2"), a("10.0.1.7")),
            (a("198.51.100.2"), a("10.0.1.7")),
        ];
        let p = plan(vpc, local, placed, None).expect("other hosts hold ENIs");
        assert_eq!(p.local, local);
        assert_eq!(p.mac, router_mac(vpc, local));
        let peers: Vec<_> = p
            .peers
            .iter()
            .map(|x| (x.underlay, x.enis.clone(), x.mac))
            .collect();
        assert_eq!(
            peers,
            vec![
                (
                    a("198.51.100.2"),
                    vec![a("10.0.1.7"), a("10.0.2.5")],
                    router_mac(vpc, a("198.51.100.2"))
                ),
                (
                    a("198.51.100.3"),
                    vec![a("10.0.2.9")],
                    router_mac(vpc, a("198.51.100.3"))
                ),
            ]
        );
    }

    #[test]
    fn a_vpc_on_one_host_has_no_overlay() {
        let local = a("198.51.100.1");
        assert_eq!(plan("vpc-1", local, [(local, a("10.0.1.4"))], None), None);
        assert_eq!(plan("vpc-1", local, [], None), None);
        assert_eq!(
            plan("vpc-1", local, [], Some(local)),
            None,
            "the gateways are here"
        );
    }

    #[test]
    fn an_agent_always_has_the_way_to_the_control_planes_router() {
        let (local, cp) = (a("198.51.100.2"), a("198.51.100.1"));
        let p = plan("vpc-1", local, [(local, a("10.0.1.4"))], Some(cp)).expect("an overlay");
        assert!(p.peers.is_empty());
        assert_eq!(
            p.gateway,
            Some(OverlayGateway {
                underlay: cp,
                mac: router_mac("vpc-1", cp)
            })
        );
    }

    #[test]
    fn localizing_keeps_this_hosts_enis_and_sends_routes_to_the_others_over_the_link() {
        use crate::plan::{plan_vpc, RoutePlan, TablePlan};
        use cove_model::fixtures;
        let world = fixtures::world("loc", vec![], [&[], &[], &[]], vec![]);
        let vpc = fixtures::vpc_id(&world);
        let mut plan = plan_vpc(&world, "loc", &vpc).expect("fixture VPC");
        let (kept, gone) = (plan.enis[0].clone(), plan.enis[1].clone());
        let via = |e: &crate::plan::EniPlan| RoutePlan {
            dest: "0.0.0.0/0".parse().unwrap(),
            via: Via::Eni {
                link: e.router_link.clone(),
                ip: e.ip,
            },
        };
        plan.tables.push(TablePlan {
            id: "rtb-loc".into(),
            kernel_table: 100,
            subnets: vec![],
            routes: vec![via(&gone)],
        });
        plan.tables.last_mut().unwrap().routes.push(RoutePlan {
            dest: "192.0.2.0/24".parse().unwrap(),
            ..via(&kept)
        });
        plan.flow_enis = plan.enis.iter().map(|e| e.id.clone()).collect();
        let before = plan.clone();
        localize(&mut plan, |_| true, false);
        assert_eq!(plan, before, "everything here: nothing changes");
        localize(&mut plan, |id| id != gone.id, false);
        assert!(plan.enis.iter().all(|e| e.id != gone.id));
        assert_eq!(plan.enis.len(), before.enis.len() - 1);
        assert!(!plan.flow_enis.contains(&gone.id));
        let vias: Vec<_> = plan.tables[0]
            .routes
            .iter()
            .filter_map(|r| match &r.via {
                Via::Eni { link, ip } => Some((link.clone(), *ip)),
                _ => None,
            })
            .collect();
        assert!(vias.contains(&(link_name(&vpc), gone.ip)), "{vias:?}");
        assert!(
            vias.contains(&(kept.router_link.clone(), kept.ip)),
            "{vias:?}"
        );
    }

    #[test]
    fn on_an_agent_what_leaves_the_vpc_goes_to_the_control_planes_router() {
        use crate::plan::{plan_vpc, RoutePlan, TablePlan};
        use cove_model::fixtures;
        let world = fixtures::world("gw", vec![], [&[], &[], &[]], vec![]);
        let mut plan = plan_vpc(&world, "gw", &fixtures::vpc_id(&world)).expect("fixture VPC");
        let route = |dest: &str, via: Via| RoutePlan {
            dest: dest.parse().unwrap(),
            via,
        };
        let endpoint = Via::Endpoint {
            link: "cve0".into(),
            ip: a("100.64.0.1"),
        };
        plan.tables.push(TablePlan {
            id: "rtb-gw".into(),
            kernel_table: 100,
            subnets: vec![],
            routes: vec![
                route("0.0.0.0/0", Via::InternetGateway),
                route("192.0.2.0/24", endpoint),
                route("198.51.100.0/24", Via::Blackhole),
            ],
        });
        let mut here = plan.clone();
        localize(&mut here, |_| true, false);
        assert_eq!(here, plan, "on the control plane nothing changes");
        localize(&mut plan, |_| true, true);
        assert!(plan.igw.is_none() && plan.endpoints.is_empty() && plan.peerings.is_empty());
        let hop = Via::Eni {
            link: link_name(&plan.vpc_id),
            ip: GATEWAY_HOP,
        };
        let vias: Vec<&Via> = plan
            .tables
            .last()
            .unwrap()
            .routes
            .iter()
            .map(|r| &r.via)
            .collect();
        assert_eq!(vias, vec![&hop, &hop, &Via::Blackhole]);
    }

    #[test]
    fn changes_touch_only_what_moved() {
        let (local, b, c) = (a("198.51.100.1"), a("198.51.100.2"), a("198.51.100.3"));
        let old = plan(
            "vpc-1",
            local,
            [(b, a("10.0.1.5")), (b, a("10.0.1.6")), (c, a("10.0.1.7"))],
            None,
        )
        .unwrap();
        assert!(changes(&old, &old).is_empty());
        // 10.0.1.6 moves to c, 10.0.1.7 goes, 10.0.1.8 comes on a new host d.
        let d = a("198.51.100.4");
        let new = plan(
            "vpc-1",
            local,
            [(b, a("10.0.1.5")), (c, a("10.0.1.6")), (d, a("10.0.1.8"))],
            Some(b),
        )
        .unwrap();
        assert!(same_link(&old, &new));
        let ch = changes(&old, &new);
        let (mb, mc, md) = (
            router_mac("vpc-1", b),
            router_mac("vpc-1", c),
            router_mac("vpc-1", d),
        );
        assert_eq!(ch.forward_add, vec![(md, d)]);
        assert!(
            ch.forward_remove.is_empty(),
            "c still holds an ENI; b is the gateway too"
        );
        let mut added = ch.enis_add.clone();
        added.sort();
        assert_eq!(added, vec![(a("10.0.1.6"), mc), (a("10.0.1.8"), md)]);
        assert_eq!(ch.enis_remove, vec![a("10.0.1.7")]);
        assert_eq!(ch.gateway, Some(Some(mb)));
        // Everything leaves c: its forwarding entry goes.
        let last = plan("vpc-1", local, [(b, a("10.0.1.5"))], None).unwrap();
        let ch = changes(&new, &last);
        assert!(ch.forward_remove.contains(&(mc, c)) && ch.forward_remove.contains(&(md, d)));
        assert_eq!(ch.gateway, Some(None));
    }
}
