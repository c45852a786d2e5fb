//! The VPC resources Cove keeps, as stored. Field names follow the EC2 API so
//! a stored document reads like the resource AWS would describe. Addresses,
//! CIDRs, protocols, states and kinds are typed: they are parsed once, when
//! a request is checked, and stored as the text AWS uses for them.

use crate::cidr::Cidr;
use crate::protocol::Protocol;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

crate::text_enum! {
    /// `InstanceTenancy` of a VPC.
    pub enum Tenancy { Default = "default", Dedicated = "dedicated", Host = "host" }
}

crate::text_enum! {
    /// What made a route (`Origin`).
    pub enum RouteOrigin {
        CreateRouteTable = "CreateRouteTable",
        CreateRoute = "CreateRoute",
        EnableVgwRoutePropagation = "EnableVgwRoutePropagation",
    }
}

crate::text_enum! {
    /// `ConnectivityType` of a NAT gateway.
    pub enum Connectivity { Public = "public", Private = "private" }
}

crate::text_enum! {
    /// A NAT gateway's lifecycle.
    pub enum NatGatewayState {
        Pending = "pending",
        Available = "available",
        Deleting = "deleting",
        Deleted = "deleted",
        Failed = "failed",
    }
}

impl NatGatewayState {
    /// Whether the gateway is gone or never came up: it holds nothing.
    pub fn is_over(self) -> bool {
        matches!(self, NatGatewayState::Deleted | NatGatewayState::Failed)
    }
}

crate::text_enum! {
    /// `VpcEndpointType`.
    pub enum EndpointType { Gateway = "Gateway", Interface = "Interface" }
}

crate::text_enum! {
    /// A VPC endpoint's lifecycle, as AWS's API writes it.
    pub enum EndpointState {
        Pending = "pending",
        Available = "available",
        Deleting = "deleting",
        Deleted = "deleted",
        Failed = "failed",
    }
}

impl EndpointState {
    /// Whether the endpoint answers: from creation until deletion starts.
    pub fn serves(self) -> bool {
        matches!(self, EndpointState::Pending | EndpointState::Available)
    }
}

crate::text_enum! {
    /// `Status` of a network interface.
    pub enum EniStatus { Available = "available", InUse = "in-use" }
}

crate::text_enum! {
    /// `Status` of a network interface's attachment.
    pub enum AttachmentStatus {
        Attaching = "attaching",
        Attached = "attached",
        Detaching = "detaching",
        Detached = "detached",
    }
}

crate::text_enum! {
    /// `InterfaceType`: who made the network interface.
    pub enum InterfaceType {
        Interface = "interface",
        NatGateway = "nat_gateway",
        VpcEndpoint = "vpc_endpoint",
    }
}

crate::text_enum! {
    /// What traffic a flow log records (`TrafficType`).
    pub enum TrafficType { Accept = "ACCEPT", Reject = "REJECT", All = "ALL" }
}

crate::text_enum! {
    /// Where a flow log delivers (`LogDestinationType`).
    pub enum LogDestinationType { CloudWatchLogs = "cloud-watch-logs", S3 = "s3" }
}

crate::text_enum! {
    /// `Status` of a Reachability Analyzer analysis.
    pub enum AnalysisStatus { Running = "running", Succeeded = "succeeded", Failed = "failed" }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vpc {
    pub id: String,
    pub region: String,
    pub cidr: Cidr,
    pub cidr_association_id: String,
    pub is_default: bool,
    pub instance_tenancy: Tenancy,
    pub enable_dns_support: bool,
    pub enable_dns_hostnames: bool,
    pub enable_network_address_usage_metrics: bool,
    pub dhcp_options_id: String,
    /// Secondary IPv4 CIDR blocks (AssociateVpcCidrBlock), in order.
    #[serde(default)]
    pub secondary_cidrs: Vec<CidrBlockAssociation>,
}

/// A secondary IPv4 CIDR block of a VPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CidrBlockAssociation {
    pub id: String,
    pub cidr: Cidr,
}

impl Vpc {
    /// Every IPv4 CIDR block of the VPC, the primary first.
    pub fn cidrs(&self) -> Vec<Cidr> {
        std::iter::once(self.cidr)
            .chain(self.secondary_cidrs.iter().map(|a| a.cidr))
            .collect()
    }
    /// The VPC's CIDR block that holds `inner`, if one does.
    pub fn cidr_holding(&self, inner: &Cidr) -> Option<Cidr> {
        self.cidrs().into_iter().find(|c| c.contains(inner))
    }
    /// Whether `ip` is in one of the VPC's CIDR blocks.
    pub fn holds_addr(&self, ip: std::net::Ipv4Addr) -> bool {
        self.cidrs().iter().any(|c| c.contains_addr(ip))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subnet {
    pub id: String,
    pub region: String,
    pub vpc_id: String,
    pub cidr: Cidr,
    pub availability_zone: String,
    pub availability_zone_id: String,
    pub default_for_az: bool,
    pub map_public_ip_on_launch: bool,
    /// Private addresses of ENIs released while their host was lost: that
    /// host's kernel may still hold them (a partitioned host runs on), so
    /// no new ENI gets them until the host is back and has applied their
    /// release, or is gone ([`HeldAddress::is_over`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_addresses: Vec<HeldAddress>,
}

/// An address held back after its ENI was released from a lost host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldAddress {
    pub ip: Ipv4Addr,
    /// The lost host whose kernel may still hold it.
    pub host: String,
    /// The store position the release was decided on: the host has removed
    /// the ENI once it has applied a later world.
    pub released_after: u64,
}

impl HeldAddress {
    /// Whether the hold can end in `world` (the whole world, hosts
    /// included): its host is back and has applied a world newer than the
    /// release, or has been removed.
    pub fn is_over(&self, world: &crate::world::World) -> bool {
        match world.hosts.get(&self.host) {
            None => true,
            Some(h) => {
                h.state == crate::hosts::HostState::Available
                    && h.applied_position > self.released_after
            }
        }
    }
}

/// Who a security-group rule admits: exactly one peer per rule, as AWS's
/// security group rules (each with its own `sgr-` id) do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SgPeer {
    Cidr { cidr: Cidr },
    PrefixList { id: String },
    Group { group_id: String, user_id: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SgRule {
    pub id: String,
    pub protocol: Protocol,
    pub from_port: Option<i64>,
    pub to_port: Option<i64>,
    pub peer: SgPeer,
    pub description: Option<String>,
}

impl SgRule {
    /// The key AWS uses to find duplicates: everything but id and description.
    pub fn same_permission(&self, other: &SgRule) -> bool {
        self.protocol == other.protocol
            && self.from_port == other.from_port
            && self.to_port == other.to_port
            && self.peer == other.peer
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub id: String,
    pub region: String,
    pub vpc_id: String,
    pub name: String,
    pub description: String,
    pub ingress: Vec<SgRule>,
    pub egress: Vec<SgRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NaclEntry {
    pub rule_number: i64,
    pub egress: bool,
    pub protocol: Protocol,
    pub allow: bool,
    pub cidr: Cidr,
    pub from_port: Option<i64>,
    pub to_port: Option<i64>,
    pub icmp_type: Option<i64>,
    pub icmp_code: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NaclAssociation {
    pub id: String,
    pub subnet_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkAcl {
    pub id: String,
    pub region: String,
    pub vpc_id: String,
    pub is_default: bool,
    /// Entries without the implicit `*` rules (32767), which describe adds.
    pub entries: Vec<NaclEntry>,
    pub associations: Vec<NaclAssociation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum RouteTarget {
    Local,
    Gateway(String),
    NatGateway(String),
    VpcEndpoint(String),
    NetworkInterface(String),
    VpcPeeringConnection(String),
}

impl RouteTarget {
    /// The member a route names its target in, and the target's id
    /// (`local` for the local route), as EC2 shows routes.
    pub fn member(&self) -> (&'static str, &str) {
        match self {
            RouteTarget::Local => ("GatewayId", "local"),
            RouteTarget::Gateway(id) | RouteTarget::VpcEndpoint(id) => ("GatewayId", id),
            RouteTarget::NatGateway(id) => ("NatGatewayId", id),
            RouteTarget::NetworkInterface(id) => ("NetworkInterfaceId", id),
            RouteTarget::VpcPeeringConnection(id) => ("VpcPeeringConnectionId", id),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub destination_cidr: Option<Cidr>,
    pub destination_prefix_list_id: Option<String>,
    pub target: RouteTarget,
    pub origin: RouteOrigin,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteTableAssociation {
    pub id: String,
    pub subnet_id: Option<String>,
    pub gateway_id: Option<String>,
    pub main: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteTable {
    pub id: String,
    pub region: String,
    pub vpc_id: String,
    pub routes: Vec<Route>,
    pub associations: Vec<RouteTableAssociation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InternetGateway {
    pub id: String,
    pub region: String,
    pub attached_vpc_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddressAssociation {
    pub association_id: String,
    pub network_interface_id: String,
    pub private_ip: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    pub allocation_id: String,
    pub region: String,
    pub public_ip: Ipv4Addr,
    pub network_border_group: String,
    pub association: Option<AddressAssociation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NatGateway {
    pub id: String,
    pub region: String,
    pub vpc_id: String,
    pub subnet_id: String,
    pub connectivity_type: Connectivity,
    pub allocation_id: Option<String>,
    pub public_ip: Option<Ipv4Addr>,
    pub private_ip: Ipv4Addr,
    pub network_interface_id: String,
    pub state: NatGatewayState,
    pub create_time: String,
    pub delete_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VpcEndpoint {
    pub id: String,
    pub region: String,
    pub vpc_id: String,
    pub service_name: String,
    pub endpoint_type: EndpointType,
    pub policy_document: Option<String>,
    pub route_table_ids: Vec<String>,
    pub subnet_ids: Vec<String>,
    pub group_ids: Vec<String>,
    pub network_interface_ids: Vec<String>,
    pub private_dns_enabled: bool,
    pub state: EndpointState,
    pub create_time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EniAttachment {
    pub attachment_id: String,
    pub instance_owner_id: String,
    pub status: AttachmentStatus,
    pub attach_time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkInterface {
    pub id: String,
    pub region: String,
    pub vpc_id: String,
    pub subnet_id: String,
    pub availability_zone: String,
    pub private_ip: Ipv4Addr,
    pub mac_address: String,
    pub description: String,
    pub group_ids: Vec<String>,
    pub status: EniStatus,
    pub interface_type: InterfaceType,
    pub requester_managed: bool,
    pub requester_id: Option<String>,
    pub source_dest_check: bool,
    pub attachment: Option<EniAttachment>,
    /// The host the ENI runs on (`crate::hosts`); `None`: the control
    /// plane's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

crate::text_enum! {
    /// `Status.Code` of a VPC peering connection.
    pub enum PeeringStatus {
        PendingAcceptance = "pending-acceptance",
        Active = "active",
        Rejected = "rejected",
        Deleted = "deleted",
        Failed = "failed",
        Expired = "expired",
    }
}

/// A VPC peering connection between a requester VPC and an accepter VPC
/// (of any account, in any region). Stored as the requester's; the
/// accepter's account sees it too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VpcPeeringConnection {
    pub id: String,
    /// The requester's region.
    pub region: String,
    pub requester_vpc_id: String,
    pub requester_owner: String,
    pub accepter_vpc_id: String,
    pub accepter_owner: String,
    pub accepter_region: String,
    pub status: PeeringStatus,
    pub message: String,
    /// When a pending request stops being acceptable (RFC 3339).
    pub expiration: String,
    /// When it was rejected, deleted or failed: it stays visible for a while.
    pub ended: Option<String>,
}

impl VpcPeeringConnection {
    pub fn is_active(&self) -> bool {
        self.status == PeeringStatus::Active
    }
    /// The VPC at the other end from `vpc_id`, if this connection joins it.
    pub fn peer_of(&self, vpc_id: &str) -> Option<&str> {
        if self.requester_vpc_id == vpc_id {
            Some(&self.accepter_vpc_id)
        } else if self.accepter_vpc_id == vpc_id {
            Some(&self.requester_vpc_id)
        } else {
            None
        }
    }
    /// Whether `account` is one of its two owners.
    pub fn involves(&self, account: &str) -> bool {
        self.requester_owner == account || self.accepter_owner == account
    }
}

/// One CIDR of a customer-managed prefix list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrefixListEntry {
    pub cidr: Cidr,
    pub description: Option<String>,
}

/// A customer-managed prefix list (IPv4). Every change to its entries is a
/// new version; the old ones stay readable and restorable, as on AWS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagedPrefixList {
    pub id: String,
    pub region: String,
    pub owner_id: String,
    pub name: String,
    pub max_entries: i64,
    /// The entries of versions 1, 2, … in order; the last is current.
    pub versions: Vec<Vec<PrefixListEntry>>,
}

impl ManagedPrefixList {
    pub fn version(&self) -> i64 {
        i64::try_from(self.versions.len()).unwrap_or(i64::MAX)
    }
    pub fn entries(&self) -> &[PrefixListEntry] {
        self.versions.last().map(Vec::as_slice).unwrap_or_default()
    }
    pub fn cidrs(&self) -> Vec<Cidr> {
        self.entries().iter().map(|e| e.cidr).collect()
    }
}

/// A DHCP options set: `domain-name`, `domain-name-servers` and the rest,
/// each key with its values as given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DhcpOptions {
    pub id: String,
    pub region: String,
    pub owner_id: String,
    pub configurations: Vec<(String, Vec<String>)>,
}

impl DhcpOptions {
    pub fn values(&self, key: &str) -> &[String] {
        self.configurations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowLog {
    pub id: String,
    pub region: String,
    pub resource_id: String,
    pub traffic_type: TrafficType,
    pub destination_type: LogDestinationType,
    pub log_group_name: Option<String>,
    pub log_destination: Option<String>,
    pub deliver_logs_permission_arn: Option<String>,
    pub log_format: String,
    pub max_aggregation_interval: i64,
    pub create_time: String,
}

impl FlowLog {
    /// Whether the flow log captures an ENI's traffic: it was made for the
    /// ENI's VPC, its subnet, or the ENI itself.
    pub fn covers(&self, eni: &NetworkInterface) -> bool {
        self.resource_id == eni.vpc_id
            || self.resource_id == eni.subnet_id
            || self.resource_id == eni.id
    }
}

/// The version-2 default flow-log format.
pub const DEFAULT_FLOW_LOG_FORMAT: &str = "${version} ${account-id} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${packets} ${bytes} ${start} ${end} ${action} ${log-status}";

/// A Reachability Analyzer path: what to analyze, from where to where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkInsightsPath {
    pub id: String,
    pub region: String,
    pub arn: String,
    pub created_date: String,
    pub source: String,
    pub source_arn: String,
    pub destination: Option<String>,
    pub destination_arn: Option<String>,
    pub source_ip: Option<Ipv4Addr>,
    pub destination_ip: Option<Ipv4Addr>,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    pub destination_port: Option<i64>,
    pub client_token: Option<String>,
    /// `FilterAtSource` and `FilterAtDestination` as given.
    #[serde(default)]
    pub filter_at_source: Option<PathFilter>,
    #[serde(default)]
    pub filter_at_destination: Option<PathFilter>,
}

/// A filter at one end of a Reachability Analyzer path, stored in the API's
/// shape so that it is described back as it was given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PathFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port_range: Option<PathPortRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_address: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port_range: Option<PathPortRange>,
}

/// A port range of a [`PathFilter`], its ends as given: an open end means
/// 0 or 65535, and the analysis clamps ends outside that range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PathPortRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_port: Option<i64>,
}

/// One run of the analysis of a path: a snapshot of its result, rendered in
/// the API's shape when it ran (later configuration changes do not alter it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkInsightsAnalysis {
    pub id: String,
    pub region: String,
    pub arn: String,
    pub path_id: String,
    pub start_date: String,
    pub status: AnalysisStatus,
    pub status_message: Option<String>,
    pub network_path_found: Option<bool>,
    pub forward_path_components: serde_json::Value,
    pub return_path_components: serde_json::Value,
    pub explanations: serde_json::Value,
    pub client_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Documents as the string-typed model stored them still load, and
    /// store back to the same text.
    #[test]
    fn stored_documents_keep_their_text() {
        let eni = json!({
            "id": "eni-1", "region": "us-east-1", "vpc_id": "vpc-1",
            "subnet_id": "subnet-a", "availability_zone": "us-east-1a",
            "private_ip": "10.0.1.4", "mac_address": "02:00:00:00:00:01",
            "description": "", "group_ids": ["sg-1"], "status": "in-use",
            "interface_type": "nat_gateway", "requester_managed": true,
            "requester_id": "AWS", "source_dest_check": false, "attachment": null
        });
        let parsed: NetworkInterface = serde_json::from_value(eni.clone()).unwrap();
        assert_eq!(parsed.private_ip, Ipv4Addr::new(10, 0, 1, 4));
        assert_eq!(parsed.interface_type, InterfaceType::NatGateway);
        assert_eq!(serde_json::to_value(&parsed).unwrap(), eni);

        let group = json!({
            "id": "sg-1", "region": "us-east-1", "vpc_id": "vpc-1", "name": "g",
            "description": "d", "ingress": [{
                "id": "sgr-1", "protocol": "tcp", "from_port": 22, "to_port": 22,
                "peer": {"kind": "cidr", "cidr": "10.0.0.0/16"}, "description": null
            }],
            "egress": [{
                "id": "sgr-2", "protocol": "-1", "from_port": null, "to_port": null,
                "peer": {"kind": "group", "group_id": "sg-1", "user_id": "123456789012"},
                "description": null
            }]
        });
        let parsed: SecurityGroup = serde_json::from_value(group.clone()).unwrap();
        assert_eq!(parsed.egress[0].protocol, Protocol::All);
        assert_eq!(serde_json::to_value(&parsed).unwrap(), group);

        let route = json!({
            "destination_cidr": "0.0.0.0/0", "destination_prefix_list_id": null,
            "target": {"kind": "nat_gateway", "id": "nat-1"}, "origin": "CreateRoute"
        });
        let parsed: Route = serde_json::from_value(route.clone()).unwrap();
        assert_eq!(parsed.destination_cidr, Some(Cidr::ANY));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), route);

        // Path filters were stored as the request's JSON member.
        let filter = json!({
            "DestinationAddress": "10.0.2.9",
            "DestinationPortRange": {"FromPort": 80, "ToPort": 99999}
        });
        let parsed: PathFilter = serde_json::from_value(filter.clone()).unwrap();
        assert_eq!(parsed.destination_address, Some(Ipv4Addr::new(10, 0, 2, 9)));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), filter);
    }

    /// A value the API would never have stored does not load: the store
    /// refuses to open rather than guess what the rule meant.
    #[test]
    fn values_outside_their_type_do_not_load() {
        let entry = |protocol: &str, cidr: &str| {
            json!({
                "rule_number": 100, "egress": false, "protocol": protocol, "allow": true,
                "cidr": cidr, "from_port": null, "to_port": null,
                "icmp_type": null, "icmp_code": null
            })
        };
        assert!(serde_json::from_value::<NaclEntry>(entry("tcp", "0.0.0.0/0")).is_ok());
        assert!(serde_json::from_value::<NaclEntry>(entry("bogus", "0.0.0.0/0")).is_err());
        assert!(serde_json::from_value::<NaclEntry>(entry("tcp", "10.0.0.0/99")).is_err());
        let state = |s: &str| serde_json::from_value::<NatGatewayState>(json!(s));
        assert_eq!(state("deleting").unwrap(), NatGatewayState::Deleting);
        assert!(state("Deleting").is_err());
    }
}
