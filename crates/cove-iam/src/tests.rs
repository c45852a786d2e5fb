//! The IAM API through `Service::handle` on an in-memory store: roles,
//! policies and the simulator's verdicts.

use super::*;
use serde_json::json;

const ACCOUNT: &str = "123456789012";
const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"sagemaker.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

fn iam() -> IamService {
    IamService::new(Arc::new(Store::in_memory().unwrap()))
}

fn call(iam: &IamService, op: &str, input: Value) -> AwsResult<Value> {
    let ctx = RequestContext::internal(
        op,
        "us-east-1",
        ACCOUNT,
        &format!("arn:aws:iam::{ACCOUNT}:root"),
        "AKIAEXAMPLE",
    );
    iam.handle(&ctx, input)
}

fn ok(iam: &IamService, op: &str, input: Value) -> Value {
    call(iam, op, input).unwrap_or_else(|e| panic!("{op}: {} {}", e.code, e.message))
}

fn err(iam: &IamService, op: &str, input: Value) -> AwsError {
    call(iam, op, input).expect_err(op)
}

fn role_with(iam: &IamService, name: &str, inline: &[(&str, &str)]) {
    ok(
        iam,
        "CreateRole",
        json!({"RoleName": name, "AssumeRolePolicyDocument": TRUST}),
    );
    for (policy, doc) in inline {
        ok(
            iam,
            "PutRolePolicy",
            json!({"RoleName": name, "PolicyName": policy, "PolicyDocument": doc}),
        );
    }
}

fn decisions(iam: &IamService, role: &str, actions: &[&str], resources: &[&str]) -> Vec<String> {
    let mut input = json!({
        "PolicySourceArn": format!("arn:aws:iam::{ACCOUNT}:role/{role}"),
        "ActionNames": actions,
    });
    if !resources.is_empty() {
        input["ResourceArns"] = json!(resources);
    }
    ok(iam, "SimulatePrincipalPolicy", input)["EvaluationResults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["EvalDecision"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_role_is_created_once_found_regardless_of_case_and_returned_url_encoded() {
    let iam = iam();
    let created = ok(
        &iam,
        "CreateRole",
        json!({"RoleName": "SageMakerRole", "Path": "/service-role/",
               "AssumeRolePolicyDocument": TRUST, "Tags": [{"Key": "team", "Value": "ml"}]}),
    );
    let role = &created["Role"];
    assert_eq!(
        role["Arn"],
        format!("arn:aws:iam::{ACCOUNT}:role/service-role/SageMakerRole")
    );
    assert!(role["RoleId"].as_str().unwrap().starts_with("AROA"));
    let doc = role["AssumeRolePolicyDocument"].as_str().unwrap();
    assert!(doc.starts_with("%7B%22Version%22"), "{doc}");
    let decoded = percent_encoding::percent_decode_str(doc)
        .decode_utf8()
        .unwrap();
    assert_eq!(decoded, TRUST);

    let again = err(
        &iam,
        "CreateRole",
        json!({"RoleName": "sagemakerrole", "AssumeRolePolicyDocument": TRUST}),
    );
    assert_eq!(
        (again.status, again.code.as_str()),
        (409, "EntityAlreadyExists")
    );
    assert_eq!(
        ok(&iam, "GetRole", json!({"RoleName": "SAGEMAKERROLE"}))["Role"]["RoleName"],
        "SageMakerRole"
    );
    let missing = err(&iam, "GetRole", json!({"RoleName": "Nope"}));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.message, "The role with name Nope cannot be found.");
    let listed = ok(&iam, "ListRoles", json!({"PathPrefix": "/service-role/"}));
    assert_eq!(listed["Roles"].as_array().unwrap().len(), 1);
    assert_eq!(listed["IsTruncated"], false);
}

#[test]
fn malformed_documents_are_refused_and_change_nothing() {
    let iam = iam();
    let e = err(
        &iam,
        "CreateRole",
        json!({"RoleName": "R", "AssumeRolePolicyDocument": "{nope"}),
    );
    assert_eq!(e.code, "MalformedPolicyDocument");
    let no_principal =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole"}]}"#;
    let e = err(
        &iam,
        "CreateRole",
        json!({"RoleName": "R", "AssumeRolePolicyDocument": no_principal}),
    );
    assert_eq!(e.message, "Missing required field Principal");
    assert_eq!(
        err(&iam, "GetRole", json!({"RoleName": "R"})).code,
        "NoSuchEntity"
    );

    role_with(&iam, "R", &[]);
    let no_resource =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject"}]}"#;
    let e = err(
        &iam,
        "PutRolePolicy",
        json!({"RoleName": "R", "PolicyName": "p", "PolicyDocument": no_resource}),
    );
    assert_eq!(e.message, "Policy statement must contain resources.");
    let no_vendor = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"GetObject","Resource":"*"}]}"#;
    assert_eq!(
        err(
            &iam,
            "PutRolePolicy",
            json!({"RoleName": "R", "PolicyName": "p", "PolicyDocument": no_vendor})
        )
        .code,
        "MalformedPolicyDocument"
    );
    assert_eq!(
        ok(&iam, "ListRolePolicies", json!({"RoleName": "R"}))["PolicyNames"],
        json!([])
    );
}

#[test]
fn the_simulator_applies_deny_over_allow_wildcards_and_resources() {
    let iam = iam();
    let allow = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["ecr:GetAuthorizationToken","ec2:Describe*"],"Resource":"*"},
        {"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::data/*"}]}"#;
    let deny = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"ec2:DescribeVpcs","Resource":"*"}]}"#;
    role_with(&iam, "R", &[("allow", allow), ("deny", deny)]);
    assert_eq!(
        decisions(
            &iam,
            "R",
            &[
                "ecr:GetAuthorizationToken",
                "EC2:describesubnets",
                "ec2:DescribeVpcs",
                "cloudwatch:PutMetricData"
            ],
            &[]
        ),
        ["allowed", "allowed", "explicitDeny", "implicitDeny"]
    );
    assert_eq!(
        decisions(
            &iam,
            "R",
            &["s3:PutObject"],
            &["arn:aws:s3:::data/x", "arn:aws:s3:::other/x"]
        ),
        ["allowed", "implicitDeny"]
    );
    let result = &ok(
        &iam,
        "SimulatePrincipalPolicy",
        json!({"PolicySourceArn": format!("arn:aws:iam::{ACCOUNT}:role/R"), "ActionNames": ["ec2:DescribeVpcs"]}),
    )["EvaluationResults"][0];
    assert_eq!(
        result["MatchedStatements"],
        json!([{"SourcePolicyId": "deny", "SourcePolicyType": "role"}])
    );
    let e = err(
        &iam,
        "SimulatePrincipalPolicy",
        json!({"PolicySourceArn": format!("arn:aws:iam::{ACCOUNT}:role/Gone"), "ActionNames": ["s3:GetObject"]}),
    );
    assert_eq!(e.code, "NoSuchEntity");
}

#[test]
fn conditions_use_the_context_and_report_what_is_missing() {
    let iam = iam();
    let doc = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:PassRole","Resource":"*",
        "Condition":{"StringEquals":{"iam:PassedToService":"sagemaker.amazonaws.com"}}}]}"#;
    role_with(&iam, "R", &[("pass", doc)]);
    let arn = format!("arn:aws:iam::{ACCOUNT}:role/R");
    let without = &ok(
        &iam,
        "SimulatePrincipalPolicy",
        json!({"PolicySourceArn": arn, "ActionNames": ["iam:PassRole"]}),
    )["EvaluationResults"][0];
    assert_eq!(without["EvalDecision"], "implicitDeny");
    assert_eq!(
        without["MissingContextValues"],
        json!(["iam:PassedToService"])
    );
    let with = &ok(
        &iam,
        "SimulatePrincipalPolicy",
        json!({"PolicySourceArn": arn, "ActionNames": ["iam:PassRole"],
               "ContextEntries": [{"ContextKeyName": "iam:PassedToService",
                                   "ContextKeyValues": ["sagemaker.amazonaws.com"], "ContextKeyType": "string"}]}),
    )["EvaluationResults"][0];
    assert_eq!(with["EvalDecision"], "allowed");
}

#[test]
fn managed_policies_attach_version_and_refuse_unsafe_deletes() {
    let iam = iam();
    role_with(&iam, "R", &[]);
    let full = "arn:aws:iam::aws:policy/AmazonSageMakerFullAccess";
    ok(
        &iam,
        "AttachRolePolicy",
        json!({"RoleName": "R", "PolicyArn": full}),
    );
    assert_eq!(
        decisions(
            &iam,
            "R",
            &["sagemaker:CreateTrainingJob", "iam:CreateRole"],
            &[]
        ),
        ["allowed", "implicitDeny"]
    );
    let e = err(
        &iam,
        "AttachRolePolicy",
        json!({"RoleName": "R", "PolicyArn": "arn:aws:iam::aws:policy/Nope"}),
    );
    assert_eq!(
        e.message,
        "Policy arn:aws:iam::aws:policy/Nope does not exist or is not attachable."
    );

    let v1 = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"logs:*","Resource":"*"}]}"#;
    let created = ok(
        &iam,
        "CreatePolicy",
        json!({"PolicyName": "Logs", "PolicyDocument": v1}),
    );
    let arn = created["Policy"]["Arn"].as_str().unwrap().to_string();
    assert_eq!(arn, format!("arn:aws:iam::{ACCOUNT}:policy/Logs"));
    ok(
        &iam,
        "AttachRolePolicy",
        json!({"RoleName": "R", "PolicyArn": arn}),
    );
    assert_eq!(
        ok(&iam, "GetPolicy", json!({"PolicyArn": arn}))["Policy"]["AttachmentCount"],
        1
    );
    assert_eq!(
        decisions(&iam, "R", &["logs:PutLogEvents"], &[]),
        ["allowed"]
    );

    let deny_logs = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"logs:*","Resource":"*"}]}"#;
    for _ in 0..4 {
        ok(
            &iam,
            "CreatePolicyVersion",
            json!({"PolicyArn": arn, "PolicyDocument": deny_logs}),
        );
    }
    let e = err(
        &iam,
        "CreatePolicyVersion",
        json!({"PolicyArn": arn, "PolicyDocument": deny_logs}),
    );
    assert_eq!(e.code, "LimitExceeded");
    // Only the default version counts.
    assert_eq!(
        decisions(&iam, "R", &["logs:PutLogEvents"], &[]),
        ["allowed"]
    );
    ok(
        &iam,
        "DeletePolicyVersion",
        json!({"PolicyArn": arn, "VersionId": "v5"}),
    );
    let v6 = ok(
        &iam,
        "CreatePolicyVersion",
        json!({"PolicyArn": arn, "PolicyDocument": deny_logs, "SetAsDefault": true}),
    );
    assert_eq!(v6["PolicyVersion"]["VersionId"], "v6");
    assert_eq!(
        decisions(&iam, "R", &["logs:PutLogEvents"], &[]),
        ["explicitDeny"]
    );
    assert_eq!(
        err(
            &iam,
            "DeletePolicyVersion",
            json!({"PolicyArn": arn, "VersionId": "v6"})
        )
        .code,
        "DeleteConflict"
    );

    assert_eq!(
        err(&iam, "DeletePolicy", json!({"PolicyArn": arn})).message,
        "Cannot delete a policy attached to entities."
    );
    assert_eq!(
        err(&iam, "DeleteRole", json!({"RoleName": "R"})).message,
        "Cannot delete entity, must detach all policies first."
    );
    ok(
        &iam,
        "DetachRolePolicy",
        json!({"RoleName": "R", "PolicyArn": arn}),
    );
    ok(
        &iam,
        "DetachRolePolicy",
        json!({"RoleName": "R", "PolicyArn": full}),
    );
    ok(&iam, "DeleteRole", json!({"RoleName": "R"}));
    let attached = ok(
        &iam,
        "ListPolicies",
        json!({"Scope": "Local", "OnlyAttached": true}),
    );
    assert_eq!(attached["Policies"], json!([]));
}

#[test]
fn a_permissions_boundary_caps_what_the_role_is_allowed() {
    let iam = iam();
    ok(
        &iam,
        "CreateRole",
        json!({"RoleName": "B", "AssumeRolePolicyDocument": TRUST,
        "PermissionsBoundary": "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"}),
    );
    let everything =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    ok(
        &iam,
        "PutRolePolicy",
        json!({"RoleName": "B", "PolicyName": "all", "PolicyDocument": everything}),
    );
    assert_eq!(
        decisions(&iam, "B", &["s3:GetObject", "s3:PutObject"], &[]),
        ["allowed", "implicitDeny"]
    );
}

#[test]
fn lists_page_with_markers() {
    let iam = iam();
    for i in 0..5 {
        role_with(&iam, &format!("R{i}"), &[]);
    }
    let first = ok(&iam, "ListRoles", json!({"MaxItems": 2}));
    assert_eq!(first["Roles"].as_array().unwrap().len(), 2);
    assert_eq!(first["IsTruncated"], true);
    let mut names = Vec::new();
    let mut marker = first["Marker"].as_str().map(str::to_string);
    names.extend(
        first["Roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["RoleName"].clone()),
    );
    while let Some(m) = marker {
        let next = ok(&iam, "ListRoles", json!({"MaxItems": 2, "Marker": m}));
        names.extend(
            next["Roles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["RoleName"].clone()),
        );
        marker = next["Marker"].as_str().map(str::to_string);
    }
    assert_eq!(names.len(), 5);
    assert_eq!(
        err(&iam, "ListRoles", json!({"Marker": "zz"})).code,
        "InvalidInput"
    );
}

#[test]
fn users_keys_and_policies() {
    let iam = iam();
    let user = ok(
        &iam,
        "CreateUser",
        json!({"UserName": "ci", "Path": "/build/"}),
    )["User"]
        .clone();
    assert_eq!(user["Arn"], format!("arn:aws:iam::{ACCOUNT}:user/build/ci"));
    assert!(user["UserId"].as_str().unwrap().starts_with("AIDA"));
    assert_eq!(
        err(&iam, "CreateUser", json!({"UserName": "CI"})).code,
        "EntityAlreadyExists"
    );
    assert_eq!(
        err(&iam, "GetUser", json!({"UserName": "nobody"})).message,
        "The user with name nobody cannot be found."
    );

    let key = ok(&iam, "CreateAccessKey", json!({"UserName": "ci"}))["AccessKey"].clone();
    assert_eq!(key["Status"], "Active");
    assert_eq!(key["SecretAccessKey"].as_str().unwrap().len(), 40);
    let id = key["AccessKeyId"].as_str().unwrap().to_string();
    ok(&iam, "CreateAccessKey", json!({"UserName": "ci"}));
    let third = err(&iam, "CreateAccessKey", json!({"UserName": "ci"}));
    assert_eq!(
        (third.code.as_str(), third.message.as_str()),
        (
            "LimitExceeded",
            "Cannot exceed quota for AccessKeysPerUser: 2"
        )
    );

    // The key stands for the user until it is made inactive.
    let principal = |iam: &IamService| principal_of_access_key(&iam.store.snapshot(), &id);
    assert_eq!(
        principal(&iam).unwrap().arn,
        format!("arn:aws:iam::{ACCOUNT}:user/build/ci")
    );
    ok(
        &iam,
        "UpdateAccessKey",
        json!({"UserName": "ci", "AccessKeyId": id, "Status": "Inactive"}),
    );
    assert!(principal(&iam).is_none());

    // A user's policies are simulated like a role's.
    ok(
        &iam,
        "PutUserPolicy",
        json!({"UserName": "ci", "PolicyName": "read", "PolicyDocument":
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#}),
    );
    ok(
        &iam,
        "AttachUserPolicy",
        json!({"UserName": "ci", "PolicyArn": "arn:aws:iam::aws:policy/AmazonSageMakerFullAccess"}),
    );
    let sim = ok(
        &iam,
        "SimulatePrincipalPolicy",
        json!({
        "PolicySourceArn": format!("arn:aws:iam::{ACCOUNT}:user/build/ci"),
        "ActionNames": ["s3:GetObject", "s3:DeleteBucket"]}),
    );
    let verdicts: Vec<&str> = sim["EvaluationResults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["EvalDecision"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["allowed", "implicitDeny"]);
    let limits = authority::identity_policies(
        &iam.store.snapshot(),
        &format!("arn:aws:iam::{ACCOUNT}:user/build/ci"),
        "",
    )
    .unwrap();
    let cx = cove_model::policy::RequestContext::new(
        "s3:GetObject",
        "arn:aws:s3:::b/k",
        "arn:aws:iam::123456789012:user/build/ci",
        ACCOUNT,
    );
    assert_eq!(limits.decide(&cx), cove_model::policy::Decision::Allow);

    // Deleting needs the keys and policies gone first, as on AWS.
    assert_eq!(
        err(&iam, "DeleteUser", json!({"UserName": "ci"})).message,
        "Cannot delete entity, must delete access keys first."
    );
    for k in ok(&iam, "ListAccessKeys", json!({"UserName": "ci"}))["AccessKeyMetadata"]
        .as_array()
        .unwrap()
    {
        ok(
            &iam,
            "DeleteAccessKey",
            json!({"UserName": "ci", "AccessKeyId": k["AccessKeyId"]}),
        );
    }
    assert_eq!(
        err(
            &iam,
            "DeleteAccessKey",
            json!({"UserName": "ci", "AccessKeyId": id})
        )
        .code,
        "NoSuchEntity"
    );
    assert_eq!(
        err(&iam, "DeleteUser", json!({"UserName": "ci"})).message,
        "Cannot delete entity, must delete policies first."
    );
    ok(
        &iam,
        "DeleteUserPolicy",
        json!({"UserName": "ci", "PolicyName": "read"}),
    );
    ok(
        &iam,
        "DetachUserPolicy",
        json!({"UserName": "ci", "PolicyArn": "arn:aws:iam::aws:policy/AmazonSageMakerFullAccess"}),
    );
    ok(&iam, "DeleteUser", json!({"UserName": "ci"}));
    assert!(ok(&iam, "ListUsers", json!({}))["Users"]
        .as_array()
        .unwrap()
        .is_empty());
}
