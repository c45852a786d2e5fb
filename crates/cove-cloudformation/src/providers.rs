//! One provider per supported resource type: CloudFormation's properties
//! mapped to the input of Cove's own API calls (so a stack's resources are
//! made and enforced exactly as API calls make them), what `Ref` and
//! `Fn::GetAtt` answer from the replies, and the call that deletes it.

use cove_model::AwsError;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Cove's services, called in process as the stack's account.
pub trait Api {
    fn call(&self, service: &'static str, operation: &str, input: Value)
        -> Result<Value, AwsError>;
}

/// A created resource: its physical id (what `Ref` answers) and attributes.
pub struct Created {
    pub physical_id: String,
    pub attributes: BTreeMap<String, Value>,
}

/// The resource types Cove creates.
pub const SUPPORTED: [&str; 11] = [
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
];

/// CloudFormation's words for a failed call.
fn failed(e: &AwsError) -> String {
    format!(
        "{} (Service: AmazonEC2; Status Code: {}; Error Code: {})",
        e.message, e.status, e.code
    )
}

fn ec2(api: &dyn Api, operation: &str, input: Value) -> Result<Value, String> {
    api.call("ec2", operation, input).map_err(|e| failed(&e))
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

fn int(props: &Map<String, Value>, key: &str) -> Result<Option<i64>, String> {
    match s(props, key) {
        None => Ok(None),
        Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
            format!(
                "Property validation failure: [Value of property {key} must be of type Integer]"
            )
        }),
    }
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

/// `TagSpecifications` for a create call, from CloudFormation's `Tags`.
fn tag_specs(props: &Map<String, Value>, resource_type: &str) -> Value {
    let tags: Vec<Value> = props
        .get("Tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| Some(json!({"Key": s(t.as_object()?, "Key")?, "Value": s(t.as_object()?, "Value")?})))
                .collect()
        })
        .unwrap_or_default();
    if tags.is_empty() {
        return json!([]);
    }
    json!([{"ResourceType": resource_type, "Tags": tags}])
}

fn attrs(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn id_at(reply: &Value, object: &str, field: &str) -> Result<String, String> {
    reply[object][field]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("the reply carried no {object}.{field}"))
}

/// One security group rule of CloudFormation's shape as an `IpPermission`.
fn permission(rule: &Map<String, Value>, peer_group_key: &str) -> Result<Value, String> {
    let protocol = need(rule, "IpProtocol")?;
    let mut p = json!({"IpProtocol": protocol});
    if let Some(from) = int(rule, "FromPort")? {
        p["FromPort"] = json!(from);
    }
    if let Some(to) = int(rule, "ToPort")? {
        p["ToPort"] = json!(to);
    }
    let description = s(rule, "Description");
    if let Some(cidr) = s(rule, "CidrIp") {
        let mut range = json!({"CidrIp": cidr});
        if let Some(d) = &description {
            range["Description"] = json!(d);
        }
        p["IpRanges"] = json!([range]);
    }
    if let Some(group) = s(rule, peer_group_key) {
        p["UserIdGroupPairs"] = json!([{"GroupId": group}]);
    }
    for key in ["SourcePrefixListId", "DestinationPrefixListId"] {
        if let Some(pl) = s(rule, key) {
            p["PrefixListIds"] = json!([{"PrefixListId": pl}]);
        }
    }
    Ok(p)
}

fn rule_ids(reply: &Value) -> Vec<Value> {
    reply["SecurityGroupRules"]
        .as_array()
        .map(|a| a.iter().map(|r| r["SecurityGroupRuleId"].clone()).collect())
        .unwrap_or_default()
}

/// Creates a resource of `kind` from its evaluated properties.
pub fn create(
    api: &dyn Api,
    kind: &str,
    props: &Map<String, Value>,
    generated_name: &str,
) -> Result<Created, String> {
    let created = |id: String, pairs: &[(&str, Value)]| Created {
        physical_id: id,
        attributes: attrs(pairs),
    };
    match kind {
        "AWS::EC2::VPC" => {
            let mut input = json!({"CidrBlock": need(props, "CidrBlock")?, "TagSpecifications": tag_specs(props, "vpc")});
            if let Some(t) = s(props, "InstanceTenancy") {
                input["InstanceTenancy"] = json!(t);
            }
            let reply = ec2(api, "CreateVpc", input)?;
            let id = id_at(&reply, "Vpc", "VpcId")?;
            for key in ["EnableDnsSupport", "EnableDnsHostnames"] {
                if let Some(b) = boolean(props, key) {
                    ec2(
                        api,
                        "ModifyVpcAttribute",
                        json!({"VpcId": id, key: {"Value": b}}),
                    )?;
                }
            }
            let groups = ec2(
                api,
                "DescribeSecurityGroups",
                json!({"Filters": [{"Name": "vpc-id", "Values": [id]}, {"Name": "group-name", "Values": ["default"]}]}),
            )?;
            let acls = ec2(
                api,
                "DescribeNetworkAcls",
                json!({"Filters": [{"Name": "vpc-id", "Values": [id]}, {"Name": "default", "Values": ["true"]}]}),
            )?;
            Ok(created(
                id.clone(),
                &[
                    ("VpcId", json!(id)),
                    ("CidrBlock", reply["Vpc"]["CidrBlock"].clone()),
                    (
                        "DefaultSecurityGroup",
                        groups["SecurityGroups"][0]["GroupId"].clone(),
                    ),
                    (
                        "DefaultNetworkAcl",
                        acls["NetworkAcls"][0]["NetworkAclId"].clone(),
                    ),
                ],
            ))
        }
        "AWS::EC2::Subnet" => {
            let mut input = json!({
                "VpcId": need(props, "VpcId")?,
                "CidrBlock": need(props, "CidrBlock")?,
                "TagSpecifications": tag_specs(props, "subnet"),
            });
            if let Some(az) = s(props, "AvailabilityZone") {
                input["AvailabilityZone"] = json!(az);
            }
            let reply = ec2(api, "CreateSubnet", input)?;
            let id = id_at(&reply, "Subnet", "SubnetId")?;
            if let Some(b) = boolean(props, "MapPublicIpOnLaunch") {
                ec2(
                    api,
                    "ModifySubnetAttribute",
                    json!({"SubnetId": id, "MapPublicIpOnLaunch": {"Value": b}}),
                )?;
            }
            let sub = &reply["Subnet"];
            Ok(created(
                id.clone(),
                &[
                    ("SubnetId", json!(id)),
                    ("AvailabilityZone", sub["AvailabilityZone"].clone()),
                    ("CidrBlock", sub["CidrBlock"].clone()),
                    ("VpcId", sub["VpcId"].clone()),
                ],
            ))
        }
        "AWS::EC2::SecurityGroup" => {
            let name = s(props, "GroupName").unwrap_or_else(|| generated_name.to_string());
            let vpc = need(props, "VpcId")?;
            let reply = ec2(
                api,
                "CreateSecurityGroup",
                json!({
                    "GroupName": name,
                    "Description": need(props, "GroupDescription")?,
                    "VpcId": vpc,
                    "TagSpecifications": tag_specs(props, "security-group"),
                }),
            )?;
            let id = reply["GroupId"]
                .as_str()
                .ok_or("the reply carried no GroupId")?
                .to_string();
            let rules = |key: &str| -> Result<Vec<Value>, String> {
                props
                    .get(key)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_object)
                            .map(|r| {
                                permission(
                                    r,
                                    if key == "SecurityGroupIngress" {
                                        "SourceSecurityGroupId"
                                    } else {
                                        "DestinationSecurityGroupId"
                                    },
                                )
                            })
                            .collect()
                    })
                    .unwrap_or(Ok(vec![]))
            };
            let ingress = rules("SecurityGroupIngress")?;
            if !ingress.is_empty() {
                ec2(
                    api,
                    "AuthorizeSecurityGroupIngress",
                    json!({"GroupId": id, "IpPermissions": ingress}),
                )?;
            }
            // Given egress rules replace the default allow-all one.
            if props.contains_key("SecurityGroupEgress") {
                let egress = rules("SecurityGroupEgress")?;
                ec2(
                    api,
                    "RevokeSecurityGroupEgress",
                    json!({"GroupId": id, "IpPermissions": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}),
                )?;
                if !egress.is_empty() {
                    ec2(
                        api,
                        "AuthorizeSecurityGroupEgress",
                        json!({"GroupId": id, "IpPermissions": egress}),
                    )?;
                }
            }
            Ok(created(
                id.clone(),
                &[("GroupId", json!(id)), ("VpcId", json!(vpc))],
            ))
        }
        "AWS::EC2::SecurityGroupIngress" | "AWS::EC2::SecurityGroupEgress" => {
            let ingress = kind.ends_with("Ingress");
            let group = need(props, "GroupId")?;
            let p = permission(
                props,
                if ingress {
                    "SourceSecurityGroupId"
                } else {
                    "DestinationSecurityGroupId"
                },
            )?;
            let op = if ingress {
                "AuthorizeSecurityGroupIngress"
            } else {
                "AuthorizeSecurityGroupEgress"
            };
            let reply = ec2(api, op, json!({"GroupId": group, "IpPermissions": [p]}))?;
            let rule = rule_ids(&reply)
                .first()
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or("the reply carried no rule id")?;
            Ok(created(
                rule.clone(),
                &[("Id", json!(rule)), ("GroupId", json!(group))],
            ))
        }
        "AWS::EC2::InternetGateway" => {
            let reply = ec2(
                api,
                "CreateInternetGateway",
                json!({"TagSpecifications": tag_specs(props, "internet-gateway")}),
            )?;
            let id = id_at(&reply, "InternetGateway", "InternetGatewayId")?;
            Ok(created(id.clone(), &[("InternetGatewayId", json!(id))]))
        }
        "AWS::EC2::VPCGatewayAttachment" => {
            let (vpc, igw) = (need(props, "VpcId")?, need(props, "InternetGatewayId")?);
            ec2(
                api,
                "AttachInternetGateway",
                json!({"VpcId": vpc, "InternetGatewayId": igw}),
            )?;
            Ok(created(
                format!("IGW|{vpc}"),
                &[("VpcId", json!(vpc)), ("InternetGatewayId", json!(igw))],
            ))
        }
        "AWS::EC2::RouteTable" => {
            let reply = ec2(
                api,
                "CreateRouteTable",
                json!({"VpcId": need(props, "VpcId")?, "TagSpecifications": tag_specs(props, "route-table")}),
            )?;
            let id = id_at(&reply, "RouteTable", "RouteTableId")?;
            Ok(created(id.clone(), &[("RouteTableId", json!(id))]))
        }
        "AWS::EC2::Route" => {
            let table = need(props, "RouteTableId")?;
            let dest = need(props, "DestinationCidrBlock")?;
            let mut input = json!({"RouteTableId": table, "DestinationCidrBlock": dest});
            for key in [
                "GatewayId",
                "NatGatewayId",
                "VpcEndpointId",
                "NetworkInterfaceId",
                "VpcPeeringConnectionId",
            ] {
                if let Some(v) = s(props, key) {
                    input[key] = json!(v);
                }
            }
            ec2(api, "CreateRoute", input)?;
            Ok(created(
                format!("{table}|{dest}"),
                &[
                    ("RouteTableId", json!(table)),
                    ("DestinationCidrBlock", json!(dest)),
                ],
            ))
        }
        "AWS::EC2::SubnetRouteTableAssociation" => {
            let reply = ec2(
                api,
                "AssociateRouteTable",
                json!({"SubnetId": need(props, "SubnetId")?, "RouteTableId": need(props, "RouteTableId")?}),
            )?;
            let id = reply["AssociationId"]
                .as_str()
                .ok_or("the reply carried no AssociationId")?
                .to_string();
            Ok(created(id.clone(), &[("Id", json!(id))]))
        }
        "AWS::EC2::VPCEndpoint" => {
            let mut input = json!({
                "VpcId": need(props, "VpcId")?,
                "ServiceName": need(props, "ServiceName")?,
                "VpcEndpointType": s(props, "VpcEndpointType").unwrap_or_else(|| "Gateway".into()),
            });
            for (from, to) in [
                ("RouteTableIds", "RouteTableIds"),
                ("SubnetIds", "SubnetIds"),
                ("SecurityGroupIds", "SecurityGroupIds"),
            ] {
                let v = strings(props, from);
                if !v.is_empty() {
                    input[to] = json!(v);
                }
            }
            if let Some(b) = boolean(props, "PrivateDnsEnabled") {
                input["PrivateDnsEnabled"] = json!(b);
            }
            if let Some(policy) = props.get("PolicyDocument") {
                input["PolicyDocument"] = json!(match policy {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
            }
            let reply = ec2(api, "CreateVpcEndpoint", input)?;
            let id = id_at(&reply, "VpcEndpoint", "VpcEndpointId")?;
            Ok(created(
                id.clone(),
                &[
                    ("Id", json!(id)),
                    (
                        "NetworkInterfaceIds",
                        reply["VpcEndpoint"]["NetworkInterfaceIds"].clone(),
                    ),
                ],
            ))
        }
        other => Err(format!("Cove does not create resources of type {other}")),
    }
}

/// Deletes a created resource.
pub fn delete(
    api: &dyn Api,
    kind: &str,
    physical_id: &str,
    attributes: &BTreeMap<String, Value>,
) -> Result<(), String> {
    let attr = |k: &str| {
        attributes
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let result = match kind {
        "AWS::EC2::VPC" => ec2(api, "DeleteVpc", json!({"VpcId": physical_id})),
        "AWS::EC2::Subnet" => ec2(api, "DeleteSubnet", json!({"SubnetId": physical_id})),
        "AWS::EC2::SecurityGroup" => {
            ec2(api, "DeleteSecurityGroup", json!({"GroupId": physical_id}))
        }
        "AWS::EC2::SecurityGroupIngress" => ec2(
            api,
            "RevokeSecurityGroupIngress",
            json!({"GroupId": attr("GroupId"), "SecurityGroupRuleIds": [physical_id]}),
        ),
        "AWS::EC2::SecurityGroupEgress" => ec2(
            api,
            "RevokeSecurityGroupEgress",
            json!({"GroupId": attr("GroupId"), "SecurityGroupRuleIds": [physical_id]}),
        ),
        "AWS::EC2::InternetGateway" => ec2(
            api,
            "DeleteInternetGateway",
            json!({"InternetGatewayId": physical_id}),
        ),
        "AWS::EC2::VPCGatewayAttachment" => ec2(
            api,
            "DetachInternetGateway",
            json!({"VpcId": attr("VpcId"), "InternetGatewayId": attr("InternetGatewayId")}),
        ),
        "AWS::EC2::RouteTable" => ec2(
            api,
            "DeleteRouteTable",
            json!({"RouteTableId": physical_id}),
        ),
        "AWS::EC2::Route" => ec2(
            api,
            "DeleteRoute",
            json!({"RouteTableId": attr("RouteTableId"), "DestinationCidrBlock": attr("DestinationCidrBlock")}),
        ),
        "AWS::EC2::SubnetRouteTableAssociation" => ec2(
            api,
            "DisassociateRouteTable",
            json!({"AssociationId": physical_id}),
        ),
        "AWS::EC2::VPCEndpoint" => ec2(
            api,
            "DeleteVpcEndpoints",
            json!({"VpcEndpointIds": [physical_id]}),
        ),
        other => return Err(format!("Cove does not delete resources of type {other}")),
    };
    match result {
        Ok(_) => Ok(()),
        // Already gone (deleted by hand): nothing left to delete.
        Err(e) if e.contains("NotFound") => Ok(()),
        Err(e) => Err(e),
    }
}
