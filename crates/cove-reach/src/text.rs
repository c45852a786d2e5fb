//! The terminal rendering of an analysis (`cove reach`): the verdict, the
//! path hop by hop with what admitted the packet at each, and every
//! blocking setting with what to change.

use crate::walk::*;
use cove_model::protocol::Protocol as RuleProtocol;
use cove_model::vpc::SgPeer;
use std::fmt::Write;

fn ports(p: Option<(i64, i64)>) -> String {
    match p {
        Some((a, b)) if a == b => format!(" port {a}"),
        Some((a, b)) => format!(" ports {a}-{b}"),
        None => String::new(),
    }
}

fn protocol(p: RuleProtocol) -> String {
    match p {
        RuleProtocol::All => "all traffic".into(),
        other => other.to_string(),
    }
}

/// What admitted or changed the packet at a hop, in words.
pub fn hop_detail(h: &Hop) -> String {
    if let Some(r) = &h.sg_rule {
        let peer = match &r.peer {
            SgPeer::Cidr { cidr } => cidr.to_string(),
            SgPeer::PrefixList { id } => format!("prefix list {id}"),
            SgPeer::Group { group_id, .. } => format!("members of {group_id}"),
        };
        let way = if r.direction == "egress" {
            "to"
        } else {
            "from"
        };
        return format!(
            "{} rule {}: {}{} {way} {peer}",
            r.direction,
            r.rule_id,
            protocol(r.protocol),
            ports(r.ports)
        );
    }
    if let Some(r) = &h.acl_rule {
        let number = if r.number == 32767 {
            "*".to_string()
        } else {
            r.number.to_string()
        };
        return format!(
            "{} entry {number}: {} {}{} {} {}",
            if r.egress { "outbound" } else { "inbound" },
            if r.allow { "allow" } else { "deny" },
            protocol(r.protocol),
            ports(r.ports),
            if r.egress { "to" } else { "from" },
            r.cidr
        );
    }
    if let Some(r) = &h.route {
        let dest = r.destination();
        let target = crate::walk::target_id(&r.target);
        return format!("route {dest} -> {target} ({})", r.state);
    }
    if h.component.kind == Kind::RouteTable {
        return "no route matches".into();
    }
    if let (Some(i), Some(o)) = (&h.inbound, &h.outbound) {
        if i != o {
            return format!("translates {} to {}", packet_text(i), packet_text(o));
        }
    }
    h.subnet
        .clone()
        .map(|s| format!("in {s}"))
        .unwrap_or_default()
}

fn hops(out: &mut String, title: &str, hops: &[Hop]) {
    if hops.is_empty() {
        return;
    }
    let _ = writeln!(out, "{title}:");
    for (i, h) in hops.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:>2}. {:<18} {:<24} {}",
            i + 1,
            h.component.kind.label(),
            h.component.id,
            hop_detail(h)
        );
    }
}

/// The whole answer, as `cove reach` prints it.
pub fn render_text(from: &str, to: &str, a: &Analysis) -> String {
    let mut out = String::new();
    let verdict = if a.found {
        "REACHABLE"
    } else {
        "NOT REACHABLE"
    };
    let _ = writeln!(out, "{from} -> {to}: {verdict}");
    let _ = writeln!(out, "packet: {}", packet_text(&a.packet));
    hops(&mut out, "path", &a.forward);
    hops(&mut out, "return path", &a.ret);
    if !a.explanations.is_empty() {
        let _ = writeln!(
            out,
            "blocked ({} setting{} to change):",
            a.explanations.len(),
            if a.explanations.len() == 1 { "" } else { "s" }
        );
        for e in &a.explanations {
            let side = if e.on_return { " (reply)" } else { "" };
            let _ = writeln!(
                out,
                "  - {}{side} at {} {}: {}",
                e.code,
                e.component.kind.label(),
                e.component.id,
                e.fix
            );
        }
    }
    out
}
