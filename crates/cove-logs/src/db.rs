//! The logs database: its own SQLite file (events are far too many for the
//! in-memory document store), one connection behind a mutex, WAL mode,
//! `synchronous=NORMAL`, schema migrations numbered by `PRAGMA user_version`.

use anyhow::Context;
use cove_model::AwsError;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE log_groups (
        id                  INTEGER PRIMARY KEY,
        account             TEXT NOT NULL,
        region              TEXT NOT NULL,
        name                TEXT NOT NULL,
        creation_time       INTEGER NOT NULL,
        retention_days      INTEGER,
        tags                TEXT NOT NULL DEFAULT '{}',
        kms_key_id          TEXT,
        log_group_class     TEXT NOT NULL DEFAULT 'STANDARD',
        deletion_protection INTEGER NOT NULL DEFAULT 0,
        UNIQUE (account, region, name)
    );
    CREATE TABLE log_streams (
        id                    INTEGER PRIMARY KEY,
        group_id              INTEGER NOT NULL,
        name                  TEXT NOT NULL,
        creation_time         INTEGER NOT NULL,
        first_event_timestamp INTEGER,
        last_event_timestamp  INTEGER,
        last_ingestion_time   INTEGER,
        stored_bytes          INTEGER NOT NULL DEFAULT 0,
        upload_sequence       INTEGER NOT NULL DEFAULT 0,
        UNIQUE (group_id, name)
    );
    CREATE TABLE log_events (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        group_id       INTEGER NOT NULL,
        stream_id      INTEGER NOT NULL,
        timestamp      INTEGER NOT NULL,
        ingestion_time INTEGER NOT NULL,
        message        TEXT NOT NULL
    );
    CREATE INDEX log_events_by_stream ON log_events (group_id, stream_id, timestamp);
    CREATE INDEX log_events_by_group ON log_events (group_id, timestamp);
",
    "
    -- How far Cove's own shippers (job and endpoint logs) have shipped each
    -- source file, written in the transaction that stores the lines, so a
    -- crash can neither lose nor repeat them.
    CREATE TABLE shipped_sources (
        source      TEXT PRIMARY KEY,
        byte_offset INTEGER NOT NULL
    );
",
];

/// An error inside the crate: an AWS error for the caller, or a database
/// failure (answered as `ServiceUnavailableException` and logged).
#[derive(Debug)]
pub enum Error {
    Aws(AwsError),
    Db(rusqlite::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<AwsError> for Error {
    fn from(e: AwsError) -> Self {
        Error::Aws(e)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Db(e)
    }
}

impl From<Error> for AwsError {
    fn from(e: Error) -> Self {
        match e {
            Error::Aws(e) => e,
            Error::Db(e) => {
                tracing::error!(error = %e, "logs database error");
                AwsError::new(
                    500,
                    "ServiceUnavailableException",
                    "The service cannot complete the request.",
                )
            }
        }
    }
}

pub struct Db {
    conn: Mutex<Connection>,
}

impl Db {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> anyhow::Result<Db> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        Self::from_connection(conn).with_context(|| format!("preparing {}", path.display()))
    }

    pub fn in_memory() -> anyhow::Result<Db> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(mut conn: Connection) -> anyhow::Result<Db> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        migrate(&mut conn)?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a read; the mutex keeps it consistent across statements.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.lock())
    }

    /// Runs one mutating call as one transaction: committed only if `f`
    /// succeeds, so a rejected call changes nothing.
    pub fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    anyhow::ensure!(
        version <= MIGRATIONS.len(),
        "logs database schema version {version} is newer than this Cove ({})",
        MIGRATIONS.len()
    );
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("logs migration {}", i + 1))?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs.db");
        Db::open(&path).unwrap();
        let db = Db::open(&path).unwrap();
        let (version, mode): (i64, String) = db
            .read(|c| {
                Ok((
                    c.pragma_query_value(None, "user_version", |r| r.get(0))?,
                    c.pragma_query_value(None, "journal_mode", |r| r.get(0))?,
                ))
            })
            .unwrap();
        assert_eq!(
            (version, mode.as_str()),
            (i64::try_from(MIGRATIONS.len()).unwrap(), "wal")
        );
        db.write(|tx| {
            tx.pragma_update(None, "user_version", 99)?;
            Ok(())
        })
        .unwrap();
        drop(db);
        let err = Db::open(&path).err().unwrap();
        assert!(
            format!("{err:#}").contains("newer than this Cove"),
            "{err:#}"
        );
    }
}
