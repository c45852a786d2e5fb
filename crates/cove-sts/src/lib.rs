//! STS: who the caller is, and temporary credentials. `GetCallerIdentity`
//! answers from the principal the wire layer authenticated; `AssumeRole`
//! mints a session that every Cove service then accepts (the wire layer and
//! S3 look sessions up through [`principal_of_session`]). With IAM enforced
//! the role must exist and its trust policy admit the caller; otherwise any
//! well-formed role ARN of the caller's account can be assumed. Another
//! account's role, in either mode, only when it exists and its trust policy
//! admits the caller. The session belongs to the role's account; its
//! identity is what bucket policies see as `aws:PrincipalArn`.

use cove_model::ids::{random_string, rfc3339_of, SECRET_ALPHABET, UPPER_ALNUM};
use cove_model::jobs::StsSession;
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_shapes::sts::{AssumeRoleRequest, Request};
use cove_store::Store;
use cove_wire::{model::ServiceModel, Principal, Protocol, RequestContext, Service};
use serde_json::{json, Value};
use std::sync::Arc;

/// AssumeRole's default `DurationSeconds`; the model bounds it to 900..43200.
const DEFAULT_DURATION: i64 = 3_600;

pub struct StsService {
    store: Arc<Store>,
    /// Trust policies decide `AssumeRole` (IAM enforced); otherwise any
    /// well-formed role ARN of the caller's account can be assumed.
    enforce_iam: bool,
}

impl StsService {
    pub fn new(store: Arc<Store>) -> StsService {
        StsService {
            store,
            enforce_iam: false,
        }
    }

    /// With IAM enforced, `AssumeRole` needs a role that exists and whose
    /// trust policy names the caller (see `cove_iam::authority`).
    pub fn enforcing_iam(mut self, enforce: bool) -> StsService {
        self.enforce_iam = enforce;
        self
    }

    /// Mints and stores temporary credentials for `role_arn`, limited by
    /// `session_policies` (AssumeRole's `Policy` and `PolicyArns`) if any.
    pub fn assume_role(
        &self,
        account_id: &str,
        role_arn: &str,
        session_name: &str,
        duration_seconds: i64,
        session_policies: SessionPolicies,
    ) -> AwsResult<StsSession> {
        let mut session = new_session(account_id, role_arn, session_name, duration_seconds);
        session.session_policy = session_policies.document;
        session.session_policy_arns = session_policies.arns;
        self.store.write(|tx| {
            tx.act_for(account_id);
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            // Expired sessions are refused anyway; dropping them here keeps the table small.
            let expired: Vec<String> = tx
                .world
                .sts_sessions
                .values()
                .filter(|s| s.expiration < now)
                .map(|s| s.access_key_id.clone())
                .collect();
            for key in expired {
                tx.delete::<StsSession>(&key);
            }
            tx.put(session.clone());
            Ok(())
        })?;
        Ok(session)
    }
}

/// The session policies a session is limited by (none by default).
#[derive(Debug, Clone, Default)]
pub struct SessionPolicies {
    pub document: Option<String>,
    pub arns: Vec<String>,
}

fn new_session(account_id: &str, role_arn: &str, session_name: &str, duration: i64) -> StsSession {
    let role_id = format!("AROA{}", random_string(UPPER_ALNUM, 17));
    StsSession {
        access_key_id: format!("ASIA{}", random_string(UPPER_ALNUM, 16)),
        secret_access_key: random_string(SECRET_ALPHABET, 40),
        session_token: format!("IQoJb3JpZ2luX2Vj{}", random_string(SECRET_ALPHABET, 300)),
        role_arn: role_arn.to_string(),
        session_name: session_name.to_string(),
        assumed_role_id: format!("{role_id}:{session_name}"),
        account_id: account_id.to_string(),
        expiration: time::OffsetDateTime::now_utc().unix_timestamp() + duration,
        session_policy: None,
        session_policy_arns: Vec::new(),
    }
}

/// The principal a session's access key stands for, while it is valid.
pub fn principal_of_session(world: &World, access_key: &str) -> Option<Principal> {
    let s = world.sts_sessions.get(access_key)?;
    if s.expiration < time::OffsetDateTime::now_utc().unix_timestamp() {
        return None;
    }
    Some(Principal {
        access_key: s.access_key_id.clone(),
        secret_key: s.secret_access_key.clone(),
        session_token: Some(s.session_token.clone()),
        account_id: s.account_id.clone(),
        arn: s.assumed_role_arn(),
        user_id: s.assumed_role_id.clone(),
    })
}

/// The account and role name of an IAM role ARN (`arn:aws:iam::123:role/path/name`).
fn parse_role_arn(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (account, resource) = rest.split_once(':')?;
    let name = resource.strip_prefix("role/")?.rsplit('/').next()?;
    let valid = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    (valid && !name.is_empty()).then_some((account, name))
}

impl Service for StsService {
    fn signing_name(&self) -> &'static str {
        "sts"
    }
    fn protocol(&self) -> Protocol {
        Protocol::Query
    }
    fn model(&self) -> &'static ServiceModel {
        cove_wire::model::sts()
    }
    fn handle(&self, ctx: &RequestContext, input: Value) -> AwsResult<Value> {
        match Request::parse(&ctx.operation, &input) {
            Some(Ok(Request::GetCallerIdentity(_))) => Ok(json!({
                "UserId": ctx.principal.user_id,
                "Account": ctx.principal.account_id,
                "Arn": ctx.principal.arn,
            })),
            Some(Ok(Request::AssumeRole(r))) => self.assume_role_call(ctx, &r),
            // The wire layer has checked the input against the model, so
            // this is the query protocol's answer to malformed input.
            Some(Err(e)) => Err(AwsError::client("ValidationError", e.to_string())),
            None => Err(AwsError::client(
                "InvalidAction",
                format!(
                    "Could not find operation {} for version 2011-06-15",
                    ctx.operation
                ),
            )),
        }
    }
}

impl StsService {
    fn assume_role_call(&self, ctx: &RequestContext, r: &AssumeRoleRequest) -> AwsResult<Value> {
        let role_arn = r.role_arn.as_str();
        let duration = r.duration_seconds.unwrap_or(DEFAULT_DURATION);
        let not_authorized = || {
            AwsError::new(
                403,
                "AccessDenied",
                format!(
                    "User: {} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
                    ctx.principal.arn
                ),
            )
        };
        let (account, _) = parse_role_arn(role_arn).ok_or_else(not_authorized)?;
        // Another account's role only if it exists and trusts the caller,
        // whatever the IAM mode: accounts are always kept apart.
        if self.enforce_iam || account != ctx.account_id() {
            let who = cove_iam::authority::Assumer::Caller {
                arn: &ctx.principal.arn,
                account: ctx.account_id(),
                access_key: &ctx.principal.access_key,
            };
            if !cove_iam::authority::may_assume(&self.store.snapshot(), role_arn, &who) {
                return Err(not_authorized());
            }
        }
        if let Some(doc) = &r.policy {
            cove_model::policy::Policy::parse(doc, cove_model::policy::Kind::Identity)
                .map_err(|e| AwsError::client("MalformedPolicyDocument", e.0))?;
        }
        let limits = SessionPolicies {
            document: r.policy.clone(),
            arns: r
                .policy_arns
                .iter()
                .flatten()
                .filter_map(|p| p.arn.clone())
                .collect(),
        };
        let s = self.assume_role(account, role_arn, &r.role_session_name, duration, limits)?;
        Ok(json!({
            "Credentials": {
                "AccessKeyId": s.access_key_id,
                "SecretAccessKey": s.secret_access_key,
                "SessionToken": s.session_token,
                "Expiration": rfc3339_of(s.expiration),
            },
            "AssumedRoleUser": {
                "AssumedRoleId": s.assumed_role_id,
                "Arn": s.assumed_role_arn(),
            },
            "PackedPolicySize": 0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_parse_with_paths_and_refuse_other_shapes() {
        assert_eq!(
            parse_role_arn("arn:aws:iam::000000000000:role/SageMakerRole"),
            Some(("000000000000", "SageMakerRole"))
        );
        assert_eq!(
            parse_role_arn("arn:aws:iam::000000000000:role/service-role/X"),
            Some(("000000000000", "X"))
        );
        assert_eq!(parse_role_arn("arn:aws:iam::000000000000:user/bob"), None);
        assert_eq!(parse_role_arn("arn:aws:iam::12:role/x"), None);
    }

    #[test]
    fn sessions_authenticate_until_they_expire() {
        let store = Arc::new(Store::in_memory().unwrap());
        let sts = StsService::new(store.clone());
        let s = sts
            .assume_role(
                "000000000000",
                "arn:aws:iam::000000000000:role/R",
                "job",
                900,
                SessionPolicies::default(),
            )
            .unwrap();
        assert!(s.access_key_id.starts_with("ASIA") && s.access_key_id.len() == 20);
        let p = principal_of_session(&store.snapshot(), &s.access_key_id).unwrap();
        assert_eq!(p.arn, "arn:aws:sts::000000000000:assumed-role/R/job");
        assert_eq!(p.session_token.as_deref(), Some(s.session_token.as_str()));
        store
            .write(|tx| {
                let mut old = s.clone();
                old.expiration = 0;
                tx.put(old);
                Ok(())
            })
            .unwrap();
        assert!(principal_of_session(&store.snapshot(), &s.access_key_id).is_none());
    }
}
