//! Who may do what: s3s verifies the SigV4 signature with the secret that
//! [`Auth`] finds through Cove's credential lookup; [`Access`] then checks
//! the session token and applies the VPC endpoint policy and the bucket
//! policy to the request's action, resource and origin, before the body is
//! read.

use crate::errors::aws;
use crate::origin::S3Origin;
use crate::policy::{Decision, Kind, Policy, RequestContext};
use crate::storage::Storage;
use cove_iam::authority::IdentityPolicies;
use cove_wire::dispatch::CredentialLookup;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{S3ErrorCode, S3Result};
use std::sync::Arc;

/// The authenticated caller, stored in the request's extensions for handlers
/// that authorize more than the request line shows (DeleteObjects' keys,
/// CopyObject's source).
#[derive(Debug, Clone)]
pub struct Caller {
    pub arn: String,
    pub account: String,
    /// The identity policies that limit the caller (a role session when IAM
    /// is enforced); `None` when none do.
    pub limits: Option<Arc<IdentityPolicies>>,
}

/// Finds the identity policies that limit a principal, by ARN and the
/// access key it signed with (`None`: none do).
pub type IdentityLookup = Arc<dyn Fn(&str, &str) -> Option<IdentityPolicies> + Send + Sync>;

/// No caller is limited by identity policies (IAM not enforced).
pub fn no_identity_policies() -> IdentityLookup {
    Arc::new(|_, _| None)
}

pub struct Auth {
    pub credentials: CredentialLookup,
}

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        (self.credentials)(access_key)
            .map(|p| SecretKey::from(p.secret_key))
            .ok_or_else(|| aws(S3ErrorCode::InvalidAccessKeyId))
    }
}

pub struct Access {
    pub credentials: CredentialLookup,
    /// The server's region: what S3 says it expected when a request is
    /// signed for a region AWS does not have.
    pub region: String,
    pub storage: Arc<Storage>,
    pub identity: IdentityLookup,
}

/// The IAM action S3 authorizes an operation as.
pub fn action_for(op: &str) -> String {
    match op {
        "HeadObject" | "GetObjectAttributes" => "s3:GetObject".into(),
        "HeadBucket" | "ListObjects" | "ListObjectsV2" => "s3:ListBucket".into(),
        "ListBuckets" => "s3:ListAllMyBuckets".into(),
        "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "PostObject" => "s3:PutObject".into(),
        "ListParts" => "s3:ListMultipartUploadParts".into(),
        "ListMultipartUploads" => "s3:ListBucketMultipartUploads".into(),
        "DeleteObjects" => "s3:DeleteObject".into(),
        other => format!("s3:{other}"),
    }
}

pub fn resource_for(bucket: Option<&str>, key: Option<&str>) -> String {
    match (bucket, key) {
        (Some(b), Some(k)) => format!("arn:aws:s3:::{b}/{k}"),
        (Some(b), None) => format!("arn:aws:s3:::{b}"),
        _ => "*".into(),
    }
}

/// The policy evaluation context of one request.
pub fn context(action: &str, resource: &str, caller: &Caller, origin: &S3Origin) -> RequestContext {
    let mut cx = RequestContext::new(action, resource, &caller.arn, &caller.account);
    if let Some(ip) = origin.source_ip {
        cx.set("aws:SourceIp", ip.to_string());
    }
    if let Some(vpce) = &origin.vpc_endpoint_id {
        cx.set("aws:SourceVpce", vpce.clone());
    }
    if let Some(vpc) = &origin.vpc_id {
        cx.set("aws:SourceVpc", vpc.clone());
    }
    cx.set(
        "aws:SecureTransport",
        if origin.secure_transport {
            "true"
        } else {
            "false"
        },
    );
    cx
}

fn denied() -> s3s::S3Error {
    aws(S3ErrorCode::AccessDenied)
}

/// Applies the endpoint policy (must allow), the bucket policy (must not
/// deny) and, for a caller that identity policies limit, those policies
/// (must not deny, and they or the bucket policy must allow) to one action
/// on one resource. Another account's bucket is reached only where its
/// policy allows the caller (and the caller's own policies, if any limit
/// it, allow too), as across accounts on AWS. The bucket owner's root
/// keeps the right to manage the bucket's policy even when the policy
/// denies it, as on AWS, so a bad policy cannot lock the owner out.
pub fn authorize(
    storage: &Storage,
    bucket: Option<&str>,
    cx: &RequestContext,
    origin: &S3Origin,
    limits: Option<&IdentityPolicies>,
) -> S3Result<()> {
    let owner = bucket.and_then(|b| storage.bucket(b).ok()).map(|b| b.owner);
    // CreateBucket on a taken name is answered by the handler
    // (BucketAlreadyExists), as S3 does.
    let foreign = owner.as_ref().is_some_and(|o| *o != cx.principal_account)
        && cx.action != "s3:CreateBucket";
    let by_bucket = bucket_decision(storage, bucket, cx, origin, foreign)?;
    match limits.map(|l| l.decide(cx)) {
        Some(Decision::Deny) => Err(denied()),
        _ if foreign && by_bucket != Decision::Allow => Err(denied()),
        None | Some(Decision::Allow) => Ok(()),
        Some(Decision::NotApplicable) if by_bucket == Decision::Allow && !foreign => Ok(()),
        Some(Decision::NotApplicable) => Err(denied()),
    }
}

/// The endpoint and bucket policies' part of [`authorize`]: an error for a
/// denial, else what the bucket policy says (`NotApplicable` without one).
fn bucket_decision(
    storage: &Storage,
    bucket: Option<&str>,
    cx: &RequestContext,
    origin: &S3Origin,
    foreign: bool,
) -> S3Result<Decision> {
    if origin.vpc_endpoint_id.is_some() {
        if let Some(doc) = &origin.endpoint_policy {
            let allowed = Policy::parse(doc, Kind::Endpoint)
                .map(|p| p.evaluate(cx) == Decision::Allow)
                .unwrap_or(false);
            if !allowed {
                return Err(denied());
            }
        }
    }
    let Some(bucket) = bucket else {
        return Ok(Decision::NotApplicable);
    };
    let Ok(b) = storage.bucket(bucket) else {
        return Ok(Decision::NotApplicable);
    };
    let Some(doc) = b.policy else {
        return Ok(Decision::NotApplicable);
    };
    let root_manages_policy = !foreign
        && cx.principal_arn.ends_with(":root")
        && matches!(
            cx.action.as_str(),
            "s3:GetBucketPolicy" | "s3:PutBucketPolicy" | "s3:DeleteBucketPolicy"
        );
    match Policy::parse(&doc, Kind::Bucket).map(|p| p.evaluate(cx)) {
        Ok(Decision::Deny) if root_manages_policy => Ok(Decision::NotApplicable),
        Ok(Decision::Deny) => Err(denied()),
        Ok(decision) => Ok(decision),
        Err(e) => {
            tracing::error!(bucket, error = %e, "s3: stored bucket policy no longer parses");
            Ok(Decision::NotApplicable)
        }
    }
}

fn query_param(uri: &axum::http::Uri, name: &str) -> Option<String> {
    cove_wire::query::query_param(uri.query(), name)
}

/// The region of a SigV4 credential scope (`AK/date/region/s3/aws4_request`),
/// from the `Authorization` header or a presigned URL's `X-Amz-Credential`.
fn signed_region(headers: &axum::http::HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    let scope = match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(h) => cove_wire::sigv4::parse_authorization(h).map(|a| a.region),
        None => query_param(uri, "X-Amz-Credential")
            .and_then(|c| c.split('/').nth(2).map(str::to_string)),
    };
    scope.filter(|r| !r.is_empty())
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(creds) = cx.credentials() else {
            return Err(denied());
        };
        let principal = (self.credentials)(&creds.access_key)
            .ok_or_else(|| aws(S3ErrorCode::InvalidAccessKeyId))?;
        let sent = cx
            .headers()
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| query_param(cx.uri(), "X-Amz-Security-Token"));
        if principal.session_token != sent {
            return Err(aws(S3ErrorCode::InvalidToken));
        }
        if let Some(region) = signed_region(cx.headers(), cx.uri())
            .filter(|r| !cove_model::region::is_known_region(r))
        {
            return Err(s3s::S3Error::with_message(
                S3ErrorCode::AuthorizationHeaderMalformed,
                format!(
                    "The authorization header is malformed; the region '{region}' is wrong; expecting '{}'",
                    self.region
                ),
            ));
        }
        let caller = Caller {
            arn: principal.arn.clone(),
            account: principal.account_id.clone(),
            limits: (self.identity)(&principal.arn, &principal.access_key).map(Arc::new),
        };
        let origin = cx
            .extensions_mut()
            .get::<S3Origin>()
            .cloned()
            .unwrap_or_default();
        let op = cx.s3_op().name();
        let (bucket, key) = match cx.s3_path() {
            S3Path::Root => (None, None),
            S3Path::Bucket { bucket } => (Some(bucket.to_string()), None),
            S3Path::Object { bucket, key } => (Some(bucket.to_string()), Some(key.to_string())),
        };
        // DeleteObjects names its keys in the body; the handler checks each.
        if op != "DeleteObjects" {
            let mut rc = context(
                &action_for(op),
                &resource_for(bucket.as_deref(), key.as_deref()),
                &caller,
                &origin,
            );
            if matches!(op, "ListObjects" | "ListObjectsV2") {
                for (name, param) in [
                    ("s3:prefix", "prefix"),
                    ("s3:delimiter", "delimiter"),
                    ("s3:max-keys", "max-keys"),
                ] {
                    if let Some(v) = query_param(cx.uri(), param) {
                        rc.set(name, v);
                    }
                }
            }
            authorize(
                &self.storage,
                bucket.as_deref(),
                &rc,
                &origin,
                caller.limits.as_deref(),
            )?;
        }
        cx.extensions_mut().insert(caller);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions() {
        assert_eq!(action_for("GetObject"), "s3:GetObject");
        assert_eq!(action_for("HeadObject"), "s3:GetObject");
        assert_eq!(action_for("ListObjectsV2"), "s3:ListBucket");
        assert_eq!(action_for("UploadPart"), "s3:PutObject");
        assert_eq!(action_for("ListBuckets"), "s3:ListAllMyBuckets");
        assert_eq!(resource_for(Some("b"), Some("k/1")), "arn:aws:s3:::b/k/1");
        assert_eq!(resource_for(Some("b"), None), "arn:aws:s3:::b");
    }

    #[test]
    fn endpoint_and_bucket_policies() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        storage
            .create_bucket("b", "us-east-1", "123456789012")
            .unwrap();
        let root = Caller {
            arn: "arn:aws:iam::123456789012:root".into(),
            account: "123456789012".into(),
            limits: None,
        };
        let public = S3Origin::public("127.0.0.1".parse().unwrap());
        let via = |policy: Option<&str>| S3Origin {
            source_ip: None,
            vpc_endpoint_id: Some("vpce-1".into()),
            vpc_id: Some("vpc-1".into()),
            endpoint_policy: policy.map(str::to_string),
            ..S3Origin::default()
        };
        let get = |o: &S3Origin| context("s3:GetObject", "arn:aws:s3:::b/k", &root, o);
        // No policies at all: same-account callers need no Allow.
        assert!(authorize(&storage, Some("b"), &get(&public), &public, None).is_ok());
        assert!(authorize(&storage, Some("b"), &get(&via(None)), &via(None), None).is_ok());
        // An endpoint policy must allow.
        let other = r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":["arn:aws:s3:::other/*"]}]}"#;
        assert!(authorize(
            &storage,
            Some("b"),
            &get(&via(Some(other))),
            &via(Some(other)),
            None
        )
        .is_err());
        assert!(authorize(
            &storage,
            Some("b"),
            &get(&via(Some("not json"))),
            &via(Some("not json")),
            None
        )
        .is_err());
        // A bucket policy that denies all but the endpoint.
        storage
            .set_policy(
                "b",
                Some(r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":["arn:aws:s3:::b","arn:aws:s3:::b/*"],"Condition":{"StringNotEquals":{"aws:SourceVpce":"vpce-1"}}}]}"#),
            )
            .unwrap();
        assert!(authorize(&storage, Some("b"), &get(&public), &public, None).is_err());
        assert!(authorize(&storage, Some("b"), &get(&via(None)), &via(None), None).is_ok());
        // The root can still remove the policy from outside.
        let delete = context("s3:DeleteBucketPolicy", "arn:aws:s3:::b", &root, &public);
        assert!(authorize(&storage, Some("b"), &delete, &public, None).is_ok());
        let alice = Caller {
            arn: "arn:aws:iam::123456789012:user/alice".into(),
            account: "123456789012".into(),
            limits: None,
        };
        let delete = context("s3:DeleteBucketPolicy", "arn:aws:s3:::b", &alice, &public);
        assert!(authorize(&storage, Some("b"), &delete, &public, None).is_err());
    }

    #[test]
    fn another_accounts_bucket_needs_its_policy_to_allow() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        storage
            .create_bucket("b", "us-east-1", "111111111111")
            .unwrap();
        let outsider = Caller {
            arn: "arn:aws:iam::222222222222:root".into(),
            account: "222222222222".into(),
            limits: None,
        };
        let public = S3Origin::public("127.0.0.1".parse().unwrap());
        let get = context("s3:GetObject", "arn:aws:s3:::b/k", &outsider, &public);
        let put_policy = context("s3:PutBucketPolicy", "arn:aws:s3:::b", &outsider, &public);
        assert!(authorize(&storage, Some("b"), &get, &public, None).is_err());
        assert!(authorize(&storage, Some("b"), &put_policy, &public, None).is_err());
        let create = context("s3:CreateBucket", "arn:aws:s3:::b", &outsider, &public);
        assert!(
            authorize(&storage, Some("b"), &create, &public, None).is_ok(),
            "the handler answers BucketAlreadyExists"
        );
        storage
            .set_policy(
                "b",
                Some(r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::222222222222:root"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#),
            )
            .unwrap();
        assert!(authorize(&storage, Some("b"), &get, &public, None).is_ok());
        assert!(authorize(&storage, Some("b"), &put_policy, &public, None).is_err());
        // A role session of the other account also needs its own policies.
        let limits = IdentityPolicies::new("arn:aws:iam::222222222222:role/r", Vec::new());
        assert!(authorize(&storage, Some("b"), &get, &public, Some(&limits)).is_err());
    }

    #[test]
    fn a_limited_callers_policies_or_the_bucket_policy_must_allow() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        storage
            .create_bucket("b", "us-east-1", "123456789012")
            .unwrap();
        let session = Caller {
            arn: "arn:aws:sts::123456789012:assumed-role/Job/s".into(),
            account: "123456789012".into(),
            limits: None,
        };
        let public = S3Origin::public("127.0.0.1".parse().unwrap());
        let get = |key: &str| {
            context(
                "s3:GetObject",
                &format!("arn:aws:s3:::b/{key}"),
                &session,
                &public,
            )
        };
        let identity = |doc: &str| {
            IdentityPolicies::new(
                "arn:aws:iam::123456789012:role/Job",
                vec![Policy::parse(doc, Kind::Identity).unwrap()],
            )
        };
        let reads_data = identity(
            r#"{"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/data/*"},{"Effect":"Deny","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/data/secret"}]}"#,
        );
        let check = |key: &str, limits: &IdentityPolicies| {
            authorize(&storage, Some("b"), &get(key), &public, Some(limits)).is_ok()
        };
        assert!(check("data/x", &reads_data));
        assert!(!check("data/secret", &reads_data));
        assert!(!check("other", &reads_data));
        // A bucket policy naming the role allows what its policies do not,
        // but never what they deny.
        storage
            .set_policy(
                "b",
                Some(r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:role/Job"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#),
            )
            .unwrap();
        assert!(check("other", &reads_data));
        assert!(!check("data/secret", &reads_data));
    }
}
