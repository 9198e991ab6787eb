"""Link inference: reconstruct who paid whom from withdrawals and later deposits.

The records carry no counterparty, so a transfer is inferred when a withdrawal of X from account
``a`` is followed, within ``window``, by a deposit of about X into another account ``b``.
The engine is a pure function of arrays, stage by stage:

1. candidates: sort-and-search over (amount key, time) finds every deposit (or 2-3 deposits of one
   account: a *split*) matching a withdrawal (or 2-3 withdrawals of one account: a *merge*);
2. evidence: each candidate gets the probability that account ``b`` would receive such an amount
   that soon by coincidence, estimated from how common the amount is in the data;
3. assignment: each withdrawal and deposit row is used at most once (greedy, strongest first);
4. links: transfers are aggregated per account pair into a score (repetition is strong evidence);
5. calibration: the same pipeline runs on mirrored time (deposits *before* withdrawals: a null that
   cannot contain real flows) and q-values are the decoy/target ratio above each score;
6. second stage: between accounts already confidently relaying cash, the rows confident links leave
   unexplained are matched again, with account statistics of those rows only, as a family of its own.

``docs/method.md`` explains the formulas. Sorting and binary search (numpy) prepare, per withdrawal,
the ranges of deposits it may match; compiled kernels (numba) walk them, one withdrawal at a time,
scoring candidates and summing them per account pair as they go, so candidates are never
materialized beyond a compact 29 bytes each. The work splits into time blocks, so a distributed
engine runs the same functions partition by partition (tracer/spark_link.py).
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numba
import numpy as np
import pandas as pd
from scipy.special import gammaln
from scipy.stats import chi2
from tqdm import tqdm

from tracer._io import write_csv
from tracer._pages import small_pages

KINDS = ("exact", "cut", "split", "merge", "stated")  # stated: named by a counterparty column
_TIME_BITS = 30  # composite sort key: key << 30 | seconds since start (34 years of range)
MIN_NULL = 25  # a null family needs this many decoys of its own; fewer borrow the wider family's
CANDIDATE_BYTES = 100  # peak memory per candidate of a pass-2 block (measured ~80-100)
SUPPORT_ROW_BYTES = 400  # peak memory per row of a pass-1 block, with the pair sums it hands on (measured ~300 + pairs)


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
    fee_tolerance: float = 0.0
    """Any other withdrawal may arrive this fraction smaller (fees; e.g. 0.02). Off by default: a
    bank transfer arrives whole (fees are rows of their own), and at density the band costs half
    the link work for matches the null then has to absorb (docs/method.md, "Fee band")."""
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
    block_candidates: int = 16_000_000
    """Candidate budget of one block when ``block_withdrawals`` is None (~100 bytes each at peak, measured;
    8M until the fee band went off: fewer candidates per withdrawal left room, and longer blocks spend
    less of their preparation on their halo)."""
    support_days: float = 182.0
    """Pass 1 (each pair's repetition over the whole run) reads the rows in time blocks at least this
    long (several candidate blocks merged): fewer, longer blocks share their deposit tables and
    halos and hand on fewer pair sums (and fewer one-offs are left out, ``support_min_evidence``)."""
    support_rows: int = 12_000_000
    """Pass-1 blocks are shorter than ``support_days`` when they would hold more rows than this at
    the average rate (their memory follows their rows: ~270 bytes each measured, 400 assumed)."""
    support_min_evidence: float = 12.0
    """Pass 1 hands on a pair seen once in its block only when that withdrawal's evidence for it is
    at least this (nats): on a month at the 100M-row set's density 7 % of one-off pairs reach 12,
    53 % of true links' one-off transfers (-inf: every pair, exact but ~30x the sums at density)."""
    support_pairs: int = 40_000_000
    """Pass 1 hands pass 2 at most this many pairs that repeat over the run (~16 bytes each; the
    highest scores): at the 100M-row set's density five years hold far more, mostly two
    coincidences each; a pair left out is scored on its pass-2 block."""
    processes: int | None = None
    """Processes for the two independent runs (forward and mirrored: side by side, forked, when
    memory allows both, else one after the other with their time blocks shared out); None: 2 when
    the machine has the cores and the input 50,000+ withdrawals. Results do not depend on it."""
    progress: bool = False
    """Show a progress bar (stderr) over the time blocks of each run that has several."""
    max_q: float = 0.05
    """Links with a q-value above this are dropped from ``links`` (all remain in ``all_links``)."""
    protect_q: float = 0.05
    """Mirrored transfers that use rows of links this confident in a first comparison are left out
    of the null (the links that would be reported: rows left in the null from real flows make
    q-values conservative, much more so at density)."""
    second_stage: bool = True
    """Test the pairs between accounts of confident cash-relay links again on the rows those links
    leave unexplained (:func:`_second_stage`, docs/method.md section 6)."""

    def __post_init__(self) -> None:
        if self.block_withdrawals is not None and self.block_withdrawals < 1:
            raise ValueError("block_withdrawals must be a positive number of withdrawals, or None for automatic blocks")
        if self.support_days <= 0 or self.support_rows < 1 or self.support_pairs < 1:
            raise ValueError("support_days, support_rows and support_pairs must be positive")
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


def _in_order(t: np.ndarray) -> bool:
    """Is ``t`` non-decreasing?"""
    return bool(np.all(t[1:] >= t[:-1]))


def _combo_parts(base: _Rows, span: int, neighbours: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(order, i, j, l) index chunks of every 2- or 3-row sum of one account within ``span`` seconds.

    Rows are taken among ``neighbours`` consecutive rows of the account in time order (``order``
    sorts by account then time; i < j < l index into it, l = -1 for pairs), so the number of sums
    is at most a small multiple of the rows.
    """
    if _in_order(base.t_first):  # a block's rows are in time order: one stable sort
        order = np.argsort(base.account, kind="stable")
    else:
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


def _subset(rows: _Rows, idx: np.ndarray | slice) -> _Rows:
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

    def between(self, lo: np.ndarray, hi: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
        """How many values lie in [lo, hi]; ``lo`` must be in the order of ``hi`` (sorting one sorts
        the other, as for lo = hi or lo = ceil(hi * c)), so one :func:`_query_order` (``order``,
        computed unless given) serves both searches."""
        order = _query_order(hi) if order is None else order
        return (self.cumulative[_searchsorted(self.values, hi, "right", order)]
                - self.cumulative[_searchsorted(self.values, lo, "left", order)])


def _query_order(v: np.ndarray) -> np.ndarray | None:
    """The order :func:`_searchsorted` visits queries ``v`` in (None: too few to be worth sorting);
    it serves any queries that ``v``'s argsort sorts too (``v + c``, ``v`` shifted in its high bits)."""
    return np.argsort(v) if len(v) >= 4096 else None


def _searchsorted(a: np.ndarray, v: np.ndarray, side: str = "left", order: np.ndarray | None = None) -> np.ndarray:
    """``np.searchsorted`` with the queries visited in sorted order (``order``: from
    :func:`_query_order`, computed unless given): the same result, ~6x faster for many queries into
    a large array (the binary searches walk memory in order)."""
    order = _query_order(v) if order is None else order
    if order is None:
        return np.searchsorted(a, v, side=side)
    out = np.empty(len(v), dtype=np.int64)
    out[order] = np.searchsorted(a, v[order], side=side)
    return out


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
    d_order, lo, hi = _ranges(d_key, d_time, w_key, w_time, window, cap)
    query, pos = _expand(lo, hi)
    return query, d_order[pos]


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
class _Scan:
    """What one scan of a block found: per pair (source, target) of its candidates the evidence
    sums (see :meth:`LinkEngine.scan`), and, when stored, the candidates themselves, compact
    (withdrawal row ``wi`` of ``W`` may have become deposit row ``dj`` of ``D``; ``W`` holds the
    block's withdrawals then its merge sums, ``D`` its deposits then its split sums)."""

    W: _Rows
    D: _Rows
    pair: np.ndarray  # int64 pair codes, in order
    e: np.ndarray  # evidence summed over the pair's withdrawals (each its strongest candidate)
    n: np.ndarray  # the pair's withdrawals
    score: np.ndarray  # stored scans: pass 1's score of the pair where it carried one, else :meth:`LinkEngine.score` of these sums
    n_candidates: int
    wi: np.ndarray  # int32, stored candidates only
    dj: np.ndarray  # int32
    kind: np.ndarray  # int8 index into KINDS
    evidence: np.ndarray  # float64, nats
    pair_of: np.ndarray  # int64 position of each candidate's pair

    def take(self, idx: np.ndarray) -> _Candidates:
        """Stored candidates ``idx`` spelled out (members are positions in the block's base rows)."""
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
        self.support_span = int(opts.support_days * 86400)
        self.share = account_share
        self.n_withdrawals = n_withdrawals
        self.span = max(span_seconds, 1.0)
        self.log_factorial = gammaln(np.arange(int(n_withdrawals.max(initial=0)) + 1) + 1.0)  # log(n!) by table

    def support_grid(self, grid: BlockGrid, n_rows: int, t_min: int, t_max: int) -> BlockGrid:
        """Pass 1's grid: ``grid``'s blocks merged, as few at a time as span ``support_days``, fewer
        when a merged block would hold more than ``support_rows`` of the run's ``n_rows`` rows at the
        average rate over [t_min, t_max] (counts only, so every engine merges alike)."""
        rows_per_block = n_rows * grid.length / max(t_max - t_min + 1, 1)
        by_span = -(-self.support_span // grid.length)
        return grid.merged(min(by_span, int(self.opts.support_rows // max(rows_per_block, 1.0))))

    def pair_code(self, c: _Candidates) -> np.ndarray:
        """One int64 per (source, target) account pair."""
        return c.source.astype(np.int64) * len(self.share) + c.target

    def repeated_pairs(self, pair: np.ndarray, e: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes (ascending) and :meth:`score` of the pairs with two or more withdrawals, from
        pair sums of disjoint sets of withdrawals (:func:`block_pair_sums` of several blocks, in
        block order: a pair's sums are added in that order, so they do not depend on the engine)."""
        order = np.argsort(pair, kind="stable")
        codes, start = _sorted_unique(pair[order])
        if not len(codes):
            return codes, np.empty(0)
        n_sum = np.add.reduceat(n[order].astype(np.int64), start)
        e_sum = np.add.reduceat(e[order], start)
        repeated = n_sum >= 2
        return codes[repeated], self.score(codes[repeated], e_sum[repeated], n_sum[repeated])

    def rates(self, W: _Rows, D: _Rows) -> Rates:
        o = self.opts
        span = int(o.combo_span_hours * 3600)
        split_sums = _combo_amounts(D, span, o.combo_neighbours) if o.splits else np.empty(0, dtype=np.int64)
        n_merges = sum(len(c[1]) for c in _combo_parts(W, span, o.combo_neighbours)) if o.merges else 0
        return Rates(Counts.of(D.amount), Counts.of(split_sums), n_merges / max(len(W), 1))

    def scan(self, W: _Rows, D: _Rows, w_id: np.ndarray, rates: Rates, own: np.ndarray | None = None,
             support: Support | None = None, store: bool = True, min_single: float = -np.inf) -> _Scan:
        """Candidates of every kind with their evidence for the withdrawals flagged in ``own``
        (default: all of W; base rows, run ids ``w_id``), summed per pair as they are found (a pair
        of one withdrawal only when its evidence is at least ``min_single``), and stored when ``store``.

        Each withdrawal's candidates (exact, cut, split, and the merges it starts) are found
        together, withdrawals in order of source account then row id, so the best candidate per
        withdrawal and target and the sums per pair come out of one compiled pass
        (:func:`_scan_kernel`). Prepared here, by sorting and binary search: the deposits (and split
        sums) sorted by (key, time) as tables, and per withdrawal the range of each it searches.
        A merge belongs to the block that owns its earliest withdrawal.
        """
        if store and min_single > -np.inf:
            raise ValueError("stored candidates need every pair (their pair positions); min_single is for pass 1")
        o = self.opts
        own = np.ones(len(W), dtype=bool) if own is None else own
        n_w, n_d, cap = len(W), len(D), o.max_candidates
        combo_span = int(o.combo_span_hours * 3600)
        empty = np.empty(0, dtype=np.int64)
        visit = np.lexsort((w_id, W.account))
        position = np.empty(n_w, dtype=np.int64)
        position[visit] = np.arange(n_w)
        merges = _combos(W, combo_span, o.combo_neighbours) if o.merges else _take_rows(W, empty)
        merges = _take_rows(merges, np.flatnonzero(own[merges.members[:, 0]]))
        merges = _take_rows(merges, np.argsort(position[merges.members[:, 0]], kind="stable"))  # in visit order
        splits = _combos(D, combo_span, o.combo_neighbours) if o.splits else _take_rows(D, empty)
        floor = 1.0 / self.span
        per_row = np.zeros((n_w, len(_ROW_FIELDS)), dtype=np.int64)
        rate = np.zeros((n_w, 3))
        per_row[:, _ROW] = np.arange(n_w)
        per_row[:, _OWN], per_row[:, _ACC], per_row[:, _T], per_row[:, _AMOUNT] = own, W.account, W.t_first, W.amount
        # exact (and merges, searched from their last part): deposits by (key, time); the key is the
        # amount in cents, or its dense rank when cents would overflow the composite key ($85.9M+)
        w_key, d_key, m_key = W.amount, D.amount, merges.amount
        if not _fits_key(w_key, d_key, m_key):
            uniq = np.unique(d_key)
            w_key, m_key = _rank_or_absent(uniq, w_key), _rank_or_absent(uniq, m_key)
            d_key = np.searchsorted(uniq, d_key)
        x_order, per_row[:, _X_LO], per_row[:, _X_HI] = _ranges(d_key, D.t_first, w_key, W.t_first, self.window, cap)
        by_amount = _query_order(W.amount)  # serves every search by withdrawal amount below
        rate[:, 0] = np.maximum(rates.deposits.between(W.amount, W.amount, by_amount) * 1.0 / self.span, floor)
        _, m_lo, m_hi = _ranges(d_key, D.t_first, m_key, merges.t_last, self.window, cap, x_order)
        m_rate = np.maximum(rates.deposits.between(merges.amount, merges.amount) * rates.merges_per_withdrawal / self.span, floor)
        m_table = np.stack([np.arange(n_w, n_w + len(merges)), merges.t_first, m_lo, m_hi], axis=1)
        first = position[merges.members[:, 0]]
        for col, side in ((_M_START, "left"), (_M_END, "right")):  # a withdrawal's merges, by its visit position
            per_row[:, col] = np.searchsorted(first, np.arange(n_w), side)[position]
        # splits: sums of deposits by (key, time), keyed as the exact search
        s_key, w_key = splits.amount, W.amount
        if not _fits_key(w_key, s_key):
            uniq = np.unique(s_key)
            s_key, w_key = _searchsorted(uniq, s_key), _rank_or_absent(uniq, w_key, by_amount)
        s_order, per_row[:, _S_LO], per_row[:, _S_HI] = _ranges(s_key, splits.t_first, w_key, W.t_first, self.window, cap)
        rate[:, 2] = np.maximum(rates.split_sums.between(W.amount, W.amount, by_amount) * 1.0 / self.span, floor)
        # cut and fee bands: one sorted copy of the deposits per tolerance, concatenated
        cash = _cash_like(W.amount, o)
        b_order = [np.empty(0, dtype=np.int64)] * 2
        for copy, (subset, tol) in enumerate(((cash, o.cut_tolerance), (~cash, o.fee_tolerance))):
            if tol > 0 and subset.any() and n_d:
                b_order[copy] = self._bands(D, W, np.flatnonzero(subset), tol, copy * n_d, rates.deposits, per_row, rate)
        b_order = np.concatenate([b_order[0] if len(b_order[0]) else np.zeros(n_d if len(b_order[1]) else 0, dtype=np.int64), b_order[1]])
        sup_pair, sup_score = (support.pair, support.score) if support is not None else (empty, np.empty(0))
        sup_start = np.searchsorted(sup_pair, np.arange(len(self.share) + 1, dtype=np.int64) * len(self.share))
        x, sp, b0, b1 = (np.where(own, per_row[:, hi] - per_row[:, lo], 0)  # range lengths of the owned withdrawals
                         for lo, hi in ((_X_LO, _X_HI), (_S_LO, _S_HI), (_B_LO0, _B_HI0), (_B_LO1, _B_HI1)))
        bound = int(x.sum() + np.maximum(sp, 0).sum() + np.maximum(m_hi - m_lo, 0).sum() + np.minimum(b0 + b1, o.max_cut_candidates).sum())
        del x, sp, b0, b1
        tables = _table(D, x_order), _table(D, b_order), _table(splits, s_order, offset=n_d)
        per_row, rate = per_row[visit], rate[visit]  # in the kernel's order (rebound: the unordered copies are freed)
        out = _scan_kernel(
            per_row, rate, *tables, m_table, m_rate,
            o.max_cut_candidates, self.share, self.window, o.min_lag_seconds, sup_pair, sup_score, sup_start,
            self.n_withdrawals, self.log_factorial, store, min_single, bound)
        del per_row, rate, tables
        return _Scan(_append(W, merges), _append(D, splits), *out)

    def _bands(self, D: _Rows, W: _Rows, rows: np.ndarray, tol: float, offset: int, deposit_counts: Counts,
               per_row: np.ndarray, rate: np.ndarray) -> np.ndarray:
        """Cut/fee bands of tolerance ``tol`` for withdrawals ``rows``: per row the two time-sorted
        ranges of deposits (its log amount bin and the one below, :func:`_cut_bins`) the band scan
        walks, positions from ``offset`` in this sorted copy of the deposits (returned)."""
        k = self.opts.max_cut_candidates
        d_bin, w_bin = _cut_bins(D.amount, tol), _cut_bins(W.amount[rows], tol)
        base = min(d_bin.min(initial=0), w_bin.min(initial=0)) - 2
        d_comp = ((d_bin - base) << _TIME_BITS) | D.t_first
        order = np.argsort(d_comp, kind="stable")
        d_comp = d_comp[order]
        starts = [((w_bin - shift - base) << _TIME_BITS) | W.t_first[rows] for shift in (0, 1)]
        queries = _query_order(starts[0])  # the bin below shifts every query's high bits alike: one order serves all four searches
        for start, lo_col, hi_col in ((starts[0], _B_LO0, _B_HI0), (starts[1], _B_LO1, _B_HI1)):
            lo = _searchsorted(d_comp, start, "left", queries)
            per_row[rows, lo_col] = offset + lo
            per_row[rows, hi_col] = offset + np.minimum(_searchsorted(d_comp, start + self.window, "right", queries), lo + 2 * k)
        low = np.ceil(W.amount[rows] * (1 - tol)).astype(np.int64)
        per_row[rows, _B_LOW] = low
        rate[rows, 1] = np.maximum(deposit_counts.between(low, W.amount[rows] - 1) / self.span, 1.0 / self.span)
        return order

    def score(self, pair: np.ndarray, e: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Pair score = summed evidence - log C(N_a, n), N_a = the source's withdrawals."""
        n_a, n = self.n_withdrawals[pair // len(self.share)], n.astype(np.int64)
        lf = self.log_factorial
        return e - (lf[n_a] - lf[n] - lf[np.maximum(n_a - n, 0)])

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


def _cash_like(amount: np.ndarray, opts: LinkOptions) -> np.ndarray:
    """Withdrawal amounts an ATM gives (multiples of ``cash_unit_cents``, at least ``min_cash_cents``)."""
    return (amount % opts.cash_unit_cents == 0) & (amount >= opts.min_cash_cents)


def _sorted_unique(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(a, return_index=True)`` of a sorted ``a`` without sorting it again."""
    start = np.flatnonzero(np.concatenate([[True], a[1:] != a[:-1]])) if len(a) else np.empty(0, dtype=np.int64)
    return a[start], start


def _fits_key(*amounts: np.ndarray) -> bool:
    """Do the amounts (cents) fit the composite sort key amount << _TIME_BITS | seconds? (below
    $85.9M; else the key is the amount's dense rank, which costs a sort of the distinct amounts)"""
    return max(a.max(initial=0) for a in amounts) < 2 ** (63 - _TIME_BITS)


def _rank_or_absent(uniq: np.ndarray, amount: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Rank of each amount among ``uniq``; amounts not in it get a rank no key has (len(uniq) + 1)
    (``order``: :func:`_query_order` of ``amount``, computed unless given)."""
    if not len(uniq):
        return np.ones(len(amount), dtype=np.int64)
    rank = _searchsorted(uniq, amount, order=order)
    return np.where(uniq[np.minimum(rank, len(uniq) - 1)] == amount, rank, len(uniq) + 1)


def _ranges(d_key: np.ndarray, d_time: np.ndarray, w_key: np.ndarray, w_time: np.ndarray, window: int, cap: int,
            d_order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deposits sorted by (key, time) (``d_order``, computed unless given) and, per withdrawal, the
    range [lo, hi) of those with its key within ``window`` after ``w_time``, at most ``cap``."""
    d_comp = (d_key.astype(np.int64) << _TIME_BITS) | d_time
    if d_order is None:
        d_order = np.argsort(d_comp, kind="stable")
    d_sorted = d_comp[d_order]
    w_comp = (w_key.astype(np.int64) << _TIME_BITS) | w_time
    order = _query_order(w_comp)
    lo = _searchsorted(d_sorted, w_comp, "left", order)
    hi = np.minimum(_searchsorted(d_sorted, w_comp + window, "right", order), lo + cap)
    return d_order, lo, hi


# columns of the per-withdrawal matrix the scan kernel walks (one row per withdrawal, in visit order)
_ROW_FIELDS = ("row", "own", "acc", "t", "amount", "x_lo", "x_hi", "b_lo0", "b_hi0", "b_lo1", "b_hi1", "b_low", "s_lo", "s_hi",
               "m_start", "m_end")
(_ROW, _OWN, _ACC, _T, _AMOUNT, _X_LO, _X_HI, _B_LO0, _B_HI0, _B_LO1, _B_HI1, _B_LOW, _S_LO, _S_HI, _M_START,
 _M_END) = range(len(_ROW_FIELDS))


def _table(D: _Rows, order: np.ndarray, offset: int = 0) -> np.ndarray:
    """Deposit rows ``order`` as a (n, 4) table: row (+ ``offset``: split sums follow the deposits),
    account, time of the last part, amount (sorted copies, so a withdrawal's range is read in one sweep)."""
    return np.stack([order + offset, D.account[order], D.t_last[order], D.amount[order]], axis=1)


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


def _assign(wi: np.ndarray, dj: np.ndarray, w_members: np.ndarray, d_members: np.ndarray, weight: np.ndarray,
            first_chunk: int = 1 << 16) -> np.ndarray:
    """:func:`assign` for candidates that use the rows ``w_members[wi]`` and ``d_members[dj]``.

    Few candidates win (~2 % at density), so the strongest are sorted and assigned a chunk at a
    time (each twice the last) and after each chunk the candidates that lost a row are dropped
    unsorted. The result is the full sort's: a chunk holds every candidate at least as strong as
    its weakest member, and a dropped candidate would have found a row used."""
    used_w = np.zeros(int(w_members.max(initial=-1)) + 1, dtype=np.bool_)
    used_d = np.zeros(int(d_members.max(initial=-1)) + 1, dtype=np.bool_)
    keep = np.zeros(len(weight), dtype=np.bool_)
    rest, size = np.arange(len(weight)), first_chunk
    while len(rest):
        if len(rest) > size:
            w = weight[rest]
            top = w >= np.partition(w, len(w) - size)[len(w) - size]
            chunk, rest = rest[top], rest[~top]
        else:
            chunk, rest = rest, rest[:0]
        _greedy(chunk[_strongest_first(weight[chunk])], wi, dj, w_members, d_members, used_w, used_d, keep)
        rest = _still_free(rest, wi, dj, w_members, d_members, used_w, used_d)
        size *= 2
    return np.flatnonzero(keep)


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
    """Row ids renumbered 0..k-1 (-1 pads kept) when they are much sparser than the entries, so
    flags per row id (a byte each) stay in proportion to the members; renumbering costs a sort."""
    members = np.ascontiguousarray(members)
    if members.max(initial=-1) < 16 * members.size + (1 << 20):
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


@numba.njit(cache=True, nogil=True, inline="always")
def _candidate(wi, dj, b, t_d, kind, rate, stamp, w_acc, w_t, share, window, min_lag,
               w_mark, w_best, w_touched, n_touched, store, c_wi, c_dj, c_kind, c_e, c_target, k):  # pragma: no cover
    """Withdrawal row ``wi`` may have become deposit row ``dj`` (account ``b``, last part at ``t_d``):
    unless in the same account or too late, its evidence goes to the withdrawal's best per target
    (and the candidate to storage)."""
    lag = t_d - w_t
    if b == w_acc or lag > window:
        return n_touched, k
    e = _evidence(share[b], rate, lag, min_lag)
    if w_mark[b] != stamp:
        w_mark[b], w_best[b] = stamp, e
        w_touched[n_touched] = b
        n_touched += 1
    else:
        w_best[b] = max(w_best[b], e)
    if store:
        c_wi[k], c_dj[k], c_kind[k], c_e[k], c_target[k] = wi, dj, kind, e, b
    return n_touched, k + 1


@numba.njit(cache=True, nogil=True)
def _scan_kernel(rows, rates, x_table, b_table, s_table, m_table, m_rate, k_cut, share, window, min_lag,
                 sup_pair, sup_score, sup_start, n_withdrawals, log_factorial, store, min_single, bound):  # pragma: no cover
    """:meth:`LinkEngine.scan`'s pass over the withdrawals (``rows``: one per withdrawal, by account
    then row id, columns ``_ROW_FIELDS``; ``rates``: exact, band, split): each owned withdrawal's
    candidates (exact, cut band, split, the merges it starts), the best per target, summed per pair
    when its source account is done (pairs in target order; a pair of one withdrawal only when its
    evidence is at least ``min_single``; when storing, with pass 1's support as their score where
    it has one, else :meth:`LinkEngine.score` of the sums). Returns (pair codes, e, n, score (when
    storing), candidates, and the stored candidates: wi, dj, kind, evidence, pair position)."""
    n_acc = len(share)
    w_mark = np.full(n_acc, -1, dtype=np.int64)
    w_best = np.empty(n_acc)
    w_touched = np.empty(n_acc, dtype=np.int64)
    s_mark = np.full(n_acc, -1, dtype=np.int64)
    s_e = np.zeros(n_acc)
    s_n = np.zeros(n_acc, dtype=np.int64)
    s_touched = np.empty(n_acc, dtype=np.int64)
    s_final = np.empty(n_acc, dtype=np.int64)
    size = bound if store else 0
    c_wi = np.empty(size, dtype=np.int32)
    c_dj = np.empty(size, dtype=np.int32)
    c_kind = np.empty(size, dtype=np.int8)
    c_e = np.empty(size)
    c_pair = np.empty(size, dtype=np.int64)
    c_target = np.empty(size, dtype=np.int32)
    capacity = bound if store else min(bound, 2 * len(rows) + 1024)  # pairs, far fewer than candidates: grown on demand
    p_code = np.empty(capacity, dtype=np.int64)
    p_e = np.empty(capacity)
    p_n = np.empty(capacity, dtype=np.int64)
    p_score = np.empty(capacity if store else 0)
    k, n_pairs, n_s, group_k, a = 0, 0, 0, 0, -1
    for v in range(len(rows) + 1):
        if v < len(rows) and rows[v, _OWN] == 0:
            continue
        if v == len(rows) or rows[v, _ACC] != a:  # the previous source account is done: its pairs, in target order
            distinct = np.sort(s_touched[:n_s])
            if n_pairs + n_s > len(p_code):
                capacity = max(2 * len(p_code), n_pairs + n_s)
                p_code, p_e, p_n = _grown(p_code, capacity), _grown(p_e, capacity), _grown(p_n, capacity)
            q, lo = n_pairs, sup_start[a]
            for x in range(n_s):
                b = distinct[x]
                n = s_n[b]
                if n >= 2 or s_e[b] >= min_single:
                    code = a * n_acc + b
                    p_code[q], p_e[q], p_n[q] = code, s_e[b], n
                    s_final[b] = q
                    if store:
                        hi = sup_start[a + 1]
                        while lo < hi:  # pass 1's pairs of a, from the previous target's place (targets ascend)
                            mid = (lo + hi) // 2
                            if sup_pair[mid] < code:
                                lo = mid + 1
                            else:
                                hi = mid
                        if lo < sup_start[a + 1] and sup_pair[lo] == code:
                            p_score[q] = sup_score[lo]
                        else:
                            n_a = n_withdrawals[a]
                            p_score[q] = s_e[b] - (log_factorial[n_a] - log_factorial[n] - log_factorial[max(n_a - n, 0)])
                    q += 1
                s_e[b], s_n[b] = 0.0, 0
            if store:
                for c in range(group_k, k):
                    c_pair[c] = s_final[c_target[c]]
            n_pairs, n_s, group_k = q, 0, k
            if v == len(rows):
                break
            a = rows[v, _ACC]
        n_t, i, t_i = 0, rows[v, _ROW], rows[v, _T]
        for p in range(rows[v, _X_LO], rows[v, _X_HI]):
            n_t, k = _candidate(i, x_table[p, 0], x_table[p, 1], x_table[p, 2], 0, rates[v, 0], v, a, t_i, share, window, min_lag,
                                w_mark, w_best, w_touched, n_t, store, c_wi, c_dj, c_kind, c_e, c_target, k)
        p0, p1, c = rows[v, _B_LO0], rows[v, _B_LO1], 0
        while c < k_cut and (p0 < rows[v, _B_HI0] or p1 < rows[v, _B_HI1]):  # the two bins in time order, ties to the first
            if p1 >= rows[v, _B_HI1] or (p0 < rows[v, _B_HI0] and b_table[p0, 2] <= b_table[p1, 2]):
                p, p0 = p0, p0 + 1
            else:
                p, p1 = p1, p1 + 1
            if rows[v, _B_LOW] <= b_table[p, 3] < rows[v, _AMOUNT]:
                c += 1
                n_t, k = _candidate(i, b_table[p, 0], b_table[p, 1], b_table[p, 2], 1, rates[v, 1], v, a, t_i, share, window, min_lag,
                                    w_mark, w_best, w_touched, n_t, store, c_wi, c_dj, c_kind, c_e, c_target, k)
        for p in range(rows[v, _S_LO], rows[v, _S_HI]):
            n_t, k = _candidate(i, s_table[p, 0], s_table[p, 1], s_table[p, 2], 2, rates[v, 2], v, a, t_i, share, window, min_lag,
                                w_mark, w_best, w_touched, n_t, store, c_wi, c_dj, c_kind, c_e, c_target, k)
        for m in range(rows[v, _M_START], rows[v, _M_END]):
            for p in range(m_table[m, 2], m_table[m, 3]):
                n_t, k = _candidate(m_table[m, 0], x_table[p, 0], x_table[p, 1], x_table[p, 2], 3, m_rate[m], v, a, m_table[m, 1], share, window, min_lag,
                                    w_mark, w_best, w_touched, n_t, store, c_wi, c_dj, c_kind, c_e, c_target, k)
        for x in range(n_t):  # the withdrawal is done: its best per target joins the pair sums
            b = w_touched[x]
            if s_mark[b] != a:
                s_mark[b] = a
                s_touched[n_s] = b
                n_s += 1
            s_e[b] += w_best[b]
            s_n[b] += 1
    end = k if store else 0
    return (p_code[:n_pairs], p_e[:n_pairs], p_n[:n_pairs], p_score[:n_pairs if store else 0], k,
            c_wi[:end], c_dj[:end], c_kind[:end], c_e[:end], c_pair[:end])


@numba.njit(cache=True, nogil=True)
def _grown(a, capacity):  # pragma: no cover - compiled
    """A copy of ``a`` with room for ``capacity`` entries."""
    out = np.empty(capacity, dtype=a.dtype)
    out[:len(a)] = a
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _rows_free(k, wi, dj, w_members, d_members, used_w, used_d):  # pragma: no cover - compiled
    """Are candidate k's rows ``w_members[wi[k]]``, ``d_members[dj[k]]`` all unused?"""
    w, d = w_members[wi[k]], d_members[dj[k]]
    for m in range(w_members.shape[1]):
        if (w[m] >= 0 and used_w[w[m]]) or (d[m] >= 0 and used_d[d[m]]):
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _greedy(order, wi, dj, w_members, d_members, used_w, used_d, keep):  # pragma: no cover - compiled
    """Keep candidate k (in ``order``) when none of its rows is used yet, and mark them used."""
    for k in order:
        if _rows_free(k, wi, dj, w_members, d_members, used_w, used_d):
            keep[k] = True
            w, d = w_members[wi[k]], d_members[dj[k]]
            for m in range(w_members.shape[1]):
                if w[m] >= 0:
                    used_w[w[m]] = True
                if d[m] >= 0:
                    used_d[d[m]] = True


@numba.njit(cache=True, nogil=True)
def _still_free(idx, wi, dj, w_members, d_members, used_w, used_d):  # pragma: no cover - compiled
    """The candidates of ``idx`` whose rows are all unused."""
    out = np.empty(len(idx), dtype=np.int64)
    n = 0
    for k in idx:
        if _rows_free(k, wi, dj, w_members, d_members, used_w, used_d):
            out[n] = k
            n += 1
    return out[:n]


@dataclass
class _Orientation:
    transfers: _Candidates
    evidence: np.ndarray
    pairs: pd.DataFrame  # per pair: score, n, ...
    n_candidates: int
    rates: Rates  # population rates behind the evidence (the second stage reuses them)


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

    def merged(self, blocks: int) -> "BlockGrid":
        """This grid with its blocks merged ``blocks`` at a time."""
        return BlockGrid(self.origin, self.length * max(1, blocks), self.reach)


def make_block(W: _Rows, D: _Rows, w_id: np.ndarray, d_id: np.ndarray, own: np.ndarray) -> Block:
    """A block from its rows (base rows of one side each, any order)."""
    return Block(_base_rows(W.account, W.amount, W.t_first), _base_rows(D.account, D.amount, D.t_first),
                 np.asarray(w_id, dtype=np.int64), np.asarray(d_id, dtype=np.int64), np.asarray(own, dtype=bool))


class _BlockSource:
    """The blocks of ``grid`` that own at least one withdrawal, built on demand by key (so forked
    workers build their own) as slices of W and D, which are in time order (:func:`_in_time_order`)."""

    def __init__(self, W: _Rows, D: _Rows, w_id: np.ndarray, d_id: np.ndarray, grid: BlockGrid):
        self.W, self.D, self.w_id, self.d_id, self.grid = W, D, w_id, d_id, grid
        self.keys = _sorted_unique(grid.index(W.t_first))[0]  # W is in time order

    def largest_rows(self) -> int:
        """Rows (withdrawals and deposits, halo included) of the largest block."""
        g, start = self.grid, self.grid.origin + self.keys * self.grid.length
        w = np.searchsorted(self.W.t_first, start + g.length + g.reach) - np.searchsorted(self.W.t_first, start)
        d = np.searchsorted(self.D.t_first, start + g.length + 2 * g.reach) - np.searchsorted(self.D.t_first, start)
        return int((w + d).max(initial=0))

    def __getitem__(self, k: int) -> Block:
        g = self.grid
        b0 = g.origin + k * g.length
        b1 = b0 + g.length
        w = slice(*np.searchsorted(self.W.t_first, [b0, b1 + g.reach]))
        d = slice(*np.searchsorted(self.D.t_first, [b0, b1 + 2 * g.reach]))
        return make_block(_take_rows(self.W, w), _take_rows(self.D, d), self.w_id[w], self.d_id[d], self.W.t_first[w] < b1)


def _in_time_order(rows: _Rows, ids: np.ndarray) -> tuple[_Rows, np.ndarray]:
    """Base rows and their ids sorted by time, ties in their given order (a stable sort; no copy
    when they are in order already)."""
    if _in_order(rows.t_first):
        return rows, ids
    order = np.argsort(rows.t_first, kind="stable")
    return _base_rows(rows.account[order], rows.amount[order], rows.t_first[order]), ids[order]


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
        per_withdrawal = max(engine.scan(W, D, np.arange(len(W)), rates, store=False).n_candidates / max(len(W), 1), 1.0)
        per_block = int(np.clip(opts.block_candidates / per_withdrawal, 20_000, 2_000_000))
    length = span if per_block >= n_w else max(int(span * per_block / n_w), 1)
    return BlockGrid(t_min, length, engine.reach)


def _global(members: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Block-local member positions -> ids in the run (-1 pads kept), as int32 when they fit: a
    run's transfers are kept until the end (~25M per run at 100M rows), their members are half of them."""
    out = np.where(members >= 0, ids[np.maximum(members, 0)], -1)
    return out.astype(np.int32) if len(ids) and ids.max() < 2 ** 31 else out


@dataclass
class Support:
    """Pair scores from pass 1, looked up by pair code (source * n_accounts + target)."""

    pair: np.ndarray  # sorted int64
    score: np.ndarray

    @classmethod
    def strongest(cls, pair: np.ndarray, score: np.ndarray, limit: int) -> "Support":
        """The ``limit`` highest scores (ties: the lower pair code, so every engine keeps the same)
        of pairs given in ascending code order."""
        if len(pair) > limit:
            kth = np.partition(-score, limit - 1)[limit - 1]
            tied = np.flatnonzero(-score == kth)
            keep = -score < kth
            keep[tied[:limit - int(keep.sum())]] = True
            pair, score = pair[keep], score[keep]
        return cls(np.ascontiguousarray(pair, dtype=np.int64), np.ascontiguousarray(score, dtype=np.float64))


@dataclass
class PairSums:
    """Per pair (code, ascending) of some withdrawals: their best candidates' summed evidence and
    how many withdrawals had one."""

    pair: np.ndarray  # int64
    e: np.ndarray
    n: np.ndarray  # int32


def block_pair_sums(engine: LinkEngine, rates: Rates, block: Block) -> tuple[PairSums, int]:
    """Pass 1 on one block: the pair sums of its owned withdrawals' candidates and how many
    candidates there were. Pairs of one withdrawal in the block are included when their evidence
    is at least ``support_min_evidence``: a pair that pays every few months has one transfer in a
    block and repeats only across blocks, but at density most one-offs are weak coincidences
    (~175M a 182-day block at the 100M-row set's density; ~7 % of them reach 12 nats)."""
    s = engine.scan(block.W, block.D, block.w_id, rates, block.own, store=False, min_single=engine.opts.support_min_evidence)
    return PairSums(s.pair, s.e, s.n.astype(np.int32)), s.n_candidates


class PairSpill:
    """Pass 1's pair sums of every block of a run, on disk in a private temporary folder (removed
    by :meth:`close`) until :meth:`support` adds them up: at the 100M-row set's density a 182-day
    block hands on ~30M pairs (20 bytes each). Written by the forked workers, read back by ranges of
    pair codes, so adding them up holds one range at a time."""

    FIELDS = ("pair", "e", "n")

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tracer-pass1-"))

    def write(self, key: int, sums: PairSums) -> None:
        for name in self.FIELDS:
            np.save(self.dir / f"{key}.{name}.npy", getattr(sums, name))

    def support(self, engine: LinkEngine, keys: list[int], limit: int, range_pairs: int = 8_000_000) -> Support:
        """Run-wide :meth:`LinkEngine.repeated_pairs` of the blocks ``keys`` (in block order), the
        ``limit`` strongest (:meth:`Support.strongest`; applied as ranges are read, which keeps the
        same pairs as applying it once at the end)."""
        n_acc = len(engine.share)
        ranges = max(1, -(-sum(len(np.load(self.dir / f"{k}.pair.npy", mmap_mode="r")) for k in keys) // range_pairs))
        bounds = (np.arange(ranges + 1, dtype=np.int64) * n_acc // ranges) * n_acc  # codes are source-major
        pairs, scores, held = [np.empty(0, np.int64)], [np.empty(0)], 0
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            got = self._read(keys, lo, hi)
            codes, score = engine.repeated_pairs(got["pair"].astype(np.int64), got["e"], got["n"])
            pairs.append(codes)
            scores.append(score)
            held += len(codes)
            if held > 2 * limit:
                kept = Support.strongest(np.concatenate(pairs), np.concatenate(scores), limit)
                pairs, scores, held = [kept.pair], [kept.score], len(kept.pair)
        return Support.strongest(np.concatenate(pairs), np.concatenate(scores), limit)

    def _read(self, keys: list[int], lo: int, hi: int) -> dict[str, np.ndarray]:
        """The blocks' sums of the pair codes in [lo, hi), in block order. Each file is mapped only
        while its slice is copied: mapped pages count as the process's resident memory, and kept
        mapped across ranges a run's ~6 GB of sums at 100M rows added to the parent's peak."""
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.FIELDS}
        for k in keys:
            pair = np.load(self.dir / f"{k}.pair.npy", mmap_mode="r")
            i, j = np.searchsorted(pair, [lo, hi])
            parts["pair"].append(np.array(pair[i:j]))
            del pair
            for name in self.FIELDS[1:]:
                parts[name].append(np.array(np.load(self.dir / f"{k}.{name}.npy", mmap_mode="r")[i:j]))
        return {name: np.concatenate(p) if p else np.empty(0) for name, p in parts.items()}

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def block_transfers(engine: LinkEngine, rates: Rates, block: Block, support: Support | None) -> tuple[_Candidates, np.ndarray, np.ndarray, int]:
    """Pass 2 on one block: the transfers its owned withdrawals take, as (candidates with run ids,
    evidence, weight, how many candidates the block had). The block's withdrawals and its halo
    compete for the deposits, as in one global assignment; only the owned withdrawals' transfers
    are returned. ``support``: pass 1's pair scores (None: the block is the whole run, and its own
    candidates give the support); a pair pass 1 did not carry is scored on this block's candidates."""
    s = engine.scan(block.W, block.D, block.w_id, rates, support=support)
    weight = s.evidence + np.maximum(s.score[s.pair_of], 0.0)
    chosen = _assign(s.wi, s.dj, s.W.members, s.D.members, weight)
    chosen = chosen[block.own[s.W.members[s.wi[chosen], 0]]]
    c = s.take(chosen)
    c.w_members = _global(c.w_members, block.w_id)
    c.d_members = _global(c.d_members, block.d_id)
    return c, s.evidence[chosen], weight[chosen], s.n_candidates


def resolve(parts: list[tuple]) -> tuple[_Candidates, np.ndarray]:
    """Join the blocks' transfers (``parts``: each starting with candidates, evidence and weight;
    emptied once joined, to free the blocks' copies); a row claimed by two neighbouring blocks
    (only possible near a block's end) goes to the stronger claim."""
    if not parts:
        return _no_candidates(), np.empty(0)
    n_parts = len(parts)
    c = _concat([p[0] for p in parts])
    e, weight = np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
    parts.clear()
    if n_parts > 1:
        keep = _settle_contested(c.w_members, c.d_members, weight)
        c, e = _take(c, keep), e[keep]
    return c, e


def _settle_contested(w_members: np.ndarray, d_members: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """:func:`assign` of the candidates, computed on the few that share a row with another: one
    that shares none is kept by it whatever the rest, and the others' choices do not depend on it."""
    contested = _shares_a_row(w_members) | _shares_a_row(d_members)
    among = np.flatnonzero(contested)
    kept = among[assign(w_members[among], d_members[among], weight[among])]
    return np.sort(np.concatenate([np.flatnonzero(~contested), kept]))


def _shares_a_row(members: np.ndarray) -> np.ndarray:
    """Per candidate (a row of ``members``: row ids, -1 padded): does another candidate use one of
    its rows? A byte per row id (:func:`_dense_members`)."""
    members = _dense_members(members)
    return _shares_a_row_kernel(members, int(members.max(initial=-1)) + 1)


@numba.njit(cache=True, nogil=True)
def _shares_a_row_kernel(members, n_rows):  # pragma: no cover - compiled
    uses = np.zeros(n_rows, dtype=np.uint8)  # 0, 1 or 2+ candidates use the row
    for i in range(members.shape[0]):
        for m in members[i]:
            if m >= 0 and uses[m] < 2:
                uses[m] += 1
    out = np.zeros(members.shape[0], dtype=np.bool_)
    for i in range(members.shape[0]):
        for m in members[i]:
            if m >= 0 and uses[m] > 1:
                out[i] = True
    return out


def _run_orientation(engine: LinkEngine, W: _Rows, D: _Rows, w_id: np.ndarray, d_id: np.ndarray, processes: int = 1,
                     label: str = "run", rates: Rates | None = None) -> _Orientation:
    """Candidates, evidence, assignment and pair scores of one orientation, streamed through time
    blocks (see :func:`block_pair_sums`, :func:`block_transfers`, :func:`resolve`). Only one
    block's candidates are in memory at a time per process (``processes`` > 1: blocks are shared
    out to forked workers); the rates behind the evidence are global: those of W and D unless
    ``rates`` are given. tracer/spark_link.py runs the same block functions partition by partition."""
    rates = engine.rates(W, D) if rates is None else rates
    (W, w_id), (D, d_id) = _in_time_order(W, w_id), _in_time_order(D, d_id)

    def probe_rows(start: int, width: int) -> tuple[_Rows, _Rows]:
        w = slice(*np.searchsorted(W.t_first, [start, start + width]))  # rows are in time order
        d = slice(*np.searchsorted(D.t_first, [start, start + width + 2 * engine.reach]))
        return _subset(W, w), _subset(D, d)

    t_min, t_max = (int(W.t_first.min()), int(W.t_first.max())) if len(W) else (0, 0)  # the grid starts at the earliest withdrawal
    grid = block_grid(engine, rates, len(W), t_min, t_max, probe_rows)
    single = grid.is_single(W)
    state = _BlockState(engine, rates, _BlockSource(W, D, w_id, d_id, engine.support_grid(grid, len(W) + len(D), t_min, t_max)))
    n_candidates = None if single else _pass_one_support(state, processes, label)
    state.source = _BlockSource(W, D, w_id, d_id, grid)
    parts = _map_blocks(state, _pass_two, processes, f"{label}, pass 2", CANDIDATE_BYTES * engine.opts.block_candidates)
    return orientation(engine, parts, n_candidates, rates)


def _pass_one_support(state: _BlockState, processes: int, label: str) -> int:
    """Pass 1 over ``state.source``'s blocks: sets ``state.support`` to the run-wide repeated pairs
    (:meth:`PairSpill.support`, at most ``support_pairs``) and returns how many candidates there were."""
    spill = state.spill = PairSpill()
    try:
        counts = _map_blocks(state, _pass_one, processes, f"{label}, pass 1", SUPPORT_ROW_BYTES * state.source.largest_rows())
        state.support = spill.support(state.engine, [int(k) for k in state.source.keys], state.engine.opts.support_pairs)
    finally:
        spill.close()
        state.spill = None
    return sum(counts)


@dataclass
class _BlockState:
    """What a block needs besides its rows (inherited by forked workers)."""

    engine: LinkEngine
    rates: Rates
    source: _BlockSource
    support: Support | None = None
    spill: PairSpill | None = None  # where pass 1's blocks put their pair sums


_FORKED = None  # the state forked workers of :func:`_fork_map` read (inherited, never pickled)


def _can_fork(processes: int) -> bool:
    return processes > 1 and "fork" in multiprocessing.get_all_start_methods()


def _fork_map(state, fn: Callable, items: list, processes: int) -> Iterator:
    """``fn(item)`` in ``processes`` forked workers that read ``state`` through fork; results in order."""
    global _FORKED
    _FORKED = state
    try:
        with ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("fork"),
                                 initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
            yield from pool.map(fn, items)
    finally:
        _FORKED = None


_PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): a signal for this process when its parent dies


def _exit_with_parent(parent: int) -> None:
    """Worker start-up: die with the process that forked it. A parent killed outright (SIGKILL,
    the OOM killer, a benchmark's timeout) cannot shut its pool down, and orphaned workers would
    go on computing blocks nobody reads. Linux only (prctl); elsewhere a no-op."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _pass_one(k: int, state: _BlockState | None = None) -> int:
    s = state or _FORKED
    sums, n_candidates = block_pair_sums(s.engine, s.rates, s.source[k])
    s.spill.write(k, sums)
    return n_candidates


def _pass_two(k: int, state: _BlockState | None = None) -> tuple[_Candidates, np.ndarray, np.ndarray, int]:
    s = state or _FORKED
    return block_transfers(s.engine, s.rates, s.source[k], s.support)


def _map_blocks(state: _BlockState, fn: Callable, processes: int, desc: str, block_bytes: float) -> list:
    """``fn`` over the blocks in order, here or in forked workers (results in block order); one
    process when ``processes`` blocks of ``block_bytes`` each would not fit in memory."""
    keys = [int(k) for k in state.source.keys]
    if processes > 1 and _available_memory() < processes * block_bytes:
        processes = 1
    bar = tqdm(total=len(keys), desc=f"  {desc}", unit="block", file=sys.stderr, leave=False,
               disable=not state.engine.opts.progress or len(keys) < 2)
    with bar:
        results = _fork_map(state, fn, keys, processes) if _can_fork(processes) and len(keys) > 1 else (fn(k, state) for k in keys)
        return [_tick(bar, r) for r in results]


def _tick(bar: tqdm, result):
    bar.update()
    return result


def orientation(engine: LinkEngine, parts: list[tuple[_Candidates, np.ndarray, np.ndarray, int]], n_candidates: int | None,
                rates: Rates) -> _Orientation:
    """Settle the blocks' transfers (in block order; ``parts`` is emptied) and score the pairs they form."""
    n_candidates = n_candidates if n_candidates is not None else sum(p[3] for p in parts)
    t, e_t = resolve(parts)
    return _Orientation(t, e_t, engine.pair_scores(_transfer_sums(engine, t, e_t)), n_candidates, rates)


def _transfer_sums(engine: LinkEngine, t: _Candidates, evidence: np.ndarray, keep: np.ndarray | None = None) -> pd.DataFrame:
    """Pair sums of settled transfers (those at ``keep``, default all; taken column by column, not
    as a copy of the transfers), indexed by pair code: evidence ``e``, its part from cut transfers
    ``e_cut`` and transfers ``n``, summed in withdrawal row id order."""
    pair, first, cut = engine.pair_code(t), t.w_members[:, 0], t.kind == KINDS.index("cut")
    if keep is not None:
        pair, first, cut, evidence = pair[keep], first[keep], cut[keep], evidence[keep]
    order = np.lexsort((first, pair))
    codes, start = _sorted_unique(pair[order])
    inverse = np.repeat(np.arange(len(codes)), np.diff(np.append(start, len(order))))
    e = evidence[order]
    return pd.DataFrame({"e": np.bincount(inverse, weights=e, minlength=len(codes)),
                         "e_cut": np.bincount(inverse, weights=np.where(cut[order], e, 0.0), minlength=len(codes)),
                         "n": np.bincount(inverse, minlength=len(codes))}, index=pd.Index(codes, name="pair"))


def expected_null_above(scores: np.ndarray, decoy: np.ndarray, tail_fraction: float = 0.01, min_tail: int = 25,
                        small_null_bound: bool = False) -> np.ndarray:
    """Expected number of null (coincidence-only) pairs scoring at least each of ``scores``.

    Below the decoys' upper tail this is the decoy count itself. In the tail the count is too
    small to use directly (it drops to 0 just above the largest decoy by chance), so the top
    ``tail_fraction`` of decoys (all of them when there are fewer than ``2 * min_tail``) is fitted
    with an exponential tail and extrapolated. ``small_null_bound``: a null of fewer than
    ``MIN_NULL`` decoys that cannot borrow a wider one is fitted with the upper 95 % confidence
    bound of the tail's scale, and one of fewer than 3 decoys tells nothing (infinite counts).
    """
    decoy_sorted = np.sort(decoy)
    counts = (len(decoy_sorted) - np.searchsorted(decoy_sorted, scores, side="left")).astype(np.float64)
    if len(decoy_sorted) < 3:
        return np.full(len(scores), np.inf) if small_null_bound else counts
    # a small null (a sparse stratum) is fitted whole: a target just above its few decoys is not certain
    n_tail = len(decoy_sorted) if len(decoy_sorted) < 2 * min_tail else max(min_tail, int(len(decoy_sorted) * tail_fraction))
    tail = decoy_sorted[-n_tail:]
    u, beta = tail[0], float(np.mean(tail - tail[0]))
    if beta <= 0:
        return counts
    if small_null_bound and len(decoy_sorted) < MIN_NULL:  # 2 n beta / scale ~ chi2(2 n): its 5 % quantile
        beta *= 2 * n_tail / chi2.ppf(0.05, 2 * n_tail)
    in_tail = scores >= u
    counts[in_tail] = n_tail * np.exp(-(scores[in_tail] - u) / beta)
    return counts


def _compete(pairs: pd.DataFrame, decoys: pd.DataFrame, own_null: bool = False) -> np.ndarray:
    """Target-decoy competition per account pair; sets ``pairs["q_value"]``, returns the null scores.

    Each pair keeps only the better of its forward (target) and mirrored (decoy) score. For pairs
    with no real flow both are coincidences, equally likely to win, so decoy winners estimate how
    many coincidental targets score as high. A real pair's own decoy can be inflated by its real
    structure (a payroll batch matches itself in mirrored time) and is suppressed by its stronger
    target instead of polluting the null. Targets that lose get q = 1. Each stratum (see
    ``pair_scores``) is a separate family with its own null; ``own_null``: however few decoys it
    has (see ``expected_null_above``), instead of borrowing a wider family's.
    """
    decoys = decoys[["score", "stratum"]]  # all it reads: a narrower frame to reindex and concatenate
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
            if own_null or in_null.sum() >= MIN_NULL:
                break
        q[sel] = _q_values(pairs["score"].to_numpy()[sel], null.loc[in_null, "score"].to_numpy(), own_null)
    pairs["q_value"] = q
    return null["score"].to_numpy()


def _q_values(target: np.ndarray, decoy: np.ndarray, small_null_bound: bool = False) -> np.ndarray:
    """q-value of each target score: min over thresholds s <= score of E[#null >= s] / #targets >= s."""
    order = np.argsort(-target, kind="stable")
    sorted_t = target[order]
    n_targets = np.arange(1, len(sorted_t) + 1)
    fdr = np.minimum(expected_null_above(sorted_t, decoy, small_null_bound=small_null_bound) / n_targets, 1.0)
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
            write_csv(getattr(self, name), path)
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
    with small_pages():  # big, short-lived arrays: huge-page faults stall (tracer/_pages.py)
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
    ``n_deposits``, ``run_pair()``: the forward orientation and the mirrored one (deposits
    *before* withdrawals), and ``account_rows()`` for the second stage.
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
        positions = np.int32 if len(tx) < 2 ** 31 else np.int64
        self.w_rows = np.flatnonzero((self.amount < 0) & ~stated).astype(positions)
        self.d_rows = np.flatnonzero((self.amount > 0) & ~stated).astype(positions)
        self.n_withdrawals, self.n_deposits = len(self.w_rows), len(self.d_rows)
        n = len(self.accounts)
        self.engine = make_engine(opts, np.bincount(codes[self.w_rows], minlength=n), np.bincount(codes[self.d_rows], minlength=n), self.t0, self.t1)

    def run_pair(self) -> tuple[_Orientation, _Orientation]:
        """The forward and the mirrored run: side by side in two forked processes when the machine
        has the cores and memory for both (they share the input through fork, nothing is pickled but
        results), else one after the other with their blocks shared out to the processes."""
        processes = self._processes()
        if _can_fork(processes) and self._both_runs_fit():
            forward, mirror = _fork_map((self, self.rates()), _run_forked, [False, True], 2)
            return forward, mirror
        forward = self.run(mirror=False, processes=processes)
        return forward, self.run(mirror=True, processes=processes, rates=forward.rates)

    def run(self, mirror: bool, processes: int = 1, rates: Rates | None = None) -> _Orientation:
        """One orientation; ``processes`` share out its blocks. ``rates``: the population rates
        (default: computed from this orientation's rows; both orientations' are the same but for
        the order of rows at the same second, and a pair of runs shares the forward one's)."""
        (W, w_id), (D, d_id) = self._side(self.w_rows, mirror, -1), self._side(self.d_rows, mirror, 1)
        return _run_orientation(self.engine, W, D, w_id, d_id, processes, "mirrored" if mirror else "forward", rates)

    def rates(self) -> Rates:
        """The forward orientation's population rates (:meth:`LinkEngine.rates`)."""
        return self.engine.rates(self._side(self.w_rows, False, -1)[0], self._side(self.d_rows, False, 1)[0])

    def _side(self, rows: np.ndarray, mirror: bool, sign: int) -> tuple[_Rows, np.ndarray]:
        """Rows ``rows`` (positions) as base rows in time order (ties in input order) and their row ids."""
        t = self.t1 - self.seconds[rows] if mirror else self.seconds[rows] - self.t0
        order = np.argsort(t, kind="stable")
        rows = rows[order]
        return _base_rows(self.codes[rows], sign * self.amount[rows], t[order]), self.row_id[rows]

    def account_rows(self, codes: np.ndarray) -> pd.DataFrame:
        """The rows (not stated) of the accounts ``codes`` in row id order: row_id, code, amount
        (positive cents), s (seconds since 1970) and deposit."""
        rows = np.concatenate([self.w_rows, self.d_rows])
        rows = rows[np.isin(self.codes[rows], codes)]
        frame = pd.DataFrame({"row_id": self.row_id[rows], "code": self.codes[rows], "amount": np.abs(self.amount[rows]),
                              "s": self.seconds[rows], "deposit": self.amount[rows] > 0})
        return frame.sort_values("row_id", kind="stable").reset_index(drop=True)

    def _processes(self) -> int:
        """As configured, or automatically: 2 on a machine with 2+ cores for an input of 50,000+ withdrawals."""
        processes = self.engine.opts.processes
        if processes is None:
            processes = min(2, os.cpu_count() or 1) if self.n_withdrawals >= 50_000 else 1
        return processes

    def _both_runs_fit(self) -> bool:
        """Does memory allow two whole runs at once? Each holds its rows, sort orders and population
        rates (~120 bytes per row) and at the peak a block: of candidates in pass 2, of rows spanning
        ``support_days`` in pass 1. Measured 198 bytes per row for a whole run at 10M rows, and one
        of two forked runs at 100M rows was OOM-killed at 12.4 GB."""
        rows = self.n_withdrawals + self.n_deposits
        opts = self.engine.opts
        support_rows = min(rows * self.engine.support_span / max(self.t1 - self.t0, 1), opts.support_rows)
        block = max(CANDIDATE_BYTES * opts.block_candidates, SUPPORT_ROW_BYTES * support_rows)
        return _available_memory() >= 2 * (120 * rows + block)


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
    runs, rates = _FORKED
    return runs.run(mirror=mirror, processes=1, rates=rates)


def infer_from_runs(runs, opts: LinkOptions) -> LinkResult:
    """Link inference given an engine's orientation runs (:class:`LocalRuns` or Spark's): the
    forward and the mirrored run; first q-values against the whole mirrored run decide which rows
    confident links explain, the final ones are against the mirrored pairs without those rows;
    then the second stage and the output frames."""
    engine, accounts = runs.engine, runs.accounts
    n_accounts = len(accounts)
    forward, mirrored = runs.run_pair()
    pairs = forward.pairs
    _compete(pairs, mirrored.pairs)
    # Rows explained by confident forward links are not free to coincide in the forward run (the
    # assignment gave them to their real partner); leave the mirrored transfers that use them out of
    # the null as well, so that coincidences in both directions draw on the same leftover rows.
    explained = _take(forward.transfers, np.flatnonzero(pairs["q_value"].reindex(engine.pair_code(forward.transfers)).to_numpy() <= opts.protect_q))
    members = np.concatenate([explained.w_members.ravel(), explained.d_members.ravel()])
    decoy_scores = _compete(pairs, _unexplained_pairs(engine, mirrored, members[members >= 0]))
    del explained, members
    _keep_rates_only(mirrored)  # the second stage needs only its rates: free its transfers before the output frames
    second: dict = {}
    if opts.second_stage:
        forward, second_decoys, second = _second_stage(runs, forward, mirrored)
        pairs, decoy_scores = forward.pairs, np.concatenate([decoy_scores, second_decoys])
    inferred = _transfer_frame(forward, runs.t0, accounts, engine, pairs["q_value"])
    n_candidates = forward.n_candidates
    del forward  # its transfers are in the frame now
    pair_index = pd.MultiIndex.from_arrays([accounts[pairs.index.to_numpy() // n_accounts], accounts[pairs.index.to_numpy() % n_accounts]])
    pair_stats = pd.DataFrame({"score": pairs["score"].to_numpy() / np.log(10), "q_value": pairs["q_value"].to_numpy()}, index=pair_index)
    stated = runs.stated
    transfers = pd.concat([inferred, _stated_transfers(stated, engine.window)], ignore_index=True) if len(stated) else inferred
    transfers["kind"] = pd.Categorical(transfers["kind"], categories=list(KINDS))
    all_links = _link_frame(transfers, pair_stats)
    links = all_links[all_links["q_value"] <= opts.max_q].reset_index(drop=True)
    stats = {
        "withdrawals": runs.n_withdrawals, "deposits": runs.n_deposits,
        "candidates": n_candidates, "decoy_candidates": mirrored.n_candidates,
        "stated_rows": len(stated),
        "transfers": len(transfers), "pairs_tested": len(pairs), "decoy_pairs": len(decoy_scores),
        "links": len(links), **second,
    }
    return LinkResult(transfers, links, all_links, decoy_scores, opts, stats)


def _keep_rates_only(o: _Orientation) -> None:
    """Drop an orientation's transfers, evidence and pairs (at 100M rows several GB), keeping its
    rates and candidate count."""
    o.transfers, o.evidence, o.pairs = _no_candidates(), np.empty(0), o.pairs.iloc[:0]


def _unexplained_pairs(engine: LinkEngine, mirrored: _Orientation, explained_rows: np.ndarray) -> pd.DataFrame:
    """Pair scores of the mirrored run's transfers that use none of ``explained_rows`` (input row ids).

    A rerun without those rows would let other coincidences take some of their places; this
    cheaper null lacks them, which measured slightly less conservative (docs/method.md)."""
    t = mirrored.transfers
    used = np.isin(t.w_members, explained_rows) & (t.w_members >= 0)
    used |= np.isin(t.d_members, explained_rows) & (t.d_members >= 0)
    keep = np.flatnonzero(~used.any(axis=1))
    return engine.pair_scores(_transfer_sums(engine, t, mirrored.evidence, keep))


def _second_stage(runs, forward: _Orientation, mirrored: _Orientation) -> tuple[_Orientation, np.ndarray, dict]:
    """The pairs between accounts already confidently relaying cash, tested again on the rows that
    confident links leave unexplained (docs/method.md section 6).

    Context: the sources and targets of links with q <= ``protect_q`` whose evidence is mostly
    cash band (a cut kept from cash-like withdrawals). Every confident link's rows are explained
    and set aside; the context's other rows give the account statistics (explaining away: a relay's
    confident inflows no longer make its other deposits look like coincidences), the population
    rates stay the first stage's. The context sources' withdrawals are matched to the context
    targets' deposits, forward and mirrored, on the driver (few rows, same code for every engine),
    scored with pooled multiplicity (:func:`_pooled_scores`); the pairs not already confident form
    one family with its own null. Their transfers replace the first stage's that share a row with
    them, and pairs tested again take the second stage's score and q-value. Returns the forward
    run so combined (``pairs`` with q-values), the second stage's null scores and counts for the stats.
    """
    engine, pairs = runs.engine, forward.pairs
    opts, n_acc = engine.opts, len(runs.accounts)
    t, e = forward.transfers, forward.evidence
    code = engine.pair_code(t)
    confident_pairs = pairs.index[pairs["q_value"].to_numpy() <= opts.protect_q]
    confident = np.isin(code, confident_pairs)
    cash_band = np.where((t.kind == KINDS.index("cut")) & _cash_like(t.amount_out, opts), e, 0.0)
    sums = pd.DataFrame({"e": e[confident], "cash": cash_band[confident]}).groupby(code[confident]).sum()
    relay = sums.index.to_numpy(np.int64)[sums["cash"].to_numpy() > sums["e"].to_numpy() / 2]
    sources, targets = np.unique(relay // n_acc), np.unique(relay % n_acc)
    stats = {"second_stage_accounts": len(np.union1d(sources, targets)), "second_stage_pairs": 0, "second_stage_links": 0}
    if not len(relay):
        return forward, np.empty(0), stats
    rows = runs.account_rows(np.union1d(sources, targets))
    rows = rows[~rows["row_id"].isin(np.concatenate([t.w_members[confident].ravel(), t.d_members[confident].ravel()]))]
    w = rows[~rows["deposit"] & rows["code"].isin(sources)]
    d = rows[rows["deposit"] & rows["code"].isin(targets)]
    w_code, d_code = w["code"].to_numpy(np.int64), d["code"].to_numpy(np.int64)
    remaining_deposits = runs.n_deposits - int((t.d_members[confident] >= 0).sum())
    engine2 = LinkEngine(opts, np.bincount(d_code, minlength=n_acc) / max(remaining_deposits, 1),
                         np.bincount(w_code, minlength=n_acc), engine.span)
    cash = _cash_like(w["amount"].to_numpy(np.int64), opts)
    cash_rows, n_cash = w["row_id"].to_numpy(np.int64)[cash], np.bincount(w_code[cash], minlength=n_acc)

    def run(first: _Orientation, mirror: bool) -> tuple[_Orientation, pd.DataFrame]:
        def side(r: pd.DataFrame) -> _Rows:
            s = r["s"].to_numpy(np.int64)
            return _base_rows(r["code"].to_numpy(np.int32), r["amount"].to_numpy(np.int64), runs.t1 - s if mirror else s - runs.t0)
        o = _run_orientation(engine2, side(w), side(d), w["row_id"].to_numpy(np.int64), d["row_id"].to_numpy(np.int64),
                             label="second stage", rates=first.rates)
        scored = _pooled_scores(engine2, o, cash_rows, n_cash)
        return o, scored[~scored.index.isin(confident_pairs)]

    (fwd2, pairs2), (_, null2) = run(forward, False), run(mirrored, True)
    null_scores = _compete(pairs2, null2, own_null=True)
    keep2 = np.flatnonzero(np.isin(engine.pair_code(fwd2.transfers), pairs2.index))
    t2 = _take(fwd2.transfers, keep2)
    clash = (np.isin(t.w_members, t2.w_members[t2.w_members >= 0]).any(axis=1)
             | np.isin(t.d_members, t2.d_members[t2.d_members >= 0]).any(axis=1))
    keep1 = np.flatnonzero(~clash & ~np.isin(code, pairs2.index))
    combined = pd.concat([pairs[~pairs.index.isin(pairs2.index)], pairs2])
    stats.update(second_stage_pairs=len(pairs2), second_stage_links=int((pairs2["q_value"] <= opts.max_q).sum()))
    return (_Orientation(_concat([_take(t, keep1), t2]), np.concatenate([e[keep1], fwd2.evidence[keep2]]), combined,
                         forward.n_candidates, forward.rates), null_scores, stats)


def _pooled_scores(engine: LinkEngine, o: _Orientation, cash_rows: np.ndarray, n_cash: np.ndarray) -> pd.DataFrame:
    """A run's pairs scored with pooled multiplicity, all in one family (stratum 4):
    e - ln C(C_a, c) - ln C(N_a - C_a, n - c), C_a the source's cash-like withdrawals (``n_cash``)
    and c the pair's transfers that start with one (``cash_rows``): a cash relay can only come from
    a cash-like withdrawal, so each class is its own pool of chances to coincide."""
    pairs = o.pairs.copy()
    c = pd.Series(np.isin(o.transfers.w_members[:, 0], cash_rows)).groupby(engine.pair_code(o.transfers)).sum()
    c = c.reindex(pairs.index).to_numpy(np.int64)
    a, n, lf = pairs["a"].to_numpy(), pairs["n"].to_numpy(np.int64), engine.log_factorial
    n_a, c_a = engine.n_withdrawals[a], n_cash[a]
    pairs["score"] = pairs["e"].to_numpy() - (lf[c_a] - lf[c] - lf[c_a - c]) - (lf[n_a - c_a] - lf[n - c] - lf[n_a - c_a - n + c])
    pairs["stratum"] = np.int8(4)
    return pairs


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
    """The transfers as the output frame, by time, source and target (ties in run order). The order
    comes from numeric keys and each column is built once in it: at 100M rows a frame sort would
    copy ~40M rows of strings."""
    t = o.transfers
    name_rank = np.empty(len(accounts), dtype=np.int64)
    name_rank[np.argsort(accounts, kind="stable")] = np.arange(len(accounts))
    order = np.lexsort((name_rank[t.target], name_rank[t.source], t.t_out))
    return pd.DataFrame({
        "withdrawal_rows": _join_rows(t.w_members[order]),
        "deposit_rows": _join_rows(t.d_members[order]),
        "source": accounts[t.source[order]],
        "target": accounts[t.target[order]],
        "amount_out": t.amount_out[order] / 100.0,
        "amount_in": t.amount_in[order] / 100.0,
        "kind": pd.Categorical.from_codes(t.kind[order], categories=list(KINDS)),
        "first_time": pd.to_datetime(t.t_out[order] + t0, unit="s"),
        "lag_hours": t.lag[order] / 3600.0,
        "evidence": o.evidence[order],
        "link_q_value": pair_q.reindex(engine.pair_code(t)[order]).to_numpy(),
    })


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

