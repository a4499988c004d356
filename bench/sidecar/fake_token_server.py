#!/usr/bin/env python3
"""Fake OAuth2 token endpoint for the sidecar benchmark.

Answers every POST at once with a fresh bearer token (1 h lifetime) and
appends the monotonic time (CLOCK_MONOTONIC, ns) at which each response was
written to LOG, one line per response. Prints its port on stdout.
"""
import http.server
import itertools
import json
import sys
import time

LOG = sys.argv[1]
counter = itertools.count(1)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits
    # for the sidecar's delayed ACK (~40 ms) and the fake, not the sidecar,
    # would dominate the start -> ready number.
    disable_nagle_algorithm = True

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        body = json.dumps(
            {"access_token": f"bench-token-{next(counter)}", "token_type": "Bearer", "expires_in": 3600}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        with open(LOG, "a") as f:
            f.write(f"{time.clock_gettime_ns(time.CLOCK_MONOTONIC)}\n")

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
