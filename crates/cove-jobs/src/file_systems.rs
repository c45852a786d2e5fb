//! Training channels on EFS (`FileSystemDataSource`): each host mounts the
//! file system through its own ENI from the mount target in its ENI's
//! availability zone (as the file system's DNS name resolves on AWS), at
//! `<host dir>/efs/<channel>`, which the container sees at
//! `/opt/ml/input/data/<channel>`, read-only or read-write as asked.

use cove_host::efs::{EfsMount, MountFailure};
use cove_model::efs::{FileSystem, MountTarget};
use cove_model::jobs::{JobRequest, SageMakerJob};
use cove_model::vpc::NetworkInterface;
use cove_model::world::World;
use cove_runtime::Bind;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One channel on a file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FsChannel {
    pub name: String,
    pub file_system_id: String,
    pub directory_path: String,
    pub read_only: bool,
}

/// A training job's channels on file systems, in request order.
pub(crate) fn fs_channels(job: &SageMakerJob) -> Vec<FsChannel> {
    let JobRequest::Training(r) = &job.request else {
        return vec![];
    };
    r.input_data_config
        .iter()
        .flatten()
        .filter_map(|c| {
            let fs = c.data_source.file_system_data_source.as_ref()?;
            Some(FsChannel {
                name: c.channel_name.clone(),
                file_system_id: fs.file_system_id.clone(),
                directory_path: fs.directory_path.clone(),
                read_only: fs.file_system_access_mode != "rw",
            })
        })
        .collect()
}

/// Where a host's channel is mounted on the host.
pub(crate) fn mountpoint(host_dir: &Path, channel: &str) -> PathBuf {
    host_dir.join("efs").join(channel)
}

/// The binds that show a host's mounted channels to its container.
pub(crate) fn binds(job: &SageMakerJob, host_dir: &Path) -> Vec<Bind> {
    fs_channels(job)
        .into_iter()
        .map(|c| Bind {
            source: mountpoint(host_dir, &c.name),
            target: PathBuf::from(format!("/opt/ml/input/data/{}", c.name)),
            read_only: c.read_only,
        })
        .collect()
}

/// The job's failure when a channel cannot be mounted, in SageMaker's
/// words, with what Cove saw.
fn unable(c: &FsChannel, seen: &str) -> String {
    format!(
        "ClientError: Unable to mount file system: {} directory path: {}. Please ensure the file system exists, the directory path is valid, and the mount target is accessible from the subnet with proper security group settings. ({seen})",
        c.file_system_id, c.directory_path
    )
}

/// The mount target a host on `eni` uses for file system `fs_id` of
/// `account`: the one in the ENI's zone.
pub(crate) fn mount_target_for<'w>(
    world: &'w World,
    owner_of_fs: Option<&str>,
    account: &str,
    fs_id: &str,
    eni: &NetworkInterface,
) -> Result<&'w MountTarget, String> {
    let fs: Option<&FileSystem> = world
        .file_systems
        .get(fs_id)
        .map(AsRef::as_ref)
        .filter(|f| f.region == eni.region && owner_of_fs == Some(account));
    if fs.is_none() {
        return Err(format!(
            "file system {fs_id} does not exist in {}",
            eni.region
        ));
    }
    world
        .mount_targets
        .values()
        .map(AsRef::as_ref)
        .find(|m| m.file_system_id == fs_id && m.availability_zone == eni.availability_zone)
        .ok_or_else(|| {
            format!(
                "{fs_id} has no mount target in {}, the zone of {}",
                eni.availability_zone, eni.id
            )
        })
}

/// A file system reached through a workload's ENI, from the mount target
/// in the ENI's zone.
pub(crate) struct ThroughEni<'a> {
    pub world: &'a World,
    /// The account the workload acts for, which must own the file system.
    pub account: &'a str,
    /// Who owns the file system in the store.
    pub owner_of_fs: Option<String>,
    pub fs_id: &'a str,
    pub eni: &'a NetworkInterface,
    /// The ENI's network namespace (`/run/netns/<name>`).
    pub netns_path: &'a str,
    pub connect_timeout: Duration,
}

impl ThroughEni<'_> {
    /// Mounts `export_path` of the file system at `mountpoint` (again, if
    /// a mount is left there by a driver that restarted mid-step); `Err`
    /// says what Cove saw.
    pub(crate) fn mount(
        &self,
        runner: &Path,
        export_path: &str,
        mountpoint: &Path,
        read_only: bool,
        log: PathBuf,
    ) -> Result<(), String> {
        cove_host::efs::unmount(mountpoint);
        let target = mount_target_for(
            self.world,
            self.owner_of_fs.as_deref(),
            self.account,
            self.fs_id,
            self.eni,
        )?;
        let m = EfsMount {
            netns: self.netns_path.to_string(),
            server: SocketAddrV4::new(target.ip_address, cove_net::listen::NFS_PORT),
            export_path: export_path.to_string(),
            mountpoint: mountpoint.to_path_buf(),
            read_only,
            connect_timeout: self.connect_timeout,
            log,
        };
        cove_host::efs::mount(runner, &m).map_err(|e| match e {
            MountFailure::Unreachable(m) => format!(
                "{} did not answer on {}:{}: {m}",
                target.id,
                target.ip_address,
                cove_net::listen::NFS_PORT
            ),
            MountFailure::NoSuchDirectory(m) | MountFailure::Other(m) => m,
        })
    }
}

/// Mounts every file-system channel of one host through its ENI's
/// namespace; on a failure, takes back what it mounted and says why.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mount_host(
    runner: &Path,
    world: &World,
    owner_of: &dyn Fn(&str) -> Option<String>,
    job: &SageMakerJob,
    host_dir: &Path,
    eni: &NetworkInterface,
    netns_path: &str,
    connect_timeout: Duration,
) -> Result<(), String> {
    for c in fs_channels(job) {
        let through = ThroughEni {
            world,
            account: &job.account_id,
            owner_of_fs: owner_of(&c.file_system_id),
            fs_id: &c.file_system_id,
            eni,
            netns_path,
            connect_timeout,
        };
        let mounted = through.mount(
            runner,
            &c.directory_path,
            &mountpoint(host_dir, &c.name),
            c.read_only,
            host_dir.join(format!("efs-{}.log", c.name)),
        );
        if let Err(seen) = mounted {
            cove_host::efs::unmount_all(&host_dir.join("efs"));
            return Err(unable(&c, &seen));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_model::efs::LifeCycleState;
    use std::sync::Arc;

    fn eni(zone: &str) -> NetworkInterface {
        let w = cove_model::fixtures::world("", vec![], [&[], &[], &[]], vec![]);
        let mut e = (**w.network_interfaces.values().next().unwrap()).clone();
        e.availability_zone = zone.into();
        e
    }

    fn target(id: &str, zone: &str) -> MountTarget {
        MountTarget {
            id: id.into(),
            region: "us-east-1".into(),
            owner_id: "123456789012".into(),
            file_system_id: "fs-1".into(),
            subnet_id: "subnet-1".into(),
            vpc_id: "vpc-1".into(),
            availability_zone: zone.into(),
            availability_zone_id: String::new(),
            ip_address: "10.0.1.9".parse().unwrap(),
            network_interface_id: "eni-9".into(),
            state: LifeCycleState::Available,
        }
    }

    #[test]
    fn a_host_uses_the_mount_target_of_its_zone_of_its_own_accounts_file_system() {
        let mut w = World::default();
        let host = eni("us-east-1b");
        let account = "123456789012";
        assert!(mount_target_for(&w, Some(account), account, "fs-1", &host)
            .unwrap_err()
            .contains("does not exist"));
        w.file_systems.insert(
            "fs-1".into(),
            Arc::new(cove_model::fixtures::file_system("fs-1")),
        );
        w.mount_targets
            .insert("fsmt-a".into(), Arc::new(target("fsmt-a", "us-east-1a")));
        let none = mount_target_for(&w, Some(account), account, "fs-1", &host).unwrap_err();
        assert!(none.contains("no mount target in us-east-1b"), "{none}");
        w.mount_targets
            .insert("fsmt-b".into(), Arc::new(target("fsmt-b", "us-east-1b")));
        assert_eq!(
            mount_target_for(&w, Some(account), account, "fs-1", &host)
                .unwrap()
                .id,
            "fsmt-b"
        );
        assert!(mount_target_for(&w, Some("210987654321"), account, "fs-1", &host).is_err());
    }
}
