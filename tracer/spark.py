"""Spark engine plumbing: a session, loading on Spark, per-account behaviour features on Spark.

The results equal the local engine's by construction: each partition runs load.py's and
features.py's own pandas / numpy kernels.  Spark only numbers the rows (in file order, as
load_transactions does) and brings each account's rows together for what looks across rows
(the duplicate flag, the features).  pyspark is imported inside the functions, so
``import tracer.spark`` works without it.  docs/spark.md explains rows, partitions and clusters.
"""
from __future__ import annotations

import codecs
import math
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Sequence
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tracer.features import behaviour_features
from tracer.load import (
    CSV_SUFFIXES, OPTIONAL_COLUMNS, PARQUET_SUFFIXES, ColumnMapping, LoadError, LoadResult, canonical_frame,
    csv_header, duplicate_flags, encoding_error, read_csv_records, resolve_columns, resolve_mapping,
    validate_table,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SPARK_MISSING", "SparkLoad", "spark_session", "load_spark", "behaviour_features_spark"]

SPARK_MISSING = "the Spark engine needs pyspark: install tracer[spark] (pip install -e '.[spark]'); Java 17+ required"
ROWS_PER_BUCKET = 1_000_000  # rows of one account bucket that one Python worker holds at a time
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
# internal column names, chosen not to clash with input columns
_ROW, _FILE, _BLOCK, _MID, _LINE = "__tracer_row_id", "__tracer_file", "__tracer_block", "__tracer_mid", "__tracer_line"
_LOAD = "__tracer_load"
_ERROR = "(error)"  # `column` of a validation output row that carries a LoadError message instead
_US = 1_000_000  # timestamp_ntz travels as Arrow timestamp[us]
_ARROW = {"long": pa.int64(), "double": pa.float64(), "string": pa.string(), "timestamp_ntz": pa.timestamp("us"),
          "boolean": pa.bool_()}
_TX = [("client_id", "string"), ("amount_cents", "long"), ("timestamp", "timestamp_ntz"), ("direction", "string")]
_REJECTED = [("column", "string"), ("reason", "string"), ("raw", "string")]


def _require_pyspark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise ImportError(SPARK_MISSING) from exc


def spark_session(master: str | None = None, app_name: str = "tracer", conf: dict[str, str] | None = None) -> SparkSession:
    """A SparkSession for tracer: Arrow on, UI off, UTC, workers on this interpreter's Python.

    ``master=None`` means ``local[*]``.  Local and loopback masters bind the driver to 127.0.0.1,
    so nothing listens beyond this machine.  Shuffle partitions: 2 x the default parallelism
    unless ``conf`` sets them.  pyspark allows one SparkContext per process: stop a session
    before asking for one with another master (a RuntimeError says so).
    """
    _require_pyspark()
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    master = master or "local[*]"
    settings = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.eventLog.enabled": "false",
    }
    if master.startswith("local") or urlparse(master).hostname in _LOOPBACK:
        settings.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"})
    settings.update(conf or {})
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if spark.sparkContext.master != master:
        raise RuntimeError(f"a SparkSession with master {spark.sparkContext.master} is active; stop it first")
    if "spark.sql.shuffle.partitions" not in (conf or {}):
        spark.conf.set("spark.sql.shuffle.partitions", str(2 * spark.sparkContext.defaultParallelism))
    return spark


# --------------------------------------------------------------------------------------------------
# loading


@dataclass
class SparkLoad:
    """load_spark's result: canonical transactions as a lazy Spark DataFrame, the rest collected.

    ``transactions`` has load.py's canonical columns in no particular order (``timestamp`` is
    timestamp_ntz, ``client_id`` and ``direction`` strings); ``buckets`` is the number of account
    buckets sized for this input (pass it on to behaviour_features_spark).  The input records stay
    cached (their row numbers depend on how they were split) until ``unpersist()``.
    """

    transactions: DataFrame
    records: DataFrame
    rejected: pd.DataFrame
    rows_in: int
    source: str
    buckets: int
    delimiter: str | None = None
    columns_used: dict[str, str] = field(default_factory=dict)

    def unpersist(self) -> None:
        """Release the cached input records; ``transactions`` must not be used afterwards."""
        self.records.unpersist()

    def to_load_result(self) -> LoadResult:
        """Collect to the driver: equal to load_transactions' result (for small data and tests)."""
        t = _sorted_by_row(self.transactions.toArrow())
        tx = canonical_frame(
            t.column("row_id").to_numpy(), t.column("client_id").combine_chunks(), t.column("amount_cents").to_numpy(),
            _seconds(t), {r: t.column(r).combine_chunks() for r in OPTIONAL_COLUMNS if r in t.column_names},
            t.column("duplicate").to_numpy(),
        )
        return LoadResult(tx, self.rejected, self.rows_in, self.source, self.delimiter, dict(self.columns_used))


def load_spark(
    spark: SparkSession, path: str | os.PathLike | Sequence[str | os.PathLike],
    mapping: ColumnMapping | None = None, *, fmt: str | None = None, **mapping_overrides: Any,
) -> SparkLoad:
    """Load CSV or Parquet path(s) that Spark can read (local, HDFS, S3, ...) as load_transactions does.

    ``fmt`` is ``"csv"`` or ``"parquet"``; None decides as load_transactions does (a directory is
    Parquet parts, else the suffix, else the Parquet magic number).  Several paths or a directory
    are one input whose ``row_id`` counts across files in sorted path order; every CSV file starts
    with the same header line.  Rejected rows are collected here (one Spark job); transactions stay
    lazy.  Raises LoadError when the input cannot be used, including CSV fields with line breaks,
    which the Spark loader cannot number as load_transactions does.
    """
    _require_pyspark()
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    mapping = resolve_mapping(mapping, mapping_overrides)
    paths = [os.fspath(path)] if isinstance(path, (str, os.PathLike)) else [os.fspath(p) for p in path]
    name = ", ".join(paths)
    fmt = fmt or _format(spark, paths)
    try:
        if fmt == "csv":
            if codecs.lookup(mapping.encoding).name.startswith(("utf-16", "utf-32")):
                raise LoadError(f"{name}: the Spark loader splits lines as bytes; {mapping.encoding} is not supported")
            raw = spark.read.text(paths)
            data = [F.col("value").cast("binary").alias(_LINE)]
        elif fmt == "parquet":
            raw = spark.read.option("recursiveFileLookup", "true").parquet(*paths)
            data = [_column(c) for c in raw.columns]
        else:
            raise LoadError(f"{name}: unknown format {fmt!r}; use 'csv' or 'parquet'")
    except AnalysisException as exc:
        raise LoadError(f"{name}: cannot read ({' '.join(str(exc).split())[:300]})") from None
    # cached: the split layout (and so every row's _MID) stays the one the row numbers were counted on,
    # even if settings or the executors change before the lazy transactions are computed.  The load's
    # own token keeps two loads of one file from sharing (and unpersisting) one cache entry.
    tagged = raw.select(*data, F.col("_metadata.file_path").alias(_FILE),
                        F.col("_metadata.file_block_start").alias(_BLOCK),
                        F.monotonically_increasing_id().alias(_MID), F.lit(uuid.uuid4().hex).alias(_LOAD)).persist()
    try:
        return _validated_load(spark, tagged, fmt, raw.columns, name, mapping)
    except BaseException:
        tagged.unpersist()
        raise


def _validated_load(spark: SparkSession, tagged: DataFrame, fmt: str, columns: list[str], name: str,
                    mapping: ColumnMapping) -> SparkLoad:
    """Number, validate and flag the tagged input records (load_spark's work after reading)."""
    from pyspark.sql import functions as F

    numbered, rows_in, headers = _number_rows(spark, tagged, header=fmt == "csv")

    if fmt == "csv":
        names, delimiter = _csv_names(headers, name, mapping)
        cols = resolve_columns(names, mapping, name, delimiter)
        validate = _csv_validator(names, delimiter, mapping, cols, name)
        data = [F.col(_LINE)]
    else:
        names, delimiter = columns, None
        cols = resolve_columns(names, mapping, name, None)
        validate = _parquet_validator(names, mapping, cols)
        data = [_column(c) for c in names]
    optional = [(r, "string") for r in OPTIONAL_COLUMNS if r in cols]
    fields = [(_ROW, "long"), *_TX, *optional, *_REJECTED]
    arrow = pa.schema([(n, _ARROW[t]) for n, t in fields])
    validated = numbered.select(*data, F.col(_ROW)).mapInArrow(
        lambda batches: (out for b in batches for out in _conform(validate(b), arrow).to_batches()), _ddl(fields))

    found = validated.where(F.col("column").isNotNull()).select(_ROW, "column", "reason", "raw").toArrow()
    found = _sorted_by_row(found.rename_columns(["row_id", "column", "reason", "raw"]))
    errors = pc.equal(found.column("column"), _ERROR)
    if pc.any(errors).as_py():
        raise LoadError(found.filter(errors).column("reason")[0].as_py())
    rejected = pd.DataFrame({"row_id": found.column("row_id").to_numpy()} | {
        c: pd.array(found.column(c).to_numpy(), dtype="str") for c in ("column", "reason", "raw")})

    buckets = max(int(spark.conf.get("spark.sql.shuffle.partitions")), math.ceil(rows_in / ROWS_PER_BUCKET))
    kept = validated.where(F.col("column").isNull()).select(
        F.col(_ROW).alias("row_id"), *(n for n, _ in _TX), *(n for n, _ in optional))
    canonical = [("row_id", "long"), *_TX, ("duplicate", "boolean"), *optional]
    transactions = _by_account_bucket(kept, _flag_duplicates, _ddl(canonical), buckets)
    return SparkLoad(transactions, tagged, rejected, rows_in, name, buckets, delimiter, cols)


def _column(name: str):
    """An input column by its exact name (backquoted: names may hold dots or spaces)."""
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def _format(spark: SparkSession, paths: list[str]) -> str:
    """csv or parquet, decided as load_transactions decides, through Spark's Hadoop file system."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    found = set()
    for p in paths:
        hpath = jvm.org.apache.hadoop.fs.Path(p)
        fs = hpath.getFileSystem(conf)
        if not fs.exists(hpath):
            raise LoadError(f"{p}: file not found")
        suffix = PurePosixPath(urlparse(p).path).suffix.lower()
        if fs.getFileStatus(hpath).isDirectory() or suffix in PARQUET_SUFFIXES:
            found.add("parquet")
        elif suffix in CSV_SUFFIXES:
            found.add("csv")
        else:  # unknown suffix: sniff the Parquet magic number
            stream = fs.open(hpath)
            try:
                magic = bytes(stream.read() & 0xFF for _ in range(4))
            finally:
                stream.close()
            found.add("parquet" if magic == b"PAR1" else "csv")
    if len(found) > 1:
        raise LoadError(f"{', '.join(paths)}: mixes CSV and Parquet; load them separately")
    return found.pop()


def _path_key(uri: str) -> tuple[str, ...]:
    """Sort key of a file URI as load.py sorts Paths: by path components."""
    return PurePosixPath(unquote(urlparse(uri).path)).parts


def _number_rows(spark: SparkSession, tagged: DataFrame, header: bool) -> tuple[DataFrame, int, dict[str, bytes]]:
    """Give every record its row_id in file order -> (records with _ROW, rows_in, header line per file).

    A file split (file, block start) is read in order into one partition, so a row's place in its
    split is its monotonically_increasing_id minus the split's smallest; splits sorted by (path,
    start) then give each split's first row_id.  CSV header lines get row_id -1 and are dropped.
    """
    from pyspark.sql import functions as F

    aggs = [F.count(F.lit(1)).alias("n"), F.min(_MID).alias("m0")]
    if header:
        aggs.append(F.min_by(_LINE, _MID).alias("first"))
    blocks = sorted(tagged.groupBy(_FILE, _BLOCK).agg(*aggs).collect(), key=lambda b: (_path_key(b[_FILE]), b[_BLOCK]))
    starts, headers, offset = [], {}, 0
    for b in blocks:
        skip = int(header and b[_BLOCK] == 0)
        if skip:
            headers[b[_FILE]] = bytes(b["first"])
        starts.append((b[_FILE], b[_BLOCK], offset - skip - b["m0"]))
        offset += b["n"] - skip
    bases = spark.createDataFrame(starts, f"{_FILE} string, {_BLOCK} long, __tracer_base long")
    numbered = (tagged.join(F.broadcast(bases), [_FILE, _BLOCK])
                .withColumn(_ROW, F.col("__tracer_base") + F.col(_MID)).where(F.col(_ROW) >= 0))
    return numbered, offset, headers


def _csv_names(headers: dict[str, bytes], name: str, mapping: ColumnMapping) -> tuple[list[str], str]:
    """Column names and delimiter from the files' header lines, which must all be the same."""
    if not headers:
        raise LoadError(f"{name}: file is empty (no header line)")
    if len(set(headers.values())) > 1:
        raise LoadError(f"{name}: the CSV files have different header lines")
    line = next(iter(headers.values()))
    try:
        text = line.decode(mapping.encoding)
    except UnicodeDecodeError as exc:
        raise encoding_error(name, mapping.encoding, line[exc.start:exc.start + 1], 1) from None
    return csv_header(text.lstrip("\ufeff"), name, mapping)


def _ddl(fields: list[tuple[str, str]]) -> str:
    return ", ".join(f"`{n}` {t}" for n, t in fields)


def _conform(t: pa.Table, schema: pa.Schema) -> pa.Table:
    """``t`` with exactly ``schema``'s columns, in order and types; missing ones are nulls."""
    columns = [t.column(f.name) if f.name in t.column_names else pa.nulls(len(t), f.type) for f in schema]
    return pa.table(columns, names=schema.names).cast(schema)


def _csv_validator(names: list[str], delimiter: str, mapping: ColumnMapping, cols: dict[str, str], name: str
                   ) -> Callable[[pa.RecordBatch], pa.Table]:
    """Per batch of (line bytes, row_id): parse with load.py's CSV reader, then validate_table."""

    def validate(batch: pa.RecordBatch) -> pa.Table:
        lines, row_ids = batch.column(0), batch.column(1).to_numpy()
        where = f"lines {row_ids.min() + 2}..{row_ids.max() + 2}" if len(row_ids) else "no lines"
        joined = _joined(lines)
        try:
            table, malformed = read_csv_records(pa.BufferReader(joined), names, delimiter, mapping,
                                                use_threads=False, skip_header=False)
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            return _error(row_ids, _csv_error(exc, joined, row_ids, name, mapping, where))
        # every line one record, plus the blank sentinel line _joined appends: else a quoted field
        # ran over a line break (the sentinel is swallowed by an open quote on the last line)
        if table.num_rows + len(malformed) != len(lines) + 1 or any(m[0] > len(lines) for m in malformed):
            return _error(row_ids, f"{name}: a quoted field spans a line break ({where}); the Spark loader numbers "
                                   f"rows line by line: use the local engine, or export without line breaks in fields")
        bad = np.array([m[0] - 1 for m in malformed], dtype=np.int64)
        good = np.ones(len(lines), dtype=bool)
        good[bad] = False
        tx, rejected = validate_table(table.slice(0, len(lines) - len(bad)), row_ids[good], mapping, cols,
                                      [(row_ids[m[0] - 1], m[1], m[2]) for m in malformed], delimiter)
        return _validated(tx, rejected, cols)

    return validate


def _joined(lines: pa.Array) -> bytes:
    """The lines as one CSV text: each line and a final blank sentinel line end with a newline."""
    n = len(lines)
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset: lines.offset + n + 1]
    data = lines.buffers()[2]
    body = np.frombuffer(data, dtype=np.uint8)[offsets[0]: offsets[-1]] if data is not None else np.zeros(0, np.uint8)
    return np.insert(body, offsets[1:] - offsets[0], ord("\n")).tobytes() + b"\n"


def _csv_error(exc: Exception, joined: bytes, row_ids: np.ndarray, name: str, mapping: ColumnMapping, where: str) -> str:
    """Message of a batch pyarrow could not parse: the undecodable byte's line, else the parser's words."""
    try:
        joined.decode(mapping.encoding)
    except UnicodeDecodeError as bad:
        line = row_ids[min(joined[:bad.start].count(b"\n"), len(row_ids) - 1)] + 2
        return str(encoding_error(name, mapping.encoding, joined[bad.start:bad.start + 1], int(line)))
    return f"{name}: cannot parse CSV ({where}: {' '.join(str(exc).split())})"


def _parquet_validator(names: list[str], mapping: ColumnMapping, cols: dict[str, str]) -> Callable[[pa.RecordBatch], pa.Table]:
    """Per batch of (input columns..., row_id): validate_table on the input columns."""

    def validate(batch: pa.RecordBatch) -> pa.Table:
        table = pa.Table.from_batches([batch]).select(names)
        tx, rejected = validate_table(table, batch.column(len(names)).to_numpy(), mapping, cols, [], ",")
        return _validated(tx, rejected, cols)

    return validate


def _validated(tx: pd.DataFrame, rejected: pd.DataFrame, cols: dict[str, str]) -> pa.Table:
    """validate_table's two frames as one Arrow table of the validation output schema."""
    optional = [r for r in OPTIONAL_COLUMNS if r in cols]
    accepted = pa.table({
        _ROW: tx["row_id"].to_numpy(), "client_id": pa.array(tx["client_id"]).cast(pa.string()),
        "amount_cents": tx["amount_cents"].to_numpy(),
        "timestamp": pa.array(tx["timestamp"].to_numpy()).cast(pa.timestamp("us")),
        "direction": pa.array(tx["direction"]).cast(pa.string()),
        **{r: pa.array(tx[r]).cast(pa.string()) for r in optional},
    })
    refused = pa.table({_ROW: rejected["row_id"].to_numpy(),
                        **{c: pa.array(rejected[c]).cast(pa.string()) for c in ("column", "reason", "raw")}})
    return pa.concat_tables([accepted, refused], promote_options="default")


def _error(row_ids: np.ndarray, message: str) -> pa.Table:
    """A validation output of one row carrying a LoadError message (raised on the driver)."""
    return pa.table({_ROW: pa.array([int(row_ids.min())], pa.int64()), "column": [_ERROR], "reason": [message]})


def _sorted_by_row(t: pa.Table, column: str = "row_id") -> pa.Table:
    return t.take(pc.sort_indices(t, [(column, "ascending")]))


def _seconds(t: pa.Table) -> np.ndarray:
    """A timestamp_ntz column as int64 seconds."""
    return t.column("timestamp").cast(pa.int64()).to_numpy() // _US


# --------------------------------------------------------------------------------------------------
# per-account work: every account's rows together, a hash bucket of accounts per Python call


def _by_account_bucket(sdf: DataFrame, fn: Callable[[pa.Table], pa.Table], schema: str, buckets: int) -> DataFrame:
    """Run ``fn`` on the rows of each bucket of accounts (all of an account's rows in one call)."""
    from pyspark.sql import functions as F

    return sdf.groupBy(F.pmod(F.xxhash64("client_id"), F.lit(buckets))).applyInArrow(fn, schema)


def _flag_duplicates(t: pa.Table) -> pa.Table:
    """load.py's duplicate flag on a bucket of accounts, rows in row_id order."""
    t = _sorted_by_row(t)
    codes = pc.dictionary_encode(t.column("client_id").combine_chunks()).indices.to_numpy(zero_copy_only=False)
    flags = duplicate_flags(codes, t.column("amount_cents").to_numpy(), _seconds(t))
    return t.add_column(5, "duplicate", pa.array(flags, pa.bool_()))


def _behaviour_kernel(schema: pa.Schema) -> Callable[[pa.Table], pa.Table]:
    """features.behaviour_features on a bucket of accounts, plus each account's first row_id."""

    def kernel(t: pa.Table) -> pa.Table:  # annotated: pyspark infers the Arrow API from the hints
        return _conform(pa.Table.from_pandas(_behaviour_bucket(t).reset_index(), preserve_index=False), schema)

    return kernel


def _behaviour_bucket(t: pa.Table) -> pd.DataFrame:
    t = _sorted_by_row(t)
    row_ids = t.column("row_id").to_numpy()
    tx = canonical_frame(row_ids, t.column("client_id").combine_chunks(), t.column("amount_cents").to_numpy(),
                         _seconds(t), {}, np.zeros(len(row_ids), bool))
    f = behaviour_features(tx)
    # categories are in order of first appearance, so the first position of each code is its first row
    f.insert(0, "first_row", row_ids[np.unique(tx["client_id"].cat.codes.to_numpy(), return_index=True)[1]])
    return f


def _behaviour_template() -> pd.DataFrame:
    """behaviour_features of no rows: the columns and dtypes the Spark result must have."""
    empty = canonical_frame(np.zeros(0, np.int64), pa.array([], pa.string()), np.zeros(0, np.int64),
                            np.zeros(0, np.int64), {})
    return behaviour_features(empty)


def behaviour_features_spark(sdf: DataFrame, buckets: int | None = None) -> pd.DataFrame:
    """features.behaviour_features of a SparkLoad.transactions DataFrame, computed on Spark.

    Equal to ``behaviour_features(load.to_load_result().transactions)``: same index (accounts in
    order of their first row), columns, dtypes and values.  ``buckets`` (default: the shuffle
    partitions; SparkLoad.buckets is sized for its input) sets how many account groups are formed.
    Needs the columns row_id, client_id, amount_cents, timestamp.  One row per account is collected.
    """
    _require_pyspark()
    template = _behaviour_template()
    types = {"int64": "long", "float64": "double"}
    fields = [("client_id", "string"), ("first_row", "long"), *((c, types[str(d)]) for c, d in template.dtypes.items())]
    kernel = _behaviour_kernel(pa.schema([(n, _ARROW[t]) for n, t in fields]))
    buckets = buckets or int(sdf.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    rows = sdf.select("row_id", "client_id", "amount_cents", "timestamp")
    out = _sorted_by_row(_by_account_bucket(rows, kernel, _ddl(fields), buckets).toArrow(), "first_row")
    f = pd.DataFrame({c: out.column(c).to_numpy() for c in template.columns},
                     index=pd.Index(out.column("client_id").to_numpy(zero_copy_only=False), dtype="str", name="client_id"))
    return f.astype(template.dtypes.to_dict())
