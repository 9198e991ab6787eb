"""Load stage: bank exports (CSV / Parquet / DataFrame) -> canonical transactions + rejected rows.

Everything is read as text first (nothing is coerced silently by a type-inferring reader), then
validated column by column with vectorized ``pyarrow.compute`` / numpy operations.  Every input row
ends up either in ``LoadResult.transactions`` or, exactly once, in ``LoadResult.rejected`` with the
first check it failed.  Invariant: ``rows_in == len(transactions) + rejected.row_id.nunique()``.

See docs/loading.md for the column mapping, the canonical columns and the rejection reasons.
"""
from __future__ import annotations

import codecs
import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

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
            table = _read_parquet(path, name)
            row_ids = np.arange(table.num_rows, dtype=np.int64)
        else:
            table, row_ids, malformed, delimiter = _read_csv(path, name, mapping)
    cols = resolve_columns(table.column_names, mapping, name, delimiter)
    rows_in = table.num_rows + len(malformed)
    tx, rejected = validate_table(table, row_ids, mapping, cols, malformed, delimiter or ",")
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


def _read_parquet(path: Path, name: str) -> pa.Table:
    if path.is_dir():
        parts = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PARQUET_SUFFIXES)
        if not parts:
            raise LoadError(f"{name}: directory contains no .parquet files")
        files = [str(p) for p in parts]
    else:
        files = [str(path)]
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


def _num(digits: np.ndarray, start: int, stop: int) -> np.ndarray:
    out = np.zeros(digits.shape[0], dtype=np.int64)
    for i in range(start, stop):
        out = out * 10 + (digits[:, i].astype(np.int64) - 48)
    return out


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


def _iso_seconds(arr: pa.Array, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Strict ISO parse -> (seconds, ok).  kind: date (days*86400), time (seconds of day), datetime."""
    pattern, width, filler = {
        "date": (r"^\d{4}-\d{2}-\d{2}$", 10, "1970-01-01"),
        "time": (r"^\d{2}:\d{2}:\d{2}$", 8, "00:00:00"),
        "datetime": (r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$", 19, "1970-01-01 00:00:00"),
    }[kind]
    ok = pc.match_substring_regex(arr, pattern)
    fixed = pc.if_else(ok, arr, filler)
    if isinstance(fixed, pa.ChunkedArray):
        fixed = fixed.combine_chunks()
    dig = _fixed_width_digits(fixed, width)
    ok = ok.to_numpy(zero_copy_only=False).astype(bool)
    secs = np.zeros(len(arr), dtype=np.int64)
    tod_at = None
    if kind in ("date", "datetime"):
        y, m, d = _num(dig, 0, 4), _num(dig, 5, 7), _num(dig, 8, 10)
        ok &= _valid_ymd(y, m, d)
        secs += _days_from_civil(y, np.clip(m, 1, 12), d) * 86400
        tod_at = 11 if kind == "datetime" else None
    if kind == "time":
        tod_at = 0
    if tod_at is not None:
        h, mi, s = _num(dig, tod_at, tod_at + 2), _num(dig, tod_at + 3, tod_at + 5), _num(dig, tod_at + 6, tod_at + 8)
        ok &= (h < 24) & (mi < 60) & (s < 60)
        secs += h * 3600 + mi * 60 + s
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


def validate_table(
    table: pa.Table, row_ids: np.ndarray, mapping: ColumnMapping, cols: dict[str, str],
    malformed: list[tuple[int, str, str]] = (), delimiter: str = ",",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate a table of input columns -> (canonical transactions, rejected rows).

    ``row_ids`` number the table's rows, ``cols`` maps roles to its column names (resolve_columns),
    ``malformed`` are lines that never became rows, as (row_id, reason, text).  Only the duplicate
    flag looks across rows; everything else is row by row, so the Spark loader runs this function
    on each partition and recomputes the duplicate flag per account.
    """
    n = table.num_rows
    rej = _Rejects(n)
    col = lambda role: table.column(cols[role])  # noqa: E731

    # whole-line checks: blank lines (every field empty; pyarrow yields them for 1+ column files)
    if n and all(pa.types.is_string(c.type) for c in table.columns):
        blank = np.ones(n, dtype=bool)
        for c in table.columns:
            blank &= pc.equal(pc.binary_length(c), 0).to_numpy(zero_copy_only=False).astype(bool)
        rej.add(blank, ROW, "blank line")

    client = pc.utf8_trim_whitespace(_as_string(col("client_id")))
    rej.add(pc.equal(pc.binary_length(client), 0).to_numpy(zero_copy_only=False).astype(bool),
            cols["client_id"], "empty client_id")

    # amount
    if mapping.debit is not None:
        dcol, ccol = cols["debit"], cols["credit"]
        dc, dcode = _parse_cents(_as_string(col("debit")), mapping)
        cc, ccode = _parse_cents(_as_string(col("credit")), mapping)
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
        cents, code = _parse_cents(_as_string(col("amount")), mapping)
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

    keep = rej.alive
    tx = _build_frame(keep, row_ids, client, cents, secs, table, cols)
    rejected = _build_rejected(rej, row_ids, malformed, table, delimiter)
    return tx, rejected


def _build_frame(keep, row_ids, client, cents, secs, table, cols) -> pd.DataFrame:
    idx = np.flatnonzero(keep)
    all_kept = len(idx) == len(keep)
    take = (lambda a: a) if all_kept else (lambda a: a.take(pa.array(idx)))
    optional = {role: take(_as_string(table.column(cols[role]))) for role in OPTIONAL_COLUMNS if role in cols}
    if all_kept:
        return canonical_frame(row_ids, client, cents, secs, optional)
    return canonical_frame(row_ids[idx], take(client), cents[idx], secs[idx], optional)


def duplicate_flags(codes: np.ndarray, cents: np.ndarray, secs: np.ndarray) -> np.ndarray:
    """True where the same (client code, cents, time) appeared at an earlier position."""
    key = pd.DataFrame({"c": codes, "a": cents, "t": secs}, copy=False)
    return key.duplicated(keep="first").to_numpy() if len(key) else np.zeros(0, bool)


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
    data = {
        "row_id": row_ids,
        "client_id": pd.Categorical.from_codes(codes, categories=cats, validate=False),
        "amount_cents": cents.astype(np.int64, copy=False),
        "timestamp": secs.astype("datetime64[s]"),
        "direction": pd.Categorical.from_codes((cents < 0).astype(np.int8), categories=["deposit", "withdrawal"],
                                               validate=False),
        "duplicate": duplicate.astype(bool, copy=False),
    }
    for role, values in optional.items():
        data[role] = pd.array(_np_str(values), dtype="str")
    df = pd.DataFrame(data, copy=False)
    df.index = pd.RangeIndex(len(df))
    return df


def _build_rejected(rej: _Rejects, row_ids, malformed, table, delimiter) -> pd.DataFrame:
    parts = []
    if rej.pos:
        pos = np.concatenate(rej.pos)
        cols = np.concatenate([np.full(len(p), c, dtype=object) for p, c in zip(rej.pos, rej.col)])
        reasons = np.concatenate([np.full(len(p), r, dtype=object) for p, r in zip(rej.pos, rej.reason)])
        sub = table.take(pa.array(pos))
        fields = [_as_string(c) for c in sub.columns]
        raw = pc.binary_join_element_wise(*fields, delimiter) if len(fields) > 1 else fields[0]
        parts.append(pd.DataFrame({"row_id": row_ids[pos], "column": cols, "reason": reasons, "raw": _np_str(raw)}))
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
