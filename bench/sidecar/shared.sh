#!/usr/bin/env bash
# Shared-token benchmark (issue 15): token requests to the auth server per
# refresh cycle with 1, 3 and 6 sidecar replicas x 50 tenants, with and
# without the shared store (anchor: one replica alone), and the adoption
# latency p50/p99. Loopback only; about 2.5 minutes. Method: shared.py.
#
#   bench/sidecar/shared.sh
#   TENANTS=50 LIFETIME=4 WINDOW=20 bench/sidecar/shared.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-target}
command -v redis-server >/dev/null || { echo "redis-server missing: run scripts/setup" >&2; exit 1; }
cargo build --release -p sidecar --quiet
exec python3 bench/sidecar/shared.py "$TARGET/release/sidecar"
