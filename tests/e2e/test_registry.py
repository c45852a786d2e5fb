"""Cove's ECR-compatible registry with real clients: boto3 for the ECR API,
skopeo for the OCI distribution API, and a training job that runs the
pushed image."""
import base64
import hashlib
import json
import shutil
import subprocess
import time

import botocore.exceptions
import pytest

from test_hosting import client_eni  # noqa: F401  (fixture)
from test_training_jobs import (  # noqa: F401  (fixtures)
    ROLE, bucket, byo_rootfs_tarball, job_name, private_net, s3, s3_endpoint, sm, training_request,
    wait_for,
)

ACCOUNT = "123456789012"
REGISTRY = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")


@pytest.fixture(scope="module")
def ecr(cove_server):
    return cove_server.client("ecr")


def oci_layout(path, layer):
    """An OCI image layout holding one image whose only layer is `layer`."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data):
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    layer_digest, layer_size = put(layer)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}).encode()
    config_digest, config_size = put(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer_size}],
    }).encode()
    manifest_digest, manifest_size = put(manifest)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": manifest_digest, "size": manifest_size}]}))
    return layer_size


def password(ecr):
    data = ecr.get_authorization_token()["authorizationData"][0]
    assert data["proxyEndpoint"] == f"https://{REGISTRY}"
    user, secret = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    assert user == "AWS"
    return secret


def skopeo(*args):
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)


def test_push_with_skopeo_then_train_on_the_image(cove_server, ecr, ec2, s3, sm, bucket, private_net, tmp_path):
    host = f"127.0.0.1:{cove_server.port}"
    layout = tmp_path / "layout"
    tarball = tmp_path / "rootfs.tar.gz"
    byo_rootfs_tarball(tarball)
    layer_size = oci_layout(layout, tarball.read_bytes())
    creds = f"AWS:{password(ecr)}"

    # Without the repository, the push fails with ECR's words.
    out = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds,
                 f"oci:{layout}", f"docker://{host}/pushed-byo:1")
    assert out.returncode != 0
    assert f"The repository with name 'pushed-byo' does not exist in the registry with id '{ACCOUNT}'" in out.stderr

    ecr.create_repository(repositoryName="pushed-byo")
    wrong = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "AWS:not-a-token",
                   f"oci:{layout}", f"docker://{host}/pushed-byo:1")
    assert wrong.returncode != 0
    out = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds,
                 f"oci:{layout}", f"docker://{host}/pushed-byo:1")
    assert out.returncode == 0, out.stderr

    details = ecr.describe_images(repositoryName="pushed-byo")["imageDetails"]
    assert [d["imageTags"] for d in details] == [["1"]]
    assert details[0]["imageSizeInBytes"] == layer_size
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", creds,
                                  f"docker://{host}/pushed-byo:1").stdout)
    assert inspected["Digest"] == details[0]["imageDigest"]

    # Pulled back, the layer is the one pushed.
    pulled = tmp_path / "pulled"
    out = skopeo("copy", "--src-tls-verify=false", "--src-creds", creds,
                 f"docker://{host}/pushed-byo:1", f"oci:{pulled}")
    assert out.returncode == 0, out.stderr
    layer_digest = "sha256:" + hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert (pulled / "blobs" / "sha256" / layer_digest.split(":")[1]).read_bytes() == tarball.read_bytes()

    # A training job names the image by its ECR URI and runs in its root.
    s3_endpoint(ec2, private_net)
    name = job_name("pushed")
    req = training_request(name, bucket, private_net)
    req["AlgorithmSpecification"]["TrainingImage"] = f"{REGISTRY}/pushed-byo:1"
    del req["HyperParameters"]
    sm.create_training_job(**req)
    d = wait_for(sm, name)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert ecr.describe_images(repositoryName="pushed-byo")["imageDetails"][0].get("lastRecordedPullTime")

    # A program the image does not have fails the job at once, not forever.
    broken = job_name("noprog")
    req = training_request(broken, bucket, private_net)
    req["AlgorithmSpecification"]["TrainingImage"] = f"{REGISTRY}/pushed-byo:1"
    req["AlgorithmSpecification"]["ContainerEntrypoint"] = ["no-such-program"]
    del req["HyperParameters"]
    sm.create_training_job(**req)
    d = wait_for(sm, broken, timeout=30)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"].startswith(
        "ClientError: The container could not run its program: exec no-such-program: executable file not found in PATH"
    ), d["FailureReason"]

    # Untagged, the image is gone, and a job naming it fails before it starts.
    ecr.batch_delete_image(repositoryName="pushed-byo", imageIds=[{"imageTag": "1"}])
    assert ecr.list_images(repositoryName="pushed-byo")["imageIds"] == []
    gone = job_name("gone")
    req = training_request(gone, bucket, private_net)
    req["AlgorithmSpecification"]["TrainingImage"] = f"{REGISTRY}/pushed-byo:1"
    del req["HyperParameters"]
    sm.create_training_job(**req)
    d = wait_for(sm, gone)
    assert d["TrainingJobStatus"] == "Failed"
    assert "imageTag:'1'" in d["FailureReason"] and "is not available to Cove" in d["FailureReason"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecr.delete_repository(repositoryName="nope")
    assert e.value.response["Error"]["Code"] == "RepositoryNotFoundException"
    ecr.delete_repository(repositoryName="pushed-byo", force=True)


INSIDE = r'''
import base64, json, sys, urllib.request, boto3, botocore.config
cfg = botocore.config.Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1})
try:
    ecr = boto3.client("ecr", region_name="us-east-1", aws_access_key_id=sys.argv[1],
                       aws_secret_access_key=sys.argv[2], config=cfg)
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    req = urllib.request.Request(sys.argv[3], headers={
        "Authorization": "Basic " + token,
        "Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        print("ok", r.status, r.headers["Docker-Content-Digest"])
except Exception as e:
    print("failed", type(e).__name__, e)
'''


def test_the_registry_from_a_private_subnet_through_the_ecr_interface_endpoints(
        cove_server, ec2, private_net, client_eni, tmp_path):  # noqa: F811
    import sys
    from conftest import ACCESS_KEY, BINARY, SECRET_KEY
    from test_hosting import eventually_out
    tarball = tmp_path / "rootfs.tar.gz"
    byo_rootfs_tarball(tarball)
    out = subprocess.run([BINARY, "image-import", "--data-dir", cove_server.data_dir,
                          f"{REGISTRY}/inside:1", str(tarball)], check=True, capture_output=True, text=True)
    digest = out.stdout.strip().rsplit("@", 1)[1]
    url = f"https://{REGISTRY}/v2/inside/manifests/1"
    call = lambda: cove_server.exec(client_eni["eni"], sys.executable, "-c", INSIDE,  # noqa: E731
                                    ACCESS_KEY, SECRET_KEY, url, timeout=40).stdout.strip()
    # A private subnet reaches neither ECR's API nor the registry.
    assert call().startswith("failed"), "ECR is reachable without endpoints"
    sg = ec2.create_security_group(GroupName="vpce-ecr", Description="ecr", VpcId=private_net["vpc"])["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "UserIdGroupPairs": [{"GroupId": client_eni["sg"]}]}])
    for service in ("ecr.api", "ecr.dkr"):
        ep = ec2.create_vpc_endpoint(VpcId=private_net["vpc"], VpcEndpointType="Interface",
                                     ServiceName=f"com.amazonaws.us-east-1.{service}",
                                     SubnetIds=[private_net["subnets"][0]], SecurityGroupIds=[sg])["VpcEndpoint"]
        assert ep["PrivateDnsEnabled"] is True
    # Through them, over HTTPS with AWS's names: a token from the API, then the manifest.
    out = eventually_out(call, "ok")
    assert out == f"ok 200 {digest}", out


def test_vpc_repository_access_mode_pulls_only_through_the_jobs_network(
        cove_server, ec2, s3, sm, bucket, private_net, tmp_path):  # noqa: F811
    from conftest import BINARY
    tarball = tmp_path / "rootfs.tar.gz"
    byo_rootfs_tarball(tarball)
    subprocess.run([BINARY, "image-import", "--data-dir", cove_server.data_dir, f"{REGISTRY}/vpc-pull:1",
                    str(tarball)], check=True, capture_output=True)
    s3_endpoint(ec2, private_net)

    def job():
        name = job_name("vpcpull")
        req = training_request(name, bucket, private_net)
        req["AlgorithmSpecification"]["TrainingImage"] = f"{REGISTRY}/vpc-pull:1"
        req["AlgorithmSpecification"]["TrainingImageConfig"] = {"TrainingRepositoryAccessMode": "Vpc"}
        del req["HyperParameters"]
        sm.create_training_job(**req)
        return wait_for(sm, name)

    d = job()
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"].startswith(
        f"ClientError: Cannot pull the training image {REGISTRY}/vpc-pull:1 through the job's VPC: "
        f"connecting to {REGISTRY} (192.0.2.9:443): "), d["FailureReason"]
    assert "(from eni-" in d["FailureReason"], d["FailureReason"]
    ec2.modify_vpc_attribute(VpcId=private_net["vpc"], EnableDnsHostnames={"Value": True})
    sg = ec2.create_security_group(GroupName="vpce-ecr", Description="ecr", VpcId=private_net["vpc"])["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "UserIdGroupPairs": [{"GroupId": private_net["sg"]}]}])
    endpoints = {}
    for service in ("ecr.api", "ecr.dkr"):
        endpoints[service] = ec2.create_vpc_endpoint(
            VpcId=private_net["vpc"], VpcEndpointType="Interface", ServiceName=f"com.amazonaws.us-east-1.{service}",
            SubnetIds=private_net["subnets"], SecurityGroupIds=[sg])["VpcEndpoint"]
    group = f"/cove/vpc-pull/{private_net['vpc']}"
    ec2.create_flow_logs(ResourceIds=[private_net["vpc"]], ResourceType="VPC", TrafficType="ALL",
                         LogGroupName=group, DeliverLogsPermissionArn=ROLE)
    d = job()
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    # The image came over the job's ENI from the ecr.dkr endpoint's: the flow
    # log counts at least the layer's bytes from port 443 of an endpoint ENI.
    dkr_ips = {e["PrivateIpAddress"] for e in ec2.describe_network_interfaces(
        NetworkInterfaceIds=endpoints["ecr.dkr"]["NetworkInterfaceIds"])["NetworkInterfaces"]}
    layer = cove_server.client("ecr").describe_images(repositoryName="vpc-pull")["imageDetails"][0]["imageSizeInBytes"]
    logs = cove_server.client("logs")

    def pulled_bytes():
        try:
            events = logs.filter_log_events(logGroupName=group)["events"]
        except logs.exceptions.ResourceNotFoundException:
            return 0
        fields = [e["message"].split(" ") for e in events]
        # version account eni srcaddr dstaddr srcport dstport protocol packets bytes ...
        return sum(int(f[9]) for f in fields if f[3] in dkr_ips and f[5] == "443")
    deadline = time.time() + 30
    while pulled_bytes() < layer and time.time() < deadline:
        time.sleep(0.5)
    assert pulled_bytes() >= layer, (pulled_bytes(), layer)
