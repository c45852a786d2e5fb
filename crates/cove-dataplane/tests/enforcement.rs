//! Real packets through the rules Cove installs. Each test builds one VPC's
//! namespaces, veths and nftables ruleset from a plan (as root), opens TCP
//! listeners inside an ENI's namespace and connects from others, and checks
//! that the kernel and the reachability model (`cove-reach`, which reads the
//! stored resources, not the plan) agree on every probe. Everything is
//! removed on drop, also when a test fails.

mod common;

use cove_dataplane::linux;
use cove_model::vpc::*;
use cove_net::fixtures::*;
use cove_net::netns;
use cove_net::plan::{plan_vpc, RouterPlan};
use cove_net::{nft, ruleset};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static LABS: AtomicUsize = AtomicUsize::new(0);

/// A VPC made real for one test; torn down on drop.
struct Lab {
    tag: String,
    plan: RouterPlan,
    world: cove_model::world::World,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = linux::remove(&self.plan) {
            eprintln!("cleanup failed: {e}");
        }
    }
}

fn unique_tag() -> String {
    format!(
        "{:x}{}",
        std::process::id(),
        LABS.fetch_add(1, Ordering::Relaxed)
    )
}

fn lab(
    tag: &str,
    groups: Vec<SecurityGroup>,
    eni_groups: [&[&str]; 3],
    acls: Vec<NetworkAcl>,
) -> Lab {
    assert!(
        cove_sys::is_root(),
        "the data-plane tests need root (they create network namespaces)"
    );
    let w = world(tag, groups, eni_groups, acls);
    let plan = plan_vpc(&w, tag, &format!("vpc-1{tag}")).expect("fixture VPC");
    let lab = Lab {
        tag: tag.to_string(),
        plan,
        world: w,
    };
    linux::apply(&lab.plan).expect("applying the plan");
    // Applying again must succeed and change nothing that matters.
    linux::apply(&lab.plan).expect("re-applying the plan");
    // The table reads back from the kernel as exactly what was planned.
    let observed = linux::observe_rules(&lab.plan.netns).expect("listing the table");
    assert_eq!(
        ruleset::diff(observed.as_ref(), &nft::render(&lab.plan)),
        vec![],
        "the kernel holds the planned table"
    );
    lab
}

impl Lab {
    /// Re-plans after `change` and applies the difference as the reconciler
    /// would, returning what the transaction held.
    fn change(&mut self, change: impl FnOnce(&mut cove_model::world::World)) -> ruleset::OpCounts {
        change(&mut self.world);
        let plan = plan_vpc(&self.world, &self.tag, &self.plan.vpc_id).expect("fixture VPC");
        let observed = linux::observe_rules(&plan.netns).expect("listing the table");
        let ops = ruleset::diff(observed.as_ref(), &nft::render(&plan));
        linux::apply_rule_ops(&plan.netns, &ops).expect("the kernel accepts the diff");
        self.plan = plan;
        ruleset::count(&ops)
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

impl Lab {
    fn netns_of(&self, addr: Ipv4Addr) -> String {
        self.plan
            .eni_by_ip(addr)
            .expect("an ENI of the lab")
            .netns
            .clone()
    }

    /// Listens on `addr:port` inside that ENI's namespace, accepting forever.
    fn listen(&self, addr: Ipv4Addr, port: u16) {
        common::listen_in(&self.netns_of(addr), addr, port);
    }

    /// Whether a TCP connection from `src` (optionally from a fixed port) to `dst:port` completes.
    fn connects(&self, src: Ipv4Addr, src_port: u16, dst: Ipv4Addr, port: u16) -> bool {
        netns::run_in(&self.netns_of(src), move || {
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            sock.set_reuse_address(true).ok();
            sock.bind(&SocketAddr::V4(SocketAddrV4::new(src, src_port)).into())
                .expect("bind");
            let to: SocketAddr = SocketAddrV4::new(dst, port).into();
            sock.connect_timeout(&to.into(), Duration::from_millis(700))
                .is_ok()
        })
        .expect("entering the namespace")
    }

    /// Probes with real packets and checks the evaluator predicts the same.
    fn expect(&self, src: &str, src_port: u16, dst: &str, port: u16, allowed: bool) {
        let (s, d) = (ip(src), ip(dst));
        let kernel = self.connects(s, src_port, d, port);
        let eni = |a: Ipv4Addr| {
            self.plan
                .eni_by_ip(a)
                .expect("an ENI of the lab")
                .id
                .clone()
        };
        common::assert_agree(
            &self.world,
            (src, &eni(s)),
            (dst, &eni(d)),
            (port, Some(src_port)),
            kernel,
            allowed,
        );
    }
}

fn everything_out() -> Vec<SgRule> {
    vec![rule("-1", None, None, cidr("0.0.0.0/0"))]
}

#[test]
fn security_groups_admit_only_their_rules() {
    let web = group(
        "sg-web",
        vec![rule("tcp", Some(22), Some(22), cidr("10.0.0.0/16"))],
        everything_out(),
    );
    let silent = group(
        "sg-silent",
        vec![rule("tcp", Some(22), Some(22), cidr("10.0.0.0/16"))],
        vec![],
    );
    let tag = unique_tag();
    let lab = lab(
        &tag,
        vec![web, silent],
        [&["sg-web"], &["sg-web"], &["sg-web"]],
        vec![allow_all_acl("acl-d", &["subnet-a", "subnet-b"])],
    );
    lab.listen(ip("10.0.1.4"), 22);
    lab.listen(ip("10.0.1.4"), 80);
    lab.expect("10.0.2.4", 41000, "10.0.1.4", 22, true); // across subnets
    lab.expect("10.0.1.5", 41001, "10.0.1.4", 22, true); // within the subnet, still through the router
    lab.expect("10.0.2.4", 41002, "10.0.1.4", 80, false); // no rule for port 80
}

#[test]
fn group_references_and_missing_egress() {
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
    let mute = group(
        "sg-mute",
        vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
        vec![],
    );
    let tag = unique_tag();
    let lab = lab(
        &tag,
        vec![members, mute],
        [&["sg-members"], &["sg-members"], &["sg-mute"]],
        vec![allow_all_acl("acl-d", &["subnet-a", "subnet-b"])],
    );
    lab.listen(ip("10.0.1.4"), 5432);
    lab.listen(ip("10.0.2.4"), 5432);
    lab.expect("10.0.1.5", 42000, "10.0.1.4", 5432, true); // a member reaches a member
    lab.expect("10.0.2.4", 42001, "10.0.1.4", 5432, false); // b1 has no egress rule at all
    lab.expect("10.0.1.4", 42002, "10.0.2.4", 5432, true); // b1 admits everything in
}

#[test]
fn nacl_denies_the_reply_even_for_an_established_flow() {
    let open = group(
        "sg-open",
        vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
        everything_out(),
    );
    // Subnet a admits TCP 22 but lets replies out only to ports 1024-2048.
    let mut acl_a = allow_all_acl("acl-a", &["subnet-a"]);
    acl_a.entries = vec![
        entry(100, false, "tcp", true, "10.0.0.0/16", Some((22, 22))),
        entry(100, true, "tcp", true, "10.0.0.0/16", Some((1024, 2048))),
    ];
    let tag = unique_tag();
    let lab = lab(
        &tag,
        vec![open],
        [&["sg-open"], &["sg-open"], &["sg-open"]],
        vec![acl_a, allow_all_acl("acl-d", &["subnet-b"])],
    );
    lab.listen(ip("10.0.1.4"), 22);
    lab.listen(ip("10.0.1.4"), 80);
    lab.expect("10.0.2.4", 1500, "10.0.1.4", 22, true);
    lab.expect("10.0.2.4", 40000, "10.0.1.4", 22, false); // reply to an ephemeral port is dropped
    lab.expect("10.0.2.4", 1501, "10.0.1.4", 80, false); // request denied by the * rule
    lab.expect("10.0.1.5", 40001, "10.0.1.4", 80, true); // within subnet a, no ACL
}

#[test]
fn deny_entry_numbered_before_an_allow_wins() {
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
    let tag = unique_tag();
    let lab = lab(
        &tag,
        vec![open],
        [&["sg-open"], &["sg-open"], &["sg-open"]],
        vec![acl_a, allow_all_acl("acl-d", &["subnet-b"])],
    );
    lab.listen(ip("10.0.1.4"), 22);
    lab.listen(ip("10.0.1.4"), 23);
    lab.expect("10.0.2.4", 43000, "10.0.1.4", 22, false);
    lab.expect("10.0.2.4", 43001, "10.0.1.4", 23, true);
}

#[test]
fn nothing_is_left_behind() {
    let tag = unique_tag();
    let names = {
        let lab = lab(
            &tag,
            vec![],
            [&[], &[], &[]],
            vec![allow_all_acl("acl-d", &["subnet-a", "subnet-b"])],
        );
        let mut n: Vec<String> = lab.plan.enis.iter().map(|e| e.netns.clone()).collect();
        n.push(lab.plan.netns.clone());
        for name in &n {
            assert!(linux::netns_exists(name), "{name} made");
        }
        n
    };
    for name in &names {
        assert!(!linux::netns_exists(name), "{name} removed");
    }
}

#[test]
fn a_workload_may_listen_on_low_ports_in_its_own_namespace_only() {
    let tag = unique_tag();
    let lab = lab(
        &tag,
        vec![],
        [&[], &[], &[]],
        vec![allow_all_acl("acl-d", &["subnet-a", "subnet-b"])],
    );
    let start = || {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .expect("reading the sysctl")
            .trim()
            .to_string()
    };
    for e in &lab.plan.enis {
        assert_eq!(
            netns::run_in(&e.netns, start).expect("entering"),
            "0",
            "{}",
            e.netns
        );
    }
    // The router's namespace and the host keep the kernel's default.
    assert_eq!(
        netns::run_in(&lab.plan.netns, start).expect("entering"),
        "1024"
    );
    assert_eq!(start(), "1024");
}

#[test]
fn a_process_cannot_spoof_another_source_address() {
    let open = group(
        "sg-open",
        vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
        everything_out(),
    );
    let tag = unique_tag();
    let lab = lab(
        &tag,
        vec![open],
        [&["sg-open"], &["sg-open"], &["sg-open"]],
        vec![allow_all_acl("acl-d", &["subnet-a", "subnet-b"])],
    );
    // a1 records the source of every datagram it receives on port 9999.
    let a1 = lab.netns_of(ip("10.0.1.4"));
    let receiver = netns::run_in(&a1, || std::net::UdpSocket::bind("10.0.1.4:9999"))
        .expect("netns")
        .expect("bind");
    receiver
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let received = move || {
        let mut buf = [0u8; 16];
        receiver.recv_from(&mut buf).ok().map(|(_, from)| from.ip())
    };
    let received = std::sync::Mutex::new(received);
    let send_from = |src: &'static str| {
        let b1 = lab.netns_of(ip("10.0.2.4"));
        netns::run_in(&b1, move || {
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
                .expect("socket");
            sock.bind(&SocketAddr::V4(SocketAddrV4::new(ip(src), 0)).into())
                .expect("bind");
            let to: SocketAddr = SocketAddrV4::new(ip("10.0.1.4"), 9999).into();
            sock.send_to(b"hi", &to.into()).expect("send");
        })
        .expect("entering the namespace");
    };
    // Control: b1's own address gets through.
    send_from("10.0.2.4");
    assert_eq!((received.lock().unwrap())(), Some(ip("10.0.2.4").into()));
    // Root inside b1's namespace gives itself another address and sends from it.
    let b1 = lab.netns_of(ip("10.0.2.4"));
    let status = std::process::Command::new("ip")
        .args(["-n", &b1, "addr", "add", "10.0.2.99/32", "dev", "eth0"])
        .status()
        .expect("ip");
    assert!(status.success());
    send_from("10.0.2.99");
    assert_eq!(
        (received.lock().unwrap())(),
        None,
        "a spoofed source address must be dropped at the router"
    );
}

#[test]
fn addresses_of_the_vpc_no_eni_has_are_dropped_by_the_router() {
    let tag = unique_tag();
    let l = lab(
        &tag,
        vec![],
        [&[], &[], &[]],
        vec![allow_all_acl("acl-default", &["subnet-a", "subnet-b"])],
    );
    let ip_route = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(["-n", &l.plan.netns, "route"])
            .args(args)
            .output()
            .expect("ip route");
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    // The kernel refuses to resolve a route to a blackhole (EINVAL) and
    // resolves an ENI's address to its veth.
    assert!(ip_route(&["show", "type", "blackhole"]).contains("10.0.0.0/16"));
    assert!(ip_route(&["get", "10.0.9.9"]).contains("Invalid argument"));
    assert!(ip_route(&["get", "10.0.1.4"]).contains("dev cve"));
}

#[test]
fn rule_and_membership_changes_are_small_transactions_enforced_at_once() {
    let web = group(
        "sg-web",
        vec![rule("tcp", Some(22), Some(22), cidr("10.0.0.0/16"))],
        everything_out(),
    );
    let clients = group("sg-clients", vec![], everything_out());
    let tag = unique_tag();
    let mut lab = lab(
        &tag,
        vec![web, clients],
        [&["sg-web"], &["sg-clients"], &["sg-clients"]],
        vec![allow_all_acl("acl-d", &["subnet-a", "subnet-b"])],
    );
    lab.listen(ip("10.0.1.4"), 8080);
    lab.expect("10.0.2.4", 43000, "10.0.1.4", 8080, false);
    // A rule from the clients' group: only the web ENI's ingress chain is written.
    let counts = lab.change(|w| {
        let g = w
            .security_groups
            .get_mut("sg-web")
            .map(std::sync::Arc::make_mut)
            .expect("group");
        g.ingress.push(tcp_from_group(8080, "sg-clients"));
    });
    assert_eq!(
        (counts.chains_written, counts.elems_changed, counts.other),
        (1, 0, 0),
        "{counts:?}"
    );
    lab.expect("10.0.2.4", 43001, "10.0.1.4", 8080, true);
    // The client leaves the group: one set element goes, no chain changes.
    let counts = lab.change(|w| {
        let b1 = eni_with_ip(w, "10.0.2.4");
        w.network_interfaces
            .get_mut(&b1)
            .map(std::sync::Arc::make_mut)
            .expect("b1")
            .group_ids = vec!["sg-web".into()];
    });
    assert_eq!(
        counts.elems_changed, 2,
        "out of sg-clients, into sg-web: {counts:?}"
    );
    assert_eq!(counts.other, 0, "{counts:?}");
    lab.expect("10.0.2.4", 43002, "10.0.1.4", 8080, false);
}
