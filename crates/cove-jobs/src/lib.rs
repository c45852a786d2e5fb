//! The drivers that do the work the SageMaker API stores: one persisted
//! state machine per kind of job, each in its own file, each resuming where
//! it was after a restart. A driver reads its resource, takes the step its
//! phase calls for and writes the result back in one store write.
//!
//! - [`training`]: training and processing jobs, on the control plane;
//!   [`instances`]: their instances' work, on the host each is placed on.
//! - [`hosting`]: endpoints and their instances (and, with [`transform`],
//!   the instances of batch transform jobs).
//! - [`compilation`]: Neo compilation jobs.
//! - [`recommender`]: Inference Recommender jobs.
//! - [`studio_apps`]: Studio apps.
//! - [`contract`]: the SageMaker container contract, as pure data; the
//!   programs Cove puts inside containers live in `guest/`.
//! - [`load`]: the arithmetic of a recommender benchmark (pure).

pub mod compilation;
pub mod container_logs;
pub mod contract;
pub mod driver;
mod file_systems;
pub mod hosting;
pub mod instances;
pub mod load;
pub mod recommender;
mod serving;
pub mod studio_apps;
pub mod training;
pub mod transform;
mod workers;

pub use cove_host::Settings;
pub use hosting::Hosting;

use cove_logs::LogsService;
use cove_model::jobs::{CompilationPhase, JobPhase, RecommendationPhase, StsSession};
use cove_model::studio::AppPhase;
use cove_store::Store;
use cove_sts::StsService;
use driver::Driver;
use std::sync::Arc;
use workers::Workers;

/// Who requests the ENIs of a job, as DescribeNetworkInterfaces shows it.
pub(crate) const REQUESTER: &str = "sagemaker.amazonaws.com";
/// How long the execution role's session lasts: long enough for any job.
const SESSION_SECONDS: i64 = 43_200;

/// Which of SageMaker's own networks a workload outside the customer's VPC
/// runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagedNetwork {
    /// `PublicInternetOnly` Studio apps.
    Studio,
    /// Training and processing jobs without a `VpcConfig`.
    Jobs,
    /// Endpoint instances and batch transform hosts of models without a
    /// `VpcConfig`.
    Hosting,
}

/// Where workloads outside the customer's VPC get their network (on AWS, a
/// service VPC with internet access). The binary wires Cove's; the drivers
/// know only this.
pub trait PublicAppNetwork: Send + Sync {
    /// The subnet and security group for a workload's ENI, made on first use.
    fn subnet_and_group(
        &self,
        tx: &mut cove_store::Tx,
        region: &str,
        account: &str,
        network: ManagedNetwork,
    ) -> cove_model::AwsResult<(String, String)>;
    /// A public address for the workload's ENI, released with it.
    fn give_public_address(
        &self,
        tx: &mut cove_store::Tx,
        eni_id: &str,
        network: ManagedNetwork,
    ) -> cove_model::AwsResult<()>;
}

/// Waits until this host's data plane has made the world as it is now
/// real (after a restart, all of it; else the ENIs just made or placed
/// here, of which on an agent it learns from the store), so a workload's
/// first packets meet their rules; `what` names them in the error.
pub(crate) fn wait_for_network_here(
    store: &Store,
    settings: &Settings,
    what: &str,
) -> anyhow::Result<()> {
    wait_for_restored_network(store, settings)?;
    if settings.instance.is_some()
        && !store.wait_applied(store.generation(), std::time::Duration::from_secs(60))
    {
        anyhow::bail!("this host's data plane did not apply the {what} within 60 s");
    }
    Ok(())
}

/// Whether a workload of `image` must run on the control plane's host, as
/// the control plane places it: unless it runs in script mode (on the
/// host's root, which every host has), when its image is in the control
/// plane's legacy image directory, or when the registry gave it no
/// [`image_pull`] (no such image, or not the workload's to pull), so that
/// it fails there with the registry's own word. An image the registry
/// gave it runs anywhere: agents pull it.
pub(crate) fn image_needs_control_plane(
    settings: &Settings,
    image: &str,
    script_mode: bool,
    pull: Option<&cove_model::jobs::ImagePull>,
) -> bool {
    !script_mode
        && (cove_runtime::image::legacy_rootfs_dir(&settings.images_dir, image).is_dir()
            || pull.is_none())
}

/// How the hosts of a workload of `account` pull `image` from Cove's
/// registry, with a registry password for the role session `caller` (or
/// SageMaker itself): `None` when the image is not in the registry or not
/// the caller's to pull (its host then fails it with the registry's word).
/// Only the control plane has the registry.
pub(crate) fn image_pull(
    settings: &Settings,
    image: &str,
    account: &str,
    caller: Option<&str>,
) -> Option<cove_model::jobs::ImagePull> {
    let registry = settings.registry.as_ref()?;
    let holder = cove_host::Puller {
        account: account.to_string(),
        access_key: caller.unwrap_or_default().to_string(),
    };
    let resolved = registry.resolve_as(image, &holder).ok()?;
    Some(cove_model::jobs::ImagePull {
        manifest: resolved.digest.to_string(),
        authorization: registry.basic_authorization(account, caller.unwrap_or(REQUESTER)),
    })
}

/// After a restart the kernel holds none of the stored world's networks
/// until the data plane's first pass in this process; a step that moves
/// data through ENIs waits for it (and, after that pass, not at all), so a
/// transfer resumed after a crash never fails for want of its network.
pub(crate) fn wait_for_restored_network(store: &Store, settings: &Settings) -> anyhow::Result<()> {
    if settings.instance.is_none() {
        return Ok(());
    }
    if !store.wait_applied(
        cove_store::LOADED_GENERATION,
        std::time::Duration::from_secs(60),
    ) {
        anyhow::bail!("the data plane did not restore the stored networks within 60 s");
    }
    Ok(())
}

/// Where a workload's ENI goes.
pub(crate) enum Placement {
    /// One of the customer's subnets, with the customer's security groups.
    Subnet { subnet: String, groups: Vec<String> },
    /// SageMaker's own network, with a public address.
    Managed(ManagedNetwork),
}

impl Placement {
    /// Where the `ordinal`-th host of a job or model goes: round robin over
    /// its `VpcConfig`'s subnets with its groups, or, without one,
    /// SageMaker's `network`.
    pub(crate) fn of_host(
        vpc: Option<&cove_sagemaker::requests::VpcConfig>,
        ordinal: usize,
        network: ManagedNetwork,
    ) -> Placement {
        match vpc {
            Some(config) => Placement::Subnet {
                subnet: config.subnets[ordinal % config.subnets.len().max(1)].clone(),
                groups: config.security_group_ids.clone(),
            },
            None => Placement::Managed(network),
        }
    }

    /// The description SageMaker gives a host's ENI for `owner`
    /// (`Training Job my-job (algo-1)`).
    pub(crate) fn host_eni_description(&self, owner: &str) -> String {
        match self {
            Placement::Subnet { .. } => {
                format!("[DO NOT DELETE] ENI managed by SageMaker for {owner}")
            }
            Placement::Managed(_) => {
                format!("ENI managed by SageMaker for {owner} in SageMaker's network")
            }
        }
    }
}

/// Why a job in `subnets` cannot run because of its VPC's DHCP options, as
/// SageMaker refuses a VPC whose set lacks `domain-name` or
/// `domain-name-servers` (the text is Cove's: AWS documents the rule, not
/// its message). The account's default set has both.
pub(crate) fn dhcp_options_problem(
    world: &cove_model::world::World,
    subnets: &[String],
) -> Option<String> {
    let subnet = world.subnets.get(subnets.first()?)?;
    let v = world.vpcs.get(&subnet.vpc_id)?;
    let missing: Vec<&str> = match world.dhcp_options.get(&v.dhcp_options_id) {
        Some(set) => ["domain-name", "domain-name-servers"]
            .into_iter()
            .filter(|k| set.values(k).is_empty())
            .collect(),
        None if v.dhcp_options_id == "default" => vec!["domain-name", "domain-name-servers"],
        None => vec![],
    };
    (!missing.is_empty()).then(|| {
        format!(
            "ClientError: The DHCP options of VPC {} ({}) have no {}. SageMaker needs both domain-name and domain-name-servers in the VPC's DHCP options set.",
            v.id,
            v.dhcp_options_id,
            missing.join(" and ")
        )
    })
}

/// Creates a workload's requester-managed ENI where `placement` says, on
/// host `host` (`None`: the control plane's); in SageMaker's network it
/// also gets a public address (released with it).
pub(crate) fn create_workload_eni(
    tx: &mut cove_store::Tx,
    public_network: &dyn PublicAppNetwork,
    placement: Placement,
    (region, account): (&str, &str),
    description: String,
    host: Option<&str>,
) -> cove_model::AwsResult<String> {
    let (subnet, groups, network) = match placement {
        Placement::Subnet { subnet, groups } => (subnet, groups, None),
        Placement::Managed(network) => {
            let (subnet, group) = public_network.subnet_and_group(tx, region, account, network)?;
            (subnet, vec![group], Some(network))
        }
    };
    let mut eni = cove_ec2::create_managed_eni(tx, &subnet, groups, description, REQUESTER)?;
    if host.is_some() {
        eni.host = host.map(String::from);
        tx.put(eni.clone());
    }
    if let Some(network) = network {
        public_network.give_public_address(tx, &eni.id, network)?;
    }
    Ok(eni.id)
}

/// Where a workload keeps its files on the host:
/// `<jobs dir>/<account>/<region>/<resource>` from its ARN
/// (`…/training-job/my-job`), so names that repeat across accounts and
/// regions never share a directory. (SageMaker names are `[a-zA-Z0-9-]`.)
pub(crate) fn workload_dir(jobs_dir: &std::path::Path, arn: &str) -> std::path::PathBuf {
    let mut parts = arn.splitn(6, ':').skip(3);
    let (region, account, resource) = (parts.next(), parts.next(), parts.next());
    jobs_dir
        .join(account.unwrap_or_default())
        .join(region.unwrap_or_default())
        .join(resource.unwrap_or_default())
}

/// What every driver shares.
pub struct Context {
    pub(crate) store: Arc<Store>,
    pub(crate) logs: Arc<LogsService>,
    pub(crate) sts: Arc<StsService>,
    pub(crate) settings: Settings,
    pub(crate) public_network: Arc<dyn PublicAppNetwork>,
}

impl Context {
    /// Waits until the data plane has applied the store as it is now (the
    /// ENIs just created), so the next packets meet their rules.
    pub(crate) fn wait_for_data_plane(&self) -> anyhow::Result<()> {
        let generation = self.store.generation();
        let started = std::time::Instant::now();
        if !self
            .store
            .wait_applied(generation, std::time::Duration::from_secs(60))
        {
            anyhow::bail!("the data plane did not apply the job's ENIs within 60 s");
        }
        // bench/jobs.py reads this to report the data plane's share of a job's start-up.
        tracing::info!(
            waited_micros = cove_model::convert::micros(started.elapsed()),
            "the data plane applied the job's ENIs"
        );
        Ok(())
    }
}

/// Runs a driver for every training, processing, compilation and
/// recommendation job and every Studio app that is not finished (endpoints
/// and transform jobs have [`Hosting`]).
pub struct Supervisor {
    context: Arc<Context>,
    workers: Workers,
    /// The instances of training and processing jobs placed on this host.
    instances: Arc<instances::Instances>,
    /// The Studio apps placed on this host.
    apps: Arc<studio_apps::AppsHere>,
}

impl Supervisor {
    pub fn new(
        store: Arc<Store>,
        logs: Arc<LogsService>,
        sts: Arc<StsService>,
        settings: Settings,
        public_network: Arc<dyn PublicAppNetwork>,
        here: cove_model::hosts::Locality,
    ) -> Arc<Supervisor> {
        let instances =
            instances::Instances::new(store.clone(), settings.clone(), logs.clone(), here.clone());
        let apps = studio_apps::AppsHere::new(store.clone(), settings.clone(), here);
        Arc::new(Supervisor {
            instances,
            apps,
            context: Arc::new(Context {
                store,
                logs,
                sts,
                settings,
                public_network,
            }),
            workers: Workers::default(),
        })
    }

    /// Runs `D` on resource `key` on its own thread, unless one already is.
    fn run<D: Driver + Send + 'static>(&self, key: String, thread: String, d: D) {
        let store = self.context.store.clone();
        self.workers.run_once(&key.clone(), thread, move || {
            driver::drive(&d, &store, &key)
        });
    }

    /// Watches the store and gives every unfinished resource a driver.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        self.instances.spawn()?;
        self.apps.spawn()?;
        let me = self.clone();
        let store = self.context.store.clone();
        crate::workers::watch_store(store, "cove-jobs", move |world| {
            let ctx = &me.context;
            for j in world.sagemaker_jobs.values() {
                if j.phase != JobPhase::CleanedUp {
                    let thread = format!("job-{}", j.name);
                    me.run(j.key(), thread, training::Training(ctx.clone()));
                }
            }
            for a in world.studio_apps.values() {
                if a.phase != AppPhase::Gone {
                    let thread = format!("app-{}", a.user_profile_name);
                    me.run(a.key(), thread, studio_apps::StudioApps(ctx.clone()));
                }
            }
            for j in world.recommendation_jobs.values() {
                if j.phase != RecommendationPhase::CleanedUp {
                    let thread = format!("ir-{}", j.name);
                    me.run(j.key(), thread, recommender::Recommendation(ctx.clone()));
                }
            }
            for j in world.compilation_jobs.values() {
                if j.phase != CompilationPhase::CleanedUp {
                    let thread = format!("neo-{}", j.name);
                    me.run(j.key(), thread, compilation::Compilation(ctx.clone()));
                }
            }
        })
    }
}

/// The execution role's session a worker keeps under `key`, if it still exists.
pub(crate) fn session_of(store: &Store, key: Option<&str>) -> Option<StsSession> {
    store
        .snapshot()
        .sts_sessions
        .get(key?)
        .map(|x| (**x).clone())
}

/// A new session of the job's execution role, for a worker to keep.
pub(crate) fn assume_job_role(
    sts: &StsService,
    account: &str,
    role: &str,
) -> anyhow::Result<String> {
    Ok(sts
        .assume_role(
            account,
            role,
            "SageMaker",
            SESSION_SECONDS,
            Default::default(),
        )?
        .access_key_id)
}

/// Gives back what a worker held: its managed ENI (with what hangs off it)
/// and its role session. An ENI of a lost host leaves its address held in
/// its subnet until that host is back and has removed it (the host may run
/// on, partitioned, with the ENI in its kernel); only a write on the whole
/// world sees the hosts, and every release from a lost host is one.
pub(crate) fn release(tx: &mut cove_store::Tx, eni: Option<&str>, session: Option<&str>) {
    if let Some(eni) = eni {
        if let Some(e) = tx.world.network_interfaces.get(eni) {
            let host_lost = !tx.world.hosts.is_empty()
                && cove_model::hosts::on_lost_host(&tx.world, e.host.as_deref());
            if host_lost {
                cove_ec2::delete_managed_eni_of_lost_host(tx, eni);
            } else {
                cove_ec2::delete_managed_eni(tx, eni);
            }
        }
    }
    if let Some(s) = session {
        tx.delete::<StsSession>(s);
    }
}
