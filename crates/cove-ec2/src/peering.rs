//! VPC peering connections: a request from one VPC to another (of any
//! account, in any region), accepted or rejected by the other VPC's owner,
//! and deleted by either. An active connection is a link between the two
//! VPCs' routers; routes that name it and security-group rules that name
//! the peer VPC's groups decide what crosses it, with no transitive
//! routing (see docs/dataplane.md).
//!
//! A connection is stored as its requester's; the accepter's account sees
//! and acts on it too, so these calls read the whole world and check the
//! caller's part in each connection themselves.

use crate::common::*;
use cove_model::filter::FieldValues;
use cove_model::ids::new_id;
use cove_model::vpc::{PeeringStatus, Vpc, VpcPeeringConnection};
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_shapes::ec2::{
    AcceptVpcPeeringConnectionRequest, CreateVpcPeeringConnectionRequest,
    DeleteVpcPeeringConnectionRequest, DescribeVpcPeeringConnectionsRequest,
    RejectVpcPeeringConnectionRequest,
};
use serde_json::{json, Value};
use std::sync::Arc;

/// How long a request waits for its accepter (AWS: a week).
const ACCEPT_WITHIN_SECONDS: i64 = 7 * 24 * 3600;
/// How long a rejected, deleted or failed connection stays visible.
const ENDED_VISIBLE_SECONDS: i64 = 2 * 3600;

pub fn peering_not_found(id: &str) -> AwsError {
    AwsError::client(
        "InvalidVpcPeeringConnectionID.NotFound",
        format!("The vpcPeeringConnection ID '{id}' does not exist"),
    )
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn unix_of(t: &str) -> Option<i64> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// The status a connection has now: a request past its expiration has
/// expired.
pub fn current_status(p: &VpcPeeringConnection) -> PeeringStatus {
    if p.status == PeeringStatus::PendingAcceptance
        && unix_of(&p.expiration).is_some_and(|e| unix_now() > e)
    {
        return PeeringStatus::Expired;
    }
    p.status
}

fn vpc_info(w: &World, vpc_id: &str, owner: &str, region: &str, with_cidrs: bool) -> Value {
    let mut v = json!({
        "OwnerId": owner,
        "VpcId": vpc_id,
        "Region": region,
        "PeeringOptions": {
            "AllowDnsResolutionFromRemoteVpc": false,
            "AllowEgressFromLocalClassicLinkToRemoteVpc": false,
            "AllowEgressFromLocalVpcToRemoteClassicLink": false,
        },
    });
    if let Some(vpc) = w.vpcs.get(vpc_id).filter(|_| with_cidrs) {
        v["CidrBlock"] = json!(vpc.cidr);
        v["CidrBlockSet"] = json!(vpc
            .cidrs()
            .iter()
            .map(|c| json!({"CidrBlock": c}))
            .collect::<Vec<_>>());
    }
    v
}

fn status_message(p: &VpcPeeringConnection, status: PeeringStatus) -> String {
    match status {
        PeeringStatus::PendingAcceptance => format!("Pending Acceptance by {}", p.accepter_owner),
        PeeringStatus::Active => "Active".into(),
        PeeringStatus::Expired => "Expired".into(),
        _ if !p.message.is_empty() => p.message.clone(),
        other => other.to_string(),
    }
}

/// A connection as AWS shows it, in `status` (given, for the answers that
/// report a transition) or its current one.
fn render(w: &World, p: &VpcPeeringConnection, status: Option<(&str, String)>) -> Value {
    let current = current_status(p);
    let (code, message) = status.unwrap_or_else(|| (current.as_str(), status_message(p, current)));
    let mut v = json!({
        "VpcPeeringConnectionId": p.id,
        "RequesterVpcInfo": vpc_info(w, &p.requester_vpc_id, &p.requester_owner, &p.region, true),
        "AccepterVpcInfo": vpc_info(w, &p.accepter_vpc_id, &p.accepter_owner, &p.accepter_region,
                                    current == PeeringStatus::Active),
        "Status": {"Code": code, "Message": message},
    });
    if current == PeeringStatus::PendingAcceptance {
        v["ExpirationTime"] = json!(p.expiration);
    }
    with_tags(v, w, &p.id, "Tags")
}

/// The connection `id` as the caller may see it: one of its two owners, in
/// one of its two regions.
fn visible<'w>(
    w: &'w World,
    id: &str,
    account: &str,
    region: &str,
) -> AwsResult<&'w VpcPeeringConnection> {
    w.vpc_peering_connections
        .get(id)
        .map(Arc::as_ref)
        .filter(|p| p.involves(account) && (p.region == region || p.accepter_region == region))
        .filter(|p| !hidden(p))
        .ok_or_else(|| peering_not_found(id))
}

/// Whether an ended connection has been visible long enough.
fn hidden(p: &VpcPeeringConnection) -> bool {
    p.ended
        .as_deref()
        .and_then(unix_of)
        .is_some_and(|t| unix_now() - t > ENDED_VISIBLE_SECONDS)
}

fn invalid_transition(id: &str, from: PeeringStatus, to: &str) -> AwsError {
    AwsError::client(
        "InvalidStateTransition",
        format!("Invalid state transition for {id}, attempted to transition from {from} to {to}"),
    )
}

pub fn create(r: &Req, q: &CreateVpcPeeringConnectionRequest) -> AwsResult<Value> {
    let vpc_id = need(&q.vpc_id, "VpcId")?;
    let peer_vpc_id = need(&q.peer_vpc_id, "PeerVpcId")?;
    let (region, account) = (r.region(), r.account());
    let peer_owner = q.peer_owner_id.as_deref().unwrap_or(account).to_string();
    let peer_region = q.peer_region.as_deref().unwrap_or(region).to_string();
    if !cove_model::region::is_known_region(&peer_region) {
        return Err(AwsError::invalid_parameter_value(format!(
            "Value ({peer_region}) for parameter peerRegion is invalid."
        )));
    }
    if vpc_id == peer_vpc_id {
        return Err(AwsError::invalid_parameter_value(
            "A VPC cannot be peered with itself.",
        ));
    }
    let tags = tag_specs(r, &q.tag_specifications, "vpc-peering-connection")?;
    // Who owns the peer VPC: read before the write, which holds the store.
    let actual_owner = r.store.owner_of::<Vpc>(peer_vpc_id);
    r.store.write(|tx| {
        let requester = find::<Vpc>(&r.world(), vpc_id, region, |v| &v.region, vpc_not_found)?.clone();
        let accepter = tx
            .world
            .vpcs
            .get(peer_vpc_id)
            .filter(|v| v.region == peer_region && actual_owner.as_deref() == Some(peer_owner.as_str()))
            .map(|v| (**v).clone());
        if accepter.is_none() && peer_owner == account {
            return Err(vpc_not_found(peer_vpc_id));
        }
        let open = tx.world.vpc_peering_connections.values().any(|p| {
            p.peer_of(vpc_id) == Some(peer_vpc_id)
                && matches!(current_status(p), PeeringStatus::PendingAcceptance | PeeringStatus::Active)
        });
        if open {
            return Err(AwsError::client(
                "VpcPeeringConnectionAlreadyExists",
                format!("A VPC peering connection between {vpc_id} and {peer_vpc_id} already exists."),
            ));
        }
        let (status, message) = match &accepter {
            None => (
                PeeringStatus::Failed,
                format!("Failed due to the VPC {peer_vpc_id} not existing for account {peer_owner} in {peer_region}"),
            ),
            Some(a) if a.cidrs().iter().any(|c| requester.cidrs().iter().any(|d| d.overlaps(c))) => (
                PeeringStatus::Failed,
                "Failed due to overlapping CIDR ranges".to_string(),
            ),
            Some(_) => (PeeringStatus::PendingAcceptance, String::new()),
        };
        let now = unix_now();
        let p = VpcPeeringConnection {
            id: new_id("pcx"),
            region: region.to_string(),
            requester_vpc_id: vpc_id.to_string(),
            requester_owner: account.to_string(),
            accepter_vpc_id: peer_vpc_id.to_string(),
            accepter_owner: peer_owner.clone(),
            accepter_region: peer_region.clone(),
            status,
            message,
            expiration: cove_model::ids::rfc3339_of(now + ACCEPT_WITHIN_SECONDS),
            ended: (status == PeeringStatus::Failed).then(cove_model::ids::now_rfc3339),
        };
        tx.act_for(account);
        if !tags.is_empty() {
            tx.set_tags(&p.id, tags.clone());
        }
        tx.put(p.clone());
        let initiating = ("initiating-request", format!("Initiating Request to {peer_owner}"));
        Ok(json!({"VpcPeeringConnection": render(&tx.world, &p, Some(initiating))}))
    })
}

pub fn accept(r: &Req, q: &AcceptVpcPeeringConnectionRequest) -> AwsResult<Value> {
    let id = need(&q.vpc_peering_connection_id, "VpcPeeringConnectionId")?;
    let (region, account) = (r.region(), r.account());
    r.store.write(|tx| {
        let mut p = visible(&tx.world, id, account, region)?.clone();
        if p.accepter_owner != account || p.accepter_region != region {
            return Err(AwsError::client(
                "OperationNotPermitted",
                format!("User {account} cannot accept peering {id}: only the accepter VPC's owner, in its region, can."),
            ));
        }
        let status = current_status(&p);
        if status != PeeringStatus::PendingAcceptance {
            return Err(invalid_transition(id, status, "active"));
        }
        p.status = PeeringStatus::Active;
        tx.put(p.clone());
        // Active at once; the answer shows the step AWS reports on the way.
        let provisioning = ("provisioning", "Provisioning".to_string());
        Ok(json!({"VpcPeeringConnection": render(&tx.world, &p, Some(provisioning))}))
    })
}

pub fn reject(r: &Req, q: &RejectVpcPeeringConnectionRequest) -> AwsResult<Value> {
    let id = need(&q.vpc_peering_connection_id, "VpcPeeringConnectionId")?;
    let (region, account) = (r.region(), r.account());
    r.store.write(|tx| {
        let mut p = visible(&tx.world, id, account, region)?.clone();
        if p.accepter_owner != account {
            return Err(AwsError::client(
                "OperationNotPermitted",
                format!(
                    "User {account} cannot reject peering {id}: only the accepter VPC's owner can."
                ),
            ));
        }
        let status = current_status(&p);
        if status != PeeringStatus::PendingAcceptance {
            return Err(invalid_transition(id, status, "rejected"));
        }
        p.status = PeeringStatus::Rejected;
        p.message = format!("Rejected by {account}");
        p.ended = Some(cove_model::ids::now_rfc3339());
        tx.put(p);
        Ok(json!({"Return": true}))
    })
}

pub fn delete(r: &Req, q: &DeleteVpcPeeringConnectionRequest) -> AwsResult<Value> {
    let id = need(&q.vpc_peering_connection_id, "VpcPeeringConnectionId")?;
    let (region, account) = (r.region(), r.account());
    r.store.write(|tx| {
        let mut p = visible(&tx.world, id, account, region)?.clone();
        let status = current_status(&p);
        let deletable = status == PeeringStatus::Active
            || (status == PeeringStatus::PendingAcceptance && p.requester_owner == account);
        if !deletable {
            return Err(invalid_transition(id, status, "deleted"));
        }
        mark_deleted(&mut p, account);
        tx.put(p);
        Ok(json!({"Return": true}))
    })
}

fn mark_deleted(p: &mut VpcPeeringConnection, by: &str) {
    p.status = PeeringStatus::Deleted;
    p.message = format!("Deleted by {by}");
    p.ended = Some(cove_model::ids::now_rfc3339());
}

/// DeleteVpc's part: the VPC's open connections are deleted with it
/// (whichever account stores them).
pub fn delete_with_vpc(tx: &mut cove_store::Tx, vpc_id: &str, account: &str) {
    let open: Vec<VpcPeeringConnection> = tx
        .world
        .vpc_peering_connections
        .values()
        .filter(|p| {
            p.peer_of(vpc_id).is_some()
                && matches!(
                    p.status,
                    PeeringStatus::PendingAcceptance | PeeringStatus::Active
                )
        })
        .map(|p| (**p).clone())
        .collect();
    for mut p in open {
        mark_deleted(&mut p, account);
        tx.put(p);
    }
}

fn field(w: &World, p: &VpcPeeringConnection, account: &str, name: &str) -> FieldValues {
    let cidrs = |vpc: &str| -> FieldValues {
        Some(
            w.vpcs
                .get(vpc)
                .map(|v| v.cidrs().iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
        )
    };
    match name {
        "vpc-peering-connection-id" => one(&p.id),
        "status-code" => one(current_status(p)),
        "status-message" => one(status_message(p, current_status(p))),
        "expiration-time" => one(&p.expiration),
        "requester-vpc-info.vpc-id" => one(&p.requester_vpc_id),
        "requester-vpc-info.owner-id" => one(&p.requester_owner),
        "requester-vpc-info.cidr-block" => cidrs(&p.requester_vpc_id),
        "accepter-vpc-info.vpc-id" => one(&p.accepter_vpc_id),
        "accepter-vpc-info.owner-id" => one(&p.accepter_owner),
        "accepter-vpc-info.cidr-block" => cidrs(&p.accepter_vpc_id),
        _ => common_field(w, &p.id, account, name),
    }
}

pub fn describe(r: &Req, q: &DescribeVpcPeeringConnectionsRequest) -> AwsResult<Value> {
    let all = r.store.snapshot();
    let (region, account) = (r.region(), r.account());
    // The caller's connections in this region, from either end, under the
    // request's region so that one selection, filter and paging path serves.
    let mut mine = World::default();
    for p in all.vpc_peering_connections.values() {
        if p.involves(account) && (p.region == region || p.accepter_region == region) && !hidden(p)
        {
            let mut seen = (**p).clone();
            seen.region = region.to_string();
            mine.vpc_peering_connections
                .insert(p.id.clone(), Arc::new(seen));
            if let Some(t) = all.tags.get(&p.id) {
                mine.tags.insert(p.id.clone(), t.clone());
            }
        }
    }
    let describe = Describe::of(q, "VpcPeeringConnectionIds", &q.vpc_peering_connection_ids);
    let (items, next) = describe.run::<VpcPeeringConnection>(
        &mine,
        |p| &p.region,
        region,
        peering_not_found,
        |p, n| field(&all, p, account, n),
    )?;
    let items = items
        .iter()
        .filter_map(|p| all.vpc_peering_connections.get(&p.id))
        .map(|p| render(&all, p, None))
        .collect();
    Ok(listing("VpcPeeringConnections", items, next))
}
