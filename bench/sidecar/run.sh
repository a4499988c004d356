#!/usr/bin/env bash
# Sidecar benchmark: idle RSS with 50 tenants, start -> ready latency, and
# release binary size. Not a timed test; prints numbers for RESULTS.md.
#
#   bench/sidecar/run.sh            # 50 tenants, 5 start->ready runs
#   TENANTS=50 RUNS=5 IDLE_SECS=5 bench/sidecar/run.sh
#
# Definitions:
#   idle RSS        VmRSS from /proc/PID/status once /readyz is 200 (all 50
#                   tenants hold tokens) and IDLE_SECS more seconds passed.
#   start -> ready  ms from the LAST token response written by the fake token
#                   server to /readyz answering 200, polled every 1 ms
#                   (both timestamps CLOCK_MONOTONIC on this host).
#   binary size     bytes of target/release/sidecar (the release profile
#                   strips symbols).
set -euo pipefail
cd "$(dirname "$0")/../.."
TENANTS=${TENANTS:-50}
RUNS=${RUNS:-5}
IDLE_SECS=${IDLE_SECS:-5}
HERE=bench/sidecar
TARGET=${CARGO_TARGET_DIR:-target}

cargo build --release -p sidecar --quiet
BIN=$TARGET/release/sidecar
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

: > "$WORK/responses"
python3 "$HERE/fake_token_server.py" "$WORK/responses" > "$WORK/fake.port" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/fake.port" ] && break; sleep 0.05; done
FAKE_PORT=$(cat "$WORK/fake.port")
echo bench-secret > "$WORK/secret"

write_config() {
    local tokens=$1 probes=$2
    {
        printf 'listen:\n  tokens: 127.0.0.1:%s\n  probes: 127.0.0.1:%s\ntenants:\n' "$tokens" "$probes"
        for i in $(seq -w 1 "$TENANTS"); do
            printf '  t%s:\n    token_url: http://127.0.0.1:%s/token\n    client_id: client-%s\n' "$i" "$FAKE_PORT" "$i"
            printf '    auth: {method: client_secret_post, secret: {file: %s}}\n' "$WORK/secret"
        done
    } > "$WORK/sidecar.yaml"
}

# Start the sidecar and wait for readiness; sets SIDECAR_PID and READY_NS.
start_ready() {
    local tokens probes
    tokens=$(free_port); probes=$(free_port)
    write_config "$tokens" "$probes"
    : > "$WORK/responses"
    python3 "$HERE/ready_probe.py" "127.0.0.1:$probes" > "$WORK/ready" &
    local poller=$!
    sleep 0.2 # the poller is running before the sidecar starts
    RUST_LOG=warn "$BIN" --config "$WORK/sidecar.yaml" 2> "$WORK/sidecar.log" &
    SIDECAR_PID=$!
    PIDS+=("$SIDECAR_PID")
    wait "$poller"
    READY_NS=$(cat "$WORK/ready")
    local n
    n=$(wc -l < "$WORK/responses")
    [ "$n" -ge "$TENANTS" ] || { echo "only $n token responses" >&2; exit 1; }
}

echo "sidecar benchmark: $TENANTS tenants, $(nproc) cores, $(uname -r)"
LAT=()
for run in $(seq "$RUNS"); do
    start_ready
    LAST_NS=$(sort -n "$WORK/responses" | tail -1)
    LAT+=("$(python3 -c "print(f'{($READY_NS - $LAST_NS)/1e6:.2f}')")")
    if [ "$run" -eq "$RUNS" ]; then
        sleep "$IDLE_SECS"
        RSS_KB=$(awk '/^VmRSS/ {print $2}' "/proc/$SIDECAR_PID/status")
        HWM_KB=$(awk '/^VmHWM/ {print $2}' "/proc/$SIDECAR_PID/status")
        THREADS=$(awk '/^Threads/ {print $2}' "/proc/$SIDECAR_PID/status")
    fi
    kill -TERM "$SIDECAR_PID"; wait "$SIDECAR_PID" || true
done
SIZE=$(stat -c %s "$BIN")

echo "start -> ready (ms after the last token response), $RUNS runs: ${LAT[*]}"
python3 - "${LAT[@]}" <<'PY'
import statistics, sys
xs = sorted(float(x) for x in sys.argv[1:])
print(f"start -> ready: median {statistics.median(xs):.2f} ms, max {xs[-1]:.2f} ms (target <= 100 ms)")
PY
echo "idle RSS: ${RSS_KB} kB = $(python3 -c "print(f'{$RSS_KB/1024:.1f}')") MiB (peak ${HWM_KB} kB, ${THREADS} threads; target <= 10 MB)"
echo "release binary: $SIZE bytes = $(python3 -c "print(f'{$SIZE/1048576:.2f}')") MiB ($(file -b "$BIN" | cut -d, -f1-2,6-))"
