//! What a [`RouterPlan`] lets a packet do, with AWS's semantics: a new
//! connection needs the source ENI's security groups to allow it out, the
//! destination ENI's groups to allow it in, and, when it crosses subnets,
//! both subnets' network ACLs to allow it *and its reply* (ACLs are
//! stateless; groups are not). The kernel rules Cove installs must agree
//! with this function; the reachability analysis reuses it.

use crate::plan::{AclRule, Match, Proto, RouterPlan};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, …).
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
}

impl Packet {
    pub fn tcp(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16) -> Packet {
        Packet {
            src,
            dst,
            proto: 6,
            src_port,
            dst_port,
            icmp_type: 0,
            icmp_code: 0,
        }
    }
    pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16) -> Packet {
        Packet {
            proto: 17,
            ..Packet::tcp(src, dst, src_port, dst_port)
        }
    }
    pub fn ping(src: Ipv4Addr, dst: Ipv4Addr) -> Packet {
        Packet {
            src,
            dst,
            proto: 1,
            src_port: 0,
            dst_port: 0,
            icmp_type: 8,
            icmp_code: 0,
        }
    }

    /// The packet the destination sends back.
    pub fn reply(&self) -> Packet {
        let icmp_type = if self.proto == 1 && self.icmp_type == 8 {
            0
        } else {
            self.icmp_type
        };
        Packet {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            src_port: self.dst_port,
            dst_port: self.src_port,
            icmp_type,
            icmp_code: self.icmp_code,
        }
    }
}

/// The component that stopped a connection, with the deciding rule where one decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// `rule` is the ACL entry that denied, or `None` for the implicit `*` rule.
    AclEgress {
        acl: String,
        subnet: String,
        rule: Option<i64>,
        reply: bool,
    },
    AclIngress {
        acl: String,
        subnet: String,
        rule: Option<i64>,
        reply: bool,
    },
    GroupEgress {
        eni: String,
    },
    GroupIngress {
        eni: String,
    },
    /// No ENI of this VPC has the destination address.
    NoRoute,
}

/// Whether a rule's protocol, ports and ICMP fields match (the peer is checked separately).
fn matches_traffic(m: &Match, p: &Packet) -> bool {
    match m.proto {
        Proto::All => true,
        proto => {
            if proto.number() != Some(p.proto) {
                return false;
            }
            match proto {
                Proto::Tcp | Proto::Udp => m
                    .ports
                    .is_none_or(|(lo, hi)| (lo..=hi).contains(&p.dst_port)),
                Proto::Icmp => {
                    m.icmp_type.is_none_or(|t| t == p.icmp_type)
                        && m.icmp_code.is_none_or(|c| c == p.icmp_code)
                }
                _ => true,
            }
        }
    }
}

/// The first ACL entry that matches decides; none matching is the `*` deny.
fn acl_verdict(
    plan: &RouterPlan,
    rules: &[AclRule],
    p: &Packet,
    egress: bool,
) -> Result<(), Option<i64>> {
    let peer_ip = if egress { p.dst } else { p.src };
    for r in rules {
        if matches_traffic(&r.rule, p) && plan.peer_contains(&r.rule.peer, peer_ip) {
            return if r.allow { Ok(()) } else { Err(Some(r.number)) };
        }
    }
    Err(None)
}

fn subnet_of(plan: &RouterPlan, ip: Ipv4Addr) -> Option<&str> {
    plan.subnets
        .iter()
        .find(|(_, (c, _))| c.contains_addr(ip))
        .map(|(id, _)| id.as_str())
}

/// Checks the ACLs one packet crosses (none within a subnet).
fn acls_pass(plan: &RouterPlan, p: &Packet, reply: bool) -> Result<(), Blocked> {
    let (from, to) = (subnet_of(plan, p.src), subnet_of(plan, p.dst));
    if from == to {
        return Ok(());
    }
    if let Some(s) = from {
        let acl_id = &plan.subnets[s].1;
        if let Some(acl) = plan.acls.get(acl_id) {
            acl_verdict(plan, &acl.egress, p, true).map_err(|rule| Blocked::AclEgress {
                acl: acl_id.clone(),
                subnet: s.to_string(),
                rule,
                reply,
            })?;
        }
    }
    if let Some(s) = to {
        let acl_id = &plan.subnets[s].1;
        if let Some(acl) = plan.acls.get(acl_id) {
            acl_verdict(plan, &acl.ingress, p, false).map_err(|rule| Blocked::AclIngress {
                acl: acl_id.clone(),
                subnet: s.to_string(),
                rule,
                reply,
            })?;
        }
    }
    Ok(())
}

/// Whether a new connection (and its replies) between two ENIs of the VPC works.
pub fn connect(plan: &RouterPlan, p: &Packet) -> Result<(), Blocked> {
    let dst = plan.eni_by_ip(p.dst).ok_or(Blocked::NoRoute)?;
    acls_pass(plan, p, false)?;
    if let Some(src) = plan.eni_by_ip(p.src) {
        let out_ok = src
            .egress
            .iter()
            .any(|m| matches_traffic(m, p) && plan.peer_contains(&m.peer, p.dst));
        if !out_ok {
            return Err(Blocked::GroupEgress {
                eni: src.id.clone(),
            });
        }
    }
    let in_ok = dst
        .ingress
        .iter()
        .any(|m| matches_traffic(m, p) && plan.peer_contains(&m.peer, p.src));
    if !in_ok {
        return Err(Blocked::GroupIngress {
            eni: dst.id.clone(),
        });
    }
    // Groups are stateful: the reply needs no rule. ACLs are not.
    acls_pass(plan, &p.reply(), true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::plan::plan_vpc;
    use cove_model::vpc::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn open_acls() -> Vec<NetworkAcl> {
        vec![allow_all_acl("acl-default", &["subnet-a", "subnet-b"])]
    }

    fn everything_out() -> Vec<SgRule> {
        vec![rule("-1", None, None, cidr("0.0.0.0/0"))]
    }

    #[test]
    fn default_group_admits_its_members_only() {
        let default = group(
            "sg-default",
            vec![rule(
                "-1",
                None,
                None,
                SgPeer::Group {
                    group_id: "sg-default".into(),
                    user_id: ACCOUNT.into(),
                },
            )],
            everything_out(),
        );
        let other = group("sg-other", vec![], everything_out());
        let w = world(
            "",
            vec![default, other],
            [&["sg-default"], &["sg-default"], &["sg-other"]],
            open_acls(),
        );
        let plan = plan_vpc(&w, "t", "vpc-1").unwrap();
        assert_eq!(
            connect(
                &plan,
                &Packet::tcp(ip("10.0.1.4"), ip("10.0.1.5"), 40000, 22)
            ),
            Ok(())
        );
        assert_eq!(
            connect(
                &plan,
                &Packet::tcp(ip("10.0.2.4"), ip("10.0.1.5"), 40000, 22)
            ),
            Err(Blocked::GroupIngress {
                eni: "eni-a2".into()
            })
        );
        assert_eq!(plan.sets["sg_default"].len(), 2);
    }

    #[test]
    fn groups_are_unioned_and_ports_and_icmp_matter() {
        let web = group(
            "sg-web",
            vec![rule("tcp", Some(443), Some(443), cidr("10.0.0.0/16"))],
            everything_out(),
        );
        let ping = group(
            "sg-ping",
            vec![rule("icmp", Some(8), Some(-1), cidr("10.0.2.0/24"))],
            vec![],
        );
        let w = world(
            "",
            vec![web, ping],
            [&["sg-web", "sg-ping"], &[], &["sg-web"]],
            open_acls(),
        );
        let plan = plan_vpc(&w, "t", "vpc-1").unwrap();
        let (a1, b1) = (ip("10.0.1.4"), ip("10.0.2.4"));
        assert_eq!(connect(&plan, &Packet::tcp(b1, a1, 50000, 443)), Ok(()));
        assert!(matches!(
            connect(&plan, &Packet::tcp(b1, a1, 50000, 80)),
            Err(Blocked::GroupIngress { .. })
        ));
        assert_eq!(connect(&plan, &Packet::ping(b1, a1)), Ok(()));
        assert!(matches!(
            connect(&plan, &Packet::udp(b1, a1, 5000, 443)),
            Err(Blocked::GroupIngress { .. })
        ));
        // An ENI with no groups at all sends nothing.
        assert_eq!(
            connect(&plan, &Packet::tcp(ip("10.0.1.5"), b1, 40000, 443)),
            Err(Blocked::GroupEgress {
                eni: "eni-a2".into()
            })
        );
    }

    #[test]
    fn acls_are_stateless_and_skip_intra_subnet_traffic() {
        let open = group(
            "sg-open",
            vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
            everything_out(),
        );
        // Subnet a's ACL lets TCP 22 in but only lets replies out to ports 1024-2048.
        let mut acl_a = allow_all_acl("acl-a", &["subnet-a"]);
        acl_a.entries = vec![
            entry(100, false, "tcp", true, "10.0.0.0/16", Some((22, 22))),
            entry(100, true, "tcp", true, "10.0.0.0/16", Some((1024, 2048))),
        ];
        let acls = vec![acl_a, allow_all_acl("acl-default", &["subnet-b"])];
        let w = world(
            "",
            vec![open],
            [&["sg-open"], &["sg-open"], &["sg-open"]],
            acls,
        );
        let plan = plan_vpc(&w, "t", "vpc-1").unwrap();
        let (a1, a2, b1) = (ip("10.0.1.4"), ip("10.0.1.5"), ip("10.0.2.4"));
        assert_eq!(connect(&plan, &Packet::tcp(b1, a1, 1500, 22)), Ok(()));
        // The request passes, the reply to an ephemeral port the ACL does not allow is dropped.
        assert_eq!(
            connect(&plan, &Packet::tcp(b1, a1, 40000, 22)),
            Err(Blocked::AclEgress {
                acl: "acl-a".into(),
                subnet: "subnet-a".into(),
                rule: None,
                reply: true
            })
        );
        assert!(matches!(
            connect(&plan, &Packet::tcp(b1, a1, 1500, 80)),
            Err(Blocked::AclIngress {
                rule: None,
                reply: false,
                ..
            })
        ));
        // Within subnet a, the ACL is not crossed.
        assert_eq!(connect(&plan, &Packet::tcp(a2, a1, 40000, 80)), Ok(()));
    }

    #[test]
    fn lowest_numbered_acl_entry_wins() {
        let open = group(
            "sg-open",
            vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
            everything_out(),
        );
        let mut acl_a = allow_all_acl("acl-a", &["subnet-a"]);
        acl_a.entries.push(entry(
            50,
            false,
            "tcp",
            false,
            "10.0.2.0/24",
            Some((22, 22)),
        ));
        let acls = vec![acl_a, allow_all_acl("acl-default", &["subnet-b"])];
        let w = world(
            "",
            vec![open],
            [&["sg-open"], &["sg-open"], &["sg-open"]],
            acls,
        );
        let plan = plan_vpc(&w, "t", "vpc-1").unwrap();
        assert_eq!(
            connect(
                &plan,
                &Packet::tcp(ip("10.0.2.4"), ip("10.0.1.4"), 40000, 22)
            ),
            Err(Blocked::AclIngress {
                acl: "acl-a".into(),
                subnet: "subnet-a".into(),
                rule: Some(50),
                reply: false
            })
        );
        assert_eq!(
            connect(
                &plan,
                &Packet::tcp(ip("10.0.2.4"), ip("10.0.1.4"), 40000, 23)
            ),
            Ok(())
        );
    }

    #[test]
    fn plan_has_gateways_dns_and_prefix_lists() {
        let w = world("", vec![], [&[], &[], &[]], open_acls());
        let plan = plan_vpc(&w, "t", "vpc-1").unwrap();
        assert_eq!(
            plan.local_addrs,
            vec![ip("10.0.0.2"), ip("10.0.1.1"), ip("10.0.2.1")]
        );
        assert_eq!(plan.dns, ip("10.0.0.2"));
        let a1 = plan.eni_by_ip(ip("10.0.1.4")).unwrap();
        assert_eq!((a1.prefix, a1.gateway), (24, ip("10.0.1.1")));
        assert!(plan.sets.keys().any(|k| k.starts_with("pl_")));
        assert_eq!(
            connect(&plan, &Packet::tcp(ip("10.0.1.4"), ip("10.9.9.9"), 1, 2)),
            Err(Blocked::NoRoute)
        );
        assert!(plan_vpc(&w, "t", "vpc-missing").is_none());
    }
}
