//! Cove's EC2 VPC API and STS driven by the official AWS SDK for Rust
//! (aws-sdk-ec2, aws-sdk-sts) against a real `cove serve`: VPCs, subnets,
//! security groups, pagination, error codes, signatures and NAT gateways.
//! Each test starts its own server (see the `cove_sdk_tests` harness).

use std::time::Duration;

use aws_sdk_ec2::types::{
    DomainType, Filter, IpPermission, IpRange, NatGatewayState, ResourceType, Tag,
    TagSpecification, VpcAttributeName,
};
use cove_sdk_tests::{assert_error_code, wait_nat_available, Cove, ACCOUNT_ID};

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

#[tokio::test]
async fn vpc_create_describe_filters_and_defaults() {
    let cove = Cove::start();
    let ec2 = cove.ec2();

    let created = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Vpc)
                .tags(Tag::builder().key("Name").value("sdk-rust").build())
                .tags(Tag::builder().key("team").value("ml").build())
                .build(),
        )
        .send()
        .await
        .expect("create_vpc");
    let vpc = created.vpc().expect("CreateVpc returns the VPC");
    let vpc_id = vpc.vpc_id().expect("vpc id").to_string();
    assert!(vpc_id.starts_with("vpc-"), "{vpc_id}");
    assert_eq!(vpc.cidr_block(), Some("10.0.0.0/16"));
    assert_eq!(vpc.is_default(), Some(false));
    let mut tags: Vec<_> = vpc
        .tags()
        .iter()
        .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()))
        .collect();
    tags.sort();
    assert_eq!(tags, [("Name", "sdk-rust"), ("team", "ml")]);

    let by_id = ec2
        .describe_vpcs()
        .vpc_ids(&vpc_id)
        .send()
        .await
        .expect("describe_vpcs by id");
    assert_eq!(by_id.vpcs().len(), 1);
    let described = &by_id.vpcs()[0];
    assert_eq!(described.vpc_id(), Some(vpc_id.as_str()));
    assert_eq!(described.cidr_block(), Some("10.0.0.0/16"));
    assert_eq!(described.state().map(|s| s.as_str()), Some("available"));

    let by_tag = ec2
        .describe_vpcs()
        .filters(filter("tag:Name", "sdk-rust"))
        .send()
        .await
        .expect("describe_vpcs by tag:Name");
    let ids: Vec<_> = by_tag.vpcs().iter().filter_map(|v| v.vpc_id()).collect();
    assert_eq!(ids, [vpc_id.as_str()]);

    let defaults = ec2
        .describe_vpcs()
        .filters(filter("is-default", "true"))
        .send()
        .await
        .expect("describe_vpcs is-default");
    assert_eq!(defaults.vpcs().len(), 1, "{defaults:?}");
    let default_vpc = &defaults.vpcs()[0];
    assert_eq!(default_vpc.cidr_block(), Some("172.31.0.0/16"));
    assert_eq!(default_vpc.is_default(), Some(true));
    assert_ne!(default_vpc.vpc_id(), Some(vpc_id.as_str()));

    let dns = ec2
        .describe_vpc_attribute()
        .vpc_id(&vpc_id)
        .attribute(VpcAttributeName::EnableDnsSupport)
        .send()
        .await
        .expect("describe_vpc_attribute");
    assert_eq!(dns.vpc_id(), Some(vpc_id.as_str()));
    assert_eq!(dns.enable_dns_support().and_then(|v| v.value()), Some(true));
}

#[tokio::test]
async fn subnet_conflict_and_vpc_dependencies() {
    let cove = Cove::start();
    let ec2 = cove.ec2();
    let vpc_id = ec2
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .expect("create_vpc")
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("vpc id")
        .to_string();

    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block("10.9.1.0/24")
        .send()
        .await
        .expect("create_subnet");
    let subnet = subnet.subnet().expect("CreateSubnet returns the subnet");
    let subnet_id = subnet.subnet_id().expect("subnet id").to_string();
    assert_eq!(subnet.available_ip_address_count(), Some(251));
    assert_eq!(subnet.cidr_block(), Some("10.9.1.0/24"));
    assert_eq!(subnet.vpc_id(), Some(vpc_id.as_str()));

    let message = assert_error_code(
        ec2.create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block("10.9.1.128/25")
            .send()
            .await,
        "InvalidSubnet.Conflict",
    );
    assert_eq!(
        message,
        "The CIDR '10.9.1.128/25' conflicts with another subnet"
    );

    let message = assert_error_code(
        ec2.delete_vpc().vpc_id(&vpc_id).send().await,
        "DependencyViolation",
    );
    assert_eq!(
        message,
        format!("The vpc '{vpc_id}' has dependencies and cannot be deleted.")
    );

    ec2.delete_subnet()
        .subnet_id(&subnet_id)
        .send()
        .await
        .expect("delete_subnet");
    ec2.delete_vpc()
        .vpc_id(&vpc_id)
        .send()
        .await
        .expect("delete_vpc after its subnet is gone");
    assert_error_code(
        ec2.describe_vpcs().vpc_ids(&vpc_id).send().await,
        "InvalidVpcID.NotFound",
    );
}

#[tokio::test]
async fn security_group_rules_duplicate_and_revoke_by_id() {
    let cove = Cove::start();
    let ec2 = cove.ec2();
    let vpc_id = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .expect("create_vpc")
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("vpc id")
        .to_string();
    let group_id = ec2
        .create_security_group()
        .group_name("web")
        .description("web tier")
        .vpc_id(&vpc_id)
        .send()
        .await
        .expect("create_security_group")
        .group_id()
        .expect("group id")
        .to_string();
    assert!(group_id.starts_with("sg-"), "{group_id}");

    let https = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(443)
        .to_port(443)
        .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
        .build();
    let authorized = ec2
        .authorize_security_group_ingress()
        .group_id(&group_id)
        .ip_permissions(https.clone())
        .send()
        .await
        .expect("authorize_security_group_ingress");
    assert_eq!(authorized.r#return(), Some(true));
    let rules = authorized.security_group_rules();
    assert_eq!(rules.len(), 1, "{authorized:?}");
    let rule_id = rules[0]
        .security_group_rule_id()
        .expect("rule id")
        .to_string();
    assert!(rule_id.starts_with("sgr-"), "{rule_id}");
    assert_eq!(rules[0].group_id(), Some(group_id.as_str()));
    assert_eq!(rules[0].is_egress(), Some(false));
    assert_eq!(rules[0].ip_protocol(), Some("tcp"));
    assert_eq!(rules[0].from_port(), Some(443));
    assert_eq!(rules[0].to_port(), Some(443));
    assert_eq!(rules[0].cidr_ipv4(), Some("0.0.0.0/0"));

    assert_error_code(
        ec2.authorize_security_group_ingress()
            .group_id(&group_id)
            .ip_permissions(https)
            .send()
            .await,
        "InvalidPermission.Duplicate",
    );

    let described = ec2
        .describe_security_group_rules()
        .filters(filter("group-id", &group_id))
        .send()
        .await
        .expect("describe_security_group_rules");
    let all = described.security_group_rules();
    assert_eq!(all.len(), 2, "default egress + https ingress: {all:?}");
    let egress: Vec<_> = all.iter().filter(|r| r.is_egress() == Some(true)).collect();
    assert_eq!(egress.len(), 1);
    assert_eq!(egress[0].ip_protocol(), Some("-1"));
    assert_eq!(egress[0].cidr_ipv4(), Some("0.0.0.0/0"));
    assert!(all
        .iter()
        .any(|r| r.security_group_rule_id() == Some(rule_id.as_str())));

    let revoked = ec2
        .revoke_security_group_ingress()
        .group_id(&group_id)
        .security_group_rule_ids(&rule_id)
        .send()
        .await
        .expect("revoke_security_group_ingress by rule id");
    assert_eq!(revoked.r#return(), Some(true));
    let after = ec2
        .describe_security_group_rules()
        .filters(filter("group-id", &group_id))
        .send()
        .await
        .expect("describe_security_group_rules after revoke");
    let left: Vec<_> = after
        .security_group_rules()
        .iter()
        .map(|r| r.is_egress())
        .collect();
    assert_eq!(left, [Some(true)]);
    let group = ec2
        .describe_security_groups()
        .group_ids(&group_id)
        .send()
        .await
        .expect("describe_security_groups");
    assert!(group.security_groups()[0].ip_permissions().is_empty());
}

#[tokio::test]
async fn describe_subnets_pagination_and_paginator() {
    let cove = Cove::start();
    let ec2 = cove.ec2();
    let vpc_id = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .expect("create_vpc")
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("vpc id")
        .to_string();
    let mut made = Vec::new();
    for i in 0..7 {
        let out = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(format!("10.0.{i}.0/24"))
            .send()
            .await
            .expect("create_subnet");
        made.push(
            out.subnet()
                .and_then(|s| s.subnet_id())
                .unwrap()
                .to_string(),
        );
    }
    made.sort();

    let first = ec2
        .describe_subnets()
        .filters(filter("vpc-id", &vpc_id))
        .max_results(5)
        .send()
        .await
        .expect("first page");
    assert_eq!(first.subnets().len(), 5);
    let token = first.next_token().expect("a next token after 5 of 7");
    assert!(!token.is_empty());
    let second = ec2
        .describe_subnets()
        .filters(filter("vpc-id", &vpc_id))
        .max_results(5)
        .next_token(token)
        .send()
        .await
        .expect("second page");
    assert_eq!(second.subnets().len(), 2);
    assert_eq!(second.next_token(), None);
    let mut seen: Vec<_> = first
        .subnets()
        .iter()
        .chain(second.subnets())
        .filter_map(|s| s.subnet_id().map(str::to_string))
        .collect();
    seen.sort();
    assert_eq!(seen, made);

    let pages = ec2
        .describe_subnets()
        .filters(filter("vpc-id", &vpc_id))
        .max_results(5)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("paginate describe_subnets");
    assert_eq!(
        pages.iter().map(|p| p.subnets().len()).collect::<Vec<_>>(),
        [5, 2]
    );
    let mut paged: Vec<_> = pages
        .iter()
        .flat_map(|p| p.subnets())
        .filter_map(|s| s.subnet_id().map(str::to_string))
        .collect();
    paged.sort();
    assert_eq!(paged, made);

    // The item-level paginator flattens the pages the same way.
    let items = ec2
        .describe_subnets()
        .filters(filter("vpc-id", &vpc_id))
        .max_results(5)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("paginate describe_subnets items");
    assert_eq!(items.len(), 7);
}

#[tokio::test]
async fn error_codes_dry_run_signatures_and_sts() {
    let cove = Cove::start();
    let ec2 = cove.ec2();

    assert_error_code(
        ec2.describe_vpcs()
            .vpc_ids("vpc-0123456789abcdef0")
            .send()
            .await,
        "InvalidVpcID.NotFound",
    );

    let before = ec2.describe_vpcs().send().await.expect("describe_vpcs");
    let message = assert_error_code(
        ec2.create_vpc()
            .cidr_block("10.3.0.0/16")
            .dry_run(true)
            .send()
            .await,
        "DryRunOperation",
    );
    assert_eq!(
        message,
        "Request would have succeeded, but DryRun flag is set."
    );
    let after = ec2.describe_vpcs().send().await.expect("describe_vpcs");
    assert_eq!(
        after.vpcs().len(),
        before.vpcs().len(),
        "DryRun changed state"
    );

    let wrong_secret = cove.ec2_with(cove_sdk_tests::ACCESS_KEY, "not-the-secret");
    let message = assert_error_code(
        wrong_secret.describe_vpcs().send().await,
        "SignatureDoesNotMatch",
    );
    assert!(
        message.starts_with(
            "The request signature we calculated does not match the signature you provided."
        ),
        "{message}"
    );

    let identity = cove
        .sts()
        .get_caller_identity()
        .send()
        .await
        .expect("get_caller_identity");
    assert_eq!(identity.account(), Some(ACCOUNT_ID));
    assert_eq!(
        identity.arn(),
        Some(format!("arn:aws:iam::{ACCOUNT_ID}:root").as_str())
    );
}

#[tokio::test]
async fn nat_gateway_becomes_available_with_requester_managed_eni() {
    let cove = Cove::start();
    let ec2 = cove.ec2();

    let address = ec2
        .allocate_address()
        .domain(DomainType::Vpc)
        .send()
        .await
        .expect("allocate_address");
    let allocation_id = address.allocation_id().expect("allocation id").to_string();
    assert!(allocation_id.starts_with("eipalloc-"), "{allocation_id}");
    let public_ip = address.public_ip().expect("public ip").to_string();

    let vpc_id = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .expect("create_vpc")
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("vpc id")
        .to_string();
    let igw_id = ec2
        .create_internet_gateway()
        .send()
        .await
        .expect("create_internet_gateway")
        .internet_gateway()
        .and_then(|g| g.internet_gateway_id())
        .expect("igw id")
        .to_string();
    ec2.attach_internet_gateway()
        .internet_gateway_id(&igw_id)
        .vpc_id(&vpc_id)
        .send()
        .await
        .expect("attach_internet_gateway");
    let subnet_id = ec2
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block("10.0.1.0/24")
        .send()
        .await
        .expect("create_subnet")
        .subnet()
        .and_then(|s| s.subnet_id())
        .expect("subnet id")
        .to_string();

    let created = ec2
        .create_nat_gateway()
        .subnet_id(&subnet_id)
        .allocation_id(&allocation_id)
        .send()
        .await
        .expect("create_nat_gateway");
    let nat = created.nat_gateway().expect("CreateNatGateway returns it");
    let nat_id = nat.nat_gateway_id().expect("nat id").to_string();
    assert_eq!(nat.state(), Some(&NatGatewayState::Pending));

    let available = wait_nat_available(&ec2, &nat_id, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(available.vpc_id(), Some(vpc_id.as_str()));
    assert_eq!(available.subnet_id(), Some(subnet_id.as_str()));
    let nat_address = available
        .nat_gateway_addresses()
        .first()
        .expect("a NAT gateway address");
    assert_eq!(nat_address.allocation_id(), Some(allocation_id.as_str()));
    assert_eq!(nat_address.public_ip(), Some(public_ip.as_str()));
    let eni_id = nat_address
        .network_interface_id()
        .expect("the gateway's ENI")
        .to_string();

    let enis = ec2
        .describe_network_interfaces()
        .network_interface_ids(&eni_id)
        .send()
        .await
        .expect("describe_network_interfaces");
    let eni = enis.network_interfaces().first().expect("the ENI");
    assert_eq!(eni.requester_managed(), Some(true));
    assert_eq!(
        eni.interface_type().map(|t| t.as_str()),
        Some("nat_gateway")
    );
    assert_eq!(eni.subnet_id(), Some(subnet_id.as_str()));
}
