//! The registry end to end inside the crate: the control API through
//! `Service::handle`, the distribution API through `distribution::serve`
//! with real HTTP requests, on a registry in a temporary directory.

use super::*;
use crate::token::authorization_token;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use cove_wire::RequestContext;
use serde_json::json;

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

struct Fixture {
    _dir: tempfile::TempDir,
    ecr: Arc<Ecr>,
    /// The metadata is in PostgreSQL (the registry of API replicas).
    shared: bool,
    _database: Option<cove_store::scratch::ScratchDatabase>,
}

/// A registry with its metadata in SQLite.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ecr = Arc::new(Ecr::open(&dir.path().join("ecr"), None, ACCOUNT, REGION).unwrap());
    Fixture {
        _dir: dir,
        ecr,
        shared: false,
        _database: None,
    }
}

/// A registry with its metadata in a PostgreSQL database of its own, when
/// `COVE_TEST_POSTGRES` names a server.
fn shared_fixture() -> Option<Fixture> {
    let database = cove_store::scratch::from_env("cove_ecr_test")?;
    let dir = tempfile::tempdir().unwrap();
    let ecr = Ecr::open(
        &dir.path().join("ecr"),
        Some(&database.url),
        ACCOUNT,
        REGION,
    )
    .unwrap();
    Some(Fixture {
        _dir: dir,
        ecr: Arc::new(ecr),
        shared: true,
        _database: Some(database),
    })
}

fn call(ecr: &Ecr, op: &str, input: Value) -> AwsResult<Value> {
    let ctx = RequestContext::internal(
        op,
        REGION,
        ACCOUNT,
        &format!("arn:aws:iam::{ACCOUNT}:root"),
        "AKIAEXAMPLE",
    );
    ecr.handle(&ctx, input)
}

fn code(r: AwsResult<Value>) -> String {
    r.err().map(|e| e.code).unwrap_or_default()
}

/// Pushes a one-layer image to `repo` under `tag` through the registry's
/// Rust API; returns the manifest digest and the manifest.
fn push(ecr: &Ecr, repo: &str, tag: &str, layer: &[u8]) -> (ContentDigest, String) {
    let r = ecr.registry.repository(ACCOUNT, REGION, repo).unwrap();
    let config = br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/train"]}}"#;
    let config_digest = ecr.registry.put_blob(&r, config).unwrap();
    let layer_digest = ecr.registry.put_blob(&r, layer).unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.as_str(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest.as_str(), "size": layer.len()}]
    })
    .to_string();
    let digest = ecr
        .registry
        .put_manifest(&r, &Reference::Tag(tag.into()), None, manifest.as_bytes())
        .unwrap()
        .digest;
    (digest, manifest)
}

fn repositories_have_ecr_rules_and_words(f: Fixture) {
    let out = call(
        &f.ecr,
        "CreateRepository",
        json!({"repositoryName": "team/model"}),
    )
    .unwrap();
    let repo = &out["repository"];
    assert_eq!(repo["repositoryUri"], format!("{HOST}/team/model"));
    assert_eq!(
        repo["repositoryArn"],
        format!("arn:aws:ecr:{REGION}:{ACCOUNT}:repository/team/model")
    );
    assert_eq!(repo["imageTagMutability"], "MUTABLE");
    assert_eq!(repo["encryptionConfiguration"]["encryptionType"], "AES256");

    let again = call(
        &f.ecr,
        "CreateRepository",
        json!({"repositoryName": "team/model"}),
    )
    .unwrap_err();
    assert_eq!(again.code, "RepositoryAlreadyExistsException");
    assert_eq!(
        again.message,
        format!("The repository with name 'team/model' already exists in the registry with id '{ACCOUNT}'")
    );
    let missing = call(
        &f.ecr,
        "DescribeRepositories",
        json!({"repositoryNames": ["nope"]}),
    )
    .unwrap_err();
    assert_eq!(
        missing.message,
        format!(
            "The repository with name 'nope' does not exist in the registry with id '{ACCOUNT}'"
        )
    );

    push(&f.ecr, "team/model", "v1", b"layer one");
    let full = call(
        &f.ecr,
        "DeleteRepository",
        json!({"repositoryName": "team/model"}),
    );
    assert_eq!(code(full), "RepositoryNotEmptyException");
    let blob_files = || {
        std::fs::read_dir(
            f.ecr
                .registry
                .blob_path(&ContentDigest::of(b""))
                .parent()
                .unwrap(),
        )
        .unwrap()
        .count()
    };
    assert_eq!(blob_files(), 2);
    call(
        &f.ecr,
        "DeleteRepository",
        json!({"repositoryName": "team/model", "force": true}),
    )
    .unwrap();
    // On a directory shared by replicas, files this young stay (they might
    // be another replica's blobs in the making).
    assert_eq!(
        blob_files(),
        if f.shared { 2 } else { 0 },
        "a deleted repository's blobs leave the disk"
    );
    let listed = call(&f.ecr, "DescribeRepositories", json!({})).unwrap();
    assert_eq!(listed["repositories"], json!([]));
}

fn images_tags_and_deletion(f: Fixture) {
    call(&f.ecr, "CreateRepository", json!({"repositoryName": "app"})).unwrap();
    let (digest, manifest) = push(&f.ecr, "app", "v1", b"0123456789");
    let r = f.ecr.registry.repository(ACCOUNT, REGION, "app").unwrap();
    f.ecr
        .registry
        .put_manifest(
            &r,
            &Reference::Tag("latest".into()),
            None,
            manifest.as_bytes(),
        )
        .unwrap();

    let d = call(&f.ecr, "DescribeImages", json!({"repositoryName": "app"})).unwrap();
    let detail = &d["imageDetails"][0];
    assert_eq!(detail["imageDigest"], digest.as_str());
    assert_eq!(detail["imageTags"], json!(["latest", "v1"]));
    assert_eq!(detail["imageSizeInBytes"], 10);
    assert_eq!(detail["imageManifestMediaType"], manifest::OCI_MANIFEST);

    let dup = call(
        &f.ecr,
        "PutImage",
        json!({"repositoryName": "app", "imageManifest": manifest, "imageTag": "v1"}),
    );
    assert_eq!(code(dup), "ImageAlreadyExistsException");

    let got = call(
        &f.ecr,
        "BatchGetImage",
        json!({"repositoryName": "app", "imageIds": [{"imageTag": "v1"}, {"imageTag": "nope"}]}),
    )
    .unwrap();
    assert_eq!(got["images"][0]["imageManifest"], manifest);
    assert_eq!(got["failures"][0]["failureCode"], "ImageNotFound");
    assert_eq!(
        got["failures"][0]["failureReason"],
        "Requested image not found"
    );

    // Removing one tag keeps the image; removing the last deletes it.
    let del = call(
        &f.ecr,
        "BatchDeleteImage",
        json!({"repositoryName": "app", "imageIds": [{"imageTag": "v1"}]}),
    )
    .unwrap();
    assert_eq!(
        del["imageIds"],
        json!([{"imageDigest": digest.as_str(), "imageTag": "v1"}])
    );
    let ids = call(&f.ecr, "ListImages", json!({"repositoryName": "app"})).unwrap();
    assert_eq!(
        ids["imageIds"],
        json!([{"imageDigest": digest.as_str(), "imageTag": "latest"}])
    );
    call(
        &f.ecr,
        "BatchDeleteImage",
        json!({"repositoryName": "app", "imageIds": [{"imageTag": "latest"}]}),
    )
    .unwrap();
    let ids = call(&f.ecr, "ListImages", json!({"repositoryName": "app"})).unwrap();
    assert_eq!(ids["imageIds"], json!([]));
    let gone = call(
        &f.ecr,
        "DescribeImages",
        json!({"repositoryName": "app", "imageIds": [{"imageTag": "latest"}]}),
    )
    .unwrap_err();
    assert_eq!(gone.code, "ImageNotFoundException");
    assert_eq!(
        gone.message,
        format!("The image with imageId {{imageDigest:'null', imageTag:'latest'}} does not exist within the repository with name 'app' in the registry with id '{ACCOUNT}'")
    );
}

fn immutable_tags_and_missing_layers_are_refused(f: Fixture) {
    call(
        &f.ecr,
        "CreateRepository",
        json!({"repositoryName": "frozen", "imageTagMutability": "IMMUTABLE"}),
    )
    .unwrap();
    push(&f.ecr, "frozen", "v1", b"first");
    let r = f
        .ecr
        .registry
        .repository(ACCOUNT, REGION, "frozen")
        .unwrap();
    let second = push_err(&f.ecr, &r, "v1", b"second");
    assert_eq!(second.code, "ImageTagAlreadyExistsException");

    let manifest = json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": ContentDigest::of(b"unknown").as_str(), "size": 7},
        "layers": []
    })
    .to_string();
    let e = f
        .ecr
        .registry
        .put_manifest(&r, &Reference::Tag("v2".into()), None, manifest.as_bytes())
        .unwrap_err();
    assert_eq!(e.code, "LayersNotFoundException");
    assert!(f.ecr.registry.tags(&r).unwrap() == vec!["v1".to_string()]);
}

fn push_err(ecr: &Ecr, r: &Repository, tag: &str, layer: &[u8]) -> AwsError {
    let layer_digest = ecr.registry.put_blob(r, layer).unwrap();
    let config_digest = ecr.registry.put_blob(r, b"{}").unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.as_str(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest.as_str(), "size": layer.len()}]
    })
    .to_string();
    ecr.registry
        .put_manifest(r, &Reference::Tag(tag.into()), None, manifest.as_bytes())
        .unwrap_err()
}

fn jobs_resolve_image_uris_to_layer_files(f: Fixture) {
    f.ecr.ensure_repository("trainer").unwrap();
    let (digest, _) = push(&f.ecr, "trainer", "latest", b"layer bytes");
    let image = f.ecr.resolve(&format!("{HOST}/trainer")).unwrap();
    assert_eq!(image.digest, digest);
    assert_eq!(std::fs::read(&image.layers[0]).unwrap(), b"layer bytes");
    assert_eq!(image.config["config"]["Entrypoint"][0], "/bin/train");
    let pinned = f.ecr.resolve(&format!("{HOST}/trainer@{digest}")).unwrap();
    assert_eq!(pinned.digest, digest);
    assert_eq!(
        code(
            f.ecr
                .resolve(&format!("{HOST}/trainer:v9"))
                .map(|_| json!({}))
        ),
        "ImageNotFoundException"
    );
    assert_eq!(
        code(f.ecr.resolve(&format!("{HOST}/other")).map(|_| json!({}))),
        "RepositoryNotFoundException"
    );
    let listed = call(
        &f.ecr,
        "DescribeImages",
        json!({"repositoryName": "trainer"}),
    )
    .unwrap();
    assert!(listed["imageDetails"][0]["lastRecordedPullTime"].is_number());
}

fn basic(ecr: &Ecr) -> String {
    let out = call(ecr, "GetAuthorizationToken", json!({})).unwrap();
    let data = &out["authorizationData"][0];
    assert_eq!(data["proxyEndpoint"], format!("https://{HOST}"));
    format!("Basic {}", data["authorizationToken"].as_str().unwrap())
}

async fn send(
    ecr: &Arc<Ecr>,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, HOST);
    if let Some(a) = auth {
        b = b.header(header::AUTHORIZATION, a);
    }
    let resp = distribution::serve(ecr.clone(), b.body(Body::from(body)).unwrap()).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, bytes.to_vec())
}

#[tokio::test]
async fn distribution_api_push_and_pull() {
    let f = fixture();
    let ecr = &f.ecr;
    let (status, headers, _) = send(ecr, "GET", "/v2/", None, vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .starts_with("Basic realm="));
    let auth = basic(ecr);
    let (status, _, _) = send(ecr, "GET", "/v2/", Some(&auth), vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let forged = format!("Basic {}", authorization_token("bm90.bm90"));
    assert_eq!(
        send(ecr, "GET", "/v2/", Some(&forged), vec![]).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Pushing to a repository that does not exist fails as on ECR.
    let (status, _, body) = send(ecr, "POST", "/v2/app/blobs/uploads/", Some(&auth), vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["errors"][0]["code"], "NAME_UNKNOWN");
    ecr.ensure_repository("app").unwrap();

    // A chunked upload: POST, two PATCHes, PUT with the digest.
    let layer = b"a layer in two pieces".to_vec();
    let digest = ContentDigest::of(&layer);
    let (status, headers, _) =
        send(ecr, "POST", "/v2/app/blobs/uploads/", Some(&auth), vec![]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let location = headers[header::LOCATION].to_str().unwrap().to_string();
    let (status, headers, _) =
        send(ecr, "PATCH", &location, Some(&auth), layer[..5].to_vec()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(headers[header::RANGE], "0-4");
    send(ecr, "PATCH", &location, Some(&auth), layer[5..].to_vec()).await;
    let wrong = ContentDigest::of(b"other");
    let (status, _, _) = send(
        ecr,
        "PUT",
        &format!("{location}?digest={wrong}"),
        Some(&auth),
        vec![],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a digest mismatch is refused"
    );

    // The mismatch dropped the upload; a monolithic upload stores the layer.
    let (status, headers, _) = send(
        ecr,
        "POST",
        &format!("/v2/app/blobs/uploads/?digest={digest}"),
        Some(&auth),
        layer.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["Docker-Content-Digest"], digest.as_str());
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = ContentDigest::of(&config);
    send(
        ecr,
        "POST",
        &format!("/v2/app/blobs/uploads/?digest={config_digest}"),
        Some(&auth),
        config.clone(),
    )
    .await;

    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest::DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": config_digest.as_str(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": digest.as_str(), "size": layer.len()}]
    })
    .to_string();
    let (status, headers, _) = send(
        ecr,
        "PUT",
        "/v2/app/manifests/v1",
        Some(&auth),
        manifest.clone().into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let manifest_digest = headers["Docker-Content-Digest"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        manifest_digest,
        ContentDigest::of(manifest.as_bytes()).as_str()
    );

    let (status, headers, body) =
        send(ecr, "GET", "/v2/app/manifests/v1", Some(&auth), vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], manifest::DOCKER_MANIFEST);
    assert_eq!(body, manifest.as_bytes());
    let (_, _, body) = send(
        ecr,
        "GET",
        &format!("/v2/app/blobs/{digest}"),
        Some(&auth),
        vec![],
    )
    .await;
    assert_eq!(body, layer);
    let (_, _, body) = send(ecr, "GET", "/v2/app/tags/list", Some(&auth), vec![]).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"name": "app", "tags": ["v1"]})
    );

    // Layers belong to their repository until mounted into another.
    ecr.ensure_repository("copy").unwrap();
    let (status, _, _) = send(
        ecr,
        "HEAD",
        &format!("/v2/copy/blobs/{digest}"),
        Some(&auth),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = send(
        ecr,
        "POST",
        &format!("/v2/copy/blobs/uploads/?mount={digest}&from=app"),
        Some(&auth),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, _) = send(
        ecr,
        "HEAD",
        &format!("/v2/copy/blobs/{digest}"),
        Some(&auth),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (status, _, body) = send(ecr, "GET", "/v2/app/manifests/v2", Some(&auth), vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["errors"][0]["code"], "MANIFEST_UNKNOWN");
}

/// Runs each test on a registry with SQLite metadata and on one with
/// PostgreSQL metadata.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(super::fixture());
                }
            )*
        }
        mod on_postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(f) = super::shared_fixture() {
                        super::$name(f);
                    }
                }
            )*
        }
    };
}

on_both_databases!(
    repositories_have_ecr_rules_and_words,
    images_tags_and_deletion,
    immutable_tags_and_missing_layers_are_refused,
    jobs_resolve_image_uris_to_layer_files,
);
