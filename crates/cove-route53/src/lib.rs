//! Route 53, the part VPCs use: hosted zones, public and private, private
//! zones' VPC associations, record sets changed in atomic batches, and the
//! changes a client polls. A private zone's records are what the VPC
//! resolver answers inside its associated VPCs (`cove_net::dns`); Cove
//! applies every change at once, so `GetChange` reports `INSYNC`.

use cove_model::ids::{now_rfc3339, random_string, UPPER_ALNUM};
use cove_model::route53::{HostedZone, RecordSet, Route53Change, ZoneVpc};
use cove_model::vpc::Vpc;
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_shapes::route53::*;
use cove_store::{Store, Tx};
use cove_wire::{model::ServiceModel, Protocol, RequestContext, Service};
use serde_json::{json, Value};
use std::sync::Arc;

/// The name servers a public zone is delegated to (documentation names:
/// nothing outside Cove resolves through them).
const NAME_SERVERS: [&str; 4] = [
    "ns-1.awsdns-00.com.",
    "ns-2.awsdns-00.net.",
    "ns-3.awsdns-00.org.",
    "ns-4.awsdns-00.co.uk.",
];
const RECORD_TYPES: &[&str] = &[
    "A", "AAAA", "CAA", "CNAME", "DS", "MX", "NAPTR", "NS", "PTR", "SOA", "SPF", "SRV", "TXT",
];

pub struct Route53Service {
    store: Arc<Store>,
}

impl Route53Service {
    pub fn new(store: Arc<Store>) -> Route53Service {
        Route53Service { store }
    }
}

impl Service for Route53Service {
    fn signing_name(&self) -> &'static str {
        "route53"
    }
    fn protocol(&self) -> Protocol {
        Protocol::RestXml
    }
    fn model(&self) -> &'static ServiceModel {
        cove_wire::model::route53()
    }
    fn validation_error_code(&self) -> &'static str {
        "InvalidInput"
    }
    fn handle(&self, ctx: &RequestContext, input: Value) -> AwsResult<Value> {
        let request = match Request::parse(&ctx.operation, &input) {
            Some(Ok(q)) => q,
            Some(Err(e)) => return Err(AwsError::client("InvalidInput", e.to_string())),
            None => {
                return Err(AwsError::client(
                    "InvalidAction",
                    format!("{} is not served here.", ctx.operation),
                ))
            }
        };
        let r = Req {
            store: &self.store,
            account: ctx.account_id(),
        };
        match &request {
            Request::CreateHostedZone(q) => create_hosted_zone(&r, q),
            Request::GetHostedZone(q) => get_hosted_zone(&r, q),
            Request::ListHostedZones(q) => list_hosted_zones(&r, q),
            Request::DeleteHostedZone(q) => delete_hosted_zone(&r, q),
            Request::ChangeResourceRecordSets(q) => change_record_sets(&r, q),
            Request::ListResourceRecordSets(q) => list_record_sets(&r, q),
            Request::GetChange(q) => get_change(&r, q),
            Request::AssociateVPCWithHostedZone(q) => associate_vpc(&r, q),
            Request::DisassociateVPCFromHostedZone(q) => disassociate_vpc(&r, q),
            Request::ListHostedZonesByVPC(q) => list_by_vpc(&r, q),
        }
    }
}

/// One request's account and the store: every call sees and changes that
/// account's zones only.
struct Req<'a> {
    store: &'a Store,
    account: &'a str,
}

impl Req<'_> {
    fn world(&self) -> Arc<World> {
        self.store.view(self.account)
    }
    fn write<T>(&self, f: impl FnOnce(&mut Tx) -> AwsResult<T>) -> AwsResult<T> {
        self.store.write_as(self.account, f)
    }
}

fn invalid_input(message: impl Into<String>) -> AwsError {
    AwsError::client("InvalidInput", message)
}

fn no_such_zone(id: &str) -> AwsError {
    AwsError::new(
        404,
        "NoSuchHostedZone",
        format!("No hosted zone found with ID: {id}"),
    )
}

/// A zone id as clients send it: `Z…` or `/hostedzone/Z…`.
fn zone_id(raw: &str) -> &str {
    raw.trim_start_matches("/hostedzone/")
}

/// A domain name as Route 53 keeps it: lower case, with its trailing dot.
fn canonical_name(raw: &str) -> AwsResult<String> {
    let name = raw.trim_end_matches('.').to_ascii_lowercase();
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*'))
        });
    if !labels_ok {
        return Err(AwsError::client(
            "InvalidDomainName",
            format!("{raw} is not a valid domain name."),
        ));
    }
    Ok(format!("{name}."))
}

fn zone<'w>(w: &'w World, raw: &str) -> AwsResult<&'w HostedZone> {
    let id = zone_id(raw);
    w.hosted_zones
        .get(id)
        .map(Arc::as_ref)
        .ok_or_else(|| no_such_zone(id))
}

/// A new change, stored so that `GetChange` finds it.
fn submit(tx: &mut Tx, comment: Option<String>) -> Route53Change {
    let c = Route53Change {
        id: format!("C{}", random_string(UPPER_ALNUM, 20)),
        submitted_at: now_rfc3339(),
        comment,
    };
    tx.put(c.clone());
    c
}

fn change_info(c: &Route53Change, status: &str) -> Value {
    let mut v =
        json!({"Id": format!("/change/{}", c.id), "Status": status, "SubmittedAt": c.submitted_at});
    if let Some(comment) = &c.comment {
        v["Comment"] = json!(comment);
    }
    v
}

fn render_zone(z: &HostedZone) -> Value {
    let mut config = json!({"PrivateZone": z.private});
    if let Some(c) = &z.comment {
        config["Comment"] = json!(c);
    }
    json!({
        "Id": format!("/hostedzone/{}", z.id),
        "Name": z.name,
        "CallerReference": z.caller_reference,
        "Config": config,
        "ResourceRecordSetCount": z.records.len(),
    })
}

fn render_vpcs(z: &HostedZone) -> Value {
    json!(z
        .vpcs
        .iter()
        .map(|v| json!({"VPCRegion": v.region, "VPCId": v.vpc_id}))
        .collect::<Vec<_>>())
}

fn delegation_set() -> Value {
    json!({"NameServers": NAME_SERVERS})
}

/// The VPC a private zone names, which must be the caller's, in that region.
fn checked_vpc(w: &World, vpc: &VPC) -> AwsResult<ZoneVpc> {
    let (Some(id), Some(region)) = (vpc.vpc_id.as_deref(), vpc.vpc_region.as_deref()) else {
        return Err(invalid_input("A VPC needs both VPCId and VPCRegion."));
    };
    match w.vpcs.get(id) {
        Some(v) if v.region == region => Ok(ZoneVpc {
            vpc_id: id.to_string(),
            region: region.to_string(),
        }),
        _ => Err(AwsError::client(
            "InvalidVPCId",
            format!("The VPC ID '{id}' is not valid in region {region} for this account."),
        )),
    }
}

/// No two private zones of one name answer in the same VPC.
fn refuse_conflict(w: &World, name: &str, vpc: &ZoneVpc, except: Option<&str>) -> AwsResult<()> {
    let clash = w.hosted_zones.values().any(|z| {
        z.private
            && z.name == name
            && Some(z.id.as_str()) != except
            && z.vpcs.iter().any(|v| v.vpc_id == vpc.vpc_id)
    });
    if clash {
        return Err(AwsError::client(
            "ConflictingDomainExists",
            format!(
                "A private hosted zone for {name} is already associated with {}.",
                vpc.vpc_id
            ),
        ));
    }
    Ok(())
}

fn create_hosted_zone(r: &Req, q: &CreateHostedZoneRequest) -> AwsResult<Value> {
    let name = canonical_name(&q.name)?;
    if q.delegation_set_id.is_some() {
        return Err(invalid_input(
            "Reusable delegation sets are not supported by Cove.",
        ));
    }
    let comment = q
        .hosted_zone_config
        .as_ref()
        .and_then(|c| c.comment.clone());
    let private_flag = q.hosted_zone_config.as_ref().and_then(|c| c.private_zone);
    let private = private_flag.unwrap_or(false) || q.vpc.is_some();
    if private_flag == Some(true) && q.vpc.is_none() {
        return Err(invalid_input("When you're creating a private hosted zone (when you specify true for PrivateZone), you must also specify values for VPCId and VPCRegion."));
    }
    r.write(|tx| {
        if tx
            .world
            .hosted_zones
            .values()
            .any(|z| z.caller_reference == q.caller_reference)
        {
            return Err(AwsError::client(
                "HostedZoneAlreadyExists",
                "A hosted zone has already been created with the specified caller reference.",
            ));
        }
        let vpcs = match &q.vpc {
            Some(v) => {
                let v = checked_vpc(&tx.world, v)?;
                refuse_conflict(&tx.world, &name, &v, None)?;
                vec![v]
            }
            None => vec![],
        };
        let zone = HostedZone {
            id: format!("Z{}", random_string(UPPER_ALNUM, 20)),
            name: name.clone(),
            caller_reference: q.caller_reference.clone(),
            comment,
            private,
            vpcs,
            records: vec![
                RecordSet {
                    name: name.clone(),
                    kind: "NS".into(),
                    ttl: Some(172_800),
                    values: NAME_SERVERS.iter().map(|s| s.to_string()).collect(),
                },
                RecordSet {
                    name: name.clone(),
                    kind: "SOA".into(),
                    ttl: Some(900),
                    values: vec![format!(
                        "{} awsdns-hostmaster.amazon.com. 1 7200 900 1209600 86400",
                        NAME_SERVERS[0]
                    )],
                },
            ],
        };
        tx.put(zone.clone());
        let change = submit(tx, None);
        let mut out = json!({
            "HostedZone": render_zone(&zone),
            "ChangeInfo": change_info(&change, "PENDING"),
            "DelegationSet": delegation_set(),
            "Location": format!("https://route53.amazonaws.com/2013-04-01/hostedzone/{}", zone.id),
        });
        if let Some(v) = zone.vpcs.first() {
            out["VPC"] = json!({"VPCRegion": v.region, "VPCId": v.vpc_id});
        }
        Ok(out)
    })
}

fn get_hosted_zone(r: &Req, q: &GetHostedZoneRequest) -> AwsResult<Value> {
    let w = r.world();
    let z = zone(&w, &q.id)?;
    let mut out = json!({"HostedZone": render_zone(z)});
    if z.private {
        out["VPCs"] = render_vpcs(z);
    } else {
        out["DelegationSet"] = delegation_set();
    }
    Ok(out)
}

/// A page size from Route 53's `MaxItems` (text, 1 to 100 by default).
fn max_items(raw: Option<&str>) -> AwsResult<usize> {
    match raw {
        None => Ok(100),
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| invalid_input(format!("Invalid value for MaxItems: {t}"))),
    }
}

fn list_hosted_zones(r: &Req, q: &ListHostedZonesRequest) -> AwsResult<Value> {
    let w = r.world();
    let max = max_items(q.max_items.as_deref())?;
    let kind = q.hosted_zone_type.as_deref();
    let zones: Vec<&HostedZone> = w
        .hosted_zones
        .values()
        .map(Arc::as_ref)
        .filter(|z| kind.is_none_or(|k| (k == "PrivateHostedZone") == z.private))
        .filter(|z| {
            q.marker
                .as_deref()
                .is_none_or(|m| z.id.as_str() >= zone_id(m))
        })
        .collect();
    let page: Vec<Value> = zones.iter().take(max).map(|z| render_zone(z)).collect();
    let mut out =
        json!({"HostedZones": page, "IsTruncated": zones.len() > max, "MaxItems": max.to_string()});
    if let Some(m) = &q.marker {
        out["Marker"] = json!(m);
    }
    if let Some(next) = zones.get(max) {
        out["NextMarker"] = json!(next.id);
    }
    Ok(out)
}

fn delete_hosted_zone(r: &Req, q: &DeleteHostedZoneRequest) -> AwsResult<Value> {
    r.write(|tx| {
        let z = zone(&tx.world, &q.id)?.clone();
        let required = |s: &RecordSet| s.name == z.name && (s.kind == "NS" || s.kind == "SOA");
        if !z.records.iter().all(required) {
            return Err(AwsError::client(
                "HostedZoneNotEmpty",
                "The specified hosted zone contains non-required resource record sets and so cannot be deleted.",
            ));
        }
        tx.delete::<HostedZone>(&z.id);
        let change = submit(tx, None);
        Ok(json!({"ChangeInfo": change_info(&change, "PENDING")}))
    })
}

fn record_of(zone: &HostedZone, set: &ResourceRecordSet) -> AwsResult<RecordSet> {
    let name = canonical_name(&set.name)?;
    if !zone.holds(&name) {
        return Err(AwsError::client(
            "InvalidChangeBatch",
            format!(
                "[RRSet with DNS name {name} is not permitted in zone {}]",
                zone.name
            ),
        ));
    }
    if !RECORD_TYPES.contains(&set.r#type.as_str()) {
        return Err(invalid_input(format!(
            "Invalid value for Type: {}",
            set.r#type
        )));
    }
    let unsupported = set.alias_target.is_some()
        || set.set_identifier.is_some()
        || set.health_check_id.is_some()
        || set.traffic_policy_instance_id.is_some();
    if unsupported {
        return Err(invalid_input(
            "Alias, weighted, latency, failover, geolocation and health-checked record sets are not supported by Cove.",
        ));
    }
    let values: Vec<String> = set
        .resource_records
        .iter()
        .flatten()
        .map(|v| v.value.clone())
        .collect();
    if values.is_empty() {
        return Err(AwsError::client(
            "InvalidChangeBatch",
            "[Invalid Resource Record: FATAL problem: ResourceRecords must not be empty]",
        ));
    }
    if set.ttl.is_none() {
        return Err(AwsError::client(
            "InvalidChangeBatch",
            "[Invalid Resource Record: FATAL problem: TTL is required]",
        ));
    }
    if set.r#type == "A" {
        if let Some(bad) = values
            .iter()
            .find(|v| v.parse::<std::net::Ipv4Addr>().is_err())
        {
            return Err(AwsError::client(
                "InvalidChangeBatch",
                format!("[Invalid Resource Record: FATAL problem: ARRDATAIllegalIPv4Address (Value is not a valid IPv4 address) encountered with '{bad}']"),
            ));
        }
    }
    if set.r#type == "CNAME" && values.len() > 1 {
        return Err(AwsError::client(
            "InvalidChangeBatch",
            "[Invalid Resource Record: FATAL problem: CNAME record sets take one value]",
        ));
    }
    Ok(RecordSet {
        name,
        kind: set.r#type.clone(),
        ttl: set.ttl,
        values,
    })
}

fn describe_set(s: &RecordSet) -> String {
    format!("[name='{}', type='{}']", s.name, s.kind)
}

/// Applies a batch to a zone's records: all or nothing, with Route 53's
/// messages, each problem in brackets.
fn apply(zone: &HostedZone, changes: &[Change]) -> AwsResult<Vec<RecordSet>> {
    let mut records = zone.records.clone();
    let mut problems = Vec::new();
    for c in changes {
        let set = record_of(zone, &c.resource_record_set)?;
        let same = |r: &RecordSet| r.name == set.name && r.kind == set.kind;
        let pos = records.iter().position(same);
        match (c.action.as_str(), pos) {
            ("CREATE", Some(_)) => problems.push(format!(
                "Tried to create resource record set {} but it already exists",
                describe_set(&set)
            )),
            ("CREATE", None) => records.push(set),
            ("UPSERT", Some(i)) => records[i] = set,
            ("UPSERT", None) => records.push(set),
            ("DELETE", None) => problems.push(format!(
                "Tried to delete resource record set {} but it was not found",
                describe_set(&set)
            )),
            ("DELETE", Some(i)) if records[i] != set => problems.push(format!(
                "Tried to delete resource record set {} but the values provided do not match the current values",
                describe_set(&set)
            )),
            ("DELETE", Some(i)) => {
                records.remove(i);
            }
            (other, _) => return Err(invalid_input(format!("Invalid value for Action: {other}"))),
        }
    }
    let apex_kept = ["NS", "SOA"]
        .iter()
        .all(|k| records.iter().any(|r| r.name == zone.name && r.kind == *k));
    if !apex_kept {
        problems.push(format!(
            "A HostedZone must contain at least one NS record for the zone itself and exactly one SOA record ({})",
            zone.name
        ));
    }
    if !problems.is_empty() {
        return Err(AwsError::client(
            "InvalidChangeBatch",
            format!("[{}]", problems.join(", ")),
        ));
    }
    Ok(records)
}

fn change_record_sets(r: &Req, q: &ChangeResourceRecordSetsRequest) -> AwsResult<Value> {
    r.write(|tx| {
        let mut z = zone(&tx.world, &q.hosted_zone_id)?.clone();
        z.records = apply(&z, &q.change_batch.changes)?;
        tx.put(z);
        let change = submit(tx, q.change_batch.comment.clone());
        Ok(json!({"ChangeInfo": change_info(&change, "PENDING")}))
    })
}

/// Route 53 lists names with their labels reversed (`com.example.www`).
fn listing_key(s: &RecordSet) -> (String, String) {
    let reversed: Vec<&str> = s.name.trim_end_matches('.').rsplit('.').collect();
    (reversed.join("."), s.kind.clone())
}

fn render_set(s: &RecordSet) -> Value {
    let mut v = json!({
        "Name": s.name,
        "Type": s.kind,
        "ResourceRecords": s.values.iter().map(|x| json!({"Value": x})).collect::<Vec<_>>(),
    });
    if let Some(ttl) = s.ttl {
        v["TTL"] = json!(ttl);
    }
    v
}

fn list_record_sets(r: &Req, q: &ListResourceRecordSetsRequest) -> AwsResult<Value> {
    let w = r.world();
    let z = zone(&w, &q.hosted_zone_id)?;
    let max = max_items(q.max_items.as_deref())?;
    let mut sets: Vec<&RecordSet> = z.records.iter().collect();
    sets.sort_by_key(|s| listing_key(s));
    if let Some(start) = &q.start_record_name {
        let start = RecordSet {
            name: canonical_name(start)?,
            kind: q.start_record_type.clone().unwrap_or_default(),
            ttl: None,
            values: vec![],
        };
        let from = listing_key(&start);
        sets.retain(|s| listing_key(s) >= from);
    }
    let page: Vec<Value> = sets.iter().take(max).map(|s| render_set(s)).collect();
    let mut out = json!({"ResourceRecordSets": page, "IsTruncated": sets.len() > max, "MaxItems": max.to_string()});
    if let Some(next) = sets.get(max) {
        out["NextRecordName"] = json!(next.name);
        out["NextRecordType"] = json!(next.kind);
    }
    Ok(out)
}

fn get_change(r: &Req, q: &GetChangeRequest) -> AwsResult<Value> {
    let w = r.world();
    let id = q.id.trim_start_matches("/change/");
    let c = w.route53_changes.get(id).ok_or_else(|| {
        AwsError::new(
            404,
            "NoSuchChange",
            format!("A change with the specified change ID does not exist: {id}"),
        )
    })?;
    Ok(json!({"ChangeInfo": change_info(c, "INSYNC")}))
}

fn associate_vpc(r: &Req, q: &AssociateVPCWithHostedZoneRequest) -> AwsResult<Value> {
    r.write(|tx| {
        let mut z = zone(&tx.world, &q.hosted_zone_id)?.clone();
        if !z.private {
            return Err(AwsError::client(
                "PublicZoneVPCAssociation",
                "You're trying to associate a VPC with a public hosted zone. Amazon Route 53 doesn't support associating a VPC with a public hosted zone.",
            ));
        }
        let v = checked_vpc(&tx.world, &q.vpc)?;
        refuse_conflict(&tx.world, &z.name, &v, None)?;
        z.vpcs.push(v);
        tx.put(z);
        let change = submit(tx, q.comment.clone());
        Ok(json!({"ChangeInfo": change_info(&change, "PENDING")}))
    })
}

fn disassociate_vpc(r: &Req, q: &DisassociateVPCFromHostedZoneRequest) -> AwsResult<Value> {
    r.write(|tx| {
        let mut z = zone(&tx.world, &q.hosted_zone_id)?.clone();
        let id = q.vpc.vpc_id.as_deref().unwrap_or_default();
        let Some(pos) = z.vpcs.iter().position(|v| v.vpc_id == id) else {
            return Err(AwsError::client(
                "VPCAssociationNotFound",
                format!("The specified VPC {id} and hosted zone are not currently associated."),
            ));
        };
        if z.vpcs.len() == 1 {
            return Err(AwsError::client(
                "LastVPCAssociation",
                "The VPC that you're trying to disassociate from the private hosted zone is the last VPC that is associated with the hosted zone. Amazon Route 53 doesn't support disassociating the last VPC from a hosted zone.",
            ));
        }
        z.vpcs.remove(pos);
        tx.put(z);
        let change = submit(tx, q.comment.clone());
        Ok(json!({"ChangeInfo": change_info(&change, "PENDING")}))
    })
}

fn list_by_vpc(r: &Req, q: &ListHostedZonesByVPCRequest) -> AwsResult<Value> {
    let w = r.world();
    let vpc: Option<&Vpc> = w.vpcs.get(&q.vpc_id).map(Arc::as_ref);
    if vpc.is_none_or(|v| v.region != q.vpc_region) {
        return Err(AwsError::client(
            "InvalidVPCId",
            format!(
                "The VPC ID '{}' is not valid in region {}.",
                q.vpc_id, q.vpc_region
            ),
        ));
    }
    let max = max_items(q.max_items.as_deref())?;
    let summaries: Vec<Value> = w
        .hosted_zones
        .values()
        .filter(|z| z.vpcs.iter().any(|v| v.vpc_id == q.vpc_id))
        .take(max)
        .map(|z| json!({"HostedZoneId": z.id, "Name": z.name, "Owner": {"OwningAccount": r.account}}))
        .collect();
    Ok(json!({"HostedZoneSummaries": summaries, "MaxItems": max.to_string()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone_with(records: Vec<RecordSet>) -> HostedZone {
        HostedZone {
            id: "ZTEST".into(),
            name: "corp.internal.".into(),
            caller_reference: "r".into(),
            comment: None,
            private: true,
            vpcs: vec![],
            records,
        }
    }

    fn apex() -> Vec<RecordSet> {
        ["NS", "SOA"]
            .iter()
            .map(|k| RecordSet {
                name: "corp.internal.".into(),
                kind: k.to_string(),
                ttl: Some(900),
                values: vec!["x".into()],
            })
            .collect()
    }

    fn change(action: &str, name: &str, kind: &str, value: &str) -> Change {
        Change {
            action: action.into(),
            resource_record_set: ResourceRecordSet {
                name: name.into(),
                r#type: kind.into(),
                ttl: Some(60),
                resource_records: Some(vec![ResourceRecord {
                    value: value.into(),
                }]),
                ..Default::default()
            },
        }
    }

    #[test]
    fn batches_apply_whole_or_not_at_all() {
        let z = zone_with(apex());
        let records = apply(&z, &[change("CREATE", "DB.corp.internal", "A", "10.2.1.4")]).unwrap();
        assert!(records
            .iter()
            .any(|r| r.name == "db.corp.internal." && r.values == ["10.2.1.4"]));
        let z = zone_with(records);
        let e = apply(
            &z,
            &[
                change("UPSERT", "api.corp.internal", "A", "10.2.1.5"),
                change("CREATE", "db.corp.internal.", "A", "10.2.1.9"),
            ],
        )
        .unwrap_err();
        assert_eq!(e.code, "InvalidChangeBatch");
        assert_eq!(e.message, "[Tried to create resource record set [name='db.corp.internal.', type='A'] but it already exists]");
        let e = apply(&z, &[change("DELETE", "db.corp.internal", "A", "10.2.1.9")]).unwrap_err();
        assert!(
            e.message.contains("do not match the current values"),
            "{}",
            e.message
        );
        let e = apply(&z, &[change("CREATE", "db.elsewhere", "A", "10.2.1.9")]).unwrap_err();
        assert!(e.message.contains("not permitted in zone corp.internal."));
        let e = apply(&z, &[change("CREATE", "x.corp.internal", "A", "not-an-ip")]).unwrap_err();
        assert!(e.message.contains("ARRDATAIllegalIPv4Address"));
        let e = apply(&z, &[change("DELETE", "corp.internal", "SOA", "x")]).unwrap_err();
        assert_eq!(e.code, "InvalidChangeBatch");
    }

    #[test]
    fn names_are_kept_lower_case_with_their_dot() {
        assert_eq!(
            canonical_name("DB.Corp.Internal").unwrap(),
            "db.corp.internal."
        );
        assert_eq!(
            canonical_name("db.corp.internal.").unwrap(),
            "db.corp.internal."
        );
        assert_eq!(
            canonical_name("bad..name").unwrap_err().code,
            "InvalidDomainName"
        );
    }
}
