"""The CDK CLI (npm's aws-cdk, installed in tests/cdk by scripts/test.sh)
deploys a CDK app's private network to Cove through change sets, a
training job runs in it, a change of the app updates the stack, and
`cdk destroy` removes it (docs/cloudformation.md)."""

import json
import os
import subprocess

import pytest

from conftest import ACCESS_KEY, SECRET_KEY

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the data plane needs root")

APP = os.path.join(os.path.dirname(__file__), "..", "cdk")


def cdk(cove_server, tmp_path, *args, **env):
    binary = os.path.join(APP, "node_modules", ".bin", "cdk")
    assert os.access(binary, os.X_OK), "the CDK CLI must be installed: (cd tests/cdk && npm ci)"
    environment = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                       AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1",
                       AWS_ENDPOINT_URL=cove_server.endpoint, CDK_DISABLE_VERSION_CHECK="1",
                       CDK_HOME=str(tmp_path), **env)
    done = subprocess.run([binary, *args, "--no-notices", "--output", str(tmp_path / "cdk.out")], cwd=APP,
                          env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_cdk_deploy_makes_a_private_network_jobs_run_in_and_cdk_destroy_removes_it(cove_server, ec2, tmp_path):
    from test_training_jobs import training_request, training_bucket, wait_for, job_name
    cfn, s3, sm = (cove_server.client(x) for x in ("cloudformation", "s3", "sagemaker"))
    env = {"COVE_CDK_STACK": "CdkNetwork", "COVE_CDK_CIDR": "10.80.0.0/16"}
    outputs = tmp_path / "outputs.json"
    cdk(cove_server, tmp_path, "deploy", "--require-approval", "never", "--outputs-file", str(outputs), **env)
    out = json.loads(outputs.read_text())["CdkNetwork"]
    stack = cfn.describe_stacks(StackName="CdkNetwork")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    types = {r["ResourceType"] for r in cfn.list_stack_resources(StackName="CdkNetwork")["StackResourceSummaries"]}
    assert {"AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::EC2::VPCEndpoint", "AWS::CDK::Metadata"} <= types
    subnets = out["SubnetIds"].split(",")
    described = ec2.describe_subnets(SubnetIds=subnets)["Subnets"]
    assert sorted(s["CidrBlock"] for s in described) == ["10.80.0.0/24", "10.80.1.0/24"]
    endpoint = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [out["VpcId"]]}])["VpcEndpoints"][0]
    assert endpoint["ServiceName"] == "com.amazonaws.us-east-1.s3" and len(endpoint["RouteTableIds"]) == 2
    assert {"Key": "Name", "Value": "CdkNetwork/Vpc"} in endpoint["Tags"]

    # The network is enforced: a job in its isolated subnets reads S3 through the endpoint.
    bucket = training_bucket(s3)
    name = job_name("cdk")
    sm.create_training_job(**training_request(name, bucket, {"subnets": subnets, "sg": out["DefaultGroup"]}))
    assert wait_for(sm, name)["TrainingJobStatus"] == "Completed"

    # A new CIDR replaces the VPC and everything in it; the stack is updated, not remade.
    cdk(cove_server, tmp_path, "deploy", "--require-approval", "never", "--outputs-file", str(outputs),
        **dict(env, COVE_CDK_CIDR="10.81.0.0/16"))
    updated = json.loads(outputs.read_text())["CdkNetwork"]
    assert updated["VpcId"] != out["VpcId"]
    assert cfn.describe_stacks(StackName="CdkNetwork")["Stacks"][0]["StackStatus"] == "UPDATE_COMPLETE"
    assert not ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [out["VpcId"]]}])["Vpcs"]
    assert ec2.describe_vpcs(VpcIds=[updated["VpcId"]])["Vpcs"][0]["CidrBlock"] == "10.81.0.0/16"

    cdk(cove_server, tmp_path, "destroy", "--force", **env)
    assert not ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [updated["VpcId"]]}])["Vpcs"]
    listed = {s["StackName"]: s["StackStatus"] for s in cfn.list_stacks()["StackSummaries"]}
    assert listed["CdkNetwork"] == "DELETE_COMPLETE"
