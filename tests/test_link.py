"""Link inference: kernel against brute force, assignment invariants, and end-to-end behaviour."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.link import Counts, LinkInference, _q_values, assign, candidate_pairs, infer_links

DAY = 86400


def frame(rows: list[tuple[str, int, int]]) -> pd.DataFrame:
    """Canonical transactions from (client_id, amount_cents, seconds)."""
    df = pd.DataFrame(rows, columns=["client_id", "amount_cents", "seconds"])
    df["timestamp"] = (pd.Timestamp("2024-01-01") + pd.to_timedelta(df.pop("seconds"), unit="s")).astype("datetime64[s]")
    df["client_id"] = df["client_id"].astype(str).astype("category")
    df["row_id"] = np.arange(len(df), dtype=np.int64)
    return df


def background(rng: np.random.Generator, n_accounts: int = 300, n_rows: int = 20_000, days: int = 365) -> list[tuple[str, int, int]]:
    """Ordinary activity: independent deposits and withdrawals, a third of them round amounts."""
    acc = rng.integers(0, n_accounts, n_rows)
    amt = np.round(rng.lognormal(4.5, 1.2, n_rows) * 100).astype(np.int64) + 1
    round_ = rng.random(n_rows) < 0.3
    amt[round_] = rng.integers(1, 25, round_.sum()) * 2000
    sign = np.where(rng.random(n_rows) < 0.5, -1, 1)
    t = rng.integers(0, days * DAY, n_rows)
    return [(f"n{a}", int(s * x), int(tt)) for a, s, x, tt in zip(acc, sign, amt, t)]


def weekly_flow(rng, source: str, target: str, weeks: int, amount_fn, lag_fn, start: int = 0):
    rows = []
    for wk in range(weeks):
        t = start + wk * 7 * DAY + int(rng.integers(0, DAY))
        amount = int(amount_fn())
        rows += [(source, -amount, t), (target, amount, t + int(lag_fn()))]
    return rows


def relay_network(seed: int, side_relays: int, relays: int = 8) -> pd.DataFrame:
    """Background plus ``relays`` cash relays S_i -> T_i (40 ATM withdrawals of $20 notes each,
    deposited 1-24 h later less a 5-15 % cut) between busy accounts (S_i: 300 ordinary withdrawals
    and 30 ATM withdrawals of its own; T_i: 100 ordinary deposits and 10 cash deposits), and
    ``side_relays`` more relays S0 -> T1 on other days."""
    rng = np.random.default_rng(seed)
    rows = background(rng)

    def own(account: str, n: int, sign: int, cash: bool) -> list[tuple[str, int, int]]:
        amt = rng.integers(5, 50, n) * 2000 if cash else np.round(rng.lognormal(4.5, 1.2, n) * 100).astype(np.int64) + 1
        return [(account, int(sign * a), int(t)) for a, t in zip(amt, rng.integers(0, 365 * DAY, n))]

    def relay(source: str, target: str, days: np.ndarray) -> list[tuple[str, int, int]]:
        out = []
        for day in days:
            t = int(day) * DAY + int(rng.integers(8 * 3600, 20 * 3600))
            amount = int(rng.integers(20, 50)) * 2000
            kept = int(amount * (1 - rng.uniform(0.05, 0.15))) // 100 * 100
            out += [(source, -amount, t), (target, kept, t + int(rng.integers(3600, 24 * 3600)))]
        return out

    for i in range(relays):
        days = rng.permutation(360)
        rows += relay(f"S{i}", f"T{i}", days[:40]) + own(f"S{i}", 30, -1, True) + own(f"T{i}", 10, 1, True)
        rows += own(f"S{i}", 300, -1, False) + own(f"T{i}", 100, 1, False)
        if i == 0:
            rows += relay("S0", "T1", days[40:40 + side_relays])
    return frame(rows)


def network_links(result) -> set[tuple[str, str]]:
    """Confident links between the relay accounts of :func:`relay_network`."""
    links = result.links[result.links.source.str.match(r"[ST]\d") & result.links.target.str.match(r"[ST]\d")]
    return set(zip(links.source, links.target))


# --- the kernel --------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 200)), min_size=0, max_size=40),
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 200)), min_size=0, max_size=40),
    st.integers(0, 50),
)
def test_candidate_pairs_equals_brute_force(withdrawals, deposits, window):
    wk = np.array([k for k, _ in withdrawals], dtype=np.int64)
    wt = np.array([t for _, t in withdrawals], dtype=np.int64)
    dk = np.array([k for k, _ in deposits], dtype=np.int64)
    dt = np.array([t for _, t in deposits], dtype=np.int64)
    q, d = candidate_pairs(wk, wt, dk, dt, window, cap=10**6)
    got = sorted(zip(q.tolist(), d.tolist()))
    want = sorted(
        (i, j) for i in range(len(wk)) for j in range(len(dk)) if wk[i] == dk[j] and 0 <= dt[j] - wt[i] <= window
    )
    assert got == want


def test_candidate_pairs_cap_keeps_earliest():
    q, d = candidate_pairs(np.array([1]), np.array([0]), np.array([1, 1, 1, 1]), np.array([9, 3, 5, 7]), 10, cap=2)
    assert sorted(d.tolist()) == [1, 2]  # the deposits at times 3 and 5


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.02, 0.15]), st.sampled_from([10, 5_000]))
def test_counts_between_matches_a_direct_count(seed, tol, n):
    """Counts.between (one query order for both ends, sorted visits from 4,096 queries) counts the
    values in [ceil(x (1 - tol)), x] as a direct comparison does."""
    rng = np.random.default_rng(seed)
    values = rng.integers(1, 3_000, 2_000)
    hi = rng.integers(1, 3_000, n)
    lo = np.ceil(hi * (1 - tol)).astype(np.int64)
    direct = ((values[None, :] >= lo[:, None]) & (values[None, :] <= hi[:, None])).sum(axis=1)
    np.testing.assert_array_equal(Counts.of(values).between(lo, hi), direct)


# --- assignment --------------------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(st.data())
def test_assign_uses_each_row_once_and_is_maximal(data):
    n = data.draw(st.integers(1, 30))
    w = np.array(data.draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)), dtype=np.int64)
    d1 = np.array(data.draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)), dtype=np.int64)
    d2 = np.array(data.draw(st.lists(st.integers(-1, 6), min_size=n, max_size=n)), dtype=np.int64)
    d2 = np.where(d2 == d1, -1, d2)
    ev = np.array(data.draw(st.lists(st.floats(0, 100, allow_nan=False), min_size=n, max_size=n)))
    w_members = np.stack([w, np.full(n, -1), np.full(n, -1)], axis=1)
    d_members = np.stack([d1, d2, np.full(n, -1)], axis=1)
    chosen = assign(w_members, d_members, ev)
    used_w = w[chosen].tolist()
    used_d = [x for x in d_members[chosen].ravel().tolist() if x >= 0]
    assert len(used_w) == len(set(used_w))
    assert len(used_d) == len(set(used_d))
    # maximal: every rejected candidate conflicts with an accepted one
    for i in set(range(n)) - set(chosen.tolist()):
        parts = {x for x in d_members[i].tolist() if x >= 0}
        assert w[i] in used_w or parts & set(used_d)
    # the strongest candidate always wins
    assert int(np.argmax(ev)) in chosen.tolist() or ev[chosen].max() == ev.max()


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_assign_in_chunks_is_the_full_sort_greedy(data):
    """Sorting and assigning the strongest a chunk at a time (ties included) and dropping the
    losers unsorted chooses exactly what one stable sort of all candidates and a greedy walk do."""
    from tracer.link import _assign

    n = data.draw(st.integers(1, 40))
    w = np.array(data.draw(st.lists(st.integers(0, 8), min_size=n, max_size=n)), dtype=np.int64)
    d1 = np.array(data.draw(st.lists(st.integers(0, 8), min_size=n, max_size=n)), dtype=np.int64)
    d2 = np.array(data.draw(st.lists(st.integers(-1, 8), min_size=n, max_size=n)), dtype=np.int64)
    d2 = np.where(d2 == d1, -1, d2)
    ev = np.array(data.draw(st.lists(st.sampled_from([0.0, 1.0, 2.5, 7.0]) | st.floats(0, 10), min_size=n, max_size=n)))
    w_members = np.stack([w, np.full(n, -1), np.full(n, -1)], axis=1)
    d_members = np.stack([d1, d2, np.full(n, -1)], axis=1)
    used_w, used_d, want = set(), set(), []
    for k in sorted(range(n), key=lambda k: (-ev[k], k)):
        rows = {x for x in d_members[k].tolist() if x >= 0}
        if w[k] not in used_w and not rows & used_d:
            want.append(k)
            used_w.add(w[k])
            used_d |= rows
    index = np.arange(n)
    chunk = data.draw(st.integers(1, 8))
    assert _assign(index, index, w_members, d_members, ev, first_chunk=chunk).tolist() == sorted(want)


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_settling_only_contested_candidates_is_assign(data):
    """Blocks' transfers are settled by assigning only those that share a row with another
    (row ids sparse or dense): the same choice as assigning all of them."""
    from tracer.link import _settle_contested

    n = data.draw(st.integers(1, 40))
    spread = data.draw(st.sampled_from([1, 10**7]))  # 10**7: ids too sparse for a flag per id
    ids = st.integers(0, 30).map(lambda x: x * spread)
    w = np.array(data.draw(st.lists(ids, min_size=n, max_size=n)), dtype=np.int64)
    d1 = np.array(data.draw(st.lists(ids, min_size=n, max_size=n)), dtype=np.int64)
    d2 = np.array(data.draw(st.lists(ids | st.just(-1), min_size=n, max_size=n)), dtype=np.int64)
    d2 = np.where(d2 == d1, -1, d2)
    ev = np.array(data.draw(st.lists(st.sampled_from([0.0, 1.0, 2.5]) | st.floats(0, 10), min_size=n, max_size=n)))
    w_members = np.stack([w, np.full(n, -1), np.full(n, -1)], axis=1)
    d_members = np.stack([d1, d2, np.full(n, -1)], axis=1)
    assert _settle_contested(w_members, d_members, ev).tolist() == assign(w_members, d_members, ev).tolist()


def test_q_values_are_monotone_and_count_decoys():
    target = np.array([10.0, 9.0, 8.0, 1.0, 0.5])
    decoy = np.array([8.5, 0.7])  # fewer than 3 decoys: plain counts, no tail fit
    q = _q_values(target, decoy)
    assert q[0] == 0 and q[1] == 0  # no decoy at or above 9
    # FDR(8) = 1 decoy / 3 targets, but the q-value takes the best threshold below: FDR(1) = 1/4
    assert q[2] == pytest.approx(1 / 4)
    assert q[4] == pytest.approx(2 / 5)  # the lowest score: only its own threshold
    assert np.all(np.diff(q[np.argsort(-target)]) >= 0)


def test_small_null_is_fitted_whole_so_a_target_above_it_is_not_certain():
    from tracer.link import expected_null_above

    decoy = np.array([1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 4.5])
    above = expected_null_above(np.array([5.0, 50.0]), decoy)
    assert 0.1 < above[0] < 1.0  # just above the largest decoy: plausible coincidence
    assert above[1] < 1e-6  # far above: essentially impossible


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 50), min_size=0, max_size=60), st.floats(0, 80))
def test_a_small_own_null_is_bounded_above_never_below(decoy, score):
    """The second stage's family keeps its own null however small: fitted with the upper bound of
    its tail's scale (never fewer expected coincidences than the plain fit), and with fewer than 3
    decoys it tells nothing (every target is as likely a coincidence as not)."""
    from tracer.link import MIN_NULL, expected_null_above

    decoy, scores = np.array(decoy), np.array([score])
    bounded, plain = expected_null_above(scores, decoy, small_null_bound=True), expected_null_above(scores, decoy)
    if len(decoy) < 3:
        assert np.isinf(bounded).all() and _q_values(scores, decoy, small_null_bound=True)[0] == 1.0
    else:
        assert bounded[0] >= plain[0] - 1e-9
        if len(decoy) >= MIN_NULL:
            assert bounded[0] == plain[0]


# --- end to end --------------------------------------------------------------------------------

def test_repeated_flow_found_and_coincidences_rejected():
    rng = np.random.default_rng(7)
    rows = background(rng)
    rows += weekly_flow(rng, "L1", "MID", 40, lambda: rng.integers(30_000, 150_000), lambda: rng.integers(300, 40 * 3600))
    rows += weekly_flow(rng, "L2", "MID", 40, lambda: rng.integers(30_000, 150_000), lambda: rng.integers(300, 40 * 3600))
    result = infer_links(frame(rows))
    found = set(zip(result.links.source, result.links.target))
    assert {("L1", "MID"), ("L2", "MID")} <= found
    false_links = {p for p in found if not p[0].startswith("L")}
    assert len(false_links) <= 0.05 * len(found) + 1


def test_no_flows_means_almost_no_links():
    """Pure coincidences: the decoy calibration must keep (nearly) everything out."""
    for seed in range(3):
        result = infer_links(frame(background(np.random.default_rng(seed))))
        assert len(result.links) <= 2, result.links


def test_single_common_amount_match_is_not_a_link():
    rng = np.random.default_rng(3)
    rows = background(rng) + [("A", -20_000, 10 * DAY), ("B", 20_000, 10 * DAY + 3600)]
    links = infer_links(frame(rows)).links
    found = set(zip(links.source, links.target))
    assert ("A", "B") not in found


def test_split_cut_and_merge_transfers_are_matched():
    rng = np.random.default_rng(11)
    rows = background(rng, n_rows=8_000)
    for wk in range(30):
        t = wk * 7 * DAY + 5000
        a = int(rng.integers(40_000, 90_000))
        part = int(rng.integers(10_000, a - 10_000))
        rows += [("S", -a, t), ("T", part, t + 3600), ("T", a - part, t + 5 * 3600)]  # split
        c = int(rng.integers(5, 40)) * 2000  # cash-like: whole $20 notes
        rows += [("C", -c, t + DAY), ("K", int(c * 0.9) // 500 * 500, t + DAY + 7200)]  # cash relay, cut kept
        f = int(rng.integers(40_000, 90_000))
        rows += [("F", -f, t + DAY + 600), ("G", f - 150, t + DAY + 4000)]  # a $1.50 fee on the way
        g = int(rng.integers(40_000, 90_000)) + 1
        rows += [("P", -g, t + 3 * DAY), ("Q", int(g * 0.9), t + 3 * DAY + 3600)]  # 10% off a non-cash amount
        m1, m2 = int(rng.integers(20_000, 50_000)), int(rng.integers(20_000, 50_000))
        rows += [("M", -m1, t + 2 * DAY), ("M", -m2, t + 2 * DAY + 600), ("N", m1 + m2, t + 2 * DAY + 4000)]  # merge
    result = infer_links(frame(rows), fee_tolerance=0.02)
    kinds = result.transfers.groupby(["source", "target"], observed=True)["kind"].agg(lambda k: k.value_counts().idxmax())
    assert kinds[("S", "T")] == "split"
    assert kinds[("C", "K")] == "cut"
    assert kinds[("F", "G")] == "cut"
    assert kinds[("M", "N")] == "merge"
    found = set(zip(result.links.source, result.links.target))
    assert {("S", "T"), ("C", "K"), ("F", "G"), ("M", "N")} <= found
    assert ("P", "Q") not in found  # only cash-like withdrawals may lose more than the fee tolerance
    default = infer_links(frame(rows))  # the fee band is opt-in: by default a non-cash amount must arrive whole
    assert not ((default.transfers["source"] == "F") & (default.transfers["target"] == "G")).any()
    assert {("S", "T"), ("C", "K"), ("M", "N")} <= set(zip(default.links.source, default.links.target))


def test_transfers_trace_back_to_input_rows_and_use_each_row_once():
    rng = np.random.default_rng(5)
    rows = background(rng, n_rows=6_000)
    rows += weekly_flow(rng, "X", "Y", 30, lambda: rng.integers(10_000, 90_000), lambda: rng.integers(60, 20 * 3600))
    tx = frame(rows)
    result = infer_links(tx)
    by_row = tx.set_index("row_id")
    used: list[int] = []
    for tr in result.transfers.itertuples():
        w_rows = [int(r) for r in tr.withdrawal_rows.split()]
        d_rows = [int(r) for r in tr.deposit_rows.split()]
        used += w_rows + d_rows
        assert (by_row.loc[w_rows, "client_id"].astype(str) == tr.source).all()
        assert (by_row.loc[d_rows, "client_id"].astype(str) == tr.target).all()
        assert -by_row.loc[w_rows, "amount_cents"].sum() == round(tr.amount_out * 100)
        assert by_row.loc[d_rows, "amount_cents"].sum() == round(tr.amount_in * 100)
        assert (by_row.loc[d_rows, "timestamp"].max() - by_row.loc[w_rows, "timestamp"].min()).total_seconds() <= 72 * 3600
    assert len(used) == len(set(used))


def test_estimator_follows_sklearn_conventions():
    rng = np.random.default_rng(2)
    est = LinkInference(window_hours=48)
    assert est.fit(frame(background(rng, n_rows=3_000))) is est
    assert hasattr(est, "links_") and hasattr(est, "transfers_")
    assert est.options.window_hours == 48


def test_expected_null_extrapolates_beyond_the_largest_decoy():
    from tracer.link import expected_null_above

    decoy = np.random.default_rng(0).exponential(1.0, 10_000)
    above_max = expected_null_above(np.array([decoy.max() + 0.5]), decoy)
    assert 0 < above_max[0] < 1  # not zero: a target just above the last decoy is not certain
    # in the tail the fit tracks the true exponential tail within sampling error
    s = np.array([5.0, 7.0])
    assert np.allclose(expected_null_above(s, decoy), 10_000 * np.exp(-s), rtol=0.35)


def test_counterparty_rows_become_exact_links_and_skip_inference():
    rng = np.random.default_rng(4)
    rows = background(rng, n_rows=5_000)
    tx = frame(rows + [("A", -12_345, 5 * DAY), ("B", 12_345, 5 * DAY + 60), ("A", -700_00, 9 * DAY), ("EXT", 999, 9 * DAY)])
    tx["counterparty"] = pd.Series([None] * len(tx), dtype=object)
    n = len(tx)
    tx.loc[n - 4, "counterparty"] = "B"  # A names B on the withdrawal ...
    tx.loc[n - 3, "counterparty"] = "A"  # ... and B names A on the deposit: one transfer
    tx.loc[n - 2, "counterparty"] = "OUTSIDE"  # a payment to an account not in the data
    tx.loc[n - 1, "counterparty"] = "SOMEONE"  # a deposit from outside
    result = infer_links(tx)
    stated = result.transfers[result.transfers["kind"] == "stated"]
    assert len(stated) == 3
    ab = stated[(stated.source == "A") & (stated.target == "B")]
    assert ab[["withdrawal_rows", "deposit_rows"]].values.tolist() == [[str(n - 4), str(n - 3)]]
    links = result.links.set_index(["source", "target"])
    assert links.loc[("A", "B"), "q_value"] == 0 and links.loc[("A", "B"), "n_transfers"] == 1
    assert ("A", "OUTSIDE") in links.index and ("SOMEONE", "EXT") in links.index
    inferred_rows = " ".join(result.transfers.loc[result.transfers["kind"] != "stated", ["withdrawal_rows", "deposit_rows"]].to_numpy().ravel())
    assert not {str(n - 4), str(n - 3), str(n - 2), str(n - 1)} & set(inferred_rows.split())
    assert result.stats["stated_rows"] == 4


def test_counterparty_column_through_the_loader(tmp_path):
    from tracer import load_transactions

    path = tmp_path / "export.csv"
    path.write_text("client_id,amount,date,time,payee\n"
                    "A,-250.00,2024-03-01,10:00:00,B\n"
                    "B,250.00,2024-03-01,10:05:00,\n"
                    "C,-20.00,2024-03-02,09:00:00,\n")
    loaded = load_transactions(path, counterparty="payee")
    result = infer_links(loaded.transactions)
    assert list(zip(result.links.source, result.links.target)) == [("A", "B")]
    assert result.transfers.iloc[0]["kind"] == "stated"


def test_result_columns_have_numeric_and_time_dtypes():
    rng = np.random.default_rng(9)
    result = infer_links(frame(background(rng, n_rows=3_000) + weekly_flow(rng, "X", "Y", 10, lambda: rng.integers(10_000, 90_000), lambda: 600)))
    for col in ("amount_out", "amount_in", "lag_hours", "evidence", "link_q_value"):
        assert pd.api.types.is_float_dtype(result.transfers[col]), col
    assert pd.api.types.is_datetime64_any_dtype(result.transfers["first_time"])
    for col in ("total_amount", "median_lag_hours", "score", "q_value"):
        assert pd.api.types.is_float_dtype(result.links[col]), col


def test_huge_amounts_still_match_exactly():
    """Amounts too large for the cents-as-key fast path fall back to dense ranks."""
    rng = np.random.default_rng(12)
    big = 9_000_000_000_00  # $9 billion, beyond 2**33 cents
    rows = background(rng, n_rows=2_000)
    rows += [("BIGSOURCE", -(big + i), i * 7 * DAY + 50) for i in range(12)]
    rows += [("BIGTARGET", big + i, i * 7 * DAY + 900) for i in range(12)]
    result = infer_links(frame(rows))
    found = set(zip(result.links.source, result.links.target))
    assert ("BIGSOURCE", "BIGTARGET") in found
    assert (result.transfers.loc[result.transfers.source == "BIGSOURCE", "kind"] == "exact").all()


def test_blocks_give_the_same_links_as_one_block():
    rng = np.random.default_rng(13)
    rows = background(rng, n_rows=12_000)
    rows += weekly_flow(rng, "P", "Q", 40, lambda: rng.integers(10_000, 90_000), lambda: rng.integers(60, 30 * 3600))
    tx = frame(rows)
    one = infer_links(tx, block_withdrawals=10**9)
    many = infer_links(tx, block_withdrawals=500)
    assert ("P", "Q") in set(zip(many.links.source, many.links.target))
    assert set(zip(one.links.source, one.links.target)) == set(zip(many.links.source, many.links.target))


def test_pass_one_blocks_span_support_days_within_a_row_budget():
    """Pass 1 merges candidate blocks to span ``support_days``, but no more than ``support_rows``
    rows at the average rate fit in one: a dense quarter must not become one block of all its rows."""
    from tracer.link import BlockGrid, LinkOptions, make_engine

    day = 86_400
    grid = BlockGrid(origin=0, length=2 * day, reach=4 * day)
    engine = make_engine(LinkOptions(support_days=30), np.ones(2, np.int64), np.ones(2, np.int64), 0, 365 * day)
    support = lambda rows_a_day: engine.support_grid(grid, n_rows=365 * rows_a_day, t_min=0, t_max=365 * day).length // day
    assert support(1_000) == 30
    assert support(1_000_000) == 12  # 12M rows (support_rows) in 12 days
    assert support(100_000_000) == 2  # never shorter than a candidate block


def _pass_one(tx: pd.DataFrame, **options):
    """Pass 1's support of the forward run of ``tx`` (blocks as ``options`` make them), and the run's
    engine, sides and rates."""
    from tracer import link

    runs = link.LocalRuns(tx, link.LinkOptions(**options))
    (W, w_id), (D, d_id) = runs._side(runs.w_rows, False, -1), runs._side(runs.d_rows, False, 1)
    engine, rates = runs.engine, runs.engine.rates(W, D)
    t_min, t_max = int(W.t_first.min()), int(W.t_first.max())
    grid = link.block_grid(engine, rates, len(W), t_min, t_max, probe_rows=None)
    support_grid = engine.support_grid(grid, len(W) + len(D), t_min, t_max)
    state = link._BlockState(engine, rates, link._BlockSource(W, D, w_id, d_id, support_grid))
    link._pass_one_support(state, processes=1, label="test")
    return state.support, len(state.source.keys), engine, W, D, w_id, rates


def test_pass_one_reads_each_pairs_repetition_over_the_whole_run():
    """Pass 1's support is the whole run's: every pair with two or more withdrawals, scored on all
    its candidates, whether its withdrawals fall in one pass-1 block or in many (with one-offs
    within a block handed on, ``support_min_evidence`` -inf), so the length of the blocks changes
    the work, not the result. By default weak one-offs are left out: fewer pairs, the same weekly
    relationship."""
    rng = np.random.default_rng(4)
    rows = background(rng, n_accounts=60, n_rows=20_000)
    rows += weekly_flow(rng, "P", "Q", 40, lambda: 41_337, lambda: rng.integers(60, 30 * 3600), start=3 * DAY)
    tx = frame(rows)
    every = dict(support_min_evidence=-np.inf)
    support, n_blocks, engine, W, D, w_id, rates = _pass_one(tx, block_withdrawals=500, support_days=10, **every)
    whole = engine.scan(W, D, w_id, rates, store=False)  # one scan over the run: its own pair sums
    repeated = whole.n >= 2
    assert n_blocks >= 15 and repeated.sum() > 1000
    np.testing.assert_array_equal(support.pair, whole.pair[repeated])
    np.testing.assert_allclose(support.score, engine.score(whole.pair, whole.e, whole.n)[repeated], rtol=1e-12, atol=1e-9)
    longer, n_longer, *_ = _pass_one(tx, block_withdrawals=500, support_days=120, **every)
    assert n_longer < n_blocks / 3
    np.testing.assert_array_equal(longer.pair, support.pair)
    np.testing.assert_allclose(longer.score, support.score, rtol=1e-12, atol=1e-9)
    pq = engine_code(tx, "P") * len(engine.share) + engine_code(tx, "Q")
    assert pq in set(support.pair)  # ~1 transfer per block
    default, *_ = _pass_one(tx, block_withdrawals=500, support_days=10)
    assert pq in set(default.pair) and set(default.pair) < set(support.pair)


def engine_code(tx: pd.DataFrame, client_id: str) -> int:
    """The link engine's code of an account (its category's code)."""
    return int(list(tx["client_id"].cat.categories).index(client_id))


def test_pass_one_hands_on_at_most_support_pairs_the_strongest():
    """Over ``support_pairs`` repeated pairs, pass 1 keeps the highest scores, ties to the lower
    pair code; adding the blocks up range by range keeps the same pairs as capping once."""
    from tracer import link

    capped = link.Support.strongest(np.array([1, 2, 3, 4, 5, 6]), np.array([0.5, 2.0, 1.0, 2.0, 1.0, 1.0]), 4)
    np.testing.assert_array_equal(capped.pair, [2, 3, 4, 5])
    tx = frame(background(np.random.default_rng(5), n_accounts=60, n_rows=20_000))
    every, *_ = _pass_one(tx, block_withdrawals=500, support_days=30, support_min_evidence=-np.inf)
    top, *_ = _pass_one(tx, block_withdrawals=500, support_days=30, support_pairs=100, support_min_evidence=-np.inf)
    assert len(every.pair) > 1000 and len(top.pair) == 100
    strongest = np.sort(np.lexsort((every.pair, -every.score))[:100])
    np.testing.assert_array_equal(top.pair, every.pair[strongest])
    np.testing.assert_array_equal(top.score, every.score[strongest])
    spill = link.PairSpill()
    try:
        support, _, engine, W, D, w_id, rates = _pass_one(tx, block_withdrawals=500, support_days=30, support_min_evidence=-np.inf)
        halves = np.arange(len(W)) < len(W) // 2
        for k, own in enumerate((halves, ~halves)):
            spill.write(k, link.block_pair_sums(engine, rates, link.make_block(W, D, w_id, np.arange(len(D)), own))[0])
        for range_pairs in (10**9, 50):  # one range, many ranges (capped as they are read)
            got = spill.support(engine, [0, 1], limit=100, range_pairs=range_pairs)
            np.testing.assert_array_equal(got.pair, top.pair)
            np.testing.assert_allclose(got.score, top.score, rtol=1e-12)
    finally:
        spill.close()
    assert not spill.dir.exists()


@pytest.mark.parametrize("seed", [0, 1])
def test_repetition_is_read_across_short_blocks(seed):
    """At density a candidate block spans days, so a weekly relationship has one transfer per block.
    Pass 1 reads repetition over the whole run: the pair keeps all its transfers, as with one
    block, although each (a common round amount) has coincidences to compete with."""
    rng = np.random.default_rng(seed)
    rows = background(rng, n_rows=12_000)
    rows += weekly_flow(rng, "P", "Q", 50, lambda: rng.integers(1, 25) * 2000, lambda: rng.integers(60, 30 * 3600))
    tx = frame(rows)

    def kept(**options) -> int:
        t = infer_links(tx, **options).transfers
        return int(((t.source == "P") & (t.target == "Q")).sum())

    assert kept(block_withdrawals=10**9) == kept(block_withdrawals=60) == 50  # 60 withdrawals: ~4 days
    assert kept(block_withdrawals=60, support_days=1, support_min_evidence=-np.inf) == 50
    # pass-1 blocks as short as the pass-2 blocks: each transfer is a weak one-off (a common round
    # amount) in its block, left out by default, and the repetition is missed
    assert kept(block_withdrawals=60, support_days=1) < 45


def test_second_stage_finds_a_side_link_between_relay_accounts():
    """S0 relays cash to T1 eight times besides its forty relays to T0: too few for a busy source and
    target in the first stage; among the relay accounts' unexplained rows the second stage finds it."""
    tx = relay_network(seed=5, side_relays=8)
    relays = {(f"S{i}", f"T{i}") for i in range(8)}
    assert network_links(infer_links(tx, second_stage=False)) == relays
    result = infer_links(tx)
    assert network_links(result) == relays | {("S0", "T1")}
    assert result.stats["second_stage_links"] == 1
    side = result.transfers[(result.transfers.source == "S0") & (result.transfers.target == "T1")]
    assert len(side) >= 6 and (side["kind"] == "cut").all()  # most of the eight relays, as cut transfers


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_second_stage_invents_no_link_between_relay_accounts(seed):
    """The same relay accounts without a side link: the second stage tests their pairs (their own
    cash and deposits coincide now and then) and links none."""
    result = infer_links(relay_network(seed, side_relays=0))
    assert result.stats["second_stage_pairs"] >= 20
    assert network_links(result) == {(f"S{i}", f"T{i}") for i in range(8)}
    assert result.stats["second_stage_links"] == 0


def test_invalid_options_are_refused():
    with pytest.raises(ValueError):
        infer_links(frame([("A", -100, 0), ("B", 100, 60)]), block_withdrawals=0)


@pytest.mark.parametrize("block_withdrawals,side_by_side", [(None, True), (500, True), (500, False)])
def test_forked_runs_give_the_same_result(block_withdrawals, side_by_side, monkeypatch):
    """The forward and mirrored runs side by side, or their blocks, in two processes change nothing."""
    from tracer import link

    monkeypatch.setattr(link.LocalRuns, "_both_runs_fit", lambda self: side_by_side)
    rng = np.random.default_rng(14)
    rows = background(rng, n_rows=6_000)
    rows += weekly_flow(rng, "P", "Q", 30, lambda: rng.integers(10_000, 90_000), lambda: rng.integers(60, 30 * 3600))
    tx = frame(rows)
    one, two = (infer_links(tx, processes=p, block_withdrawals=block_withdrawals) for p in (1, 2))
    assert ("P", "Q") in set(zip(two.links.source, two.links.target))
    pd.testing.assert_frame_equal(one.transfers, two.transfers)
    pd.testing.assert_frame_equal(one.all_links, two.all_links)


def test_runs_side_by_side_only_when_memory_allows_two(monkeypatch):
    """The two runs are forked side by side only when MemAvailable covers both (~120 bytes per row
    plus the larger of a block of candidates and a pass-1 block of rows, each): at 100M rows two runs
    did not fit and one was OOM-killed. Otherwise they run one after the other, each sharing its
    blocks out to both cores."""
    from tracer import link

    rng = np.random.default_rng(3)
    tx = frame(background(rng, n_rows=200))
    runs = link.LocalRuns(tx, link.LinkOptions())
    runs.n_withdrawals = 50_000_000  # as if the input had 100M rows
    runs.n_deposits = 50_000_000
    support_rows = min(100_000_000 * runs.engine.support_span / (runs.t1 - runs.t0), runs.engine.opts.support_rows)  # ~a year
    one_run = 120 * 100_000_000 + max(link.CANDIDATE_BYTES * runs.engine.opts.block_candidates, link.SUPPORT_ROW_BYTES * support_rows)
    monkeypatch.setattr(link.os, "cpu_count", lambda: 2)
    assert runs._processes() == 2
    monkeypatch.setattr(link, "_available_memory", lambda: 1.5 * one_run)
    assert not runs._both_runs_fit()
    monkeypatch.setattr(link, "_available_memory", lambda: 2.1 * one_run)
    assert runs._both_runs_fit()


def test_huge_amount_absent_among_deposits_matches_nothing():
    """On the dense-rank path an amount no deposit has must not borrow the rank of the next one."""
    big = 9_000_000_000_00
    rows = [("W", -big, 7 * DAY * i) for i in range(6)] + [("D", big + 1, 7 * DAY * i + 600) for i in range(6)]
    result = infer_links(frame(rows))
    assert result.transfers.empty


_ORPHAN_SCRIPT = """
import os, sys, time
from tracer.link import _fork_map

def work(i):
    with open(os.path.join(sys.argv[1], f"worker-{i}"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)

list(_fork_map(None, work, [0, 1], 2))
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc (Linux)")
def test_forked_workers_die_with_a_killed_parent(tmp_path):
    """A parent killed outright (SIGKILL: a timeout, the OOM killer) leaves no worker computing on."""
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("worker-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = [int(p.read_text()) for p in tmp_path.glob("worker-*")]
        assert len(workers) == 2 and all(_alive(w) for w in workers)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers)


def test_transfers_are_ordered_by_time_then_source_and_target_names():
    """Ordered by account names, not by category codes (the loader's are in order of appearance)."""
    rng = np.random.default_rng(5)
    rows = background(rng, n_rows=5000)
    for week in range(10):  # withdrawals at the same second from three accounts: ties on time
        t = week * 7 * DAY + 3600
        rows += [(name, -(41_000 + k), t) for k, name in enumerate(["Z9", "B2", "M5"])]
        rows += [("T" + name, 41_000 + k, t + 7200) for k, name in enumerate(["Z9", "B2", "M5"])]
    tx = frame(rows)
    tx["client_id"] = tx["client_id"].cat.reorder_categories(tx["client_id"].cat.categories[::-1])
    transfers = infer_links(tx).transfers
    assert transfers["first_time"].duplicated().any()
    expected = transfers.sort_values(["first_time", "source", "target"], kind="stable")
    assert (transfers.index == expected.index).all()
