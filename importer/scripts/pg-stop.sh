#!/usr/bin/env bash
# Stops and removes a cluster started by pg-start.sh: pg-stop.sh "$PG_TMP".
set -euo pipefail
TMP="${1:?usage: pg-stop.sh PG_TMP}"
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
RUN=()
if [[ "$(id -u)" == 0 ]]; then RUN=(runuser -u postgres --); fi
"${RUN[@]}" "$BIN/pg_ctl" -D "$TMP/data" -m fast -w stop >&2 || true
rm -rf "$TMP"
