//! Which DNS names Cove's service certificate must carry for a region, and
//! which region a TLS client means by the name it sends (SNI). Pure: both
//! come from the service table in `cove_model::services`, the same one the
//! VPC resolver answers from, so every name that resolves to a Cove listener
//! is covered by the certificate that listener presents.

use cove_model::services;

/// The SANs of the service certificate for `region`, sorted and unique:
/// every regional and global name of the APIs Cove serves
/// (`s3.<region>.amazonaws.com`, `sts.amazonaws.com`, …), a wildcard for
/// S3's virtual-hosted buckets (`*.s3.<region>.amazonaws.com`,
/// `*.s3.amazonaws.com`), and a wildcard for each interface endpoint's own
/// names (`*.logs.<region>.vpce.amazonaws.com` covers
/// `vpce-…-tag.logs…` and `vpce-…-tag-us-east-1a.logs…`).
pub fn certificate_names(region: &str) -> Vec<String> {
    let mut names = Vec::new();
    for host in services::service_hosts(region) {
        names.extend(host.names.iter().cloned());
        for suffix in &host.wildcard_suffixes {
            names.push(format!("*{suffix}"));
        }
    }
    for service in services::services(region) {
        // Only services Cove answers on (notebook and studio have no API here).
        if service.api.is_none() {
            continue;
        }
        if let Some(private) = &service.private_dns {
            names.push(private.clone());
        }
        names.push(format!("*.{}", service.base_dns));
    }
    names.sort();
    names.dedup();
    names
}

/// Whether a certificate name (`*.` wildcard allowed, one label only, as
/// RFC 6125 and every TLS client read it) covers `host`.
pub fn name_matches(pattern: &str, host: &str) -> bool {
    let host = normalize(host);
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

/// Whether any of `names` covers `host`.
pub fn covers(names: &[String], host: &str) -> bool {
    names.iter().any(|n| name_matches(n, host))
}

/// Lower case, without the trailing dot.
fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Shaped like an AWS region name: `us-east-1`, `ap-southeast-2`,
/// `us-gov-west-1` (lower-case words, then a number).
fn looks_like_region(label: &str) -> bool {
    let parts: Vec<&str> = label.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1]
            .parse::<u8>()
            .is_ok_and(|n| n > 0 && !parts[parts.len() - 1].starts_with('0'))
}

/// The region whose service certificate covers `host`, when `host` names one
/// region's service (`s3.eu-west-1.amazonaws.com`,
/// `bucket.s3.eu-west-1.amazonaws.com`,
/// `vpce-1-ab12cd34.logs.eu-west-1.vpce.amazonaws.com`). Global names
/// (`s3.amazonaws.com`, `sts.amazonaws.com`) and names Cove does not serve
/// give `None`: every region's certificate covers the former, none the latter.
pub fn region_of(host: &str) -> Option<String> {
    let host = normalize(host);
    let region = host.split('.').find(|l| looks_like_region(l))?;
    covers(&certificate_names(region), &host).then(|| region.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_of_us_east_1() {
        let names = certificate_names("us-east-1");
        for expected in [
            "s3.us-east-1.amazonaws.com",
            "*.s3.us-east-1.amazonaws.com",
            "s3.amazonaws.com",
            "*.s3.amazonaws.com",
            "ec2.us-east-1.amazonaws.com",
            "sts.us-east-1.amazonaws.com",
            "sts.amazonaws.com",
            "logs.us-east-1.amazonaws.com",
            "api.sagemaker.us-east-1.amazonaws.com",
            "runtime.sagemaker.us-east-1.amazonaws.com",
            "*.s3.us-east-1.vpce.amazonaws.com",
            "*.logs.us-east-1.vpce.amazonaws.com",
            "*.sts.us-east-1.vpce.amazonaws.com",
            "*.api.sagemaker.us-east-1.vpce.amazonaws.com",
            "*.runtime.sagemaker.us-east-1.vpce.amazonaws.com",
            "api.ecr.us-east-1.amazonaws.com",
            "*.dkr.ecr.us-east-1.amazonaws.com",
            "*.api.ecr.us-east-1.vpce.amazonaws.com",
            "*.dkr.ecr.us-east-1.vpce.amazonaws.com",
        ] {
            assert!(names.contains(&expected.to_string()), "{expected} missing");
        }
        // Nothing Cove does not answer on (notebook, studio), nothing doubled.
        assert!(!names.iter().any(|n| n.contains("sagemaker.aws")));
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(unique, names);
        assert_eq!(names.len(), 19, "{names:?}");
        // Every name is within amazonaws.com, the CA's name constraint.
        assert!(names.iter().all(|n| n.ends_with(".amazonaws.com")));
    }

    #[test]
    fn every_name_the_resolver_answers_with_a_service_address_is_covered() {
        for region in ["us-east-1", "eu-west-1"] {
            let names = certificate_names(region);
            for host in services::service_hosts(region) {
                for n in &host.names {
                    assert!(covers(&names, n), "{n}");
                }
                for s in &host.wildcard_suffixes {
                    assert!(covers(&names, &format!("my-bucket{s}")), "{s}");
                }
            }
            // An interface endpoint's own names, regional and zonal.
            for s in services::services(region)
                .iter()
                .filter(|s| s.api.is_some())
            {
                let zones = vec![format!("{region}a"), format!("{region}b")];
                for (dns, _) in services::endpoint_dns_names("vpce-0abc", &s.base_dns, &zones) {
                    assert!(covers(&names, &dns), "{dns}");
                }
            }
        }
    }

    #[test]
    fn wildcards_cover_one_label_only() {
        assert!(name_matches(
            "*.s3.us-east-1.amazonaws.com",
            "my-bucket.s3.us-east-1.amazonaws.com"
        ));
        assert!(name_matches(
            "*.s3.us-east-1.amazonaws.com",
            "My-Bucket.S3.us-east-1.amazonaws.com."
        ));
        // A bucket name with dots is not covered, as on AWS.
        assert!(!name_matches(
            "*.s3.us-east-1.amazonaws.com",
            "my.bucket.s3.us-east-1.amazonaws.com"
        ));
        assert!(!name_matches(
            "*.s3.us-east-1.amazonaws.com",
            "s3.us-east-1.amazonaws.com"
        ));
        assert!(!name_matches(
            "*.s3.us-east-1.amazonaws.com",
            ".s3.us-east-1.amazonaws.com"
        ));
        assert!(name_matches("sts.amazonaws.com", "STS.amazonaws.com"));
        assert!(!name_matches("sts.amazonaws.com", "xsts.amazonaws.com"));
    }

    #[test]
    fn the_region_a_client_means() {
        assert_eq!(
            region_of("s3.eu-west-1.amazonaws.com").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_of("bucket.s3.ap-southeast-2.amazonaws.com").as_deref(),
            Some("ap-southeast-2")
        );
        assert_eq!(
            region_of("vpce-1-ab12cd34-us-west-2a.logs.us-west-2.vpce.amazonaws.com").as_deref(),
            Some("us-west-2")
        );
        assert_eq!(
            region_of("runtime.sagemaker.us-gov-west-1.amazonaws.com").as_deref(),
            Some("us-gov-west-1")
        );
        // Global names belong to every region; others to none.
        assert_eq!(region_of("s3.amazonaws.com"), None);
        assert_eq!(region_of("sts.amazonaws.com"), None);
        assert_eq!(region_of("example.com"), None);
        assert_eq!(region_of("www.us-east-1.example.com"), None);
        assert_eq!(region_of("s3.us-east-01.amazonaws.com"), None);
        assert_eq!(region_of("s3.local-1.amazonaws.com"), None);
    }
}
