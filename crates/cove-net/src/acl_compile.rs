//! Compiles one direction of a network ACL into disjoint allowed regions.
//!
//! A network ACL is an ordered list of allow/deny entries where the first
//! match wins and anything unmatched is denied. Rendered as a chain, a packet
//! walks the entries one by one, so its cost grows with the entry count. This
//! module turns the list into pairwise disjoint boxes of allowed traffic so
//! the data plane can render them as nftables concatenated interval sets
//! (pipapo backend, which refuses overlapping elements) and decide every
//! packet with one lookup.
//!
//! The data plane looks packets up in one of three lists, by protocol:
//! TCP/UDP in [`CompiledAcl::ports`] (`addr . proto . dport`), ICMP in
//! [`CompiledAcl::icmp`] (`addr . type . code`) and every other protocol in
//! [`CompiledAcl::other`] (`addr . proto`). "addr" is the packet's peer
//! address: the destination for egress ACLs, the source for ingress ones.
//!
//! Match semantics are those of the chain rules in `nft.rs`: the address is
//! in the entry's CIDR; `Proto::All` matches every protocol, otherwise the
//! protocol number must be equal; TCP/UDP entries also restrict the
//! destination port when they carry a range (`None` means any port; a range
//! with `lo > hi` matches nothing); ICMP entries restrict type and code when
//! given. `Peer::Set` never occurs in ACLs; such an entry matches nothing.
//!
//! # Algorithm and worst case
//!
//! Each list is a small box problem (2 dimensions for ports per protocol and
//! for `other`, 3 for ICMP). Along the first dimension the entries' range
//! ends cut the domain into at most `2n + 1` elementary intervals; for each,
//! the entries covering it (kept in evaluation order, cut after the first
//! one that covers the rest of the cell entirely) are solved recursively on
//! the next dimension, the last dimension by a sweep that takes the first
//! active entry's verdict. Adjacent intervals with identical sub-results are
//! merged, several dimension orders are tried and the smallest result kept, and
//! a final pass merges boxes that are adjacent and equal in all other
//! dimensions. Sub-results are memoised by their set of active entries.
//!
//! With `n` entries a 2-D list has at most `(2n + 1)^2` regions and is
//! built in `O(n^2 log n)`; ICMP is bounded by `(2n + 1) * 256 * 256` cells
//! (types and codes are bytes) but only ICMP entries with a type or code add
//! boundaries there. Quadratic growth is reachable: 100 `/32` entries each
//! denying TCP from a different port upwards, followed by 100 allows of small
//! port ranges for any address, give 5050 regions whichever dimension comes
//! first (test `adversarial_grid`). Realistic ACLs yield about one to three
//! regions per entry. Callers that want a hard bound can check
//! [`CompiledAcl::len`] and fall back to a chain.

use crate::plan::{AclRule, Match, Peer, Proto};
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::rc::Rc;

/// An inclusive address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrRange {
    pub lo: Ipv4Addr,
    pub hi: Ipv4Addr,
}

impl AddrRange {
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        self.lo <= a && a <= self.hi
    }
}

/// Allowed TCP or UDP traffic: `proto` is 6 or 17, `ports` the inclusive destination port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRegion {
    pub addr: AddrRange,
    pub proto: u8,
    pub ports: (u16, u16),
}

/// Allowed ICMP traffic: inclusive type and code ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IcmpRegion {
    pub addr: AddrRange,
    pub types: (u8, u8),
    pub codes: (u8, u8),
}

/// Allowed traffic of other protocols: an inclusive protocol number range.
/// It may cover 1, 6 or 17, which are never looked up here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OtherRegion {
    pub addr: AddrRange,
    pub protos: (u8, u8),
}

/// One direction of an ACL as allowed regions, pairwise disjoint within each
/// list and sorted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompiledAcl {
    pub ports: Vec<PortRegion>,
    pub icmp: Vec<IcmpRegion>,
    pub other: Vec<OtherRegion>,
}

impl CompiledAcl {
    /// Whether the ACL allows a packet. `port_or_type` is the destination
    /// port for TCP/UDP and the ICMP type for ICMP (values above 255 match
    /// no ICMP region); `icmp_code` only matters for ICMP. A linear scan,
    /// meant for tests and diagnostics.
    pub fn allows(&self, addr: Ipv4Addr, proto: u8, port_or_type: u16, icmp_code: u8) -> bool {
        match proto {
            6 | 17 => self.ports.iter().any(|r| {
                r.proto == proto
                    && r.addr.contains(addr)
                    && r.ports.0 <= port_or_type
                    && port_or_type <= r.ports.1
            }),
            1 => {
                let Ok(t) = u8::try_from(port_or_type) else {
                    return false;
                };
                self.icmp.iter().any(|r| {
                    r.addr.contains(addr)
                        && (r.types.0..=r.types.1).contains(&t)
                        && (r.codes.0..=r.codes.1).contains(&icmp_code)
                })
            }
            _ => self
                .other
                .iter()
                .any(|r| r.addr.contains(addr) && (r.protos.0..=r.protos.1).contains(&proto)),
        }
    }

    /// The total number of set elements the three lists need.
    pub fn len(&self) -> usize {
        self.ports.len() + self.icmp.len() + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An inclusive interval on one dimension.
type Iv = (u32, u32);

const ADDRS: Iv = (0, u32::MAX);
const PORTS: Iv = (0, 65535);
const BYTES: Iv = (0, 255);

/// Compiles one direction's entries (in evaluation order) into allowed regions.
pub fn compile(rules: &[AclRule]) -> CompiledAcl {
    let mut out = CompiledAcl::default();

    for proto in [6u8, 17] {
        let boxes: Vec<([Iv; 2], bool)> = rules
            .iter()
            .filter_map(|r| {
                let m = &r.rule;
                if !applies_to(m.proto, proto) {
                    return None;
                }
                let ports = match (m.proto, m.ports) {
                    (Proto::Tcp | Proto::Udp, Some((lo, hi))) if lo > hi => return None,
                    (Proto::Tcp | Proto::Udp, Some((lo, hi))) => (u32::from(lo), u32::from(hi)),
                    _ => PORTS,
                };
                Some(([addr_range(m)?, ports], r.allow))
            })
            .collect();
        out.ports.extend(
            solve_best([ADDRS, PORTS], &boxes)
                .into_iter()
                .map(|[a, p]| PortRegion {
                    addr: to_addr_range(a),
                    proto,
                    ports: port_pair(p),
                }),
        );
    }

    let boxes: Vec<([Iv; 3], bool)> = rules
        .iter()
        .filter_map(|r| {
            let m = &r.rule;
            if !applies_to(m.proto, 1) {
                return None;
            }
            let (types, codes) = if m.proto == Proto::Icmp {
                (byte_range(m.icmp_type), byte_range(m.icmp_code))
            } else {
                (BYTES, BYTES)
            };
            Some(([addr_range(m)?, types, codes], r.allow))
        })
        .collect();
    out.icmp = solve_best([ADDRS, BYTES, BYTES], &boxes)
        .into_iter()
        .map(|[a, t, c]| IcmpRegion {
            addr: to_addr_range(a),
            types: byte_pair(t),
            codes: byte_pair(c),
        })
        .collect();

    // TCP, UDP and ICMP entries only match packets that are never looked up here.
    let boxes: Vec<([Iv; 2], bool)> = rules
        .iter()
        .filter_map(|r| {
            let m = &r.rule;
            let protos = match m.proto {
                Proto::All => BYTES,
                Proto::Number(n) => (u32::from(n), u32::from(n)),
                Proto::Tcp | Proto::Udp | Proto::Icmp => return None,
            };
            Some(([addr_range(m)?, protos], r.allow))
        })
        .collect();
    out.other = solve_best([ADDRS, BYTES], &boxes)
        .into_iter()
        .map(|[a, p]| OtherRegion {
            addr: to_addr_range(a),
            protos: byte_pair(p),
        })
        .collect();

    out.ports.sort();
    out.icmp.sort();
    out.other.sort();
    out
}

/// Whether an entry of protocol `p` can match packets of protocol number `n`.
fn applies_to(p: Proto, n: u8) -> bool {
    p.number().is_none_or(|x| x == n)
}

fn addr_range(m: &Match) -> Option<Iv> {
    match &m.peer {
        Peer::Cidr(c) => {
            let prefix = u32::from(c.prefix.min(32));
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            Some((c.base & mask, c.base | !mask))
        }
        // Named sets never occur in ACLs; match nothing rather than guess.
        Peer::Set(_) => None,
    }
}

fn byte_range(v: Option<u8>) -> Iv {
    v.map_or(BYTES, |x| (u32::from(x), u32::from(x)))
}

/// A port interval of a solved region back in `u16`.
// why: the solver only returns sub-intervals of the domain it was given, and
// for ports that is PORTS, u16's whole range, so both ends fit.
#[allow(clippy::cast_possible_truncation)]
fn port_pair((lo, hi): Iv) -> (u16, u16) {
    (lo as u16, hi as u16)
}

/// A byte interval (ICMP type or code, protocol number) of a solved region
/// back in `u8`.
// why: the solver only returns sub-intervals of the domain it was given, and
// for these dimensions that is BYTES, u8's whole range, so both ends fit.
#[allow(clippy::cast_possible_truncation)]
fn byte_pair((lo, hi): Iv) -> (u8, u8) {
    (lo as u8, hi as u8)
}

fn to_addr_range((lo, hi): Iv) -> AddrRange {
    AddrRange {
        lo: Ipv4Addr::from(lo),
        hi: Ipv4Addr::from(hi),
    }
}

/// Solves with several dimension orders and keeps the smallest result (the
/// first order wins ties, so results are stable). The address, dimension 0,
/// has the most boundaries; with three dimensions, orders that put it
/// innermost cost several times more and never won on random ACLs, so they
/// are skipped.
fn solve_best<const D: usize>(domain: [Iv; D], rules: &[([Iv; D], bool)]) -> Vec<[Iv; D]> {
    let mut best: Option<Vec<[Iv; D]>> = None;
    for order in permutations::<D>() {
        if D > 2 && order[D - 1] == 0 {
            continue;
        }
        let permute = |b: &[Iv; D]| -> [Iv; D] { std::array::from_fn(|k| b[order[k]]) };
        let rules_p: Vec<([Iv; D], bool)> = rules.iter().map(|(b, v)| (permute(b), *v)).collect();
        let mut solver = Solver {
            rules: &rules_p,
            domain: permute(&domain),
            memo: HashMap::new(),
        };
        // why: `rules` is one direction of one ACL, whose entries have
        // distinct rule numbers (1 to 32766, plus the default entry), so
        // their count fits u32.
        #[allow(clippy::cast_possible_truncation)]
        let all: Vec<u32> = (0..rules_p.len() as u32).collect();
        let found = solver.solve(0, &all);
        let mut result: Vec<[Iv; D]> = found
            .iter()
            .map(|b| {
                let mut out = [(0, 0); D];
                for k in 0..D {
                    out[order[k]] = b[k];
                }
                out
            })
            .collect();
        result = coalesce(result);
        if best.as_ref().is_none_or(|b| result.len() < b.len()) {
            best = Some(result);
        }
        if best.as_ref().is_some_and(|b| b.len() <= 1) {
            break;
        }
    }
    best.unwrap_or_default()
}

/// All orders of `0..D`, the identity first.
fn permutations<const D: usize>() -> Vec<[usize; D]> {
    fn go<const D: usize>(cur: &mut Vec<usize>, out: &mut Vec<[usize; D]>) {
        if cur.len() == D {
            out.push(std::array::from_fn(|k| cur[k]));
            return;
        }
        for i in 0..D {
            if !cur.contains(&i) {
                cur.push(i);
                go(cur, out);
                cur.pop();
            }
        }
    }
    let mut out = Vec::new();
    go(&mut Vec::new(), &mut out);
    out
}

/// Regions over dimensions `dim..D` (lower dimensions are left at `(0, 0)`).
type Sub<const D: usize> = Rc<Vec<[Iv; D]>>;

struct Solver<'a, const D: usize> {
    rules: &'a [([Iv; D], bool)],
    domain: [Iv; D],
    memo: HashMap<(usize, Vec<u32>), Sub<D>>,
}

impl<const D: usize> Solver<'_, D> {
    /// The allowed regions over dimensions `dim..D` for a cell where exactly
    /// the rules `active` (indices, ascending = evaluation order) match on
    /// the dimensions before `dim`.
    fn solve(&mut self, dim: usize, active: &[u32]) -> Sub<D> {
        let covers_rest = |r: u32| (dim..D).all(|k| self.rules[r as usize].0[k] == self.domain[k]);
        // Nothing after an entry that covers the whole cell is ever reached.
        let active = match active.iter().position(|&r| covers_rest(r)) {
            Some(i) => &active[..=i],
            None => active,
        };
        if !active.iter().any(|&r| self.rules[r as usize].1) {
            return Rc::new(Vec::new());
        }
        if active.len() == 1 && covers_rest(active[0]) {
            let mut b = [(0, 0); D];
            b[dim..].copy_from_slice(&self.domain[dim..]);
            return Rc::new(vec![b]);
        }
        let key = (dim, active.to_vec());
        if let Some(hit) = self.memo.get(&key) {
            return hit.clone();
        }

        let (dlo, dhi) = self.domain[dim];
        let mut points: Vec<u32> = vec![dlo];
        for &r in active {
            let (lo, hi) = self.rules[r as usize].0[dim];
            points.push(lo);
            if hi < dhi {
                points.push(hi + 1);
            }
        }
        points.sort_unstable();
        points.dedup();
        let idx = |p: u32| points.binary_search(&p).expect("boundary point");
        let mut starts: Vec<Vec<u32>> = vec![Vec::new(); points.len()];
        let mut ends: Vec<Vec<u32>> = vec![Vec::new(); points.len()];
        for &r in active {
            let (lo, hi) = self.rules[r as usize].0[dim];
            starts[idx(lo)].push(r);
            if hi < dhi {
                ends[idx(hi + 1)].push(r);
            }
        }

        let last = dim + 1 == D;
        let mut out: Vec<[Iv; D]> = Vec::new();
        let mut set: BTreeSet<u32> = BTreeSet::new();
        // The current run of intervals with the same result: its start and result.
        let mut run: Option<(u32, Sub<D>)> = None;
        let empty: Sub<D> = Rc::new(Vec::new());
        let full: Sub<D> = Rc::new(vec![[(0, 0); D]]);
        for (i, &p) in points.iter().enumerate() {
            for r in &ends[i] {
                set.remove(r);
            }
            set.extend(starts[i].iter().copied());
            let sub = if last {
                match set.first() {
                    Some(&r) if self.rules[r as usize].1 => full.clone(),
                    _ => empty.clone(),
                }
            } else {
                let v: Vec<u32> = set.iter().copied().collect();
                self.solve(dim + 1, &v)
            };
            match &run {
                Some((_, prev)) if Rc::ptr_eq(prev, &sub) || **prev == *sub => {}
                _ => {
                    if let Some((start, prev)) = run.take() {
                        emit(&mut out, dim, (start, p - 1), &prev);
                    }
                    run = Some((p, sub));
                }
            }
        }
        if let Some((start, prev)) = run {
            emit(&mut out, dim, (start, dhi), &prev);
        }
        let out = Rc::new(out);
        self.memo.insert(key, out.clone());
        out
    }
}

fn emit<const D: usize>(out: &mut Vec<[Iv; D]>, dim: usize, iv: Iv, sub: &[[Iv; D]]) {
    out.extend(sub.iter().map(|b| {
        let mut b = *b;
        b[dim] = iv;
        b
    }));
}

/// Merges disjoint boxes that are equal on all dimensions but one and
/// adjacent on that one, until no such pair is left. The union is unchanged,
/// so the result stays disjoint.
fn coalesce<const D: usize>(mut boxes: Vec<[Iv; D]>) -> Vec<[Iv; D]> {
    loop {
        let before = boxes.len();
        for k in 0..D {
            // Dimension `k` last, so mergeable boxes end up next to each other.
            boxes.sort_unstable_by_key(|b| {
                let mut key = *b;
                key[k..].rotate_left(1);
                key
            });
            let mut merged: Vec<[Iv; D]> = Vec::with_capacity(boxes.len());
            for b in boxes.drain(..) {
                if let Some(prev) = merged.last_mut() {
                    let same_rest = (0..D).all(|j| j == k || prev[j] == b[j]);
                    if same_rest && prev[k].1 != u32::MAX && prev[k].1 + 1 == b[k].0 {
                        prev[k].1 = b[k].1;
                        continue;
                    }
                }
                merged.push(b);
            }
            boxes = merged;
        }
        if boxes.len() == before {
            return boxes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_model::cidr::Cidr;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use std::time::Instant;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn entry(number: i64, allow: bool, proto: Proto, c: &str) -> AclRule {
        AclRule {
            number,
            allow,
            rule: Match {
                proto,
                ports: None,
                icmp_type: None,
                icmp_code: None,
                peer: Peer::Cidr(cidr(c)),
            },
        }
    }

    fn with_ports(mut r: AclRule, lo: u16, hi: u16) -> AclRule {
        r.rule.ports = Some((lo, hi));
        r
    }

    fn with_icmp(mut r: AclRule, t: Option<u8>, c: Option<u8>) -> AclRule {
        r.rule.icmp_type = t;
        r.rule.icmp_code = c;
        r
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// Today's chain semantics, entry by entry.
    fn matches(m: &Match, addr: Ipv4Addr, proto: u8, port_or_type: u16, code: u8) -> bool {
        let in_peer = match &m.peer {
            Peer::Cidr(c) => c.contains_addr(addr),
            Peer::Set(_) => false,
        };
        if !in_peer {
            return false;
        }
        if let Some(n) = m.proto.number() {
            if n != proto {
                return false;
            }
        }
        match m.proto {
            Proto::Tcp | Proto::Udp => match m.ports {
                Some((lo, hi)) => lo <= port_or_type && port_or_type <= hi,
                None => true,
            },
            Proto::Icmp => {
                m.icmp_type.is_none_or(|t| u16::from(t) == port_or_type)
                    && m.icmp_code.is_none_or(|c| c == code)
            }
            _ => true,
        }
    }

    fn brute(rules: &[AclRule], addr: Ipv4Addr, proto: u8, pt: u16, code: u8) -> bool {
        rules
            .iter()
            .find(|r| matches(&r.rule, addr, proto, pt, code))
            .is_some_and(|r| r.allow)
    }

    fn overlap<T: PartialOrd>(a: (T, T), b: (T, T)) -> bool {
        a.0 <= b.1 && b.0 <= a.1
    }

    fn addr_overlap(a: AddrRange, b: AddrRange) -> bool {
        overlap((a.lo, a.hi), (b.lo, b.hi))
    }

    fn assert_disjoint(c: &CompiledAcl) {
        for (i, a) in c.ports.iter().enumerate() {
            assert!(a.addr.lo <= a.addr.hi && a.ports.0 <= a.ports.1);
            assert!(a.proto == 6 || a.proto == 17);
            for b in &c.ports[i + 1..] {
                assert!(
                    !(a.proto == b.proto
                        && addr_overlap(a.addr, b.addr)
                        && overlap(a.ports, b.ports)),
                    "{a:?} overlaps {b:?}"
                );
            }
        }
        for (i, a) in c.icmp.iter().enumerate() {
            assert!(a.addr.lo <= a.addr.hi && a.types.0 <= a.types.1 && a.codes.0 <= a.codes.1);
            for b in &c.icmp[i + 1..] {
                assert!(
                    !(addr_overlap(a.addr, b.addr)
                        && overlap(a.types, b.types)
                        && overlap(a.codes, b.codes)),
                    "{a:?} overlaps {b:?}"
                );
            }
        }
        for (i, a) in c.other.iter().enumerate() {
            assert!(a.addr.lo <= a.addr.hi && a.protos.0 <= a.protos.1);
            for b in &c.other[i + 1..] {
                assert!(
                    !(addr_overlap(a.addr, b.addr) && overlap(a.protos, b.protos)),
                    "{a:?} overlaps {b:?}"
                );
            }
        }
        let mut sorted = c.clone();
        sorted.ports.sort();
        sorted.icmp.sort();
        sorted.other.sort();
        assert_eq!(&sorted, c, "regions are sorted");
    }

    #[test]
    fn default_allow_all_covers_everything() {
        let c = compile(&[entry(100, true, Proto::All, "0.0.0.0/0")]);
        let any = AddrRange {
            lo: ip("0.0.0.0"),
            hi: ip("255.255.255.255"),
        };
        assert_eq!(
            c.ports,
            vec![
                PortRegion {
                    addr: any,
                    proto: 6,
                    ports: (0, 65535)
                },
                PortRegion {
                    addr: any,
                    proto: 17,
                    ports: (0, 65535)
                },
            ]
        );
        assert_eq!(
            c.icmp,
            vec![IcmpRegion {
                addr: any,
                types: (0, 255),
                codes: (0, 255)
            }]
        );
        assert_eq!(
            c.other,
            vec![OtherRegion {
                addr: any,
                protos: (0, 255)
            }]
        );
        assert!(c.allows(ip("203.0.113.9"), 6, 443, 0));
        assert!(c.allows(ip("0.0.0.0"), 1, 255, 255));
        assert!(c.allows(ip("255.255.255.255"), 50, 0, 0));
    }

    #[test]
    fn empty_acl_allows_nothing() {
        let c = compile(&[]);
        assert!(c.is_empty());
        assert!(!c.allows(ip("10.0.0.1"), 6, 22, 0));
        assert!(!c.allows(ip("10.0.0.1"), 1, 8, 0));
        assert!(!c.allows(ip("10.0.0.1"), 50, 0, 0));
        // Only denies, or only a named set: still nothing.
        let mut set = entry(100, true, Proto::All, "0.0.0.0/0");
        set.rule.peer = Peer::Set("pl".into());
        let c = compile(&[entry(90, false, Proto::Tcp, "10.0.0.0/8"), set]);
        assert!(c.is_empty());
    }

    #[test]
    fn deny_before_allow_shadows() {
        let rules = [
            with_ports(entry(90, false, Proto::Tcp, "10.0.0.0/8"), 22, 22),
            entry(100, true, Proto::All, "0.0.0.0/0"),
        ];
        let c = compile(&rules);
        assert_disjoint(&c);
        assert!(!c.allows(ip("10.1.2.3"), 6, 22, 0));
        assert!(c.allows(ip("192.0.2.1"), 6, 22, 0));
        assert!(c.allows(ip("10.1.2.3"), 6, 23, 0));
        assert!(c.allows(ip("10.1.2.3"), 17, 22, 0));
        assert!(c.allows(ip("10.1.2.3"), 1, 8, 0));
        // TCP: below 10/8, 10/8 ports 0-21 and 23-65535, above 10/8; UDP whole.
        assert_eq!(c.ports.len(), 5, "{:?}", c.ports);
        assert_eq!((c.icmp.len(), c.other.len()), (1, 1));

        // The same entries the other way round: the deny is never reached.
        let c = compile(&[rules[1].clone(), rules[0].clone()]);
        assert!(c.allows(ip("10.1.2.3"), 6, 22, 0));
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn icmp_type_and_code() {
        let rules = [
            with_icmp(
                entry(10, false, Proto::Icmp, "10.0.0.0/8"),
                Some(3),
                Some(4),
            ),
            with_icmp(entry(20, true, Proto::Icmp, "10.0.0.0/8"), Some(3), None),
            with_icmp(entry(30, true, Proto::Icmp, "0.0.0.0/0"), Some(8), Some(0)),
            with_icmp(entry(40, true, Proto::Icmp, "192.0.2.0/24"), None, Some(1)),
        ];
        let c = compile(&rules);
        assert_disjoint(&c);
        assert!(c.ports.is_empty() && c.other.is_empty());
        assert!(!c.allows(ip("10.0.0.1"), 1, 3, 4));
        assert!(c.allows(ip("10.0.0.1"), 1, 3, 3));
        assert!(c.allows(ip("10.0.0.1"), 1, 3, 5));
        assert!(!c.allows(ip("11.0.0.1"), 1, 3, 3));
        assert!(c.allows(ip("11.0.0.1"), 1, 8, 0));
        assert!(!c.allows(ip("11.0.0.1"), 1, 8, 1));
        assert!(c.allows(ip("192.0.2.77"), 1, 200, 1));
        assert!(!c.allows(ip("192.0.2.77"), 1, 200, 2));
        assert!(!c.allows(ip("192.0.2.77"), 1, 256, 1));
        assert!(!c.allows(ip("10.0.0.1"), 6, 3, 3));
        for a in ["10.0.0.1", "11.0.0.1", "192.0.2.77", "0.0.0.0"] {
            for t in 0..=255u16 {
                for code in [0, 1, 2, 3, 4, 5, 255] {
                    assert_eq!(
                        c.allows(ip(a), 1, t, code),
                        brute(&rules, ip(a), 1, t, code),
                        "{a} {t} {code}"
                    );
                }
            }
        }
    }

    #[test]
    fn esp_rules() {
        let rules = [
            entry(10, false, Proto::Number(50), "198.51.100.0/24"),
            entry(20, true, Proto::Number(50), "0.0.0.0/0"),
            entry(30, true, Proto::Number(51), "198.51.100.7/32"),
        ];
        let c = compile(&rules);
        assert_disjoint(&c);
        assert!(c.ports.is_empty() && c.icmp.is_empty());
        assert!(!c.allows(ip("198.51.100.9"), 50, 0, 0));
        assert!(c.allows(ip("198.51.101.0"), 50, 0, 0));
        assert!(c.allows(ip("198.51.99.255"), 50, 0, 0));
        assert!(c.allows(ip("198.51.100.7"), 51, 0, 0));
        assert!(!c.allows(ip("198.51.100.8"), 51, 0, 0));
        assert!(!c.allows(ip("8.8.8.8"), 49, 0, 0));
        // ESP outside the /24 (two address ranges) and AH on the /32; the
        // /32 lies inside the /24, so 50 and 51 merge there.
        assert_eq!(c.other.len(), 3, "{:?}", c.other);
    }

    /// A few base ranges shared by many entries, so they overlap and nest.
    const BASES: [&str; 4] = ["10.0.0.0", "10.0.128.0", "192.168.1.0", "172.16.0.0"];

    /// A random entry; `catch_all` allows 0.0.0.0/0, which tends to shadow
    /// everything after it.
    fn random_rule(rng: &mut SmallRng, number: i64, catch_all: bool) -> AclRule {
        let c = if catch_all && rng.gen_bool(0.08) {
            Cidr { base: 0, prefix: 0 }
        } else if rng.gen_bool(0.1) {
            Cidr::new(Ipv4Addr::from(rng.gen::<u32>()), rng.gen_range(1..=32)).unwrap()
        } else {
            let base = u32::from(ip(BASES[rng.gen_range(0..BASES.len())]));
            let prefix = [8, 16, 17, 20, 24, 25, 28, 30, 32][rng.gen_range(0..9)];
            let off = rng.gen_range(0..1024u32) * if rng.gen_bool(0.5) { 1 } else { 64 };
            Cidr::new(Ipv4Addr::from(base.wrapping_add(off)), prefix).unwrap()
        };
        let proto = match rng.gen_range(0..10) {
            0 | 1 => Proto::All,
            2..=4 => Proto::Tcp,
            5 | 6 => Proto::Udp,
            7 | 8 => Proto::Icmp,
            _ => Proto::Number(50),
        };
        let mut ports = None;
        let (mut icmp_type, mut icmp_code) = (None, None);
        const SHARED: [u16; 6] = [0, 22, 80, 443, 1024, 65535];
        match proto {
            Proto::Tcp | Proto::Udp => {
                ports = match rng.gen_range(0..5) {
                    0 => None,
                    1 => Some((0, 65535)),
                    2 => {
                        let p = SHARED[rng.gen_range(0..SHARED.len())];
                        Some((p, p))
                    }
                    3 => {
                        let a = SHARED[rng.gen_range(0..SHARED.len())];
                        let b = SHARED[rng.gen_range(0..SHARED.len())];
                        Some((a.min(b), a.max(b)))
                    }
                    _ => {
                        let a = rng.gen::<u16>();
                        let b = a.saturating_add(rng.gen_range(0..2000));
                        Some((a, b))
                    }
                };
            }
            Proto::Icmp => {
                if rng.gen_bool(0.6) {
                    icmp_type = Some([0, 3, 8, 11, 255][rng.gen_range(0..5)]);
                }
                if rng.gen_bool(0.4) {
                    icmp_code = Some([0, 1, 3, 4, 255][rng.gen_range(0..5)]);
                }
            }
            _ => {}
        }
        AclRule {
            number,
            allow: rng.gen_bool(0.5),
            rule: Match {
                proto,
                ports,
                icmp_type,
                icmp_code,
                peer: Peer::Cidr(c),
            },
        }
    }

    fn random_acl(rng: &mut SmallRng, n: usize, catch_all: bool) -> Vec<AclRule> {
        (0..n)
            .map(|i| random_rule(rng, 100 + i64::try_from(i).unwrap(), catch_all))
            .collect()
    }

    /// Values at and around every boundary of the entries, per dimension.
    fn boundaries(rules: &[AclRule]) -> (Vec<u32>, Vec<u16>, Vec<u8>, Vec<u8>) {
        let mut addrs = vec![0, 1, u32::MAX - 1, u32::MAX];
        let mut ports = vec![0, 1, 65534, 65535];
        let mut types = vec![0, 1, 254, 255];
        let mut codes = vec![0, 1, 254, 255];
        for r in rules {
            let Peer::Cidr(c) = &r.rule.peer else {
                continue;
            };
            for a in [c.base, c.last()] {
                addrs.extend([a.wrapping_sub(1), a, a.wrapping_add(1)]);
            }
            if let Some((lo, hi)) = r.rule.ports {
                for p in [lo, hi] {
                    ports.extend([p.wrapping_sub(1), p, p.wrapping_add(1)]);
                }
            }
            if let Some(v) = r.rule.icmp_type {
                types.extend([v.wrapping_sub(1), v, v.wrapping_add(1)]);
            }
            if let Some(v) = r.rule.icmp_code {
                codes.extend([v.wrapping_sub(1), v, v.wrapping_add(1)]);
            }
        }
        (addrs, ports, types, codes)
    }

    fn pick<T: Copy>(rng: &mut SmallRng, v: &[T], random: impl FnOnce(&mut SmallRng) -> T) -> T {
        if rng.gen_bool(0.85) {
            v[rng.gen_range(0..v.len())]
        } else {
            random(rng)
        }
    }

    /// Compares the compiled ACL with the entry-by-entry evaluation; returns its size.
    fn check_acl(rng: &mut SmallRng, rules: &[AclRule], packets: usize) -> usize {
        let c = compile(rules);
        assert_disjoint(&c);
        let (addrs, ports, types, codes) = boundaries(rules);
        const PROTOS: [u8; 9] = [0, 1, 6, 17, 49, 50, 51, 132, 255];
        for _ in 0..packets {
            let a = Ipv4Addr::from(pick(rng, &addrs, |r| r.gen()));
            let proto = pick(rng, &PROTOS, |r| r.gen());
            let (pt, code) = if proto == 1 {
                (
                    u16::from(pick(rng, &types, |r| r.gen())),
                    pick(rng, &codes, |r| r.gen()),
                )
            } else {
                (pick(rng, &ports, |r| r.gen()), rng.gen())
            };
            assert_eq!(
                c.allows(a, proto, pt, code),
                brute(rules, a, proto, pt, code),
                "packet {a} proto {proto} port/type {pt} code {code}\nrules {rules:#?}\ncompiled {c:#?}"
            );
        }
        c.len()
    }

    #[test]
    fn randomized_differential() {
        let (mut acls, mut regions, mut most) = (0, 0, 0);
        for seed in 0..6u64 {
            let mut rng = SmallRng::seed_from_u64(0xac1 + seed);
            for _ in 0..40 {
                let n = rng.gen_range(1..=60);
                let catch_all = rng.gen_bool(0.7);
                let rules = random_acl(&mut rng, n, catch_all);
                let len = check_acl(&mut rng, &rules, 2500);
                acls += 1;
                regions += len;
                most = most.max(len);
            }
        }
        println!("differential: {acls} ACLs, {regions} regions, at most {most} in one");
    }

    /// The blow-up case: /32 entries that each deny TCP from a different
    /// port upwards, then allows of many small port ranges for any address.
    /// Every address cell sees a different prefix of the allows, in either
    /// dimension order, so the regions grow as n^2 / 4.
    #[test]
    fn adversarial_grid() {
        let n = 100u32;
        let mut rules: Vec<AclRule> = (0..n)
            .map(|i| {
                let mut r = entry(i64::from(i), false, Proto::Tcp, "0.0.0.0/0");
                r.rule.peer = Peer::Cidr(Cidr {
                    base: u32::from(ip("10.0.0.0")) + i * 2,
                    prefix: 32,
                });
                with_ports(r, u16::try_from(i * 100 + 50).unwrap(), 65535)
            })
            .collect();
        rules.extend((0..n).map(|j| {
            let r = entry(i64::from(n + j), true, Proto::Tcp, "0.0.0.0/0");
            let lo = u16::try_from(j * 100).unwrap();
            with_ports(r, lo, lo + 9)
        }));
        let t = Instant::now();
        let c = compile(&rules);
        let took = t.elapsed();
        println!(
            "adversarial {} entries: {} port + {} icmp + {} other regions in {:?}",
            rules.len(),
            c.ports.len(),
            c.icmp.len(),
            c.other.len(),
            took
        );
        assert!(c.ports.len() > (n * n / 4) as usize);
        let mut rng = SmallRng::seed_from_u64(7);
        check_acl(&mut rng, &rules, 3000);
    }

    #[test]
    fn randomized_200_entries_timing() {
        let mut rng = SmallRng::seed_from_u64(200);
        for catch_all in [true, false, false, false] {
            let rules = random_acl(&mut rng, 200, catch_all);
            let t = Instant::now();
            let c = compile(&rules);
            let took = t.elapsed();
            println!(
                "200 random entries (catch-all {catch_all}): {} port + {} icmp + {} other regions in {:?}",
                c.ports.len(),
                c.icmp.len(),
                c.other.len(),
                took
            );
            check_acl(&mut rng, &rules, 3000);
        }
    }

    #[test]
    fn many_non_matching_entries_then_allow() {
        for prefix in [32u8, 24] {
            let mut rules: Vec<AclRule> = (0..100u32)
                .map(|i| {
                    let base = u32::from(ip("198.18.0.0")) + (i << (32 - prefix));
                    let c = Cidr::new(Ipv4Addr::from(base), prefix).unwrap();
                    let mut r = entry(i64::from(i) + 1, false, Proto::Tcp, "0.0.0.0/0");
                    r.rule.peer = Peer::Cidr(c);
                    let port = 10000 + u16::try_from(i).unwrap();
                    with_ports(r, port, port)
                })
                .collect();
            rules.push(entry(32766, true, Proto::All, "0.0.0.0/0"));
            let t = Instant::now();
            let c = compile(&rules);
            let took = t.elapsed();
            println!(
                "100 /{prefix} denies + allow all: {} port + {} icmp + {} other regions in {:?}",
                c.ports.len(),
                c.icmp.len(),
                c.other.len(),
                took
            );
            assert_eq!((c.icmp.len(), c.other.len()), (1, 1));
            let mut rng = SmallRng::seed_from_u64(u64::from(prefix));
            check_acl(&mut rng, &rules, 3000);
        }
    }
}
