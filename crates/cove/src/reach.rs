//! `cove reach` and `cove reach-job`: reachability answers on the terminal,
//! read from the data directory of a `cove serve` (its store, opened
//! read-only beside the running server) with `cove-reach`.

use cove_model::vpc::EndpointType;
use cove_model::world::World;
use cove_reach::sagemaker::{
    check_job, s3_policy_problems, with_planned_eni, Check, JobNetwork, S3Location,
};
use cove_reach::{Protocol, Query, Source, Target};
use std::net::Ipv4Addr;
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

/// The id `cove reach` gives "a new ENI in this subnet".
const PLANNED: &str = "eni-planned";

/// The source; a subnet becomes a planned ENI in it (with `groups`, else the
/// VPC's default group), added to the world the question is asked of.
fn source_of(world: &mut World, from: &str, groups: &[String]) -> anyhow::Result<Source> {
    if from.starts_with("subnet-") {
        let vpc = world
            .subnets
            .get(from)
            .map(|s| s.vpc_id.clone())
            .ok_or_else(|| anyhow::anyhow!("The subnet '{from}' does not exist"))?;
        let groups: Vec<String> = if groups.is_empty() {
            world
                .security_groups
                .values()
                .filter(|g| g.vpc_id == vpc && g.name == "default")
                .map(|g| g.id.clone())
                .collect()
        } else {
            groups.to_vec()
        };
        *world = with_planned_eni(world, from, &groups, PLANNED).map_err(anyhow::Error::msg)?;
        return Ok(Source::Eni(PLANNED.into()));
    }
    Ok(match from {
        "internet" => Source::Internet { igw: None, ip: None },
        f if f.starts_with("igw-") => Source::Internet {
            igw: Some(f.to_string()),
            ip: None,
        },
        f if f.starts_with("eni-") => Source::Eni(f.to_string()),
        other => anyhow::bail!(
            "{other}: the source must be an ENI id (eni-…), a subnet id (subnet-…), an internet gateway id (igw-…) or `internet`"
        ),
    })
}

/// A destination: an id, an address, `internet`, or a service name
/// (`s3`, `sts`, `logs`, `api.sagemaker`, `runtime.sagemaker`, `ec2`), which
/// is reached through its interface endpoint when the source's VPC has one
/// with private DNS, as the VPC resolver would answer, else at its public address.
fn target_of(world: &World, source: &Source, to: &str) -> anyhow::Result<Target> {
    if let Ok(ip) = to.parse::<Ipv4Addr>() {
        return Ok(Target::Address(ip));
    }
    if to.starts_with("s3://") {
        return Ok(Target::Address(cove_model::region::S3_ADDRESS));
    }
    if to.starts_with("eni-") {
        return Ok(Target::Eni(to.into()));
    }
    if to.starts_with("vpce-") {
        return Ok(Target::VpcEndpoint(to.into()));
    }
    if to.starts_with("igw-") {
        return Ok(Target::InternetGateway {
            igw: to.into(),
            ip: None,
        });
    }
    let Source::Eni(eni) = source else {
        anyhow::bail!("{to}: from the internet, give a destination ENI or its public address");
    };
    let e = world
        .network_interfaces
        .get(eni)
        .ok_or_else(|| anyhow::anyhow!("The network interface '{eni}' does not exist"))?;
    let region = world
        .vpcs
        .get(&e.vpc_id)
        .map(|v| v.region.clone())
        .unwrap_or_default();
    if to == "internet" {
        return Ok(match world.attached_internet_gateway(&e.vpc_id) {
            Some(g) => Target::InternetGateway {
                igw: g.id.clone(),
                ip: None,
            },
            None => Target::Address(cove_reach::INTERNET_HOST),
        });
    }
    let host = cove_model::services::service_hosts(&region)
        .into_iter()
        .find(|h| h.api == to)
        .ok_or_else(|| anyhow::anyhow!("{to}: not an id, an address, `internet` or a service (s3, sts, logs, ec2, api.sagemaker, runtime.sagemaker)"))?;
    let private = world.vpc_endpoints.values().find(|v| {
        v.vpc_id == e.vpc_id
            && v.endpoint_type == EndpointType::Interface
            && v.private_dns_enabled
            && cove_model::services::service_for(&region, &v.service_name, EndpointType::Interface)
                .is_some_and(|s| s.api == Some(host.api) && s.private_dns.is_some())
    });
    Ok(match private {
        Some(v) => Target::VpcEndpoint(v.id.clone()),
        None => Target::Address(host.address),
    })
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
    let source = source_of(&mut world, args.from, args.security_groups)?;
    let target = target_of(&world, &source, args.to)?;
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
