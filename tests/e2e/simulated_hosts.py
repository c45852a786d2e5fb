"""Several Cove hosts simulated on one machine (docs/scale-out.md), for the
tests and the benchmarks: a bridge in a network namespace of its own plays
the underlay switch (198.51.100.0/24, a documentation range); the control
plane's `cove serve` runs in the caller's namespace with the first address;
each `cove agent` runs in a namespace of its own that plays a machine, and
reaches the store (a PostgreSQL server on this namespace's loopback) through
a relay, as a real agent reaches it over its network. Nothing is routed to
the machine's real uplink. Needs root."""

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import itertools
import urllib.parse

CONTROL_PLANE = "cp"
_simulations = itertools.count()
# The /28s of 198.51.100.0/24 held by this process's simulations that are up.
_blocks_in_use = set()
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _blocks_on_links():
    """The /28s of 198.51.100.0/24 that links of this namespace already
    have an address in: what a killed test run may have left."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL).stdout
    return {int(word.split("/")[0].rsplit(".", 1)[1]) // 16
            for word in out.split() if word.startswith("198.51.100.")}


def ip(*args, netns=None):
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, capture_output=True)


def _setns(path):
    with open(path) as f:
        if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")


def relay_store_into(netns, store_url):
    """Makes the PostgreSQL server at `store_url` (on this namespace's
    loopback) reachable at the same address inside `netns`: a listening
    socket made in `netns`, each connection relayed from here. Returns a
    function that stops it."""
    target = urllib.parse.urlparse(store_url)
    address = (target.hostname, target.port)
    listener = None

    def make_listener():
        nonlocal listener
        me = f"/proc/self/task/{threading.get_native_id()}/ns/net"
        with open(me) as back:
            _setns(f"/run/netns/{netns}")
            try:
                listener = socket.create_server(address)
            finally:
                if _libc.setns(back.fileno(), CLONE_NEWNET) != 0:
                    os._exit(70)  # a thread stuck in another namespace must not go on

    maker = threading.Thread(target=make_listener)
    maker.start()
    maker.join()
    if listener is None:
        raise RuntimeError(f"could not listen in {netns}")

    def pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    stopped = threading.Event()

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if stopped.is_set():
                conn.close()
                return
            try:
                upstream = socket.create_connection(address)
            except OSError:  # the server is down: so is this connection
                conn.close()
                continue
            # Small messages (PostgreSQL's notifications) must not wait for
            # Nagle's algorithm on either leg.
            for s in (conn, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    server = threading.Thread(target=serve, daemon=True)
    server.start()

    def stop():
        # Closing alone leaves `serve` blocked in accept(2) on the number the
        # next listener gets: it would relay that listener's connections
        # to this relay's server. Shutting down wakes it first.
        stopped.set()
        try:
            listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        server.join(timeout=5)
        listener.close()

    return stop


class Agent:
    """One `cove agent` in its host's namespace."""

    def __init__(self, binary, host, netns, address, store, env=None):
        self.binary, self.host, self.netns, self.address, self.store = binary, host, netns, address, store
        self.env = env or {}
        self.data_dir = tempfile.mkdtemp(prefix=f"cove-agent-{host}-")
        self.log_path = os.path.join(self.data_dir, "agent.log")
        self.proc = None

    def start(self):
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            # nsenter, not `ip netns exec`: that one gives the process a
            # mount namespace of its own, where the namespaces the agent
            # names (bind mounts under /run/netns) would stay invisible.
            ["nsenter", f"--net=/run/netns/{self.netns}", self.binary, "agent", "--store", self.store,
             "--data-dir", self.data_dir, "--underlay-address", self.address, "--host-id", self.host],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env={**os.environ, **self.env})
        return self

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self):
        return open(self.log_path).read()

    def instance(self):
        """The instance tag of the agent's kernel objects, from its log."""
        for line in self.log().splitlines():
            if "agent registered" in line and "instance=" in line:
                return line.split("instance=")[1].split()[0]
        return None

    def teardown(self):
        subprocess.run([self.binary, "teardown", "--data-dir", self.data_dir], stdout=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL)
        shutil.rmtree(self.data_dir, ignore_errors=True)


class Simulation:
    """The underlay and the agents' hosts. `hosts` maps host id to
    (namespace, underlay address); the control plane's namespace is None
    (the caller's)."""

    def __init__(self, binary, store_url, agents=("b", "c"), agent_env=None):
        self.binary, self.store_url, self.agent_env = binary, store_url, agent_env
        # Several simulations may run at once in one process (a test's own
        # server beside the session's): each has its names and a /28 of
        # its own, so no two put the same prefix on this namespace's links.
        number = next(_simulations)
        free = [b for b in range(16) if b not in _blocks_in_use | _blocks_on_links()]
        if not free:
            raise RuntimeError("16 simulations are up at once: no /28 of 198.51.100.0/24 is free")
        # A block no simulation that is up holds: two on one prefix would
        # put the same addresses on two links of this namespace.
        self.block = free[0]
        _blocks_in_use.add(self.block)
        tag = f"{os.getpid() % 10000}s{number}"
        base = 16 * self.block
        self.tag, self.underlay_netns, self.prefix = tag, f"covul-{tag}", 28
        self.hosts = {CONTROL_PLANE: (None, f"198.51.100.{base + 1}")}
        for i, host in enumerate(agents):
            self.hosts[host] = (f"covhost-{tag}{host}", f"198.51.100.{base + i + 2}")
        self.relays, self.agents = [], {}

    def serve_env(self):
        """What `cove serve` is given to be the control plane's host."""
        return {"COVE_UNDERLAY_ADDRESS": self.hosts[CONTROL_PLANE][1], "COVE_HOST_ID": CONTROL_PLANE}

    def up(self):
        """The bridge, one veth per host into it (MTU 1550: VXLAN's 50 bytes
        on top of the ENIs' 1500), and the agents' way to the store."""
        self.remove_namespaces()
        ip("netns", "add", self.underlay_netns)
        ip("link", "add", "br0", "mtu", "1550", "type", "bridge", netns=self.underlay_netns)
        ip("link", "set", "br0", "up", netns=self.underlay_netns)
        for host, (netns, address) in self.hosts.items():
            if netns:
                ip("netns", "add", netns)
                ip("link", "set", "lo", "up", netns=netns)
            inner, port = f"cvul{self.tag}{host}", f"p{host}"
            ip("link", "add", inner, "mtu", "1550", "type", "veth", "peer", "name", port, "mtu", "1550",
               "netns", self.underlay_netns, netns=netns)
            ip("link", "set", port, "master", "br0", "up", netns=self.underlay_netns)
            ip("addr", "add", f"{address}/{self.prefix}", "dev", inner, netns=netns)
            ip("link", "set", inner, "up", netns=netns)
            if netns:
                self.relays.append(relay_store_into(netns, self.store_url))
        return self

    def start_agents(self):
        for host, (netns, address) in self.hosts.items():
            if netns:
                self.agents[host] = Agent(self.binary, host, netns, address, self.store_url, self.agent_env).start()
        return self.agents

    def remove_namespaces(self):
        # The veths go with the namespaces that hold their ends.
        for netns in [self.underlay_netns, *(n for n, _ in self.hosts.values() if n)]:
            subprocess.run(["ip", "netns", "del", netns], stdin=subprocess.DEVNULL, capture_output=True)

    def down(self):
        """Stops the agents, removes their kernel objects, the relays and the underlay."""
        for agent in self.agents.values():
            agent.stop(signal.SIGKILL)
            agent.teardown()
        for stop in self.relays:
            stop()
        self.relays, self.agents = [], {}
        self.remove_namespaces()
        _blocks_in_use.discard(self.block)
