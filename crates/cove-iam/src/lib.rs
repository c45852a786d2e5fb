//! IAM, as far as SageMaker users need it: roles with their trust policy,
//! users with their access keys ([`users`]), inline and managed policies
//! (customer managed, and the AWS managed ones in [`managed`]), tags, and
//! the policy simulator
//! (`SimulatePrincipalPolicy`), which evaluates the role's policies with
//! IAM's rules (an explicit Deny wins, then an Allow, else an implicit
//! deny; a permissions boundary must allow too).
//!
//! With `--iam enforce`, [`authority`] holds role sessions and users to
//! their policies (S3, SageMaker's iam:PassRole) and trust policies decide who
//! may assume a role; in the default local mode nothing is enforced
//! (docs/iam.md).

pub mod authority;
pub mod managed;
mod simulate;
mod users;

pub use users::principal_of_access_key;

use cove_model::iam::{IamPolicy, IamRole, PolicyVersion};
use cove_model::ids::{random_string, rfc3339_of, UPPER_ALNUM};
use cove_model::policy::{Kind, Policy};
use cove_model::world::{Tags, World};
use cove_model::{AwsError, AwsResult};
use cove_shapes::iam::*;
use cove_store::Store;
use cove_wire::{model::ServiceModel, Protocol, RequestContext, Service};
use managed::{aws_managed, AwsManaged, AWS_MANAGED};
use serde_json::{json, Value};
use std::sync::Arc;

/// At most this many versions of one managed policy (IAM's limit).
const MAX_POLICY_VERSIONS: usize = 5;
/// A list call's page when `MaxItems` is not given.
const DEFAULT_PAGE: usize = 100;

pub struct IamService {
    store: Arc<Store>,
}

impl IamService {
    pub fn new(store: Arc<Store>) -> IamService {
        IamService { store }
    }
}

impl Service for IamService {
    fn signing_name(&self) -> &'static str {
        "iam"
    }
    fn protocol(&self) -> Protocol {
        Protocol::Query
    }
    fn model(&self) -> &'static ServiceModel {
        cove_wire::model::iam()
    }
    fn handle(&self, ctx: &RequestContext, input: Value) -> AwsResult<Value> {
        let request = match Request::parse(&ctx.operation, &input) {
            Some(Ok(r)) => r,
            Some(Err(e)) => return Err(AwsError::client("ValidationError", e.to_string())),
            None => {
                return Err(AwsError::client(
                    "InvalidAction",
                    format!(
                        "Could not find operation {} for version 2010-05-08",
                        ctx.operation
                    ),
                ))
            }
        };
        let cx = Cx {
            store: &self.store,
            account: ctx.account_id(),
            caller: &ctx.principal.arn,
        };
        match &request {
            Request::CreateRole(r) => cx.create_role(r),
            Request::GetRole(r) => {
                cx.read(|w| Ok(json!({"Role": role_out(role(w, cx.account, &r.role_name)?)})))
            }
            Request::DeleteRole(r) => cx.delete_role(r),
            Request::ListRoles(r) => cx.read(|w| {
                let prefix = r.path_prefix.as_deref().unwrap_or("/");
                let roles: Vec<Value> = w
                    .iam_roles
                    .values()
                    .filter(|x| x.path.starts_with(prefix))
                    .map(|x| role_out(x))
                    .collect();
                page("Roles", roles, r.marker.as_deref(), r.max_items)
            }),
            Request::UpdateRole(r) => cx.update_role(&r.role_name, |role| {
                if let Some(d) = &r.description {
                    role.description = Some(d.clone());
                }
                if let Some(m) = r.max_session_duration {
                    role.max_session_duration = m;
                }
                Ok(())
            }),
            Request::UpdateAssumeRolePolicy(r) => cx.update_role(&r.role_name, |role| {
                parse(&r.policy_document, Kind::Trust)?;
                role.assume_role_policy = r.policy_document.clone();
                Ok(())
            }),
            Request::TagRole(r) => cx.update_role(&r.role_name, |role| {
                role.tags
                    .extend(r.tags.iter().map(|t| (t.key.clone(), t.value.clone())));
                Ok(())
            }),
            Request::UntagRole(r) => cx.update_role(&r.role_name, |role| {
                for k in &r.tag_keys {
                    role.tags.remove(k);
                }
                Ok(())
            }),
            Request::ListRoleTags(r) => cx.read(|w| {
                let tags = tags_out(&role(w, cx.account, &r.role_name)?.tags);
                page("Tags", tags, r.marker.as_deref(), r.max_items)
            }),
            Request::PutRolePolicy(r) => cx.update_role(&r.role_name, |role| {
                parse(&r.policy_document, Kind::Identity)?;
                role.inline_policies
                    .insert(r.policy_name.clone(), r.policy_document.clone());
                Ok(())
            }),
            Request::GetRolePolicy(r) => cx.read(|w| {
                let role = role(w, cx.account, &r.role_name)?;
                let doc = role
                    .inline_policies
                    .get(&r.policy_name)
                    .ok_or_else(|| no_such_role_policy(&r.policy_name))?;
                Ok(json!({
                    "RoleName": role.name,
                    "PolicyName": r.policy_name,
                    "PolicyDocument": url_encoded(doc),
                }))
            }),
            Request::ListRolePolicies(r) => cx.read(|w| {
                let names: Vec<Value> = role(w, cx.account, &r.role_name)?
                    .inline_policies
                    .keys()
                    .map(|n| json!(n))
                    .collect();
                page("PolicyNames", names, r.marker.as_deref(), r.max_items)
            }),
            Request::DeleteRolePolicy(r) => cx.update_role(&r.role_name, |role| {
                role.inline_policies
                    .remove(&r.policy_name)
                    .map(drop)
                    .ok_or_else(|| no_such_role_policy(&r.policy_name))
            }),
            Request::CreatePolicy(r) => cx.create_policy(r),
            Request::GetPolicy(r) => {
                cx.read(|w| Ok(json!({"Policy": any_policy(w, &r.policy_arn)?})))
            }
            Request::DeletePolicy(r) => cx.delete_policy(r),
            Request::ListPolicies(r) => cx.read(|w| list_policies(w, r)),
            Request::CreatePolicyVersion(r) => cx.create_policy_version(r),
            Request::GetPolicyVersion(r) => cx.read(|w| {
                let (versions, default) = policy_versions(w, &r.policy_arn)?;
                let v = versions
                    .iter()
                    .find(|v| v.version_id == r.version_id)
                    .ok_or_else(|| no_such_version(&r.policy_arn, &r.version_id))?;
                Ok(json!({"PolicyVersion": version_out(v, &default, true)}))
            }),
            Request::ListPolicyVersions(r) => cx.read(|w| {
                let (versions, default) = policy_versions(w, &r.policy_arn)?;
                let out: Vec<Value> = versions
                    .iter()
                    .rev()
                    .map(|v| version_out(v, &default, false))
                    .collect();
                page("Versions", out, r.marker.as_deref(), r.max_items)
            }),
            Request::DeletePolicyVersion(r) => cx.delete_policy_version(r),
            Request::AttachRolePolicy(r) => cx.attach(r),
            Request::DetachRolePolicy(r) => cx.update_role(&r.role_name, |role| {
                detach(&mut role.attached_policies, &r.policy_arn)
            }),
            Request::ListAttachedRolePolicies(r) => cx.read(|w| {
                let attached = &role(w, cx.account, &r.role_name)?.attached_policies;
                attached_page(
                    w,
                    attached,
                    r.path_prefix.as_deref(),
                    r.marker.as_deref(),
                    r.max_items,
                )
            }),
            Request::SimulatePrincipalPolicy(r) => {
                cx.read(|w| simulate::simulate_principal_policy(w, cx.account, r))
            }
            users => cx
                .users(users)
                .unwrap_or_else(|| Err(AwsError::internal("an IAM operation with no handler"))),
        }
    }
}

struct Cx<'a> {
    store: &'a Store,
    account: &'a str,
    /// The caller's ARN (the user that user calls name by default).
    caller: &'a str,
}

impl Cx<'_> {
    fn read(&self, f: impl FnOnce(&World) -> AwsResult<Value>) -> AwsResult<Value> {
        f(&self.store.view(self.account))
    }

    fn update_role(
        &self,
        name: &str,
        change: impl FnOnce(&mut IamRole) -> AwsResult<()>,
    ) -> AwsResult<Value> {
        self.store.write_as(self.account, |tx| {
            let mut r = role(&tx.world, self.account, name)?.clone();
            change(&mut r)?;
            tx.put(r);
            Ok(json!({}))
        })
    }

    fn create_role(&self, r: &CreateRoleRequest) -> AwsResult<Value> {
        parse(&r.assume_role_policy_document, Kind::Trust)?;
        let path = r.path.clone().unwrap_or_else(|| "/".into());
        if let Some(b) = &r.permissions_boundary {
            if aws_managed(b).is_none() {
                self.store
                    .view(self.account)
                    .iam_policies
                    .get(b)
                    .ok_or_else(|| {
                        AwsError::new(
                            404,
                            "NoSuchEntity",
                            format!("Scope ARN: {b} does not exist or is not attachable."),
                        )
                    })?;
            }
        }
        let role = IamRole {
            key: IamRole::key_of(self.account, &r.role_name),
            name: r.role_name.clone(),
            arn: format!("arn:aws:iam::{}:role{path}{}", self.account, r.role_name),
            path,
            role_id: format!("AROA{}", random_string(UPPER_ALNUM, 17)),
            created: now(),
            assume_role_policy: r.assume_role_policy_document.clone(),
            description: r.description.clone(),
            max_session_duration: r.max_session_duration.unwrap_or(3600),
            permissions_boundary: r.permissions_boundary.clone(),
            inline_policies: Default::default(),
            attached_policies: Vec::new(),
            tags: tags_in(r.tags.as_deref()),
        };
        self.store.write_as(self.account, |tx| {
            if tx.world.iam_roles.contains_key(&role.key) {
                return Err(AwsError::new(
                    409,
                    "EntityAlreadyExists",
                    format!("Role with name {} already exists.", r.role_name),
                ));
            }
            tx.put(role.clone());
            Ok(json!({"Role": role_out(&role)}))
        })
    }

    fn delete_role(&self, r: &DeleteRoleRequest) -> AwsResult<Value> {
        self.store.write_as(self.account, |tx| {
            let role = role(&tx.world, self.account, &r.role_name)?;
            if !role.inline_policies.is_empty() {
                return Err(delete_conflict(
                    "Cannot delete entity, must delete policies first.",
                ));
            }
            if !role.attached_policies.is_empty() {
                return Err(delete_conflict(
                    "Cannot delete entity, must detach all policies first.",
                ));
            }
            let key = role.key.clone();
            tx.delete::<IamRole>(&key);
            Ok(json!({}))
        })
    }

    fn create_policy(&self, r: &CreatePolicyRequest) -> AwsResult<Value> {
        parse(&r.policy_document, Kind::Identity)?;
        let path = r.path.clone().unwrap_or_else(|| "/".into());
        let created = now();
        let policy = IamPolicy {
            arn: format!(
                "arn:aws:iam::{}:policy{path}{}",
                self.account, r.policy_name
            ),
            name: r.policy_name.clone(),
            path,
            policy_id: format!("ANPA{}", random_string(UPPER_ALNUM, 17)),
            created,
            updated: created,
            description: r.description.clone(),
            default_version: "v1".into(),
            versions: vec![PolicyVersion {
                version_id: "v1".into(),
                document: r.policy_document.clone(),
                created,
            }],
            next_version: 2,
            tags: tags_in(r.tags.as_deref()),
        };
        self.store.write_as(self.account, |tx| {
            if tx
                .world
                .iam_policies
                .values()
                .any(|p| p.name == policy.name)
            {
                return Err(AwsError::new(
                    409,
                    "EntityAlreadyExists",
                    format!(
                        "A policy called {} already exists. Duplicate names are not allowed.",
                        policy.name
                    ),
                ));
            }
            tx.put(policy.clone());
            Ok(json!({"Policy": policy_out(&tx.world, &policy)}))
        })
    }

    fn delete_policy(&self, r: &DeletePolicyRequest) -> AwsResult<Value> {
        self.store.write_as(self.account, |tx| {
            let policy = customer_policy(&tx.world, &r.policy_arn)?;
            if attachment_count(&tx.world, &policy.arn) > 0 {
                return Err(delete_conflict(
                    "Cannot delete a policy attached to entities.",
                ));
            }
            if policy.versions.len() > 1 {
                return Err(delete_conflict(
                    "This policy has more than one version. Before you delete a policy, you must \
                     delete the policy's versions. The default version is deleted with the policy.",
                ));
            }
            let arn = policy.arn.clone();
            tx.delete::<IamPolicy>(&arn);
            Ok(json!({}))
        })
    }

    fn create_policy_version(&self, r: &CreatePolicyVersionRequest) -> AwsResult<Value> {
        parse(&r.policy_document, Kind::Identity)?;
        self.store.write_as(self.account, |tx| {
            let mut policy = customer_policy(&tx.world, &r.policy_arn)?.clone();
            if policy.versions.len() >= MAX_POLICY_VERSIONS {
                return Err(AwsError::new(
                    409,
                    "LimitExceeded",
                    "A managed policy can have up to 5 versions. Before you create a new version, \
                     you must delete an existing version.",
                ));
            }
            let version = PolicyVersion {
                version_id: format!("v{}", policy.next_version),
                document: r.policy_document.clone(),
                created: now(),
            };
            policy.next_version += 1;
            policy.updated = version.created;
            if r.set_as_default == Some(true) {
                policy.default_version = version.version_id.clone();
            }
            policy.versions.push(version.clone());
            let out = version_out(&version, &policy.default_version, false);
            tx.put(policy);
            Ok(json!({"PolicyVersion": out}))
        })
    }

    fn delete_policy_version(&self, r: &DeletePolicyVersionRequest) -> AwsResult<Value> {
        self.store.write_as(self.account, |tx| {
            let mut policy = customer_policy(&tx.world, &r.policy_arn)?.clone();
            if policy.default_version == r.version_id {
                return Err(delete_conflict(
                    "Cannot delete the default version of a policy.",
                ));
            }
            let before = policy.versions.len();
            policy.versions.retain(|v| v.version_id != r.version_id);
            if policy.versions.len() == before {
                return Err(no_such_version(&r.policy_arn, &r.version_id));
            }
            tx.put(policy);
            Ok(json!({}))
        })
    }

    fn attach(&self, r: &AttachRolePolicyRequest) -> AwsResult<Value> {
        self.store.write_as(self.account, |tx| {
            if aws_managed(&r.policy_arn).is_none() {
                customer_policy(&tx.world, &r.policy_arn)?;
            }
            let mut role = role(&tx.world, self.account, &r.role_name)?.clone();
            if !role.attached_policies.contains(&r.policy_arn) {
                role.attached_policies.push(r.policy_arn.clone());
            }
            tx.put(role);
            Ok(json!({}))
        })
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// IAM returns policy documents URL-encoded (the SDKs decode them).
fn url_encoded(doc: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(doc, KEEP).to_string()
}

fn parse(doc: &str, kind: Kind) -> AwsResult<Policy> {
    Policy::parse(doc, kind).map_err(|e| AwsError::client("MalformedPolicyDocument", e.0))
}

fn delete_conflict(message: &str) -> AwsError {
    AwsError::new(409, "DeleteConflict", message)
}

fn no_such_role_policy(name: &str) -> AwsError {
    AwsError::new(
        404,
        "NoSuchEntity",
        format!("The role policy with name {name} cannot be found."),
    )
}

fn no_such_policy(arn: &str) -> AwsError {
    AwsError::new(
        404,
        "NoSuchEntity",
        format!("Policy {arn} does not exist or is not attachable."),
    )
}

fn no_such_version(arn: &str, version: &str) -> AwsError {
    AwsError::new(
        404,
        "NoSuchEntity",
        format!("Policy {arn} version {version} does not exist or is not attachable."),
    )
}

fn role<'w>(w: &'w World, account: &str, name: &str) -> AwsResult<&'w IamRole> {
    w.iam_roles
        .get(&IamRole::key_of(account, name))
        .map(Arc::as_ref)
        .ok_or_else(|| {
            AwsError::new(
                404,
                "NoSuchEntity",
                format!("The role with name {name} cannot be found."),
            )
        })
}

fn customer_policy<'w>(w: &'w World, arn: &str) -> AwsResult<&'w IamPolicy> {
    w.iam_policies
        .get(arn)
        .map(Arc::as_ref)
        .ok_or_else(|| no_such_policy(arn))
}

/// A managed policy's versions and default version, AWS's or the account's.
fn policy_versions(w: &World, arn: &str) -> AwsResult<(Vec<PolicyVersion>, String)> {
    if let Some(m) = aws_managed(arn) {
        let v = PolicyVersion {
            version_id: "v1".into(),
            document: m.document.to_string(),
            created: 0,
        };
        return Ok((vec![v], "v1".into()));
    }
    let p = customer_policy(w, arn)?;
    Ok((p.versions.clone(), p.default_version.clone()))
}

fn policy_name_and_path(w: &World, arn: &str) -> Option<(String, String, String)> {
    match aws_managed(arn) {
        Some(m) => Some((m.name.to_string(), m.path.to_string(), arn.to_string())),
        None => w
            .iam_policies
            .get(arn)
            .map(|p| (p.name.clone(), p.path.clone(), arn.to_string())),
    }
}

fn attachment_count(w: &World, arn: &str) -> usize {
    let attached = |list: &[String]| list.iter().any(|a| a == arn);
    w.iam_roles
        .values()
        .filter(|r| attached(&r.attached_policies))
        .count()
        + w.iam_users
            .values()
            .filter(|u| attached(&u.attached_policies))
            .count()
}

/// Detaches a managed policy from a role's or user's list.
fn detach(attached: &mut Vec<String>, arn: &str) -> AwsResult<()> {
    let before = attached.len();
    attached.retain(|a| a != arn);
    if attached.len() == before {
        return Err(AwsError::new(
            404,
            "NoSuchEntity",
            format!("Policy {arn} was not found."),
        ));
    }
    Ok(())
}

/// A page of a role's or user's attached policies under a path prefix.
fn attached_page(
    w: &World,
    attached: &[String],
    path_prefix: Option<&str>,
    marker: Option<&str>,
    max_items: Option<i64>,
) -> AwsResult<Value> {
    let prefix = path_prefix.unwrap_or("/");
    let items: Vec<Value> = attached
        .iter()
        .filter_map(|arn| policy_name_and_path(w, arn))
        .filter(|(_, path, _)| path.starts_with(prefix))
        .map(|(name, _, arn)| json!({"PolicyName": name, "PolicyArn": arn}))
        .collect();
    page("AttachedPolicies", items, marker, max_items)
}

fn tags_in(tags: Option<&[Tag]>) -> Tags {
    tags.unwrap_or_default()
        .iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect()
}

fn tags_out(tags: &Tags) -> Vec<Value> {
    tags.iter()
        .map(|(k, v)| json!({"Key": k, "Value": v}))
        .collect()
}

fn role_out(r: &IamRole) -> Value {
    let mut out = json!({
        "Path": r.path,
        "RoleName": r.name,
        "RoleId": r.role_id,
        "Arn": r.arn,
        "CreateDate": rfc3339_of(r.created),
        "AssumeRolePolicyDocument": url_encoded(&r.assume_role_policy),
        "MaxSessionDuration": r.max_session_duration,
        "RoleLastUsed": {},
    });
    if let Some(d) = &r.description {
        out["Description"] = json!(d);
    }
    if let Some(b) = &r.permissions_boundary {
        out["PermissionsBoundary"] = json!({
            "PermissionsBoundaryType": "Policy",
            "PermissionsBoundaryArn": b,
        });
    }
    if !r.tags.is_empty() {
        out["Tags"] = json!(tags_out(&r.tags));
    }
    out
}

fn policy_out(w: &World, p: &IamPolicy) -> Value {
    let mut out = json!({
        "PolicyName": p.name,
        "PolicyId": p.policy_id,
        "Arn": p.arn,
        "Path": p.path,
        "DefaultVersionId": p.default_version,
        "AttachmentCount": attachment_count(w, &p.arn),
        "PermissionsBoundaryUsageCount": 0,
        "IsAttachable": true,
        "CreateDate": rfc3339_of(p.created),
        "UpdateDate": rfc3339_of(p.updated),
    });
    if let Some(d) = &p.description {
        out["Description"] = json!(d);
    }
    if !p.tags.is_empty() {
        out["Tags"] = json!(tags_out(&p.tags));
    }
    out
}

fn aws_policy_out(w: &World, m: &AwsManaged) -> Value {
    let arn = m.arn();
    json!({
        "PolicyName": m.name,
        "PolicyId": m.policy_id(),
        "Arn": arn,
        "Path": m.path,
        "DefaultVersionId": "v1",
        "AttachmentCount": attachment_count(w, &arn),
        "PermissionsBoundaryUsageCount": 0,
        "IsAttachable": true,
        "Description": m.description,
        "CreateDate": rfc3339_of(0),
        "UpdateDate": rfc3339_of(0),
    })
}

fn any_policy(w: &World, arn: &str) -> AwsResult<Value> {
    match aws_managed(arn) {
        Some(m) => Ok(aws_policy_out(w, m)),
        None => Ok(policy_out(w, customer_policy(w, arn)?)),
    }
}

fn version_out(v: &PolicyVersion, default: &str, with_document: bool) -> Value {
    let mut out = json!({
        "VersionId": v.version_id,
        "IsDefaultVersion": v.version_id == default,
        "CreateDate": rfc3339_of(v.created),
    });
    if with_document {
        out["Document"] = json!(url_encoded(&v.document));
    }
    out
}

fn list_policies(w: &World, r: &ListPoliciesRequest) -> AwsResult<Value> {
    let scope = r.scope.as_deref().unwrap_or("All");
    let prefix = r.path_prefix.as_deref().unwrap_or("/");
    let only_attached = r.only_attached == Some(true);
    let mut out = Vec::new();
    if scope != "Local" {
        for m in AWS_MANAGED {
            let p = aws_policy_out(w, m);
            out.push(p);
        }
    }
    if scope != "AWS" {
        out.extend(w.iam_policies.values().map(|p| policy_out(w, p)));
    }
    out.retain(|p| {
        p["Path"]
            .as_str()
            .is_some_and(|path| path.starts_with(prefix))
            && (!only_attached || p["AttachmentCount"].as_u64().unwrap_or(0) > 0)
    });
    page("Policies", out, r.marker.as_deref(), r.max_items)
}

/// One page of a list answer, with IAM's `IsTruncated` and `Marker` (the
/// index of the next item, opaque to callers).
fn page(
    member: &str,
    items: Vec<Value>,
    marker: Option<&str>,
    max_items: Option<i64>,
) -> AwsResult<Value> {
    let start = cove_model::paging::start_of(marker, items.len())
        .ok_or_else(|| AwsError::client("InvalidInput", "Invalid Marker."))?;
    let size = max_items
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(DEFAULT_PAGE);
    let (page, next) = cove_model::paging::cut(items, start, size);
    let mut out = json!({
        member: page,
        "IsTruncated": next.is_some(),
    });
    if let Some(next) = next {
        out["Marker"] = json!(next.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
