#!/usr/bin/env python3
"""A stand-in OAuth2 token endpoint on 127.0.0.1, for deploy/validate.sh's
smoke test of the sidecar image. Answers every POST with a bearer token and
counts the requests per client authentication seen (Basic header, or a
client_assertion in the form). Prints its port on the first line of stdout,
then serves until killed or --seconds pass.

Usage: fake_token_server.py [--seconds N]
"""

import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEEN = {"basic": 0, "assertion": 0, "other": 0}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        if (self.headers.get("authorization") or "").startswith("Basic "):
            SEEN["basic"] += 1
        elif "client_assertion" in form:
            SEEN["assertion"] += 1
        else:
            SEEN["other"] += 1
        body = json.dumps({"access_token": "smoke-test-token", "token_type": "Bearer", "expires_in": 3600})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def do_GET(self):  # /seen: what the sidecar sent so far
        body = json.dumps(SEEN)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


def main():
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[1] == "--seconds" else 120.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    threading.Timer(seconds, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
