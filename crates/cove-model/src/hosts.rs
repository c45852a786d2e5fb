//! The machines Cove runs on (issue 18; docs/scale-out.md): each host's
//! registration (its underlay address and capacity), its liveness, and
//! which host an ENI is placed on. The control plane's own host runs every
//! ENI that names no host; a `cove agent` runs the ENIs placed on it.
//! Hosts belong to no AWS account: they are stored under [`SYSTEM_ACCOUNT`],
//! which no API caller has.

use crate::vpc::NetworkInterface;
use crate::world::World;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The owner of Cove's own documents (hosts): not a 12-digit account id,
/// so no caller's view ever holds them.
pub const SYSTEM_ACCOUNT: &str = "cove-system";

/// The tag that pins an ENI made by `CreateNetworkInterface` to a host
/// (the value is the host's id). AWS reserves only the `aws:` prefix.
pub const HOST_TAG: &str = "cove:host";

/// How often an agent says it is alive, and how long the control plane
/// waits without hearing from it before it marks the host lost.
pub const HEARTBEAT_SECONDS: u64 = 5;
pub const LOST_AFTER_SECONDS: u64 = 20;

crate::text_enum! {
    /// A host's liveness as the control plane sees it.
    pub enum HostState { Available = "available", Lost = "lost" }
}

/// One machine: the control plane's own, or an agent's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// Chosen by the operator (`--host-id`), stable across restarts.
    pub id: String,
    /// Where the other hosts send this host's overlay traffic.
    pub underlay: Ipv4Addr,
    /// The host runs the control plane (`cove serve`), and with it every
    /// ENI that names no host.
    pub control_plane: bool,
    pub cpus: u32,
    pub memory_mib: u64,
    pub gpus: u32,
    pub state: HostState,
    pub registered_at: String,
    /// Seconds since the Unix epoch of the last heartbeat.
    pub heartbeat_at: u64,
    /// The store position (`cove_store::Store::snapshot_at`) of the newest
    /// world the host's data plane had made real at its last heartbeat:
    /// how far behind it is, for operators and tests.
    #[serde(default)]
    pub applied_position: u64,
}

impl Host {
    /// Whether `other` differs from this host in anything but what its
    /// heartbeat reports: what the data plane has to act on.
    pub fn same_but_heartbeat(&self, other: &Host) -> bool {
        Host {
            heartbeat_at: other.heartbeat_at,
            applied_position: other.applied_position,
            ..self.clone()
        } == *other
    }

    /// Whether the heartbeat is older than [`LOST_AFTER_SECONDS`] at `now`.
    pub fn silent_at(&self, now: u64) -> bool {
        now.saturating_sub(self.heartbeat_at) > LOST_AFTER_SECONDS
    }
}

/// The control plane's host, if it registered one.
pub fn control_plane(world: &World) -> Option<&Host> {
    world
        .hosts
        .values()
        .map(|h| h.as_ref())
        .find(|h| h.control_plane)
}

/// The id of the host an ENI runs on: the one it names, else the control
/// plane's (`None` when it names none and no control plane registered one:
/// a single-host Cove, which needs no overlay).
pub fn host_of<'a>(world: &'a World, eni: &'a NetworkInterface) -> Option<&'a str> {
    match &eni.host {
        Some(h) => Some(h.as_str()),
        None => control_plane(world).map(|h| h.id.as_str()),
    }
}

/// Where this process's data plane runs: which ENIs and routers it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locality {
    /// This host's id (`None`: a single-host Cove that registered no host).
    pub host: Option<String>,
    /// This process is the control plane: it runs the ENIs that name no
    /// host, and every VPC's router (gateways and endpoints live there).
    pub control_plane: bool,
}

impl Locality {
    /// A single-host Cove: everything is local.
    pub fn everything() -> Locality {
        Locality {
            host: None,
            control_plane: true,
        }
    }

    /// Whether `eni` runs here.
    pub fn holds(&self, eni: &NetworkInterface) -> bool {
        match &eni.host {
            None => self.control_plane,
            Some(h) => self.host.as_deref() == Some(h.as_str()),
        }
    }

    /// This host's registration, when it has one.
    pub fn this_host<'a>(&self, world: &'a World) -> Option<&'a Host> {
        world.hosts.get(self.host.as_deref()?).map(|h| h.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use std::sync::Arc;

    fn host(id: &str, last: u8, control_plane: bool) -> Host {
        Host {
            id: id.into(),
            underlay: Ipv4Addr::new(198, 51, 100, last),
            control_plane,
            cpus: 2,
            memory_mib: 1024,
            gpus: 0,
            state: HostState::Available,
            registered_at: "2026-12-06T00:00:00Z".into(),
            heartbeat_at: 100,
            applied_position: 0,
        }
    }

    #[test]
    fn an_eni_naming_no_host_runs_on_the_control_plane() {
        let mut world = fixtures::world("h", vec![], [&[], &[], &[]], vec![]);
        let eni_id = world.network_interfaces.keys().next().unwrap().clone();
        let eni = world.network_interfaces[&eni_id].clone();
        assert_eq!(host_of(&world, &eni), None, "no host registered yet");
        assert!(Locality::everything().holds(&eni));
        world.hosts.insert("a".into(), Arc::new(host("a", 1, true)));
        world
            .hosts
            .insert("b".into(), Arc::new(host("b", 2, false)));
        assert_eq!(host_of(&world, &eni), Some("a"));
        let agent = Locality {
            host: Some("b".into()),
            control_plane: false,
        };
        assert!(!agent.holds(&eni));
        let pinned = NetworkInterface {
            host: Some("b".into()),
            ..(*eni).clone()
        };
        assert!(agent.holds(&pinned));
        assert_eq!(host_of(&world, &pinned), Some("b"));
        assert_eq!(agent.this_host(&world).unwrap().underlay.octets()[3], 2);
    }

    #[test]
    fn a_heartbeat_alone_is_not_a_change_and_silence_is_measured() {
        let a = host("a", 1, false);
        let later = Host {
            heartbeat_at: 200,
            applied_position: 7,
            ..a.clone()
        };
        assert!(a.same_but_heartbeat(&later));
        let lost = Host {
            state: HostState::Lost,
            ..a.clone()
        };
        assert!(!a.same_but_heartbeat(&lost));
        assert!(!a.silent_at(100 + LOST_AFTER_SECONDS));
        assert!(a.silent_at(101 + LOST_AFTER_SECONDS));
    }
}
