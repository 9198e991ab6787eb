"""How many true transfers of a generated set are link candidates at all, with the default caps and
with larger ones: do the caps (the earliest ``max_candidates`` / ``max_cut_candidates`` per
withdrawal and kind) lose real transfers at this density?

    .venv/bin/python benchmarks/check_candidates.py DATA --start 2025-03-01 --days 50 [--caps 40,400] [--links]

DATA is a folder written by ``tracer generate`` or ``bench_scale.py`` (``transactions.parquet``
and ``truth_transfers.csv``). Rows of the time slice are read from every Parquet part, keeping their
input row ids; withdrawals of the slice's middle (5 days in from the start, 10 before the end) are
scanned against every deposit of the slice, so none lacks a deposit it could match. Prints, per cap,
candidates per withdrawal and the share of true single-deposit transfers among the candidates, by
kind and channel. ``--links`` also runs link inference on the slice alone and prints how many true
transfers it assigns to their true deposit and how many true pairs it links, by how many true
transfers they have in the slice (and among pairs whose transfers were all assigned). Recorded in
docs/scale.md (the 10M and 100M sets).
"""
from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tracer import link as L

DAY = 86400


def read_slice(data: Path, start: str, days: int) -> pd.DataFrame:
    """Rows dated in [start, start + days) with their input row ids (parts in path order)."""
    parts = sorted(glob.glob(str(data / "transactions.parquet" / "*.parquet"))) or [str(data / "transactions.parquet")]
    end = str((pd.Timestamp(start) + pd.Timedelta(days=days)).date())
    frames, offset = [], 0
    for path in parts:
        table = pq.read_table(path)
        dates = table.column("date").cast("string")
        idx = np.flatnonzero(pc.and_(pc.greater_equal(dates, start), pc.less(dates, end)).to_numpy(zero_copy_only=False))
        frame = table.take(idx).to_pandas()
        frame["row_id"] = offset + idx
        frames.append(frame)
        offset += table.num_rows
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--start", default="2025-03-01")
    ap.add_argument("--days", type=int, default=50)
    ap.add_argument("--caps", default="40,400", help="comma-separated caps (max_candidates = max_cut_candidates)")
    ap.add_argument("--links", action="store_true", help="also run link inference on the slice and check it against the truth")
    args = ap.parse_args()
    df = read_slice(args.data, args.start, args.days)
    seconds = pd.to_datetime(df["date"].astype(str) + " " + df["time"].astype(str)).to_numpy("datetime64[s]").astype(np.int64)
    cents = np.round(df["amount"].to_numpy() * 100).astype(np.int64)
    codes, accounts = pd.factorize(df["client_id"])
    t = seconds - seconds.min()
    w, d = np.flatnonzero(cents < 0), np.flatnonzero(cents > 0)
    own = (t[w] >= 5 * DAY) & (t[w] <= t.max() - 10 * DAY)
    row_id = df["row_id"].to_numpy(np.int64)
    in_slice = read_truth(args.data, row_id)
    truth = in_slice[in_slice["withdrawal_row"].isin(row_id[w[own]]) & ~in_slice["deposit_rows"].str.contains(" ")]
    truth_key = truth["withdrawal_row"].to_numpy(np.int64) * 10**10 + truth["deposit_rows"].astype(np.int64).to_numpy()
    print(f"{len(df):,} rows, {own.sum():,} withdrawals scanned, {len(truth):,} true single-deposit transfers "
          f"{truth.groupby(['kind', 'channel']).size().to_dict()}", flush=True)
    n = len(accounts)
    for cap in (int(c) for c in args.caps.split(",")):
        opts = L.LinkOptions(max_candidates=cap, max_cut_candidates=cap)
        engine = L.make_engine(opts, np.bincount(codes[w], minlength=n), np.bincount(codes[d], minlength=n),
                               int(seconds.min()), int(seconds.max()))
        W = L._base_rows(codes[w].astype(np.int32), -cents[w], t[w])
        D = L._base_rows(codes[d].astype(np.int32), cents[d], t[d])
        began = time.perf_counter()
        scan = engine.scan(W, D, np.arange(len(W)), engine.rates(W, D), own, store=True)
        base = (scan.wi < len(W)) & (scan.dj < len(D))  # single rows on both sides (no merge or split sum)
        found = pd.Series(np.isin(truth_key, row_id[w[scan.wi[base]]] * 10**10 + row_id[d[scan.dj[base]]]), index=truth.index)
        by = found.groupby([truth["kind"], truth["channel"]]).mean().round(3).to_dict()
        print(f"caps {cap}: {scan.n_candidates / own.sum():.1f} candidates per withdrawal ({time.perf_counter() - began:.0f} s); "
              f"true transfers among them {found.mean():.3f} {by}", flush=True)
    if args.links:
        check_links(df, seconds, cents, in_slice.copy())


def read_truth(data: Path, row_id: np.ndarray) -> pd.DataFrame:
    """The true transfers whose withdrawal and every deposit part are rows of the slice."""
    truth = pd.read_csv(data / "truth_transfers.csv", usecols=["withdrawal_row", "deposit_rows", "source", "target", "kind", "channel"],
                        dtype={"deposit_rows": str, "source": str, "target": str})
    truth = truth[truth["withdrawal_row"].isin(row_id)]
    parts = truth["deposit_rows"].str.split().explode()
    inside = pd.Series(parts.astype(np.int64).isin(row_id).to_numpy(), index=parts.index).groupby(level=0).all()
    return truth[inside.reindex(truth.index).to_numpy()]


def check_links(df: pd.DataFrame, seconds: np.ndarray, cents: np.ndarray, truth: pd.DataFrame) -> None:
    """Link inference on the slice alone against the truth whose rows all lie in the slice."""
    tx = pd.DataFrame({"client_id": df["client_id"].astype(str).astype("category"), "amount_cents": cents,
                       "timestamp": seconds.astype("datetime64[s]"), "row_id": df["row_id"].to_numpy(np.int64)})
    result = L.infer_links(tx)
    true_rows = pd.MultiIndex.from_arrays([truth["withdrawal_row"].astype(str), truth["deposit_rows"]])
    truth["assigned"] = true_rows.isin(pd.MultiIndex.from_frame(result.transfers[["withdrawal_rows", "deposit_rows"]]))
    print(f"link inference on the slice: {result.stats['links']:,} links; {len(truth):,} true transfers, assigned to their "
          f"deposit {truth['assigned'].mean():.3f} {truth.groupby('kind')['assigned'].mean().round(3).to_dict()}")
    pairs = truth.groupby(["source", "target", "kind"]).agg(n=("assigned", "size"), a=("assigned", "sum")).reset_index()
    pairs["linked"] = pd.MultiIndex.from_frame(pairs[["source", "target"]]).isin(pd.MultiIndex.from_frame(result.links[["source", "target"]]))
    for k in (1, 2, 3, 5):
        p = pairs[pairs["n"] >= k]
        whole = p[p["a"] == p["n"]]
        print(f"  true pairs with >= {k} transfers: {len(p):,}, linked {p['linked'].mean():.3f} "
              f"{p.groupby('kind')['linked'].mean().round(3).to_dict()}; every transfer assigned {len(whole) / max(len(p), 1):.3f}, "
              f"of those linked {whole['linked'].mean():.3f}")


if __name__ == "__main__":
    main()
