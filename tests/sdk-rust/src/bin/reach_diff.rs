//! `cove-reach-diff`: the differential reachability test at any size. Needs
//! root and a built `cove` (COVE_BIN, default target/debug/cove). Prints a
//! table of probes per kind, reachable ones and mismatches; exits 1 on any
//! mismatch. The large run: `cove-reach-diff --topologies 200 --probes 500`.

use clap::Parser;
use cove_sdk_tests::reach_diff::{run, Options};
use std::time::Duration;

#[derive(Parser)]
struct Args {
    /// Seed of the whole run; topology i uses a seed derived from it and i.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 10)]
    topologies: usize,
    /// Probes per topology.
    #[arg(long, default_value_t = 300)]
    probes: usize,
    /// Milliseconds a probe waits for an answer (a silent probe the model
    /// expects to pass is retried with six times as long).
    #[arg(long, default_value_t = 400)]
    timeout_ms: u64,
    /// Run only topology i (to reproduce a mismatch).
    #[arg(long)]
    only: Option<usize>,
    /// Start at topology i (to replay the batch a server shared).
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// Topologies per `cove serve` before a fresh one starts.
    #[arg(long, default_value_t = 10)]
    per_server: usize,
    /// Spread the ENIs over three simulated hosts sharing a store on this
    /// PostgreSQL server (its role may create databases), e.g.
    /// postgres://postgres@127.0.0.1:54329/postgres.
    #[arg(long)]
    hosts: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = Args::parse();
    let opts = Options {
        seed: a.seed,
        topologies: a.topologies,
        probes: a.probes,
        timeout: Duration::from_millis(a.timeout_ms),
        only: a.only,
        first: a.first,
        per_server: a.per_server,
        hosts: a.hosts,
    };
    let report = run(&opts).await;
    print!("{}", report.table());
    std::process::exit(if report.mismatches.is_empty() { 0 } else { 1 });
}
