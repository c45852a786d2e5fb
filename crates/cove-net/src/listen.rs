//! The sockets Cove must hold inside its namespaces, computed from the
//! model: the region's public service addresses (the API, as AWS's regional
//! endpoints), every interface endpoint's ENI (the API of that one service,
//! PrivateLink-style), each on HTTP (80) and HTTPS (443, with a certificate
//! from Cove's CA), every VPC's resolver at base+2, and the simulated web
//! (80 and 443 at [`cove_model::region::WEB_HOST`]), and NFS on every EFS
//! mount target's ENI (2049). The binary binds them from a thread that has
//! entered the namespace; the socket keeps it.

use crate::naming;
use cove_model::services;
use cove_model::vpc::EndpointType;
use cove_model::world::World;
use std::net::{Ipv4Addr, SocketAddrV4};

/// HTTP port of the service listeners.
pub const API_PORT: u16 = 80;
/// HTTPS port of the same listeners, where SDKs go by default.
pub const API_TLS_PORT: u16 = 443;
pub const DNS_PORT: u16 = 53;
/// NFS, where EFS mount targets listen.
pub const NFS_PORT: u16 = 2049;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListenerKind {
    /// Cove's AWS API. `only_service` limits it to one API (by endpoint prefix); the
    /// endpoint ids say which interface endpoint it is.
    Api {
        only_service: Option<&'static str>,
        vpc_endpoint_id: Option<String>,
        vpc_id: Option<String>,
        /// HTTPS (on [`API_TLS_PORT`]) rather than plain HTTP.
        tls: bool,
    },
    /// The VPC resolver of one VPC (UDP and TCP).
    Dns { vpc_id: String },
    /// Cove's simulated web, where public names resolve (its package index),
    /// on HTTP or on HTTPS with a certificate for the name asked.
    Web { tls: bool },
    /// An EFS file system, served over NFS on one of its mount targets.
    Nfs { file_system_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerPlan {
    pub netns: String,
    pub addr: SocketAddrV4,
    pub kind: ListenerKind,
}

/// The region network's public service addresses (the same in every region).
pub fn service_addresses() -> Vec<(Ipv4Addr, &'static str)> {
    services::service_hosts("us-east-1")
        .into_iter()
        .map(|h| (h.address, h.api))
        .collect()
}

/// The API on `ip`, once over HTTP and once over HTTPS.
fn api_pair(
    netns: String,
    ip: Ipv4Addr,
    only_service: Option<&'static str>,
    vpc_endpoint_id: Option<String>,
    vpc_id: Option<String>,
) -> [ListenerPlan; 2] {
    [(API_PORT, false), (API_TLS_PORT, true)].map(|(port, tls)| ListenerPlan {
        netns: netns.clone(),
        addr: SocketAddrV4::new(ip, port),
        kind: ListenerKind::Api {
            only_service,
            vpc_endpoint_id: vpc_endpoint_id.clone(),
            vpc_id: vpc_id.clone(),
            tls,
        },
    })
}

pub fn listeners(world: &World, instance: &str) -> Vec<ListenerPlan> {
    let mut out: Vec<ListenerPlan> = service_addresses()
        .into_iter()
        .flat_map(|(ip, signing)| {
            api_pair(
                naming::region_netns(instance),
                ip,
                Some(signing),
                None,
                None,
            )
        })
        .collect();
    for e in world
        .vpc_endpoints
        .values()
        .filter(|e| e.endpoint_type == EndpointType::Interface && e.state.serves())
    {
        let Some(signing) =
            services::service_for(&e.region, &e.service_name, EndpointType::Interface)
                .and_then(|s| s.api)
        else {
            continue;
        };
        for eni in e
            .network_interface_ids
            .iter()
            .filter_map(|id| world.network_interfaces.get(id))
        {
            out.extend(api_pair(
                naming::eni_netns(instance, &eni.id),
                eni.private_ip,
                Some(signing),
                Some(e.id.clone()),
                Some(e.vpc_id.clone()),
            ));
        }
    }
    for mt in world.mount_targets.values() {
        if !world.file_systems.contains_key(&mt.file_system_id)
            || !world
                .network_interfaces
                .contains_key(&mt.network_interface_id)
        {
            continue;
        }
        out.push(ListenerPlan {
            netns: naming::eni_netns(instance, &mt.network_interface_id),
            addr: SocketAddrV4::new(mt.ip_address, NFS_PORT),
            kind: ListenerKind::Nfs {
                file_system_id: mt.file_system_id.clone(),
            },
        });
    }
    for (port, tls) in [(API_PORT, false), (API_TLS_PORT, true)] {
        out.push(ListenerPlan {
            netns: naming::region_netns(instance),
            addr: SocketAddrV4::new(cove_model::region::WEB_HOST, port),
            kind: ListenerKind::Web { tls },
        });
    }
    for vpc in world.vpcs.values().filter(|v| v.enable_dns_support) {
        let cidr = vpc.cidr;
        out.push(ListenerPlan {
            netns: naming::router_netns(instance, &vpc.id),
            addr: SocketAddrV4::new(cidr.nth(2), DNS_PORT),
            kind: ListenerKind::Dns {
                vpc_id: vpc.id.clone(),
            },
        });
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use cove_model::vpc::{EndpointState, VpcEndpoint};

    #[test]
    fn services_endpoints_and_resolvers() {
        let mut w = fixtures::world("", vec![], [&[], &[], &[]], vec![]);
        let plans = listeners(&w, "t");
        assert_eq!(plans.len(), 2 * service_addresses().len() + 3);
        for (addr, tls) in [("203.0.113.11:80", false), ("203.0.113.11:443", true)] {
            assert!(plans
                .iter()
                .any(|p| p.kind == ListenerKind::Web { tls } && p.addr.to_string() == addr));
        }
        for (ip, _) in service_addresses() {
            for (port, tls) in [(80, false), (443, true)] {
                assert!(plans.iter().any(|p| p.addr == SocketAddrV4::new(ip, port)
                    && matches!(p.kind, ListenerKind::Api { tls: t, .. } if t == tls)));
            }
        }
        let dns = plans
            .iter()
            .find(|p| matches!(p.kind, ListenerKind::Dns { .. }))
            .unwrap();
        assert_eq!(dns.addr.to_string(), "10.0.0.2:53");
        assert_eq!(dns.netns, naming::router_netns("t", "vpc-1"));

        w.vpc_endpoints.insert(
            "vpce-1".into(),
            VpcEndpoint {
                id: "vpce-1".into(),
                region: "us-east-1".into(),
                vpc_id: "vpc-1".into(),
                service_name: "com.amazonaws.us-east-1.sagemaker.runtime".into(),
                endpoint_type: EndpointType::Interface,
                policy_document: None,
                route_table_ids: vec![],
                subnet_ids: vec!["subnet-a".into()],
                group_ids: vec![],
                network_interface_ids: vec!["eni-a2".into()],
                private_dns_enabled: true,
                state: EndpointState::Available,
                create_time: String::new(),
            }
            .into(),
        );
        let plans = listeners(&w, "t");
        let ep: Vec<&ListenerPlan> = plans
            .iter()
            .filter(|p| p.netns == naming::eni_netns("t", "eni-a2"))
            .collect();
        assert_eq!(ep.len(), 2);
        for (p, (addr, tls)) in ep
            .iter()
            .zip([("10.0.1.5:80", false), ("10.0.1.5:443", true)])
        {
            assert_eq!(p.addr.to_string(), addr);
            assert_eq!(
                p.kind,
                ListenerKind::Api {
                    only_service: Some("runtime.sagemaker"),
                    vpc_endpoint_id: Some("vpce-1".into()),
                    vpc_id: Some("vpc-1".into()),
                    tls,
                }
            );
        }

        let mut vpc = (**w.vpcs.get("vpc-1").unwrap()).clone();
        vpc.enable_dns_support = false;
        w.vpcs.insert("vpc-1".into(), vpc.into());
        assert!(!listeners(&w, "t")
            .iter()
            .any(|p| matches!(p.kind, ListenerKind::Dns { .. })));
    }

    #[test]
    fn mount_targets_serve_nfs_on_their_eni_while_their_file_system_exists() {
        use cove_model::efs::{LifeCycleState, MountTarget};
        let mut w = fixtures::world("", vec![], [&[], &[], &[]], vec![]);
        let eni = w.network_interfaces.get("eni-a2").unwrap().clone();
        w.mount_targets.insert(
            "fsmt-1".into(),
            MountTarget {
                id: "fsmt-1".into(),
                region: "us-east-1".into(),
                owner_id: "123456789012".into(),
                file_system_id: "fs-1".into(),
                subnet_id: eni.subnet_id.clone(),
                vpc_id: eni.vpc_id.clone(),
                availability_zone: eni.availability_zone.clone(),
                availability_zone_id: "use1-az1".into(),
                ip_address: eni.private_ip,
                network_interface_id: eni.id.clone(),
                state: LifeCycleState::Available,
            }
            .into(),
        );
        let nfs = |w: &World| -> Vec<ListenerPlan> {
            listeners(w, "t")
                .into_iter()
                .filter(|p| matches!(p.kind, ListenerKind::Nfs { .. }))
                .collect()
        };
        assert!(nfs(&w).is_empty(), "no file system, nothing to serve");
        w.file_systems.insert(
            "fs-1".into(),
            cove_model::fixtures::file_system("fs-1").into(),
        );
        let plans = nfs(&w);
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].netns, naming::eni_netns("t", &eni.id));
        assert_eq!(plans[0].addr, SocketAddrV4::new(eni.private_ip, NFS_PORT));
    }
}
