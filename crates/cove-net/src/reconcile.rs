//! Keeps the kernel equal to the stored VPC state. Each pass plans every
//! VPC, applies only what differs from what it last applied (router setup,
//! each new or changed ENI, and one atomic ruleset replacement when rules or
//! sets changed), and removes the namespaces of this Cove instance that no
//! plan owns. After a restart nothing is "last applied", so the first pass
//! walks every object once: existing namespaces and links are adopted as
//! they are, and rulesets are replaced.

use crate::linux::{self, CommandError};
use crate::plan::{plan_region, plan_vpc, EniPlan, RegionPlan, RouterPlan};
use cove_model::world::World;
use std::collections::{BTreeMap, BTreeSet};

pub struct Reconciler {
    instance: String,
    applied: BTreeMap<String, RouterPlan>,
    region: Option<RegionPlan>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub routers_applied: usize,
    pub enis_applied: usize,
    pub rulesets_applied: usize,
    pub namespaces_removed: usize,
}

fn same_router(a: &RouterPlan, b: &RouterPlan) -> bool {
    a.netns == b.netns && a.local_addrs == b.local_addrs
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
        a.ip,
        a.firewalled,
        a.source_check,
        &a.egress,
        &a.ingress,
    ) == (
        &b.id,
        &b.router_link,
        b.ip,
        b.firewalled,
        b.source_check,
        &b.egress,
        &b.ingress,
    )
}

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

impl Reconciler {
    pub fn new(instance: &str) -> Reconciler {
        Reconciler {
            instance: instance.to_string(),
            applied: BTreeMap::new(),
            region: None,
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// One pass over the whole world.
    pub fn reconcile(&mut self, world: &World) -> Result<Pass, CommandError> {
        let mut pass = Pass::default();
        let region = plan_region(world, &self.instance);
        let mut wanted_ns = BTreeSet::from([region.netns.clone()]);
        let mut plans = BTreeMap::new();
        for vpc_id in world.vpcs.keys() {
            if let Some(plan) = plan_vpc(world, &self.instance, vpc_id) {
                wanted_ns.insert(plan.netns.clone());
                wanted_ns.extend(plan.enis.iter().map(|e| e.netns.clone()));
                plans.insert(vpc_id.clone(), plan);
            }
        }
        // Remove first: a deleted ENI's address may be reused by a new one.
        for ns in linux::instance_namespaces(&self.instance)? {
            if !wanted_ns.contains(&ns) {
                linux::delete_netns(&ns)?;
                pass.namespaces_removed += 1;
            }
        }
        self.applied.retain(|vpc, _| plans.contains_key(vpc));
        if self.region.is_none() {
            linux::apply_region(&region)?;
        }
        for (vpc_id, plan) in plans {
            let before = self.applied.get(&vpc_id);
            if before.is_none_or(|b| {
                !same_router(b, &plan) || b.igw != plan.igw || b.endpoints != plan.endpoints
            }) {
                linux::apply_router(&plan)?;
                linux::apply_igw(&plan, &region.netns)?;
                pass.routers_applied += 1;
            }
            let changed: Vec<&EniPlan> = plan
                .enis
                .iter()
                .filter(|e| {
                    let old = before.and_then(|b| b.enis.iter().find(|x| x.id == e.id));
                    old.is_none_or(|o| !same_link(o, e))
                })
                .collect();
            apply_enis(&plan.netns, &changed)?;
            pass.enis_applied += changed.len();
            // The firewall before the routes: a new VPC's router forwards
            // nothing its security groups and ACLs have not been given.
            if before.is_none_or(|b| !same_rules(b, &plan)) {
                linux::apply_rules(&plan)?;
                pass.rulesets_applied += 1;
            }
            if before.is_none_or(|b| !same_routes(b, &plan) || b.enis.len() != plan.enis.len()) {
                linux::apply_routes(&plan)?;
            }
            self.applied.insert(vpc_id, plan);
        }
        if self.region.as_ref() != Some(&region) {
            linux::apply_region(&region)?;
            self.region = Some(region);
        }
        Ok(pass)
    }

    /// Removes every namespace of this instance (used by tests and `cove` teardown).
    pub fn remove_all(&mut self) -> Result<usize, CommandError> {
        let names = linux::instance_namespaces(&self.instance)?;
        for ns in &names {
            linux::delete_netns(ns)?;
        }
        self.applied.clear();
        self.region = None;
        Ok(names.len())
    }
}

/// How many ENIs are plumbed at once. Each takes a dozen short `ip` runs
/// that mostly wait on the kernel, so a burst (50 jobs starting together)
/// goes several times faster side by side; each ENI has its own namespace
/// and links, so they do not interfere.
const ENI_WORKERS: usize = 8;

fn apply_enis(router: &str, enis: &[&EniPlan]) -> Result<(), CommandError> {
    if enis.len() <= 1 {
        return enis.iter().try_for_each(|e| linux::apply_eni(router, e));
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<(), CommandError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..ENI_WORKERS.min(enis.len()))
            .map(|_| {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(e) = enis.get(i) else {
                        return Ok(());
                    };
                    linux::apply_eni(router, e)?;
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(CommandError("ENI worker panicked".into())))
            })
            .collect()
    });
    results.into_iter().collect()
}
