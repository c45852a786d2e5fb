#!/usr/bin/env python3
"""Cove over three simulated hosts (run as root, from the repository, with a
PostgreSQL server: COVE_TEST_POSTGRES or --postgres; `bash
scripts/test-postgres.sh` starts one).

Each run builds the simulation of tests/e2e/simulated_hosts.py on a new
database: `cove serve --store postgres://…` as the control plane's host
("cp", 198.51.100.1) and two `cove agent`s ("b", "c") in namespaces of their
own on a bridge underlay. Then, side by side in the same run:

1. Security-group change → enforced, on the same host vs on a remote one.
   A client ENI on cp probes two server ENIs, one on cp and one on agent b,
   each behind a group of its own (the prober and the method are
   bench/sg_change.py's: a new TCP connection every millisecond, latency
   from the API call returning to the first connection the change decides).
   On cp the change is applied by the control plane's own reconciler; on b
   it travels the store's change feed (PostgreSQL NOTIFY) to the agent,
   whose reconciler applies it. Trials alternate between the two servers.

2. ENIs at scale: `--enis` ENIs (default 999) spread round-robin over the
   three hosts with the `cove:host` tag (8 client threads), timed from the
   first CreateNetworkInterface to the moment every host has plumbed its
   share (its ENI namespaces all exist); and one more ENI on agent b, from
   its CreateNetworkInterface returning to its namespace being published
   on b (the data plane publishes it once the ENI is whole), with the VPC
   empty and then with the ENIs in it (`--trials` times each): the agent's
   work for one new ENI should not grow with the VPC.

3. Training jobs across hosts: a script-mode job of `--job-instances`
   instances (default 3; each reads a 1 MB channel through its ENI and the
   S3 gateway endpoint, then every instance but the first connects to the
   first over TCP), timed from CreateTrainingJob returning to the job being
   Completed, `--jobs` times: on the three
   hosts with the instances spread (the control plane places them), and,
   alternating with it, on a single-host `cove serve` on a database of its
   own on the same PostgreSQL server.

4. InvokeEndpoint to an instance on the control plane's host vs on an
   agent's: three one-instance endpoints of bench/hosting.py's model are
   made one after the other, so the placement puts them on b, c and cp
   (read back from the hosts' logs); `cove-invoke-bench` (a closed-loop
   client, SigV4-signed, one connection per client) then calls the one on
   cp (the runtime front reaches the container from inside its namespace)
   and the one on b (through b's serving relay over the underlay),
   alternating, `--invoke-seconds` each, at 1 and 16 clients.

5. Images from Cove's registry on agents: an image of `--image-mib` MiB
   (the host's /bin/sh and a `train` program, plus one incompressible
   file; an uncompressed layer) is pushed with `cove image-import`, then a
   job of three instances (one per host) runs it twice: cold (each agent
   pulls the image from the control plane's registry over the underlay and
   unpacks it; the control plane's instance unpacks it from its registry)
   and warm (every host has it unpacked), create→Completed; each agent's
   pull throughput (bytes and seconds from its log), beside a plain copy
   of the same layer file on this disk. `--image-jobs` images per run.

Usage:
  .venv/bin/python bench/scale_out.py [--cove target/release/cove] [--runs 3] [--trials 30] [--enis 999] [--jobs 5]
      [--invoke-seconds 5] [--image-jobs 2] [--image-mib 256]
"""
import argparse
import concurrent.futures
import io
import os
import statistics
import subprocess
import sys
import time
import uuid

import json
import shutil

import botocore.config

from common import ROOT, clients, cove_server, pct, script_job, settle, source_tarball
from hosting import serving_model
from sg_change import PORT, PROBER, SERVER, start_in_eni

sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from simulated_hosts import CONTROL_PLANE, Simulation  # noqa: E402

AGENT = "b"


def psql(server, sql):
    subprocess.run(["psql", "-q", server, "-c", sql], check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def eni(ec2, subnet, host, groups=None):
    # Tagged even for the control plane's host: the server spreads what no tag places.
    tags = [{"ResourceType": "network-interface", "Tags": [{"Key": "cove:host", "Value": host}]}]
    return ec2.create_network_interface(SubnetId=subnet, Groups=groups or [], TagSpecifications=tags)[
        "NetworkInterface"]


def instance_of(log_path, marker):
    with open(log_path) as f:
        for line in f:
            if marker in line and "instance=" in line:
                return line.split("instance=")[1].split()[0]
    raise RuntimeError(f"no instance tag in {log_path}")


def eni_namespaces(instance):
    prefix = f"cove-{instance}-eni-"
    return sum(1 for n in os.listdir("/run/netns") if n.startswith(prefix))


def sg_latency(args, cove_bin, endpoint, dirs, ec2, procs):
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    sub_server = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    sub_client = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24")["Subnet"]["SubnetId"]
    client_sg = ec2.create_security_group(GroupName="client", Description="client", VpcId=vpc)["GroupId"]
    client = eni(ec2, sub_client, CONTROL_PLANE, [client_sg])
    servers = {}
    for where, host in (("same host", CONTROL_PLANE), ("across hosts", AGENT)):
        sg = ec2.create_security_group(GroupName=f"server-{host}", Description="server", VpcId=vpc)["GroupId"]
        s = eni(ec2, sub_server, host, [sg])
        start_in_eni(cove_bin, dirs[host], s["NetworkInterfaceId"], ["python3", "-c", SERVER], "listening", procs)
        prober = start_in_eni(
            cove_bin, dirs[CONTROL_PLANE], client["NetworkInterfaceId"],
            ["python3", "-u", "-c", PROBER, s["PrivateIpAddress"], str(PORT), str(args.probe_timeout_ms / 1000),
             str(args.probe_interval_ms / 1000), "30"], "ready", procs)
        prober.send("check")
        assert prober.event(5)["open"] is False, f"{where}: port {PORT} open before any rule allows it"
        servers[where] = (sg, prober)
    perm = [{"IpProtocol": "tcp", "FromPort": PORT, "ToPort": PORT, "UserIdGroupPairs": [{"GroupId": client_sg}]}]

    def change(where, authorize):
        sg, prober = servers[where]
        settle(endpoint)
        prober.send("until_open" if authorize else "until_closed")
        ev = prober.event(10)
        if ev["event"] != "probing":
            raise RuntimeError(f"{where}: {'closed' if authorize else 'open'} expected before the change: {ev}")
        call = ec2.authorize_security_group_ingress if authorize else ec2.revoke_security_group_ingress
        call(GroupId=sg, IpPermissions=perm)
        t0 = time.monotonic()
        ev = prober.event(40)
        if ev["event"] not in ("open", "closed"):
            raise RuntimeError(f"{where}: the change was never enforced: {ev}")
        return max(0.0, (ev["t"] - t0) * 1000)

    for where in servers:  # warm-up
        change(where, True), change(where, False)
    out = {where: {"auth": [], "revoke": []} for where in servers}
    for _ in range(args.trials):
        for where in servers:
            out[where]["auth"].append(change(where, True))
            out[where]["revoke"].append(change(where, False))
    for _, prober in servers.values():
        prober.send("quit")
    return out


def usable_on_agent(cove_bin, agent_dir, agent_instance, ec2, subnet):
    """CreateNetworkInterface on the agent's host → its namespace published
    there (the data plane publishes it once the ENI is whole), in ms; then
    checked with `cove exec` (not timed)."""
    t0 = time.monotonic()
    e = eni(ec2, subnet, AGENT)
    path = os.path.join("/run/netns", f"cove-{agent_instance}-eni-{e['NetworkInterfaceId'][-12:]}")
    while not os.path.exists(path):
        if time.monotonic() - t0 > 30:
            raise RuntimeError(f"{e['NetworkInterfaceId']} never plumbed on {AGENT}")
        time.sleep(0.0005)
    took = (time.monotonic() - t0) * 1000
    r = subprocess.run([cove_bin, "exec", "--data-dir", agent_dir, "--eni", e["NetworkInterfaceId"], "--", "true"],
                       stdin=subprocess.DEVNULL, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"{e['NetworkInterfaceId']} not usable on {AGENT}: {r.stderr[-300:]}")
    return took


def at_scale(args, cove_bin, dirs, instances, ec2):
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.0.0/20")["Subnet"]["SubnetId"]
    probe_subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.16.0/24")["Subnet"]["SubnetId"]
    empty = [usable_on_agent(cove_bin, dirs[AGENT], instances[AGENT], ec2, probe_subnet) for _ in range(args.trials)]
    hosts = list(dirs)
    before = {h: eni_namespaces(instances[h]) for h in hosts}
    want = {h: before[h] + len(range(i, args.enis, len(hosts))) for i, h in enumerate(hosts)}
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: eni(ec2, subnet, hosts[i % len(hosts)]), range(args.enis)))
    created_s = time.monotonic() - t0
    plumbed = {}
    while len(plumbed) < len(hosts):
        for h in hosts:
            if h not in plumbed and eni_namespaces(instances[h]) >= want[h]:
                plumbed[h] = time.monotonic() - t0
        if time.monotonic() - t0 > 600:
            raise RuntimeError(f"not plumbed in 600 s: {({h: eni_namespaces(instances[h]) for h in hosts})} of {want}")
        time.sleep(0.02)
    loaded = [usable_on_agent(cove_bin, dirs[AGENT], instances[AGENT], ec2, probe_subnet) for _ in range(args.trials)]
    return {"created_s": created_s, "plumbed": plumbed, "empty": empty, "loaded": loaded}


JOB_PROGRAM = r'''
import json, os, socket, time
host, hosts = os.environ["SM_CURRENT_HOST"], json.loads(os.environ["SM_HOSTS"])
if host == hosts[0]:
    server = socket.socket()
    server.bind(("0.0.0.0", 7000))
    server.listen(16)
    for _ in hosts[1:]:
        server.accept()[0].recv(16)
    open(os.path.join(os.environ["SM_MODEL_DIR"], "done"), "w").write("ok")
else:
    while True:
        try:
            socket.create_connection(("algo-1", 7000), timeout=1).sendall(b"hi")
            break
        except OSError:
            time.sleep(0.05)
'''


def job_setup(endpoint, cfg):
    """A VPC with a private subnet, a group admitting its members, an S3
    gateway endpoint, and a bucket with the program and a 1 MB channel."""
    make = clients(endpoint, cfg)
    ec2, s3 = make("ec2"), make("s3")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="job", Description="job", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": sg}]}])
    rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
    ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.us-east-1.s3", RouteTableIds=[rt])
    bucket = f"bench-{os.getpid()}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=source_tarball(JOB_PROGRAM))
    s3.put_object(Bucket=bucket, Key="data/train/part.bin", Body=os.urandom(1 << 20))
    return make("sagemaker"), s3, {"Subnets": [subnet], "SecurityGroupIds": [sg]}, bucket


def one_job(setup, instances):
    """Seconds from CreateTrainingJob returning to the job being Completed."""
    sm, s3, vpc_config, bucket = setup
    name = f"bench-{uuid.uuid4().hex[:10]}"
    started = time.monotonic()
    sm.create_training_job(**script_job(name, bucket, vpc_config, instances))
    while True:
        d = sm.describe_training_job(TrainingJobName=name)
        if d["TrainingJobStatus"] == "Completed":
            break
        if d["TrainingJobStatus"] in ("Failed", "Stopped") or time.monotonic() - started > 300:
            raise RuntimeError(f"{name}: {d['TrainingJobStatus']} {d.get('FailureReason')}")
        time.sleep(0.05)
    return time.monotonic() - started


def jobs_side_by_side(args, cove_bin, spread_endpoint, cfg):
    """Alternating jobs on the three hosts and on a single-host server."""
    database = f"cove_bench_single_{os.getpid()}"
    psql(args.postgres, f"DROP DATABASE IF EXISTS {database}")
    psql(args.postgres, f"CREATE DATABASE {database}")
    url = args.postgres.rsplit("/", 1)[0] + "/" + database
    try:
        with cove_server(cove_bin, "cove-bench-single-", env={"COVE_STORE": url}) as (single_endpoint, _, _):
            setups = {"one host": job_setup(single_endpoint, cfg), "three hosts": job_setup(spread_endpoint, cfg)}
            times = {where: [] for where in setups}
            for _ in range(args.jobs):
                for where, setup in setups.items():
                    times[where].append(one_job(setup, args.job_instances))
            return times
    finally:
        psql(args.postgres, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


IMAGE_TRAIN = "#!/bin/sh\necho pulled image ran\n"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def image_layer(path, mib):
    """An uncompressed root filesystem layer: /bin/sh with its libraries, a
    `train` program and `mib` MiB of random bytes."""
    import re
    import tarfile
    out = subprocess.run(["ldd", "/bin/sh"], capture_output=True, text=True, check=True).stdout
    with tarfile.open(path, "w") as t:
        t.add(os.path.realpath("/bin/sh"), arcname="bin/sh")
        for lib in re.findall(r"(/\S+) \(0x", out):
            t.add(os.path.realpath(lib), arcname=lib.lstrip("/"))
        for name, body, mode in (("usr/local/bin/train", IMAGE_TRAIN.encode(), 0o755),):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), mode
            t.addfile(info, io.BytesIO(body))
        payload = path + ".payload"
        with open(payload, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
        t.add(payload, arcname="opt/payload.bin")
        os.unlink(payload)


def agent_pulls(log_paths, image):
    """(bytes, seconds) of each agent's pull of `image`, from its log."""
    found = []
    for host, path in log_paths.items():
        if host == CONTROL_PLANE:
            continue
        with open(path) as f:
            for line in f:
                if "pulled the image from the control plane" in line and f"image={image} " in line:
                    fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
                    found.append((int(fields["bytes"]), float(fields["seconds"])))
    return found


def image_jobs(args, cove_bin, endpoint, cfg, data, log_paths):
    """Cold and warm runs of a registry image's job over the three hosts."""
    make = clients(endpoint, cfg)
    sm, ec2 = make("sagemaker"), make("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.10.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.10.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="job", Description="job", VpcId=vpc)["GroupId"]
    rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
    ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.us-east-1.s3", RouteTableIds=[rt])
    bucket = f"bench-image-{os.getpid()}"
    make("s3").create_bucket(Bucket=bucket)
    out = {"cold": [], "warm": [], "pull_mbps": [], "copy_mbps": []}
    for n in range(args.image_jobs):
        layer = os.path.join(data, f"bench-layer-{n}.tar")
        image_layer(layer, args.image_mib)
        image = f"{REGISTRY}/bench-image:{uuid.uuid4().hex[:8]}"
        subprocess.run([cove_bin, "image-import", "--data-dir", data, image, layer], check=True,
                       capture_output=True, stdin=subprocess.DEVNULL)
        started = time.monotonic()
        with open(layer, "rb") as src, open(layer + ".copy", "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        copied = time.monotonic() - started
        out["copy_mbps"].append(os.path.getsize(layer) / copied / 1e6)
        os.unlink(layer + ".copy")
        os.unlink(layer)
        for kind in ("cold", "warm"):
            name = f"bench-image-{uuid.uuid4().hex[:8]}"
            started = time.monotonic()
            sm.create_training_job(
                TrainingJobName=name, RoleArn="arn:aws:iam::123456789012:role/Bench",
                AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File"},
                OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"},
                ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 3, "VolumeSizeInGB": 1},
                StoppingCondition={"MaxRuntimeInSeconds": 600},
                VpcConfig={"Subnets": [subnet], "SecurityGroupIds": [sg]})
            while (d := sm.describe_training_job(TrainingJobName=name))["TrainingJobStatus"] == "InProgress":
                if time.monotonic() - started > 600:
                    raise RuntimeError(f"{name} did not finish")
                time.sleep(0.05)
            if d["TrainingJobStatus"] != "Completed":
                raise RuntimeError(f"{name}: {d['TrainingJobStatus']} {d.get('FailureReason')}")
            out[kind].append(time.monotonic() - started)
        pulls = agent_pulls(log_paths, image)
        if len(pulls) != 2:
            raise RuntimeError(f"expected a pull on each agent, found {pulls}")
        out["pull_mbps"] += [b / s / 1e6 for b, s in pulls]
    return out


def serving_hosts(log_paths):
    """The host of each endpoint instance in service, from the hosts' logs."""
    found = {}
    for host, path in log_paths.items():
        with open(path) as f:
            for line in f:
                if "instance in service" in line:
                    owner = line.split("owner=")[1].split()[0]
                    found[owner] = host
    return found


def invoke_side_by_side(args, endpoint, cfg, log_paths):
    """InvokeEndpoint latency and throughput: an instance on cp vs on b."""
    make = clients(endpoint, cfg)
    sm = make("sagemaker")
    serving_model(make, "10.8.0.0/16", "ml.m5.large")
    for n in range(3):
        sm.create_endpoint(EndpointName=f"bench-{n}", EndpointConfigName="bench")
        while (status := sm.describe_endpoint(EndpointName=f"bench-{n}")["EndpointStatus"]) == "Creating":
            time.sleep(0.1)
        assert status == "InService", sm.describe_endpoint(EndpointName=f"bench-{n}").get("FailureReason")
    placed = {host: name for name, host in serving_hosts(log_paths).items()}
    assert CONTROL_PLANE in placed and AGENT in placed, placed
    paths = {"same host": placed[CONTROL_PLANE], "across hosts": placed[AGENT]}
    results = {}
    for _ in range(2):
        for concurrency in (1, 16):
            for where, name in paths.items():
                out = subprocess.run(
                    [args.load_bin, "--sign", "--url", f"{endpoint}/endpoints/{name}/invocations",
                     "--concurrency", str(concurrency), "--seconds", str(args.invoke_seconds / 2)],
                    capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                assert r["errors"] == 0, r
                results.setdefault((where, concurrency), []).append(r)
    # The two halves of each cell, merged: medians of the halves' figures.
    return {key: {k: statistics.median(r[k] for r in rs) for k in ("p50_us", "p99_us", "rps")}
            for key, rs in results.items()}


def one_run(args, cove_bin, run):
    database = f"cove_bench_scale_{os.getpid()}_{run}"
    psql(args.postgres, f"DROP DATABASE IF EXISTS {database}")
    psql(args.postgres, f"CREATE DATABASE {database}")
    url = args.postgres.rsplit("/", 1)[0] + "/" + database
    simulation = Simulation(cove_bin, url)
    procs = []
    cfg = botocore.config.Config(retries={"max_attempts": 1}, max_pool_connections=16)
    try:
        simulation.up()
        env = {"COVE_STORE": url, "COVE_ENI_PLACEMENT": "spread", **simulation.serve_env()}
        with cove_server(cove_bin, "cove-bench-scale-", env=env) as (
                endpoint, data, _):
            try:
                agents = simulation.start_agents()
                deadline = time.monotonic() + 20
                while any(a.instance() is None for a in agents.values()):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the agents did not register: " + agents[AGENT].log()[-2000:])
                    time.sleep(0.05)
                dirs = {CONTROL_PLANE: data, **{h: a.data_dir for h, a in agents.items()}}
                instances = {CONTROL_PLANE: instance_of(os.path.join(data, "cove.log"), "data plane on"),
                             **{h: a.instance() for h, a in agents.items()}}
                ec2 = clients(endpoint, cfg)("ec2")
                sg = sg_latency(args, cove_bin, endpoint, dirs, ec2, procs)
                jobs = jobs_side_by_side(args, cove_bin, endpoint, cfg) if args.jobs else None
                scale = at_scale(args, cove_bin, dirs, instances, ec2) if args.enis else None
                logs = {CONTROL_PLANE: os.path.join(data, "cove.log"),
                        **{h: a.log_path for h, a in agents.items()}}
                invoke = invoke_side_by_side(args, endpoint, cfg, logs) if args.invoke_seconds else None
                images = image_jobs(args, cove_bin, endpoint, cfg, data, logs) if args.image_jobs else None
                return sg, scale, jobs, invoke, images
            finally:
                for p in procs:
                    p.kill()
                simulation.down()
    finally:
        simulation.down()
        psql(args.postgres, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cove", default=os.path.join(ROOT, "target/release/cove"))
    ap.add_argument("--postgres", default=os.environ.get("COVE_TEST_POSTGRES"),
                    help="a PostgreSQL server URL whose role may create databases")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--enis", type=int, default=999, help="ENIs spread over the three hosts (0: skip)")
    ap.add_argument("--jobs", type=int, default=5, help="training jobs per setup (0: skip)")
    ap.add_argument("--job-instances", type=int, default=3)
    ap.add_argument("--probe-interval-ms", type=float, default=1.0)
    ap.add_argument("--probe-timeout-ms", type=float, default=5.0)
    ap.add_argument("--invoke-seconds", type=float, default=5.0, help="per InvokeEndpoint cell (0: skip)")
    ap.add_argument("--load-bin", default=os.path.join(ROOT, "target/release/cove-invoke-bench"))
    ap.add_argument("--image-jobs", type=int, default=2, help="registry images per run, each run cold and warm (0: skip)")
    ap.add_argument("--image-mib", type=int, default=256)
    args = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("run as root: the data plane needs network namespaces and nftables")
    if not args.postgres:
        ap.error("give --postgres (or COVE_TEST_POSTGRES): `bash scripts/test-postgres.sh` starts one")
    sg_rows, scale_rows, job_rows, invoke_rows, image_rows = [], [], [], [], []
    print("## Per run (times in ms unless marked s)\n")
    for run in range(args.runs):
        sg, scale, jobs, invoke, images = one_run(args, args.cove, run)
        if images:
            row = {k: statistics.median(v) for k, v in images.items()}
            image_rows.append(row)
            print(f"run {run + 1} {args.image_mib} MiB registry image, job of 3 instances (s): "
                  f"cold {row['cold']:.2f} warm {row['warm']:.2f}; agent pull {row['pull_mbps']:.0f} MB/s, "
                  f"disk copy {row['copy_mbps']:.0f} MB/s")
        if invoke:
            invoke_rows.append(invoke)
            for (where, concurrency), r in sorted(invoke.items()):
                print(f"run {run + 1} InvokeEndpoint {where}, {concurrency} client(s): p50 {r['p50_us']:.0f} µs "
                      f"p99 {r['p99_us']:.0f} µs {r['rps']:.0f} req/s")
        if jobs:
            job_rows.append({where: statistics.median(t) for where, t in jobs.items()})
            print(f"run {run + 1} training jobs of {args.job_instances} instances, create→Completed median (s): "
                  + ", ".join(f"{where} {statistics.median(t):.2f}" for where, t in jobs.items()))
        for where, r in sg.items():
            row = (where, pct(r["auth"], 50), pct(r["auth"], 99), pct(r["revoke"], 50), pct(r["revoke"], 99))
            sg_rows.append(row)
            print(f"run {run + 1} SG change {where}: authorize p50 {row[1]:.1f} p99 {row[2]:.1f}, "
                  f"revoke p50 {row[3]:.1f} p99 {row[4]:.1f}")
        if scale:
            row = (scale["created_s"], *(scale["plumbed"][h] for h in sorted(scale["plumbed"])),
                   pct(scale["empty"], 50), pct(scale["empty"], 99), pct(scale["loaded"], 50), pct(scale["loaded"], 99))
            scale_rows.append(row)
            print(f"run {run + 1} {args.enis} ENIs: created in {row[0]:.1f} s; plumbed (s) "
                  f"{dict((h, round(v, 1)) for h, v in sorted(scale['plumbed'].items()))}; one more on {AGENT}: "
                  f"empty p50 {row[4]:.0f} p99 {row[5]:.0f}, loaded p50 {row[6]:.0f} p99 {row[7]:.0f}")
        sys.stdout.flush()
    med = lambda xs: statistics.median(xs)  # noqa: E731
    print(f"\n## Medians of {args.runs} runs\n")
    print("| SG rule change enforced | authorize→accepted p50 | p99 | revoke→refused p50 | p99 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for where in ("same host", "across hosts"):
        rows = [r for r in sg_rows if r[0] == where]
        print(f"| {where} | " + " | ".join(f"{med([r[i] for r in rows]):.1f}" for i in range(1, 5)) + " |")
    if job_rows:
        print(f"\n| Training job, {args.job_instances} instances, create→Completed (s) | one host | three hosts |")
        print("| --- | ---: | ---: |")
        print(f"| median of {args.jobs} jobs, median of runs | {med([r['one host'] for r in job_rows]):.2f} | "
              f"{med([r['three hosts'] for r in job_rows]):.2f} |")
    if scale_rows:
        hosts = sorted(scale["plumbed"])
        print(f"\n| {args.enis} ENIs over 3 hosts | created (s) | " + " | ".join(f"all plumbed on {h} (s)" for h in hosts)
              + f" | one more on {AGENT}, VPC empty: p50 | p99 | with the ENIs: p50 | p99 |")
        print("| --- |" + " ---: |" * (len(hosts) + 5))
        print("| median | " + " | ".join(f"{med([r[i] for r in scale_rows]):.1f}" for i in range(len(scale_rows[0]))) + " |")
    if image_rows:
        print(f"\n| {args.image_mib} MiB image from Cove's registry | job create→Completed, cold (s) | warm (s) "
              "| agent pull over the underlay (MB/s) | disk copy of the layer (MB/s) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        print("| median of runs | " + " | ".join(
            f"{med([r[k] for r in image_rows]):.{2 if k in ('cold', 'warm') else 0}f}"
            for k in ("cold", "warm", "pull_mbps", "copy_mbps")) + " |")
    if invoke_rows:
        print("\n| InvokeEndpoint, instance on | clients | p50 (µs) | p99 (µs) | req/s |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for concurrency in (1, 16):
            for where in ("same host", "across hosts"):
                rs = [r[(where, concurrency)] for r in invoke_rows]
                label = "the control plane's host" if where == "same host" else f"agent {AGENT} (relay)"
                print(f"| {label} | {concurrency} | {med([r['p50_us'] for r in rs]):.0f} | "
                      f"{med([r['p99_us'] for r in rs]):.0f} | {med([r['rps'] for r in rs]):.0f} |")


if __name__ == "__main__":
    main()
