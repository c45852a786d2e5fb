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
        }
    }
}
