//! Durable desired state. Every resource is a JSON document in SQLite (WAL
//! mode), recorded with the account that owns it; the current state is also
//! published as immutable [`World`]s, the whole one and one view per
//! account, so reads never touch the disk or wait for writers.
//!
//! A mutating call runs [`Store::write`] (or [`Store::write_as`] for an
//! account's own calls): it edits a private copy of a world through a
//! [`Tx`], and only if the closure succeeds are the changed documents
//! committed in one SQLite transaction and the copies published. A
//! rejected call therefore changes nothing, on disk or in memory.
//!
//! Accounts are kept apart here, once, rather than in every handler: a
//! service answering an account's call reads that account's view
//! ([`Store::view`]) and writes through it, so another account's
//! resources are not there to be found, listed or changed. Each commit
//! updates the whole world and the owner's view entry by entry, so its cost
//! follows the change, not the number of accounts or resources.

use anyhow::Context;
use arc_swap::ArcSwap;
use cove_model::world::{Resource, Shared, Tags, World, REGION_KIND, TAGS_KIND};
use cove_model::{AwsError, AwsResult};
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

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

/// The generation of the world as loaded from disk: the data plane's first
/// pass in a process applies it, so waiting for it means waiting until the
/// kernel holds the stored world again after a restart.
pub const LOADED_GENERATION: u64 = 1;

pub struct Store {
    writer: Mutex<Writer>,
    current: ArcSwap<Published>,
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

/// What readers see: the whole world and each account's part of it.
#[derive(Clone, Default)]
struct Published {
    all: Arc<World>,
    accounts: Arc<HashMap<String, Arc<World>>>,
}

/// What only the writer touches: the database and who owns each document.
struct Writer {
    conn: Connection,
    /// The owning account of every stored document, by `(kind, key)`.
    owners: HashMap<(&'static str, String), String>,
    /// Whether a document may be created without an account: only until
    /// the server has adopted what older versions stored.
    owners_required: bool,
}

/// One pending change to a stored document; `None` deletes it.
type Change = (&'static str, String, Option<String>);

/// A write in progress: a private copy of a world and the documents it changed.
pub struct Tx {
    /// The whole world, or for [`Store::write_as`] the account's view.
    pub world: World,
    changes: Vec<Change>,
    /// The account new documents belong to (see [`Tx::act_for`]).
    account: Option<String>,
}

impl Tx {
    pub fn get<R: Resource>(&self, key: &str) -> Option<&R> {
        R::table(&self.world).get(key).map(Arc::as_ref)
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
    pub fn put<S: Shared>(&mut self, r: S) {
        let r = r.shared();
        let doc = serde_json::to_string(&*r).expect("resources always serialize");
        let key = r.key().to_string();
        let unchanged = S::Item::table(&self.world)
            .get(&key)
            .is_some_and(|old| serde_json::to_string(&**old).is_ok_and(|d| d == doc));
        if unchanged {
            return;
        }
        S::Item::table_mut(&mut self.world).insert(key.clone(), r);
        self.changes.push((S::Item::KIND, key, Some(doc)));
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
    /// Records that `account`'s default VPC in `region` exists.
    pub fn mark_region_bootstrapped(&mut self, account: &str, region: &str) {
        let key = bootstrap_key(account, region);
        self.world.bootstrapped_regions.insert(key.clone(), true);
        self.changes.push((REGION_KIND, key, Some("true".into())));
    }
    /// Makes the documents this transaction creates `account`'s: for the
    /// system's own writes (a job's supervisor making its ENIs), which work
    /// on the whole world. A write through [`Store::write_as`] needs none.
    pub fn act_for(&mut self, account: &str) {
        self.account = Some(account.to_string());
    }
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// The store as one account's calls see it: reads are its view, writes
/// run on it ([`Store::view`], [`Store::write_as`]).
#[derive(Clone, Copy)]
pub struct AccountStore<'a> {
    pub store: &'a Store,
    pub account: &'a str,
}

impl AccountStore<'_> {
    pub fn snapshot(&self) -> Arc<World> {
        self.store.view(self.account)
    }
    pub fn write<T>(&self, f: impl FnOnce(&mut Tx) -> AwsResult<T>) -> AwsResult<T> {
        self.store.write_as(self.account, f)
    }
}

/// The key of an account's region bootstrap marker.
pub fn bootstrap_key(account: &str, region: &str) -> String {
    format!("{account}/{region}")
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
        let (published, owners) = load_owned(&conn)?;
        Ok(Store {
            writer: Mutex::new(Writer {
                conn,
                owners,
                owners_required: false,
            }),
            current: ArcSwap::from_pointee(published),
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
        self.current.load().all.clone()
    }

    /// What `account` owns, and nothing else; cheap, never blocks.
    pub fn view(&self, account: &str) -> Arc<World> {
        self.current
            .load()
            .accounts
            .get(account)
            .cloned()
            .unwrap_or_default()
    }

    /// The store as `account`'s calls see it.
    pub fn as_account<'a>(&'a self, account: &'a str) -> AccountStore<'a> {
        AccountStore {
            store: self,
            account,
        }
    }

    /// The account that owns a stored document, if it is stored.
    pub fn owner_of<R: Resource>(&self, key: &str) -> Option<String> {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        writer.owners.get(&(R::KIND, key.to_string())).cloned()
    }

    /// Gives every document stored without an account (by a Cove from
    /// before accounts) to `account`, and from now on refuses to create
    /// documents that belong to no account. IAM roles and region markers
    /// are re-keyed under the account as they are given.
    pub fn adopt_unowned(&self, account: &str) -> anyhow::Result<()> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = writer.conn.transaction()?;
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
        let (published, owners) = load_owned(&writer.conn)?;
        writer.owners = owners;
        writer.owners_required = true;
        self.current.store(Arc::new(published));
        Ok(())
    }

    /// Runs one of the system's own mutating calls on the whole world as a
    /// transaction (see the module comment). A document it creates belongs
    /// to the account named by [`Tx::act_for`].
    pub fn write<T>(&self, f: impl FnOnce(&mut Tx) -> AwsResult<T>) -> AwsResult<T> {
        self.commit(None, f)
    }

    /// Runs one mutating call of `account` as a transaction on its view:
    /// the closure sees and changes only what `account` owns, and what it
    /// creates is `account`'s.
    pub fn write_as<T>(
        &self,
        account: &str,
        f: impl FnOnce(&mut Tx) -> AwsResult<T>,
    ) -> AwsResult<T> {
        self.commit(Some(account), f)
    }

    fn commit<T>(
        &self,
        view_of: Option<&str>,
        f: impl FnOnce(&mut Tx) -> AwsResult<T>,
    ) -> AwsResult<T> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let before = self.current.load_full();
        let world = match view_of {
            Some(account) => before.accounts.get(account).map(|w| (**w).clone()),
            None => Some((*before.all).clone()),
        };
        let mut tx = Tx {
            world: world.unwrap_or_default(),
            changes: Vec::new(),
            account: view_of.map(str::to_string),
        };
        let out = f(&mut tx)?;
        if tx.changes.is_empty() {
            return Ok(out);
        }
        let owners = owners_of_changes(&writer, &tx, view_of)?;
        persist(&mut writer.conn, &tx.changes, &owners).map_err(|e| {
            tracing::error!(error = %e, "store commit failed");
            AwsError::internal("An internal error has occurred")
        })?;
        // The transaction's world is the new whole world or the new view of
        // its account; the other copies follow it entry by entry.
        let mut all = view_of.map(|_| (*before.all).clone());
        let mut views: HashMap<&str, World> = HashMap::new();
        for ((kind, key, doc), owner) in tx.changes.iter().zip(&owners) {
            if let Some(all) = &mut all {
                all.copy_entry(&tx.world, kind, key);
            } else {
                views
                    .entry(owner)
                    .or_insert_with(|| {
                        before
                            .accounts
                            .get(owner.as_str())
                            .map(|w| (**w).clone())
                            .unwrap_or_default()
                    })
                    .copy_entry(&tx.world, kind, key);
            }
            match doc {
                Some(_) => writer.owners.insert((kind, key.clone()), owner.clone()),
                None => writer.owners.remove(&(*kind, key.clone())),
            };
        }
        let mut accounts = (*before.accounts).clone();
        for (account, view) in views {
            accounts.insert(account.to_string(), Arc::new(view));
        }
        let all = match (view_of, all) {
            (Some(account), Some(all)) => {
                accounts.insert(account.to_string(), Arc::new(tx.world));
                all
            }
            _ => tx.world,
        };
        self.current.store(Arc::new(Published {
            all: Arc::new(all),
            accounts: Arc::new(accounts),
        }));
        *self.generation.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
        Ok(out)
    }
}

/// For each change, the account that owns the document: its owner if it is
/// stored, else the transaction's account. A change to another account's
/// document through a view, or a new document with no account once
/// accounts are required, is refused: nothing is written.
fn owners_of_changes(writer: &Writer, tx: &Tx, view_of: Option<&str>) -> AwsResult<Vec<String>> {
    tx.changes
        .iter()
        .map(|(kind, key, _)| {
            let stored = writer.owners.get(&(*kind, key.clone()));
            let owner = match (stored, &tx.account) {
                (Some(o), _) => o.clone(),
                (None, Some(a)) => a.clone(),
                (None, None) if !writer.owners_required => String::new(),
                (None, None) => {
                    return Err(AwsError::internal(format!(
                        "{kind} {key} would belong to no account"
                    )))
                }
            };
            if view_of.is_some_and(|a| a != owner) {
                return Err(AwsError::internal(format!(
                    "{kind} {key} belongs to another account"
                )));
            }
            Ok(owner)
        })
        .collect()
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
    Ok((*load_owned(conn)?.0.all).clone())
}

/// The stored world, each account's view, and who owns what.
#[allow(clippy::type_complexity)]
fn load_owned(
    conn: &Connection,
) -> anyhow::Result<(Published, HashMap<(&'static str, String), String>)> {
    let mut all = World::default();
    let mut views: HashMap<String, World> = HashMap::new();
    let mut owners = HashMap::new();
    let mut stmt = conn.prepare("SELECT kind, key, doc, account FROM documents")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (kind, key, doc, account): (String, String, String, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
        all.load_document(&kind, &key, &doc)
            .map_err(anyhow::Error::msg)?;
        views
            .entry(account.clone())
            .or_default()
            .load_document(&kind, &key, &doc)
            .map_err(anyhow::Error::msg)?;
        let kind = World::stored_kind(&kind).expect("loaded kinds are known");
        owners.insert((kind, key), account);
    }
    let published = Published {
        all: Arc::new(all),
        accounts: Arc::new(views.into_iter().map(|(a, w)| (a, Arc::new(w))).collect()),
    };
    Ok((published, owners))
}

fn persist(conn: &mut Connection, changes: &[Change], owners: &[String]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO documents (kind, key, doc, account) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, key) DO UPDATE SET doc = excluded.doc",
        )?;
        let mut delete = tx.prepare_cached("DELETE FROM documents WHERE kind = ?1 AND key = ?2")?;
        for ((kind, key, doc), owner) in changes.iter().zip(owners) {
            match doc {
                Some(doc) => upsert.execute(params![kind, key, doc, owner])?,
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
    fn each_account_sees_and_changes_only_its_own_documents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cove.db");
        let store = Store::open(&path).unwrap();
        store.adopt_unowned("111111111111").unwrap();
        let put_as = |account: &str, id: &str| {
            store.write_as(account, |tx| {
                tx.put(igw(id));
                tx.set_tags(id, [("Name".to_string(), account.to_string())].into());
                Ok(())
            })
        };
        put_as("111111111111", "igw-a").unwrap();
        put_as("222222222222", "igw-b").unwrap();
        let a = store.view("111111111111");
        assert_eq!(a.internet_gateways.keys().collect::<Vec<_>>(), ["igw-a"]);
        assert_eq!(a.tags.keys().collect::<Vec<_>>(), ["igw-a"]);
        assert!(store.view("333333333333").internet_gateways.is_empty());
        assert_eq!(store.snapshot().internet_gateways.len(), 2);

        // A document of another account is neither there to change nor
        // overwritten by a put under its key.
        let err = put_as("111111111111", "igw-b").unwrap_err();
        assert_eq!(err.code, "InternalError", "{err:?}");
        assert_eq!(
            store.owner_of::<InternetGateway>("igw-b").as_deref(),
            Some("222222222222")
        );

        // The system's writes on the whole world keep each view current.
        store
            .write(|tx| {
                let mut g = tx.cloned::<InternetGateway>("igw-b")?;
                g.attached_vpc_id = Some("vpc-b".into());
                tx.put(g);
                tx.delete::<InternetGateway>("igw-a");
                Ok(())
            })
            .unwrap();
        assert!(store.view("111111111111").internet_gateways.is_empty());
        assert!(store.view("111111111111").tags.is_empty());
        let b = store.view("222222222222");
        assert_eq!(
            b.internet_gateways["igw-b"].attached_vpc_id.as_deref(),
            Some("vpc-b")
        );

        // Once owners are required, the system names the account it creates for.
        let unowned = store.write(|tx| {
            tx.put(igw("igw-c"));
            Ok(())
        });
        assert!(unowned.is_err());
        store
            .write(|tx| {
                tx.act_for("333333333333");
                tx.put(igw("igw-c"));
                Ok(())
            })
            .unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store
                .view("333333333333")
                .internet_gateways
                .keys()
                .collect::<Vec<_>>(),
            ["igw-c"]
        );
        assert_eq!(store.view("222222222222").internet_gateways.len(), 1);
    }

    #[test]
    fn documents_from_before_accounts_are_adopted_by_the_configured_account() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cove.db");
        {
            let store = Store::open(&path).unwrap();
            store
                .write(|tx| {
                    tx.put(igw("igw-old"));
                    Ok(())
                })
                .unwrap();
            // What an older Cove stored: a region marker keyed by region alone.
            let conn = Connection::open(&path).unwrap();
            conn.execute(
                "INSERT INTO documents (kind, key, doc) VALUES ('region', 'us-east-1', 'true')",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert!(store.view("444444444444").internet_gateways.is_empty());
        store.adopt_unowned("444444444444").unwrap();
        let w = store.view("444444444444");
        assert!(w.internet_gateways.contains_key("igw-old"));
        assert!(w
            .bootstrapped_regions
            .contains_key(&bootstrap_key("444444444444", "us-east-1")));
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
