//! The shared database: PostgreSQL, for several Cove processes (API
//! replicas) on one state. Documents live in `cove_documents`; every commit
//! also appends its changes to `cove_changes` under a new generation kept in
//! the one-row `cove_head`, and notifies `cove_changes`. A commit locks the
//! head row first, so commits from all processes form one order, and a
//! process that was behind reads what it missed before it decides anything.
//! Other processes follow the feed when notified (see [`listen`]).
//!
//! The synchronous `postgres` client runs a runtime of its own, which must
//! not be entered from inside Cove's async server; so each connection lives
//! on a thread of its own and callers hand it work over a channel.

use crate::durable::{Durable, Feed, Messages, Row};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, GenericClient, NoTls, SimpleQueryMessage};
use std::sync::mpsc;
use std::time::Duration;

/// The channel commits notify; the payload is the new generation.
const CHANNEL: &str = "cove_changes";
/// Changes older than this many generations are pruned from the feed; a
/// process further behind reloads everything.
const FEED_KEPT: i64 = 4096;

/// Schema migrations, applied in order under an advisory lock (replicas may
/// start together); `cove_schema` records how many ran.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE cove_documents (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        doc TEXT NOT NULL,
        account TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (kind, key));
    CREATE TABLE cove_changes (
        generation BIGINT NOT NULL,
        seq INT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        doc TEXT,
        account TEXT NOT NULL,
        PRIMARY KEY (generation, seq));
    CREATE TABLE cove_head (
        only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        generation BIGINT NOT NULL);
    INSERT INTO cove_head (generation) VALUES (0);",
    "
    CREATE TABLE cove_messages (
        id BIGSERIAL PRIMARY KEY,
        topic TEXT NOT NULL,
        payload TEXT NOT NULL);
    CREATE INDEX cove_messages_by_topic ON cove_messages (topic, id);",
];
/// The advisory lock key migrations run under ("cove" in ASCII).
const MIGRATION_LOCK: i64 = 0x636f_7665;

/// One commit's writes in one statement: documents put and deleted, the
/// feed's rows, the new head and the notification.
const COMMIT: &str = "
    WITH changed AS (
        SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
                 WITH ORDINALITY AS c(kind, key, doc, account, seq)),
    put AS (
        INSERT INTO cove_documents (kind, key, doc, account)
        SELECT kind, key, doc, account FROM changed WHERE doc IS NOT NULL
        ON CONFLICT (kind, key) DO UPDATE SET doc = excluded.doc),
    deleted AS (
        DELETE FROM cove_documents d USING changed c
         WHERE c.doc IS NULL AND d.kind = c.kind AND d.key = c.key),
    fed AS (
        INSERT INTO cove_changes (generation, seq, kind, key, doc, account)
        SELECT $1, seq, kind, key, doc, account FROM changed),
    head AS (UPDATE cove_head SET generation = $1)
    SELECT pg_notify('cove_changes', $1::text)";

pub struct Postgres {
    connection: Connection,
    /// The head generation locked by the commit in progress.
    locked: Option<i64>,
}

impl Postgres {
    /// Connects to `url` (a libpq-style URL or key=value string) and brings
    /// the schema up to date.
    pub fn connect(url: &str) -> anyhow::Result<Postgres> {
        let connection = Connection::open(url)?;
        connection.call(migrate)?;
        Ok(Postgres {
            connection,
            locked: None,
        })
    }
}

impl Durable for Postgres {
    fn load(&mut self) -> anyhow::Result<(Vec<Row>, u64)> {
        self.connection.call(|client| {
            one_snapshot(client, |tx| {
                let head = head_generation(tx)?;
                Ok((all_documents(tx)?, position(head)))
            })
        })
    }

    fn begin(&mut self, seen: u64) -> anyhow::Result<Feed> {
        // A commit abandoned mid-way (its caller panicked) still holds the lock.
        self.rollback();
        let (head, feed) = self.connection.call(move |client| {
            // One round trip: the transaction and the lock on the head row.
            let replies =
                client.simple_query("BEGIN; SELECT generation FROM cove_head FOR UPDATE")?;
            let head = replies
                .iter()
                .find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).and_then(|g| g.parse::<i64>().ok()),
                    _ => None,
                })
                .ok_or_else(|| anyhow::anyhow!("cove_head has no row"))?;
            let feed = feed_since(client, seen, head);
            if feed.is_err() {
                let _ = client.batch_execute("ROLLBACK");
            }
            Ok((head, feed?))
        })?;
        self.locked = Some(head);
        Ok(feed)
    }

    fn commit(&mut self, changes: &[Row]) -> anyhow::Result<u64> {
        let head = self
            .locked
            .take()
            .ok_or_else(|| anyhow::anyhow!("commit without begin"))?;
        let next = head + 1;
        let changes = last_change_per_document(changes);
        self.connection.call(move |client| {
            let columns = |f: fn(&Row) -> Option<String>| -> Vec<Option<String>> {
                changes.iter().map(f).collect()
            };
            let kinds = columns(|r| Some(r.kind.clone()));
            let keys = columns(|r| Some(r.key.clone()));
            let docs = columns(|r| r.doc.clone());
            let accounts = columns(|r| Some(r.account.clone()));
            let written = client
                .query(COMMIT, &[&next, &kinds, &keys, &docs, &accounts])
                .and_then(|_| {
                    if next % 256 == 0 {
                        client.execute(
                            "DELETE FROM cove_changes WHERE generation <= $1",
                            &[&(next - FEED_KEPT)],
                        )?;
                    }
                    client.batch_execute("COMMIT")
                });
            if let Err(e) = written {
                let _ = client.batch_execute("ROLLBACK");
                return Err(e.into());
            }
            Ok(position(next))
        })
    }

    fn rollback(&mut self) {
        if self.locked.take().is_some() {
            let _ = self
                .connection
                .call(|client| Ok(client.batch_execute("ROLLBACK")?));
        }
    }

    fn since(&mut self, seen: u64) -> anyhow::Result<Feed> {
        self.connection.call(move |client| {
            one_snapshot(client, |tx| {
                let head = head_generation(tx)?;
                feed_since(tx, seen, head)
            })
        })
    }

    fn messages(&mut self) -> Option<&mut dyn Messages> {
        Some(self)
    }

    fn adopt_unowned(&mut self, _account: &str) -> anyhow::Result<()> {
        // Only a Cove from before accounts stored documents with no owner,
        // and that Cove had no PostgreSQL store: there is nothing to adopt.
        let unowned: i64 = self.connection.call(|client| {
            Ok(client
                .query_one(
                    "SELECT count(*) FROM cove_documents WHERE account = ''",
                    &[],
                )?
                .get(0))
        })?;
        anyhow::ensure!(
            unowned == 0,
            "{unowned} documents in PostgreSQL belong to no account"
        );
        Ok(())
    }
}

impl Messages for Postgres {
    fn send(&mut self, topic: &str, payloads: &[String]) -> anyhow::Result<()> {
        let (topic, payloads) = (topic.to_string(), payloads.to_vec());
        self.connection.call(move |client| {
            client.execute(
                "INSERT INTO cove_messages (topic, payload) SELECT $1, unnest($2::text[])",
                &[&topic, &payloads],
            )?;
            Ok(())
        })
    }

    fn receive(&mut self, topic: &str, max: usize) -> anyhow::Result<Vec<(i64, String)>> {
        let topic = topic.to_string();
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.connection.call(move |client| {
            Ok(client
                .query(
                    "SELECT id, payload FROM cove_messages WHERE topic = $1 ORDER BY id LIMIT $2",
                    &[&topic, &max],
                )?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    fn remove(&mut self, ids: &[i64]) -> anyhow::Result<()> {
        let ids = ids.to_vec();
        self.connection.call(move |client| {
            client.execute("DELETE FROM cove_messages WHERE id = ANY($1)", &[&ids])?;
            Ok(())
        })
    }
}

/// How long opening a connection may take when the URL does not say
/// (libpq waits forever): a database that does not answer is an error the
/// caller retries, not a thread stuck for good.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a connection to `url`, with [`CONNECT_TIMEOUT`] unless the URL
/// sets `connect_timeout`, over TLS when the URL asks for it
/// ([`crate::pg_tls`]).
pub(crate) fn connect(url: &str) -> anyhow::Result<Client> {
    let tls = crate::pg_tls::settings(url)?;
    let mut config: postgres::Config = tls.url.parse()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let client = match tls.roots {
        Some(roots) => config.connect(crate::pg_tls::Rustls(roots)),
        None => config.connect(NoTls),
    };
    Ok(client?)
}

fn position(generation: i64) -> u64 {
    u64::try_from(generation).unwrap_or(0)
}

/// Runs `read` in one read-only snapshot of the database.
fn one_snapshot<T>(
    client: &mut Client,
    read: impl FnOnce(&mut postgres::Transaction<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let out = read(&mut tx)?;
    tx.commit()?;
    Ok(out)
}

fn head_generation(client: &mut impl GenericClient) -> anyhow::Result<i64> {
    Ok(client
        .query_one("SELECT generation FROM cove_head", &[])?
        .get(0))
}

/// What was committed after `seen`, up to `head`, read inside the caller's
/// transaction (so no commit lands between the reads).
fn feed_since(client: &mut impl GenericClient, seen: u64, head: i64) -> anyhow::Result<Feed> {
    let seen_generation = i64::try_from(seen).unwrap_or(i64::MAX);
    if head <= seen_generation {
        return Ok(Feed::nothing_since(seen));
    }
    let oldest: Option<i64> = client
        .query_one("SELECT min(generation) FROM cove_changes", &[])?
        .get(0);
    let reaches_back = oldest.is_some_and(|o| o <= seen_generation + 1);
    if !reaches_back {
        return Ok(Feed::Everything {
            rows: all_documents(client)?,
            position: position(head),
        });
    }
    let rows = client
        .query(
            "SELECT kind, key, doc, account FROM cove_changes
              WHERE generation > $1 AND generation <= $2 ORDER BY generation, seq",
            &[&seen_generation, &head],
        )?
        .iter()
        .map(row)
        .collect();
    Ok(Feed::Changes {
        rows,
        position: position(head),
    })
}

fn all_documents(client: &mut impl GenericClient) -> anyhow::Result<Vec<Row>> {
    Ok(client
        .query("SELECT kind, key, doc, account FROM cove_documents", &[])?
        .iter()
        .map(row)
        .collect())
}

/// A `(kind, key, doc, account)` row of `cove_documents` or `cove_changes`.
fn row(r: &postgres::Row) -> Row {
    Row {
        kind: r.get(0),
        key: r.get(1),
        doc: r.get(2),
        account: r.get(3),
    }
}

/// A commit may change one document twice (put, then delete); one statement
/// may touch each row once, and only the last change counts.
fn last_change_per_document(changes: &[Row]) -> Vec<Row> {
    let mut seen = std::collections::HashSet::new();
    let mut last: Vec<Row> = changes
        .iter()
        .rev()
        .filter(|r| seen.insert((r.kind.as_str(), r.key.as_str())))
        .cloned()
        .collect();
    last.reverse();
    last
}

/// Runs `f` (a migration) under PostgreSQL's advisory lock for migrations,
/// as replicas and agents may start together.
pub(crate) fn with_migration_lock<T>(
    client: &mut Client,
    f: impl FnOnce(&mut Client) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let out = f(client);
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])?;
    out
}

fn migrate(client: &mut Client) -> anyhow::Result<()> {
    with_migration_lock(client, |client| {
        client.batch_execute("CREATE TABLE IF NOT EXISTS cove_schema (version INT NOT NULL)")?;
        let version: i32 = match client.query_opt("SELECT version FROM cove_schema", &[])? {
            Some(r) => r.get(0),
            None => {
                client.execute("INSERT INTO cove_schema VALUES (0)", &[])?;
                0
            }
        };
        let known = MIGRATIONS.len();
        let ran = usize::try_from(version).unwrap_or(0);
        anyhow::ensure!(
            ran <= known,
            "database schema version {version} is newer than this Cove ({known})"
        );
        for (number, sql) in (1_i32..).zip(MIGRATIONS).skip(ran) {
            let mut tx = client.transaction()?;
            tx.batch_execute(sql)?;
            tx.execute("UPDATE cove_schema SET version = $1", &[&number])?;
            tx.commit()?;
        }
        Ok(())
    })
}

/// Work for a connection's thread.
type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// A connection on a thread of its own (see the module comment).
struct Connection {
    jobs: mpsc::Sender<Job>,
}

/// The thread's side: the client, reconnected when PostgreSQL went away.
struct Session {
    url: String,
    client: Option<Client>,
}

impl Session {
    fn client(&mut self) -> anyhow::Result<&mut Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let client = connect(&self.url)
                .map_err(|e| anyhow::anyhow!("connecting to PostgreSQL: {e:#}"))?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }
}

impl Connection {
    fn open(url: &str) -> anyhow::Result<Connection> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let mut session = Session {
            url: url.to_string(),
            client: None,
        };
        std::thread::Builder::new()
            .name("cove-postgres".into())
            .spawn(move || {
                for job in queue {
                    job(&mut session);
                }
            })?;
        let connection = Connection { jobs };
        connection.call(|_| Ok(()))?;
        Ok(connection)
    }

    /// Runs `f` on the connection's thread and waits for its answer.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> anyhow::Result<R> + Send + 'static,
    ) -> anyhow::Result<R> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |session: &mut Session| {
                let _ = reply.send(session.client().and_then(f));
            }))
            .map_err(|_| anyhow::anyhow!("the PostgreSQL connection thread stopped"))?;
        answer
            .recv()
            .map_err(|_| anyhow::anyhow!("the PostgreSQL connection thread stopped"))?
    }
}

/// Holds PostgreSQL's session advisory lock `key` on a connection of its
/// own for as long as the process runs; fails at once when another session
/// holds it. A lost connection is reopened and the lock taken again; if
/// another session took it meanwhile, `lost` is called.
pub fn hold_lock(url: &str, key: i64, lost: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    let take = move |client: &mut Client| -> Result<bool, postgres::Error> {
        client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .map(|r| r.get(0))
    };
    let url = url.to_string();
    let (taken, outcome) = mpsc::sync_channel(1);
    // Connections live on threads of their own (see the module comment).
    std::thread::Builder::new()
        .name("cove-postgres-lock".into())
        .spawn(move || {
            let first = connect(&url).and_then(|mut c| match take(&mut c)? {
                true => Ok(c),
                false => Err(anyhow::Error::new(crate::LockHeld)),
            });
            let mut client = match first {
                Ok(c) => {
                    let _ = taken.send(Ok(()));
                    c
                }
                Err(e) => {
                    let _ = taken.send(Err(e));
                    return;
                }
            };
            loop {
                std::thread::sleep(Duration::from_millis(500));
                if client.is_valid(Duration::from_secs(2)).is_ok() {
                    continue;
                }
                tracing::warn!(
                    "the connection holding the store's lock was lost; taking the lock again"
                );
                loop {
                    std::thread::sleep(Duration::from_millis(500));
                    let Ok(mut again) = connect(&url) else {
                        continue;
                    };
                    match take(&mut again) {
                        Ok(true) => {
                            client = again;
                            break;
                        }
                        Ok(false) => return lost(),
                        Err(_) => continue,
                    }
                }
            }
        })?;
    outcome
        .recv()
        .map_err(|_| anyhow::anyhow!("the PostgreSQL lock thread stopped"))?
}

/// Follows other processes' commits: calls `changed` with the notified
/// generation on every notification, and with 0 after each (re)connection
/// and every `backstop` without one (a notification is lost while the
/// connection is down). Runs until `changed` returns false.
pub fn listen(
    url: &str,
    backstop: Duration,
    changed: impl Fn(u64) -> bool + Send + 'static,
) -> anyhow::Result<()> {
    let url = url.to_string();
    std::thread::Builder::new()
        .name("cove-postgres-feed".into())
        .spawn(move || {
            let mut reported = false;
            loop {
                let mut client = match connect(&url).and_then(|mut c| {
                    c.batch_execute(&format!("LISTEN {CHANNEL}"))?;
                    Ok(c)
                }) {
                    Ok(c) => {
                        reported = false;
                        c
                    }
                    Err(e) => {
                        if !reported {
                            tracing::warn!(error = %e, "the store's change feed lost PostgreSQL; retrying");
                            reported = true;
                        }
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                };
                if !changed(0) {
                    return;
                }
                loop {
                    let next = client.notifications().timeout_iter(backstop).next();
                    let generation = match next {
                        Ok(Some(n)) => n.payload().parse().unwrap_or(0),
                        Ok(None) => 0,
                        Err(_) => break,
                    };
                    if !changed(generation) {
                        return;
                    }
                    if client.is_closed() {
                        break;
                    }
                }
            }
        })?;
    Ok(())
}
