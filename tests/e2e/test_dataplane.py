"""The VPC made real, driven through the EC2 API: processes attached to ENIs
with `cove exec` send real TCP traffic, and security groups and network ACLs
changed with boto3 decide what gets through. Needs root (namespaces)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import eventually

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the data plane needs root")

SERVER = "import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n" \
         "s.bind((sys.argv[1],int(sys.argv[2])));s.listen(16)\nprint('ready',flush=True)\n" \
         "while True:\n c,_=s.accept();c.sendall(b'hello');c.close()\n"
CLIENT = "import socket,sys\ns=socket.socket();s.settimeout(0.8)\n" \
         "try:\n s.connect((sys.argv[1],int(sys.argv[2])));print(s.recv(5).decode())\nexcept OSError as e:\n print('blocked',e)\n"



@pytest.fixture
def topology(cove_server, ec2, vpc):
    """Subnets a (10.0.1.0/24) and b (10.0.2.0/24); a web ENI in a, a client ENI in b."""
    a = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    b = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24")["Subnet"]["SubnetId"]
    web_sg = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    web = ec2.create_network_interface(SubnetId=a, Groups=[web_sg])["NetworkInterface"]
    client = ec2.create_network_interface(SubnetId=b)["NetworkInterface"]
    server = None
    assert eventually(lambda: cove_server.exec(web["NetworkInterfaceId"], "true").returncode == 0)
    server = cove_server.spawn(web["NetworkInterfaceId"], sys.executable, "-c", SERVER, web["PrivateIpAddress"], "8080")
    assert server.stdout.readline().strip() == "ready"
    yield {"vpc": vpc, "a": a, "b": b, "web_sg": web_sg, "web": web, "client": client}
    server.send_signal(signal.SIGKILL)
    server.wait()


def reaches(cove_server, topo):
    out = cove_server.exec(topo["client"]["NetworkInterfaceId"], sys.executable, "-c", CLIENT,
                           topo["web"]["PrivateIpAddress"], "8080")
    return out.stdout.strip() == "hello"


def test_security_group_rules_follow_the_api(cove_server, ec2, topology):
    # A new group has no ingress rules: the web server is unreachable.
    assert not reaches(cove_server, topology)
    rule = ec2.authorize_security_group_ingress(GroupId=topology["web_sg"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "IpRanges": [{"CidrIp": "10.0.2.0/24"}]}])
    assert eventually(lambda: reaches(cove_server, topology))
    ec2.revoke_security_group_ingress(GroupId=topology["web_sg"],
                                      SecurityGroupRuleIds=[rule["SecurityGroupRules"][0]["SecurityGroupRuleId"]])
    assert eventually(lambda: not reaches(cove_server, topology))
    # A rule naming the client's group admits it through group membership.
    default_sg = topology["client"]["Groups"][0]["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=topology["web_sg"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "UserIdGroupPairs": [{"GroupId": default_sg}]}])
    assert eventually(lambda: reaches(cove_server, topology))


def test_network_acl_deny_and_stateless_return(cove_server, ec2, topology):
    ec2.authorize_security_group_ingress(GroupId=topology["web_sg"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "IpRanges": [{"CidrIp": "10.0.0.0/16"}]}])
    assert eventually(lambda: reaches(cove_server, topology))
    acl = ec2.create_network_acl(VpcId=topology["vpc"])["NetworkAcl"]["NetworkAclId"]
    default_acl = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [topology["a"]]}])["NetworkAcls"][0]
    assoc = [x for x in default_acl["Associations"] if x["SubnetId"] == topology["a"]][0]["NetworkAclAssociationId"]
    new_assoc = ec2.replace_network_acl_association(AssociationId=assoc, NetworkAclId=acl)["NewAssociationId"]
    # A custom ACL denies everything.
    assert eventually(lambda: not reaches(cove_server, topology))
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=100, Protocol="6", RuleAction="allow", Egress=False,
                                 CidrBlock="10.0.2.0/24", PortRange={"From": 8080, "To": 8080})
    # The request is allowed in, but the reply (to an ephemeral port) is not allowed out.
    time.sleep(0.5)
    assert not reaches(cove_server, topology)
    ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=100, Protocol="6", RuleAction="allow", Egress=True,
                                 CidrBlock="10.0.2.0/24", PortRange={"From": 32768, "To": 61000})
    assert eventually(lambda: reaches(cove_server, topology))
    ec2.replace_network_acl_association(AssociationId=new_assoc, NetworkAclId=default_acl["NetworkAclId"])
    ec2.delete_network_acl(NetworkAclId=acl)


def test_deleting_an_eni_removes_its_namespace(cove_server, ec2, vpc):
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.5.0/24")["Subnet"]["SubnetId"]
    eni = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
    short = eni.split("-")[1][-12:]
    netns = lambda: subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert eventually(lambda: f"-eni-{short}" in netns())
    out = cove_server.exec(eni, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
    assert "10.0.5.4/24" in out.stdout
    ec2.delete_network_interface(NetworkInterfaceId=eni)
    assert eventually(lambda: f"-eni-{short}" not in netns())
    assert cove_server.exec(eni, "true").returncode != 0


def test_overlapping_cidrs_in_two_vpcs_stay_apart(cove_server, ec2):
    """Two VPCs with the same CIDR and the same addresses: each client reaches
    only the server of its own VPC."""
    made = []
    try:
        servers = []
        for greeting in ("one", "two"):
            vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
            subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
            made.append(vpc)
            sg = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"][0]["GroupId"]
            web = ec2.create_network_interface(SubnetId=subnet, Groups=[sg])["NetworkInterface"]
            client = ec2.create_network_interface(SubnetId=subnet, Groups=[sg])["NetworkInterface"]
            assert web["PrivateIpAddress"] == "10.0.1.4" and client["PrivateIpAddress"] == "10.0.1.5"
            assert eventually(lambda: cove_server.exec(web["NetworkInterfaceId"], "true").returncode == 0)
            program = SERVER.replace("b'hello'", repr(greeting.ljust(5).encode()))
            proc = cove_server.spawn(web["NetworkInterfaceId"], sys.executable, "-c", program, "10.0.1.4", "8080")
            assert proc.stdout.readline().strip() == "ready"
            servers.append((proc, client["NetworkInterfaceId"], greeting))
        for _, client, greeting in servers:
            assert eventually(lambda: cove_server.exec(client, sys.executable, "-c", CLIENT, "10.0.1.4", "8080").stdout.strip() == greeting)
    finally:
        for proc, _, _ in servers:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        from conftest import teardown_vpc
        for vpc in made:
            teardown_vpc(ec2, vpc)


ECHO_PEER = "import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n" \
            "s.bind((sys.argv[1],int(sys.argv[2])));s.listen(16)\nprint('ready',flush=True)\n" \
            "while True:\n c,a=s.accept();c.sendall(a[0].encode().ljust(15));c.close()\n"
PEER_CLIENT = "import socket,sys\ns=socket.socket();s.settimeout(0.8)\n" \
              "try:\n s.connect((sys.argv[1],int(sys.argv[2])));print(s.recv(15).decode().strip())\nexcept OSError as e:\n print('blocked',e)\n"
INTERNET = "203.0.113.10"


@pytest.fixture
def internet_host(cove_server):
    """A server on the simulated internet host that answers with the caller's address."""
    proc = cove_server.spawn(None, sys.executable, "-c", ECHO_PEER, INTERNET, "80")
    assert proc.stdout.readline().strip() == "ready"
    yield
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def seen_from(cove_server, eni):
    """The address the internet host sees for a connection from `eni`, or None if blocked."""
    out = cove_server.exec(eni, sys.executable, "-c", PEER_CLIENT, INTERNET, "80").stdout.strip()
    return None if out.startswith("blocked") else out


def test_internet_gateway_nat_gateway_and_blackhole(cove_server, ec2, vpc, internet_host):
    public = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    private = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24")["Subnet"]["SubnetId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    public_rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=public_rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    ec2.associate_route_table(RouteTableId=public_rt, SubnetId=public)
    host = ec2.create_network_interface(SubnetId=public)["NetworkInterface"]["NetworkInterfaceId"]
    worker = ec2.create_network_interface(SubnetId=private)["NetworkInterface"]["NetworkInterfaceId"]
    assert eventually(lambda: cove_server.exec(worker, "true").returncode == 0)

    # An ENI with no public IP gets nothing from an internet gateway alone, as on AWS.
    assert seen_from(cove_server, host) is None
    # A private subnet with no route out reaches nothing either.
    assert seen_from(cove_server, worker) is None

    # A NAT gateway in the public subnet, and the private subnet's default route to it.
    eip = ec2.allocate_address()
    nat = ec2.create_nat_gateway(SubnetId=public, AllocationId=eip["AllocationId"])["NatGateway"]["NatGatewayId"]
    assert eventually(lambda: ec2.describe_nat_gateways(NatGatewayIds=[nat])["NatGateways"][0]["State"] == "available")
    private_rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=private_rt, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    ec2.associate_route_table(RouteTableId=private_rt, SubnetId=private)
    # The internet sees the NAT gateway's Elastic IP, not the worker's private address.
    assert eventually(lambda: seen_from(cove_server, worker) == eip["PublicIp"])
    assert seen_from(cove_server, host) is None

    # Deleting the NAT gateway leaves a blackhole route: the private subnet is cut off again.
    ec2.delete_nat_gateway(NatGatewayId=nat)
    assert eventually(lambda: ec2.describe_nat_gateways(NatGatewayIds=[nat])["NatGateways"][0]["State"] == "deleted")
    route = [r for r in ec2.describe_route_tables(RouteTableIds=[private_rt])["RouteTables"][0]["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"][0]
    assert route["State"] == "blackhole"
    assert eventually(lambda: seen_from(cove_server, worker) is None)
    ec2.delete_route(RouteTableId=private_rt, DestinationCidrBlock="0.0.0.0/0")
    ec2.release_address(AllocationId=eip["AllocationId"])


S3 = "192.0.2.20"
FETCH_STATUS = "import sys,urllib.request,urllib.error\ntry:\n print(urllib.request.urlopen(sys.argv[1],timeout=3).status)\n" \
               "except urllib.error.HTTPError as e:\n print(e.code)\nexcept OSError as e:\n print('blocked',e)\n"
S3_TEST_PORT = "8443"


def test_gateway_endpoint_is_the_only_way_to_s3(cove_server, ec2, vpc):
    """A private subnet reaches S3's address only through an S3 gateway
    endpoint, and S3 sees a source address unique to that endpoint. The echo
    server stands in for S3 on a port Cove itself does not serve (Cove's own
    listeners hold 80 and 443 there)."""
    proc = cove_server.spawn(None, sys.executable, "-c", ECHO_PEER, S3, S3_TEST_PORT)
    try:
        assert proc.stdout.readline().strip() == "ready"
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        ec2.associate_route_table(RouteTableId=rt, SubnetId=subnet)
        sg = ec2.create_security_group(GroupName="job", Description="job", VpcId=vpc)["GroupId"]
        eni = ec2.create_network_interface(SubnetId=subnet, Groups=[sg])["NetworkInterface"]["NetworkInterfaceId"]
        assert eventually(lambda: cove_server.exec(eni, "true").returncode == 0)
        to_s3 = lambda: (cove_server.exec(eni, sys.executable, "-c", PEER_CLIENT, S3, S3_TEST_PORT).stdout.strip() or "blocked")
        # No endpoint, no NAT: S3 is unreachable, as a training job in a private subnet finds.
        assert to_s3().startswith("blocked")
        ep = ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.us-east-1.s3", RouteTableIds=[rt])["VpcEndpoint"]["VpcEndpointId"]
        assert eventually(lambda: not to_s3().startswith("blocked"))
        source = to_s3()
        assert source.startswith("100."), source  # the endpoint's own address, not the ENI's
        # The endpoint carries S3's prefix list and nothing else: not the
        # region network's other addresses, the far end of its own link among
        # them (where a server listening on every address would answer).
        # S3's address serves S3, not Cove's own paths (health, the Studio front).
        for path in ("/_cove/health", "/_cove/studio/d-x/p/"):
            got = cove_server.exec(eni, sys.executable, "-c", FETCH_STATUS, f"http://{S3}{path}").stdout.strip()
            assert got in ("400", "403"), (path, got)  # S3's own error for such a bucket and key
        far_end = ".".join(source.split(".")[:3] + [str(int(source.split(".")[3]) + 1)])
        anywhere = cove_server.spawn(None, sys.executable, "-c", ECHO_PEER, "0.0.0.0", "8446")
        try:
            assert anywhere.stdout.readline().strip() == "ready"
            for address in (far_end, INTERNET):
                out = cove_server.exec(eni, sys.executable, "-c", PEER_CLIENT, address, "8446").stdout.strip()
                assert out.startswith("blocked"), (address, out)
        finally:
            anywhere.send_signal(signal.SIGKILL)
            anywhere.wait()
        # Security groups still apply: egress only to the S3 prefix list on that port works, nothing else.
        pl = ec2.describe_prefix_lists()["PrefixLists"][0]["PrefixListId"]
        default_egress = [r["SecurityGroupRuleId"] for r in ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [sg]}])["SecurityGroupRules"] if r["IsEgress"]]
        ec2.revoke_security_group_egress(GroupId=sg, SecurityGroupRuleIds=default_egress)
        assert eventually(lambda: to_s3().startswith("blocked"))
        ec2.authorize_security_group_egress(GroupId=sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": int(S3_TEST_PORT), "ToPort": int(S3_TEST_PORT),
             "PrefixListIds": [{"PrefixListId": pl}]}])
        assert eventually(lambda: to_s3() == source)
        # Removing the endpoint's route cuts S3 off again.
        ec2.modify_vpc_endpoint(VpcEndpointId=ep, RemoveRouteTableIds=[rt])
        assert eventually(lambda: to_s3().startswith("blocked"))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


ECHO = "import socket,sys,threading\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n" \
       "s.bind((sys.argv[1],int(sys.argv[2])));s.listen(16)\nprint('ready',flush=True)\n" \
       "def serve(c):\n while True:\n  d=c.recv(64)\n  if not d: return\n  c.sendall(d)\n" \
       "while True:\n c,_=s.accept();threading.Thread(target=serve,args=(c,),daemon=True).start()\n"
CONNECT = "import socket,sys\ntry:\n socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=0.8);print('connected')\n" \
          "except OSError as e:\n print('blocked',e)\n"
HOLD = "import socket,sys\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2)\nprint('open',flush=True)\n" \
       "for line in sys.stdin:\n try:\n  s.sendall(line.encode());print(s.recv(64).decode().strip(),flush=True)\n" \
       " except OSError as e:\n  print('broken',e,flush=True)\n"


def test_revoking_a_rule_keeps_open_flows_but_a_nacl_cuts_them(cove_server, ec2, topology):
    """As on AWS: security groups are stateful, so an established (tracked)
    connection survives the revocation of the rule that admitted it while new
    connections are refused; network ACLs are stateless and cut it at once."""
    from conftest import BINARY
    rule = {"IpProtocol": "tcp", "FromPort": 9000, "ToPort": 9000, "IpRanges": [{"CidrIp": "10.0.2.0/24"}]}
    ec2.authorize_security_group_ingress(GroupId=topology["web_sg"], IpPermissions=[rule])
    web_ip = topology["web"]["PrivateIpAddress"]
    echo = cove_server.spawn(topology["web"]["NetworkInterfaceId"], sys.executable, "-c", ECHO, web_ip, "9000")
    holder = None
    try:
        assert echo.stdout.readline().strip() == "ready"
        probe = lambda: cove_server.exec(topology["client"]["NetworkInterfaceId"], sys.executable, "-c", CONNECT, web_ip, "9000").stdout
        assert eventually(lambda: not probe().startswith("blocked"))
        holder = subprocess.Popen([BINARY, "exec", "--data-dir", cove_server.data_dir, "--eni", topology["client"]["NetworkInterfaceId"],
                                   "--privileged", "--", sys.executable, "-c", HOLD, web_ip, "9000"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "open"
        say = lambda word: (holder.stdin.write(word + "\n"), holder.stdin.flush(), holder.stdout.readline().strip())[2]
        assert say("one") == "one"
        ec2.revoke_security_group_ingress(GroupId=topology["web_sg"], IpPermissions=[rule])
        assert eventually(lambda: probe().startswith("blocked"))
        assert say("two") == "two", "the tracked connection outlives the rule"
        # A custom ACL on the web subnet denies everything, including this flow.
        acl = ec2.create_network_acl(VpcId=topology["vpc"])["NetworkAcl"]["NetworkAclId"]
        default_acl = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [topology["a"]]}])["NetworkAcls"][0]
        assoc = [x for x in default_acl["Associations"] if x["SubnetId"] == topology["a"]][0]["NetworkAclAssociationId"]
        new_assoc = ec2.replace_network_acl_association(AssociationId=assoc, NetworkAclId=acl)["NewAssociationId"]
        # The ACL applies asynchronously: talk until it cuts the flow.
        assert eventually(lambda: say("three").startswith("broken")), "the ACL cuts the tracked connection"
        ec2.replace_network_acl_association(AssociationId=new_assoc, NetworkAclId=default_acl["NetworkAclId"])
        ec2.delete_network_acl(NetworkAclId=acl)
    finally:
        for p in (echo, holder):
            if p:
                p.kill()
                p.wait()


def test_cove_exec_works_right_after_create_network_interface(cove_server, ec2, vpc):
    """A script that creates an ENI and at once runs something on it must
    never see a half-made one: `cove exec` waits for the data plane, and the
    data plane publishes the ENI's namespace only once it is whole (its
    address and default route in place)."""
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.8.0/24")["Subnet"]["SubnetId"]
    failures = []
    for _ in range(50):
        eni = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]
        out = cove_server.exec(eni["NetworkInterfaceId"], "cat", "/proc/self/net/route")
        default = any(line.split()[1:2] == ["00000000"] for line in out.stdout.splitlines()[1:])
        if out.returncode != 0 or not default:
            failures.append((eni["NetworkInterfaceId"], out.returncode, out.stderr.strip()[-200:]))
    assert failures == [], failures
    # An ENI the API does not have fails at once, not after the wait.
    started = time.time()
    out = cove_server.exec("eni-0123456789abcdef0", "true")
    assert out.returncode != 0 and "is not a network interface" in out.stderr, out.stderr
    assert time.time() - started < 5
