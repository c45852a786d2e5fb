#!/usr/bin/env bash
# Runs every Cove test: formatting and lints, the Rust unit and integration
# tests, then the end-to-end suites that drive a real `cove serve` with boto3
# and the AWS CLI. Installs the Python clients into .venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

# Python packages come through a wheelhouse kept on the machine: once it
# holds a requirements file's wheels, installing needs no network, so a
# registry that stalls cannot fail a later run. Downloads are retried.
if [ "$(id -u)" = 0 ]; then
    WHEELHOUSE=${COVE_WHEELHOUSE:-/var/cache/cove/wheels}
else
    WHEELHOUSE=${COVE_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/cove/wheels}
fi
mkdir -p "$WHEELHOUSE"
pip_install() {  # pip_install PIP REQUIREMENTS
    local pip=$1 requirements=$2 attempt
    if "$pip" install --quiet --disable-pip-version-check --no-index --find-links "$WHEELHOUSE" \
        -r "$requirements" >/dev/null 2>&1; then
        return 0
    fi
    for attempt in 1 2 3; do
        "$pip" download --quiet --disable-pip-version-check --dest "$WHEELHOUSE" -r "$requirements" && break
        [ "$attempt" = 3 ] && return 1
        echo "pip download failed (attempt $attempt); retrying in 10 s" >&2
        sleep 10
    done
    "$pip" install --quiet --disable-pip-version-check --no-index --find-links "$WHEELHOUSE" -r "$requirements"
}

step() { echo "== $* ($(date -u +%H:%M:%S))"; }

step "Python clients"
VENV=${COVE_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
pip_install "$VENV/bin/pip" tests/requirements.txt
# The SageMaker SDK v3 beside v2: its own venv, named to the e2e tests.
SDK3_VENV=${COVE_SDK3_VENV:-.venv-sdk3}
if [ ! -x "$SDK3_VENV/bin/python" ]; then
    python3 -m venv "$SDK3_VENV"
fi
pip_install "$SDK3_VENV/bin/pip" tests/sdk3-requirements.txt
export COVE_SDK3_PYTHON="$PWD/$SDK3_VENV/bin/python"
# JupyterLab for the Studio test that runs a real kernel: a venv of the
# host's Python under /usr/local, which Studio apps see read-only (as root).
JUPYTERLAB=/usr/local/lib/cove-jupyterlab
if [ "$(id -u)" = 0 ] && [ -x /usr/bin/python3 ] && [ ! -x "$JUPYTERLAB/bin/jupyter-lab" ]; then
    /usr/bin/python3 -m venv "$JUPYTERLAB"
    pip_install "$JUPYTERLAB/bin/pip" tests/jupyterlab-requirements.txt
fi

step "the CDK CLI"
# npm's aws-cdk and aws-cdk-lib at the versions tests/cdk/package-lock.json
# pins, for the CDK test (tests/e2e/test_cdk.py). Retried: a registry
# that stalls once must not fail the run.
if [ ! -x tests/cdk/node_modules/.bin/cdk ] || [ tests/cdk/package-lock.json -nt tests/cdk/node_modules ]; then
    for attempt in 1 2 3; do
        (cd tests/cdk && npm ci --no-audit --no-fund --loglevel=error) && break
        [ "$attempt" = 3 ] && exit 1
        echo "npm ci failed (attempt $attempt); retrying in 10 s" >&2
        sleep 10
    done
    touch tests/cdk/node_modules
fi

step "PostgreSQL for the shared store's tests"
# A private server of the tests' own (scripts/test-postgres.sh), unless
# one is given.
if [ -z "${COVE_TEST_POSTGRES:-}" ]; then
    COVE_TEST_POSTGRES=$(bash scripts/test-postgres.sh)
fi
export COVE_TEST_POSTGRES

step "formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "build"
cargo build --workspace --quiet
# The binary without the Neo compiler (tract) must still build.
cargo check -p cove --no-default-features --quiet
step "Rust tests"
cargo test --workspace --quiet
step "guest programs"
# What Cove puts inside containers runs on the host's Python there.
/usr/bin/python3 -m unittest discover -s crates/cove-jobs/guest/tests -q
step "end-to-end tests"
PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/python" -m pytest tests/e2e -q -p no:cacheprovider --durations=20 "$@"
if [ "$(id -u)" = 0 ] && [ $# = 0 ]; then
    step "end-to-end tests of the data plane, jobs, endpoints and Studio over three simulated hosts"
    # The same tests, every server the control plane of three hosts
    # (tests/e2e/simulated_hosts.py) with its ENIs, the instances of its
    # jobs and endpoints and its Studio apps spread over them.
    COVE_E2E_HOSTS=3 PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
        tests/e2e/test_dataplane.py tests/e2e/test_security_groups.py tests/e2e/test_network_acls.py \
        tests/e2e/test_routes_gateways.py tests/e2e/test_flow_log_records.py tests/e2e/test_vpc_dns_endpoints.py \
        tests/e2e/test_peering.py tests/e2e/test_training_jobs.py tests/e2e/test_hosting.py \
        tests/e2e/test_studio.py
    step "crash test"
    # Jobs killed with SIGKILL at every phase complete, log once, leave nothing.
    "$VENV/bin/python" tests/crash/crash_test.py --jobs-per-phase 5
fi
