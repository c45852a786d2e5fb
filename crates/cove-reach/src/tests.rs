//! Hand-written topologies, one or more per kind of rule the walk applies.

use crate::*;
use cove_model::cidr::Cidr;
use cove_model::fixtures::*;
use cove_model::vpc::*;
use cove_model::world::World;
use std::net::Ipv4Addr;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn open_group(id: &str) -> SecurityGroup {
    group(
        id,
        vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
        vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
    )
}

/// Everything open: one group on every ENI, allow-all ACLs, a main table with only the local route.
fn open_world() -> World {
    let mut w = world(
        "",
        vec![open_group("sg-open")],
        [&["sg-open"], &["sg-open"], &["sg-open"]],
        vec![allow_all_acl("acl-default", &["subnet-a", "subnet-b"])],
    );
    add_route_table(&mut w, "rtb-main", &[], vec![]);
    w
}

fn tcp(from: &str, to: Target, port: u16, source_port: Option<u16>) -> Query {
    Query {
        source: Source::Eni(from.into()),
        target: to,
        protocol: Protocol::Tcp,
        port: Some(port),
        source_port,
    }
}

/// A TCP connection from eni-a1 (source port 40000).
fn from_a1(w: &World, to: Target, port: u16) -> Analysis {
    analyze(w, &tcp("eni-a1", to, port, Some(40000))).unwrap()
}

fn eni(id: &str) -> Target {
    Target::Eni(id.into())
}

fn codes(a: &Analysis) -> Vec<&'static str> {
    a.explanations.iter().map(|e| e.code).collect()
}

#[test]
fn open_vpc_connects_enis_and_lists_the_path_in_order() {
    let w = open_world();
    let a = from_a1(&w, eni("eni-b1"), 443);
    assert!(a.found, "{a:#?}");
    let kinds: Vec<Kind> = a.forward.iter().map(|h| h.component.kind).collect();
    assert_eq!(
        kinds,
        [
            Kind::NetworkInterface,
            Kind::SecurityGroup,
            Kind::NetworkAcl,
            Kind::RouteTable,
            Kind::NetworkAcl,
            Kind::SecurityGroup,
            Kind::NetworkInterface
        ]
    );
    assert_eq!(a.forward[1].sg_rule.as_ref().unwrap().direction, "egress");
    assert_eq!(
        a.forward[3].route.as_ref().unwrap().target,
        RouteTarget::Local
    );
    // The reply crosses both ACLs again, the other way.
    let back: Vec<&str> = a.ret.iter().map(|h| h.component.id.as_str()).collect();
    assert_eq!(back, ["eni-b1", "acl-default", "acl-default", "eni-a1"]);
}

#[test]
fn missing_security_group_rules_are_reported_on_both_ends() {
    let mut w = open_world();
    w.security_groups.insert(
        "sg-closed".into(),
        group("sg-closed", vec![], vec![]).into(),
    );
    w.network_interfaces
        .get_mut("eni-a1")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .group_ids = vec!["sg-closed".into()];
    w.network_interfaces
        .get_mut("eni-b1")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .group_ids = vec!["sg-closed".into()];
    let a = from_a1(&w, eni("eni-b1"), 22);
    assert!(!a.found);
    assert_eq!(
        codes(&a),
        ["ENI_SG_RULES_MISMATCH", "ENI_SG_RULES_MISMATCH"]
    );
    assert_eq!(a.explanations[0].direction, Some("egress"));
    assert_eq!(a.explanations[1].direction, Some("ingress"));
    assert_eq!(a.explanations[1].component.id, "eni-b1");
    assert!(
        a.explanations[1].fix.contains("sg-closed"),
        "{}",
        a.explanations[1].fix
    );
}

#[test]
fn group_references_admit_members_only_and_ports_and_icmp_matter() {
    let mut w = open_world();
    let member_rule = rule(
        "tcp",
        Some(5432),
        Some(5432),
        SgPeer::Group {
            group_id: "sg-app".into(),
            user_id: ACCOUNT.into(),
        },
    );
    let ping = rule("icmp", Some(8), Some(-1), cidr("10.0.1.0/24"));
    w.security_groups.insert(
        "sg-db".into(),
        group("sg-db", vec![member_rule, ping], vec![]).into(),
    );
    w.security_groups
        .insert("sg-app".into(), open_group("sg-app").into());
    w.network_interfaces
        .get_mut("eni-b1")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .group_ids = vec!["sg-db".into()];
    w.network_interfaces
        .get_mut("eni-a1")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .group_ids = vec!["sg-app".into()];
    assert!(from_a1(&w, eni("eni-b1"), 5432).found);
    let other_port = from_a1(&w, eni("eni-b1"), 5433);
    assert_eq!(codes(&other_port), ["ENI_SG_RULES_MISMATCH"]);
    // eni-a2 is not in sg-app: the group reference does not admit it.
    let non_member = analyze(&w, &tcp("eni-a2", eni("eni-b1"), 5432, Some(40000))).unwrap();
    assert_eq!(codes(&non_member), ["ENI_SG_RULES_MISMATCH"]);
    let ping = Query {
        protocol: Protocol::Icmp,
        port: None,
        ..tcp("eni-a2", eni("eni-b1"), 0, None)
    };
    assert!(analyze(&w, &ping).unwrap().found);
}

#[test]
fn acl_entries_decide_lowest_number_first_and_end_in_the_star_deny() {
    let mut w = open_world();
    let mut acl_b = allow_all_acl("acl-b", &["subnet-b"]);
    acl_b.entries.push(entry(
        50,
        false,
        "tcp",
        false,
        "10.0.1.0/24",
        Some((22, 22)),
    ));
    w.network_acls
        .get_mut("acl-default")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .associations
        .retain(|a| a.subnet_id != "subnet-b");
    w.network_acls.insert("acl-b".into(), acl_b.into());
    let a = from_a1(&w, eni("eni-b1"), 22);
    assert_eq!(codes(&a), ["SUBNET_ACL_RESTRICTION"]);
    let rule = a.explanations[0].acl_rule.clone().unwrap();
    assert_eq!(
        (rule.acl_id.as_str(), rule.number, rule.egress, rule.allow),
        ("acl-b", 50, false, false)
    );
    assert!(from_a1(&w, eni("eni-b1"), 23).found);

    // A custom ACL with no entries denies everything with its `*` rule.
    w.network_acls
        .get_mut("acl-b")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .entries
        .clear();
    let a = from_a1(&w, eni("eni-b1"), 23);
    assert_eq!(a.explanations[0].acl_rule.as_ref().unwrap().number, 32767);
    // Both directions of subnet b are closed: the request and the reply are both listed.
    assert_eq!(a.explanations.len(), 2);
    assert!(a.explanations[1].on_return);
}

#[test]
fn acls_are_stateless_so_replies_need_their_ports_and_intra_subnet_traffic_skips_them() {
    let mut w = open_world();
    let mut acl_b = allow_all_acl("acl-b", &["subnet-b"]);
    acl_b.entries = vec![
        entry(100, false, "tcp", true, "10.0.0.0/16", Some((443, 443))),
        entry(100, true, "tcp", true, "10.0.0.0/16", Some((1024, 2048))),
    ];
    w.network_acls
        .get_mut("acl-default")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .associations
        .retain(|a| a.subnet_id != "subnet-b");
    w.network_acls.insert("acl-b".into(), acl_b.into());
    let a = from_a1(&w, eni("eni-b1"), 443);
    assert_eq!(codes(&a), ["SUBNET_ACL_RESTRICTION"]);
    assert!(a.explanations[0].on_return);
    assert_eq!(a.explanations[0].direction, Some("egress"));
    assert!(
        analyze(&w, &tcp("eni-a1", eni("eni-b1"), 443, Some(1500)))
            .unwrap()
            .found
    );
    // With no source port given, no ephemeral port can get its reply back.
    assert!(
        !analyze(&w, &tcp("eni-a1", eni("eni-b1"), 443, None))
            .unwrap()
            .found
    );
    // Widening the reply entry to the ephemeral range fixes it.
    w.network_acls
        .get_mut("acl-b")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .entries[1]
        .to_port = Some(65535);
    let a = analyze(&w, &tcp("eni-a1", eni("eni-b1"), 443, None)).unwrap();
    assert!(a.found);
    assert!(a.packet.src_port >= EPHEMERAL.0);

    // Within subnet a, no ACL is crossed at all.
    let mut closed = allow_all_acl("acl-a", &["subnet-a"]);
    closed.entries.clear();
    w.network_acls.insert("acl-a".into(), closed.into());
    w.network_acls
        .get_mut("acl-default")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .associations
        .clear();
    assert!(from_a1(&w, eni("eni-a2"), 80).found);
}

#[test]
fn internet_needs_a_route_an_attached_gateway_and_a_public_ip() {
    let mut w = open_world();
    let internet = Target::Address(ip("203.0.113.10"));
    let a = from_a1(&w, internet.clone(), 443);
    assert_eq!(codes(&a), ["NO_ROUTE_TO_DESTINATION"]);
    assert_eq!(a.explanations[0].route_table.as_deref(), Some("rtb-main"));

    attach_igw(&mut w, "igw-1");
    w.route_tables
        .get_mut("rtb-main")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .routes
        .push(Route {
            destination_cidr: Some(Cidr::ANY),
            destination_prefix_list_id: None,
            target: RouteTarget::Gateway("igw-1".into()),
            origin: RouteOrigin::CreateRoute,
        });
    let a = from_a1(&w, internet.clone(), 443);
    assert_eq!(codes(&a), ["IGW_PUBLIC_IP_ASSOCIATION_FOR_EGRESS"]);

    associate_eip(&mut w, "eni-a1", "198.51.100.20");
    let a = from_a1(&w, internet.clone(), 443);
    assert!(a.found, "{a:#?}");
    let igw_hop = a
        .forward
        .iter()
        .find(|h| h.component.kind == Kind::InternetGateway)
        .unwrap();
    assert_eq!(igw_hop.outbound.unwrap().src, ip("198.51.100.20"));

    // A private destination never crosses an internet gateway.
    let a = from_a1(&w, Target::Address(ip("172.16.0.9")), 443);
    assert_eq!(codes(&a), ["IGW_DESTINATION_ADDRESS_NOT_IN_RFC1918_EGRESS"]);

    // Detached, the gateway leaves a blackhole route behind.
    w.internet_gateways
        .get_mut("igw-1")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .attached_vpc_id = None;
    let a = from_a1(&w, internet, 443);
    assert_eq!(codes(&a), ["BAD_STATE_ROUTE"]);
    assert_eq!(a.explanations[0].route.as_ref().unwrap().state, "blackhole");
}

/// Subnet a private (0/0 to the NAT gateway), subnet b public (0/0 to the internet gateway), the NAT on eni-b1.
fn nat_world() -> World {
    let mut w = open_world();
    attach_igw(&mut w, "igw-1");
    add_nat_gateway(&mut w, "nat-1", "eni-b1");
    associate_eip(&mut w, "eni-b1", "198.51.100.30");
    add_route_table(
        &mut w,
        "rtb-private",
        &["subnet-a"],
        vec![("0.0.0.0/0", RouteTarget::NatGateway("nat-1".into()))],
    );
    add_route_table(
        &mut w,
        "rtb-public",
        &["subnet-b"],
        vec![("0.0.0.0/0", RouteTarget::Gateway("igw-1".into()))],
    );
    w
}

#[test]
fn a_nat_gateway_forwards_with_its_own_address_subnet_and_routes() {
    let mut w = nat_world();
    let internet = Target::InternetGateway {
        igw: "igw-1".into(),
        ip: None,
    };
    let a = from_a1(&w, internet.clone(), 443);
    assert!(a.found, "{a:#?}");
    let ids: Vec<&str> = a.forward.iter().map(|h| h.component.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "eni-a1",
            "sg-open",
            "acl-default",
            "rtb-private",
            "acl-default",
            "nat-1",
            "acl-default",
            "rtb-public",
            "igw-1"
        ]
    );
    let nat_hop = &a.forward[5];
    assert_eq!(nat_hop.outbound.unwrap().src, ip("10.0.2.4"));

    // The NAT's subnet ACL refusing the reply from the internet is found on the return path.
    let mut acl_b = allow_all_acl("acl-b", &["subnet-b"]);
    acl_b.entries.push(entry(
        10,
        false,
        "tcp",
        false,
        "203.0.113.0/24",
        Some((32768, 65535)),
    ));
    w.network_acls
        .get_mut("acl-default")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .associations
        .retain(|a| a.subnet_id != "subnet-b");
    w.network_acls.insert("acl-b".into(), acl_b.into());
    let a = from_a1(&w, internet.clone(), 443);
    assert_eq!(codes(&a), ["SUBNET_ACL_RESTRICTION"]);
    assert!(a.explanations[0].on_return);

    // Without its Elastic IP the NAT gateway's traffic is dropped at the internet gateway.
    w.addresses.clear();
    let a = analyze(&w, &tcp("eni-a1", internet.clone(), 443, Some(1000))).unwrap();
    assert!(codes(&a).contains(&"IGW_PUBLIC_IP_ASSOCIATION_FOR_EGRESS"));

    // A NAT gateway that is not available is a blackhole.
    w.nat_gateways
        .get_mut("nat-1")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .state = NatGatewayState::Deleting;
    let a = from_a1(&w, internet, 443);
    assert_eq!(codes(&a), ["BAD_STATE_ROUTE"]);
}

#[test]
fn a_gateway_endpoint_takes_s3_traffic_and_only_tcp_and_echo() {
    let mut w = nat_world();
    add_s3_gateway_endpoint(&mut w, "vpce-s3", &["rtb-private"]);
    let s3 = Target::Address(ip("192.0.2.20"));
    let a = from_a1(&w, s3.clone(), 443);
    assert!(a.found);
    let route = a.forward.iter().find_map(|h| h.route.clone()).unwrap();
    assert_eq!(route.target, RouteTarget::VpcEndpoint("vpce-s3".into()));
    assert!(route.destination_prefix_list.is_some());
    // Without the endpoint, the same traffic takes the NAT gateway.
    let via_nat = analyze(&nat_world(), &tcp("eni-a1", s3.clone(), 443, Some(40000))).unwrap();
    assert!(via_nat.found);
    assert!(via_nat
        .forward
        .iter()
        .any(|h| h.component.kind == Kind::NatGateway));
    assert!(via_nat
        .forward
        .iter()
        .all(|h| h.component.kind != Kind::VpcEndpoint));
    let udp = Query {
        protocol: Protocol::Udp,
        ..tcp("eni-a1", s3.clone(), 443, Some(40000))
    };
    assert_eq!(
        codes(&analyze(&w, &udp).unwrap()),
        ["VPCE_GATEWAY_PROTOCOL_RESTRICTION"]
    );
    // The endpoint as the destination.
    assert!(from_a1(&w, Target::VpcEndpoint("vpce-s3".into()), 443).found);

    // A security group whose only egress is the S3 prefix list reaches S3 and nothing else.
    let pl = cove_model::region::s3_prefix_list_id("us-east-1");
    let s3_only = group(
        "sg-s3",
        vec![],
        vec![rule(
            "tcp",
            Some(443),
            Some(443),
            SgPeer::PrefixList { id: pl },
        )],
    );
    w.security_groups.insert("sg-s3".into(), s3_only.into());
    w.network_interfaces
        .get_mut("eni-a1")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .group_ids = vec!["sg-s3".into()];
    assert!(from_a1(&w, s3, 443).found);
    let a = from_a1(&w, Target::Address(ip("203.0.113.10")), 443);
    assert_eq!(codes(&a), ["ENI_SG_RULES_MISMATCH"]);
}

#[test]
fn from_the_internet_needs_a_public_ip_a_group_rule_and_a_way_back() {
    let mut w = nat_world();
    let from_internet = |to: &str| Query {
        source: Source::Internet {
            igw: None,
            ip: None,
        },
        target: eni(to),
        protocol: Protocol::Tcp,
        port: Some(22),
        source_port: Some(50000),
    };
    let a = analyze(&w, &from_internet("eni-a2")).unwrap();
    assert_eq!(codes(&a), ["IGW_PRIVATE_IP_ASSOCIATION_FOR_INGRESS"]);
    // eni-a2 gets a public IP, but its subnet's replies leave through the NAT gateway.
    associate_eip(&mut w, "eni-a2", "198.51.100.40");
    let a = analyze(&w, &from_internet("eni-a2")).unwrap();
    assert_eq!(codes(&a), ["NO_ROUTE_TO_DESTINATION"]);
    assert!(a.explanations[0].on_return);
    // Moved to the public subnet's table, it works.
    w.route_tables
        .get_mut("rtb-public")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .associations
        .push(RouteTableAssociation {
            id: "rtbassoc-x".into(),
            subnet_id: Some("subnet-a".into()),
            gateway_id: None,
            main: false,
        });
    w.route_tables
        .get_mut("rtb-private")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .associations
        .clear();
    assert!(analyze(&w, &from_internet("eni-a2")).unwrap().found);
    // By public address, too; and a group without the rule stops it.
    let by_address = Query {
        target: Target::Address(ip("198.51.100.40")),
        ..from_internet("eni-a2")
    };
    assert!(analyze(&w, &by_address).unwrap().found);
    w.security_groups.insert(
        "sg-closed".into(),
        group("sg-closed", vec![], vec![]).into(),
    );
    w.network_interfaces
        .get_mut("eni-a2")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .group_ids = vec!["sg-closed".into()];
    assert_eq!(
        codes(&analyze(&w, &by_address).unwrap()),
        ["ENI_SG_RULES_MISMATCH"]
    );
}

#[test]
fn unknown_names_are_query_errors() {
    let w = open_world();
    assert!(analyze(&w, &tcp("eni-nope", eni("eni-b1"), 1, None)).is_err());
    assert!(analyze(
        &w,
        &tcp("eni-a1", Target::VpcEndpoint("vpce-nope".into()), 1, None)
    )
    .is_err());
    let no_igw = Query {
        source: Source::Internet {
            igw: None,
            ip: None,
        },
        ..tcp("eni-a1", eni("eni-b1"), 1, None)
    };
    assert!(analyze(&w, &no_igw).is_err());
}

#[test]
fn all_ports_reports_the_first_port_that_fails() {
    let mut w = open_world();
    let web = group(
        "sg-web",
        vec![rule("tcp", Some(1), Some(1023), cidr("10.0.0.0/16"))],
        vec![],
    );
    w.security_groups.insert("sg-web".into(), web.into());
    w.network_interfaces
        .get_mut("eni-b1")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .group_ids = vec!["sg-web".into()];
    let q = tcp("eni-a1", eni("eni-b1"), 0, Some(40000));
    assert!(analyze_all_ports(&w, &q, (1, 1023)).unwrap().is_ok());
    let failing = analyze_all_ports(&w, &q, (1, 65535)).unwrap().unwrap_err();
    assert_eq!(failing.packet.dst_port, 1024);
}

mod sagemaker_checks {
    use super::*;
    use crate::sagemaker::*;
    use serde_json::json;

    fn request(count: u64, groups: &[&str]) -> serde_json::Value {
        json!({
            "RoleArn": "arn:aws:iam::123456789012:role/Train",
            "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {"S3Uri": "s3://data/train/"}}}],
            "OutputDataConfig": {"S3OutputPath": "s3://out/models"},
            "ResourceConfig": {"InstanceCount": count},
            "VpcConfig": {"Subnets": ["subnet-a"], "SecurityGroupIds": groups},
        })
    }

    fn job(count: u64, groups: &[&str]) -> JobNetwork {
        JobNetwork::from_request(false, &request(count, groups), "us-east-1", ACCOUNT).unwrap()
    }

    fn private_world() -> World {
        let mut w = open_world();
        w.route_tables.clear();
        add_route_table(&mut w, "rtb-private", &[], vec![]);
        w
    }

    fn check<'c>(checks: &'c [Check], name: &str) -> &'c Check {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} in {checks:#?}"))
    }

    #[test]
    fn an_efs_channel_needs_its_zones_mount_target_on_2049() {
        use cove_model::efs::{LifeCycleState, MountTarget};
        let mut w = open_world();
        let mut req = request(1, &["sg-open"]);
        req["InputDataConfig"][0]["DataSource"] = json!({"FileSystemDataSource": {
            "FileSystemId": "fs-1", "FileSystemType": "EFS", "DirectoryPath": "/", "FileSystemAccessMode": "ro"}});
        let job = JobNetwork::from_request(false, &req, "us-east-1", ACCOUNT).unwrap();
        assert_eq!(job.file_systems, ["fs-1"]);
        let none = |_: &str| None;
        let fs_check = |w: &World| check(&check_job(w, &job, &none), "File system access").clone();
        assert!(fs_check(&w).detail.contains("does not exist"));
        w.file_systems.insert(
            "fs-1".into(),
            cove_model::fixtures::file_system("fs-1").into(),
        );
        let missing = fs_check(&w);
        assert!(
            !missing.ok && missing.detail.contains("no mount target in us-east-1a"),
            "{}",
            missing.detail
        );
        let eni = w.network_interfaces["eni-b1"].clone();
        w.mount_targets.insert(
            "fsmt-1".into(),
            MountTarget {
                id: "fsmt-1".into(),
                region: "us-east-1".into(),
                owner_id: ACCOUNT.into(),
                file_system_id: "fs-1".into(),
                subnet_id: eni.subnet_id.clone(),
                vpc_id: eni.vpc_id.clone(),
                availability_zone: eni.availability_zone.clone(),
                availability_zone_id: String::new(),
                ip_address: eni.private_ip,
                network_interface_id: eni.id.clone(),
                state: LifeCycleState::Available,
            }
            .into(),
        );
        assert!(fs_check(&w).ok, "{}", fs_check(&w).detail);
        // The mount target's group admits nothing: the mount will fail.
        w.security_groups.insert(
            "sg-closed".into(),
            group("sg-closed", vec![], vec![]).into(),
        );
        let mut closed = (*eni).clone();
        closed.group_ids = vec!["sg-closed".into()];
        w.network_interfaces.insert(eni.id.clone(), closed.into());
        let blocked = fs_check(&w);
        assert!(
            !blocked.ok && blocked.detail.contains("unreachable on TCP 2049"),
            "{}",
            blocked.detail
        );
        assert!(blocked.detail.contains("sg-closed"), "{}", blocked.detail);
    }

    #[test]
    fn the_request_gives_subnets_groups_and_s3_locations() {
        let j = job(2, &["sg-open"]);
        assert_eq!(j.instance_count, 2);
        assert_eq!(j.reads[0].bucket, "data");
        assert_eq!(j.writes[0].key, "models");
        assert!(JobNetwork::from_request(false, &json!({}), "us-east-1", ACCOUNT).is_none());
    }

    #[test]
    fn a_private_subnet_needs_an_s3_endpoint_and_its_policy() {
        let mut w = private_world();
        let none = |_: &str| None;
        let checks = check_job(&w, &job(1, &["sg-open"]), &none);
        let download = check(&checks, "S3 data download");
        assert!(!download.ok && download.required);
        assert!(
            download.detail.contains("NO_ROUTE_TO_DESTINATION"),
            "{}",
            download.detail
        );
        assert!(!check(&checks, "Internet access").ok);
        assert_eq!(warnings(&checks).len(), 2);

        add_s3_gateway_endpoint(&mut w, "vpce-s3", &["rtb-private"]);
        let checks = check_job(&w, &job(1, &["sg-open"]), &none);
        assert!(check(&checks, "S3 data download").ok);
        assert!(check(&checks, "Artifact upload").detail.contains("vpce-s3"));
        assert!(warnings(&checks).is_empty());

        // An endpoint policy that allows reads only breaks the upload.
        w.vpc_endpoints.get_mut("vpce-s3").map(std::sync::Arc::make_mut).unwrap().policy_document = Some(
            json!({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}]}).to_string(),
        );
        let checks = check_job(&w, &job(1, &["sg-open"]), &none);
        assert!(check(&checks, "S3 data download").ok);
        let upload = check(&checks, "Artifact upload");
        assert!(
            !upload.ok && upload.detail.contains("policy of endpoint vpce-s3"),
            "{}",
            upload.detail
        );

        // A bucket policy that denies requests from outside the endpoint breaks nothing here…
        let deny_elsewhere = json!({"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*",
            "Condition": {"StringNotEquals": {"aws:SourceVpce": "vpce-s3"}}}]})
        .to_string();
        let policy = |b: &str| (b == "data").then(|| deny_elsewhere.clone());
        assert!(
            check(
                &check_job(&w, &job(1, &["sg-open"]), &policy),
                "S3 data download"
            )
            .ok
        );
        // …but one that names another endpoint does.
        let other = deny_elsewhere.replace("vpce-s3", "vpce-other");
        let policy = |b: &str| (b == "data").then(|| other.clone());
        let d = check_job(&w, &job(1, &["sg-open"]), &policy);
        assert!(check(&d, "S3 data download")
            .detail
            .contains("policy of bucket data denies"));
    }

    #[test]
    fn distributed_jobs_need_their_group_to_admit_itself() {
        let mut w = private_world();
        add_s3_gateway_endpoint(&mut w, "vpce-s3", &["rtb-private"]);
        let https_only = group(
            "sg-https",
            vec![rule("tcp", Some(443), Some(443), cidr("10.0.0.0/16"))],
            vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
        );
        w.security_groups
            .insert("sg-https".into(), https_only.into());
        let checks = check_job(&w, &job(2, &["sg-https"]), &|_| None);
        let between = check(&checks, "Traffic between hosts");
        assert!(!between.ok, "{between:#?}");
        assert!(between.detail.contains("ENI_SG_RULES_MISMATCH"));

        let self_ref = group(
            "sg-self",
            vec![rule(
                "-1",
                None,
                None,
                SgPeer::Group {
                    group_id: "sg-self".into(),
                    user_id: ACCOUNT.into(),
                },
            )],
            vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
        );
        w.security_groups.insert("sg-self".into(), self_ref.into());
        let checks = check_job(&w, &job(2, &["sg-self"]), &|_| None);
        assert!(check(&checks, "Traffic between hosts").ok);
        assert!(warnings(&checks).is_empty());
    }

    #[test]
    fn a_model_needs_its_model_data_from_each_subnet() {
        let model = json!({
            "ExecutionRoleArn": "arn:aws:iam::123456789012:role/Serve",
            "PrimaryContainer": {"Image": "x", "ModelDataUrl": "s3://models/m/model.tar.gz",
                                 "Environment": {"SAGEMAKER_SUBMIT_DIRECTORY": "s3://models/code.tar.gz"}},
            "VpcConfig": {"Subnets": ["subnet-a", "subnet-b"], "SecurityGroupIds": ["sg-open"]},
        });
        let m = JobNetwork::from_model(&model, "us-east-1", ACCOUNT).unwrap();
        assert_eq!(m.reads.len(), 2);
        assert!(m.writes.is_empty());
        let mut w = private_world();
        let checks = check_job(&w, &m, &|_| None);
        let downloads: Vec<&Check> = checks
            .iter()
            .filter(|c| c.name == "S3 data download")
            .collect();
        assert_eq!(downloads.len(), 2, "one per subnet");
        assert!(downloads.iter().all(|c| !c.ok));
        assert!(checks
            .iter()
            .all(|c| c.name != "Traffic between hosts" && c.name != "Artifact upload"));
        add_s3_gateway_endpoint(&mut w, "vpce-s3", &["rtb-private"]);
        assert!(warnings(&check_job(&w, &m, &|_| None)).is_empty());
    }

    #[test]
    fn unknown_subnets_are_reported() {
        let w = private_world();
        let mut j = job(1, &["sg-open"]);
        j.subnets = vec!["subnet-nope".into()];
        let checks = check_job(&w, &j, &|_| None);
        assert!(!checks[0].ok && checks[0].detail.contains("subnet-nope"));
    }
}

#[test]
fn icmpv6_rules_match_no_ipv4_traffic_as_in_the_data_plane() {
    // A group rule for ICMPv6 with every type admits nothing IPv4 carries.
    let mut w = open_world();
    w.security_groups
        .get_mut("sg-open")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .ingress = vec![rule("icmpv6", Some(-1), Some(-1), cidr("0.0.0.0/0"))];
    assert!(!from_a1(&w, eni("eni-b1"), 22).found);
    // An ICMPv6 deny entry before the allow-all denies nothing.
    let mut w = open_world();
    let acl = w
        .network_acls
        .get_mut("acl-default")
        .map(std::sync::Arc::make_mut)
        .unwrap();
    acl.entries
        .push(entry(50, true, "icmpv6", false, "0.0.0.0/0", None));
    assert!(from_a1(&w, eni("eni-b1"), 22).found);
}
