//! Elastic network interfaces: creation in a subnet (private IP, security
//! groups of the subnet's VPC), deletion guarded by `InvalidNetworkInterface.InUse`,
//! describe, and `new_eni`, which endpoints, NAT gateways and jobs use to make
//! the requester-managed ENIs AWS creates on a customer's behalf.

use crate::common::*;
use crate::subnets;
use cove_model::filter::FieldValues;
use cove_model::ids::{new_id, new_mac};
use cove_model::region;
use cove_model::vpc::*;
use cove_model::world::{Tags, World};
use cove_model::{AwsError, AwsResult};
use cove_shapes::ec2;
use cove_store::Tx;
use serde_json::{json, Value};
use std::net::Ipv4Addr;

/// At most this many security groups per ENI (and per interface endpoint).
pub const MAX_GROUPS_PER_INTERFACE: usize = 5;

/// Builds and stores one ENI in `subnet`. Requester-managed ENIs (those AWS
/// makes for endpoints, NAT gateways and managed jobs) start `in-use`.
#[allow(clippy::too_many_arguments)]
pub fn new_eni(
    tx: &mut Tx,
    subnet: &Subnet,
    private_ip: Ipv4Addr,
    group_ids: Vec<String>,
    description: String,
    interface_type: InterfaceType,
    requester_managed: bool,
    requester_id: Option<String>,
) -> NetworkInterface {
    let eni = NetworkInterface {
        id: new_id("eni"),
        region: subnet.region.clone(),
        vpc_id: subnet.vpc_id.clone(),
        subnet_id: subnet.id.clone(),
        availability_zone: subnet.availability_zone.clone(),
        private_ip,
        mac_address: new_mac(),
        description,
        group_ids,
        status: if requester_managed {
            EniStatus::InUse
        } else {
            EniStatus::Available
        },
        interface_type,
        requester_managed,
        requester_id,
        source_dest_check: true,
        attachment: None,
        host: None,
    };
    tx.put(eni.clone());
    eni
}

/// The id of a VPC's `default` security group, if it has one.
pub fn default_group(world: &World, vpc_id: &str) -> Option<String> {
    world
        .security_groups
        .values()
        .find(|g| g.vpc_id == vpc_id && g.name == "default")
        .map(|g| g.id.clone())
}

/// Checks the security groups requested for an interface in `vpc_id`:
/// duplicates are dropped, at most five, each must exist in the region and
/// belong to the VPC. An empty request means the VPC's default group.
pub fn check_groups(
    world: &World,
    region: &str,
    vpc_id: &str,
    requested: &[String],
) -> AwsResult<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for g in requested {
        if !ids.contains(g) {
            ids.push(g.clone());
        }
    }
    if ids.is_empty() {
        return Ok(default_group(world, vpc_id).into_iter().collect());
    }
    if ids.len() > MAX_GROUPS_PER_INTERFACE {
        return Err(groups_limit_error());
    }
    for id in &ids {
        let g = find::<SecurityGroup>(world, id, region, |g| &g.region, group_not_found)?;
        if g.vpc_id != vpc_id {
            return Err(AwsError::invalid_parameter_value(
                "You have specified two resources that belong to different networks.",
            ));
        }
    }
    Ok(ids)
}

pub fn groups_limit_error() -> AwsError {
    AwsError::client(
        "SecurityGroupsPerInterfaceLimitExceeded",
        "The maximum number of security groups per interface has been reached.",
    )
}

/// `[{GroupId, GroupName}]`, names looked up in the world.
pub fn group_set(world: &World, ids: &[String]) -> Value {
    Value::Array(
        ids.iter()
            .map(|id| {
                let name = world
                    .security_groups
                    .get(id)
                    .map(|g| g.name.clone())
                    .unwrap_or_default();
                json!({"GroupId": id, "GroupName": name})
            })
            .collect(),
    )
}

pub fn render_eni(world: &World, e: &NetworkInterface, account: &str) -> Value {
    let dns = region::private_dns_name(&e.region, e.private_ip);
    let mut v = json!({
        "AvailabilityZone": e.availability_zone,
        "Description": e.description,
        "Groups": group_set(world, &e.group_ids),
        "InterfaceType": e.interface_type,
        "Ipv6Addresses": [],
        "MacAddress": e.mac_address,
        "NetworkInterfaceId": e.id,
        "OwnerId": account,
        "PrivateDnsName": dns,
        "PrivateIpAddress": e.private_ip,
        "PrivateIpAddresses": [{
            "Primary": true,
            "PrivateIpAddress": e.private_ip,
            "PrivateDnsName": dns,
        }],
        "RequesterManaged": e.requester_managed,
        "SourceDestCheck": e.source_dest_check,
        "Status": e.status,
        "SubnetId": e.subnet_id,
        "VpcId": e.vpc_id,
    });
    if let Some(id) = &e.requester_id {
        v["RequesterId"] = json!(id);
    }
    // An Elastic IP on the ENI shows on the ENI and on its address.
    if let Some((address, assoc)) = world.addresses.values().find_map(|a| {
        a.association
            .as_ref()
            .filter(|x| x.network_interface_id == e.id)
            .map(|x| (a, x))
    }) {
        let association = json!({
            "AllocationId": address.allocation_id,
            "AssociationId": assoc.association_id,
            "IpOwnerId": account,
            "PublicDnsName": "",
            "PublicIp": address.public_ip,
        });
        v["PrivateIpAddresses"][0]["Association"] = association.clone();
        v["Association"] = association;
    }
    if let Some(a) = &e.attachment {
        v["Attachment"] = json!({
            "AttachmentId": a.attachment_id,
            "AttachTime": a.attach_time,
            "DeleteOnTermination": true,
            "DeviceIndex": 0,
            "InstanceOwnerId": a.instance_owner_id,
            "Status": a.status,
        });
    }
    with_tags(v, world, &e.id, "TagSet")
}

fn unsupported(what: &str) -> AwsError {
    AwsError::invalid_parameter_value(format!(
        "{what} is not supported by Cove: network interfaces have one private IPv4 address."
    ))
}

pub fn create_network_interface(
    r: &Req,
    q: &ec2::CreateNetworkInterfaceRequest,
) -> AwsResult<Value> {
    let subnet_id = need(&q.subnet_id, "SubnetId")?.to_string();
    match q.interface_type.as_deref() {
        None | Some("interface") => {}
        Some(other) => {
            return Err(AwsError::invalid_parameter_value(format!(
                "The interface type '{other}' is not supported by Cove."
            )))
        }
    }
    for (name, count) in [
        ("Ipv6AddressCount", q.ipv6_address_count),
        ("Ipv4PrefixCount", q.ipv4_prefix_count),
        ("Ipv6PrefixCount", q.ipv6_prefix_count),
        (
            "SecondaryPrivateIpAddressCount",
            q.secondary_private_ip_address_count,
        ),
    ] {
        if count.is_some_and(|n| n > 0) {
            return Err(unsupported(name));
        }
    }
    for (name, empty) in [
        ("Ipv6Addresses", list(&q.ipv6_addresses).is_empty()),
        ("Ipv4Prefixes", list(&q.ipv4_prefixes).is_empty()),
        ("Ipv6Prefixes", list(&q.ipv6_prefixes).is_empty()),
    ] {
        if !empty {
            return Err(unsupported(name));
        }
    }
    if q.enable_primary_ipv6 == Some(true) {
        return Err(unsupported("EnablePrimaryIpv6"));
    }
    // `PrivateIpAddresses` may name the primary address only.
    let mut requested_ip = q.private_ip_address.clone();
    let specs = list(&q.private_ip_addresses);
    if specs.len() > 1 || specs.iter().any(|s| s.primary == Some(false)) {
        return Err(unsupported("Secondary private IP addresses"));
    }
    if let Some(ip) = specs.first().and_then(|s| s.private_ip_address.as_deref()) {
        match &requested_ip {
            Some(p) if p != ip => {
                return Err(AwsError::invalid_parameter_combination(
                    "The primary private IP address is specified twice with different values.",
                ))
            }
            _ => requested_ip = Some(ip.to_string()),
        }
    }
    let description = q.description.clone().unwrap_or_default();
    let groups = list(&q.groups);
    let tags = tag_specs(r, &q.tag_specifications, "network-interface")?;
    let host = placed_host(&r.store.snapshot(), &tags)?;
    let (region, account) = (r.region(), r.account());
    let token = &q.client_token;
    r.write(|tx| {
        let subnet = find::<Subnet>(
            &tx.world,
            &subnet_id,
            region,
            |s| &s.region,
            subnet_not_found,
        )?
        .clone();
        let group_ids = check_groups(&tx.world, region, &subnet.vpc_id, groups)?;
        let ip = subnets::allocate_ip(&tx.world, &subnet, requested_ip.as_deref())?;
        let eni = new_eni(
            tx,
            &subnet,
            ip,
            group_ids,
            description.clone(),
            InterfaceType::Interface,
            false,
            None,
        );
        let eni = match &host {
            Some(_) => {
                let pinned = NetworkInterface {
                    host: host.clone(),
                    ..eni
                };
                tx.put(pinned.clone());
                pinned
            }
            None => eni,
        };
        if !tags.is_empty() {
            tx.set_tags(&eni.id, tags.clone());
        }
        let mut out = json!({"NetworkInterface": render_eni(&tx.world, &eni, account)});
        if let Some(t) = token {
            out["ClientToken"] = json!(t);
        }
        Ok(out)
    })
}

/// The host a new ENI no instance owns runs on (`None`: the control
/// plane's): the one its `cove:host` tag names, which must be registered
/// and alive, else where the control plane's placement puts it.
fn placed_host(world: &World, tags: &Tags) -> AwsResult<Option<String>> {
    let Some(id) = tags.get(cove_model::hosts::HOST_TAG) else {
        return Ok(cove_model::hosts::place_new_eni(world));
    };
    match world.hosts.get(id) {
        Some(h) if h.state == cove_model::hosts::HostState::Available => Ok(Some(id.clone())),
        Some(_) => Err(AwsError::invalid_parameter_value(format!(
            "The host '{id}' named by the {} tag is lost.",
            cove_model::hosts::HOST_TAG
        ))),
        None => Err(AwsError::invalid_parameter_value(format!(
            "The host '{id}' named by the {} tag is not registered.",
            cove_model::hosts::HOST_TAG
        ))),
    }
}

/// Deletes an ENI with what hangs off it: its flow logs, and the association
/// of any Elastic IP with it (an address Cove allocated for the ENI itself,
/// tagged as managed, is released with it). Callers check that it may go.
pub fn drop_eni(tx: &mut Tx, id: &str) {
    let addresses: Vec<Address> = tx
        .world
        .addresses
        .values()
        .filter(|a| {
            a.association
                .as_ref()
                .is_some_and(|x| x.network_interface_id == id)
        })
        .map(|x| (**x).clone())
        .collect();
    for mut a in addresses {
        if crate::managed::managed_by(&tx.world, &a.allocation_id).is_some() {
            tx.delete::<Address>(&a.allocation_id);
            tx.set_tags(&a.allocation_id, Default::default());
            continue;
        }
        a.association = None;
        tx.put(a);
    }
    let flow_logs: Vec<String> = tx
        .world
        .flow_logs
        .values()
        .filter(|f| f.resource_id == id)
        .map(|f| f.id.clone())
        .collect();
    for f in flow_logs {
        tx.delete::<FlowLog>(&f);
    }
    tx.delete::<NetworkInterface>(id);
}

fn in_use(id: &str) -> AwsError {
    AwsError::client(
        "InvalidNetworkInterface.InUse",
        format!("The network interface '{id}' is currently in use."),
    )
}

pub fn delete_network_interface(
    r: &Req,
    q: &ec2::DeleteNetworkInterfaceRequest,
) -> AwsResult<Value> {
    let id = need(&q.network_interface_id, "NetworkInterfaceId")?.to_string();
    let region = r.region();
    r.write(|tx| {
        let eni = find::<NetworkInterface>(&tx.world, &id, region, |e| &e.region, eni_not_found)?;
        if eni.attachment.is_some() || eni.status == EniStatus::InUse || eni.requester_managed {
            return Err(in_use(&id));
        }
        drop_eni(tx, &id);
        Ok(json!({}))
    })
}

fn eni_field(w: &World, e: &NetworkInterface, account: &str, name: &str) -> FieldValues {
    match name {
        "network-interface-id" => one(&e.id),
        "subnet-id" => one(&e.subnet_id),
        "vpc-id" => one(&e.vpc_id),
        "availability-zone" => one(&e.availability_zone),
        "private-ip-address" | "addresses.private-ip-address" => one(e.private_ip),
        "addresses.primary" => flag(true),
        "private-dns-name" => one(region::private_dns_name(&e.region, e.private_ip)),
        "status" => one(e.status),
        "group-id" => Some(e.group_ids.clone()),
        "group-name" => Some(
            e.group_ids
                .iter()
                .filter_map(|g| w.security_groups.get(g).map(|g| g.name.clone()))
                .collect(),
        ),
        "description" => one(&e.description),
        "requester-managed" => flag(e.requester_managed),
        "requester-id" => opt(e.requester_id.as_ref()),
        "interface-type" => one(e.interface_type),
        "mac-address" => one(&e.mac_address),
        "source-dest-check" => flag(e.source_dest_check),
        "attachment.status" => opt(e.attachment.as_ref().map(|a| &a.status)),
        "attachment.attachment-id" => opt(e.attachment.as_ref().map(|a| &a.attachment_id)),
        "attachment.instance-owner-id" => opt(e.attachment.as_ref().map(|a| &a.instance_owner_id)),
        _ => common_field(w, &e.id, account, name),
    }
}

pub fn describe_network_interfaces(
    r: &Req,
    q: &ec2::DescribeNetworkInterfacesRequest,
) -> AwsResult<Value> {
    describe_all(
        r,
        &Describe::of(q, "NetworkInterfaceIds", &q.network_interface_ids),
        "NetworkInterfaces",
        |e: &NetworkInterface| &e.region,
        eni_not_found,
        eni_field,
        render_eni,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use cove_model::world::Tags;
    use cove_store::Store;
    use cove_wire::RequestContext;

    pub const REGION: &str = "us-east-1";
    pub const ACCOUNT: &str = "123456789012";

    pub fn ctx(op: &str) -> RequestContext {
        RequestContext::internal(
            op,
            REGION,
            ACCOUNT,
            &format!("arn:aws:iam::{ACCOUNT}:root"),
            "AKIA",
        )
    }

    /// Calls a handler with its request parsed from JSON, as `handle` does.
    pub fn call_typed<T: serde::de::DeserializeOwned>(
        store: &Store,
        f: impl Fn(&Req, &T) -> AwsResult<Value>,
        input: Value,
    ) -> AwsResult<Value> {
        call_in(store, REGION, f, input)
    }

    /// [`call_typed`] with the request signed for `region`.
    pub fn call_in<T: serde::de::DeserializeOwned>(
        store: &Store,
        region: &str,
        f: impl Fn(&Req, &T) -> AwsResult<Value>,
        input: Value,
    ) -> AwsResult<Value> {
        let mut c = ctx("Test");
        c.region = region.into();
        let q = serde_json::from_value(input).expect("a request of the handler's type");
        f(&Req::new(&c, store), &q)
    }

    /// What a test world holds: a VPC with a default group, a main route
    /// table and two subnets in different zones, plus a second VPC.
    pub struct Fixture {
        pub store: Store,
        pub vpc: String,
        pub sg: String,
        pub rtb: String,
        pub subnet_a: String,
        pub subnet_b: String,
        pub subnet_a2: String,
        pub other_vpc: String,
        pub other_sg: String,
        pub other_rtb: String,
    }

    fn vpc(id: &str, cidr: &str) -> Vpc {
        Vpc {
            id: id.into(),
            region: REGION.into(),
            cidr: cove_model::fixtures::net(cidr),
            cidr_association_id: format!("{id}-assoc"),
            is_default: false,
            instance_tenancy: Tenancy::Default,
            enable_dns_support: true,
            enable_dns_hostnames: true,
            enable_network_address_usage_metrics: false,
            dhcp_options_id: "dopt-1".into(),
            secondary_cidrs: vec![],
        }
    }

    fn subnet(id: &str, vpc: &str, cidr: &str, zone: &str) -> Subnet {
        Subnet {
            id: id.into(),
            region: REGION.into(),
            vpc_id: vpc.into(),
            cidr: cove_model::fixtures::net(cidr),
            availability_zone: zone.into(),
            availability_zone_id: format!("{zone}-id"),
            default_for_az: false,
            map_public_ip_on_launch: false,
            held_addresses: Vec::new(),
        }
    }

    fn group(id: &str, vpc: &str, name: &str) -> SecurityGroup {
        SecurityGroup {
            id: id.into(),
            region: REGION.into(),
            vpc_id: vpc.into(),
            name: name.into(),
            description: name.into(),
            ingress: vec![],
            egress: vec![],
        }
    }

    fn table(id: &str, vpc: &Vpc) -> RouteTable {
        RouteTable {
            id: id.into(),
            region: REGION.into(),
            vpc_id: vpc.id.clone(),
            routes: vec![Route {
                destination_cidr: Some(vpc.cidr),
                destination_prefix_list_id: None,
                target: RouteTarget::Local,
                origin: RouteOrigin::CreateRouteTable,
            }],
            associations: vec![],
        }
    }

    pub fn fixture() -> Fixture {
        let store = Store::in_memory().unwrap();
        store
            .write_as(ACCOUNT, |tx| {
                let v = vpc("vpc-1", "10.0.0.0/16");
                let o = vpc("vpc-2", "10.1.0.0/16");
                tx.put(table("rtb-1", &v));
                tx.put(table("rtb-2", &o));
                tx.put(v);
                tx.put(o);
                tx.put(subnet("subnet-a", "vpc-1", "10.0.1.0/24", "us-east-1a"));
                tx.put(subnet("subnet-b", "vpc-1", "10.0.2.0/24", "us-east-1b"));
                tx.put(subnet("subnet-a2", "vpc-1", "10.0.3.0/28", "us-east-1a"));
                tx.put(subnet("subnet-o", "vpc-2", "10.1.1.0/24", "us-east-1a"));
                tx.put(group("sg-1", "vpc-1", "default"));
                tx.put(group("sg-2", "vpc-2", "default"));
                for i in 3..9 {
                    tx.put(group(&format!("sg-{i}"), "vpc-1", &format!("g{i}")));
                }
                Ok(())
            })
            .unwrap();
        Fixture {
            store,
            vpc: "vpc-1".into(),
            sg: "sg-1".into(),
            rtb: "rtb-1".into(),
            subnet_a: "subnet-a".into(),
            subnet_b: "subnet-b".into(),
            subnet_a2: "subnet-a2".into(),
            other_vpc: "vpc-2".into(),
            other_sg: "sg-2".into(),
            other_rtb: "rtb-2".into(),
        }
    }

    fn code(r: AwsResult<Value>) -> String {
        r.err().map(|e| e.code).unwrap_or_default()
    }

    fn host(
        id: &str,
        state: cove_model::hosts::HostState,
        applied: u64,
    ) -> cove_model::hosts::Host {
        cove_model::hosts::Host {
            state,
            applied_position: applied,
            ..cove_model::fixtures::host(id, 2, false)
        }
    }

    #[test]
    fn an_address_released_from_a_lost_host_is_held_until_the_host_has_applied_its_release() {
        use cove_model::hosts::{HostState, SYSTEM_ACCOUNT};
        let f = fixture();
        let put_host = |h: cove_model::hosts::Host| {
            f.store
                .write(|tx| {
                    tx.act_for(SYSTEM_ACCOUNT);
                    tx.put(h);
                    Ok(())
                })
                .unwrap()
        };
        put_host(host("b", HostState::Available, 0));
        let eni = f
            .store
            .write_as(ACCOUNT, |tx| {
                let mut eni =
                    crate::create_managed_eni(tx, "subnet-a", vec![], "job".into(), "sagemaker")?;
                eni.host = Some("b".into());
                tx.put(eni.clone());
                Ok(eni)
            })
            .unwrap();
        put_host(host("b", HostState::Lost, 0));
        let released_after = f
            .store
            .write(|tx| {
                crate::delete_managed_eni_of_lost_host(tx, &eni.id);
                Ok(tx.position())
            })
            .unwrap();
        let world = f.store.snapshot();
        let subnet = world.subnets["subnet-a"].clone();
        assert!(!world.network_interfaces.contains_key(&eni.id));
        assert_eq!(
            subnet.held_addresses,
            [cove_model::vpc::HeldAddress {
                ip: eni.private_ip,
                host: "b".into(),
                released_after,
            }]
        );
        // Neither asked for nor handed out while held.
        let ip = eni.private_ip.to_string();
        let e = crate::allocate_ip(&world, &subnet, Some(&ip)).unwrap_err();
        assert_eq!(e.code, "InvalidIPAddress.InUse");
        assert_ne!(
            crate::allocate_ip(&world, &subnet, None).unwrap(),
            eni.private_ip
        );
        let lift = || {
            f.store
                .write(|tx| Ok(crate::lift_held_addresses(tx)))
                .unwrap()
        };
        assert_eq!(lift(), 0, "the host is still lost");
        put_host(host("b", HostState::Available, released_after));
        assert_eq!(lift(), 0, "back, but it has not applied the release yet");
        put_host(host("b", HostState::Available, released_after + 1));
        assert_eq!(lift(), 1);
        let world = f.store.snapshot();
        let subnet = world.subnets["subnet-a"].clone();
        assert!(subnet.held_addresses.is_empty());
        assert_eq!(
            crate::allocate_ip(&world, &subnet, Some(&ip)).unwrap(),
            eni.private_ip
        );
    }

    #[test]
    fn an_address_of_a_host_that_is_gone_is_not_held_on() {
        let f = fixture();
        let subnet = f.store.snapshot().subnets["subnet-a"].clone();
        f.store
            .write(|tx| {
                let mut s = (*subnet).clone();
                s.held_addresses.push(cove_model::vpc::HeldAddress {
                    ip: Ipv4Addr::new(10, 0, 1, 4),
                    host: "removed".into(),
                    released_after: 0,
                });
                tx.put(s);
                Ok(())
            })
            .unwrap();
        let lifted = f
            .store
            .write(|tx| Ok(crate::lift_held_addresses(tx)))
            .unwrap();
        assert_eq!(lifted, 1);
    }

    #[test]
    fn create_render_describe_delete() {
        let f = fixture();
        let out = call_typed(
            &f.store,
            create_network_interface,
            json!({
                "SubnetId": f.subnet_a, "Description": "mine", "ClientToken": "tok",
                "TagSpecifications": [{"ResourceType": "network-interface",
                                       "Tags": [{"Key": "Name", "Value": "x"}]}]
            }),
        )
        .unwrap();
        assert_eq!(out["ClientToken"], "tok");
        let eni = &out["NetworkInterface"];
        assert_eq!(eni["PrivateIpAddress"], "10.0.1.4");
        assert_eq!(eni["Status"], "available");
        assert_eq!(eni["Groups"][0]["GroupId"], f.sg);
        assert_eq!(eni["Groups"][0]["GroupName"], "default");
        assert_eq!(eni["PrivateDnsName"], "ip-10-0-1-4.ec2.internal");
        assert_eq!(eni["TagSet"][0]["Key"], "Name");
        assert!(eni.get("Tags").is_none());
        assert_eq!(eni["RequesterManaged"], false);
        let id = eni["NetworkInterfaceId"].as_str().unwrap().to_string();

        let second = call_typed(
            &f.store,
            create_network_interface,
            json!({"SubnetId": f.subnet_a, "PrivateIpAddress": "10.0.1.4"}),
        );
        assert_eq!(code(second), "InvalidIPAddress.InUse");

        let d = call_typed(
            &f.store,
            describe_network_interfaces,
            json!({"Filters": [{"Name": "addresses.private-ip-address", "Values": ["10.0.1.*"]},
                               {"Name": "group-name", "Values": ["default"]}]}),
        )
        .unwrap();
        assert_eq!(d["NetworkInterfaces"].as_array().unwrap().len(), 1);
        let d = call_typed(
            &f.store,
            describe_network_interfaces,
            json!({"Filters": [{"Name": "requester-managed", "Values": ["true"]}]}),
        )
        .unwrap();
        assert_eq!(d["NetworkInterfaces"].as_array().unwrap().len(), 0);
        let bad = call_typed(
            &f.store,
            describe_network_interfaces,
            json!({"NetworkInterfaceIds": ["eni-nope"]}),
        );
        assert_eq!(code(bad), "InvalidNetworkInterfaceID.NotFound");

        call_typed(
            &f.store,
            delete_network_interface,
            json!({"NetworkInterfaceId": id}),
        )
        .unwrap();
        assert!(f.store.snapshot().network_interfaces.is_empty());
        assert!(f.store.snapshot().tags.get(&id).is_none());
        let again = call_typed(
            &f.store,
            delete_network_interface,
            json!({"NetworkInterfaceId": id}),
        );
        assert_eq!(code(again), "InvalidNetworkInterfaceID.NotFound");
    }

    #[test]
    fn group_rules() {
        let f = fixture();
        let other = call_typed(
            &f.store,
            create_network_interface,
            json!({"SubnetId": f.subnet_a, "Groups": [f.other_sg]}),
        );
        assert_eq!(code(other), "InvalidParameterValue");
        let missing = call_typed(
            &f.store,
            create_network_interface,
            json!({"SubnetId": f.subnet_a, "Groups": ["sg-nope"]}),
        );
        assert_eq!(code(missing), "InvalidGroup.NotFound");
        let six: Vec<String> = (3..9).map(|i| format!("sg-{i}")).collect();
        let many = call_typed(
            &f.store,
            create_network_interface,
            json!({"SubnetId": f.subnet_a, "Groups": six}),
        );
        assert_eq!(code(many), "SecurityGroupsPerInterfaceLimitExceeded");
        let typ = call_typed(
            &f.store,
            create_network_interface,
            json!({"SubnetId": f.subnet_a, "InterfaceType": "efa"}),
        );
        assert_eq!(code(typ), "InvalidParameterValue");
        let sec = call_typed(
            &f.store,
            create_network_interface,
            json!({"SubnetId": f.subnet_a, "SecondaryPrivateIpAddressCount": 2}),
        );
        assert_eq!(code(sec), "InvalidParameterValue");
        let nosub = call_typed(
            &f.store,
            create_network_interface,
            json!({"SubnetId": "subnet-nope"}),
        );
        assert_eq!(code(nosub), "InvalidSubnetID.NotFound");
        assert!(f.store.snapshot().network_interfaces.is_empty());
    }

    #[test]
    fn requester_managed_enis_are_in_use() {
        let f = fixture();
        let id = f
            .store
            .write_as(ACCOUNT, |tx| {
                let s = tx.world.subnets.get("subnet-a").cloned().unwrap();
                let e = new_eni(
                    tx,
                    &s,
                    Ipv4Addr::new(10, 0, 1, 9),
                    vec!["sg-1".into()],
                    "managed".into(),
                    InterfaceType::VpcEndpoint,
                    true,
                    Some("amazon".into()),
                );
                tx.set_tags(&e.id, Tags::new());
                Ok(e.id)
            })
            .unwrap();
        let e = f.store.snapshot().network_interfaces.get(&id).cloned();
        assert_eq!(e.map(|e| e.status), Some(EniStatus::InUse));
        let del = call_typed(
            &f.store,
            delete_network_interface,
            json!({"NetworkInterfaceId": id}),
        );
        let err = del.unwrap_err();
        assert_eq!(err.code, "InvalidNetworkInterface.InUse");
        assert_eq!(
            err.message,
            format!("The network interface '{id}' is currently in use.")
        );
    }
}
