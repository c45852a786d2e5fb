//! Which requests are S3's, and which bucket a Host header names.
//!
//! Cove serves every AWS API on one port, so S3 must be told apart from the
//! others before the body is read: by the service in the SigV4 credential
//! scope, or by an S3 host name. Virtual-hosted-style names
//! (`<bucket>.s3.<region>.amazonaws.com`) carry the bucket; every other host
//! (an IP, `localhost`, Cove's own name) is path-style.

use s3s::host::{S3Host, VirtualHost};
use s3s::S3Result;

/// The service named in a SigV4 credential (`AKID/date/region/service/aws4_request`).
fn scope_service(credential: &str) -> Option<&str> {
    let mut parts = credential.split('/');
    let _key = parts.next()?;
    let _date = parts.next()?;
    let _region = parts.next()?;
    parts.next()
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The bucket (if any) and region (if any) an S3 host name carries, or None
/// when the host is not an S3 name. Accepts `s3.amazonaws.com`,
/// `s3.<region>.amazonaws.com` and both with a `<bucket>.` in front.
pub fn parse_s3_host(host: &str) -> Option<(Option<&str>, Option<&str>)> {
    let host = strip_port(host).trim_end_matches('.');
    let rest = host.strip_suffix(".amazonaws.com")?;
    // rest is [bucket.]s3[.region]
    let (front, region) = match rest.rsplit_once('.') {
        Some((front, last)) if last != "s3" => (front, Some(last)),
        _ => (rest, None),
    };
    if front == "s3" {
        return Some((None, region));
    }
    let bucket = front.strip_suffix(".s3")?;
    (!bucket.is_empty()).then_some((Some(bucket), region))
}

/// True when a request is for S3: its SigV4 scope names `s3` (Authorization
/// header or presigned `X-Amz-Credential`), it is signed with SigV2 (which
/// only S3 still accepts), or its Host is an S3 name.
pub fn is_s3_request(parts: &axum::http::request::Parts) -> bool {
    if let Some(auth) = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(cred) = auth
            .strip_prefix("AWS4-HMAC-SHA256")
            .and_then(|rest| rest.split("Credential=").nth(1))
        {
            let cred = cred.split([',', ' ']).next().unwrap_or_default();
            return scope_service(cred) == Some("s3");
        }
        if auth.starts_with("AWS ") {
            return true;
        }
    }
    if let Some(query) = parts.uri.query() {
        for (k, v) in form_pairs(query) {
            if k == "X-Amz-Credential" {
                return scope_service(&v) == Some("s3");
            }
            if k == "AWSAccessKeyId" {
                return true;
            }
        }
    }
    let host = parts
        .headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.host());
    host.is_some_and(|h| parse_s3_host(h).is_some())
}

fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (decode(k), decode(v))
    })
}

/// s3s's host parser for Cove: S3 names give virtual-hosted-style buckets,
/// anything else is path-style (s3s's own parsers would take an unknown
/// host for a bucket CNAME).
pub struct CoveHosts;

impl S3Host for CoveHosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        Ok(match parse_s3_host(host) {
            Some((bucket, region)) => {
                let mut vh = VirtualHost::new(host);
                if let Some(b) = bucket {
                    vh = vh.with_bucket(b);
                }
                if let Some(r) = region {
                    vh = vh.with_region(r);
                }
                vh
            }
            None => VirtualHost::new(host),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(auth: Option<&str>, uri: &str, host: Option<&str>) -> axum::http::request::Parts {
        let mut b = axum::http::Request::builder().uri(uri);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn host_names() {
        assert_eq!(parse_s3_host("s3.amazonaws.com"), Some((None, None)));
        assert_eq!(
            parse_s3_host("s3.us-east-1.amazonaws.com"),
            Some((None, Some("us-east-1")))
        );
        assert_eq!(
            parse_s3_host("my.bucket.s3.us-east-1.amazonaws.com:80"),
            Some((Some("my.bucket"), Some("us-east-1")))
        );
        assert_eq!(parse_s3_host("b.s3.amazonaws.com"), Some((Some("b"), None)));
        assert_eq!(parse_s3_host("sts.us-east-1.amazonaws.com"), None);
        assert_eq!(parse_s3_host("api.sagemaker.us-east-1.amazonaws.com"), None);
        assert_eq!(parse_s3_host("127.0.0.1:4747"), None);
        assert_eq!(parse_s3_host("amazonaws.com"), None);
    }

    #[test]
    fn recognises_s3_requests() {
        let s3 = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=abc";
        let ec2 = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=abc";
        assert!(is_s3_request(&parts(
            Some(s3),
            "/b/k",
            Some("127.0.0.1:4747")
        )));
        assert!(!is_s3_request(&parts(
            Some(ec2),
            "/",
            Some("127.0.0.1:4747")
        )));
        // A signature for another service wins over an S3-looking host.
        assert!(!is_s3_request(&parts(
            Some(ec2),
            "/",
            Some("s3.amazonaws.com")
        )));
        assert!(is_s3_request(&parts(Some("AWS AKID:sig"), "/b", None)));
        assert!(is_s3_request(&parts(
            None,
            "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=x",
            Some("127.0.0.1:4747")
        )));
        assert!(!is_s3_request(&parts(
            None,
            "/?X-Amz-Credential=AKID%2F20240101%2Fus-east-1%2Fsts%2Faws4_request",
            Some("127.0.0.1")
        )));
        assert!(is_s3_request(&parts(
            None,
            "/k",
            Some("b.s3.us-east-1.amazonaws.com")
        )));
        assert!(!is_s3_request(&parts(None, "/", Some("127.0.0.1:4747"))));
    }

    #[test]
    fn path_style_on_any_other_host() {
        let h = CoveHosts;
        let vh = h.parse_host_header("b.s3.us-east-1.amazonaws.com").unwrap();
        assert_eq!(vh.bucket(), Some("b"));
        assert_eq!(vh.region(), Some("us-east-1"));
        assert_eq!(
            h.parse_host_header("s3.amazonaws.com").unwrap().bucket(),
            None
        );
        assert_eq!(
            h.parse_host_header("localhost:4747").unwrap().bucket(),
            None
        );
        assert_eq!(h.parse_host_header("cove.internal").unwrap().bucket(), None);
    }
}
