//! Durable desired state. Every resource is a JSON document in SQLite (WAL
//! mode); the current state is also published as an immutable [`World`] so
//! reads never touch the disk or wait for writers.
//!
//! A mutating call runs [`Store::write`]: it edits a private copy of the
//! world through a [`Tx`], and only if the closure succeeds are the changed
//! documents committed in one SQLite transaction and the copy published. A
//! rejected call therefore changes nothing, on disk or in memory.

use anyhow::Context;
use arc_swap::ArcSwap;
use cove_model::world::{Resource, Tags, World, REGION_KIND, TAGS_KIND};
use cove_model::{AwsError, AwsResult};
use rusqlite::{params, Connection};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &["CREATE TABLE documents (
        kind TEXT NOT NULL,
        key  TEXT NOT NULL,
        doc  TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    ) WITHOUT ROWID;"];

/// The generation of the world as loaded from disk: the data plane's first
/// pass in a process applies it, so waiting for it means waiting until the
/// kernel holds the stored world again after a restart.
pub const LOADED_GENERATION: u64 = 1;

pub struct Store {
    conn: Mutex<Connection>,
    current: ArcSwap<World>,
    path: Option<std::path::PathBuf>,
    /// Counts published commits; watchers (the network reconciler) wait on
    /// it. The world as loaded is [`LOADED_GENERATION`], which the data
    /// plane has not applied yet in this process.
    generation: Mutex<u64>,
    changed: std::sync::Condvar,
    /// The last generation the data plane has fully applied to the kernel;
    /// the job supervisor waits on it before it sends a job's packets.
    applied: Mutex<u64>,
    applied_changed: std::sync::Condvar,
}

/// One pending change to a stored document; `None` deletes it.
type Change = (&'static str, String, Option<String>);

/// A write in progress: a private copy of the world and the documents it changed.
pub struct Tx {
    pub world: World,
    changes: Vec<Change>,
}

impl Tx {
    pub fn get<R: Resource>(&self, key: &str) -> Option<&R> {
        R::table(&self.world).get(key)
    }
    /// A copy of the stored `R` to change and [`Tx::put`] back. A document
    /// that vanished under its owner's worker is an internal error.
    pub fn cloned<R: Resource>(&self, key: &str) -> AwsResult<R> {
        self.get::<R>(key)
            .cloned()
            .ok_or_else(|| AwsError::internal(format!("{} {key} vanished", R::KIND)))
    }
    /// Stores `r`. Putting back what is already stored changes nothing (no
    /// new generation, no wake-up), so a reconciling loop may write every
    /// pass without waking itself and every other watcher.
    pub fn put<R: Resource>(&mut self, r: R) {
        let doc = serde_json::to_string(&r).expect("resources always serialize");
        let key = r.key().to_string();
        let unchanged = R::table(&self.world)
            .get(&key)
            .is_some_and(|old| serde_json::to_string(old).is_ok_and(|d| d == doc));
        if unchanged {
            return;
        }
        R::table_mut(&mut self.world).insert(key.clone(), r);
        self.changes.push((R::KIND, key, Some(doc)));
    }
    pub fn delete<R: Resource>(&mut self, key: &str) {
        R::table_mut(&mut self.world).remove(key);
        self.changes.push((R::KIND, key.to_string(), None));
        if self.world.tags.contains_key(key) {
            self.set_tags(key, Tags::new());
        }
    }
    /// Replaces all tags of a resource (an empty set removes the record).
    pub fn set_tags(&mut self, key: &str, tags: Tags) {
        if tags.is_empty() {
            self.world.tags.remove(key);
            self.changes.push((TAGS_KIND, key.to_string(), None));
        } else {
            let doc = serde_json::to_string(&tags).expect("tags serialize");
            self.world.tags.insert(key.to_string(), tags);
            self.changes.push((TAGS_KIND, key.to_string(), Some(doc)));
        }
    }
    pub fn mark_region_bootstrapped(&mut self, region: &str) {
        self.world
            .bootstrapped_regions
            .insert(region.to_string(), true);
        self.changes
            .push((REGION_KIND, region.to_string(), Some("true".into())));
    }
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path` and loads the world.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut store = Self::from_connection(conn)?;
        store.path = Some(path.to_path_buf());
        Ok(store)
    }

    /// The world stored at `path`, read without writing anything, beside a
    /// running server (WAL readers never block its writer): for client
    /// commands such as `cove reach` and for test harnesses.
    pub fn read_world(path: &Path) -> anyhow::Result<World> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {} read-only", path.display()))?;
        load(&conn)
    }

    /// An in-memory store, for unit tests of the handlers.
    pub fn in_memory() -> anyhow::Result<Store> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(mut conn: Connection) -> anyhow::Result<Store> {
        // WAL lets readers of the file (backups, `sqlite3`) run beside the writer;
        // NORMAL sync survives a crash of Cove (kill -9) without an fsync per commit.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Checkpoints run from `checkpoint_forever` on their own connection, so a
        // commit never pays for copying the WAL back into the database file.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        migrate(&mut conn)?;
        let world = load(&conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            current: ArcSwap::from_pointee(world),
            path: None,
            generation: Mutex::new(LOADED_GENERATION),
            changed: std::sync::Condvar::new(),
            applied: Mutex::new(0),
            applied_changed: std::sync::Condvar::new(),
        })
    }

    /// Copies the write-ahead log back into the database file every `every`,
    /// on a connection of its own (a PASSIVE checkpoint never blocks writers).
    /// Runs until the process ends; call it from a dedicated thread.
    pub fn checkpoint_forever(&self, every: std::time::Duration) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let conn = Connection::open(path)?;
        loop {
            std::thread::sleep(every);
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        }
    }

    /// The number of commits published so far.
    pub fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a commit after `seen` is published, or `timeout` passes;
    /// returns the current generation.
    pub fn wait_for_change(&self, seen: u64, timeout: std::time::Duration) -> u64 {
        let guard = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |g| *g <= seen)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }

    /// Records that the data plane has applied every commit up to `generation`.
    pub fn mark_applied(&self, generation: u64) {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        if generation > *applied {
            *applied = generation;
            self.applied_changed.notify_all();
        }
    }

    /// The newest generation the data plane has applied.
    pub fn applied_generation(&self) -> u64 {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the data plane has applied `generation`; false on timeout.
    pub fn wait_applied(&self, generation: u64, timeout: std::time::Duration) -> bool {
        let guard = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .applied_changed
            .wait_timeout_while(guard, timeout, |a| *a < generation)
            .unwrap_or_else(|p| p.into_inner());
        *guard >= generation
    }

    /// The current state; cheap, never blocks.
    pub fn snapshot(&self) -> Arc<World> {
        self.current.load_full()
    }

    /// Runs one mutating call as a transaction (see the module comment).
    pub fn write<T>(&self, f: impl FnOnce(&mut Tx) -> AwsResult<T>) -> AwsResult<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut tx = Tx {
            world: (**self.current.load()).clone(),
            changes: Vec::new(),
        };
        let out = f(&mut tx)?;
        if tx.changes.is_empty() {
            return Ok(out);
        }
        persist(&mut conn, &tx.changes).map_err(|e| {
            tracing::error!(error = %e, "store commit failed");
            AwsError::internal("An internal error has occurred")
        })?;
        self.current.store(Arc::new(tx.world));
        *self.generation.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
        Ok(out)
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

fn load(conn: &Connection) -> anyhow::Result<World> {
    let mut world = World::default();
    let mut stmt = conn.prepare("SELECT kind, key, doc FROM documents")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (kind, key, doc): (String, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
        world
            .load_document(&kind, &key, &doc)
            .map_err(anyhow::Error::msg)?;
    }
    Ok(world)
}

fn persist(conn: &mut Connection, changes: &[Change]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO documents (kind, key, doc) VALUES (?1, ?2, ?3)
             ON CONFLICT (kind, key) DO UPDATE SET doc = excluded.doc",
        )?;
        let mut delete = tx.prepare_cached("DELETE FROM documents WHERE kind = ?1 AND key = ?2")?;
        for (kind, key, doc) in changes {
            match doc {
                Some(doc) => upsert.execute(params![kind, key, doc])?,
                None => delete.execute(params![kind, key])?,
            };
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_model::vpc::InternetGateway;

    fn igw(id: &str) -> InternetGateway {
        InternetGateway {
            id: id.into(),
            region: "us-east-1".into(),
            attached_vpc_id: None,
        }
    }

    #[test]
    fn committed_writes_survive_reopen_and_failed_ones_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cove.db");
        {
            let store = Store::open(&path).unwrap();
            store
                .write(|tx| {
                    tx.put(igw("igw-1"));
                    tx.set_tags("igw-1", [("Name".to_string(), "a".to_string())].into());
                    Ok(())
                })
                .unwrap();
            let err = store.write(|tx| -> AwsResult<()> {
                tx.put(igw("igw-2"));
                Err(AwsError::client("Nope", "rejected"))
            });
            assert!(err.is_err());
            assert!(store.snapshot().internet_gateways.get("igw-2").is_none());
        }
        let store = Store::open(&path).unwrap();
        let w = store.snapshot();
        assert_eq!(w.internet_gateways.len(), 1);
        assert_eq!(
            w.tags_of("igw-1").get("Name").map(String::as_str),
            Some("a")
        );
        store
            .write(|tx| {
                tx.delete::<InternetGateway>("igw-1");
                Ok(())
            })
            .unwrap();
        drop(store);
        let w = Store::open(&path).unwrap().snapshot();
        assert!(w.internet_gateways.is_empty());
        assert!(w.tags.is_empty(), "deleting a resource deletes its tags");
    }

    #[test]
    fn putting_back_the_same_document_is_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cove.db")).unwrap();
        let put = |g: InternetGateway| {
            store
                .write(|tx| {
                    tx.put(g);
                    Ok(())
                })
                .unwrap()
        };
        put(igw("igw-1"));
        let generation = store.generation();
        put(igw("igw-1"));
        assert_eq!(
            store.generation(),
            generation,
            "an identical put is not a change"
        );
        let mut attached = igw("igw-1");
        attached.attached_vpc_id = Some("vpc-1".into());
        put(attached);
        assert_eq!(store.generation(), generation + 1);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cove.db");
        Store::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(err.contains("newer"), "{err}");
    }
}
