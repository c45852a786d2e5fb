"""The data directory is Cove's alone: it holds credentials, STS session
secrets and every object's bytes."""

import os
import socket
import stat
import subprocess
import tempfile

import pytest

from conftest import BINARY, teardown_vpc

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")

NOBODY = 65534


def test_other_users_cannot_enter_the_data_directory_or_read_its_databases(cove_server):
    data = cove_server.data_dir
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    # With the store on PostgreSQL, the data directory holds its URL instead
    # of cove.db, and the URL may carry a password.
    store = "store-url" if cove_server.store else "cove.db"
    for db in (store, "logs.db", os.path.join("s3", "s3.db"), os.path.join("ecr", "ecr.db")):
        assert stat.S_IMODE(os.stat(os.path.join(data, db)).st_mode) == 0o600, db
    listing = subprocess.run(["ls", data], user=NOBODY, capture_output=True, text=True)
    assert listing.returncode != 0 and "Permission denied" in listing.stderr, listing
    reading = subprocess.run(["cat", os.path.join(data, store)], user=NOBODY, capture_output=True, text=True)
    assert reading.returncode != 0 and "Permission denied" in reading.stderr, reading


def test_a_data_directory_open_to_others_is_refused_with_how_to_fix_it():
    with tempfile.TemporaryDirectory(prefix="cove-open-") as d:
        os.chmod(d, 0o755)
        out = subprocess.run([BINARY, "serve", "--data-dir", d, "--listen", "127.0.0.1:0"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode != 0
        assert f"the data directory {d} is open to other users (mode 755)" in out.stderr, out.stderr
        assert f"chmod 700 {d}" in out.stderr
        assert os.listdir(d) == [], "nothing may be written into a refused directory"


def test_a_new_data_directory_is_made_private(tmp_path):
    d = tmp_path / "fresh" / "cove"
    out = subprocess.run([BINARY, "teardown", "--data-dir", str(d)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700


WHO = "import os; s = open('/proc/self/status').read(); print(os.getuid(), [l.split()[1] for l in s.splitlines() if l.startswith('CapEff')][0])"


def test_cove_exec_runs_as_nobody_without_capabilities_unless_privileged(cove_server, ec2):
    import time
    vpc = ec2.create_vpc(CidrBlock="10.79.0.0/16")["Vpc"]["VpcId"]
    try:
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.79.1.0/24")["Subnet"]["SubnetId"]
        eni = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
        deadline = time.time() + 10
        while cove_server.exec(eni, "true").returncode != 0:
            assert time.time() < deadline
            time.sleep(0.1)
        # The default: nobody, no capabilities (the host's own Python, which nobody can run).
        who = cove_server.exec(eni, "/usr/bin/python3", "-c", WHO, privileged=False)
        assert who.stdout.split() == ["65534", "0000000000000000"], who
        # Nothing of Cove's is reachable from it, and it cannot change the ENI's network.
        listing = cove_server.exec(eni, "ls", cove_server.data_dir, privileged=False)
        assert listing.returncode != 0 and "Permission denied" in listing.stderr, listing
        down = cove_server.exec(eni, "ip", "link", "set", "lo", "down", privileged=False)
        assert down.returncode != 0, down
        # The workloads' system-call filter: no user namespace of its own (which
        # would make it root over nf_tables there); --privileged has no filter.
        userns = cove_server.exec(eni, "unshare", "--user", "true", privileged=False)
        assert userns.returncode != 0 and "Operation not permitted" in userns.stderr, userns
        assert cove_server.exec(eni, "unshare", "--user", "true", privileged=True).returncode == 0
        # It still trusts Cove's CA and uses the VPC's resolver, as a job does.
        bundle = cove_server.exec(eni, "head", "-c", "27", "/etc/ssl/certs/ca-certificates.crt", privileged=False)
        assert bundle.stdout == "-----BEGIN CERTIFICATE-----", bundle
        resolver = cove_server.exec(eni, "cat", "/etc/resolv.conf", privileged=False)
        assert "nameserver 10.79.0.2" in resolver.stdout, resolver
        as_uid = subprocess.run([BINARY, "exec", "--data-dir", cove_server.data_dir, "--eni", eni, "--user", "1234:5678",
                                 "--", "id", "-u"], capture_output=True, text=True, timeout=20)
        assert as_uid.stdout.strip() == "1234", as_uid
        root = cove_server.exec(eni, "/usr/bin/python3", "-c", WHO, privileged=True).stdout.split()
        assert root[0] == "0" and root[1] != "0000000000000000", root
    finally:
        teardown_vpc(ec2, vpc)


def test_one_server_per_data_directory(cove_server):
    out = subprocess.run([BINARY, "serve", "--data-dir", cove_server.data_dir, "--listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert f"{cove_server.data_dir} is in use by another Cove process (pid {cove_server.proc.pid}, cove serve)" \
        in out.stderr, out.stderr
    # Tearing the network down under a running server is refused alike.
    out = subprocess.run([BINARY, "teardown", "--data-dir", cove_server.data_dir],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "is in use by another Cove process" in out.stderr, out.stderr
    assert cove_server.alive()


def test_a_server_that_cannot_listen_makes_nothing(tmp_path):
    def namespaces():
        return set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    before = namespaces()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        d = tmp_path / "cove"
        out = subprocess.run([BINARY, "serve", "--data-dir", str(d), "--listen", f"127.0.0.1:{port}"],
                             capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert f"listening on 127.0.0.1:{port}" in out.stderr, out.stderr
    assert namespaces() - before == set()
    assert not (d / "cove.db").exists(), "nothing is opened before the port is held"
