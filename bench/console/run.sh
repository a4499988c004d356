#!/usr/bin/env bash
# Console benchmark: seeds a throwaway PostgreSQL (default settings) with 1M rows in one type's
# table (orders) and 10k import runs (plus 200k rejects), starts the release console against it,
# and times every page by the console's own Server-Timing (server time), with /livez as the
# HTTP floor in the same run; then reads the console's RSS. The contains pages are first timed
# with CONSOLE_TRIGRAM_INDEXES=false (no trigram index yet), then every page with the default
# (after the console's background build) and with CONSOLE_COLUMN_INDEXES=true. Results print
# and are written to bench/console/RESULTS.md. What the trigram indexes cost the importer:
# bench/console/importer-cost.sh.
#
#   bench/console/run.sh                    # 1M rows, 10k runs, 7 repetitions per page
#   ROWS=200000 RUNS=2000 REPS=3 bench/console/run.sh   # quick look
#
# Needs psql/PostgreSQL and python3 (scripts/setup installs them).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release -p admin-console -p importer >&2
export CONSOLE="$CARGO_TARGET_DIR/release/console" IMPORTER="$CARGO_TARGET_DIR/release/importer"

WORK=$(mktemp -d /tmp/console-bench.XXXXXX)
eval "$(PG_OPTS="" scripts/pg start)"
cleanup() {
  scripts/pg stop || true
  rm -rf "$WORK"
}
trap cleanup EXIT
export PG_URL="$TEST_POSTGRES_URL" WORK
python3 bench/console/bench.py
