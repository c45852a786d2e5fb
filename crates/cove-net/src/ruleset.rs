//! nftables as typed data: a [`Ruleset`] is one table's sets, maps and
//! chains; [`diff`] turns "what the kernel holds" and "what the plan wants"
//! into the few [`Op`]s that make one into the other, in an order the
//! kernel accepts inside one atomic transaction; [`Ruleset::apply`] performs
//! those operations on the model itself (the fake backend, and the proof
//! that a diff is complete); [`batch`] renders them as libnftables JSON and
//! [`observe`] reads a table back from `nft -j list table`.
//!
//! Why: replacing the whole table on every change made a rule change cost
//! as much as the VPC and emptied the flow-log counter sets. With a diff, an
//! SG rule change rewrites the chains of the ENIs it applies to, a
//! membership change adds or deletes one set element, and sets that the
//! kernel fills (flow records) are never touched while they are wanted.
//!
//! Rules are identified by a hash of their expressions, kept in the rule's
//! comment, so a table read back after a restart compares with the plan
//! without parsing nftables' own rendering of each expression.

use cove_model::cidr::Cidr;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

pub const FAMILY: &str = "inet";

/// One part of a concatenated interval key: an inclusive range of addresses or of numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    Addr(u32, u32),
    Num(u32, u32),
}

/// One element of a set or map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Elem {
    /// An address or prefix in an address set.
    Addr(Cidr),
    /// A verdict-map entry: an interface name, and the chain it jumps to.
    Jump { key: String, chain: String },
    /// A key of several ranges (compiled network ACLs).
    Ranges(Vec<Part>),
    /// An element read back from the kernel in a form no plan has; a set
    /// holding one is emptied and refilled whole.
    Unreadable,
}

/// How a set is declared. Two declarations that differ force the set to be made anew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    /// nftables type names, one per part of the key.
    pub key: Vec<String>,
    /// `Some("verdict")` for a verdict map.
    pub map: Option<String>,
    pub flags: Vec<String>,
    pub timeout: Option<u64>,
    pub size: Option<u64>,
    /// Each element counts its packets and bytes.
    pub counter: bool,
    /// The kernel fills it (flow records): its elements are not the plan's business.
    pub dynamic: bool,
}

impl SetSpec {
    /// An address set with prefixes (security-group members, prefix lists).
    pub fn addresses() -> SetSpec {
        SetSpec {
            key: vec!["ipv4_addr".into()],
            map: None,
            flags: vec!["interval".into()],
            timeout: None,
            size: None,
            counter: false,
            dynamic: false,
        }
    }

    /// A map from an interface name to a chain to jump to.
    pub fn link_jumps() -> SetSpec {
        SetSpec {
            key: vec!["ifname".into()],
            map: Some("verdict".into()),
            flags: vec![],
            ..SetSpec::addresses()
        }
    }

    /// A set of concatenated ranges.
    pub fn ranges(key: &[&str]) -> SetSpec {
        SetSpec {
            key: key.iter().map(|k| k.to_string()).collect(),
            flags: vec!["interval".into()],
            ..SetSpec::addresses()
        }
    }

    /// Whether an observed declaration is this one (the parts `nft` lists back).
    fn same_shape(&self, other: &SetSpec) -> bool {
        let flags = |s: &SetSpec| s.flags.iter().cloned().collect::<BTreeSet<_>>();
        self.key == other.key && self.map == other.map && flags(self) == flags(other)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub spec: SetSpec,
    pub elems: BTreeSet<Elem>,
}

/// A base chain's attachment to a netfilter hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub kind: String,
    pub hook: String,
    pub prio: i32,
    pub policy: String,
}

/// One rule: its expressions in libnftables' JSON schema, and their hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub expr: Vec<Value>,
}

impl Rule {
    pub fn new(expr: Vec<Value>) -> Rule {
        let text = serde_json::to_string(&expr).expect("JSON values serialize");
        Rule {
            id: format!("{:016x}", cove_model::ids::fnv64(&text)),
            expr,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chain {
    pub hook: Option<Hook>,
    pub rules: Vec<Rule>,
}

impl Chain {
    fn rule_ids(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.id.as_str()).collect()
    }
}

/// One nftables table of family `inet`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    pub sets: BTreeMap<String, Set>,
    pub chains: BTreeMap<String, Chain>,
}

/// Whether a named set is a plain set or a map. nftables keeps the two
/// apart by name: `flush set` or `delete set` of a map is refused as if
/// nothing had that name (ENOENT), and the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    Set,
    Map,
}

impl SetKind {
    pub fn of(spec: &SetSpec) -> SetKind {
        match spec.map {
            Some(_) => SetKind::Map,
            None => SetKind::Set,
        }
    }

    /// The word nftables names it by.
    pub fn word(self) -> &'static str {
        match self {
            SetKind::Set => "set",
            SetKind::Map => "map",
        }
    }
}

/// One step of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    AddTable,
    DeleteTable,
    AddSet(String, SetSpec),
    DeleteSet(String, SetKind),
    FlushSet(String, SetKind),
    AddElems(String, Vec<Elem>),
    DeleteElems(String, Vec<Elem>),
    AddChain(String, Option<Hook>),
    DeleteChain(String),
    FlushChain(String),
    AddRule(String, Rule),
}

/// What a list of operations touches, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpCounts {
    pub chains_written: usize,
    pub rules_added: usize,
    pub elems_changed: usize,
    pub other: usize,
}

impl std::ops::AddAssign for OpCounts {
    fn add_assign(&mut self, o: OpCounts) {
        self.chains_written += o.chains_written;
        self.rules_added += o.rules_added;
        self.elems_changed += o.elems_changed;
        self.other += o.other;
    }
}

pub fn count(ops: &[Op]) -> OpCounts {
    let mut c = OpCounts::default();
    for op in ops {
        match op {
            Op::FlushChain(_) => c.chains_written += 1,
            Op::AddRule(..) => c.rules_added += 1,
            Op::AddElems(_, e) | Op::DeleteElems(_, e) => c.elems_changed += e.len(),
            _ => c.other += 1,
        }
    }
    c
}

/// The operations that turn `observed` (`None`: no table) into `desired`.
///
/// Order inside the one transaction: declarations first (so rules and map
/// elements can name new chains and sets), then element changes, then the
/// rewritten chains, then what is no longer wanted (flushed before it is
/// deleted, so nothing still refers to it).
pub fn diff(observed: Option<&Ruleset>, desired: &Ruleset) -> Vec<Op> {
    let Some(observed) = observed else {
        let mut ops = vec![Op::AddTable];
        ops.extend(create_all(desired));
        return ops;
    };
    // A set whose declaration changed cannot be altered in place; such a
    // change only comes with a new Cove version, so the table is rebuilt.
    let reshaped = desired.sets.iter().any(|(name, want)| {
        observed
            .sets
            .get(name)
            .is_some_and(|have| !have.spec.same_shape(&want.spec))
    }) || desired.chains.iter().any(|(name, want)| {
        observed
            .chains
            .get(name)
            .is_some_and(|have| have.hook != want.hook)
    });
    if reshaped {
        let mut ops = vec![Op::AddTable, Op::DeleteTable, Op::AddTable];
        ops.extend(create_all(desired));
        return ops;
    }

    let mut ops = Vec::new();
    for (name, set) in &desired.sets {
        if !observed.sets.contains_key(name) {
            ops.push(Op::AddSet(name.clone(), set.spec.clone()));
        }
    }
    for (name, chain) in &desired.chains {
        if !observed.chains.contains_key(name) {
            ops.push(Op::AddChain(name.clone(), chain.hook.clone()));
        }
    }
    for (name, set) in desired.sets.iter().filter(|(_, s)| !s.spec.dynamic) {
        match observed.sets.get(name) {
            Some(have) if have.elems.contains(&Elem::Unreadable) => {
                ops.push(Op::FlushSet(name.clone(), SetKind::of(&have.spec)));
                if !set.elems.is_empty() {
                    ops.push(Op::AddElems(
                        name.clone(),
                        set.elems.iter().cloned().collect(),
                    ));
                }
            }
            Some(have) => {
                let gone: Vec<Elem> = have.elems.difference(&set.elems).cloned().collect();
                let new: Vec<Elem> = set.elems.difference(&have.elems).cloned().collect();
                if !gone.is_empty() {
                    ops.push(Op::DeleteElems(name.clone(), gone));
                }
                if !new.is_empty() {
                    ops.push(Op::AddElems(name.clone(), new));
                }
            }
            None if !set.elems.is_empty() => {
                ops.push(Op::AddElems(
                    name.clone(),
                    set.elems.iter().cloned().collect(),
                ));
            }
            None => {}
        }
    }
    for (name, chain) in &desired.chains {
        match observed.chains.get(name) {
            Some(have) if have.rule_ids() == chain.rule_ids() => {}
            Some(_) => {
                ops.push(Op::FlushChain(name.clone()));
                add_rules(&mut ops, name, chain);
            }
            None => add_rules(&mut ops, name, chain),
        }
    }
    let stale_chains: Vec<&String> = observed
        .chains
        .keys()
        .filter(|n| !desired.chains.contains_key(*n))
        .collect();
    ops.extend(stale_chains.iter().map(|n| Op::FlushChain(n.to_string())));
    // Maps that go may jump to chains that go: empty them first.
    let stale_sets: Vec<(&String, SetKind)> = observed
        .sets
        .iter()
        .filter(|(n, _)| !desired.sets.contains_key(*n))
        .map(|(n, set)| (n, SetKind::of(&set.spec)))
        .collect();
    ops.extend(
        stale_sets
            .iter()
            .map(|(n, kind)| Op::FlushSet(n.to_string(), *kind)),
    );
    ops.extend(stale_chains.iter().map(|n| Op::DeleteChain(n.to_string())));
    ops.extend(
        stale_sets
            .iter()
            .map(|(n, kind)| Op::DeleteSet(n.to_string(), *kind)),
    );
    ops
}

fn add_rules(ops: &mut Vec<Op>, name: &str, chain: &Chain) {
    ops.extend(
        chain
            .rules
            .iter()
            .map(|r| Op::AddRule(name.to_string(), r.clone())),
    );
}

fn create_all(desired: &Ruleset) -> Vec<Op> {
    let mut ops = Vec::new();
    for (name, set) in &desired.sets {
        ops.push(Op::AddSet(name.clone(), set.spec.clone()));
    }
    for (name, chain) in &desired.chains {
        ops.push(Op::AddChain(name.clone(), chain.hook.clone()));
    }
    for (name, set) in &desired.sets {
        if !set.elems.is_empty() && !set.spec.dynamic {
            ops.push(Op::AddElems(
                name.clone(),
                set.elems.iter().cloned().collect(),
            ));
        }
    }
    for (name, chain) in &desired.chains {
        add_rules(&mut ops, name, chain);
    }
    ops
}

/// Why a transaction was refused (by the model; the kernel's reasons come as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// The set or map `name` of `ruleset`, when it is of `kind` (nftables
/// finds no map under `set` nor a set under `map`).
fn named_set<'a>(ruleset: &'a Ruleset, name: &str, kind: SetKind) -> Option<&'a Set> {
    ruleset
        .sets
        .get(name)
        .filter(|set| SetKind::of(&set.spec) == kind)
}

impl Ruleset {
    /// Performs `ops` on this model the way the kernel would, all or nothing.
    /// `table` says whether the table exists; returns whether it does after.
    pub fn apply(&mut self, table: bool, ops: &[Op]) -> Result<bool, Refused> {
        let mut next = self.clone();
        let mut exists = table;
        let missing = |what: &str, name: &str| Refused(format!("{what} {name} does not exist"));
        for op in ops {
            if !exists && !matches!(op, Op::AddTable) {
                return Err(Refused(format!("{op:?} without a table")));
            }
            match op {
                Op::AddTable => exists = true,
                Op::DeleteTable => {
                    next = Ruleset::default();
                    exists = false;
                }
                Op::AddSet(name, spec) => {
                    next.sets.entry(name.clone()).or_insert(Set {
                        spec: spec.clone(),
                        elems: BTreeSet::new(),
                    });
                }
                Op::DeleteSet(name, kind) => {
                    named_set(&next, name, *kind).ok_or_else(|| missing(kind.word(), name))?;
                    next.sets.remove(name);
                }
                Op::FlushSet(name, kind) => {
                    named_set(&next, name, *kind).ok_or_else(|| missing(kind.word(), name))?;
                    if let Some(set) = next.sets.get_mut(name) {
                        set.elems.clear();
                    }
                }
                Op::AddElems(name, elems) => {
                    let set = next
                        .sets
                        .get_mut(name)
                        .ok_or_else(|| missing("set", name))?;
                    set.elems.extend(elems.iter().cloned());
                }
                Op::DeleteElems(name, elems) => {
                    let set = next
                        .sets
                        .get_mut(name)
                        .ok_or_else(|| missing("set", name))?;
                    for e in elems {
                        if !set.elems.remove(e) {
                            return Err(Refused(format!("{name} has no element {e:?}")));
                        }
                    }
                }
                Op::AddChain(name, hook) => {
                    next.chains.entry(name.clone()).or_insert(Chain {
                        hook: hook.clone(),
                        rules: vec![],
                    });
                }
                Op::DeleteChain(name) => {
                    if next.jumps_to(name) {
                        return Err(Refused(format!("chain {name} is still referenced")));
                    }
                    next.chains
                        .remove(name)
                        .ok_or_else(|| missing("chain", name))?;
                }
                Op::FlushChain(name) => {
                    next.chains
                        .get_mut(name)
                        .ok_or_else(|| missing("chain", name))?
                        .rules
                        .clear();
                }
                Op::AddRule(name, rule) => {
                    next.chains
                        .get_mut(name)
                        .ok_or_else(|| missing("chain", name))?
                        .rules
                        .push(rule.clone());
                }
            }
        }
        *self = next;
        Ok(exists)
    }

    /// Whether a rule or a map element still jumps to `chain`.
    fn jumps_to(&self, chain: &str) -> bool {
        let map_refers = self.sets.values().any(|s| {
            s.elems
                .iter()
                .any(|e| matches!(e, Elem::Jump { chain: c, .. } if c == chain))
        });
        let needle = format!("\"target\":\"{chain}\"");
        map_refers
            || self.chains.values().any(|c| {
                c.rules.iter().any(|r| {
                    serde_json::to_string(&r.expr).is_ok_and(|text| text.contains(&needle))
                })
            })
    }
}

fn addr_json(c: &Cidr) -> Value {
    if c.prefix == 32 {
        json!(Ipv4Addr::from(c.base).to_string())
    } else {
        json!({"prefix": {"addr": Ipv4Addr::from(c.base).to_string(), "len": c.prefix}})
    }
}

fn part_json(p: &Part) -> Value {
    match *p {
        Part::Addr(lo, hi) if lo == hi => json!(Ipv4Addr::from(lo).to_string()),
        Part::Addr(lo, hi) => {
            json!({"range": [Ipv4Addr::from(lo).to_string(), Ipv4Addr::from(hi).to_string()]})
        }
        Part::Num(lo, hi) if lo == hi => json!(lo),
        Part::Num(lo, hi) => json!({"range": [lo, hi]}),
    }
}

pub fn elem_json(e: &Elem) -> Value {
    match e {
        Elem::Addr(c) => addr_json(c),
        Elem::Jump { key, chain } => json!([key, {"jump": {"target": chain}}]),
        Elem::Ranges(parts) => json!({"concat": parts.iter().map(part_json).collect::<Vec<_>>()}),
        Elem::Unreadable => Value::Null,
    }
}

fn set_json(table: &str, name: &str, spec: &SetSpec) -> Value {
    let key: Value = match spec.key.as_slice() {
        [one] => json!(one),
        many => json!(many),
    };
    let mut body = json!({"family": FAMILY, "table": table, "name": name, "type": key});
    if let Some(map) = &spec.map {
        body["map"] = json!(map);
    }
    if !spec.flags.is_empty() {
        body["flags"] = json!(spec.flags);
    }
    if let Some(t) = spec.timeout {
        body["timeout"] = json!(t);
    }
    if let Some(s) = spec.size {
        body["size"] = json!(s);
    }
    if spec.counter {
        body["stmt"] = json!([{"counter": null}]);
    }
    let kind = if spec.map.is_some() { "map" } else { "set" };
    json!({ kind: body })
}

/// The operations as one libnftables JSON batch for table `table`.
pub fn batch(table: &str, ops: &[Op]) -> Value {
    let t = json!({"table": {"family": FAMILY, "name": table}});
    let named =
        |kind: &str, name: &str| json!({kind: {"family": FAMILY, "table": table, "name": name}});
    let elems = |name: &str, elems: &[Elem]| {
        json!({"element": {"family": FAMILY, "table": table, "name": name,
            "elem": elems.iter().map(elem_json).collect::<Vec<_>>()}})
    };
    let cmds: Vec<Value> = ops
        .iter()
        .map(|op| match op {
            Op::AddTable => json!({ "add": t }),
            Op::DeleteTable => json!({ "delete": t }),
            Op::AddSet(name, spec) => json!({ "add": set_json(table, name, spec) }),
            Op::DeleteSet(name, kind) => json!({ "delete": named(kind.word(), name) }),
            Op::FlushSet(name, kind) => json!({ "flush": named(kind.word(), name) }),
            Op::AddElems(name, e) => json!({ "add": elems(name, e) }),
            Op::DeleteElems(name, e) => json!({ "delete": elems(name, e) }),
            Op::AddChain(name, hook) => {
                let mut body = json!({"family": FAMILY, "table": table, "name": name});
                if let Some(h) = hook {
                    body["type"] = json!(h.kind);
                    body["hook"] = json!(h.hook);
                    body["prio"] = json!(h.prio);
                    body["policy"] = json!(h.policy);
                }
                json!({ "add": { "chain": body } })
            }
            Op::DeleteChain(name) => json!({ "delete": named("chain", name) }),
            Op::FlushChain(name) => json!({ "flush": named("chain", name) }),
            Op::AddRule(chain, rule) => json!({ "add": { "rule": {
                "family": FAMILY, "table": table, "chain": chain,
                "expr": rule.expr, "comment": rule.id,
            }}}),
        })
        .collect();
    json!({ "nftables": cmds })
}

fn parse_addr(v: &Value) -> Option<u32> {
    v.as_str()?.parse::<Ipv4Addr>().ok().map(u32::from)
}

/// A number as `nft` lists it: numerals, or the protocol names it prints
/// for `inet_proto` keys.
fn parse_num(v: &Value) -> Option<u32> {
    match v.as_u64() {
        Some(n) => u32::try_from(n).ok(),
        None => crate::flowlog::proto_number(v).map(u32::from),
    }
}

fn parse_part(v: &Value, addr: bool) -> Option<Part> {
    let one = |x: &Value| if addr { parse_addr(x) } else { parse_num(x) };
    let (lo, hi) = if let Some(r) = v.get("range").and_then(Value::as_array) {
        (one(r.first()?)?, one(r.get(1)?)?)
    } else if let Some(p) = v.get("prefix") {
        let c = Cidr::new(
            Ipv4Addr::from(parse_addr(&p["addr"])?),
            u8::try_from(p["len"].as_u64()?).ok()?,
        )?;
        (c.base, c.last())
    } else {
        let x = one(v)?;
        (x, x)
    };
    Some(if addr {
        Part::Addr(lo, hi)
    } else {
        Part::Num(lo, hi)
    })
}

/// One listed element in the form the plan uses; `None` when it cannot be read back.
fn parse_elem(v: &Value, spec: &SetSpec) -> Option<Elem> {
    let v = v.get("elem").map(|e| &e["val"]).unwrap_or(v);
    if spec.map.is_some() {
        let pair = v.as_array()?;
        return Some(Elem::Jump {
            key: pair.first()?.as_str()?.to_string(),
            chain: pair.get(1)?["jump"]["target"].as_str()?.to_string(),
        });
    }
    if spec.key.len() > 1 {
        let parts = v["concat"].as_array()?;
        if parts.len() != spec.key.len() {
            return None;
        }
        return parts
            .iter()
            .zip(&spec.key)
            .map(|(p, k)| parse_part(p, k == "ipv4_addr"))
            .collect::<Option<Vec<_>>>()
            .map(Elem::Ranges);
    }
    match parse_part(v, true)? {
        Part::Addr(lo, hi) => {
            // why: a u32's trailing zeros are at most 32, so the prefix
            // length is 0..=32.
            #[allow(clippy::cast_possible_truncation)]
            let len = (hi - lo)
                .checked_add(1)
                .map_or(0, |n| 32 - n.trailing_zeros()) as u8;
            let c = Cidr::new(Ipv4Addr::from(lo), len)?;
            (c.base == lo && c.last() == hi).then_some(Elem::Addr(c))
        }
        Part::Num(..) => None,
    }
}

fn parse_spec(set: &Value) -> SetSpec {
    let key = match &set["type"] {
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => vec![],
    };
    let flags = set["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect();
    SetSpec {
        key,
        map: set["map"].as_str().map(str::to_string),
        flags,
        timeout: set["timeout"].as_u64(),
        size: set["size"].as_u64(),
        counter: set.get("stmt").is_some(),
        dynamic: false,
    }
}

/// Reads table `table` back from an `nft -j -n list table` listing (`-n`:
/// numbers, not names, for protocols and ICMP types). A set with an
/// element that cannot be read back holds [`Elem::Unreadable`], so the next
/// diff rewrites it whole.
pub fn observe(listing: &Value, table: &str) -> Option<Ruleset> {
    let items = listing["nftables"].as_array()?;
    let mut found = false;
    let mut out = Ruleset::default();
    for item in items {
        if item["table"]["name"].as_str() == Some(table) {
            found = true;
        }
        for kind in ["set", "map"] {
            let Some(set) = item.get(kind) else { continue };
            let Some(name) = set["name"].as_str() else {
                continue;
            };
            let spec = parse_spec(set);
            let mut elems = BTreeSet::new();
            for e in set["elem"].as_array().into_iter().flatten() {
                elems.insert(parse_elem(e, &spec).unwrap_or(Elem::Unreadable));
            }
            out.sets.insert(name.to_string(), Set { spec, elems });
        }
        if let Some(chain) = item.get("chain") {
            let Some(name) = chain["name"].as_str() else {
                continue;
            };
            let hook = chain["hook"].as_str().map(|hook| Hook {
                kind: chain["type"].as_str().unwrap_or_default().to_string(),
                hook: hook.to_string(),
                // A priority outside i32 cannot come from the kernel; read it
                // like a missing one.
                prio: chain["prio"]
                    .as_i64()
                    .and_then(|p| i32::try_from(p).ok())
                    .unwrap_or(0),
                policy: chain["policy"].as_str().unwrap_or("accept").to_string(),
            });
            out.chains.insert(
                name.to_string(),
                Chain {
                    hook,
                    rules: vec![],
                },
            );
        }
        if let Some(rule) = item.get("rule") {
            let Some(chain) = rule["chain"].as_str() else {
                continue;
            };
            // A rule without Cove's comment is foreign: it never equals a planned one.
            let id = rule["comment"].as_str().unwrap_or("foreign").to_string();
            out.chains
                .entry(chain.to_string())
                .or_default()
                .rules
                .push(Rule { id, expr: vec![] });
        }
    }
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn rule(n: u16) -> Rule {
        Rule::new(vec![
            json!({"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": n}}),
            json!({"return": null}),
        ])
    }

    fn sample() -> Ruleset {
        let mut r = Ruleset::default();
        r.sets.insert(
            "sg_a".into(),
            Set {
                spec: SetSpec::addresses(),
                elems: [Elem::Addr(cidr("10.0.1.4/32"))].into(),
            },
        );
        r.sets.insert(
            "out".into(),
            Set {
                spec: SetSpec::link_jumps(),
                elems: [Elem::Jump {
                    key: "cve1".into(),
                    chain: "eni_1".into(),
                }]
                .into(),
            },
        );
        r.chains.insert(
            "eni_1".into(),
            Chain {
                hook: None,
                rules: vec![rule(22), rule(80)],
            },
        );
        r.chains.insert(
            "eni_2".into(),
            Chain {
                hook: None,
                rules: vec![rule(443)],
            },
        );
        r
    }

    fn converges(from: Option<&Ruleset>, to: &Ruleset) -> Vec<Op> {
        let ops = diff(from, to);
        let mut model = from.cloned().unwrap_or_default();
        model
            .apply(from.is_some(), &ops)
            .expect("the kernel model accepts the diff");
        assert_eq!(&model, to);
        ops
    }

    #[test]
    fn equal_rulesets_need_nothing_and_a_missing_table_is_made_whole() {
        let r = sample();
        assert!(diff(Some(&r), &r).is_empty());
        let ops = converges(None, &r);
        assert_eq!(ops[0], Op::AddTable);
    }

    #[test]
    fn a_changed_chain_is_rewritten_alone() {
        let before = sample();
        let mut after = before.clone();
        after
            .chains
            .get_mut("eni_1")
            .unwrap()
            .rules
            .push(rule(8080));
        let ops = converges(Some(&before), &after);
        assert_eq!(ops[0], Op::FlushChain("eni_1".into()));
        assert_eq!(
            count(&ops),
            OpCounts {
                chains_written: 1,
                rules_added: 3,
                elems_changed: 0,
                other: 0
            }
        );
    }

    #[test]
    fn membership_changes_are_element_operations() {
        let before = sample();
        let mut after = before.clone();
        let members = &mut after.sets.get_mut("sg_a").unwrap().elems;
        members.clear();
        members.insert(Elem::Addr(cidr("10.0.1.5/32")));
        let ops = converges(Some(&before), &after);
        assert_eq!(
            ops,
            vec![
                Op::DeleteElems("sg_a".into(), vec![Elem::Addr(cidr("10.0.1.4/32"))]),
                Op::AddElems("sg_a".into(), vec![Elem::Addr(cidr("10.0.1.5/32"))]),
            ]
        );
    }

    #[test]
    fn removed_chains_lose_their_references_before_they_go() {
        let before = sample();
        let mut after = before.clone();
        after.chains.remove("eni_1");
        after.sets.remove("out");
        converges(Some(&before), &after);
        // And a chain still jumped to cannot go.
        let mut model = before.clone();
        assert!(model
            .apply(true, &[Op::DeleteChain("eni_1".into())])
            .is_err());
        assert_eq!(model, before, "a refused transaction changes nothing");
    }

    #[test]
    fn dynamic_sets_keep_what_the_kernel_put_in_them() {
        let mut desired = sample();
        let flow = Set {
            spec: SetSpec {
                dynamic: true,
                ..SetSpec::addresses()
            },
            elems: BTreeSet::new(),
        };
        desired.sets.insert("fa_1".into(), flow.clone());
        let mut observed = desired.clone();
        observed
            .sets
            .get_mut("fa_1")
            .unwrap()
            .elems
            .insert(Elem::Addr(cidr("10.0.1.4/32")));
        assert!(diff(Some(&observed), &desired).is_empty());
    }

    #[test]
    fn a_set_that_cannot_be_read_back_is_refilled_whole() {
        let desired = sample();
        let mut observed = desired.clone();
        observed
            .sets
            .get_mut("sg_a")
            .unwrap()
            .elems
            .insert(Elem::Unreadable);
        let ops = converges(Some(&observed), &desired);
        assert_eq!(ops[0], Op::FlushSet("sg_a".into(), SetKind::Set));
    }

    #[test]
    fn a_map_that_goes_is_flushed_and_deleted_as_a_map() {
        // What removing a VPC's last flow log or last ENI does to its
        // router: the maps that jumped to the gone chains go too. nftables
        // refuses `flush set` of a map (ENOENT), which the model copies.
        let before = sample();
        let mut after = before.clone();
        after.sets.remove("out");
        after.chains.remove("eni_1");
        let ops = converges(Some(&before), &after);
        assert!(ops.contains(&Op::FlushSet("out".into(), SetKind::Map)));
        assert!(ops.contains(&Op::DeleteSet("out".into(), SetKind::Map)));
        let batch = batch("cove", &ops).to_string();
        assert!(
            batch.contains(r#"{"flush":{"map":{"family":"inet","name":"out","table":"cove"}}}"#),
            "{batch}"
        );
        assert!(
            batch.contains(r#"{"delete":{"map":{"family":"inet","name":"out","table":"cove"}}}"#),
            "{batch}"
        );
        let mut model = before.clone();
        let refused = model.apply(true, &[Op::FlushSet("out".into(), SetKind::Set)]);
        assert_eq!(refused, Err(Refused("set out does not exist".into())));
        let refused = model.apply(true, &[Op::DeleteSet("sg_a".into(), SetKind::Map)]);
        assert_eq!(refused, Err(Refused("map sg_a does not exist".into())));
    }

    #[test]
    fn a_reshaped_set_rebuilds_the_table() {
        let before = sample();
        let mut after = before.clone();
        after.sets.get_mut("sg_a").unwrap().spec = SetSpec::ranges(&["ipv4_addr", "inet_service"]);
        after.sets.get_mut("sg_a").unwrap().elems.clear();
        let ops = converges(Some(&before), &after);
        assert_eq!(&ops[..3], &[Op::AddTable, Op::DeleteTable, Op::AddTable]);
    }

    #[test]
    fn a_listing_reads_back_as_the_ruleset_that_made_it() {
        let r = sample();
        // What `nft -j list table` prints for the sample (abridged to what observe reads).
        let listing = json!({"nftables": [
            {"metainfo": {"json_schema_version": 1}},
            {"table": {"family": "inet", "name": "cove", "handle": 1}},
            {"set": {"family": "inet", "name": "sg_a", "table": "cove", "type": "ipv4_addr", "handle": 2, "flags": ["interval"], "elem": ["10.0.1.4"]}},
            {"map": {"family": "inet", "name": "out", "table": "cove", "type": "ifname", "handle": 3, "map": "verdict", "elem": [["cve1", {"jump": {"target": "eni_1"}}]]}},
            {"chain": {"family": "inet", "table": "cove", "name": "eni_1", "handle": 4}},
            {"chain": {"family": "inet", "table": "cove", "name": "eni_2", "handle": 5}},
            {"rule": {"family": "inet", "table": "cove", "chain": "eni_1", "handle": 6, "comment": r.chains["eni_1"].rules[0].id, "expr": []}},
            {"rule": {"family": "inet", "table": "cove", "chain": "eni_1", "handle": 7, "comment": r.chains["eni_1"].rules[1].id, "expr": []}},
            {"rule": {"family": "inet", "table": "cove", "chain": "eni_2", "handle": 8, "comment": r.chains["eni_2"].rules[0].id, "expr": []}},
        ]});
        let seen = observe(&listing, "cove").expect("the table is there");
        assert!(diff(Some(&seen), &r).is_empty());
        assert!(observe(&listing, "other").is_none());
    }

    #[test]
    fn concatenated_ranges_read_back_from_nft_forms() {
        let spec = SetSpec::ranges(&["ipv4_addr", "inet_proto", "inet_service"]);
        let listed = json!({"concat": [{"prefix": {"addr": "10.0.0.0", "len": 16}}, "tcp", {"range": [1024, 65535]}]});
        assert_eq!(
            parse_elem(&listed, &spec),
            Some(Elem::Ranges(vec![
                Part::Addr(
                    u32::from(Ipv4Addr::new(10, 0, 0, 0)),
                    u32::from(Ipv4Addr::new(10, 0, 255, 255))
                ),
                Part::Num(6, 6),
                Part::Num(1024, 65535),
            ]))
        );
        let range = json!({"range": ["10.0.0.0", "10.0.0.255"]});
        assert_eq!(
            parse_elem(&range, &SetSpec::addresses()),
            Some(Elem::Addr(cidr("10.0.0.0/24")))
        );
        assert_eq!(
            parse_elem(
                &json!({"range": ["10.0.0.1", "10.0.0.2"]}),
                &SetSpec::addresses()
            ),
            None
        );
    }
}
