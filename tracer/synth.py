"""Scenario generator: synthetic bank exports with the ground truth of who paid whom.

Every scenario is a list of *events* (account, signed amount in cents, second since the start) and
of *transfers* (one withdrawal event -> one or more deposit events).  Events are generated in
vectorized numpy per stream (wages, rent, groceries, ...) and per block of accounts; the block is
then sorted by time and the truth files point at the final 0-based data-row indices.

Large runs are produced block by block (all relationships -- landlord, employer, friends, a whole
criminal network -- are kept inside one block), so memory is bounded by the block size, not the run.
``docs/scenarios.md`` describes the scenarios, their parameters and their summary statistics.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tracer._io import atomic_path, atomic_write

SCENARIOS: tuple[str, ...] = ("datajam", "careful", "cash_relay")
ROLES: tuple[str, ...] = ("normal", "low_level", "intermediary", "upper_tier")
PERSONAS: tuple[str, ...] = ("normal", "landlord", "employer", "cash_earner", "wealthy", "family", "criminal")
KINDS: tuple[str, ...] = ("legit", "criminal")
CHANNELS: tuple[str, ...] = ("transfer", "cash_relay")

NORMAL, LOW, INTER, UPPER = range(4)
P_NORMAL, P_LANDLORD, P_EMPLOYER, P_CASH, P_WEALTHY, P_FAMILY, P_CRIMINAL = range(7)
LEGIT, CRIMINAL = 0, 1
TRANSFER, RELAY = 0, 1

DAY, HOUR, MINUTE = 86_400, 3_600, 60
START = "2023-01-01"
DEFAULTS = {
    "datajam": {"accounts": 998, "years": 1.0, "networks": 1},
    "careful": {"accounts": 2_000, "years": 1.0, "networks": 3},
    "cash_relay": {"accounts": 2_000, "years": 1.0, "networks": 3},
}
# rough rows per account-year for block sizing: (structural, everyday at activity 1)
_ROWS_PER_ACCOUNT_YEAR = {"datajam": (25, 9), "careful": (60, 140), "cash_relay": (60, 140)}
_BLOCK_ROWS = 3_000_000  # target rows per block (memory ~ 60 bytes/row while a block is built)
_MIN_BLOCK_ACCOUNTS = 2_000
_SAMPLE_ROWS = 2_000_000  # rows kept for amount quantiles in describe()
_CODE = {name: i + 1 for i, name in enumerate(SCENARIOS)}
HEADER = b"client_id,amount,date,time\n"


# --------------------------------------------------------------------------------------- calendar
def _norm(w) -> np.ndarray:
    w = np.asarray(w, dtype=float)
    return w / w.sum()


_TOD = {  # hour-of-day weights
    "uniform": _norm(np.ones(24)),
    "retail": _norm([.3, .15, .1, .08, .08, .15, .4, 1, 1.6, 2, 2.4, 2.8,
                     3.2, 3, 2.8, 2.7, 2.9, 3.3, 3.4, 3, 2.4, 1.7, 1.1, .6]),
    "night": _norm([2, 3, 4, 5, 5, 4, 3, 1.5, .6, .3, .2, .2,
                    .1, .1, .1, .1, .1, .1, .1, .1, .1, .2, .4, 1]),
    "office": _norm([.05] * 7 + [.5, 2, 3, 3, 3, 2.5, 3, 3, 3, 2.5, 1.5, .5] + [.1] * 5),
    "evening": _norm([1.5, 1.2, .8, .4, .2, .2, .2, .3, .4, .5, .6, .8,
                      1, 1, 1, 1.1, 1.3, 1.7, 2.2, 2.6, 2.8, 2.7, 2.3, 1.9]),
}


class _Cal:
    """Day arithmetic relative to the start date (day 0 = start, t in seconds since start)."""

    def __init__(self, start: str, years: float):
        self.start = np.datetime64(start, "D")
        self.days = max(7, int(round(years * 365.25)))
        self.T = self.days * DAY
        self.dow0 = int((self.start.astype(np.int64) + 3) % 7)  # Monday = 0 (1970-01-01 was a Thursday)
        months = np.arange(self.start.astype("M8[M]") - 1, (self.start + self.days).astype("M8[M]") + 2)
        starts = (months.astype("M8[D]") - self.start).astype(np.int64)
        self.mstart, self.mlen = starts[:-1], np.diff(starts)
        self.mnum = months[:-1].astype(np.int64) % 12  # 0 = January
        day = np.arange(self.days)
        dow = self.dow(day)
        month_of_day = self.mnum[np.searchsorted(self.mstart, day, side="right") - 1]
        season = 1 + 0.2 * (month_of_day == 11) - 0.1 * (month_of_day == 0)
        self.w_retail = _norm(np.where(dow >= 5, 1.3, 1.0) * season)
        self.w_business = _norm(np.where(dow >= 5, 0.1, 1.0))
        self.w_flat = None

    def dow(self, day):
        return (np.asarray(day) + self.dow0) % 7

    def roll_back(self, day):
        """Move a Saturday/Sunday to the Friday before (payroll, loan postings)."""
        d = self.dow(day)
        return day - np.where(d == 5, 1, np.where(d == 6, 2, 0))


def _tod(rng, n: int, profile: str) -> np.ndarray:
    return rng.choice(24, n, p=_TOD[profile]).astype(np.int64) * HOUR + rng.integers(0, HOUR, n)


def _poisson(rng, cal: _Cal, acc: np.ndarray, rate_per_day, weights=None, profile="retail"):
    """Poisson stream per account: returns (account, t)."""
    counts = rng.poisson(np.broadcast_to(np.asarray(rate_per_day, float), acc.shape) * cal.days)
    a = np.repeat(acc, counts)
    day = rng.integers(0, cal.days, a.size) if weights is None else rng.choice(cal.days, a.size, p=weights)
    return a, day.astype(np.int64) * DAY + _tod(rng, a.size, profile)


def _monthly(cal: _Cal, acc: np.ndarray, dom: np.ndarray):
    """One event per account and month on day-of-month ``dom`` (0 = last day): (account, month, day)."""
    nm = cal.mstart.size
    a = np.repeat(acc, nm)
    m = np.tile(np.arange(nm), acc.size)
    d = np.repeat(np.asarray(dom), nm)
    ml = cal.mlen[m]
    return a, m, cal.mstart[m] + np.where(d <= 0, ml - 1, np.minimum(d, ml) - 1)


_PPY = np.array([12.0, 24.0, 26.0, 52.0])  # monthly, semi-monthly, biweekly, weekly


def _paydays(rng, cal: _Cal, acc: np.ndarray, freq: np.ndarray):
    """Pay dates per account by frequency code: (account, day)."""
    A, D = [], []
    m = acc[freq == 0]
    if m.size:
        dom = rng.choice(np.array([0, 1, 15, 25, 28]), m.size, p=[.45, .15, .15, .15, .1])
        a, _, day = _monthly(cal, m, dom)
        A.append(a), D.append(cal.roll_back(day))
    s = acc[freq == 1]
    for dom in (15, 0):
        if s.size:
            a, _, day = _monthly(cal, s, np.full(s.size, dom))
            A.append(a), D.append(cal.roll_back(day))
    first_friday = (4 - cal.dow0) % 7
    for f, step in ((2, 14), (3, 7)):
        b = acc[freq == f]
        if b.size:
            phase = first_friday + 7 * rng.integers(0, step // 7, b.size) - rng.integers(0, 2, b.size)
            k = np.arange(-1, cal.days // step + 2)
            A.append(np.repeat(b, k.size)), D.append((phase[:, None] + step * k[None, :]).ravel())
    if not A:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(A), np.concatenate(D)


# ------------------------------------------------------------------------------------------ money
def _cents(x) -> np.ndarray:
    return np.maximum(np.rint(np.asarray(x, float) * 100).astype(np.int64), 1)


def _round_to(cents: np.ndarray, unit) -> np.ndarray:
    unit = np.asarray(unit, np.int64)
    return np.maximum((cents + unit // 2) // unit * unit, unit)


def _nonround(rng, cents: np.ndarray) -> np.ndarray:
    cents = cents.copy()
    whole = cents % 100 == 0
    cents[whole] += rng.integers(1, 100, int(whole.sum()))
    return cents


def _lognormal(rng, median, sigma, n):
    return np.asarray(median, float) * np.exp(rng.normal(0.0, sigma, n))


def _lag_legit(rng, n: int) -> np.ndarray:
    """Bank transfer lag: mostly minutes, some hours, sometimes the next day."""
    u = rng.random(n)
    minutes = np.clip(np.exp(rng.normal(np.log(12 * MINUTE), 1.0, n)), 60, 3 * HOUR)
    hours = np.exp(rng.uniform(np.log(HOUR), np.log(6 * HOUR), n))
    nextday = rng.uniform(12 * HOUR, 30 * HOUR, n)
    return np.where(u < .72, minutes, np.where(u < .9, hours, nextday)).astype(np.int64)


def _loguniform(rng, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n)).astype(np.int64)


# ----------------------------------------------------------------------------------------- events
class _Events:
    """Append-only event and transfer store of one block (local account indices)."""

    def __init__(self):
        self.a, self.c, self.t, self.n = [], [], [], 0
        self.tr = {k: [] for k in ("w", "src", "dst", "out", "inn", "kind", "chan")}
        self.ntr = 0
        self.parts_tr, self.parts_ev = [], []

    def add(self, a, cents, t) -> np.ndarray:
        a = np.asarray(a, np.int64)
        n = a.size
        self.a.append(a)
        self.c.append(np.broadcast_to(np.asarray(cents, np.int64), (n,)))
        self.t.append(np.broadcast_to(np.asarray(t, np.int64), (n,)))
        idx = np.arange(self.n, self.n + n)
        self.n += n
        return idx

    def transfers(self, rng, src, dst, t_out, out, lag, inn=None, kind=LEGIT, chan=TRANSFER,
                  split_p: float = 0.0) -> np.ndarray:
        """Withdrawal of ``out`` from src at t_out, deposit(s) of ``inn`` into dst ``lag`` later.

        With probability ``split_p`` the deposit arrives as 2-3 parts summing exactly to ``inn``
        within a few hours.  Returns the time the last part lands (money available to dst).
        """
        src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
        n = src.size
        if n == 0:
            return np.zeros(0, np.int64)
        out = np.asarray(out, np.int64)
        inn = out if inn is None else np.asarray(inn, np.int64)
        t_out = np.asarray(t_out, np.int64)
        w = self.add(src, -out, t_out)
        k = np.ones(n, np.int64)
        if split_p > 0:
            sp = (rng.random(n) < split_p) & (inn >= 2_000)
            k[sp] = rng.integers(2, 4, int(sp.sum()))
        tid = np.repeat(np.arange(n), k)
        first = np.cumsum(k) - k
        rank = np.arange(tid.size) - first[tid]
        wt = rng.uniform(0.25, 1.0, tid.size)
        share = wt / np.bincount(tid, wt)[tid]
        part = np.floor(inn[tid] * share).astype(np.int64)
        part[first] += inn - np.bincount(tid, part, minlength=n).astype(np.int64)
        gap = np.where(rank > 0, rng.integers(5 * MINUTE, 3 * HOUR, tid.size), 0)
        cum = np.cumsum(gap)
        off = cum - (cum[first] - gap[first])[tid]
        t_in = t_out + np.maximum(np.asarray(lag, np.int64), 60)
        d = self.add(dst[tid], part, t_in[tid] + off)
        ids = self.ntr + np.arange(n)
        for key, val in (("w", w), ("src", src), ("dst", dst), ("out", out), ("inn", inn),
                         ("kind", np.full(n, kind, np.int8)), ("chan", np.full(n, chan, np.int8))):
            self.tr[key].append(np.asarray(val))
        self.parts_tr.append(ids[tid])
        self.parts_ev.append(d)
        self.ntr += n
        last = np.zeros(n, np.int64)
        np.maximum.at(last, tid, off)
        return t_in + last


@dataclass
class _Block:
    client_id: np.ndarray  # int64, sorted by time
    cents: np.ndarray
    t: np.ndarray
    rows_per_account: np.ndarray  # counts for every account of the block (zeros included)
    tr: dict  # truth transfers: w_row, src, dst, out, inn, kind, chan (ids), parts (ragged rows)


def _finalize(ev: _Events, ids: np.ndarray, T: int) -> _Block:
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
    a, c, t = cat(ev.a, np.int64), cat(ev.c, np.int64), cat(ev.t, np.int64)
    valid = np.flatnonzero((t >= 0) & (t < T) & (c != 0))
    order = valid[np.lexsort((valid, t[valid]))]
    row = np.full(a.size, -1, np.int64)
    row[order] = np.arange(order.size)
    tr = {k: cat(v, np.int64) for k, v in ev.tr.items()}
    ptr, pev = cat(ev.parts_tr, np.int64), cat(ev.parts_ev, np.int64)
    prow = row[pev]
    bad = np.bincount(ptr[prow < 0], minlength=ev.ntr) > 0
    keep = (row[tr["w"]] >= 0) & ~bad if ev.ntr else np.zeros(0, bool)
    # withdrawal strictly before its deposits is guaranteed by lag >= 60 s
    kept = np.flatnonzero(keep)
    wrow = row[tr["w"][kept]]
    o = np.argsort(wrow, kind="stable")
    kept, wrow = kept[o], wrow[o]
    new_index = np.full(ev.ntr, -1, np.int64)
    new_index[kept] = np.arange(kept.size)
    pmask = keep[ptr]
    pt, pr = new_index[ptr[pmask]], prow[pmask]
    po = np.lexsort((pr, pt))
    pt, pr = pt[po], pr[po]
    truth = {"w_row": wrow, "src": ids[tr["src"][kept]], "dst": ids[tr["dst"][kept]],
             "out": tr["out"][kept], "inn": tr["inn"][kept], "kind": tr["kind"][kept],
             "chan": tr["chan"][kept], "part_tr": pt, "part_row": pr}
    return _Block(client_id=ids[a[order]], cents=c[order], t=t[order],
                  rows_per_account=np.bincount(a[order], minlength=ids.size), tr=truth)


# ------------------------------------------------------------------------------------ normal life
@dataclass
class _Attrs:
    inc: np.ndarray  # monthly net income, currency units
    act: np.ndarray  # spending activity multiplier
    cashp: np.ndarray  # cash preference
    freq: np.ndarray  # pay frequency code
    salaried: np.ndarray
    housing: np.ndarray  # 0 none, 1 rent, 2 mortgage
    house_cents: np.ndarray
    car: np.ndarray
    hh: np.ndarray  # household size / spending scale
    ext_wage: np.ndarray  # wage paid from outside the data
    ext_rent: np.ndarray  # rent paid to a landlord outside the data


def _attrs(rng, persona: np.ndarray) -> _Attrs:
    n = persona.size
    inc = _lognormal(rng, 3_600, 0.55, n)
    inc = np.where(persona == P_WEALTHY, _lognormal(rng, 16_000, 0.6, n), inc)
    inc = np.where(persona == P_FAMILY, inc * 0.35, inc)
    inc = np.where(persona == P_LANDLORD, inc * 1.4, inc)
    inc = np.clip(inc, 600, 150_000)
    housing = rng.choice(3, n, p=[.1, .55, .35])
    housing = np.where(np.isin(persona, (P_WEALTHY, P_LANDLORD)), 2, housing)
    housing = np.where((persona == P_FAMILY) & (housing == 2), 1, housing)
    share = rng.uniform(0.2, 0.4, n)
    rent = _round_to(_cents(inc * share), np.where(rng.random(n) < .7, 2_500, 500))
    mortgage = _nonround(rng, _cents(inc * share * rng.uniform(0.8, 1.3, n)))
    return _Attrs(
        inc=inc, act=_lognormal(rng, 1.0, 0.35, n), cashp=_lognormal(rng, 1.0, 0.8, n),
        freq=rng.choice(4, n, p=[.33, .25, .37, .05]), salaried=rng.random(n) < .7,
        housing=housing, house_cents=np.where(housing == 1, rent, mortgage),
        car=rng.random(n) < .75, hh=_lognormal(rng, 1.0, 0.3, n) * (inc / 3_600) ** 0.25,
        ext_wage=(persona != P_EMPLOYER) & ~((persona == P_CASH) & (rng.random(n) < .6)),
        ext_rent=housing == 1,
    )


def _wage_amounts(rng, at: _Attrs, a, day, freq_a, cal: _Cal) -> np.ndarray:
    per = at.inc[a] * 12.0 / _PPY[freq_a]
    n = at.inc.size
    raise_day = rng.integers(0, cal.days, n)
    raise_f = rng.uniform(1.01, 1.06, n)
    per = per * np.where(day >= raise_day[a], raise_f[a], 1.0)
    hourly = rng.normal(1.0, 0.08, a.size)
    bonus = np.where(rng.random(a.size) < .02, rng.uniform(1.3, 2.5, a.size), 1.0)
    return _cents(per * np.where(at.salaried[a], 1.0, np.clip(hourly, .6, 1.5)) * bonus)


# (name, probability, median monthly amount, spread across accounts, month-to-month noise, seasonal)
_BILLS = (
    ("electricity", .8, 95.0, .4, .15, .3),
    ("heating", .35, 70.0, .45, .2, .7),
    ("water", .3, 45.0, .3, .1, 0.0),
    ("phone", .85, 68.0, .3, .0, 0.0),
    ("internet", .7, 72.0, .25, .0, 0.0),
    ("insurance", .5, 140.0, .5, .0, 0.0),
    ("streaming", .6, 14.0, .35, .0, 0.0),
    ("streaming2", .25, 11.0, .35, .0, 0.0),
    ("gym", .15, 45.0, .4, .0, 0.0),
    ("car_loan", .35, 420.0, .35, .0, 0.0),
)


def _life(ev: _Events, rng, cal: _Cal, idx: np.ndarray, at: _Attrs, persona: np.ndarray, activity: float):
    """Ordinary banking life of the accounts ``idx`` (vectorized stream by stream).

    ``activity`` scales everyday life: the share of accounts holding each bill, card payment and
    savings sweep, and the rates of the spending and cash streams.  Income and housing do not scale.
    """
    if idx.size == 0:
        return
    # wages from employers outside the data
    w = idx[at.ext_wage[idx]]
    a, day = _paydays(rng, cal, w, at.freq[w])
    ev.add(a, _wage_amounts(rng, at, a, day, at.freq[a], cal), day * DAY + _tod(rng, a.size, "night"))
    # housing: rent to a landlord outside the data, or a mortgage
    r = idx[at.ext_rent[idx]]
    a, m, day = _monthly(cal, r, np.ones(r.size, np.int64))
    day = day + rng.choice(np.arange(-3, 3), a.size, p=[.05, .1, .25, .35, .15, .1])
    ev.add(a, -at.house_cents[a], day * DAY + _tod(rng, a.size, "retail"))
    mo = idx[at.housing[idx] == 2]
    a, m, day = _monthly(cal, mo, rng.choice(np.array([1, 15]), mo.size, p=[.7, .3]))
    ev.add(a, -at.house_cents[a], cal.roll_back(day) * DAY + _tod(rng, a.size, "night"))
    # monthly bills
    scale = (at.inc / 3_600) ** 0.3
    for name, p, med, spread, noise, seasonal in _BILLS:
        has = idx[rng.random(idx.size) < p * activity]
        base = _lognormal(rng, med, spread, has.size) * scale[has] * at.hh[has] ** .5
        a, m, day = _monthly(cal, has, rng.integers(1, 29, has.size))
        basemap = np.zeros(at.inc.size)
        basemap[has] = base
        amt = basemap[a] * (1 + seasonal * np.cos(2 * np.pi * cal.mnum[m] / 12)) * np.clip(
            rng.normal(1, noise, a.size), .3, 3)
        cents = _cents(amt)
        if name.startswith("streaming"):
            cents = _round_to(cents, 100) - 1  # 13.99-style prices
        ev.add(a, -cents, day * DAY + _tod(rng, a.size, "night"))
    # credit card payment: monthly, large, varying
    cc = idx[rng.random(idx.size) < .55 * activity]
    a, m, day = _monthly(cal, cc, rng.integers(1, 29, cc.size))
    frac = np.zeros(at.inc.size)
    frac[cc] = rng.uniform(.04, .3, cc.size)
    ev.add(a, -_cents(at.inc[a] * frac[a] * _lognormal(rng, 1, .45, a.size)), day * DAY + _tod(rng, a.size, "office"))
    # savings sweep to an outside account
    sv = idx[rng.random(idx.size) < .3 * activity]
    a, m, day = _monthly(cal, sv, rng.integers(1, 29, sv.size))
    amt = np.zeros(at.inc.size, np.int64)
    amt[sv] = _round_to(_cents(at.inc[sv] * rng.uniform(.04, .2, sv.size)), 5_000)
    ev.add(a, -amt[a], day * DAY + _tod(rng, a.size, "night"))
    # groceries, card spends, fuel
    act, hh = at.act * activity, at.hh
    a, t = _poisson(rng, cal, idx, act[idx] * rng.uniform(.05, .15, idx.size), cal.w_retail)
    ev.add(a, -_cents(_lognormal(rng, 42, .6, a.size) * hh[a]), t)
    a, t = _poisson(rng, cal, idx, act[idx] * rng.uniform(.03, .15, idx.size) * scale[idx], cal.w_retail)
    ev.add(a, -_cents(_lognormal(rng, 19, .95, a.size) * scale[a]), t)
    car = idx[at.car[idx]]
    a, t = _poisson(rng, cal, car, act[car] * rng.uniform(.03, .09, car.size), cal.w_retail)
    ev.add(a, -_cents(rng.uniform(22, 90, a.size)), t)
    # ATM withdrawals (multiples of $20) and occasional cash deposits
    notes = np.array([1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 50])
    pn = _norm([6, 12, 8, 6, 10, 4, 3, 6, 2, 2, 3, 1, .3])
    cashp = at.cashp[idx] * activity
    a, t = _poisson(rng, cal, idx, np.where(persona[idx] == P_CASH, .015, .035) * cashp, cal.w_retail)
    ev.add(a, -2_000 * rng.choice(notes, a.size, p=pn), t)
    a, t = _poisson(rng, cal, idx, .004 * cashp, cal.w_retail, "office")
    ev.add(a, 2_000 * rng.choice(notes[:9], a.size, p=_norm(pn[:9])), t)
    # larger purchases, refunds, yearly tax refund
    a, t = _poisson(rng, cal, idx, 5 / 365 * activity * (at.inc[idx] / 3_600) ** .5, cal.w_retail)
    ev.add(a, -_cents(_lognormal(rng, 420, .8, a.size) * scale[a]), t)
    a, t = _poisson(rng, cal, idx, 3 / 365 * act[idx], None, "office")
    ev.add(a, _cents(_lognormal(rng, 35, .9, a.size)), t)
    tx = idx[rng.random(idx.size) < .45]
    a, m, day = _monthly(cal, tx, rng.integers(1, 29, tx.size))
    sel = np.isin(cal.mnum[m], (2, 3, 4)) & (rng.random(a.size) < 1 / 3)
    a, day = a[sel], day[sel]
    ev.add(a, _cents(_lognormal(rng, 900, .7, a.size) * scale[a]), day * DAY + _tod(rng, a.size, "night"))
    # cash-heavy honest earners: regular cash deposits, spent by themselves
    ce = idx[persona[idx] == P_CASH]
    if ce.size:
        wk = rng.uniform(1, 3, ce.size)
        ratemap = np.zeros(at.inc.size)
        ratemap[ce] = wk / 7
        a, t = _poisson(rng, cal, ce, ratemap[ce], cal.w_business, "evening")
        mean = at.inc[a] * 12 / 52 / (ratemap[a] * 7)
        unit = rng.choice(np.array([500, 100, 1]), ce.size, p=[.6, .25, .15])
        umap = np.ones(at.inc.size, np.int64)
        umap[ce] = unit
        ev.add(a, _round_to(_cents(mean * _lognormal(rng, 1, .35, a.size)), umap[a]), t)
    # wealthy: big irregular money in and out
    we = idx[persona[idx] == P_WEALTHY]
    if we.size:
        a, t = _poisson(rng, cal, we, 6 / 365, cal.w_business, "office")
        big = _cents(_lognormal(rng, 25_000, .8, a.size) * at.inc[a] / 16_000)
        unit = rng.choice(np.array([10_000, 100_000, 1]), a.size, p=[.4, .2, .4])
        ev.add(a, _round_to(big, unit), t)
        a, t = _poisson(rng, cal, we, 5 / 365, cal.w_business, "office")
        big = _cents(_lognormal(rng, 20_000, .9, a.size) * at.inc[a] / 16_000)
        unit = rng.choice(np.array([10_000, 100_000, 1]), a.size, p=[.3, .4, .3])
        ev.add(a, -_round_to(big, unit), t)


# ------------------------------------------------------------------------ legitimate relationships
def _relationships(ev: _Events, rng, cal: _Cal, persona: np.ndarray, role: np.ndarray, at: _Attrs,
                   activity: float):
    """Landlords, employers, family support and friends: real money moves inside the data.

    ``activity`` scales only the everyday business around them (landlords' repairs, employers'
    revenue and supplier payments: fewer events of the same size)."""
    n = persona.size
    people = persona != P_EMPLOYER
    honest = role == NORMAL
    # landlords: identical rent from several tenants every month
    lords = np.flatnonzero((persona == P_LANDLORD) & honest)
    renters = np.flatnonzero((at.housing == 1) & people & (persona != P_LANDLORD))
    if lords.size and renters.size:
        tenants = renters[rng.random(renters.size) < .45]
        weight = _lognormal(rng, 1, 1.0, lords.size)
        lord = lords[rng.choice(lords.size, tenants.size, p=_norm(weight))]
        price = _round_to(_cents(_lognormal(rng, 1_500, .35, (n, 2))), 2_500)
        level = (rng.random(tenants.size) < .3).astype(np.int64)
        at.house_cents[tenants] = price[lord, level]
        at.ext_rent[tenants] = False
        lord_of = np.full(n, -1, np.int64)
        lord_of[tenants] = lord
        a, m, day = _monthly(cal, tenants, np.ones(tenants.size, np.int64))
        day = day + rng.choice(np.arange(-3, 3), a.size, p=[.05, .1, .25, .35, .15, .1])
        t = day * DAY + _tod(rng, a.size, "retail")
        ev.transfers(rng, a, lord_of[a], t, at.house_cents[a], _lag_legit(rng, a.size))
        # the landlord's own costs: property mortgages, repairs
        a, m, day = _monthly(cal, lords, rng.integers(1, 29, lords.size))
        ev.add(a, -_nonround(rng, _cents(_lognormal(rng, 2_500, .5, a.size))), day * DAY + _tod(rng, a.size, "night"))
        a, t = _poisson(rng, cal, lords, 8 / 365 * activity, cal.w_business, "office")
        ev.add(a, -_cents(_lognormal(rng, 300, 1.0, a.size)), t)
    # employers: payroll to several employees
    emps = np.flatnonzero(persona == P_EMPLOYER)
    earners = np.flatnonzero(at.ext_wage & people & (persona != P_WEALTHY))
    if emps.size and earners.size:
        hired = earners[rng.random(earners.size) < .3]
        weight = _lognormal(rng, 1, 1.0, emps.size)
        boss = np.concatenate([emps[: min(emps.size, hired.size)],
                               emps[rng.choice(emps.size, max(hired.size - emps.size, 0), p=_norm(weight))]])
        at.ext_wage[hired] = False
        efreq = rng.choice(np.array([1, 2]), n, p=[.4, .6])
        at.freq[hired] = efreq[boss]
        ach = rng.random(n) < .7  # next-morning settlement; others pay instantly
        run_tod = rng.integers(13 * HOUR, 20 * HOUR, n)
        pa_, pday = _paydays(rng, cal, emps, efreq[emps])
        # expand each employer pay run to its employees
        order = np.argsort(boss, kind="stable")
        hired_s, boss_s = hired[order], boss[order]
        first = np.searchsorted(boss_s, pa_, "left")
        cnt = np.searchsorted(boss_s, pa_, "right") - first
        run = np.repeat(np.arange(pa_.size), cnt)
        pos = np.arange(run.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        emp = hired_s[first[run] + pos]
        er, day = pa_[run], pday[run]
        t_out = (day - 1) * DAY + run_tod[er] + pos * rng.integers(1, 4, run.size)
        lag_ach = day * DAY + _tod(rng, run.size, "night") - t_out
        lag = np.where(ach[er], lag_ach, _lag_legit(rng, run.size))
        ev.transfers(rng, er, emp, t_out, _wage_amounts(rng, at, emp, day, at.freq[emp], cal), lag)
        # business activity: revenue in, suppliers and tax out
        payroll = np.bincount(boss, at.inc[hired], minlength=n)[emps] * 12 + 30_000
        rate = rng.uniform(3, 9, emps.size) / 7
        rev = payroll * rng.uniform(1.3, 2.2, emps.size)
        a, t = _poisson(rng, cal, emps, rate * activity, cal.w_business, "office")
        meanmap = np.zeros(n)
        meanmap[emps] = rev / (rate * 365)
        ev.add(a, _cents(meanmap[a] * _lognormal(rng, 1, .6, a.size) / 1.2), t)
        srate = rng.uniform(1, 4, emps.size) / 7
        meanmap[emps] = rev * .25 / (srate * 365)
        a, t = _poisson(rng, cal, emps, srate * activity, cal.w_business, "office")
        ev.add(a, -_cents(meanmap[a] * _lognormal(rng, 1, .7, a.size) / 1.28), t)
        a, m, day = _monthly(cal, emps, np.full(emps.size, 15))
        meanmap[emps] = payroll * .2 / 12
        ev.add(a, -_cents(meanmap[a] * rng.normal(1, .05, a.size)), cal.roll_back(day) * DAY + _tod(rng, a.size, "office"))
    # family support: a relative sends a round amount most months
    deps = np.flatnonzero(persona == P_FAMILY)
    givers = np.flatnonzero(people & honest & (persona != P_FAMILY) & (at.inc > np.median(at.inc)))
    if deps.size and givers.size:
        giver = givers[rng.integers(0, givers.size, deps.size)]
        giver = np.where(giver == deps, givers[0], giver)
        ok = giver != deps
        deps, giver = deps[ok], giver[ok]
        amt = _round_to(_cents(_lognormal(rng, 400, .5, deps.size)), 5_000)
        gmap = np.full(n, -1, np.int64)
        gmap[deps] = giver
        amap = np.zeros(n, np.int64)
        amap[deps] = amt
        a, m, day = _monthly(cal, deps, rng.integers(1, 29, deps.size))
        keep = rng.random(a.size) < .85
        a, day = a[keep], day[keep] + rng.integers(-2, 3, int(keep.sum()))
        ev.transfers(rng, gmap[a], a, day * DAY + _tod(rng, a.size, "evening"), amap[a], _lag_legit(rng, a.size))
    # friends: occasional round-ish transfers in both directions
    pool = np.flatnonzero(people)
    if pool.size > 2:
        npairs = int(.5 * pool.size)
        x, y = pool[rng.integers(0, pool.size, npairs)], pool[rng.integers(0, pool.size, npairs)]
        ok = (x != y) & ~((role[x] != NORMAL) & (role[y] != NORMAL))
        x, y = x[ok], y[ok]
        key = np.unique(np.minimum(x, y) * n + np.maximum(x, y))
        x, y = key // n, key % n
        cnt = rng.poisson(_lognormal(rng, 3, .7, x.size) * cal.days / 365)
        px, py = np.repeat(x, cnt), np.repeat(y, cnt)
        flip = rng.random(px.size) < .5
        src, dst = np.where(flip, py, px), np.where(flip, px, py)
        roundish = np.array([20, 25, 30, 40, 50, 60, 75, 80, 100, 120, 150, 200, 250, 300, 400, 500, 750, 1000])
        pr = _norm(1 / np.arange(1, roundish.size + 1) ** .8)
        amt = np.where(rng.random(src.size) < .72, rng.choice(roundish, src.size, p=pr) * 100,
                       _cents(_lognormal(rng, 45, .8, src.size)))
        day = rng.choice(cal.days, src.size, p=cal.w_retail)
        ev.transfers(rng, src, dst, day * DAY + _tod(rng, src.size, "evening"), amt, _lag_legit(rng, src.size))


# ------------------------------------------------------------------------------- criminal networks
def _atm_relay(ev: _Events, rng, src, dst, t_ready, total_cents, cut_lo=.05, cut_hi=.15):
    """Cash relay: src withdraws ``total`` at ATMs ($20 notes, $1,000/day, consecutive days), dst
    deposits each withdrawal minus a 5-15% cut 1-24 h later.  Relays of one source never overlap
    days.  Returns (arrival times, deposited cents) of every leg."""
    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    total = np.maximum(total_cents // 2_000 * 2_000, 10_000)
    nchunk = -(-total // 100_000)
    # ready day; consecutive-day chunks; a source's relays never share a day (daily limit)
    order = np.lexsort((t_ready, src))
    src, dst, t_ready, total, nchunk = src[order], dst[order], t_ready[order], total[order], nchunk[order]
    day0 = t_ready // DAY + 1  # next day, at a fresh ATM visit
    start = np.empty_like(day0)
    for s in np.unique(src):  # one pass per account (vectorized cummax recurrence)
        i = np.flatnonzero(src == s)
        C = np.cumsum(nchunk[i]) - nchunk[i]
        start[i] = C + np.maximum.accumulate(day0[i] - C)
    k = np.repeat(np.arange(total.size), nchunk)
    j = np.arange(k.size) - np.repeat(np.cumsum(nchunk) - nchunk, nchunk)
    per = -(-total // (nchunk * 2_000)) * 2_000  # even $20-multiple chunks, the last one smaller
    amount = np.where(j < nchunk[k] - 1, per[k], total[k] - (nchunk[k] - 1) * per[k])
    t_w = (start[k] + j) * DAY + _tod(rng, k.size, "retail")
    cut = rng.uniform(cut_lo, cut_hi, k.size)
    unit = rng.choice(np.array([1_000, 500, 100]), k.size, p=[.45, .35, .2])
    keep = amount * (1 - cut)
    inn = np.rint(keep / unit).astype(np.int64) * unit
    off = (inn > amount * (1 - cut_lo)) | (inn < amount * (1 - cut_hi))
    inn[off] = np.rint(keep[off] / 100).astype(np.int64) * 100  # whole dollars when notes don't fit
    # a courier never deposits exactly what an ATM gave ($20 notes): no equal-amount pair exists
    twenty = inn % 2_000 == 0
    step = np.where(unit == 100, 100, unit)
    inn[twenty] += np.where(inn[twenty] > amount[twenty] * (1 - (cut_lo + cut_hi) / 2), -1, 1) * step[twenty]
    lag = rng.integers(HOUR, 24 * HOUR, k.size)
    arrival = ev.transfers(rng, src[k], dst[k], t_w, amount, lag, inn=inn, kind=CRIMINAL, chan=RELAY)
    return dst[k], arrival, inn


def _network(ev: _Events, rng, cal: _Cal, lows, ints, upper, channel: int):
    """A careful network (transfer or cash-relay channel)."""
    lows, ints = np.asarray(lows), np.asarray(ints)
    m = ints.size
    target = np.full(m, -1)  # -1: upper tier; j: intermediary ints[j]
    if m >= 3:
        target[:-1] = np.where(rng.random(m - 1) < .35, m - 1, -1)
    inbox = [[] for _ in range(m)]  # (times, cents) arriving at each intermediary
    first_monday = (7 - cal.dow0) % 7
    weeks = np.arange(-1, cal.days // 7 + 2)
    net_scale = _lognormal(rng, 1, .3, 1)[0]
    primary = rng.permutation(np.resize(np.arange(m), lows.size))
    for i, low in enumerate(lows):
        d1 = rng.integers(0, 7)
        days = first_monday + 7 * weeks[:, None] + np.array([d1, d1 + rng.integers(3, 5)])[None, :]
        days = days.ravel() + np.where(rng.random(days.size) < .3, rng.integers(-1, 2, days.size), 0)
        days = np.sort(days[rng.random(days.size) > .1])
        t_col = days * DAY + _tod(rng, days.size, "evening")
        base = _lognormal(rng, 1_300, .35, 1)[0] * net_scale
        unit = rng.choice(np.array([500, 2_000]), days.size, p=[.7, .3])
        col = _round_to(_cents(base * np.clip(rng.normal(1, .18, days.size), .5, 1.6)), unit)
        ev.add(np.full(days.size, low), col, t_col)
        fwd = rng.random(days.size) < .9
        frac = np.clip(rng.uniform(.6, .95) * rng.normal(1, .04, days.size), .55, .97)
        dest = np.where(rng.random(days.size) < .85, primary[i], rng.integers(0, m, days.size))
        t_ready = t_col + np.clip(np.exp(rng.normal(np.log(6 * HOUR), 1.0, days.size)), 20 * MINUTE, 40 * HOUR).astype(np.int64)
        sel = np.flatnonzero(fwd)
        out = _nonround(rng, _cents(col[sel] / 100 * frac[sel]))
        if channel == TRANSFER:
            arr = ev.transfers(rng, np.full(sel.size, low), ints[dest[sel]], t_ready[sel], out,
                               _loguniform(rng, 5 * MINUTE, 60 * HOUR, sel.size), kind=CRIMINAL, split_p=.2)
            for j in range(m):
                s = dest[sel] == j
                inbox[j].append((arr[s], out[s]))
        else:
            d, arr, inn = _atm_relay(ev, rng, np.full(sel.size, low), ints[dest[sel]], t_ready[sel], out)
            for j in range(m):
                s = d == ints[j]
                inbox[j].append((arr[s], inn[s]))
    for j in range(m):  # targets come later in the order, so their inbox is complete when processed
        if not inbox[j]:
            continue
        t_in = np.concatenate([x[0] for x in inbox[j]])
        c_in = np.concatenate([x[1] for x in inbox[j]])
        o = np.argsort(t_in, kind="stable")
        t_in, c_in = t_in[o], c_in[o]
        sizes = rng.integers(2, 6, t_in.size)
        ends = np.cumsum(sizes)
        batch = np.searchsorted(ends, np.arange(t_in.size), side="right")
        nb = batch[-1] + 1
        total = np.bincount(batch, c_in, minlength=nb)
        last = np.zeros(nb, np.int64)
        np.maximum.at(last, batch, t_in)
        t_ready = last + _loguniform(rng, HOUR, 24 * HOUR, nb)
        dst = np.full(nb, upper) if target[j] < 0 else np.full(nb, ints[target[j]])
        if channel == TRANSFER:
            cut = np.clip(rng.uniform(.01, .15) * rng.uniform(.7, 1.3, nb), .005, .2)
            out = _nonround(rng, _cents(total / 100 * (1 - cut)))
            arr = ev.transfers(rng, np.full(nb, ints[j]), dst, t_ready, out,
                               _loguniform(rng, 5 * MINUTE, 60 * HOUR, nb), kind=CRIMINAL, split_p=.2)
            if target[j] >= 0:
                inbox[target[j]].append((arr, out))
        else:
            out = _cents(total / 100 * rng.uniform(.9, 1.0, nb))
            d, arr, inn = _atm_relay(ev, rng, np.full(nb, ints[j]), dst, t_ready, out)
            if target[j] >= 0:
                inbox[target[j]].append((arr, inn))
    # the upper tier: the sink; large purchases and cash, keeps the rest
    scale = lows.size / 10
    a, t = _poisson(rng, cal, np.array([upper]), 1.6 / 7 * scale, cal.w_retail)
    ev.add(a, -_nonround(rng, _cents(_lognormal(rng, 2_500, .8, a.size))), t)
    a, t = _poisson(rng, cal, np.array([upper]), 1.5 / 7 * scale, cal.w_retail)
    ev.add(a, -2_000 * rng.integers(10, 51, a.size), t)


def _datajam_life(ev: _Events, rng, cal: _Cal, idx: np.ndarray, activity: float):
    """The seed's normal accounts (mockaroo style: uniform times, uniform amounts in ranges);
    ``activity`` scales the rates of the small and larger withdrawals."""
    n = idx.size
    wage = rng.uniform(1_800, 6_500, n)
    wmap = np.zeros(idx.max() + 1 if n else 1)
    wmap[idx] = wage
    a, m, day = _monthly(cal, idx, rng.integers(1, 29, n))
    day = day + rng.integers(-2, 3, a.size)
    ev.add(a, _cents(wmap[a] * rng.uniform(.95, 1.05, a.size)), day * DAY + _tod(rng, a.size, "uniform"))
    rent = np.zeros_like(wmap, dtype=np.int64)
    rent[idx] = _cents(np.round(rng.uniform(.25, .45, n) * wage))
    a, m, day = _monthly(cal, idx, rng.integers(1, 6, n))
    ev.add(a, -rent[a], day * DAY + _tod(rng, a.size, "uniform"))
    a, t = _poisson(rng, cal, idx, rng.uniform(2, 8, n) / 365 * activity, None, "uniform")
    ev.add(a, -_cents(rng.uniform(5, 150, a.size)), t)
    a, t = _poisson(rng, cal, idx, rng.uniform(.5, 1.8, n) / 365 * activity, None, "uniform")
    ev.add(a, -_cents(rng.uniform(250, 1_500, a.size)), t)


def _datajam_network(ev: _Events, rng, cal: _Cal, lows, ints, upper):
    """The seed's network: weekly cash in, exactly $500 out to an intermediary, on to the top."""
    lows, ints = np.asarray(lows), np.asarray(ints)
    inter_w, inter_t = [], []
    weeks = np.arange(cal.days // 7 + 1)
    for i, low in enumerate(lows):
        days = weeks * 7 + rng.integers(0, 7) + rng.integers(-1, 2, weeks.size)
        t_col = days * DAY + _tod(rng, weeks.size, "uniform")
        ev.add(np.full(weeks.size, low), _round_to(_cents(rng.uniform(900, 2_000) * rng.normal(1, .15, weeks.size)), 1_000), t_col)
        k = rng.integers(1, 3, weeks.size)
        t_w = np.repeat(t_col, k) + rng.integers(HOUR, 3 * DAY, k.sum())
        dst = np.full(t_w.size, ints[i % ints.size])
        arr = ev.transfers(rng, np.full(t_w.size, low), dst, t_w, np.full(t_w.size, 50_000),
                           rng.integers(5 * MINUTE, 2 * HOUR, t_w.size), kind=CRIMINAL)
        inter_w.append(dst), inter_t.append(arr)
    src = np.concatenate(inter_w)
    t_out = np.concatenate(inter_t) + rng.integers(10 * MINUTE, 6 * HOUR, src.size)
    ev.transfers(rng, src, np.full(src.size, upper), t_out, np.full(src.size, 50_000),
                 rng.integers(5 * MINUTE, 2 * HOUR, src.size), kind=CRIMINAL)
    a, t = _poisson(rng, cal, np.array([upper]), 1.5 / 7 * lows.size / 10, None, "uniform")
    ev.add(a, -_cents(_lognormal(rng, 1_200, .8, a.size)), t)


# ------------------------------------------------------------------------------------------- plan
@dataclass
class _Plan:
    scenario: str
    seed: int
    accounts: int
    years: float
    networks: int
    activity: float
    cal: _Cal
    ids: np.ndarray
    persona: np.ndarray
    role: np.ndarray
    netid: np.ndarray
    nets: list  # per network: (block, lows, ints, upper) as global indices
    block_accounts: int
    nblocks: int

    @property
    def params(self) -> dict:
        return {"scenario": self.scenario, "seed": self.seed, "accounts": self.accounts, "years": self.years,
                "networks": self.networks, "activity": self.activity, "start": str(self.cal.start), "days": self.cal.days,
                "block_accounts": self.block_accounts, "blocks": self.nblocks}


def _network_sizes(rng, k: int, scenario: str) -> list[tuple[int, int]]:
    lows = np.round(np.linspace(5, 15, k)).astype(int) if k > 1 else np.array([10])
    ints = 2 + np.arange(k) % 3
    lows, ints = rng.permutation(lows), rng.permutation(ints)
    sizes = [(int(lo), int(i)) for lo, i in zip(lows, ints)]
    if scenario == "datajam" and k >= 1:
        sizes[0] = (10, 3)
    return sizes


def _plan(scenario: str, seed: int, accounts, years, networks, block_accounts=None, activity: float = 1.0) -> _Plan:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    d = DEFAULTS[scenario]
    accounts = int(d["accounts"] if accounts is None else accounts)
    years = float(d["years"] if years is None else years)
    networks = int(d["networks"] if networks is None else networks)
    activity = float(activity)
    if years <= 0 or networks < 0 or not activity >= 0:
        raise ValueError("years must be > 0, networks >= 0 and activity >= 0")
    rng = np.random.default_rng([int(seed), _CODE[scenario], 0])
    cal = _Cal(START, years)
    sizes = _network_sizes(rng, networks, scenario) if networks else []
    ncrim = sum(lo + i + 1 for lo, i in sizes)
    if accounts < ncrim + 20:
        raise ValueError(f"{accounts} accounts cannot hold {networks} network(s) of {ncrim} members")
    if block_accounts is None:
        structural, everyday = _ROWS_PER_ACCOUNT_YEAR[scenario]
        per = (structural + everyday * activity) * cal.days / 365
        block_accounts = max(_MIN_BLOCK_ACCOUNTS, int(_BLOCK_ROWS / per))
    block_accounts = max(int(block_accounts), ncrim + 20 if scenario == "datajam" else max(lo + i + 21 for lo, i in sizes) if sizes else 20)
    nblocks = max(1, math.ceil(accounts / block_accounts))
    role = np.zeros(accounts, np.int8)
    netid = np.full(accounts, -1, np.int64)
    nets = []
    if scenario == "datajam":
        ids = np.arange(1, accounts + 1, dtype=np.int64)
        persona = np.full(accounts, P_NORMAL, np.int8)
        nxt = accounts - ncrim  # the seed's flaw: criminals get the last, contiguous ids
        last_block = (accounts - 1) // block_accounts
        for k, (lo, i) in enumerate(sizes):
            mem = np.arange(nxt, nxt + lo + i + 1)
            nxt += lo + i + 1
            nets.append((last_block, mem[:lo], mem[lo:lo + i], int(mem[-1])))
        persona[accounts - ncrim:] = P_CRIMINAL
    else:
        span = max(10 * accounts, 1_000_000)
        ids = 100_000 + rng.choice(span, accounts, replace=False).astype(np.int64)
        persona = rng.choice(6, accounts, p=[.8, .02, .015, .06, .03, .075]).astype(np.int8)
        blocks = rng.choice(nblocks, len(sizes), replace=len(sizes) > nblocks) if sizes else []
        for k, ((lo, i), b) in enumerate(zip(sizes, blocks)):
            start, stop = b * block_accounts, min((b + 1) * block_accounts, accounts)
            cand = np.arange(start, stop)
            cand = cand[np.isin(persona[cand], (P_NORMAL, P_CASH)) & (role[cand] == NORMAL)]
            mem = rng.choice(cand, lo + i + 1, replace=False)
            role[mem] = NORMAL + 99  # placeholder so later networks skip them
            nets.append((int(b), mem[:lo], mem[lo:lo + i], int(mem[-1])))
    for k, (b, lows, ints, upper) in enumerate(nets):
        role[lows], role[ints], role[upper] = LOW, INTER, UPPER
        netid[np.concatenate([lows, ints, [upper]])] = k
    return _Plan(scenario, int(seed), accounts, years, networks, activity, cal, ids, persona, role, netid, nets,
                 block_accounts, nblocks)


def _gen_block(plan: _Plan, b: int) -> _Block:
    rng = np.random.default_rng([plan.seed, _CODE[plan.scenario], 1, b])
    lo, hi = b * plan.block_accounts, min((b + 1) * plan.block_accounts, plan.accounts)
    ids, persona, role = plan.ids[lo:hi], plan.persona[lo:hi], plan.role[lo:hi]
    cal, ev = plan.cal, _Events()
    mine = [(lows - lo, ints - lo, upper - lo) for (blk, lows, ints, upper) in plan.nets if blk == b]
    if plan.scenario == "datajam":
        _datajam_life(ev, rng, cal, np.flatnonzero(persona != P_CRIMINAL), plan.activity)
        for lows, ints, upper in mine:
            _datajam_network(ev, rng, cal, lows, ints, upper)
    else:
        at = _attrs(rng, persona)
        _relationships(ev, rng, cal, persona, role, at, plan.activity)
        _life(ev, rng, cal, np.flatnonzero(persona != P_EMPLOYER), at, persona, plan.activity)
        channel = TRANSFER if plan.scenario == "careful" else RELAY
        for lows, ints, upper in mine:
            _network(ev, rng, cal, lows, ints, upper, channel)
    return _finalize(ev, ids, cal.T)


# ------------------------------------------------------------------------------------- formatting
def _decimal(cents: np.ndarray) -> pa.Array:
    """Exact 2-decimal amounts (written as e.g. -500.00) from integer cents."""
    raw = pa.array(np.asarray(cents, np.int64), pa.int64()).cast(pa.decimal128(19, 0))
    return pa.Array.from_buffers(pa.decimal128(19, 2), len(raw), raw.buffers())


def _txn_table(blk: _Block, cal: _Cal, exact: bool) -> pa.Table:
    days = (cal.start.astype(np.int64) + blk.t // DAY).astype(np.int32)
    date = pa.array(days, pa.date32())
    time = pa.array((blk.t % DAY).astype(np.int32), pa.time32("s"))
    if exact:
        return pa.table({"client_id": blk.client_id, "amount": _decimal(blk.cents), "date": date, "time": time})
    return pa.table({"client_id": blk.client_id, "amount": blk.cents / 100.0,
                     "date": date.cast(pa.string()), "time": time.cast(pa.string())})


def _transfer_table(tr: dict, offset: int, exact: bool) -> pa.Table:
    n = tr["w_row"].size
    pt, pr = tr["part_tr"], tr["part_row"] + offset
    first = np.searchsorted(pt, np.arange(n), "left")
    cnt = np.bincount(pt, minlength=n)
    rows = pr[first].astype(str).astype(object)
    for r in (1, 2):
        s = np.flatnonzero(cnt > r)
        if s.size:
            rows[s] = rows[s] + " " + pr[first[s] + r].astype(str).astype(object)
    amt = _decimal if exact else (lambda c: c / 100.0)
    return pa.table({
        "withdrawal_row": tr["w_row"] + offset, "deposit_rows": pa.array(rows, pa.string()),
        "source": tr["src"], "target": tr["dst"], "amount_out": amt(tr["out"]), "amount_in": amt(tr["inn"]),
        "kind": pa.array(np.array(KINDS, object)[tr["kind"]], pa.string()),
        "channel": pa.array(np.array(CHANNELS, object)[tr["chan"]], pa.string()),
    })


def _link_table(tr: dict, exact: bool) -> pa.Table:
    if tr["src"].size == 0:
        src = dst = kind = n = tot = np.zeros(0, np.int64)
    else:
        key = np.stack([tr["src"], tr["dst"], tr["kind"]], axis=1)
        uniq, inv = np.unique(key, axis=0, return_inverse=True)
        inv = inv.ravel()
        src, dst, kind = uniq[:, 0], uniq[:, 1], uniq[:, 2]
        n = np.bincount(inv, minlength=uniq.shape[0])
        tot = np.zeros(uniq.shape[0], np.int64)
        np.add.at(tot, inv, tr["out"])
    return pa.table({
        "source": src.astype(np.int64), "target": dst.astype(np.int64),
        "kind": pa.array(np.array(KINDS, object)[kind.astype(np.int64)], pa.string()),
        "n_transfers": n.astype(np.int64),
        "total_amount": _decimal(tot) if exact else tot / 100.0,
    })


def _accounts_table(plan: _Plan) -> pa.Table:
    o = np.argsort(plan.ids, kind="stable")
    return pa.table({
        "client_id": plan.ids[o],
        "role": pa.array(np.array(ROLES, object)[plan.role[o]], pa.string()),
        "network_id": plan.netid[o],
        "persona": pa.array(np.array(PERSONAS, object)[plan.persona[o]], pa.string()),
    })


# ---------------------------------------------------------------------------------------- summary
class _Summary:
    def __init__(self, plan: _Plan):
        self.plan = plan
        self.rows = self.deposits = 0
        self.sample, self.per_account = [], []
        self.n_tr = {0: 0, 1: 0}
        self.n_split = self.n_links_c = self.n_links_l = 0
        self.crim_out = 0
        self.step = plan.nblocks  # deterministic subsample for amount quantiles
        self.offset = 0

    def add(self, blk: _Block):
        self.rows += blk.cents.size
        self.deposits += int((blk.cents > 0).sum())
        start = (-self.offset) % self.step
        self.sample.append(np.abs(blk.cents[start::self.step]))
        self.offset += blk.cents.size
        self.per_account.append(blk.rows_per_account)
        tr = blk.tr
        for k in (0, 1):
            self.n_tr[k] += int((tr["kind"] == k).sum())
        self.n_split += int((np.bincount(tr["part_tr"], minlength=tr["w_row"].size) > 1).sum())
        self.crim_out += int(tr["out"][tr["kind"] == CRIMINAL].sum())
        if tr["src"].size:
            pairs = np.unique(np.stack([tr["src"], tr["dst"], tr["kind"]], 1), axis=0)
            self.n_links_c += int((pairs[:, 2] == CRIMINAL).sum())
            self.n_links_l += int((pairs[:, 2] == LEGIT).sum())

    def result(self) -> dict:
        p = self.plan
        amt = np.concatenate(self.sample) if self.sample else np.zeros(0, np.int64)
        per = np.concatenate(self.per_account) if self.per_account else np.zeros(0, np.int64)
        q = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
        qa = np.quantile(amt, q) / 100 if amt.size else np.zeros(len(q))
        qp = np.quantile(per, (0, .1, .5, .9, 1)) if per.size else np.zeros(5)
        share = (lambda m: round(float(m.mean()), 4) if amt.size else 0.0)
        return {
            **p.params,
            "rows": self.rows,
            "deposit_share": round(self.deposits / max(self.rows, 1), 4),
            "withdrawal_share": round(1 - self.deposits / max(self.rows, 1), 4),
            "accounts_by_role": {r: int((p.role == i).sum()) for i, r in enumerate(ROLES)},
            "accounts_by_persona": {n: int((p.persona == i).sum()) for i, n in enumerate(PERSONAS)
                                    if (p.persona == i).any()},
            "amount_abs_quantiles": {f"p{int(x * 100):02d}": round(float(v), 2) for x, v in zip(q, qa)}
            | {"max": round(float(amt.max()) / 100, 2) if amt.size else 0.0},
            "round_share": {"whole_dollar": share(amt % 100 == 0), "multiple_of_10": share(amt % 1_000 == 0),
                            "multiple_of_20": share(amt % 2_000 == 0), "multiple_of_100": share(amt % 10_000 == 0)},
            "rows_per_account": {k: int(v) for k, v in zip(("min", "p10", "p50", "p90", "max"), qp)},
            "criminal_transfers": self.n_tr[1],
            "legit_transfers": self.n_tr[0],
            "split_transfers": self.n_split,
            "criminal_links": self.n_links_c,
            "legit_links": self.n_links_l,
            "criminal_amount_out": round(self.crim_out / 100, 2),
        }


def format_summary(summary: dict) -> str:
    """Human-readable multi-line rendering of a summary dict (what the CLI prints)."""
    lines = []
    for k, v in summary.items():
        if isinstance(v, dict):
            lines.append(f"{k}:")
            lines.extend(f"    {kk:<16} {vv}" for kk, vv in v.items())
        else:
            lines.append(f"{k:<20} {v}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- API
@dataclass
class Scenario:
    """A generated scenario held in memory (see ``write_scenario`` for large runs)."""

    transactions: pd.DataFrame  # client_id, amount (float, 2 decimals), date 'YYYY-MM-DD', time 'HH:MM:SS'
    truth_accounts: pd.DataFrame  # client_id, role, network_id, persona
    truth_links: pd.DataFrame  # source, target, kind, n_transfers, total_amount (sum of amount_out)
    truth_transfers: pd.DataFrame  # withdrawal_row, deposit_rows, source, target, amount_out, amount_in, kind, channel
    params: dict
    summary: dict = field(repr=False, default_factory=dict)

    def describe(self) -> dict:
        return self.summary


def _blocks(plan: _Plan, progress: bool = False) -> Iterator[tuple[_Block, int]]:
    offset = 0
    for b in range(plan.nblocks):
        blk = _gen_block(plan, b)
        if progress and plan.nblocks > 1:
            print(f"block {b + 1}/{plan.nblocks}: {blk.cents.size:,} rows", file=sys.stderr, flush=True)
        yield blk, offset
        offset += blk.cents.size


def generate(scenario: str, *, seed: int = 0, accounts: int | None = None, years: float | None = None,
             networks: int | None = None, block_accounts: int | None = None, activity: float = 1.0) -> Scenario:
    """Generate ``scenario`` in memory. Deterministic for a seed; ``activity`` scales everyday life
    (spending and small transactions), not wages, housing, relationships or criminal flows."""
    plan = _plan(scenario, seed, accounts, years, networks, block_accounts, activity)
    summ = _Summary(plan)
    txn, trs, links = [], [], []
    for blk, off in _blocks(plan):
        summ.add(blk)
        txn.append(_txn_table(blk, plan.cal, exact=False))
        trs.append(_transfer_table(blk.tr, off, exact=False))
        links.append(_link_table(blk.tr, exact=False))
    cat = (lambda ts: pa.concat_tables(ts).to_pandas())
    return Scenario(transactions=cat(txn), truth_accounts=_accounts_table(plan).to_pandas(),
                    truth_links=cat(links), truth_transfers=cat(trs), params=plan.params, summary=summ.result())


@contextlib.contextmanager
def _atomic_dir(path: Path) -> Iterator[Path]:
    """A temporary directory beside ``path`` that replaces it only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_csv_table(handle, table: pa.Table, header: bytes | None = None):
    if header is not None:
        handle.write(header)
    pacsv.write_csv(table, handle, pacsv.WriteOptions(include_header=False, quoting_style="none"))


def write_scenario(scenario: str, out_dir, *, seed: int = 0, accounts: int | None = None,
                   years: float | None = None, networks: int | None = None, fmt: str = "csv",
                   progress: bool = True, block_accounts: int | None = None, activity: float = 1.0) -> dict:
    """Generate ``scenario`` block by block into ``out_dir``; returns the summary statistics.

    Files: transactions.csv (or transactions.parquet: a file for one block, a directory of
    ``part-NNNNN.parquet`` files for several), truth_accounts.csv, truth_links.csv,
    truth_transfers.csv.  Row indices in the truth files count data rows from 0 across the parts in
    order.  Every file is written atomically.  ``activity`` as in ``generate``.
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError("fmt must be 'csv' or 'parquet'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = _plan(scenario, seed, accounts, years, networks, block_accounts, activity)
    summ = _Summary(plan)
    with contextlib.ExitStack() as stack:
        f_tr = stack.enter_context(atomic_write(out / "truth_transfers.csv", "wb"))
        f_li = stack.enter_context(atomic_write(out / "truth_links.csv", "wb"))
        f_tr.write(b"withdrawal_row,deposit_rows,source,target,amount_out,amount_in,kind,channel\n")
        f_li.write(b"source,target,kind,n_transfers,total_amount\n")
        if fmt == "csv":
            f_tx = stack.enter_context(atomic_write(out / "transactions.csv", "wb"))
            f_tx.write(HEADER)
        elif plan.nblocks == 1:
            single = stack.enter_context(atomic_path(out / "transactions.parquet"))
        else:
            parts = stack.enter_context(_atomic_dir(out / "transactions.parquet"))
        for b, (blk, off) in enumerate(_blocks(plan, progress)):
            summ.add(blk)
            if fmt == "csv":
                _write_csv_table(f_tx, _txn_table(blk, plan.cal, exact=True))
            else:
                table = _txn_table(blk, plan.cal, exact=False)
                pq.write_table(table, single if plan.nblocks == 1 else parts / f"part-{b:05d}.parquet")
            _write_csv_table(f_tr, _transfer_table(blk.tr, off, exact=True))
            _write_csv_table(f_li, _link_table(blk.tr, exact=True))
            del blk
    with atomic_write(out / "truth_accounts.csv", "wb") as f:
        f.write(b"client_id,role,network_id,persona\n")
        _write_csv_table(f, _accounts_table(plan))
    return summ.result()
