//! The simulated AWS region: its availability zones, the public addresses
//! of Cove's services and of the simulated internet (all in documentation
//! ranges, RFC 5737), and the managed prefix lists that point at them.

use crate::cidr::Cidr;

/// The regions of AWS's commercial partition that an account has without
/// asking (DescribeRegions' `opt-in-not-required`).
pub const REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-southeast-1",
    "ap-southeast-2",
    "sa-east-1",
];

/// The regions an AWS account must opt in to. Cove serves them as an
/// account that has opted in to all of them (`opted-in`).
pub const OPT_IN_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-south-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-west-1",
    "eu-central-2",
    "eu-south-1",
    "eu-south-2",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
];

/// Whether Cove serves `region`: any region of the commercial partition.
/// Any of them gets a default VPC per account the first time it is used.
pub fn is_known_region(region: &str) -> bool {
    REGIONS.contains(&region) || OPT_IN_REGIONS.contains(&region)
}

/// DescribeRegions' `OptInStatus` of a served region.
pub fn opt_in_status(region: &str) -> &'static str {
    if OPT_IN_REGIONS.contains(&region) {
        "opted-in"
    } else {
        "opt-in-not-required"
    }
}

/// Three zones per region, `a` to `c`, as a new AWS account sees at least.
pub const ZONE_SUFFIXES: &[char] = &['a', 'b', 'c'];

/// The short code AWS uses in zone ids (`use1-az1`, `apse3-az1`,
/// `usgw1-az1`): the area, each word of the location abbreviated
/// (`northeast` → `ne`, `central` → `c`, `gov` → `g`), and the number.
pub fn zone_id_prefix(region: &str) -> String {
    let parts: Vec<&str> = region.split('-').collect();
    let Some((area, rest)) = parts.split_first() else {
        return String::new();
    };
    let mut out = area.to_string();
    for word in rest {
        let short = match *word {
            "northeast" => "ne",
            "northwest" => "nw",
            "southeast" => "se",
            "southwest" => "sw",
            w if w.bytes().all(|b| b.is_ascii_digit()) => w,
            w => &w[..w.len().min(1)],
        };
        out.push_str(short);
    }
    out
}

/// (zone name, zone id) pairs of a region.
pub fn zones(region: &str) -> Vec<(String, String)> {
    let prefix = zone_id_prefix(region);
    ZONE_SUFFIXES
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("{region}{s}"), format!("{prefix}-az{}", i + 1)))
        .collect()
}

/// Where the public addresses of Cove's own services live (TEST-NET-1).
pub const SERVICES_CIDR: Cidr = Cidr::from_octets([192, 0, 2, 0], 24);
/// S3's public addresses: the CIDR of the `com.amazonaws.<region>.s3` prefix list.
pub const S3_CIDR: Cidr = Cidr::from_octets([192, 0, 2, 16], 28);
/// The address Cove's S3 listens on in the region network (inside S3_CIDR).
pub const S3_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 0, 2, 20);
/// The simulated internet host (TEST-NET-3) in the region network, reachable
/// only through gateways.
pub const INTERNET_HOST: std::net::Ipv4Addr = std::net::Ipv4Addr::new(203, 0, 113, 10);
/// Where public DNS names resolve inside a VPC (TEST-NET-3): Cove's
/// simulated web, which serves a package index, reachable only through
/// gateways as the real internet is.
pub const WEB_HOST: std::net::Ipv4Addr = std::net::Ipv4Addr::new(203, 0, 113, 11);
/// Elastic IPs are allocated from TEST-NET-2 and TEST-NET-3.
pub const ELASTIC_IP_POOLS: &[Cidr] = &[
    Cidr::from_octets([198, 51, 100, 0], 24),
    Cidr::from_octets([203, 0, 113, 0], 24),
];
/// The first host number used in each Elastic IP pool (lower ones stay free for
/// the simulated internet's own hosts).
pub const ELASTIC_IP_FIRST_HOST: u32 = 16;

/// Whether `name` (normalized) is a name of the public internet: at least
/// two labels of letters, digits and hyphens, outside the reserved and
/// private suffixes and outside `amazonaws.com` (whose names Cove answers
/// itself or not at all).
pub fn is_public_name(name: &str) -> bool {
    const NOT_PUBLIC: &[&str] = &[
        "test",
        "invalid",
        "localhost",
        "example",
        "internal",
        "local",
        "arpa",
        "amazonaws.com",
    ];
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_alphabetic()))
        && !NOT_PUBLIC
            .iter()
            .any(|s| name == *s || name.ends_with(&format!(".{s}")))
}

/// The AWS-managed prefix lists of a region: (id, name, CIDRs).
pub fn prefix_lists(region: &str) -> Vec<(String, String, Vec<Cidr>)> {
    vec![(
        s3_prefix_list_id(region),
        format!("com.amazonaws.{region}.s3"),
        vec![S3_CIDR],
    )]
}

/// A stable `pl-` id per region (FNV-1a of the name), so routes and rules that
/// name it survive restarts and match across Cove installations.
pub fn s3_prefix_list_id(region: &str) -> String {
    format!(
        "pl-{:08x}",
        crate::ids::fnv32(&format!("com.amazonaws.{region}.s3"))
    )
}

/// The default VPC's CIDR and its per-zone /20 subnets, as AWS makes them.
pub const DEFAULT_VPC_CIDR: Cidr = Cidr::from_octets([172, 31, 0, 0], 16);

// why: `zone_index` indexes a region's zones (ZONE_SUFFIXES, three of them),
// so it fits u32 many times over.
#[allow(clippy::cast_possible_truncation)]
pub fn default_subnet_cidr(zone_index: usize) -> Cidr {
    Cidr {
        base: DEFAULT_VPC_CIDR.base + (zone_index as u32) * 4096,
        prefix: 20,
    }
}

/// The domain of private DNS names in a region (`ec2.internal` in us-east-1).
pub fn private_dns_domain(region: &str) -> String {
    if region == "us-east-1" {
        "ec2.internal".into()
    } else {
        format!("{region}.compute.internal")
    }
}

/// The private DNS name AWS gives an address (`ip-10-0-1-4.ec2.internal`).
pub fn private_dns_name(region: &str, ip: std::net::Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("ip-{a}-{b}-{c}-{d}.{}", private_dns_domain(region))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_id_prefixes_follow_aws_rule() {
        for (region, prefix) in [
            ("us-east-1", "use1"),
            ("us-west-2", "usw2"),
            ("ca-central-1", "cac1"),
            ("eu-north-1", "eun1"),
            ("ap-northeast-2", "apne2"),
            ("ap-southeast-3", "apse3"),
            ("sa-east-1", "sae1"),
            ("me-central-1", "mec1"),
            ("us-gov-west-1", "usgw1"),
        ] {
            assert_eq!(zone_id_prefix(region), prefix, "{region}");
        }
    }

    #[test]
    fn zones_and_names() {
        assert_eq!(
            zones("us-east-1")[0],
            ("us-east-1a".into(), "use1-az1".into())
        );
        assert_eq!(default_subnet_cidr(2).to_string(), "172.31.32.0/20");
        assert_eq!(
            private_dns_name("us-east-1", std::net::Ipv4Addr::new(10, 0, 1, 4)),
            "ip-10-0-1-4.ec2.internal"
        );
        assert_eq!(
            private_dns_name("eu-west-1", std::net::Ipv4Addr::new(10, 0, 1, 4)),
            "ip-10-0-1-4.eu-west-1.compute.internal"
        );
        assert_eq!(
            s3_prefix_list_id("us-east-1"),
            s3_prefix_list_id("us-east-1")
        );
        assert_ne!(
            s3_prefix_list_id("us-east-1"),
            s3_prefix_list_id("eu-west-1")
        );
    }
}
