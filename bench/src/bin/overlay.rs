//! `cove-overlay-bench`: ENI → ENI over TCP on one host (through the VPC's
//! router) and across two simulated hosts (through each host's router and
//! the VPC's VXLAN overlay), side by side in one run: throughput of a bulk
//! stream and the round trip of a 1-byte request. Needs root; prints a
//! table.
//!
//!   cargo build --release -p cove-bench && sudo ./target/release/cove-overlay-bench
//!
//! The lab is the one of crates/cove-dataplane/tests/overlay.rs: ENIs
//! 10.0.1.4 and 10.0.1.5 on host 0, 10.0.2.4 on host 1, every group open.

#[path = "../../../crates/cove-dataplane/tests/common/mod.rs"]
mod common;

use common::two_hosts;

use cove_model::fixtures::*;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const RUNS: usize = 5;
const STREAM_FOR: Duration = Duration::from_secs(2);
const ROUND_TRIPS: usize = 2000;

/// A listener in `dst`'s namespace that drains every connection, or echoes
/// what it reads when `echo`.
fn serve(lab: &two_hosts::Lab, dst: Ipv4Addr, echo: bool) -> SocketAddrV4 {
    let listener =
        cove_net::netns::run_in(&lab.eni(dst).1.netns, move || TcpListener::bind((dst, 0)))
            .expect("entering the namespace")
            .expect("binding");
    let port = listener.local_addr().expect("bound").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let _ = conn.set_nodelay(true);
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) if echo => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    SocketAddrV4::new(dst, port)
}

/// Gbit/s of one stream from `src` for [`STREAM_FOR`].
fn throughput(lab: &two_hosts::Lab, src: Ipv4Addr, to: SocketAddrV4) -> f64 {
    cove_net::netns::run_in(&lab.eni(src).1.netns, move || {
        let mut s = TcpStream::connect(to).expect("connecting");
        let chunk = vec![7u8; 256 * 1024];
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < STREAM_FOR {
            s.write_all(&chunk).expect("sending");
            sent += chunk.len() as u64;
        }
        sent as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e9
    })
    .expect("entering the namespace")
}

/// Round trips of one byte from `src`, sorted, in microseconds.
fn round_trips(lab: &two_hosts::Lab, src: Ipv4Addr, to: SocketAddrV4) -> Vec<f64> {
    cove_net::netns::run_in(&lab.eni(src).1.netns, move || {
        let mut s = TcpStream::connect(to).expect("connecting");
        s.set_nodelay(true).expect("nodelay");
        let mut byte = [0u8; 1];
        let mut out: Vec<f64> = (0..ROUND_TRIPS + 100)
            .map(|_| {
                let t = Instant::now();
                s.write_all(b"x").expect("sending");
                s.read_exact(&mut byte).expect("the echo");
                t.elapsed().as_secs_f64() * 1e6
            })
            .skip(100)
            .collect();
        out.sort_by(f64::total_cmp);
        out
    })
    .expect("entering the namespace")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let open = group(
        "sg-open",
        vec![rule("-1", None, None, cidr("10.0.0.0/16"))],
        vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
    );
    let lab = two_hosts::lab(
        vec![open],
        [&["sg-open"], &["sg-open"], &["sg-open"]],
        vec![allow_all_acl("acl-d", &["subnet-a", "subnet-b"])],
    );
    let arms = [
        (
            "same host (10.0.1.5 -> 10.0.1.4)",
            ip("10.0.1.5"),
            ip("10.0.1.4"),
        ),
        (
            "across hosts over VXLAN (10.0.2.4 -> 10.0.1.4)",
            ip("10.0.2.4"),
            ip("10.0.1.4"),
        ),
    ];
    let sinks: Vec<_> = arms.iter().map(|a| serve(&lab, a.2, false)).collect();
    let echoes: Vec<_> = arms.iter().map(|a| serve(&lab, a.2, true)).collect();
    let (mut gbits, mut p50s, mut p99s) = ([vec![], vec![]], [vec![], vec![]], [vec![], vec![]]);
    // The arms alternate within each run, so both see the same machine.
    for _ in 0..RUNS {
        for (i, arm) in arms.iter().enumerate() {
            gbits[i].push(throughput(&lab, arm.1, sinks[i]));
            let rtt = round_trips(&lab, arm.1, echoes[i]);
            p50s[i].push(rtt[rtt.len() / 2]);
            p99s[i].push(rtt[rtt.len() * 99 / 100]);
        }
    }
    println!("| path | TCP stream Gbit/s | 1-byte round trip p50 µs | p99 µs |");
    println!("|---|---:|---:|---:|");
    let rows: Vec<(f64, f64, f64)> = (0..2)
        .map(|i| {
            (
                median(gbits[i].clone()),
                median(p50s[i].clone()),
                median(p99s[i].clone()),
            )
        })
        .collect();
    for (arm, (g, p50, p99)) in arms.iter().zip(&rows) {
        println!("| {} | {g:.2} | {p50:.1} | {p99:.1} |", arm.0);
    }
    println!();
    println!(
        "across / same-host throughput: {:.0}% (target >= 80%); added round-trip p50: {:.1} µs (target < 50 µs); medians of {RUNS} runs",
        rows[1].0 / rows[0].0 * 100.0,
        rows[1].1 - rows[0].1
    );
}
