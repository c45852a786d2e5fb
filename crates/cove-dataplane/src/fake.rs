//! An in-memory kernel for the reconciler's unit tests: namespaces, the
//! objects each converge call made, and every router's nftables table,
//! changed by the same operations the Linux backend sends (applied to the
//! model by [`Ruleset::apply`], which refuses what the kernel would).

use crate::backend::{Backend, Error, FlowCounters, Result};
use cove_net::naming;
use cove_net::overlay::OverlayPlan;
use cove_net::plan::{EniPlan, RegionPlan, RouterPlan};
use cove_net::ruleset::{Op, Ruleset};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub namespaces: BTreeSet<String>,
    /// Router namespace → its table, when it has one.
    pub tables: BTreeMap<String, Ruleset>,
    /// Every call that changed something, in order (`eni <id>`, `rules <netns>` …).
    pub calls: Vec<String>,
    /// Every rule transaction, in order.
    pub batches: Vec<(String, Vec<Op>)>,
    /// Router namespace → the overlay it holds (`cove_net::overlay`).
    pub overlays: BTreeMap<String, OverlayPlan>,
    /// Router namespace → the flow records its sets hold (tests put them here).
    pub flows: BTreeMap<String, FlowCounters>,
}

#[derive(Debug, Default)]
pub struct Fake {
    pub kernel: Mutex<Kernel>,
    /// When set, `apply_rules` fails with this message (a kernel refusing).
    pub refuse_rules: Mutex<Option<String>>,
}

impl Fake {
    pub fn new() -> Fake {
        Fake::default()
    }

    /// A copy of the kernel's state.
    pub fn state(&self) -> Kernel {
        self.kernel.lock().expect("fake kernel lock").clone()
    }

    /// Forgets the recorded calls and batches (the state stays).
    pub fn clear_log(&self) {
        let mut k = self.kernel.lock().expect("fake kernel lock");
        k.calls.clear();
        k.batches.clear();
    }

    fn with<T>(&self, f: impl FnOnce(&mut Kernel) -> T) -> T {
        f(&mut self.kernel.lock().expect("fake kernel lock"))
    }
}

impl Backend for Fake {
    fn namespaces(&self, instance: &str) -> Result<Vec<String>> {
        Ok(self.with(|k| {
            k.namespaces
                .iter()
                .filter(|n| naming::is_instance_netns(instance, n))
                .cloned()
                .collect()
        }))
    }

    fn remove_namespace(&self, name: &str) -> Result<()> {
        self.with(|k| {
            k.namespaces.remove(name);
            k.tables.remove(name);
            k.overlays.remove(name);
            k.calls.push(format!("remove {name}"));
        });
        Ok(())
    }

    fn region(&self, plan: &RegionPlan) -> Result<()> {
        self.with(|k| {
            k.namespaces.insert(plan.netns.clone());
            k.calls.push(format!("region {}", plan.netns));
        });
        Ok(())
    }

    fn router(&self, plan: &RouterPlan, _region_netns: &str) -> Result<()> {
        self.with(|k| {
            k.namespaces.insert(plan.netns.clone());
            k.calls.push(format!("router {}", plan.vpc_id));
        });
        Ok(())
    }

    fn eni(&self, router_netns: &str, eni: &EniPlan) -> Result<()> {
        self.with(|k| {
            if !k.namespaces.contains(router_netns) {
                return Err(Error(format!("{router_netns} does not exist")));
            }
            k.namespaces.insert(eni.netns.clone());
            k.calls.push(format!("eni {}", eni.id));
            Ok(())
        })
    }

    fn routes(&self, plan: &RouterPlan) -> Result<()> {
        self.with(|k| k.calls.push(format!("routes {}", plan.vpc_id)));
        Ok(())
    }

    fn overlay(
        &self,
        router_netns: &str,
        vpc_id: &str,
        old: Option<&OverlayPlan>,
        plan: Option<&OverlayPlan>,
    ) -> Result<()> {
        self.with(|k| {
            if !k.namespaces.contains(router_netns) {
                return Err(Error(format!("{router_netns} does not exist")));
            }
            if old.is_some() && old != k.overlays.get(router_netns) {
                return Err(Error(format!(
                    "{router_netns}: the overlay is not what the caller says"
                )));
            }
            match plan {
                Some(p) => k.overlays.insert(router_netns.to_string(), p.clone()),
                None => k.overlays.remove(router_netns),
            };
            k.calls.push(format!(
                "overlay {vpc_id} {}",
                if old.is_some() { "changed" } else { "whole" }
            ));
            Ok(())
        })
    }

    fn observe_rules(&self, router_netns: &str) -> Result<Option<Ruleset>> {
        Ok(self.with(|k| k.tables.get(router_netns).cloned()))
    }

    fn apply_rules(&self, router_netns: &str, ops: &[Op]) -> Result<()> {
        if let Some(why) = self.refuse_rules.lock().expect("fake lock").clone() {
            return Err(Error(why));
        }
        self.with(|k| {
            if !k.namespaces.contains(router_netns) {
                return Err(Error(format!("{router_netns} does not exist")));
            }
            let had = k.tables.contains_key(router_netns);
            let mut table = k.tables.get(router_netns).cloned().unwrap_or_default();
            let exists = table
                .apply(had, ops)
                .map_err(|e| Error(format!("nft refused: {}", e.0)))?;
            if exists {
                k.tables.insert(router_netns.to_string(), table);
            } else {
                k.tables.remove(router_netns);
            }
            k.calls.push(format!("rules {router_netns}"));
            k.batches.push((router_netns.to_string(), ops.to_vec()));
            Ok(())
        })
    }

    fn flow_counters(&self, router_netns: &str) -> Result<FlowCounters> {
        self.with(|k| match k.tables.get(router_netns) {
            // Only sets the table holds can hold records.
            Some(table) => Ok(k
                .flows
                .get(router_netns)
                .map(|f| {
                    f.iter()
                        .filter(|(set, _)| table.sets.contains_key(*set))
                        .map(|(set, v)| (set.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default()),
            None => Err(Error(format!("{router_netns} has no table"))),
        })
    }
}
