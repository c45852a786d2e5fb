//! Real containers on this host: namespaces, root, privileges, limits,
//! signals, adoption. They need root (they skip with a message otherwise);
//! each works in a temporary directory and kills and cleans up its
//! containers and network namespaces even when an assertion fails.

use cove_runtime::{Bind, Container, ContainerSpec, RootFs, Status};
use cove_sys::Signal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The runner binary: this crate's own, or `cove` itself when
/// COVE_RUNTIME_TEST_RUNNER names it (`target/debug/cove`).
fn runner() -> PathBuf {
    std::env::var_os("COVE_RUNTIME_TEST_RUNNER")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_cove-runtime-runner").into())
}
const MIB: u64 = 1024 * 1024;

fn is_root() -> bool {
    // SAFETY: geteuid has no side effects.
    if cove_sys::is_root() {
        return true;
    }
    eprintln!("skipping: containers need root");
    false
}

/// A temporary directory with a job-like layout (ml/, hosts), and every
/// container launched from it killed and cleaned up on drop.
struct Fixture {
    dir: tempfile::TempDir,
    name: String,
    state_dirs: std::cell::RefCell<Vec<PathBuf>>,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("cove-rt-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("ml/input/config")).unwrap();
        std::fs::write(
            dir.path().join("ml/input/config/marker.txt"),
            "from-the-host\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("hosts"),
            "127.0.0.1\tlocalhost\n10.0.0.5\talgo-1\n",
        )
        .unwrap();
        Fixture {
            dir,
            name: name.to_string(),
            state_dirs: Default::default(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn spec(&self, argv: &[&str]) -> ContainerSpec {
        self.spec_n(0, argv)
    }

    /// The n-th container of this fixture (own id, log and state).
    fn spec_n(&self, n: usize, argv: &[&str]) -> ContainerSpec {
        ContainerSpec {
            id: format!("rt-{}-{}-{n}", self.name, std::process::id()),
            root: RootFs::Host,
            netns: None,
            hostname: "algo-1".into(),
            binds: vec![
                Bind {
                    source: self.path("ml"),
                    target: "/opt/ml".into(),
                    read_only: false,
                },
                Bind {
                    source: self.path("hosts"),
                    target: "/etc/hosts".into(),
                    read_only: true,
                },
            ],
            devices: vec![],
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![
                (
                    "PATH".into(),
                    "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into(),
                ),
                ("HOME".into(), "/tmp".into()),
                ("PYTHONUNBUFFERED".into(), "1".into()),
            ],
            workdir: "/opt/ml".into(),
            cpus: 1.0,
            memory_bytes: 512 * MIB,
            log_path: self.path(&format!("log-{n}")),
            state_dir: self.path(&format!("state-{n}")),
        }
    }

    fn launch(&self, spec: &ContainerSpec) -> anyhow::Result<Container> {
        self.state_dirs.borrow_mut().push(spec.state_dir.clone());
        Container::launch(spec, &runner())
    }

    /// Launches and waits for the end; returns the status and the log.
    fn run(&self, spec: &ContainerSpec) -> (Status, String) {
        let c = self.launch(spec).expect("launch");
        let status = c
            .wait_timeout(Duration::from_secs(30))
            .expect("ends within 30 s");
        (
            status,
            std::fs::read_to_string(&spec.log_path).unwrap_or_default(),
        )
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for dir in self.state_dirs.borrow().iter() {
            if let Ok(Some(c)) = Container::adopt(dir) {
                c.kill();
                if let Err(e) = c.cleanup() {
                    eprintln!("cleanup of {}: {e:#}", c.id());
                }
            }
        }
    }
}

/// Polls `f` until it is true or `timeout` passed.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn log_has(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle))
}

fn line<'a>(log: &'a str, key: &str) -> &'a str {
    log.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the log:\n{log}"))
}

#[test]
fn a_container_gets_the_device_nodes_it_is_given_and_no_others() {
    if !is_root() {
        return;
    }
    // A GPU's nodes are character devices like these two (the machines
    // that run the tests have no GPU).
    let (tun, fuse) = (Path::new("/dev/net/tun"), Path::new("/dev/fuse"));
    if !tun.exists() || !fuse.exists() {
        return;
    }
    let f = Fixture::new("devices");
    let script = "for d in /dev/net/tun /dev/nvidia0 /dev/fuse; do \
                    if [ -c $d ]; then echo \"device=$d\"; fi; done; \
                  exec 3<>/dev/nvidia0 && echo opened=yes";
    let mut spec = f.spec(&["/bin/sh", "-c", script]);
    spec.devices = vec![
        Bind {
            source: tun.into(),
            target: tun.into(),
            read_only: false,
        },
        // A host node shown under another name, as a CDI spec may ask.
        Bind {
            source: fuse.into(),
            target: "/dev/nvidia0".into(),
            read_only: false,
        },
    ];
    let (status, log) = f.run(&spec);
    assert_eq!(status, Status::Exited(0), "{log}");
    let devices: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("device="))
        .collect();
    assert_eq!(devices, ["/dev/net/tun", "/dev/nvidia0"], "{log}");
    assert!(log.contains("opened=yes"), "{log}");
    // Only device nodes under /dev are accepted.
    for (n, (source, refusal)) in [
        ("/etc/hostname", "must be under /dev"),
        ("/dev/shm", "is not a device node"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut bad = f.spec_n(n + 1, &["/bin/true"]);
        bad.devices = vec![Bind {
            source: source.into(),
            target: "/dev/x".into(),
            read_only: false,
        }];
        let err = f.launch(&bad).expect_err("not a device");
        assert!(format!("{err:#}").contains(refusal), "{err:#}");
    }
}

#[test]
fn a_container_sees_its_own_world_only() {
    if !is_root() {
        return;
    }
    let f = Fixture::new("world");
    let host_dir = f.dir.path().display().to_string();
    let script = format!(
        r#"
echo "hostname=$(cat /proc/sys/kernel/hostname)"
echo "pid=$$"
echo "ids=$(id -u):$(id -g)"
echo "marker=$(cat /opt/ml/input/config/marker.txt)"
echo "hosts=$(grep algo-1 /etc/hosts)"
echo "processes=$(ls /proc | grep -c '^[0-9]')"
for p in /root /var/run/netns /run/netns {host_dir} /sys/fs/cgroup/memory /home /work; do
  if [ -e "$p" ]; then echo "visible=$p"; fi
done
echo "toplevel=$(ls / | tr '\n' ' ')"
grep -E '^(Cap|NoNewPrivs)' /proc/self/status | tr -d '\t' | sed 's/:/=/'
echo written > /opt/ml/output.txt && echo "write=ok"
echo "cwd=$(pwd)"
echo "whoami=$(whoami)"
echo "users=$(cut -d: -f1 /etc/passwd | tr '\n' ' ')"
echo "groups=$(cut -d: -f1 /etc/group | tr '\n' ' ')"
echo "etc_hostname=$(cat /etc/hostname)"
echo "etc_netns=$(ls -A /etc/netns 2>/dev/null | wc -l)"
echo "init_cmdline=$(tr '\0' ' ' < /proc/1/cmdline)"
"#
    );
    let spec = f.spec(&["/bin/sh", "-c", &script]);
    let c = f.launch(&spec).expect("launch");
    let status = c.wait_timeout(Duration::from_secs(30)).expect("ends");
    let log = std::fs::read_to_string(&spec.log_path).unwrap_or_default();
    let identity = c.identity().expect("the runner records the identity");
    assert_eq!(status, Status::Exited(0), "{log}");
    assert_eq!(line(&log, "hostname"), "algo-1");
    // Pid 1 is the runtime's init; the job's shell comes right after it.
    assert_eq!(line(&log, "pid"), "2", "{log}");
    // An identity of its own, from the workload range, named in its
    // /etc/passwd; none of the host's users, hostname or namespaces.
    assert!(identity >= cove_runtime::WORKLOAD_ID_BASE, "{identity}");
    assert_eq!(line(&log, "ids"), format!("{identity}:{identity}"));
    assert_eq!(line(&log, "whoami"), cove_runtime::WORKLOAD_USER);
    assert_eq!(line(&log, "users").trim(), "root nobody sagemaker-user");
    assert_eq!(line(&log, "groups").trim(), "root nogroup sagemaker-user");
    assert_eq!(line(&log, "etc_hostname"), "algo-1");
    assert_eq!(line(&log, "etc_netns"), "0");
    assert_eq!(
        line(&log, "init_cmdline").trim(),
        "cove-runtime run-container spec.json"
    );
    assert_eq!(line(&log, "marker"), "from-the-host");
    assert!(line(&log, "hosts").contains("10.0.0.5"));
    let processes: u32 = line(&log, "processes").parse().unwrap();
    assert!(
        processes <= 5,
        "the host's processes are visible: {processes}"
    );
    assert!(!log.contains("visible="), "host paths are visible:\n{log}");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(line(&log, cap), "0000000000000000", "{cap}");
    }
    assert_eq!(line(&log, "NoNewPrivs"), "1");
    assert_eq!(line(&log, "write"), "ok");
    assert_eq!(line(&log, "cwd"), "/opt/ml");
    let written = f.path("ml/output.txt");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "written\n");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&written).unwrap().uid(), identity);
}

#[test]
fn workloads_running_at_once_have_distinct_identities() {
    if !is_root() {
        return;
    }
    let f = Fixture::new("ids");
    let containers: Vec<_> = (0..3)
        .map(|n| f.launch(&f.spec_n(n, &["sleep", "30"])).expect("launch"))
        .collect();
    let mut ids: Vec<u32> = containers.iter().map(|c| c.identity().unwrap()).collect();
    for (c, id) in containers.iter().zip(&ids) {
        for pid in c.pids() {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
            // Init stays root; every other process is the workload's.
            assert!(
                uid.split_whitespace().skip(1).all(|u| u == "0")
                    || uid.split_whitespace().skip(1).all(|u| u == id.to_string()),
                "{uid}"
            );
        }
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
}

#[test]
fn the_environment_is_exactly_the_spec_and_argv0_is_found_on_its_path() {
    if !is_root() {
        return;
    }
    let f = Fixture::new("env");
    let spec = f.spec(&["env"]);
    let (status, log) = f.run(&spec);
    assert_eq!(status, Status::Exited(0), "{log}");
    let mut got: Vec<&str> = log.lines().collect();
    got.sort_unstable();
    let mut want: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    want.sort_unstable();
    assert_eq!(got, want);
}

#[test]
fn the_job_cannot_change_the_network_or_the_host() {
    if !is_root() {
        return;
    }
    let f = Fixture::new("privs");
    let script = r#"
ip link set lo down 2>&1; echo "ip=$?"
python3 -c '
import socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print("raw=0")
except PermissionError as e:
    print("raw=" + e.strerror)'

echo x 2>/dev/null > /etc/hosts; echo "robind=$?"
echo x 2>/dev/null > /usr/cove-test; echo "usr=$?"
echo x 2>/dev/null > /cove-test; echo "rootdir=$?"
mount -t tmpfs none /tmp 2>/dev/null; echo "mount=$?"
hostname evil 2>/dev/null; echo "hostname=$?"
echo 0 2>/dev/null > /proc/sys/net/ipv4/conf/lo/rp_filter; echo "sysctl=$?"
ls /root >/dev/null 2>&1; echo "root=$?"
cat /proc/kcore >/dev/null 2>&1 && echo "kcore=readable" || echo "kcore=masked"
echo "lo=$(cat /sys/class/net/lo/operstate) $(cat /sys/class/net/lo/flags)"
"#;
    let (status, log) = f.run(&f.spec(&["/bin/sh", "-c", script]));
    assert_eq!(status, Status::Exited(0), "{log}");
    assert!(
        log.contains("RTNETLINK answers: Operation not permitted"),
        "{log}"
    );
    for key in [
        "ip", "raw", "robind", "usr", "rootdir", "mount", "hostname", "sysctl", "root",
    ] {
        assert_ne!(
            line(&log, key),
            "0",
            "{key} succeeded inside the container:\n{log}"
        );
    }
    assert_eq!(line(&log, "kcore"), "masked");
    // lo is still up: the failed `ip link set lo down` changed nothing.
    let flags = line(&log, "lo").split(' ').nth(1).unwrap();
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is down:\n{log}");
    assert_eq!(
        std::fs::read_to_string(f.path("hosts"))
            .unwrap()
            .lines()
            .count(),
        2
    );
}

/// The system-call filter: no new namespaces (a user namespace would give
/// the job root over nf_tables and mounts inside it), no io_uring, no
/// keyrings, no netfilter netlink; while threads, fork, ordinary netlink
/// and sockets keep working.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_kernel_surface_beyond_ordinary_programs_is_refused() {
    if !is_root() {
        return;
    }
    let f = Fixture::new("seccomp");
    let script = r#"
import ctypes, errno, os, socket, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
params = ctypes.create_string_buffer(120)
print("unshare_user=" + call(272, 0x10000000))
print("unshare_net=" + call(272, 0x40000000))
print("clone_newuser=" + call(56, 0x10000000 | 17, 0, 0, 0, 0))
print("clone3=" + call(435, 0, 0))
print("io_uring=" + call(425, 8, ctypes.addressof(params)))
print("keyctl=" + call(250, 0, -3, 0))
print("add_key=" + call(248, 0, 0, 0, 0, -3))
print("bpf=" + call(321, 0, 0, 0))
print("userfaultfd=" + call(323, 0))
print("ptrace=" + call(101, 16, 1, 0, 0))
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12); print("nfnetlink=ok")
except OSError as e:
    print("nfnetlink=" + errno.errorcode[e.errno])
socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close(); print("rtnetlink=ok")
socket.socket(socket.AF_INET, socket.SOCK_STREAM).close(); print("tcp=ok")
t = threading.Thread(target=lambda: None); t.start(); t.join(); print("thread=ok")
pid = os.fork()
if pid == 0:
    os._exit(7)
print("fork=%d" % os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"#;
    let (status, log) = f.run(&f.spec(&["/usr/bin/python3", "-c", script]));
    assert_eq!(status, Status::Exited(0), "{log}");
    for key in [
        "unshare_user",
        "unshare_net",
        "clone_newuser",
        "io_uring",
        "keyctl",
        "add_key",
        "bpf",
        "userfaultfd",
        "ptrace",
        "nfnetlink",
    ] {
        assert_eq!(line(&log, key), "EPERM", "{key}:\n{log}");
    }
    // ENOSYS, so the C library falls back to clone, whose flags are checked.
    assert_eq!(line(&log, "clone3"), "ENOSYS", "{log}");
    for key in ["rtnetlink", "tcp", "thread"] {
        assert_eq!(line(&log, key), "ok", "{key}:\n{log}");
    }
    assert_eq!(line(&log, "fork"), "7", "{log}");
}

#[test]
fn exit_codes_signals_and_start_failures_are_reported() {
    if !is_root() {
        return;
    }
    let f = Fixture::new("exits");
    let (s, _) = f.run(&f.spec_n(0, &["/bin/sh", "-c", "exit 3"]));
    assert_eq!(s, Status::Exited(3));
    let (s, _) = f.run(&f.spec_n(1, &["/bin/sh", "-c", "kill -USR1 $$"]));
    assert_eq!(s, Status::Signaled(Signal::SIGUSR1 as i32));

    let spec = f.spec_n(2, &["no-such-program", "--flag"]);
    let err = f
        .launch(&spec)
        .expect_err("a missing program fails the launch");
    assert!(format!("{err:#}").contains("not found"), "{err:#}");
    let c = Container::adopt(&spec.state_dir)
        .unwrap()
        .expect("recorded");
    assert_eq!(c.status(), Status::Exited(127));
    assert!(log_has(
        &spec.log_path,
        "cove-runtime: exec no-such-program"
    ));

    let mut spec = f.spec_n(3, &["/bin/true"]);
    spec.workdir = "/does/not/exist".into();
    let err = f
        .launch(&spec)
        .expect_err("a missing workdir fails the launch");
    assert!(format!("{err:#}").contains("/does/not/exist"), "{err:#}");
}

#[test]
fn terminate_stops_a_python_script_without_a_sigterm_handler() {
    if !is_root() {
        return;
    }
    let f = Fixture::new("term");
    let spec = f.spec(&[
        "/usr/bin/python3",
        "-c",
        "import time\nprint('ready')\nwhile True: time.sleep(1)",
    ]);
    let c = f.launch(&spec).unwrap();
    assert!(eventually(Duration::from_secs(10), || log_has(
        &spec.log_path,
        "ready"
    )));
    assert_eq!(c.status(), Status::Running);
    c.terminate();
    assert_eq!(
        c.wait_timeout(Duration::from_secs(5)),
        Some(Status::Signaled(Signal::SIGTERM as i32))
    );
}

#[test]
fn kill_ends_a_process_tree_that_ignores_sigterm() {
    if !is_root() {
        return;
    }
    let f = Fixture::new("kill");
    let spec = f.spec(&[
        "/bin/sh",
        "-c",
        "trap '' TERM; sleep 1000 & sleep 1000 & (trap '' TERM; sleep 1000) & echo ready; wait",
    ]);
    let c = f.launch(&spec).unwrap();
    assert!(eventually(Duration::from_secs(10), || log_has(
        &spec.log_path,
        "ready"
    )));
    assert!(
        eventually(Duration::from_secs(5), || c.pids().len() >= 5),
        "{:?}",
        c.pids()
    );
    c.terminate();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.status(), Status::Running, "SIGTERM is ignored");
    c.kill();
    assert_eq!(c.status(), Status::Signaled(Signal::SIGKILL as i32));
    assert!(c.pids().is_empty(), "left: {:?}", c.pids());
}

#[test]
fn the_memory_limit_kills_a_greedy_job_and_spares_a_modest_one() {
    if !is_root() {
        return;
    }
    let f = Fixture::new("mem");
    let mut greedy = f.spec_n(
        0,
        &[
            "/usr/bin/python3",
            "-c",
            "x = b'x' * (300 << 20)\nprint('survived')",
        ],
    );
    greedy.memory_bytes = 64 * MIB;
    let c = f.launch(&greedy).unwrap();
    assert!(c.limits_enforced());
    let s = c.wait_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(s, Status::Signaled(Signal::SIGKILL as i32));
    assert!(c.oom_killed());
    assert!(!log_has(&greedy.log_path, "survived"));

    let mut modest = f.spec_n(
        1,
        &[
            "/usr/bin/python3",
            "-c",
            "x = b'x' * (10 << 20)\nprint('fine')",
        ],
    );
    modest.memory_bytes = 64 * MIB;
    let c = f.launch(&modest).unwrap();
    assert_eq!(
        c.wait_timeout(Duration::from_secs(30)),
        Some(Status::Exited(0))
    );
    assert!(!c.oom_killed());
    assert!(log_has(&modest.log_path, "fine"));
}

#[test]
fn half_a_cpu_keeps_a_busy_loop_near_half_a_core() {
    if !is_root() {
        return;
    }
    let f = Fixture::new("cpu");
    let mut spec = f.spec(&["/bin/sh", "-c", "while :; do :; done"]);
    spec.cpus = 0.5;
    let c = f.launch(&spec).unwrap();
    assert!(c.limits_enforced());
    std::thread::sleep(Duration::from_millis(300));
    let (t0, u0) = (Instant::now(), c.cpu_usage_ns().expect("a usage counter"));
    std::thread::sleep(Duration::from_secs(2));
    let (t1, u1) = (Instant::now(), c.cpu_usage_ns().unwrap());
    let cores = (u1 - u0) as f64 / (t1 - t0).as_nanos() as f64;
    eprintln!("busy loop at cpus=0.5 used {cores:.3} cores");
    assert!(cores < 0.75, "{cores} cores");
    assert!(cores > 0.1, "{cores} cores: did it run at all?");
}

#[test]
fn a_fresh_network_namespace_has_only_loopback_and_it_is_up() {
    if !is_root() {
        return;
    }
    let f = Fixture::new("lo");
    let script = r#"
echo "ifaces=$(ls /sys/class/net | tr '\n' ' ')"
echo "flags=$(cat /sys/class/net/lo/flags)"
python3 -c '
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
c = socket.create_connection(s.getsockname()); print("loopback=ok")'
"#;
    let (status, log) = f.run(&f.spec(&["/bin/sh", "-c", script]));
    assert_eq!(status, Status::Exited(0), "{log}");
    assert_eq!(line(&log, "ifaces").trim(), "lo");
    assert_eq!(line(&log, "loopback"), "ok");
}

/// A named network namespace made for one test, deleted on drop.
struct TestNetns(String);

impl TestNetns {
    fn new() -> TestNetns {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("cove-rt-test-{}-{nanos:x}", std::process::id());
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        let ns = TestNetns(name);
        let ok = std::process::Command::new("ip")
            .args([
                "-n", &ns.0, "link", "add", "cove-v0", "type", "veth", "peer", "name", "cove-v1",
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "adding a veth pair");
        ns
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

#[test]
fn a_container_joins_a_named_network_namespace_and_cannot_change_it() {
    if !is_root() {
        return;
    }
    let ns = TestNetns::new();
    let f = Fixture::new("netns");
    let mut spec = f.spec(&[
        "/bin/sh",
        "-c",
        r#"echo "ifaces=$(ls /sys/class/net | tr '\n' ' ')"
ip link set cove-v0 up 2>/dev/null; echo "up=$?"
ip addr add 192.0.2.1/24 dev cove-v0 2>/dev/null; echo "addr=$?""#,
    ]);
    spec.netns = Some(ns.0.clone());
    let (status, log) = f.run(&spec);
    assert_eq!(status, Status::Exited(0), "{log}");
    let mut ifaces: Vec<&str> = line(&log, "ifaces").split_whitespace().collect();
    ifaces.sort_unstable();
    assert_eq!(ifaces, ["cove-v0", "cove-v1", "lo"]);
    assert_ne!(line(&log, "up"), "0");
    assert_ne!(line(&log, "addr"), "0");
    let out = std::process::Command::new("ip")
        .args(["-n", &ns.0, "-o", "addr", "show", "dev", "cove-v0"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("192.0.2.1"));
}

#[test]
fn adopt_finds_a_running_container_and_later_its_exit() {
    if !is_root() {
        return;
    }
    let f = Fixture::new("adopt");
    assert!(Container::adopt(&f.path("nothing-here")).unwrap().is_none());
    let spec = f.spec(&["/bin/sh", "-c", "sleep 1; exit 7"]);
    let c = f.launch(&spec).unwrap();
    drop(c);
    // The runner is nobody's child here: its own session, not the launcher's.
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(spec.state_dir.join("runner.json")).unwrap())
            .unwrap();
    let runner = record["runner"]["pid"].as_i64().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{runner}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_ne!(
        fields[1],
        std::process::id().to_string(),
        "the runner's parent"
    );
    assert_eq!(
        fields[3],
        runner.to_string(),
        "the runner leads its session"
    );

    let c = Container::adopt(&spec.state_dir)
        .unwrap()
        .expect("still there");
    assert_eq!(c.status(), Status::Running);
    assert_eq!(
        c.wait_timeout(Duration::from_secs(10)),
        Some(Status::Exited(7))
    );
    let again = Container::adopt(&spec.state_dir).unwrap().unwrap();
    assert_eq!(again.status(), Status::Exited(7));
}

#[test]
fn cleanup_leaves_nothing_in_the_cgroups() {
    if !is_root() {
        return;
    }
    let f = Fixture::new("cgroups");
    let spec = f.spec(&["/bin/sh", "-c", "sleep 1000"]);
    let c = f.launch(&spec).unwrap();
    assert!(c.limits_enforced());
    let paths = c.cgroup_paths();
    assert!(!paths.is_empty());
    assert!(paths.iter().all(|p| p.exists()));
    assert!(c.cleanup().is_err(), "cleanup refuses a running container");
    c.kill();
    c.cleanup().unwrap();
    for p in &paths {
        assert!(!p.exists(), "{} is left", p.display());
    }
    assert!(!spec.state_dir.join("root").exists());
}

/// Copies `binary` and the shared libraries `ldd` names into `image`.
fn copy_with_libraries(binary: &str, image: &Path) {
    let copy = |from: &Path| {
        let to = image.join(from.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap();
    };
    copy(Path::new(binary));
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .unwrap();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let path = l
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(Path::new);
        if let Some(p) = path {
            copy(p);
        }
    }
}

#[test]
fn an_image_root_replaces_the_host_and_its_symlinks_stay_inside_it() {
    if !is_root() {
        return;
    }
    let f = Fixture::new("image");
    let image = f.path("image");
    let dash = std::fs::canonicalize("/bin/sh").unwrap();
    copy_with_libraries(dash.to_str().unwrap(), &image);
    std::fs::create_dir_all(image.join("bin")).unwrap();
    if !image.join("bin/sh").exists() {
        std::os::unix::fs::symlink(&dash, image.join("bin/sh")).unwrap();
    }
    std::fs::create_dir_all(image.join("etc")).unwrap();
    std::fs::write(image.join("etc/image-marker"), "image\n").unwrap();
    let mut spec = f.spec_n(0, &[
        "/bin/sh",
        "-c",
        "read m < /etc/image-marker; echo marker=$m; [ -e /usr/bin/python3 ] && echo python=visible; echo done=1",
    ]);
    spec.root = RootFs::Image(image.clone());
    let (status, log) = f.run(&spec);
    assert_eq!(status, Status::Exited(0), "{log}");
    assert_eq!(line(&log, "marker"), "image");
    assert!(!log.contains("python=visible"));

    // Symlinks in the image resolve inside the image, as the container sees
    // them: /opt pointing at a host directory does not get /opt/ml bound on
    // the host, and a bind over a symlinked /etc/resolv.conf (as on
    // systemd-resolved hosts) lands where the link leads.
    std::fs::create_dir_all(f.path("elsewhere")).unwrap();
    std::fs::remove_dir_all(image.join("opt")).unwrap();
    std::os::unix::fs::symlink(f.path("elsewhere"), image.join("opt")).unwrap();
    std::os::unix::fs::symlink("../run/resolve/stub.conf", image.join("etc/resolv.conf")).unwrap();
    std::fs::write(f.path("resolv.conf"), "nameserver 10.0.0.2\n").unwrap();
    let mut spec = f.spec_n(
        1,
        &[
            "/bin/sh",
            "-c",
            "read m < /opt/ml/input/config/marker.txt; echo marker=$m; read r < /etc/resolv.conf; echo resolv=$r",
        ],
    );
    spec.root = RootFs::Image(image.clone());
    spec.binds.push(Bind {
        source: f.path("resolv.conf"),
        target: "/etc/resolv.conf".into(),
        read_only: true,
    });
    let (status, log) = f.run(&spec);
    assert_eq!(status, Status::Exited(0), "{log}");
    assert_eq!(line(&log, "marker"), "from-the-host");
    assert_eq!(line(&log, "resolv"), "nameserver 10.0.0.2");
    assert!(std::fs::read_dir(f.path("elsewhere"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn launch_latency() {
    if !is_root() {
        return;
    }
    let f = Fixture::new("latency");
    let mut to_exec = Vec::new();
    let mut to_return = Vec::new();
    for n in 0..20 {
        let spec = f.spec_n(n, &["/usr/bin/date", "+%s%N"]);
        let t0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let start = Instant::now();
        let c = f.launch(&spec).unwrap();
        to_return.push(start.elapsed());
        assert_eq!(
            c.wait_timeout(Duration::from_secs(10)),
            Some(Status::Exited(0))
        );
        let printed: u128 = std::fs::read_to_string(&spec.log_path)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        to_exec.push(Duration::from_nanos(u64::try_from(printed - t0).unwrap()));
        c.cleanup().unwrap();
    }
    to_exec.sort();
    to_return.sort();
    eprintln!(
        "launch → first instruction of the job (date's own clock): median {:?}, min {:?}, max {:?}; launch() returned after median {:?}",
        to_exec[10], to_exec[0], to_exec[19], to_return[10]
    );
    assert!(to_exec[10] < Duration::from_secs(2));
}

#[test]
fn the_log_gets_whole_lines_from_stdout_and_stderr() {
    if !is_root() {
        return;
    }
    let f = Fixture::new("log");
    let script = "import sys, time
sys.stdout.write('a'); sys.stdout.flush()
sys.stderr.write('b\\n'); sys.stderr.flush()
time.sleep(0.2)
sys.stdout.write('c\\n'); sys.stdout.flush()
sys.stdout.write('no newline at the end'); sys.stdout.flush()";
    let (status, log) = f.run(&f.spec(&["/usr/bin/python3", "-c", script]));
    assert_eq!(status, Status::Exited(0), "{log}");
    assert_eq!(log, "b\nac\nno newline at the end\n");
}

#[test]
fn killing_the_runner_takes_the_container_with_it() {
    if !is_root() {
        return;
    }
    let f = Fixture::new("runnerdies");
    let spec = f.spec(&["/bin/sh", "-c", "sleep 1000"]);
    let c = f.launch(&spec).unwrap();
    assert!(eventually(Duration::from_secs(5), || c.pids().len() >= 2));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(spec.state_dir.join("runner.json")).unwrap())
            .unwrap();
    let runner = i32::try_from(record["runner"]["pid"].as_i64().unwrap()).unwrap();
    cove_sys::kill(runner, Signal::SIGKILL).unwrap();
    assert_eq!(
        c.wait_timeout(Duration::from_secs(5)),
        Some(Status::Exited(cove_runtime::VANISHED_EXIT_CODE))
    );
    assert!(
        eventually(Duration::from_secs(5), || c.pids().is_empty()),
        "{:?}",
        c.pids()
    );
}

const HELPER_SPEC: &str = "COVE_RT_HELPER_SPEC";

/// Not a test: the launching "Cove" that
/// `a_container_survives_its_launcher_killed_with_sigkill` kills.
#[test]
#[ignore = "helper process for a_container_survives_its_launcher_killed_with_sigkill"]
fn helper_launch_then_hang() {
    let Ok(spec) = std::env::var(HELPER_SPEC) else {
        return;
    };
    let spec: ContainerSpec = serde_json::from_str(&spec).unwrap();
    let _c = Container::launch(&spec, &runner()).unwrap();
    println!("launched");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_container_survives_its_launcher_killed_with_sigkill() {
    if !is_root() {
        return;
    }
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let f = Fixture::new("survive");
    let spec = f.spec(&[
        "/usr/bin/python3",
        "-c",
        "import time\nwhile True:\n    print('tick'); time.sleep(0.1)",
    ]);
    f.state_dirs.borrow_mut().push(spec.state_dir.clone());
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "helper_launch_then_hang",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_SPEC, serde_json::to_string(&spec).unwrap())
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(helper.stdout.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 && !line.contains("launched") {
        line.clear();
    }
    assert!(line.contains("launched"), "the helper did not launch");
    // Like `kill -9` of Cove and everything in its process group.
    let group = -i32::try_from(helper.id()).unwrap();
    cove_sys::kill(group, Signal::SIGKILL).unwrap();
    helper.wait().unwrap();

    let c = Container::adopt(&spec.state_dir).unwrap().expect("adopted");
    let ticks = || {
        std::fs::read_to_string(&spec.log_path)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let before = ticks();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.status(), Status::Running);
    assert!(ticks() > before, "the job stopped logging");
    c.terminate();
    assert_eq!(
        c.wait_timeout(Duration::from_secs(5)),
        Some(Status::Signaled(Signal::SIGTERM as i32))
    );
}
