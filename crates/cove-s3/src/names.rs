//! AWS's naming rules for general-purpose buckets, used both by s3s's path
//! parser (so a bad name never reaches a handler) and by CreateBucket.

use std::net::Ipv4Addr;

const RESERVED_PREFIXES: [&str; 3] = ["xn--", "sthree-", "amzn-s3-demo-"];
const RESERVED_SUFFIXES: [&str; 5] = ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];

/// Whether `name` is a valid bucket name for a new bucket in any region.
pub fn valid_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if !(3..=63).contains(&bytes.len()) {
        return false;
    }
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-';
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.iter().all(|b| allowed(*b))
        || !alnum(bytes[0])
        || !alnum(bytes[bytes.len() - 1])
        || name.contains("..")
        || name.parse::<Ipv4Addr>().is_ok()
    {
        return false;
    }
    !RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
        && !RESERVED_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Plugs the rules into s3s.
pub struct BucketNames;

impl s3s::validation::NameValidation for BucketNames {
    fn validate_bucket_name(&self, name: &str) -> bool {
        valid_bucket_name(name)
    }
}

#[cfg(test)]
mod tests {
    use super::valid_bucket_name;

    #[test]
    fn aws_examples() {
        for ok in [
            "docexamplebucket1",
            "log-delivery-march-2020",
            "my-hosted-content",
            "docexamplewebsite.com",
            "www.docexamplewebsite.com",
            "my.example.s3.bucket",
            "abc",
            "a23456789012345678901234567890123456789012345678901234567890123",
        ] {
            assert!(valid_bucket_name(ok), "{ok}");
        }
        for bad in [
            "doc_example_bucket",
            "DocExampleBucket",
            "doc-example-bucket-",
            "-doc",
            ".doc",
            "ab",
            "a234567890123456789012345678901234567890123456789012345678901234",
            "my..bucket",
            "192.168.5.4",
            "xn--bucket",
            "sthree-bucket",
            "amzn-s3-demo-bucket",
            "bucket-s3alias",
            "bucket--ol-s3",
            "bucket.mrap",
            "bucket--x-s3",
            "bucket--table-s3",
            "bücket",
            "",
        ] {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
    }
}
