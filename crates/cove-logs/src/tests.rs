//! Tests of the service through its Rust API, each on a real SQLite
//! database and, where `COVE_TEST_POSTGRES` names a server, on a
//! PostgreSQL database of its own.

use super::*;
use crate::batch::DAY_MS;
use std::collections::BTreeMap;

const R: &str = "us-east-1";
const A: &str = "123456789012";
const NOW: i64 = 1_700_000_000_000;

fn events(range: std::ops::Range<i64>) -> Vec<(i64, String)> {
    range.map(|i| (NOW + i, format!("event {i}"))).collect()
}

fn messages(page: &StreamPage) -> Vec<String> {
    page.events.iter().map(|e| e.message.clone()).collect()
}

fn get(svc: &LogsService, req: GetEventsRequest) -> StreamPage {
    svc.get_log_events(R, A, "g", "s", &req).unwrap()
}

#[test]
fn events_survive_reopen_and_read_back_in_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs.db");
    {
        let svc = LogsService::open(&path).unwrap();
        svc.ensure_stream(R, A, "g", "s").unwrap();
        let out = svc
            .put_events_at(R, A, "g", "s", &events(0..10), NOW)
            .unwrap();
        assert_eq!(out.stored, 10);
        assert!(!out.rejected.any());
        assert!(out.next_sequence_token.bytes().all(|b| b.is_ascii_digit()));
    }
    let svc = LogsService::open(&path).unwrap();
    // From the head, 4 at a time, following the forward token.
    let mut req = GetEventsRequest {
        start_from_head: true,
        limit: Some(4),
        ..Default::default()
    };
    let p1 = get(&svc, req.clone());
    assert_eq!(messages(&p1), ["event 0", "event 1", "event 2", "event 3"]);
    assert_eq!(p1.events[0].ingestion_time, NOW);
    req.next_token = Some(p1.next_forward_token.clone());
    let p2 = get(&svc, req.clone());
    assert_eq!(messages(&p2), ["event 4", "event 5", "event 6", "event 7"]);
    req.next_token = Some(p2.next_forward_token.clone());
    let p3 = get(&svc, req.clone());
    assert_eq!(messages(&p3), ["event 8", "event 9"]);
    req.next_token = Some(p3.next_forward_token.clone());
    let end = get(&svc, req.clone());
    assert!(end.events.is_empty());
    assert_eq!(
        end.next_forward_token, p3.next_forward_token,
        "same token at the end"
    );
    // The backward token of the empty page reads what precedes it.
    req.next_token = Some(end.next_backward_token.clone());
    assert_eq!(
        messages(&get(&svc, req.clone())),
        ["event 6", "event 7", "event 8", "event 9"]
    );
    // Backward from p2 gives p1's events.
    req.next_token = Some(p2.next_backward_token.clone());
    assert_eq!(messages(&get(&svc, req.clone())), messages(&p1));

    // Without startFromHead: the last events, then backward.
    let tail = get(
        &svc,
        GetEventsRequest {
            limit: Some(3),
            ..Default::default()
        },
    );
    assert_eq!(messages(&tail), ["event 7", "event 8", "event 9"]);
    let before = get(
        &svc,
        GetEventsRequest {
            limit: Some(3),
            next_token: Some(tail.next_backward_token.clone()),
            ..Default::default()
        },
    );
    assert_eq!(messages(&before), ["event 4", "event 5", "event 6"]);
    // A tail sees events that arrive later through its forward token.
    svc.put_events_at(R, A, "g", "s", &events(10..12), NOW)
        .unwrap();
    let newer = get(
        &svc,
        GetEventsRequest {
            next_token: Some(tail.next_forward_token.clone()),
            ..Default::default()
        },
    );
    assert_eq!(messages(&newer), ["event 10", "event 11"]);

    // startTime inclusive, endTime exclusive.
    let window = get(
        &svc,
        GetEventsRequest {
            start_time: Some(NOW + 2),
            end_time: Some(NOW + 5),
            start_from_head: true,
            ..Default::default()
        },
    );
    assert_eq!(messages(&window), ["event 2", "event 3", "event 4"]);
}

fn events_with_equal_timestamps_keep_their_order_across_pages(svc: &LogsService) {
    svc.ensure_stream(R, A, "g", "s").unwrap();
    let batch: Vec<(i64, String)> = (0..5).map(|i| (NOW, format!("same {i}"))).collect();
    svc.put_events_at(R, A, "g", "s", &batch, NOW).unwrap();
    // An earlier timestamp arriving later sorts first.
    svc.put_events_at(R, A, "g", "s", &[(NOW - 1, "earlier")], NOW)
        .unwrap();
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = get(
            svc,
            GetEventsRequest {
                start_from_head: true,
                limit: Some(2),
                next_token: token.clone(),
                ..Default::default()
            },
        );
        if page.events.is_empty() {
            break;
        }
        seen.extend(messages(&page));
        token = Some(page.next_forward_token);
    }
    assert_eq!(
        seen,
        ["earlier", "same 0", "same 1", "same 2", "same 3", "same 4"]
    );
}

fn rejected_batches_store_nothing(svc: &LogsService) {
    svc.ensure_stream(R, A, "g", "s").unwrap();
    let err = svc
        .put_events_at(R, A, "g", "s", &[(NOW + 1, "b"), (NOW, "a")], NOW)
        .unwrap_err();
    assert_eq!(err.code, "InvalidParameterException");
    let err = svc
        .put_events_at(R, A, "g", "nope", &[(NOW, "a")], NOW)
        .unwrap_err();
    assert_eq!(
        (err.code.as_str(), err.message.as_str()),
        (
            "ResourceNotFoundException",
            "The specified log stream does not exist."
        )
    );
    let err = svc
        .put_events_at(R, A, "nope", "s", &[(NOW, "a")], NOW)
        .unwrap_err();
    assert_eq!(err.message, "The specified log group does not exist.");
    let page = get(
        svc,
        GetEventsRequest {
            start_from_head: true,
            ..Default::default()
        },
    );
    assert!(page.events.is_empty());
    let (streams, _) = svc
        .describe_log_streams(R, A, "g", &DescribeStreamsRequest::default())
        .unwrap();
    assert_eq!(streams[0].last_ingestion_time, None);
}

fn too_old_too_new_and_expired_events_are_reported_not_stored(svc: &LogsService) {
    svc.ensure_stream(R, A, "g", "s").unwrap();
    const HOUR: i64 = 3600 * 1000;
    // A batch cannot span more than 24 hours, so old and new go separately.
    let span = [(NOW - 15 * DAY_MS, "too old"), (NOW, "ok")];
    assert!(svc.put_events_at(R, A, "g", "s", &span, NOW).is_err());
    let old = [
        (NOW - 14 * DAY_MS - HOUR, "too old"),
        (NOW - 14 * DAY_MS + HOUR, "old ok"),
    ];
    let out = svc.put_events_at(R, A, "g", "s", &old, NOW).unwrap();
    assert_eq!((out.stored, out.rejected.too_old_end), (1, Some(0)));
    let new = [(NOW + HOUR, "new ok"), (NOW + 3 * HOUR, "too new")];
    let out = svc.put_events_at(R, A, "g", "s", &new, NOW).unwrap();
    assert_eq!((out.stored, out.rejected.too_new_start), (1, Some(1)));
    svc.put_retention_policy(R, A, "g", 1).unwrap();
    let out = svc
        .put_events_at(
            R,
            A,
            "g",
            "s",
            &[(NOW - DAY_MS - 1, "expired"), (NOW - DAY_MS + 1, "kept")],
            NOW,
        )
        .unwrap();
    assert_eq!((out.stored, out.rejected.expired_end), (1, Some(0)));
    let page = get(
        svc,
        GetEventsRequest {
            start_from_head: true,
            ..Default::default()
        },
    );
    assert_eq!(messages(&page), ["old ok", "kept", "new ok"]);
}

fn purge_deletes_events_past_retention_only(svc: &LogsService) {
    for g in ["kept", "short"] {
        svc.ensure_stream(R, A, g, "s").unwrap();
        svc.put_events_at(
            R,
            A,
            g,
            "s",
            &[(NOW - 3 * DAY_MS, "old"), (NOW - 3 * DAY_MS + 5, "old2")],
            NOW,
        )
        .unwrap();
        svc.put_events_at(R, A, g, "s", &[(NOW, "new")], NOW)
            .unwrap();
    }
    svc.put_retention_policy(R, A, "short", 1).unwrap();
    assert_eq!(svc.purge_expired(NOW).unwrap(), 2);
    assert_eq!(svc.purge_expired(NOW).unwrap(), 0);
    let read = |g: &str| {
        messages(
            &svc.get_log_events(
                R,
                A,
                g,
                "s",
                &GetEventsRequest {
                    start_from_head: true,
                    ..Default::default()
                },
            )
            .unwrap(),
        )
    };
    assert_eq!(read("short"), ["new"]);
    assert_eq!(read("kept"), ["old", "old2", "new"]);
    let (groups, _) = svc
        .describe_log_groups(R, A, &DescribeGroupsRequest::default())
        .unwrap();
    let bytes: BTreeMap<_, _> = groups
        .iter()
        .map(|g| (g.name.as_str(), g.stored_bytes))
        .collect();
    assert_eq!(bytes["short"], 3);
    assert_eq!(bytes["kept"], 3 + 4 + 3);
    let (streams, _) = svc
        .describe_log_streams(R, A, "short", &DescribeStreamsRequest::default())
        .unwrap();
    assert_eq!(streams[0].first_event_timestamp, Some(NOW));
    assert_eq!(streams[0].last_event_timestamp, Some(NOW));
}

fn groups_describe_with_prefix_pattern_and_pages(svc: &LogsService) {
    for name in ["/b/2", "/a/1", "/b/1", "/c/x1", "/a/2"] {
        svc.create_log_group(R, A, name, &NewLogGroup::default())
            .unwrap();
    }
    let err = svc
        .create_log_group(R, A, "/a/1", &NewLogGroup::default())
        .unwrap_err();
    assert_eq!(
        (err.code.as_str(), err.message.as_str()),
        (
            "ResourceAlreadyExistsException",
            "The specified log group already exists"
        )
    );
    // Other regions and accounts are separate.
    svc.create_log_group("eu-west-1", A, "/a/1", &NewLogGroup::default())
        .unwrap();
    svc.create_log_group(R, "210987654321", "/a/1", &NewLogGroup::default())
        .unwrap();
    let names = |req: &DescribeGroupsRequest| {
        let (g, t) = svc.describe_log_groups(R, A, req).unwrap();
        (g.into_iter().map(|g| g.name).collect::<Vec<_>>(), t)
    };
    let (all, token) = names(&DescribeGroupsRequest::default());
    assert_eq!(all, ["/a/1", "/a/2", "/b/1", "/b/2", "/c/x1"]);
    assert_eq!(token, None);
    let (b, _) = names(&DescribeGroupsRequest {
        name_prefix: Some("/b".into()),
        ..Default::default()
    });
    assert_eq!(b, ["/b/1", "/b/2"]);
    let (ones, _) = names(&DescribeGroupsRequest {
        name_pattern: Some("1".into()),
        ..Default::default()
    });
    assert_eq!(ones, ["/a/1", "/b/1", "/c/x1"]);
    let mut req = DescribeGroupsRequest {
        limit: Some(2),
        ..Default::default()
    };
    let mut paged = Vec::new();
    loop {
        let (page, token) = names(&req);
        paged.extend(page);
        match token {
            Some(t) => req.next_token = Some(t),
            None => break,
        }
    }
    assert_eq!(paged, all);
    req.next_token = Some("garbage".into());
    assert_eq!(
        svc.describe_log_groups(R, A, &req).unwrap_err().code,
        "InvalidParameterException"
    );
}

fn streams_order_by_name_or_last_event_time(svc: &LogsService) {
    svc.ensure_group(R, A, "g").unwrap();
    for s in ["c", "a", "b", "empty"] {
        svc.create_log_stream(R, A, "g", s).unwrap();
    }
    let err = svc.create_log_stream(R, A, "g", "a").unwrap_err();
    assert_eq!(err.message, "The specified log stream already exists");
    svc.put_events_at(R, A, "g", "a", &[(NOW + 30, "x")], NOW)
        .unwrap();
    svc.put_events_at(R, A, "g", "b", &[(NOW + 10, "x")], NOW)
        .unwrap();
    svc.put_events_at(R, A, "g", "c", &[(NOW + 20, "x")], NOW)
        .unwrap();
    let names = |req: DescribeStreamsRequest| {
        let (s, t) = svc.describe_log_streams(R, A, "g", &req).unwrap();
        (s.into_iter().map(|s| s.name).collect::<Vec<_>>(), t)
    };
    assert_eq!(names(Default::default()).0, ["a", "b", "c", "empty"]);
    let by_time = DescribeStreamsRequest {
        order: StreamOrder::LastEventTime,
        descending: true,
        limit: Some(2),
        ..Default::default()
    };
    let (first, token) = names(by_time.clone());
    assert_eq!(first, ["a", "c"]);
    let (rest, token) = names(DescribeStreamsRequest {
        next_token: token,
        ..by_time.clone()
    });
    assert_eq!(
        (rest, token),
        (vec!["b".to_string(), "empty".to_string()], None)
    );
    let err = svc
        .describe_log_streams(
            R,
            A,
            "g",
            &DescribeStreamsRequest {
                order: StreamOrder::LastEventTime,
                name_prefix: Some("a".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(
        err.message,
        "Cannot order by LastEventTime with a logStreamNamePrefix."
    );
    let (prefixed, _) = names(DescribeStreamsRequest {
        name_prefix: Some("e".into()),
        ..Default::default()
    });
    assert_eq!(prefixed, ["empty"]);
    svc.delete_log_stream(R, A, "g", "a").unwrap();
    assert_eq!(names(Default::default()).0, ["b", "c", "empty"]);
    assert_eq!(
        svc.delete_log_stream(R, A, "g", "a").unwrap_err().message,
        "The specified log stream does not exist."
    );
}

fn filter_by_pattern_streams_and_pages(svc: &LogsService) {
    for s in ["app-1", "app-2", "db"] {
        svc.ensure_stream(R, A, "g", s).unwrap();
    }
    svc.put_events_at(
        R,
        A,
        "g",
        "app-1",
        &[(NOW, "ERROR disk full"), (NOW + 2, "INFO ok")],
        NOW,
    )
    .unwrap();
    svc.put_events_at(
        R,
        A,
        "g",
        "app-2",
        &[(NOW + 1, "ERROR memory"), (NOW + 3, "WARN slow")],
        NOW,
    )
    .unwrap();
    svc.put_events_at(R, A, "g", "db", &[(NOW + 4, "ERROR disk full again")], NOW)
        .unwrap();
    let run = |req: FilterRequest| svc.filter_log_events(R, A, "g", &req).unwrap();
    let msgs = |p: &FilteredPage| {
        p.events
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
    };
    let all = run(FilterRequest::default());
    assert_eq!(all.events.len(), 5);
    assert_eq!(all.events[1].stream_name, "app-2");
    assert_eq!(all.next_token, None);
    let p = run(FilterRequest {
        filter_pattern: Some("ERROR -\"disk full\"".into()),
        ..Default::default()
    });
    assert_eq!(msgs(&p), ["ERROR memory"]);
    let p = run(FilterRequest {
        filter_pattern: Some("?WARN ?INFO".into()),
        stream_name_prefix: Some("app-".into()),
        ..Default::default()
    });
    assert_eq!(msgs(&p), ["INFO ok", "WARN slow"]);
    let p = run(FilterRequest {
        filter_pattern: Some("ERROR".into()),
        stream_names: Some(vec!["db".into(), "app-1".into()]),
        end_time: Some(NOW + 4),
        ..Default::default()
    });
    assert_eq!(msgs(&p), ["ERROR disk full", "ERROR disk full again"]);
    // Pages of 2 until there is no token.
    let mut req = FilterRequest {
        limit: Some(2),
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = run(req.clone());
        assert!(page.events.len() <= 2);
        seen.extend(page.events);
        match page.next_token {
            Some(t) => req.next_token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, all.events);
    let ids: std::collections::HashSet<_> = seen.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids.len(), 5);
    let err = svc
        .filter_log_events(
            R,
            A,
            "g",
            &FilterRequest {
                stream_names: Some(vec!["db".into()]),
                stream_name_prefix: Some("d".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(
        err.message,
        "logStreamNames and logStreamNamePrefix are mutually exclusive"
    );
    let err = svc
        .filter_log_events(
            R,
            A,
            "g",
            &FilterRequest {
                filter_pattern: Some("{ $.level = \"ERROR\" }".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.message, filter::UNSUPPORTED);
}

fn retention_tags_and_group_deletion(svc: &LogsService) {
    let opts = NewLogGroup {
        tags: [("team".to_string(), "ml".to_string())].into(),
        class: Some("INFREQUENT_ACCESS".into()),
        kms_key_id: Some("arn:aws:kms:us-east-1:123456789012:key/k".into()),
        ..Default::default()
    };
    svc.create_log_group(R, A, "g", &opts).unwrap();
    assert_eq!(
        svc.put_retention_policy(R, A, "g", 4).unwrap_err().code,
        "InvalidParameterException"
    );
    svc.put_retention_policy(R, A, "g", 30).unwrap();
    let info = |svc: &LogsService| {
        svc.describe_log_groups(R, A, &DescribeGroupsRequest::default())
            .unwrap()
            .0
            .remove(0)
    };
    let g = info(svc);
    assert_eq!(
        (g.retention_days, g.class.as_str(), g.kms_key_id.is_some()),
        (Some(30), "INFREQUENT_ACCESS", true)
    );
    svc.delete_retention_policy(R, A, "g").unwrap();
    assert_eq!(info(svc).retention_days, None);

    let arn = groups::group_arn(R, A, "g");
    svc.tag_resource(
        R,
        A,
        &format!("{arn}:*"),
        &[("env".to_string(), "dev".to_string())].into(),
    )
    .unwrap();
    svc.untag_resource(R, A, &arn, &["team".to_string(), "absent".to_string()])
        .unwrap();
    let tags = svc.list_tags_for_resource(R, A, &arn).unwrap();
    assert_eq!(tags, [("env".to_string(), "dev".to_string())].into());
    let too_many: BTreeMap<String, String> = (0..50)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    assert_eq!(
        svc.tag_resource(R, A, &arn, &too_many).unwrap_err().code,
        "TooManyTagsException"
    );
    assert_eq!(
        svc.list_tags_for_resource(R, A, &groups::group_arn(R, A, "other"))
            .unwrap_err()
            .code,
        "ResourceNotFoundException"
    );

    svc.ensure_stream(R, A, "g", "s").unwrap();
    svc.put_events(R, A, "g", "s", &[(now_ms(), "hello")])
        .unwrap();
    svc.delete_log_group(R, A, "g").unwrap();
    assert_eq!(
        svc.delete_log_group(R, A, "g").unwrap_err().message,
        "The specified log group does not exist."
    );
    // A new group of the same name starts empty.
    svc.ensure_stream(R, A, "g", "s").unwrap();
    assert!(get(
        svc,
        GetEventsRequest {
            start_from_head: true,
            ..Default::default()
        }
    )
    .events
    .is_empty());
    let protected = NewLogGroup {
        deletion_protection: true,
        ..Default::default()
    };
    svc.create_log_group(R, A, "p", &protected).unwrap();
    assert_eq!(
        svc.delete_log_group(R, A, "p").unwrap_err().code,
        "ValidationException"
    );
}

fn ensure_is_idempotent_and_validates_names(svc: &LogsService) {
    svc.ensure_stream(R, A, "/aws/vpc/flow", "eni-1-all")
        .unwrap();
    svc.ensure_stream(R, A, "/aws/vpc/flow", "eni-1-all")
        .unwrap();
    svc.ensure_group(R, A, "/aws/vpc/flow").unwrap();
    let (groups, _) = svc
        .describe_log_groups(R, A, &DescribeGroupsRequest::default())
        .unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].class, "STANDARD");
    assert!(svc.ensure_group(R, A, "bad name").is_err());
    assert!(svc.ensure_stream(R, A, "g", "bad:name").is_err());
}

fn shipped_lines_are_stored_once_whatever_is_sent_again(svc: &LogsService) {
    svc.ensure_stream(R, A, "g", "s").unwrap();
    let now = now_ms();
    let first = [(now, "line 1"), (now, "line 2")];
    assert_eq!(svc.shipped_offset("src").unwrap(), 0);
    svc.put_shipped_events(R, A, "g", "s", &first, "src", 14)
        .unwrap();
    // A shipper that crashed after the commit sends the same batch again.
    svc.put_shipped_events(R, A, "g", "s", &first, "src", 14)
        .unwrap();
    assert_eq!(svc.shipped_offset("src").unwrap(), 14);
    svc.put_shipped_events(R, A, "g", "s", &[(now, "line 3")], "src", 21)
        .unwrap();
    // Another file ships independently.
    svc.put_shipped_events(R, A, "g", "s", &[(now, "other")], "src-2", 6)
        .unwrap();
    let page = get(
        svc,
        GetEventsRequest {
            start_from_head: true,
            ..Default::default()
        },
    );
    assert_eq!(messages(&page), ["line 1", "line 2", "line 3", "other"]);
    assert_eq!(svc.shipped_offset("src").unwrap(), 21);
}

/// Runs each test on SQLite and on PostgreSQL.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::LogsService::in_memory().unwrap());
                }
            )*
        }
        mod on_postgres {
            $(
                #[test]
                fn $name() {
                    let Some(db) = cove_store::scratch::from_env("cove_logs_test") else {
                        return;
                    };
                    super::$name(&super::LogsService::connect_postgres(&db.url).unwrap());
                }
            )*
        }
    };
}

on_both_databases!(
    events_with_equal_timestamps_keep_their_order_across_pages,
    rejected_batches_store_nothing,
    too_old_too_new_and_expired_events_are_reported_not_stored,
    purge_deletes_events_past_retention_only,
    groups_describe_with_prefix_pattern_and_pages,
    streams_order_by_name_or_last_event_time,
    filter_by_pattern_streams_and_pages,
    retention_tags_and_group_deletion,
    ensure_is_idempotent_and_validates_names,
    shipped_lines_are_stored_once_whatever_is_sent_again,
);
