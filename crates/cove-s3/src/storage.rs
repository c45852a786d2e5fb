//! S3's durable state under one directory: object bodies as files in
//! `blobs/`, everything else (buckets, policies, object metadata, multipart
//! uploads and their parts) in `s3.db`, SQLite in WAL mode.
//!
//! A body is streamed to `tmp/`, flushed to disk, renamed into `blobs/` under
//! a fresh name, and only then referenced by a metadata row in one
//! transaction; the blob it replaces is removed after the commit. A crash at
//! any point leaves either the old or the new object, plus at worst an
//! unreferenced blob, which [`Storage::open`] sweeps away.

use anyhow::Context as _;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE buckets (
    name TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    policy TEXT
);
CREATE TABLE objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    blob TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    modified_ms INTEGER NOT NULL,
    parts_count INTEGER,
    attrs TEXT NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE TABLE uploads (
    upload_id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    initiated_ms INTEGER NOT NULL,
    attrs TEXT NOT NULL
);
CREATE INDEX uploads_by_key ON uploads (bucket, key, initiated_ms);
CREATE TABLE parts (
    upload_id TEXT NOT NULL,
    part_number INTEGER NOT NULL,
    blob TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    modified_ms INTEGER NOT NULL,
    checksums TEXT NOT NULL,
    PRIMARY KEY (upload_id, part_number)
) WITHOUT ROWID;
"#,
    // The account that owns each bucket ('' until `adopt_unowned_buckets`
    // gives buckets from before accounts to the configured account).
    "ALTER TABLE buckets ADD COLUMN owner TEXT NOT NULL DEFAULT '';",
];

/// Why a storage call refused; the S3 layer maps these to AWS error codes.
#[derive(Debug)]
pub enum Refusal {
    NoSuchBucket,
    NoSuchUpload,
    BucketNotEmpty,
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Refusal {
    fn from(e: E) -> Self {
        Refusal::Other(e.into())
    }
}

pub type Result<T> = std::result::Result<T, Refusal>;

/// `NoSuchBucket` unless the bucket exists (inside the caller's transaction).
fn require_bucket(tx: &rusqlite::Transaction, bucket: &str) -> Result<()> {
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM buckets WHERE name = ?1)",
        [bucket],
        |r| r.get(0),
    )?;
    if exists {
        Ok(())
    } else {
        Err(Refusal::NoSuchBucket)
    }
}

/// Checksums a client supplied and S3 verified (base64, as on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksums {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crc32: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// What an object carries besides its bytes: the headers S3 stores and
/// returns, the user metadata (`x-amz-meta-*`) and verified checksums.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub website_redirect_location: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub checksums: Checksums,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub name: String,
    pub region: String,
    pub created_ms: i64,
    pub policy: Option<String>,
    /// The owning account.
    pub owner: String,
}

impl Bucket {
    fn from_row(r: &rusqlite::Row) -> rusqlite::Result<Bucket> {
        Ok(Bucket {
            name: r.get(0)?,
            region: r.get(1)?,
            created_ms: r.get(2)?,
            policy: r.get(3)?,
            owner: r.get(4)?,
        })
    }
}

const BUCKET_COLUMNS: &str = "name, region, created_ms, policy, owner";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub blob: String,
    pub size: u64,
    pub etag: String,
    pub modified_ms: i64,
    pub parts_count: Option<u32>,
    pub attrs: Attributes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub initiated_ms: i64,
    pub attrs: Attributes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub part_number: u32,
    pub blob: String,
    pub size: u64,
    pub etag: String,
    pub modified_ms: i64,
    pub checksums: Checksums,
}

/// A body written to `tmp/` and flushed, waiting to be committed.
#[derive(Debug)]
pub struct Staged {
    pub path: PathBuf,
}

pub struct Storage {
    root: PathBuf,
    db: Mutex<Connection>,
}

pub fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

fn new_blob_name() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        anyhow::bail!(
            "s3.db has schema version {version}, newer than this Cove ({})",
            MIGRATIONS.len()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn attrs_json(a: &Attributes) -> String {
    serde_json::to_string(a).expect("attributes serialize")
}

fn parse_attrs(s: &str) -> Attributes {
    serde_json::from_str(s).unwrap_or_default()
}

const OBJECT_COLUMNS: &str = "key, blob, size, etag, modified_ms, parts_count, attrs";

fn object_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Object> {
    Ok(Object {
        key: r.get(0)?,
        blob: r.get(1)?,
        size: r.get(2)?,
        etag: r.get(3)?,
        modified_ms: r.get(4)?,
        parts_count: r.get(5)?,
        attrs: parse_attrs(&r.get::<_, String>(6)?),
    })
}

/// The policies of the buckets stored under `dir`, read without opening the
/// storage for writing (beside a running server): for client commands.
pub fn read_bucket_policies(
    dir: &Path,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let conn = Connection::open_with_flags(
        dir.join("s3.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let mut stmt = conn.prepare("SELECT name, policy FROM buckets WHERE policy IS NOT NULL")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

impl Storage {
    /// Opens (creating if needed) the storage under `dir`, and removes
    /// staged bodies and blobs that no row references (left by a crash).
    pub fn open(dir: &Path) -> anyhow::Result<Storage> {
        for sub in ["blobs", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let mut conn = Connection::open(dir.join("s3.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        let storage = Storage {
            root: dir.to_path_buf(),
            db: Mutex::new(conn),
        };
        storage.sweep()?;
        Ok(storage)
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sweep(&self) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(self.root.join("tmp"))? {
            let _ = std::fs::remove_file(entry?.path());
        }
        let referenced: HashSet<String> = {
            let db = self.db();
            let mut stmt =
                db.prepare("SELECT blob FROM objects UNION ALL SELECT blob FROM parts")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut removed = 0;
        for shard in std::fs::read_dir(self.root.join("blobs"))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for blob in std::fs::read_dir(shard.path())? {
                let blob = blob?;
                let name = blob.file_name().to_string_lossy().into_owned();
                if !referenced.contains(&name) {
                    let _ = std::fs::remove_file(blob.path());
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "s3: removed unreferenced blobs left by a crash");
        }
        Ok(())
    }

    /// A fresh path in `tmp/` to stream a body into.
    pub fn staging_path(&self) -> PathBuf {
        self.root.join("tmp").join(new_blob_name())
    }

    pub fn blob_path(&self, blob: &str) -> PathBuf {
        self.root.join("blobs").join(&blob[..2]).join(blob)
    }

    /// Moves a staged body into `blobs/` under a new name, returning the name.
    fn adopt(&self, staged: &Staged) -> anyhow::Result<String> {
        let name = new_blob_name();
        let path = self.blob_path(&name);
        std::fs::create_dir_all(path.parent().expect("blob has a shard"))?;
        std::fs::rename(&staged.path, &path)?;
        Ok(name)
    }

    /// Adopts a staged body as a new blob and records it with `record` in one
    /// transaction. `record` answers the blob the new one replaces, which is
    /// removed once the transaction committed; if it fails, the new blob goes.
    fn commit_blob(
        &self,
        staged: &Staged,
        record: impl FnOnce(&rusqlite::Transaction, &str) -> Result<Option<String>>,
    ) -> Result<String> {
        let blob = self.adopt(staged)?;
        let result = (|| {
            let mut db = self.db();
            let tx = db.transaction()?;
            let old = record(&tx, &blob)?;
            tx.commit()?;
            Ok(old)
        })();
        match result {
            Ok(old) => {
                if let Some(old) = old {
                    self.remove_blob(&old);
                }
                Ok(blob)
            }
            Err(e) => {
                self.remove_blob(&blob);
                Err(e)
            }
        }
    }

    fn remove_blob(&self, blob: &str) {
        if let Err(e) = std::fs::remove_file(self.blob_path(blob)) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(blob, error = %e, "s3: cannot remove blob");
            }
        }
    }

    /// Creates `owner`'s bucket; false when a bucket of that name exists
    /// (bucket names are shared by every account).
    pub fn create_bucket(&self, name: &str, region: &str, owner: &str) -> Result<bool> {
        let n = self.db().execute(
            "INSERT OR IGNORE INTO buckets (name, region, created_ms, owner) VALUES (?1, ?2, ?3, ?4)",
            params![name, region, now_ms(), owner],
        )?;
        Ok(n == 1)
    }

    /// Gives the buckets stored before accounts existed to `account`.
    pub fn adopt_unowned_buckets(&self, account: &str) -> Result<()> {
        self.db()
            .execute("UPDATE buckets SET owner = ?1 WHERE owner = ''", [account])?;
        Ok(())
    }

    pub fn bucket(&self, name: &str) -> Result<Bucket> {
        self.db()
            .query_row(
                &format!("SELECT {BUCKET_COLUMNS} FROM buckets WHERE name = ?1"),
                [name],
                Bucket::from_row,
            )
            .optional()?
            .ok_or(Refusal::NoSuchBucket)
    }

    /// The buckets `owner` owns, by name.
    pub fn buckets(&self, owner: &str) -> Result<Vec<Bucket>> {
        let db = self.db();
        let mut stmt = db.prepare(&format!(
            "SELECT {BUCKET_COLUMNS} FROM buckets WHERE owner = ?1 ORDER BY name"
        ))?;
        let rows = stmt.query_map([owner], Bucket::from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes an empty bucket, with any multipart uploads still open in it.
    pub fn delete_bucket(&self, name: &str) -> Result<()> {
        let part_blobs: Vec<String> = {
            let mut db = self.db();
            let tx = db.transaction()?;
            require_bucket(&tx, name)?;
            let has_objects: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM objects WHERE bucket = ?1)",
                [name],
                |r| r.get(0),
            )?;
            if has_objects {
                return Err(Refusal::BucketNotEmpty);
            }
            let blobs = {
                let mut stmt = tx.prepare(
                    "SELECT p.blob FROM parts p JOIN uploads u ON u.upload_id = p.upload_id WHERE u.bucket = ?1",
                )?;
                let rows = stmt.query_map([name], |r| r.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            tx.execute(
                "DELETE FROM parts WHERE upload_id IN (SELECT upload_id FROM uploads WHERE bucket = ?1)",
                [name],
            )?;
            tx.execute("DELETE FROM uploads WHERE bucket = ?1", [name])?;
            tx.execute("DELETE FROM buckets WHERE name = ?1", [name])?;
            tx.commit()?;
            blobs
        };
        part_blobs.iter().for_each(|b| self.remove_blob(b));
        Ok(())
    }

    /// Sets or clears a bucket's policy.
    pub fn set_policy(&self, bucket: &str, policy: Option<&str>) -> Result<()> {
        let n = self.db().execute(
            "UPDATE buckets SET policy = ?2 WHERE name = ?1",
            params![bucket, policy],
        )?;
        if n == 0 {
            return Err(Refusal::NoSuchBucket);
        }
        Ok(())
    }

    pub fn object(&self, bucket: &str, key: &str) -> Result<Option<Object>> {
        Ok(self
            .db()
            .query_row(
                &format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = ?1 AND key = ?2"),
                [bucket, key],
                object_row,
            )
            .optional()?)
    }

    /// Runs `f` over the bucket's objects in key order, starting at the
    /// first key at or after `prefix` and after `after`, and stopping when
    /// the keys leave `prefix` or `f` has seen enough (it reads lazily).
    pub fn scan_objects<R>(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        f: impl FnOnce(&mut dyn Iterator<Item = Object>) -> R,
    ) -> Result<R> {
        let db = self.db();
        let mut stmt = db.prepare(&format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = ?1 AND key >= ?2 AND key > ?3 ORDER BY key"
        ))?;
        let rows = stmt.query_map(params![bucket, prefix, after.unwrap_or("")], object_row)?;
        let mut iter = rows
            .map_while(|r| {
                r.map_err(|e| tracing::error!(error = %e, "s3: listing stopped"))
                    .ok()
            })
            .take_while(|o| o.key.starts_with(prefix));
        Ok(f(&mut iter))
    }

    /// Makes a staged body the object `bucket/key`, replacing any earlier one.
    #[allow(clippy::too_many_arguments)]
    pub fn commit_object(
        &self,
        bucket: &str,
        key: &str,
        staged: &Staged,
        size: u64,
        etag: &str,
        parts_count: Option<u32>,
        attrs: &Attributes,
    ) -> Result<Object> {
        let modified_ms = now_ms();
        let blob = self.commit_blob(staged, |tx, blob| {
            require_bucket(tx, bucket)?;
            let old: Option<String> = tx
                .query_row(
                    "SELECT blob FROM objects WHERE bucket = ?1 AND key = ?2",
                    [bucket, key],
                    |r| r.get(0),
                )
                .optional()?;
            tx.execute(
                "INSERT OR REPLACE INTO objects (bucket, key, blob, size, etag, modified_ms, parts_count, attrs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    bucket,
                    key,
                    blob,
                    size,
                    etag,
                    modified_ms,
                    parts_count.map(i64::from),
                    attrs_json(attrs)
                ],
            )?;
            Ok(old)
        })?;
        Ok(Object {
            key: key.to_string(),
            blob,
            size,
            etag: etag.to_string(),
            modified_ms,
            parts_count,
            attrs: attrs.clone(),
        })
    }

    /// Deletes `bucket/key`; deleting a missing key is not an error (as on S3).
    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<()> {
        let old: Option<String> = {
            let mut db = self.db();
            let tx = db.transaction()?;
            require_bucket(&tx, bucket)?;
            let old = tx
                .query_row(
                    "DELETE FROM objects WHERE bucket = ?1 AND key = ?2 RETURNING blob",
                    [bucket, key],
                    |r| r.get(0),
                )
                .optional()?;
            tx.commit()?;
            old
        };
        if let Some(blob) = old {
            self.remove_blob(&blob);
        }
        Ok(())
    }

    pub fn create_upload(&self, bucket: &str, key: &str, attrs: &Attributes) -> Result<Upload> {
        let upload = Upload {
            upload_id: format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ),
            bucket: bucket.to_string(),
            key: key.to_string(),
            initiated_ms: now_ms(),
            attrs: attrs.clone(),
        };
        let mut db = self.db();
        let tx = db.transaction()?;
        require_bucket(&tx, bucket)?;
        tx.execute(
            "INSERT INTO uploads (upload_id, bucket, key, initiated_ms, attrs) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                upload.upload_id,
                bucket,
                key,
                upload.initiated_ms,
                attrs_json(attrs)
            ],
        )?;
        tx.commit()?;
        Ok(upload)
    }

    /// The upload `upload_id` of `bucket/key`; NoSuchUpload when it is not
    /// open or belongs to another object.
    pub fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Upload> {
        let found = self
            .db()
            .query_row(
                "SELECT upload_id, bucket, key, initiated_ms, attrs FROM uploads WHERE upload_id = ?1",
                [upload_id],
                |r| {
                    Ok(Upload {
                        upload_id: r.get(0)?,
                        bucket: r.get(1)?,
                        key: r.get(2)?,
                        initiated_ms: r.get(3)?,
                        attrs: parse_attrs(&r.get::<_, String>(4)?),
                    })
                },
            )
            .optional()?;
        match found {
            Some(u) if u.bucket == bucket && u.key == key => Ok(u),
            _ => {
                self.bucket(bucket)?;
                Err(Refusal::NoSuchUpload)
            }
        }
    }

    /// Open uploads of a bucket in (key, initiation) order.
    pub fn uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<Upload>> {
        self.bucket(bucket)?;
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT upload_id, bucket, key, initiated_ms, attrs FROM uploads
             WHERE bucket = ?1 AND key >= ?2 ORDER BY key, initiated_ms, upload_id",
        )?;
        let rows = stmt.query_map(params![bucket, prefix], |r| {
            Ok(Upload {
                upload_id: r.get(0)?,
                bucket: r.get(1)?,
                key: r.get(2)?,
                initiated_ms: r.get(3)?,
                attrs: parse_attrs(&r.get::<_, String>(4)?),
            })
        })?;
        Ok(rows
            .collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .take_while(|u| u.key.starts_with(prefix))
            .collect())
    }

    /// Stores a part, replacing an earlier upload of the same part number.
    pub fn commit_part(
        &self,
        upload_id: &str,
        part_number: u32,
        staged: &Staged,
        size: u64,
        etag: &str,
        checksums: &Checksums,
    ) -> Result<Part> {
        let modified_ms = now_ms();
        let blob = self.commit_blob(staged, |tx, blob| {
            let open: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM uploads WHERE upload_id = ?1)",
                [upload_id],
                |r| r.get(0),
            )?;
            if !open {
                return Err(Refusal::NoSuchUpload);
            }
            let old = tx
                .query_row(
                    "SELECT blob FROM parts WHERE upload_id = ?1 AND part_number = ?2",
                    params![upload_id, part_number],
                    |r| r.get(0),
                )
                .optional()?;
            tx.execute(
                "INSERT OR REPLACE INTO parts (upload_id, part_number, blob, size, etag, modified_ms, checksums)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    upload_id,
                    part_number,
                    blob,
                    size,
                    etag,
                    modified_ms,
                    serde_json::to_string(checksums)?
                ],
            )?;
            Ok(old)
        })?;
        Ok(Part {
            part_number,
            blob,
            size,
            etag: etag.to_string(),
            modified_ms,
            checksums: checksums.clone(),
        })
    }

    pub fn parts(&self, upload_id: &str) -> Result<Vec<Part>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT part_number, blob, size, etag, modified_ms, checksums FROM parts
             WHERE upload_id = ?1 ORDER BY part_number",
        )?;
        let rows = stmt.query_map([upload_id], |r| {
            Ok(Part {
                part_number: r.get(0)?,
                blob: r.get(1)?,
                size: r.get(2)?,
                etag: r.get(3)?,
                modified_ms: r.get(4)?,
                checksums: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Ends an upload: the assembled body becomes the object and the upload
    /// and all its parts go, in one transaction.
    pub fn complete_upload(
        &self,
        upload: &Upload,
        staged: &Staged,
        size: u64,
        etag: &str,
        parts_count: u32,
    ) -> Result<Object> {
        let blob = self.adopt(staged)?;
        let modified_ms = now_ms();
        let result = (|| -> Result<(Option<String>, Vec<String>)> {
            let mut db = self.db();
            let tx = db.transaction()?;
            let part_blobs = {
                let mut stmt = tx.prepare("SELECT blob FROM parts WHERE upload_id = ?1")?;
                let rows = stmt.query_map([&upload.upload_id], |r| r.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            let n = tx.execute(
                "DELETE FROM uploads WHERE upload_id = ?1",
                [&upload.upload_id],
            )?;
            if n == 0 {
                return Err(Refusal::NoSuchUpload);
            }
            tx.execute(
                "DELETE FROM parts WHERE upload_id = ?1",
                [&upload.upload_id],
            )?;
            let old: Option<String> = tx
                .query_row(
                    "SELECT blob FROM objects WHERE bucket = ?1 AND key = ?2",
                    [&upload.bucket, &upload.key],
                    |r| r.get(0),
                )
                .optional()?;
            tx.execute(
                "INSERT OR REPLACE INTO objects (bucket, key, blob, size, etag, modified_ms, parts_count, attrs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    upload.bucket,
                    upload.key,
                    blob,
                    size,
                    etag,
                    modified_ms,
                    i64::from(parts_count),
                    attrs_json(&upload.attrs)
                ],
            )?;
            tx.commit()?;
            Ok((old, part_blobs))
        })();
        match result {
            Ok((old, part_blobs)) => {
                old.iter()
                    .chain(&part_blobs)
                    .for_each(|b| self.remove_blob(b));
                Ok(Object {
                    key: upload.key.clone(),
                    blob,
                    size,
                    etag: etag.to_string(),
                    modified_ms,
                    parts_count: Some(parts_count),
                    attrs: upload.attrs.clone(),
                })
            }
            Err(e) => {
                self.remove_blob(&blob);
                Err(e)
            }
        }
    }

    pub fn abort_upload(&self, upload_id: &str) -> Result<()> {
        let blobs = {
            let mut db = self.db();
            let tx = db.transaction()?;
            let blobs = {
                let mut stmt = tx.prepare("SELECT blob FROM parts WHERE upload_id = ?1")?;
                let rows = stmt.query_map([upload_id], |r| r.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            let n = tx.execute("DELETE FROM uploads WHERE upload_id = ?1", [upload_id])?;
            if n == 0 {
                return Err(Refusal::NoSuchUpload);
            }
            tx.execute("DELETE FROM parts WHERE upload_id = ?1", [upload_id])?;
            tx.commit()?;
            blobs
        };
        blobs.iter().for_each(|b| self.remove_blob(b));
        Ok(())
    }

    /// Writes a whole body from memory and commits it: Cove's own writes.
    pub fn put_bytes(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        attrs: &Attributes,
    ) -> Result<Object> {
        use std::io::Write as _;
        let staged = Staged {
            path: self.staging_path(),
        };
        let written = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&staged.path)?;
            f.write_all(body)?;
            f.sync_data()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&staged.path);
            return Err(e.into());
        }
        let etag = crate::listing::md5_hex(body);
        let result =
            self.commit_object(bucket, key, &staged, body.len() as u64, &etag, None, attrs);
        if result.is_err() {
            let _ = std::fs::remove_file(&staged.path);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(ct: &str) -> Attributes {
        Attributes {
            content_type: Some(ct.into()),
            metadata: [("owner".to_string(), "me".to_string())].into(),
            ..Default::default()
        }
    }

    fn blob_count(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("blobs"))
            .unwrap()
            .map(|s| std::fs::read_dir(s.unwrap().path()).unwrap().count())
            .sum()
    }

    #[test]
    fn objects_survive_reopen_and_replaced_blobs_go() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Storage::open(dir.path()).unwrap();
            assert!(s.create_bucket("b", "us-east-1", "123456789012").unwrap());
            assert!(!s.create_bucket("b", "us-east-1", "123456789012").unwrap());
            s.put_bytes("b", "k", b"one", &attrs("text/plain")).unwrap();
            s.put_bytes("b", "k", b"two!", &attrs("text/x")).unwrap();
            assert_eq!(blob_count(dir.path()), 1);
            assert!(matches!(
                s.put_bytes("nope", "k", b"x", &Attributes::default()),
                Err(Refusal::NoSuchBucket)
            ));
            assert_eq!(blob_count(dir.path()), 1);
        }
        let s = Storage::open(dir.path()).unwrap();
        let o = s.object("b", "k").unwrap().unwrap();
        assert_eq!(o.size, 4);
        assert_eq!(o.etag, crate::listing::md5_hex(b"two!"));
        assert_eq!(o.attrs, attrs("text/x"));
        assert_eq!(std::fs::read(s.blob_path(&o.blob)).unwrap(), b"two!");
        assert!(matches!(s.delete_bucket("b"), Err(Refusal::BucketNotEmpty)));
        s.delete_object("b", "k").unwrap();
        s.delete_object("b", "k").unwrap();
        assert_eq!(blob_count(dir.path()), 0);
        s.delete_bucket("b").unwrap();
        assert!(matches!(s.bucket("b"), Err(Refusal::NoSuchBucket)));
    }

    #[test]
    fn open_sweeps_what_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        s.create_bucket("b", "us-east-1", "123456789012").unwrap();
        s.put_bytes("b", "k", b"kept", &Attributes::default())
            .unwrap();
        std::fs::write(s.staging_path(), b"half").unwrap();
        let orphan = s.blob_path("ffffffffffffffffffffffffffffffff");
        std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
        std::fs::write(&orphan, b"orphan").unwrap();
        drop(s);
        let s = Storage::open(dir.path()).unwrap();
        assert!(!orphan.exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        let o = s.object("b", "k").unwrap().unwrap();
        assert_eq!(std::fs::read(s.blob_path(&o.blob)).unwrap(), b"kept");
    }

    #[test]
    fn scan_stays_inside_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        s.create_bucket("b", "us-east-1", "123456789012").unwrap();
        for k in ["a", "p/1", "p/2", "q"] {
            s.put_bytes("b", k, b"", &Attributes::default()).unwrap();
        }
        let keys = s
            .scan_objects("b", "p/", None, |it| it.map(|o| o.key).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(keys, ["p/1", "p/2"]);
        let keys = s
            .scan_objects("b", "", Some("p/1"), |it| {
                it.map(|o| o.key).collect::<Vec<_>>()
            })
            .unwrap();
        assert_eq!(keys, ["p/2", "q"]);
    }

    #[test]
    fn uploads_and_parts() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        s.create_bucket("b", "us-east-1", "123456789012").unwrap();
        let u = s
            .create_upload("b", "big", &attrs("application/x"))
            .unwrap();
        assert!(matches!(
            s.upload("b", "other", &u.upload_id),
            Err(Refusal::NoSuchUpload)
        ));
        for (n, body) in [(1u32, &b"first"[..]), (2, b"second"), (1, b"first again")] {
            let staged = Staged {
                path: s.staging_path(),
            };
            std::fs::write(&staged.path, body).unwrap();
            s.commit_part(
                &u.upload_id,
                n,
                &staged,
                body.len() as u64,
                &crate::listing::md5_hex(body),
                &Checksums::default(),
            )
            .unwrap();
        }
        let parts = s.parts(&u.upload_id).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].size, 11);
        assert_eq!(blob_count(dir.path()), 2);
        assert_eq!(s.uploads("b", "").unwrap().len(), 1);
        let staged = Staged {
            path: s.staging_path(),
        };
        std::fs::write(&staged.path, b"first againsecond").unwrap();
        let o = s.complete_upload(&u, &staged, 17, "x-2", 2).unwrap();
        assert_eq!(o.parts_count, Some(2));
        assert_eq!(blob_count(dir.path()), 1);
        assert!(s.uploads("b", "").unwrap().is_empty());
        assert!(matches!(
            s.abort_upload(&u.upload_id),
            Err(Refusal::NoSuchUpload)
        ));
        let got = s.object("b", "big").unwrap().unwrap();
        assert_eq!(got.attrs.content_type.as_deref(), Some("application/x"));
    }
}
