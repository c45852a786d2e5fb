//! What the real-packet tests share: a listener inside an ENI's namespace,
//! and the check that the kernel and the reachability model agree.
#![allow(dead_code)]

pub mod two_hosts;

use cove_model::world::World;
use std::net::{Ipv4Addr, TcpListener};

/// Listens on `addr:port` inside namespace `netns`, accepting forever.
pub fn listen_in(netns: &str, addr: Ipv4Addr, port: u16) {
    let listener = cove_net::netns::run_in(netns, move || TcpListener::bind((addr, port)))
        .expect("entering the namespace")
        .expect("binding inside the ENI");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
}

/// Asserts that a TCP probe from ENI `src` to ENI `dst` went as `allowed`
/// says in the kernel (`kernel`) and in the reachability model of `world`.
pub fn assert_agree(
    world: &World,
    (src, src_eni): (&str, &str),
    (dst, dst_eni): (&str, &str),
    (port, source_port): (u16, Option<u16>),
    kernel: bool,
    allowed: bool,
) {
    let query = cove_reach::Query {
        source: cove_reach::Source::Eni(src_eni.to_string()),
        target: cove_reach::Target::Eni(dst_eni.to_string()),
        protocol: cove_reach::Protocol::Tcp,
        port: Some(port),
        source_port,
    };
    let model = cove_reach::analyze(world, &query).expect("a valid query");
    assert_eq!(kernel, allowed, "kernel: {src} -> {dst}:{port}");
    assert_eq!(
        model.found, allowed,
        "model: {src} -> {dst}:{port}: {:?}",
        model.explanations
    );
}
