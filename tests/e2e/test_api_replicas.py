"""API replicas (`cove serve --api-only`) beside the controller on one
PostgreSQL store: every replica serves the same account (EC2, CloudWatch
Logs, S3, the registry, SageMaker), races between replicas end as they would
on one server, a SageMaker job created on one replica runs on the controller
and is watched through another, and clients behind a load balancer keep
working when a replica is killed."""

import asyncio
import os
import signal
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import botocore.config
import botocore.exceptions
import pytest

from conftest import ACCESS_KEY, REGION, SECRET_KEY, Cove, drop_postgres_database, new_postgres_database
from test_training_jobs import model_of, subnet_with_s3_endpoint, training_bucket, training_request, wait_for

REPLICAS = 2


@pytest.fixture(scope="module")
def control_plane():
    """A controller and two API replicas on one new database, sharing the
    controller's data directory for S3 bodies and registry blobs; yields
    (controller, [replicas])."""
    url = new_postgres_database()
    with tempfile.TemporaryDirectory(prefix="cove-e2e-replicas-") as d:
        dirs = [os.path.join(d, name) for name in ("controller", *(f"replica-{i}" for i in range(REPLICAS)))]
        for path in dirs:
            os.mkdir(path, 0o700)
        controller = Cove(dirs[0], store=url).start()
        replicas = []
        try:
            for path in dirs[1:]:
                replicas.append(Cove(path, store=url, env={"COVE_API_ONLY": "true",
                                                           "COVE_SHARED_DIR": controller.data_dir}).start())
            yield controller, replicas
        finally:
            for server in [*replicas, controller]:
                server.stop(signal.SIGKILL)
            controller.teardown()
            drop_postgres_database(url)


def test_every_replica_serves_the_same_account(control_plane):
    controller, replicas = control_plane
    a, b = replicas
    # EC2: written on one replica, read on the others.
    ec2_a = a.client("ec2")
    vpc = ec2_a.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    ec2_a.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24")
    views = [s.client("ec2").describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
             for s in (controller, a, b)]
    assert views[0] == views[1] == views[2] and len(views[0]) == 1

    # CloudWatch Logs: events put through one replica are read through another.
    group = f"/replicas/{uuid.uuid4().hex[:8]}"
    logs_a, logs_b = a.client("logs"), b.client("logs")
    logs_a.create_log_group(logGroupName=group)
    logs_b.create_log_stream(logGroupName=group, logStreamName="s")
    now = int(time.time() * 1000)
    logs_a.put_log_events(logGroupName=group, logStreamName="s",
                          logEvents=[{"timestamp": now + i, "message": f"line {i}"} for i in range(50)])
    got = logs_b.get_log_events(logGroupName=group, logStreamName="s", startFromHead=True)["events"]
    assert [e["message"] for e in got] == [f"line {i}" for i in range(50)]
    filtered = controller.client("logs").filter_log_events(logGroupName=group, filterPattern='"line 7"')["events"]
    assert [e["message"] for e in filtered] == ["line 7"]
    with pytest.raises(botocore.exceptions.ClientError, match="ResourceAlreadyExistsException"):
        logs_b.create_log_group(logGroupName=group)

    # S3: a bucket made on one replica, objects (one multipart) written on
    # another, read and listed on all.
    bucket = f"replicas-{uuid.uuid4().hex[:8]}"
    s3_a, s3_b = a.client("s3"), b.client("s3")
    s3_b.create_bucket(Bucket=bucket)
    s3_a.put_object(Bucket=bucket, Key="small", Body=b"from a")
    upload = s3_b.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    part = os.urandom(5 * 1024 * 1024)
    etags = [s3_a.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=n, Body=part)["ETag"]
             for n in (1, 2)]
    s3_b.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=upload, MultipartUpload={
        "Parts": [{"ETag": e, "PartNumber": n} for n, e in zip((1, 2), etags)]})
    for server in (controller, a, b):
        s3 = server.client("s3")
        assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["big", "small"]
        assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == b"from a"
        assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == part * 2

    # The registry's control API.
    repo = f"replicas-{uuid.uuid4().hex[:8]}"
    a.client("ecr").create_repository(repositoryName=repo)
    assert [r["repositoryName"] for r in b.client("ecr").describe_repositories(repositoryNames=[repo])["repositories"]] \
        == [repo]


def test_replicas_racing_for_one_name_end_as_one_server_would(control_plane):
    _, replicas = control_plane
    group = f"/race/{uuid.uuid4().hex[:8]}"
    bucket = f"race-{uuid.uuid4().hex[:8]}"
    clients = [(r.client("logs"), r.client("s3")) for r in replicas for _ in range(4)]

    def create(pair):
        logs, s3 = pair
        outcome = []
        for call in (lambda: logs.create_log_group(logGroupName=group), lambda: s3.create_bucket(Bucket=bucket)):
            try:
                call()
                outcome.append("created")
            except botocore.exceptions.ClientError as e:
                outcome.append(e.response["Error"]["Code"])
        return outcome

    with ThreadPoolExecutor(len(clients)) as pool:
        outcomes = list(pool.map(create, clients))
    groups = sorted(o[0] for o in outcomes)
    assert groups == ["ResourceAlreadyExistsException"] * (len(clients) - 1) + ["created"], outcomes
    # A second CreateBucket of one's own bucket (us-east-1) succeeds, as on AWS.
    assert all(o[1] in ("created", "BucketAlreadyOwnedByYou") for o in outcomes), outcomes


def test_a_training_job_created_on_a_replica_runs_on_the_controller(control_plane):
    controller, (a, b) = control_plane
    net = subnet_with_s3_endpoint(a.client("ec2"))
    bucket = training_bucket(b.client("s3"))
    name = f"replica-{uuid.uuid4().hex[:8]}"
    req = training_request(name, bucket, net)
    a.client("sagemaker").create_training_job(**req)
    job = wait_for(b.client("sagemaker"), name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert model_of(a.client("s3"), bucket, name)["rows"] == 30
    streams = b.client("logs").describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                                    logStreamNamePrefix=name)["logStreams"]
    assert streams, "the job's log stream is served by every replica"


class RoundRobin:
    """A TCP load balancer on loopback: each connection goes to the next
    backend that accepts it, as a load balancer with health checks would
    after a backend died."""

    def __init__(self, backends):
        self.backends = list(backends)
        self.next = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(5)

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _accept(self, reader, writer):
        for _ in range(len(self.backends)):
            port = self.backends[self.next % len(self.backends)]
            self.next += 1
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        else:
            writer.close()
            return

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self):
        async def shut():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.loop.stop()

        asyncio.run_coroutine_threadsafe(shut(), self.loop)
        self.thread.join(5)
        self.loop.close()


def served_by(server, service, operation):
    """How many calls of `operation` `server` answered, from its /metrics."""
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0
    for line in text.splitlines():
        if line.startswith("cove_api_requests_total{") and all(
                f'{k}="{v}"' in line for k, v in (("service", service), ("operation", operation), ("code", "OK"))):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_clients_behind_a_load_balancer_survive_a_killed_replica(control_plane):
    controller, replicas = control_plane
    victim_dir = tempfile.TemporaryDirectory(prefix="cove-e2e-victim-")
    victim = Cove(victim_dir.name, store=controller.store,
                  env={"COVE_API_ONLY": "true", "COVE_SHARED_DIR": controller.data_dir}).start()
    lb = RoundRobin([victim.port, *(r.port for r in replicas)])
    try:
        config = botocore.config.Config(retries={"max_attempts": 5, "mode": "standard"})
        endpoint = f"http://127.0.0.1:{lb.port}"

        def client(service):
            return boto3.client(service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                                aws_secret_access_key=SECRET_KEY, config=config)

        logs, ec2, s3 = client("logs"), client("ec2"), client("s3")
        group = f"/lb/{uuid.uuid4().hex[:8]}"
        bucket = f"lb-{uuid.uuid4().hex[:8]}"
        logs.create_log_group(logGroupName=group)
        logs.create_log_stream(logGroupName=group, logStreamName="s")
        s3.create_bucket(Bucket=bucket)
        vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
        start = int(time.time() * 1000)
        for i in range(40):
            if i == 15:
                # The victim was serving this client's calls (the first
                # connection through the balancer went to it).
                assert served_by(victim, "logs", "PutLogEvents") == 15
                victim.stop(signal.SIGKILL)
            logs.put_log_events(logGroupName=group, logStreamName="s",
                                logEvents=[{"timestamp": start + i, "message": f"event {i}"}])
            s3.put_object(Bucket=bucket, Key=f"k/{i:03}", Body=str(i).encode())
            ec2.create_tags(Resources=[vpc], Tags=[{"Key": f"t{i}", "Value": str(i)}])
        # Every acknowledged write is there, read through a surviving replica.
        survivor = replicas[0]
        events = survivor.client("logs").get_log_events(logGroupName=group, logStreamName="s",
                                                        startFromHead=True)["events"]
        assert [e["message"] for e in events] == [f"event {i}" for i in range(40)]
        keys = [o["Key"] for o in survivor.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
        assert keys == [f"k/{i:03}" for i in range(40)]
        tags = survivor.client("ec2").describe_tags(Filters=[{"Name": "resource-id", "Values": [vpc]}])["Tags"]
        assert len(tags) == 40
    finally:
        lb.close()
        victim.stop(signal.SIGKILL)
        victim_dir.cleanup()


def test_an_endpoint_made_through_replicas_answers_invocations_on_every_server(control_plane):
    from test_hosting import create_config, create_model, invoke, model_archive, wait_endpoint
    controller, (a, b) = control_plane
    net = subnet_with_s3_endpoint(a.client("ec2"))
    bucket = f"replica-models-{uuid.uuid4().hex[:8]}"
    b.client("s3").create_bucket(Bucket=bucket)
    a.client("s3").put_object(Bucket=bucket, Key="m/model.tar.gz", Body=model_archive(1, 10))
    model = create_model(a.client("sagemaker"), f"s3://{bucket}/m/model.tar.gz", net)
    config = create_config(b.client("sagemaker"), ("AllTraffic", model, 1, 1.0))
    name = f"replicas-{uuid.uuid4().hex[:8]}"
    a.client("sagemaker").create_endpoint(EndpointName=name, EndpointConfigName=config)
    try:
        described = wait_endpoint(b.client("sagemaker"), name)
        assert described["EndpointStatus"] == "InService", described.get("FailureReason")
        for server in (controller, a, b):
            _, out = invoke(server.client("sagemaker-runtime"), name, {"inputs": [1, 2]})
            assert out["outputs"] == [10, 20], server.endpoint
    finally:
        b.client("sagemaker").delete_endpoint(EndpointName=name)
