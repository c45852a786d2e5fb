//! Stack updates: each resource of the new version, in dependency waves,
//! is left alone (same properties), updated in place (every changed
//! property is one its type updates without interruption) or replaced (a
//! new physical resource is made; the old one waits for cleanup); new
//! resources are made, and those the template no longer has go to
//! cleanup. A failure rolls the stack back the same way to the version it
//! started from, putting replaced resources back rather than making them
//! again. Cleanup then deletes what was superseded.

use super::{
    event, in_parallel, included, keeps_imported_exports, make, next_wave, outputs, properties,
    stack_event, Callers, Deployer, DELETE_RETRIES,
};
use crate::providers::{self, Api, Readiness};
use cove_model::cfn::{ResourceStatus, Stack, StackResource, StackStatus};
use cove_model::ids::now_rfc3339;
use cove_model::world::World;
use cove_model::AwsResult;
use serde_json::{Map, Value};

/// What one resource of an update needs.
enum Action {
    /// Its properties did not change (or it is back where the target is).
    Keep,
    Create,
    Update {
        old: Map<String, Value>,
    },
    /// A new physical resource; `old` goes to cleanup.
    Replace {
        old: StackResource,
    },
    /// A rollback: the physical resource this update replaced comes back
    /// from cleanup, and the one it made goes there.
    Restore {
        from_cleanup: usize,
    },
}

/// A resource of the wave: its logical id, type, and its action with the
/// properties it is to have (or why they could not be evaluated).
type Planned = (String, String, Result<(Action, Map<String, Value>), String>);

/// What each action did: the made or updated resource, or the reason it failed.
type Outcome = Result<(Option<providers::Created>, Readiness, Map<String, Value>), String>;

/// CloudFormation's words for a custom-named resource that would be replaced.
fn custom_name_refusal(name: &str) -> String {
    format!("CloudFormation cannot update a stack when a custom-named resource requires replacing. Rename {name} and update the stack again.")
}

/// The action for resource `id` of kind `kind`, whose evaluated properties
/// are `props`.
fn action(
    stack: &Stack,
    id: &str,
    kind: &str,
    props: &Map<String, Value>,
) -> Result<Action, String> {
    // UPDATE_IN_PROGRESS without the update recorded: Cove stopped during
    // its call; the resource is still the one the stack knows.
    let Some(current) = stack.resources.get(id).filter(|r| {
        r.physical_id.is_some()
            && matches!(
                r.status,
                ResourceStatus::CreateComplete
                    | ResourceStatus::UpdateComplete
                    | ResourceStatus::UpdateFailed
                    | ResourceStatus::UpdateInProgress
            )
    }) else {
        return Ok(Action::Create);
    };
    let old = current.properties.as_object().cloned().unwrap_or_default();
    if current.resource_type == kind && &old == props {
        return Ok(Action::Keep);
    }
    let changed = providers::changed_properties(&old, props);
    if current.resource_type == kind && !providers::needs_replacement(kind, &changed) {
        return Ok(Action::Update { old });
    }
    if stack.status == StackStatus::UpdateRollbackInProgress {
        if let Some(at) = stack.cleanup.iter().position(|r| {
            r.logical_id == id && r.resource_type == kind && r.properties.as_object() == Some(props)
        }) {
            return Ok(Action::Restore { from_cleanup: at });
        }
    }
    if let Some(key) = providers::name_property(kind) {
        if let (Some(before), Some(after)) = (old.get(key), props.get(key)) {
            if before == after {
                return Err(custom_name_refusal(after.as_str().unwrap_or(id)));
            }
        }
    }
    Ok(Action::Replace {
        old: current.clone(),
    })
}

/// A failed update: roll back to the version it started from (once).
pub(super) fn fail(s: &mut Stack, reason: &str) {
    let (status, word) = match s.status {
        StackStatus::UpdateInProgress => (
            StackStatus::UpdateRollbackInProgress,
            "UPDATE_ROLLBACK_IN_PROGRESS",
        ),
        _ => (StackStatus::UpdateRollbackFailed, "UPDATE_ROLLBACK_FAILED"),
    };
    if status == StackStatus::UpdateRollbackInProgress {
        if let Some(previous) = s.previous.take() {
            s.adopt(previous);
        }
        s.updated.clear();
    }
    s.status = status;
    let reason = reason.trim_end().to_string();
    s.status_reason = Some(reason.clone());
    stack_event(s, word, Some(&reason));
}

impl<A: Callers> Deployer<A> {
    pub(super) fn update_wave(&self, world: &World, stack: &Stack) -> AwsResult<bool> {
        let wanted = included(stack);
        let deps = cove_cfn::graph::dependencies(&stack.template).unwrap_or_default();
        let done = |id: &str| {
            stack.updated.contains(id) && stack.resources.get(id).is_some_and(|r| r.status.made())
        };
        let settling: Vec<StackResource> = stack
            .resources
            .values()
            .filter(|r| stack.updated.contains(&r.logical_id) && r.physical_id.is_some())
            .filter(|r| {
                matches!(
                    r.status,
                    ResourceStatus::CreateInProgress | ResourceStatus::UpdateInProgress
                )
            })
            .cloned()
            .collect();
        let ready = next_wave(&wanted, &deps, |id| stack.updated.contains(id), done);
        let api = self.api.caller(stack);
        if ready.is_empty() {
            if !settling.is_empty() {
                return self.settle(stack, &settling, api.as_ref());
            }
            if wanted.keys().all(|id| done(id)) {
                return self.finish_update(world, stack, &wanted);
            }
            return Ok(false);
        }
        let planned: Vec<Planned> = ready
            .into_iter()
            .map(|(id, kind)| {
                let planned = properties(world, stack, &id)
                    .and_then(|p| action(stack, &id, &kind, &p).map(|a| (a, p)));
                (id, kind, planned)
            })
            .collect();
        let now = now_rfc3339();
        // What is about to be called is recorded first, as for creation.
        self.commit(stack, |s| {
            for (id, kind, planned) in &planned {
                let (word, reason) = match planned {
                    Ok((Action::Create, _)) => ("CREATE_IN_PROGRESS", None),
                    Ok((Action::Update { .. }, _)) => ("UPDATE_IN_PROGRESS", None),
                    Ok((Action::Replace { .. }, _)) => (
                        "UPDATE_IN_PROGRESS",
                        Some("Requested update requires the creation of a new physical resource; hence creating one."),
                    ),
                    _ => continue,
                };
                let r = s.resources.entry(id.clone()).or_insert_with(|| StackResource {
                    logical_id: id.clone(),
                    resource_type: kind.clone(),
                    physical_id: None,
                    status: ResourceStatus::CreateInProgress,
                    status_reason: None,
                    attributes: Default::default(),
                    last_updated: now.clone(),
                    properties: Value::Null,
                });
                if matches!(planned, Ok((Action::Create, _))) {
                    r.physical_id = None;
                    r.resource_type = kind.clone();
                    r.status = ResourceStatus::CreateInProgress;
                } else {
                    r.status = ResourceStatus::UpdateInProgress;
                }
                r.last_updated = now.clone();
                let physical = r.physical_id.clone();
                s.record(event(id, physical.as_deref(), kind, word, reason));
            }
        })?;
        let outcomes: Vec<Outcome> = in_parallel(&planned, |(id, kind, planned)| {
            let (action, props) = match planned {
                Ok(p) => p,
                Err(e) => return Err(e.clone()),
            };
            let api: &dyn Api = api.as_ref();
            match action {
                Action::Keep | Action::Restore { .. } => {
                    Ok((None, Readiness::Ready, props.clone()))
                }
                Action::Create | Action::Replace { .. } => {
                    make(world, api, stack, id, kind).map(|(c, r, p)| (Some(c), r, p))
                }
                Action::Update { old } => {
                    let current = &stack.resources[id];
                    let physical = current.physical_id.as_deref().unwrap_or_default();
                    let attributes =
                        providers::update(api, kind, physical, &current.attributes, (old, props))?;
                    let readiness = providers::readiness(api, kind, physical, &attributes)?;
                    let updated = providers::Created {
                        physical_id: physical.to_string(),
                        attributes,
                        note: None,
                    };
                    Ok((Some(updated), readiness, props.clone()))
                }
            }
        });
        let now = now_rfc3339();
        self.commit(stack, |s| {
            let mut failed = Vec::new();
            // Restores take entries out of cleanup: highest index first.
            let mut restores: Vec<(usize, String)> = Vec::new();
            for ((id, kind, planned), outcome) in planned.iter().zip(outcomes) {
                let creating = matches!(planned, Ok((Action::Create, _)));
                match (planned, outcome) {
                    (Ok((Action::Keep, _)), _) => {
                        if let Some(r) = s.resources.get_mut(id) {
                            if !r.status.made() {
                                r.status = ResourceStatus::UpdateComplete;
                            }
                        }
                        s.updated.insert(id.clone());
                    }
                    (Ok((Action::Restore { from_cleanup }, _)), _) => {
                        restores.push((*from_cleanup, id.clone()));
                    }
                    (_, Ok((made, readiness, props))) => {
                        if let Ok((Action::Replace { old }, _)) = planned {
                            s.cleanup.push(old.clone());
                        }
                        let Some(r) = s.resources.get_mut(id) else {
                            continue;
                        };
                        let made = made.expect("a create or an update answers what it made");
                        // A replacement may be of another type.
                        r.resource_type = kind.clone();
                        r.physical_id = Some(made.physical_id.clone());
                        r.attributes = made.attributes;
                        r.properties = Value::Object(props);
                        r.last_updated = now.clone();
                        let (status, word, reason) = match (readiness, creating) {
                            (Readiness::Ready, true) => {
                                (ResourceStatus::CreateComplete, "CREATE_COMPLETE", made.note)
                            }
                            (Readiness::Ready, false) => {
                                (ResourceStatus::UpdateComplete, "UPDATE_COMPLETE", None)
                            }
                            (Readiness::Pending, true) => (
                                ResourceStatus::CreateInProgress,
                                "CREATE_IN_PROGRESS",
                                Some("Resource creation Initiated".to_string()),
                            ),
                            (Readiness::Pending, false) => {
                                (ResourceStatus::UpdateInProgress, "UPDATE_IN_PROGRESS", None)
                            }
                        };
                        r.status = status;
                        r.status_reason = reason.clone();
                        s.updated.insert(id.clone());
                        s.record(event(
                            id,
                            Some(&made.physical_id),
                            kind,
                            word,
                            reason.as_deref(),
                        ));
                    }
                    (_, Err(e)) => {
                        let (status, word) = match creating {
                            true => (ResourceStatus::CreateFailed, "CREATE_FAILED"),
                            false => (ResourceStatus::UpdateFailed, "UPDATE_FAILED"),
                        };
                        let physical = s.resources.get_mut(id).and_then(|r| {
                            r.status = status;
                            r.status_reason = Some(e.clone());
                            r.last_updated = now.clone();
                            r.physical_id.clone()
                        });
                        s.record(event(id, physical.as_deref(), kind, word, Some(&e)));
                        failed.push(id.clone());
                    }
                }
            }
            restores.sort_by_key(|r| std::cmp::Reverse(r.0));
            for (at, id) in restores {
                let mut back = s.cleanup.remove(at);
                back.status = ResourceStatus::UpdateComplete;
                back.last_updated = now.clone();
                if let Some(current) = s.resources.insert(id.clone(), back.clone()) {
                    s.cleanup.push(current);
                }
                s.updated.insert(id.clone());
                s.record(event(
                    &id,
                    back.physical_id.as_deref(),
                    &back.resource_type,
                    "UPDATE_COMPLETE",
                    None,
                ));
            }
            if !failed.is_empty() {
                fail(
                    s,
                    &format!(
                        "The following resource(s) failed to update: [{}]. ",
                        failed.join(", ")
                    ),
                );
            }
        })?;
        Ok(true)
    }

    /// Every resource of the version is there: what it no longer has goes
    /// to cleanup, its outputs are evaluated, and cleanup starts.
    fn finish_update(
        &self,
        world: &World,
        stack: &Stack,
        wanted: &std::collections::BTreeMap<String, String>,
    ) -> AwsResult<bool> {
        let outputs = outputs(world, stack);
        if stack.status == StackStatus::UpdateInProgress {
            // New outputs that cannot be had fail the update (a rollback
            // keeps whatever outputs the previous version had).
            if let Err(reason) = outputs
                .as_ref()
                .map_err(String::clone)
                .and_then(|o| keeps_imported_exports(world, stack, o))
            {
                self.commit(stack, |s| fail(s, &reason))?;
                return Ok(true);
            }
        }
        self.commit(stack, |s| {
            let gone: Vec<String> = s
                .resources
                .keys()
                .filter(|id| !wanted.contains_key(*id))
                .cloned()
                .collect();
            for id in gone {
                if let Some(r) = s.resources.remove(&id) {
                    if r.physical_id.is_some() && r.status != ResourceStatus::CreateFailed {
                        s.cleanup.push(r);
                    }
                }
            }
            if let Ok((o, exports)) = outputs {
                s.outputs = o;
                s.exports = exports;
            }
            s.updated.clear();
            let (status, word) = match s.status {
                StackStatus::UpdateInProgress => (
                    StackStatus::UpdateCompleteCleanupInProgress,
                    "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
                ),
                _ => (
                    StackStatus::UpdateRollbackCompleteCleanupInProgress,
                    "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
                ),
            };
            s.status = status;
            stack_event(s, word, None);
        })?;
        Ok(true)
    }

    /// Deletes what the update superseded; a delete that fails is recorded
    /// and left, as CloudFormation's cleanup does, without failing the stack.
    pub(super) fn cleanup_wave(&self, stack: &Stack) -> AwsResult<bool> {
        if stack.cleanup.is_empty() {
            self.commit(stack, |s| {
                let (status, word) = match s.status {
                    StackStatus::UpdateCompleteCleanupInProgress => {
                        (StackStatus::UpdateComplete, "UPDATE_COMPLETE")
                    }
                    _ => (
                        StackStatus::UpdateRollbackComplete,
                        "UPDATE_ROLLBACK_COMPLETE",
                    ),
                };
                s.status = status;
                s.status_reason = None;
                s.previous = None;
                stack_event(s, word, None);
            })?;
            return Ok(false);
        }
        let api = self.api.caller(stack);
        let kept = |r: &StackResource| {
            // A replaced resource follows its UpdateReplacePolicy, a removed
            // one the DeletionPolicy it had; a rollback keeps nothing it made.
            let (template, key) = if stack.template["Resources"].get(&r.logical_id).is_some() {
                (&stack.template, "UpdateReplacePolicy")
            } else {
                match &stack.previous {
                    Some(p) => (&p.template, "DeletionPolicy"),
                    None => return false,
                }
            };
            template["Resources"][&r.logical_id][key].as_str() == Some("Retain")
        };
        let gone = in_parallel(&stack.cleanup, |r| {
            if kept(r) {
                return Ok(false);
            }
            let physical = r.physical_id.as_deref().unwrap_or_default();
            providers::delete(api.as_ref(), &r.resource_type, physical, &r.attributes)
                .map(|()| true)
        });
        let mut attempts = self
            .delete_attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let outcomes: Vec<(StackResource, Option<Result<bool, String>>)> = stack
            .cleanup
            .iter()
            .cloned()
            .zip(gone)
            .map(|(r, gone)| match gone {
                Err(e) if providers::is_busy(&e) => {
                    let key = (
                        stack.arn.clone(),
                        format!(
                            "{}|{}",
                            r.logical_id,
                            r.physical_id.clone().unwrap_or_default()
                        ),
                    );
                    let n = attempts.entry(key).or_insert(0);
                    *n += 1;
                    let result = (*n >= DELETE_RETRIES).then_some(Err(e));
                    (r, result)
                }
                other => (r, Some(other)),
            })
            .collect();
        drop(attempts);
        self.commit(stack, |s| {
            for (r, outcome) in outcomes {
                let Some(outcome) = outcome else { continue };
                s.cleanup
                    .retain(|c| !(c.logical_id == r.logical_id && c.physical_id == r.physical_id));
                let (word, reason) = match &outcome {
                    Ok(true) => ("DELETE_COMPLETE", None),
                    Ok(false) => ("DELETE_SKIPPED", None),
                    Err(e) => ("DELETE_FAILED", Some(e.as_str())),
                };
                s.record(event(
                    &r.logical_id,
                    r.physical_id.as_deref(),
                    &r.resource_type,
                    word,
                    reason,
                ));
            }
        })?;
        Ok(true)
    }
}
