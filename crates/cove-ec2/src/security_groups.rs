//! Security groups and their rules: the `default` group every VPC gets,
//! rule normalisation (protocol names and numbers, port ranges, ICMP
//! type/code), one `sgr-` rule per peer as AWS numbers them, duplicate and
//! limit errors, and the two views AWS gives of the same rules
//! (`IpPermissions` grouped by port range, and `SecurityGroupRules`).

use crate::common::*;
use cove_model::cidr::Cidr;
use cove_model::filter::FieldValues;
use cove_model::ids::new_id;
use cove_model::protocol::Protocol;
use cove_model::vpc::*;
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_shapes::ec2::{
    AuthorizeSecurityGroupEgressRequest, AuthorizeSecurityGroupIngressRequest,
    CreateSecurityGroupRequest, DeleteSecurityGroupRequest, DescribeSecurityGroupReferencesRequest,
    DescribeSecurityGroupRulesRequest, DescribeSecurityGroupsRequest,
    DescribeStaleSecurityGroupsRequest, IpPermission, IpRange, ModifySecurityGroupRulesRequest,
    PrefixListId, RevokeSecurityGroupEgressRequest, RevokeSecurityGroupIngressRequest,
    SecurityGroupRuleRequest, TagSpecification, UpdateSecurityGroupRuleDescriptionsEgressRequest,
    UpdateSecurityGroupRuleDescriptionsIngressRequest, UserIdGroupPair,
};
use cove_store::Tx;
use serde_json::{json, Value};

/// AWS's default quota: inbound and outbound rules per group, counted separately.
pub const MAX_RULES_PER_DIRECTION: usize = 60;

pub(crate) fn all_traffic_rule(peer: SgPeer) -> SgRule {
    SgRule {
        id: new_id("sgr"),
        protocol: Protocol::All,
        from_port: None,
        to_port: None,
        peer,
        description: None,
    }
}

/// The `default` group: all traffic from members of itself, all traffic out.
pub fn new_default_group(tx: &mut Tx, vpc: &Vpc, account: &str) {
    let id = new_id("sg");
    let group = SecurityGroup {
        id: id.clone(),
        region: vpc.region.clone(),
        vpc_id: vpc.id.clone(),
        name: "default".into(),
        description: "default VPC security group".into(),
        ingress: vec![all_traffic_rule(SgPeer::Group {
            group_id: id,
            user_id: account.to_string(),
        })],
        egress: vec![all_traffic_rule(SgPeer::Cidr { cidr: Cidr::ANY })],
    };
    tx.put(group);
}

pub fn group_arn(region: &str, account: &str, id: &str) -> String {
    format!("arn:aws:ec2:{region}:{account}:security-group/{id}")
}

fn rule_arn(region: &str, account: &str, id: &str) -> String {
    format!("arn:aws:ec2:{region}:{account}:security-group-rule/{id}")
}

fn check_text(what: &str, s: &str) -> AwsResult<()> {
    // AWS allows a-z, A-Z, 0-9, spaces, and ._-:/()#,@[]+=&;{}!$* in names and descriptions.
    let ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " ._-:/()#,@[]+=&;{}!$*".contains(c));
    if !ok || s.chars().count() > 255 {
        return Err(AwsError::invalid_parameter_value(format!(
            "Value ({s}) for parameter {what} is invalid. Character sets beyond ASCII are not supported."
        )));
    }
    Ok(())
}

pub fn create_security_group(r: &Req, q: &CreateSecurityGroupRequest) -> AwsResult<Value> {
    let name = need(&q.group_name, "GroupName")?.to_string();
    let description = need(&q.description, "GroupDescription")?.to_string();
    if name.is_empty() {
        return Err(AwsError::invalid_parameter_value(
            "Value () for parameter groupName is invalid. The value cannot be empty",
        ));
    }
    check_text("groupName", &name)?;
    check_text("GroupDescription", &description)?;
    if name.starts_with("sg-") {
        return Err(AwsError::invalid_parameter_value(
            "Group names may not be in the format sg-*.",
        ));
    }
    let tags = tag_specs(r, &q.tag_specifications, "security-group")?;
    let (region, account) = (r.region(), r.account());
    r.write(|tx| {
        let vpc_id = vpc_or_default(r, q.vpc_id.as_deref(), &tx.world)?;
        if tx
            .world
            .security_groups
            .values()
            .any(|g| g.vpc_id == vpc_id && g.name == name)
        {
            return Err(AwsError::client(
                "InvalidGroup.Duplicate",
                format!("The security group '{name}' already exists for VPC '{vpc_id}'"),
            ));
        }
        let id = new_id("sg");
        tx.put(SecurityGroup {
            id: id.clone(),
            region: region.to_string(),
            vpc_id,
            name: name.clone(),
            description: description.clone(),
            ingress: vec![],
            egress: vec![all_traffic_rule(SgPeer::Cidr { cidr: Cidr::ANY })],
        });
        let mut out = json!({"GroupId": id, "SecurityGroupArn": group_arn(region, account, &id)});
        if !tags.is_empty() {
            tx.set_tags(&id, tags.clone());
            out["Tags"] = tag_list(&tags);
        }
        Ok(out)
    })
}

/// Finds the group named by `GroupId`, or by `GroupName` in the default VPC.
fn target_group(
    r: &Req,
    group_id: Option<&str>,
    group_name: Option<&str>,
    world: &World,
) -> AwsResult<String> {
    match (group_id, group_name) {
        (Some(id), _) => {
            find::<SecurityGroup>(world, id, r.region(), |g| &g.region, group_not_found)
                .map(|g| g.id.clone())
        }
        (None, Some(name)) => {
            let vpc = vpc_or_default(r, None, world).ok();
            world
                .security_groups
                .values()
                .find(|g| {
                    g.region == r.region() && g.name == name && Some(&g.vpc_id) == vpc.as_ref()
                })
                .map(|g| g.id.clone())
                .ok_or_else(|| {
                    AwsError::client(
                        "InvalidGroup.NotFound",
                        format!(
                            "The security group '{name}' does not exist in default VPC '{}'",
                            vpc.unwrap_or_default()
                        ),
                    )
                })
        }
        (None, None) => Err(AwsError::missing_parameter("GroupId")),
    }
}

pub fn delete_security_group(r: &Req, q: &DeleteSecurityGroupRequest) -> AwsResult<Value> {
    r.write(|tx| {
        let id = target_group(r, q.group_id.as_deref(), q.group_name.as_deref(), &tx.world)?;
        let group = tx
            .world
            .security_groups
            .get(&id)
            .map(|g| (**g).clone())
            .expect("found above");
        if group.name == "default" {
            return Err(AwsError::client(
                "CannotDelete",
                format!(
                    "the specified group: \"{id}\" name: \"default\" cannot be deleted by a user"
                ),
            ));
        }
        let used_by_eni = tx
            .world
            .network_interfaces
            .values()
            .any(|e| e.group_ids.contains(&id));
        let used_by_endpoint = tx
            .world
            .vpc_endpoints
            .values()
            .any(|e| e.group_ids.contains(&id));
        let referenced = tx.world.security_groups.values().any(|g| {
            g.id != id
                && g.ingress.iter().chain(&g.egress).any(
                    |rule| matches!(&rule.peer, SgPeer::Group { group_id, .. } if *group_id == id),
                )
        });
        if used_by_eni || used_by_endpoint || referenced {
            return Err(AwsError::dependency_violation(format!(
                "resource {id} has a dependent object"
            )));
        }
        tx.delete::<SecurityGroup>(&id);
        Ok(json!({"Return": true, "GroupId": id}))
    })
}

/// Canonical protocol: names for tcp/udp/icmp/icmpv6 (whatever the client
/// sent, name or number), `-1` for all, other numbers as they are.
pub fn normalize_protocol(p: &str) -> AwsResult<Protocol> {
    Protocol::from_request(p).ok_or_else(|| {
        AwsError::invalid_parameter_value(format!(
            "Invalid value '{p}' for IP protocol. Unknown protocol."
        ))
    })
}

/// Normalises the port part of a permission. TCP/UDP need a range within
/// 0..65535; ICMP takes type/code with -1 meaning all; every other protocol
/// covers all ports and AWS drops the range.
pub fn normalize_ports(
    protocol: Protocol,
    from: Option<i64>,
    to: Option<i64>,
) -> AwsResult<(Option<i64>, Option<i64>)> {
    match protocol {
        Protocol::Tcp | Protocol::Udp => {
            let (Some(f), Some(t)) = (from, to) else {
                return Err(AwsError::invalid_parameter_value(
                    "Invalid value 'Must specify both from and to ports with TCP/UDP.' for portRange",
                ));
            };
            if f == -1 && t == -1 {
                return Ok((Some(0), Some(65535)));
            }
            if !(0..=65535).contains(&f) || !(0..=65535).contains(&t) || f > t {
                return Err(AwsError::invalid_parameter_value(format!(
                    "Invalid TCP/UDP port range {f}-{t}: ports must be between 0 and 65535 and from must not exceed to."
                )));
            }
            Ok((Some(f), Some(t)))
        }
        Protocol::Icmp | Protocol::Icmpv6 => {
            let (f, t) = (from.unwrap_or(-1), to.unwrap_or(-1));
            if !(-1..=255).contains(&f) || !(-1..=255).contains(&t) {
                return Err(AwsError::invalid_parameter_value(format!(
                    "Invalid value '{f}' for ICMP type or '{t}' for ICMP code."
                )));
            }
            if f == -1 && t != -1 {
                return Err(AwsError::invalid_parameter_value(
                    "ICMP code must be -1 (all codes) when the ICMP type is -1 (all types).",
                ));
            }
            Ok((Some(f), Some(t)))
        }
        _ => Ok((None, None)),
    }
}

/// Expands the request's `IpPermissions` (or the legacy flat members) into
/// one rule per peer, checking every peer exists.
fn requested_rules(
    q: &RuleInput,
    world: &World,
    group: &SecurityGroup,
    account: &str,
) -> AwsResult<Vec<SgRule>> {
    let mut perms = list(q.ip_permissions).to_vec();
    if perms.is_empty() {
        let legacy_peer = q.cidr_ip.is_some() || q.source_security_group_name.is_some();
        if legacy_peer || q.ip_protocol.is_some() {
            perms.push(IpPermission {
                ip_protocol: Some(q.ip_protocol.clone().unwrap_or_else(|| "-1".into())),
                from_port: q.from_port,
                to_port: q.to_port,
                ip_ranges: q.cidr_ip.as_ref().map(|c| {
                    vec![IpRange {
                        cidr_ip: Some(c.clone()),
                        ..Default::default()
                    }]
                }),
                user_id_group_pairs: q.source_security_group_name.as_ref().map(|name| {
                    vec![UserIdGroupPair {
                        group_name: Some(name.clone()),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            });
        }
    }
    if perms.is_empty() {
        return Err(AwsError::missing_parameter("IpPermissions"));
    }
    let mut rules = Vec::new();
    for p in &perms {
        let protocol = normalize_protocol(need(&p.ip_protocol, "IpProtocol")?)?;
        let (from, to) = normalize_ports(protocol, p.from_port, p.to_port)?;
        let mut peers: Vec<(SgPeer, Option<String>)> = Vec::new();
        for range in list(&p.ip_ranges) {
            let raw = need(&range.cidr_ip, "CidrIp")?;
            let cidr: Cidr = raw.parse().map_err(|_| {
                AwsError::invalid_parameter_value(format!("CIDR block {raw} is malformed"))
            })?;
            peers.push((SgPeer::Cidr { cidr }, range.description.clone()));
        }
        if !list(&p.ipv6_ranges).is_empty() {
            return Err(AwsError::invalid_parameter_value(
                "IPv6 rules are not supported by Cove.",
            ));
        }
        for pl in list(&p.prefix_list_ids) {
            let id = need(&pl.prefix_list_id, "PrefixListId")?;
            if world.prefix_list_cidrs(&group.region, id).is_none() {
                return Err(AwsError::client(
                    "InvalidPrefixListId.NotFound",
                    format!("The prefix list ID '{id}' does not exist"),
                ));
            }
            peers.push((
                SgPeer::PrefixList { id: id.to_string() },
                pl.description.clone(),
            ));
        }
        for pair in list(&p.user_id_group_pairs) {
            let peer_group = match (pair.group_id.as_deref(), pair.group_name.as_deref()) {
                (Some(id), _) => world
                    .security_groups
                    .get(id)
                    .filter(|g| g.region == group.region)
                    .ok_or_else(|| group_not_found(id))?,
                (None, Some(name)) => world
                    .security_groups
                    .values()
                    .find(|g| g.vpc_id == group.vpc_id && g.name == name)
                    .ok_or_else(|| group_not_found(name))?,
                (None, None) => return Err(AwsError::missing_parameter("GroupId")),
            };
            // A peered VPC's groups may be named while the peering is active.
            let peered = world
                .active_peering(&group.vpc_id, &peer_group.vpc_id)
                .is_some();
            // A rule left stale by a peering that ended can still be revoked.
            let revoking = q.security_group_rule_ids.is_some();
            if peer_group.vpc_id != group.vpc_id && !peered && !revoking {
                return Err(AwsError::invalid_parameter_value(
                    "You have specified two resources that belong to different networks.",
                ));
            }
            peers.push((
                SgPeer::Group {
                    group_id: peer_group.id.clone(),
                    user_id: account.to_string(),
                },
                pair.description.clone(),
            ));
        }
        if peers.is_empty() {
            return Err(AwsError::missing_parameter(
                "IpRanges, PrefixListIds or UserIdGroupPairs",
            ));
        }
        for (peer, description) in peers {
            if let Some(d) = &description {
                check_text("description", d)?;
            }
            rules.push(SgRule {
                id: new_id("sgr"),
                protocol,
                from_port: from,
                to_port: to,
                peer,
                description,
            });
        }
    }
    Ok(rules)
}

fn peer_text(peer: &SgPeer) -> String {
    match peer {
        SgPeer::Cidr { cidr } => cidr.to_string(),
        SgPeer::PrefixList { id } => id.clone(),
        SgPeer::Group { group_id, .. } => group_id.clone(),
    }
}

fn duplicate_error(rule: &SgRule) -> AwsError {
    let proto = match rule.protocol {
        Protocol::All => "ALL".to_string(),
        p => p.to_string().to_ascii_uppercase(),
    };
    let ports = match (rule.from_port, rule.to_port) {
        (Some(f), Some(t)) => format!(", from port: {f}, to port: {t}"),
        _ => String::new(),
    };
    AwsError::client(
        "InvalidPermission.Duplicate",
        format!(
            "the specified rule \"peer: {}, {proto}{ports}, ALLOW\" already exists",
            peer_text(&rule.peer)
        ),
    )
}

/// The members the four rule operations share; the egress ones have no
/// `GroupName`, the revokes no `TagSpecifications` and the authorizes no
/// `SecurityGroupRuleIds` (`security_group_rule_ids` is `Some` exactly
/// for a revoke).
struct RuleInput<'q> {
    group_id: Option<&'q str>,
    group_name: Option<&'q str>,
    ip_permissions: &'q Option<Vec<IpPermission>>,
    ip_protocol: &'q Option<String>,
    from_port: Option<i64>,
    to_port: Option<i64>,
    cidr_ip: &'q Option<String>,
    source_security_group_name: &'q Option<String>,
    tag_specifications: Option<&'q Option<Vec<TagSpecification>>>,
    security_group_rule_ids: Option<&'q Option<Vec<String>>>,
}

macro_rules! rule_input {
    ($q:expr, group_name: $name:expr, tags: $tags:expr, rule_ids: $ids:expr) => {
        RuleInput {
            group_id: $q.group_id.as_deref(),
            group_name: $name,
            ip_permissions: &$q.ip_permissions,
            ip_protocol: &$q.ip_protocol,
            from_port: $q.from_port,
            to_port: $q.to_port,
            cidr_ip: &$q.cidr_ip,
            source_security_group_name: &$q.source_security_group_name,
            tag_specifications: $tags,
            security_group_rule_ids: $ids,
        }
    };
}

pub fn authorize_ingress(r: &Req, q: &AuthorizeSecurityGroupIngressRequest) -> AwsResult<Value> {
    let input = rule_input!(q, group_name: q.group_name.as_deref(), tags: Some(&q.tag_specifications), rule_ids: None);
    authorize(r, &input, false)
}

pub fn authorize_egress(r: &Req, q: &AuthorizeSecurityGroupEgressRequest) -> AwsResult<Value> {
    let input = rule_input!(q, group_name: None, tags: Some(&q.tag_specifications), rule_ids: None);
    authorize(r, &input, true)
}

pub fn revoke_ingress(r: &Req, q: &RevokeSecurityGroupIngressRequest) -> AwsResult<Value> {
    let input = rule_input!(q, group_name: q.group_name.as_deref(), tags: None, rule_ids: Some(&q.security_group_rule_ids));
    revoke(r, &input, false)
}

pub fn revoke_egress(r: &Req, q: &RevokeSecurityGroupEgressRequest) -> AwsResult<Value> {
    let input =
        rule_input!(q, group_name: None, tags: None, rule_ids: Some(&q.security_group_rule_ids));
    revoke(r, &input, true)
}

fn authorize(r: &Req, q: &RuleInput, egress: bool) -> AwsResult<Value> {
    let (region, account) = (r.region(), r.account());
    let rule_tags = tag_specs(
        r,
        q.tag_specifications.unwrap_or(&None),
        "security-group-rule",
    )?;
    r.write(|tx| {
        let id = target_group(r, q.group_id, q.group_name, &tx.world)?;
        let mut group = tx
            .world
            .security_groups
            .get(&id)
            .map(|g| (**g).clone())
            .expect("found above");
        let new_rules = requested_rules(q, &tx.world, &group, account)?;
        let existing = if egress {
            &group.egress
        } else {
            &group.ingress
        };
        for (i, rule) in new_rules.iter().enumerate() {
            let dup_existing = existing.iter().any(|e| e.same_permission(rule));
            let dup_in_request = new_rules[..i].iter().any(|e| e.same_permission(rule));
            if dup_existing || dup_in_request {
                return Err(duplicate_error(rule));
            }
        }
        if existing.len() + new_rules.len() > MAX_RULES_PER_DIRECTION {
            return Err(AwsError::client(
                "RulesPerSecurityGroupLimitExceeded",
                "The maximum number of rules per security group has been reached.",
            ));
        }
        let rendered: Vec<Value> = new_rules
            .iter()
            .map(|rule| {
                let mut v = render_rule(&group, rule, egress, region, account);
                if !rule_tags.is_empty() {
                    v["Tags"] = tag_list(&rule_tags);
                }
                v
            })
            .collect();
        for rule in &new_rules {
            if !rule_tags.is_empty() {
                tx.set_tags(&rule.id, rule_tags.clone());
            }
        }
        if egress {
            group.egress.extend(new_rules);
        } else {
            group.ingress.extend(new_rules);
        }
        tx.put(group);
        Ok(json!({"Return": true, "SecurityGroupRules": rendered}))
    })
}

fn revoke(r: &Req, q: &RuleInput, egress: bool) -> AwsResult<Value> {
    let account = r.account();
    r.write(|tx| {
        let id = target_group(r, q.group_id, q.group_name, &tx.world)?;
        let mut group = tx.world.security_groups.get(&id).map(|x| (**x).clone()).expect("found above");
        let rule_ids = list(q.security_group_rule_ids.unwrap_or(&None));
        let rules = if egress { &mut group.egress } else { &mut group.ingress };
        let mut removed = Vec::new();
        let mut unknown = Vec::new();
        if !rule_ids.is_empty() {
            for rid in rule_ids {
                match rules.iter().position(|x| &x.id == rid) {
                    Some(pos) => removed.push(rules.remove(pos)),
                    None => {
                        return Err(AwsError::client(
                            "InvalidSecurityGroupRuleId.NotFound",
                            format!("The security group rule ID '{rid}' does not exist"),
                        ))
                    }
                }
            }
        } else {
            let snapshot = tx.world.security_groups.get(&id).cloned().expect("found above");
            for wanted in requested_rules(q, &tx.world, &snapshot, account)? {
                match rules.iter().position(|x| x.same_permission(&wanted)) {
                    Some(pos) => removed.push(rules.remove(pos)),
                    None => unknown.push(wanted),
                }
            }
            if removed.is_empty() {
                return Err(AwsError::client(
                    "InvalidPermission.NotFound",
                    "The specified rule does not exist in this security group.",
                ));
            }
        }
        for rule in &removed {
            if tx.world.tags.contains_key(&rule.id) {
                tx.set_tags(&rule.id, Default::default());
            }
        }
        tx.put(group);
        let mut out = json!({"Return": true, "RevokedSecurityGroupRules": removed.iter().map(|x| json!({
            "SecurityGroupRuleId": x.id, "GroupId": id, "IsEgress": egress, "IpProtocol": x.protocol,
            "FromPort": x.from_port.unwrap_or(-1), "ToPort": x.to_port.unwrap_or(-1),
        })).collect::<Vec<_>>()});
        if !unknown.is_empty() {
            out["UnknownIpPermissions"] = Value::Array(unknown.iter().map(|u| permission_of(u, &[u])).collect());
        }
        Ok(out)
    })
}

/// The `IpPermission` a ModifySecurityGroupRules rule stands for, so that
/// it is checked exactly as an authorized one is.
fn permission_of_request(q: &SecurityGroupRuleRequest) -> AwsResult<IpPermission> {
    if q.cidr_ipv6.is_some() {
        return Err(AwsError::invalid_parameter_value(
            "IPv6 rules are not supported by Cove.",
        ));
    }
    let peers = [
        q.cidr_ipv4.is_some(),
        q.prefix_list_id.is_some(),
        q.referenced_group_id.is_some(),
    ];
    if peers.iter().filter(|p| **p).count() != 1 {
        return Err(AwsError::invalid_parameter_combination(
            "A security group rule needs exactly one of CidrIpv4, CidrIpv6, PrefixListId or ReferencedGroupId.",
        ));
    }
    let description = q.description.clone();
    Ok(IpPermission {
        ip_protocol: q.ip_protocol.clone(),
        from_port: q.from_port,
        to_port: q.to_port,
        ip_ranges: q.cidr_ipv4.as_ref().map(|c| {
            vec![IpRange {
                cidr_ip: Some(c.clone()),
                description: description.clone(),
            }]
        }),
        prefix_list_ids: q.prefix_list_id.as_ref().map(|p| {
            vec![PrefixListId {
                prefix_list_id: Some(p.clone()),
                description: description.clone(),
            }]
        }),
        user_id_group_pairs: q.referenced_group_id.as_ref().map(|g| {
            vec![UserIdGroupPair {
                group_id: Some(g.clone()),
                description: description.clone(),
                ..Default::default()
            }]
        }),
        ..Default::default()
    })
}

fn rule_not_found(id: &str) -> AwsError {
    AwsError::client(
        "InvalidSecurityGroupRuleId.NotFound",
        format!("The security group rule ID '{id}' does not exist"),
    )
}

/// Rewrites rules in place, each keeping its `sgr-` id (and so its tags).
pub fn modify_rules(r: &Req, q: &ModifySecurityGroupRulesRequest) -> AwsResult<Value> {
    let group_id = need(&q.group_id, "GroupId")?;
    let updates = list(&q.security_group_rules);
    if updates.is_empty() {
        return Err(AwsError::missing_parameter("SecurityGroupRule"));
    }
    let account = r.account();
    r.write(|tx| {
        let id = target_group(r, Some(group_id), None, &tx.world)?;
        let mut group = (**tx.world.security_groups.get(&id).expect("found above")).clone();
        for u in updates {
            let rule_id = need(&u.security_group_rule_id, "SecurityGroupRuleId")?;
            let wanted = u
                .security_group_rule
                .as_ref()
                .ok_or_else(|| AwsError::missing_parameter("SecurityGroupRule"))?;
            let perms = Some(vec![permission_of_request(wanted)?]);
            let input = RuleInput {
                group_id: Some(&id),
                group_name: None,
                ip_permissions: &perms,
                ip_protocol: &None,
                from_port: None,
                to_port: None,
                cidr_ip: &None,
                source_security_group_name: &None,
                tag_specifications: None,
                security_group_rule_ids: None,
            };
            let mut new_rule = requested_rules(&input, &tx.world, &group, account)?
                .pop()
                .expect("exactly one peer");
            let rules = if group.ingress.iter().any(|x| x.id == rule_id) {
                &mut group.ingress
            } else if group.egress.iter().any(|x| x.id == rule_id) {
                &mut group.egress
            } else {
                return Err(rule_not_found(rule_id));
            };
            if rules
                .iter()
                .any(|x| x.id != rule_id && x.same_permission(&new_rule))
            {
                return Err(duplicate_error(&new_rule));
            }
            let slot = rules
                .iter_mut()
                .find(|x| x.id == rule_id)
                .expect("found above");
            new_rule.id = slot.id.clone();
            *slot = new_rule;
        }
        tx.put(group);
        Ok(json!({"Return": true}))
    })
}

pub fn update_descriptions_ingress(
    r: &Req,
    q: &UpdateSecurityGroupRuleDescriptionsIngressRequest,
) -> AwsResult<Value> {
    update_descriptions(
        r,
        q.group_id.as_deref(),
        q.group_name.as_deref(),
        &q.ip_permissions,
        &q.security_group_rule_descriptions,
        false,
    )
}

pub fn update_descriptions_egress(
    r: &Req,
    q: &UpdateSecurityGroupRuleDescriptionsEgressRequest,
) -> AwsResult<Value> {
    update_descriptions(
        r,
        q.group_id.as_deref(),
        q.group_name.as_deref(),
        &q.ip_permissions,
        &q.security_group_rule_descriptions,
        true,
    )
}

/// Sets rule descriptions, by rule id or by matching permissions (whose
/// peers carry the new descriptions; a peer without one clears it).
fn update_descriptions(
    r: &Req,
    group_id: Option<&str>,
    group_name: Option<&str>,
    ip_permissions: &Option<Vec<IpPermission>>,
    by_id: &Option<Vec<cove_shapes::ec2::SecurityGroupRuleDescription>>,
    egress: bool,
) -> AwsResult<Value> {
    let account = r.account();
    r.write(|tx| {
        let id = target_group(r, group_id, group_name, &tx.world)?;
        let mut group = (**tx.world.security_groups.get(&id).expect("found above")).clone();
        let mut changes: Vec<(usize, Option<String>)> = Vec::new();
        {
            let rules = if egress {
                &group.egress
            } else {
                &group.ingress
            };
            for d in list(by_id) {
                let rid = need(&d.security_group_rule_id, "SecurityGroupRuleId")?;
                if let Some(d) = &d.description {
                    check_text("description", d)?;
                }
                let pos = rules
                    .iter()
                    .position(|x| x.id == rid)
                    .ok_or_else(|| rule_not_found(rid))?;
                changes.push((pos, d.description.clone()));
            }
            if !list(ip_permissions).is_empty() {
                let input = RuleInput {
                    group_id: Some(&id),
                    group_name: None,
                    ip_permissions,
                    ip_protocol: &None,
                    from_port: None,
                    to_port: None,
                    cidr_ip: &None,
                    source_security_group_name: &None,
                    tag_specifications: None,
                    security_group_rule_ids: None,
                };
                for wanted in requested_rules(&input, &tx.world, &group, account)? {
                    let pos = rules
                        .iter()
                        .position(|x| x.same_permission(&wanted))
                        .ok_or_else(|| {
                            AwsError::client(
                                "InvalidPermission.NotFound",
                                "The specified rule does not exist in this security group.",
                            )
                        })?;
                    changes.push((pos, wanted.description));
                }
            }
        }
        if changes.is_empty() {
            return Err(AwsError::missing_parameter(
                "IpPermissions or SecurityGroupRuleDescriptions",
            ));
        }
        let rules = if egress {
            &mut group.egress
        } else {
            &mut group.ingress
        };
        for (pos, description) in changes {
            rules[pos].description = description;
        }
        tx.put(group);
        Ok(json!({"Return": true}))
    })
}

/// DescribeSecurityGroupReferences: for each group, the groups of peered
/// VPCs whose rules name it, through which connection.
pub fn describe_references(
    r: &Req,
    q: &DescribeSecurityGroupReferencesRequest,
) -> AwsResult<Value> {
    let w = r.world();
    let ids = list(&q.group_id);
    if ids.is_empty() {
        return Err(AwsError::missing_parameter("GroupId"));
    }
    let mut out = Vec::new();
    for id in ids {
        let g = find::<SecurityGroup>(&w, id, r.region(), |g| &g.region, group_not_found)?;
        for other in w.security_groups.values().filter(|o| o.vpc_id != g.vpc_id) {
            let names_it =
                other.ingress.iter().chain(&other.egress).any(
                    |rule| matches!(&rule.peer, SgPeer::Group { group_id, .. } if group_id == id),
                );
            if !names_it {
                continue;
            }
            let mut v = json!({"GroupId": id, "ReferencingVpcId": other.vpc_id});
            if let Some(p) = w.active_peering(&g.vpc_id, &other.vpc_id) {
                v["VpcPeeringConnectionId"] = json!(p.id);
            }
            out.push(v);
        }
    }
    out.dedup();
    Ok(json!({"SecurityGroupReferenceSet": out}))
}

/// DescribeStaleSecurityGroups: a VPC's groups with rules that name a
/// group of another VPC with no active peering to it any more.
pub fn describe_stale(r: &Req, q: &DescribeStaleSecurityGroupsRequest) -> AwsResult<Value> {
    let vpc_id = need(&q.vpc_id, "VpcId")?;
    let w = r.world();
    find::<Vpc>(&w, vpc_id, r.region(), |v| &v.region, vpc_not_found)?;
    let stale = |rule: &SgRule| match &rule.peer {
        SgPeer::Group { group_id, .. } => match w.security_groups.get(group_id) {
            Some(other) => {
                other.vpc_id != vpc_id && w.active_peering(vpc_id, &other.vpc_id).is_none()
            }
            None => true,
        },
        _ => false,
    };
    let render_stale = |rules: &[SgRule]| -> Vec<Value> {
        rules
            .iter()
            .filter(|rule| stale(rule))
            .map(|rule| {
                let mut p = json!({"IpProtocol": rule.protocol});
                if let (Some(f), Some(t)) = (rule.from_port, rule.to_port) {
                    p["FromPort"] = json!(f);
                    p["ToPort"] = json!(t);
                }
                if let SgPeer::Group { group_id, user_id } = &rule.peer {
                    let mut pair = json!({"GroupId": group_id, "UserId": user_id});
                    if let Some(other) = w.security_groups.get(group_id) {
                        pair["VpcId"] = json!(other.vpc_id);
                    }
                    p["UserIdGroupPairs"] = json!([pair]);
                }
                p
            })
            .collect()
    };
    let mut out = Vec::new();
    for g in w.security_groups.values().filter(|g| g.vpc_id == vpc_id) {
        let (ingress, egress) = (render_stale(&g.ingress), render_stale(&g.egress));
        if ingress.is_empty() && egress.is_empty() {
            continue;
        }
        out.push(json!({
            "GroupId": g.id, "GroupName": g.name, "Description": g.description, "VpcId": g.vpc_id,
            "StaleIpPermissions": ingress, "StaleIpPermissionsEgress": egress,
        }));
    }
    Ok(json!({"StaleSecurityGroupSet": out}))
}

/// One `IpPermission` for rules sharing protocol and ports.
fn permission_of(first: &SgRule, members: &[&SgRule]) -> Value {
    let mut p = json!({"IpProtocol": first.protocol});
    if let (Some(f), Some(t)) = (first.from_port, first.to_port) {
        p["FromPort"] = json!(f);
        p["ToPort"] = json!(t);
    }
    let mut ranges = Vec::new();
    let mut lists = Vec::new();
    let mut pairs = Vec::new();
    for rule in members {
        let with_desc = |mut v: Value| {
            if let Some(d) = &rule.description {
                v["Description"] = json!(d);
            }
            v
        };
        match &rule.peer {
            SgPeer::Cidr { cidr } => ranges.push(with_desc(json!({"CidrIp": cidr}))),
            SgPeer::PrefixList { id } => lists.push(with_desc(json!({"PrefixListId": id}))),
            SgPeer::Group { group_id, user_id } => {
                pairs.push(with_desc(json!({"GroupId": group_id, "UserId": user_id})))
            }
        }
    }
    p["IpRanges"] = Value::Array(ranges);
    p["Ipv6Ranges"] = json!([]);
    p["PrefixListIds"] = Value::Array(lists);
    p["UserIdGroupPairs"] = Value::Array(pairs);
    p
}

/// Groups rules by (protocol, ports) in the order they were first added.
pub fn permissions(rules: &[SgRule]) -> Vec<Value> {
    let mut groups: Vec<(&SgRule, Vec<&SgRule>)> = Vec::new();
    for rule in rules {
        match groups.iter_mut().find(|(f, _)| {
            f.protocol == rule.protocol
                && f.from_port == rule.from_port
                && f.to_port == rule.to_port
        }) {
            Some((_, members)) => members.push(rule),
            None => groups.push((rule, vec![rule])),
        }
    }
    groups.iter().map(|(f, m)| permission_of(f, m)).collect()
}

fn render_group(world: &World, g: &SecurityGroup, account: &str) -> Value {
    let mut v = json!({
        "Description": g.description,
        "GroupName": g.name,
        "OwnerId": account,
        "GroupId": g.id,
        "VpcId": g.vpc_id,
        "SecurityGroupArn": group_arn(&g.region, account, &g.id),
    });
    v["IpPermissions"] = Value::Array(permissions(&g.ingress));
    v["IpPermissionsEgress"] = Value::Array(permissions(&g.egress));
    with_tags(v, world, &g.id, "Tags")
}

fn permission_fields(rules: &[SgRule], field: &str) -> Vec<String> {
    rules
        .iter()
        .filter_map(|r| match (field, &r.peer) {
            ("cidr", SgPeer::Cidr { cidr }) => Some(cidr.to_string()),
            ("group-id", SgPeer::Group { group_id, .. }) => Some(group_id.clone()),
            ("prefix-list-id", SgPeer::PrefixList { id }) => Some(id.clone()),
            ("protocol", _) => Some(r.protocol.to_string()),
            ("from-port", _) => r.from_port.map(|p| p.to_string()),
            ("to-port", _) => r.to_port.map(|p| p.to_string()),
            _ => None,
        })
        .collect()
}

fn group_field(w: &World, g: &SecurityGroup, account: &str, name: &str) -> FieldValues {
    if let Some(f) = name.strip_prefix("ip-permission.") {
        return Some(permission_fields(&g.ingress, f));
    }
    if let Some(f) = name.strip_prefix("egress.ip-permission.") {
        return Some(permission_fields(&g.egress, f));
    }
    match name {
        "group-id" => one(&g.id),
        "group-name" => one(&g.name),
        "description" => one(&g.description),
        "vpc-id" => one(&g.vpc_id),
        _ => common_field(w, &g.id, account, name),
    }
}

pub fn describe_security_groups(r: &Req, q: &DescribeSecurityGroupsRequest) -> AwsResult<Value> {
    let w = r.world();
    let account = r.account();
    let mut d = Describe::of(q, "GroupIds", &q.group_ids);
    let names = list(&q.group_names);
    if !names.is_empty() {
        // GroupNames address groups of the default VPC, as on AWS.
        let default_vpc = w
            .vpcs
            .values()
            .find(|v| v.region == r.region() && v.is_default)
            .map(|v| v.id.clone());
        for name in names {
            match w.security_groups.values().find(|g| {
                g.region == r.region() && &g.name == name && Some(&g.vpc_id) == default_vpc.as_ref()
            }) {
                Some(g) => d.ids.push(g.id.clone()),
                None => {
                    return Err(AwsError::client(
                        "InvalidGroup.NotFound",
                        format!(
                            "The security group '{name}' does not exist in default VPC '{}'",
                            default_vpc.unwrap_or_default()
                        ),
                    ))
                }
            }
        }
    }
    let (groups, next) = d.run::<SecurityGroup>(
        &w,
        |g| &g.region,
        r.region(),
        group_not_found,
        |g, n| group_field(&w, g, account, n),
    )?;
    let items: Vec<Value> = groups
        .iter()
        .map(|g| render_group(&w, g, account))
        .collect();
    Ok(listing("SecurityGroups", items, next))
}

fn render_rule(
    g: &SecurityGroup,
    rule: &SgRule,
    egress: bool,
    region: &str,
    account: &str,
) -> Value {
    let mut v = json!({
        "SecurityGroupRuleId": rule.id,
        "GroupId": g.id,
        "GroupOwnerId": account,
        "IsEgress": egress,
        "IpProtocol": rule.protocol,
        "FromPort": rule.from_port.unwrap_or(-1),
        "ToPort": rule.to_port.unwrap_or(-1),
        "SecurityGroupRuleArn": rule_arn(region, account, &rule.id),
    });
    match &rule.peer {
        SgPeer::Cidr { cidr } => v["CidrIpv4"] = json!(cidr),
        SgPeer::PrefixList { id } => v["PrefixListId"] = json!(id),
        SgPeer::Group { group_id, user_id } => {
            v["ReferencedGroupInfo"] = json!({"GroupId": group_id, "UserId": user_id})
        }
    }
    if let Some(d) = &rule.description {
        v["Description"] = json!(d);
    }
    v
}

/// `sg-` and 8 or 17 hex digits, as AWS's group ids; a filter value may
/// use `*` and `?` wildcards in place of them.
fn is_group_id(v: &str) -> bool {
    v.strip_prefix("sg-").is_some_and(|hex| {
        hex.contains(['*', '?'])
            || ((hex.len() == 8 || hex.len() == 17) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

pub fn describe_security_group_rules(
    r: &Req,
    q: &DescribeSecurityGroupRulesRequest,
) -> AwsResult<Value> {
    let w = r.world();
    let (region, account) = (r.region(), r.account());
    let ids = list(&q.security_group_rule_ids);
    let filters = filters(&q.filters);
    let max = q.max_results;
    if max.is_some() && !ids.is_empty() {
        return Err(AwsError::invalid_parameter_combination(
            "The parameter SecurityGroupRuleIds cannot be used with the parameter maxResults",
        ));
    }
    // AWS checks the shape of a group id filter before it looks for rules.
    let malformed = filters
        .iter()
        .filter(|f| f.name == "group-id")
        .flat_map(|f| &f.values)
        .find(|v| !is_group_id(v));
    if let Some(v) = malformed {
        return Err(AwsError::client(
            "InvalidGroupId.Malformed",
            format!("Invalid id: \"{v}\" (expecting \"sg-...\")"),
        ));
    }
    let mut rows: Vec<(String, Value)> = Vec::new();
    for g in w.security_groups.values().filter(|g| g.region == region) {
        for (rule, egress) in g
            .ingress
            .iter()
            .map(|x| (x, false))
            .chain(g.egress.iter().map(|x| (x, true)))
        {
            if !ids.is_empty() && !ids.contains(&rule.id) {
                continue;
            }
            let field = |name: &str| -> FieldValues {
                match name {
                    "group-id" => one(&g.id),
                    "security-group-rule-id" => one(&rule.id),
                    _ => common_field(&w, &rule.id, account, name),
                }
            };
            let keep = cove_model::filter::matches_all(&filters, field).map_err(|n| {
                AwsError::invalid_parameter_value(format!("The filter '{n}' is invalid"))
            })?;
            if keep {
                rows.push((
                    rule.id.clone(),
                    with_tags(
                        render_rule(g, rule, egress, region, account),
                        &w,
                        &rule.id,
                        "Tags",
                    ),
                ));
            }
        }
    }
    for id in ids {
        if !rows.iter().any(|(rid, _)| rid == id) {
            return Err(AwsError::client(
                "InvalidSecurityGroupRuleId.NotFound",
                format!("The security group rule ID '{id}' does not exist"),
            ));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let start = q.next_token.as_deref().unwrap_or_default();
    let mut page: Vec<Value> = Vec::new();
    let mut next = None;
    for (id, v) in rows.into_iter().filter(|(id, _)| id.as_str() >= start) {
        if max.is_some_and(|m| usize::try_from(m).is_ok_and(|m| page.len() == m)) {
            next = Some(id);
            break;
        }
        page.push(v);
    }
    Ok(listing("SecurityGroupRules", page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_normalise_like_aws() {
        assert_eq!(normalize_protocol("TCP").unwrap().to_string(), "tcp");
        assert_eq!(normalize_protocol("6").unwrap().to_string(), "tcp");
        assert_eq!(normalize_protocol("17").unwrap().to_string(), "udp");
        assert_eq!(normalize_protocol("all").unwrap().to_string(), "-1");
        assert_eq!(normalize_protocol("50").unwrap().to_string(), "50");
        assert!(normalize_protocol("bogus").is_err());
        assert!(normalize_protocol("256").is_err());
    }

    #[test]
    fn ports_by_protocol() {
        assert_eq!(
            normalize_ports("tcp".parse().unwrap(), Some(22), Some(22)).unwrap(),
            (Some(22), Some(22))
        );
        assert!(normalize_ports("tcp".parse().unwrap(), Some(23), Some(22)).is_err());
        assert!(normalize_ports("tcp".parse().unwrap(), None, Some(22)).is_err());
        assert!(normalize_ports("udp".parse().unwrap(), Some(0), Some(65536)).is_err());
        assert_eq!(
            normalize_ports("icmp".parse().unwrap(), Some(-1), Some(-1)).unwrap(),
            (Some(-1), Some(-1))
        );
        assert!(normalize_ports("icmp".parse().unwrap(), Some(-1), Some(3)).is_err());
        assert_eq!(
            normalize_ports("-1".parse().unwrap(), Some(1), Some(2)).unwrap(),
            (None, None)
        );
        assert_eq!(
            normalize_ports("50".parse().unwrap(), Some(1), Some(2)).unwrap(),
            (None, None)
        );
    }

    #[test]
    fn permissions_group_rules_by_port_range() {
        let rule = |p: &str, f: i64, cidr: &str| SgRule {
            id: new_id("sgr"),
            protocol: Protocol::Tcp,
            from_port: Some(f),
            to_port: Some(f),
            peer: SgPeer::Cidr {
                cidr: cove_model::fixtures::net(cidr),
            },
            description: if p.is_empty() { None } else { Some(p.into()) },
        };
        let rules = vec![
            rule("", 22, "10.0.0.0/8"),
            rule("", 443, "0.0.0.0/0"),
            rule("office", 22, "192.0.2.0/24"),
        ];
        let perms = permissions(&rules);
        assert_eq!(perms.len(), 2);
        assert_eq!(perms[0]["FromPort"], 22);
        assert_eq!(perms[0]["IpRanges"].as_array().unwrap().len(), 2);
        assert_eq!(perms[0]["IpRanges"][1]["Description"], "office");
    }
}
