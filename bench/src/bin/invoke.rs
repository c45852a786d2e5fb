//! `cove-invoke-bench`: a closed-loop HTTP load generator for one URL, used
//! by `bench/hosting.py` to compare InvokeEndpoint through Cove with the same
//! serving container's `/invocations` called directly. Each of
//! `--concurrency` clients keeps one connection and sends the next request
//! when the last one answered. With `--sign`, requests carry SigV4 headers
//! for SageMaker Runtime (signed once per second and reused, as a signature
//! only depends on the second and the constant body), so the client's own
//! cost is the same on both paths. Prints one JSON line of figures.

use bytes::Bytes;
use clap::Parser;
use cove_wire::sigv4;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

#[derive(Parser)]
struct Args {
    /// `http://host:port/path`.
    #[arg(long)]
    url: String,
    /// Sign the requests for SageMaker Runtime (us-east-1).
    #[arg(long)]
    sign: bool,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value = r#"{"inputs": [1, 2, 3]}"#)]
    body: String,
}

/// Signed headers, renewed when the second changes.
struct Signer {
    host: String,
    path: String,
    payload_hash: String,
    second: u64,
    headers: Vec<(String, String)>,
}

impl Signer {
    fn headers(&mut self) -> &[(String, String)] {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        if now != self.second || self.headers.is_empty() {
            let mut h = vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("accept".to_string(), "application/json".to_string()),
                ("host".to_string(), self.host.clone()),
            ];
            sigv4::sign_headers(
                &mut h,
                "POST",
                &self.path,
                "",
                &self.payload_hash,
                ACCESS_KEY,
                SECRET_KEY,
                "us-east-1",
                "sagemaker",
            );
            self.headers = h;
            self.second = now;
        }
        &self.headers
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // why: p is a percentage in 0..=100, so the rounded index is
    // non-negative and at most sorted.len() - 1 (the min below clamps anyway).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rest = args
        .url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--url must be http://"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = format!("/{path}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let signer = Rc::new(RefCell::new(Signer {
        host: host.to_string(),
        path: path.clone(),
        payload_hash: sigv4::sha256_hex(args.body.as_bytes()),
        second: 0,
        headers: vec![],
    }));
    let latencies: Rc<RefCell<Vec<u64>>> = Rc::new(RefCell::new(Vec::new()));
    let errors = Rc::new(RefCell::new(0usize));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.seconds);
    local.block_on(&runtime, async {
        let mut tasks = Vec::new();
        for _ in 0..args.concurrency {
            let (host, path, body) = (
                host.to_string(),
                path.clone(),
                Bytes::from(args.body.clone()),
            );
            let (signer, latencies, errors, sign) =
                (signer.clone(), latencies.clone(), errors.clone(), args.sign);
            tasks.push(tokio::task::spawn_local(async move {
                let stream = tokio::net::TcpStream::connect(&host).await?;
                stream.set_nodelay(true)?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::task::spawn_local(conn);
                while Instant::now() < end {
                    let mut req = hyper::Request::post(path.as_str());
                    if sign {
                        for (k, v) in signer.borrow_mut().headers() {
                            req = req.header(k, v);
                        }
                    } else {
                        req = req
                            .header("host", host.as_str())
                            .header("content-type", "application/json")
                            .header("accept", "application/json");
                    }
                    let req = req.body(Full::new(body.clone()))?;
                    let sent = Instant::now();
                    sender.ready().await?;
                    let resp = sender.send_request(req).await?;
                    let ok = resp.status().is_success();
                    resp.into_body().collect().await?;
                    let done = Instant::now();
                    if !ok {
                        *errors.borrow_mut() += 1;
                    } else if sent >= measure_from && done <= end {
                        latencies
                            .borrow_mut()
                            .push(cove_model::convert::micros(done.duration_since(sent)));
                    }
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })?;
    let mut l = latencies.borrow().clone();
    l.sort_unstable();
    let out = serde_json::json!({
        "requests": l.len(),
        "errors": *errors.borrow(),
        "rps": l.len() as f64 / args.seconds,
        "p50_us": percentile(&l, 50.0),
        "p99_us": percentile(&l, 99.0),
    });
    println!("{out}");
    Ok(())
}
