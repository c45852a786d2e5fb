//! SageMaker-aware checks: given a training or processing job's request,
//! say before it runs whether its hosts, placed in its subnets with its
//! security groups, can download their S3 data, upload their artifacts,
//! reach each other (distributed jobs), reach the mount targets of their
//! EFS channels on NFS's port, and reach the internet, and why not.
//! Besides the network path, the gateway endpoint's policy and the bucket
//! policy are evaluated for the job role's session, as S3 will.

use crate::walk::*;
use crate::Protocol;
use cove_model::policy::{Decision, Kind as PolicyKind, Policy, RequestContext};
use cove_model::region;
use cove_model::vpc::{EniStatus, InterfaceType, NetworkInterface};
use cove_model::world::World;
use serde::Serialize;
use serde_json::Value;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct S3Location {
    pub bucket: String,
    pub key: String,
}

impl S3Location {
    pub fn parse(uri: &str) -> Option<S3Location> {
        let rest = uri.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        (!bucket.is_empty()).then(|| S3Location {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// What a job needs from the network, read from its Create request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobNetwork {
    pub region: String,
    pub account: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub instance_count: usize,
    pub reads: Vec<S3Location>,
    pub writes: Vec<S3Location>,
    pub role_arn: Option<String>,
    pub network_isolation: bool,
    /// Whether the hosts talk to each other (a distributed job; endpoint
    /// instances of a model do not).
    pub peers_talk: bool,
    /// The EFS file systems of its `FileSystemDataSource` channels.
    pub file_systems: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn locations<'v>(uris: impl Iterator<Item = &'v Value>) -> Vec<S3Location> {
    uris.filter_map(|u| u.as_str().and_then(S3Location::parse))
        .collect()
}

impl JobNetwork {
    /// From a CreateTrainingJob or CreateProcessingJob request (`processing`
    /// selects the latter's shape); `None` when the job has no `VpcConfig`.
    pub fn from_request(
        processing: bool,
        request: &Value,
        region: &str,
        account: &str,
    ) -> Option<JobNetwork> {
        let mut file_systems = Vec::new();
        let (vpc, isolation, count, reads, writes) = if processing {
            let net = &request["NetworkConfig"];
            let inputs = request["ProcessingInputs"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let outputs = request["ProcessingOutputConfig"]["Outputs"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (
                net.get("VpcConfig")?,
                net["EnableNetworkIsolation"].as_bool().unwrap_or(false),
                request["ProcessingResources"]["ClusterConfig"]["InstanceCount"].as_u64(),
                locations(inputs.iter().map(|i| &i["S3Input"]["S3Uri"])),
                locations(outputs.iter().map(|o| &o["S3Output"]["S3Uri"])),
            )
        } else {
            let channels = request["InputDataConfig"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut reads = locations(
                channels
                    .iter()
                    .map(|c| &c["DataSource"]["S3DataSource"]["S3Uri"]),
            );
            // Script mode's source archive comes through the same ENI.
            if let Some(dir) = request["HyperParameters"]["sagemaker_submit_directory"].as_str() {
                reads.extend(S3Location::parse(dir.trim_matches('"')));
            }
            file_systems = channels
                .iter()
                .filter_map(|c| c["DataSource"]["FileSystemDataSource"]["FileSystemId"].as_str())
                .map(str::to_string)
                .collect();
            let checkpoint = locations(std::iter::once(&request["CheckpointConfig"]["S3Uri"]));
            reads.extend(checkpoint.clone());
            let mut writes = locations(std::iter::once(
                &request["OutputDataConfig"]["S3OutputPath"],
            ));
            writes.extend(checkpoint);
            (
                request.get("VpcConfig")?,
                request["EnableNetworkIsolation"].as_bool().unwrap_or(false),
                request["ResourceConfig"]["InstanceCount"].as_u64(),
                reads,
                writes,
            )
        };
        Some(JobNetwork {
            region: region.to_string(),
            account: account.to_string(),
            subnets: strings(&vpc["Subnets"]),
            security_groups: strings(&vpc["SecurityGroupIds"]),
            instance_count: usize::try_from(count.unwrap_or(1).max(1)).unwrap_or(usize::MAX),
            reads,
            writes,
            role_arn: request["RoleArn"].as_str().map(str::to_string),
            network_isolation: isolation,
            peers_talk: true,
            file_systems,
        })
    }

    /// From a CreateModel request: what an endpoint instance (or a batch
    /// transform instance) of the model needs, its model data and, in script
    /// mode, its source archive; `None` without a `VpcConfig`.
    pub fn from_model(request: &Value, region: &str, account: &str) -> Option<JobNetwork> {
        let vpc = request.get("VpcConfig")?;
        let containers: Vec<&Value> = request
            .get("PrimaryContainer")
            .into_iter()
            .chain(request["Containers"].as_array().into_iter().flatten())
            .collect();
        let mut reads = Vec::new();
        for c in containers {
            reads.extend(locations(
                [
                    &c["ModelDataUrl"],
                    &c["ModelDataSource"]["S3DataSource"]["S3Uri"],
                ]
                .into_iter(),
            ));
            if let Some(dir) = c["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"].as_str() {
                reads.extend(S3Location::parse(dir));
            }
        }
        let subnets = strings(&vpc["Subnets"]);
        Some(JobNetwork {
            region: region.to_string(),
            account: account.to_string(),
            instance_count: 1,
            subnets,
            security_groups: strings(&vpc["SecurityGroupIds"]),
            reads,
            writes: vec![],
            role_arn: request["ExecutionRoleArn"].as_str().map(str::to_string),
            network_isolation: request["EnableNetworkIsolation"].as_bool().unwrap_or(false),
            peers_talk: false,
            file_systems: vec![],
        })
    }

    /// The principal S3 sees: the role's session as SageMaker assumes it.
    fn principal(&self) -> String {
        let role = self
            .role_arn
            .as_deref()
            .and_then(|r| r.rsplit('/').next())
            .unwrap_or("SageMakerRole");
        format!(
            "arn:aws:sts::{}:assumed-role/{role}/SageMaker",
            self.account
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `S3 data download`, `Artifact upload`, `Traffic between hosts`, `Internet access`.
    pub name: String,
    /// The subnet (of the first host placed there) the check is about.
    pub subnet: String,
    /// Whether the job fails without it (internet access is informational).
    pub required: bool,
    pub ok: bool,
    /// Why not, or how (the path's gateway or endpoint).
    pub detail: String,
    pub analysis: Option<Analysis>,
}

/// A copy of `world` with one more ENI, as one would be made in `subnet_id`
/// with `groups` (on the subnet's next free address): the source for
/// questions about something not created yet (a job's host, "a new ENI in
/// this subnet").
pub fn with_planned_eni(
    world: &World,
    subnet_id: &str,
    groups: &[String],
    id: &str,
) -> Result<World, String> {
    let mut w = world.clone();
    let subnet = w
        .subnets
        .get(subnet_id)
        .cloned()
        .ok_or_else(|| format!("The subnet '{subnet_id}' does not exist"))?;
    for g in groups {
        match w.security_groups.get(g) {
            Some(sg) if sg.vpc_id == subnet.vpc_id => {}
            Some(_) => {
                return Err(format!(
                    "The security group '{g}' is not in the VPC of {subnet_id}"
                ))
            }
            None => return Err(format!("The security group '{g}' does not exist")),
        }
    }
    let cidr = subnet.cidr;
    let used: Vec<Ipv4Addr> = w
        .network_interfaces
        .values()
        .map(|e| e.private_ip)
        .collect();
    let ip = (4..cidr.size().min(1 << 16) as u32)
        .map(|n| cidr.nth(n))
        .find(|a| !cidr.is_reserved(*a) && !used.contains(a))
        .ok_or_else(|| format!("{subnet_id} has no free address"))?;
    w.network_interfaces.insert(
        id.to_string(),
        NetworkInterface {
            id: id.to_string(),
            region: subnet.region.clone(),
            vpc_id: subnet.vpc_id.clone(),
            subnet_id: subnet.id.clone(),
            availability_zone: subnet.availability_zone.clone(),
            private_ip: ip,
            mac_address: String::new(),
            description: format!("{id} (planned)"),
            group_ids: groups.to_vec(),
            status: EniStatus::InUse,
            interface_type: InterfaceType::Interface,
            requester_managed: true,
            requester_id: None,
            source_dest_check: true,
            attachment: None,
            host: None,
        }
        .into(),
    );
    Ok(w)
}

/// The job's hosts as ENIs it would get: round-robin over its subnets, in a
/// copy of the world; at least one per subnet, since SageMaker may place a
/// host in any of them.
fn place_hosts(world: &World, job: &JobNetwork) -> Result<(World, Vec<String>), String> {
    if job.subnets.is_empty() {
        return Err("the VpcConfig names no subnets".into());
    }
    let mut w = world.clone();
    let mut ids = Vec::new();
    for i in 0..job.instance_count.max(job.subnets.len()) {
        let id = format!("eni-algo-{}", i + 1);
        w = with_planned_eni(
            &w,
            &job.subnets[i % job.subnets.len()],
            &job.security_groups,
            &id,
        )?;
        ids.push(id);
    }
    Ok((w, ids))
}

/// What the gateway endpoint's policy (which must allow) and the bucket
/// policy (which must not deny) say to `principal` doing `action` on each
/// location, for requests that travelled along `a` (through an endpoint or not).
pub fn s3_policy_problems(
    w: &World,
    a: &Analysis,
    principal: &str,
    account: &str,
    action: &str,
    locations: &[S3Location],
    bucket_policy: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let endpoint = a
        .forward
        .iter()
        .find(|h| h.component.kind == Kind::VpcEndpoint)
        .and_then(|h| w.vpc_endpoints.get(&h.component.id));
    let mut problems = Vec::new();
    for loc in locations {
        let resource = format!("arn:aws:s3:::{}/{}", loc.bucket, loc.key);
        let mut cx = RequestContext::new(action, &resource, principal, account);
        cx.set("aws:SecureTransport", "true");
        if let Some(e) = endpoint {
            cx.set("aws:SourceVpce", e.id.clone());
            cx.set("aws:SourceVpc", e.vpc_id.clone());
            if let Some(doc) = &e.policy_document {
                let allowed = Policy::parse(doc, PolicyKind::Endpoint)
                    .map(|p| p.evaluate(&cx) == Decision::Allow)
                    .unwrap_or(false);
                if !allowed {
                    problems.push(format!(
                        "the policy of endpoint {} does not allow {action} on {}",
                        e.id,
                        loc.uri()
                    ));
                }
            }
        }
        if let Some(doc) = bucket_policy(&loc.bucket) {
            if Policy::parse(&doc, PolicyKind::Bucket)
                .is_ok_and(|p| p.evaluate(&cx) == Decision::Deny)
            {
                problems.push(format!(
                    "the policy of bucket {} denies {action} on {} to {principal}",
                    loc.bucket,
                    loc.uri(),
                ));
            }
        }
    }
    problems
}

fn way_out(a: &Analysis) -> String {
    a.forward
        .iter()
        .rev()
        .find(|h| {
            matches!(
                h.component.kind,
                Kind::VpcEndpoint | Kind::InternetGateway | Kind::NatGateway
            )
        })
        .map(|h| format!("through {} {}", h.component.kind.label(), h.component.id))
        .unwrap_or_else(|| "inside the VPC".into())
}

fn why_not(a: &Analysis) -> String {
    a.explanations
        .iter()
        .map(|e| format!("{}: {}", e.code, e.fix))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every check for a job, per subnet its hosts would use.
pub fn check_job(
    world: &World,
    job: &JobNetwork,
    bucket_policy: &dyn Fn(&str) -> Option<String>,
) -> Vec<Check> {
    let (w, hosts) = match place_hosts(world, job) {
        Ok(x) => x,
        Err(e) => {
            return vec![Check {
                name: "VpcConfig".into(),
                subnet: String::new(),
                required: true,
                ok: false,
                detail: e,
                analysis: None,
            }]
        }
    };
    let mut checks = Vec::new();
    let mut seen_subnets = Vec::new();
    for host in &hosts {
        let subnet = w.network_interfaces[host].subnet_id.clone();
        if seen_subnets.contains(&subnet) {
            continue;
        }
        seen_subnets.push(subnet.clone());
        let to = |target: Target| Query {
            source: Source::Eni(host.clone()),
            target,
            protocol: Protocol::Tcp,
            port: Some(443),
            source_port: None,
        };
        let s3 = analyze(&w, &to(Target::Address(region::S3_ADDRESS))).ok();
        for (name, action, locations) in [
            ("S3 data download", "s3:GetObject", &job.reads),
            ("Artifact upload", "s3:PutObject", &job.writes),
        ] {
            if locations.is_empty() {
                continue;
            }
            let Some(a) = s3.clone() else { continue };
            let (ok, detail) = if !a.found {
                (
                    false,
                    format!("S3 is unreachable from {subnet}: {}", why_not(&a)),
                )
            } else {
                let problems = s3_policy_problems(
                    &w,
                    &a,
                    &job.principal(),
                    &job.account,
                    action,
                    locations,
                    bucket_policy,
                );
                if problems.is_empty() {
                    (true, format!("S3 is reached {}", way_out(&a)))
                } else {
                    (
                        false,
                        format!("S3 is reached {}, but {}", way_out(&a), problems.join("; ")),
                    )
                }
            };
            checks.push(Check {
                name: name.into(),
                subnet: subnet.clone(),
                required: true,
                ok,
                detail,
                analysis: Some(a),
            });
        }
        for fs in &job.file_systems {
            checks.push(file_system_check(&w, host, &subnet, fs));
        }
        if let Ok(a) = analyze(&w, &to(Target::Address(INTERNET_HOST))) {
            let (ok, detail) = if job.network_isolation {
                (
                    false,
                    "the job runs with network isolation: its containers get no network".into(),
                )
            } else if a.found {
                (true, format!("the internet is reached {}", way_out(&a)))
            } else {
                (false, format!("no internet access: {}", why_not(&a)))
            };
            checks.push(Check {
                name: "Internet access".into(),
                subnet: subnet.clone(),
                required: false,
                ok,
                detail,
                analysis: Some(a),
            });
        }
    }
    if job.peers_talk && job.instance_count > 1 {
        let (a, b) = (&hosts[0], &hosts[1]);
        let mut failure = None;
        for (from, to) in [(a, b), (b, a)] {
            let q = Query {
                source: Source::Eni(from.clone()),
                target: Target::Eni(to.clone()),
                protocol: Protocol::Tcp,
                port: None,
                source_port: None,
            };
            if let Ok(Err(bad)) = analyze_all_ports(&w, &q, (1, 65535)) {
                failure.get_or_insert(bad);
            }
        }
        let subnet = w.network_interfaces[a].subnet_id.clone();
        checks.push(Check {
            name: "Traffic between hosts".into(),
            subnet,
            required: true,
            ok: failure.is_none(),
            detail: match &failure {
                None => "algo-1 and algo-2 reach each other on every TCP port".into(),
                Some(f) => format!(
                    "TCP port {} between the hosts is blocked: {} (distributed jobs need a security group rule that admits all traffic from the group itself)",
                    f.packet.dst_port,
                    why_not(f)
                ),
            },
            analysis: failure,
        });
    }
    checks
}

/// Whether `host` reaches file system `fs`'s mount target in its zone on
/// NFS's port (TCP 2049), as its channel's mount will.
fn file_system_check(w: &World, host: &str, subnet: &str, fs: &str) -> Check {
    let eni = &w.network_interfaces[host];
    let check = |ok: bool, detail: String, analysis: Option<Analysis>| Check {
        name: "File system access".into(),
        subnet: subnet.to_string(),
        required: true,
        ok,
        detail,
        analysis,
    };
    if !w.file_systems.contains_key(fs) {
        return check(false, format!("file system {fs} does not exist"), None);
    }
    let Some(target) = w
        .mount_targets
        .values()
        .find(|m| m.file_system_id == fs && m.availability_zone == eni.availability_zone)
    else {
        return check(
            false,
            format!(
                "{fs} has no mount target in {}, the zone of {subnet}",
                eni.availability_zone
            ),
            None,
        );
    };
    let q = Query {
        source: Source::Eni(host.to_string()),
        target: Target::Eni(target.network_interface_id.clone()),
        protocol: Protocol::Tcp,
        port: Some(2049),
        source_port: None,
    };
    match analyze(w, &q) {
        Ok(a) if a.found => check(
            true,
            format!("{} ({}) answers NFS on 2049", target.id, target.ip_address),
            Some(a),
        ),
        Ok(a) => check(
            false,
            format!(
                "{} ({}) is unreachable on TCP 2049: {}",
                target.id,
                target.ip_address,
                why_not(&a)
            ),
            Some(a),
        ),
        Err(e) => check(false, e.to_string(), None),
    }
}

/// The one-line warnings for checks the job cannot do without.
pub fn warnings(checks: &[Check]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| c.required && !c.ok)
        .map(|c| format!("{} will fail ({}): {}", c.name, c.subnet, c.detail))
        .collect()
}
