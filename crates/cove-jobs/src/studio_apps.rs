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
//! Either way the process runs under the container runtime:
//! - on the host's read-only root;
//! - with the user's home directory (one per user profile, shared by that
//!   user's apps) bound read-write at `/home/sagemaker-user`;
//! - with the execution role's credentials;
//! - listening on port 8888 in the ENI's namespace, where Cove's Studio
//!   proxy reaches it.

use crate::assume_job_role;
use crate::contract::{self, ContainerCredentials, STUDIO_HOME, STUDIO_PORT};
use crate::driver::{driver, Driver, Failure, Step};
use crate::hosting::stop_container;
use crate::release;
use crate::session_of;
use cove_host::eni_netns;
use cove_host::launch::launch_host;
use cove_host::launch::HostLaunch;
use cove_model::ids::{fnv64, now_rfc3339};
use cove_model::studio::{AppPhase, AppStatus, StudioApp, StudioDomain, UserProfile};
use cove_runtime::{Bind, Container, RootFs, Status};
use cove_sagemaker::studio::{app_base_path, home_dir, resource_spec};
use std::path::PathBuf;
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
        match r.phase {
            AppPhase::Starting => self.app_start(r)?,
            AppPhase::Running => self.app_watch(r)?,
            AppPhase::Stopping => self.app_stop(r)?,
            AppPhase::Gone => return Ok(Step::Done),
        }
        Ok(Step::Next)
    }

    fn fail(&self, r: &StudioApp, reason: &str) -> anyhow::Result<()> {
        self.fail_app(&r.key(), reason.to_string())
    }
}

impl StudioApps {
    fn update_app(&self, key: &str, f: impl FnOnce(&mut StudioApp)) -> anyhow::Result<()> {
        crate::workers::update(&self.store, key, |a: &mut StudioApp| {
            f(a);
            a.last_modified_time = now_rfc3339();
        })
    }

    fn app_dir(&self, a: &StudioApp) -> PathBuf {
        self.settings
            .jobs_dir
            .join("studio")
            .join(&a.domain_id)
            .join(&a.user_profile_name)
            .join(format!(
                "{}-{}",
                a.app_type.to_ascii_lowercase(),
                a.app_name
            ))
    }

    fn fail_app(&self, key: &str, reason: String) -> anyhow::Result<()> {
        tracing::info!(app = %key, %reason, "Studio app failed");
        self.update_app(key, |a| {
            a.status = AppStatus::Failed;
            a.failure_reason = Some(reason);
            a.phase = AppPhase::Stopping;
        })
    }

    fn app_start(&self, a: &StudioApp) -> anyhow::Result<()> {
        match self.try_start(a)? {
            Ok(()) => Ok(()),
            Err(Failure(reason)) => self.fail_app(&a.key(), reason),
        }
    }

    fn try_start(&self, a: &StudioApp) -> anyhow::Result<Result<(), Failure>> {
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
            self.update_app(&key, |a| a.session_access_key = Some(s))?;
        }
        if a.eni_id.is_none() {
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
                    None,
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
                        None,
                    )?);
                }
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
        let Some(a) = self.store.snapshot().studio_apps.get(&key).cloned() else {
            return Ok(Ok(()));
        };
        let Some(netns) = eni_netns(&self.settings, a.eni_id.as_deref()) else {
            return Ok(Err(Failure("The app has no network interface.".into())));
        };
        let netns_path = format!("{}/{netns}", cove_net::netns::NETNS_DIR);
        let dir = self.app_dir(&a);
        let state = dir.join("state");
        let container = match Container::adopt(&state)? {
            Some(c) if c.status() == Status::Running => c,
            _ => {
                stop_container(&dir, Duration::from_secs(1));
                let home = match self.home(&a, &netns_path) {
                    Ok(home) => home,
                    Err(reason) => return Ok(Err(Failure(reason))),
                };
                match self.launch_app(&a, &netns, home) {
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
        self.update_app(&key, |a| {
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
        // SageMaker makes the user's directory on the file system.
        let uid = profile.home_uid.to_string();
        let on_fs = self.settings.efs_dir.join(fs_id).join(&uid);
        std::fs::create_dir_all(&on_fs).map_err(internal)?;
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
        launch_host(
            &self.settings,
            HostLaunch {
                id: format!("studio-{:016x}", fnv64(&a.key())),
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
            },
        )
    }

    /// Watches a running app until it is deleted or its process ends.
    fn app_watch(&self, a: &StudioApp) -> anyhow::Result<()> {
        let key = a.key();
        let state = self.app_dir(a).join("state");
        loop {
            let Some(now) = self.store.snapshot().studio_apps.get(&key).cloned() else {
                return Ok(());
            };
            if now.phase != AppPhase::Running {
                return Ok(());
            }
            let running = Container::adopt(&state)?.is_some_and(|c| c.status() == Status::Running);
            if !running {
                return self.fail_app(
                    &key,
                    format!(
                        "The app's process ended: {}",
                        last_line(&self.app_dir(a).join("container.log"))
                    ),
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn app_stop(&self, a: &StudioApp) -> anyhow::Result<()> {
        let dir = self.app_dir(a);
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
}

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
