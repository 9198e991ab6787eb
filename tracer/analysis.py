"""The whole job: load -> link -> features -> roles -> graph, as one call returning an ``Analysis``.

``analyze(source)`` is what the CLI's ``tracer analyze`` runs. The ``Analysis`` holds every table,
the networkx graph of confident links, and writes the output set atomically: the files are built in
a sibling folder and swapped in whole, so a crash never leaves a complete-looking partial set.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import networkx as nx
import pandas as pd

from tracer import __version__
from tracer._io import current_umask, write_csv
from tracer.features import account_features, flow_features
from tracer.graph import build_graph
from tracer.link import LINK_COLUMNS, LinkOptions, infer_links
from tracer.load import LoadResult, load_transactions
from tracer.roles import ROLES, RoleModel

KEY_FEATURES = [
    "money_in", "money_out", "link_in", "link_out", "pass_through", "holding_hours", "n_senders", "n_receivers",
    "retention", "large_deposits", "large_deposit_gap_days", "large_deposit_gap_cv", "large_deposit_amount_cv",
    "small_spends_per_month", "pagerank", "hub", "authority", "chain_length", "flow_position", "betweenness", "anomaly",
]
ACCOUNT_COLUMNS = ["client_id", "role", "score", "network_id", "reasons", *KEY_FEATURES]
OUTPUT_FILES = ("accounts.csv", "links.csv", "transfers.csv", "networks.csv", "rejected.csv", "summary.json", "network.html")


class _Stages:
    """Times each pipeline stage and reports progress on stderr."""

    def __init__(self, verbose: bool):
        self.verbose = verbose
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.verbose:
            print(f"  {name} ...", end="", file=sys.stderr, flush=True)
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 3)
        if self.verbose:
            print(f" {self.timings[name]:.1f} s", file=sys.stderr, flush=True)


@dataclass
class Trace:
    """Money followed from one account: the subgraph and its chains (who -> who, how much, when)."""

    account: str
    graph: nx.DiGraph
    chains: pd.DataFrame

    def to_pandas(self) -> pd.DataFrame:
        return self.chains

    def __str__(self) -> str:
        if self.chains.empty:
            return f"{self.account}: no confident links within reach"
        lines = [f"money around {self.account} ({self.graph.number_of_nodes()} accounts, {self.graph.number_of_edges()} links):"]
        for row in self.chains.itertuples():
            lines.append(f"  hop {row.hop}: {row.source} -> {row.target}  ${row.total_amount:,.2f} in {row.n_transfers} transfer(s), "
                         f"{str(row.first_time)[:10]} .. {str(row.last_time)[:10]}, q={row.q_value:.3g}")
        return "\n".join(lines)


@dataclass
class Analysis:
    """Results of :func:`analyze`: tables, graph, summary, and writers."""

    accounts: pd.DataFrame
    links: pd.DataFrame
    transfers: pd.DataFrame
    networks: pd.DataFrame
    rejected: pd.DataFrame
    summary: dict
    graph: nx.DiGraph = field(repr=False)

    # -- views ----------------------------------------------------------------------------------

    def to_pandas(self) -> pd.DataFrame:
        return self.accounts

    def suspects(self, hops: int = 1) -> nx.DiGraph:
        """Flagged accounts plus ``hops`` of context around them (never the whole population)."""
        from tracer.map import suspect_subgraph

        return suspect_subgraph(self.graph, hops=hops)

    def trace(self, account: str, hops: int = 2, direction: str = "both", min_score: float | None = None) -> Trace:
        """Follow the money from ``account`` through confident links.

        ``direction``: ``up`` (who paid in), ``down`` (where it went) or ``both``; ``min_score``
        keeps only links scoring at least that (log10 evidence).
        """
        account = str(account)
        if account not in self.graph:
            known = account in set(self.accounts["client_id"].astype(str))
            raise KeyError(f"account {account!r} " + ("has no confident links" if known else "is not in the data"))
        if direction not in ("up", "down", "both"):
            raise ValueError("direction must be up, down or both")
        g = self.graph
        if min_score is not None:
            g = g.edge_subgraph([(u, v) for u, v, s in g.edges(data="score") if s is not None and s >= min_score]).copy()
            g.add_node(account, **self.graph.nodes[account])
        hop_of = {account: 0}
        frontier = [account]
        rows = []
        for hop in range(1, hops + 1):
            nxt = []
            for v in frontier:
                steps = []
                if direction in ("down", "both"):
                    steps += [(v, w) for w in g.successors(v)]
                if direction in ("up", "both"):
                    steps += [(u, v) for u in g.predecessors(v)]
                for u, w in steps:
                    other = w if u == v else u
                    if other not in hop_of:
                        hop_of[other] = hop
                        nxt.append(other)
                        rows.append({"hop": hop, "source": u, "target": w, **g.edges[u, w]})
            frontier = nxt
        sub = g.subgraph(hop_of).copy()
        chains = pd.DataFrame(rows, columns=["hop", *LINK_COLUMNS]) if rows else pd.DataFrame(columns=["hop", *LINK_COLUMNS])
        return Trace(account, sub, chains)

    def network(self, network_id: int) -> nx.DiGraph:
        members = self.accounts.loc[self.accounts["network_id"] == network_id, "client_id"].astype(str)
        if members.empty:
            raise KeyError(f"no network {network_id}")
        return self.graph.subgraph(members).copy()

    # -- writers ----------------------------------------------------------------------------------

    def to_html(self, path: str | os.PathLike, hops: int = 1, graph: nx.DiGraph | None = None, title: str | None = None) -> Path:
        from tracer.map import render_map

        return render_map(graph if graph is not None else self.suspects(hops), path, title=title or "tracer: suspected networks")

    def export(self, out_dir: str | os.PathLike, graph: nx.DiGraph | None = None, name: str = "network",
               formats: tuple[str, ...] = ("graphml", "gexf", "json", "csv")) -> dict[str, list[Path]]:
        """Write a subgraph (default: suspects with one hop of context) as GraphML, GEXF, JSON, CSV."""
        from tracer.export import export_graph

        return export_graph(graph if graph is not None else self.suspects(), out_dir, name=name, formats=formats)

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write the output set into ``out_dir`` as one atomic swap; returns the file paths."""
        out = Path(out_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        staging.chmod(0o777 & ~current_umask())
        try:
            self.accounts.to_csv(staging / "accounts.csv", index=False)
            write_csv(self.links, staging / "links.csv")
            write_csv(self.transfers, staging / "transfers.csv")
            self.networks.to_csv(staging / "networks.csv", index=False)
            self.rejected.to_csv(staging / "rejected.csv", index=False)
            self.to_html(staging / "network.html")
            (staging / "summary.json").write_text(json.dumps(self.summary, indent=2, default=str))
            _swap_in(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return {name: out / name for name in OUTPUT_FILES}

    @classmethod
    def read(cls, out_dir: str | os.PathLike) -> "Analysis":
        """Reload an output folder written by :meth:`write` (for trace/export without recomputing)."""
        out = Path(out_dir)
        missing = [n for n in OUTPUT_FILES if not (out / n).exists()]
        if missing:
            raise FileNotFoundError(f"{out}: not a complete tracer output folder (missing {', '.join(missing)})")
        accounts = pd.read_csv(out / "accounts.csv", dtype={"client_id": str, "reasons": str}, keep_default_na=False, na_values=[""])
        # floats pinned: the writer spells an integral float "2", which would otherwise read back as int
        links = pd.read_csv(out / "links.csv", parse_dates=["first_time", "last_time"], dtype={
            "source": str, "target": str, "total_amount": float, "median_lag_hours": float, "score": float, "q_value": float})
        transfers = pd.read_csv(out / "transfers.csv", parse_dates=["first_time"], dtype={
            "source": str, "target": str, "withdrawal_rows": str, "deposit_rows": str, "amount_out": float, "amount_in": float,
            "lag_hours": float, "evidence": float, "link_q_value": float})
        networks = pd.read_csv(out / "networks.csv", parse_dates=["first_time", "last_time"], dtype={"members": str})
        rejected = pd.read_csv(out / "rejected.csv")
        summary = json.loads((out / "summary.json").read_text())
        accounts["reasons"] = accounts["reasons"].fillna("")
        return cls(accounts, links, transfers, networks, rejected, summary, _graph(accounts, links))

    def _repr_html_(self) -> str:
        s = self.summary
        roles = ", ".join(f"{k}: {v}" for k, v in s["roles"].items())
        return (f"<b>tracer analysis</b> of {s['rows_in']:,} rows ({s['rows_rejected']:,} rejected): "
                f"{s['accounts']:,} accounts, {s['links']:,} confident links, {s['networks']} network(s); {roles}")

    def __repr__(self) -> str:
        s = self.summary
        return f"Analysis({s['accounts']} accounts, {s['links']} links, {s['networks']} networks, roles={s['roles']})"


def _swap_in(staging: Path, out: Path) -> None:
    """Replace ``out`` by ``staging`` with renames only; an old ``out`` is removed after the swap."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.time_ns()}")
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _confident(linked) -> pd.DataFrame:
    """The transfers of confident links (q-value within the reporting threshold)."""
    return linked.transfers[(linked.transfers["link_q_value"] <= linked.options.max_q).to_numpy()]


def _spark_features(spark_load, links: pd.DataFrame, transfers: pd.DataFrame, holding_hours: float) -> pd.DataFrame:
    """account_features with the behaviour part on Spark; the flow part needs only the deposits of
    accounts that send confident transfers (for holding times), which are collected."""
    from pyspark.sql import functions as F

    from tracer.spark import behaviour_features_spark

    sdf = spark_load.transactions
    behaviour = behaviour_features_spark(sdf, spark_load.buckets)
    senders = sorted(transfers["source"].astype(str).unique())
    deposits = sdf.filter((F.col("amount_cents") > 0) & F.col("client_id").isin(senders)).select("client_id", "amount_cents", "timestamp").toPandas()
    deposits["timestamp"] = pd.to_datetime(deposits["timestamp"]).astype("datetime64[s]")
    return behaviour.join(flow_features(deposits, links, transfers, behaviour, holding_hours))


def _graph(accounts: pd.DataFrame, links: pd.DataFrame) -> nx.DiGraph:
    """Graph of confident links; node attributes for accounts on a link or with a role."""
    on_link = set(links["source"].astype(str)) | set(links["target"].astype(str))
    keep = accounts["client_id"].astype(str).isin(on_link) | (accounts["role"] != "normal")
    return build_graph(links, accounts[keep].set_index("client_id"))


def analyze(source: str | os.PathLike | pd.DataFrame | LoadResult, *, seeds: tuple[str, ...] = (), labels: pd.Series | None = None,
            verbose: bool = False, min_pass_through: float = 0.5, holding_hours: float = 72.0,
            engine: str = "local", spark_master: str | None = None, **link_options) -> Analysis:
    """Run the whole job on a file, a DataFrame (seed schema) or an already loaded result.

    ``seeds``: accounts an analyst knows to be criminal (their network is followed from them);
    ``labels``: roles for a labelled subset (supervised mode); ``link_options``: see
    :class:`tracer.link.LinkOptions`. ``engine="spark"`` reads the input (CSV or Parquet path(s))
    and runs link inference and the behaviour features on Spark (``spark_master``: a master URL,
    default ``local[*]``); only the links, transfers and per-account features come back, and the
    results are the same as the local engine's.
    """
    stages = _Stages(verbose)
    if engine == "local":
        with stages.stage("load"):
            loaded = source if isinstance(source, LoadResult) else load_transactions(source)
        tx = loaded.transactions
        rows_analyzed = len(tx)
        with stages.stage("link inference"):
            linked = infer_links(tx, **{"progress": verbose, **link_options})
        with stages.stage("features"):
            features = account_features(tx, linked.links, _confident(linked), holding_hours=holding_hours)
    elif engine == "spark":
        from tracer.spark import load_spark, spark_session
        from tracer.spark_link import infer_links_spark

        if not isinstance(source, (str, os.PathLike)):
            raise ValueError("the Spark engine reads its input itself: pass CSV or Parquet path(s)")
        with stages.stage("load"):
            spark_load = load_spark(spark_session(spark_master), source)
            loaded = LoadResult(pd.DataFrame(), spark_load.rejected, spark_load.rows_in, spark_load.source,
                                spark_load.delimiter, dict(spark_load.columns_used))
            rows_analyzed = spark_load.transactions.count()
        with stages.stage("link inference"):
            linked = infer_links_spark(spark_load.transactions, **link_options)
        with stages.stage("features"):
            features = _spark_features(spark_load, linked.links, _confident(linked), holding_hours)
        spark_load.unpersist()
    else:
        raise ValueError(f"engine must be 'local' or 'spark', not {engine!r}")
    transfers = linked.transfers
    with stages.stage("roles"):
        model = RoleModel(min_pass_through=min_pass_through, seeds=tuple(str(s) for s in seeds)).fit(features, linked.links, labels)
    with stages.stage("graph"):
        accounts = model.accounts_.join(features[[c for c in KEY_FEATURES if c in features]], how="left")
        accounts = accounts.reset_index().rename(columns={"index": "client_id"})
        accounts = accounts.sort_values(["score", "client_id"], ascending=[False, True], kind="stable").reset_index(drop=True)
        accounts = accounts[ACCOUNT_COLUMNS]
        graph = _graph(accounts, linked.links)
    role_counts = accounts["role"].value_counts()
    summary = {
        "tracer_version": __version__,
        "source": loaded.source,
        "rows_in": int(loaded.rows_in),
        "rows_analyzed": int(rows_analyzed),
        "engine": engine,
        "rows_rejected": int(loaded.rejected["row_id"].nunique()) if len(loaded.rejected) else 0,
        "accounts": int(len(accounts)),
        "links": int(len(linked.links)),
        "transfers": int(len(transfers)),
        "networks": int(len(model.networks_)),
        "roles": {r: int(role_counts.get(r, 0)) for r in ROLES},
        "timings_seconds": stages.timings,
        "link_stats": linked.stats,
        "options": {**asdict(LinkOptions(**link_options)), "min_pass_through": min_pass_through,
                    "holding_hours": holding_hours, "seeds": [str(s) for s in seeds], "supervised": labels is not None},
    }
    return Analysis(accounts, linked.links, transfers, model.networks_, loaded.rejected, summary, graph)
