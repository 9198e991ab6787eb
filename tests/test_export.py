"""tracer.export: every format read back with networkx / pandas and compared with the original graph."""
from __future__ import annotations

import csv
import json
import math

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from graph_fixtures import HOSTILE_IDS, network_graph
from tracer.export import EDGE_COLUMNS, FORMATS, NODE_COLUMNS, export_graph, neutralise_cell

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture(scope="module")
def graph():
    g = network_graph()
    # extra attributes: negative numbers, a string that starts with "-", a bool, numpy scalars
    first = next(iter(g.nodes))
    g.nodes[first]["balance"] = -1234.5
    g.nodes[first]["note"] = "-starts with minus"
    g.nodes[first]["flag"] = True
    g.nodes["ACC-010"]["score"] = np.float64(0.875)
    g.nodes["ACC-010"]["network_id"] = np.int64(0)
    g.nodes["ACC-011"]["note"] = "@cmd|' /C calc'!A0"
    g.nodes["ACC-011"]["balance"] = 10.0
    g.nodes["ACC-011"]["flag"] = False
    u, v = next(iter(g.edges))
    g.edges[u, v]["net_flow"] = -99.25
    g.edges[u, v]["comment"] = "+SUM(1,2)"
    g.graph["name"] = "test network"
    return g


@pytest.fixture(scope="module")
def written(graph, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return export_graph(graph, out)


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _same(expected, got, where):
    expected = _plain(expected)
    if isinstance(expected, float) and math.isnan(expected):
        assert isinstance(got, float) and math.isnan(got), where
        return
    assert got == expected, where
    assert type(got) is type(expected), (where, type(got), type(expected))


def _expected_attrs(data, drop_none=True):
    return {k: v for k, v in data.items() if not (drop_none and v is None)}


def _compare(original: nx.DiGraph, back: nx.DiGraph, *, ignore_node=(), ignore_edge=(), drop_none=True):
    assert set(back.nodes) == {str(n) for n in original.nodes}
    assert set(back.edges) == {(str(u), str(v)) for u, v in original.edges}
    assert back.is_directed()
    for node, data in original.nodes(data=True):
        got = {k: v for k, v in back.nodes[str(node)].items() if k not in ignore_node}
        exp = _expected_attrs(data, drop_none)
        assert set(got) == set(exp), node
        for key, value in exp.items():
            _same(value, got[key], (node, key))
    for u, v, data in original.edges(data=True):
        got = {k: x for k, x in back.edges[str(u), str(v)].items() if k not in ignore_edge}
        exp = _expected_attrs(data, drop_none)
        assert set(got) == set(exp), (u, v)
        for key, value in exp.items():
            _same(value, got[key], (u, v, key))


def test_returns_paths_for_every_format(written):
    assert set(written) == set(FORMATS)
    names = {fmt: [p.name for p in paths] for fmt, paths in written.items()}
    assert names == {"graphml": ["network.graphml"], "gexf": ["network.gexf"], "json": ["network.json"],
                     "csv": ["network_nodes.csv", "network_edges.csv"]}
    directory = written["json"][0].parent
    assert sorted(p.name for p in directory.iterdir()) == sorted(sum(names.values(), []))  # no temp files


def test_graphml_round_trip(graph, written):
    back = nx.read_graphml(written["graphml"][0])
    _compare(graph, back)
    assert back.graph.get("name") == "test network"


def test_gexf_round_trip(graph, written):
    back = nx.read_gexf(written["gexf"][0])
    # the GEXF reader adds a node "label" (the id) and an edge "id"
    _compare(graph, back, ignore_node=("label",), ignore_edge=("id",))
    assert all(back.nodes[n]["label"] == n for n in back.nodes)


def test_json_round_trip(graph, written):
    data = json.loads(written["json"][0].read_text(encoding="utf-8"))
    assert "edges" in data and "links" not in data
    assert data["directed"] is True
    back = nx.node_link_graph(data, edges="edges")
    # JSON keeps None (null) and stores NaN as null
    nan_free = graph.copy()
    nan_free.nodes["quiet"]["money_out"] = None
    _compare(nan_free, back, drop_none=False)


def _unneutralise(value):
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(TRIGGERS):
        return value[1:]
    return value


def _csv_equal(expected, got, where):
    expected = _plain(expected)
    if expected is None or (isinstance(expected, float) and math.isnan(expected)) or expected == "":
        assert got is None or (isinstance(got, float) and math.isnan(got)) or got == "", where
        return
    if isinstance(expected, bool):
        assert got in (expected, str(expected)), where
        return
    if isinstance(got, str):
        got = _unneutralise(got)
    assert got == expected, where


def test_csv_round_trip(graph, written):
    nodes_path, edges_path = written["csv"]
    nodes = pd.read_csv(nodes_path, dtype={"id": str})
    edges = pd.read_csv(edges_path, dtype={"source": str, "target": str})
    node_attrs = set().union(*(d.keys() for _, d in graph.nodes(data=True)))
    edge_attrs = set().union(*(d.keys() for _, _, d in graph.edges(data=True)))
    assert list(nodes.columns[:7]) == ["id", *NODE_COLUMNS]
    assert set(nodes.columns) == {"id"} | node_attrs
    assert list(edges.columns[:9]) == ["source", "target", *EDGE_COLUMNS]
    assert set(edges.columns) == {"source", "target"} | edge_attrs
    assert len(nodes) == graph.number_of_nodes() and len(edges) == graph.number_of_edges()

    nodes["id"] = nodes["id"].map(_unneutralise)
    edges["source"] = edges["source"].map(_unneutralise)
    edges["target"] = edges["target"].map(_unneutralise)
    assert set(nodes["id"]) == set(graph.nodes)
    assert set(zip(edges["source"], edges["target"])) == set(graph.edges)
    by_id = nodes.set_index("id")
    for node, data in graph.nodes(data=True):
        row = by_id.loc[node]
        for col in node_attrs:
            _csv_equal(data.get(col), _plain(row[col]), (node, col))
    by_pair = edges.set_index(["source", "target"])
    for u, v, data in graph.edges(data=True):
        row = by_pair.loc[(u, v)]
        for col in edge_attrs:
            _csv_equal(data.get(col), _plain(row[col]), (u, v, col))
    # numeric columns stay numeric
    assert pd.api.types.is_integer_dtype(edges["n_transfers"])
    assert pd.api.types.is_integer_dtype(nodes["network_id"])
    assert pd.api.types.is_float_dtype(nodes["balance"]) and nodes["balance"].min() == -1234.5
    assert pd.api.types.is_float_dtype(edges["net_flow"]) and edges["net_flow"].min() == -99.25


def test_csv_formula_injection_neutralised(written):
    with open(written["csv"][0], newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    cells = [dict(zip(header, r)) for r in rows[1:]]
    ids = [c["id"] for c in cells]
    assert "'" + HOSTILE_IDS[3] in ids and HOSTILE_IDS[3] not in ids  # "=HYPERLINK(...)"
    notes = {c["note"] for c in cells if c["note"]}
    assert notes == {"'-starts with minus", "'@cmd|' /C calc'!A0"}
    assert "-1234.5" in {c["balance"] for c in cells}  # negative number, not prefixed
    with open(written["csv"][1], newline="", encoding="utf-8") as handle:
        erows = list(csv.DictReader(handle))
    assert {r["comment"] for r in erows if r["comment"]} == {"'+SUM(1,2)"}
    assert "-99.25" in {r["net_flow"] for r in erows}
    for row in cells + erows:
        for key, value in row.items():
            if value.startswith(TRIGGERS):
                float(value)  # only numbers may start with a trigger character


@pytest.mark.parametrize("value, expected", [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-x", "'-x"), ("@a", "'@a"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("safe", "safe"), ("", ""), (-5, -5), (-2.5, -2.5), (np.int64(-3), -3), (None, ""),
    (float("nan"), ""), (True, True),
])
def test_neutralise_cell(value, expected):
    assert neutralise_cell(value) == expected


def test_format_subset_and_name(graph, tmp_path):
    out = export_graph(graph, tmp_path / "new" / "dir", name="case-7", formats=("json", "csv"))
    assert set(out) == {"json", "csv"}
    assert sorted(p.name for p in (tmp_path / "new" / "dir").iterdir()) == \
        ["case-7.json", "case-7_edges.csv", "case-7_nodes.csv"]


def test_rejects_unknown_format_and_bad_name(graph, tmp_path):
    with pytest.raises(ValueError, match="unknown export format"):
        export_graph(graph, tmp_path, formats=("graphml", "xlsx"))
    with pytest.raises(ValueError, match="file stem"):
        export_graph(graph, tmp_path, name="../escape")
    assert list(tmp_path.iterdir()) == []  # validated before writing anything


def test_failed_write_keeps_previous_file(graph, tmp_path, monkeypatch):
    export_graph(graph, tmp_path, formats=("graphml",))
    before = (tmp_path / "network.graphml").read_bytes()

    def boom(g, path, **kwargs):
        with open(path, "w") as handle:
            handle.write("<partial")
        raise OSError("disk full")

    monkeypatch.setattr(nx, "write_graphml", boom)
    with pytest.raises(OSError):
        export_graph(graph, tmp_path, formats=("graphml",))
    assert (tmp_path / "network.graphml").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["network.graphml"]


def test_mixed_types_are_unified(tmp_path):
    g = nx.DiGraph()
    g.add_node("a", amount=1, tag=5)
    g.add_node("b", amount=2.5, tag="x")
    g.add_node("c", amount=None, tag=None)
    g.add_edge("a", "b", n=1)
    out = export_graph(g, tmp_path, formats=("graphml", "gexf"))
    for back in (nx.read_graphml(out["graphml"][0]), nx.read_gexf(out["gexf"][0])):
        assert back.nodes["a"]["amount"] == 1.0 and isinstance(back.nodes["a"]["amount"], float)
        assert back.nodes["a"]["tag"] == "5" and back.nodes["b"]["tag"] == "x"
        assert "amount" not in back.nodes["c"] and "tag" not in back.nodes["c"]
        assert back.edges["a", "b"]["n"] == 1 and isinstance(back.edges["a", "b"]["n"], int)


def test_empty_graph(tmp_path):
    out = export_graph(nx.DiGraph(), tmp_path)
    assert nx.read_graphml(out["graphml"][0]).number_of_nodes() == 0
    assert nx.read_gexf(out["gexf"][0]).number_of_nodes() == 0
    assert nx.node_link_graph(json.loads(out["json"][0].read_text()), edges="edges").number_of_nodes() == 0
    assert out["csv"][0].read_text().strip() == "id"
    assert out["csv"][1].read_text().strip() == "source,target"


def test_xml_invalid_characters(tmp_path):
    g = nx.DiGraph()
    g.add_node("bad\x01id", reasons="bell\x07 tab\tok")
    g.add_edge("bad\x01id", "x", note="nul\x00")
    out = export_graph(g, tmp_path)
    for back in (nx.read_graphml(out["graphml"][0]), nx.read_gexf(out["gexf"][0])):
        assert set(back.nodes) == {"bad\ufffdid", "x"}
        assert back.nodes["bad\ufffdid"]["reasons"] == "bell\ufffd tab\tok"
        assert back.edges["bad\ufffdid", "x"]["note"] == "nul\ufffd"
    # JSON and CSV keep the exact text
    data = json.loads(out["json"][0].read_text(encoding="utf-8"))
    assert {n["id"] for n in data["nodes"]} == {"bad\x01id", "x"}
    assert "bad\x01id" in set(pd.read_csv(out["csv"][0], dtype={"id": str})["id"])
