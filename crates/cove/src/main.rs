//! `cove`: the Cove binary. `cove serve` runs the AWS-compatible endpoint
//! (EC2 VPC API, STS; more services plug into the same dispatcher).

mod agent;
mod config;
mod efs_mount;
mod flow_logs;
mod hosts;
mod https;
mod listeners;
mod managed_networks;
mod metrics;
mod reach;
mod server;
mod studio_proxy;
mod watch;
mod web;

use clap::{Parser, Subcommand};

// The control plane allocates many small, short-lived values per request
// (decoded inputs, rendered documents); glibc's allocator spent ~40% of CPU on
// them under 64 concurrent connections, mimalloc a fraction of that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "cove",
    version,
    about = "A self-hosted, AWS-compatible cloud for ML jobs in enforced private networks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the AWS-compatible API server.
    Serve(Box<config::ServeArgs>),
    /// Run one more host for a Cove whose store is on PostgreSQL: the data
    /// plane of the ENIs placed on this machine (docs/scale-out.md).
    Agent(config::AgentArgs),
    /// List the hosts of a Cove with their state and the ENIs on each.
    Hosts {
        /// The data directory of the `cove serve` (or `cove agent`).
        #[arg(long, env = "COVE_DATA_DIR", default_value = config::DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
    },
    /// Run a command attached to an ENI: inside its network namespace, so the
    /// VPC's routes, network ACLs and security groups decide what it reaches.
    Exec {
        /// The data directory of the `cove serve` that owns the ENI.
        #[arg(long, env = "COVE_DATA_DIR", default_value = config::DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
        /// The network interface id (`eni-...`).
        #[arg(
            long,
            required_unless_present = "internet",
            conflicts_with = "internet"
        )]
        eni: Option<String>,
        /// Run on the simulated internet host (203.0.113.10) in the region network instead.
        #[arg(long)]
        internet: bool,
        /// The user the command runs as: a name from /etc/passwd or
        /// `UID[:GID]`. It runs with no capabilities and cannot gain any.
        #[arg(long, default_value = "nobody", conflicts_with = "privileged")]
        user: String,
        /// Run the command as root with every capability, as Cove itself
        /// runs (for a server on a port below 1024, say). It can then do
        /// anything on the host.
        #[arg(long)]
        privileged: bool,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Print Cove's CA certificate (PEM), which a host client trusts to
    /// reach Cove's HTTPS listeners (`AWS_CA_BUNDLE`, `--ca-bundle`).
    Ca {
        #[arg(long, env = "COVE_DATA_DIR", default_value = config::DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
    },
    /// Remove every kernel object (namespaces, veths, rules) a Cove
    /// installation made, and stop its containers. Its stored state is kept;
    /// `cove serve` rebuilds the network (a running job or endpoint whose
    /// container was stopped then fails or is replaced).
    Teardown {
        #[arg(long, env = "COVE_DATA_DIR", default_value = config::DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
    },
    /// Run one job container (started by Cove's job supervisor, which
    /// prepares the spec; not for direct use).
    #[command(hide = true)]
    RunContainer {
        /// The container's `<state_dir>/spec.json`.
        spec: std::path::PathBuf,
    },
    /// Mount an EFS file system for a workload through its ENI and serve
    /// the mount until it is taken away (started by Cove's job supervisor;
    /// not for direct use).
    #[command(hide = true)]
    EfsMount {
        /// The network namespace to connect from (`/run/netns/<name>`).
        #[arg(long)]
        netns: std::path::PathBuf,
        /// The mount target's address and port.
        #[arg(long)]
        server: std::net::SocketAddr,
        /// The directory of the file system to mount.
        #[arg(long)]
        path: String,
        #[arg(long)]
        mountpoint: std::path::PathBuf,
        #[arg(long)]
        read_only: bool,
        /// How long connecting to the mount target may take.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// Compile a model for a compilation job (started by Cove's job
    /// supervisor in the job's directory; not for direct use).
    #[command(hide = true)]
    CompileModel {
        /// The job's directory: `request.json` and `model.tar.gz`.
        dir: std::path::PathBuf,
    },
    /// Push an image on disk into Cove's registry under an image URI (the
    /// repository is made if needed): an OCI image layout directory
    /// (`skopeo copy … oci:DIR`), a root filesystem tarball (`docker
    /// export`, gzipped or not) or a root filesystem directory. Registry
    /// clients push with `docker push`/`skopeo copy` instead.
    ImageImport {
        #[arg(long, env = "COVE_DATA_DIR", default_value = config::DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
        /// The image URI jobs will name (`<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>`).
        image_uri: String,
        /// An OCI layout directory (`index.json`, `blobs/`), a tarball (`.tar`, `.tar.gz`) or a directory.
        source: std::path::PathBuf,
        /// More image URIs to tag the same image under (its layers are stored once).
        #[arg(long = "also", value_name = "IMAGE_URI")]
        also: Vec<String>,
        /// The server's `--shared-dir`, where the registry's blobs live
        /// (default: the data directory).
        #[arg(long, env = "COVE_SHARED_DIR")]
        shared_dir: Option<std::path::PathBuf>,
    },
    /// Can a source reach a destination, by which path, and if not, what
    /// blocks it: answered from the stored VPC model (read-only, beside the
    /// server) the way Reachability Analyzer does. Exits 0 when reachable,
    /// 1 when not.
    Reach {
        #[arg(long, env = "COVE_DATA_DIR", default_value = config::DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
        /// An ENI id, a subnet id (a new ENI there, with --security-groups
        /// or the VPC's default group), an internet gateway id, or `internet`.
        from: String,
        /// An ENI id, a VPC endpoint id, an internet gateway id, an IPv4
        /// address, `internet`, a service (s3, sts, logs, ec2,
        /// api.sagemaker, runtime.sagemaker), or an S3 object
        /// (`s3://bucket/key`: the endpoint and bucket policies are checked too).
        to: String,
        /// Destination port (any port when omitted).
        #[arg(long)]
        port: Option<u16>,
        #[arg(long, default_value = "tcp")]
        protocol: String,
        /// Source port (any ephemeral port when omitted).
        #[arg(long)]
        source_port: Option<u16>,
        /// Print the analysis as JSON.
        #[arg(long)]
        json: bool,
        /// For a subnet source: the new ENI's security groups (comma-separated).
        #[arg(long, value_delimiter = ',')]
        security_groups: Vec<String>,
        /// For an s3:// destination: the principal the policies are asked about.
        #[arg(long, default_value = "arn:aws:iam::123456789012:root")]
        principal: String,
        #[arg(long, default_value = config::DEFAULT_ACCOUNT_ID)]
        account: String,
        /// For an s3:// destination: the S3 action.
        #[arg(long, default_value = "s3:GetObject")]
        action: String,
    },
    /// Before a SageMaker job runs (or for an existing one, or a model's
    /// endpoint instances): can its hosts, in its subnets with its security
    /// groups, download from S3, upload their artifacts, reach each other
    /// and reach the internet, and why not. Exits 1 when a check the job
    /// needs fails.
    ReachJob {
        #[arg(long, env = "COVE_DATA_DIR", default_value = config::DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
        /// A CreateTrainingJob (or, with --processing, CreateProcessingJob) request as JSON.
        #[arg(long, conflicts_with_all = ["job", "model"], required_unless_present_any = ["job", "model"])]
        request: Option<std::path::PathBuf>,
        /// An existing job's name.
        #[arg(long, conflicts_with = "model")]
        job: Option<String>,
        /// A model's name: can its endpoint and transform instances fetch its model data?
        #[arg(long)]
        model: Option<String>,
        /// The request or job is a processing job.
        #[arg(long)]
        processing: bool,
        #[arg(long, env = "AWS_DEFAULT_REGION", default_value = config::DEFAULT_REGION)]
        region: String,
        #[arg(long, default_value = config::DEFAULT_ACCOUNT_ID)]
        account: String,
        #[arg(long)]
        json: bool,
    },
    /// Follow a training (or processing) job until it ends: its status
    /// transitions and its log lines as they happen. Exits non-zero unless
    /// the job completed. Credentials come from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY (default: Cove's built-in key pair).
    WatchJob {
        /// The job's name.
        name: String,
        /// Cove's endpoint.
        #[arg(long, env = "COVE_ENDPOINT", default_value = "http://127.0.0.1:4747")]
        endpoint: String,
        #[arg(long, env = "AWS_DEFAULT_REGION", default_value = config::DEFAULT_REGION)]
        region: String,
        /// Follow a processing job instead of a training job.
        #[arg(long)]
        processing: bool,
    },
}

fn init_logging(format: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colours only for a person at a terminal: a log file or a journal
    // would get their escape codes as text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Kills every container (job hosts, endpoint and transform instances) whose
/// state lives under `jobs_dir`, so `cove teardown` leaves no process and no
/// cgroup behind; returns how many were running.
fn stop_containers(jobs_dir: &std::path::Path) -> usize {
    fn walk(dir: &std::path::Path, depth: usize, stopped: &mut usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // The directory entry's own type (no stat): a workload's `efs/`
            // holds its mounts, which it must not enter.
            if !entry.file_type().is_ok_and(|t| t.is_dir()) || entry.file_name() == "efs" {
                continue;
            }
            if path.file_name().is_some_and(|n| n == "state") {
                if let Ok(Some(c)) = cove_runtime::Container::adopt(&path) {
                    if c.status() == cove_runtime::Status::Running {
                        *stopped += 1;
                    }
                    c.kill();
                    let _ = c.cleanup();
                }
            } else if depth > 0 {
                walk(&path, depth - 1, stopped);
            }
        }
    }
    let mut stopped = 0;
    // <account>/<region>/<kind>/<name>/<instance>/state, Studio apps less deep.
    walk(jobs_dir, 6, &mut stopped);
    stopped
}

/// A user for `cove exec --user`: a name from /etc/passwd, or `UID[:GID]`
/// (the group defaults to the uid).
fn resolve_user(user: &str) -> anyhow::Result<(u32, u32)> {
    let numeric = |s: &str| s.parse::<u32>().ok();
    if let Some((uid, gid)) = user.split_once(':') {
        if let (Some(uid), Some(gid)) = (numeric(uid), numeric(gid)) {
            return Ok((uid, gid));
        }
    } else if let Some(uid) = numeric(user) {
        return Ok((uid, uid));
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&user))
        .and_then(|fields| Some((numeric(fields.get(2)?)?, numeric(fields.get(3)?)?)))
        .ok_or_else(|| anyhow::anyhow!("no user {user:?} in /etc/passwd; give --user UID[:GID]"))
}

/// Enters the ENI's namespace and replaces this process with `command`,
/// run as `identity` (uid, gid) with no capabilities, or, without one, as
/// root with all of them.
fn exec_in(
    data_dir: &std::path::Path,
    eni: Option<&str>,
    identity: Option<(u32, u32)>,
    command: &[String],
) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let instance = server::instance_tag(data_dir)?;
    let netns = match eni {
        Some(eni) => cove_net::naming::eni_netns(&host_instance(data_dir, &instance, eni)?, eni),
        None => cove_net::naming::region_netns(&instance),
    };
    enter_netns(data_dir, eni, &netns)?;
    let bundle = cove_tls::bundle_path(data_dir);
    let mut binds = vec![];
    let resolv = format!("/etc/netns/{netns}/resolv.conf");
    if std::path::Path::new(&resolv).exists() {
        binds.push((resolv, "/etc/resolv.conf".to_string()));
    }
    // Where the process finds Cove's CA: over the system bundle, as in a
    // job; on a host without one, the bundle's own path, by the variables.
    let trusted = match (
        bundle.exists(),
        std::path::Path::new(cove_tls::BUNDLE_TARGET).exists(),
    ) {
        (true, true) => {
            binds.push((
                bundle.to_string_lossy().into_owned(),
                cove_tls::BUNDLE_TARGET.to_string(),
            ));
            Some(cove_tls::BUNDLE_TARGET.to_string())
        }
        (true, false) => Some(bundle.to_string_lossy().into_owned()),
        (false, _) => None,
    };
    private_binds(&binds)?;
    // `cove exec` is single-threaded here, so the whole process changes.
    if let Some((uid, gid)) = identity {
        cove_sys::drop_to_user(uid, gid, cove_sys::last_cap())
            .map_err(|e| anyhow::anyhow!("dropping privileges for uid {uid} gid {gid}: {e}"))?;
        cove_sys::seccomp::confine_to_workload_profile()
            .map_err(|e| anyhow::anyhow!("installing the system-call filter: {e}"))?;
    }
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    if let Some(path) = trusted {
        cmd.envs(cove_tls::BUNDLE_ENV.map(|v| (v, path.clone())));
    }
    let err = cmd.exec();
    anyhow::bail!("running {}: {err}", command[0])
}

/// The instance tag of the host that runs `eni`: this data directory's,
/// unless the store is shared and places the ENI on another host. That
/// host's namespaces are found here only when it runs on this machine too
/// (the simulation of several hosts); otherwise the command must run there.
fn host_instance(data_dir: &std::path::Path, ours: &str, eni: &str) -> anyhow::Result<String> {
    let here = std::path::Path::new(cove_net::netns::NETNS_DIR)
        .join(cove_net::naming::eni_netns(ours, eni))
        .exists();
    if here
        || !matches!(
            config::StoreLocation::of_data_dir(data_dir),
            config::StoreLocation::Postgres(_)
        )
    {
        return Ok(ours.to_string());
    }
    let Ok(world) = reach::load_world(data_dir) else {
        return Ok(ours.to_string());
    };
    let host = world
        .network_interfaces
        .get(eni)
        .and_then(|e| cove_model::hosts::host_of(&world, e))
        .and_then(|id| world.hosts.get(id));
    match host {
        Some(h) if !h.instance.is_empty() && h.instance != ours => {
            // Its region network is there from its first pass on.
            let theirs = cove_net::naming::region_netns(&h.instance);
            if std::path::Path::new(cove_net::netns::NETNS_DIR)
                .join(&theirs)
                .exists()
            {
                Ok(h.instance.clone())
            } else {
                anyhow::bail!(
                    "{eni} runs on host {} ({}): run `cove exec` on that machine",
                    h.id,
                    h.underlay
                )
            }
        }
        _ => Ok(ours.to_string()),
    }
}

/// Enters the namespace of `eni` (or of the region network). The data
/// plane publishes an ENI's namespace only once it is whole (address and
/// default route in place), so this waits up to 10 s for an ENI that the
/// API has and the data plane has not published yet: a script that
/// creates an ENI and at once runs a server on it must not fail. A name is
/// a bind mount, so for an instant after it appears the file is not yet a
/// namespace and `setns` refuses it (EINVAL): that is the same wait. An
/// ENI the store does not have fails at once.
fn enter_netns(data_dir: &std::path::Path, eni: Option<&str>, netns: &str) -> anyhow::Result<()> {
    let path = format!("{}/{netns}", cove_net::netns::NETNS_DIR);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let hint = || {
        format!(
            "is `cove serve --data-dir {}` running with its data plane on?",
            data_dir.display()
        )
    };
    loop {
        let err = match std::fs::File::open(&path) {
            Ok(file) => {
                // This process is single-threaded here, so the whole
                // process moves, and so does the command it then runs.
                let Err(err) = cove_sys::enter_net_namespace(&file) else {
                    return Ok(());
                };
                if err.raw_os_error() != Some(cove_sys::Errno::INVAL.raw_os_error()) {
                    anyhow::bail!("entering {netns}: {err}");
                }
                err
            }
            Err(err) => {
                let Some(eni) = eni else {
                    anyhow::bail!(
                        "the internet host has no network namespace here ({netns}: {err}); {}",
                        hint()
                    );
                };
                let known = crate::reach::load_world(data_dir)
                    .map(|w| w.network_interfaces.contains_key(eni))
                    .unwrap_or(false);
                if !known {
                    anyhow::bail!(
                        "{eni} is not a network interface of the Cove at {}",
                        data_dir.display()
                    );
                }
                err
            }
        };
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "{} has no usable network namespace here after 10 s ({netns}: {err}); {}",
                eni.unwrap_or("the internet host"),
                hint()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Shows the command the namespace's own `/etc/resolv.conf` (the VPC
/// resolver), the way `ip netns exec` does, and the CA bundle that trusts
/// Cove's HTTPS listeners as jobs see it: a private mount namespace with
/// each `(source, target)` file bound over its target.
fn private_binds(binds: &[(String, String)]) -> anyhow::Result<()> {
    use cove_sys::{MountFlags, MountPropagationFlags, UnshareFlags};
    if binds.is_empty() {
        return Ok(());
    }
    // This process is single-threaded here, which unshare(CLONE_NEWNS)
    // requires.
    cove_sys::unshare(UnshareFlags::NEWNS)
        .map_err(|e| anyhow::anyhow!("unshare(CLONE_NEWNS): {e}"))?;
    // Keep the bind mounts from propagating back to the host.
    cove_sys::set_propagation(
        std::path::Path::new("/"),
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )
    .map_err(|e| anyhow::anyhow!("making / a slave mount: {e}"))?;
    for (source, target) in binds {
        cove_sys::bind(
            std::path::Path::new(source),
            std::path::Path::new(target),
            MountFlags::empty(),
        )
        .map_err(|e| anyhow::anyhow!("binding {source} over {target}: {e}"))?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Exec {
            data_dir,
            eni,
            internet: _,
            user,
            privileged,
            command,
        } => {
            let identity = if privileged {
                None
            } else {
                Some(resolve_user(&user)?)
            };
            exec_in(&data_dir, eni.as_deref(), identity, &command)
        }
        Command::Ca { data_dir } => {
            let path = cove_tls::ca_pem_path(&data_dir);
            let pem = std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {e}; `cove serve --data-dir {}` makes the CA at its first start",
                    path.display(),
                    data_dir.display()
                )
            })?;
            print!("{pem}");
            Ok(())
        }
        Command::Teardown { data_dir } => {
            let _lock = config::lock_data_dir(&data_dir, "cove teardown")?;
            let canonical = data_dir.canonicalize().unwrap_or_else(|_| data_dir.clone());
            // First, so that nothing below waits on a file system whose
            // server is gone.
            let detached = cove_host::efs::detach_all_under(&canonical);
            if detached > 0 {
                println!("detached {detached} EFS mounts");
            }
            let stopped = stop_containers(&data_dir.join("jobs"));
            if stopped > 0 {
                println!("stopped {stopped} containers");
            }
            let unmounted = cove_runtime::overlay::unmount_all_under(&canonical);
            if unmounted > 0 {
                println!("detached {unmounted} image overlays");
            }
            let instance = server::instance_tag(&data_dir)?;
            let removed =
                cove_dataplane::reconcile::Reconciler::new(&instance, cove_dataplane::linux::Linux)
                    .remove_all()?;
            println!("removed {removed} network namespaces of instance {instance}");
            Ok(())
        }
        Command::RunContainer { spec } => cove_runtime::run_container_main(&spec),
        Command::CompileModel { dir } => cove_jobs::compilation::compile_model_main(&dir),
        Command::EfsMount {
            netns,
            server,
            path,
            mountpoint,
            read_only,
            timeout_ms,
        } => efs_mount::run(&efs_mount::Args {
            netns: &netns,
            server,
            export_path: &path,
            mountpoint: &mountpoint,
            read_only,
            connect_timeout: std::time::Duration::from_millis(timeout_ms),
        }),
        Command::ImageImport {
            data_dir,
            image_uri,
            source,
            also,
            shared_dir,
        } => {
            let uri: cove_ecr::names::ImageUri = image_uri
                .parse()
                .map_err(|()| anyhow::anyhow!("'{image_uri}' is not an ECR image URI: <account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag]"))?;
            config::create_private_dir(&data_dir)?;
            // Into the registry the data directory's server serves: its
            // metadata is wherever that server's store is.
            let store = config::StoreLocation::of_data_dir(&data_dir);
            let shared_metadata = store.shared_url();
            let ecr = cove_ecr::Ecr::open(
                &shared_dir.as_ref().unwrap_or(&data_dir).join("ecr"),
                shared_metadata,
                &uri.registry.account,
                &uri.registry.region,
            )?;
            let digest = cove_ecr::import::import(&ecr, &image_uri, &source)?;
            println!("{image_uri}@{digest}");
            for other in &also {
                cove_ecr::import::tag_also(&ecr, &image_uri, &digest, other)?;
                println!("{other}@{digest}");
            }
            Ok(())
        }
        Command::Reach {
            data_dir,
            from,
            to,
            port,
            protocol,
            source_port,
            json,
            security_groups,
            principal,
            account,
            action,
        } => {
            let code = reach::reach(
                &data_dir,
                &reach::ReachArgs {
                    from: &from,
                    to: &to,
                    protocol: &protocol,
                    port,
                    source_port,
                    json,
                    security_groups: &security_groups,
                    principal: &principal,
                    account: &account,
                    action: &action,
                },
            )?;
            std::process::exit(code)
        }
        Command::ReachJob {
            data_dir,
            request,
            job,
            model,
            processing,
            region,
            account,
            json,
        } => {
            let code = reach::reach_job(
                &data_dir,
                &reach::JobArgs {
                    request: request.as_deref(),
                    job: job.as_deref(),
                    model: model.as_deref(),
                    processing,
                    region: &region,
                    account: &account,
                    json,
                },
            )?;
            std::process::exit(code)
        }
        Command::WatchJob {
            name,
            endpoint,
            region,
            processing,
        } => {
            let client = watch::Client::from_env(&endpoint, &region)?;
            let d = watch::watch(&client, &name, processing)?;
            let status = d[if processing {
                "ProcessingJobStatus"
            } else {
                "TrainingJobStatus"
            }]
            .as_str()
            .unwrap_or_default()
            .to_string();
            println!("{name}: {status}");
            if let Some(reason) = d["FailureReason"].as_str() {
                println!("  FailureReason: {reason}");
            }
            if let Some(uri) = d["ModelArtifacts"]["S3ModelArtifacts"].as_str() {
                println!("  ModelArtifacts: {uri}");
            }
            if let Some(secs) = d["BillableTimeInSeconds"].as_i64() {
                println!("  BillableTimeInSeconds: {secs}");
            }
            if status != "Completed" {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Serve(args) => {
            init_logging(&args.log_format);
            let settings = config::Settings::resolve(&args)?;
            // 8 MiB worker stacks instead of tokio's 2 MiB: a debug build's
            // request futures (axum, tower, hyper, s3s) nest deep enough that
            // a worker once overflowed its stack during the 100,000-probe
            // differential run (not reproduced since). The extra is virtual
            // memory only, and an overflow would kill the whole server.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_stack_size(8 << 20)
                .build()?;
            runtime.block_on(server::serve(settings))
        }
        Command::Agent(args) => {
            init_logging(&args.log_format);
            agent::run(&args)
        }
        Command::Hosts { data_dir } => {
            let world = reach::load_world(&data_dir)?;
            if world.hosts.is_empty() {
                println!("no hosts registered: a single-host Cove (`cove serve --underlay-address` lets agents join)");
            } else {
                print!("{}", hosts::render(&world, hosts::now()));
            }
            Ok(())
        }
    }
}
