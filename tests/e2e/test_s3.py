"""S3 with real boto3: buckets, objects, listings, multipart uploads, ranges,
presigned URLs, authentication errors, durability across a restart, bucket
policies, and (as root, with the data plane) a process in a private subnet
that reaches S3 only through a gateway endpoint, where the bucket policy and
the endpoint policy decide with `aws:SourceVpce`."""

import base64
import hashlib
import io
import json
import os
import signal
import sys
import urllib.error
import urllib.request
import uuid
import zlib

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import botocore.exceptions
import botocore.httpchecksum
import pytest
from boto3.s3.transfer import TransferConfig

from conftest import ACCESS_KEY, REGION, SECRET_KEY
from helpers import aws_error
from test_dataplane import eventually


@pytest.fixture(scope="module")
def s3(cove_server):
    return cove_server.client("s3")


def new_bucket(s3, prefix="b"):
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def empty_and_delete(s3, bucket):
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    s3.delete_bucket(Bucket=bucket)


def test_location_constraint_follows_the_signing_region(cove_server, s3):
    # A regional endpoint creates buckets in its own region only.
    eu = cove_server.client("s3", region="eu-west-1")
    name = f"loc-{uuid.uuid4().hex[:12]}"
    eu.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == "eu-west-1"
    assert aws_error("BucketAlreadyOwnedByYou", eu.create_bucket, Bucket=name,
                     CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    eu.delete_bucket(Bucket=name)
    msg = aws_error("IllegalLocationConstraintException", eu.create_bucket, Bucket=name,
                    CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    assert msg == "The us-west-2 location constraint is incompatible for the region specific endpoint this request was sent to."
    aws_error("IllegalLocationConstraintException", eu.create_bucket, Bucket=name)
    # us-east-1's endpoint creates them anywhere, but never names itself.
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "ap-southeast-2"})
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == "ap-southeast-2"
    s3.delete_bucket(Bucket=name)
    aws_error("InvalidLocationConstraint", s3.create_bucket, Bucket=name,
              CreateBucketConfiguration={"LocationConstraint": "us-east-1"})
    # A region AWS does not have is refused before anything runs.
    nowhere = cove_server.client("s3", region="us-east-9")
    msg = aws_error("AuthorizationHeaderMalformed", nowhere.list_buckets)
    assert "the region 'us-east-9' is wrong" in msg


def status_of(call, *args, **kwargs):
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call(*args, **kwargs)
    return info.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_buckets(s3):
    name = new_bucket(s3)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket=name)
    # us-east-1 reports no location constraint.
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] is None
    # us-east-1 answers 200 to the owner re-creating a bucket (AWS's legacy behaviour).
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="k", Body=b"x")
    assert "not empty" in aws_error("BucketNotEmpty", s3.delete_bucket, Bucket=name)
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    assert aws_error("NoSuchBucket", s3.delete_bucket, Bucket=name) == "The specified bucket does not exist"
    assert status_of(s3.head_bucket, Bucket=name) == 404
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    for bad in ("ab", "UpperCase", "under_score", "192.168.5.4", "bad..dots", "-dash"):
        aws_error("InvalidBucketName", s3.create_bucket, Bucket=bad)


def test_objects(s3):
    b = new_bucket(s3)
    put = s3.put_object(Bucket=b, Key="dir/hello.txt", Body=b"hello world", ContentType="text/plain",
                        Metadata={"team": "ml", "run": "7"}, CacheControl="no-cache")
    assert put["ETag"] == '"%s"' % hashlib.md5(b"hello world").hexdigest()
    got = s3.get_object(Bucket=b, Key="dir/hello.txt")
    assert got["Body"].read() == b"hello world"
    assert got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"team": "ml", "run": "7"}
    assert got["CacheControl"] == "no-cache"
    assert got["ETag"] == put["ETag"]
    head = s3.head_object(Bucket=b, Key="dir/hello.txt")
    assert head["ContentLength"] == 11 and head["Metadata"]["team"] == "ml"
    assert "LastModified" in head
    # Objects stored without a content type get S3's default.
    s3.put_object(Bucket=b, Key="raw", Body=b"\x00\x01")
    assert s3.head_object(Bucket=b, Key="raw")["ContentType"] == "binary/octet-stream"
    # Keys with spaces, unicode and characters that need encoding.
    odd = "a dir/ünï cödé+plus&amp=?.txt"
    s3.put_object(Bucket=b, Key=odd, Body=b"odd")
    assert s3.get_object(Bucket=b, Key=odd)["Body"].read() == b"odd"
    assert odd in [o["Key"] for o in s3.list_objects_v2(Bucket=b)["Contents"]]
    # Conditional requests.
    assert status_of(s3.get_object, Bucket=b, Key="dir/hello.txt", IfNoneMatch=put["ETag"]) == 304
    assert status_of(s3.get_object, Bucket=b, Key="dir/hello.txt", IfMatch='"0000"') == 412

    assert aws_error("NoSuchKey", s3.get_object, Bucket=b, Key="missing") == "The specified key does not exist."
    assert status_of(s3.head_object, Bucket=b, Key="missing") == 404
    aws_error("NoSuchBucket", s3.get_object, Bucket=f"nope-{uuid.uuid4().hex[:8]}", Key="k")

    # CopyObject keeps the metadata, or replaces it.
    s3.copy_object(Bucket=b, Key="copy.txt", CopySource={"Bucket": b, "Key": "dir/hello.txt"})
    copy = s3.get_object(Bucket=b, Key="copy.txt")
    assert copy["Body"].read() == b"hello world" and copy["Metadata"] == {"team": "ml", "run": "7"}
    s3.copy_object(Bucket=b, Key="copy.txt", CopySource=f"{b}/dir/hello.txt", MetadataDirective="REPLACE",
                   Metadata={"new": "1"}, ContentType="application/json")
    copy = s3.head_object(Bucket=b, Key="copy.txt")
    assert copy["Metadata"] == {"new": "1"} and copy["ContentType"] == "application/json"
    aws_error("InvalidRequest", s3.copy_object, Bucket=b, Key="copy.txt", CopySource=f"{b}/copy.txt")
    aws_error("NoSuchKey", s3.copy_object, Bucket=b, Key="x", CopySource=f"{b}/missing")

    # Deleting a missing key is fine; DeleteObjects reports each key.
    s3.delete_object(Bucket=b, Key="missing")
    out = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "copy.txt"}, {"Key": "raw"}, {"Key": "never"}]})
    assert sorted(d["Key"] for d in out["Deleted"]) == ["copy.txt", "never", "raw"]
    aws_error("NoSuchKey", s3.get_object, Bucket=b, Key="raw")
    empty_and_delete(s3, b)


def test_list_objects_v2_pagination_and_delimiter(s3):
    b = new_bucket(s3)
    keys = [f"logs/2024/{i:02d}.txt" for i in range(12)] + [f"data/part-{i}" for i in range(5)] + ["top.txt", "zz"]
    for k in keys:
        s3.put_object(Bucket=b, Key=k, Body=k.encode())
    # Pages of 7 by continuation token, in byte order.
    seen, token, pages = [], None, 0
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=b, MaxKeys=7, **kw)
        pages += 1
        assert page["KeyCount"] == len(page.get("Contents", []))
        seen += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == sorted(keys) and pages == 3
    # boto3's paginator agrees.
    paged = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=b, PaginationConfig={"PageSize": 5})
             for o in p.get("Contents", [])]
    assert paged == sorted(keys)
    # Prefix, delimiter and common prefixes.
    top = s3.list_objects_v2(Bucket=b, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["data/", "logs/"]
    assert [o["Key"] for o in top["Contents"]] == ["top.txt", "zz"]
    nested = s3.list_objects_v2(Bucket=b, Prefix="logs/", Delimiter="/")
    assert [p["Prefix"] for p in nested["CommonPrefixes"]] == ["logs/2024/"] and "Contents" not in nested
    # A common prefix counts toward MaxKeys and a page can end on one.
    first = s3.list_objects_v2(Bucket=b, Delimiter="/", MaxKeys=1)
    assert first["IsTruncated"] and first["CommonPrefixes"] == [{"Prefix": "data/"}]
    second = s3.list_objects_v2(Bucket=b, Delimiter="/", MaxKeys=1, ContinuationToken=first["NextContinuationToken"])
    assert second["CommonPrefixes"] == [{"Prefix": "logs/"}]
    # StartAfter, and ListObjects (v1) with Marker.
    after = s3.list_objects_v2(Bucket=b, Prefix="data/", StartAfter="data/part-2")
    assert [o["Key"] for o in after["Contents"]] == ["data/part-3", "data/part-4"]
    v1 = s3.list_objects(Bucket=b, Prefix="logs/", MaxKeys=10)
    assert v1["IsTruncated"] and len(v1["Contents"]) == 10
    rest = s3.list_objects(Bucket=b, Prefix="logs/", Marker=v1["Contents"][-1]["Key"])
    assert [o["Key"] for o in rest["Contents"]] == ["logs/2024/10.txt", "logs/2024/11.txt"]
    assert s3.list_objects_v2(Bucket=b, MaxKeys=0)["KeyCount"] == 0
    aws_error("InvalidArgument", s3.list_objects_v2, Bucket=b, ContinuationToken="not a token!")
    empty_and_delete(s3, b)


def test_multipart_upload_file_and_download(s3, tmp_path):
    b = new_bucket(s3)
    data = os.urandom(12 * 1024 * 1024 + 123)
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(data)
    chunk = 5 * 1024 * 1024
    cfg = TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk, max_concurrency=3)
    s3.upload_file(str(src), b, "big/model.bin", Config=cfg)
    parts = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"
    head = s3.head_object(Bucket=b, Key="big/model.bin")
    assert head["ETag"] == f'"{expected}"' and head["ContentLength"] == len(data)
    s3.download_file(b, "big/model.bin", str(dst), Config=cfg)
    assert dst.read_bytes() == data
    assert s3.list_multipart_uploads(Bucket=b).get("Uploads", []) == []
    empty_and_delete(s3, b)


def test_multipart_api_errors(s3):
    b = new_bucket(s3)
    up = s3.create_multipart_upload(Bucket=b, Key="k", ContentType="text/csv", Metadata={"m": "1"})["UploadId"]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=b)["Uploads"]] == [up]
    small = s3.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=1, Body=b"a" * 100)["ETag"]
    last = s3.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=2, Body=b"b" * 10)["ETag"]
    listed = s3.list_parts(Bucket=b, Key="k", UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in listed] == [(1, 100, small), (2, 10, last)]
    complete = lambda parts: s3.complete_multipart_upload(Bucket=b, Key="k", UploadId=up, MultipartUpload={"Parts": parts})
    aws_error("InvalidPart", complete, [{"PartNumber": 1, "ETag": '"0123456789abcdef0123456789abcdef"'}])
    aws_error("InvalidPart", complete, [{"PartNumber": 3, "ETag": small}])
    aws_error("InvalidPartOrder", complete, [{"PartNumber": 2, "ETag": last}, {"PartNumber": 1, "ETag": small}])
    aws_error("EntityTooSmall", complete, [{"PartNumber": 1, "ETag": small}, {"PartNumber": 2, "ETag": last}])
    # A single (last) part may be small.
    done = complete([{"PartNumber": 2, "ETag": last}])
    assert done["ETag"].endswith('-1"')
    got = s3.get_object(Bucket=b, Key="k")
    assert got["Body"].read() == b"b" * 10 and got["ContentType"] == "text/csv" and got["Metadata"] == {"m": "1"}
    aws_error("NoSuchUpload", s3.list_parts, Bucket=b, Key="k", UploadId=up)
    up2 = s3.create_multipart_upload(Bucket=b, Key="k2")["UploadId"]
    s3.upload_part(Bucket=b, Key="k2", UploadId=up2, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=b, Key="k2", UploadId=up2)
    aws_error("NoSuchUpload", s3.abort_multipart_upload, Bucket=b, Key="k2", UploadId=up2)
    aws_error("NoSuchUpload", s3.upload_part, Bucket=b, Key="k2", UploadId="nope", PartNumber=1, Body=b"x")
    empty_and_delete(s3, b)


def test_flexible_checksums_in_headers_and_aws_chunked_trailers(cove_server, s3, monkeypatch):
    b = new_bucket(s3)
    body = b"checksummed " * 1000
    crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    # Over HTTP botocore sends the checksum as a header.
    assert s3.put_object(Bucket=b, Key="h", Body=body)["ChecksumCRC32"] == crc
    assert s3.head_object(Bucket=b, Key="h", ChecksumMode="ENABLED")["ChecksumCRC32"] == crc
    aws_error("BadDigest", s3.put_object, Bucket=b, Key="bad", Body=body, ChecksumCRC32="AAAAAA==")
    # Over HTTPS it streams aws-chunked with the checksum in a trailer; make it
    # believe the endpoint is HTTPS so that framing reaches Cove.
    real = botocore.httpchecksum.urlparse
    monkeypatch.setattr(botocore.httpchecksum, "urlparse", lambda u: real(u)._replace(scheme="https"))
    sent = []
    tls = cove_server.client("s3")
    tls.meta.events.register("before-send.s3", lambda request, **_: sent.append(dict(request.headers)))
    tls.put_object(Bucket=b, Key="t", Body=io.BytesIO(body))
    assert sent[-1]["X-Amz-Content-SHA256"] == b"STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert sent[-1]["X-Amz-Trailer"] == b"x-amz-checksum-crc32"
    got = s3.get_object(Bucket=b, Key="t", ChecksumMode="ENABLED")
    assert got["Body"].read() == body and got["ChecksumCRC32"] == crc
    # The chunked framing is not the object's encoding.
    assert "ContentEncoding" not in got
    empty_and_delete(s3, b)


def test_a_body_declared_beyond_five_gib_is_refused_before_it_is_read(cove_server, s3):
    """S3 takes at most 5 GiB in one PUT or part: a declared 2^63-1 bytes is
    answered at once with EntityTooLarge (it used to wait for the body)."""
    import socket
    import urllib.parse
    s3.create_bucket(Bucket="too-large")
    upload = s3.create_multipart_upload(Bucket="too-large", Key="k")["UploadId"]
    host = urllib.parse.urlsplit(cove_server.endpoint).netloc
    for query in (f"?partNumber=1&uploadId={upload}", ""):
        url = f"{cove_server.endpoint}/too-large/k{query}"
        req = botocore.awsrequest.AWSRequest(method="PUT", url=url, headers={
            "Content-Length": str(2**63 - 1), "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
        botocore.auth.S3SigV4Auth(botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY), "s3", REGION).add_auth(req)
        head = f"PUT {urllib.parse.urlsplit(req.url).path}{query} HTTP/1.1\r\nHost: {host}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in req.headers.items() if k.lower() != "host") + "\r\n"
        with socket.create_connection(tuple(host.rsplit(":", 1)[0:1]) + (int(host.rsplit(":", 1)[1]),), timeout=5) as c:
            c.sendall(head.encode() + b"0123456789")
            answer = c.recv(65536).decode(errors="replace")
        assert answer.startswith("HTTP/1.1 400"), answer
        assert "<Code>EntityTooLarge</Code>" in answer, answer
    assert cove_server.alive()


def test_range_get(s3):
    b = new_bucket(s3)
    body = bytes(range(256)) * 40
    s3.put_object(Bucket=b, Key="r", Body=body)
    r = s3.get_object(Bucket=b, Key="r", Range="bytes=100-199")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert r["ContentRange"] == f"bytes 100-199/{len(body)}" and r["Body"].read() == body[100:200]
    assert s3.get_object(Bucket=b, Key="r", Range="bytes=-10")["Body"].read() == body[-10:]
    assert s3.get_object(Bucket=b, Key="r", Range="bytes=10000-")["Body"].read() == body[10000:]
    aws_error("InvalidRange", s3.get_object, Bucket=b, Key="r", Range=f"bytes={len(body)}-")
    empty_and_delete(s3, b)


def test_presigned_urls(cove_server, s3):
    b = new_bucket(s3)
    s3.put_object(Bucket=b, Key="shared/report.csv", Body=b"a,b\n1,2\n")
    v4 = cove_server.client("s3", signature_version="s3v4")
    for client in (s3, v4):
        url = client.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "shared/report.csv"}, ExpiresIn=300)
        with urllib.request.urlopen(url, timeout=5) as r:
            assert r.read() == b"a,b\n1,2\n"
    url = v4.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "shared/report.csv"}, ExpiresIn=300)
    tampered = url.replace("shared/report.csv", "shared/other.csv")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(tampered, timeout=5)
    assert info.value.code == 403 and b"SignatureDoesNotMatch" in info.value.read()
    # A presigned PUT.
    put_url = v4.generate_presigned_url("put_object", Params={"Bucket": b, "Key": "up.txt"}, ExpiresIn=300)
    urllib.request.urlopen(urllib.request.Request(put_url, data=b"uploaded", method="PUT"), timeout=5).close()
    assert s3.get_object(Bucket=b, Key="up.txt")["Body"].read() == b"uploaded"
    empty_and_delete(s3, b)


def test_authentication_errors(cove_server, s3):
    b = new_bucket(s3)
    wrong = cove_server.client("s3", secret_key="not-the-secret")
    msg = aws_error("SignatureDoesNotMatch", wrong.list_objects_v2, Bucket=b)
    assert msg.startswith("The request signature we calculated does not match")
    unknown = cove_server.client("s3", access_key="AKIAUNKNOWNKEY000000")
    msg = aws_error("InvalidAccessKeyId", unknown.list_buckets)
    assert msg == "The AWS Access Key Id you provided does not exist in our records."
    # An anonymous request addressed to an S3 host name.
    req = urllib.request.Request(f"{cove_server.endpoint}/{b}", headers={"Host": f"s3.{REGION}.amazonaws.com"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 403 and b"<Code>AccessDenied</Code>" in info.value.read()
    # Virtual-hosted-style addressing works like path-style.
    s3.put_object(Bucket=b, Key="vh.txt", Body=b"vh")
    # The loopback endpoint has no DNS name for <bucket>.s3..., so sign the
    # virtual-hosted request for that host and send it to Cove's address.
    signed = botocore.awsrequest.AWSRequest(method="GET", url=f"http://{b}.s3.{REGION}.amazonaws.com/vh.txt",
                                           headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY), "s3", REGION).add_auth(signed)
    headers = {**dict(signed.headers.items()), "Host": f"{b}.s3.{REGION}.amazonaws.com"}
    req = urllib.request.Request(f"{cove_server.endpoint}/vh.txt", headers=headers)
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.read() == b"vh"
    empty_and_delete(s3, b)


def test_session_credentials_need_their_token(cove_server, s3):
    b = new_bucket(s3)
    creds = cove_server.client("sts").assume_role(RoleArn="arn:aws:iam::123456789012:role/Reader",
                                                  RoleSessionName="s3-test")["Credentials"]
    with_token = boto3.client("s3", endpoint_url=cove_server.endpoint, region_name=REGION,
                              aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                              aws_session_token=creds["SessionToken"])
    assert with_token.list_objects_v2(Bucket=b)["KeyCount"] == 0
    without = cove_server.client("s3", access_key=creds["AccessKeyId"], secret_key=creds["SecretAccessKey"])
    msg = aws_error("InvalidToken", without.list_objects_v2, Bucket=b)
    assert msg == "The provided token is malformed or otherwise invalid."
    s3.delete_bucket(Bucket=b)


def test_objects_survive_a_crash_and_restart(fresh_cove, tmp_path):
    s3 = fresh_cove.client("s3")
    s3.create_bucket(Bucket="durable")
    s3.put_object(Bucket="durable", Key="small.txt", Body=b"kept", Metadata={"k": "v"})
    data = os.urandom(11 * 1024 * 1024)
    (tmp_path / "big").write_bytes(data)
    cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    s3.upload_file(str(tmp_path / "big"), "durable", "big.bin", Config=cfg)
    etag = s3.head_object(Bucket="durable", Key="big.bin")["ETag"]
    s3.put_bucket_policy(Bucket="durable", Policy=json.dumps({"Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::durable/*"}]}))
    fresh_cove.stop(signal.SIGKILL)
    fresh_cove.start()
    s3 = fresh_cove.client("s3")
    got = s3.get_object(Bucket="durable", Key="small.txt")
    assert got["Body"].read() == b"kept" and got["Metadata"] == {"k": "v"}
    assert s3.get_object(Bucket="durable", Key="big.bin")["Body"].read() == data
    assert s3.head_object(Bucket="durable", Key="big.bin")["ETag"] == etag
    aws_error("AccessDenied", s3.delete_object, Bucket="durable", Key="small.txt")


def only_from(bucket, vpce):
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "OnlyThroughTheEndpoint", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        "Condition": {"StringNotEquals": {"aws:SourceVpce": vpce}}}]})


def test_bucket_policy(s3):
    b = new_bucket(s3)
    s3.put_object(Bucket=b, Key="k", Body=b"v")
    assert aws_error("NoSuchBucketPolicy", s3.get_bucket_policy, Bucket=b) == "The bucket policy does not exist"
    assert aws_error("MalformedPolicy", s3.put_bucket_policy, Bucket=b, Policy="[]") == \
        "Policies must be valid JSON and the first byte must be '{'"
    aws_error("MalformedPolicy", s3.put_bucket_policy, Bucket=b, Policy='{"Statement":[{"Effect":"Deny"}]}')
    policy = only_from(b, "vpce-0123456789abcdef0")
    s3.put_bucket_policy(Bucket=b, Policy=policy)
    assert json.loads(s3.get_bucket_policy(Bucket=b)["Policy"]) == json.loads(policy)
    # From the host there is no aws:SourceVpce, so the Deny applies to everything.
    assert aws_error("AccessDenied", s3.get_object, Bucket=b, Key="k") == "Access Denied"
    aws_error("AccessDenied", s3.put_object, Bucket=b, Key="k2", Body=b"x")
    aws_error("AccessDenied", s3.list_objects_v2, Bucket=b)
    out = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "k"}]})
    assert out["Errors"][0]["Code"] == "AccessDenied" and "Deleted" not in out
    # The account root can still manage the policy, as on AWS.
    s3.delete_bucket_policy(Bucket=b)
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"v"
    empty_and_delete(s3, b)


READER = """
import sys, boto3, botocore.config
s3 = boto3.client("s3", endpoint_url="http://s3.us-east-1.amazonaws.com", region_name="us-east-1",
                  aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                  config=botocore.config.Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}))
try:
    print(s3.get_object(Bucket=sys.argv[1], Key=sys.argv[2])["Body"].read().decode())
except s3.exceptions.ClientError as e:
    print(e.response["Error"]["Code"])
except Exception as e:
    print("failed", type(e).__name__)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the data plane needs root")
def test_gateway_endpoint_policies_from_a_private_subnet(cove_server, ec2, vpc, s3):
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.associate_route_table(RouteTableId=rt, SubnetId=subnet)
    eni = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
    assert eventually(lambda: cove_server.exec(eni, "true").returncode == 0)
    b, other = new_bucket(s3, "data"), new_bucket(s3, "other")
    s3.put_object(Bucket=b, Key="train.csv", Body=b"1,2,3")
    read = lambda: cove_server.exec(eni, sys.executable, "-c", READER, b, "train.csv", timeout=30).stdout.strip()

    # A private subnet without an endpoint cannot reach S3 at all.
    assert read().startswith("failed")
    vpce = ec2.create_vpc_endpoint(VpcId=vpc, ServiceName=f"com.amazonaws.{REGION}.s3",
                                   RouteTableIds=[rt])["VpcEndpoint"]["VpcEndpointId"]
    assert eventually(lambda: read() == "1,2,3", timeout=15)

    # A bucket policy that demands the endpoint: the host is denied, the ENI is not.
    s3.put_bucket_policy(Bucket=b, Policy=only_from(b, vpce))
    aws_error("AccessDenied", s3.get_object, Bucket=b, Key="train.csv")
    assert read() == "1,2,3"
    # Another endpoint id in the policy denies this one.
    s3.put_bucket_policy(Bucket=b, Policy=only_from(b, "vpce-00000000000000000"))
    assert read() == "AccessDenied"
    s3.put_bucket_policy(Bucket=b, Policy=only_from(b, vpce))

    # An endpoint policy that allows only another bucket denies this one through it.
    ec2.modify_vpc_endpoint(VpcEndpointId=vpce, PolicyDocument=json.dumps({"Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{other}", f"arn:aws:s3:::{other}/*"]}]}))
    assert read() == "AccessDenied"
    s3.put_object(Bucket=other, Key="ok.txt", Body=b"other bucket")
    assert cove_server.exec(eni, sys.executable, "-c", READER, other, "ok.txt", timeout=30).stdout.strip() == "other bucket"
    ec2.modify_vpc_endpoint(VpcEndpointId=vpce, ResetPolicy=True)
    assert read() == "1,2,3"

    s3.delete_bucket_policy(Bucket=b)
    empty_and_delete(s3, b)
    empty_and_delete(s3, other)
