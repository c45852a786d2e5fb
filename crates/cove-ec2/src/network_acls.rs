//! Network ACLs: the default ACL (allow everything) and custom ones (deny
//! everything), numbered entries per direction with the implicit `*` deny,
//! and the one-ACL-per-subnet association that subnets start with.

use crate::common::*;
use crate::security_groups::normalize_protocol;
use cove_model::cidr::Cidr;
use cove_model::filter::FieldValues;
use cove_model::ids::new_id;
use cove_model::protocol::Protocol;
use cove_model::vpc::*;
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_shapes::ec2::{
    CreateNetworkAclEntryRequest, CreateNetworkAclRequest, DeleteNetworkAclEntryRequest,
    DeleteNetworkAclRequest, DescribeNetworkAclsRequest, IcmpTypeCode, PortRange,
    ReplaceNetworkAclAssociationRequest, ReplaceNetworkAclEntryRequest,
};
use cove_store::Tx;
use serde_json::{json, Value};

/// The implicit last rule, shown by describe and never stored.
pub const STAR_RULE: i64 = 32767;
pub const MAX_RULE_NUMBER: i64 = 32766;

fn allow_all(egress: bool) -> NaclEntry {
    NaclEntry {
        rule_number: 100,
        egress,
        protocol: Protocol::All,
        allow: true,
        cidr: Cidr::ANY,
        from_port: None,
        to_port: None,
        icmp_type: None,
        icmp_code: None,
    }
}

pub fn new_default_acl(tx: &mut Tx, vpc: &Vpc) {
    tx.put(NetworkAcl {
        id: new_id("acl"),
        region: vpc.region.clone(),
        vpc_id: vpc.id.clone(),
        is_default: true,
        entries: vec![allow_all(false), allow_all(true)],
        associations: vec![],
    });
}

/// A new subnet starts on its VPC's default ACL.
pub fn associate_with_default(tx: &mut Tx, subnet: &Subnet) {
    let acl = tx
        .world
        .network_acls
        .values()
        .find(|a| a.vpc_id == subnet.vpc_id && a.is_default)
        .map(|x| (**x).clone());
    if let Some(mut acl) = acl {
        acl.associations.push(NaclAssociation {
            id: new_id("aclassoc"),
            subnet_id: subnet.id.clone(),
        });
        tx.put(acl);
    }
}

pub fn drop_subnet(tx: &mut Tx, subnet_id: &str) {
    let acl = tx
        .world
        .network_acls
        .values()
        .find(|a| a.associations.iter().any(|x| x.subnet_id == subnet_id))
        .map(|x| (**x).clone());
    if let Some(mut acl) = acl {
        acl.associations.retain(|x| x.subnet_id != subnet_id);
        tx.put(acl);
    }
}

fn render_entry(e: &NaclEntry) -> Value {
    let mut v = json!({
        "CidrBlock": e.cidr,
        "Egress": e.egress,
        "Protocol": e.protocol,
        "RuleAction": if e.allow { "allow" } else { "deny" },
        "RuleNumber": e.rule_number,
    });
    if let (Some(f), Some(t)) = (e.from_port, e.to_port) {
        v["PortRange"] = json!({"From": f, "To": t});
    }
    if let (Some(t), Some(c)) = (e.icmp_type, e.icmp_code) {
        v["IcmpTypeCode"] = json!({"Type": t, "Code": c});
    }
    v
}

/// Entries in AWS's order: ascending rule number per direction, each ending
/// with the `*` deny (egress entries first, as AWS lists them).
pub fn ordered_entries(acl: &NetworkAcl) -> Vec<NaclEntry> {
    let mut out = Vec::new();
    for egress in [true, false] {
        let mut dir: Vec<NaclEntry> = acl
            .entries
            .iter()
            .filter(|e| e.egress == egress)
            .cloned()
            .collect();
        dir.sort_by_key(|e| e.rule_number);
        dir.push(NaclEntry {
            rule_number: STAR_RULE,
            egress,
            protocol: Protocol::All,
            allow: false,
            cidr: Cidr::ANY,
            from_port: None,
            to_port: None,
            icmp_type: None,
            icmp_code: None,
        });
        out.extend(dir);
    }
    out
}

fn render_acl(world: &World, a: &NetworkAcl, account: &str) -> Value {
    let mut v = json!({
        "IsDefault": a.is_default,
        "NetworkAclId": a.id,
        "VpcId": a.vpc_id,
        "OwnerId": account,
    });
    v["Associations"] = Value::Array(
        a.associations
            .iter()
            .map(|x| json!({"NetworkAclAssociationId": x.id, "NetworkAclId": a.id, "SubnetId": x.subnet_id}))
            .collect(),
    );
    v["Entries"] = Value::Array(ordered_entries(a).iter().map(render_entry).collect());
    with_tags(v, world, &a.id, "Tags")
}

pub fn create_network_acl(r: &Req, q: &CreateNetworkAclRequest) -> AwsResult<Value> {
    let vpc_id = need(&q.vpc_id, "VpcId")?.to_string();
    let tags = tag_specs(r, &q.tag_specifications, "network-acl")?;
    let (region, account) = (r.region(), r.account());
    r.write(|tx| {
        find::<Vpc>(&tx.world, &vpc_id, region, |v| &v.region, vpc_not_found)?;
        let acl = NetworkAcl {
            id: new_id("acl"),
            region: region.to_string(),
            vpc_id: vpc_id.clone(),
            is_default: false,
            entries: vec![],
            associations: vec![],
        };
        tx.put(acl.clone());
        if !tags.is_empty() {
            tx.set_tags(&acl.id, tags.clone());
        }
        Ok(json!({"NetworkAcl": render_acl(&tx.world, &acl, account), "ClientToken": q.client_token}))
    })
}

pub fn delete_network_acl(r: &Req, q: &DeleteNetworkAclRequest) -> AwsResult<Value> {
    let id = need(&q.network_acl_id, "NetworkAclId")?.to_string();
    let region = r.region();
    r.write(|tx| {
        let acl = find::<NetworkAcl>(&tx.world, &id, region, |a| &a.region, network_acl_not_found)?;
        if acl.is_default {
            return Err(AwsError::invalid_parameter_value(format!(
                "cannot delete default network ACL {id}"
            )));
        }
        if !acl.associations.is_empty() {
            return Err(AwsError::dependency_violation(format!(
                "The networkAcl '{id}' has dependencies and cannot be deleted."
            )));
        }
        tx.delete::<NetworkAcl>(&id);
        Ok(json!({}))
    })
}

/// The members CreateNetworkAclEntry and ReplaceNetworkAclEntry share (the
/// model gives them two identical shapes).
struct EntryInput<'q> {
    network_acl_id: &'q Option<String>,
    rule_number: Option<i64>,
    egress: Option<bool>,
    protocol: &'q Option<String>,
    rule_action: &'q Option<String>,
    cidr_block: &'q Option<String>,
    ipv6_cidr_block: &'q Option<String>,
    port_range: &'q Option<PortRange>,
    icmp_type_code: &'q Option<IcmpTypeCode>,
}

macro_rules! entry_input {
    ($q:expr) => {
        EntryInput {
            network_acl_id: &$q.network_acl_id,
            rule_number: $q.rule_number,
            egress: $q.egress,
            protocol: &$q.protocol,
            rule_action: &$q.rule_action,
            cidr_block: &$q.cidr_block,
            ipv6_cidr_block: &$q.ipv6_cidr_block,
            port_range: &$q.port_range,
            icmp_type_code: &$q.icmp_type_code,
        }
    };
}

pub fn create_network_acl_entry(r: &Req, q: &CreateNetworkAclEntryRequest) -> AwsResult<Value> {
    create_entry(r, &entry_input!(q), false)
}

pub fn replace_network_acl_entry(r: &Req, q: &ReplaceNetworkAclEntryRequest) -> AwsResult<Value> {
    create_entry(r, &entry_input!(q), true)
}

/// Builds an entry from CreateNetworkAclEntry / ReplaceNetworkAclEntry input.
fn entry_from(q: &EntryInput) -> AwsResult<NaclEntry> {
    let number = q
        .rule_number
        .ok_or_else(|| AwsError::missing_parameter("RuleNumber"))?;
    if !(1..=MAX_RULE_NUMBER).contains(&number) {
        return Err(AwsError::invalid_parameter_value(format!(
            "Value ({number}) for parameter ruleNumber is invalid. Rule number must be between 1 and {MAX_RULE_NUMBER}."
        )));
    }
    let egress = q
        .egress
        .ok_or_else(|| AwsError::missing_parameter("Egress"))?;
    let protocol = normalize_protocol(need(q.protocol, "Protocol")?)?;
    let allow = match need(q.rule_action, "RuleAction")? {
        "allow" => true,
        "deny" => false,
        other => {
            return Err(AwsError::invalid_parameter_value(format!(
                "Value ({other}) for parameter ruleAction is invalid."
            )))
        }
    };
    if q.ipv6_cidr_block.is_some() {
        return Err(AwsError::invalid_parameter_value(
            "IPv6 network ACL entries are not supported by Cove.",
        ));
    }
    let raw = need(q.cidr_block, "CidrBlock")?;
    let cidr: Cidr = raw.parse().map_err(|_| {
        AwsError::invalid_parameter_value(format!(
            "Value ({raw}) for parameter cidrBlock is invalid. This is not a valid CIDR block."
        ))
    })?;
    let mut entry = NaclEntry {
        rule_number: number,
        egress,
        protocol,
        allow,
        cidr,
        from_port: None,
        to_port: None,
        icmp_type: None,
        icmp_code: None,
    };
    match protocol {
        Protocol::Tcp | Protocol::Udp => {
            let range = q
                .port_range
                .as_ref()
                .ok_or_else(|| AwsError::missing_parameter("PortRange"))?;
            let (f, t) = (range.from, range.to);
            let (Some(f), Some(t)) = (f, t) else {
                return Err(AwsError::missing_parameter("PortRange"));
            };
            if !(0..=65535).contains(&f) || !(0..=65535).contains(&t) || f > t {
                return Err(AwsError::invalid_parameter_value(format!(
                    "Invalid port range {f}-{t}."
                )));
            }
            entry.from_port = Some(f);
            entry.to_port = Some(t);
        }
        Protocol::Icmp | Protocol::Icmpv6 => {
            let tc = q
                .icmp_type_code
                .as_ref()
                .ok_or_else(|| AwsError::missing_parameter("IcmpTypeCode"))?;
            let (t, c) = (tc.r#type.unwrap_or(-1), tc.code.unwrap_or(-1));
            if !(-1..=255).contains(&t) || !(-1..=255).contains(&c) {
                return Err(AwsError::invalid_parameter_value(format!(
                    "Invalid ICMP type {t} or code {c}."
                )));
            }
            entry.icmp_type = Some(t);
            entry.icmp_code = Some(c);
        }
        _ => {}
    }
    Ok(entry)
}

fn create_entry(r: &Req, q: &EntryInput, replace: bool) -> AwsResult<Value> {
    let id = need(q.network_acl_id, "NetworkAclId")?.to_string();
    let entry = entry_from(q)?;
    let region = r.region();
    r.write(|tx| {
        let mut acl =
            find::<NetworkAcl>(&tx.world, &id, region, |a| &a.region, network_acl_not_found)?
                .clone();
        let pos = acl
            .entries
            .iter()
            .position(|e| e.egress == entry.egress && e.rule_number == entry.rule_number);
        match (pos, replace) {
            (Some(_), false) => {
                return Err(AwsError::client(
                    "NetworkAclEntryAlreadyExists",
                    format!(
                        "The network acl entry identified by {} already exists.",
                        entry.rule_number
                    ),
                ))
            }
            (None, true) => {
                return Err(AwsError::client(
                    "InvalidNetworkAclEntry.NotFound",
                    "The specified network ACL entry does not exist",
                ))
            }
            (Some(p), true) => acl.entries[p] = entry.clone(),
            (None, false) => acl.entries.push(entry.clone()),
        }
        tx.put(acl);
        Ok(json!({}))
    })
}

pub fn delete_entry(r: &Req, q: &DeleteNetworkAclEntryRequest) -> AwsResult<Value> {
    let id = need(&q.network_acl_id, "NetworkAclId")?.to_string();
    let number = q
        .rule_number
        .ok_or_else(|| AwsError::missing_parameter("RuleNumber"))?;
    let egress = q
        .egress
        .ok_or_else(|| AwsError::missing_parameter("Egress"))?;
    let region = r.region();
    r.write(|tx| {
        let mut acl =
            find::<NetworkAcl>(&tx.world, &id, region, |a| &a.region, network_acl_not_found)?
                .clone();
        let before = acl.entries.len();
        acl.entries
            .retain(|e| !(e.egress == egress && e.rule_number == number));
        if acl.entries.len() == before {
            return Err(AwsError::client(
                "InvalidNetworkAclEntry.NotFound",
                "The specified network ACL entry does not exist",
            ));
        }
        tx.put(acl);
        Ok(json!({}))
    })
}

pub fn replace_association(r: &Req, q: &ReplaceNetworkAclAssociationRequest) -> AwsResult<Value> {
    let assoc = need(&q.association_id, "AssociationId")?.to_string();
    let new_acl_id = need(&q.network_acl_id, "NetworkAclId")?.to_string();
    let region = r.region();
    r.write(|tx| {
        let mut target = find::<NetworkAcl>(
            &tx.world,
            &new_acl_id,
            region,
            |a| &a.region,
            network_acl_not_found,
        )?
        .clone();
        let mut current = tx
            .world
            .network_acls
            .values()
            .find(|a| a.region == region && a.associations.iter().any(|x| x.id == assoc))
            .map(|a| (**a).clone())
            .ok_or_else(|| association_not_found(&assoc))?;
        if current.vpc_id != target.vpc_id {
            return Err(AwsError::invalid_parameter_value(format!(
                "Network ACL {new_acl_id} and association {assoc} belong to different networks"
            )));
        }
        let subnet_id = current
            .associations
            .iter()
            .find(|x| x.id == assoc)
            .map(|x| x.subnet_id.clone())
            .expect("found above");
        let new_id_ = new_id("aclassoc");
        if current.id == target.id {
            // Re-associating with the same ACL still yields a new association id.
            target.associations.retain(|x| x.id != assoc);
            target.associations.push(NaclAssociation {
                id: new_id_.clone(),
                subnet_id,
            });
            tx.put(target);
        } else {
            current.associations.retain(|x| x.id != assoc);
            target.associations.push(NaclAssociation {
                id: new_id_.clone(),
                subnet_id,
            });
            tx.put(current);
            tx.put(target);
        }
        Ok(json!({"NewAssociationId": new_id_}))
    })
}

fn acl_field(w: &World, a: &NetworkAcl, account: &str, name: &str) -> FieldValues {
    let entries = || a.entries.iter();
    match name {
        "network-acl-id" => one(&a.id),
        "vpc-id" => one(&a.vpc_id),
        "default" => flag(a.is_default),
        "association.association-id" => Some(a.associations.iter().map(|x| x.id.clone()).collect()),
        "association.network-acl-id" => one(&a.id),
        "association.subnet-id" => {
            Some(a.associations.iter().map(|x| x.subnet_id.clone()).collect())
        }
        "entry.cidr" => Some(entries().map(|e| e.cidr.to_string()).collect()),
        "entry.egress" => Some(entries().map(|e| e.egress.to_string()).collect()),
        "entry.protocol" => Some(entries().map(|e| e.protocol.to_string()).collect()),
        "entry.rule-action" => Some(
            entries()
                .map(|e| {
                    if e.allow {
                        "allow".into()
                    } else {
                        "deny".into()
                    }
                })
                .collect(),
        ),
        "entry.rule-number" => Some(entries().map(|e| e.rule_number.to_string()).collect()),
        "entry.port-range.from" => Some(
            entries()
                .filter_map(|e| e.from_port.map(|p| p.to_string()))
                .collect(),
        ),
        "entry.port-range.to" => Some(
            entries()
                .filter_map(|e| e.to_port.map(|p| p.to_string()))
                .collect(),
        ),
        _ => common_field(w, &a.id, account, name),
    }
}

pub fn describe_network_acls(r: &Req, q: &DescribeNetworkAclsRequest) -> AwsResult<Value> {
    describe_all(
        r,
        &Describe::of(q, "NetworkAclIds", &q.network_acl_ids),
        "NetworkAcls",
        |a: &NetworkAcl| &a.region,
        network_acl_not_found,
        acl_field,
        render_acl,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_order_ends_each_direction_with_star() {
        let mut acl = NetworkAcl {
            id: "acl-1".into(),
            region: "us-east-1".into(),
            vpc_id: "vpc-1".into(),
            is_default: false,
            entries: vec![],
            associations: vec![],
        };
        let mut e = allow_all(false);
        e.rule_number = 200;
        acl.entries.push(e.clone());
        e.rule_number = 50;
        acl.entries.push(e);
        let order: Vec<(bool, i64)> = ordered_entries(&acl)
            .iter()
            .map(|e| (e.egress, e.rule_number))
            .collect();
        assert_eq!(
            order,
            vec![
                (true, STAR_RULE),
                (false, 50),
                (false, 200),
                (false, STAR_RULE)
            ]
        );
    }
}
