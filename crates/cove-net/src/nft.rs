//! Renders a [`RouterPlan`] as an nftables JSON ruleset (libnftables-json,
//! applied with `nft -j -f -` inside the router namespace): table
//! `inet cove` with the member and prefix-list sets, per-ACL and per-ENI
//! chains, and the forward chain that ties them together in the order
//! docs/dataplane.md gives. The whole table is replaced in one atomic batch.

use crate::naming;
use crate::plan::{AclRule, Match, Peer, Proto, RouterPlan};
use cove_model::cidr::Cidr;
use serde_json::{json, Value};
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

fn vmap_named(key: &str, map: &str) -> Value {
    json!({"vmap": {"key": {"meta": {"key": key}}, "data": format!("@{map}")}})
}

/// Sets, per-ENI counting chains, the `fl_acc`/`fl_rej` maps from an ENI's
/// router link to them, and the shared accept and deny chains. Without
/// flow logs the accept and deny chains only accept and drop, so the
/// forward path pays nothing for flow logging.
fn flow_accounting(out: &mut Vec<Value>, plan: &RouterPlan) {
    let flow: Vec<&crate::plan::EniPlan> = plan
        .enis
        .iter()
        .filter(|e| plan.flow_enis.contains(&e.id))
        .collect();
    let counting = !flow.is_empty();
    if counting {
        for e in &flow {
            for (set, chain) in [
                (
                    accepted_set(&e.id),
                    format!("acct_{}", naming::short(&e.id)),
                ),
                (
                    rejected_set(&e.id),
                    format!("rejct_{}", naming::short(&e.id)),
                ),
            ] {
                out.push(obj(
                    "set",
                    json!({"family": "inet", "table": TABLE, "name": set,
                        "type": ["ipv4_addr", "ipv4_addr", "inet_proto", "inet_service", "inet_service"],
                        "flags": ["timeout"], "timeout": FLOW_TIMEOUT_SECONDS,
                        "size": FLOW_SET_SIZE, "stmt": [{"counter": null}]}),
                ));
                out.push(chain_decl(&chain));
                out.push(rule(
                    &chain,
                    vec![json!({"set": {"op": "update", "elem": flow_key(), "set": format!("@{set}")}})],
                ));
            }
        }
        for (map, prefix) in [("fl_acc", "acct"), ("fl_rej", "rejct")] {
            let elems: Vec<Value> = flow
                .iter()
                .map(|e| json!([e.router_link, {"jump": {"target": format!("{prefix}_{}", naming::short(&e.id))}}]))
                .collect();
            out.push(obj(
                "map",
                json!({"family": "inet", "table": TABLE, "name": map, "type": "ifname", "map": "verdict", "elem": elems}),
            ));
        }
    }
    out.push(chain_decl("accept_flow"));
    out.push(chain_decl(DropSide::Out.chain()));
    out.push(chain_decl(DropSide::In.chain()));
    if counting {
        out.push(rule("accept_flow", vec![vmap_named("iifname", "fl_acc")]));
        out.push(rule("accept_flow", vec![vmap_named("oifname", "fl_acc")]));
        out.push(rule(
            DropSide::Out.chain(),
            vec![vmap_named("iifname", "fl_rej")],
        ));
        out.push(rule(
            DropSide::In.chain(),
            vec![vmap_named("oifname", "fl_rej")],
        ));
        out.push(rule(
            DropSide::In.chain(),
            vec![vmap_named("iifname", "fl_acc")],
        ));
    }
    out.push(rule("accept_flow", vec![verdict("accept")]));
    out.push(rule(DropSide::Out.chain(), vec![verdict("drop")]));
    out.push(rule(DropSide::In.chain(), vec![verdict("drop")]));
}

fn deny(side: DropSide) -> Value {
    json!({"jump": {"target": side.chain()}})
}

/// Every accepted forward packet goes through here (flow logs count it).
fn accept_flow() -> Value {
    json!({"jump": {"target": "accept_flow"}})
}

fn obj(kind: &str, body: Value) -> Value {
    json!({ "add": { kind: body } })
}

fn chain_decl(name: &str) -> Value {
    obj(
        "chain",
        json!({"family": "inet", "table": TABLE, "name": name}),
    )
}

fn rule(chain: &str, expr: Vec<Value>) -> Value {
    obj(
        "rule",
        json!({"family": "inet", "table": TABLE, "chain": chain, "expr": expr}),
    )
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
        out.push(eq(json!({"meta": {"key": "l4proto"}}), json!(n)));
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

fn eni_chain_name(eni: &str, egress: bool) -> String {
    format!(
        "eni_{}_{}",
        if egress { "out" } else { "in" },
        naming::short(eni)
    )
}

fn acl_rules(out: &mut Vec<Value>, name: &str, rules: &[AclRule], egress: bool) {
    out.push(chain_decl(name));
    let peer = if egress { "daddr" } else { "saddr" };
    let side = DropSide::of(egress);
    for r in rules {
        let mut expr = match_exprs(&r.rule, peer);
        expr.push(if r.allow {
            verdict("return")
        } else {
            deny(side)
        });
        out.push(rule(name, expr));
    }
    out.push(rule(name, vec![deny(side)]));
}

/// The whole ruleset for one router namespace, replacing any previous `inet cove` table atomically.
pub fn render(plan: &RouterPlan) -> Value {
    let mut out = vec![
        obj("table", json!({"family": "inet", "name": TABLE})),
        json!({"delete": {"table": {"family": "inet", "name": TABLE}}}),
        obj("table", json!({"family": "inet", "name": TABLE})),
    ];
    for (name, cidrs) in &plan.sets {
        let mut set = json!({"family": "inet", "table": TABLE, "name": name, "type": "ipv4_addr", "flags": ["interval"]});
        if !cidrs.is_empty() {
            set["elem"] = Value::Array(cidrs.iter().map(addr).collect());
        }
        out.push(obj("set", set));
    }

    flow_accounting(&mut out, plan);

    // Network ACLs, one chain per ACL and direction, entered through a
    // per-subnet chain that first lets traffic within the subnet pass.
    for acl in plan.acls.values() {
        acl_rules(&mut out, &acl_chain_name(&acl.id, true), &acl.egress, true);
        acl_rules(
            &mut out,
            &acl_chain_name(&acl.id, false),
            &acl.ingress,
            false,
        );
    }
    for (subnet, (cidr, acl)) in &plan.subnets {
        if !plan.acls.contains_key(acl) {
            continue;
        }
        for egress in [true, false] {
            let name = subnet_chain_name(subnet, egress);
            out.push(chain_decl(&name));
            let same_subnet = if egress { "daddr" } else { "saddr" };
            out.push(rule(
                &name,
                vec![eq(ip_field(same_subnet), addr(cidr)), verdict("return")],
            ));
            out.push(rule(
                &name,
                vec![json!({"jump": {"target": acl_chain_name(acl, egress)}})],
            ));
        }
    }

    // Security groups: each ENI's unioned rules; a match returns, the end drops.
    for eni in plan.enis.iter().filter(|e| e.firewalled) {
        for egress in [true, false] {
            let name = eni_chain_name(&eni.id, egress);
            out.push(chain_decl(&name));
            let (rules, peer) = if egress {
                (&eni.egress, "daddr")
            } else {
                (&eni.ingress, "saddr")
            };
            for m in rules {
                let mut expr = match_exprs(m, peer);
                expr.push(verdict("return"));
                out.push(rule(&name, expr));
            }
            let side = DropSide::of(egress);
            out.push(rule(&name, vec![deny(side)]));
        }
    }

    // Anti-spoofing: a process inside an ENI's namespace may be root there,
    // so the router accepts from each ENI's veth only that ENI's address.
    for eni in plan.enis.iter().filter(|e| e.source_check) {
        let name = format!("src_{}", naming::short(&eni.id));
        out.push(chain_decl(&name));
        out.push(rule(
            &name,
            vec![
                eq(ip_field("saddr"), json!(eni.ip.to_string())),
                verdict("return"),
            ],
        ));
        out.push(rule(&name, vec![verdict("drop")]));
    }
    let spoof_map: Vec<Value> = plan
        .enis
        .iter()
        .filter(|e| e.source_check)
        .map(|e| json!([e.router_link, {"jump": {"target": format!("src_{}", naming::short(&e.id))}}]))
        .collect();

    // The router itself answers only its gateway addresses (ICMP) and the VPC
    // resolver (DNS); nothing inside a VPC reaches anything else of it.
    out.push(obj(
        "chain",
        json!({"family": "inet", "table": TABLE, "name": "input", "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}),
    ));
    out.push(rule(
        "input",
        vec![
            eq(json!({"meta": {"key": "iifname"}}), json!("lo")),
            verdict("accept"),
        ],
    ));
    if !spoof_map.is_empty() {
        out.push(rule("input", vec![json!({"vmap": {"key": {"meta": {"key": "iifname"}}, "data": {"set": spoof_map.clone()}}})]));
    }
    out.push(rule(
        "input",
        vec![json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}), verdict("accept")],
    ));
    out.push(rule(
        "input",
        vec![
            eq(json!({"meta": {"key": "l4proto"}}), json!(1)),
            verdict("accept"),
        ],
    ));
    for proto in [6, 17] {
        out.push(rule(
            "input",
            vec![
                eq(ip_field("daddr"), json!(plan.dns.to_string())),
                eq(json!({"meta": {"key": "l4proto"}}), json!(proto)),
                eq(
                    json!({"payload": {"protocol": "th", "field": "dport"}}),
                    json!(53),
                ),
                verdict("accept"),
            ],
        ));
    }

    // The forward chain: anti-spoofing, ACLs (stateless, before conntrack), then
    // established traffic, then the groups of the source and destination ENIs.
    out.push(obj(
        "chain",
        json!({"family": "inet", "table": TABLE, "name": "forward", "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}),
    ));
    let link_map = |egress: bool| -> Vec<Value> {
        plan.enis
            .iter()
            .filter(|e| e.firewalled)
            .map(|e| json!([e.router_link, {"jump": {"target": eni_chain_name(&e.id, egress)}}]))
            .collect()
    };
    let vmap = |key: &str, entries: Vec<Value>| json!({"vmap": {"key": {"meta": {"key": key}}, "data": {"set": entries}}});
    let subnet_of = |e: &crate::plan::EniPlan| e.subnet_id.clone();
    let has_acl = |e: &crate::plan::EniPlan| {
        plan.subnets
            .get(&e.subnet_id)
            .is_some_and(|(_, a)| plan.acls.contains_key(a))
    };
    let acl_out: Vec<Value> = plan
        .enis
        .iter()
        .filter(|e| has_acl(e))
        .map(|e| json!([e.router_link, {"jump": {"target": subnet_chain_name(&subnet_of(e), true)}}]))
        .collect();
    let acl_in: Vec<Value> = plan
        .enis
        .iter()
        .filter(|e| has_acl(e))
        .map(|e| json!([e.router_link, {"jump": {"target": subnet_chain_name(&subnet_of(e), false)}}]))
        .collect();
    if !spoof_map.is_empty() {
        out.push(rule("forward", vec![vmap("iifname", spoof_map)]));
    }
    if plan.igw.is_some() || !plan.endpoints.is_empty() {
        out.push(obj(
            "chain",
            json!({"family": "inet", "table": TABLE, "name": "prerouting", "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}),
        ));
        out.push(obj(
            "chain",
            json!({"family": "inet", "table": TABLE, "name": "postrouting", "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}),
        ));
    }
    for e in &plan.endpoints {
        // The service tells endpoints apart by this source address.
        out.push(rule(
            "postrouting",
            vec![
                eq(
                    json!({"meta": {"key": "oifname"}}),
                    json!(e.link.router_link),
                ),
                json!({"snat": {"family": "ip", "addr": e.link.router_ip.to_string()}}),
            ],
        ));
    }
    if let Some(igw) = &plan.igw {
        // As on AWS: through an internet gateway only addresses with a public
        // mapping get out; a private address alone gets no internet.
        let mut set = json!({"family": "inet", "table": TABLE, "name": "public_sources", "type": "ipv4_addr"});
        if !plan.public_ips.is_empty() {
            set["elem"] = Value::Array(
                plan.public_ips
                    .iter()
                    .map(|(private, _)| json!(private.to_string()))
                    .collect(),
            );
        }
        out.push(obj("set", set));
        out.push(rule(
            "forward",
            vec![
                eq(json!({"meta": {"key": "oifname"}}), json!(igw.router_link)),
                json!({"match": {"op": "!=", "left": ip_field("saddr"), "right": "@public_sources"}}),
                deny(DropSide::In),
            ],
        ));
        for (private, public) in &plan.public_ips {
            out.push(rule(
                "prerouting",
                vec![
                    eq(json!({"meta": {"key": "iifname"}}), json!(igw.router_link)),
                    eq(ip_field("daddr"), json!(public.to_string())),
                    json!({"dnat": {"family": "ip", "addr": private.to_string()}}),
                ],
            ));
            out.push(rule(
                "postrouting",
                vec![
                    eq(json!({"meta": {"key": "oifname"}}), json!(igw.router_link)),
                    eq(ip_field("saddr"), json!(private.to_string())),
                    json!({"snat": {"family": "ip", "addr": public.to_string()}}),
                ],
            ));
        }
    }
    if !acl_out.is_empty() {
        out.push(rule("forward", vec![vmap("iifname", acl_out)]));
        out.push(rule("forward", vec![vmap("oifname", acl_in)]));
    }
    out.push(rule(
        "forward",
        vec![json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}), accept_flow()],
    ));
    if plan.enis.iter().any(|e| e.firewalled) {
        out.push(rule("forward", vec![vmap("iifname", link_map(true))]));
        out.push(rule("forward", vec![vmap("oifname", link_map(false))]));
    }
    out.push(rule("forward", vec![accept_flow()]));
    json!({ "nftables": out })
}
