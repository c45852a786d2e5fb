//! Batch transform jobs. The driver on the control plane places and
//! provisions a job's instances as an endpoint's are; each instance's host
//! brings it up, sends it its share of the input through `/invocations`
//! from inside its network, writes the answers back to S3 and reports; the
//! driver ends the job from the reports, and the hosts release the
//! instances.

use crate::driver::{Driver, Step};
use crate::hosting::{release_network, stop_container, Hosting, Owner, Steps};
use crate::instances::remove_instance_dir;
use crate::training::{ARTIFACT_UPLOAD_FAILED, DATA_DOWNLOAD_FAILED, INTERNAL_ERROR};
use cove_host::http::{connect, Connection};
use cove_host::logs::LogShipper;
use cove_host::s3::joined;
use cove_host::s3::spawn_in_network;
use cove_host::s3::{parse_s3_uri, transfer_failure, TransferError};
use cove_model::endpoints::{EndpointInstance, InstanceState, TransformJob, TransformPhase};
use cove_model::ids::now_rfc3339;
use cove_model::jobs::JobStatus;
use cove_model::world::World;
use cove_sagemaker::requests::CreateTransformJobRequest;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LOG_GROUP: &str = "/aws/sagemaker/TransformJobs";

const MODEL_FAILED: &str = "AlgorithmError: See job logs for more information";

/// How records are sent: the request's values, else the container's
/// `/execution-parameters`, else AWS's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Batching {
    pub multi_record: bool,
    pub max_payload: usize,
    pub concurrency: usize,
    pub split_lines: bool,
    pub assemble_lines: bool,
}

pub fn batching(request: &CreateTransformJobRequest, container: &Value) -> Batching {
    // A negative count reads as none, as JSON's `as_u64` read it.
    let count = |n: Option<i64>| n.and_then(|n| u64::try_from(n).ok());
    let strategy = request
        .batch_strategy
        .as_deref()
        .map(|s| s == "MultiRecord")
        .or_else(|| {
            container["BatchStrategy"]
                .as_str()
                .map(|s| s.eq_ignore_ascii_case("MULTI_RECORD"))
        })
        .unwrap_or(false);
    let payload_mb = count(request.max_payload_in_mb)
        .or_else(|| container["MaxPayloadInMB"].as_u64())
        .unwrap_or(6)
        .max(1);
    let concurrency = count(request.max_concurrent_transforms)
        .or_else(|| container["MaxConcurrentTransforms"].as_u64())
        .unwrap_or(1)
        .clamp(1, 64);
    Batching {
        multi_record: strategy,
        max_payload: cove_model::convert::u64_to_usize(payload_mb).saturating_mul(1024 * 1024),
        concurrency: cove_model::convert::u64_to_usize(concurrency),
        split_lines: request.transform_input.split_type.as_deref() == Some("Line"),
        assemble_lines: request.transform_output.assemble_with.as_deref() == Some("Line"),
    }
}

/// The request bodies for one input object, in order.
pub fn payloads(data: &[u8], b: &Batching) -> Result<Vec<Vec<u8>>, String> {
    if !b.split_lines {
        if data.len() > b.max_payload {
            return Err(format!(
                "an object of {} bytes exceeds MaxPayloadInMB",
                data.len()
            ));
        }
        return Ok(vec![data.to_vec()]);
    }
    let records: Vec<&[u8]> = data
        .split(|c| *c == b'\n')
        .map(|r| r.strip_suffix(b"\r").unwrap_or(r))
        .filter(|r| !r.is_empty())
        .collect();
    let mut out: Vec<Vec<u8>> = Vec::new();
    for r in records {
        if r.len() > b.max_payload {
            return Err(format!(
                "a record of {} bytes exceeds MaxPayloadInMB",
                r.len()
            ));
        }
        match out.last_mut() {
            Some(last) if b.multi_record && last.len() + 1 + r.len() <= b.max_payload => {
                last.push(b'\n');
                last.extend_from_slice(r);
            }
            _ => out.push(r.to_vec()),
        }
    }
    Ok(out)
}

/// The output object: the answers in order, each ended by a newline when
/// `AssembleWith` is `Line`.
pub fn assemble(answers: &[Vec<u8>], lines: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for a in answers {
        out.extend_from_slice(a);
        if lines && !a.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    out
}

/// Where one request's answer (or its failure) lands.
type Slot = Mutex<Option<Result<Vec<u8>, String>>>;

/// One input object and where its answers go.
#[derive(Debug, Clone)]
struct Item {
    bucket: String,
    key: String,
    out_bucket: String,
    out_key: String,
}

/// Batch transform jobs: the driver on the control plane, which places and
/// provisions the instances and moves the job along from what their hosts
/// report.
pub(crate) struct Transform(pub(crate) Arc<Hosting>);

impl Driver for Transform {
    type Resource = TransformJob;

    fn step(&self, j: &TransformJob) -> anyhow::Result<Step> {
        let hosting = &self.0;
        match j.phase {
            TransformPhase::Starting => hosting.transform_start(j)?,
            TransformPhase::Transforming => hosting.transform_await(j)?,
            TransformPhase::Done => hosting.transform_cleanup(j)?,
            TransformPhase::CleanedUp => return Ok(Step::Done),
        }
        Ok(Step::Next)
    }

    fn fail(&self, j: &TransformJob, reason: &str) -> anyhow::Result<()> {
        self.0
            .finish_transform(&j.key(), JobStatus::Failed, Some(reason.to_string()))
    }
}

/// How the job ends, from what its instances say: asked to stop, one
/// failed (its reason), or one that has not finished its part is on a lost
/// host (AWS's internal error). `None`: it goes on.
fn verdict(j: &TransformJob, world: &World) -> Option<(JobStatus, Option<String>)> {
    if j.stop_requested {
        return Some((JobStatus::Stopped, None));
    }
    if let Some(reason) = j.instances.iter().find_map(|i| i.failure_reason.clone()) {
        return Some((JobStatus::Failed, Some(reason)));
    }
    let lost = j
        .instances
        .iter()
        .filter(|i| !i.transformed)
        .find(|i| on_lost_host(world, i));
    lost.map(|i| {
        tracing::warn!(job = %j.name, instance = %i.id, host = ?i.placed_on, "the host of a transform instance was lost");
        (JobStatus::Failed, Some(INTERNAL_ERROR.to_string()))
    })
}

fn on_lost_host(world: &World, i: &EndpointInstance) -> bool {
    cove_model::hosts::on_lost_host(world, i.placed_on.as_deref())
}

impl Hosting {
    fn update_transform(&self, key: &str, f: impl FnOnce(&mut TransformJob)) -> anyhow::Result<()> {
        crate::workers::update(self.store(), key, f)
    }

    fn finish_transform(
        &self,
        key: &str,
        status: JobStatus,
        reason: Option<String>,
    ) -> anyhow::Result<()> {
        self.update_transform(key, |j| {
            let now = now_rfc3339();
            j.status = status;
            j.failure_reason = reason;
            j.end_time = Some(now.clone());
            j.last_modified_time = now;
            j.phase = TransformPhase::Done;
        })
    }

    /// Calls `pass` with the job at every change to the store and at least
    /// every second while it stays in `phase`, until `pass` says it is done.
    fn while_in_phase(
        &self,
        key: &str,
        phase: TransformPhase,
        mut pass: impl FnMut(&TransformJob, &World) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        loop {
            let generation = self.store().generation();
            let world = self.store().snapshot();
            let Some(j) = world.transform_jobs.get(key).filter(|j| j.phase == phase) else {
                return Ok(());
            };
            if pass(j, &world)? {
                return Ok(());
            }
            self.store()
                .wait_for_change(generation, Duration::from_secs(1));
        }
    }

    /// Makes the job's instances and provisions each (role session, host,
    /// ENI); their hosts bring them into service.
    fn transform_start(self: &Arc<Self>, j: &TransformJob) -> anyhow::Result<()> {
        let key = j.key();
        // A negative count reads as none, as JSON's `as_u64` read it.
        let count = cove_model::convert::u64_to_usize(
            u64::try_from(j.request.transform_resources.instance_count).unwrap_or(1),
        );
        if j.instances.len() < count && !j.stop_requested {
            self.update_transform(&key, |j| {
                while j.instances.len() < count {
                    j.instances
                        .push(EndpointInstance::provisioning("AllTraffic", ""));
                }
                j.start_time.get_or_insert_with(now_rfc3339);
            })?;
        }
        self.while_in_phase(&key, TransformPhase::Starting, |j, world| {
            if let Some((status, reason)) = verdict(j, world) {
                self.finish_transform(&key, status, reason)?;
                return Ok(true);
            }
            if j.instances
                .iter()
                .all(|i| i.state == InstanceState::InService)
            {
                self.update_transform(&key, |j| j.phase = TransformPhase::Transforming)?;
                return Ok(true);
            }
            for i in j
                .instances
                .iter()
                .filter(|i| i.state == InstanceState::Provisioning)
            {
                let (me, k, id) = (self.clone(), key.clone(), i.id.clone());
                self.workers.run_once(
                    &format!("{key}/{}", i.id),
                    format!("up-{}", i.id),
                    move || me.bring_up(&Owner::Transform(k), &id, Steps::Provision),
                );
            }
            Ok(false)
        })
    }

    /// Waits for every instance's host to transform its share.
    fn transform_await(&self, j: &TransformJob) -> anyhow::Result<()> {
        let key = j.key();
        self.while_in_phase(&key, TransformPhase::Transforming, |j, world| {
            if let Some((status, reason)) = verdict(j, world) {
                self.finish_transform(&key, status, reason)?;
                return Ok(true);
            }
            if j.instances.iter().all(|i| i.transformed) {
                self.finish_transform(&key, JobStatus::Completed, None)?;
                return Ok(true);
            }
            Ok(false)
        })
    }

    /// Waits for the instances' hosts to release them; gives back those of
    /// lost hosts itself (what they left is removed when they come back).
    fn transform_cleanup(&self, j: &TransformJob) -> anyhow::Result<()> {
        let key = j.key();
        self.while_in_phase(&key, TransformPhase::Done, |j, world| {
            let finished = j.instances.iter().all(|i| on_lost_host(world, i));
            if !finished && !j.instances.iter().any(|i| on_lost_host(world, i)) {
                return Ok(false);
            }
            self.store().write(|tx| {
                let mut j = tx.cloned::<TransformJob>(&key)?;
                let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut j.instances)
                    .into_iter()
                    .partition(|i| on_lost_host(&tx.world, i));
                for i in &gone {
                    release_network(tx, i);
                }
                j.instances = kept;
                if finished {
                    j.phase = TransformPhase::CleanedUp;
                }
                tx.put(j);
                Ok(())
            })?;
            Ok(finished)
        })?;
        let dir = self.owner_dir(&Owner::Transform(key));
        // Fails while an instance's directory is still there.
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }

    // ---- On the instances' hosts ----

    /// One pass over the transform instances placed on this host: brings
    /// them up, runs each one's share once its job transforms, ships their
    /// logs, and releases them once the job is done. `here` gathers their ids.
    pub(crate) fn look_after_transforms(
        self: &Arc<Self>,
        world: &World,
        here: &mut HashSet<String>,
        shippers: &mut HashMap<String, LogShipper>,
    ) {
        for j in world.transform_jobs.values() {
            let key = j.key();
            for i in j
                .instances
                .iter()
                .filter(|i| self.here.runs(i.placed_on.as_deref()))
            {
                here.insert(i.id.clone());
                let dir = self.owner_dir(&Owner::Transform(key.clone())).join(&i.id);
                if dir.join("container.log").exists() {
                    shippers
                        .entry(i.id.clone())
                        .or_insert_with(|| LogShipper::new(&dir, || format!("{}/{}", j.name, i.id)))
                        .ship(self.logs(), &j.region, &j.account_id, LOG_GROUP);
                }
                let worker = format!("{key}/{}", i.id);
                let (me, k, id) = (self.clone(), key.clone(), i.id.clone());
                if j.phase == TransformPhase::Done {
                    if self.workers.busy(&worker) {
                        // Its share (or bring-up) is still at work: the
                        // container stops, so the work ends and the
                        // release can start.
                        self.workers.run_once(
                            &format!("{worker}/stop"),
                            format!("stop-{id}"),
                            move || stop_container(&dir, Duration::from_secs(2)),
                        );
                    } else {
                        self.workers
                            .run_once(&worker, format!("rel-{id}"), move || {
                                me.release_transform_here(&k, &id)
                            });
                    }
                    continue;
                }
                match (j.phase, i.state) {
                    (
                        TransformPhase::Starting,
                        InstanceState::Downloading | InstanceState::Starting,
                    ) => self.workers.run_once(&worker, format!("up-{id}"), move || {
                        me.bring_up(&Owner::Transform(k), &id, Steps::OnItsHost)
                    }),
                    (TransformPhase::Transforming, InstanceState::InService) if !i.transformed => {
                        self.workers.run_once(&worker, format!("bt-{id}"), move || {
                            me.transform_here(&k, &id)
                        })
                    }
                    _ => {}
                }
            }
        }
    }

    /// The live transform instances' directories on this host, for the
    /// sweep of leftovers.
    pub(crate) fn transform_dirs_here(&self, world: &World) -> Vec<std::path::PathBuf> {
        world
            .transform_jobs
            .values()
            .flat_map(|j| {
                let owner = self.owner_dir(&Owner::Transform(j.key()));
                j.instances
                    .iter()
                    .filter(|i| self.here.runs(i.placed_on.as_deref()))
                    .map(move |i| owner.join(&i.id))
            })
            .collect()
    }

    /// Transforms the share of instance `id` (every Nth input object from
    /// its ordinal on) from inside its network, and reports it: done, or
    /// failed with the job's reason.
    fn transform_here(&self, key: &str, id: &str) {
        let owner = Owner::Transform(key.to_string());
        let outcome = self.transform_share_here(key, id);
        let world = self.store().snapshot();
        let Some(j) = world.transform_jobs.get(key) else {
            return;
        };
        if j.phase != TransformPhase::Transforming || j.stop_requested {
            return; // a stop ends its work: nothing to report
        }
        let reported = match outcome {
            Ok(()) => self.update_instance(&owner, id, |i| i.transformed = true),
            Err(reason) => self.fail(&owner, id, reason),
        };
        if let Err(err) = reported {
            tracing::warn!(job = %j.name, instance = id, error = %err, "reporting a transform share");
        }
    }

    /// The share's work; `Err` with the job's `FailureReason`.
    fn transform_share_here(&self, key: &str, id: &str) -> Result<(), String> {
        let internal = |e: anyhow::Error| {
            tracing::error!(instance = id, error = %format!("{e:#}"), "a transform share could not start");
            INTERNAL_ERROR.to_string()
        };
        crate::wait_for_network_here(self.store(), self.settings(), "transform instance's ENI")
            .map_err(internal)?;
        let world = self.store().snapshot();
        let (j, n) = world
            .transform_jobs
            .get(key)
            .and_then(|j| Some((j, j.instances.iter().position(|i| i.id == id)?)))
            .ok_or_else(|| internal(anyhow::anyhow!("the job is gone")))?;
        let (i, count) = (&j.instances[n], j.instances.len());
        let container_ns = i.netns_path.clone().unwrap_or_default();
        // The container's own execution parameters fill what the request leaves out.
        let params = connect(&container_ns)
            .ok()
            .and_then(|mut c| c.exchange("GET", "/execution-parameters", &[], b"").ok())
            .filter(|(status, _)| *status == 200)
            .and_then(|(_, body)| serde_json::from_slice::<Value>(&body).ok())
            .unwrap_or(Value::Null);
        let b = batching(&j.request, &params);
        let source = &j.request.transform_input.data_source.s3_data_source;
        let (uri, manifest) = (source.s3_uri.clone(), source.s3_data_type == "ManifestFile");
        let out_uri = j.request.transform_output.s3_output_path.clone();
        let gzip = j.request.transform_input.compression_type.as_deref() == Some("Gzip");
        let content_type = j.request.transform_input.content_type.clone();
        let accept = j.request.transform_output.accept.clone();
        let dir = self.owner_dir(&Owner::Transform(key.to_string())).join(id);
        std::fs::create_dir_all(&dir).map_err(|e| internal(e.into()))?;
        // Every instance lists the same objects (S3 lists in key order) and
        // takes every Nth from its ordinal on.
        let result = joined(spawn_in_network(
            self.settings(),
            &j.region,
            self.netns(i),
            self.session(i).as_ref(),
            // A failed listing is the outer error, a failed share the inner.
            move |c| {
                let items = list_inputs(c, &uri, manifest, &out_uri, &dir)?;
                let share: Vec<Item> = items.into_iter().skip(n).step_by(count).collect();
                Ok(transform_share(
                    c,
                    &share,
                    &b,
                    gzip,
                    content_type.as_deref(),
                    accept.as_deref(),
                    &container_ns,
                    &dir,
                ))
            },
        ));
        let shared = result.map_err(|e| transfer_failure(e, DATA_DOWNLOAD_FAILED))?;
        shared.map_err(|e| match e {
            TransferError::Local(detail) if detail.starts_with("model:") => {
                tracing::info!(job = %j.name, %detail, "model failed a request");
                MODEL_FAILED.to_string()
            }
            TransferError::Local(detail) => format!("ClientError: {detail}"),
            other => transfer_failure(other, ARTIFACT_UPLOAD_FAILED),
        })
    }

    /// Stops a finished job's instance here, ships its last lines, removes
    /// its files, and gives back its ENI and session.
    fn release_transform_here(&self, key: &str, id: &str) {
        let world = self.store().snapshot();
        let Some(j) = world.transform_jobs.get(key) else {
            return;
        };
        let Some(i) = j.instances.iter().find(|i| i.id == id) else {
            return;
        };
        let dir = self.owner_dir(&Owner::Transform(key.to_string())).join(id);
        stop_container(&dir, Duration::from_secs(2));
        if dir.join("container.log").exists() {
            LogShipper::new(&dir, || format!("{}/{}", j.name, i.id)).ship(
                self.logs(),
                &j.region,
                &j.account_id,
                LOG_GROUP,
            );
        }
        if let Err(err) = remove_instance_dir(&dir) {
            tracing::warn!(instance = id, error = %format!("{err:#}"), "removing a transform instance's files");
            return;
        }
        if let Err(err) = self.remove_released(&Owner::Transform(key.to_string()), id) {
            tracing::warn!(instance = id, error = %err.message, "releasing a transform instance");
        }
    }
}

/// The input objects under the prefix (or named by the manifest), each
/// with its output object `<S3OutputPath>/<path below the prefix>.out`.
fn list_inputs(
    c: &cove_host::s3::S3Client,
    uri: &str,
    manifest: bool,
    out_uri: &str,
    scratch: &Path,
) -> Result<Vec<Item>, TransferError> {
    let (bucket, prefix) =
        parse_s3_uri(uri).ok_or_else(|| TransferError::Local(format!("not an S3 URI: {uri}")))?;
    let (out_bucket, out_prefix) = parse_s3_uri(out_uri)
        .ok_or_else(|| TransferError::Local(format!("not an S3 URI: {out_uri}")))?;
    let objects: Vec<(String, String, String)> = if manifest {
        let path = scratch.join(".manifest");
        c.get_to_file(&bucket, &prefix, &path)?;
        let text =
            std::fs::read_to_string(&path).map_err(|e| TransferError::Local(e.to_string()))?;
        let entries: Vec<Value> = serde_json::from_str(&text)
            .map_err(|e| TransferError::Local(format!("manifest {uri}: {e}")))?;
        let (b, p) = entries
            .first()
            .and_then(|v| v["prefix"].as_str())
            .and_then(parse_s3_uri)
            .ok_or_else(|| TransferError::Local(format!("manifest {uri} has no prefix")))?;
        entries
            .iter()
            .skip(1)
            .filter_map(Value::as_str)
            .map(|rel| (b.clone(), format!("{p}{rel}"), rel.to_string()))
            .collect()
    } else {
        c.list(&bucket, &prefix)?
            .into_iter()
            .filter(|(k, _)| !k.ends_with('/'))
            .map(|(k, _)| {
                let rel = k
                    .strip_prefix(&prefix)
                    .unwrap_or(&k)
                    .trim_start_matches('/');
                let rel = if rel.is_empty() {
                    k.rsplit('/').next().unwrap_or(&k)
                } else {
                    rel
                }
                .to_string();
                (bucket.clone(), k.clone(), rel)
            })
            .collect()
    };
    if objects.is_empty() {
        return Err(TransferError::Service {
            status: 404,
            code: "NoSuchKey".into(),
            message: format!("No S3 objects found under S3 URL \"{uri}\"."),
        });
    }
    Ok(objects
        .into_iter()
        .map(|(b, k, rel)| Item {
            bucket: b,
            key: k,
            out_bucket: out_bucket.clone(),
            out_key: format!("{}/{rel}.out", out_prefix.trim_end_matches('/'))
                .trim_start_matches('/')
                .to_string(),
        })
        .collect())
}

/// Transforms one instance's objects: read, split, batch, invoke over
/// `concurrency` connections, assemble in order, write.
#[allow(clippy::too_many_arguments)]
fn transform_share(
    c: &cove_host::s3::S3Client,
    items: &[Item],
    b: &Batching,
    gzip: bool,
    content_type: Option<&str>,
    accept: Option<&str>,
    container_ns: &str,
    dir: &Path,
) -> Result<(), TransferError> {
    let local = |e: std::io::Error| TransferError::Local(e.to_string());
    std::fs::create_dir_all(dir).map_err(local)?;
    let connections: Vec<Mutex<Connection>> = (0..b.concurrency)
        .map(|_| connect(container_ns).map(Mutex::new))
        .collect::<Result<_, _>>()
        .map_err(|e| {
            TransferError::Local(format!("model: cannot reach the serving container: {e}"))
        })?;
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(ct) = content_type {
        headers.push(("Content-Type", ct));
    }
    if let Some(a) = accept {
        headers.push(("Accept", a));
    }
    for item in items {
        let input = dir.join("input");
        c.get_to_file(&item.bucket, &item.key, &input)?;
        let mut data = std::fs::read(&input).map_err(local)?;
        if gzip {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&data[..])
                .read_to_end(&mut plain)
                .map_err(|e| {
                    TransferError::Local(format!(
                        "s3://{}/{} is not gzip: {e}",
                        item.bucket, item.key
                    ))
                })?;
            data = plain;
        }
        let bodies = payloads(&data, b)
            .map_err(|e| TransferError::Local(format!("s3://{}/{}: {e}", item.bucket, item.key)))?;
        let answers: Vec<Slot> = bodies.iter().map(|_| Mutex::new(None)).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for conn in &connections {
                let (bodies, answers, next, headers) = (&bodies, &answers, &next, &headers);
                scope.spawn(move || loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= bodies.len() {
                        return;
                    }
                    let mut conn = conn.lock().expect("lock");
                    let answer = match conn.exchange("POST", "/invocations", headers, &bodies[n]) {
                        Ok((200..=299, body)) => Ok(body),
                        Ok((status, body)) => Err(format!(
                            "status {status}: {}",
                            String::from_utf8_lossy(&body)
                        )),
                        Err(e) => Err(e.to_string()),
                    };
                    let failed = answer.is_err();
                    *answers[n].lock().expect("lock") = Some(answer);
                    if failed {
                        next.store(bodies.len(), std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                });
            }
        });
        let mut ordered = Vec::with_capacity(answers.len());
        for a in answers {
            match a.into_inner().expect("lock") {
                Some(Ok(body)) => ordered.push(body),
                Some(Err(e)) => {
                    let _ = cove_host::logs::note(
                        &dir.join("container.log"),
                        &format!(
                            "cove: the model failed a request for s3://{}/{}: {e}",
                            item.bucket, item.key
                        ),
                    );
                    return Err(TransferError::Local(format!("model: {e}")));
                }
                None => return Err(TransferError::Local("model: a request was not sent".into())),
            }
        }
        let output = dir.join("output");
        std::fs::write(&output, assemble(&ordered, b.assemble_lines)).map_err(local)?;
        c.put_file(&item.out_bucket, &item.out_key, &output)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(multi: bool, max: usize) -> Batching {
        Batching {
            multi_record: multi,
            max_payload: max,
            concurrency: 1,
            split_lines: true,
            assemble_lines: true,
        }
    }

    #[test]
    fn records_are_split_by_line_and_batched_up_to_the_payload_limit() {
        let data = b"1,2\n3,4\r\n\n5,6\n7,8";
        assert_eq!(
            payloads(data, &lines(false, 100)).unwrap(),
            vec![
                b"1,2".to_vec(),
                b"3,4".to_vec(),
                b"5,6".to_vec(),
                b"7,8".to_vec()
            ]
        );
        assert_eq!(
            payloads(data, &lines(true, 7)).unwrap(),
            vec![b"1,2\n3,4".to_vec(), b"5,6\n7,8".to_vec()]
        );
        assert_eq!(
            payloads(data, &lines(true, 100)).unwrap(),
            vec![b"1,2\n3,4\n5,6\n7,8".to_vec()]
        );
        assert!(payloads(b"123456", &lines(true, 3)).is_err());
        let whole = Batching {
            split_lines: false,
            ..lines(true, 100)
        };
        assert_eq!(payloads(data, &whole).unwrap(), vec![data.to_vec()]);
    }

    #[test]
    fn answers_are_assembled_in_order() {
        let a = vec![b"x".to_vec(), b"y\n".to_vec()];
        assert_eq!(assemble(&a, true), b"x\ny\n");
        assert_eq!(assemble(&a, false), b"xy\n");
    }

    #[test]
    fn batching_takes_the_request_then_the_container_then_defaults() {
        let req: CreateTransformJobRequest = serde_json::from_value(json!({
            "TransformJobName": "t", "ModelName": "m",
            "TransformInput": {"SplitType": "Line",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in"}}},
            "TransformOutput": {"AssembleWith": "Line", "S3OutputPath": "s3://b/out"},
            "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        }))
        .unwrap();
        let b = batching(&req, &Value::Null);
        assert_eq!(
            (b.multi_record, b.max_payload, b.concurrency),
            (false, 6 * 1024 * 1024, 1)
        );
        let container = json!({"BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 2, "MaxConcurrentTransforms": 4});
        let b = batching(&req, &container);
        assert_eq!(
            (b.multi_record, b.max_payload, b.concurrency),
            (true, 2 * 1024 * 1024, 4)
        );
        let req = CreateTransformJobRequest {
            batch_strategy: Some("SingleRecord".into()),
            max_concurrent_transforms: Some(2),
            ..CreateTransformJobRequest::default()
        };
        let b = batching(&req, &container);
        assert_eq!(
            (
                b.multi_record,
                b.concurrency,
                b.split_lines,
                b.assemble_lines
            ),
            (false, 2, false, false)
        );
    }
}
