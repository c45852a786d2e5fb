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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::Fake;
    use crate::fake::Kernel;
    use cove_model::fixtures::*;
    use cove_model::vpc::*;
    use cove_net::naming;
    use cove_net::ruleset::Op;

    const TAG: &str = "t";

    /// The fixture VPC with a web ENI (a1) and two clients, plus filler rules.
    fn big_world(groups: usize, per_group: usize) -> World {
        let web = group(
            "sg-web",
            vec![rule("tcp", Some(22), Some(22), cidr("10.0.0.0/16"))],
            vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
        );
        let clients = group(
            "sg-clients",
            vec![],
            vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
        );
        let mut w = world(
            TAG,
            vec![web, clients],
            [&["sg-web"], &["sg-clients"], &["sg-clients"]],
            vec![allow_all_acl("acl-d", &["subnet-a", "subnet-b"])],
        );
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

    fn eni_id(w: &World, ip: &str) -> String {
        w.network_interfaces
            .values()
            .find(|e| e.private_ip == ip)
            .map(|e| e.id.clone())
            .expect("fixture ENI")
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
            .expect("web")
            .ingress
            .push(rule(
                "tcp",
                Some(8080),
                Some(8080),
                SgPeer::Group {
                    group_id: "sg-clients".into(),
                    user_id: ACCOUNT.into(),
                },
            ));
        let pass = r.reconcile(&w).expect("pass");
        let web = nft::eni_chain_name(&eni_id(&w, "10.0.1.4"), false);
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
        let b1 = eni_id(&w, "10.0.2.4");
        w.network_interfaces.get_mut(&b1).expect("b1").group_ids = vec!["sg-web".into()];
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
        let mut twin = w.security_groups.get("sg-web").expect("web").clone();
        twin.id = "sg-twin".into();
        w.security_groups.insert("sg-twin".into(), twin);
        r.reconcile(&w).expect("pass");
        r.backend().clear_log();
        w.network_interfaces.get_mut(&b1).expect("b1").group_ids = vec!["sg-twin".into()];
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

    #[test]
    fn deleted_enis_and_vpcs_leave_nothing_behind() {
        let mut w = big_world(2, 10);
        let mut r = Reconciler::new(TAG, Fake::new());
        r.reconcile(&w).expect("first pass");
        let b1 = eni_id(&w, "10.0.2.4");
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

    #[test]
    fn a_refused_transaction_is_retried_whole_on_the_next_pass() {
        let mut w = big_world(2, 10);
        let mut r = Reconciler::new(TAG, Fake::new());
        r.reconcile(&w).expect("first pass");
        w.security_groups
            .get_mut("sg-web")
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
}
