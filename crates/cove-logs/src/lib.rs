//! CloudWatch Logs for Cove: log groups, log streams and log events, served
//! over the awsJson 1.1 API (`Logs_20140328.*`, signing name `logs`) and as a
//! plain Rust API for Cove's own producers (VPC flow logs, job containers),
//! which deliver events without HTTP through the same code path.
//!
//! # Storage
//! Events are high-volume, so they live in their own SQLite file (`logs.db`
//! in the data directory), not in the in-memory document store: WAL mode,
//! `synchronous=NORMAL`, migrations numbered by `PRAGMA user_version`. Every
//! mutating call is one transaction, so a rejected call changes nothing.
//! Everything is scoped by account and region. Events are ordered by
//! `(timestamp, sequence)`, the sequence being an ever-increasing integer
//! assigned at ingestion; it also makes the event ids and the read tokens.
//! [`LogsService::purge_expired`] deletes events older than their group's
//! retention; the server runs it every minute ([`LogsService::purge_forever`]).
//!
//! # Operations
//! `CreateLogGroup`, `DeleteLogGroup`, `DescribeLogGroups`, `CreateLogStream`,
//! `DeleteLogStream`, `DescribeLogStreams`, `PutLogEvents`, `GetLogEvents`,
//! `FilterLogEvents`, `PutRetentionPolicy`, `DeleteRetentionPolicy`,
//! `TagResource`, `UntagResource`, `ListTagsForResource`. `docs/logs.md`
//! lists the semantics and where Cove chose for AWS.
//!
//! # Filter patterns
//! `FilterLogEvents` supports the unstructured-text part of AWS's syntax:
//! - an empty pattern matches every event;
//! - space-separated terms must all appear in the message (case-sensitive
//!   substring match): `ERROR disk`;
//! - `"quoted phrases"` match exactly, spaces included (`\"` and `\\`
//!   escape a quote and a backslash): `"disk full"`;
//! - a term prefixed with `-` must not appear: `ERROR -"disk full"`;
//! - terms prefixed with `?` match if any of them appears: `?ERROR ?WARN`
//!   (combined with plain terms, all plain terms and one `?` term must match);
//! - `%regex%` is a regular-expression term (Rust `regex` syntax), usable
//!   with `-` and `?` too: `%ERROR [0-9]{3}%`.
//!
//! JSON patterns (`{ $.level = "ERROR" }`) and space-delimited patterns
//! (`[ip, user, ...]`) are refused with `InvalidParameterException`:
//! Cove does not support them yet.

mod api;
mod batch;
mod db;
mod events;
mod filter;
mod groups;
mod token;

pub use batch::{Rejected, RETENTION_DAYS};
pub use events::{
    FilterRequest, FilteredEvent, FilteredPage, GetEventsRequest, OutputEvent, PutOutcome,
    StreamPage,
};
pub use filter::FilterPattern;
pub use groups::{
    DescribeGroupsRequest, DescribeStreamsRequest, LogGroupInfo, LogStreamInfo, NewLogGroup,
    StreamOrder,
};

use cove_model::AwsResult;
use cove_wire::{model::ServiceModel, Protocol, RequestContext, Service};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The CloudWatch Logs service and its database.
pub struct LogsService {
    db: db::ServiceDatabase,
}

/// Milliseconds since the Unix epoch, the unit of every Logs timestamp.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl LogsService {
    /// Opens (creating and migrating if needed) the logs database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<LogsService> {
        Ok(LogsService {
            db: db::ServiceDatabase::new(
                db::Database::sqlite(path, &db::SCHEMA)?,
                "logs",
                db::unavailable,
            ),
        })
    }

    /// Connects to the shared PostgreSQL database at `url` (its `logs`
    /// schema, brought up to date), which every API replica serves from.
    pub fn connect_postgres(url: &str) -> anyhow::Result<LogsService> {
        Ok(LogsService {
            db: db::ServiceDatabase::new(
                db::Database::postgres(url, &db::SCHEMA)?,
                "logs",
                db::unavailable,
            ),
        })
    }

    /// A service on an in-memory database, for tests.
    pub fn in_memory() -> anyhow::Result<LogsService> {
        Ok(LogsService {
            db: db::ServiceDatabase::new(
                db::Database::sqlite_in_memory(&db::SCHEMA)?,
                "logs",
                db::unavailable,
            ),
        })
    }

    /// Creates the log group unless it exists (as AWS services that deliver
    /// logs do); an existing group is left as it is.
    pub fn ensure_group(&self, region: &str, account: &str, group: &str) -> AwsResult<()> {
        groups::validate_group_name(group)?;
        let now = now_ms();
        self.db.write(|tx| {
            groups::ensure_group_in(tx, region, account, group, now)?;
            Ok(())
        })
    }

    /// Creates the log group and the log stream unless they exist.
    pub fn ensure_stream(
        &self,
        region: &str,
        account: &str,
        group: &str,
        stream: &str,
    ) -> AwsResult<()> {
        groups::validate_group_name(group)?;
        groups::validate_stream_name(stream)?;
        let now = now_ms();
        self.db.write(|tx| {
            let gid = groups::ensure_group_in(tx, region, account, group, now)?;
            groups::ensure_stream_in(tx, gid, stream, now)?;
            Ok(())
        })
    }

    /// Stores a batch of `(timestamp ms, message)` events in an existing
    /// stream, with exactly the rules of `PutLogEvents`: the batch must be in
    /// chronological order, at most 10,000 events and 1 MiB (message bytes +
    /// 26 per event) and span at most 24 hours, or nothing is stored; events
    /// older than 14 days or the group's retention, or more than 2 hours in
    /// the future, are skipped and reported in [`PutOutcome::rejected`].
    /// Producers sort their events first and split larger batches.
    pub fn put_events<S: AsRef<str> + Sync>(
        &self,
        region: &str,
        account: &str,
        group: &str,
        stream: &str,
        events: &[(i64, S)],
    ) -> AwsResult<PutOutcome> {
        self.put_events_at(region, account, group, stream, events, now_ms())
    }

    /// Deletes every event older than its group's retention period at
    /// `now_ms`, in bounded transactions so writers are never held up long.
    /// Returns how many events were deleted.
    pub fn purge_expired(&self, now_ms: i64) -> AwsResult<usize> {
        events::purge_expired(&self.db, now_ms)
    }

    /// Runs [`purge_expired`](Self::purge_expired) every `every`, forever;
    /// call it from a dedicated thread.
    pub fn purge_forever(&self, every: Duration) {
        loop {
            std::thread::sleep(every);
            match self.purge_expired(now_ms()) {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "purged expired log events"),
                Err(e) => tracing::warn!(error = %e, "log retention purge failed"),
            }
        }
    }
}

impl Service for LogsService {
    fn signing_name(&self) -> &'static str {
        "logs"
    }
    fn protocol(&self) -> Protocol {
        Protocol::Json
    }
    fn model(&self) -> &'static ServiceModel {
        cove_wire::model::logs()
    }
    fn validation_error_code(&self) -> &'static str {
        "InvalidParameterException"
    }
    fn handle(&self, ctx: &RequestContext, input: Value) -> AwsResult<Value> {
        api::handle(self, ctx, &input)
    }
}

#[cfg(test)]
mod tests;
