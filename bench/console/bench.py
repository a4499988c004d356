"""Console benchmark driver (see run.sh): seed, start the console, time pages, read RSS."""

import html
import http.client
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PG_URL = os.environ["PG_URL"]
if "?" not in PG_URL:
    PG_URL += "?sslmode=disable"  # loopback; the importer wants plaintext said out loud
WORK = os.environ["WORK"]
CONSOLE = os.environ["CONSOLE"]
IMPORTER = os.environ["IMPORTER"]
ROWS = int(os.environ.get("ROWS", "1000000"))
RUNS = int(os.environ.get("RUNS", "10000"))
REPS = int(os.environ.get("REPS", "7"))
BUDGET_MS = 100.0
RSS_BUDGET_MB = 30.0
REGISTRY = os.path.join(ROOT, "importer/registry/example.yaml")
MODULES = ["customers", "products", "orders", "order-lines", "invoices", "payments", "inventory-levels", "employees"]


def psql(sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", PG_URL, "-c", sql], check=True,
                   stdout=subprocess.DEVNULL)


def seed():
    env = dict(os.environ, DATABASE_URL=PG_URL, IMPORTER_REGISTRY=REGISTRY)
    subprocess.run([IMPORTER, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    t = time.time()
    psql(f"""
      INSERT INTO orders (tenant_id, order_id, customer_id, order_date, status, currency, total, updated_at)
      SELECT 'tenant-' || (i % 10), i, i % 50000, date '2025-01-01' + (i % 365),
             (ARRAY['open','closed','shipped','cancelled'])[1 + i % 4],
             CASE WHEN i % 7 = 0 THEN NULL WHEN i % 5000 = 0 THEN 'CHF'
                  ELSE (ARRAY['EUR','USD','GBP'])[1 + i % 3] END,
             (i % 100000) / 100.0, NULL
      FROM generate_series(1, {ROWS}) i;
      INSERT INTO import_runs (tenant, module, source, export_date, started_at, finished_at, status,
                               rows_read, rows_loaded, rows_rejected, rows_written, load_path, content_hash)
      SELECT 'tenant-' || (i % 10), (ARRAY{MODULES!r})[1 + i % 8], 'http://api/exports/x',
             date '2026-01-01' - (i / 80),
             now() - make_interval(secs => ({RUNS} - i) * 500.0),
             now() - make_interval(secs => ({RUNS} - i) * 500.0) + make_interval(secs => 1 + i % 60),
             CASE WHEN i % 50 = 0 THEN 'failed' WHEN i % 9 = 0 THEN 'duplicate' ELSE 'succeeded' END,
             1000 + i, 990 + i, 10, 990 + i, 'staged', md5(i::text)
      FROM generate_series(1, {RUNS}) i;
      INSERT INTO import_rejects (run_id, file, line, column_name, raw_record, reason)
      SELECT r.id, 'orders.csv', g + 1, 'total', r.id || ',x,2026-01-01,open,EUR,not-a-number', 'not a decimal'
      FROM import_runs r, generate_series(1, 10) g;
      INSERT INTO import_rejects (run_id, file, line, column_name, raw_record, reason)
      SELECT {RUNS // 2}, 'orders.csv', g + 1, 'total', g || ',x,2026-01-01,open,EUR,not-a-number', 'not a decimal'
      FROM generate_series(1, 100000) g;
      ANALYZE;
    """)
    return time.time() - t


ANCHORS = {
    # The same question asked straight through psql (\\timing, median of REPS): what the page
    # costs above the database.
    "runs, newest": "SELECT * FROM import_runs ORDER BY id DESC LIMIT 51",
    "data, tenant": "SELECT * FROM orders WHERE tenant_id = 'tenant-3' ORDER BY tenant_id, order_id LIMIT 51",
    "data, sort by total desc, tenant": "SELECT * FROM orders WHERE tenant_id = 'tenant-3' "
                                        "ORDER BY total DESC NULLS FIRST, tenant_id DESC, order_id DESC LIMIT 51",
    "run with 100k rejects": f"SELECT * FROM import_rejects WHERE run_id = {RUNS // 2} ORDER BY line, id LIMIT 101",
    "data, contains, matches nothing": "SELECT * FROM orders WHERE currency ILIKE '%zzz%' "
                                       "ORDER BY tenant_id, order_id LIMIT 51",
}

# The contains pages, also timed with CONSOLE_TRIGRAM_INDEXES=false before the trigram indexes exist.
CONTAINS = [
    ("data, contains, matches many (tenant)", "/data/orders?tenant=tenant-3&currency.has=eur"),
    ("data, contains, matches many", "/data/orders?currency.has=eur"),
    ("data, contains, matches few", "/data/orders?currency.has=chf"),
    ("data, contains, matches few, sort by total", "/data/orders?currency.has=chf&sort=total&dir=desc"),
    ("data, contains, matches nothing", "/data/orders?currency.has=zzz"),
    ("data, contains, matches nothing (tenant)", "/data/orders?tenant=tenant-3&currency.has=zzz"),
    ("data, contains, too short (400)", "/data/orders?currency.has=zz"),
]


def psql_ms(sql):
    script = "\\timing on\n" + (sql + ";\n") * (REPS + 1)
    out = subprocess.run(["psql", "-q", PG_URL], input=script.encode(), capture_output=True, check=True).stdout
    times = [float(t) for t in re.findall(rb"Time: ([0-9.]+) ms", out)][1:]
    return statistics.median(times)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Http:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookie = None

    def request(self, method, path, body=None):
        headers = {}
        if self.cookie:
            headers["Cookie"] = self.cookie
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        t = time.perf_counter()
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        total = (time.perf_counter() - t) * 1000
        m = re.search(r"app;dur=([0-9.]+)", r.getheader("server-timing") or "")
        server = float(m.group(1)) if m else float("nan")
        return r, data, server, total


def rss(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) / 1024
    return out


def trigram_built():
    """Waits until no session holds the console's index lock and both orders trigram indexes are
    valid (the console builds them in the background); returns False when there are none."""
    q = ("SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory') || ' ' || "
         "(SELECT count(*) FROM pg_index WHERE indisvalid AND indexrelid::regclass::text "
         "IN ('console_trgm_orders_currency', 'console_trgm_orders_status'))")
    for _ in range(6000):
        locks, valid = subprocess.run(["psql", "-qtA", PG_URL, "-c", q], capture_output=True, text=True,
                                      check=True).stdout.split()
        if locks == "0" and valid == "2":
            return True
        time.sleep(0.1)
    return False


def measure(users, extra, pages_only=None):
    """Starts the console with `extra` arguments, times every page (or only `pages_only`), reads RSS."""
    port = free_port()
    env = dict(os.environ, RUST_LOG="warn")
    started = time.time()
    proc = subprocess.Popen([CONSOLE, "--auth", "password", "--users-file", users, "--insecure-cookies",
                             "--database-url", PG_URL, "--registry", REGISTRY,
                             "--listen", f"127.0.0.1:{port}"] + extra, env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(12000):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        time_to_ready = time.time() - started
        trigram_s = None
        if "--trigram-indexes" not in extra:
            trigram_built()
            trigram_s = time.time() - started
        c = Http(port)
        r, _, _, _ = c.request("POST", "/login", "username=admin&password=bench-password")
        c.cookie = r.getheader("set-cookie").split(";")[0]
        rss_idle = rss(proc.pid)

        def next_link(path):
            _, body, _, _ = c.request("GET", path)
            m = re.search(r'<a href="([^"]+)" id="next-page"', body.decode())
            return html.unescape(m.group(1)) if m else path

        big_run = RUNS // 2
        pages = [
            ("HTTP floor: /livez", "/livez"),
            ("runs, newest", "/runs"),
            ("runs, tenant filter", "/runs?tenant=tenant-3"),
            ("runs, status=failed", "/runs?status=failed"),
            ("runs, type+dates", "/runs?type=orders&from=2025-12-01&to=2025-12-31"),
            ("runs, deep page", f"/runs?before={RUNS // 3}"),
            ("run with 100k rejects", f"/runs/{big_run}"),
            ("rejects, deep page", f"/runs/{big_run}/rejects?after=50000-0"),
            ("charts (30 days)", "/charts"),
            ("data types", "/data"),
            ("data, first page", "/data/orders"),
            ("data, tenant", "/data/orders?tenant=tenant-3"),
            ("data, tenant, page 2", next_link("/data/orders?tenant=tenant-3")),
            ("data, tenant + number range", "/data/orders?tenant=tenant-3&total.min=100&total.max=200"),
            ("data, tenant + date range", "/data/orders?tenant=tenant-3&order_date.min=2025-03-01&order_date.max=2025-03-31"),
            ("data, equals (no tenant)", "/data/orders?status.eq=shipped"),
            ("data, key equals", "/data/orders?order_id.eq=777777"),
            ("data, sort by total desc, tenant", "/data/orders?tenant=tenant-3&sort=total&dir=desc"),
            ("data, sort by total, page 2", next_link("/data/orders?tenant=tenant-3&sort=total")),
            ("data, sort by total (all tenants)", "/data/orders?sort=total"),
            ("tenants (no sidecar configured)", "/tenants"),
        ] + CONTAINS + [("data, contains, matches few, page 2", next_link("/data/orders?currency.has=chf"))]
        if pages_only is not None:
            pages = [p for p in pages if p[0] in pages_only]
        rows = []
        for name, path in pages:
            c.request("GET", path)  # warm-up
            server, total = [], []
            status = None
            for _ in range(REPS):
                r, _, s, t = c.request("GET", path)
                status = r.status
                server.append(s)
                total.append(t)
            rows.append((name, path, status, statistics.median(server), max(server), statistics.median(total)))
        t = time.perf_counter()
        r, body, _, _ = c.request("GET", "/data/orders/csv?tenant=tenant-3")
        csv_s = time.perf_counter() - t
        csv_rows = body.count(b"\n") - 1
        rss_end = rss(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return rows, csv_s, csv_rows, rss_idle, rss_end, time_to_ready, trigram_s


def main():
    print(f"seeding {ROWS:,} orders rows, {RUNS:,} runs ...", file=sys.stderr)
    seed_s = seed()
    users = os.path.join(WORK, "users")
    h = subprocess.run([CONSOLE, "hash-password"], input=b"bench-password", capture_output=True, check=True)
    with open(users, "w") as f:
        f.write(f"admin:admin:{h.stdout.decode().strip()}\n")
    contains_names = [name for name, _ in CONTAINS] + ["data, contains, matches few, page 2"]
    # Before: no trigram indexes yet (the console's behaviour with CONSOLE_TRIGRAM_INDEXES=false).
    before = measure(users, ["--trigram-indexes", "false"], contains_names)
    default = measure(users, [])
    indexed = measure(users, ["--column-indexes", "true"])
    out = []
    out.append(f"Seeded {ROWS:,} rows into `orders` and {RUNS:,} runs (+{RUNS * 10 + 100000:,} rejects) "
               f"in {seed_s:.1f} s; {REPS} requests per page after one warm-up; "
               f"PostgreSQL default settings, loopback, release build.\n")
    out.append(f"The console built its trigram indexes (`indexes.rs`, CREATE INDEX CONCURRENTLY in the background) "
               f"in {default[6]:.1f} s after start; the pages below were timed once they were ready.\n")
    for title, (rows, csv_s, csv_rows, rss_idle, rss_end, ready, _) in (
            ("Default indexes (the importer's, `store::PG_INDEXES`, and the trigram indexes)", default),
            ("With `CONSOLE_COLUMN_INDEXES=true` (one `(column, tenant_id, key)` index per column; "
             f"created at start in {indexed[5]:.0f} s)", indexed)):
        out.append(f"### {title}\n")
        out.append("| page | status | server ms (median) | server ms (max) | client ms (median) | median / 100 ms budget |")
        out.append("|---|---|---:|---:|---:|---:|")
        worst = (0.0, "")
        for name, path, status, med, mx, cl in rows:
            out.append(f"| {name} (`{path[:70]}`) | {status} | {med:.1f} | {mx:.1f} | {cl:.1f} | {med / BUDGET_MS:.2f} |")
            if not name.startswith("HTTP floor") and med > worst[0]:
                worst = (med, name)
        over = [name for name, _, _, med, _, _ in rows if med > BUDGET_MS]
        bad = [f"{name} ({status})" for name, _, status, _, _, _ in rows
               if status != (400 if "(400)" in name else 200)]
        assert not bad, bad
        out.append("")
        out.append(f"HTTP floor (/livez) {rows[0][3]:.2f} ms server time. Slowest page median: {worst[0]:.1f} ms "
                   f"({worst[1]}). Over the {BUDGET_MS:.0f} ms budget: {', '.join(over) or 'none'}.")
        out.append(f"CSV export of one tenant ({csv_rows:,} rows): {csv_s:.2f} s.")
        out.append(f"RSS: {rss_idle['VmRSS']:.1f} MB after login, {rss_end['VmRSS']:.1f} MB after all pages and the export; "
                   f"peak (VmHWM) {rss_end['VmHWM']:.1f} MB; budget {RSS_BUDGET_MB:.0f} MB "
                   f"(ratio {rss_end['VmHWM'] / RSS_BUDGET_MB:.2f}).\n")
    out.append("### Contains filters before and after the trigram indexes (same run)\n")
    out.append("`before`: `CONSOLE_TRIGRAM_INDEXES=false`, timed before any trigram index existed (the same "
               "`ILIKE` query, so it scans; the console at 17cb33b used `strpos(lower(…))`, 378 ms for matches "
               "nothing); `after`: default indexes, as above.\n")
    out.append("| page | before: server ms (median) | after: server ms (median) | before / after |")
    out.append("|---|---:|---:|---:|")
    after_by = {r[0]: r[3] for r in default[0]}
    for name, path, status, med, _, _ in before[0]:
        out.append(f"| {name} (`{path[:70]}`) | {med:.1f} | {after_by[name]:.1f} | {med / max(after_by[name], 0.01):.0f}x |")
    out.append("")
    anchors = {name: psql_ms(sql) for name, sql in ANCHORS.items()}
    out.append("Anchor: the page's main query run straight through psql (`\\timing`) in the same run "
               "(after both phases, so with the column indexes).")
    out.append("")
    out.append("| page | page server ms (default / column indexes) | psql ms | ratio (column indexes) |")
    out.append("|---|---:|---:|---:|")
    by_name = {r[0]: r[3] for r in indexed[0]}
    by_name_default = {r[0]: r[3] for r in default[0]}
    for name, ms in anchors.items():
        out.append(f"| {name} | {by_name_default[name]:.1f} / {by_name[name]:.1f} | {ms:.1f} | {by_name[name] / max(ms, 0.01):.1f}x |")
    text = "\n".join(out)
    print(text)
    with open(os.path.join(ROOT, "bench/console/RESULTS.md"), "w") as f:
        f.write("# Console benchmark results\n\n`bench/console/run.sh` on this machine (2 shared cores).\n\n")
        f.write(text + "\n")


if __name__ == "__main__":
    main()
