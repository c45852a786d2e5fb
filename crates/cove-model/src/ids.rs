//! AWS-style resource ids (`vpc-0a1b2c3d4e5f67890`) and request ids.

use rand::Rng;

/// 32-bit FNV-1a: stable names and ids derived from other names (prefix-list
/// ids, endpoint DNS tags, link addresses, instance tags).
pub fn fnv32(s: &str) -> u32 {
    s.bytes().fold(0x811c9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x01000193)
    })
}

/// 64-bit FNV-1a, for stable ids with AWS's 17 hex digits.
pub fn fnv64(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// A new id with AWS's long format: the prefix, a dash and 17 hex digits.
pub fn new_id(prefix: &str) -> String {
    let mut rng = rand::thread_rng();
    let n: u128 = rng.gen();
    format!("{prefix}-{:017x}", n & ((1u128 << 68) - 1))
}

/// The resource kind an id names, from its prefix (`subnet-…` → `subnet`).
pub fn prefix_of(id: &str) -> &str {
    id.rsplit_once('-').map(|(p, _)| p).unwrap_or(id)
}

/// A locally administered unicast MAC address, as ENIs report.
pub fn new_mac() -> String {
    let mut rng = rand::thread_rng();
    let b: [u8; 5] = rng.gen();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

/// `len` random characters from `alphabet`, for keys and tokens.
pub fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

pub const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
pub const SECRET_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The current time as RFC 3339, the form handlers keep timestamps in.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A Unix time (seconds) as RFC 3339; empty if out of range.
pub fn rfc3339_of(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The account part of an ARN (`arn:aws:<service>:<region>:<account>:…`);
/// empty for a string that is not one.
pub fn arn_account(arn: &str) -> &str {
    arn.split(':').nth(4).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_aws_long_format() {
        let id = new_id("vpc");
        assert!(id.starts_with("vpc-"));
        assert_eq!(id.len(), 4 + 17);
        assert!(id[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(new_id("vpc"), new_id("vpc"));
        assert_eq!(prefix_of("subnet-0123"), "subnet");
        assert_eq!(prefix_of("vpc-endpoint-x"), "vpc-endpoint");
    }

    #[test]
    fn mac_is_locally_administered() {
        let m = new_mac();
        assert!(m.starts_with("02:"));
        assert_eq!(m.len(), 17);
    }
}
