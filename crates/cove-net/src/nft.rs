//! Renders a [`RouterPlan`] as the typed [`Ruleset`] of the router's table
//! `inet cove`: the member and prefix-list sets, per-ACL and per-ENI
//! chains, named verdict maps from each ENI's router link to its chains,
//! and the base chains that tie them together in the order
//! docs/dataplane.md gives. Every per-ENI fact lives in its own chain or in
//! one map element, so [`crate::ruleset::diff`] turns a change into
//! operations on what it touches; the base chains do not change as ENIs
//! come and go.

use crate::acl_compile;
use crate::naming;
use crate::plan::{AclRule, EniPlan, Match, Peer, Proto, RouterPlan};
use crate::ruleset::{Chain, Elem, Hook, Part, Rule, Ruleset, Set, SetSpec};
use cove_model::cidr::Cidr;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

pub const TABLE: &str = "cove";

/// Where a drop happens, which decides whose flow log records it: on the
/// way out of the source (its security group or its subnet's ACL: REJECT
/// on the source), or on the way in to the destination (REJECT on the
/// destination, and the packet did leave the source: ACCEPT there).
#[derive(Clone, Copy)]
enum DropSide {
    Out,
    In,
}

impl DropSide {
    /// The side of a chain that checks egress (leaving the source) or ingress.
    fn of(egress: bool) -> DropSide {
        if egress {
            DropSide::Out
        } else {
            DropSide::In
        }
    }

    fn chain(self) -> &'static str {
        match self {
            DropSide::Out => "deny_out",
            DropSide::In => "deny_in",
        }
    }
}

/// Named sets that hold one ENI's flow records: per 5-tuple, the kernel's
/// packet and byte counters (see docs/dataplane.md, "Flow logs").
pub fn accepted_set(eni: &str) -> String {
    format!("fa_{}", naming::short(eni))
}

pub fn rejected_set(eni: &str) -> String {
    format!("fr_{}", naming::short(eni))
}

/// How long an idle flow record stays in its set: longer than the largest
/// aggregation interval (600 s), so the collector always sees it again.
const FLOW_TIMEOUT_SECONDS: u64 = 1200;
const FLOW_SET_SIZE: u64 = 65536;

fn flow_key() -> Value {
    json!({"concat": [
        ip_field("saddr"),
        ip_field("daddr"),
        {"meta": {"key": "l4proto"}},
        {"payload": {"protocol": "th", "field": "sport"}},
        {"payload": {"protocol": "th", "field": "dport"}},
    ]})
}

/// A ruleset under construction.
struct Builder(Ruleset);

impl Builder {
    fn set(&mut self, name: &str, spec: SetSpec, elems: impl IntoIterator<Item = Elem>) {
        self.0.sets.insert(
            name.to_string(),
            Set {
                spec,
                elems: elems.into_iter().collect(),
            },
        );
    }

    /// Adds an element to a set or map already declared.
    fn elem(&mut self, set: &str, elem: Elem) {
        if let Some(set) = self.0.sets.get_mut(set) {
            set.elems.insert(elem);
        }
    }

    fn chain(&mut self, name: &str) {
        self.0.chains.entry(name.to_string()).or_default();
    }

    fn base(&mut self, name: &str, kind: &str, hook: &str, prio: i32, policy: &str) {
        self.0.chains.insert(
            name.to_string(),
            Chain {
                hook: Some(Hook {
                    kind: kind.into(),
                    hook: hook.into(),
                    prio,
                    policy: policy.into(),
                }),
                rules: vec![],
            },
        );
    }

    fn rule(&mut self, chain: &str, expr: Vec<Value>) {
        self.0
            .chains
            .entry(chain.to_string())
            .or_default()
            .rules
            .push(Rule::new(expr));
    }
}

fn jump(chain: impl Into<String>) -> Value {
    json!({"jump": {"target": chain.into()}})
}

/// `meta <key> vmap @<map>`: one lookup in a named verdict map.
fn vmap_named(key: &str, map: &str) -> Value {
    json!({"vmap": {"key": {"meta": {"key": key}}, "data": format!("@{map}")}})
}

/// An entry of a link → chain verdict map.
fn link_jump(e: &EniPlan, chain: String) -> Elem {
    Elem::Jump {
        key: e.router_link.clone(),
        chain,
    }
}

fn flow_chain(prefix: &str, eni: &str) -> String {
    format!("{prefix}_{}", naming::short(eni))
}

fn flow_spec() -> SetSpec {
    SetSpec {
        key: [
            "ipv4_addr",
            "ipv4_addr",
            "inet_proto",
            "inet_service",
            "inet_service",
        ]
        .map(String::from)
        .to_vec(),
        map: None,
        flags: vec!["timeout".into()],
        timeout: Some(FLOW_TIMEOUT_SECONDS),
        size: Some(FLOW_SET_SIZE),
        counter: true,
        dynamic: true,
    }
}

/// Whether the router counts flows at all: some ENI of the plan is covered.
/// The shared chains depend on it, so a change that flips it renders the
/// whole table again.
pub fn counting(plan: &RouterPlan) -> bool {
    plan.enis.iter().any(|e| plan.flow_enis.contains(&e.id))
}

/// The shared accept and deny chains, and (when some ENI is covered by a
/// flow log) the `fl_acc`/`fl_rej` maps from an ENI's router link to its
/// counting chains. Without flow logs the accept and deny chains only
/// accept and drop, so the forward path pays nothing for flow logging.
fn flow_accounting(b: &mut Builder, plan: &RouterPlan) {
    if counting(plan) {
        b.set(FLOW_ACCEPT_MAP, SetSpec::link_jumps(), []);
        b.set(FLOW_REJECT_MAP, SetSpec::link_jumps(), []);
    }
    b.chain("accept_flow");
    b.chain(DropSide::Out.chain());
    b.chain(DropSide::In.chain());
    if counting(plan) {
        b.rule("accept_flow", vec![vmap_named("iifname", FLOW_ACCEPT_MAP)]);
        b.rule("accept_flow", vec![vmap_named("oifname", FLOW_ACCEPT_MAP)]);
        b.rule(
            DropSide::Out.chain(),
            vec![vmap_named("iifname", FLOW_REJECT_MAP)],
        );
        b.rule(
            DropSide::In.chain(),
            vec![vmap_named("oifname", FLOW_REJECT_MAP)],
        );
        b.rule(
            DropSide::In.chain(),
            vec![vmap_named("iifname", FLOW_ACCEPT_MAP)],
        );
    }
    b.rule("accept_flow", vec![verdict("accept")]);
    b.rule(DropSide::Out.chain(), vec![verdict("drop")]);
    b.rule(DropSide::In.chain(), vec![verdict("drop")]);
}

/// One covered ENI's counting: two sets of flow records that the kernel
/// fills and that stay as long as the ENI is covered, whatever else
/// changes, so no record is lost to a rule change.
fn flow_counting(b: &mut Builder, e: &EniPlan) {
    for (set, chain, map) in [
        (
            accepted_set(&e.id),
            flow_chain("acct", &e.id),
            FLOW_ACCEPT_MAP,
        ),
        (
            rejected_set(&e.id),
            flow_chain("rejct", &e.id),
            FLOW_REJECT_MAP,
        ),
    ] {
        b.set(&set, flow_spec(), []);
        b.rule(
            &chain,
            vec![json!({"set": {"op": "update", "elem": flow_key(), "set": format!("@{set}")}})],
        );
        b.elem(map, link_jump(e, chain));
    }
}

fn deny(side: DropSide) -> Value {
    jump(side.chain())
}

/// Every accepted forward packet goes through here (flow logs count it).
fn accept_flow() -> Value {
    jump("accept_flow")
}

fn addr(c: &Cidr) -> Value {
    if c.prefix == 32 {
        json!(Ipv4Addr::from(c.base).to_string())
    } else {
        json!({"prefix": {"addr": Ipv4Addr::from(c.base).to_string(), "len": c.prefix}})
    }
}

fn eq(left: Value, right: Value) -> Value {
    json!({"match": {"op": "==", "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn ip_field(field: &str) -> Value {
    json!({"payload": {"protocol": "ip", "field": field}})
}

/// The expressions that match a rule's traffic and peer (`daddr` for egress rules).
fn match_exprs(m: &Match, peer_field: &str) -> Vec<Value> {
    let mut out = Vec::new();
    match &m.peer {
        Peer::Cidr(c) if c.prefix == 0 => {}
        Peer::Cidr(c) => out.push(eq(ip_field(peer_field), addr(c))),
        Peer::Set(s) => out.push(eq(ip_field(peer_field), json!(format!("@{s}")))),
    }
    if let Some(n) = m.proto.number() {
        out.push(eq(meta("l4proto"), json!(n)));
    }
    match m.proto {
        Proto::Tcp | Proto::Udp => {
            if let Some((lo, hi)) = m.ports {
                if (lo, hi) != (0, 65535) {
                    let right = if lo == hi {
                        json!(lo)
                    } else {
                        json!({"range": [lo, hi]})
                    };
                    out.push(eq(
                        json!({"payload": {"protocol": "th", "field": "dport"}}),
                        right,
                    ));
                }
            }
        }
        Proto::Icmp => {
            if let Some(t) = m.icmp_type {
                out.push(eq(
                    json!({"payload": {"protocol": "icmp", "field": "type"}}),
                    json!(t),
                ));
            }
            if let Some(c) = m.icmp_code {
                out.push(eq(
                    json!({"payload": {"protocol": "icmp", "field": "code"}}),
                    json!(c),
                ));
            }
        }
        _ => {}
    }
    out
}

fn verdict(v: &str) -> Value {
    json!({ v: null })
}

fn acl_chain_name(acl: &str, egress: bool) -> String {
    format!(
        "acl_{}_{}",
        if egress { "out" } else { "in" },
        naming::short(acl)
    )
}

fn subnet_chain_name(subnet: &str, egress: bool) -> String {
    format!(
        "subnet_{}_{}",
        if egress { "out" } else { "in" },
        naming::short(subnet)
    )
}

pub fn eni_chain_name(eni: &str, egress: bool) -> String {
    format!(
        "eni_{}_{}",
        if egress { "out" } else { "in" },
        naming::short(eni)
    )
}

/// Above this many set elements an ACL direction stays a chain of rules:
/// the compiled form can grow quadratically with adversarial entries
/// (see `acl_compile`), and a long chain is then the smaller of the two.
const ACL_SET_LIMIT: usize = 4096;

/// One ACL direction. Compiled into three interval sets of disjoint
/// allowed regions (by protocol family), so a packet costs a few lookups
/// whatever the entry count; a pathological ACL is walked entry by entry.
fn acl_rules(b: &mut Builder, name: &str, rules: &[AclRule], egress: bool) {
    b.chain(name);
    let peer = if egress { "daddr" } else { "saddr" };
    let side = DropSide::of(egress);
    let compiled = acl_compile::compile(rules);
    if compiled.len() > ACL_SET_LIMIT {
        for r in rules {
            let mut expr = match_exprs(&r.rule, peer);
            expr.push(if r.allow {
                verdict("return")
            } else {
                deny(side)
            });
            b.rule(name, expr);
        }
        b.rule(name, vec![deny(side)]);
        return;
    }
    let range = |lo: Ipv4Addr, hi: Ipv4Addr| Part::Addr(u32::from(lo), u32::from(hi));
    let num = |lo: u32, hi: u32| Part::Num(lo, hi);
    let sets = [
        (
            "p",
            vec!["ipv4_addr", "inet_proto", "inet_service"],
            compiled
                .ports
                .iter()
                .map(|r| {
                    vec![
                        range(r.addr.lo, r.addr.hi),
                        num(r.proto.into(), r.proto.into()),
                        num(r.ports.0.into(), r.ports.1.into()),
                    ]
                })
                .collect::<Vec<_>>(),
            vec![
                meta("l4proto"),
                json!({"payload": {"protocol": "th", "field": "dport"}}),
            ],
            json!({"set": [6, 17]}),
        ),
        (
            "i",
            vec!["ipv4_addr", "icmp_type", "icmp_code"],
            compiled
                .icmp
                .iter()
                .map(|r| {
                    vec![
                        range(r.addr.lo, r.addr.hi),
                        num(r.types.0.into(), r.types.1.into()),
                        num(r.codes.0.into(), r.codes.1.into()),
                    ]
                })
                .collect(),
            vec![
                json!({"payload": {"protocol": "icmp", "field": "type"}}),
                json!({"payload": {"protocol": "icmp", "field": "code"}}),
            ],
            json!(1),
        ),
        (
            "o",
            vec!["ipv4_addr", "inet_proto"],
            compiled
                .other
                .iter()
                .map(|r| {
                    vec![
                        range(r.addr.lo, r.addr.hi),
                        num(r.protos.0.into(), r.protos.1.into()),
                    ]
                })
                .collect(),
            vec![meta("l4proto")],
            Value::Null,
        ),
    ];
    for (kind, key, elems, fields, protos) in sets {
        let set = format!("{name}_{kind}");
        b.set(
            &set,
            SetSpec::ranges(&key),
            elems.into_iter().map(Elem::Ranges),
        );
        let mut lookup_key = vec![ip_field(peer)];
        lookup_key.extend(fields);
        let lookup = json!({"match": {"op": "==", "left": {"concat": lookup_key}, "right": format!("@{set}")}});
        if protos.is_null() {
            b.rule(name, vec![lookup, verdict("return")]);
        } else {
            // Each protocol family is decided by its own set alone.
            let family = eq(meta("l4proto"), protos);
            b.rule(name, vec![family.clone(), lookup, verdict("return")]);
            b.rule(name, vec![family, deny(side)]);
        }
    }
    b.rule(name, vec![deny(side)]);
}

fn established() -> Value {
    json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}})
}

/// The names of the verdict maps that dispatch on an ENI's router link.
const SPOOF_MAP: &str = "spoof";
const SG_OUT_MAP: &str = "sg_out";
const SG_IN_MAP: &str = "sg_in";
const ACL_OUT_MAP: &str = "acl_out";
const ACL_IN_MAP: &str = "acl_in";
const FLOW_ACCEPT_MAP: &str = "fl_acc";
const FLOW_REJECT_MAP: &str = "fl_rej";

/// Every map that holds an element keyed by an ENI's router link.
pub const LINK_MAPS: [&str; 7] = [
    SPOOF_MAP,
    SG_OUT_MAP,
    SG_IN_MAP,
    ACL_OUT_MAP,
    ACL_IN_MAP,
    FLOW_ACCEPT_MAP,
    FLOW_REJECT_MAP,
];

fn spoof_chain(eni: &str) -> String {
    format!("src_{}", naming::short(eni))
}

/// The chains and sets that belong to one ENI alone (whether or not its
/// plan has them all).
pub fn eni_owned(eni: &str) -> (Vec<String>, Vec<String>) {
    (
        vec![
            eni_chain_name(eni, true),
            eni_chain_name(eni, false),
            spoof_chain(eni),
            flow_chain("acct", eni),
            flow_chain("rejct", eni),
        ],
        vec![accepted_set(eni), rejected_set(eni)],
    )
}

/// One ENI's part of the table: its own chains and sets, and its elements
/// of the link maps (declared with only those elements).
pub fn eni_part(plan: &RouterPlan, eni: &EniPlan) -> Ruleset {
    let mut b = Builder(Ruleset::default());
    declare_link_maps(&mut b, plan);
    add_eni(&mut b, plan, eni);
    b.0
}

fn declare_link_maps(b: &mut Builder, plan: &RouterPlan) {
    for map in [SPOOF_MAP, SG_OUT_MAP, SG_IN_MAP, ACL_OUT_MAP, ACL_IN_MAP] {
        b.set(map, SetSpec::link_jumps(), []);
    }
    if counting(plan) {
        b.set(FLOW_ACCEPT_MAP, SetSpec::link_jumps(), []);
        b.set(FLOW_REJECT_MAP, SetSpec::link_jumps(), []);
    }
}

/// Everything the table holds for one ENI.
fn add_eni(b: &mut Builder, plan: &RouterPlan, eni: &EniPlan) {
    if plan.flow_enis.contains(&eni.id) {
        flow_counting(b, eni);
    }
    // Security groups: the ENI's unioned rules; a match returns, the end drops.
    if eni.firewalled {
        for egress in [true, false] {
            let name = eni_chain_name(&eni.id, egress);
            let (rules, peer) = if egress {
                (&eni.egress, "daddr")
            } else {
                (&eni.ingress, "saddr")
            };
            b.chain(&name);
            for m in rules {
                let mut expr = match_exprs(m, peer);
                expr.push(verdict("return"));
                b.rule(&name, expr);
            }
            b.rule(&name, vec![deny(DropSide::of(egress))]);
        }
        b.elem(SG_OUT_MAP, link_jump(eni, eni_chain_name(&eni.id, true)));
        b.elem(SG_IN_MAP, link_jump(eni, eni_chain_name(&eni.id, false)));
    }
    // Anti-spoofing: a process inside an ENI's namespace may be root there,
    // so the router accepts from each ENI's veth only that ENI's address.
    if eni.source_check {
        let name = spoof_chain(&eni.id);
        b.rule(
            &name,
            vec![
                eq(ip_field("saddr"), json!(eni.ip.to_string())),
                verdict("return"),
            ],
        );
        b.rule(&name, vec![verdict("drop")]);
        b.elem(SPOOF_MAP, link_jump(eni, name));
    }
    let has_acl = plan
        .subnets
        .get(&eni.subnet_id)
        .is_some_and(|(_, a)| plan.acls.contains_key(a));
    if has_acl {
        b.elem(
            ACL_OUT_MAP,
            link_jump(eni, subnet_chain_name(&eni.subnet_id, true)),
        );
        b.elem(
            ACL_IN_MAP,
            link_jump(eni, subnet_chain_name(&eni.subnet_id, false)),
        );
    }
}

/// The whole desired table of one router namespace: the shared part, then
/// each ENI's part.
pub fn render(plan: &RouterPlan) -> Ruleset {
    let mut b = Builder(Ruleset::default());
    for (name, cidrs) in &plan.sets {
        b.set(
            name,
            SetSpec::addresses(),
            cidrs.iter().copied().map(Elem::Addr),
        );
    }
    declare_link_maps(&mut b, plan);
    flow_accounting(&mut b, plan);

    // Network ACLs, one chain per ACL and direction, entered through a
    // per-subnet chain that first lets traffic within the subnet pass.
    for acl in plan.acls.values() {
        acl_rules(&mut b, &acl_chain_name(&acl.id, true), &acl.egress, true);
        acl_rules(&mut b, &acl_chain_name(&acl.id, false), &acl.ingress, false);
    }
    for (subnet, (cidr, acl)) in &plan.subnets {
        if !plan.acls.contains_key(acl) {
            continue;
        }
        for egress in [true, false] {
            let name = subnet_chain_name(subnet, egress);
            let same_subnet = if egress { "daddr" } else { "saddr" };
            b.rule(
                &name,
                vec![eq(ip_field(same_subnet), addr(cidr)), verdict("return")],
            );
            b.rule(&name, vec![jump(acl_chain_name(acl, egress))]);
        }
    }
    for eni in &plan.enis {
        add_eni(&mut b, plan, eni);
    }

    // The router itself answers only its gateway addresses (ICMP) and the VPC
    // resolver (DNS); nothing inside a VPC reaches anything else of it.
    b.base("input", "filter", "input", 0, "drop");
    b.rule(
        "input",
        vec![eq(meta("iifname"), json!("lo")), verdict("accept")],
    );
    // A peered VPC reaches this VPC's ENIs, not its router or resolver.
    for p in &plan.peerings {
        b.rule(
            "input",
            vec![
                eq(meta("iifname"), json!(p.link.router_link)),
                verdict("drop"),
            ],
        );
    }
    b.rule("input", vec![vmap_named("iifname", SPOOF_MAP)]);
    b.rule("input", vec![established(), verdict("accept")]);
    b.rule(
        "input",
        vec![eq(meta("l4proto"), json!(1)), verdict("accept")],
    );
    for proto in [6, 17] {
        b.rule(
            "input",
            vec![
                eq(ip_field("daddr"), json!(plan.dns.to_string())),
                eq(meta("l4proto"), json!(proto)),
                eq(
                    json!({"payload": {"protocol": "th", "field": "dport"}}),
                    json!(53),
                ),
                verdict("accept"),
            ],
        );
    }

    // The forward chain: anti-spoofing, ACLs (stateless, before conntrack), then
    // established traffic, then the groups of the source and destination ENIs.
    b.base("forward", "filter", "forward", 0, "drop");
    b.rule("forward", vec![vmap_named("iifname", SPOOF_MAP)]);
    b.base("prerouting", "nat", "prerouting", -100, "accept");
    b.base("postrouting", "nat", "postrouting", 100, "accept");
    for e in &plan.endpoints {
        // A gateway endpoint carries its service's prefix list and nothing
        // else: not the region network's other addresses (the link's own
        // far end among them), which the router's connected route would
        // otherwise reach.
        let mut carries_only = vec![eq(meta("oifname"), json!(e.link.router_link))];
        if let Some(set) = &e.prefix_list_set {
            carries_only.push(json!({"match": {"op": "!=", "left": ip_field("daddr"), "right": format!("@{set}")}}));
        }
        carries_only.push(verdict("drop"));
        b.rule("forward", carries_only);
        // The service tells endpoints apart by this source address.
        b.rule(
            "postrouting",
            vec![
                eq(meta("oifname"), json!(e.link.router_link)),
                json!({"snat": {"family": "ip", "addr": e.link.router_ip.to_string()}}),
            ],
        );
    }
    if let Some(igw) = &plan.igw {
        // As on AWS: through an internet gateway only addresses with a public
        // mapping get out; a private address alone gets no internet.
        let sources: BTreeSet<Elem> = plan
            .public_ips
            .iter()
            .map(|(private, _)| {
                Elem::Addr(Cidr {
                    base: u32::from(*private),
                    prefix: 32,
                })
            })
            .collect();
        b.set("public_sources", SetSpec::addresses(), sources);
        b.rule(
            "forward",
            vec![
                eq(meta("oifname"), json!(igw.router_link)),
                json!({"match": {"op": "!=", "left": ip_field("saddr"), "right": "@public_sources"}}),
                deny(DropSide::In),
            ],
        );
        for (private, public) in &plan.public_ips {
            b.rule(
                "prerouting",
                vec![
                    eq(meta("iifname"), json!(igw.router_link)),
                    eq(ip_field("daddr"), json!(public.to_string())),
                    json!({"dnat": {"family": "ip", "addr": private.to_string()}}),
                ],
            );
            b.rule(
                "postrouting",
                vec![
                    eq(meta("oifname"), json!(igw.router_link)),
                    eq(ip_field("saddr"), json!(private.to_string())),
                    json!({"snat": {"family": "ip", "addr": public.to_string()}}),
                ],
            );
        }
    }
    // A peering connection carries traffic between its two VPCs' ENIs and
    // nothing else: what comes in over it never leaves through a gateway,
    // an endpoint or another peering (no transitive or edge-to-edge
    // routing, as on AWS), whatever the routes say.
    let outside: Vec<&str> = plan
        .igw
        .iter()
        .map(|l| l.router_link.as_str())
        .chain(plan.endpoints.iter().map(|e| e.link.router_link.as_str()))
        .chain(plan.peerings.iter().map(|p| p.link.router_link.as_str()))
        .collect();
    for p in &plan.peerings {
        for link in outside.iter().filter(|l| **l != p.link.router_link) {
            b.rule(
                "forward",
                vec![
                    eq(meta("iifname"), json!(p.link.router_link)),
                    eq(meta("oifname"), json!(link)),
                    verdict("drop"),
                ],
            );
        }
    }
    b.rule("forward", vec![vmap_named("iifname", ACL_OUT_MAP)]);
    b.rule("forward", vec![vmap_named("oifname", ACL_IN_MAP)]);
    b.rule("forward", vec![established(), accept_flow()]);
    b.rule("forward", vec![vmap_named("iifname", SG_OUT_MAP)]);
    b.rule("forward", vec![vmap_named("oifname", SG_IN_MAP)]);
    b.rule("forward", vec![accept_flow()]);
    b.0
}
