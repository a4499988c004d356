#!/usr/bin/env bash
# Importer benchmark: generates the data, builds the importer in release, starts a throwaway
# PostgreSQL (default settings) and measures, side by side in one run, `psql \copy`, the
# importer's three cases, row-by-row INSERTs, peak RSS, and SQLite against `sqlite3 .import`.
# Results print as ratios and are written to bench/importer/RESULTS.md.
#
#   bench/importer/run.sh                       # 1M rows, 3 repetitions
#   BIG_ROWS=10000000 bench/importer/run.sh     # also peak RSS at 10M rows
#   ROWS=200000 REPS=1 bench/importer/run.sh    # quick look
#
# Needs psql/PostgreSQL, sqlite3, python3 and GNU time (Debian: postgresql sqlite3 time).
# BENCH_DIR keeps generated data between runs (default: a temp dir, removed at the end).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

missing=()
command -v sqlite3 >/dev/null || missing+=(sqlite3)
[[ -x /usr/bin/time ]] || missing+=(time)
command -v psql >/dev/null || missing+=(postgresql-client)
if ((${#missing[@]})); then
  echo "run.sh: installing ${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release -p importer >&2
export IMPORTER="$CARGO_TARGET_DIR/release/importer"

WORK="${BENCH_DIR:-$(mktemp -d /tmp/importer-bench.XXXXXX)}"
mkdir -p "$WORK"
eval "$(PG_OPTS="" scripts/pg start)"
cleanup() {
  scripts/pg stop || true
  [[ -n "${BENCH_DIR:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT
chmod 755 "$WORK"  # psql's \copy reads as root, but keep it readable

export PG_URL="$TEST_POSTGRES_URL" WORK
python3 bench/importer/bench.py
