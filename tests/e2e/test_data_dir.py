"""The data directory is Cove's alone: it holds credentials, STS session
secrets and every object's bytes."""

import os
import stat
import subprocess
import tempfile

import pytest

from conftest import BINARY

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")

NOBODY = 65534


def test_other_users_cannot_enter_the_data_directory_or_read_its_databases(cove_server):
    data = cove_server.data_dir
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    for db in ("cove.db", "logs.db", os.path.join("s3", "s3.db"), os.path.join("ecr", "ecr.db")):
        assert stat.S_IMODE(os.stat(os.path.join(data, db)).st_mode) == 0o600, db
    listing = subprocess.run(["ls", data], user=NOBODY, capture_output=True, text=True)
    assert listing.returncode != 0 and "Permission denied" in listing.stderr, listing
    reading = subprocess.run(["cat", os.path.join(data, "cove.db")], user=NOBODY, capture_output=True, text=True)
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
