//! Log events: ingestion (`PutLogEvents` and the Rust API), reading a stream
//! (`GetLogEvents`), searching a group (`FilterLogEvents`) and the retention
//! purge.

use crate::batch::{check_batch, classify, event_size, Rejected, DAY_MS};
use crate::db::{Result, ServiceDatabase, Sql};
use crate::filter::FilterPattern;
use crate::groups::{self, invalid, invalid_token, stream_not_found};
use crate::token::{sequence_token, Direction, EventKey, PageToken, StreamToken};
use crate::LogsService;
use cove_model::AwsResult;
use std::collections::{HashMap, HashSet};

/// Default and largest `limit` of `GetLogEvents` and `FilterLogEvents`.
pub const MAX_EVENTS_LIMIT: usize = 10_000;
/// A response holds at most this many bytes of events (as AWS: 1 MB).
pub const MAX_RESPONSE_BYTES: usize = 1_048_576;
/// Events one `FilterLogEvents` call examines before answering with a
/// `nextToken`, so a search of a huge group never holds the database long.
pub const FILTER_SCAN_BUDGET: usize = 200_000;
/// Events the retention purge deletes per transaction.
const PURGE_CHUNK: usize = 5_000;

/// What a `PutLogEvents` stored and skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    pub next_sequence_token: String,
    pub rejected: Rejected,
    /// How many events were stored.
    pub stored: usize,
}

#[derive(Debug, Clone, Default)]
pub struct GetEventsRequest {
    /// Inclusive.
    pub start_time: Option<i64>,
    /// Exclusive.
    pub end_time: Option<i64>,
    pub limit: Option<usize>,
    /// Without a token: read the first events (true) or the last (false).
    pub start_from_head: bool,
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputEvent {
    pub timestamp: i64,
    pub message: String,
    pub ingestion_time: i64,
}

/// One page of `GetLogEvents`, in ascending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPage {
    pub events: Vec<OutputEvent>,
    pub next_forward_token: String,
    pub next_backward_token: String,
}

#[derive(Debug, Clone, Default)]
pub struct FilterRequest {
    pub stream_names: Option<Vec<String>>,
    pub stream_name_prefix: Option<String>,
    /// Inclusive.
    pub start_time: Option<i64>,
    /// Inclusive (AWS: events later than this are not returned).
    pub end_time: Option<i64>,
    pub filter_pattern: Option<String>,
    pub limit: Option<usize>,
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilteredEvent {
    pub stream_name: String,
    pub timestamp: i64,
    pub message: String,
    pub ingestion_time: i64,
    pub event_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilteredPage {
    pub events: Vec<FilteredEvent>,
    pub next_token: Option<String>,
}

fn limit_of(limit: Option<usize>) -> usize {
    limit.unwrap_or(MAX_EVENTS_LIMIT).clamp(1, MAX_EVENTS_LIMIT)
}

impl LogsService {
    pub(crate) fn put_events_at<S: AsRef<str> + Sync>(
        &self,
        region: &str,
        account: &str,
        group: &str,
        stream: &str,
        events: &[(i64, S)],
        now: i64,
    ) -> AwsResult<PutOutcome> {
        check_batch(events).map_err(invalid)?;
        self.db
            .write(|tx| put_in(tx, region, account, group, stream, events, now))
    }

    /// Stores lines a shipper read from `source` (a file, named by an id
    /// that is unique to it) up to byte `end`, and records `end` as that
    /// source's offset in the same transaction; a batch ending at or before
    /// the recorded offset was stored before (a crash came between the
    /// commit and the shipper's next read) and is not stored again.
    #[allow(clippy::too_many_arguments)]
    pub fn put_shipped_events<S: AsRef<str> + Sync>(
        &self,
        region: &str,
        account: &str,
        group: &str,
        stream: &str,
        events: &[(i64, S)],
        source: &str,
        end: u64,
    ) -> AwsResult<()> {
        check_batch(events).map_err(invalid)?;
        let end = i64::try_from(end).map_err(|_| invalid("offset too large"))?;
        let now = crate::now_ms();
        self.db.write(|tx| {
            if shipped_at(tx, source)?.is_some_and(|at| at >= end) {
                return Ok(());
            }
            put_in(tx, region, account, group, stream, events, now)?;
            tx.execute(
                "INSERT INTO shipped_sources (source, byte_offset) VALUES (?1, ?2)
                 ON CONFLICT (source) DO UPDATE SET byte_offset = excluded.byte_offset",
                &[source.into(), end.into()],
            )?;
            Ok(())
        })
    }

    /// How far `source` has been shipped (0 when never).
    pub fn shipped_offset(&self, source: &str) -> AwsResult<u64> {
        let at = self.db.read(|c| shipped_at(c, source))?;
        Ok(at.and_then(|a| u64::try_from(a).ok()).unwrap_or(0))
    }
}

/// The recorded offset of a shipped source.
fn shipped_at(c: &mut dyn Sql, source: &str) -> Result<Option<i64>> {
    Ok(c.query_opt(
        "SELECT byte_offset FROM shipped_sources WHERE source = ?1",
        &[source.into()],
        |r| r.int(0),
    )?)
}

/// The body of a `PutLogEvents` inside its transaction.
fn put_in<S: AsRef<str> + Sync>(
    tx: &mut dyn Sql,
    region: &str,
    account: &str,
    group: &str,
    stream: &str,
    events: &[(i64, S)],
    now: i64,
) -> crate::db::Result<PutOutcome> {
    let g = groups::group(tx, region, account, group)?;
    let s = groups::stream(tx, g.id, stream)?;
    let timestamps: Vec<i64> = events.iter().map(|e| e.0).collect();
    let (range, rejected) = classify(&timestamps, now, g.retention_days);
    let accepted = &events[range.clone()];
    if let (Some(first), Some(last)) = (accepted.first(), accepted.last()) {
        let bytes: usize = accepted.iter().map(|(_, m)| m.as_ref().len()).sum();
        let last_seq = insert_events(tx, g.id, s, now, accepted)?;
        tx.execute(
            "UPDATE log_streams SET
                        first_event_timestamp = CASE WHEN first_event_timestamp < ?1
                                                THEN first_event_timestamp ELSE ?1 END,
                        last_event_timestamp = CASE WHEN last_event_timestamp > ?2
                                               THEN last_event_timestamp ELSE ?2 END,
                        last_ingestion_time = ?3,
                        stored_bytes = stored_bytes + ?4,
                        upload_sequence = ?5
                     WHERE id = ?6",
            &[
                first.0.into(),
                last.0.into(),
                now.into(),
                bytes.into(),
                last_seq.into(),
                s.into(),
            ],
        )?;
    }
    let seq = tx.query_one(
        "SELECT upload_sequence FROM log_streams WHERE id = ?1",
        &[s.into()],
        |r| r.int(0),
    )?;
    Ok(PutOutcome {
        next_sequence_token: sequence_token(seq),
        rejected,
        stored: range.len(),
    })
}

/// Events one `INSERT` stores: a statement per 500 rather than per event
/// (a round trip each on PostgreSQL), within SQLite's limit of parameters.
const INSERT_CHUNK: usize = 500;

/// Stores `events` in the stream; the sequence number of the last one.
fn insert_events<S: AsRef<str> + Sync>(
    tx: &mut dyn Sql,
    group_id: i64,
    stream_id: i64,
    now: i64,
    events: &[(i64, S)],
) -> Result<i64> {
    let mut last = 0;
    for chunk in events.chunks(INSERT_CHUNK) {
        // ?1-?3 are the group, stream and ingestion time; each event adds
        // its timestamp and message.
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("(?1, ?2, ?{}, ?3, ?{})", 4 + 2 * i, 5 + 2 * i))
            .collect();
        let sql = format!(
            "INSERT INTO log_events (group_id, stream_id, timestamp, ingestion_time, message)
             VALUES {} RETURNING seq",
            rows.join(", ")
        );
        let mut params = vec![group_id.into(), stream_id.into(), now.into()];
        for (ts, message) in chunk {
            params.push((*ts).into());
            params.push(message.as_ref().into());
        }
        for seq in tx.query(&sql, &params, |r| r.int(0))? {
            last = last.max(seq);
        }
    }
    Ok(last)
}

impl LogsService {
    /// Reads a stream page by page in either direction (`GetLogEvents`).
    pub fn get_log_events(
        &self,
        region: &str,
        account: &str,
        group: &str,
        stream: &str,
        req: &GetEventsRequest,
    ) -> AwsResult<StreamPage> {
        let given = match &req.next_token {
            Some(t) => Some(StreamToken::decode(t).ok_or_else(invalid_token)?),
            None => None,
        };
        let limit = limit_of(req.limit);
        let start = req.start_time.unwrap_or(0).max(0);
        let end = req.end_time.unwrap_or(i64::MAX);
        let (direction, key) = match given {
            Some(t) => (t.direction, t.key),
            None if req.start_from_head => (Direction::Forward, EventKey::MIN),
            None => (Direction::Backward, EventKey::MAX),
        };
        self.db.read(|c| {
            let g = groups::group(c, region, account, group)?;
            let s = groups::stream(c, g.id, stream)?;
            let sql = match direction {
                Direction::Forward => {
                    "SELECT seq, timestamp, ingestion_time, message FROM log_events
                     WHERE group_id = ?1 AND stream_id = ?2 AND timestamp >= ?3 AND timestamp < ?4
                       AND (timestamp, seq) > (?5, ?6)
                     ORDER BY timestamp, seq LIMIT ?7"
                }
                Direction::Backward => {
                    "SELECT seq, timestamp, ingestion_time, message FROM log_events
                     WHERE group_id = ?1 AND stream_id = ?2 AND timestamp >= ?3 AND timestamp < ?4
                       AND timestamp <= ?5 AND (timestamp, seq) < (?5, ?6)
                     ORDER BY timestamp DESC, seq DESC LIMIT ?7"
                }
            };
            let low = match direction {
                Direction::Forward => start.max(key.ts),
                Direction::Backward => start,
            };
            let mut page: Vec<(EventKey, OutputEvent)> = Vec::new();
            let mut bytes = 0;
            c.query_each(
                sql,
                &[
                    g.id.into(),
                    s.into(),
                    low.into(),
                    end.into(),
                    key.ts.into(),
                    key.seq.into(),
                    limit.into(),
                ],
                &mut |r| {
                    let message = r.text(3)?;
                    bytes += event_size(&message);
                    if bytes > MAX_RESPONSE_BYTES && !page.is_empty() {
                        return Ok(false);
                    }
                    let timestamp = r.int(1)?;
                    page.push((
                        EventKey {
                            ts: timestamp,
                            seq: r.int(0)?,
                        },
                        OutputEvent {
                            timestamp,
                            message,
                            ingestion_time: r.int(2)?,
                        },
                    ));
                    Ok(true)
                },
            )?;
            if direction == Direction::Backward {
                page.reverse();
            }
            let (forward, backward) = match (page.first(), page.last(), given) {
                (Some((first, _)), Some((last, _)), _) => {
                    (StreamToken::forward(*last), StreamToken::backward(*first))
                }
                // Nothing further: hand the same token back, as AWS does, and
                // the opposite direction from the same place.
                (_, _, Some(t)) if t.direction == Direction::Forward => (
                    t,
                    StreamToken::backward(EventKey {
                        ts: t.key.ts,
                        seq: t.key.seq.saturating_add(1),
                    }),
                ),
                (_, _, Some(t)) => (
                    StreamToken::forward(EventKey {
                        ts: t.key.ts,
                        seq: t.key.seq.saturating_sub(1).max(0),
                    }),
                    t,
                ),
                // An empty first read: forward from the start (a tail sees
                // what arrives next), backward from the end.
                (_, _, None) => (
                    StreamToken::forward(EventKey::MIN),
                    StreamToken::backward(EventKey::MAX),
                ),
            };
            Ok(StreamPage {
                events: page.into_iter().map(|(_, e)| e).collect(),
                next_forward_token: forward.encode(),
                next_backward_token: backward.encode(),
            })
        })
    }

    /// Searches a group's events in timestamp order (`FilterLogEvents`).
    pub fn filter_log_events(
        &self,
        region: &str,
        account: &str,
        group: &str,
        req: &FilterRequest,
    ) -> AwsResult<FilteredPage> {
        if req.stream_names.is_some() && req.stream_name_prefix.is_some() {
            return Err(invalid(
                "logStreamNames and logStreamNamePrefix are mutually exclusive",
            ));
        }
        let pattern =
            FilterPattern::parse(req.filter_pattern.as_deref().unwrap_or("")).map_err(invalid)?;
        let after = match &req.next_token {
            None => EventKey::MIN,
            Some(t) => match PageToken::decode(t) {
                Some(PageToken::Filter(key)) => key,
                _ => return Err(invalid_token()),
            },
        };
        let limit = limit_of(req.limit);
        let start = req.start_time.unwrap_or(0).max(0);
        let end = req.end_time.unwrap_or(i64::MAX);
        self.db.read(|c| {
            let g = groups::group(c, region, account, group)?;
            let mut names: HashMap<i64, String> = HashMap::new();
            {
                let wanted: Option<HashSet<&str>> = req
                    .stream_names
                    .as_ref()
                    .map(|n| n.iter().map(String::as_str).collect());
                let prefix = req.stream_name_prefix.as_deref().unwrap_or("");
                c.query_each(
                    "SELECT id, name FROM log_streams WHERE group_id = ?1",
                    &[g.id.into()],
                    &mut |r| {
                        let name = r.str(1)?;
                        if name.starts_with(prefix)
                            && wanted.as_ref().is_none_or(|w| w.contains(name))
                        {
                            names.insert(r.int(0)?, name.to_string());
                        }
                        Ok(true)
                    },
                )?;
                if let Some(w) = &wanted {
                    if w.len() != names.len() {
                        return Err(stream_not_found().into());
                    }
                }
            }
            let filtered = req.stream_names.is_some() || req.stream_name_prefix.is_some();
            if filtered && names.is_empty() {
                return Ok(FilteredPage {
                    events: Vec::new(),
                    next_token: None,
                });
            }
            let stream_clause = if filtered {
                let ids: Vec<String> = names.keys().map(i64::to_string).collect();
                format!(" AND stream_id IN ({})", ids.join(","))
            } else {
                String::new()
            };
            let sql = format!(
                "SELECT seq, stream_id, timestamp, ingestion_time, message FROM log_events
                 WHERE group_id = ?1 AND timestamp >= ?2 AND timestamp <= ?3
                   AND (timestamp, seq) > (?4, ?5){stream_clause}
                 ORDER BY timestamp, seq"
            );
            let mut events: Vec<(EventKey, FilteredEvent)> = Vec::new();
            let mut bytes = 0;
            let mut full = false;
            let mut scanned = 0;
            let mut next = None;
            c.query_each(
                &sql,
                &[
                    g.id.into(),
                    start.max(after.ts).into(),
                    end.into(),
                    after.ts.into(),
                    after.seq.into(),
                ],
                &mut |r| {
                    let key = EventKey {
                        ts: r.int(2)?,
                        seq: r.int(0)?,
                    };
                    scanned += 1;
                    // Borrowed: rows the pattern skips are never copied.
                    let message = r.str(4)?;
                    if pattern.matches(message) {
                        let size = event_size(message);
                        if full || (bytes + size > MAX_RESPONSE_BYTES && !events.is_empty()) {
                            // Another match exists beyond this page.
                            next = events.last().map(|(k, _)| *k);
                            return Ok(false);
                        }
                        bytes += size;
                        let stream_id = r.int(1)?;
                        events.push((
                            key,
                            FilteredEvent {
                                stream_name: names.get(&stream_id).cloned().unwrap_or_default(),
                                timestamp: key.ts,
                                message: message.to_string(),
                                ingestion_time: r.int(3)?,
                                event_id: key.digits(),
                            },
                        ));
                        full = events.len() == limit;
                    }
                    if scanned >= FILTER_SCAN_BUDGET {
                        // Out of budget: continue after what was examined (or
                        // after the last event returned, if the page is full).
                        next = Some(match (full, events.last()) {
                            (true, Some((k, _))) => *k,
                            _ => key,
                        });
                        return Ok(false);
                    }
                    Ok(true)
                },
            )?;
            Ok(FilteredPage {
                events: events.into_iter().map(|(_, e)| e).collect(),
                next_token: next.map(|k| PageToken::Filter(k).encode()),
            })
        })
    }
}

/// Deletes events older than each group's retention, a chunk per transaction.
pub(crate) fn purge_expired(db: &ServiceDatabase, now: i64) -> AwsResult<usize> {
    let groups: Vec<i64> = db.read(|c| {
        Ok(c.query(
            "SELECT id FROM log_groups WHERE retention_days IS NOT NULL",
            &[],
            |r| r.int(0),
        )?)
    })?;
    let mut total = 0;
    for group_id in groups {
        loop {
            let deleted = db.write(|tx| {
                // Re-read the policy: it may have changed since the list was taken.
                let days = tx
                    .query_opt(
                        "SELECT retention_days FROM log_groups WHERE id = ?1",
                        &[group_id.into()],
                        |r| r.opt_int(0),
                    )?
                    .flatten();
                let Some(days) = days else {
                    return Ok(0);
                };
                let cutoff = now.saturating_sub(days.saturating_mul(DAY_MS));
                // Deleted with RETURNING, in one statement on both dialects.
                let victims: Vec<(i64, i64)> = tx.query(
                    "DELETE FROM log_events WHERE seq IN
                        (SELECT seq FROM log_events
                          WHERE group_id = ?1 AND timestamp < ?2 LIMIT ?3)
                     RETURNING stream_id, octet_length(message)",
                    &[group_id.into(), cutoff.into(), PURGE_CHUNK.into()],
                    |r| Ok((r.int(0)?, r.int(1)?)),
                )?;
                let mut freed: HashMap<i64, i64> = HashMap::new();
                for (stream_id, bytes) in &victims {
                    *freed.entry(*stream_id).or_default() += bytes;
                }
                for (stream_id, bytes) in freed {
                    tx.execute(
                        "UPDATE log_streams SET
                            stored_bytes = CASE WHEN stored_bytes > ?1
                                           THEN stored_bytes - ?1 ELSE 0 END,
                            first_event_timestamp = COALESCE(
                                (SELECT MIN(timestamp) FROM log_events
                                 WHERE group_id = ?2 AND stream_id = ?3),
                                first_event_timestamp)
                         WHERE id = ?3",
                        &[bytes.into(), group_id.into(), stream_id.into()],
                    )?;
                }
                Ok(victims.len())
            })?;
            total += deleted;
            if deleted < PURGE_CHUNK {
                break;
            }
        }
    }
    Ok(total)
}
