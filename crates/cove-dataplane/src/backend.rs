//! The seam between the reconciler and the kernel. The reconciler decides
//! what to change; a backend only performs it. Namespaces, links,
//! addresses and routes are converged per object ("make this router, this
//! ENI, this route table so"); the nftables table is observed and changed
//! by typed operations, so the reconciler can diff it.

use cove_net::flowlog::{Counters, FlowKey};
use cove_net::overlay::OverlayPlan;
use cove_net::plan::{EniPlan, RegionPlan, RouterPlan};
use cove_net::ruleset::{Op, Ruleset};

/// A kernel operation that failed, with what the kernel or tool said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// What a data plane can do. Methods take `&self` so ENIs can be plumbed
/// side by side; each call is idempotent.
pub trait Backend: Sync {
    /// The namespaces of Cove instance `instance` that exist.
    fn namespaces(&self, instance: &str) -> Result<Vec<String>>;
    fn remove_namespace(&self, name: &str) -> Result<()>;
    /// The region network: its namespace, the simulated internet host and
    /// service addresses, and the routes back to each VPC's public addresses.
    fn region(&self, plan: &RegionPlan) -> Result<()>;
    /// The VPC router namespace with its local addresses, and its links to
    /// the region network (internet gateway, gateway endpoints).
    fn router(&self, plan: &RouterPlan, region_netns: &str) -> Result<()>;
    /// One ENI: its namespace, veth, address, default route and the
    /// router's host route to it.
    fn eni(&self, router_netns: &str, eni: &EniPlan) -> Result<()>;
    /// The router's route tables and policy rules.
    fn routes(&self, plan: &RouterPlan) -> Result<()>;
    /// The router's overlay link to the VPC's routers on other hosts
    /// (`cove_net::overlay`), made from this process's network namespace
    /// (the host's, whose underlay carries it); `None` removes it. `old`
    /// is what the router holds, when known: then only the entries that
    /// differ are changed.
    fn overlay(
        &self,
        router_netns: &str,
        vpc_id: &str,
        old: Option<&OverlayPlan>,
        new: Option<&OverlayPlan>,
    ) -> Result<()>;
    /// The router's nftables table as the kernel holds it (`None`: absent).
    fn observe_rules(&self, router_netns: &str) -> Result<Option<Ruleset>>;
    /// Performs `ops` on the router's table in one atomic transaction.
    fn apply_rules(&self, router_netns: &str, ops: &[Op]) -> Result<()>;
    /// The flow records the kernel keeps in the router's sets, per set:
    /// each 5-tuple with its packet and byte counters (flow logs).
    fn flow_counters(&self, router_netns: &str) -> Result<FlowCounters>;
}

/// Set name → the 5-tuples in it with their counters.
pub type FlowCounters = std::collections::BTreeMap<String, Vec<(FlowKey, Counters)>>;
