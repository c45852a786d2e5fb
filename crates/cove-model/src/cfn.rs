//! CloudFormation stacks as stored: the template and parameters they were
//! made from, their status, each resource's physical id and attributes,
//! and their events. A deployer drives a stack from one status to the
//! next; each step is one commit of the stack document.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

crate::text_enum! {
    /// `StackStatus`, as far as Cove's stacks move.
    pub enum StackStatus {
        CreateInProgress = "CREATE_IN_PROGRESS",
        CreateComplete = "CREATE_COMPLETE",
        CreateFailed = "CREATE_FAILED",
        RollbackInProgress = "ROLLBACK_IN_PROGRESS",
        RollbackComplete = "ROLLBACK_COMPLETE",
        RollbackFailed = "ROLLBACK_FAILED",
        DeleteInProgress = "DELETE_IN_PROGRESS",
        DeleteComplete = "DELETE_COMPLETE",
        DeleteFailed = "DELETE_FAILED",
        UpdateInProgress = "UPDATE_IN_PROGRESS",
        UpdateCompleteCleanupInProgress = "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
        UpdateComplete = "UPDATE_COMPLETE",
        UpdateRollbackInProgress = "UPDATE_ROLLBACK_IN_PROGRESS",
        UpdateRollbackCompleteCleanupInProgress = "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
        UpdateRollbackComplete = "UPDATE_ROLLBACK_COMPLETE",
        UpdateRollbackFailed = "UPDATE_ROLLBACK_FAILED",
        /// Made by a `CREATE` change set that has not been executed.
        ReviewInProgress = "REVIEW_IN_PROGRESS",
    }
}

impl StackStatus {
    /// Whether the deployer still has work on the stack.
    pub fn in_progress(self) -> bool {
        matches!(
            self,
            StackStatus::CreateInProgress
                | StackStatus::RollbackInProgress
                | StackStatus::DeleteInProgress
                | StackStatus::UpdateInProgress
                | StackStatus::UpdateCompleteCleanupInProgress
                | StackStatus::UpdateRollbackInProgress
                | StackStatus::UpdateRollbackCompleteCleanupInProgress
        )
    }

    /// Whether an update (or a change set) may start from this status.
    pub fn updatable(self) -> bool {
        matches!(
            self,
            StackStatus::CreateComplete
                | StackStatus::UpdateComplete
                | StackStatus::UpdateRollbackComplete
        )
    }
}

crate::text_enum! {
    /// `ResourceStatus` of a stack's resource.
    pub enum ResourceStatus {
        CreateInProgress = "CREATE_IN_PROGRESS",
        CreateComplete = "CREATE_COMPLETE",
        CreateFailed = "CREATE_FAILED",
        DeleteInProgress = "DELETE_IN_PROGRESS",
        DeleteComplete = "DELETE_COMPLETE",
        DeleteFailed = "DELETE_FAILED",
        DeleteSkipped = "DELETE_SKIPPED",
        UpdateInProgress = "UPDATE_IN_PROGRESS",
        UpdateComplete = "UPDATE_COMPLETE",
        UpdateFailed = "UPDATE_FAILED",
    }
}

impl ResourceStatus {
    /// Made and usable: what depends on it may be made.
    pub fn made(self) -> bool {
        matches!(
            self,
            ResourceStatus::CreateComplete | ResourceStatus::UpdateComplete
        )
    }
}

/// One resource of a stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackResource {
    pub logical_id: String,
    pub resource_type: String,
    pub physical_id: Option<String>,
    pub status: ResourceStatus,
    pub status_reason: Option<String>,
    /// What `Fn::GetAtt` answers for it.
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
    pub last_updated: String,
    /// The evaluated properties it was made or last updated with: what an
    /// update compares the template's new ones to.
    #[serde(default)]
    pub properties: Value,
}

/// What a stack is made from: one version of its template and parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackVersion {
    pub template_body: String,
    pub template: Value,
    pub parameters: BTreeMap<String, Value>,
    pub conditions: BTreeMap<String, bool>,
    pub description: Option<String>,
}

/// One resource change a change set plans (`DescribeChangeSet`'s `Changes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceChange {
    /// `Add`, `Modify` or `Remove`.
    pub action: String,
    pub logical_id: String,
    pub physical_id: Option<String>,
    pub resource_type: String,
    /// `True`, `False` or `Conditional` for `Modify`.
    pub replacement: Option<String>,
    /// The top-level properties that change.
    pub properties: Vec<String>,
}

/// A change set of a stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeSet {
    pub arn: String,
    pub name: String,
    pub description: Option<String>,
    /// `CREATE` (of a stack in `REVIEW_IN_PROGRESS`) or `UPDATE`.
    pub kind: String,
    /// `CREATE_COMPLETE` or `FAILED`.
    pub status: String,
    pub status_reason: Option<String>,
    /// `AVAILABLE`, `UNAVAILABLE`, `EXECUTE_COMPLETE` or `OBSOLETE`.
    pub execution_status: String,
    pub creation_time: String,
    pub version: StackVersion,
    pub capabilities: Vec<String>,
    pub changes: Vec<ResourceChange>,
}

/// One stack event (`DescribeStackEvents`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackEvent {
    pub event_id: String,
    pub logical_id: String,
    pub physical_id: Option<String>,
    pub resource_type: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stack {
    /// The stack id (its ARN), its key.
    pub arn: String,
    pub name: String,
    pub region: String,
    pub account_id: String,
    pub description: Option<String>,
    /// The template as given (for `GetTemplate`) and as parsed.
    pub template_body: String,
    pub template: Value,
    /// Parameter values as `Ref` answers them, the given ones' keys.
    pub parameters: BTreeMap<String, Value>,
    pub conditions: BTreeMap<String, bool>,
    pub status: StackStatus,
    pub status_reason: Option<String>,
    pub disable_rollback: bool,
    pub capabilities: Vec<String>,
    pub tags: Vec<(String, String)>,
    pub creation_time: String,
    pub last_updated: Option<String>,
    pub deletion_time: Option<String>,
    pub resources: BTreeMap<String, StackResource>,
    /// Newest last.
    pub events: Vec<StackEvent>,
    pub outputs: Vec<(String, Value, Option<String>)>,
    /// Output key → export name, for the outputs that export their value.
    #[serde(default)]
    pub exports: BTreeMap<String, String>,
    #[serde(default)]
    pub termination_protection: bool,
    /// During an update: the version it started from (what a rollback
    /// returns to).
    #[serde(default)]
    pub previous: Option<StackVersion>,
    /// During an update: the resources it has brought to the new version.
    #[serde(default)]
    pub updated: std::collections::BTreeSet<String>,
    /// Physical resources an update superseded (replaced or removed from
    /// the template), deleted once the update is complete.
    #[serde(default)]
    pub cleanup: Vec<StackResource>,
    #[serde(default)]
    pub change_sets: Vec<ChangeSet>,
    /// Who asked for what the stack is doing (its create, update or
    /// delete): its resources are made with that principal's permissions,
    /// as CloudFormation makes them with its caller's. `None` (stacks
    /// stored before): the account's root.
    #[serde(default)]
    pub caller: Option<StackCaller>,
}

/// The principal a stack's resource calls are made as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackCaller {
    pub arn: String,
    pub access_key: String,
}

/// At most this many events are kept per stack (the oldest go first).
pub const MAX_EVENTS: usize = 1000;

impl Stack {
    /// The ARN of a new stack.
    pub fn arn_of(region: &str, account: &str, name: &str, id: &str) -> String {
        format!("arn:aws:cloudformation:{region}:{account}:stack/{name}/{id}")
    }

    /// Records an event, dropping the oldest beyond [`MAX_EVENTS`].
    pub fn record(&mut self, event: StackEvent) {
        self.events.push(event);
        if self.events.len() > MAX_EVENTS {
            let extra = self.events.len() - MAX_EVENTS;
            self.events.drain(..extra);
        }
    }
}

impl Stack {
    /// A stack with nothing in it: what lookups see before any resource exists.
    pub fn placeholder() -> Stack {
        Stack {
            arn: String::new(),
            name: String::new(),
            region: String::new(),
            account_id: String::new(),
            description: None,
            template_body: String::new(),
            template: Value::Null,
            parameters: BTreeMap::new(),
            conditions: BTreeMap::new(),
            status: StackStatus::CreateInProgress,
            status_reason: None,
            disable_rollback: false,
            capabilities: vec![],
            tags: vec![],
            creation_time: String::new(),
            last_updated: None,
            deletion_time: None,
            resources: BTreeMap::new(),
            events: vec![],
            outputs: vec![],
            exports: BTreeMap::new(),
            termination_protection: false,
            previous: None,
            updated: Default::default(),
            cleanup: vec![],
            change_sets: vec![],
            caller: None,
        }
    }

    /// The version the stack is made from now.
    pub fn version(&self) -> StackVersion {
        StackVersion {
            template_body: self.template_body.clone(),
            template: self.template.clone(),
            parameters: self.parameters.clone(),
            conditions: self.conditions.clone(),
            description: self.description.clone(),
        }
    }

    /// Makes the stack follow `v` from now on.
    pub fn adopt(&mut self, v: StackVersion) {
        self.template_body = v.template_body;
        self.template = v.template;
        self.parameters = v.parameters;
        self.conditions = v.conditions;
        self.description = v.description;
    }
}
