"""A training job in a private subnet reaches S3 over HTTPS by its real name,
as on AWS: no AWS_ENDPOINT_URL_* overrides, Cove's CA in the container's
system bundle (and AWS_CA_BUNDLE, REQUESTS_CA_BUNDLE, SSL_CERT_FILE), the
certificate and host name verified by Python's ssl module. The job's script
uses the standard library only (the host's /usr/bin/python3 has no boto3)
and reports into /opt/ml/model, read back from model.tar.gz. Needs root."""

import json
import os
import uuid

import pytest

from test_training_jobs import (job_name, model_of, private_net, s3_endpoint,  # noqa: F401 (fixture)
                                source_archive, training_request, wait_for)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the data plane needs root")

TRAIN = r'''
import json, os, socket, ssl, urllib.error, urllib.request
hps = json.loads(os.environ["SM_HPS"])
report = {"env": {k: os.environ.get(k) for k in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")},
          "overrides": sorted(k for k in os.environ if k.startswith("AWS_ENDPOINT_URL"))}
def fetch(url):
    ctx = ssl.create_default_context()
    try:
        with urllib.request.urlopen(url, timeout=5, context=ctx) as r:
            return {"status": r.status, "body": r.read().decode(errors="replace")}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode(errors="replace")[:300]}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
host = "s3.us-east-1.amazonaws.com"
try:
    with ssl.create_default_context().wrap_socket(socket.create_connection((host, 443), 5), server_hostname=host) as t:
        report["handshake"] = {"version": t.version(), "subject_alt_names": len(t.getpeercert()["subjectAltName"])}
except Exception as e:
    report["handshake"] = {"error": f"{type(e).__name__}: {e}"}
report["presigned"] = fetch(hps["url"])
report["anonymous"] = fetch("https://s3.us-east-1.amazonaws.com/")
report["by_address"] = fetch("https://192.0.2.20/")
print(json.dumps(report), flush=True)
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
    json.dump(report, f)
'''


@pytest.fixture(scope="module")
def tls_bucket(cove_server):
    s3 = cove_server.client("s3")
    name = f"jobtls-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="data/train/part-0.csv", Body="1,2\n")
    s3.put_object(Bucket=name, Key="secret.txt", Body="fetched over HTTPS")
    s3.put_object(Bucket=name, Key="code/sourcedir.tar.gz", Body=source_archive(TRAIN))
    return name


def test_a_job_verifies_coves_https_to_s3_by_its_real_name(cove_server, ec2, tls_bucket, private_net):
    from test_tls import presigner
    s3, sm = cove_server.client("s3"), cove_server.client("sagemaker")
    s3_endpoint(ec2, private_net)
    url = presigner("virtual").generate_presigned_url(
        "get_object", Params={"Bucket": tls_bucket, "Key": "secret.txt"}, ExpiresIn=600)
    name = job_name("tls")
    sm.create_training_job(**training_request(name, tls_bucket, private_net, url=url))
    d = wait_for(sm, name)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    report = model_of(s3, tls_bucket, name)
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    assert report["env"] == {"AWS_CA_BUNDLE": bundle, "REQUESTS_CA_BUNDLE": bundle, "SSL_CERT_FILE": bundle}
    assert report["overrides"] == [], "SDKs in a job use the services' real HTTPS names"
    # The handshake verified (chain to Cove's CA, host name) and S3 answered.
    assert report["presigned"].get("status") == 200, report["presigned"]
    assert report["presigned"]["body"] == "fetched over HTTPS"
    assert report["handshake"].get("version") == "TLSv1.3", report["handshake"]
    assert report["anonymous"].get("status") == 403, report["anonymous"]
    assert "CERTIFICATE_VERIFY_FAILED" in report["by_address"].get("error", ""), report["by_address"]
