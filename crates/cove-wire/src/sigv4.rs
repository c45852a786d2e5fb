//! AWS Signature Version 4: parsing the `Authorization` header, building the
//! canonical request, and computing signatures. The same code verifies what
//! clients send and signs what Cove's own tests and benchmark send, so the two
//! can never disagree about canonical form.

use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The `X-Amz-Date` form: `20150830T123600Z`.
pub const AMZ_DATE: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");

/// The current time in the `X-Amz-Date` form, for clients that sign.
pub fn amz_date_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(AMZ_DATE)
        .expect("the AMZ_DATE format has no fallible parts")
}

/// SigV4's encoding: everything but unreserved characters is percent-encoded.
const URI_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
const URI_ENCODE_PATH: &AsciiSet = &URI_ENCODE.remove(b'/');

/// The parts of a SigV4 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key: String,
    /// `YYYYMMDD` from the credential scope.
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl Authorization {
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// Parses `AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/ec2/aws4_request, SignedHeaders=a;b, Signature=hex`.
pub fn parse_authorization(header: &str) -> Option<Authorization> {
    let rest = header.trim().strip_prefix(ALGORITHM)?.trim_start();
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let mut scope = credential?.split('/');
    let access_key = scope.next()?.to_string();
    let date = scope.next()?.to_string();
    let region = scope.next()?.to_string();
    let service = scope.next()?.to_string();
    if scope.next()? != "aws4_request" || scope.next().is_some() {
        return None;
    }
    let signed_headers: Vec<String> = signed?.split(';').map(|h| h.to_ascii_lowercase()).collect();
    let signature = signature?.to_string();
    if access_key.is_empty() || date.len() != 8 || signed_headers.iter().any(|h| h.is_empty()) {
        return None;
    }
    Some(Authorization {
        access_key,
        date,
        region,
        service,
        signed_headers,
        signature,
    })
}

/// What the canonical request is built from.
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path exactly as it arrived, still percent-encoded.
    pub raw_path: &'a str,
    /// The query string as it arrived, without the `?`.
    pub raw_query: &'a str,
    /// Header names (any case) and values, repeated names allowed.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the payload (or the `x-amz-content-sha256` value).
    pub payload_hash: &'a str,
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn canonical_query(raw_query: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_decode_str(&s.replace('+', "%20"))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .filter(|(k, _)| k != "X-Amz-Signature")
        .map(|(k, v)| {
            (
                utf8_percent_encode(&k, URI_ENCODE).to_string(),
                utf8_percent_encode(&v, URI_ENCODE).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The canonical URI: S3 signs the path as sent, every other service signs it
/// encoded once more (and an empty path is `/`).
fn canonical_uri(raw_path: &str, service: &str) -> String {
    let path = if raw_path.is_empty() { "/" } else { raw_path };
    if service == "s3" {
        path.to_string()
    } else {
        utf8_percent_encode(path, URI_ENCODE_PATH).to_string()
    }
}

pub fn canonical_request(
    parts: &RequestParts<'_>,
    service: &str,
    signed_headers: &[String],
) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(parts.method);
    out.push('\n');
    out.push_str(&canonical_uri(parts.raw_path, service));
    out.push('\n');
    out.push_str(&canonical_query(parts.raw_query));
    out.push('\n');
    for name in signed_headers {
        let values: Vec<String> = parts
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(parts.payload_hash);
    out
}

/// The hex signature of a canonical request under `secret`.
pub fn signature(
    secret: &str,
    amz_date: &str,
    auth_scope: &Authorization,
    canonical: &str,
) -> String {
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        auth_scope.scope(),
        sha256_hex(canonical.as_bytes())
    );
    let k_date = hmac(
        format!("AWS4{secret}").as_bytes(),
        auth_scope.date.as_bytes(),
    );
    let k_region = hmac(&k_date, auth_scope.region.as_bytes());
    let k_service = hmac(&k_region, auth_scope.service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    hex::encode(hmac(&k_signing, string_to_sign.as_bytes()))
}

/// Compares signatures in constant time.
pub fn signatures_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Signs a request: returns the `Authorization` header value. `headers` must
/// already hold `host` and `x-amz-date`; every header given is signed.
pub fn sign(
    parts: &RequestParts<'_>,
    access_key: &str,
    secret: &str,
    region: &str,
    service: &str,
    amz_date: &str,
) -> String {
    let mut names: Vec<String> = parts
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    let auth = Authorization {
        access_key: access_key.to_string(),
        date: amz_date[..8].to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers: names,
        signature: String::new(),
    };
    let canonical = canonical_request(parts, service, &auth.signed_headers);
    let sig = signature(secret, amz_date, &auth, &canonical);
    format!(
        "{ALGORITHM} Credential={access_key}/{}, SignedHeaders={}, Signature={sig}",
        auth.scope(),
        auth.signed_headers.join(";")
    )
}

/// Signs a client's request in place: adds `x-amz-date` (now) and
/// `authorization` to `headers`, which must already hold `host` and every
/// other header to sign.
#[allow(clippy::too_many_arguments)]
pub fn sign_headers(
    headers: &mut Vec<(String, String)>,
    method: &str,
    raw_path: &str,
    raw_query: &str,
    payload_hash: &str,
    access_key: &str,
    secret: &str,
    region: &str,
    service: &str,
) {
    let amz_date = amz_date_now();
    headers.push(("x-amz-date".to_string(), amz_date.clone()));
    let parts = RequestParts {
        method,
        raw_path,
        raw_query,
        headers,
        payload_hash,
    };
    let auth = sign(&parts, access_key, secret, region, service, &amz_date);
    headers.push(("authorization".to_string(), auth));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `get-vanilla-query-order-key-case` case of AWS's SigV4 test suite
    /// (credentials and expected signature as the suite documents them).
    #[test]
    fn matches_the_aws_test_suite_vector() {
        let headers = vec![
            ("Host".to_string(), "example.amazonaws.com".to_string()),
            ("X-Amz-Date".to_string(), "20150830T123600Z".to_string()),
        ];
        let parts = RequestParts {
            method: "GET",
            raw_path: "/",
            raw_query: "Param2=value2&Param1=value1",
            headers: &headers,
            payload_hash: &sha256_hex(b""),
        };
        let header = sign(
            &parts,
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "us-east-1",
            "service",
            "20150830T123600Z",
        );
        assert!(
            header.ends_with(
                "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
            ),
            "{header}"
        );
        let parsed = parse_authorization(&header).unwrap();
        assert_eq!(parsed.service, "service");
        assert_eq!(parsed.signed_headers, vec!["host", "x-amz-date"]);
    }

    #[test]
    fn rejects_malformed_headers() {
        for bad in [
            "",
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA256 Credential=AK/2015/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/ec2/other, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/ec2/aws4_request, Signature=00",
            "Basic dXNlcjpwYXNz",
        ] {
            assert!(parse_authorization(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn query_is_sorted_and_reencoded() {
        assert_eq!(canonical_query("b=2&a=%2F&a=1&c"), "a=%2F&a=1&b=2&c=");
        assert_eq!(canonical_query("k=a b"), "k=a%20b");
        assert_eq!(canonical_uri("/a b/%2F", "ec2"), "/a%20b/%252F");
        assert_eq!(canonical_uri("/a%20b", "s3"), "/a%20b");
    }
}
