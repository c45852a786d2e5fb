//! The whole desired state as one immutable value. Maps are persistent
//! (`imbl`), so a writer clones the world in O(1), changes its copy, persists
//! the changed documents and publishes the copy; readers never wait.

use crate::cfn::Stack;
use crate::efs::{AccessPoint, FileSystem, MountTarget};
use crate::endpoints::{SageMakerEndpoint, TransformJob};
use crate::hosts::Host;
use crate::iam::{IamAccessKey, IamPolicy, IamRole, IamUser};
use crate::jobs::{
    CompilationJob, RecommendationJob, SageMakerDefinition, SageMakerJob, StsSession,
};
use crate::route53::{HostedZone, Route53Change};
use crate::studio::{StudioApp, StudioDomain, UserProfile};
use crate::vpc::*;
use imbl::OrdMap;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Tags of one resource, sorted by key.
pub type Tags = BTreeMap<String, String>;

#[derive(Debug, Clone, Default)]
pub struct World {
    pub vpcs: OrdMap<String, Arc<Vpc>>,
    pub subnets: OrdMap<String, Arc<Subnet>>,
    pub security_groups: OrdMap<String, Arc<SecurityGroup>>,
    pub network_acls: OrdMap<String, Arc<NetworkAcl>>,
    pub route_tables: OrdMap<String, Arc<RouteTable>>,
    pub internet_gateways: OrdMap<String, Arc<InternetGateway>>,
    pub addresses: OrdMap<String, Arc<Address>>,
    pub nat_gateways: OrdMap<String, Arc<NatGateway>>,
    pub vpc_endpoints: OrdMap<String, Arc<VpcEndpoint>>,
    pub network_interfaces: OrdMap<String, Arc<NetworkInterface>>,
    pub flow_logs: OrdMap<String, Arc<FlowLog>>,
    pub network_insights_paths: OrdMap<String, Arc<NetworkInsightsPath>>,
    pub network_insights_analyses: OrdMap<String, Arc<NetworkInsightsAnalysis>>,
    /// VPC peering connections by id.
    pub vpc_peering_connections: OrdMap<String, Arc<VpcPeeringConnection>>,
    /// Route 53 hosted zones by id.
    pub hosted_zones: OrdMap<String, Arc<HostedZone>>,
    /// Route 53 changes by id.
    pub route53_changes: OrdMap<String, Arc<Route53Change>>,
    /// EFS file systems by id.
    pub file_systems: OrdMap<String, Arc<FileSystem>>,
    /// EFS mount targets by id.
    pub mount_targets: OrdMap<String, Arc<MountTarget>>,
    /// EFS access points by id.
    pub access_points: OrdMap<String, Arc<AccessPoint>>,
    /// Customer-managed prefix lists by id (AWS-managed ones are not stored).
    pub managed_prefix_lists: OrdMap<String, Arc<ManagedPrefixList>>,
    /// DHCP options sets by id (each account's default set is not stored).
    pub dhcp_options: OrdMap<String, Arc<DhcpOptions>>,
    /// SageMaker jobs by ARN.
    pub sagemaker_jobs: OrdMap<String, Arc<SageMakerJob>>,
    /// Temporary credentials by access key id.
    pub sts_sessions: OrdMap<String, Arc<StsSession>>,
    /// IAM roles by `<account>/<lowercased name>`.
    pub iam_roles: OrdMap<String, Arc<IamRole>>,
    /// Customer managed IAM policies by ARN.
    pub iam_policies: OrdMap<String, Arc<IamPolicy>>,
    /// IAM users by `<account>/<lowercased name>`.
    pub iam_users: OrdMap<String, Arc<IamUser>>,
    /// IAM users' access keys by access key id.
    pub iam_access_keys: OrdMap<String, Arc<IamAccessKey>>,
    /// SageMaker models and endpoint configurations by ARN.
    pub sagemaker_definitions: OrdMap<String, Arc<SageMakerDefinition>>,
    /// SageMaker endpoints by ARN.
    pub sagemaker_endpoints: OrdMap<String, Arc<SageMakerEndpoint>>,
    /// Batch transform jobs by ARN.
    pub transform_jobs: OrdMap<String, Arc<TransformJob>>,
    /// Neo compilation jobs by ARN.
    pub compilation_jobs: OrdMap<String, Arc<CompilationJob>>,
    /// Inference recommendations jobs by ARN.
    pub recommendation_jobs: OrdMap<String, Arc<RecommendationJob>>,
    /// Studio domains by ARN.
    pub studio_domains: OrdMap<String, Arc<StudioDomain>>,
    /// Studio user profiles by ARN.
    pub user_profiles: OrdMap<String, Arc<UserProfile>>,
    /// Studio apps by ARN.
    pub studio_apps: OrdMap<String, Arc<StudioApp>>,
    /// CloudFormation stacks by ARN (deleted ones too, as ListStacks shows them).
    pub cfn_stacks: OrdMap<String, Arc<Stack>>,
    /// The machines Cove runs on, by host id (Cove's own, no account's).
    pub hosts: OrdMap<String, Arc<Host>>,
    /// Tags by resource id, for every taggable resource.
    pub tags: OrdMap<String, Tags>,
    /// `<account>/<region>` for every account and region whose default VPC
    /// has been created.
    pub bootstrapped_regions: OrdMap<String, bool>,
}

/// A kind of stored document: how it is named on disk and where it lives in the world.
pub trait Resource: Clone + Serialize + DeserializeOwned {
    const KIND: &'static str;
    fn key(&self) -> &str;
    fn table(w: &World) -> &OrdMap<String, Arc<Self>>;
    fn table_mut(w: &mut World) -> &mut OrdMap<String, Arc<Self>>;
}

/// A resource to store, owned or already shared: the world holds each
/// resource behind an `Arc`, so a copy-on-write of a map node copies
/// pointers, not documents.
pub trait Shared {
    type Item: Resource;
    fn shared(self) -> Arc<Self::Item>;
}

impl<R: Resource> Shared for R {
    type Item = R;
    fn shared(self) -> Arc<R> {
        Arc::new(self)
    }
}

impl<R: Resource> Shared for Arc<R> {
    type Item = R;
    fn shared(self) -> Arc<R> {
        self
    }
}

macro_rules! resource {
    ($ty:ty, $kind:literal, $field:ident, $key:ident) => {
        resource!($ty, $kind, $field, |r| &r.$key);
    };
    ($ty:ty, $kind:literal, $field:ident, |$r:ident| $key:expr) => {
        impl Resource for $ty {
            const KIND: &'static str = $kind;
            fn key(&self) -> &str {
                let $r = self;
                $key
            }
            fn table(w: &World) -> &OrdMap<String, Arc<Self>> {
                &w.$field
            }
            fn table_mut(w: &mut World) -> &mut OrdMap<String, Arc<Self>> {
                &mut w.$field
            }
        }
    };
}

resource!(Vpc, "vpc", vpcs, id);
resource!(Subnet, "subnet", subnets, id);
resource!(SecurityGroup, "security_group", security_groups, id);
resource!(NetworkAcl, "network_acl", network_acls, id);
resource!(RouteTable, "route_table", route_tables, id);
resource!(InternetGateway, "internet_gateway", internet_gateways, id);
resource!(Address, "address", addresses, allocation_id);
resource!(NatGateway, "nat_gateway", nat_gateways, id);
resource!(VpcEndpoint, "vpc_endpoint", vpc_endpoints, id);
resource!(
    NetworkInterface,
    "network_interface",
    network_interfaces,
    id
);
resource!(FlowLog, "flow_log", flow_logs, id);
resource!(
    NetworkInsightsPath,
    "network_insights_path",
    network_insights_paths,
    id
);
resource!(
    NetworkInsightsAnalysis,
    "network_insights_analysis",
    network_insights_analyses,
    id
);
resource!(
    ManagedPrefixList,
    "managed_prefix_list",
    managed_prefix_lists,
    id
);
resource!(DhcpOptions, "dhcp_options", dhcp_options, id);
resource!(HostedZone, "hosted_zone", hosted_zones, id);
resource!(Route53Change, "route53_change", route53_changes, id);
resource!(FileSystem, "efs_file_system", file_systems, id);
resource!(MountTarget, "efs_mount_target", mount_targets, id);
resource!(AccessPoint, "efs_access_point", access_points, id);
resource!(
    VpcPeeringConnection,
    "vpc_peering_connection",
    vpc_peering_connections,
    id
);
resource!(StsSession, "sts_session", sts_sessions, access_key_id);
resource!(Host, "host", hosts, id);
resource!(Stack, "cfn_stack", cfn_stacks, arn);
resource!(IamRole, "iam_role", iam_roles, key);
resource!(IamPolicy, "iam_policy", iam_policies, arn);
resource!(IamUser, "iam_user", iam_users, key);
resource!(
    IamAccessKey,
    "iam_access_key",
    iam_access_keys,
    access_key_id
);

// SageMaker resources are stored under their ARN: names are unique only
// within one account and region.
macro_rules! sagemaker_resource {
    ($ty:ty, $kind:literal, $field:ident) => {
        resource!($ty, $kind, $field, arn);
    };
}

sagemaker_resource!(
    SageMakerDefinition,
    "sagemaker_definition",
    sagemaker_definitions
);
sagemaker_resource!(SageMakerJob, "sagemaker_job", sagemaker_jobs);
sagemaker_resource!(TransformJob, "transform_job", transform_jobs);
sagemaker_resource!(CompilationJob, "compilation_job", compilation_jobs);
sagemaker_resource!(RecommendationJob, "recommendation_job", recommendation_jobs);
sagemaker_resource!(StudioDomain, "studio_domain", studio_domains);
sagemaker_resource!(UserProfile, "user_profile", user_profiles);
sagemaker_resource!(StudioApp, "studio_app", studio_apps);
sagemaker_resource!(SageMakerEndpoint, "sagemaker_endpoint", sagemaker_endpoints);

/// Calls `$then!` with every stored resource type: the one list that
/// loading and view maintenance dispatch on.
macro_rules! for_each_resource {
    ($then:ident) => {
        $then!(
            Vpc,
            Subnet,
            SecurityGroup,
            NetworkAcl,
            RouteTable,
            InternetGateway,
            Address,
            NatGateway,
            VpcEndpoint,
            NetworkInterface,
            FlowLog,
            NetworkInsightsPath,
            NetworkInsightsAnalysis,
            ManagedPrefixList,
            DhcpOptions,
            VpcPeeringConnection,
            HostedZone,
            Route53Change,
            FileSystem,
            MountTarget,
            AccessPoint,
            SageMakerJob,
            StsSession,
            IamRole,
            IamPolicy,
            IamUser,
            IamAccessKey,
            SageMakerDefinition,
            SageMakerEndpoint,
            TransformJob,
            CompilationJob,
            RecommendationJob,
            StudioDomain,
            UserProfile,
            StudioApp,
            Host,
            Stack
        )
    };
}

/// The kind under which a resource's tags are stored.
pub const TAGS_KIND: &str = "tags";
/// The kind under which region bootstrap markers are stored.
pub const REGION_KIND: &str = "region";

impl World {
    /// The internet gateway attached to a VPC (a VPC has at most one).
    pub fn attached_internet_gateway(&self, vpc_id: &str) -> Option<&InternetGateway> {
        self.internet_gateways
            .values()
            .find(|g| g.attached_vpc_id.as_deref() == Some(vpc_id))
            .map(Arc::as_ref)
    }

    /// A VPC's main route table, which serves every subnet without an explicit association.
    pub fn main_route_table(&self, vpc_id: &str) -> Option<&RouteTable> {
        self.route_tables
            .values()
            .find(|t| t.vpc_id == vpc_id && t.associations.iter().any(|a| a.main))
            .map(Arc::as_ref)
    }

    /// The private hosted zone that answers for `name` (lower case, with
    /// its trailing dot) in VPC `vpc_id`: of the zones associated with the
    /// VPC, the one with the longest name that holds it.
    pub fn private_zone_for(&self, vpc_id: &str, name: &str) -> Option<&HostedZone> {
        self.hosted_zones
            .values()
            .filter(|z| z.private && z.vpcs.iter().any(|v| v.vpc_id == vpc_id) && z.holds(name))
            .max_by_key(|z| z.name.len())
            .map(Arc::as_ref)
    }

    /// The active peering connection between two VPCs, if there is one.
    pub fn active_peering(&self, a: &str, b: &str) -> Option<&VpcPeeringConnection> {
        self.vpc_peering_connections
            .values()
            .find(|p| p.is_active() && p.peer_of(a) == Some(b))
            .map(Arc::as_ref)
    }

    /// Every prefix list a region's resources may name: AWS's own (the S3
    /// list) and the customer-managed ones, as (id, name, CIDRs).
    pub fn prefix_lists(&self, region: &str) -> Vec<(String, String, Vec<crate::cidr::Cidr>)> {
        let mut out = crate::region::prefix_lists(region);
        out.extend(
            self.managed_prefix_lists
                .values()
                .filter(|l| l.region == region)
                .map(|l| (l.id.clone(), l.name.clone(), l.cidrs())),
        );
        out
    }

    /// The CIDRs of prefix list `id` in `region`, or `None` when it does not exist there.
    pub fn prefix_list_cidrs(&self, region: &str, id: &str) -> Option<Vec<crate::cidr::Cidr>> {
        if let Some(l) = self.managed_prefix_lists.get(id) {
            return (l.region == region).then(|| l.cidrs());
        }
        crate::region::prefix_lists(region)
            .into_iter()
            .find(|(pl, _, _)| pl == id)
            .map(|(_, _, cidrs)| cidrs)
    }

    /// The availability zones of an endpoint's subnets, in subnet order.
    pub fn endpoint_zones(&self, e: &VpcEndpoint) -> Vec<String> {
        e.subnet_ids
            .iter()
            .filter_map(|id| self.subnets.get(id))
            .map(|s| s.availability_zone.clone())
            .collect()
    }

    /// Loads one stored document into its table. Unknown kinds are an error so
    /// a newer database is never silently half-read by an older binary.
    pub fn load_document(&mut self, kind: &str, key: &str, doc: &str) -> Result<(), String> {
        fn put<R: Resource>(w: &mut World, key: &str, doc: &str) -> Result<(), String> {
            let r: R = serde_json::from_str(doc).map_err(|e| format!("{} {key}: {e}", R::KIND))?;
            R::table_mut(w).insert(key.to_string(), Arc::new(r));
            Ok(())
        }
        macro_rules! load {
            ($($ty:ty),*) => {
                match kind {
                    $(<$ty as Resource>::KIND => put::<$ty>(self, key, doc),)*
                    TAGS_KIND => {
                        let t: Tags =
                            serde_json::from_str(doc).map_err(|e| format!("tags {key}: {e}"))?;
                        self.tags.insert(key.to_string(), t);
                        Ok(())
                    }
                    REGION_KIND => {
                        self.bootstrapped_regions.insert(key.to_string(), true);
                        Ok(())
                    }
                    other => Err(format!("unknown stored kind {other:?}")),
                }
            };
        }
        for_each_resource!(load)
    }

    /// The static name of a stored kind, if it is one.
    pub fn stored_kind(kind: &str) -> Option<&'static str> {
        macro_rules! known {
            ($($ty:ty),*) => {
                [$(<$ty as Resource>::KIND,)* TAGS_KIND, REGION_KIND]
                    .into_iter()
                    .find(|k| *k == kind)
            };
        }
        for_each_resource!(known)
    }

    /// Makes this world's entry `key` of `kind` what it is in `from`
    /// (copied, or removed when `from` has none): how one account's view
    /// and the whole world follow each other's changes.
    pub fn copy_entry(&mut self, from: &World, kind: &str, key: &str) {
        fn copy<T: Clone>(to: &mut OrdMap<String, T>, from: &OrdMap<String, T>, key: &str) {
            match from.get(key) {
                Some(r) => {
                    to.insert(key.to_string(), r.clone());
                }
                None => {
                    to.remove(key);
                }
            }
        }
        macro_rules! copy_kind {
            ($($ty:ty),*) => {
                match kind {
                    $(<$ty as Resource>::KIND => copy(<$ty>::table_mut(self), <$ty>::table(from), key),)*
                    TAGS_KIND => copy(&mut self.tags, &from.tags, key),
                    REGION_KIND => copy(&mut self.bootstrapped_regions, &from.bootstrapped_regions, key),
                    other => unreachable!("no stored kind {other:?}"),
                }
            };
        }
        for_each_resource!(copy_kind)
    }

    pub fn tags_of(&self, id: &str) -> Tags {
        self.tags.get(id).cloned().unwrap_or_default()
    }
}
