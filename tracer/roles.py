"""Networks and tier labels: who is a street handler, an intermediary, the local kingpin, or normal.

The structure an organised network leaves is a *forwarding chain*: money arrives in an account and
is sent on soon after, over confident links, towards an account that keeps it.

1. A link is a *forwarding edge* when its source passes on at least ``min_pass_through`` of all
   the money it receives within the holding window (feature ``pass_through``).
2. Networks are weakly connected groups of forwarding edges that contain a chain of at least two
   hops (source -> pass-through -> sink). Rent and payroll are one hop: the landlord and the
   employee do not forward the money on, so they never form such a chain.
3. Position gives the role: sources are ``low_level``, accounts that both receive and forward are
   ``intermediary``, sinks are ``upper_tier``. A sink whose inflow mostly comes from outside the
   network (a low-level's landlord, say) is context, not a member.
4. The suspicion score blends this structure with an IsolationForest over behaviour features, so
   accounts outside networks are still ranked. Members score >= 0.5, everyone else < 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest, RandomForestClassifier

from tracer.graph import longest_chain_through

ROLES = ("low_level", "intermediary", "upper_tier", "normal")
ANOMALY_COLUMNS = [
    "money_in", "money_out", "retention", "large_deposit_gap_cv", "large_deposit_amount_cv",
    "round_deposit_share", "small_spends_per_month", "distinct_withdrawal_share",
    "link_in_share", "forward_share", "pass_through", "n_senders", "n_receivers",
]
_LOG_COLUMNS = {"money_in", "money_out", "small_spends_per_month", "n_senders", "n_receivers"}


def _design_matrix(features: pd.DataFrame) -> np.ndarray:
    X = features[ANOMALY_COLUMNS].astype(np.float64).copy()
    for col in _LOG_COLUMNS:
        X[col] = np.log1p(X[col].clip(lower=0))
    return X.fillna(X.median()).fillna(0.0).to_numpy()


@dataclass
class _Structure:
    forwarding: nx.DiGraph
    membership: dict[str, int]
    roles: dict[str, str]


class RoleModel:
    """Label accounts; scikit-learn conventions (parameters here, ``fit`` returns self).

    ``fit(features, links, y=None)``: ``features`` from :func:`tracer.features.account_features`,
    ``links`` the confident links. With ``y`` (a role per account for a labelled subset, index
    ``client_id``) a supervised classifier is fitted on the same features plus structure.
    Learned attributes: ``accounts_``, ``networks_``, ``forwarding_graph_``, ``isolation_forest_``
    and, when supervised, ``classifier_``.
    """

    def __init__(self, min_pass_through: float = 0.5, min_relay_link_share: float = 0.5, min_relay_balance: float = 0.6,
                 min_feeder_pass_through: float = 0.2, min_feeder_share: float = 0.3, max_feeder_batch_share: float = 0.5,
                 min_sink_share: float = 0.2,
                 seeds: tuple[str, ...] = (),
                 n_estimators: int = 200, random_state: int = 0):
        self.min_pass_through = min_pass_through
        self.min_relay_link_share = min_relay_link_share
        self.min_relay_balance = min_relay_balance
        self.min_feeder_pass_through = min_feeder_pass_through
        self.min_feeder_share = min_feeder_share
        self.max_feeder_batch_share = max_feeder_batch_share
        self.min_sink_share = min_sink_share
        self.seeds = seeds
        self.n_estimators = n_estimators
        self.random_state = random_state

    def fit(self, features: pd.DataFrame, links: pd.DataFrame, y: pd.Series | None = None) -> "RoleModel":
        structure = self._structure(features, links)
        X = _design_matrix(features)
        self.isolation_forest_ = IsolationForest(n_estimators=self.n_estimators, random_state=self.random_state).fit(X)
        raw = -self.isolation_forest_.score_samples(X)
        anomaly = pd.Series(raw, index=features.index).rank(pct=True)
        accounts = self._label(features, links, structure, anomaly)
        if y is not None:
            accounts = self._supervised(features, accounts, y)
        self.forwarding_graph_ = structure.forwarding
        self.accounts_ = accounts
        self.networks_ = _network_table(accounts, links)
        return self

    # -- structure ----------------------------------------------------------------------------

    def _structure(self, features: pd.DataFrame, links: pd.DataFrame) -> _Structure:
        """Forwarding edges around relays (receive over links, pass most of it on), then networks."""
        pt = features["pass_through"]
        relay = ((pt >= self.min_pass_through) & (features["link_in_share"] >= self.min_relay_link_share)
                 & (features["relay_balance"] >= self.min_relay_balance))
        relays = set(features.index[relay])
        link_out = features["link_out"].reindex(links["source"]).to_numpy()
        share_of_source = np.divide(links["total_amount"].to_numpy(), link_out, out=np.zeros(len(links)), where=link_out > 0)
        feeder = ((pt.reindex(links["source"]).to_numpy() >= self.min_feeder_pass_through) & (share_of_source >= self.min_feeder_share)
                  & (features["batch_share"].reindex(links["source"]).to_numpy() < self.max_feeder_batch_share))
        into_relay = links["target"].isin(relays).to_numpy() & feeder
        fwd_links = links[into_relay | links["source"].isin(relays).to_numpy()]
        seeds = {str(s) for s in self.seeds}
        if seeds:  # an analyst's known accounts: their own flows count as forwarding too
            seeded = links[links["source"].isin(seeds) | links["target"].isin(seeds)]
            fwd_links = pd.concat([fwd_links, seeded]).drop_duplicates(["source", "target"])
        g = nx.DiGraph()
        g.add_weighted_edges_from(fwd_links[["source", "target", "total_amount"]].itertuples(index=False))
        money_in = features["money_in"]
        membership: dict[str, int] = {}
        roles: dict[str, str] = {}
        n_networks = 0
        for comp in sorted(nx.weakly_connected_components(g), key=lambda c: (-len(c), min(c))):
            kept = self._prune_context_sinks(g.subgraph(comp), money_in, relays)
            sub = g.subgraph(kept)
            has_chain = any(sub.in_degree(v) > 0 and sub.out_degree(v) > 0 for v in sub if v in relays)
            if len(kept) < 2 or not (has_chain or seeds & kept):
                continue
            net_id, n_networks = n_networks, n_networks + 1
            for v in kept:
                membership[v] = net_id
                ins, outs = sub.in_degree(v), sub.out_degree(v)
                if v in relays and ins and outs:
                    roles[v] = "intermediary"
                elif outs and not ins or (outs and v not in relays):
                    roles[v] = "low_level"
                else:
                    roles[v] = "upper_tier"
        return _Structure(g, membership, roles)

    def _prune_context_sinks(self, sub: nx.DiGraph, money_in: pd.Series, relays: set[str]) -> set[str]:
        """Drop sinks that got only a small share of their money from this group (context)."""
        kept = set(sub.nodes)
        changed = True
        while changed:
            changed = False
            for v in list(kept):
                if v in relays or sub.out_degree(v) > 0:
                    continue
                inflow = sum(sub[u][v]["weight"] for u in sub.predecessors(v) if u in kept)
                total = float(money_in.get(v, 0.0)) or 1.0
                if inflow / total < self.min_sink_share:
                    kept.discard(v)
                    changed = True
        return kept

    # -- labels, scores, reasons ---------------------------------------------------------------

    def _label(self, features: pd.DataFrame, links: pd.DataFrame, s: _Structure, anomaly: pd.Series) -> pd.DataFrame:
        idx = features.index
        role = pd.Series(idx.map(s.roles), index=idx, dtype=object).fillna("normal")
        network = pd.Series(idx.map(s.membership), index=idx).fillna(-1).astype(np.int64)
        member = (role != "normal").to_numpy()
        pt = features["pass_through"].to_numpy()
        members = s.forwarding.subgraph(list(s.membership))
        chain = pd.Series(longest_chain_through(members), dtype=float).reindex(idx).fillna(0).to_numpy()
        link_conf = _confidence_by_account(links, idx)
        structural = np.clip(0.35 * np.minimum(chain / 3.0, 1.0) + 0.35 * link_conf + 0.3 * np.where(role.to_numpy() == "upper_tier", features["retention"].clip(0, 1), pt), 0, 1)
        a = anomaly.to_numpy()
        score = np.where(member, 0.5 + 0.5 * (0.7 * structural + 0.3 * a), 0.49 * (0.5 * np.clip(pt, 0, 1) + 0.5 * a) ** 2)
        out = pd.DataFrame({"role": role, "score": np.round(score, 4), "network_id": network}, index=idx)
        out["reasons"] = _reasons(features, links, out, s)
        out["chain_length"] = chain.astype(int)
        out["flow_position"] = _flow_position(members, idx)
        out["betweenness"] = pd.Series(nx.betweenness_centrality(members, weight=None), dtype=float).reindex(idx).fillna(0).round(4).to_numpy()
        out["anomaly"] = np.round(a, 4)
        return out

    def _supervised(self, features: pd.DataFrame, accounts: pd.DataFrame, y: pd.Series) -> pd.DataFrame:
        X = np.column_stack([_design_matrix(features), accounts["chain_length"], accounts["network_id"] >= 0])
        y = y.reindex(features.index)
        known = y.notna().to_numpy()
        self.classifier_ = RandomForestClassifier(n_estimators=self.n_estimators, random_state=self.random_state, class_weight="balanced")
        self.classifier_.fit(X[known], y[known].astype(str))
        proba = self.classifier_.predict_proba(X)
        classes = list(self.classifier_.classes_)
        out = accounts.copy()
        out["role"] = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
        p_normal = proba[:, classes.index("normal")] if "normal" in classes else np.zeros(len(out))
        out["score"] = np.round(1 - p_normal, 4)
        out.loc[out["role"] == "normal", "network_id"] = -1
        return out

    def predict(self) -> pd.Series:
        """Roles of the fitted accounts (the model is transductive: it labels the graph it saw)."""
        return self.accounts_["role"]


def _flow_position(members: nx.DiGraph, idx: pd.Index) -> np.ndarray:
    """Depth in the flow hierarchy of a network: source (only sends), middle, sink (only receives).

    Betweenness and position are computed on the suspected networks only: exact betweenness over
    a whole population is far too slow and says little about accounts outside any chain.
    """
    position = {v: ("middle" if members.in_degree(v) and members.out_degree(v) else "source" if members.out_degree(v) else "sink")
                for v in members}
    return pd.Series(idx.map(position), index=idx, dtype=object).fillna("none").to_numpy()


def _confidence_by_account(links: pd.DataFrame, idx: pd.Index) -> np.ndarray:
    """1 - the best (lowest) q-value among an account's links; 0 without links."""
    q = pd.concat([links[["source", "q_value"]].rename(columns={"source": "a"}), links[["target", "q_value"]].rename(columns={"target": "a"})])
    return (1 - q.groupby("a")["q_value"].min()).reindex(idx).fillna(0).to_numpy()


def _money(x: float) -> str:
    return f"${x:,.0f}"


def _reasons(features: pd.DataFrame, links: pd.DataFrame, accounts: pd.DataFrame, s: _Structure) -> pd.Series:
    """Short readable evidence per flagged account; normal accounts get their strongest signal."""
    reasons = pd.Series("", index=features.index, dtype=object)
    g = s.forwarding
    for v, role in s.roles.items():
        f = features.loc[v]
        parts: list[str] = []
        outs = list(g.successors(v))
        ins = list(g.predecessors(v))
        if role in ("low_level", "intermediary"):
            held = f["holding_hours"]
            held_txt = f" within {held:.0f} h (median)" if pd.notna(held) else ""
            parts.append(f"forwards {f['pass_through']:.0%} of the money it receives{held_txt} to {len(outs)} account(s): {', '.join(outs[:3])}")
        if role == "low_level" and f["large_deposits"] >= 4:
            parts.append(f"{int(f['large_deposits'])} large deposits every {f['large_deposit_gap_days']:.1f} days (gap CV {f['large_deposit_gap_cv']:.2f}, amount CV {f['large_deposit_amount_cv']:.2f})")
        if role in ("intermediary", "upper_tier"):
            inflow = sum(g[u][v]["weight"] for u in ins)
            parts.append(f"receives {_money(inflow)} from {len(ins)} forwarding account(s): {', '.join(ins[:3])}")
        if role == "upper_tier":
            parts.append(f"end of a forwarding chain: keeps {max(f['retention'], 0):.0%} of its income")
        if f["small_spends_per_month"] < 2:
            parts.append(f"little everyday spending ({f['small_spends_per_month']:.1f} small payments a month)")
        reasons[v] = "; ".join(parts)
    normal = accounts["role"].to_numpy() == "normal"
    pt = features["pass_through"]
    hint = np.where(pt >= 0.5, "forwards " + (pt * 100).round().astype(int).astype(str) + "% of its income but is not part of a forwarding chain", "")
    reasons[normal] = np.where(reasons[normal] == "", hint[normal], reasons[normal])
    return reasons


def _network_table(accounts: pd.DataFrame, links: pd.DataFrame) -> pd.DataFrame:
    members = accounts[accounts["network_id"] >= 0]
    if members.empty:
        return pd.DataFrame(columns=["network_id", "size", "n_low_level", "n_intermediary", "n_upper_tier", "total_flow", "first_time", "last_time", "score", "members"])
    net_of = members["network_id"]
    inner = links[links["source"].map(net_of).eq(links["target"].map(net_of)) & links["source"].isin(net_of.index)]
    inner = inner.assign(network_id=inner["source"].map(net_of))
    flow = inner.groupby("network_id").agg(total_flow=("total_amount", "sum"), first_time=("first_time", "min"), last_time=("last_time", "max"))
    g = members.groupby("network_id")
    table = pd.DataFrame({
        "size": g.size(),
        "n_low_level": g["role"].apply(lambda r: int((r == "low_level").sum())),
        "n_intermediary": g["role"].apply(lambda r: int((r == "intermediary").sum())),
        "n_upper_tier": g["role"].apply(lambda r: int((r == "upper_tier").sum())),
        "score": g["score"].mean().round(4),
        "members": g.apply(lambda m: " ".join(sorted(m.index.astype(str)))),
    }).join(flow)
    table["total_flow"] = table["total_flow"].fillna(0).round(2)
    return table.reset_index()[["network_id", "size", "n_low_level", "n_intermediary", "n_upper_tier", "total_flow", "first_time", "last_time", "score", "members"]]
