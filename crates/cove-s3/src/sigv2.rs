//! The time window of SigV2 requests signed in the Authorization header
//! (`AWS <key>:<signature>`), which s3s does not check: AWS refuses one
//! whose `x-amz-date` (or, without it, `Date`) is more than 15 minutes from
//! its own clock, so a captured request cannot be replayed later. Presigned
//! SigV2 URLs carry `Expires`, which s3s checks.

use axum::http::request::Parts;
use std::time::{Duration, SystemTime};

/// AWS's window, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No date, or one that does not parse as an HTTP date.
    NoValidDate,
    /// The date is outside the window; `request_time` as sent.
    TooSkewed { request_time: String },
}

impl Refusal {
    /// The error document AWS answers with (HTTP 403), without its request id.
    pub fn error_xml(&self, now: SystemTime) -> String {
        match self {
            Refusal::NoValidDate => "<Error><Code>AccessDenied</Code><Message>AWS authentication requires a valid Date or x-amz-date header</Message></Error>".to_string(),
            Refusal::TooSkewed { request_time } => {
                let server_time = time::OffsetDateTime::from(now)
                    .replace_nanosecond(0)
                    .ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_default();
                format!(
                    "<Error><Code>RequestTimeTooSkewed</Code><Message>The difference between the request time and the current time is too large.</Message><RequestTime>{}</RequestTime><ServerTime>{server_time}</ServerTime><MaxAllowedSkewMilliseconds>{}</MaxAllowedSkewMilliseconds></Error>",
                    crate::errors::escape(request_time),
                    MAX_SKEW.as_millis()
                )
            }
        }
    }
}

/// `Ok` for anything but a header-signed SigV2 request, and for one whose
/// date is within the window of `now`.
pub fn check_time(parts: &Parts, now: SystemTime) -> Result<(), Refusal> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let signed_v2 = header("authorization").is_some_and(|a| a.starts_with("AWS "));
    if !signed_v2 {
        return Ok(());
    }
    let sent = header("x-amz-date")
        .or_else(|| header("date"))
        .ok_or(Refusal::NoValidDate)?;
    let at = httpdate::parse_http_date(sent).map_err(|_| Refusal::NoValidDate)?;
    let skew = at
        .duration_since(now)
        .or_else(|_| now.duration_since(at))
        .unwrap_or_default();
    if skew > MAX_SKEW {
        return Err(Refusal::TooSkewed {
            request_time: sent.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = axum::http::Request::builder().uri("/bucket/key");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn at(date: &str) -> SystemTime {
        httpdate::parse_http_date(date).unwrap()
    }

    #[test]
    fn a_sigv2_date_must_be_within_fifteen_minutes() {
        let now = at("Sat, 05 Dec 2026 05:30:00 GMT");
        let auth = ("authorization", "AWS AKID:c2lnbmF0dXJl");
        for ok in [
            "Sat, 05 Dec 2026 05:16:00 GMT",
            "Sat, 05 Dec 2026 05:44:59 GMT",
        ] {
            assert_eq!(
                check_time(&parts(&[auth, ("date", ok)]), now),
                Ok(()),
                "{ok}"
            );
        }
        let old = "Fri, 31 Oct 2025 05:30:00 GMT";
        assert_eq!(
            check_time(&parts(&[auth, ("date", old)]), now),
            Err(Refusal::TooSkewed {
                request_time: old.into()
            })
        );
        assert!(check_time(
            &parts(&[auth, ("date", "Sat, 05 Dec 2026 05:46:00 GMT")]),
            now
        )
        .is_err());
        // x-amz-date wins over Date, as AWS reads them.
        assert!(check_time(
            &parts(&[
                auth,
                ("date", "Sat, 05 Dec 2026 05:30:00 GMT"),
                ("x-amz-date", old)
            ]),
            now
        )
        .is_err());
        assert_eq!(check_time(&parts(&[auth]), now), Err(Refusal::NoValidDate));
        assert_eq!(
            check_time(&parts(&[auth, ("date", "yesterday")]), now),
            Err(Refusal::NoValidDate)
        );
        // Not SigV2: left to the SigV4 checks.
        assert_eq!(check_time(&parts(&[("date", old)]), now), Ok(()));
    }

    #[test]
    fn the_skew_error_names_both_times_and_the_limit() {
        let now = at("Sat, 05 Dec 2026 05:30:00 GMT");
        let xml = Refusal::TooSkewed {
            request_time: "Fri, 31 Oct 2025 05:30:00 GMT".into(),
        }
        .error_xml(now);
        assert!(xml.contains("<Code>RequestTimeTooSkewed</Code>"), "{xml}");
        assert!(
            xml.contains("<RequestTime>Fri, 31 Oct 2025 05:30:00 GMT</RequestTime>"),
            "{xml}"
        );
        assert!(
            xml.contains("<ServerTime>2026-12-05T05:30:00Z</ServerTime>"),
            "{xml}"
        );
        assert!(xml.contains("<MaxAllowedSkewMilliseconds>900000</MaxAllowedSkewMilliseconds>"));
    }
}
