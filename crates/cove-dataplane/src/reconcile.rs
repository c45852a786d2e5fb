//! Keeps the kernel equal to the stored VPC state, through a [`Backend`].
//!
//! Each pass plans every VPC once, then for each VPC applies only what
//! differs from what it last applied: the router and its gateway links,
//! each new or changed ENI, the route tables, and the router's nftables
//! table as a diff ([`cove_net::ruleset::diff`]) in one transaction. A VPC
//! whose rule-relevant plan did not change is not even rendered. Namespaces
//! that no plan owns go.
//!
//! After a restart nothing is "last applied": the first pass lists the
//! instance's namespaces, reads each router's table back from the kernel
//! and diffs against it, so an unchanged store costs no rule operation and
//! the flow-log counters in the kernel survive the restart.

use crate::backend::{Backend, Error, Result};
use cove_model::world::World;
use cove_net::nft;
use cove_net::plan::{plan_vpc, region_from, EniPlan, RegionPlan, RouterPlan};
use cove_net::ruleset::{self, OpCounts, Ruleset};
use std::collections::{BTreeMap, BTreeSet};

/// What is in the kernel for one VPC, as last applied.
struct Applied {
    plan: RouterPlan,
    rules: Ruleset,
}

pub struct Reconciler<B: Backend> {
    instance: String,
    backend: B,
    applied: BTreeMap<String, Applied>,
    region: Option<RegionPlan>,
    /// The namespaces the last pass wanted; `None` until the kernel was listed once.
    namespaces: Option<BTreeSet<String>>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub routers_applied: usize,
    pub enis_applied: usize,
    pub route_tables_applied: usize,
    /// Rule transactions sent, and what they held.
    pub rule_transactions: usize,
    pub rule_ops: OpCounts,
    pub namespaces_removed: usize,
}

fn same_router(a: &RouterPlan, b: &RouterPlan) -> bool {
    a.netns == b.netns
        && a.local_addrs == b.local_addrs
        && a.igw == b.igw
        && a.endpoints == b.endpoints
}

fn same_routes(a: &RouterPlan, b: &RouterPlan) -> bool {
    a.tables == b.tables && a.igw == b.igw && a.cidr == b.cidr
}

fn same_link(a: &EniPlan, b: &EniPlan) -> bool {
    a.firewalled == b.firewalled
        && (a.resolver, &a.search_domain) == (b.resolver, &b.search_domain)
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
            applied: BTreeMap::new(),
            region: None,
            namespaces: None,
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// One pass over the whole world.
    pub fn reconcile(&mut self, world: &World) -> Result<Pass> {
        let mut pass = Pass::default();
        let plans: BTreeMap<String, RouterPlan> = world
            .vpcs
            .keys()
            .filter_map(|id| Some((id.clone(), plan_vpc(world, &self.instance, id)?)))
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
        if self.region.is_none() {
            self.backend.region(&region)?;
        }
        // What has been made stays known even if a later step fails, so
        // the next pass removes what nothing owns any more.
        self.namespaces = Some(present.union(&wanted).cloned().collect());
        for (vpc_id, plan) in plans {
            self.reconcile_vpc(vpc_id, plan, &region.netns, &mut pass)?;
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
        // The firewall before the routes: a new VPC's router forwards
        // nothing its security groups and ACLs have not been given.
        let rules = match (old, old_rules) {
            (Some(o), Some(rules)) if same_rules(o, &plan) => rules,
            (_, old_rules) => {
                let observed = match old_rules {
                    Some(rules) => Some(rules),
                    None => self.backend.observe_rules(&plan.netns)?,
                };
                let desired = nft::render(&plan);
                let ops = ruleset::diff(observed.as_ref(), &desired);
                if !ops.is_empty() {
                    self.backend.apply_rules(&plan.netns, &ops)?;
                    pass.rule_transactions += 1;
                    let c = ruleset::count(&ops);
                    pass.rule_ops.chains_written += c.chains_written;
                    pass.rule_ops.rules_added += c.rules_added;
                    pass.rule_ops.elems_changed += c.elems_changed;
                    pass.rule_ops.other += c.other;
                }
                desired
            }
        };
        if old.is_none_or(|b| !same_routes(b, &plan) || b.enis.len() != plan.enis.len()) {
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
