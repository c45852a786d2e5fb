//! The instances of training and processing jobs, on the host each is
//! placed on: its share of the download (through its own ENI), its
//! container (logs shipped as it runs, stopped when the job says so), its
//! share of the upload, and its cleanup. Every Cove process runs one
//! [`Instances`] for the instances placed on its host — `cove serve` for
//! the control plane's, `cove agent` for its own — and each phase's work
//! ends with a report in the job's document, which the job's driver on the
//! control plane ([`crate::training`]) waits for before it moves the job
//! on. The work is driven by the store, so after a restart an instance
//! resumes where its report says it was: a running container is adopted,
//! an interrupted transfer starts again.

use crate::contract::{self, ContainerCredentials, HostContract};
use crate::driver::Failure;
use crate::file_systems;
use crate::session_of;
use crate::workers::{watch_store, Every, Workers, LEFTOVER_SWEEP};
use cove_host::eni_netns;
use cove_host::launch::{launch_host, HostLaunch};
use cove_host::logs::{LogShipper, LogSink};
use cove_host::s3::{joined, spawn_in_network};
use cove_host::s3::{parse_s3_uri, S3Client, TransferError};
use cove_host::Settings;
use cove_model::hosts::Locality;
use cove_model::instance;
use cove_model::jobs::{
    ContainerEnd, InstanceReport, InstanceResult, JobKind, JobPhase, JobRequest, SageMakerJob,
};
use cove_model::world::World;
use cove_runtime::overlay::{overlay, unmount};
use cove_runtime::{Container, RootFs, Status};
use cove_store::Store;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DATA_DOWNLOAD_FAILED: &str = "ClientError: Data download failed:Please ensure that the subnet's route table has a route to an S3 VPC endpoint or a NAT device, and both the security groups and the subnet's network ACL allow outbound traffic to S3.";
/// AWS's reasons when the ML storage volume (`VolumeSizeInGB`) is full.
pub const DATA_DOWNLOAD_DISK_FULL: &str =
    "ClientError: Data download failed:Insufficient disk space";
pub const ARTIFACT_UPLOAD_FAILED: &str = "ClientError: Artifact upload failed:Please ensure that the subnet's route table has a route to an S3 VPC endpoint or a NAT device, and both the security groups and the subnet's network ACL allow outbound traffic to S3";

/// Runs the instances placed on this host.
pub struct Instances {
    store: Arc<Store>,
    settings: Settings,
    logs: Arc<dyn LogSink>,
    here: Locality,
    workers: Workers,
}

impl Instances {
    pub fn new(
        store: Arc<Store>,
        settings: Settings,
        logs: Arc<dyn LogSink>,
        here: Locality,
    ) -> Arc<Instances> {
        Arc::new(Instances {
            store,
            settings,
            logs,
            here,
            workers: Workers::default(),
        })
    }

    /// Watches the store and gives every instance placed here that has not
    /// reported on its job's phase a worker; removes what instances that no
    /// longer run here left behind, at start and then every
    /// [`LEFTOVER_SWEEP`].
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let me = self.clone();
        let sweep = Every::new(LEFTOVER_SWEEP);
        watch_store(self.store.clone(), "cove-instances", move |world| {
            for job in world.sagemaker_jobs.values() {
                if !has_instance_work(job.phase) {
                    continue;
                }
                for (i, host) in job.hosts.iter().enumerate() {
                    if !me.here.runs(host.placed_on.as_deref())
                        || host.reported(job.phase).is_some()
                    {
                        continue;
                    }
                    let key = job.key();
                    let worker = me.clone();
                    let thread = format!("{}-{}", job.name, host.name);
                    me.workers
                        .run_once(&format!("{key}#{i}"), thread, move || worker.work(&key, i));
                }
            }
            if sweep.due() {
                me.remove_leftovers(world);
            }
        })
    }

    /// Does instance `i`'s part of each phase of the job under `key` until
    /// it has reported on the job's current one.
    fn work(&self, key: &str, i: usize) {
        loop {
            let Some(job) = self.job(key) else {
                return;
            };
            let phase = job.phase;
            if !has_instance_work(phase)
                || job.hosts.get(i).is_none_or(|h| h.reported(phase).is_some())
            {
                return;
            }
            let result = match phase {
                JobPhase::Downloading => self.download(&job, i),
                JobPhase::Running => self.run(&job, i),
                JobPhase::Uploading => self.upload(&job, i).map(Some),
                _ => self.cleanup(&job, i).map(Some),
            };
            let reported = match result {
                Ok(Some(result)) => self.report(key, i, phase, result),
                // The job left the phase while the instance worked.
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = reported {
                tracing::error!(job = %job.name, instance = %job.hosts[i].name, error = %e, "instance step failed; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }

    fn job(&self, key: &str) -> Option<SageMakerJob> {
        self.store
            .snapshot()
            .sagemaker_jobs
            .get(key)
            .map(|x| (**x).clone())
    }

    /// Stores instance `i`'s report on `phase`, unless the job has left it.
    fn report(
        &self,
        key: &str,
        i: usize,
        phase: JobPhase,
        result: InstanceResult,
    ) -> anyhow::Result<()> {
        self.store.write(|tx| {
            let mut job = tx.cloned::<SageMakerJob>(key)?;
            if job.phase != phase {
                return Ok(());
            }
            if let Some(host) = job.hosts.get_mut(i) {
                host.report = Some(InstanceReport {
                    phase,
                    result: result.clone(),
                });
            }
            tx.put(job);
            Ok(())
        })?;
        Ok(())
    }

    fn host_dir(&self, job: &SageMakerJob, i: usize) -> PathBuf {
        instance_dir(&self.settings.jobs_dir, job, i)
    }

    /// The instance's ENI namespace, or `None` for a job outside a VPC.
    fn netns(&self, job: &SageMakerJob, i: usize) -> Option<String> {
        eni_netns(&self.settings, job.hosts[i].eni_id.as_deref())
    }

    /// Runs `f` with an S3 client inside the instance's network, with the
    /// job's role session.
    fn transfer(
        &self,
        job: &SageMakerJob,
        i: usize,
        f: impl FnOnce(&S3Client) -> Result<(), TransferError> + Send + 'static,
    ) -> Result<(), TransferError> {
        joined(spawn_in_network(
            &self.settings,
            &job.region,
            self.netns(job, i),
            session_of(&self.store, job.session_access_key.as_deref()).as_ref(),
            f,
        ))
    }

    /// Waits until this host's data plane has made the world as it is now
    /// real (after a restart, all of it; else the instance's ENI), so the
    /// first packets meet their rules.
    fn wait_for_network(&self) -> anyhow::Result<()> {
        crate::wait_for_network_here(&self.store, &self.settings, "job's ENIs")
    }

    // ---- Downloading ----

    fn download(&self, job: &SageMakerJob, i: usize) -> anyhow::Result<Option<InstanceResult>> {
        self.wait_for_network()?;
        if let Err(Failure(reason)) = self.registry_through_vpc(job, i)? {
            return Ok(Some(InstanceResult::Failed { reason }));
        }
        let host_dir = self.host_dir(job, i);
        if let Some(size) = job.request.volume_size_gb() {
            cove_host::volume::attach_or_say(&host_dir, size);
        }
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
        let ml = host_dir.join("ml");
        let fetched = self.transfer(job, i, move |client| {
            for dir in &dirs {
                std::fs::create_dir_all(ml.join(dir)).map_err(TransferError::from_io)?;
            }
            for source in &sources {
                fetch(client, source, &ml, i, hosts, &region, &role)?;
            }
            Ok(())
        });
        let reason = match fetched {
            Ok(()) => None,
            Err(TransferError::Network(e)) => {
                tracing::info!(job = %job.name, error = %e, "download could not reach S3");
                Some(DATA_DOWNLOAD_FAILED.to_string())
            }
            Err(TransferError::Service { code, message, .. }) if code == "NoObjects" => {
                Some(message)
            }
            Err(TransferError::Service {
                status,
                code,
                message,
            }) => Some(format!(
                "ClientError: Data download failed:Failed to download data. {code} ({status}): {message}"
            )),
            Err(TransferError::DiskFull) => Some(DATA_DOWNLOAD_DISK_FULL.to_string()),
            Err(TransferError::Local(e)) => anyhow::bail!("preparing the job's files: {e}"),
        };
        if let Some(reason) = reason {
            return Ok(Some(InstanceResult::Failed { reason }));
        }
        if let Some(archive) = contract::submit_directory(job) {
            let ml = host_dir.join("ml");
            let file = std::fs::File::open(ml.join("code/.sourcedir.tar.gz"))?;
            tar::Archive::new(flate2::read::GzDecoder::new(file))
                .unpack(ml.join("code"))
                .map_err(|e| anyhow::anyhow!("unpacking {archive}: {e}"))?;
            std::fs::remove_file(ml.join("code/.sourcedir.tar.gz"))?;
        }
        if let Err(Failure(reason)) = self.mount_file_systems(job, i) {
            return Ok(Some(InstanceResult::Failed { reason }));
        }
        Ok(Some(InstanceResult::Done))
    }

    /// With `TrainingRepositoryAccessMode: Vpc`, the image comes through the
    /// job's own network: the instance pulls it over HTTPS from the address
    /// its VPC's resolver gives for the registry's name (an `ecr.dkr`
    /// endpoint's ENIs with private DNS, else the public address behind the
    /// gateways), manifest and blobs, each checked against its digest
    /// ([`cove_host::pull`]). An agent keeps what it pulled (the container's
    /// root is unpacked from it); the control plane's host drops it (its
    /// registry holds the same bytes). An image that is not in Cove's
    /// registry (script mode on the host's Python) is only checked for a
    /// connection on 443.
    fn registry_through_vpc(
        &self,
        job: &SageMakerJob,
        i: usize,
    ) -> anyhow::Result<Result<(), Failure>> {
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
        let Some(registry_host) = image.split_once('/').map(|(h, _)| h.to_string()) else {
            return Ok(Ok(()));
        };
        let world = self.store.snapshot();
        let unreachable = |why: String| {
            Failure(format!(
                "ClientError: Cannot pull the training image {image} through the job's VPC: {why}. Please ensure that the VPC has interface endpoints for com.amazonaws.{region}.ecr.dkr and com.amazonaws.{region}.ecr.api (or a NAT gateway), and that its security groups and network ACLs allow HTTPS to them.",
                region = job.region
            ))
        };
        let eni = job.hosts[i]
            .eni_id
            .as_ref()
            .and_then(|e| world.network_interfaces.get(e));
        let (Some(eni), Some(ns)) = (eni, self.netns(job, i)) else {
            return Ok(Err(Failure(
                "ClientError: TrainingRepositoryAccessMode Vpc needs the job's VpcConfig.".into(),
            )));
        };
        let address = match cove_net::dns::resolve(&world, &eni.vpc_id, &registry_host) {
            cove_net::dns::Answer::Addresses(a) if !a.is_empty() => a[0],
            _ => {
                return Ok(Err(unreachable(format!(
                    "{registry_host} does not resolve in the VPC"
                ))))
            }
        };
        let timeout = self.settings.connect_timeout;
        let target = std::net::SocketAddr::from((address, 443));
        let pull = job.image_pull.clone().or_else(|| {
            // A job provisioned before its pull was kept (an older Cove).
            let caller = job.session_access_key.as_deref();
            crate::image_pull(&self.settings, image, &job.account_id, caller)
        });
        let request = pull.as_ref().and_then(|pull| {
            let request = cove_host::pull_of(image, pull, target).ok()?;
            let tls = cove_host::registry_tls(&self.settings).ok()?;
            Some((request, tls))
        });
        let pulled = match request {
            Some((request, tls)) => {
                // This host's registry store holds the bytes; an agent keeps
                // them in its cache, from which the root is unpacked.
                let cache = cove_host::blob_cache(&self.settings);
                let on_agent = self.settings.registry.is_none();
                cove_net::netns::run_in(&ns, move || {
                    let keep = match on_agent {
                        false => cove_host::pull::Keep::Nothing,
                        true => cove_host::pull::Keep::All(&cache),
                    };
                    cove_host::pull::pull(&request.as_pull(), keep, tls, timeout).map(|pulled| {
                        tracing::debug!(
                            bytes = pulled.received,
                            "pulled the training image through the job's VPC"
                        );
                    })
                })?
            }
            None => cove_net::netns::run_in(&ns, move || {
                std::net::TcpStream::connect_timeout(&target, timeout)
                    .map(drop)
                    .map_err(|e| format!("connecting to {target}: {e}"))
            })?,
        };
        Ok(pulled.map_err(|e| unreachable(format!("{e} (from {} in {})", eni.id, eni.subnet_id))))
    }

    /// Mounts the job's channels on EFS through the instance's ENI (a
    /// file-system channel needs a `VpcConfig`, so every instance has one).
    fn mount_file_systems(&self, job: &SageMakerJob, i: usize) -> Result<(), Failure> {
        if file_systems::fs_channels(job).is_empty() {
            return Ok(());
        }
        let world = self.store.snapshot();
        let owner_of = |id: &str| self.store.owner_of::<cove_model::efs::FileSystem>(id);
        let eni = job.hosts[i]
            .eni_id
            .as_ref()
            .and_then(|e| world.network_interfaces.get(e));
        let (Some(eni), Some(ns)) = (eni, self.netns(job, i)) else {
            return Err(Failure(
                "ClientError: A FileSystemDataSource needs the job's network interfaces, and this host has none.".into(),
            ));
        };
        let host_dir = self.host_dir(job, i);
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
            cove_host::efs::unmount_all(&host_dir.join("efs"));
            Failure(reason)
        })
    }

    // ---- Running ----

    fn root_fs(&self, job: &SageMakerJob) -> Result<RootFs, Failure> {
        let image = job.request.image().unwrap_or_default();
        let puller = cove_host::Puller {
            account: job.account_id.clone(),
            access_key: job.session_access_key.clone().unwrap_or_default(),
        };
        let world = self.store.snapshot();
        let from_control_plane = job.image_pull.as_ref().map(|p| (p, &*world));
        let missing =
            match cove_host::image_root(&self.settings, image, &puller, from_control_plane) {
                Ok(root) => return Ok(RootFs::Image(root)),
                Err(why) => why,
            };
        match &missing {
            cove_host::NoImage::Absent(why) if script_mode(job) => {
                tracing::info!(job = %job.arn, image, reason = %why, "script mode on the host's root: the image is not in Cove's registry");
                return Ok(RootFs::Host);
            }
            cove_host::NoImage::Broken(why) => return Err(image_broken(image, why)),
            cove_host::NoImage::Absent(_) => {}
        }
        Err(Failure(format!(
            "ClientError: The image {image} is not available to Cove ({missing}). Push it to Cove's registry (docker or skopeo after `aws ecr get-login-password`, or `cove image-import`), or run a framework image in script mode (the sagemaker_program hyperparameter, or a ContainerEntrypoint)."
        )))
    }

    fn contract_for(&self, job: &SageMakerJob, host: &str, gpus: u32) -> HostContract {
        let credentials = session_of(&self.store, job.session_access_key.as_deref())
            .map(ContainerCredentials::from);
        let (instance_type, _) = job.request.cluster();
        let (cpus, _) = instance::resources(&instance_type).unwrap_or((1.0, 1.0));
        match job.kind {
            JobKind::Training => contract::training(job, host, cpus, gpus, credentials.as_ref()),
            JobKind::Processing => contract::processing(job, host, credentials.as_ref()),
        }
    }

    fn launch(&self, job: &SageMakerJob, i: usize) -> anyhow::Result<Result<Container, Failure>> {
        let host = &job.hosts[i].name;
        let dir = self.host_dir(job, i);
        if let Some(c) = Container::adopt(&dir.join("state"))? {
            return Ok(Ok(c));
        }
        let root = match self.root_fs(job) {
            Ok(RootFs::Image(image)) => RootFs::Image(overlay(&image, &dir)?),
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        // Claimed once the image is here (a pull can outlast a claim's
        // grace), and said in the job's log, where its own output goes.
        let (instance_type, _) = job.request.cluster();
        let (gpus, gpu_grant) = cove_host::launch::gpus_for(&self.settings, &instance_type, &dir)?;
        let c = self.contract_for(job, host, gpus);
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
                netns: self.netns(job, i),
                instance_type: &instance_type,
                gpus: gpu_grant,
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

    /// Runs the instance's container until it ends, shipping its log;
    /// terminates it when the job says its containers are to end, and kills
    /// it after the grace period (or at once when the job has left the
    /// Running phase, for instance because another host was lost).
    fn run(&self, job: &SageMakerJob, i: usize) -> anyhow::Result<Option<InstanceResult>> {
        let container = match self.launch(job, i)? {
            Ok(c) => c,
            Err(Failure(reason)) => return Ok(Some(InstanceResult::Failed { reason })),
        };
        let dir = self.host_dir(job, i);
        let host = &job.hosts[i].name;
        tracing::info!(job = %job.name, instance = %host, "the instance's container runs here");
        let mut shipper = LogShipper::new(&dir, || {
            let epoch = time::OffsetDateTime::now_utc().unix_timestamp();
            format!("{}/{host}-{epoch}", job.name)
        });
        let ship = |s: &mut LogShipper| {
            s.ship(
                self.logs.as_ref(),
                &job.region,
                &job.account_id,
                job.kind.log_group(),
            )
        };
        let mut kill_at: Option<Instant> = None;
        loop {
            ship(&mut shipper);
            let end = match container.status() {
                Status::Running => None,
                Status::Exited(c) => Some(ContainerEnd::Exited(c)),
                Status::Signaled(s) => Some(ContainerEnd::Signaled(s)),
            };
            if let Some(end) = end {
                ship(&mut shipper);
                let _ = container.cleanup();
                let failure = std::fs::read_to_string(dir.join("ml/output/failure"))
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty());
                return Ok(Some(InstanceResult::Exited {
                    end,
                    failure,
                    told_to_stop: kill_at.is_some(),
                }));
            }
            // Two fields of the stored job, read without copying it.
            let (running, terminate) = self
                .store
                .snapshot()
                .sagemaker_jobs
                .get(&job.key())
                .map_or((false, false), |j| {
                    (j.phase == JobPhase::Running, j.terminate_containers)
                });
            if !running {
                container.kill();
                kill_at.get_or_insert_with(Instant::now);
                if !container_running(&container) {
                    let _ = container.cleanup();
                    return Ok(None);
                }
            } else if terminate && kill_at.is_none() {
                tracing::info!(job = %job.name, instance = %host, "stopping the container");
                container.terminate();
                kill_at = Some(Instant::now() + self.settings.stop_grace);
            }
            if kill_at.is_some_and(|at| Instant::now() >= at) {
                container.kill();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // ---- Uploading ----

    fn upload(&self, job: &SageMakerJob, i: usize) -> anyhow::Result<InstanceResult> {
        crate::wait_for_restored_network(&self.store, &self.settings)?;
        let plan: Vec<Upload> = upload_plan(job)
            .into_iter()
            .filter(|u| u.host.is_none_or(|h| h == i))
            .collect();
        if plan.is_empty() {
            return Ok(InstanceResult::Done);
        }
        let ml = self.host_dir(job, i).join("ml");
        let sent = self.transfer(job, i, move |client| {
            for item in &plan {
                put(client, item, &ml)?;
            }
            Ok(())
        });
        match sent {
            Ok(()) => Ok(InstanceResult::Done),
            Err(TransferError::Local(e)) => anyhow::bail!("packing the job's outputs: {e}"),
            Err(e) => {
                tracing::info!(job = %job.name, error = %e, "upload failed");
                let reason = match e {
                    TransferError::Network(_) => ARTIFACT_UPLOAD_FAILED.to_string(),
                    other => format!("ClientError: Artifact upload failed:{other}"),
                };
                Ok(InstanceResult::Failed { reason })
            }
        }
    }

    // ---- Cleanup ----

    fn cleanup(&self, job: &SageMakerJob, i: usize) -> anyhow::Result<InstanceResult> {
        remove_instance_dir(&self.host_dir(job, i))?;
        Ok(InstanceResult::Done)
    }

    /// Removes the working files (and kills the container) of every
    /// instance directory here that belongs to no unfinished instance
    /// placed on this host: what a host that was lost and came back, or
    /// stopped in the middle of a cleanup, still holds.
    fn remove_leftovers(&self, world: &World) {
        let mut live = std::collections::HashSet::new();
        for job in world.sagemaker_jobs.values() {
            if job.phase == JobPhase::CleanedUp {
                continue;
            }
            for (i, host) in job.hosts.iter().enumerate() {
                if self.here.runs(host.placed_on.as_deref()) {
                    live.insert(instance_dir(&self.settings.jobs_dir, job, i));
                }
            }
        }
        remove_instances_but(
            &self.settings.jobs_dir,
            &["training-job", "processing-job"],
            &live,
        );
    }
}

/// Removes the instance directories of `kinds` under `jobs_dir`
/// (`<jobs dir>/<account>/<region>/<kind>/<name>/<instance>`) that are not
/// in `live`, with their containers and mounts: what instances that no
/// longer run on this host left (after a crash, or a host that was lost).
pub(crate) fn remove_instances_but(
    jobs_dir: &Path,
    kinds: &[&str],
    live: &std::collections::HashSet<PathBuf>,
) {
    let children = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    for account in children(jobs_dir) {
        for region in children(&account) {
            for kind in kinds {
                for owner_dir in children(&region.join(kind)) {
                    for dir in children(&owner_dir) {
                        if dir.is_dir() && !live.contains(&dir) {
                            tracing::info!(dir = %dir.display(), "removing what an instance no longer here left");
                            if let Err(e) = remove_instance_dir(&dir) {
                                tracing::warn!(dir = %dir.display(), error = %e, "removing an instance's leftovers failed");
                            }
                        }
                    }
                    // Fails while an instance still has its directory.
                    let _ = std::fs::remove_dir(&owner_dir);
                }
            }
        }
    }
}

fn container_running(c: &Container) -> bool {
    c.status() == Status::Running
}

/// Whether instances work in `phase` (the job's driver alone starts a job).
fn has_instance_work(phase: JobPhase) -> bool {
    matches!(
        phase,
        JobPhase::Downloading | JobPhase::Running | JobPhase::Uploading | JobPhase::Done
    )
}

/// The failure of a workload whose image is in Cove's registry but could
/// not be made into its root here: running the script on the host's root
/// instead would fail later with a misleading error (a missing module).
pub(crate) fn image_broken(image: &str, why: &str) -> Failure {
    Failure(format!(
        "InternalServerError: Cove could not prepare the image {image} on this host: {why}"
    ))
}

/// Whether the job runs a script or entry point that needs no image of its
/// own: Cove then runs it on the host's root filesystem.
pub(crate) fn script_mode(job: &SageMakerJob) -> bool {
    match &job.request {
        JobRequest::Training(r) => {
            contract::script_program(job).is_some()
                || r.algorithm_specification
                    .as_ref()
                    .is_some_and(|a| a.container_entrypoint.is_some())
        }
        JobRequest::Processing(r) => {
            r.app_specification.container_entrypoint.is_some()
                || contract::is_clarify_image(job.request.image().unwrap_or_default())
        }
    }
}

/// Where instance `i` of `job` keeps its files on its host.
pub(crate) fn instance_dir(jobs_dir: &Path, job: &SageMakerJob, i: usize) -> PathBuf {
    crate::workload_dir(jobs_dir, &job.arn).join(&job.hosts[i].name)
}

/// Kills the container whose state is under `dir`, unmounts what the
/// instance mounted and removes the directory, then its job's directory
/// once it is empty.
pub(crate) fn remove_instance_dir(dir: &Path) -> anyhow::Result<()> {
    if let Ok(Some(c)) = Container::adopt(&dir.join("state")) {
        c.kill();
        let _ = c.cleanup();
    }
    // Before anything under the directory is removed: below a live mount
    // are the file system's own files.
    cove_host::efs::unmount_all(&dir.join("efs"));
    unmount(&dir.join("rootfs"));
    cove_host::volume::detach(dir)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    if let Some(job_dir) = dir.parent() {
        // Fails while another instance of the job still has its directory.
        let _ = std::fs::remove_dir(job_dir);
    }
    Ok(())
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

pub(crate) fn model_artifact_uri(job: &SageMakerJob) -> String {
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
