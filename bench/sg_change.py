#!/usr/bin/env python3
"""Security-group change → enforcement latency, on real packets (run as root, from the repository).

What it measures: the time from an AuthorizeSecurityGroupIngress /
RevokeSecurityGroupIngress call returning to the moment the data plane's
nftables rules make that change true for a NEW TCP connection, in a VPC with
few other rules and in one with many (`--other-rules`, default 10 and 10,000).

Per case (binary × other-rules count) it starts its own `cove serve` on a
private data directory (common.cove_server; it is stopped and `cove teardown`
run whatever happens) and, through boto3 only, builds:

- a VPC 10.0.0.0/16 with subnets 10.0.1.0/24 (server) and 10.0.2.0/24
  (client), default network ACL (allow all);
- a server group with no ingress and a client group (default egress all); a
  server ENI in subnet 1 and a client ENI in subnet 2;
- the "other rules": ceil(N/50) extra groups of up to 50 TCP ingress rules
  each (ports 20000+i from 198.51.100.x/32 or 203.0.113.x/32, never matching
  the probe), each group's rules in ONE authorize call, attached to "filler"
  ENIs in subnet 1, up to 5 groups per ENI (AWS's limits, which Cove enforces);
- then it waits until `/_cove/health` says applied_generation >= generation.

Inside the server ENI (`cove exec --eni`) a tiny accept loop listens on
0.0.0.0:8080. Inside the client ENI one long-lived prober (so process
start-up is never measured) takes commands on stdin:

- `until_open`: opens a new non-blocking connection to SERVER_IP:8080 every
  `--probe-interval-ms` (default 1), each given `--probe-timeout-ms` (default 5;
  a SYN the router drops gets no answer); after it has seen one attempt fail
  (so the port is known closed) it says "probing", and then prints the
  time.monotonic() at which the first connection succeeded.
- `until_closed`: the same the other way round: after one success it says
  "probing", then prints the time.monotonic() at which the first attempt that
  failed was STARTED (its SYN was sent then and dropped).

An answer is given once the attempts started in the next two timeouts agree
with it; an attempt that disagrees (the state flapped back) discards it and
counts as a "flap" in the per-run table.

Each attempt is a new connection (new source port, closed with RST), so
conntrack's established state never hides a revoke. CLOCK_MONOTONIC is the
same clock for every process on the host (checked at start-up with a
round-trip). Resolution is about the probe interval.

One trial: the driver writes the command, waits for "probing", calls
authorize (revoke), takes t0 = time.monotonic() as the call returns and reads
the prober's answer: latency = t_open - t0 (t_closed - t0). A negative value
(the rule was enforced before the HTTP answer arrived) counts as 0 and is
counted in the "early" column. Before each trial the data plane is let settle
(applied_generation >= generation). One unmeasured warm-up pair runs first.
A trial is one authorize and one revoke; `--trials` of them per case.

Several binaries can be compared side by side: repeat --cove (and --label).
Every case runs once per binary per run; the binaries' order alternates from
run to run to spread noise. The final table holds, per (binary, other rules),
the median over `--runs` runs of each percentile, and the ratio of the p99
with the most other rules to the p99 with the fewest, per binary.

Usage:
  .venv/bin/python bench/sg_change.py --cove ./target/release/cove [--label new] \\
      [--other-rules 10,10000] [--trials 30] [--runs 3]
  .venv/bin/python bench/sg_change.py --cove /tmp/cove-old/target/release/cove --label before \\
      --cove ./target/release/cove --label after
"""
import argparse
import json
import math
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback

import botocore.config

from common import ROOT, clients, cove_server, pct, settle

PORT = 8080

SERVER = r"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", %d))
s.listen(4096)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.close()
""" % PORT

PROBER = r"""
import json, select, socket, struct, sys, time
HOST, PORT = sys.argv[1], int(sys.argv[2])
TIMEOUT, INTERVAL, LIMIT = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
LINGER0 = struct.pack("ii", 1, 0)

def say(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()

def probe(want_open):
    # Overlapping attempts: a new connection every INTERVAL, each failing after TIMEOUT.
    poller = select.poll()
    pending = {}  # fd -> (socket, start)
    attempts, armed, began = 0, False, time.monotonic()
    cand, flaps = None, 0  # (start, result time) of the first attempt in the wanted state
    next_launch = began
    try:
        while True:
            now = time.monotonic()
            if now - began > LIMIT:
                say(event="timeout", attempts=attempts)
                return
            if now >= next_launch:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
                start = time.monotonic()
                s.connect_ex((HOST, PORT))
                pending[s.fileno()] = (s, start)
                poller.register(s.fileno(), select.POLLOUT)
                attempts += 1
                next_launch = start + INTERVAL
            earliest = min((st for _, st in pending.values()), default=next_launch) + TIMEOUT
            wait = max(0.0, min(next_launch, earliest) - time.monotonic())
            results = []  # (start, ok, when)
            for fd, _ in poller.poll(wait * 1000):
                s, start = pending.pop(fd)
                poller.unregister(fd)
                ok = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                results.append((start, ok, time.monotonic()))
                s.close()
            now = time.monotonic()
            for fd, (s, start) in list(pending.items()):
                if now - start >= TIMEOUT:
                    del pending[fd]
                    poller.unregister(fd)
                    s.close()
                    results.append((start, False, now))
            for start, ok, when in sorted(results):
                if not armed:
                    if ok == want_open:  # the state we wait for is already there
                        say(event="already", attempts=attempts)
                        return
                    armed = True
                    say(event="probing")
                elif ok == want_open:
                    if cand is None:
                        cand = (start, when)
                elif cand is not None and start > cand[0]:
                    cand, flaps = None, flaps + 1  # an attempt after it disagreed: not yet for good
            # Confirmed once the attempts of the next 2 timeouts agree with it.
            if cand is not None and now >= cand[0] + 3 * TIMEOUT:
                say(event="open" if want_open else "closed", t=cand[1] if want_open else cand[0],
                    attempts=attempts, flaps=flaps)
                return
    finally:
        for s, _ in pending.values():
            s.close()

def check():
    # One plain attempt: is the port open now?
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
    s.settimeout(TIMEOUT * 10)
    try:
        s.connect((HOST, PORT))
        return True
    except OSError:
        return False
    finally:
        s.close()

say(event="ready")
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "until_open":
        probe(True)
    elif cmd == "until_closed":
        probe(False)
    elif cmd == "check":
        say(event="check", open=check())
    elif cmd == "now":
        say(event="now", t=time.monotonic())
    elif cmd == "quit":
        break
"""



class Proc:
    """A `cove exec` subprocess with a line reader on its stdout."""

    def __init__(self, argv):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, bufsize=1, start_new_session=True)
        self.lines = queue.Queue()
        self.err = []
        threading.Thread(target=self._pump, args=(self.p.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.p.stderr, self.err.append), daemon=True).start()

    @staticmethod
    def _pump(stream, sink):
        for line in stream:
            sink(line.rstrip("\n"))
        sink(None)

    def read(self, timeout):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer in {timeout} s; stderr: {self.err[-5:]}")
        if line is None:
            raise RuntimeError(f"exited ({self.p.wait()}); stderr: {' | '.join(e for e in self.err if e)}")
        return line

    def event(self, timeout):
        return json.loads(self.read(timeout))

    def send(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()

    def kill(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.p.wait()
        for s in (self.p.stdin, self.p.stdout, self.p.stderr):
            try:
                s.close()
            except OSError:
                pass


def start_in_eni(cove_bin, data, eni, argv, ready, procs, deadline_s=20):
    """Runs argv in the ENI's namespace, retrying `cove exec` until it works
    and the program prints its `ready` line."""
    deadline = time.monotonic() + deadline_s
    while True:
        proc = Proc([cove_bin, "exec", "--data-dir", data, "--eni", eni, "--"] + argv)
        procs.append(proc)
        try:
            line = proc.read(max(1.0, deadline - time.monotonic()))
            if ready in line:
                return proc
            raise RuntimeError(f"unexpected first line {line!r}")
        except (RuntimeError, TimeoutError) as e:
            proc.kill()
            procs.remove(proc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"cove exec --eni {eni} never came up: {e}")
            time.sleep(0.1)




def fill(ec2, vpc, subnet, n):
    """N ingress rules that never match the probe: groups of 50 (one authorize
    call each), at most 5 groups per filler ENI."""
    groups = []
    for g in range(math.ceil(n / 50)):
        count = min(50, n - 50 * g)
        sg = ec2.create_security_group(GroupName=f"filler-{g}", Description="other rules", VpcId=vpc)["GroupId"]
        net = "198.51.100" if g % 2 == 0 else "203.0.113"
        perms = [{"IpProtocol": "tcp", "FromPort": 20000 + i, "ToPort": 20000 + i,
                  "IpRanges": [{"CidrIp": f"{net}.{(g // 2 + i) % 254 + 1}/32"}]} for i in range(count)]
        ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=perms)
        groups.append(sg)
    for i in range(0, len(groups), 5):
        ec2.create_network_interface(SubnetId=subnet, Groups=groups[i:i + 5], Description="filler")
    return len(groups), math.ceil(len(groups) / 5)


def run_case(args, cove_bin, other_rules):
    cfg = botocore.config.Config(retries={"max_attempts": 1}, max_pool_connections=10)
    with cove_server(cove_bin, "cove-bench-sg-") as (endpoint, data, _):
        procs = []
        try:
            result = measure(args, cove_bin, endpoint, data, clients(endpoint, cfg)("ec2"), other_rules, procs)
        except Exception as e:
            raise RuntimeError(f"{e} (server log: {data}/cove.log)") from e
        finally:
            for p in procs:
                p.kill()
    shutil.rmtree(data, ignore_errors=True)  # after teardown; kept when the case failed
    return result


def measure(args, cove_bin, endpoint, data, ec2, other_rules, procs):  # noqa: C901
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    sub_server = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    sub_client = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24")["Subnet"]["SubnetId"]
    server_sg = ec2.create_security_group(GroupName="server", Description="server", VpcId=vpc)["GroupId"]
    client_sg = ec2.create_security_group(GroupName="client", Description="client", VpcId=vpc)["GroupId"]
    server = ec2.create_network_interface(SubnetId=sub_server, Groups=[server_sg])["NetworkInterface"]
    client = ec2.create_network_interface(SubnetId=sub_client, Groups=[client_sg])["NetworkInterface"]
    server_eni, server_ip = server["NetworkInterfaceId"], server["PrivateIpAddress"]
    client_eni = client["NetworkInterfaceId"]
    t = time.monotonic()
    groups, enis = fill(ec2, vpc, sub_server, other_rules)
    settle(endpoint)
    setup_s = time.monotonic() - t

    start_in_eni(cove_bin, data, server_eni, ["python3", "-c", SERVER], "listening", procs)
    prober = start_in_eni(cove_bin, data, client_eni,
                          ["python3", "-u", "-c", PROBER, server_ip, str(PORT), str(args.probe_timeout_ms / 1000),
                           str(args.probe_interval_ms / 1000), str(args.limit_s)], "ready", procs)
    # Same clock on both sides: the prober's monotonic time lies within our round trip.
    a = time.monotonic()
    prober.send("now")
    their = prober.event(5)["t"]
    b = time.monotonic()
    assert a <= their <= b, f"prober's clock is not ours: {a} {their} {b}"
    prober.send("check")
    assert prober.event(5)["open"] is False, "port 8080 is open before any rule allows it"

    perm = [{"IpProtocol": "tcp", "FromPort": PORT, "ToPort": PORT, "UserIdGroupPairs": [{"GroupId": client_sg}]}]

    def change(authorize):
        settle(endpoint)
        prober.send("until_open" if authorize else "until_closed")
        ev = prober.event(10)
        if ev["event"] != "probing":
            raise RuntimeError(f"{'closed' if authorize else 'open'} expected before the change, prober: {ev}")
        call = ec2.authorize_security_group_ingress if authorize else ec2.revoke_security_group_ingress
        before = time.monotonic()
        call(GroupId=server_sg, IpPermissions=perm)
        t0 = time.monotonic()
        ev = prober.event(args.limit_s + 10)
        if ev["event"] not in ("open", "closed"):
            raise RuntimeError(f"{'authorize' if authorize else 'revoke'} never took effect: {ev}")
        flaps.append(ev.get("flaps", 0))
        return (ev["t"] - t0) * 1000, (t0 - before) * 1000

    flaps = []
    change(True), change(False)  # warm-up
    flaps.clear()
    auth, revoke, api = [], [], []
    for _ in range(args.trials):
        ms, call_ms = change(True)
        auth.append(ms), api.append(call_ms)
        ms, call_ms = change(False)
        revoke.append(ms), api.append(call_ms)
    prober.send("quit")
    early = sum(1 for x in auth + revoke if x < 0)
    auth, revoke = [max(0.0, x) for x in auth], [max(0.0, x) for x in revoke]
    return {
        "auth": {"p50": pct(auth, 50), "p99": pct(auth, 99), "max": max(auth)},
        "revoke": {"p50": pct(revoke, 50), "p99": pct(revoke, 99), "max": max(revoke)},
        "early": early, "flaps": sum(flaps), "api_p50": pct(api, 50), "groups": groups, "enis": enis, "setup_s": setup_s,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cove", action="append", help="cove binary (repeat to compare binaries)")
    ap.add_argument("--label", action="append", help="a name per --cove, in the same order")
    ap.add_argument("--other-rules", default="10,10000", help="comma-separated counts of other rules in the VPC")
    ap.add_argument("--trials", type=int, default=30, help="authorize+revoke pairs per case")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--probe-interval-ms", type=float, default=1.0)
    ap.add_argument("--probe-timeout-ms", type=float, default=5.0)
    ap.add_argument("--limit-s", type=float, default=30.0, help="give up on a change not enforced by then")
    args = ap.parse_args()
    bins = args.cove or [os.path.join(ROOT, "target/release/cove")]
    labels = args.label or []
    if len(labels) not in (0, len(bins)) or (not labels and len(bins) > 1):
        ap.error("give one --label per --cove")
    labels = labels or [os.path.relpath(bins[0])]
    if len(set(labels)) != len(labels):
        ap.error("labels must differ")
    counts = [int(x) for x in args.other_rules.split(",")]
    if os.geteuid() != 0:
        ap.error("run as root: the data plane needs network namespaces and nftables")

    results = {}  # (label, n) -> [per-run result]
    failures = []
    print("## Per run\n")
    print(f"trials per case: {args.trials} authorize + {args.trials} revoke; probe every {args.probe_interval_ms} ms, "
          f"timeout {args.probe_timeout_ms} ms; times in ms; 'early' = enforced before the API call returned (counted as 0); 'flaps' = the state went back after first changing\n")
    print("| run | binary | other rules | groups/ENIs | setup s | API call p50 | authorize→accepted p50 | p99 | max "
          "| revoke→refused p50 | p99 | max | early | flaps |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for run in range(args.runs):
        order = list(zip(labels, bins))
        if run % 2:
            order.reverse()
        for label, cove_bin in order:
            for n in counts:
                try:
                    r = run_case(args, cove_bin, n)
                except Exception as e:  # noqa: BLE001 — record it, keep the other cases
                    traceback.print_exc()
                    failures.append((run + 1, label, n, repr(e)))
                    print(f"| {run + 1} | {label} | {n} | failed: {e!r} |", flush=True)
                    continue
                results.setdefault((label, n), []).append(r)
                a, v = r["auth"], r["revoke"]
                print(f"| {run + 1} | {label} | {n} | {r['groups']}/{r['enis']} | {r['setup_s']:.1f} "
                      f"| {r['api_p50']:.1f} | {a['p50']:.1f} | {a['p99']:.1f} | {a['max']:.1f} "
                      f"| {v['p50']:.1f} | {v['p99']:.1f} | {v['max']:.1f} | {r['early']} | {r['flaps']} |", flush=True)

    def med(rs, kind, p):
        return statistics.median(r[kind][p] for r in rs)

    print(f"\n## Security-group change → enforced on a new TCP connection, ms (median over {args.runs} runs of each "
          f"percentile, {args.trials} trials per run)\n")
    print("| binary | other rules | authorize→accepted p50 | p99 | revoke→refused p50 | p99 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label in labels:
        for n in counts:
            rs = results.get((label, n))
            if not rs:
                print(f"| {label} | {n} | failed | | | |")
                continue
            print(f"| {label} | {n} | {med(rs, 'auth', 'p50'):.1f} | {med(rs, 'auth', 'p99'):.1f} "
                  f"| {med(rs, 'revoke', 'p50'):.1f} | {med(rs, 'revoke', 'p99'):.1f} |")
    if len(counts) > 1:
        few, many = min(counts), max(counts)
        print(f"\np99 with {many} other rules / p99 with {few}:\n")
        for label in labels:
            lo, hi = results.get((label, few)), results.get((label, many))
            if not lo or not hi:
                continue
            ratios = []
            for kind, name in (("auth", "authorize"), ("revoke", "revoke")):
                a, b = med(lo, kind, "p99"), med(hi, kind, "p99")
                ratios.append(f"{name} {b / a:.1f}x" if a > 0 else f"{name} n/a ({b:.1f} ms vs 0)")
            print(f"- {label}: {', '.join(ratios)}")
    if failures:
        print("\nFailed cases:")
        for f in failures:
            print(f"- run {f[0]}, {f[1]}, {f[2]} other rules: {f[3]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
