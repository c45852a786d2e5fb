//! A VPC spread over two simulated hosts (see tests/overlay.rs): shared by
//! the overlay tests and `examples/overlay_bench.rs`.
#![allow(dead_code)]

use cove_dataplane::linux;
use cove_dataplane::netlink::{self, Netlink};
use cove_model::fixtures::*;
use cove_model::vpc::*;
use cove_model::world::World;
use cove_net::netns;
use cove_net::overlay;
use cove_net::plan::{plan_vpc, RouterPlan};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static LABS: AtomicUsize = AtomicUsize::new(0);

/// One host of the lab: its namespace, underlay address, and its plan of
/// the VPC (only the ENIs placed on it).
pub struct Host {
    pub netns: String,
    pub underlay: Ipv4Addr,
    pub plan: RouterPlan,
}

pub struct Lab {
    pub world: World,
    pub hosts: Vec<Host>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &self.hosts {
            if let Err(e) = linux::remove(&h.plan) {
                eprintln!("cleanup of {} failed: {e}", h.plan.netns);
            }
            let _ = netlink::delete_netns(&h.netns);
        }
    }
}

/// The lab: the fixture VPC's ENIs a1 and a2 on host 0, b1 on host 1.
pub fn lab(groups: Vec<SecurityGroup>, eni_groups: [&[&str]; 3], acls: Vec<NetworkAcl>) -> Lab {
    assert!(
        cove_sys::is_root(),
        "the overlay tests need root (they create network namespaces)"
    );
    let tag = format!(
        "{:x}o{}",
        std::process::id(),
        LABS.fetch_add(1, Ordering::Relaxed)
    );
    let world = world(&tag, groups, eni_groups, acls);
    let vpc = vpc_id(&world);
    let placement = |eni: &str| usize::from(eni.starts_with("eni-b"));
    let mut lab = Lab {
        world,
        hosts: Vec::new(),
    };
    for (i, last_octet) in [1u8, 2].into_iter().enumerate() {
        // Each host's Cove has its own instance tag, so its namespaces and
        // links have names of their own on this one machine.
        let instance = format!("{tag}h{i}");
        let mut plan = plan_vpc(&lab.world, &instance, &vpc).expect("fixture VPC");
        plan.enis.retain(|e| placement(&e.id) == i);
        let netns = format!("covhost-{instance}");
        netlink::create_netns(&netns).expect("the host's namespace");
        lab.hosts.push(Host {
            netns,
            underlay: Ipv4Addr::new(198, 51, 100, last_octet),
            plan,
        });
    }
    // The underlay: a veth between the two hosts.
    let other = netlink::open_netns(&lab.hosts[1].netns).expect("host 1's namespace");
    let mut h0 = Netlink::in_netns(&lab.hosts[0].netns).unwrap();
    h0.add_veth("cvund0", None, "cvund1", other.as_fd())
        .expect("the underlay link");
    for (h, link) in lab.hosts.iter().zip(["cvund0", "cvund1"]) {
        let mut nl = Netlink::in_netns(&h.netns).unwrap();
        for name in ["lo", link] {
            let index = nl.link_index(name).unwrap().expect("link");
            nl.set_up(index).unwrap();
        }
        let index = nl.link_index(link).unwrap().expect("link");
        nl.replace_address(index, h.underlay, 24, false).unwrap();
        nl.set_mtu(index, overlay::UNDERLAY_MTU).unwrap();
    }
    for h in &lab.hosts {
        linux::apply(&h.plan).expect("applying the host's plan");
    }
    lab.join_overlay();
    lab
}

impl Lab {
    /// On each host, the overlay as `linux::apply_overlay` makes it from
    /// the pure plan (`cove_net::overlay::plan`) of where the ENIs are.
    pub fn join_overlay(&self) {
        let placed: Vec<(Ipv4Addr, Ipv4Addr)> = self
            .hosts
            .iter()
            .flat_map(|h| h.plan.enis.iter().map(|e| (h.underlay, e.ip)))
            .collect();
        for h in &self.hosts {
            let plan = overlay::plan(&h.plan.vpc_id, h.underlay, placed.iter().copied(), None)
                .expect("the other host holds ENIs");
            // Twice: the second pass finds everything in place.
            for _ in 0..2 {
                linux::apply_overlay(Some(&h.netns), &h.plan.netns, &plan)
                    .expect("applying the overlay");
            }
        }
    }

    pub fn eni(&self, addr: Ipv4Addr) -> (&Host, &cove_net::plan::EniPlan) {
        self.hosts
            .iter()
            .find_map(|h| h.plan.eni_by_ip(addr).map(|e| (h, e)))
            .expect("an ENI of the lab")
    }

    pub fn listen(&self, addr: Ipv4Addr, port: u16) {
        super::listen_in(&self.eni(addr).1.netns, addr, port);
    }

    pub fn connects(&self, src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> bool {
        netns::run_in(&self.eni(src).1.netns, move || {
            let to: SocketAddr = SocketAddrV4::new(dst, port).into();
            std::net::TcpStream::connect_timeout(&to, Duration::from_millis(700)).is_ok()
        })
        .expect("entering the namespace")
    }

    /// Probes with real packets and checks that the reachability model,
    /// which knows nothing of hosts, predicts the same.
    pub fn expect(&self, src: &str, dst: &str, port: u16, allowed: bool) {
        let (s, d) = (ip(src), ip(dst));
        let kernel = self.connects(s, d, port);
        super::assert_agree(
            &self.world,
            (src, &self.eni(s).1.id),
            (dst, &self.eni(d).1.id),
            (port, None),
            kernel,
            allowed,
        );
    }
}
