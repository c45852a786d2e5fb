#!/usr/bin/env python3
"""Extract the AWS service models Cove serves from the installed botocore.

Cove's wire layer is driven by these models: member wire names, list
wrapping, required members, enums, lengths, ranges and patterns all come
from them. The output keeps only the operations Cove implements and the
shapes they reach, without documentation, so the embedded files stay small.

Usage: python3 tools/gen-models.py [SERVICE...]
       (rewrites crates/cove-wire/models/<service>.json, for all services or those named)
The models are Apache-2.0, from botocore; see crates/cove-wire/models/NOTICE.
"""
import json
import os
import botocore.loaders

SERVICES = {
    "ec2": [
        "CreateVpc", "DeleteVpc", "DescribeVpcs", "ModifyVpcAttribute", "DescribeVpcAttribute",
        "AssociateVpcCidrBlock", "DisassociateVpcCidrBlock", "CreateDefaultVpc", "CreateDefaultSubnet",
        "DescribeSecurityGroupReferences", "DescribeStaleSecurityGroups",
        "AssociateSubnetCidrBlock", "DisassociateSubnetCidrBlock",
        "CreateSubnet", "DeleteSubnet", "DescribeSubnets", "ModifySubnetAttribute",
        "CreateSecurityGroup", "DeleteSecurityGroup", "DescribeSecurityGroups",
        "AuthorizeSecurityGroupIngress", "AuthorizeSecurityGroupEgress",
        "RevokeSecurityGroupIngress", "RevokeSecurityGroupEgress", "DescribeSecurityGroupRules",
        "CreateNetworkAcl", "DeleteNetworkAcl", "DescribeNetworkAcls", "CreateNetworkAclEntry",
        "DeleteNetworkAclEntry", "ReplaceNetworkAclEntry", "ReplaceNetworkAclAssociation",
        "CreateRouteTable", "DeleteRouteTable", "DescribeRouteTables", "CreateRoute", "DeleteRoute",
        "ReplaceRoute", "AssociateRouteTable", "DisassociateRouteTable", "ReplaceRouteTableAssociation",
        "CreateInternetGateway", "DeleteInternetGateway", "DescribeInternetGateways",
        "AttachInternetGateway", "DetachInternetGateway",
        "AllocateAddress", "ReleaseAddress", "DescribeAddresses", "AssociateAddress", "DisassociateAddress",
        "CreateNatGateway", "DeleteNatGateway", "DescribeNatGateways",
        "CreateVpcEndpoint", "DeleteVpcEndpoints", "DescribeVpcEndpoints", "ModifyVpcEndpoint",
        "DescribeVpcEndpointServices", "DescribePrefixLists",
        "CreateManagedPrefixList", "ModifyManagedPrefixList", "DeleteManagedPrefixList",
        "DescribeManagedPrefixLists", "GetManagedPrefixListEntries",
        "GetManagedPrefixListAssociations", "RestoreManagedPrefixListVersion",
        "ModifySecurityGroupRules", "UpdateSecurityGroupRuleDescriptionsIngress",
        "UpdateSecurityGroupRuleDescriptionsEgress",
        "CreateDhcpOptions", "DeleteDhcpOptions", "DescribeDhcpOptions", "AssociateDhcpOptions",
        "CreateVpcPeeringConnection", "AcceptVpcPeeringConnection", "RejectVpcPeeringConnection",
        "DeleteVpcPeeringConnection", "DescribeVpcPeeringConnections",
        "CreateNetworkInterface", "DeleteNetworkInterface", "DescribeNetworkInterfaces",
        "CreateFlowLogs", "DeleteFlowLogs", "DescribeFlowLogs",
        "CreateNetworkInsightsPath", "DescribeNetworkInsightsPaths", "DeleteNetworkInsightsPath",
        "StartNetworkInsightsAnalysis", "DescribeNetworkInsightsAnalyses",
        "DeleteNetworkInsightsAnalysis",
        "CreateTags", "DeleteTags", "DescribeTags",
        "DescribeAvailabilityZones", "DescribeRegions", "DescribeAccountAttributes",
    ],
    "sts": ["GetCallerIdentity", "AssumeRole"],
    "cloudformation": [
        "ValidateTemplate", "GetTemplateSummary", "CreateStack", "DescribeStacks", "DescribeStackEvents",
        "DescribeStackResources", "DescribeStackResource", "ListStackResources", "GetTemplate", "DeleteStack",
        "ListStacks", "UpdateStack", "CreateChangeSet", "DescribeChangeSet", "ExecuteChangeSet",
        "DeleteChangeSet", "ListChangeSets", "UpdateTerminationProtection", "ListExports", "ListImports",
    ],
    "iam": [
        "CreateRole", "GetRole", "DeleteRole", "ListRoles", "UpdateRole", "UpdateAssumeRolePolicy",
        "TagRole", "UntagRole", "ListRoleTags",
        "PutRolePolicy", "GetRolePolicy", "ListRolePolicies", "DeleteRolePolicy",
        "CreatePolicy", "GetPolicy", "DeletePolicy", "ListPolicies", "CreatePolicyVersion",
        "GetPolicyVersion", "ListPolicyVersions", "DeletePolicyVersion",
        "AttachRolePolicy", "DetachRolePolicy", "ListAttachedRolePolicies",
        "SimulatePrincipalPolicy",
        "CreateUser", "GetUser", "DeleteUser", "ListUsers",
        "CreateAccessKey", "ListAccessKeys", "UpdateAccessKey", "DeleteAccessKey",
        "PutUserPolicy", "GetUserPolicy", "ListUserPolicies", "DeleteUserPolicy",
        "AttachUserPolicy", "DetachUserPolicy", "ListAttachedUserPolicies",
    ],
    "sagemaker": [
        "CreateTrainingJob", "DescribeTrainingJob", "ListTrainingJobs", "StopTrainingJob",
        "CreateProcessingJob", "DescribeProcessingJob", "ListProcessingJobs", "StopProcessingJob",
        "CreateModel", "DescribeModel", "ListModels", "DeleteModel",
        "CreateEndpointConfig", "DescribeEndpointConfig", "ListEndpointConfigs", "DeleteEndpointConfig",
        "CreateEndpoint", "DescribeEndpoint", "ListEndpoints", "DeleteEndpoint", "UpdateEndpoint",
        "UpdateEndpointWeightsAndCapacities",
        "CreateTransformJob", "DescribeTransformJob", "ListTransformJobs", "StopTransformJob",
        "CreateCompilationJob", "DescribeCompilationJob", "ListCompilationJobs", "StopCompilationJob",
        "CreateInferenceRecommendationsJob", "DescribeInferenceRecommendationsJob",
        "ListInferenceRecommendationsJobs", "StopInferenceRecommendationsJob",
        "ListInferenceRecommendationsJobSteps",
        "CreateDomain", "DescribeDomain", "ListDomains", "UpdateDomain", "DeleteDomain",
        "CreateUserProfile", "DescribeUserProfile", "ListUserProfiles", "DeleteUserProfile",
        "CreateApp", "DescribeApp", "ListApps", "DeleteApp", "CreatePresignedDomainUrl",
    ],
    "sagemaker-runtime": ["InvokeEndpoint"],
    "route53": [
        "CreateHostedZone", "GetHostedZone", "ListHostedZones", "DeleteHostedZone",
        "ChangeResourceRecordSets", "ListResourceRecordSets", "GetChange",
        "AssociateVPCWithHostedZone", "DisassociateVPCFromHostedZone", "ListHostedZonesByVPC",
    ],
    "efs": [
        "CreateFileSystem", "DescribeFileSystems", "DeleteFileSystem", "UpdateFileSystem",
        "CreateMountTarget", "DescribeMountTargets", "DeleteMountTarget",
        "DescribeMountTargetSecurityGroups", "ModifyMountTargetSecurityGroups",
        "CreateAccessPoint", "DescribeAccessPoints", "DeleteAccessPoint",
        "PutFileSystemPolicy", "DescribeFileSystemPolicy", "DeleteFileSystemPolicy",
        "PutLifecycleConfiguration", "DescribeLifecycleConfiguration",
        "PutBackupPolicy", "DescribeBackupPolicy",
        "CreateTags", "DeleteTags", "DescribeTags", "TagResource", "UntagResource",
        "ListTagsForResource",
    ],
    "logs": [
        "CreateLogGroup", "DeleteLogGroup", "DescribeLogGroups", "CreateLogStream", "DeleteLogStream",
        "DescribeLogStreams", "PutLogEvents", "GetLogEvents", "FilterLogEvents", "PutRetentionPolicy",
        "DeleteRetentionPolicy", "TagResource", "UntagResource", "ListTagsForResource",
    ],
    "ecr": [
        "CreateRepository", "DescribeRepositories", "DeleteRepository", "DescribeImages",
        "ListImages", "BatchGetImage", "BatchDeleteImage", "PutImage", "BatchCheckLayerAvailability",
        "GetAuthorizationToken", "SetRepositoryPolicy", "GetRepositoryPolicy",
        "DeleteRepositoryPolicy", "PutImageTagMutability", "TagResource", "UntagResource",
        "ListTagsForResource",
    ],
}

KEEP_SHAPE_KEYS = {"type", "members", "member", "key", "value", "required", "enum", "min",
                   "max", "pattern", "flattened", "locationName", "queryName", "timestampFormat",
                   "exception", "error", "sensitive", "box", "document", "union", "xmlNamespace"}
KEEP_MEMBER_KEYS = {"shape", "locationName", "queryName", "flattened", "location", "xmlNamespace",
                    "jsonvalue", "idempotencyToken", "hostLabel", "timestampFormat", "box"}


def main(only):
    loader = botocore.loaders.Loader()
    out_dir = os.path.join(os.path.dirname(__file__), "..", "crates", "cove-wire", "models")
    os.makedirs(out_dir, exist_ok=True)
    for service, ops in SERVICES.items():
        if only and service not in only:
            continue
        api = loader.load_service_model(service, "service-2")
        shapes = api["shapes"]
        keep = set()

        def visit(name):
            if name in keep:
                return
            keep.add(name)
            s = shapes[name]
            for m in s.get("members", {}).values():
                visit(m["shape"])
            for k in ("member", "key", "value"):
                if k in s:
                    visit(s[k]["shape"])

        operations = {}
        for op in ops:
            o = api["operations"][op]
            slim = {"name": op, "http": o.get("http", {})}
            for k in ("input", "output"):
                if k in o:
                    slim[k] = {kk: vv for kk, vv in o[k].items()
                               if kk in ("shape", "resultWrapper", "locationName", "xmlNamespace")}
                    visit(o[k]["shape"])
            if o.get("errors"):
                slim["errors"] = [e["shape"] for e in o["errors"]]
                for e in o["errors"]:
                    visit(e["shape"])
            operations[op] = slim

        slim_shapes = {}
        for name in sorted(keep):
            s = shapes[name]
            t = {k: v for k, v in s.items() if k in KEEP_SHAPE_KEYS}
            if "members" in t:
                t["members"] = {mn: {k: v for k, v in m.items() if k in KEEP_MEMBER_KEYS}
                                for mn, m in t["members"].items()}
            for k in ("member", "key", "value"):
                if k in t:
                    t[k] = {kk: vv for kk, vv in t[k].items() if kk in KEEP_MEMBER_KEYS}
            slim_shapes[name] = t
        meta = {k: v for k, v in api["metadata"].items()
                if k in ("apiVersion", "endpointPrefix", "protocol", "serviceId", "signingName",
                         "targetPrefix", "jsonVersion", "xmlNamespace", "uid")}
        path = os.path.join(out_dir, service + ".json")
        with open(path, "w") as f:
            json.dump({"metadata": meta, "operations": operations, "shapes": slim_shapes}, f,
                      separators=(",", ":"))
            f.write("\n")
        print(f"{path}: {len(operations)} operations, {len(slim_shapes)} shapes, "
              f"{os.path.getsize(path)} bytes (botocore {botocore.__version__})")


if __name__ == "__main__":
    import sys
    import botocore
    main(set(sys.argv[1:]))
