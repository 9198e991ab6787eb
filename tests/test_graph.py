"""tracer.graph: sparse PageRank / HITS against networkx, build_graph attributes, chain depth."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.graph import build_graph, flow_matrix, hits, longest_chain_through, pagerank


def _matrix(n: int, edges: dict[tuple[int, int], float]) -> sp.csr_matrix:
    if not edges:
        return sp.csr_matrix((n, n))
    (src, dst), w = zip(*edges.keys()), list(edges.values())
    return sp.csr_matrix((np.array(w, dtype=float), (np.array(src), np.array(dst))), shape=(n, n))


def _digraph(n: int, edges: dict[tuple[int, int], float]) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_weighted_edges_from((u, v, w) for (u, v), w in edges.items())
    return g


@st.composite
def weighted_digraphs(draw, min_nodes: int = 1, max_nodes: int = 14):
    n = draw(st.integers(min_nodes, max_nodes))
    pairs = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))
    weights = st.floats(0.01, 1e5, allow_nan=False, allow_infinity=False)
    edges = draw(st.dictionaries(pairs, weights, max_size=3 * n))
    # always keep at least one dangling node (no outgoing money) when the graph has more than one node
    if n > 1:
        dangling = draw(st.integers(0, n - 1))
        edges = {(u, v): w for (u, v), w in edges.items() if u != dangling}
    return n, edges


# --- pagerank ------------------------------------------------------------------------------------

@settings(max_examples=120, deadline=None)
@given(weighted_digraphs())
def test_pagerank_matches_networkx(graph):
    n, edges = graph
    got = pagerank(_matrix(n, edges))
    want = nx.pagerank(_digraph(n, edges), weight="weight", tol=1e-12, max_iter=2000)
    assert got.shape == (n,)
    np.testing.assert_allclose(got, [want[i] for i in range(n)], atol=1e-8, rtol=0)
    assert got.sum() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("alpha", [0.5, 0.85, 0.95])
def test_pagerank_alpha_matches_networkx_on_a_larger_random_graph(alpha):
    rng = np.random.default_rng(7)
    n = 300
    edges = {}
    for _ in range(900):
        u, v = (int(x) for x in rng.integers(0, n, 2))
        if u < 250:  # accounts 250.. are dangling
            edges[(u, v)] = float(rng.lognormal(6, 1.5))
    got = pagerank(_matrix(n, edges), alpha=alpha, max_iter=2000)  # alpha 0.95 needs ~540 iterations for 1e-12
    want = nx.pagerank(_digraph(n, edges), alpha=alpha, weight="weight", tol=1e-12, max_iter=2000)
    np.testing.assert_allclose(got, [want[i] for i in range(n)], atol=1e-8, rtol=0)


def test_pagerank_empty_and_edgeless():
    assert pagerank(sp.csr_matrix((0, 0))).shape == (0,)
    np.testing.assert_allclose(pagerank(sp.csr_matrix((4, 4))), np.full(4, 0.25))


def test_pagerank_weights_matter():
    # a sends 9x more money to b than to c: b must outrank c
    r = pagerank(_matrix(3, {(0, 1): 900.0, (0, 2): 100.0}))
    assert r[1] > r[2]


# --- hits ----------------------------------------------------------------------------------------

def _strongly_connected(rng: np.random.Generator, n: int, p: float) -> dict[tuple[int, int], float]:
    perm = rng.permutation(n)
    edges = {(int(perm[i]), int(perm[(i + 1) % n])): float(rng.uniform(1, 100)) for i in range(n)}  # a Hamiltonian cycle
    for u in range(n):
        for v in range(n):
            if u != v and rng.random() < p:
                edges[(u, v)] = float(rng.uniform(1, 100))
    return edges


@pytest.mark.parametrize("seed", range(8))
def test_hits_matches_networkx_on_strongly_connected_graphs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 40))
    edges = _strongly_connected(rng, n, p=float(rng.uniform(0.1, 0.4)))
    g = _digraph(n, edges)
    assert nx.is_strongly_connected(g)
    hub, authority = hits(_matrix(n, edges))
    want_hub, want_auth = nx.hits(g, max_iter=1000, tol=1e-12, normalized=True)
    want_hub = np.array([want_hub[i] for i in range(n)])
    want_auth = np.array([want_auth[i] for i in range(n)])
    assert hub.sum() == pytest.approx(1.0) and authority.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(hub, want_hub / want_hub.sum(), atol=1e-6)
    np.testing.assert_allclose(authority, want_auth / want_auth.sum(), atol=1e-6)


def test_hits_without_edges_is_zero():
    hub, authority = hits(sp.csr_matrix((3, 3)))
    assert hub.tolist() == [0, 0, 0] and authority.tolist() == [0, 0, 0]


def test_hits_star_hub_and_authority():
    # 0 pays 1, 2, 3; nobody pays 0: 0 is the only hub, 0 has no authority
    hub, authority = hits(_matrix(4, {(0, 1): 1.0, (0, 2): 1.0, (0, 3): 1.0}))
    assert hub[0] == pytest.approx(1.0)
    assert authority[0] == pytest.approx(0.0)
    np.testing.assert_allclose(authority[1:], [1 / 3] * 3)


# --- flow matrix and build_graph -------------------------------------------------------------------

def test_flow_matrix_follows_index_order():
    links = pd.DataFrame({"source": ["b", "a"], "target": ["c", "b"], "total_amount": [5.0, 7.5]})
    M = flow_matrix(links, pd.Index(["c", "b", "a"]))
    assert M.shape == (3, 3)
    dense = M.toarray()
    assert dense[1, 0] == 5.0 and dense[2, 1] == 7.5 and dense.sum() == 12.5


def test_build_graph_attributes_are_plain_python():
    links = pd.DataFrame({
        "source": ["1"], "target": ["2"], "n_transfers": np.array([3], dtype=np.int64), "total_amount": [120.5],
        "first_time": [pd.Timestamp("2024-01-02 03:04:05")], "last_time": [pd.Timestamp("2024-02-01")],
        "median_lag_hours": [np.nan], "score": [np.float64(4.5)], "q_value": [0.001],
    })
    accounts = pd.DataFrame({"role": ["low_level", "upper_tier", "normal"], "score": [0.9, 0.8, 0.1],
                             "network_id": np.array([0, 0, -1], dtype=np.int64)}, index=["1", "2", "3"])
    g = build_graph(links, accounts)
    assert set(g.nodes) == {"1", "2", "3"} and list(g.edges) == [("1", "2")]
    e = g.edges["1", "2"]
    assert e["first_time"] == "2024-01-02T03:04:05"
    assert type(e["n_transfers"]) is int and e["n_transfers"] == 3
    assert type(e["score"]) is float
    assert e["median_lag_hours"] is None
    assert "source" not in e and "target" not in e
    assert g.nodes["3"] == {"role": "normal", "score": 0.1, "network_id": -1}
    assert type(g.nodes["1"]["network_id"]) is int


# --- longest_chain_through -----------------------------------------------------------------------

def test_longest_chain_on_a_simple_chain():
    g = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "d")])
    assert longest_chain_through(g) == {"a": 3, "b": 3, "c": 3, "d": 3}


def test_longest_chain_with_a_side_branch():
    g = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "d"), ("e", "c"), ("x", "y")])
    assert longest_chain_through(g) == {"a": 3, "b": 3, "c": 3, "d": 3, "e": 2, "x": 1, "y": 1}


def test_longest_chain_condenses_cycles():
    # b <-> c is one strongly connected component: a -> {b, c} -> d is two hops
    g = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "b"), ("c", "d")])
    assert longest_chain_through(g) == {"a": 2, "b": 2, "c": 2, "d": 2}
    cycle = nx.DiGraph([("p", "q"), ("q", "r"), ("r", "p")])
    assert longest_chain_through(cycle) == {"p": 0, "q": 0, "r": 0}


def test_longest_chain_isolated_and_empty():
    g = nx.DiGraph()
    assert longest_chain_through(g) == {}
    g.add_node("lonely")
    assert longest_chain_through(g) == {"lonely": 0}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)).filter(lambda e: e[0] < e[1]), max_size=20))
def test_longest_chain_on_dags_equals_brute_force(edge_list):
    g = nx.DiGraph(edge_list)
    got = longest_chain_through(g)
    for v in g.nodes:
        best = 0
        for s in g.nodes:
            for t in g.nodes:
                for path in nx.all_simple_paths(g, s, t):
                    if v in path:
                        best = max(best, len(path) - 1)
        assert got[v] == best, v
