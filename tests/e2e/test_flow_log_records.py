"""Flow-log records built from the kernel's own counters, read back with
boto3's `logs` client: an allowed connection gives ACCEPT records (one per
direction) with real packet and byte counts on both ENIs, a connection the
server's security group blocks gives a REJECT record on the server's ENI and
an ACCEPT on the client's (the packet did leave it), and a REJECT-only flow
log carries only rejections. Needs root."""

import os
import sys
import time

import pytest

from test_dataplane import CLIENT, eventually, topology  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the data plane needs root")

ROLE = "arn:aws:iam::123456789012:role/flow-logs"
V2_FIELDS = ["version", "account-id", "interface-id", "srcaddr", "dstaddr", "srcport", "dstport",
             "protocol", "packets", "bytes", "start", "end", "action", "log-status"]


def records(logs, group, eni):
    """Every record of an ENI's stream, as dicts of the version-2 fields."""
    try:
        events = logs.filter_log_events(logGroupName=group, logStreamNames=[eni])["events"]
    except logs.exceptions.ResourceNotFoundException:
        return []
    out = []
    for e in events:
        parts = e["message"].split(" ")
        assert len(parts) == len(V2_FIELDS), e["message"]
        r = dict(zip(V2_FIELDS, parts))
        assert e["timestamp"] == int(r["start"]) * 1000
        out.append(r)
    return out


def find(recs, **want):
    return [r for r in recs if all(r[k] == str(v) for k, v in want.items())]


def test_accept_and_reject_records_reach_cloudwatch_logs(cove_server, ec2, topology):
    logs = cove_server.client("logs")
    vpc, a = topology["vpc"], topology["a"]
    ec2.authorize_security_group_ingress(GroupId=topology["web_sg"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "IpRanges": [{"CidrIp": "10.0.2.0/24"}]}])
    web_id, client_id = topology["web"]["NetworkInterfaceId"], topology["client"]["NetworkInterfaceId"]
    web_ip, client_ip = topology["web"]["PrivateIpAddress"], topology["client"]["PrivateIpAddress"]
    group = f"/cove/flows/{vpc}"
    ec2.create_flow_logs(ResourceIds=[vpc], ResourceType="VPC", TrafficType="ALL", LogGroupName=group,
                         DeliverLogsPermissionArn=ROLE, MaxAggregationInterval=60)
    rejects_group = f"/cove/rejects/{vpc}"
    ec2.create_flow_logs(ResourceIds=[a], ResourceType="Subnet", TrafficType="REJECT", LogGroupName=rejects_group,
                         DeliverLogsPermissionArn=ROLE)
    try:
        # Rules are applied asynchronously; the first connection may race them.
        assert eventually(lambda: cove_server.exec(client_id, sys.executable, "-c", CLIENT, web_ip, "8080").stdout.strip() == "hello")

        def complete():
            # Flow logs start capturing once the router has their sets (AWS takes
            # minutes); keep traffic flowing until the records are there.
            assert cove_server.exec(client_id, sys.executable, "-c", CLIENT, web_ip, "8080").stdout.strip() == "hello"
            assert cove_server.exec(client_id, sys.executable, "-c", CLIENT, web_ip, "9090").stdout.startswith("blocked")
            time.sleep(1)
            w, c = records(logs, group, web_id), records(logs, group, client_id)
            return (find(w, srcaddr=client_ip, dstport=8080, action="ACCEPT")
                    and find(w, srcaddr=web_ip, srcport=8080, action="ACCEPT")
                    and find(w, dstport=9090, action="REJECT")
                    and find(c, dstaddr=web_ip, dstport=9090, action="ACCEPT")
                    and find(c, srcaddr=web_ip, srcport=8080, action="ACCEPT"))
        assert eventually(complete, timeout=30), (records(logs, group, web_id), records(logs, group, client_id))

        w = records(logs, group, web_id)
        request = find(w, srcaddr=client_ip, dstaddr=web_ip, dstport=8080, action="ACCEPT")
        reply = find(w, srcaddr=web_ip, dstaddr=client_ip, srcport=8080, action="ACCEPT")
        for r in request + reply:
            assert r["version"] == "2" and r["account-id"] == "123456789012" and r["interface-id"] == web_id
            assert r["protocol"] == "6" and r["log-status"] == "OK"
            assert int(r["start"]) <= int(r["end"]) <= time.time() + 1
        # A TCP exchange: SYN, ACK, FIN... in, and SYN-ACK, "hello", FIN... out. IPv4+TCP headers are
        # at least 40 bytes a packet, so bytes >= 40 x packets.
        sent_in = sum(int(r["packets"]) for r in request)
        sent_out = sum(int(r["packets"]) for r in reply)
        assert sent_in >= 3 and sent_out >= 3, (request, reply)
        for r in request + reply:
            assert int(r["bytes"]) >= 40 * int(r["packets"])
        rejected = find(w, srcaddr=client_ip, dstaddr=web_ip, dstport=9090, action="REJECT")
        assert rejected and all(int(r["packets"]) >= 1 for r in rejected)

        # The REJECT-only flow log of subnet a: the web ENI's rejections, nothing accepted,
        # and no stream for the client's ENI (subnet b is not covered).
        assert eventually(lambda: find(records(logs, rejects_group, web_id), dstport=9090), timeout=20)
        assert all(r["action"] == "REJECT" for r in records(logs, rejects_group, web_id))
        assert records(logs, rejects_group, client_id) == []
    finally:
        for f in ec2.describe_flow_logs(Filters=[{"Name": "resource-id", "Values": [vpc, a]}])["FlowLogs"]:
            ec2.delete_flow_logs(FlowLogIds=[f["FlowLogId"]])


# A client that connects from a chosen source port, so each connection's records can be told apart.
PORT_CLIENT = "import socket,sys\ns=socket.socket();s.settimeout(0.8)\n" \
              "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind((sys.argv[3],int(sys.argv[4])))\n" \
              "try:\n s.connect((sys.argv[1],int(sys.argv[2])));print(s.recv(5).decode())\nexcept OSError as e:\n print('blocked',e)\n"


def test_a_flow_just_before_a_configuration_change_is_logged(cove_server, ec2, topology):
    """AWS logs every flow of the interval whatever the configuration does
    meanwhile. The kernel's counters live in sets that a rule, ACL or route
    change must not empty before the collector has read them."""
    logs = cove_server.client("logs")
    vpc = topology["vpc"]
    web_id, client_id = topology["web"]["NetworkInterfaceId"], topology["client"]["NetworkInterfaceId"]
    web_ip, client_ip = topology["web"]["PrivateIpAddress"], topology["client"]["PrivateIpAddress"]
    ec2.authorize_security_group_ingress(GroupId=topology["web_sg"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "IpRanges": [{"CidrIp": "10.0.2.0/24"}]}])
    group = f"/cove/flows-before-change/{vpc}"
    ec2.create_flow_logs(ResourceIds=[vpc], ResourceType="VPC", TrafficType="ALL", LogGroupName=group,
                         DeliverLogsPermissionArn=ROLE, MaxAggregationInterval=60)
    main_table = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                    {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]

    def connect(port):
        out = cove_server.exec(client_id, sys.executable, "-c", PORT_CLIENT, web_ip, "8080", client_ip, str(port))
        return out.stdout.strip() == "hello"

    try:
        # The flow log is capturing once a warm-up connection shows up in it.
        warm = iter(range(44000, 44100))
        assert eventually(lambda: connect(next(warm)) and find(records(logs, group, web_id), dstport=8080),
                          timeout=30)
        changes = [
            ("security group rule", lambda: ec2.authorize_security_group_ingress(
                GroupId=topology["web_sg"], IpPermissions=[
                    {"IpProtocol": "tcp", "FromPort": 9999, "ToPort": 9999,
                     "IpRanges": [{"CidrIp": "198.51.100.0/24"}]}])),
            ("network ACL", lambda: ec2.create_network_acl(VpcId=vpc)),
            ("route", lambda: ec2.create_route(RouteTableId=main_table["RouteTableId"],
                                               DestinationCidrBlock="198.51.100.0/24",
                                               NetworkInterfaceId=web_id)),
        ]
        ports = {}
        for i, (what, change) in enumerate(changes):
            ports[what] = 45000 + i
            assert connect(ports[what]), what
            change()

        def logged():
            w = records(logs, group, web_id)
            return all(find(w, srcaddr=client_ip, srcport=p, dstport=8080, action="ACCEPT") for p in ports.values())
        assert eventually(logged, timeout=30), [
            what for what, p in ports.items() if not find(records(logs, group, web_id), srcport=p)]
    finally:
        for f in ec2.describe_flow_logs(Filters=[{"Name": "resource-id", "Values": [vpc]}])["FlowLogs"]:
            ec2.delete_flow_logs(FlowLogIds=[f["FlowLogId"]])
