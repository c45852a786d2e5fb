//! The EC2 VPC API: business rules for VPCs, subnets, security groups,
//! network ACLs, route tables, gateways, Elastic IPs, endpoints, network
//! interfaces, flow logs and tags. Handlers read a snapshot or run one store
//! transaction; they never touch the kernel (the network reconciler does).

mod common;
mod dhcp_options;
mod endpoints;
pub mod flow_logs;
mod gateways;
pub mod insights;
mod interfaces;
mod managed;
mod misc;
mod network_acls;
pub mod peering;
mod prefix_lists;
mod route_tables;
mod security_groups;
mod subnets;
mod tags;
mod vpcs;

pub use common::Req;
use cove_model::{AwsError, AwsResult};
use cove_shapes::ec2::Request;
use cove_store::Store;
use cove_wire::{model::ServiceModel, Protocol, RequestContext, Service};
pub use managed::{
    delete_managed_groups, ensure_service_network, give_public_address, managed_by, ServiceNetwork,
    MANAGED_TAG_KEY,
};
use serde_json::Value;
use std::sync::Arc;

pub struct Ec2Service {
    store: Arc<Store>,
}

impl Ec2Service {
    pub fn new(store: Arc<Store>) -> Ec2Service {
        Ec2Service { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates the account's default VPC in a region the first time the
    /// account uses the region, as a new AWS account has one in every region.
    pub fn ensure_region(&self, region: &str, account_id: &str) -> AwsResult<()> {
        let marker = cove_store::bootstrap_key(account_id, region);
        if self
            .store
            .view(account_id)
            .bootstrapped_regions
            .contains_key(&marker)
        {
            return Ok(());
        }
        self.store.write_as(account_id, |tx| {
            if tx.world.bootstrapped_regions.contains_key(&marker) {
                return Ok(());
            }
            vpcs::create_default_vpc(tx, region, account_id)?;
            tx.mark_region_bootstrapped(account_id, region);
            Ok(())
        })
    }

    /// Moves resources through their timed states (NAT gateways and interface
    /// endpoints `pending` → `available`, deleted NAT gateways expire). Called
    /// periodically by the server; until the data plane reports readiness,
    /// time alone advances them.
    pub fn advance_lifecycles(&self) {
        if let Err(e) = self.store.write(|tx| {
            gateways::advance_nat_gateways(tx);
            endpoints::advance_endpoints(tx);
            Ok(())
        }) {
            tracing::warn!(error = %e, "lifecycle step failed");
        }
    }
}

/// Makes a requester-managed ENI in `subnet_id` for another service (a
/// SageMaker job's instance), as AWS does in the customer's subnet: it shows
/// in DescribeNetworkInterfaces while the job runs.
pub fn create_managed_eni(
    tx: &mut cove_store::Tx,
    subnet_id: &str,
    group_ids: Vec<String>,
    description: String,
    requester_id: &str,
) -> AwsResult<cove_model::vpc::NetworkInterface> {
    let subnet = tx.world.subnets.get(subnet_id).cloned().ok_or_else(|| {
        AwsError::client(
            "InvalidSubnetID.NotFound",
            format!("The subnet ID '{subnet_id}' does not exist"),
        )
    })?;
    let ip = subnets::allocate_ip(&tx.world, &subnet, None)?;
    Ok(create_managed_eni_at(
        tx,
        &subnet,
        ip,
        group_ids,
        description,
        requester_id,
    ))
}

/// Makes a requester-managed ENI at an address the caller has checked
/// with [`allocate_ip`] (an EFS mount target's, which answers with EFS's own
/// errors).
pub fn create_managed_eni_at(
    tx: &mut cove_store::Tx,
    subnet: &cove_model::vpc::Subnet,
    ip: std::net::Ipv4Addr,
    group_ids: Vec<String>,
    description: String,
    requester_id: &str,
) -> cove_model::vpc::NetworkInterface {
    interfaces::new_eni(
        tx,
        subnet,
        ip,
        group_ids,
        description,
        cove_model::vpc::InterfaceType::Interface,
        true,
        Some(requester_id.to_string()),
    )
}

pub use interfaces::{default_group, MAX_GROUPS_PER_INTERFACE};
pub use subnets::allocate_ip;

/// Deletes an ENI made by [`create_managed_eni`], with its flow logs.
pub fn delete_managed_eni(tx: &mut cove_store::Tx, id: &str) {
    interfaces::drop_eni(tx, id);
}

/// [`delete_managed_eni`] for an ENI whose host is lost: that host may
/// still run with the ENI in its kernel, so its subnet holds the address
/// back from new ENIs ([`cove_model::vpc::HeldAddress`]) until
/// [`lift_held_addresses`] finds the host back and caught up, or gone.
pub fn delete_managed_eni_of_lost_host(tx: &mut cove_store::Tx, id: &str) {
    let Some(eni) = tx.get::<cove_model::vpc::NetworkInterface>(id).cloned() else {
        return;
    };
    interfaces::drop_eni(tx, id);
    let (Some(host), Ok(mut subnet)) = (
        eni.host.clone(),
        tx.cloned::<cove_model::vpc::Subnet>(&eni.subnet_id),
    ) else {
        return;
    };
    subnet.held_addresses.push(cove_model::vpc::HeldAddress {
        ip: eni.private_ip,
        host,
        released_after: tx.position(),
    });
    tx.put(subnet);
}

/// The subnets of the whole world `world` (hosts included) holding an
/// address whose hold is over.
fn holding_past_their_holds(
    world: &cove_model::world::World,
) -> impl Iterator<Item = &cove_model::vpc::Subnet> {
    world
        .subnets
        .values()
        .map(|s| &**s)
        .filter(|s| s.held_addresses.iter().any(|h| h.is_over(world)))
}

/// Whether [`lift_held_addresses`] has anything to do in `world`: a read,
/// so a caller that polls writes only when it has.
pub fn held_addresses_to_lift(world: &cove_model::world::World) -> bool {
    holding_past_their_holds(world).next().is_some()
}

/// Ends the holds of [`delete_managed_eni_of_lost_host`] that are over in
/// the whole world `tx` sees (hosts included); returns how many ended.
pub fn lift_held_addresses(tx: &mut cove_store::Tx) -> usize {
    let holding: Vec<cove_model::vpc::Subnet> =
        holding_past_their_holds(&tx.world).cloned().collect();
    let mut lifted = 0;
    for mut subnet in holding {
        let before = subnet.held_addresses.len();
        subnet.held_addresses.retain(|h| !h.is_over(&tx.world));
        lifted += before - subnet.held_addresses.len();
        tx.put(subnet);
    }
    lifted
}

impl Service for Ec2Service {
    fn signing_name(&self) -> &'static str {
        "ec2"
    }
    fn protocol(&self) -> Protocol {
        Protocol::Ec2
    }
    fn model(&self) -> &'static ServiceModel {
        cove_wire::model::ec2()
    }

    fn handle(&self, ctx: &RequestContext, input: Value) -> AwsResult<Value> {
        if input.get("DryRun").and_then(Value::as_bool) == Some(true) {
            return Err(AwsError::dry_run_ok());
        }
        self.ensure_region(&ctx.region, ctx.account_id())?;
        let request = match Request::parse(&ctx.operation, &input) {
            Some(Ok(q)) => q,
            // The wire layer has checked the input against the model, so
            // this is EC2's answer to a value of the wrong kind.
            Some(Err(e)) => return Err(AwsError::invalid_parameter_value(e.to_string())),
            None => {
                return Err(AwsError::client(
                    "InvalidAction",
                    format!(
                        "The action {} is not valid for this web service.",
                        ctx.operation
                    ),
                ))
            }
        };
        let r = Req::new(ctx, &self.store);
        dispatch(&r, &request)
    }
}

/// Runs one parsed request.
fn dispatch(r: &Req, request: &Request) -> AwsResult<Value> {
    match request {
        Request::CreateVpc(q) => vpcs::create_vpc(r, q),
        Request::DeleteVpc(q) => vpcs::delete_vpc(r, q),
        Request::DescribeVpcs(q) => vpcs::describe_vpcs(r, q),
        Request::ModifyVpcAttribute(q) => vpcs::modify_vpc_attribute(r, q),
        Request::DescribeVpcAttribute(q) => vpcs::describe_vpc_attribute(r, q),
        Request::AssociateVpcCidrBlock(q) => vpcs::associate_vpc_cidr_block(r, q),
        Request::CreateDefaultVpc(q) => vpcs::create_default_vpc_call(r, q),
        Request::CreateDefaultSubnet(q) => vpcs::create_default_subnet(r, q),
        Request::DescribeSecurityGroupReferences(q) => security_groups::describe_references(r, q),
        Request::DescribeStaleSecurityGroups(q) => security_groups::describe_stale(r, q),
        Request::DisassociateVpcCidrBlock(q) => vpcs::disassociate_vpc_cidr_block(r, q),
        Request::AssociateSubnetCidrBlock(q) => vpcs::associate_subnet_cidr_block(r, q),
        Request::DisassociateSubnetCidrBlock(q) => vpcs::disassociate_subnet_cidr_block(r, q),
        Request::CreateSubnet(q) => subnets::create_subnet(r, q),
        Request::DeleteSubnet(q) => subnets::delete_subnet(r, q),
        Request::DescribeSubnets(q) => subnets::describe_subnets(r, q),
        Request::ModifySubnetAttribute(q) => subnets::modify_subnet_attribute(r, q),
        Request::CreateTags(q) => tags::create_tags(r, q),
        Request::DeleteTags(q) => tags::delete_tags(r, q),
        Request::DescribeTags(q) => tags::describe_tags(r, q),
        Request::DescribeAvailabilityZones(q) => misc::describe_availability_zones(r, q),
        Request::DescribeRegions(q) => misc::describe_regions(q),
        Request::DescribeAccountAttributes(q) => misc::describe_account_attributes(r, q),
        Request::CreateNetworkAcl(q) => network_acls::create_network_acl(r, q),
        Request::DeleteNetworkAcl(q) => network_acls::delete_network_acl(r, q),
        Request::DescribeNetworkAcls(q) => network_acls::describe_network_acls(r, q),
        Request::CreateNetworkAclEntry(q) => network_acls::create_network_acl_entry(r, q),
        Request::ReplaceNetworkAclEntry(q) => network_acls::replace_network_acl_entry(r, q),
        Request::DeleteNetworkAclEntry(q) => network_acls::delete_entry(r, q),
        Request::ReplaceNetworkAclAssociation(q) => network_acls::replace_association(r, q),
        Request::CreateSecurityGroup(q) => security_groups::create_security_group(r, q),
        Request::DeleteSecurityGroup(q) => security_groups::delete_security_group(r, q),
        Request::DescribeSecurityGroups(q) => security_groups::describe_security_groups(r, q),
        Request::AuthorizeSecurityGroupIngress(q) => security_groups::authorize_ingress(r, q),
        Request::AuthorizeSecurityGroupEgress(q) => security_groups::authorize_egress(r, q),
        Request::RevokeSecurityGroupIngress(q) => security_groups::revoke_ingress(r, q),
        Request::RevokeSecurityGroupEgress(q) => security_groups::revoke_egress(r, q),
        Request::DescribeSecurityGroupRules(q) => {
            security_groups::describe_security_group_rules(r, q)
        }
        Request::CreateRouteTable(q) => route_tables::create_route_table(r, q),
        Request::DeleteRouteTable(q) => route_tables::delete_route_table(r, q),
        Request::DescribeRouteTables(q) => route_tables::describe_route_tables(r, q),
        Request::CreateRoute(q) => route_tables::create_route(r, q),
        Request::ReplaceRoute(q) => route_tables::replace_route(r, q),
        Request::DeleteRoute(q) => route_tables::delete_route(r, q),
        Request::AssociateRouteTable(q) => route_tables::associate(r, q),
        Request::DisassociateRouteTable(q) => route_tables::disassociate(r, q),
        Request::ReplaceRouteTableAssociation(q) => route_tables::replace_association(r, q),
        Request::CreateInternetGateway(q) => gateways::create_internet_gateway(r, q),
        Request::DeleteInternetGateway(q) => gateways::delete_internet_gateway(r, q),
        Request::DescribeInternetGateways(q) => gateways::describe_internet_gateways(r, q),
        Request::AttachInternetGateway(q) => gateways::attach_internet_gateway(r, q),
        Request::DetachInternetGateway(q) => gateways::detach_internet_gateway(r, q),
        Request::AllocateAddress(q) => gateways::allocate_address(r, q),
        Request::ReleaseAddress(q) => gateways::release_address(r, q),
        Request::DescribeAddresses(q) => gateways::describe_addresses(r, q),
        Request::AssociateAddress(q) => gateways::associate_address(r, q),
        Request::DisassociateAddress(q) => gateways::disassociate_address(r, q),
        Request::CreateNatGateway(q) => gateways::create_nat_gateway(r, q),
        Request::DeleteNatGateway(q) => gateways::delete_nat_gateway(r, q),
        Request::DescribeNatGateways(q) => gateways::describe_nat_gateways(r, q),
        Request::CreateFlowLogs(q) => flow_logs::create_flow_logs(r, q),
        Request::DeleteFlowLogs(q) => flow_logs::delete_flow_logs(r, q),
        Request::DescribeFlowLogs(q) => flow_logs::describe_flow_logs(r, q),
        Request::CreateVpcEndpoint(q) => endpoints::create_vpc_endpoint(r, q),
        Request::DeleteVpcEndpoints(q) => endpoints::delete_vpc_endpoints(r, q),
        Request::DescribeVpcEndpoints(q) => endpoints::describe_vpc_endpoints(r, q),
        Request::ModifyVpcEndpoint(q) => endpoints::modify_vpc_endpoint(r, q),
        Request::DescribeVpcEndpointServices(q) => endpoints::describe_vpc_endpoint_services(r, q),
        Request::DescribePrefixLists(q) => endpoints::describe_prefix_lists(r, q),
        Request::CreateManagedPrefixList(q) => prefix_lists::create(r, q),
        Request::ModifyManagedPrefixList(q) => prefix_lists::modify(r, q),
        Request::RestoreManagedPrefixListVersion(q) => prefix_lists::restore(r, q),
        Request::DeleteManagedPrefixList(q) => prefix_lists::delete(r, q),
        Request::DescribeManagedPrefixLists(q) => prefix_lists::describe(r, q),
        Request::GetManagedPrefixListEntries(q) => prefix_lists::get_entries(r, q),
        Request::GetManagedPrefixListAssociations(q) => prefix_lists::get_associations(r, q),
        Request::ModifySecurityGroupRules(q) => security_groups::modify_rules(r, q),
        Request::UpdateSecurityGroupRuleDescriptionsIngress(q) => {
            security_groups::update_descriptions_ingress(r, q)
        }
        Request::UpdateSecurityGroupRuleDescriptionsEgress(q) => {
            security_groups::update_descriptions_egress(r, q)
        }
        Request::CreateVpcPeeringConnection(q) => peering::create(r, q),
        Request::AcceptVpcPeeringConnection(q) => peering::accept(r, q),
        Request::RejectVpcPeeringConnection(q) => peering::reject(r, q),
        Request::DeleteVpcPeeringConnection(q) => peering::delete(r, q),
        Request::DescribeVpcPeeringConnections(q) => peering::describe(r, q),
        Request::CreateDhcpOptions(q) => dhcp_options::create(r, q),
        Request::AssociateDhcpOptions(q) => dhcp_options::associate(r, q),
        Request::DeleteDhcpOptions(q) => dhcp_options::delete(r, q),
        Request::DescribeDhcpOptions(q) => dhcp_options::describe(r, q),
        Request::CreateNetworkInterface(q) => interfaces::create_network_interface(r, q),
        Request::DeleteNetworkInterface(q) => interfaces::delete_network_interface(r, q),
        Request::DescribeNetworkInterfaces(q) => interfaces::describe_network_interfaces(r, q),
        Request::CreateNetworkInsightsPath(q) => insights::create_path(r, q),
        Request::DescribeNetworkInsightsPaths(q) => insights::describe_paths(r, q),
        Request::DeleteNetworkInsightsPath(q) => insights::delete_path(r, q),
        Request::StartNetworkInsightsAnalysis(q) => insights::start_analysis(r, q),
        Request::DescribeNetworkInsightsAnalyses(q) => insights::describe_analyses(r, q),
        Request::DeleteNetworkInsightsAnalysis(q) => insights::delete_analysis(r, q),
    }
}
