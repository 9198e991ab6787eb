"""Time scenario generation: rows/s and peak memory.

    .venv/bin/python benchmarks/bench_generate.py                  # ~1M rows of `careful`, CSV
    .venv/bin/python benchmarks/bench_generate.py --scenario datajam --accounts 500000 --years 5 \
        --networks 3 --format parquet                               # the write-up's 100M-row target

Each run writes into a temporary directory (removed afterwards unless --out is given) and prints
generation+write time, rows/s and the process's peak resident memory (resource.getrusage).
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracer import synth  # noqa: E402


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return kb / 1024.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="careful", choices=synth.SCENARIOS)
    ap.add_argument("--accounts", type=int, default=4_000, help="careful: 4,000 accounts x 1 year ~ 1M rows")
    ap.add_argument("--years", type=float, default=1.0)
    ap.add_argument("--networks", type=int, default=None)
    ap.add_argument("--format", dest="fmt", default="csv", choices=("csv", "parquet"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="keep the output here instead of a temporary directory")
    ap.add_argument("--in-memory", action="store_true", help="time generate() (DataFrames) instead of writing")
    args = ap.parse_args(argv)

    kw = dict(seed=args.seed, accounts=args.accounts, years=args.years, networks=args.networks)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        t0 = time.perf_counter()
        if args.in_memory:
            summary = synth.generate(args.scenario, **kw).describe()
        else:
            summary = synth.write_scenario(args.scenario, out, fmt=args.fmt, progress=True, **kw)
        dt = time.perf_counter() - t0
    rows = summary["rows"]
    mode = "generate() in memory" if args.in_memory else f"write_scenario(fmt={args.fmt})"
    print(f"{args.scenario}: {args.accounts:,} accounts x {args.years:g} y, {summary['blocks']} block(s), {mode}")
    print(f"rows          {rows:,}")
    print(f"seconds       {dt:.2f}")
    print(f"rows/s        {rows / dt:,.0f}")
    print(f"peak RSS      {peak_rss_mb():,.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
