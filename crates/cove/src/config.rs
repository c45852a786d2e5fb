//! `cove serve` settings: command-line flags override environment variables,
//! which override an optional TOML file, which overrides the embedded defaults.

use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The documented local key pair (AWS's own documentation example), accepted
/// by default so `aws --endpoint-url` works with no setup. Replace it for any
/// shared installation.
pub const DEFAULT_ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
pub const DEFAULT_SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
pub const DEFAULT_ACCOUNT_ID: &str = "123456789012";
pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4747";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cove";

/// Creates the data directory, if it does not exist, private to Cove
/// (0700): it holds credentials, session secrets and every object's bytes.
pub fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("creating the data directory {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// What `cove serve` checks before it opens anything: the data directory
/// exists and no other user may enter it.
pub fn check_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    create_private_dir(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "the data directory {dir} is open to other users (mode {mode:o}), and it holds credentials and every object's bytes; make it private with: chmod 700 {dir}",
            dir = dir.display()
        );
    }
    Ok(())
}

/// An exclusive hold on a data directory, released when dropped (or when
/// the process ends, however it ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Takes the data directory for one process: two servers on one directory
/// would both drive its kernel objects and containers, and a teardown under
/// a running server would pull its network away.
pub fn lock_data_dir(dir: &std::path::Path, purpose: &str) -> anyhow::Result<DataDirLock> {
    use std::io::{Read, Seek, Write};
    create_private_dir(dir)?;
    let path = dir.join("cove.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            anyhow::bail!(
                "{} is in use by another Cove process ({}); stop it first",
                dir.display(),
                holder.trim()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("locking {}: {e}", path.display())
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "pid {}, {purpose}", std::process::id())?;
    Ok(DataDirLock { _file: file })
}

/// Makes the SQLite database at `path` (and its journal files) readable by
/// Cove only.
pub fn restrict_database(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Where a data directory keeps the stored world (SQLite).
pub fn store_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("cove.db")
}

/// Where a server whose store is PostgreSQL records its URL in its data
/// directory, so `cove reach` and `cove exec` read the same store.
fn store_url_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("store-url")
}

/// The database of the stored world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `<data-dir>/cove.db`, the embedded default: one server.
    Sqlite(PathBuf),
    /// A PostgreSQL URL: any number of servers share it.
    Postgres(String),
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl StoreLocation {
    fn parse(data_dir: &std::path::Path, given: Option<&str>) -> anyhow::Result<StoreLocation> {
        match given {
            None | Some("sqlite") => Ok(StoreLocation::Sqlite(store_path(data_dir))),
            Some(url) if is_postgres_url(url) => Ok(StoreLocation::Postgres(url.to_string())),
            Some(other) => anyhow::bail!(
                "--store must be sqlite or a postgres:// URL, not {:?}",
                redact(other)
            ),
        }
    }

    /// The PostgreSQL URL, where the services' own tables (Logs, S3 and
    /// registry metadata) live beside the documents; `None` on SQLite,
    /// where each service has a file of its own.
    pub fn shared_url(&self) -> Option<&str> {
        match self {
            StoreLocation::Postgres(url) => Some(url),
            StoreLocation::Sqlite(_) => None,
        }
    }

    /// The store a running (or stopped) server of `data_dir` uses.
    pub fn of_data_dir(data_dir: &std::path::Path) -> StoreLocation {
        match std::fs::read_to_string(store_url_path(data_dir)) {
            Ok(url) => StoreLocation::Postgres(url.trim().to_string()),
            Err(_) => StoreLocation::Sqlite(store_path(data_dir)),
        }
    }

    /// Records the location in `data_dir` for the client commands (or
    /// removes an older record when the store is SQLite again).
    pub fn record(&self, data_dir: &std::path::Path) -> anyhow::Result<()> {
        let path = store_url_path(data_dir);
        match self {
            StoreLocation::Sqlite(_) => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            },
            // The URL may carry a password: readable by Cove's user only.
            StoreLocation::Postgres(url) => write_private_file(&path, url.as_bytes()),
        }
    }

    /// For logs: a PostgreSQL URL without its password.
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Sqlite(path) => path.display().to_string(),
            StoreLocation::Postgres(url) => redact(url),
        }
    }
}

/// Writes `bytes` to `path`, readable and writable by Cove's user only.
pub fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(())
}

/// A URL with the password of its user-info part replaced.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Where a data directory keeps S3's objects and metadata.
pub fn s3_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("s3")
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML settings file.
    #[arg(long, env = "COVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the database lives.
    #[arg(long, env = "COVE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The database of the stored world: `sqlite` (`<data-dir>/cove.db`,
    /// the default) or a `postgres://user:password@host/db` URL, which
    /// several servers may share (docs/scale-out.md).
    #[arg(long, env = "COVE_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// Address and port of the AWS API endpoint.
    #[arg(long, env = "COVE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The region Cove creates at first start (any region is served on demand).
    #[arg(long, env = "COVE_REGION")]
    pub region: Option<String>,
    /// The 12-digit account id resources belong to.
    #[arg(long, env = "COVE_ACCOUNT_ID")]
    pub account_id: Option<String>,
    /// Access key id accepted for SigV4 (with --secret-access-key).
    #[arg(long, env = "COVE_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    #[arg(long, env = "COVE_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub secret_access_key: Option<String>,
    /// The data plane: `on` (needs root, iproute2 and nftables), `off`
    /// (API only; nothing is enforced), or `auto` (on when possible).
    #[arg(long, env = "COVE_DATA_PLANE", default_value = "auto")]
    pub data_plane: String,
    /// Log format: `text` or `json`.
    #[arg(long, env = "COVE_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Deliver flow-log records every this many seconds instead of each
    /// flow log's MaxAggregationInterval (60 or 600), for tests and demos.
    #[arg(long, env = "COVE_FLOW_LOG_WINDOW", value_parser = clap::value_parser!(i64).range(1..=600))]
    pub flow_log_window: Option<i64>,
    /// Seconds between SIGTERM and SIGKILL when a job is stopped or runs
    /// out of time (AWS gives containers 120).
    #[arg(long, env = "COVE_JOB_STOP_GRACE", default_value_t = 120)]
    pub job_stop_grace: u64,
    /// Seconds a job's data transfer waits for S3 to accept a connection
    /// before the job fails with AWS's data download message.
    #[arg(long, env = "COVE_JOB_CONNECT_TIMEOUT", default_value_t = 3)]
    pub job_connect_timeout: u64,
    /// Seconds InvokeEndpoint waits for a model's answer before it returns
    /// AWS's ModelError timeout (AWS: 60).
    #[arg(long, env = "COVE_INVOKE_TIMEOUT", default_value_t = 60)]
    pub invoke_timeout: u64,
    /// The command Studio apps run, split on spaces; `{base_url}`, `{port}`
    /// and `{home}` are filled in. Default: JupyterLab when the host has
    /// `jupyter-lab`, else Cove's built-in app server.
    #[arg(long, env = "COVE_STUDIO_APP_COMMAND")]
    pub studio_app_command: Option<String>,
    /// The wheels and source archives the simulated web's package index
    /// serves (where `pip install` in a job finds packages through a NAT
    /// or internet gateway). Default: `<data-dir>/pypi`.
    #[arg(long, env = "COVE_PACKAGE_INDEX")]
    pub package_index: Option<PathBuf>,
    /// IAM: `local` (every caller may do everything, the default) or
    /// `enforce` (role sessions are held to their role's policies, trust
    /// policies decide AssumeRole and a job's role, iam:PassRole is checked;
    /// docs/iam.md). Also `[iam] mode` in the settings file.
    #[arg(long, env = "COVE_IAM")]
    pub iam: Option<String>,
    /// This host's address on the network that joins Cove's hosts (the
    /// underlay): set it to let `cove agent`s on other machines hold ENIs
    /// of this server's VPCs (needs a PostgreSQL store; docs/scale-out.md).
    /// Also `underlay_address` in the settings file.
    #[arg(long, env = "COVE_UNDERLAY_ADDRESS")]
    pub underlay_address: Option<std::net::Ipv4Addr>,
    /// This host's id among Cove's hosts (default: the machine's hostname).
    #[arg(long, env = "COVE_HOST_ID")]
    pub host_id: Option<String>,
    /// Where an ENI made by CreateNetworkInterface without a `cove:host`
    /// tag goes: `control-plane` (this host, the default) or `spread` (the
    /// available host with the fewest ENIs). Needs --underlay-address.
    #[arg(long, env = "COVE_ENI_PLACEMENT")]
    pub eni_placement: Option<String>,
    /// The TCP port on the underlay address where agents pull the images
    /// of their instances from Cove's registry (HTTPS, the distribution
    /// API only). Needs --underlay-address.
    #[arg(long, env = "COVE_REGISTRY_PORT", default_value_t = DEFAULT_REGISTRY_PORT)]
    pub registry_port: u16,
    /// Serve the AWS APIs only, as one more replica of a control plane on a
    /// PostgreSQL store: no data plane, no workloads, no controller lock
    /// (the `cove serve` that runs them is the controller). Any number of
    /// replicas may run behind a load balancer (docs/scale-out.md).
    #[arg(long, env = "COVE_API_ONLY")]
    pub api_only: bool,
    /// The directory whose files every replica must see: S3 object bodies,
    /// registry blobs and the Studio URL key (a shared filesystem when
    /// replicas run on several machines). Default: the data directory.
    #[arg(long, env = "COVE_SHARED_DIR")]
    pub shared_dir: Option<PathBuf>,
}

/// Where agents pull images from the control plane unless told otherwise.
pub const DEFAULT_REGISTRY_PORT: u16 = 8092;

/// `cove agent`: one more machine for a Cove whose store is on PostgreSQL.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// The store the control plane (`cove serve --store postgres://…`) uses.
    #[arg(long, env = "COVE_STORE", hide_env_values = true)]
    pub store: String,
    /// The agent's own directory (its lock, its record of the store, its
    /// kernel objects' instance tag).
    #[arg(long, env = "COVE_DATA_DIR", default_value = DEFAULT_AGENT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// This host's address on the underlay: the other hosts send its ENIs'
    /// traffic there (VXLAN, UDP 4789).
    #[arg(long, env = "COVE_UNDERLAY_ADDRESS")]
    pub underlay_address: std::net::Ipv4Addr,
    /// This host's id (default: the machine's hostname); ENIs are placed on
    /// it by this id, so it must stay the same across restarts.
    #[arg(long, env = "COVE_HOST_ID")]
    pub host_id: Option<String>,
    /// `text` or `json`.
    #[arg(long, env = "COVE_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Replaces every flow log's aggregation interval (seconds), as
    /// `cove serve --flow-log-window` does.
    #[arg(long, env = "COVE_FLOW_LOG_WINDOW", value_parser = clap::value_parser!(i64).range(1..=600))]
    pub flow_log_window: Option<i64>,
    /// As `cove serve --job-stop-grace`, for the instances on this host.
    #[arg(long, env = "COVE_JOB_STOP_GRACE", default_value_t = 120)]
    pub job_stop_grace: u64,
    /// As `cove serve --job-connect-timeout`, for the instances on this host.
    #[arg(long, env = "COVE_JOB_CONNECT_TIMEOUT", default_value_t = 3)]
    pub job_connect_timeout: u64,
    /// The TCP port on the underlay address where the control plane
    /// reaches the serving containers of the endpoint instances on this
    /// host (through a tunnel opened with a token only the store holds).
    #[arg(long, env = "COVE_SERVING_RELAY_PORT", default_value_t = 8091)]
    pub serving_relay_port: u16,
    /// As `cove serve --studio-app-command`, for the Studio apps on this host.
    #[arg(long, env = "COVE_STUDIO_APP_COMMAND")]
    pub studio_app_command: Option<String>,
}

pub const DEFAULT_AGENT_DATA_DIR: &str = "/var/lib/cove-agent";

/// The host id given, or the machine's hostname; checked the way hosts are
/// named (letters, digits, `.`, `-`, `_`; 1 to 63 characters).
pub fn host_id(given: Option<&str>) -> anyhow::Result<String> {
    let id = match given {
        Some(id) => id.to_string(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .map_err(|e| anyhow::anyhow!("reading the hostname for the host id: {e}"))?,
    };
    let ok = (1..=63).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    anyhow::ensure!(
        ok,
        "host id {id:?}: 1 to 63 letters, digits, '.', '-' or '_' (--host-id)"
    );
    Ok(id)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    store: Option<String>,
    listen: Option<SocketAddr>,
    region: Option<String>,
    account_id: Option<String>,
    #[serde(default)]
    credentials: Vec<CredentialConfig>,
    #[serde(default)]
    iam: IamConfig,
    underlay_address: Option<std::net::Ipv4Addr>,
    host_id: Option<String>,
    eni_placement: Option<String>,
    shared_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IamConfig {
    mode: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The account the key acts in (default: the server's `account_id`).
    /// Each account sees only its own resources.
    pub account_id: Option<String>,
    /// The caller's ARN (default: the account root).
    pub arn: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// Files every API replica sees (`--shared-dir`; the data directory
    /// by default).
    pub shared_dir: PathBuf,
    /// This server is an API replica (`--api-only`).
    pub api_only: bool,
    pub store: StoreLocation,
    pub listen: SocketAddr,
    pub region: String,
    pub account_id: String,
    pub credentials: Vec<CredentialConfig>,
    pub data_plane: DataPlane,
    pub flow_log_window: Option<i64>,
    pub job_stop_grace: std::time::Duration,
    pub job_connect_timeout: std::time::Duration,
    pub invoke_timeout: std::time::Duration,
    pub studio_app_command: Option<Vec<String>>,
    pub package_index: PathBuf,
    /// IAM policies are enforced (`--iam enforce`), not only stored.
    pub iam_enforced: bool,
    /// This host among several (`--underlay-address`); `None`: one host.
    pub host: Option<HostSettings>,
}

/// The control plane's own host, when agents may join it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSettings {
    pub id: String,
    pub underlay: std::net::Ipv4Addr,
    pub eni_placement: cove_model::hosts::EniPlacement,
    /// Where agents pull images (`--registry-port`).
    pub registry_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPlane {
    On,
    Off,
    Auto,
}

impl Settings {
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Settings> {
        let file: FileConfig = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let account_id = args
            .account_id
            .clone()
            .or(file.account_id)
            .unwrap_or_else(|| DEFAULT_ACCOUNT_ID.into());
        anyhow::ensure!(
            is_account_id(&account_id),
            "account id must be 12 digits, got {account_id:?}"
        );
        let mut credentials = file.credentials;
        for c in &credentials {
            if let Some(a) = &c.account_id {
                anyhow::ensure!(
                    is_account_id(a),
                    "credential {}: account id must be 12 digits, got {a:?}",
                    c.access_key_id
                );
            }
        }
        match (&args.access_key_id, &args.secret_access_key) {
            (Some(a), Some(s)) => credentials.insert(
                0,
                CredentialConfig {
                    access_key_id: a.clone(),
                    secret_access_key: s.clone(),
                    account_id: None,
                    arn: None,
                },
            ),
            (None, None) => {}
            _ => anyhow::bail!("--access-key-id and --secret-access-key go together"),
        }
        if credentials.is_empty() {
            // AWS's documentation pair, and the `test`/`test` pair that
            // LocalStack and moto users send: local use works out of the box
            // (signatures are still verified).
            for (key, secret) in [
                (DEFAULT_ACCESS_KEY_ID, DEFAULT_SECRET_ACCESS_KEY),
                ("test", "test"),
            ] {
                credentials.push(CredentialConfig {
                    access_key_id: key.into(),
                    secret_access_key: secret.into(),
                    account_id: None,
                    arn: None,
                });
            }
        }
        let data_plane = match args.data_plane.as_str() {
            "on" => DataPlane::On,
            "off" => DataPlane::Off,
            "auto" => DataPlane::Auto,
            other => anyhow::bail!("--data-plane must be on, off or auto, not {other:?}"),
        };
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        let iam_enforced = match args.iam.as_deref().or(file.iam.mode.as_deref()) {
            None | Some("local") => false,
            Some("enforce") => true,
            Some(other) => anyhow::bail!("--iam must be local or enforce, not {other:?}"),
        };
        let store =
            StoreLocation::parse(&data_dir, args.store.as_deref().or(file.store.as_deref()))?;
        let host = match args.underlay_address.or(file.underlay_address) {
            None => None,
            Some(underlay) => {
                anyhow::ensure!(
                    matches!(store, StoreLocation::Postgres(_)),
                    "--underlay-address joins agents on other hosts, which share the store: it needs --store postgres://…"
                );
                let id = host_id(args.host_id.as_deref().or(file.host_id.as_deref()))?;
                let placement = args
                    .eni_placement
                    .as_deref()
                    .or(file.eni_placement.as_deref())
                    .unwrap_or("control-plane");
                let eni_placement = placement.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "--eni-placement must be control-plane or spread, not {placement:?}"
                    )
                })?;
                Some(HostSettings {
                    id,
                    underlay,
                    eni_placement,
                    registry_port: args.registry_port,
                })
            }
        };
        anyhow::ensure!(
            host.is_some() || (args.eni_placement.is_none() && file.eni_placement.is_none()),
            "--eni-placement places ENIs on hosts: it needs --underlay-address"
        );
        anyhow::ensure!(
            !args.api_only || matches!(store, StoreLocation::Postgres(_)),
            "--api-only serves a control plane's store beside it: it needs --store postgres://…"
        );
        anyhow::ensure!(
            !args.api_only || host.is_none(),
            "--api-only runs no workloads: it takes no --underlay-address"
        );
        Ok(Settings {
            shared_dir: args
                .shared_dir
                .clone()
                .or(file.shared_dir)
                .unwrap_or_else(|| data_dir.clone()),
            api_only: args.api_only,
            host,
            store,
            iam_enforced,
            package_index: args
                .package_index
                .clone()
                .unwrap_or_else(|| data_dir.join("pypi")),
            data_plane,
            flow_log_window: args.flow_log_window,
            job_stop_grace: std::time::Duration::from_secs(args.job_stop_grace),
            job_connect_timeout: std::time::Duration::from_secs(args.job_connect_timeout.max(1)),
            invoke_timeout: std::time::Duration::from_secs(args.invoke_timeout.max(1)),
            studio_app_command: args
                .studio_app_command
                .as_deref()
                .map(|c| c.split_whitespace().map(str::to_string).collect()),
            data_dir,
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("constant")),
            region: args
                .region
                .clone()
                .or(file.region)
                .unwrap_or_else(|| DEFAULT_REGION.into()),
            account_id,
            credentials,
        })
    }
}

fn is_account_id(a: &str) -> bool {
    a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn resolve(args: &[&str]) -> anyhow::Result<Settings> {
        let cli = Cli::try_parse_from(std::iter::once("cove").chain(args.iter().copied()))?;
        Settings::resolve(&cli.serve)
    }

    #[test]
    fn iam_is_local_unless_enforced_by_flag_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cove.toml");
        std::fs::write(&file, "[iam]\nmode = \"enforce\"\n").unwrap();
        let config = file.to_str().unwrap();
        assert!(!resolve(&[]).unwrap().iam_enforced);
        assert!(resolve(&["--config", config]).unwrap().iam_enforced);
        assert!(
            !resolve(&["--config", config, "--iam", "local"])
                .unwrap()
                .iam_enforced
        );
        assert!(resolve(&["--iam", "enforce"]).unwrap().iam_enforced);
        let err = resolve(&["--iam", "strict"]).unwrap_err().to_string();
        assert!(err.contains("--iam must be local or enforce"), "{err}");
        std::fs::write(&file, "[iam]\nmodes = \"enforce\"\n").unwrap();
        assert!(resolve(&["--config", config]).is_err());
    }
}
