"""Benchmark tracer.load on a 10M-row seed-schema CSV and its Parquet copy.

    .venv/bin/python benchmarks/bench_load.py [--rows 10000000]

Data is written once and cached under benchmarks/_data/ (git-ignored).  Each measurement runs in a
fresh subprocess so that peak RSS (ru_maxrss) belongs to that load alone.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "_data"


def make_data(rows: int) -> tuple[Path, Path]:
    DATA.mkdir(exist_ok=True)
    csv_path, pq_path = DATA / f"seed_{rows}.csv", DATA / f"seed_{rows}.parquet"
    if csv_path.exists() and pq_path.exists():
        return csv_path, pq_path
    rng = np.random.default_rng(42)
    chunk = 1_000_000
    tmp = csv_path.with_suffix(".csv.part")
    writer = None
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        ids = pa.array(np.char.add("C", rng.integers(0, 200_000, n).astype("U7")))
        cents = rng.integers(1, 500_000, n) * rng.choice([-1, 1], n)
        amount = pa.array([f"{c / 100:.2f}" for c in cents])
        day = np.datetime64("2022-01-01") + rng.integers(0, 3 * 365, n).astype("timedelta64[D]")
        sec = rng.integers(0, 86400, n)
        ts = day.astype("datetime64[s]") + sec.astype("timedelta64[s]")
        date = pc.strftime(pa.array(ts), format="%Y-%m-%d")
        tod = pc.strftime(pa.array(ts), format="%H:%M:%S")
        tbl = pa.table({"client_id": ids, "amount": amount, "date": date, "time": tod})
        if writer is None:
            writer = pacsv.CSVWriter(str(tmp), tbl.schema,
                                     write_options=pacsv.WriteOptions(quoting_style="none"))
        writer.write_table(tbl)
    writer.close()
    os.replace(tmp, csv_path)
    # the Parquet copy with the types a converter would give it (amount double, date32, time as text)
    opts = pacsv.ConvertOptions(column_types={"client_id": pa.string(), "amount": pa.float64(),
                                              "date": pa.date32(), "time": pa.string()})
    tbl = pacsv.read_csv(str(csv_path), convert_options=opts)
    pq.write_table(tbl, str(pq_path.with_suffix(".part")), row_group_size=1_000_000)
    os.replace(pq_path.with_suffix(".part"), pq_path)
    return csv_path, pq_path


def measure(path: str) -> dict:
    sys.path.insert(0, str(ROOT.parent))
    from tracer.load import load_transactions

    t0 = time.perf_counter()
    res = load_transactions(path)
    wall = time.perf_counter() - t0
    return {"path": path, "wall_s": round(wall, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rows_in": res.rows_in, "loaded": len(res.transactions), "rejected": len(res.rejected),
            "duplicates": int(res.transactions["duplicate"].sum())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    t0 = time.perf_counter()
    csv_path, pq_path = make_data(args.rows)
    print(f"data ready in {time.perf_counter() - t0:.1f}s: {csv_path} ({csv_path.stat().st_size / 1e6:.0f} MB), "
          f"{pq_path} ({pq_path.stat().st_size / 1e6:.0f} MB)")
    import pandas
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"machine: nproc={os.cpu_count()} RAM={mem_gb:.1f} GiB python={platform.python_version()} "
          f"pandas={pandas.__version__} pyarrow={pa.__version__} numpy={np.__version__}")
    for p in (csv_path, pq_path):
        out = subprocess.run([sys.executable, __file__, "--one", str(p)], capture_output=True, text=True, check=True)
        print(out.stdout.strip())


if __name__ == "__main__":
    main()
