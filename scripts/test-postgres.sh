#!/usr/bin/env bash
# A disposable PostgreSQL server for Cove's tests: its own cluster (never the
# machine's), on loopback, trusting local connections, started if it is not
# running, on COVE_TEST_PG_PORT (default 54329). Prints the URL the tests
# take as COVE_TEST_POSTGRES.
#   bash scripts/test-postgres.sh          start (or find) it
#   bash scripts/test-postgres.sh stop     stop it
#   bash scripts/test-postgres.sh remove   stop it and delete its cluster
set -euo pipefail
PORT=${COVE_TEST_PG_PORT:-54329}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
fi
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "PostgreSQL's server is not installed (Debian: apt-get install postgresql)" >&2
    exit 1
fi
if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root: the cluster belongs to `postgres`.
    dir=/var/tmp/cove-test-postgres-$PORT
    as() { runuser -u postgres -- "$@"; }
    mkdir -p "$dir"
    chown postgres: "$dir"
else
    dir=${XDG_CACHE_HOME:-$HOME/.cache}/cove/test-postgres-$PORT
    as() { "$@"; }
    mkdir -p "$dir"
fi
chmod 700 "$dir"
data=$dir/data
if [ "${1:-}" = stop ] || [ "${1:-}" = remove ]; then
    [ ! -f "$data/postmaster.pid" ] || as "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    [ "$1" = stop ] || rm -rf "$dir"
    exit 0
fi
if [ ! -f "$data/PG_VERSION" ]; then
    as "$bin/initdb" -D "$data" -A trust -U postgres --no-sync >/dev/null
fi
if ! as "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    # synchronous_commit off: a commit does not wait for its WAL flush, the
    # guarantee Cove's SQLite store gives (WAL, synchronous=NORMAL), so the
    # two are compared on equal terms.
    as "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $dir -c synchronous_commit=off -c max_connections=200" >/dev/null
fi
echo "postgres://postgres@127.0.0.1:$PORT/postgres"
