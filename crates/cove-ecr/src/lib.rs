//! Cove's container registry, compatible with Amazon ECR: the ECR control
//! API (awsJson 1.1, signing name `ecr`) and the OCI distribution API that
//! `docker`, `skopeo`, `crane` and `oras` use against
//! `<account>.dkr.ecr.<region>.amazonaws.com`, over one store.
//!
//! # Storage
//! Blob bytes live on disk by digest (`ecr/blobs/sha256/<hex>`, shared by
//! every repository that holds them; uploads in progress in `ecr/uploads/`);
//! repositories, images, tags and which repository holds which blob live in
//! SQLite (`ecr/ecr.db`). Layers are scoped to repositories as in ECR: a
//! blob pushed to one repository is served from another only after a
//! cross-repository mount or a push there.
//!
//! # What jobs use
//! [`Ecr::resolve`] turns an image URI from a SageMaker request into the
//! manifest and the layer files to unpack, so training, processing, hosting
//! and transform run images pushed here.

mod api;
mod db;
pub mod distribution;
pub mod import;
pub mod manifest;
pub mod names;
pub mod registry;
pub mod token;

use cove_model::{AwsError, AwsResult};
use cove_wire::{model::ServiceModel, Protocol, RequestContext, Service};
use names::{ContentDigest, ImageUri, Reference};
use registry::{NewRepository, Registry, Repository};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use token::Tokens;

/// The registry service: its store, the password signer, and the registry
/// a request without an ECR host name goes to.
pub struct Ecr {
    pub registry: Arc<Registry>,
    pub tokens: Tokens,
    pub account: String,
    pub region: String,
    /// The SHA-256 state of uploads in progress, by upload id, with the
    /// number of bytes it covers.
    pub(crate) hashing: std::sync::Mutex<std::collections::HashMap<String, (u64, sha2::Sha256)>>,
    /// Finds who an access key belongs to: the principal another account's
    /// repository policy is asked about.
    pub(crate) credentials: Option<cove_wire::dispatch::CredentialLookup>,
    /// The accounts that have credentials on this server. A registry of
    /// any other account holds provided images (SageMaker's framework and
    /// algorithm images under AWS's own account ids, put there with
    /// `cove image-import`), which every account may pull, as on AWS.
    pub(crate) accounts: std::collections::BTreeSet<String>,
}

/// An image found for a job: its manifest digest and its layers' files,
/// bottom first.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub digest: ContentDigest,
    pub layers: Vec<PathBuf>,
    /// The image config (`config.Entrypoint`, `config.Cmd`, `config.Env`, …).
    pub config: Value,
}

impl Ecr {
    /// Opens the registry under `dir` (made if needed) for `account`'s
    /// registry in `region`; its metadata is in `dir`, or in the shared
    /// PostgreSQL at `shared_metadata` (API replicas, which share `dir`).
    pub fn open(
        dir: &Path,
        shared_metadata: Option<&str>,
        account: &str,
        region: &str,
    ) -> anyhow::Result<Ecr> {
        let registry = Registry::open(dir, shared_metadata)?;
        Ok(Ecr {
            registry: Arc::new(registry),
            tokens: Tokens::open(&dir.join("token.key"))?,
            account: account.to_string(),
            region: region.to_string(),
            hashing: Default::default(),
            credentials: None,
            accounts: [account.to_string()].into(),
        })
    }

    /// Lets repository policies judge pulls and pushes from other
    /// accounts by the caller's ARN (without it, by the account's root).
    pub fn with_credentials(
        mut self,
        lookup: cove_wire::dispatch::CredentialLookup,
        accounts: impl IntoIterator<Item = String>,
    ) -> Ecr {
        self.credentials = Some(lookup);
        self.accounts.extend(accounts);
        self
    }

    /// Whether the holder of a registry password from another account may
    /// do `action` on `repo`: only when the repository's policy allows it,
    /// as on AWS (provided images are readable by all). The refusal is
    /// AWS's message.
    pub(crate) fn cross_account_refusal(
        &self,
        repo: &registry::Repository,
        holder: &token::Holder,
        action: &str,
    ) -> Option<String> {
        let arn = self
            .credentials
            .as_ref()
            .and_then(|lookup| lookup(&holder.access_key))
            .filter(|p| p.account_id == holder.account)
            .map_or_else(
                || format!("arn:aws:iam::{}:root", holder.account),
                |p| p.arn,
            );
        let reads = matches!(
            action,
            "ecr:BatchGetImage"
                | "ecr:GetDownloadUrlForLayer"
                | "ecr:BatchCheckLayerAvailability"
                | "ecr:ListImages"
        );
        if reads && !self.accounts.contains(&repo.account) {
            return None;
        }
        let cx =
            cove_model::policy::RequestContext::new(action, &repo.arn(), &arn, &holder.account);
        let allowed = repo
            .policy
            .as_deref()
            .and_then(|doc| {
                cove_model::policy::Policy::parse(doc, cove_model::policy::Kind::Repository).ok()
            })
            .is_some_and(|p| p.evaluate(&cx) == cove_model::policy::Decision::Allow);
        (!allowed).then(|| {
            format!(
                "User: {arn} is not authorized to perform: {action} on resource: {} because no resource-based policy allows the {action} action",
                repo.arn()
            )
        })
    }

    /// An `Authorization` header for this registry's distribution API,
    /// with a fresh password for `account` as `GetAuthorizationToken`
    /// gives one to `caller` (Cove's own pulls through a job's VPC).
    pub fn basic_authorization(&self, account: &str, caller: &str) -> String {
        let (password, _) = self.tokens.issue(account, caller, registry::now_secs());
        format!("Basic {}", token::authorization_token(&password))
    }

    /// [`Ecr::resolve`] for a pull by `holder`: another account's
    /// repository only where its policy allows `ecr:BatchGetImage`.
    pub fn resolve_as(&self, uri: &str, holder: &token::Holder) -> AwsResult<ResolvedImage> {
        let image = self.resolve(uri)?;
        if let Ok(parsed) = uri.parse::<ImageUri>() {
            if parsed.registry.account != holder.account {
                let repo = self.registry.repository(
                    &parsed.registry.account,
                    &parsed.registry.region,
                    &parsed.repository,
                )?;
                if let Some(message) =
                    self.cross_account_refusal(&repo, holder, "ecr:BatchGetImage")
                {
                    return Err(AwsError::client("AccessDeniedException", message));
                }
            }
        }
        Ok(image)
    }

    /// The image an ECR image URI names, with its layers on disk; for an
    /// index, its linux/amd64 image (or its first).
    pub fn resolve(&self, uri: &str) -> AwsResult<ResolvedImage> {
        let parsed: ImageUri = uri.parse().map_err(|()| {
            AwsError::client(
                "ValidationException",
                format!("'{uri}' is not an ECR image URI (<account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag|@digest])."),
            )
        })?;
        let repo = self.registry.repository(
            &parsed.registry.account,
            &parsed.registry.region,
            &parsed.repository,
        )?;
        let image = self
            .registry
            .image(&repo, &parsed.reference, true)?
            .ok_or_else(|| registry::image_not_found(&parsed.reference, &repo))?;
        let mut manifest: Value = serde_json::from_slice(&image.manifest).map_err(db::internal)?;
        let mut digest = image.digest.clone();
        if let Some(children) = manifest.get("manifests").and_then(Value::as_array) {
            let chosen = children
                .iter()
                .find(|m| m["platform"]["architecture"] == "amd64")
                .or(children.first())
                .and_then(|m| m["digest"].as_str())
                .and_then(|d| d.parse::<ContentDigest>().ok())
                .ok_or_else(|| db::internal("an index lists no image"))?;
            let child = self
                .registry
                .image(&repo, &Reference::Digest(chosen.clone()), false)?
                .ok_or_else(|| {
                    registry::image_not_found(&Reference::Digest(chosen.clone()), &repo)
                })?;
            manifest = serde_json::from_slice(&child.manifest).map_err(db::internal)?;
            digest = chosen;
        }
        let blob = |v: &Value| -> AwsResult<ContentDigest> {
            v["digest"]
                .as_str()
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| db::internal("a manifest names a bad digest"))
        };
        let config_digest = blob(&manifest["config"])?;
        let config: Value = std::fs::read(self.registry.blob_path(&config_digest))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let layer_digests = manifest["layers"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(blob)
            .collect::<AwsResult<Vec<_>>>()?;
        let layers = layer_digests
            .iter()
            .map(|d| self.registry.blob_path(d))
            .collect();
        Ok(ResolvedImage {
            digest,
            layers,
            config,
        })
    }

    /// Repository `name` of this registry, made (mutable, AES256) if it
    /// does not exist.
    pub fn ensure_repository(&self, name: &str) -> AwsResult<Repository> {
        self.ensure_repository_in(&self.account, &self.region, name)
    }

    /// Repository `name` of `account`'s registry in `region`, made if it
    /// does not exist: what `cove image-import` pushes into.
    pub fn ensure_repository_in(
        &self,
        account: &str,
        region: &str,
        name: &str,
    ) -> AwsResult<Repository> {
        match self.registry.repository(account, region, name) {
            Ok(r) => Ok(r),
            Err(e) if e.code == "RepositoryNotFoundException" => self.registry.create_repository(
                account,
                region,
                &NewRepository {
                    name: name.to_string(),
                    tag_mutability: "MUTABLE".into(),
                    scan_on_push: false,
                    encryption_type: "AES256".into(),
                    kms_key: None,
                    tags: Vec::new(),
                },
            ),
            Err(e) => Err(e),
        }
    }
}

impl Service for Ecr {
    fn signing_name(&self) -> &'static str {
        "ecr"
    }
    fn protocol(&self) -> Protocol {
        Protocol::Json
    }
    fn model(&self) -> &'static ServiceModel {
        cove_wire::model::ecr()
    }
    fn handle(&self, ctx: &RequestContext, input: Value) -> AwsResult<Value> {
        api::handle(self, ctx, &input)
    }
}

#[cfg(test)]
mod tests;
