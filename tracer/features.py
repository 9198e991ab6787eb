"""Per-account features: behaviour from the account's own records, money flow from the link graph.

Every feature is computed for every account with vectorized group-bys (no per-account loop), so
500,000 accounts are routine. docs/features.md describes each column.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from tracer.graph import flow_matrix, hits, pagerank

LARGE_DEPOSIT_CENTS = 10_000  # deposits of $100 or more count as "large" for regularity
SMALL_SPEND_CENTS = 10_000  # withdrawals under $100 are everyday spending (pattern of life)

BEHAVIOUR_COLUMNS = [
    "n_deposits", "n_withdrawals", "money_in", "money_out", "active_days", "retention",
    "large_deposits", "large_deposit_gap_days", "large_deposit_gap_cv", "large_deposit_amount_cv",
    "round_deposit_share", "small_spends_per_month", "distinct_withdrawal_share",
]
FLOW_COLUMNS = [
    "link_in", "link_out", "n_senders", "n_receivers", "link_in_share", "forward_share", "relay_balance",
    "pass_through", "holding_hours", "batch_share", "pagerank", "hub", "authority",
]
BATCH_SECONDS = 15 * 60  # transfers to different accounts this close together form a batch (payroll)


def _group_stats(codes: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group count, mean and standard deviation of ``values`` (groups are ``codes`` 0..n-1)."""
    count = np.bincount(codes, minlength=n).astype(np.float64)
    total = np.bincount(codes, weights=values, minlength=n)
    total_sq = np.bincount(codes, weights=values * values, minlength=n)
    mean = np.divide(total, count, out=np.full(n, np.nan), where=count > 0)
    var = np.divide(total_sq, count, out=np.full(n, np.nan), where=count > 0) - mean**2
    return count, mean, np.sqrt(np.maximum(var, 0))


def behaviour_features(tx: pd.DataFrame) -> pd.DataFrame:
    """Features from each account's own records: amounts, timing regularity, pattern of life."""
    codes = tx["client_id"].cat.codes.to_numpy(np.int64)
    accounts = tx["client_id"].cat.categories
    n = len(accounts)
    amount = tx["amount_cents"].to_numpy(np.int64)
    t = tx["timestamp"].to_numpy("datetime64[s]").astype(np.int64)
    dep, wd = amount > 0, amount < 0

    f = pd.DataFrame(index=pd.Index(accounts.astype(str), name="client_id"))
    f["n_deposits"] = np.bincount(codes[dep], minlength=n)
    f["n_withdrawals"] = np.bincount(codes[wd], minlength=n)
    f["money_in"] = np.bincount(codes[dep], weights=amount[dep], minlength=n) / 100.0
    f["money_out"] = np.bincount(codes[wd], weights=-amount[wd], minlength=n) / 100.0
    first = np.full(n, np.iinfo(np.int64).max)
    last = np.full(n, np.iinfo(np.int64).min)
    np.minimum.at(first, codes, t)
    np.maximum.at(last, codes, t)
    f["active_days"] = np.maximum((last - first) / 86400.0, 1.0)
    f["retention"] = np.divide(f["money_in"] - f["money_out"], f["money_in"], out=np.zeros(n), where=f["money_in"].to_numpy() > 0)

    large = dep & (amount >= LARGE_DEPOSIT_CENTS)
    lc, lt, la = codes[large], t[large], amount[large].astype(np.float64)
    order = np.lexsort((lt, lc))
    lc, lt, la = lc[order], lt[order], la[order]
    same = np.zeros(len(lc), dtype=bool)
    same[1:] = lc[1:] == lc[:-1]
    gaps = (np.diff(lt, prepend=0) / 86400.0)[same]
    gap_codes = lc[same]
    f["large_deposits"] = np.bincount(lc, minlength=n)
    gap_series = pd.Series(gaps).groupby(gap_codes).median()
    f["large_deposit_gap_days"] = gap_series.reindex(range(n)).to_numpy()
    _, gmean, gstd = _group_stats(gap_codes, gaps, n)
    f["large_deposit_gap_cv"] = gstd / gmean
    _, amean, astd = _group_stats(lc, la, n)
    f["large_deposit_amount_cv"] = astd / amean
    dep_round = dep & (amount % 1000 == 0)
    f["round_deposit_share"] = np.divide(np.bincount(codes[dep_round], minlength=n), f["n_deposits"], out=np.zeros(n), where=f["n_deposits"].to_numpy() > 0)
    small = wd & (-amount < SMALL_SPEND_CENTS)
    f["small_spends_per_month"] = np.bincount(codes[small], minlength=n) / (f["active_days"].to_numpy() / 30.0)
    f["distinct_withdrawal_share"] = np.divide(_distinct_per_group(codes[wd], -amount[wd], n), f["n_withdrawals"], out=np.zeros(n), where=f["n_withdrawals"].to_numpy() > 0)
    return f


def _distinct_per_group(codes: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """How many distinct non-negative ``values`` each group 0..n-1 has: one sort of (group, value)
    packed in an int64 (a hash of 100M pairs takes several times as long)."""
    width = max(int(values.max(initial=0)).bit_length(), 1)
    if n and (n - 1).bit_length() + width > 63:  # cannot pack: sort the pairs
        order = np.lexsort((values, codes))
        codes, values = codes[order], values[order]
        new = np.ones(len(codes), dtype=bool)
        new[1:] = (codes[1:] != codes[:-1]) | (values[1:] != values[:-1])
        return np.bincount(codes[new], minlength=n)
    key = np.sort((codes.astype(np.int64) << width) | values)
    new = np.ones(len(key), dtype=bool)
    new[1:] = key[1:] != key[:-1]
    return np.bincount(key[new] >> width, minlength=n)


def flow_features(tx: pd.DataFrame, links: pd.DataFrame, transfers: pd.DataFrame, behaviour: pd.DataFrame, holding_hours: float = 72.0) -> pd.DataFrame:
    """Features from the confident link graph: flows, forwarding, holding time, centrality.

    ``pass_through`` is the share of everything an account received that it sent on over
    confident links within ``holding_hours`` of the latest money arriving: the signature of a
    handler or intermediary, and nearly zero for a landlord, an employee or a saver.
    """
    index = behaviour.index
    f = pd.DataFrame(index=index)
    f["link_in"] = links.groupby("target")["total_amount"].sum().reindex(index, fill_value=0.0)
    f["link_out"] = links.groupby("source")["total_amount"].sum().reindex(index, fill_value=0.0)
    f["n_senders"] = links.groupby("target").size().reindex(index, fill_value=0)
    f["n_receivers"] = links.groupby("source").size().reindex(index, fill_value=0)
    money_in = behaviour["money_in"].to_numpy()
    f["link_in_share"] = np.divide(f["link_in"].to_numpy(), money_in, out=np.zeros(len(index)), where=money_in > 0)
    f["forward_share"] = np.divide(f["link_out"].to_numpy(), money_in, out=np.zeros(len(index)), where=money_in > 0)
    lo, hi = np.minimum(f["link_in"], f["link_out"]).to_numpy(), np.maximum(f["link_in"], f["link_out"]).to_numpy()
    f["relay_balance"] = np.divide(lo, hi, out=np.zeros(len(index)), where=hi > 0)

    n = len(index)
    source, target = _positions(transfers["source"], index), _positions(transfers["target"], index)
    sent = transfers["first_time"].to_numpy("datetime64[s]").astype(np.int64)
    held = _holding(tx, index, source, sent)
    quick = held <= holding_hours
    fast_out = np.bincount(source[quick], weights=transfers["amount_out"].to_numpy(np.float64)[quick], minlength=n)
    f["pass_through"] = np.clip(np.divide(fast_out, money_in, out=np.zeros(n), where=money_in > 0), 0, 1)
    f["holding_hours"] = pd.Series(held).groupby(source).median().reindex(range(n)).to_numpy()
    f["batch_share"] = _batch_share(source, target, sent, n)

    M = flow_matrix(links, index)
    f["pagerank"] = pagerank(M)
    hub, authority = hits(M)
    f["hub"], f["authority"] = hub, authority
    return f


def _positions(names: pd.Series, index: pd.Index) -> np.ndarray:
    """Position of each account name in ``index`` (names as str); -1 for a name not in it. A
    categorical column is looked up once per category, not once per row."""
    if isinstance(names.dtype, pd.CategoricalDtype):
        codes = names.cat.codes.to_numpy()
        return np.where(codes >= 0, index.get_indexer(names.cat.categories.astype(str))[codes], -1)
    return index.get_indexer(names.astype(str))


def _batch_share(source: np.ndarray, target: np.ndarray, sent: np.ndarray, n: int) -> np.ndarray:
    """Per account 0..n-1 (transfers' ``source``/``target`` positions, ``sent`` seconds): the share
    of its transfers sent within BATCH_SECONDS of one to a different account; 0 if it sent none.

    Payroll and bill runs pay several accounts at once; a handler forwarding to its intermediary
    does not. Computed on neighbours in time order, so it is one sort, no loop.
    """
    order = np.lexsort((sent, source))
    src, dst, sent = source[order], target[order], sent[order]
    near_prev = np.zeros(len(src), dtype=bool)
    near_prev[1:] = (src[1:] == src[:-1]) & (dst[1:] != dst[:-1]) & (sent[1:] - sent[:-1] <= BATCH_SECONDS)
    near_next = np.zeros(len(src), dtype=bool)
    near_next[:-1] = near_prev[1:]
    sent_count = np.bincount(src, minlength=n)
    return np.divide(np.bincount(src, weights=near_prev | near_next, minlength=n), sent_count, out=np.zeros(n), where=sent_count > 0)


def _holding(tx: pd.DataFrame, index: pd.Index, source: np.ndarray, sent: np.ndarray) -> np.ndarray:
    """Hours from the latest deposit into each transfer's source (``source``: positions in
    ``index``) up to its sending time ``sent`` (seconds); NaN if none came before it. Deposits
    and transfers are keyed (account, time) in one int64 and matched by binary search."""
    deposit = (tx["amount_cents"] > 0).to_numpy()
    account = _positions(tx["client_id"][deposit], index)
    arrived = tx["timestamp"].to_numpy("datetime64[s]").astype(np.int64)[deposit]
    if not len(sent) or not len(arrived):
        return np.full(len(sent), np.nan)
    base = min(int(arrived.min()), int(sent.min()))
    arrived_key = np.sort((account.astype(np.int64) << 32) | (arrived - base))
    sent_key = (source.astype(np.int64) << 32) | (sent - base)
    latest = np.searchsorted(arrived_key, sent_key, side="right") - 1
    found = (latest >= 0) & (source >= 0)
    found[found] = (arrived_key[latest[found]] >> 32) == source[found]
    return np.where(found, (sent_key - arrived_key[np.maximum(latest, 0)]) / 3600.0, np.nan)


def account_features(tx: pd.DataFrame, links: pd.DataFrame, transfers: pd.DataFrame, holding_hours: float = 72.0) -> pd.DataFrame:
    """All features, one row per account (index ``client_id``)."""
    behaviour = behaviour_features(tx)
    return behaviour.join(flow_features(tx, links, transfers, behaviour, holding_hours))
