"""Load stage: bank exports (CSV / Parquet / DataFrame) -> canonical transactions + rejected rows.

Every value is judged by its text (nothing is coerced silently by a type-inferring reader; typed
numeric Parquet columns skip the text only where the result is provably the same), column by column
with vectorized ``pyarrow.compute`` / numpy operations.  Every input row ends up either in
``LoadResult.transactions`` or, exactly once, in ``LoadResult.rejected`` with the first check it
failed.  Invariant: ``rows_in == len(transactions) + rejected.row_id.nunique()``.

Rows are checked in batches (Parquet: part by part, row group by row group, reading only the mapped
columns; CSV / DataFrame: slices of the table) and each batch is reduced at once to compact columns
of the rows that pass; client ids, categories and duplicate flags are merged at the end, so the
result equals one validation of the whole table while memory stays near the output's ~30 bytes a
row.

See docs/loading.md for the column mapping, the canonical columns and the rejection reasons.
"""
from __future__ import annotations

import codecs
import dataclasses
import difflib
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tracer._pages import small_pages

__all__ = [
    "LoadError",
    "MappingError",
    "ColumnMapping",
    "LoadResult",
    "load_transactions",
    "REJECTION_REASONS",
    "CANONICAL_COLUMNS",
]

CANONICAL_COLUMNS = ("row_id", "client_id", "amount_cents", "timestamp", "direction", "duplicate")
OPTIONAL_COLUMNS = ("txn_id", "channel", "counterparty")
ROW = "(row)"  # `column` value for rejections that concern the whole line

# reason -> explanation.  `reason` in LoadResult.rejected is always one of these keys.
REJECTION_REASONS: dict[str, str] = {
    "too few fields": "the line has fewer fields than the header (e.g. a truncated last line)",
    "too many fields": "the line has more fields than the header (often an unquoted delimiter)",
    "blank line": "an empty line inside the data",
    "empty client_id": "the account identifier is empty or only whitespace",
    "missing amount": "the amount field is empty (or null / NA / none)",
    "non-numeric amount": "not a plain decimal number (letters, currency signs, exponents, stray separators)",
    "amount is NaN": "the amount is the text NaN",
    "amount is infinite": "the amount is inf / infinity",
    "more than 2 decimal places": "a sub-cent amount such as 1.005 (trailing zeros like 1.500 are accepted)",
    "amount too large": "more than 15 integer digits (would not fit int64 cents safely)",
    "zero amount": "the amount is zero: neither a deposit nor a withdrawal",
    "debit and credit both filled": "debit/credit mapping: both columns carry a non-zero value",
    "neither debit nor credit filled": "debit/credit mapping: both columns are empty or zero",
    "negative credit": "debit/credit mapping: a negative value in the credit column",
    "unknown direction value": "direction mapping: the value is in neither deposit_values nor withdrawal_values",
    "sign contradicts direction": "direction mapping: a negative amount on a deposit row",
    "unparsable date": "the date does not match date_format or is not a real calendar date",
    "unparsable time": "the time does not match time_format or is out of range",
    "unparsable datetime": "the datetime does not match datetime_format or is not a real instant",
}

DEFAULT_DEPOSIT_VALUES = frozenset({"credit", "deposit", "cr", "in", "+", "c"})
DEFAULT_WITHDRAWAL_VALUES = frozenset({"debit", "withdrawal", "dr", "out", "-", "d"})
_DELIMITER_CANDIDATES = (",", ";", "\t", "|")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".gz", ".bz2", ".zst", ".lz4")
_ISO_DATE = "%Y-%m-%d"
_ISO_TIME = "%H:%M:%S"
_ISO_DATETIME = "%Y-%m-%d %H:%M:%S"
_MAX_INT_DIGITS = 15
BATCH_ROWS = 1 << 20  # rows validated at a time (Parquet: at most one row group)


class LoadError(Exception):
    """The input cannot be used at all.  The message is one readable line naming the file."""


class MappingError(LoadError, ValueError):
    """The column mapping itself is inconsistent (e.g. debit without credit)."""


@dataclass(frozen=True)
class ColumnMapping:
    """Which input column holds what.  Defaults match the seed schema ``client_id,amount,date,time``.

    Amount, one of three modes:
      * signed ``amount`` (default): deposit > 0, withdrawal < 0;
      * ``debit`` + ``credit``: two unsigned columns, exactly one non-zero per row (``amount`` ignored);
      * ``amount`` + ``direction``: unsigned amount and a type column whose values are matched
        case-insensitively against ``deposit_values`` / ``withdrawal_values``.
    Time, one of two modes: ``date`` (+ optional ``time``; None means midnight), or one ``datetime``
    column (``date``/``time`` ignored).  Formats are strptime patterns; the defaults are ISO
    (``%Y-%m-%d``, ``%H:%M:%S``, ``%Y-%m-%d %H:%M:%S`` which also accepts a ``T`` separator).
    """

    client_id: str = "client_id"
    amount: str | None = "amount"
    date: str | None = "date"
    time: str | None = "time"
    datetime: str | None = None
    debit: str | None = None
    credit: str | None = None
    direction: str | None = None
    deposit_values: frozenset[str] = DEFAULT_DEPOSIT_VALUES
    withdrawal_values: frozenset[str] = DEFAULT_WITHDRAWAL_VALUES
    txn_id: str | None = None
    channel: str | None = None
    counterparty: str | None = None
    date_format: str | None = None
    time_format: str | None = None
    datetime_format: str | None = None
    delimiter: str | None = None  # None: auto-detect among , ; TAB |
    encoding: str = "utf-8"
    decimal: str = "."  # decimal separator of amounts, e.g. "," for 1234,56
    thousands: str | None = None  # thousands separator to drop, e.g. "." for 1.234,56

    def __post_init__(self) -> None:
        fix = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        fix("deposit_values", frozenset(str(v).strip().casefold() for v in self.deposit_values))
        fix("withdrawal_values", frozenset(str(v).strip().casefold() for v in self.withdrawal_values))
        if (self.debit is None) != (self.credit is None):
            raise MappingError("column mapping: debit and credit must be given together")
        if self.debit is not None:
            if self.direction is not None:
                raise MappingError("column mapping: use either debit/credit or direction, not both")
            fix("amount", None)
        elif self.amount is None:
            raise MappingError("column mapping: no amount column (give amount, or debit and credit)")
        if self.datetime is not None:
            fix("date", None)
            fix("time", None)
        elif self.date is None:
            raise MappingError("column mapping: no date column (give date, or datetime)")
        if not self.client_id:
            raise MappingError("column mapping: client_id column name is empty")
        both = self.deposit_values & self.withdrawal_values
        if both:
            raise MappingError(f"column mapping: direction values in both sets: {sorted(both)}")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise MappingError(f"column mapping: delimiter must be one character, got {self.delimiter!r}")
        if self.decimal == self.thousands:
            raise MappingError("column mapping: decimal and thousands separators must differ")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise MappingError(f"column mapping: unknown encoding {self.encoding!r}") from None

    def roles(self) -> dict[str, str]:
        """role -> input column name, for every column this mapping reads."""
        names = ("client_id", "amount", "debit", "credit", "direction", "date", "time", "datetime",
                 *OPTIONAL_COLUMNS)
        return {r: getattr(self, r) for r in names if getattr(self, r) is not None}


@dataclass
class LoadResult:
    transactions: pd.DataFrame
    rejected: pd.DataFrame
    rows_in: int
    source: str
    delimiter: str | None = None
    columns_used: dict[str, str] = field(default_factory=dict)

    def to_pandas(self) -> pd.DataFrame:
        return self.transactions

    def summary(self) -> dict[str, Any]:
        tx = self.transactions
        return {
            "source": self.source,
            "rows_in": int(self.rows_in),
            "rows_loaded": int(len(tx)),
            "rows_rejected": int(self.rejected["row_id"].nunique()),
            "rejected_by_reason": {str(k): int(v) for k, v in self.rejected["reason"].value_counts().items()},
            "duplicates_flagged": int(tx["duplicate"].sum()),
            "accounts": int(tx["client_id"].nunique()),
            "deposits": int((tx["amount_cents"] > 0).sum()),
            "withdrawals": int((tx["amount_cents"] < 0).sum()),
            "first_timestamp": None if tx.empty else str(tx["timestamp"].min()),
            "last_timestamp": None if tx.empty else str(tx["timestamp"].max()),
        }


# --------------------------------------------------------------------------------------------------
# public entry point


def load_transactions(
    source: str | os.PathLike | pd.DataFrame,
    mapping: ColumnMapping | None = None,
    **mapping_overrides: Any,
) -> LoadResult:
    """Load a CSV file, a Parquet file / directory of parts, or a DataFrame into canonical form.

    ``mapping_overrides`` replace fields of ``mapping`` (or of the default mapping), e.g.
    ``load_transactions(path, amount="Betrag", delimiter=";", decimal=",")``.
    Raises LoadError when the input cannot be used at all; bad rows go to ``rejected``.
    """
    mapping = resolve_mapping(mapping, mapping_overrides)
    with small_pages():
        return _load(source, mapping)


def _load(source: str | os.PathLike | pd.DataFrame, mapping: ColumnMapping) -> LoadResult:
    delimiter = None
    malformed: list[tuple[int, str, str]] = []
    if isinstance(source, pd.DataFrame):
        name = "<DataFrame>"
        table = _table_from_frame(source)
        row_ids = np.arange(table.num_rows, dtype=np.int64)
    else:
        path = Path(os.fspath(source))
        name = str(path)
        if not path.exists():
            raise LoadError(f"{name}: file not found")
        if _is_parquet(path):
            parts = _ParquetParts.open(_parquet_files(path, name), name)
            if parts is not None:  # streamed part by part, batch by batch
                cols = resolve_columns(parts.schema.names, mapping, name, None)
                acc = _Accumulator(parts.num_rows, mapping, cols, ",")
                for batch in _read_ahead(parts.batches(cols)):
                    acc.add(batch.table, batch.row_ids, batch.full_table)
                tx, rejected = acc.finish([])
                return LoadResult(tx, rejected, acc.rows_in, name, None, cols)
            table = _read_parquet(path, name)  # fallback: parts that only read as whole tables
            row_ids = np.arange(table.num_rows, dtype=np.int64)
        else:
            table, row_ids, malformed, delimiter = _read_csv(path, name, mapping)
    cols = resolve_columns(table.column_names, mapping, name, delimiter)
    rows_in = table.num_rows + len(malformed)
    acc = _Accumulator(table.num_rows, mapping, cols, delimiter or ",")
    for start in range(0, table.num_rows, BATCH_ROWS):
        acc.add(table.slice(start, BATCH_ROWS), row_ids[start:start + BATCH_ROWS])
    del table
    tx, rejected = acc.finish(malformed)
    return LoadResult(tx, rejected, rows_in, name, delimiter, cols)


def resolve_mapping(mapping: ColumnMapping | None, overrides: dict[str, Any]) -> ColumnMapping:
    """``mapping`` (or the default) with ``overrides`` applied; unknown option names are a MappingError."""
    mapping = mapping or ColumnMapping()
    if not overrides:
        return mapping
    known = {f.name for f in dataclasses.fields(ColumnMapping)}
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise MappingError(f"column mapping: unknown option {key!r}{hint}")
    return dataclasses.replace(mapping, **overrides)


# --------------------------------------------------------------------------------------------------
# readers


def _is_parquet(path: Path) -> bool:
    if path.is_dir():
        return True
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return True
    if path.suffix.lower() in CSV_SUFFIXES:
        return False
    with open(path, "rb") as fh:  # unknown suffix: sniff the magic number
        return fh.read(4) == b"PAR1"


def _parquet_files(path: Path, name: str) -> list[str]:
    """The Parquet file, or the parts of a directory in sorted path order (row_id counts across
    parts in that order)."""
    if not path.is_dir():
        return [str(path)]
    parts = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PARQUET_SUFFIXES)
    if not parts:
        raise LoadError(f"{name}: directory contains no .parquet files")
    return [str(p) for p in parts]


def _read_parquet(path: Path, name: str) -> pa.Table:
    """All parts read whole and concatenated (the fallback of _ParquetParts; also defines the
    errors and the schema promotion that the streamed read reproduces)."""
    files = _parquet_files(path, name)
    tables = []
    for f in files:  # in sorted file-name order: row_id counts across parts in that order
        try:
            tables.append(pq.read_table(f))
        except (pa.ArrowException, OSError) as exc:
            raise LoadError(f"{f}: not a readable Parquet file ({_one_line(exc)})") from None
    try:
        return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except pa.ArrowException as exc:
        raise LoadError(f"{name}: Parquet parts have incompatible schemas ({_one_line(exc)})") from None


def _parquet_error(files: list[str], name: str) -> None:
    """Raise the LoadError that reading every part whole and concatenating would raise (one part
    in memory at a time).  Returns only if that read would succeed."""
    schemas = []
    for f in files:
        try:
            schemas.append(pq.read_table(f).schema)
        except (pa.ArrowException, OSError) as exc:
            raise LoadError(f"{f}: not a readable Parquet file ({_one_line(exc)})") from None
    if len(schemas) > 1:
        try:
            pa.concat_tables([s.empty_table() for s in schemas], promote_options="permissive")
        except pa.ArrowException as exc:
            raise LoadError(f"{name}: Parquet parts have incompatible schemas ({_one_line(exc)})") from None


@dataclass
class _Batch:
    table: pa.Table  # the columns the mapping reads (all columns when there is nothing to leave out)
    row_ids: np.ndarray
    full_table: Any = None  # callable -> the batch with every column, when ``table`` has fewer


class _ParquetParts:
    """Parquet parts read one row group at a time, in batches of at most BATCH_ROWS rows.

    The result is the table that ``_read_parquet`` would build, cut into batches: parts whose
    schemas differ are promoted to the unified schema as ``pa.concat_tables(promote_options=
    "permissive")`` does, and read errors are the same LoadErrors.  Columns the mapping does not
    read are left out when the parts share one schema; ``_Batch.full_table`` reads them for the
    rejected rows' ``raw`` text."""

    def __init__(self, files: list[str], name: str, schemas: list[pa.Schema], schema: pa.Schema, num_rows: int):
        self.files, self.name, self.schemas, self.schema, self.num_rows = files, name, schemas, schema, num_rows

    @classmethod
    def open(cls, files: list[str], name: str) -> _ParquetParts | None:
        """Schemas and row counts from the footers; None if the parts only read as whole tables."""
        schemas, num_rows = [], 0
        try:
            for f in files:
                with pq.ParquetFile(f) as pf:
                    schemas.append(pf.schema_arrow)
                    num_rows += pf.metadata.num_rows
            schema = schemas[0] if len(schemas) == 1 else pa.unify_schemas(schemas, promote_options="permissive")
        except (pa.ArrowException, OSError):
            _parquet_error(files, name)
            return None
        return cls(files, name, schemas, schema, num_rows)

    def batches(self, cols: dict[str, str]):
        names = self.schema.names
        same = all(s.equals(self.schema) for s in self.schemas)
        used = [n for n in names if n in set(cols.values())]
        prune = (same and len(used) < len(names) and len(set(names)) == len(names)
                 and not any("." in n for n in names))
        empty = self.schema.empty_table()
        row = 0
        for f in self.files:
            try:
                with pq.ParquetFile(f) as pf:
                    for rg in range(pf.num_row_groups):
                        whole: list[pa.Table] = []  # the row group with every column, read on demand
                        offset = 0
                        for rb in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[rg],
                                                  columns=used if prune else None, use_threads=True):
                            table = pa.Table.from_batches([rb])
                            if not same:
                                table = pa.concat_tables([empty, table], promote_options="permissive")
                            n = table.num_rows
                            full = None
                            if prune:
                                full = functools.partial(self._full_table, f, rg, whole, table, offset)
                            yield _Batch(table, np.arange(row, row + n, dtype=np.int64), full)
                            row += n
                            offset += n
            except (pa.ArrowException, OSError) as exc:  # the error the whole-table read gives, if any
                _parquet_error(self.files, self.name)
                raise LoadError(f"{f}: not a readable Parquet file ({_one_line(exc)})") from None

    def _full_table(self, f: str, rg: int, whole: list[pa.Table], table: pa.Table, offset: int) -> pa.Table:
        if not whole:
            extra = [n for n in self.schema.names if n not in table.column_names]
            try:
                with pq.ParquetFile(f) as pf:
                    whole.append(pf.read_row_group(rg, columns=extra, use_threads=True))
            except (pa.ArrowException, OSError) as exc:
                _parquet_error(self.files, self.name)
                raise LoadError(f"{f}: not a readable Parquet file ({_one_line(exc)})") from None
        rest = whole[0].slice(offset, table.num_rows)
        return pa.table([table.column(n) if n in table.column_names else rest.column(n) for n in self.schema.names],
                        names=self.schema.names)


_END = object()


def _read_ahead(items):
    """``items`` advanced in a worker thread, one item ahead of the consumer: pyarrow reads and
    decodes without the GIL, so the next batch is read while this one is checked.  Items and
    exceptions arrive in order; the worker never runs more than one step at a time."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = pool.submit(next, items, _END)
        while True:
            item = ahead.result()
            if item is _END:
                return
            ahead = pool.submit(next, items, _END)
            yield item


def _table_from_frame(df: pd.DataFrame) -> pa.Table:
    arrays, names = [], []
    for col in df.columns:
        s = df[col]
        if isinstance(s, pd.DataFrame):
            raise LoadError(f"<DataFrame>: duplicate column name {col!r}")
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            arr = pa.array(s, from_pandas=True)
        else:
            arr = pa.array(s.astype("string"), from_pandas=True).cast(pa.string())
        arrays.append(arr)
        names.append(str(col))
    return pa.table(arrays, names=names)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _sample(path: Path, n: int = 1 << 16) -> bytes:
    with pa.input_stream(str(path), compression="detect") as stream:
        return stream.read(n)


def _detect_delimiter(header: str) -> str:
    best, best_count = ",", 0
    for cand in _DELIMITER_CANDIDATES:
        count, quoted = 0, False
        for ch in header:
            if ch == '"':
                quoted = not quoted
            elif ch == cand and not quoted:
                count += 1
        if count > best_count:
            best, best_count = cand, count
    return best


def encoding_error(name: str, encoding: str, bad: bytes, line: int) -> LoadError:
    """The LoadError for an undecodable byte ``bad`` on 1-based text ``line``."""
    byte = f" 0x{bad.hex()}" if bad else ""
    return LoadError(
        f"{name}: not valid {encoding} (byte{byte} on line {line}); the file was probably "
        f"exported in another encoding: pass encoding='cp1252' or encoding='latin-1'"
    )


def _encoding_error(path: Path, name: str, encoding: str) -> LoadError:
    """Find the first undecodable byte (slow path, only after a failure) and describe it."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line, carry = 1, b""
    with pa.input_stream(str(path), compression="detect") as stream:
        while True:
            chunk = stream.read(1 << 20)
            buf = carry + chunk  # bytes the decoder has not consumed yet come first
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                obj = bytes(exc.object)  # the decoder's pending bytes + this chunk
                return encoding_error(name, encoding, obj[exc.start:exc.start + 1],
                                      line + obj[:exc.start].count(b"\n"))
            if not chunk:
                break
            carry = decoder.getstate()[0]
            line += buf[: len(buf) - len(carry)].count(b"\n")
    return LoadError(f"{name}: could not be decoded as {encoding}; pass encoding=... to match the export")


def _read_csv(path: Path, name: str, mapping: ColumnMapping):
    try:
        sample = _sample(path)
    except (OSError, pa.ArrowException) as exc:
        raise LoadError(f"{name}: cannot read file ({_one_line(exc)})") from None
    if not sample.strip():
        raise LoadError(f"{name}: file is empty (no header line)")
    try:
        text = codecs.getincrementaldecoder(mapping.encoding)().decode(sample, final=False)
    except UnicodeDecodeError:
        raise _encoding_error(path, name, mapping.encoding) from None
    text = text.lstrip("\ufeff")
    names, delimiter = csv_header(text.splitlines()[0] if text.splitlines() else "", name, mapping)

    if len(text.splitlines()) <= 1 and len(sample) < (1 << 16):  # header only: no data rows
        empty = pa.table({n: pa.array([], pa.string()) for n in names})
        return empty, np.zeros(0, dtype=np.int64), [], delimiter
    read = lambda threads: read_csv_records(str(path), names, delimiter, mapping, use_threads=threads, skip_header=True)  # noqa: E731
    try:
        table, malformed = read(True)
        if malformed:  # row numbers are only known in single-threaded mode
            table, malformed = read(False)
    except pa.ArrowInvalid as exc:
        msg = _one_line(exc)
        if "UTF8" in msg or "utf8" in msg.lower():
            raise _encoding_error(path, name, mapping.encoding) from None
        try:  # e.g. a quoted newline split across blocks: retry in exact single-threaded mode
            table, malformed = read(False)
        except pa.ArrowInvalid as exc2:
            raise LoadError(f"{name}: cannot parse CSV ({_one_line(exc2)})") from None
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise LoadError(f"{name}: cannot read CSV ({_one_line(exc)})") from None

    # pyarrow's row number counts records from 1 including the header: data row_id = number - 2.
    bad = [(number - 2, reason, raw) for number, reason, raw in malformed]
    good = np.ones(table.num_rows + len(bad), dtype=bool)
    good[[b[0] for b in bad]] = False
    return table, np.flatnonzero(good).astype(np.int64), bad, delimiter


def csv_header(header: str, name: str, mapping: ColumnMapping) -> tuple[list[str], str]:
    """Column names and delimiter from the header line (BOM removed), parsed by pyarrow's own
    quoting rules; a blank header or duplicate names are a LoadError."""
    if not header.strip():
        raise LoadError(f"{name}: first line is empty; expected a header line with column names")
    delimiter = mapping.delimiter or _detect_delimiter(header)
    try:
        names_tbl = pacsv.read_csv(
            pa.BufferReader(header.encode("utf-8") + b"\n"),
            read_options=pacsv.ReadOptions(use_threads=False, autogenerate_column_names=True),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types={f"f{i}": pa.string() for i in range(header.count(delimiter) + 1)},
                strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
        names = [c[0].as_py() for c in names_tbl.columns]
    except pa.ArrowException as exc:
        raise LoadError(f"{name}: cannot parse the header line ({_one_line(exc)})") from None
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise LoadError(f"{name}: duplicate column name(s) in header: {', '.join(dup)}")
    return names, delimiter


def read_csv_records(
    source: str | pa.NativeFile, names: list[str], delimiter: str, mapping: ColumnMapping,
    *, use_threads: bool, skip_header: bool,
) -> tuple[pa.Table, list[tuple[int, str, str]]]:
    """CSV records -> (table of strings, malformed lines as (record number, reason, text)).

    The one place pyarrow's CSV options are set, so the local and the Spark loader parse alike.
    Record numbers are pyarrow's: 1-based, counting the header line when ``skip_header``; they are
    only exact with ``use_threads=False``.  Blank lines are kept as records of empty fields.
    """
    malformed: list[tuple[int, str, str]] = []

    def handler(row) -> str:
        reason = "too few fields" if row.actual_columns < row.expected_columns else "too many fields"
        malformed.append((row.number, reason, row.text))
        return "skip"

    read_opts = pacsv.ReadOptions(
        use_threads=use_threads, column_names=names, skip_rows=1 if skip_header else 0,
        encoding="utf8" if codecs.lookup(mapping.encoding).name == "utf-8" else mapping.encoding,
    )
    parse_opts = pacsv.ParseOptions(
        delimiter=delimiter, ignore_empty_lines=False, newlines_in_values=not use_threads,
        invalid_row_handler=handler,
    )
    conv = pacsv.ConvertOptions(
        column_types={n: pa.string() for n in names}, strings_can_be_null=False, quoted_strings_can_be_null=False,
    )
    table = pacsv.read_csv(source, read_options=read_opts, parse_options=parse_opts, convert_options=conv)
    return table, malformed


def resolve_columns(header: list[str], mapping: ColumnMapping, name: str, delimiter: str | None) -> dict[str, str]:
    """role -> actual header name (exact match, else a unique case/space-insensitive match)."""
    folded: dict[str, list[str]] = {}
    for h in header:
        folded.setdefault(h.strip().casefold(), []).append(h)
    out, problems = {}, []
    for role, want in mapping.roles().items():
        if want in header:
            out[role] = want
            continue
        cands = folded.get(want.strip().casefold(), [])
        if len(cands) == 1:
            out[role] = cands[0]
            continue
        close = difflib.get_close_matches(want.casefold(), [h.casefold() for h in header], n=1, cutoff=0.6)
        if close:
            orig = next(h for h in header if h.casefold() == close[0])
            problems.append(f"missing column {want!r} (did you mean {orig!r}?)")
        else:
            problems.append(f"missing column {want!r}")
    if problems:
        msg = f"{name}: " + "; ".join(problems) + f"; columns found: {', '.join(map(repr, header))}"
        if len(header) == 1:
            other = [d for d in _DELIMITER_CANDIDATES if d != delimiter and d in header[0]]
            if other:
                msg += f"; the header looks {other[0]!r}-delimited: pass delimiter={other[0]!r}"
        raise LoadError(msg)
    return out


# --------------------------------------------------------------------------------------------------
# vectorized field parsers.  Each returns numpy values plus a numpy array of reason codes
# (index into a small list of reasons; 0 = ok) so that the first failing check wins.


def _np_str(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object)


def _as_string(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    if arr.null_count:
        arr = pc.fill_null(arr, "")
    return arr


def _fixed_width_digits(arr: pa.Array, width: int) -> np.ndarray:
    """(n, width) uint8 view of a string array whose values all have exactly ``width`` bytes."""
    n = len(arr)
    if n == 0:
        return np.zeros((0, width), dtype=np.int64)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset: arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]
    return data.reshape(n, width)


_DIM = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * np.where(m > 2, m - 3, m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _valid_ymd(y, m, d) -> np.ndarray:
    mi = np.clip(m, 1, 12) - 1
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    dim = _DIM[mi] + ((mi == 1) & leap)
    return (y >= 1) & (m >= 1) & (m <= 12) & (d >= 1) & (d <= dim)


def _pair_table() -> np.ndarray:
    """Two ASCII bytes read as a little-endian uint16 -> their value 0-99, or 255 if not two digits."""
    t = np.full(1 << 16, 255, dtype=np.uint8)
    a, b = np.meshgrid(np.arange(10), np.arange(10), indexing="ij")
    t[(48 + a) | ((48 + b) << 8)] = 10 * a + b
    return t


def _calendar_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tables of _days_from_civil / _valid_ymd for years 0-9999 and months 0-255 (one row per
    leap-year flag): days before 1 January, leap flag, days before the month, days in the month
    (0 for a month that does not exist, so that no day is valid in it); month index leap * 256 + m."""
    years = np.arange(10000, dtype=np.int64)
    year_start = _days_from_civil(years, np.ones_like(years), np.ones_like(years)).astype(np.int32)
    leap = (((years % 4 == 0) & (years % 100 != 0)) | (years % 400 == 0)).astype(np.int32)
    month_start = np.zeros(512, dtype=np.int32)
    month_days = np.zeros(512, dtype=np.int32)
    m = np.arange(1, 13)
    for is_leap, y in ((0, 2001), (1, 2000)):
        at = 256 * is_leap + m
        month_start[at] = _days_from_civil(np.full(12, y), m, np.ones(12, np.int64)) - _days_from_civil(y, 1, 1)
        month_days[at] = _DIM + ((m == 2) & bool(is_leap))
    return year_start, leap, month_start, month_days


_PAIRS = _pair_table()
_YEAR_START, _LEAP, _MONTH_START, _MONTH_DAYS = _calendar_tables()

# ISO layouts: width, filler for rows of another width, separator position -> allowed bytes, and
# where the two-digit fields start (date: century, year, month, day; time: hour, minute, second)
_ISO_LAYOUT = {
    "date": (10, "1970-01-01", {4: b"-", 7: b"-"}, (0, 2, 5, 8), None),
    "time": (8, "00:00:00", {2: b":", 5: b":"}, None, (0, 3, 6)),
    "datetime": (19, "1970-01-01 00:00:00", {4: b"-", 7: b"-", 10: b" T", 13: b":", 16: b":"},
                 (0, 2, 5, 8), (11, 14, 17)),
}


def _iso_seconds(arr: pa.Array, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Strict ISO parse -> (seconds, ok).  kind: date (days*86400), time (seconds of day), datetime.

    The same test as the regular expressions ``^\\d{4}-\\d{2}-\\d{2}$``, ``^\\d{2}:\\d{2}:\\d{2}$``
    and ``^\\d{4}-\\d{2}-\\d{2}[ T]\\d{2}:\\d{2}:\\d{2}$`` (RE2: ``\\d`` is ASCII, ``$`` the end of
    the text), then a real calendar date / hours 0-23, minutes and seconds 0-59; done on the bytes
    with table look-ups (two digits at a time), never through Python objects."""
    width, filler, sep_at, ymd_at, hms_at = _ISO_LAYOUT[kind]
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if arr.null_count:
        arr = pc.fill_null(arr, "")  # null: not a match, as with the regular expression
    ok = np.array(pc.equal(pc.binary_length(arr), width).to_numpy(zero_copy_only=False), dtype=bool)
    fixed = arr if ok.all() else pc.if_else(pa.array(ok), arr, filler)
    raw = _fixed_width_digits(fixed, width).astype(np.uint8, copy=False)

    def pair(at: int) -> np.ndarray:  # value of the two digits at byte ``at``; 255 if not digits
        return _PAIRS[raw[:, at:at + 2].view(np.uint16)[:, 0]]

    for i, allowed in sep_at.items():
        hit = raw[:, i] == allowed[0]
        for b in allowed[1:]:
            hit |= raw[:, i] == b
        ok &= hit
    secs = np.zeros(n, dtype=np.int64)
    if ymd_at is not None:
        c, yy, m, d = (pair(at) for at in ymd_at)
        ok &= (c != 255) & (yy != 255) & (m != 255) & (d != 255)
        y = c.astype(np.int32) * 100 + yy
        y[y > 9999] = 0  # only non-digits (255) get here; the row is already not ok
        mi = _LEAP[y] * 256 + m  # m <= 255
        ok &= (y >= 1) & (d >= 1) & (d <= _MONTH_DAYS[mi])
        days = _YEAR_START[y] + _MONTH_START[mi] + d.astype(np.int32) - 1
        np.multiply(days, np.int64(86400), out=secs)
    if hms_at is not None:
        h, mi_, s = (pair(at) for at in hms_at)
        ok &= (h < 24) & (mi_ < 60) & (s < 60)  # 255 (not digits) fails too
        secs += h.astype(np.int32) * 3600 + mi_.astype(np.int32) * 60 + s
    return secs, ok


_LEADING_ZEROS = r"(^|[^0-9])0+([0-9])"


def _custom_seconds(arr: pa.Array, fmt: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """strptime with a round-trip check (strftime, leading zeros and case ignored), so that
    impossible dates that strptime would roll over (31/02 -> 03/03) are rejected, not moved."""
    if kind == "time":
        arr_in, fmt_in = pc.binary_join_element_wise("1970-01-01", arr, "|"), "%Y-%m-%d|" + fmt
    else:
        arr_in, fmt_in = arr, fmt
    ts = pc.strptime(arr_in, format=fmt_in, unit="s", error_is_null=True)
    ok = pc.is_valid(ts)
    back = pc.strftime(pc.fill_null(ts, 0), format=fmt_in)

    def norm(a):
        return pc.utf8_lower(pc.replace_substring_regex(a, _LEADING_ZEROS, r"\1\2"))

    ok = pc.and_(ok, pc.equal(norm(back), norm(arr_in)))
    secs = pc.fill_null(ts.cast(pa.int64()), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return secs, ok.to_numpy(zero_copy_only=False).astype(bool)


def _parse_seconds(arr: pa.Array, fmt: str | None, kind: str) -> tuple[np.ndarray, np.ndarray]:
    default = {"date": _ISO_DATE, "time": _ISO_TIME, "datetime": _ISO_DATETIME}[kind]
    iso = fmt is None or fmt == default
    parse = (lambda a: _iso_seconds(a, kind)) if iso else (lambda a: _custom_seconds(a, fmt, kind))
    secs, ok = parse(arr)
    bad = np.flatnonzero(~ok)
    if len(bad):  # retry the failures with surrounding whitespace removed
        sub = pc.utf8_trim_whitespace(arr.take(pa.array(bad)))
        s2, ok2 = parse(sub)
        secs[bad[ok2]] = s2[ok2]
        ok[bad[ok2]] = True
    return secs, ok


def _temporal_seconds(arr: pa.Array, fmt: str | None, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Typed Parquet / DataFrame temporal columns directly; anything else as text."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        if pa.types.is_timestamp(t) and t.tz is not None:
            arr = arr.cast(pa.timestamp(t.unit))  # instants as UTC wall time
        if pa.types.is_date(t):
            arr = arr.cast(pa.date32()).cast(pa.int32())
            secs = arr.to_numpy(zero_copy_only=False)
            ok = ~np.isnan(secs) if secs.dtype.kind == "f" else np.ones(len(arr), bool)
            return np.nan_to_num(secs).astype(np.int64) * 86400, ok
        per_s = {"s": 1, "ms": 1000, "us": 1_000_000, "ns": 1_000_000_000}[arr.type.unit]
        raw = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        ok = arr.is_valid().to_numpy(zero_copy_only=False)
        return np.floor_divide(raw, per_s), ok  # sub-second part dropped (documented)
    if pa.types.is_time(t) and kind == "time":
        per_s = {"s": 1, "ms": 1000, "us": 1_000_000, "ns": 1_000_000_000}[t.unit]
        raw = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        return np.floor_divide(raw, per_s), arr.is_valid().to_numpy(zero_copy_only=False)
    return _parse_seconds(_as_string(arr), fmt, kind)


_AMOUNT_OK = r"^-?\d{1,15}(\.\d{0,2})?$"
# reason codes for amounts
A_OK, A_MISSING, A_NONNUM, A_NAN, A_INF, A_DEC, A_BIG = range(7)
_AMOUNT_REASONS = {A_MISSING: "missing amount", A_NONNUM: "non-numeric amount", A_NAN: "amount is NaN",
                   A_INF: "amount is infinite", A_DEC: "more than 2 decimal places", A_BIG: "amount too large"}


def _cents_fast(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    ok = pc.match_substring_regex(arr, _AMOUNT_OK)
    s = pc.if_else(ok, arr, "0")
    dot = pc.find_substring(s, ".").to_numpy(zero_copy_only=False).astype(np.int64)
    length = pc.binary_length(s).to_numpy(zero_copy_only=False).astype(np.int64)
    decimals = np.where(dot >= 0, length - dot - 1, 0)
    ints = pc.cast(pc.replace_substring(s, ".", ""), pa.int64()).to_numpy(zero_copy_only=False)
    cents = ints * np.array([100, 10, 1], dtype=np.int64)[decimals]
    return cents, ok.to_numpy(zero_copy_only=False).astype(bool)


def _parse_cents(arr: pa.Array, mapping: ColumnMapping) -> tuple[np.ndarray, np.ndarray]:
    """Decimal text -> exact int64 cents, without floats.  Returns (cents, reason_code)."""
    if mapping.thousands:
        arr = pc.replace_substring(arr, mapping.thousands, "")
    if mapping.decimal != ".":
        arr = pc.replace_substring(arr, mapping.decimal, ".")
    cents, ok = _cents_fast(arr)
    code = np.zeros(len(arr), dtype=np.int8)
    bad = np.flatnonzero(~ok)
    if not len(bad):
        return cents, code
    sub = pc.utf8_trim_whitespace(arr.take(pa.array(bad)))
    norm = pc.replace_substring_regex(sub, r"^\+", "")
    norm = pc.replace_substring_regex(norm, r"^(-?)\.", r"\10.")  # RE2 rewrite: group 1 then "0."
    norm = pc.replace_substring_regex(norm, r"^(-?\d+\.\d\d)0+$", r"\1")
    norm = pc.replace_substring_regex(norm, r"^(-?)0+(\d)", r"\1\2")
    c2, ok2 = _cents_fast(norm)
    fixed = bad[ok2]
    cents[fixed] = c2[ok2]
    still = ~ok2
    if still.any():
        rest = norm.filter(pa.array(still))
        low = pc.utf8_lower(rest)
        sub_code = np.full(len(rest), A_NONNUM, dtype=np.int8)
        for c, cond in (
            (A_BIG, pc.match_substring_regex(rest, r"^-?\d{16,}(\.\d*)?$")),
            (A_DEC, pc.match_substring_regex(rest, r"^-?\d*\.\d{3,}$")),
            (A_INF, pc.is_in(low, pa.array(["inf", "-inf", "infinity", "-infinity", "∞", "-∞"]))),
            (A_NAN, pc.is_in(low, pa.array(["nan", "-nan"]))),
            (A_MISSING, pc.is_in(low, pa.array(["", "null", "none", "na", "n/a", "<na>"]))),
        ):
            sub_code[cond.to_numpy(zero_copy_only=False).astype(bool)] = c
        code[bad[still]] = sub_code
    return cents, code


def _amount_cents(arr: pa.Array | pa.ChunkedArray, mapping: ColumnMapping) -> tuple[np.ndarray, np.ndarray]:
    """An amount column of any type -> (cents, reason code), as ``_parse_cents`` of its text.

    Float64 and integer columns skip the text where the result is certain: a double x with
    |x| < 1e9 whose nearest two-decimal value c/100 converts back to exactly x.  Below 1e9 the
    spacing of doubles is far under a cent, so c/100 is the only two-decimal number that rounds
    to x, every other decimal that does has more significant digits, and x's text (its shortest
    round-trip decimal, plain notation below 1e10) is c/100 itself.  Integers need |v| < 10**15.
    Every other value (null, NaN, inf, sub-cent, large) goes through the text as before."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    t = arr.type
    numeric = pa.types.is_float64(t) or _is_int64_safe(t)
    if not numeric or mapping.thousands is not None or mapping.decimal != ".":
        return _parse_cents(_as_string(arr), mapping)
    if pa.types.is_float64(t):
        x = arr.to_numpy(zero_copy_only=False)  # nulls -> NaN
        with np.errstate(all="ignore"):
            c = np.rint(x * 100.0)
            sure = (np.abs(x) < 1e9) & (c / 100.0 == x)  # False for NaN and inf
        cents = np.where(sure, c, 0.0).astype(np.int64)
    else:
        v = pc.fill_null(arr, 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        sure = (v > -10**15) & (v < 10**15)
        cents = np.where(sure, v * 100, 0)
    if arr.null_count:
        sure &= arr.is_valid().to_numpy(zero_copy_only=False)
    code = np.zeros(len(arr), dtype=np.int8)
    rest = np.flatnonzero(~sure)
    if len(rest):
        c2, code2 = _parse_cents(_as_string(arr.take(pa.array(rest))), mapping)
        cents[rest] = c2
        code[rest] = code2
    return cents, code


def _is_int64_safe(t: pa.DataType) -> bool:
    """An integer type whose values fit int64 (so numpy holds them exactly)."""
    return pa.types.is_integer(t) and not pa.types.is_uint64(t)


# --------------------------------------------------------------------------------------------------
# validation pipeline


class _Rejects:
    """Collects (position, column, reason) keeping only the first failing check per row."""

    def __init__(self, n: int):
        self.alive = np.ones(n, dtype=bool)
        self.pos: list[np.ndarray] = []
        self.col: list[str] = []
        self.reason: list[str] = []

    def add(self, mask: np.ndarray, column: str, reason: str) -> None:
        hit = mask & self.alive
        if hit.any():
            self.pos.append(np.flatnonzero(hit))
            self.col.append(column)
            self.reason.append(reason)
            self.alive &= ~hit


@dataclass
class _Checked:
    """Row-wise checks of one table: rejections and the parsed values (meaningful where alive)."""

    rej: _Rejects
    client: pa.Array | None  # trimmed client_id text, or None when ``client_int`` holds the ids
    client_int: np.ndarray | None  # an integer client_id column's values (its text is their decimal form)
    cents: np.ndarray
    secs: np.ndarray


def _check_table(table: pa.Table, mapping: ColumnMapping, cols: dict[str, str], int_clients: bool = False) -> _Checked:
    """Every row-wise check, in order; the first failing check per row is its reason."""
    n = table.num_rows
    rej = _Rejects(n)
    col = lambda role: table.column(cols[role])  # noqa: E731

    # whole-line checks: blank lines (every field empty; pyarrow yields them for 1+ column files)
    if n and all(pa.types.is_string(c.type) for c in table.columns):
        blank = np.ones(n, dtype=bool)
        for c in table.columns:
            blank &= pc.equal(pc.binary_length(c), 0).to_numpy(zero_copy_only=False).astype(bool)
        rej.add(blank, ROW, "blank line")

    client, client_int = None, None
    if int_clients and _is_int64_safe(col("client_id").type):  # an integer's text is never blank
        ids = col("client_id")
        client_int = pc.fill_null(ids, 0).to_numpy().astype(np.int64, copy=False)
        empty = ~ids.is_valid().to_numpy() if ids.null_count else np.zeros(n, dtype=bool)
    else:
        client = pc.utf8_trim_whitespace(_as_string(col("client_id")))
        empty = pc.equal(pc.binary_length(client), 0).to_numpy(zero_copy_only=False).astype(bool)
    rej.add(empty, cols["client_id"], "empty client_id")

    # amount
    if mapping.debit is not None:
        dcol, ccol = cols["debit"], cols["credit"]
        dc, dcode = _amount_cents(col("debit"), mapping)
        cc, ccode = _amount_cents(col("credit"), mapping)
        d_empty = (dcode == A_MISSING) | ((dcode == A_OK) & (dc == 0))
        c_empty = (ccode == A_MISSING) | ((ccode == A_OK) & (cc == 0))
        for code, reason in _AMOUNT_REASONS.items():
            if code != A_MISSING:
                rej.add(dcode == code, dcol, reason)
                rej.add(ccode == code, ccol, reason)
        rej.add(~d_empty & ~c_empty, f"{dcol},{ccol}", "debit and credit both filled")
        rej.add(d_empty & c_empty, f"{dcol},{ccol}", "neither debit nor credit filled")
        rej.add(~c_empty & (cc < 0), ccol, "negative credit")
        cents = np.where(d_empty, cc, -np.abs(dc))
    else:
        acol = cols["amount"]
        cents, code = _amount_cents(col("amount"), mapping)
        for c, reason in _AMOUNT_REASONS.items():
            rej.add(code == c, acol, reason)
        rej.add(cents == 0, acol, "zero amount")
        if mapping.direction is not None:
            dirv = pc.utf8_lower(pc.utf8_trim_whitespace(_as_string(col("direction"))))
            dep = pc.is_in(dirv, pa.array(sorted(mapping.deposit_values), pa.string()))
            wdr = pc.is_in(dirv, pa.array(sorted(mapping.withdrawal_values), pa.string()))
            dep = dep.to_numpy(zero_copy_only=False).astype(bool)
            wdr = wdr.to_numpy(zero_copy_only=False).astype(bool)
            rej.add(~dep & ~wdr, cols["direction"], "unknown direction value")
            rej.add(dep & (cents < 0), f"{acol},{cols['direction']}", "sign contradicts direction")
            cents = np.where(dep, np.abs(cents), -np.abs(cents))

    # timestamp
    if mapping.datetime is not None:
        secs, ok = _temporal_seconds(col("datetime"), mapping.datetime_format, "datetime")
        rej.add(~ok, cols["datetime"], "unparsable datetime")
    else:
        secs, ok = _temporal_seconds(col("date"), mapping.date_format, "date")
        rej.add(~ok, cols["date"], "unparsable date")
        if mapping.time is not None:
            tsecs, tok = _temporal_seconds(col("time"), mapping.time_format, "time")
            rej.add(~tok, cols["time"], "unparsable time")
            dtype = table.column(cols["date"]).type
            if pa.types.is_timestamp(dtype):  # a typed timestamp "date" column: use its day only
                secs = secs - secs % 86400
            secs = secs + tsecs
    return _Checked(rej, client, client_int, cents, secs)


def validate_table(
    table: pa.Table, row_ids: np.ndarray, mapping: ColumnMapping, cols: dict[str, str],
    malformed: list[tuple[int, str, str]] = (), delimiter: str = ",",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate a table of input columns -> (canonical transactions, rejected rows).

    ``row_ids`` number the table's rows, ``cols`` maps roles to its column names (resolve_columns),
    ``malformed`` are lines that never became rows, as (row_id, reason, text).  Only the duplicate
    flag looks across rows; everything else is row by row, so the Spark loader runs this function
    on each partition and recomputes the duplicate flag per account (and load_transactions runs
    the same checks batch by batch, see _Accumulator).
    """
    chk = _check_table(table, mapping, cols)
    tx = _build_frame(chk.rej.alive, row_ids, chk.client, chk.cents, chk.secs, table, cols)
    rejected = _finish_rejected([_rejected_piece(chk.rej, row_ids, table, delimiter)], malformed)
    return tx, rejected


def _build_frame(keep, row_ids, client, cents, secs, table, cols) -> pd.DataFrame:
    idx = np.flatnonzero(keep)
    all_kept = len(idx) == len(keep)
    take = (lambda a: a) if all_kept else (lambda a: a.take(pa.array(idx)))
    optional = {role: take(_as_string(table.column(cols[role]))) for role in OPTIONAL_COLUMNS if role in cols}
    if all_kept:
        return canonical_frame(row_ids, client, cents, secs, optional)
    return canonical_frame(row_ids[idx], take(client), cents[idx], secs[idx], optional)


class _Accumulator:
    """validate_table batch by batch, keeping only compact columns of the rows that pass.

    Each batch is checked row-wise (``_check_table``); the kept rows' row_id, cents and seconds go
    straight into preallocated int64 arrays and their client ids into per-batch codes
    (factorized in order of first appearance); rejected rows become a small piece of the rejected
    frame right away.  ``finish`` merges the per-batch client dictionaries (a client's first
    appearance overall lies in the first batch that has it), flags duplicates on the compact
    arrays and builds the same frames as validate_table on the whole table would.
    """

    def __init__(self, capacity: int, mapping: ColumnMapping, cols: dict[str, str], delimiter: str):
        self.mapping, self.cols, self.delimiter = mapping, cols, delimiter
        self.row_id = np.empty(capacity, dtype=np.int64)
        self.codes = np.empty(capacity, dtype=np.int32)
        self.cents = np.empty(capacity, dtype=np.int64)
        self.secs = np.empty(capacity, dtype=np.int64)
        self.n = 0  # kept rows so far
        self.rows_in = 0
        self.spans: list[tuple[int, int]] = []  # output rows of each batch
        self.uniques: list[np.ndarray | pa.Array] = []  # client ids of each batch, first appearance order
        self.optional: dict[str, list[pa.Array]] = {r: [] for r in OPTIONAL_COLUMNS if r in cols}
        self.rejected: list[pd.DataFrame] = []

    def _grow(self, need: int) -> None:
        if need > len(self.row_id):
            size = max(need, 2 * len(self.row_id))
            for a in ("row_id", "codes", "cents", "secs"):
                old = getattr(self, a)
                new = np.empty(size, dtype=old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, a, new)

    def add(self, table: pa.Table, row_ids: np.ndarray, full_table=None) -> None:
        """One batch; ``full_table()`` gives it with every input column when ``table`` lacks some
        (only called if the batch has rejected rows, for their ``raw`` text)."""
        n = table.num_rows
        self.rows_in += n
        if not n:
            return
        chk = _check_table(table, self.mapping, self.cols, int_clients=True)
        keep = chk.rej.alive
        idx = np.flatnonzero(keep)
        if len(idx) < n:
            if full_table is None:
                self.rejected.append(_rejected_piece(chk.rej, row_ids, table, self.delimiter))
            else:  # re-check the rejected rows with every column: same rows, reasons as on the full table
                bad = np.flatnonzero(~keep)
                full = full_table().take(pa.array(bad))
                chk2 = _check_table(full, self.mapping, self.cols)
                assert not chk2.rej.alive.any(), "extra columns changed which rows pass"
                self.rejected.append(_rejected_piece(chk2.rej, row_ids[bad], full, self.delimiter))
        all_kept = len(idx) == n
        pick = (lambda a: a) if all_kept else (lambda a: a[idx])  # noqa: E731
        k = len(idx)
        s, e = self.n, self.n + k
        self._grow(e)
        self.row_id[s:e] = pick(row_ids)
        self.cents[s:e] = pick(chk.cents)
        self.secs[s:e] = pick(chk.secs)
        if chk.client_int is not None:
            enc = pc.dictionary_encode(pa.array(pick(chk.client_int)))
            codes, uniques = enc.indices.to_numpy(), enc.dictionary.to_numpy()
        else:
            enc = pc.dictionary_encode(chk.client if all_kept else chk.client.take(pa.array(idx)))
            codes, uniques = enc.indices.to_numpy(zero_copy_only=False), enc.dictionary
        self.codes[s:e] = codes
        self.spans.append((s, e))
        self.uniques.append(uniques)
        for role, parts in self.optional.items():
            values = _as_string(table.column(self.cols[role]))
            parts.append(values if all_kept else values.take(pa.array(idx)))
        self.n = e

    def finish(self, malformed: list[tuple[int, str, str]] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
        k = self.n
        codes = self.codes[:k]
        if self.uniques and all(isinstance(u, np.ndarray) for u in self.uniques):
            merged, firsts = pd.factorize(np.concatenate(self.uniques))
            categories = pa.array(firsts, pa.int64()).cast(pa.string())
        else:
            texts = [pa.array(u, pa.int64()).cast(pa.string()) if isinstance(u, np.ndarray) else u
                     for u in self.uniques]
            enc = pc.dictionary_encode(pa.chunked_array(texts, pa.string()).combine_chunks())
            merged, categories = enc.indices.to_numpy(zero_copy_only=False), enc.dictionary
        at = 0
        for (s, e), u in zip(self.spans, self.uniques):  # batch codes -> merged codes, in place
            to_global = merged[at: at + len(u)].astype(np.int32)
            codes[s:e] = to_global[codes[s:e]]
            at += len(u)
        cats = pd.Index(categories.to_pylist(), dtype="str")
        row_id, cents, secs = self.row_id[:k], self.cents[:k], self.secs[:k]
        optional = {role: pa.chunked_array(parts, pa.string()).combine_chunks() for role, parts in self.optional.items()}
        tx = _frame(row_id, codes, cats, cents, secs, optional, duplicate_flags(codes, cents, secs), own=True)
        rejected = _finish_rejected(self.rejected, malformed)
        self.row_id = self.codes = self.cents = self.secs = None
        return tx, rejected


_EXACT_DUPLICATES_BELOW = 1 << 16


def _duplicated_exact(codes: np.ndarray, cents: np.ndarray, secs: np.ndarray) -> np.ndarray:
    key = pd.DataFrame({"c": codes, "a": cents, "t": secs}, copy=False)
    return key.duplicated(keep="first").to_numpy() if len(key) else np.zeros(0, bool)


def _key_hash(codes: np.ndarray, cents: np.ndarray, secs: np.ndarray, out: np.ndarray) -> np.ndarray:
    """A 64-bit hash of (code, cents, seconds) into ``out``: equal keys give equal hashes."""
    tmp = np.empty(len(out), dtype=np.uint64)
    with np.errstate(all="ignore"):
        np.multiply(cents.view(np.uint64), np.uint64(0xC2B2AE3D27D4EB4F), out=out)
        np.multiply(secs.view(np.uint64), np.uint64(0x165667B19E3779F9), out=tmp)
        out += tmp
        np.multiply(codes.astype(np.uint64), np.uint64(0x9E3779B97F4A7C15), out=tmp)
        out ^= tmp
    return out


def duplicate_flags(codes: np.ndarray, cents: np.ndarray, secs: np.ndarray) -> np.ndarray:
    """True where the same (client code, cents, time) appeared at an earlier position.

    Large inputs: a 64-bit hash of each key (computed in cache-sized chunks) is sorted to find the
    hashes that occur more than once; only the rows with such a hash are compared exactly, so a
    hash collision costs time, never a wrong flag.  Memory: one uint64 per row, plus the candidates."""
    n = len(codes)
    if n < _EXACT_DUPLICATES_BELOW:
        return _duplicated_exact(codes, cents, secs)
    cents = np.ascontiguousarray(cents, dtype=np.int64)
    secs = np.ascontiguousarray(secs, dtype=np.int64)
    h = np.empty(n, dtype=np.uint64)
    step = 1 << 18  # chunks that stay in cache
    for s in range(0, n, step):
        _key_hash(codes[s:s + step], cents[s:s + step], secs[s:s + step], h[s:s + step])
    h.sort()
    repeated = np.unique(h[1:][h[1:] == h[:-1]])
    del h
    out = np.zeros(n, dtype=bool)
    if not len(repeated):
        return out
    cand = np.zeros(n, dtype=bool)
    buf = np.empty(min(step, n), dtype=np.uint64)
    seen = np.zeros(1 << 24, dtype=bool)  # prefilter on the top 24 bits of the repeated hashes
    seen[repeated >> np.uint64(40)] = True
    for s in range(0, n, step):
        e = min(s + step, n)
        hs = _key_hash(codes[s:e], cents[s:e], secs[s:e], buf[: e - s])
        maybe = np.flatnonzero(seen[hs >> np.uint64(40)])
        if len(maybe):
            at = np.minimum(np.searchsorted(repeated, hs[maybe]), len(repeated) - 1)
            cand[s + maybe[repeated[at] == hs[maybe]]] = True
    idx = np.flatnonzero(cand)
    out[idx] = _duplicated_exact(codes[idx], cents[idx], secs[idx])
    return out


def canonical_frame(
    row_ids: np.ndarray, client: pa.Array, cents: np.ndarray, secs: np.ndarray,
    optional: dict[str, pa.Array], duplicate: np.ndarray | None = None,
) -> pd.DataFrame:
    """The canonical transactions frame, rows in the given (row_id) order; client categories in
    order of first appearance.  ``duplicate`` is computed here unless given (the Spark loader
    computes it per account)."""
    enc = pc.dictionary_encode(client)
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    cats = pd.Index(enc.dictionary.to_pylist(), dtype="str")
    if duplicate is None:
        duplicate = duplicate_flags(codes, cents, secs)
    return _frame(row_ids, codes, cats, cents, secs, optional, duplicate)


def _frame(row_ids, codes, cats, cents, secs, optional, duplicate, own: bool = False) -> pd.DataFrame:
    """canonical_frame from client codes + categories.  ``own``: the arrays belong to the frame
    from now on (the timestamp column is then a view of ``secs``, not a copy)."""
    secs64 = secs.view("datetime64[s]") if own and secs.dtype == np.int64 else secs.astype("datetime64[s]")
    data = {
        "row_id": row_ids,
        "client_id": pd.Categorical.from_codes(codes, categories=cats, validate=False),
        "amount_cents": cents.astype(np.int64, copy=False),
        "timestamp": secs64,
        "direction": pd.Categorical.from_codes((cents < 0).astype(np.int8), categories=["deposit", "withdrawal"],
                                               validate=False),
        "duplicate": duplicate.astype(bool, copy=False),
    }
    for role, values in optional.items():
        data[role] = pd.array(_np_str(values), dtype="str")
    df = pd.DataFrame(data, copy=False)
    df.index = pd.RangeIndex(len(df))
    return df


def _rejected_piece(rej: _Rejects, row_ids, table, delimiter) -> pd.DataFrame | None:
    """The rejected rows of one table (row order not yet sorted), raw = the fields joined."""
    if not rej.pos:
        return None
    pos = np.concatenate(rej.pos)
    cols = np.concatenate([np.full(len(p), c, dtype=object) for p, c in zip(rej.pos, rej.col)])
    reasons = np.concatenate([np.full(len(p), r, dtype=object) for p, r in zip(rej.pos, rej.reason)])
    sub = table.take(pa.array(pos))
    fields = [_as_string(c) for c in sub.columns]
    raw = pc.binary_join_element_wise(*fields, delimiter) if len(fields) > 1 else fields[0]
    return pd.DataFrame({"row_id": row_ids[pos], "column": cols, "reason": reasons, "raw": _np_str(raw)})


def _finish_rejected(pieces, malformed) -> pd.DataFrame:
    parts = [p for p in pieces if p is not None]
    if malformed:
        parts.append(pd.DataFrame({
            "row_id": np.array([m[0] for m in malformed], dtype=np.int64),
            "column": ROW, "reason": [m[1] for m in malformed], "raw": [m[2] or "" for m in malformed],
        }))
    if not parts:
        out = pd.DataFrame({"row_id": np.zeros(0, np.int64), "column": pd.array([], dtype="str"),
                            "reason": pd.array([], dtype="str"), "raw": pd.array([], dtype="str")})
    else:
        out = pd.concat(parts, ignore_index=True)
        for c in ("column", "reason", "raw"):
            out[c] = out[c].astype("str")
        out["row_id"] = out["row_id"].astype(np.int64)
        out = out.sort_values("row_id", kind="stable", ignore_index=True)
    return out
