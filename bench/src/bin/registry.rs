//! `cove-registry-bench`: image push and pull throughput through Cove's
//! registry (`cove-ecr`'s OCI distribution API) against copying the same
//! layers on disk, measured side by side in one run.
//!
//! The registry runs in this process, in a temporary directory, behind a real
//! HTTP/1.1 listener on 127.0.0.1; the client is hyper over one keep-alive
//! TCP connection, with `AWS:<password>` basic authentication as `docker
//! login` sends it. The layers are incompressible random bytes written to
//! temporary files first. Each run measures, in order:
//!
//! - disk copy: `std::fs::copy` of every layer file to a new file;
//! - sha256 of the layer files as the registry hashes an upload
//!   (`cove_ecr::registry::hash_file`), and of the same bytes in memory;
//! - push, monolithic: one `POST /v2/<repo>/blobs/uploads/?digest=…` per
//!   layer streaming the file, then the config blob and `PUT` of the
//!   manifest, into a new repository;
//! - pull: `GET /v2/<repo>/blobs/<digest>` of every layer, writing the body
//!   to a file;
//! - push, chunked: `POST` to open an upload, `PATCH` chunks of the file,
//!   `PUT ?digest=` to complete it (as `docker push` does), then the config
//!   and manifest, into another new repository.
//!
//! Repositories are deleted (with their blob files) after use, so every push
//! really writes and stores the bytes. MB/s is layer bytes (10^6 bytes per
//! MB) over wall time; the table gives the median of the runs.

#[path = "../proc_stat.rs"]
mod proc_stat;

use anyhow::{bail, ensure, Context};
use axum::body::Body;
use axum::http::{header, Method, Request, Response, StatusCode};
use bytes::Bytes;
use clap::Parser;
use cove_ecr::registry::hash_file;
use cove_ecr::Ecr;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rand::{RngCore, SeedableRng};
use sha2::Digest as _;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
/// The registry's host name, as `docker` sends it.
const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
/// How much of a layer file the client reads and sends at a time.
const SEND_PIECE: usize = 1 << 20;

#[derive(Parser)]
struct Args {
    /// Layers in the image.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Size of each layer, MiB.
    #[arg(long, default_value_t = 64)]
    layer_mib: usize,
    /// Size of each PATCH of a chunked upload, MiB.
    #[arg(long, default_value_t = 16)]
    chunk_mib: usize,
    /// Runs; the table gives the median of each figure.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Where to make the temporary directory (layers, copies, the
    /// registry); default: the system's temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
}

struct Layer {
    path: PathBuf,
    size: u64,
    digest: String,
}

type ReqBody = UnsyncBoxBody<Bytes, std::io::Error>;

fn empty() -> ReqBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn full(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// `len` bytes of the file at `path` from `offset`, read on a blocking
/// thread in 1 MiB pieces and streamed as the request body.
fn file_body(path: PathBuf, offset: u64, len: u64) -> ReqBody {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let read = || -> std::io::Result<()> {
            let mut f = std::fs::File::open(&path)?;
            f.seek(SeekFrom::Start(offset))?;
            let mut left = len;
            while left > 0 {
                let n = usize::try_from(left).map_or(SEND_PIECE, |l| l.min(SEND_PIECE));
                let mut buf = vec![0u8; n];
                f.read_exact(&mut buf)?;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return Ok(());
                }
                left -= n as u64;
            }
            Ok(())
        };
        if let Err(e) = read() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece.map(Frame::data), rx))
    });
    StreamBody::new(stream).boxed_unsync()
}

/// One keep-alive HTTP/1.1 connection to the registry.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<ReqBody>,
    auth: String,
}

impl Client {
    async fn open(addr: SocketAddr, password: &str) -> anyhow::Result<Client> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Client {
            sender,
            auth: format!("Basic {}", cove_ecr::token::authorization_token(password)),
        })
    }

    async fn send(
        &mut self,
        method: Method,
        uri: &str,
        body: ReqBody,
        extra: &[(header::HeaderName, String)],
    ) -> anyhow::Result<Response<Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, HOST)
            .header(header::AUTHORIZATION, &self.auth);
        for (k, v) in extra {
            req = req.header(k, v);
        }
        self.sender.ready().await?;
        Ok(self.sender.send_request(req.body(body)?).await?)
    }

    /// Sends a request and reads its (small) answer; fails on another status.
    async fn expect(
        &mut self,
        method: Method,
        uri: &str,
        body: ReqBody,
        extra: &[(header::HeaderName, String)],
        want: StatusCode,
    ) -> anyhow::Result<axum::http::HeaderMap> {
        let resp = self.send(method.clone(), uri, body, extra).await?;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await?.to_bytes();
        if parts.status != want {
            bail!(
                "{method} {uri}: {} (wanted {want}): {}",
                parts.status,
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(parts.headers)
    }
}

fn octets(len: u64) -> Vec<(header::HeaderName, String)> {
    vec![
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (header::CONTENT_LENGTH, len.to_string()),
    ]
}

fn location(headers: &axum::http::HeaderMap) -> anyhow::Result<String> {
    Ok(headers
        .get(header::LOCATION)
        .context("no Location")?
        .to_str()?
        .to_string())
}

/// A layer in one `POST …/blobs/uploads/?digest=`.
async fn push_monolithic(c: &mut Client, repo: &str, layer: &Layer) -> anyhow::Result<()> {
    c.expect(
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/?digest={}", layer.digest),
        file_body(layer.path.clone(), 0, layer.size),
        &octets(layer.size),
        StatusCode::CREATED,
    )
    .await?;
    Ok(())
}

/// A layer in `POST`, `PATCH` per chunk, `PUT ?digest=`; returns the
/// seconds the `PATCH`es took and the seconds the completing `PUT` (which
/// carries no bytes) took.
async fn push_chunked(
    c: &mut Client,
    repo: &str,
    layer: &Layer,
    chunk: u64,
) -> anyhow::Result<(f64, f64)> {
    let headers = c
        .expect(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            empty(),
            &[(header::CONTENT_LENGTH, "0".into())],
            StatusCode::ACCEPTED,
        )
        .await?;
    let mut at = location(&headers)?;
    let mut offset = 0;
    let t = Instant::now();
    while offset < layer.size {
        let len = chunk.min(layer.size - offset);
        let mut extra = octets(len);
        extra.push((
            header::CONTENT_RANGE,
            format!("{offset}-{}", offset + len - 1),
        ));
        let headers = c
            .expect(
                Method::PATCH,
                &at,
                file_body(layer.path.clone(), offset, len),
                &extra,
                StatusCode::ACCEPTED,
            )
            .await?;
        at = location(&headers)?;
        offset += len;
    }
    let patches = t.elapsed().as_secs_f64();
    let sep = if at.contains('?') { '&' } else { '?' };
    let t = Instant::now();
    c.expect(
        Method::PUT,
        &format!("{at}{sep}digest={}", layer.digest),
        empty(),
        &[(header::CONTENT_LENGTH, "0".into())],
        StatusCode::CREATED,
    )
    .await?;
    Ok((patches, t.elapsed().as_secs_f64()))
}

/// The config blob and the manifest naming it and `layers`, tagged `latest`.
async fn push_manifest(c: &mut Client, repo: &str, layers: &[Layer]) -> anyhow::Result<()> {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = format!("sha256:{}", hex(&sha2::Sha256::digest(config)));
    c.expect(
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/?digest={config_digest}"),
        full(&config[..]),
        &octets(config.len() as u64),
        StatusCode::CREATED,
    )
    .await?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
    })
    .to_string();
    c.expect(
        Method::PUT,
        &format!("/v2/{repo}/manifests/latest"),
        full(manifest),
        &[(
            header::CONTENT_TYPE,
            "application/vnd.oci.image.manifest.v1+json".into(),
        )],
        StatusCode::CREATED,
    )
    .await?;
    Ok(())
}

/// Pulls every layer of `repo` into `out`, writing each body to a file as
/// it arrives.
async fn pull(c: &mut Client, repo: &str, layers: &[Layer], out: &Path) -> anyhow::Result<()> {
    for (i, l) in layers.iter().enumerate() {
        let resp = c
            .send(
                Method::GET,
                &format!("/v2/{repo}/blobs/{}", l.digest),
                empty(),
                &[],
            )
            .await?;
        ensure!(
            resp.status() == StatusCode::OK,
            "GET blob: {}",
            resp.status()
        );
        let mut file = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(out.join(format!("layer-{i}")))?,
        );
        let mut body = resp.into_body();
        let mut got = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                file.write_all(data)?;
                got += data.len() as u64;
            }
        }
        file.flush()?;
        ensure!(got == l.size, "pulled {got} bytes of {}", l.size);
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds / 1e6
}

/// Wall and CPU time from a start.
struct Clock(Instant, f64);

impl Clock {
    fn start() -> Clock {
        Clock(Instant::now(), proc_stat::cpu_seconds(None))
    }

    /// MB/s for `bytes` and the cores the process kept busy on average.
    fn stop(&self, bytes: u64) -> (f64, f64) {
        let wall = self.0.elapsed().as_secs_f64();
        (
            mb_per_s(bytes, wall),
            (proc_stat::cpu_seconds(None) - self.1) / wall,
        )
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn clear(dir: &Path) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir)? {
        std::fs::remove_file(e?.path())?;
    }
    Ok(())
}

/// Serves the distribution API of `ecr` on 127.0.0.1; returns its address.
async fn serve(ecr: Arc<Ecr>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(move |req: Request<Body>| {
        let ecr = ecr.clone();
        async move { cove_ecr::distribution::serve(ecr, req).await }
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("registry listener: {e}");
        }
    });
    Ok(addr)
}

/// The figures of one run in table order: MB/s, and the cores busy.
const ROWS: [&str; 6] = [
    "disk copy (`std::fs::copy`)",
    "sha256 of the files (`hash_file`, as the registry)",
    "sha256 in memory",
    "push, monolithic `POST ?digest=`",
    "push, chunked `PATCH` + `PUT ?digest=`",
    "pull, `GET` blob to a file",
];

async fn run(
    args: &Args,
    ecr: &Arc<Ecr>,
    addr: SocketAddr,
    layers: &[Layer],
    scratch: &Path,
    n: usize,
) -> anyhow::Result<([(f64, f64); 6], Split)> {
    let total: u64 = layers.iter().map(|l| l.size).sum();
    let mut out = [(0.0, 0.0); 6];

    let t = Clock::start();
    for (i, l) in layers.iter().enumerate() {
        std::fs::copy(&l.path, scratch.join(format!("copy-{i}")))?;
    }
    out[0] = t.stop(total);
    clear(scratch)?;

    let t = Clock::start();
    for l in layers {
        let (digest, _) = hash_file(&l.path)?;
        ensure!(digest.as_str() == l.digest, "hash_file disagrees");
    }
    out[1] = t.stop(total);

    let mut seconds = 0.0;
    for l in layers {
        let bytes = std::fs::read(&l.path)?;
        let t = Instant::now();
        let digest = sha2::Sha256::digest(&bytes);
        seconds += t.elapsed().as_secs_f64();
        ensure!(format!("sha256:{}", hex(&digest)) == l.digest);
    }
    // One thread by construction; too short for the 100 Hz CPU clock.
    out[2] = (mb_per_s(total, seconds), f64::NAN);

    let (password, _) = ecr.tokens.issue(
        ACCOUNT,
        "AKIAIOSFODNN7EXAMPLE",
        cove_ecr::registry::now_secs(),
    );

    // Monolithic push, then pull from the same repository.
    let repo = format!("bench/run{n}-monolithic");
    ecr.ensure_repository(&repo)?;
    let mut c = Client::open(addr, &password).await?;
    let t = Clock::start();
    for l in layers {
        push_monolithic(&mut c, &repo, l).await?;
    }
    push_manifest(&mut c, &repo, layers).await?;
    out[3] = t.stop(total);

    let t = Clock::start();
    pull(&mut c, &repo, layers, scratch).await?;
    out[5] = t.stop(total);
    if n == 1 {
        for (i, l) in layers.iter().enumerate() {
            let (digest, _) = hash_file(&scratch.join(format!("layer-{i}")))?;
            ensure!(digest.as_str() == l.digest, "pulled layer {i} differs");
        }
    }
    clear(scratch)?;
    ecr.registry
        .delete_repository(ACCOUNT, REGION, &repo, true)?;

    // Chunked push into a fresh repository (the blob files are gone).
    let repo = format!("bench/run{n}-chunked");
    ecr.ensure_repository(&repo)?;
    let chunk = (args.chunk_mib as u64) << 20;
    let (mut patches, mut completing) = (0.0, 0.0);
    let t = Clock::start();
    for l in layers {
        let (p, c) = push_chunked(&mut c, &repo, l, chunk).await?;
        patches += p;
        completing += c;
    }
    push_manifest(&mut c, &repo, layers).await?;
    let wall = t.0.elapsed().as_secs_f64();
    out[4] = t.stop(total);
    ecr.registry
        .delete_repository(ACCOUNT, REGION, &repo, true)?;
    Ok((
        out,
        Split {
            patch_mb_s: mb_per_s(total, patches),
            put_mb_s: mb_per_s(total, completing),
            put_share: completing / wall,
        },
    ))
}

/// Where a chunked push's time went.
struct Split {
    /// Layer bytes over the `PATCH` requests' time: HTTP into the upload file.
    patch_mb_s: f64,
    /// Layer bytes over the completing `PUT`s' time: the registry's re-read
    /// and hash.
    put_mb_s: f64,
    /// The completing `PUT`s' share of the push's wall time.
    put_share: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.layers > 0 && args.layer_mib > 0 && args.chunk_mib > 0);
    let tmp = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let (layer_dir, scratch) = (tmp.path().join("layers"), tmp.path().join("scratch"));
    std::fs::create_dir_all(&layer_dir)?;
    std::fs::create_dir_all(&scratch)?;

    eprintln!(
        "writing {} layers of {} MiB of random bytes...",
        args.layers, args.layer_mib
    );
    let mut layers = Vec::new();
    for i in 0..args.layers {
        let mut bytes = vec![0u8; args.layer_mib << 20];
        rand::rngs::SmallRng::seed_from_u64(i as u64 + 1).fill_bytes(&mut bytes);
        let path = layer_dir.join(format!("layer-{i}"));
        std::fs::write(&path, &bytes)?;
        layers.push(Layer {
            path,
            size: bytes.len() as u64,
            digest: format!("sha256:{}", hex(&sha2::Sha256::digest(&bytes))),
        });
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let ecr = Arc::new(Ecr::open(&tmp.path().join("ecr"), None, ACCOUNT, REGION)?);
    let addr = runtime.block_on(serve(ecr.clone()))?;

    let mut runs: Vec<[(f64, f64); 6]> = Vec::new();
    let mut splits = Vec::new();
    for n in 1..=args.runs.max(1) {
        let (figures, split) = runtime.block_on(run(&args, &ecr, addr, &layers, &scratch, n))?;
        eprintln!(
            "run {n}: {}",
            figures
                .iter()
                .map(|f| format!("{:.0}", f.0))
                .collect::<Vec<_>>()
                .join(" / ")
        );
        runs.push(figures);
        splits.push(split);
    }

    let medians: Vec<(f64, f64)> = (0..ROWS.len())
        .map(|i| {
            (
                median(runs.iter().map(|r| r[i].0).collect()),
                median(runs.iter().map(|r| r[i].1).collect()),
            )
        })
        .collect();
    let total_mb = (args.layers * args.layer_mib) as f64 * 1.048_576;
    println!();
    println!(
        "Image of {} layers x {} MiB of random bytes ({total_mb:.0} MB), registry in-process behind \
         127.0.0.1 (axum + hyper, one keep-alive connection), chunked uploads in {} MiB PATCHes. \
         MB/s = layer bytes / wall time, median of {} runs:",
        args.layers,
        args.layer_mib,
        args.chunk_mib,
        runs.len()
    );
    println!();
    println!("| operation | MB/s (median) | vs disk copy | cores busy (median) | runs, MB/s |");
    println!("| --- | ---: | ---: | ---: | --- |");
    for (i, name) in ROWS.iter().enumerate() {
        let each: Vec<String> = runs.iter().map(|r| format!("{:.0}", r[i].0)).collect();
        let cores = medians[i].1;
        println!(
            "| {name} | {:.0} | {:.2}x | {} | {} |",
            medians[i].0,
            medians[i].0 / medians[0].0,
            if cores.is_nan() {
                "—".to_string()
            } else {
                format!("{cores:.2}")
            },
            each.join(", ")
        );
    }
    println!();
    println!(
        "Chunked push, medians: the `PATCH`es (bytes over HTTP into the upload file) ran at {:.0} MB/s; \
         the completing `PUT ?digest=`s (no bytes: the registry checks the digest it computed while the bytes arrived) \
         at {:.0} MB/s, {:.0}% of the push's wall time.",
        median(splits.iter().map(|s| s.patch_mb_s).collect()),
        median(splits.iter().map(|s| s.put_mb_s).collect()),
        median(splits.iter().map(|s| s.put_share).collect()) * 100.0
    );
    Ok(())
}
