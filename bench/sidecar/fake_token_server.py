#!/usr/bin/env python3
"""Fake OAuth2 token endpoint for the sidecar benchmark.

    fake_token_server.py LOG [DELAY_MS] [EXPIRES_IN]

Answers every POST with a fresh bearer token after DELAY_MS (default 0, to
stand in for a real auth server's latency), with `expires_in` EXPIRES_IN
(default 3600). Appends the monotonic time (CLOCK_MONOTONIC, ns) at which
each response was written to LOG, one line per response. Counts requests in
progress: `GET /stats` answers {"requests": n, "peak_in_flight": n}. Prints
its port on stdout.
"""
import http.server
import itertools
import json
import sys
import threading
import time

LOG = sys.argv[1]
DELAY = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.0
EXPIRES_IN = int(sys.argv[3]) if len(sys.argv) > 3 else 3600
counter = itertools.count(1)
lock = threading.Lock()
stats = {"requests": 0, "in_flight": 0, "peak_in_flight": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits
    # for the sidecar's delayed ACK (~40 ms) and the fake, not the sidecar,
    # would dominate the numbers.
    disable_nagle_algorithm = True

    def do_GET(self):
        with lock:
            body = json.dumps({k: stats[k] for k in ("requests", "peak_in_flight")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        with lock:
            stats["requests"] += 1
            stats["in_flight"] += 1
            stats["peak_in_flight"] = max(stats["peak_in_flight"], stats["in_flight"])
        try:
            length = int(self.headers.get("content-length", "0"))
            self.rfile.read(length)
            if DELAY:
                time.sleep(DELAY)
            body = json.dumps(
                {"access_token": f"bench-token-{next(counter)}", "token_type": "Bearer", "expires_in": EXPIRES_IN}
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
        finally:
            # Before the body goes out: once the client holds the whole
            # response (and may start its next request), this one is no
            # longer counted, so the peak never counts one request twice.
            with lock:
                stats["in_flight"] -= 1
        self.wfile.write(body)
        self.wfile.flush()
        with open(LOG, "a") as f:
            f.write(f"{time.clock_gettime_ns(time.CLOCK_MONOTONIC)}\n")

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    # The unbounded anchor opens up to 1000 connections at once.
    request_queue_size = 2048
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a sidecar stopped mid-request resets its connections


server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
