//! The netlink module against the real kernel (as root): namespaces made
//! and named, veths, addresses, routes, policy rules and sysctls, each read
//! back both through the module and through iproute2 (`ip` is used here
//! only to check). Every namespace has a unique `covenltest-<pid>-<n>` name
//! and is removed on drop, also when a test fails; addresses are 10.x only.
//! The last test prints how long an ENI takes to plumb this way and with
//! `ip` processes.

use cove_dataplane::netlink::{
    self, create_netns, delete_netns, is_absent, sysctl_in, Netlink, PendingNetns, PolicyRule,
    Route, RouteKind, Selector, MAIN_TABLE,
};
use cove_model::cidr::Cidr;
use cove_net::netns::run_in;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static NAMES: AtomicUsize = AtomicUsize::new(0);

fn unique_name() -> String {
    format!(
        "covenltest-{}-{}",
        std::process::id(),
        NAMES.fetch_add(1, Ordering::Relaxed)
    )
}

fn require_root() {
    assert!(
        // SAFETY: geteuid has no preconditions.
        cove_sys::is_root(),
        "the netlink tests need root (they create network namespaces)"
    );
}

/// A named namespace owned by a test: removed on drop.
struct Ns(String);

impl Ns {
    /// A fresh named namespace.
    fn create() -> Ns {
        require_root();
        let ns = Ns(unique_name());
        create_netns(&ns.0).expect("creating a namespace");
        ns
    }

    /// A guard for a name that a [`PendingNetns`] will be published as.
    fn reserve() -> Ns {
        require_root();
        Ns(unique_name())
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    fn netlink(&self) -> Netlink {
        Netlink::in_netns(&self.0).expect("a socket in the namespace")
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Err(e) = delete_netns(&self.0) {
            eprintln!("cleanup of {} failed ({e}); trying ip", self.0);
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("ip prints UTF-8")
}

fn cidr(s: &str) -> Cidr {
    s.parse().expect("a CIDR")
}

fn index(nl: &mut Netlink, name: &str) -> u32 {
    nl.link_index(name)
        .expect("looking up a link")
        .unwrap_or_else(|| panic!("no link {name}"))
}

/// A link as `ip -j addr` shows it: name, IPv4 `(addr/len, noprefixroute)`s, up.
type ShownLink = (String, Vec<(String, bool)>, bool);

/// The links of namespace `ns` and their IPv4 addresses, as iproute2 sees them.
fn ip_addresses(ns: &str) -> Vec<ShownLink> {
    let listed: serde_json::Value =
        serde_json::from_str(&ip(&["-n", ns, "-j", "addr", "show"])).expect("ip -j prints JSON");
    listed
        .as_array()
        .expect("a list of links")
        .iter()
        .map(|link| {
            let name = link["ifname"].as_str().expect("a name").to_string();
            let up = link["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "UP"));
            let addrs = link["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["family"] == "inet")
                .map(|a| {
                    (
                        format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]),
                        a["noprefixroute"].as_bool() == Some(true),
                    )
                })
                .collect();
            (name, addrs, up)
        })
        .collect()
}

/// One ENI as the Linux backend makes it: a pending namespace joined to
/// the router by a veth, `eth0` up with its address and a default route
/// through the router, the router's side up with a host route, then named.
fn plumb_eni(
    router: &mut Netlink,
    router_link: &str,
    name: &str,
    eni_ip: Ipv4Addr,
    gateway: Ipv4Addr,
) {
    let eni = PendingNetns::new().expect("a pending namespace");
    router
        .add_veth(router_link, None, "eth0", eni.fd())
        .expect("adding the veth");
    let mut inside = eni.netlink().expect("a socket inside");
    let lo = index(&mut inside, "lo");
    let eth0 = index(&mut inside, "eth0");
    inside.set_up(lo).expect("lo up");
    inside.set_up(eth0).expect("eth0 up");
    inside
        .replace_address(eth0, eni_ip, 24, true)
        .expect("the ENI's address");
    inside
        .replace_route(&Route::new(
            MAIN_TABLE,
            Ipv4Addr::UNSPECIFIED,
            0,
            RouteKind::Via {
                gateway,
                oif: eth0,
                onlink: true,
            },
        ))
        .expect("the default route");
    let link = index(router, router_link);
    router.set_up(link).expect("router side up");
    router
        .replace_route(&Route::new(
            MAIN_TABLE,
            eni_ip,
            32,
            RouteKind::Dev { oif: link },
        ))
        .expect("the router's host route");
    eni.publish(name).expect("publishing");
}

#[test]
fn a_pending_namespace_appears_whole_and_carries_traffic() {
    let router = Ns::create();
    let mut r = router.netlink();
    let lo = index(&mut r, "lo");
    r.set_up(lo).unwrap();
    let gateway = Ipv4Addr::new(10, 0, 1, 1);
    let eni_ip = Ipv4Addr::new(10, 0, 1, 4);
    r.replace_address(lo, gateway, 32, false).unwrap();

    let eni = Ns::reserve();
    let pending = PendingNetns::new().unwrap();
    r.add_veth("cvrtest0", None, "eth0", pending.fd()).unwrap();
    assert!(!Path::new(&eni.path()).exists(), "not named before publish");

    let mut inside = pending.netlink().unwrap();
    let eth0 = index(&mut inside, "eth0");
    let eni_lo = index(&mut inside, "lo");
    inside.set_up(eni_lo).unwrap();
    inside.set_up(eth0).unwrap();
    // Twice: replace semantics.
    for _ in 0..2 {
        inside.replace_address(eth0, eni_ip, 24, true).unwrap();
        inside
            .replace_route(&Route::new(
                MAIN_TABLE,
                Ipv4Addr::UNSPECIFIED,
                0,
                RouteKind::Via {
                    gateway,
                    oif: eth0,
                    onlink: true,
                },
            ))
            .unwrap();
    }
    let link = index(&mut r, "cvrtest0");
    r.set_up(link).unwrap();
    r.replace_route(&Route::new(
        MAIN_TABLE,
        eni_ip,
        32,
        RouteKind::Dev { oif: link },
    ))
    .unwrap();
    assert!(!Path::new(&eni.path()).exists(), "not named before publish");

    pending.publish(&eni.0).unwrap();
    assert!(Path::new(&eni.path()).exists(), "named after publish");
    assert!(ip(&["netns", "list"])
        .lines()
        .any(|l| l.split_whitespace().next() == Some(&eni.0)));

    // What iproute2 sees is exactly what was configured.
    let mut seen = ip_addresses(&eni.0);
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("eth0".into(), vec![("10.0.1.4/24".into(), true)], true),
            ("lo".into(), vec![("127.0.0.1/8".into(), false)], true),
        ]
    );
    assert_eq!(
        ip(&["-n", &eni.0, "route", "show"]).trim(),
        "default via 10.0.1.1 dev eth0 onlink"
    );
    assert_eq!(
        ip(&["-n", &router.0, "route", "show"]).trim(),
        "10.0.1.4 dev cvrtest0 scope link"
    );
    let mut router_addrs = ip_addresses(&router.0);
    router_addrs.sort();
    assert_eq!(
        router_addrs,
        vec![
            ("cvrtest0".into(), vec![], true),
            (
                "lo".into(),
                vec![("127.0.0.1/8".into(), false), ("10.0.1.1/32".into(), false)],
                true
            ),
        ]
    );

    // Traffic both ways: a TCP listener in one namespace, a connect from the other.
    let (eni_name, router_name) = (eni.0.clone(), router.0.clone());
    for (listen_ns, listen_ip, connect_ns, expected_peer) in [
        (&router_name, gateway, &eni_name, eni_ip),
        (&eni_name, eni_ip, &router_name, gateway),
    ] {
        let peer = ping_pong(connect_ns, listen_ns, listen_ip).unwrap();
        assert_eq!(peer, std::net::IpAddr::V4(expected_peer));
    }
}

#[test]
fn routes_in_a_table_replace_list_and_delete() {
    let ns = Ns::create();
    let fd = std::fs::File::open(ns.path()).unwrap();
    let mut nl = ns.netlink();
    nl.add_veth("nla", None, "nlb", fd.as_fd()).unwrap();
    let a = index(&mut nl, "nla");
    let b = index(&mut nl, "nlb");
    nl.set_up(a).unwrap();
    nl.set_up(b).unwrap();
    nl.replace_address(a, Ipv4Addr::new(10, 9, 0, 1), 24, false)
        .unwrap();

    let via = Route::new(
        1000,
        Ipv4Addr::new(10, 20, 0, 0),
        16,
        RouteKind::Via {
            gateway: Ipv4Addr::new(10, 9, 0, 2),
            oif: a,
            onlink: false,
        },
    );
    let default_onlink = Route::new(
        1000,
        Ipv4Addr::UNSPECIFIED,
        0,
        RouteKind::Via {
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            oif: b,
            onlink: true,
        },
    );
    let dev = Route::new(
        1000,
        Ipv4Addr::new(10, 30, 1, 7),
        16,
        RouteKind::Dev { oif: b },
    );
    assert_eq!(dev.dest, cidr("10.30.0.0/16"), "host bits are cleared");
    let blackhole = Route::new(1000, Ipv4Addr::new(10, 40, 0, 0), 16, RouteKind::Blackhole);
    let small_table = Route::new(100, Ipv4Addr::new(10, 50, 0, 0), 16, RouteKind::Blackhole);
    let main_blackhole = Route::new(
        MAIN_TABLE,
        Ipv4Addr::new(10, 60, 0, 0),
        16,
        RouteKind::Blackhole,
    );
    let all = [
        via,
        default_onlink,
        dev,
        blackhole,
        small_table,
        main_blackhole,
    ];
    for _ in 0..2 {
        for route in &all {
            nl.replace_route(route).unwrap();
        }
    }
    let listed: BTreeSet<String> = nl
        .routes(1000)
        .unwrap()
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    let wanted: BTreeSet<String> = [via, default_onlink, dev, blackhole]
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    assert_eq!(listed, wanted, "table 1000 holds exactly its four routes");
    assert_eq!(nl.routes(100).unwrap(), vec![small_table]);
    let main = nl.routes(MAIN_TABLE).unwrap();
    assert!(main.contains(&main_blackhole));
    assert!(
        main.contains(&Route::new(
            MAIN_TABLE,
            Ipv4Addr::new(10, 9, 0, 0),
            24,
            RouteKind::Dev { oif: a }
        )),
        "the kernel's prefix route: {main:?}"
    );
    assert!(main.iter().all(|r| r.table == MAIN_TABLE));

    let shown = ip(&["-n", &ns.0, "route", "show", "table", "1000"]);
    let mut lines: Vec<&str> = shown.lines().map(str::trim).collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "10.20.0.0/16 via 10.9.0.2 dev nla",
            "10.30.0.0/16 dev nlb scope link",
            "blackhole 10.40.0.0/16",
            "default via 10.77.0.1 dev nlb onlink",
        ]
    );

    // Replacing changes a route's kind in place: still one route to 10.40/16.
    let unblocked = Route::new(
        1000,
        Ipv4Addr::new(10, 40, 0, 0),
        16,
        RouteKind::Dev { oif: a },
    );
    nl.replace_route(&unblocked).unwrap();
    let listed = nl.routes(1000).unwrap();
    assert_eq!(
        listed
            .iter()
            .filter(|r| r.dest == cidr("10.40.0.0/16"))
            .count(),
        1
    );
    assert!(listed.contains(&unblocked));

    // The kernel's reason comes with its errno.
    let unreachable_gateway = Route::new(
        1000,
        Ipv4Addr::new(10, 21, 0, 0),
        16,
        RouteKind::Via {
            gateway: Ipv4Addr::new(10, 123, 0, 1),
            oif: a,
            onlink: false,
        },
    );
    let err = nl.replace_route(&unreachable_gateway).unwrap_err();
    eprintln!("a refused route: {err}");
    assert_eq!(netlink::errno(&err), Some(libc::ENETUNREACH), "{err}");
    assert!(
        err.to_string()
            .contains("replacing route 10.21.0.0/16 via 10.123.0.1"),
        "{err}"
    );

    // Deleting is exact: a route of another kind to the same place stays.
    let err = nl.delete_route(&blackhole).unwrap_err();
    assert!(is_absent(&err), "{err}");
    for route in [
        via,
        default_onlink,
        dev,
        unblocked,
        small_table,
        main_blackhole,
    ] {
        nl.delete_route(&route).unwrap();
    }
    assert_eq!(nl.routes(1000).unwrap(), vec![]);
    assert_eq!(nl.routes(100).unwrap(), vec![]);
    assert!(!nl.routes(MAIN_TABLE).unwrap().contains(&main_blackhole));
    let err = nl.delete_route(&via).unwrap_err();
    assert!(is_absent(&err), "deleting twice says absent: {err}");
    assert_eq!(netlink::errno(&err), Some(libc::ESRCH));
    assert!(
        err.to_string().contains("deleting route 10.20.0.0/16"),
        "{err}"
    );
}

#[test]
fn policy_rules_add_list_and_delete() {
    let ns = Ns::create();
    let mut nl = ns.netlink();
    let defaults = nl.rules().unwrap();
    assert_eq!(
        defaults,
        vec![
            PolicyRule {
                priority: 0,
                selector: Selector::All,
                table: 255
            },
            PolicyRule {
                priority: 32766,
                selector: Selector::All,
                table: MAIN_TABLE
            },
            PolicyRule {
                priority: 32767,
                selector: Selector::All,
                table: 253
            },
        ]
    );
    let ours = [
        PolicyRule {
            priority: 100,
            selector: Selector::To(cidr("10.0.0.0/16")),
            table: MAIN_TABLE,
        },
        PolicyRule {
            priority: 1000,
            selector: Selector::From(cidr("10.0.1.0/24")),
            table: 1000,
        },
        PolicyRule {
            priority: 1001,
            selector: Selector::From(cidr("10.0.2.0/24")),
            table: 1001,
        },
        PolicyRule {
            priority: 1002,
            selector: Selector::From(cidr("10.0.3.0/24")),
            table: 10,
        },
    ];
    for _ in 0..2 {
        for rule in &ours {
            nl.add_rule(rule).unwrap();
        }
    }
    let listed = nl.rules().unwrap();
    let mut wanted = defaults.clone();
    wanted.extend(ours);
    wanted.sort_by_key(|r| r.priority);
    assert_eq!(listed, wanted, "each rule once, in priority order");

    let shown = ip(&["-n", &ns.0, "rule", "show"]);
    let lines: Vec<String> = shown
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        vec![
            "0: from all lookup local",
            "100: from all to 10.0.0.0/16 lookup main",
            "1000: from 10.0.1.0/24 lookup 1000",
            "1001: from 10.0.2.0/24 lookup 1001",
            "1002: from 10.0.3.0/24 lookup 10",
            "32766: from all lookup main",
            "32767: from all lookup default",
        ]
    );

    for rule in &ours {
        nl.delete_rule(rule).unwrap();
    }
    assert_eq!(nl.rules().unwrap(), defaults);
    let err = nl.delete_rule(&ours[1]).unwrap_err();
    assert!(is_absent(&err), "{err}");
}

#[test]
fn addresses_replace_list_and_delete() {
    let ns = Ns::create();
    let fd = std::fs::File::open(ns.path()).unwrap();
    let mut nl = ns.netlink();
    nl.add_veth("nla", None, "nlb", fd.as_fd()).unwrap();
    let a = index(&mut nl, "nla");
    nl.set_up(a).unwrap();
    let first = Ipv4Addr::new(10, 5, 0, 1);
    for _ in 0..2 {
        nl.replace_address(a, first, 24, false).unwrap();
    }
    assert_eq!(nl.addresses(a).unwrap(), vec![(first, 24)]);
    let prefix_route = Route::new(
        MAIN_TABLE,
        Ipv4Addr::new(10, 5, 0, 0),
        24,
        RouteKind::Dev { oif: a },
    );
    assert!(nl.routes(MAIN_TABLE).unwrap().contains(&prefix_route));

    let second = Ipv4Addr::new(10, 6, 0, 9);
    for _ in 0..2 {
        nl.replace_address(a, second, 24, true).unwrap();
    }
    assert_eq!(nl.addresses(a).unwrap(), vec![(first, 24), (second, 24)]);
    assert!(
        !nl.routes(MAIN_TABLE)
            .unwrap()
            .iter()
            .any(|r| r.dest == cidr("10.6.0.0/24")),
        "noprefixroute: no subnet route"
    );
    let seen = ip_addresses(&ns.0);
    let nla = seen.iter().find(|(n, _, _)| n == "nla").unwrap();
    assert_eq!(
        nla.1,
        vec![
            ("10.5.0.1/24".to_string(), false),
            ("10.6.0.9/24".to_string(), true)
        ]
    );

    // Loopback: 127.0.0.1/8 comes with lo up; others are added beside it.
    let lo = index(&mut nl, "lo");
    nl.set_up(lo).unwrap();
    nl.replace_address(lo, Ipv4Addr::new(10, 0, 0, 2), 32, false)
        .unwrap();
    assert_eq!(
        nl.addresses(lo).unwrap(),
        vec![(Ipv4Addr::LOCALHOST, 8), (Ipv4Addr::new(10, 0, 0, 2), 32)]
    );

    nl.delete_address(a, first, 24).unwrap();
    assert_eq!(nl.addresses(a).unwrap(), vec![(second, 24)]);
    let err = nl.delete_address(a, first, 24).unwrap_err();
    assert!(is_absent(&err), "{err}");
    nl.delete_address(a, second, 24).unwrap();
    assert_eq!(nl.addresses(a).unwrap(), vec![]);
}

#[test]
fn links_are_found_listed_and_deleted() {
    let ns = Ns::create();
    let peer = Ns::create();
    let peer_fd = std::fs::File::open(peer.path()).unwrap();
    let mut nl = ns.netlink();
    assert_eq!(nl.link_index("nope0").unwrap(), None);
    nl.add_veth("nlx", None, "nly", peer_fd.as_fd()).unwrap();
    let err = nl
        .add_veth("nlx", None, "nly", peer_fd.as_fd())
        .unwrap_err();
    assert_eq!(netlink::errno(&err), Some(libc::EEXIST), "{err}");
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert!(err.to_string().contains("adding veth nlx"), "{err}");

    let names: Vec<String> = nl.links().unwrap().into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, vec!["lo", "nlx"]);
    let mut in_peer = peer.netlink();
    let y = index(&mut in_peer, "nly");
    assert_eq!(
        in_peer.links().unwrap(),
        vec![(1, "lo".to_string()), (y, "nly".to_string())]
    );

    let x = index(&mut nl, "nlx");
    nl.delete_link(x).unwrap();
    assert_eq!(nl.link_index("nlx").unwrap(), None);
    assert_eq!(
        in_peer.link_index("nly").unwrap(),
        None,
        "a veth dies with its peer"
    );
    let err = nl.delete_link(x).unwrap_err();
    assert!(is_absent(&err), "{err}");
}

#[test]
fn sysctl_in_changes_only_the_namespace() {
    let ns = Ns::create();
    let host_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let read = |key: &str| {
        ip(&["netns", "exec", &ns.0, "sysctl", "-n", key])
            .trim()
            .to_string()
    };
    assert_eq!(read("net.ipv4.ip_forward"), "0");
    sysctl_in(&ns.0, "net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(read("net.ipv4.ip_forward"), "1");
    sysctl_in(&ns.0, "net.ipv4.conf.all.rp_filter", "0").unwrap();
    assert_eq!(read("net.ipv4.conf.all.rp_filter"), "0");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_before,
        "the host's value is unchanged"
    );
    // Through a pending namespace too, before it has a name.
    let pending = PendingNetns::new().unwrap();
    pending
        .sysctl("net.ipv4.conf.default.send_redirects", "0")
        .unwrap();
    let err = sysctl_in(&ns.0, "net.ipv4.no_such_knob", "1").unwrap_err();
    assert_eq!(netlink::errno(&err), Some(libc::ENOENT), "{err}");
    assert!(err.to_string().contains(&ns.0), "{err}");
}

#[test]
fn namespaces_are_created_and_deleted_idempotently() {
    let ns = Ns::create();
    create_netns(&ns.0).expect("creating again is fine");
    assert!(ip(&["netns", "list"])
        .lines()
        .any(|l| l.split_whitespace().next() == Some(&ns.0)));
    ip(&["-n", &ns.0, "link", "show", "lo"]);

    // A namespace of that name exists: publishing another refuses.
    let err = PendingNetns::new().unwrap().publish(&ns.0).unwrap_err();
    assert_eq!(netlink::errno(&err), Some(libc::EEXIST), "{err}");

    // Deleting takes a veth peer in another namespace with it (the kernel
    // frees the namespace in the background).
    let other = Ns::create();
    let fd = std::fs::File::open(ns.path()).unwrap();
    let mut in_other = other.netlink();
    in_other
        .add_veth("nlout", None, "nlin", fd.as_fd())
        .unwrap();
    drop(fd);
    delete_netns(&ns.0).unwrap();
    assert!(!Path::new(&ns.path()).exists());
    delete_netns(&ns.0).expect("deleting again is fine");
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_other.link_index("nlout").unwrap().is_some() {
        assert!(Instant::now() < deadline, "the peer outlived its namespace");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A leftover empty file (a crash between create and mount) is reused.
    std::fs::write(ns.path(), b"").unwrap();
    create_netns(&ns.0).unwrap();
    ip(&["-n", &ns.0, "link", "show", "lo"]);
    assert!(Netlink::in_netns("covenltest-never-made").is_err());
    assert!(create_netns("../etc").is_err());
}

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    // why: p is a fraction in 0..=1, so the rounded index lies in
    // 0..sorted_ms.len().
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = ((sorted_ms.len() as f64 - 1.0) * p).round() as usize;
    sorted_ms[i]
}

/// Not an assertion: how long an ENI takes, netlink against `ip`.
#[test]
fn timing_netlink_against_ip_processes() {
    let enis: usize = std::env::var("COVE_NL_BENCH_ENIS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let router = Ns::create();
    let mut r = router.netlink();
    let lo = index(&mut r, "lo");
    r.set_up(lo).unwrap();
    let gateway = Ipv4Addr::new(10, 0, 0, 1);
    r.replace_address(lo, gateway, 32, false).unwrap();

    let mut guards = Vec::new();
    let mut took = Vec::new();
    for i in 0..enis {
        let eni = Ns::reserve();
        let ip_addr =
            Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 16, 0)) + u32::try_from(i).unwrap() + 4);
        let start = Instant::now();
        plumb_eni(&mut r, &format!("cvt{i}"), &eni.0, ip_addr, gateway);
        took.push(start.elapsed().as_secs_f64() * 1000.0);
        guards.push(eni);
    }
    // Dumps spanning many datagrams read whole.
    assert_eq!(r.links().unwrap().len(), enis + 1);
    assert_eq!(r.routes(MAIN_TABLE).unwrap().len(), enis);
    // The last one works end to end.
    let last = guards.last().unwrap().0.clone();
    assert!(ip(&["-n", &last, "route", "show"]).contains("default via 10.0.0.1 dev eth0 onlink"));

    let ip_enis = 20;
    let mut ip_took = Vec::new();
    for i in 0..ip_enis {
        let eni = Ns::reserve();
        let addr = format!("10.0.64.{}/24", i + 4);
        let link = format!("cvi{i}");
        let start = Instant::now();
        ip(&["netns", "add", &eni.0]);
        ip(&[
            "link", "add", "name", &link, "netns", &router.0, "type", "veth", "peer", "name",
            "eth0", "netns", &eni.0,
        ]);
        ip(&[
            "-n",
            &eni.0,
            "addr",
            "replace",
            &addr,
            "dev",
            "eth0",
            "noprefixroute",
        ]);
        ip(&["-n", &router.0, "link", "set", &link, "up"]);
        ip(&["-n", &eni.0, "link", "set", "eth0", "up"]);
        ip(&[
            "-n", &eni.0, "route", "replace", "default", "via", "10.0.0.1", "dev", "eth0", "onlink",
        ]);
        ip(&[
            "-n",
            &router.0,
            "route",
            "replace",
            &format!("10.0.64.{}/32", i + 4),
            "dev",
            &link,
        ]);
        ip_took.push(start.elapsed().as_secs_f64() * 1000.0);
        guards.push(eni);
    }
    took.sort_by(f64::total_cmp);
    ip_took.sort_by(f64::total_cmp);
    println!(
        "netlink: {enis} ENIs, ms per ENI p50 {:.2} p99 {:.2} max {:.2}",
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took.last().unwrap()
    );
    println!(
        "ip processes: {ip_enis} ENIs, ms per ENI p50 {:.2} p99 {:.2} max {:.2}",
        percentile(&ip_took, 0.5),
        percentile(&ip_took, 0.99),
        ip_took.last().unwrap()
    );
    let start = Instant::now();
    drop(guards);
    println!(
        "deleting {} ENI namespaces: {:.1} ms",
        enis + ip_enis,
        start.elapsed().as_secs_f64() * 1000.0
    );
}

/// Sends "ping" from namespace `from` to a listener on `to_ip` in namespace
/// `to`, which answers "pong"; returns the address the listener saw the
/// connection come from, or the error if it failed.
fn ping_pong(from: &str, to: &str, to_ip: Ipv4Addr) -> std::io::Result<std::net::IpAddr> {
    let listener = run_in(to, move || TcpListener::bind(SocketAddrV4::new(to_ip, 0)))??;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(
        move || -> std::io::Result<(std::net::SocketAddr, [u8; 4])> {
            let (mut conn, peer) = listener.accept()?;
            let mut got = [0u8; 4];
            conn.read_exact(&mut got)?;
            conn.write_all(b"pong")?;
            Ok((peer, got))
        },
    );
    let answer = run_in(from, move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"ping")?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    })??;
    // The listener thread has answered (and ends) only if the connection
    // went through; otherwise it stays blocked in accept with the test.
    assert_eq!(answer, "pong");
    let (peer, got) = server.join().expect("listener thread")?;
    assert_eq!(&got, b"ping");
    Ok(peer.ip())
}

#[test]
fn vxlan_joins_the_routers_of_one_vpc_on_two_hosts() {
    // Two hosts: namespaces joined by an underlay link (198.51.100.0/24).
    let hosts = [Ns::create(), Ns::create()];
    let underlay = [
        Ipv4Addr::new(198, 51, 100, 1),
        Ipv4Addr::new(198, 51, 100, 2),
    ];
    let host_b = std::fs::File::open(hosts[1].path()).unwrap();
    let mut a = hosts[0].netlink();
    a.add_veth("cvutest0", None, "cvutest1", host_b.as_fd())
        .unwrap();
    for (host, (link, ip)) in hosts
        .iter()
        .zip([("cvutest0", underlay[0]), ("cvutest1", underlay[1])])
    {
        let mut nl = host.netlink();
        let (lo, link) = (index(&mut nl, "lo"), index(&mut nl, link));
        nl.set_up(lo).unwrap();
        nl.replace_address(link, ip, 24, false).unwrap();
        nl.set_up(link).unwrap();
    }

    // On each host, the VPC's router with one ENI (10.0.1.4 on host A,
    // 10.0.2.4 on host B) and the VPC's VXLAN link, made from the host's
    // namespace (its UDP socket on the underlay) inside the router's.
    let routers = [Ns::create(), Ns::create()];
    let enis = [Ns::reserve(), Ns::reserve()];
    let eni_ips = [Ipv4Addr::new(10, 0, 1, 4), Ipv4Addr::new(10, 0, 2, 4)];
    let gateways = [Ipv4Addr::new(10, 0, 1, 1), Ipv4Addr::new(10, 0, 2, 1)];
    let macs = [[0x02, 0xc0, 0x0e, 0, 0, 1], [0x02, 0xc0, 0x0e, 0, 0, 2]];
    const VNI: u32 = 4242;
    for i in 0..2 {
        let mut r = routers[i].netlink();
        let lo = index(&mut r, "lo");
        r.set_up(lo).unwrap();
        r.replace_address(lo, gateways[i], 32, false).unwrap();
        sysctl_in(&routers[i].0, "net.ipv4.ip_forward", "1").unwrap();
        plumb_eni(&mut r, "cvrtest", &enis[i].0, eni_ips[i], gateways[i]);
        let router_ns = std::fs::File::open(routers[i].path()).unwrap();
        let mut host = hosts[i].netlink();
        host.add_vxlan(
            "cvxtest",
            Some(router_ns.as_fd()),
            VNI,
            underlay[i],
            4789,
            macs[i],
            1450,
        )
        .unwrap();
        assert!(
            host.link_index("cvxtest").unwrap().is_none(),
            "the VXLAN link lives in the router's namespace, not the host's"
        );
        let vx = index(&mut r, "cvxtest");
        r.set_up(vx).unwrap();
        // The other host's ENI: a host route into the overlay, its address
        // bound to the other router's VXLAN address, and that address
        // reached at the other host's underlay address. Twice: replace
        // semantics.
        let other = 1 - i;
        for _ in 0..2 {
            r.replace_route(&Route::new(
                MAIN_TABLE,
                eni_ips[other],
                32,
                RouteKind::Dev { oif: vx },
            ))
            .unwrap();
            r.replace_neighbour(vx, eni_ips[other], macs[other])
                .unwrap();
            r.replace_fdb(vx, macs[other], underlay[other]).unwrap();
        }
    }

    // iproute2 sees a VXLAN link with the identifier, and the entries.
    let details = ip(&["-n", &routers[0].0, "-d", "link", "show", "cvxtest"]);
    assert!(details.contains(&format!("vxlan id {VNI}")), "{details}");
    assert!(details.contains("local 198.51.100.1"), "{details}");
    assert!(details.contains("nolearning"), "{details}");
    let fdb = Command::new("bridge")
        .args(["-n", &routers[0].0, "fdb", "show", "dev", "cvxtest"])
        .output()
        .expect("running bridge");
    let fdb = String::from_utf8_lossy(&fdb.stdout);
    assert!(
        fdb.lines()
            .any(|l| l.starts_with("02:c0:0e:00:00:02 dst 198.51.100.2 ")
                && l.contains("self permanent")),
        "{fdb}"
    );
    let neigh = ip(&["-n", &routers[0].0, "neigh", "show", "dev", "cvxtest"]);
    assert!(
        neigh.contains("10.0.2.4 lladdr 02:c0:0e:00:00:02 PERMANENT"),
        "{neigh}"
    );

    // An ENI on one host reaches the ENI on the other, both ways.
    ping_pong(&enis[0].0, &enis[1].0, eni_ips[1]).expect("A to B across the overlay");
    ping_pong(&enis[1].0, &enis[0].0, eni_ips[0]).expect("B to A across the overlay");

    // Through the underlay and nothing else: without it, nothing passes.
    let mut a = hosts[0].netlink();
    let link = index(&mut a, "cvutest0");
    a.delete_link(link).unwrap();
    assert!(
        ping_pong(&enis[0].0, &enis[1].0, eni_ips[1]).is_err(),
        "the overlay carried traffic with no underlay"
    );
}
