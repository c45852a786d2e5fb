"""SageMaker hosting inside a VPC: endpoint instances are serving containers
on their own ENIs in the model's subnets, their model data comes through
those ENIs, and InvokeEndpoint (SageMaker Runtime) routes to them by variant
weight. Real boto3 against a real Cove; needs root for the data plane."""

import io
import json
import os
import signal
import tarfile
import threading
import time
import uuid

import botocore.exceptions
import pytest

from helpers import eventually, wait_status
from test_training_jobs import ROLE, IMAGE, s3_endpoint, tar_gz, private_net, bucket, s3, sm, logs  # noqa: F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the data plane needs root")

MODEL_DOWNLOAD_FAILED = (
    'Failed to download model data from URL "{url}". Please ensure that an S3 VPC endpoint exists in route '
    "table or NAT gateway for the VPC mode and the URL is reachable from within the subnets provided."
)

# The user's inference script, as the SageMaker framework containers load it.
INFERENCE = r'''
import json, os, socket

def model_fn(model_dir):
    with open(os.path.join(model_dir, "model.json")) as f:
        return json.load(f)

def input_fn(body, content_type, context=None):
    if content_type != "application/json":
        raise ValueError(f"cannot read {content_type}")
    return json.loads(body)

def predict_fn(data, model, context=None):
    if data.get("sleep"):
        import time
        time.sleep(data["sleep"])
    if data.get("fail"):
        raise RuntimeError("the model refuses")
    if "get" in data:
        import urllib.request
        try:
            return {"get": urllib.request.urlopen(data["get"], timeout=3).status}
        except OSError as e:
            return {"get": f"failed: {e}"}
    if "probe" in data:
        host, port = data["probe"]
        s = socket.socket()
        s.settimeout(1.5)
        try:
            s.connect((host, port))
            return {"probe": "reached", "reply": s.recv(64).decode()}
        except OSError as e:
            return {"probe": f"blocked: {e}"}
    if context is not None and "X-Amzn-SageMaker-Custom-Attributes" in context.request_headers:
        context.response_headers["X-Amzn-SageMaker-Custom-Attributes"] = "seen=" + context.request_headers["X-Amzn-SageMaker-Custom-Attributes"]
    return {"version": model["version"], "outputs": [x * model["scale"] for x in data["inputs"]],
            "credentials": "AWS_ACCESS_KEY_ID" in os.environ, "host": socket.gethostname()}
'''


def model_archive(version, scale):
    return tar_gz({"model.json": json.dumps({"version": version, "scale": scale}), "code/inference.py": INFERENCE})


@pytest.fixture(scope="module")
def runtime(cove_server):
    return cove_server.client("sagemaker-runtime")


@pytest.fixture(scope="module")
def models(s3, bucket):  # noqa: F811
    for version, scale in ((1, 10), (2, 100)):
        s3.put_object(Bucket=bucket, Key=f"models/v{version}/model.tar.gz", Body=model_archive(version, scale))
    return {v: f"s3://{bucket}/models/v{v}/model.tar.gz" for v in (1, 2)}


@pytest.fixture
def endpoints(sm):  # noqa: F811
    """Names of endpoints the test creates; deleted after it, pass or fail,
    so their ENIs are gone before the VPC is torn down."""
    names = []
    yield names
    for name in names:
        try:
            delete_endpoint(sm, name)
        except botocore.exceptions.ClientError:
            pass


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_model(sm, url, net=None, isolated=False):  # noqa: F811
    name = unique("model")
    req = {
        "ModelName": name,
        "ExecutionRoleArn": ROLE,
        "PrimaryContainer": {
            "Image": IMAGE,
            "ModelDataUrl": url,
            "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"},
        },
    }
    if net:
        req["VpcConfig"] = {"Subnets": net["subnets"], "SecurityGroupIds": [net["sg"]]}
    if isolated:
        req["EnableNetworkIsolation"] = True
    sm.create_model(**req)
    return name


def create_config(sm, *variants):  # noqa: F811
    """variants: (variant name, model name, instance count, weight)."""
    name = unique("config")
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
        {"VariantName": v, "ModelName": m, "InstanceType": "ml.m5.large", "InitialInstanceCount": n,
         "InitialVariantWeight": w} for v, m, n, w in variants])
    return name


def wait_endpoint(sm, name, statuses=("InService", "Failed"), timeout=60):  # noqa: F811
    return wait_status(lambda: sm.describe_endpoint(EndpointName=name), "EndpointStatus", statuses, timeout, name)


def delete_endpoint(sm, name, timeout=30):  # noqa: F811
    sm.delete_endpoint(EndpointName=name)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            sm.describe_endpoint(EndpointName=name)
        except botocore.exceptions.ClientError as e:
            assert "Could not find endpoint" in e.response["Error"]["Message"]
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} was not deleted in {timeout}s")


def invoke(runtime, name, payload, **kw):
    r = runtime.invoke_endpoint(EndpointName=name, Body=json.dumps(payload), ContentType="application/json", **kw)
    return r, json.loads(r["Body"].read())


def endpoint_enis(ec2, net, name):
    enis = ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [net["vpc"]]}])["NetworkInterfaces"]
    return [e for e in enis if e["RequesterManaged"] and f"Endpoint {name} " in e["Description"]]


def test_endpoint_in_private_subnets_serves_predictions(ec2, sm, runtime, logs, models, private_net, endpoints):  # noqa: F811
    s3_endpoint(ec2, private_net)
    model = create_model(sm, models[1], private_net)
    config = create_config(sm, ("AllTraffic", model, 2, 1.0))
    name = unique("ep")
    endpoints.append(name)
    arn = sm.create_endpoint(EndpointName=name, EndpointConfigName=config)["EndpointArn"]
    assert arn == f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{name}"
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "Creating"
    # Not serving yet: the runtime does not know it.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        invoke(runtime, name, {"inputs": [1]})
    assert e.value.response["Error"]["Code"] == "ValidationError"
    d = wait_endpoint(sm, name)
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    v = d["ProductionVariants"][0]
    assert (v["VariantName"], v["CurrentInstanceCount"], v["DesiredInstanceCount"], v["CurrentWeight"]) == (
        "AllTraffic", 2, 2, 1.0)
    assert v["DeployedImages"][0]["SpecifiedImage"] == IMAGE
    # One requester-managed ENI per instance, in the model's subnets, with its group.
    enis = endpoint_enis(ec2, private_net, name)
    assert len(enis) == 2
    assert {e["SubnetId"] for e in enis} == set(private_net["subnets"])
    assert all([g["GroupId"] for g in e["Groups"]] == [private_net["sg"]] for e in enis)

    hosts = set()
    for n in range(6):
        r, out = invoke(runtime, name, {"inputs": [1, 2, n]})
        assert out["outputs"] == [10, 20, 10 * n] and out["version"] == 1
        assert out["credentials"] is True
        assert r["InvokedProductionVariant"] == "AllTraffic"
        assert r["ContentType"] == "application/json"
        hosts.add(out["host"])
    assert len(hosts) == 2, "requests are balanced across both instances"
    r, _ = invoke(runtime, name, {"inputs": [1]}, CustomAttributes="trace=42")
    assert r["CustomAttributes"] == "seen=trace=42"

    # The model's own failure is a ModelError with what the container said.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        invoke(runtime, name, {"fail": True})
    err = e.value.response
    assert err["Error"]["Code"] == "ModelError"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert err["OriginalStatusCode"] == 500 and "the model refuses" in err["OriginalMessage"]
    assert err["Error"]["Message"].startswith("Received server error (500) from primary with message")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        runtime.invoke_endpoint(EndpointName=name, Body=b"1,2", ContentType="text/csv")
    assert e.value.response["OriginalStatusCode"] == 500

    # AWS's validation answers.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        invoke(runtime, "no-such-endpoint", {"inputs": []})
    assert e.value.response["Error"] == {
        "Code": "ValidationError", "Message": "Endpoint no-such-endpoint of account 123456789012 not found."}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        invoke(runtime, name, {"inputs": []}, TargetVariant="Nope")
    assert e.value.response["Error"]["Code"] == "ValidationError"

    # The serving containers' output is in the endpoint's log group, a stream per instance.
    group = f"/aws/sagemaker/Endpoints/{name}"
    deadline = time.time() + 10
    while time.time() < deadline:
        streams = logs.describe_log_streams(logGroupName=group)["logStreams"] if logs.describe_log_groups(
            logGroupNamePrefix=group)["logGroups"] else []
        if len(streams) == 2:
            break
        time.sleep(0.2)
    assert sorted(s["logStreamName"].split("/")[0] for s in streams) == ["AllTraffic", "AllTraffic"]
    events = logs.get_log_events(logGroupName=group, logStreamName=streams[0]["logStreamName"], startFromHead=True)
    assert any("listening on port 8080" in ev["message"] for ev in events["events"])

    listed = sm.list_endpoints(NameContains=name)["Endpoints"]
    assert [(x["EndpointName"], x["EndpointStatus"]) for x in listed] == [(name, "InService")]
    delete_endpoint(sm, name)
    assert not endpoint_enis(ec2, private_net, name)


def test_model_download_fails_without_a_route_to_s3(sm, models, private_net, endpoints):  # noqa: F811
    model = create_model(sm, models[1], private_net)
    config = create_config(sm, ("AllTraffic", model, 1, 1.0))
    name = unique("noroute")
    endpoints.append(name)
    started = time.time()
    sm.create_endpoint(EndpointName=name, EndpointConfigName=config)
    d = wait_endpoint(sm, name)
    assert d["EndpointStatus"] == "Failed"
    assert d["FailureReason"] == MODEL_DOWNLOAD_FAILED.format(url=models[1])
    assert time.time() - started < 30
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.update_endpoint(EndpointName=name, EndpointConfigName=config)
    assert "Cannot update in-progress endpoint" in e.value.response["Error"]["Message"]
    delete_endpoint(sm, name)


def test_update_endpoint_under_continuous_traffic_drops_nothing(sm, runtime, models, endpoints):  # noqa: F811
    v1 = create_config(sm, ("AllTraffic", create_model(sm, models[1]), 1, 1.0))
    v2 = create_config(sm, ("AllTraffic", create_model(sm, models[2]), 1, 1.0))
    name = unique("bluegreen")
    endpoints.append(name)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=v1)
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"

    versions, failures, stop = [], [], threading.Event()

    def traffic():
        while not stop.is_set():
            try:
                versions.append(invoke(runtime, name, {"inputs": [1]})[1]["version"])
            except Exception as e:  # any failed request fails the test
                failures.append(repr(e))

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    sm.update_endpoint(EndpointName=name, EndpointConfigName=v2)
    d = sm.describe_endpoint(EndpointName=name)
    assert d["EndpointStatus"] == "Updating"
    assert d["PendingDeploymentSummary"]["EndpointConfigName"] == v2
    d = wait_endpoint(sm, name, statuses=("InService",))
    time.sleep(4)  # the old instance drains, then stops
    stop.set()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    assert d["EndpointConfigName"] == v2
    assert versions[0] == 1 and versions[-1] == 2, (versions[0], versions[-1])
    switch = versions.index(2)
    assert set(versions[switch + 8:]) == {2}, "after the switch only the new model answers"
    assert len(versions) > 50
    delete_endpoint(sm, name)


def test_variant_weights_and_target_variant(sm, runtime, models, endpoints):  # noqa: F811
    a, b = create_model(sm, models[1]), create_model(sm, models[2])
    config = create_config(sm, ("A", a, 1, 1.0), ("B", b, 1, 0.0))
    name = unique("weights")
    endpoints.append(name)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=config)
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
    assert {invoke(runtime, name, {"inputs": [1]})[0]["InvokedProductionVariant"] for _ in range(10)} == {"A"}
    r, out = invoke(runtime, name, {"inputs": [1]}, TargetVariant="B")
    assert (r["InvokedProductionVariant"], out["version"]) == ("B", 2)

    sm.update_endpoint_weights_and_capacities(EndpointName=name, DesiredWeightsAndCapacities=[
        {"VariantName": "A", "DesiredWeight": 0.0}, {"VariantName": "B", "DesiredWeight": 1.0, "DesiredInstanceCount": 2}])
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "Updating"
    d = wait_endpoint(sm, name, statuses=("InService",))
    counts = {v["VariantName"]: (v["CurrentWeight"], v["CurrentInstanceCount"]) for v in d["ProductionVariants"]}
    assert counts == {"A": (0.0, 1), "B": (1.0, 2)}
    seen = {invoke(runtime, name, {"inputs": [1]})[0]["InvokedProductionVariant"] for _ in range(10)}
    assert seen == {"B"}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.update_endpoint_weights_and_capacities(EndpointName=name, DesiredWeightsAndCapacities=[
            {"VariantName": "C", "DesiredWeight": 1.0}])
    assert e.value.response["Error"]["Code"] == "ValidationException"
    delete_endpoint(sm, name)


# A stand-in database on an ENI of the VPC: answers every connection with a greeting.
DATABASE = r'''
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5432))
s.listen(16)
while True:
    c, _ = s.accept()
    c.sendall(b"db-ok")
    c.close()
'''


def test_model_reaches_a_database_only_as_its_security_groups_allow(cove_server, ec2, sm, runtime, models,  # noqa: F811
                                                                   private_net, endpoints):
    s3_endpoint(ec2, private_net)
    db_sg = ec2.create_security_group(GroupName="db", Description="database", VpcId=private_net["vpc"])["GroupId"]
    rule = {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": private_net["sg"]}]}
    ec2.authorize_security_group_ingress(GroupId=db_sg, IpPermissions=[rule])
    db = ec2.create_network_interface(SubnetId=private_net["subnets"][1], Groups=[db_sg])["NetworkInterface"]
    server = None
    try:
        deadline = time.time() + 10
        while cove_server.exec(db["NetworkInterfaceId"], "true").returncode != 0:
            assert time.time() < deadline
            time.sleep(0.1)
        server = cove_server.spawn(db["NetworkInterfaceId"], "python3", "-c", DATABASE)
        model = create_model(sm, models[1], private_net)
        name = unique("dbprobe")
        endpoints.append(name)
        sm.create_endpoint(EndpointName=name, EndpointConfigName=create_config(sm, ("AllTraffic", model, 1, 1.0)))
        assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
        probe = {"probe": [db["PrivateIpAddress"], 5432]}
        deadline = time.time() + 10
        while (out := invoke(runtime, name, probe)[1])["probe"] != "reached":
            assert time.time() < deadline, out
            time.sleep(0.2)
        assert out["reply"] == "db-ok"
        # Without the database group's rule for the model's group, the model is cut off.
        ec2.revoke_security_group_ingress(GroupId=db_sg, IpPermissions=[rule])
        deadline = time.time() + 10
        while (out := invoke(runtime, name, probe)[1])["probe"] == "reached":
            assert time.time() < deadline, "the revoked rule still admits the model"
            time.sleep(0.2)
        assert out["probe"].startswith("blocked"), out
    finally:
        if server:
            server.kill()
            server.wait()
        for name in list(endpoints):
            delete_endpoint(sm, name)
            endpoints.remove(name)
        ec2.delete_network_interface(NetworkInterfaceId=db["NetworkInterfaceId"])


def test_network_isolation_keeps_the_model_off_the_network(ec2, sm, runtime, models, private_net, endpoints):  # noqa: F811
    s3_endpoint(ec2, private_net)
    model = create_model(sm, models[1], private_net, isolated=True)
    assert sm.describe_model(ModelName=model)["EnableNetworkIsolation"] is True
    name = unique("isolated")
    endpoints.append(name)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=create_config(sm, ("AllTraffic", model, 1, 1.0)))
    d = wait_endpoint(sm, name)
    # Cove still fetched the model data through the ENI, and still reaches the container.
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    _, out = invoke(runtime, name, {"inputs": [3]})
    assert out["outputs"] == [30] and out["credentials"] is False
    _, out = invoke(runtime, name, {"probe": ["192.0.2.20", 80]})
    assert out["probe"].startswith("blocked"), out


# boto3 with its default endpoints (https://runtime.sagemaker.<region>.amazonaws.com,
# https://api.sagemaker.<region>.amazonaws.com), as code inside a private subnet runs it.
CLIENT = r'''
import json, sys, boto3, botocore.config
cfg = botocore.config.Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1})
kw = dict(region_name="us-east-1", aws_access_key_id=sys.argv[1], aws_secret_access_key=sys.argv[2], config=cfg)
try:
    if sys.argv[3] == "invoke":
        r = boto3.client("sagemaker-runtime", **kw).invoke_endpoint(
            EndpointName=sys.argv[4], Body=json.dumps({"inputs": [7]}), ContentType="application/json")
        print("ok", r["Body"].read().decode())
    else:
        sm = boto3.client("sagemaker", **kw)
        sm.create_training_job(**json.loads(sys.argv[4]))
        print("ok", sm.describe_training_job(TrainingJobName=json.loads(sys.argv[4])["TrainingJobName"])["TrainingJobStatus"])
except Exception as e:
    print("failed", type(e).__name__, e)
'''


def from_subnet(cove_server, eni, *args):
    from conftest import ACCESS_KEY, SECRET_KEY
    import sys
    return cove_server.exec(eni, sys.executable, "-c", CLIENT, ACCESS_KEY, SECRET_KEY, *args, timeout=40).stdout.strip()


@pytest.fixture
def client_eni(cove_server, ec2, private_net):  # noqa: F811
    """A caller in the first private subnet (no NAT, no endpoints), with its own group."""
    ec2.modify_vpc_attribute(VpcId=private_net["vpc"], EnableDnsHostnames={"Value": True})
    sg = ec2.create_security_group(GroupName="caller", Description="caller", VpcId=private_net["vpc"])["GroupId"]
    eni = ec2.create_network_interface(SubnetId=private_net["subnets"][0], Groups=[sg])["NetworkInterface"]
    deadline = time.time() + 10
    while cove_server.exec(eni["NetworkInterfaceId"], "true").returncode != 0:
        assert time.time() < deadline
        time.sleep(0.1)
    return {"eni": eni["NetworkInterfaceId"], "sg": sg}


def interface_endpoint(ec2, net, service, caller_sg):
    sg = ec2.create_security_group(GroupName=f"vpce-{service}", Description=service, VpcId=net["vpc"])["GroupId"]
    rule = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "UserIdGroupPairs": [{"GroupId": caller_sg}]}
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[rule])
    ep = ec2.create_vpc_endpoint(VpcId=net["vpc"], VpcEndpointType="Interface",
                                 ServiceName=f"com.amazonaws.us-east-1.sagemaker.{service}",
                                 SubnetIds=[net["subnets"][0]], SecurityGroupIds=[sg])["VpcEndpoint"]
    assert ep["PrivateDnsEnabled"] is True
    return ep["VpcEndpointId"], sg, rule


def eventually_out(fn, want, timeout=20):
    deadline = time.time() + timeout
    while True:
        out = fn()
        if out.startswith(want) or time.time() > deadline:
            return out
        time.sleep(0.3)


def test_invoke_endpoint_from_a_private_subnet_through_the_runtime_interface_endpoint(
        cove_server, ec2, sm, models, private_net, client_eni, endpoints):  # noqa: F811
    model = create_model(sm, models[1])
    name = unique("private-invoke")
    endpoints.append(name)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=create_config(sm, ("AllTraffic", model, 1, 1.0)))
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
    call = lambda: from_subnet(cove_server, client_eni["eni"], "invoke", name)  # noqa: E731
    # No route to SageMaker Runtime from the private subnet.
    assert call().startswith("failed"), "the runtime is reachable without an endpoint"
    _, ep_sg, rule = interface_endpoint(ec2, private_net, "runtime", client_eni["sg"])
    out = eventually_out(call, "ok")
    assert out.startswith("ok") and json.loads(out[3:])["outputs"] == [70], out
    # The endpoint's security group decides who may call through it.
    ec2.revoke_security_group_ingress(GroupId=ep_sg, IpPermissions=[rule])
    out = eventually_out(call, "failed")
    assert out.startswith("failed") and "Connect timeout" in out, out


def test_create_training_job_from_a_private_subnet_through_the_api_interface_endpoint(
        cove_server, ec2, bucket, private_net, client_eni):  # noqa: F811
    from test_training_jobs import training_request, job_name
    request = json.dumps(training_request(job_name("via-vpce"), bucket))
    call = lambda: from_subnet(cove_server, client_eni["eni"], "train", request)  # noqa: E731
    out = call()
    assert out.startswith("failed EndpointConnectionError") or "Connect timeout" in out, out
    interface_endpoint(ec2, private_net, "api", client_eni["sg"])
    out = eventually_out(call, "ok")
    assert out in ("ok InProgress", "ok Completed"), out


def wait_transform(sm, name, timeout=90):  # noqa: F811
    return wait_status(lambda: sm.describe_transform_job(TransformJobName=name), "TransformJobStatus",
                       ("Completed", "Failed", "Stopped"), timeout, name, interval=0.2)


def transform_request(name, model, bucket, prefix, instances=1):  # noqa: F811
    return {
        "TransformJobName": name,
        "ModelName": model,
        "BatchStrategy": "SingleRecord",
        "MaxConcurrentTransforms": 2,
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/{prefix}"}},
                           "ContentType": "application/json", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": f"s3://{bucket}/{name}-out", "AssembleWith": "Line", "Accept": "application/json"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": instances},
    }


def test_batch_transform_over_a_multi_file_input_in_private_subnets(ec2, s3, sm, logs, bucket, models, private_net):  # noqa: F811
    prefix = f"batch-{uuid.uuid4().hex[:6]}/in"
    files = {f"part-{n}.jsonl": [{"inputs": [n, i]} for i in range(5 + n)] for n in range(3)}
    for fname, records in files.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{fname}", Body="\n".join(json.dumps(r) for r in records) + "\n")
    model = create_model(sm, models[1], private_net)
    name = unique("transform")

    # Without a route to S3 the job cannot fetch its model, with AWS's message.
    sm.create_transform_job(**transform_request(name, model, bucket, prefix))
    d = wait_transform(sm, name)
    assert (d["TransformJobStatus"], d["FailureReason"]) == ("Failed", MODEL_DOWNLOAD_FAILED.format(url=models[1]))

    s3_endpoint(ec2, private_net)
    name = unique("transform")
    sm.create_transform_job(**transform_request(name, model, bucket, prefix, instances=2))
    d = wait_transform(sm, name)
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    assert d["TransformStartTime"] <= d["TransformEndTime"]
    for fname, records in files.items():
        body = s3.get_object(Bucket=bucket, Key=f"{name}-out/{fname}.out")["Body"].read().decode()
        lines = [json.loads(line) for line in body.splitlines()]
        assert [x["outputs"] for x in lines] == [[10 * v for v in r["inputs"]] for r in records], fname
    # Both instances took part and logged to the job's group (each host
    # ships its instance's log as it is written); their ENIs are gone.
    def streams():
        groups = logs.describe_log_groups(logGroupNamePrefix="/aws/sagemaker/TransformJobs")["logGroups"]
        return groups and logs.describe_log_streams(logGroupName="/aws/sagemaker/TransformJobs",
                                                    logStreamNamePrefix=name)["logStreams"]
    assert eventually(lambda: len(streams() or []) == 2, timeout=10), streams()
    # (Released by the job's cleanup step, just after its final status.)
    assert eventually(lambda: not [e for e in ec2.describe_network_interfaces(
        Filters=[{"Name": "vpc-id", "Values": [private_net["vpc"]]}])["NetworkInterfaces"] if name in e["Description"]])
    assert [j["TransformJobName"] for j in sm.list_transform_jobs(NameContains=name)["TransformJobSummaries"]] == [name]

    # A record the model refuses fails the job, and says so in the job's log.
    s3.put_object(Bucket=bucket, Key=f"{prefix}-bad/x.jsonl", Body=json.dumps({"fail": True}) + "\n")
    name = unique("transform")
    sm.create_transform_job(**transform_request(name, model, bucket, prefix + "-bad"))
    d = wait_transform(sm, name)
    assert (d["TransformJobStatus"], d["FailureReason"]) == ("Failed", "AlgorithmError: See job logs for more information")


def test_endpoints_keep_serving_across_a_cove_crash(fresh_cove):
    sm, s3, runtime = fresh_cove.client("sagemaker"), fresh_cove.client("s3"), fresh_cove.client("sagemaker-runtime")
    bucket = f"crash-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="m.tar.gz", Body=model_archive(5, 2))
    model = create_model(sm, f"s3://{bucket}/m.tar.gz")
    sm.create_endpoint(EndpointName="survivor", EndpointConfigName=create_config(sm, ("AllTraffic", model, 1, 1.0)))
    assert wait_endpoint(sm, "survivor")["EndpointStatus"] == "InService"
    host = invoke(runtime, "survivor", {"inputs": [1]})[1]["host"]
    fresh_cove.stop(signal.SIGKILL)
    fresh_cove.start()
    sm, runtime = fresh_cove.client("sagemaker"), fresh_cove.client("sagemaker-runtime")
    # The same instance (its container outlived Cove) answers at once.
    assert sm.describe_endpoint(EndpointName="survivor")["EndpointStatus"] == "InService"
    _, out = invoke(runtime, "survivor", {"inputs": [4]})
    assert (out["outputs"], out["host"]) == ([8], host)
    delete_endpoint(sm, "survivor")


BYO_SERVE = r'''#!/usr/bin/python3
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = json.load(open("/opt/ml/model/model.json"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer(200 if self.path == "/ping" else 404, b"{}")

    def do_POST(self):
        data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        root = "byo" if os.path.exists("/etc/byo-marker") else "host"
        self.answer(200, json.dumps({"root": root, "outputs": [x + MODEL["scale"] for x in data["inputs"]]}).encode())


ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
'''

SKIP_STDLIB = ("test", "idlelib", "tkinter", "lib2to3", "ensurepip", "pydoc_data", "turtledemo", "distutils")


def byo_python_image(path):
    """An image with the host's Python (interpreter, libraries, most of the
    standard library) and a `serve` program, but not the host's root."""
    import re
    import subprocess
    import sysconfig  # noqa: F401
    python = os.path.realpath("/usr/bin/python3")
    stdlib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    libs = set()
    for binary in (python, "/bin/sh"):
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
        libs.update(re.findall(r"(/\S+) \(0x", out))

    def keep(info):
        rel = info.name.split("/", 3)[-1] if info.name.count("/") >= 3 else ""
        return None if rel.split("/")[0] in SKIP_STDLIB else info

    with tarfile.open(path, "w:gz", compresslevel=1) as t:
        t.add(python, arcname="usr/bin/python3")
        t.add(os.path.realpath("/bin/sh"), arcname="bin/sh")
        for lib in libs:
            t.add(os.path.realpath(lib), arcname=lib.lstrip("/"))
        t.add(stdlib, arcname=stdlib.lstrip("/"), filter=keep)
        for name, body, mode in (("usr/local/bin/serve", BYO_SERVE, 0o755), ("etc/byo-marker", "byo\n", 0o644)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), mode
            t.addfile(info, io.BytesIO(body.encode()))


def test_bring_your_own_serving_image(cove_server, ec2, sm, runtime, models, private_net, endpoints, tmp_path):  # noqa: F811
    import subprocess
    from conftest import BINARY
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byo-serve:1"
    tarball = tmp_path / "rootfs.tar.gz"
    byo_python_image(tarball)
    subprocess.run([BINARY, "image-import", "--data-dir", cove_server.data_dir, image, str(tarball)],
                   check=True, capture_output=True)
    s3_endpoint(ec2, private_net)
    name = unique("model")
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": image, "ModelDataUrl": models[2]},
                    VpcConfig={"Subnets": private_net["subnets"], "SecurityGroupIds": [private_net["sg"]]})
    ep = unique("byo")
    endpoints.append(ep)
    sm.create_endpoint(EndpointName=ep, EndpointConfigName=create_config(sm, ("AllTraffic", name, 1, 1.0)))
    d = wait_endpoint(sm, ep)
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    _, out = invoke(runtime, ep, {"inputs": [1, 2]})
    assert out == {"root": "byo", "outputs": [101, 102]}


def test_a_model_that_does_not_answer_in_time_is_a_model_error(sm, runtime, models, endpoints):  # noqa: F811
    model = create_model(sm, models[1])
    name = unique("slow")
    endpoints.append(name)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=create_config(sm, ("AllTraffic", model, 1, 1.0)))
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
    started = time.time()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        invoke(runtime, name, {"sleep": 10, "inputs": [1]})
    # The tests run Cove with COVE_INVOKE_TIMEOUT=3 instead of AWS's 60 s.
    assert 2.5 < time.time() - started < 8
    assert e.value.response["Error"]["Code"] == "ModelError"
    assert e.value.response["Error"]["Message"].startswith(
        "Your invocation timed out while waiting for a response from container primary.")
    # The instance still answers the next caller.
    assert invoke(runtime, name, {"inputs": [2]})[1]["outputs"] == [20]


def test_invoke_endpoint_through_a_nat_reaches_the_runtimes_public_address(
        cove_server, ec2, sm, models, private_net, client_eni, endpoints):  # noqa: F811
    from conftest import nat_gateway
    model = create_model(sm, models[1])
    name = unique("via-nat")
    endpoints.append(name)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=create_config(sm, ("AllTraffic", model, 1, 1.0)))
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
    # The caller's subnet routes the internet through a NAT gateway in a public subnet.
    public = ec2.create_subnet(VpcId=private_net["vpc"], CidrBlock="10.0.9.0/24")["Subnet"]["SubnetId"]
    nat, _ = nat_gateway(ec2, private_net["vpc"], public)
    ec2.create_route(RouteTableId=private_net["rt"], DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    # No interface endpoint: runtime.sagemaker.us-east-1.amazonaws.com is the
    # region's public address (192.0.2.14), reached through the NAT.
    out = eventually_out(lambda: from_subnet(cove_server, client_eni["eni"], "invoke", name), "ok")
    assert out.startswith("ok") and json.loads(out[3:])["outputs"] == [70], out


def test_a_failed_update_rolls_back_and_capacity_scales_in(sm, runtime, models, endpoints):  # noqa: F811
    good = create_config(sm, ("AllTraffic", create_model(sm, models[1]), 2, 1.0))
    name = unique("rollback")
    endpoints.append(name)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=good)
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
    missing = models[1].replace("model.tar.gz", "absent.tar.gz")
    bad = create_config(sm, ("AllTraffic", create_model(sm, missing), 1, 1.0))
    sm.update_endpoint(EndpointName=name, EndpointConfigName=bad)
    d = wait_endpoint(sm, name, statuses=("InService",))
    # The new instance could not start: the endpoint stays on the old configuration, says why, and serves.
    assert d["EndpointConfigName"] == good
    assert d["FailureReason"] == f"Could not find model data at {missing}."
    assert "PendingDeploymentSummary" not in d
    assert invoke(runtime, name, {"inputs": [1]})[1]["version"] == 1

    sm.update_endpoint_weights_and_capacities(EndpointName=name, DesiredWeightsAndCapacities=[
        {"VariantName": "AllTraffic", "DesiredInstanceCount": 1}])
    d = wait_endpoint(sm, name, statuses=("InService",))
    assert d["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    hosts = {invoke(runtime, name, {"inputs": [1]})[1]["host"] for _ in range(6)}
    assert len(hosts) == 1, "one instance is left after scaling in"


def sh_image(path, serve, binaries=()):
    """An image with the host's /bin/sh (and `binaries`) and their libraries; `serve` is
    its serve program, or no serve program when None."""
    import re
    import shutil
    import subprocess
    programs = ["/bin/sh"] + [shutil.which(b) for b in binaries]
    libs = set()
    for p in programs:
        out = subprocess.run(["ldd", p], capture_output=True, text=True, check=True).stdout
        libs.update(re.findall(r"(/\S+) \(0x", out))
    with tarfile.open(path, "w:gz", compresslevel=1) as t:
        for p in programs:
            t.add(os.path.realpath(p), arcname=p.lstrip("/"))
        for lib in libs:
            t.add(os.path.realpath(lib), arcname=lib.lstrip("/"))
        if serve is not None:
            info = tarfile.TarInfo("usr/local/bin/serve")
            info.size, info.mode = len(serve), 0o755
            t.addfile(info, io.BytesIO(serve.encode()))


def test_endpoints_whose_container_cannot_serve_fail_as_on_aws(cove_server, sm, models, endpoints, tmp_path):  # noqa: F811
    """A container that cannot start, or never answers /ping within the variant's
    ContainerStartupHealthCheckTimeoutInSeconds, fails the endpoint with AWS's
    message; Cove does not retry it."""
    import subprocess
    from conftest import BINARY
    cases = {"no-serve": None, "silent": "#!/bin/sh\nexec sleep 3600\n"}
    names = {}
    for case, serve in cases.items():
        image = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/{case}:1"
        tarball = tmp_path / f"{case}.tar.gz"
        sh_image(tarball, serve, binaries=("sleep",))
        subprocess.run([BINARY, "image-import", "--data-dir", cove_server.data_dir, image, str(tarball)],
                       check=True, capture_output=True)
        model = unique("model")
        sm.create_model(ModelName=model, ExecutionRoleArn=ROLE,
                        PrimaryContainer={"Image": image, "ModelDataUrl": models[1]})
        config = unique("config")
        sm.create_endpoint_config(EndpointConfigName=config, ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": model, "InstanceType": "ml.m5.large",
            "InitialInstanceCount": 1, "ContainerStartupHealthCheckTimeoutInSeconds": 60}])
        names[case] = unique(case)
        endpoints.append(names[case])
        sm.create_endpoint(EndpointName=names[case], EndpointConfigName=config)
    message = ("The primary container for production variant AllTraffic did not pass the ping health check. "
               "Please check CloudWatch logs for this endpoint.")
    started = time.time()
    d = wait_endpoint(sm, names["no-serve"], timeout=30)
    assert (d["EndpointStatus"], d["FailureReason"]) == ("Failed", message)
    assert time.time() - started < 30, "a container that cannot start fails at once"
    d = wait_endpoint(sm, names["silent"], timeout=90)
    assert (d["EndpointStatus"], d["FailureReason"]) == ("Failed", message)
    assert time.time() - started >= 55, "the container had its health-check window"
    time.sleep(2)
    assert sm.describe_endpoint(EndpointName=names["silent"])["EndpointStatus"] == "Failed"


def test_a_model_without_vpc_config_has_internet_access(cove_server, ec2, sm, runtime, models, endpoints):  # noqa: F811
    os.makedirs(os.path.join(cove_server.data_dir, "pypi"), exist_ok=True)
    name = unique("public")
    endpoints.append(name)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=create_config(sm, ("AllTraffic", create_model(sm, models[1]), 1, 1.0)))
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
    # SageMaker's network: an ENI with a public address in Cove's managed VPC for models.
    eni = next(e for e in ec2.describe_network_interfaces()["NetworkInterfaces"]
               if f"Endpoint {name} " in e["Description"])
    assert eni["RequesterManaged"] and eni["Association"]["PublicIp"]
    vpc = ec2.describe_vpcs(VpcIds=[eni["VpcId"]])["Vpcs"][0]
    assert {"Key": "cove:managed", "Value": "sagemaker-hosting"} in vpc["Tags"]
    _, out = invoke(runtime, name, {"get": "http://pypi.org/simple/"})
    assert out["get"] == 200, out
    _, out = invoke(runtime, name, {"inputs": [2]})
    assert out["outputs"] == [20]

    # Network isolation keeps such a model off every network, and makes no ENI.
    isolated = unique("public-isolated")
    endpoints.append(isolated)
    model = create_model(sm, models[1], isolated=True)
    sm.create_endpoint(EndpointName=isolated, EndpointConfigName=create_config(sm, ("AllTraffic", model, 1, 1.0)))
    assert wait_endpoint(sm, isolated)["EndpointStatus"] == "InService"
    _, out = invoke(runtime, isolated, {"get": "http://pypi.org/simple/"})
    assert out["get"].startswith("failed"), out
    assert not [e for e in ec2.describe_network_interfaces()["NetworkInterfaces"]
                if f"Endpoint {isolated} " in e["Description"]]


def test_a_variants_volume_size_is_each_instances_ml_storage_volume(cove_server, sm, runtime, models, endpoints):  # noqa: F811
    from test_isolation import volumes_of
    model = create_model(sm, models[1])
    config = unique("config")
    sm.create_endpoint_config(EndpointConfigName=config, ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": model, "InstanceType": "ml.m5.large", "InitialInstanceCount": 2,
         "VolumeSizeInGB": 1}])
    name = unique("volume")
    endpoints.append(name)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=config)
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
    assert invoke(runtime, name, {"inputs": [1]})[1]["version"] == 1
    # One loop-mounted volume per instance, under the endpoint's directory
    # on the instance's host.
    def volumes():
        return [v for d in cove_server.data_dirs() for v in volumes_of(d) if name in v]
    assert len(volumes()) == 2
    delete_endpoint(sm, name)
    assert eventually(lambda: not volumes(), timeout=20)


def test_deleting_an_endpoint_right_after_creating_it_leaves_no_failing_worker(cove_server, sm, models):  # noqa: F811
    model = create_model(sm, models[1])
    config = create_config(sm, ("a", model, 2, 1.0))
    name = unique("ep")
    log = open(cove_server.log_path).read()
    sm.create_endpoint(EndpointName=name, EndpointConfigName=config)
    delete_endpoint(sm, name)
    time.sleep(2)
    new_lines = open(cove_server.log_path).read()[len(log):]
    assert "vanished" not in new_lines and "step failed" not in new_lines, new_lines[-2000:]
    sm.delete_endpoint_config(EndpointConfigName=config)
    sm.delete_model(ModelName=model)
