//! The differential reachability test at CI size: a few seeded random
//! topologies made real through the EC2 API, probed with real packets, and
//! compared with `cove-reach`. Needs root (it is skipped otherwise, saying so).

use cove_sdk_tests::reach_diff::{run, Options};
use std::time::Duration;

#[tokio::test(flavor = "current_thread")]
async fn model_and_kernel_agree_on_random_topologies() {
    if !cove_sys::is_root() {
        eprintln!("skipped: the data plane needs root");
        return;
    }
    agree_on_four_topologies(7, None).await;
}

/// Four seeded topologies of 150 probes each: some probes get through,
/// some do not, and the model and the kernel agree on every one.
async fn agree_on_four_topologies(seed: u64, hosts: Option<String>) {
    let report = run(&Options {
        seed,
        topologies: 4,
        probes: 150,
        timeout: Duration::from_millis(400),
        only: None,
        first: 0,
        per_server: 4,
        hosts,
    })
    .await;
    println!("{}", report.table());
    assert_eq!(report.probes, 4 * 150);
    assert!(
        report.kinds.values().map(|k| k.1).sum::<usize>() > 0,
        "nothing was reachable: the test would prove nothing"
    );
    assert!(
        report.kinds.values().map(|k| k.0 - k.1).sum::<usize>() > 0,
        "nothing was blocked"
    );
    assert!(report.mismatches.is_empty(), "{}", report.table());
}

/// The same over three simulated hosts (the control plane's and two
/// agents'), the ENIs spread over them: every probe between ENIs on
/// different hosts crosses the overlay, and what leaves the VPC from an
/// agent's ENI crosses it to the control plane's router. Needs the test
/// PostgreSQL server (COVE_TEST_POSTGRES; scripts/test-postgres.sh).
#[tokio::test(flavor = "current_thread")]
async fn model_and_kernel_agree_with_enis_spread_over_three_hosts() {
    if !cove_sys::is_root() {
        eprintln!("skipped: the data plane needs root");
        return;
    }
    let Ok(postgres) = std::env::var("COVE_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the test over several hosts: set COVE_TEST_POSTGRES"
        );
        eprintln!("skipped: COVE_TEST_POSTGRES is not set");
        return;
    };
    agree_on_four_topologies(11, Some(postgres)).await;
}
