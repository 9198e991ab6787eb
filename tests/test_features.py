"""tracer.features on tiny hand-built frames: every number checked against a hand computation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.features import BEHAVIOUR_COLUMNS, FLOW_COLUMNS, _distinct_per_group, account_features, behaviour_features
from tracer.link import LINK_COLUMNS

DAY, HOUR = 86400, 3600


def frame(rows: list[tuple[str, int, int]]) -> pd.DataFrame:
    """Canonical transactions from (client_id, amount_cents, seconds)."""
    df = pd.DataFrame(rows, columns=["client_id", "amount_cents", "seconds"])
    df["amount_cents"] = df["amount_cents"].astype(np.int64)
    df["timestamp"] = (pd.Timestamp("2024-01-01") + pd.to_timedelta(df.pop("seconds"), unit="s")).astype("datetime64[s]")
    df["client_id"] = df["client_id"].astype(str).astype("category")
    df["row_id"] = np.arange(len(df), dtype=np.int64)
    return df


# account A: four deposits (three large), six withdrawals (four small, one repeated amount), over 21 days
A_DEPOSITS = [(50_000, 0 * DAY), (5_050, 3 * DAY), (50_000, 7 * DAY), (60_001, 21 * DAY)]
A_WITHDRAWALS = [(2_500, 1 * DAY), (2_500, 2 * DAY), (3_000, 5 * DAY), (20_000, 10 * DAY), (9_999, 15 * DAY), (10_000, 16 * DAY)]


@pytest.fixture(scope="module")
def behaviour() -> pd.DataFrame:
    rows = [("A", c, t) for c, t in A_DEPOSITS] + [("A", -c, t) for c, t in A_WITHDRAWALS]
    rows += [("B", -4_000, 2 * DAY), ("B", -4_000, 2 * DAY + HOUR)]  # only spends
    rows += [("C", 25_000, 4 * DAY)]  # one large deposit
    rows += [("D", 30_000, 0), ("D", 30_000, 10 * DAY)]  # two identical large deposits
    rng = np.random.default_rng(0)
    rows = [rows[i] for i in rng.permutation(len(rows))]  # input order must not matter
    return behaviour_features(frame(rows))


def test_behaviour_has_documented_columns_one_row_per_account(behaviour):
    assert list(behaviour.columns) == BEHAVIOUR_COLUMNS
    assert behaviour.index.tolist() == ["A", "B", "C", "D"]
    assert behaviour.index.name == "client_id"


def test_counts_and_money(behaviour):
    a = behaviour.loc["A"]
    assert a["n_deposits"] == 4 and a["n_withdrawals"] == 6
    assert a["money_in"] == pytest.approx(1650.51)
    assert a["money_out"] == pytest.approx(479.99)
    assert a["retention"] == pytest.approx((1650.51 - 479.99) / 1650.51)
    assert a["active_days"] == pytest.approx(21.0)
    b = behaviour.loc["B"]
    assert b["money_in"] == 0 and b["money_out"] == pytest.approx(80.0)
    assert b["retention"] == 0  # no income: defined as 0, not -inf
    assert b["active_days"] == 1.0  # floor of one day


def test_large_deposit_regularity(behaviour):
    a = behaviour.loc["A"]
    assert a["large_deposits"] == 3  # $500, $500, $600.01; the $50.50 one is small
    gaps = np.array([7.0, 14.0])
    assert a["large_deposit_gap_days"] == pytest.approx(np.median(gaps))  # 10.5
    assert a["large_deposit_gap_cv"] == pytest.approx(gaps.std() / gaps.mean())  # 1/3
    amounts = np.array([50_000, 50_000, 60_001], dtype=float)
    assert a["large_deposit_amount_cv"] == pytest.approx(amounts.std() / amounts.mean())
    d = behaviour.loc["D"]
    assert d["large_deposits"] == 2
    assert d["large_deposit_gap_days"] == pytest.approx(10.0)
    assert d["large_deposit_gap_cv"] == pytest.approx(0.0)
    assert d["large_deposit_amount_cv"] == pytest.approx(0.0)
    c = behaviour.loc["C"]
    assert c["large_deposits"] == 1
    assert np.isnan(c["large_deposit_gap_days"]) and np.isnan(c["large_deposit_gap_cv"])
    assert behaviour.loc["B", "large_deposits"] == 0 and np.isnan(behaviour.loc["B", "large_deposit_gap_days"])


def test_round_share_small_spends_distinct_withdrawals(behaviour):
    a = behaviour.loc["A"]
    assert a["round_deposit_share"] == pytest.approx(2 / 4)  # $500.00 twice; $50.50 and $600.01 are not round
    small = sum(1 for c, _ in A_WITHDRAWALS if c < 10_000)  # 2500, 2500, 3000, 9999 -> 4
    assert small == 4
    assert a["small_spends_per_month"] == pytest.approx(small / (21 / 30))
    assert a["distinct_withdrawal_share"] == pytest.approx(5 / 6)  # 2500 repeats
    b = behaviour.loc["B"]
    assert b["distinct_withdrawal_share"] == pytest.approx(1 / 2)
    assert b["small_spends_per_month"] == pytest.approx(2 / (1 / 30))
    assert b["round_deposit_share"] == 0
    assert behaviour.loc["C", "distinct_withdrawal_share"] == 0  # no withdrawals
    assert behaviour.loc["D", "round_deposit_share"] == 1.0


# --- flow features -------------------------------------------------------------------------------

T0 = pd.Timestamp("2024-01-01")


def _links(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["source", "target", "total_amount"]).astype({"source": str, "target": str, "total_amount": float})
    df["n_transfers"] = 1
    df["first_time"] = T0
    df["last_time"] = T0
    df["median_lag_hours"] = 1.0
    df["score"] = 10.0
    df["q_value"] = 0.0
    return df[LINK_COLUMNS]


def _transfers(rows: list[tuple[str, str, float, int]]) -> pd.DataFrame:
    """(source, target, amount_out, seconds of the withdrawal)."""
    return pd.DataFrame({
        "source": [r[0] for r in rows], "target": [r[1] for r in rows], "amount_out": [float(r[2]) for r in rows],
        "first_time": [(T0 + pd.Timedelta(seconds=r[3])) for r in rows],
    }).astype({"source": str, "target": str, "amount_out": float, "first_time": "datetime64[s]"})


@pytest.fixture(scope="module")
def flows():
    # R (relay) receives $1000 at 0 h and $1000 at 100 h; sends $900 at 2 h (held 2 h), $100 at 101 h (held 1 h)
    # and $800 at 200 h (held 100 h: too slow to count as passing through within 72 h).
    # E sends $50 before it ever received anything (no holding time); F forwards more than it got.
    rows = [
        ("R", 100_000, 0), ("R", 100_000, 100 * HOUR),
        ("R", -90_000, 2 * HOUR), ("R", -10_000, 101 * HOUR), ("R", -80_000, 200 * HOUR),
        ("S", 90_000, 3 * HOUR), ("S", 10_000, 102 * HOUR), ("S", 80_000, 201 * HOUR), ("S", 5_000, 20 * HOUR),
        ("E", -5_000, 19 * HOUR), ("E", 40_000, 30 * DAY),
        ("F", 10_000, 0), ("F", -30_000, HOUR), ("G", 30_000, 2 * HOUR),
        ("N", 12_345, 0), ("N", -2_000, DAY),
    ]
    tx = frame(rows)
    transfers = _transfers([
        ("R", "S", 900, 2 * HOUR), ("R", "S", 100, 101 * HOUR), ("R", "S", 800, 200 * HOUR),
        ("E", "S", 50, 19 * HOUR), ("F", "G", 300, HOUR),
    ])
    links = _links([("R", "S", 1800.0), ("E", "S", 50.0), ("F", "G", 300.0)])
    features = account_features(tx, links, transfers, holding_hours=72.0)
    return tx, links, transfers, features


def test_account_features_columns(flows):
    *_, f = flows
    assert list(f.columns) == BEHAVIOUR_COLUMNS + FLOW_COLUMNS
    assert sorted(f.index) == ["E", "F", "G", "N", "R", "S"]


def test_link_totals_and_counts(flows):
    *_, f = flows
    assert f.loc["S", "link_in"] == pytest.approx(1850.0) and f.loc["S", "n_senders"] == 2
    assert f.loc["R", "link_out"] == pytest.approx(1800.0) and f.loc["R", "n_receivers"] == 1
    assert f.loc["R", "link_in"] == 0 and f.loc["R", "n_senders"] == 0
    assert f.loc["N", ["link_in", "link_out", "n_senders", "n_receivers"]].tolist() == [0, 0, 0, 0]
    assert f.loc["S", "link_in_share"] == pytest.approx(1850 / 1850)
    assert f.loc["R", "forward_share"] == pytest.approx(1800 / 2000)
    assert f.loc["E", "forward_share"] == pytest.approx(50 / 400)


def test_pass_through_counts_only_money_sent_on_within_the_window(flows):
    *_, f = flows
    assert f.loc["R", "pass_through"] == pytest.approx((900 + 100) / 2000)
    assert f.loc["R", "holding_hours"] == pytest.approx(np.median([2.0, 1.0, 100.0]))
    assert f.loc["E", "pass_through"] == 0  # sent before any money arrived
    assert np.isnan(f.loc["E", "holding_hours"])
    assert f.loc["F", "pass_through"] == 1.0  # clipped: sent $300 of $100 received
    assert f.loc["F", "holding_hours"] == pytest.approx(1.0)
    for receiver in ("S", "G", "N"):
        assert f.loc[receiver, "pass_through"] == 0
        assert np.isnan(f.loc[receiver, "holding_hours"])


def test_pass_through_depends_on_holding_window(flows):
    tx, links, transfers, _ = flows
    wide = account_features(tx, links, transfers, holding_hours=150.0)
    assert wide.loc["R", "pass_through"] == pytest.approx(1800 / 2000)  # the 100 h hold now counts too
    narrow = account_features(tx, links, transfers, holding_hours=1.5)
    assert narrow.loc["R", "pass_through"] == pytest.approx(100 / 2000)


def test_centrality_columns(flows):
    *_, f = flows
    assert f["pagerank"].sum() == pytest.approx(1.0)
    assert f["pagerank"].idxmax() == "S"  # the account most money flows into
    assert f["hub"].sum() == pytest.approx(1.0) and f["authority"].sum() == pytest.approx(1.0)
    assert f.loc["N", "hub"] == 0 and f.loc["N", "authority"] == 0
    assert f.loc["S", "hub"] == 0 and f.loc["S", "authority"] > 0


def test_no_links_no_transfers():
    tx = frame([("a", 10_000, 0), ("a", -5_000, HOUR), ("b", 2_000, DAY)])
    f = account_features(tx, _links([]), _transfers([]))
    assert (f["pass_through"] == 0).all() and f["holding_hours"].isna().all()
    assert (f[["link_in", "link_out", "n_senders", "n_receivers", "hub", "authority"]] == 0).all().all()
    assert f["pagerank"].tolist() == pytest.approx([0.5, 0.5])


def test_no_large_deposits_at_all():
    tx = frame([("a", 5_000, 0), ("a", -2_000, HOUR), ("b", -1_000, DAY)])
    f = behaviour_features(tx)
    assert (f["large_deposits"] == 0).all()
    assert f["large_deposit_gap_days"].isna().all()
    assert f.loc["a", "money_in"] == pytest.approx(50.0)


def test_relay_balance_and_batch_share():
    # P pays three employees within two minutes (a payroll batch) and one of them again a week later;
    # M receives $1000 over a link and sends $600 on: relay balance 0.6
    tx = frame([
        ("P", 500_000, 0), ("P", -100_000, HOUR), ("P", -100_000, HOUR + 60), ("P", -100_000, HOUR + 120),
        ("P", -100_000, 7 * DAY), ("e1", 100_000, 2 * HOUR), ("e2", 100_000, 2 * HOUR), ("e3", 100_000, 2 * HOUR),
        ("e1", 100_000, 7 * DAY + HOUR), ("M", 100_000, 3 * DAY), ("M", -60_000, 3 * DAY + HOUR), ("Q", 60_000, 3 * DAY + 2 * HOUR),
    ])
    transfers = _transfers([("P", "e1", 1000, HOUR), ("P", "e2", 1000, HOUR + 60), ("P", "e3", 1000, HOUR + 120),
                            ("P", "e1", 1000, 7 * DAY), ("e1", "M", 1000, 3 * DAY - HOUR), ("M", "Q", 600, 3 * DAY + HOUR)])
    links = _links([("P", "e1", 2000.0), ("P", "e2", 1000.0), ("P", "e3", 1000.0), ("e1", "M", 1000.0), ("M", "Q", 600.0)])
    f = account_features(tx, links, transfers)
    assert f.loc["P", "batch_share"] == pytest.approx(3 / 4)
    assert f.loc["M", "batch_share"] == 0 and f.loc["Q", "batch_share"] == 0
    assert f.loc["M", "relay_balance"] == pytest.approx(600 / 1000)
    assert f.loc["e1", "relay_balance"] == pytest.approx(1000 / 2000)
    assert f.loc["P", "relay_balance"] == 0 and f.loc["Q", "relay_balance"] == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.sampled_from([0, 1, 2, 500, 2**40, 2**62 - 1])), max_size=40))
def test_distinct_per_group_counts_distinct_pairs(pairs):
    # a value of 2**62 - 1 leaves no room to pack the group in an int64: then the pairs are sorted as pairs
    codes = np.array([c for c, _ in pairs], dtype=np.int64)
    values = np.array([v for _, v in pairs], dtype=np.int64)
    want = pd.DataFrame({"c": codes, "v": values}).drop_duplicates()["c"].value_counts().reindex(range(7), fill_value=0)
    assert _distinct_per_group(codes, values, 7).tolist() == want.tolist()
