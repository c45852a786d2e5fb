//! Bucket calls Cove makes itself, as an account (CloudFormation's
//! `AWS::S3::Bucket` and `AWS::S3::BucketPolicy`, and the templates a
//! `TemplateURL` names): the same checks and the
//! same storage as the S3 API's calls, without a signed HTTP request. The
//! input and output are shaped like the API's (`Bucket`, `Policy`, …).

use crate::errors::aws;
use crate::service::{create_bucket_as, put_bucket_policy};
use crate::storage::{Refusal, Storage};
use cove_model::{AwsError, AwsResult};
use s3s::{S3Error, S3ErrorCode};
use serde_json::{json, Value};

/// S3's error as the other services' errors are carried.
fn aws_error(e: S3Error) -> AwsError {
    let message = e.message().unwrap_or(e.code().as_str()).to_string();
    let status = e.status_code().map_or(500, |s| s.as_u16());
    AwsError::new(status, e.code().as_str(), message)
}

fn text<'a>(input: &'a Value, key: &str) -> AwsResult<&'a str> {
    input[key]
        .as_str()
        .ok_or_else(|| AwsError::client("InvalidRequest", format!("{key} is required")))
}

/// What the storage refused, as S3 answers it.
fn refused(r: Refusal) -> AwsError {
    aws_error(S3Error::from(r))
}

/// Refuses a call on another account's bucket, as S3 does without a policy that allows it.
fn own(storage: &Storage, account: &str, bucket: &str) -> AwsResult<()> {
    let b = storage.bucket(bucket).map_err(refused)?;
    if b.owner != account {
        return Err(aws_error(aws(S3ErrorCode::AccessDenied)));
    }
    Ok(())
}

/// Runs `operation` as `account` at `region`'s endpoint.
pub fn call(
    storage: &Storage,
    account: &str,
    region: &str,
    operation: &str,
    input: &Value,
) -> AwsResult<Value> {
    let bucket = text(input, "Bucket")?;
    match operation {
        "CreateBucket" => {
            let constraint = input["CreateBucketConfiguration"]["LocationConstraint"].as_str();
            create_bucket_as(storage, account, region, bucket, constraint).map_err(aws_error)?;
            Ok(json!({"Location": format!("/{bucket}")}))
        }
        "DeleteBucket" => {
            own(storage, account, bucket)?;
            storage.delete_bucket(bucket).map_err(refused)?;
            Ok(json!({}))
        }
        "PutBucketPolicy" => {
            own(storage, account, bucket)?;
            put_bucket_policy(storage, bucket, text(input, "Policy")?).map_err(aws_error)?;
            Ok(json!({}))
        }
        "DeleteBucketPolicy" => {
            own(storage, account, bucket)?;
            storage.set_policy(bucket, None).map_err(refused)?;
            Ok(json!({}))
        }
        // Cove's own `MaxBytes`: a larger object answers its size, unread.
        "GetObject" => {
            own(storage, account, bucket)?;
            let key = text(input, "Key")?;
            let object = storage
                .object(bucket, key)
                .map_err(refused)?
                .ok_or_else(|| aws_error(aws(S3ErrorCode::NoSuchKey)))?;
            if input["MaxBytes"]
                .as_u64()
                .is_some_and(|max| object.size > max)
            {
                return Ok(json!({"ContentLength": object.size}));
            }
            let body = std::fs::read(storage.blob_path(&object.blob))
                .map_err(|e| AwsError::internal(format!("reading {bucket}/{key}: {e}")))?;
            Ok(json!({"Body": String::from_utf8_lossy(&body)}))
        }
        other => Err(AwsError::client(
            "NotImplemented",
            format!("Cove makes no in-process S3 call {other}"),
        )),
    }
}
