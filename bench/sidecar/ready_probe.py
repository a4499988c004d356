#!/usr/bin/env python3
"""Polls http://ADDR/readyz every 1 ms until it answers 200; prints the
monotonic time (ns) of that answer. Gives up after 30 s."""
import http.client
import sys
import time

host, port = sys.argv[1].rsplit(":", 1)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=1)
        c.request("GET", "/readyz")
        r = c.getresponse()
        r.read()
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        c.close()
        if r.status == 200:
            print(now)
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.001)
sys.exit("readyz never answered 200")
