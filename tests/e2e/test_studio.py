"""SageMaker Studio: domains with their NFS security groups, user profiles
with a home directory each, and apps that are real processes on ENIs,
reached through the URL CreatePresignedDomainUrl gives. A VpcOnly app
reaches only what its VPC allows; a PublicInternetOnly app gets the
internet through Cove's managed network. Real boto3 and real HTTP
against a real Cove."""

import http.cookiejar
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from helpers import aws_error, wait_status
from test_training_jobs import ROLE, s3_endpoint, private_net, s3, sm  # noqa: F401

S3_ADDRESS = "192.0.2.20"
INTERNET_HOST = "203.0.113.10"


@pytest.fixture
def internet_server(cove_server):
    """A web server on the simulated internet host, port 8080."""
    proc = cove_server.spawn(None, sys.executable, "-u", "-m", "http.server", "8080", "--bind", INTERNET_HOST)
    assert proc.stdout.readline().startswith("Serving HTTP"), "the internet server is listening"
    yield f"{INTERNET_HOST}:8080"
    proc.terminate()
    proc.wait(timeout=10)


class Browser:
    """A client with a cookie jar, as a browser opening the presigned URL."""

    def __init__(self):
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, url, data=None, method=None):
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with self.opener.open(req, timeout=20) as r:
                return r.status, r.geturl(), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, url, e.read().decode()


def create_domain(sm, ec2, net, access, groups=None):  # noqa: F811
    ec2.modify_vpc_attribute(VpcId=net["vpc"], EnableDnsHostnames={"Value": True})
    out = sm.create_domain(
        DomainName=f"studio-{uuid.uuid4().hex[:8]}", AuthMode="IAM", VpcId=net["vpc"], SubnetIds=net["subnets"],
        AppNetworkAccessType=access,
        DefaultUserSettings={"ExecutionRole": ROLE, "SecurityGroups": groups if groups is not None else [net["sg"]]})
    return out["DomainId"], out["Url"]


def wait_app(sm, domain, profile, app_type="JupyterServer", name="default", statuses=("InService", "Failed")):  # noqa: F811
    return wait_status(lambda: sm.describe_app(DomainId=domain, UserProfileName=profile, AppType=app_type,
                                               AppName=name),
                       "Status", statuses, 90, f"app {app_type}/{name}")


def open_studio(sm, domain, profile):  # noqa: F811
    browser = Browser()
    url = sm.create_presigned_domain_url(DomainId=domain, UserProfileName=profile)["AuthorizedUrl"]
    status, landed, page = browser.get(url)
    assert status == 200, page
    base = landed.split("/jupyter/default/")[0] + "/jupyter/default/"
    return browser, base, page


def probe(browser, base, address):
    host, port = address.split(":")
    status, _, body = browser.get(f"{base}api/probe?host={host}&port={port}&timeout=2")
    assert status == 200, body
    return json.loads(body)


def tear_down(sm, domain, profiles, apps):  # noqa: F811
    for profile, app_type, name in apps:
        try:
            sm.delete_app(DomainId=domain, UserProfileName=profile, AppType=app_type, AppName=name)
        except Exception:
            pass
        wait_app(sm, domain, profile, app_type, name, ("Deleted", "Failed"))
    for profile in profiles:
        sm.delete_user_profile(DomainId=domain, UserProfileName=profile)
    sm.delete_domain(DomainId=domain, RetentionPolicy={"HomeEfsFileSystem": "Delete"})


def test_vpc_only_app_reaches_its_endpoint_and_not_the_internet(cove_server, ec2, sm, private_net, internet_server):  # noqa: F811
    s3_endpoint(ec2, private_net)
    domain, url = create_domain(sm, ec2, private_net, "VpcOnly")
    assert url.endswith(f"/_cove/studio/{domain}/")
    d = sm.describe_domain(DomainId=domain)
    assert d["Status"] == "InService" and d["AppNetworkAccessType"] == "VpcOnly"
    assert d["HomeEfsFileSystemId"].startswith("fs-") and d["SubnetIds"] == private_net["subnets"]

    # The NFS groups AWS makes: TCP 2049 from the outbound group into the inbound one.
    groups = {g["GroupName"]: g for g in ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [private_net["vpc"]]}])["SecurityGroups"]}
    inbound, outbound = groups[f"security-group-for-inbound-nfs-{domain}"], groups[f"security-group-for-outbound-nfs-{domain}"]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"], [u["GroupId"] for u in p["UserIdGroupPairs"]])
            for p in inbound["IpPermissions"]] == [("tcp", 2049, 2049, [outbound["GroupId"]])]
    assert [(p["IpProtocol"], p["FromPort"], [u["GroupId"] for u in p["UserIdGroupPairs"]])
            for p in outbound["IpPermissionsEgress"]] == [("tcp", 2049, [inbound["GroupId"]])]

    sm.create_user_profile(DomainId=domain, UserProfileName="alice")
    assert sm.describe_user_profile(DomainId=domain, UserProfileName="alice")["HomeEfsFileSystemUid"] == "200001"
    apps = [("alice", "JupyterServer", "default")]
    try:
        sm.create_app(DomainId=domain, UserProfileName="alice", AppType="JupyterServer", AppName="default")
        app = wait_app(sm, domain, "alice")
        assert app["Status"] == "InService", app.get("FailureReason")

        # The app's ENI is in the domain's subnets with the user's group and the NFS group.
        enis = [e for e in ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [private_net["vpc"]]}])
                ["NetworkInterfaces"] if domain in e["Description"]]
        assert len(enis) == 1 and enis[0]["SubnetId"] in private_net["subnets"] and enis[0]["RequesterManaged"]
        assert {g["GroupId"] for g in enis[0]["Groups"]} == {private_net["sg"], outbound["GroupId"]}

        # Without the presigned URL's session, nothing passes.
        status, _, _ = Browser().get(f"{url}alice/jupyter/default/lab")
        assert status == 403
        presigned = sm.create_presigned_domain_url(DomainId=domain, UserProfileName="alice")["AuthorizedUrl"]
        assert Browser().get(presigned.replace("token=", "token=x"))[0] == 403
        browser, base, page = open_studio(sm, domain, "alice")
        assert "<h1>JupyterServer</h1>" in page
        status, _, body = browser.get(f"{base}api/status")
        assert json.loads(body)["user"] == "alice"

        # The VPC decides: S3 through the gateway endpoint, no internet.
        assert probe(browser, base, f"{S3_ADDRESS}:443")["reached"] is True
        assert probe(browser, base, internet_server)["reached"] is False

        # The home directory is the user's, kept across apps.
        status, _, _ = browser.get(f"{base}api/contents/notes.txt", json.dumps(
            {"type": "file", "format": "text", "content": "kept"}).encode(), "PUT")
        assert status == 201
        # On the domain's EFS file system, in the profile's uid directory.
        home = os.path.join(cove_server.data_dir, "efs", d["HomeEfsFileSystemId"], "200001")
        assert open(os.path.join(home, "notes.txt")).read() == "kept"
        sm.delete_app(DomainId=domain, UserProfileName="alice", AppType="JupyterServer", AppName="default")
        assert wait_app(sm, domain, "alice", statuses=("Deleted", "Failed"))["Status"] == "Deleted"
        assert not [e for e in ec2.describe_network_interfaces(
            Filters=[{"Name": "vpc-id", "Values": [private_net["vpc"]]}])["NetworkInterfaces"] if domain in e["Description"]]
        sm.create_app(DomainId=domain, UserProfileName="alice", AppType="JupyterServer", AppName="default")
        sm.create_app(DomainId=domain, UserProfileName="alice", AppType="KernelGateway", AppName="kg-1",
                      ResourceSpec={"InstanceType": "ml.t3.medium"})
        apps.append(("alice", "KernelGateway", "kg-1"))
        assert wait_app(sm, domain, "alice")["Status"] == "InService"
        assert wait_app(sm, domain, "alice", "KernelGateway", "kg-1")["Status"] == "InService"
        browser, base, _ = open_studio(sm, domain, "alice")
        status, _, body = browser.get(f"{base}api/contents/notes.txt")
        assert json.loads(body)["content"] == "kept"
        listed = sm.list_apps(DomainIdEquals=domain, UserProfileNameEquals="alice")["Apps"]
        assert sorted((a["AppType"], a["AppName"], a["Status"]) for a in listed if a["Status"] != "Deleted") == [
            ("JupyterServer", "default", "InService"), ("KernelGateway", "kg-1", "InService")]
    finally:
        tear_down(sm, domain, ["alice"], apps)
    remaining = {g["GroupName"] for g in ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [private_net["vpc"]]}])["SecurityGroups"]}
    assert not [n for n in remaining if domain in n]
    assert not os.path.exists(os.path.join(cove_server.data_dir, "studio", domain))


def test_homes_are_on_the_domains_efs_behind_the_nfs_groups(cove_server, ec2, sm, private_net):  # noqa: F811
    efs = cove_server.client("efs")
    s3_endpoint(ec2, private_net)
    domain, _ = create_domain(sm, ec2, private_net, "VpcOnly")
    d = sm.describe_domain(DomainId=domain)
    fs = d["HomeEfsFileSystemId"]
    groups = {g["GroupName"]: g["GroupId"] for g in ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [private_net["vpc"]]}])["SecurityGroups"]}
    inbound, outbound = groups[f"security-group-for-inbound-nfs-{domain}"], groups[f"security-group-for-outbound-nfs-{domain}"]

    # The file system AWS makes for a domain: tagged with it, a mount target
    # per zone of its subnets, guarded by the inbound NFS group.
    described = efs.describe_file_systems(FileSystemId=fs)["FileSystems"][0]
    assert {t["Key"]: t["Value"] for t in described["Tags"]}["ManagedByAmazonSageMakerResource"] == d["DomainArn"]
    targets = efs.describe_mount_targets(FileSystemId=fs)["MountTargets"]
    assert sorted(t["SubnetId"] for t in targets) == sorted(private_net["subnets"])
    for t in targets:
        assert efs.describe_mount_target_security_groups(MountTargetId=t["MountTargetId"])["SecurityGroups"] == [inbound]

    sm.create_user_profile(DomainId=domain, UserProfileName="bob")
    apps = []
    try:
        sm.create_app(DomainId=domain, UserProfileName="bob", AppType="JupyterServer", AppName="default")
        apps.append(("bob", "JupyterServer", "default"))
        assert wait_app(sm, domain, "bob")["Status"] == "InService"
        browser, base, _ = open_studio(sm, domain, "bob")
        status, _, _ = browser.get(f"{base}api/contents/plan.txt", json.dumps(
            {"type": "file", "format": "text", "content": "on efs"}).encode(), "PUT")
        assert status == 201
        assert open(os.path.join(cove_server.data_dir, "efs", fs, "200001", "plan.txt")).read() == "on efs"
        # The home is an NFS mount through the app's ENI, not a host directory.
        mounts = open("/proc/mounts").read()
        assert "cove-nfs:/200001" in mounts, mounts
        # The next app of the user sees it.
        sm.create_app(DomainId=domain, UserProfileName="bob", AppType="KernelGateway", AppName="kg",
                      ResourceSpec={"InstanceType": "ml.t3.medium"})
        apps.append(("bob", "KernelGateway", "kg"))
        assert wait_app(sm, domain, "bob", "KernelGateway", "kg")["Status"] == "InService"

        # Without the NFS rule between the groups, the home is out of reach:
        # a new app of the user fails, saying so.
        sm.delete_app(DomainId=domain, UserProfileName="bob", AppType="JupyterServer", AppName="default")
        assert wait_app(sm, domain, "bob", statuses=("Deleted", "Failed"))["Status"] == "Deleted"
        ec2.revoke_security_group_ingress(GroupId=inbound, IpPermissions=[{
            "IpProtocol": "tcp", "FromPort": 2049, "ToPort": 2049, "UserIdGroupPairs": [{"GroupId": outbound}]}])
        sm.create_app(DomainId=domain, UserProfileName="bob", AppType="JupyterServer", AppName="default")
        failed = wait_app(sm, domain, "bob")
        assert failed["Status"] == "Failed"
        assert failed["FailureReason"].startswith(
            f"ClientError: Unable to mount the home directory of user profile bob (directory /200001 of file system {fs})"), \
            failed["FailureReason"]
    finally:
        tear_down(sm, domain, ["bob"], apps + [("bob", "JupyterServer", "default")])
    # RetentionPolicy Delete: the file system and its bytes are gone.
    aws_error("FileSystemNotFound", efs.describe_file_systems, FileSystemId=fs)
    assert not os.path.exists(os.path.join(cove_server.data_dir, "efs", fs))


def test_public_internet_only_app_gets_the_internet(cove_server, ec2, sm, private_net, internet_server):  # noqa: F811
    domain, _ = create_domain(sm, ec2, private_net, "PublicInternetOnly")
    sm.create_user_profile(DomainId=domain, UserProfileName="bob")
    try:
        sm.create_app(DomainId=domain, UserProfileName="bob", AppType="JupyterServer", AppName="default")
        app = wait_app(sm, domain, "bob")
        assert app["Status"] == "InService", app.get("FailureReason")
        browser, base, _ = open_studio(sm, domain, "bob")
        assert probe(browser, base, internet_server)["reached"] is True
        # Its ENI is in Cove's managed network, with a public address, not in
        # the domain's VPC; a second one in the domain's VPC carries its home.
        enis = [e for e in ec2.describe_network_interfaces()["NetworkInterfaces"] if domain in e["Description"]]
        managed = [e for e in enis if e["VpcId"] != private_net["vpc"]]
        home = [e for e in enis if e["VpcId"] == private_net["vpc"]]
        assert len(managed) == 1 and len(home) == 1, enis
        assert "home file system of bob" in home[0]["Description"] and "Association" not in home[0]
        public_ip = managed[0]["Association"]["PublicIp"]
        assert public_ip
        status, _, _ = browser.get(f"{base}api/contents/hello.txt", json.dumps(
            {"type": "file", "format": "text", "content": "through the home ENI"}).encode(), "PUT")
        assert status == 201
        fs = sm.describe_domain(DomainId=domain)["HomeEfsFileSystemId"]
        uid = sm.describe_user_profile(DomainId=domain, UserProfileName="bob")["HomeEfsFileSystemUid"]
        assert open(os.path.join(cove_server.data_dir, "efs", fs, uid, "hello.txt")).read() == "through the home ENI"
    finally:
        tear_down(sm, domain, ["bob"], [("bob", "JupyterServer", "default")])
    # The app's Elastic IP went with its ENI, and the home ENI with it.
    assert public_ip not in [a["PublicIp"] for a in ec2.describe_addresses()["Addresses"]]
    assert not [e for e in ec2.describe_network_interfaces()["NetworkInterfaces"] if domain in e["Description"]]


def test_studio_validation_and_errors(ec2, sm, private_net):  # noqa: F811
    assert "SSO is not supported" in aws_error("ValidationException", sm.create_domain, DomainName="sso", AuthMode="SSO",
                                               DefaultUserSettings={}, VpcId=private_net["vpc"],
                                               SubnetIds=private_net["subnets"])
    assert "do not exist" in aws_error("ValidationException", sm.create_domain, DomainName="bad", AuthMode="IAM",
                                       DefaultUserSettings={}, VpcId=private_net["vpc"],
                                       SubnetIds=["subnet-00000000000000000"])
    assert aws_error("ResourceNotFound", sm.describe_domain, DomainId="d-000000000000") == \
        "Cannot find Domain with id d-000000000000"
    domain, _ = create_domain(sm, ec2, private_net, "VpcOnly")
    try:
        sm.create_user_profile(DomainId=domain, UserProfileName="carol")
        assert "already exists" in aws_error("ResourceInUse", sm.create_user_profile, DomainId=domain,
                                             UserProfileName="carol")
        assert "must be named default" in aws_error("ValidationException", sm.create_app, DomainId=domain,
                                                    UserProfileName="carol", AppType="JupyterServer", AppName="other")
        assert "not supported by Cove" in aws_error("ValidationException", sm.create_app, DomainId=domain,
                                                    UserProfileName="carol", AppType="Canvas", AppName="default")
        assert "has user profiles" in aws_error("ResourceInUse", sm.delete_domain, DomainId=domain)
        profiles = sm.list_user_profiles(DomainIdEquals=domain)["UserProfiles"]
        assert [(p["UserProfileName"], p["Status"]) for p in profiles] == [("carol", "InService")]
        assert domain in [d["DomainId"] for d in sm.list_domains()["Domains"]]
        sm.update_domain(DomainId=domain, DefaultUserSettings={"ExecutionRole": ROLE, "SecurityGroups": []})
        assert sm.describe_domain(DomainId=domain)["DefaultUserSettings"]["SecurityGroups"] == []
        sm.delete_user_profile(DomainId=domain, UserProfileName="carol")
    finally:
        sm.delete_domain(DomainId=domain)
    assert domain not in [d["DomainId"] for d in sm.list_domains()["Domains"]]


JUPYTERLAB_VENV = "/usr/local/lib/cove-jupyterlab"
JUPYTERLAB_COMMAND = (f"{JUPYTERLAB_VENV}/bin/jupyter-lab --ip=0.0.0.0 --port={{port}} --no-browser "
                      "--ServerApp.base_url={base_url} --IdentityProvider.token= --ServerApp.password= "
                      "--ServerApp.allow_remote_access=True --ServerApp.root_dir={home}")

# Runs in JupyterLab's own environment (it has tornado's WebSocket client):
# sign in with the presigned URL, start a kernel over REST, run code over the
# kernel's WebSocket channel, print what the kernel printed.
KERNEL_CLIENT = r'''
import asyncio, http.cookiejar, json, sys, urllib.request, uuid
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect
jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
r = opener.open(sys.argv[1], timeout=60)
page, landed = r.read().decode(), r.geturl()
assert "JupyterLab" in page, landed
base = landed.split("/lab")[0] + "/"
xsrf = next((c.value for c in jar if c.name == "_xsrf"), "")
req = urllib.request.Request(base + "api/kernels", data=b"{}", method="POST",
                             headers={"X-XSRFToken": xsrf, "Content-Type": "application/json"})
kernel = json.loads(opener.open(req, timeout=60).read())["id"]
cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
async def main():
    ws = await websocket_connect(HTTPRequest(base.replace("http://", "ws://") + f"api/kernels/{kernel}/channels",
                                             headers={"Cookie": cookie}))
    msg = uuid.uuid4().hex
    await ws.write_message(json.dumps({"header": {"msg_id": msg, "username": "u", "session": uuid.uuid4().hex,
        "msg_type": "execute_request", "version": "5.3"}, "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": "import os, pwd, socket; print(socket.gethostname(), pwd.getpwuid(os.getuid()).pw_name, os.getuid() >= 0x70000000, os.getcwd())",
                    "silent": False}}))
    while True:
        m = json.loads(await asyncio.wait_for(ws.read_message(), 60))
        if m.get("msg_type") == "stream" and m["parent_header"].get("msg_id") == msg:
            print(m["content"]["text"].strip())
            return
asyncio.run(main())
'''


def studio_on(server):
    """A VpcOnly domain, a user and its JupyterServer app on a private server."""
    import botocore.config
    import boto3
    from conftest import ACCESS_KEY, SECRET_KEY
    kw = dict(endpoint_url=server.endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
              aws_secret_access_key=SECRET_KEY, config=botocore.config.Config(retries={"max_attempts": 1}))
    ec2, sm = boto3.client("ec2", **kw), boto3.client("sagemaker", **kw)  # noqa: F811
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="users", Description="users", VpcId=vpc)["GroupId"]
    domain, _ = create_domain(sm, ec2, {"vpc": vpc, "subnets": [subnet], "sg": sg}, "VpcOnly")
    sm.create_user_profile(DomainId=domain, UserProfileName="dana")
    sm.create_app(DomainId=domain, UserProfileName="dana", AppType="JupyterServer", AppName="default")
    return sm, domain, wait_app(sm, domain, "dana")


@pytest.mark.skipif(not os.path.exists(f"{JUPYTERLAB_VENV}/bin/jupyter-lab"),
                    reason="scripts/test.sh installs JupyterLab in /usr/local/lib/cove-jupyterlab when run as root")
def test_jupyterlab_runs_a_kernel_through_the_proxy(tmp_path):
    from conftest import Cove
    server = Cove(str(tmp_path), env={"COVE_STUDIO_APP_COMMAND": JUPYTERLAB_COMMAND}).start()
    try:
        sm, domain, app = studio_on(server)  # noqa: F811
        assert app["Status"] == "InService", app.get("FailureReason")
        url = sm.create_presigned_domain_url(DomainId=domain, UserProfileName="dana")["AuthorizedUrl"]
        out = subprocess.run([f"{JUPYTERLAB_VENV}/bin/python", "-c", KERNEL_CLIENT, url], capture_output=True,
                             text=True, timeout=120, stdin=subprocess.DEVNULL)
        # The kernel runs in the app: its hostname, the app's own identity, the user's home.
        assert out.stdout.strip() == "jupyterserver-default sagemaker-user True /home/sagemaker-user", \
            out.stderr[-2000:]
    finally:
        server.stop()
        server.teardown()


def test_an_app_command_that_cannot_start_fails_the_app(tmp_path):
    from conftest import Cove
    server = Cove(str(tmp_path), env={"COVE_STUDIO_APP_COMMAND": "/nonexistent/studio-app --port {port}"}).start()
    try:
        _, _, app = studio_on(server)
        assert app["Status"] == "Failed"
        assert app["FailureReason"].startswith("The app's process could not start:"), app["FailureReason"]
        assert "/nonexistent/studio-app" in app["FailureReason"]
    finally:
        server.stop()
        server.teardown()


def test_apps_and_sessions_survive_a_cove_crash(fresh_cove):
    import signal
    sm, domain, app = studio_on(fresh_cove)  # noqa: F811
    assert app["Status"] == "InService", app.get("FailureReason")
    browser, base, _ = open_studio(sm, domain, "dana")
    started = json.loads(browser.get(f"{base}api/status")[2])["started"]
    fresh_cove.stop(signal.SIGKILL)
    fresh_cove.start()
    # The same process serves on (adopted, not restarted), and the session
    # cookie signed before the crash is still good: the key is on disk.
    assert sm.describe_app(DomainId=domain, UserProfileName="dana", AppType="JupyterServer",
                           AppName="default")["Status"] == "InService"
    status, _, body = browser.get(f"{base}api/status")
    assert status == 200 and json.loads(body)["started"] == started
    sm.delete_app(DomainId=domain, UserProfileName="dana", AppType="JupyterServer", AppName="default")
    assert wait_app(sm, domain, "dana", statuses=("Deleted", "Failed"))["Status"] == "Deleted"
