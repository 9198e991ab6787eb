"""Link inference on Spark: the local engine's block functions, run partition by partition.

A partition is one time block of an orientation (its own span plus the halo, see
:class:`tracer.link.BlockGrid`; pass 1's blocks are several of pass 2's merged, see
``LinkOptions.support_days``): every row is copied to the blocks that see it and
``groupBy(block).applyInPandas`` runs :func:`tracer.link.block_pair_sums` (pass 1) and
:func:`tracer.link.block_transfers` (pass 2) on each. Pass 1's pair sums are added up on Spark
(grouped by pair, :meth:`tracer.link.LinkEngine.repeated_pairs`). Only small things come back to the
driver: per-account counts, the rates (distinct amounts with their counts), the strongest
``support_pairs`` repeated pairs and the transfers each block chose; candidates never leave their
partition. The driver settles the blocks' transfers, scores the pairs and computes q-values with
the same code as the local engine, and runs the second stage there on the few accounts' rows it
collects (``account_rows``), so both engines give the same transfers and links
(tests/test_spark_link.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tracer.link import (
    BlockGrid, Counts, LinkOptions, LinkResult, Rates, _Candidates, _base_rows, _combo_amounts,
    _combo_parts, _Orientation, _Rows, Support, block_grid, block_pair_sums, block_transfers, infer_from_runs,
    make_block, make_engine, orientation,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

_ROWS = "row_id long, code int, amount long, t long, deposit boolean"
_SUMS = "block long, pair long, e double, n long"
_SUPPORT = "pair long, score double"
_MEMBERS = [f"{side}{k}" for side in "wd" for k in range(3)]
_TRANSFERS = ("block long, seq long, kind int, " + ", ".join(f"{m} long" for m in _MEMBERS)
              + ", source int, target int, amount_out long, amount_in long, lag long, t_out long,"
                " evidence double, weight double")
_COUNT = -1  # ``pair`` / ``kind`` of the one row per block that carries its candidate count


def infer_links_spark(transactions: "DataFrame", **options) -> LinkResult:
    """:func:`tracer.infer_links` on a Spark DataFrame of canonical transactions
    (``tracer.spark.load_spark(...).transactions``): same options, same result."""
    opts = LinkOptions(**options)
    return infer_from_runs(SparkRuns(transactions, opts), opts)


class SparkRuns:
    """Orientation runs on Spark, with the interface of :class:`tracer.link.LocalRuns`."""

    def __init__(self, sdf: "DataFrame", opts: LinkOptions):
        from pyspark.sql import functions as F

        self.spark = sdf.sparkSession
        seconds = F.unix_seconds(F.col("timestamp").cast("timestamp"))
        base = sdf.select("row_id", "client_id", "amount_cents", seconds.alias("s"),
                          *(["counterparty"] if "counterparty" in sdf.columns else []))
        stated = (F.col("counterparty").isNotNull() & (F.trim(F.col("counterparty")) != "")) if "counterparty" in sdf.columns else F.lit(False)
        base = base.withColumn("stated", stated).cache()
        # account codes as the local engine numbers them: in order of each account's first row
        first = base.groupBy("client_id").agg(F.min("row_id").alias("first_row")).toPandas().sort_values("first_row")
        self.accounts = first["client_id"].astype(str).to_numpy(dtype=object)
        codes = self.spark.createDataFrame(pd.DataFrame({"client_id": first["client_id"].to_numpy(),
                                                         "code": np.arange(len(first), dtype=np.int32)}))
        bounds = base.agg(F.min("s"), F.max("s")).first()
        self.t0, self.t1 = (int(bounds[0]), int(bounds[1])) if bounds[0] is not None else (0, 0)
        self.stated = self._stated_rows(sdf, stated)
        self.rows = (base.filter(~F.col("stated") & (F.col("amount_cents") != 0)).join(F.broadcast(codes), "client_id")
                     .select("row_id", "code", F.abs("amount_cents").alias("amount"), "s",
                             (F.col("amount_cents") > 0).alias("deposit")).cache())
        per_account = self.rows.groupBy("code", "deposit").count().toPandas()
        n = len(self.accounts)
        counts = {flag: np.bincount(g["code"].to_numpy(), weights=g["count"].to_numpy(), minlength=n).astype(np.int64)
                  for flag, g in per_account.groupby("deposit")}
        w_count, d_count = counts.get(False, np.zeros(n, np.int64)), counts.get(True, np.zeros(n, np.int64))
        self.n_withdrawals, self.n_deposits = int(w_count.sum()), int(d_count.sum())
        self.engine = make_engine(opts, w_count, d_count, self.t0, self.t1)
        base.unpersist()

    def _stated_rows(self, sdf: "DataFrame", stated) -> pd.DataFrame:
        """Rows named by a counterparty column, collected (they need no inference)."""
        if "counterparty" not in sdf.columns:
            return pd.DataFrame(columns=["row_id", "client_id", "amount_cents", "timestamp", "counterparty"])
        rows = sdf.filter(stated).select("row_id", "client_id", "amount_cents", "timestamp", "counterparty").toPandas()
        rows["timestamp"] = pd.to_datetime(rows["timestamp"]).astype("datetime64[s]")
        return rows.sort_values("row_id").reset_index(drop=True)

    def run_pair(self) -> tuple[_Orientation, _Orientation]:
        """The forward and the mirrored run (one after the other: Spark runs each in parallel),
        both with the forward run's population rates (as :meth:`tracer.link.LocalRuns.run_pair`)."""
        forward = self.run(mirror=False)
        return forward, self.run(mirror=True, rates=forward.rates)

    def account_rows(self, codes: np.ndarray) -> pd.DataFrame:
        """As :meth:`tracer.link.LocalRuns.account_rows`: a few accounts' rows, collected."""
        from pyspark.sql import functions as F

        got = self.rows.filter(F.col("code").isin([int(c) for c in codes])).toPandas()
        return got.sort_values("row_id", kind="stable").reset_index(drop=True)

    def run(self, mirror: bool, rates: Rates | None = None) -> _Orientation:
        """One orientation, with ``rates`` (default: computed from its rows)."""
        from pyspark.sql import functions as F

        t = (F.lit(self.t1) - F.col("s")) if mirror else (F.col("s") - F.lit(self.t0))
        rows = self.rows.select("row_id", "code", "amount", t.alias("t"), "deposit").cache()
        try:
            return self._run(rows, rates)
        finally:
            rows.unpersist()

    def _run(self, rows: "DataFrame", rates: Rates | None) -> _Orientation:
        from pyspark.sql import functions as F

        engine, sc = self.engine, self.spark.sparkContext
        rates = self._rates(rows) if rates is None else rates
        w_stats = rows.filter(~F.col("deposit")).agg(F.count("*"), F.min("t"), F.max("t")).first()
        n_w, t_min, t_max = int(w_stats[0]), int(w_stats[1] or 0), int(w_stats[2] or 0)

        def probe_rows(start: int, width: int) -> tuple[_Rows, _Rows]:
            got = rows.filter((F.col("t") >= start) & (F.col("t") < start + width + 2 * engine.reach)).toPandas()
            got = got.sort_values("row_id")
            w = got[~got["deposit"] & (got["t"] < start + width)]
            d = got[got["deposit"]]
            return _side(w), _side(d)

        grid = block_grid(engine, rates, n_w, t_min, t_max, probe_rows)
        single = n_w == 0 or t_max < grid.origin + grid.length
        support_grid = engine.support_grid(grid, n_w + self.n_deposits, t_min, t_max)
        shared = sc.broadcast((engine, rates, grid, support_grid))
        support, n_candidates = (None, None) if single else self._pass_one(rows, shared, support_grid)
        support = sc.broadcast(support)

        def pass_two(pdf: pd.DataFrame) -> pd.DataFrame:
            eng, rt, g, _ = shared.value
            c, e, weight, n = block_transfers(eng, rt, _block(pdf, g), support.value)
            return _numbered(_transfer_rows(c, e, weight, n), pdf)

        got = _assign_blocks(rows, grid).groupBy("block").applyInPandas(pass_two, _TRANSFERS).toPandas().sort_values(["block", "seq"])
        parts = [_parts_of(g) for _, g in got.groupby("block", sort=True)]
        shared.unpersist()
        support.unpersist()
        return orientation(engine, parts, n_candidates, rates)

    def _pass_one(self, rows: "DataFrame", shared, support_grid: BlockGrid) -> tuple[Support, int]:
        """Pass 1 on Spark: each block's pair sums (:func:`tracer.link.block_pair_sums`), added up
        per pair in block order (grouped by pair code), the strongest ``support_pairs`` of the
        repeated ones collected; and the blocks' candidate count."""
        from pyspark.sql import functions as F

        def pass_one(pdf: pd.DataFrame) -> pd.DataFrame:
            eng, rt, _, g = shared.value
            sums, n = block_pair_sums(eng, rt, _block(pdf, g))
            return pd.DataFrame({"block": int(pdf["block"].iloc[0]), "pair": np.append(sums.pair, _COUNT),
                                 "e": np.append(sums.e, 0.0), "n": np.append(sums.n.astype(np.int64), n)})

        def add_up(pdf: pd.DataFrame) -> pd.DataFrame:
            pdf = pdf.sort_values("block", kind="stable")  # a pair is once per block: its sums in block order
            pair, score = shared.value[0].repeated_pairs(pdf["pair"].to_numpy(np.int64), pdf["e"].to_numpy(), pdf["n"].to_numpy())
            return pd.DataFrame({"pair": pair, "score": score})

        sums = _assign_blocks(rows, support_grid).groupBy("block").applyInPandas(pass_one, _SUMS).cache()
        try:
            n_candidates = int(sums.filter(F.col("pair") == _COUNT).agg(F.sum("n")).first()[0] or 0)
            buckets = int(self.spark.conf.get("spark.sql.shuffle.partitions"))
            top = (sums.filter(F.col("pair") != _COUNT).groupBy(F.pmod(F.col("pair"), F.lit(buckets)))
                   .applyInPandas(add_up, _SUPPORT).orderBy(F.desc("score"), F.asc("pair"))
                   .limit(self.engine.opts.support_pairs).toPandas().sort_values("pair"))
        finally:
            sums.unpersist()
        return Support(top["pair"].to_numpy(np.int64), top["score"].to_numpy(np.float64)), n_candidates

    def _rates(self, rows: "DataFrame") -> Rates:
        """The same population counts as ``LinkEngine.rates``, aggregated on Spark: deposit amounts
        directly, split sums and merge counts from each account's rows (combos stay in one account)."""
        from pyspark.sql import functions as F

        o = self.engine.opts
        span, neighbours = int(o.combo_span_hours * 3600), o.combo_neighbours
        deposits = rows.filter("deposit").groupBy("amount").count().toPandas()

        def combos(pdf: pd.DataFrame) -> pd.DataFrame:
            pdf = pdf.sort_values(["code", "t", "row_id"], kind="stable")
            dep = pdf["deposit"].to_numpy()
            amounts = _combo_amounts(_side(pdf[dep]), span, neighbours) if o.splits else np.empty(0, np.int64)
            n_merges = sum(len(c[1]) for c in _combo_parts(_side(pdf[~dep]), span, neighbours)) if o.merges else 0
            return pd.DataFrame({"amount": np.append(amounts, -1), "count": np.append(np.ones(len(amounts), np.int64), n_merges)})

        buckets = int(self.spark.conf.get("spark.sql.shuffle.partitions"))
        sums = (rows.groupBy(F.pmod(F.col("code"), F.lit(buckets))).applyInPandas(combos, "amount long, count long")
                .groupBy("amount").agg(F.sum("count").alias("count")).toPandas())
        merges = sums["amount"].to_numpy() == -1
        n_merges = int(sums.loc[merges, "count"].sum())
        n_w = rows.filter(~F.col("deposit")).count()
        return Rates(Counts.from_counts(deposits["amount"].to_numpy(), deposits["count"].to_numpy()),
                     Counts.from_counts(sums.loc[~merges, "amount"].to_numpy(), sums.loc[~merges, "count"].to_numpy()),
                     n_merges / max(n_w, 1))


def _side(pdf: pd.DataFrame) -> _Rows:
    return _base_rows(pdf["code"].to_numpy(np.int32), pdf["amount"].to_numpy(np.int64), pdf["t"].to_numpy(np.int64))


def _assign_blocks(rows: "DataFrame", grid: BlockGrid) -> "DataFrame":
    """Each row once per block that sees it: block k sees withdrawals in [start_k, end_k + reach)
    and deposits in [start_k, end_k + 2 * reach) (as the local ``_BlockSource`` selects them), so a
    row at time t goes to blocks floor((t - extra - origin) / length) .. floor((t - origin) / length)."""
    from pyspark.sql import functions as F

    extra = F.when(F.col("deposit"), F.lit(2 * grid.reach)).otherwise(F.lit(grid.reach))
    first = F.greatest(F.floor((F.col("t") - extra - grid.origin) / grid.length), F.lit(0)).cast("long")
    last = F.floor((F.col("t") - grid.origin) / grid.length).cast("long")
    return (rows.withColumn("first", first).withColumn("last", last).filter(F.col("last") >= F.col("first"))
            .withColumn("block", F.explode(F.sequence("first", "last"))).drop("first", "last"))


def _block(pdf: pd.DataFrame, grid: BlockGrid):
    """A partition's rows as the local engine's block: time order, ties in input row order."""
    pdf = pdf.sort_values(["t", "row_id"], kind="stable")
    k = int(pdf["block"].iloc[0])
    dep = pdf["deposit"].to_numpy()
    w, d = pdf[~dep], pdf[dep]
    own = w["t"].to_numpy() < grid.origin + (k + 1) * grid.length
    return make_block(_side(w), _side(d), w["row_id"].to_numpy(np.int64), d["row_id"].to_numpy(np.int64), own)


def _numbered(out: pd.DataFrame, pdf: pd.DataFrame) -> pd.DataFrame:
    """Tag a partition's output with its block and row order (the driver restores both)."""
    out.insert(0, "seq", np.arange(len(out), dtype=np.int64))
    out.insert(0, "block", np.full(len(out), int(pdf["block"].iloc[0]) if len(pdf) else 0, dtype=np.int64))
    return out


def _transfer_rows(c: _Candidates, e: np.ndarray, weight: np.ndarray, n_candidates: int) -> pd.DataFrame:
    """A block's chosen transfers as rows, then one row carrying its candidate count."""
    cols = {"kind": c.kind.astype(np.int32)}
    cols.update({f"w{k}": c.w_members[:, k].astype(np.int64) for k in range(3)})
    cols.update({f"d{k}": c.d_members[:, k].astype(np.int64) for k in range(3)})
    cols.update(source=c.source.astype(np.int32), target=c.target.astype(np.int32), amount_out=c.amount_out,
                amount_in=c.amount_in, lag=c.lag, t_out=c.t_out, evidence=e, weight=weight)
    out = pd.DataFrame(cols)
    count = {col: [0] for col in out.columns}
    count.update(kind=[_COUNT], w0=[n_candidates], evidence=[0.0], weight=[0.0])
    return pd.concat([out, pd.DataFrame(count).astype(out.dtypes.to_dict())], ignore_index=True)


def _parts_of(g: pd.DataFrame) -> tuple[_Candidates, np.ndarray, np.ndarray, int]:
    """One block's rows from :func:`_transfer_rows` back as block_transfers' result."""
    is_count = g["kind"].to_numpy() == _COUNT
    n = int(g.loc[is_count, "w0"].sum())
    g = g[~is_count]
    c = _Candidates(
        kind=g["kind"].to_numpy(np.int8),
        w_members=g[["w0", "w1", "w2"]].to_numpy(np.int64), d_members=g[["d0", "d1", "d2"]].to_numpy(np.int64),
        source=g["source"].to_numpy(np.int32), target=g["target"].to_numpy(np.int32),
        amount_out=g["amount_out"].to_numpy(np.int64), amount_in=g["amount_in"].to_numpy(np.int64),
        lag=g["lag"].to_numpy(np.int64), t_out=g["t_out"].to_numpy(np.int64),
    )
    return c, g["evidence"].to_numpy(np.float64), g["weight"].to_numpy(np.float64), n
