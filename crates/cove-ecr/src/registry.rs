//! The registry itself: repositories, content-addressed blobs, uploads,
//! manifests and tags, with ECR's rules (repository-scoped layers, tag
//! immutability, the last tag removed deletes the image). The control API
//! and the distribution API both call these functions; errors carry ECR's
//! API codes and messages, which the distribution side maps to the OCI
//! error codes that `docker` and `skopeo` print.

use crate::db::internal;
use crate::names::{ContentDigest, Reference};
use cove_model::{AwsError, AwsResult};
use cove_store::sql::ServiceDatabase;
use cove_store::sql::Sql;
use cove_store::sql::{self, Value};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Blobs not yet named by any manifest are kept this long, so that a push
/// whose layers are uploaded but whose manifest has not arrived survives a
/// concurrent delete in the same repository.
const UNREFERENCED_BLOB_GRACE_SECS: f64 = 3600.0;

/// One repository as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Repository {
    pub id: i64,
    pub account: String,
    pub region: String,
    pub name: String,
    pub created_at: f64,
    pub tag_mutability: String,
    pub scan_on_push: bool,
    pub encryption_type: String,
    pub kms_key: Option<String>,
    pub policy: Option<String>,
    /// `[{"Key": …, "Value": …}]`.
    pub tags: Vec<(String, String)>,
}

impl Repository {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:ecr:{}:{}:repository/{}",
            self.region, self.account, self.name
        )
    }
    pub fn uri(&self) -> String {
        format!(
            "{}.dkr.ecr.{}.amazonaws.com/{}",
            self.account, self.region, self.name
        )
    }
    pub fn immutable(&self) -> bool {
        self.tag_mutability.starts_with("IMMUTABLE")
    }
}

/// What a new repository is made with.
#[derive(Debug, Clone)]
pub struct NewRepository {
    pub name: String,
    pub tag_mutability: String,
    pub scan_on_push: bool,
    pub encryption_type: String,
    pub kms_key: Option<String>,
    pub tags: Vec<(String, String)>,
}

/// What storing a manifest made: its digest and the media type it was stored with.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub digest: ContentDigest,
    pub media_type: String,
}

/// One image: a manifest in a repository, with the tags that name it.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub digest: ContentDigest,
    pub media_type: String,
    pub artifact_media_type: Option<String>,
    pub manifest: Vec<u8>,
    pub size: i64,
    pub pushed_at: f64,
    pub last_pull: Option<f64>,
    pub tags: Vec<String>,
}

/// An image id a deletion removed: the digest, and the tag when one went.
pub type RemovedId = (ContentDigest, Option<String>);

/// Seconds since the Unix epoch, ECR's timestamp unit on the wire.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub fn repository_not_found(name: &str, account: &str) -> AwsError {
    AwsError::client(
        "RepositoryNotFoundException",
        format!(
            "The repository with name '{name}' does not exist in the registry with id '{account}'"
        ),
    )
}

pub fn image_not_found(reference: &Reference, repo: &Repository) -> AwsError {
    let id = match reference {
        Reference::Tag(t) => format!("{{imageDigest:'null', imageTag:'{t}'}}"),
        Reference::Digest(d) => format!("{{imageDigest:'{d}', imageTag:'null'}}"),
    };
    AwsError::client(
        "ImageNotFoundException",
        format!(
            "The image with imageId {id} does not exist within the repository with name '{}' in the registry with id '{}'",
            repo.name, repo.account
        ),
    )
}

/// The registry: metadata in SQLite or the shared PostgreSQL, blob bytes
/// under `dir/blobs`.
pub struct Registry {
    db: ServiceDatabase,
    dir: PathBuf,
    /// How old a file under `blobs/` or `uploads/` that no row holds must
    /// be before it is removed: none on one server; on a directory shared
    /// by replicas, [`SHARED_ORPHAN_AGE`].
    orphan_age: std::time::Duration,
}

/// On a shared directory, younger unheld files may be a blob or upload
/// another replica is storing, whose row is not committed yet.
const SHARED_ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(60);

impl Registry {
    /// Opens the registry kept in `dir` (created if needed), its metadata in
    /// `dir/ecr.db`, or in the shared PostgreSQL at `shared_metadata` (API
    /// replicas, which then all share `dir`).
    pub fn open(dir: &Path, shared_metadata: Option<&str>) -> anyhow::Result<Registry> {
        for sub in ["blobs/sha256", "uploads"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        Ok(Registry {
            db: match shared_metadata {
                Some(url) => crate::db::connect_postgres(url)?,
                None => crate::db::open(&dir.join("ecr.db"))?,
            },
            dir: dir.to_path_buf(),
            orphan_age: match shared_metadata {
                Some(_) => SHARED_ORPHAN_AGE,
                None => std::time::Duration::ZERO,
            },
        })
    }

    /// Where the bytes of blob `digest` live once stored.
    pub fn blob_path(&self, digest: &ContentDigest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    fn upload_path(&self, id: &str) -> PathBuf {
        self.dir.join("uploads").join(id)
    }

    // ---- repositories ----

    pub fn create_repository(
        &self,
        account: &str,
        region: &str,
        new: &NewRepository,
    ) -> AwsResult<Repository> {
        self.db.write(|tx| {
            if find_repo(tx, account, region, &new.name)?.is_some() {
                return Err(AwsError::client(
                    "RepositoryAlreadyExistsException",
                    format!(
                        "The repository with name '{}' already exists in the registry with id '{account}'",
                        new.name
                    ),
                )
                .into());
            }
            tx.execute(
                "INSERT INTO repositories (account, region, name, created_at, tag_mutability,
                     scan_on_push, encryption_type, kms_key, tags)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                &[
                    account.into(),
                    region.into(),
                    new.name.as_str().into(),
                    now_secs().into(),
                    new.tag_mutability.as_str().into(),
                    new.scan_on_push.into(),
                    new.encryption_type.as_str().into(),
                    new.kms_key.as_ref().into(),
                    tags_json(&new.tags).as_str().into(),
                ],
            )?;
            Ok(find_repo(tx, account, region, &new.name)?.ok_or_else(|| internal("vanished"))?)
        })
    }

    pub fn repository(&self, account: &str, region: &str, name: &str) -> AwsResult<Repository> {
        self.db
            .read(|c| Ok(find_repo(c, account, region, name)?))?
            .ok_or_else(|| repository_not_found(name, account))
    }

    pub fn repositories(&self, account: &str, region: &str) -> AwsResult<Vec<Repository>> {
        self.db.read(|c| {
            Ok(c.query(
                &format!("{REPO_COLUMNS} WHERE account = ?1 AND region = ?2 ORDER BY name"),
                &[account.into(), region.into()],
                repo_row,
            )?)
        })
    }

    /// Changes a repository's stored settings with `f`.
    pub fn update_repository(
        &self,
        account: &str,
        region: &str,
        name: &str,
        f: impl Fn(&mut Repository) -> AwsResult<()> + Send + Sync,
    ) -> AwsResult<Repository> {
        self.db.write(|tx| {
            let mut repo = find_repo(tx, account, region, name)?
                .ok_or_else(|| repository_not_found(name, account))?;
            f(&mut repo)?;
            tx.execute(
                "UPDATE repositories SET tag_mutability = ?2, scan_on_push = ?3, policy = ?4,
                     tags = ?5 WHERE id = ?1",
                &[
                    repo.id.into(),
                    repo.tag_mutability.as_str().into(),
                    repo.scan_on_push.into(),
                    repo.policy.as_ref().into(),
                    tags_json(&repo.tags).as_str().into(),
                ],
            )?;
            Ok(repo)
        })
    }

    /// Deletes a repository; one holding images only with `force`, and then
    /// with its images.
    pub fn delete_repository(
        &self,
        account: &str,
        region: &str,
        name: &str,
        force: bool,
    ) -> AwsResult<(Repository, i64)> {
        let out = self.db.write(|tx| {
            let repo = find_repo(tx, account, region, name)?
                .ok_or_else(|| repository_not_found(name, account))?;
            let images = tx.query_one(
                "SELECT COUNT(*) FROM images WHERE repo_id = ?1",
                &[repo.id.into()],
                |r| r.int(0),
            )?;
            if images > 0 && !force {
                return Err(AwsError::client(
                    "RepositoryNotEmptyException",
                    format!(
                        "The repository with name '{name}' in registry with id '{account}' cannot be deleted because it still contains images"
                    ),
                )
                .into());
            }
            for table in ["blobs", "images", "image_refs", "tags", "uploads"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE repo_id = ?1"),
                    &[repo.id.into()],
                )?;
            }
            tx.execute("DELETE FROM repositories WHERE id = ?1", &[repo.id.into()])?;
            Ok((repo, images))
        })?;
        self.remove_orphan_files();
        Ok(out)
    }

    // ---- blobs ----

    /// The size of blob `digest` if repository `repo` holds it.
    pub fn blob_size(&self, repo: &Repository, digest: &ContentDigest) -> AwsResult<Option<i64>> {
        self.db.read(|c| {
            Ok(c.query_opt(
                "SELECT size FROM blobs WHERE repo_id = ?1 AND digest = ?2",
                &[repo.id.into(), digest.as_str().into()],
                |r| r.int(0),
            )?)
        })
    }

    /// Makes blob `digest`, held by repository `from`, available in `repo`
    /// too (a cross-repository mount); false when `from` does not hold it.
    pub fn mount_blob(
        &self,
        repo: &Repository,
        from: &Repository,
        digest: &ContentDigest,
    ) -> AwsResult<bool> {
        let Some(size) = self.blob_size(from, digest)? else {
            return Ok(false);
        };
        self.add_blob(repo, digest, size)?;
        Ok(true)
    }

    fn add_blob(&self, repo: &Repository, digest: &ContentDigest, size: i64) -> AwsResult<()> {
        self.db.write(|tx| {
            tx.execute(
                "INSERT INTO blobs (repo_id, digest, size, added_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (repo_id, digest) DO UPDATE SET added_at = excluded.added_at",
                &[
                    repo.id.into(),
                    digest.as_str().into(),
                    size.into(),
                    now_secs().into(),
                ],
            )?;
            Ok(())
        })
    }

    /// Starts an upload into `repo`; its bytes go to [`Self::upload_file`].
    pub fn start_upload(&self, repo: &Repository) -> AwsResult<String> {
        let id = uuid::Uuid::new_v4().to_string();
        std::fs::File::create(self.upload_path(&id)).map_err(internal)?;
        self.db.write(|tx| {
            tx.execute(
                "INSERT INTO uploads (id, repo_id, started) VALUES (?1, ?2, ?3)",
                &[id.as_str().into(), repo.id.into(), now_secs().into()],
            )?;
            Ok(())
        })?;
        Ok(id)
    }

    /// The file an open upload of `repo` writes to, if `id` is one.
    pub fn upload_file(&self, repo: &Repository, id: &str) -> AwsResult<Option<PathBuf>> {
        let known: Option<i64> = self.db.read(|c| {
            Ok(c.query_opt(
                "SELECT repo_id FROM uploads WHERE id = ?1",
                &[id.into()],
                |r| r.int(0),
            )?)
        })?;
        Ok(known
            .filter(|r| *r == repo.id)
            .map(|_| self.upload_path(id)))
    }

    /// Ends an upload: its bytes must hash to `expected`; they become blob
    /// `expected` of the repository. `hashed` is the digest and size of the
    /// bytes as they were written, if the caller kept it. `Ok(Err(()))` when
    /// they do not match (the upload is dropped either way).
    pub fn finish_upload(
        &self,
        repo: &Repository,
        id: &str,
        expected: &ContentDigest,
        hashed: Option<(ContentDigest, i64)>,
    ) -> AwsResult<Result<i64, ()>> {
        let path = self.upload_path(id);
        let on_disk = std::fs::metadata(&path).map_err(internal)?.len();
        // The digest computed while the bytes arrived, when it covers all of
        // them; else (after a restart, say) the file is read again.
        let (actual, size) = match hashed {
            Some((d, n)) if u64::try_from(n).ok() == Some(on_disk) => (d, n),
            _ => hash_file(&path).map_err(internal)?,
        };
        self.cancel_upload_row(id)?;
        if &actual != expected {
            let _ = std::fs::remove_file(&path);
            return Ok(Err(()));
        }
        let dest = self.blob_path(expected);
        if dest.exists() {
            let _ = std::fs::remove_file(&path);
        } else {
            std::fs::rename(&path, &dest).map_err(internal)?;
        }
        self.add_blob(repo, expected, size)?;
        Ok(Ok(size))
    }

    /// Drops an unfinished upload.
    pub fn cancel_upload(&self, id: &str) -> AwsResult<()> {
        self.cancel_upload_row(id)?;
        let _ = std::fs::remove_file(self.upload_path(id));
        Ok(())
    }

    fn cancel_upload_row(&self, id: &str) -> AwsResult<()> {
        self.db.write(|tx| {
            tx.execute("DELETE FROM uploads WHERE id = ?1", &[id.into()])?;
            Ok(())
        })
    }

    /// Stores `bytes` as a blob of `repo` directly (for images Cove builds
    /// or imports itself).
    pub fn put_blob(&self, repo: &Repository, bytes: &[u8]) -> AwsResult<ContentDigest> {
        let digest = ContentDigest::of(bytes);
        let dest = self.blob_path(&digest);
        if !dest.exists() {
            let tmp = self.upload_path(&uuid::Uuid::new_v4().to_string());
            std::fs::write(&tmp, bytes).map_err(internal)?;
            std::fs::rename(&tmp, &dest).map_err(internal)?;
        }
        self.add_blob(repo, &digest, len_i64(bytes.len()))?;
        Ok(digest)
    }

    /// Stores a copy of the file at `path` as a blob of `repo`.
    pub fn put_blob_file(&self, repo: &Repository, path: &Path) -> AwsResult<ContentDigest> {
        let (digest, size) = hash_file(path).map_err(internal)?;
        let dest = self.blob_path(&digest);
        if !dest.exists() {
            let tmp = self.upload_path(&uuid::Uuid::new_v4().to_string());
            std::fs::copy(path, &tmp).map_err(internal)?;
            std::fs::rename(&tmp, &dest).map_err(internal)?;
        }
        self.add_blob(repo, &digest, size)?;
        Ok(digest)
    }

    // ---- manifests ----

    /// Stores a manifest under `reference` (a tag, or the digest it must
    /// have). Every blob it names must be in the repository, and every
    /// manifest an index names must be an image of it.
    pub fn put_manifest(
        &self,
        repo: &Repository,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> AwsResult<Stored> {
        let digest = ContentDigest::of(bytes);
        if let Reference::Digest(d) = reference {
            if d != &digest {
                return Err(AwsError::client(
                    "ImageDigestDoesNotMatchException",
                    format!(
                        "The provided image digest '{d}' does not match the digest of the manifest '{digest}'."
                    ),
                ));
            }
        }
        let parsed = crate::manifest::parse(bytes, content_type)?;
        self.db.write(|tx| {
            let mut missing_blobs: Vec<String> = Vec::new();
            for b in &parsed.blobs {
                if !has_row(tx, "blobs", repo.id, b.as_str())? {
                    missing_blobs.push(b.to_string());
                }
            }
            if !missing_blobs.is_empty() {
                return Err(AwsError::client(
                    "LayersNotFoundException",
                    format!(
                        "Layers with digests '[{}]' required for pushing image into repository with name '{}' in the registry with id '{}' do not exist",
                        missing_blobs.join(", "),
                        repo.name,
                        repo.account
                    ),
                )
                .into());
            }
            for m in &parsed.manifests {
                if !has_row(tx, "images", repo.id, m.as_str())? {
                    return Err(AwsError::client(
                        "ReferencedImagesNotFoundException",
                        format!("The image with digest '{m}' referenced by the manifest list does not exist in the repository with name '{}'", repo.name),
                    )
                    .into());
                }
            }
            if let Reference::Tag(tag) = reference {
                let current = tx.query_opt(
                    "SELECT digest FROM tags WHERE repo_id = ?1 AND tag = ?2",
                    &[repo.id.into(), tag.into()],
                    |r| r.text(0),
                )?;
                if repo.immutable() && current.as_deref().is_some_and(|c| c != digest.as_str()) {
                    return Err(AwsError::client(
                        "ImageTagAlreadyExistsException",
                        format!(
                            "The image tag '{tag}' already exists in the '{}' repository and cannot be overwritten because the repository is immutable.",
                            repo.name
                        ),
                    )
                    .into());
                }
            }
            let size: i64 = parsed.sizes.iter().sum();
            tx.execute(
                "INSERT INTO images (repo_id, digest, media_type, artifact_media_type,
                     manifest, size, pushed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT DO NOTHING",
                &[
                    repo.id.into(),
                    digest.as_str().into(),
                    parsed.media_type.as_str().into(),
                    parsed.artifact_media_type.as_ref().into(),
                    bytes.into(),
                    size.into(),
                    now_secs().into(),
                ],
            )?;
            for target in parsed.blobs.iter().chain(&parsed.manifests) {
                tx.execute(
                    "INSERT INTO image_refs (repo_id, image_digest, target) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                    &[repo.id.into(), digest.as_str().into(), target.as_str().into()],
                )?;
            }
            if let Reference::Tag(tag) = reference {
                tx.execute(
                    "INSERT INTO tags (repo_id, tag, digest) VALUES (?1, ?2, ?3)
                     ON CONFLICT (repo_id, tag) DO UPDATE SET digest = excluded.digest",
                    &[repo.id.into(), tag.into(), digest.as_str().into()],
                )?;
            }
            Ok(())
        })?;
        Ok(Stored {
            digest,
            media_type: parsed.media_type,
        })
    }

    /// The digest a reference names in `repo`, if any.
    pub fn resolve(
        &self,
        repo: &Repository,
        reference: &Reference,
    ) -> AwsResult<Option<ContentDigest>> {
        self.db.read(|c| Ok(resolve_in(c, repo.id, reference)?))
    }

    /// The image a reference names; `pulled` records the pull time as
    /// `lastRecordedPullTime`.
    pub fn image(
        &self,
        repo: &Repository,
        reference: &Reference,
        pulled: bool,
    ) -> AwsResult<Option<Image>> {
        let Some(digest) = self.resolve(repo, reference)? else {
            return Ok(None);
        };
        if pulled {
            self.db.write(|tx| {
                tx.execute(
                    "UPDATE images SET last_pull = ?3 WHERE repo_id = ?1 AND digest = ?2",
                    &[repo.id.into(), digest.as_str().into(), now_secs().into()],
                )?;
                Ok(())
            })?;
        }
        Ok(self.images_with(repo, Some(&digest))?.pop())
    }

    /// Every image of `repo`, oldest push first, with their tags.
    pub fn images(&self, repo: &Repository) -> AwsResult<Vec<Image>> {
        self.images_with(repo, None)
    }

    /// The images of `repo`, or only the one with `digest`.
    fn images_with(
        &self,
        repo: &Repository,
        digest: Option<&ContentDigest>,
    ) -> AwsResult<Vec<Image>> {
        let only = digest.map(ContentDigest::as_str);
        self.db.read(|c| {
            // The cast names ?2's type, which PostgreSQL cannot infer here.
            let mut images = c.query(
                "SELECT digest, media_type, artifact_media_type, manifest, size, pushed_at,
                     last_pull FROM images
                 WHERE repo_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR digest = ?2)
                 ORDER BY pushed_at, digest",
                &[repo.id.into(), only.into()],
                |r| {
                    Ok(Image {
                        digest: r.str(0)?.parse().unwrap_or_else(|_| ContentDigest::of(b"")),
                        media_type: r.text(1)?,
                        artifact_media_type: r.opt_text(2)?,
                        manifest: r.bytes(3)?,
                        size: r.int(4)?,
                        pushed_at: r.real(5)?,
                        last_pull: r.opt_real(6)?,
                        tags: Vec::new(),
                    })
                },
            )?;
            let tags = c.query(
                "SELECT tag, digest FROM tags WHERE repo_id = ?1 ORDER BY tag",
                &[repo.id.into()],
                |r| Ok((r.text(0)?, r.text(1)?)),
            )?;
            for (tag, digest) in tags {
                if let Some(i) = images.iter_mut().find(|i| i.digest.as_str() == digest) {
                    i.tags.push(tag);
                }
            }
            Ok(images)
        })
    }

    /// The tags of `repo`, sorted.
    pub fn tags(&self, repo: &Repository) -> AwsResult<Vec<String>> {
        self.db.read(|c| {
            Ok(c.query(
                "SELECT tag FROM tags WHERE repo_id = ?1 ORDER BY tag",
                &[repo.id.into()],
                |r| r.text(0),
            )?)
        })
    }

    /// Deletes what `reference` names: a tag (and its image once no tag is
    /// left on it), or an image with all its tags. Returns the
    /// `(digest, tag)` pairs removed; `None` when nothing matched.
    pub fn delete_image(
        &self,
        repo: &Repository,
        reference: &Reference,
    ) -> AwsResult<Option<Vec<RemovedId>>> {
        let out = self.db.write(|tx| {
            let Some(digest) = resolve_in(tx, repo.id, reference)? else {
                return Ok(None);
            };
            let tags = tx.query(
                "SELECT tag FROM tags WHERE repo_id = ?1 AND digest = ?2 ORDER BY tag",
                &[repo.id.into(), digest.as_str().into()],
                |r| r.text(0),
            )?;
            let (removed_tags, image_goes) = match reference {
                Reference::Tag(t) => (vec![t.clone()], tags.len() <= 1),
                Reference::Digest(_) => (tags.clone(), true),
            };
            for t in &removed_tags {
                tx.execute(
                    "DELETE FROM tags WHERE repo_id = ?1 AND tag = ?2",
                    &[repo.id.into(), t.into()],
                )?;
            }
            if image_goes {
                for table in [
                    "images WHERE repo_id = ?1 AND digest = ?2",
                    "image_refs WHERE repo_id = ?1 AND image_digest = ?2",
                ] {
                    tx.execute(
                        &format!("DELETE FROM {table}"),
                        &[repo.id.into(), digest.as_str().into()],
                    )?;
                }
                tx.execute(
                    "DELETE FROM blobs WHERE repo_id = ?1 AND added_at < ?2 AND digest NOT IN
                         (SELECT target FROM image_refs WHERE repo_id = ?1)",
                    &[
                        repo.id.into(),
                        Value::from(now_secs() - UNREFERENCED_BLOB_GRACE_SECS),
                    ],
                )?;
            }
            let mut out: Vec<RemovedId> = removed_tags
                .into_iter()
                .map(|t| (digest.clone(), Some(t)))
                .collect();
            if out.is_empty() {
                out.push((digest, None));
            }
            Ok(Some(out))
        })?;
        self.remove_orphan_files();
        Ok(out)
    }

    /// Removes blob files that no repository holds any more, and uploads
    /// that no open upload owns (left by a crash).
    fn remove_orphan_files(&self) {
        let held: std::collections::HashSet<String> = match self.db.read(|c| {
            Ok(c.query(
                "SELECT DISTINCT digest FROM blobs UNION SELECT id FROM uploads",
                &[],
                |r| r.text(0),
            )?)
        }) {
            Ok(h) => h.into_iter().collect(),
            Err(_) => return,
        };
        let old_enough = |e: &std::fs::DirEntry| {
            self.orphan_age.is_zero()
                || e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|at| at.elapsed().is_ok_and(|age| age >= self.orphan_age))
        };
        for (sub, prefix) in [("blobs/sha256", "sha256:"), ("uploads", "")] {
            let Ok(entries) = std::fs::read_dir(self.dir.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !held.contains(&format!("{prefix}{name}")) && old_enough(&e) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

const REPO_COLUMNS: &str = "SELECT id, account, region, name, created_at, tag_mutability,
    scan_on_push, encryption_type, kms_key, policy, tags FROM repositories";

fn repo_row(r: &sql::Row) -> sql::Result<Repository> {
    Ok(Repository {
        id: r.int(0)?,
        account: r.text(1)?,
        region: r.text(2)?,
        name: r.text(3)?,
        created_at: r.real(4)?,
        tag_mutability: r.text(5)?,
        scan_on_push: r.int(6)? != 0,
        encryption_type: r.text(7)?,
        kms_key: r.opt_text(8)?,
        policy: r.opt_text(9)?,
        tags: serde_json::from_str(r.str(10)?).unwrap_or_default(),
    })
}

fn find_repo(
    c: &mut dyn Sql,
    account: &str,
    region: &str,
    name: &str,
) -> sql::Result<Option<Repository>> {
    c.query_opt(
        &format!("{REPO_COLUMNS} WHERE account = ?1 AND region = ?2 AND name = ?3"),
        &[account.into(), region.into(), name.into()],
        repo_row,
    )
}

fn has_row(c: &mut dyn Sql, table: &str, repo: i64, digest: &str) -> sql::Result<bool> {
    Ok(c.query_opt(
        &format!("SELECT 1 FROM {table} WHERE repo_id = ?1 AND digest = ?2"),
        &[repo.into(), digest.into()],
        |_| Ok(()),
    )?
    .is_some())
}

fn resolve_in(
    c: &mut dyn Sql,
    repo: i64,
    reference: &Reference,
) -> sql::Result<Option<ContentDigest>> {
    let found: Option<String> = match reference {
        Reference::Tag(t) => c.query_opt(
            "SELECT digest FROM tags WHERE repo_id = ?1 AND tag = ?2",
            &[repo.into(), t.into()],
            |r| r.text(0),
        )?,
        Reference::Digest(d) => has_row(c, "images", repo, d.as_str())?.then(|| d.to_string()),
    };
    Ok(found.and_then(|d| d.parse().ok()))
}

fn tags_json(tags: &[(String, String)]) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "[]".into())
}

fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The SHA-256 digest and size of a file, read in 1 MiB pieces.
pub fn hash_file(path: &Path) -> std::io::Result<(ContentDigest, i64)> {
    use sha2::Digest as _;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0usize;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n;
        hasher.update(&buf[..n]);
    }
    Ok((
        ContentDigest::from_sha256(hasher.finalize().into()),
        len_i64(size),
    ))
}
