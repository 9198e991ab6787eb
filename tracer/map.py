"""Offline, self-contained HTML map of a money-flow network.

The map is rendered with pyvis (vis-network 9.1.2) but through tracer's own Jinja template, because
pyvis 0.3.2's stock template

* links Bootstrap CSS/JS from cdn.jsdelivr.net even with ``cdn_resources="in_line"``;
* adds TomSelect and a filter menu whose value matching skips falsy values (``0``);
* renders ``{{heading}}`` without HTML escaping (its Jinja environment has no autoescape);
* switches to a popup that assigns the node ``title`` to ``innerHTML`` as soon as any title
  contains the substring ``"href"`` - an XSS path for untrusted account ids / reasons.

Our template inlines vis-network's JS and CSS (read from the installed pyvis package), escapes every
value, embeds data with HTML-safe JSON (``<``, ``>``, ``&``, ``'`` as ``\\u`` escapes, so ``</script>``
cannot close the script element) and builds every piece of text in the page (tooltips, legend,
dropdowns) with ``textContent``. :func:`render_map` refuses to write a page that references another
host.

Layout: tiers are columns, money flows left to right::

    normal (sources) | low_level | intermediary | upper_tier | normal (sinks)

Each network occupies a horizontal band. Up to ``max_physics_nodes`` nodes, vis-network's physics
refines the vertical positions (x stays fixed per column) for a bounded number of iterations and is
then switched off; above that the positions computed here are final and physics is off from the start.
"""
from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import networkx as nx

from tracer._io import atomic_write

__all__ = ["render_map", "render_html", "suspect_subgraph", "compute_layout", "external_references",
           "ROLE_STYLE", "ROLE_ORDER"]

# Okabe-Ito colours (colour-blind safe) plus a distinct shape per suspect tier.
ROLE_STYLE: dict[str, dict[str, str]] = {
    "upper_tier": {"color": "#D55E00", "shape": "diamond", "label": "upper tier"},
    "intermediary": {"color": "#E69F00", "shape": "triangle", "label": "intermediary"},
    "low_level": {"color": "#0072B2", "shape": "dot", "label": "low level"},
    "normal": {"color": "#BBBBBB", "shape": "dot", "label": "normal (context)"},
}
ROLE_ORDER = ("upper_tier", "intermediary", "low_level", "normal")
_SUSPECT_LEVEL = {"low_level": 1, "intermediary": 2, "upper_tier": 3}
_SOURCE_LEVEL, _SINK_LEVEL = 0, 4

MIN_NODE_SIZE, MAX_NODE_SIZE = 7.0, 30.0
MIN_EDGE_WIDTH, MAX_EDGE_WIDTH = 1.0, 10.0
_COLUMN_GAP = 320.0  # horizontal distance between tier columns
_LANE_GAP = 70.0  # horizontal distance between lanes inside a crowded column
_NODE_GAP = 24.0  # vertical free space between neighbouring nodes (room for the label)
_BAND_GAP = 120.0  # vertical space between networks
_ROWS_PER_LANE = 60  # a column with more nodes than this in one band is split into lanes
_STABILIZATION_ITERATIONS = 300


# --------------------------------------------------------------------------------------------------
# subgraph selection
# --------------------------------------------------------------------------------------------------
def suspect_subgraph(graph: nx.DiGraph, hops: int = 1, min_score: float | None = None) -> nx.DiGraph:
    """Suspects (role present and != ``"normal"``, optionally ``score >= min_score``) plus every node
    within ``hops`` edges of a suspect, following edges in either direction.

    Returns a copy; nodes without a role count as normal, so a graph without suspects yields an
    empty graph rather than the whole population.
    """
    if hops < 0:
        raise ValueError("hops must be >= 0")
    seeds = set()
    for node, attrs in graph.nodes(data=True):
        role = attrs.get("role")
        if role is None or role == "normal":
            continue
        if min_score is not None:
            score = _num(attrs.get("score"))
            if score is None or score < min_score:
                continue
        seeds.add(node)
    keep = set(seeds)
    frontier = set(seeds)
    for _ in range(hops):
        nxt = set()
        for node in frontier:
            nxt.update(graph.successors(node))
            nxt.update(graph.predecessors(node))
        frontier = nxt - keep
        if not frontier:
            break
        keep |= frontier
    return graph.subgraph(keep).copy()


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _num(value: Any) -> float | None:
    """A finite float, or None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _network_id(value: Any) -> int:
    num = _num(value)
    if num is None or num != int(num):
        return -1
    return int(num)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return str(value)


def _fmt_money(value: Any) -> str:
    num = _num(value)
    return "n/a" if num is None else f"{num:,.2f}"


def _fmt_float(value: Any, spec: str) -> str:
    num = _num(value)
    return "n/a" if num is None else format(num, spec)


def _scale(value: float, vmax: float, lo: float, hi: float) -> float:
    """Square-root (sub-linear) scale of ``value`` in [0, vmax] to [lo, hi]."""
    if vmax <= 0 or value <= 0:
        return lo
    return round(lo + (hi - lo) * math.sqrt(min(value, vmax) / vmax), 2)


def _role(attrs: dict) -> str:
    role = attrs.get("role")
    return "normal" if role is None else str(role)


def _style(role: str) -> dict[str, str]:
    return ROLE_STYLE.get(role, ROLE_STYLE["normal"])


def _node_tooltip(node_id: str, attrs: dict, role: str, net: int) -> str:
    lines = [
        f"account {node_id}",
        f"role: {role}",
        f"score: {_fmt_float(attrs.get('score'), '.3f')}",
        f"network: {net if net >= 0 else 'none'}",
        f"money in: {_fmt_money(attrs.get('money_in'))}",
        f"money out: {_fmt_money(attrs.get('money_out'))}",
    ]
    reasons = _text(attrs.get("reasons"))
    if reasons:
        lines.append(f"reasons: {reasons}")
    return "\n".join(lines)


def _edge_tooltip(src: str, dst: str, attrs: dict) -> str:
    n = _num(attrs.get("n_transfers"))
    return "\n".join([
        f"{src} \u2192 {dst}",
        f"transfers: {int(n) if n is not None else 'n/a'}",
        f"total: {_fmt_money(attrs.get('total_amount'))}",
        f"first: {_text(attrs.get('first_time')) or 'n/a'}",
        f"last: {_text(attrs.get('last_time')) or 'n/a'}",
        f"median lag: {_fmt_float(attrs.get('median_lag_hours'), '.2f')} h",
        f"q-value: {_fmt_float(attrs.get('q_value'), '.3g')}",
        f"link score: {_fmt_float(attrs.get('score'), '.3f')}",
    ])


# --------------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------------
def _levels(graph: nx.DiGraph, roles: dict) -> dict:
    """Column of each node: suspects by tier; normal accounts left if they mostly pay suspects
    (sources), right otherwise (sinks)."""
    levels = {}
    for node in graph.nodes:
        role = roles[node]
        if role in _SUSPECT_LEVEL:
            levels[node] = _SUSPECT_LEVEL[role]
            continue
        to_suspects = from_suspects = 0.0
        out_all = in_all = 0.0
        for _, dst, attrs in graph.out_edges(node, data=True):
            amount = abs(_num(attrs.get("total_amount")) or 0.0) or 1e-9
            out_all += amount
            if roles[dst] in _SUSPECT_LEVEL:
                to_suspects += amount
        for src, _, attrs in graph.in_edges(node, data=True):
            amount = abs(_num(attrs.get("total_amount")) or 0.0) or 1e-9
            in_all += amount
            if roles[src] in _SUSPECT_LEVEL:
                from_suspects += amount
        if to_suspects or from_suspects:
            levels[node] = _SOURCE_LEVEL if to_suspects >= from_suspects else _SINK_LEVEL
        else:
            levels[node] = _SOURCE_LEVEL if out_all > in_all else _SINK_LEVEL
    return levels


def _bands(graph: nx.DiGraph, roles: dict, nets: dict) -> dict:
    """Horizontal band of each node: its network; context accounts join the network they touch most."""
    bands = {}
    for node in graph.nodes:
        if roles[node] in _SUSPECT_LEVEL or nets[node] >= 0:
            bands[node] = nets[node]
            continue
        votes: dict[int, int] = defaultdict(int)
        for other in list(graph.successors(node)) + list(graph.predecessors(node)):
            if nets[other] >= 0:
                votes[nets[other]] += 1
        bands[node] = min(votes, key=lambda k: (-votes[k], k)) if votes else -1
    return bands


_TARGET_ASPECT = 0.6  # height / width the whole layout aims at
_BLOCK_GAP = 400.0  # horizontal space between two stacks of networks


def _pack_bands(band_order: list, heights: dict, block_width: float) -> dict:
    """Offsets ``{band: (dx, dy)}`` placing the network bands in side-by-side stacks so that the
    whole picture is roughly ``_TARGET_ASPECT`` high per unit of width (not one endless column)."""
    if not band_order:
        return {}
    total = sum(heights[b] + _BAND_GAP for b in band_order)
    stride = block_width + _BLOCK_GAP

    def stack(k: int):
        fill = [0.0] * k
        where = {}
        for band in band_order:  # next band goes to the lowest stack (ties: leftmost)
            col = min(range(k), key=lambda c: (fill[c], c))
            where[band] = (col * stride, fill[col])
            fill[col] += heights[band] + _BAND_GAP
        return where, max(fill) - _BAND_GAP

    guess = max(1, round(math.sqrt(total / (_TARGET_ASPECT * stride))))
    best = None
    for k in range(max(1, guess // 2), min(len(band_order), 2 * guess + 1) + 1):
        where, height = stack(k)
        width = k * stride - _BLOCK_GAP
        badness = abs(math.log(max(height, 1.0) / max(width, 1.0) / _TARGET_ASPECT))
        if best is None or badness < best[0] - 1e-9:
            best = (badness, where)
    return best[1]


def compute_layout(graph: nx.DiGraph, sizes: dict | None = None) -> dict:
    """Deterministic positions ``{node: (x, y)}``: tier columns, one band per network, nodes ordered
    inside each (band, column) cell by the mean position of their neighbours (two sweeps)."""
    roles = {n: _role(a) for n, a in graph.nodes(data=True)}
    nets = {n: _network_id(a.get("network_id")) for n, a in graph.nodes(data=True)}
    sizes = sizes or {n: MIN_NODE_SIZE for n in graph.nodes}
    levels = _levels(graph, roles)
    bands = _bands(graph, roles, nets)

    cells: dict[tuple[int, int], list] = defaultdict(list)
    for node in graph.nodes:
        cells[(bands[node], levels[node])].append(node)
    for members in cells.values():
        members.sort(key=lambda n: (-(_num(graph.nodes[n].get("score")) or 0.0), str(n)))

    band_order = sorted({b for b, _ in cells}, key=lambda b: (b < 0, b))
    level_order = sorted({lv for _, lv in cells})
    # lanes per column: enough that no lane in any band holds more than _ROWS_PER_LANE nodes
    lanes = {lv: max(1, max(math.ceil(len(cells.get((b, lv), ())) / _ROWS_PER_LANE) for b in band_order))
             for lv in level_order}
    col_x = {}
    x = 0.0
    for lv in range(_SOURCE_LEVEL, _SINK_LEVEL + 1):
        if lv not in lanes:
            continue
        width = (lanes[lv] - 1) * _LANE_GAP
        col_x[lv] = x + width / 2
        x += width + _COLUMN_GAP

    block_width = max(x - _COLUMN_GAP, 0.0)

    def place() -> dict:
        pos = {}
        heights = {}
        for band in band_order:
            band_height = 0.0
            for lv in level_order:
                members = cells.get((band, lv), [])
                if not members:
                    continue
                n_lanes = lanes[lv]
                per_lane = math.ceil(len(members) / n_lanes)
                for lane in range(n_lanes):
                    chunk = members[lane * per_lane:(lane + 1) * per_lane]
                    if not chunk:
                        continue
                    lane_x = col_x[lv] - (n_lanes - 1) * _LANE_GAP / 2 + lane * _LANE_GAP
                    ys, y = [], 0.0
                    for i, node in enumerate(chunk):
                        if i:
                            y += sizes[chunk[i - 1]] + sizes[node] + _NODE_GAP
                        ys.append(y)
                    band_height = max(band_height, y + 2 * MAX_NODE_SIZE)
                    for node, y in zip(chunk, ys):
                        pos[node] = [lane_x, y]
            # centre every lane of this band on the band's midline
            for lv in level_order:
                members = cells.get((band, lv), [])
                if not members:
                    continue
                by_lane: dict[float, list] = defaultdict(list)
                for node in members:
                    by_lane[pos[node][0]].append(node)
                for chunk in by_lane.values():
                    span = pos[chunk[-1]][1] - pos[chunk[0]][1]
                    offset = (band_height - span) / 2
                    for node in chunk:
                        pos[node][1] += offset
            heights[band] = band_height
        offsets = _pack_bands(band_order, heights, block_width)
        for node, p in pos.items():
            dx, dy = offsets[bands[node]]
            p[0] += dx
            p[1] += dy
        return pos

    pos = place()
    # barycentre sweeps (Sugiyama style): outwards from the upper tier, then back; after each column
    # is re-ordered by the mean height of its neighbours, positions are recomputed.
    nbrs = {n: list(graph.successors(n)) + list(graph.predecessors(n)) for n in graph.nodes}
    outward = sorted(level_order, key=lambda lv: -lv if lv != _SINK_LEVEL else -2.5)
    sweeps = [outward, outward[::-1]] * (2 if graph.number_of_nodes() <= 5000 else 1)
    for order in sweeps:
        for lv in order:
            for band in band_order:
                members = cells.get((band, lv))
                if not members:
                    continue
                def key(n, _pos=pos):
                    ys = [_pos[m][1] for m in nbrs[n] if m in _pos]
                    return (sum(ys) / len(ys) if ys else _pos[n][1], str(n))
                members.sort(key=key)
            pos = place()
    return {n: (round(p[0], 1), round(p[1], 1)) for n, p in pos.items()}


# --------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------
def _vis_assets() -> tuple[str, str]:
    import pyvis

    lib = Path(pyvis.__file__).parent / "templates" / "lib" / "vis-9.1.2"
    js = (lib / "vis-network.min.js").read_text(encoding="utf-8")
    css = (lib / "vis-network.css").read_text(encoding="utf-8")
    if "</script" in js.lower() or "</style" in css.lower():
        raise RuntimeError("vis-network assets cannot be inlined safely")
    return js, css


_EXTERNAL_REF = re.compile(
    r"""(?:\b(?:src|href|action|poster|srcset|data)\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:url\(\s*["']?\s*(?:https?:)?//)|(?:@import\b)""",
    re.IGNORECASE,
)


def external_references(html: str) -> list[str]:
    """Attributes / CSS urls in ``html`` that would make the browser contact another host."""
    return [m.group(0) for m in _EXTERNAL_REF.finditer(html)]


def _options(physics: bool) -> dict:
    opts: dict[str, Any] = {
        "autoResize": True,
        "layout": {"improvedLayout": False, "randomSeed": 7},
        "nodes": {
            "borderWidth": 1,
            "font": {"size": 14, "face": "sans-serif", "strokeWidth": 3, "strokeColor": "#ffffff"},
            "scaling": {"label": {"enabled": False}},
        },
        "edges": {
            "arrows": {"to": {"enabled": True, "scaleFactor": 0.6}},
            "color": {"color": "#8c8c8c", "highlight": "#222222", "hover": "#222222", "opacity": 0.75},
            "smooth": {"enabled": True, "type": "continuous", "roundness": 0.3} if physics
            else {"enabled": False},
            "arrowStrikethrough": False,
            "selectionWidth": 2,
        },
        "interaction": {
            "hover": True,
            "tooltipDelay": 120,
            "navigationButtons": False,
            "keyboard": False,
            "multiselect": True,
            "hideEdgesOnDrag": not physics,
            "hideEdgesOnZoom": not physics,
        },
    }
    if physics:
        opts["physics"] = {
            "enabled": True,
            "solver": "barnesHut",
            "barnesHut": {
                "gravitationalConstant": -3000,
                "centralGravity": 0.02,
                "springLength": 140,
                "springConstant": 0.03,
                "damping": 0.45,
                "avoidOverlap": 0.4,
            },
            "maxVelocity": 40,
            "minVelocity": 1.0,
            "timestep": 0.5,
            "stabilization": {
                "enabled": True,
                "iterations": _STABILIZATION_ITERATIONS,
                "updateInterval": 25,
                "fit": True,
            },
        }
    else:
        opts["physics"] = {"enabled": False}
    return opts


def _build_network(graph: nx.DiGraph, title: str, physics: bool):
    from pyvis.network import Network

    net = Network(height="100%", width="100%", directed=True, heading=title, cdn_resources="in_line")

    money = {}
    for node, attrs in graph.nodes(data=True):
        money[node] = abs(_num(attrs.get("money_in")) or 0.0) + abs(_num(attrs.get("money_out")) or 0.0)
    max_money = max(money.values(), default=0.0)
    sizes = {n: _scale(m, max_money, MIN_NODE_SIZE, MAX_NODE_SIZE) for n, m in money.items()}
    pos = compute_layout(graph, sizes)

    ids = {}
    for node in graph.nodes:
        vid = str(node)
        if vid in net.node_map:
            raise ValueError(f"two nodes map to the same map id {vid!r}")
        ids[node] = vid
        attrs = graph.nodes[node]
        role = _role(attrs)
        style = _style(role)
        nid = _network_id(attrs.get("network_id"))
        x, y = pos[node]
        item = {
            "id": vid,
            "label": vid,
            "shape": style["shape"],
            "color": {
                "background": style["color"],
                "border": "#444444" if role in _SUSPECT_LEVEL else "#999999",
                "highlight": {"background": style["color"], "border": "#000000"},
                "hover": {"background": style["color"], "border": "#000000"},
            },
            "size": sizes[node],
            "title": _node_tooltip(vid, attrs, role, nid),
            "x": x,
            "y": y,
            "tracerRole": role,
            "tracerNetwork": nid,
            "tracerScore": _num(attrs.get("score")),
        }
        if role not in _SUSPECT_LEVEL:
            item["font"] = {"color": "#666666", "size": 11}
        if physics:
            item["fixed"] = {"x": True, "y": False}
        # Append directly: pyvis 0.3.2's add_node/add_edge do O(n) list scans per call.
        net.nodes.append(item)
        net.node_ids.append(vid)
        net.node_map[vid] = item

    amounts = [abs(_num(a.get("total_amount")) or 0.0) for _, _, a in graph.edges(data=True)]
    max_amount = max(amounts, default=0.0)
    for i, (src, dst, attrs) in enumerate(graph.edges(data=True)):
        net.edges.append({
            "id": f"e{i}",
            "from": ids[src],
            "to": ids[dst],
            "arrows": "to",
            "width": _scale(amounts[i], max_amount, MIN_EDGE_WIDTH, MAX_EDGE_WIDTH),
            "title": _edge_tooltip(ids[src], ids[dst], attrs),
        })
    net.options = _options(physics)
    return net


def _environment():
    from jinja2 import DictLoader, Environment
    from markupsafe import Markup

    env = Environment(loader=DictLoader({"tracer_map.html": _TEMPLATE}), autoescape=True)
    # strict JSON: NaN/Infinity are never emitted (the data are sanitised before, this guards it)
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "allow_nan": False, "ensure_ascii": True}
    js, css = _vis_assets()
    env.globals["vis_js"] = Markup(js)
    env.globals["vis_css"] = Markup(css)
    env.globals["tracer_roles"] = [
        {"role": r, "color": ROLE_STYLE[r]["color"], "shape": ROLE_STYLE[r]["shape"],
         "label": ROLE_STYLE[r]["label"]} for r in ROLE_ORDER
    ]
    return env


def render_html(graph: nx.DiGraph, *, title: str = "tracer network map",
                max_physics_nodes: int = 1000) -> str:
    """The map page as a string (see :func:`render_map`)."""
    physics = graph.number_of_nodes() <= max_physics_nodes
    net = _build_network(graph, title, physics)
    env = _environment()
    env.globals["tracer_meta"] = {"physics": physics, "nodes": graph.number_of_nodes(),
                                  "edges": graph.number_of_edges()}
    env.globals["tracer_options"] = net.options
    net.templateEnv = env
    net.path = "tracer_map.html"
    html = net.generate_html(name="map.html")
    bad = external_references(html)
    if bad:  # pragma: no cover - guards template edits
        raise RuntimeError(f"map would load external resources: {bad[:3]}")
    return html


def render_map(graph: nx.DiGraph, path: str | os.PathLike, *, title: str = "tracer network map",
               max_physics_nodes: int = 1000) -> Path:
    """Write the whole of ``graph`` as one self-contained, offline HTML file; return its path.

    Pass a subgraph (e.g. :func:`suspect_subgraph`) to keep the map readable: everything given is drawn.
    Up to ``max_physics_nodes`` nodes the vertical layout is refined by vis-network physics in the
    browser (bounded, then frozen); above it positions are computed here and physics is off.
    """
    target = Path(path)
    html = render_html(graph, title=title, max_physics_nodes=max_physics_nodes)
    with atomic_write(target, "w", encoding="utf-8") as handle:
        handle.write(html)
    return target


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'none'">
<title>{{ heading }}</title>
<style>{{ vis_css }}</style>
<script>{{ vis_js }}</script>
<style>
  html, body { margin: 0; padding: 0; height: 100%; font-family: sans-serif; font-size: 13px; color: #222; }
  body { display: flex; flex-direction: column; }
  #tracer-header { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 16px;
                   padding: 6px 12px; border-bottom: 1px solid #ddd; background: #fafafa; }
  #tracer-header h1 { font-size: 16px; margin: 0 12px 0 0; }
  #tracer-header label { white-space: nowrap; }
  #tracer-header select, #tracer-header input, #tracer-header button { font-size: 13px; }
  #tracer-status { color: #555; }
  #tracer-main { position: relative; flex: 1 1 auto; min-height: 300px; }
  #mynetwork { position: absolute; inset: 0; background: #ffffff; }
  #tracer-legend { display: flex; flex-wrap: wrap; align-items: center; gap: 4px 18px; padding: 4px 12px;
                   border-bottom: 1px solid #ddd; background: #fdfdfd; }
  #tracer-legend .legend-title { font-weight: bold; }
  #tracer-legend .sw { display: inline-block; width: 12px; height: 12px; margin-right: 6px;
                       vertical-align: middle; border: 1px solid #555; }
  #tracer-legend .sw.dot { border-radius: 50%; }
  #tracer-legend .sw.diamond { transform: rotate(45deg) scale(0.85); }
  #tracer-legend .sw.triangle { width: 0; height: 0; border: 7px solid transparent;
                                border-bottom: 12px solid currentColor; border-top: 0; }
  #tracer-legend .note { color: #555; font-size: 12px; }
  #tracer-columns { position: absolute; left: 0; right: 0; top: 6px; text-align: center;
                    color: #777; font-size: 12px; pointer-events: none; z-index: 4; }
  div.vis-tooltip { white-space: normal; max-width: 420px; font-family: sans-serif; font-size: 12px;
                    line-height: 1.4; }
  div.vis-tooltip .tip-head { font-weight: bold; margin-bottom: 2px; overflow-wrap: anywhere; }
  div.vis-tooltip .tip-line { overflow-wrap: anywhere; }
  #tracer-empty { position: absolute; top: 40%; width: 100%; text-align: center; color: #777; font-size: 16px; }
</style>
</head>
<body>
<div id="tracer-header">
  <h1 id="tracer-title">{{ heading }}</h1>
  <label>Role <select id="tracer-role"></select></label>
  <label>Network <select id="tracer-network"></select></label>
  <label title="also show accounts directly connected to the selected ones"><input type="checkbox" id="tracer-neighbours"> + direct neighbours</label>
  <label>Find account <input id="tracer-find" type="text" size="18" placeholder="account id"></label>
  <button type="button" id="tracer-reset">Reset</button>
  <span id="tracer-status"></span>
</div>
<div id="tracer-legend"></div>
<div id="tracer-main">
  <div id="mynetwork"></div>
  <div id="tracer-columns">money flows left to right: sources &rarr; low level &rarr; intermediary &rarr; upper tier &rarr; recipients</div>
</div>
<script>
(function () {
  "use strict";
  var META = {{ tracer_meta|tojson }};
  var ROLES = {{ tracer_roles|tojson }};
  var nodeData = {{ nodes|tojson }};
  var edgeData = {{ edges|tojson }};
  var options = {{ tracer_options|tojson }};
  var state = { ready: false, physics: META.physics, network: null, nodes: null, edges: null };
  window.tracerMap = state;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  // Tooltips are DOM elements whose text is set with textContent: ids and reasons never become markup.
  function tip(text) {
    var box = el("div");
    String(text).split("\n").forEach(function (line, i) {
      box.appendChild(el("div", i === 0 ? "tip-head" : "tip-line", line));
    });
    return box;
  }
  var rawTitles = {};
  nodeData.forEach(function (n) { rawTitles[n.id] = n.title; n.title = tip(n.title); });
  edgeData.forEach(function (e) { e.title = tip(e.title); });

  var nodes = new vis.DataSet(nodeData);
  var edges = new vis.DataSet(edgeData);
  state.nodes = nodes; state.edges = edges; state.rawTitles = rawTitles;

  // ---- legend ----
  var counts = {};
  nodeData.forEach(function (n) { counts[n.tracerRole] = (counts[n.tracerRole] || 0) + 1; });
  var legend = document.getElementById("tracer-legend");
  legend.appendChild(el("span", "legend-title", "Roles"));
  ROLES.forEach(function (r) {
    var row = el("span", "legend-row");
    row.setAttribute("data-role", r.role);
    var sw = el("span", "sw " + r.shape);
    if (r.shape === "triangle") { sw.style.color = r.color; } else { sw.style.background = r.color; }
    row.appendChild(sw);
    row.appendChild(document.createTextNode(r.label + " (" + (counts[r.role] || 0) + ")"));
    legend.appendChild(row);
  });
  legend.appendChild(el("span", "note", "size: money handled (in + out, square-root scale)"));
  legend.appendChild(el("span", "note", "edge width: total amount; arrow: direction of money"));
  legend.appendChild(el("span", "note", "hover a node or edge for its evidence"));

  // ---- filter controls ----
  var roleSel = document.getElementById("tracer-role");
  var netSel = document.getElementById("tracer-network");
  var nbrBox = document.getElementById("tracer-neighbours");
  var findBox = document.getElementById("tracer-find");
  var status = document.getElementById("tracer-status");
  function addOption(sel, value, text) {
    var o = el("option", null, text);
    o.value = value;
    sel.appendChild(o);
  }
  addOption(roleSel, "*", "all roles");
  addOption(roleSel, "*suspects", "all suspects (not normal)");
  var knownRoles = ROLES.map(function (r) { return r.role; });
  knownRoles.forEach(function (r, i) { addOption(roleSel, "=" + r, ROLES[i].label); });
  Object.keys(counts).sort().forEach(function (r) {
    if (knownRoles.indexOf(r) < 0) { addOption(roleSel, "=" + r, r); }
  });
  addOption(netSel, "*", "all networks");
  var nets = {};
  nodeData.forEach(function (n) { nets[n.tracerNetwork] = true; });
  Object.keys(nets).map(Number).sort(function (a, b) { return a - b; }).forEach(function (k) {
    addOption(netSel, "=" + k, k < 0 ? "none" : "network " + k);
  });

  var adjacency = {};
  edgeData.forEach(function (e) {
    (adjacency[e.from] = adjacency[e.from] || []).push(e.to);
    (adjacency[e.to] = adjacency[e.to] || []).push(e.from);
  });
  function matches(n) {
    var r = roleSel.value, k = netSel.value;
    if (r === "*suspects") { if (n.tracerRole === "normal") { return false; } }
    else if (r !== "*" && ("=" + n.tracerRole) !== r) { return false; }
    if (k !== "*" && ("=" + n.tracerNetwork) !== k) { return false; }
    return true;
  }
  function applyFilter() {
    var show = {};
    var shown = 0;
    nodeData.forEach(function (n) { if (matches(n)) { show[n.id] = true; } });
    if (nbrBox.checked) {
      Object.keys(show).forEach(function (id) {
        (adjacency[id] || []).forEach(function (m) { show[m] = true; });
      });
    }
    var updates = nodeData.map(function (n) {
      var visible = show[n.id] === true;
      if (visible) { shown += 1; }
      return { id: n.id, hidden: !visible };
    });
    nodes.update(updates);
    status.textContent = "showing " + shown + " of " + nodeData.length + " accounts, " +
      edgeData.length + " links" + (META.physics ? "" : " (static layout, physics off)");
    state.shown = shown;
  }
  roleSel.addEventListener("change", applyFilter);
  netSel.addEventListener("change", applyFilter);
  nbrBox.addEventListener("change", applyFilter);
  document.getElementById("tracer-reset").addEventListener("click", function () {
    roleSel.value = "*"; netSel.value = "*"; nbrBox.checked = false; findBox.value = "";
    applyFilter();
    if (state.network) { state.network.unselectAll(); state.network.fit(); }
  });
  findBox.addEventListener("change", function () {
    var q = findBox.value.trim();
    if (!q || !state.network) { return; }
    var hit = nodes.get(q) ? q : null;
    if (!hit) {
      var lower = q.toLowerCase();
      var found = nodeData.filter(function (n) { return String(n.id).toLowerCase().indexOf(lower) >= 0; });
      hit = found.length ? found[0].id : null;
    }
    if (hit === null) { status.textContent = "no account matches"; return; }
    nodes.update({ id: hit, hidden: false });
    state.network.selectNodes([hit]);
    state.network.focus(hit, { scale: 1.2, animation: false });
  });

  // ---- network ----
  var container = document.getElementById("mynetwork");
  function markReady() {
    if (!state.ready) { state.ready = true; document.body.setAttribute("data-ready", "1"); }
  }
  applyFilter();
  if (nodeData.length === 0) {
    var empty = el("div", null, "no accounts to show");
    empty.id = "tracer-empty";
    document.getElementById("tracer-main").appendChild(empty);
    markReady();
    return;
  }
  var network = new vis.Network(container, { nodes: nodes, edges: edges }, options);
  state.network = network;
  if (META.physics) {
    network.on("stabilizationProgress", function (p) {
      status.textContent = "laying out\u2026 " + Math.round(100 * p.iterations / p.total) + "%";
    });
    network.once("stabilizationIterationsDone", function () {
      // freeze the layout: no drift, dragging a node moves only that node
      network.setOptions({ physics: { enabled: false } });
      network.fit();
      applyFilter();
      network.once("afterDrawing", markReady);
      network.redraw();
    });
  } else {
    network.once("afterDrawing", markReady);
    network.redraw();
  }
})();
</script>
</body>
</html>
"""
