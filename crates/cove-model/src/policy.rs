//! IAM-style policy documents (bucket policies and VPC endpoint policies) and
//! their evaluation against one request. Pure: no I/O, so every rule of the
//! IAM evaluation logic that S3 relies on can be pinned by a unit test.
//!
//! Only what a bucket or endpoint policy needs is modelled: statements with
//! Effect, Principal/NotPrincipal, Action/NotAction, Resource/NotResource and
//! the condition operators S3 access rules are written with. An explicit Deny
//! always wins; whether the absence of an Allow denies is the caller's call
//! (same-account callers need no bucket-policy Allow, endpoint policies do).

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The outcome of evaluating one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A matching statement denies the request.
    Deny,
    /// A matching statement allows it and none denies it.
    Allow,
    /// No statement matches.
    NotApplicable,
}

/// Why a document is not a policy; the text is what S3 says in MalformedPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

fn malformed(msg: impl Into<String>) -> PolicyError {
    PolicyError(msg.into())
}

/// What a policy is evaluated against: the action, the resource, the caller,
/// and the global condition keys present for this request. Keys that are
/// absent stay absent (IAM treats "missing" differently from "empty").
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub action: String,
    pub resource: String,
    pub principal_arn: String,
    pub principal_account: String,
    /// Condition keys, lowercased (IAM key names are case-insensitive).
    keys: BTreeMap<String, Vec<String>>,
}

impl RequestContext {
    pub fn new(action: &str, resource: &str, principal_arn: &str, principal_account: &str) -> Self {
        let mut cx = RequestContext {
            action: action.to_string(),
            resource: resource.to_string(),
            principal_arn: principal_arn.to_string(),
            principal_account: principal_account.to_string(),
            keys: BTreeMap::new(),
        };
        cx.set("aws:PrincipalArn", principal_arn);
        cx.set("aws:PrincipalAccount", principal_account);
        cx
    }

    /// Sets a single-valued key, replacing any earlier value.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.keys
            .insert(key.to_ascii_lowercase(), vec![value.into()]);
    }

    /// Sets a multi-valued key.
    pub fn set_all(&mut self, key: &str, values: Vec<String>) {
        self.keys.insert(key.to_ascii_lowercase(), values);
    }

    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.keys.get(&key.to_ascii_lowercase()).map(Vec::as_slice)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Principals {
    Any,
    /// ARNs or account ids from `{"AWS": ...}`, and service principals from
    /// `{"Service": ...}` (a service acting for the account, such as
    /// `sagemaker.amazonaws.com` assuming a job's role: its context names
    /// the service as the principal ARN). Federated and canonical-user
    /// principals never name a Cove caller; a statement naming only them
    /// matches nobody.
    Named {
        aws: Vec<String>,
        services: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Patterns {
    Is(Vec<String>),
    IsNot(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    ArnEquals,
    ArnNotEquals,
    ArnLike,
    ArnNotLike,
    IpAddress,
    NotIpAddress,
    Bool,
    Null,
}

impl Operator {
    fn parse(name: &str) -> Option<Operator> {
        use Operator::*;
        Some(match name {
            "StringEquals" => StringEquals,
            "StringNotEquals" => StringNotEquals,
            "StringEqualsIgnoreCase" => StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => StringNotEqualsIgnoreCase,
            "StringLike" => StringLike,
            "StringNotLike" => StringNotLike,
            "ArnEquals" => ArnEquals,
            "ArnNotEquals" => ArnNotEquals,
            "ArnLike" => ArnLike,
            "ArnNotLike" => ArnNotLike,
            "IpAddress" => IpAddress,
            "NotIpAddress" => NotIpAddress,
            "Bool" => Bool,
            "Null" => Null,
            _ => return None,
        })
    }

    /// Negated operators match a request that lacks the key (IAM's rule).
    fn negated(self) -> bool {
        use Operator::*;
        matches!(
            self,
            StringNotEquals
                | StringNotEqualsIgnoreCase
                | StringNotLike
                | ArnNotEquals
                | ArnNotLike
                | NotIpAddress
        )
    }

    /// Whether one request value satisfies the operator against the policy's values.
    fn value_matches(self, value: &str, wanted: &[String]) -> bool {
        use Operator::*;
        let any = |f: &dyn Fn(&str) -> bool| wanted.iter().any(|w| f(w));
        match self {
            StringEquals | ArnEquals => any(&|w| w == value),
            StringNotEquals | ArnNotEquals => !any(&|w| w == value),
            StringEqualsIgnoreCase => any(&|w| w.eq_ignore_ascii_case(value)),
            StringNotEqualsIgnoreCase => !any(&|w| w.eq_ignore_ascii_case(value)),
            StringLike | ArnLike => any(&|w| wildcard_match(w, value)),
            StringNotLike | ArnNotLike => !any(&|w| wildcard_match(w, value)),
            IpAddress => any(&|w| ip_in(w, value)),
            NotIpAddress => !any(&|w| ip_in(w, value)),
            Bool => any(&|w| w.eq_ignore_ascii_case(value)),
            // Null is decided on presence alone, before values are looked at.
            Null => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetQualifier {
    None,
    ForAnyValue,
    ForAllValues,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    operator: Operator,
    qualifier: SetQualifier,
    if_exists: bool,
    key: String,
    values: Vec<String>,
}

impl Condition {
    fn holds(&self, cx: &RequestContext) -> bool {
        let present = cx.get(&self.key).filter(|v| !v.is_empty());
        if self.operator == Operator::Null {
            let wants_absent = self.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
            return wants_absent == present.is_none();
        }
        let Some(actual) = present else {
            return self.if_exists
                || match self.qualifier {
                    SetQualifier::ForAllValues => true,
                    SetQualifier::ForAnyValue => false,
                    SetQualifier::None => self.operator.negated(),
                };
        };
        let op = self.operator;
        match self.qualifier {
            SetQualifier::ForAllValues => actual.iter().all(|v| op.value_matches(v, &self.values)),
            SetQualifier::ForAnyValue => actual.iter().any(|v| op.value_matches(v, &self.values)),
            // A plain negated operator holds only when no request value is among
            // the policy's values; a positive one when any is.
            SetQualifier::None if op.negated() => {
                actual.iter().all(|v| op.value_matches(v, &self.values))
            }
            SetQualifier::None => actual.iter().any(|v| op.value_matches(v, &self.values)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    principal: Option<Principals>,
    not_principal: Option<Principals>,
    action: Patterns,
    resource: Option<Patterns>,
    conditions: Vec<Condition>,
}

/// A parsed policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// How strictly a document is read: S3 insists that a bucket policy names a
/// Principal and a Resource in every statement; an IAM identity policy must
/// name actions and resources and no principal; a role's trust policy names
/// a principal and no resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bucket,
    Endpoint,
    Identity,
    Trust,
    /// An ECR repository policy: principals and `ecr:` actions, on the
    /// repository itself (no `Resource` needed).
    Repository,
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(malformed(format!("Invalid {what}"))),
    };
    match v {
        Value::Array(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

fn parse_principal(v: &Value) -> Result<Principals, PolicyError> {
    match v {
        Value::String(s) if s == "*" => Ok(Principals::Any),
        Value::Object(m) if !m.is_empty() => {
            let mut aws = Vec::new();
            let mut services = Vec::new();
            for (kind, ids) in m {
                let ids = strings(ids, "principal in policy")?;
                match kind.as_str() {
                    "AWS" => aws.extend(ids),
                    "Service" => services.extend(ids),
                    "Federated" | "CanonicalUser" => {}
                    _ => return Err(malformed("Invalid principal in policy")),
                }
            }
            if aws.iter().any(|a| a == "*") {
                Ok(Principals::Any)
            } else {
                Ok(Principals::Named { aws, services })
            }
        }
        _ => Err(malformed("Invalid principal in policy")),
    }
}

fn parse_conditions(v: &Value) -> Result<Vec<Condition>, PolicyError> {
    let Value::Object(ops) = v else {
        return Err(malformed("Invalid Condition block"));
    };
    let mut out = Vec::new();
    for (name, block) in ops {
        let (qualifier, rest) = if let Some(r) = name.strip_prefix("ForAnyValue:") {
            (SetQualifier::ForAnyValue, r)
        } else if let Some(r) = name.strip_prefix("ForAllValues:") {
            (SetQualifier::ForAllValues, r)
        } else {
            (SetQualifier::None, name.as_str())
        };
        let (base, if_exists) = match rest.strip_suffix("IfExists") {
            Some(b) if b != "Null" => (b, true),
            _ => (rest, false),
        };
        let operator = Operator::parse(base)
            .ok_or_else(|| malformed(format!("Invalid Condition type : {name}")))?;
        let Value::Object(keys) = block else {
            return Err(malformed("Invalid Condition block"));
        };
        for (key, values) in keys {
            let values = strings(values, "Condition value")?;
            if operator == Operator::IpAddress || operator == Operator::NotIpAddress {
                if let Some(bad) = values.iter().find(|v| parse_cidr(v).is_none()) {
                    return Err(malformed(format!("Invalid IP address: {bad}")));
                }
            }
            out.push(Condition {
                operator,
                qualifier,
                if_exists,
                key: key.clone(),
                values,
            });
        }
    }
    Ok(out)
}

fn field<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    m.get(name)
}

fn parse_statement(v: &Value, kind: Kind) -> Result<Statement, PolicyError> {
    let Value::Object(m) = v else {
        return Err(malformed("Invalid policy statement"));
    };
    let known = [
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    ];
    if let Some(unknown) = m.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(malformed(format!("Unknown field {unknown}")));
    }
    let effect = match field(m, "Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        Some(other) => return Err(malformed(format!("Invalid effect: {other}"))),
        None => return Err(malformed("Missing required field Effect")),
    };
    let principal = field(m, "Principal").map(parse_principal).transpose()?;
    let not_principal = field(m, "NotPrincipal").map(parse_principal).transpose()?;
    let names_principal = principal.is_some() || not_principal.is_some();
    match kind {
        Kind::Bucket | Kind::Trust | Kind::Repository if !names_principal => {
            return Err(malformed("Missing required field Principal"))
        }
        Kind::Identity if names_principal => {
            return Err(malformed("Policy document should not specify a principal."))
        }
        _ => {}
    }
    let action = match (field(m, "Action"), field(m, "NotAction")) {
        (Some(a), None) => Patterns::Is(strings(a, "action")?),
        (None, Some(a)) => Patterns::IsNot(strings(a, "action")?),
        (None, None) if kind == Kind::Identity => {
            return Err(malformed("Policy statement must contain actions."))
        }
        (None, None) => return Err(malformed("Missing required field Action")),
        (Some(_), Some(_)) => return Err(malformed("Policy has invalid action")),
    };
    let actions = match &action {
        Patterns::Is(a) | Patterns::IsNot(a) => a,
    };
    let valid_action = |a: &String| match kind {
        Kind::Bucket | Kind::Endpoint => a == "*" || a.to_ascii_lowercase().starts_with("s3:"),
        Kind::Repository => a == "*" || a.to_ascii_lowercase().starts_with("ecr:"),
        Kind::Identity | Kind::Trust => {
            a == "*"
                || a.split_once(':').is_some_and(|(service, name)| {
                    !service.is_empty()
                        && !name.is_empty()
                        && service
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        }
    };
    if let Some(bad) = actions.iter().find(|a| !valid_action(a)) {
        return Err(malformed(match kind {
            Kind::Identity | Kind::Trust => format!("Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc. ({bad})"),
            _ => "Policy has invalid action".to_string(),
        }));
    }
    let resource = match (field(m, "Resource"), field(m, "NotResource")) {
        (Some(r), None) => Some(Patterns::Is(strings(r, "resource")?)),
        (None, Some(r)) => Some(Patterns::IsNot(strings(r, "resource")?)),
        (None, None) if kind == Kind::Bucket => {
            return Err(malformed("Missing required field Resource"))
        }
        (None, None) if kind == Kind::Identity => {
            return Err(malformed("Policy statement must contain resources."))
        }
        (Some(_), _) | (_, Some(_)) if kind == Kind::Trust => {
            return Err(malformed("Has prohibited field Resource"))
        }
        (None, None) => None,
        (Some(_), Some(_)) => return Err(malformed("Policy has invalid resource")),
    };
    if let Some(Patterns::Is(r) | Patterns::IsNot(r)) = &resource {
        if r.iter().any(|r| r != "*" && !r.starts_with("arn:")) {
            return Err(malformed("Policy has invalid resource"));
        }
    }
    let conditions = field(m, "Condition")
        .map(parse_conditions)
        .transpose()?
        .unwrap_or_default();
    Ok(Statement {
        effect,
        principal,
        not_principal,
        action,
        resource,
        conditions,
    })
}

impl Policy {
    /// Parses a policy document, with S3's MalformedPolicy messages for what is wrong.
    pub fn parse(doc: &str, kind: Kind) -> Result<Policy, PolicyError> {
        if !doc.trim_start().starts_with('{') {
            return Err(malformed(
                "Policies must be valid JSON and the first byte must be '{'",
            ));
        }
        let v: Value = serde_json::from_str(doc)
            .map_err(|_| malformed("This policy contains invalid Json"))?;
        let Value::Object(m) = &v else {
            return Err(malformed("This policy contains invalid Json"));
        };
        if let Some(version) = m.get("Version") {
            if !matches!(version.as_str(), Some("2012-10-17" | "2008-10-17")) {
                return Err(malformed("The policy must contain a valid version string"));
            }
        }
        let statements = match m.get("Statement") {
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|s| parse_statement(s, kind))
                .collect::<Result<_, _>>()?,
            Some(s @ Value::Object(_)) => vec![parse_statement(s, kind)?],
            _ => return Err(malformed("Missing required field Statement")),
        };
        Ok(Policy { statements })
    }

    /// The policy's decision for one request; an explicit Deny wins.
    pub fn evaluate(&self, cx: &RequestContext) -> Decision {
        self.evaluate_statements(cx).0
    }

    /// The decision and the statements (by index) that made it: the denying
    /// ones if any deny, else the allowing ones.
    pub fn evaluate_statements(&self, cx: &RequestContext) -> (Decision, Vec<usize>) {
        let (mut allows, mut denies) = (Vec::new(), Vec::new());
        for (i, s) in self.statements.iter().enumerate() {
            if s.applies(cx) {
                match s.effect {
                    Effect::Deny => denies.push(i),
                    Effect::Allow => allows.push(i),
                }
            }
        }
        if !denies.is_empty() {
            (Decision::Deny, denies)
        } else if !allows.is_empty() {
            (Decision::Allow, allows)
        } else {
            (Decision::NotApplicable, allows)
        }
    }

    /// Condition keys that statements on this action and resource test but
    /// the request does not carry (what the policy simulator reports as
    /// missing context values).
    pub fn missing_context_keys(&self, cx: &RequestContext) -> Vec<String> {
        let mut missing: Vec<String> = self
            .statements
            .iter()
            .filter(|s| s.matches_action_and_resource(cx))
            .flat_map(|s| &s.conditions)
            .filter(|c| cx.get(&c.key).is_none())
            .map(|c| c.key.clone())
            .collect();
        missing.sort();
        missing.dedup();
        missing
    }
}

impl Statement {
    fn applies(&self, cx: &RequestContext) -> bool {
        if let Some(p) = &self.principal {
            if !principal_matches(p, cx) {
                return false;
            }
        }
        if let Some(p) = &self.not_principal {
            if principal_matches(p, cx) {
                return false;
            }
        }
        self.matches_action_and_resource(cx) && self.conditions.iter().all(|c| c.holds(cx))
    }

    fn matches_action_and_resource(&self, cx: &RequestContext) -> bool {
        let action_hit = |pats: &[String]| {
            pats.iter()
                .any(|p| wildcard_match(&p.to_ascii_lowercase(), &cx.action.to_ascii_lowercase()))
        };
        let acts = match &self.action {
            Patterns::Is(p) => action_hit(p),
            Patterns::IsNot(p) => !action_hit(p),
        };
        if !acts {
            return false;
        }
        let resource_hit = |pats: &[String]| pats.iter().any(|p| wildcard_match(p, &cx.resource));
        match &self.resource {
            None => true,
            Some(Patterns::Is(p)) => resource_hit(p),
            Some(Patterns::IsNot(p)) => !resource_hit(p),
        }
    }
}

/// The ARNs a caller is known by in a Principal element: its own ARN, the
/// role behind an assumed-role session, and its account (as id and root ARN).
fn principal_matches(p: &Principals, cx: &RequestContext) -> bool {
    let (ids, services) = match p {
        Principals::Any => return true,
        Principals::Named { aws, services } => (aws, services),
    };
    if services.contains(&cx.principal_arn) {
        return true;
    }
    let account = cx.principal_account.as_str();
    let account_root = format!("arn:aws:iam::{account}:root");
    let role = assumed_role_arn(&cx.principal_arn);
    ids.iter().any(|id| {
        id == &cx.principal_arn
            || (!account.is_empty() && (id == account || id == &account_root))
            || role.as_deref() == Some(id.as_str())
    })
}

/// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION` is named in policies by
/// its role, `arn:aws:iam::ACCOUNT:role/ROLE`.
fn assumed_role_arn(arn: &str) -> Option<String> {
    let (account, role) = session_role(arn)?;
    Some(format!("arn:aws:iam::{account}:role/{role}"))
}

/// The account and role name of a session ARN
/// (`arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`).
pub fn session_role(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix("arn:aws:sts::")?;
    let (account, path) = rest.split_once(':')?;
    let role = path.strip_prefix("assumed-role/")?.split('/').next()?;
    (!role.is_empty()).then_some((account, role))
}

/// IAM's wildcards: `*` is any run of characters, `?` exactly one.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

fn ip_in(cidr: &str, ip: &str) -> bool {
    match (parse_cidr(cidr), ip.parse::<IpAddr>()) {
        (Some(net), Ok(ip)) => net.contains(&ip),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "123456789012";
    const ROOT: &str = "arn:aws:iam::123456789012:root";

    fn cx(action: &str, resource: &str) -> RequestContext {
        RequestContext::new(action, resource, ROOT, ACCOUNT)
    }

    fn from_endpoint(action: &str, resource: &str, vpce: &str, vpc: &str) -> RequestContext {
        let mut c = cx(action, resource);
        c.set("aws:SourceVpce", vpce);
        c.set("aws:SourceVpc", vpc);
        c
    }

    fn from_ip(action: &str, resource: &str, ip: &str) -> RequestContext {
        let mut c = cx(action, resource);
        c.set("aws:SourceIp", ip);
        c
    }

    fn policy(doc: &str) -> Policy {
        Policy::parse(doc, Kind::Bucket).unwrap()
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("s3:get*", "s3:getobject"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("arn:aws:s3:::b/*", "arn:aws:s3:::b/a/b/c"));
        assert!(!wildcard_match("arn:aws:s3:::b/*", "arn:aws:s3:::b"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(wildcard_match("*x*y*", "axbyc"));
        assert!(!wildcard_match("*x*y", "axbyc"));
        assert!(wildcard_match("vpce-*", "vpce-0123"));
    }

    #[test]
    fn deny_unless_from_endpoint() {
        let p = policy(
            r#"{"Version":"2012-10-17","Statement":[{"Sid":"OnlyVpce","Effect":"Deny","Principal":"*",
                "Action":"s3:*","Resource":["arn:aws:s3:::b","arn:aws:s3:::b/*"],
                "Condition":{"StringNotEquals":{"aws:SourceVpce":"vpce-1"}}}]}"#,
        );
        // A public request has no aws:SourceVpce: the negated operator matches, so Deny.
        assert_eq!(
            p.evaluate(&from_ip("s3:GetObject", "arn:aws:s3:::b/k", "127.0.0.1")),
            Decision::Deny
        );
        assert_eq!(
            p.evaluate(&from_endpoint(
                "s3:GetObject",
                "arn:aws:s3:::b/k",
                "vpce-1",
                "vpc-1"
            )),
            Decision::NotApplicable
        );
        assert_eq!(
            p.evaluate(&from_endpoint(
                "s3:GetObject",
                "arn:aws:s3:::b/k",
                "vpce-2",
                "vpc-1"
            )),
            Decision::Deny
        );
        // Other buckets are outside the statement's resources.
        assert_eq!(
            p.evaluate(&from_ip("s3:GetObject", "arn:aws:s3:::c/k", "127.0.0.1")),
            Decision::NotApplicable
        );
    }

    #[test]
    fn positive_operator_on_missing_key_is_false_and_if_exists_is_true() {
        let deny_vpc = |op: &str| {
            policy(&format!(
                r#"{{"Statement":{{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"*",
                   "Condition":{{"{op}":{{"aws:SourceVpc":"vpc-9"}}}}}}}}"#
            ))
        };
        let public = from_ip("s3:GetObject", "arn:aws:s3:::b/k", "198.51.100.1");
        assert_eq!(
            deny_vpc("StringEquals").evaluate(&public),
            Decision::NotApplicable
        );
        assert_eq!(
            deny_vpc("StringNotEquals").evaluate(&public),
            Decision::Deny
        );
        assert_eq!(
            deny_vpc("StringEqualsIfExists").evaluate(&public),
            Decision::Deny
        );
        assert_eq!(
            deny_vpc("StringNotEqualsIfExists").evaluate(&public),
            Decision::Deny
        );
        let inside = from_endpoint("s3:GetObject", "arn:aws:s3:::b/k", "vpce-1", "vpc-9");
        assert_eq!(deny_vpc("StringEquals").evaluate(&inside), Decision::Deny);
        assert_eq!(
            deny_vpc("StringNotEqualsIfExists").evaluate(&inside),
            Decision::NotApplicable
        );
        assert_eq!(deny_vpc("StringLike").evaluate(&inside), Decision::Deny);
        assert_eq!(deny_vpc("StringNotLike").evaluate(&public), Decision::Deny);
    }

    #[test]
    fn source_ip_is_absent_through_an_endpoint() {
        let p = policy(
            r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"*",
                "Condition":{"NotIpAddress":{"aws:SourceIp":["192.0.2.0/24","203.0.113.7"]}}}]}"#,
        );
        assert_eq!(
            p.evaluate(&from_ip("s3:GetObject", "arn:aws:s3:::b/k", "192.0.2.9")),
            Decision::NotApplicable
        );
        assert_eq!(
            p.evaluate(&from_ip("s3:GetObject", "arn:aws:s3:::b/k", "203.0.113.7")),
            Decision::NotApplicable
        );
        assert_eq!(
            p.evaluate(&from_ip("s3:GetObject", "arn:aws:s3:::b/k", "198.51.100.1")),
            Decision::Deny
        );
        // Through an endpoint there is no aws:SourceIp, so NotIpAddress holds: denied,
        // which is why AWS tells you to use aws:SourceVpce for VPC traffic.
        assert_eq!(
            p.evaluate(&from_endpoint(
                "s3:GetObject",
                "arn:aws:s3:::b/k",
                "vpce-1",
                "vpc-1"
            )),
            Decision::Deny
        );
        let allow_ip = policy(
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"*",
                "Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}"#,
        );
        assert_eq!(
            allow_ip.evaluate(&from_endpoint(
                "s3:GetObject",
                "arn:aws:s3:::b/k",
                "vpce-1",
                "vpc-1"
            )),
            Decision::NotApplicable
        );
        assert_eq!(
            allow_ip.evaluate(&from_ip("s3:GetObject", "arn:aws:s3:::b/k", "10.1.2.3")),
            Decision::Allow
        );
    }

    #[test]
    fn actions_resources_and_their_negations() {
        let p = policy(
            r#"{"Statement":[
                {"Effect":"Allow","Principal":{"AWS":"*"},"Action":["s3:Get*","s3:ListBucket"],"Resource":"arn:aws:s3:::b/*"},
                {"Effect":"Deny","Principal":"*","NotAction":"s3:Get*","NotResource":"arn:aws:s3:::b/public/*"}]}"#,
        );
        assert_eq!(
            p.evaluate(&cx("s3:GetObject", "arn:aws:s3:::b/x")),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate(&cx("s3:getobject", "arn:aws:s3:::b/x")),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate(&cx("s3:PutObject", "arn:aws:s3:::b/x")),
            Decision::Deny
        );
        assert_eq!(
            p.evaluate(&cx("s3:PutObject", "arn:aws:s3:::b/public/x")),
            Decision::NotApplicable
        );
        // Resources are case-sensitive.
        assert_eq!(
            p.evaluate(&cx("s3:GetObject", "arn:aws:s3:::B/x")),
            Decision::NotApplicable
        );
    }

    #[test]
    fn principals() {
        let only = |who: &str| {
            policy(&format!(
                r#"{{"Statement":[{{"Effect":"Deny","Principal":{{"AWS":{who}}},"Action":"s3:*","Resource":"*"}}]}}"#
            ))
        };
        let user = RequestContext::new(
            "s3:GetObject",
            "arn:aws:s3:::b/k",
            "arn:aws:iam::123456789012:user/alice",
            ACCOUNT,
        );
        assert_eq!(only(r#""123456789012""#).evaluate(&user), Decision::Deny);
        assert_eq!(
            only(&format!(r#""{ROOT}""#)).evaluate(&user),
            Decision::Deny
        );
        assert_eq!(
            only(r#"["arn:aws:iam::123456789012:user/bob"]"#).evaluate(&user),
            Decision::NotApplicable
        );
        assert_eq!(
            only(r#""arn:aws:iam::123456789012:user/alice""#).evaluate(&user),
            Decision::Deny
        );
        assert_eq!(
            only(r#""210987654321""#).evaluate(&user),
            Decision::NotApplicable
        );
        let session = RequestContext::new(
            "s3:GetObject",
            "arn:aws:s3:::b/k",
            "arn:aws:sts::123456789012:assumed-role/Trainer/job-1",
            ACCOUNT,
        );
        assert_eq!(
            only(r#""arn:aws:iam::123456789012:role/Trainer""#).evaluate(&session),
            Decision::Deny
        );
        let not_alice = policy(
            r#"{"Statement":[{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::123456789012:user/alice"},"Action":"s3:*","Resource":"*"}]}"#,
        );
        assert_eq!(not_alice.evaluate(&user), Decision::NotApplicable);
        assert_eq!(not_alice.evaluate(&cx("s3:GetObject", "x")), Decision::Deny);
        let service_only = policy(
            r#"{"Statement":[{"Effect":"Deny","Principal":{"Service":"logs.amazonaws.com"},"Action":"s3:*","Resource":"*"}]}"#,
        );
        assert_eq!(service_only.evaluate(&user), Decision::NotApplicable);
        let by_key = policy(
            r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"*",
                "Condition":{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*:user/a*"},"StringEquals":{"aws:PrincipalAccount":"123456789012"}}}]}"#,
        );
        assert_eq!(by_key.evaluate(&user), Decision::Deny);
        assert_eq!(
            by_key.evaluate(&cx("s3:GetObject", "x")),
            Decision::NotApplicable
        );
    }

    #[test]
    fn bool_null_and_multi_valued_keys() {
        let insecure = policy(
            r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"*",
                "Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}"#,
        );
        let mut c = cx("s3:GetObject", "x");
        c.set("aws:SecureTransport", "false");
        assert_eq!(insecure.evaluate(&c), Decision::Deny);
        c.set("aws:SecureTransport", "true");
        assert_eq!(insecure.evaluate(&c), Decision::NotApplicable);
        let bool_value = policy(
            r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"*",
                "Condition":{"Bool":{"aws:SecureTransport":false}}}]}"#,
        );
        c.set("aws:SecureTransport", "false");
        assert_eq!(bool_value.evaluate(&c), Decision::Deny);

        let no_vpce = policy(
            r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"*",
                "Condition":{"Null":{"aws:SourceVpce":"true"}}}]}"#,
        );
        assert_eq!(
            no_vpce.evaluate(&from_ip("s3:GetObject", "x", "1.2.3.4")),
            Decision::Deny
        );
        assert_eq!(
            no_vpce.evaluate(&from_endpoint("s3:GetObject", "x", "vpce-1", "vpc-1")),
            Decision::NotApplicable
        );

        // Several policy values: any of them matches.
        let two = policy(
            r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"*",
                "Condition":{"StringNotEquals":{"aws:SourceVpce":["vpce-1","vpce-2"]}}}]}"#,
        );
        assert_eq!(
            two.evaluate(&from_endpoint("s3:GetObject", "x", "vpce-2", "vpc-1")),
            Decision::NotApplicable
        );
        assert_eq!(
            two.evaluate(&from_endpoint("s3:GetObject", "x", "vpce-3", "vpc-1")),
            Decision::Deny
        );

        // Multi-valued request keys with the set qualifiers.
        let mut tags = cx("s3:GetObject", "x");
        tags.set_all("aws:TagKeys", vec!["team".into(), "cost".into()]);
        let any = |q: &str, vals: &str| {
            policy(&format!(
                r#"{{"Statement":[{{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"*",
                   "Condition":{{"{q}StringEquals":{{"aws:TagKeys":{vals}}}}}}}]}}"#
            ))
        };
        assert_eq!(
            any("ForAnyValue:", r#"["cost"]"#).evaluate(&tags),
            Decision::Deny
        );
        assert_eq!(
            any("ForAllValues:", r#"["cost"]"#).evaluate(&tags),
            Decision::NotApplicable
        );
        assert_eq!(
            any("ForAllValues:", r#"["cost","team"]"#).evaluate(&tags),
            Decision::Deny
        );
        let none = cx("s3:GetObject", "x");
        assert_eq!(
            any("ForAllValues:", r#"["cost"]"#).evaluate(&none),
            Decision::Deny
        );
        assert_eq!(
            any("ForAnyValue:", r#"["cost"]"#).evaluate(&none),
            Decision::NotApplicable
        );
    }

    #[test]
    fn endpoint_policy_allows_only_what_it_names() {
        let ep = Policy::parse(
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":["s3:GetObject","s3:ListBucket"],
                "Resource":["arn:aws:s3:::other","arn:aws:s3:::other/*"]}]}"#,
            Kind::Endpoint,
        )
        .unwrap();
        assert_eq!(
            ep.evaluate(&cx("s3:GetObject", "arn:aws:s3:::other/k")),
            Decision::Allow
        );
        assert_eq!(
            ep.evaluate(&cx("s3:GetObject", "arn:aws:s3:::mine/k")),
            Decision::NotApplicable
        );
        // The shape EC2 stores as the default full-access endpoint policy.
        let full = Policy::parse(
            r#"{"Statement":[{"Action":"*","Effect":"Allow","Principal":"*","Resource":"*"}]}"#,
            Kind::Endpoint,
        )
        .unwrap();
        assert_eq!(
            full.evaluate(&cx("s3:PutObject", "arn:aws:s3:::mine/k")),
            Decision::Allow
        );
        // An endpoint policy may leave Resource out.
        assert!(Policy::parse(
            r#"{"Statement":[{"Action":"s3:*","Effect":"Allow","Principal":"*"}]}"#,
            Kind::Endpoint
        )
        .is_ok());
    }

    #[test]
    fn malformed_documents() {
        let err = |doc: &str| Policy::parse(doc, Kind::Bucket).unwrap_err().0;
        assert_eq!(
            err("nope"),
            "Policies must be valid JSON and the first byte must be '{'"
        );
        assert_eq!(
            err("{\"Statement\": ["),
            "This policy contains invalid Json"
        );
        assert_eq!(err("{}"), "Missing required field Statement");
        assert_eq!(
            err(r#"{"Version":"2001-01-01","Statement":[]}"#),
            "The policy must contain a valid version string"
        );
        assert_eq!(
            err(
                r#"{"Statement":[{"Effect":"Maybe","Principal":"*","Action":"s3:*","Resource":"*"}]}"#
            ),
            "Invalid effect: Maybe"
        );
        assert_eq!(
            err(r#"{"Statement":[{"Effect":"Deny","Action":"s3:*","Resource":"*"}]}"#),
            "Missing required field Principal"
        );
        assert_eq!(
            err(r#"{"Statement":[{"Effect":"Deny","Principal":"*","Resource":"*"}]}"#),
            "Missing required field Action"
        );
        assert_eq!(
            err(
                r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"ec2:*","Resource":"*"}]}"#
            ),
            "Policy has invalid action"
        );
        assert_eq!(
            err(r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*"}]}"#),
            "Missing required field Resource"
        );
        assert_eq!(
            err(
                r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"*","Condition":{"Bogus":{"a":"b"}}}]}"#
            ),
            "Invalid Condition type : Bogus"
        );
        assert_eq!(
            err(
                r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"not-an-ip"}}}]}"#
            ),
            "Invalid IP address: not-an-ip"
        );
    }
}
