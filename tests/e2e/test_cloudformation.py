"""CloudFormation, as far as Cove serves it: ValidateTemplate and
GetTemplateSummary with the AWS CLI and boto3 on real templates (YAML with
the short-form tags, JSON), and CloudFormation's ValidationError words for
broken ones; stacks of EC2 VPC resources created, rolled back and deleted
through the EC2 API; a private SageMaker design (endpoints with private DNS,
a flow log, a bucket policy, a role, a model served from an endpoint) made
from one template and used from inside its VPC (docs/cloudformation.md)."""

import json
import os
import shutil
import subprocess
import sys
import time

import botocore.exceptions
import pytest

from conftest import ACCESS_KEY, SECRET_KEY
from helpers import eventually

PRIVATE_NETWORK = """
AWSTemplateFormatVersion: "2010-09-09"
Description: Two private subnets for SageMaker jobs, an S3 gateway endpoint and a self-referencing group
Parameters:
  Env:
    Type: String
    Default: dev
    AllowedValues: [dev, prod]
    Description: the stage
  VpcCidr:
    Type: String
    Default: 10.0.0.0/16
Conditions:
  IsProd: !Equals [!Ref Env, prod]
Resources:
  Vpc:
    Type: AWS::EC2::VPC
    Properties:
      CidrBlock: !Ref VpcCidr
      EnableDnsSupport: true
      EnableDnsHostnames: true
  SubnetA:
    Type: AWS::EC2::Subnet
    Properties:
      VpcId: !Ref Vpc
      CidrBlock: !Select [0, !Cidr [!GetAtt Vpc.CidrBlock, 2, 8]]
      AvailabilityZone: !Select [0, !GetAZs ""]
  SubnetB:
    Type: AWS::EC2::Subnet
    Properties:
      VpcId: !Ref Vpc
      CidrBlock: !Select [1, !Cidr [!GetAtt Vpc.CidrBlock, 2, 8]]
      AvailabilityZone: !Select [1, !GetAZs ""]
  JobGroup:
    Type: AWS::EC2::SecurityGroup
    Properties:
      GroupDescription: !Sub "${AWS::StackName} jobs"
      VpcId: !Ref Vpc
  SelfIngress:
    Type: AWS::EC2::SecurityGroupIngress
    Properties:
      GroupId: !Ref JobGroup
      IpProtocol: "-1"
      SourceSecurityGroupId: !GetAtt JobGroup.GroupId
  S3Endpoint:
    Type: AWS::EC2::VPCEndpoint
    Properties:
      VpcId: !Ref Vpc
      ServiceName: !Sub "com.amazonaws.${AWS::Region}.s3"
  JobRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Statement:
          - Effect: Allow
            Principal: {Service: sagemaker.amazonaws.com}
            Action: sts:AssumeRole
Outputs:
  SubnetIds:
    Value: !Join [",", [!Ref SubnetA, !Ref SubnetB]]
  Stage:
    Condition: IsProd
    Value: production
"""


def aws(cove_server, *args, check=True, **extra_env):
    cli = shutil.which("aws", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    assert cli, "the AWS CLI must be installed (tests/requirements.txt)"
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1", **extra_env)
    return subprocess.run([cli, "--endpoint-url", cove_server.endpoint, "--output", "json", *args], env=env,
                          check=check, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def test_the_cli_validates_a_private_network_template(cove_server, tmp_path):
    template = tmp_path / "network.yaml"
    template.write_text(PRIVATE_NETWORK)
    out = json.loads(aws(cove_server, "cloudformation", "validate-template",
                         "--template-body", f"file://{template}").stdout)
    assert out["Description"].startswith("Two private subnets")
    assert {p["ParameterKey"]: p.get("DefaultValue") for p in out["Parameters"]} == {
        "Env": "dev", "VpcCidr": "10.0.0.0/16"}
    assert out["Capabilities"] == ["CAPABILITY_IAM"]
    assert out["CapabilitiesReason"] == "The following resource(s) require capabilities: [AWS::IAM::Role]"


def test_get_template_summary_lists_types_and_constraints(cove_server):
    cfn = cove_server.client("cloudformation")
    s = cfn.get_template_summary(TemplateBody=PRIVATE_NETWORK)
    assert s["ResourceTypes"] == ["AWS::EC2::SecurityGroup", "AWS::EC2::SecurityGroupIngress", "AWS::EC2::Subnet",
                                  "AWS::EC2::VPC", "AWS::EC2::VPCEndpoint", "AWS::IAM::Role"]
    assert s["Version"] == "2010-09-09"
    env = next(p for p in s["Parameters"] if p["ParameterKey"] == "Env")
    assert env["ParameterConstraints"]["AllowedValues"] == ["dev", "prod"] and env["ParameterType"] == "String"
    # JSON templates too.
    j = cfn.get_template_summary(TemplateBody=json.dumps({"Resources": {"B": {"Type": "AWS::S3::Bucket"}}}))
    assert j["ResourceTypes"] == ["AWS::S3::Bucket"]


@pytest.mark.parametrize("body,message", [
    ("Resources:\n  A:\n    Type: AWS::S3::Bucket\n    Properties:\n      BucketName: !Ref Missing\n",
     "Template format error: Unresolved resource dependencies [Missing] in the Resources block of the template"),
    ("Description: nothing\n", "Template format error: At least one Resources member must be defined."),
    ("Resources: [1, 2\n", "Template format error: YAML not well-formed. (line 2, column 1)"),
    ('{"Resources": ', "Template format error: JSON not well-formed. (line 1, column 14)"),
    ("Resources:\n  A:\n    Properties: {}\n",
     "Template format error: [/Resources/A] Every Resources object must contain a Type member."),
])
def test_broken_templates_get_cloudformations_validation_errors(cove_server, body, message):
    cfn = cove_server.client("cloudformation")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cfn.validate_template(TemplateBody=body)
    assert e.value.response["Error"]["Code"] == "ValidationError"
    assert e.value.response["Error"]["Message"] == message
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_the_templates_of_these_tests_are_cfn_lint_clean(tmp_path):
    paths = []
    for name, body in (("private", PRIVATE_NETWORK), ("design", SAGEMAKER_DESIGN), ("studio", STUDIO),
                       ("deployed", DEPLOYED), ("importer", IMPORTER),
                       ("network", STACK_NETWORK.replace("SUBNET_B_CIDR", "10.70.1.0/24"))):
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(body)
    lint = subprocess.run([os.path.join(os.path.dirname(sys.executable), "cfn-lint"), "--regions", "us-east-1",
                           "-t", *map(str, paths)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_operations_not_served_yet_say_so(cove_server):
    failed = aws(cove_server, "cloudformation", "detect-stack-drift", "--stack-name", "x", check=False)
    assert failed.returncode != 0 and "InvalidAction" in failed.stderr


STACK_NETWORK = """
AWSTemplateFormatVersion: "2010-09-09"
Description: a private network for SageMaker jobs
Parameters:
  Cidr: {Type: String, Default: 10.70.0.0/16}
Resources:
  Vpc:
    Type: AWS::EC2::VPC
    Properties:
      CidrBlock: !Ref Cidr
      EnableDnsHostnames: true
      Tags: [{Key: Name, Value: !Sub "${AWS::StackName}-vpc"}]
  SubnetA:
    Type: AWS::EC2::Subnet
    Properties:
      VpcId: !Ref Vpc
      CidrBlock: !Select [0, !Cidr [!GetAtt Vpc.CidrBlock, 2, 8]]
      AvailabilityZone: !Select [0, !GetAZs ""]
  SubnetB:
    Type: AWS::EC2::Subnet
    Properties:
      VpcId: !Ref Vpc
      CidrBlock: SUBNET_B_CIDR
      AvailabilityZone: !Select [1, !GetAZs ""]
  JobGroup:
    Type: AWS::EC2::SecurityGroup
    Properties:
      GroupDescription: jobs
      VpcId: !Ref Vpc
  SelfIngress:
    Type: AWS::EC2::SecurityGroupIngress
    Properties:
      GroupId: !Ref JobGroup
      IpProtocol: "-1"
      SourceSecurityGroupId: !GetAtt JobGroup.GroupId
  Private:
    Type: AWS::EC2::RouteTable
    Properties: {VpcId: !Ref Vpc}
  AssocA:
    Type: AWS::EC2::SubnetRouteTableAssociation
    Properties: {SubnetId: !Ref SubnetA, RouteTableId: !Ref Private}
  AssocB:
    Type: AWS::EC2::SubnetRouteTableAssociation
    Properties: {SubnetId: !Ref SubnetB, RouteTableId: !Ref Private}
  S3Endpoint:
    Type: AWS::EC2::VPCEndpoint
    Properties:
      VpcId: !Ref Vpc
      ServiceName: !Sub "com.amazonaws.${AWS::Region}.s3"
      RouteTableIds: [!Ref Private]
Outputs:
  Subnets: {Value: !Join [",", [!Ref SubnetA, !Ref SubnetB]]}
  JobGroup: {Value: !GetAtt JobGroup.GroupId}
"""


def user_tags(resource):
    """A resource's tags without the aws:cloudformation:* ones CloudFormation adds."""
    return [t for t in resource.get("Tags", []) if not t["Key"].startswith("aws:")]


def wait_stack(cfn, name, statuses, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = cfn.describe_stacks(StackName=name)["Stacks"][0]
        if s["StackStatus"] in statuses:
            return s
        time.sleep(0.2)
    raise AssertionError(f"stack {name} stayed {s['StackStatus']}")


def test_a_stack_makes_its_network_through_the_ec2_api_and_deleting_it_removes_everything(cove_server, ec2, tmp_path):
    cfn = cove_server.client("cloudformation")
    template = tmp_path / "network.yaml"
    template.write_text(STACK_NETWORK.replace("SUBNET_B_CIDR", "!Select [1, !Cidr [!GetAtt Vpc.CidrBlock, 2, 8]]"))
    stack_id = json.loads(aws(cove_server, "cloudformation", "create-stack", "--stack-name", "ml-network",
                              "--template-body", f"file://{template}").stdout)["StackId"]
    assert stack_id.startswith("arn:aws:cloudformation:us-east-1:123456789012:stack/ml-network/")
    s = wait_stack(cfn, "ml-network", ("CREATE_COMPLETE", "ROLLBACK_COMPLETE"))
    assert s["StackStatus"] == "CREATE_COMPLETE", cfn.describe_stack_events(StackName="ml-network")["StackEvents"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in s["Outputs"]}
    subnets = outputs["Subnets"].split(",")
    resources = {r["LogicalResourceId"]: r for r in cfn.list_stack_resources(StackName="ml-network")["StackResourceSummaries"]}
    assert {r["ResourceStatus"] for r in resources.values()} == {"CREATE_COMPLETE"}
    vpc = resources["Vpc"]["PhysicalResourceId"]
    # What the stack made is what the EC2 API shows, and what the data plane enforces.
    described = ec2.describe_subnets(SubnetIds=subnets)["Subnets"]
    assert sorted(x["CidrBlock"] for x in described) == ["10.70.0.0/24", "10.70.1.0/24"]
    assert {x["AvailabilityZone"] for x in described} == {"us-east-1a", "us-east-1b"}
    tags = ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["Tags"]
    assert user_tags({"Tags": tags}) == [{"Key": "Name", "Value": "ml-network-vpc"}]
    # As on AWS, the stack's own tags say where it came from.
    assert {"Key": "aws:cloudformation:stack-id", "Value": stack_id} in tags
    assert {"Key": "aws:cloudformation:logical-id", "Value": "Vpc"} in tags
    assert {"Key": "aws:cloudformation:stack-name", "Value": "ml-network"} in tags
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [outputs["JobGroup"]]}])
    assert any(r.get("ReferencedGroupInfo", {}).get("GroupId") == outputs["JobGroup"] and not r["IsEgress"]
               for r in rules["SecurityGroupRules"])
    table = ec2.describe_route_tables(RouteTableIds=[resources["Private"]["PhysicalResourceId"]])["RouteTables"][0]
    assert any(r.get("GatewayId", "").startswith("vpce-") for r in table["Routes"])
    events = cfn.describe_stack_events(StackName="ml-network")["StackEvents"]
    assert events[0]["ResourceStatus"] == "CREATE_COMPLETE" and events[0]["LogicalResourceId"] == "ml-network"
    assert "Resources:" in cfn.get_template(StackName="ml-network")["TemplateBody"]
    # A second stack of the same name is refused.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cfn.create_stack(StackName="ml-network", TemplateBody=template.read_text())
    assert e.value.response["Error"]["Code"] == "AlreadyExistsException"

    aws(cove_server, "cloudformation", "delete-stack", "--stack-name", "ml-network")
    deleted = wait_stack(cfn, stack_id, ("DELETE_COMPLETE", "DELETE_FAILED"))
    assert deleted["StackStatus"] == "DELETE_COMPLETE"
    assert not ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Vpcs"]
    listed = {x["StackId"]: x["StackStatus"] for x in cfn.list_stacks()["StackSummaries"]}
    assert listed[stack_id] == "DELETE_COMPLETE"
    with pytest.raises(botocore.exceptions.ClientError):
        cfn.describe_stacks(StackName="ml-network")


def test_a_stack_whose_resource_fails_rolls_back_and_leaves_nothing(cove_server, ec2):
    cfn = cove_server.client("cloudformation")
    before = {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]}
    cfn.create_stack(StackName="broken-network", TemplateBody=STACK_NETWORK.replace("SUBNET_B_CIDR", "10.99.0.0/24"))
    s = wait_stack(cfn, "broken-network", ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_COMPLETE"))
    assert s["StackStatus"] == "ROLLBACK_COMPLETE"
    assert s["StackStatusReason"] == ("The following resource(s) failed to create: [SubnetB]. "
                                      "Rollback requested by user.")
    failed = [e for e in cfn.describe_stack_events(StackName="broken-network")["StackEvents"]
              if e["ResourceStatus"] == "CREATE_FAILED"]
    assert failed[0]["LogicalResourceId"] == "SubnetB"
    assert "InvalidSubnet.Range" in failed[0]["ResourceStatusReason"]
    assert {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]} == before
    # The kernel objects went with the API's: no router namespace of the VPC is left.
    vpc = next(e["PhysicalResourceId"] for e in cfn.describe_stack_events(StackName="broken-network")["StackEvents"]
               if e["LogicalResourceId"] == "Vpc" and e["ResourceStatus"] == "CREATE_COMPLETE")
    netns = lambda: subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout  # noqa: E731
    assert eventually(lambda: f"-vpc-{vpc.split('-')[1][-12:]}" not in netns()), netns()
    cfn.delete_stack(StackName="broken-network")
    wait_stack(cfn, s["StackId"], ("DELETE_COMPLETE",))


def test_a_stack_with_a_resource_type_cove_does_not_make_is_refused(cove_server):
    cfn = cove_server.client("cloudformation")
    body = PRIVATE_NETWORK.replace("Outputs:", """  Handler:
    Type: AWS::Lambda::Function
    Properties: {Handler: index.handler, Runtime: python3.12, Role: !GetAtt JobRole.Arn, Code: {ZipFile: x}}
Outputs:""")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cfn.create_stack(StackName="with-function", TemplateBody=body)
    assert e.value.response["Error"]["Message"] == (
        "Template format error: Unrecognized resource types: [AWS::Lambda::Function]")
    with pytest.raises(botocore.exceptions.ClientError):
        cfn.describe_stacks(StackName="with-function")


# The private SageMaker design of AWS's secure-networking samples, cut to
# what one test can use: private subnets with an S3 gateway endpoint, the
# SageMaker API and Runtime as interface endpoints with private DNS, a
# self-referencing job group, a flow log to CloudWatch Logs with its role,
# a bucket with a policy, and a model served from an endpoint in the VPC.
SAGEMAKER_DESIGN = """
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  ModelDataUrl: {Type: String}
  Image: {Type: String}
Resources:
  Vpc:
    Type: AWS::EC2::VPC
    Properties: {CidrBlock: 10.72.0.0/16, EnableDnsSupport: true, EnableDnsHostnames: true}
  SubnetA:
    Type: AWS::EC2::Subnet
    Properties: {VpcId: !Ref Vpc, CidrBlock: 10.72.1.0/24, AvailabilityZone: !Select [0, !GetAZs ""]}
  SubnetB:
    Type: AWS::EC2::Subnet
    Properties: {VpcId: !Ref Vpc, CidrBlock: 10.72.2.0/24, AvailabilityZone: !Select [1, !GetAZs ""]}
  Private:
    Type: AWS::EC2::RouteTable
    Properties: {VpcId: !Ref Vpc}
  AssocA:
    Type: AWS::EC2::SubnetRouteTableAssociation
    Properties: {SubnetId: !Ref SubnetA, RouteTableId: !Ref Private}
  AssocB:
    Type: AWS::EC2::SubnetRouteTableAssociation
    Properties: {SubnetId: !Ref SubnetB, RouteTableId: !Ref Private}
  S3Endpoint:
    Type: AWS::EC2::VPCEndpoint
    Properties:
      VpcId: !Ref Vpc
      ServiceName: !Sub "com.amazonaws.${AWS::Region}.s3"
      RouteTableIds: [!Ref Private]
  JobGroup:
    Type: AWS::EC2::SecurityGroup
    Properties: {GroupDescription: jobs and models, VpcId: !Ref Vpc}
  SelfIngress:
    Type: AWS::EC2::SecurityGroupIngress
    Properties: {GroupId: !Ref JobGroup, IpProtocol: "-1", SourceSecurityGroupId: !Ref JobGroup}
  EndpointGroup:
    Type: AWS::EC2::SecurityGroup
    Properties:
      GroupDescription: interface endpoints
      VpcId: !Ref Vpc
      SecurityGroupIngress:
        - {IpProtocol: tcp, FromPort: 443, ToPort: 443, SourceSecurityGroupId: !Ref JobGroup}
  RuntimeEndpoint:
    Type: AWS::EC2::VPCEndpoint
    Properties:
      VpcId: !Ref Vpc
      VpcEndpointType: Interface
      ServiceName: !Sub "com.amazonaws.${AWS::Region}.sagemaker.runtime"
      SubnetIds: [!Ref SubnetA]
      SecurityGroupIds: [!Ref EndpointGroup]
      PrivateDnsEnabled: true
  ApiEndpoint:
    Type: AWS::EC2::VPCEndpoint
    Properties:
      VpcId: !Ref Vpc
      VpcEndpointType: Interface
      ServiceName: !Sub "com.amazonaws.${AWS::Region}.sagemaker.api"
      SubnetIds: [!Ref SubnetA]
      SecurityGroupIds: [!Ref EndpointGroup]
      PrivateDnsEnabled: true
  FlowLogGroup:
    Type: AWS::Logs::LogGroup
    Properties: {RetentionInDays: 7}
  FlowLogRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Statement: [{Effect: Allow, Principal: {Service: vpc-flow-logs.amazonaws.com}, Action: sts:AssumeRole}]
      Policies:
        - PolicyName: deliver
          PolicyDocument:
            Statement: [{Effect: Allow, Action: ["logs:CreateLogStream", "logs:PutLogEvents"], Resource: "*"}]
  FlowLog:
    Type: AWS::EC2::FlowLog
    Properties:
      ResourceId: !Ref Vpc
      ResourceType: VPC
      TrafficType: ALL
      LogGroupName: !Ref FlowLogGroup
      DeliverLogsPermissionArn: !GetAtt FlowLogRole.Arn
      MaxAggregationInterval: 60
  ExecutionRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Statement: [{Effect: Allow, Principal: {Service: sagemaker.amazonaws.com}, Action: sts:AssumeRole}]
      ManagedPolicyArns: [!Ref ModelAccess]
  ModelAccess:
    Type: AWS::IAM::ManagedPolicy
    Properties:
      PolicyDocument:
        Statement: [{Effect: Allow, Action: "s3:*", Resource: "*"}]
  Artifacts:
    Type: AWS::S3::Bucket
    DeletionPolicy: Delete
  ArtifactsPolicy:
    Type: AWS::S3::BucketPolicy
    Properties:
      Bucket: !Ref Artifacts
      PolicyDocument:
        Statement:
          - Effect: Deny
            Principal: "*"
            Action: s3:DeleteObject
            Resource: !Sub "${Artifacts.Arn}/*"
  Model:
    Type: AWS::SageMaker::Model
    Properties:
      ExecutionRoleArn: !GetAtt ExecutionRole.Arn
      PrimaryContainer:
        Image: !Ref Image
        ModelDataUrl: !Ref ModelDataUrl
        Environment: {SAGEMAKER_PROGRAM: inference.py, SAGEMAKER_SUBMIT_DIRECTORY: /opt/ml/model/code}
      VpcConfig:
        Subnets: [!Ref SubnetA, !Ref SubnetB]
        SecurityGroupIds: [!Ref JobGroup]
  EndpointConfig:
    Type: AWS::SageMaker::EndpointConfig
    Properties:
      ProductionVariants:
        - {VariantName: AllTraffic, ModelName: !GetAtt Model.ModelName, InstanceType: ml.m5.large,
           InitialInstanceCount: 1, InitialVariantWeight: 1}
  Endpoint:
    Type: AWS::SageMaker::Endpoint
    DependsOn: [AssocA, AssocB, S3Endpoint]
    Properties:
      EndpointConfigName: !GetAtt EndpointConfig.EndpointConfigName
Outputs:
  EndpointName: {Value: !GetAtt Endpoint.EndpointName}
  JobGroup: {Value: !Ref JobGroup}
  SubnetA: {Value: !Ref SubnetA}
  Bucket: {Value: !Ref Artifacts}
  FlowLogGroup: {Value: !Ref FlowLogGroup}
"""


def test_a_private_sagemaker_design_deploys_serves_inside_its_vpc_and_deletes_cleanly(cove_server, ec2, tmp_path):
    from test_hosting import model_archive, from_subnet
    from test_training_jobs import IMAGE, training_bucket
    from test_flow_log_records import records, find

    cfn, s3, sm, logs, iam = (cove_server.client(x) for x in ("cloudformation", "s3", "sagemaker", "logs", "iam"))
    bucket = training_bucket(s3)
    s3.put_object(Bucket=bucket, Key="cfn/model.tar.gz", Body=model_archive(1, 10))
    template = tmp_path / "design.yaml"
    template.write_text(SAGEMAKER_DESIGN)
    stack_id = json.loads(aws(cove_server, "cloudformation", "create-stack", "--stack-name", "sm-design",
                              "--template-body", f"file://{template}", "--capabilities", "CAPABILITY_IAM",
                              "--parameters", f"ParameterKey=ModelDataUrl,ParameterValue=s3://{bucket}/cfn/model.tar.gz",
                              f"ParameterKey=Image,ParameterValue={IMAGE}").stdout)["StackId"]
    try:
        s = wait_stack(cfn, stack_id, ("CREATE_COMPLETE", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED"), timeout=180)
        events = cfn.describe_stack_events(StackName=stack_id)["StackEvents"]
        assert s["StackStatus"] == "CREATE_COMPLETE", [(e["LogicalResourceId"], e["ResourceStatus"],
                                                        e.get("ResourceStatusReason")) for e in events]
        out = {o["OutputKey"]: o["OutputValue"] for o in s["Outputs"]}
        resources = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                     for r in cfn.list_stack_resources(StackName=stack_id)["StackResourceSummaries"]}
        # The endpoint was created, then waited for until SageMaker had it in service.
        initiated = [e for e in events if e["LogicalResourceId"] == "Endpoint"
                     and e.get("ResourceStatusReason") == "Resource creation Initiated"]
        assert initiated and initiated[0]["PhysicalResourceId"].startswith("arn:aws:sagemaker:us-east-1:")
        described = sm.describe_endpoint(EndpointName=out["EndpointName"])
        assert described["EndpointStatus"] == "InService" and described["EndpointArn"] == resources["Endpoint"]
        model = sm.describe_model(ModelName=resources["Model"].split("/")[-1])
        assert model["VpcConfig"]["Subnets"] == [out["SubnetA"], resources["SubnetB"]]
        assert model["ExecutionRoleArn"].startswith("arn:aws:iam::123456789012:role/sm-design-ExecutionRole-")
        role = iam.get_role(RoleName=resources["FlowLogRole"])["Role"]
        assert iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"] == ["deliver"]
        flow = ec2.describe_flow_logs(FlowLogIds=[resources["FlowLog"]])["FlowLogs"][0]
        assert flow["LogGroupName"] == out["FlowLogGroup"] and flow["DeliverLogsPermissionArn"] == role["Arn"]
        assert logs.describe_log_groups(logGroupNamePrefix=out["FlowLogGroup"])["logGroups"][0]["retentionInDays"] == 7

        # The stack's bucket policy is S3's: its Deny holds for the owner too.
        s3.put_object(Bucket=out["Bucket"], Key="k", Body=b"v")
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.delete_object(Bucket=out["Bucket"], Key="k")
        assert e.value.response["Error"]["Code"] == "AccessDenied"

        # From a caller in the private subnet, InvokeEndpoint goes through the runtime
        # interface endpoint (private DNS), as the endpoint group allows the job group.
        eni = ec2.create_network_interface(SubnetId=out["SubnetA"], Groups=[out["JobGroup"]])["NetworkInterface"]
        caller = eni["NetworkInterfaceId"]
        assert eventually(lambda: cove_server.exec(caller, "true").returncode == 0)
        answer = ""

        def invoked():
            nonlocal answer
            answer = from_subnet(cove_server, caller, "invoke", out["EndpointName"])
            return answer.startswith("ok")
        assert eventually(invoked, timeout=30), answer
        assert json.loads(answer[3:])["outputs"] == [70]
        # The stack's flow log recorded the call to the runtime endpoint's ENI.
        assert eventually(lambda: find(records(logs, out["FlowLogGroup"], caller), dstport=443, action="ACCEPT")
                          or (from_subnet(cove_server, caller, "invoke", out["EndpointName"]) and False), timeout=60)
        ec2.delete_network_interface(NetworkInterfaceId=caller)
        s3.put_bucket_policy(Bucket=out["Bucket"], Policy=json.dumps({"Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:DeleteObject", "Resource": f"arn:aws:s3:::{out['Bucket']}/*"}]}))
        s3.delete_object(Bucket=out["Bucket"], Key="k")
    finally:
        cfn.delete_stack(StackName=stack_id)
        deleted = wait_stack(cfn, stack_id, ("DELETE_COMPLETE", "DELETE_FAILED"), timeout=180)
    assert deleted["StackStatus"] == "DELETE_COMPLETE", [
        (e["LogicalResourceId"], e["ResourceStatus"], e.get("ResourceStatusReason"))
        for e in cfn.describe_stack_events(StackName=stack_id)["StackEvents"][:10]]
    assert not ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [resources["Vpc"]]}])["Vpcs"]
    with pytest.raises(botocore.exceptions.ClientError):
        sm.describe_endpoint(EndpointName=out["EndpointName"])
    with pytest.raises(botocore.exceptions.ClientError):
        iam.get_role(RoleName=resources["FlowLogRole"])
    assert out["Bucket"] not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert not logs.describe_log_groups(logGroupNamePrefix=out["FlowLogGroup"])["logGroups"]



def events_of(cfn, stack):
    return [(e["LogicalResourceId"], e["ResourceStatus"], e.get("ResourceStatusReason"))
            for e in cfn.describe_stack_events(StackName=stack)["StackEvents"]]


def test_an_update_that_removes_the_s3_endpoint_makes_the_next_training_job_fail_as_on_aws(
        cove_server, ec2, tmp_path):
    from test_training_jobs import training_request, training_bucket, wait_for, job_name, DATA_DOWNLOAD_FAILED
    cfn, s3, sm = (cove_server.client(x) for x in ("cloudformation", "s3", "sagemaker"))
    body = STACK_NETWORK.replace("SUBNET_B_CIDR", "!Select [1, !Cidr [!GetAtt Vpc.CidrBlock, 2, 8]]")
    body = body.replace("Cidr: {Type: String, Default: 10.70.0.0/16}", "Cidr: {Type: String, Default: 10.71.0.0/16}")
    cfn.create_stack(StackName="ml-update", TemplateBody=body)
    s = wait_stack(cfn, "ml-update", ("CREATE_COMPLETE", "ROLLBACK_COMPLETE"))
    assert s["StackStatus"] == "CREATE_COMPLETE", events_of(cfn, "ml-update")
    before = {r["LogicalResourceId"]: r["PhysicalResourceId"]
              for r in cfn.list_stack_resources(StackName="ml-update")["StackResourceSummaries"]}
    out = {o["OutputKey"]: o["OutputValue"] for o in s["Outputs"]}
    net = {"subnets": out["Subnets"].split(","), "sg": out["JobGroup"]}
    bucket = training_bucket(s3)
    ok = job_name("cfn-before")
    sm.create_training_job(**training_request(ok, bucket, net))
    assert wait_for(sm, ok)["TrainingJobStatus"] == "Completed"

    # The same design without its S3 endpoint, and a new tag on the VPC (updated in place).
    without = body.replace("""  S3Endpoint:
    Type: AWS::EC2::VPCEndpoint
    Properties:
      VpcId: !Ref Vpc
      ServiceName: !Sub "com.amazonaws.${AWS::Region}.s3"
      RouteTableIds: [!Ref Private]
""", "").replace('Value: !Sub "${AWS::StackName}-vpc"', 'Value: !Sub "${AWS::StackName}-vpc-v2"')
    assert "S3Endpoint" not in without
    template = tmp_path / "without.yaml"
    template.write_text(without)
    aws(cove_server, "cloudformation", "update-stack", "--stack-name", "ml-update",
        "--template-body", f"file://{template}")
    s = wait_stack(cfn, "ml-update", ("UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "UPDATE_ROLLBACK_FAILED"))
    events = events_of(cfn, "ml-update")
    assert s["StackStatus"] == "UPDATE_COMPLETE", events
    assert ("S3Endpoint", "DELETE_COMPLETE", None) in events
    assert ("Vpc", "UPDATE_COMPLETE", None) in events
    assert [e[1] for e in events if e[0] == "ml-update"][:3] == [
        "UPDATE_COMPLETE", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", "UPDATE_IN_PROGRESS"]
    after = {r["LogicalResourceId"]: r["PhysicalResourceId"]
             for r in cfn.list_stack_resources(StackName="ml-update")["StackResourceSummaries"]}
    assert "S3Endpoint" not in after and after["Vpc"] == before["Vpc"]
    assert user_tags(ec2.describe_vpcs(VpcIds=[after["Vpc"]])["Vpcs"][0]) == [{"Key": "Name", "Value": "ml-update-vpc-v2"}]
    assert not ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [after["Vpc"]]}])["VpcEndpoints"]
    # The same update again changes nothing.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cfn.update_stack(StackName="ml-update", TemplateBody=without)
    assert e.value.response["Error"]["Message"] == "No updates are to be performed."

    failing = job_name("cfn-after")
    sm.create_training_job(**training_request(failing, bucket, net))
    d = wait_for(sm, failing)
    assert d["TrainingJobStatus"] == "Failed" and d["FailureReason"] == DATA_DOWNLOAD_FAILED
    cfn.delete_stack(StackName="ml-update")
    assert wait_stack(cfn, s["StackId"], ("DELETE_COMPLETE", "DELETE_FAILED"))["StackStatus"] == "DELETE_COMPLETE"


def test_a_failed_update_rolls_back_to_the_resources_it_replaced(cove_server, ec2):
    cfn = cove_server.client("cloudformation")
    body = """
Resources:
  Vpc:
    Type: AWS::EC2::VPC
    Properties: {CidrBlock: 10.73.0.0/16}
  Group:
    Type: AWS::EC2::SecurityGroup
    Properties: {GroupDescription: first, VpcId: !Ref Vpc}
  Rule:
    Type: AWS::EC2::SecurityGroupIngress
    Properties: {GroupId: !Ref Group, IpProtocol: tcp, FromPort: 443, ToPort: 443, CidrIp: 10.73.0.0/16}
Outputs:
  Group: {Value: !Ref Group}
"""
    cfn.create_stack(StackName="ml-rollback", TemplateBody=body)
    s = wait_stack(cfn, "ml-rollback", ("CREATE_COMPLETE", "ROLLBACK_COMPLETE"))
    assert s["StackStatus"] == "CREATE_COMPLETE", events_of(cfn, "ml-rollback")
    group = s["Outputs"][0]["OutputValue"]
    # A new description replaces the group (and its rule with it); a new subnet outside the VPC fails.
    broken = body.replace("GroupDescription: first", "GroupDescription: second") + """
  Extra:
    Type: AWS::EC2::Subnet
    DependsOn: Rule
    Properties: {VpcId: !Ref Vpc, CidrBlock: 10.99.0.0/24}
"""
    broken = broken.replace("Outputs:\n  Group: {Value: !Ref Group}\n", "") + "Outputs:\n  Group: {Value: !Ref Group}\n"
    cfn.update_stack(StackName="ml-rollback", TemplateBody=broken)
    s = wait_stack(cfn, "ml-rollback", ("UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "UPDATE_ROLLBACK_FAILED"))
    events = events_of(cfn, "ml-rollback")
    assert s["StackStatus"] == "UPDATE_ROLLBACK_COMPLETE", events
    assert any(e[0] == "Group" and e[2] == ("Requested update requires the creation of a new physical resource; "
                                            "hence creating one.") for e in events)
    assert any(e[0] == "Extra" and e[1] == "CREATE_FAILED" and "InvalidSubnet.Range" in e[2] for e in events)
    # The group the stack had is its group again, with its rule; the replacement is gone.
    assert s["Outputs"][0]["OutputValue"] == group
    vpc = next(r["PhysicalResourceId"] for r in cfn.list_stack_resources(StackName="ml-rollback")["StackResourceSummaries"]
               if r["LogicalResourceId"] == "Vpc")
    groups = {g["GroupId"]: g for g in ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"] if g["GroupName"] != "default"}
    assert list(groups) == [group] and groups[group]["Description"] == "first"
    assert groups[group]["IpPermissions"][0]["FromPort"] == 443
    cfn.delete_stack(StackName="ml-rollback")
    assert wait_stack(cfn, s["StackId"], ("DELETE_COMPLETE", "DELETE_FAILED"))["StackStatus"] == "DELETE_COMPLETE"


DEPLOYED = """
Parameters:
  Purpose: {Type: String, Default: jobs}
  Owner: {Type: String, Default: team-a}
Resources:
  Vpc:
    Type: AWS::EC2::VPC
    Properties:
      CidrBlock: 10.74.0.0/16
      Tags: [{Key: owner, Value: !Ref Owner}]
  Group:
    Type: AWS::EC2::SecurityGroup
    Properties: {GroupDescription: !Ref Purpose, VpcId: !Ref Vpc}
Outputs:
  VpcId:
    Value: !Ref Vpc
    Export: {Name: !Sub "${AWS::StackName}-vpc"}
"""

IMPORTER = """
Resources:
  Subnet:
    Type: AWS::EC2::Subnet
    Properties: {VpcId: !ImportValue ml-deploy-vpc, CidrBlock: 10.74.9.0/24}
"""


def test_aws_cloudformation_deploy_creates_updates_through_change_sets_and_exports(cove_server, ec2, tmp_path):
    cfn = cove_server.client("cloudformation")
    template = tmp_path / "deployed.yaml"
    template.write_text(DEPLOYED)
    deploy = ("cloudformation", "deploy", "--stack-name", "ml-deploy", "--template-file", str(template))
    first = aws(cove_server, *deploy)
    assert "Successfully created/updated stack - ml-deploy" in first.stdout, first.stdout
    s = cfn.describe_stacks(StackName="ml-deploy")["Stacks"][0]
    assert s["StackStatus"] == "CREATE_COMPLETE"
    sets = cfn.list_change_sets(StackName="ml-deploy")["Summaries"]
    assert [c["ExecutionStatus"] for c in sets] == ["EXECUTE_COMPLETE"]
    vpc = s["Outputs"][0]["OutputValue"]
    assert s["Outputs"][0]["ExportName"] == "ml-deploy-vpc"
    assert {"Name": "ml-deploy-vpc", "Value": vpc} in [
        {"Name": e["Name"], "Value": e["Value"]} for e in cfn.list_exports()["Exports"]]

    again = aws(cove_server, *deploy, "--no-fail-on-empty-changeset")
    assert "No changes to deploy. Stack ml-deploy is up to date" in again.stdout, again.stdout

    # A plan first: the owner tag changes the VPC in place, the purpose replaces the group.
    # (The CLI names change sets by the second: the empty one above holds this second's name.)
    time.sleep(1.1)
    planned = aws(cove_server, *deploy, "--no-execute-changeset", "--parameter-overrides",
                  "Owner=team-b", "Purpose=models", check=False)
    assert "Changeset created successfully" in planned.stdout, planned.stdout + planned.stderr
    latest = [c for c in cfn.list_change_sets(StackName="ml-deploy")["Summaries"] if c["Status"] == "CREATE_COMPLETE"][-1]
    described = cfn.describe_change_set(ChangeSetName=latest["ChangeSetId"])
    changes = {c["ResourceChange"]["LogicalResourceId"]: c["ResourceChange"] for c in described["Changes"]}
    assert changes["Vpc"]["Action"] == "Modify" and changes["Vpc"]["Replacement"] == "False"
    assert changes["Group"]["Replacement"] == "True"
    assert changes["Vpc"]["PhysicalResourceId"] == vpc
    group = changes["Group"]["PhysicalResourceId"]
    cfn.execute_change_set(ChangeSetName=latest["ChangeSetId"])
    cfn.get_waiter("stack_update_complete").wait(StackName="ml-deploy", WaiterConfig={"Delay": 1})
    resources = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                 for r in cfn.list_stack_resources(StackName="ml-deploy")["StackResourceSummaries"]}
    assert resources["Vpc"] == vpc and resources["Group"] != group
    assert user_tags(ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]) == [{"Key": "owner", "Value": "team-b"}]
    assert not ec2.describe_security_groups(Filters=[{"Name": "group-id", "Values": [group]}])["SecurityGroups"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cfn.execute_change_set(ChangeSetName=latest["ChangeSetId"])
    assert e.value.response["Error"]["Code"] == "InvalidChangeSetStatus"

    # Another stack imports the export: the exporter cannot be deleted under it.
    cfn.create_stack(StackName="ml-importer", TemplateBody=IMPORTER)
    importer = wait_stack(cfn, "ml-importer", ("CREATE_COMPLETE", "ROLLBACK_COMPLETE"))
    assert importer["StackStatus"] == "CREATE_COMPLETE", events_of(cfn, "ml-importer")
    subnet = cfn.list_stack_resources(StackName="ml-importer")["StackResourceSummaries"][0]["PhysicalResourceId"]
    assert ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["VpcId"] == vpc
    assert cfn.list_imports(ExportName="ml-deploy-vpc")["Imports"] == ["ml-importer"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cfn.delete_stack(StackName="ml-deploy")
    assert e.value.response["Error"]["Message"] == "Export ml-deploy-vpc cannot be deleted as it is in use by ml-importer"
    cfn.update_termination_protection(StackName="ml-importer", EnableTerminationProtection=True)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cfn.delete_stack(StackName="ml-importer")
    assert "TerminationProtection is enabled" in e.value.response["Error"]["Message"]
    cfn.update_termination_protection(StackName="ml-importer", EnableTerminationProtection=False)
    cfn.delete_stack(StackName="ml-importer")
    wait_stack(cfn, importer["StackId"], ("DELETE_COMPLETE",))
    cfn.delete_stack(StackName="ml-deploy")
    assert wait_stack(cfn, s["StackId"], ("DELETE_COMPLETE", "DELETE_FAILED"))["StackStatus"] == "DELETE_COMPLETE"


STUDIO = """
Resources:
  Vpc:
    Type: AWS::EC2::VPC
    Properties: {CidrBlock: 10.75.0.0/16, EnableDnsSupport: true, EnableDnsHostnames: true}
  SubnetA:
    Type: AWS::EC2::Subnet
    Properties: {VpcId: !Ref Vpc, CidrBlock: 10.75.1.0/24, AvailabilityZone: !Select [0, !GetAZs ""]}
  Users:
    Type: AWS::EC2::SecurityGroup
    Properties: {GroupDescription: studio users, VpcId: !Ref Vpc}
  Domain:
    Type: AWS::SageMaker::Domain
    Properties:
      DomainName: !Sub "${AWS::StackName}-studio"
      AuthMode: IAM
      AppNetworkAccessType: VpcOnly
      VpcId: !Ref Vpc
      SubnetIds: [!Ref SubnetA]
      DefaultUserSettings:
        ExecutionRole: arn:aws:iam::123456789012:role/SageMakerRole
        SecurityGroups: [!Ref Users]
  Alice:
    Type: AWS::SageMaker::UserProfile
    Properties: {DomainId: !GetAtt Domain.DomainId, UserProfileName: alice}
  Notebook:
    Type: AWS::SageMaker::App
    DependsOn: Alice
    Properties:
      DomainId: !GetAtt Domain.DomainId
      UserProfileName: alice
      AppType: JupyterServer
      AppName: default
Outputs:
  DomainId: {Value: !Ref Domain}
  Url: {Value: !GetAtt Domain.Url}
  App: {Value: !Ref Notebook}
"""


def test_a_studio_domain_user_and_app_in_a_vpc_only_network_come_and_go_with_their_stack(cove_server, ec2):
    cfn, sm = cove_server.client("cloudformation"), cove_server.client("sagemaker")
    cfn.create_stack(StackName="ml-studio", TemplateBody=STUDIO)
    s = wait_stack(cfn, "ml-studio", ("CREATE_COMPLETE", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED"), timeout=120)
    assert s["StackStatus"] == "CREATE_COMPLETE", events_of(cfn, "ml-studio")
    out = {o["OutputKey"]: o["OutputValue"] for o in s["Outputs"]}
    domain = sm.describe_domain(DomainId=out["DomainId"])
    assert domain["Status"] == "InService" and domain["AppNetworkAccessType"] == "VpcOnly"
    assert out["Url"] == domain["Url"]
    app = sm.describe_app(DomainId=out["DomainId"], UserProfileName="alice", AppType="JupyterServer", AppName="default")
    assert app["Status"] == "InService" and app["AppArn"] == out["App"]
    vpc = domain["VpcId"]
    enis = ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["NetworkInterfaces"]
    assert any(out["DomainId"] in e["Description"] for e in enis), enis

    cfn.delete_stack(StackName="ml-studio")
    deleted = wait_stack(cfn, s["StackId"], ("DELETE_COMPLETE", "DELETE_FAILED"), timeout=180)
    assert deleted["StackStatus"] == "DELETE_COMPLETE", events_of(cfn, s["StackId"])[:8]
    assert not ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Vpcs"]
    with pytest.raises(botocore.exceptions.ClientError):
        sm.describe_domain(DomainId=out["DomainId"])


def test_templates_are_read_from_cove_s3_by_url(cove_server, tmp_path):
    cfn, s3 = cove_server.client("cloudformation"), cove_server.client("s3")
    s3.create_bucket(Bucket="cfn-templates")
    template = tmp_path / "vpc.yaml"
    template.write_text("Resources:\n  Vpc: {Type: AWS::EC2::VPC, Properties: {CidrBlock: 10.76.0.0/16}}\n")
    # deploy --s3-bucket uploads the template and passes its URL, as for templates over 51,200 bytes
    # (its S3 client follows AWS_ENDPOINT_URL, not --endpoint-url).
    deployed = aws(cove_server, "cloudformation", "deploy", "--stack-name", "ml-by-url", "--template-file",
                   str(template), "--s3-bucket", "cfn-templates", "--s3-prefix", "stacks", check=False,
                   AWS_ENDPOINT_URL=cove_server.endpoint)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "Successfully created/updated stack - ml-by-url" in deployed.stdout, deployed.stdout
    assert [o["Key"].startswith("stacks/") for o in s3.list_objects_v2(Bucket="cfn-templates")["Contents"]] == [True]
    s3.put_object(Bucket="cfn-templates", Key="net.yaml", Body=template.read_bytes())
    for url in ("https://cfn-templates.s3.amazonaws.com/net.yaml", "https://s3.amazonaws.com/cfn-templates/net.yaml"):
        assert cfn.validate_template(TemplateURL=url)["Parameters"] == []
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cfn.validate_template(TemplateURL="https://cfn-templates.s3.amazonaws.com/missing.yaml")
    assert e.value.response["Error"]["Message"] == "S3 error: The specified key does not exist."
    s3.put_object(Bucket="cfn-templates", Key="huge.yaml", Body=b"#" * 1_000_001)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cfn.validate_template(TemplateURL="https://cfn-templates.s3.amazonaws.com/huge.yaml")
    assert e.value.response["Error"]["Message"] == "Template may not exceed 1000000 bytes in size."
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cfn.validate_template(TemplateURL="ftp://example/net.yaml")
    assert e.value.response["Error"]["Message"] == "TemplateURL must be a supported URL."
    cfn.delete_stack(StackName="ml-by-url")
