//! Durable desired state. Every resource is a JSON document in a database,
//! recorded with the account that owns it: SQLite (WAL mode) for one
//! process, the embedded default, or PostgreSQL shared by several processes
//! ([`durable`]). The current state is also published as immutable
//! [`World`]s, the whole one and one view per account, so reads never touch
//! the database or wait for writers.
//!
//! A mutating call runs [`Store::write`] (or [`Store::write_as`] for an
//! account's own calls): it edits a private copy of a world through a
//! [`Tx`], and only if the closure succeeds are the changed documents
//! committed in one database transaction and the copies published. A
//! rejected call therefore changes nothing, in the database or in memory.
//! On a shared database a commit first takes the database's commit lock and
//! applies what other processes committed, so every process decides on the
//! newest state; between its own writes a process follows the others'
//! commits as PostgreSQL notifies them ([`Store::connect_postgres`]).
//!
//! Accounts are kept apart here, once, rather than in every handler: a
//! service answering an account's call reads that account's view
//! ([`Store::view`]) and writes through it, so another account's
//! resources are not there to be found, listed or changed. Each commit
//! updates the whole world and the owner's view entry by entry, so its cost
//! follows the change, not the number of accounts or resources.

pub mod durable;
mod pg_tls;
mod postgres;
#[doc(hidden)]
pub mod scratch;
pub mod sql;
mod sqlite;

/// Why [`Store::claim_controller`] or [`Store::claim_host`] failed when the
/// database answered: another process holds the claim. Any other error is
/// the database's (unreachable, refused, starting up).
#[derive(Debug)]
pub struct LockHeld;

impl std::fmt::Display for LockHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("another process holds the claim")
    }
}

impl std::error::Error for LockHeld {}

use arc_swap::ArcSwap;
use cove_model::world::{Resource, Shared, Tags, World, REGION_KIND, TAGS_KIND};
use cove_model::{AwsError, AwsResult};
use durable::{Durable, Feed, Row};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The generation of the world as loaded from disk: the data plane's first
/// pass in a process applies it, so waiting for it means waiting until the
/// kernel holds the stored world again after a restart.
pub const LOADED_GENERATION: u64 = 1;

pub struct Store {
    writer: Mutex<Writer>,
    /// Writers waiting for the writer lock: a batch's leader lets them
    /// join its batch before it commits ([`Store::commit_batched`]).
    waiting: std::sync::atomic::AtomicUsize,
    /// Signalled (with the writer lock) when a writer joined the open
    /// batch, and when a batch ended.
    batch_moved: std::sync::Condvar,
    current: ArcSwap<Published>,
    /// The SQLite file, whose write-ahead log [`Store::checkpoint_forever`]
    /// folds back.
    sqlite_path: Option<std::path::PathBuf>,
    /// Whether other processes share the database (PostgreSQL).
    shared: bool,
    /// Whether the newest commit that reached the database succeeded.
    database_answered: std::sync::atomic::AtomicBool,
    /// Counts published commits; watchers (the network reconciler) wait on
    /// it. The world as loaded is [`LOADED_GENERATION`], which the data
    /// plane has not applied yet in this process.
    generation: Mutex<u64>,
    changed: std::sync::Condvar,
    /// The last generation the data plane has fully applied to the kernel;
    /// the job supervisor waits on it before it sends a job's packets.
    applied: Mutex<u64>,
    applied_changed: std::sync::Condvar,
    /// The store position ([`Store::snapshot_at`]) of the newest world the
    /// data plane has applied: comparable across processes, unlike the
    /// generation, which counts this process's publications.
    applied_position: std::sync::atomic::AtomicU64,
}

/// What readers see: the whole world and each account's part of it.
#[derive(Clone, Default)]
struct Published {
    all: Arc<World>,
    accounts: Arc<HashMap<String, Arc<World>>>,
    /// The database's position (its commit count) this world is as of.
    position: u64,
}

/// What only the writer touches: the database and who owns each document.
struct Writer {
    durable: Box<dyn Durable>,
    /// How far this process has followed the database's change feed.
    position: u64,
    /// The owning account of every stored document, by `(kind, key)`.
    owners: HashMap<(&'static str, String), String>,
    /// Whether a document may be created without an account: only until
    /// the server has adopted what older versions stored.
    owners_required: bool,
    /// The writes being decided together on a shared store, whose
    /// database transaction (holding the commit lock) is open.
    batch: Option<Batch>,
}

/// Writes decided one after another on one open PostgreSQL transaction and
/// committed together: group commit. Each writer decides on what the
/// writers before it in the batch decided; readers see none of it until
/// the commit, and if the commit fails, every writer of the batch fails.
struct Batch {
    /// The published state plus what the batch decided so far.
    working: Published,
    rows: Vec<Row>,
    /// Owners the batch changed: `Some` stored, `None` deleted.
    owners: HashMap<(&'static str, String), Option<String>>,
    outcome: Arc<BatchOutcome>,
}

/// How a batch's commit went, for the writers waiting on it.
#[derive(Default)]
struct BatchOutcome {
    committed: Mutex<Option<bool>>,
    ended: std::sync::Condvar,
}

impl BatchOutcome {
    fn end(&self, committed: bool) {
        *self.committed.lock().unwrap_or_else(|p| p.into_inner()) = Some(committed);
        self.ended.notify_all();
    }

    fn wait(&self) -> bool {
        let mut committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(c) = *committed {
                return c;
            }
            committed = self
                .ended
                .wait(committed)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Once armed, ends the open batch without committing it when dropped:
/// what a batch's leader leaves behind if it panics. It is made before the
/// writer lock is taken, so on unwinding the lock's guard is dropped first
/// and this can take the lock again.
struct AbandonedBatch<'a> {
    store: &'a Store,
    armed: bool,
}

impl Drop for AbandonedBatch<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut writer = self.store.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(batch) = writer.batch.take() {
            writer.durable.rollback();
            batch.outcome.end(false);
        }
        drop(writer);
        self.store.batch_moved.notify_all();
    }
}

/// Changes one batch gathers at most before it commits.
const BATCH_ROWS: usize = 512;
/// How long a batch's leader waits for more writers at most.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(5);

/// A document a commit changed, as [`Store::publish`] files it: whether it
/// is still stored, and whose it is.
struct Changed {
    kind: &'static str,
    key: String,
    owner: String,
    stored: bool,
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
    /// The database position the world is as of ([`Tx::position`]).
    position: u64,
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
    /// The database position ([`Store::snapshot_at`]) of the world this
    /// write is decided on: every process's newest, so the commit comes
    /// right after it.
    pub fn position(&self) -> u64 {
        self.position
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
    /// Opens (creating if needed) the SQLite database at `path` and loads the world.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let mut store = Self::from_durable(Box::new(sqlite::Sqlite::open(path)?), false)?;
        store.sqlite_path = Some(path.to_path_buf());
        Ok(store)
    }

    /// Connects to the PostgreSQL database at `url` (creating Cove's tables
    /// if needed), loads the world, and follows the commits of every other
    /// process on that database from then on.
    pub fn connect_postgres(url: &str) -> anyhow::Result<Arc<Store>> {
        let store = Arc::new(Self::from_durable(
            Box::new(postgres::Postgres::connect(url)?),
            true,
        )?);
        let follower = Arc::downgrade(&store);
        postgres::listen(url, FEED_BACKSTOP, move |generation| {
            let Some(store) = follower.upgrade() else {
                return false;
            };
            store.catch_up(generation);
            true
        })?;
        Ok(store)
    }

    /// The world stored at `path`, read without writing anything, beside a
    /// running server (WAL readers never block its writer): for client
    /// commands such as `cove reach` and for test harnesses.
    pub fn read_world(path: &Path) -> anyhow::Result<World> {
        whole_world(sqlite::Sqlite::read_only(path)?)
    }

    /// Makes this process the only one that runs the data plane and the
    /// workloads of the PostgreSQL store at `url` (the others may only
    /// serve): fails when another process already does. Should the lock be
    /// lost to another process (after PostgreSQL restarted), `lost` is
    /// called, and must stop this process's workloads.
    pub fn claim_controller(url: &str, lost: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
        /// "cove ctrl" in ASCII.
        const CONTROLLER_LOCK: i64 = 0x636f_7665_6374_726c;
        postgres::hold_lock(url, CONTROLLER_LOCK, lost)
    }

    /// Makes this process the only one that runs host `host_id` of the
    /// PostgreSQL store at `url` (two agents under one id would undo each
    /// other's work); `lost` as for [`Store::claim_controller`].
    pub fn claim_host(
        url: &str,
        host_id: &str,
        lost: impl FnOnce() + Send + 'static,
    ) -> anyhow::Result<()> {
        // Keyed by the id, apart from the controller's key by its top bit.
        let key = i64::from_ne_bytes((cove_model::ids::fnv64(host_id) | 1 << 63).to_ne_bytes());
        postgres::hold_lock(url, key, lost)
    }

    /// The world stored in the PostgreSQL database at `url`, read once.
    pub fn read_postgres(url: &str) -> anyhow::Result<World> {
        whole_world(postgres::Postgres::connect(url)?.load()?.0)
    }

    /// An in-memory store, for unit tests of the handlers.
    pub fn in_memory() -> anyhow::Result<Store> {
        Self::from_durable(Box::new(sqlite::Sqlite::in_memory()?), false)
    }

    fn from_durable(mut durable: Box<dyn Durable>, shared: bool) -> anyhow::Result<Store> {
        let (rows, position) = durable.load()?;
        let (mut published, owners) = index(rows)?;
        published.position = position;
        Ok(Store {
            writer: Mutex::new(Writer {
                durable,
                position,
                owners,
                owners_required: false,
                batch: None,
            }),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            batch_moved: std::sync::Condvar::new(),
            current: ArcSwap::from_pointee(published),
            sqlite_path: None,
            shared,
            database_answered: std::sync::atomic::AtomicBool::new(true),
            generation: Mutex::new(LOADED_GENERATION),
            changed: std::sync::Condvar::new(),
            applied: Mutex::new(0),
            applied_changed: std::sync::Condvar::new(),
            applied_position: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Copies SQLite's write-ahead log back into the database file every
    /// `every`, on a connection of its own (a PASSIVE checkpoint never
    /// blocks writers). Runs until the process ends; call it from a
    /// dedicated thread. Nothing to do for PostgreSQL.
    pub fn checkpoint_forever(&self, every: std::time::Duration) -> anyhow::Result<()> {
        match &self.sqlite_path {
            Some(path) => sqlite::Sqlite::checkpoint_forever(path, every),
            None => Ok(()),
        }
    }

    /// Applies, now, whatever other processes committed that the change
    /// feed has not brought yet (a round trip to the database; nothing to
    /// do on SQLite).
    pub fn catch_up_now(&self) {
        if self.shared {
            self.catch_up(0);
        }
    }

    /// Applies what other processes committed, up to at least `notified`
    /// (0: whatever there is). Called by the change feed's thread.
    fn catch_up(&self, notified: u64) {
        let mut writer = self.writer_between_batches();
        if notified != 0 && writer.position >= notified {
            return;
        }
        let seen = writer.position;
        match writer.durable.since(seen) {
            Ok(feed) => self.follow(&mut writer, feed),
            Err(e) => tracing::warn!(error = %e, "reading the store's change feed failed"),
        }
    }

    /// Publishes what other processes committed (a feed from the database).
    fn follow(&self, writer: &mut Writer, feed: Feed) {
        match feed {
            Feed::Changes { rows, position } => {
                writer.position = position;
                if rows.is_empty() {
                    return;
                }
                let mut incoming = World::default();
                let mut changed = Vec::new();
                for row in rows {
                    let Some(kind) = World::stored_kind(&row.kind) else {
                        tracing::error!(kind = %row.kind, key = %row.key, "another process stored a kind this Cove does not know");
                        continue;
                    };
                    match &row.doc {
                        Some(doc) => {
                            if let Err(e) = incoming.load_document(kind, &row.key, doc) {
                                tracing::error!(error = %e, "another process stored a document this Cove cannot read");
                                continue;
                            }
                        }
                        None => incoming.copy_entry(&World::default(), kind, &row.key),
                    }
                    changed.push(Changed {
                        kind,
                        stored: row.doc.is_some(),
                        key: row.key,
                        owner: row.account,
                    });
                }
                let before = self.current.load_full();
                self.publish(writer, &before, &incoming, &changed);
            }
            Feed::Everything { rows, position } => match self.reload(writer, rows, position) {
                Ok(()) => self.announce(),
                Err(e) => tracing::error!(error = %e, "reloading the store failed"),
            },
        }
    }

    /// Replaces the published world, the owners and the feed position with
    /// everything stored (`rows`, as of `position`).
    fn reload(&self, writer: &mut Writer, rows: Vec<Row>, position: u64) -> anyhow::Result<()> {
        let (mut published, owners) = index(rows)?;
        writer.position = position;
        writer.owners = owners;
        published.position = position;
        self.current.store(Arc::new(published));
        Ok(())
    }

    /// Publishes a new state: the changed entries as `source` has them, in
    /// the whole world and in their owners' views, and who owns them now.
    fn publish(
        &self,
        writer: &mut Writer,
        before: &Published,
        source: &World,
        changed: &[Changed],
    ) {
        for c in changed {
            let owned = (c.kind, c.key.clone());
            if c.stored {
                writer.owners.insert(owned, c.owner.clone());
            } else {
                writer.owners.remove(&owned);
            }
        }
        let mut next = with_changes(before, source, changed);
        next.position = writer.position;
        self.current.store(Arc::new(next));
        self.announce();
    }

    /// The writer lock once no batch is open: what uses the database
    /// connection outside a write (the change feed, messages) must not run
    /// inside a batch's transaction.
    fn writer_between_batches(&self) -> std::sync::MutexGuard<'_, Writer> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        while writer.batch.is_some() {
            writer = self
                .batch_moved
                .wait(writer)
                .unwrap_or_else(|p| p.into_inner());
        }
        writer
    }

    /// The database: `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        if self.shared {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// Whether the newest commit that reached the database succeeded (for
    /// the health check: false while PostgreSQL is away).
    pub fn last_commit_succeeded(&self) -> bool {
        self.database_answered
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn database_failed(&self, e: anyhow::Error) -> AwsError {
        tracing::error!(error = %e, "store commit failed");
        self.database_answered
            .store(false, std::sync::atomic::Ordering::Relaxed);
        AwsError::internal("An internal error has occurred")
    }

    /// Counts a published change and wakes its watchers.
    fn announce(&self) {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
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

    /// The current state and the database position it is as of: the
    /// number of commits the database had made (by every process sharing
    /// it) when it was that.
    pub fn snapshot_at(&self) -> (Arc<World>, u64) {
        let published = self.current.load();
        (published.all.clone(), published.position)
    }

    /// The database position this process has followed up to.
    pub fn position(&self) -> u64 {
        self.current.load().position
    }

    /// Records that the data plane has applied the world as of `position`.
    pub fn mark_applied_position(&self, position: u64) {
        self.applied_position
            .fetch_max(position, std::sync::atomic::Ordering::Relaxed);
    }

    /// Appends messages to `topic` for another process sharing the store
    /// (an agent's flow-log records for the control plane): not documents,
    /// no account's, in no world; kept until [`Store::acknowledge`]d.
    /// Only a shared (PostgreSQL) store carries them.
    pub fn send(&self, topic: &str, payloads: &[String]) -> anyhow::Result<()> {
        let mut writer = self.writer_between_batches();
        match writer.durable.messages() {
            Some(m) => m.send(topic, payloads),
            None => anyhow::bail!("only a shared store carries messages between processes"),
        }
    }

    /// The oldest `max` messages of `topic` not yet acknowledged, with their
    /// ids (none on a store that is not shared).
    pub fn receive(&self, topic: &str, max: usize) -> anyhow::Result<Vec<(i64, String)>> {
        let mut writer = self.writer_between_batches();
        match writer.durable.messages() {
            Some(m) => m.receive(topic, max),
            None => Ok(Vec::new()),
        }
    }

    /// Removes messages handled (at least once: a process that stops
    /// between handling and acknowledging handles them again).
    pub fn acknowledge(&self, ids: &[i64]) -> anyhow::Result<()> {
        let mut writer = self.writer_between_batches();
        match writer.durable.messages() {
            Some(m) => m.remove(ids),
            None => Ok(()),
        }
    }

    /// Hands every message of `topic` sent so far to `handle`, oldest
    /// first, `batch` at a time, and acknowledges those it handled (an
    /// unreadable or refused message is handled by dropping it). At the
    /// first one `handle` must retry, it acknowledges what came before and
    /// returns that message's error: it stays for the next drain. Returns
    /// how many were handled.
    pub fn drain(
        &self,
        topic: &str,
        batch: usize,
        mut handle: impl FnMut(&str) -> Result<(), String>,
    ) -> anyhow::Result<usize> {
        let mut handled = 0;
        loop {
            let received = self.receive(topic, batch)?;
            if received.is_empty() {
                return Ok(handled);
            }
            let mut done = Vec::with_capacity(received.len());
            for (id, payload) in received {
                if let Err(retry) = handle(&payload) {
                    self.acknowledge(&done)?;
                    anyhow::bail!("{topic}: {retry}");
                }
                done.push(id);
            }
            self.acknowledge(&done)?;
            handled += done.len();
        }
    }

    /// The newest database position the data plane has applied.
    pub fn applied_position(&self) -> u64 {
        self.applied_position
            .load(std::sync::atomic::Ordering::Relaxed)
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
        let mut writer = self.writer_between_batches();
        writer.durable.adopt_unowned(account)?;
        let (rows, position) = writer.durable.load()?;
        self.reload(&mut writer, rows, position)?;
        writer.owners_required = true;
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
        // A commit to PostgreSQL waits for the network and for other
        // processes' commits; on an async server's worker, the worker hands
        // its other tasks (reads among them) on meanwhile. SQLite's commits
        // are too short to be worth the hand-over.
        let on_async_worker = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if self.shared && on_async_worker {
            return tokio::task::block_in_place(|| self.commit_batched(view_of, f));
        }
        if self.shared {
            return self.commit_batched(view_of, f);
        }
        self.commit_here(view_of, f)
    }

    /// A write on a shared store, in a batch with the writes that arrive
    /// meanwhile (see [`Batch`]). The first writer of a batch (its leader)
    /// opens the database transaction, which takes the commit lock and
    /// brings what other processes committed; it decides its write, lets
    /// waiting writers decide theirs after it, for up to [`BATCH_WINDOW`]
    /// or [`BATCH_ROWS`] changes, and commits them all in one transaction.
    /// A round trip to PostgreSQL costs more than deciding a write, so a
    /// batch of N writes costs about what one did.
    fn commit_batched<T>(
        &self,
        view_of: Option<&str>,
        f: impl FnOnce(&mut Tx) -> AwsResult<T>,
    ) -> AwsResult<T> {
        use std::sync::atomic::Ordering::Relaxed;
        // Should the leader panic, the batch must still end, or its
        // followers would wait for it for ever.
        let mut abandoned = AbandonedBatch {
            store: self,
            armed: false,
        };
        self.waiting.fetch_add(1, Relaxed);
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.waiting.fetch_sub(1, Relaxed);
        let leader = writer.batch.is_none();
        if leader {
            let seen = writer.position;
            let feed = writer
                .durable
                .begin(seen)
                .map_err(|e| self.database_failed(e))?;
            self.database_answered.store(true, Relaxed);
            self.follow(&mut writer, feed);
            writer.batch = Some(Batch {
                working: (*self.current.load_full()).clone(),
                rows: Vec::new(),
                owners: HashMap::new(),
                outcome: Arc::default(),
            });
            abandoned.armed = true;
        }
        let decided = self.decide_in_batch(&mut writer, view_of, f);
        let outcome = writer
            .batch
            .as_ref()
            .map(|b| b.outcome.clone())
            .expect("a batch is open");
        if !leader {
            self.batch_moved.notify_all();
            drop(writer);
            return match outcome.wait() {
                true => decided,
                false => Err(AwsError::internal("An internal error has occurred")),
            };
        }
        let window = std::time::Instant::now() + BATCH_WINDOW;
        loop {
            let rows = writer.batch.as_ref().map_or(0, |b| b.rows.len());
            let now = std::time::Instant::now();
            if self.waiting.load(Relaxed) == 0 || rows >= BATCH_ROWS || now >= window {
                break;
            }
            writer = self
                .batch_moved
                .wait_timeout(writer, window - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let batch = writer.batch.take().expect("the leader's batch");
        let committed = if batch.rows.is_empty() {
            writer.durable.rollback();
            Ok(())
        } else {
            match writer.durable.commit(&batch.rows) {
                Ok(position) => {
                    writer.position = position;
                    for (owned, owner) in batch.owners {
                        match owner {
                            Some(o) => writer.owners.insert(owned, o),
                            None => writer.owners.remove(&owned),
                        };
                    }
                    let mut next = batch.working;
                    next.position = position;
                    self.current.store(Arc::new(next));
                    self.announce();
                    Ok(())
                }
                Err(e) => Err(self.database_failed(e)),
            }
        };
        batch.outcome.end(committed.is_ok());
        self.batch_moved.notify_all();
        drop(writer);
        abandoned.armed = false;
        committed.and(decided)
    }

    /// Decides one write of the open batch on what the batch decided so
    /// far, and adds its changes to the batch if it succeeds.
    fn decide_in_batch<T>(
        &self,
        writer: &mut Writer,
        view_of: Option<&str>,
        f: impl FnOnce(&mut Tx) -> AwsResult<T>,
    ) -> AwsResult<T> {
        let position = writer.position;
        let owners_required = writer.owners_required;
        let Writer { owners, batch, .. } = writer;
        let batch = batch.as_mut().expect("a batch is open");
        let world = match view_of {
            Some(account) => batch.working.accounts.get(account).map(|w| (**w).clone()),
            None => Some((*batch.working.all).clone()),
        };
        let mut tx = Tx {
            world: world.unwrap_or_default(),
            changes: Vec::new(),
            account: view_of.map(str::to_string),
            position,
        };
        let out = f(&mut tx)?;
        let stored_owner =
            |kind: &'static str, key: &str| match batch.owners.get(&(kind, key.to_string())) {
                Some(o) => o.clone(),
                None => owners.get(&(kind, key.to_string())).cloned(),
            };
        let new_owners = owners_of_changes(&stored_owner, owners_required, &tx, view_of)?;
        if tx.changes.is_empty() {
            return Ok(out);
        }
        let changed = changes_with_owners(&tx, new_owners);
        for ((kind, key, doc), c) in tx.changes.iter().zip(&changed) {
            batch.rows.push(Row {
                kind: kind.to_string(),
                key: key.clone(),
                doc: doc.clone(),
                account: c.owner.clone(),
            });
            batch
                .owners
                .insert((c.kind, c.key.clone()), c.stored.then(|| c.owner.clone()));
        }
        batch.working = with_changes(&batch.working, &tx.world, &changed);
        Ok(out)
    }

    fn commit_here<T>(
        &self,
        view_of: Option<&str>,
        f: impl FnOnce(&mut Tx) -> AwsResult<T>,
    ) -> AwsResult<T> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let seen = writer.position;
        let feed = writer
            .durable
            .begin(seen)
            .map_err(|e| self.database_failed(e))?;
        self.database_answered
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.follow(&mut writer, feed);
        let before = self.current.load_full();
        let world = match view_of {
            Some(account) => before.accounts.get(account).map(|w| (**w).clone()),
            None => Some((*before.all).clone()),
        };
        let mut tx = Tx {
            world: world.unwrap_or_default(),
            changes: Vec::new(),
            account: view_of.map(str::to_string),
            position: writer.position,
        };
        let decided = f(&mut tx).and_then(|out| {
            let stored_owner = |kind: &'static str, key: &str| {
                writer.owners.get(&(kind, key.to_string())).cloned()
            };
            let owners = owners_of_changes(&stored_owner, writer.owners_required, &tx, view_of)?;
            Ok((out, owners))
        });
        let (out, owners) = match decided {
            Ok(decided) if !tx.changes.is_empty() => decided,
            other => {
                writer.durable.rollback();
                return other.map(|(out, _)| out);
            }
        };
        let rows: Vec<Row> = tx
            .changes
            .iter()
            .zip(&owners)
            .map(|((kind, key, doc), owner)| Row {
                kind: kind.to_string(),
                key: key.clone(),
                doc: doc.clone(),
                account: owner.clone(),
            })
            .collect();
        writer.position = writer
            .durable
            .commit(&rows)
            .map_err(|e| self.database_failed(e))?;
        let changed = changes_with_owners(&tx, owners);
        self.publish(&mut writer, &before, &tx.world, &changed);
        Ok(out)
    }
}

/// How often the change feed looks for missed commits when PostgreSQL has
/// notified nothing (a notification is lost while its connection is down).
const FEED_BACKSTOP: std::time::Duration = std::time::Duration::from_secs(5);

/// For each change, the account that owns the document: its owner if it is
/// stored, else the transaction's account. A change to another account's
/// document through a view, or a new document with no account once
/// accounts are required, is refused: nothing is written.
fn owners_of_changes(
    stored_owner: &dyn Fn(&'static str, &str) -> Option<String>,
    owners_required: bool,
    tx: &Tx,
    view_of: Option<&str>,
) -> AwsResult<Vec<String>> {
    tx.changes
        .iter()
        .map(|(kind, key, _)| {
            let owner = match (stored_owner(kind, key), &tx.account) {
                (Some(o), _) => o,
                (None, Some(a)) => a.clone(),
                (None, None) if !owners_required => String::new(),
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

/// A transaction's changes as the store files them, with their owners.
fn changes_with_owners(tx: &Tx, owners: Vec<String>) -> Vec<Changed> {
    tx.changes
        .iter()
        .zip(owners)
        .map(|((kind, key, doc), owner)| Changed {
            kind,
            key: key.clone(),
            owner,
            stored: doc.is_some(),
        })
        .collect()
}

/// `before` with the changed entries as `source` has them, in the whole
/// world and in their owners' views (its position is `before`'s).
fn with_changes(before: &Published, source: &World, changed: &[Changed]) -> Published {
    let mut all = (*before.all).clone();
    let mut views: HashMap<&str, World> = HashMap::new();
    for c in changed {
        all.copy_entry(source, c.kind, &c.key);
        views
            .entry(&c.owner)
            .or_insert_with(|| {
                before
                    .accounts
                    .get(c.owner.as_str())
                    .map(|w| (**w).clone())
                    .unwrap_or_default()
            })
            .copy_entry(source, c.kind, &c.key);
    }
    let mut accounts = (*before.accounts).clone();
    for (account, view) in views {
        accounts.insert(account.to_string(), Arc::new(view));
    }
    Published {
        all: Arc::new(all),
        accounts: Arc::new(accounts),
        position: before.position,
    }
}

/// The whole world stored as `rows`.
fn whole_world(rows: Vec<Row>) -> anyhow::Result<World> {
    Ok((*index(rows)?.0.all).clone())
}

/// The world stored as `rows`, each account's view, and who owns what.
#[allow(clippy::type_complexity)]
fn index(rows: Vec<Row>) -> anyhow::Result<(Published, HashMap<(&'static str, String), String>)> {
    let mut all = World::default();
    let mut views: HashMap<String, World> = HashMap::new();
    let mut owners = HashMap::new();
    for row in rows {
        let doc = row.doc.as_deref().unwrap_or_default();
        all.load_document(&row.kind, &row.key, doc)
            .map_err(anyhow::Error::msg)?;
        views
            .entry(row.account.clone())
            .or_default()
            .load_document(&row.kind, &row.key, doc)
            .map_err(anyhow::Error::msg)?;
        let kind = World::stored_kind(&row.kind).expect("loaded kinds are known");
        owners.insert((kind, row.key), row.account);
    }
    let published = Published {
        all: Arc::new(all),
        accounts: Arc::new(views.into_iter().map(|(a, w)| (a, Arc::new(w))).collect()),
        position: 0,
    };
    Ok((published, owners))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_model::vpc::InternetGateway;
    use rusqlite::Connection;

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

    fn test_database() -> Option<scratch::ScratchDatabase> {
        scratch::from_env("cove_store_test")
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting until {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn postgres_keeps_committed_writes_and_drops_failed_ones() {
        let Some(db) = test_database() else {
            return;
        };
        {
            let store = Store::connect_postgres(&db.url).unwrap();
            store.adopt_unowned("111111111111").unwrap();
            store
                .write_as("111111111111", |tx| {
                    tx.put(igw("igw-1"));
                    tx.set_tags("igw-1", [("Name".to_string(), "a".to_string())].into());
                    // Put, then deleted in the same commit: only the deletion counts.
                    tx.put(igw("igw-gone"));
                    tx.delete::<InternetGateway>("igw-gone");
                    Ok(())
                })
                .unwrap();
            let err = store.write_as("111111111111", |tx| -> AwsResult<()> {
                tx.put(igw("igw-2"));
                Err(AwsError::client("Nope", "rejected"))
            });
            assert!(err.is_err());
            assert!(store.snapshot().internet_gateways.get("igw-2").is_none());
        }
        let store = Store::connect_postgres(&db.url).unwrap();
        let w = store.view("111111111111");
        assert_eq!(w.internet_gateways.keys().collect::<Vec<_>>(), ["igw-1"]);
        assert_eq!(
            w.tags_of("igw-1").get("Name").map(String::as_str),
            Some("a")
        );
        assert!(store.view("222222222222").internet_gateways.is_empty());
    }

    #[test]
    fn messages_pass_between_processes_in_order_until_acknowledged() {
        let Some(db) = test_database() else {
            return;
        };
        let (agent, control) = (
            Store::connect_postgres(&db.url).unwrap(),
            Store::connect_postgres(&db.url).unwrap(),
        );
        let positions = (agent.position(), control.position());
        agent
            .send("flows", &["one".to_string(), "two".to_string()])
            .unwrap();
        agent.send("other", &["elsewhere".to_string()]).unwrap();
        agent.send("flows", &["three".to_string()]).unwrap();
        let got = control.receive("flows", 2).unwrap();
        let payloads: Vec<&str> = got.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(payloads, ["one", "two"]);
        // Not acknowledged: still there for the next reader.
        assert_eq!(control.receive("flows", 10).unwrap().len(), 3);
        control
            .acknowledge(&got.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .unwrap();
        let rest = control.receive("flows", 10).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].1, "three");
        assert_eq!(control.receive("other", 10).unwrap().len(), 1);
        // A drain stops at the first message to retry, keeping it and
        // what follows; the next drain resumes there.
        agent
            .send("flows", &["four".to_string(), "five".to_string()])
            .unwrap();
        let mut seen = vec![];
        let stopped = control.drain("flows", 1, |p| {
            seen.push(p.to_string());
            if p == "four" {
                Err("not now".into())
            } else {
                Ok(())
            }
        });
        assert!(stopped.unwrap_err().to_string().contains("not now"));
        assert_eq!(seen, ["three", "four"]);
        seen.clear();
        let handled = control.drain("flows", 10, |p| {
            seen.push(p.to_string());
            Ok(())
        });
        assert_eq!(
            (handled.unwrap(), seen),
            (2, vec!["four".to_string(), "five".to_string()])
        );
        assert!(control.receive("flows", 10).unwrap().is_empty());
        // Messages are not commits: no document, no new position.
        assert_eq!((agent.position(), control.position()), positions);
        // A store that is not shared carries none.
        let local = Store::in_memory().unwrap();
        assert!(local.send("flows", &["x".to_string()]).is_err());
        assert!(local.receive("flows", 10).unwrap().is_empty());
    }

    #[test]
    fn processes_on_one_postgres_follow_each_others_commits() {
        let Some(db) = test_database() else {
            return;
        };
        let a = Store::connect_postgres(&db.url).unwrap();
        let b = Store::connect_postgres(&db.url).unwrap();
        // Read before A writes: B may have followed A's commit by the time
        // A's write returns.
        let generation = b.generation();
        a.write_as("111111111111", |tx| {
            tx.put(igw("igw-a"));
            Ok(())
        })
        .unwrap();
        // B learns of A's commit from the notification, without writing.
        wait_until("B sees igw-a", || {
            b.view("111111111111")
                .internet_gateways
                .contains_key("igw-a")
        });
        assert!(b.generation() > generation, "watchers of B were woken");
        assert_eq!(
            b.owner_of::<InternetGateway>("igw-a").as_deref(),
            Some("111111111111")
        );
        // A deletion travels too, and B's views follow.
        b.write_as("111111111111", |tx| {
            tx.delete::<InternetGateway>("igw-a");
            tx.put(igw("igw-b"));
            Ok(())
        })
        .unwrap();
        wait_until("A sees B's change", || {
            let w = a.view("111111111111");
            !w.internet_gateways.contains_key("igw-a") && w.internet_gateways.contains_key("igw-b")
        });
        assert!(a.snapshot().internet_gateways.get("igw-a").is_none());
        // Another account's document is still refused through a view, even
        // when this process learnt of it from the feed.
        b.write_as("222222222222", |tx| {
            tx.put(igw("igw-c"));
            Ok(())
        })
        .unwrap();
        wait_until("A sees igw-c", || {
            a.snapshot().internet_gateways.contains_key("igw-c")
        });
        let err = a
            .write_as("111111111111", |tx| {
                tx.put(igw("igw-c"));
                Ok(())
            })
            .unwrap_err();
        assert_eq!(err.code, "InternalError");
    }

    #[test]
    fn writers_in_two_processes_never_lose_an_update() {
        let Some(db) = test_database() else {
            return;
        };
        let stores = [
            Store::connect_postgres(&db.url).unwrap(),
            Store::connect_postgres(&db.url).unwrap(),
        ];
        stores[0]
            .write_as("111111111111", |tx| {
                tx.put(igw("igw-counter"));
                Ok(())
            })
            .unwrap();
        // Each increment reads the count and writes it plus one: with no
        // cross-process lock, the two processes would overwrite each other.
        let per_thread = 50;
        std::thread::scope(|s| {
            for store in stores.iter().chain(stores.iter()) {
                s.spawn(move || {
                    for _ in 0..per_thread {
                        store
                            .write_as("111111111111", |tx| {
                                let mut g = tx.cloned::<InternetGateway>("igw-counter")?;
                                let n: u32 =
                                    g.attached_vpc_id.as_deref().unwrap_or("0").parse().unwrap();
                                g.attached_vpc_id = Some((n + 1).to_string());
                                tx.put(g);
                                Ok(())
                            })
                            .unwrap();
                    }
                });
            }
        });
        let count = |s: &Store| {
            s.snapshot().internet_gateways["igw-counter"]
                .attached_vpc_id
                .clone()
        };
        let expected = Some((4 * per_thread).to_string());
        for store in &stores {
            wait_until("both processes see every increment", || {
                count(store) == expected
            });
        }
    }

    #[test]
    fn concurrent_writers_share_commits_and_a_refused_one_changes_nothing() {
        let Some(db) = test_database() else {
            return;
        };
        let store = Store::connect_postgres(&db.url).unwrap();
        let start = store.position();
        let (threads, per_thread) = (16, 20);
        std::thread::scope(|s| {
            for t in 0..threads {
                let store = &store;
                s.spawn(move || {
                    for i in 0..per_thread {
                        let refused = i % 5 == 4;
                        let out = store.write_as("111111111111", |tx| {
                            tx.put(igw(&format!("igw-{t}-{i}")));
                            if refused {
                                return Err(AwsError::client("Refused", "refused"));
                            }
                            Ok(())
                        });
                        assert_eq!(out.is_err(), refused);
                    }
                });
            }
        });
        let world = store.snapshot();
        for t in 0..threads {
            for i in 0..per_thread {
                let stored = world
                    .internet_gateways
                    .contains_key(&format!("igw-{t}-{i}"));
                assert_eq!(stored, i % 5 != 4, "igw-{t}-{i}");
            }
        }
        // Every write that went through is committed, in fewer database
        // transactions than writes: they were batched.
        let committed = store.position() - start;
        let writes = u64::try_from(threads * per_thread * 4 / 5).unwrap();
        assert!(
            committed < writes,
            "{committed} commits for {writes} writes"
        );
        // Another process sees all of them.
        let other = Store::connect_postgres(&db.url).unwrap();
        assert_eq!(
            other.snapshot().internet_gateways.len(),
            world.internet_gateways.len()
        );
    }

    #[test]
    fn a_batch_whose_leader_panics_ends_and_writes_go_on() {
        let Some(db) = test_database() else {
            return;
        };
        let store = Store::connect_postgres(&db.url).unwrap();
        // Each write runs on a thread of its own and is given 10 s: a
        // batch left open, or a leader stuck cleaning up after its panic,
        // would hold it for ever.
        let write_on_a_thread = |key: &'static str, panics: bool| {
            let (done, finished) = std::sync::mpsc::channel();
            let writer = store.clone();
            std::thread::spawn(move || {
                let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    writer.write_as("111111111111", |tx| {
                        tx.put(igw(key));
                        assert!(!panics, "a handler's bug");
                        Ok(())
                    })
                }));
                let _ = done.send(out.map(|written| written.is_ok()));
            });
            finished
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("the write of {key} did not finish"))
        };
        assert!(write_on_a_thread("igw-never", true).is_err(), "it panicked");
        assert_eq!(write_on_a_thread("igw-after", false).ok(), Some(true));
        let world = store.snapshot();
        assert!(world.internet_gateways.contains_key("igw-after"));
        assert!(!world.internet_gateways.contains_key("igw-never"));
    }

    /// A store on the database at `url` with no feed thread: it learns of
    /// other processes' commits only when it writes or catches up.
    fn store_without_feed(url: &str) -> Store {
        Store::from_durable(Box::new(postgres::Postgres::connect(url).unwrap()), true).unwrap()
    }

    #[test]
    fn a_process_catches_up_on_demand_without_its_feed() {
        let Some(db) = test_database() else {
            return;
        };
        let a = Store::connect_postgres(&db.url).unwrap();
        // No feed thread: only catch_up_now brings A's commits.
        let behind = store_without_feed(&db.url);
        a.write_as("111111111111", |tx| {
            tx.put(igw("igw-new"));
            Ok(())
        })
        .unwrap();
        assert!(!behind.snapshot().internet_gateways.contains_key("igw-new"));
        behind.catch_up_now();
        assert!(behind.snapshot().internet_gateways.contains_key("igw-new"));
        assert_eq!(behind.position(), a.position());
    }

    #[test]
    fn a_process_behind_the_pruned_feed_reloads_everything() {
        let Some(db) = test_database() else {
            return;
        };
        let a = Store::connect_postgres(&db.url).unwrap();
        let behind = store_without_feed(&db.url);
        for id in ["igw-1", "igw-2", "igw-3"] {
            a.write_as("111111111111", |tx| {
                tx.put(igw(id));
                Ok(())
            })
            .unwrap();
        }
        a.write_as("111111111111", |tx| {
            tx.delete::<InternetGateway>("igw-2");
            Ok(())
        })
        .unwrap();
        db.sql("DELETE FROM cove_changes").unwrap();
        // `behind` has no feed thread: its next commit catches up, from a
        // feed that no longer reaches back, so it reloads.
        behind
            .write_as("111111111111", |tx| {
                assert!(
                    tx.get::<InternetGateway>("igw-3").is_some(),
                    "decided on the newest state"
                );
                tx.put(igw("igw-4"));
                Ok(())
            })
            .unwrap();
        let mut ids: Vec<String> = behind
            .view("111111111111")
            .internet_gateways
            .keys()
            .cloned()
            .collect();
        ids.sort();
        assert_eq!(ids, ["igw-1", "igw-3", "igw-4"]);
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
