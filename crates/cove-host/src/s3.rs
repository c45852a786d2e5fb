//! Moving job data between S3 and a job's instance, as SageMaker's agent
//! does: plain S3 REST calls signed with the execution role's session. The
//! caller runs these on a thread that entered the job's ENI namespace, so the
//! packets leave through the ENI and the VPC's routes, ACLs, security groups
//! and endpoint policies decide whether they arrive.

use cove_wire::sigv4;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// Characters SigV4 leaves unencoded in a URI: `A-Za-z0-9-_.~`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Debug)]
pub enum TransferError {
    /// Nothing answered: no route, a dropped packet, a refused connection.
    Network(String),
    /// S3 answered with an error.
    Service {
        status: u16,
        code: String,
        message: String,
    },
    Local(String),
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::Network(e) => write!(f, "network: {e}"),
            TransferError::Service {
                status,
                code,
                message,
            } => write!(f, "{code} ({status}): {message}"),
            TransferError::Local(e) => write!(f, "{e}"),
        }
    }
}

pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

/// A job's `FailureReason` for a failed transfer: `network_message` when S3
/// could not be reached, S3's own error otherwise.
pub fn transfer_failure(e: TransferError, network_message: &str) -> String {
    match e {
        TransferError::Network(_) => network_message.to_string(),
        TransferError::Service {
            status,
            code,
            message,
        } => format!("ClientError: {code} ({status}): {message}"),
        TransferError::Local(detail) => format!("ClientError: {detail}"),
    }
}

pub use cove_model::s3_uri::parse_s3_uri;

pub struct S3Client {
    agent: ureq::Agent,
    /// `host[:port]` of S3 as the instance reaches it.
    host: String,
    region: String,
    credentials: Credentials,
}

impl S3Client {
    pub fn new(
        host: &str,
        region: &str,
        credentials: Credentials,
        connect_timeout: Duration,
    ) -> S3Client {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(connect_timeout))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build();
        S3Client {
            agent: ureq::Agent::new_with_config(config),
            host: host.to_string(),
            region: region.to_string(),
            credentials,
        }
    }

    fn path(bucket: &str, key: &str) -> String {
        let key: Vec<String> = key
            .split('/')
            .map(|s| utf8_percent_encode(s, UNRESERVED).to_string())
            .collect();
        format!("/{bucket}/{}", key.join("/"))
    }

    /// The signed headers for one request (the body is sent unsigned, as S3 allows).
    fn signed_headers(&self, method: &str, path: &str, query: &str) -> Vec<(String, String)> {
        let mut headers = vec![
            ("host".to_string(), self.host.clone()),
            (
                "x-amz-content-sha256".to_string(),
                "UNSIGNED-PAYLOAD".to_string(),
            ),
        ];
        if let Some(token) = &self.credentials.session_token {
            headers.push(("x-amz-security-token".to_string(), token.clone()));
        }
        sigv4::sign_headers(
            &mut headers,
            method,
            path,
            query,
            "UNSIGNED-PAYLOAD",
            &self.credentials.access_key,
            &self.credentials.secret_key,
            &self.region,
            "s3",
        );
        // The HTTP client sets Host itself, from the URL.
        headers.retain(|(k, _)| k != "host");
        headers
    }

    fn url(&self, path: &str, query: &str) -> String {
        if query.is_empty() {
            format!("http://{}{path}", self.host)
        } else {
            format!("http://{}{path}?{query}", self.host)
        }
    }

    fn check(
        response: ureq::http::Response<ureq::Body>,
    ) -> Result<ureq::http::Response<ureq::Body>, TransferError> {
        let status = response.status().as_u16();
        if status < 300 {
            return Ok(response);
        }
        let mut body = String::new();
        let _ = response
            .into_body()
            .into_reader()
            .take(64 * 1024)
            .read_to_string(&mut body);
        Err(TransferError::Service {
            status,
            code: xml_text(&body, "Code").unwrap_or_else(|| format!("HTTP{status}")),
            message: xml_text(&body, "Message").unwrap_or_default(),
        })
    }

    fn network(e: ureq::Error) -> TransferError {
        TransferError::Network(e.to_string())
    }

    /// Every key under `prefix`, with its size, in key order.
    pub fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, u64)>, TransferError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("list-type".to_string(), "2".to_string()),
                ("prefix".to_string(), prefix.to_string()),
            ];
            if let Some(t) = &token {
                query.push(("continuation-token".to_string(), t.clone()));
            }
            query.sort();
            let query: String = query
                .iter()
                .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, UNRESERVED)))
                .collect::<Vec<_>>()
                .join("&");
            let path = format!("/{bucket}");
            let mut req = self.agent.get(&self.url(&path, &query));
            for (k, v) in self.signed_headers("GET", &path, &query) {
                req = req.header(k, v);
            }
            let response = Self::check(req.call().map_err(Self::network)?)?;
            let mut body = String::new();
            response
                .into_body()
                .into_reader()
                .read_to_string(&mut body)
                .map_err(|e| TransferError::Network(e.to_string()))?;
            for contents in body.split("<Contents>").skip(1) {
                let key = xml_text(contents, "Key").unwrap_or_default();
                let size = xml_text(contents, "Size")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                out.push((key, size));
            }
            token = match xml_text(&body, "IsTruncated").as_deref() {
                Some("true") => xml_text(&body, "NextContinuationToken"),
                _ => None,
            };
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Downloads one object into `dest` (written beside it, then renamed).
    pub fn get_to_file(&self, bucket: &str, key: &str, dest: &Path) -> Result<u64, TransferError> {
        let path = Self::path(bucket, key);
        let mut req = self.agent.get(&self.url(&path, ""));
        for (k, v) in self.signed_headers("GET", &path, "") {
            req = req.header(k, v);
        }
        let response = Self::check(req.call().map_err(Self::network)?)?;
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| TransferError::Local(e.to_string()))?;
        }
        let partial = dest.with_extension("cove-partial");
        let mut file =
            std::fs::File::create(&partial).map_err(|e| TransferError::Local(e.to_string()))?;
        let n = std::io::copy(&mut response.into_body().into_reader(), &mut file)
            .map_err(|e| TransferError::Network(e.to_string()))?;
        std::fs::rename(&partial, dest).map_err(|e| TransferError::Local(e.to_string()))?;
        Ok(n)
    }

    /// Uploads a file as one object.
    pub fn put_file(&self, bucket: &str, key: &str, src: &Path) -> Result<u64, TransferError> {
        let path = Self::path(bucket, key);
        let mut file = std::fs::File::open(src).map_err(|e| TransferError::Local(e.to_string()))?;
        let len = file
            .metadata()
            .map_err(|e| TransferError::Local(e.to_string()))?
            .len();
        let mut req = self.agent.put(&self.url(&path, ""));
        for (k, v) in self.signed_headers("PUT", &path, "") {
            req = req.header(k, v);
        }
        req = req.header("content-length", len.to_string());
        let response = req
            .send(ureq::SendBody::from_reader(&mut file))
            .map_err(Self::network)?;
        Self::check(response)?;
        Ok(len)
    }
}

/// The unescaped text of the first `<tag>…</tag>` in `xml`.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// Runs `f` on a new thread with an S3 client that reaches S3 the way a
/// host in `netns` does (from inside that namespace, so through its ENI and
/// its VPC's routes), or through Cove's own listener outside a VPC.
pub fn spawn_in_network<T: Send + 'static>(
    settings: &crate::Settings,
    region: &str,
    netns: Option<String>,
    session: Option<&cove_model::jobs::StsSession>,
    f: impl FnOnce(&S3Client) -> Result<T, TransferError> + Send + 'static,
) -> std::thread::JoinHandle<Result<T, TransferError>> {
    let endpoint = match &netns {
        Some(_) => {
            cove_model::services::public_address(region, &format!("s3.{region}.amazonaws.com"))
                .map(|a| a.to_string())
                .unwrap_or_default()
        }
        None => settings.local_s3.clone(),
    };
    let credentials = Credentials {
        access_key: session.map(|s| s.access_key_id.clone()).unwrap_or_default(),
        secret_key: session
            .map(|s| s.secret_access_key.clone())
            .unwrap_or_default(),
        session_token: session.map(|s| s.session_token.clone()),
    };
    let timeout = settings.connect_timeout;
    let region = region.to_string();
    std::thread::spawn(move || {
        let work = move || {
            let client = S3Client::new(&endpoint, &region, credentials, timeout);
            f(&client)
        };
        match netns {
            Some(ns) => cove_net::netns::run_in(&ns, work)
                .unwrap_or_else(|e| Err(TransferError::Network(e.to_string()))),
            None => work(),
        }
    })
}

/// What a transfer thread from [`spawn_in_network`] ended with, once it has:
/// a panic in it counts as a local failure.
pub fn joined<T>(
    thread: std::thread::JoinHandle<Result<T, TransferError>>,
) -> Result<T, TransferError> {
    thread
        .join()
        .unwrap_or_else(|_| Err(TransferError::Local("the transfer thread panicked".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_per_segment() {
        assert_eq!(S3Client::path("b", "a b/c+d.txt"), "/b/a%20b/c%2Bd.txt");
    }

    #[test]
    fn xml_text_unescapes() {
        let body = "<Error><Code>AccessDenied</Code><Message>a &amp; b</Message></Error>";
        assert_eq!(xml_text(body, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(xml_text(body, "Message").as_deref(), Some("a & b"));
    }
}
