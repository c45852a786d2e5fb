//! The server's own metrics in Prometheus's text format (`GET /metrics` on
//! Cove's listener): API calls by service, operation and AWS error code with
//! their latency; data-plane reconcile passes; flow-log records delivered
//! and dropped; and, read from the store at each scrape, ENIs, jobs,
//! endpoints and Studio apps by state, and the store's generations.

use cove_model::jobs::JobKind;
use cove_model::world::World;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    operation: String,
    /// The AWS error code, or `OK`.
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    service: String,
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    kind: String,
    state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// 100 µs to about 6.5 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: HistogramFamily<OperationLabels>,
    passes: Family<OutcomeLabels, Counter>,
    pass_seconds: Histogram,
    pass_changes: Counter,
    flow_records: Family<OutcomeLabels, Counter>,
    resources: Family<StateLabels, Gauge>,
    generation: Gauge,
    applied_generation: Gauge,
    /// The newest reconcile pass: 0 none yet, 1 applied, 2 failed.
    last_pass: std::sync::atomic::AtomicU8,
    /// One scrape at a time: each recounts the resource gauges from zero.
    scraping: std::sync::Mutex<()>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cove");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "api_requests",
            "AWS API calls by service, operation and error code (OK: none)",
            calls.clone(),
        );
        let latency = HistogramFamily::<OperationLabels>::new_with_constructor(latency_histogram);
        registry.register(
            "api_request_duration_seconds",
            "Time to answer an AWS API call",
            latency.clone(),
        );
        let passes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "dataplane_reconcile_passes",
            "Data-plane reconcile passes by outcome (applied, failed)",
            passes.clone(),
        );
        let pass_seconds = latency_histogram();
        registry.register(
            "dataplane_reconcile_duration_seconds",
            "Time a reconcile pass took",
            pass_seconds.clone(),
        );
        let pass_changes = Counter::default();
        registry.register(
            "dataplane_operations_applied",
            "Kernel objects converged and nftables operations applied by reconcile passes",
            pass_changes.clone(),
        );
        let flow_records = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "flow_log_records",
            "Flow-log records by outcome (delivered, dropped: the destination refused them)",
            flow_records.clone(),
        );
        let resources = Family::<StateLabels, Gauge>::default();
        registry.register(
            "resources",
            "Network interfaces, jobs, endpoints and Studio apps by state",
            resources.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "store_generation",
            "Changes to the stored state published in this process",
            generation.clone(),
        );
        let applied_generation = Gauge::default();
        registry.register(
            "dataplane_applied_generation",
            "The newest generation the data plane has made real",
            applied_generation.clone(),
        );
        Metrics {
            registry,
            calls,
            latency,
            passes,
            pass_seconds,
            pass_changes,
            flow_records,
            resources,
            generation,
            applied_generation,
            last_pass: std::sync::atomic::AtomicU8::new(0),
            scraping: std::sync::Mutex::new(()),
        }
    }

    /// How the data plane's newest pass went (for the health check):
    /// `none yet`, `applied` or `failed`.
    pub fn last_pass(&self) -> &'static str {
        match self.last_pass.load(std::sync::atomic::Ordering::Relaxed) {
            0 => "none yet",
            1 => "applied",
            _ => "failed",
        }
    }

    /// One answered API call; `code` is the AWS error code, if it failed.
    pub fn call(&self, service: &str, operation: &str, code: Option<&str>, took: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                service: service.to_string(),
                operation: operation.to_string(),
                code: code.unwrap_or("OK").to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&OperationLabels {
                service: service.to_string(),
                operation: operation.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// One reconcile pass: how long it took and how many changes it applied
    /// (`None`: it failed).
    pub fn reconcile_pass(&self, changes: Option<u64>, took: Duration) {
        let outcome = if changes.is_some() {
            "applied"
        } else {
            "failed"
        };
        self.passes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
        self.pass_seconds.observe(took.as_secs_f64());
        self.pass_changes.inc_by(changes.unwrap_or(0));
        self.last_pass.store(
            if changes.is_some() { 1 } else { 2 },
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    pub fn flow_records(&self, delivered: bool, records: usize) {
        let outcome = if delivered { "delivered" } else { "dropped" };
        self.flow_records
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc_by(records as u64);
    }

    /// The text a scrape gets: the counters, and the states read from `world`.
    pub fn render(&self, world: &World, generation: u64, applied_generation: u64) -> String {
        let _one_at_a_time = self.scraping.lock().unwrap_or_else(|p| p.into_inner());
        self.resources.clear();
        let count = |kind: &str, state: &str| {
            self.resources
                .get_or_create(&StateLabels {
                    kind: kind.into(),
                    state: state.into(),
                })
                .inc();
        };
        for eni in world.network_interfaces.values() {
            count("network_interface", eni.status.as_str());
        }
        for job in world.sagemaker_jobs.values() {
            let kind = match job.kind {
                JobKind::Training => "training_job",
                JobKind::Processing => "processing_job",
            };
            count(kind, job.status.as_str());
        }
        for job in world.transform_jobs.values() {
            count("transform_job", job.status.as_str());
        }
        for endpoint in world.sagemaker_endpoints.values() {
            count("endpoint", endpoint.status.as_str());
        }
        for app in world.studio_apps.values() {
            count("studio_app", app.status.as_str());
        }
        for host in world.hosts.values() {
            count("host", host.state.as_str());
        }
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.applied_generation
            .set(i64::try_from(applied_generation).unwrap_or(i64::MAX));
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
