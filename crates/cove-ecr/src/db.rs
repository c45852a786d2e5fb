//! The registry's metadata database: its own SQLite file beside the blobs
//! (`ecr/ecr.db`), one connection behind a mutex, WAL mode, migrations
//! numbered by `PRAGMA user_version`. Every change is one transaction, so a
//! refused call changes nothing.

use anyhow::Context;
use cove_model::{AwsError, AwsResult};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::path::Path;
use std::sync::Mutex;

const MIGRATIONS: &[&str] = &["
    CREATE TABLE repositories (
        id              INTEGER PRIMARY KEY,
        account         TEXT NOT NULL,
        region          TEXT NOT NULL,
        name            TEXT NOT NULL,
        created_at      REAL NOT NULL,
        tag_mutability  TEXT NOT NULL,
        scan_on_push    INTEGER NOT NULL,
        encryption_type TEXT NOT NULL,
        kms_key         TEXT,
        policy          TEXT,
        tags            TEXT NOT NULL DEFAULT '[]',
        UNIQUE (account, region, name)
    );
    -- The blobs a repository holds (layers and configs are scoped to their
    -- repository, as in ECR); the bytes are shared on disk by digest.
    CREATE TABLE blobs (
        repo_id  INTEGER NOT NULL,
        digest   TEXT NOT NULL,
        size     INTEGER NOT NULL,
        added_at REAL NOT NULL,
        PRIMARY KEY (repo_id, digest)
    );
    CREATE INDEX blobs_by_digest ON blobs (digest);
    CREATE TABLE images (
        repo_id             INTEGER NOT NULL,
        digest              TEXT NOT NULL,
        media_type          TEXT NOT NULL,
        artifact_media_type TEXT,
        manifest            BLOB NOT NULL,
        size                INTEGER NOT NULL,
        pushed_at           REAL NOT NULL,
        last_pull           REAL,
        PRIMARY KEY (repo_id, digest)
    );
    -- What each image's manifest names: blobs, and for an index, images.
    CREATE TABLE image_refs (
        repo_id      INTEGER NOT NULL,
        image_digest TEXT NOT NULL,
        target       TEXT NOT NULL,
        PRIMARY KEY (repo_id, image_digest, target)
    );
    CREATE TABLE tags (
        repo_id INTEGER NOT NULL,
        tag     TEXT NOT NULL,
        digest  TEXT NOT NULL,
        PRIMARY KEY (repo_id, tag)
    );
    CREATE TABLE uploads (
        id      TEXT PRIMARY KEY,
        repo_id INTEGER NOT NULL,
        started REAL NOT NULL
    );
"];

pub struct Db {
    conn: Mutex<Connection>,
}

impl Db {
    pub fn open(path: &Path) -> anyhow::Result<Db> {
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Self::migrate(conn)
    }

    fn migrate(mut conn: Connection) -> anyhow::Result<Db> {
        let done: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tx = conn.transaction()?;
        for (n, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            tx.execute_batch(sql)
                .with_context(|| format!("migration {}", n + 1))?;
            tx.pragma_update(None, "user_version", n + 1)?;
        }
        tx.commit()?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    /// Runs `f` in one immediate transaction, committed when it returns `Ok`.
    pub fn write<T>(&self, f: impl FnOnce(&Transaction) -> AwsResult<T>) -> AwsResult<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(internal)?;
        let out = f(&tx)?;
        tx.commit().map_err(internal)?;
        Ok(out)
    }

    /// Runs `f` over a consistent read of the database.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> AwsResult<T>) -> AwsResult<T> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    }
}

/// A database failure, answered as ECR's `ServerException` and logged.
pub fn internal(e: impl std::fmt::Display) -> AwsError {
    tracing::error!(error = %e, "registry database");
    AwsError::new(500, "ServerException", "Internal error in the registry.")
}
