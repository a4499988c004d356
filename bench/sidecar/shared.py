#!/usr/bin/env python3
"""Shared-token benchmark: token requests per refresh cycle with 1, 3 and 6
sidecar replicas x TENANTS tenants, with and without the shared store, and
the adoption latency. Loopback only, bounded (about 2.5 minutes).

Run through bench/sidecar/shared.sh (builds the release sidecar). Each case
gets a fresh redis-server, a fresh fake token server (tokens live LIFETIME
seconds; every response's CLOCK_MONOTONIC time is logged) and R sidecar
processes. After every replica serves every tenant, the script counts token
requests for WINDOW seconds.

Anchor: one replica without the shared store. Its request count in the
window is, by definition, TENANTS requests per refresh cycle; every other
case is reported as a ratio to it, and as requests per cycle (ratio x
TENANTS). Goal for the shared cases: = TENANTS, independent of replicas.

Adoption latency (shared, R > 1): for every token issued in the window and
every replica, the time from the fake server writing the token response to
the replica's token API (followed with long-polls) first serving it.
"""
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1]
TENANTS = int(os.environ.get("TENANTS", "50"))
LIFETIME = int(os.environ.get("LIFETIME", "4"))
WINDOW = float(os.environ.get("WINDOW", "20"))
CASES = [(1, False), (1, True), (3, True), (6, True), (3, False), (6, False)]


def now():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Auth:
    """Fake token endpoint: POST /token/<tenant> -> a fresh token."""

    def __init__(self):
        self.lock = threading.Lock()
        self.issued = []  # (ns, tenant, token)
        self.n = 0
        auth = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", "0")))
                tenant = self.path.rsplit("/", 1)[-1]
                with auth.lock:
                    auth.n += 1
                    token = f"tok-{tenant}-{auth.n}"
                body = json.dumps(
                    {"access_token": token, "token_type": "Bearer", "expires_in": LIFETIME}
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                with auth.lock:
                    auth.issued.append((now(), tenant, token))

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a sidecar killed at the end of a case mid-request

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Follower:
    """Long-polls one sidecar's token API; records each tenant's changes."""

    def __init__(self, port):
        self.port = port
        self.seen = {}  # token -> first ns served
        self.current = {}
        self.stop = False
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        after = 0
        conn = None
        while not self.stop:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", f"/v1/tokens?after={after}&wait_ms=5000")
                r = conn.getresponse()
                body = r.read()
                t = now()
                if r.status != 200:
                    continue
                snap = json.loads(body)
                after = snap["version"]
                for tenant, entry in snap["tenants"].items():
                    token = entry["header"][len("Bearer "):] if entry else None
                    self.current[tenant] = token
                    if token and token not in self.seen:
                        self.seen[token] = t
            except (OSError, http.client.HTTPException, ValueError):
                conn = None
                time.sleep(0.02)


def config(dir, auth_port, tokens, probes, redis_port):
    lines = [
        "listen:",
        f"  tokens: 127.0.0.1:{tokens}",
        f"  probes: 127.0.0.1:{probes}",
        "refresh:",
        "  expiry_margin: 1s",
        "  min_lifetime: 1s",
        "  max_fetches_per_minute: 600",
        "  request_timeout: 2s",
        "  backoff_initial: 200ms",
        "  backoff_max: 1s",
    ]
    if redis_port:
        lines += [
            "shared:",
            f"  url: redis://127.0.0.1:{redis_port}/0",
            "  lock_ttl: 4s",
            "  timeout: 500ms",
        ]
    lines.append("tenants:")
    secret = os.path.join(dir, "secret")
    for i in range(TENANTS):
        lines += [
            f"  t{i:02}:",
            f"    token_url: http://127.0.0.1:{auth_port}/token/t{i:02}",
            f"    client_id: client-{i:02}",
            f"    auth: {{method: client_secret_post, secret: {{file: {secret}}}}}",
        ]
    path = os.path.join(dir, f"sidecar-{tokens}.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def run_case(replicas, shared, dir):
    procs = []
    redis_port = None
    if shared:
        redis_port = free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", dir, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", redis_port), 0.1).close()
                break
            except OSError:
                time.sleep(0.02)
    auth = Auth()
    followers = []
    try:
        for _ in range(replicas):
            tokens, probes = free_port(), free_port()
            cfg = config(dir, auth.port, tokens, probes, redis_port)
            procs.append(subprocess.Popen([BIN, "--config", cfg], env={**os.environ, "RUST_LOG": "warn"},
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            followers.append(Follower(tokens))
        deadline = time.time() + 30
        while time.time() < deadline:
            if all(len([t for t in f.current.values() if t]) == TENANTS for f in followers):
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"case {replicas}x shared={shared}: not every replica got every token")
        start = now()
        time.sleep(WINDOW)
        end = now()
        time.sleep(0.5)  # let the last adoptions land
        with auth.lock:
            window = [i for i in auth.issued if start <= i[0] < end]
        lat = []
        if shared and replicas > 1:
            for t_ns, _tenant, token in window:
                for f in followers:
                    seen = f.seen.get(token)
                    if seen is not None and t_ns < end - 2e9:
                        lat.append(max(0, seen - t_ns) / 1e6)
                    elif seen is None and t_ns < end - 2e9:
                        lat.append(float("inf"))
        return len(window), sorted(lat)
    finally:
        for f in followers:
            f.stop = True
        for p in procs:
            p.kill()
            p.wait()
        auth.stop()


def pct(xs, p):
    if not xs:
        return None
    return xs[min(len(xs) - 1, round((len(xs) - 1) * p))]


def main():
    with tempfile.TemporaryDirectory() as dir:
        with open(os.path.join(dir, "secret"), "w") as f:
            f.write("bench-secret\n")
        print(f"shared-token benchmark: {TENANTS} tenants, {LIFETIME} s tokens, {WINDOW:.0f} s window, "
              f"{os.cpu_count()} cores, {os.uname().release}", flush=True)
        rows = []
        anchor = None
        for replicas, shared in CASES:
            n, lat = run_case(replicas, shared, dir)
            if anchor is None:
                anchor = n
            ratio = n / anchor
            row = {
                "replicas": replicas,
                "shared": shared,
                "requests": n,
                "ratio_to_anchor": round(ratio, 3),
                "requests_per_cycle": round(ratio * TENANTS, 1),
                "adoption_samples": len(lat),
                "adoption_p50_ms": pct(lat, 0.5),
                "adoption_p99_ms": pct(lat, 0.99),
                "adoption_max_ms": lat[-1] if lat else None,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        print()
        print(f"| replicas | shared | token requests in {WINDOW:.0f} s | × anchor | requests per refresh cycle "
              f"({TENANTS} tenants) | adoption p50 | adoption p99 | samples |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            fmt = lambda v: "—" if v is None else ("never" if v == float("inf") else f"{v:.1f} ms")
            print(f"| {r['replicas']} | {'yes' if r['shared'] else 'no (anchor)' if r is rows[0] else 'no'} | "
                  f"{r['requests']} | {r['ratio_to_anchor']:.2f} | {r['requests_per_cycle']:.1f} | "
                  f"{fmt(r['adoption_p50_ms'])} | {fmt(r['adoption_p99_ms'])} | {r['adoption_samples'] or '—'} |")


if __name__ == "__main__":
    main()
