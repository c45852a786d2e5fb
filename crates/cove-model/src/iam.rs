//! IAM's stored records: roles (with their trust policy, inline policies
//! and attached managed policies) and customer managed policies with their
//! versions. Documents are kept as the text the caller sent; they were
//! checked by `policy::Policy::parse` before they were stored.

use crate::world::Tags;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IamRole {
    /// `<account>/<name lowercased>`: the world's key, since IAM names are
    /// unique in an account regardless of case.
    pub key: String,
    pub name: String,
    pub path: String,
    pub role_id: String,
    pub arn: String,
    /// Unix seconds.
    pub created: i64,
    pub assume_role_policy: String,
    #[serde(default)]
    pub description: Option<String>,
    pub max_session_duration: i64,
    #[serde(default)]
    pub permissions_boundary: Option<String>,
    /// Inline policies by name.
    #[serde(default)]
    pub inline_policies: BTreeMap<String, String>,
    /// Managed policy ARNs, in attachment order.
    #[serde(default)]
    pub attached_policies: Vec<String>,
    #[serde(default)]
    pub tags: Tags,
}

impl IamRole {
    /// The world's key for a role name in `account`.
    pub fn key_of(account: &str, name: &str) -> String {
        format!("{account}/{}", name.to_ascii_lowercase())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyVersion {
    pub version_id: String,
    pub document: String,
    pub created: i64,
}

/// A customer managed policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IamPolicy {
    pub arn: String,
    pub name: String,
    pub path: String,
    pub policy_id: String,
    pub created: i64,
    pub updated: i64,
    #[serde(default)]
    pub description: Option<String>,
    pub default_version: String,
    pub versions: Vec<PolicyVersion>,
    /// The number the next version gets (`v<n>`); IAM never reuses one.
    pub next_version: u32,
    #[serde(default)]
    pub tags: Tags,
}

impl IamPolicy {
    pub fn default_document(&self) -> Option<&str> {
        self.versions
            .iter()
            .find(|v| v.version_id == self.default_version)
            .map(|v| v.document.as_str())
    }
}

/// An IAM user: a long-term identity of one account, limited (with IAM
/// enforced) by its inline and attached policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IamUser {
    /// `<account>/<name lowercased>`, as for roles.
    pub key: String,
    pub name: String,
    pub path: String,
    pub user_id: String,
    pub arn: String,
    pub account_id: String,
    /// Unix seconds.
    pub created: i64,
    #[serde(default)]
    pub permissions_boundary: Option<String>,
    /// Inline policies by name.
    #[serde(default)]
    pub inline_policies: BTreeMap<String, String>,
    /// Managed policy ARNs, in attachment order.
    #[serde(default)]
    pub attached_policies: Vec<String>,
    #[serde(default)]
    pub tags: Tags,
}

impl IamUser {
    /// The world's key for a user name in `account`.
    pub fn key_of(account: &str, name: &str) -> String {
        IamRole::key_of(account, name)
    }
}

/// An IAM user's access key, keyed by its id: what a request's signature
/// names, so the credential lookup finds it directly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IamAccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The key (`<account>/<name>`) of the user it belongs to.
    pub user_key: String,
    pub user_name: String,
    pub account_id: String,
    /// `Active` or `Inactive`; an inactive key is refused.
    pub active: bool,
    /// Unix seconds.
    pub created: i64,
}
