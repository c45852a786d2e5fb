//! The store's commit cost on SQLite and on PostgreSQL, side by side, and
//! how soon a second process on PostgreSQL sees a commit. Prints a table.
//!
//!   cargo run --release -p cove-store --example store_bench -- postgres://postgres@127.0.0.1:54329/postgres
//!
//! The URL names a server where the benchmark may create and drop databases
//! (`bash scripts/test-postgres.sh` starts one). Each arm runs `RUNS` times
//! on a fresh database; the table shows medians.

use cove_model::vpc::InternetGateway;
use cove_store::scratch::ScratchDatabase;
use cove_store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RUNS: usize = 5;
const WRITERS: usize = 4;
const COMMITS_PER_WRITER: usize = 500;
const ACCOUNT: &str = "111111111111";

fn igw(id: String, n: usize) -> InternetGateway {
    InternetGateway {
        id,
        region: "us-east-1".into(),
        attached_vpc_id: Some(format!("vpc-{n:017x}")),
    }
}

/// Commits per second with `WRITERS` threads spread over `stores`, each
/// commit putting one changed document; and the per-commit latency p50.
fn commit_rate(stores: &[Arc<Store>]) -> (f64, Duration) {
    let started = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = stores[w % stores.len()].clone();
                s.spawn(move || {
                    (0..COMMITS_PER_WRITER)
                        .map(|i| {
                            let t = Instant::now();
                            store
                                .write_as(ACCOUNT, |tx| {
                                    tx.put(igw(format!("igw-{w}-{}", i % 50), i));
                                    Ok(())
                                })
                                .unwrap();
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let rate = (WRITERS * COMMITS_PER_WRITER) as f64 / started.elapsed().as_secs_f64();
    (rate, percentile(latencies, 50))
}

/// A write that changes nothing (what reconcilers do every pass).
fn no_op_latency(store: &Store) -> Duration {
    let samples = (0..500)
        .map(|_| {
            let t = Instant::now();
            store.write_as(ACCOUNT, |_| Ok(())).unwrap();
            t.elapsed()
        })
        .collect();
    percentile(samples, 50)
}

/// From a commit returning in process A to the document being in process
/// B's published world, B learning of it from the change feed alone.
fn feed_delay(a: &Store, b: &Store) -> Vec<Duration> {
    (0..300)
        .map(|i| {
            let id = format!("igw-feed-{i}");
            let seen = b.generation();
            a.write_as(ACCOUNT, |tx| {
                tx.put(igw(id.clone(), i));
                Ok(())
            })
            .unwrap();
            let t = Instant::now();
            let mut generation = seen;
            while !b.snapshot().internet_gateways.contains_key(&id) {
                generation = b.wait_for_change(generation, Duration::from_secs(5));
            }
            t.elapsed()
        })
        .collect()
}

fn percentile(mut v: Vec<Duration>, p: usize) -> Duration {
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_duration(v: Vec<Duration>) -> Duration {
    percentile(v, 50)
}

fn main() -> anyhow::Result<()> {
    let server = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("COVE_TEST_POSTGRES").ok())
        .ok_or_else(|| anyhow::anyhow!("usage: store_bench <postgres URL of a server>"))?;
    let mut rows: Vec<(String, f64, Duration, Duration)> = Vec::new();
    let mut arm =
        |name: &str, open: &dyn Fn(usize) -> (Vec<Arc<Store>>, Box<dyn std::any::Any>)| {
            let (mut rates, mut commits, mut noops) = (vec![], vec![], vec![]);
            for run in 0..RUNS {
                let (stores, _guard) = open(run);
                let (rate, p50) = commit_rate(&stores);
                rates.push(rate);
                commits.push(p50);
                noops.push(no_op_latency(&stores[0]));
            }
            rows.push((
                name.to_string(),
                median(rates),
                median_duration(commits),
                median_duration(noops),
            ));
        };
    arm("SQLite (WAL, synchronous=NORMAL), 1 process", &|_| {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("cove.db")).unwrap());
        (vec![store], Box::new(dir))
    });
    for processes in [1, 2] {
        let server = server.clone();
        arm(
            &format!("PostgreSQL, {processes} process(es) on one database"),
            &move |run| {
                let db = ScratchDatabase::create(&server, &format!("cove_bench_{processes}_{run}"))
                    .expect("a scratch database");
                let stores = (0..processes)
                    .map(|_| Store::connect_postgres(&db.url).unwrap())
                    .collect();
                (stores, Box::new(db))
            },
        );
    }
    println!("| store | commits/s ({WRITERS} writers, median of {RUNS}) | commit p50 | write that changes nothing, p50 |");
    println!("|---|---:|---:|---:|");
    for (name, rate, p50, noop) in &rows {
        println!("| {name} | {rate:.0} | {p50:.2?} | {noop:.2?} |");
    }

    let mut delays = Vec::new();
    for run in 0..RUNS {
        let db = ScratchDatabase::create(&server, &format!("cove_bench_feed_{run}"))?;
        let a = Store::connect_postgres(&db.url)?;
        let b = Store::connect_postgres(&db.url)?;
        delays.extend(feed_delay(&a, &b));
    }
    println!();
    println!(
        "| commit in process A → visible in process B (PostgreSQL feed, {} commits) | p50 | p99 |",
        delays.len()
    );
    println!("|---|---:|---:|");
    println!(
        "| | {:.2?} | {:.2?} |",
        percentile(delays.clone(), 50),
        percentile(delays, 99)
    );
    Ok(())
}
