#!/usr/bin/env bash
# Sidecar benchmark at 1000 tenants against a fake token server on loopback.
# Not a timed test; prints the numbers recorded in RESULTS.md. Stops by itself
# (every wait is bounded).
#
#   bench/sidecar/run.sh
#   TENANTS=1000 DELAY_MS=20 CHURN_SECS=30 IDLE_SECS=5 bench/sidecar/run.sh
#
# What it measures, each run with a fresh fake server (DELAY_MS of latency
# per token request, like a real auth server) and a fresh release sidecar:
#   1. start-up, bounded (refresh.max_concurrent_fetches: 16, the default):
#      time from spawning the sidecar until /status shows every tenant
#      "valid"; peak token requests in flight as the fake server counted
#      them (must not exceed 16) and as the sidecar's own gauge says; RSS
#      IDLE_SECS later.
#   2. the anchor, in the same run: the same start-up as before the
#      scheduler (max_concurrent_fetches = TENANTS, start_spread 0: every
#      first fetch at once), and a 1-tenant sidecar's RSS.
#      Ratios: bounded / unbounded time, RSS(1000) / RSS(1).
#   3. refresh churn: 10 s tokens (the lifetime floor), so every tenant
#      refreshes every 4-6 s; over CHURN_SECS, sidecar CPU time (utime+stime)
#      per token response, peak in flight, and peak RSS (VmHWM).
#   4. the release binary's size.
set -euo pipefail
cd "$(dirname "$0")/../.."
TENANTS=${TENANTS:-1000}
DELAY_MS=${DELAY_MS:-20}
CHURN_SECS=${CHURN_SECS:-30}
IDLE_SECS=${IDLE_SECS:-5}
BOUND=16
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
mono_ns() { python3 -c 'import time; print(time.clock_gettime_ns(time.CLOCK_MONOTONIC))'; }
status_of() { awk "/^$2/ {print \$2}" "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo bench-secret > "$WORK/secret"

# start_fake EXPIRES_IN: a fresh fake token server; sets FAKE_PID, FAKE_PORT.
start_fake() {
    : > "$WORK/responses"
    : > "$WORK/fake.port"
    python3 "$HERE/fake_token_server.py" "$WORK/responses" "$DELAY_MS" "$1" > "$WORK/fake.port" &
    FAKE_PID=$!
    PIDS+=("$FAKE_PID")
    for _ in $(seq 100); do [ -s "$WORK/fake.port" ] && break; sleep 0.05; done
    FAKE_PORT=$(cat "$WORK/fake.port")
}
stop_fake() { kill "$FAKE_PID" 2>/dev/null || true; wait "$FAKE_PID" 2>/dev/null || true; }
fake_peak() { python3 -c "import json, urllib.request as u; print(json.load(u.urlopen('http://127.0.0.1:$FAKE_PORT/stats'))['peak_in_flight'])"; }

# write_config N CONCURRENCY [SPREAD]: N tenants against the fake.
write_config() {
    {
        printf 'listen:\n  tokens: 127.0.0.1:%s\n  probes: 127.0.0.1:%s\n' "$(free_port)" "$PROBES"
        printf 'refresh:\n  max_concurrent_fetches: %s\n' "$2"
        [ -n "${3:-}" ] && printf '  start_spread: %s\n' "$3"
        printf 'shutdown:\n  idle: 100ms\ntenants:\n'
        for i in $(seq -w 1 "$1"); do
            printf '  t%s:\n    token_url: http://127.0.0.1:%s/token\n    client_id: client-%s\n' "$i" "$FAKE_PORT" "$i"
            printf '    auth: {method: client_secret_post, secret: {file: %s}}\n' "$WORK/secret"
        done
    } > "$WORK/sidecar.yaml"
}

# start_all_valid N CONCURRENCY [SPREAD]: start a sidecar and wait until
# every tenant is valid; sets SIDECAR_PID and ALL_MS (spawn -> all valid).
start_all_valid() {
    PROBES=$(free_port)
    write_config "$1" "$2" "${3:-}"
    local t0
    t0=$(mono_ns)
    RUST_LOG=warn "$BIN" --config "$WORK/sidecar.yaml" 2> "$WORK/sidecar.log" &
    SIDECAR_PID=$!
    PIDS+=("$SIDECAR_PID")
    local t1
    t1=$(python3 "$HERE/all_valid.py" "127.0.0.1:$PROBES")
    ALL_MS=$(python3 -c "print(f'{($t1 - $t0) / 1e6:.0f}')")
}
stop_sidecar() { kill -TERM "$SIDECAR_PID"; wait "$SIDECAR_PID" || true; }
sidecar_peak() { curl -s "http://127.0.0.1:$PROBES/metrics" | awk '/^authproxy_token_requests_in_flight_peak / {print $2}'; }

echo "sidecar benchmark: $TENANTS tenants, fake auth server latency ${DELAY_MS} ms, $(nproc) cores, $(uname -r)"

# 1. start-up, bounded
start_fake 3600
start_all_valid "$TENANTS" "$BOUND"
BOUNDED_MS=$ALL_MS
BOUNDED_PEAK=$(fake_peak)
BOUNDED_SELF=$(sidecar_peak)
REQUESTS=$(wc -l < "$WORK/responses")
sleep "$IDLE_SECS"
RSS_KB=$(status_of "$SIDECAR_PID" VmRSS)
HWM_KB=$(status_of "$SIDECAR_PID" VmHWM)
stop_sidecar
stop_fake

# 2. anchors: start-up as before the scheduler (no bound, no spread), 1-tenant RSS
start_fake 3600
start_all_valid "$TENANTS" "$TENANTS" 0s
FREE_MS=$ALL_MS
FREE_PEAK=$(fake_peak)
stop_sidecar
stop_fake
start_fake 3600
start_all_valid 1 "$BOUND"
sleep "$IDLE_SECS"
RSS1_KB=$(status_of "$SIDECAR_PID" VmRSS)
stop_sidecar
stop_fake

# 3. refresh churn with 10 s tokens
start_fake 10
start_all_valid "$TENANTS" "$BOUND"
sleep 2
C0=$(cpu_ticks "$SIDECAR_PID"); N0=$(wc -l < "$WORK/responses")
sleep "$CHURN_SECS"
C1=$(cpu_ticks "$SIDECAR_PID"); N1=$(wc -l < "$WORK/responses")
CHURN_PEAK=$(fake_peak)
CHURN_HWM=$(status_of "$SIDECAR_PID" VmHWM)
stop_sidecar
stop_fake
TICK=$(getconf CLK_TCK)
SIZE=$(stat -c %s "$BIN")

python3 - "$TENANTS" "$BOUND" "$BOUNDED_MS" "$BOUNDED_PEAK" "$BOUNDED_SELF" "$REQUESTS" "$RSS_KB" "$HWM_KB" \
    "$FREE_MS" "$FREE_PEAK" "$RSS1_KB" "$C0" "$C1" "$N0" "$N1" "$TICK" "$CHURN_SECS" "$CHURN_PEAK" "$CHURN_HWM" "$SIZE" "$DELAY_MS" <<'PY'
import sys
(n, bound, b_ms, b_peak, b_self, reqs, rss, hwm, f_ms, f_peak, rss1, c0, c1, n0, n1, tick, secs,
 c_peak, c_hwm, size, delay) = sys.argv[1:]
n, bound, b_ms, b_peak, reqs, f_ms, f_peak, c_peak = map(int, (n, bound, b_ms, b_peak, reqs, f_ms, f_peak, c_peak))
rss, hwm, rss1, c_hwm = (int(x) / 1024 for x in (rss, hwm, rss1, c_hwm))
refreshes = int(n1) - int(n0)
cpu_ms = (int(c1) - int(c0)) * 1000 / int(tick)
floor = n * int(delay) / bound
print(f"start-up, bound {bound}: all {n} tokens held after {b_ms} ms ({reqs} token requests; "
      f"floor {n} x {delay} ms / {bound} = {floor:.0f} ms)")
print(f"  peak token requests in flight: {b_peak} at the server, {float(b_self):.0f} by the sidecar's gauge "
      f"({'OK' if b_peak <= bound else 'OVER THE BOUND'}: bound {bound})")
print(f"  anchor, no bound and no spread (the herd): {f_ms} ms, peak {f_peak} in flight; "
      f"bounded / herd = {b_ms / f_ms:.2f}x the time, {b_peak / f_peak:.2f}x the peak")
print(f"RSS with {n} tenants holding tokens, idle: {rss:.1f} MiB (peak {hwm:.1f} MiB; goal <= 32 MB); "
      f"1 tenant: {rss1:.1f} MiB; ratio {rss / rss1:.1f}x")
print(f"refresh churn, 10 s tokens, {secs} s: {refreshes} refreshes ({refreshes / int(secs):.0f}/s), "
      f"sidecar CPU {cpu_ms:.0f} ms = {cpu_ms * 1000 / max(refreshes, 1):.0f} us per refresh; "
      f"peak in flight {c_peak} ({'OK' if c_peak <= bound else 'OVER THE BOUND'}); peak RSS {c_hwm:.1f} MiB")
print(f"release binary: {int(size)} bytes = {int(size) / 1048576:.2f} MiB")
PY
