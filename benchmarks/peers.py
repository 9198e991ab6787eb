"""Baselines ("peers") that tracer's detection quality is compared against.

All peers take the raw seed-schema frame (``client_id, amount, date, time``) that
``tracer.synth.generate`` returns and are fully vectorized.

* :func:`naive_links` -- link peer: every withdrawal/deposit pair of exactly the same amount
  (different accounts) with the deposit within ``window_hours`` after the withdrawal; an account
  pair is a link when it has ``min_matches`` or more such matches.
* :func:`zscore_accounts` -- account peer 1 (the datajam analyst's method): flag accounts whose total
  volume (sum of |amount|) is a z-score outlier (z > 3).
* :func:`iforest_accounts` -- account peer 2 (a typical data scientist's): IsolationForest on
  per-account aggregates, the top 1 % most anomalous flagged.

Account peers return a frame shaped like tracer's ``Analysis.accounts`` (``client_id, role,
score``) so that ``tracer.evaluate.evaluate`` scores them the same way; a flagged account gets
role ``flagged`` (the peers do not assign tiers, so role accuracy does not apply).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

FLAGGED = "flagged"


# ------------------------------------------------------------------------------------ parsing
def _columns(tx: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(account code, account ids, amount in cents, seconds since epoch) of the seed schema."""
    codes, ids = pd.factorize(tx["client_id"].astype(str), sort=True)
    cents = np.rint(tx["amount"].to_numpy(np.float64) * 100).astype(np.int64)
    stamp = pd.to_datetime(tx["date"].astype(str) + " " + tx["time"].astype(str), format="%Y-%m-%d %H:%M:%S")
    seconds = stamp.to_numpy("datetime64[s]").astype(np.int64)
    return codes.astype(np.int64), np.asarray(ids, dtype=object), cents, seconds


# ------------------------------------------------------------------------------ link peer
def naive_links(tx: pd.DataFrame, window_hours: float = 72.0, min_matches: int = 3,
                max_pairs_per_chunk: int = 20_000_000) -> pd.DataFrame:
    """Exact-amount matching within a window; columns ``source, target, n_matches``.

    Deposits are sorted on the composite key (amount class, time); for each withdrawal a
    searchsorted gives the range of deposits of the same amount within [t, t + window]. Ranges are
    expanded chunk by chunk (at most ``max_pairs_per_chunk`` candidate pairs at a time), so memory is
    bounded whatever the data size. A withdrawal matching several deposits counts for each.
    """
    codes, ids, cents, seconds = _columns(tx)
    n_acc = len(ids)
    t = seconds - (seconds.min() if len(seconds) else 0)
    window = int(window_hours * 3600)
    amount_class, _ = pd.factorize(np.abs(cents))
    key = amount_class.astype(np.int64) << 32 | t  # t + window < 2**32 for any realistic span
    is_w, is_d = cents < 0, cents > 0
    d_order = np.flatnonzero(is_d)[np.argsort(key[is_d], kind="stable")]
    d_key, d_acc = key[d_order], codes[d_order]
    w_idx = np.flatnonzero(is_w)
    w_key, w_acc = key[w_idx], codes[w_idx]
    lo = np.searchsorted(d_key, w_key, side="left")
    hi = np.searchsorted(d_key, w_key + window, side="right")
    counts = hi - lo
    cum = np.cumsum(counts)
    parts: list[pd.Series] = []
    start = 0
    while start < len(w_idx):
        base = cum[start - 1] if start else 0
        stop = max(int(np.searchsorted(cum, base + max_pairs_per_chunk, side="right")), start + 1)
        c = counts[start:stop]
        q = np.repeat(np.arange(start, stop), c)
        offsets = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)
        pos = lo[q] + offsets
        src, dst = w_acc[q], d_acc[pos]
        keep = src != dst
        pair = src[keep] * n_acc + dst[keep]
        u, n = np.unique(pair, return_counts=True)
        parts.append(pd.Series(n, index=u))
        start = stop
    if parts:
        total = pd.concat(parts).groupby(level=0).sum()
    else:
        total = pd.Series(dtype=np.int64)
    total = total[total >= min_matches]
    pair = total.index.to_numpy(np.int64)
    out = pd.DataFrame({"source": ids[pair // n_acc], "target": ids[pair % n_acc], "n_matches": total.to_numpy()})
    return out.sort_values("n_matches", ascending=False, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- account peers
def _accounts_frame(ids: np.ndarray, score: np.ndarray, flagged: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"client_id": ids.astype(str), "role": np.where(flagged, FLAGGED, "normal"),
                         "score": score.astype(np.float64)})


def zscore_accounts(tx: pd.DataFrame, z_threshold: float = 3.0) -> pd.DataFrame:
    """Flag accounts whose total volume (sum of |amount|) has z-score > ``z_threshold``; score = z."""
    codes, ids, cents, _ = _columns(tx)
    volume = np.bincount(codes, weights=np.abs(cents) / 100.0, minlength=len(ids))
    sd = volume.std()
    z = (volume - volume.mean()) / sd if sd > 0 else np.zeros_like(volume)
    return _accounts_frame(ids, z, z > z_threshold)


AGGREGATES = ["n_deposits", "n_withdrawals", "total_in", "total_out", "mean_deposit", "std_deposit",
              "mean_withdrawal", "std_withdrawal", "round_share", "active_days"]


def account_aggregates(tx: pd.DataFrame) -> pd.DataFrame:
    """Per-account aggregates a data scientist would compute first (index ``client_id``).

    Amounts are in dollars (withdrawals as positive sizes); ``round_share`` is the share of the
    account's transactions that are whole multiples of $10; ``active_days`` the number of distinct
    dates; std is the population std (0 for fewer than two transactions).
    """
    codes, ids, cents, seconds = _columns(tx)
    n = len(ids)
    dollars = np.abs(cents) / 100.0
    out = {}
    for side, mask in (("deposit", cents > 0), ("withdrawal", cents < 0)):
        c, x = codes[mask], dollars[mask]
        cnt = np.bincount(c, minlength=n).astype(np.float64)
        s = np.bincount(c, weights=x, minlength=n)
        s2 = np.bincount(c, weights=x * x, minlength=n)
        mean = np.divide(s, cnt, out=np.zeros(n), where=cnt > 0)
        var = np.divide(s2, cnt, out=np.zeros(n), where=cnt > 0) - mean ** 2
        out[f"n_{side}s"] = cnt
        out["total_in" if side == "deposit" else "total_out"] = s
        out[f"mean_{side}"] = mean
        out[f"std_{side}"] = np.sqrt(np.clip(var, 0, None))
    total = np.bincount(codes, minlength=n).astype(np.float64)
    out["round_share"] = np.bincount(codes, weights=(np.abs(cents) % 1000 == 0).astype(np.float64), minlength=n) / np.maximum(total, 1)
    day = seconds // 86_400
    day = day - (day.min() if len(day) else 0)
    span = int(day.max()) + 1 if len(day) else 1
    out["active_days"] = np.bincount(np.unique(codes * span + day) // span, minlength=n).astype(np.float64)
    return pd.DataFrame(out, index=pd.Index(ids.astype(str), name="client_id"))[AGGREGATES]


def iforest_accounts(tx: pd.DataFrame, seed: int = 0, top_fraction: float = 0.01) -> pd.DataFrame:
    """IsolationForest(random_state=seed) on :func:`account_aggregates`; top ``top_fraction`` flagged.

    score = -score_samples (higher = more anomalous). Features are used as they are (no scaling is
    needed for trees).
    """
    agg = account_aggregates(tx)
    X = agg.to_numpy(np.float64)
    model = IsolationForest(random_state=seed).fit(X)
    score = -model.score_samples(X)
    k = max(1, math.ceil(top_fraction * len(agg)))
    flagged = np.zeros(len(agg), dtype=bool)
    flagged[np.argsort(-score, kind="stable")[:k]] = True
    return _accounts_frame(agg.index.to_numpy(), score, flagged)
