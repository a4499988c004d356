#!/usr/bin/env python3
"""Benchmark data for the importer: gen.py ROWS OUT_DIR [--slice N]

Writes, for a 10-column table (bigint id, ints, text, decimals, a date, a timestamp, ~10% NULLs):
  data.csv / data.json       the export, as CSV and as the API's payload ({module_name, data})
  changed.csv / changed.json the same export with 10% of the rows changed
  rejects.csv / rejects.json the same export with 1% of the rows invalid (a date that doesn't exist)
  slice.sql                  the first N rows as single-row INSERTs (the "row-by-row" baseline)
gen.py --bomb OUT_DIR writes bomb.json: a payload whose zip (about 250 KB) inflates to a CSV with
one 256 MB field.
Deterministic: the same ROWS always gives the same bytes.
"""
import base64
import os
import sys
import zipfile

MODULE = "bench_rows"
HEADER = "id,customer_id,name,email,amount,quantity,ordered_on,updated_at,status,score\n"
STATUSES = ["open", "paid", "shipped", "delivered", "returned"]


def row(i, changed, reject=False):
    name = f'"Smith, {i % 5000}"' if i % 50 == 0 else f"customer {i % 5000}"
    email = "" if i % 10 == 1 else f"user{i}@example.com"
    cents = (i * 37) % 10_000_000
    if changed:
        cents += 1
    amount = f"{cents // 100}.{cents % 100:02d}"
    quantity = "" if i % 10 == 4 else str(i % 1000)
    ordered_on = f"20{10 + i % 16}-{i % 12 + 1:02d}-{i % 28 + 1:02d}"
    if reject:
        ordered_on = "2026-02-30"
    updated_at = f"2026-{i % 12 + 1:02d}-{i % 28 + 1:02d} {i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}"
    status = "changed" if changed else STATUSES[i % 5]
    score = "" if i % 10 == 7 else f"{i % 10000}.{i % 1000:03d}"
    return f"{i},{(i * 7919) % 100000},{name},{email},{amount},{quantity},{ordered_on},{updated_at},{status},{score}\n"


def write_csv(path, rows, change, rejects=False):
    with open(path, "w", buffering=1 << 20) as f:
        f.write(HEADER)
        batch = []
        for i in range(1, rows + 1):
            batch.append(row(i, change and i % 10 == 3, rejects and i % 100 == 42))
            if len(batch) == 10_000:
                f.write("".join(batch))
                batch.clear()
        f.write("".join(batch))


def write_payload(csv_path, json_path):
    zip_path = json_path + ".zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        z.write(csv_path, arcname=MODULE + ".csv")
    with open(zip_path, "rb") as src, open(json_path, "w") as out:
        out.write('{"module_name": "%s", "data": "' % MODULE)
        while True:
            chunk = src.read(3 * (1 << 20))
            if not chunk:
                break
            out.write(base64.b64encode(chunk).decode())
        out.write('"}\n')
    os.remove(zip_path)


def sql_value(v, quote):
    if v == "":
        return "NULL"
    return "'" + v.replace("'", "''") + "'" if quote else v


def write_slice(csv_path, sql_path, n):
    import csv

    quoted = [False, False, True, True, False, False, True, True, True, False]
    with open(csv_path, newline="") as f, open(sql_path, "w") as out:
        r = csv.reader(f)
        cols = next(r)
        for k, rec in enumerate(r):
            if k == n:
                break
            vals = ", ".join(sql_value(v, q) for v, q in zip(rec, quoted))
            out.write(f"INSERT INTO bench_rowwise ({', '.join(cols)}) VALUES ({vals});\n")


def write_bomb(out):
    """A payload whose CSV has one 256 MB field, deflated to about 250 KB."""
    zip_path = f"{out}/bomb.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        with z.open(MODULE + ".csv", "w") as f:
            f.write(HEADER.encode())
            f.write(b"1,1,")
            mib = b"x" * (1 << 20)
            for _ in range(256):
                f.write(mib)
            f.write(b",,1.00,,2026-01-01,2026-01-01 00:00:00,open,\n")
            f.write(row(2, False).encode())
    with open(zip_path, "rb") as src, open(f"{out}/bomb.json", "w") as out_f:
        out_f.write('{"module_name": "%s", "data": "%s"}\n' % (MODULE, base64.b64encode(src.read()).decode()))
    os.remove(zip_path)


def main():
    if sys.argv[1] == "--bomb":
        os.makedirs(sys.argv[2], exist_ok=True)
        write_bomb(sys.argv[2])
        return
    rows, out = int(sys.argv[1]), sys.argv[2]
    slice_n = int(sys.argv[sys.argv.index("--slice") + 1]) if "--slice" in sys.argv else 0
    os.makedirs(out, exist_ok=True)
    write_csv(f"{out}/data.csv", rows, False)
    write_payload(f"{out}/data.csv", f"{out}/data.json")
    write_csv(f"{out}/changed.csv", rows, True)
    write_payload(f"{out}/changed.csv", f"{out}/changed.json")
    write_csv(f"{out}/rejects.csv", rows, False, rejects=True)
    write_payload(f"{out}/rejects.csv", f"{out}/rejects.json")
    if slice_n:
        write_slice(f"{out}/data.csv", f"{out}/slice.sql", slice_n)


if __name__ == "__main__":
    main()
