//! `cove-bench`: replays a realistic, SigV4-signed EC2 control-plane mix at a
//! fixed concurrency against Cove and, in the same run, against moto's server,
//! and prints throughput and latency percentiles side by side.
//!
//! The mix (per 100 requests): 30 DescribeSecurityGroups (one group by id),
//! 25 DescribeSubnets (filtered by VPC), 20 DescribeRouteTables (filtered by
//! VPC), 15 CreateTags (on a subnet or group), 10 AuthorizeSecurityGroupIngress
//! (a new rule each time). Both servers start from the same state: one VPC,
//! 8 subnets and 100 security groups, created through the same API.

mod proc_stat;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use cove_wire::sigv4;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const GROUPS: usize = 100;
const SUBNETS: usize = 8;

#[derive(Parser)]
struct Args {
    /// The cove binary (build it with `cargo build --release -p cove`).
    #[arg(long, default_value = "target/release/cove")]
    cove_bin: String,
    /// moto's server command; `none` skips the comparison.
    #[arg(long, default_value = ".venv/bin/moto_server")]
    moto_bin: String,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests replayed against Cove.
    #[arg(long, default_value_t = 30000)]
    cove_requests: usize,
    /// Requests replayed against moto (it is much slower).
    #[arg(long, default_value_t = 3000)]
    moto_requests: usize,
    /// Requests sent before measuring, to warm connections and caches.
    #[arg(long, default_value_t = 1000)]
    warmup: usize,
    /// Runs per target; the summary gives the median of each figure.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// A PostgreSQL server (URL) where the benchmark may create a database:
    /// adds Cove with its store there (`cove-pg`) to each run.
    #[arg(long)]
    postgres: Option<String>,
    /// With --postgres: also run the mix against this many servers on one
    /// PostgreSQL store (the controller and API replicas, `cove-pg-xN`),
    /// the connections spread evenly over them as a load balancer would.
    #[arg(long)]
    replicas: Option<usize>,
}

struct Server {
    name: String,
    child: Child,
    port: u16,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_listening(port: u16, child: &mut Child, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited early: {status}");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{name} did not listen on {port} within 30 s")
}

/// A new, empty database `name` on the PostgreSQL `server`; its URL.
fn fresh_database(server: &str, name: &str) -> anyhow::Result<String> {
    let status = Command::new("psql")
        .args(["-q", server])
        .args([
            "-c",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        ])
        .args(["-c", &format!("CREATE DATABASE {name}")])
        .stdin(Stdio::null())
        .status()
        .context("running psql")?;
    anyhow::ensure!(status.success(), "psql could not create {name}");
    let (base, _) = server
        .rsplit_once('/')
        .context("a URL such as postgres://user@host:port/postgres")?;
    Ok(format!("{base}/{name}"))
}

fn start_cove(bin: &str, store: Option<&str>, api_only: bool) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    // Cove refuses a data directory other users may enter.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    let port = free_port()?;
    let mut child = Command::new(bin)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // The control-plane benchmark measures the API alone.
        .args(["--data-plane", "off"])
        .args(store.map(|url| format!("--store={url}")))
        .args(api_only.then_some("--api-only"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    wait_listening(port, &mut child, "cove")?;
    Ok(Server {
        name: if store.is_some() { "cove-pg" } else { "cove" }.to_string(),
        child,
        port,
        _dir: Some(dir),
    })
}

fn start_moto(bin: &str) -> anyhow::Result<Server> {
    let port = free_port()?;
    let mut child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    wait_listening(port, &mut child, "moto")?;
    Ok(Server {
        name: "moto".to_string(),
        child,
        port,
        _dir: None,
    })
}

/// One keep-alive HTTP/1.1 connection that signs and sends EC2 requests.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    port: u16,
}

impl Conn {
    async fn open(port: u16) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn {
            sender,
            host: format!("127.0.0.1:{port}"),
            port,
        })
    }

    /// Sends one signed EC2 request; returns the status and body.
    async fn call(&mut self, body: String) -> anyhow::Result<(u16, Bytes)> {
        let mut headers = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("host".to_string(), self.host.clone()),
        ];
        sigv4::sign_headers(
            &mut headers,
            "POST",
            "/",
            "",
            &sigv4::sha256_hex(body.as_bytes()),
            ACCESS_KEY,
            SECRET_KEY,
            "us-east-1",
            "ec2",
        );
        let mut req = hyper::Request::post("/");
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        // moto's server closes every connection after one response: reconnect then.
        if self.sender.is_closed() || self.sender.ready().await.is_err() {
            *self = Conn::open(self.port).await?;
        }
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = text.find(start)? + start.len();
    let j = text[i..].find(end)? + i;
    Some(&text[i..j])
}

/// The ids the mix refers to, created through the API on each server.
struct Fixture {
    vpc: String,
    subnets: Vec<String>,
    groups: Vec<String>,
}

async fn must(c: &mut Conn, body: String) -> anyhow::Result<String> {
    let (status, bytes) = c.call(body).await?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if status != 200 {
        bail!("setup call failed ({status}): {text}");
    }
    Ok(text)
}

async fn setup(port: u16) -> anyhow::Result<Fixture> {
    let mut c = Conn::open(port).await?;
    let v = "Version=2016-11-15";
    let text = must(
        &mut c,
        format!("Action=CreateVpc&{v}&CidrBlock=10.0.0.0%2F16"),
    )
    .await?;
    let vpc = between(&text, "<vpcId>", "</vpcId>")
        .context("vpc id")?
        .to_string();
    let mut subnets = Vec::new();
    for i in 0..SUBNETS {
        let text = must(
            &mut c,
            format!("Action=CreateSubnet&{v}&VpcId={vpc}&CidrBlock=10.0.{i}.0%2F24"),
        )
        .await?;
        subnets.push(
            between(&text, "<subnetId>", "</subnetId>")
                .context("subnet id")?
                .to_string(),
        );
    }
    let mut groups = Vec::new();
    for i in 0..GROUPS {
        let text = must(
            &mut c,
            format!(
                "Action=CreateSecurityGroup&{v}&VpcId={vpc}&GroupName=g{i}&GroupDescription=bench"
            ),
        )
        .await?;
        groups.push(
            between(&text, "<groupId>", "</groupId>")
                .context("group id")?
                .to_string(),
        );
    }
    Ok(Fixture {
        vpc,
        subnets,
        groups,
    })
}

/// The body of the `i`-th request of the mix (deterministic per index).
fn request_body(fx: &Fixture, i: usize, authorize_seq: &AtomicUsize) -> (bool, String) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(i as u64);
    let v = "Version=2016-11-15";
    match i % 20 {
        0..=5 => (
            true,
            format!(
                "Action=DescribeSecurityGroups&{v}&GroupId.1={}",
                fx.groups[rng.gen_range(0..GROUPS)]
            ),
        ),
        6..=10 => (
            true,
            format!(
                "Action=DescribeSubnets&{v}&Filter.1.Name=vpc-id&Filter.1.Value.1={}",
                fx.vpc
            ),
        ),
        11..=14 => (
            true,
            format!(
                "Action=DescribeRouteTables&{v}&Filter.1.Name=vpc-id&Filter.1.Value.1={}",
                fx.vpc
            ),
        ),
        15..=17 => {
            let target = if rng.gen_bool(0.5) {
                &fx.subnets[rng.gen_range(0..SUBNETS)]
            } else {
                &fx.groups[rng.gen_range(0..GROUPS)]
            };
            (
                false,
                format!(
                    "Action=CreateTags&{v}&ResourceId.1={target}&Tag.1.Key=k{}&Tag.1.Value=v{i}",
                    rng.gen_range(0..20)
                ),
            )
        }
        _ => {
            // Each authorization adds a new rule: a new port in the next group, at most 40 ports per group.
            let k = authorize_seq.fetch_add(1, Ordering::Relaxed);
            let (group, port) = (k % GROUPS, 1000 + k / GROUPS);
            (
                false,
                format!(
                    "Action=AuthorizeSecurityGroupIngress&{v}&GroupId={}&IpPermissions.1.IpProtocol=tcp\
                     &IpPermissions.1.FromPort={port}&IpPermissions.1.ToPort={port}&IpPermissions.1.IpRanges.1.CidrIp=10.0.0.0%2F8",
                    fx.groups[group]
                ),
            )
        }
    }
}

struct Outcome {
    name: String,
    requests: usize,
    seconds: f64,
    all: Vec<u64>,
    reads: Vec<u64>,
    writes: Vec<u64>,
    errors: usize,
    first_error: Option<String>,
    /// Server CPU seconds spent during the measured requests.
    server_cpu: f64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // why: p is a fraction in 0..=1, so the rounded index lies in
    // 0..sorted.len().
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

/// Replays the mix against `servers` (one server, or replicas of one
/// store: connection `i` goes to server `i mod n`); their CPU is summed.
async fn replay(
    name: &str,
    servers: &[Server],
    requests: usize,
    warmup: usize,
    concurrency: usize,
) -> anyhow::Result<Outcome> {
    let fx = Arc::new(setup(servers[0].port).await?);
    let seq = Arc::new(AtomicUsize::new(0));
    let authorize_seq = Arc::new(AtomicUsize::new(0));
    let total = warmup + requests;
    let measure_start = Arc::new(std::sync::OnceLock::<(Instant, f64)>::new());
    let pids: Arc<Vec<u32>> = Arc::new(servers.iter().map(|s| s.child.id()).collect());
    let servers_cpu = |pids: &[u32]| -> f64 {
        pids.iter()
            .map(|p| proc_stat::cpu_seconds(Some(*p)))
            .sum::<f64>()
    };
    let mut tasks = Vec::new();
    for connection in 0..concurrency {
        let (fx, seq, authorize_seq, measure_start) = (
            fx.clone(),
            seq.clone(),
            authorize_seq.clone(),
            measure_start.clone(),
        );
        let port = servers[connection % servers.len()].port;
        let pids = pids.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(port).await?;
            let mut samples: Vec<(bool, u64, bool, Option<String>)> = Vec::new();
            loop {
                let i = seq.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                if i == warmup {
                    let _ = measure_start.set((Instant::now(), servers_cpu(&pids)));
                }
                let (read, body) = request_body(&fx, i, &authorize_seq);
                let t = Instant::now();
                let (status, bytes) = conn.call(body).await?;
                let micros = cove_model::convert::micros(t.elapsed());
                if i >= warmup {
                    let err = (status != 200).then(|| {
                        String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned()
                    });
                    samples.push((read, micros, status == 200, err));
                }
            }
            anyhow::Ok(samples)
        }));
    }
    let mut outcome = Outcome {
        name: name.to_string(),
        requests,
        seconds: 0.0,
        all: vec![],
        reads: vec![],
        writes: vec![],
        errors: 0,
        first_error: None,
        server_cpu: f64::NAN,
    };
    for t in tasks {
        for (read, micros, ok, err) in t.await?? {
            outcome.all.push(micros);
            if read {
                outcome.reads.push(micros)
            } else {
                outcome.writes.push(micros)
            }
            if !ok {
                outcome.errors += 1;
                outcome.first_error = outcome.first_error.or(err);
            }
        }
    }
    if let Some((start, cpu)) = measure_start.get() {
        outcome.seconds = start.elapsed().as_secs_f64();
        outcome.server_cpu = servers_cpu(&pids) - cpu;
    }
    for v in [&mut outcome.all, &mut outcome.reads, &mut outcome.writes] {
        v.sort_unstable();
    }
    Ok(outcome)
}

fn print_table(outcomes: &[&Outcome], concurrency: usize) {
    println!(
        "{:<8} {:>9} {:>5} {:>8} {:>10} {:>8} {:>8} {:>12} {:>12} {:>13} {:>7}",
        "target",
        "requests",
        "conc",
        "seconds",
        "req/s",
        "p50 ms",
        "p99 ms",
        "read p50 ms",
        "read p99 ms",
        "write p99 ms",
        "errors"
    );
    for o in outcomes {
        println!(
            "{:<8} {:>9} {:>5} {:>8.2} {:>10.0} {:>8.2} {:>8.2} {:>12.2} {:>12.2} {:>13.2} {:>11.0} us {:>7}",
            o.name,
            o.requests,
            concurrency,
            o.seconds,
            o.requests as f64 / o.seconds,
            percentile(&o.all, 0.5),
            percentile(&o.all, 0.99),
            percentile(&o.reads, 0.5),
            percentile(&o.reads, 0.99),
            percentile(&o.writes, 0.99),
            o.server_cpu * 1e6 / o.requests as f64,
            o.errors
        );
        if let Some(e) = &o.first_error {
            println!("  first error from {}: {e}", o.name);
        }
    }
}

/// One line of figures per outcome, for taking medians across runs.
fn figures(o: &Outcome) -> [f64; 7] {
    [
        o.requests as f64 / o.seconds,
        percentile(&o.all, 0.5),
        percentile(&o.all, 0.99),
        percentile(&o.reads, 0.5),
        percentile(&o.reads, 0.99),
        percentile(&o.writes, 0.99),
        o.server_cpu * 1e6 / o.requests as f64,
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn medians(runs: &[&Outcome]) -> [f64; 7] {
    let all: Vec<[f64; 7]> = runs.iter().map(|o| figures(o)).collect();
    std::array::from_fn(|i| median(all.iter().map(|f| f[i]).collect()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut cove_runs = Vec::new();
    let mut moto_runs = Vec::new();
    let mut postgres_runs = Vec::new();
    let mut replica_runs = Vec::new();
    // One run of the mix against a fresh `cove serve` on `store` and
    // `replicas` more API replicas of it.
    let replay_cove = |store: Option<&str>, replicas: usize| -> anyhow::Result<Outcome> {
        let mut servers = vec![start_cove(&args.cove_bin, store, false)?];
        for _ in 0..replicas {
            servers.push(start_cove(&args.cove_bin, store, true)?);
        }
        let name = match (replicas, &servers[0].name) {
            (0, name) => name.clone(),
            (n, name) => format!("{name}-x{}", n + 1),
        };
        runtime.block_on(replay(
            &name,
            &servers,
            args.cove_requests,
            args.warmup,
            args.concurrency,
        ))
    };
    for run in 1..=args.runs.max(1) {
        cove_runs.push(replay_cove(None, 0)?);
        if let Some(server) = &args.postgres {
            let url = fresh_database(server, "cove_bench_api")?;
            postgres_runs.push(replay_cove(Some(&url), 0)?);
            if let Some(n) = args.replicas.filter(|n| *n > 1) {
                let url = fresh_database(server, "cove_bench_api")?;
                replica_runs.push(replay_cove(Some(&url), n - 1)?);
            }
        }
        if args.moto_bin != "none" {
            let moto = start_moto(&args.moto_bin)?;
            moto_runs.push(runtime.block_on(replay(
                "moto",
                std::slice::from_ref(&moto),
                args.moto_requests,
                args.warmup.min(200),
                args.concurrency,
            ))?);
        }
        println!("\nrun {run}:");
        let mut this: Vec<&Outcome> = vec![cove_runs.last().expect("pushed")];
        this.extend(postgres_runs.last());
        this.extend(replica_runs.last());
        this.extend(moto_runs.last());
        print_table(&this, args.concurrency);
    }
    println!();
    println!("EC2 control-plane mix (30% DescribeSecurityGroups, 25% DescribeSubnets, 20% DescribeRouteTables,");
    println!("15% CreateTags, 10% AuthorizeSecurityGroupIngress), SigV4-signed, {} keep-alive connections, loopback.", args.concurrency);
    println!("Medians of {} runs:", cove_runs.len());
    println!(
        "{:<8} {:>10} {:>8} {:>8} {:>12} {:>12} {:>13} {:>14}",
        "target",
        "req/s",
        "p50 ms",
        "p99 ms",
        "read p50 ms",
        "read p99 ms",
        "write p99 ms",
        "server CPU/req"
    );
    let mut rows = Vec::new();
    for runs in [&cove_runs, &postgres_runs, &replica_runs, &moto_runs] {
        if let Some(first) = runs.first() {
            rows.push((
                first.name.as_str(),
                medians(&runs.iter().collect::<Vec<_>>()),
            ));
        }
    }
    for (name, f) in &rows {
        println!(
            "{:<8} {:>10.0} {:>8.2} {:>8.2} {:>12.2} {:>12.2} {:>13.2} {:>11.0} us",
            name, f[0], f[1], f[2], f[3], f[4], f[5], f[6]
        );
    }
    if let Some((_, moto)) = rows.iter().find(|(name, _)| *name == "moto") {
        let ratio = rows[0].1[0] / moto[0];
        let read_p99 = rows[0].1[4];
        println!();
        println!(
            "throughput ratio cove/moto (medians): {ratio:.1}x (target >= 30x: {})",
            if ratio >= 30.0 { "met" } else { "NOT met" }
        );
        println!(
            "cove read p99 (median): {read_p99:.2} ms (target < 5 ms: {})",
            if read_p99 < 5.0 { "met" } else { "NOT met" }
        );
    }
    Ok(())
}
