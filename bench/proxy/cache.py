#!/usr/bin/env python3
"""Response-cache benchmark (issue 13), loopback only, bounded, stops by itself.

    bench/proxy/cache.sh          # builds, then runs this; about 4 minutes

Four Envoys, each with one worker pinned to core 0, in front of the same
nginx upstream (static 1 KiB and 1 MiB files) that shares core 1 with wrk:

  today  envoy/local.yaml as shipped: bearer_injector, router, direct;
  hop    the same, but the router sends everything through an internal
         listener (router only) first: the cost of the extra hop itself;
  cache  envoy/cache-local.yaml as shipped (tenant_gate, cache_v2 on the
         file-system store, the cache_fill internal listener);
  gate   the same without the cache_v2 filter: splits the cache layout's cost
         on non-cacheable traffic between the gate and cache_v2.

Only ports, .wasm paths and the cache directory are rewritten; the per-request
stdout access log is removed from all three (a constant cost unrelated to the
layout, as in run.sh). Measurements, each in every round, rounds rotated:

  non-cacheable GET /v1/other/1k on today, hop and cache (the cache layout
      sends it direct): Envoy CPU µs per request, requests/s, p50;
  on cache: hits of /v1/reference/1k and /v1/reference/1m, misses (every
      request a new path under /v1/reference/miss/), and the uncached
      /v1/other/1k and /v1/other/1m on the same Envoy.

Before measuring, every path is checked (the upstream saw the tenant's token;
hits carry `age`); after each measurement any wrk error or non-2xx aborts the
run, as do upstream counts that contradict the case (a "hit" run that reached
the upstream, a "miss" run that did not fill every request).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TENANT = "acme"

NGINX = """daemon off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/nginx-error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path {run}/nginx-tmp;
    proxy_temp_path {run}/nginx-tmp;
    fastcgi_temp_path {run}/nginx-tmp;
    uwsgi_temp_path {run}/nginx-tmp;
    scgi_temp_path {run}/nginx-tmp;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        default_type application/octet-stream;
        location ~ /echo$ {{ return 200 "auth=$http_authorization host=$host ttl=$http_x_authproxy_cache_ttl\\n"; }}
        location ~ /1k$ {{ root {run}/www; try_files /1k =404; }}
        location ~ /1m$ {{ root {run}/www; try_files /1m =404; }}
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""

MISS_LUA = """-- every request a new path under /v1/reference/miss/: a cache miss
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/v1/reference/miss/{tag}-" .. n .. "/{size}")
end
"""


def log(*a):
    print(time.strftime("[%H:%M:%S]"), *a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listeners(cfg):
    return cfg["static_resources"]["listeners"]


def hcm(listener):
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def named(items, name):
    return next(i for i in items if i["name"] == name)


def set_addr(cluster, port):
    a = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    a["socket_address"] = {"address": "127.0.0.1", "port_value": port}


def set_wasm(node, wasm):
    if isinstance(node, dict):
        if isinstance(node.get("filename"), str) and node["filename"].endswith(".wasm"):
            node["filename"] = wasm
        for v in node.values():
            set_wasm(v, wasm)
    elif isinstance(node, list):
        for v in node:
            set_wasm(v, wasm)


def set_key(node, key, value):
    if isinstance(node, dict):
        if key in node:
            node[key] = value
        for v in node.values():
            set_key(v, key, value)
    elif isinstance(node, list):
        for v in node:
            set_key(v, key, value)


def configs(run, wasm, upstream, sidecar, ports):
    """today, hop, cache: the shipped files with ports, paths, no access log."""
    out = {}
    for name, base in (("today", "envoy/local.yaml"), ("hop", "envoy/local.yaml"),
                       ("cache", "envoy/cache-local.yaml"), ("gate", "envoy/cache-local.yaml")):
        with open(os.path.join(ROOT, base)) as f:
            cfg = yaml.safe_load(f)
        clusters = cfg["static_resources"]["clusters"]
        set_addr(named(clusters, "third_party_api"), upstream)
        set_addr(named(clusters, "sidecar"), sidecar)
        set_wasm(cfg, wasm)
        set_key(cfg, "cache_path", os.path.join(run, "cache"))
        ingress = named(listeners(cfg), "ingress")
        hcm(ingress).pop("access_log", None)
        listen, admin = ports[name]
        ingress["address"]["socket_address"]["port_value"] = listen
        cfg["admin"]["address"]["socket_address"]["port_value"] = admin
        if name == "gate":
            filters = hcm(ingress)["http_filters"]
            filters[:] = [f for f in filters if f["name"] != "envoy.filters.http.cache_v2"]
        if name == "hop":
            cfg["bootstrap_extensions"].append({
                "name": "envoy.bootstrap.internal_listener",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.bootstrap."
                                          "internal_listener.v3.InternalListener"}})
            routes = hcm(ingress)["route_config"]["virtual_hosts"][0]["routes"]
            inner = json.loads(json.dumps(routes))
            for r in routes:
                r["route"]["cluster"] = "hop"
            listeners(cfg).append({
                "name": "hop",
                "internal_listener": {},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "hop",
                        "route_config": {"name": "hop", "virtual_hosts": [
                            {"name": "hop", "domains": ["*"], "routes": inner}]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http."
                                     "router.v3.Router"}}],
                    }}]}],
            })
            clusters.append({
                "name": "hop", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "hop", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"envoy_internal_address": {
                        "server_listener_name": "hop"}}}}]}]},
            })
        path = os.path.join(run, f"envoy-{name}.yaml")
        with open(path, "w") as f:
            f.write(f"# Generated by bench/proxy/cache.py from {base}: case {name}\n")
            yaml.safe_dump(cfg, f, sort_keys=False)
        out[name] = path
    return out


class Run:
    def __init__(self, a):
        self.a = a
        self.procs = []
        self.dir = tempfile.mkdtemp(prefix="bench-cache.")
        os.chmod(self.dir, 0o755)  # nginx's workers read www/ as another user

    def start(self, name, core, cmd, env=None):
        f = open(os.path.join(self.dir, f"{name}.log"), "w")
        p = subprocess.Popen(["taskset", "-c", str(core)] + cmd, stdout=f, stderr=subprocess.STDOUT,
                             env=env, start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.time() + 3
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()


def http(url, headers=None, timeout=2):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, dict(r.headers), r.read()


def wait(what, f, secs=30):
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            v = f()
            if v:
                return v
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"ABORT: timed out waiting for {what}")


def stat(admin, name):
    body = http(f"http://127.0.0.1:{admin}/stats?filter=^{name.replace('.', '[.]')}$")[2].decode()
    return sum(int(line.split(": ")[1]) for line in body.splitlines() if ": " in line)


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wrk(run, port, seconds, conns, path=None, script=None, out=None, admin=None):
    # A miss writes the body to disk and crosses two listeners: allow it more.
    timeout = "10s" if script else "2s"
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", timeout,
           "-H", f"x-tenant-id: {TENANT}", "-s", script or os.path.join(HERE, "report.lua")]
    cmd.append(f"http://127.0.0.1:{port}{path or '/'}")
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    if out:
        with open(out, "w") as f:
            f.write(text)
    line = next((l for l in text.splitlines() if l.startswith("BENCHJSON ")), None)
    if not line:
        raise SystemExit(f"ABORT: no wrk result:\n{text}")
    d = json.loads(line[len("BENCHJSON "):])
    errs = {k: v for k, v in d.items() if k.startswith("err_") and v}
    if errs:
        detail = ""
        if admin:
            body = http(f"http://127.0.0.1:{admin}/stats?filter=rq_[0-9]xx|_5[0-9][0-9]$|"
                        "overflow|cx_connect_fail|no_token|rejected")[2].decode()
            detail = "\n" + "\n".join(l for l in body.splitlines() if not l.endswith(": 0"))
        raise SystemExit(f"ABORT: wrk errors {errs} on {path}{detail}")
    return d


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--hard-limit", type=int, default=900)
    p.add_argument("--out", default=os.path.join(HERE, "cache-last-run.md"))
    p.add_argument("--target", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")))
    a = p.parse_args()
    if os.cpu_count() < 2:
        raise SystemExit("ABORT: needs 2 cores (Envoy on core 0, wrk and nginx on core 1)")
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(SystemExit("ABORT: hard limit")))
    signal.alarm(a.hard_limit)
    run = Run(a)
    try:
        measure_all(run, a)
    finally:
        run.stop()
        if os.environ.get("KEEP_RUN_DIR") != "1":
            shutil.rmtree(run.dir, ignore_errors=True)
        else:
            log("run directory kept:", run.dir)


def measure_all(run, a):
    d = run.dir
    envoy = os.path.join(ROOT, ".venv/bin/envoy")
    wasm, sidecar_bin = os.path.join(d, "filter.wasm"), os.path.join(d, "sidecar")
    shutil.copy(os.path.join(a.target, "wasm32-wasip1/wasm/filter.wasm"), wasm)
    shutil.copy(os.path.join(a.target, "debug/sidecar"), sidecar_bin)
    os.makedirs(os.path.join(d, "www"))
    os.makedirs(os.path.join(d, "nginx-tmp"))
    os.makedirs(os.path.join(d, "cache"))
    for name, size in (("1k", 1024), ("1m", 1024 * 1024)):
        with open(os.path.join(d, "www", name), "wb") as f:
            f.write(os.urandom(size))
    upstream, token, sidecar, probes = (free_port() for _ in range(4))
    ports = {c: (free_port(), free_port()) for c in ("today", "hop", "cache", "gate")}
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(NGINX.format(run=d, port=upstream))
    run.start("nginx", 1, ["nginx", "-c", os.path.join(d, "nginx.conf"), "-e",
                           os.path.join(d, "nginx-error.log")])
    run.start("token", 1, [sys.executable, os.path.join(HERE, "token_server.py"), "--port", str(token),
                           "--log", os.path.join(d, "tokens.log")])
    with open(os.path.join(d, "sidecar.yaml"), "w") as f:
        f.write(f"listen: {{tokens: 127.0.0.1:{sidecar}, probes: 127.0.0.1:{probes}}}\ntenants:\n"
                f"  {TENANT}:\n    token_url: http://127.0.0.1:{token}/token\n    client_id: {TENANT}\n"
                "    auth: {method: client_secret_post, secret: {env: BENCH_CLIENT_SECRET}}\n")
    wait("nginx", lambda: http(f"http://127.0.0.1:{upstream}/")[0] == 200)
    run.start("sidecar", 1, [sidecar_bin, "--config", os.path.join(d, "sidecar.yaml")],
              env=dict(os.environ, BENCH_CLIENT_SECRET="bench-secret", RUST_LOG="warn"))
    wait("sidecar ready", lambda: http(f"http://127.0.0.1:{probes}/readyz")[0] == 200)
    paths = configs(d, wasm, upstream, sidecar, ports)
    pids = {}
    for c, path in paths.items():
        subprocess.run([envoy, "--mode", "validate", "-c", path, "-l", "error"], check=True,
                       capture_output=True)
        pids[c] = run.start(f"envoy-{c}", 0, [envoy, "-c", path, "--concurrency", "1",
                                              "--log-level", "warn", "--disable-hot-restart"]).pid
    for c, (listen, admin) in ports.items():
        wait(f"envoy {c}", lambda: b"LIVE" in http(f"http://127.0.0.1:{admin}/ready")[2], 120)

    def token_now():
        with open(os.path.join(d, "tokens.log")) as f:
            lines = [l.split() for l in f if l.startswith(TENANT + " ")]
        return lines[-1][1] if lines else "?"

    def through(c, path):
        return http(f"http://127.0.0.1:{ports[c][0]}{path}", {"x-tenant-id": TENANT})

    # Correctness first: the upstream sees the tenant's token on every path.
    for c, path in (("today", "/v1/other/echo"), ("hop", "/v1/other/echo"), ("gate", "/v1/other/echo"),
                    ("cache", "/v1/other/echo"), ("cache", "/v1/reference/check/echo")):
        want = f"auth=Bearer {token_now()}".encode()
        wait(f"{c} {path} injects", lambda: through(c, path)[2].startswith(want), 20)
    status, headers, _ = through("cache", "/v1/reference/check/echo")
    if "Age" not in headers and "age" not in headers:
        raise SystemExit("ABORT: the second /v1/reference/check/echo was not served from the cache")
    for path, size in (("/v1/other/1k", 1024), ("/v1/other/1m", 1 << 20),
                       ("/v1/reference/1k", 1024), ("/v1/reference/1m", 1 << 20)):
        s, _, body = through("cache", path)
        if s != 200 or len(body) != size:
            raise SystemExit(f"ABORT: {path} answered {s} with {len(body)} bytes")
    log("verified: token on the direct, hop and fill paths; hits carry age; sizes right")

    cases = [
        ("non-cacheable", "today", "/v1/other/1k", None, "direct"),
        ("non-cacheable", "hop", "/v1/other/1k", None, "direct"),
        ("non-cacheable", "cache", "/v1/other/1k", None, "direct"),
        ("non-cacheable", "gate", "/v1/other/1k", None, "direct"),
        ("1 KiB", "cache", "/v1/other/1k", None, "direct"),
        ("1 KiB", "cache", "/v1/reference/1k", None, "hit"),
        ("1 KiB", "cache", None, "1k", "miss"),
        ("1 MiB", "cache", "/v1/other/1m", None, "direct"),
        ("1 MiB", "cache", "/v1/reference/1m", None, "hit"),
        ("1 MiB", "cache", None, "1m", "miss"),
    ]
    results = []
    for c in ("today", "hop", "cache", "gate"):
        wrk(d, ports[c][0], a.warmup * 2, a.conns, "/v1/other/1k")
    for r in range(1, a.rounds + 1):
        order = cases[(r - 1) % len(cases):] + cases[:(r - 1) % len(cases)]
        for group, c, path, miss, kind in order:
            listen, admin = ports[c]
            script = None
            if miss:
                script = os.path.join(d, f"miss-{miss}-{r}.lua")
                with open(script, "w") as f:
                    f.write(MISS_LUA.format(tag=f"r{r}", size=miss))
                    f.write(open(os.path.join(HERE, "report.lua")).read())
            else:
                wrk(d, listen, a.warmup, a.conns, path, admin=admin)
            fill0 = stat(admin, "cluster.cache_fill.upstream_rq_200") if c == "cache" else 0
            direct0 = stat(admin, "cluster.third_party_api.upstream_rq_200")
            t0 = ticks(pids[c])
            res = wrk(d, listen, a.duration, a.conns, path, script,
                      os.path.join(d, f"wrk-{c}-{kind}-{r}.txt"), admin)
            t1 = ticks(pids[c])
            fills = (stat(admin, "cluster.cache_fill.upstream_rq_200") if c == "cache" else 0) - fill0
            direct = stat(admin, "cluster.third_party_api.upstream_rq_200") - direct0
            n = res["requests"]
            if kind == "hit" and fills > 0:
                raise SystemExit(f"ABORT: {path} hits reached the upstream {fills} times")
            if kind == "miss" and fills < n:
                raise SystemExit(f"ABORT: {n} misses made only {fills} fills")
            if kind == "direct" and direct < n:
                raise SystemExit(f"ABORT: {n} direct requests, {direct} upstream 200s")
            rps = n / (res["duration_us"] / 1e6)
            cpu_us = (t1 - t0) / os.sysconf("SC_CLK_TCK") * 1e6 / max(n, 1)
            row = dict(round=r, group=group, case=c, kind=kind, path=path or f"miss/{miss}", rps=rps,
                       p50_us=res["p50_us"], p99_us=res["p99_us"], envoy_cpu_us_per_req=cpu_us)
            results.append(row)
            log(f"round {r} {group:>13} {c:>5} {kind:>6}: {rps:9.0f} req/s  p50 {res['p50_us']:6d} us  "
                f"Envoy {cpu_us:6.1f} CPU us/req")
    summarize(a, results)


def summarize(a, results):
    def med(group, case, kind, key):
        vals = [x[key] for x in results if (x["group"], x["case"], x["kind"]) == (group, case, kind)]
        return statistics.median(vals)

    envoy = subprocess.run([os.path.join(ROOT, ".venv/bin/envoy"), "--version"], capture_output=True,
                           text=True).stdout.split("version: ")[-1].strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    lines = [
        "# Response cache benchmark (bench/proxy/cache.sh)",
        "",
        f"Command: `bench/proxy/cache.sh --rounds {a.rounds} --duration {a.duration} --conns {a.conns}`; "
        f"commit {commit}; Envoy {envoy}; one worker pinned to core 0, wrk (1 thread, {a.conns} "
        f"connections) and nginx on core 1; medians over rounds; load average at the end "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a shared machine).",
        "",
        "## Non-cacheable traffic: Envoy CPU per request (GET /v1/other/1k)",
        "",
        "| layout | req/s | p50 µs | Envoy CPU µs/req | vs today (median of per-round differences) |",
        "|---|---:|---:|---:|---:|",
    ]
    def paired(case):
        """Median over rounds of (case − today) in the same round: drift on a
        shared machine moves both."""
        by_round = {}
        for x in results:
            if x["group"] == "non-cacheable":
                by_round.setdefault(x["round"], {})[x["case"]] = x["envoy_cpu_us_per_req"]
        return statistics.median(r[case] - r["today"] for r in by_round.values())

    for c, label in (("today", "today (envoy/local.yaml)"),
                     ("hop", "everything through an internal listener"),
                     ("cache", "cache layout, non-cacheable goes direct"),
                     ("gate", "the same without the cache_v2 filter (the gate's own share)")):
        cpu = med("non-cacheable", c, "direct", "envoy_cpu_us_per_req")
        lines.append(f"| {label} | {med('non-cacheable', c, 'direct', 'rps'):.0f} | "
                     f"{med('non-cacheable', c, 'direct', 'p50_us'):.0f} | {cpu:.1f} | {paired(c):+.1f} µs |")
    lines += ["", "## Cached responses (envoy/cache-local.yaml, same Envoy)", "",
              "| body | path | req/s | p50 µs | Envoy CPU µs/req | req/s vs uncached |",
              "|---|---|---:|---:|---:|---:|"]
    for group in ("1 KiB", "1 MiB"):
        anchor = med(group, "cache", "direct", "rps")
        for kind, label in (("direct", "uncached (direct)"), ("hit", "hit"), ("miss", "miss (fill)")):
            rps = med(group, "cache", kind, "rps")
            lines.append(f"| {group} | {label} | {rps:.0f} | {med(group, 'cache', kind, 'p50_us'):.0f} | "
                         f"{med(group, 'cache', kind, 'envoy_cpu_us_per_req'):.1f} | {rps / anchor:.2f}x |")
    text = "\n".join(lines) + "\n"
    with open(a.out, "w") as f:
        f.write(text)
    with open(a.out.rsplit(".", 1)[0] + ".jsonl", "w") as f:
        for x in results:
            f.write(json.dumps(x) + "\n")
    print(text)


if __name__ == "__main__":
    main()
