//! `cove-reconcile-bench`: what one reconcile pass costs after one change,
//! by VPC size. A fixture VPC (a web ENI, two clients) is filled with 10 or
//! 10,000 other security-group rules; then, timed pass by pass: a pass with
//! nothing changed, one ingress rule authorized on the web ENI's group and
//! revoked again, and one client ENI moving between groups (a membership
//! change), each in a VPC alone and in one with an active peering
//! connection (whose ENI and group changes take the full path, since the
//! peer's router holds sets of its groups). With the null backend (which accepts every call and keeps
//! nothing) the figures are the reconciler's own work: finding the change,
//! planning, rendering, diffing; with `--kernel` (root) they include the
//! nftables transaction in a real router namespace.

use clap::Parser;
use cove_dataplane::backend::{Backend, FlowCounters, Result};
use cove_dataplane::linux::Linux;
use cove_dataplane::reconcile::Reconciler;
use cove_model::fixtures::*;
use cove_model::world::World;
use cove_net::plan::{EniPlan, RegionPlan, RouterPlan};
use cove_net::ruleset::{Op, Ruleset};
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Other rules in the VPC, comma separated.
    #[arg(long, default_value = "10,10000", value_delimiter = ',')]
    rules: Vec<usize>,
    /// Passes timed per kind of change.
    #[arg(long, default_value_t = 50)]
    passes: usize,
    /// Apply to the Linux kernel (root) instead of the in-memory backend.
    #[arg(long)]
    kernel: bool,
}

/// Accepts everything and keeps nothing: what is left is the reconciler's cost.
struct Null;

impl Backend for Null {
    fn namespaces(&self, _: &str) -> Result<Vec<String>> {
        Ok(vec![])
    }
    fn remove_namespace(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn region(&self, _: &RegionPlan) -> Result<()> {
        Ok(())
    }
    fn router(&self, _: &RouterPlan, _: &str) -> Result<()> {
        Ok(())
    }
    fn eni(&self, _: &str, _: &EniPlan) -> Result<()> {
        Ok(())
    }
    fn routes(&self, _: &RouterPlan) -> Result<()> {
        Ok(())
    }
    fn overlay(
        &self,
        _: &str,
        _: &str,
        _: Option<&cove_net::overlay::OverlayPlan>,
        _: Option<&cove_net::overlay::OverlayPlan>,
    ) -> Result<()> {
        Ok(())
    }
    fn observe_rules(&self, _: &str) -> Result<Option<Ruleset>> {
        Ok(None)
    }
    fn apply_rules(&self, _: &str, _: &[Op]) -> Result<()> {
        Ok(())
    }
    fn flow_counters(&self, _: &str) -> Result<FlowCounters> {
        Ok(FlowCounters::new())
    }
}

fn build(tag: &str, other_rules: usize, peered: bool) -> World {
    let mut w = web_and_clients(tag);
    if peered {
        let home = vpc_id(&w);
        let mut peer = (*w.vpcs[&home]).clone();
        peer.id = "vpc-peer".into();
        peer.cidr = net("10.9.0.0/16");
        w.vpcs.insert(peer.id.clone(), peer.into());
        let pcx = active_peering("pcx-bench", &home, "vpc-peer");
        w.vpc_peering_connections.insert(pcx.id.clone(), pcx.into());
    }
    let mut twin = group(
        "sg-twin",
        vec![],
        vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
    );
    twin.vpc_id = vpc_id(&w);
    w.security_groups.insert("sg-twin".into(), twin.into());
    let per_group = other_rules.min(50);
    add_filler_rules(&mut w, other_rules.div_ceil(per_group.max(1)), per_group);
    w
}

// why: p is a fraction in 0..=1, so the rounded index lies in 0..v.len().
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn timed<B: Backend>(r: &mut Reconciler<B>, w: &World) -> f64 {
    let t = Instant::now();
    r.reconcile(w).expect("reconcile pass");
    t.elapsed().as_secs_f64() * 1e3
}

fn measure<B: Backend>(
    backend: B,
    tag: &str,
    other_rules: usize,
    passes: usize,
    peered: bool,
) -> Vec<(String, f64, f64)> {
    let mut w = build(tag, other_rules, peered);
    let mut r = Reconciler::new(tag, backend);
    let first = timed(&mut r, &w);
    let mut idle = vec![];
    let mut rule_change = vec![];
    let mut membership = vec![];
    let client = eni_with_ip(&w, "10.0.2.4");
    for i in 0..passes {
        idle.push(timed(&mut r, &w));
        let web = std::sync::Arc::make_mut(w.security_groups.get_mut("sg-web").expect("web group"));
        if i % 2 == 0 {
            web.ingress.push(tcp_from_group(8080, "sg-clients"));
        } else {
            web.ingress.pop();
        }
        rule_change.push(timed(&mut r, &w));
        let eni = std::sync::Arc::make_mut(w.network_interfaces.get_mut(&client).expect("client"));
        eni.group_ids = vec![if i % 2 == 0 { "sg-twin" } else { "sg-clients" }.into()];
        membership.push(timed(&mut r, &w));
    }
    let _ = r.remove_all();
    let mut out = vec![("first pass (everything)".to_string(), first, first)];
    for (name, mut v) in [
        ("idle pass", idle),
        ("one SG rule added or removed", rule_change),
        ("one ENI changes group (same rules)", membership),
    ] {
        out.push((name.to_string(), pct(&mut v, 0.5), pct(&mut v, 0.99)));
    }
    out
}

fn main() {
    let args = Args::parse();
    let backend = if args.kernel {
        "Linux kernel (nft)"
    } else {
        "null"
    };
    println!(
        "reconcile pass after one change, {backend} backend, {} passes each\n",
        args.passes
    );
    println!("| other rules in the VPC | peered | change | p50 ms | p99 ms |");
    println!("| ---: | --- | --- | ---: | ---: |");
    for (i, &n) in args.rules.iter().enumerate() {
        for peered in [false, true] {
            let tag = format!("rb{:x}{i}{}", std::process::id() & 0xfff, u8::from(peered));
            let rows = if args.kernel {
                measure(Linux, &tag, n, args.passes, peered)
            } else {
                measure(Null, &tag, n, args.passes, peered)
            };
            let label = if peered { "yes" } else { "no" };
            for (name, p50, p99) in rows {
                println!("| {n} | {label} | {name} | {p50:.2} | {p99:.2} |");
            }
        }
    }
}
