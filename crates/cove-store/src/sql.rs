//! The services' own tables (CloudWatch Logs events, S3 and registry
//! metadata), which are too many rows for the document store, on the same
//! two databases as the store: a SQLite file of the service's own on one
//! host, or a schema of the service's own in the shared PostgreSQL, so
//! every API replica serves the same logs, buckets and images.
//!
//! Services write their SQL once, in the common subset of both dialects,
//! with SQLite's numbered parameters (`?1`), which become `$1` for
//! PostgreSQL; integers are 64-bit on both sides (`BIGINT` in the
//! PostgreSQL schemas). Each service keeps one migration list per dialect.
//!
//! A call runs [`Database::read`] (one consistent snapshot) or
//! [`Database::write`] (one transaction, committed only when the closure
//! succeeds). On PostgreSQL a write that lost a race with another replica
//! (serialization failure, deadlock, or a unique key another replica just
//! took) is run again from the start, so it decides on what that replica
//! committed — the same answer SQLite's single writer gives.
//!
//! The synchronous `postgres` client runs a runtime of its own, which must
//! not be entered from an async worker; PostgreSQL calls made on one leave
//! it first ([`off_async_worker`]).

use anyhow::Context;
use cove_model::{AwsError, AwsResult};
use postgres::types::{IsNull, ToSql, Type};
use rusqlite::types::ToSqlOutput;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};

/// The dialect a statement runs in, for the few places they differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A parameter of a statement.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    Int(i64),
    Real(f64),
    Text(&'a str),
    Bytes(&'a [u8]),
    Null,
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<usize> for Value<'_> {
    fn from(v: usize) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<u64> for Value<'_> {
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<u32> for Value<'_> {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<f64> for Value<'_> {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Bytes(v)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(v)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(v)
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Value::Int(i) => ToSqlOutput::from(i),
            Value::Real(r) => ToSqlOutput::from(r),
            Value::Text(s) => ToSqlOutput::from(s),
            Value::Bytes(b) => ToSqlOutput::from(b),
            Value::Null => ToSqlOutput::from(rusqlite::types::Null),
        })
    }
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Text(s) => s.to_sql(ty, out),
            Value::Bytes(b) => b.to_sql(ty, out),
            Value::Real(r) => r.to_sql(ty, out),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                _ => Err(format!("an integer given for a parameter of type {ty}").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A failed statement or connection.
#[derive(Debug)]
pub enum Error {
    Sqlite(rusqlite::Error),
    Postgres(postgres::Error),
    /// A column that is not what the caller read it as, or a lost connection.
    Other(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Sqlite(e) => write!(f, "{e}"),
            Error::Postgres(e) => match e.as_db_error() {
                Some(db) => write!(f, "{}: {}", db.code().code(), db.message()),
                None => write!(f, "{e}"),
            },
            Error::Other(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Sqlite(e)
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        Error::Postgres(e)
    }
}

impl Error {
    /// Whether the transaction lost a race with another replica and would
    /// decide differently if run again.
    fn lost_a_race(&self) -> bool {
        use postgres::error::SqlState;
        let Error::Postgres(e) = self else {
            return false;
        };
        e.code().is_some_and(|c| {
            *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::UNIQUE_VIOLATION
        })
    }

    /// Whether the statement broke a unique key.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            Error::Postgres(e) => e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A service's error type, which holds a database [`Error`] among its own.
pub trait Failure: From<Error> {
    fn database_error(&self) -> Option<&Error>;
}

impl Failure for Error {
    fn database_error(&self) -> Option<&Error> {
        Some(self)
    }
}

/// One result row.
pub enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

impl Row<'_> {
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self {
            Row::Sqlite(r) => Ok(r.get(i)?),
            Row::Postgres(r) => {
                let ty = r
                    .columns()
                    .get(i)
                    .map(|c| c.type_().clone())
                    .ok_or_else(|| Error::Other(format!("no column {i}")))?;
                Ok(match ty {
                    Type::INT8 => r.try_get::<_, Option<i64>>(i)?,
                    Type::INT4 => r.try_get::<_, Option<i32>>(i)?.map(i64::from),
                    Type::INT2 => r.try_get::<_, Option<i16>>(i)?.map(i64::from),
                    Type::BOOL => r.try_get::<_, Option<bool>>(i)?.map(i64::from),
                    ty => {
                        return Err(Error::Other(format!(
                            "column {i} is a {ty}, not an integer"
                        )))
                    }
                })
            }
        }
    }

    /// Column `i` as a type both drivers read the same way.
    fn get<T>(&self, i: usize) -> Result<T>
    where
        T: rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a>,
    {
        match self {
            Row::Sqlite(r) => Ok(r.get(i)?),
            Row::Postgres(r) => Ok(r.try_get(i)?),
        }
    }

    pub fn opt_real(&self, i: usize) -> Result<Option<f64>> {
        self.get(i)
    }

    pub fn real(&self, i: usize) -> Result<f64> {
        not_null(self.opt_real(i)?, i)
    }

    pub fn bytes(&self, i: usize) -> Result<Vec<u8>> {
        self.get(i)
    }

    pub fn int(&self, i: usize) -> Result<i64> {
        not_null(self.opt_int(i)?, i)
    }

    pub fn opt_str(&self, i: usize) -> Result<Option<&str>> {
        match self {
            Row::Sqlite(r) => match r.get_ref(i)? {
                rusqlite::types::ValueRef::Null => Ok(None),
                v => Ok(Some(v.as_str().map_err(rusqlite::Error::from)?)),
            },
            Row::Postgres(r) => Ok(r.try_get(i)?),
        }
    }

    pub fn str(&self, i: usize) -> Result<&str> {
        not_null(self.opt_str(i)?, i)
    }

    pub fn text(&self, i: usize) -> Result<String> {
        self.str(i).map(str::to_string)
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.opt_str(i)?.map(str::to_string))
    }
}

/// Column `i`'s value, which must not be NULL.
fn not_null<T>(value: Option<T>, i: usize) -> Result<T> {
    value.ok_or_else(|| Error::Other(format!("column {i} is NULL")))
}

/// A connection inside a read or a write: what a service's SQL runs on.
pub trait Sql {
    fn dialect(&self) -> Dialect;

    /// Runs a statement; how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64>;

    /// Runs a query and hands each row to `each` as it arrives, until
    /// `each` answers false.
    fn query_each(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&Row<'_>) -> Result<bool>,
    ) -> Result<()>;
}

impl dyn Sql + '_ {
    /// Every row of a query, each made into a `T`.
    pub fn query<T>(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.query_each(sql, params, &mut |r| {
            out.push(f(r)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// The first row of a query, if any.
    pub fn query_opt<T>(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut f = Some(f);
        let mut out = None;
        self.query_each(sql, params, &mut |r| {
            if let Some(f) = f.take() {
                out = Some(f(r)?);
            }
            Ok(false)
        })?;
        Ok(out)
    }

    /// The first row of a query, which must exist.
    pub fn query_one<T>(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        self.query_opt(sql, params, f)?
            .ok_or_else(|| Error::Other(format!("no row from {sql}")))
    }
}

struct SqliteSql<'c>(&'c rusqlite::Connection);

impl Sql for SqliteSql<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64> {
        let changed = self
            .0
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params))?;
        Ok(u64::try_from(changed).unwrap_or(u64::MAX))
    }

    fn query_each(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&Row<'_>) -> Result<bool>,
    ) -> Result<()> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(r) = rows.next()? {
            if !each(&Row::Sqlite(r))? {
                break;
            }
        }
        Ok(())
    }
}

/// Statements a session keeps prepared; past this many (statements built
/// for a number of rows vary) it starts over.
const PREPARED_KEPT: usize = 256;

/// A PostgreSQL connection and the statements prepared on it, by their
/// SQLite spelling.
struct Session {
    client: postgres::Client,
    prepared: HashMap<String, postgres::Statement>,
}

impl Session {
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        if self.prepared.len() >= PREPARED_KEPT {
            self.prepared.clear();
        }
        let statement = self.client.prepare(&numbered_parameters(sql))?;
        self.prepared.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

impl Sql for Session {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        Ok(self.client.execute(&statement, &params)?)
    }

    fn query_each(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&Row<'_>) -> Result<bool>,
    ) -> Result<()> {
        use postgres::fallible_iterator::FallibleIterator;
        let statement = self.statement(sql)?;
        // Rows stream in as they are read, so a scan stopped early (a full
        // page, a budget) does not fetch the rest into memory.
        let mut rows = self.client.query_raw(&statement, params.iter())?;
        while let Some(r) = rows.next()? {
            if !each(&Row::Postgres(&r))? {
                break;
            }
        }
        Ok(())
    }
}

/// `?N` parameters (SQLite's) as `$N` (PostgreSQL's), outside quoted text.
fn numbered_parameters(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => quoted = !quoted,
            '?' if !quoted && chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('$');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// A service call's failure inside a read or a write: the service's own
/// answer, or the database's failure.
#[derive(Debug)]
pub enum CallError {
    Aws(AwsError),
    Db(Error),
}

impl From<AwsError> for CallError {
    fn from(e: AwsError) -> Self {
        CallError::Aws(e)
    }
}

impl From<Error> for CallError {
    fn from(e: Error) -> Self {
        CallError::Db(e)
    }
}

impl Failure for CallError {
    fn database_error(&self) -> Option<&Error> {
        match self {
            CallError::Db(e) => Some(e),
            CallError::Aws(_) => None,
        }
    }
}

/// A service's database whose calls answer AWS errors: a database failure
/// is logged and answered with the service's own server error.
pub struct ServiceDatabase {
    database: Database,
    service: &'static str,
    unavailable: fn() -> AwsError,
}

impl ServiceDatabase {
    pub fn new(database: Database, service: &'static str, unavailable: fn() -> AwsError) -> Self {
        ServiceDatabase {
            database,
            service,
            unavailable,
        }
    }

    /// Runs reads in one consistent snapshot.
    pub fn read<T: Send>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> std::result::Result<T, CallError> + Send,
    ) -> AwsResult<T> {
        self.database.read(f).map_err(|e| self.answer(e))
    }

    /// Runs one mutating call as one transaction (see [`Database::write`]).
    pub fn write<T: Send>(
        &self,
        f: impl FnMut(&mut dyn Sql) -> std::result::Result<T, CallError> + Send,
    ) -> AwsResult<T> {
        self.database.write(f).map_err(|e| self.answer(e))
    }

    fn answer(&self, e: CallError) -> AwsError {
        match e {
            CallError::Aws(e) => e,
            CallError::Db(e) => {
                tracing::error!(service = self.service, error = %e, "database error");
                (self.unavailable)()
            }
        }
    }
}

/// A service's schema: its name (the PostgreSQL schema its tables live in)
/// and its migrations in each dialect, applied in order.
pub struct Schema {
    pub name: &'static str,
    pub sqlite: &'static [&'static str],
    pub postgres: &'static [&'static str],
}

/// How often a PostgreSQL write that lost a race is tried in all.
const ATTEMPTS: usize = 8;

/// A service's database (see the module comment).
pub struct Database {
    inner: Inner,
}

enum Inner {
    Sqlite(Mutex<rusqlite::Connection>),
    Postgres(Pool),
}

/// PostgreSQL sessions: a call takes an idle one or opens one, up to
/// [`SESSIONS_PER_DATABASE`] (then it waits for one), and gives it back
/// unless it broke. The cap keeps replicas × services within the server's
/// `max_connections` whatever the load.
struct Pool {
    url: String,
    schema: &'static str,
    sessions: Mutex<Sessions>,
    freed: Condvar,
}

#[derive(Default)]
struct Sessions {
    idle: Vec<Session>,
    open: usize,
}

/// Sessions one service's database keeps open at most in one process.
const SESSIONS_PER_DATABASE: usize = 8;

impl Pool {
    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self) -> Result<Session> {
        let mut sessions = self.sessions();
        loop {
            if let Some(s) = sessions.idle.pop() {
                if !s.client.is_closed() {
                    return Ok(s);
                }
                sessions.open -= 1;
                continue;
            }
            if sessions.open < SESSIONS_PER_DATABASE {
                sessions.open += 1;
                drop(sessions);
                let opened = self.open();
                if opened.is_err() {
                    self.sessions().open -= 1;
                    self.freed.notify_one();
                }
                return opened;
            }
            sessions = self.freed.wait(sessions).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn open(&self) -> Result<Session> {
        let mut client = crate::postgres::connect(&self.url)
            .map_err(|e| Error::Other(format!("connecting to PostgreSQL: {e:#}")))?;
        client.batch_execute(&format!("SET search_path TO {}", self.schema))?;
        Ok(Session {
            client,
            prepared: HashMap::new(),
        })
    }

    fn give_back(&self, session: Session) {
        let mut sessions = self.sessions();
        if session.client.is_closed() {
            sessions.open -= 1;
        } else {
            sessions.idle.push(session);
        }
        drop(sessions);
        self.freed.notify_one();
    }
}

impl Database {
    /// Opens (creating if needed) the SQLite file at `path` and migrates it.
    pub fn sqlite(path: &Path, schema: &Schema) -> anyhow::Result<Database> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = rusqlite::Connection::open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Self::from_sqlite(conn, schema).with_context(|| format!("preparing {}", path.display()))
    }

    /// The SQLite file at `path` opened read-only and left as it is (no
    /// migration, no pragma): for client commands beside a running server.
    pub fn sqlite_read_only(path: &Path) -> anyhow::Result<Database> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {} read-only", path.display()))?;
        Ok(Database {
            inner: Inner::Sqlite(Mutex::new(conn)),
        })
    }

    /// A database in memory, for tests.
    pub fn sqlite_in_memory(schema: &Schema) -> anyhow::Result<Database> {
        Self::from_sqlite(rusqlite::Connection::open_in_memory()?, schema)
    }

    fn from_sqlite(mut conn: rusqlite::Connection, schema: &Schema) -> anyhow::Result<Database> {
        // WAL lets readers of the file run beside the writer; NORMAL sync
        // survives a crash of Cove without an fsync per commit.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        migrate_sqlite(&mut conn, schema)?;
        Ok(Database {
            inner: Inner::Sqlite(Mutex::new(conn)),
        })
    }

    /// Connects to the PostgreSQL database at `url` and brings the
    /// service's schema there up to date.
    pub fn postgres(url: &str, schema: &'static Schema) -> anyhow::Result<Database> {
        let pool = Pool {
            url: url.to_string(),
            schema: schema.name,
            sessions: Mutex::new(Sessions::default()),
            freed: Condvar::new(),
        };
        off_async_worker(|| -> anyhow::Result<()> {
            let mut client = crate::postgres::connect(url)?;
            migrate_postgres(&mut client, schema)
        })?;
        Ok(Database {
            inner: Inner::Postgres(pool),
        })
    }

    fn sqlite_connection(
        conn: &Mutex<rusqlite::Connection>,
    ) -> MutexGuard<'_, rusqlite::Connection> {
        conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs reads in one consistent snapshot.
    pub fn read<T: Send, E: From<Error> + Send>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> std::result::Result<T, E> + Send,
    ) -> std::result::Result<T, E> {
        match &self.inner {
            // One connection behind a mutex: nothing writes between the statements.
            Inner::Sqlite(conn) => f(&mut SqliteSql(&Self::sqlite_connection(conn))),
            Inner::Postgres(pool) => off_async_worker(|| {
                let mut session = pool.take()?;
                session
                    .client
                    .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .map_err(Error::from)?;
                let out = f(&mut session);
                let ended = session.client.batch_execute(match out {
                    Ok(_) => "COMMIT",
                    Err(_) => "ROLLBACK",
                });
                pool.give_back(session);
                let out = out?;
                ended.map_err(Error::from)?;
                Ok(out)
            }),
        }
    }

    /// Runs one mutating call as one transaction: committed only if `f`
    /// succeeds, so a rejected call changes nothing. On PostgreSQL `f` may
    /// run again (see the module comment), so it must not have effects
    /// outside the transaction.
    pub fn write<T: Send, E: Failure + Send>(
        &self,
        mut f: impl FnMut(&mut dyn Sql) -> std::result::Result<T, E> + Send,
    ) -> std::result::Result<T, E> {
        match &self.inner {
            Inner::Sqlite(conn) => {
                let mut conn = Self::sqlite_connection(conn);
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(Error::from)?;
                let out = f(&mut SqliteSql(&tx))?;
                tx.commit().map_err(Error::from)?;
                Ok(out)
            }
            Inner::Postgres(pool) => off_async_worker(|| {
                let mut attempt = 1;
                loop {
                    let mut session = pool.take()?;
                    let out = pg_transaction(&mut session, &mut f);
                    pool.give_back(session);
                    match out {
                        Err(e)
                            if attempt < ATTEMPTS
                                && e.database_error().is_some_and(Error::lost_a_race) =>
                        {
                            attempt += 1;
                        }
                        out => return out,
                    }
                }
            }),
        }
    }
}

/// One attempt at a write on PostgreSQL.
fn pg_transaction<T, E: From<Error>>(
    session: &mut Session,
    f: &mut impl FnMut(&mut dyn Sql) -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    session.client.batch_execute("BEGIN").map_err(Error::from)?;
    match f(session) {
        Ok(out) => match session.client.batch_execute("COMMIT") {
            Ok(()) => Ok(out),
            Err(e) => Err(Error::from(e).into()),
        },
        Err(e) => {
            let _ = session.client.batch_execute("ROLLBACK");
            Err(e)
        }
    }
}

/// Runs `f`, which blocks on PostgreSQL, where blocking is allowed: as it
/// is outside any async runtime, through `block_in_place` on a worker of a
/// multi-threaded one, and on a thread of its own beside a single-threaded
/// one (tests).
pub fn off_async_worker<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Err(_) => f(),
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        }),
    }
}

fn migrate_sqlite(conn: &mut rusqlite::Connection, schema: &Schema) -> anyhow::Result<()> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    anyhow::ensure!(
        version <= schema.sqlite.len(),
        "{} database schema version {version} is newer than this Cove ({})",
        schema.name,
        schema.sqlite.len()
    );
    for (i, sql) in schema.sqlite.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("{} migration {}", schema.name, i + 1))?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn migrate_postgres(client: &mut postgres::Client, schema: &Schema) -> anyhow::Result<()> {
    crate::postgres::with_migration_lock(client, |client| {
        client.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {name};
             CREATE TABLE IF NOT EXISTS {name}.cove_schema (version INT NOT NULL)",
            name = schema.name
        ))?;
        let table = format!("{}.cove_schema", schema.name);
        let version: i32 = match client.query_opt(&format!("SELECT version FROM {table}"), &[])? {
            Some(r) => r.get(0),
            None => {
                client.execute(&format!("INSERT INTO {table} VALUES (0)"), &[])?;
                0
            }
        };
        let known = schema.postgres.len();
        let ran = usize::try_from(version).unwrap_or(0);
        anyhow::ensure!(
            ran <= known,
            "{} database schema version {version} is newer than this Cove ({known})",
            schema.name
        );
        for (number, sql) in (1_i32..).zip(schema.postgres).skip(ran) {
            let mut tx = client.transaction()?;
            tx.batch_execute(&format!("SET LOCAL search_path TO {}", schema.name))?;
            tx.batch_execute(sql)
                .with_context(|| format!("{} migration {number}", schema.name))?;
            tx.execute(&format!("UPDATE {table} SET version = $1"), &[&number])?;
            tx.commit()?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: Schema = Schema {
        name: "sql_test",
        sqlite: &["CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, n INTEGER)"],
        postgres: &[
            "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                                     name TEXT NOT NULL UNIQUE, n BIGINT)",
        ],
    };

    #[test]
    fn parameters_are_renumbered_outside_quoted_text() {
        assert_eq!(
            numbered_parameters("SELECT '?1', x FROM t WHERE a = ?1 AND b = ?12 OR c = ?"),
            "SELECT '?1', x FROM t WHERE a = $1 AND b = $12 OR c = ?"
        );
    }

    /// Writes, reads back and refuses a duplicate, on `db`.
    fn round_trip(db: &Database) {
        let id: i64 = db
            .write(|tx| {
                tx.query_one(
                    "INSERT INTO t (name, n) VALUES (?1, ?2) RETURNING id",
                    &["a".into(), Value::Null],
                    |r| r.int(0),
                )
            })
            .unwrap();
        let failed = db.write(|tx| {
            tx.execute("UPDATE t SET n = 7 WHERE id = ?1", &[id.into()])?;
            tx.execute("INSERT INTO t (name) VALUES (?1)", &["a".into()])
        });
        assert!(failed.unwrap_err().is_unique_violation());
        let (name, n) = db
            .read(|c| {
                c.query_one("SELECT name, n FROM t WHERE id = ?1", &[id.into()], |r| {
                    Ok((r.text(0)?, r.opt_int(1)?))
                })
            })
            .unwrap();
        assert_eq!(
            (name.as_str(), n),
            ("a", None),
            "the failed write left nothing"
        );
        let mut seen = 0;
        db.read(|c| {
            c.query_each("SELECT id FROM t", &[], &mut |_| {
                seen += 1;
                Ok(false)
            })
        })
        .unwrap();
        assert_eq!(seen, 1);
    }

    #[test]
    fn sqlite_round_trip() {
        round_trip(&Database::sqlite_in_memory(&SCHEMA).unwrap());
    }

    #[test]
    fn postgres_round_trip_and_races_retried() {
        let Some(scratch) = crate::scratch::from_env("cove_sql_test") else {
            return;
        };
        let db = Database::postgres(&scratch.url, &SCHEMA).unwrap();
        round_trip(&db);
        // Migrating again (another replica starting) changes nothing.
        Database::postgres(&scratch.url, &SCHEMA).unwrap();
        // Replicas that each create a row unless it exists, all at once
        // (20 writers on two):
        // the losers' inserts break the unique key, run again, and find
        // the winner's row, as a single writer would have.
        let other = Database::postgres(&scratch.url, &SCHEMA).unwrap();
        let created = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            // More writers than a database keeps sessions: some wait.
            for db in [&db, &other].repeat(SESSIONS_PER_DATABASE + 2) {
                let created = &created;
                s.spawn(move || {
                    db.write(|tx| {
                        let exists =
                            tx.query_opt("SELECT id FROM t WHERE name = 'b'", &[], |r| r.int(0))?;
                        if exists.is_none() {
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            tx.execute("INSERT INTO t (name) VALUES ('b')", &[])?;
                            created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok::<_, Error>(())
                    })
                    .unwrap();
                });
            }
        });
        let rows = other
            .read(|c| c.query_one("SELECT count(*) FROM t WHERE name = 'b'", &[], |r| r.int(0)))
            .unwrap();
        assert_eq!(rows, 1);
        // Every attempt that inserted counted; more than one means a race
        // was lost and run again.
        assert!(created.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    }
}
