//! Enforcement: what IAM lets a caller do outside the simulator, when Cove
//! runs with IAM enforced (`--iam enforce`): [`refusal`] for every API call
//! (the wire layer asks it), [`identity_policies`] for S3's own evaluation,
//! [`may_assume`] for AssumeRole and a job's role.
//!
//! Who is limited: role sessions (from `AssumeRole`, and every job's,
//! endpoint's and app's credentials, which are sessions of its execution
//! role), by their role's identity policies, and IAM users, by theirs
//! (inline and attached, within a permissions boundary), evaluated with the
//! same code as the simulator and S3's bucket and endpoint policies. Who is
//! not: the account root and the long-term keys of Cove's configuration,
//! which are the account's administrators. A trust
//! policy decides who may assume a role: a caller of the account, or a
//! service principal such as `sagemaker.amazonaws.com` when a job starts.

use crate::managed::default_document;
use cove_model::iam::{IamRole, IamUser};
use cove_model::policy::{Decision, Kind, Policy, RequestContext};
use cove_model::world::World;

/// The identity policies of a role session or an IAM user, ready to evaluate.
#[derive(Debug, Clone)]
pub struct IdentityPolicies {
    /// The role or user whose policies these are.
    pub principal_arn: String,
    policies: Vec<Policy>,
    boundary: Option<Vec<Policy>>,
    /// The session policies `AssumeRole` was given: they limit the
    /// session as a boundary does.
    session: Option<Vec<Policy>>,
}

impl IdentityPolicies {
    /// A role's policies without a permissions boundary.
    pub fn new(principal_arn: &str, policies: Vec<Policy>) -> IdentityPolicies {
        IdentityPolicies {
            principal_arn: principal_arn.to_string(),
            policies,
            boundary: None,
            session: None,
        }
    }

    /// IAM's decision for one request: `Deny` for an explicit deny, `Allow`
    /// when a policy allows (and the boundary, if any, allows too),
    /// `NotApplicable` (an implicit deny) otherwise.
    pub fn decide(&self, cx: &RequestContext) -> Decision {
        let decisions: Vec<Decision> = self.policies.iter().map(|p| p.evaluate(cx)).collect();
        if decisions.contains(&Decision::Deny) {
            return Decision::Deny;
        }
        let allows = |limit: &Option<Vec<Policy>>| {
            limit.as_ref().is_none_or(|b| {
                let d: Vec<Decision> = b.iter().map(|p| p.evaluate(cx)).collect();
                !d.contains(&Decision::Deny) && d.contains(&Decision::Allow)
            })
        };
        if decisions.contains(&Decision::Allow) && allows(&self.boundary) && allows(&self.session) {
            Decision::Allow
        } else {
            Decision::NotApplicable
        }
    }
}

/// The identity policies that limit `principal_arn`: `None` for a
/// principal they do not limit (the account root, a configured key); for a
/// role session, its role's; for an IAM user, the user's. A session of a
/// role that does not exist has no policies at all (everything is denied).
/// `access_key` finds a session's own session policies.
pub fn identity_policies(
    w: &World,
    principal_arn: &str,
    access_key: &str,
) -> Option<IdentityPolicies> {
    if let Some((account, role_name)) = cove_model::policy::session_role(principal_arn) {
        let Some(role) = w.iam_roles.get(&IamRole::key_of(account, role_name)) else {
            return Some(IdentityPolicies {
                principal_arn: format!("arn:aws:iam::{account}:role/{role_name}"),
                policies: Vec::new(),
                boundary: None,
                session: None,
            });
        };
        let mut limits = attached_to(
            w,
            &role.arn,
            &role.inline_policies,
            &role.attached_policies,
            role.permissions_boundary.as_deref(),
        );
        limits.session = w
            .sts_sessions
            .get(access_key)
            .filter(|s| s.assumed_role_arn() == principal_arn)
            .filter(|s| s.session_policy.is_some() || !s.session_policy_arns.is_empty())
            .map(|s| {
                s.session_policy
                    .iter()
                    .cloned()
                    .chain(
                        s.session_policy_arns
                            .iter()
                            .filter_map(|a| default_document(w, a)),
                    )
                    .filter_map(|doc| Policy::parse(&doc, Kind::Identity).ok())
                    .collect()
            });
        return Some(limits);
    }
    let (head, path) = principal_arn.split_once(":user/")?;
    let account = cove_model::ids::arn_account(head);
    let name = path.rsplit('/').next().unwrap_or_default();
    let user = w.iam_users.get(&IamUser::key_of(account, name))?;
    Some(attached_to(
        w,
        &user.arn,
        &user.inline_policies,
        &user.attached_policies,
        user.permissions_boundary.as_deref(),
    ))
}

/// A role's or user's inline and attached policies within its boundary.
fn attached_to(
    w: &World,
    principal_arn: &str,
    inline: &std::collections::BTreeMap<String, String>,
    attached: &[String],
    boundary: Option<&str>,
) -> IdentityPolicies {
    let document = |arn: &str| default_document(w, arn);
    let parse = |doc: &str| Policy::parse(doc, Kind::Identity).ok();
    let policies = inline
        .values()
        .filter_map(|doc| parse(doc))
        .chain(
            attached
                .iter()
                .filter_map(|arn| document(arn))
                .filter_map(|doc| parse(&doc)),
        )
        .collect();
    let boundary = boundary.map(|arn| document(arn).and_then(|d| parse(&d)).into_iter().collect());
    IdentityPolicies {
        principal_arn: principal_arn.to_string(),
        policies,
        boundary,
        session: None,
    }
}

/// Who asks to assume a role.
pub enum Assumer<'a> {
    /// A caller, by ARN and account, and the access key it signed with.
    Caller {
        arn: &'a str,
        account: &'a str,
        access_key: &'a str,
    },
    /// A service acting for the account (`sagemaker.amazonaws.com`).
    Service(&'a str),
}

/// Whether `role_arn` names an existing role (of any account) whose trust
/// policy lets `who` assume it (and, for a role session whose trust was granted
/// to the account as a whole, whose own policies allow `sts:AssumeRole`).
pub fn may_assume(w: &World, role_arn: &str, who: &Assumer<'_>) -> bool {
    let Some(name) = role_arn
        .split_once(":role/")
        .map(|(_, path)| path.rsplit('/').next().unwrap_or_default())
    else {
        return false;
    };
    let owner = cove_model::ids::arn_account(role_arn);
    let Some(role) = w.iam_roles.get(&IamRole::key_of(owner, name)) else {
        return false;
    };
    if role.arn != role_arn {
        return false;
    }
    let Ok(trust) = Policy::parse(&role.assume_role_policy, Kind::Trust) else {
        return false;
    };
    let (arn, account, access_key) = match who {
        Assumer::Caller {
            arn,
            account,
            access_key,
        } => (*arn, *account, *access_key),
        Assumer::Service(service) => (*service, "", ""),
    };
    let cx = RequestContext::new("sts:AssumeRole", role_arn, arn, account);
    if trust.evaluate(&cx) != Decision::Allow {
        return false;
    }
    // A session of another role of the account also needs its own policies
    // to allow the call, unless the trust policy names it (or its role)
    // itself rather than the account.
    match identity_policies(w, arn, access_key) {
        None => true,
        Some(own) => {
            let by_account = RequestContext::new("sts:AssumeRole", role_arn, "", account);
            let named = trust.evaluate(&by_account) != Decision::Allow;
            named || own.decide(&cx) == Decision::Allow
        }
    }
}

/// One API call, as identity policies see it.
pub struct Call<'a> {
    /// The service's signing name (`ec2`, `sagemaker`, `logs`, `iam`,
    /// `sts`, `ecr`), which is also its IAM action prefix.
    pub service: &'a str,
    pub operation: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub principal_arn: &'a str,
    /// The access key the call was signed with (a session's policies).
    pub access_key: &'a str,
    /// The decoded request, where the resource's name is found.
    pub input: &'a serde_json::Value,
}

/// Calls every principal may make whatever its policies say, as on AWS;
/// `AssumeRole` is judged by STS itself (trust policy first).
const ALWAYS_ALLOWED: &[&str] = &["sts:GetCallerIdentity", "sts:AssumeRole"];

/// EC2 resource ids a call may name, most specific first (a subnet's call
/// names its VPC too), with the resource type of their ARN.
const EC2_IDS: &[(&str, &str)] = &[
    ("NetworkInterfaceId", "network-interface"),
    ("SubnetId", "subnet"),
    ("GroupId", "security-group"),
    ("RouteTableId", "route-table"),
    ("NetworkAclId", "network-acl"),
    ("InternetGatewayId", "internet-gateway"),
    ("NatGatewayId", "natgateway"),
    ("AllocationId", "elastic-ip"),
    ("FlowLogId", "vpc-flow-log"),
    ("VpcId", "vpc"),
];

/// The resource ARN a call acts on, from the request's name fields where
/// the service has resource-level permissions Cove models; `*` otherwise
/// (EC2's `Describe*` calls, and calls that name no single resource).
pub fn resource_of(call: &Call<'_>) -> String {
    let field = |name: &str| call.input.get(name).and_then(|v| v.as_str());
    let (region, account) = (call.region, call.account);
    match call.service {
        "sagemaker" => {
            const NAMED: &[(&str, &str)] = &[
                ("TrainingJobName", "training-job"),
                ("ProcessingJobName", "processing-job"),
                ("TransformJobName", "transform-job"),
                ("CompilationJobName", "compilation-job"),
                ("EndpointConfigName", "endpoint-config"),
                ("EndpointName", "endpoint"),
                ("ModelName", "model"),
                ("DomainId", "domain"),
            ];
            // An endpoint's config and model are named too; the endpoint
            // (or the config, for CreateEndpointConfig) is what the call is on.
            let order: Vec<&(&str, &str)> = match call.operation {
                "CreateEndpointConfig" | "DescribeEndpointConfig" | "DeleteEndpointConfig" => NAMED
                    .iter()
                    .filter(|(f, _)| *f == "EndpointConfigName")
                    .collect(),
                "CreateEndpoint" | "UpdateEndpoint" => {
                    NAMED.iter().filter(|(f, _)| *f == "EndpointName").collect()
                }
                _ => NAMED.iter().collect(),
            };
            order
                .iter()
                .find_map(|(f, kind)| {
                    field(f).map(|n| format!("arn:aws:sagemaker:{region}:{account}:{kind}/{n}"))
                })
                .unwrap_or_else(|| "*".into())
        }
        "logs" => match (field("logGroupName"), field("logStreamName")) {
            (Some(g), Some(st)) => {
                format!("arn:aws:logs:{region}:{account}:log-group:{g}:log-stream:{st}")
            }
            (Some(g), None) => format!("arn:aws:logs:{region}:{account}:log-group:{g}"),
            _ => "*".into(),
        },
        "iam" => match (field("RoleName"), field("PolicyArn")) {
            (Some(r), _) => format!("arn:aws:iam::{account}:role/{r}"),
            (None, Some(p)) => p.to_string(),
            _ => "*".into(),
        },
        "ec2" if !call.operation.starts_with("Describe") => EC2_IDS
            .iter()
            .find_map(|(f, kind)| {
                field(f).map(|id| format!("arn:aws:ec2:{region}:{account}:{kind}/{id}"))
            })
            .unwrap_or_else(|| "*".into()),
        "s3" => match (field("Bucket"), field("Key")) {
            (Some(b), Some(k)) => format!("arn:aws:s3:::{b}/{k}"),
            (Some(b), None) => format!("arn:aws:s3:::{b}"),
            _ => "*".into(),
        },
        "ecr" => field("repositoryName")
            .map(|r| format!("arn:aws:ecr:{region}:{account}:repository/{r}"))
            .unwrap_or_else(|| "*".into()),
        _ => "*".into(),
    }
}

/// Why a limited caller may not make a call: `None` when it may (or its
/// policies do not limit it). The text is IAM's.
pub fn refusal(w: &World, call: &Call<'_>) -> Option<Refusal> {
    let limits = identity_policies(w, call.principal_arn, call.access_key)?;
    let action = format!("{}:{}", call.service, call.operation);
    if ALWAYS_ALLOWED.contains(&action.as_str()) {
        return None;
    }
    let resource = resource_of(call);
    let cx = RequestContext::new(&action, &resource, call.principal_arn, call.account);
    let why = match limits.decide(&cx) {
        Decision::Allow => return None,
        Decision::Deny => "with an explicit deny in an identity-based policy".to_string(),
        Decision::NotApplicable => {
            format!("because no identity-based policy allows the {action} action")
        }
    };
    Some(Refusal {
        message: format!(
            "User: {} is not authorized to perform: {action} on resource: {resource} {why}",
            call.principal_arn
        ),
        action,
    })
}

/// A call identity policies refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub action: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_model::iam::IamRole;

    fn role(name: &str, trust: &str, inline: &[&str]) -> IamRole {
        IamRole {
            key: IamRole::key_of("123456789012", name),
            name: name.into(),
            path: "/".into(),
            role_id: "AROAEXAMPLE".into(),
            arn: format!("arn:aws:iam::123456789012:role/{name}"),
            created: 0,
            assume_role_policy: trust.into(),
            description: None,
            max_session_duration: 3600,
            permissions_boundary: None,
            inline_policies: inline
                .iter()
                .enumerate()
                .map(|(i, d)| (format!("p{i}"), d.to_string()))
                .collect(),
            attached_policies: vec![],
            tags: Default::default(),
        }
    }

    const SAGEMAKER_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"sagemaker.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    const ACCOUNT_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}"#;
    const READ_DATA: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::data","arn:aws:s3:::data/*"]},{"Effect":"Deny","Action":"s3:GetObject","Resource":"arn:aws:s3:::data/secret/*"}]}"#;

    fn world(roles: Vec<IamRole>) -> World {
        let mut w = World::default();
        for r in roles {
            w.iam_roles.insert(r.key.clone(), r.into());
        }
        w
    }

    #[test]
    fn a_sessions_role_policies_decide_and_other_principals_are_not_limited() {
        let w = world(vec![role("Job", SAGEMAKER_TRUST, &[READ_DATA])]);
        let session = "arn:aws:sts::123456789012:assumed-role/Job/SageMaker";
        let p = identity_policies(&w, session, "").unwrap();
        let decide = |action: &str, resource: &str| {
            p.decide(&RequestContext::new(
                action,
                resource,
                session,
                "123456789012",
            ))
        };
        assert_eq!(
            decide("s3:GetObject", "arn:aws:s3:::data/train.csv"),
            Decision::Allow
        );
        assert_eq!(
            decide("s3:GetObject", "arn:aws:s3:::data/secret/k"),
            Decision::Deny
        );
        assert_eq!(
            decide("s3:PutObject", "arn:aws:s3:::data/k"),
            Decision::NotApplicable
        );
        assert!(identity_policies(&w, "arn:aws:iam::123456789012:root", "").is_none());
        assert!(identity_policies(&w, "arn:aws:iam::123456789012:user/admin", "").is_none());
        let ghost =
            identity_policies(&w, "arn:aws:sts::123456789012:assumed-role/Ghost/s", "").unwrap();
        assert_eq!(
            ghost.decide(&RequestContext::new(
                "s3:GetObject",
                "*",
                "x",
                "123456789012"
            )),
            Decision::NotApplicable
        );
    }

    #[test]
    fn calls_are_judged_on_their_action_and_named_resource() {
        const TRAIN_CI: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sagemaker:*","Resource":"arn:aws:sagemaker:*:*:training-job/ci-*"},{"Effect":"Allow","Action":["sagemaker:List*","logs:Describe*"],"Resource":"*"}]}"#;
        let w = world(vec![role("Platform", ACCOUNT_TRUST, &[TRAIN_CI])]);
        fn call(
            w: &World,
            service: &str,
            operation: &str,
            input: serde_json::Value,
            who: &str,
        ) -> Option<Refusal> {
            let call = Call {
                service,
                operation,
                region: "us-east-1",
                account: "123456789012",
                principal_arn: who,
                access_key: "",
                input: &input,
            };
            refusal(w, &call)
        }
        let session = "arn:aws:sts::123456789012:assumed-role/Platform/ci";
        let named = |n: &str| serde_json::json!({ "TrainingJobName": n });
        let none = serde_json::json!({});
        assert_eq!(
            call(&w, "sagemaker", "CreateTrainingJob", named("ci-7"), session),
            None
        );
        let refused = call(
            &w,
            "sagemaker",
            "CreateTrainingJob",
            named("prod-1"),
            session,
        )
        .unwrap();
        assert_eq!(refused.message, "User: arn:aws:sts::123456789012:assumed-role/Platform/ci is not authorized to perform: sagemaker:CreateTrainingJob on resource: arn:aws:sagemaker:us-east-1:123456789012:training-job/prod-1 because no identity-based policy allows the sagemaker:CreateTrainingJob action");
        assert_eq!(
            call(&w, "sagemaker", "ListTrainingJobs", none.clone(), session),
            None
        );
        assert_eq!(
            call(&w, "logs", "DescribeLogGroups", none.clone(), session),
            None
        );
        assert!(call(&w, "ec2", "DescribeVpcs", none.clone(), session).is_some());
        assert_eq!(
            call(&w, "sts", "GetCallerIdentity", none.clone(), session),
            None
        );
        // EC2 calls that name one resource are judged on its ARN.
        const VPC_ADMIN: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:*","Resource":"arn:aws:ec2:*:*:vpc/*"},{"Effect":"Deny","Action":"ec2:DeleteVpc","Resource":"arn:aws:ec2:*:*:vpc/vpc-keep"}]}"#;
        let w2 = world(vec![role("Net", ACCOUNT_TRUST, &[VPC_ADMIN])]);
        let net = "arn:aws:sts::123456789012:assumed-role/Net/s";
        let vpc = |id: &str| serde_json::json!({ "VpcId": id });
        assert_eq!(call(&w2, "ec2", "DeleteVpc", vpc("vpc-1"), net), None);
        let kept = call(&w2, "ec2", "DeleteVpc", vpc("vpc-keep"), net).unwrap();
        assert!(kept.message.contains("on resource: arn:aws:ec2:us-east-1:123456789012:vpc/vpc-keep with an explicit deny"), "{}", kept.message);
        // A subnet's call is on the subnet, which this policy does not name.
        let subnet = serde_json::json!({"SubnetId": "subnet-1", "VpcId": "vpc-1"});
        assert!(call(&w2, "ec2", "ModifySubnetAttribute", subnet, net).is_some());
        assert!(call(&w2, "ec2", "DescribeVpcs", vpc("vpc-1"), net).is_some());
        // Not a role session: not limited.
        assert_eq!(
            call(
                &w,
                "ec2",
                "DescribeVpcs",
                none,
                "arn:aws:iam::123456789012:root"
            ),
            None
        );
    }

    #[test]
    fn trust_policies_say_who_may_assume_a_role() {
        let w = world(vec![
            role("Job", SAGEMAKER_TRUST, &[]),
            role("Shared", ACCOUNT_TRUST, &[]),
        ]);
        let job = "arn:aws:iam::123456789012:role/Job";
        let shared = "arn:aws:iam::123456789012:role/Shared";
        let admin = Assumer::Caller {
            arn: "arn:aws:iam::123456789012:user/admin",
            account: "123456789012",
            access_key: "",
        };
        assert!(may_assume(
            &w,
            job,
            &Assumer::Service("sagemaker.amazonaws.com")
        ));
        assert!(!may_assume(&w, job, &Assumer::Service("ec2.amazonaws.com")));
        assert!(!may_assume(&w, job, &admin));
        assert!(may_assume(&w, shared, &admin));
        assert!(!may_assume(
            &w,
            shared,
            &Assumer::Service("sagemaker.amazonaws.com")
        ));
        assert!(!may_assume(
            &w,
            "arn:aws:iam::123456789012:role/Nope",
            &admin
        ));
        // A session of a role without sts:AssumeRole in its policies cannot
        // use a trust granted to the account as a whole.
        let session = Assumer::Caller {
            arn: "arn:aws:sts::123456789012:assumed-role/Job/s",
            account: "123456789012",
            access_key: "",
        };
        assert!(!may_assume(&w, shared, &session));
    }
}
