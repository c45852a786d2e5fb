#!/usr/bin/env python3
"""CreateNetworkInterface → usable ENI: how long until `cove exec` runs in it (run as root, from the repository).

What it measures, per binary and run, each on its own fresh `cove serve`
(common.cove_server, private data directory; it is stopped and `cove
teardown` run whatever happens) with one VPC 10.0.0.0/16, one subnet
10.0.0.0/17 (room for thousands of ENIs) and the VPC's default security
group, everything through boto3:

1. Existing ENIs: `--existing` ENIs (default 500) created one call after the
   other; timed from the first call to the moment `/_cove/health` reports
   applied_generation >= generation (the data plane has made them all).
   Reported as seconds and ENIs/s.
2. Baseline: `cove exec --data-dir D --eni E -- true` on an ENI that is
   already usable, median of 10 (one unmeasured warm-up first). This is
   process start-up and namespace entry; it is part of every latency below.
3. One at a time (`--single`, default 30): t0 just before
   create_network_interface; then `cove exec --eni NEW -- true` once (it
   waits on its own, up to 10 s, for an ENI the API has but the data plane
   has not plumbed yet); t1 when it exits with status 0. Latency = t1 - t0.
   The API call's own duration is recorded too. A `cove exec` that exits
   non-zero is a failure (counted: "cove exec right after
   CreateNetworkInterface succeeds N of N") and is retried every 10 ms until
   it works, so the latency is still known.
4. Burst (`--burst`, default 50): that many threads do step 3 at once (they
   start together at a barrier); latency per ENI; p50/p99/max; failures.
5. Scale (only for the LAST binary given, only in the first run, when
   `--scale` > 0, default 1000): ENIs are created one after the other until
   `--scale` ENIs exist in total (timed until the data plane has applied
   them; their namespaces are counted in /run/netns); then the resident
   memory of the `cove serve` process (VmRSS) and the CPU time it spends
   (utime+stime from /proc/PID/stat) during 10 s of idleness. An idle data
   plane should cost about nothing.

Several binaries can be compared side by side: repeat --cove and --label.
The binaries' order alternates from run to run to spread noise. The final
table holds, per binary, the median over `--runs` runs of each figure; the
failure column is the total over all runs (ENIs whose first `cove exec`
failed / ENIs). Nothing is deleted through the API: the server's
teardown removes it all; every `cove exec` started is waited for or killed.

Usage:
  .venv/bin/python bench/eni_create.py --cove ./target/release/cove [--label new] \\
      [--existing 500] [--single 30] [--burst 50] [--runs 3] [--scale 1000]
  .venv/bin/python bench/eni_create.py --cove /tmp/cove-old/target/release/cove --label before \\
      --cove ./target/release/cove --label after
  # quick check while developing:
  .venv/bin/python bench/eni_create.py --cove ./target/debug/cove \\
      --existing 50 --single 5 --burst 10 --runs 1 --scale 0
"""
import argparse
import glob
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback

import botocore.config

from common import ROOT, clients, cove_server, health, pct, settle

EXEC_TIMEOUT_S = 30  # one `cove exec -- true` (it gives up by itself after 10 s + 10 s)
RETRY_LIMIT_S = 60  # give up on an ENI whose `cove exec` has not worked by then
IDLE_S = 10





class Execs:
    """Runs `cove exec ... -- true` and keeps track of every one still
    running, so that none outlives the case."""

    def __init__(self, cove_bin, data):
        self.cove_bin, self.data = cove_bin, data
        self.live = set()
        self.closed = False
        self.lock = threading.Lock()

    def run(self, eni):
        """One `cove exec --eni ENI -- true`: (exit status, stderr)."""
        with self.lock:
            if self.closed:
                raise RuntimeError("the case is over")
            p = subprocess.Popen([self.cove_bin, "exec", "--data-dir", self.data, "--eni", eni, "--", "true"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True, start_new_session=True)
            self.live.add(p)
        try:
            try:
                _, err = p.communicate(timeout=EXEC_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._kill(p)
                return -1, f"no exit in {EXEC_TIMEOUT_S} s"
            return p.returncode, err.strip()
        finally:
            with self.lock:
                self.live.discard(p)

    def until_ok(self, eni):
        """`cove exec -- true` until it exits 0: (time of that exit,
        failures before it, first failure's message)."""
        deadline = time.monotonic() + RETRY_LIMIT_S
        failures, first_err = 0, None
        while True:
            rc, err = self.run(eni)
            if rc == 0:
                return time.monotonic(), failures, first_err
            failures += 1
            if first_err is None:
                first_err = f"exit {rc}: {err.splitlines()[0] if err else ''}"
            if time.monotonic() > deadline:
                raise RuntimeError(f"cove exec --eni {eni} never worked in {RETRY_LIMIT_S} s; first: {first_err}")
            time.sleep(0.01)

    @staticmethod
    def _kill(p):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait()

    def kill_all(self):
        with self.lock:
            self.closed = True
            left = list(self.live)
        for p in left:
            self._kill(p)


def create_eni(ec2, subnet):
    return ec2.create_network_interface(SubnetId=subnet, Description="bench")["NetworkInterface"]["NetworkInterfaceId"]


def create_and_exec(ec2, subnet, execs):
    """Step 3 for one ENI: (latency ms, API call ms, failures, first failure, ENI)."""
    t0 = time.monotonic()
    eni = create_eni(ec2, subnet)
    t_api = time.monotonic()
    t1, failures, first_err = execs.until_ok(eni)
    return (t1 - t0) * 1000, (t_api - t0) * 1000, failures, first_err, eni


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After "pid (comm)": state is fields[0]; utime and stime are stat fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def netns_count(enis):
    """How many of these ENIs have a network namespace on the host."""
    shorts = {e.rsplit("-", 1)[-1][-12:] for e in enis}
    return sum(1 for path in glob.glob("/run/netns/cove-*-eni-*") if path.rsplit("-", 1)[-1] in shorts)


def run_case(args, cove_bin, scale):
    cfg = botocore.config.Config(retries={"max_attempts": 1}, max_pool_connections=max(10, args.burst + 10),
                                 read_timeout=120)
    with cove_server(cove_bin, "cove-bench-eni-") as (endpoint, data, proc):
        execs = Execs(cove_bin, data)
        try:
            result = measure(args, endpoint, proc, clients(endpoint, cfg)("ec2"), execs, scale)
        except Exception as e:
            raise RuntimeError(f"{e} (server log: {data}/cove.log)") from e
        finally:
            execs.kill_all()
    shutil.rmtree(data, ignore_errors=True)  # after teardown; kept when the case failed
    return result


def measure(args, endpoint, proc, ec2, execs, scale):  # noqa: C901
    health(endpoint)  # the server is up
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/17")["Subnet"]["SubnetId"]
    settle(endpoint)
    enis = []

    # 1. Existing ENIs.
    t = time.monotonic()
    for _ in range(args.existing):
        enis.append(create_eni(ec2, subnet))
    api_s = time.monotonic() - t
    settle(endpoint)
    existing_s = time.monotonic() - t

    # 2. Baseline: `cove exec -- true` on a usable ENI.
    if not enis:
        enis.append(create_eni(ec2, subnet))
        settle(endpoint)
    base_eni = enis[0]
    baseline = []
    for i in range(11):
        t = time.monotonic()
        rc, err = execs.run(base_eni)
        if rc != 0:
            raise RuntimeError(f"cove exec on a settled ENI failed ({rc}): {err}")
        if i:  # the first is a warm-up
            baseline.append((time.monotonic() - t) * 1000)

    # 3. One at a time.
    single, single_api, single_fail, single_attempts, errors = [], [], 0, 0, []
    for _ in range(args.single):
        ms, api_ms, failures, first_err, eni = create_and_exec(ec2, subnet, execs)
        single.append(ms), single_api.append(api_ms), enis.append(eni)
        single_fail += failures > 0
        single_attempts += failures
        if first_err:
            errors.append(first_err)

    # 4. Burst.
    settle(endpoint)
    burst, burst_api, burst_fail, burst_attempts, thread_errors = [], [], [0], [0], []
    lock = threading.Lock()
    barrier = threading.Barrier(args.burst) if args.burst else None

    def one():
        try:
            barrier.wait(timeout=60)
            ms, api_ms, failures, first_err, eni = create_and_exec(ec2, subnet, execs)
            with lock:
                burst.append(ms), burst_api.append(api_ms), enis.append(eni)
                burst_fail[0] += failures > 0
                burst_attempts[0] += failures
                if first_err:
                    errors.append(first_err)
        except Exception as e:  # noqa: BLE001 — reported below
            barrier.abort()
            with lock:
                thread_errors.append(repr(e))

    threads = [threading.Thread(target=one, daemon=True) for _ in range(args.burst)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=EXEC_TIMEOUT_S + RETRY_LIMIT_S + 120)
    if any(th.is_alive() for th in threads):
        raise RuntimeError("burst threads did not finish")
    if thread_errors:
        raise RuntimeError(f"{len(thread_errors)} burst threads failed, first: {thread_errors[0]}")

    result = {
        "existing": args.existing, "existing_s": existing_s, "existing_api_s": api_s,
        "baseline": statistics.median(baseline),
        "single": single, "single_api": single_api, "single_fail": single_fail, "single_attempts": single_attempts,
        "burst": burst, "burst_api": burst_api, "burst_fail": burst_fail[0], "burst_attempts": burst_attempts[0],
        "errors": errors,
    }

    # 5. Scale.
    if scale:
        settle(endpoint)
        created = len(enis)
        t = time.monotonic()
        while len(enis) < args.scale:
            enis.append(create_eni(ec2, subnet))
        settle(endpoint)
        scale_s = time.monotonic() - t
        time.sleep(1)  # let whatever follows the last change finish before idling
        rss = proc_rss_mb(proc.pid)
        cpu0 = proc_cpu_s(proc.pid)
        time.sleep(IDLE_S)
        cpu1 = proc_cpu_s(proc.pid)
        result["scale"] = {
            "enis": len(enis), "created": len(enis) - created, "seconds": scale_s,
            "netns": netns_count(enis), "rss_mb": rss, "idle_cpu_ms": (cpu1 - cpu0) * 1000,
            "rss_after_mb": proc_rss_mb(proc.pid),
        }
    return result


def main():  # noqa: C901
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cove", action="append", help="cove binary (repeat to compare binaries)")
    ap.add_argument("--label", action="append", help="a name per --cove, in the same order")
    ap.add_argument("--existing", type=int, default=500, help="ENIs created first (and timed)")
    ap.add_argument("--single", type=int, default=30, help="ENIs created and exec'd in one at a time")
    ap.add_argument("--burst", type=int, default=50, help="ENIs created and exec'd in at once")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scale", type=int, default=1000,
                    help="ENIs in total for the scale step (last binary, first run); 0 skips it")
    args = ap.parse_args()
    bins = args.cove or [os.path.join(ROOT, "target/release/cove")]
    labels = args.label or []
    if len(labels) not in (0, len(bins)) or (not labels and len(bins) > 1):
        ap.error("give one --label per --cove")
    labels = labels or [os.path.relpath(bins[0])]
    if len(set(labels)) != len(labels):
        ap.error("labels must differ")
    if min(args.existing, args.single, args.burst, args.scale) < 0 or args.runs < 1:
        ap.error("counts must be >= 0 and --runs >= 1")
    if os.geteuid() != 0:
        ap.error("run as root: the data plane needs network namespaces and nftables")

    results = {}  # label -> [per-run result]
    failures = []
    scale_result = None
    print("## Per run\n")
    print(f"{args.existing} existing ENIs, then {args.single} one at a time, then a burst of {args.burst}; "
          "latency = CreateNetworkInterface called → `cove exec --eni NEW -- true` exited 0, ms; "
          "'API' = the create call alone; 'fail' = ENIs whose first `cove exec` exited non-zero / ENIs "
          "(failed attempts in all, with retries every 10 ms)\n")
    print("| run | binary | create existing s | ENIs/s | of which API s | exec baseline ms "
          "| one at a time API p50 | p50 | p99 | max | fail | burst API p50 | p50 | p99 | max | fail |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for run in range(args.runs):
        order = list(zip(labels, bins))
        if run % 2:
            order.reverse()
        for label, cove_bin in order:
            scale = run == 0 and args.scale > 0 and label == labels[-1]
            try:
                r = run_case(args, cove_bin, scale)
            except Exception as e:  # noqa: BLE001 — record it, keep the other cases
                traceback.print_exc()
                failures.append((run + 1, label, repr(e)))
                print(f"| {run + 1} | {label} | failed: {e!r} |", flush=True)
                continue
            results.setdefault(label, []).append(r)
            if "scale" in r:
                scale_result = (label, r["scale"])

            def lat(xs):
                return f"{pct(xs, 50):.0f} | {pct(xs, 99):.0f} | {max(xs):.0f}" if xs else "- | - | -"

            def api(xs):
                return f"{pct(xs, 50):.1f}" if xs else "-"
            rate = r["existing"] / r["existing_s"] if r["existing_s"] > 0 else 0
            print(f"| {run + 1} | {label} | {r['existing_s']:.2f} | {rate:.0f} | {r['existing_api_s']:.2f} "
                  f"| {r['baseline']:.1f} | {api(r['single_api'])} | {lat(r['single'])} "
                  f"| {r['single_fail']}/{len(r['single'])} ({r['single_attempts']}) | {api(r['burst_api'])} | {lat(r['burst'])} "
                  f"| {r['burst_fail']}/{len(r['burst'])} ({r['burst_attempts']}) |", flush=True)
            if r["errors"]:
                print(f"|   | {label}: first `cove exec` failure: {r['errors'][0]!r} |", flush=True)

    def med(rs, f):
        vals = [f(r) for r in rs]
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    def fmt(v, digits=0):
        return "-" if v is None else f"{v:.{digits}f}"

    print(f"\n## ENI creation → usable (median over {args.runs} runs; latencies in ms, from the create call "
          "to `cove exec -- true` exiting 0, baseline included)\n")
    print(f"| binary | existing ENIs | create {args.existing}: s (ENIs/s) | exec baseline ms "
          f"| one at a time p50 | p99 | burst of {args.burst} p50 | p99 | exec failures |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for label in labels:
        rs = results.get(label)
        if not rs:
            print(f"| {label} | failed | | | | | | | |")
            continue
        secs = med(rs, lambda r: r["existing_s"])
        rate = med(rs, lambda r: r["existing"] / r["existing_s"] if r["existing_s"] > 0 else None)
        sf, sn = sum(r["single_fail"] for r in rs), sum(len(r["single"]) for r in rs)
        bf, bn = sum(r["burst_fail"] for r in rs), sum(len(r["burst"]) for r in rs)
        print(f"| {label} | {args.existing} | {secs:.2f} ({fmt(rate)}) | {med(rs, lambda r: r['baseline']):.1f} "
              f"| {fmt(med(rs, lambda r: pct(r['single'], 50) if r['single'] else None))} "
              f"| {fmt(med(rs, lambda r: pct(r['single'], 99) if r['single'] else None))} "
              f"| {fmt(med(rs, lambda r: pct(r['burst'], 50) if r['burst'] else None))} "
              f"| {fmt(med(rs, lambda r: pct(r['burst'], 99) if r['burst'] else None))} "
              f"| {sf}/{sn} one at a time, {bf}/{bn} burst |")
    print("\n'exec failures': ENIs whose first `cove exec`, right after CreateNetworkInterface, exited non-zero, "
          "over all runs / ENIs (each was retried until it worked).")
    if args.scale > 0:
        print(f"\n## Scale ({labels[-1]}, run 1)\n")
        if scale_result:
            label, s = scale_result
            print(f"- ENIs: {s['enis']} in total ({s['netns']} of them with a namespace on the host)")
            print(f"- seconds to create the last {s['created']} (until applied): {s['seconds']:.2f} "
                  f"({s['created'] / s['seconds']:.0f} ENIs/s)" if s["seconds"] > 0 else
                  f"- seconds to create the last {s['created']}: {s['seconds']:.2f}")
            print(f"- RSS of cove serve: {s['rss_mb']:.1f} MB ({s['rss_after_mb']:.1f} MB after idling)")
            print(f"- CPU time of cove serve over {IDLE_S} s idle: {s['idle_cpu_ms']:.0f} ms")
        else:
            print("- failed (see above)")
    if failures:
        print("\nFailed cases:")
        for f in failures:
            print(f"- run {f[0]}, {f[1]}: {f[2]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
