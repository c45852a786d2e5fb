//! The Inference Recommender driver: for each candidate instance type, a
//! temporary endpoint, a load test from inside its network, the measured
//! figures stored as a recommendation.

use crate::assume_job_role;
use crate::driver::{driver, Driver, Step};
use crate::load::{self, Level, Measured};
use crate::release;
use crate::session_of;
use crate::workers::Ended;
use cove_host::s3::joined;
use cove_host::s3::spawn_in_network;
use cove_host::s3::{parse_s3_uri, transfer_failure};
use cove_model::endpoints::{EndpointStatus, InstanceState, SageMakerEndpoint};
use cove_model::ids::now_rfc3339;
use cove_model::jobs::{
    BenchmarkStep, RecommendationJob, RecommendationPhase, RecommendationStatus,
};
use cove_sagemaker::common::Caller;
use cove_sagemaker::definitions::{self, Definition, NewDefinition};
use cove_sagemaker::requests::{
    CreateEndpointConfigInput, CreateEndpointInput, ProductionVariant,
    RecommendationJobPayloadConfig, VpcConfig,
};
use cove_wire::RequestContext;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a temporary endpoint may take to come up.
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(600);

/// The request context the driver's own SageMaker calls run under: the
/// job's account and region, as if the job's role made them.
fn internal_context(j: &RecommendationJob, operation: &str) -> RequestContext {
    RequestContext::internal(operation, &j.region, &j.account_id, &j.request.role_arn, "")
}

/// The job's `InputConfig.ContainerConfig.PayloadConfig`.
fn payload_config(j: &RecommendationJob) -> Option<&RecommendationJobPayloadConfig> {
    j.request
        .input_config
        .container_config
        .as_ref()?
        .payload_config
        .as_ref()
}

/// An integer member as a float, as JSON's `as_f64` read it.
#[allow(clippy::cast_precision_loss)] // why: counts and seconds are far below 2^53.
fn as_f64(n: Option<i64>) -> Option<f64> {
    n.map(|n| n as f64)
}

driver!(
    /// Inference Recommender jobs.
    Recommendation
);

impl Driver for Recommendation {
    type Resource = RecommendationJob;

    fn step(&self, r: &RecommendationJob) -> anyhow::Result<Step> {
        match r.phase {
            RecommendationPhase::Pending => self.recommendation_start(r)?,
            RecommendationPhase::Benchmarking => self.recommendation_run(r)?,
            RecommendationPhase::Done => self.recommendation_cleanup(r)?,
            RecommendationPhase::CleanedUp => return Ok(Step::Done),
        }
        Ok(Step::Next)
    }

    fn fail(&self, r: &RecommendationJob, reason: &str) -> anyhow::Result<()> {
        self.finish_recommendation(
            &r.key(),
            RecommendationStatus::Failed,
            Some(reason.to_string()),
        )
    }
}

impl Recommendation {
    fn update_recommendation(
        &self,
        key: &str,
        f: impl FnOnce(&mut RecommendationJob),
    ) -> anyhow::Result<()> {
        crate::workers::update(&self.store, key, |j: &mut RecommendationJob| {
            f(j);
            j.last_modified_time = now_rfc3339();
        })
    }

    fn finish_recommendation(
        &self,
        key: &str,
        status: RecommendationStatus,
        reason: Option<String>,
    ) -> anyhow::Result<()> {
        self.update_recommendation(key, |j| {
            j.status = status;
            j.failure_reason = reason;
            j.completion_time = Some(now_rfc3339());
            j.phase = RecommendationPhase::Done;
            for s in &mut j.steps {
                if s.status == RecommendationStatus::Pending
                    || s.status == RecommendationStatus::InProgress
                {
                    s.status = RecommendationStatus::Stopped;
                }
            }
        })
    }

    fn recommendation_dir(&self, j: &RecommendationJob) -> PathBuf {
        crate::workload_dir(&self.settings.jobs_dir, &j.arn)
    }

    fn recommendation_start(&self, j: &RecommendationJob) -> anyhow::Result<()> {
        let key = j.key();
        if j.stop_requested {
            return self.finish_recommendation(&key, RecommendationStatus::Stopped, None);
        }
        if j.session_access_key.is_none() {
            let role = j.request.role_arn.as_str();
            let s = assume_job_role(&self.sts, &j.account_id, role)?;
            self.update_recommendation(&key, |j| j.session_access_key = Some(s))?;
        }
        self.update_recommendation(&key, |j| {
            j.status = RecommendationStatus::InProgress;
            j.phase = RecommendationPhase::Benchmarking;
        })
    }

    /// The sample payloads: every file of the `SamplePayloadUrl` archive,
    /// fetched with the role's session.
    fn payloads(&self, j: &RecommendationJob, dir: &Path) -> Result<Vec<Vec<u8>>, String> {
        let url = payload_config(j)
            .and_then(|p| p.sample_payload_url.clone())
            .unwrap_or_default();
        let archive = dir.join("payload.tar.gz");
        let session = session_of(&self.store, j.session_access_key.as_deref());
        let (bucket, key) = parse_s3_uri(&url).unwrap_or_default();
        let path = archive.clone();
        let fetched = joined(spawn_in_network(
            &self.settings,
            &j.region,
            None,
            session.as_ref(),
            move |c| c.get_to_file(&bucket, &key, &path),
        ));
        if let Err(e) = fetched {
            return Err(format!(
                "Unable to download the sample payload from {url}: {}",
                transfer_failure(e, "S3 could not be reached.")
            ));
        }
        let bytes = std::fs::read(&archive).map_err(|e| e.to_string())?;
        let mut out = vec![];
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let entries = tar
            .entries()
            .map_err(|e| format!("The sample payload archive {url} is not a tar.gz file: {e}"))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| {
                format!("The sample payload archive {url} is not a tar.gz file: {e}")
            })?;
            if entry.header().entry_type().is_file() {
                let mut body = vec![];
                std::io::Read::read_to_end(&mut entry, &mut body).map_err(|e| e.to_string())?;
                out.push(body);
            }
        }
        if out.is_empty() {
            return Err(format!("The sample payload archive {url} has no files."));
        }
        Ok(out)
    }

    fn recommendation_run(&self, j: &RecommendationJob) -> anyhow::Result<()> {
        let key = j.key();
        let dir = self.recommendation_dir(j);
        std::fs::create_dir_all(&dir)?;
        let payloads = match self.payloads(j, &dir) {
            Ok(p) => p,
            Err(reason) => {
                return self.finish_recommendation(
                    &key,
                    RecommendationStatus::Failed,
                    Some(format!("ClientError: {reason}")),
                )
            }
        };
        for (n, step) in j.steps.iter().enumerate() {
            if step.status != RecommendationStatus::Pending
                && step.status != RecommendationStatus::InProgress
            {
                continue;
            }
            if crate::workers::stop_requested::<RecommendationJob>(&self.store, &key) {
                return self.finish_recommendation(&key, RecommendationStatus::Stopped, None);
            }
            self.update_recommendation(&key, |j| {
                j.steps[n].status = RecommendationStatus::InProgress
            })?;
            tracing::info!(job = %j.name, instance_type = %step.instance_type, "benchmark starts");
            let outcome = self.benchmark(j, n, &payloads);
            self.remove_temporary_endpoint(j, step);
            let (status, metrics, reason) = match outcome? {
                Ended::Done(m) => (RecommendationStatus::Completed, Some(m), None),
                Ended::Failed(r) => (RecommendationStatus::Failed, None, Some(r)),
                Ended::Stopped => {
                    return self.finish_recommendation(&key, RecommendationStatus::Stopped, None)
                }
            };
            tracing::info!(job = %j.name, instance_type = %step.instance_type, %status, "benchmark ended");
            self.update_recommendation(&key, |j| {
                let s = &mut j.steps[n];
                s.status = status;
                s.metrics = metrics;
                s.failure_reason = reason;
            })?;
        }
        let Some(j) = self.store.snapshot().recommendation_jobs.get(&key).cloned() else {
            return Ok(());
        };
        if j.steps
            .iter()
            .any(|s| s.status == RecommendationStatus::Completed)
        {
            self.finish_recommendation(&key, RecommendationStatus::Completed, None)
        } else {
            let reason = j
                .steps
                .iter()
                .find_map(|s| s.failure_reason.clone())
                .unwrap_or_else(|| "No benchmark completed.".into());
            self.finish_recommendation(&key, RecommendationStatus::Failed, Some(reason))
        }
    }

    /// Deploys the model on the step's instance type, loads it, and measures.
    fn benchmark(
        &self,
        j: &RecommendationJob,
        n: usize,
        payloads: &[Vec<u8>],
    ) -> anyhow::Result<Ended<Value>> {
        let key = j.key();
        let step = &j.steps[n];
        let name = &step.endpoint_name;
        // A restart mid-benchmark starts this step over.
        self.remove_temporary_endpoint(j, step);
        self.wait_endpoint_gone(j, name)?;
        let mut model = j.model.clone();
        model.model_name.clone_from(name);
        if let Some(vpc) = &j.request.input_config.vpc_config {
            model.vpc_config = Some(VpcConfig {
                security_group_ids: vpc.security_group_ids.clone(),
                subnets: vpc.subnets.clone(),
            });
        }
        let create = |operation, request| {
            let ctx = internal_context(j, operation);
            definitions::create(&Caller::new(&self.store, &ctx), &ctx, request)
        };
        let made = create("CreateModel", NewDefinition::Model(model))
            .and_then(|_| {
                let config = CreateEndpointConfigInput {
                    endpoint_config_name: name.clone(),
                    production_variants: vec![ProductionVariant {
                        variant_name: "AllTraffic".into(),
                        model_name: Some(name.clone()),
                        instance_type: Some(step.instance_type.clone()),
                        initial_instance_count: Some(1),
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                create(
                    "CreateEndpointConfig",
                    NewDefinition::EndpointConfig(Box::new(config)),
                )
            })
            .and_then(|_| {
                let endpoint = CreateEndpointInput {
                    endpoint_name: name.clone(),
                    endpoint_config_name: name.clone(),
                    ..Default::default()
                };
                let ctx = internal_context(j, "CreateEndpoint");
                cove_sagemaker::endpoints::create(&Caller::new(&self.store, &ctx), &ctx, endpoint)
            });
        if let Err(e) = made {
            return Ok(Ended::Failed(format!("ClientError: {}", e.message)));
        }
        let created = Instant::now();
        let netns = loop {
            if crate::workers::stop_requested::<RecommendationJob>(&self.store, &key) {
                return Ok(Ended::Stopped);
            }
            let world = self.store.snapshot();
            let e = world.sagemaker_endpoints.get(&SageMakerEndpoint::key_of(
                &j.region,
                &j.account_id,
                name,
            ));
            match e.map(|e| e.status) {
                Some(EndpointStatus::InService) => {
                    let serving = e.into_iter().flat_map(|e| &e.instances).find_map(|i| {
                        (i.state == InstanceState::InService)
                            .then(|| i.netns_path.clone())
                            .flatten()
                    });
                    if let Some(p) = serving {
                        break p;
                    }
                }
                Some(EndpointStatus::Failed) => {
                    let reason = e.and_then(|e| e.failure_reason.clone()).unwrap_or_default();
                    return Ok(Ended::Failed(format!(
                        "ClientError: The model could not be deployed on {}: {reason}",
                        step.instance_type
                    )));
                }
                None => anyhow::bail!("temporary endpoint {name} disappeared"),
                _ => {}
            }
            if created.elapsed() > ENDPOINT_TIMEOUT {
                return Ok(Ended::Failed(format!(
                    "ClientError: The model did not come up on {} within {} s.",
                    step.instance_type,
                    ENDPOINT_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let setup_seconds = cove_model::convert::f64_to_u64(created.elapsed().as_secs_f64().ceil());
        let content_type = payload_config(j)
            .and_then(|p| p.supported_content_types.as_ref()?.first().cloned())
            .unwrap_or_else(|| "application/json".to_string());
        let stopping = j.request.stopping_conditions.as_ref();
        let thresholds = load::thresholds(stopping);
        let max_invocations = as_f64(stopping.and_then(|s| s.max_invocations));
        let input = &j.request.input_config;
        let levels = load::levels(
            input.traffic_pattern.as_ref(),
            as_f64(input.job_duration_in_seconds),
        );
        let start_time = now_rfc3339();
        let mut measured = vec![];
        for level in levels {
            if crate::workers::stop_requested::<RecommendationJob>(&self.store, &key) {
                return Ok(Ended::Stopped);
            }
            let m = run_level(&netns, level, payloads, &content_type);
            tracing::info!(job = %j.name, instance_type = %step.instance_type, users = m.users,
                per_minute = m.invocations_per_minute(), p50_us = ?m.percentile_us(50.0),
                errors = m.errors, "load level");
            let saturated = max_invocations.is_some_and(|max| m.invocations_per_minute() >= max)
                || !load::within(&m, &thresholds);
            measured.push(m);
            if saturated {
                break;
            }
        }
        let end_time = now_rfc3339();
        self.update_recommendation(&key, |j| {
            j.steps[n].invocation_start_time = Some(start_time);
            j.steps[n].invocation_end_time = Some(end_time);
        })?;
        Ok(match load::best(&measured, &thresholds) {
            Some(best) => Ended::Done(load::recommendation_metrics(
                &step.instance_type,
                best,
                setup_seconds,
            )),
            None => Ended::Failed(format!(
                "No load level on {} met the latency thresholds without errors.",
                step.instance_type
            )),
        })
    }

    /// Deletes a step's temporary endpoint, configuration and model copy.
    fn remove_temporary_endpoint(&self, j: &RecommendationJob, step: &BenchmarkStep) {
        let name = &step.endpoint_name;
        let ctx = internal_context(j, "DeleteEndpoint");
        let _ = cove_sagemaker::endpoints::delete(&Caller::new(&self.store, &ctx), &ctx, name);
        let ctx = internal_context(j, "Delete");
        for kind in [Definition::EndpointConfig, Definition::Model] {
            let _ = definitions::delete(&Caller::new(&self.store, &ctx), &ctx, kind, name);
        }
    }

    fn wait_endpoint_gone(&self, j: &RecommendationJob, name: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self
            .store
            .snapshot()
            .sagemaker_endpoints
            .contains_key(&SageMakerEndpoint::key_of(&j.region, &j.account_id, name))
        {
            if Instant::now() > deadline {
                anyhow::bail!("the earlier temporary endpoint {name} is still being deleted");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn recommendation_cleanup(&self, j: &RecommendationJob) -> anyhow::Result<()> {
        for step in &j.steps {
            self.remove_temporary_endpoint(j, step);
        }
        self.store.write(|tx| {
            let Some(mut j) = tx
                .world
                .recommendation_jobs
                .get(&j.key())
                .map(|x| (**x).clone())
            else {
                return Ok(());
            };
            release(tx, None, j.session_access_key.take().as_deref());
            j.phase = RecommendationPhase::CleanedUp;
            tx.put(j);
            Ok(())
        })?;
        let dir = self.recommendation_dir(j);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }
}

/// One concurrency level: `users` threads, each on its own kept-alive
/// connection into the instance's namespace, calling `/invocations` back to
/// back with the payloads in turn until the level's time is up.
fn run_level(netns: &str, level: Level, payloads: &[Vec<u8>], content_type: &str) -> Measured {
    let deadline = Instant::now() + Duration::from_secs_f64(level.seconds);
    let started = Instant::now();
    let results: Vec<(Vec<u64>, u64)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..level.users)
            .map(|user| {
                scope.spawn(move || {
                    let (mut latencies, mut errors) = (vec![], 0u64);
                    let mut conn = None;
                    let mut n = user;
                    while Instant::now() < deadline {
                        if conn.is_none() {
                            match cove_host::http::connect(netns) {
                                Ok(c) => conn = Some(c),
                                Err(_) => {
                                    errors += 1;
                                    std::thread::sleep(Duration::from_millis(50));
                                    continue;
                                }
                            }
                        }
                        let body = &payloads[n % payloads.len()];
                        n += 1;
                        let t = Instant::now();
                        let c = conn.as_mut().expect("connected above");
                        match c.exchange(
                            "POST",
                            "/invocations",
                            &[("Content-Type", content_type)],
                            body,
                        ) {
                            Ok((200, _)) => {
                                latencies.push(cove_model::convert::micros(t.elapsed()))
                            }
                            Ok(_) => errors += 1,
                            Err(_) => {
                                errors += 1;
                                conn = None;
                            }
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let mut m = Measured {
        users: level.users,
        seconds: started.elapsed().as_secs_f64(),
        ..Default::default()
    };
    for (latencies, errors) in results {
        m.latencies_us.extend(latencies);
        m.errors += errors;
    }
    m
}
