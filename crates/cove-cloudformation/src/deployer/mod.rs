//! The deployer: follows the store and moves every stack in progress one
//! wave at a time — creating the resources whose dependencies are made (in
//! parallel), or deleting, in reverse, those nothing left depends on — each
//! step one commit of the stack document, so a restart resumes where the
//! last commit left the stack.

mod update;

use crate::providers::{self, Api, Created, Readiness};
use cove_cfn::intrinsics::{self, Context, Lookups};
use cove_model::cfn::{ResourceStatus, Stack, StackCaller, StackEvent, StackResource, StackStatus};
use cove_model::ids::{now_rfc3339, random_string};
use cove_model::world::World;
use cove_model::AwsResult;
use cove_store::Store;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many passes a delete refused for a dependency is tried again (one
/// pass a second: an endpoint's ENI takes a moment to go).
const DELETE_RETRIES: u32 = 60;

/// What a resource records when its provider failed unexpectedly.
const INTERNAL_FAILURE: &str = "Internal Failure";

/// What the stack's own resources answer to `Ref` and `Fn::GetAtt`, and
/// the region's exports to `Fn::ImportValue`.
pub struct StackLookups<'a> {
    pub stack: &'a Stack,
    /// The account's stacks (for their exports); `None`: no exports.
    pub world: Option<&'a World>,
}

impl Lookups for StackLookups<'_> {
    fn reference(&self, logical_id: &str) -> Option<Value> {
        let r = self.stack.resources.get(logical_id)?;
        r.physical_id.clone().map(Value::String)
    }
    fn attribute(&self, logical_id: &str, attribute: &str) -> Result<Value, String> {
        self.stack
            .resources
            .get(logical_id)
            .and_then(|r| r.attributes.get(attribute))
            .filter(|v| !v.is_null())
            .cloned()
            .ok_or_else(|| {
                format!("Template error: resource {logical_id} does not support attribute type {attribute} in Fn::GetAtt")
            })
    }
    fn export(&self, name: &str) -> Option<Value> {
        crate::exports_in(self.world?, &self.stack.account_id, &self.stack.region)
            .find(|(_, n, _)| *n == name)
            .map(|(_, _, v)| v.clone())
    }
    fn availability_zones(&self, region: &str) -> Vec<String> {
        cove_model::region::zones(region)
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }
}

/// An event for a resource (or, with the stack's name as logical id, the stack).
pub fn event(
    logical_id: &str,
    physical_id: Option<&str>,
    kind: &str,
    status: &str,
    reason: Option<&str>,
) -> StackEvent {
    StackEvent {
        event_id: random_string(b"0123456789abcdef", 32),
        logical_id: logical_id.into(),
        physical_id: physical_id.map(str::to_string),
        resource_type: kind.into(),
        status: status.into(),
        status_reason: reason.map(str::to_string),
        timestamp: now_rfc3339(),
    }
}

/// Records an event of the stack itself.
pub fn stack_event(s: &mut Stack, status: &str, reason: Option<&str>) {
    let e = event(
        &s.name,
        Some(&s.arn),
        "AWS::CloudFormation::Stack",
        status,
        reason,
    );
    s.record(e);
}

/// The resources the template makes (those whose condition holds), with their types.
pub(crate) fn included(stack: &Stack) -> BTreeMap<String, String> {
    let empty = Map::new();
    stack
        .template
        .get("Resources")
        .and_then(Value::as_object)
        .unwrap_or(&empty)
        .iter()
        .filter(|(_, r)| {
            r.get("Condition")
                .and_then(Value::as_str)
                .is_none_or(|c| stack.conditions.get(c).copied().unwrap_or(false))
        })
        .map(|(id, r)| {
            (
                id.clone(),
                r.get("Type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

fn status_of(stack: &Stack, id: &str) -> Option<ResourceStatus> {
    stack.resources.get(id).map(|r| r.status)
}

/// A template value evaluated against the stack (its parameters,
/// conditions, mappings and made resources).
fn evaluate_in(world: &World, stack: &Stack, v: &Value) -> Result<Option<Value>, String> {
    let lookups = StackLookups {
        stack,
        world: Some(world),
    };
    let mappings = stack
        .template
        .get("Mappings")
        .cloned()
        .unwrap_or(Value::Null);
    let cx = Context {
        parameters: &stack.parameters,
        mappings: &mappings,
        conditions: &stack.conditions,
        region: &stack.region,
        lookups: &lookups,
    };
    intrinsics::evaluate(v, &cx)
}

/// A resource's properties evaluated against the stack.
pub(crate) fn properties(
    world: &World,
    stack: &Stack,
    id: &str,
) -> Result<Map<String, Value>, String> {
    let raw = stack.template["Resources"][id]
        .get("Properties")
        .cloned()
        .unwrap_or(Value::Object(Map::new()));
    match evaluate_in(world, stack, &raw)? {
        Some(Value::Object(m)) => Ok(m),
        _ => Ok(Map::new()),
    }
}

/// The resources of `wanted` not `started` whose dependencies (among
/// `wanted`) are all `done`: the next wave, made in parallel.
fn next_wave(
    wanted: &BTreeMap<String, String>,
    deps: &cove_cfn::graph::Dependencies,
    started: impl Fn(&str) -> bool,
    done: impl Fn(&str) -> bool,
) -> Vec<(String, String)> {
    wanted
        .iter()
        .filter(|(id, _)| !started(id))
        .filter(|(id, _)| {
            deps.get(*id)
                .into_iter()
                .flatten()
                .filter(|d| wanted.contains_key(*d))
                .all(|d| done(d))
        })
        .map(|(id, kind)| (id.clone(), kind.clone()))
        .collect()
}

/// Makes resource `id` of the stack: what was made, whether it is ready,
/// and the properties it was made with.
fn make(
    world: &World,
    api: &dyn Api,
    stack: &Stack,
    id: &str,
    kind: &str,
) -> Result<(Created, Readiness, Map<String, Value>), String> {
    let props = properties(world, stack, id)?;
    let seed = Value::Object(props.clone()).to_string();
    let naming = providers::Naming {
        stack: &stack.name,
        stack_id: &stack.arn,
        logical_id: id,
        seed: &seed,
    };
    // Only a resource recorded in progress before this pass (Cove stopped
    // during its call) can have been made already: only then is it looked for.
    let interrupted = stack.resources.get(id).is_some_and(|r| {
        matches!(
            r.status,
            ResourceStatus::CreateInProgress | ResourceStatus::UpdateInProgress
        )
    });
    let known = interrupted.then(|| known_physical_ids(stack));
    let created = providers::create(api, kind, &props, &naming, known.as_ref())?;
    let readiness = providers::readiness(api, kind, &created.physical_id, &created.attributes)?;
    Ok((created, readiness, props))
}

/// The literal export names the template imports with `Fn::ImportValue`.
pub fn imports(template: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                if let Some(name) = m.get("Fn::ImportValue") {
                    let literal = name
                        .as_str()
                        .or_else(|| name.get("Fn::Sub").and_then(Value::as_str));
                    if let Some(n) = literal.filter(|n| !n.contains("${")) {
                        out.insert(n.to_string());
                    }
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(items) => items.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(&template["Resources"], &mut out);
    walk(&template["Outputs"], &mut out);
    out
}

/// Outputs as stored: (key, value, description), and output key → export name.
type Outputs = (
    Vec<(String, Value, Option<String>)>,
    BTreeMap<String, String>,
);

/// Every physical resource the stack knows: its resources' and those
/// waiting for cleanup (and an address's allocation id).
fn known_physical_ids(stack: &Stack) -> BTreeSet<String> {
    stack
        .resources
        .values()
        .chain(&stack.cleanup)
        .flat_map(|r| {
            r.physical_id.iter().cloned().chain(
                r.attributes
                    .get("AllocationId")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            )
        })
        .collect()
}

/// The stack's outputs and exports, evaluated once every resource is made;
/// an export name another stack of the region exports already fails it.
fn outputs(world: &World, stack: &Stack) -> Result<Outputs, String> {
    let empty = Map::new();
    let mut out = Vec::new();
    let mut exports = BTreeMap::new();
    for (key, o) in stack
        .template
        .get("Outputs")
        .and_then(Value::as_object)
        .unwrap_or(&empty)
    {
        if let Some(c) = o.get("Condition").and_then(Value::as_str) {
            if !stack.conditions.get(c).copied().unwrap_or(false) {
                continue;
            }
        }
        if let Some(export) = o.get("Export").and_then(|e| e.get("Name")) {
            let name = evaluate_in(world, stack, export)?
                .and_then(|n| intrinsics::text(&n).ok())
                .ok_or_else(|| {
                    format!("Template error: the export name of output {key} is not a string")
                })?;
            if let Some((other, _, _)) = crate::exports_in(world, &stack.account_id, &stack.region)
                .find(|(s, n, _)| *n == name && s.arn != stack.arn)
            {
                return Err(format!(
                    "Export with name {name} is already exported by stack {}",
                    other.name
                ));
            }
            exports.insert(key.clone(), name);
        }
        let value = evaluate_in(world, stack, &o["Value"])?.unwrap_or(Value::Null);
        let value = match value {
            Value::Array(items) => Value::String(
                items
                    .iter()
                    .filter_map(|i| intrinsics::text(i).ok())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            v => Value::String(intrinsics::text(&v).unwrap_or_default()),
        };
        out.push((
            key.clone(),
            value,
            o.get("Description").and_then(|d| intrinsics::text(d).ok()),
        ));
    }
    Ok((out, exports))
}

/// Refuses new outputs that would take away or change an export another
/// stack imports, in CloudFormation's words.
fn keeps_imported_exports(world: &World, stack: &Stack, next: &Outputs) -> Result<(), String> {
    let (outputs, exports) = next;
    let value_of = |list: &[(String, Value, Option<String>)], key: &str| {
        list.iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v.clone())
    };
    for (key, name) in &stack.exports {
        let Some(user) = crate::importer_of(world, &stack.region, &stack.arn, name) else {
            continue;
        };
        match exports.iter().find(|(_, n)| *n == name) {
            None => {
                return Err(format!(
                    "Export {name} cannot be deleted as it is in use by {}",
                    user.name
                ))
            }
            Some((new_key, _)) if value_of(outputs, new_key) != value_of(&stack.outputs, key) => {
                return Err(format!(
                    "Export {name} cannot be updated as it is in use by {}",
                    user.name
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

pub struct Deployer<A> {
    store: Arc<Store>,
    /// Cove's services as a stack's account: `(region, account)` → caller.
    api: A,
    delete_attempts: Mutex<HashMap<(String, String), u32>>,
}

/// Makes the caller a stack's resources are created with.
pub trait Callers: Send + Sync + 'static {
    /// Cove's services as the principal that asked for what `stack` is doing.
    fn caller(&self, stack: &Stack) -> Box<dyn Api + Send + Sync>;
}

impl<A: Callers> Deployer<A> {
    pub fn new(store: Arc<Store>, api: A) -> Deployer<A> {
        Deployer {
            store,
            api,
            delete_attempts: Mutex::new(HashMap::new()),
        }
    }

    /// Follows the store until the process ends.
    pub fn spawn(self) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("cove-cfn-deployer".into())
            .spawn(move || {
                let mut seen = 0;
                loop {
                    let busy = self.pass();
                    // Work left (a wave just made, a delete to retry): go on
                    // after a second at most; else wait for a change.
                    seen = self
                        .store
                        .wait_for_change(seen, Duration::from_secs(if busy { 1 } else { 5 }));
                }
            })?;
        Ok(())
    }

    /// One step of every stack in progress; whether any has work left.
    pub fn pass(&self) -> bool {
        let world = self.store.snapshot();
        let mut busy = false;
        for stack in world.cfn_stacks.values().filter(|s| s.status.in_progress()) {
            match self.step(&world, stack) {
                Ok(more) => busy |= more,
                Err(e) => {
                    tracing::warn!(stack = %stack.arn, error = %e.message, "stack step failed; retried on the next pass")
                }
            }
        }
        busy
    }

    fn commit(&self, stack: &Stack, f: impl FnOnce(&mut Stack)) -> AwsResult<()> {
        self.store.write_as(&stack.account_id, |tx| {
            let mut s: Stack = tx.cloned(&stack.arn)?;
            f(&mut s);
            tx.put(s);
            Ok(())
        })
    }

    fn step(&self, world: &World, stack: &Stack) -> AwsResult<bool> {
        match stack.status {
            StackStatus::CreateInProgress => self.create_wave(world, stack),
            StackStatus::RollbackInProgress | StackStatus::DeleteInProgress => {
                self.delete_wave(stack)
            }
            StackStatus::UpdateInProgress | StackStatus::UpdateRollbackInProgress => {
                self.update_wave(world, stack)
            }
            StackStatus::UpdateCompleteCleanupInProgress
            | StackStatus::UpdateRollbackCompleteCleanupInProgress => self.cleanup_wave(stack),
            _ => Ok(false),
        }
    }

    fn create_wave(&self, world: &World, stack: &Stack) -> AwsResult<bool> {
        let wanted = included(stack);
        let deps = cove_cfn::graph::dependencies(&stack.template).unwrap_or_default();
        let done = |id: &str| status_of(stack, id) == Some(ResourceStatus::CreateComplete);
        if wanted.keys().all(|id| done(id)) {
            let evaluated = outputs(world, stack);
            self.commit(stack, |s| match evaluated {
                Ok((outputs, exports)) => {
                    s.outputs = outputs;
                    s.exports = exports;
                    s.status = StackStatus::CreateComplete;
                    s.status_reason = None;
                    stack_event(s, "CREATE_COMPLETE", None);
                }
                Err(e) => fail(s, &e),
            })?;
            return Ok(false);
        }
        let settling: Vec<StackResource> = stack
            .resources
            .values()
            .filter(|r| r.status == ResourceStatus::CreateInProgress && r.physical_id.is_some())
            .cloned()
            .collect();
        let ready = next_wave(
            &wanted,
            &deps,
            |id| done(id) || settling.iter().any(|r| r.logical_id == id),
            done,
        );
        let api = self.api.caller(stack);
        if ready.is_empty() {
            return self.settle(stack, &settling, api.as_ref());
        }
        let now = now_rfc3339();
        self.commit(stack, |s| {
            for (id, kind) in &ready {
                s.resources.insert(
                    id.clone(),
                    StackResource {
                        logical_id: id.clone(),
                        resource_type: kind.clone(),
                        physical_id: None,
                        status: ResourceStatus::CreateInProgress,
                        status_reason: None,
                        attributes: BTreeMap::new(),
                        last_updated: now.clone(),
                        properties: Value::Null,
                    },
                );
                s.record(event(id, None, kind, "CREATE_IN_PROGRESS", None));
            }
        })?;
        let made = in_parallel(&ready, |(id, kind)| {
            make(world, api.as_ref(), stack, id, kind)
        });
        let results = ready
            .into_iter()
            .zip(made)
            .map(|((id, kind), m)| (id, kind, m));
        let now = now_rfc3339();
        self.commit(stack, |s| {
            let mut failed = Vec::new();
            for (id, kind, made) in results {
                let Some(r) = s.resources.get_mut(&id) else {
                    continue;
                };
                r.last_updated = now.clone();
                match made {
                    Ok((c, readiness, props)) => {
                        r.physical_id = Some(c.physical_id.clone());
                        r.attributes = c.attributes;
                        r.properties = Value::Object(props);
                        let (status, word, reason) = match readiness {
                            Readiness::Ready => (
                                ResourceStatus::CreateComplete,
                                "CREATE_COMPLETE",
                                c.note.as_deref(),
                            ),
                            Readiness::Pending => (
                                ResourceStatus::CreateInProgress,
                                "CREATE_IN_PROGRESS",
                                Some("Resource creation Initiated"),
                            ),
                        };
                        r.status = status;
                        r.status_reason = reason.map(str::to_string);
                        s.record(event(&id, Some(&c.physical_id), &kind, word, reason));
                    }
                    Err(e) => {
                        r.status = ResourceStatus::CreateFailed;
                        r.status_reason = Some(e.clone());
                        s.record(event(&id, None, &kind, "CREATE_FAILED", Some(&e)));
                        failed.push(id);
                    }
                }
            }
            if !failed.is_empty() {
                let reason = format!(
                    "The following resource(s) failed to create: [{}]. ",
                    failed.join(", ")
                );
                fail(s, &reason);
            }
        })?;
        Ok(true)
    }

    /// Asks the services of the resources they are still making whether
    /// they are ready; a resource its service gave up on fails the stack.
    fn settle(
        &self,
        stack: &Stack,
        settling: &[StackResource],
        api: &(dyn Api + Send + Sync),
    ) -> AwsResult<bool> {
        let answers = in_parallel(settling, |r| {
            providers::readiness(
                api,
                &r.resource_type,
                r.physical_id.as_deref().unwrap_or_default(),
                &r.attributes,
            )
        });
        if answers.iter().all(|a| matches!(a, Ok(Readiness::Pending))) {
            return Ok(true);
        }
        let now = now_rfc3339();
        self.commit(stack, |s| {
            let mut failed = Vec::new();
            for (r, answer) in settling.iter().zip(answers) {
                let Some(mine) = s.resources.get_mut(&r.logical_id) else {
                    continue;
                };
                let physical = r.physical_id.as_deref();
                let updating = r.status == ResourceStatus::UpdateInProgress;
                match answer {
                    Ok(Readiness::Pending) => continue,
                    Ok(Readiness::Ready) => {
                        let (status, word) = match updating {
                            true => (ResourceStatus::UpdateComplete, "UPDATE_COMPLETE"),
                            false => (ResourceStatus::CreateComplete, "CREATE_COMPLETE"),
                        };
                        mine.status = status;
                        mine.status_reason = None;
                        mine.last_updated = now.clone();
                        s.record(event(&r.logical_id, physical, &r.resource_type, word, None));
                    }
                    Err(e) => {
                        let (status, word) = match updating {
                            true => (ResourceStatus::UpdateFailed, "UPDATE_FAILED"),
                            false => (ResourceStatus::CreateFailed, "CREATE_FAILED"),
                        };
                        mine.status = status;
                        mine.status_reason = Some(e.clone());
                        mine.last_updated = now.clone();
                        s.record(event(
                            &r.logical_id,
                            physical,
                            &r.resource_type,
                            word,
                            Some(&e),
                        ));
                        failed.push(r.logical_id.clone());
                    }
                }
            }
            if !failed.is_empty() {
                let verb = match s.status {
                    StackStatus::CreateInProgress => "create",
                    _ => "update",
                };
                let reason = format!(
                    "The following resource(s) failed to {verb}: [{}]. ",
                    failed.join(", ")
                );
                match s.status {
                    StackStatus::CreateInProgress => fail(s, &reason),
                    _ => update::fail(s, &reason),
                }
            }
        })?;
        Ok(true)
    }

    fn delete_wave(&self, stack: &Stack) -> AwsResult<bool> {
        let deps = cove_cfn::graph::dependencies(&stack.template).unwrap_or_default();
        let live = |id: &str| {
            let r = stack.resources.get(id);
            matches!(
                r.map(|r| r.status),
                Some(
                    ResourceStatus::CreateComplete
                        | ResourceStatus::DeleteInProgress
                        | ResourceStatus::CreateInProgress
                        | ResourceStatus::UpdateComplete
                        | ResourceStatus::UpdateInProgress
                        | ResourceStatus::UpdateFailed
                )
            ) || r.is_some_and(|r| {
                // Made, then given up on by its service (an endpoint that
                // failed): still there to delete.
                r.status == ResourceStatus::CreateFailed && r.physical_id.is_some()
            })
        };
        let live_ids: BTreeSet<&str> = stack
            .resources
            .keys()
            .map(String::as_str)
            .filter(|id| live(id))
            .collect();
        // Failed creations left nothing to delete.
        let nothing_made: Vec<String> = stack
            .resources
            .values()
            .filter(|r| r.status == ResourceStatus::CreateFailed && r.physical_id.is_none())
            .map(|r| r.logical_id.clone())
            .collect();
        if live_ids.is_empty() {
            let failed = stack
                .resources
                .values()
                .any(|r| r.status == ResourceStatus::DeleteFailed);
            self.commit(stack, |s| {
                for id in &nothing_made {
                    if let Some(r) = s.resources.get_mut(id) {
                        r.status = ResourceStatus::DeleteComplete;
                    }
                }
                let (status, word) = match (s.status, failed) {
                    (StackStatus::RollbackInProgress, false) => {
                        (StackStatus::RollbackComplete, "ROLLBACK_COMPLETE")
                    }
                    (StackStatus::RollbackInProgress, true) => {
                        (StackStatus::RollbackFailed, "ROLLBACK_FAILED")
                    }
                    (_, false) => (StackStatus::DeleteComplete, "DELETE_COMPLETE"),
                    (_, true) => (StackStatus::DeleteFailed, "DELETE_FAILED"),
                };
                s.status = status;
                if status == StackStatus::DeleteComplete {
                    s.deletion_time = Some(now_rfc3339());
                }
                if failed {
                    s.status_reason = Some(
                        "The following resource(s) failed to delete: see the stack's events."
                            .into(),
                    );
                }
                stack_event(s, word, None);
            })?;
            return Ok(false);
        }
        // What no other live resource depends on goes first.
        let ready: Vec<StackResource> = live_ids
            .iter()
            .filter(|id| {
                !live_ids
                    .iter()
                    .any(|other| other != *id && deps.get(*other).is_some_and(|d| d.contains(**id)))
            })
            .filter_map(|id| stack.resources.get(*id).cloned())
            .collect();
        let api = self.api.caller(stack);
        let gone = in_parallel(&ready, |r| match &r.physical_id {
            _ if retained(stack, &r.logical_id) => Ok(Deletion::Skipped),
            Some(p) => providers::delete(api.as_ref(), &r.resource_type, p, &r.attributes)
                .map(|()| Deletion::Deleted),
            None => Ok(Deletion::Deleted),
        });
        let results = ready.into_iter().zip(gone);
        let mut attempts = self
            .delete_attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let outcomes: Vec<(StackResource, Result<Deletion, String>)> = results
            .into_iter()
            .filter_map(|(r, gone)| match gone {
                Err(e) if providers::is_busy(&e) => {
                    let n = attempts
                        .entry((stack.arn.clone(), r.logical_id.clone()))
                        .or_insert(0);
                    *n += 1;
                    if *n < DELETE_RETRIES {
                        None
                    } else {
                        Some((r, Err(e)))
                    }
                }
                other => Some((r, other)),
            })
            .collect();
        drop(attempts);
        let now = now_rfc3339();
        self.commit(stack, |s| {
            for (r, gone) in outcomes {
                let Some(mine) = s.resources.get_mut(&r.logical_id) else {
                    continue;
                };
                mine.last_updated = now.clone();
                match gone {
                    Ok(deletion) => {
                        let (status, word) = match deletion {
                            Deletion::Deleted => {
                                (ResourceStatus::DeleteComplete, "DELETE_COMPLETE")
                            }
                            Deletion::Skipped => (ResourceStatus::DeleteSkipped, "DELETE_SKIPPED"),
                        };
                        mine.status = status;
                        s.record(event(
                            &r.logical_id,
                            r.physical_id.as_deref(),
                            &r.resource_type,
                            word,
                            None,
                        ));
                    }
                    Err(e) => {
                        mine.status = ResourceStatus::DeleteFailed;
                        mine.status_reason = Some(e.clone());
                        s.record(event(
                            &r.logical_id,
                            r.physical_id.as_deref(),
                            &r.resource_type,
                            "DELETE_FAILED",
                            Some(&e),
                        ));
                    }
                }
            }
        })?;
        Ok(true)
    }
}

/// What deleting a resource did.
enum Deletion {
    Deleted,
    /// Kept by its `DeletionPolicy`.
    Skipped,
}

/// Whether a resource's `DeletionPolicy` keeps it: `Retain` always,
/// `RetainExceptOnCreate` unless its stack is rolling back a creation.
fn retained(stack: &Stack, logical_id: &str) -> bool {
    let policy = stack.template["Resources"][logical_id]["DeletionPolicy"].as_str();
    match policy {
        Some("Retain") => true,
        Some("RetainExceptOnCreate") => stack.status != StackStatus::RollbackInProgress,
        _ => false,
    }
}

/// Runs `work` on every item at once, a thread each; an item whose work
/// panicked gets CloudFormation's "Internal Failure".
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&T) -> Result<R, String> + Sync,
) -> Vec<Result<R, String>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .iter()
            .map(|item| scope.spawn(|| work(item)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(INTERNAL_FAILURE.to_string()))
            })
            .collect()
    })
}

/// A failed creation: roll back, or stop where it is when rollback is off.
fn fail(s: &mut Stack, reason: &str) {
    if s.disable_rollback {
        s.status = StackStatus::CreateFailed;
        s.status_reason = Some(reason.trim_end().to_string());
        stack_event(s, "CREATE_FAILED", Some(reason.trim_end()));
    } else {
        let reason = format!("{reason}Rollback requested by user.");
        s.status = StackStatus::RollbackInProgress;
        s.status_reason = Some(reason.clone());
        stack_event(s, "ROLLBACK_IN_PROGRESS", Some(&reason));
    }
}

/// S3's bucket calls as an account: `(account, region, operation, input)`.
pub type BucketCalls =
    Arc<dyn Fn(&str, &str, &str, &Value) -> Result<Value, cove_model::AwsError> + Send + Sync>;

/// Stacks' calls to Cove's services in this process, in the stack's
/// region, as the principal that asked for the stack's create, update or
/// delete (held to its policies when IAM is enforced, as CloudFormation
/// calls with its caller's permissions), validated against each service's
/// model as calls from the wire are.
#[derive(Clone)]
pub struct ServiceCallers {
    /// By signing name (`ec2`, `iam`, `logs`, `sagemaker`).
    pub services: Vec<Arc<dyn cove_wire::Service>>,
    pub s3: BucketCalls,
    /// The dispatcher's IAM check (`--iam enforce`); `None`: none.
    pub authorizer: Option<cove_wire::dispatch::Authorizer>,
}

struct ServiceCaller {
    services: ServiceCallers,
    region: String,
    account: String,
    principal: StackCaller,
}

impl ServiceCaller {
    fn context(&self, operation: &str) -> cove_wire::RequestContext {
        let mut ctx = cove_wire::RequestContext::internal(
            operation,
            &self.region,
            &self.account,
            &self.principal.arn,
            &self.principal.access_key,
        );
        ctx.on_behalf_of = Some("cloudformation");
        ctx
    }

    /// Makes the call, authorized or not.
    fn perform(
        &self,
        ctx: &cove_wire::RequestContext,
        service: &'static str,
        input: Value,
    ) -> Result<Value, cove_model::AwsError> {
        if service == "s3" {
            return (self.services.s3)(&self.account, &self.region, &ctx.operation, &input);
        }
        let target = self
            .services
            .services
            .iter()
            .find(|s| s.signing_name() == service)
            .ok_or_else(|| {
                cove_model::AwsError::internal(format!("no service {service} for stacks"))
            })?;
        cove_wire::in_process::call(target.as_ref(), ctx, input)
    }
}

impl Api for ServiceCaller {
    fn call(
        &self,
        service: &'static str,
        operation: &str,
        input: Value,
    ) -> Result<Value, cove_model::AwsError> {
        let ctx = self.context(operation);
        if let Some(authorize) = &self.services.authorizer {
            authorize(&ctx, service, &input)?;
        }
        self.perform(&ctx, service, input)
    }

    fn lookup(
        &self,
        service: &'static str,
        operation: &str,
        input: Value,
    ) -> Result<Value, cove_model::AwsError> {
        self.perform(&self.context(operation), service, input)
    }

    fn region(&self) -> String {
        self.region.clone()
    }
}

impl Callers for ServiceCallers {
    fn caller(&self, stack: &Stack) -> Box<dyn Api + Send + Sync> {
        let root = || StackCaller {
            arn: format!("arn:aws:iam::{}:root", stack.account_id),
            access_key: String::new(),
        };
        Box::new(ServiceCaller {
            services: self.clone(),
            region: stack.region.clone(),
            account: stack.account_id.clone(),
            principal: stack.caller.clone().unwrap_or_else(root),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_wire::Service;
    use serde_json::json;

    /// A fake EC2 that makes ids and remembers what exists.
    #[derive(Default, Clone)]
    struct FakeEc2 {
        made: Arc<Mutex<Vec<(String, Value)>>>,
        deleted: Arc<Mutex<Vec<String>>>,
        /// Whether a VPC a lost create made is there.
        orphan: bool,
    }

    impl Api for FakeEc2 {
        fn call(
            &self,
            _service: &'static str,
            operation: &str,
            input: Value,
        ) -> Result<Value, cove_model::AwsError> {
            let n = self.made.lock().unwrap().len();
            self.made
                .lock()
                .unwrap()
                .push((operation.to_string(), input.clone()));
            match operation {
                "CreateVpc" => Ok(
                    json!({"Vpc": {"VpcId": format!("vpc-{n:08x}"), "CidrBlock": input["CidrBlock"]}}),
                ),
                "CreateSubnet" if input["CidrBlock"] == "10.9.9.0/24" => {
                    Err(cove_model::AwsError::client(
                        "InvalidSubnet.Range",
                        "The CIDR '10.9.9.0/24' is invalid.",
                    ))
                }
                "CreateSubnet" => Ok(
                    json!({"Subnet": {"SubnetId": format!("subnet-{n:08x}"), "VpcId": input["VpcId"], "CidrBlock": input["CidrBlock"]}}),
                ),
                "DeleteVpc" | "DeleteSubnet" | "DeleteNatGateway" => {
                    let what = match input.get("VpcId").and_then(Value::as_str) {
                        Some("vpc-orphan") => "DeleteVpc vpc-orphan".to_string(),
                        _ => operation.to_string(),
                    };
                    self.deleted.lock().unwrap().push(what);
                    Ok(json!({}))
                }
                "CreateNatGateway" => Ok(json!({"NatGateway": {"NatGatewayId": "nat-1"}})),
                // A VPC made for logical id Vpc of every stack, which no stack recorded.
                "DescribeTags" if self.orphan => {
                    let filter = &input["Filters"][0]["Values"][0];
                    let tagged = filter == "aws:cloudformation:stack-id"
                        || input["Filters"][1]["Values"][0] == "Vpc";
                    Ok(
                        json!({"Tags": if tagged { json!([{"ResourceId": "vpc-orphan", "ResourceType": "vpc"}]) } else { json!([]) }}),
                    )
                }
                // Pending for its first two looks, as the EC2 API's lifecycle has it.
                "DescribeNatGateways" => {
                    let looks = self
                        .made
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|(op, _)| op == "DescribeNatGateways")
                        .count();
                    let state = match (
                        self.deleted
                            .lock()
                            .unwrap()
                            .iter()
                            .any(|d| d == "DeleteNatGateway"),
                        looks,
                    ) {
                        (true, _) => "deleted",
                        (false, 0..=2) => "pending",
                        _ => "available",
                    };
                    Ok(json!({"NatGateways": [{"NatGatewayId": "nat-1", "State": state}]}))
                }
                _ => Ok(json!({})),
            }
        }
        fn region(&self) -> String {
            "us-east-1".into()
        }
    }

    impl Callers for FakeEc2 {
        fn caller(&self, _stack: &Stack) -> Box<dyn Api + Send + Sync> {
            Box::new(self.clone())
        }
    }

    /// A CloudFormation call as the account's root.
    fn call(store: &Arc<Store>, operation: &str, input: Value) -> Value {
        let ctx = cove_wire::RequestContext::internal(
            operation,
            "us-east-1",
            "123456789012",
            "arn:aws:iam::123456789012:root",
            "",
        );
        crate::CloudFormationService::new(store.clone())
            .handle(&ctx, input)
            .unwrap()
    }

    /// A stack of a VPC and a subnet of `subnet_cidr`.
    fn create(store: &Arc<Store>, subnet_cidr: &str) -> String {
        let body = format!(
            "Resources:\n  Vpc: {{Type: AWS::EC2::VPC, Properties: {{CidrBlock: 10.9.0.0/16}}}}\n  \
             Subnet: {{Type: AWS::EC2::Subnet, Properties: {{VpcId: !Ref Vpc, CidrBlock: {subnet_cidr}}}}}\n\
             Outputs:\n  S: {{Value: !Ref Subnet}}\n"
        );
        create_body(store, "s", &body)
    }

    fn stack(store: &Store, arn: &str) -> Stack {
        (*store.snapshot().cfn_stacks[arn]).clone()
    }

    #[test]
    fn waves_follow_dependencies_and_the_stack_completes_with_outputs() {
        let store = Arc::new(Store::in_memory().unwrap());
        let arn = create(&store, "10.9.1.0/24");
        let ec2 = FakeEc2::default();
        let deployer = Deployer::new(store.clone(), ec2.clone());
        while deployer.pass() {}
        let s = stack(&store, &arn);
        assert_eq!(s.status, StackStatus::CreateComplete);
        let ops: Vec<String> = ec2
            .made
            .lock()
            .unwrap()
            .iter()
            .map(|(op, _)| op.clone())
            .filter(|op| op != "DescribeTags")
            .collect();
        assert_eq!(
            ops,
            [
                "CreateVpc",
                "DescribeSecurityGroups",
                "DescribeNetworkAcls",
                "CreateSubnet"
            ]
        );
        let made = ec2.made.lock().unwrap().clone();
        let (_, subnet) = made.iter().find(|(op, _)| op == "CreateSubnet").unwrap();
        assert_eq!(
            subnet["VpcId"],
            json!(s.resources["Vpc"].physical_id.clone().unwrap())
        );
        assert_eq!(
            s.outputs[0].1,
            json!(s.resources["Subnet"].physical_id.clone().unwrap())
        );
    }

    #[test]
    fn a_failure_rolls_back_what_was_made_in_reverse() {
        let store = Arc::new(Store::in_memory().unwrap());
        let arn = create(&store, "10.9.9.0/24");
        let ec2 = FakeEc2::default();
        let deployer = Deployer::new(store.clone(), ec2.clone());
        while deployer.pass() {}
        let s = stack(&store, &arn);
        assert_eq!(s.status, StackStatus::RollbackComplete);
        assert_eq!(s.resources["Subnet"].status, ResourceStatus::DeleteComplete);
        assert_eq!(
            *ec2.deleted.lock().unwrap(),
            ["DeleteVpc"],
            "the failed subnet was never made"
        );
        assert!(s.events.iter().any(|e| e.status == "CREATE_FAILED"
            && e.status_reason
                .as_deref()
                .is_some_and(|r| r.contains("Error Code: InvalidSubnet.Range"))));
    }

    #[test]
    fn a_new_deployer_resumes_a_stack_where_the_store_left_it() {
        let store = Arc::new(Store::in_memory().unwrap());
        let arn = create(&store, "10.9.1.0/24");
        let first = FakeEc2::default();
        Deployer::new(store.clone(), first.clone()).pass();
        assert_eq!(
            stack(&store, &arn).resources["Vpc"].status,
            ResourceStatus::CreateComplete
        );
        // The process restarts: a new deployer makes only what is left.
        let second = FakeEc2::default();
        let deployer = Deployer::new(store.clone(), second.clone());
        while deployer.pass() {}
        let ops: Vec<String> = second
            .made
            .lock()
            .unwrap()
            .iter()
            .map(|(op, _)| op.clone())
            .filter(|op| op != "DescribeTags")
            .collect();
        assert_eq!(ops, ["CreateSubnet"]);
        assert_eq!(stack(&store, &arn).status, StackStatus::CreateComplete);
    }

    fn create_body(store: &Arc<Store>, name: &str, body: &str) -> String {
        call(
            store,
            "CreateStack",
            json!({"StackName": name, "TemplateBody": body}),
        )["StackId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_resource_its_service_makes_in_the_background_is_waited_for_and_retain_keeps_it() {
        let store = Arc::new(Store::in_memory().unwrap());
        let arn = create_body(
            &store,
            "n",
            "Resources:\n  Vpc: {Type: AWS::EC2::VPC, DeletionPolicy: Retain, Properties: {CidrBlock: 10.9.0.0/16}}\n  \
             Nat: {Type: AWS::EC2::NatGateway, Properties: {SubnetId: subnet-1}}\n  \
             After: {Type: AWS::EC2::Subnet, DependsOn: Nat, Properties: {VpcId: !Ref Vpc, CidrBlock: 10.9.1.0/24}}\n",
        );
        let ec2 = FakeEc2::default();
        let deployer = Deployer::new(store.clone(), ec2.clone());
        deployer.pass();
        let s = stack(&store, &arn);
        let nat = &s.resources["Nat"];
        assert_eq!(nat.status, ResourceStatus::CreateInProgress);
        assert_eq!(nat.physical_id.as_deref(), Some("nat-1"));
        assert!(s.events.iter().any(|e| e.logical_id == "Nat"
            && e.status_reason.as_deref() == Some("Resource creation Initiated")));
        // Nothing that depends on it is made while it is pending.
        deployer.pass();
        assert!(!stack(&store, &arn).resources.contains_key("After"));
        while deployer.pass() {}
        let s = stack(&store, &arn);
        assert_eq!(s.status, StackStatus::CreateComplete);
        assert_eq!(s.resources["After"].status, ResourceStatus::CreateComplete);

        call(&store, "DeleteStack", json!({"StackName": arn}));
        while deployer.pass() {}
        let s = stack(&store, &arn);
        assert_eq!(s.status, StackStatus::DeleteComplete);
        assert_eq!(s.resources["Vpc"].status, ResourceStatus::DeleteSkipped);
        let deleted = ec2.deleted.lock().unwrap().clone();
        assert!(deleted.contains(&"DeleteSubnet".to_string()));
        assert!(deleted.contains(&"DeleteNatGateway".to_string()));
        assert!(!deleted.contains(&"DeleteVpc".to_string()), "{deleted:?}");
    }

    #[test]
    fn a_create_whose_answer_was_lost_in_a_crash_leaves_no_copy() {
        let store = Arc::new(Store::in_memory().unwrap());
        let arn = create(&store, "10.9.1.0/24");
        // Cove stopped after recording CREATE_IN_PROGRESS and sending CreateVpc.
        store
            .write_as("123456789012", |tx| {
                let mut s: Stack = tx.cloned(&arn)?;
                s.resources.insert(
                    "Vpc".into(),
                    StackResource {
                        logical_id: "Vpc".into(),
                        resource_type: "AWS::EC2::VPC".into(),
                        physical_id: None,
                        status: ResourceStatus::CreateInProgress,
                        status_reason: None,
                        attributes: BTreeMap::new(),
                        last_updated: String::new(),
                        properties: Value::Null,
                    },
                );
                tx.put(s);
                Ok(())
            })
            .unwrap();
        let ec2 = FakeEc2 {
            orphan: true,
            ..FakeEc2::default()
        };
        let deployer = Deployer::new(store.clone(), ec2.clone());
        while deployer.pass() {}
        assert_eq!(stack(&store, &arn).status, StackStatus::CreateComplete);
        let deleted = ec2.deleted.lock().unwrap().clone();
        assert_eq!(deleted, ["DeleteVpc vpc-orphan"]);
        let ops: Vec<String> = ec2
            .made
            .lock()
            .unwrap()
            .iter()
            .map(|(op, _)| op.clone())
            .collect();
        let deleted_at = ops.iter().position(|op| op == "DeleteVpc").unwrap();
        let created_at = ops.iter().position(|op| op == "CreateVpc").unwrap();
        assert!(deleted_at < created_at, "{ops:?}");
        // The tags that found it are on what is made.
        let (_, input) = ec2.made.lock().unwrap()[created_at].clone();
        let tags = &input["TagSpecifications"][0]["Tags"];
        assert!(tags
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["Key"] == "aws:cloudformation:logical-id" && t["Value"] == "Vpc"));
    }

    #[test]
    fn an_update_may_not_change_or_remove_an_export_another_stack_imports() {
        let store = Arc::new(Store::in_memory().unwrap());
        let network = |cidr: &str, outputs: &str| {
            format!(
                "Resources:\n  Vpc: {{Type: AWS::EC2::VPC, Properties: {{CidrBlock: 10.9.0.0/16}}}}\n  \
                 Subnet: {{Type: AWS::EC2::Subnet, Properties: {{VpcId: !Ref Vpc, CidrBlock: {cidr}}}}}\n\
                 Outputs:\n  V: {{Value: !Ref Vpc, Export: {{Name: net-vpc}}}}\n{outputs}"
            )
        };
        let exported_subnet = "  S: {Value: !Ref Subnet, Export: {Name: net-subnet}}\n";
        let arn = create_body(&store, "net", &network("10.9.1.0/24", exported_subnet));
        let deployer = Deployer::new(store.clone(), FakeEc2::default());
        while deployer.pass() {}
        create_body(
            &store,
            "app",
            "Resources:\n  Subnet: {Type: AWS::EC2::Subnet, Properties: {VpcId: !ImportValue net-vpc, CidrBlock: 10.9.5.0/24}}\n\
             Outputs:\n  S: {Value: !ImportValue net-subnet}\n",
        );
        while deployer.pass() {}
        let before = stack(&store, &arn);
        // A new CIDR replaces the subnet: the imported export would change.
        for (body, word) in [
            (network("10.9.2.0/24", exported_subnet), "updated"),
            (network("10.9.1.0/24", ""), "deleted"),
        ] {
            call(
                &store,
                "UpdateStack",
                json!({"StackName": arn, "TemplateBody": body}),
            );
            while deployer.pass() {}
            let s = stack(&store, &arn);
            assert_eq!(s.status, StackStatus::UpdateRollbackComplete, "{word}");
            let reason = s
                .events
                .iter()
                .rfind(|e| e.status == "UPDATE_ROLLBACK_IN_PROGRESS")
                .and_then(|e| e.status_reason.clone())
                .unwrap_or_default();
            assert_eq!(
                reason,
                format!("Export net-subnet cannot be {word} as it is in use by app"),
            );
            assert_eq!(s.outputs, before.outputs, "{word}");
            assert_eq!(s.exports, before.exports, "{word}");
            assert_eq!(
                s.resources["Subnet"].physical_id,
                before.resources["Subnet"].physical_id
            );
        }
        // Exports nobody imports come and go.
        let extra =
            format!("{exported_subnet}  X: {{Value: !Ref Vpc, Export: {{Name: net-extra}}}}\n");
        for outputs in [extra.as_str(), exported_subnet] {
            let body = network("10.9.1.0/24", outputs);
            call(
                &store,
                "UpdateStack",
                json!({"StackName": arn, "TemplateBody": body}),
            );
            while deployer.pass() {}
            assert_eq!(stack(&store, &arn).status, StackStatus::UpdateComplete);
        }
        assert_eq!(stack(&store, &arn).exports, before.exports);
    }

    #[test]
    fn an_update_interrupted_during_a_call_resumes_on_the_same_resource() {
        let store = Arc::new(Store::in_memory().unwrap());
        let arn = create(&store, "10.9.1.0/24");
        let ec2 = FakeEc2::default();
        let deployer = Deployer::new(store.clone(), ec2.clone());
        while deployer.pass() {}
        let vpc = stack(&store, &arn).resources["Vpc"].physical_id.clone();
        let body = "Resources:\n  Vpc: {Type: AWS::EC2::VPC, Properties: {CidrBlock: 10.9.0.0/16, EnableDnsHostnames: true}}\n  \
                    Subnet: {Type: AWS::EC2::Subnet, Properties: {VpcId: !Ref Vpc, CidrBlock: 10.9.1.0/24}}\n\
                    Outputs:\n  S: {Value: !Ref Subnet}\n";
        call(
            &store,
            "UpdateStack",
            json!({"StackName": arn, "TemplateBody": body}),
        );
        // Cove stopped after recording UPDATE_IN_PROGRESS for the VPC.
        store
            .write_as("123456789012", |tx| {
                let mut s: Stack = tx.cloned(&arn)?;
                s.resources.get_mut("Vpc").unwrap().status = ResourceStatus::UpdateInProgress;
                tx.put(s);
                Ok(())
            })
            .unwrap();
        let after = FakeEc2::default();
        let deployer = Deployer::new(store.clone(), after.clone());
        while deployer.pass() {}
        let s = stack(&store, &arn);
        assert_eq!(s.status, StackStatus::UpdateComplete);
        assert_eq!(s.resources["Vpc"].physical_id, vpc);
        let ops: Vec<String> = after
            .made
            .lock()
            .unwrap()
            .iter()
            .map(|(op, _)| op.clone())
            .collect();
        assert!(ops.contains(&"ModifyVpcAttribute".to_string()), "{ops:?}");
        assert!(!ops.contains(&"CreateVpc".to_string()), "{ops:?}");
        assert!(after.deleted.lock().unwrap().is_empty());
    }
}
