//! The request types of the AWS APIs Cove serves, generated at build time
//! from the botocore models the wire layer validates against (see
//! `build.rs`): one module per service, each with a struct per input
//! structure and a `Request` enum whose `Request::parse` runs once per call,
//! at the boundary. They live in their own crate, with no Cove dependency,
//! so that the API handlers, the stored records (`cove-model`) and the
//! drivers all share one typed form of a request instead of reading JSON by
//! name.

use serde::Deserialize;
use serde_json::Value;

// One module per service in build.rs's `SERVICES`, named as there.

/// The SageMaker API (`SageMaker.*`).
pub mod sagemaker {
    include!(concat!(env!("OUT_DIR"), "/sagemaker.rs"));
}

/// The STS API (`AssumeRole`, `GetCallerIdentity`).
pub mod sts {
    include!(concat!(env!("OUT_DIR"), "/sts.rs"));
}

/// The IAM API: roles, their inline and managed policies, and the policy
/// simulator.
pub mod iam {
    include!(concat!(env!("OUT_DIR"), "/iam.rs"));
}

/// The CloudWatch Logs API (`Logs_20140328.*`).
pub mod logs {
    include!(concat!(env!("OUT_DIR"), "/logs.rs"));
}

/// The EC2 API, as far as Cove serves it. Every member is an `Option`, even
/// a required one: EC2's handlers answer a missing one with their own
/// `MissingParameter`.
pub mod ec2 {
    include!(concat!(env!("OUT_DIR"), "/ec2.rs"));
}

/// The ECR API (`AmazonEC2ContainerRegistry_V20150921.*`).
pub mod ecr {
    include!(concat!(env!("OUT_DIR"), "/ecr.rs"));
}

/// A timestamp as AWS's JSON protocol sends it: seconds since the epoch (a
/// number), or an ISO 8601 string, which some clients send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timestamp(pub time::OffsetDateTime);

impl Default for Timestamp {
    fn default() -> Timestamp {
        Timestamp(time::OffsetDateTime::UNIX_EPOCH)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let v = Value::deserialize(d)?;
        time_of(&v)
            .map(Timestamp)
            .ok_or_else(|| serde::de::Error::custom(format!("{v} is not a timestamp")))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Whole seconds as a float, as AWS's JSON protocol writes them.
        #[allow(clippy::cast_precision_loss)] // why: epoch seconds fit f64's 53 bits.
        let seconds = self.0.unix_timestamp() as f64;
        s.serialize_f64(seconds)
    }
}

/// A time as AWS's JSON protocol writes one: epoch seconds (a number,
/// maybe fractional) or an RFC 3339 string; `None` for anything else.
pub fn time_of(v: &Value) -> Option<time::OffsetDateTime> {
    match v {
        Value::Number(n) => n.as_f64().and_then(|f| {
            // why: `as` saturates, and a time that far out is refused below.
            #[allow(clippy::cast_possible_truncation)]
            let nanos = (f * 1e9).round() as i128;
            time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
        }),
        Value::String(s) => {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::sagemaker::*;
    use serde_json::json;

    #[test]
    fn a_request_parses_into_its_operations_type() {
        let input = json!({
            "TrainingJobName": "t1",
            "RoleArn": "arn:aws:iam::123456789012:role/r",
            "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File"},
            "OutputDataConfig": {"S3OutputPath": "s3://b/out"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
            "StoppingCondition": {"MaxRuntimeInSeconds": 60},
            "VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]},
        });
        let Some(Ok(Request::CreateTrainingJob(r))) = Request::parse("CreateTrainingJob", &input)
        else {
            panic!("not parsed");
        };
        assert_eq!(r.training_job_name, "t1");
        assert_eq!(r.resource_config.unwrap().instance_count, Some(1));
        assert_eq!(r.vpc_config.unwrap().subnets, ["subnet-1"]);
        assert!(Request::parse("NoSuchOperation", &input).is_none());
    }

    #[test]
    fn timestamps_come_as_numbers_or_strings() {
        let list = |v| match Request::parse("ListTrainingJobs", &json!({"CreationTimeAfter": v})) {
            Some(Ok(Request::ListTrainingJobs(r))) => {
                r.creation_time_after.map(|t| t.0.unix_timestamp())
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(list(json!(1_700_000_000)), Some(1_700_000_000));
        assert_eq!(list(json!("2023-11-14T22:13:20Z")), Some(1_700_000_000));
    }

    #[test]
    fn ec2_members_are_all_optional_and_keywords_are_escaped() {
        use super::ec2;
        let Some(Ok(ec2::Request::CreateVpc(r))) = ec2::Request::parse("CreateVpc", &json!({}))
        else {
            panic!("not parsed");
        };
        assert_eq!(r.cidr_block, None);
        let input = json!({"Filters": [{"Name": "vpc-id", "Values": ["vpc-1"]}], "MaxResults": 5});
        let Some(Ok(ec2::Request::DescribeVpcs(r))) = ec2::Request::parse("DescribeVpcs", &input)
        else {
            panic!("not parsed");
        };
        let filters = r.filters.unwrap();
        assert_eq!(filters[0].name.as_deref(), Some("vpc-id"));
        assert_eq!(r.max_results, Some(5));
        // `type` is a keyword in Rust; the wire name stays.
        let code: ec2::IcmpTypeCode = serde_json::from_value(json!({"Type": 8})).unwrap();
        assert_eq!(code.r#type, Some(8));
    }

    #[test]
    fn sts_and_logs_parse() {
        use super::{logs, sts};
        let input = json!({"RoleArn": "arn:aws:iam::1:role/r", "RoleSessionName": "s"});
        let Some(Ok(sts::Request::AssumeRole(r))) = sts::Request::parse("AssumeRole", &input)
        else {
            panic!("not parsed");
        };
        assert_eq!(r.role_session_name, "s");
        let input = json!({"logGroupName": "g", "tags": {"k": "v"}});
        let Some(Ok(logs::Request::CreateLogGroup(r))) =
            logs::Request::parse("CreateLogGroup", &input)
        else {
            panic!("not parsed");
        };
        assert_eq!(r.log_group_name, "g");
        assert_eq!(r.tags.unwrap()["k"], "v");
    }

    #[test]
    fn a_missing_required_member_is_an_error_not_a_default() {
        assert!(matches!(
            Request::parse("DescribeTrainingJob", &json!({})),
            Some(Err(_))
        ));
    }
}

/// Route 53, the part VPCs use: hosted zones (public and private), their
/// VPC associations, record sets and changes.
pub mod route53 {
    include!(concat!(env!("OUT_DIR"), "/route53.rs"));
}

/// Amazon EFS: file systems, mount targets, access points, policies and
/// tags.
pub mod efs {
    include!(concat!(env!("OUT_DIR"), "/efs.rs"));
}

/// The CloudFormation API, as far as Cove serves it.
pub mod cloudformation {
    include!(concat!(env!("OUT_DIR"), "/cloudformation.rs"));
}
