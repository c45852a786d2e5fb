//! `cove-reach-bench`: how long `cove-reach` takes to answer one query, by
//! VPC size. Worlds are synthetic but dense: every ENI in two of eight
//! groups that reference each other, custom ACLs of 20 entries on every
//! subnet, a NAT gateway, an internet gateway and an S3 gateway endpoint.
//! Prints the median and p99 per query type for 10, 100 and 1,000 ENIs.

use cove_model::fixtures::*;
use cove_model::vpc::*;
use cove_model::world::World;
use cove_reach::{analyze, Protocol, Query, Source, Target};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn build(enis: usize) -> World {
    let groups: Vec<SecurityGroup> = (0..8)
        .map(|g| {
            group(
                &format!("sg-{g}"),
                vec![
                    rule("tcp", Some(443), Some(443), cidr("10.0.0.0/16")),
                    rule(
                        "tcp",
                        Some(5432),
                        Some(5432),
                        SgPeer::Group {
                            group_id: format!("sg-{}", (g + 1) % 8),
                            user_id: ACCOUNT.into(),
                        },
                    ),
                    rule("icmp", Some(8), Some(-1), cidr("10.0.0.0/8")),
                ],
                vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
            )
        })
        .collect();
    let mut w = world("", groups, [&["sg-0"], &["sg-1"], &["sg-2"]], vec![]);
    let subnets = ["subnet-a", "subnet-b"];
    for (i, s) in subnets.iter().enumerate() {
        let mut acl = allow_all_acl(&format!("acl-{i}"), &[s]);
        for n in 0..20 {
            acl.entries.push(entry(
                10 + n,
                n % 2 == 0,
                "tcp",
                n % 3 != 0,
                "203.0.113.0/24",
                Some((1000 + n * 10, 1005 + n * 10)),
            ));
        }
        w.network_acls.insert(acl.id.clone(), acl.into());
    }
    let template = (*w.network_interfaces["eni-a1"]).clone();
    for i in 0..enis.saturating_sub(3) {
        let subnet = subnets[i % 2];
        let third = if subnet == "subnet-a" { 1 } else { 2 };
        let id = format!("eni-x{i}");
        w.network_interfaces.insert(
            id.clone(),
            NetworkInterface {
                id,
                subnet_id: subnet.into(),
                private_ip: ip(&format!("10.0.{third}.{}", 10 + i / 2 % 240)),
                group_ids: vec![format!("sg-{}", i % 8), format!("sg-{}", (i + 3) % 8)],
                ..template.clone()
            }
            .into(),
        );
    }
    attach_igw(&mut w, "igw-1");
    add_nat_gateway(&mut w, "nat-1", "eni-b1");
    associate_eip(&mut w, "eni-b1", "198.51.100.30");
    add_route_table(
        &mut w,
        "rtb-a",
        &["subnet-a"],
        vec![("0.0.0.0/0", RouteTarget::NatGateway("nat-1".into()))],
    );
    add_route_table(
        &mut w,
        "rtb-b",
        &["subnet-b"],
        vec![("0.0.0.0/0", RouteTarget::Gateway("igw-1".into()))],
    );
    add_s3_gateway_endpoint(&mut w, "vpce-s3", &["rtb-a"]);
    w
}

/// Picks a query's destination.
type PickTarget = fn(&mut StdRng, &[String]) -> Target;

// why: p is a fraction in 0..=1, so the index (rounded down, as before)
// lies in 0..sorted.len().
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).floor() as usize]
}

fn main() {
    println!(
        "{:>6} {:<22} {:>12} {:>12}",
        "ENIs", "query", "median µs", "p99 µs"
    );
    for size in [10usize, 100, 1000] {
        let w = build(size);
        let ids: Vec<String> = w
            .network_interfaces
            .values()
            .filter(|e| e.interface_type != InterfaceType::NatGateway)
            .map(|e| e.id.clone())
            .collect();
        let mut rng = StdRng::seed_from_u64(1);
        let kinds: [(&str, PickTarget); 3] = [
            ("eni -> eni", |r, ids| {
                Target::Eni(ids[r.gen_range(0..ids.len())].clone())
            }),
            ("eni -> s3 (endpoint)", |_, _| {
                Target::Address("192.0.2.20".parse().unwrap())
            }),
            ("eni -> internet (NAT)", |_, _| {
                Target::Address(cove_model::region::INTERNET_HOST)
            }),
        ];
        for (name, target) in kinds {
            let mut times = Vec::new();
            for _ in 0..2000 {
                let q = Query {
                    source: Source::Eni(ids[rng.gen_range(0..ids.len())].clone()),
                    target: target(&mut rng, &ids),
                    protocol: Protocol::Tcp,
                    port: Some([443u16, 5432, 22][rng.gen_range(0..3)]),
                    source_port: Some(rng.gen_range(32768..61000)),
                };
                let t = Instant::now();
                let a = analyze(&w, &q);
                times.push(t.elapsed().as_secs_f64() * 1e6);
                std::hint::black_box(a.ok());
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "{size:>6} {name:<22} {:>12.1} {:>12.1}",
                percentile(&times, 0.5),
                percentile(&times, 0.99)
            );
        }
    }
}
