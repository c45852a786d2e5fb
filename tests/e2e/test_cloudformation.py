"""CloudFormation, as far as Cove serves it: ValidateTemplate and
GetTemplateSummary with the AWS CLI and boto3 on real templates (YAML with
the short-form tags, JSON), and CloudFormation's ValidationError words for
broken ones. Stacks are not served yet (docs/cloudformation.md)."""

import json
import os
import shutil
import subprocess
import sys

import botocore.exceptions
import pytest

from conftest import ACCESS_KEY, SECRET_KEY

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
"""


def aws(cove_server, *args, check=True):
    cli = shutil.which("aws", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    assert cli, "the AWS CLI must be installed (tests/requirements.txt)"
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1")
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


def test_operations_not_served_yet_say_so(cove_server):
    failed = aws(cove_server, "cloudformation", "describe-stacks", check=False)
    assert failed.returncode != 0 and "InvalidAction" in failed.stderr
