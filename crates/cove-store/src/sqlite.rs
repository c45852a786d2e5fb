//! The embedded database: one SQLite file in WAL mode, owned by one process
//! (the data directory's lock keeps a second server out), so its change
//! feed never has anything from elsewhere.

use crate::durable::{Durable, Feed, Row};
use anyhow::Context;
use cove_model::world::REGION_KIND;
use rusqlite::{params, Connection};
use std::path::Path;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE documents (
        kind TEXT NOT NULL,
        key  TEXT NOT NULL,
        doc  TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    ) WITHOUT ROWID;",
    // Every document belongs to an account ('' until [`Store::adopt_unowned`]
    // gives what an older Cove stored to the configured one); SageMaker
    // resources are keyed by ARN, as their names repeat across accounts
    // and regions.
    "ALTER TABLE documents ADD COLUMN account TEXT NOT NULL DEFAULT '';
     UPDATE documents SET key = json_extract(doc, '$.arn')
      WHERE kind IN ('sagemaker_job', 'sagemaker_definition', 'sagemaker_endpoint',
                     'transform_job', 'compilation_job', 'recommendation_job',
                     'studio_domain', 'user_profile', 'studio_app');",
];

pub struct Sqlite {
    conn: Connection,
}

impl Sqlite {
    pub fn open(path: &Path) -> anyhow::Result<Sqlite> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        Self::from_connection(conn)
    }

    pub fn in_memory() -> anyhow::Result<Sqlite> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(mut conn: Connection) -> anyhow::Result<Sqlite> {
        // WAL lets readers of the file (backups, `sqlite3`) run beside the writer;
        // NORMAL sync survives a crash of Cove (kill -9) without an fsync per commit.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Checkpoints run from `checkpoint_forever` on their own connection, so a
        // commit never pays for copying the WAL back into the database file.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        migrate(&mut conn)?;
        Ok(Sqlite { conn })
    }

    /// Every document in the file at `path`, read without writing anything,
    /// beside a running server (WAL readers never block its writer).
    pub fn read_only(path: &Path) -> anyhow::Result<Vec<Row>> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {} read-only", path.display()))?;
        all_rows(&conn)
    }

    /// Copies the write-ahead log back into the database file every `every`,
    /// on a connection of its own (a PASSIVE checkpoint never blocks writers).
    pub fn checkpoint_forever(path: &Path, every: std::time::Duration) -> anyhow::Result<()> {
        let conn = Connection::open(path)?;
        loop {
            std::thread::sleep(every);
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        }
    }
}

impl Durable for Sqlite {
    fn load(&mut self) -> anyhow::Result<(Vec<Row>, u64)> {
        Ok((all_rows(&self.conn)?, 0))
    }

    fn begin(&mut self, seen: u64) -> anyhow::Result<Feed> {
        Ok(Feed::nothing_since(seen))
    }

    fn commit(&mut self, changes: &[Row]) -> anyhow::Result<u64> {
        let tx = self.conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO documents (kind, key, doc, account) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, key) DO UPDATE SET doc = excluded.doc",
            )?;
            let mut delete =
                tx.prepare_cached("DELETE FROM documents WHERE kind = ?1 AND key = ?2")?;
            for row in changes {
                match &row.doc {
                    Some(doc) => upsert.execute(params![row.kind, row.key, doc, row.account])?,
                    None => delete.execute(params![row.kind, row.key])?,
                };
            }
        }
        tx.commit()?;
        Ok(0)
    }

    fn rollback(&mut self) {}

    fn since(&mut self, seen: u64) -> anyhow::Result<Feed> {
        Ok(Feed::nothing_since(seen))
    }

    fn adopt_unowned(&mut self, account: &str) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE documents SET key = ?1 || '/' || key,
                                  doc = json_set(doc, '$.key', ?1 || '/' || key)
              WHERE account = '' AND kind = 'iam_role'",
            params![account],
        )?;
        tx.execute(
            "UPDATE documents SET key = ?1 || '/' || key WHERE account = '' AND kind = ?2",
            params![account, REGION_KIND],
        )?;
        tx.execute(
            "UPDATE documents SET account = ?1 WHERE account = ''",
            params![account],
        )?;
        tx.commit()?;
        Ok(())
    }
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    anyhow::ensure!(
        version <= MIGRATIONS.len(),
        "database schema version {version} is newer than this Cove ({})",
        MIGRATIONS.len()
    );
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("migration {}", i + 1))?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn all_rows(conn: &Connection) -> anyhow::Result<Vec<Row>> {
    let mut stmt = conn.prepare("SELECT kind, key, doc, account FROM documents")?;
    let rows = stmt.query_map([], |row| {
        Ok(Row {
            kind: row.get(0)?,
            key: row.get(1)?,
            doc: Some(row.get(2)?),
            account: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
