//! Amazon EFS as stored: file systems, their mount targets (one per
//! availability zone, each an ENI in a subnet of one VPC, where Cove serves
//! NFS) and access points. A file system's bytes live in a directory of
//! Cove's data directory, named by its id.

use serde::{Deserialize, Serialize};

/// A lifecycle state as EFS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LifeCycleState {
    Creating,
    Available,
    Updating,
    Deleting,
    Deleted,
    Error,
}

impl LifeCycleState {
    pub fn as_str(self) -> &'static str {
        match self {
            LifeCycleState::Creating => "creating",
            LifeCycleState::Available => "available",
            LifeCycleState::Updating => "updating",
            LifeCycleState::Deleting => "deleting",
            LifeCycleState::Deleted => "deleted",
            LifeCycleState::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileSystem {
    /// `fs-` and 17 hex digits.
    pub id: String,
    pub region: String,
    pub owner_id: String,
    pub creation_token: String,
    pub created_at: String,
    pub state: LifeCycleState,
    /// `generalPurpose` or `maxIO`.
    pub performance_mode: String,
    /// `bursting`, `provisioned` or `elastic`.
    pub throughput_mode: String,
    pub provisioned_throughput_mibps: Option<f64>,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    /// A One Zone file system's zone.
    pub availability_zone: Option<String>,
    /// The resource policy, a JSON document as sent.
    pub policy: Option<String>,
    /// The lifecycle policies as sent (transition rules; Cove keeps every
    /// byte in one class).
    #[serde(default)]
    pub lifecycle_policies: Vec<serde_json::Value>,
    /// `ENABLED` or `DISABLED`.
    pub backup_status: String,
}

impl FileSystem {
    /// An available file system with EFS's defaults: general purpose,
    /// bursting, unencrypted, regional, no policy, no backups.
    pub fn with_defaults(
        id: &str,
        region: &str,
        owner_id: &str,
        creation_token: &str,
        created_at: &str,
    ) -> FileSystem {
        FileSystem {
            id: id.into(),
            region: region.into(),
            owner_id: owner_id.into(),
            creation_token: creation_token.into(),
            created_at: created_at.into(),
            state: LifeCycleState::Available,
            performance_mode: "generalPurpose".into(),
            throughput_mode: "bursting".into(),
            provisioned_throughput_mibps: None,
            encrypted: false,
            kms_key_id: None,
            availability_zone: None,
            policy: None,
            lifecycle_policies: vec![],
            backup_status: "DISABLED".into(),
        }
    }

    pub fn arn(&self) -> String {
        format!(
            "arn:aws:elasticfilesystem:{}:{}:file-system/{}",
            self.region, self.owner_id, self.id
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountTarget {
    /// `fsmt-` and 17 hex digits.
    pub id: String,
    pub region: String,
    pub owner_id: String,
    pub file_system_id: String,
    pub subnet_id: String,
    pub vpc_id: String,
    pub availability_zone: String,
    pub availability_zone_id: String,
    pub ip_address: std::net::Ipv4Addr,
    /// The requester-managed ENI Cove serves NFS on; its security groups
    /// are the mount target's.
    pub network_interface_id: String,
    pub state: LifeCycleState,
}

/// The POSIX identity an access point imposes on every request through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PosixUser {
    pub uid: i64,
    pub gid: i64,
    #[serde(default)]
    pub secondary_gids: Vec<i64>,
}

/// How an access point's root directory is made when it does not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreationInfo {
    pub owner_uid: i64,
    pub owner_gid: i64,
    /// Octal, as sent (`755`).
    pub permissions: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessPoint {
    /// `fsap-` and 17 hex digits.
    pub id: String,
    pub region: String,
    pub owner_id: String,
    pub file_system_id: String,
    pub client_token: String,
    pub posix_user: Option<PosixUser>,
    /// The directory of the file system this access point exposes as `/`.
    pub root_path: String,
    pub creation_info: Option<CreationInfo>,
    pub state: LifeCycleState,
}

impl AccessPoint {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:elasticfilesystem:{}:{}:access-point/{}",
            self.region, self.owner_id, self.id
        )
    }
}
