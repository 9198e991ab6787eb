"""tracer.roles.RoleModel on hand-built feature frames and links, so the structure is explicit.

Each scenario is a small world: ~80 ordinary background accounts plus the accounts of interest,
with feature values of the size tracer computes on the datajam scenario (a year of activity).
Flow columns (link_in/out, senders, receivers, shares, balance, centrality) are derived from the
links exactly as tracer.features does, so the frames are self-consistent.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tracer.features import BEHAVIOUR_COLUMNS, FLOW_COLUMNS
from tracer.graph import flow_matrix, hits, pagerank
from tracer.link import LINK_COLUMNS
from tracer.roles import ROLES, RoleModel

NORMAL = dict(
    n_deposits=30, n_withdrawals=150, money_in=42_000.0, money_out=40_000.0, active_days=364.0, retention=0.05,
    large_deposits=26, large_deposit_gap_days=14.0, large_deposit_gap_cv=0.05, large_deposit_amount_cv=0.03,
    round_deposit_share=0.1, small_spends_per_month=9.0, distinct_withdrawal_share=0.85,
    pass_through=0.0, holding_hours=np.nan, batch_share=0.0,
)
# a street-level handler: weekly cash deposits, forwards most of it within a day or two, no everyday spending
HANDLER = dict(
    n_deposits=52, n_withdrawals=80, money_in=60_000.0, money_out=40_000.0, retention=0.33,
    large_deposits=52, large_deposit_gap_days=7.0, large_deposit_gap_cv=0.18, large_deposit_amount_cv=0.15,
    round_deposit_share=1.0, small_spends_per_month=0.0, distinct_withdrawal_share=0.2,
    pass_through=0.62, holding_hours=34.0,
)
DERIVED = {"link_in", "link_out", "n_senders", "n_receivers", "link_in_share", "forward_share", "relay_balance",
           "pagerank", "hub", "authority"}


class World:
    def __init__(self, n_background: int = 80, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.rows: dict[str, dict] = {}
        self.links: list[tuple[str, str, float, float]] = []
        for i in range(n_background):
            money_in = float(rng.lognormal(np.log(42_000), 0.5))
            self.account(
                f"bg{i:03d}", money_in=money_in, money_out=money_in * rng.uniform(0.8, 1.0),
                retention=float(rng.uniform(0.0, 0.2)), n_deposits=int(rng.integers(20, 60)), n_withdrawals=int(rng.integers(80, 250)),
                large_deposit_gap_days=float(rng.choice([7.0, 14.0, 15.2, 30.4])), large_deposit_gap_cv=float(rng.uniform(0.01, 0.3)),
                large_deposit_amount_cv=float(rng.uniform(0.0, 0.2)), round_deposit_share=float(rng.uniform(0.0, 0.4)),
                small_spends_per_month=float(rng.uniform(3, 20)), distinct_withdrawal_share=float(rng.uniform(0.6, 1.0)),
            )

    def account(self, cid: str, base: dict = NORMAL, **values) -> None:
        self.rows[cid] = {**NORMAL, **base, **values}

    def link(self, source: str, target: str, amount: float, q: float = 0.001) -> None:
        self.links.append((source, target, float(amount), q))

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        f = pd.DataFrame.from_dict(self.rows, orient="index")
        f.index = pd.Index(f.index.astype(str), name="client_id")
        links = pd.DataFrame(self.links, columns=["source", "target", "total_amount", "q_value"])
        links = links.astype({"source": str, "target": str})
        links["n_transfers"] = 12
        links["first_time"] = pd.Timestamp("2024-01-05")
        links["last_time"] = pd.Timestamp("2024-12-20")
        links["median_lag_hours"] = 2.0
        links["score"] = 20.0
        links = links[LINK_COLUMNS]
        assert set(links["source"]).union(links["target"]) <= set(f.index)
        f["link_in"] = links.groupby("target")["total_amount"].sum().reindex(f.index, fill_value=0.0)
        f["link_out"] = links.groupby("source")["total_amount"].sum().reindex(f.index, fill_value=0.0)
        f["n_senders"] = links.groupby("target").size().reindex(f.index, fill_value=0)
        f["n_receivers"] = links.groupby("source").size().reindex(f.index, fill_value=0)
        f["link_in_share"] = (f["link_in"] / f["money_in"]).where(f["money_in"] > 0, 0.0)
        f["forward_share"] = (f["link_out"] / f["money_in"]).where(f["money_in"] > 0, 0.0)
        hi = np.maximum(f["link_in"], f["link_out"])
        f["relay_balance"] = (np.minimum(f["link_in"], f["link_out"]) / hi).where(hi > 0, 0.0)
        M = flow_matrix(links, f.index)
        f["pagerank"] = pagerank(M)
        f["hub"], f["authority"] = hits(M)
        columns = BEHAVIOUR_COLUMNS + FLOW_COLUMNS
        for col in columns:  # a feature added later defaults to the unremarkable value
            if col not in f:
                f[col] = 0.0
        return f[columns], links


def chain(w: World, prefix: str = "", sink_other_income: float = 10_000.0) -> dict[str, str]:
    """Three handlers -> one relay -> one sink; returns the true role of each account."""
    feeders = [f"{prefix}f{i}" for i in range(3)]
    relay, sink = f"{prefix}relay", f"{prefix}sink"
    sent = [38_000.0, 40_500.0, 35_500.0]
    for cid, amount in zip(feeders, sent):
        w.account(cid, HANDLER, money_out=amount + 2_000)
        w.link(cid, relay, amount)
    total = sum(sent)
    w.account(relay, n_deposits=230, n_withdrawals=230, money_in=total, money_out=total, retention=0.0,
              large_deposits=230, large_deposit_gap_days=1.1, large_deposit_gap_cv=0.9, large_deposit_amount_cv=0.2,
              round_deposit_share=1.0, small_spends_per_month=0.0, distinct_withdrawal_share=0.05,
              pass_through=1.0, holding_hours=2.8)
    w.link(relay, sink, total)
    w.account(sink, n_deposits=240, n_withdrawals=60, money_in=total + sink_other_income, money_out=0.3 * (total + sink_other_income),
              retention=0.7, large_deposits=235, large_deposit_gap_days=1.1, large_deposit_gap_cv=0.9,
              large_deposit_amount_cv=0.4, round_deposit_share=0.95, small_spends_per_month=1.0, pass_through=0.0)
    return {**{f: "low_level" for f in feeders}, relay: "intermediary", sink: "upper_tier"}


def landlord(w: World, name: str = "landlord") -> list[str]:
    tenants = [f"tenant{i}" for i in range(10)]
    for t in tenants:
        # rent goes out within a day or two of the salary: some pass-through, but well under half
        w.account(t, money_in=50_000.0, money_out=48_000.0, pass_through=0.29, holding_hours=30.0, batch_share=0.0)
        w.link(t, name, 14_400.0)  # 12 x $1,200, identical for everyone
    w.account(name, n_deposits=150, money_in=164_000.0, money_out=60_000.0, retention=0.63, large_deposits=140,
              large_deposit_gap_days=1.0, large_deposit_gap_cv=1.2, large_deposit_amount_cv=0.01, round_deposit_share=1.0,
              small_spends_per_month=6.0, pass_through=0.0)
    return [name, *tenants]


def employer(w: World, name: str = "employer", with_customers: bool = True) -> list[str]:
    employees = [f"employee{i}" for i in range(10)]
    customers = [f"customer{i}" for i in range(3)] if with_customers else []
    for e in employees:
        w.account(e, money_in=47_000.0, money_out=45_000.0, pass_through=0.08, holding_hours=60.0,
                  large_deposit_gap_days=14.0, large_deposit_gap_cv=0.01, large_deposit_amount_cv=0.01)
        w.link(name, e, 45_000.0)
    for c in customers:
        w.account(c, money_in=900_000.0, money_out=880_000.0, pass_through=0.05, holding_hours=200.0)
        w.link(c, name, 160_000.0)
    w.account(name, n_deposits=300, n_withdrawals=400, money_in=500_000.0, money_out=480_000.0, retention=0.04,
              large_deposits=290, large_deposit_gap_days=1.0, large_deposit_gap_cv=0.8, large_deposit_amount_cv=0.6,
              round_deposit_share=0.05, small_spends_per_month=0.5, pass_through=0.9, holding_hours=20.0, batch_share=1.0)
    return [name, *employees, *customers]


def fit(w: World, **params) -> RoleModel:
    features, links = w.frames()
    model = RoleModel(**params).fit(features, links)
    assert model.accounts_.index.equals(features.index)
    return model


# --- the scenarios ------------------------------------------------------------------------------

def test_helper_builds_every_feature_column():
    w = World(n_background=5)
    chain(w)
    features, _ = w.frames()
    assert list(features.columns) == BEHAVIOUR_COLUMNS + FLOW_COLUMNS
    assert not features.drop(columns=["holding_hours"]).isna().any().any()


def test_forwarding_chain_is_one_network_with_tier_roles():
    w = World()
    truth = chain(w)
    model = fit(w)
    acc = model.accounts_
    for cid, role in truth.items():
        assert acc.loc[cid, "role"] == role, cid
    flagged = acc[acc["role"] != "normal"]
    assert set(flagged.index) == set(truth)
    assert flagged["network_id"].nunique() == 1 and (flagged["network_id"] >= 0).all()
    assert (acc.loc[acc["role"] == "normal", "network_id"] == -1).all()
    nets = model.networks_
    assert len(nets) == 1
    net = nets.iloc[0]
    assert (net["size"], net["n_low_level"], net["n_intermediary"], net["n_upper_tier"]) == (5, 3, 1, 1)
    assert net["members"].split() == sorted(truth)
    assert net["total_flow"] == pytest.approx(2 * (38_000 + 40_500 + 35_500))
    assert (acc.loc[list(truth), "chain_length"] == 2).all()
    position = {"low_level": "source", "intermediary": "middle", "upper_tier": "sink"}
    for cid, role in truth.items():
        assert acc.loc[cid, "flow_position"] == position[role], cid
    assert (acc.loc[acc["role"] == "normal", "flow_position"] == "none").all()
    # the 3 feeder -> sink paths run through the relay; networkx normalises directed betweenness by (n-1)(n-2)
    assert acc.loc["relay", "betweenness"] == pytest.approx(3 / ((5 - 1) * (5 - 2)))
    assert (acc.loc[[k for k in truth if k != "relay"], "betweenness"] == 0).all()
    assert set(model.forwarding_graph_.edges) >= {("f0", "relay"), ("relay", "sink")}
    assert model.predict().equals(acc["role"])


def test_two_separate_chains_are_two_networks():
    w = World()
    a, b = chain(w, "a_"), chain(w, "b_")
    acc = fit(w).accounts_
    ids_a, ids_b = set(acc.loc[list(a), "network_id"]), set(acc.loc[list(b), "network_id"])
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b
    assert -1 not in ids_a | ids_b


def test_landlord_with_identical_rents_is_not_flagged():
    w = World()
    people = landlord(w)
    model = fit(w)
    acc = model.accounts_
    assert (acc.loc[people, "role"] == "normal").all()
    assert (acc.loc[people, "network_id"] == -1).all()
    assert model.networks_.empty


@pytest.mark.parametrize("with_customers", [False, True])
def test_employer_paying_employees_is_not_flagged(with_customers):
    w = World()
    people = employer(w, with_customers=with_customers)
    model = fit(w)
    acc = model.accounts_
    assert (acc.loc[people, "role"] == "normal").all(), acc.loc[people, "role"].value_counts().to_dict()
    assert model.networks_.empty


def test_chain_still_found_next_to_landlord_and_employer():
    w = World()
    truth = chain(w)
    legit = landlord(w) + employer(w)
    acc = fit(w).accounts_
    assert acc.loc[list(truth), "role"].to_dict() == truth
    assert (acc.loc[legit, "role"] == "normal").all()


def test_sink_with_a_small_share_from_the_relay_is_context():
    # the relay also pays rent to a landlord for whom that rent is a small part of a large income
    w = World()
    truth = chain(w)
    w.account("rent_lord", n_deposits=150, money_in=200_000.0, money_out=90_000.0, retention=0.55, pass_through=0.0)
    w.link("relay", "rent_lord", 6_000.0)
    w.rows["relay"]["money_out"] += 6_000.0
    acc = fit(w).accounts_
    assert acc.loc["rent_lord", "role"] == "normal"
    assert acc.loc["rent_lord", "network_id"] == -1
    assert acc.loc[list(truth), "role"].to_dict() == truth


def test_chain_ending_in_a_context_sink_flags_no_upper_tier():
    # the relay's only onward destination gets 3% of its income from it: not an upper tier
    w = World()
    truth = chain(w, sink_other_income=3_500_000.0)
    acc = fit(w).accounts_
    assert acc.loc["sink", "role"] == "normal"
    assert acc.loc["sink", "network_id"] == -1
    assert not (acc["role"] == "upper_tier").any()
    assert set(truth) - {"sink"} >= set(acc.index[acc["role"] != "normal"])


def test_sink_share_threshold_is_a_parameter():
    w = World()
    chain(w, sink_other_income=3_500_000.0)  # the sink gets ~3% of its income from the relay
    features, links = w.frames()
    assert RoleModel(min_sink_share=0.2).fit(features, links).accounts_.loc["sink", "role"] == "normal"
    assert RoleModel(min_sink_share=0.01).fit(features, links).accounts_.loc["sink", "role"] == "upper_tier"


def test_seed_account_direct_links_form_a_network():
    w = World()
    w.account("known", money_in=30_000.0, money_out=28_000.0, pass_through=0.15, holding_hours=90.0)
    w.account("payer", money_in=40_000.0, money_out=39_000.0, pass_through=0.1)
    w.account("payee", money_in=30_000.0, money_out=5_000.0, retention=0.8)
    w.link("payer", "known", 12_000.0)
    w.link("known", "payee", 20_000.0)
    features, links = w.frames()
    plain = RoleModel().fit(features, links).accounts_
    assert (plain.loc[["known", "payer", "payee"], "role"] == "normal").all()
    seeded = RoleModel(seeds=("known",)).fit(features, links).accounts_
    assert seeded.loc["known", "role"] != "normal"
    net = seeded.loc["known", "network_id"]
    assert net >= 0
    assert seeded.loc["payer", "network_id"] == net and seeded.loc["payee", "network_id"] == net
    assert seeded.loc["payee", "role"] == "upper_tier"
    assert seeded.loc["known", "score"] >= 0.5
    others = seeded.drop(index=["known", "payer", "payee"])
    assert (others["role"] == "normal").all()


def test_scores_and_reasons_separate_flagged_from_normal():
    w = World()
    chain(w)
    chain(w, "b_")
    landlord(w)
    employer(w)
    acc = fit(w).accounts_
    flagged = acc["role"] != "normal"
    assert flagged.sum() == 10
    assert set(acc["role"]) <= set(ROLES)
    assert (acc.loc[flagged, "score"] >= 0.5).all()
    assert (acc.loc[~flagged, "score"] < 0.5).all()
    assert (acc["score"] >= 0).all() and (acc["score"] <= 1).all()
    assert (acc.loc[flagged, "reasons"].str.len() > 0).all()
    assert acc.loc["relay", "reasons"].count("f") >= 1 and "sink" in acc.loc["relay", "reasons"]
    assert "relay" in acc.loc["sink", "reasons"]
    assert (acc.loc[~flagged, "network_id"] == -1).all()


def test_supervised_fit_sets_classifier_and_returns_self():
    w = World()
    truth = chain(w)
    chain(w, "b_")
    features, links = w.frames()
    labels = pd.Series({**truth, **{f"bg{i:03d}": "normal" for i in range(40)}})
    model = RoleModel(n_estimators=50)
    assert model.fit(features, links, y=labels) is model
    assert hasattr(model, "classifier_")
    assert set(model.classifier_.classes_) == set(ROLES)
    acc = model.accounts_
    assert set(acc["role"]) <= set(ROLES)
    assert acc.loc[list(truth), "role"].to_dict() == truth  # training accounts are fitted
    assert (acc.loc[acc["role"] == "normal", "network_id"] == -1).all()
    assert ((acc["score"] >= 0) & (acc["score"] <= 1)).all()


def test_unsupervised_fit_has_no_classifier():
    w = World(n_background=20)
    chain(w)
    model = fit(w)
    assert not hasattr(model, "classifier_")
    assert hasattr(model, "isolation_forest_")
    assert model.accounts_["anomaly"].between(0, 1).all()
