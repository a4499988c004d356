#!/usr/bin/env bash
# What the console's trigram indexes (CONSOLE_TRIGRAM_INDEXES) cost the importer's PostgreSQL
# loads: the importer benchmark's data loaded without and with them, alternating in one run.
#
#   bench/console/importer-cost.sh                  # 1M rows, 3 repetitions
#   ROWS=200000 REPS=3 bench/console/importer-cost.sh   # quick look
# Results print and are written to bench/console/IMPORTER-COST.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# The same build as run.sh, so the two share artifacts.
cargo build --release -p admin-console -p importer >&2
export IMPORTER="$CARGO_TARGET_DIR/release/importer"
WORK="${BENCH_DIR:-$(mktemp -d /tmp/console-trgm-bench.XXXXXX)}"
mkdir -p "$WORK"
eval "$(PG_OPTS="" scripts/pg start)"
cleanup() {
  scripts/pg stop || true
  [[ -n "${BENCH_DIR:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT
export PG_URL="$TEST_POSTGRES_URL" WORK
python3 bench/console/importer_cost.py
