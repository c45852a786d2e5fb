//! The S3 operations: s3s parses each request into a typed input and calls
//! one of these; they read and write [`Storage`] and stream bodies between
//! the client and the blob files without holding an object in memory.

use crate::access::{authorize, context, resource_for, Caller};
use crate::errors::{aws, internal};
use crate::listing;
use crate::origin::S3Origin;
use crate::policy::{Kind, Policy};
use crate::storage::{self, Attributes, Checksums, Refusal, Staged, Storage};
use futures::StreamExt as _;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::Checksum as _;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use std::sync::Arc;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

/// Parts other than the last must be at least this large, as on S3.
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The largest body one PutObject or UploadPart may carry (5 GiB).
const MAX_SINGLE_UPLOAD: u64 = 5 * 1024 * 1024 * 1024;
const MAX_KEYS: i32 = 1000;
/// S3's default content type for objects stored without one.
const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";

/// A byte count for S3's `i64` size fields. Sizes are lengths of stored
/// files, so they fit; saturating only guards the conversion.
fn size_dto(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A part number or part count for S3's `i32` fields. Part numbers are 1 to
/// 10000 (upload_part checks), so they fit; saturating only guards the
/// conversion.
fn part_dto(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Builds a GetObject or HeadObject answer: two distinct output types that
/// share every header of a stored object, which are filled here once.
macro_rules! object_output {
    ($ty:ident { $($extra:ident: $val:expr),* $(,)? }, $obj:expr, $len:expr, $range:expr, $checksum:expr) => {{
        let obj = $obj;
        let a = obj.attrs;
        let c = $checksum;
        $ty {
            $($extra: $val,)*
            accept_ranges: Some("bytes".into()),
            content_length: Some(size_dto($len)),
            content_range: $range,
            content_type: Some(a.content_type.unwrap_or_else(|| DEFAULT_CONTENT_TYPE.into())),
            content_encoding: a.content_encoding,
            content_disposition: a.content_disposition,
            content_language: a.content_language,
            cache_control: a.cache_control,
            website_redirect_location: a.website_redirect_location,
            metadata: (!a.metadata.is_empty()).then(|| a.metadata.into_iter().collect()),
            e_tag: Some(ETag::Strong(obj.etag)),
            last_modified: Some(timestamp(obj.modified_ms)),
            parts_count: obj.parts_count.map(part_dto),
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_crc64nvme: c.checksum_crc64nvme,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            ..Default::default()
        }
    }};
}

/// Start, length and `Content-Range` of a (possibly ranged) read of `size` bytes.
fn span_of(range: Option<&s3s::dto::Range>, size: u64) -> S3Result<(u64, u64, Option<String>)> {
    match range {
        None => Ok((0, size, None)),
        Some(r) => {
            let span = r.check(size)?;
            Ok((
                span.start,
                span.end - span.start,
                Some(format!("bytes {}-{}/{}", span.start, span.end - 1, size)),
            ))
        }
    }
}

pub struct CoveS3 {
    pub storage: Arc<Storage>,
    pub region: String,
    pub account_id: String,
}

impl From<Refusal> for S3Error {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NoSuchBucket => aws(S3ErrorCode::NoSuchBucket),
            Refusal::NoSuchUpload => aws(S3ErrorCode::NoSuchUpload),
            Refusal::BucketNotEmpty => aws(S3ErrorCode::BucketNotEmpty),
            Refusal::Other(e) => internal(format!("{e:#}")),
        }
    }
}

fn timestamp(ms: i64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

/// HTTP dates have second precision; conditional requests compare at that grain.
fn seconds(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

fn ts_seconds(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

fn invalid_argument(msg: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, msg.to_string())
}

fn bad_digest(algorithm: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::BadDigest,
        format!("The {algorithm} you specified did not match the calculated checksum."),
    )
}

/// An error from reading a request body (s3s's signature and hash checks
/// report through the stream), as the S3 error a client expects.
fn body_error(e: &dyn std::fmt::Display) -> S3Error {
    let text = e.to_string();
    if text.contains("Sha256Mismatch") {
        let mut err = S3Error::with_message(
            S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        );
        err.set_status_code(axum::http::StatusCode::BAD_REQUEST);
        err
    } else if text.contains("SignatureMismatch") {
        aws(S3ErrorCode::SignatureDoesNotMatch)
    } else if text.contains("FormatError") {
        S3Error::with_message(S3ErrorCode::InvalidRequest, "Invalid chunked upload body")
    } else {
        tracing::debug!(error = %text, "s3: request body ended early");
        aws(S3ErrorCode::IncompleteBody)
    }
}

/// A body streamed to a staging file.
struct Received {
    staged: Staged,
    size: u64,
    md5: String,
    checksums: Checksum,
}

impl Drop for Received {
    fn drop(&mut self) {
        // After a commit the staged file has moved; otherwise it is garbage.
        let _ = std::fs::remove_file(&self.staged.path);
    }
}

/// Which flexible checksums to compute for a body: those the client sent as
/// headers, named as an algorithm, or announced as trailers.
fn checksum_hasher(
    headers: &axum::http::HeaderMap,
    given: &Checksum,
    algorithm: Option<&ChecksumAlgorithm>,
) -> ChecksumHasher {
    let mut names: Vec<String> = Vec::new();
    if let Some(a) = algorithm {
        names.push(a.as_str().to_ascii_lowercase());
    }
    if let Some(t) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
        names.extend(
            t.split(',')
                .filter_map(|n| n.trim().strip_prefix("x-amz-checksum-"))
                .map(str::to_ascii_lowercase),
        );
    }
    let mut h = ChecksumHasher::default();
    if given.checksum_crc32.is_some() || names.iter().any(|n| n == "crc32") {
        h.crc32 = Some(Default::default());
    }
    if given.checksum_crc32c.is_some() || names.iter().any(|n| n == "crc32c") {
        h.crc32c = Some(Default::default());
    }
    if given.checksum_crc64nvme.is_some() || names.iter().any(|n| n == "crc64nvme") {
        h.crc64nvme = Some(Default::default());
    }
    if given.checksum_sha1.is_some() || names.iter().any(|n| n == "sha1") {
        h.sha1 = Some(Default::default());
    }
    if given.checksum_sha256.is_some() || names.iter().any(|n| n == "sha256") {
        h.sha256 = Some(Default::default());
    }
    h
}

/// Compares what the client claimed (headers, then trailers) with what the
/// body hashed to; returns the verified checksums to store.
fn verify_checksums(
    mut claimed: Checksum,
    trailers: Option<&s3s::TrailingHeaders>,
    computed: &Checksum,
) -> S3Result<Checksums> {
    if let Some(t) = trailers.and_then(|t| t.take()) {
        let get = |n: &str| t.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        claimed.checksum_crc32 = claimed.checksum_crc32.or(get("x-amz-checksum-crc32"));
        claimed.checksum_crc32c = claimed.checksum_crc32c.or(get("x-amz-checksum-crc32c"));
        claimed.checksum_crc64nvme = claimed
            .checksum_crc64nvme
            .or(get("x-amz-checksum-crc64nvme"));
        claimed.checksum_sha1 = claimed.checksum_sha1.or(get("x-amz-checksum-sha1"));
        claimed.checksum_sha256 = claimed.checksum_sha256.or(get("x-amz-checksum-sha256"));
    }
    let pairs = [
        ("CRC32", &claimed.checksum_crc32, &computed.checksum_crc32),
        (
            "CRC32C",
            &claimed.checksum_crc32c,
            &computed.checksum_crc32c,
        ),
        (
            "CRC64NVME",
            &claimed.checksum_crc64nvme,
            &computed.checksum_crc64nvme,
        ),
        ("SHA1", &claimed.checksum_sha1, &computed.checksum_sha1),
        (
            "SHA256",
            &claimed.checksum_sha256,
            &computed.checksum_sha256,
        ),
    ];
    for (name, want, got) in pairs {
        if want.is_some() && want != got {
            return Err(bad_digest(name));
        }
    }
    Ok(Checksums {
        crc32: computed.checksum_crc32.clone(),
        crc32c: computed.checksum_crc32c.clone(),
        crc64nvme: computed.checksum_crc64nvme.clone(),
        sha1: computed.checksum_sha1.clone(),
        sha256: computed.checksum_sha256.clone(),
    })
}

fn check_content_md5(content_md5: Option<&str>, md5_hex: &str) -> S3Result<()> {
    use base64::Engine as _;
    let Some(b64) = content_md5 else {
        return Ok(());
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .filter(|r| r.len() == 16)
        .ok_or_else(|| aws(S3ErrorCode::InvalidDigest))?;
    if hex::encode(raw) != md5_hex {
        return Err(aws(S3ErrorCode::BadDigest));
    }
    Ok(())
}

fn stored_checksum_dto(c: &Checksums) -> Checksum {
    Checksum {
        checksum_crc32: c.crc32.clone(),
        checksum_crc32c: c.crc32c.clone(),
        checksum_crc64nvme: c.crc64nvme.clone(),
        checksum_sha1: c.sha1.clone(),
        checksum_sha256: c.sha256.clone(),
        ..Default::default()
    }
}

fn unquote(etag: &str) -> &str {
    etag.trim_matches('"')
}

fn etag_matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => unquote(e.value()) == etag,
    }
}

/// GET/HEAD preconditions, in RFC 9110's order of precedence.
fn check_preconditions(
    obj: &storage::Object,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let modified = seconds(obj.modified_ms);
    match if_match {
        Some(c) if !etag_matches(c, &obj.etag) => return Err(aws(S3ErrorCode::PreconditionFailed)),
        None if if_unmodified_since.is_some_and(|t| modified > ts_seconds(t)) => {
            return Err(aws(S3ErrorCode::PreconditionFailed))
        }
        _ => {}
    }
    match if_none_match {
        Some(c) if etag_matches(c, &obj.etag) => {
            return Err(S3Error::new(S3ErrorCode::NotModified))
        }
        None if if_modified_since.is_some_and(|t| modified <= ts_seconds(t)) => {
            return Err(S3Error::new(S3ErrorCode::NotModified))
        }
        _ => {}
    }
    Ok(())
}

/// `aws-chunked` describes how this request's body was framed, not the
/// object: S3 drops it from the stored Content-Encoding.
fn stored_encoding(encoding: Option<String>) -> Option<String> {
    let kept: Vec<&str> = encoding
        .as_deref()?
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(","))
}

/// The region a new bucket lives in, from the endpoint's region and the
/// `LocationConstraint` asked for, with S3's answers to a mismatch: only
/// us-east-1's endpoint creates buckets in other regions, and us-east-1
/// itself is never named.
/// `CreateBucket` by `account` at `endpoint_region`'s endpoint.
pub(crate) fn create_bucket_as(
    storage: &Storage,
    account: &str,
    endpoint_region: &str,
    bucket: &str,
    constraint: Option<&str>,
) -> S3Result<()> {
    if !crate::names::valid_bucket_name(bucket) {
        return Err(aws(S3ErrorCode::InvalidBucketName));
    }
    let bucket_region = bucket_region(endpoint_region, constraint)?;
    if !storage.create_bucket(bucket, &bucket_region, account)? {
        // Names are shared by every account; us-east-1 answers 200 to
        // the bucket's owner, for legacy compatibility.
        if storage.bucket(bucket)?.owner != account {
            return Err(aws(S3ErrorCode::BucketAlreadyExists));
        }
        if endpoint_region != "us-east-1" {
            return Err(aws(S3ErrorCode::BucketAlreadyOwnedByYou));
        }
    }
    Ok(())
}

/// `PutBucketPolicy`: the document must parse as a bucket policy.
pub(crate) fn put_bucket_policy(storage: &Storage, bucket: &str, policy: &str) -> S3Result<()> {
    storage.bucket(bucket)?;
    Policy::parse(policy, Kind::Bucket)
        .map_err(|e| S3Error::with_message(S3ErrorCode::MalformedPolicy, e.0))?;
    storage.set_policy(bucket, Some(policy))?;
    Ok(())
}

fn bucket_region(endpoint_region: &str, constraint: Option<&str>) -> S3Result<String> {
    let incompatible = |what: &str| {
        S3Error::with_message(
            S3ErrorCode::IllegalLocationConstraintException,
            format!("The {what} location constraint is incompatible for the region specific endpoint this request was sent to."),
        )
    };
    match constraint {
        None | Some("") if endpoint_region == "us-east-1" => Ok("us-east-1".into()),
        None | Some("") => Err(incompatible("unspecified")),
        Some(c) if c == "us-east-1" || !cove_model::region::is_known_region(c) => {
            Err(aws(S3ErrorCode::InvalidLocationConstraint))
        }
        Some(c) if c == endpoint_region || endpoint_region == "us-east-1" => Ok(c.into()),
        Some(c) => Err(incompatible(c)),
    }
}

fn location_of(region: &str) -> Option<BucketLocationConstraint> {
    (region != "us-east-1").then(|| BucketLocationConstraint::from(region.to_string()))
}

fn encode_if(url: bool, s: String) -> String {
    if url {
        listing::url_encode(&s)
    } else {
        s
    }
}

impl CoveS3 {
    fn owner(account: &str) -> Owner {
        Owner {
            display_name: Some("cove".into()),
            id: Some(canonical_id(account)),
        }
    }

    /// The owner of a bucket, as listings name it.
    fn bucket_owner(&self, bucket: &str) -> Owner {
        let account = self.storage.bucket(bucket).map(|b| b.owner);
        Self::owner(account.as_deref().unwrap_or(&self.account_id))
    }

    fn object_or_missing(&self, bucket: &str, key: &str) -> S3Result<storage::Object> {
        match self.storage.object(bucket, key)? {
            Some(o) => Ok(o),
            None => {
                self.storage.bucket(bucket)?;
                Err(aws(S3ErrorCode::NoSuchKey))
            }
        }
    }

    /// Streams `body` into a staging file, hashing as it goes.
    /// Streams a PutObject or UploadPart body to a staged file. A body
    /// declared or found larger than S3 takes in one request (5 GiB) is
    /// refused with `EntityTooLarge`, before any of it is read when its
    /// `Content-Length` says so.
    async fn receive(
        &self,
        declared_length: Option<i64>,
        body: Option<StreamingBlob>,
        mut hasher: ChecksumHasher,
    ) -> S3Result<Received> {
        if declared_length.is_some_and(|n| u64::try_from(n).map_or(true, |n| n > MAX_SINGLE_UPLOAD))
        {
            return Err(aws(S3ErrorCode::EntityTooLarge));
        }
        let mut received = Received {
            staged: Staged {
                path: self.storage.staging_path(),
            },
            size: 0,
            md5: String::new(),
            checksums: Checksum::default(),
        };
        let file = tokio::fs::File::create(&received.staged.path)
            .await
            .map_err(internal)?;
        let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, file);
        let mut md5 = s3s::crypto::Md5::new();
        if let Some(mut body) = body {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| body_error(&e))?;
                md5.update(&chunk);
                hasher.update(&chunk);
                received.size += chunk.len() as u64;
                if received.size > MAX_SINGLE_UPLOAD {
                    return Err(aws(S3ErrorCode::EntityTooLarge));
                }
                out.write_all(&chunk).await.map_err(internal)?;
            }
        }
        out.flush().await.map_err(internal)?;
        // Bodies are flushed to the disk before anything refers to them.
        out.into_inner().sync_data().await.map_err(internal)?;
        received.md5 = hex::encode(md5.finalize());
        received.checksums = hasher.finalize();
        Ok(received)
    }

    /// Opens an object's blob; retries when a concurrent overwrite removed
    /// the blob between reading the metadata and opening the file.
    async fn open_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> S3Result<(storage::Object, tokio::fs::File)> {
        for _ in 0..3 {
            let obj = self.object_or_missing(bucket, key)?;
            match tokio::fs::File::open(self.storage.blob_path(&obj.blob)).await {
                Ok(f) => return Ok((obj, f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(internal(e)),
            }
        }
        Err(internal(format!(
            "blob of {bucket}/{key} keeps disappearing"
        )))
    }

    fn attributes(
        content_type: Option<String>,
        content_encoding: Option<String>,
        content_disposition: Option<String>,
        content_language: Option<String>,
        cache_control: Option<String>,
        website_redirect_location: Option<String>,
        metadata: Option<Metadata>,
    ) -> Attributes {
        Attributes {
            content_type,
            content_encoding,
            content_disposition,
            content_language,
            cache_control,
            website_redirect_location,
            metadata: metadata.unwrap_or_default().into_iter().collect(),
            checksums: Checksums::default(),
        }
    }
}

/// A stable 64-hex-digit canonical user id for the account, shaped like S3's.
fn canonical_id(account: &str) -> String {
    let a = listing::md5_hex(format!("cove-canonical-user:{account}").as_bytes());
    let b = listing::md5_hex(format!("{account}:cove-canonical-user").as_bytes());
    format!("{a}{b}")
}

fn caller_and_origin<T>(req: &S3Request<T>) -> (Caller, S3Origin) {
    let caller = req.extensions.get::<Caller>().cloned().unwrap_or(Caller {
        arn: String::new(),
        account: String::new(),
        limits: None,
    });
    let origin = req
        .extensions
        .get::<S3Origin>()
        .cloned()
        .unwrap_or_default();
    (caller, origin)
}

#[async_trait::async_trait]
impl S3 for CoveS3 {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let (caller, _) = caller_and_origin(&req);
        // The endpoint's region is the one the request was signed for.
        let endpoint_region = req
            .region
            .as_ref()
            .map_or_else(|| self.region.clone(), |r| r.as_str().to_string());
        let input = req.input;
        let constraint = input
            .create_bucket_configuration
            .and_then(|c| c.location_constraint)
            .map(|c| c.as_str().to_string());
        create_bucket_as(
            &self.storage,
            &caller.account,
            &endpoint_region,
            &input.bucket,
            constraint.as_deref(),
        )?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", input.bucket)),
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.storage.delete_bucket(&req.input.bucket)?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let b = self.storage.bucket(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(b.region),
            ..Default::default()
        }))
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let (caller, _) = caller_and_origin(&req);
        let prefix = req.input.prefix.unwrap_or_default();
        let buckets = self
            .storage
            .buckets(&caller.account)?
            .into_iter()
            .filter(|b| b.name.starts_with(&prefix))
            .map(|b| s3s::dto::Bucket {
                bucket_region: Some(b.region),
                creation_date: Some(timestamp(b.created_ms)),
                name: Some(b.name),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Self::owner(&caller.account)),
            ..Default::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let b = self.storage.bucket(&req.input.bucket)?;
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: location_of(&b.region),
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        self.storage.bucket(&input.bucket)?;
        if let Some(cond) = &input.if_none_match {
            if cond.is_any() && self.storage.object(&input.bucket, &input.key)?.is_some() {
                return Err(aws(S3ErrorCode::PreconditionFailed));
            }
        }
        let claimed = Checksum {
            checksum_crc32: input.checksum_crc32,
            checksum_crc32c: input.checksum_crc32c,
            checksum_crc64nvme: input.checksum_crc64nvme,
            checksum_sha1: input.checksum_sha1,
            checksum_sha256: input.checksum_sha256,
            ..Default::default()
        };
        let hasher = checksum_hasher(&req.headers, &claimed, input.checksum_algorithm.as_ref());
        let received = self
            .receive(input.content_length, input.body, hasher)
            .await?;
        check_content_md5(input.content_md5.as_deref(), &received.md5)?;
        let checksums =
            verify_checksums(claimed, req.trailing_headers.as_ref(), &received.checksums)?;
        let mut attrs = Self::attributes(
            input.content_type,
            stored_encoding(input.content_encoding),
            input.content_disposition,
            input.content_language,
            input.cache_control,
            input.website_redirect_location,
            input.metadata,
        );
        attrs.checksums = checksums.clone();
        self.storage.commit_object(
            &input.bucket,
            &input.key,
            &received.staged,
            received.size,
            &received.md5,
            None,
            &attrs,
        )?;
        let c = stored_checksum_dto(&checksums);
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(received.md5.clone())),
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_crc64nvme: c.checksum_crc64nvme,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let (obj, mut file) = self.open_object(&input.bucket, &input.key).await?;
        check_preconditions(
            &obj,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let (start, len, content_range) = span_of(input.range.as_ref(), obj.size)?;
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(internal)?;
        }
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 64 * 1024);
        let whole = content_range.is_none();
        let c = if whole && input.checksum_mode.is_some() {
            stored_checksum_dto(&obj.attrs.checksums)
        } else {
            Checksum::default()
        };
        Ok(S3Response::new(object_output!(
            GetObjectOutput {
                body: Some(StreamingBlob::wrap(stream))
            },
            obj,
            len,
            content_range,
            c
        )))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let obj = self.object_or_missing(&input.bucket, &input.key)?;
        check_preconditions(
            &obj,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let (_, len, content_range) = span_of(input.range.as_ref(), obj.size)?;
        let c = if input.checksum_mode.is_some() {
            stored_checksum_dto(&obj.attrs.checksums)
        } else {
            Checksum::default()
        };
        Ok(S3Response::new(object_output!(
            HeadObjectOutput {},
            obj,
            len,
            content_range,
            c
        )))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.storage
            .delete_object(&req.input.bucket, &req.input.key)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let (caller, origin) = caller_and_origin(&req);
        let input = req.input;
        self.storage.bucket(&input.bucket)?;
        if input.delete.objects.len() > 1000 {
            return Err(aws(S3ErrorCode::MalformedXML));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for o in input.delete.objects {
            let cx = context(
                "s3:DeleteObject",
                &resource_for(Some(&input.bucket), Some(&o.key)),
                &caller,
                &origin,
            );
            let outcome = authorize(
                &self.storage,
                Some(&input.bucket),
                &cx,
                &origin,
                caller.limits.as_deref(),
            )
            .and_then(|()| Ok(self.storage.delete_object(&input.bucket, &o.key)?));
            match outcome {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(o.key),
                    ..Default::default()
                }),
                Err(e) => errors.push(s3s::dto::Error {
                    code: Some(e.code().as_str().to_string()),
                    message: e.message().map(str::to_string),
                    key: Some(o.key),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let (caller, origin) = caller_and_origin(&req);
        let input = req.input;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            ..
        } = &input.copy_source
        else {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                "Copying from access points is not supported",
            ));
        };
        let cx = context(
            "s3:GetObject",
            &resource_for(Some(src_bucket), Some(src_key)),
            &caller,
            &origin,
        );
        authorize(
            &self.storage,
            Some(src_bucket),
            &cx,
            &origin,
            caller.limits.as_deref(),
        )?;
        self.storage.bucket(&input.bucket)?;
        let (src, mut file) = self.open_object(src_bucket, src_key).await?;
        let src_match = |c: &ETagCondition| etag_matches(c, &src.etag);
        let src_modified = seconds(src.modified_ms);
        if input
            .copy_source_if_match
            .as_ref()
            .is_some_and(|c| !src_match(c))
            || input
                .copy_source_if_none_match
                .as_ref()
                .is_some_and(src_match)
            || input
                .copy_source_if_unmodified_since
                .as_ref()
                .is_some_and(|t| src_modified > ts_seconds(t))
            || input
                .copy_source_if_modified_since
                .as_ref()
                .is_some_and(|t| src_modified <= ts_seconds(t))
        {
            return Err(aws(S3ErrorCode::PreconditionFailed));
        }
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace
            && **src_bucket == *input.bucket
            && **src_key == *input.key
            && input.website_redirect_location.is_none()
            && input.storage_class.is_none()
        {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
            ));
        }
        let mut attrs = if replace {
            Self::attributes(
                input.content_type,
                input.content_encoding,
                input.content_disposition,
                input.content_language,
                input.cache_control,
                input.website_redirect_location,
                input.metadata,
            )
        } else {
            src.attrs.clone()
        };
        attrs.checksums = src.attrs.checksums.clone();
        // Copy through a staging file so the copy is atomic like a PUT.
        let received = {
            let mut buf = vec![0u8; 256 * 1024];
            let staged = Staged {
                path: self.storage.staging_path(),
            };
            let mut received = Received {
                staged,
                size: 0,
                md5: String::new(),
                checksums: Checksum::default(),
            };
            let mut out = tokio::fs::File::create(&received.staged.path)
                .await
                .map_err(internal)?;
            let mut md5 = s3s::crypto::Md5::new();
            loop {
                let n = file.read(&mut buf).await.map_err(internal)?;
                if n == 0 {
                    break;
                }
                md5.update(&buf[..n]);
                out.write_all(&buf[..n]).await.map_err(internal)?;
                received.size += n as u64;
            }
            out.sync_data().await.map_err(internal)?;
            received.md5 = hex::encode(md5.finalize());
            received
        };
        let obj = self.storage.commit_object(
            &input.bucket,
            &input.key,
            &received.staged,
            received.size,
            &received.md5,
            None,
            &attrs,
        )?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(obj.etag)),
                last_modified: Some(timestamp(obj.modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        self.storage.bucket(&input.bucket)?;
        let max_keys = input.max_keys.unwrap_or(MAX_KEYS);
        let Ok(limit) = usize::try_from(max_keys.min(MAX_KEYS)) else {
            return Err(invalid_argument("maxKeys should be non-negative"));
        };
        let url = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let after =
            match &input.continuation_token {
                Some(t) => Some(listing::decode_token(t).ok_or_else(|| {
                    invalid_argument("The continuation token provided is incorrect")
                })?),
                None => input.start_after.clone(),
            };
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone();
        let page = self
            .storage
            .scan_objects(&input.bucket, &prefix, after.as_deref(), |it| {
                listing::page(
                    it.map(|o| (o.key.clone(), o)),
                    &prefix,
                    delimiter.as_deref(),
                    after.as_deref(),
                    limit,
                )
            })?;
        let owner = input
            .fetch_owner
            .unwrap_or(false)
            .then(|| self.bucket_owner(&input.bucket));
        // At most `limit` (1000) entries.
        let key_count =
            i32::try_from(page.contents.len() + page.common_prefixes.len()).unwrap_or(i32::MAX);
        let contents: Vec<Object> = page
            .contents
            .into_iter()
            .map(|(key, o)| Object {
                key: Some(encode_if(url, key)),
                e_tag: Some(ETag::Strong(o.etag)),
                last_modified: Some(timestamp(o.modified_ms)),
                size: Some(size_dto(o.size)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                owner: owner.clone(),
                ..Default::default()
            })
            .collect();
        let prefixes: Vec<CommonPrefix> = page
            .common_prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(encode_if(url, p)),
            })
            .collect();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(encode_if(url, prefix)),
            delimiter: input.delimiter.map(|d| encode_if(url, d)),
            max_keys: Some(max_keys),
            key_count: Some(key_count),
            is_truncated: Some(page.is_truncated),
            continuation_token: input.continuation_token,
            next_continuation_token: page
                .is_truncated
                .then(|| page.last.as_deref().map(listing::encode_token))
                .flatten(),
            start_after: input.start_after.map(|s| encode_if(url, s)),
            encoding_type: input.encoding_type,
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        self.storage.bucket(&input.bucket)?;
        let max_keys = input.max_keys.unwrap_or(MAX_KEYS);
        let Ok(limit) = usize::try_from(max_keys.min(MAX_KEYS)) else {
            return Err(invalid_argument("maxKeys should be non-negative"));
        };
        let url = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = input.marker.clone().filter(|m| !m.is_empty());
        let delimiter = input.delimiter.clone();
        let page = self
            .storage
            .scan_objects(&input.bucket, &prefix, after.as_deref(), |it| {
                listing::page(
                    it.map(|o| (o.key.clone(), o)),
                    &prefix,
                    delimiter.as_deref(),
                    after.as_deref(),
                    limit,
                )
            })?;
        let owner = self.bucket_owner(&input.bucket);
        let contents: Vec<Object> = page
            .contents
            .into_iter()
            .map(|(key, o)| Object {
                key: Some(encode_if(url, key)),
                e_tag: Some(ETag::Strong(o.etag)),
                last_modified: Some(timestamp(o.modified_ms)),
                size: Some(size_dto(o.size)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                owner: Some(owner.clone()),
                ..Default::default()
            })
            .collect();
        let prefixes: Vec<CommonPrefix> = page
            .common_prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(encode_if(url, p)),
            })
            .collect();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(encode_if(url, prefix)),
            marker: Some(encode_if(url, input.marker.unwrap_or_default())),
            delimiter: input.delimiter.map(|d| encode_if(url, d)),
            max_keys: Some(max_keys),
            is_truncated: Some(page.is_truncated),
            next_marker: page
                .is_truncated
                .then(|| page.last.map(|l| encode_if(url, l)))
                .flatten(),
            encoding_type: input.encoding_type,
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let attrs = Self::attributes(
            input.content_type,
            input.content_encoding,
            input.content_disposition,
            input.content_language,
            input.cache_control,
            input.website_redirect_location,
            input.metadata,
        );
        let upload = self
            .storage
            .create_upload(&input.bucket, &input.key, &attrs)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload.upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        let Some(part_number) = u32::try_from(input.part_number)
            .ok()
            .filter(|n| (1..=10_000).contains(n))
        else {
            return Err(invalid_argument(
                "Part number must be an integer between 1 and 10000, inclusive",
            ));
        };
        self.storage
            .upload(&input.bucket, &input.key, &input.upload_id)?;
        let claimed = Checksum {
            checksum_crc32: input.checksum_crc32,
            checksum_crc32c: input.checksum_crc32c,
            checksum_crc64nvme: input.checksum_crc64nvme,
            checksum_sha1: input.checksum_sha1,
            checksum_sha256: input.checksum_sha256,
            ..Default::default()
        };
        let hasher = checksum_hasher(&req.headers, &claimed, input.checksum_algorithm.as_ref());
        let received = self
            .receive(input.content_length, input.body, hasher)
            .await?;
        check_content_md5(input.content_md5.as_deref(), &received.md5)?;
        let checksums =
            verify_checksums(claimed, req.trailing_headers.as_ref(), &received.checksums)?;
        self.storage.commit_part(
            &input.upload_id,
            part_number,
            &received.staged,
            received.size,
            &received.md5,
            &checksums,
        )?;
        let c = stored_checksum_dto(&checksums);
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(received.md5.clone())),
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_crc64nvme: c.checksum_crc64nvme,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let upload = self
            .storage
            .upload(&input.bucket, &input.key, &input.upload_id)?;
        let wanted = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if wanted.is_empty() {
            return Err(S3Error::with_message(
                S3ErrorCode::MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema",
            ));
        }
        let stored = self.storage.parts(&upload.upload_id)?;
        let mut chosen = Vec::with_capacity(wanted.len());
        let mut previous = 0;
        for w in &wanted {
            let n = w.part_number.unwrap_or(0);
            if n <= previous {
                return Err(aws(S3ErrorCode::InvalidPartOrder));
            }
            previous = n;
            let part = stored
                .iter()
                .find(|p| i64::from(p.part_number) == i64::from(n))
                .ok_or_else(|| aws(S3ErrorCode::InvalidPart))?;
            let etag_ok = w
                .e_tag
                .as_ref()
                .is_none_or(|e| unquote(e.value()) == part.etag);
            let sums = [
                (&w.checksum_crc32, &part.checksums.crc32),
                (&w.checksum_crc32c, &part.checksums.crc32c),
                (&w.checksum_crc64nvme, &part.checksums.crc64nvme),
                (&w.checksum_sha1, &part.checksums.sha1),
                (&w.checksum_sha256, &part.checksums.sha256),
            ];
            let sums_ok = sums
                .iter()
                .all(|(claimed, have)| claimed.is_none() || have.is_none() || claimed == have);
            if !etag_ok || !sums_ok {
                return Err(aws(S3ErrorCode::InvalidPart));
            }
            chosen.push(part);
        }
        if chosen[..chosen.len() - 1]
            .iter()
            .any(|p| p.size < MIN_PART_SIZE)
        {
            return Err(aws(S3ErrorCode::EntityTooSmall));
        }
        let mut received = Received {
            staged: Staged {
                path: self.storage.staging_path(),
            },
            size: 0,
            md5: String::new(),
            checksums: Checksum::default(),
        };
        let mut out = tokio::fs::File::create(&received.staged.path)
            .await
            .map_err(internal)?;
        for p in &chosen {
            let mut part = tokio::fs::File::open(self.storage.blob_path(&p.blob))
                .await
                .map_err(internal)?;
            received.size += tokio::io::copy(&mut part, &mut out)
                .await
                .map_err(internal)?;
        }
        out.sync_data().await.map_err(internal)?;
        let md5s: Vec<String> = chosen.iter().map(|p| p.etag.clone()).collect();
        let etag = listing::multipart_etag(&md5s)
            .ok_or_else(|| internal("stored part ETag is not an MD5"))?;
        let obj = self.storage.complete_upload(
            &upload,
            &received.staged,
            received.size,
            &etag,
            // One per distinct stored part number (at most 10000).
            u32::try_from(chosen.len()).unwrap_or(u32::MAX),
        )?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            e_tag: Some(ETag::Strong(obj.etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.storage
            .upload(&input.bucket, &input.key, &input.upload_id)?;
        self.storage.abort_upload(&input.upload_id)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let upload = self
            .storage
            .upload(&input.bucket, &input.key, &input.upload_id)?;
        let max_parts = input.max_parts.unwrap_or(1000).clamp(0, 1000);
        let limit = usize::try_from(max_parts).unwrap_or(0);
        let marker = input.part_number_marker.unwrap_or(0);
        let after: Vec<_> = self
            .storage
            .parts(&upload.upload_id)?
            .into_iter()
            .filter(|p| i64::from(p.part_number) > i64::from(marker))
            .collect();
        let truncated = after.len() > limit;
        let page: Vec<_> = after.into_iter().take(limit).collect();
        let next = page.last().map(|p| part_dto(p.part_number));
        let owner = self.bucket_owner(&input.bucket);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max_parts),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            is_truncated: Some(truncated),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            initiator: Some(Initiator {
                display_name: owner.display_name.clone(),
                id: owner.id.clone(),
            }),
            owner: Some(owner),
            parts: Some(
                page.into_iter()
                    .map(|p| {
                        let c = stored_checksum_dto(&p.checksums);
                        Part {
                            part_number: Some(part_dto(p.part_number)),
                            e_tag: Some(ETag::Strong(p.etag)),
                            size: Some(size_dto(p.size)),
                            last_modified: Some(timestamp(p.modified_ms)),
                            checksum_crc32: c.checksum_crc32,
                            checksum_crc32c: c.checksum_crc32c,
                            checksum_crc64nvme: c.checksum_crc64nvme,
                            checksum_sha1: c.checksum_sha1,
                            checksum_sha256: c.checksum_sha256,
                        }
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max_uploads = input.max_uploads.unwrap_or(1000).clamp(0, 1000);
        let max = usize::try_from(max_uploads).unwrap_or(0);
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let id_marker = input.upload_id_marker.clone();
        let all = self.storage.uploads(&input.bucket, &prefix)?;
        // Past the key marker; with an upload-id marker, the marker key's
        // uploads after that id are included too.
        let mut after_marker = all.into_iter().filter(|u| {
            if key_marker.is_empty() {
                return true;
            }
            match &id_marker {
                Some(id) => u.key > key_marker || (u.key == key_marker && u.upload_id > *id),
                None => u.key > key_marker,
            }
        });
        let page: Vec<_> = after_marker.by_ref().take(max).collect();
        let truncated = after_marker.next().is_some();
        let owner = self.bucket_owner(&input.bucket);
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max_uploads),
            is_truncated: Some(truncated),
            next_key_marker: truncated
                .then(|| page.last().map(|u| u.key.clone()))
                .flatten(),
            next_upload_id_marker: truncated
                .then(|| page.last().map(|u| u.upload_id.clone()))
                .flatten(),
            uploads: Some(
                page.into_iter()
                    .map(|u| MultipartUpload {
                        key: Some(u.key),
                        upload_id: Some(u.upload_id),
                        initiated: Some(timestamp(u.initiated_ms)),
                        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                        initiator: Some(Initiator {
                            display_name: owner.display_name.clone(),
                            id: owner.id.clone(),
                        }),
                        owner: Some(owner.clone()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        let input = req.input;
        put_bucket_policy(&self.storage, &input.bucket, &input.policy)?;
        Ok(S3Response::new(PutBucketPolicyOutput::default()))
    }

    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        let b = self.storage.bucket(&req.input.bucket)?;
        let policy = b
            .policy
            .ok_or_else(|| aws(S3ErrorCode::NoSuchBucketPolicy))?;
        Ok(S3Response::new(GetBucketPolicyOutput {
            policy: Some(policy),
        }))
    }

    async fn delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
        self.storage.set_policy(&req.input.bucket, None)?;
        Ok(S3Response::new(DeleteBucketPolicyOutput::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_chunked_is_not_stored() {
        assert_eq!(stored_encoding(Some("aws-chunked".into())), None);
        assert_eq!(
            stored_encoding(Some("gzip,aws-chunked".into())).as_deref(),
            Some("gzip")
        );
        assert_eq!(
            stored_encoding(Some("gzip".into())).as_deref(),
            Some("gzip")
        );
        assert_eq!(stored_encoding(None), None);
    }

    #[test]
    fn canonical_ids_look_like_s3s() {
        let id = canonical_id("123456789012");
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, canonical_id("210987654321"));
    }

    #[test]
    fn bucket_regions_follow_the_endpoint() {
        let code = |r: S3Result<String>| r.unwrap_err().code().as_str().to_string();
        assert_eq!(bucket_region("us-east-1", None).unwrap(), "us-east-1");
        assert_eq!(
            bucket_region("eu-west-1", Some("eu-west-1")).unwrap(),
            "eu-west-1"
        );
        // us-east-1's endpoint creates buckets anywhere; others only at home.
        assert_eq!(
            bucket_region("us-east-1", Some("ap-east-1")).unwrap(),
            "ap-east-1"
        );
        assert_eq!(
            code(bucket_region("eu-west-1", Some("us-west-2"))),
            "IllegalLocationConstraintException"
        );
        assert_eq!(
            code(bucket_region("eu-west-1", None)),
            "IllegalLocationConstraintException"
        );
        assert_eq!(
            code(bucket_region("us-east-1", Some("us-east-1"))),
            "InvalidLocationConstraint"
        );
        assert_eq!(
            code(bucket_region("us-east-1", Some("us-east-9"))),
            "InvalidLocationConstraint"
        );
    }
}
