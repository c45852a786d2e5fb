//! S3 for Cove: the S3 REST API (through the `s3s` protocol layer) over
//! durable storage on local disk, with SigV4 authentication against Cove's
//! credentials and the two policies that decide who reaches data from where,
//! the bucket policy and the VPC endpoint policy. The request's network
//! origin (which gateway endpoint it came through, or its public source
//! address) is what makes `aws:SourceVpce`-style rules enforceable, and Cove's
//! data plane is what makes that origin trustworthy.
//!
//! Cove's server recognises S3 requests with [`is_s3_request`], computes the
//! origin with [`origin::s3_origin`] and hands the request to
//! [`S3Front::handle`].

pub mod access;
pub mod control;
pub mod errors;
pub mod host;
pub mod listing;
pub mod names;
pub mod origin;
pub use cove_model::policy;
mod quiet;
mod service;
pub mod sigv2;
pub mod storage;

pub use origin::{s3_origin, S3Origin};

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use cove_wire::dispatch::CredentialLookup;
use s3s::service::{S3Service, S3ServiceBuilder};
use std::path::Path;
use std::sync::Arc;
use tracing::instrument::WithSubscriber as _;

/// Error bodies are small; anything larger is not one of ours to rewrite.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Cove's S3 endpoint: one per server, shared by every listener.
#[derive(Clone)]
pub struct S3Front {
    service: S3Service,
    storage: Arc<storage::Storage>,
    logs: tracing::Dispatch,
}

/// True when a request is for S3 (see [`host::is_s3_request`]).
pub fn is_s3_request(parts: &axum::http::request::Parts) -> bool {
    host::is_s3_request(parts)
}

impl S3Front {
    /// A bucket call Cove makes itself as `account` (see [`control`]).
    /// Blocking (SQLite); call it from a blocking thread.
    pub fn call_as(
        &self,
        account: &str,
        region: &str,
        operation: &str,
        input: &serde_json::Value,
    ) -> cove_model::AwsResult<serde_json::Value> {
        control::call(&self.storage, account, region, operation, input)
    }

    /// A bucket's policy document, if it has one.
    pub fn bucket_policy(&self, bucket: &str) -> Option<String> {
        self.storage.bucket(bucket).ok().and_then(|b| b.policy)
    }

    /// Opens the S3 data under `dir` (created if missing), its metadata in
    /// `dir/s3.db`, or in the shared PostgreSQL at `shared_metadata` (API
    /// replicas, which then all share `dir`). `credentials`
    /// finds the principal for an access key, as for every other service;
    /// `identity` the identity policies that limit a principal (see
    /// [`access::no_identity_policies`] when IAM is not enforced).
    pub fn open(
        dir: &Path,
        shared_metadata: Option<&str>,
        account_id: &str,
        region: &str,
        credentials: CredentialLookup,
        identity: access::IdentityLookup,
    ) -> anyhow::Result<S3Front> {
        let storage = Arc::new(match shared_metadata {
            Some(url) => storage::Storage::open_shared(dir, url)?,
            None => storage::Storage::open(dir)?,
        });
        storage
            .adopt_unowned_buckets(account_id)
            .map_err(|e| anyhow::anyhow!("adopting buckets: {e:?}"))?;
        let mut builder = S3ServiceBuilder::new(service::CoveS3 {
            storage: storage.clone(),
            region: region.to_string(),
            account_id: account_id.to_string(),
        });
        builder.set_host(host::CoveHosts);
        builder.set_validation(names::BucketNames);
        builder.set_auth(access::Auth {
            credentials: credentials.clone(),
        });
        builder.set_access(access::Access {
            credentials,
            region: region.to_string(),
            storage: storage.clone(),
            identity,
        });
        Ok(S3Front {
            service: builder.build(),
            storage,
            logs: quiet::QuietS3s::dispatch(),
        })
    }

    /// True when a request is for S3 (see [`host::is_s3_request`]).
    pub fn is_s3_request(parts: &axum::http::request::Parts) -> bool {
        host::is_s3_request(parts)
    }

    /// Serves one S3 request that arrived from `origin`. Bodies stream in
    /// both directions.
    pub async fn handle(&self, req: Request<Body>, origin: S3Origin) -> Response<Body> {
        let request_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_ascii_uppercase();
        let (mut parts, body) = req.into_parts();
        if let Err(refusal) = sigv2::check_time(&parts, std::time::SystemTime::now()) {
            let xml = refusal.error_xml(std::time::SystemTime::now());
            let xml = xml.replace(
                "</Error>",
                &format!("<RequestId>{request_id}</RequestId></Error>"),
            );
            return Response::builder()
                .status(StatusCode::FORBIDDEN)
                .header("content-type", "application/xml")
                .header("x-amz-request-id", &request_id)
                .body(Body::from(format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{xml}"
                )))
                .expect("static response");
        }
        parts.extensions.insert(origin);
        let req = Request::from_parts(parts, s3s::Body::http_body_unsync(body));
        let call = self.service.call(req).with_subscriber(self.logs.clone());
        let resp = match call.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = ?e, "s3: request failed");
                let xml = errors::complete_error_xml(
                    b"<Error><Code>InternalError</Code></Error>",
                    &request_id,
                )
                .unwrap_or_default();
                return Response::builder()
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .header("content-type", "application/xml")
                    .header("x-amz-request-id", &request_id)
                    .body(Body::from(xml))
                    .expect("static response");
            }
        };
        let (mut parts, mut body) = resp.into_parts();
        if parts.status.is_server_error() {
            tracing::warn!(status = %parts.status, request_id, "s3 request failed");
        }
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            parts.headers.insert("x-amz-request-id", v.clone());
            parts.headers.insert("x-amz-id-2", v);
        }
        if parts.status.is_client_error() || parts.status.is_server_error() {
            if let Some(xml) = body
                .bytes()
                .filter(|b| !b.is_empty() && b.len() <= MAX_ERROR_BODY)
                .and_then(|b| errors::complete_error_xml(&b, &request_id))
            {
                let xml = match errors::escape_control_characters(xml.as_bytes()) {
                    Some(escaped) => String::from_utf8(escaped).unwrap_or(xml),
                    None => xml,
                };
                parts.headers.insert(
                    axum::http::header::CONTENT_LENGTH,
                    HeaderValue::from(xml.len()),
                );
                return Response::from_parts(parts, Body::from(xml));
            }
            if parts.status == StatusCode::NOT_MODIFIED {
                body = s3s::Body::empty();
            }
        }
        // An answer in XML that echoes a key with control characters
        // (CreateMultipartUpload, listings) writes them as references.
        let is_xml = parts
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.contains("xml"));
        if is_xml {
            if let Some(escaped) = body
                .bytes()
                .and_then(|b| errors::escape_control_characters(&b))
            {
                parts.headers.insert(
                    axum::http::header::CONTENT_LENGTH,
                    HeaderValue::from(escaped.len()),
                );
                return Response::from_parts(parts, Body::from(escaped));
            }
        }
        Response::from_parts(parts, Body::new(body))
    }

    /// Writes an object from memory, bypassing authentication and policies:
    /// for Cove's own deliveries (flow logs). Blocking (file I/O and SQLite);
    /// call it from a blocking thread. Fails when the bucket does not exist.
    pub fn put_object_bytes(&self, bucket: &str, key: &str, body: &[u8]) -> anyhow::Result<()> {
        match self
            .storage
            .put_bytes(bucket, key, body, &storage::Attributes::default())
        {
            Ok(_) => Ok(()),
            Err(storage::Refusal::NoSuchBucket) => anyhow::bail!("NoSuchBucket: {bucket}"),
            Err(storage::Refusal::Other(e)) => Err(e),
            Err(other) => anyhow::bail!("{other:?}"),
        }
    }
}
