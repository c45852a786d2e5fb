//! S3's durable state: object bodies as files under one directory
//! (`blobs/`), everything else (buckets, policies, object metadata,
//! multipart uploads and their parts) in tables ([`cove_store::sql`]):
//! `s3.db` in that directory on one host, or the `s3` schema of the shared
//! PostgreSQL, where every API replica also shares the directory (a shared
//! filesystem in production).
//!
//! A body is streamed to `tmp/`, flushed to disk, renamed into `blobs/` under
//! a fresh name, and only then referenced by a metadata row in one
//! transaction; the blob it replaces is removed after the commit. A crash at
//! any point leaves either the old or the new object, plus at worst an
//! unreferenced blob, which [`Storage::open`] sweeps away (on a shared
//! directory only once it is old enough that no other replica can be about
//! to commit it).

use anyhow::Context as _;
use cove_store::sql::{self, Database, Schema, Sql, Value};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

static SCHEMA: Schema = Schema {
    name: "s3",
    sqlite: &[
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
    ],
    // Names and keys compare byte by byte, as on SQLite (and S3: listings
    // are in UTF-8 binary order).
    postgres: &[r#"
CREATE TABLE buckets (
    name TEXT COLLATE "C" PRIMARY KEY,
    region TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    policy TEXT,
    owner TEXT NOT NULL DEFAULT ''
);
CREATE TABLE objects (
    bucket TEXT NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    blob TEXT NOT NULL,
    size BIGINT NOT NULL,
    etag TEXT NOT NULL,
    modified_ms BIGINT NOT NULL,
    parts_count BIGINT,
    attrs TEXT NOT NULL,
    PRIMARY KEY (bucket, key)
);
CREATE TABLE uploads (
    upload_id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    initiated_ms BIGINT NOT NULL,
    attrs TEXT NOT NULL
);
CREATE INDEX uploads_by_key ON uploads (bucket, key, initiated_ms);
CREATE TABLE parts (
    upload_id TEXT NOT NULL,
    part_number BIGINT NOT NULL,
    blob TEXT NOT NULL,
    size BIGINT NOT NULL,
    etag TEXT NOT NULL,
    modified_ms BIGINT NOT NULL,
    checksums TEXT NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);
"#],
};

/// On a directory shared by replicas, how old an unreferenced blob or a
/// staged body must be before a starting replica removes it: younger ones
/// may be another replica's upload in flight.
const SHARED_SWEEP_AGE: Duration = Duration::from_secs(3600);

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

impl sql::Failure for Refusal {
    fn database_error(&self) -> Option<&sql::Error> {
        match self {
            Refusal::Other(e) => e.downcast_ref(),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Refusal>;

/// `NoSuchBucket` unless the bucket exists (inside the caller's transaction).
fn require_bucket(tx: &mut dyn Sql, bucket: &str) -> Result<()> {
    let exists = tx.query_opt(
        "SELECT 1 FROM buckets WHERE name = ?1",
        &[bucket.into()],
        |_| Ok(()),
    )?;
    match exists {
        Some(()) => Ok(()),
        None => Err(Refusal::NoSuchBucket),
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
    fn from_row(r: &sql::Row) -> sql::Result<Bucket> {
        Ok(Bucket {
            name: r.text(0)?,
            region: r.text(1)?,
            created_ms: r.int(2)?,
            policy: r.opt_text(3)?,
            owner: r.text(4)?,
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
    db: Database,
}

pub fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

fn new_blob_name() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn attrs_json(a: &Attributes) -> String {
    serde_json::to_string(a).expect("attributes serialize")
}

fn parse_attrs(s: &str) -> Attributes {
    serde_json::from_str(s).unwrap_or_default()
}

/// A stored size or count as the unsigned value it was.
fn unsigned<T: TryFrom<i64> + Default>(v: i64) -> T {
    T::try_from(v).unwrap_or_default()
}

const OBJECT_COLUMNS: &str = "key, blob, size, etag, modified_ms, parts_count, attrs";

fn object_row(r: &sql::Row<'_>) -> sql::Result<Object> {
    Ok(Object {
        key: r.text(0)?,
        blob: r.text(1)?,
        size: unsigned(r.int(2)?),
        etag: r.text(3)?,
        modified_ms: r.int(4)?,
        parts_count: r.opt_int(5)?.map(unsigned),
        attrs: parse_attrs(r.str(6)?),
    })
}

const UPLOAD_COLUMNS: &str = "upload_id, bucket, key, initiated_ms, attrs";

fn upload_row(r: &sql::Row<'_>) -> sql::Result<Upload> {
    Ok(Upload {
        upload_id: r.text(0)?,
        bucket: r.text(1)?,
        key: r.text(2)?,
        initiated_ms: r.int(3)?,
        attrs: parse_attrs(r.str(4)?),
    })
}

/// Stores an object's row, replacing the key's earlier one.
fn put_object_row(tx: &mut dyn Sql, bucket: &str, object: &Object) -> sql::Result<()> {
    tx.execute(
        "INSERT INTO objects (bucket, key, blob, size, etag, modified_ms, parts_count, attrs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (bucket, key) DO UPDATE SET
            blob = excluded.blob, size = excluded.size, etag = excluded.etag,
            modified_ms = excluded.modified_ms, parts_count = excluded.parts_count,
            attrs = excluded.attrs",
        &[
            bucket.into(),
            object.key.as_str().into(),
            object.blob.as_str().into(),
            object.size.into(),
            object.etag.as_str().into(),
            object.modified_ms.into(),
            object.parts_count.into(),
            attrs_json(&object.attrs).as_str().into(),
        ],
    )?;
    Ok(())
}

/// The blob of `bucket/key`, locked on PostgreSQL until the transaction
/// ends, so two replicas replacing one key each remove what they replaced.
fn current_blob(tx: &mut dyn Sql, bucket: &str, key: &str) -> sql::Result<Option<String>> {
    let sql = match tx.dialect() {
        sql::Dialect::Postgres => {
            "SELECT blob FROM objects WHERE bucket = ?1 AND key = ?2 FOR UPDATE"
        }
        sql::Dialect::Sqlite => "SELECT blob FROM objects WHERE bucket = ?1 AND key = ?2",
    };
    tx.query_opt(sql, &[bucket.into(), key.into()], |r| r.text(0))
}

fn part_blobs(tx: &mut dyn Sql, upload_id: &str) -> sql::Result<Vec<String>> {
    tx.query(
        "SELECT blob FROM parts WHERE upload_id = ?1",
        &[upload_id.into()],
        |r| r.text(0),
    )
}

/// Where a Cove's S3 metadata is: for commands that read it beside a
/// running server.
pub enum Metadata<'a> {
    /// `s3.db` under the S3 directory.
    Sqlite(&'a Path),
    /// The shared PostgreSQL database at this URL.
    Postgres(&'a str),
}

/// The policies of the buckets stored at `metadata`, by bucket: for client
/// commands (none when it has no S3 yet).
pub fn read_bucket_policies(metadata: Metadata<'_>) -> anyhow::Result<BTreeMap<String, String>> {
    let db = match metadata {
        Metadata::Sqlite(dir) => {
            // Read-only beside the running server, as its own files are.
            Database::sqlite_read_only(&dir.join("s3.db"))?
        }
        Metadata::Postgres(url) => Database::postgres(url, &SCHEMA)?,
    };
    let rows = db.read(|c| {
        c.query(
            "SELECT name, policy FROM buckets WHERE policy IS NOT NULL",
            &[],
            |r| Ok((r.text(0)?, r.text(1)?)),
        )
    })?;
    Ok(rows.into_iter().collect())
}

impl Storage {
    /// Opens (creating if needed) the storage under `dir`, with its
    /// metadata in `dir/s3.db`, and removes staged bodies and blobs that no
    /// row references (left by a crash).
    pub fn open(dir: &Path) -> anyhow::Result<Storage> {
        Self::create_dirs(dir)?;
        let path = dir.join("s3.db");
        let storage = Storage {
            root: dir.to_path_buf(),
            db: Database::sqlite(&path, &SCHEMA)?,
        };
        storage.sweep(Duration::ZERO)?;
        Ok(storage)
    }

    /// Opens the storage of API replicas: bodies under `dir`, which every
    /// replica shares, metadata in the shared PostgreSQL at `url`.
    pub fn open_shared(dir: &Path, url: &str) -> anyhow::Result<Storage> {
        Self::create_dirs(dir)?;
        let storage = Storage {
            root: dir.to_path_buf(),
            db: Database::postgres(url, &SCHEMA)?,
        };
        storage.sweep(SHARED_SWEEP_AGE)?;
        Ok(storage)
    }

    fn create_dirs(dir: &Path) -> anyhow::Result<()> {
        for sub in ["blobs", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        Ok(())
    }

    /// Removes staged bodies and unreferenced blobs last written at least
    /// `age` ago.
    fn sweep(&self, age: Duration) -> anyhow::Result<()> {
        let old_enough = |entry: &std::fs::DirEntry| {
            age.is_zero()
                || entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|at| at.elapsed().is_ok_and(|e| e >= age))
        };
        for entry in std::fs::read_dir(self.root.join("tmp"))? {
            let entry = entry?;
            if old_enough(&entry) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let referenced: HashSet<String> = self
            .db
            .read(|c| {
                c.query(
                    "SELECT blob FROM objects UNION ALL SELECT blob FROM parts",
                    &[],
                    |r| r.text(0),
                )
            })?
            .into_iter()
            .collect();
        let mut removed = 0;
        for shard in std::fs::read_dir(self.root.join("blobs"))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for blob in std::fs::read_dir(shard.path())? {
                let blob = blob?;
                let name = blob.file_name().to_string_lossy().into_owned();
                if !referenced.contains(&name) && old_enough(&blob) {
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
    /// transaction. `record` answers the blobs the new one replaces, which
    /// are removed once the transaction committed; if it fails, the new blob
    /// goes.
    fn commit_blob(
        &self,
        staged: &Staged,
        mut record: impl FnMut(&mut dyn Sql, &str) -> Result<Vec<String>> + Send,
    ) -> Result<String> {
        let blob = self.adopt(staged)?;
        match self.db.write(|tx| record(tx, &blob)) {
            Ok(old) => {
                old.iter().for_each(|b| self.remove_blob(b));
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
        let now = now_ms();
        let n = self.db.write(|tx| {
            tx.execute(
                "INSERT INTO buckets (name, region, created_ms, owner) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO NOTHING",
                &[name.into(), region.into(), now.into(), owner.into()],
            )
        })?;
        Ok(n == 1)
    }

    /// Gives the buckets stored before accounts existed to `account`.
    pub fn adopt_unowned_buckets(&self, account: &str) -> Result<()> {
        self.db.write(|tx| {
            tx.execute(
                "UPDATE buckets SET owner = ?1 WHERE owner = ''",
                &[account.into()],
            )
        })?;
        Ok(())
    }

    pub fn bucket(&self, name: &str) -> Result<Bucket> {
        self.db
            .read(|c| {
                c.query_opt(
                    &format!("SELECT {BUCKET_COLUMNS} FROM buckets WHERE name = ?1"),
                    &[name.into()],
                    Bucket::from_row,
                )
            })?
            .ok_or(Refusal::NoSuchBucket)
    }

    /// The buckets `owner` owns, by name.
    pub fn buckets(&self, owner: &str) -> Result<Vec<Bucket>> {
        Ok(self.db.read(|c| {
            c.query(
                &format!("SELECT {BUCKET_COLUMNS} FROM buckets WHERE owner = ?1 ORDER BY name"),
                &[owner.into()],
                Bucket::from_row,
            )
        })?)
    }

    /// Deletes an empty bucket, with any multipart uploads still open in it.
    pub fn delete_bucket(&self, name: &str) -> Result<()> {
        let part_blobs: Vec<String> = self.db.write(|tx| {
            require_bucket(tx, name)?;
            let has_objects = tx
                .query_opt(
                    "SELECT 1 FROM objects WHERE bucket = ?1 LIMIT 1",
                    &[name.into()],
                    |_| Ok(()),
                )?
                .is_some();
            if has_objects {
                return Err(Refusal::BucketNotEmpty);
            }
            let blobs = tx.query(
                "DELETE FROM parts WHERE upload_id IN (SELECT upload_id FROM uploads WHERE bucket = ?1)
                 RETURNING blob",
                &[name.into()],
                |r| r.text(0),
            )?;
            tx.execute("DELETE FROM uploads WHERE bucket = ?1", &[name.into()])?;
            tx.execute("DELETE FROM buckets WHERE name = ?1", &[name.into()])?;
            Ok(blobs)
        })?;
        part_blobs.iter().for_each(|b| self.remove_blob(b));
        Ok(())
    }

    /// Sets or clears a bucket's policy.
    pub fn set_policy(&self, bucket: &str, policy: Option<&str>) -> Result<()> {
        let n = self.db.write(|tx| {
            tx.execute(
                "UPDATE buckets SET policy = ?2 WHERE name = ?1",
                &[bucket.into(), policy.into()],
            )
        })?;
        if n == 0 {
            return Err(Refusal::NoSuchBucket);
        }
        Ok(())
    }

    pub fn object(&self, bucket: &str, key: &str) -> Result<Option<Object>> {
        Ok(self.db.read(|c| {
            c.query_opt(
                &format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = ?1 AND key = ?2"),
                &[bucket.into(), key.into()],
                object_row,
            )
        })?)
    }

    /// Runs `f` over the bucket's objects in key order, starting at the
    /// first key at or after `prefix` and after `after`, and stopping when
    /// the keys leave `prefix` or `f` has seen enough: rows are read a
    /// page at a time, as `f` gets to them.
    pub fn scan_objects<R>(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        f: impl FnOnce(&mut dyn Iterator<Item = Object>) -> R,
    ) -> Result<R> {
        let mut pages = ObjectPages {
            storage: self,
            bucket,
            prefix,
            after: after.unwrap_or("").to_string(),
            page: std::collections::VecDeque::new(),
            done: false,
        };
        Ok(f(&mut pages))
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
        let mut object = Object {
            key: key.to_string(),
            blob: String::new(),
            size,
            etag: etag.to_string(),
            modified_ms: now_ms(),
            parts_count,
            attrs: attrs.clone(),
        };
        object.blob = self.commit_blob(staged, |tx, blob| {
            require_bucket(tx, bucket)?;
            let old = current_blob(tx, bucket, key)?;
            put_object_row(
                tx,
                bucket,
                &Object {
                    blob: blob.to_string(),
                    ..object.clone()
                },
            )?;
            Ok(old.into_iter().collect())
        })?;
        Ok(object)
    }

    /// Deletes `bucket/key`; deleting a missing key is not an error (as on S3).
    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<()> {
        let old = self.db.write(|tx| -> Result<_> {
            require_bucket(tx, bucket)?;
            Ok(tx.query_opt(
                "DELETE FROM objects WHERE bucket = ?1 AND key = ?2 RETURNING blob",
                &[bucket.into(), key.into()],
                |r| r.text(0),
            )?)
        })?;
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
        let attrs = attrs_json(attrs);
        self.db.write(|tx| -> Result<()> {
            require_bucket(tx, bucket)?;
            tx.execute(
                &format!("INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                &[
                    upload.upload_id.as_str().into(),
                    bucket.into(),
                    key.into(),
                    upload.initiated_ms.into(),
                    attrs.as_str().into(),
                ],
            )?;
            Ok(())
        })?;
        Ok(upload)
    }

    /// The upload `upload_id` of `bucket/key`; NoSuchUpload when it is not
    /// open or belongs to another object.
    pub fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Upload> {
        let found = self.db.read(|c| {
            c.query_opt(
                &format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE upload_id = ?1"),
                &[upload_id.into()],
                upload_row,
            )
        })?;
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
        let mut out = Vec::new();
        self.db.read(|c| {
            c.query_each(
                &format!(
                    "SELECT {UPLOAD_COLUMNS} FROM uploads
                     WHERE bucket = ?1 AND key >= ?2 ORDER BY key, initiated_ms, upload_id"
                ),
                &[bucket.into(), prefix.into()],
                &mut |r| {
                    let upload = upload_row(r)?;
                    let inside = upload.key.starts_with(prefix);
                    if inside {
                        out.push(upload);
                    }
                    Ok(inside)
                },
            )
        })?;
        Ok(out)
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
        let checksums_json = serde_json::to_string(checksums)?;
        let blob = self.commit_blob(staged, |tx, blob| {
            let open = tx.query_opt(
                "SELECT 1 FROM uploads WHERE upload_id = ?1",
                &[upload_id.into()],
                |_| Ok(()),
            )?;
            if open.is_none() {
                return Err(Refusal::NoSuchUpload);
            }
            let old = tx.query(
                "DELETE FROM parts WHERE upload_id = ?1 AND part_number = ?2 RETURNING blob",
                &[upload_id.into(), part_number.into()],
                |r| r.text(0),
            )?;
            tx.execute(
                "INSERT INTO parts (upload_id, part_number, blob, size, etag, modified_ms, checksums)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                &[
                    upload_id.into(),
                    part_number.into(),
                    blob.into(),
                    size.into(),
                    etag.into(),
                    modified_ms.into(),
                    checksums_json.as_str().into(),
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
        Ok(self.db.read(|c| {
            c.query(
                "SELECT part_number, blob, size, etag, modified_ms, checksums FROM parts
                 WHERE upload_id = ?1 ORDER BY part_number",
                &[upload_id.into()],
                |r| {
                    Ok(Part {
                        part_number: unsigned(r.int(0)?),
                        blob: r.text(1)?,
                        size: unsigned(r.int(2)?),
                        etag: r.text(3)?,
                        modified_ms: r.int(4)?,
                        checksums: serde_json::from_str(r.str(5)?).unwrap_or_default(),
                    })
                },
            )
        })?)
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
        let mut object = Object {
            key: upload.key.clone(),
            blob: String::new(),
            size,
            etag: etag.to_string(),
            modified_ms: now_ms(),
            parts_count: Some(parts_count),
            attrs: upload.attrs.clone(),
        };
        object.blob = self.commit_blob(staged, |tx, blob| {
            let mut replaced = part_blobs(tx, &upload.upload_id)?;
            let n = tx.execute(
                "DELETE FROM uploads WHERE upload_id = ?1",
                &[upload.upload_id.as_str().into()],
            )?;
            if n == 0 {
                return Err(Refusal::NoSuchUpload);
            }
            tx.execute(
                "DELETE FROM parts WHERE upload_id = ?1",
                &[upload.upload_id.as_str().into()],
            )?;
            replaced.extend(current_blob(tx, &upload.bucket, &upload.key)?);
            put_object_row(
                tx,
                &upload.bucket,
                &Object {
                    blob: blob.to_string(),
                    ..object.clone()
                },
            )?;
            Ok(replaced)
        })?;
        Ok(object)
    }

    pub fn abort_upload(&self, upload_id: &str) -> Result<()> {
        let blobs = self.db.write(|tx| {
            let blobs = part_blobs(tx, upload_id)?;
            let n = tx.execute(
                "DELETE FROM uploads WHERE upload_id = ?1",
                &[upload_id.into()],
            )?;
            if n == 0 {
                return Err(Refusal::NoSuchUpload);
            }
            tx.execute(
                "DELETE FROM parts WHERE upload_id = ?1",
                &[upload_id.into()],
            )?;
            Ok(blobs)
        })?;
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

/// Objects read this many to a query while a listing walks them.
const SCAN_PAGE: usize = 1000;

/// A bucket's objects under a prefix, in key order, read a page at a time
/// (each page its own snapshot, as S3's listings are not one either).
struct ObjectPages<'s> {
    storage: &'s Storage,
    bucket: &'s str,
    prefix: &'s str,
    after: String,
    page: std::collections::VecDeque<Object>,
    done: bool,
}

impl Iterator for ObjectPages<'_> {
    type Item = Object;

    fn next(&mut self) -> Option<Object> {
        if self.page.is_empty() && !self.done {
            let read = self.storage.db.read(|c| {
                c.query(
                    &format!(
                        "SELECT {OBJECT_COLUMNS} FROM objects
                         WHERE bucket = ?1 AND key >= ?2 AND key > ?3 ORDER BY key LIMIT ?4"
                    ),
                    &[
                        self.bucket.into(),
                        self.prefix.into(),
                        self.after.as_str().into(),
                        Value::from(SCAN_PAGE),
                    ],
                    object_row,
                )
            });
            match read {
                Ok(objects) => {
                    self.done = objects.len() < SCAN_PAGE;
                    self.page.extend(objects);
                }
                Err(e) => {
                    tracing::error!(error = %e, "s3: listing stopped");
                    self.done = true;
                }
            }
            if let Some(last) = self.page.back() {
                self.after.clone_from(&last.key);
            }
        }
        let object = self.page.pop_front()?;
        if !object.key.starts_with(self.prefix) {
            self.page.clear();
            self.done = true;
            return None;
        }
        Some(object)
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

    /// Runs a test on storage with SQLite metadata, and with PostgreSQL
    /// metadata where `COVE_TEST_POSTGRES` names a server; `open` opens
    /// (or reopens) the storage of a directory.
    fn on_both_databases(test: impl Fn(&dyn Fn(&Path) -> Storage)) {
        test(&|dir| Storage::open(dir).unwrap());
        if let Some(db) = cove_store::scratch::from_env("cove_s3_test") {
            test(&|dir| Storage::open_shared(dir, &db.url).unwrap());
        }
    }

    #[test]
    fn objects_survive_reopen_and_replaced_blobs_go() {
        on_both_databases(objects_survive_reopen_and_replaced_blobs_go_on);
    }

    fn objects_survive_reopen_and_replaced_blobs_go_on(open: &dyn Fn(&Path) -> Storage) {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
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
        let s = open(dir.path());
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
    fn a_replica_starting_on_a_shared_directory_keeps_young_unreferenced_files() {
        let Some(db) = cove_store::scratch::from_env("cove_s3_test") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open_shared(dir.path(), &db.url).unwrap();
        // Another replica's upload in flight: staged, or renamed into
        // blobs/ and about to be committed.
        let staged = s.staging_path();
        std::fs::write(&staged, b"streaming").unwrap();
        let young = s.blob_path("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee");
        std::fs::create_dir_all(young.parent().unwrap()).unwrap();
        std::fs::write(&young, b"about to be committed").unwrap();
        let old = s.blob_path("dddddddddddddddddddddddddddddddd");
        std::fs::create_dir_all(old.parent().unwrap()).unwrap();
        std::fs::write(&old, b"orphan").unwrap();
        let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        Storage::open_shared(dir.path(), &db.url).unwrap();
        assert!(staged.exists() && young.exists());
        assert!(!old.exists());
    }

    #[test]
    fn scan_stays_inside_the_prefix() {
        on_both_databases(scan_stays_inside_the_prefix_on);
    }

    fn scan_stays_inside_the_prefix_on(open: &dyn Fn(&Path) -> Storage) {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
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
        // Past one page of rows, in byte order ("Z" < "a" < "é").
        let mut many: Vec<String> = (0..2 * SCAN_PAGE + 7)
            .map(|i| format!("m/{i:05}"))
            .collect();
        many.extend(["m/Z", "m/a", "m/é"].map(String::from));
        s.db.write(|tx| {
            for key in &many {
                put_object_row(
                    tx,
                    "b",
                    &Object {
                        key: key.clone(),
                        blob: "00".into(),
                        size: 0,
                        etag: String::new(),
                        modified_ms: 0,
                        parts_count: None,
                        attrs: Attributes::default(),
                    },
                )?;
            }
            Ok::<_, sql::Error>(())
        })
        .unwrap();
        let keys = s
            .scan_objects("b", "m/", None, |it| it.map(|o| o.key).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(keys, many);
        let three = s
            .scan_objects("b", "m/", Some("m/00005"), |it| {
                it.take(3).map(|o| o.key).collect::<Vec<_>>()
            })
            .unwrap();
        assert_eq!(three, ["m/00006", "m/00007", "m/00008"]);
    }

    #[test]
    fn uploads_and_parts() {
        on_both_databases(uploads_and_parts_on);
    }

    fn uploads_and_parts_on(open: &dyn Fn(&Path) -> Storage) {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
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
