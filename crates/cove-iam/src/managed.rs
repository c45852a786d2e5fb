//! The AWS managed policies Cove knows, under their AWS ARNs, so that
//! `AttachRolePolicy` with `arn:aws:iam::aws:policy/AmazonSageMakerFullAccess`
//! (what the SageMaker SDK's `get_execution_role(use_default=True)` does)
//! works. `AdministratorAccess` and the S3 ones state what AWS's grant; the
//! SageMaker and ECR ones are Cove's condensed versions: the same services
//! and the actions a SageMaker workload uses, not AWS's full documents.

/// One AWS managed policy.
pub struct AwsManaged {
    pub name: &'static str,
    pub path: &'static str,
    pub description: &'static str,
    pub document: &'static str,
}

impl AwsManaged {
    pub fn arn(&self) -> String {
        format!("arn:aws:iam::aws:policy{}{}", self.path, self.name)
    }

    /// A stable id in IAM's form (`ANPA` and 17 characters), derived from the
    /// name: the same on every Cove, like AWS's.
    pub fn policy_id(&self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut id = String::from("ANPA");
        for round in 0..17u8 {
            for b in self.name.bytes().chain([round]) {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            id.push(char::from(ALPHABET[usize::from((h >> 59) as u8)]));
        }
        id
    }
}

pub const AWS_MANAGED: &[AwsManaged] = &[
    AwsManaged {
        name: "AdministratorAccess",
        path: "/",
        description: "Provides full access to AWS services and resources.",
        document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
    },
    AwsManaged {
        name: "AmazonS3FullAccess",
        path: "/",
        description: "Provides full access to all buckets via the AWS Management Console.",
        document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*","s3-object-lambda:*"],"Resource":"*"}]}"#,
    },
    AwsManaged {
        name: "AmazonS3ReadOnlyAccess",
        path: "/",
        description: "Provides read only access to all buckets via the AWS Management Console.",
        document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:Get*","s3:List*","s3:Describe*","s3-object-lambda:Get*","s3-object-lambda:List*"],"Resource":"*"}]}"#,
    },
    AwsManaged {
        name: "CloudWatchLogsFullAccess",
        path: "/",
        description: "Provides full access to CloudWatch Logs",
        document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["logs:*"],"Resource":"*"}]}"#,
    },
    AwsManaged {
        name: "AmazonEC2ContainerRegistryReadOnly",
        path: "/",
        description: "Provides read-only access to Amazon EC2 Container Registry repositories.",
        document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:GetAuthorizationToken","ecr:BatchCheckLayerAvailability","ecr:GetDownloadUrlForLayer","ecr:GetRepositoryPolicy","ecr:DescribeRepositories","ecr:ListImages","ecr:DescribeImages","ecr:BatchGetImage"],"Resource":"*"}]}"#,
    },
    AwsManaged {
        name: "AmazonSageMakerFullAccess",
        path: "/",
        description:
            "Provides full access to Amazon SageMaker via the AWS Management Console and SDK.",
        document: r#"{"Version":"2012-10-17","Statement":[
{"Effect":"Allow","Action":["sagemaker:*","sts:GetCallerIdentity"],"Resource":"*"},
{"Effect":"Allow","Action":["ecr:GetAuthorizationToken","ecr:BatchCheckLayerAvailability","ecr:GetDownloadUrlForLayer","ecr:BatchGetImage","ecr:DescribeRepositories","ecr:DescribeImages","ecr:CreateRepository","ecr:PutImage","ecr:InitiateLayerUpload","ecr:UploadLayerPart","ecr:CompleteLayerUpload"],"Resource":"*"},
{"Effect":"Allow","Action":["ec2:CreateNetworkInterface","ec2:CreateNetworkInterfacePermission","ec2:DeleteNetworkInterface","ec2:DeleteNetworkInterfacePermission","ec2:DescribeNetworkInterfaces","ec2:DescribeVpcs","ec2:DescribeDhcpOptions","ec2:DescribeSubnets","ec2:DescribeSecurityGroups","ec2:DescribeVpcEndpoints","ec2:DescribeRouteTables"],"Resource":"*"},
{"Effect":"Allow","Action":["logs:CreateLogGroup","logs:CreateLogStream","logs:PutLogEvents","logs:DescribeLogStreams","logs:GetLogEvents","logs:FilterLogEvents","cloudwatch:PutMetricData","cloudwatch:GetMetricData","cloudwatch:ListMetrics"],"Resource":"*"},
{"Effect":"Allow","Action":["s3:GetObject","s3:PutObject","s3:DeleteObject","s3:AbortMultipartUpload"],"Resource":["arn:aws:s3:::*SageMaker*","arn:aws:s3:::*Sagemaker*","arn:aws:s3:::*sagemaker*"]},
{"Effect":"Allow","Action":["s3:CreateBucket","s3:GetBucketLocation","s3:ListBucket","s3:ListAllMyBuckets","s3:GetBucketCors","s3:PutBucketCors"],"Resource":"*"},
{"Effect":"Allow","Action":"iam:PassRole","Resource":"arn:aws:iam::*:role/*","Condition":{"StringEquals":{"iam:PassedToService":"sagemaker.amazonaws.com"}}},
{"Effect":"Allow","Action":["iam:GetRole","iam:ListRoles"],"Resource":"*"}
]}"#,
    },
];

/// The AWS managed policy with this ARN.
pub fn aws_managed(arn: &str) -> Option<&'static AwsManaged> {
    AWS_MANAGED.iter().find(|p| p.arn() == arn)
}

/// The document in force of a managed policy, AWS's or the account's (its
/// default version); `None` for an ARN that names neither.
pub fn default_document(w: &cove_model::world::World, arn: &str) -> Option<String> {
    match aws_managed(arn) {
        Some(m) => Some(m.document.to_string()),
        None => w
            .iam_policies
            .get(arn)
            .and_then(|p| p.default_document())
            .map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_model::policy::{Kind, Policy};

    #[test]
    fn every_aws_managed_policy_is_a_valid_identity_policy() {
        for p in AWS_MANAGED {
            Policy::parse(p.document, Kind::Identity).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert_eq!(aws_managed(&p.arn()).map(|m| m.name), Some(p.name));
            assert!(p.policy_id().starts_with("ANPA") && p.policy_id().len() == 21);
        }
    }
}
