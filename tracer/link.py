"""Link inference: reconstruct who paid whom from withdrawals and later deposits.

The records carry no counterparty, so a transfer is inferred when a withdrawal of X from account
``a`` is followed, within ``window``, by a deposit of about X into another account ``b``.
The engine is a pure function of arrays, stage by stage:

1. candidates: sort-and-search over (amount key, time) finds every deposit (or 2-3 deposits of one
   account: a *split*) matching a withdrawal (or 2-3 withdrawals of one account: a *merge*);
2. evidence: each candidate gets the probability that account ``b`` would receive such an amount
   that soon by coincidence, estimated from how common the amount is in the data;
3. assignment: each withdrawal and deposit row is used at most once (iterative mutual best);
4. links: transfers are aggregated per account pair into a score (repetition is strong evidence);
5. calibration: the same pipeline runs on mirrored time (deposits *before* withdrawals: a null that
   cannot contain real flows) and q-values are the decoy/target ratio above each score.

``docs/method.md`` explains the formulas. Everything is vectorized numpy; the candidate kernel works
on any amount/time slice, so a distributed engine can run it partition by partition.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numba
import numpy as np
import pandas as pd
from scipy.special import gammaln
from tqdm import tqdm

from tracer._io import atomic_write

KINDS = ("exact", "cut", "split", "merge", "stated")  # stated: named by a counterparty column
_TIME_BITS = 30  # composite sort key: key << 30 | seconds since start (34 years of range)
MIN_NULL = 25  # a null family needs this many decoys of its own; fewer borrow the wider family's


@dataclass(frozen=True)
class LinkOptions:
    """Parameters of link inference (all documented in docs/method.md)."""

    window_hours: float = 72.0
    """Longest lag between a withdrawal and the deposit it becomes."""
    cut_tolerance: float = 0.15
    """Cash relay: after a cash-like withdrawal the deposit may be this fraction smaller (a kept cut)."""
    cash_unit_cents: int = 2000
    """Withdrawals that are multiples of this (ATM notes, $20) and at least ``min_cash_cents`` are cash-like."""
    min_cash_cents: int = 5000
    """Smallest withdrawal considered for a cash relay."""
    fee_tolerance: float = 0.02
    """Any other withdrawal may arrive this fraction smaller (fees)."""
    splits: bool = True
    """Match one withdrawal to 2-3 deposits of one account summing to it exactly."""
    merges: bool = True
    """Match 2-3 withdrawals of one account to one deposit equal to their sum."""
    combo_span_hours: float = 24.0
    """The parts of a split or merge happen within this span."""
    combo_neighbours: int = 3
    """Parts of a split/merge are taken among this many consecutive rows of the account."""
    max_candidates: int = 40
    """Per withdrawal and kind, keep the earliest this many matching deposits."""
    max_cut_candidates: int = 40
    """Per cash-like or fee withdrawal, keep the earliest this many deposits in its tolerance band
    (a band holds far more deposits than one amount, so its cap decides the work at density)."""
    min_lag_seconds: float = 60.0
    """Lags shorter than this count as this long (bank timestamps are coarse)."""
    block_withdrawals: int | None = None
    """Withdrawals per time block (candidates live one block at a time); None sizes blocks so each
    holds about ``block_candidates`` candidates, measured on a probe of the data."""
    block_candidates: int = 8_000_000
    """Candidate budget of one block when ``block_withdrawals`` is None (~300 bytes each at peak)."""
    processes: int | None = None
    """Processes for the two independent runs (forward and first mirrored, forked; 1: one after the
    other) and for the blocks of the last run; None: 2 when the machine has the cores, the input
    50,000+ withdrawals and memory is available for both. Results do not depend on it."""
    progress: bool = False
    """Show a progress bar (stderr) over the time blocks of each run that has several."""
    max_q: float = 0.05
    """Links with a q-value above this are dropped from ``links`` (all remain in ``all_links``)."""
    protect_q: float = 0.05
    """Rows of links this confident in a first pass are kept out of the mirrored (null) run (the
    links that would be reported: rows left in the null from real flows make q-values conservative,
    much more so at density)."""

    def __post_init__(self) -> None:
        if self.block_withdrawals is not None and self.block_withdrawals < 1:
            raise ValueError("block_withdrawals must be a positive number of withdrawals, or None for automatic blocks")
        if self.window_hours <= 0 or min(self.max_candidates, self.max_cut_candidates) < 1 or not 0 < self.max_q <= 1:
            raise ValueError("window_hours, max_candidates and max_cut_candidates must be positive and max_q in (0, 1]")


@dataclass
class _Rows:
    """One side (withdrawals or deposits), possibly virtual (sums of 2-3 rows of one account)."""

    account: np.ndarray  # int32 account code
    amount: np.ndarray  # int64 cents, positive
    t_first: np.ndarray  # int64 seconds, earliest part
    t_last: np.ndarray  # int64 seconds, latest part
    members: np.ndarray  # (n, 3) int64 row positions into the side's base rows, -1 padded

    def __len__(self) -> int:
        return len(self.amount)


def _base_rows(account: np.ndarray, amount: np.ndarray, t: np.ndarray) -> _Rows:
    n = len(amount)
    members = np.full((n, 3), -1, dtype=np.int32)
    members[:, 0] = np.arange(n, dtype=np.int32)
    return _Rows(account, amount, t, t, members)


def _combo_parts(base: _Rows, span: int, neighbours: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(order, i, j, l) index chunks of every 2- or 3-row sum of one account within ``span`` seconds.

    Rows are taken among ``neighbours`` consecutive rows of the account in time order (``order``
    sorts by account then time; i < j < l index into it, l = -1 for pairs), so the number of sums
    is at most a small multiple of the rows.
    """
    order = np.lexsort((base.t_first, base.account))
    acc, t = base.account[order], base.t_first[order]
    n = len(order)
    for k1 in range(1, neighbours + 1):
        i = np.arange(n - k1)
        j = i + k1
        ok = (acc[i] == acc[j]) & (t[j] - t[i] <= span)
        i, j = i[ok], j[ok]
        yield order, i, j, np.full_like(i, -1)
        for k2 in range(k1 + 1, neighbours + 1):
            sel = i + k2 < n
            i3, j3 = i[sel], j[sel]
            l3 = i3 + k2
            ok3 = (acc[i3] == acc[l3]) & (t[l3] - t[i3] <= span)
            yield order, i3[ok3], j3[ok3], l3[ok3]


def _combo_amounts(base: _Rows, span: int, neighbours: int) -> np.ndarray:
    """Sorted amounts of all the sums :func:`_combos` would build (for population rates)."""
    parts = [base.amount[o[i]] + base.amount[o[j]] + np.where(l >= 0, base.amount[o[np.maximum(l, 0)]], 0)
             for o, i, j, l in _combo_parts(base, span, neighbours)]
    return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


def _combos(base: _Rows, span: int, neighbours: int) -> _Rows:
    """All sums of 2 or 3 rows of the same account within ``span`` seconds, as virtual rows."""
    chunks = list(_combo_parts(base, span, neighbours))
    order = chunks[0][0] if chunks else np.empty(0, dtype=np.int64)
    i = np.concatenate([c[1] for c in chunks]).astype(np.int64) if chunks else np.empty(0, dtype=np.int64)
    j = np.concatenate([c[2] for c in chunks]).astype(np.int64) if chunks else np.empty(0, dtype=np.int64)
    l = np.concatenate([c[3] for c in chunks]).astype(np.int64) if chunks else np.empty(0, dtype=np.int64)
    acc, amt, t = base.account[order], base.amount[order], base.t_first[order]
    three = l >= 0
    l_safe = np.where(three, l, i)
    amount = amt[i] + amt[j] + np.where(three, amt[l_safe], 0)
    t_last = np.where(three, t[l_safe], t[j])
    members = np.stack([order[i], order[j], np.where(three, order[l_safe], -1)], axis=1).astype(np.int32)
    return _Rows(acc[i], amount, t[i], t_last, members)


def _subset(rows: _Rows, idx: np.ndarray) -> _Rows:
    """Base rows ``idx`` as a side of their own (members renumbered 0..len(idx)-1)."""
    return _base_rows(rows.account[idx], rows.amount[idx], rows.t_first[idx])


@dataclass
class Counts:
    """How many values of a population lie in an amount range: distinct values and running counts
    (compact enough to broadcast to every partition of a distributed run)."""

    values: np.ndarray  # sorted distinct int64 amounts
    cumulative: np.ndarray  # cumulative[i] = how many values are < values[i]; one extra entry: the total

    @classmethod
    def of(cls, amounts: np.ndarray) -> "Counts":
        values, counts = np.unique(amounts, return_counts=True)
        return cls.from_counts(values, counts)

    @classmethod
    def from_counts(cls, values: np.ndarray, counts: np.ndarray) -> "Counts":
        order = np.argsort(values, kind="stable")
        return cls(np.asarray(values, dtype=np.int64)[order], np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64)[order])]))

    def between(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """How many values lie in [lo, hi]."""
        return self.cumulative[np.searchsorted(self.values, hi, side="right")] - self.cumulative[np.searchsorted(self.values, lo, side="left")]


@dataclass
class Rates:
    """Population counts behind the evidence, from all rows of an orientation (not one block)."""

    deposits: Counts  # deposit amounts
    split_sums: Counts  # amounts of 2-3-deposit sums (:func:`_combo_amounts`)
    merges_per_withdrawal: float  # 2-3-withdrawal sums per withdrawal


def _expand(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For query ranges [lo, hi) return (query index, position) for every position in them."""
    counts = np.maximum(hi - lo, 0)
    query = np.repeat(np.arange(len(lo), dtype=np.int64), counts)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return query, starts + np.arange(counts.sum(), dtype=np.int64)


def _search_ranges(w_key: np.ndarray, w_time: np.ndarray, d_key: np.ndarray, d_time: np.ndarray, window: int,
                   cap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The sorted searches of :func:`candidate_pairs`: (w_order, d_order, lo, hi), query ``w_order[q]``
    matching the deposits ``d_order[lo[q]:hi[q]]``."""
    d_comp = (d_key.astype(np.int64) << _TIME_BITS) | d_time
    d_order = np.argsort(d_comp, kind="stable")
    d_sorted = d_comp[d_order]
    w_comp = (w_key.astype(np.int64) << _TIME_BITS) | w_time
    w_order = np.argsort(w_comp)  # sorted queries make the binary searches cache-friendly
    w_sorted = w_comp[w_order]
    lo = np.searchsorted(d_sorted, w_sorted, side="left")
    hi = np.minimum(np.searchsorted(d_sorted, w_sorted + window, side="right"), lo + cap)
    return w_order, d_order, lo, hi


def candidate_pairs(
    w_key: np.ndarray,
    w_time: np.ndarray,
    d_key: np.ndarray,
    d_time: np.ndarray,
    window: int,
    cap: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) with d_key[j] == w_key[i] and 0 <= d_time[j] - w_time[i] <= window.

    The kernel of link inference: deposits are sorted once by (key, time) and each withdrawal's
    range is found by binary search, so the cost is O((n + pairs) log n). At most ``cap`` pairs
    per withdrawal are kept, the earliest deposits first. Times must be non-negative and below
    2**30 seconds; keys non-negative. Any amount/time slice of the data can be passed on its own
    (with the window as overlap), which is how the work splits across partitions.
    """
    w_order, d_order, lo, hi = _search_ranges(w_key, w_time, d_key, d_time, window, cap)
    query, pos = _expand(lo, hi)
    return w_order[query], d_order[pos]


@dataclass
class _Candidates:
    """Transfers (or candidates) spelled out: members are row ids, -1 padded."""

    kind: np.ndarray  # int8 index into KINDS
    w_members: np.ndarray  # (n, 3) withdrawal rows
    d_members: np.ndarray  # (n, 3) deposit rows
    source: np.ndarray
    target: np.ndarray
    amount_out: np.ndarray
    amount_in: np.ndarray
    lag: np.ndarray  # seconds, from first withdrawn part to last deposited part
    t_out: np.ndarray  # time of the first withdrawn part (seconds in the run's orientation)


@dataclass
class _Matches:
    """A block's candidates, compact (17 bytes each): withdrawal row ``wi`` of ``W`` may have become
    deposit row ``dj`` of ``D``. ``W`` holds the block's withdrawals then its merge sums, ``D`` its
    deposits then its split sums, so every kind indexes one pair of tables."""

    W: _Rows
    D: _Rows
    wi: np.ndarray  # int32
    dj: np.ndarray  # int32
    kind: np.ndarray  # int8 index into KINDS
    evidence: np.ndarray  # float64, nats

    def __len__(self) -> int:
        return len(self.wi)

    def take(self, idx: np.ndarray) -> _Candidates:
        """Candidates ``idx`` spelled out (members are positions in the block's base rows)."""
        wi, dj, W, D = self.wi[idx], self.dj[idx], self.W, self.D
        return _Candidates(kind=self.kind[idx], w_members=W.members[wi], d_members=D.members[dj],
                           source=W.account[wi], target=D.account[dj], amount_out=W.amount[wi],
                           amount_in=D.amount[dj], lag=D.t_last[dj] - W.t_first[wi], t_out=W.t_first[wi])


def _cut_bins(amount: np.ndarray, tol: float) -> np.ndarray:
    """Log-scale amount bins one tolerance wide: [x(1-tol), x) spans the bin of x and the one below."""
    return np.floor(np.log(amount.astype(np.float64)) / -np.log1p(-tol)).astype(np.int64)


def _append(a: _Rows, b: _Rows) -> _Rows:
    return _Rows(*(np.concatenate([getattr(a, f), getattr(b, f)]) for f in _Rows.__dataclass_fields__))


class LinkEngine:
    """Candidate search, evidence and pair scores with the global quantities they need: per-account
    deposit shares and withdrawal counts and the data's time span (small: one entry per account,
    so a distributed engine broadcasts the whole object)."""

    def __init__(self, opts: LinkOptions, account_share: np.ndarray, n_withdrawals: np.ndarray, span_seconds: float):
        self.opts = opts
        self.window = int(round(opts.window_hours * 3600))
        self.reach = self.window + int(opts.combo_span_hours * 3600)
        self.share = account_share
        self.n_withdrawals = n_withdrawals
        self.span = max(span_seconds, 1.0)

    def pair_code(self, c: _Candidates) -> np.ndarray:
        """One int64 per (source, target) account pair."""
        return c.source.astype(np.int64) * len(self.share) + c.target

    def sum_pairs(self, parts: list[pd.DataFrame]) -> pd.DataFrame:
        """Add up :meth:`pair_sums` of disjoint sets of withdrawals (e.g. the blocks')."""
        if not parts:
            return pd.DataFrame({"e": [], "e_cut": [], "n": []}, index=pd.Index([], dtype=np.int64, name="pair"))
        return pd.concat(parts).groupby(level=0).sum()

    def rates(self, W: _Rows, D: _Rows) -> Rates:
        o = self.opts
        span = int(o.combo_span_hours * 3600)
        split_sums = _combo_amounts(D, span, o.combo_neighbours) if o.splits else np.empty(0, dtype=np.int64)
        n_merges = sum(len(c[1]) for c in _combo_parts(W, span, o.combo_neighbours)) if o.merges else 0
        return Rates(Counts.of(D.amount), Counts.of(split_sums), n_merges / max(len(W), 1))

    def matches(self, W: _Rows, D: _Rows, rates: Rates, own: np.ndarray | None = None) -> _Matches:
        """Candidates of every kind, with their evidence, for the withdrawals flagged in ``own``
        (default: all of W); ``W`` and ``D`` are base rows.

        A merge belongs to the block that owns its earliest withdrawal, so that each withdrawal's
        candidates of every kind come from one block.
        """
        o = self.opts
        own = np.ones(len(W), dtype=bool) if own is None else own
        span = int(o.combo_span_hours * 3600)
        n_w, n_d = len(W), len(D)
        merges = _combos(W, span, o.combo_neighbours) if o.merges else _take_rows(W, np.empty(0, dtype=np.int64))
        merges = _take_rows(merges, np.flatnonzero(own[merges.members[:, 0]]))
        splits = _combos(D, span, o.combo_neighbours) if o.splits else _take_rows(D, np.empty(0, dtype=np.int64))
        m = _Matches(_append(W, merges), _append(D, splits), *_no_matches())
        if n_d == 0 or not own.any():
            return m
        parts = []
        # exact: the key is the amount in cents, or its dense rank when cents would overflow the
        # composite key (amounts of $85.9M and more)
        wi = np.flatnonzero(own)
        w_key, d_key = W.amount[wi], D.amount
        if max(w_key.max(initial=0), d_key.max(initial=0)) >= 2 ** (63 - _TIME_BITS):
            uniq = np.unique(d_key)
            w_key, d_key = np.searchsorted(uniq, w_key), np.searchsorted(uniq, d_key)
        parts.append(self._exact(m, wi, w_key, W.t_first[wi], d_key, D.t_first, 0, rates.deposits.between(W.amount[wi], W.amount[wi]), 0))
        cash = (W.amount % o.cash_unit_cents == 0) & (W.amount >= o.min_cash_cents)
        for subset, tol in ((cash & own, o.cut_tolerance), (~cash & own, o.fee_tolerance)):
            if tol > 0 and subset.any():
                parts.append(self._cut(m, rates.deposits, np.flatnonzero(subset), n_d, tol))
        if len(splits):
            parts.append(self._exact_virtual(m, wi, np.arange(n_d, n_d + len(splits)), kind=2, counts=rates.split_sums, factor=1.0))
        if len(merges):
            parts.append(self._exact_virtual(m, np.arange(n_w, n_w + len(merges)), np.arange(n_d), kind=3, counts=rates.deposits,
                                             factor=rates.merges_per_withdrawal))
        m.wi, m.dj, m.evidence, m.kind = (np.concatenate(x) for x in zip(*parts))
        return m

    def _exact(self, m: _Matches, wi: np.ndarray, w_key: np.ndarray, w_time: np.ndarray, d_key: np.ndarray, d_time: np.ndarray,
               d_offset: int, count: np.ndarray, kind: int, factor: float = 1.0) -> tuple[np.ndarray, ...]:
        """Equal-key matches of withdrawal rows ``wi`` (searched from ``w_time``) among the deposit
        rows ``d_offset + 0..len(d_key)-1``; ``count``: population count of each query's amount."""
        w_order, d_order, lo, hi = _search_ranges(w_key, w_time, d_key, d_time, self.window, self.opts.max_candidates)
        rate = np.maximum(count[w_order] * factor / self.span, 1.0 / self.span)
        found = _emit_ranges(lo, hi, wi[w_order], rate, m.W.account, m.W.t_first, d_order, d_offset, m.D.account, m.D.t_last,
                             self.share, self.window, self.opts.min_lag_seconds)
        return found + (np.full(len(found[0]), kind, dtype=np.int8),)

    def _exact_virtual(self, m: _Matches, wi: np.ndarray, dj: np.ndarray, kind: int, counts: Counts, factor: float) -> tuple[np.ndarray, ...]:
        """Exact matches of withdrawal rows ``wi`` and deposit rows ``dj`` when one side is virtual
        (a merge is searched from its last withdrawn part, a split from its withdrawal)."""
        W, D = m.W, m.D
        uniq = np.unique(D.amount[dj])
        w_rank = np.searchsorted(uniq, W.amount[wi])
        wi = wi[(w_rank < len(uniq)) & (uniq[np.minimum(w_rank, len(uniq) - 1)] == W.amount[wi])]
        w_time = W.t_last[wi] if kind == 3 else W.t_first[wi]
        return self._exact(m, wi, np.searchsorted(uniq, W.amount[wi]), w_time, np.searchsorted(uniq, D.amount[dj]), D.t_first[dj],
                           int(dj[0]), counts.between(W.amount[wi], W.amount[wi]), kind, factor)

    def _cut(self, m: _Matches, deposit_counts: Counts, rows: np.ndarray, n_d: int, tol: float) -> tuple[np.ndarray, ...]:
        """Deposits in [x(1 - tol), x) after withdrawals ``rows``: log-binned amounts, a withdrawal's
        bin and the one below, scanned in time order (:func:`_band_scan`)."""
        k = self.opts.max_cut_candidates
        W, D = m.W, _take_rows(m.D, np.arange(n_d))
        d_bin = _cut_bins(D.amount, tol)
        w_bin = _cut_bins(W.amount[rows], tol)
        base = min(d_bin.min(initial=0), w_bin.min(initial=0)) - 2
        d_comp = ((d_bin - base) << _TIME_BITS) | D.t_first
        order = np.argsort(d_comp, kind="stable")
        d_comp = d_comp[order]
        t_w = W.t_first[rows]
        ranges = []
        for shift in (0, 1):  # [x(1 - tol), x) spans the withdrawal's bin and the one below
            start = ((w_bin - shift - base) << _TIME_BITS) | t_w
            lo = np.searchsorted(d_comp, start, side="left")
            ranges += [lo, np.minimum(np.searchsorted(d_comp, start + self.window, side="right"), lo + 2 * k)]
        low = np.ceil(W.amount[rows] * (1 - tol)).astype(np.int64)
        rate = np.maximum(deposit_counts.between(low, W.amount[rows] - 1) / self.span, 1.0 / self.span)
        found = _band_scan(*ranges, order, D.t_first[order], D.amount[order], low, W.amount[rows], k,
                           rows, rate, W.account, W.t_first, D.account, self.share, self.window, self.opts.min_lag_seconds)
        return found + (np.full(len(found[0]), 1, dtype=np.int8),)

    def pair_sums(self, w_source: np.ndarray, target: np.ndarray, withdrawal: np.ndarray, evidence: np.ndarray,
                  is_cut: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per pair: evidence summed over its distinct withdrawals (each counted once, its strongest
        candidate; summed in withdrawal order), the part of it from approximate (cut) matches, and the
        number of withdrawals. Returns (each candidate's pair, pair codes in order, e, e_cut, n).
        Sums of disjoint sets of withdrawals add up, so blocks can be summed. ``withdrawal``: each
        candidate's withdrawal as a rank 0..k-1 that orders withdrawals by source account, then row
        id (:func:`_withdrawal_ranks`); ``w_source``: the source account of each rank."""
        at, src, tgt, e, e_cut, n = _pair_sums(w_source, target, withdrawal, evidence, is_cut, len(self.share))
        return at, src * len(self.share) + tgt, e, e_cut, n

    def score(self, pair: np.ndarray, e: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Pair score = summed evidence - log C(N_a, n), N_a = the source's withdrawals."""
        n_a = self.n_withdrawals[pair // len(self.share)].astype(np.float64)
        n = n.astype(np.float64)
        return e - (gammaln(n_a + 1) - gammaln(n + 1) - gammaln(np.maximum(n_a - n, 0) + 1))

    def pair_scores(self, sums: pd.DataFrame) -> pd.DataFrame:
        """:meth:`score` of each pair of a frame of sums (index: pair code), with the source ``a``
        and ``stratum``: the family the pair's evidence belongs to, each with its own null: exact
        amounts (exact, split, merge) or approximate ones (cut), times a single transfer or a
        repeated relationship (one coincidence is common, the same pair again is not).
        """
        per_pair = sums.copy()
        pair = per_pair.index.to_numpy(np.int64)
        e_all, e_cut, n = per_pair["e"].to_numpy(), per_pair["e_cut"].to_numpy(), per_pair["n"].to_numpy()
        per_pair["a"] = pair // len(self.share)
        per_pair["stratum"] = (2 * (e_cut > e_all - e_cut) + (n > 1)).astype(np.int8)
        per_pair["score"] = self.score(pair, e_all, n)
        return per_pair


def _sums_frame(pair: np.ndarray, e: np.ndarray, e_cut: np.ndarray, n: np.ndarray) -> pd.DataFrame:
    """Pair sums as a frame indexed by pair code (what pass 1 sends on and blocks add up)."""
    return pd.DataFrame({"e": e, "e_cut": e_cut, "n": n}, index=pd.Index(pair, name="pair"))


def _no_matches() -> tuple[np.ndarray, ...]:
    return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int8), np.empty(0)


def _concat(parts: list[_Candidates]) -> _Candidates:
    return _Candidates(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in _Candidates.__dataclass_fields__})


def _no_candidates() -> _Candidates:
    empty = {f: np.empty(0, dtype=np.int64) for f in _Candidates.__dataclass_fields__}
    empty["kind"] = np.empty(0, dtype=np.int8)
    empty["w_members"] = empty["d_members"] = np.empty((0, 3), dtype=np.int32)
    return _Candidates(**empty)


def _take_rows(r: _Rows, idx: np.ndarray) -> _Rows:
    return _Rows(r.account[idx], r.amount[idx], r.t_first[idx], r.t_last[idx], r.members[idx])


def _take(c: _Candidates, idx: np.ndarray) -> _Candidates:
    return _Candidates(**{f: getattr(c, f)[idx] for f in _Candidates.__dataclass_fields__})


def assign(w_members: np.ndarray, d_members: np.ndarray, evidence: np.ndarray) -> np.ndarray:
    """Choose candidates so that no withdrawal or deposit row is used twice.

    Greedy by strength: candidates are taken strongest first (ties: lower index first) and kept when
    none of their rows is used yet. This is the same choice as iterating "accept every candidate
    that is the strongest of all rows it uses" until nothing changes, in one pass. Members may be
    any non-negative row ids (-1 pads); returns the indices of the accepted candidates, sorted.
    """
    index = np.arange(len(evidence), dtype=np.int64)
    return _assign(index, index, _dense_members(w_members), _dense_members(d_members), evidence)


def _assign(wi: np.ndarray, dj: np.ndarray, w_members: np.ndarray, d_members: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """:func:`assign` for candidates that use the rows ``w_members[wi]`` and ``d_members[dj]``."""
    if len(weight) == 0:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(_greedy(_strongest_first(weight), wi, dj, w_members, d_members, int(w_members.max()) + 1, int(d_members.max()) + 1))


def _strongest_first(weight: np.ndarray) -> np.ndarray:
    """Indices by decreasing weight, ties in index order: a stable sort, built from numpy's
    (vectorized, unstable) quicksort and a pass that puts runs of equal weights in index order."""
    order = np.argsort(-weight)
    _order_ties(order, weight[order])
    return order


@numba.njit(cache=True, nogil=True)
def _order_ties(order, sorted_weight):  # pragma: no cover - compiled
    lo = 0
    while lo < len(order):
        hi = lo + 1
        while hi < len(order) and sorted_weight[hi] == sorted_weight[lo]:
            hi += 1
        if hi - lo > 1:
            order[lo:hi] = np.sort(order[lo:hi])
        lo = hi


def _dense_members(members: np.ndarray) -> np.ndarray:
    """Row ids renumbered 0..k-1 (-1 pads kept) when they are sparse, so used-flags stay small."""
    members = np.ascontiguousarray(members)
    if members.max(initial=-1) < 4 * len(members) + 1024:
        return members
    valid = members >= 0
    uniq, inverse = np.unique(members[valid], return_inverse=True)
    dense = np.full(members.shape, -1, dtype=np.int64)
    dense[valid] = inverse
    return dense


@numba.njit(cache=True, nogil=True, inline="always")
def _evidence(share, rate, lag, min_lag):  # pragma: no cover - compiled
    """:meth:`LinkEngine` evidence of one candidate: -log P(the target receives such an amount
    within this lag by coincidence) = -log(1 - exp(-share * rate * lag)), in nats. Coincidental
    deposits of the amount arrive at ``rate`` per second in the whole population and a share
    ``share`` of them land in the target account (see docs/method.md)."""
    mu = share * rate * max(float(lag), min_lag)
    return -np.log(-np.expm1(-mu))


@numba.njit(cache=True, nogil=True)
def _emit_ranges(lo, hi, q_row, q_rate, w_acc, w_t, d_order, d_offset, d_acc, d_tlast, share, window, min_lag):  # pragma: no cover
    """Candidates of query ``q`` (withdrawal row ``q_row[q]``): deposit rows ``d_offset + d_order[lo[q]:hi[q]]``
    in another account within the window; returns (withdrawal rows, deposit rows, evidence)."""
    total = 0
    for q in range(len(lo)):
        total += max(hi[q] - lo[q], 0)
    wi = np.empty(total, dtype=np.int32)
    dj = np.empty(total, dtype=np.int32)
    e = np.empty(total, dtype=np.float64)
    k = 0
    for q in range(len(lo)):
        i = q_row[q]
        for p in range(lo[q], hi[q]):
            j = d_order[p] + d_offset
            lag = d_tlast[j] - w_t[i]
            if d_acc[j] != w_acc[i] and lag <= window:
                wi[k], dj[k] = i, j
                e[k] = _evidence(share[d_acc[j]], q_rate[q], lag, min_lag)
                k += 1
    return wi[:k], dj[:k], e[:k]


@numba.njit(cache=True, nogil=True)
def _band_scan(lo0, hi0, lo1, hi1, d_order, d_time, d_amount, low, high, k, q_row, q_rate, w_acc, w_t, d_acc, share, window,
               min_lag):  # pragma: no cover - compiled
    """Per query: the earliest ``k`` deposits with ``low <= amount < high`` among two time-sorted
    ranges of sorted deposits (a withdrawal's amount bin and the one below, ties to the first range),
    those in another account as candidates; returns (withdrawal rows, deposit rows, evidence).
    Scanned twice: to count, then to fill."""
    n = len(lo0)
    total = 0
    for fill in (False, True):
        if fill:
            wi = np.empty(total, dtype=np.int32)
            dj = np.empty(total, dtype=np.int32)
            e = np.empty(total, dtype=np.float64)
        out = 0
        for q in range(n):
            a, b, c, i = lo0[q], lo1[q], 0, q_row[q]
            while c < k and (a < hi0[q] or b < hi1[q]):
                if b >= hi1[q] or (a < hi0[q] and d_time[a] <= d_time[b]):
                    p = a
                    a += 1
                else:
                    p = b
                    b += 1
                if low[q] <= d_amount[p] < high[q]:
                    c += 1
                    j = d_order[p]
                    if d_acc[j] != w_acc[i]:
                        if fill:
                            lag = d_time[p] - w_t[i]
                            wi[out], dj[out] = i, j
                            e[out] = _evidence(share[d_acc[j]], q_rate[q], lag, min_lag)
                        out += 1
        total = out
    return wi[:out], dj[:out], e[:out]


@numba.njit(cache=True, nogil=True)
def _pair_sums(w_source, target, withdrawal, evidence, is_cut, n_accounts):  # pragma: no cover - compiled
    """:meth:`LinkEngine.pair_sums`: candidates are laid out by withdrawal (one counting sort), the
    best per withdrawal and target kept, then summed per pair; withdrawals are ranked by source
    account, so each account's pairs come out together, targets in order. Returns (each
    candidate's pair, pair source, pair target, evidence sum, cut part, count)."""
    n, n_withdrawals = len(evidence), len(w_source)
    start = np.zeros(n_withdrawals + 1, dtype=np.int64)
    for c in range(n):
        start[withdrawal[c] + 1] += 1
    start = np.cumsum(start)
    fill = start[:-1].copy()
    position = np.empty(n, dtype=np.int64)
    s_target = np.empty(n, dtype=np.int64)
    s_evidence = np.empty(n, dtype=np.float64)
    s_cut = np.empty(n, dtype=np.bool_)
    for c in range(n):
        p = fill[withdrawal[c]]
        fill[withdrawal[c]] += 1
        position[c], s_target[p], s_evidence[p], s_cut[p] = p, target[c], evidence[c], is_cut[c]
    mark = np.full(n_accounts, -1, dtype=np.int64)
    slot = np.empty(n_accounts, dtype=np.int64)
    best_source = np.empty(n, dtype=np.int64)
    best_target = np.empty(n, dtype=np.int64)
    best = np.empty(n, dtype=np.float64)
    best_cut = np.empty(n, dtype=np.float64)
    best_of = np.empty(n, dtype=np.int64)
    r = 0
    for g in range(n_withdrawals):
        for p in range(start[g], start[g + 1]):
            b, e = s_target[p], s_evidence[p]
            if mark[b] != g:
                mark[b], slot[b] = g, r
                best_source[r], best_target[r], best[r] = w_source[g], b, e
                best_cut[r] = e if s_cut[p] else -np.inf
                r += 1
            else:
                s = slot[b]
                best[s] = max(best[s], e)
                if s_cut[p]:
                    best_cut[s] = max(best_cut[s], e)
            best_of[p] = slot[b]
    mark[:] = -1
    pair_of = np.empty(r, dtype=np.int64)
    p_source = np.empty(r, dtype=np.int64)
    p_target = np.empty(r, dtype=np.int64)
    p_e = np.zeros(r, dtype=np.float64)
    p_cut = np.zeros(r, dtype=np.float64)
    p_n = np.zeros(r, dtype=np.int64)
    targets = np.empty(r, dtype=np.int64)
    n_pairs, lo = 0, 0
    while lo < r:  # one source account's bests at a time
        a, hi, m = best_source[lo], lo, 0
        while hi < r and best_source[hi] == a:
            if mark[best_target[hi]] != a:
                mark[best_target[hi]] = a
                targets[m] = best_target[hi]
                m += 1
            hi += 1
        distinct = np.sort(targets[:m])
        for x in range(m):
            slot[distinct[x]] = n_pairs + x
            p_source[n_pairs + x], p_target[n_pairs + x] = a, distinct[x]
        for s in range(lo, hi):
            q = slot[best_target[s]]
            pair_of[s] = q
            p_e[q] += best[s]
            if best_cut[s] >= best[s]:
                p_cut[q] += best[s]
            p_n[q] += 1
        n_pairs, lo = n_pairs + m, hi
    at = np.empty(n, dtype=np.int64)
    for c in range(n):
        at[c] = pair_of[best_of[position[c]]]
    return at, p_source[:n_pairs], p_target[:n_pairs], p_e[:n_pairs], p_cut[:n_pairs], p_n[:n_pairs]


@numba.njit(cache=True, nogil=True)
def _support_lookup(pair, score, start, source, target, n_accounts):  # pragma: no cover - compiled
    """Score of each (source, target) among sorted pair codes (``start``: where each source's begin), NaN if absent."""
    out = np.full(len(source), np.nan)
    for c in range(len(source)):
        a = source[c]
        key = a * n_accounts + target[c]
        lo, hi = start[a], start[a + 1]
        while lo < hi:
            mid = (lo + hi) // 2
            if pair[mid] < key:
                lo = mid + 1
            else:
                hi = mid
        if lo < start[a + 1] and pair[lo] == key:
            out[c] = score[lo]
    return out


@numba.njit(cache=True, nogil=True)
def _greedy(order, wi, dj, w_members, d_members, n_w, n_d):  # pragma: no cover - compiled
    """Keep candidate k (in ``order``) when none of its rows ``w_members[wi[k]]``, ``d_members[dj[k]]`` is used yet."""
    used_w = np.zeros(n_w, dtype=np.bool_)
    used_d = np.zeros(n_d, dtype=np.bool_)
    keep = np.zeros(len(order), dtype=np.bool_)
    for k in order:
        w, d = w_members[wi[k]], d_members[dj[k]]
        free = True
        for m in range(w_members.shape[1]):
            if (w[m] >= 0 and used_w[w[m]]) or (d[m] >= 0 and used_d[d[m]]):
                free = False
        if free:
            keep[k] = True
            for m in range(w_members.shape[1]):
                if w[m] >= 0:
                    used_w[w[m]] = True
                if d[m] >= 0:
                    used_d[d[m]] = True
    return keep


@dataclass
class _Orientation:
    transfers: _Candidates
    evidence: np.ndarray
    pairs: pd.DataFrame  # per pair: score, n, ...
    n_candidates: int


@dataclass
class Block:
    """One time block of an orientation: its rows renumbered 0..n-1, with their ids in the whole run.

    The block owns the withdrawals in [start, start + length) and also sees the withdrawals up to
    ``reach`` seconds later (its halo, for merges and competition at its end) and the deposits up
    to ``2 * reach`` later (for lags that cross into the next block).
    """

    W: _Rows
    D: _Rows
    w_id: np.ndarray  # int64 id of each withdrawal row in the run (local positions or input row ids)
    d_id: np.ndarray
    own: np.ndarray  # bool per withdrawal row


@dataclass(frozen=True)
class BlockGrid:
    """Fixed-length time blocks from ``origin``; the same grid on any engine gives the same blocks."""

    origin: int
    length: int
    reach: int

    def is_single(self, W: _Rows) -> bool:
        """Does one block hold every withdrawal?"""
        return len(W) == 0 or int(W.t_first.max()) < self.origin + self.length

    def index(self, t: np.ndarray) -> np.ndarray:
        """Block that owns a withdrawal at time ``t``."""
        return (t - self.origin) // self.length


def make_block(W: _Rows, D: _Rows, w_id: np.ndarray, d_id: np.ndarray, own: np.ndarray) -> Block:
    """A block from its rows (base rows of one side each, any order)."""
    return Block(_base_rows(W.account, W.amount, W.t_first), _base_rows(D.account, D.amount, D.t_first),
                 np.asarray(w_id, dtype=np.int64), np.asarray(d_id, dtype=np.int64), np.asarray(own, dtype=bool))


class _BlockSource:
    """The blocks of ``grid`` that own at least one withdrawal, built on demand by key (so forked
    workers build their own); rows in each block are in time order, ties in the order of W and D
    (input row order)."""

    def __init__(self, W: _Rows, D: _Rows, w_id: np.ndarray, d_id: np.ndarray, grid: BlockGrid):
        self.W, self.D, self.w_id, self.d_id, self.grid = W, D, w_id, d_id, grid
        self.w_order = np.argsort(W.t_first, kind="stable")
        self.w_sorted = W.t_first[self.w_order]
        self.d_order = np.argsort(D.t_first, kind="stable")
        self.d_sorted = D.t_first[self.d_order]
        self.keys = np.unique(grid.index(self.w_sorted))

    def __getitem__(self, k: int) -> Block:
        g = self.grid
        b0 = g.origin + k * g.length
        b1 = b0 + g.length
        lo, hi = np.searchsorted(self.w_sorted, [b0, b1 + g.reach])
        dlo, dhi = np.searchsorted(self.d_sorted, [b0, b1 + 2 * g.reach])
        w_idx, d_idx = self.w_order[lo:hi], self.d_order[dlo:dhi]
        return make_block(_take_rows(self.W, w_idx), _take_rows(self.D, d_idx), self.w_id[w_idx], self.d_id[d_idx],
                          self.W.t_first[w_idx] < b1)


def block_grid(engine: LinkEngine, rates: Rates, n_w: int, t_min: int, t_max: int,
               probe_rows: Callable[[int, int], tuple[_Rows, _Rows]], probe: int = 20_000) -> BlockGrid:
    """Blocks as configured, or as long as fits the candidate budget at this density.

    Density (how many same-amount deposits each withdrawal finds) decides the candidate count, so
    the budget is turned into a block length by counting candidates in a probe: the time slice in
    the middle of the data that holds about ``probe`` withdrawals at the average rate.
    ``probe_rows(start, width)`` returns the withdrawals in [start, start + width) and the deposits
    up to ``2 * reach`` later. Only counts and that slice are needed, so any engine computes the
    same grid.
    """
    opts = engine.opts
    if n_w == 0:
        return BlockGrid(0, 1, engine.reach)
    span = t_max - t_min + 1
    if opts.block_withdrawals is not None:
        per_block = opts.block_withdrawals
    elif n_w <= probe:
        per_block = n_w
    else:
        width = max(int(span * probe / n_w), 1)
        W, D = probe_rows(t_min + (span - width) // 2, width)
        per_withdrawal = max(len(engine.matches(W, D, rates)) / max(len(W), 1), 1.0)
        per_block = int(np.clip(opts.block_candidates / per_withdrawal, 20_000, 2_000_000))
    length = span if per_block >= n_w else max(int(span * per_block / n_w), 1)
    return BlockGrid(t_min, length, engine.reach)


def _global(members: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Block-local member positions -> ids in the run (-1 pads kept)."""
    return np.where(members >= 0, ids[np.maximum(members, 0)], -1)


@dataclass
class Support:
    """Pair scores from pass 1, looked up by pair code (source * n_accounts + target)."""

    pair: np.ndarray  # sorted int64
    score: np.ndarray

    @classmethod
    def from_scores(cls, scores: pd.Series) -> "Support":
        order = np.argsort(scores.index.to_numpy(np.int64), kind="stable")
        return cls(scores.index.to_numpy(np.int64)[order], scores.to_numpy(np.float64)[order])

    def lookup(self, source: np.ndarray, target: np.ndarray, n_accounts: int) -> np.ndarray:
        """Score of each pair, NaN where pass 1 did not carry it."""
        start = np.searchsorted(self.pair, np.arange(n_accounts + 1, dtype=np.int64) * n_accounts)
        return _support_lookup(self.pair, self.score, start, source, target, n_accounts)


def _withdrawal_ranks(account: np.ndarray, row_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each withdrawal by (account, row id), and the account of each rank (what
    :meth:`LinkEngine.pair_sums` needs: a pair's withdrawals are summed in row id order)."""
    order = np.lexsort((row_id, account))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank, account[order]


def _pair_sums_of(engine: LinkEngine, m: _Matches, block: Block, idx: np.ndarray | slice = slice(None)) -> tuple[np.ndarray, ...]:
    """:meth:`LinkEngine.pair_sums` of a block's candidates ``idx``: a candidate's withdrawal is its
    first withdrawn row."""
    rank, w_source = _withdrawal_ranks(block.W.account, block.w_id)
    row_rank = rank[m.W.members[:, 0]]
    return engine.pair_sums(w_source, m.D.account[m.dj[idx]], row_rank[m.wi[idx]], m.evidence[idx], m.kind[idx] == 1)


def block_pair_sums(engine: LinkEngine, rates: Rates, block: Block, carry_repeats_only: bool) -> tuple[pd.DataFrame, int]:
    """Pass 1 on one block: support sums per pair of its owned withdrawals' candidates, and how
    many candidates there were.

    With several blocks only pairs that repeat within the block are carried (most pairs are one
    coincidence; this keeps pass 1's memory near a block's); the others get their support from
    their own block in pass 2."""
    m = engine.matches(block.W, block.D, rates, block.own)
    _, pair, e, e_cut, n = _pair_sums_of(engine, m, block)
    keep = n > 1 if carry_repeats_only else slice(None)
    return _sums_frame(pair[keep], e[keep], e_cut[keep], n[keep]), len(m)


def block_transfers(engine: LinkEngine, rates: Rates, block: Block, support: Support | None) -> tuple[_Candidates, np.ndarray, np.ndarray, int]:
    """Pass 2 on one block: the transfers its owned withdrawals take, as (candidates with run ids,
    evidence, weight, how many candidates the block had). The block's withdrawals and its halo
    compete for the deposits, as in one global assignment; only the owned withdrawals' transfers
    are returned. ``support``: pass 1's pair scores (None: the block is the whole run, and its own
    candidates give the support)."""
    m = engine.matches(block.W, block.D, rates)
    n_accounts = len(engine.share)
    boost = support.lookup(m.W.account[m.wi], m.D.account[m.dj], n_accounts) if support is not None else np.full(len(m), np.nan)
    local = np.flatnonzero(np.isnan(boost))
    if len(local):
        at, pair, e, _, n = _pair_sums_of(engine, m, block, local)
        boost[local] = engine.score(pair, e, n)[at]
    weight = m.evidence + np.maximum(boost, 0.0)
    chosen = _assign(m.wi, m.dj, m.W.members, m.D.members, weight)
    chosen = chosen[block.own[m.W.members[m.wi[chosen], 0]]]
    c = m.take(chosen)
    c.w_members = _global(c.w_members, block.w_id)
    c.d_members = _global(c.d_members, block.d_id)
    return c, m.evidence[chosen], weight[chosen], len(m)


def resolve(parts: list[tuple[_Candidates, np.ndarray, np.ndarray]]) -> tuple[_Candidates, np.ndarray]:
    """Join the blocks' transfers; a row claimed by two neighbouring blocks (only possible near a
    block's end) goes to the stronger claim."""
    if not parts:
        return _no_candidates(), np.empty(0)
    c = _concat([p[0] for p in parts])
    e, weight = np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
    if len(parts) > 1:
        keep = assign(c.w_members, c.d_members, weight)
        c, e = _take(c, keep), e[keep]
    return c, e


def _run_orientation(engine: LinkEngine, W: _Rows, D: _Rows, w_id: np.ndarray, d_id: np.ndarray, processes: int = 1,
                     label: str = "run") -> _Orientation:
    """Candidates, evidence, assignment and pair scores of one orientation, streamed through time
    blocks (see :func:`block_pair_sums`, :func:`block_transfers`, :func:`resolve`). Only one
    block's candidates are in memory at a time per process (``processes`` > 1: blocks are shared
    out to forked workers); the rates behind the evidence are global. tracer/spark_link.py runs the
    same block functions partition by partition."""
    rates = engine.rates(W, D)

    def probe_rows(start: int, width: int) -> tuple[_Rows, _Rows]:
        w = np.flatnonzero((W.t_first >= start) & (W.t_first < start + width))
        d = np.flatnonzero((D.t_first >= start) & (D.t_first < start + width + 2 * engine.reach))
        return _subset(W, w), _subset(D, d)

    grid = block_grid(engine, rates, len(W), int(W.t_first.min(initial=0)), int(W.t_first.max(initial=0)), probe_rows)
    source = _BlockSource(W, D, w_id, d_id, grid)
    single = grid.is_single(W)
    state = _BlockState(engine, rates, source, None)
    sums, counts = ([], []) if single else zip(*_map_blocks(state, _pass_one, processes, f"{label}, pass 1"))
    state.support = pass_one_support(engine, list(sums), single)
    parts = _map_blocks(state, _pass_two, processes, f"{label}, pass 2")
    return orientation(engine, parts, sum(counts) if not single else None)


@dataclass
class _BlockState:
    """What a block needs besides its rows (inherited by forked workers)."""

    engine: LinkEngine
    rates: Rates
    source: _BlockSource
    support: Support | None


_FORKED = None  # the state forked workers of :func:`_fork_map` read (inherited, never pickled)


def _can_fork(processes: int) -> bool:
    return processes > 1 and "fork" in multiprocessing.get_all_start_methods()


def _fork_map(state, fn: Callable, items: list, processes: int) -> Iterator:
    """``fn(item)`` in ``processes`` forked workers that read ``state`` through fork; results in order."""
    global _FORKED
    _FORKED = state
    try:
        with ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("fork")) as pool:
            yield from pool.map(fn, items)
    finally:
        _FORKED = None


def _pass_one(k: int, state: _BlockState | None = None) -> tuple[pd.DataFrame, int]:
    s = state or _FORKED
    return block_pair_sums(s.engine, s.rates, s.source[k], carry_repeats_only=True)


def _pass_two(k: int, state: _BlockState | None = None) -> tuple[_Candidates, np.ndarray, np.ndarray, int]:
    s = state or _FORKED
    return block_transfers(s.engine, s.rates, s.source[k], s.support)


def _map_blocks(state: _BlockState, fn: Callable, processes: int, desc: str) -> list:
    """``fn`` over the blocks in order, here or in forked workers (results in block order)."""
    keys = [int(k) for k in state.source.keys]
    if processes > 1 and _available_memory() < processes * 300 * state.engine.opts.block_candidates:
        processes = 1  # a block of candidates per worker would not fit
    bar = tqdm(total=len(keys), desc=f"  {desc}", unit="block", file=sys.stderr, leave=False,
               disable=not state.engine.opts.progress or len(keys) < 2)
    with bar:
        results = _fork_map(state, fn, keys, processes) if _can_fork(processes) and len(keys) > 1 else (fn(k, state) for k in keys)
        return [_tick(bar, r) for r in results]


def _tick(bar: tqdm, result):
    bar.update()
    return result


def pass_one_support(engine: LinkEngine, sums: list[pd.DataFrame], single: bool) -> Support | None:
    """Pass 1's pair support from the blocks' sums in block order (None for a single block: its
    own candidates give the support in pass 2)."""
    return None if single else Support.from_scores(engine.pair_scores(engine.sum_pairs(sums))["score"])


def orientation(engine: LinkEngine, parts: list[tuple[_Candidates, np.ndarray, np.ndarray, int]], n_candidates: int | None) -> _Orientation:
    """Settle the blocks' transfers (in block order) and score the pairs they form."""
    t, e_t = resolve([p[:3] for p in parts])
    rank, w_source = _withdrawal_ranks(t.source, t.w_members[:, 0])  # each withdrawal is in one transfer
    _, pair, e, e_cut, n = engine.pair_sums(w_source, t.target, rank, e_t, t.kind == 1)
    return _Orientation(t, e_t, engine.pair_scores(_sums_frame(pair, e, e_cut, n)), n_candidates if n_candidates is not None else sum(p[3] for p in parts))


def expected_null_above(scores: np.ndarray, decoy: np.ndarray, tail_fraction: float = 0.01, min_tail: int = 25) -> np.ndarray:
    """Expected number of null (coincidence-only) pairs scoring at least each of ``scores``.

    Below the decoys' upper tail this is the decoy count itself. In the tail the count is too
    small to use directly (it drops to 0 just above the largest decoy by chance), so the top
    ``tail_fraction`` of decoys (all of them when there are fewer than ``2 * min_tail``) is fitted
    with an exponential tail and extrapolated.
    """
    decoy_sorted = np.sort(decoy)
    counts = (len(decoy_sorted) - np.searchsorted(decoy_sorted, scores, side="left")).astype(np.float64)
    if len(decoy_sorted) < 3:
        return counts
    # a small null (a sparse stratum) is fitted whole: a target just above its few decoys is not certain
    n_tail = len(decoy_sorted) if len(decoy_sorted) < 2 * min_tail else max(min_tail, int(len(decoy_sorted) * tail_fraction))
    tail = decoy_sorted[-n_tail:]
    u, beta = tail[0], float(np.mean(tail - tail[0]))
    if beta <= 0:
        return counts
    in_tail = scores >= u
    counts[in_tail] = n_tail * np.exp(-(scores[in_tail] - u) / beta)
    return counts


def _compete(pairs: pd.DataFrame, decoys: pd.DataFrame) -> np.ndarray:
    """Target-decoy competition per account pair; sets ``pairs["q_value"]``, returns the null scores.

    Each pair keeps only the better of its forward (target) and mirrored (decoy) score. For pairs
    with no real flow both are coincidences, equally likely to win, so decoy winners estimate how
    many coincidental targets score as high. A real pair's own decoy can be inflated by its real
    structure (a payroll batch matches itself in mirrored time) and is suppressed by its stronger
    target instead of polluting the null. Targets that lose get q = 1. Each stratum (see
    ``pair_scores``) is a separate family with its own null.
    """
    rival = decoys.reindex(pairs.index)
    wins = (pairs["score"] >= rival["score"].fillna(-np.inf)).to_numpy()
    null = pd.concat([rival[~wins], decoys[~decoys.index.isin(pairs.index)]])
    q = np.ones(len(pairs))
    stratum = pairs["stratum"].to_numpy()
    null_stratum = null["stratum"].to_numpy()
    for s in np.unique(stratum):
        sel = wins & (stratum == s)
        # a family with too few decoys to estimate its null borrows the wider family's:
        # same repetition class (both amount families), then everything
        for in_null in (null_stratum == s, null_stratum % 2 == s % 2, np.ones(len(null), dtype=bool)):
            if in_null.sum() >= MIN_NULL:
                break
        q[sel] = _q_values(pairs["score"].to_numpy()[sel], null.loc[in_null, "score"].to_numpy())
    pairs["q_value"] = q
    return null["score"].to_numpy()


def _q_values(target: np.ndarray, decoy: np.ndarray) -> np.ndarray:
    """q-value of each target score: min over thresholds s <= score of E[#null >= s] / #targets >= s."""
    order = np.argsort(-target, kind="stable")
    sorted_t = target[order]
    n_targets = np.arange(1, len(sorted_t) + 1)
    fdr = np.minimum(expected_null_above(sorted_t, decoy) / n_targets, 1.0)
    q_sorted = np.minimum.accumulate(fdr[::-1])[::-1]
    q = np.empty_like(q_sorted)
    q[order] = q_sorted
    return q


LINK_COLUMNS = ["source", "target", "n_transfers", "total_amount", "first_time", "last_time", "median_lag_hours", "score", "q_value"]
TRANSFER_COLUMNS = ["withdrawal_rows", "deposit_rows", "source", "target", "amount_out", "amount_in", "kind", "first_time", "lag_hours", "evidence", "link_q_value"]


@dataclass
class LinkResult:
    """What link inference found: ``transfers`` (matched rows) and ``links`` (account pairs)."""

    transfers: pd.DataFrame
    links: pd.DataFrame
    all_links: pd.DataFrame
    decoy_scores: np.ndarray
    options: LinkOptions
    stats: dict = field(default_factory=dict)

    def to_pandas(self) -> pd.DataFrame:
        return self.links

    def to_csv(self, out_dir: str | Path) -> dict[str, Path]:
        out = Path(out_dir)
        paths = {"links": out / "links.csv", "transfers": out / "transfers.csv"}
        for name, path in paths.items():
            with atomic_write(path, newline="") as handle:
                getattr(self, name).to_csv(handle, index=False)
        return paths

    def __repr__(self) -> str:
        return (f"LinkResult({len(self.links)} links at q <= {self.options.max_q}, "
                f"{len(self.transfers)} transfers, {self.stats.get('candidates', 0)} candidates)")


class LinkInference:
    """scikit-learn-style estimator: ``LinkInference(**options).fit(transactions)``.

    Learned attributes: ``transfers_``, ``links_`` (q <= max_q), ``all_links_``, ``decoy_scores_``,
    ``stats_``. ``transactions`` is the canonical frame of :func:`tracer.load_transactions`.
    """

    def __init__(self, **options):
        self.options = LinkOptions(**options)

    def fit(self, transactions: pd.DataFrame) -> "LinkInference":
        res = _infer(transactions, self.options)
        self.transfers_, self.links_, self.all_links_ = res.transfers, res.links, res.all_links
        self.decoy_scores_, self.stats_ = res.decoy_scores, res.stats
        return self


def infer_links(transactions: pd.DataFrame, **options) -> LinkResult:
    """Infer transfers and links from canonical transactions; see :class:`LinkOptions`."""
    return _infer(transactions, LinkOptions(**options))


def _infer(tx: pd.DataFrame, opts: LinkOptions) -> LinkResult:
    return infer_from_runs(LocalRuns(tx, opts), opts)


def make_engine(opts: LinkOptions, w_per_account: np.ndarray, d_per_account: np.ndarray, t0: int, t1: int) -> LinkEngine:
    """The engine for a run: per-account withdrawal and deposit counts and the time span."""
    if t1 - t0 >= 2**_TIME_BITS - int(opts.window_hours * 3600) - 1:
        raise ValueError("time span longer than 30 years: split the input by time")
    share = d_per_account.astype(np.float64) / max(float(d_per_account.sum()), 1.0)
    return LinkEngine(opts, share, w_per_account, float(t1 - t0))


class LocalRuns:
    """Orientation runs on in-memory arrays (the default engine).

    An engine provides ``engine``, ``accounts`` (name per account code), ``t0`` (seconds of the
    earliest row), ``stated`` (rows named by a counterparty column), ``n_withdrawals``,
    ``n_deposits`` and ``run(mirror, exclude)``: one orientation (forward time, or mirrored:
    deposits *before* withdrawals) without the rows whose input row ids are in ``exclude``.
    """

    def __init__(self, tx: pd.DataFrame, opts: LinkOptions):
        codes, self.accounts = _account_codes(tx["client_id"])
        self.amount = tx["amount_cents"].to_numpy(np.int64)
        self.seconds = tx["timestamp"].to_numpy("datetime64[s]").astype(np.int64)
        self.row_id = tx["row_id"].to_numpy(np.int64)
        self.codes = codes
        self.t0, self.t1 = (int(self.seconds.min()), int(self.seconds.max())) if len(tx) else (0, 0)
        stated = _stated_mask(tx)
        self.stated = tx[stated]
        self.w_rows = np.flatnonzero((self.amount < 0) & ~stated)
        self.d_rows = np.flatnonzero((self.amount > 0) & ~stated)
        self.n_withdrawals, self.n_deposits = len(self.w_rows), len(self.d_rows)
        n = len(self.accounts)
        self.engine = make_engine(opts, np.bincount(codes[self.w_rows], minlength=n), np.bincount(codes[self.d_rows], minlength=n), self.t0, self.t1)

    def run_pair(self) -> tuple[_Orientation, _Orientation]:
        """The forward and the first mirrored run, side by side in two forked processes when the
        machine has the cores (they share the input through fork, nothing is pickled but results)."""
        if not _can_fork(self._processes()):
            return self.run(mirror=False), self.run(mirror=True)
        forward, mirror = _fork_map(self, _run_forked, [False, True], 2)
        return forward, mirror

    def run(self, mirror: bool, exclude: np.ndarray | None = None, processes: int | None = None) -> _Orientation:
        """One orientation; ``processes`` (default: the automatic choice) share out its blocks."""
        if processes is None:
            processes = self._processes()
        t = self.t1 - self.seconds if mirror else self.seconds - self.t0
        w, d = self.w_rows, self.d_rows
        if exclude is not None:
            w, d = w[~np.isin(self.row_id[w], exclude)], d[~np.isin(self.row_id[d], exclude)]
        W = _base_rows(self.codes[w], -self.amount[w], t[w])
        D = _base_rows(self.codes[d], self.amount[d], t[d])
        label = ("mirrored" if mirror else "forward") + (" (protected)" if exclude is not None else "")
        return _run_orientation(self.engine, W, D, self.row_id[w], self.row_id[d], processes, label)

    def _processes(self) -> int:
        """As configured, or automatically: 2 on a machine with 2+ cores, for an input of 50,000+
        withdrawals, when memory allows a second run (its own copy of the rows, ~60 bytes each, and
        a block of candidates, ~300 bytes each, at the peak)."""
        processes = self.engine.opts.processes
        if processes is None:
            per_run = 60 * (self.n_withdrawals + self.n_deposits) + 300 * self.engine.opts.block_candidates
            enough = _available_memory() >= 2 * per_run
            processes = min(2, os.cpu_count() or 1) if self.n_withdrawals >= 50_000 and enough else 1
        return processes


def _available_memory() -> float:
    """Bytes of memory available to new work (Linux MemAvailable; unknown elsewhere: unlimited)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024.0
    except OSError:
        pass
    return float("inf")


def _run_forked(mirror: bool) -> _Orientation:
    return _FORKED.run(mirror=mirror, processes=1)


def infer_from_runs(runs, opts: LinkOptions) -> LinkResult:
    """Link inference given an engine's orientation runs (:class:`LocalRuns` or Spark's): the
    forward run, a first mirrored run for the q-values that decide which rows are explained, and
    the final mirrored run without those rows; then target-decoy competition and the output frames."""
    engine, accounts = runs.engine, runs.accounts
    n_accounts = len(accounts)
    forward, first_mirror = runs.run_pair()
    pairs = forward.pairs
    _compete(pairs, first_mirror.pairs)
    # Rows explained by confident forward links are not free to coincide in the forward run (the
    # assignment gave them to their real partner); take them out of the mirrored run as well so
    # that coincidences in both directions draw on the same leftover rows.
    explained = _take(forward.transfers, np.flatnonzero(pairs["q_value"].reindex(engine.pair_code(forward.transfers)).to_numpy() <= opts.protect_q))
    members = np.concatenate([explained.w_members.ravel(), explained.d_members.ravel()])
    mirrored = runs.run(mirror=True, exclude=np.unique(members[members >= 0]))
    decoy_scores = _compete(pairs, mirrored.pairs)
    inferred = _transfer_frame(forward, runs.t0, accounts, engine, pairs["q_value"])
    pair_index = pd.MultiIndex.from_arrays([accounts[pairs.index.to_numpy() // n_accounts], accounts[pairs.index.to_numpy() % n_accounts]])
    pair_stats = pd.DataFrame({"score": pairs["score"].to_numpy() / np.log(10), "q_value": pairs["q_value"].to_numpy()}, index=pair_index)
    stated = runs.stated
    transfers = pd.concat([inferred, _stated_transfers(stated, engine.window)], ignore_index=True) if len(stated) else inferred
    transfers["kind"] = pd.Categorical(transfers["kind"], categories=list(KINDS))
    all_links = _link_frame(transfers, pair_stats)
    links = all_links[all_links["q_value"] <= opts.max_q].reset_index(drop=True)
    stats = {
        "withdrawals": runs.n_withdrawals, "deposits": runs.n_deposits,
        "candidates": forward.n_candidates, "decoy_candidates": mirrored.n_candidates,
        "stated_rows": len(stated),
        "transfers": len(transfers), "pairs_tested": len(pairs), "decoy_pairs": len(decoy_scores),
        "links": len(links),
    }
    return LinkResult(transfers, links, all_links, decoy_scores, opts, stats)


def _account_codes(client_id: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(client_id.dtype, pd.CategoricalDtype):
        return client_id.cat.codes.to_numpy(np.int32), client_id.cat.categories.to_numpy(dtype=object)
    codes, uniques = pd.factorize(client_id, sort=True)
    return codes.astype(np.int32), np.asarray(uniques, dtype=object)


def _join_rows(members: np.ndarray) -> pd.Series:
    """Space-separated input row ids of the (up to 3, -1 padded) parts of each transfer side."""
    cols = [members[:, k] for k in range(3)]
    text = pd.Series(cols[0]).astype(str)
    for col in cols[1:]:
        extra = pd.Series(col).astype(str)
        text = text.where(col < 0, text + " " + extra)
    return text


def _transfer_frame(o: _Orientation, t0: int, accounts: np.ndarray, engine: LinkEngine, pair_q: pd.Series) -> pd.DataFrame:
    t = o.transfers
    pair = engine.pair_code(t)
    first = t.t_out + t0
    frame = pd.DataFrame({
        "withdrawal_rows": _join_rows(t.w_members),
        "deposit_rows": _join_rows(t.d_members),
        "source": accounts[t.source],
        "target": accounts[t.target],
        "amount_out": t.amount_out / 100.0,
        "amount_in": t.amount_in / 100.0,
        "kind": pd.Categorical.from_codes(t.kind, categories=list(KINDS)),
        "first_time": pd.to_datetime(first, unit="s"),
        "lag_hours": t.lag / 3600.0,
        "evidence": o.evidence,
        "link_q_value": pair_q.reindex(pair).to_numpy(),
    })
    return frame.sort_values(["first_time", "source", "target"], kind="stable").reset_index(drop=True)


def _link_frame(transfers: pd.DataFrame, pair_stats: pd.DataFrame) -> pd.DataFrame:
    """Links from transfers; ``pair_stats`` (indexed by source, target) gives inferred pairs' score
    and q-value. Pairs named by a counterparty column are certain (q = 0, no statistical score)."""
    g = transfers.groupby(["source", "target"], sort=False, observed=True)
    agg = g.agg(
        n_transfers=("amount_out", "size"),
        total_amount=("amount_out", "sum"),
        first_time=("first_time", "min"),
        last_time=("first_time", "max"),
        median_lag_hours=("lag_hours", "median"),
    )
    stated = g["kind"].agg(lambda k: bool((k == "stated").any())) if (transfers["kind"] == "stated").any() else pd.Series(False, index=agg.index)
    stats = pair_stats.reindex(agg.index)
    agg["score"] = stats["score"].to_numpy()
    agg["q_value"] = np.where(stated.reindex(agg.index).to_numpy(), 0.0, stats["q_value"].to_numpy())
    agg["total_amount"] = agg["total_amount"].round(2)
    out = agg.reset_index()[LINK_COLUMNS]
    return out.sort_values(["q_value", "score"], ascending=[True, False], kind="stable").reset_index(drop=True)


def _stated_mask(tx: pd.DataFrame) -> np.ndarray:
    """Rows whose counterparty column names the other account (inference is skipped for them)."""
    if "counterparty" not in tx:
        return np.zeros(len(tx), dtype=bool)
    cp = tx["counterparty"]
    return (cp.notna() & (cp.astype(str).str.strip() != "")).to_numpy()


def _stated_transfers(tx: pd.DataFrame, window: int) -> pd.DataFrame:
    """Transfers named by counterparty columns, in the transfers schema.

    A withdrawal naming b and a deposit in b naming a, of the same amount within the window, are
    one transfer (paired earliest first, each row once); an unpaired row is a transfer on its own
    (the other side is outside the data or has no counterparty).
    """
    amount = tx["amount_cents"].to_numpy(np.int64)
    side = pd.DataFrame({
        "row": tx["row_id"].to_numpy(np.int64),
        "account": tx["client_id"].astype(str).to_numpy(),
        "other": tx["counterparty"].astype(str).str.strip().to_numpy(),
        "amount": np.abs(amount),
        "t": tx["timestamp"].to_numpy("datetime64[s]").astype(np.int64),
    })
    w = side[amount < 0].rename(columns={"account": "source", "other": "target"})
    d = side[amount > 0].rename(columns={"account": "target", "other": "source"})
    m = w.merge(d, on=["source", "target", "amount"], suffixes=("_w", "_d"))
    m = m[(m["t_d"] >= m["t_w"]) & (m["t_d"] - m["t_w"] <= window)]
    m = m.sort_values(["t_w", "t_d"], kind="stable").drop_duplicates("row_w").drop_duplicates("row_d")
    lone_w = w[~w["row"].isin(m["row_w"])]
    lone_d = d[~d["row"].isin(m["row_d"])]
    frame = pd.DataFrame({
        "withdrawal_rows": pd.concat([m["row_w"].astype(str), lone_w["row"].astype(str), pd.Series([""] * len(lone_d), dtype=str)], ignore_index=True),
        "deposit_rows": pd.concat([m["row_d"].astype(str), pd.Series([""] * len(lone_w), dtype=str), lone_d["row"].astype(str)], ignore_index=True),
        "source": pd.concat([m["source"], lone_w["source"], lone_d["source"]], ignore_index=True),
        "target": pd.concat([m["target"], lone_w["target"], lone_d["target"]], ignore_index=True),
        "amount_out": np.concatenate([m["amount"], lone_w["amount"], lone_d["amount"]]) / 100.0,
        "first_time": pd.to_datetime(np.concatenate([m["t_w"], lone_w["t"], lone_d["t"]]), unit="s"),
        "lag_hours": np.concatenate([(m["t_d"] - m["t_w"]) / 3600.0, np.full(len(lone_w) + len(lone_d), np.nan)]),
    })
    frame["amount_in"] = frame["amount_out"]
    frame["kind"] = "stated"
    frame["evidence"] = np.nan
    frame["link_q_value"] = 0.0
    return frame[TRANSFER_COLUMNS]

