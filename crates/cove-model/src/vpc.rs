//! The VPC resources Cove keeps, as stored. Field names follow the EC2 API so
//! a stored document reads like the resource AWS would describe.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vpc {
    pub id: String,
    pub region: String,
    pub cidr: String,
    pub cidr_association_id: String,
    pub is_default: bool,
    pub instance_tenancy: String,
    pub enable_dns_support: bool,
    pub enable_dns_hostnames: bool,
    pub enable_network_address_usage_metrics: bool,
    pub dhcp_options_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subnet {
    pub id: String,
    pub region: String,
    pub vpc_id: String,
    pub cidr: String,
    pub availability_zone: String,
    pub availability_zone_id: String,
    pub default_for_az: bool,
    pub map_public_ip_on_launch: bool,
}

/// Who a security-group rule admits: exactly one peer per rule, as AWS's
/// security group rules (each with its own `sgr-` id) do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SgPeer {
    Cidr { cidr: String },
    PrefixList { id: String },
    Group { group_id: String, user_id: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SgRule {
    pub id: String,
    /// Normalised protocol: `tcp`, `udp`, `icmp`, `icmpv6` or a number, `-1` for all.
    pub protocol: String,
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
    pub protocol: String,
    pub allow: bool,
    pub cidr: String,
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub destination_cidr: Option<String>,
    pub destination_prefix_list_id: Option<String>,
    pub target: RouteTarget,
    /// `CreateRouteTable`, `CreateRoute` or `EnableVgwRoutePropagation`, as AWS reports.
    pub origin: String,
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
    pub private_ip: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    pub allocation_id: String,
    pub region: String,
    pub public_ip: String,
    pub network_border_group: String,
    pub association: Option<AddressAssociation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NatGateway {
    pub id: String,
    pub region: String,
    pub vpc_id: String,
    pub subnet_id: String,
    /// `public` or `private`.
    pub connectivity_type: String,
    pub allocation_id: Option<String>,
    pub public_ip: Option<String>,
    pub private_ip: String,
    pub network_interface_id: String,
    /// `pending`, `available`, `deleting`, `deleted` or `failed`.
    pub state: String,
    pub create_time: String,
    pub delete_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VpcEndpoint {
    pub id: String,
    pub region: String,
    pub vpc_id: String,
    pub service_name: String,
    /// `Gateway` or `Interface`.
    pub endpoint_type: String,
    pub policy_document: Option<String>,
    pub route_table_ids: Vec<String>,
    pub subnet_ids: Vec<String>,
    pub group_ids: Vec<String>,
    pub network_interface_ids: Vec<String>,
    pub private_dns_enabled: bool,
    pub state: String,
    pub create_time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EniAttachment {
    pub attachment_id: String,
    pub instance_owner_id: String,
    pub status: String,
    pub attach_time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkInterface {
    pub id: String,
    pub region: String,
    pub vpc_id: String,
    pub subnet_id: String,
    pub availability_zone: String,
    pub private_ip: String,
    pub mac_address: String,
    pub description: String,
    pub group_ids: Vec<String>,
    /// `available` or `in-use`.
    pub status: String,
    pub interface_type: String,
    pub requester_managed: bool,
    pub requester_id: Option<String>,
    pub source_dest_check: bool,
    pub attachment: Option<EniAttachment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowLog {
    pub id: String,
    pub region: String,
    pub resource_id: String,
    pub traffic_type: String,
    /// `cloud-watch-logs` or `s3`.
    pub destination_type: String,
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
    pub source_ip: Option<String>,
    pub destination_ip: Option<String>,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub destination_port: Option<i64>,
    pub client_token: Option<String>,
    /// `FilterAtSource` and `FilterAtDestination` as given (`SourceAddress`,
    /// `SourcePortRange`, `DestinationAddress`, `DestinationPortRange`).
    #[serde(default)]
    pub filter_at_source: Option<serde_json::Value>,
    #[serde(default)]
    pub filter_at_destination: Option<serde_json::Value>,
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
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    pub status_message: Option<String>,
    pub network_path_found: Option<bool>,
    pub forward_path_components: serde_json::Value,
    pub return_path_components: serde_json::Value,
    pub explanations: serde_json::Value,
    pub client_token: Option<String>,
}
