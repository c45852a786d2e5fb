//! `cove reach` and `cove reach-job`: reachability answers on the terminal,
//! read from the data directory of a `cove serve` (its store, opened
//! read-only beside the running server) with `cove-reach`.

use cove_model::world::World;
use cove_reach::question::{source_of, target_of};
use cove_reach::sagemaker::{check_job, s3_policy_problems, Check, JobNetwork, S3Location};
use cove_reach::{Protocol, Query};
use std::path::Path;

pub fn load_world(data_dir: &Path) -> anyhow::Result<World> {
    match crate::config::StoreLocation::of_data_dir(data_dir) {
        crate::config::StoreLocation::Sqlite(db) => {
            if !db.exists() {
                anyhow::bail!(
                    "{} does not exist: is `cove serve --data-dir {}` the right server?",
                    db.display(),
                    data_dir.display()
                );
            }
            cove_store::Store::read_world(&db)
        }
        crate::config::StoreLocation::Postgres(url) => cove_store::Store::read_postgres(&url),
    }
}

/// The bucket policies of the data directory's S3 (in the shared
/// PostgreSQL when its store is there), by bucket; none when it has no S3 yet.
fn bucket_policies(data_dir: &Path) -> std::collections::BTreeMap<String, String> {
    use cove_s3::storage::{read_bucket_policies, Metadata};
    let s3_dir = crate::config::s3_dir(data_dir);
    let store = crate::config::StoreLocation::of_data_dir(data_dir);
    let read = match store.shared_url() {
        Some(url) => read_bucket_policies(Metadata::Postgres(url)),
        None => read_bucket_policies(Metadata::Sqlite(&s3_dir)),
    };
    read.unwrap_or_default()
}

pub struct ReachArgs<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub protocol: &'a str,
    pub port: Option<u16>,
    pub source_port: Option<u16>,
    pub json: bool,
    /// For a subnet source: the planned ENI's groups.
    pub security_groups: &'a [String],
    /// For an `s3://` destination: who asks, and for what.
    pub principal: &'a str,
    pub account: &'a str,
    pub action: &'a str,
}

/// Prints the answer; the exit code is 0 when reachable (and, for an S3
/// object, allowed by the policies), 1 when not.
pub fn reach(data_dir: &Path, args: &ReachArgs) -> anyhow::Result<i32> {
    let mut world = load_world(data_dir)?;
    let protocol = Protocol::parse(args.protocol)
        .ok_or_else(|| anyhow::anyhow!("{}: the protocol is tcp, udp or icmp", args.protocol))?;
    let source =
        source_of(&mut world, args.from, args.security_groups).map_err(anyhow::Error::msg)?;
    let target = target_of(&world, &source, args.to).map_err(anyhow::Error::msg)?;
    let s3_object = args
        .to
        .starts_with("s3://")
        .then(|| S3Location::parse(args.to))
        .flatten();
    let query = Query {
        source,
        target,
        protocol,
        port: args.port,
        source_port: args.source_port,
    };
    let query = Query {
        port: query.port.or(s3_object.as_ref().map(|_| 443)),
        ..query
    };
    let analysis = cove_reach::analyze(&world, &query)?;
    // For an S3 object, the network path is half the answer: the endpoint's
    // and the bucket's policies decide the rest.
    let policy = match (&s3_object, analysis.found) {
        (Some(loc), true) => {
            let policies = bucket_policies(data_dir);
            s3_policy_problems(
                &world,
                &analysis,
                args.principal,
                args.account,
                args.action,
                std::slice::from_ref(loc),
                &|b| policies.get(b).cloned(),
            )
        }
        _ => vec![],
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"analysis": analysis, "policy_problems": policy})
            )?
        );
    } else {
        print!("{}", cove_reach::render_text(args.from, args.to, &analysis));
        if let (Some(loc), true) = (&s3_object, analysis.found) {
            if policy.is_empty() {
                println!(
                    "policies: {} on {} is allowed for {}",
                    args.action,
                    loc.uri(),
                    args.principal
                );
            }
            for p in &policy {
                println!("policies: {p}");
            }
        }
    }
    Ok(if analysis.found && policy.is_empty() {
        0
    } else {
        1
    })
}

fn print_checks(checks: &[Check]) {
    for c in checks {
        let mark = match (c.ok, c.required) {
            (true, _) => "ok  ",
            (false, true) => "FAIL",
            (false, false) => "no  ",
        };
        let subnet = if c.subnet.is_empty() {
            String::new()
        } else {
            format!(" [{}]", c.subnet)
        };
        println!("{mark} {}{subnet}: {}", c.name, c.detail);
    }
}

pub struct JobArgs<'a> {
    pub request: Option<&'a Path>,
    pub job: Option<&'a str>,
    /// A model (CreateModel): what its endpoint or transform instances need.
    pub model: Option<&'a str>,
    pub processing: bool,
    pub region: &'a str,
    pub account: &'a str,
    pub json: bool,
}

/// Checks a job's network before it runs (from its request file) or for an
/// existing job; exits 1 when a check the job needs fails.
pub fn reach_job(data_dir: &Path, args: &JobArgs) -> anyhow::Result<i32> {
    let world = load_world(data_dir)?;
    let network = match args.model {
        Some(name) => {
            let key = cove_model::jobs::SageMakerDefinition::key_of(
                args.region,
                args.account,
                "model",
                name,
            );
            let model = world
                .sagemaker_definitions
                .get(&key)
                .ok_or_else(|| anyhow::anyhow!("no model named {name}"))?;
            // cove-reach reads a request's JSON (it also checks request files).
            let request = serde_json::to_value(&model.request)?;
            JobNetwork::from_model(&request, &model.region, args.account)
        }
        None => job_network(&world, args)?,
    };
    let Some(network) = network else {
        println!("no VpcConfig: it runs in Cove's managed network, with internet and S3 access");
        return Ok(0);
    };
    let policies = bucket_policies(data_dir);
    let checks = check_job(&world, &network, &|bucket| policies.get(bucket).cloned());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        print_checks(&checks);
    }
    Ok(if checks.iter().any(|c| c.required && !c.ok) {
        1
    } else {
        0
    })
}

/// The network needs of the job in a request file or of an existing job.
fn job_network(world: &World, args: &JobArgs) -> anyhow::Result<Option<JobNetwork>> {
    let (request, processing, region, account) = match (args.request, args.job) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)?;
            (
                v,
                args.processing,
                args.region.to_string(),
                args.account.to_string(),
            )
        }
        (None, Some(name)) => {
            let kind = if args.processing {
                cove_model::jobs::JobKind::Processing
            } else {
                cove_model::jobs::JobKind::Training
            };
            let job = world
                .sagemaker_jobs
                .get(&kind.key(args.region, args.account, name))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no {} job named {name}",
                        if args.processing {
                            "processing"
                        } else {
                            "training"
                        }
                    )
                })?;
            (
                serde_json::to_value(&job.request)?,
                args.processing,
                job.region.clone(),
                job.account_id.clone(),
            )
        }
        (None, None) => anyhow::bail!("give --request FILE, --job NAME or --model NAME"),
    };
    Ok(JobNetwork::from_request(
        processing, &request, &region, &account,
    ))
}
