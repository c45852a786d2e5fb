#!/usr/bin/env bash
# Builds Cove's framework images from Debian's packages and pushes them into
# Cove's registry under AWS's framework image URIs, so the SageMaker Python
# SDK's estimators and models (SKLearn, XGBoost, PyTorch) find them: nothing
# is pulled from AWS. CPU only.
#
#   scripts/framework-images.sh [--data-dir DIR] [--region REGION] [FRAMEWORK...]
#
# FRAMEWORK: sklearn, xgboost, pytorch (default: sklearn xgboost). One root
# filesystem holds the frameworks asked for (Debian 12's python3-sklearn,
# python3-xgboost, python3-torch, with numpy, scipy, pandas and joblib) and
# Cove's serving runtime as `serve`; it is pushed once and tagged under each
# framework's URIs (its layer is stored once). The root filesystem is cached
# in /var/cache/cove/framework-images, so a second run only pushes.
# Runs as root (debootstrap); needs Debian's package mirror.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR=${COVE_DATA_DIR:-/var/lib/cove}
REGION=${COVE_REGION:-us-east-1}
FRAMEWORKS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --data-dir) DATA_DIR=$2; shift 2 ;;
        --region) REGION=$2; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        sklearn|xgboost|pytorch) FRAMEWORKS+=("$1"); shift ;;
        *) echo "unknown argument: $1 (frameworks: sklearn xgboost pytorch)" >&2; exit 2 ;;
    esac
done
[ ${#FRAMEWORKS[@]} -gt 0 ] || FRAMEWORKS=(sklearn xgboost)
mapfile -t FRAMEWORKS < <(printf '%s\n' "${FRAMEWORKS[@]}" | sort -u)

step() { echo "== $* ($(date -u +%H:%M:%S))"; }

COVE=${COVE_BIN:-}
if [ -z "$COVE" ]; then
    for c in target/release/cove target/debug/cove "$(command -v cove || true)"; do
        if [ -n "$c" ] && [ -x "$c" ]; then COVE=$c; break; fi
    done
fi
[ -n "$COVE" ] || { echo "no cove binary: build it (cargo build --release) or set COVE_BIN" >&2; exit 1; }

# AWS's image URIs for the region, as the SageMaker Python SDK computes them
# when it is installed; else the us-east-1 ones it would compute.
uris() {  # uris FRAMEWORK
    local py
    for py in .venv/bin/python python3; do
        if "$py" -c 'import sagemaker' 2>/dev/null; then
            "$py" - "$1" "$REGION" <<'EOF' && return 0
import sys
from sagemaker import image_uris
framework, region = sys.argv[1], sys.argv[2]
wanted = {
    "sklearn": [("sklearn", v, None) for v in ("1.2-1", "1.0-1", "0.23-1")],
    "xgboost": [("xgboost", v, None) for v in ("1.7-1", "1.5-1", "1.3-1")],
    "pytorch": [("pytorch", v, scope) for v in ("1.13", "2.0", "2.1") for scope in ("training", "inference")],
}[framework]
for name, version, scope in wanted:
    kw = {"image_scope": scope, "instance_type": "ml.m5.large", "py_version": "py310" if version != "1.13" else "py39"} if scope else {}
    print(image_uris.retrieve(name, region, version=version, **kw))
EOF
        fi
    done
    [ "$REGION" = us-east-1 ] || { echo "computing image URIs for $REGION needs the SageMaker Python SDK (pip install sagemaker)" >&2; return 1; }
    case "$1" in
        sklearn) printf '683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:%s-cpu-py3\n' 1.2-1 1.0-1 0.23-1 ;;
        xgboost) printf '683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:%s\n' 1.7-1 1.5-1 1.3-1 ;;
        pytorch) printf '763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-%s\n' \
            training:1.13-cpu-py39 inference:1.13-cpu-py39 training:2.0-cpu-py310 inference:2.0-cpu-py310 ;;
    esac
}

PACKAGES=python3,python3-pip,python3-numpy,python3-scipy,python3-pandas,python3-joblib,ca-certificates
for f in "${FRAMEWORKS[@]}"; do
    case "$f" in
        sklearn) PACKAGES+=,python3-sklearn ;;
        xgboost) PACKAGES+=,python3-xgboost ;;
        # OpenMPI, mpi4py and OpenSSH for the `mpi` distribution, as AWS's
        # PyTorch images have them: mpirun on the first host starts the
        # ranks on the others through their sshd.
        pytorch) PACKAGES+=,python3-torch,openmpi-bin,python3-mpi4py,openssh-server,openssh-client ;;
    esac
done

CACHE=/var/cache/cove/framework-images
# The frameworks and the packages they bring: a root filesystem cached by
# an older version of this script (other packages) is built again.
NAME=$(IFS=-; echo "${FRAMEWORKS[*]}")
KEY=$NAME-$(printf '%s' "$PACKAGES" | sha256sum | cut -c1-12)
ROOT=$CACHE/$KEY/rootfs
if [ ! -f "$CACHE/$KEY/done" ]; then
    for old in "$CACHE/$NAME" "$CACHE/$NAME"-????????????; do
        [ "$old" = "$CACHE/$KEY" ] || rm -rf "$old"
    done
    if ! command -v debootstrap >/dev/null; then
        step "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
    fi
    step "building the root filesystem for ${FRAMEWORKS[*]} from Debian 12's packages (a few minutes)"
    rm -rf "$CACHE/$KEY"
    mkdir -p "$CACHE/$KEY"
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$CACHE/$KEY/staging" \
        http://deb.debian.org/debian | grep -E '^I: (Retrieving|Validating|Extracting|Installing|Configuring|Base system)' \
        | awk '{ n++; if (n % 40 == 1 || /Base system/) print "   " $0; fflush() }'
    # A smaller image: no package caches or documentation.
    rm -rf "$CACHE/$KEY/staging"/var/cache/apt/archives/*.deb "$CACHE/$KEY/staging"/usr/share/doc \
        "$CACHE/$KEY/staging"/usr/share/man "$CACHE/$KEY/staging"/var/lib/apt/lists/*
    mv "$CACHE/$KEY/staging" "$ROOT"
    touch "$CACHE/$KEY/done"
fi

step "adding Cove's serving runtime"
# install -C leaves a file that did not change as it was, so the image (and
# its digest) stays the same when nothing changed and a second run stores
# nothing new.
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cat > "$TMP/serve" <<'EOF'
#!/bin/sh
# The SageMaker inference toolkit's part, played by Cove's serving runtime.
exec /usr/bin/python3 /usr/local/lib/cove/serving.py "$@"
EOF
cat > "$TMP/train" <<'EOF'
#!/bin/sh
# A job without a script: XGBoost's built-in algorithm when the image has
# xgboost and the job gives its required num_round hyperparameter.
if /usr/bin/python3 -c 'import json, sys; hps = json.load(open("/opt/ml/input/config/hyperparameters.json")); sys.exit("num_round" not in hps)' 2>/dev/null \
    && /usr/bin/python3 -c 'import xgboost' 2>/dev/null; then
    exec /usr/bin/python3 /usr/local/lib/cove/xgboost_algorithm.py train
fi
echo "This framework image runs your training script: give the job the sagemaker_program and sagemaker_submit_directory hyperparameters (the SageMaker Python SDK's estimators do), or, for XGBoost's built-in algorithm, num_round and a train channel." >&2
exit 2
EOF
# The key pair every host of an `mpi` job uses to let mpirun in through
# ssh, made once per image as AWS's images carry one. Readable by anyone in
# the image: each job's user copies it to a 0600 file of its own.
if [ -x "$ROOT/usr/bin/ssh-keygen" ] && [ ! -f "$ROOT/etc/cove/mpi/id_ed25519" ]; then
    install -d "$ROOT/etc/cove/mpi"
    chroot "$ROOT" /usr/bin/ssh-keygen -q -t ed25519 -N '' -C cove-mpi -f /etc/cove/mpi/id_ed25519
    chmod 0644 "$ROOT/etc/cove/mpi/id_ed25519"
fi
install -d "$ROOT/usr/local/lib/cove"
install -C -m 0644 crates/cove-jobs/guest/serving.py "$ROOT/usr/local/lib/cove/serving.py"
install -C -m 0644 crates/cove-jobs/guest/xgboost_algorithm.py "$ROOT/usr/local/lib/cove/xgboost_algorithm.py"
install -C -m 0755 "$TMP/serve" "$ROOT/usr/local/bin/serve"
install -C -m 0755 "$TMP/train" "$ROOT/usr/local/bin/train"

ALL=()
for f in "${FRAMEWORKS[@]}"; do
    # The SDK prints notes of its own on stdout; keep the URIs.
    mapfile -t got < <(SAGEMAKER_SUPPRESS_V2_WARNING=1 uris "$f" | grep -E '^[0-9]{12}\.dkr\.ecr\.')
    ALL+=("${got[@]}")
done
step "pushing into Cove's registry ($DATA_DIR) under ${#ALL[@]} image URIs"
also=()
for u in "${ALL[@]:1}"; do also+=(--also "$u"); done
"$COVE" image-import --data-dir "$DATA_DIR" "${ALL[0]}" "$ROOT" "${also[@]}"
step "done"
