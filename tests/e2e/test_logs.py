"""CloudWatch Logs through boto3: groups, streams, events, filters, retention,
tags, and events surviving a killed server."""

import signal
import time
import uuid

import pytest

from helpers import aws_error

GROUP_MISSING = "The specified log group does not exist."
STREAM_MISSING = "The specified log stream does not exist."
DAY_MS = 24 * 3600 * 1000
HOUR_MS = 3600 * 1000


def now_ms():
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def logs(cove_server):
    return cove_server.client("logs")


@pytest.fixture
def group(logs):
    """A fresh log group with a unique name, deleted after the test."""
    name = f"/cove/test/{uuid.uuid4().hex[:12]}"
    logs.create_log_group(logGroupName=name)
    yield name
    try:
        logs.delete_log_group(logGroupName=name)
    except logs.exceptions.ResourceNotFoundException:
        pass


def put(logs, group, stream, messages, start=None, step=1):
    """Puts messages `step` ms apart from `start` (default: a second ago)."""
    t0 = now_ms() - 1000 if start is None else start
    events = [{"timestamp": t0 + i * step, "message": m} for i, m in enumerate(messages)]
    return logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)


def test_log_groups_create_describe_delete(logs, cove_server):
    prefix = f"/cove/groups/{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}/b", f"{prefix}/a", f"{prefix}/c-infrequent"]
    logs.create_log_group(logGroupName=names[0], tags={"team": "ml"})
    logs.create_log_group(logGroupName=names[1], kmsKeyId="arn:aws:kms:us-east-1:123456789012:key/abc")
    logs.create_log_group(logGroupName=names[2], logGroupClass="INFREQUENT_ACCESS")
    msg = aws_error("ResourceAlreadyExistsException", logs.create_log_group, logGroupName=names[0])
    assert msg == "The specified log group already exists"
    aws_error("InvalidParameterException", logs.create_log_group, logGroupName="bad name")

    found = logs.describe_log_groups(logGroupNamePrefix=prefix)["logGroups"]
    assert [g["logGroupName"] for g in found] == sorted(names)
    a = found[0]
    assert a["arn"] == f"arn:aws:logs:us-east-1:123456789012:log-group:{names[1]}:*"
    assert a["logGroupArn"] == a["arn"][:-2]
    assert isinstance(a["creationTime"], int) and abs(a["creationTime"] - now_ms()) < 60_000
    assert a["metricFilterCount"] == 0 and a["storedBytes"] == 0
    assert a["logGroupClass"] == "STANDARD"
    assert a["kmsKeyId"].endswith("key/abc")
    assert "retentionInDays" not in a
    assert found[2]["logGroupClass"] == "INFREQUENT_ACCESS"

    # Substring pattern, class filter, and pages of one.
    assert [g["logGroupName"] for g in logs.describe_log_groups(logGroupNamePattern="c-infreq")["logGroups"]] == [names[2]]
    assert names[2] in [g["logGroupName"] for g in logs.describe_log_groups(logGroupClass="INFREQUENT_ACCESS")["logGroups"]]
    page = logs.describe_log_groups(logGroupNamePrefix=prefix, limit=1)
    assert len(page["logGroups"]) == 1 and page["nextToken"]
    paged = [g["logGroupName"] for p in logs.get_paginator("describe_log_groups").paginate(
        logGroupNamePrefix=prefix, PaginationConfig={"PageSize": 2}) for g in p["logGroups"]]
    assert paged == sorted(names)
    aws_error("InvalidParameterException", logs.describe_log_groups, logGroupNamePrefix=prefix, logGroupNamePattern="a")
    aws_error("InvalidParameterException", logs.describe_log_groups, nextToken="not-a-token")
    aws_error("InvalidParameterException", logs.describe_log_groups, limit=51)

    # Groups are regional.
    other = cove_server.client("logs", region="eu-west-1")
    assert other.describe_log_groups(logGroupNamePrefix=prefix)["logGroups"] == []

    for n in names:
        logs.delete_log_group(logGroupName=n)
    assert aws_error("ResourceNotFoundException", logs.delete_log_group, logGroupName=names[0]) == GROUP_MISSING
    assert logs.describe_log_groups(logGroupNamePrefix=prefix)["logGroups"] == []


def test_log_streams(logs, group):
    for s in ["b", "a", "c", "idle"]:
        logs.create_log_stream(logGroupName=group, logStreamName=s)
    msg = aws_error("ResourceAlreadyExistsException", logs.create_log_stream, logGroupName=group, logStreamName="a")
    assert msg == "The specified log stream already exists"
    assert aws_error("ResourceNotFoundException", logs.create_log_stream,
                     logGroupName=group + "-missing", logStreamName="a") == GROUP_MISSING
    t = now_ms() - 10_000
    put(logs, group, "a", ["x"], start=t + 3)
    put(logs, group, "b", ["x"], start=t + 1)
    put(logs, group, "c", ["x"], start=t + 2)

    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert [s["logStreamName"] for s in streams] == ["a", "b", "c", "idle"]
    a = streams[0]
    assert a["arn"] == f"arn:aws:logs:us-east-1:123456789012:log-group:{group}:log-stream:a"
    assert a["firstEventTimestamp"] == a["lastEventTimestamp"] == t + 3
    assert abs(a["lastIngestionTime"] - now_ms()) < 60_000
    assert a["uploadSequenceToken"].isdigit() and a["storedBytes"] == 0
    assert "firstEventTimestamp" not in streams[3] and "lastIngestionTime" not in streams[3]

    by_time = logs.describe_log_streams(logGroupName=group, orderBy="LastEventTime", descending=True)["logStreams"]
    assert [s["logStreamName"] for s in by_time] == ["a", "c", "b", "idle"]
    desc = logs.describe_log_streams(logGroupName=group, descending=True, limit=2)
    assert [s["logStreamName"] for s in desc["logStreams"]] == ["idle", "c"]
    rest = logs.describe_log_streams(logGroupName=group, descending=True, limit=2, nextToken=desc["nextToken"])
    assert [s["logStreamName"] for s in rest["logStreams"]] == ["b", "a"] and "nextToken" not in rest
    assert [s["logStreamName"] for s in logs.describe_log_streams(
        logGroupName=group, logStreamNamePrefix="i")["logStreams"]] == ["idle"]
    msg = aws_error("InvalidParameterException", logs.describe_log_streams, logGroupName=group,
                    orderBy="LastEventTime", logStreamNamePrefix="a")
    assert msg == "Cannot order by LastEventTime with a logStreamNamePrefix."

    # logGroupIdentifier takes the name or the ARN.
    arn = f"arn:aws:logs:us-east-1:123456789012:log-group:{group}"
    for ident in (group, arn):
        assert len(logs.describe_log_streams(logGroupIdentifier=ident)["logStreams"]) == 4
    aws_error("InvalidParameterException", logs.describe_log_streams, logGroupName=group, logGroupIdentifier=group)
    assert aws_error("ResourceNotFoundException", logs.describe_log_streams,
                     logGroupName=group + "-missing") == GROUP_MISSING

    logs.delete_log_stream(logGroupName=group, logStreamName="a")
    assert aws_error("ResourceNotFoundException", logs.delete_log_stream,
                     logGroupName=group, logStreamName="a") == STREAM_MISSING
    assert [s["logStreamName"] for s in logs.describe_log_streams(logGroupName=group)["logStreams"]] == ["b", "c", "idle"]


def test_put_and_get_log_events(logs, group):
    logs.create_log_stream(logGroupName=group, logStreamName="s")
    t0 = now_ms() - 60_000
    out = put(logs, group, "s", [f"event {i}" for i in range(10)], start=t0)
    assert out["nextSequenceToken"].isdigit()
    assert "rejectedLogEventsInfo" not in out
    # The sequence token is ignored, as AWS has done since 2023.
    logs.put_log_events(logGroupName=group, logStreamName="s", sequenceToken="12345",
                        logEvents=[{"timestamp": t0 + 10, "message": "event 10"}])

    def get(**kw):
        r = logs.get_log_events(logGroupName=group, logStreamName="s", **kw)
        return [e["message"] for e in r["events"]], r

    first, r1 = get(startFromHead=True, limit=4)
    assert first == ["event 0", "event 1", "event 2", "event 3"]
    e = r1["events"][0]
    assert e["timestamp"] == t0 and abs(e["ingestionTime"] - now_ms()) < 60_000
    assert r1["nextForwardToken"].startswith("f/") and r1["nextBackwardToken"].startswith("b/")
    second, r2 = get(startFromHead=True, limit=4, nextToken=r1["nextForwardToken"])
    assert second == ["event 4", "event 5", "event 6", "event 7"]
    third, r3 = get(limit=4, nextToken=r2["nextForwardToken"])
    assert third == ["event 8", "event 9", "event 10"]
    empty, r4 = get(limit=4, nextToken=r3["nextForwardToken"])
    assert empty == [] and r4["nextForwardToken"] == r3["nextForwardToken"]
    back, _ = get(limit=4, nextToken=r2["nextBackwardToken"])
    assert back == first

    # Default: the last events; then backward to the start.
    last, t1 = get(limit=3)
    assert last == ["event 8", "event 9", "event 10"]
    earlier, t2 = get(limit=3, nextToken=t1["nextBackwardToken"])
    assert earlier == ["event 5", "event 6", "event 7"]
    everything, _ = get()
    assert everything == [f"event {i}" for i in range(11)]
    window, _ = get(startTime=t0 + 2, endTime=t0 + 5, startFromHead=True)
    assert window == ["event 2", "event 3", "event 4"]
    # The tail's forward token picks up new events.
    put(logs, group, "s", ["event 11"], start=t0 + 11)
    newer, _ = get(nextToken=t1["nextForwardToken"])
    assert newer == ["event 11"]

    aws_error("InvalidParameterException", logs.get_log_events, logGroupName=group, logStreamName="s", nextToken="f/oops")
    assert aws_error("ResourceNotFoundException", logs.get_log_events,
                     logGroupName=group, logStreamName="nope") == STREAM_MISSING
    assert aws_error("ResourceNotFoundException", logs.put_log_events, logGroupName=group,
                     logStreamName="nope", logEvents=[{"timestamp": t0, "message": "m"}]) == STREAM_MISSING

    stream = logs.describe_log_streams(logGroupName=group)["logStreams"][0]
    assert stream["firstEventTimestamp"] == t0 and stream["lastEventTimestamp"] == t0 + 11
    stored = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]["storedBytes"]
    assert stored == sum(len(f"event {i}") for i in range(12))


def test_put_log_events_batch_rules(logs, group):
    logs.create_log_stream(logGroupName=group, logStreamName="s")
    t = now_ms()
    msg = aws_error("InvalidParameterException", logs.put_log_events, logGroupName=group, logStreamName="s",
                    logEvents=[{"timestamp": t, "message": "b"}, {"timestamp": t - 1, "message": "a"}])
    assert msg == "Log events in a single PutLogEvents request must be in chronological order."
    msg = aws_error("InvalidParameterException", logs.put_log_events, logGroupName=group, logStreamName="s",
                    logEvents=[{"timestamp": t - DAY_MS - 1, "message": "a"}, {"timestamp": t, "message": "b"}])
    assert msg == "The batch of log events in a single PutLogEvents request cannot span more than 24 hours."
    big = "x" * (1_048_576 - 26 + 1)
    msg = aws_error("InvalidParameterException", logs.put_log_events, logGroupName=group, logStreamName="s",
                    logEvents=[{"timestamp": t, "message": big}])
    assert "1048576" in msg
    # None of the rejected calls stored anything.
    assert logs.get_log_events(logGroupName=group, logStreamName="s")["events"] == []

    # Too old (over 14 days) and too new (over 2 hours ahead) are skipped and reported.
    old = t - 14 * DAY_MS
    out = logs.put_log_events(logGroupName=group, logStreamName="s", logEvents=[
        {"timestamp": old - HOUR_MS, "message": "too old 1"},
        {"timestamp": old - HOUR_MS + 1, "message": "too old 2"},
        {"timestamp": old + HOUR_MS, "message": "old but fine"}])
    assert out["rejectedLogEventsInfo"] == {"tooOldLogEventEndIndex": 1}
    out = logs.put_log_events(logGroupName=group, logStreamName="s", logEvents=[
        {"timestamp": t, "message": "now"},
        {"timestamp": t + 3 * HOUR_MS, "message": "too new 1"},
        {"timestamp": t + 4 * HOUR_MS, "message": "too new 2"}])
    assert out["rejectedLogEventsInfo"] == {"tooNewLogEventStartIndex": 1}
    # Older than the group's retention (within 14 days): reported as expired.
    logs.put_retention_policy(logGroupName=group, retentionInDays=1)
    out = logs.put_log_events(logGroupName=group, logStreamName="s", logEvents=[
        {"timestamp": t - DAY_MS - HOUR_MS, "message": "expired"},
        {"timestamp": t - DAY_MS + HOUR_MS, "message": "kept"}])
    assert out["rejectedLogEventsInfo"] == {"expiredLogEventEndIndex": 0}
    got = logs.get_log_events(logGroupName=group, logStreamName="s", startFromHead=True)["events"]
    assert [e["message"] for e in got] == ["old but fine", "kept", "now"]


def test_filter_log_events(logs, group):
    for s in ["app-1", "app-2", "db"]:
        logs.create_log_stream(logGroupName=group, logStreamName=s)
    t = now_ms() - 60_000
    put(logs, group, "app-1", ["ERROR disk full", "INFO all good"], start=t, step=10)
    put(logs, group, "app-2", ["ERROR out of memory", "WARN slow request"], start=t + 5, step=10)
    put(logs, group, "db", ["ERROR disk full again", 'INFO said "hello world"'], start=t + 7, step=10)

    def msgs(**kw):
        return [e["message"] for e in logs.filter_log_events(logGroupName=group, **kw)["events"]]

    everything = logs.filter_log_events(logGroupName=group)
    assert [e["message"] for e in everything["events"]] == [
        "ERROR disk full", "ERROR out of memory", "ERROR disk full again",
        "INFO all good", "WARN slow request", 'INFO said "hello world"']
    assert "nextToken" not in everything
    e = everything["events"][1]
    assert e["logStreamName"] == "app-2" and e["timestamp"] == t + 5 and e["eventId"].isdigit()
    assert msgs(filterPattern="ERROR") == ["ERROR disk full", "ERROR out of memory", "ERROR disk full again"]
    assert msgs(filterPattern="ERROR disk") == ["ERROR disk full", "ERROR disk full again"]
    assert msgs(filterPattern="error") == []
    assert msgs(filterPattern='"disk full again"') == ["ERROR disk full again"]
    assert msgs(filterPattern='"hello world"') == ['INFO said "hello world"']
    assert msgs(filterPattern="ERROR -memory -again") == ["ERROR disk full"]
    assert msgs(filterPattern="?WARN ?memory") == ["ERROR out of memory", "WARN slow request"]
    assert msgs(filterPattern="%disk full( again)?$%") == ["ERROR disk full", "ERROR disk full again"]
    assert msgs(logStreamNamePrefix="app-", filterPattern="INFO") == ["INFO all good"]
    assert msgs(logStreamNames=["db", "app-2"], filterPattern="ERROR") == ["ERROR out of memory", "ERROR disk full again"]
    # startTime and endTime are both inclusive here (GetLogEvents: endTime exclusive).
    assert msgs(startTime=t + 5, endTime=t + 10) == ["ERROR out of memory", "ERROR disk full again", "INFO all good"]

    # Pagination: pages of 2, by hand and with boto3's paginator.
    seen, token = [], None
    while True:
        kw = {"nextToken": token} if token else {}
        page = logs.filter_log_events(logGroupName=group, limit=2, **kw)
        assert len(page["events"]) <= 2
        seen += page["events"]
        token = page.get("nextToken")
        if not token:
            break
    assert seen == everything["events"]
    paged = [e["eventId"] for p in logs.get_paginator("filter_log_events").paginate(
        logGroupName=group, PaginationConfig={"PageSize": 4}) for e in p["events"]]
    assert paged == [e["eventId"] for e in everything["events"]]

    msg = aws_error("InvalidParameterException", logs.filter_log_events, logGroupName=group,
                    logStreamNames=["db"], logStreamNamePrefix="d")
    assert msg == "logStreamNames and logStreamNamePrefix are mutually exclusive"
    for pattern in ('{ $.level = "ERROR" }', "[ip, user, status]"):
        msg = aws_error("InvalidParameterException", logs.filter_log_events, logGroupName=group, filterPattern=pattern)
        assert msg == "Cove does not support JSON or space-delimited filter patterns yet"
    aws_error("InvalidParameterException", logs.filter_log_events, logGroupName=group,
              logStreamNames=[f"s{i}" for i in range(101)])
    assert aws_error("ResourceNotFoundException", logs.filter_log_events, logGroupName=group,
                     logStreamNames=["nope"]) == STREAM_MISSING
    assert aws_error("ResourceNotFoundException", logs.filter_log_events,
                     logGroupName=group + "-missing") == GROUP_MISSING


def test_retention_policy(logs, group):
    msg = aws_error("InvalidParameterException", logs.put_retention_policy, logGroupName=group, retentionInDays=4)
    assert "retentionInDays" in msg and "3653" in msg
    for days in (1, 731, 3653):
        logs.put_retention_policy(logGroupName=group, retentionInDays=days)
        assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]["retentionInDays"] == days
    logs.delete_retention_policy(logGroupName=group)
    assert "retentionInDays" not in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]
    assert aws_error("ResourceNotFoundException", logs.put_retention_policy,
                     logGroupName=group + "-missing", retentionInDays=7) == GROUP_MISSING
    assert aws_error("ResourceNotFoundException", logs.delete_retention_policy,
                     logGroupName=group + "-missing") == GROUP_MISSING


def test_tags(logs):
    name = f"/cove/tags/{uuid.uuid4().hex[:8]}"
    logs.create_log_group(logGroupName=name, tags={"team": "ml", "env": "dev"})
    arn = f"arn:aws:logs:us-east-1:123456789012:log-group:{name}"
    assert logs.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "ml", "env": "dev"}
    # The model's ARN pattern has no '*': AWS takes the ARN without the ":*" suffix.
    aws_error("InvalidParameterException", logs.tag_resource, resourceArn=arn + ":*", tags={"a": "b"})
    logs.tag_resource(resourceArn=arn, tags={"env": "prod", "cost": "42"})
    assert logs.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "ml", "env": "prod", "cost": "42"}
    logs.untag_resource(resourceArn=arn, tagKeys=["team", "not-there"])
    assert logs.list_tags_for_resource(resourceArn=arn)["tags"] == {"env": "prod", "cost": "42"}
    aws_error("TooManyTagsException", logs.tag_resource, resourceArn=arn,
              tags={f"k{i}": "v" for i in range(49)})
    assert logs.list_tags_for_resource(resourceArn=arn)["tags"] == {"env": "prod", "cost": "42"}
    missing = f"arn:aws:logs:us-east-1:123456789012:log-group:{name}-missing"
    for call, kw in ((logs.list_tags_for_resource, {}), (logs.tag_resource, {"tags": {"a": "b"}}),
                     (logs.untag_resource, {"tagKeys": ["a"]})):
        aws_error("ResourceNotFoundException", call, resourceArn=missing, **kw)
    aws_error("ResourceNotFoundException", logs.list_tags_for_resource,
              resourceArn=f"arn:aws:logs:us-east-1:210987654321:log-group:{name}")
    logs.delete_log_group(logGroupName=name)
    aws_error("ResourceNotFoundException", logs.list_tags_for_resource, resourceArn=arn)


def test_logs_survive_kill_and_restart(fresh_cove):
    logs = fresh_cove.client("logs")
    logs.create_log_group(logGroupName="/persist", tags={"k": "v"})
    logs.put_retention_policy(logGroupName="/persist", retentionInDays=30)
    logs.create_log_stream(logGroupName="/persist", logStreamName="s")
    t = now_ms() - 10_000
    put(logs, "/persist", "s", [f"line {i}" for i in range(100)], start=t)
    before_groups = logs.describe_log_groups()["logGroups"]
    before_streams = logs.describe_log_streams(logGroupName="/persist")["logStreams"]
    before_events = logs.get_log_events(logGroupName="/persist", logStreamName="s", startFromHead=True)

    fresh_cove.stop(signal.SIGKILL)
    fresh_cove.start()
    logs = fresh_cove.client("logs")
    assert logs.describe_log_groups()["logGroups"] == before_groups
    assert logs.describe_log_streams(logGroupName="/persist")["logStreams"] == before_streams
    after = logs.get_log_events(logGroupName="/persist", logStreamName="s", startFromHead=True)
    assert after["events"] == before_events["events"]
    assert len(after["events"]) == 100
    assert logs.list_tags_for_resource(resourceArn="arn:aws:logs:us-east-1:123456789012:log-group:/persist")["tags"] == {"k": "v"}
    # Tokens from before the restart still work, and new events keep their order.
    put(logs, "/persist", "s", ["line 100"], start=t + 100)
    more = logs.get_log_events(logGroupName="/persist", logStreamName="s", nextToken=before_events["nextForwardToken"])
    assert [e["message"] for e in more["events"]] == ["line 100"]
