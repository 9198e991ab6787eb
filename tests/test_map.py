"""tracer.map without a browser: offline page, safe embedding, layout, subgraph selection."""
from __future__ import annotations

import json
import re

import networkx as nx
import pytest

from graph_fixtures import HOSTILE_IDS, large_graph, network_graph
from tracer.map import external_references, render_html, render_map, suspect_subgraph

# URLs that occur inside vis-network's minified JS as licence comments / SVG namespace strings;
# none of them is ever fetched.
INERT_URLS = {
    "http://almende.com",
    "http://opensource.org/licenses/MIT",
    "http://www.apache.org/licenses/LICENSE-2.0",
    "http://www.w3.org/2000/svg",
    "https://github.com/uuidjs/uuid#getrandomvalues-not-supported",
    "https://github.com/visjs",
    "https://github.com/zloirock/core-js",
    "https://github.com/zloirock/core-js/blob/v3.21.1/LICENSE",
    "https://visjs.github.io/vis-network/",
}


def _embedded(html: str, name: str):
    match = re.search(r"^\s*var " + name + r" = (.*);$", html, re.MULTILINE)
    assert match, name
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def small():
    return network_graph()


@pytest.fixture(scope="module")
def small_html(small):
    return render_html(small, title="map of <b>x</b> & \"y\"")


def test_writes_one_file_atomically(small, tmp_path):
    out = render_map(small, tmp_path / "sub" / "map.html")
    assert out == tmp_path / "sub" / "map.html"
    assert [p.name for p in out.parent.iterdir()] == ["map.html"]  # no temp file left over
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_failed_render_leaves_old_file(tmp_path):
    out = tmp_path / "map.html"
    out.write_text("old")
    g = nx.DiGraph()
    g.add_node(1)
    g.add_node("1")  # both become map id "1"
    with pytest.raises(ValueError):
        render_map(g, out)
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["map.html"]


def test_page_is_offline(small_html):
    assert external_references(small_html) == []
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", small_html, re.IGNORECASE)
    urls = set(re.findall(r"https?://[^\s\"'\\)]+", small_html))
    # the only other URL comes from the hostile id "=HYPERLINK(\"http://evil.example\")" in JSON data
    assert urls - INERT_URLS <= {"http://evil.example"}
    for marker in ("bootstrap", "cdn.jsdelivr", "cdnjs", "tom-select", "TomSelect"):
        assert marker not in small_html
    assert "vis.Network" in small_html and "vis-network" in small_html  # inlined library


def test_external_reference_detector():
    assert external_references('<script src="https://cdn.x/y.js"></script>')
    assert external_references("<link href='//cdn.x/y.css'>")
    assert external_references("a { background: url(http://x/y.png) }")
    assert external_references("@import 'x.css';")
    assert not external_references('<img src="data:image/png;base64,AAA">')


def test_hostile_text_is_escaped(small, small_html):
    assert "<script>alert(1)</script>" not in small_html
    assert "<img src=x" not in small_html
    assert "<b>bold</b>" not in small_html
    # only our own script elements open and close
    assert small_html.count("</script>") == 2
    assert "<title>map of &lt;b&gt;x&lt;/b&gt; &amp; &#34;y&#34;</title>" in small_html
    nodes = _embedded(small_html, "nodeData")
    by_id = {n["id"]: n for n in nodes}
    for hid in HOSTILE_IDS:
        assert by_id[hid]["label"] == hid  # round-trips exactly through the JSON
        assert hid in by_id[hid]["title"]
    assert "<b>bold</b> </script>" in by_id[HOSTILE_IDS[0]]["title"]
    # tooltips are built with textContent in the page, never innerHTML
    assert "innerHTML" not in small_html.split("var META", 1)[1]
    assert "textContent" in small_html


def test_data_matches_graph(small, small_html):
    nodes = _embedded(small_html, "nodeData")
    edges = _embedded(small_html, "edgeData")
    assert {n["id"] for n in nodes} == set(small.nodes)
    assert {(e["from"], e["to"]) for e in edges} == set(small.edges)
    assert len({e["id"] for e in edges}) == len(edges)
    roles = {n["id"]: n["tracerRole"] for n in nodes}
    assert roles == {n: a["role"] for n, a in small.nodes(data=True)}
    nets = {n["id"]: n["tracerNetwork"] for n in nodes}
    assert nets == {n: a["network_id"] for n, a in small.nodes(data=True)}
    colours = {}
    for n in nodes:
        colours.setdefault(n["tracerRole"], set()).add(n["color"]["background"])
    assert all(len(c) == 1 for c in colours.values()) and len(set().union(*colours.values())) == 4
    boss = next(n for n in nodes if n["id"] == "ACC-000")
    for part in ("role: upper_tier", "score: ", "network: 0", "reasons: upper_tier"):
        assert part in boss["title"]
    edge = next(e for e in edges if e["from"] == "ACC-010" and e["to"] == "ACC-000")
    attrs = small.edges["ACC-010", "ACC-000"]
    assert edge["arrows"] == "to"
    for part in (f"transfers: {attrs['n_transfers']}", f"total: {attrs['total_amount']:,.2f}",
                 f"first: {attrs['first_time']}", f"last: {attrs['last_time']}", "median lag: ",
                 "q-value: "):
        assert part in edge["title"]


def test_sizes_and_widths_grow_sublinearly(small, small_html):
    nodes = _embedded(small_html, "nodeData")
    money = {n: (a["money_in"] or 0) + (a["money_out"] or 0) for n, a in small.nodes(data=True)
             if a["money_out"] == a["money_out"]}  # skip NaN
    sizes = {n["id"]: n["size"] for n in nodes if n["id"] in money}
    ordered = sorted(money, key=money.get)
    assert all(sizes[a] <= sizes[b] for a, b in zip(ordered, ordered[1:]))
    top, low = ordered[-1], ordered[len(ordered) // 4]
    assert sizes[top] / sizes[low] < money[top] / money[low]  # sub-linear
    edges = _embedded(small_html, "edgeData")
    widths = {(e["from"], e["to"]): e["width"] for e in edges}
    totals = {e: small.edges[e]["total_amount"] for e in small.edges}
    order = sorted(totals, key=totals.get)
    assert all(widths[a] <= widths[b] for a, b in zip(order, order[1:]))


def test_missing_and_nan_attributes_render(small_html):
    nodes = _embedded(small_html, "nodeData")
    quiet = next(n for n in nodes if n["id"] == "quiet")
    assert "money out: n/a" in quiet["title"]
    assert "NaN" not in small_html.split("var META", 1)[1]


def test_small_graph_uses_bounded_continuous_physics(small_html):
    options = _embedded(small_html, "options")
    assert options["physics"]["enabled"] is True
    assert options["edges"]["smooth"]["type"] == "continuous"
    assert 0 < options["physics"]["stabilization"]["iterations"] <= 1000
    assert _embedded(small_html, "META")["physics"] is True


def test_tiers_are_columns_in_money_direction(small_html):
    nodes = _embedded(small_html, "nodeData")
    xs = {}
    for n in nodes:
        xs.setdefault(n["tracerRole"], set()).add(n["x"])
    assert max(xs["low_level"]) < min(xs["intermediary"])
    assert max(xs["intermediary"]) < min(xs["upper_tier"])
    customers = {n["x"] for n in nodes if n["id"].startswith("CUST")}
    shops = {n["x"] for n in nodes if n["id"].startswith("SHOP")}
    assert max(customers) < min(xs["low_level"]) and min(shops) > max(xs["upper_tier"])
    assert all(n.get("fixed") == {"x": True, "y": False} for n in nodes)


def test_large_graph_static_positions_deterministic():
    graph = large_graph(1200)
    html = render_html(graph, max_physics_nodes=1000)
    options = _embedded(html, "options")
    assert options["physics"] == {"enabled": False}
    assert options["edges"]["smooth"] == {"enabled": False}
    nodes = _embedded(html, "nodeData")
    assert len(nodes) == graph.number_of_nodes()
    assert all(isinstance(n["x"], float) and isinstance(n["y"], float) and "fixed" not in n for n in nodes)
    positions = {(n["x"], n["y"]) for n in nodes}
    assert len(positions) == len(nodes)  # no two nodes on the same spot
    # networks are packed side by side, not stacked into one endless column
    xs, ys = [n["x"] for n in nodes], [n["y"] for n in nodes]
    aspect = (max(ys) - min(ys)) / (max(xs) - min(xs))
    assert 0.25 < aspect < 1.5, aspect
    assert render_html(graph, max_physics_nodes=1000) == html  # deterministic
    # the threshold is a parameter
    assert _embedded(render_html(graph, max_physics_nodes=5000), "options")["physics"]["enabled"] is True


def test_empty_graph():
    html = render_html(nx.DiGraph())
    assert _embedded(html, "nodeData") == [] and _embedded(html, "edgeData") == []


def test_unknown_role_and_int_ids():
    g = nx.DiGraph()
    g.add_node(1, role="mule", score=0.9, network_id=2)
    g.add_node(2)
    g.add_edge(1, 2)
    nodes = _embedded(render_html(g), "nodeData")
    assert {n["id"] for n in nodes} == {"1", "2"}
    assert {n["tracerRole"] for n in nodes} == {"mule", "normal"}


# ---------------------------------------------------------------------------------------------------
# suspect_subgraph
# ---------------------------------------------------------------------------------------------------
def _chain():
    #  n0 -> n1 -> S -> n3 -> n4 ;  n5 isolated;  T (suspect, low score) -> n6
    g = nx.DiGraph()
    for n in ("n0", "n1", "n3", "n4", "n5", "n6"):
        g.add_node(n, role="normal", score=0.1)
    g.add_node("S", role="intermediary", score=0.9)
    g.add_node("T", role="low_level", score=0.4)
    g.add_node("unlabelled")
    nx.add_path(g, ["n0", "n1", "S", "n3", "n4"])
    g.add_edge("T", "n6")
    g.add_edge("unlabelled", "n5")
    return g


def test_suspect_subgraph_hops():
    g = _chain()
    assert set(suspect_subgraph(g, hops=0)) == {"S", "T"}
    assert set(suspect_subgraph(g, hops=1)) == {"S", "T", "n1", "n3", "n6"}
    assert set(suspect_subgraph(g, hops=2)) == {"S", "T", "n0", "n1", "n3", "n4", "n6"}
    assert set(suspect_subgraph(g, hops=1, min_score=0.5)) == {"S", "n1", "n3"}
    sub = suspect_subgraph(g, hops=1)
    assert set(sub.edges) == {("n1", "S"), ("S", "n3"), ("T", "n6")}
    sub.nodes["S"]["role"] = "changed"
    assert g.nodes["S"]["role"] == "intermediary"  # a copy
    with pytest.raises(ValueError):
        suspect_subgraph(g, hops=-1)


def test_suspect_subgraph_without_suspects_is_empty():
    g = nx.DiGraph()
    g.add_edge("a", "b")
    nx.set_node_attributes(g, "normal", "role")
    assert suspect_subgraph(g, hops=3).number_of_nodes() == 0
