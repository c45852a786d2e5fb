//! Log groups and log streams: creation, deletion, describes, retention
//! policies and tags.

use crate::batch::RETENTION_DAYS;
use crate::db::{Result, Sql};
use crate::token::{sequence_token, PageToken};
use crate::{now_ms, LogsService};
use cove_model::{AwsError, AwsResult};
use std::collections::BTreeMap;

pub const MAX_TAGS: usize = 50;
pub const DEFAULT_DESCRIBE_LIMIT: usize = 50;
pub const CLASSES: [&str; 3] = ["STANDARD", "INFREQUENT_ACCESS", "DELIVERY"];

pub(crate) fn invalid(message: impl Into<String>) -> AwsError {
    AwsError::client("InvalidParameterException", message)
}

pub(crate) fn group_not_found() -> AwsError {
    AwsError::client(
        "ResourceNotFoundException",
        "The specified log group does not exist.",
    )
}

pub(crate) fn stream_not_found() -> AwsError {
    AwsError::client(
        "ResourceNotFoundException",
        "The specified log stream does not exist.",
    )
}

pub(crate) fn invalid_token() -> AwsError {
    invalid("The specified nextToken is not valid.")
}

/// `arn:aws:logs:<region>:<account>:log-group:<name>` (the `arn` member of
/// `DescribeLogGroups` adds `:*`).
pub fn group_arn(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:logs:{region}:{account}:log-group:{name}")
}

pub fn stream_arn(region: &str, account: &str, group: &str, stream: &str) -> String {
    format!("arn:aws:logs:{region}:{account}:log-group:{group}:log-stream:{stream}")
}

/// Splits a log group ARN, with or without the trailing `:*`, into
/// `(region, account, name)`.
pub fn parse_group_arn(arn: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = arn.split(':').collect();
    let ok = match parts.len() {
        7 => true,
        8 => parts[7] == "*",
        _ => false,
    };
    let fixed = parts.first() == Some(&"arn")
        && parts.get(2) == Some(&"logs")
        && parts.get(5) == Some(&"log-group");
    if !ok || !fixed || parts[1].is_empty() || parts[6].is_empty() {
        return None;
    }
    Some((parts[3], parts[4], parts[6]))
}

pub fn validate_group_name(name: &str) -> AwsResult<()> {
    let ok = (1..=512).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b'#'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "Invalid log group name '{name}': 1 to 512 characters of [.-_/#A-Za-z0-9]"
        )))
    }
}

pub fn validate_stream_name(name: &str) -> AwsResult<()> {
    if (1..=512).contains(&name.len()) && !name.contains([':', '*']) {
        Ok(())
    } else {
        Err(invalid(format!(
            "Invalid log stream name '{name}': 1 to 512 characters, without ':' or '*'"
        )))
    }
}

/// Options of `CreateLogGroup`.
#[derive(Debug, Clone, Default)]
pub struct NewLogGroup {
    pub kms_key_id: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// `STANDARD` (the default), `INFREQUENT_ACCESS` or `DELIVERY`.
    pub class: Option<String>,
    pub deletion_protection: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogGroupInfo {
    pub name: String,
    pub creation_time: i64,
    pub retention_days: Option<i64>,
    /// Bytes of the stored messages.
    pub stored_bytes: i64,
    pub kms_key_id: Option<String>,
    pub class: String,
    pub deletion_protection: bool,
}

#[derive(Debug, Clone, Default)]
pub struct DescribeGroupsRequest {
    pub name_prefix: Option<String>,
    /// Case-sensitive substring of the name.
    pub name_pattern: Option<String>,
    pub class: Option<String>,
    /// Only these names (`logGroupIdentifiers`).
    pub names: Option<Vec<String>>,
    pub limit: Option<usize>,
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StreamOrder {
    #[default]
    LogStreamName,
    LastEventTime,
}

#[derive(Debug, Clone, Default)]
pub struct DescribeStreamsRequest {
    pub name_prefix: Option<String>,
    pub order: StreamOrder,
    pub descending: bool,
    pub limit: Option<usize>,
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStreamInfo {
    pub name: String,
    pub creation_time: i64,
    pub first_event_timestamp: Option<i64>,
    pub last_event_timestamp: Option<i64>,
    pub last_ingestion_time: Option<i64>,
    pub upload_sequence_token: String,
}

/// What the event paths need to know about a group.
pub(crate) struct GroupRow {
    pub id: i64,
    pub retention_days: Option<i64>,
    pub tags: String,
    pub deletion_protection: bool,
}

pub(crate) fn find_group(
    c: &mut dyn Sql,
    region: &str,
    account: &str,
    name: &str,
) -> Result<Option<GroupRow>> {
    Ok(c.query_opt(
        "SELECT id, retention_days, tags, deletion_protection FROM log_groups
         WHERE account = ?1 AND region = ?2 AND name = ?3",
        &[account.into(), region.into(), name.into()],
        |r| {
            Ok(GroupRow {
                id: r.int(0)?,
                retention_days: r.opt_int(1)?,
                tags: r.text(2)?,
                deletion_protection: r.int(3)? != 0,
            })
        },
    )?)
}

/// The group, or `ResourceNotFoundException`.
pub(crate) fn group(c: &mut dyn Sql, region: &str, account: &str, name: &str) -> Result<GroupRow> {
    Ok(find_group(c, region, account, name)?.ok_or_else(group_not_found)?)
}

pub(crate) fn find_stream(c: &mut dyn Sql, group_id: i64, name: &str) -> Result<Option<i64>> {
    Ok(c.query_opt(
        "SELECT id FROM log_streams WHERE group_id = ?1 AND name = ?2",
        &[group_id.into(), name.into()],
        |r| r.int(0),
    )?)
}

/// The stream's id, or `ResourceNotFoundException`.
pub(crate) fn stream(c: &mut dyn Sql, group_id: i64, name: &str) -> Result<i64> {
    Ok(find_stream(c, group_id, name)?.ok_or_else(stream_not_found)?)
}

pub(crate) fn ensure_group_in(
    tx: &mut dyn Sql,
    region: &str,
    account: &str,
    name: &str,
    now: i64,
) -> Result<i64> {
    if let Some(g) = find_group(tx, region, account, name)? {
        return Ok(g.id);
    }
    Ok(tx.query_one(
        "INSERT INTO log_groups (account, region, name, creation_time) VALUES (?1, ?2, ?3, ?4)
         RETURNING id",
        &[account.into(), region.into(), name.into(), now.into()],
        |r| r.int(0),
    )?)
}

pub(crate) fn ensure_stream_in(
    tx: &mut dyn Sql,
    group_id: i64,
    name: &str,
    now: i64,
) -> Result<i64> {
    if let Some(id) = find_stream(tx, group_id, name)? {
        return Ok(id);
    }
    Ok(tx.query_one(
        "INSERT INTO log_streams (group_id, name, creation_time) VALUES (?1, ?2, ?3) RETURNING id",
        &[group_id.into(), name.into(), now.into()],
        |r| r.int(0),
    )?)
}

fn tags_json(tags: &BTreeMap<String, String>) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "{}".into())
}

fn parse_tags(json: &str) -> BTreeMap<String, String> {
    serde_json::from_str(json).unwrap_or_default()
}

fn limit_of(limit: Option<usize>) -> usize {
    limit
        .unwrap_or(DEFAULT_DESCRIBE_LIMIT)
        .clamp(1, DEFAULT_DESCRIBE_LIMIT)
}

impl LogsService {
    pub fn create_log_group(
        &self,
        region: &str,
        account: &str,
        name: &str,
        options: &NewLogGroup,
    ) -> AwsResult<()> {
        validate_group_name(name)?;
        let class = options.class.as_deref().unwrap_or("STANDARD");
        if !CLASSES.contains(&class) {
            return Err(invalid(format!("Invalid log group class '{class}'")));
        }
        if options.tags.len() > MAX_TAGS {
            return Err(too_many_tags());
        }
        let now = now_ms();
        self.db.write(|tx| {
            if find_group(tx, region, account, name)?.is_some() {
                return Err(AwsError::client(
                    "ResourceAlreadyExistsException",
                    "The specified log group already exists",
                )
                .into());
            }
            tx.execute(
                "INSERT INTO log_groups (account, region, name, creation_time, tags, kms_key_id,
                                         log_group_class, deletion_protection)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                &[
                    account.into(),
                    region.into(),
                    name.into(),
                    now.into(),
                    tags_json(&options.tags).as_str().into(),
                    options.kms_key_id.as_ref().into(),
                    class.into(),
                    options.deletion_protection.into(),
                ],
            )?;
            Ok(())
        })
    }

    /// Deletes the group with its streams and events.
    pub fn delete_log_group(&self, region: &str, account: &str, name: &str) -> AwsResult<()> {
        self.db.write(|tx| {
            let g = group(tx, region, account, name)?;
            if g.deletion_protection {
                return Err(AwsError::client(
                    "ValidationException",
                    "Cannot delete log group with deletion protection enabled. Disable deletion protection first.",
                )
                .into());
            }
            tx.execute("DELETE FROM log_events WHERE group_id = ?1", &[g.id.into()])?;
            tx.execute("DELETE FROM log_streams WHERE group_id = ?1", &[g.id.into()])?;
            tx.execute("DELETE FROM log_groups WHERE id = ?1", &[g.id.into()])?;
            Ok(())
        })
    }

    /// One page of groups sorted by name, and the token of the next page.
    pub fn describe_log_groups(
        &self,
        region: &str,
        account: &str,
        req: &DescribeGroupsRequest,
    ) -> AwsResult<(Vec<LogGroupInfo>, Option<String>)> {
        if req.name_prefix.is_some() && req.name_pattern.is_some() {
            return Err(invalid(
                "logGroupNamePrefix and logGroupNamePattern are mutually exclusive",
            ));
        }
        let after = match &req.next_token {
            None => String::new(),
            Some(t) => match PageToken::decode(t) {
                Some(PageToken::Group(name)) => name,
                _ => return Err(invalid_token()),
            },
        };
        let limit = limit_of(req.limit);
        let prefix = req.name_prefix.as_deref().unwrap_or("");
        self.db.read(|c| {
            let mut out = Vec::new();
            let mut more = false;
            // The sum is cast because PostgreSQL sums BIGINTs as NUMERIC.
            c.query_each(
                "SELECT g.name, g.creation_time, g.retention_days, g.kms_key_id, g.log_group_class,
                        g.deletion_protection,
                        CAST(COALESCE((SELECT SUM(s.stored_bytes) FROM log_streams s
                                       WHERE s.group_id = g.id), 0) AS BIGINT)
                 FROM log_groups g
                 WHERE g.account = ?1 AND g.region = ?2 AND g.name > ?3 AND g.name >= ?4
                 ORDER BY g.name",
                &[
                    account.into(),
                    region.into(),
                    after.as_str().into(),
                    prefix.into(),
                ],
                &mut |r| {
                    let info = LogGroupInfo {
                        name: r.text(0)?,
                        creation_time: r.int(1)?,
                        retention_days: r.opt_int(2)?,
                        kms_key_id: r.opt_text(3)?,
                        class: r.text(4)?,
                        deletion_protection: r.int(5)? != 0,
                        stored_bytes: r.int(6)?,
                    };
                    if !info.name.starts_with(prefix) {
                        return Ok(false); // sorted by name: no later name has the prefix
                    }
                    let keep = req
                        .name_pattern
                        .as_deref()
                        .is_none_or(|p| info.name.contains(p))
                        && req.class.as_deref().is_none_or(|c| info.class == c)
                        && req.names.as_ref().is_none_or(|n| n.contains(&info.name));
                    if !keep {
                        return Ok(true);
                    }
                    if out.len() == limit {
                        more = true;
                        return Ok(false);
                    }
                    out.push(info);
                    Ok(true)
                },
            )?;
            let token = more
                .then(|| {
                    out.last()
                        .map(|g| PageToken::Group(g.name.clone()).encode())
                })
                .flatten();
            Ok((out, token))
        })
    }

    pub fn create_log_stream(
        &self,
        region: &str,
        account: &str,
        group_name: &str,
        name: &str,
    ) -> AwsResult<()> {
        validate_stream_name(name)?;
        let now = now_ms();
        self.db.write(|tx| {
            let g = group(tx, region, account, group_name)?;
            if find_stream(tx, g.id, name)?.is_some() {
                return Err(AwsError::client(
                    "ResourceAlreadyExistsException",
                    "The specified log stream already exists",
                )
                .into());
            }
            ensure_stream_in(tx, g.id, name, now)?;
            Ok(())
        })
    }

    /// Deletes the stream and its events.
    pub fn delete_log_stream(
        &self,
        region: &str,
        account: &str,
        group_name: &str,
        name: &str,
    ) -> AwsResult<()> {
        self.db.write(|tx| {
            let g = group(tx, region, account, group_name)?;
            let s = stream(tx, g.id, name)?;
            tx.execute(
                "DELETE FROM log_events WHERE group_id = ?1 AND stream_id = ?2",
                &[g.id.into(), s.into()],
            )?;
            tx.execute("DELETE FROM log_streams WHERE id = ?1", &[s.into()])?;
            Ok(())
        })
    }

    /// One page of a group's streams, and the token of the next page.
    pub fn describe_log_streams(
        &self,
        region: &str,
        account: &str,
        group_name: &str,
        req: &DescribeStreamsRequest,
    ) -> AwsResult<(Vec<LogStreamInfo>, Option<String>)> {
        if req.order == StreamOrder::LastEventTime && req.name_prefix.is_some() {
            return Err(invalid(
                "Cannot order by LastEventTime with a logStreamNamePrefix.",
            ));
        }
        let after = match (&req.next_token, req.order) {
            (None, _) => None,
            (Some(t), order) => match (PageToken::decode(t), order) {
                (Some(PageToken::StreamByName(n)), StreamOrder::LogStreamName) => Some((0, n)),
                (Some(PageToken::StreamByTime(ts, n)), StreamOrder::LastEventTime) => Some((ts, n)),
                _ => return Err(invalid_token()),
            },
        };
        let limit = limit_of(req.limit);
        let prefix = req.name_prefix.as_deref().unwrap_or("");
        let (cmp, dir) = if req.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        let (sql_after, order_by) = match req.order {
            StreamOrder::LogStreamName => (
                // The cast names ?2's type, which PostgreSQL cannot infer here.
                format!("(CAST(?2 AS BIGINT) IS NULL OR name {cmp} ?3)"),
                format!("name {dir}"),
            ),
            StreamOrder::LastEventTime => (
                format!(
                    "(CAST(?2 AS BIGINT) IS NULL
                      OR (COALESCE(last_event_timestamp, -1), name) {cmp} (?2, ?3))"
                ),
                format!("COALESCE(last_event_timestamp, -1) {dir}, name {dir}"),
            ),
        };
        let sql = format!(
            "SELECT name, creation_time, first_event_timestamp, last_event_timestamp,
                    last_ingestion_time, upload_sequence
             FROM log_streams
             WHERE group_id = ?1 AND {sql_after}
             ORDER BY {order_by}"
        );
        self.db.read(|c| {
            let g = group(c, region, account, group_name)?;
            let (after_ts, after_name) = match &after {
                Some((ts, n)) => (Some(*ts), Some(n.as_str())),
                None => (None, None),
            };
            let mut out = Vec::new();
            let mut more = false;
            c.query_each(
                &sql,
                &[g.id.into(), after_ts.into(), after_name.into()],
                &mut |r| {
                    let name = r.str(0)?;
                    if !name.starts_with(prefix) {
                        return Ok(true);
                    }
                    if out.len() == limit {
                        more = true;
                        return Ok(false);
                    }
                    out.push(LogStreamInfo {
                        name: name.to_string(),
                        creation_time: r.int(1)?,
                        first_event_timestamp: r.opt_int(2)?,
                        last_event_timestamp: r.opt_int(3)?,
                        last_ingestion_time: r.opt_int(4)?,
                        upload_sequence_token: sequence_token(r.int(5)?),
                    });
                    Ok(true)
                },
            )?;
            let token = match out.last() {
                Some(s) if more => Some(
                    match req.order {
                        StreamOrder::LogStreamName => PageToken::StreamByName(s.name.clone()),
                        StreamOrder::LastEventTime => PageToken::StreamByTime(
                            s.last_event_timestamp.unwrap_or(-1),
                            s.name.clone(),
                        ),
                    }
                    .encode(),
                ),
                _ => None,
            };
            Ok((out, token))
        })
    }

    pub fn put_retention_policy(
        &self,
        region: &str,
        account: &str,
        group_name: &str,
        days: i64,
    ) -> AwsResult<()> {
        if !RETENTION_DAYS.contains(&days) {
            let allowed: Vec<String> = RETENTION_DAYS.iter().map(i64::to_string).collect();
            return Err(invalid(format!(
                "1 validation error detected: Value '{days}' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                allowed.join(", ")
            )));
        }
        self.set_retention(region, account, group_name, Some(days))
    }

    pub fn delete_retention_policy(
        &self,
        region: &str,
        account: &str,
        group_name: &str,
    ) -> AwsResult<()> {
        self.set_retention(region, account, group_name, None)
    }

    fn set_retention(
        &self,
        region: &str,
        account: &str,
        group_name: &str,
        days: Option<i64>,
    ) -> AwsResult<()> {
        self.db.write(|tx| {
            let g = group(tx, region, account, group_name)?;
            tx.execute(
                "UPDATE log_groups SET retention_days = ?1 WHERE id = ?2",
                &[days.into(), g.id.into()],
            )?;
            Ok(())
        })
    }

    /// Adds or replaces tags of the log group named by `arn`.
    pub fn tag_resource(
        &self,
        region: &str,
        account: &str,
        arn: &str,
        tags: &BTreeMap<String, String>,
    ) -> AwsResult<()> {
        let name = group_of_arn(region, account, arn)?;
        self.db.write(|tx| {
            let g = group(tx, region, account, name)?;
            let mut current = parse_tags(&g.tags);
            current.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
            if current.len() > MAX_TAGS {
                return Err(too_many_tags().into());
            }
            save_tags(tx, g.id, &current)
        })
    }

    /// Removes tags of the log group named by `arn`; absent keys are ignored.
    pub fn untag_resource(
        &self,
        region: &str,
        account: &str,
        arn: &str,
        keys: &[String],
    ) -> AwsResult<()> {
        let name = group_of_arn(region, account, arn)?;
        self.db.write(|tx| {
            let g = group(tx, region, account, name)?;
            let mut current = parse_tags(&g.tags);
            for k in keys {
                current.remove(k);
            }
            save_tags(tx, g.id, &current)
        })
    }

    pub fn list_tags_for_resource(
        &self,
        region: &str,
        account: &str,
        arn: &str,
    ) -> AwsResult<BTreeMap<String, String>> {
        let name = group_of_arn(region, account, arn)?;
        self.db
            .read(|c| Ok(parse_tags(&group(c, region, account, name)?.tags)))
    }
}

fn too_many_tags() -> AwsError {
    AwsError::client(
        "TooManyTagsException",
        format!("A resource can have no more than {MAX_TAGS} tags."),
    )
}

fn save_tags(tx: &mut dyn Sql, group_id: i64, tags: &BTreeMap<String, String>) -> Result<()> {
    tx.execute(
        "UPDATE log_groups SET tags = ?1 WHERE id = ?2",
        &[tags_json(tags).as_str().into(), group_id.into()],
    )?;
    Ok(())
}

/// The group name in a tagging ARN of this account and region.
fn group_of_arn<'a>(region: &str, account: &str, arn: &'a str) -> AwsResult<&'a str> {
    let Some((r, a, name)) = parse_group_arn(arn) else {
        if arn.starts_with("arn:") {
            return Err(AwsError::client(
                "ResourceNotFoundException",
                "The specified resource does not exist.",
            ));
        }
        return Err(invalid(format!("Invalid resource ARN '{arn}'")));
    };
    if r != region || a != account {
        return Err(group_not_found());
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_arns_parse_with_and_without_star() {
        let arn = group_arn("us-east-1", "123456789012", "/aws/x");
        assert_eq!(arn, "arn:aws:logs:us-east-1:123456789012:log-group:/aws/x");
        assert_eq!(
            parse_group_arn(&arn),
            Some(("us-east-1", "123456789012", "/aws/x"))
        );
        assert_eq!(
            parse_group_arn(&format!("{arn}:*")),
            Some(("us-east-1", "123456789012", "/aws/x"))
        );
        assert_eq!(parse_group_arn(&format!("{arn}:log-stream:s")), None);
        assert_eq!(parse_group_arn("arn:aws:s3:::bucket"), None);
        assert_eq!(parse_group_arn("/aws/x"), None);
    }

    #[test]
    fn names_are_validated_for_rust_callers() {
        assert!(validate_group_name("/aws/vpc/flow-logs_1#a.b").is_ok());
        assert!(validate_group_name("").is_err());
        assert!(validate_group_name("a b").is_err());
        assert!(validate_group_name(&"a".repeat(513)).is_err());
        assert!(validate_stream_name("eni-1/i-2 all").is_ok());
        assert!(validate_stream_name("a:b").is_err());
        assert!(validate_stream_name("a*").is_err());
    }
}
