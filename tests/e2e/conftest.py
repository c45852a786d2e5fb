"""Fixtures for Cove's end-to-end tests: a real `cove serve` process on a free
loopback port with its own data directory, and real boto3 clients for it."""

import itertools
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import boto3
import botocore.config
import pytest

from helpers import wait_status
from simulated_hosts import Simulation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("COVE_BIN", os.path.join(ROOT, "target", "debug", "cove"))
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
REGION = "us-east-1"
# COVE_E2E_HOSTS=3: every server is the control plane of three simulated
# hosts (simulated_hosts.py) on a PostgreSQL database of its own, and spreads
# the ENIs that CreateNetworkInterface makes over them.
SPREAD_OVER_HOSTS = os.environ.get("COVE_E2E_HOSTS") == "3"
# What the simulated hosts' agents are given, as the tests' servers are
# (Cove.start): flow-log windows of 2 s and 2 s between SIGTERM and SIGKILL.
AGENT_ENV = {"COVE_FLOW_LOG_WINDOW": "2", "COVE_JOB_STOP_GRACE": "2"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_databases = itertools.count()


def new_postgres_database(server=None):
    """A new, empty database on the test PostgreSQL server
    (COVE_TEST_POSTGRES, see scripts/test-postgres.sh); returns its URL."""
    server = server or os.environ.get("COVE_TEST_POSTGRES")
    if not server:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL store's tests: set COVE_TEST_POSTGRES")
        pytest.skip("COVE_TEST_POSTGRES is not set")
    name = f"cove_e2e_{os.getpid()}_{next(_databases)}"
    subprocess.run(["psql", "-q", server, "-c", f"DROP DATABASE IF EXISTS {name}", "-c", f"CREATE DATABASE {name}"],
                   check=True, stdin=subprocess.DEVNULL)
    return server.rsplit("/", 1)[0] + "/" + name


def drop_postgres_database(url):
    server, name = os.environ["COVE_TEST_POSTGRES"], url.rsplit("/", 1)[1]
    subprocess.run(["psql", "-q", server, "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Cove:
    """One running `cove serve`; restartable on the same data directory.
    Its store is SQLite in the data directory, or a new PostgreSQL database
    when COVE_E2E_STORE=postgres (the whole suite then runs on PostgreSQL;
    dropped at teardown) or `store` names one."""

    def __init__(self, data_dir, env=None, store=None):
        self.data_dir = data_dir
        self.env = env or {}
        # A database made here is this server's to drop at teardown.
        self.own_database = store is None and (os.environ.get("COVE_E2E_STORE") == "postgres" or SPREAD_OVER_HOSTS)
        self.store = new_postgres_database() if self.own_database else store
        self.simulation = None
        if SPREAD_OVER_HOSTS and self.own_database:
            # What configures the hosts' workloads goes to every host.
            per_host = {k: v for k, v in self.env.items() if k == "COVE_STUDIO_APP_COMMAND"}
            self.simulation = Simulation(BINARY, self.store, agent_env={**AGENT_ENV, **per_host})
            self.env = {**self.simulation.serve_env(), "COVE_ENI_PLACEMENT": "spread", **self.env}
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.log_path = os.path.join(data_dir, "cove.log")

    def start(self):
        if self.simulation and not self.simulation.relays:
            self.simulation.up()
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [BINARY, "serve", "--data-dir", self.data_dir, "--listen", f"127.0.0.1:{self.port}",
             *(["--store", self.store] if self.store else [])],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            # Flow-log windows of 2 s instead of 60/600, so tests read records quickly.
            # Jobs get 2 s between SIGTERM and SIGKILL instead of AWS's 120, and
            # InvokeEndpoint waits 3 s for a model instead of 60.
            env={**os.environ, "COVE_FLOW_LOG_WINDOW": "2", "COVE_JOB_STOP_GRACE": "2",
                 "COVE_INVOKE_TIMEOUT": "3", **self.env},
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cove exited early:\n{open(self.log_path).read()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/_cove/health", timeout=1) as r:
                    if r.status == 200:
                        return self.with_agents()
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("cove did not become healthy in 20 s")

    def with_agents(self):
        """Starts the simulation's agents (once) and waits until all three
        hosts are registered."""
        if not self.simulation or self.simulation.agents:
            return self
        self.simulation.start_agents()
        deadline = time.time() + 20
        while time.time() < deadline:
            with urllib.request.urlopen(f"{self.endpoint}/_cove/health", timeout=5) as r:
                hosts = json.load(r)["components"]["hosts"]
            if len(hosts) == len(self.simulation.hosts):
                return self
            time.sleep(0.1)
        raise RuntimeError("the simulated hosts' agents did not register in 20 s")

    def data_dirs(self):
        """The data directories of every host: this server's, and with
        COVE_E2E_HOSTS=3 its agents'."""
        agents = self.simulation.agents.values() if self.simulation else []
        return [self.data_dir, *(a.data_dir for a in agents)]

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def teardown(self):
        """Removes the kernel objects this server made (kept across restarts)."""
        if self.simulation:
            self.simulation.down()
        subprocess.run([BINARY, "teardown", "--data-dir", self.data_dir], check=True,
                       stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        if self.own_database:
            drop_postgres_database(self.store)

    # The tests run the test runner's Python inside ENIs, and it may live
    # where the unprivileged default user cannot reach (pyenv under /root):
    # their commands run with `--privileged` unless a test asks otherwise.
    def exec(self, eni, *command, timeout=20, privileged=True):
        """Runs a command attached to an ENI (`cove exec`)."""
        flags = ["--privileged"] if privileged else []
        return subprocess.run([BINARY, "exec", "--data-dir", self.data_dir, "--eni", eni, *flags, "--", *command],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def spawn(self, eni, *command, privileged=True):
        """Starts a command attached to an ENI, or on the internet host when `eni` is None."""
        where = ["--eni", eni] if eni else ["--internet"]
        flags = ["--privileged"] if privileged else []
        return subprocess.Popen([BINARY, "exec", "--data-dir", self.data_dir, *where, *flags, "--", *command],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def client(self, service, region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY, **kw):
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=botocore.config.Config(retries={"max_attempts": 1}, **kw),
        )


@pytest.fixture(scope="session")
def cove_server():
    if not os.path.exists(BINARY):
        pytest.fail(f"{BINARY} not built: run `cargo build -p cove` first")
    with tempfile.TemporaryDirectory(prefix="cove-e2e-") as d:
        server = Cove(d).start()
        yield server
        server.stop()
        server.teardown()


@pytest.fixture
def fresh_cove():
    """A private server for tests that restart or break it."""
    with tempfile.TemporaryDirectory(prefix="cove-e2e-") as d:
        server = Cove(d).start()
        yield server
        server.stop(signal.SIGKILL)
        server.teardown()


@pytest.fixture(scope="session")
def ec2(cove_server):
    return cove_server.client("ec2")


@pytest.fixture
def vpc(ec2):
    """A fresh VPC, deleted with everything in it after the test."""
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    yield vpc_id
    teardown_vpc(ec2, vpc_id)


def nat_gateway(ec2, vpc_id, public_subnet):
    """Makes `public_subnet` public (internet gateway, default route) and puts an
    available NAT gateway with an Elastic IP in it; returns (nat id, address)."""
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    public_rt = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=public_rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    ec2.associate_route_table(RouteTableId=public_rt, SubnetId=public_subnet)
    eip = ec2.allocate_address()
    nat = ec2.create_nat_gateway(SubnetId=public_subnet, AllocationId=eip["AllocationId"])["NatGateway"]["NatGatewayId"]
    wait_status(lambda: ec2.describe_nat_gateways(NatGatewayIds=[nat])["NatGateways"][0], "State", ("available",),
                10, nat)
    return nat, eip


def teardown_vpc(ec2, vpc_id):
    """Deletes a VPC's dependents in AWS's required order, then the VPC."""
    f = [{"Name": "vpc-id", "Values": [vpc_id]}]
    for e in ec2.describe_vpc_endpoints(Filters=f)["VpcEndpoints"]:
        ec2.delete_vpc_endpoints(VpcEndpointIds=[e["VpcEndpointId"]])
    for n in ec2.describe_nat_gateways(Filter=f)["NatGateways"]:
        if n["State"] not in ("deleted", "deleting"):
            ec2.delete_nat_gateway(NatGatewayId=n["NatGatewayId"])
    deadline = time.time() + 10
    while time.time() < deadline and any(
        n["State"] not in ("deleted", "failed") for n in ec2.describe_nat_gateways(Filter=f)["NatGateways"]
    ):
        time.sleep(0.2)
    for eni in ec2.describe_network_interfaces(Filters=f)["NetworkInterfaces"]:
        if not eni.get("RequesterManaged"):
            ec2.delete_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"])
    # A finished job's ENIs go a moment after the job ends (after their last
    # flow-log collection), as SageMaker's do.
    deadline = time.time() + 15
    while time.time() < deadline and any(
        e.get("RequesterManaged") and e.get("InterfaceType") == "interface"
        for e in ec2.describe_network_interfaces(Filters=f)["NetworkInterfaces"]
    ):
        time.sleep(0.2)
    for igw in ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])["InternetGateways"]:
        ec2.detach_internet_gateway(InternetGatewayId=igw["InternetGatewayId"], VpcId=vpc_id)
        ec2.delete_internet_gateway(InternetGatewayId=igw["InternetGatewayId"])
    for rt in ec2.describe_route_tables(Filters=f)["RouteTables"]:
        for a in rt["Associations"]:
            if not a["Main"]:
                ec2.disassociate_route_table(AssociationId=a["RouteTableAssociationId"])
        if not any(a["Main"] for a in rt["Associations"]):
            ec2.delete_route_table(RouteTableId=rt["RouteTableId"])
    for s in ec2.describe_subnets(Filters=f)["Subnets"]:
        ec2.delete_subnet(SubnetId=s["SubnetId"])
    for acl in ec2.describe_network_acls(Filters=f)["NetworkAcls"]:
        if not acl["IsDefault"]:
            ec2.delete_network_acl(NetworkAclId=acl["NetworkAclId"])
    groups = ec2.describe_security_groups(Filters=f)["SecurityGroups"]
    for g in groups:
        for direction, revoke in (("IpPermissions", ec2.revoke_security_group_ingress), ("IpPermissionsEgress", ec2.revoke_security_group_egress)):
            if g[direction] and g["GroupName"] != "default":
                revoke(GroupId=g["GroupId"], IpPermissions=g[direction])
    for g in groups:
        if g["GroupName"] != "default":
            ec2.delete_security_group(GroupId=g["GroupId"])
    ec2.delete_vpc(VpcId=vpc_id)
