//! What every SageMaker handler shares: AWS's validation error, the
//! `VpcConfig` checks, list paging and sorting, and small request readers.

use crate::requests::*;
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_shapes::time_of;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// The store as one SageMaker call sees it: the caller's account's
/// resources only, keyed (by ARN) in the caller's region.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    store: cove_store::AccountStore<'a>,
    pub region: &'a str,
}

impl<'a> Caller<'a> {
    pub fn new(store: &'a cove_store::Store, ctx: &'a cove_wire::RequestContext) -> Caller<'a> {
        Caller {
            store: store.as_account(ctx.account_id()),
            region: &ctx.region,
        }
    }
    pub fn account(&self) -> &'a str {
        self.store.account
    }
    pub fn snapshot(&self) -> std::sync::Arc<cove_model::world::World> {
        self.store.snapshot()
    }
    pub fn write<T>(&self, f: impl FnOnce(&mut cove_store::Tx) -> AwsResult<T>) -> AwsResult<T> {
        self.store.write(f)
    }
}

pub fn validation(message: impl Into<String>) -> AwsError {
    AwsError::client("ValidationException", message)
}

/// A request that does not parse into its operation's type, as AWS words
/// one validation error.
pub fn invalid_request(e: impl std::fmt::Display) -> AwsError {
    validation(format!("1 validation error detected: {e}"))
}

/// The items in order, each once.
pub fn unique(items: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

/// A page of an already ordered list: `max_results` (default `max`) from
/// the position `next_token` names, and the next `NextToken` when more
/// remain.
pub fn paged(
    next_token: Option<&str>,
    max_results: Option<i64>,
    items: Vec<Value>,
    key: &str,
    max: usize,
) -> Value {
    let start: usize = next_token.and_then(|t| t.parse().ok()).unwrap_or(0);
    let max = count(max_results).map_or(max, cove_model::convert::u64_to_usize);
    let page: Vec<Value> = items.iter().skip(start).take(max).cloned().collect();
    let mut out = serde_json::json!({ key: page });
    if start + max < items.len() {
        out["NextToken"] = serde_json::json!((start + max).to_string());
    }
    out
}

pub use cove_model::convert::count;

/// A Describe answer's start: the Create request echoed back, less its
/// `Tags` (ListTags answers those).
pub fn echoed(request: &impl serde::Serialize) -> Map<String, Value> {
    let mut out = match serde_json::to_value(request) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    out.remove("Tags");
    out
}

/// The subnets and security groups of a `VpcConfig`, checked against the
/// account's VPCs: every id must exist in the region and the subnets must
/// share one VPC with the groups.
pub fn check_vpc_config(
    world: &World,
    region: &str,
    subnets: &[String],
    groups: &[String],
) -> AwsResult<()> {
    let missing: Vec<&String> = subnets
        .iter()
        .filter(|s| world.subnets.get(*s).is_none_or(|x| x.region != region))
        .collect();
    if !missing.is_empty() {
        return Err(validation(format!(
            "The subnet ID(s) {} do not exist.",
            join_ids(&missing)
        )));
    }
    let missing: Vec<&String> = groups
        .iter()
        .filter(|g| {
            world
                .security_groups
                .get(*g)
                .is_none_or(|x| x.region != region)
        })
        .collect();
    if !missing.is_empty() {
        return Err(validation(format!(
            "The security group ID(s) {} do not exist.",
            join_ids(&missing)
        )));
    }
    let vpcs: BTreeSet<&str> = subnets
        .iter()
        .filter_map(|s| world.subnets.get(s))
        .map(|s| s.vpc_id.as_str())
        .collect();
    if vpcs.len() > 1 {
        return Err(validation(format!(
            "Subnets {} are not in the same VPC.",
            join_ids(&subnets.iter().collect::<Vec<_>>())
        )));
    }
    let vpc = vpcs.into_iter().next().unwrap_or_default();
    let foreign: Vec<&String> = groups
        .iter()
        .filter(|g| {
            world
                .security_groups
                .get(*g)
                .is_some_and(|x| x.vpc_id != vpc)
        })
        .collect();
    if !foreign.is_empty() {
        return Err(validation(format!(
            "Security group(s) {} do not belong to the VPC {vpc} of the subnets.",
            join_ids(&foreign)
        )));
    }
    Ok(())
}

fn join_ids(ids: &[&String]) -> String {
    format!(
        "[{}]",
        ids.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Checks a Create request beyond its schema and builds the stored job.
pub fn seconds_between(start: &str, end: &str) -> i64 {
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    };
    match (parse(start), parse(end)) {
        (Some(a), Some(b)) => (b - a).whole_seconds().max(1),
        _ => 1,
    }
}

/// One listable item: what the List operations filter and sort on.
pub struct Row<'a> {
    pub name: &'a str,
    pub created: &'a str,
    pub modified: &'a str,
    pub status: &'a str,
    pub summary: Value,
}

/// What a List operation filters, sorts and pages by: the members the
/// List requests share. A request without one of them leaves it `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    pub name_contains: Option<String>,
    pub status_equals: Option<String>,
    pub creation_time_after: Option<Timestamp>,
    pub creation_time_before: Option<Timestamp>,
    pub last_modified_time_after: Option<Timestamp>,
    pub last_modified_time_before: Option<Timestamp>,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

/// `From<&List...>` for [`ListQuery`]: the members named are copied, the
/// others stay `None`.
macro_rules! list_query {
    ($($request:ty { $($field:ident),* $(,)? })*) => {$(
        impl From<&$request> for ListQuery {
            #[allow(clippy::needless_update)] // why: some requests have every member.
            fn from(r: &$request) -> ListQuery {
                ListQuery {
                    $($field: r.$field.clone(),)*
                    ..ListQuery::default()
                }
            }
        }
    )*};
}

list_query! {
    ListTrainingJobsRequest { name_contains, status_equals, creation_time_after, creation_time_before,
        last_modified_time_after, last_modified_time_before, sort_by, sort_order, next_token, max_results }
    ListProcessingJobsRequest { name_contains, status_equals, creation_time_after, creation_time_before,
        last_modified_time_after, last_modified_time_before, sort_by, sort_order, next_token, max_results }
    ListModelsInput { name_contains, creation_time_after, creation_time_before, sort_by, sort_order,
        next_token, max_results }
    ListEndpointConfigsInput { name_contains, creation_time_after, creation_time_before, sort_by,
        sort_order, next_token, max_results }
    ListEndpointsInput { name_contains, status_equals, creation_time_after, creation_time_before,
        last_modified_time_after, last_modified_time_before, sort_by, sort_order, next_token, max_results }
    ListTransformJobsRequest { name_contains, status_equals, creation_time_after, creation_time_before,
        last_modified_time_after, last_modified_time_before, sort_by, sort_order, next_token, max_results }
    ListCompilationJobsRequest { name_contains, status_equals, creation_time_after, creation_time_before,
        last_modified_time_after, last_modified_time_before, sort_by, sort_order, next_token, max_results }
    ListInferenceRecommendationsJobsRequest { name_contains, status_equals, creation_time_after,
        creation_time_before, last_modified_time_after, last_modified_time_before, sort_by, sort_order,
        next_token, max_results }
}

/// A List answer: `NameContains`, `StatusEquals`, creation and modification
/// time bounds, `SortBy` (`Name`, `CreationTime`, `Status`), `SortOrder`
/// (default `Descending`), `MaxResults` (default 10) and `NextToken`.
///
/// The reference names `Ascending` as `SortOrder`'s default, but its own
/// account of how `ListTrainingJobs` selects jobs ("sorted according to the
/// creation time, from the most current to the oldest") is newest first:
/// Cove follows what the service is described doing.
pub fn page(q: &ListQuery, rows: Vec<Row>, list_key: &str) -> AwsResult<Value> {
    let name_contains = q
        .name_contains
        .as_deref()
        .unwrap_or_default()
        .to_lowercase();
    let status = q.status_equals.as_deref();
    let bound = |t: &Option<Timestamp>| t.map(|t| t.0);
    let parse = |s: &str| time_of(&json!(s));
    let (created_after, created_before) = (
        bound(&q.creation_time_after),
        bound(&q.creation_time_before),
    );
    let (modified_after, modified_before) = (
        bound(&q.last_modified_time_after),
        bound(&q.last_modified_time_before),
    );
    let mut rows: Vec<Row> = rows
        .into_iter()
        .filter(|r| r.name.to_lowercase().contains(&name_contains))
        .filter(|r| status.is_none_or(|s| r.status == s))
        .filter(|r| {
            let c = parse(r.created);
            let m = parse(r.modified);
            created_after.is_none_or(|t| c > Some(t))
                && created_before.is_none_or(|t| c < Some(t))
                && modified_after.is_none_or(|t| m > Some(t))
                && modified_before.is_none_or(|t| m < Some(t))
        })
        .collect();
    match q.sort_by.as_deref().unwrap_or("CreationTime") {
        "Name" => rows.sort_by(|a, b| a.name.cmp(b.name)),
        "Status" => rows.sort_by(|a, b| a.status.cmp(b.status).then(a.name.cmp(b.name))),
        _ => rows.sort_by(|a, b| a.created.cmp(b.created).then(a.name.cmp(b.name))),
    }
    if q.sort_order.as_deref().unwrap_or("Descending") == "Descending" {
        rows.reverse();
    }
    let start: usize = match q.next_token.as_deref() {
        None => 0,
        Some(t) => t
            .parse()
            .map_err(|_| validation("Invalid pagination token."))?,
    };
    let max = cove_model::convert::u64_to_usize(count(q.max_results).unwrap_or(10));
    let total = rows.len();
    let items: Vec<Value> = rows
        .into_iter()
        .skip(start)
        .take(max)
        .map(|r| r.summary)
        .collect();
    let mut out = json!({ list_key: items });
    if start + max < total {
        out["NextToken"] = json!((start + max).to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows<'a>(items: &'a [(&'a str, &'a str, &'a str)]) -> Vec<Row<'a>> {
        items
            .iter()
            .map(|(name, created, status)| Row {
                name,
                created,
                modified: created,
                status,
                summary: json!(name),
            })
            .collect()
    }

    const ITEMS: &[(&str, &str, &str)] = &[
        ("b-job", "2026-11-24T10:00:02Z", "Completed"),
        ("a-job", "2026-11-24T10:00:01Z", "Failed"),
        ("c-other", "2026-11-24T10:00:03Z", "Completed"),
    ];

    fn query(v: Value) -> ListQuery {
        ListQuery::from(&serde_json::from_value::<ListTrainingJobsRequest>(v).unwrap())
    }

    #[test]
    fn lists_newest_first_by_default_and_filter() {
        let out = page(&ListQuery::default(), rows(ITEMS), "Items").unwrap();
        assert_eq!(out, json!({"Items": ["c-other", "b-job", "a-job"]}));
        let out = page(
            &query(json!({"NameContains": "JOB", "StatusEquals": "Completed"})),
            rows(ITEMS),
            "Items",
        )
        .unwrap();
        assert_eq!(out, json!({"Items": ["b-job"]}));
        let out = page(
            &query(json!({"CreationTimeAfter": 1795514401.5, "SortBy": "Name", "SortOrder": "Ascending"})),
            rows(ITEMS),
            "Items",
        )
        .unwrap();
        assert_eq!(out, json!({"Items": ["b-job", "c-other"]}));
        let out = page(
            &query(json!({"LastModifiedTimeBefore": "2026-11-24T10:00:02Z"})),
            rows(ITEMS),
            "Items",
        )
        .unwrap();
        assert_eq!(out, json!({"Items": ["a-job"]}));
    }

    #[test]
    fn pages_carry_a_token_until_the_end() {
        let first = page(&query(json!({"MaxResults": 2})), rows(ITEMS), "Items").unwrap();
        assert_eq!(first["Items"], json!(["c-other", "b-job"]));
        let token = first["NextToken"].as_str().unwrap();
        let second = page(
            &query(json!({"MaxResults": 2, "NextToken": token})),
            rows(ITEMS),
            "Items",
        )
        .unwrap();
        assert_eq!(second, json!({"Items": ["a-job"]}));
        assert!(page(&query(json!({"NextToken": "x"})), rows(ITEMS), "Items").is_err());
    }

    #[test]
    fn a_typed_list_request_becomes_a_query_with_only_its_members() {
        let Some(Ok(Request::ListModels(r))) = Request::parse(
            "ListModels",
            &json!({"NameContains": "B-", "CreationTimeBefore": 1795514403, "SortOrder": "Ascending",
                    "MaxResults": 5}),
        ) else {
            panic!("not parsed");
        };
        let q = ListQuery::from(&r);
        assert_eq!(q.name_contains.as_deref(), Some("B-"));
        assert_eq!(
            q.creation_time_before.map(|t| t.0.unix_timestamp()),
            Some(1795514403)
        );
        assert_eq!(
            (q.max_results, &q.status_equals, &q.next_token),
            (Some(5), &None, &None)
        );
        assert_eq!(q.last_modified_time_after, None);
        let out = page(&q, rows(ITEMS), "Models").unwrap();
        assert_eq!(out, json!({"Models": ["b-job"]}));
    }

    #[test]
    fn paged_reads_token_and_size_and_ignores_a_bad_token() {
        let items: Vec<Value> = (1..=5).map(|i| json!(i)).collect();
        let out = paged(None, Some(2), items.clone(), "I", 100);
        assert_eq!(out, json!({"I": [1, 2], "NextToken": "2"}));
        let out = paged(Some("4"), None, items.clone(), "I", 100);
        assert_eq!(out, json!({"I": [5]}));
        let out = paged(Some("x"), Some(-1), items, "I", 3);
        assert_eq!(out, json!({"I": [1, 2, 3], "NextToken": "3"}));
    }
}
