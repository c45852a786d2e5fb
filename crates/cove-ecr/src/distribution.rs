//! The OCI distribution API (`/v2/…`), as `docker`, `skopeo`, `crane` and
//! `oras` speak it to `<account>.dkr.ecr.<region>.amazonaws.com`: basic
//! authentication with `AWS` and a `GetAuthorizationToken` password, blob
//! uploads (monolithic, chunked, cross-repository mounts), manifests by tag
//! or digest, tag lists. Errors are the distribution API's codes with ECR's
//! messages.

use crate::names::{valid_repository_name, ContentDigest, Reference, RegistryHost};
use crate::registry::{now_secs, Repository};
use crate::token::TokenError;
use crate::Ecr;
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, Response, StatusCode};
use cove_model::AwsError;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// The largest manifest accepted (ECR's limit is 4 MiB).
const MAX_MANIFEST: usize = 4 << 20;

/// Whether a request to Cove's listener is for the registry: a `/v2` path
/// sent to a registry host, or one that carries no AWS signature (S3's
/// path-style requests for a bucket named `v2` are signed).
pub fn is_registry_request(headers: &HeaderMap, path: &str, query: Option<&str>) -> bool {
    if path != "/v2" && !path.starts_with("/v2/") {
        return false;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if RegistryHost::parse(host).is_some() {
        return true;
    }
    let signed_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256") || a.starts_with("AWS "));
    let signed_query =
        query.is_some_and(|q| q.contains("X-Amz-Signature=") || q.contains("Signature="));
    !signed_header && !signed_query
}

fn response(status: StatusCode) -> axum::http::response::Builder {
    Response::builder()
        .status(status)
        .header("Docker-Distribution-API-Version", "registry/2.0")
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": code, "message": message, "detail": {}}]});
    response(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("static response")
}

/// The distribution API's answer to an error of the registry.
fn from_aws(e: &AwsError) -> Response<Body> {
    let (status, code) = match e.code.as_str() {
        "RepositoryNotFoundException" => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
        "ImageNotFoundException" => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        "LayersNotFoundException" => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
        "ImageTagAlreadyExistsException" => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
        "ImageDigestDoesNotMatchException" => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        "InvalidParameterException" | "ReferencedImagesNotFoundException" => {
            (StatusCode::BAD_REQUEST, "MANIFEST_INVALID")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
    };
    error(status, code, &e.message)
}

fn unauthorized(realm: &str) -> Response<Body> {
    response(StatusCode::UNAUTHORIZED)
        .header(
            header::WWW_AUTHENTICATE,
            format!("Basic realm=\"https://{realm}/\",service=\"ecr.amazonaws.com\""),
        )
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from("Not Authorized\n"))
        .expect("static response")
}

fn query_map(query: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// What a `/v2/<name>/…` path asks for.
#[derive(Debug, PartialEq)]
enum Route<'a> {
    Base,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Uploads(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Other,
}

fn route(path: &str) -> Route<'_> {
    let rest = match path.strip_prefix("/v2") {
        Some("" | "/") => return Route::Base,
        Some(r) => r.strip_prefix('/').unwrap_or(r),
        None => return Route::Other,
    };
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Route::Tags(name);
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return Route::Manifest(name, reference);
    }
    if let Some((name, id)) = rest.rsplit_once("/blobs/uploads") {
        return Route::Uploads(name, id.trim_start_matches('/'));
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return Route::Blob(name, digest);
    }
    Route::Other
}

/// The IAM action a repository policy judges a distribution request as.
fn iam_action(route: &Route, method: &Method) -> &'static str {
    let reads = matches!(*method, Method::GET | Method::HEAD);
    match route {
        Route::Manifest(..) if reads => "ecr:BatchGetImage",
        Route::Manifest(..) => "ecr:PutImage",
        Route::Blob(..) if *method == Method::HEAD => "ecr:BatchCheckLayerAvailability",
        Route::Blob(..) if reads => "ecr:GetDownloadUrlForLayer",
        Route::Tags(_) => "ecr:ListImages",
        Route::Uploads(..) if *method == Method::POST => "ecr:InitiateLayerUpload",
        Route::Uploads(..) if *method == Method::PATCH => "ecr:UploadLayerPart",
        Route::Blob(..) | Route::Uploads(..) => "ecr:CompleteLayerUpload",
        Route::Base | Route::Other => "ecr:BatchGetImage",
    }
}

/// Serves one distribution API request.
pub async fn serve(ecr: Arc<Ecr>, req: Request<Body>) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(RegistryHost::parse)
        .unwrap_or_else(|| RegistryHost {
            account: ecr.account.clone(),
            region: ecr.region.clone(),
        });
    let realm = host.name();
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let Some(auth) = auth else {
        return unauthorized(&realm);
    };
    let holder = match ecr.tokens.check_basic(auth, now_secs()) {
        Ok(holder) => holder,
        Err(TokenError::Expired) => {
            return error(
                StatusCode::FORBIDDEN,
                "DENIED",
                "Your authorization token has expired. Reauthenticate and try again.",
            )
        }
        Err(TokenError::Invalid) => return unauthorized(&realm),
    };
    let path = req.uri().path().to_string();
    let query = query_map(req.uri().query());
    let method = req.method().clone();
    let routed = route(&path);
    let name = match routed {
        Route::Base => {
            return response(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .expect("static response")
        }
        Route::Other => {
            return error(
                StatusCode::NOT_FOUND,
                "UNSUPPORTED",
                "The operation is unsupported.",
            )
        }
        Route::Tags(n) | Route::Manifest(n, _) | Route::Uploads(n, _) | Route::Blob(n, _) => n,
    };
    if !valid_repository_name(name) {
        return error(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            &format!("Invalid repository name '{name}'."),
        );
    }
    let repo = match ecr.registry.repository(&host.account, &host.region, name) {
        Ok(r) => r,
        // Another account's registry says nothing about what it holds.
        Err(_) if holder.account != host.account => {
            return error(
                StatusCode::FORBIDDEN,
                "DENIED",
                "Your authorization token does not grant access to this registry.",
            )
        }
        Err(e) => return from_aws(&e),
    };
    if holder.account != host.account {
        let action = iam_action(&routed, &method);
        if let Some(message) = ecr.cross_account_refusal(&repo, &holder, action) {
            return error(StatusCode::FORBIDDEN, "DENIED", &message);
        }
    }
    let out = match routed {
        Route::Tags(_) => tags(&ecr, &repo, &query),
        Route::Manifest(_, reference) => manifest(&ecr, &repo, &method, reference, req).await,
        Route::Uploads(_, id) => upload(&ecr, &repo, &method, id, &query, req).await,
        Route::Blob(_, digest) => blob(&ecr, &repo, &method, digest).await,
        Route::Base | Route::Other => unreachable!("answered above"),
    };
    out.unwrap_or_else(|e| from_aws(&e))
}

type Answer = Result<Response<Body>, AwsError>;

fn tags(ecr: &Ecr, repo: &Repository, query: &HashMap<String, String>) -> Answer {
    let mut tags = ecr.registry.tags(repo)?;
    if let Some(last) = query.get("last") {
        tags.retain(|t| t > last);
    }
    let limit = query.get("n").and_then(|n| n.parse::<usize>().ok());
    let mut next = None;
    if let Some(n) = limit {
        if tags.len() > n {
            tags.truncate(n);
            next = tags.last().cloned();
        }
    }
    let mut b = response(StatusCode::OK).header(header::CONTENT_TYPE, "application/json");
    if let Some(last) = next {
        b = b.header(
            header::LINK,
            format!(
                "</v2/{}/tags/list?n={}&last={last}>; rel=\"next\"",
                repo.name,
                limit.unwrap_or(0)
            ),
        );
    }
    let body = serde_json::json!({"name": repo.name, "tags": tags});
    Ok(b.body(Body::from(body.to_string())).expect("valid headers"))
}

async fn manifest(
    ecr: &Ecr,
    repo: &Repository,
    method: &Method,
    reference: &str,
    req: Request<Body>,
) -> Answer {
    let Some(reference) = Reference::parse(reference) else {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            &format!("Invalid tag or digest '{reference}'."),
        ));
    };
    match *method {
        Method::GET | Method::HEAD => {
            let get = *method == Method::GET;
            let Some(image) = ecr.registry.image(repo, &reference, get)? else {
                return Err(crate::registry::image_not_found(&reference, repo));
            };
            let b = response(StatusCode::OK)
                .header(header::CONTENT_TYPE, &image.media_type)
                .header(header::CONTENT_LENGTH, image.manifest.len())
                .header("Docker-Content-Digest", image.digest.as_str());
            let body = if get {
                Body::from(image.manifest)
            } else {
                Body::empty()
            };
            Ok(b.body(body).expect("valid headers"))
        }
        Method::PUT => {
            let content_type = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string);
            let bytes = match axum::body::to_bytes(req.into_body(), MAX_MANIFEST).await {
                Ok(b) => b,
                Err(_) => {
                    return Ok(error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "SIZE_INVALID",
                        "The manifest is larger than 4 MiB.",
                    ))
                }
            };
            let digest = ecr
                .registry
                .put_manifest(repo, &reference, content_type.as_deref(), &bytes)?
                .digest;
            Ok(response(StatusCode::CREATED)
                .header(
                    header::LOCATION,
                    format!("/v2/{}/manifests/{digest}", repo.name),
                )
                .header("Docker-Content-Digest", digest.as_str())
                .body(Body::empty())
                .expect("valid headers"))
        }
        Method::DELETE => {
            if !matches!(reference, Reference::Digest(_)) {
                return Ok(error(
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED",
                    "Delete a manifest by its digest; untag with BatchDeleteImage.",
                ));
            }
            match ecr.registry.delete_image(repo, &reference)? {
                Some(_) => Ok(response(StatusCode::ACCEPTED)
                    .body(Body::empty())
                    .expect("static")),
                None => Err(crate::registry::image_not_found(&reference, repo)),
            }
        }
        _ => Ok(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "The operation is unsupported.",
        )),
    }
}

async fn blob(ecr: &Ecr, repo: &Repository, method: &Method, digest: &str) -> Answer {
    let Ok(digest) = digest.parse::<ContentDigest>() else {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "Invalid digest.",
        ));
    };
    let Some(size) = ecr.registry.blob_size(repo, &digest)? else {
        return Ok(error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            &format!(
                "The blob {digest} does not exist in the repository with name '{}'.",
                repo.name
            ),
        ));
    };
    let b = response(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, size)
        .header("Docker-Content-Digest", digest.as_str());
    match *method {
        Method::HEAD => Ok(b.body(Body::empty()).expect("valid headers")),
        Method::GET => {
            let file = tokio::fs::File::open(ecr.registry.blob_path(&digest))
                .await
                .map_err(crate::db::internal)?;
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10);
            Ok(b.body(Body::from_stream(stream)).expect("valid headers"))
        }
        _ => Ok(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "The operation is unsupported.",
        )),
    }
}

fn upload_unknown() -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
        "The upload is unknown to the registry.",
    )
}

/// `202 Accepted` for an upload in progress with `size` bytes so far.
fn upload_status(repo: &Repository, id: &str, size: u64, status: StatusCode) -> Response<Body> {
    response(status)
        .header(
            header::LOCATION,
            format!("/v2/{}/blobs/uploads/{id}", repo.name),
        )
        .header(header::RANGE, format!("0-{}", size.saturating_sub(1)))
        .header("Docker-Upload-UUID", id)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid headers")
}

fn blob_created(repo: &Repository, digest: &ContentDigest) -> Response<Body> {
    response(StatusCode::CREATED)
        .header(
            header::LOCATION,
            format!("/v2/{}/blobs/{digest}", repo.name),
        )
        .header("Docker-Content-Digest", digest.as_str())
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid headers")
}

/// Appends a request body to upload `id`'s file, hashing the bytes as they
/// pass when the hash so far is known (kept in memory between requests, so
/// finishing an upload need not read it again); returns the new size.
async fn append(ecr: &Ecr, id: &str, path: &std::path::Path, body: Body) -> Result<u64, AwsError> {
    use sha2::Digest as _;
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .await
        .map_err(crate::db::internal)?;
    let size = file.metadata().await.map_err(crate::db::internal)?.len();
    let mut hasher = ecr
        .hashing
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(id)
        .filter(|(n, _)| *n == size)
        .map(|(_, h)| h)
        .or_else(|| (size == 0).then(sha2::Sha256::new));
    let mut written = size;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(crate::db::internal)?;
        if let Some(data) = frame.data_ref() {
            file.write_all(data).await.map_err(crate::db::internal)?;
            if let Some(h) = hasher.as_mut() {
                h.update(data);
            }
            written += data.len() as u64;
        }
    }
    file.flush().await.map_err(crate::db::internal)?;
    if let Some(h) = hasher {
        ecr.hashing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), (written, h));
    }
    Ok(written)
}

async fn finish(ecr: &Ecr, repo: &Repository, id: &str, digest: &str) -> Answer {
    let hashed = ecr
        .hashing
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(id)
        .and_then(|(n, h)| {
            use sha2::Digest as _;
            Some((
                ContentDigest::from_sha256(h.finalize().into()),
                i64::try_from(n).ok()?,
            ))
        });
    let Ok(expected) = digest.parse::<ContentDigest>() else {
        ecr.registry.cancel_upload(id)?;
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "Invalid digest.",
        ));
    };
    let registry = ecr.registry.clone();
    let (repo2, id2, expected2) = (repo.clone(), id.to_string(), expected.clone());
    let done = tokio::task::spawn_blocking(move || {
        registry.finish_upload(&repo2, &id2, &expected2, hashed)
    })
    .await
    .map_err(crate::db::internal)??;
    match done {
        Ok(_) => Ok(blob_created(repo, &expected)),
        Err(()) => Ok(error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "The uploaded content does not match the digest given.",
        )),
    }
}

async fn upload(
    ecr: &Ecr,
    repo: &Repository,
    method: &Method,
    id: &str,
    query: &HashMap<String, String>,
    req: Request<Body>,
) -> Answer {
    if id.is_empty() {
        if *method != Method::POST {
            return Ok(error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "The operation is unsupported.",
            ));
        }
        if let (Some(mount), Some(from)) = (query.get("mount"), query.get("from")) {
            if let Ok(digest) = mount.parse::<ContentDigest>() {
                let source = ecr.registry.repository(&repo.account, &repo.region, from);
                if let Ok(source) = source {
                    if ecr.registry.mount_blob(repo, &source, &digest)? {
                        return Ok(blob_created(repo, &digest));
                    }
                }
            }
        }
        let id = ecr.registry.start_upload(repo)?;
        if let Some(digest) = query.get("digest") {
            let path = ecr.registry.upload_file(repo, &id)?.expect("just started");
            append(ecr, &id, &path, req.into_body()).await?;
            return finish(ecr, repo, &id, digest).await;
        }
        return Ok(upload_status(repo, &id, 0, StatusCode::ACCEPTED));
    }
    let Some(path) = ecr.registry.upload_file(repo, id)? else {
        return Ok(upload_unknown());
    };
    match *method {
        Method::GET => {
            let size = tokio::fs::metadata(&path)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            Ok(upload_status(repo, id, size, StatusCode::NO_CONTENT))
        }
        Method::PATCH => {
            let size = append(ecr, id, &path, req.into_body()).await?;
            Ok(upload_status(repo, id, size, StatusCode::ACCEPTED))
        }
        Method::PUT => {
            let Some(digest) = query.get("digest") else {
                return Ok(error(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    "A digest is required to end an upload.",
                ));
            };
            append(ecr, id, &path, req.into_body()).await?;
            finish(ecr, repo, id, digest).await
        }
        Method::DELETE => {
            ecr.hashing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
            ecr.registry.cancel_upload(id)?;
            Ok(response(StatusCode::NO_CONTENT)
                .body(Body::empty())
                .expect("static"))
        }
        _ => Ok(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "The operation is unsupported.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/v2/"), Route::Base);
        assert_eq!(route("/v2"), Route::Base);
        assert_eq!(route("/v2/team/app/tags/list"), Route::Tags("team/app"));
        assert_eq!(
            route("/v2/team/app/manifests/v1"),
            Route::Manifest("team/app", "v1")
        );
        assert_eq!(route("/v2/app/blobs/uploads/"), Route::Uploads("app", ""));
        assert_eq!(
            route("/v2/app/blobs/uploads/abc"),
            Route::Uploads("app", "abc")
        );
        assert_eq!(
            route("/v2/app/blobs/sha256:00"),
            Route::Blob("app", "sha256:00")
        );
        assert_eq!(route("/v2/_catalog"), Route::Other);
    }

    #[test]
    fn registry_requests_are_told_from_s3_ones() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:4566".parse().unwrap());
        assert!(is_registry_request(&h, "/v2/", None));
        assert!(!is_registry_request(&h, "/v2x/", None));
        assert!(!is_registry_request(
            &h,
            "/v2/key",
            Some("X-Amz-Signature=abc")
        ));
        h.insert(
            header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/s3/aws4_request"
                .parse()
                .unwrap(),
        );
        assert!(!is_registry_request(&h, "/v2/key", None));
        h.insert(
            header::HOST,
            "123456789012.dkr.ecr.us-east-1.amazonaws.com"
                .parse()
                .unwrap(),
        );
        assert!(is_registry_request(&h, "/v2/app/manifests/v1", None));
    }

    #[test]
    fn queries_decode() {
        let q = query_map(Some("mount=sha256%3Aab&from=team%2Fapp&n"));
        assert_eq!(q["mount"], "sha256:ab");
        assert_eq!(q["from"], "team/app");
        assert_eq!(q["n"], "");
    }
}
