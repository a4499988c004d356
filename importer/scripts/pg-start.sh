#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on a loopback port and prints shell exports for it:
#
#   eval "$(importer/scripts/pg-start.sh)"     # sets TEST_POSTGRES_URL and PG_TMP
#   ...
#   importer/scripts/pg-stop.sh "$PG_TMP"      # or: runuser -u postgres -- pg_ctl -D "$PG_TMP/data" stop
#
# Installs Debian's postgresql package when no server binaries are found. PostgreSQL refuses
# to run as root, so the cluster belongs to the `postgres` user. PG_PORT picks the port
# (default: a free one); PG_OPTS replaces the test-speed settings (fsync=off…) with
# other server options, e.g. PG_OPTS="" for the defaults. Progress goes to stderr; only the exports go to stdout.
set -euo pipefail

find_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1
}

BIN="$(find_bin || true)"
if [[ -z "$BIN" || ! -x "$BIN/initdb" ]]; then
  echo "pg-start: installing postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  BIN="$(find_bin)"
fi

PORT="${PG_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
TMP="$(mktemp -d /tmp/pg-importer.XXXXXX)"
chown postgres "$TMP"
chmod 700 "$TMP"

RUN=()
if [[ "$(id -u)" == 0 ]]; then RUN=(runuser -u postgres --); fi

"${RUN[@]}" "$BIN/initdb" -D "$TMP/data" -U postgres -A trust --no-sync -E UTF8 >"$TMP/initdb.log" 2>&1 \
  || { cat "$TMP/initdb.log" >&2; exit 1; }
"${RUN[@]}" "$BIN/pg_ctl" -D "$TMP/data" -l "$TMP/server.log" -w \
  -o "-p $PORT -k $TMP -c listen_addresses=127.0.0.1 -c max_connections=200 ${PG_OPTS--c fsync=off -c synchronous_commit=off -c full_page_writes=off}" \
  start >&2 || { cat "$TMP/server.log" >&2; exit 1; }

echo "pg-start: PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT ($TMP)" >&2
echo "export TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$PORT/postgres"
echo "export PG_TMP=$TMP"
echo "export PG_BIN=$BIN"
