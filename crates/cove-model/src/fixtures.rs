//! Hand-written worlds for tests of the plan, the evaluator and the kernel
//! rules: one VPC (`vpc-1<tag>`, 10.0.0.0/16) with subnets `subnet-a`
//! (10.0.1.0/24) and `subnet-b` (10.0.2.0/24) and ENIs `eni-a1<tag>`
//! (10.0.1.4), `eni-a2<tag>` (10.0.1.5) and `eni-b1<tag>` (10.0.2.4). The tag
//! keeps kernel object names unique between concurrent test runs.

use crate::cidr::Cidr;
use crate::vpc::*;
use crate::world::World;

pub const ACCOUNT: &str = "123456789012";

/// An available host with 2 vCPUs and 1 GiB at 198.51.100.`last`, that
/// has never beaten.
pub fn host(id: &str, last: u8, control_plane: bool) -> crate::hosts::Host {
    crate::hosts::Host {
        id: id.into(),
        underlay: std::net::Ipv4Addr::new(198, 51, 100, last),
        control_plane,
        cpus: 2,
        memory_mib: 1024,
        gpus: 0,
        state: crate::hosts::HostState::Available,
        registered_at: String::new(),
        heartbeat_at: 0,
        applied_position: 0,
        instance: String::new(),
        eni_placement: None,
        ca_certificates: None,
        registry_port: None,
        serving_relay: None,
    }
}

/// A CIDR written in a fixture.
pub fn net(c: &str) -> Cidr {
    c.parse()
        .unwrap_or_else(|()| panic!("fixture CIDR {c} is not one"))
}

/// An address written in a fixture.
pub fn ip(a: &str) -> std::net::Ipv4Addr {
    a.parse()
        .unwrap_or_else(|_| panic!("fixture address {a} is not one"))
}

pub fn rule(protocol: &str, from: Option<i64>, to: Option<i64>, peer: SgPeer) -> SgRule {
    SgRule {
        id: format!("sgr-{protocol}{from:?}"),
        protocol: protocol.parse().expect("fixture protocol"),
        from_port: from,
        to_port: to,
        peer,
        description: None,
    }
}

pub fn cidr(c: &str) -> SgPeer {
    SgPeer::Cidr { cidr: net(c) }
}

pub fn group(id: &str, ingress: Vec<SgRule>, egress: Vec<SgRule>) -> SecurityGroup {
    SecurityGroup {
        id: id.into(),
        region: "us-east-1".into(),
        vpc_id: "vpc-1".into(),
        name: id.into(),
        description: String::new(),
        ingress,
        egress,
    }
}

pub fn entry(
    n: i64,
    egress: bool,
    protocol: &str,
    allow: bool,
    c: &str,
    ports: Option<(i64, i64)>,
) -> NaclEntry {
    NaclEntry {
        rule_number: n,
        egress,
        protocol: protocol.parse().expect("fixture protocol"),
        allow,
        cidr: net(c),
        from_port: ports.map(|p| p.0),
        to_port: ports.map(|p| p.1),
        icmp_type: None,
        icmp_code: None,
    }
}

pub fn allow_all_acl(id: &str, subnets: &[&str]) -> NetworkAcl {
    NetworkAcl {
        id: id.into(),
        region: "us-east-1".into(),
        vpc_id: "vpc-1".into(),
        is_default: id == "acl-default",
        entries: vec![
            entry(100, false, "-1", true, "0.0.0.0/0", None),
            entry(100, true, "-1", true, "0.0.0.0/0", None),
        ],
        associations: subnets
            .iter()
            .map(|s| NaclAssociation {
                id: format!("aclassoc-{s}"),
                subnet_id: s.to_string(),
            })
            .collect(),
    }
}

/// Two subnets (a: 10.0.1.0/24, b: 10.0.2.0/24); ENIs a1, a2 in a and b1 in b.
pub fn world(
    tag: &str,
    groups: Vec<SecurityGroup>,
    eni_groups: [&[&str]; 3],
    acls: Vec<NetworkAcl>,
) -> World {
    let vpc_id = format!("vpc-1{tag}");
    let mut w = World::default();
    w.vpcs.insert(
        vpc_id.clone(),
        Vpc {
            id: vpc_id.clone(),
            region: "us-east-1".into(),
            cidr: net("10.0.0.0/16"),
            cidr_association_id: "x".into(),
            is_default: false,
            instance_tenancy: Tenancy::Default,
            enable_dns_support: true,
            enable_dns_hostnames: false,
            enable_network_address_usage_metrics: false,
            dhcp_options_id: "dopt-1".into(),
            secondary_cidrs: vec![],
        }
        .into(),
    );
    for (id, c) in [("subnet-a", "10.0.1.0/24"), ("subnet-b", "10.0.2.0/24")] {
        w.subnets.insert(
            id.into(),
            Subnet {
                id: id.into(),
                region: "us-east-1".into(),
                vpc_id: vpc_id.clone(),
                cidr: net(c),
                availability_zone: "us-east-1a".into(),
                availability_zone_id: "use1-az1".into(),
                default_for_az: false,
                map_public_ip_on_launch: false,
                held_addresses: Vec::new(),
            }
            .into(),
        );
    }
    for mut g in groups {
        g.vpc_id = vpc_id.clone();
        w.security_groups.insert(g.id.clone(), g.into());
    }
    for mut a in acls {
        a.vpc_id = vpc_id.clone();
        w.network_acls.insert(a.id.clone(), a.into());
    }
    for ((id, subnet, address), gs) in [
        ("eni-a1", "subnet-a", "10.0.1.4"),
        ("eni-a2", "subnet-a", "10.0.1.5"),
        ("eni-b1", "subnet-b", "10.0.2.4"),
    ]
    .into_iter()
    .zip(eni_groups)
    {
        w.network_interfaces.insert(
            format!("{id}{tag}"),
            NetworkInterface {
                id: format!("{id}{tag}"),
                region: "us-east-1".into(),
                vpc_id: vpc_id.clone(),
                subnet_id: subnet.into(),
                availability_zone: "us-east-1a".into(),
                private_ip: ip(address),
                mac_address: "02:00:00:00:00:01".into(),
                description: String::new(),
                group_ids: gs.iter().map(|g| g.to_string()).collect(),
                status: EniStatus::Available,
                interface_type: InterfaceType::Interface,
                requester_managed: false,
                requester_id: None,
                source_dest_check: true,
                attachment: None,
                host: None,
            }
            .into(),
        );
    }
    w
}

/// A rule admitting TCP `port` from the members of `group_id`.
pub fn tcp_from_group(port: i64, group_id: &str) -> SgRule {
    rule(
        "tcp",
        Some(port),
        Some(port),
        SgPeer::Group {
            group_id: group_id.into(),
            user_id: ACCOUNT.into(),
        },
    )
}

/// The fixture VPC with a web server and two clients: `eni-a1` (10.0.1.4)
/// in `sg-web` (TCP 22 from the VPC), `eni-a2` and `eni-b1` in
/// `sg-clients` (no ingress); both groups send anything anywhere.
pub fn web_and_clients(tag: &str) -> World {
    let everything = || vec![rule("-1", None, None, cidr("0.0.0.0/0"))];
    let web = group(
        "sg-web",
        vec![rule("tcp", Some(22), Some(22), cidr("10.0.0.0/16"))],
        everything(),
    );
    let clients = group("sg-clients", vec![], everything());
    world(
        tag,
        vec![web, clients],
        [&["sg-web"], &["sg-clients"], &["sg-clients"]],
        vec![allow_all_acl("acl-d", &["subnet-a", "subnet-b"])],
    )
}

/// The id of the ENI with private address `ip`.
pub fn eni_with_ip(w: &World, ip: &str) -> String {
    w.network_interfaces
        .values()
        .find(|e| e.private_ip.to_string() == ip)
        .map(|e| e.id.clone())
        .unwrap_or_else(|| panic!("no fixture ENI has {ip}"))
}

/// Fills a fixture world with `groups` security groups of `per_group`
/// distinct ingress rules that match nothing the tests send (TCP ports from
/// 20000 up, from 198.51.100.0/24), attached five at a time (AWS's limit
/// per ENI) to filler ENIs in subnet a from 10.0.1.10 up.
pub fn add_filler_rules(w: &mut World, groups: usize, per_group: usize) {
    let Some(template) = w.network_interfaces.values().next().map(|e| (**e).clone()) else {
        return;
    };
    for g in 0..groups {
        let id = format!("sg-fill{g:05}");
        let ingress = (0..per_group)
            .map(|r| {
                let port =
                    20000 + i64::try_from(g * per_group + r).expect("fixture rule count fits i64");
                let mut x = rule(
                    "tcp",
                    Some(port),
                    Some(port),
                    cidr(&format!("198.51.100.{}/32", r % 250)),
                );
                x.id = format!("sgr-fill{g}-{r}");
                x
            })
            .collect();
        let mut g = group(&id, ingress, vec![]);
        g.vpc_id = template.vpc_id.clone();
        w.security_groups.insert(id.clone(), g.into());
    }
    for n in 0..groups.div_ceil(5) {
        let id = format!("eni-fill{n:05}");
        let base = u32::from(std::net::Ipv4Addr::new(10, 0, 1, 10))
            + u32::try_from(n).expect("fixture ENI count fits u32");
        w.network_interfaces.insert(
            id.clone(),
            NetworkInterface {
                id,
                private_ip: std::net::Ipv4Addr::from(base),
                group_ids: (n * 5..(n * 5 + 5).min(groups))
                    .map(|g| format!("sg-fill{g:05}"))
                    .collect(),
                ..template.clone()
            }
            .into(),
        );
    }
}

/// The VPC id of a fixture world.
pub fn vpc_id(w: &World) -> String {
    w.vpcs.keys().next().cloned().unwrap_or_default()
}

/// A route table of the fixture VPC serving `subnets` (the main table when `subnets` is empty).
pub fn add_route_table(
    w: &mut World,
    id: &str,
    subnets: &[&str],
    routes: Vec<(&str, RouteTarget)>,
) {
    let vpc = vpc_id(w);
    let mut all = vec![Route {
        destination_cidr: Some(net("10.0.0.0/16")),
        destination_prefix_list_id: None,
        target: RouteTarget::Local,
        origin: RouteOrigin::CreateRouteTable,
    }];
    for (dest, target) in routes {
        let (cidr, pl) = if dest.starts_with("pl-") {
            (None, Some(dest.to_string()))
        } else {
            (Some(net(dest)), None)
        };
        all.push(Route {
            destination_cidr: cidr,
            destination_prefix_list_id: pl,
            target,
            origin: RouteOrigin::CreateRoute,
        });
    }
    let associations = if subnets.is_empty() {
        vec![RouteTableAssociation {
            id: format!("rtbassoc-{id}"),
            subnet_id: None,
            gateway_id: None,
            main: true,
        }]
    } else {
        subnets
            .iter()
            .map(|s| RouteTableAssociation {
                id: format!("rtbassoc-{id}-{s}"),
                subnet_id: Some(s.to_string()),
                gateway_id: None,
                main: false,
            })
            .collect()
    };
    w.route_tables.insert(
        id.into(),
        RouteTable {
            id: id.into(),
            region: "us-east-1".into(),
            vpc_id: vpc,
            routes: all,
            associations,
        }
        .into(),
    );
}

pub fn attach_igw(w: &mut World, id: &str) {
    let vpc = vpc_id(w);
    w.internet_gateways.insert(
        id.into(),
        InternetGateway {
            id: id.into(),
            region: "us-east-1".into(),
            attached_vpc_id: Some(vpc),
        }
        .into(),
    );
}

/// An Elastic IP associated with an ENI of the fixture world.
pub fn associate_eip(w: &mut World, eni: &str, public_ip: &str) {
    let private_ip = w.network_interfaces[eni].private_ip;
    let id = format!("eipalloc-{eni}");
    w.addresses.insert(
        id.clone(),
        Address {
            allocation_id: id,
            region: "us-east-1".into(),
            public_ip: ip(public_ip),
            network_border_group: "us-east-1".into(),
            association: Some(AddressAssociation {
                association_id: format!("eipassoc-{eni}"),
                network_interface_id: eni.into(),
                private_ip,
            }),
        }
        .into(),
    );
}

/// An available NAT gateway whose ENI is `eni` (made a `nat_gateway` ENI).
pub fn add_nat_gateway(w: &mut World, id: &str, eni: &str) {
    let e = w
        .network_interfaces
        .get_mut(eni)
        .map(std::sync::Arc::make_mut)
        .expect("fixture ENI");
    e.interface_type = InterfaceType::NatGateway;
    e.group_ids.clear();
    let (subnet, ip, vpc) = (e.subnet_id.clone(), e.private_ip, e.vpc_id.clone());
    w.nat_gateways.insert(
        id.into(),
        NatGateway {
            id: id.into(),
            region: "us-east-1".into(),
            vpc_id: vpc,
            subnet_id: subnet,
            connectivity_type: Connectivity::Public,
            allocation_id: None,
            public_ip: None,
            private_ip: ip,
            network_interface_id: eni.into(),
            state: NatGatewayState::Available,
            create_time: String::new(),
            delete_time: None,
        }
        .into(),
    );
}

/// A gateway endpoint for S3 on the given route tables (their prefix-list routes are added too).
pub fn add_s3_gateway_endpoint(w: &mut World, id: &str, tables: &[&str]) {
    let vpc = vpc_id(w);
    let pl = crate::region::s3_prefix_list_id("us-east-1");
    for t in tables {
        let table = w
            .route_tables
            .get_mut(*t)
            .map(std::sync::Arc::make_mut)
            .expect("fixture table");
        table.routes.push(Route {
            destination_cidr: None,
            destination_prefix_list_id: Some(pl.clone()),
            target: RouteTarget::VpcEndpoint(id.into()),
            origin: RouteOrigin::CreateRoute,
        });
    }
    w.vpc_endpoints.insert(
        id.into(),
        VpcEndpoint {
            id: id.into(),
            region: "us-east-1".into(),
            vpc_id: vpc,
            service_name: "com.amazonaws.us-east-1.s3".into(),
            endpoint_type: EndpointType::Gateway,
            policy_document: None,
            route_table_ids: tables.iter().map(|t| t.to_string()).collect(),
            subnet_ids: vec![],
            group_ids: vec![],
            network_interface_ids: vec![],
            private_dns_enabled: false,
            state: EndpointState::Available,
            create_time: String::new(),
        }
        .into(),
    );
}

/// An active peering connection `id` between VPCs `a` (requester) and `b`,
/// both of [`ACCOUNT`] in us-east-1.
pub fn active_peering(id: &str, a: &str, b: &str) -> crate::vpc::VpcPeeringConnection {
    crate::vpc::VpcPeeringConnection {
        id: id.into(),
        region: "us-east-1".into(),
        requester_vpc_id: a.into(),
        requester_owner: ACCOUNT.into(),
        accepter_vpc_id: b.into(),
        accepter_owner: ACCOUNT.into(),
        accepter_region: "us-east-1".into(),
        status: crate::vpc::PeeringStatus::Active,
        message: String::new(),
        expiration: String::new(),
        ended: None,
    }
}

/// An available EFS file system `id` in us-east-1, with AWS's defaults.
pub fn file_system(id: &str) -> crate::efs::FileSystem {
    crate::efs::FileSystem::with_defaults(id, "us-east-1", ACCOUNT, id, "")
}
