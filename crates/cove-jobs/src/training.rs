//! The job supervisor: drives every stored job through its phases —
//! Starting (credentials, ENIs in the job's subnets), Downloading (input
//! channels through each host's ENI), Running (one container per host,
//! logs to CloudWatch Logs, stop and timeout), Uploading (outputs through
//! the ENI), then cleanup (ENIs and working files released). Each phase
//! ends with a store write, so after a restart a job resumes where it was:
//! a running container is adopted, an interrupted transfer starts again.

use crate::contract::{self, ContainerCredentials, HostContract};
use crate::driver::{driver, Driver, Failure, Step};
use crate::file_systems;
use crate::{assume_job_role, release, session_of, REQUESTER};
use cove_host::eni_netns;
use cove_host::launch::{launch_host, HostLaunch};
use cove_host::logs::LogShipper;
use cove_host::s3::{joined, spawn_in_network};
use cove_host::s3::{parse_s3_uri, S3Client, TransferError};
use cove_model::ids::now_rfc3339;
use cove_model::instance;
use cove_model::jobs::{
    JobKind, JobPhase, JobRequest, JobStatus, Outcome, SageMakerJob, SecondaryStatus, StsSession,
};
use cove_runtime::overlay::{overlay, unmount};
use cove_runtime::{Container, RootFs, Status};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DATA_DOWNLOAD_FAILED: &str = "ClientError: Data download failed:Please ensure that the subnet's route table has a route to an S3 VPC endpoint or a NAT device, and both the security groups and the subnet's network ACL allow outbound traffic to S3.";
/// AWS's reasons when the ML storage volume (`VolumeSizeInGB`) is full.
pub const DATA_DOWNLOAD_DISK_FULL: &str =
    "ClientError: Data download failed:Insufficient disk space";
pub const ARTIFACT_UPLOAD_FAILED: &str = "ClientError: Artifact upload failed:Please ensure that the subnet's route table has a route to an S3 VPC endpoint or a NAT device, and both the security groups and the subnet's network ACL allow outbound traffic to S3";

fn stopped_message(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Training => "Training job stopped",
        JobKind::Processing => "Processing job stopped",
    }
}

/// How a training or processing job's steps went, before [`Step`].
type Stepped = Result<(), Failure>;

driver!(
    /// Training and processing jobs.
    Training
);

impl Driver for Training {
    type Resource = SageMakerJob;

    fn step(&self, job: &SageMakerJob) -> anyhow::Result<Step> {
        let stepped = match job.phase {
            JobPhase::Starting => self.start(job)?,
            JobPhase::Downloading => self.download(job)?,
            JobPhase::Running => self.run(job)?,
            JobPhase::Uploading => self.upload(job)?,
            JobPhase::Done => self.cleanup(job)?,
            JobPhase::CleanedUp => return Ok(Step::Done),
        };
        Ok(stepped.into())
    }

    fn fail(&self, job: &SageMakerJob, reason: &str) -> anyhow::Result<()> {
        self.finish_failed(&job.key(), reason)
    }
}

impl Training {
    fn job(&self, key: &str) -> Option<SageMakerJob> {
        self.store
            .snapshot()
            .sagemaker_jobs
            .get(key)
            .map(|x| (**x).clone())
    }

    /// Applies `f` to the stored job in one write.
    fn update(&self, key: &str, f: impl Fn(&mut SageMakerJob)) -> anyhow::Result<SageMakerJob> {
        let job = self.store.write(|tx| {
            let mut job = tx.cloned::<SageMakerJob>(key)?;
            f(&mut job);
            tx.put(job.clone());
            Ok(job)
        })?;
        Ok(job)
    }

    fn finish_failed(&self, key: &str, reason: &str) -> anyhow::Result<()> {
        self.update(key, |j| {
            j.finish(
                JobStatus::Failed,
                SecondaryStatus::Failed,
                reason,
                &now_rfc3339(),
            )
        })?;
        Ok(())
    }

    fn stopped_early(&self, job: &SageMakerJob) -> anyhow::Result<bool> {
        if !job.stop_requested {
            return Ok(false);
        }
        self.update(&job.key(), |j| {
            j.finish(
                JobStatus::Stopped,
                SecondaryStatus::Stopped,
                stopped_message(j.kind),
                &now_rfc3339(),
            )
        })?;
        Ok(true)
    }

    fn host_dir(&self, job: &SageMakerJob, host: &str) -> PathBuf {
        crate::workload_dir(&self.settings.jobs_dir, &job.arn).join(host)
    }

    fn session(&self, job: &SageMakerJob) -> Option<StsSession> {
        session_of(&self.store, job.session_access_key.as_deref())
    }

    /// The ENI namespace of each host, or `None` for jobs outside a VPC.
    fn host_netns(&self, job: &SageMakerJob) -> Vec<Option<String>> {
        job.hosts
            .iter()
            .map(|h| eni_netns(&self.settings, h.eni_id.as_deref()))
            .collect()
    }

    // ---- Starting ----

    fn start(&self, job: &SageMakerJob) -> anyhow::Result<Stepped> {
        if self.stopped_early(job)? {
            return Ok(Ok(()));
        }
        let key = job.key();
        let vpc = job.request.vpc_config().cloned();
        if vpc.is_some() && self.settings.instance.is_none() {
            return Ok(Err(Failure(
                "ClientError: Cove's data plane is off (it needs root, ip and nft), so a job with a VpcConfig cannot get its network interfaces.".into(),
            )));
        }
        if let Some(problem) = vpc
            .as_ref()
            .and_then(|v| crate::dhcp_options_problem(&self.store.snapshot(), &v.subnets))
        {
            return Ok(Err(Failure(problem)));
        }
        if job.session_access_key.is_none() {
            let role = job.request.role_arn();
            let s = assume_job_role(&self.sts, &job.account_id, role)?;
            self.update(&key, |j| j.session_access_key = Some(s.clone()))?;
        }
        // Each host's ENI: in the job's subnets, or, without a VpcConfig, in
        // SageMaker's own network with internet access, as on AWS (network
        // isolation, or the data plane off, keeps loopback only).
        let in_managed_network =
            vpc.is_none() && self.settings.instance.is_some() && !job.request.network_isolation();
        if vpc.is_some() || in_managed_network {
            let network = crate::ManagedNetwork::Jobs;
            let made = self.store.write_as(&job.account_id, |tx| {
                let mut j = tx.cloned::<SageMakerJob>(&key)?;
                let kind = match j.kind {
                    JobKind::Training => "Training Job",
                    JobKind::Processing => "Processing Job",
                };
                for (i, host) in j.hosts.iter_mut().enumerate() {
                    if host.eni_id.is_some() {
                        continue;
                    }
                    let placement = crate::Placement::of_host(vpc.as_ref(), i, network);
                    let description = placement
                        .host_eni_description(&format!("{kind} {} ({})", j.name, host.name));
                    host.eni_id = Some(crate::create_workload_eni(
                        tx,
                        self.public_network.as_ref(),
                        placement,
                        (&j.region, &j.account_id),
                        description,
                    )?);
                }
                tx.put(j);
                Ok(())
            });
            if let Err(e) = made {
                let place = if vpc.is_some() {
                    "a network interface in the job's subnets"
                } else {
                    "the job's network interface in SageMaker's network"
                };
                return Ok(Err(Failure(format!(
                    "ClientError: Cannot create {place}: {}",
                    e.message
                ))));
            }
            self.wait_for_data_plane()?;
        }
        self.update(&key, |j| {
            let now = now_rfc3339();
            j.start_time = Some(now.clone());
            j.phase = JobPhase::Downloading;
            j.transition(SecondaryStatus::Downloading, "Downloading input data", &now);
        })?;
        Ok(Ok(()))
    }

    // ---- Transfers ----

    /// Runs `f` with an S3 client inside host `i`'s network, in parallel for every host.
    fn on_each_host<T: Send + 'static>(
        &self,
        job: &SageMakerJob,
        f: impl Fn(usize, PathBuf, &S3Client) -> Result<T, TransferError> + Send + Sync + 'static,
    ) -> Vec<Result<T, TransferError>> {
        let session = self.session(job);
        let f = Arc::new(f);
        let handles: Vec<_> = self
            .host_netns(job)
            .into_iter()
            .enumerate()
            .map(|(i, ns)| {
                let f = f.clone();
                let host_dir = self.host_dir(job, &job.hosts[i].name);
                spawn_in_network(
                    &self.settings,
                    &job.region,
                    ns,
                    session.as_ref(),
                    move |c| f(i, host_dir, c),
                )
            })
            .collect();
        handles.into_iter().map(joined).collect()
    }

    /// With `TrainingRepositoryAccessMode: Vpc`, the image comes through the
    /// job's own network: every host pulls it over HTTPS from the address
    /// its VPC's resolver gives for the registry's name (an `ecr.dkr`
    /// endpoint's ENIs with private DNS, else the public address behind the
    /// gateways), manifest and blobs, each checked against its digest
    /// ([`cove_host::pull`]). An image that is not in Cove's registry (script
    /// mode on the host's Python) is only checked for a connection on 443.
    fn registry_through_vpc(&self, job: &SageMakerJob) -> anyhow::Result<Stepped> {
        let JobRequest::Training(r) = &job.request else {
            return Ok(Ok(()));
        };
        let Some(algo) = r.algorithm_specification.as_ref() else {
            return Ok(Ok(()));
        };
        let vpc_mode = algo
            .training_image_config
            .as_ref()
            .is_some_and(|c| c.training_repository_access_mode == "Vpc");
        if !vpc_mode {
            return Ok(Ok(()));
        }
        let image = algo.training_image.as_deref().unwrap_or_default();
        let Some(host) = image.split_once('/').map(|(h, _)| h.to_string()) else {
            return Ok(Ok(()));
        };
        let world = self.store.snapshot();
        let unreachable = |why: String| {
            Failure(format!(
                "ClientError: Cannot pull the training image {image} through the job's VPC: {why}. Please ensure that the VPC has interface endpoints for com.amazonaws.{region}.ecr.dkr and com.amazonaws.{region}.ecr.api (or a NAT gateway), and that its security groups and network ACLs allow HTTPS to them.",
                region = job.region
            ))
        };
        for (h, ns) in job.hosts.iter().zip(self.host_netns(job)) {
            let eni = h
                .eni_id
                .as_ref()
                .and_then(|e| world.network_interfaces.get(e));
            let (Some(eni), Some(ns)) = (eni, ns) else {
                return Ok(Err(Failure(
                    "ClientError: TrainingRepositoryAccessMode Vpc needs the job's VpcConfig."
                        .into(),
                )));
            };
            let address = match cove_net::dns::resolve(&world, &eni.vpc_id, &host) {
                cove_net::dns::Answer::Addresses(a) if !a.is_empty() => a[0],
                _ => {
                    return Ok(Err(unreachable(format!(
                        "{host} does not resolve in the VPC"
                    ))))
                }
            };
            let timeout = self.settings.connect_timeout;
            let pulled = match self.pull_request(job, image, &host, address.into()) {
                Some((request, tls)) => cove_net::netns::run_in(&ns, move || {
                    cove_host::pull::pull(&request.as_pull(), tls, timeout).map(|bytes| {
                        tracing::debug!(bytes, "pulled the training image through the job's VPC");
                    })
                })?,
                None => {
                    let target = std::net::SocketAddr::from((address, 443));
                    cove_net::netns::run_in(&ns, move || {
                        std::net::TcpStream::connect_timeout(&target, timeout)
                            .map(drop)
                            .map_err(|e| format!("connecting to {target}: {e}"))
                    })?
                }
            };
            if let Err(e) = pulled {
                return Ok(Err(unreachable(format!(
                    "{e} (from {} in {})",
                    eni.id, eni.subnet_id
                ))));
            }
        }
        Ok(Ok(()))
    }

    /// What a host pulls for `image` from the registry at `address`, and
    /// the TLS configuration that trusts it; `None` when the image is not in
    /// Cove's registry or Cove has no CA bundle.
    fn pull_request(
        &self,
        job: &SageMakerJob,
        image: &str,
        host: &str,
        address: std::net::IpAddr,
    ) -> Option<(OwnedPull, std::sync::Arc<cove_tls::rustls::ClientConfig>)> {
        let registry = self.settings.registry.as_ref()?;
        let resolved = registry.resolve(image).ok()?;
        let tls = cove_tls::client_config(self.settings.ca_bundle.as_deref()?).ok()?;
        let caller = job.session_access_key.as_deref().unwrap_or(REQUESTER);
        let request = OwnedPull {
            host: host.to_string(),
            address,
            repository: resolved.repository,
            manifest: resolved.digest.to_string(),
            blobs: resolved.blobs.iter().map(ToString::to_string).collect(),
            authorization: registry.basic_authorization(&job.account_id, caller),
        };
        Some((request, tls))
    }

    fn download(&self, job: &SageMakerJob) -> anyhow::Result<Stepped> {
        if self.stopped_early(job)? {
            return Ok(Ok(()));
        }
        self.wait_for_restored_network()?;
        if let Err(f) = self.registry_through_vpc(job)? {
            return Ok(Err(f));
        }
        self.attach_volumes(job);
        let sources = download_plan(job);
        // Output directories exist before the program starts, as on AWS.
        let mut dirs: Vec<String> = vec![
            "input/config".into(),
            "input/data".into(),
            "model".into(),
            "output/data".into(),
            "output/intermediate".into(),
            "code".into(),
        ];
        if job.kind == JobKind::Processing {
            dirs.push("processing".into());
            dirs.extend(upload_plan(job).into_iter().filter_map(|u| match u.kind {
                UploadKind::Tree { dir, .. } => Some(dir),
                UploadKind::Archive { .. } => None,
            }));
        }
        let hosts = job.hosts.len();
        let region = job.region.clone();
        let role = job.request.role_arn().to_string();
        let results = self.on_each_host(job, move |i, host_dir, client| {
            let ml = host_dir.join("ml");
            for dir in &dirs {
                std::fs::create_dir_all(ml.join(dir)).map_err(TransferError::from_io)?;
            }
            for source in &sources {
                fetch(client, source, &ml, i, hosts, &region, &role)?;
            }
            Ok(())
        });
        for r in results {
            match r {
                Ok(()) => {}
                Err(TransferError::Network(e)) => {
                    tracing::info!(job = %job.name, error = %e, "download could not reach S3");
                    return Ok(Err(Failure(DATA_DOWNLOAD_FAILED.into())));
                }
                Err(TransferError::Service {
                    status,
                    code,
                    message,
                }) if code == "NoObjects" => {
                    let _ = status;
                    return Ok(Err(Failure(message)));
                }
                Err(TransferError::Service {
                    status,
                    code,
                    message,
                }) => {
                    return Ok(Err(Failure(format!(
                        "ClientError: Data download failed:Failed to download data. {code} ({status}): {message}"
                    ))))
                }
                Err(TransferError::DiskFull) => {
                    return Ok(Err(Failure(DATA_DOWNLOAD_DISK_FULL.into())));
                }
                Err(TransferError::Local(e)) => anyhow::bail!("preparing the job's files: {e}"),
            }
        }
        if let Some(archive) = contract::submit_directory(job) {
            for host in &job.hosts {
                let ml = self.host_dir(job, &host.name).join("ml");
                let file = std::fs::File::open(ml.join("code/.sourcedir.tar.gz"))?;
                tar::Archive::new(flate2::read::GzDecoder::new(file))
                    .unpack(ml.join("code"))
                    .map_err(|e| anyhow::anyhow!("unpacking {archive}: {e}"))?;
                std::fs::remove_file(ml.join("code/.sourcedir.tar.gz"))?;
            }
        }
        if let Err(f) = self.mount_file_systems(job) {
            return Ok(Err(f));
        }
        self.update(&job.key(), |j| {
            let now = now_rfc3339();
            j.phase = JobPhase::Running;
            if j.kind == JobKind::Training {
                j.transition(
                    SecondaryStatus::Training,
                    "Training image download completed. Training in progress.",
                    &now,
                );
            }
        })?;
        Ok(Ok(()))
    }

    /// Mounts the job's channels on EFS on every host, through the host's
    /// ENI (a file-system channel needs a `VpcConfig`, so each host has one).
    fn mount_file_systems(&self, job: &SageMakerJob) -> Result<(), Failure> {
        if file_systems::fs_channels(job).is_empty() {
            return Ok(());
        }
        let world = self.store.snapshot();
        let owner_of = |id: &str| self.store.owner_of::<cove_model::efs::FileSystem>(id);
        for (host, ns) in job.hosts.iter().zip(self.host_netns(job)) {
            let eni = host
                .eni_id
                .as_ref()
                .and_then(|e| world.network_interfaces.get(e));
            let (Some(eni), Some(ns)) = (eni, ns) else {
                return Err(Failure(
                    "ClientError: A FileSystemDataSource needs the job's network interfaces, and this host has none.".into(),
                ));
            };
            let host_dir = self.host_dir(job, &host.name);
            std::fs::create_dir_all(host_dir.join("ml/input/data"))
                .map_err(|e| Failure(format!("InternalServerError: {e}")))?;
            file_systems::mount_host(
                &self.settings.runner,
                &world,
                &owner_of,
                job,
                &host_dir,
                eni,
                &format!("{}/{ns}", cove_net::netns::NETNS_DIR),
                self.settings.connect_timeout,
            )
            .map_err(|reason| {
                for h in &job.hosts {
                    cove_host::efs::unmount_all(&self.host_dir(job, &h.name).join("efs"));
                }
                Failure(reason)
            })?;
        }
        Ok(())
    }

    /// Gives each host its ML storage volume of `VolumeSizeInGB`.
    fn attach_volumes(&self, job: &SageMakerJob) {
        let Some(size) = job.request.volume_size_gb() else {
            return;
        };
        for host in &job.hosts {
            cove_host::volume::attach_or_say(&self.host_dir(job, &host.name), size);
        }
    }

    // ---- Running ----

    fn root_fs(&self, job: &SageMakerJob) -> Result<RootFs, Failure> {
        let image = job.request.image().unwrap_or_default();
        let puller = cove_host::Puller {
            account: job.account_id.clone(),
            access_key: job.session_access_key.clone().unwrap_or_default(),
        };
        let missing = match cove_host::image_root(&self.settings, image, &puller) {
            Ok(root) => return Ok(RootFs::Image(root)),
            Err(why) => why,
        };
        let script_mode = match &job.request {
            JobRequest::Training(r) => {
                contract::script_program(job).is_some()
                    || r.algorithm_specification
                        .as_ref()
                        .is_some_and(|a| a.container_entrypoint.is_some())
            }
            JobRequest::Processing(r) => {
                r.app_specification.container_entrypoint.is_some()
                    || contract::is_clarify_image(image)
            }
        };
        if script_mode {
            return Ok(RootFs::Host);
        }
        Err(Failure(format!(
            "ClientError: The image {image} is not available to Cove ({missing}). Push it to Cove's registry (docker or skopeo after `aws ecr get-login-password`, or `cove image-import`), or run a framework image in script mode (the sagemaker_program hyperparameter, or a ContainerEntrypoint)."
        )))
    }

    fn contract_for(&self, job: &SageMakerJob, host: &str) -> HostContract {
        let credentials = self.session(job).map(ContainerCredentials::from);
        let (instance_type, _) = job.request.cluster();
        let (cpus, _) = instance::resources(&instance_type).unwrap_or((1.0, 1.0));
        match job.kind {
            JobKind::Training => contract::training(job, host, cpus, credentials.as_ref()),
            JobKind::Processing => contract::processing(job, host, credentials.as_ref()),
        }
    }

    fn launch(
        &self,
        job: &SageMakerJob,
        index: usize,
        ns: Option<String>,
    ) -> anyhow::Result<Result<Container, Failure>> {
        let host = &job.hosts[index].name;
        let dir = self.host_dir(job, host);
        let state = dir.join("state");
        if let Some(c) = Container::adopt(&state)? {
            return Ok(Ok(c));
        }
        let (instance_type, _) = job.request.cluster();
        let gpus = instance::gpus(&instance_type);
        if gpus > 0 && !instance::host_has_gpus() {
            // Said in the job's log, where its own output goes.
            std::fs::create_dir_all(&dir)?;
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("container.log"))?;
            std::io::Write::write_all(
                &mut log,
                format!("cove: {instance_type} has {gpus} GPU(s) on AWS; this host has none, so the job runs on CPU (SM_NUM_GPUS=0)\n").as_bytes(),
            )?;
        }
        let root = match self.root_fs(job) {
            Ok(RootFs::Image(image)) => RootFs::Image(overlay(&image, &dir)?),
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let c = self.contract_for(job, host);
        if c.argv.is_empty() {
            return Ok(Err(Failure(
                "ClientError: AppSpecification has no ContainerEntrypoint and the image is not imported, so there is nothing to run.".into(),
            )));
        }
        let world = self.store.snapshot();
        let mut hosts_file = String::from("127.0.0.1\tlocalhost\n");
        for h in &job.hosts {
            if let Some(ip) = h
                .eni_id
                .as_ref()
                .and_then(|e| world.network_interfaces.get(e))
                .map(|e| e.private_ip)
            {
                hosts_file.push_str(&format!("{ip}\t{}\n", h.name));
            }
        }
        let kind = match job.kind {
            JobKind::Training => "train",
            JobKind::Processing => "proc",
        };
        let launched = launch_host(
            &self.settings,
            HostLaunch {
                // The ARN's hash keeps jobs of one name in several
                // accounts or regions in cgroups of their own.
                id: format!(
                    "{kind}-{}-{:08x}-{host}",
                    job.name,
                    cove_model::ids::fnv64(&job.arn) & 0xffff_ffff
                ),
                dir: &dir,
                root,
                contract: c,
                hostname: host.clone(),
                hosts_file,
                isolated: job.request.network_isolation(),
                extra_binds: file_systems::binds(job, &dir),
                netns: ns,
                instance_type: &instance_type,
            },
        );
        match launched {
            Ok(c) => Ok(Ok(c)),
            Err(e) => cove_host::launch::program_fault(e).map(|why| {
                Err(Failure(format!(
                    "ClientError: The container could not run its program: {why}."
                )))
            }),
        }
    }

    fn run(&self, job: &SageMakerJob) -> anyhow::Result<Stepped> {
        let key = job.key();
        let mut containers = Vec::new();
        for (i, ns) in self.host_netns(job).into_iter().enumerate() {
            match self.launch(job, i, ns)? {
                Ok(c) => containers.push(c),
                Err(failed) => {
                    containers.iter().for_each(Container::kill);
                    return Ok(Err(failed));
                }
            }
        }
        let mut shippers: Vec<LogShipper> = job
            .hosts
            .iter()
            .map(|h| {
                LogShipper::new(&self.host_dir(job, &h.name), || {
                    let epoch = time::OffsetDateTime::now_utc().unix_timestamp();
                    format!("{}/{}-{epoch}", job.name, h.name)
                })
            })
            .collect();
        // A negative value reads as none, as JSON's `as_u64` read it.
        let max_runtime = match &job.request {
            JobRequest::Training(r) => r
                .stopping_condition
                .as_ref()
                .and_then(|s| s.max_runtime_in_seconds),
            JobRequest::Processing(r) => r
                .stopping_condition
                .as_ref()
                .map(|s| s.max_runtime_in_seconds),
        }
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(86_400);
        let started = job
            .start_time
            .as_deref()
            .map(|s| {
                u64::try_from(cove_sagemaker::common::seconds_between(s, &now_rfc3339()))
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(max_runtime.saturating_sub(started));
        let mut ending: Option<(Outcome, Instant)> = None;
        // The first host that failed on its own: the job fails with its
        // reason, and the other hosts are stopped, as on AWS.
        let mut failed_host: Option<usize> = None;
        let mut kill_others_at = None;
        loop {
            for s in &mut shippers {
                s.ship(
                    &self.logs,
                    &job.region,
                    &job.account_id,
                    job.kind.log_group(),
                );
            }
            let statuses: Vec<Status> = containers.iter().map(Container::status).collect();
            if statuses.iter().all(|s| !matches!(s, Status::Running)) {
                for s in &mut shippers {
                    s.ship(
                        &self.logs,
                        &job.region,
                        &job.account_id,
                        job.kind.log_group(),
                    );
                }
                containers.iter().for_each(|c| {
                    let _ = c.cleanup();
                });
                return self.after_containers(job, &statuses, failed_host, ending.map(|(o, _)| o));
            }
            if failed_host.is_none() && ending.is_none() {
                failed_host = statuses
                    .iter()
                    .position(|s| !matches!(s, Status::Running | Status::Exited(0)));
                if failed_host.is_some() {
                    containers.iter().for_each(Container::terminate);
                    kill_others_at = Some(Instant::now() + self.settings.stop_grace);
                }
            }
            if let Some(at) = kill_others_at {
                if Instant::now() >= at {
                    containers.iter().for_each(Container::kill);
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            match &ending {
                None => {
                    let stop = self.job(&key).is_some_and(|j| j.stop_requested);
                    let outcome = if stop {
                        Some(Outcome::Stopped)
                    } else if Instant::now() >= deadline {
                        Some(Outcome::MaxRuntimeExceeded)
                    } else {
                        None
                    };
                    if let Some(o) = outcome {
                        tracing::info!(job = %job.name, outcome = o.as_str(), "stopping containers");
                        containers.iter().for_each(Container::terminate);
                        ending = Some((o, Instant::now() + self.settings.stop_grace));
                    }
                }
                Some((_, kill_at)) if Instant::now() >= *kill_at => {
                    containers.iter().for_each(Container::kill);
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn after_containers(
        &self,
        job: &SageMakerJob,
        statuses: &[Status],
        failed_host: Option<usize>,
        ending: Option<Outcome>,
    ) -> anyhow::Result<Stepped> {
        let key = job.key();
        if ending.is_none() {
            let failed = failed_host
                .or_else(|| {
                    statuses
                        .iter()
                        .position(|s| !matches!(s, Status::Exited(0)))
                })
                .map(|i| (i, &statuses[i]));
            if let Some((i, status)) = failed {
                let failure_file = self
                    .host_dir(job, &job.hosts[i].name)
                    .join("ml/output/failure");
                let failure = std::fs::read_to_string(failure_file)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty());
                let code = match status {
                    Status::Exited(c) => format!("exit code: {c}"),
                    Status::Signaled(s) => format!("killed by signal {s}"),
                    Status::Running => "still running".to_string(),
                };
                let reason = match (job.kind, &failure) {
                    // A built-in algorithm blames the input as SageMaker's
                    // own algorithms do (`ClientError: ...`).
                    (JobKind::Training, Some(f)) if f.starts_with("ClientError: ") => f.clone(),
                    (JobKind::Training, Some(f)) => format!("AlgorithmError: {f}"),
                    (JobKind::Training, None) => {
                        format!("AlgorithmError: the training container failed ({code})")
                    }
                    (JobKind::Processing, _) => {
                        "AlgorithmError: See job logs for more information".to_string()
                    }
                };
                let exit_message = failure.clone().unwrap_or_else(|| code.clone());
                self.update(&key, |j| {
                    if j.kind == JobKind::Processing {
                        j.exit_message = Some(exit_message.clone());
                    }
                })?;
                return Ok(Err(Failure(reason)));
            }
        }
        let outcome = ending.unwrap_or(Outcome::Completed);
        self.update(&key, |j| {
            let now = now_rfc3339();
            j.phase = JobPhase::Uploading;
            j.outcome = Some(outcome);
            if j.kind == JobKind::Training {
                j.transition(
                    SecondaryStatus::Uploading,
                    "Uploading generated training model",
                    &now,
                );
            }
        })?;
        Ok(Ok(()))
    }

    // ---- Uploading ----

    fn upload(&self, job: &SageMakerJob) -> anyhow::Result<Stepped> {
        self.wait_for_restored_network()?;
        let outcome = job.outcome.unwrap_or(Outcome::Completed);
        let plan = upload_plan(job);
        let results = self.on_each_host(job, move |i, host_dir, client| {
            let ml = host_dir.join("ml");
            for item in plan.iter().filter(|u| u.host.is_none_or(|h| h == i)) {
                put(client, item, &ml)?;
            }
            Ok(())
        });
        for r in results {
            match r {
                Ok(()) => {}
                Err(TransferError::Local(e)) => anyhow::bail!("packing the job's outputs: {e}"),
                Err(e) => {
                    tracing::info!(job = %job.name, error = %e, "upload failed");
                    let reason = match e {
                        TransferError::Network(_) => ARTIFACT_UPLOAD_FAILED.to_string(),
                        other => format!("ClientError: Artifact upload failed:{other}"),
                    };
                    return Ok(Err(Failure(reason)));
                }
            }
        }
        let artifacts = (job.kind == JobKind::Training).then(|| model_artifact_uri(job));
        self.update(&job.key(), |j| {
            let now = now_rfc3339();
            j.model_artifacts = artifacts.clone();
            let (status, secondary, message) = match (outcome, j.kind) {
                (Outcome::Completed, JobKind::Training) => (
                    JobStatus::Completed,
                    SecondaryStatus::Completed,
                    "Training job completed",
                ),
                (Outcome::Completed, JobKind::Processing) => (
                    JobStatus::Completed,
                    SecondaryStatus::Completed,
                    "Processing job completed",
                ),
                (Outcome::Stopped, _) => (
                    JobStatus::Stopped,
                    SecondaryStatus::Stopped,
                    stopped_message(j.kind),
                ),
                (Outcome::MaxRuntimeExceeded, _) => (
                    JobStatus::Stopped,
                    SecondaryStatus::MaxRuntimeExceeded,
                    "Job stopped because it exceeded MaxRuntimeInSeconds",
                ),
            };
            j.finish(status, secondary, message, &now);
            if let (Some(s), Some(e)) = (&j.start_time, &j.end_time) {
                j.billable_seconds = Some(cove_sagemaker::common::seconds_between(s, e));
            }
        })?;
        Ok(Ok(()))
    }

    // ---- Cleanup ----

    fn cleanup(&self, job: &SageMakerJob) -> anyhow::Result<Stepped> {
        for host in &job.hosts {
            let state = self.host_dir(job, &host.name).join("state");
            if let Ok(Some(c)) = Container::adopt(&state) {
                c.kill();
                let _ = c.cleanup();
            }
        }
        let key = job.key();
        // The flow-log collector reads the kernel's counters once a second;
        // an ENI deleted sooner would take its last packets with it.
        let world = self.store.snapshot();
        let covered = job
            .hosts
            .iter()
            .filter_map(|h| h.eni_id.as_ref())
            .filter_map(|e| world.network_interfaces.get(e))
            .any(|eni| world.flow_logs.values().any(|f| f.covers(eni)));
        if covered {
            std::thread::sleep(Duration::from_millis(2500));
        }
        self.store.write(|tx| {
            let Some(mut j) = tx.world.sagemaker_jobs.get(&key).map(|x| (**x).clone()) else {
                return Ok(());
            };
            for h in &j.hosts {
                release(tx, h.eni_id.as_deref(), None);
            }
            release(tx, None, j.session_access_key.take().as_deref());
            j.phase = JobPhase::CleanedUp;
            tx.put(j);
            Ok(())
        })?;
        let dir = crate::workload_dir(&self.settings.jobs_dir, &job.arn);
        for host in &job.hosts {
            // Before anything under the directory is removed: below a live
            // mount are the file system's own files.
            cove_host::efs::unmount_all(&dir.join(&host.name).join("efs"));
            unmount(&dir.join(&host.name).join("rootfs"));
            cove_host::volume::detach(&dir.join(&host.name))?;
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(Ok(()))
    }
}

/// One thing to copy in: an S3 prefix, a manifest, or one archive.
#[derive(Debug, Clone)]
struct Source {
    uri: String,
    /// `S3Prefix` or `ManifestFile`.
    data_type: String,
    /// Where under `/opt/ml` the objects land.
    local: String,
    sharded: bool,
    /// A single object saved under this exact name (the source archive).
    exact_file: Option<String>,
}

fn download_plan(job: &SageMakerJob) -> Vec<Source> {
    let mut out = Vec::new();
    match &job.request {
        JobRequest::Training(r) => {
            for c in r.input_data_config.iter().flatten() {
                // Channels on file systems are mounted, not copied.
                let Some(s3) = c.data_source.s3_data_source.as_ref() else {
                    continue;
                };
                let s3 = Some(s3);
                out.push(Source {
                    uri: s3.map(|s| s.s3_uri.clone()).unwrap_or_default(),
                    data_type: s3
                        .map_or("S3Prefix", |s| s.s3_data_type.as_str())
                        .to_string(),
                    local: format!("input/data/{}", c.channel_name),
                    sharded: s3.and_then(|s| s.s3_data_distribution_type.as_deref())
                        == Some("ShardedByS3Key"),
                    exact_file: None,
                });
            }
            if let Some(uri) = contract::submit_directory(job) {
                out.push(Source {
                    uri,
                    data_type: "S3Prefix".into(),
                    local: "code".into(),
                    sharded: false,
                    exact_file: Some(".sourcedir.tar.gz".into()),
                });
            }
        }
        JobRequest::Processing(r) => {
            for input in r.processing_inputs.iter().flatten() {
                let s3 = input.s3_input.as_ref();
                let local = s3
                    .and_then(|s| s.local_path.as_deref())
                    .unwrap_or_default()
                    .trim_start_matches("/opt/ml/")
                    .to_string();
                out.push(Source {
                    uri: s3.map(|s| s.s3_uri.clone()).unwrap_or_default(),
                    data_type: s3
                        .map_or("S3Prefix", |s| s.s3_data_type.as_str())
                        .to_string(),
                    local,
                    sharded: s3.and_then(|s| s.s3_data_distribution_type.as_deref())
                        == Some("ShardedByS3Key"),
                    exact_file: None,
                });
            }
        }
    }
    out
}

fn no_objects(uri: &str, region: &str, role: &str, bucket: &str) -> TransferError {
    TransferError::Service {
        status: 404,
        code: "NoObjects".into(),
        message: format!(
            "ClientError: No S3 objects found under S3 URL \"{uri}\" given in input data source. Please ensure that the bucket exists in the selected region ({region}), that objects exist under that S3 prefix, and that the role \"{role}\" has \"s3:ListBucket\" permissions on bucket \"{bucket}\"."
        ),
    }
}

/// The key's path below the prefix it was listed under (a prefix naming one
/// object yields that object's file name).
fn relative_key<'k>(key: &'k str, prefix: &str) -> &'k str {
    let rel = key
        .strip_prefix(prefix)
        .unwrap_or(key)
        .trim_start_matches('/');
    if rel.is_empty() {
        key.rsplit('/').next().unwrap_or(key)
    } else {
        rel
    }
}

fn fetch(
    client: &S3Client,
    source: &Source,
    ml: &Path,
    host: usize,
    hosts: usize,
    region: &str,
    role: &str,
) -> Result<(), TransferError> {
    let (bucket, prefix) = parse_s3_uri(&source.uri)
        .ok_or_else(|| TransferError::Local(format!("not an S3 URI: {}", source.uri)))?;
    let dest = ml.join(&source.local);
    std::fs::create_dir_all(&dest).map_err(TransferError::from_io)?;
    if let Some(name) = &source.exact_file {
        client.get_to_file(&bucket, &prefix, &dest.join(name))?;
        return Ok(());
    }
    let objects: Vec<(String, String, String)> = if source.data_type == "ManifestFile" {
        let manifest = dest.join(".manifest");
        client.get_to_file(&bucket, &prefix, &manifest)?;
        let text =
            std::fs::read_to_string(&manifest).map_err(|e| TransferError::Local(e.to_string()))?;
        let _ = std::fs::remove_file(&manifest);
        let entries: Vec<Value> = serde_json::from_str(&text)
            .map_err(|e| TransferError::Local(format!("manifest {}: {e}", source.uri)))?;
        let base = entries
            .first()
            .and_then(|v| v["prefix"].as_str())
            .and_then(parse_s3_uri)
            .ok_or_else(|| {
                TransferError::Local(format!("manifest {} has no prefix", source.uri))
            })?;
        entries
            .iter()
            .skip(1)
            .filter_map(Value::as_str)
            .map(|rel| (base.0.clone(), format!("{}{rel}", base.1), rel.to_string()))
            .collect()
    } else {
        client
            .list(&bucket, &prefix)?
            .into_iter()
            .filter(|(k, _)| !k.ends_with('/'))
            .map(|(k, _)| {
                let rel = relative_key(&k, &prefix).to_string();
                (bucket.clone(), k, rel)
            })
            .collect()
    };
    if objects.is_empty() {
        return Err(no_objects(&source.uri, region, role, &bucket));
    }
    for (n, (b, key, rel)) in objects.iter().enumerate() {
        if source.sharded && n % hosts != host {
            continue;
        }
        client.get_to_file(b, key, &dest.join(rel))?;
    }
    Ok(())
}

/// One thing to copy out.
#[derive(Debug, Clone)]
struct Upload {
    /// Which host uploads it (`None`: every host its own).
    host: Option<usize>,
    kind: UploadKind,
}

#[derive(Debug, Clone)]
enum UploadKind {
    /// A directory packed as one `.tar.gz` object, skipped when empty unless `always`.
    Archive {
        dir: String,
        uri: String,
        always: bool,
    },
    /// Every file under a directory, each as its own object below the URI.
    Tree { dir: String, uri: String },
}

fn output_prefix(job: &SageMakerJob) -> String {
    let base = job
        .request
        .training()
        .map(|r| r.output_data_config.s3_output_path.as_str())
        .unwrap_or_default()
        .trim_end_matches('/');
    format!("{base}/{}/output", job.name)
}

fn model_artifact_uri(job: &SageMakerJob) -> String {
    format!("{}/model.tar.gz", output_prefix(job))
}

fn upload_plan(job: &SageMakerJob) -> Vec<Upload> {
    match job.kind {
        JobKind::Training => vec![
            Upload {
                host: Some(0),
                kind: UploadKind::Archive {
                    dir: "model".into(),
                    uri: model_artifact_uri(job),
                    always: true,
                },
            },
            Upload {
                host: Some(0),
                kind: UploadKind::Archive {
                    dir: "output/data".into(),
                    uri: format!("{}/output.tar.gz", output_prefix(job)),
                    always: false,
                },
            },
        ],
        JobKind::Processing => job
            .request
            .processing()
            .and_then(|r| r.processing_output_config.as_ref())
            .into_iter()
            .flat_map(|c| &c.outputs)
            .map(|o| {
                let s3 = o.s3_output.as_ref();
                Upload {
                    host: None,
                    kind: UploadKind::Tree {
                        dir: s3
                            .and_then(|s| s.local_path.as_deref())
                            .unwrap_or_default()
                            .trim_start_matches("/opt/ml/")
                            .to_string(),
                        uri: s3.map(|s| s.s3_uri.clone()).unwrap_or_default(),
                    },
                }
            })
            .collect(),
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

fn put(client: &S3Client, item: &Upload, ml: &Path) -> Result<(), TransferError> {
    let local = TransferError::from_io;
    match &item.kind {
        UploadKind::Archive { dir, uri, always } => {
            let src = ml.join(dir);
            if !always && files_under(&src).is_empty() {
                return Ok(());
            }
            let (bucket, key) = parse_s3_uri(uri)
                .ok_or_else(|| TransferError::Local(format!("not an S3 URI: {uri}")))?;
            // Packed on the ML storage volume, as on AWS: a volume too full
            // for the archive fails the upload with "Insufficient disk space".
            let archive = ml.join(format!(".cove-{}.tar.gz", dir.replace('/', "-")));
            {
                let file = std::fs::File::create(&archive).map_err(local)?;
                let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
                let mut tar = tar::Builder::new(gz);
                std::fs::create_dir_all(&src).map_err(local)?;
                tar.append_dir_all(".", &src).map_err(local)?;
                tar.into_inner().map_err(local)?.finish().map_err(local)?;
            }
            let sent = client.put_file(&bucket, &key, &archive);
            let _ = std::fs::remove_file(&archive);
            sent.map(drop)
        }
        UploadKind::Tree { dir, uri } => {
            let (bucket, prefix) = parse_s3_uri(uri)
                .ok_or_else(|| TransferError::Local(format!("not an S3 URI: {uri}")))?;
            let src = ml.join(dir);
            for file in files_under(&src) {
                let rel = file.strip_prefix(&src).unwrap_or(&file).to_string_lossy();
                let key = format!("{}/{rel}", prefix.trim_end_matches('/'));
                client.put_file(&bucket, key.trim_start_matches('/'), &file)?;
            }
            Ok(())
        }
    }
}

/// A [`cove_host::pull::Pull`] that owns its strings, to move into the
/// thread that enters a host's namespace.
struct OwnedPull {
    host: String,
    address: std::net::IpAddr,
    repository: String,
    manifest: String,
    blobs: Vec<String>,
    authorization: String,
}

impl OwnedPull {
    fn as_pull(&self) -> cove_host::pull::Pull<'_> {
        cove_host::pull::Pull {
            host: &self.host,
            address: self.address,
            repository: &self.repository,
            manifest: &self.manifest,
            blobs: &self.blobs,
            authorization: &self.authorization,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_land_below_their_prefix() {
        assert_eq!(relative_key("data/train/a.csv", "data/train"), "a.csv");
        assert_eq!(relative_key("data/train/x/a.csv", "data/train/"), "x/a.csv");
        assert_eq!(relative_key("code/run.py", "code/run.py"), "run.py");
    }
}
