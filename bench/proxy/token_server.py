#!/usr/bin/env python3
"""Fake OAuth2 token endpoint for the proxy benchmark (loopback only).

POST /token with a client-credentials form (client_id in the body for
client_secret_post, or in HTTP Basic for Envoy's credential_injector) answers
{"access_token": "bench-<client_id>-<n>", "token_type": "Bearer",
 "expires_in": 3600}. Each issued token is appended to --log, so the
benchmark can check that the upstream received exactly that token.
It is hit once per client at start-up, never during the measurement.
"""
import argparse
import base64
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
counter = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    log_path = None

    def do_POST(self):
        global counter
        length = int(self.headers.get("content-length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        client = (form.get("client_id") or [""])[0]
        auth = self.headers.get("authorization") or ""
        if not client and auth.lower().startswith("basic "):
            client = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
        grant = (form.get("grant_type") or [""])[0]
        if self.path.split("?")[0] != "/token" or grant != "client_credentials" or not client:
            self.reply(400, {"error": "invalid_request"})
            return
        with lock:
            counter += 1
            token = f"bench-{urllib.parse.quote(client)}-{counter}"
            with open(self.log_path, "a") as f:
                f.write(f"{client} {token}\n")
        self.reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    a = p.parse_args()
    Handler.log_path = a.log
    ThreadingHTTPServer(("127.0.0.1", a.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
