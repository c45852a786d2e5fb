//! One provider per supported resource type: CloudFormation's properties
//! mapped to the input of Cove's own API calls (so a stack's resources are
//! made and enforced exactly as API calls make them), what `Ref` and
//! `Fn::GetAtt` answer from the replies, when a resource that its service
//! makes in the background (a NAT gateway, a SageMaker endpoint) is ready,
//! and the calls that delete it. A module per service.

mod ec2;
mod iam;
mod logs;
mod s3;
mod sagemaker;

use cove_model::ids::UPPER_ALNUM;
use cove_model::AwsError;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Cove's services, called in process as the stack's account.
pub trait Api {
    fn call(&self, service: &'static str, operation: &str, input: Value)
        -> Result<Value, AwsError>;
    /// A read Cove makes for its own bookkeeping (finding what a lost
    /// create made), which the stack's caller needs no permission for.
    fn lookup(
        &self,
        service: &'static str,
        operation: &str,
        input: Value,
    ) -> Result<Value, AwsError> {
        self.call(service, operation, input)
    }
    /// The stack's region.
    fn region(&self) -> String;
}

/// A created resource: its physical id (what `Ref` answers) and attributes.
pub struct Created {
    pub physical_id: String,
    pub attributes: BTreeMap<String, Value>,
    /// What the resource's `CREATE_COMPLETE` event says (properties
    /// accepted but not applied).
    pub note: Option<String>,
}

/// Where a created resource stands in its service.
#[derive(Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Its service is still making it: asked again on the next pass.
    Pending,
}

/// The resource types Cove creates.
pub const SUPPORTED: [&str; 34] = [
    "AWS::EC2::VPC",
    "AWS::EC2::Subnet",
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::SecurityGroupIngress",
    "AWS::EC2::SecurityGroupEgress",
    "AWS::EC2::InternetGateway",
    "AWS::EC2::VPCGatewayAttachment",
    "AWS::EC2::RouteTable",
    "AWS::EC2::Route",
    "AWS::EC2::SubnetRouteTableAssociation",
    "AWS::EC2::VPCEndpoint",
    "AWS::EC2::EIP",
    "AWS::EC2::NatGateway",
    "AWS::EC2::NetworkAcl",
    "AWS::EC2::NetworkAclEntry",
    "AWS::EC2::SubnetNetworkAclAssociation",
    "AWS::EC2::FlowLog",
    "AWS::Logs::LogGroup",
    "AWS::IAM::Role",
    "AWS::IAM::Policy",
    "AWS::IAM::ManagedPolicy",
    "AWS::S3::Bucket",
    "AWS::S3::BucketPolicy",
    "AWS::SageMaker::Model",
    "AWS::SageMaker::EndpointConfig",
    "AWS::SageMaker::Endpoint",
    "AWS::SageMaker::Domain",
    "AWS::SageMaker::UserProfile",
    "AWS::SageMaker::App",
    "AWS::EC2::NetworkInterface",
    "AWS::EC2::VPCPeeringConnection",
    "AWS::EC2::DHCPOptions",
    "AWS::EC2::VPCDHCPOptionsAssociation",
    // What the CDK adds to every stack (its version and constructs): no
    // resource behind it, on AWS either.
    "AWS::CDK::Metadata",
];

/// Which stack and logical id a resource is made for: its generated name
/// and the `aws:cloudformation:*` tags EC2 resources carry.
pub struct Naming<'a> {
    pub stack: &'a str,
    /// The stack's ARN.
    pub stack_id: &'a str,
    pub logical_id: &'a str,
    /// What else tells this physical resource from an earlier one of the
    /// same logical id (its evaluated properties: a replacement's differ).
    pub seed: &'a str,
}

impl Naming<'_> {
    /// A name as CloudFormation generates one when the template gives
    /// none: `<stack>-<logical id>-<suffix>`, the first two shortened to
    /// fit `max` characters, lowercase where the service wants it. The
    /// suffix is derived from the stack, the logical id and the seed, so a
    /// create made again after a crash asks for the same name.
    pub fn generate(&self, max: usize, lowercase: bool) -> String {
        let suffix = self.suffix();
        let room = max.saturating_sub(suffix.len() + 2);
        let stack_room = room.min(self.stack.len()).min(room / 2 + room % 2);
        let stack: String = self.stack.chars().take(stack_room).collect();
        let logical: String = self
            .logical_id
            .chars()
            .take(room - stack.chars().count())
            .collect();
        let name = format!("{stack}-{logical}-{suffix}");
        if lowercase {
            name.to_lowercase()
        } else {
            name
        }
    }

    /// Twelve characters of `[A-Z0-9]` from a 64-bit FNV-1a hash.
    fn suffix(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for part in [self.stack_id, self.logical_id, self.seed] {
            for b in part.bytes().chain([0]) {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        (0..12)
            .map(|_| {
                let at = hash % UPPER_ALNUM.len() as u64;
                let c = UPPER_ALNUM[usize::try_from(at).unwrap_or_default()];
                hash = hash.rotate_right(5).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                char::from(c)
            })
            .collect()
    }

    /// The `aws:cloudformation:*` tags of an EC2 resource it makes.
    pub fn stack_tags(&self) -> Vec<Value> {
        vec![
            json!({"Key": "aws:cloudformation:stack-name", "Value": self.stack}),
            json!({"Key": "aws:cloudformation:stack-id", "Value": self.stack_id}),
            json!({"Key": "aws:cloudformation:logical-id", "Value": self.logical_id}),
        ]
    }
}

/// What CloudFormation says of a failed call to a service.
fn failed(service: &str, e: &AwsError) -> String {
    let name = match service {
        "ec2" => "AmazonEC2",
        "s3" => "Amazon S3",
        "logs" => "AWSLogs",
        "iam" => "AmazonIdentityManagement",
        "sagemaker" => "AmazonSageMaker",
        other => other,
    };
    format!(
        "{} (Service: {name}; Status Code: {}; Error Code: {})",
        e.message, e.status, e.code
    )
}

fn call(
    api: &dyn Api,
    service: &'static str,
    operation: &str,
    input: Value,
) -> Result<Value, String> {
    api.call(service, operation, input)
        .map_err(|e| failed(service, &e))
}

fn s(props: &Map<String, Value>, key: &str) -> Option<String> {
    props
        .get(key)
        .and_then(|v| cove_cfn::intrinsics::text(v).ok())
}

fn need(props: &Map<String, Value>, key: &str) -> Result<String, String> {
    s(props, key)
        .ok_or_else(|| format!("Property validation failure: [The property {key} is required]"))
}

fn boolean(props: &Map<String, Value>, key: &str) -> Option<bool> {
    s(props, key).map(|v| v == "true")
}

fn strings(props: &Map<String, Value>, key: &str) -> Vec<String> {
    props
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| cove_cfn::intrinsics::text(v).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A policy document as the APIs take it: text (a template may write it as
/// an object or as JSON text).
fn document(props: &Map<String, Value>, key: &str) -> Result<String, String> {
    match props.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Ok(v.to_string()),
        None => need(props, key),
    }
}

/// CloudFormation's `Tags` (`[{Key, Value}]`), in the API's list shape.
fn tag_list(props: &Map<String, Value>) -> Vec<Value> {
    props
        .get("Tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    let t = t.as_object()?;
                    Some(json!({"Key": s(t, "Key")?, "Value": s(t, "Value")?}))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn attrs(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn created(id: String, pairs: &[(&str, Value)]) -> Created {
    Created {
        physical_id: id,
        attributes: attrs(pairs),
        note: None,
    }
}

fn id_at(reply: &Value, object: &str, field: &str) -> Result<String, String> {
    reply[object][field]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("the reply carried no {object}.{field}"))
}

/// Creates a resource of `kind` from its evaluated properties. `known`,
/// for a create made again after Cove stopped during it, are the physical
/// ids its stack has: a copy the lost call made is deleted first (EC2
/// resources, found by their stack tags). A generated name found taken
/// (roles, log groups, buckets: the name is the stack's own) is deleted and
/// made again.
pub fn create(
    api: &dyn Api,
    kind: &str,
    props: &Map<String, Value>,
    naming: &Naming,
    known: Option<&std::collections::BTreeSet<String>>,
) -> Result<Created, String> {
    if let Some(known) = known.filter(|_| kind.starts_with("AWS::EC2::")) {
        ec2::clear_orphans(api, kind, naming, known)?;
    }
    match create_once(api, kind, props, naming) {
        Err(e) if generated_name_taken(kind, props, &e) => {
            let name = generated_name(kind, naming);
            tracing::info!(
                name,
                kind,
                "deleting a resource whose create was not recorded"
            );
            delete(api, kind, &name, &BTreeMap::new())?;
            create_once(api, kind, props, naming)
        }
        other => other,
    }
}

/// The kinds whose physical id is the name Cove generates when the
/// template gives none: a create made again after a crash finds it taken.
const NAMED_BY_STACK: [&str; 3] = ["AWS::IAM::Role", "AWS::Logs::LogGroup", "AWS::S3::Bucket"];

/// The name Cove generates for a resource of one of [`NAMED_BY_STACK`]
/// (the providers make it with this too), within the service's limit.
fn generated_name(kind: &str, naming: &Naming) -> String {
    match kind {
        "AWS::IAM::Role" => naming.generate(64, false),
        "AWS::S3::Bucket" => naming.generate(63, true),
        _ => naming.generate(512, false),
    }
}

/// Whether a create failed only because the name Cove generated for it
/// exists: generated from the stack's id, it can only be this resource's.
fn generated_name_taken(kind: &str, props: &Map<String, Value>, e: &str) -> bool {
    let given = name_property(kind).is_some_and(|key| props.contains_key(key));
    !given
        && NAMED_BY_STACK.contains(&kind)
        && [
            "EntityAlreadyExists",
            "ResourceAlreadyExistsException",
            "BucketAlreadyOwnedByYou",
        ]
        .iter()
        .any(|code| e.contains(&format!("Error Code: {code})")))
}

fn create_once(
    api: &dyn Api,
    kind: &str,
    props: &Map<String, Value>,
    naming: &Naming,
) -> Result<Created, String> {
    match kind.split("::").nth(1) {
        Some("EC2") => ec2::create(api, kind, props, naming),
        Some("IAM") => iam::create(api, kind, props, naming),
        Some("Logs") => logs::create(api, kind, props, naming),
        Some("S3") => s3::create(api, kind, props, naming),
        Some("SageMaker") => sagemaker::create(api, kind, props, naming),
        Some("CDK") => Ok(created(naming.generate(128, false), &[])),
        _ => Err(format!("Cove does not create resources of type {kind}")),
    }
}

/// Whether a created resource is ready; `Err` when its service gave up
/// making it (the resource then fails with the service's reason).
pub fn readiness(
    api: &dyn Api,
    kind: &str,
    physical_id: &str,
    attributes: &BTreeMap<String, Value>,
) -> Result<Readiness, String> {
    match kind {
        "AWS::EC2::NatGateway" => ec2::nat_gateway_readiness(api, physical_id),
        _ if kind.starts_with("AWS::SageMaker::") => sagemaker::readiness(api, kind, attributes),
        _ => Ok(Readiness::Ready),
    }
}

/// The top-level properties whose values differ between two versions.
pub fn changed_properties(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Whether changing `changed` properties of `kind` replaces the resource
/// (a new physical resource is made and the old one deleted at cleanup).
pub fn needs_replacement(kind: &str, changed: &[String]) -> bool {
    let in_place: &[&str] = match kind.split("::").nth(1) {
        Some("EC2") => ec2::updatable(kind),
        Some("IAM") => iam::updatable(kind),
        Some("Logs") => logs::updatable(kind),
        Some("S3") => s3::updatable(kind),
        Some("SageMaker") => sagemaker::updatable(kind),
        Some("CDK") => &["Analytics"],
        _ => &[],
    };
    changed.iter().any(|c| !in_place.contains(&c.as_str()))
}

/// The property that names a resource of `kind`, when the template may
/// give the name: such a resource cannot be replaced under the same name.
pub fn name_property(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "AWS::EC2::SecurityGroup" => "GroupName",
        "AWS::IAM::Role" => "RoleName",
        "AWS::IAM::ManagedPolicy" => "ManagedPolicyName",
        "AWS::Logs::LogGroup" => "LogGroupName",
        "AWS::S3::Bucket" => "BucketName",
        "AWS::SageMaker::Model" => "ModelName",
        "AWS::SageMaker::EndpointConfig" => "EndpointConfigName",
        "AWS::SageMaker::Endpoint" => "EndpointName",
        _ => return None,
    })
}

/// Updates a resource in place (every changed property is one its type
/// updates without replacement): its attributes afterwards.
pub fn update(
    api: &dyn Api,
    kind: &str,
    physical_id: &str,
    attributes: &BTreeMap<String, Value>,
    (old, new): (&Map<String, Value>, &Map<String, Value>),
) -> Result<BTreeMap<String, Value>, String> {
    let changed = changed_properties(old, new);
    match kind.split("::").nth(1) {
        Some("EC2") => ec2::update(api, kind, physical_id, attributes, (old, new), &changed)?,
        Some("IAM") => {
            iam::update(api, kind, physical_id, (old, new), &changed)?;
            return Ok(iam::attributes_after_update(kind, new, attributes));
        }
        Some("Logs") => logs::update(api, physical_id, new)?,
        Some("S3") => s3::update(api, kind, attributes, new)?,
        Some("SageMaker") => sagemaker::update(api, attributes, new)?,
        Some("CDK") => {}
        _ => return Err(format!("Cove does not update resources of type {kind}")),
    }
    Ok(attributes.clone())
}

/// Deletes a created resource.
pub fn delete(
    api: &dyn Api,
    kind: &str,
    physical_id: &str,
    attributes: &BTreeMap<String, Value>,
) -> Result<(), String> {
    let result = match kind.split("::").nth(1) {
        Some("EC2") => ec2::delete(api, kind, physical_id, attributes),
        Some("IAM") => iam::delete(api, kind, physical_id, attributes),
        Some("Logs") => logs::delete(api, physical_id),
        Some("S3") => s3::delete(api, kind, physical_id, attributes),
        Some("SageMaker") => sagemaker::delete(api, kind, attributes),
        Some("CDK") => Ok(()),
        _ => return Err(format!("Cove does not delete resources of type {kind}")),
    };
    match result {
        Ok(()) => Ok(()),
        // Already gone (deleted by hand): nothing left to delete.
        Err(e) if is_gone(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_gone(e: &str) -> bool {
    ["NotFound", "NoSuchEntity", "NoSuchBucket", "ResourceNotFoundException"]
        .iter()
        .any(|code| e.contains(&format!("Error Code: {code}")) || e.contains(&format!("{code})")))
        || e.contains(".NotFound")
        // SageMaker says ValidationException for a name it does not know.
        || e.contains("Could not find")
}

/// Whether a delete was refused only because something else still uses
/// the resource (an endpoint's ENI, a NAT gateway's address): tried again.
pub fn is_busy(e: &str) -> bool {
    ["DependencyViolation", "InUse", "DeleteConflict"]
        .iter()
        .any(|word| e.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_fit_their_service_and_keep_stack_and_logical_id() {
        let n = Naming {
            stack: "a-very-long-stack-name-for-a-private-network-design",
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1",
            logical_id: "ModelArtifactsBucketForTheTeam",
            seed: "{}",
        };
        let bucket = n.generate(63, true);
        assert!(bucket.len() <= 63, "{bucket}");
        assert!(bucket.starts_with("a-very-long"), "{bucket}");
        assert!(bucket.contains("-modelartifacts"), "{bucket}");
        assert_eq!(bucket, bucket.to_lowercase());
        let short = Naming {
            stack: "s",
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1",
            logical_id: "Role",
            seed: "{}",
        }
        .generate(64, false);
        assert!(short.starts_with("s-Role-") && short.len() == 19, "{short}");
        // The same resource gets the same name; a replacement another.
        assert_eq!(n.generate(63, true), bucket);
        let replacement = Naming {
            seed: r#"{"BucketName":null,"Tags":[]}"#,
            ..n
        };
        assert_ne!(replacement.generate(63, true), bucket);
    }

    #[test]
    fn gone_and_busy_are_read_from_the_services_codes() {
        let e = |code: &str| failed("ec2", &AwsError::client(code, "nope"));
        assert!(is_gone(&e("InvalidVpcID.NotFound")));
        assert!(is_gone(&failed(
            "iam",
            &AwsError::client("NoSuchEntity", "x")
        )));
        assert!(!is_gone(&e("DependencyViolation")));
        assert!(is_busy(&e("DependencyViolation")));
        assert!(is_busy(&e("InvalidIPAddress.InUse")));
        assert!(!is_busy(&e("InvalidParameterValue")));
    }
}
