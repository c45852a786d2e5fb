"""Cove over several hosts, simulated on one machine (docs/scale-out.md): a
`cove serve` on PostgreSQL in this namespace is the control plane's host,
two `cove agent`s each run in a network namespace of their own that plays
a machine, and a bridge in a fourth namespace plays the underlay switch
(198.51.100.0/24, a documentation range). ENIs pinned to an agent's host
(the `cove:host` tag) are made by that agent; security groups and network
ACLs are enforced on each ENI's host and traffic crosses hosts over VXLAN.
Needs root and COVE_TEST_POSTGRES."""

import contextlib
import json
import os
import uuid
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import botocore.exceptions
import pytest

from conftest import AGENT_ENV, BINARY, Cove, drop_postgres_database, nat_gateway, new_postgres_database
from helpers import eventually
from simulated_hosts import Agent, Simulation
from test_dataplane import CLIENT, ECHO_PEER, INTERNET, PEER_CLIENT, S3, S3_TEST_PORT, SERVER
from test_flow_log_records import ROLE, find, records
from test_postgres_store import own_postgres, retrying_client  # noqa: F401 (a fixture)
from test_training_jobs import (DISTRIBUTED, byo_rootfs_tarball, model_of, program_request, source_archive,
                                training_bucket, training_request, wait_for)
from test_vpc_dns_endpoints import CALLER

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the data plane needs root")

@contextlib.contextmanager
def three_hosts(**env):
    url = new_postgres_database()
    simulation = Simulation(BINARY, url, agent_env=AGENT_ENV)
    with tempfile.TemporaryDirectory(prefix="cove-e2e-cp-") as d:
        server = Cove(d, store=url, env={**simulation.serve_env(), **env})
        try:
            simulation.up()
            server.start()
            yield server, simulation.start_agents()
        finally:
            simulation.down()
            server.stop(signal.SIGKILL)
            server.teardown()
            drop_postgres_database(url)


@pytest.fixture
def cluster():
    """Three hosts; ENIs go to the control plane's unless a tag places them."""
    with three_hosts() as c:
        yield c


@pytest.fixture
def spread_cluster():
    """Three hosts; ENIs and job instances spread over them."""
    with three_hosts(COVE_ENI_PLACEMENT="spread") as c:
        yield c


def diagnose(server, agents):
    """What a failed cross-host check prints: each host's log tail and
    each router's overlay routes and neighbours."""
    out = [f"== control plane\n{open(server.log_path).read()[-4000:]}"]
    out += [f"== agent {h}\n{a.log()[-4000:]}" for h, a in agents.items()]
    for ns in sorted(os.listdir("/run/netns")):
        if "-vpc-" in ns:
            for what in (["route"], ["neigh"], ["-d", "link", "show", "type", "vxlan"]):
                r = subprocess.run(["ip", "-n", ns, *what], capture_output=True, text=True)
                out.append(f"== {ns} {' '.join(what)}\n{r.stdout}{r.stderr}")
    return "\n".join(out)


def server_instance(server):
    for line in open(server.log_path):
        if "data plane on" in line and "instance=" in line:
            return line.split("instance=")[1].split()[0]
    raise AssertionError("the server logged no instance tag")


def health(server):
    with urllib.request.urlopen(f"{server.endpoint}/_cove/health", timeout=5) as r:
        return json.load(r)


def host_states(server):
    return {h: v["state"] for h, v in health(server)["components"]["hosts"].items()}


def exec_on(data_dir, eni, *command):
    return subprocess.run([BINARY, "exec", "--data-dir", data_dir, "--eni", eni, "--privileged", "--", *command],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def listen(data_dir, eni):
    """The test's TCP server on port 8080 of an ENI, on the ENI's host."""
    proc = subprocess.Popen(
        [BINARY, "exec", "--data-dir", data_dir, "--eni", eni["NetworkInterfaceId"], "--privileged", "--",
         sys.executable, "-c", SERVER, eni["PrivateIpAddress"], "8080"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def test_enis_on_three_hosts_are_enforced_across_the_overlay(cluster):
    server, agents = cluster
    assert eventually(lambda: host_states(server) == {"cp": "available", "b": "available", "c": "available"},
                      timeout=20), (health(server), agents["b"].log())
    ec2 = server.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet_a = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    subnet_b = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24")["Subnet"]["SubnetId"]
    web_sg = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    client_sg = ec2.create_security_group(GroupName="client", Description="client", VpcId=vpc)["GroupId"]
    rule = ec2.authorize_security_group_ingress(GroupId=web_sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "UserIdGroupPairs": [{"GroupId": client_sg}]}])

    def eni(subnet, groups, host=None):
        tags = [{"ResourceType": "network-interface", "Tags": [{"Key": "cove:host", "Value": host}]}] if host else []
        return ec2.create_network_interface(SubnetId=subnet, Groups=groups, TagSpecifications=tags)["NetworkInterface"]

    web = eni(subnet_a, [web_sg], host="b")
    client_cp = eni(subnet_b, [client_sg])
    client_c = eni(subnet_b, [client_sg], host="c")
    default_sg = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                       {"Name": "group-name", "Values": ["default"]}])
    stranger_c = eni(subnet_a, [default_sg["SecurityGroups"][0]["GroupId"]], host="c")
    where = {web["NetworkInterfaceId"]: agents["b"].data_dir, client_cp["NetworkInterfaceId"]: server.data_dir,
             client_c["NetworkInterfaceId"]: agents["c"].data_dir,
             stranger_c["NetworkInterfaceId"]: agents["c"].data_dir}

    # Each ENI exists on its own host only.
    for eni_id, data_dir in where.items():
        if not eventually(lambda: exec_on(data_dir, eni_id, "true").returncode == 0, timeout=20):
            print(exec_on(data_dir, eni_id, "true").stderr, agents["b"].log(), agents["c"].log(), sep="\n")
            pytest.fail(f"{eni_id} has no namespace on its host")
    # The control plane's host does not make an agent's ENI ...
    cp_instance = server_instance(server)
    assert not os.path.exists(f"/run/netns/cove-{cp_instance}-eni-{web['NetworkInterfaceId'][-12:]}")
    assert os.path.exists(f"/run/netns/cove-{cp_instance}-eni-{client_cp['NetworkInterfaceId'][-12:]}")
    # ... and `cove exec` on its data directory finds the ENI on its host
    # (here on the same machine).
    assert exec_on(server.data_dir, web["NetworkInterfaceId"], "true").returncode == 0

    listener = listen(agents["b"].data_dir, web)
    try:

        def reaches(client):
            out = exec_on(where[client["NetworkInterfaceId"]], client["NetworkInterfaceId"], sys.executable, "-c",
                          CLIENT, web["PrivateIpAddress"], "8080")
            return out.stdout.strip() == "hello"

        # Control plane's host → b, and c → b (neither end on the control
        # plane): the group reference admits members on every host.
        assert eventually(lambda: reaches(client_cp), timeout=20), diagnose(server, agents)
        assert eventually(lambda: reaches(client_c), timeout=20), diagnose(server, agents)
        # A member of no admitted group, on the same host as an admitted one.
        assert not reaches(stranger_c)
        # The rule goes: enforced on b for clients on both other hosts.
        ec2.revoke_security_group_ingress(GroupId=web_sg, SecurityGroupRuleIds=[
            rule["SecurityGroupRules"][0]["SecurityGroupRuleId"]])
        assert eventually(lambda: not reaches(client_cp) and not reaches(client_c), timeout=20)
        ec2.authorize_security_group_ingress(GroupId=web_sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "IpRanges": [{"CidrIp": "10.0.2.0/24"}]}])
        assert eventually(lambda: reaches(client_cp) and reaches(client_c), timeout=20)
        # A network ACL on the web's subnet, enforced on b: deny from c's client only.
        acl = ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["NetworkAcls"][0]["NetworkAclId"]
        ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=10, Protocol="6", RuleAction="deny", Egress=False,
                                     CidrBlock=f"{client_c['PrivateIpAddress']}/32", PortRange={"From": 8080, "To": 8080})
        assert eventually(lambda: not reaches(client_c), timeout=20)
        assert reaches(client_cp)
    finally:
        listener.kill()
        listener.wait()

    # `cove hosts` reads the same store from any data directory.
    listing = subprocess.run([BINARY, "hosts", "--data-dir", agents["c"].data_dir], capture_output=True, text=True,
                             check=True, stdin=subprocess.DEVNULL).stdout
    rows = {line.split()[0]: line.split() for line in listing.splitlines()[1:]}
    assert rows["b"][7] == "1" and rows["c"][7] == "2", listing
    assert rows["cp"][2] == "control-plane" and rows["b"][2] == "agent", listing

    # Pinning to a host that does not exist is refused, and nothing is made.
    before = len(ec2.describe_network_interfaces()["NetworkInterfaces"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        eni(subnet_a, [web_sg], host="nowhere")
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "not registered" in e.value.response["Error"]["Message"]
    assert len(ec2.describe_network_interfaces()["NetworkInterfaces"]) == before

    # Deleting an ENI removes it from its host.
    ec2.delete_network_interface(NetworkInterfaceId=client_c["NetworkInterfaceId"])
    assert eventually(lambda: exec_on(agents["c"].data_dir, client_c["NetworkInterfaceId"], "true").returncode != 0,
                      timeout=20)


def test_a_silent_host_is_marked_lost_and_comes_back(cluster):
    server, agents = cluster
    assert eventually(lambda: set(host_states(server).values()) == {"available"} and len(host_states(server)) == 3,
                      timeout=20)
    ec2 = server.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.1.0/24")["Subnet"]["SubnetId"]
    tags = [{"ResourceType": "network-interface", "Tags": [{"Key": "cove:host", "Value": "c"}]}]
    on_c = ec2.create_network_interface(SubnetId=subnet, TagSpecifications=tags)["NetworkInterface"]
    on_cp = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]
    c = agents["c"]

    def reaches(src_dir, src, dst):
        out = exec_on(src_dir, src["NetworkInterfaceId"], sys.executable, "-c", CLIENT, dst["PrivateIpAddress"], "8080")
        return out.stdout.strip() == "hello"

    # The default group admits its own members, on any host.
    listeners = [listen(c.data_dir, on_c), listen(server.data_dir, on_cp)]
    assert eventually(lambda: reaches(server.data_dir, on_cp, on_c), timeout=20), c.log()
    assert reaches(c.data_dir, on_c, on_cp)

    c.stop(signal.SIGKILL)
    assert eventually(lambda: host_states(server)["c"] == "lost", timeout=40)
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert 'cove_resources{kind="host",state="lost"} 1' in metrics, metrics
    # A lost host takes no new ENI.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_network_interface(SubnetId=subnet, TagSpecifications=tags)
    assert "is lost" in e.value.response["Error"]["Message"]
    # The kernel kept its ENI while the agent was away; a restarted agent
    # heart-beats again and picks up where it was.
    assert reaches(server.data_dir, on_cp, on_c)
    c.start()
    assert eventually(lambda: host_states(server)["c"] == "available", timeout=20), c.log()
    assert reaches(c.data_dir, on_c, on_cp)
    for proc in listeners:
        proc.kill()
        proc.wait()
    ec2.delete_network_interface(NetworkInterfaceId=on_c["NetworkInterfaceId"])
    assert eventually(lambda: exec_on(c.data_dir, on_c["NetworkInterfaceId"], "true").returncode != 0, timeout=20)
    # A second agent under the same host id is refused.
    twin = Agent(BINARY, "c", c.netns, c.address, c.store)
    try:
        twin.start()
        assert twin.proc.wait(timeout=20) != 0
        assert "already runs host c" in twin.log()
    finally:
        twin.stop(signal.SIGKILL)
        twin.teardown()


def test_gateways_and_endpoints_on_the_control_plane_serve_enis_on_agents(cluster):
    """An agent's router has no gateway of its own: what leaves the VPC
    crosses the overlay to the control plane's router, which holds the
    internet gateway, the NAT gateway's ENI and the S3 gateway endpoint, and
    translates there as it does for its own ENIs."""
    server, agents = cluster
    assert eventually(lambda: len(host_states(server)) == 3, timeout=20)
    ec2 = server.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.2.0.0/16")["Vpc"]["VpcId"]
    public = ec2.create_subnet(VpcId=vpc, CidrBlock="10.2.1.0/24")["Subnet"]["SubnetId"]
    private = ec2.create_subnet(VpcId=vpc, CidrBlock="10.2.2.0/24")["Subnet"]["SubnetId"]
    nat, nat_eip = nat_gateway(ec2, vpc, public)
    private_rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=private_rt, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    ec2.associate_route_table(RouteTableId=private_rt, SubnetId=private)

    def pinned(subnet, host):
        tags = [{"ResourceType": "network-interface", "Tags": [{"Key": "cove:host", "Value": host}]}]
        return ec2.create_network_interface(SubnetId=subnet, TagSpecifications=tags)["NetworkInterface"]

    web_b = pinned(public, "b")
    eip = ec2.allocate_address()
    ec2.associate_address(AllocationId=eip["AllocationId"], NetworkInterfaceId=web_b["NetworkInterfaceId"])
    worker_c = pinned(private, "c")
    internet = server.spawn(None, sys.executable, "-c", ECHO_PEER, INTERNET, "80")
    s3 = server.spawn(None, sys.executable, "-c", ECHO_PEER, S3, S3_TEST_PORT)
    try:
        assert internet.stdout.readline().strip() == "ready" and s3.stdout.readline().strip() == "ready"

        def seen_from(agent, eni, address=INTERNET, port="80"):
            out = exec_on(agents[agent].data_dir, eni["NetworkInterfaceId"], sys.executable, "-c", PEER_CLIENT,
                          address, port).stdout.strip()
            return None if not out or out.startswith("blocked") else out

        # The internet sees the ENI's Elastic IP, translated on the control plane's host.
        assert eventually(lambda: seen_from("b", web_b) == eip["PublicIp"], timeout=20), agents["b"].log()
        # A private ENI on another agent goes out through the NAT gateway.
        assert eventually(lambda: seen_from("c", worker_c) == nat_eip["PublicIp"], timeout=20), agents["c"].log()
        # S3's address: no endpoint, no way (the NAT gateway would be one:
        # the private subnet's default route is taken away first).
        ec2.delete_route(RouteTableId=private_rt, DestinationCidrBlock="0.0.0.0/0")
        assert eventually(lambda: seen_from("c", worker_c, S3, S3_TEST_PORT) is None, timeout=20)
        ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.us-east-1.s3", RouteTableIds=[private_rt])
        source = None

        def through_endpoint():
            nonlocal source
            source = seen_from("c", worker_c, S3, S3_TEST_PORT)
            return source is not None

        assert eventually(through_endpoint, timeout=20)
        assert source.startswith("100."), source  # the endpoint's own address, as on one host
        assert seen_from("c", worker_c) is None, "the endpoint carries S3's prefix list only"

        # The agent's router answers DNS itself (the VPC resolver at base+2),
        # with the private DNS of an interface endpoint whose ENI is on the
        # control plane's host: boto3 on host c calls STS by its usual name.
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        ec2.create_vpc_endpoint(VpcId=vpc, VpcEndpointType="Interface", ServiceName="com.amazonaws.us-east-1.sts",
                                SubnetIds=[private])

        def sts_from_c():
            return exec_on(agents["c"].data_dir, worker_c["NetworkInterfaceId"], sys.executable, "-c",
                           CALLER).stdout.strip()

        assert eventually(lambda: sts_from_c() == "123456789012", timeout=20), (sts_from_c(), agents["c"].log())
    finally:
        for proc in (internet, s3):
            proc.kill()
            proc.wait()


def test_flow_logs_record_enis_on_every_host(cluster):
    """Each host's routers count its own ENIs' packets; an agent sends its
    finished windows to the control plane through the store, which delivers
    them to the flow log's group as its own."""
    server, agents = cluster
    assert eventually(lambda: len(host_states(server)) == 3, timeout=20)
    ec2, logs = server.client("ec2"), server.client("logs")
    vpc = ec2.create_vpc(CidrBlock="10.3.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.3.1.0/24")["Subnet"]["SubnetId"]
    web_sg = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    client_sg = ec2.create_security_group(GroupName="client", Description="client", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=web_sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "UserIdGroupPairs": [{"GroupId": client_sg}]}])

    def eni(groups, host=None):
        tags = [{"ResourceType": "network-interface", "Tags": [{"Key": "cove:host", "Value": host}]}] if host else []
        return ec2.create_network_interface(SubnetId=subnet, Groups=groups, TagSpecifications=tags)["NetworkInterface"]

    web, client_c, stranger_cp = eni([web_sg], "b"), eni([client_sg], "c"), eni([web_sg])
    group = f"/cove/flows/{vpc}"
    ec2.create_flow_logs(ResourceIds=[vpc], ResourceType="VPC", TrafficType="ALL", LogGroupName=group,
                         DeliverLogsPermissionArn=ROLE, MaxAggregationInterval=60)
    listener = listen(agents["b"].data_dir, web)
    try:
        def connect(src_dir, src):
            return exec_on(src_dir, src["NetworkInterfaceId"], sys.executable, "-c", CLIENT,
                           web["PrivateIpAddress"], "8080").stdout.strip()

        assert eventually(lambda: connect(agents["c"].data_dir, client_c) == "hello", timeout=20)
        assert connect(server.data_dir, stranger_cp) != "hello"
        web_ip, c_ip, s_ip = web["PrivateIpAddress"], client_c["PrivateIpAddress"], stranger_cp["PrivateIpAddress"]

        def delivered():
            on_b = records(logs, group, web["NetworkInterfaceId"])
            on_c = records(logs, group, client_c["NetworkInterfaceId"])
            on_cp = records(logs, group, stranger_cp["NetworkInterfaceId"])
            return (find(on_b, srcaddr=c_ip, dstaddr=web_ip, dstport=8080, action="ACCEPT")
                    and find(on_b, srcaddr=s_ip, dstaddr=web_ip, dstport=8080, action="REJECT")
                    and find(on_c, srcaddr=c_ip, dstaddr=web_ip, dstport=8080, action="ACCEPT")
                    and find(on_cp, srcaddr=s_ip, dstaddr=web_ip, dstport=8080, action="ACCEPT"))

        assert eventually(delivered, timeout=30), (records(logs, group, web["NetworkInterfaceId"]),
                                                   agents["b"].log()[-2000:])
        accepted = find(records(logs, group, web["NetworkInterfaceId"]), srcaddr=c_ip, action="ACCEPT")[0]
        assert int(accepted["packets"]) > 0 and int(accepted["bytes"]) > 0
        assert accepted["account-id"] == "123456789012"
    finally:
        listener.kill()
        listener.wait()


def test_hosts_follow_again_after_postgres_restarts(own_postgres):
    """PostgreSQL stops under the control plane and two agents, and comes
    back: nobody is marked lost for it, the agents' ENIs keep forwarding
    meanwhile, and a rule change made after it is enforced on the agents."""
    server_url, stop_postgres, start_postgres = own_postgres
    url = new_postgres_database(server_url)
    simulation = Simulation(BINARY, url)
    with tempfile.TemporaryDirectory(prefix="cove-e2e-cp-") as d:
        server = Cove(d, store=url, env=simulation.serve_env())
        try:
            simulation.up()
            server.start()
            agents = simulation.start_agents()
            if not eventually(lambda: len(host_states(server)) == 3, timeout=20):
                print(diagnose(server, agents))
                raise AssertionError(f"hosts registered: {host_states(server)}")
            ec2 = server.client("ec2")
            vpc = ec2.create_vpc(CidrBlock="10.4.0.0/16")["Vpc"]["VpcId"]
            subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.4.1.0/24")["Subnet"]["SubnetId"]
            web_sg = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
            tags = lambda h: [{"ResourceType": "network-interface", "Tags": [{"Key": "cove:host", "Value": h}]}]
            web = ec2.create_network_interface(SubnetId=subnet, Groups=[web_sg], TagSpecifications=tags("b"))[
                "NetworkInterface"]
            client = ec2.create_network_interface(SubnetId=subnet, TagSpecifications=tags("c"))["NetworkInterface"]
            listener = listen(agents["b"].data_dir, web)
            try:
                def reaches():
                    return exec_on(agents["c"].data_dir, client["NetworkInterfaceId"], sys.executable, "-c", CLIENT,
                                   web["PrivateIpAddress"], "8080").stdout.strip() == "hello"

                ec2.authorize_security_group_ingress(GroupId=web_sg, IpPermissions=[
                    {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "IpRanges": [{"CidrIp": "10.4.0.0/16"}]}])
                assert eventually(reaches, timeout=20)
                stop_postgres()
                # The kernel forwards without the store.
                assert reaches()
                time.sleep(6)  # at least one missed heartbeat on every host
                start_postgres()
                # Writes succeed again; the agents follow the feed again.
                ec2 = retrying_client(server, "ec2")
                rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [web_sg]}])
                ingress = [r["SecurityGroupRuleId"] for r in rules["SecurityGroupRules"] if not r["IsEgress"]]
                ec2.revoke_security_group_ingress(GroupId=web_sg, SecurityGroupRuleIds=ingress)
                assert eventually(lambda: not reaches(), timeout=30), agents["b"].log()[-3000:]
                assert eventually(lambda: set(host_states(server).values()) == {"available"}, timeout=20)
                assert all(a.proc.poll() is None for a in agents.values()), "an agent exited"
            finally:
                listener.kill()
                listener.wait()
        finally:
            simulation.down()
            server.stop(signal.SIGKILL)
            server.teardown()


def job_network(ec2, cidr):
    """A VPC with two private subnets, an S3 gateway endpoint and a job group
    whose members may talk to each other (the self-referencing rule)."""
    vpc = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    base = cidr.rsplit(".", 2)[0]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"{base}.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
    sg = ec2.create_security_group(GroupName="job", Description="job", VpcId=vpc)["GroupId"]
    rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
    ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.us-east-1.s3", VpcEndpointType="Gateway",
                            RouteTableIds=[rt])
    return {"vpc": vpc, "subnets": subnets, "sg": sg, "rt": rt}


def allow_members(ec2, net):
    ec2.authorize_security_group_ingress(GroupId=net["sg"], IpPermissions=[
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": net["sg"]}]}])


def logged_on(server, agents, message, owner):
    """Which host logged `message` about each instance of `owner` (a
    `key=value` field of the line): {instance: host}."""
    found = {}
    logs = {"cp": open(server.log_path).read(), **{h: a.log() for h, a in agents.items()}}
    for host, text in logs.items():
        for line in text.splitlines():
            if message in line and f"{owner} " in line:
                found[line.split("instance=")[1].split()[0]] = host
    return found


def running_on(server, agents, job):
    """Which host runs each of the job's instances."""
    return logged_on(server, agents, "the instance's container runs here", f"job={job}")


SPREAD = DISTRIBUTED + 'print(f"{host} finished", flush=True)\n'


def test_a_training_job_spreads_its_instances_over_the_hosts(spread_cluster):
    """Three instances of one job go to three hosts; they reach each other
    across the overlay only when the job's group admits its own members,
    each moves its data through its own ENI to the S3 endpoint on the
    control plane's router, and each one's log reaches CloudWatch Logs."""
    server, agents = spread_cluster
    assert eventually(lambda: len(host_states(server)) == 3, timeout=20)
    ec2, s3, sm, logs = (server.client(s) for s in ("ec2", "s3", "sagemaker", "logs"))
    net = job_network(ec2, "10.5.0.0/16")
    bucket = training_bucket(s3)
    s3.put_object(Bucket=bucket, Key="code/spread.tar.gz", Body=source_archive(SPREAD))

    def spread(name):
        return program_request(name, bucket, net, "spread.tar.gz", count=3)

    apart = f"apart-{uuid.uuid4().hex[:8]}"
    sm.create_training_job(**spread(apart))
    d = wait_for(sm, apart, timeout=120)
    assert d["TrainingJobStatus"] == "Failed", diagnose(server, agents)
    assert "cannot reach algo-1" in d["FailureReason"], d["FailureReason"]
    assert set(running_on(server, agents, apart).values()) == {"cp", "b", "c"}, diagnose(server, agents)

    allow_members(ec2, net)
    together = f"together-{uuid.uuid4().hex[:8]}"
    sm.create_training_job(**spread(together))
    d = wait_for(sm, together, timeout=120)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), diagnose(server, agents))
    assert model_of(s3, bucket, together) == {"peers": ["algo-2", "algo-3"]}
    placed = running_on(server, agents, together)
    assert sorted(placed) == ["algo-1", "algo-2", "algo-3"] and set(placed.values()) == {"cp", "b", "c"}, placed
    # Every instance's log, wherever it ran, is in the job's log group.
    group = "/aws/sagemaker/TrainingJobs"

    def lines():
        streams = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=f"{together}/")["logStreams"]
        return {e["message"] for s in streams
                for e in logs.get_log_events(logGroupName=group, logStreamName=s["logStreamName"])["events"]}

    assert eventually(lambda: {"algo-2 finished", "algo-3 finished", "algo-1 finished"} <= lines(), timeout=20), lines()
    # The job's ENIs go once every host has cleaned up its instance (after
    # the job is Completed, as on AWS).
    def job_enis():
        enis = ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [net["vpc"]]}])
        return [e for e in enis["NetworkInterfaces"] if e["InterfaceType"] == "interface"]
    assert eventually(lambda: job_enis() == [], timeout=20), (job_enis(), diagnose(server, agents))


IMAGE_TRAIN = """#!/bin/sh
marker=no; [ -e /etc/byo-marker ] && marker=yes
echo "$SM_CURRENT_HOST ran the image: marker=$marker"
"""
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def test_agents_pull_the_image_of_their_instances_from_the_registry(spread_cluster, tmp_path):
    """An image pushed to Cove's registry runs on every host: an agent pulls
    it from the control plane's registry over the underlay, or, with
    TrainingRepositoryAccessMode Vpc, through the instance's own ENI from
    the ecr.dkr endpoint on the control plane's router, which the job
    cannot do before the VPC has that endpoint."""
    server, agents = spread_cluster
    assert eventually(lambda: len(host_states(server)) == 3, timeout=20)
    ec2, s3, sm, logs = (server.client(s) for s in ("ec2", "s3", "sagemaker", "logs"))
    image = f"{REGISTRY}/spread-image:1"
    tarball = tmp_path / "rootfs.tar.gz"
    byo_rootfs_tarball(tarball, train=IMAGE_TRAIN)
    subprocess.run([BINARY, "image-import", "--data-dir", server.data_dir, image, str(tarball)],
                   check=True, capture_output=True)
    net = job_network(ec2, "10.7.0.0/16")
    bucket = training_bucket(s3)

    def image_job(prefix, mode):
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        req = training_request(name, bucket, net)
        req["AlgorithmSpecification"]["TrainingImage"] = image
        req["AlgorithmSpecification"]["TrainingImageConfig"] = {"TrainingRepositoryAccessMode": mode}
        req["ResourceConfig"]["InstanceCount"] = 3
        del req["HyperParameters"]
        sm.create_training_job(**req)
        return name, wait_for(sm, name, timeout=120)

    def lines(name):
        streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                            logStreamNamePrefix=f"{name}/")["logStreams"]
        return {e["message"] for s in streams
                for e in logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                             logStreamName=s["logStreamName"])["events"]}

    ran = {f"algo-{i} ran the image: marker=yes" for i in (1, 2, 3)}
    name, d = image_job("platform", "Platform")
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), diagnose(server, agents))
    assert set(running_on(server, agents, name).values()) == {"cp", "b", "c"}, diagnose(server, agents)
    assert eventually(lambda: ran <= lines(name), timeout=20), lines(name)
    for host, agent in agents.items():
        assert "pulled the image from the control plane's registry" in agent.log(), (host, agent.log()[-3000:])

    # Vpc mode: no route to the registry from the private subnets yet.
    name, d = image_job("novpce", "Vpc")
    assert d["TrainingJobStatus"] == "Failed", diagnose(server, agents)
    assert d["FailureReason"].startswith(
        f"ClientError: Cannot pull the training image {image} through the job's VPC: "
        f"connecting to {REGISTRY} (192.0.2.9:443): "), d["FailureReason"]
    ec2.modify_vpc_attribute(VpcId=net["vpc"], EnableDnsHostnames={"Value": True})
    sg = ec2.create_security_group(GroupName="vpce-ecr", Description="ecr", VpcId=net["vpc"])["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "UserIdGroupPairs": [{"GroupId": net["sg"]}]}])
    for service in ("ecr.api", "ecr.dkr"):
        ec2.create_vpc_endpoint(VpcId=net["vpc"], VpcEndpointType="Interface",
                                ServiceName=f"com.amazonaws.us-east-1.{service}", SubnetIds=net["subnets"],
                                SecurityGroupIds=[sg])
    name, d = image_job("vpce", "Vpc")
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), diagnose(server, agents))
    assert set(running_on(server, agents, name).values()) == {"cp", "b", "c"}, diagnose(server, agents)
    assert eventually(lambda: ran <= lines(name), timeout=20), lines(name)


SLEEPER = r"""
import os, time
print("started", flush=True)
time.sleep(float(os.environ.get("SM_HP_SECONDS", "1")))
print("slept", flush=True)
"""


def test_a_lost_host_fails_the_jobs_it_ran_and_the_others_finish(spread_cluster):
    """An agent dies under a job with an instance on its host: the job fails
    with AWS's internal-error reason once the host is marked lost, and its
    ENIs are released; a job on another host finishes. The agent, back,
    removes what the failed job left on its host."""
    server, agents = spread_cluster
    assert eventually(lambda: len(host_states(server)) == 3, timeout=20)
    ec2, s3, sm = (server.client(s) for s in ("ec2", "s3", "sagemaker"))
    net = job_network(ec2, "10.6.0.0/16")
    allow_members(ec2, net)
    bucket = training_bucket(s3)
    s3.put_object(Bucket=bucket, Key="code/sleeper.tar.gz", Body=source_archive(SLEEPER))

    def sleeper(name, count, seconds):
        return program_request(name, bucket, net, "sleeper.tar.gz", count=count, seconds=seconds)

    short, long = f"short-{uuid.uuid4().hex[:8]}", f"long-{uuid.uuid4().hex[:8]}"
    sm.create_training_job(**sleeper(short, 1, 40))
    sm.create_training_job(**sleeper(long, 3, 300))
    assert eventually(lambda: len(running_on(server, agents, short)) == 1
                      and len(running_on(server, agents, long)) == 3, timeout=60), diagnose(server, agents)
    # `cove hosts` counts the instances each host runs: four in all.
    listing = subprocess.run([BINARY, "hosts", "--data-dir", server.data_dir], capture_output=True, text=True,
                             check=True, stdin=subprocess.DEVNULL).stdout
    assert sum(int(line.split()[8]) for line in listing.splitlines()[1:]) == 4, listing
    short_host = running_on(server, agents, short)["algo-1"]
    victim_id = "c" if short_host != "c" else "b"
    victim = agents[victim_id]
    assert victim_id in running_on(server, agents, long).values()
    victim_algo = next(a for a, h in running_on(server, agents, long).items() if h == victim_id)
    victim_eni = next(e for e in ec2.describe_network_interfaces(
        Filters=[{"Name": "vpc-id", "Values": [net["vpc"]]}])["NetworkInterfaces"]
        if long in e["Description"] and f"({victim_algo})" in e["Description"])
    victim.stop(signal.SIGKILL)

    d = wait_for(sm, long, timeout=60)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"] == "InternalServerError: We encountered an internal error. Please try again."
    assert host_states(server)[victim_id] == "lost"
    d = wait_for(sm, short, timeout=60)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    # Nothing of the failed job stays in the store, not even the lost host's ENI.
    def job_enis():
        enis = ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [net["vpc"]]}])
        return [e for e in enis["NetworkInterfaces"] if e["InterfaceType"] == "interface"]
    assert eventually(lambda: job_enis() == [], timeout=20), job_enis()
    # The lost host may still hold that ENI in its kernel: its address is
    # given to no new ENI until the host is back and has removed it.

    def take_victims_address():
        try:
            return ec2.create_network_interface(SubnetId=victim_eni["SubnetId"],
                                                PrivateIpAddress=victim_eni["PrivateIpAddress"])
        except botocore.exceptions.ClientError as e:
            return e.response["Error"]["Code"]
    assert take_victims_address() == "InvalidIPAddress.InUse"

    # The lost host's container ran on without its agent; back, the agent
    # removes it and its files.
    jobs_dir = os.path.join(victim.data_dir, "jobs")
    assert any(long in dirs for _, dirs, _ in os.walk(jobs_dir))
    victim.start()
    assert eventually(lambda: host_states(server)[victim_id] == "available", timeout=20), victim.log()
    assert eventually(lambda: not any(long in dirs for _, dirs, _ in os.walk(jobs_dir)), timeout=20), victim.log()
    leftover = subprocess.run(["pgrep", "-f", f"{long}/algo"], capture_output=True, text=True).stdout
    assert leftover == "", leftover
    # Back and caught up, the host has given the address up.
    taken = eventually(lambda: isinstance(take_victims_address(), dict), timeout=20)
    assert taken, diagnose(server, agents)
    ec2.delete_network_interface(NetworkInterfaceId=next(
        e["NetworkInterfaceId"] for e in job_enis() if e["PrivateIpAddress"] == victim_eni["PrivateIpAddress"]))


def serving_on(server, agents, endpoint):
    """Which host serves each of the endpoint's instances."""
    return logged_on(server, agents, "instance in service", f"owner={endpoint}")


def test_an_endpoint_serves_from_several_hosts_and_replaces_the_instance_of_a_lost_one(spread_cluster):
    """An endpoint's two instances go to two hosts; InvokeEndpoint on the
    control plane reaches both (an agent's through its relay), each
    fetches its model through its own ENI and its log reaches CloudWatch
    Logs. When the host of one is lost, the endpoint stays InService and
    gets a new instance on another host; the agent, back, removes what the
    replaced instance left."""
    from test_hosting import create_config, create_model, invoke, model_archive, unique, wait_endpoint
    server, agents = spread_cluster
    assert eventually(lambda: len(host_states(server)) == 3, timeout=20)
    ec2, s3, sm, runtime, logs = (server.client(s) for s in ("ec2", "s3", "sagemaker", "sagemaker-runtime", "logs"))
    net = job_network(ec2, "10.7.0.0/16")
    bucket = training_bucket(s3)
    s3.put_object(Bucket=bucket, Key="models/m.tar.gz", Body=model_archive(1, 10))
    model = create_model(sm, f"s3://{bucket}/models/m.tar.gz", net)
    name = unique("ep")
    sm.create_endpoint(EndpointName=name, EndpointConfigName=create_config(sm, ("AllTraffic", model, 2, 1.0)))
    d = wait_endpoint(sm, name, timeout=120)
    assert d["EndpointStatus"] == "InService", (d.get("FailureReason"), diagnose(server, agents))
    placed = serving_on(server, agents, name)
    assert len(placed) == 2 and len(set(placed.values())) == 2, placed
    assert set(placed.values()) != {"cp"}

    def answering(n=8):
        return {invoke(runtime, name, {"inputs": [1, 2]})[1]["host"] for _ in range(n)}

    # The serving container's hostname is its instance's id.
    assert answering() == set(placed), diagnose(server, agents)
    group = f"/aws/sagemaker/Endpoints/{name}"

    def streams():
        if not logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
            return set()
        return {s["logStreamName"].split("/")[1] for s in logs.describe_log_streams(logGroupName=group)["logStreams"]}
    assert eventually(lambda: streams() == set(placed), timeout=20), streams()

    victim_instance, victim_id = next((i, h) for i, h in placed.items() if h != "cp")
    victim = agents[victim_id]
    jobs_dir = os.path.join(victim.data_dir, "jobs")
    assert any(victim_instance in dirs for _, dirs, _ in os.walk(jobs_dir))
    victim.stop(signal.SIGKILL)
    # Before the host is marked lost, calls still go through: an instance
    # that cannot be connected to is passed over for the next.
    assert answering() == set(placed) - {victim_instance}
    assert eventually(lambda: host_states(server)[victim_id] == "lost", timeout=40)
    # A new instance on a host that is not lost takes the lost one's place.
    assert eventually(lambda: len(serving_on(server, agents, name)) == 3, timeout=60), diagnose(server, agents)
    replacement = {i: h for i, h in serving_on(server, agents, name).items() if i not in placed}
    assert list(replacement.values()) != [victim_id], replacement
    assert eventually(lambda: answering() == set(placed) - {victim_instance} | set(replacement), timeout=20)
    d = sm.describe_endpoint(EndpointName=name)
    assert d["EndpointStatus"] == "InService"
    assert d["ProductionVariants"][0]["CurrentInstanceCount"] == 2

    # Back, the agent removes the replaced instance's container and files.
    victim.start()
    assert eventually(lambda: host_states(server)[victim_id] == "available", timeout=20), victim.log()
    assert eventually(lambda: not any(victim_instance in dirs for _, dirs, _ in os.walk(jobs_dir)),
                      timeout=20), victim.log()
    sm.delete_endpoint(EndpointName=name)

    def gone():
        try:
            sm.describe_endpoint(EndpointName=name)
            return False
        except botocore.exceptions.ClientError:
            return True
    assert eventually(gone, timeout=30), diagnose(server, agents)
    enis = ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [net["vpc"]]}])["NetworkInterfaces"]
    assert [e for e in enis if e["InterfaceType"] == "interface"] == []


def test_an_endpoint_of_a_registry_image_serves_from_agents(spread_cluster, tmp_path):
    """The instances of an endpoint whose image is in Cove's registry go to
    several hosts; each agent pulls the image from the control plane's
    registry and serves from the image's own root."""
    from test_hosting import byo_python_image, create_config, invoke, model_archive, unique, wait_endpoint
    from test_training_jobs import ROLE as JOB_ROLE
    server, agents = spread_cluster
    assert eventually(lambda: len(host_states(server)) == 3, timeout=20)
    ec2, s3, sm, runtime = (server.client(s) for s in ("ec2", "s3", "sagemaker", "sagemaker-runtime"))
    image = f"{REGISTRY}/spread-serve:1"
    tarball = tmp_path / "rootfs.tar.gz"
    byo_python_image(tarball)
    subprocess.run([BINARY, "image-import", "--data-dir", server.data_dir, image, str(tarball)],
                   check=True, capture_output=True)
    net = job_network(ec2, "10.8.0.0/16")
    bucket = training_bucket(s3)
    s3.put_object(Bucket=bucket, Key="models/m.tar.gz", Body=model_archive(1, 100))
    model = unique("byo-model")
    sm.create_model(ModelName=model, ExecutionRoleArn=JOB_ROLE,
                    PrimaryContainer={"Image": image, "ModelDataUrl": f"s3://{bucket}/models/m.tar.gz"},
                    VpcConfig={"Subnets": net["subnets"], "SecurityGroupIds": [net["sg"]]})
    name = unique("byo-ep")
    sm.create_endpoint(EndpointName=name, EndpointConfigName=create_config(sm, ("AllTraffic", model, 2, 1.0)))
    d = wait_endpoint(sm, name, timeout=120)
    assert d["EndpointStatus"] == "InService", (d.get("FailureReason"), diagnose(server, agents))
    placed = serving_on(server, agents, name)
    assert len(placed) == 2 and len(set(placed.values())) == 2 and set(placed.values()) != {"cp"}, placed
    for _ in range(6):
        assert invoke(runtime, name, {"inputs": [1, 2]})[1] == {"root": "byo", "outputs": [101, 102]}
    for instance, host in placed.items():
        if host != "cp":
            assert "pulled the image from the control plane's registry" in agents[host].log(), host
    sm.delete_endpoint(EndpointName=name)


def test_a_transform_job_spreads_its_instances_and_fails_when_a_host_is_lost(spread_cluster):
    """A batch transform job's three instances go to three hosts; each
    transforms its share of the input objects through its own ENI and logs
    to the job's group. When the host of one is lost mid-job, the job fails
    with AWS's internal-error reason, every instance is released, and the
    agent, back, removes what its instance left."""
    from test_hosting import create_model, model_archive, transform_request, unique, wait_transform
    server, agents = spread_cluster
    assert eventually(lambda: len(host_states(server)) == 3, timeout=20)
    ec2, s3, sm, logs = (server.client(s) for s in ("ec2", "s3", "sagemaker", "logs"))
    net = job_network(ec2, "10.8.0.0/16")
    bucket = training_bucket(s3)
    s3.put_object(Bucket=bucket, Key="models/m.tar.gz", Body=model_archive(1, 10))
    model = create_model(sm, f"s3://{bucket}/models/m.tar.gz", net)
    files = {f"part-{n}.jsonl": [{"inputs": [n, i]} for i in range(3 + n)] for n in range(5)}
    for fname, records in files.items():
        s3.put_object(Bucket=bucket, Key=f"in/{fname}", Body="\n".join(json.dumps(r) for r in records) + "\n")
    name = unique("bt")
    sm.create_transform_job(**transform_request(name, model, bucket, "in", instances=3))
    d = wait_transform(sm, name, timeout=120)
    assert d["TransformJobStatus"] == "Completed", (d.get("FailureReason"), diagnose(server, agents))
    placed = serving_on(server, agents, name)
    assert sorted(placed.values()) == ["b", "c", "cp"], placed
    for fname, records in files.items():
        body = s3.get_object(Bucket=bucket, Key=f"{name}-out/{fname}.out")["Body"].read().decode()
        assert [json.loads(line)["outputs"] for line in body.splitlines()] == [
            [10 * v for v in r["inputs"]] for r in records], fname
    group = "/aws/sagemaker/TransformJobs"

    def streams(job):
        if not logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
            return set()
        found = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=job)["logStreams"]
        return {s["logStreamName"].split("/")[1] for s in found}
    assert eventually(lambda: streams(name) == set(placed), timeout=20), streams(name)

    def job_enis():
        enis = ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [net["vpc"]]}])
        return [e for e in enis["NetworkInterfaces"] if e["InterfaceType"] == "interface"]
    assert eventually(lambda: job_enis() == [], timeout=20), job_enis()

    # Records that take a minute each keep every instance busy; one host dies.
    for n in range(3):
        s3.put_object(Bucket=bucket, Key=f"slow/{n}.jsonl", Body=json.dumps({"inputs": [n], "sleep": 60}) + "\n")
    slow = unique("bt")
    sm.create_transform_job(**transform_request(slow, model, bucket, "slow", instances=3))
    assert eventually(lambda: len(serving_on(server, agents, slow)) == 3, timeout=60), diagnose(server, agents)
    victim_instance, victim_id = next((i, h) for i, h in serving_on(server, agents, slow).items() if h != "cp")
    victim = agents[victim_id]
    victim.stop(signal.SIGKILL)
    d = wait_transform(sm, slow, timeout=60)
    assert (d["TransformJobStatus"], d["FailureReason"]) == (
        "Failed", "InternalServerError: We encountered an internal error. Please try again."), diagnose(server, agents)
    assert host_states(server)[victim_id] == "lost"
    # The survivors stop at once and give back their ENIs; the driver gives
    # back the lost host's.
    assert eventually(lambda: job_enis() == [], timeout=20), job_enis()
    jobs_dir = os.path.join(victim.data_dir, "jobs")
    assert any(victim_instance in dirs for _, dirs, _ in os.walk(jobs_dir))
    victim.start()
    assert eventually(lambda: host_states(server)[victim_id] == "available", timeout=20), victim.log()
    assert eventually(lambda: not any(victim_instance in dirs for _, dirs, _ in os.walk(jobs_dir)),
                      timeout=40), victim.log()


def app_hosts(server, agents, arn):
    """The hosts whose logs say the Studio app came into service there."""
    logs = {"cp": open(server.log_path).read(), **{h: a.log() for h, a in agents.items()}}
    return {host for host, text in logs.items()
            if any("Studio app in service" in line and f"app={arn}" in line for line in text.splitlines())}


def test_a_studio_app_on_an_agent_is_reached_through_its_relay_and_starts_again_when_its_host_is_lost(spread_cluster):
    """A user's JupyterServer app goes to an agent; the Studio proxy on the
    control plane serves its pages through the agent's relay, its home is
    on the domain's EFS. When the agent is lost the app starts again on
    another host with the same home; the agent, back, removes what the app
    left on it."""
    from test_studio import create_domain, open_studio, wait_app
    server, agents = spread_cluster
    assert eventually(lambda: len(host_states(server)) == 3, timeout=20)
    ec2, sm = server.client("ec2"), server.client("sagemaker")
    vpc = ec2.create_vpc(CidrBlock="10.11.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.11.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="users", Description="users", VpcId=vpc)["GroupId"]
    domain, _ = create_domain(sm, ec2, {"vpc": vpc, "subnets": [subnet], "sg": sg}, "VpcOnly")
    sm.create_user_profile(DomainId=domain, UserProfileName="erin")
    arn = sm.create_app(DomainId=domain, UserProfileName="erin", AppType="JupyterServer", AppName="default")["AppArn"]
    app = wait_app(sm, domain, "erin")
    assert app["Status"] == "InService", (app.get("FailureReason"), diagnose(server, agents))
    first = app_hosts(server, agents, arn)
    assert len(first) == 1 and first != {"cp"}, first
    browser, base, page = open_studio(sm, domain, "erin")
    assert "<h1>JupyterServer</h1>" in page
    status, _, _ = browser.get(f"{base}api/contents/notes.txt", json.dumps(
        {"type": "file", "format": "text", "content": "kept"}).encode(), "PUT")
    assert status == 201

    victim_id = first.pop()
    victim = agents[victim_id]
    studio_dir = os.path.join(victim.data_dir, "jobs", "studio", domain)
    assert os.listdir(studio_dir)
    victim.stop(signal.SIGKILL)
    assert eventually(lambda: host_states(server)[victim_id] == "lost", timeout=40)
    assert eventually(lambda: len(app_hosts(server, agents, arn)) == 2, timeout=60), diagnose(server, agents)
    assert wait_app(sm, domain, "erin")["Status"] == "InService"
    browser, base, _ = open_studio(sm, domain, "erin")
    status, _, body = browser.get(f"{base}api/contents/notes.txt")
    assert status == 200 and json.loads(body)["content"] == "kept", body

    victim.start()
    assert eventually(lambda: host_states(server)[victim_id] == "available", timeout=20), victim.log()
    assert eventually(lambda: not any(os.scandir(os.path.join(studio_dir, "erin")))
                      if os.path.isdir(os.path.join(studio_dir, "erin")) else True, timeout=20), victim.log()
    sm.delete_app(DomainId=domain, UserProfileName="erin", AppType="JupyterServer", AppName="default")
    assert wait_app(sm, domain, "erin", statuses=("Deleted", "Failed"))["Status"] == "Deleted"
