//! Harness for Cove's aws-sdk-rust integration tests: starts the real `cove`
//! binary on a free loopback port with a fresh data directory, waits for
//! `/_cove/health`, builds official SDK clients (aws-sdk-ec2, aws-sdk-sts)
//! for it, and kills the server when the handle is dropped (also when a test
//! panics).
//!
//! The binary is `<workspace>/target/debug/cove` unless `COVE_BIN` names
//! another one; build it first with `cargo build -p cove`.

use std::fmt::Debug;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::result::CreateUnhandledError;
use tempfile::TempDir;

/// The documented example key pair Cove accepts out of the box.
pub const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
/// The secret of [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// The account Cove serves by default.
pub const ACCOUNT_ID: &str = "123456789012";
/// The region Cove bootstraps at start.
pub const REGION: &str = "us-east-1";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The `cove` binary the tests run: `COVE_BIN`, else the workspace's debug build.
pub fn cove_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("COVE_BIN") {
        return PathBuf::from(path);
    }
    // CARGO_MANIFEST_DIR is <workspace>/tests/sdk-rust.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .join("target")
        .join("debug")
        .join("cove")
}

pub mod hosts;
pub mod reach_diff;

/// One running `cove serve`, killed when dropped.
pub struct Cove {
    child: Child,
    endpoint: String,
    log_path: PathBuf,
    addr: SocketAddr,
    data_plane: bool,
    // Dropped after `child` is killed (fields drop after `Drop::drop`).
    _data_dir: TempDir,
}

impl Cove {
    /// Starts a server on a free loopback port with an empty data directory
    /// and waits until `/_cove/health` answers 200.
    #[track_caller]
    pub fn start() -> Cove {
        Cove::start_with(false, &[])
    }

    /// A server with its data plane on (needs root): every VPC resource
    /// becomes kernel networking, removed again (`cove teardown`) on drop.
    #[track_caller]
    pub fn start_with_data_plane() -> Cove {
        Cove::start_with(true, &[])
    }

    /// A server with its data plane on and `env` in its environment (the
    /// control plane of [`hosts::Hosts`]).
    #[track_caller]
    pub fn start_on(env: &[(String, String)]) -> Cove {
        Cove::start_with(true, env)
    }

    #[track_caller]
    fn start_with(data_plane: bool, env: &[(String, String)]) -> Cove {
        let binary = cove_binary();
        assert!(
            binary.is_file(),
            "{} does not exist: build it first with `cargo build -p cove` (or set COVE_BIN)",
            binary.display()
        );
        let data_dir = tempfile::Builder::new()
            .prefix("cove-sdk-rust-")
            .tempdir()
            .expect("create a temporary data directory");
        // Cove refuses a data directory other users may enter.
        std::fs::set_permissions(
            data_dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("make the data directory private");
        let port = free_port();
        let log_path = data_dir.path().join("cove.log");
        let log = File::create(&log_path).expect("create the server log");
        let child = Command::new(&binary)
            .arg("serve")
            // These tests exercise the API; the data plane has its own tests
            // (and would leave namespaces behind when the server is killed).
            .args(["--data-plane", if data_plane { "on" } else { "off" }])
            .arg("--data-dir")
            .arg(data_dir.path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut cove = Cove {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log_path,
            addr,
            data_plane,
            _data_dir: data_dir,
        };
        cove.wait_healthy(addr);
        cove
    }

    /// The server's data directory (its store is `cove.db` there).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data_dir.path()
    }

    /// Waits until the data plane has made real every change written so far.
    pub fn wait_applied(&self, timeout: Duration) -> bool {
        let field = |body: &str, name: &str| -> Option<u64> {
            let at = body.find(&format!("\"{name}\":"))? + name.len() + 3;
            body[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        let Some(target) = health_body(self.addr).and_then(|b| field(&b, "generation")) else {
            return false;
        };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if health_body(self.addr)
                .and_then(|b| field(&b, "applied_generation"))
                .is_some_and(|a| a >= target)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits until every registered host's data plane has reported (at its
    /// heartbeat) a store position at least the server's now.
    pub fn wait_hosts_applied(&self, timeout: Duration) -> bool {
        let health =
            || -> Option<serde_json::Value> { serde_json::from_str(&health_body(self.addr)?).ok() };
        let Some(target) = health().and_then(|h| h["components"]["store"]["position"].as_u64())
        else {
            return false;
        };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let caught_up = health().is_some_and(|h| {
                h["components"]["hosts"].as_object().is_some_and(|hosts| {
                    hosts
                        .values()
                        .all(|v| v["applied_position"].as_u64().is_some_and(|a| a >= target))
                })
            });
            if caught_up {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn wait_healthy(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cove exited early ({status}):\n{}", self.log());
            }
            if health_ok(addr) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "cove did not become healthy within {STARTUP_TIMEOUT:?}:\n{}",
            self.log()
        );
    }

    /// What the server has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The server's `http://127.0.0.1:PORT` endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// An EC2 client with the default credentials in us-east-1.
    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        self.ec2_with(ACCESS_KEY, SECRET_KEY)
    }

    /// An EC2 client that signs with the given key pair.
    pub fn ec2_with(&self, access_key: &str, secret_key: &str) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new(REGION))
            .credentials_provider(credentials(access_key, secret_key))
            .http_client(http_client())
            .retry_config(RetryConfig::disabled())
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }

    /// An STS client with the default credentials in us-east-1.
    pub fn sts(&self) -> aws_sdk_sts::Client {
        let config = aws_sdk_sts::Config::builder()
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_sdk_sts::config::Region::new(REGION))
            .credentials_provider(credentials(ACCESS_KEY, SECRET_KEY))
            .http_client(http_client())
            .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_sts::Client::from_conf(config)
    }
}

impl Drop for Cove {
    fn drop(&mut self) {
        // Ignore errors: the process may already have exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.data_plane {
            let _ = Command::new(cove_binary())
                .arg("teardown")
                .arg("--data-dir")
                .arg(self._data_dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status();
        }
    }
}

fn credentials(access_key: &str, secret_key: &str) -> Credentials {
    Credentials::new(access_key, secret_key, None, None, "cove-sdk-tests")
}

/// A plain-HTTP (no TLS) hyper client: Cove listens on http:// loopback, and
/// leaving TLS out spares compiling rustls and its crypto backend.
fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_http()
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free loopback port")
}

/// One `GET /_cove/health`; true on a 200 answer.
fn health_ok(addr: SocketAddr) -> bool {
    health_body(addr).is_some()
}

/// The body of a 200 answer to `GET /_cove/health`.
fn health_body(addr: SocketAddr) -> Option<String> {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return None;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /_cove/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return None;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).to_string();
    let ok = response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200");
    ok.then(|| {
        response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    })
}

/// Polls a NAT gateway until it is `available`. A state other than
/// `pending` on the way, or no `available` within `timeout`, is an error that
/// says what was seen.
pub async fn wait_nat_available(
    ec2: &aws_sdk_ec2::Client,
    nat_id: &str,
    timeout: Duration,
) -> Result<aws_sdk_ec2::types::NatGateway, String> {
    use aws_sdk_ec2::types::NatGatewayState;
    let deadline = Instant::now() + timeout;
    loop {
        let out = ec2
            .describe_nat_gateways()
            .nat_gateway_ids(nat_id)
            .send()
            .await
            .map_err(|e| format!("DescribeNatGateways: {}", DisplayErrorContext(&e)))?;
        let gateway = out
            .nat_gateways()
            .first()
            .cloned()
            .ok_or_else(|| format!("{nat_id} is not described"))?;
        match gateway.state() {
            Some(NatGatewayState::Available) => return Ok(gateway),
            Some(NatGatewayState::Pending) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => {
                return Err(format!(
                    "{nat_id} did not become available in {timeout:?}: {other:?} {gateway:?}"
                ))
            }
        }
    }
}

/// Asserts that an SDK call failed with the AWS error `code` (read from the
/// service error through `into_service_error()` and
/// [`ProvideErrorMetadata::code`]) and returns the error's message.
#[track_caller]
pub fn assert_error_code<T, E, R>(result: Result<T, SdkError<E, R>>, code: &str) -> String
where
    T: Debug,
    E: ProvideErrorMetadata + CreateUnhandledError + std::error::Error + Send + Sync + 'static,
    R: Debug + Send + Sync + 'static,
{
    let err = match result {
        Ok(output) => panic!("expected error {code}, the call succeeded: {output:?}"),
        Err(err) => err,
    };
    let context = DisplayErrorContext(&err).to_string();
    let service_error = err.into_service_error();
    assert_eq!(
        service_error.code(),
        Some(code),
        "expected error code {code}, got: {context}"
    );
    service_error.message().unwrap_or_default().to_string()
}
