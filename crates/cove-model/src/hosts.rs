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

crate::text_enum! {
    /// Where an ENI that no instance owns and no `cove:host` tag places
    /// goes (`cove serve --eni-placement`).
    pub enum EniPlacement {
        /// The control plane's host.
        ControlPlane = "control-plane",
        /// The available host with the fewest ENIs.
        Spread = "spread",
    }
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
    /// The instance tag of the host's kernel objects (its namespaces'
    /// names), for `cove exec` on a machine that runs several hosts (the
    /// simulation).
    #[serde(default)]
    pub instance: String,
    /// On the control plane's registration: how ENIs that no tag places
    /// are placed (`None`: on the control plane's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eni_placement: Option<EniPlacement>,
    /// On the control plane's registration: Cove's CA certificates (PEM),
    /// which agents add to the bundle their containers trust, so SDKs in a
    /// job on any host verify Cove's HTTPS listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// On the control plane's registration: the port on its underlay
    /// address where it serves Cove's registry (the distribution API only,
    /// over HTTPS with Cove's CA), from which agents pull the images of
    /// the instances placed on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_port: Option<u16>,
    /// On an agent's registration: where the control plane reaches the
    /// serving containers of the endpoint instances placed on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_relay: Option<ServingRelay>,
}

/// An agent's relay to its serving containers (`cove_jobs::relay`): a
/// port on its underlay address that opens a tunnel to one in-service
/// instance's container for a caller that presents the token. The token is
/// new at each start of the agent, and only the store holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingRelay {
    pub port: u16,
    pub token: String,
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

    /// `control-plane` or `agent`, as `cove hosts` and the health check say.
    pub fn role(&self) -> &'static str {
        if self.control_plane {
            "control-plane"
        } else {
            "agent"
        }
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

/// Every instance that holds a host's capacity: those of unfinished
/// training and processing jobs, of every endpoint and unfinished batch
/// transform job, and every Studio app
/// that is not gone, each with the host it is placed on (`None`: the
/// control plane's) and its instance type. One that is still to be placed
/// (no ENI yet, in its first step) holds none: it is the one being placed,
/// or will be placed after it.
fn placed_instances(world: &World) -> impl Iterator<Item = (Option<&str>, String)> {
    use crate::endpoints::InstanceState;
    let jobs = world
        .sagemaker_jobs
        .values()
        .filter(|j| j.phase != crate::jobs::JobPhase::CleanedUp)
        .flat_map(|j| {
            let instance_type = j.request.cluster().0;
            let unplaced = j.phase == crate::jobs::JobPhase::Starting;
            j.hosts
                .iter()
                .filter(move |i| !(unplaced && i.eni_id.is_none()))
                .map(move |i| (i.placed_on.as_deref(), instance_type.clone()))
        });
    let endpoints = world.sagemaker_endpoints.values().flat_map(|e| {
        e.instances
            .iter()
            .filter(|i| !(i.state == InstanceState::Provisioning && i.eni_id.is_none()))
            .map(|i| {
                let instance_type = e
                    .variant_of(i)
                    .map(|v| v.instance_type.clone())
                    .unwrap_or_default();
                (i.placed_on.as_deref(), instance_type)
            })
    });
    let transforms = world
        .transform_jobs
        .values()
        .filter(|j| j.phase != crate::endpoints::TransformPhase::CleanedUp)
        .flat_map(|j| {
            let instance_type = &j.request.transform_resources.instance_type;
            j.instances
                .iter()
                .filter(|i| !(i.state == InstanceState::Provisioning && i.eni_id.is_none()))
                .map(move |i| (i.placed_on.as_deref(), instance_type.clone()))
        });
    // An app holds what its request's spec asks for, else SageMaker's
    // default type (the spec its domain or profile sets is not counted).
    let apps = world
        .studio_apps
        .values()
        .filter(|a| a.phase != crate::studio::AppPhase::Gone)
        .filter(|a| !(a.phase == crate::studio::AppPhase::Starting && a.eni_id.is_none()))
        .map(|a| {
            let instance_type = a
                .request
                .resource_spec
                .as_ref()
                .and_then(|s| s.instance_type.clone())
                .unwrap_or_else(|| "ml.t3.medium".to_string());
            (a.placed_on.as_deref(), instance_type)
        });
    jobs.chain(endpoints).chain(transforms).chain(apps)
}

/// Whether a workload placed on `placed_on` (`None`: the control plane's
/// host, never lost) is on a host that is lost or no longer registered.
pub fn on_lost_host(world: &World, placed_on: Option<&str>) -> bool {
    placed_on.is_some_and(|h| {
        world
            .hosts
            .get(h)
            .is_none_or(|h| h.state == HostState::Lost)
    })
}

/// How many instances of unfinished jobs, of endpoints and Studio apps run
/// on host `id`
/// (an instance placed on no host runs on the control plane's).
pub fn instances_on(world: &World, id: &str) -> usize {
    let control_plane = control_plane(world).map(|h| h.id.as_str());
    placed_instances(world)
        .filter(|(on, _)| on.or(control_plane) == Some(id))
        .count()
}

/// The host a new ENI that no tag places goes to under the control
/// plane's placement (`None`: the control plane's host).
pub fn place_new_eni(world: &World) -> Option<String> {
    let cp = control_plane(world)?;
    if cp.eni_placement != Some(EniPlacement::Spread) {
        return None;
    }
    let mut load: std::collections::BTreeMap<&str, usize> = world
        .hosts
        .values()
        .filter(|h| h.state == HostState::Available)
        .map(|h| (h.id.as_str(), 0))
        .collect();
    for e in world.network_interfaces.values() {
        if let Some(n) = host_of(world, e).and_then(|h| load.get_mut(h)) {
            *n += 1;
        }
    }
    let (id, _) = load.into_iter().min_by_key(|(id, n)| (*n, *id))?;
    (id != cp.id).then(|| id.to_string())
}

/// What one ML instance takes of a host, from its instance type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    pub cpus: f64,
    pub memory_mib: f64,
    pub gpus: u32,
}

impl Demand {
    /// What an instance of `instance_type` takes (one vCPU and 1 GiB when
    /// Cove cannot size the type).
    pub fn of(instance_type: &str) -> Demand {
        let (cpus, gib) = crate::instance::resources(instance_type).unwrap_or((1.0, 1.0));
        Demand {
            cpus,
            memory_mib: gib * 1024.0,
            gpus: crate::instance::gpus(instance_type),
        }
    }
}

/// The hosts of a new job's `count` instances of `demand` each, under the
/// control plane's placement (`None`: the control plane's host). With
/// `spread`, each instance goes to the available host that holds the
/// fewest of the job's instances so far, among those where it still fits
/// beside what unfinished jobs and endpoints hold, then with the most free
/// vCPUs; where it fits nowhere it goes to the host with the most free
/// vCPUs anyway: Cove overcommits rather than refusing, as each
/// container's cgroup holds it to its type's share.
pub fn place_instances(world: &World, count: usize, demand: Demand) -> Vec<Option<String>> {
    place_instances_beside(world, count, demand, &[])
}

/// [`place_instances`] for new instances of an owner that already has
/// instances on `siblings` (an endpoint's variant growing or replacing a
/// lost instance): they count as the owner's when spreading.
pub fn place_instances_beside(
    world: &World,
    count: usize,
    demand: Demand,
    siblings: &[Option<&str>],
) -> Vec<Option<String>> {
    let Some(cp) = control_plane(world).filter(|cp| cp.eni_placement == Some(EniPlacement::Spread))
    else {
        return vec![None; count];
    };
    let mut hosts: Vec<(&Host, Demand)> = world
        .hosts
        .values()
        .filter(|h| h.state == HostState::Available)
        .map(|h| {
            let zero = Demand {
                cpus: 0.0,
                memory_mib: 0.0,
                gpus: 0,
            };
            (h.as_ref(), zero)
        })
        .collect();
    for (on, instance_type) in placed_instances(world) {
        let taken = Demand::of(&instance_type);
        let on = on.unwrap_or(&cp.id);
        if let Some((_, used)) = hosts.iter_mut().find(|(h, _)| h.id == on) {
            used.cpus += taken.cpus;
            used.memory_mib += taken.memory_mib;
            used.gpus += taken.gpus;
        }
    }
    let fits = |h: &Host, used: &Demand| {
        used.cpus + demand.cpus <= f64::from(h.cpus)
            && used.memory_mib + demand.memory_mib <= h.memory_mib as f64
            && used.gpus + demand.gpus <= h.gpus
    };
    let mut of_this_job: std::collections::BTreeMap<String, usize> = Default::default();
    for on in siblings {
        *of_this_job
            .entry(on.unwrap_or(&cp.id).to_string())
            .or_default() += 1;
    }
    let mut placed = Vec::with_capacity(count);
    for _ in 0..count {
        let best = hosts
            .iter_mut()
            .map(|(h, used)| {
                let free = f64::from(h.cpus) - used.cpus;
                let mine = of_this_job.get(&h.id).copied().unwrap_or(0);
                (!fits(h, used), mine, -free, h.id.clone(), used)
            })
            .min_by(|a, b| {
                (a.0, a.1)
                    .cmp(&(b.0, b.1))
                    .then(a.2.total_cmp(&b.2))
                    .then(a.3.cmp(&b.3))
            });
        let Some((_, _, _, id, used)) = best else {
            placed.push(None);
            continue;
        };
        used.cpus += demand.cpus;
        used.memory_mib += demand.memory_mib;
        used.gpus += demand.gpus;
        *of_this_job.entry(id.clone()).or_default() += 1;
        placed.push((id != cp.id).then_some(id));
    }
    placed
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
        self.runs(eni.host.as_deref())
    }

    /// Whether an instance placed on `host` (`None`: the control plane's
    /// host) runs here.
    pub fn runs(&self, host: Option<&str>) -> bool {
        match host {
            None => self.control_plane,
            Some(h) => self.host.as_deref() == Some(h),
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
            registered_at: "2026-12-06T00:00:00Z".into(),
            heartbeat_at: 100,
            ..fixtures::host(id, last, control_plane)
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

    fn job_on(hosts: &[Option<&str>], instance_type: &str) -> crate::jobs::SageMakerJob {
        let mut job = crate::jobs::tests_support::job();
        job.phase = crate::jobs::JobPhase::Running;
        if let crate::jobs::JobRequest::Training(r) = &mut job.request {
            r.resource_config = Some(cove_shapes::sagemaker::ResourceConfig {
                instance_type: Some(instance_type.into()),
                instance_count: Some(i64::try_from(hosts.len()).unwrap()),
                ..Default::default()
            });
        }
        job.hosts = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| crate::jobs::JobHost {
                placed_on: h.map(String::from),
                ..crate::jobs::JobHost::new(format!("algo-{}", i + 1))
            })
            .collect();
        job
    }

    fn endpoint_on(host: Option<&str>, instance_type: &str) -> crate::endpoints::SageMakerEndpoint {
        use crate::endpoints::*;
        let mut instance = EndpointInstance::provisioning("AllTraffic", "config");
        instance.placed_on = host.map(String::from);
        instance.eni_id = Some("eni-1".into());
        SageMakerEndpoint {
            name: "ep".into(),
            arn: "arn:aws:sagemaker:us-east-1:000000000000:endpoint/ep".into(),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            config_name: "config".into(),
            variants: vec![EndpointVariant {
                name: "AllTraffic".into(),
                model_name: "m".into(),
                instance_type: instance_type.into(),
                current_weight: 1.0,
                desired_weight: 1.0,
                current_instance_count: 1,
                desired_instance_count: 1,
                image: "img".into(),
            }],
            pending_config: None,
            pending_variants: vec![],
            pending_since: None,
            status: EndpointStatus::InService,
            failure_reason: None,
            creation_time: String::new(),
            last_modified_time: String::new(),
            instances: vec![instance],
            delete_requested: false,
            request: Default::default(),
        }
    }

    fn transform_on(host: Option<&str>, instance_type: &str) -> crate::endpoints::TransformJob {
        use crate::endpoints::*;
        let mut instance = EndpointInstance::provisioning("AllTraffic", "");
        instance.placed_on = host.map(String::from);
        instance.eni_id = Some("eni-2".into());
        let mut request = Box::<cove_shapes::sagemaker::CreateTransformJobRequest>::default();
        request.transform_resources.instance_type = instance_type.into();
        TransformJob {
            name: "bt".into(),
            arn: "arn:aws:sagemaker:us-east-1:000000000000:transform-job/bt".into(),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            request,
            model: Default::default(),
            status: crate::jobs::JobStatus::InProgress,
            failure_reason: None,
            creation_time: String::new(),
            start_time: None,
            end_time: None,
            last_modified_time: String::new(),
            instances: vec![instance],
            stop_requested: false,
            phase: TransformPhase::Transforming,
        }
    }

    #[test]
    fn instances_spread_over_hosts_where_they_fit_and_overcommit_when_none_fits() {
        let mut world = fixtures::world("h", vec![], [&[], &[], &[]], vec![]);
        let demand = Demand::of("ml.m5.large"); // 2 vCPUs, 8 GiB
        assert_eq!(
            place_instances(&world, 2, demand),
            [None, None],
            "single host"
        );
        let mut cp = host("a", 1, true);
        cp.cpus = 4;
        cp.memory_mib = 32 * 1024;
        world.hosts.insert("a".into(), Arc::new(cp.clone()));
        let mut b = host("b", 2, false);
        b.cpus = 8;
        b.memory_mib = 64 * 1024;
        world.hosts.insert("b".into(), Arc::new(b));
        world
            .hosts
            .insert("c".into(), Arc::new(host("c", 3, false)));
        assert_eq!(
            place_instances(&world, 3, demand),
            [None, None, None],
            "the control plane's host unless placement spreads"
        );
        cp.eni_placement = Some(EniPlacement::Spread);
        world.hosts.insert("a".into(), Arc::new(cp));
        // c (2 vCPUs, 1 GiB) fits no m5.large: a and b take one each, then
        // the one with more free vCPUs (b) the third.
        assert_eq!(
            place_instances(&world, 3, demand),
            [Some("b".into()), None, Some("b".into())]
        );
        // A running job holding 6 of b's vCPUs leaves it room for one.
        let running = job_on(&[Some("b"), Some("b"), Some("b")], "ml.m5.large");
        world
            .sagemaker_jobs
            .insert(running.key(), Arc::new(running));
        assert_eq!(
            place_instances(&world, 3, demand),
            [None, Some("b".into()), None]
        );
        assert_eq!(
            (instances_on(&world, "b"), instances_on(&world, "a")),
            (3, 0)
        );
        // The job being placed (Starting, no ENIs yet) holds nothing.
        let mut starting = job_on(&[None, None], "ml.m5.large");
        starting.name = "starting".into();
        starting.arn = "arn-starting".into();
        starting.phase = crate::jobs::JobPhase::Starting;
        world
            .sagemaker_jobs
            .insert(starting.key(), Arc::new(starting));
        assert_eq!(instances_on(&world, "a"), 0);
        // A new instance of an owner with one on the control plane's host
        // goes elsewhere where it fits.
        assert_eq!(
            place_instances_beside(&world, 1, demand, &[None]),
            [Some("b".into())]
        );
        // An endpoint's instance holds capacity too: b is full.
        let mut endpoint = endpoint_on(Some("b"), "ml.m5.large");
        world
            .sagemaker_endpoints
            .insert(endpoint.key(), Arc::new(endpoint.clone()));
        assert_eq!(instances_on(&world, "b"), 4);
        assert_eq!(
            place_instances_beside(&world, 1, demand, &[None]),
            [None],
            "a fits, b does not"
        );
        // One still to be placed (no ENI yet) holds nothing.
        endpoint.instances[0].eni_id = None;
        world
            .sagemaker_endpoints
            .insert(endpoint.key(), Arc::new(endpoint.clone()));
        assert_eq!(instances_on(&world, "b"), 3);
        endpoint.instances.clear();
        world
            .sagemaker_endpoints
            .insert(endpoint.key(), Arc::new(endpoint));
        // A transform job's instance holds capacity until the job is
        // cleaned up.
        let mut transform = transform_on(Some("b"), "ml.m5.large");
        world
            .transform_jobs
            .insert(transform.key(), Arc::new(transform.clone()));
        assert_eq!(instances_on(&world, "b"), 4);
        transform.phase = crate::endpoints::TransformPhase::CleanedUp;
        world
            .transform_jobs
            .insert(transform.key(), Arc::new(transform));
        assert_eq!(instances_on(&world, "b"), 3);
        // Nothing fits a 96-vCPU type: it still runs, on the freest host.
        assert_eq!(
            place_instances(&world, 1, Demand::of("ml.m5.24xlarge")),
            [None]
        );
        let mut lost = (*world.hosts["b"]).clone();
        lost.state = HostState::Lost;
        world.hosts.insert("b".into(), Arc::new(lost));
        assert_eq!(
            place_instances(&world, 2, demand),
            [None, None],
            "a lost host takes none"
        );
        assert!(on_lost_host(&world, Some("b")));
        assert!(on_lost_host(&world, Some("unregistered")));
        assert!(!on_lost_host(&world, Some("a")) && !on_lost_host(&world, None));
    }

    #[test]
    fn spread_placement_picks_the_available_host_with_the_fewest_enis() {
        let mut world = fixtures::world("h", vec![], [&[], &[], &[]], vec![]);
        assert_eq!(place_new_eni(&world), None, "single host");
        let mut cp = host("a", 1, true);
        world.hosts.insert("a".into(), Arc::new(cp.clone()));
        world
            .hosts
            .insert("b".into(), Arc::new(host("b", 2, false)));
        world
            .hosts
            .insert("c".into(), Arc::new(host("c", 3, false)));
        assert_eq!(
            place_new_eni(&world),
            None,
            "the control plane's host by default"
        );
        cp.eni_placement = Some(EniPlacement::Spread);
        world.hosts.insert("a".into(), Arc::new(cp));
        // The fixture's ENIs are all on a: b and c have none; b comes first.
        assert_eq!(place_new_eni(&world).as_deref(), Some("b"));
        let mut on_b = (**world.network_interfaces.values().next().unwrap()).clone();
        on_b.id = "eni-onb".into();
        on_b.host = Some("b".into());
        world
            .network_interfaces
            .insert(on_b.id.clone(), Arc::new(on_b));
        assert_eq!(place_new_eni(&world).as_deref(), Some("c"));
        let mut lost = (*world.hosts["c"]).clone();
        lost.state = HostState::Lost;
        world.hosts.insert("c".into(), Arc::new(lost));
        assert_eq!(
            place_new_eni(&world).as_deref(),
            Some("b"),
            "a lost host takes none"
        );
    }
}
