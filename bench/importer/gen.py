#!/usr/bin/env python3
"""Benchmark data for the importer: gen.py ROWS OUT_DIR [--slice N]

Writes, for a 10-column table (bigint id, ints, text, decimals, a date, a timestamp, ~10% NULLs):
  data.csv / data.json       the export, as CSV and as the API's payload ({module_name, data})
  changed.csv / changed.json the same export with 10% of the rows changed
  slice.sql                  the first N rows as single-row INSERTs (the "row-by-row" baseline)
Deterministic: the same ROWS always gives the same bytes.
"""
import base64
import os
import sys
import zipfile

MODULE = "bench_rows"
HEADER = "id,customer_id,name,email,amount,quantity,ordered_on,updated_at,status,score\n"
STATUSES = ["open", "paid", "shipped", "delivered", "returned"]


def row(i, changed):
    name = f'"Smith, {i % 5000}"' if i % 50 == 0 else f"customer {i % 5000}"
    email = "" if i % 10 == 1 else f"user{i}@example.com"
    cents = (i * 37) % 10_000_000
    if changed:
        cents += 1
    amount = f"{cents // 100}.{cents % 100:02d}"
    quantity = "" if i % 10 == 4 else str(i % 1000)
    ordered_on = f"20{10 + i % 16}-{i % 12 + 1:02d}-{i % 28 + 1:02d}"
    updated_at = f"2026-{i % 12 + 1:02d}-{i % 28 + 1:02d} {i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}"
    status = "changed" if changed else STATUSES[i % 5]
    score = "" if i % 10 == 7 else f"{i % 10000}.{i % 1000:03d}"
    return f"{i},{(i * 7919) % 100000},{name},{email},{amount},{quantity},{ordered_on},{updated_at},{status},{score}\n"


def write_csv(path, rows, change):
    with open(path, "w", buffering=1 << 20) as f:
        f.write(HEADER)
        batch = []
        for i in range(1, rows + 1):
            batch.append(row(i, change and i % 10 == 3))
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


def main():
    rows, out = int(sys.argv[1]), sys.argv[2]
    slice_n = int(sys.argv[sys.argv.index("--slice") + 1]) if "--slice" in sys.argv else 0
    os.makedirs(out, exist_ok=True)
    write_csv(f"{out}/data.csv", rows, False)
    write_payload(f"{out}/data.csv", f"{out}/data.json")
    write_csv(f"{out}/changed.csv", rows, True)
    write_payload(f"{out}/changed.csv", f"{out}/changed.json")
    if slice_n:
        write_slice(f"{out}/data.csv", f"{out}/slice.sql", slice_n)


if __name__ == "__main__":
    main()
