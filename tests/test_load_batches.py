"""tracer.load reads Parquet part by part and validates batch by batch: results must not depend on
where the batch boundaries fall, and the fast paths (numeric amounts, integer client ids, ISO
dates from bytes, hashed duplicate search) must agree with the plain text checks."""
from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tracer import load
from tracer.load import LoadError, load_transactions


def reasons(res) -> dict[int, str]:
    return dict(zip(res.rejected["row_id"], res.rejected["reason"]))


def same_result(a, b) -> None:
    pd.testing.assert_frame_equal(a.transactions, b.transactions, check_exact=True)
    assert list(a.transactions["client_id"].cat.categories) == list(b.transactions["client_id"].cat.categories)
    pd.testing.assert_frame_equal(a.rejected, b.rejected, check_exact=True)
    assert a.rows_in == b.rows_in


def table(rows: list[tuple]) -> pa.Table:
    cid, amount, date, time = zip(*rows)
    return pa.table({"client_id": pa.array(cid, pa.string()), "amount": pa.array(amount, pa.string()),
                     "date": pa.array(date, pa.string()), "time": pa.array(time, pa.string())})


ROWS = [
    ("A", "1.00", "2024-01-01", "10:00:00"),
    ("B", "2.00", "2024-01-01", "10:00:00"),
    ("Z", "x", "2024-01-01", "10:00:00"),         # rejected: Z never enters the categories here
    ("A", "1.00", "2024-01-01", "10:00:00"),      # duplicate of row 0, in the next part
    ("C", "3.00", "2024-02-30", "10:00:00"),      # rejected in a later part
    ("Z", "5.00", "2024-01-02", "10:00:00"),      # Z kept only now: category after A, B (C was rejected)
    ("D", "-4.00", "2024-01-02", "23:59:59"),     # a client that appears only in the last batch
    ("B", "2.00", "2024-01-01", "10:00:00"),      # duplicate of row 1, two parts later
]


@pytest.fixture
def parts(tmp_path):
    """ROWS as three parts (the middle one also has an empty part before it) with tiny row groups."""
    t = table(ROWS)
    d = tmp_path / "parts"
    d.mkdir()
    pq.write_table(t.slice(0, 3), d / "part-0.parquet", row_group_size=2)
    pq.write_table(t.slice(0, 0), d / "part-1.parquet")
    pq.write_table(t.slice(3, 3), d / "part-2.parquet", row_group_size=1)
    pq.write_table(t.slice(6), d / "part-3.parquet")
    return d


@pytest.mark.parametrize("batch", [1, 2, 3, 1 << 20])
def test_batch_boundaries_do_not_matter(parts, tmp_path, monkeypatch, batch):
    monkeypatch.setattr(load, "BATCH_ROWS", batch)
    res = load_transactions(parts)
    tx = res.transactions
    assert res.rows_in == len(ROWS)
    assert reasons(res) == {2: "non-numeric amount", 4: "unparsable date"}
    assert tx["row_id"].tolist() == [0, 1, 3, 5, 6, 7]
    assert tx["duplicate"].tolist() == [False, False, True, False, False, True]
    assert list(tx["client_id"].cat.categories) == ["A", "B", "Z", "D"]
    assert res.rejected["raw"].tolist() == ["Z,x,2024-01-01,10:00:00", "C,3.00,2024-02-30,10:00:00"]
    # the same rows as one CSV file, as one Parquet file, and as a DataFrame give the same frames
    one = tmp_path / "one.parquet"
    pq.write_table(table(ROWS), one)
    csv = tmp_path / "one.csv"
    csv.write_text("client_id,amount,date,time\n" + "".join(",".join(r) + "\n" for r in ROWS))
    df = pd.DataFrame(ROWS, columns=["client_id", "amount", "date", "time"])
    for other in (one, csv, df):
        same_result(res, load_transactions(other))


def test_csv_batches_with_malformed_lines(tmp_path, monkeypatch):
    text = ("client_id,amount,date,time\nA,1,2024-01-01,00:00:00\nB,2\nA,1,2024-01-01,00:00:00\n\n"
            "C,1,2024-01-01,00:00:00,9\nC,x,2024-01-01,00:00:00\nD,7,2024-01-01,00:00:00\n")
    p = tmp_path / "t.csv"
    p.write_text(text)
    whole = load_transactions(p)
    for batch in (1, 2, 3):
        monkeypatch.setattr(load, "BATCH_ROWS", batch)
        res = load_transactions(p)
        same_result(whole, res)
    assert reasons(whole) == {1: "too few fields", 3: "blank line", 4: "too many fields", 5: "non-numeric amount"}
    assert whole.transactions["duplicate"].tolist() == [False, True, False]


# ---------------------------------------------------------------- typed Parquet columns


def test_numeric_amounts_equal_their_text(tmp_path, monkeypatch):
    """A float64/int amount gives exactly what its Arrow text would (the text path decides every
    value the fast path is not sure of)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([
        rng.integers(-10**8, 10**8, 3000) / 100, rng.normal(0, 1e4, 500), 10.0 ** rng.uniform(-8, 16, 500),
        [0.0, -0.0, np.nan, np.inf, -np.inf, 0.001, 1.005, 0.1 + 0.2, 1e9, 1e9 - 0.01, 999999999.99, 1e10,
         9999999999.99, 1e15, 123456789012.34, 5e-324, 2.675],
    ])
    n = len(x)
    mask = np.zeros(n, bool)
    mask[::97] = True
    amounts = pa.array(x, pa.float64(), mask=mask)
    ints = pa.array(np.concatenate([rng.integers(-10**6, 10**6, n - 6), [0, 10**15, -10**15, 10**15 - 1,
                                                                         2**63 - 1, -2**63]]), mask=mask)
    common = {"client_id": ["A"] * n, "date": ["2024-01-01"] * n, "time": ["00:00:00"] * n}
    monkeypatch.setattr(load, "BATCH_ROWS", 1000)
    for values in (amounts, ints, ints.cast(pa.int32(), safe=False)):
        typed = tmp_path / "typed.parquet"
        text = tmp_path / "text.parquet"
        pq.write_table(pa.table({**common, "amount": values}), typed)
        pq.write_table(pa.table({**common, "amount": values.cast(pa.string())}), text)
        a, b = load_transactions(typed), load_transactions(text)
        pd.testing.assert_frame_equal(a.transactions, b.transactions, check_exact=True)
        assert a.rejected[["row_id", "column", "reason"]].equals(b.rejected[["row_id", "column", "reason"]])
        assert len(a.transactions) > n // 3 and len(a.rejected) > 0


def test_integer_client_ids(tmp_path, monkeypatch):
    monkeypatch.setattr(load, "BATCH_ROWS", 2)
    ids = pa.array([7, 3, None, 7, 12, 3], pa.int64())
    common = {"amount": [1.0, 2.0, 3.0, 1.0, 5.0, 6.0], "date": ["2024-01-01"] * 6, "time": ["00:00:00"] * 6}
    pq.write_table(pa.table({"client_id": ids, **common}), tmp_path / "int.parquet")
    pq.write_table(pa.table({"client_id": ids.cast(pa.string()), **common}), tmp_path / "str.parquet")
    a = load_transactions(tmp_path / "int.parquet")
    b = load_transactions(tmp_path / "str.parquet")
    pd.testing.assert_frame_equal(a.transactions, b.transactions, check_exact=True)
    assert list(a.transactions["client_id"].cat.categories) == ["7", "3", "12"]
    assert reasons(a) == {2: "empty client_id"} and a.transactions["duplicate"].tolist() == [False, False, True, False, False]
    assert a.rejected["raw"].tolist() == [",3,2024-01-01,00:00:00"]


def test_unused_columns_are_read_only_for_rejected_rows(tmp_path, monkeypatch):
    """Columns the mapping does not use are left out of the read, but a rejected row's raw text and
    the blank-line check still see every column, in file order."""
    monkeypatch.setattr(load, "BATCH_ROWS", 2)
    t = pa.table({"note": ["n0", "", "n2", "", "n4"], "client_id": ["A", "", "", "", "B"],
                  "amount": ["1", "", "", "", "x"], "date": ["2024-01-01", "", "", "", "2024-01-01"],
                  "time": ["00:00:00", "", "", "", "00:00:00"], "ref": ["r0", "", "r2", "", "r4"]})
    pq.write_table(t, tmp_path / "t.parquet", row_group_size=3)
    res = load_transactions(tmp_path / "t.parquet")
    assert reasons(res) == {1: "blank line", 2: "empty client_id", 3: "blank line", 4: "non-numeric amount"}
    assert res.rejected["raw"].tolist() == [",,,,,", "n2,,,,,r2", ",,,,,", "n4,B,x,2024-01-01,00:00:00,r4"]
    res_opt = load_transactions(tmp_path / "t.parquet", txn_id="ref")
    assert res_opt.transactions["txn_id"].tolist() == ["r0"]
    same_result(res, load_transactions(t.to_pandas()))


def test_parts_with_different_schemas_are_promoted(tmp_path, monkeypatch):
    """As pa.concat_tables(promote_options="permissive"): int amounts become doubles, a column
    missing from a part is null there (empty in raw)."""
    monkeypatch.setattr(load, "BATCH_ROWS", 1)
    d = tmp_path / "parts"
    d.mkdir()
    pq.write_table(pa.table({"client_id": ["A", "B"], "amount": pa.array([5, 0], pa.int64()),
                             "date": ["2024-01-01"] * 2, "time": ["00:00:00"] * 2}), d / "a.parquet")
    pq.write_table(pa.table({"client_id": ["C", "D"], "amount": [2.5, 0.001], "date": ["2024-01-01"] * 2,
                             "time": ["00:00:00"] * 2, "note": ["x", "y"]}), d / "b.parquet")
    res = load_transactions(d)
    assert res.transactions["amount_cents"].tolist() == [500, 250]
    assert reasons(res) == {1: "zero amount", 3: "more than 2 decimal places"}
    assert res.rejected["raw"].tolist() == ["B,0,2024-01-01,00:00:00,", "D,0.001,2024-01-01,00:00:00,y"]
    pq.write_table(pa.table({"client_id": ["E"], "amount": ["1"], "date": ["2024-01-01"], "time": ["00:00:00"]}),
                   d / "c.parquet")
    with pytest.raises(LoadError, match="Parquet parts have incompatible schemas"):
        load_transactions(d)


def test_unreadable_part_names_the_part(tmp_path):
    d = tmp_path / "parts"
    d.mkdir()
    t = table(ROWS)
    pq.write_table(t, d / "part-0.parquet")
    good = (d / "part-0.parquet").read_bytes()
    (d / "part-1.parquet").write_bytes(good[: len(good) // 2])  # footer missing
    with pytest.raises(LoadError, match=r"part-1\.parquet: not a readable Parquet file \(.*magic bytes"):
        load_transactions(d)
    bad = bytearray(good)
    bad[4:40] = b"\xff" * 36  # footer fine, first data page header broken: fails while streaming
    (d / "part-1.parquet").write_bytes(bytes(bad))
    with pytest.raises(LoadError) as err:
        load_transactions(d)
    with pytest.raises(Exception) as direct:
        pq.read_table(d / "part-1.parquet")
    assert str(err.value) == f"{d / 'part-1.parquet'}: not a readable Parquet file ({' '.join(str(direct.value).split())})"


# ---------------------------------------------------------------- fast parsers against plain references


def _iso_reference(s: str, kind: str) -> int | None:
    pattern = {"date": r"\d{4}-\d{2}-\d{2}", "time": r"\d{2}:\d{2}:\d{2}",
               "datetime": r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}"}[kind]
    if not re.fullmatch(pattern, s, flags=re.ASCII) or s.endswith("\n"):
        return None
    try:
        if kind == "time":
            h, m, sec = map(int, s.split(":"))
            return h * 3600 + m * 60 + sec if h < 24 and m < 60 and sec < 60 else None
        d = dt.datetime.strptime(s.replace("T", " "), "%Y-%m-%d" if kind == "date" else "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return int((d - dt.datetime(1970, 1, 1)).total_seconds())


def test_iso_parser_matches_reference():
    rng = np.random.default_rng(1)
    cases = {
        "date": ["2024-02-29", "2023-02-29", "2000-02-29", "1900-02-29", "0001-01-01", "0000-01-01", "9999-12-31",
                 "2024-00-10", "2024-13-01", "2024-04-31", "2024-04-30", "2024-1-01", "2024/01/01", "2024-01-01 ",
                 " 2024-01-01", "２０２４-01-01", "2024-01-0a", "2024-01-01\n", "", "20240101xx", "1970-01-01"],
        "time": ["00:00:00", "23:59:59", "24:00:00", "12:60:00", "12:00:60", "1:00:00", "12-00-00", "ab:cd:ef", ""],
        "datetime": ["2024-01-01 10:00:00", "2024-01-01T10:00:00", "2024-01-01t10:00:00", "2024-01-01_10:00:00",
                     "2023-02-29 10:00:00", "2024-01-01 24:00:00", "2024-01-01 10:00"],
    }
    for _ in range(3000):
        y, m, d = rng.integers(0, 10000), rng.integers(0, 14), rng.integers(0, 33)
        cases["date"].append(f"{y:04d}-{m:02d}-{d:02d}")
        cases["time"].append(f"{rng.integers(0, 26):02d}:{rng.integers(0, 62):02d}:{rng.integers(0, 62):02d}")
        cases["datetime"].append(f"{y:04d}-{m:02d}-{d:02d}{' T'[rng.integers(2)]}{rng.integers(0, 25):02d}:00:59")
    for kind, values in cases.items():
        secs, ok = load._iso_seconds(pa.array(values), kind)
        want = [_iso_reference(v, kind) for v in values]
        assert ok.tolist() == [w is not None for w in want], kind
        assert [int(s) for s, w in zip(secs, want) if w is not None] == [w for w in want if w is not None]


def test_duplicate_flags_exact_despite_hash_collisions(monkeypatch):
    rng = np.random.default_rng(2)
    n = 200_000  # above the size where the hashed search is used
    codes = rng.integers(0, 300, n).astype(np.int32)
    cents = rng.integers(-300, 300, n)
    secs = rng.integers(0, 500, n)
    exact = load._duplicated_exact(codes, cents, secs)
    assert 0 < exact.sum() < n
    assert (load.duplicate_flags(codes, cents, secs) == exact).all()
    # a hash that collides all the time: more candidates, same flags
    monkeypatch.setattr(load, "_key_hash", lambda c, a, s, out: np.bitwise_and(s.view(np.uint64), np.uint64(7), out=out))
    assert (load.duplicate_flags(codes, cents, secs) == exact).all()
    # no duplicates at all
    assert not load.duplicate_flags(np.zeros(n, np.int32), np.arange(n), np.zeros(n, np.int64)).any()
