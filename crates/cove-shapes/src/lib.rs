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
    fn a_missing_required_member_is_an_error_not_a_default() {
        assert!(matches!(
            Request::parse("DescribeTrainingJob", &json!({})),
            Some(Err(_))
        ));
    }
}
