"""Benchmark tracer.load: wall time, CPU time and peak RSS of one load_transactions call.

    .venv/bin/python benchmarks/bench_load.py [--rows 10000000]      # seed-schema CSV + its Parquet copy
    .venv/bin/python benchmarks/bench_load.py --path DATA/transactions.parquet [--path ...]
    .venv/bin/python benchmarks/bench_load.py --path ... --baseline a2a16e7   # also that commit's loader

Seed data is written once and cached under benchmarks/_data/ (git-ignored).  Each measurement runs
in a fresh subprocess so that peak RSS (ru_maxrss) belongs to that load alone; ``--baseline REV``
runs ``git show REV:tracer/load.py`` (self-contained) the same way, on the same inputs, and checks
that both give identical frames.  Inputs are read once first so that every load finds them in the
page cache.  Big loads need their memory: run one at a time.

The figures recorded when the streamed Parquet loader replaced the whole-table read are printed at
the end (RECORDED): measured with this script on the machine described there.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "_data"

# Recorded 2026-12-05 on 2 cores (Xeon), 23.5 GiB RAM, Python 3.11.7, pandas 3.1.1, pyarrow 26.0.1,
# numpy 2.4.6.  "before" = the loader of a2a16e7 (every part read whole, concatenated, validated as
# text), "after" = the streamed loader; same inputs, identical frames.  1M/10M: one invocation with
# --baseline a2a16e7 while another job kept one core busy (a quiet run gave 10M before 24.9 s /
# 2.18 GB, after 2.2 s / 0.67 GB).  100M after: machine quiet.  100M before: not rerun (it needs
# ~19 GB); the start-up + load stage of `tracer analyze` at 373b642 in docs/scale.md, interpreter
# start-up included.
RECORDED = [
    # data set, rows, loader, wall s, cpu s (user + system), peak RSS GB
    ("scale_careful_2255a_5y_a0.15_s0 (1 part)", 996_775, "before", 0.71, 1.08, 0.389),
    ("scale_careful_2255a_5y_a0.15_s0 (1 part)", 996_775, "after", 0.25, 0.63, 0.304),
    ("scale_careful_23844a_5y_a0.15_s0 (4 parts)", 10_026_394, "before", 32.39, 29.5, 2.031),
    ("scale_careful_23844a_5y_a0.15_s0 (4 parts)", 10_026_394, "after", 2.74, 2.98, 0.682),
    ("scale_careful_239736a_5y_a0.15_s0 (33 parts)", 100_706_428, "before", 364.0, None, 18.8),
    ("scale_careful_239736a_5y_a0.15_s0 (33 parts)", 100_706_428, "after", 22.32, 28.69, 3.893),
]


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


def _loader(module_file: str | None):
    """load_transactions of ``module_file`` (default: the working tree's tracer/load.py), imported
    on its own: importing the ``tracer`` package would add link inference's imports (sklearn, ...)
    to the peak RSS of the tree's loader but not of the baseline's."""
    module_file = module_file or str(ROOT.parent / "tracer" / "load.py")
    spec = importlib.util.spec_from_file_location("bench_load_module", module_file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod.load_transactions


def measure(path: str, module_file: str | None, save: str | None) -> dict:
    load_transactions = _loader(module_file)
    t0 = time.perf_counter()
    res = load_transactions(path)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out = {"path": path, "loader": "baseline" if module_file else "tree", "wall_s": round(wall, 2),
           "cpu_s": round(ru.ru_utime + ru.ru_stime, 2), "peak_rss_gb": round(ru.ru_maxrss / 2**20, 3),
           "rows_in": res.rows_in, "loaded": len(res.transactions), "rejected": len(res.rejected),
           "duplicates": int(res.transactions["duplicate"].sum()),
           "frame_bytes_per_row": round(res.transactions.memory_usage(deep=True).sum() / max(res.rows_in, 1), 1)}
    if save:  # for the equality check against the other loader
        res.transactions.to_pickle(save + ".tx.pkl")
        res.rejected.to_pickle(save + ".rej.pkl")
    return out


def warm(path: Path) -> None:
    """Read the input's bytes once, so that every loader measured finds them in the page cache."""
    for f in ([path] if path.is_file() else sorted(q for q in path.rglob("*") if q.is_file())):
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


def run_one(path: Path, module_file: str | None = None, save: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--one", str(path)]
    if module_file:
        cmd += ["--module", module_file]
    if save:
        cmd += ["--save", save]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"measurement failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def frames_equal(a: str, b: str) -> bool:
    import pandas as pd

    return all(pd.read_pickle(f"{a}.{k}.pkl").equals(pd.read_pickle(f"{b}.{k}.pkl")) for k in ("tx", "rej"))


def print_recorded() -> None:
    print("\nrecorded (see RECORDED in this file):")
    print("| data set | rows | loader | wall s | cpu s | peak RSS GB |")
    print("|---|---|---|---|---|---|")
    for name, rows, who, wall, cpu, rss in RECORDED:
        cell = lambda v: "–" if v is None else f"{v:g}"  # noqa: E731
        print(f"| {name} | {rows:,} | {who} | {cell(wall)} | {cell(cpu)} | {cell(rss)} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000, help="seed data size when no --path is given")
    ap.add_argument("--path", action="append", help="a CSV / Parquet file or directory to load (repeatable)")
    ap.add_argument("--baseline", metavar="REV", help="also measure tracer/load.py of this git revision")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--module", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.module, args.save)))
        return
    if args.path:
        paths = [Path(p) for p in args.path]
    else:
        t0 = time.perf_counter()
        paths = list(make_data(args.rows))
        print(f"data ready in {time.perf_counter() - t0:.1f}s: " + ", ".join(str(p) for p in paths))
    import pandas

    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"machine: nproc={os.cpu_count()} RAM={mem_gb:.1f} GiB python={platform.python_version()} "
          f"pandas={pandas.__version__} pyarrow={pa.__version__} numpy={np.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        base_file = None
        if args.baseline:
            src = subprocess.run(["git", "show", f"{args.baseline}:tracer/load.py"], cwd=ROOT.parent,
                                 capture_output=True, text=True, check=True).stdout
            base_file = os.path.join(tmp, "baseline_load.py")
            Path(base_file).write_text(src)
        for i, p in enumerate(paths):
            warm(p)
            tree_save = os.path.join(tmp, f"tree{i}") if base_file else None
            print(json.dumps(run_one(p, save=tree_save)), flush=True)
            if base_file:
                base_save = os.path.join(tmp, f"base{i}")
                print(json.dumps(run_one(p, base_file, base_save)), flush=True)
                print(f"identical frames (tree vs {args.baseline}): {frames_equal(tree_save, base_save)}", flush=True)
    print_recorded()


if __name__ == "__main__":
    main()
