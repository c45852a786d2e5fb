//! The hosts of a Cove spread over machines (docs/scale-out.md): a host's
//! registration in the store with its capacity, its heartbeats, the control
//! plane's watch that marks a silent host lost, and `cove hosts`.

use cove_model::hosts::{Host, HostState, HEARTBEAT_SECONDS, LOST_AFTER_SECONDS, SYSTEM_ACCOUNT};
use cove_model::world::World;
use cove_model::AwsError;
use cove_store::Store;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// What this machine offers: CPUs, memory (MiB) and NVIDIA GPUs (as its
/// CDI specs describe them).
pub fn capacity() -> (u32, u64, u32) {
    let cpus = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib / 1024)
        .unwrap_or_default();
    // The GPUs Cove can give to containers: those of the CDI specs.
    let gpus = cove_host::gpu::count(&cove_host::gpu::cdi_dirs());
    (cpus, memory_mib, u32::try_from(gpus).unwrap_or(u32::MAX))
}

/// Who this process is among the hosts.
#[derive(Debug, Clone)]
pub struct Registration {
    pub id: String,
    pub underlay: Ipv4Addr,
    pub control_plane: bool,
    /// The instance tag of this host's kernel objects.
    pub instance: String,
    /// The control plane's placement of ENIs no tag places.
    pub eni_placement: Option<cove_model::hosts::EniPlacement>,
    /// The control plane's CA certificates, for the agents' containers.
    pub ca_certificates: Option<String>,
    /// The control plane's registry port on its underlay address.
    pub registry_port: Option<u16>,
    /// An agent's relay to its serving containers.
    pub serving_relay: Option<cove_model::hosts::ServingRelay>,
}

/// Registers (or re-registers) this machine as host `r.id`. The control
/// plane's registration replaces an earlier one under another id (the
/// ENIs that name no host follow it). An agent may not take the control
/// plane's id, nor the control plane an agent's.
pub fn register(store: &Store, r: &Registration) -> anyhow::Result<()> {
    let (id, underlay, control_plane) = (r.id.as_str(), r.underlay, r.control_plane);
    let (cpus, memory_mib, gpus) = capacity();
    store
        .write(|tx| {
            tx.act_for(SYSTEM_ACCOUNT);
            if let Some(h) = tx.world.hosts.get(id) {
                if h.control_plane != control_plane {
                    return Err(AwsError::internal(format!(
                        "host id {id} is already registered as {}",
                        if h.control_plane {
                            "the control plane's host"
                        } else {
                            "an agent's host"
                        }
                    )));
                }
            }
            if let Some(taken) = tx
                .world
                .hosts
                .values()
                .find(|h| h.id != id && h.underlay == underlay)
            {
                return Err(AwsError::internal(format!(
                    "underlay address {underlay} is already host {}'s",
                    taken.id
                )));
            }
            if control_plane {
                let earlier: Vec<String> = tx
                    .world
                    .hosts
                    .values()
                    .filter(|h| h.control_plane && h.id != id)
                    .map(|h| h.id.clone())
                    .collect();
                for old in earlier {
                    tx.delete::<Host>(&old);
                }
            }
            let registered_at = tx
                .world
                .hosts
                .get(id)
                .map(|h| h.registered_at.clone())
                .unwrap_or_else(cove_model::ids::now_rfc3339);
            tx.put(Host {
                id: id.to_string(),
                underlay,
                control_plane,
                cpus,
                memory_mib,
                gpus,
                state: HostState::Available,
                registered_at,
                heartbeat_at: now(),
                applied_position: store.applied_position(),
                instance: r.instance.clone(),
                eni_placement: r.eni_placement,
                ca_certificates: r.ca_certificates.clone(),
                registry_port: r.registry_port,
                serving_relay: r.serving_relay.clone(),
            });
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("registering host {id}: {}", e.message))
}

/// One heartbeat: the host is alive now (and available again if it was
/// marked lost).
fn beat(store: &Store, id: &str) -> Result<(), String> {
    store
        .write(|tx| {
            let Some(h) = tx.world.hosts.get(id) else {
                return Err(AwsError::internal(format!(
                    "host {id} is no longer registered"
                )));
            };
            if h.state == HostState::Lost {
                tracing::warn!(host = id, "this host was marked lost; available again");
            }
            let host = Host {
                heartbeat_at: now(),
                state: HostState::Available,
                applied_position: store.applied_position(),
                ..(**h).clone()
            };
            tx.act_for(SYSTEM_ACCOUNT);
            tx.put(host);
            Ok(())
        })
        .map_err(|e| e.message)
}

/// Beats every [`HEARTBEAT_SECONDS`] on a thread of its own; a host whose
/// registration was removed registers again.
pub fn spawn_heartbeats(store: Arc<Store>, r: Registration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("cove-heartbeat".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(HEARTBEAT_SECONDS));
            if let Err(why) = beat(&store, &r.id) {
                tracing::warn!(host = %r.id, error = %why, "heartbeat not stored");
                if !store.snapshot().hosts.contains_key(&r.id) {
                    if let Err(e) = register(&store, &r) {
                        tracing::warn!(host = %r.id, error = %e, "registering again failed");
                    }
                }
            }
        })
        .map(|_| ())
}

/// The agents' hosts silent for longer than [`LOST_AFTER_SECONDS`] at `now`
/// and not yet marked lost.
fn newly_silent(world: &World, now: u64) -> Vec<String> {
    world
        .hosts
        .values()
        .filter(|h| !h.control_plane && h.state == HostState::Available && h.silent_at(now))
        .map(|h| h.id.clone())
        .collect()
}

/// The control plane's watch: marks hosts that stopped beating lost.
pub fn spawn_lost_watch(store: Arc<Store>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("cove-host-watch".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(HEARTBEAT_SECONDS));
            let silent = newly_silent(&store.snapshot(), now());
            for id in silent {
                let marked = store.write(|tx| {
                    // Checked again in the transaction: a beat may have come.
                    let Some(h) = tx.world.hosts.get(&id) else {
                        return Ok(false);
                    };
                    if h.state != HostState::Available || !h.silent_at(now()) {
                        return Ok(false);
                    }
                    let lost = Host {
                        state: HostState::Lost,
                        ..(**h).clone()
                    };
                    tx.act_for(SYSTEM_ACCOUNT);
                    tx.put(lost);
                    Ok(true)
                });
                match marked {
                    Ok(true) => tracing::warn!(
                        host = %id,
                        silent_for_seconds = LOST_AFTER_SECONDS,
                        "host stopped heart-beating: marked lost"
                    ),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(host = %id, error = %e.message, "marking host lost failed")
                    }
                }
            }
            lift_held_addresses(&store);
        })
        .map(|_| ())
}

/// Gives new ENIs back the addresses held since their ENIs were released
/// from a lost host, once that host is back and has applied the release
/// (its heartbeat reports how far it has applied), or is gone.
fn lift_held_addresses(store: &Store) {
    if !cove_ec2::held_addresses_to_lift(&store.snapshot()) {
        return;
    }
    match store.write(|tx| Ok(cove_ec2::lift_held_addresses(tx))) {
        Ok(lifted) => tracing::info!(
            addresses = lifted,
            "addresses released from a lost host are free again"
        ),
        Err(e) => tracing::warn!(error = %e.message, "freeing held addresses failed"),
    }
}

/// `cove hosts`: one line per host with what is placed on it.
pub fn render(world: &World, now: u64) -> String {
    let mut out = format!(
        "{:<20} {:<16} {:<13} {:<10} {:>5} {:>10} {:>5} {:>5} {:>9} {:>10}\n",
        "HOST",
        "UNDERLAY",
        "ROLE",
        "STATE",
        "CPUS",
        "MEMORY_MIB",
        "GPUS",
        "ENIS",
        "INSTANCES",
        "LAST_BEAT"
    );
    for h in world.hosts.values() {
        let enis = world
            .network_interfaces
            .values()
            .filter(|e| cove_model::hosts::host_of(world, e) == Some(h.id.as_str()))
            .count();
        out.push_str(&format!(
            "{:<20} {:<16} {:<13} {:<10} {:>5} {:>10} {:>5} {:>5} {:>9} {:>9}s\n",
            h.id,
            h.underlay.to_string(),
            h.role(),
            h.state.as_str(),
            h.cpus,
            h.memory_mib,
            h.gpus,
            enis,
            cove_model::hosts::instances_on(world, &h.id),
            now.saturating_sub(h.heartbeat_at),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, control_plane: bool, beat: u64, state: HostState) -> Arc<Host> {
        Arc::new(Host {
            memory_mib: 1,
            state,
            heartbeat_at: beat,
            ..cove_model::fixtures::host(id, 1, control_plane)
        })
    }

    #[test]
    fn only_silent_available_agents_are_marked_lost() {
        let mut w = World::default();
        for h in [
            host("cp", true, 0, HostState::Available),
            host("fresh", false, 95, HostState::Available),
            host("silent", false, 10, HostState::Available),
            host("gone", false, 10, HostState::Lost),
        ] {
            w.hosts.insert(h.id.clone(), h);
        }
        assert_eq!(newly_silent(&w, 100), vec!["silent".to_string()]);
        assert!(newly_silent(&w, 10 + LOST_AFTER_SECONDS).is_empty());
    }

    #[test]
    fn capacity_reads_this_machine() {
        let (cpus, memory_mib, _) = capacity();
        assert!(cpus >= 1);
        assert!(memory_mib > 0);
    }

    #[test]
    fn the_listing_counts_each_hosts_enis() {
        let mut w = World::default();
        w.hosts
            .insert("cp".into(), host("cp", true, 90, HostState::Available));
        let text = render(&w, 100);
        assert!(text.lines().nth(1).unwrap().contains("control-plane"));
        assert!(text.contains("10s"), "{text}");
    }
}
