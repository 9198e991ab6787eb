"""The Spark engine's load and features equal the local engine's, on local[2] and a standalone cluster.

Tests marked ``spark`` need pyspark and Java (tests/conftest.py).  The first tests need neither:
they run load.py's per-chunk validation the way the Spark loader does, in plain pandas.
"""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tracer.features import behaviour_features
from tracer.load import (
    LoadError, canonical_frame, duplicate_flags, load_transactions, resolve_columns, resolve_mapping, validate_table,
)
from tracer.synth import generate

HEADER = "client_id,amount,date,time\n"
BAD_ROWS = [
    "A,10.00,2024-01-01,10:00:00", "", "B,ten,2024-01-01,10:00:00", "A,10,2024-01-01,10:00:00",
    "C,5,2024-01-01", "D,5,2024-01-01,10:00:00,extra", ",5,2024-01-01,10:00:00", "E,1.005,2024-01-01,10:00:00",
    "F,0,2024-01-01,10:00:00", "G,7,2023-02-29,10:00:00", "H,7,2024-01-01,24:00:00", "I,nan,2024-01-01,10:00:00",
    'J,"1,5",2024-01-01,10:00:00', "K, -3.5 ,2024-01-01,10:00:00", "A,10,2024-01-01,10:00:00",
]
SMALL_SPLITS = 256 * 1024  # spark.sql.files.maxPartitionBytes in these tests: many splits per file


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """name -> path: the careful scenario (300 accounts) as CSV, Parquet, Parquet parts; bad rows."""
    d = tmp_path_factory.mktemp("spark-inputs")
    tx = generate("careful", seed=1, accounts=300).transactions
    tx.to_csv(d / "careful.csv", index=False)
    tx.to_parquet(d / "careful.parquet", index=False)
    parts = d / "careful_parts"
    parts.mkdir()
    table = pa.Table.from_pandas(tx, preserve_index=False)
    for i, start in enumerate(range(0, len(tx), 25_000)):  # several files, several row groups each
        pq.write_table(table.slice(start, 25_000), parts / f"part-{i:03d}.parquet", row_group_size=4_000)
    (d / "bad.csv").write_text(HEADER + "\n".join(BAD_ROWS * 50) + "\n")
    german = tx.head(5_000).assign(ref=[f"T{i}" for i in range(5_000)], amount=tx["amount"].map(lambda a: f"{a:.2f}".replace(".", ",")))
    german.rename(columns={"client_id": "Konto", "amount": "Betrag"}).to_csv(d / "german.csv", sep=";", index=False, encoding="cp1252")
    return {p.name: str(p) for p in d.iterdir()}


GERMAN = {"client_id": "Konto", "amount": "Betrag", "delimiter": ";", "decimal": ",", "encoding": "cp1252", "txn_id": "ref"}


# ------------------------------------------------------------- the per-chunk kernel, without Spark


def test_chunked_validation_equals_whole_input():
    """validate_table on chunks + duplicate flags per account == load_transactions, as on Spark."""
    tx = generate("careful", seed=2, accounts=100).transactions.head(4_000).astype(str)
    tx.loc[::7, "amount"] = "ten"
    tx.loc[::11, "date"] = "2023-02-29"
    tx.loc[::13, "client_id"] = " "
    tx = pd.concat([tx, tx.iloc[::5]], ignore_index=True)  # duplicates, far from their first row
    local = load_transactions(tx)
    table = pa.Table.from_pandas(tx, preserve_index=False)
    mapping = resolve_mapping(None, {})
    cols = resolve_columns(table.column_names, mapping, "tx", None)
    row_ids = np.arange(table.num_rows)
    chunks = [validate_table(table.slice(s, 997), row_ids[s:s + 997], mapping, cols) for s in range(0, len(tx), 997)]
    kept = pd.concat([c[0] for c in chunks], ignore_index=True)
    secs = kept["timestamp"].to_numpy().astype(np.int64)
    flags = duplicate_flags(pd.factorize(kept["client_id"].astype(str))[0], kept["amount_cents"].to_numpy(), secs)
    whole = canonical_frame(kept["row_id"].to_numpy(), pa.array(kept["client_id"].astype(str).to_numpy()),
                            kept["amount_cents"].to_numpy(), secs, {}, flags)
    assert flags.sum() > 500
    pd.testing.assert_frame_equal(whole, local.transactions)
    pd.testing.assert_frame_equal(pd.concat([c[1] for c in chunks], ignore_index=True), local.rejected)


def test_without_pyspark_only_the_spark_engine_needs_it(monkeypatch, tmp_path):
    import tracer.spark as ts

    monkeypatch.setitem(sys.modules, "pyspark", None)  # `import pyspark` now fails
    with pytest.raises(ImportError, match=r"install tracer\[spark\].*Java 17"):
        ts.spark_session()
    (tmp_path / "tx.csv").write_text(HEADER + "A,1,2024-01-01,10:00:00\n")
    assert len(load_transactions(tmp_path / "tx.csv").transactions) == 1


# ------------------------------------------------------------- Spark == local


def _load_both(spark, path, **mapping):
    from tracer.spark import load_spark

    spark.conf.set("spark.sql.files.maxPartitionBytes", str(SMALL_SPLITS))
    try:
        on_spark = load_spark(spark, path, **mapping)
        return on_spark, on_spark.to_load_result(), load_transactions(path, **mapping)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")


@pytest.mark.spark
@pytest.mark.parametrize("name", ["careful.csv", "careful.parquet", "careful_parts", "bad.csv", "german.csv"])
def test_spark_load_and_features_equal_local(spark, inputs, name):
    from tracer.spark import behaviour_features_spark

    on_spark, got, want = _load_both(spark, inputs[name], **(GERMAN if name == "german.csv" else {}))
    pd.testing.assert_frame_equal(got.transactions, want.transactions, check_exact=True)
    pd.testing.assert_frame_equal(got.rejected, want.rejected, check_exact=True)
    assert (got.rows_in, got.delimiter, got.columns_used) == (want.rows_in, want.delimiter, want.columns_used)
    assert got.summary() | {"source": None} == want.summary() | {"source": None}
    if name == "bad.csv":
        assert want.rejected["reason"].nunique() >= 10 and want.transactions["duplicate"].sum() > 50
    features = behaviour_features_spark(on_spark.transactions, on_spark.buckets)
    pd.testing.assert_frame_equal(features, behaviour_features(want.transactions), check_exact=True)


@pytest.mark.spark
def test_spark_refuses_what_it_cannot_number_alike(spark_local, tmp_path):
    from tracer.spark import load_spark

    quoted = tmp_path / "quoted.csv"
    quoted.write_text(HEADER + 'A,1,2024-01-01,10:00:00\n"B\nC",2,2024-01-01,10:00:00\n')
    assert len(load_transactions(quoted).transactions) == 2  # the local engine reads it
    with pytest.raises(LoadError, match="quoted field spans a line break"):
        load_spark(spark_local, quoted)
    open_at_end = tmp_path / "open.csv"
    open_at_end.write_text(HEADER + 'A,1,2024-01-01,10:00:00\n"B,2,2024-01-01,10:00:00\n')
    with pytest.raises(LoadError, match="quoted field spans a line break"):
        load_spark(spark_local, open_at_end)


@pytest.mark.spark
def test_spark_load_errors_match_local(spark_local, tmp_path):
    from tracer.spark import load_spark

    latin = tmp_path / "latin.csv"
    latin.write_bytes((HEADER + "A,1,2024-01-01,10:00:00\nM\xfcller,2,2024-01-01,10:00:00\n").encode("latin-1"))
    with pytest.raises(LoadError) as local_error:
        load_transactions(latin)
    with pytest.raises(LoadError) as spark_error:
        load_spark(spark_local, latin)
    assert str(spark_error.value) == str(local_error.value)  # byte 0xfc on line 3
    with pytest.raises(LoadError, match="file not found"):
        load_spark(spark_local, tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(LoadError, match="empty"):
        load_spark(spark_local, empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text(HEADER)
    result = load_spark(spark_local, header_only).to_load_result()
    assert result.rows_in == 0 and result.transactions.empty and result.rejected.empty
    with pytest.raises(LoadError, match="missing column 'Betrag'"):
        load_spark(spark_local, header_only, amount="Betrag")


@pytest.mark.spark
def test_spark_format_decided_like_local(spark_local, tmp_path):
    from tracer.spark import load_spark

    frame = pd.DataFrame({"client_id": ["A", "B"], "amount": ["1.50", "-2"], "date": "2024-01-01", "time": "10:00:00"})
    frame.to_parquet(tmp_path / "export.bin", index=False)  # unknown suffix: the PAR1 magic decides
    frame.to_csv(tmp_path / "export.dat", index=False)
    for name in ("export.bin", "export.dat"):
        got = load_spark(spark_local, tmp_path / name).to_load_result()
        pd.testing.assert_frame_equal(got.transactions, load_transactions(tmp_path / name).transactions)
