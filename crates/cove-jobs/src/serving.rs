//! The endpoint instances placed on this host: what each host's Cove does
//! for them once the control plane has placed them and given them their
//! ENI (`cove serve` for the control plane's host, `cove agent` for its
//! own). It downloads the model through the instance's ENI, starts the
//! serving container and marks the instance in service once `/ping`
//! answers; ships the container's log; marks the instance failed when its
//! container ends; and, when the endpoint's driver retires the instance or
//! the endpoint is deleted, stops the container, removes its files and
//! gives back its ENI. Reaching the container from the runtime front is
//! [`cove_invoke::relay`]'s job when it runs on an agent. The same loop
//! looks after the batch transform instances placed here
//! ([`crate::transform`]).

use crate::hosting::{stop_container, Hosting, Owner, Steps};
use crate::instances::{remove_instance_dir, remove_instances_but};
use crate::workers::{watch_store_every, Every, LEFTOVER_SWEEP};
use cove_host::logs::LogShipper;
use cove_model::endpoints::{EndpointInstance, InstanceState, SageMakerEndpoint};
use cove_model::ids::now_rfc3339;
use cove_model::world::World;
use cove_runtime::{Container, Status};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// How long a retired instance keeps serving the requests it already has.
const DRAIN: Duration = Duration::from_secs(3);

/// Whether a retiring instance has drained (one with no start time has).
fn drained(i: &EndpointInstance, now: &str) -> bool {
    i.retiring_since.as_deref().is_none_or(|since| {
        cove_sagemaker::common::seconds_between(since, now)
            >= i64::try_from(DRAIN.as_secs()).unwrap_or(i64::MAX)
    })
}

impl Hosting {
    /// Starts the thread that looks after the endpoint instances placed on
    /// this host: after every change to the store and every 250 ms (a
    /// container can end without one).
    pub(crate) fn spawn_instances_here(self: &Arc<Self>) -> std::io::Result<()> {
        let me = self.clone();
        let sweep = Every::new(LEFTOVER_SWEEP);
        let mut shippers = HashMap::new();
        watch_store_every(
            self.store.clone(),
            "cove-serving",
            Duration::from_millis(250),
            move |world| {
                me.look_after(world, &mut shippers);
                // From this thread's newest world only: every worker that
                // makes an instance's directory was started from an older
                // one, so no directory is taken for a leftover while its
                // instance comes up.
                if sweep.due() {
                    me.remove_leftovers(world);
                }
            },
        )
    }

    /// One pass over the endpoint and transform instances placed here.
    fn look_after(self: &Arc<Self>, world: &World, shippers: &mut HashMap<String, LogShipper>) {
        let now = now_rfc3339();
        let mut here = HashSet::new();
        self.look_after_transforms(world, &mut here, shippers);
        for e in world.sagemaker_endpoints.values() {
            let key = e.key();
            for i in e
                .instances
                .iter()
                .filter(|i| self.here.runs(i.placed_on.as_deref()))
            {
                here.insert(i.id.clone());
                self.ship_log(e, i, shippers);
                let (me, k, id) = (self.clone(), key.clone(), i.id.clone());
                let worker = format!("{key}/{}", i.id);
                if e.delete_requested || (i.state == InstanceState::Retiring && drained(i, &now)) {
                    self.workers
                        .run_once(&worker, format!("rel-{}", i.id), move || {
                            me.release_here(&k, &id)
                        });
                    continue;
                }
                match i.state {
                    InstanceState::Downloading | InstanceState::Starting => {
                        self.workers
                            .run_once(&worker, format!("up-{}", i.id), move || {
                                me.bring_up(&Owner::Endpoint(k), &id, Steps::OnItsHost)
                            });
                    }
                    InstanceState::InService => self.check_container(e, i),
                    _ => {}
                }
            }
        }
        shippers.retain(|id, _| here.contains(id));
    }

    /// Ships what the instance's container has written to its log stream.
    fn ship_log(
        &self,
        e: &SageMakerEndpoint,
        i: &EndpointInstance,
        shippers: &mut HashMap<String, LogShipper>,
    ) {
        let dir = self.instance_dir(&e.arn, &i.id);
        if !dir.join("container.log").exists() {
            return;
        }
        shippers
            .entry(i.id.clone())
            .or_insert_with(|| LogShipper::new(&dir, || format!("{}/{}", i.variant, i.id)))
            .ship(
                self.logs.as_ref(),
                &e.region,
                &e.account_id,
                &endpoint_log_group(&e.name),
            );
    }

    /// Marks an in-service instance whose container ended as failed: it no
    /// longer takes traffic, and the driver replaces it.
    fn check_container(&self, e: &SageMakerEndpoint, i: &EndpointInstance) {
        let state = self.instance_dir(&e.arn, &i.id).join("state");
        let status = Container::adopt(&state).ok().flatten().map(|c| c.status());
        if matches!(status, Some(Status::Running)) {
            return;
        }
        tracing::warn!(endpoint = %e.name, instance = %i.id, ?status, "serving container ended");
        let reason = format!(
            "The serving container of instance {} exited ({status:?}).",
            i.id
        );
        let marked = self.update_instance(&Owner::Endpoint(e.key()), &i.id, |i| {
            if i.state == InstanceState::InService {
                i.state = InstanceState::Failed;
                i.failure_reason = Some(reason);
            }
        });
        if let Err(err) = marked {
            tracing::warn!(instance = %i.id, error = %err, "marking an instance failed");
        }
    }

    /// Stops a retired instance (or one of a deleted endpoint), ships its
    /// last lines, removes its files, and gives back its ENI and session.
    fn release_here(&self, key: &str, id: &str) {
        let Some(e) = self.endpoint(key) else { return };
        let Some(i) = e.instances.iter().find(|i| i.id == id) else {
            return;
        };
        let dir = self.instance_dir(&e.arn, id);
        let grace = if e.delete_requested {
            Duration::from_secs(2)
        } else {
            self.settings.stop_grace.min(Duration::from_secs(10))
        };
        stop_container(&dir, grace);
        if dir.join("container.log").exists() {
            LogShipper::new(&dir, || format!("{}/{}", i.variant, i.id)).ship(
                self.logs.as_ref(),
                &e.region,
                &e.account_id,
                &endpoint_log_group(&e.name),
            );
        }
        if let Err(err) = remove_instance_dir(&dir) {
            tracing::warn!(instance = id, error = %format!("{err:#}"), "removing an instance's files");
            return;
        }
        if let Err(err) = self.remove_released(&Owner::Endpoint(key.to_string()), id) {
            tracing::warn!(instance = id, error = %err.message, "releasing an endpoint instance");
        }
    }

    /// Removes the files and containers of endpoint and transform
    /// instances that no longer run here: released while this host was
    /// lost, or left by a crash between a release's steps.
    fn remove_leftovers(&self, world: &World) {
        let live: HashSet<_> = world
            .sagemaker_endpoints
            .values()
            .flat_map(|e| {
                e.instances
                    .iter()
                    .filter(|i| self.here.runs(i.placed_on.as_deref()))
                    .map(|i| self.instance_dir(&e.arn, &i.id))
            })
            .chain(self.transform_dirs_here(world))
            .collect();
        remove_instances_but(
            &self.settings.jobs_dir,
            &["endpoint", "transform-job"],
            &live,
        );
    }
}

/// An endpoint's CloudWatch Logs group.
fn endpoint_log_group(endpoint: &str) -> String {
    format!("/aws/sagemaker/Endpoints/{endpoint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retired_instance_drains_before_it_is_released() {
        let mut i = EndpointInstance::provisioning("AllTraffic", "c");
        i.state = InstanceState::Retiring;
        assert!(drained(&i, "2026-12-06T10:00:00Z"), "no start: drained");
        i.retiring_since = Some("2026-12-06T10:00:00Z".into());
        assert!(!drained(&i, "2026-12-06T10:00:02Z"));
        assert!(drained(&i, "2026-12-06T10:00:03Z"));
    }
}
