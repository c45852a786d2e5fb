//! One VPC spread over two hosts, with real packets (as root): each "host"
//! is a network namespace holding an underlay address (198.51.100.0/24,
//! joined by a veth that plays the switch); each runs Cove's own plan of the
//! VPC for the ENIs placed on it (its router namespace, its ENIs, its
//! nftables table, under its own instance tag) and the VPC's overlay
//! (`cove_net::overlay`, `linux::apply_overlay`): a VXLAN link made from the
//! host namespace into the router's, with a host route, a static neighbour
//! and a forwarding entry for every ENI on the other host.
//! This is the overlay of issue 18 (the model of flannel's VXLAN backend)
//! checked against the rules Cove installs: security groups and network
//! ACLs are enforced on the host of each ENI, group references include the
//! ENIs of both hosts, and the reachability model agrees with the kernel.
//! Everything is removed on drop, also when a test fails.

mod common;

use common::two_hosts::{lab, Lab};
use cove_model::fixtures::*;
use cove_model::vpc::*;

fn everything_out() -> Vec<SgRule> {
    vec![rule("-1", None, None, cidr("0.0.0.0/0"))]
}

#[test]
fn security_groups_are_enforced_on_the_host_of_each_eni() {
    let web = group(
        "sg-web",
        vec![rule("tcp", Some(22), Some(22), cidr("10.0.0.0/16"))],
        everything_out(),
    );
    let lab = lab(
        vec![web],
        [&["sg-web"], &["sg-web"], &["sg-web"]],
        vec![allow_all_acl("acl-d", &["subnet-a", "subnet-b"])],
    );
    for addr in ["10.0.1.4", "10.0.2.4"] {
        lab.listen(ip(addr), 22);
        lab.listen(ip(addr), 80);
    }
    lab.expect("10.0.1.4", "10.0.2.4", 22, true); // host 0 -> host 1
    lab.expect("10.0.2.4", "10.0.1.4", 22, true); // host 1 -> host 0
    lab.expect("10.0.1.5", "10.0.1.4", 22, true); // on host 0
    lab.expect("10.0.1.4", "10.0.2.4", 80, false); // no rule, dropped on host 1
    lab.expect("10.0.2.4", "10.0.1.4", 80, false); // no rule, dropped on host 0
}

#[test]
fn group_references_include_the_enis_of_every_host() {
    let members = group(
        "sg-members",
        vec![rule(
            "-1",
            None,
            None,
            SgPeer::Group {
                group_id: "sg-members".into(),
                user_id: ACCOUNT.into(),
            },
        )],
        everything_out(),
    );
    let outsider = group("sg-outsider", vec![], everything_out());
    let lab = lab(
        vec![members, outsider],
        [&["sg-members"], &["sg-outsider"], &["sg-members"]],
        vec![allow_all_acl("acl-d", &["subnet-a", "subnet-b"])],
    );
    lab.listen(ip("10.0.2.4"), 8080);
    lab.listen(ip("10.0.1.4"), 8080);
    lab.expect("10.0.1.4", "10.0.2.4", 8080, true); // a member on the other host
    lab.expect("10.0.2.4", "10.0.1.4", 8080, true);
    lab.expect("10.0.1.5", "10.0.2.4", 8080, false); // not a member
}

#[test]
fn network_acls_are_enforced_statelessly_across_hosts() {
    let open = group(
        "sg-open",
        vec![rule("-1", None, None, cidr("10.0.0.0/16"))],
        everything_out(),
    );
    // Subnet b admits port 22 only and lets out only the replies' ephemeral
    // ports: a reply from b to a's port 22 server is then dropped on host 1.
    let mut acl_b = allow_all_acl("acl-b", &["subnet-b"]);
    acl_b.entries = vec![
        entry(100, false, "tcp", true, "0.0.0.0/0", Some((22, 22))),
        entry(100, true, "tcp", true, "0.0.0.0/0", Some((32768, 65535))),
    ];
    let lab = lab(
        vec![open],
        [&["sg-open"], &["sg-open"], &["sg-open"]],
        vec![allow_all_acl("acl-a", &["subnet-a"]), acl_b],
    );
    for port in [22, 80] {
        lab.listen(ip("10.0.2.4"), port);
        lab.listen(ip("10.0.1.4"), port);
    }
    lab.expect("10.0.1.4", "10.0.2.4", 22, true);
    lab.expect("10.0.1.4", "10.0.2.4", 80, false); // b's ingress
    lab.expect("10.0.2.4", "10.0.1.4", 22, false); // b's egress allows only ephemeral ports
}

/// The lab with every ENI in one group open to the VPC, and an allow-all ACL.
fn open_lab(acl: &str) -> Lab {
    let open = group(
        "sg-open",
        vec![rule("-1", None, None, cidr("10.0.0.0/16"))],
        vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
    );
    lab(
        vec![open],
        [&["sg-open"], &["sg-open"], &["sg-open"]],
        vec![allow_all_acl(acl, &["subnet-a", "subnet-b"])],
    )
}

#[test]
fn an_eni_gone_from_the_other_host_is_no_longer_routed_into_the_overlay() {
    let lab = open_lab("acl-d");
    lab.listen(ip("10.0.2.4"), 22);
    assert!(lab.connects(ip("10.0.1.4"), ip("10.0.2.4"), 22));
    // Host 1 now holds another ENI instead of 10.0.2.4.
    let (h0, h1) = (&lab.hosts[0], &lab.hosts[1]);
    let moved = [
        (h0.underlay, ip("10.0.1.4")),
        (h1.underlay, ip("10.0.2.99")),
    ];
    let plan = cove_net::overlay::plan(&h0.plan.vpc_id, h0.underlay, moved, None).unwrap();
    cove_dataplane::linux::apply_overlay(Some(&h0.netns), &h0.plan.netns, &plan).unwrap();
    let routes = std::process::Command::new("ip")
        .args(["-n", &h0.plan.netns, "route", "show"])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        routes.contains(&format!("10.0.2.99 dev {}", plan.link)),
        "{routes}"
    );
    assert!(!routes.contains("10.0.2.4 "), "{routes}");
    assert!(!lab.connects(ip("10.0.1.4"), ip("10.0.2.4"), 22));
}

#[test]
fn an_overlay_changed_entry_by_entry_equals_one_made_whole() {
    let lab = open_lab("acl-c");
    lab.listen(ip("10.0.2.4"), 22);
    assert!(lab.connects(ip("10.0.1.4"), ip("10.0.2.4"), 22));
    let (h0, h1) = (&lab.hosts[0], &lab.hosts[1]);
    let vpc = &h0.plan.vpc_id;
    let plan = |placed: &[(std::net::Ipv4Addr, &str)]| {
        cove_net::overlay::plan(
            vpc,
            h0.underlay,
            placed.iter().map(|(h, e)| (*h, ip(e))),
            None,
        )
        .unwrap()
    };
    let before = plan(&[(h0.underlay, "10.0.1.4"), (h1.underlay, "10.0.2.4")]);
    // 10.0.2.4 leaves host 1 (another ENI comes there): only its entries go.
    let after = plan(&[(h0.underlay, "10.0.1.4"), (h1.underlay, "10.0.2.99")]);
    let changes = cove_net::overlay::changes(&before, &after);
    assert_eq!(changes.enis_remove, vec![ip("10.0.2.4")]);
    cove_dataplane::linux::change_overlay(&h0.plan.netns, &after, &changes).unwrap();
    let show = |what: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(["-n", &h0.plan.netns])
            .args(what)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (routes, neighbours) = (show(&["route", "show"]), show(&["neigh", "show"]));
    assert!(
        routes.contains(&format!("10.0.2.99 dev {}", after.link)),
        "{routes}"
    );
    assert!(!routes.contains("10.0.2.4 "), "{routes}");
    assert!(!neighbours.contains("10.0.2.4 "), "{neighbours}");
    assert!(!lab.connects(ip("10.0.1.4"), ip("10.0.2.4"), 22));
    // Back again, entry by entry: reachable as before.
    let back = cove_net::overlay::changes(&after, &before);
    cove_dataplane::linux::change_overlay(&h0.plan.netns, &before, &back).unwrap();
    assert!(lab.connects(ip("10.0.1.4"), ip("10.0.2.4"), 22));
    // Host 1 holds nothing any more: its forwarding entry goes too.
    let alone = cove_net::overlay::plan(
        vpc,
        h0.underlay,
        [(h0.underlay, ip("10.0.1.4"))],
        Some(h1.underlay),
    )
    .unwrap();
    let gone = cove_net::overlay::changes(&before, &alone);
    assert!(
        gone.forward_remove.is_empty(),
        "host 1 is still the gateway"
    );
    cove_dataplane::linux::change_overlay(&h0.plan.netns, &alone, &gone).unwrap();
    assert!(!lab.connects(ip("10.0.1.4"), ip("10.0.2.4"), 22));
    assert!(show(&["neigh", "show"]).contains(&cove_net::overlay::GATEWAY_HOP.to_string()));
}

#[test]
fn a_host_whose_underlay_address_changed_remakes_its_overlay_link() {
    let lab = open_lab("acl-u");
    let (h0, h1) = (&lab.hosts[0], &lab.hosts[1]);
    let vpc = &h0.plan.vpc_id;
    let identity = || {
        cove_dataplane::netlink::Netlink::in_netns(&h0.plan.netns)
            .unwrap()
            .vxlan_identity(&cove_net::overlay::link_name(vpc))
            .unwrap()
            .expect("the overlay link")
    };
    assert_eq!(identity().1, h0.underlay);
    // Host 0 comes back with another underlay address.
    let moved_to = ip("198.51.100.9");
    let placed = [(moved_to, ip("10.0.1.4")), (h1.underlay, ip("10.0.2.4"))];
    let plan = cove_net::overlay::plan(vpc, moved_to, placed, None).unwrap();
    cove_dataplane::linux::apply_overlay(Some(&h0.netns), &h0.plan.netns, &plan).unwrap();
    let (vni, local, mac) = identity();
    assert_eq!((vni, local, mac), (plan.vni, moved_to, plan.mac));
    // Its routes are there again on the new link.
    let out = std::process::Command::new("ip")
        .args(["-n", &h0.plan.netns, "route", "show", "10.0.2.4"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&plan.link));
}
