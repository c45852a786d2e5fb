#!/usr/bin/env python3
"""CloudFormation stacks: how long a stack takes to make, update and delete,
beside the same resources made by direct API calls (run as root, from the
repository).

Per size N it starts its own `cove serve` (common.cove_server) and, per run:

- **stack create**: `CreateStack` of a template with one VPC and N units of
  a subnet, a security group and an ingress rule of that group (3N + 1
  resources in 3 dependency waves), timed from the call to
  `CREATE_COMPLETE` (polled every 20 ms);
- **direct calls**: the same 3N + 1 resources made by boto3 one call after
  another (CreateVpc, then per unit CreateSubnet, CreateSecurityGroup,
  AuthorizeSecurityGroupIngress), as a script without CloudFormation would;
- **update in place**: `UpdateStack` giving every group a new tag (N
  in-place updates, nothing replaced), call to `UPDATE_COMPLETE`;
- **update replacing**: `UpdateStack` with a new group description (N groups
  and their N rules replaced, the old ones deleted at cleanup);
- **delete**: `DeleteStack` to `DELETE_COMPLETE`.

The directly made resources are deleted between runs. The table holds the
median of each figure over `--runs` runs, and the ratio of the stack's
create to the direct calls.

Usage:
  cargo build --release -p cove
  .venv/bin/python bench/cloudformation.py --cove ./target/release/cove --sizes 10,80 --runs 3
"""

import argparse
import statistics
import time

import botocore.config

from common import clients, cove_server

POLL = 0.02


def template(n, description="jobs", tag="v1"):
    lines = ["Resources:",
             "  Vpc: {Type: AWS::EC2::VPC, Properties: {CidrBlock: 10.60.0.0/16}}"]
    for i in range(n):
        lines += [
            f"  Subnet{i}: {{Type: AWS::EC2::Subnet, Properties: {{VpcId: !Ref Vpc, CidrBlock: 10.60.{i}.0/24}}}}",
            f"  Group{i}:",
            "    Type: AWS::EC2::SecurityGroup",
            f"    Properties: {{GroupDescription: {description}, VpcId: !Ref Vpc, Tags: [{{Key: v, Value: {tag}}}]}}",
            f"  Rule{i}: {{Type: AWS::EC2::SecurityGroupIngress, Properties: {{GroupId: !Ref Group{i}, "
            f"IpProtocol: tcp, FromPort: 443, ToPort: 443, SourceSecurityGroupId: !Ref Group{i}}}}}",
        ]
    return "\n".join(lines) + "\n"


def wait(cfn, stack, done):
    while True:
        status = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
        if status == done:
            return
        if not status.endswith("IN_PROGRESS"):
            raise SystemExit(f"stack {stack} ended {status}")
        time.sleep(POLL)


def timed(call):
    start = time.monotonic()
    call()
    return time.monotonic() - start


def direct(ec2, n):
    """The stack's resources by direct calls; returns the VPC id."""
    vpc = ec2.create_vpc(CidrBlock="10.61.0.0/16")["Vpc"]["VpcId"]
    for i in range(n):
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.61.{i}.0/24")
        group = ec2.create_security_group(GroupName=f"g{i}", Description="jobs", VpcId=vpc)["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "UserIdGroupPairs": [{"GroupId": group}]}])
    return vpc


def delete_direct(ec2, vpc):
    for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]:
        ec2.delete_subnet(SubnetId=s["SubnetId"])
    for g in ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]:
        if g["GroupName"] != "default":
            ec2.delete_security_group(GroupId=g["GroupId"])
    ec2.delete_vpc(VpcId=vpc)


def one_run(endpoint, n, run):
    client = clients(endpoint, botocore.config.Config(retries={"max_attempts": 1}))
    cfn, ec2 = client("cloudformation"), client("ec2")
    stack = f"bench-{n}-{run}"
    out = {}
    out["create"] = timed(lambda: (cfn.create_stack(StackName=stack, TemplateBody=template(n)),
                                   wait(cfn, stack, "CREATE_COMPLETE")))
    vpc = []
    out["direct"] = timed(lambda: vpc.append(direct(ec2, n)))
    delete_direct(ec2, vpc[0])
    out["in_place"] = timed(lambda: (cfn.update_stack(StackName=stack, TemplateBody=template(n, tag="v2")),
                                     wait(cfn, stack, "UPDATE_COMPLETE")))
    out["replacing"] = timed(lambda: (
        cfn.update_stack(StackName=stack, TemplateBody=template(n, description="models", tag="v2")),
        wait(cfn, stack, "UPDATE_COMPLETE")))
    stack_id = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackId"]
    out["delete"] = timed(lambda: (cfn.delete_stack(StackName=stack), wait(cfn, stack_id, "DELETE_COMPLETE")))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cove", default="./target/release/cove")
    ap.add_argument("--sizes", default="10,80", help="units of subnet + group + rule, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        with cove_server(args.cove, f"cove-bench-cfn-{n}-") as (endpoint, _data, _proc):
            runs = [one_run(endpoint, n, r) for r in range(args.runs)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows.append((n, 3 * n + 1, med))
        print(f"size {n}: " + ", ".join(f"{k} {[round(r[k], 3) for r in runs]}" for k in runs[0]), flush=True)
    print()
    print(f"Median of {args.runs} runs (seconds)")
    print()
    print("| units | resources | stack create | direct calls | create ÷ direct | update in place | "
          "update replacing | delete |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, resources, m in rows:
        print(f"| {n} | {resources} | {m['create']:.2f} | {m['direct']:.2f} | {m['create'] / m['direct']:.2f} | "
              f"{m['in_place']:.2f} | {m['replacing']:.2f} | {m['delete']:.2f} |")


if __name__ == "__main__":
    main()
