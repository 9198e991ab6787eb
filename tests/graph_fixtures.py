"""Synthetic graphs with the attributes of docs/architecture.md ("Graph attributes"), for map/export tests."""
from __future__ import annotations

import random

import networkx as nx

HOSTILE_IDS = [
    "<script>alert(1)</script>",
    "\"quotes'",
    "</script><img src=x onerror=alert(2)>",
    "=HYPERLINK(\"http://evil.example\")",
    "acc href=javascript:alert(3)",
]


def _edge(graph, src, dst, rng, amount=None):
    n = rng.randint(1, 12)
    total = round(amount if amount is not None else rng.uniform(50, 5000) * n, 2)
    day = rng.randint(1, 27)
    graph.add_edge(
        src, dst,
        n_transfers=n,
        total_amount=total,
        first_time=f"2024-03-{day:02d}T08:15:00",
        last_time=f"2024-03-{day + 1:02d}T17:45:00",
        median_lag_hours=round(rng.uniform(0.1, 48), 3),
        score=round(rng.uniform(0.5, 1.0), 4),
        q_value=round(rng.uniform(1e-6, 0.05), 8),
    )


def _node(graph, node, role, network, rng, reasons=None):
    graph.add_node(
        node,
        role=role,
        score=round(rng.uniform(0.6, 1.0) if role != "normal" else rng.uniform(0.0, 0.3), 4),
        network_id=network,
        reasons=reasons if reasons is not None else (
            "" if role == "normal" else f"{role}: fan-in from {rng.randint(2, 9)} accounts"),
        money_in=0.0,
        money_out=0.0,
    )


def _fill_money(graph):
    for node in graph.nodes:
        graph.nodes[node]["money_in"] = float(round(
            sum(a["total_amount"] for _, _, a in graph.in_edges(node, data=True)), 2))
        graph.nodes[node]["money_out"] = float(round(
            sum(a["total_amount"] for _, _, a in graph.out_edges(node, data=True)), 2))


def network_graph(n_networks: int = 2, low_per_net: int = 6, context: int = 8, hostile: bool = True,
                  seed: int = 1) -> nx.DiGraph:
    """Small realistic map: per network 1 upper tier, 2 intermediaries, ``low_per_net`` low-level
    accounts, normal customers paying the low level and a few normal recipients of the upper tier."""
    rng = random.Random(seed)
    g = nx.DiGraph()
    for k in range(n_networks):
        boss = f"ACC-{k}00"
        mids = [f"ACC-{k}1{i}" for i in range(2)]
        lows = [f"ACC-{k}2{i:02d}" for i in range(low_per_net)]
        _node(g, boss, "upper_tier", k, rng)
        for m in mids:
            _node(g, m, "intermediary", k, rng)
        for i, low in enumerate(lows):
            _node(g, low, "low_level", k, rng)
        for i, low in enumerate(lows):
            _edge(g, low, mids[i % 2], rng)
        for m in mids:
            _edge(g, m, boss, rng)
        for c in range(context):
            cust = f"CUST-{k}{c:02d}"
            _node(g, cust, "normal", -1, rng)
            _edge(g, cust, lows[c % len(lows)], rng)
        for r in range(2):
            rec = f"SHOP-{k}{r}"
            _node(g, rec, "normal", -1, rng)
            _edge(g, boss, rec, rng)
    if hostile:
        lows = [n for n, a in g.nodes(data=True) if a["role"] == "low_level"]
        for i, hid in enumerate(HOSTILE_IDS):
            _node(g, hid, "low_level" if i % 2 else "normal", 0 if i % 2 else -1, rng,
                  reasons="<b>bold</b> </script> & 'reason' \" href=x")
            _edge(g, hid, lows[i % len(lows)], rng)
        g.add_node("quiet", role="intermediary", score=0.7, network_id=0, reasons=None)
    _fill_money(g)
    if hostile:  # missing / non-finite values must not break the map
        g.nodes["quiet"].update(money_in=None, money_out=float("nan"))
    return g


def large_graph(n_nodes: int = 1500, seed: int = 3) -> nx.DiGraph:
    """More than 1,000 nodes: many small networks plus context accounts."""
    rng = random.Random(seed)
    g = nx.DiGraph()
    net = 0
    while g.number_of_nodes() < n_nodes:
        boss = f"U{net}"
        _node(g, boss, "upper_tier", net, rng)
        mids = [f"I{net}-{i}" for i in range(rng.randint(1, 4))]
        for m in mids:
            _node(g, m, "intermediary", net, rng)
            _edge(g, m, boss, rng)
        for i in range(rng.randint(5, 25)):
            low = f"L{net}-{i}"
            _node(g, low, "low_level", net, rng)
            _edge(g, low, rng.choice(mids), rng)
            for c in range(rng.randint(0, 3)):
                cust = f"C{net}-{i}-{c}"
                _node(g, cust, "normal", -1, rng)
                _edge(g, cust, low, rng)
        net += 1
    _fill_money(g)
    return g
