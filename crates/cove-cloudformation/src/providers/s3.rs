//! S3 buckets and bucket policies, made by Cove's S3 (so a bucket policy
//! in a template is enforced on the next request like one put by the API).

use super::{created, document, need, s, Api, Created, Naming};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Bucket properties Cove accepts but does not apply: the stack's event
/// for the bucket says so, rather than failing designs that set them.
const NOT_APPLIED: [&str; 9] = [
    "Tags",
    "BucketEncryption",
    "PublicAccessBlockConfiguration",
    "OwnershipControls",
    "VersioningConfiguration",
    "LifecycleConfiguration",
    "LoggingConfiguration",
    "NotificationConfiguration",
    "CorsConfiguration",
];

fn s3(api: &dyn Api, operation: &str, input: Value) -> Result<Value, String> {
    super::call(api, "s3", operation, input)
}

pub fn create(
    api: &dyn Api,
    kind: &str,
    props: &Map<String, Value>,
    naming: &Naming,
) -> Result<Created, String> {
    match kind {
        "AWS::S3::Bucket" => {
            if let Some(other) = props
                .keys()
                .find(|k| *k != "BucketName" && !NOT_APPLIED.contains(&k.as_str()))
            {
                return Err(format!(
                    "Cove does not support the property {other} of AWS::S3::Bucket"
                ));
            }
            let name =
                s(props, "BucketName").unwrap_or_else(|| super::generated_name(kind, naming));
            let region = api.region();
            let mut input = json!({"Bucket": name});
            if region != "us-east-1" {
                input["CreateBucketConfiguration"] = json!({"LocationConstraint": region});
            }
            s3(api, "CreateBucket", input)?;
            let mut made = created(
                name.clone(),
                &[
                    ("Arn", json!(format!("arn:aws:s3:::{name}"))),
                    ("DomainName", json!(format!("{name}.s3.amazonaws.com"))),
                    (
                        "RegionalDomainName",
                        json!(format!("{name}.s3.{region}.amazonaws.com")),
                    ),
                ],
            );
            let ignored: Vec<&str> = props
                .keys()
                .map(String::as_str)
                .filter(|k| NOT_APPLIED.contains(k))
                .collect();
            if !ignored.is_empty() {
                made.note = Some(format!(
                    "Cove made the bucket without applying {}",
                    ignored.join(", ")
                ));
            }
            Ok(made)
        }
        "AWS::S3::BucketPolicy" => {
            let bucket = need(props, "Bucket")?;
            s3(
                api,
                "PutBucketPolicy",
                json!({"Bucket": bucket, "Policy": document(props, "PolicyDocument")?}),
            )?;
            Ok(created(
                naming.generate(128, false),
                &[("Bucket", json!(bucket))],
            ))
        }
        other => Err(format!("Cove does not create resources of type {other}")),
    }
}

pub fn delete(
    api: &dyn Api,
    kind: &str,
    physical_id: &str,
    attributes: &BTreeMap<String, Value>,
) -> Result<(), String> {
    match kind {
        "AWS::S3::Bucket" => s3(api, "DeleteBucket", json!({"Bucket": physical_id})).map(|_| ()),
        "AWS::S3::BucketPolicy" => s3(
            api,
            "DeleteBucketPolicy",
            json!({"Bucket": attributes.get("Bucket")}),
        )
        .map(|_| ()),
        other => Err(format!("Cove does not delete resources of type {other}")),
    }
}

pub fn updatable(kind: &str) -> &'static [&'static str] {
    match kind {
        "AWS::S3::Bucket" => &NOT_APPLIED,
        "AWS::S3::BucketPolicy" => &["PolicyDocument"],
        _ => &[],
    }
}

pub fn update(
    api: &dyn Api,
    kind: &str,
    attributes: &BTreeMap<String, Value>,
    new: &Map<String, Value>,
) -> Result<(), String> {
    match kind {
        // Properties Cove does not apply: nothing to change.
        "AWS::S3::Bucket" => Ok(()),
        _ => s3(
            api,
            "PutBucketPolicy",
            json!({"Bucket": attributes.get("Bucket"), "Policy": document(new, "PolicyDocument")?}),
        )
        .map(|_| ()),
    }
}
