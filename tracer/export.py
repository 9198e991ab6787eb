"""Export the money-flow graph for other tools: GraphML, GEXF (Gephi), node-link JSON, CSV node/edge lists.

Every file is written atomically (a temporary file renamed over the target on success).

Type handling
    GraphML and GEXF cannot store ``None``: such attributes are *omitted* for that node/edge (both
    formats support missing values; readers simply do not set the attribute). NaN/inf floats are
    written as floats. Within one attribute name (per nodes / edges) the type is made consistent
    before writing - ints mixed with floats become floats, anything mixed with strings becomes
    strings - because both formats declare one type per attribute. numpy scalars become Python
    scalars. Control characters that XML 1.0 cannot contain (U+0000-U+0008, U+000B, U+000C,
    U+000E-U+001F) are replaced with U+FFFD in ids and strings of these two formats only. JSON keeps ``None`` as ``null`` and writes NaN/inf as ``null`` (strict JSON).

CSV formula injection
    A *string* cell beginning with ``=``, ``+``, ``-``, ``@``, tab or carriage return is prefixed
    with ``'`` so spreadsheet programs show it as text instead of evaluating it. Numbers (including
    negative ones) are written as numbers and never prefixed. ``None`` and NaN become empty cells.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

import networkx as nx

from tracer._io import atomic_path, atomic_write

__all__ = ["export_graph", "FORMATS", "NODE_COLUMNS", "EDGE_COLUMNS", "neutralise_cell"]

FORMATS = ("graphml", "gexf", "json", "csv")
# preferred column order (docs/architecture.md "Graph attributes"); other attributes follow, sorted
NODE_COLUMNS = ("role", "score", "network_id", "reasons", "money_in", "money_out")
EDGE_COLUMNS = ("n_transfers", "total_amount", "first_time", "last_time", "median_lag_hours", "score",
                "q_value")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# characters XML 1.0 cannot contain at all (GraphML / GEXF are XML)
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


# --------------------------------------------------------------------------------------------------
# value normalisation
# --------------------------------------------------------------------------------------------------
def _py(value: Any) -> Any:
    """numpy / pandas scalars to plain Python scalars."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            out = item()
        except (TypeError, ValueError):
            return str(value)
        if isinstance(out, (bool, int, float, str)) or out is None:
            return out
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def _unify(records: Iterable[dict]) -> dict[str, str]:
    """One type per attribute name: bool, int, float (int+float) or str (anything else mixed)."""
    kinds: dict[str, set[str]] = {}
    for data in records:
        for key, value in data.items():
            if value is not None:
                kinds.setdefault(key, set()).add(_kind(value))
    out = {}
    for key, seen in kinds.items():
        if len(seen) == 1:
            out[key] = next(iter(seen))
        elif seen <= {"int", "float"}:
            out[key] = "float"
        else:
            out[key] = "str"
    return out


def _cast(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "str" and not isinstance(value, str):
        return str(value)
    return value


def _typed_copy(graph: nx.DiGraph, *, drop_none: bool = False) -> nx.DiGraph:
    """Copy with plain Python values and one type per attribute name (nodes and edges separately).

    With ``drop_none`` attributes whose value is None are left out (GraphML / GEXF), and so are
    nested graph-level values these formats cannot hold.
    """
    nodes = {n: {str(k): _py(v) for k, v in d.items()} for n, d in graph.nodes(data=True)}
    edges = {(u, v): {str(k): _py(x) for k, x in d.items()} for u, v, d in graph.edges(data=True)}
    node_kind = _unify(nodes.values())
    edge_kind = _unify(edges.values())

    def keep(value: Any) -> bool:
        return not (drop_none and value is None)

    def xml(value: Any) -> Any:  # GraphML/GEXF only: XML-invalid control characters become U+FFFD
        return _XML_INVALID.sub("\ufffd", value) if drop_none and isinstance(value, str) else value

    out = graph.__class__()
    for key, value in graph.graph.items():
        if drop_none and (value is None or isinstance(value, (dict, list, tuple, set))):
            continue
        out.graph[str(key)] = value if not drop_none else _py(value)
    for n, data in nodes.items():
        out.add_node(xml(n), **{k: xml(_cast(v, node_kind.get(k, "str"))) for k, v in data.items() if keep(v)})
    for (u, v), data in edges.items():
        out.add_edge(xml(u), xml(v),
                     **{k: xml(_cast(x, edge_kind.get(k, "str"))) for k, x in data.items() if keep(x)})
    return out


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    value = _py(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def neutralise_cell(value: Any) -> Any:
    """CSV cell value: strings that a spreadsheet would evaluate as a formula get a leading ``'``;
    numbers are returned unchanged; None and NaN become ``""``."""
    value = _py(value)
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_START) else value
    return value


def _columns(records: Iterable[dict], preferred: tuple[str, ...]) -> list[str]:
    seen: set[str] = set()
    for data in records:
        seen.update(str(k) for k in data)
    return [c for c in preferred if c in seen] + sorted(seen - set(preferred))


# --------------------------------------------------------------------------------------------------
# writers
# --------------------------------------------------------------------------------------------------
def _write_graphml(graph: nx.DiGraph, path: Path) -> None:
    clean = _typed_copy(graph, drop_none=True)
    with atomic_path(path) as tmp:
        nx.write_graphml(clean, tmp, encoding="utf-8", prettyprint=True, named_key_ids=True)


def _write_gexf(graph: nx.DiGraph, path: Path) -> None:
    clean = _typed_copy(graph, drop_none=True)
    with atomic_path(path) as tmp:
        nx.write_gexf(clean, tmp, encoding="utf-8", prettyprint=True)


def _write_json(graph: nx.DiGraph, path: Path) -> None:
    data = nx.node_link_data(_typed_copy(graph), edges="edges")
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(_json_safe(data), handle, ensure_ascii=False, allow_nan=False, indent=1)
        handle.write("\n")


def _write_csv(graph: nx.DiGraph, nodes_path: Path, edges_path: Path) -> None:
    typed = _typed_copy(graph)
    node_cols = _columns((d for _, d in typed.nodes(data=True)), NODE_COLUMNS)
    edge_cols = _columns((d for _, _, d in typed.edges(data=True)), EDGE_COLUMNS)
    # attribute names that clash with the key columns get an "attr_" prefix
    node_head = ["id"] + [c if c != "id" else "attr_id" for c in node_cols]
    edge_head = ["source", "target"] + [c if c not in ("source", "target") else f"attr_{c}" for c in edge_cols]
    with atomic_write(nodes_path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(node_head)
        for node, data in typed.nodes(data=True):
            writer.writerow([neutralise_cell(node)] + [neutralise_cell(data.get(c)) for c in node_cols])
    with atomic_write(edges_path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(edge_head)
        for src, dst, data in typed.edges(data=True):
            writer.writerow([neutralise_cell(src), neutralise_cell(dst)]
                            + [neutralise_cell(data.get(c)) for c in edge_cols])


def export_graph(graph: nx.DiGraph, out_dir: str | os.PathLike, *, name: str = "network",
                 formats: Iterable[str] = FORMATS) -> dict[str, list[Path]]:
    """Write ``graph`` in each of ``formats`` into ``out_dir``; return ``{format: [paths]}``.

    Files: ``<name>.graphml``, ``<name>.gexf``, ``<name>.json`` (networkx node-link data with the
    edge list under ``"edges"``), ``<name>_nodes.csv`` and ``<name>_edges.csv``.
    """
    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}")
    if not _SAFE_NAME.match(name):
        raise ValueError(f"export name must be a plain file stem, got {name!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    for fmt in formats:
        if fmt == "graphml":
            path = out / f"{name}.graphml"
            _write_graphml(graph, path)
            written[fmt] = [path]
        elif fmt == "gexf":
            path = out / f"{name}.gexf"
            _write_gexf(graph, path)
            written[fmt] = [path]
        elif fmt == "json":
            path = out / f"{name}.json"
            _write_json(graph, path)
            written[fmt] = [path]
        elif fmt == "csv":
            paths = [out / f"{name}_nodes.csv", out / f"{name}_edges.csv"]
            _write_csv(graph, *paths)
            written[fmt] = paths
    return written
