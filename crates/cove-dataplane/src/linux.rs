//! The Linux backend: makes plans real with iproute2 and nftables. The
//! router namespace (forwarding on, gateway and DNS addresses on `lo`), one
//! namespace per ENI joined to the router by a veth, the ENI's address and
//! default route, the router's host routes and policy routing go through
//! `ip`; the router's table `inet cove` is read with `nft -j list table`
//! and changed by the reconciler's operations in one `nft -j -f -`
//! transaction, run from a thread inside the namespace (no `ip netns exec`).

use crate::backend::{Backend, Error as CommandError, Result};
use cove_net::naming;
use cove_net::nft;
use cove_net::plan::{EniPlan, IgwPlan, RegionPlan, RouterPlan, Via};
use cove_net::ruleset::{self, Op, Ruleset};
use std::io::Write;
use std::process::{Command, Stdio};

fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<String> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| CommandError(format!("{program}: {e}")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)
            .map_err(|e| CommandError(format!("{program} stdin: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CommandError(format!("{program}: {e}")))?;
    if !out.status.success() {
        return Err(CommandError(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run("ip", args, None)
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
    if netns_exists(name) {
        ip(&["netns", "del", name])?;
    }
    let _ = std::fs::remove_dir_all(netns_etc(name));
    Ok(())
}

/// The ENI's resolv.conf: the VPC resolver and the region's private domain.
fn write_resolv_conf(e: &EniPlan) -> Result<()> {
    let dir = netns_etc(&e.netns);
    let text = format!(
        "# written by cove for {}\nnameserver {}\nsearch {}\noptions timeout:1 attempts:2\n",
        e.id, e.resolver, e.search_domain
    );
    let path = dir.join("resolv.conf");
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&path, text))
        .map_err(|err| CommandError(format!("{}: {err}", path.display())))
}

fn ensure_netns(name: &str) -> Result<()> {
    if !netns_exists(name) {
        ip(&["netns", "add", name])?;
    }
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "sysctl",
            "-q",
            "-w",
            &format!("{key}={value}"),
        ],
        None,
    )
    .map(|_| ())
}

fn link_exists(ns: &str, link: &str) -> bool {
    ip(&["-n", ns, "link", "show", link]).is_ok()
}

pub fn apply_eni(router: &str, e: &EniPlan) -> Result<()> {
    ensure_netns(&e.netns)?;
    write_resolv_conf(e)?;
    if !link_exists(router, &e.router_link) || !link_exists(&e.netns, naming::ENI_LINK) {
        // A half-made pair is rebuilt whole.
        let _ = ip(&["-n", router, "link", "del", &e.router_link]);
        let _ = ip(&["-n", &e.netns, "link", "del", naming::ENI_LINK]);
        ip(&[
            "link",
            "add",
            "name",
            &e.router_link,
            "netns",
            router,
            "type",
            "veth",
            "peer",
            "name",
            naming::ENI_LINK,
            "netns",
            &e.netns,
        ])?;
    }
    ip(&["-n", router, "link", "set", &e.router_link, "up"])?;
    ip(&["-n", &e.netns, "link", "set", naming::ENI_LINK, "up"])?;
    let address = format!("{}/{}", e.ip, e.prefix);
    ip(&[
        "-n",
        &e.netns,
        "addr",
        "replace",
        &address,
        "dev",
        naming::ENI_LINK,
        "noprefixroute",
    ])?;
    // Everything, even a neighbour in the same subnet, goes through the router.
    ip(&[
        "-n",
        &e.netns,
        "route",
        "replace",
        "default",
        "via",
        &e.gateway.to_string(),
        "dev",
        naming::ENI_LINK,
        "onlink",
    ])?;
    ip(&[
        "-n",
        router,
        "route",
        "replace",
        &format!("{}/32", e.ip),
        "dev",
        &e.router_link,
    ])?;
    if !e.firewalled {
        // A NAT gateway: forward for the VPC and masquerade to its own address;
        // its Elastic IP mapping happens at the internet gateway.
        sysctl(&e.netns, "net.ipv4.ip_forward", "1")?;
        sysctl(&e.netns, "net.ipv4.conf.all.send_redirects", "0")?;
        sysctl(
            &e.netns,
            &format!("net.ipv4.conf.{}.send_redirects", naming::ENI_LINK),
            "0",
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
        run(
            "ip",
            &["netns", "exec", &e.netns, "nft", "-j", "-f", "-"],
            Some(&bytes),
        )?;
    }
    Ok(())
}

/// The region network: the simulated internet host and the routes back to
/// each VPC's public addresses.
pub fn apply_region(region: &RegionPlan) -> Result<()> {
    let r = region.netns.as_str();
    ensure_netns(r)?;
    sysctl(r, "net.ipv4.ip_forward", "1")?;
    for host in &region.internet_hosts {
        ip(&[
            "-n",
            r,
            "addr",
            "replace",
            &format!("{host}/32"),
            "dev",
            "lo",
        ])?;
    }
    for (igw, publics) in &region.vpcs {
        if !link_exists(r, &igw.region_link) {
            continue; // made with the router; routes follow on the next pass
        }
        for public in publics {
            ip(&[
                "-n",
                r,
                "route",
                "replace",
                &format!("{public}/32"),
                "via",
                &igw.router_ip.to_string(),
                "dev",
                &igw.region_link,
            ])?;
        }
    }
    Ok(())
}

/// The router's links to the region network: the internet gateway's when
/// one is attached, and one per gateway endpoint. Links nothing owns go.
pub fn apply_igw(plan: &RouterPlan, region_netns: &str) -> Result<()> {
    let r = plan.netns.as_str();
    let mut wanted: Vec<&IgwPlan> = plan.endpoints.iter().map(|e| &e.link).collect();
    wanted.extend(plan.igw.as_ref());
    for prefix in ["cvg", "cvp"] {
        for link in links_named(r, prefix)? {
            if !wanted.iter().any(|w| w.router_link == link) {
                ip(&["-n", r, "link", "del", &link])?;
            }
        }
    }
    for link in wanted {
        apply_link(r, region_netns, link)?;
    }
    Ok(())
}

/// One router–region veth with its point-to-point addresses.
fn apply_link(r: &str, region_netns: &str, igw: &IgwPlan) -> Result<()> {
    if !link_exists(r, &igw.router_link) || !link_exists(region_netns, &igw.region_link) {
        let _ = ip(&["-n", r, "link", "del", &igw.router_link]);
        ip(&[
            "link",
            "add",
            "name",
            &igw.router_link,
            "netns",
            r,
            "type",
            "veth",
            "peer",
            "name",
            &igw.region_link,
            "netns",
            region_netns,
        ])?;
    }
    ip(&[
        "-n",
        r,
        "addr",
        "replace",
        &format!("{}/30", igw.router_ip),
        "dev",
        &igw.router_link,
    ])?;
    ip(&[
        "-n",
        region_netns,
        "addr",
        "replace",
        &format!("{}/30", igw.region_ip),
        "dev",
        &igw.region_link,
    ])?;
    ip(&["-n", r, "link", "set", &igw.router_link, "up"])?;
    ip(&["-n", region_netns, "link", "set", &igw.region_link, "up"])?;
    Ok(())
}

fn links_named(ns: &str, prefix: &str) -> Result<Vec<String>> {
    let out = ip(&["-n", ns, "-o", "link", "show"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with(prefix))
        .collect())
}

/// Policy routing: intra-VPC traffic uses the main table (the ENI host
/// routes); everything else uses the route table of the source's subnet.
///
/// Applied as a difference, never flush-and-refill: wanted routes are
/// `replace`d (atomic per route) and wanted rules added before stale ones
/// go, so a packet in flight always finds a route. (Flushing made a new
/// connection from a running job fail with ENETUNREACH whenever another
/// ENI of the VPC came or went.)
pub fn apply_routes(plan: &RouterPlan) -> Result<()> {
    let r = plan.netns.as_str();
    let mut wanted_rules = vec![vec![
        "100".to_string(),
        "to".to_string(),
        plan.cidr.to_string(),
        "lookup".to_string(),
        "main".to_string(),
    ]];
    let mut pref = 1000;
    for t in &plan.tables {
        let table = t.kernel_table.to_string();
        let mut wanted_dests = Vec::new();
        for route in &t.routes {
            let dest = route.dest.to_string();
            let mut args: Vec<String> = match &route.via {
                Via::InternetGateway => match &plan.igw {
                    Some(igw) => vec![
                        dest.clone(),
                        "via".into(),
                        igw.region_ip.to_string(),
                        "dev".into(),
                        igw.router_link.clone(),
                    ],
                    None => vec!["blackhole".into(), dest.clone()],
                },
                Via::Eni { link, ip: to } => vec![
                    dest.clone(),
                    "via".into(),
                    to.to_string(),
                    "dev".into(),
                    link.clone(),
                    "onlink".into(),
                ],
                Via::Endpoint { link, ip: to } => vec![
                    dest.clone(),
                    "via".into(),
                    to.to_string(),
                    "dev".into(),
                    link.clone(),
                ],
                Via::Blackhole => vec!["blackhole".into(), dest.clone()],
            };
            args.extend(["table".to_string(), table.clone()]);
            let mut cmd = vec!["-n", r, "route", "replace"];
            cmd.extend(args.iter().map(String::as_str));
            ip(&cmd)?;
            wanted_dests.push(dest);
        }
        // A table with no routes does not exist yet: nothing to remove.
        let listed: serde_json::Value = ip(&["-n", r, "-j", "route", "show", "table", &table])
            .ok()
            .and_then(|out| serde_json::from_str(&out).ok())
            .unwrap_or_default();
        for present in listed.as_array().into_iter().flatten() {
            let Some(dst) = present.get("dst").and_then(|d| d.as_str()) else {
                continue;
            };
            let dst = normalize_dst(dst);
            if !wanted_dests.contains(&dst) {
                let mut cmd = vec!["-n", r, "route", "del"];
                if present.get("type").and_then(|t| t.as_str()) == Some("blackhole") {
                    cmd.push("blackhole");
                }
                cmd.extend([dst.as_str(), "table", &table]);
                ip(&cmd)?;
            }
        }
        for subnet in &t.subnets {
            wanted_rules.push(vec![
                pref.to_string(),
                "from".into(),
                subnet.to_string(),
                "lookup".into(),
                table.clone(),
            ]);
            pref += 1;
        }
    }
    let listed: serde_json::Value =
        serde_json::from_str(&ip(&["-n", r, "-j", "rule", "show"])?).unwrap_or_default();
    let present: Vec<Vec<String>> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(rule_key)
        .filter(|k| k[0].parse::<u32>().is_ok_and(|p| (100..30000).contains(&p)))
        .collect();
    for rule in wanted_rules.iter().filter(|w| !present.contains(w)) {
        let mut cmd = vec!["-n", r, "rule", "add", "pref"];
        cmd.extend(rule.iter().map(String::as_str));
        ip(&cmd)?;
    }
    for rule in present.iter().filter(|p| !wanted_rules.contains(p)) {
        let mut cmd = vec!["-n", r, "rule", "del", "pref"];
        cmd.extend(rule.iter().map(String::as_str));
        ip(&cmd)?;
    }
    Ok(())
}

/// A destination as `ip -j route` prints it, in the plan's CIDR form.
fn normalize_dst(dst: &str) -> String {
    match dst {
        "default" => "0.0.0.0/0".to_string(),
        d if d.contains('/') => d.to_string(),
        d => format!("{d}/32"),
    }
}

/// A policy rule from `ip -j rule show` as `[pref, from|to, cidr, lookup, table]`.
fn rule_key(rule: &serde_json::Value) -> Option<Vec<String>> {
    let pref = rule.get("priority")?.as_u64()?.to_string();
    let table = rule.get("table")?.as_str()?.to_string();
    let src = rule
        .get("src")
        .and_then(|v| v.as_str())
        .filter(|s| *s != "all");
    let (dir, addr, len) = if let Some(src) = src {
        ("from", src, rule.get("srclen").and_then(|v| v.as_u64()))
    } else {
        let dst = rule.get("dst").and_then(|v| v.as_str())?;
        ("to", dst, rule.get("dstlen").and_then(|v| v.as_u64()))
    };
    let cidr = match len {
        Some(l) => format!("{addr}/{l}"),
        None => normalize_dst(addr),
    };
    Some(vec![pref, dir.into(), cidr, "lookup".into(), table])
}

/// The router namespace with forwarding on and exactly the plan's local addresses on `lo`.
pub fn apply_router(plan: &RouterPlan) -> Result<()> {
    let r = plan.netns.as_str();
    ensure_netns(r)?;
    sysctl(r, "net.ipv4.ip_forward", "1")?;
    sysctl(r, "net.ipv4.conf.all.rp_filter", "0")?;
    let wanted: Vec<String> = plan.local_addrs.iter().map(|a| format!("{a}/32")).collect();
    for a in &wanted {
        ip(&["-n", r, "addr", "replace", a, "dev", "lo"])?;
    }
    // The VPC's own range ends here: an address no ENI has is dropped by the
    // router (AWS's local route), never handed to a subnet's default route
    // towards a gateway. ENIs' /32 routes are more specific.
    ip(&[
        "-n",
        r,
        "route",
        "replace",
        "blackhole",
        &plan.cidr.to_string(),
    ])?;
    // Addresses of deleted subnets go; 127.0.0.1 stays.
    let current = ip(&["-n", r, "-o", "-4", "addr", "show", "dev", "lo"])?;
    for line in current.lines() {
        let Some(addr) = line.split_whitespace().skip_while(|w| *w != "inet").nth(1) else {
            continue;
        };
        if !addr.starts_with("127.") && !wanted.iter().any(|w| w == addr) {
            ip(&["-n", r, "addr", "del", addr, "dev", "lo"])?;
        }
    }
    Ok(())
}

/// Runs `nft` with `args` (and `input` on stdin) from a thread inside namespace `netns`.
fn nft_in(netns: &str, args: &[&str], input: Option<Vec<u8>>) -> Result<Vec<u8>> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = cove_net::netns::run_in(netns, move || -> std::io::Result<std::process::Output> {
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
            // Keep what nft refused, so the failure can be read and replayed.
            let path = std::env::temp_dir().join(format!("{netns}.nft.json"));
            let _ = std::fs::write(&path, &batch);
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
    fn observe_rules(&self, router_netns: &str) -> Result<Option<Ruleset>> {
        observe_rules(router_netns)
    }
    fn apply_rules(&self, router_netns: &str, ops: &[Op]) -> Result<()> {
        apply_rule_ops(router_netns, ops)
    }
}

#[cfg(test)]
mod route_tests {
    use super::*;

    #[test]
    fn listed_routes_and_rules_compare_with_the_plan() {
        assert_eq!(normalize_dst("default"), "0.0.0.0/0");
        assert_eq!(normalize_dst("192.0.2.20"), "192.0.2.20/32");
        assert_eq!(normalize_dst("10.0.0.0/16"), "10.0.0.0/16");
        let rule =
            serde_json::json!({"priority": 1000, "src": "10.0.1.0", "srclen": 24, "table": "1000"});
        assert_eq!(
            rule_key(&rule).unwrap(),
            vec!["1000", "from", "10.0.1.0/24", "lookup", "1000"]
        );
        let rule =
            serde_json::json!({"priority": 100, "dst": "10.0.0.0", "dstlen": 16, "table": "main"});
        assert_eq!(
            rule_key(&rule).unwrap(),
            vec!["100", "to", "10.0.0.0/16", "lookup", "main"]
        );
        // `ip -j` shows a `to` rule with `"src": "all"`.
        let to = serde_json::json!({"priority": 100, "src": "all", "dst": "10.0.0.0", "dstlen": 16, "table": "main"});
        assert_eq!(rule_key(&to).unwrap()[1], "to");
        let catch_all = serde_json::json!({"priority": 0, "src": "all", "table": "local"});
        assert_eq!(rule_key(&catch_all), None);
    }
}
