//! The ECR control API (awsJson 1.1, `AmazonEC2ContainerRegistry_V20150921.*`):
//! parses each request once into its `cove_shapes::ecr` type and answers in
//! ECR's shapes and words. Images pushed through the distribution API and
//! through `PutImage` are the same images.

use crate::names::{ContentDigest, Reference};
use crate::registry::{image_not_found, now_secs, Image, NewRepository, Repository};
use crate::token::authorization_token;
use crate::Ecr;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cove_model::{AwsError, AwsResult};
use cove_shapes::ecr::{self, Request};
use cove_wire::RequestContext;
use serde_json::{json, Value};

pub fn handle(ecr: &Ecr, ctx: &RequestContext, input: &Value) -> AwsResult<Value> {
    let request = match Request::parse(&ctx.operation, input) {
        Some(Ok(r)) => r,
        Some(Err(e)) => return Err(invalid(e)),
        None => {
            return Err(AwsError::client(
                "UnknownOperationException",
                format!(
                    "The operation {} is not supported by Cove's ECR.",
                    ctx.operation
                ),
            ))
        }
    };
    let cx = Cx { ecr, ctx };
    match &request {
        Request::CreateRepository(q) => cx.create_repository(q),
        Request::DescribeRepositories(q) => cx.describe_repositories(q),
        Request::DeleteRepository(q) => cx.delete_repository(q),
        Request::DescribeImages(q) => cx.describe_images(q),
        Request::ListImages(q) => cx.list_images(q),
        Request::BatchGetImage(q) => cx.batch_get_image(q),
        Request::BatchDeleteImage(q) => cx.batch_delete_image(q),
        Request::PutImage(q) => cx.put_image(q),
        Request::BatchCheckLayerAvailability(q) => cx.batch_check_layers(q),
        Request::GetAuthorizationToken(q) => cx.get_authorization_token(q),
        Request::SetRepositoryPolicy(q) => cx.set_policy(q),
        Request::GetRepositoryPolicy(q) => cx.get_policy(q),
        Request::DeleteRepositoryPolicy(q) => cx.delete_policy(q),
        Request::PutImageTagMutability(q) => cx.put_tag_mutability(q),
        Request::TagResource(q) => cx.tag_resource(q),
        Request::UntagResource(q) => cx.untag_resource(q),
        Request::ListTagsForResource(q) => cx.list_tags(q),
    }
}

pub fn invalid(why: impl std::fmt::Display) -> AwsError {
    AwsError::client("InvalidParameterException", why.to_string())
}

fn render_repository(r: &Repository) -> Value {
    let mut encryption = json!({"encryptionType": r.encryption_type});
    if let Some(k) = &r.kms_key {
        encryption["kmsKey"] = json!(k);
    }
    json!({
        "repositoryArn": r.arn(),
        "registryId": r.account,
        "repositoryName": r.name,
        "repositoryUri": r.uri(),
        "createdAt": r.created_at,
        "imageTagMutability": r.tag_mutability,
        "imageScanningConfiguration": {"scanOnPush": r.scan_on_push},
        "encryptionConfiguration": encryption,
    })
}

fn image_id(digest: &ContentDigest, tag: Option<&str>) -> Value {
    let mut v = json!({"imageDigest": digest.as_str()});
    if let Some(t) = tag {
        v["imageTag"] = json!(t);
    }
    v
}

/// A reference from an `ImageIdentifier`: the digest when given, else the tag.
fn reference_of(id: &ecr::ImageIdentifier) -> Result<Reference, &'static str> {
    match (&id.image_digest, &id.image_tag) {
        (Some(d), _) => d
            .parse()
            .map(Reference::Digest)
            .map_err(|_| "InvalidImageDigest"),
        (None, Some(t)) => Ok(Reference::Tag(t.clone())),
        (None, None) => Err("MissingDigestAndTag"),
    }
}

fn failure(id: &ecr::ImageIdentifier, code: &str, reason: &str) -> Value {
    let mut image_id = json!({});
    if let Some(d) = &id.image_digest {
        image_id["imageDigest"] = json!(d);
    }
    if let Some(t) = &id.image_tag {
        image_id["imageTag"] = json!(t);
    }
    json!({"imageId": image_id, "failureCode": code, "failureReason": reason})
}

fn failure_reason(code: &str) -> &'static str {
    match code {
        "InvalidImageDigest" => "Invalid request parameters: image digest should satisfy the regex '[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+'",
        "MissingDigestAndTag" => "Invalid request parameters: both tag and digest cannot be null",
        _ => "Requested image not found",
    }
}

/// A page of `items` after `token` (an index, opaque to callers).
fn page<T>(
    items: Vec<T>,
    max: Option<i64>,
    token: Option<&str>,
) -> AwsResult<(Vec<T>, Option<String>)> {
    let start = match token {
        Some(t) => URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| invalid("Invalid parameter at 'nextToken' failed to satisfy constraint: 'must be a valid token'"))?,
        None => 0,
    };
    let limit = max.map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    let (out, next) = cove_model::paging::cut(items, start, limit);
    Ok((out, next.map(|end| URL_SAFE_NO_PAD.encode(end.to_string()))))
}

fn with_next(mut v: Value, next: Option<String>) -> Value {
    if let Some(t) = next {
        v["nextToken"] = json!(t);
    }
    v
}

struct Cx<'a> {
    ecr: &'a Ecr,
    ctx: &'a RequestContext,
}

impl Cx<'_> {
    fn account(&self) -> &str {
        self.ctx.account_id()
    }

    /// The repository named in a request, in the caller's registry (the
    /// only one Cove has: another registry id finds no repository).
    fn repo(&self, registry: &Option<String>, name: &str) -> AwsResult<Repository> {
        match registry.as_deref() {
            Some(id) if id != self.account() => {
                Err(crate::registry::repository_not_found(name, id))
            }
            _ => self
                .ecr
                .registry
                .repository(self.account(), &self.ctx.region, name),
        }
    }

    /// The repository an ECR ARN of this account and region names.
    fn repo_by_arn(&self, arn: &str) -> AwsResult<Repository> {
        let prefix = format!(
            "arn:aws:ecr:{}:{}:repository/",
            self.ctx.region,
            self.account()
        );
        match arn.strip_prefix(&prefix) {
            Some(name) => self.repo(&None, name),
            None => Err(invalid(format!(
                "Invalid parameter at 'resourceArn' failed to satisfy constraint: 'The ARN {arn} is not a repository ARN of this registry'"
            ))),
        }
    }

    fn create_repository(&self, q: &ecr::CreateRepositoryRequest) -> AwsResult<Value> {
        let mutability = q
            .image_tag_mutability
            .clone()
            .unwrap_or_else(|| "MUTABLE".into());
        if !matches!(mutability.as_str(), "MUTABLE" | "IMMUTABLE") {
            return Err(invalid(format!(
                "Cove supports the tag mutability settings MUTABLE and IMMUTABLE, not {mutability}."
            )));
        }
        let tags = q
            .tags
            .iter()
            .flatten()
            .map(|t| (t.key.clone(), t.value.clone()))
            .collect();
        let encryption = q.encryption_configuration.as_ref();
        let repo = self.ecr.registry.create_repository(
            self.account(),
            &self.ctx.region,
            &NewRepository {
                name: q.repository_name.clone(),
                tag_mutability: mutability,
                scan_on_push: q
                    .image_scanning_configuration
                    .as_ref()
                    .and_then(|s| s.scan_on_push)
                    .unwrap_or(false),
                encryption_type: encryption
                    .map_or_else(|| "AES256".to_string(), |e| e.encryption_type.clone()),
                kms_key: encryption.and_then(|e| e.kms_key.clone()),
                tags,
            },
        )?;
        Ok(json!({"repository": render_repository(&repo)}))
    }

    fn describe_repositories(&self, q: &ecr::DescribeRepositoriesRequest) -> AwsResult<Value> {
        let repos = match &q.repository_names {
            Some(names) => {
                if q.max_results.is_some() {
                    return Err(invalid(
                        "Invalid parameter: maxResults cannot be combined with repositoryNames",
                    ));
                }
                names
                    .iter()
                    .map(|n| self.repo(&q.registry_id, n))
                    .collect::<AwsResult<Vec<_>>>()?
            }
            None => self
                .ecr
                .registry
                .repositories(self.account(), &self.ctx.region)?,
        };
        let (repos, next) = page(repos, q.max_results, q.next_token.as_deref())?;
        let items: Vec<Value> = repos.iter().map(render_repository).collect();
        Ok(with_next(json!({"repositories": items}), next))
    }

    fn delete_repository(&self, q: &ecr::DeleteRepositoryRequest) -> AwsResult<Value> {
        self.repo(&q.registry_id, &q.repository_name)?;
        let (repo, _) = self.ecr.registry.delete_repository(
            self.account(),
            &self.ctx.region,
            &q.repository_name,
            q.force.unwrap_or(false),
        )?;
        Ok(json!({"repository": render_repository(&repo)}))
    }

    fn image_detail(repo: &Repository, i: &Image) -> Value {
        let mut v = json!({
            "registryId": repo.account,
            "repositoryName": repo.name,
            "imageDigest": i.digest.as_str(),
            "imageSizeInBytes": i.size,
            "imagePushedAt": i.pushed_at,
            "imageManifestMediaType": i.media_type,
        });
        if !i.tags.is_empty() {
            v["imageTags"] = json!(i.tags);
        }
        if let Some(a) = &i.artifact_media_type {
            v["artifactMediaType"] = json!(a);
        }
        if let Some(t) = i.last_pull {
            v["lastRecordedPullTime"] = json!(t);
        }
        v
    }

    fn describe_images(&self, q: &ecr::DescribeImagesRequest) -> AwsResult<Value> {
        let repo = self.repo(&q.registry_id, &q.repository_name)?;
        let all = self.ecr.registry.images(&repo)?;
        let chosen: Vec<Image> = match &q.image_ids {
            Some(ids) => {
                if q.max_results.is_some() {
                    return Err(invalid(
                        "Invalid parameter: maxResults cannot be combined with imageIds",
                    ));
                }
                let mut out: Vec<Image> = Vec::new();
                for id in ids {
                    let reference = reference_of(id).map_err(|c| invalid(failure_reason(c)))?;
                    let digest = self.ecr.registry.resolve(&repo, &reference)?;
                    let found = digest.and_then(|d| all.iter().find(|i| i.digest == d));
                    match found {
                        Some(i) if !out.contains(i) => out.push(i.clone()),
                        Some(_) => {}
                        None => return Err(image_not_found(&reference, &repo)),
                    }
                }
                out
            }
            None => {
                let status = q
                    .filter
                    .as_ref()
                    .and_then(|f| f.tag_status.as_deref())
                    .unwrap_or("ANY");
                all.into_iter()
                    .filter(|i| match status {
                        "TAGGED" => !i.tags.is_empty(),
                        "UNTAGGED" => i.tags.is_empty(),
                        _ => true,
                    })
                    .collect()
            }
        };
        let (images, next) = page(chosen, q.max_results, q.next_token.as_deref())?;
        let details: Vec<Value> = images
            .iter()
            .map(|i| Self::image_detail(&repo, i))
            .collect();
        Ok(with_next(json!({"imageDetails": details}), next))
    }

    fn list_images(&self, q: &ecr::ListImagesRequest) -> AwsResult<Value> {
        let repo = self.repo(&q.registry_id, &q.repository_name)?;
        let status = q
            .filter
            .as_ref()
            .and_then(|f| f.tag_status.as_deref())
            .unwrap_or("ANY");
        let mut ids = Vec::new();
        for i in self.ecr.registry.images(&repo)? {
            if i.tags.is_empty() {
                if status != "TAGGED" {
                    ids.push(image_id(&i.digest, None));
                }
            } else if status != "UNTAGGED" {
                ids.extend(i.tags.iter().map(|t| image_id(&i.digest, Some(t))));
            }
        }
        let (ids, next) = page(ids, q.max_results, q.next_token.as_deref())?;
        Ok(with_next(json!({"imageIds": ids}), next))
    }

    /// Runs `f` for each image id of a batch call, collecting what it
    /// returns and the ids that fail (malformed, or `ImageNotFound` when
    /// `f` finds nothing) as ECR's `failures`.
    fn each_image(
        ids: &[ecr::ImageIdentifier],
        mut f: impl FnMut(&ecr::ImageIdentifier, Reference) -> AwsResult<Option<Vec<Value>>>,
    ) -> AwsResult<(Vec<Value>, Vec<Value>)> {
        let (mut done, mut failures) = (Vec::new(), Vec::new());
        for id in ids {
            let outcome = match reference_of(id) {
                Ok(reference) => f(id, reference)?.ok_or("ImageNotFound"),
                Err(code) => Err(code),
            };
            match outcome {
                Ok(values) => done.extend(values),
                Err(code) => failures.push(failure(id, code, failure_reason(code))),
            }
        }
        Ok((done, failures))
    }

    fn batch_get_image(&self, q: &ecr::BatchGetImageRequest) -> AwsResult<Value> {
        let repo = self.repo(&q.registry_id, &q.repository_name)?;
        let (images, failures) = Self::each_image(&q.image_ids, |id, reference| {
            let Some(i) = self.ecr.registry.image(&repo, &reference, true)? else {
                return Ok(None);
            };
            let tag = match &reference {
                Reference::Tag(t) => Some(t.as_str()),
                Reference::Digest(_) => id.image_tag.as_deref(),
            };
            Ok(Some(vec![json!({
                "registryId": repo.account,
                "repositoryName": repo.name,
                "imageId": image_id(&i.digest, tag),
                "imageManifest": String::from_utf8_lossy(&i.manifest),
                "imageManifestMediaType": i.media_type,
            })]))
        })?;
        Ok(json!({"images": images, "failures": failures}))
    }

    fn batch_delete_image(&self, q: &ecr::BatchDeleteImageRequest) -> AwsResult<Value> {
        let repo = self.repo(&q.registry_id, &q.repository_name)?;
        let (deleted, failures) = Self::each_image(&q.image_ids, |_, reference| {
            Ok(self
                .ecr
                .registry
                .delete_image(&repo, &reference)?
                .map(|removed| {
                    removed
                        .iter()
                        .map(|(d, t)| image_id(d, t.as_deref()))
                        .collect()
                }))
        })?;
        Ok(json!({"imageIds": deleted, "failures": failures}))
    }

    fn put_image(&self, q: &ecr::PutImageRequest) -> AwsResult<Value> {
        let repo = self.repo(&q.registry_id, &q.repository_name)?;
        let bytes = q.image_manifest.as_bytes();
        let digest = ContentDigest::of(bytes);
        if let Some(tag) = &q.image_tag {
            let existing = self
                .ecr
                .registry
                .resolve(&repo, &Reference::Tag(tag.clone()))?;
            if existing.as_ref() == Some(&digest) {
                return Err(AwsError::client(
                    "ImageAlreadyExistsException",
                    format!(
                        "Image with digest '{digest}' and tag '{tag}' already exists in the repository with name '{}' in registry with id '{}'",
                        repo.name, repo.account
                    ),
                ));
            }
        }
        let reference = match (&q.image_tag, &q.image_digest) {
            (Some(t), _) => Reference::Tag(t.clone()),
            (None, Some(d)) => Reference::Digest(d.parse().map_err(|_| {
                invalid("Invalid parameter at 'imageDigest' failed to satisfy constraint: 'Invalid digest'")
            })?),
            (None, None) => Reference::Digest(digest.clone()),
        };
        if let (Reference::Tag(_), Some(d)) = (&reference, &q.image_digest) {
            if d != digest.as_str() {
                return Err(AwsError::client(
                    "ImageDigestDoesNotMatchException",
                    format!("The provided image digest '{d}' does not match the digest of the manifest '{digest}'."),
                ));
            }
        }
        let stored = self.ecr.registry.put_manifest(
            &repo,
            &reference,
            q.image_manifest_media_type.as_deref(),
            bytes,
        )?;
        Ok(json!({"image": {
            "registryId": repo.account,
            "repositoryName": repo.name,
            "imageId": image_id(&stored.digest, q.image_tag.as_deref()),
            "imageManifest": q.image_manifest,
            "imageManifestMediaType": stored.media_type,
        }}))
    }

    fn batch_check_layers(&self, q: &ecr::BatchCheckLayerAvailabilityRequest) -> AwsResult<Value> {
        let repo = self.repo(&q.registry_id, &q.repository_name)?;
        let (mut layers, mut failures) = (Vec::new(), Vec::new());
        for d in &q.layer_digests {
            let Ok(digest) = d.parse::<ContentDigest>() else {
                failures.push(
                    json!({"layerDigest": d, "failureCode": "InvalidLayerDigest",
                                     "failureReason": "Invalid layer digest"}),
                );
                continue;
            };
            match self.ecr.registry.blob_size(&repo, &digest)? {
                Some(size) => layers.push(json!({
                    "layerDigest": d, "layerAvailability": "AVAILABLE", "layerSize": size,
                })),
                None => failures.push(
                    json!({"layerDigest": d, "failureCode": "MissingLayerDigest",
                                             "failureReason": "Requested layer not found"}),
                ),
            }
        }
        Ok(json!({"layers": layers, "failures": failures}))
    }

    fn get_authorization_token(&self, _q: &ecr::GetAuthorizationTokenRequest) -> AwsResult<Value> {
        let (password, expires) =
            self.ecr
                .tokens
                .issue(self.account(), &self.ctx.principal.access_key, now_secs());
        Ok(json!({"authorizationData": [{
            "authorizationToken": authorization_token(&password),
            "expiresAt": expires,
            "proxyEndpoint": format!("https://{}.dkr.ecr.{}.amazonaws.com", self.account(), self.ctx.region),
        }]}))
    }

    fn policy_answer(repo: &Repository, policy: &str) -> Value {
        json!({"registryId": repo.account, "repositoryName": repo.name, "policyText": policy})
    }

    fn set_policy(&self, q: &ecr::SetRepositoryPolicyRequest) -> AwsResult<Value> {
        self.repo(&q.registry_id, &q.repository_name)?;
        let valid =
            cove_model::policy::Policy::parse(&q.policy_text, cove_model::policy::Kind::Repository)
                .is_ok();
        if !valid {
            return Err(invalid(
                "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid repository policy provided'",
            ));
        }
        let repo = self.ecr.registry.update_repository(
            self.account(),
            &self.ctx.region,
            &q.repository_name,
            |r| {
                r.policy = Some(q.policy_text.clone());
                Ok(())
            },
        )?;
        Ok(Self::policy_answer(&repo, &q.policy_text))
    }

    fn policy_not_found(repo: &Repository) -> AwsError {
        AwsError::client(
            "RepositoryPolicyNotFoundException",
            format!(
                "Repository policy does not exist for the repository with name '{}' in the registry with id '{}'",
                repo.name, repo.account
            ),
        )
    }

    fn get_policy(&self, q: &ecr::GetRepositoryPolicyRequest) -> AwsResult<Value> {
        let repo = self.repo(&q.registry_id, &q.repository_name)?;
        match &repo.policy {
            Some(p) => Ok(Self::policy_answer(&repo, p)),
            None => Err(Self::policy_not_found(&repo)),
        }
    }

    fn delete_policy(&self, q: &ecr::DeleteRepositoryPolicyRequest) -> AwsResult<Value> {
        let repo = self.repo(&q.registry_id, &q.repository_name)?;
        let Some(policy) = repo.policy.clone() else {
            return Err(Self::policy_not_found(&repo));
        };
        self.ecr.registry.update_repository(
            self.account(),
            &self.ctx.region,
            &q.repository_name,
            |r| {
                r.policy = None;
                Ok(())
            },
        )?;
        Ok(Self::policy_answer(&repo, &policy))
    }

    fn put_tag_mutability(&self, q: &ecr::PutImageTagMutabilityRequest) -> AwsResult<Value> {
        self.repo(&q.registry_id, &q.repository_name)?;
        if !matches!(q.image_tag_mutability.as_str(), "MUTABLE" | "IMMUTABLE") {
            return Err(invalid(format!(
                "Cove supports the tag mutability settings MUTABLE and IMMUTABLE, not {}.",
                q.image_tag_mutability
            )));
        }
        let repo = self.ecr.registry.update_repository(
            self.account(),
            &self.ctx.region,
            &q.repository_name,
            |r| {
                r.tag_mutability = q.image_tag_mutability.clone();
                Ok(())
            },
        )?;
        Ok(json!({
            "registryId": repo.account,
            "repositoryName": repo.name,
            "imageTagMutability": repo.tag_mutability,
        }))
    }

    fn tag_resource(&self, q: &ecr::TagResourceRequest) -> AwsResult<Value> {
        let repo = self.repo_by_arn(&q.resource_arn)?;
        self.ecr
            .registry
            .update_repository(self.account(), &self.ctx.region, &repo.name, |r| {
                for t in &q.tags {
                    match r.tags.iter_mut().find(|(k, _)| *k == t.key) {
                        Some(existing) => existing.1 = t.value.clone(),
                        None => r.tags.push((t.key.clone(), t.value.clone())),
                    }
                }
                if r.tags.len() > 50 {
                    return Err(AwsError::client(
                        "TooManyTagsException",
                        "The repository would have more than 50 tags.",
                    ));
                }
                Ok(())
            })?;
        Ok(json!({}))
    }

    fn untag_resource(&self, q: &ecr::UntagResourceRequest) -> AwsResult<Value> {
        let repo = self.repo_by_arn(&q.resource_arn)?;
        self.ecr
            .registry
            .update_repository(self.account(), &self.ctx.region, &repo.name, |r| {
                r.tags.retain(|(k, _)| !q.tag_keys.contains(k));
                Ok(())
            })?;
        Ok(json!({}))
    }

    fn list_tags(&self, q: &ecr::ListTagsForResourceRequest) -> AwsResult<Value> {
        let repo = self.repo_by_arn(&q.resource_arn)?;
        let tags: Vec<Value> = repo
            .tags
            .iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect();
        Ok(json!({"tags": tags}))
    }
}
