//! The VPC resolver on the wire: DNS over UDP and TCP at the VPC's base+2,
//! answering from the current model through [`cove_net::dns::resolve`].
//! hickory-proto parses and writes the messages. Answers carry a short TTL
//! (AWS's private-DNS records use 60 s) so endpoint changes show quickly.

use cove_net::dns::{resolve_for, Answer};
use cove_store::Store;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TTL: u32 = 60;

/// The answer to one query message from `client`, or `None` for something
/// that is not a query.
pub fn answer(
    store: &Store,
    vpc_id: &str,
    client: Option<std::net::Ipv4Addr>,
    request: &[u8],
) -> Option<Vec<u8>> {
    let query = Message::from_vec(request).ok()?;
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_queries(query.queries.clone());
    let Some(q) = query.queries.first().filter(|_| query.queries.len() == 1) else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response.to_vec().ok();
    };
    if query.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return response.to_vec().ok();
    }
    let world = store.snapshot();
    match resolve_for(&world, vpc_id, client, &q.name().to_ascii()) {
        Answer::Refused => response.metadata.response_code = ResponseCode::Refused,
        Answer::NxDomain => response.metadata.response_code = ResponseCode::NXDomain,
        Answer::Addresses(ips) => {
            // The name exists; only A records are held (AAAA and others answer empty).
            if q.query_type() == RecordType::A {
                for ip in ips {
                    response.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(ip))));
                }
            }
        }
    }
    response.to_vec().ok()
}

fn ipv4(peer: std::net::SocketAddr) -> Option<std::net::Ipv4Addr> {
    match peer {
        std::net::SocketAddr::V4(a) => Some(*a.ip()),
        std::net::SocketAddr::V6(_) => None,
    }
}

pub async fn serve_udp(socket: tokio::net::UdpSocket, store: Arc<Store>, vpc_id: String) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(reply) = answer(&store, &vpc_id, ipv4(peer), &buf[..n]) {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

pub async fn serve_tcp(listener: tokio::net::TcpListener, store: Arc<Store>, vpc_id: String) {
    loop {
        let Ok((mut conn, peer)) = listener.accept().await else {
            continue;
        };
        let (store, vpc_id) = (store.clone(), vpc_id.clone());
        tokio::spawn(async move {
            // RFC 1035 4.2.2: each message is preceded by its two-byte length.
            loop {
                let Ok(len) = conn.read_u16().await else {
                    return;
                };
                let mut msg = vec![0u8; len as usize];
                if conn.read_exact(&mut msg).await.is_err() {
                    return;
                }
                let Some(reply) = answer(&store, &vpc_id, ipv4(peer), &msg) else {
                    return;
                };
                let Ok(len) = u16::try_from(reply.len()) else {
                    return;
                };
                if conn.write_u16(len).await.is_err() || conn.write_all(&reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn ask(store: &Store, vpc: &str, name: &str, qtype: RecordType) -> Message {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        Message::from_vec(&answer(store, vpc, None, &q.to_vec().unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn answers_on_the_wire() {
        let store = Arc::new(Store::in_memory().unwrap());
        let ec2 = cove_ec2::Ec2Service::new(store.clone());
        ec2.ensure_region("us-east-1", "123456789012").unwrap();
        let vpc = store.snapshot().vpcs.keys().next().unwrap().clone();

        let reply = ask(&store, &vpc, "s3.us-east-1.amazonaws.com.", RecordType::A);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        let ips: Vec<String> = reply.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(ips, vec!["192.0.2.20".to_string()]);
        assert_eq!(reply.answers[0].ttl, TTL);

        // The name exists but holds no AAAA record: an empty NOERROR answer.
        let reply = ask(
            &store,
            &vpc,
            "s3.us-east-1.amazonaws.com.",
            RecordType::AAAA,
        );
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.answers.is_empty());

        // A public name resolves to the simulated web; a reserved one does not.
        let reply = ask(&store, &vpc, "www.example.com.", RecordType::A);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.answers[0].data.to_string(), "203.0.113.11");
        let reply = ask(&store, &vpc, "db.invalid.", RecordType::A);
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        let reply = ask(
            &store,
            "vpc-missing",
            "s3.us-east-1.amazonaws.com.",
            RecordType::A,
        );
        assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
        assert!(answer(&store, &vpc, None, b"not dns").is_none());
    }
}
