//! The Linux backend: makes plans real with rtnetlink and nftables. The
//! router namespace (forwarding on, gateway and DNS addresses on `lo`), one
//! namespace per ENI joined to the router by a veth, the ENI's address and
//! default route, the router's host routes and policy routing go over
//! netlink ([`crate::netlink`]); no `ip` process runs. The router's table
//! `inet cove` is read with `nft -j list table` and changed by the
//! reconciler's operations in one `nft -j -f -` transaction, run from a
//! thread inside the namespace.

use crate::backend::{Backend, Error as CommandError, FlowCounters, Result};
use crate::netlink::{self, Netlink, PendingNetns, PolicyRule, Route, RouteKind, Selector};
use cove_net::naming;
use cove_net::nft;
use cove_net::plan::{EniPlan, IgwPlan, RegionPlan, RouterPlan, Via};
use cove_net::ruleset::{self, Op, Ruleset};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Command, Stdio};

fn nl<T>(what: impl FnOnce() -> String, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| CommandError(format!("{}: {e}", what())))
}

pub fn netns_exists(name: &str) -> bool {
    std::path::Path::new(cove_net::netns::NETNS_DIR)
        .join(name)
        .exists()
}

/// Every namespace that belongs to Cove instance `instance`.
pub fn instance_namespaces(instance: &str) -> Result<Vec<String>> {
    let dir = match std::fs::read_dir(cove_net::netns::NETNS_DIR) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(CommandError(format!("{}: {e}", cove_net::netns::NETNS_DIR))),
    };
    let mut names: Vec<String> = dir
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| naming::is_instance_netns(instance, n))
        .collect();
    names.sort();
    Ok(names)
}

/// Where `ip netns exec` (and `cove exec`) find a namespace's own `/etc` files.
fn netns_etc(name: &str) -> std::path::PathBuf {
    std::path::Path::new("/etc/netns").join(name)
}

pub fn delete_netns(name: &str) -> Result<()> {
    nl(
        || format!("deleting namespace {name}"),
        netlink::delete_netns(name),
    )?;
    let _ = std::fs::remove_dir_all(netns_etc(name));
    Ok(())
}

/// The ENI's resolv.conf, from its VPC's DHCP options set.
fn write_resolv_conf(e: &EniPlan) -> Result<()> {
    let dir = netns_etc(&e.netns);
    let mut text = format!("# written by cove for {}\n", e.id);
    for ns in &e.resolv.nameservers {
        text.push_str(&format!("nameserver {ns}\n"));
    }
    if !e.resolv.search.is_empty() {
        text.push_str(&format!("search {}\n", e.resolv.search.join(" ")));
    }
    text.push_str("options timeout:1 attempts:2\n");
    let path = dir.join("resolv.conf");
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&path, text))
        .map_err(|err| CommandError(format!("{}: {err}", path.display())))
}

/// A socket into namespace `name`.
fn socket(name: &str) -> Result<Netlink> {
    nl(
        || format!("opening netlink in {name}"),
        Netlink::in_netns(name),
    )
}

fn link(sock: &mut Netlink, ns: &str, name: &str) -> Result<Option<u32>> {
    nl(
        || format!("looking up {name} in {ns}"),
        sock.link_index(name),
    )
}

fn set_up(sock: &mut Netlink, ns: &str, index: u32) -> Result<()> {
    nl(
        || format!("setting link #{index} up in {ns}"),
        sock.set_up(index),
    )
}

/// A named namespace with its loopback up.
fn ensure_netns(name: &str) -> Result<Netlink> {
    nl(
        || format!("creating namespace {name}"),
        netlink::create_netns(name),
    )?;
    let mut sock = socket(name)?;
    let lo =
        link(&mut sock, name, "lo")?.ok_or_else(|| CommandError(format!("{name} has no lo")))?;
    set_up(&mut sock, name, lo)?;
    Ok(sock)
}

fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    nl(
        || format!("sysctl {key}={value} in {ns}"),
        netlink::sysctl_in(ns, key, value),
    )
}

fn host_route(table: u32, dest: Ipv4Addr, kind: RouteKind) -> Route {
    Route::new(table, dest, 32, kind)
}

/// The ENI side: lo and `eth0` up, the address, the default route via the
/// subnet's router. Every packet, even to a neighbour in the same subnet,
/// goes through the router: the address is `noprefixroute`.
fn configure_eni_side(sock: &mut Netlink, e: &EniPlan) -> Result<()> {
    let ns = e.netns.as_str();
    let lo = link(sock, ns, "lo")?.ok_or_else(|| CommandError(format!("{ns} has no lo")))?;
    let eth0 = link(sock, ns, naming::ENI_LINK)?
        .ok_or_else(|| CommandError(format!("{ns} has no {}", naming::ENI_LINK)))?;
    set_up(sock, ns, lo)?;
    set_up(sock, ns, eth0)?;
    nl(
        || format!("address {}/{} in {ns}", e.ip, e.prefix),
        sock.replace_address(eth0, e.ip, e.prefix, true),
    )?;
    let default = Route::new(
        netlink::MAIN_TABLE,
        Ipv4Addr::UNSPECIFIED,
        0,
        RouteKind::Via {
            gateway: e.gateway,
            oif: eth0,
            onlink: true,
        },
    );
    nl(
        || format!("default route via {} in {ns}", e.gateway),
        sock.replace_route(&default),
    )
}

/// The router side: the veth up and the host route to the ENI.
fn configure_router_side(sock: &mut Netlink, router: &str, e: &EniPlan) -> Result<()> {
    let index = link(sock, router, &e.router_link)?
        .ok_or_else(|| CommandError(format!("{router} has no {}", e.router_link)))?;
    set_up(sock, router, index)?;
    nl(
        || format!("route to {} in {router}", e.ip),
        sock.replace_route(&host_route(
            netlink::MAIN_TABLE,
            e.ip,
            RouteKind::Dev { oif: index },
        )),
    )
}

/// Makes one ENI real. A new ENI's namespace is configured before it has
/// a name and published whole, so `cove exec` never finds it half-made;
/// an existing one is brought back to the plan in place.
pub fn apply_eni(router: &str, e: &EniPlan) -> Result<()> {
    let mut rsock = socket(router)?;
    let router_link = link(&mut rsock, router, &e.router_link)?;
    // The ENI's namespace with its `eth0`, when both are there.
    let whole = match (router_link, netns_exists(&e.netns)) {
        (Some(_), true) => Netlink::in_netns(&e.netns)
            .ok()
            .and_then(|mut s| s.link_index(naming::ENI_LINK).ok().flatten().map(|_| s)),
        _ => None,
    };
    if let Some(mut inside) = whole {
        write_resolv_conf(e)?;
        configure_eni_side(&mut inside, e)?;
        sysctls(&e.netns, None, &ENI_SYSCTLS)?;
        configure_router_side(&mut rsock, router, e)?;
        if !e.firewalled {
            nat_gateway(&e.netns, None, e)?;
        }
        return Ok(());
    }
    // A half-made ENI (a crash mid-way, or a namespace removed by hand) is rebuilt whole.
    if let Some(index) = router_link {
        nl(
            || format!("deleting {} in {router}", e.router_link),
            rsock.delete_link(index),
        )?;
    }
    delete_netns(&e.netns)?;
    write_resolv_conf(e)?;
    let pending = nl(|| "making a namespace".into(), PendingNetns::new())?;
    nl(
        || format!("adding veth {} in {router}", e.router_link),
        rsock.add_veth(&e.router_link, None, naming::ENI_LINK, pending.fd()),
    )?;
    let mut inside = nl(|| format!("netlink in {}", e.netns), pending.netlink())?;
    configure_eni_side(&mut inside, e)?;
    sysctls(&e.netns, Some(&pending), &ENI_SYSCTLS)?;
    configure_router_side(&mut rsock, router, e)?;
    if !e.firewalled {
        nat_gateway(&e.netns, Some(&pending), e)?;
    }
    nl(
        || format!("publishing {}", e.netns),
        pending.publish(&e.netns),
    )
}

/// Writes `keys` in an ENI's namespace: the one being made (`pending`)
/// or the published one named `netns`.
fn sysctls(netns: &str, pending: Option<&PendingNetns>, keys: &[(&str, &str)]) -> Result<()> {
    for &(key, value) in keys {
        match pending {
            Some(p) => nl(|| format!("sysctl {key} in {netns}"), p.sysctl(key, value))?,
            None => sysctl(netns, key, value)?,
        }
    }
    Ok(())
}

/// What every ENI's namespace sets: its workload may listen on any port
/// (an MPI host's sshd on 22, an image's server on 80) without a
/// capability, as in a Docker container. The namespace is the workload's
/// alone, so this opens nothing beside it.
const ENI_SYSCTLS: [(&str, &str); 1] = [("net.ipv4.ip_unprivileged_port_start", "0")];

/// A NAT gateway's ENI forwards for the VPC and masquerades to its own
/// address; its Elastic IP mapping happens at the internet gateway.
fn nat_gateway(netns: &str, pending: Option<&PendingNetns>, e: &EniPlan) -> Result<()> {
    sysctls(
        netns,
        pending,
        &[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.eth0.send_redirects", "0"),
        ],
    )?;
    let ruleset = serde_json::json!({"nftables": [
        {"add": {"table": {"family": "ip", "name": "cove"}}},
        {"delete": {"table": {"family": "ip", "name": "cove"}}},
        {"add": {"table": {"family": "ip", "name": "cove"}}},
        {"add": {"chain": {"family": "ip", "table": "cove", "name": "postrouting", "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}},
        {"add": {"rule": {"family": "ip", "table": "cove", "chain": "postrouting", "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": naming::ENI_LINK}},
            {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": e.ip.to_string()}},
            {"masquerade": null}
        ]}}}
    ]});
    let bytes = serde_json::to_vec(&ruleset).expect("JSON values serialize");
    let path = match pending {
        // fds are the process's: any thread reaches the pending namespace through it.
        Some(p) => format!("/proc/self/fd/{}", p.fd().as_raw_fd()),
        None => format!("{}/{netns}", cove_net::netns::NETNS_DIR),
    };
    nft_at(&path, netns, &["-j", "-f", "-"], Some(bytes)).map(|_| ())
}

/// The region network: the simulated internet host and the routes back to
/// each VPC's public addresses.
pub fn apply_region(region: &RegionPlan) -> Result<()> {
    let r = region.netns.as_str();
    let mut sock = ensure_netns(r)?;
    sysctl(r, "net.ipv4.ip_forward", "1")?;
    let lo = link(&mut sock, r, "lo")?.ok_or_else(|| CommandError(format!("{r} has no lo")))?;
    for host in &region.internet_hosts {
        nl(
            || format!("address {host} in {r}"),
            sock.replace_address(lo, *host, 32, false),
        )?;
    }
    for (igw, publics) in &region.vpcs {
        let Some(index) = link(&mut sock, r, &igw.region_link)? else {
            continue; // made with the router; routes follow on the next pass
        };
        for public in publics {
            let route = host_route(
                netlink::MAIN_TABLE,
                *public,
                RouteKind::Via {
                    gateway: igw.router_ip,
                    oif: index,
                    onlink: false,
                },
            );
            nl(
                || format!("route to {public} in {r}"),
                sock.replace_route(&route),
            )?;
        }
    }
    Ok(())
}

/// The router's links to the region network: the internet gateway's when
/// one is attached, and one per gateway endpoint. Links nothing owns go.
pub fn apply_igw(plan: &RouterPlan, region_netns: &str) -> Result<()> {
    let r = plan.netns.as_str();
    let mut wanted: Vec<(&IgwPlan, &str)> = plan
        .endpoints
        .iter()
        .map(|e| (&e.link, region_netns))
        .collect();
    wanted.extend(plan.igw.as_ref().map(|l| (l, region_netns)));
    wanted.extend(
        plan.peerings
            .iter()
            .map(|p| (&p.link, p.peer_netns.as_str())),
    );
    let mut sock = socket(r)?;
    let links = nl(|| format!("listing links in {r}"), sock.links())?;
    for (index, name) in links {
        let outside_link = ["cvg", "cvp", "cvx"].iter().any(|p| name.starts_with(p));
        if outside_link && !wanted.iter().any(|(w, _)| w.router_link == name) {
            nl(
                || format!("deleting {name} in {r}"),
                sock.delete_link(index),
            )?;
        }
    }
    for (link, far_netns) in wanted {
        // A peer router whose turn has not come yet gets its namespace now,
        // so that this router's routes find their link; its own pass
        // fills the rest in.
        if far_netns != region_netns {
            ensure_netns(far_netns)?;
        }
        apply_link(&mut sock, r, far_netns, link)?;
    }
    Ok(())
}

/// One veth from the router to the region network or to a peered VPC's
/// router, with its point-to-point addresses.
fn apply_link(rsock: &mut Netlink, r: &str, region_netns: &str, igw: &IgwPlan) -> Result<()> {
    let mut region = socket(region_netns)?;
    let mut ours = link(rsock, r, &igw.router_link)?;
    let mut theirs = link(&mut region, region_netns, &igw.region_link)?;
    if ours.is_none() || theirs.is_none() {
        if let Some(index) = ours {
            nl(
                || format!("deleting {}", igw.router_link),
                rsock.delete_link(index),
            )?;
        }
        let region_file = nl(
            || region_netns.to_string(),
            netlink::open_netns(region_netns),
        )?;
        nl(
            || format!("adding veth {} to {region_netns}", igw.router_link),
            rsock.add_veth(
                &igw.router_link,
                None,
                &igw.region_link,
                region_file.as_fd(),
            ),
        )?;
        ours = link(rsock, r, &igw.router_link)?;
        theirs = link(&mut region, region_netns, &igw.region_link)?;
    }
    let (Some(ours), Some(theirs)) = (ours, theirs) else {
        return Err(CommandError(format!("{} was not made", igw.router_link)));
    };
    nl(
        || format!("address {} in {r}", igw.router_ip),
        rsock.replace_address(ours, igw.router_ip, 30, false),
    )?;
    nl(
        || format!("address {} in {region_netns}", igw.region_ip),
        region.replace_address(theirs, igw.region_ip, 30, false),
    )?;
    set_up(rsock, r, ours)?;
    set_up(&mut region, region_netns, theirs)
}

/// Policy routing: intra-VPC traffic uses the main table (the ENI host
/// routes); everything else uses the route table of the source's subnet.
///
/// Applied as a difference, never flush-and-refill: wanted routes are
/// replaced (atomic per route) and wanted rules added before stale ones
/// go, so a packet in flight always finds a route. (Flushing made a new
/// connection from a running job fail with ENETUNREACH whenever another
/// ENI of the VPC came or went.)
pub fn apply_routes(plan: &RouterPlan) -> Result<()> {
    let r = plan.netns.as_str();
    let mut sock = socket(r)?;
    // The VPC's own ranges end here: an address no ENI has is dropped by
    // the router (AWS's local route), never handed to a subnet's default
    // route towards a gateway. ENIs' /32 routes are more specific. A block
    // the VPC no longer has loses its blackhole.
    for cidr in &plan.cidrs {
        let local = Route {
            table: netlink::MAIN_TABLE,
            dest: *cidr,
            kind: RouteKind::Blackhole,
        };
        nl(
            || format!("blackhole {cidr} in {r}"),
            sock.replace_route(&local),
        )?;
    }
    let main = nl(
        || format!("listing the main table of {r}"),
        sock.routes(netlink::MAIN_TABLE),
    )?;
    for stale in main
        .iter()
        .filter(|rt| rt.kind == RouteKind::Blackhole && !plan.cidrs.contains(&rt.dest))
    {
        nl(
            || format!("deleting blackhole {} in {r}", stale.dest),
            sock.delete_route(stale),
        )?;
    }
    let links: BTreeMap<String, u32> = nl(|| format!("listing links in {r}"), sock.links())?
        .into_iter()
        .map(|(index, name)| (name, index))
        .collect();
    // A link not made yet routes by its gateway alone (0: the kernel picks).
    let oif = |name: &str| links.get(name).copied().unwrap_or(0);
    let mut wanted_rules: Vec<PolicyRule> = plan
        .cidrs
        .iter()
        .map(|c| PolicyRule {
            priority: 100,
            selector: Selector::To(*c),
            table: netlink::MAIN_TABLE,
        })
        .collect();
    let mut pref = 1000;
    for t in &plan.tables {
        let mut wanted = Vec::new();
        for route in &t.routes {
            let kind = match &route.via {
                Via::InternetGateway => match &plan.igw {
                    Some(igw) => RouteKind::Via {
                        gateway: igw.region_ip,
                        oif: oif(&igw.router_link),
                        onlink: false,
                    },
                    None => RouteKind::Blackhole,
                },
                Via::Eni { link: l, ip: to } => RouteKind::Via {
                    gateway: *to,
                    oif: oif(l),
                    onlink: true,
                },
                Via::Endpoint { link: l, ip: to } | Via::Peering { link: l, ip: to } => {
                    RouteKind::Via {
                        gateway: *to,
                        oif: oif(l),
                        onlink: false,
                    }
                }
                Via::Blackhole => RouteKind::Blackhole,
            };
            let route = Route {
                table: t.kernel_table,
                dest: route.dest,
                kind,
            };
            nl(
                || format!("route {} in table {} of {r}", route.dest, t.kernel_table),
                sock.replace_route(&route),
            )?;
            wanted.push(route);
        }
        let present = nl(
            || format!("listing table {} of {r}", t.kernel_table),
            sock.routes(t.kernel_table),
        )?;
        for old in present {
            if !wanted.iter().any(|w| w.dest == old.dest) {
                nl(
                    || format!("deleting route {} in table {}", old.dest, t.kernel_table),
                    sock.delete_route(&old),
                )?;
            }
        }
        for subnet in &t.subnets {
            wanted_rules.push(PolicyRule {
                priority: pref,
                selector: Selector::From(*subnet),
                table: t.kernel_table,
            });
            pref += 1;
        }
    }
    let present: Vec<PolicyRule> = nl(|| format!("listing rules of {r}"), sock.rules())?
        .into_iter()
        .filter(|p| (100..30000).contains(&p.priority))
        .collect();
    for rule in wanted_rules.iter().filter(|w| !present.contains(w)) {
        nl(
            || format!("adding rule {rule:?} in {r}"),
            sock.add_rule(rule),
        )?;
    }
    for rule in present.iter().filter(|p| !wanted_rules.contains(p)) {
        nl(
            || format!("deleting rule {rule:?} in {r}"),
            sock.delete_rule(rule),
        )?;
    }
    Ok(())
}

/// The router namespace with forwarding on and exactly the plan's local addresses on `lo`.
pub fn apply_router(plan: &RouterPlan) -> Result<()> {
    let r = plan.netns.as_str();
    let mut sock = ensure_netns(r)?;
    sysctl(r, "net.ipv4.ip_forward", "1")?;
    sysctl(r, "net.ipv4.conf.all.rp_filter", "0")?;
    let lo = link(&mut sock, r, "lo")?.ok_or_else(|| CommandError(format!("{r} has no lo")))?;
    for a in &plan.local_addrs {
        nl(
            || format!("address {a} in {r}"),
            sock.replace_address(lo, *a, 32, false),
        )?;
    }
    // Addresses of deleted subnets go; 127.0.0.1 stays.
    let current = nl(|| format!("listing addresses in {r}"), sock.addresses(lo))?;
    for (addr, prefix) in current {
        let wanted = prefix == 32 && plan.local_addrs.contains(&addr);
        if !addr.is_loopback() && !wanted {
            nl(
                || format!("deleting {addr} in {r}"),
                sock.delete_address(lo, addr, prefix),
            )?;
        }
    }
    Ok(())
}

/// Runs `nft` with `args` (and `input` on stdin) from a thread inside namespace `netns`.
fn nft_in(netns: &str, args: &[&str], input: Option<Vec<u8>>) -> Result<Vec<u8>> {
    let path = format!("{}/{netns}", cove_net::netns::NETNS_DIR);
    nft_at(&path, netns, args, input)
}

/// [`nft_in`] for the namespace file at `path` (named `netns` in errors).
fn nft_at(path: &str, netns: &str, args: &[&str], input: Option<Vec<u8>>) -> Result<Vec<u8>> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out =
        cove_net::netns::run_in_path(path, move || -> std::io::Result<std::process::Output> {
            let mut child = Command::new("nft")
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            if let (Some(input), Some(mut pipe)) = (input, child.stdin.take()) {
                pipe.write_all(&input)?;
            }
            child.wait_with_output()
        })
        .map_err(|e| CommandError(format!("entering {netns}: {e}")))?
        .map_err(|e| CommandError(format!("nft: {e}")))?;
    if !out.status.success() {
        return Err(CommandError(format!(
            "nft in {netns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// The router's `inet cove` table as the kernel holds it.
pub fn observe_rules(netns: &str) -> Result<Option<Ruleset>> {
    // A table that is not there is an error to `nft list table`: list the tables first.
    let tables: serde_json::Value =
        serde_json::from_slice(&nft_in(netns, &["-j", "list", "tables", "inet"], None)?)
            .map_err(|e| CommandError(format!("nft list tables: {e}")))?;
    let present = tables["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["table"]["name"].as_str() == Some(nft::TABLE));
    if !present {
        return Ok(None);
    }
    let listing: serde_json::Value = serde_json::from_slice(&nft_in(
        netns,
        &["-j", "-n", "list", "table", "inet", nft::TABLE],
        None,
    )?)
    .map_err(|e| CommandError(format!("nft list table: {e}")))?;
    Ok(ruleset::observe(&listing, nft::TABLE))
}

/// Performs `ops` on the router's table in one transaction.
pub fn apply_rule_ops(netns: &str, ops: &[Op]) -> Result<()> {
    if ops.is_empty() {
        return Ok(());
    }
    let batch =
        serde_json::to_vec(&ruleset::batch(nft::TABLE, ops)).expect("JSON values serialize");
    nft_in(netns, &["-j", "-f", "-"], Some(batch.clone()))
        .map(|_| ())
        .map_err(|e| {
            // Keep what nft refused, and the table it refused it against,
            // so the failure can be read and replayed.
            let path = std::env::temp_dir().join(format!("{netns}.nft.json"));
            let _ = std::fs::write(&path, &batch);
            if let Ok(table) = nft_in(netns, &["-j", "list", "table", "inet", nft::TABLE], None) {
                let _ = std::fs::write(path.with_extension("table.json"), table);
            }
            CommandError(format!("{e} (batch saved to {})", path.display()))
        })
}

/// Makes the router's table equal to the plan's, changing only what differs.
pub fn apply_rules(plan: &RouterPlan) -> Result<()> {
    let observed = observe_rules(&plan.netns)?;
    apply_rule_ops(
        &plan.netns,
        &ruleset::diff(observed.as_ref(), &nft::render(plan)),
    )
}

/// Creates or fixes everything the plan describes, rules included.
pub fn apply(plan: &RouterPlan) -> Result<()> {
    apply_router(plan)?;
    for e in &plan.enis {
        apply_eni(&plan.netns, e)?;
    }
    apply_routes(plan)?;
    apply_rules(plan)
}

/// Joins the router in `router_netns` to the VPC's routers on other hosts
/// (cove_net::overlay): the VXLAN link, made from the host's namespace
/// (`host_netns`, or this process's when `None`) so its UDP socket is on
/// the host's underlay; a forwarding entry per peer host; a host route and
/// a static neighbour per ENI there. Host routes into the link that the
/// plan no longer has are removed; stale neighbour and forwarding entries
/// are left (without a route nothing reaches them).
pub fn apply_overlay(
    host_netns: Option<&str>,
    router_netns: &str,
    plan: &cove_net::overlay::OverlayPlan,
) -> Result<()> {
    let mut router = nl(
        || format!("netlink in {router_netns}"),
        Netlink::in_netns(router_netns),
    )?;
    // A link made for another underlay address (the host's changed), or
    // another network identifier, is made again.
    let held = nl(
        || format!("reading {}", plan.link),
        router.vxlan_identity(&plan.link),
    )?;
    if held.is_some_and(|identity| identity != (plan.vni, plan.local, plan.mac)) {
        if let Some(index) = nl(
            || format!("finding {}", plan.link),
            router.link_index(&plan.link),
        )? {
            nl(
                || format!("removing the outdated {}", plan.link),
                router.delete_link(index),
            )?;
        }
    }
    let link = match nl(
        || format!("finding {}", plan.link),
        router.link_index(&plan.link),
    )? {
        Some(index) => index,
        None => {
            let mut host = nl(
                || "netlink in the host's namespace".into(),
                match host_netns {
                    Some(ns) => Netlink::in_netns(ns),
                    None => Netlink::current(),
                },
            )?;
            let ns = nl(|| router_netns.into(), netlink::open_netns(router_netns))?;
            nl(
                || format!("adding {} in {router_netns}", plan.link),
                host.add_vxlan(
                    &plan.link,
                    Some(ns.as_fd()),
                    plan.vni,
                    plan.local,
                    cove_net::overlay::VXLAN_PORT,
                    plan.mac,
                    cove_net::overlay::MTU,
                ),
            )?;
            nl(
                || format!("finding {}", plan.link),
                router.link_index(&plan.link),
            )?
            .ok_or_else(|| CommandError(format!("{} vanished after it was made", plan.link)))?
        }
    };
    nl(|| format!("setting {} up", plan.link), router.set_up(link))?;
    let mut planned = std::collections::BTreeSet::new();
    for peer in &plan.peers {
        nl(
            || format!("forwarding entry to {}", peer.underlay),
            router.replace_fdb(link, peer.mac, peer.underlay),
        )?;
        for &eni in &peer.enis {
            planned.insert(eni);
            route_into_overlay(&mut router, &plan.link, link, eni, peer.mac)?;
        }
    }
    if let Some(gateway) = &plan.gateway {
        nl(
            || format!("forwarding entry to {}", gateway.underlay),
            router.replace_fdb(link, gateway.mac, gateway.underlay),
        )?;
        nl(
            || format!("the gateway hop on {}", plan.link),
            router.replace_neighbour(link, cove_net::overlay::GATEWAY_HOP, gateway.mac),
        )?;
    }
    let routes = nl(
        || "listing routes".into(),
        router.routes(netlink::MAIN_TABLE),
    )?;
    for route in routes {
        let into_link = route.kind == (RouteKind::Dev { oif: link });
        if into_link
            && route.dest.prefix == 32
            && !planned.contains(&Ipv4Addr::from(route.dest.base))
        {
            nl(
                || format!("removing the route to {}", route.dest),
                router.delete_route(&route),
            )?;
        }
    }
    Ok(())
}

/// An ENI on another host: its host route into the overlay link `name`
/// (index `link`) and its address bound to that host's router `mac`.
fn route_into_overlay(
    router: &mut Netlink,
    name: &str,
    link: u32,
    eni: Ipv4Addr,
    mac: [u8; 6],
) -> Result<()> {
    nl(
        || format!("route to {eni} over {name}"),
        router.replace_route(&Route::new(
            netlink::MAIN_TABLE,
            eni,
            32,
            RouteKind::Dev { oif: link },
        )),
    )?;
    nl(
        || format!("neighbour {eni} on {name}"),
        router.replace_neighbour(link, eni, mac),
    )
}

/// Changes only the given entries of the overlay link `plan` names (which
/// exists): what a host does when one ENI comes, goes or moves.
pub fn change_overlay(
    router_netns: &str,
    plan: &cove_net::overlay::OverlayPlan,
    changes: &cove_net::overlay::OverlayChanges,
) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut router = nl(
        || format!("netlink in {router_netns}"),
        Netlink::in_netns(router_netns),
    )?;
    let link = nl(
        || format!("finding {}", plan.link),
        router.link_index(&plan.link),
    )?
    .ok_or_else(|| CommandError(format!("{} is not in {router_netns}", plan.link)))?;
    let absent_ok = |r: std::io::Result<()>| match r {
        Err(e) if netlink::is_absent(&e) => Ok(()),
        other => other,
    };
    for &(mac, underlay) in &changes.forward_add {
        nl(
            || format!("forwarding entry to {underlay}"),
            router.replace_fdb(link, mac, underlay),
        )?;
    }
    for &(eni, mac) in &changes.enis_add {
        route_into_overlay(&mut router, &plan.link, link, eni, mac)?;
    }
    for &eni in &changes.enis_remove {
        let route = Route::new(netlink::MAIN_TABLE, eni, 32, RouteKind::Dev { oif: link });
        nl(
            || format!("removing the route to {eni}"),
            absent_ok(router.delete_route(&route)),
        )?;
        nl(
            || format!("removing neighbour {eni}"),
            absent_ok(router.delete_neighbour(link, eni)),
        )?;
    }
    match changes.gateway {
        Some(Some(mac)) => nl(
            || format!("the gateway hop on {}", plan.link),
            router.replace_neighbour(link, cove_net::overlay::GATEWAY_HOP, mac),
        )?,
        Some(None) => nl(
            || format!("removing the gateway hop on {}", plan.link),
            absent_ok(router.delete_neighbour(link, cove_net::overlay::GATEWAY_HOP)),
        )?,
        None => {}
    }
    for &(mac, underlay) in &changes.forward_remove {
        nl(
            || format!("removing the forwarding entry to {underlay}"),
            absent_ok(router.delete_fdb(link, mac, underlay)),
        )?;
    }
    Ok(())
}

/// Removes the VPC's overlay link from its router, if it has one (with
/// it go its routes, neighbours and forwarding entries).
pub fn remove_overlay(router_netns: &str, vpc_id: &str) -> Result<()> {
    let link = cove_net::overlay::link_name(vpc_id);
    let mut router = nl(
        || format!("netlink in {router_netns}"),
        Netlink::in_netns(router_netns),
    )?;
    if let Some(index) = nl(|| format!("finding {link}"), router.link_index(&link))? {
        nl(
            || format!("removing {link} from {router_netns}"),
            router.delete_link(index),
        )?;
    }
    Ok(())
}

/// Removes the router namespace and every ENI namespace of the plan.
pub fn remove(plan: &RouterPlan) -> Result<()> {
    for e in &plan.enis {
        delete_netns(&e.netns)?;
    }
    delete_netns(&plan.netns)
}

/// The Linux kernel, through iproute2 and nftables.
#[derive(Debug, Default, Clone, Copy)]
pub struct Linux;

impl Backend for Linux {
    fn namespaces(&self, instance: &str) -> Result<Vec<String>> {
        instance_namespaces(instance)
    }
    fn remove_namespace(&self, name: &str) -> Result<()> {
        delete_netns(name)
    }
    fn region(&self, plan: &RegionPlan) -> Result<()> {
        apply_region(plan)
    }
    fn router(&self, plan: &RouterPlan, region_netns: &str) -> Result<()> {
        apply_router(plan)?;
        apply_igw(plan, region_netns)
    }
    fn eni(&self, router_netns: &str, eni: &EniPlan) -> Result<()> {
        apply_eni(router_netns, eni)
    }
    fn routes(&self, plan: &RouterPlan) -> Result<()> {
        apply_routes(plan)
    }
    fn overlay(
        &self,
        router_netns: &str,
        vpc_id: &str,
        old: Option<&cove_net::overlay::OverlayPlan>,
        new: Option<&cove_net::overlay::OverlayPlan>,
    ) -> Result<()> {
        match (old, new) {
            (_, None) => remove_overlay(router_netns, vpc_id),
            (Some(old), Some(new)) if cove_net::overlay::same_link(old, new) => {
                change_overlay(router_netns, new, &cove_net::overlay::changes(old, new))
            }
            (_, Some(new)) => apply_overlay(None, router_netns, new),
        }
    }
    fn observe_rules(&self, router_netns: &str) -> Result<Option<Ruleset>> {
        observe_rules(router_netns)
    }
    fn apply_rules(&self, router_netns: &str, ops: &[Op]) -> Result<()> {
        apply_rule_ops(router_netns, ops)
    }
    fn flow_counters(&self, router_netns: &str) -> Result<FlowCounters> {
        flow_counters(router_netns)
    }
}

/// The router's sets as the kernel holds them, flow records among them.
/// Sets only: the rules, which can be many thousands, are not needed.
pub fn flow_counters(netns: &str) -> Result<FlowCounters> {
    let listing: serde_json::Value =
        serde_json::from_slice(&nft_in(netns, &["-j", "list", "sets", "inet"], None)?)
            .map_err(|e| CommandError(format!("nft list sets: {e}")))?;
    Ok(cove_net::flowlog::parse_listing(&listing))
}
