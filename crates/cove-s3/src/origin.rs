//! Where an S3 request came from, which is what VPC endpoint and bucket
//! policies are written against. A gateway endpoint source-NATs its VPC's
//! traffic to an address of its own in 100.64.0.0/10 (see cove-net's plan),
//! so the peer address of a connection to S3's public address says which
//! endpoint, if any, it came through.

use cove_model::world::World;
use std::net::IpAddr;

/// The network origin of one request, as Cove's server saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Origin {
    /// `aws:SourceIp`; absent for requests that came through a VPC endpoint.
    pub source_ip: Option<IpAddr>,
    /// `aws:SourceVpce`.
    pub vpc_endpoint_id: Option<String>,
    /// `aws:SourceVpc`.
    pub vpc_id: Option<String>,
    /// The endpoint's policy document; None means full access.
    pub endpoint_policy: Option<String>,
    /// `aws:SecureTransport`: the request came over TLS.
    pub secure_transport: bool,
}

impl S3Origin {
    /// A request from outside any VPC endpoint.
    pub fn public(peer: IpAddr) -> S3Origin {
        S3Origin {
            source_ip: Some(peer),
            ..S3Origin::default()
        }
    }
}

fn is_s3_endpoint(service_name: &str) -> bool {
    service_name.ends_with(".s3")
}

/// The origin of a connection from `peer`. `interface_endpoint` is the
/// interface endpoint whose ENI the connection arrived on, if any (Cove's
/// listener knows it); otherwise a peer equal to an S3 gateway endpoint's
/// SNAT address means the request came through that endpoint, and any other
/// peer is a public request with `aws:SourceIp` = peer.
pub fn s3_origin(world: &World, peer: IpAddr, interface_endpoint: Option<&str>) -> S3Origin {
    if let Some(e) = interface_endpoint.and_then(|id| world.vpc_endpoints.get(id)) {
        return S3Origin {
            source_ip: None,
            vpc_endpoint_id: Some(e.id.clone()),
            vpc_id: Some(e.vpc_id.clone()),
            endpoint_policy: e.policy_document.clone(),
            ..S3Origin::default()
        };
    }
    let IpAddr::V4(v4) = peer else {
        return S3Origin::public(peer);
    };
    world
        .vpc_endpoints
        .values()
        .find(|e| {
            e.endpoint_type == cove_model::vpc::EndpointType::Gateway
                && is_s3_endpoint(&e.service_name)
                && cove_net::plan::link_addresses(&e.id).0 == v4
        })
        .map(|e| S3Origin {
            source_ip: None,
            vpc_endpoint_id: Some(e.id.clone()),
            vpc_id: Some(e.vpc_id.clone()),
            endpoint_policy: e.policy_document.clone(),
            ..S3Origin::default()
        })
        .unwrap_or_else(|| S3Origin::public(peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_model::vpc::VpcEndpoint;

    fn endpoint(id: &str, kind: &str, service: &str, policy: Option<&str>) -> VpcEndpoint {
        VpcEndpoint {
            id: id.into(),
            region: "us-east-1".into(),
            vpc_id: "vpc-1".into(),
            service_name: service.into(),
            endpoint_type: kind.parse().unwrap(),
            policy_document: policy.map(str::to_string),
            route_table_ids: vec![],
            subnet_ids: vec![],
            group_ids: vec![],
            network_interface_ids: vec![],
            private_dns_enabled: false,
            state: cove_model::vpc::EndpointState::Available,
            create_time: String::new(),
        }
    }

    #[test]
    fn gateway_endpoint_by_snat_address() {
        let mut w = World::default();
        let policy =
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}"#;
        for e in [
            endpoint(
                "vpce-s3",
                "Gateway",
                "com.amazonaws.us-east-1.s3",
                Some(policy),
            ),
            endpoint(
                "vpce-ddb",
                "Gateway",
                "com.amazonaws.us-east-1.dynamodb",
                None,
            ),
            endpoint("vpce-sts", "Interface", "com.amazonaws.us-east-1.sts", None),
        ] {
            w.vpc_endpoints.insert(e.id.clone(), e.into());
        }
        let snat = cove_net::plan::link_addresses("vpce-s3").0;
        let o = s3_origin(&w, IpAddr::V4(snat), None);
        assert_eq!(o.vpc_endpoint_id.as_deref(), Some("vpce-s3"));
        assert_eq!(o.vpc_id.as_deref(), Some("vpc-1"));
        assert_eq!(o.source_ip, None);
        assert_eq!(o.endpoint_policy.as_deref(), Some(policy));

        // Another endpoint's address is not S3's.
        let ddb = cove_net::plan::link_addresses("vpce-ddb").0;
        assert_eq!(
            s3_origin(&w, IpAddr::V4(ddb), None),
            S3Origin::public(IpAddr::V4(ddb))
        );
        let host: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(s3_origin(&w, host, None), S3Origin::public(host));
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(s3_origin(&w, v6, None), S3Origin::public(v6));
    }

    #[test]
    fn interface_endpoint_from_the_listener() {
        let mut w = World::default();
        let e = endpoint("vpce-if", "Interface", "com.amazonaws.us-east-1.s3", None);
        w.vpc_endpoints.insert(e.id.clone(), e.into());
        let o = s3_origin(&w, "10.0.1.9".parse().unwrap(), Some("vpce-if"));
        assert_eq!(o.vpc_endpoint_id.as_deref(), Some("vpce-if"));
        assert_eq!(o.source_ip, None);
    }
}
