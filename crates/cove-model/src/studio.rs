//! SageMaker Studio as stored documents: domains, user profiles and apps.
//! A domain owns its NFS security groups and a home directory per user
//! profile; an app is a process on an ENI in the domain's network, driven
//! by the Studio supervisor from the phase kept here.
//!
//! A record keeps its request as the typed struct from `cove-shapes`,
//! boxed: the store's maps hold records inline in their tree nodes, and
//! requests of up to a few KB inline overflowed a driver thread's stack in
//! a debug build. The box changes nothing in the stored JSON.

use crate::jobs::sagemaker_arn;
use cove_shapes::sagemaker::{CreateAppRequest, CreateDomainRequest, CreateUserProfileRequest};
use serde::{Deserialize, Serialize};

crate::text_enum! {
    /// `DomainStatus` and `UserProfileStatus` (the same words).
    pub enum StudioStatus {
        Deleting = "Deleting",
        Failed = "Failed",
        InService = "InService",
        Pending = "Pending",
        Updating = "Updating",
        UpdateFailed = "Update_Failed",
        DeleteFailed = "Delete_Failed",
    }
}

crate::text_enum! {
    /// `AppStatus`.
    pub enum AppStatus {
        Deleted = "Deleted",
        Deleting = "Deleting",
        Failed = "Failed",
        InService = "InService",
        Pending = "Pending",
    }
}

/// A Studio domain (`domain/<d-…>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudioDomain {
    /// `d-` and 12 lowercase letters and digits.
    pub id: String,
    pub name: String,
    pub arn: String,
    pub region: String,
    pub account_id: String,
    /// The Create request, with updates applied.
    pub request: Box<CreateDomainRequest>,
    pub status: StudioStatus,
    pub creation_time: String,
    pub last_modified_time: String,
    /// What `HomeEfsFileSystemId` shows; the homes are directories on the host.
    pub home_efs_id: String,
    /// `security-group-for-inbound-nfs-<domain>` and `…-outbound-nfs-…`, in the domain's VPC.
    pub inbound_nfs_group: Option<String>,
    pub outbound_nfs_group: Option<String>,
    /// The next `HomeEfsFileSystemUid` a user profile gets.
    pub next_uid: u32,
}

impl StudioDomain {
    pub fn key_of(region: &str, account: &str, id: &str) -> String {
        sagemaker_arn(region, account, &format!("domain/{id}"))
    }
}

/// A user profile (`user-profile/<domain>/<name>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserProfile {
    pub domain_id: String,
    pub name: String,
    pub arn: String,
    pub region: String,
    pub request: Box<CreateUserProfileRequest>,
    pub status: StudioStatus,
    pub creation_time: String,
    pub last_modified_time: String,
    /// `HomeEfsFileSystemUid`.
    pub home_uid: u32,
}

impl UserProfile {
    pub fn key_of(region: &str, account: &str, domain: &str, name: &str) -> String {
        sagemaker_arn(region, account, &format!("user-profile/{domain}/{name}"))
    }
}

/// What the Studio supervisor has done for an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppPhase {
    /// The ENI and the role's session are being made, then the process started.
    Starting,
    /// The process runs.
    Running,
    /// DeleteApp (or a failure): the process and the ENI are to go.
    Stopping,
    /// Everything released; the record stays as `Deleted`/`Failed`, as on AWS.
    Gone,
}

/// A Studio app (`app/<domain>/<profile>/<type in lower case>/<name>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudioApp {
    pub domain_id: String,
    pub user_profile_name: String,
    /// `JupyterServer` or `KernelGateway`.
    pub app_type: String,
    pub app_name: String,
    pub arn: String,
    pub region: String,
    pub account_id: String,
    pub request: Box<CreateAppRequest>,
    pub status: AppStatus,
    pub failure_reason: Option<String>,
    pub creation_time: String,
    pub last_modified_time: String,
    pub phase: AppPhase,
    pub eni_id: Option<String>,
    pub session_access_key: Option<String>,
    /// The ENI namespace the proxy reaches the app's port in.
    pub netns_path: Option<String>,
    /// A `PublicInternetOnly` app's second ENI, in the domain's VPC, which
    /// its home file system is reached through (as AWS makes one for EFS
    /// traffic); a `VpcOnly` app reaches it through `eni_id`.
    #[serde(default)]
    pub home_eni_id: Option<String>,
    /// The agent's host it runs on (`None`: the control plane's), set with
    /// its ENIs in one write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_on: Option<String>,
}

impl StudioApp {
    /// The id its container runs under and its host's relay knows it by.
    pub fn tunnel_id(&self) -> String {
        format!("studio-{:016x}", crate::ids::fnv64(&self.key()))
    }

    pub fn key_of(
        region: &str,
        account: &str,
        domain: &str,
        profile: &str,
        app_type: &str,
        name: &str,
    ) -> String {
        sagemaker_arn(
            region,
            account,
            &format!(
                "app/{domain}/{profile}/{}/{name}",
                app_type.to_ascii_lowercase()
            ),
        )
    }

    pub fn key(&self) -> String {
        self.arn.clone()
    }
}
