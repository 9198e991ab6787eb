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
    distinct = pd.DataFrame({"c": codes[wd], "a": amount[wd]}).drop_duplicates()["c"].to_numpy()
    f["distinct_withdrawal_share"] = np.divide(np.bincount(distinct, minlength=n), f["n_withdrawals"], out=np.zeros(n), where=f["n_withdrawals"].to_numpy() > 0)
    return f


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

    held = _holding(tx, transfers)
    quick = held[held["holding_hours"] <= holding_hours]
    fast_out = quick.groupby("source")["amount_out"].sum().reindex(index, fill_value=0.0).to_numpy()
    f["pass_through"] = np.clip(np.divide(fast_out, money_in, out=np.zeros(len(index)), where=money_in > 0), 0, 1)
    f["holding_hours"] = held.groupby("source")["holding_hours"].median().reindex(index)
    f["batch_share"] = _batch_share(transfers).reindex(index, fill_value=0.0)

    M = flow_matrix(links, index)
    f["pagerank"] = pagerank(M)
    hub, authority = hits(M)
    f["hub"], f["authority"] = hub, authority
    return f


def _batch_share(transfers: pd.DataFrame) -> pd.Series:
    """Per source: share of its transfers sent within BATCH_SECONDS of one to a different account.

    Payroll and bill runs pay several accounts at once; a handler forwarding to its intermediary
    does not. Computed on neighbours in time order, so it is one sort, no loop.
    """
    if transfers.empty:
        return pd.Series(dtype=float)
    t = pd.DataFrame({
        "source": transfers["source"].astype(str).to_numpy(),
        "target": transfers["target"].astype(str).to_numpy(),
        "sent": transfers["first_time"].to_numpy("datetime64[s]").astype(np.int64),
    }).sort_values(["source", "sent"], kind="stable")
    src, dst, sent = t["source"].to_numpy(), t["target"].to_numpy(), t["sent"].to_numpy()
    near_prev = np.zeros(len(t), dtype=bool)
    near_prev[1:] = (src[1:] == src[:-1]) & (dst[1:] != dst[:-1]) & (sent[1:] - sent[:-1] <= BATCH_SECONDS)
    near_next = np.zeros(len(t), dtype=bool)
    near_next[:-1] = near_prev[1:]
    return pd.Series(near_prev | near_next).groupby(src).mean()


def _holding(tx: pd.DataFrame, transfers: pd.DataFrame) -> pd.DataFrame:
    """For each outgoing confident transfer: hours since the latest deposit into its source."""
    if transfers.empty:
        return pd.DataFrame({"source": pd.Series(dtype=str), "amount_out": [], "holding_hours": []})
    deposits = tx.loc[tx["amount_cents"] > 0, ["client_id", "timestamp"]]
    deposits = pd.DataFrame({"source": deposits["client_id"].astype(str).to_numpy(), "arrived": deposits["timestamp"].to_numpy("datetime64[s]")})
    outgoing = pd.DataFrame({
        "source": transfers["source"].astype(str).to_numpy(),
        "sent": transfers["first_time"].to_numpy("datetime64[s]"),
        "amount_out": transfers["amount_out"].to_numpy(),
    })
    joined = pd.merge_asof(
        outgoing.sort_values("sent"), deposits.sort_values("arrived"),
        left_on="sent", right_on="arrived", by="source", direction="backward",
    )
    joined["holding_hours"] = (joined["sent"] - joined["arrived"]).dt.total_seconds() / 3600.0
    return joined


def account_features(tx: pd.DataFrame, links: pd.DataFrame, transfers: pd.DataFrame, holding_hours: float = 72.0) -> pd.DataFrame:
    """All features, one row per account (index ``client_id``)."""
    behaviour = behaviour_features(tx)
    return behaviour.join(flow_features(tx, links, transfers, behaviour, holding_hours))
