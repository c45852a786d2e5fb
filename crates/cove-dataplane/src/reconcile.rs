//! Keeps the kernel equal to the stored VPC state, through a [`Backend`].
//!
//! A pass starts from the changed keys between the world it last applied
//! and the new one (the store's snapshots share structure, so finding them
//! costs in proportion to the change). Changes that touch only ENIs and the
//! rules of existing security groups (the steady state: jobs come and go,
//! rules are authorized and revoked) take the incremental path: only the
//! VPCs they touch are looked at, only the touched ENIs are re-planned and
//! only their chains, their map elements and the touched member sets are
//! rendered and diffed. Anything else (subnets, ACLs, routes, gateways,
//! endpoints, flow logs, prefix lists, DHCP options, groups created or
//! deleted) takes the full path:
//! every VPC is planned, and each applies only what differs from what it
//! last applied (router and gateway links, new or changed ENIs, route
//! tables, and the table as a diff in one transaction). Namespaces that no
//! plan owns go.
//!
//! Rules go in before an ENI is plumbed: a new ENI's link never forwards
//! before its security groups, ACLs and anti-spoofing are in the table
//! (they name the link, which nftables accepts before it exists).
//!
//! After a restart nothing is "last applied": the first pass lists the
//! instance's namespaces, reads each router's table back from the kernel
//! and diffs against it, so an unchanged store costs no rule operation and
//! the flow-log counters in the kernel survive the restart.

use crate::backend::{Backend, Error, Result};
use cove_model::hosts::{self, Locality};
use cove_model::vpc::{SecurityGroup, SgPeer};
use cove_model::world::World;
use cove_net::overlay::{self, OverlayPlan};
use cove_net::plan::{
    peered_vpcs, plan_vpc, region_from, replan_enis, EniPlan, RegionPlan, RouterPlan, Via,
};
use cove_net::ruleset::{self, Elem, Op, OpCounts, Ruleset};
use cove_net::{naming, nft};
use imbl::ordmap::DiffItem;
use std::collections::{BTreeMap, BTreeSet};

/// What is in the kernel for one VPC, as last applied.
struct Applied {
    plan: RouterPlan,
    rules: Ruleset,
}

pub struct Reconciler<B: Backend> {
    instance: String,
    backend: B,
    /// Which ENIs and routers are this host's.
    locality: Locality,
    /// Per VPC, the overlay its router holds as last applied.
    overlays: BTreeMap<String, Option<OverlayPlan>>,
    /// Where every VPC's ENIs run: the overlays' input, kept up to date
    /// from the ENIs each pass touches.
    placement: Placement,
    applied: BTreeMap<String, Applied>,
    region: Option<RegionPlan>,
    /// The namespaces the last pass wanted; `None` until the kernel was listed once.
    namespaces: Option<BTreeSet<String>>,
    /// The world the last successful pass applied; `None` forces a full pass.
    world: Option<World>,
}

/// The changed keys between two worlds that the incremental path handles.
#[derive(Debug, Default, PartialEq, Eq)]
struct Changes {
    /// ENIs added, changed or removed.
    enis: BTreeSet<String>,
    /// Security groups whose rules (or other fields) changed.
    groups: BTreeSet<String>,
}

/// What changed from `old` to `new`, or `None` when a change needs the full path.
fn changes(old: &World, new: &World) -> Option<Changes> {
    fn untouched<V: Clone + PartialEq>(
        a: &imbl::OrdMap<String, V>,
        b: &imbl::OrdMap<String, V>,
    ) -> bool {
        a.diff(b).next().is_none()
    }
    let cold = !untouched(&old.vpcs, &new.vpcs)
        || !untouched(&old.subnets, &new.subnets)
        || !untouched(&old.network_acls, &new.network_acls)
        || !untouched(&old.route_tables, &new.route_tables)
        || !untouched(&old.internet_gateways, &new.internet_gateways)
        || !untouched(&old.addresses, &new.addresses)
        || !untouched(&old.nat_gateways, &new.nat_gateways)
        || !untouched(&old.vpc_endpoints, &new.vpc_endpoints)
        || !untouched(&old.flow_logs, &new.flow_logs)
        // A prefix list's entries are set elements in the routers that use
        // it; a DHCP options set is the resolver configuration of ENIs.
        || !untouched(&old.managed_prefix_lists, &new.managed_prefix_lists)
        || !untouched(&old.vpc_peering_connections, &new.vpc_peering_connections)
        || !untouched(&old.dhcp_options, &new.dhcp_options)
        // Hosts registered, lost or moved decide the overlays; a heartbeat
        // alone changes nothing here.
        || old.hosts.diff(&new.hosts).any(|d| match d {
            DiffItem::Update { old, new } => !old.1.same_but_heartbeat(new.1),
            DiffItem::Add(..) | DiffItem::Remove(..) => true,
        });
    if cold {
        return None;
    }
    let mut out = Changes::default();
    for item in old.security_groups.diff(&new.security_groups) {
        match item {
            // A rule naming a prefix list no rule named before needs its
            // set in the router (and one naming it no more leaves a set
            // behind): router-wide sets are the full path's.
            DiffItem::Update {
                old: (_, before),
                new: (_, after),
            } if prefix_lists_named(before) != prefix_lists_named(after) => return None,
            DiffItem::Update { new: (id, _), .. } => {
                out.groups.insert(id.clone());
            }
            // A new or deleted group is a new or deleted set that rules may name.
            DiffItem::Add(..) | DiffItem::Remove(..) => return None,
        }
    }
    for item in old.network_interfaces.diff(&new.network_interfaces) {
        let id = match item {
            DiffItem::Add(id, _) | DiffItem::Remove(id, _) => id,
            DiffItem::Update { new: (id, _), .. } => id,
        };
        out.enis.insert(id.clone());
    }
    Some(out)
}

/// The prefix lists a group's rules name.
fn prefix_lists_named(g: &SecurityGroup) -> BTreeSet<&str> {
    g.ingress
        .iter()
        .chain(&g.egress)
        .filter_map(|r| match &r.peer {
            SgPeer::PrefixList { id } => Some(id.as_str()),
            _ => None,
        })
        .collect()
}

/// Whether an ENI is a route's target (a NAT gateway's or an appliance's):
/// its address is in the route tables, which only the full path writes.
fn routed_to(plan: &RouterPlan, link: &str) -> bool {
    plan.tables.iter().any(|t| {
        t.routes
            .iter()
            .any(|r| matches!(&r.via, Via::Eni { link: l, .. } if l == link))
    })
}

/// The chains and sets named in `chains` and `sets` that `rules` holds.
fn part_of(rules: &Ruleset, chains: &BTreeSet<String>, sets: &BTreeSet<String>) -> Ruleset {
    Ruleset {
        chains: chains
            .iter()
            .filter_map(|n| Some((n.clone(), rules.chains.get(n)?.clone())))
            .collect(),
        sets: sets
            .iter()
            .filter_map(|n| Some((n.clone(), rules.sets.get(n)?.clone())))
            .collect(),
    }
}

/// Where every VPC's ENIs run, indexed so that a pass finds a VPC's
/// placement without scanning the world's ENIs.
#[derive(Debug, Default)]
struct Placement {
    /// VPC → ENI → (its host, `None`: the control plane's; its address).
    by_vpc: BTreeMap<String, BTreeMap<String, (Option<String>, std::net::Ipv4Addr)>>,
    vpc_of: BTreeMap<String, String>,
    /// (VPC, host) → how many of the VPC's ENIs the host runs.
    counts: BTreeMap<(String, Option<String>), usize>,
}

impl Placement {
    fn of(world: &World) -> Placement {
        let mut p = Placement::default();
        p.update(world, world.network_interfaces.keys());
        p
    }

    /// Follows the ENIs `ids` to what `world` says of them.
    fn update<'a>(&mut self, world: &World, ids: impl IntoIterator<Item = &'a String>) {
        for id in ids {
            if let Some(vpc) = self.vpc_of.remove(id) {
                if let Some((host, _)) = self.by_vpc.get_mut(&vpc).and_then(|m| m.remove(id)) {
                    let key = (vpc.clone(), host);
                    if let Some(n) = self.counts.get_mut(&key) {
                        *n -= 1;
                        if *n == 0 {
                            self.counts.remove(&key);
                        }
                    }
                }
                if self.by_vpc.get(&vpc).is_some_and(BTreeMap::is_empty) {
                    self.by_vpc.remove(&vpc);
                }
            }
            if let Some(e) = world.network_interfaces.get(id) {
                self.vpc_of.insert(id.clone(), e.vpc_id.clone());
                self.by_vpc
                    .entry(e.vpc_id.clone())
                    .or_default()
                    .insert(id.clone(), (e.host.clone(), e.private_ip));
                *self
                    .counts
                    .entry((e.vpc_id.clone(), e.host.clone()))
                    .or_default() += 1;
            }
        }
    }

    /// Whether `here` runs one of the VPC's ENIs.
    fn holds_any(&self, vpc: &str, here: &Locality) -> bool {
        let count = |host: Option<String>| {
            self.counts
                .get(&(vpc.to_string(), host))
                .copied()
                .unwrap_or(0)
        };
        (here.control_plane && count(None) > 0)
            || here
                .host
                .as_ref()
                .is_some_and(|h| count(Some(h.clone())) > 0)
    }

    /// `(host underlay address, ENI address)` of each of the VPC's ENIs
    /// whose host is registered.
    fn placed(&self, world: &World, vpc: &str) -> Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr)> {
        let control_plane = hosts::control_plane(world).map(|h| h.underlay);
        self.by_vpc
            .get(vpc)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|(host, ip)| {
                let underlay = match host {
                    Some(h) => world.hosts.get(h).map(|h| h.underlay),
                    None => control_plane,
                }?;
                Some((underlay, *ip))
            })
            .collect()
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Whether every VPC was planned (the full path), not only what changed.
    pub full: bool,
    pub routers_applied: usize,
    pub enis_applied: usize,
    pub route_tables_applied: usize,
    /// Rule transactions sent, and what they held.
    pub rule_transactions: usize,
    pub rule_ops: OpCounts,
    pub namespaces_removed: usize,
    /// Overlay links made, changed or removed.
    pub overlays_applied: usize,
}

impl Pass {
    /// Kernel objects converged and rule operations applied, in all.
    pub fn changes(&self) -> u64 {
        let ops = &self.rule_ops;
        [
            self.routers_applied,
            self.enis_applied,
            self.route_tables_applied,
            self.namespaces_removed,
            self.overlays_applied,
            ops.chains_written,
            ops.rules_added,
            ops.elems_changed,
            ops.other,
        ]
        .iter()
        .map(|&n| n as u64)
        .sum()
    }
}

fn same_router(a: &RouterPlan, b: &RouterPlan) -> bool {
    a.netns == b.netns
        && a.local_addrs == b.local_addrs
        && a.igw == b.igw
        && a.endpoints == b.endpoints
        && a.peerings == b.peerings
}

fn same_routes(a: &RouterPlan, b: &RouterPlan) -> bool {
    a.tables == b.tables && a.igw == b.igw && a.cidrs == b.cidrs
}

fn same_link(a: &EniPlan, b: &EniPlan) -> bool {
    a.firewalled == b.firewalled
        && a.resolv == b.resolv
        && (
            a.netns.as_str(),
            a.router_link.as_str(),
            a.ip,
            a.prefix,
            a.gateway,
        ) == (
            b.netns.as_str(),
            b.router_link.as_str(),
            b.ip,
            b.prefix,
            b.gateway,
        )
}

fn same_eni_rules(a: &EniPlan, b: &EniPlan) -> bool {
    (
        &a.id,
        &a.router_link,
        &a.subnet_id,
        a.ip,
        a.firewalled,
        a.source_check,
        &a.egress,
        &a.ingress,
    ) == (
        &b.id,
        &b.router_link,
        &b.subnet_id,
        b.ip,
        b.firewalled,
        b.source_check,
        &b.egress,
        &b.ingress,
    )
}

/// Whether two plans render the same table (so the second needs no rendering).
fn same_rules(a: &RouterPlan, b: &RouterPlan) -> bool {
    a.sets == b.sets
        && a.acls == b.acls
        && a.subnets == b.subnets
        && a.igw == b.igw
        && a.public_ips == b.public_ips
        && a.endpoints == b.endpoints
        && a.dns == b.dns
        && a.flow_enis == b.flow_enis
        && a.enis.len() == b.enis.len()
        && a.enis
            .iter()
            .zip(&b.enis)
            .all(|(x, y)| same_eni_rules(x, y))
}

impl<B: Backend> Reconciler<B> {
    pub fn new(instance: &str, backend: B) -> Reconciler<B> {
        Reconciler {
            instance: instance.to_string(),
            backend,
            locality: Locality::everything(),
            overlays: BTreeMap::new(),
            placement: Placement::default(),
            applied: BTreeMap::new(),
            region: None,
            namespaces: None,
            world: None,
        }
    }

    /// Makes only this host's ENIs (and, on an agent, only the routers of
    /// the VPCs it holds ENIs of), joined to the other hosts by overlays.
    pub fn at(mut self, locality: Locality) -> Reconciler<B> {
        self.locality = locality;
        self
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The VPC's plan as this host makes it (`None`: not here at all).
    fn local_plan(&self, world: &World, vpc_id: &str) -> Option<RouterPlan> {
        let mut plan = plan_vpc(world, &self.instance, vpc_id)?;
        self.localize(world, &mut plan);
        (self.locality.control_plane || !plan.enis.is_empty()).then_some(plan)
    }

    fn localize(&self, world: &World, plan: &mut RouterPlan) {
        overlay::localize(
            plan,
            |id| {
                world
                    .network_interfaces
                    .get(id)
                    .is_none_or(|e| self.locality.holds(e))
            },
            !self.locality.control_plane,
        );
    }

    /// The overlay the VPC's router here needs (`None`: none). A Cove that
    /// registered no host has none; an agent's always leads to the control
    /// plane's router, which holds the gateways.
    fn overlay_of(&self, world: &World, vpc_id: &str) -> Option<OverlayPlan> {
        let here = self.locality.this_host(world)?;
        let gateways = (!self.locality.control_plane)
            .then(|| hosts::control_plane(world).map(|h| h.underlay))
            .flatten();
        overlay::plan(
            vpc_id,
            here.underlay,
            self.placement.placed(world, vpc_id),
            gateways,
        )
    }

    /// Gives the router the overlay it needs, if it differs from what it
    /// holds; whether it did.
    fn apply_overlay(&mut self, world: &World, plan: &RouterPlan, pass: &mut Pass) -> Result<bool> {
        if self.locality.host.is_none() {
            return Ok(false);
        }
        let wanted = self.overlay_of(world, &plan.vpc_id);
        if self.overlays.get(&plan.vpc_id) == Some(&wanted) {
            return Ok(false);
        }
        // Forgotten first: if the call fails, the next pass makes it whole.
        let held = self.overlays.remove(&plan.vpc_id).flatten();
        self.backend
            .overlay(&plan.netns, &plan.vpc_id, held.as_ref(), wanted.as_ref())?;
        pass.overlays_applied += 1;
        self.overlays.insert(plan.vpc_id.clone(), wanted);
        Ok(true)
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// One pass: brings the kernel to `world`, by the incremental path when
    /// the change allows it.
    pub fn reconcile(&mut self, world: &World) -> Result<Pass> {
        let previous = self.world.take();
        let result = match previous
            .as_ref()
            .and_then(|old| Some((old, changes(old, world)?)))
        {
            Some((old, changes)) => {
                self.placement.update(world, &changes.enis);
                match self.reconcile_changes(old, world, &changes)? {
                    Some(pass) => Ok(pass),
                    None => self.reconcile_all(world),
                }
            }
            None => {
                self.placement = Placement::of(world);
                self.reconcile_all(world)
            }
        };
        if result.is_ok() {
            self.world = Some(world.clone());
        }
        result
    }

    /// The incremental path: only the VPCs, ENIs and sets the change
    /// touched. Returns `None` (having changed nothing) when the change
    /// turns out to need the full path.
    fn reconcile_changes(
        &mut self,
        old: &World,
        world: &World,
        changes: &Changes,
    ) -> Result<Option<Pass>> {
        // Per touched VPC: its touched ENIs and the groups whose sets change.
        let mut touched: BTreeMap<&str, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
        for id in &changes.enis {
            for e in [
                old.network_interfaces.get(id),
                world.network_interfaces.get(id),
            ]
            .into_iter()
            .flatten()
            {
                let (enis, groups) = touched.entry(e.vpc_id.as_str()).or_default();
                enis.insert(id.clone());
                groups.extend(e.group_ids.iter().cloned());
                // The routers of peered VPCs hold this ENI's groups' sets.
                for peer in peered_vpcs(world, &e.vpc_id) {
                    let (_, groups) = touched.entry(peer).or_default();
                    groups.extend(e.group_ids.iter().cloned());
                }
            }
        }
        for id in &changes.groups {
            if let Some(g) = world.security_groups.get(id) {
                let (enis, groups) = touched.entry(g.vpc_id.as_str()).or_default();
                groups.insert(id.clone());
                enis.extend(
                    world
                        .network_interfaces
                        .values()
                        .filter(|e| e.vpc_id == g.vpc_id && e.group_ids.contains(id))
                        .map(|e| e.id.clone()),
                );
            }
        }
        // Everything that would make this path wrong is checked before anything changes.
        for (vpc, (enis, _)) in &touched {
            let Some(applied) = self.applied.get(*vpc) else {
                return Ok(None);
            };
            let routed = enis
                .iter()
                .any(|id| routed_to(&applied.plan, &naming::eni_router_link(id)));
            if routed || !world.vpcs.contains_key(*vpc) {
                return Ok(None);
            }
            // An agent whose last ENI of a VPC goes removes the VPC's router.
            if !self.locality.control_plane && !self.placement.holds_any(vpc, &self.locality) {
                return Ok(None);
            }
        }
        let mut pass = Pass::default();
        for (vpc, (enis, groups)) in touched {
            let applied = self.applied.remove(vpc).expect("checked above");
            let old_enis: BTreeMap<String, EniPlan> = applied
                .plan
                .enis
                .iter()
                .filter(|e| enis.contains(&e.id))
                .map(|e| (e.id.clone(), e.clone()))
                .collect();
            let was_counting = nft::counting(&applied.plan);
            let mut plan = replan_enis(world, &self.instance, applied.plan, &enis, &groups);
            self.localize(world, &mut plan);
            let mut rules = applied.rules;
            let result = if nft::counting(&plan) == was_counting {
                self.apply_eni_rules(&plan, &mut rules, &enis, &groups, &mut pass)
            } else {
                self.apply_all_rules(&plan, &mut rules, &mut pass)
            };
            // On failure this VPC is no longer "applied": the next pass,
            // a full one, reads its table back from the kernel.
            result?;
            for (id, before) in &old_enis {
                if !plan.enis.iter().any(|e| &e.id == id) {
                    self.backend.remove_namespace(&before.netns)?;
                    pass.namespaces_removed += 1;
                    if let Some(known) = self.namespaces.as_mut() {
                        known.remove(&before.netns);
                    }
                }
            }
            let plumb: Vec<&EniPlan> = plan
                .enis
                .iter()
                .filter(|e| enis.contains(&e.id))
                .filter(|e| old_enis.get(&e.id).is_none_or(|o| !same_link(o, e)))
                .collect();
            if let Some(known) = self.namespaces.as_mut() {
                known.extend(plumb.iter().map(|e| e.netns.clone()));
            }
            apply_enis(&self.backend, &plan.netns, &plumb)?;
            pass.enis_applied += plumb.len();
            self.apply_overlay(world, &plan, &mut pass)?;
            self.applied
                .insert(vpc.to_string(), Applied { plan, rules });
        }
        Ok(Some(pass))
    }

    /// Makes the router's table hold `plan`'s part for the touched ENIs and
    /// groups, diffing only those parts; `rules` (what the kernel holds)
    /// follows.
    fn apply_eni_rules(
        &self,
        plan: &RouterPlan,
        rules: &mut Ruleset,
        enis: &BTreeSet<String>,
        groups: &BTreeSet<String>,
        pass: &mut Pass,
    ) -> Result<()> {
        let mut chains = BTreeSet::new();
        let mut sets: BTreeSet<String> = nft::LINK_MAPS.iter().map(|m| m.to_string()).collect();
        for id in enis {
            let (c, s) = nft::eni_owned(id);
            chains.extend(c);
            sets.extend(s);
        }
        sets.extend(groups.iter().map(|g| naming::group_set(g)));
        let before = part_of(rules, &chains, &sets);
        let links: BTreeSet<String> = enis.iter().map(|id| naming::eni_router_link(id)).collect();
        let mut after = Ruleset::default();
        for map in nft::LINK_MAPS {
            if let Some(set) = before.sets.get(map) {
                let mut set = set.clone();
                set.elems
                    .retain(|e| !matches!(e, Elem::Jump { key, .. } if links.contains(key)));
                after.sets.insert(map.to_string(), set);
            }
        }
        for eni in plan.enis.iter().filter(|e| enis.contains(&e.id)) {
            let part = nft::eni_part(plan, eni);
            for (name, set) in part.sets {
                match after.sets.get_mut(&name) {
                    Some(map) if nft::LINK_MAPS.contains(&name.as_str()) => {
                        map.elems.extend(set.elems)
                    }
                    _ => {
                        after.sets.insert(name, set);
                    }
                }
            }
            after.chains.extend(part.chains);
        }
        for g in groups {
            let name = naming::group_set(g);
            if let (Some(members), Some(have)) = (plan.sets.get(&name), before.sets.get(&name)) {
                let elems = members.iter().copied().map(Elem::Addr).collect();
                after.sets.insert(
                    name,
                    ruleset::Set {
                        spec: have.spec.clone(),
                        elems,
                    },
                );
            }
        }
        let ops = ruleset::diff(Some(&before), &after);
        self.send(&plan.netns, &ops, pass)?;
        for name in before.chains.keys() {
            rules.chains.remove(name);
        }
        for name in before.sets.keys() {
            rules.sets.remove(name);
        }
        rules.chains.extend(after.chains);
        rules.sets.extend(after.sets);
        Ok(())
    }

    /// Makes the router's table equal to the whole of `plan`'s; `rules` follows.
    fn apply_all_rules(
        &self,
        plan: &RouterPlan,
        rules: &mut Ruleset,
        pass: &mut Pass,
    ) -> Result<()> {
        let desired = nft::render(plan);
        let ops = ruleset::diff(Some(rules), &desired);
        self.send(&plan.netns, &ops, pass)?;
        *rules = desired;
        Ok(())
    }

    fn send(&self, netns: &str, ops: &[Op], pass: &mut Pass) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        self.backend.apply_rules(netns, ops)?;
        pass.rule_transactions += 1;
        pass.rule_ops += ruleset::count(ops);
        Ok(())
    }

    /// The full path: every VPC planned, each applying what differs.
    fn reconcile_all(&mut self, world: &World) -> Result<Pass> {
        let mut pass = Pass {
            full: true,
            ..Pass::default()
        };
        let plans: BTreeMap<String, RouterPlan> = world
            .vpcs
            .keys()
            .filter_map(|id| Some((id.clone(), self.local_plan(world, id)?)))
            .collect();
        let region = region_from(&self.instance, plans.values());
        let mut wanted = BTreeSet::from([region.netns.clone()]);
        for plan in plans.values() {
            wanted.insert(plan.netns.clone());
            wanted.extend(plan.enis.iter().map(|e| e.netns.clone()));
        }
        // Remove first: a deleted ENI's address may be reused by a new one.
        let present = match self.namespaces.take() {
            Some(known) => known,
            None => self
                .backend
                .namespaces(&self.instance)?
                .into_iter()
                .collect(),
        };
        for ns in present.difference(&wanted) {
            self.backend.remove_namespace(ns)?;
            pass.namespaces_removed += 1;
        }
        self.applied.retain(|vpc, _| plans.contains_key(vpc));
        self.overlays.retain(|vpc, _| plans.contains_key(vpc));
        if self.region.is_none() {
            self.backend.region(&region)?;
        }
        // What has been made stays known even if a later step fails, so
        // the next pass removes what nothing owns any more.
        self.namespaces = Some(present.union(&wanted).cloned().collect());
        for (vpc_id, plan) in plans {
            self.reconcile_vpc(world, vpc_id, plan, &region.netns, &mut pass)?;
        }
        if self.region.as_ref() != Some(&region) {
            self.backend.region(&region)?;
            self.region = Some(region);
        }
        self.namespaces = Some(wanted);
        Ok(pass)
    }

    fn reconcile_vpc(
        &mut self,
        world: &World,
        vpc_id: String,
        plan: RouterPlan,
        region_netns: &str,
        pass: &mut Pass,
    ) -> Result<()> {
        let (old, old_rules) = match self.applied.remove(&vpc_id) {
            Some(Applied { plan, rules }) => (Some(plan), Some(rules)),
            None => (None, None),
        };
        let old = old.as_ref();
        if old.is_none_or(|b| !same_router(b, &plan)) {
            self.backend.router(&plan, region_netns)?;
            pass.routers_applied += 1;
        }
        if old.is_none() {
            // A router this process has not applied may lack its overlay.
            self.overlays.remove(&vpc_id);
        }
        // The firewall before the ENIs and the routes: a new ENI or VPC
        // forwards nothing its security groups and ACLs have not been given.
        let rules = match (old, old_rules) {
            (Some(o), Some(rules)) if same_rules(o, &plan) => rules,
            (_, old_rules) => {
                let observed = match old_rules {
                    Some(rules) => Some(rules),
                    None => self.backend.observe_rules(&plan.netns)?,
                };
                let desired = nft::render(&plan);
                let ops = ruleset::diff(observed.as_ref(), &desired);
                self.send(&plan.netns, &ops, pass)?;
                desired
            }
        };
        let changed: Vec<&EniPlan> = plan
            .enis
            .iter()
            .filter(|e| {
                let old = old.and_then(|b| b.enis.iter().find(|x| x.id == e.id));
                old.is_none_or(|o| !same_link(o, e))
            })
            .collect();
        apply_enis(&self.backend, &plan.netns, &changed)?;
        pass.enis_applied += changed.len();
        // Before the routes: routes towards ENIs on other hosts go into its link.
        let overlay_changed = self.apply_overlay(world, &plan, pass)?;
        if overlay_changed
            || old.is_none_or(|b| !same_routes(b, &plan) || b.enis.len() != plan.enis.len())
        {
            self.backend.routes(&plan)?;
            pass.route_tables_applied += plan.tables.len();
        }
        self.applied.insert(vpc_id, Applied { plan, rules });
        Ok(())
    }

    /// Removes every namespace of this instance (used by tests and `cove teardown`).
    pub fn remove_all(&mut self) -> Result<usize> {
        let names = self.backend.namespaces(&self.instance)?;
        for ns in &names {
            self.backend.remove_namespace(ns)?;
        }
        self.applied.clear();
        self.region = None;
        self.namespaces = None;
        self.world = None;
        Ok(names.len())
    }
}

/// How many ENIs are plumbed at once. Each takes a dozen short `ip` runs
/// that mostly wait on the kernel, so a burst (50 jobs starting together)
/// goes several times faster side by side; each ENI has its own namespace
/// and links, so they do not interfere.
const ENI_WORKERS: usize = 8;

fn apply_enis<B: Backend>(backend: &B, router: &str, enis: &[&EniPlan]) -> Result<()> {
    if enis.len() <= 1 {
        return enis.iter().try_for_each(|e| backend.eni(router, e));
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..ENI_WORKERS.min(enis.len()))
            .map(|_| {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(e) = enis.get(i) else {
                        return Ok(());
                    };
                    backend.eni(router, e)?;
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(Error("ENI worker panicked".into())))
            })
            .collect()
    });
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::Fake;
    use crate::fake::Kernel;
    use cove_model::fixtures::*;
    use cove_model::vpc::*;
    use cove_net::naming;
    use cove_net::ruleset::Op;
    use std::collections::BTreeSet;

    const TAG: &str = "t";

    /// The fixture VPC with a web ENI (a1) and two clients, plus filler rules.
    fn big_world(groups: usize, per_group: usize) -> World {
        let mut w = web_and_clients(TAG);
        add_filler_rules(&mut w, groups, per_group);
        w
    }

    fn rule_ops(fake: &Fake) -> Vec<Op> {
        fake.state()
            .batches
            .into_iter()
            .flat_map(|(_, ops)| ops)
            .collect()
    }

    #[test]
    fn a_new_world_is_made_whole_and_a_second_pass_does_nothing() {
        let w = big_world(2, 10);
        let mut r = Reconciler::new(TAG, Fake::new());
        let pass = r.reconcile(&w).expect("first pass");
        assert_eq!(pass.routers_applied, 1);
        assert_eq!(pass.enis_applied, w.network_interfaces.len());
        assert_eq!(pass.rule_transactions, 1);
        let plan = plan_vpc(&w, TAG, &vpc_id(&w)).expect("plan");
        assert_eq!(
            r.backend().state().tables.get(&plan.netns),
            Some(&nft::render(&plan)),
            "the kernel holds the planned table"
        );
        r.backend().clear_log();
        assert_eq!(r.reconcile(&w).expect("second pass"), Pass::default());
        assert!(r.backend().state().calls.is_empty());
    }

    #[test]
    fn one_rule_added_to_ten_thousand_writes_only_the_affected_chain() {
        let mut w = big_world(200, 50);
        let mut r = Reconciler::new(TAG, Fake::new());
        r.reconcile(&w).expect("first pass");
        let plan = plan_vpc(&w, TAG, &vpc_id(&w)).expect("plan");
        let total: usize = plan
            .enis
            .iter()
            .map(|e| e.ingress.len() + e.egress.len())
            .sum();
        assert!(total >= 10_000, "{total} rules in the VPC");
        r.backend().clear_log();

        w.security_groups
            .get_mut("sg-web")
            .map(std::sync::Arc::make_mut)
            .expect("web")
            .ingress
            .push(tcp_from_group(8080, "sg-clients"));
        let pass = r.reconcile(&w).expect("pass");
        let web = nft::eni_chain_name(&eni_with_ip(&w, "10.0.1.4"), false);
        let ops = rule_ops(r.backend());
        assert_eq!(ops[0], Op::FlushChain(web.clone()));
        assert!(ops[1..]
            .iter()
            .all(|op| matches!(op, Op::AddRule(chain, _) if *chain == web)));
        assert_eq!(
            ops.len(),
            1 + 3,
            "flush, the two old rules and the new one, and the drop: {ops:?}"
        );
        assert_eq!(pass.rule_transactions, 1);
        assert_eq!(
            (
                pass.enis_applied,
                pass.routers_applied,
                pass.route_tables_applied
            ),
            (0, 0, 0)
        );
    }

    #[test]
    fn a_membership_change_is_set_elements_only() {
        let mut w = big_world(2, 10);
        let mut r = Reconciler::new(TAG, Fake::new());
        r.reconcile(&w).expect("first pass");
        r.backend().clear_log();
        let b1 = eni_with_ip(&w, "10.0.2.4");
        w.network_interfaces
            .get_mut(&b1)
            .map(std::sync::Arc::make_mut)
            .expect("b1")
            .group_ids = vec!["sg-web".into()];
        r.reconcile(&w).expect("pass");
        let ops = rule_ops(r.backend());
        assert!(!ops.is_empty());
        // b1's own chains change (its rules are now sg-web's), and the sets.
        let b1_chains = [
            nft::eni_chain_name(&b1, true),
            nft::eni_chain_name(&b1, false),
        ];
        for op in &ops {
            match op {
                Op::AddElems(set, _) | Op::DeleteElems(set, _) => {
                    assert!(set == "sg_web" || set == "sg_clients", "{set}")
                }
                Op::FlushChain(c) | Op::AddRule(c, _) => assert!(b1_chains.contains(c), "{c}"),
                other => panic!("unexpected {other:?}"),
            }
        }

        // A group with identical rules: then only the member sets change.
        r.backend().clear_log();
        let mut twin = (**w.security_groups.get("sg-web").expect("web")).clone();
        twin.id = "sg-twin".into();
        w.security_groups.insert("sg-twin".into(), twin.into());
        r.reconcile(&w).expect("pass");
        r.backend().clear_log();
        w.network_interfaces
            .get_mut(&b1)
            .map(std::sync::Arc::make_mut)
            .expect("b1")
            .group_ids = vec!["sg-twin".into()];
        r.reconcile(&w).expect("pass");
        let ops = rule_ops(r.backend());
        assert!(
            ops.iter()
                .all(|op| matches!(op, Op::AddElems(..) | Op::DeleteElems(..))),
            "{ops:?}"
        );
        assert_eq!(ops.len(), 2, "{ops:?}");
    }

    #[test]
    fn a_restart_with_an_unchanged_store_changes_nothing() {
        let w = big_world(20, 50);
        let fake = Fake::new();
        let mut first = Reconciler::new(TAG, fake);
        first.reconcile(&w).expect("first pass");
        // A new reconciler over the same kernel, as after `kill -9`.
        let kernel = first.backend().state();
        let fake = Fake::new();
        *fake.kernel.lock().unwrap() = Kernel {
            calls: vec![],
            batches: vec![],
            ..kernel
        };
        let mut second = Reconciler::new(TAG, fake);
        let pass = second.reconcile(&w).expect("pass after restart");
        assert_eq!(pass.rule_transactions, 0, "{pass:?}");
        assert_eq!(pass.namespaces_removed, 0);
        assert!(second.backend().state().batches.is_empty());
    }

    fn host(id: &str, last: u8, control_plane: bool) -> cove_model::hosts::Host {
        cove_model::hosts::Host {
            heartbeat_at: 1,
            ..cove_model::fixtures::host(id, last, control_plane)
        }
    }

    fn place(w: &mut World, eni: &str, host: Option<&str>) {
        w.network_interfaces
            .get_mut(eni)
            .map(std::sync::Arc::make_mut)
            .expect("ENI")
            .host = host.map(str::to_string);
    }

    /// The fixture VPC on two hosts: b1 (10.0.2.4) on the agent "b", the
    /// rest on the control plane's host "a".
    fn two_hosts() -> (World, String) {
        let mut w = big_world(2, 10);
        w.hosts.insert("a".into(), host("a", 1, true).into());
        w.hosts.insert("b".into(), host("b", 2, false).into());
        let b1 = eni_with_ip(&w, "10.0.2.4");
        place(&mut w, &b1, Some("b"));
        (w, b1)
    }

    fn at(host: &str, control_plane: bool) -> Reconciler<Fake> {
        Reconciler::new(&format!("{TAG}{host}"), Fake::new()).at(Locality {
            host: Some(host.into()),
            control_plane,
        })
    }

    #[test]
    fn each_host_makes_its_own_enis_and_an_overlay_to_the_others() {
        let (w, b1) = two_hosts();
        let vpc = vpc_id(&w);
        let (mut a, mut b) = (at("a", true), at("b", false));
        a.reconcile(&w).expect("host a");
        b.reconcile(&w).expect("host b");
        let (ka, kb) = (a.backend().state(), b.backend().state());
        let here = |k: &Kernel, tag: &str, id: &str| {
            k.namespaces
                .contains(&naming::eni_netns(&format!("{TAG}{tag}"), id))
        };
        for id in w.network_interfaces.keys() {
            assert_eq!(here(&ka, "a", id), *id != b1, "{id} on a");
            assert_eq!(here(&kb, "b", id), *id == b1, "{id} on b");
        }
        let router_a = naming::router_netns(&format!("{TAG}a"), &vpc);
        let overlay_a = &ka.overlays[&router_a];
        assert_eq!(overlay_a.peers.len(), 1);
        assert_eq!(overlay_a.peers[0].enis, vec![ip("10.0.2.4")]);
        let router_b = naming::router_netns(&format!("{TAG}b"), &vpc);
        let overlay_b = &kb.overlays[&router_b];
        assert_eq!(overlay_b.vni, overlay_a.vni);
        assert_eq!(
            overlay_b.peers[0].enis.len(),
            w.network_interfaces.len() - 1,
            "host b reaches every other ENI through host a"
        );
        // Group sets hold members on every host: b's table names a1's address.
        let plan_b = b.applied[&vpc].plan.clone();
        assert!(plan_b
            .sets
            .values()
            .flatten()
            .any(|c| c.to_string().starts_with("10.0.1.")));

        // A heartbeat changes nothing in the kernel.
        let mut beat = w.clone();
        std::sync::Arc::make_mut(beat.hosts.get_mut("b").unwrap()).heartbeat_at = 99;
        a.backend().clear_log();
        assert_eq!(a.reconcile(&beat).expect("heartbeat").changes(), 0);
        assert!(a.backend().state().calls.is_empty());
    }

    #[test]
    fn a_new_eni_on_another_host_changes_only_its_overlay_entries() {
        let (mut w, _) = two_hosts();
        let mut a = at("a", true);
        a.reconcile(&w).expect("host a");
        let template = (**w.network_interfaces.values().next().unwrap()).clone();
        let mut e = template.clone();
        e.id = "eni-newonb".into();
        e.private_ip = ip("10.0.2.99");
        e.host = Some("b".into());
        w.network_interfaces.insert(e.id.clone(), e.into());
        a.backend().clear_log();
        let pass = a.reconcile(&w).expect("a new ENI on b");
        assert!(!pass.full, "one ENI is the incremental path");
        assert_eq!(pass.enis_applied, 0, "host a makes no ENI of b's");
        assert_eq!(pass.overlays_applied, 1);
        let k = a.backend().state();
        assert!(
            k.calls
                .iter()
                .any(|c| c.starts_with("overlay") && c.ends_with("changed")),
            "the overlay is changed entry by entry: {:?}",
            k.calls
        );
        let overlay = k.overlays.values().next().expect("an overlay");
        assert!(overlay.peers[0].enis.contains(&ip("10.0.2.99")));
        // The placement index follows: the same as one built from scratch.
        let rebuilt = Placement::of(&w);
        assert_eq!(a.placement.by_vpc, rebuilt.by_vpc);
        assert_eq!(a.placement.counts, rebuilt.counts);
    }

    #[test]
    fn the_placement_index_follows_moves_and_deletions() {
        let (mut w, b1) = two_hosts();
        let vpc = vpc_id(&w);
        let mut p = Placement::of(&w);
        let agent = Locality {
            host: Some("b".into()),
            control_plane: false,
        };
        assert!(p.holds_any(&vpc, &agent));
        place(&mut w, &b1, None);
        p.update(&w, [&b1]);
        assert!(!p.holds_any(&vpc, &agent), "b's only ENI moved away");
        assert!(p.holds_any(&vpc, &Locality::everything()));
        w.network_interfaces.remove(&b1);
        p.update(&w, [&b1]);
        let rebuilt = Placement::of(&w);
        assert_eq!(
            (p.by_vpc, p.counts, p.vpc_of),
            (rebuilt.by_vpc, rebuilt.counts, rebuilt.vpc_of)
        );
    }

    #[test]
    fn an_eni_moved_to_the_control_plane_leaves_the_agent_and_its_router() {
        let (w, b1) = two_hosts();
        let vpc = vpc_id(&w);
        let (mut a, mut b) = (at("a", true), at("b", false));
        a.reconcile(&w).expect("host a");
        b.reconcile(&w).expect("host b");
        let mut moved = w.clone();
        place(&mut moved, &b1, None);
        let pass = a.reconcile(&moved).expect("host a");
        assert_eq!(pass.enis_applied, 1);
        assert_eq!(pass.overlays_applied, 1);
        let ka = a.backend().state();
        assert!(ka.overlays.is_empty(), "one host holds the VPC: no overlay");
        b.reconcile(&moved).expect("host b");
        let kb = b.backend().state();
        assert!(
            kb.namespaces
                .iter()
                .all(|n| !n.contains(naming::short(&vpc)) && !n.contains(naming::short(&b1))),
            "the agent keeps nothing of the VPC: {:?}",
            kb.namespaces
        );
    }

    #[test]
    fn a_route_to_an_eni_on_another_host_goes_into_the_overlay() {
        let (mut w, b1) = two_hosts();
        let vpc = vpc_id(&w);
        // The main route table sends 192.0.2.0/24 to a1, which stays on host a.
        let a1 = eni_with_ip(&w, "10.0.1.4");
        add_route_table(
            &mut w,
            "rtb-main",
            &[],
            vec![("192.0.2.0/24", RouteTarget::NetworkInterface(a1))],
        );
        let mut b = at("b", false);
        b.reconcile(&w).expect("host b");
        let plan = &b.applied[&vpc].plan;
        let vias: Vec<&Via> = plan
            .tables
            .iter()
            .flat_map(|t| &t.routes)
            .map(|r| &r.via)
            .collect();
        assert!(
            vias.iter().any(|v| matches!(v, Via::Eni { link, ip: to } if *link == overlay::link_name(&vpc) && *to == ip("10.0.1.4"))),
            "{vias:?}"
        );
        assert!(plan.enis.iter().all(|e| e.id == b1));
    }

    #[test]
    fn deleted_enis_and_vpcs_leave_nothing_behind() {
        let mut w = big_world(2, 10);
        let mut r = Reconciler::new(TAG, Fake::new());
        r.reconcile(&w).expect("first pass");
        let b1 = eni_with_ip(&w, "10.0.2.4");
        w.network_interfaces.remove(&b1);
        let pass = r.reconcile(&w).expect("pass");
        assert_eq!(pass.namespaces_removed, 1);
        let k = r.backend().state();
        assert!(!k.namespaces.contains(&naming::eni_netns(TAG, &b1)));
        let plan = plan_vpc(&w, TAG, &vpc_id(&w)).expect("plan");
        assert_eq!(k.tables.get(&plan.netns), Some(&nft::render(&plan)));

        let vpc = vpc_id(&w);
        w.network_interfaces = w
            .network_interfaces
            .into_iter()
            .filter(|(_, e)| e.vpc_id != vpc)
            .collect();
        w.subnets = w
            .subnets
            .into_iter()
            .filter(|(_, s)| s.vpc_id != vpc)
            .collect();
        w.vpcs.remove(&vpc);
        r.reconcile(&w).expect("pass");
        let k = r.backend().state();
        assert_eq!(
            k.namespaces.into_iter().collect::<Vec<_>>(),
            vec![naming::region_netns(TAG)]
        );
        assert!(k.tables.is_empty());
    }

    fn flow_log_on(resource: &str) -> FlowLog {
        FlowLog {
            id: "fl-1".into(),
            region: "us-east-1".into(),
            resource_id: resource.into(),
            traffic_type: TrafficType::All,
            destination_type: LogDestinationType::CloudWatchLogs,
            log_group_name: Some("flows".into()),
            log_destination: None,
            deliver_logs_permission_arn: None,
            log_format: DEFAULT_FLOW_LOG_FORMAT.into(),
            max_aggregation_interval: 600,
            create_time: String::new(),
        }
    }

    /// The kernel the fake holds equals what a full plan and render of
    /// `w` want, namespaces included.
    fn assert_converged(r: &Reconciler<Fake>, w: &World, step: &str) {
        let plan = plan_vpc(w, TAG, &vpc_id(w)).expect("plan");
        let k = r.backend().state();
        assert!(
            k.tables.get(&plan.netns) == Some(&nft::render(&plan)),
            "{step}: the table differs from a full render"
        );
        let mut wanted: BTreeSet<String> = plan.enis.iter().map(|e| e.netns.clone()).collect();
        wanted.insert(plan.netns.clone());
        wanted.insert(naming::region_netns(TAG));
        assert_eq!(k.namespaces, wanted, "{step}");
    }

    #[test]
    fn the_incremental_path_keeps_the_kernel_equal_to_a_full_render() {
        use rand::{rngs::SmallRng, Rng, SeedableRng};
        let mut rng = SmallRng::seed_from_u64(14);
        let mut w = big_world(10, 10);
        for n in 0..3 {
            let list = ManagedPrefixList {
                id: format!("pl-{n}"),
                region: "us-east-1".into(),
                owner_id: ACCOUNT.into(),
                name: format!("list-{n}"),
                max_entries: 5,
                versions: vec![vec![PrefixListEntry {
                    cidr: net(&format!("10.{}.0.0/16", 20 + n)),
                    description: None,
                }]],
            };
            w.managed_prefix_lists.insert(list.id.clone(), list.into());
        }
        // A flow log on subnet b keeps flow counting on throughout.
        let mut r = Reconciler::new(TAG, Fake::new());
        r.reconcile(&w).expect("first pass");
        let groups: Vec<String> = w.security_groups.keys().cloned().collect();
        let template = w
            .network_interfaces
            .values()
            .next()
            .map(|e| (**e).clone())
            .expect("an ENI");
        let mut next_ip = 100;
        let mut incremental = 0;
        for step in 0..400 {
            let what = match rng.gen_range(0..5) {
                0 => {
                    let g = &groups[rng.gen_range(0..groups.len())];
                    let port = rng.gen_range(1..60000);
                    let peer = match rng.gen_range(0..5) {
                        0 | 1 => cidr("10.9.0.0/16"),
                        // A customer prefix list: its set must be in the
                        // router before a rule names it.
                        2 => SgPeer::PrefixList {
                            id: format!("pl-{}", rng.gen_range(0..3)),
                        },
                        _ => SgPeer::Group {
                            group_id: groups[rng.gen_range(0..groups.len())].clone(),
                            user_id: ACCOUNT.into(),
                        },
                    };
                    let g = w
                        .security_groups
                        .get_mut(g)
                        .map(std::sync::Arc::make_mut)
                        .expect("group");
                    g.ingress.push(rule("tcp", Some(port), Some(port), peer));
                    "rule added"
                }
                1 => {
                    let g = w
                        .security_groups
                        .get_mut(&groups[rng.gen_range(0..groups.len())])
                        .map(std::sync::Arc::make_mut)
                        .expect("group");
                    g.ingress.pop();
                    "rule removed"
                }
                2 => {
                    let ids: Vec<String> = w.network_interfaces.keys().cloned().collect();
                    let id = &ids[rng.gen_range(0..ids.len())];
                    let n = rng.gen_range(0..3);
                    let chosen = (0..n)
                        .map(|_| groups[rng.gen_range(0..groups.len())].clone())
                        .collect();
                    w.network_interfaces
                        .get_mut(id)
                        .map(std::sync::Arc::make_mut)
                        .expect("eni")
                        .group_ids = chosen;
                    "groups changed"
                }
                3 => {
                    next_ip += 1;
                    let id = format!("eni-new{next_ip:05}");
                    let b = rng.gen_bool(0.5);
                    let eni = NetworkInterface {
                        id: id.clone(),
                        subnet_id: if b { "subnet-b" } else { "subnet-a" }.into(),
                        private_ip: ip(&format!(
                            "10.0.{}.{}",
                            if b { 2 } else { 1 },
                            next_ip % 250
                        )),
                        group_ids: vec![groups[rng.gen_range(0..groups.len())].clone()],
                        ..template.clone()
                    };
                    w.network_interfaces.insert(id, eni.into());
                    "ENI created"
                }
                _ => {
                    let ids: Vec<String> = w.network_interfaces.keys().cloned().collect();
                    if ids.len() > 3 {
                        w.network_interfaces
                            .remove(&ids[rng.gen_range(0..ids.len())]);
                    }
                    "ENI deleted"
                }
            };
            if step == 200 {
                // Flow logs on from here on: a full pass, then incremental ones that count.
                w.flow_logs
                    .insert("fl-1".into(), flow_log_on("subnet-b").into());
            }
            let pass = r.reconcile(&w).expect("pass");
            incremental += usize::from(!pass.full);
            assert_converged(&r, &w, &format!("step {step}: {what}"));
        }
        assert!(
            incremental > 370,
            "{incremental} of 400 passes were incremental"
        );
    }

    #[test]
    fn a_refused_transaction_is_retried_whole_on_the_next_pass() {
        let mut w = big_world(2, 10);
        let mut r = Reconciler::new(TAG, Fake::new());
        r.reconcile(&w).expect("first pass");
        w.security_groups
            .get_mut("sg-web")
            .map(std::sync::Arc::make_mut)
            .expect("web")
            .ingress
            .clear();
        *r.backend().refuse_rules.lock().unwrap() = Some("no memory".into());
        assert!(r.reconcile(&w).is_err());
        *r.backend().refuse_rules.lock().unwrap() = None;
        r.reconcile(&w).expect("retry");
        let plan = plan_vpc(&w, TAG, &vpc_id(&w)).expect("plan");
        assert_eq!(
            r.backend().state().tables.get(&plan.netns),
            Some(&nft::render(&plan))
        );
    }

    /// A second VPC, `vpc-peer` (10.9.0.0/16, one subnet, group `sg-peer`,
    /// three ENIs), actively peered with the fixture VPC.
    fn peered_world() -> World {
        let mut w = big_world(3, 5);
        let home = vpc_id(&w);
        let mut vpc = (*w.vpcs[&home]).clone();
        vpc.id = "vpc-peer".into();
        vpc.cidr = cidr_of("10.9.0.0/16");
        w.vpcs.insert(vpc.id.clone(), vpc.into());
        let mut subnet = (*w.subnets["subnet-a"]).clone();
        subnet.id = "subnet-peer".into();
        subnet.vpc_id = "vpc-peer".into();
        subnet.cidr = cidr_of("10.9.1.0/24");
        w.subnets.insert(subnet.id.clone(), subnet.into());
        let mut g = group("sg-peer", vec![], vec![]);
        g.vpc_id = "vpc-peer".into();
        w.security_groups.insert(g.id.clone(), g.into());
        let template = w
            .network_interfaces
            .values()
            .next()
            .map(|e| (**e).clone())
            .expect("an ENI");
        for i in 0..3 {
            let e = NetworkInterface {
                id: format!("eni-peer{i}"),
                vpc_id: "vpc-peer".into(),
                subnet_id: "subnet-peer".into(),
                private_ip: ip(&format!("10.9.1.{}", 4 + i)),
                group_ids: vec!["sg-peer".into()],
                ..template.clone()
            };
            w.network_interfaces.insert(e.id.clone(), e.into());
        }
        let pcx = active_peering("pcx-1", &home, "vpc-peer");
        w.vpc_peering_connections.insert(pcx.id.clone(), pcx.into());
        w
    }

    fn cidr_of(c: &str) -> cove_model::cidr::Cidr {
        c.parse().expect("a CIDR")
    }

    #[test]
    fn peered_routers_follow_each_others_groups_incrementally() {
        use rand::{rngs::SmallRng, Rng, SeedableRng};
        let mut rng = SmallRng::seed_from_u64(21);
        let mut w = peered_world();
        let mut r = Reconciler::new(TAG, Fake::new());
        r.reconcile(&w).expect("first pass");
        let home_groups: Vec<String> = w
            .security_groups
            .values()
            .filter(|g| g.vpc_id != "vpc-peer")
            .map(|g| g.id.clone())
            .collect();
        let mut incremental = 0;
        for step in 0..200 {
            match rng.gen_range(0..3) {
                // A peer ENI joins or leaves the peer group the home rules name.
                0 => {
                    let id = format!("eni-peer{}", rng.gen_range(0..3));
                    let e = w
                        .network_interfaces
                        .get_mut(&id)
                        .map(std::sync::Arc::make_mut)
                        .expect("eni");
                    e.group_ids = if e.group_ids.is_empty() {
                        vec!["sg-peer".into()]
                    } else {
                        vec![]
                    };
                }
                // A home rule names the peer group, or one goes.
                1 => {
                    let g = &home_groups[rng.gen_range(0..home_groups.len())];
                    let g = w
                        .security_groups
                        .get_mut(g)
                        .map(std::sync::Arc::make_mut)
                        .expect("group");
                    if rng.gen_bool(0.6) {
                        let port = rng.gen_range(1..60000);
                        g.ingress.push(rule(
                            "tcp",
                            Some(port),
                            Some(port),
                            SgPeer::Group {
                                group_id: "sg-peer".into(),
                                user_id: ACCOUNT.into(),
                            },
                        ));
                    } else {
                        g.ingress.pop();
                    }
                }
                // A home ENI changes groups: the peer router's sets follow.
                _ => {
                    let ids: Vec<String> = w
                        .network_interfaces
                        .values()
                        .filter(|e| e.vpc_id != "vpc-peer")
                        .map(|e| e.id.clone())
                        .collect();
                    let id = &ids[rng.gen_range(0..ids.len())];
                    let chosen = vec![home_groups[rng.gen_range(0..home_groups.len())].clone()];
                    w.network_interfaces
                        .get_mut(id)
                        .map(std::sync::Arc::make_mut)
                        .expect("eni")
                        .group_ids = chosen;
                }
            }
            let pass = r.reconcile(&w).expect("pass");
            incremental += usize::from(!pass.full);
            let k = r.backend().state();
            for vpc in [vpc_id(&w).as_str(), "vpc-peer"] {
                let plan = plan_vpc(&w, TAG, vpc).expect("plan");
                assert!(
                    k.tables.get(&plan.netns) == Some(&nft::render(&plan)),
                    "step {step}: {vpc}'s table differs from a full render"
                );
            }
        }
        assert_eq!(incremental, 200, "every change took the incremental path");
    }
}
