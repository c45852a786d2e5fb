//! `cove-dataplane-bench` (root): what Cove's enforcement costs on the wire,
//! measured side by side in one run. Two VPCs are made real with the same
//! topology (a server ENI and a client ENI in different subnets): one whose
//! server admits everything with a single rule, one whose server's groups
//! hold 1,000 rules and whose subnets' ACLs hold 100 entries each, with the
//! matching rule last. A third VPC is the first with a flow log covering
//! both ENIs (per-packet counting in nftables sets). It prints cross-subnet
//! TCP throughput and round-trip latency for each, then the time to make
//! ENIs real.

use clap::Parser;
use cove_dataplane::linux;
use cove_model::vpc::*;
use cove_net::fixtures::*;
use cove_net::netns;
use cove_net::plan::{plan_vpc, RouterPlan};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Seconds of bulk transfer per measurement.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Request/response round trips per measurement.
    #[arg(long, default_value_t = 5000)]
    round_trips: usize,
    /// Security-group rules on the server in the ruled VPC.
    #[arg(long, default_value_t = 1000)]
    rules: usize,
    /// ENIs to create for the creation-time measurement.
    #[arg(long, default_value_t = 100)]
    enis: usize,
}

struct Lab(RouterPlan);

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = linux::remove(&self.0);
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn make(tag: &str, rules: usize, flow_log: bool) -> Lab {
    let mut ingress: Vec<SgRule> = (0..rules.saturating_sub(1))
        .map(|i| {
            rule(
                "tcp",
                Some(10000 + i64::try_from(i).expect("rule count fits i64")),
                Some(10000 + i64::try_from(i).expect("rule count fits i64")),
                cidr("10.0.2.0/24"),
            )
        })
        .collect();
    ingress.push(rule("tcp", Some(5001), Some(5002), cidr("10.0.2.0/24")));
    let server = group(
        "sg-server",
        ingress,
        vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
    );
    let client = group(
        "sg-client",
        vec![],
        vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
    );
    let mut acls = vec![allow_all_acl("acl-d", &["subnet-a", "subnet-b"])];
    if rules > 1 {
        // 100 non-matching entries before the allow, in both directions.
        let acl = &mut acls[0];
        acl.entries.clear();
        for egress in [false, true] {
            for n in 0..100 {
                acl.entries.push(entry(
                    1 + n,
                    egress,
                    "udp",
                    false,
                    "192.0.2.0/24",
                    Some((1, 1)),
                ));
            }
            acl.entries
                .push(entry(200, egress, "-1", true, "0.0.0.0/0", None));
        }
    }
    let w = world(
        tag,
        vec![server, client],
        [&["sg-server"], &["sg-client"], &["sg-client"]],
        acls,
    );
    let mut plan = plan_vpc(&w, tag, &format!("vpc-1{tag}")).expect("fixture");
    if flow_log {
        plan.flow_enis = plan.enis.iter().map(|e| e.id.clone()).collect();
    }
    let lab = Lab(plan);
    linux::apply(&lab.0).expect("apply");
    lab
}

fn in_ns<T: Send + 'static>(lab: &Lab, addr: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = lab.0.eni_by_ip(ip(addr)).expect("eni").netns.clone();
    netns::run_in(&ns, f).expect("netns")
}

/// MB/s of one TCP stream from b1 (10.0.2.4) to a1 (10.0.1.4) across subnets.
fn throughput(lab: &Lab, seconds: u64) -> f64 {
    let listener = in_ns(lab, "10.0.1.4", || {
        TcpListener::bind("10.0.1.4:5001").expect("bind")
    });
    let sink = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    let started = Instant::now();
    in_ns(lab, "10.0.2.4", move || {
        let mut s = TcpStream::connect("10.0.1.4:5001").expect("connect");
        let buf = vec![7u8; 1 << 16];
        let end = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < end {
            s.write_all(&buf).expect("write");
        }
    });
    let bytes = sink.join().expect("sink");
    bytes as f64 / started.elapsed().as_secs_f64() / 1e6
}

/// Round-trip times (µs) of 1-byte request/response exchanges on one connection.
fn round_trips(lab: &Lab, n: usize) -> Vec<f64> {
    let listener = in_ns(lab, "10.0.1.4", || {
        TcpListener::bind("10.0.1.4:5002").expect("bind")
    });
    std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        c.set_nodelay(true).ok();
        let mut b = [0u8; 1];
        while c.read_exact(&mut b).is_ok() {
            if c.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut rtts = in_ns(lab, "10.0.2.4", move || {
        let mut s = TcpStream::connect("10.0.1.4:5002").expect("connect");
        s.set_nodelay(true).ok();
        let mut b = [1u8; 1];
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            s.write_all(&b).expect("write");
            s.read_exact(&mut b).expect("read");
            out.push(t.elapsed().as_secs_f64() * 1e6);
        }
        out
    });
    rtts.sort_by(|a, b| a.total_cmp(b));
    rtts
}

// why: p is a fraction in 0..=1, so the rounded index lies in 0..v.len().
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args = Args::parse();
    assert!(cove_sys::is_root(), "cove-dataplane-bench needs root");
    let base = format!("b{:x}", std::process::id());
    println!(
        "Cross-subnet TCP between two ENIs through the VPC router (veth + nftables), same run:"
    );
    println!(
        "{:<34} {:>10} {:>12} {:>12}",
        "case", "MB/s", "RTT p50 us", "RTT p99 us"
    );
    let mut results = Vec::new();
    let cases = [
        ("1 rule, default ACL", 1, false),
        ("1 rule + flow log on both ENIs", 1, true),
        ("ruled", args.rules, false),
    ];
    for (i, (name, rules, flow_log)) in cases.into_iter().enumerate() {
        let lab = make(&format!("{base}{i}"), rules, flow_log);
        // Warm up ARP and conntrack.
        let _ = round_trips(&lab, 100);
        let mbps = throughput(&lab, args.seconds);
        let rtt = round_trips(&lab, args.round_trips);
        let label = if rules == 1 || flow_log {
            name.to_string()
        } else {
            format!("{rules} SG rules + 100 ACL entries/dir")
        };
        println!(
            "{:<34} {:>10.0} {:>12.1} {:>12.1}",
            label,
            mbps,
            pct(&rtt, 0.5),
            pct(&rtt, 0.99)
        );
        results.push((mbps, pct(&rtt, 0.5)));
    }
    println!(
        "throughput with rules / without: {:.0}% (target >= 90%); added p50 latency: {:.1} us (target < 10 us)",
        100.0 * results[2].0 / results[0].0,
        results[2].1 - results[0].1
    );
    println!(
        "throughput with flow log / without: {:.0}%; added p50 latency: {:.1} us",
        100.0 * results[1].0 / results[0].0,
        results[1].1 - results[0].1
    );

    // ENI creation: namespace, veth, address and routes, then one ruleset apply.
    let tag = format!("{base}e");
    let w = world(
        &tag,
        vec![],
        [&[], &[], &[]],
        vec![allow_all_acl("acl-d", &["subnet-a", "subnet-b"])],
    );
    let mut plan = plan_vpc(&w, &tag, &format!("vpc-1{tag}")).expect("fixture");
    let template = plan.enis[0].clone();
    plan.enis = (0..args.enis)
        .map(|i| {
            let mut e = template.clone();
            e.id = format!("eni-{tag}x{i:05}");
            e.netns = cove_net::naming::eni_netns(&tag, &e.id);
            e.router_link = cove_net::naming::eni_router_link(&e.id);
            e.ip = Ipv4Addr::from(
                u32::from(ip("10.0.1.10")) + u32::try_from(i).expect("ENI count fits u32"),
            );
            e
        })
        .collect();
    let lab = Lab(plan);
    linux::apply_router(&lab.0).expect("router");
    let mut times = Vec::new();
    for e in &lab.0.enis {
        let t = Instant::now();
        linux::apply_eni(&lab.0.netns, e).expect("eni");
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let t = Instant::now();
    linux::apply_rules(&lab.0).expect("rules");
    let rules_ms = t.elapsed().as_secs_f64() * 1e3;
    times.sort_by(|a, b| a.total_cmp(b));
    println!();
    println!(
        "ENI creation ({} ENIs in one VPC): p50 {:.1} ms, p99 {:.1} ms each; ruleset for all of them applied in {:.1} ms",
        args.enis,
        pct(&times, 0.5),
        pct(&times, 0.99),
        rules_ms
    );
}
