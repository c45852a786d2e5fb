//! The flow-log collector: once a second it lists the flow sets of every
//! router of this host that has covered ENIs (from inside the router's
//! namespace), feeds the counter growth to
//! [`cove_net::flowlog::Aggregator`], and delivers the records of each
//! finished aggregation window to CloudWatch Logs, one stream per ENI in the
//! flow log's group (created if missing, as AWS does), or to S3 as gzipped
//! files under `<prefix>/AWSLogs/<account>/vpcflowlogs/<region>/YYYY/MM/DD/`.
//! Each host counts its own ENIs' packets; an agent sends its finished
//! windows to the control plane through the store ([`Store::send`]), and the
//! control plane delivers them with its own.

use cove_dataplane::Backend;
use cove_logs::LogsService;
use cove_model::hosts::Locality;
use cove_model::vpc::{FlowLog, LogDestinationType};
use cove_model::world::World;
use cove_net::flowlog::{format_record, Action, Aggregator, EniMeta, Stream, Subscription};
use cove_net::{naming, nft};
use cove_store::Store;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub struct Settings {
    pub instance: String,
    /// Replaces every flow log's `MaxAggregationInterval` (seconds), so
    /// tests and demos need not wait a minute.
    pub window_override: Option<i64>,
    /// Counts the records delivered and dropped (where they are delivered).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Whose packets this host's routers count.
    pub locality: Locality,
}

/// Where the records of finished windows go.
pub enum Delivery {
    /// Delivered by this process, the control plane: to CloudWatch Logs
    /// and S3, with what the agents send.
    Here {
        logs: Arc<LogsService>,
        s3: Option<cove_s3::S3Front>,
    },
    /// Sent to the control plane through the store (an agent).
    ToControlPlane,
}

/// The store's message topic agents send finished windows on.
const TOPIC: &str = "flow-log-records";

/// One finished window of one stream, ready to deliver.
#[derive(serde::Serialize, serde::Deserialize)]
struct Batch {
    stream: Stream,
    account: String,
    /// The flow log's fields, for an S3 object's header line.
    fields: Vec<String>,
    /// (timestamp in ms, record line)
    events: Vec<(i64, String)>,
}

fn now_secs() -> i64 {
    i64::try_from(crate::hosts::now()).unwrap_or(i64::MAX)
}

/// ENI id → the streams that want its records; `owner` names the account
/// of a flow log, whose id its records carry and where they are delivered.
fn subscriptions(
    world: &World,
    s: &Settings,
    owner: &dyn Fn(&FlowLog) -> String,
) -> BTreeMap<String, Vec<Subscription>> {
    let mut by_stream: BTreeMap<Stream, Subscription> = BTreeMap::new();
    let mut logs: Vec<&FlowLog> = world.flow_logs.values().map(Arc::as_ref).collect();
    logs.sort_by(|a, b| a.id.cmp(&b.id));
    for f in logs {
        // A stream's "group" is the log group, or the S3 destination's ARN.
        let group = match f.destination_type {
            LogDestinationType::S3 => f.log_destination.as_ref(),
            LogDestinationType::CloudWatchLogs => f.log_group_name.as_ref(),
        };
        let Some(group) = group else {
            continue;
        };
        let fields = cove_ec2::flow_logs::parse_log_format(&f.log_format).unwrap_or_default();
        let interval = s.window_override.unwrap_or(f.max_aggregation_interval);
        for eni in world.network_interfaces.values().filter(|e| f.covers(e)) {
            let stream = Stream {
                region: f.region.clone(),
                log_group: group.clone(),
                eni: eni.id.clone(),
            };
            let sub = by_stream
                .entry(stream.clone())
                .or_insert_with(|| Subscription {
                    stream,
                    traffic_types: vec![],
                    fields: fields.clone(),
                    interval,
                    meta: EniMeta {
                        account_id: owner(f),
                        vpc_id: eni.vpc_id.clone(),
                        subnet_id: eni.subnet_id.clone(),
                        az_id: world
                            .subnets
                            .get(&eni.subnet_id)
                            .map(|x| x.availability_zone_id.clone())
                            .unwrap_or_default(),
                        region: eni.region.clone(),
                        ip: Some(eni.private_ip),
                    },
                });
            // Flow logs sharing a group share the stream: it captures the union.
            sub.traffic_types.push(f.traffic_type);
            sub.interval = sub.interval.min(interval);
        }
    }
    let mut out: BTreeMap<String, Vec<Subscription>> = BTreeMap::new();
    for (stream, sub) in by_stream {
        out.entry(stream.eni).or_default().push(sub);
    }
    out
}

/// Reads this host's routers' counters and returns the windows that ended.
fn collect(
    store: &Store,
    world: &World,
    settings: &Settings,
    aggregator: &mut Aggregator,
    remembered: &mut BTreeMap<String, (i64, Vec<Subscription>)>,
    now: i64,
) -> Vec<Batch> {
    let owner = |f: &FlowLog| store.owner_of::<FlowLog>(&f.id).unwrap_or_default();
    let mut subs = subscriptions(world, settings, &owner);
    // Another host's ENIs are counted by that host's router.
    subs.retain(|eni, _| {
        world
            .network_interfaces
            .get(eni)
            .is_none_or(|e| settings.locality.holds(e))
    });
    // An ENI that goes (a finished job's) still gets its last window
    // delivered: its subscriptions are remembered for a while.
    for (eni, v) in &subs {
        remembered.insert(eni.clone(), (now, v.clone()));
    }
    remembered.retain(|_, (seen, _)| now - *seen < 1200);
    let mut routers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for eni in subs.keys() {
        if let Some(e) = world.network_interfaces.get(eni) {
            routers
                .entry(naming::router_netns(&settings.instance, &e.vpc_id))
                .or_default()
                .push(eni.clone());
        }
    }
    for (netns, enis) in &routers {
        let Ok(counters) = cove_dataplane::linux::Linux.flow_counters(netns) else {
            continue;
        };
        let owners: BTreeMap<String, (String, Action)> = enis
            .iter()
            .flat_map(|e| {
                [
                    (nft::accepted_set(e), (e.clone(), Action::Accept)),
                    (nft::rejected_set(e), (e.clone(), Action::Reject)),
                ]
            })
            .collect();
        aggregator.observe(netns, now, counters, |set| owners.get(set).cloned(), &subs);
    }
    aggregator.retain_routers(|ns| routers.contains_key(ns));

    let mut due = Vec::new();
    for (stream, records) in aggregator.take_due(now) {
        let Some(sub) = remembered
            .get(&stream.eni)
            .and_then(|(_, v)| v.iter().find(|x| x.stream == stream))
        else {
            continue; // the flow log is gone
        };
        let events: Vec<(i64, String)> = records
            .iter()
            .map(|r| {
                (
                    r.start * 1000,
                    format_record(&sub.fields, r, &stream.eni, &sub.meta),
                )
            })
            .collect();
        due.push(Batch {
            account: sub.meta.account_id.clone(),
            fields: sub.fields.clone(),
            stream,
            events,
        });
    }
    due
}

/// Delivers one window to its CloudWatch Logs stream or S3 bucket.
fn deliver(
    batch: Batch,
    logs: &LogsService,
    s3: Option<&cove_s3::S3Front>,
    metrics: Option<&crate::metrics::Metrics>,
    now: i64,
) {
    let Batch {
        stream,
        account,
        fields,
        events,
    } = batch;
    let count = |ok: bool, n: usize| {
        if let Some(m) = metrics {
            m.flow_records(ok, n);
        }
    };
    if let Some(destination) = stream.log_group.strip_prefix("arn:aws:s3:::") {
        let Some(s3) = s3 else { return };
        let lines: Vec<String> = events.into_iter().map(|(_, line)| line).collect();
        match deliver_to_s3(s3, destination, &account, &stream, &fields, &lines, now) {
            Ok(key) => {
                count(true, lines.len());
                tracing::debug!(eni = %stream.eni, key, "flow-log records delivered to S3")
            }
            Err(e) => {
                count(false, lines.len());
                tracing::warn!(eni = %stream.eni, destination, error = %e, "flow-log delivery to S3 failed")
            }
        }
        return;
    }
    let delivered = logs
        .ensure_stream(&stream.region, &account, &stream.log_group, &stream.eni)
        .and_then(|_| {
            for chunk in events.chunks(5000) {
                logs.put_events(
                    &stream.region,
                    &account,
                    &stream.log_group,
                    &stream.eni,
                    chunk,
                )?;
            }
            Ok(())
        });
    match delivered {
        Ok(()) => {
            count(true, events.len());
            tracing::debug!(eni = %stream.eni, group = %stream.log_group, records = events.len(), "flow-log records delivered")
        }
        Err(e) => {
            count(false, events.len());
            tracing::warn!(eni = %stream.eni, group = %stream.log_group, error = %e.message, "flow-log delivery failed")
        }
    }
}

/// The control plane: delivers what the agents sent.
fn deliver_received(
    store: &Store,
    logs: &LogsService,
    s3: Option<&cove_s3::S3Front>,
    metrics: Option<&crate::metrics::Metrics>,
) {
    let drained = store.drain(TOPIC, 100, |payload| {
        match serde_json::from_str::<Batch>(payload) {
            Ok(batch) => deliver(batch, logs, s3, metrics, now_secs()),
            Err(e) => {
                tracing::error!(error = %e, "an agent sent flow-log records this Cove cannot read")
            }
        }
        Ok(())
    });
    if let Err(e) = drained {
        tracing::warn!(error = %e, "delivering the agents' flow-log records failed");
    }
}

/// Writes one window's records of one ENI as a gzipped object where AWS puts
/// them: `<prefix>/AWSLogs/<account>/vpcflowlogs/<region>/YYYY/MM/DD/
/// <account>_vpcflowlogs_<region>_<eni>_<YYYYMMDDTHHmmZ>_<hash>.log.gz`, with
/// the header line of field names first.
fn deliver_to_s3(
    s3: &cove_s3::S3Front,
    destination: &str,
    account: &str,
    stream: &Stream,
    fields: &[String],
    lines: &[String],
    now: i64,
) -> anyhow::Result<String> {
    use std::io::Write;
    let (bucket, prefix) = destination.split_once('/').unwrap_or((destination, ""));
    let t = time::OffsetDateTime::from_unix_timestamp(now)?;
    let day = format!("{:04}/{:02}/{:02}", t.year(), t.month() as u8, t.day());
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute()
    );
    let hash = cove_model::ids::fnv32(&format!("{}{now}", stream.eni));
    let region = &stream.region;
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", prefix.trim_end_matches('/'))
    };
    let key = format!(
        "{prefix}AWSLogs/{account}/vpcflowlogs/{region}/{day}/{account}_vpcflowlogs_{region}_{}_{stamp}_{hash:08x}.log.gz",
        stream.eni
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    writeln!(gz, "{}", fields.join(" "))?;
    for line in lines {
        writeln!(gz, "{line}")?;
    }
    s3.put_object_bytes(bucket, &key, &gz.finish()?)?;
    Ok(key)
}

/// Windows an agent keeps while the store is unreachable, at most.
const UNSENT_KEPT: usize = 10_000;

/// Runs the collector on its own thread for the life of the process.
pub fn spawn(store: Arc<Store>, delivery: Delivery, settings: Settings) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("cove-flow-logs".into())
        .spawn(move || {
            let mut aggregator = Aggregator::default();
            let mut remembered = BTreeMap::new();
            let mut unsent: Vec<String> = Vec::new();
            loop {
                let world = store.snapshot();
                let now = now_secs();
                let due = if world.flow_logs.is_empty() {
                    Vec::new()
                } else {
                    collect(
                        &store,
                        &world,
                        &settings,
                        &mut aggregator,
                        &mut remembered,
                        now,
                    )
                };
                let metrics = settings.metrics.as_deref();
                match &delivery {
                    Delivery::Here { logs, s3 } => {
                        for batch in due {
                            deliver(batch, logs, s3.as_ref(), metrics, now);
                        }
                        deliver_received(&store, logs, s3.as_ref(), metrics);
                    }
                    Delivery::ToControlPlane => {
                        unsent.extend(due.iter().filter_map(|b| serde_json::to_string(b).ok()));
                        if !unsent.is_empty() {
                            match store.send(TOPIC, &unsent) {
                                Ok(()) => unsent.clear(),
                                Err(e) => {
                                    tracing::warn!(error = %e, windows = unsent.len(), "sending flow-log records to the control plane failed; retrying");
                                    let over = unsent.len().saturating_sub(UNSENT_KEPT);
                                    unsent.drain(..over);
                                }
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .map(|_| ())
}
