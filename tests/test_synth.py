"""Scenario generator: determinism, ground-truth consistency, role counts, scale path."""
from __future__ import annotations

import filecmp
import hashlib
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer import synth

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "datajam"
FILES = ("transactions.csv", "truth_accounts.csv", "truth_links.csv", "truth_transfers.csv")


def _cents(col: pd.Series) -> np.ndarray:
    return np.array([int(Decimal(x) * 100) for x in col], dtype=np.int64)


def _read(out: Path):
    if (out / "transactions.csv").exists():
        tx = pd.read_csv(out / "transactions.csv", dtype=str)
    else:
        p = out / "transactions.parquet"
        parts = sorted(p.glob("part-*.parquet")) if p.is_dir() else [p]
        tx = pd.concat([pd.read_parquet(f) for f in parts], ignore_index=True)
        tx["amount"] = tx["amount"].map(lambda v: f"{v:.2f}")
        tx["client_id"] = tx["client_id"].astype(str)
    tx["cents"] = _cents(tx["amount"])
    tx["ts"] = tx["date"].astype(str) + " " + tx["time"].astype(str)
    tr = pd.read_csv(out / "truth_transfers.csv", dtype={"deposit_rows": str, "amount_out": str, "amount_in": str})
    links = pd.read_csv(out / "truth_links.csv", dtype={"total_amount": str})
    accounts = pd.read_csv(out / "truth_accounts.csv")
    return tx, tr, links, accounts


def _check_truth(out: Path, sorted_rows: bool = True):
    tx, tr, links, accounts = _read(out)
    assert list(tx.columns[:4]) == ["client_id", "amount", "date", "time"]
    assert (tx["cents"] != 0).all()
    ts = tx["ts"].to_numpy()
    if sorted_rows:  # a multi-block run is sorted within each block
        assert (ts[1:] >= ts[:-1]).all()
    cid = tx["client_id"].astype(np.int64).to_numpy()
    cents = tx["cents"].to_numpy()
    out_c, in_c = _cents(tr["amount_out"]), _cents(tr["amount_in"])
    w = tr["withdrawal_row"].to_numpy()
    assert (cid[w] == tr["source"].to_numpy()).all()
    assert (cents[w] == -out_c).all()
    parts = tr["deposit_rows"].str.split(" ")
    k = parts.map(len).to_numpy()
    d = np.array([int(x) for p in parts for x in p], dtype=np.int64)
    owner = np.repeat(np.arange(len(tr)), k)
    assert (cid[d] == tr["target"].to_numpy()[owner]).all()
    assert (cents[d] > 0).all()
    assert (np.bincount(owner, cents[d], minlength=len(tr)).astype(np.int64) == in_c).all()
    assert (ts[d] > ts[w[owner]]).all(), "deposit must come after its withdrawal"
    assert (d > w[owner]).all()
    transfer = (tr["channel"] == "transfer").to_numpy()
    assert (in_c[transfer] == out_c[transfer]).all()
    assert (in_c[~transfer] < out_c[~transfer]).all()
    # a row belongs to at most one transfer
    used = np.concatenate([w, d])
    assert np.unique(used).size == used.size
    # links aggregate transfers exactly
    agg = tr.assign(c=out_c).groupby(["source", "target", "kind"]).agg(n=("c", "size"), tot=("c", "sum")).reset_index()
    m = links.assign(tc=_cents(links["total_amount"])).merge(agg, on=["source", "target", "kind"], how="outer")
    assert len(m) == len(links) == len(agg)
    assert (m["n"] == m["n_transfers"]).all() and (m["tot"] == m["tc"]).all()
    # truth accounts cover every client and roles match the criminal links
    assert set(np.unique(cid)) <= set(accounts["client_id"])
    role = accounts.set_index("client_id")["role"]
    crim = tr[tr["kind"] == "criminal"]
    assert (role.loc[crim["source"]].to_numpy() != "normal").all()
    assert (role.loc[crim["target"]].to_numpy() != "normal").all()
    return tx, tr, links, accounts


@pytest.fixture(scope="module")
def careful(tmp_path_factory):
    out = tmp_path_factory.mktemp("careful")
    summary = synth.write_scenario("careful", out, seed=3, accounts=600, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    out = tmp_path_factory.mktemp("relay")
    summary = synth.write_scenario("cash_relay", out, seed=5, accounts=600, progress=False)
    return out, summary


def test_determinism_same_seed_same_bytes(tmp_path):
    for i in (1, 2):
        synth.write_scenario("careful", tmp_path / str(i), seed=11, accounts=300, years=0.5, progress=False)
    for f in FILES:
        assert filecmp.cmp(tmp_path / "1" / f, tmp_path / "2" / f, shallow=False), f
    synth.write_scenario("careful", tmp_path / "3", seed=12, accounts=300, years=0.5, progress=False)
    assert not filecmp.cmp(tmp_path / "1" / FILES[0], tmp_path / "3" / FILES[0], shallow=False)


def test_generate_matches_written_files(tmp_path):
    sc = synth.generate("careful", seed=2, accounts=300, years=0.3)
    synth.write_scenario("careful", tmp_path, seed=2, accounts=300, years=0.3, progress=False)
    tx = pd.read_csv(tmp_path / "transactions.csv")
    assert len(tx) == len(sc.transactions) == sc.describe()["rows"]
    assert (tx["client_id"].to_numpy() == sc.transactions["client_id"].to_numpy()).all()
    assert np.allclose(tx["amount"].to_numpy(), sc.transactions["amount"].to_numpy())
    assert (tx["date"].to_numpy() == sc.transactions["date"].astype(str).to_numpy()).all()
    assert len(pd.read_csv(tmp_path / "truth_transfers.csv")) == len(sc.truth_transfers)
    assert set(sc.truth_accounts.columns) == {"client_id", "role", "network_id", "persona"}


def test_fixture_is_seed0_datajam(tmp_path):
    synth.write_scenario("datajam", tmp_path, seed=0, progress=False)
    for f in FILES:
        assert filecmp.cmp(tmp_path / f, FIXTURE / f, shallow=False), f"{f} is stale: regenerate the fixture"


def test_datajam_matches_writeup():
    tx, tr, links, acc = _check_truth(FIXTURE)
    assert 30_000 <= len(tx) <= 36_000
    counts = acc["role"].value_counts().to_dict()
    assert counts == {"normal": 984, "low_level": 10, "intermediary": 3, "upper_tier": 1}
    crim = acc[acc["role"] != "normal"]
    assert sorted(crim["client_id"]) == list(range(985, 999))
    assert (tr["kind"] == "criminal").all() and (tr["channel"] == "transfer").all()
    assert (tr["amount_out"] == "500.00").all()
    # criminal accounts have no normal activity: every withdrawal of an intermediary is a transfer
    inter = acc.loc[acc["role"] == "intermediary", "client_id"].astype(str)
    rows = tx.index[tx["client_id"].isin(inter) & (tx["cents"] < 0)]
    assert set(rows) <= set(tr["withdrawal_row"])
    ts = tx["ts"].to_numpy()
    assert (ts[1:] >= ts[:-1]).all()


def test_careful_truth_and_roles(careful):
    out, summary = careful
    tx, tr, links, acc = _check_truth(out)
    assert summary["rows"] == len(tx)
    roles = acc["role"].value_counts()
    assert roles["upper_tier"] == 3
    sizes = acc[acc["network_id"] >= 0].groupby("network_id")["role"].value_counts().unstack()
    assert (sizes["upper_tier"] == 1).all()
    assert sizes["intermediary"].between(2, 4).all() and sizes["low_level"].between(5, 15).all()
    assert sizes["low_level"].nunique() > 1  # networks of different sizes
    crim_ids = acc.loc[acc["role"] != "normal", "client_id"].to_numpy()
    assert np.diff(np.sort(crim_ids)).max() > 1  # not a contiguous block of ids
    assert {"landlord", "employer", "cash_earner", "wealthy", "family"} <= set(acc["persona"])
    kinds = tr.groupby("kind").size()
    assert kinds["criminal"] > 100 and kinds["legit"] > 1_000
    crim_tr = tr[tr["kind"] == "criminal"]
    assert (crim_tr["deposit_rows"].str.contains(" ")).mean() > 0.1  # split deposits
    assert ((_cents(crim_tr["amount_out"]) % 100) != 0).all()  # non-round
    # criminals also live normal lives: plenty of rows outside criminal transfers
    crim_rows = set(crim_tr["withdrawal_row"]) | {int(x) for p in crim_tr["deposit_rows"] for x in p.split()}
    own = tx[tx["client_id"].astype(np.int64).isin(crim_ids)]
    other = own.loc[~own.index.isin(crim_rows)].groupby("client_id").size()
    assert len(other) == len(crim_ids) and other.min() >= 50
    # lags between 5 min and ~2.5 days for criminal transfers
    ts = pd.to_datetime(tx["ts"]).to_numpy()
    first_dep = crim_tr["deposit_rows"].str.split(" ").str[0].astype(int).to_numpy()
    lag_h = (ts[first_dep] - ts[crim_tr["withdrawal_row"].to_numpy()]) / np.timedelta64(1, "h")
    assert lag_h.min() >= 4 / 60 and lag_h.max() <= 61


def test_cash_relay_never_equal_amounts(relay):
    out, summary = relay
    tx, tr, links, acc = _check_truth(out)
    crim = tr[tr["kind"] == "criminal"]
    assert len(crim) > 100 and (crim["channel"] == "cash_relay").all()
    assert (tr.loc[tr["kind"] == "legit", "channel"] == "transfer").all()
    o, i = _cents(crim["amount_out"]), _cents(crim["amount_in"])
    assert (o % 2_000 == 0).all() and (o <= 100_000).all()
    assert (i >= 0.85 * o - 1_000).all() and (i <= 0.95 * o + 1_000).all()  # a 5-15% cut
    assert (i % 2_000 != 0).all()
    # the relay channel never produces an equal-amount withdrawal -> deposit pair
    dep_rows = np.array([int(x) for p in crim["deposit_rows"] for x in p.split()])
    relay_w = set(-tx["cents"].to_numpy()[crim["withdrawal_row"].to_numpy()])
    assert not (set(tx["cents"].to_numpy()[dep_rows]) & relay_w)
    # between criminal partners, equal amounts within 3 days happen only by rare coincidence
    ts = pd.to_datetime(tx["ts"]).to_numpy()
    cid = tx["client_id"].astype(np.int64).to_numpy()
    cents = tx["cents"].to_numpy()
    coincidences = 0
    for s, t in links.loc[links["kind"] == "criminal", ["source", "target"]].itertuples(index=False):
        ws, ds = np.flatnonzero((cid == s) & (cents < 0)), np.flatnonzero((cid == t) & (cents > 0))
        m = pd.DataFrame({"a": -cents[ws], "tw": ts[ws]}).merge(pd.DataFrame({"a": cents[ds], "td": ts[ds]}), on="a")
        lag = (m["td"] - m["tw"]) / pd.Timedelta(hours=1)
        coincidences += int(((lag > 0) & (lag <= 72)).sum())
    assert coincidences < 0.01 * len(crim)
    # relay withdrawals respect the $1,000 daily limit per account
    w = tx.loc[crim["withdrawal_row"]].assign(c=-o)
    assert w.groupby(["client_id", "date"])["c"].sum().max() <= 100_000


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_scale_path_writes_blocks(tmp_path, fmt):
    summary = synth.write_scenario("careful", tmp_path, seed=1, accounts=900, years=0.25, networks=2,
                                   fmt=fmt, progress=False, block_accounts=300)
    assert summary["blocks"] == 3
    if fmt == "parquet":
        parts = sorted((tmp_path / "transactions.parquet").glob("part-*.parquet"))
        assert len(parts) == 3
    tx, tr, links, acc = _check_truth(tmp_path, sorted_rows=False)
    assert len(tx) == summary["rows"] and len(acc) == 900
    assert (acc["role"] == "upper_tier").sum() == 2
    assert not list(tmp_path.glob(".*"))  # no temporary leftovers


def test_single_parquet_file(tmp_path):
    synth.write_scenario("datajam", tmp_path, seed=0, fmt="parquet", progress=False)
    assert (tmp_path / "transactions.parquet").is_file()
    tx = pd.read_parquet(tmp_path / "transactions.parquet")
    assert list(tx.columns) == ["client_id", "amount", "date", "time"] and len(tx) > 30_000


def test_scaling_parameters():
    a = synth.generate("datajam", seed=0, accounts=2_000, years=0.5, networks=2).describe()
    assert a["accounts_by_role"]["upper_tier"] == 2 and a["accounts"] == 2_000
    assert 25_000 < a["rows"] < 45_000
    with pytest.raises(ValueError):
        synth.generate("nope")
    with pytest.raises(ValueError):
        synth.generate("careful", accounts=10)


def test_describe_fields(careful):
    _, s = careful
    for key in ("rows", "deposit_share", "accounts_by_role", "accounts_by_persona", "amount_abs_quantiles",
                "round_share", "rows_per_account", "criminal_transfers", "legit_transfers"):
        assert key in s
    assert 0.05 < s["deposit_share"] < 0.4
    assert s["rows_per_account"]["p10"] < s["rows_per_account"]["p90"]
    assert "rows" in synth.format_summary(s)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), amounts=st.lists(st.integers(1, 10**9), min_size=1, max_size=30))
def test_split_parts_sum_exactly(seed, amounts):
    rng = np.random.default_rng(seed)
    ev = synth._Events()
    n = len(amounts)
    amt = np.array(amounts, np.int64)
    arrival = ev.transfers(rng, np.zeros(n), np.ones(n), np.arange(n) * 100, amt, np.full(n, 30), split_p=0.7)
    c, t = np.concatenate(ev.c), np.concatenate(ev.t)
    ptr, pev = np.concatenate(ev.parts_tr), np.concatenate(ev.parts_ev)
    assert (np.bincount(ptr, c[pev], minlength=n).astype(np.int64) == amt).all()
    assert (c[pev] > 0).all() and (t[pev] > t[np.concatenate(ev.tr["w"])][ptr]).all()
    assert (arrival >= t[pev].reshape(-1)[np.r_[np.flatnonzero(np.diff(ptr)), ptr.size - 1]]).all()


# sha256 of the four CSV files written by the code before ``activity`` existed (commit 0961d64)
_BEFORE_ACTIVITY = {
    ("careful", 7): "ade76540a37a34e07e2f030d6af6e2dbbfd02d59c4bc88018e432ba4a7df49f2",
    ("cash_relay", 8): "94b212e61c0b1c1e8fcb12bf5dab5ad315ff79146d1b1393d3f06dfe3f64da4a",
    ("datajam", 9): "222654b1645722e26d419321a15eff34c7adbf1e432dc650a4d26e45aecb59d4",
}


@pytest.mark.parametrize(("scenario", "seed"), sorted(_BEFORE_ACTIVITY))
def test_activity_one_reproduces_earlier_output(tmp_path, scenario, seed):
    synth.write_scenario(scenario, tmp_path, seed=seed, accounts=400, years=0.5, networks=2, progress=False,
                         activity=1.0)
    digest = hashlib.sha256(b"".join((tmp_path / f).read_bytes() for f in FILES)).hexdigest()
    assert digest == _BEFORE_ACTIVITY[scenario, seed]


def test_activity_one_keeps_block_size():
    assert synth._plan("careful", 0, 500_000, 5.0, 3).block_accounts == 2_998  # as before ``activity``


def test_activity_thins_everyday_life_only():
    full = synth.generate("careful", seed=4, accounts=800, years=1.0, activity=1.0)
    thin = synth.generate("careful", seed=4, accounts=800, years=1.0, activity=0.15)
    again = synth.generate("careful", seed=4, accounts=800, years=1.0, activity=0.15)
    pd.testing.assert_frame_equal(thin.transactions, again.transactions)
    assert thin.params["activity"] == 0.15 and thin.describe()["activity"] == 0.15
    assert 0.25 < len(thin.transactions) / len(full.transactions) < 0.5
    # wages, rent, relationships and criminal flows do not thin
    for kind in ("legit", "criminal"):
        n_full = (full.truth_transfers["kind"] == kind).sum()
        assert abs((thin.truth_transfers["kind"] == kind).sum() / n_full - 1) < 0.1, kind
    # criminals live the same thinner lives: they lose as many everyday rows as ordinary people
    acc = thin.truth_accounts
    rows = lambda sc: sc.transactions.groupby("client_id").size().reindex(acc["client_id"], fill_value=0)
    lost = rows(full) - rows(thin)
    crim = acc.loc[acc["role"] != "normal", "client_id"]
    ordinary = acc.loc[(acc["role"] == "normal") & acc["persona"].isin(["normal", "cash_earner"]), "client_id"]
    assert 0.7 < lost[crim].median() / lost[ordinary].median() < 1.4
    assert (rows(thin)[crim] > 40).all()


def test_activity_datajam_and_bounds():
    thin = synth.generate("datajam", seed=0, activity=0.0).describe()
    full = synth.generate("datajam", seed=0).describe()
    assert thin["rows"] < 0.9 * full["rows"]
    assert abs(thin["criminal_transfers"] / full["criminal_transfers"] - 1) < 0.02
    with pytest.raises(ValueError):
        synth.generate("careful", activity=-0.5)
