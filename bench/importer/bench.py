#!/usr/bin/env python3
"""Importer benchmark driver; run it through run.sh, which builds and starts PostgreSQL.

Environment: IMPORTER (release binary), PG_URL, WORK (scratch dir), ROWS, REPS, BIG_ROWS (0 = skip
the 10x RSS run), RESULTS (markdown output path).
"""
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
IMPORTER = os.environ["IMPORTER"]
PG = os.environ["PG_URL"]
# The throwaway server is on loopback: plaintext, allowed explicitly (the importer refuses a URL
# that could silently fall back to plaintext).
PG_IMPORTER = PG + ("&" if "?" in PG else "?") + "sslmode=disable"
WORK = os.environ["WORK"]
ROWS = int(os.environ.get("ROWS", "1000000"))
REPS = int(os.environ.get("REPS", "3"))
BIG_ROWS = int(os.environ.get("BIG_ROWS", "0"))
SLICE = int(os.environ.get("SLICE", "100000"))
RESULTS = os.environ.get("RESULTS", os.path.join(HERE, "RESULTS.md"))
REGISTRY = os.path.join(WORK, "bench.yaml")
COLUMNS = "id, customer_id, name, email, amount, quantity, ordered_on, updated_at, status, score"
TABLE_COLUMNS = """id bigint NOT NULL, customer_id integer NOT NULL, name text NOT NULL, email text,
    amount numeric(12,2) NOT NULL, quantity integer, ordered_on date NOT NULL,
    updated_at timestamp NOT NULL, status text NOT NULL, score numeric(8,3)"""

REGISTRY_YAML = """types:
  - module: bench_rows
    natural_key: [id]
    columns:
      - { name: id, type: bigint, required: true }
      - { name: customer_id, type: int, required: true }
      - { name: name, type: text, required: true }
      - { name: email, type: text }
      - { name: amount, type: "decimal(12,2)", required: true }
      - { name: quantity, type: int }
      - { name: ordered_on, type: date, required: true }
      - { name: updated_at, type: timestamp, required: true }
      - { name: status, type: text, required: true }
      - { name: score, type: "decimal(8,3)" }
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def psql(*sql):
    args = ["psql", "-q", "-v", "ON_ERROR_STOP=1", PG]
    for s in sql:
        args += ["-c", s]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def scalar(sql):
    return subprocess.run(["psql", "-qtA", PG, "-c", sql], check=True, capture_output=True, text=True).stdout.strip()


def timed(cmd, env=None):
    """Runs cmd under /usr/bin/time; returns (seconds, peak RSS in MB, stdout)."""
    out = os.path.join(WORK, "time.out")
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out] + cmd, capture_output=True, text=True,
                       env={**os.environ, "RUST_LOG": "warn", **(env or {})})
    secs = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"{cmd} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    rss_kb = int(open(out).read().strip().splitlines()[-1])
    return secs, rss_kb / 1024, p.stdout


def importer(url, *args):
    return timed([IMPORTER, "--database-url", url, "--registry", REGISTRY] + list(args))


def last_run():
    return scalar("SELECT status || ' ' || rows_read || ' ' || rows_written || ' ' || coalesce(load_path, '-') "
                  "FROM import_runs ORDER BY id DESC LIMIT 1").split()


def median(xs):
    return statistics.median(xs)


def generate(rows, out, slice_n):
    if os.path.exists(os.path.join(out, "rejects.json")):
        return
    log(f"generating {rows} rows in {out}")
    subprocess.run([sys.executable, os.path.join(HERE, "gen.py"), str(rows), out] +
                   (["--slice", str(slice_n)] if slice_n else []), check=True)


def postgres_cases(data):
    copy_sql = (f"\\copy bench_copy ({COLUMNS}) FROM '{data}/data.csv' WITH (FORMAT csv, HEADER true)")
    r = {"copy": [], "case1": [], "case1_rss": [], "case2": [], "case3": [], "case3_rss": [], "rejects": []}
    for rep in range(REPS):
        log(f"rep {rep + 1}/{REPS}: psql \\copy")
        psql("TRUNCATE bench_copy", "CHECKPOINT")
        r["copy"].append(timed(["psql", "-q", "-v", "ON_ERROR_STOP=1", PG, "-c", copy_sql])[0])
        log(f"rep {rep + 1}/{REPS}: case 1, first load")
        psql("TRUNCATE bench_rows", "CHECKPOINT")
        secs, rss, _ = importer(PG_IMPORTER, "load", f"{data}/data.json", "--tenant", "acme", "--force")
        status = last_run()
        assert status == ["succeeded", str(ROWS), str(ROWS), "direct"], status
        r["case1"].append(secs)
        r["case1_rss"].append(rss)
        log(f"rep {rep + 1}/{REPS}: 1% rejected rows, first load")
        psql("TRUNCATE bench_rows", "CHECKPOINT")
        secs, _, _ = importer(PG_IMPORTER, "load", f"{data}/rejects.json", "--tenant", "acme", "--force")
        status = last_run()
        assert status == ["succeeded", str(ROWS), str(ROWS - ROWS // 100), "direct"], status
        assert scalar("SELECT rows_rejected FROM import_runs ORDER BY id DESC LIMIT 1") == str(ROWS // 100)
        r["rejects"].append(secs)
        psql("TRUNCATE bench_rows", "CHECKPOINT")
        importer(PG_IMPORTER, "load", f"{data}/data.json", "--tenant", "acme", "--force")
        log(f"rep {rep + 1}/{REPS}: case 2, identical payload")
        secs, _, _ = importer(PG_IMPORTER, "load", f"{data}/data.json", "--tenant", "acme")
        status = last_run()
        assert status[0] == "duplicate", status
        r["case2"].append(secs)
    # Case 3 alternates the changed and the original export: each differs from the table in 10%.
    for rep in range(REPS):
        name = "changed" if rep % 2 == 0 else "data"
        log(f"rep {rep + 1}/{REPS}: case 3, re-delivery with 10% changed ({name})")
        psql("CHECKPOINT")
        secs, rss, _ = importer(PG_IMPORTER, "load", f"{data}/{name}.json", "--tenant", "acme", "--force")
        status = last_run()
        assert status == ["succeeded", str(ROWS), str(ROWS // 10), "staged"], status
        r["case3"].append(secs)
        r["case3_rss"].append(rss)
    assert scalar("SELECT count(*) FROM bench_rows") == str(ROWS)
    return r


def rowwise(data):
    psql("TRUNCATE bench_rowwise", "CHECKPOINT")
    log(f"row-by-row INSERTs, {SLICE} rows")
    secs, _, _ = timed(["psql", "-q", "-v", "ON_ERROR_STOP=1", PG, "-f", f"{data}/slice.sql"])
    assert scalar("SELECT count(*) FROM bench_rowwise") == str(SLICE)
    return secs


def sqlite_cases(data):
    r = {"ours": [], "cli": [], "ours_rss": []}
    for rep in range(REPS):
        db = os.path.join(WORK, "ours.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
        importer(f"sqlite://{db}", "migrate")
        log(f"rep {rep + 1}/{REPS}: SQLite, importer")
        secs, rss, _ = importer(f"sqlite://{db}", "load", f"{data}/data.csv", "--module", "bench_rows",
                                "--tenant", "acme")
        r["ours"].append(secs)
        r["ours_rss"].append(rss)
        n = subprocess.run(["sqlite3", db, "SELECT count(*) FROM bench_rows"], capture_output=True, text=True).stdout
        assert n.strip() == str(ROWS), n
        cli = os.path.join(WORK, "cli.db")
        if os.path.exists(cli):
            os.remove(cli)
        subprocess.run(["sqlite3", cli, f"CREATE TABLE bench_cli ({sqlite_columns()}, PRIMARY KEY (id))"], check=True)
        log(f"rep {rep + 1}/{REPS}: SQLite, sqlite3 .import")
        secs, _, _ = timed(["sqlite3", cli, f".import --csv --skip 1 {data}/data.csv bench_cli"])
        r["cli"].append(secs)
        n = subprocess.run(["sqlite3", cli, "SELECT count(*) FROM bench_cli"], capture_output=True, text=True).stdout
        assert n.strip() == str(ROWS), n
    return r


def sqlite_columns():
    """The benchmark table in SQLite, typed as the importer's registry maps it."""
    return ("id INTEGER NOT NULL, customer_id INTEGER NOT NULL, name TEXT NOT NULL, email TEXT, "
            "amount TEXT NOT NULL, quantity INTEGER, ordered_on TEXT NOT NULL, updated_at TEXT NOT NULL, "
            "status TEXT NOT NULL, score TEXT")


def big_rss():
    data = os.path.join(WORK, f"data-{BIG_ROWS}")
    generate(BIG_ROWS, data, 0)
    psql("TRUNCATE bench_rows", "DELETE FROM import_rejects", "DELETE FROM import_runs", "CHECKPOINT")
    log(f"{BIG_ROWS} rows: case 1 for peak RSS")
    secs, rss, _ = importer(PG_IMPORTER, "load", f"{data}/data.json", "--tenant", "acme")
    log(f"{BIG_ROWS} rows: case 3 for peak RSS")
    secs3, rss3, _ = importer(PG_IMPORTER, "load", f"{data}/changed.json", "--tenant", "acme")
    return secs, rss, secs3, rss3


def bomb_rss():
    """Peak RSS for a payload whose CSV holds one 256 MB field, on both databases."""
    out = os.path.join(WORK, "bomb")
    if not os.path.exists(os.path.join(out, "bomb.json")):
        log("generating the 256 MB single-field bomb")
        subprocess.run([sys.executable, os.path.join(HERE, "gen.py"), "--bomb", out], check=True)
    psql("TRUNCATE bench_rows")
    results = {}
    for name, url in [("PostgreSQL", PG_IMPORTER), ("SQLite", "sqlite://" + os.path.join(WORK, "bomb.db"))]:
        log(f"bomb: {name}")
        secs, rss, _ = importer(url, "load", f"{out}/bomb.json", "--tenant", "bomb", "--force")
        results[name] = (secs, rss)
    status = last_run()
    assert status[:2] == ["succeeded", "2"], status
    assert scalar("SELECT rows_rejected FROM import_runs ORDER BY id DESC LIMIT 1") == "1"
    return results


def main():
    with open(REGISTRY, "w") as f:
        f.write(REGISTRY_YAML)
    data = os.path.join(WORK, f"data-{ROWS}")
    generate(ROWS, data, SLICE)
    importer(PG_IMPORTER, "migrate")
    psql(f"CREATE TABLE IF NOT EXISTS bench_copy (tenant_id text NOT NULL DEFAULT 'acme', {TABLE_COLUMNS}, "
         "PRIMARY KEY (tenant_id, id))",
         f"CREATE TABLE IF NOT EXISTS bench_rowwise (tenant_id text NOT NULL DEFAULT 'acme', {TABLE_COLUMNS}, "
         "PRIMARY KEY (tenant_id, id))")
    pg = postgres_cases(data)
    row_secs = rowwise(data)
    lite = sqlite_cases(data)
    big = big_rss() if BIG_ROWS else None
    bomb = bomb_rss()

    copy = median(pg["copy"])
    c1, c2, c3 = median(pg["case1"]), median(pg["case2"]), median(pg["case3"])
    rps = lambda secs, n=ROWS: f"{n / secs:,.0f}"
    rss1 = max(pg["case1_rss"] + pg["case3_rss"])
    lines = []
    add = lines.append
    add(f"Rows: {ROWS:,} x 10 columns (data.csv {os.path.getsize(f'{data}/data.csv') / 1e6:.0f} MB, "
        f"payload {os.path.getsize(f'{data}/data.json') / 1e6:.0f} MB); median of {REPS} runs; "
        f"PostgreSQL {scalar('SHOW server_version')} with default settings; machine: {os.cpu_count()} cores, "
        f"load average before the run {os.getloadavg()[0]:.1f}.")
    add("")
    add("| PostgreSQL | seconds | rows/s | vs `psql \\copy` | target | met |")
    add("| --- | ---: | ---: | ---: | --- | --- |")
    add(f"| `psql \\copy` into the table (PK), CSV | {copy:.2f} | {rps(copy)} | 1.00 | the limit | |")
    add(f"| case 1: importer, first load (payload: base64 + zip + validation) | {c1:.2f} | {rps(c1)} | "
        f"{copy / c1:.2f} | >= 0.95 | {'yes' if copy / c1 >= 0.95 else 'NO'} |")
    rj = median(pg["rejects"])
    add(f"| 1% rejected rows ({ROWS // 100:,} rejects with reasons), first load | {rj:.2f} | {rps(rj)} | "
        f"{copy / rj:.2f} | >= 0.90 of case 1 ({c1 / rj:.2f}) | {'yes' if c1 / rj >= 0.9 else 'NO'} |")
    add(f"| case 2: identical payload again (recorded `duplicate`) | {c2:.2f} | - | {c1 / c2:.0f}x faster than case 1 | "
        f">= 20x | {'yes' if c1 / c2 >= 20 else 'NO'} |")
    add(f"| case 3: re-delivery, 10% changed, writes {ROWS // 10:,} rows | {c3:.2f} | {rps(c3)} | {copy / c3:.2f} | "
        f">= 0.50 | {'yes' if copy / c3 >= 0.5 else 'NO'} |")
    add(f"| row-by-row INSERTs (autocommit), {SLICE:,}-row slice | {row_secs:.2f} | {rps(row_secs, SLICE)} | "
        f"{(SLICE / row_secs) / (ROWS / copy):.3f} | the seed's before | |")
    add("")
    add("| Peak RSS (importer) | MB | target | met |")
    add("| --- | ---: | --- | --- |")
    add(f"| {ROWS:,} rows, cases 1 and 3 | {rss1:.1f} | <= 32 | {'yes' if rss1 <= 32 else 'NO'} |")
    if big:
        bsecs, brss, bsecs3, brss3 = big
        peak = max(brss, brss3)
        add(f"| {BIG_ROWS:,} rows, case 1 ({bsecs:.1f} s) and case 3 ({bsecs3:.1f} s) | {peak:.1f} | <= 32 and flat | "
            f"{'yes' if peak <= 32 and peak <= rss1 * 1.25 else 'NO'} |")
    else:
        add(f"| 10x rows | not run | set BIG_ROWS={ROWS * 10} | |")
    for name, (bsecs, brss) in bomb.items():
        add(f"| {name}: one 256 MB field (a 0.35 MB payload), rejected, {bsecs:.1f} s | {brss:.1f} | <= 32 | "
            f"{'yes' if brss <= 32 else 'NO'} |")
    lo, cli = median(lite["ours"]), median(lite["cli"])
    add("")
    add("| SQLite | seconds | rows/s | vs `sqlite3 .import` | target | met |")
    add("| --- | ---: | ---: | ---: | --- | --- |")
    add(f"| `sqlite3` CLI `.import --csv` into the table (PK) | {cli:.2f} | {rps(cli)} | 1.00 | | |")
    add(f"| importer default (SQLite file), CSV, validation included | {lo:.2f} | {rps(lo)} | {cli / lo:.2f} | >= 1.00 | "
        f"{'yes' if cli / lo >= 1 else 'NO'} |")
    add("")
    add("Raw seconds: " + "; ".join(f"{k} {', '.join(f'{v:.2f}' for v in vs)}" for k, vs in
                                     [("copy", pg["copy"]), ("case1", pg["case1"]), ("1% rejects", pg["rejects"]),
                                      ("case2", pg["case2"]),
                                      ("case3", pg["case3"]), ("sqlite importer", lite["ours"]),
                                      ("sqlite3 .import", lite["cli"])]) + ".")
    table = "\n".join(lines)
    print(table)
    with open(RESULTS, "w") as f:
        f.write("# Importer benchmark results\n\n")
        f.write("Reproduce with `BIG_ROWS=10000000 bench/importer/run.sh` (drop `BIG_ROWS` to skip the 10x "
                "peak-RSS run). Row-by-row INSERTs wait for one WAL flush per commit, so they vary most with "
                "the disk. "
                "Method: [README.md](README.md).\n\n")
        f.write(f"Run on {time.strftime('%Y-%m-%d')}.\n\n")
        f.write(table + "\n")


if __name__ == "__main__":
    main()
