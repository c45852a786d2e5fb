#!/usr/bin/env bash
# Runs every Cove test: formatting and lints, the Rust unit and integration
# tests, then the end-to-end suites that drive a real `cove serve` with boto3
# and the AWS CLI. Installs the Python clients into .venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${COVE_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
# JupyterLab for the Studio test that runs a real kernel: a venv of the
# host's Python under /usr/local, which Studio apps see read-only (as root).
JUPYTERLAB=/usr/local/lib/cove-jupyterlab
if [ "$(id -u)" = 0 ] && [ -x /usr/bin/python3 ] && [ ! -x "$JUPYTERLAB/bin/jupyter-lab" ]; then
    /usr/bin/python3 -m venv "$JUPYTERLAB"
    "$JUPYTERLAB/bin/pip" install --quiet --disable-pip-version-check -r tests/jupyterlab-requirements.txt
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --quiet
cargo test --workspace --quiet
PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/python" -m pytest tests/e2e -q -p no:cacheprovider "$@"
