//! The hosting supervisor: brings every endpoint's instances up and down to
//! match what the API stored. An instance gets its own ENI in the model's
//! subnets with their security groups, fetches the model data through it,
//! runs the model's serving container (`serve` on port 8080) and takes
//! traffic once `/ping` answers. `UpdateEndpoint` is blue/green: the new
//! configuration's instances come up beside the old ones, traffic moves to
//! them in one store write, and the old ones drain before they stop. Each
//! step is stored, so after a restart running containers are adopted.
//!
//! The work is split by host. The endpoint's driver runs on the control
//! plane: it moves the endpoint's status, places each new instance on a
//! host (with its ENI, in one write) and replaces the instances of a lost
//! host. Everything else about an instance happens on its host
//! ([`crate::serving`], run by `cove serve` and by each `cove agent`): the
//! download, the container, its log, and its release. Transform jobs'
//! instances run on the control plane's host, driven by their job.

use crate::contract::{self, ContainerCredentials, Serving};
use crate::driver::Failure;
use crate::workers::Workers;
use cove_host::http::ping;
use cove_host::launch::launch_host;
use cove_host::launch::HostLaunch;
use cove_host::logs::LogSink;
use cove_host::s3::joined;
use cove_host::s3::spawn_in_network;
use cove_host::s3::{parse_s3_uri, TransferError};
use cove_host::Settings;
use cove_model::endpoints::{
    EndpointInstance, EndpointStatus, InstanceState, SageMakerEndpoint, TransformJob,
    TransformPhase,
};
use cove_model::hosts::Locality;
use cove_model::ids::now_rfc3339;
use cove_model::jobs::{SageMakerDefinition, StsSession};
use cove_runtime::overlay::overlay;
use cove_runtime::{Container, RootFs, Status};
use cove_sagemaker::endpoints::model_container;
use cove_sagemaker::requests::{ContainerDefinition, CreateModelInput, VpcConfig};
use cove_store::Store;
use cove_sts::StsService;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// AWS's default `ContainerStartupHealthCheckTimeoutInSeconds`.
const DEFAULT_HEALTH_CHECK_TIMEOUT: u64 = 600;

/// AWS's hosting failure when the model data cannot be fetched.
pub fn model_download_failed(url: &str) -> String {
    format!("Failed to download model data from URL \"{url}\". Please ensure that an S3 VPC endpoint exists in route table or NAT gateway for the VPC mode and the URL is reachable from within the subnets provided.")
}

/// AWS's failure when the serving container never answers `/ping`.
pub fn ping_failed(variant: &str) -> String {
    format!("The primary container for production variant {variant} did not pass the ping health check. Please check CloudWatch logs for this endpoint.")
}

pub struct Hosting {
    pub(crate) store: Arc<Store>,
    /// Where the instances' logs go (CloudWatch Logs, or on an agent the
    /// control plane through the store).
    pub(crate) logs: Arc<dyn LogSink>,
    pub(crate) settings: Settings,
    /// The host this process runs instances for.
    pub(crate) here: Locality,
    /// What only the control plane has: `None` on an agent.
    control: Option<ControlPlane>,
    /// Endpoints with a driver, and instances with a worker.
    pub(crate) workers: Workers,
}

/// What the endpoints' drivers need beyond one host's work.
struct ControlPlane {
    sts: Arc<StsService>,
    /// Where instances of models without a `VpcConfig` get their network.
    public_network: Arc<dyn crate::PublicAppNetwork>,
    /// Held from an instance's placement to the write that stores it, so
    /// instances provisioned at once each see where the others went.
    placing: std::sync::Mutex<()>,
}

/// Whose instance it is, by store key: an endpoint's or a batch transform job's.
#[derive(Debug, Clone)]
pub(crate) enum Owner {
    Endpoint(String),
    Transform(String),
}

impl Owner {
    /// The account of the endpoint or job (its key is its ARN).
    fn account(&self) -> &str {
        match self {
            Owner::Endpoint(arn) | Owner::Transform(arn) => cove_model::ids::arn_account(arn),
        }
    }
}

/// One instance with what bringing it up needs to know.
pub(crate) struct Unit {
    owner: Owner,
    /// The endpoint's or job's name.
    name: String,
    region: String,
    account_id: String,
    /// Its working files.
    dir: PathBuf,
    /// Its position among its owner's instances, which picks its subnet.
    ordinal: usize,
    instance: EndpointInstance,
    deployment: Deployment,
}

/// The model an instance serves, and how it reaches the network.
struct Deployment {
    /// The model's Create request.
    model: CreateModelInput,
    vpc: Option<VpcConfig>,
    isolated: bool,
    variant: String,
    instance_type: String,
    health_timeout: u64,
    /// The variant's `VolumeSizeInGB`: each instance's ML storage volume.
    volume_gb: Option<u64>,
}

/// Which steps of an instance's life a worker takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Steps {
    /// Provisioning only (its endpoint's or job's driver on the control plane).
    Provision,
    /// Downloading and starting (the instance's host).
    OnItsHost,
}

impl Steps {
    fn takes(self, state: InstanceState) -> bool {
        match state {
            InstanceState::Provisioning => self != Steps::OnItsHost,
            InstanceState::Downloading | InstanceState::Starting => self != Steps::Provision,
            _ => false,
        }
    }
}

impl Hosting {
    /// The control plane's hosting: the endpoints' and transform jobs'
    /// drivers, and the instances placed on its own host.
    pub fn new(
        store: Arc<Store>,
        logs: Arc<dyn LogSink>,
        sts: Arc<StsService>,
        settings: Settings,
        public_network: Arc<dyn crate::PublicAppNetwork>,
        here: Locality,
    ) -> Arc<Hosting> {
        let control = ControlPlane {
            sts,
            public_network,
            placing: Default::default(),
        };
        Self::with(store, logs, settings, here, Some(control))
    }

    /// An agent's hosting: the endpoint instances placed on its host.
    pub fn on_agent(
        store: Arc<Store>,
        logs: Arc<dyn LogSink>,
        settings: Settings,
        here: Locality,
    ) -> Arc<Hosting> {
        Self::with(store, logs, settings, here, None)
    }

    fn with(
        store: Arc<Store>,
        logs: Arc<dyn LogSink>,
        settings: Settings,
        here: Locality,
        control: Option<ControlPlane>,
    ) -> Arc<Hosting> {
        Arc::new(Hosting {
            store,
            logs,
            settings,
            here,
            control,
            workers: Workers::default(),
        })
    }

    /// Runs the instances placed on this host and, on the control plane,
    /// gives every endpoint and unfinished transform job a driver.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        self.spawn_instances_here()?;
        if self.control.is_none() {
            return Ok(());
        }
        let me = self.clone();
        crate::workers::watch_store(self.store.clone(), "cove-hosting", move |world| {
            for key in world.sagemaker_endpoints.keys() {
                let (me2, k) = (me.clone(), key.clone());
                me.workers.run_once(
                    key,
                    format!("ep-{}", key.rsplit('/').next().unwrap_or_default()),
                    move || me2.drive(&k),
                );
            }
            for (key, j) in world.transform_jobs.iter() {
                if j.phase == TransformPhase::CleanedUp {
                    continue;
                }
                let (me2, k) = (me.clone(), key.clone());
                me.workers.run_once(key, format!("bt-{}", j.name), move || {
                    let store = me2.store.clone();
                    crate::driver::drive(&crate::transform::Transform(me2), &store, &k)
                });
            }
        })
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn logs(&self) -> &dyn LogSink {
        self.logs.as_ref()
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn endpoint(&self, key: &str) -> Option<SageMakerEndpoint> {
        self.store
            .snapshot()
            .sagemaker_endpoints
            .get(key)
            .map(|x| (**x).clone())
    }

    /// Applies `f` to the stored endpoint in one write.
    fn update<T>(
        &self,
        key: &str,
        f: impl FnOnce(&mut SageMakerEndpoint) -> T,
    ) -> anyhow::Result<T> {
        Ok(self.store.write(|tx| {
            let mut e = tx.cloned::<SageMakerEndpoint>(key)?;
            let out = f(&mut e);
            tx.put(e);
            Ok(out)
        })?)
    }

    /// An endpoint's files, by its ARN.
    pub(crate) fn endpoint_dir(&self, arn: &str) -> PathBuf {
        crate::workload_dir(&self.settings.jobs_dir, arn)
    }

    pub(crate) fn instance_dir(&self, endpoint_arn: &str, id: &str) -> PathBuf {
        self.endpoint_dir(endpoint_arn).join(id)
    }

    // ---- The endpoint driver ----

    fn drive(self: &Arc<Self>, key: &str) {
        loop {
            let generation = self.store.generation();
            let Some(e) = self.endpoint(key) else { return };
            match self.tick(&e) {
                Ok(true) => return,
                Ok(false) => {}
                // Deleted while the step ran (DeleteEndpoint right after
                // CreateEndpoint): nothing is left to drive.
                Err(_) if self.endpoint(key).is_none() => return,
                Err(err) => {
                    tracing::error!(endpoint = %e.name, error = %err, "endpoint step failed; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            self.store
                .wait_for_change(generation, Duration::from_millis(250));
        }
    }

    /// One pass over an endpoint; `true` once it is deleted.
    fn tick(self: &Arc<Self>, e: &SageMakerEndpoint) -> anyhow::Result<bool> {
        let key = e.key();
        self.forget_lost_instances(e)?;
        if e.delete_requested {
            return self.delete(&key);
        }
        let e = self.advance(&key)?;
        // A worker for each instance to place and give its network; its
        // host does the rest.
        for i in &e.instances {
            if i.state == InstanceState::Provisioning {
                let me = self.clone();
                let (k, id) = (key.clone(), i.id.clone());
                self.workers.run_once(
                    &format!("{key}/{}", i.id),
                    format!("up-{}", i.id),
                    move || me.bring_up(&Owner::Endpoint(k), &id, Steps::Provision),
                );
            }
        }
        Ok(false)
    }

    /// Gives back the instances whose host is lost, as their host cannot:
    /// the endpoint's variants get new ones elsewhere. What they left on
    /// the lost host is removed when it comes back.
    fn forget_lost_instances(&self, e: &SageMakerEndpoint) -> anyhow::Result<()> {
        let world = self.store.snapshot();
        let lost =
            |i: &EndpointInstance| cove_model::hosts::on_lost_host(&world, i.placed_on.as_deref());
        if !e.instances.iter().any(lost) {
            return Ok(());
        }
        self.store.write(|tx| {
            let mut e = tx.cloned::<SageMakerEndpoint>(&e.key())?;
            let (gone, kept): (Vec<_>, Vec<_>) =
                std::mem::take(&mut e.instances).into_iter().partition(lost);
            for i in &gone {
                tracing::warn!(endpoint = %e.name, instance = %i.id, host = ?i.placed_on, "the host of an endpoint instance was lost; replacing it");
                release_network(tx, i);
            }
            e.instances = kept;
            tx.put(e);
            Ok(())
        })?;
        Ok(())
    }

    /// Moves the endpoint's status along from its instances' states, and
    /// asks for instances where a variant has fewer than it wants.
    fn advance(&self, key: &str) -> anyhow::Result<SageMakerEndpoint> {
        self.update(key, |e| {
            let now = now_rfc3339();
            let in_service = |e: &SageMakerEndpoint, config: &str, variant: &str| {
                e.instances
                    .iter()
                    .filter(|i| {
                        i.config_name == config
                            && i.variant == variant
                            && i.state == InstanceState::InService
                    })
                    .count()
            };
            let in_service = |e: &SageMakerEndpoint, config: &str, variant: &str| {
                cove_model::convert::usize_to_u32(in_service(e, config, variant))
            };
            let failure = |e: &SageMakerEndpoint, config: &str| {
                e.instances
                    .iter()
                    .find(|i| i.config_name == config && i.state == InstanceState::Failed)
                    .and_then(|i| i.failure_reason.clone())
            };
            let retire_config = |e: &mut SageMakerEndpoint, config: &str, now: &str| {
                for i in e
                    .instances
                    .iter_mut()
                    .filter(|i| i.config_name == config && i.is_live())
                {
                    i.state = InstanceState::Retiring;
                    i.retiring_since = Some(now.to_string());
                }
            };
            let current = e.config_name.clone();
            match (e.status, e.pending_config.clone()) {
                (EndpointStatus::Creating, _) => {
                    if let Some(reason) = failure(e, &current) {
                        e.status = EndpointStatus::Failed;
                        e.failure_reason = Some(reason);
                        e.last_modified_time = now.clone();
                        retire_config(e, &current, &now);
                    } else if e
                        .variants
                        .iter()
                        .all(|v| in_service(e, &current, &v.name) >= v.desired_instance_count)
                    {
                        for i in 0..e.variants.len() {
                            let n = in_service(e, &current, &e.variants[i].name);
                            e.variants[i].current_instance_count = n;
                        }
                        e.status = EndpointStatus::InService;
                        e.last_modified_time = now.clone();
                    }
                }
                (EndpointStatus::Updating, Some(pending)) => {
                    if let Some(reason) = failure(e, &pending) {
                        // The update rolls back: the old instances never stopped serving.
                        retire_config(e, &pending, &now);
                        e.pending_config = None;
                        e.pending_variants.clear();
                        e.pending_since = None;
                        e.status = EndpointStatus::InService;
                        e.failure_reason = Some(reason);
                        e.last_modified_time = now.clone();
                    } else if e
                        .pending_variants
                        .iter()
                        .all(|v| in_service(e, &pending, &v.name) >= v.desired_instance_count)
                    {
                        // One write moves all traffic to the new instances.
                        retire_config(e, &current, &now);
                        let mut variants = std::mem::take(&mut e.pending_variants);
                        for v in &mut variants {
                            v.current_instance_count = in_service(e, &pending, &v.name);
                        }
                        e.variants = variants;
                        e.config_name = pending;
                        e.pending_config = None;
                        e.pending_since = None;
                        e.status = EndpointStatus::InService;
                        e.last_modified_time = now.clone();
                    }
                }
                (EndpointStatus::Updating, None) => {
                    for v in &mut e.variants {
                        v.current_weight = v.desired_weight;
                    }
                    if let Some(reason) = failure(e, &current) {
                        for v in &mut e.variants {
                            v.desired_instance_count = v.current_instance_count;
                        }
                        e.status = EndpointStatus::InService;
                        e.failure_reason = Some(reason);
                        e.last_modified_time = now.clone();
                    } else if e
                        .variants
                        .iter()
                        .all(|v| in_service(e, &current, &v.name) >= v.desired_instance_count)
                    {
                        for i in 0..e.variants.len() {
                            e.variants[i].current_instance_count =
                                e.variants[i].desired_instance_count;
                        }
                        e.status = EndpointStatus::InService;
                        e.last_modified_time = now.clone();
                    }
                }
                _ => {}
            }
            // A failed instance's reason has been read above: its host
            // may now stop and release it.
            for i in e
                .instances
                .iter_mut()
                .filter(|i| i.state == InstanceState::Failed)
            {
                i.state = InstanceState::Retiring;
                i.retiring_since = Some(now.clone());
            }
            if e.status == EndpointStatus::Failed {
                return e.clone();
            }
            // Scale each variant (current, and pending) to its desired count.
            let mut wanted: Vec<(String, String, u32)> = e
                .variants
                .iter()
                .map(|v| (current.clone(), v.name.clone(), v.desired_instance_count))
                .collect();
            if let Some(p) = &e.pending_config {
                wanted.extend(
                    e.pending_variants
                        .iter()
                        .map(|v| (p.clone(), v.name.clone(), v.desired_instance_count)),
                );
            }
            for (config, variant, count) in wanted {
                let live: Vec<usize> = e
                    .instances
                    .iter()
                    .enumerate()
                    .filter(|(_, i)| i.config_name == config && i.variant == variant && i.is_live())
                    .map(|(n, _)| n)
                    .collect();
                let have = cove_model::convert::usize_to_u32(live.len());
                if have < count {
                    for _ in have..count {
                        e.instances
                            .push(EndpointInstance::provisioning(&variant, &config));
                    }
                } else if have > count {
                    // Scale in: the newest go first.
                    for &n in live.iter().rev().take((have - count) as usize) {
                        e.instances[n].state = InstanceState::Retiring;
                        e.instances[n].retiring_since = Some(now.clone());
                    }
                }
            }
            e.clone()
        })
    }

    /// Deletes the endpoint once every instance's host has released it.
    fn delete(&self, key: &str) -> anyhow::Result<bool> {
        let deleted = self.store.write(|tx| {
            let Some(e) = tx.world.sagemaker_endpoints.get(key).cloned() else {
                return Ok(true);
            };
            if !e.instances.is_empty() {
                return Ok(false);
            }
            tx.delete::<SageMakerEndpoint>(key);
            Ok(true)
        })?;
        if deleted {
            let dir = self.endpoint_dir(key);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
        }
        Ok(deleted)
    }

    // ---- Bringing one instance up ----

    fn endpoint_deployment(
        &self,
        e: &SageMakerEndpoint,
        i: &EndpointInstance,
    ) -> Result<Deployment, Failure> {
        let world = self.store.snapshot();
        let variant = e.variant_of(i).ok_or_else(|| {
            Failure(format!(
                "Variant {} is not part of the endpoint.",
                i.variant
            ))
        })?;
        let model = world
            .sagemaker_definitions
            .get(&SageMakerDefinition::key_of(
                &e.region,
                &e.account_id,
                "model",
                &variant.model_name,
            ))
            .and_then(|m| m.request.model().cloned())
            .ok_or_else(|| Failure(format!("Could not find model \"{}\".", variant.model_name)))?;
        let config = world
            .sagemaker_definitions
            .get(&SageMakerDefinition::key_of(
                &e.region,
                &e.account_id,
                "endpoint-config",
                &i.config_name,
            ));
        let config_request = config.and_then(|c| c.request.endpoint_config());
        let vpc = model
            .vpc_config
            .as_ref()
            .or_else(|| config_request?.vpc_config.as_ref())
            .cloned();
        let isolated = model.enable_network_isolation.unwrap_or(false)
            || config_request.is_some_and(|c| c.enable_network_isolation.unwrap_or(false));
        let production_variant = config_request
            .into_iter()
            .flat_map(|c| &c.production_variants)
            .find(|v| v.variant_name == i.variant);
        // A negative timeout reads as none, as JSON's `as_u64` read it.
        let health_timeout = production_variant
            .and_then(|v| v.container_startup_health_check_timeout_in_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(DEFAULT_HEALTH_CHECK_TIMEOUT);
        let volume_gb = production_variant
            .and_then(|v| v.volume_size_in_gb)
            .and_then(|s| u64::try_from(s).ok())
            .filter(|&s| s > 0);
        check_single_container(&model)?;
        Ok(Deployment {
            model,
            vpc,
            isolated,
            variant: variant.name.clone(),
            instance_type: variant.instance_type.clone(),
            health_timeout,
            volume_gb,
        })
    }

    /// The instance `id` of `owner` with what bringing it up needs, or
    /// `None` once its owner is gone, deleted or stopped.
    pub(crate) fn unit(&self, owner: &Owner, id: &str) -> Option<Result<Unit, Failure>> {
        let world = self.store.snapshot();
        let (name, region, account_id, instances, deployment) = match owner {
            Owner::Endpoint(key) => {
                let e = world
                    .sagemaker_endpoints
                    .get(key)
                    .filter(|e| !e.delete_requested)?;
                let i = e.instances.iter().find(|i| i.id == id)?;
                (
                    e.name.clone(),
                    e.region.clone(),
                    e.account_id.clone(),
                    &e.instances,
                    self.endpoint_deployment(e, i),
                )
            }
            Owner::Transform(key) => {
                let j = world
                    .transform_jobs
                    .get(key)
                    .filter(|j| !j.stop_requested)?;
                (
                    j.name.clone(),
                    j.region.clone(),
                    j.account_id.clone(),
                    &j.instances,
                    transform_deployment(j),
                )
            }
        };
        let ordinal = instances.iter().position(|i| i.id == id)?;
        let instance = instances[ordinal].clone();
        Some(deployment.map(|deployment| Unit {
            owner: owner.clone(),
            dir: self.owner_dir(owner).join(&instance.id),
            name,
            region,
            account_id,
            ordinal,
            instance,
            deployment,
        }))
    }

    /// Where an endpoint's or a job's instances keep their files.
    pub(crate) fn owner_dir(&self, owner: &Owner) -> PathBuf {
        match owner {
            Owner::Endpoint(arn) | Owner::Transform(arn) => self.endpoint_dir(arn),
        }
    }

    /// Changes the instance list of `owner` in one store write.
    fn write_instances<T>(
        &self,
        owner: &Owner,
        f: impl FnOnce(&mut cove_store::Tx, &mut Vec<EndpointInstance>) -> cove_model::AwsResult<T>,
    ) -> cove_model::AwsResult<T> {
        // The instances' ENIs are made here: the write acts for the owner's
        // account.
        self.store.write_as(owner.account(), |tx| match owner {
            Owner::Endpoint(key) => {
                let mut e = tx.cloned::<SageMakerEndpoint>(key)?;
                let out = f(tx, &mut e.instances)?;
                tx.put(e);
                Ok(out)
            }
            Owner::Transform(key) => {
                let mut j = tx.cloned::<TransformJob>(key)?;
                let out = f(tx, &mut j.instances)?;
                tx.put(j);
                Ok(out)
            }
        })
    }

    pub(crate) fn update_instance(
        &self,
        owner: &Owner,
        id: &str,
        f: impl FnOnce(&mut EndpointInstance),
    ) -> anyhow::Result<()> {
        self.write_instances(owner, |_, instances| {
            if let Some(i) = instances.iter_mut().find(|i| i.id == id) {
                f(i);
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Takes instance `id` through `steps` of Provisioning, Downloading and
    /// Starting to InService (or Failed), step by step, each step stored.
    pub(crate) fn bring_up(&self, owner: &Owner, id: &str, steps: Steps) {
        loop {
            let u = match self.unit(owner, id) {
                None => return,
                Some(Ok(u)) => u,
                Some(Err(Failure(reason))) => {
                    let _ = self.fail(owner, id, reason);
                    return;
                }
            };
            if !steps.takes(u.instance.state) {
                return;
            }
            let step = match u.instance.state {
                InstanceState::Provisioning => self.provision(&u),
                InstanceState::Downloading => self.download(&u),
                InstanceState::Starting => self.start(&u),
                _ => return,
            };
            match step {
                Ok(Ok(())) => {}
                Ok(Err(Failure(reason))) => {
                    tracing::info!(owner = %u.name, instance = id, %reason, "instance failed");
                    let _ = self.fail(owner, id, reason);
                    return;
                }
                // Its endpoint or job was deleted or stopped meanwhile (the
                // step's write found it gone): nothing to retry.
                Err(_) if self.unit(owner, id).is_none() => return,
                Err(err) => {
                    tracing::error!(owner = %u.name, instance = id, error = %err, "instance step failed; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    pub(crate) fn fail(&self, owner: &Owner, id: &str, reason: String) -> anyhow::Result<()> {
        self.update_instance(owner, id, |i| {
            i.state = InstanceState::Failed;
            i.failure_reason = Some(reason);
        })
    }

    /// Takes instance `id` off its owner's list and gives back its ENI and
    /// session: the last step of a release, once its host has removed its
    /// container and files.
    pub(crate) fn remove_released(&self, owner: &Owner, id: &str) -> cove_model::AwsResult<()> {
        self.write_instances(owner, |tx, instances| {
            if let Some(pos) = instances.iter().position(|i| i.id == id) {
                release_network(tx, &instances.remove(pos));
            }
            Ok(())
        })
    }

    pub(crate) fn session(&self, i: &EndpointInstance) -> Option<StsSession> {
        crate::session_of(&self.store, i.session_access_key.as_deref())
    }

    pub(crate) fn netns(&self, i: &EndpointInstance) -> Option<String> {
        cove_host::eni_netns(&self.settings, i.eni_id.as_deref())
    }

    fn provision(&self, u: &Unit) -> anyhow::Result<Result<(), Failure>> {
        let (i, d) = (&u.instance, &u.deployment);
        let Some(control) = &self.control else {
            anyhow::bail!("only the control plane provisions instances");
        };
        if d.vpc.is_some() && self.settings.instance.is_none() {
            return Ok(Err(Failure("ClientError: Cove's data plane is off (it needs root, ip and nft), so a model with a VpcConfig cannot get its network interfaces.".into())));
        }
        let mut session = i.session_access_key.clone();
        if session.is_none() {
            if let Some(role) = &d.model.execution_role_arn {
                let s = crate::assume_job_role(&control.sts, &u.account_id, role)?;
                self.update_instance(&u.owner, &i.id, |i| i.session_access_key = Some(s.clone()))?;
                session = Some(s);
            }
        }
        let image_pull = match &i.image_pull {
            Some(pull) => Some(pull.clone()),
            None => {
                let container = model_container(&d.model).cloned().unwrap_or_default();
                let image = container.image.as_deref().unwrap_or_default();
                let pull =
                    crate::image_pull(&self.settings, image, &u.account_id, session.as_deref());
                if pull.is_some() {
                    self.update_instance(&u.owner, &i.id, |i| i.image_pull = pull.clone())?;
                }
                pull
            }
        };
        // The instance's ENI: in the model's subnets, or, without a
        // VpcConfig, in SageMaker's own network with internet access, as on
        // AWS (network isolation, or the data plane off, keeps loopback only).
        let in_managed_network = d.vpc.is_none() && self.settings.instance.is_some() && !d.isolated;
        if i.eni_id.is_none() && (d.vpc.is_some() || in_managed_network) {
            let what = match u.owner {
                Owner::Endpoint(_) => "Endpoint",
                Owner::Transform(_) => "Transform Job",
            };
            let placing = control.placing.lock().expect("lock");
            let placed_on = self.place(u, image_pull.as_ref());
            let made = self.write_instances(&u.owner, |tx, instances| {
                let Some(inst) = instances.iter_mut().find(|x| x.id == i.id) else {
                    return Ok(());
                };
                if inst.eni_id.is_some() {
                    return Ok(());
                }
                let placement = crate::Placement::of_host(
                    d.vpc.as_ref(),
                    u.ordinal,
                    crate::ManagedNetwork::Hosting,
                );
                let description =
                    placement.host_eni_description(&format!("{what} {} ({})", u.name, i.id));
                let eni = crate::create_workload_eni(
                    tx,
                    control.public_network.as_ref(),
                    placement,
                    (&u.region, &u.account_id),
                    description,
                    placed_on.as_deref(),
                )?;
                inst.eni_id = Some(eni);
                inst.placed_on = placed_on;
                Ok(())
            });
            drop(placing);
            if let Err(err) = made {
                // The endpoint or job was deleted meanwhile: not a failure
                // of the instance (bring_up sees it gone and stops).
                if self.unit(&u.owner, &i.id).is_none() {
                    anyhow::bail!("{} is gone", u.name);
                }
                let place = if d.vpc.is_some() {
                    "a network interface in the model's subnets"
                } else {
                    "the instance's network interface in SageMaker's network"
                };
                return Ok(Err(Failure(format!(
                    "ClientError: Cannot create {place}: {}",
                    err.message
                ))));
            }
            let generation = self.store.generation();
            if !self.store.wait_applied(generation, Duration::from_secs(60)) {
                anyhow::bail!("the data plane did not apply the instance's ENI within 60 s");
            }
        }
        self.update_instance(&u.owner, &i.id, |i| i.state = InstanceState::Downloading)?;
        Ok(Ok(()))
    }

    /// The host of a new endpoint or transform instance: spread over the
    /// hosts beside its endpoint's or job's other instances, unless only the
    /// control plane's host can run it ([`crate::image_needs_control_plane`];
    /// a model with `SAGEMAKER_PROGRAM` serves in script mode when its
    /// image is not in the registry).
    fn place(&self, u: &Unit, pull: Option<&cove_model::jobs::ImagePull>) -> Option<String> {
        let container = model_container(&u.deployment.model)
            .cloned()
            .unwrap_or_default();
        if crate::image_needs_control_plane(
            &self.settings,
            container.image.as_deref().unwrap_or_default(),
            serves_in_script_mode(&container),
            pull,
        ) {
            return None;
        }
        let world = self.store.snapshot();
        let instances = match &u.owner {
            Owner::Endpoint(key) => world.sagemaker_endpoints.get(key).map(|e| &e.instances),
            Owner::Transform(key) => world.transform_jobs.get(key).map(|j| &j.instances),
        };
        let siblings: Vec<Option<&str>> = instances
            .into_iter()
            .flatten()
            .filter(|i| i.id != u.instance.id && i.is_live() && i.eni_id.is_some())
            .map(|i| i.placed_on.as_deref())
            .collect();
        cove_model::hosts::place_instances_beside(
            &world,
            1,
            cove_model::hosts::Demand::of(&u.deployment.instance_type),
            &siblings,
        )
        .pop()
        .flatten()
    }

    fn download(&self, u: &Unit) -> anyhow::Result<Result<(), Failure>> {
        if u.instance.eni_id.is_some() {
            crate::wait_for_network_here(&self.store, &self.settings, "instance's ENI")?;
        } else {
            crate::wait_for_restored_network(&self.store, &self.settings)?;
        }
        let (i, d, dir) = (&u.instance, &u.deployment, u.dir.clone());
        if let Some(size) = d.volume_gb {
            cove_host::volume::attach_or_say(&dir, size);
        }
        let ml = dir.join("ml");
        for sub in ["model", "code"] {
            std::fs::create_dir_all(ml.join(sub))?;
        }
        let container = model_container(&d.model).cloned().unwrap_or_default();
        let sources = model_sources(&container);
        let fetched = {
            let dir = dir.clone();
            let sources = sources.clone();
            joined(spawn_in_network(
                &self.settings,
                &u.region,
                self.netns(i),
                self.session(i).as_ref(),
                move |client| {
                    for s in &sources {
                        let (bucket, key) = parse_s3_uri(&s.uri).ok_or_else(|| {
                            TransferError::Local(format!("not an S3 URI: {}", s.uri))
                        })?;
                        match s.kind {
                            SourceKind::Archive(name) => {
                                client.get_to_file(&bucket, &key, &dir.join(name))?;
                            }
                            SourceKind::Prefix => {
                                for (k, _) in client.list(&bucket, &key)? {
                                    if k.ends_with('/') {
                                        continue;
                                    }
                                    let rel =
                                        k.strip_prefix(&key).unwrap_or(&k).trim_start_matches('/');
                                    client.get_to_file(
                                        &bucket,
                                        &k,
                                        &dir.join("ml/model").join(rel),
                                    )?;
                                }
                            }
                        }
                    }
                    Ok(())
                },
            ))
        };
        let model_url = sources.first().map(|s| s.uri.clone()).unwrap_or_default();
        match fetched {
            Ok(()) => {}
            Err(TransferError::Network(err)) => {
                tracing::info!(owner = %u.name, error = %err, "model download could not reach S3");
                return Ok(Err(Failure(model_download_failed(&model_url))));
            }
            Err(TransferError::Service { status: 404, .. }) => {
                return Ok(Err(Failure(format!(
                    "Could not find model data at {model_url}."
                ))));
            }
            Err(TransferError::Service {
                status,
                code,
                message,
            }) => {
                return Ok(Err(Failure(format!(
                    "Failed to download model data from URL \"{model_url}\": {code} ({status}): {message}"
                ))));
            }
            Err(TransferError::DiskFull) => {
                return Ok(Err(Failure(format!(
                    "Failed to download model data from URL \"{model_url}\": Insufficient disk space"
                ))));
            }
            Err(TransferError::Local(err)) => anyhow::bail!("preparing the model's files: {err}"),
        }
        for (archive, into) in [
            ("model.tar.gz", "ml/model"),
            ("sourcedir.tar.gz", "ml/code"),
        ] {
            let path = dir.join(archive);
            if !path.exists() {
                continue;
            }
            let file = std::fs::File::open(&path)?;
            let unpacked =
                tar::Archive::new(flate2::read::GzDecoder::new(file)).unpack(dir.join(into));
            if let Err(err) = unpacked {
                return Ok(Err(Failure(format!(
                    "ClientError: The model data is not a valid .tar.gz archive ({archive}): {err}"
                ))));
            }
            std::fs::remove_file(&path)?;
        }
        self.update_instance(&u.owner, &i.id, |i| i.state = InstanceState::Starting)?;
        Ok(Ok(()))
    }

    fn launch(&self, u: &Unit) -> anyhow::Result<Result<Container, Failure>> {
        let (i, d, dir) = (&u.instance, &u.deployment, &u.dir);
        let state = dir.join("state");
        if let Some(c) = Container::adopt(&state)? {
            if c.status() == Status::Running {
                return Ok(Ok(c));
            }
        }
        let container = model_container(&d.model).cloned().unwrap_or_default();
        let image = container.image.as_deref().unwrap_or_default();
        let puller = cove_host::Puller {
            account: u.account_id.clone(),
            access_key: i.session_access_key.clone().unwrap_or_default(),
        };
        let world = self.store.snapshot();
        let from_control_plane = i.image_pull.as_ref().map(|p| (p, &*world));
        let (root, mode) = match cove_host::image_root(
            &self.settings,
            image,
            &puller,
            from_control_plane,
        ) {
            Ok(rootfs) => (RootFs::Image(overlay(&rootfs, dir)?), Serving::Image),
            Err(cove_host::NoImage::Broken(why)) => {
                return Ok(Err(crate::instances::image_broken(image, &why)))
            }
            Err(_) if serves_in_script_mode(&container) => (RootFs::Host, Serving::Script),
            Err(missing) => {
                return Ok(Err(Failure(format!(
                    "ClientError: The image {image} is not available to Cove ({missing}). Push it to Cove's registry (docker or skopeo after `aws ecr get-login-password`, or `cove image-import`), or serve a framework image in script mode (SAGEMAKER_PROGRAM in the model's Environment)."
                ))))
            }
        };
        let credentials = self
            .session(i)
            .filter(|_| !d.isolated)
            .map(ContainerCredentials::from);
        let kind = match u.owner {
            Owner::Endpoint(_) => "ep",
            Owner::Transform(_) => "bt",
        };
        let (_, gpus) = cove_host::launch::gpus_for(&self.settings, &d.instance_type, dir)?;
        let launched = launch_host(
            &self.settings,
            HostLaunch {
                id: format!("{kind}-{}-{}", u.name, i.id),
                dir,
                root,
                contract: contract::serving(&u.region, &container, credentials.as_ref(), mode),
                hostname: i.id.clone(),
                hosts_file: format!("127.0.0.1\tlocalhost\n127.0.0.1\t{}\n", i.id),
                netns: self.netns(i),
                isolated: d.isolated,
                extra_binds: vec![],
                instance_type: &d.instance_type,
                gpus,
            },
        );
        match launched {
            Ok(c) => Ok(Ok(c)),
            // AWS reports a container that cannot start as one that never
            // passed its health check; the reason is in its log.
            Err(e) => {
                cove_host::launch::program_fault(e).map(|_| Err(Failure(ping_failed(&d.variant))))
            }
        }
    }

    fn start(&self, u: &Unit) -> anyhow::Result<Result<(), Failure>> {
        let (i, d) = (&u.instance, &u.deployment);
        let c = match self.launch(u)? {
            Ok(c) => c,
            Err(f) => return Ok(Err(f)),
        };
        // Cove reaches the container from inside its own network namespace:
        // the ENI's, or the loopback-only one of an isolated container.
        let netns_path = match (self.netns(i), d.isolated) {
            (Some(ns), false) => format!("{}/{ns}", cove_net::netns::NETNS_DIR),
            _ => match c.init_pid() {
                Some(pid) => format!("/proc/{pid}/ns/net"),
                None => anyhow::bail!("the serving container has no init process"),
            },
        };
        let deadline = Instant::now() + Duration::from_secs(d.health_timeout);
        loop {
            if c.status() != Status::Running {
                return Ok(Err(Failure(ping_failed(&d.variant))));
            }
            if ping(&netns_path) {
                break;
            }
            if Instant::now() >= deadline {
                c.kill();
                return Ok(Err(Failure(ping_failed(&d.variant))));
            }
            if self.unit(&u.owner, &i.id).is_none() {
                return Ok(Ok(()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::info!(owner = %u.name, instance = %i.id, "instance in service");
        self.update_instance(&u.owner, &i.id, |i| {
            i.state = InstanceState::InService;
            i.netns_path = Some(netns_path);
        })?;
        Ok(Ok(()))
    }
}

/// Stops the container of the instance in `dir` (SIGTERM, then SIGKILL
/// after `grace`) and removes its cgroups.
pub(crate) fn stop_container(dir: &std::path::Path, grace: Duration) {
    if let Ok(Some(c)) = Container::adopt(&dir.join("state")) {
        if c.status() == Status::Running {
            c.terminate();
            if c.wait_timeout(grace).is_none() {
                c.kill();
            }
        }
        let _ = c.cleanup();
    }
}

/// Cove runs one container per model.
fn check_single_container(model: &CreateModelInput) -> Result<(), Failure> {
    if model.containers.as_ref().is_some_and(|c| c.len() > 1) {
        return Err(Failure("ClientError: Cove serves one container per model; inference pipelines (several Containers) are not supported.".into()));
    }
    Ok(())
}

/// Whether a model's container serves in script mode (`SAGEMAKER_PROGRAM`
/// on the host's Python) when its image is not in Cove's registry.
fn serves_in_script_mode(container: &ContainerDefinition) -> bool {
    container
        .environment
        .as_ref()
        .is_some_and(|e| e.contains_key("SAGEMAKER_PROGRAM"))
}

/// A transform job's model, as it was when the job was created.
fn transform_deployment(j: &TransformJob) -> Result<Deployment, Failure> {
    check_single_container(&j.model)?;
    Ok(Deployment {
        vpc: j.model.vpc_config.clone(),
        isolated: j.model.enable_network_isolation.unwrap_or(false),
        model: (*j.model).clone(),
        variant: "AllTraffic".into(),
        instance_type: j.request.transform_resources.instance_type.clone(),
        health_timeout: DEFAULT_HEALTH_CHECK_TIMEOUT,
        volume_gb: None,
    })
}

/// Gives back an instance's ENI and credentials.
pub(crate) fn release_network(tx: &mut cove_store::Tx, i: &EndpointInstance) {
    crate::release(tx, i.eni_id.as_deref(), i.session_access_key.as_deref());
}

#[derive(Debug, Clone)]
enum SourceKind {
    /// One `.tar.gz` object saved under this name and unpacked later.
    Archive(&'static str),
    /// Every object under a prefix, copied into `/opt/ml/model` as is.
    Prefix,
}

#[derive(Debug, Clone)]
struct ModelSource {
    uri: String,
    kind: SourceKind,
}

/// What a model container needs from S3: its model data (`ModelDataUrl`, or
/// `ModelDataSource` as an archive or an uncompressed prefix) and, in script
/// mode, the source archive `SAGEMAKER_SUBMIT_DIRECTORY` names.
fn model_sources(container: &ContainerDefinition) -> Vec<ModelSource> {
    let mut out = Vec::new();
    let s3_source = container
        .model_data_source
        .as_ref()
        .and_then(|s| s.s3_data_source.as_ref());
    if let Some(url) = &container.model_data_url {
        out.push(ModelSource {
            uri: url.clone(),
            kind: SourceKind::Archive("model.tar.gz"),
        });
    } else if let Some(s3) = s3_source {
        let compressed = s3.compression_type == "Gzip";
        out.push(ModelSource {
            uri: s3.s3_uri.clone(),
            kind: if compressed {
                SourceKind::Archive("model.tar.gz")
            } else {
                SourceKind::Prefix
            },
        });
    }
    let env = container.environment.as_ref();
    if let Some(dir) = env.and_then(|e| e.get("SAGEMAKER_SUBMIT_DIRECTORY")) {
        if dir.starts_with("s3://") {
            out.push(ModelSource {
                uri: dir.to_string(),
                kind: SourceKind::Archive("sourcedir.tar.gz"),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn model_sources_cover_archives_prefixes_and_source_dirs() {
        let typed = |v| serde_json::from_value::<ContainerDefinition>(v).unwrap();
        let c = typed(json!({
            "ModelDataUrl": "s3://b/model.tar.gz",
            "Environment": {"SAGEMAKER_SUBMIT_DIRECTORY": "s3://b/code/sourcedir.tar.gz", "SAGEMAKER_PROGRAM": "inference.py"}
        }));
        let s = model_sources(&c);
        assert_eq!(s.len(), 2);
        assert!(matches!(s[0].kind, SourceKind::Archive("model.tar.gz")));
        assert!(matches!(s[1].kind, SourceKind::Archive("sourcedir.tar.gz")));
        let c = typed(json!({
            "ModelDataSource": {"S3DataSource": {"S3Uri": "s3://b/model/", "S3DataType": "S3Prefix", "CompressionType": "None"}},
            "Environment": {"SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}
        }));
        let s = model_sources(&c);
        assert_eq!(s.len(), 1);
        assert!(matches!(s[0].kind, SourceKind::Prefix));
        assert!(model_sources(&typed(json!({"Image": "x"}))).is_empty());
    }

    #[test]
    fn failure_strings_are_awss() {
        assert!(model_download_failed("s3://b/m.tar.gz").starts_with(
            "Failed to download model data from URL \"s3://b/m.tar.gz\". Please ensure"
        ));
        assert_eq!(
            ping_failed("AllTraffic"),
            "The primary container for production variant AllTraffic did not pass the ping health check. Please check CloudWatch logs for this endpoint."
        );
    }
}
