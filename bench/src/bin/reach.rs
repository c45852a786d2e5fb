//! `cove-reach-bench`: how long `cove-reach` takes to answer one query, by
//! VPC size. Worlds are synthetic but dense: every ENI in two of eight
//! groups that reference each other, custom ACLs of 20 entries on every
//! subnet, a NAT gateway, an internet gateway and an S3 gateway endpoint.
//! Prints the median and p99 per query type for 10, 100 and 1,000 ENIs.

#[path = "../worlds.rs"]
mod worlds;

use cove_model::vpc::*;
use cove_reach::{analyze, Protocol, Query, Source, Target};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

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
        let w = worlds::dense_vpc(size);
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
