//! Synthetic but dense VPCs the benchmarks share: every ENI in two of
//! eight groups that reference each other, custom ACLs of 20 entries on
//! every subnet, a NAT gateway, an internet gateway and an S3 gateway
//! endpoint.

use cove_model::fixtures::*;
use cove_model::vpc::*;
use cove_model::world::World;

/// The fixture VPC grown to `enis` ENIs over its two subnets.
pub fn dense_vpc(enis: usize) -> World {
    let groups: Vec<SecurityGroup> = (0..8)
        .map(|g| {
            group(
                &format!("sg-{g}"),
                vec![
                    rule("tcp", Some(443), Some(443), cidr("10.0.0.0/16")),
                    rule(
                        "tcp",
                        Some(5432),
                        Some(5432),
                        SgPeer::Group {
                            group_id: format!("sg-{}", (g + 1) % 8),
                            user_id: ACCOUNT.into(),
                        },
                    ),
                    rule("icmp", Some(8), Some(-1), cidr("10.0.0.0/8")),
                ],
                vec![rule("-1", None, None, cidr("0.0.0.0/0"))],
            )
        })
        .collect();
    let mut w = world("", groups, [&["sg-0"], &["sg-1"], &["sg-2"]], vec![]);
    let subnets = ["subnet-a", "subnet-b"];
    for (i, s) in subnets.iter().enumerate() {
        let mut acl = allow_all_acl(&format!("acl-{i}"), &[s]);
        for n in 0..20 {
            acl.entries.push(entry(
                10 + n,
                n % 2 == 0,
                "tcp",
                n % 3 != 0,
                "203.0.113.0/24",
                Some((1000 + n * 10, 1005 + n * 10)),
            ));
        }
        w.network_acls.insert(acl.id.clone(), acl.into());
    }
    let template = (*w.network_interfaces["eni-a1"]).clone();
    for i in 0..enis.saturating_sub(3) {
        let subnet = subnets[i % 2];
        let third = if subnet == "subnet-a" { 1 } else { 2 };
        let id = format!("eni-x{i}");
        w.network_interfaces.insert(
            id.clone(),
            NetworkInterface {
                id,
                subnet_id: subnet.into(),
                private_ip: ip(&format!("10.0.{third}.{}", 10 + i / 2 % 240)),
                group_ids: vec![format!("sg-{}", i % 8), format!("sg-{}", (i + 3) % 8)],
                ..template.clone()
            }
            .into(),
        );
    }
    attach_igw(&mut w, "igw-1");
    add_nat_gateway(&mut w, "nat-1", "eni-b1");
    associate_eip(&mut w, "eni-b1", "198.51.100.30");
    add_route_table(
        &mut w,
        "rtb-a",
        &["subnet-a"],
        vec![("0.0.0.0/0", RouteTarget::NatGateway("nat-1".into()))],
    );
    add_route_table(
        &mut w,
        "rtb-b",
        &["subnet-b"],
        vec![("0.0.0.0/0", RouteTarget::Gateway("igw-1".into()))],
    );
    add_s3_gateway_endpoint(&mut w, "vpce-s3", &["rtb-a"]);
    w
}
