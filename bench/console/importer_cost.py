"""What the console's trigram indexes cost the importer (see importer-cost.sh).

Uses the importer benchmark's data, registry and helpers (bench/importer/bench.py: 10 columns,
three of them text: name, email, status). Alternates, in one run, loads into `bench_rows` without
and with a GIN trigram index on each text column, exactly as the console builds them
(`indexes::TrigramIndex::create_sql`): case 1 (first load, COPY into the empty table) and case 3
(re-delivery with 10% of the rows changed: staged upsert). Prints medians and ratios, the
indexes' build time (CREATE INDEX CONCURRENTLY on the loaded table) and size; writes
bench/console/IMPORTER-COST.md.
"""
import os
import statistics
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in bench/importer
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "importer"))
import bench as ib  # noqa: E402  (reads IMPORTER, PG_URL, WORK, ROWS, REPS)

TEXT = ["name", "email", "status"]


def drop():
    ib.psql(*[f"DROP INDEX IF EXISTS console_trgm_bench_rows_{c}" for c in TEXT])


def create():
    t = time.monotonic()
    for c in TEXT:
        ib.psql(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS console_trgm_bench_rows_{c} "
                f"ON bench_rows USING gin ({c} public.gin_trgm_ops)")
    return time.monotonic() - t


def load(name, first):
    if first:
        ib.psql("TRUNCATE bench_rows")
    ib.psql("CHECKPOINT")
    secs, _, _ = ib.importer(ib.PG_IMPORTER, "load", f"{DATA}/{name}.json", "--tenant", "acme", "--force")
    return secs


def main():
    global DATA
    with open(ib.REGISTRY, "w") as f:
        f.write(ib.REGISTRY_YAML)
    DATA = os.path.join(ib.WORK, f"data-{ib.ROWS}")
    ib.generate(ib.ROWS, DATA, 0)
    ib.importer(ib.PG_IMPORTER, "migrate")
    ib.psql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    r = {k: [] for k in ("c1_plain", "c1_trgm", "c3_plain", "c3_trgm")}
    build, size = [], ""
    for rep in range(ib.REPS):
        for with_trgm in (False, True):
            tag = "trgm" if with_trgm else "plain"
            drop()
            if with_trgm:
                create()
            ib.log(f"rep {rep + 1}/{ib.REPS}: case 1, {tag}")
            r[f"c1_{tag}"].append(load("data", True))
            # Case 3: the changed export over the loaded table (writes 10% of the rows).
            ib.log(f"rep {rep + 1}/{ib.REPS}: case 3, {tag}")
            r[f"c3_{tag}"].append(load("changed", False))
            status = ib.last_run()
            assert status == ["succeeded", str(ib.ROWS), str(ib.ROWS // 10), "staged"], status
        drop()
        build.append(create())
        size = ib.scalar("SELECT pg_size_pretty(sum(pg_relation_size(indexrelid))) || ' (table ' || "
                         "pg_size_pretty(pg_relation_size('bench_rows')) || ')' FROM pg_index "
                         "WHERE indexrelid::regclass::text LIKE 'console_trgm_bench_rows_%'")
    m = {k: statistics.median(v) for k, v in r.items()}
    out = [
        f"{ib.ROWS:,} rows, 3 text columns (name, email, status); median of {ib.REPS} alternating runs; "
        f"PostgreSQL {ib.scalar('SHOW server_version')} default settings.",
        "",
        "| importer load | no trigram index (s) | 3 trigram indexes (s) | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| case 1: first load | {m['c1_plain']:.2f} | {m['c1_trgm']:.2f} | {m['c1_trgm'] / m['c1_plain']:.2f}x |",
        f"| case 3: 10% changed (staged upsert) | {m['c3_plain']:.2f} | {m['c3_trgm']:.2f} | "
        f"{m['c3_trgm'] / m['c3_plain']:.2f}x |",
        "",
        f"Building the 3 indexes on the loaded table (CREATE INDEX CONCURRENTLY): "
        f"{statistics.median(build):.1f} s; size {size}.",
    ]
    text = "\n".join(out)
    print(text)
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "IMPORTER-COST.md"), "w") as f:
        f.write("# What the trigram indexes cost the importer\n\n"
                "`bench/console/importer-cost.sh` on this machine (2 shared cores).\n\n" + text + "\n")


if __name__ == "__main__":
    main()
