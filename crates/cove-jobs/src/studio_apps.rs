//! The Studio supervisor: brings each app up as a process on its own ENI,
//! watches it, and takes it down on DeleteApp.
//!
//! - **`VpcOnly`:** the ENI goes in one of the domain's subnets. Its groups
//!   are the user profile's and the domain's default groups, plus the
//!   domain's outbound NFS group, so the app reaches exactly what the VPC
//!   allows.
//! - **`PublicInternetOnly`:** the ENI goes in Cove's own managed network
//!   instead (see [`crate::PublicAppNetwork`]), a public subnet
//!   behind an internet gateway, and the app gets an Elastic IP.
//!
//! The driver on the control plane ([`StudioApps`]) gives the app its role
//! session and its ENIs and places it on a host; everything else happens
//! on that host ([`AppsHere`], run by `cove serve` and by each `cove
//! agent`): the home mount, the process, its watch and its stop. An app
//! whose host is lost starts again on another.
//!
//! Either way the process runs under the container runtime:
//! - on the host's read-only root;
//! - with the user's home directory (one per user profile, shared by that
//!   user's apps) bound read-write at `/home/sagemaker-user`;
//! - with the execution role's credentials;
//! - listening on port 8888 in the ENI's namespace, where Cove's Studio
//!   proxy reaches it (through the host's relay on an agent).

use crate::assume_job_role;
use crate::contract::{self, ContainerCredentials, STUDIO_HOME, STUDIO_PORT};
use crate::driver::{driver, Driver, Failure, Step};
use crate::hosting::stop_container;
use crate::release;
use crate::session_of;
use crate::workers::{watch_store_every, Every, Workers, LEFTOVER_SWEEP};
use cove_host::eni_netns;
use cove_host::launch::launch_host;
use cove_host::launch::HostLaunch;
use cove_model::hosts::Locality;
use cove_model::ids::{fnv64, now_rfc3339};
use cove_model::studio::{AppPhase, AppStatus, StudioApp, StudioDomain, UserProfile};
use cove_runtime::{Bind, Container, RootFs, Status};
use cove_sagemaker::studio::{app_base_path, home_dir, resource_spec};
use cove_store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an app's process may take to open its port.
const START_TIMEOUT: Duration = Duration::from_secs(120);

driver!(
    /// Studio apps.
    StudioApps
);

impl Driver for StudioApps {
    type Resource = StudioApp;

    fn step(&self, r: &StudioApp) -> anyhow::Result<Step> {
        if r.phase == AppPhase::Gone {
            return Ok(Step::Done);
        }
        if self.host_lost(r) {
            self.start_elsewhere(r)?;
            return Ok(Step::Next);
        }
        if r.phase == AppPhase::Starting && r.eni_id.is_none() {
            if let Err(Failure(reason)) = self.provision(r)? {
                fail_app(&self.store, &r.key(), reason)?;
            }
            return Ok(Step::Next);
        }
        // The app's host does the rest: the driver waits for what it
        // writes (or for its host to be lost).
        let generation = self.store.generation();
        if self
            .store
            .snapshot()
            .studio_apps
            .get(&r.key())
            .map(|a| a.as_ref())
            == Some(r)
        {
            self.store
                .wait_for_change(generation, Duration::from_secs(1));
        }
        Ok(Step::Next)
    }

    fn fail(&self, r: &StudioApp, reason: &str) -> anyhow::Result<()> {
        fail_app(&self.store, &r.key(), reason.to_string())
    }
}

/// Applies `f` to the stored app in one write.
fn update_app(store: &Store, key: &str, f: impl FnOnce(&mut StudioApp)) -> anyhow::Result<()> {
    crate::workers::update(store, key, |a: &mut StudioApp| {
        f(a);
        a.last_modified_time = now_rfc3339();
    })
}

/// Marks the app failed: its host stops it.
fn fail_app(store: &Store, key: &str, reason: String) -> anyhow::Result<()> {
    tracing::info!(app = %key, %reason, "Studio app failed");
    update_app(store, key, |a| {
        a.status = AppStatus::Failed;
        a.failure_reason = Some(reason);
        a.phase = AppPhase::Stopping;
    })
}

impl StudioApps {
    /// Whether the app is placed on a host that is lost.
    fn host_lost(&self, a: &StudioApp) -> bool {
        cove_model::hosts::on_lost_host(&self.store.snapshot(), a.placed_on.as_deref())
    }

    /// Gives back the ENIs of an app whose host is lost and, unless it was
    /// being deleted, starts it again on another host (`Pending` meanwhile).
    /// What it left on the lost host is removed when the host is back.
    fn start_elsewhere(&self, a: &StudioApp) -> anyhow::Result<()> {
        tracing::warn!(app = %a.arn, host = ?a.placed_on, "the host of a Studio app was lost; starting it elsewhere");
        self.store.write(|tx| {
            let Some(mut app) = tx.world.studio_apps.get(&a.key()).map(|x| (**x).clone()) else {
                return Ok(());
            };
            release(tx, app.eni_id.take().as_deref(), None);
            release(tx, app.home_eni_id.take().as_deref(), None);
            app.netns_path = None;
            app.placed_on = None;
            if app.phase == AppPhase::Stopping {
                release(tx, app.session_access_key.take().as_deref(), None);
                if app.status != AppStatus::Failed {
                    app.status = AppStatus::Deleted;
                }
                app.phase = AppPhase::Gone;
            } else {
                app.status = AppStatus::Pending;
                app.phase = AppPhase::Starting;
            }
            app.last_modified_time = now_rfc3339();
            tx.put(app);
            Ok(())
        })?;
        Ok(())
    }

    /// The app's role session and ENIs, on the host it is placed on.
    fn provision(&self, a: &StudioApp) -> anyhow::Result<Result<(), Failure>> {
        let key = a.key();
        let world = self.store.snapshot();
        let (Some(domain), Some(profile)) = (
            world.studio_domains.get(&StudioDomain::key_of(
                &a.region,
                &a.account_id,
                &a.domain_id,
            )),
            world.user_profiles.get(&UserProfile::key_of(
                &a.region,
                &a.account_id,
                &a.domain_id,
                &a.user_profile_name,
            )),
        ) else {
            return Ok(Err(Failure(
                "The domain or user profile no longer exists.".into(),
            )));
        };
        if self.settings.instance.is_none() {
            return Ok(Err(Failure(
                "Cove's data plane is off (it needs root, ip and nft), so Studio apps cannot get their network interfaces.".into(),
            )));
        }
        let settings = profile.request.user_settings.as_ref();
        let defaults = &domain.request.default_user_settings;
        let role = settings
            .and_then(|s| s.execution_role.clone())
            .or(defaults.execution_role.clone());
        if let (Some(role), None) = (&role, &a.session_access_key) {
            let s = assume_job_role(&self.sts, &a.account_id, role)?;
            update_app(&self.store, &key, |a| a.session_access_key = Some(s))?;
        }
        {
            let vpc_only = domain.request.app_network_access_type.as_deref() == Some("VpcOnly");
            let description = format!(
                "[DO NOT DELETE] ENI managed by SageMaker for Studio Domain {} - {} {} of {}",
                a.domain_id, a.app_type, a.app_name, a.user_profile_name
            );
            // An ENI in one of the domain's subnets, with the user's and
            // the domain's groups and the outbound NFS group.
            let in_domain_vpc = || {
                let subnets = domain.request.subnet_ids.as_deref().unwrap_or_default();
                let subnet = subnets
                    [cove_model::convert::u64_to_usize(fnv64(&key) % subnets.len().max(1) as u64)]
                .clone();
                let mut groups: Vec<String> = settings
                    .and_then(|s| s.security_groups.clone())
                    .unwrap_or_default();
                groups.extend(defaults.security_groups.iter().flatten().cloned());
                groups.extend(domain.outbound_nfs_group.clone());
                let groups = cove_sagemaker::common::unique(groups);
                if groups.len() > 5 {
                    return Err(cove_model::AwsError::client(
                        "SecurityGroupsPerInterfaceLimitExceeded",
                        "An app's ENI can have at most 5 security groups, the domain's NFS group included.",
                    ));
                }
                Ok(crate::Placement::Subnet { subnet, groups })
            };
            let home_on_efs = world.file_systems.contains_key(&domain.home_efs_id);
            if home_on_efs {
                // SageMaker makes the user's directory on the file system,
                // whose bytes are on the control plane's host.
                let on_fs = self
                    .settings
                    .efs_dir
                    .join(&domain.home_efs_id)
                    .join(profile.home_uid.to_string());
                std::fs::create_dir_all(&on_fs)?;
            }
            // Its host, by the same rule as a job's instance (apps hold a
            // host's capacity as instances do).
            let instance_type = resource_spec(&world, a)
                .instance_type
                .unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.to_string());
            let placed_on = cove_model::hosts::place_instances(
                &world,
                1,
                cove_model::hosts::Demand::of(&instance_type),
            )
            .pop()
            .flatten();
            let made = self.store.write_as(&a.account_id, |tx| {
                let mut app = tx.cloned::<StudioApp>(&key)?;
                let placement = if vpc_only {
                    in_domain_vpc()?
                } else {
                    crate::Placement::Managed(crate::ManagedNetwork::Studio)
                };
                app.eni_id = Some(crate::create_workload_eni(
                    tx,
                    self.public_network.as_ref(),
                    placement,
                    (&app.region, &app.account_id),
                    description.clone(),
                    placed_on.as_deref(),
                )?);
                if !vpc_only && home_on_efs {
                    app.home_eni_id = Some(crate::create_workload_eni(
                        tx,
                        self.public_network.as_ref(),
                        in_domain_vpc()?,
                        (&app.region, &app.account_id),
                        format!(
                            "[DO NOT DELETE] ENI managed by SageMaker for Studio Domain {} - home file system of {} ({} {})",
                            a.domain_id, a.user_profile_name, a.app_type, a.app_name
                        ),
                        placed_on.as_deref(),
                    )?);
                }
                app.placed_on = placed_on.clone();
                tx.put(app);
                Ok(())
            });
            if let Err(e) = made {
                return Ok(Err(Failure(format!(
                    "Cannot create the app's network interface: {}",
                    e.message
                ))));
            }
            self.wait_for_data_plane()?;
        }
        Ok(Ok(()))
    }
}

/// The Studio apps placed on this host: their home mounts, processes,
/// watches and stops.
pub struct AppsHere {
    store: Arc<Store>,
    settings: crate::Settings,
    here: Locality,
    workers: Workers,
}

impl AppsHere {
    pub fn new(store: Arc<Store>, settings: crate::Settings, here: Locality) -> Arc<AppsHere> {
        Arc::new(AppsHere {
            store,
            settings,
            here,
            workers: Workers::default(),
        })
    }

    /// Gives each app placed here a worker for its phase, after every
    /// change to the store and every second; removes what apps that no
    /// longer run here left (at start, then every [`LEFTOVER_SWEEP`]).
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let me = self.clone();
        let sweep = Every::new(LEFTOVER_SWEEP);
        watch_store_every(
            self.store.clone(),
            "cove-studio",
            Duration::from_secs(1),
            move |world| {
                for a in world.studio_apps.values() {
                    if !me.here.runs(a.placed_on.as_deref()) {
                        continue;
                    }
                    let (key, worker) = (a.key(), me.clone());
                    let thread = format!("app-{}", a.user_profile_name);
                    match a.phase {
                        AppPhase::Starting if a.eni_id.is_some() => {
                            me.workers.run_once(&key.clone(), thread, move || {
                                if let Err(e) = worker.start(&key) {
                                    tracing::error!(app = %key, error = %e, "starting a Studio app failed; retrying");
                                    std::thread::sleep(Duration::from_secs(1));
                                }
                            })
                        }
                        AppPhase::Running => me.workers.run_once(&key.clone(), thread, move || {
                            if let Err(e) = worker.watch(&key) {
                                tracing::error!(app = %key, error = %e, "watching a Studio app failed");
                            }
                        }),
                        AppPhase::Stopping => me.workers.run_once(&key.clone(), thread, move || {
                            if let Err(e) = worker.stop(&key) {
                                tracing::error!(app = %key, error = %e, "stopping a Studio app failed; retrying");
                                std::thread::sleep(Duration::from_secs(1));
                            }
                        }),
                        _ => {}
                    }
                }
                if sweep.due() {
                    me.remove_leftovers(world);
                }
            },
        )
    }

    fn app(&self, key: &str) -> Option<StudioApp> {
        self.store
            .snapshot()
            .studio_apps
            .get(key)
            .map(|a| (**a).clone())
    }

    fn app_dir(&self, a: &StudioApp) -> PathBuf {
        app_dir(&self.settings.jobs_dir, a)
    }

    /// Mounts the app's home, starts its process and marks it in service
    /// once its port is open (or failed).
    fn start(&self, key: &str) -> anyhow::Result<()> {
        let Some(a) = self.app(key).filter(|a| a.phase == AppPhase::Starting) else {
            return Ok(());
        };
        crate::wait_for_network_here(&self.store, &self.settings, "app's ENIs")?;
        match self.try_start(&a)? {
            Ok(()) => Ok(()),
            Err(Failure(reason)) => fail_app(&self.store, key, reason),
        }
    }

    fn try_start(&self, a: &StudioApp) -> anyhow::Result<Result<(), Failure>> {
        let key = a.key();
        let Some(netns) = eni_netns(&self.settings, a.eni_id.as_deref()) else {
            return Ok(Err(Failure("The app has no network interface.".into())));
        };
        let netns_path = format!("{}/{netns}", cove_net::netns::NETNS_DIR);
        let dir = self.app_dir(a);
        let state = dir.join("state");
        let container = match Container::adopt(&state)? {
            Some(c) if c.status() == Status::Running => c,
            _ => {
                stop_container(&dir, Duration::from_secs(1));
                let home = match self.home(a, &netns_path) {
                    Ok(home) => home,
                    Err(reason) => return Ok(Err(Failure(reason))),
                };
                match self.launch_app(a, &netns, home) {
                    Ok(c) => c,
                    // A command that cannot start is the app's failure, not a transient one.
                    Err(e) => {
                        return Ok(Err(Failure(format!(
                            "The app's process could not start: {e:#}"
                        ))))
                    }
                }
            }
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self
                .store
                .snapshot()
                .studio_apps
                .get(&key)
                .is_none_or(|x| x.phase != AppPhase::Starting)
            {
                return Ok(Ok(()));
            }
            if container.status() != Status::Running {
                return Ok(Err(Failure(format!(
                    "The app's process ended before it served: {}",
                    last_line(&dir.join("container.log"))
                ))));
            }
            let open = cove_net::netns::run_in_path(&netns_path, || {
                std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 1], STUDIO_PORT)),
                    Duration::from_millis(500),
                )
            });
            if matches!(open, Ok(Ok(_))) {
                break;
            }
            if Instant::now() > deadline {
                return Ok(Err(Failure(format!(
                    "The app did not open port {STUDIO_PORT} within {} s.",
                    START_TIMEOUT.as_secs()
                ))));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        update_app(&self.store, &key, |a| {
            a.status = AppStatus::InService;
            a.netns_path = Some(netns_path);
            a.phase = AppPhase::Running;
        })?;
        tracing::info!(app = %a.arn, "Studio app in service");
        Ok(Ok(()))
    }

    /// The user's home for app `a`: the directory named by the profile's
    /// `HomeEfsFileSystemUid` on the domain's home file system, mounted over
    /// NFS from the mount target in the zone of the app's ENI in the
    /// domain's VPC (its only ENI in VpcOnly, its second one in
    /// PublicInternetOnly), so the NFS groups decide. A domain made before
    /// homes moved to EFS keeps its host directory.
    fn home(&self, a: &StudioApp, netns_path: &str) -> Result<PathBuf, String> {
        let world = self.store.snapshot();
        let internal = |e: std::io::Error| format!("InternalServerError: {e}");
        let domain = world.studio_domains.get(&StudioDomain::key_of(
            &a.region,
            &a.account_id,
            &a.domain_id,
        ));
        let profile = world.user_profiles.get(&UserProfile::key_of(
            &a.region,
            &a.account_id,
            &a.domain_id,
            &a.user_profile_name,
        ));
        let (Some(domain), Some(profile)) = (domain, profile) else {
            return Err("The domain or user profile no longer exists.".into());
        };
        let fs_id = &domain.home_efs_id;
        if !world.file_systems.contains_key(fs_id) {
            let home = home_dir(
                &self.settings.studio_dir,
                &a.domain_id,
                &a.user_profile_name,
            );
            std::fs::create_dir_all(&home).map_err(internal)?;
            return Ok(home);
        }
        // The driver made the user's directory on the file system.
        let uid = profile.home_uid.to_string();
        let unable = |seen: &str| {
            format!(
                "ClientError: Unable to mount the home directory of user profile {} (directory /{uid} of file system {fs_id}). Please ensure the file system's mount targets admit NFS (TCP 2049) from the app's security groups and the subnets' network ACLs allow it. ({seen})",
                a.user_profile_name
            )
        };
        // A PublicInternetOnly app reaches its home through its second ENI,
        // in the domain's VPC.
        let eni = a
            .home_eni_id
            .as_ref()
            .or(a.eni_id.as_ref())
            .and_then(|e| world.network_interfaces.get(e))
            .ok_or_else(|| unable("the app has no network interface"))?;
        let netns_path = match &a.home_eni_id {
            Some(id) => eni_netns(&self.settings, Some(id))
                .map(|ns| format!("{}/{ns}", cove_net::netns::NETNS_DIR))
                .ok_or_else(|| unable("the data plane is off"))?,
            None => netns_path.to_string(),
        };
        let dir = self.app_dir(a);
        let mountpoint = dir.join("efs").join("home");
        crate::file_systems::ThroughEni {
            world: &world,
            account: &a.account_id,
            owner_of_fs: self.store.owner_of::<cove_model::efs::FileSystem>(fs_id),
            fs_id,
            eni,
            netns_path: &netns_path,
            connect_timeout: self.settings.connect_timeout,
        }
        .mount(
            &self.settings.runner,
            &format!("/{uid}"),
            &mountpoint,
            false,
            dir.join("efs-home.log"),
        )
        .map_err(|seen| unable(&seen))?;
        Ok(mountpoint)
    }

    fn launch_app(&self, a: &StudioApp, netns: &str, home: PathBuf) -> anyhow::Result<Container> {
        let world = self.store.snapshot();
        let credentials = session_of(&self.store, a.session_access_key.as_deref())
            .map(ContainerCredentials::from);
        let dir = self.app_dir(a);
        std::fs::create_dir_all(&dir)?;
        let hostname = format!("{}-{}", a.app_type.to_ascii_lowercase(), a.app_name);
        let ip = a
            .eni_id
            .as_ref()
            .and_then(|e| world.network_interfaces.get(e))
            .map(|e| e.private_ip.to_string())
            .unwrap_or_default();
        let spec = resource_spec(&world, a);
        let instance_type = spec
            .instance_type
            .unwrap_or_else(|| "ml.t3.medium".to_string());
        let contract = contract::studio_app(
            &a.region,
            credentials.as_ref(),
            &a.app_type,
            &a.user_profile_name,
            &app_base_path(&a.domain_id, &a.user_profile_name),
            self.settings.studio_command.as_deref(),
        );
        let (_, gpus) = cove_host::launch::gpus_for(&self.settings, &instance_type, &dir)?;
        launch_host(
            &self.settings,
            HostLaunch {
                id: a.tunnel_id(),
                dir: &dir,
                root: RootFs::Host,
                contract,
                hostname: hostname.clone(),
                hosts_file: format!("127.0.0.1\tlocalhost\n{ip}\t{hostname}\n"),
                netns: Some(netns.to_string()),
                isolated: false,
                instance_type: &instance_type,
                extra_binds: vec![Bind {
                    source: home,
                    target: STUDIO_HOME.into(),
                    read_only: false,
                }],
                gpus,
            },
        )
    }

    /// Watches a running app until it is deleted or its process ends.
    fn watch(&self, key: &str) -> anyhow::Result<()> {
        let Some(a) = self.app(key) else {
            return Ok(());
        };
        let state = self.app_dir(&a).join("state");
        loop {
            let Some(now) = self.store.snapshot().studio_apps.get(key).cloned() else {
                return Ok(());
            };
            if now.phase != AppPhase::Running {
                return Ok(());
            }
            let running = Container::adopt(&state)?.is_some_and(|c| c.status() == Status::Running);
            if !running {
                return fail_app(
                    &self.store,
                    key,
                    format!(
                        "The app's process ended: {}",
                        last_line(&self.app_dir(&a).join("container.log"))
                    ),
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Stops the app's process, removes its files and gives back its ENIs
    /// and session.
    fn stop(&self, key: &str) -> anyhow::Result<()> {
        let Some(a) = self.app(key).filter(|a| a.phase == AppPhase::Stopping) else {
            return Ok(());
        };
        let dir = self.app_dir(&a);
        stop_container(&dir, Duration::from_secs(2));
        self.store.write(|tx| {
            let Some(mut app) = tx.world.studio_apps.get(&a.key()).map(|x| (**x).clone()) else {
                return Ok(());
            };
            release(
                tx,
                app.eni_id.take().as_deref(),
                app.session_access_key.take().as_deref(),
            );
            release(tx, app.home_eni_id.take().as_deref(), None);
            if app.status != AppStatus::Failed {
                app.status = AppStatus::Deleted;
            }
            app.netns_path = None;
            app.phase = AppPhase::Gone;
            app.last_modified_time = now_rfc3339();
            tx.put(app);
            Ok(())
        })?;
        cove_runtime::overlay::unmount(&dir.join("rootfs"));
        // Before the directory goes: below the mount is the user's home.
        cove_host::efs::unmount_all(&dir.join("efs"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }

    /// Removes the process and files of apps that no longer run here
    /// (started elsewhere while this host was lost, or deleted).
    fn remove_leftovers(&self, world: &cove_model::world::World) {
        let live: std::collections::HashSet<PathBuf> = world
            .studio_apps
            .values()
            .filter(|a| a.phase != AppPhase::Gone && self.here.runs(a.placed_on.as_deref()))
            .map(|a| self.app_dir(a))
            .collect();
        let children = |d: &std::path::Path| -> Vec<PathBuf> {
            std::fs::read_dir(d)
                .map(|r| r.flatten().map(|e| e.path()).collect())
                .unwrap_or_default()
        };
        // <jobs dir>/studio/<domain>/<user profile>/<type>-<name>
        for domain in children(&self.settings.jobs_dir.join("studio")) {
            for profile in children(&domain) {
                for dir in children(&profile) {
                    if dir.is_dir() && !live.contains(&dir) {
                        tracing::info!(dir = %dir.display(), "removing what a Studio app no longer here left");
                        if let Err(e) = crate::instances::remove_instance_dir(&dir) {
                            tracing::warn!(dir = %dir.display(), error = %e, "removing a Studio app's leftovers failed");
                        }
                    }
                }
            }
        }
    }
}

/// An app's files: `<jobs dir>/studio/<domain>/<user profile>/<type>-<name>`.
fn app_dir(jobs_dir: &std::path::Path, a: &StudioApp) -> PathBuf {
    jobs_dir
        .join("studio")
        .join(&a.domain_id)
        .join(&a.user_profile_name)
        .join(format!(
            "{}-{}",
            a.app_type.to_ascii_lowercase(),
            a.app_name
        ))
}

/// The instance type an app holds a host's capacity for when its spec
/// names none (SageMaker's default for Studio apps).
const DEFAULT_INSTANCE_TYPE: &str = "ml.t3.medium";

fn last_line(log: &std::path::Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "no output".into())
}
