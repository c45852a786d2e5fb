//! Three Cove hosts simulated on one machine, as tests/e2e/simulated_hosts.py
//! makes them (docs/scale-out.md): a bridge in a namespace of its own is the
//! underlay (198.51.100.0/24, a documentation range), the control plane's
//! `cove serve` runs in this namespace on a PostgreSQL database made for it,
//! and each `cove agent` runs in a namespace of its own that plays a
//! machine, reaching the database through a relay. Everything is removed
//! on drop. Each simulation takes a /28 of the underlay range that no link
//! of this namespace has an address in, so neither a simulation running
//! beside it nor what a killed run left behind shares its prefix.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The control plane's host id.
pub const CONTROL_PLANE: &str = "cp";

static SIMULATIONS: AtomicUsize = AtomicUsize::new(0);

/// The /28s of 198.51.100.0/24 (numbered 0 to 15) that simulations of this
/// process hold.
static BLOCKS_IN_USE: Mutex<BTreeSet<u8>> = Mutex::new(BTreeSet::new());

/// The /28s of 198.51.100.0/24 that a link of this namespace has an
/// address in: simulations up in other processes, or left by a killed run.
fn blocks_on_links() -> BTreeSet<u8> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .stdin(Stdio::null())
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|word| word.split('/').next()?.parse::<Ipv4Addr>().ok())
        .filter(|a| a.octets()[..3] == [198, 51, 100])
        .map(|a| a.octets()[3] / 16)
        .collect()
}

/// Takes a /28 of the underlay range that nothing here uses.
fn take_block() -> u8 {
    let on_links = blocks_on_links();
    let mut held = BLOCKS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    let block = (0..16u8)
        .find(|b| !held.contains(b) && !on_links.contains(b))
        .expect("no /28 of 198.51.100.0/24 is free: 16 simulations are up at once");
    held.insert(block);
    block
}

fn ip(netns: Option<&str>, args: &[&str]) {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn psql(server: &str, sql: &str) {
    let out = Command::new("psql")
        .args(["-q", server, "-c", sql])
        .stdin(Stdio::null())
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Relays connections made to `addr` inside `netns` to `addr` here, until
/// the process ends (the listener's thread is detached).
fn relay_into(netns: &str, addr: SocketAddr) {
    let listener = cove_net::netns::run_in(netns, move || TcpListener::bind(addr))
        .expect("enter the host's namespace")
        .expect("listen for the store inside the host's namespace");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let Ok(upstream) = TcpStream::connect(addr) else {
                continue;
            };
            // PostgreSQL's notifications are small: no Nagle delay on either leg.
            let _ = conn.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            for (mut from, mut to) in [
                (
                    conn.try_clone().expect("clone"),
                    upstream.try_clone().expect("clone"),
                ),
                (upstream, conn),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
}

struct Agent {
    id: String,
    child: Child,
    data_dir: tempfile::TempDir,
}

/// The underlay, the agents' hosts and the control plane's database.
pub struct Hosts {
    /// Host id → (its namespace, `None` for the control plane's; its underlay address).
    pub hosts: Vec<(String, Option<String>, Ipv4Addr)>,
    underlay_netns: String,
    /// Which /28 of the underlay range the hosts' addresses are in.
    block: u8,
    server: String,
    database: String,
    agents: Vec<Agent>,
}

impl Hosts {
    /// The underlay and the hosts' namespaces, and a new database on the
    /// PostgreSQL server at `postgres` (its role may create databases).
    pub fn up(postgres: &str) -> Hosts {
        let tag = format!(
            "{}r{}",
            std::process::id() % 100_000,
            SIMULATIONS.fetch_add(1, Ordering::Relaxed)
        );
        let database = format!("cove_hosts_{tag}");
        psql(postgres, &format!("DROP DATABASE IF EXISTS {database}"));
        psql(postgres, &format!("CREATE DATABASE {database}"));
        let block = take_block();
        let address = |k: u8| Ipv4Addr::new(198, 51, 100, 16 * block + k);
        let hosts = vec![
            (CONTROL_PLANE.to_string(), None, address(1)),
            ("b".into(), Some(format!("covhost-{tag}b")), address(2)),
            ("c".into(), Some(format!("covhost-{tag}c")), address(3)),
        ];
        let sim = Hosts {
            hosts,
            underlay_netns: format!("covul-{tag}"),
            block,
            server: postgres.to_string(),
            database,
            agents: Vec::new(),
        };
        let ul = Some(sim.underlay_netns.as_str());
        ip(None, &["netns", "add", &sim.underlay_netns]);
        ip(ul, &["link", "add", "br0", "mtu", "1550", "type", "bridge"]);
        ip(ul, &["link", "set", "br0", "up"]);
        let store: SocketAddr = {
            let rest = postgres.split('@').next_back().unwrap_or(postgres);
            let hostport = rest.split('/').next().unwrap_or(rest);
            hostport.parse().expect("the PostgreSQL URL names IP:port")
        };
        for (id, netns, address) in &sim.hosts {
            let ns = netns.as_deref();
            if let Some(ns) = ns {
                ip(None, &["netns", "add", ns]);
                ip(Some(ns), &["link", "set", "lo", "up"]);
            }
            let (inner, port) = (format!("cvul{tag}{id}"), format!("p{id}"));
            ip(
                ns,
                &[
                    "link",
                    "add",
                    &inner,
                    "mtu",
                    "1550",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &port,
                    "mtu",
                    "1550",
                    "netns",
                    &sim.underlay_netns,
                ],
            );
            ip(ul, &["link", "set", &port, "master", "br0", "up"]);
            ip(
                ns,
                &["addr", "add", &format!("{address}/28"), "dev", &inner],
            );
            ip(ns, &["link", "set", &inner, "up"]);
            if let Some(ns) = ns {
                relay_into(ns, store);
            }
        }
        sim
    }

    /// The store's URL.
    pub fn store_url(&self) -> String {
        format!(
            "{}/{}",
            self.server.rsplit_once('/').map_or(&*self.server, |x| x.0),
            self.database
        )
    }

    /// What `cove serve` is given to be the control plane's host.
    pub fn serve_env(&self) -> Vec<(String, String)> {
        vec![
            ("COVE_STORE".into(), self.store_url()),
            ("COVE_UNDERLAY_ADDRESS".into(), self.hosts[0].2.to_string()),
            ("COVE_HOST_ID".into(), CONTROL_PLANE.into()),
        ]
    }

    /// Starts one `cove agent` per agent host and waits until each has
    /// registered.
    pub fn start_agents(&mut self, binary: &std::path::Path) {
        for (id, netns, address) in self.hosts.iter().skip(1) {
            let netns = netns.as_deref().expect("an agent's namespace");
            let data_dir = tempfile::Builder::new()
                .prefix("cove-agent-")
                .tempdir()
                .expect("agent data dir");
            let log = std::fs::File::create(data_dir.path().join("agent.log")).expect("log");
            // nsenter, not `ip netns exec`, whose private mount namespace
            // would hide the agent's named namespaces from this process.
            let child = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{netns}"))
                .arg(binary)
                .args(["agent", "--store", &self.store_url(), "--host-id", id])
                .args(["--underlay-address", &address.to_string()])
                .arg("--data-dir")
                .arg(data_dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start cove agent");
            self.agents.push(Agent {
                id: id.clone(),
                child,
                data_dir,
            });
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for a in &self.agents {
            while !self.log_of(&a.id).contains("agent registered") {
                assert!(
                    Instant::now() < deadline,
                    "agent {} did not register:\n{}",
                    a.id,
                    self.log_of(&a.id)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// An agent's log.
    pub fn log_of(&self, host: &str) -> String {
        self.agents
            .iter()
            .find(|a| a.id == host)
            .and_then(|a| std::fs::read_to_string(a.data_dir.path().join("agent.log")).ok())
            .unwrap_or_default()
    }

    /// The data directory of an agent's host.
    pub fn agent_dir(&self, host: &str) -> Option<PathBuf> {
        self.agents
            .iter()
            .find(|a| a.id == host)
            .map(|a| a.data_dir.path().to_path_buf())
    }

    /// The ids of the hosts, the control plane's first.
    pub fn ids(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.0.clone()).collect()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for a in &mut self.agents {
            let _ = a.child.kill();
            let _ = a.child.wait();
            let _ = Command::new(crate::cove_binary())
                .arg("teardown")
                .arg("--data-dir")
                .arg(a.data_dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status();
        }
        let namespaces = std::iter::once(self.underlay_netns.clone())
            .chain(self.hosts.iter().filter_map(|h| h.1.clone()));
        for ns in namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        BLOCKS_IN_USE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.block);
        let _ = Command::new("psql")
            .args([
                "-q",
                &self.server,
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
