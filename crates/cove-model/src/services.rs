//! The AWS services of a simulated region as a network sees them: the
//! endpoint-service catalogue (what `DescribeVpcEndpointServices` lists and
//! what an interface endpoint can reach), each served API's public address in
//! the region network with its DNS names, and the DNS names AWS gives an
//! interface endpoint. EC2, the data plane and the VPC resolver all read this
//! one table, so a name resolves to the address something really listens on.

use crate::ids::{fnv32, fnv64};
use crate::vpc::EndpointType;
use std::net::Ipv4Addr;

/// One endpoint service offered in a region, for one endpoint type (S3 is
/// offered twice, as a gateway and as an interface service, like AWS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub name: String,
    pub service_type: EndpointType,
    /// The suffix of the endpoint-specific DNS names
    /// (`api.sagemaker.us-east-1.vpce.amazonaws.com`).
    pub base_dns: String,
    /// The service's own name, answered by the endpoint with private DNS.
    pub private_dns: Option<String>,
    /// The API behind it, when Cove serves one, named by its endpoint
    /// prefix (`ec2`, `api.sagemaker`, `runtime.sagemaker`…).
    pub api: Option<&'static str>,
}

impl ServiceEntry {
    /// A stable `vpce-svc-` id per service and type (FNV-1a).
    pub fn service_id(&self) -> String {
        format!(
            "vpce-svc-{:017x}",
            fnv64(&format!("{}/{}", self.name, self.service_type)) & 0xfffffffffffffff
        )
    }
}

/// The endpoint services of a region, sorted by name then type.
pub fn services(region: &str) -> Vec<ServiceEntry> {
    let amazon = |svc: &str, short: &str, t: EndpointType, private: bool, api| ServiceEntry {
        name: format!("com.amazonaws.{region}.{svc}"),
        service_type: t,
        base_dns: format!("{short}.{region}.vpce.amazonaws.com"),
        private_dns: private.then(|| format!("{short}.{region}.amazonaws.com")),
        api: Some(api),
    };
    let sagemaker = |app: &str| ServiceEntry {
        name: format!("aws.sagemaker.{region}.{app}"),
        service_type: EndpointType::Interface,
        base_dns: format!("{app}.{region}.vpce.sagemaker.aws"),
        private_dns: Some(format!("*.{app}.{region}.sagemaker.aws")),
        api: None,
    };
    let mut out = vec![
        amazon("s3", "s3", EndpointType::Gateway, false, "s3"),
        amazon("s3", "s3", EndpointType::Interface, false, "s3"),
        amazon(
            "sagemaker.api",
            "api.sagemaker",
            EndpointType::Interface,
            true,
            "api.sagemaker",
        ),
        amazon(
            "sagemaker.runtime",
            "runtime.sagemaker",
            EndpointType::Interface,
            true,
            "runtime.sagemaker",
        ),
        amazon("logs", "logs", EndpointType::Interface, true, "logs"),
        amazon(
            "ecr.api",
            "api.ecr",
            EndpointType::Interface,
            true,
            "api.ecr",
        ),
        ServiceEntry {
            // The registry's names carry the account: the private name is a wildcard.
            private_dns: Some(format!("*.dkr.ecr.{region}.amazonaws.com")),
            ..amazon(
                "ecr.dkr",
                "dkr.ecr",
                EndpointType::Interface,
                true,
                "dkr.ecr",
            )
        },
        amazon("sts", "sts", EndpointType::Interface, true, "sts"),
        sagemaker("notebook"),
        sagemaker("studio"),
    ];
    out.sort_by(|a, b| (&a.name, a.service_type).cmp(&(&b.name, b.service_type)));
    out
}

/// The SigV4 signing name of an API named by its endpoint prefix: SageMaker's
/// API and its Runtime are two endpoints that sign as `sagemaker`; ECR's API
/// signs as `ecr` (its registry, `dkr.ecr`, takes no signatures).
pub fn signing_name_of(api: &str) -> &str {
    match api {
        "api.sagemaker" | "runtime.sagemaker" => "sagemaker",
        "api.ecr" | "dkr.ecr" => "ecr",
        other => other,
    }
}

/// Whether `name` is covered by a private DNS name, which may be a
/// one-label wildcard (`*.dkr.ecr.us-east-1.amazonaws.com`).
pub fn private_dns_matches(private_dns: &str, name: &str) -> bool {
    match private_dns.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => private_dns == name,
    }
}

/// The catalogue entry for a service name and endpoint type.
pub fn service_for(region: &str, name: &str, service_type: EndpointType) -> Option<ServiceEntry> {
    services(region)
        .into_iter()
        .find(|s| s.name == name && s.service_type == service_type)
}

/// The 8-hex-digit tag AWS puts in an endpoint's DNS names.
fn endpoint_tag(endpoint_id: &str) -> String {
    format!("{:08x}", fnv32(endpoint_id))
}

/// An interface endpoint's own DNS names: the regional one, then one per zone
/// (`vpce-…-tag.<base>`, `vpce-…-tag-us-east-1a.<base>`), each with the zone
/// it is limited to.
pub fn endpoint_dns_names(
    endpoint_id: &str,
    base_dns: &str,
    zones: &[String],
) -> Vec<(String, Option<String>)> {
    let tag = endpoint_tag(endpoint_id);
    let mut out = vec![(format!("{endpoint_id}-{tag}.{base_dns}"), None)];
    for z in zones {
        out.push((
            format!("{endpoint_id}-{tag}-{z}.{base_dns}"),
            Some(z.clone()),
        ));
    }
    out
}

/// An API Cove serves at a public address of the region network (TEST-NET-1),
/// the way AWS's regional endpoints are public addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHost {
    /// The API the listener serves, named by its endpoint prefix.
    pub api: &'static str,
    pub address: Ipv4Addr,
    /// Exact DNS names that resolve to the address.
    pub names: Vec<String>,
    /// Suffixes whose every subdomain resolves to it (S3's virtual-hosted buckets).
    pub wildcard_suffixes: Vec<String>,
}

/// The public service addresses and names of a region.
pub fn service_hosts(region: &str) -> Vec<ServiceHost> {
    let host = |api, last: u8, names: Vec<String>, wildcards: Vec<String>| ServiceHost {
        api,
        address: Ipv4Addr::new(192, 0, 2, last),
        names,
        wildcard_suffixes: wildcards,
    };
    vec![
        host(
            "ec2",
            10,
            vec![format!("ec2.{region}.amazonaws.com")],
            vec![],
        ),
        host(
            "sts",
            11,
            vec![
                format!("sts.{region}.amazonaws.com"),
                "sts.amazonaws.com".into(),
            ],
            vec![],
        ),
        host(
            "logs",
            12,
            vec![format!("logs.{region}.amazonaws.com")],
            vec![],
        ),
        host(
            "api.sagemaker",
            13,
            vec![format!("api.sagemaker.{region}.amazonaws.com")],
            vec![],
        ),
        host(
            "runtime.sagemaker",
            14,
            vec![format!("runtime.sagemaker.{region}.amazonaws.com")],
            vec![],
        ),
        host(
            "api.ecr",
            8,
            vec![format!("api.ecr.{region}.amazonaws.com")],
            vec![],
        ),
        host(
            "dkr.ecr",
            9,
            vec![],
            vec![format!(".dkr.ecr.{region}.amazonaws.com")],
        ),
        host(
            "s3",
            20,
            vec![
                format!("s3.{region}.amazonaws.com"),
                "s3.amazonaws.com".into(),
            ],
            vec![
                format!(".s3.{region}.amazonaws.com"),
                ".s3.amazonaws.com".into(),
            ],
        ),
    ]
}

/// The public address a DNS name of the region resolves to, if it names one of Cove's services.
pub fn public_address(region: &str, name: &str) -> Option<Ipv4Addr> {
    service_hosts(region)
        .into_iter()
        .find(|h| {
            h.names.iter().any(|n| n == name)
                || h.wildcard_suffixes
                    .iter()
                    .any(|s| name.ends_with(s.as_str()))
        })
        .map(|h| h.address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::{S3_ADDRESS, S3_CIDR};

    #[test]
    fn service_addresses_are_in_the_services_range_and_s3_in_its_prefix_list() {
        let hosts = service_hosts("us-east-1");
        let s3 = hosts.iter().find(|h| h.api == "s3").unwrap();
        assert_eq!(s3.address, S3_ADDRESS);
        let cidr = S3_CIDR;
        assert!(cidr.contains_addr(s3.address));
        let mut addrs: Vec<Ipv4Addr> = hosts.iter().map(|h| h.address).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), hosts.len(), "one address per listener");
        assert_eq!(
            public_address("us-east-1", "my-bucket.s3.us-east-1.amazonaws.com"),
            Some(s3.address)
        );
        assert_eq!(
            public_address("us-east-1", "runtime.sagemaker.us-east-1.amazonaws.com"),
            Some(Ipv4Addr::new(192, 0, 2, 14))
        );
        assert_eq!(public_address("us-east-1", "example.com"), None);
        assert_eq!(
            public_address("us-east-1", "s3.eu-west-1.amazonaws.com"),
            None
        );
    }

    #[test]
    fn every_private_dns_name_with_an_api_has_a_public_address() {
        for s in services("eu-west-1") {
            if let (Some(dns), Some(_)) = (&s.private_dns, s.api) {
                assert!(public_address("eu-west-1", dns).is_some(), "{dns}");
            }
        }
    }

    #[test]
    fn endpoint_names() {
        let names = endpoint_dns_names(
            "vpce-0123",
            "logs.us-east-1.vpce.amazonaws.com",
            &["us-east-1a".to_string()],
        );
        let tag = endpoint_tag("vpce-0123");
        assert_eq!(
            names,
            vec![
                (
                    format!("vpce-0123-{tag}.logs.us-east-1.vpce.amazonaws.com"),
                    None
                ),
                (
                    format!("vpce-0123-{tag}-us-east-1a.logs.us-east-1.vpce.amazonaws.com"),
                    Some("us-east-1a".into())
                ),
            ]
        );
    }
}
