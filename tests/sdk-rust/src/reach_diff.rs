//! The differential test of reachability: random but valid topologies
//! (subnets, security groups that reference each other, network ACLs with
//! allow and deny entries, route tables, an internet gateway, a NAT gateway,
//! Elastic IPs, an S3 gateway endpoint, an interface endpoint) are made real
//! through the EC2 API of a running `cove serve` with its data plane on;
//! then real packets (TCP, UDP, ICMP echo) are sent between ENIs, to S3 and
//! the internet, and from the internet, and each outcome is compared with
//! `cove-reach`'s answer for the same packet over the stored model. Any
//! difference is a bug in the model or in the data plane.
//!
//! Everything derives from one seed: topology `i` is generated from
//! `topology_seed(seed, i)`, so a mismatch is reproduced with `--seed S
//! --only i`.
//!
//! With [`Options::hosts`] the same runs over three simulated hosts
//! ([`crate::hosts`]): the ENIs are spread round-robin over the control
//! plane's host and two agents (`cove:host` tags), and every packet that
//! crosses hosts goes over the overlay. The model knows nothing of hosts,
//! so any difference is a bug of the overlay.

use crate::Cove;
use aws_sdk_ec2::types::{
    AddPrefixListEntry, IcmpTypeCode, IpPermission, IpRange, PortRange, PrefixListId, RuleAction,
    UserIdGroupPair, VpcEndpointType,
};
use cove_reach::{Protocol, Query, Source, Target};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const S3: Ipv4Addr = cove_model::region::S3_ADDRESS;
pub const INTERNET: Ipv4Addr = cove_model::region::INTERNET_HOST;

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub topologies: usize,
    /// Probes per topology.
    pub probes: usize,
    /// How long a probe waits for an answer before calling it blocked.
    pub timeout: Duration,
    /// Run only topology `i` (to reproduce a mismatch).
    pub only: Option<usize>,
    /// Start at topology `first` (to replay a batch that shared one server).
    pub first: usize,
    /// Topologies per server: a fresh `cove serve` every so many, so no run
    /// accumulates thousands of namespaces.
    pub per_server: usize,
    /// A PostgreSQL server (its role may create databases): spread the ENIs
    /// over three simulated hosts that share a store there.
    pub hosts: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Mismatch {
    pub topology: usize,
    pub seed: u64,
    pub probe: String,
    pub model: bool,
    pub kernel: bool,
    pub model_says: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub topologies: usize,
    pub probes: usize,
    /// Per probe kind: (probes, reachable by the kernel, mismatches).
    pub kinds: BTreeMap<&'static str, (usize, usize, usize)>,
    pub mismatches: Vec<Mismatch>,
    pub realise_seconds: f64,
    pub probe_seconds: f64,
    /// How long the model took per probe, and how long each TCP probe that
    /// got through took in the kernel (connect to accept or refusal), in µs.
    pub model_micros: Vec<f64>,
    pub tcp_micros: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<22} {:>8} {:>10} {:>11}\n",
            "probe kind", "probes", "reachable", "mismatches"
        );
        for (k, (n, r, m)) in &self.kinds {
            out += &format!("{k:<22} {n:>8} {r:>10} {m:>11}\n");
        }
        out += &format!(
            "{:<22} {:>8} {:>10} {:>11}\n",
            "total",
            self.probes,
            self.kinds.values().map(|x| x.1).sum::<usize>(),
            self.mismatches.len()
        );
        out += &format!(
            "{} topologies; realising them took {:.1} s, probing {:.1} s\n",
            self.topologies, self.realise_seconds, self.probe_seconds
        );
        let (model, kernel) = (median(&self.model_micros), median(&self.tcp_micros));
        out += &format!(
            "one answer: the model {model:.1} µs (median), a TCP probe that gets through {kernel:.1} µs ({:.0}x); a blocked probe waits for its timeout\n",
            kernel / model.max(0.001)
        );
        for m in &self.mismatches {
            out += &format!(
                "MISMATCH topology {} (cove-reach-diff --seed {} --only {}): {} — model {}, kernel {} ({})\n",
                m.topology,
                m.seed,
                m.topology,
                m.probe,
                verdict(m.model),
                verdict(m.kernel),
                m.model_says
            );
        }
        out
    }
}

fn verdict(b: bool) -> &'static str {
    if b {
        "reachable"
    } else {
        "blocked"
    }
}

pub fn topology_seed(seed: u64, i: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (i as u64)
            .wrapping_add(1)
            .wrapping_mul(0xD1B5_4A32_D192_ED03)
}

// ---------------------------------------------------------------- generation

#[derive(Debug, Clone)]
enum Peer {
    Cidr(String),
    Group(usize),
    S3PrefixList,
    /// The topology's customer-managed prefix list.
    CustomerList,
}

#[derive(Debug, Clone)]
struct Rule {
    protocol: &'static str,
    ports: Option<(i32, i32)>,
    icmp: Option<(i32, i32)>,
    peer: Peer,
}

#[derive(Debug, Clone)]
struct GroupSpec {
    ingress: Vec<Rule>,
    /// `None` keeps the default allow-all egress rule.
    egress: Option<Vec<Rule>>,
}

#[derive(Debug, Clone)]
struct AclEntry {
    number: i32,
    egress: bool,
    allow: bool,
    protocol: &'static str,
    cidr: String,
    ports: Option<(i32, i32)>,
    /// ICMP type and code (-1: any) of an ICMP entry.
    icmp: Option<(i32, i32)>,
}

/// Where an extra static route of the main table goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Igw,
    Nat,
}

#[derive(Debug, Clone)]
struct EniSpec {
    subnet: usize,
    groups: Vec<usize>,
    eip: bool,
}

/// A VPC (10.2.0.0/16, one subnet) peered with the topology's VPC: its
/// group's ingress rules may name the first VPC's groups; each side's main
/// table may or may not route to the other.
#[derive(Debug, Clone)]
struct PeerSpec {
    ingress: Vec<Rule>,
    enis: usize,
    route_there: bool,
    route_back: bool,
    /// The peer routes the first VPC's secondary block back too.
    route_back_secondary: bool,
}

#[derive(Debug, Clone)]
struct Spec {
    subnets: usize,
    groups: Vec<GroupSpec>,
    /// Per subnet: `None` keeps the default ACL (allow all).
    acls: Vec<Option<Vec<AclEntry>>>,
    /// An internet gateway, with subnet 0 public (its own table, 0/0 to it).
    igw: bool,
    /// A NAT gateway in subnet 0; the main table sends 0/0 to it.
    nat: bool,
    /// The S3 gateway endpoint on the main table, the public table, both or neither.
    s3_on_main: bool,
    s3_on_public: bool,
    enis: Vec<EniSpec>,
    /// More specific static routes on the main table: part of the internet
    /// or of the services' range (192.0.2.16/29 beats the S3 prefix list's /28).
    extra_routes: Vec<(&'static str, Via)>,
    /// The entries of a customer-managed prefix list that rules may name.
    customer_list: Vec<String>,
    /// The VPC has a secondary block, 10.1.0.0/16, which holds the last subnet.
    secondary: bool,
    /// A second VPC peered with the first.
    peer: Option<PeerSpec>,
    /// The NAT gateway is deleted once everything is made: its route becomes a blackhole.
    delete_nat: bool,
    /// An interface endpoint (STS) in this subnet with this group.
    interface_endpoint: Option<(usize, usize)>,
    udp_ports: Vec<u16>,
}

const PORT_RANGES: &[(i32, i32)] = &[
    (22, 22),
    (80, 80),
    (443, 443),
    (5432, 5432),
    (0, 1023),
    (1024, 65535),
    (32768, 60999),
    (0, 65535),
    (400, 9000),
    (53, 53),
];

fn cidr_choices(subnets: usize) -> Vec<String> {
    let mut c = vec![
        "0.0.0.0/0".to_string(),
        "10.0.0.0/16".into(),
        "203.0.113.0/24".into(),
        "192.0.2.0/24".into(),
        "10.0.1.0/25".into(),
        "10.1.0.0/16".into(),
    ];
    c.extend((1..=subnets).map(|i| format!("10.0.{i}.0/24")));
    c
}

fn random_rule(rng: &mut StdRng, groups: usize, subnets: usize, allow_pl: bool) -> Rule {
    let protocol = *["tcp", "tcp", "udp", "icmp", "-1"].choose(rng).unwrap();
    let peer = match rng.gen_range(0..10) {
        0..=4 => Peer::Cidr(cidr_choices(subnets).choose(rng).unwrap().clone()),
        5..=7 => Peer::Group(rng.gen_range(0..groups)),
        8 if allow_pl => Peer::S3PrefixList,
        _ => Peer::CustomerList,
    };
    let (ports, icmp) = match protocol {
        "tcp" | "udp" => (Some(*PORT_RANGES.choose(rng).unwrap()), None),
        "icmp" => (
            None,
            Some(*[(-1, -1), (8, -1), (0, -1), (8, 0)].choose(rng).unwrap()),
        ),
        _ => (None, None),
    };
    Rule {
        protocol,
        ports,
        icmp,
        peer,
    }
}

fn random_acl(rng: &mut StdRng, subnets: usize) -> Vec<AclEntry> {
    let mut out = Vec::new();
    for egress in [false, true] {
        let mut numbers: Vec<i32> = (1..=20).map(|n| n * 10).collect();
        numbers.shuffle(rng);
        for &number in numbers.iter().take(rng.gen_range(1..=5)) {
            let protocol = *["6", "6", "17", "1", "-1", "-1"].choose(rng).unwrap();
            out.push(AclEntry {
                number,
                egress,
                allow: rng.gen_bool(0.75),
                protocol,
                cidr: cidr_choices(subnets).choose(rng).unwrap().clone(),
                ports: matches!(protocol, "6" | "17").then(|| *PORT_RANGES.choose(rng).unwrap()),
                icmp: (protocol == "1")
                    .then(|| *[(-1, -1), (8, -1), (0, -1), (8, 0)].choose(rng).unwrap()),
            });
        }
    }
    out
}

fn generate(seed: u64) -> Spec {
    let mut rng = StdRng::seed_from_u64(seed);
    let subnets = rng.gen_range(2..=3);
    let mut customer_list = cidr_choices(subnets);
    customer_list.shuffle(&mut rng);
    customer_list.truncate(rng.gen_range(1..=3));
    let ngroups = rng.gen_range(2..=4);
    let groups = (0..ngroups)
        .map(|_| GroupSpec {
            ingress: (0..rng.gen_range(0..=4))
                .map(|_| random_rule(&mut rng, ngroups, subnets, false))
                .collect(),
            egress: rng.gen_bool(0.4).then(|| {
                (0..rng.gen_range(0..=3))
                    .map(|_| random_rule(&mut rng, ngroups, subnets, true))
                    .collect()
            }),
        })
        .collect();
    let acls = (0..subnets)
        .map(|_| rng.gen_bool(0.5).then(|| random_acl(&mut rng, subnets)))
        .collect();
    let igw = rng.gen_bool(0.6);
    let nat = igw && rng.gen_bool(0.6);
    let placement: Vec<usize> = (0..subnets)
        .flat_map(|s| std::iter::repeat_n(s, rng.gen_range(1..=3)))
        .collect();
    let enis = placement
        .into_iter()
        .map(|subnet| {
            let mut gs: Vec<usize> = (0..ngroups).collect();
            gs.shuffle(&mut rng);
            gs.truncate(rng.gen_range(1..=2));
            EniSpec {
                subnet,
                groups: gs,
                eip: igw && rng.gen_bool(0.35),
            }
        })
        .collect();
    Spec {
        subnets,
        groups,
        acls,
        igw,
        nat,
        s3_on_main: rng.gen_bool(0.5),
        s3_on_public: igw && rng.gen_bool(0.3),
        enis,
        extra_routes: if igw {
            let mut r: Vec<(&'static str, Via)> = Vec::new();
            for cidr in ["203.0.113.0/25", "192.0.2.0/24", "192.0.2.16/29"] {
                if rng.gen_bool(0.15) {
                    r.push((
                        cidr,
                        if nat && rng.gen_bool(0.5) {
                            Via::Nat
                        } else {
                            Via::Igw
                        },
                    ));
                }
            }
            r
        } else {
            vec![]
        },
        delete_nat: nat && rng.gen_bool(0.15),
        interface_endpoint: rng
            .gen_bool(0.3)
            .then(|| (rng.gen_range(0..subnets), rng.gen_range(0..ngroups))),
        udp_ports: vec![53, rng.gen_range(1024..30000)],
        customer_list,
        secondary: rng.gen_bool(0.4),
        peer: rng.gen_bool(0.5).then(|| PeerSpec {
            // Mostly one broad rule (all traffic from the first VPC, by CIDR
            // or by one of its groups), so that probes across the peering
            // get through often enough to test the path, plus random ones.
            ingress: rng
                .gen_bool(0.7)
                .then(|| Rule {
                    protocol: "-1",
                    ports: None,
                    icmp: None,
                    peer: if rng.gen_bool(0.5) {
                        Peer::Cidr("10.0.0.0/8".into())
                    } else {
                        Peer::Group(rng.gen_range(0..ngroups))
                    },
                })
                .into_iter()
                .chain(
                    (0..rng.gen_range(0..=2))
                        .map(|_| random_rule(&mut rng, ngroups, subnets, false)),
                )
                .collect(),
            enis: rng.gen_range(1..=2),
            route_there: rng.gen_bool(0.8),
            route_back: rng.gen_bool(0.8),
            route_back_secondary: rng.gen_bool(0.5),
        }),
    }
}

// ---------------------------------------------------------------- realisation

/// The ids of a realised topology.
struct Realised {
    /// User ENIs: (id, private ip, public ip).
    enis: Vec<(String, Ipv4Addr, Option<Ipv4Addr>)>,
    /// The host of each ENI placed off the control plane's host.
    placed: BTreeMap<String, String>,
    /// Interface endpoint ENIs (destinations only).
    endpoint_enis: Vec<(String, Ipv4Addr)>,
}

/// The prefix lists rules may name: the region's S3 list and the topology's own.
struct Lists {
    s3: String,
    customer: String,
}

fn permission(rule: &Rule, group_ids: &[String], lists: &Lists) -> IpPermission {
    let mut b = IpPermission::builder().ip_protocol(rule.protocol);
    if let Some((from, to)) = rule.ports.or(rule.icmp) {
        b = b.from_port(from).to_port(to);
    }
    match &rule.peer {
        Peer::Cidr(c) => b = b.ip_ranges(IpRange::builder().cidr_ip(c).build()),
        Peer::Group(g) => {
            b = b.user_id_group_pairs(UserIdGroupPair::builder().group_id(&group_ids[*g]).build())
        }
        Peer::S3PrefixList => {
            b = b.prefix_list_ids(PrefixListId::builder().prefix_list_id(&lists.s3).build())
        }
        Peer::CustomerList => {
            b = b.prefix_list_ids(
                PrefixListId::builder()
                    .prefix_list_id(&lists.customer)
                    .build(),
            )
        }
    }
    b.build()
}

type Res<T> = Result<T, String>;

fn err<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e:?}")
}

/// Which host each new ENI goes to: round-robin over `hosts` (the control
/// plane's first, which needs no tag); nowhere else when `hosts` is empty.
struct Placement {
    hosts: Vec<String>,
    next: AtomicUsize,
}

impl Placement {
    fn next(&self) -> Option<String> {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let host = self.hosts.get(k % self.hosts.len().max(1))?;
        (host != crate::hosts::CONTROL_PLANE).then(|| host.clone())
    }
}

/// A `CreateNetworkInterface` placed by `place`, and the host it names.
fn create_eni(
    ec2: &aws_sdk_ec2::Client,
    place: &Placement,
) -> (
    aws_sdk_ec2::operation::create_network_interface::builders::CreateNetworkInterfaceFluentBuilder,
    Option<String>,
) {
    let host = place.next();
    let mut req = ec2.create_network_interface();
    if let Some(h) = &host {
        req = req.tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::NetworkInterface)
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key(cove_model::hosts::HOST_TAG)
                        .value(h)
                        .build(),
                )
                .build(),
        );
    }
    (req, host)
}

async fn realise(ec2: &aws_sdk_ec2::Client, spec: &Spec, place: &Placement) -> Res<Realised> {
    let pl = cove_model::region::s3_prefix_list_id("us-east-1");
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .map_err(err("CreateVpc"))?;
    let vpc_id = vpc
        .vpc()
        .and_then(|v| v.vpc_id())
        .unwrap_or_default()
        .to_string();
    if spec.secondary {
        ec2.associate_vpc_cidr_block()
            .vpc_id(&vpc_id)
            .cidr_block("10.1.0.0/16")
            .send()
            .await
            .map_err(err("AssociateVpcCidrBlock"))?;
    }
    let mut subnets = Vec::new();
    for i in 1..=spec.subnets {
        let block = if spec.secondary && i == spec.subnets {
            1
        } else {
            0
        };
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(format!("10.{block}.{i}.0/24"))
            .send()
            .await
            .map_err(err("CreateSubnet"))?;
        subnets.push(
            s.subnet()
                .and_then(|s| s.subnet_id())
                .unwrap_or_default()
                .to_string(),
        );
    }
    let mut list = ec2
        .create_managed_prefix_list()
        .prefix_list_name(format!("diff-{vpc_id}"))
        .address_family("IPv4")
        .max_entries(5);
    for cidr in &spec.customer_list {
        list = list.entries(AddPrefixListEntry::builder().cidr(cidr).build());
    }
    let list = list.send().await.map_err(err("CreateManagedPrefixList"))?;
    let lists = Lists {
        s3: pl,
        customer: list
            .prefix_list()
            .and_then(|l| l.prefix_list_id())
            .unwrap_or_default()
            .to_string(),
    };
    let mut group_ids = Vec::new();
    for i in 0..spec.groups.len() {
        let g = ec2
            .create_security_group()
            .vpc_id(&vpc_id)
            .group_name(format!("g{i}"))
            .description("differential test")
            .send()
            .await
            .map_err(err("CreateSecurityGroup"))?;
        group_ids.push(g.group_id().unwrap_or_default().to_string());
    }
    for (g, spec_g) in group_ids.iter().zip(&spec.groups) {
        for rule in &spec_g.ingress {
            // Duplicates are refused (InvalidPermission.Duplicate): the generator may repeat a rule.
            let _ = ec2
                .authorize_security_group_ingress()
                .group_id(g)
                .ip_permissions(permission(rule, &group_ids, &lists))
                .send()
                .await;
        }
        if let Some(egress) = &spec_g.egress {
            ec2.revoke_security_group_egress()
                .group_id(g)
                .ip_permissions(permission(
                    &Rule {
                        protocol: "-1",
                        ports: None,
                        icmp: None,
                        peer: Peer::Cidr("0.0.0.0/0".into()),
                    },
                    &group_ids,
                    &lists,
                ))
                .send()
                .await
                .map_err(err("RevokeSecurityGroupEgress"))?;
            for rule in egress {
                let _ = ec2
                    .authorize_security_group_egress()
                    .group_id(g)
                    .ip_permissions(permission(rule, &group_ids, &lists))
                    .send()
                    .await;
            }
        }
    }
    for (i, acl) in spec.acls.iter().enumerate() {
        let Some(entries) = acl else { continue };
        let created = ec2
            .create_network_acl()
            .vpc_id(&vpc_id)
            .send()
            .await
            .map_err(err("CreateNetworkAcl"))?;
        let acl_id = created
            .network_acl()
            .and_then(|a| a.network_acl_id())
            .unwrap_or_default()
            .to_string();
        for e in entries {
            let mut b = ec2
                .create_network_acl_entry()
                .network_acl_id(&acl_id)
                .rule_number(e.number)
                .protocol(e.protocol)
                .rule_action(if e.allow {
                    RuleAction::Allow
                } else {
                    RuleAction::Deny
                })
                .egress(e.egress)
                .cidr_block(&e.cidr);
            if let Some((from, to)) = e.ports {
                b = b.port_range(PortRange::builder().from(from).to(to).build());
            }
            if let Some((t, c)) = e.icmp {
                b = b.icmp_type_code(IcmpTypeCode::builder().r#type(t).code(c).build());
            }
            b.send().await.map_err(err("CreateNetworkAclEntry"))?;
        }
        let current = ec2
            .describe_network_acls()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("association.subnet-id")
                    .values(&subnets[i])
                    .build(),
            )
            .send()
            .await
            .map_err(err("DescribeNetworkAcls"))?;
        let assoc = current
            .network_acls()
            .iter()
            .flat_map(|a| a.associations())
            .find(|a| a.subnet_id() == Some(subnets[i].as_str()))
            .and_then(|a| a.network_acl_association_id())
            .unwrap_or_default()
            .to_string();
        ec2.replace_network_acl_association()
            .association_id(assoc)
            .network_acl_id(&acl_id)
            .send()
            .await
            .map_err(err("ReplaceNetworkAclAssociation"))?;
    }
    let tables = ec2
        .describe_route_tables()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(&vpc_id)
                .build(),
        )
        .send()
        .await
        .map_err(err("DescribeRouteTables"))?;
    let main_rt = tables
        .route_tables()
        .first()
        .and_then(|t| t.route_table_id())
        .unwrap_or_default()
        .to_string();
    let mut public_rt = None;
    let mut igw_id = String::new();
    let mut nat_id = String::new();
    if spec.igw {
        let igw = ec2
            .create_internet_gateway()
            .send()
            .await
            .map_err(err("CreateInternetGateway"))?;
        igw_id = igw
            .internet_gateway()
            .and_then(|g| g.internet_gateway_id())
            .unwrap_or_default()
            .to_string();
        ec2.attach_internet_gateway()
            .internet_gateway_id(&igw_id)
            .vpc_id(&vpc_id)
            .send()
            .await
            .map_err(err("AttachInternetGateway"))?;
        let rt = ec2
            .create_route_table()
            .vpc_id(&vpc_id)
            .send()
            .await
            .map_err(err("CreateRouteTable"))?;
        let rt_id = rt
            .route_table()
            .and_then(|t| t.route_table_id())
            .unwrap_or_default()
            .to_string();
        ec2.create_route()
            .route_table_id(&rt_id)
            .destination_cidr_block("0.0.0.0/0")
            .gateway_id(&igw_id)
            .send()
            .await
            .map_err(err("CreateRoute igw"))?;
        ec2.associate_route_table()
            .route_table_id(&rt_id)
            .subnet_id(&subnets[0])
            .send()
            .await
            .map_err(err("AssociateRouteTable"))?;
        public_rt = Some(rt_id);
    }
    if spec.nat {
        let eip = ec2
            .allocate_address()
            .send()
            .await
            .map_err(err("AllocateAddress"))?;
        let nat = ec2
            .create_nat_gateway()
            .subnet_id(&subnets[0])
            .allocation_id(eip.allocation_id().unwrap_or_default())
            .send()
            .await
            .map_err(err("CreateNatGateway"))?;
        nat_id = nat
            .nat_gateway()
            .and_then(|n| n.nat_gateway_id())
            .unwrap_or_default()
            .to_string();
        crate::wait_nat_available(ec2, &nat_id, Duration::from_secs(20)).await?;
        ec2.create_route()
            .route_table_id(&main_rt)
            .destination_cidr_block("0.0.0.0/0")
            .nat_gateway_id(&nat_id)
            .send()
            .await
            .map_err(err("CreateRoute nat"))?;
    }
    for (cidr, via) in &spec.extra_routes {
        let b = ec2
            .create_route()
            .route_table_id(&main_rt)
            .destination_cidr_block(*cidr);
        let b = match via {
            Via::Igw => b.gateway_id(&igw_id),
            Via::Nat => b.nat_gateway_id(&nat_id),
        };
        b.send().await.map_err(err("CreateRoute extra"))?;
    }
    let mut s3_tables = Vec::new();
    if spec.s3_on_main {
        s3_tables.push(main_rt.clone());
    }
    if let (true, Some(p)) = (spec.s3_on_public, &public_rt) {
        s3_tables.push(p.clone());
    }
    if !s3_tables.is_empty() {
        ec2.create_vpc_endpoint()
            .vpc_id(&vpc_id)
            .service_name("com.amazonaws.us-east-1.s3")
            .vpc_endpoint_type(VpcEndpointType::Gateway)
            .set_route_table_ids(Some(s3_tables))
            .send()
            .await
            .map_err(err("CreateVpcEndpoint s3"))?;
    }
    let mut endpoint_enis = Vec::new();
    if let Some((subnet, group)) = spec.interface_endpoint {
        let e = ec2
            .create_vpc_endpoint()
            .vpc_id(&vpc_id)
            .service_name("com.amazonaws.us-east-1.sts")
            .vpc_endpoint_type(VpcEndpointType::Interface)
            .subnet_ids(&subnets[subnet])
            .security_group_ids(&group_ids[group])
            .private_dns_enabled(false)
            .send()
            .await
            .map_err(err("CreateVpcEndpoint sts"))?;
        for id in e
            .vpc_endpoint()
            .map(|v| v.network_interface_ids())
            .unwrap_or_default()
        {
            let d = ec2
                .describe_network_interfaces()
                .network_interface_ids(id)
                .send()
                .await
                .map_err(err("DescribeNetworkInterfaces"))?;
            let ip = d
                .network_interfaces()
                .first()
                .and_then(|n| n.private_ip_address())
                .unwrap_or_default();
            endpoint_enis.push((id.clone(), ip.parse().map_err(err("endpoint ip"))?));
        }
    }
    let mut enis = Vec::new();
    let mut placed = BTreeMap::new();
    for e in &spec.enis {
        let groups: Vec<String> = e.groups.iter().map(|g| group_ids[*g].clone()).collect();
        let (req, host) = create_eni(ec2, place);
        let created = req
            .subnet_id(&subnets[e.subnet])
            .set_groups(Some(groups))
            .send()
            .await
            .map_err(err("CreateNetworkInterface"))?;
        let ni = created.network_interface().ok_or("no ENI")?;
        let id = ni.network_interface_id().unwrap_or_default().to_string();
        let ip: Ipv4Addr = ni
            .private_ip_address()
            .unwrap_or_default()
            .parse()
            .map_err(err("eni ip"))?;
        if let Some(h) = host {
            placed.insert(id.clone(), h);
        }
        let mut public = None;
        if e.eip {
            let eip = ec2
                .allocate_address()
                .send()
                .await
                .map_err(err("AllocateAddress"))?;
            ec2.associate_address()
                .allocation_id(eip.allocation_id().unwrap_or_default())
                .network_interface_id(&id)
                .send()
                .await
                .map_err(err("AssociateAddress"))?;
            public = eip.public_ip().and_then(|p| p.parse().ok());
        }
        enis.push((id, ip, public));
    }
    if let Some(peer) = &spec.peer {
        let peer_enis =
            realise_peer(ec2, &vpc_id, &main_rt, peer, &group_ids, &lists, place).await?;
        for (id, ip, public, host) in peer_enis {
            if let Some(h) = host {
                placed.insert(id.clone(), h);
            }
            enis.push((id, ip, public));
        }
    }
    if spec.delete_nat {
        ec2.delete_nat_gateway()
            .nat_gateway_id(&nat_id)
            .send()
            .await
            .map_err(err("DeleteNatGateway"))?;
    }
    Ok(Realised {
        enis,
        placed,
        endpoint_enis,
    })
}

/// The peered VPC of a topology: made, peered, routed and given its ENIs.
async fn realise_peer(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    main_rt: &str,
    spec: &PeerSpec,
    group_ids: &[String],
    lists: &Lists,
    place: &Placement,
) -> Res<Vec<(String, Ipv4Addr, Option<Ipv4Addr>, Option<String>)>> {
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.2.0.0/16")
        .send()
        .await
        .map_err(err("CreateVpc peer"))?;
    let peer_vpc = vpc
        .vpc()
        .and_then(|v| v.vpc_id())
        .unwrap_or_default()
        .to_string();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&peer_vpc)
        .cidr_block("10.2.1.0/24")
        .send()
        .await
        .map_err(err("CreateSubnet peer"))?;
    let subnet = subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .unwrap_or_default()
        .to_string();
    let pcx = ec2
        .create_vpc_peering_connection()
        .vpc_id(vpc_id)
        .peer_vpc_id(&peer_vpc)
        .send()
        .await
        .map_err(err("CreateVpcPeeringConnection"))?;
    let pcx = pcx
        .vpc_peering_connection()
        .and_then(|p| p.vpc_peering_connection_id())
        .unwrap_or_default()
        .to_string();
    ec2.accept_vpc_peering_connection()
        .vpc_peering_connection_id(&pcx)
        .send()
        .await
        .map_err(err("AcceptVpcPeeringConnection"))?;
    let peer_rt = ec2
        .describe_route_tables()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(&peer_vpc)
                .build(),
        )
        .send()
        .await
        .map_err(err("DescribeRouteTables peer"))?;
    let peer_rt = peer_rt
        .route_tables()
        .first()
        .and_then(|t| t.route_table_id())
        .unwrap_or_default()
        .to_string();
    let mut routes = Vec::new();
    if spec.route_there {
        routes.push((main_rt.to_string(), "10.2.0.0/16"));
    }
    if spec.route_back {
        routes.push((peer_rt.clone(), "10.0.0.0/16"));
    }
    if spec.route_back_secondary {
        routes.push((peer_rt.clone(), "10.1.0.0/16"));
    }
    for (table, cidr) in routes {
        ec2.create_route()
            .route_table_id(table)
            .destination_cidr_block(cidr)
            .vpc_peering_connection_id(&pcx)
            .send()
            .await
            .map_err(err("CreateRoute peering"))?;
    }
    let group = ec2
        .create_security_group()
        .vpc_id(&peer_vpc)
        .group_name("peer")
        .description("differential test")
        .send()
        .await
        .map_err(err("CreateSecurityGroup peer"))?;
    let group = group.group_id().unwrap_or_default().to_string();
    for rule in &spec.ingress {
        // Rules naming the first VPC's groups cross the peering; duplicates are refused.
        let _ = ec2
            .authorize_security_group_ingress()
            .group_id(&group)
            .ip_permissions(permission(rule, group_ids, lists))
            .send()
            .await;
    }
    let mut enis = Vec::new();
    for _ in 0..spec.enis {
        let (req, host) = create_eni(ec2, place);
        let created = req
            .subnet_id(&subnet)
            .groups(&group)
            .send()
            .await
            .map_err(err("CreateNetworkInterface peer"))?;
        let ni = created.network_interface().ok_or("no ENI")?;
        let ip: Ipv4Addr = ni
            .private_ip_address()
            .unwrap_or_default()
            .parse()
            .map_err(err("peer eni ip"))?;
        enis.push((
            ni.network_interface_id().unwrap_or_default().to_string(),
            ip,
            None,
            host,
        ));
    }
    Ok(enis)
}

// ---------------------------------------------------------------- probes

#[derive(Debug, Clone)]
enum From {
    Eni(String),
    Internet,
}

#[derive(Debug, Clone)]
struct Probe {
    kind: &'static str,
    from: From,
    /// The address packets are sent to, and what the model is asked about.
    to: Ipv4Addr,
    target: Target,
    protocol: Protocol,
    port: u16,
    source_port: u16,
}

impl Probe {
    fn describe(&self) -> String {
        let from = match &self.from {
            From::Eni(e) => e.clone(),
            From::Internet => format!("internet({INTERNET})"),
        };
        let target = match &self.target {
            Target::Eni(e) => format!("{e}({})", self.to),
            _ => self.to.to_string(),
        };
        format!(
            "{} {from}:{} -> {target}:{}",
            self.protocol.name(),
            self.source_port,
            self.port
        )
    }

    fn query(&self) -> Query {
        Query {
            source: match &self.from {
                From::Eni(e) => Source::Eni(e.clone()),
                From::Internet => Source::Internet {
                    igw: None,
                    ip: Some(INTERNET),
                },
            },
            target: self.target.clone(),
            protocol: self.protocol,
            port: Some(self.port),
            source_port: Some(self.source_port),
        }
    }
}

fn plan_probes(rng: &mut StdRng, spec: &Spec, r: &Realised, count: usize) -> Vec<Probe> {
    let mut out = Vec::new();
    let mut used_sports = HashSet::new();
    let interesting = [22u16, 80, 443, 5432, 53, 8080, 1500, 33000];
    for _ in 0..count {
        let from_internet = r.enis.iter().any(|e| e.2.is_some()) && rng.gen_bool(0.08);
        let (from, kind, to, target, udp_ok) = if from_internet {
            let publics: Vec<_> = r.enis.iter().filter(|e| e.2.is_some()).collect();
            let e = publics.choose(rng).unwrap();
            (
                From::Internet,
                "internet -> eni",
                e.2.unwrap(),
                Target::Address(e.2.unwrap()),
                true,
            )
        } else {
            let src = r.enis.choose(rng).unwrap();
            let roll = rng.gen_range(0..100);
            let (kind, to, target, udp_ok) = if roll < 12 {
                ("eni -> s3", S3, Target::Address(S3), false)
            } else if roll < 24 {
                (
                    "eni -> internet",
                    INTERNET,
                    Target::Address(INTERNET),
                    false,
                )
            } else if roll < 30 && !r.endpoint_enis.is_empty() {
                let e = r.endpoint_enis.choose(rng).unwrap();
                ("eni -> endpoint eni", e.1, Target::Eni(e.0.clone()), true)
            } else {
                let others: Vec<_> = r.enis.iter().filter(|e| e.0 != src.0).collect();
                let Some(d) = others.choose(rng) else {
                    continue;
                };
                // The peered VPC is 10.2.0.0/16; the topology's own, 10.0 and 10.1.
                let kind = if (src.1.octets()[1] == 2) != (d.1.octets()[1] == 2) {
                    "eni -> peered eni"
                } else {
                    "eni -> eni"
                };
                (kind, d.1, Target::Eni(d.0.clone()), true)
            };
            (From::Eni(src.0.clone()), kind, to, target, udp_ok)
        };
        let protocol = match rng.gen_range(0..10) {
            0..=5 => Protocol::Tcp,
            6..=7 if udp_ok => Protocol::Udp,
            _ => Protocol::Icmp,
        };
        let port = match protocol {
            Protocol::Icmp => 0,
            Protocol::Udp => *spec.udp_ports.choose(rng).unwrap(),
            Protocol::Tcp if kind == "eni -> s3" => *[443u16, 443, 80, 22].choose(rng).unwrap(),
            Protocol::Tcp if rng.gen_bool(0.7) => *interesting.choose(rng).unwrap(),
            Protocol::Tcp => rng.gen_range(1..=65535),
        };
        // A source port used once per topology, so no probe meets another's conntrack entry.
        let source_port = loop {
            let p = if rng.gen_bool(0.85) {
                rng.gen_range(32768..=60999)
            } else {
                rng.gen_range(1024..=32767)
            };
            if !interesting.contains(&p) && !spec.udp_ports.contains(&p) && used_sports.insert(p) {
                break p;
            }
        };
        out.push(Probe {
            kind,
            from,
            to,
            target,
            protocol,
            port,
            source_port,
        });
    }
    out
}

/// Sends one probe from inside the current network namespace; true when an
/// answer came back (a TCP refusal counts: the destination's kernel sent it).
async fn send(p: &Probe, bind_ip: Ipv4Addr, timeout: Duration) -> bool {
    let local = SocketAddr::V4(SocketAddrV4::new(bind_ip, p.source_port));
    let remote = SocketAddr::V4(SocketAddrV4::new(p.to, p.port));
    match p.protocol {
        Protocol::Tcp => {
            let Ok(sock) = tokio::net::TcpSocket::new_v4() else {
                return false;
            };
            let _ = sock.set_reuseaddr(true);
            if sock.bind(local).is_err() {
                return false;
            }
            match tokio::time::timeout(timeout, sock.connect(remote)).await {
                Ok(Ok(_)) => true,
                Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
                Err(_) => false,
            }
        }
        Protocol::Udp => {
            let Ok(sock) = tokio::net::UdpSocket::bind(local).await else {
                return false;
            };
            if sock.send_to(b"probe", remote).await.is_err() {
                return false;
            }
            let mut buf = [0u8; 64];
            matches!(tokio::time::timeout(timeout, sock.recv_from(&mut buf)).await, Ok(Ok((n, from))) if from == remote && &buf[..n] == b"probe")
        }
        Protocol::Icmp => {
            let Ok(sock) = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::ICMPV4),
            ) else {
                return false;
            };
            let _ = sock.set_nonblocking(true);
            if sock
                .bind(&SocketAddr::V4(SocketAddrV4::new(bind_ip, 0)).into())
                .is_err()
            {
                return false;
            }
            let std_sock: std::net::UdpSocket = sock.into();
            let Ok(sock) = tokio::net::UdpSocket::from_std(std_sock) else {
                return false;
            };
            // Echo request; the kernel fills in the identifier and the checksum.
            let request = [8u8, 0, 0, 0, 0, 0, 0, 1, b'c', b'o', b'v', b'e'];
            if sock
                .send_to(&request, SocketAddr::V4(SocketAddrV4::new(p.to, 0)))
                .await
                .is_err()
            {
                return false;
            }
            let mut buf = [0u8; 64];
            matches!(tokio::time::timeout(timeout, sock.recv_from(&mut buf)).await, Ok(Ok((n, _))) if n >= 8 && buf[0] == 0)
        }
    }
}

/// Runs `f` on a thread inside namespace `ns` with a single-threaded runtime.
fn in_netns<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
    ns: &str,
    f: impl FnOnce() -> F + Send + 'static,
) -> std::io::Result<T> {
    cove_net::netns::run_in(ns, move || {
        // Ping sockets need the group range opened in this namespace.
        let _ = std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f())
    })
}

/// UDP echo servers on `ports` in every namespace of `namespaces`, until `stop`.
fn echo_servers(
    namespaces: Vec<String>,
    ports: Vec<u16>,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    namespaces
        .into_iter()
        .map(|ns| {
            let ports = ports.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let _ = in_netns(&ns, move || async move {
                    let mut tasks = Vec::new();
                    for port in ports {
                        let Ok(sock) = tokio::net::UdpSocket::bind(("0.0.0.0", port)).await else {
                            continue;
                        };
                        let stop = stop.clone();
                        tasks.push(tokio::spawn(async move {
                            let mut buf = [0u8; 64];
                            while !stop.load(Ordering::Relaxed) {
                                if let Ok(Ok((n, from))) = tokio::time::timeout(
                                    Duration::from_millis(50),
                                    sock.recv_from(&mut buf),
                                )
                                .await
                                {
                                    let _ = sock.send_to(&buf[..n], from).await;
                                }
                            }
                        }));
                    }
                    for t in tasks {
                        let _ = t.await;
                    }
                });
            })
        })
        .collect()
}

/// Where each ENI's namespace is: the instance tag of the host that makes
/// it (the control plane's unless the ENI was placed on an agent).
struct Namespaces {
    control_plane: String,
    /// ENI id → its agent's instance tag.
    placed: BTreeMap<String, String>,
}

impl Namespaces {
    fn eni(&self, id: &str) -> String {
        let instance = self.placed.get(id).unwrap_or(&self.control_plane);
        cove_net::naming::eni_netns(instance, id)
    }
}

/// Sends every probe from its source namespace, all sources at once; returns the outcomes in order.
fn run_probes(where_: &Namespaces, probes: &[Probe], timeout: Duration) -> Vec<(bool, f64)> {
    let mut by_source: BTreeMap<String, Vec<(usize, Probe)>> = BTreeMap::new();
    for (i, p) in probes.iter().enumerate() {
        let ns = match &p.from {
            From::Eni(e) => where_.eni(e),
            From::Internet => cove_net::naming::region_netns(&where_.control_plane),
        };
        by_source.entry(ns).or_default().push((i, p.clone()));
    }
    let handles: Vec<_> = by_source
        .into_iter()
        .map(|(ns, list)| {
            std::thread::spawn(move || {
                in_netns(&ns, move || async move {
                    let futures = list.into_iter().map(|(i, p)| async move {
                        let bind = if matches!(p.from, From::Internet) {
                            INTERNET
                        } else {
                            Ipv4Addr::UNSPECIFIED
                        };
                        let started = Instant::now();
                        let ok = send(&p, bind, timeout).await;
                        (i, (ok, started.elapsed().as_secs_f64() * 1e6))
                    });
                    futures::future::join_all(futures).await
                })
                .unwrap_or_default()
            })
        })
        .collect();
    let mut out = vec![(false, 0.0); probes.len()];
    for h in handles {
        for (i, result) in h.join().unwrap_or_default() {
            out[i] = result;
        }
    }
    out
}

// ---------------------------------------------------------------- the run

/// Runs the differential test on servers started as needed (data plane on).
pub async fn run(opts: &Options) -> Report {
    let mut report = Report::default();
    let indices: Vec<usize> = match opts.only {
        Some(i) => vec![i],
        None => (opts.first..opts.topologies).collect(),
    };
    let instance_of = |dir: &std::path::Path| {
        let canonical = std::fs::canonicalize(dir).expect("data dir");
        cove_net::naming::instance_tag(&canonical.to_string_lossy())
    };
    for batch in indices.chunks(opts.per_server.max(1)) {
        let mut hosts = opts.hosts.as_deref().map(crate::hosts::Hosts::up);
        let cove = match &hosts {
            Some(h) => Cove::start_on(&h.serve_env()),
            None => Cove::start_with_data_plane(),
        };
        let mut agents = BTreeMap::new();
        if let Some(h) = hosts.as_mut() {
            h.start_agents(&crate::cove_binary());
            for id in h.ids().into_iter().skip(1) {
                let dir = h.agent_dir(&id).expect("an agent's data directory");
                agents.insert(id, instance_of(&dir));
            }
        }
        let place = Placement {
            hosts: hosts.as_ref().map(|h| h.ids()).unwrap_or_default(),
            next: AtomicUsize::new(0),
        };
        let ec2 = cove.ec2();
        let instance = instance_of(cove.data_dir());
        for &i in batch {
            let seed = topology_seed(opts.seed, i);
            let spec = generate(seed);
            let started = Instant::now();
            let realised = match realise(&ec2, &spec, &place).await {
                Ok(r) => r,
                Err(e) => panic!(
                    "topology {i} (seed {seed}) could not be made: {e}\n{}",
                    cove.log()
                ),
            };
            assert!(
                cove.wait_applied(Duration::from_secs(60)),
                "the data plane did not apply topology {i}:\n{}",
                cove.log()
            );
            if let Some(h) = &hosts {
                assert!(
                    cove.wait_hosts_applied(Duration::from_secs(60)),
                    "the agents did not apply topology {i}:\n{}\n{}",
                    h.log_of("b"),
                    h.log_of("c")
                );
            }
            report.realise_seconds += started.elapsed().as_secs_f64();
            let world = match &hosts {
                Some(h) => cove_store::Store::read_postgres(&h.store_url()),
                None => cove_store::Store::read_world(&cove.data_dir().join("cove.db")),
            }
            .expect("read the store");
            let where_ = Namespaces {
                control_plane: instance.clone(),
                placed: realised
                    .placed
                    .iter()
                    .map(|(eni, host)| (eni.clone(), agents[host].clone()))
                    .collect(),
            };
            let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
            let probes = plan_probes(&mut rng, &spec, &realised, opts.probes);

            let started = Instant::now();
            let stop = Arc::new(AtomicBool::new(false));
            let mut namespaces: Vec<String> =
                realised.enis.iter().map(|e| where_.eni(&e.0)).collect();
            namespaces.extend(
                realised
                    .endpoint_enis
                    .iter()
                    .map(|e| cove_net::naming::eni_netns(&instance, &e.0)),
            );
            let servers = echo_servers(namespaces, spec.udp_ports.clone(), stop.clone());
            std::thread::sleep(Duration::from_millis(100));
            let sent = run_probes(&where_, &probes, opts.timeout);
            for (p, (ok, micros)) in probes.iter().zip(&sent) {
                if *ok && p.protocol == Protocol::Tcp {
                    report.tcp_micros.push(*micros);
                }
            }
            let mut outcomes: Vec<bool> = sent.iter().map(|s| s.0).collect();
            // A probe the model says gets through but that met silence is sent
            // again, patiently, before it counts as a mismatch (a busy machine
            // can be slower than the timeout).
            let model: Vec<(bool, String)> = probes
                .iter()
                .map(|p| {
                    let started = Instant::now();
                    let answer = cove_reach::analyze(&world, &p.query());
                    report
                        .model_micros
                        .push(started.elapsed().as_secs_f64() * 1e6);
                    answer
                })
                .map(|answer| match answer {
                    Ok(a) => (
                        a.found,
                        a.explanations
                            .iter()
                            .map(|e| format!("{}: {}", e.code, e.fix))
                            .collect::<Vec<_>>()
                            .join("; "),
                    ),
                    Err(e) => (false, format!("query error: {e}")),
                })
                .collect();
            let retry: Vec<usize> = (0..probes.len())
                .filter(|&k| model[k].0 && !outcomes[k])
                .collect();
            if !retry.is_empty() {
                let again: Vec<Probe> = retry.iter().map(|&k| probes[k].clone()).collect();
                for (k, ok) in retry
                    .iter()
                    .zip(run_probes(&where_, &again, opts.timeout * 6))
                {
                    outcomes[*k] = ok.0;
                }
            }
            stop.store(true, Ordering::Relaxed);
            for s in servers {
                let _ = s.join();
            }
            report.probe_seconds += started.elapsed().as_secs_f64();
            for (k, p) in probes.iter().enumerate() {
                let entry = report.kinds.entry(p.kind).or_default();
                entry.0 += 1;
                entry.1 += usize::from(outcomes[k]);
                if model[k].0 != outcomes[k] {
                    entry.2 += 1;
                    report.mismatches.push(Mismatch {
                        topology: i,
                        seed: opts.seed,
                        probe: p.describe(),
                        model: model[k].0,
                        kernel: outcomes[k],
                        model_says: model[k].1.clone(),
                    });
                }
            }
            report.probes += probes.len();
            report.topologies += 1;
        }
    }
    report
}
