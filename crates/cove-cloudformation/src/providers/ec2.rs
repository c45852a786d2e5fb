//! The EC2 VPC family: VPCs, subnets, security groups and their rules,
//! gateways, routes, endpoints, NAT, addresses, network ACLs, flow logs,
//! network interfaces, DHCP options and peering.

use super::{
    boolean, created, document, id_at, need, s, strings, tag_list, Api, Created, Naming, Readiness,
};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

fn ec2(api: &dyn Api, operation: &str, input: Value) -> Result<Value, String> {
    super::call(api, "ec2", operation, input)
}

/// `TagSpecifications` for a create call: CloudFormation's `Tags` and the
/// stack's own `aws:cloudformation:*` tags, as on AWS (they also find a
/// resource whose create was not recorded before a crash).
fn tag_specs(props: &Map<String, Value>, resource_type: &str, naming: &Naming) -> Value {
    let mut tags = tag_list(props);
    tags.extend(naming.stack_tags());
    json!([{"ResourceType": resource_type, "Tags": tags}])
}

/// One security group rule of CloudFormation's shape as an `IpPermission`.
fn permission(rule: &Map<String, Value>, peer_group_key: &str) -> Result<Value, String> {
    let mut p = json!({"IpProtocol": need(rule, "IpProtocol")?});
    for key in ["FromPort", "ToPort"] {
        if let Some(port) = s(rule, key) {
            p[key] = json!(port);
        }
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

fn peer_key(ingress: bool) -> &'static str {
    if ingress {
        "SourceSecurityGroupId"
    } else {
        "DestinationSecurityGroupId"
    }
}

/// A security group's inline `SecurityGroupIngress` or `SecurityGroupEgress`.
fn group_rules(props: &Map<String, Value>, key: &str) -> Result<Vec<Value>, String> {
    props
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(|r| permission(r, peer_key(key == "SecurityGroupIngress")))
        .collect()
}

/// What a security group allows out when its template gives no egress.
fn allow_all_out() -> Value {
    json!([{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
}

fn rule_ids(reply: &Value) -> Vec<Value> {
    reply["SecurityGroupRules"]
        .as_array()
        .map(|a| a.iter().map(|r| r["SecurityGroupRuleId"].clone()).collect())
        .unwrap_or_default()
}

/// `CreateRoute`'s (and `ReplaceRoute`'s) input.
fn route_input(props: &Map<String, Value>) -> Result<Value, String> {
    let mut input = json!({
        "RouteTableId": need(props, "RouteTableId")?,
        "DestinationCidrBlock": need(props, "DestinationCidrBlock")?,
    });
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
    Ok(input)
}

/// `CreateNetworkAclEntry`'s (and `ReplaceNetworkAclEntry`'s) input.
fn acl_entry_input(props: &Map<String, Value>) -> Result<Value, String> {
    let mut input = json!({
        "NetworkAclId": need(props, "NetworkAclId")?,
        "RuleNumber": need(props, "RuleNumber")?,
        "Protocol": need(props, "Protocol")?,
        "RuleAction": need(props, "RuleAction")?,
        "Egress": boolean(props, "Egress").unwrap_or(false),
    });
    for key in ["CidrBlock", "Ipv6CidrBlock"] {
        if let Some(v) = s(props, key) {
            input[key] = json!(v);
        }
    }
    if let Some(range) = props.get("PortRange").and_then(Value::as_object) {
        input["PortRange"] = json!({"From": s(range, "From"), "To": s(range, "To")});
    }
    if let Some(icmp) = props.get("Icmp").and_then(Value::as_object) {
        input["IcmpTypeCode"] = json!({"Type": s(icmp, "Type"), "Code": s(icmp, "Code")});
    }
    Ok(input)
}

/// The network ACL a subnet is associated with, and the association's id.
fn acl_association_of(api: &dyn Api, subnet: &str) -> Result<(String, String), String> {
    let acls = ec2(
        api,
        "DescribeNetworkAcls",
        json!({"Filters": [{"Name": "association.subnet-id", "Values": [subnet]}]}),
    )?;
    let acl = &acls["NetworkAcls"][0];
    let association = acl["Associations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["SubnetId"] == subnet)
        .and_then(|a| a["NetworkAclAssociationId"].as_str())
        .ok_or_else(|| format!("subnet {subnet} has no network ACL association"))?;
    Ok((
        acl["NetworkAclId"].as_str().unwrap_or_default().to_string(),
        association.to_string(),
    ))
}

/// Creates a resource of `kind` from its evaluated properties.
pub fn create(
    api: &dyn Api,
    kind: &str,
    props: &Map<String, Value>,
    naming: &Naming,
) -> Result<Created, String> {
    match kind {
        "AWS::EC2::VPC" => {
            let mut input = json!({"CidrBlock": need(props, "CidrBlock")?, "TagSpecifications": tag_specs(props, "vpc", naming)});
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
                "TagSpecifications": tag_specs(props, "subnet", naming),
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
            let name = s(props, "GroupName").unwrap_or_else(|| naming.generate(255, false));
            let vpc = need(props, "VpcId")?;
            let reply = ec2(
                api,
                "CreateSecurityGroup",
                json!({
                    "GroupName": name,
                    "Description": need(props, "GroupDescription")?,
                    "VpcId": vpc,
                    "TagSpecifications": tag_specs(props, "security-group", naming),
                }),
            )?;
            let id = reply["GroupId"]
                .as_str()
                .ok_or("the reply carried no GroupId")?
                .to_string();
            let rules = |key: &str| group_rules(props, key);
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
                    json!({"GroupId": id, "IpPermissions": allow_all_out()}),
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
                &[
                    ("GroupId", json!(id)),
                    ("Id", json!(id)),
                    ("VpcId", json!(vpc)),
                ],
            ))
        }
        "AWS::EC2::SecurityGroupIngress" | "AWS::EC2::SecurityGroupEgress" => {
            let ingress = kind.ends_with("Ingress");
            let group = need(props, "GroupId")?;
            let p = permission(props, peer_key(ingress))?;
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
                json!({"TagSpecifications": tag_specs(props, "internet-gateway", naming)}),
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
                json!({"VpcId": need(props, "VpcId")?, "TagSpecifications": tag_specs(props, "route-table", naming)}),
            )?;
            let id = id_at(&reply, "RouteTable", "RouteTableId")?;
            Ok(created(id.clone(), &[("RouteTableId", json!(id))]))
        }
        "AWS::EC2::Route" => {
            let table = need(props, "RouteTableId")?;
            let dest = need(props, "DestinationCidrBlock")?;
            ec2(api, "CreateRoute", route_input(props)?)?;
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
                "TagSpecifications": tag_specs(props, "vpc-endpoint", naming),
            });
            for key in ["RouteTableIds", "SubnetIds", "SecurityGroupIds"] {
                let v = strings(props, key);
                if !v.is_empty() {
                    input[key] = json!(v);
                }
            }
            if let Some(b) = boolean(props, "PrivateDnsEnabled") {
                input["PrivateDnsEnabled"] = json!(b);
            }
            if props.contains_key("PolicyDocument") {
                input["PolicyDocument"] = json!(document(props, "PolicyDocument")?);
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
        "AWS::EC2::EIP" => {
            let reply = ec2(
                api,
                "AllocateAddress",
                json!({"Domain": s(props, "Domain").unwrap_or_else(|| "vpc".into()), "TagSpecifications": tag_specs(props, "elastic-ip", naming)}),
            )?;
            let ip = reply["PublicIp"]
                .as_str()
                .ok_or("the reply carried no PublicIp")?
                .to_string();
            Ok(created(
                ip.clone(),
                &[
                    ("PublicIp", json!(ip)),
                    ("AllocationId", reply["AllocationId"].clone()),
                ],
            ))
        }
        "AWS::EC2::NatGateway" => {
            let mut input = json!({"SubnetId": need(props, "SubnetId")?, "TagSpecifications": tag_specs(props, "natgateway", naming)});
            for key in ["AllocationId", "ConnectivityType", "PrivateIpAddress"] {
                if let Some(v) = s(props, key) {
                    input[key] = json!(v);
                }
            }
            let reply = ec2(api, "CreateNatGateway", input)?;
            let id = id_at(&reply, "NatGateway", "NatGatewayId")?;
            Ok(created(id.clone(), &[("NatGatewayId", json!(id))]))
        }
        "AWS::EC2::NetworkAcl" => {
            let reply = ec2(
                api,
                "CreateNetworkAcl",
                json!({"VpcId": need(props, "VpcId")?, "TagSpecifications": tag_specs(props, "network-acl", naming)}),
            )?;
            let id = id_at(&reply, "NetworkAcl", "NetworkAclId")?;
            Ok(created(id.clone(), &[("Id", json!(id))]))
        }
        "AWS::EC2::NetworkAclEntry" => {
            let acl = need(props, "NetworkAclId")?;
            let number = need(props, "RuleNumber")?;
            let egress = boolean(props, "Egress").unwrap_or(false);
            ec2(api, "CreateNetworkAclEntry", acl_entry_input(props)?)?;
            let id = format!("{acl}|{number}|{egress}");
            Ok(created(
                id.clone(),
                &[
                    ("Id", json!(id)),
                    ("NetworkAclId", json!(acl)),
                    ("RuleNumber", json!(number)),
                    ("Egress", json!(egress)),
                ],
            ))
        }
        "AWS::EC2::SubnetNetworkAclAssociation" => {
            let subnet = need(props, "SubnetId")?;
            let (previous, association) = acl_association_of(api, &subnet)?;
            let reply = ec2(
                api,
                "ReplaceNetworkAclAssociation",
                json!({"AssociationId": association, "NetworkAclId": need(props, "NetworkAclId")?}),
            )?;
            let id = reply["NewAssociationId"]
                .as_str()
                .ok_or("the reply carried no NewAssociationId")?
                .to_string();
            Ok(created(
                id.clone(),
                &[
                    ("AssociationId", json!(id)),
                    ("SubnetId", json!(subnet)),
                    ("PreviousNetworkAclId", json!(previous)),
                ],
            ))
        }
        "AWS::EC2::FlowLog" => {
            let mut input = json!({
                "ResourceIds": [need(props, "ResourceId")?],
                "ResourceType": need(props, "ResourceType")?,
                "TagSpecifications": tag_specs(props, "vpc-flow-log", naming),
            });
            for key in [
                "TrafficType",
                "LogDestinationType",
                "LogDestination",
                "LogGroupName",
                "DeliverLogsPermissionArn",
                "LogFormat",
                "MaxAggregationInterval",
            ] {
                if let Some(v) = s(props, key) {
                    input[key] = json!(v);
                }
            }
            let reply = ec2(api, "CreateFlowLogs", input)?;
            // A refused resource comes back in the answer, not as an error.
            if let Some(refused) = reply["Unsuccessful"].as_array().and_then(|u| u.first()) {
                let error = cove_model::AwsError::client(
                    refused["Error"]["Code"].as_str().unwrap_or_default(),
                    refused["Error"]["Message"].as_str().unwrap_or_default(),
                );
                return Err(super::failed("ec2", &error));
            }
            let id = reply["FlowLogIds"][0]
                .as_str()
                .ok_or("the reply carried no flow log id")?
                .to_string();
            Ok(created(id.clone(), &[("Id", json!(id))]))
        }
        "AWS::EC2::NetworkInterface" => {
            let mut input = json!({"SubnetId": need(props, "SubnetId")?, "TagSpecifications": tag_specs(props, "network-interface", naming)});
            for key in ["Description", "PrivateIpAddress"] {
                if let Some(v) = s(props, key) {
                    input[key] = json!(v);
                }
            }
            let groups = strings(props, "GroupSet");
            if !groups.is_empty() {
                input["Groups"] = json!(groups);
            }
            let reply = ec2(api, "CreateNetworkInterface", input)?;
            let id = id_at(&reply, "NetworkInterface", "NetworkInterfaceId")?;
            Ok(created(
                id.clone(),
                &[
                    ("Id", json!(id)),
                    (
                        "PrimaryPrivateIpAddress",
                        reply["NetworkInterface"]["PrivateIpAddress"].clone(),
                    ),
                ],
            ))
        }
        "AWS::EC2::DHCPOptions" => {
            let mut configurations = Vec::new();
            for (prop, key) in [
                ("DomainName", "domain-name"),
                ("DomainNameServers", "domain-name-servers"),
                ("NtpServers", "ntp-servers"),
                ("NetbiosNameServers", "netbios-name-servers"),
                ("NetbiosNodeType", "netbios-node-type"),
            ] {
                let values = match props.get(prop) {
                    Some(Value::Array(_)) => strings(props, prop),
                    Some(_) => s(props, prop).into_iter().collect(),
                    None => continue,
                };
                configurations.push(json!({"Key": key, "Values": values}));
            }
            let reply = ec2(
                api,
                "CreateDhcpOptions",
                json!({"DhcpConfigurations": configurations, "TagSpecifications": tag_specs(props, "dhcp-options", naming)}),
            )?;
            let id = id_at(&reply, "DhcpOptions", "DhcpOptionsId")?;
            Ok(created(id.clone(), &[("DhcpOptionsId", json!(id))]))
        }
        "AWS::EC2::VPCDHCPOptionsAssociation" => {
            let vpc = need(props, "VpcId")?;
            let options = need(props, "DhcpOptionsId")?;
            ec2(
                api,
                "AssociateDhcpOptions",
                json!({"VpcId": vpc, "DhcpOptionsId": options}),
            )?;
            Ok(created(
                format!("{options}|{vpc}"),
                &[("VpcId", json!(vpc))],
            ))
        }
        "AWS::EC2::VPCPeeringConnection" => {
            let mut input = json!({
                "VpcId": need(props, "VpcId")?,
                "PeerVpcId": need(props, "PeerVpcId")?,
                "TagSpecifications": tag_specs(props, "vpc-peering-connection", naming),
            });
            for key in ["PeerOwnerId", "PeerRegion"] {
                if let Some(v) = s(props, key) {
                    input[key] = json!(v);
                }
            }
            let reply = ec2(api, "CreateVpcPeeringConnection", input)?;
            let id = id_at(&reply, "VpcPeeringConnection", "VpcPeeringConnectionId")?;
            // Within one account CloudFormation accepts the request itself.
            if s(props, "PeerRoleArn").is_none() && s(props, "PeerOwnerId").is_none() {
                ec2(
                    api,
                    "AcceptVpcPeeringConnection",
                    json!({"VpcPeeringConnectionId": id}),
                )?;
            }
            Ok(created(id.clone(), &[("Id", json!(id))]))
        }
        other => Err(format!("Cove does not create resources of type {other}")),
    }
}

/// A NAT gateway is ready once `available`.
pub fn nat_gateway_readiness(api: &dyn Api, id: &str) -> Result<Readiness, String> {
    let reply = ec2(api, "DescribeNatGateways", json!({"NatGatewayIds": [id]}))?;
    let gateway = &reply["NatGateways"][0];
    match gateway["State"].as_str() {
        Some("available") => Ok(Readiness::Ready),
        Some("pending") => Ok(Readiness::Pending),
        state => Err(format!(
            "NAT gateway {id} went into state {}: {}",
            state.unwrap_or("unknown"),
            gateway["FailureMessage"].as_str().unwrap_or_default()
        )),
    }
}

/// Deletes a created resource.
pub fn delete(
    api: &dyn Api,
    kind: &str,
    physical_id: &str,
    attributes: &BTreeMap<String, Value>,
) -> Result<(), String> {
    let attr = |k: &str| attributes.get(k).cloned().unwrap_or(Value::Null);
    let one = |op: &str, input: Value| ec2(api, op, input).map(|_| ());
    match kind {
        "AWS::EC2::VPC" => one("DeleteVpc", json!({"VpcId": physical_id})),
        "AWS::EC2::Subnet" => one("DeleteSubnet", json!({"SubnetId": physical_id})),
        "AWS::EC2::SecurityGroup" => one("DeleteSecurityGroup", json!({"GroupId": physical_id})),
        "AWS::EC2::SecurityGroupIngress" => one(
            "RevokeSecurityGroupIngress",
            json!({"GroupId": attr("GroupId"), "SecurityGroupRuleIds": [physical_id]}),
        ),
        "AWS::EC2::SecurityGroupEgress" => one(
            "RevokeSecurityGroupEgress",
            json!({"GroupId": attr("GroupId"), "SecurityGroupRuleIds": [physical_id]}),
        ),
        "AWS::EC2::InternetGateway" => one(
            "DeleteInternetGateway",
            json!({"InternetGatewayId": physical_id}),
        ),
        "AWS::EC2::VPCGatewayAttachment" => one(
            "DetachInternetGateway",
            json!({"VpcId": attr("VpcId"), "InternetGatewayId": attr("InternetGatewayId")}),
        ),
        "AWS::EC2::RouteTable" => one("DeleteRouteTable", json!({"RouteTableId": physical_id})),
        "AWS::EC2::Route" => one(
            "DeleteRoute",
            json!({"RouteTableId": attr("RouteTableId"), "DestinationCidrBlock": attr("DestinationCidrBlock")}),
        ),
        "AWS::EC2::SubnetRouteTableAssociation" => one(
            "DisassociateRouteTable",
            json!({"AssociationId": physical_id}),
        ),
        "AWS::EC2::VPCEndpoint" => one(
            "DeleteVpcEndpoints",
            json!({"VpcEndpointIds": [physical_id]}),
        ),
        "AWS::EC2::EIP" => one(
            "ReleaseAddress",
            json!({"AllocationId": attr("AllocationId")}),
        ),
        "AWS::EC2::NatGateway" => {
            let reply = ec2(
                api,
                "DescribeNatGateways",
                json!({"NatGatewayIds": [physical_id]}),
            )?;
            match reply["NatGateways"][0]["State"].as_str() {
                None | Some("deleted") => Ok(()),
                Some("deleting") => Err(format!(
                    "NAT gateway {physical_id} is still being deleted (DependencyViolation)"
                )),
                Some(_) => {
                    one("DeleteNatGateway", json!({"NatGatewayId": physical_id}))?;
                    // Its address and subnet are free only once it is gone.
                    Err(format!(
                        "NAT gateway {physical_id} is being deleted (DependencyViolation)"
                    ))
                }
            }
        }
        "AWS::EC2::NetworkAcl" => one("DeleteNetworkAcl", json!({"NetworkAclId": physical_id})),
        "AWS::EC2::NetworkAclEntry" => one(
            "DeleteNetworkAclEntry",
            json!({"NetworkAclId": attr("NetworkAclId"), "RuleNumber": attr("RuleNumber"), "Egress": attr("Egress")}),
        ),
        "AWS::EC2::SubnetNetworkAclAssociation" => {
            // The subnet goes back to its VPC's default ACL, as on AWS.
            let subnet = attr("SubnetId");
            let subnet = subnet.as_str().unwrap_or_default();
            let (_, association) = acl_association_of(api, subnet)?;
            let subnets = ec2(api, "DescribeSubnets", json!({"SubnetIds": [subnet]}))?;
            let vpc = subnets["Subnets"][0]["VpcId"].clone();
            let acls = ec2(
                api,
                "DescribeNetworkAcls",
                json!({"Filters": [{"Name": "vpc-id", "Values": [vpc]}, {"Name": "default", "Values": ["true"]}]}),
            )?;
            one(
                "ReplaceNetworkAclAssociation",
                json!({"AssociationId": association, "NetworkAclId": acls["NetworkAcls"][0]["NetworkAclId"]}),
            )
        }
        "AWS::EC2::FlowLog" => one("DeleteFlowLogs", json!({"FlowLogIds": [physical_id]})),
        "AWS::EC2::NetworkInterface" => one(
            "DeleteNetworkInterface",
            json!({"NetworkInterfaceId": physical_id}),
        ),
        "AWS::EC2::DHCPOptions" => one("DeleteDhcpOptions", json!({"DhcpOptionsId": physical_id})),
        "AWS::EC2::VPCDHCPOptionsAssociation" => one(
            "AssociateDhcpOptions",
            json!({"VpcId": attr("VpcId"), "DhcpOptionsId": "default"}),
        ),
        "AWS::EC2::VPCPeeringConnection" => one(
            "DeleteVpcPeeringConnection",
            json!({"VpcPeeringConnectionId": physical_id}),
        ),
        other => Err(format!("Cove does not delete resources of type {other}")),
    }
}

/// The properties of `kind` an update changes in place; any other change
/// replaces the resource (as CloudFormation's resource reference says).
pub fn updatable(kind: &str) -> &'static [&'static str] {
    match kind {
        "AWS::EC2::VPC" => &["EnableDnsSupport", "EnableDnsHostnames", "Tags"],
        "AWS::EC2::Subnet" => &["MapPublicIpOnLaunch", "Tags"],
        "AWS::EC2::SecurityGroup" => &["SecurityGroupIngress", "SecurityGroupEgress", "Tags"],
        "AWS::EC2::VPCEndpoint" => &[
            "Tags",
            "RouteTableIds",
            "SubnetIds",
            "SecurityGroupIds",
            "PolicyDocument",
            "PrivateDnsEnabled",
        ],
        "AWS::EC2::Route" => &[
            "GatewayId",
            "NatGatewayId",
            "VpcEndpointId",
            "NetworkInterfaceId",
            "VpcPeeringConnectionId",
        ],
        "AWS::EC2::NetworkAclEntry" => {
            &["Protocol", "RuleAction", "CidrBlock", "PortRange", "Icmp"]
        }
        "AWS::EC2::InternetGateway"
        | "AWS::EC2::RouteTable"
        | "AWS::EC2::NatGateway"
        | "AWS::EC2::NetworkAcl"
        | "AWS::EC2::EIP"
        | "AWS::EC2::FlowLog"
        | "AWS::EC2::NetworkInterface"
        | "AWS::EC2::DHCPOptions"
        | "AWS::EC2::VPCPeeringConnection" => &["Tags"],
        _ => &[],
    }
}

/// The id EC2's tag calls take for a resource.
fn tag_target(kind: &str, physical_id: &str, attributes: &BTreeMap<String, Value>) -> String {
    match kind {
        "AWS::EC2::EIP" => attributes
            .get("AllocationId")
            .and_then(Value::as_str)
            .unwrap_or(physical_id)
            .to_string(),
        _ => physical_id.to_string(),
    }
}

/// The ids in `new`'s list `key` that `old`'s lacks.
fn added(old: &Map<String, Value>, new: &Map<String, Value>, key: &str) -> Vec<String> {
    let before = strings(old, key);
    strings(new, key)
        .into_iter()
        .filter(|x| !before.contains(x))
        .collect()
}

/// Updates `kind` in place; `changed` are the properties that differ, all
/// of them [`updatable`].
pub fn update(
    api: &dyn Api,
    kind: &str,
    physical_id: &str,
    attributes: &BTreeMap<String, Value>,
    (old, new): (&Map<String, Value>, &Map<String, Value>),
    changed: &[String],
) -> Result<(), String> {
    for key in changed {
        match (kind, key.as_str()) {
            (_, "Tags") => {
                let target = tag_target(kind, physical_id, attributes);
                let keys: Vec<Value> = tag_list(old)
                    .into_iter()
                    .map(|t| json!({"Key": t["Key"]}))
                    .collect();
                if !keys.is_empty() {
                    ec2(
                        api,
                        "DeleteTags",
                        json!({"Resources": [target], "Tags": keys}),
                    )?;
                }
                let tags = tag_list(new);
                if !tags.is_empty() {
                    ec2(
                        api,
                        "CreateTags",
                        json!({"Resources": [target], "Tags": tags}),
                    )?;
                }
            }
            ("AWS::EC2::VPC", attribute) => {
                ec2(
                    api,
                    "ModifyVpcAttribute",
                    json!({"VpcId": physical_id, attribute: {"Value": boolean(new, attribute).unwrap_or(attribute == "EnableDnsSupport")}}),
                )?;
            }
            ("AWS::EC2::Subnet", _) => {
                ec2(
                    api,
                    "ModifySubnetAttribute",
                    json!({"SubnetId": physical_id, "MapPublicIpOnLaunch": {"Value": boolean(new, "MapPublicIpOnLaunch").unwrap_or(false)}}),
                )?;
            }
            ("AWS::EC2::SecurityGroup", direction) => {
                let (revoke, authorize) = if direction == "SecurityGroupIngress" {
                    (
                        "RevokeSecurityGroupIngress",
                        "AuthorizeSecurityGroupIngress",
                    )
                } else {
                    ("RevokeSecurityGroupEgress", "AuthorizeSecurityGroupEgress")
                };
                // No egress in the template is the default allow-all rule.
                let rules = |props: &Map<String, Value>| -> Result<Value, String> {
                    match props.contains_key(direction) || direction == "SecurityGroupIngress" {
                        true => group_rules(props, direction).map(Value::from),
                        false => Ok(allow_all_out()),
                    }
                };
                let (before, after) = (rules(old)?, rules(new)?);
                let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
                let (before, after) = (list(&before), list(&after));
                // New rules first, then the old ones go: a flow both allow
                // is never cut.
                let gained: Vec<&Value> = after.iter().filter(|r| !before.contains(r)).collect();
                let lost: Vec<&Value> = before.iter().filter(|r| !after.contains(r)).collect();
                if !gained.is_empty() {
                    ec2(
                        api,
                        authorize,
                        json!({"GroupId": physical_id, "IpPermissions": gained}),
                    )?;
                }
                if !lost.is_empty() {
                    ec2(
                        api,
                        revoke,
                        json!({"GroupId": physical_id, "IpPermissions": lost}),
                    )?;
                }
            }
            ("AWS::EC2::VPCEndpoint", property) => {
                let mut input = json!({"VpcEndpointId": physical_id});
                match property {
                    "PolicyDocument" if new.contains_key("PolicyDocument") => {
                        input["PolicyDocument"] = json!(document(new, "PolicyDocument")?);
                    }
                    "PolicyDocument" => input["ResetPolicy"] = json!(true),
                    "PrivateDnsEnabled" => {
                        input["PrivateDnsEnabled"] =
                            json!(boolean(new, "PrivateDnsEnabled").unwrap_or(false));
                    }
                    list => {
                        let stem = list.trim_end_matches('s');
                        input[format!("Add{stem}s")] = json!(added(old, new, list));
                        input[format!("Remove{stem}s")] = json!(added(new, old, list));
                    }
                }
                ec2(api, "ModifyVpcEndpoint", input)?;
            }
            ("AWS::EC2::Route", _) => {
                ec2(api, "ReplaceRoute", route_input(new)?)?;
                // One call replaces the whole target.
                break;
            }
            ("AWS::EC2::NetworkAclEntry", _) => {
                ec2(api, "ReplaceNetworkAclEntry", acl_entry_input(new)?)?;
                break;
            }
            (kind, key) => return Err(format!("Cove cannot update {key} of {kind} in place")),
        }
    }
    Ok(())
}

/// EC2's resource type (as `DescribeTags` names it) of the taggable kinds.
fn tagged_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "AWS::EC2::VPC" => "vpc",
        "AWS::EC2::Subnet" => "subnet",
        "AWS::EC2::SecurityGroup" => "security-group",
        "AWS::EC2::InternetGateway" => "internet-gateway",
        "AWS::EC2::RouteTable" => "route-table",
        "AWS::EC2::VPCEndpoint" => "vpc-endpoint",
        "AWS::EC2::EIP" => "elastic-ip",
        "AWS::EC2::NatGateway" => "natgateway",
        "AWS::EC2::NetworkAcl" => "network-acl",
        "AWS::EC2::FlowLog" => "vpc-flow-log",
        "AWS::EC2::NetworkInterface" => "network-interface",
        "AWS::EC2::DHCPOptions" => "dhcp-options",
        "AWS::EC2::VPCPeeringConnection" => "vpc-peering-connection",
        _ => return None,
    })
}

/// The ids of the resources tagged `key` = `value`.
fn tagged(api: &dyn Api, key: &str, value: &str) -> Result<Vec<(String, String)>, String> {
    let reply = api
        .lookup(
            "ec2",
            "DescribeTags",
            json!({"Filters": [{"Name": "key", "Values": [key]}, {"Name": "value", "Values": [value]}]}),
        )
        .map_err(|e| super::failed("ec2", &e))?;
    Ok(reply["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some((
                t["ResourceId"].as_str()?.to_string(),
                t["ResourceType"].as_str()?.to_string(),
            ))
        })
        .collect())
}

/// Deletes what a create of this logical id made that its stack does not
/// know (`known` physical ids): a create whose answer was lost when Cove
/// stopped, found by the stack's tags, so that making it again leaves no
/// copy behind.
pub fn clear_orphans(
    api: &dyn Api,
    kind: &str,
    naming: &Naming,
    known: &std::collections::BTreeSet<String>,
) -> Result<(), String> {
    let Some(resource_type) = tagged_type(kind) else {
        return Ok(());
    };
    let of_stack: Vec<String> = tagged(api, "aws:cloudformation:stack-id", naming.stack_id)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for (id, ty) in tagged(api, "aws:cloudformation:logical-id", naming.logical_id)? {
        if ty != resource_type || !of_stack.contains(&id) || known.contains(&id) {
            continue;
        }
        tracing::info!(resource = %id, logical_id = naming.logical_id, stack = naming.stack_id, "deleting a resource whose create was not recorded");
        let (physical, attributes) = match kind {
            "AWS::EC2::EIP" => (
                String::new(),
                [("AllocationId".to_string(), json!(id))].into(),
            ),
            _ => (id.clone(), BTreeMap::new()),
        };
        match delete(api, kind, &physical, &attributes) {
            Err(e) if !super::is_busy(&e) => return Err(e),
            _ => {}
        }
    }
    Ok(())
}
