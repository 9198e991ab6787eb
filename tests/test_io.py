"""tracer._io.write_csv: Arrow's CSV writer in batches, atomic, read back to the same values."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tracer._io import write_csv


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "text": pd.array(["1 2", 'say "x", y', None, "z"], dtype="str"),
        "late_text": [None, None, "p", "q"],  # object column with only missing values in the first batch
        "amount": [500.0, np.nan, 2.5, 1e-7],
        "count": [1, 2, 3, 4],
        "flag": [True, False, True, False],
        "when": pd.to_datetime(["2023-01-01 00:00:01", None, "2023-01-02 00:00:00", "2024-02-29 23:59:59"], format="ISO8601"),
        "precise": pd.to_datetime(["2023-01-01 00:00:01.25", None, "2023-01-02", "2023-01-03"], format="ISO8601"),
        "kind": pd.Categorical(["cut", "exact", "cut", "split"]),
    })


def test_batches_write_the_same_file_as_one(tmp_path):
    frame = _frame()
    write_csv(frame, tmp_path / "one.csv")
    write_csv(frame, tmp_path / "batched.csv", batch_rows=1)
    assert (tmp_path / "batched.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()


def test_values_read_back_unchanged(tmp_path):
    frame = _frame()
    write_csv(frame, tmp_path / "f.csv", batch_rows=2)
    back = pd.read_csv(tmp_path / "f.csv", dtype={"text": str, "late_text": str, "amount": float},
                       parse_dates=["when", "precise"], keep_default_na=False, na_values=[""])
    assert back["text"].tolist() == ["1 2", 'say "x", y', np.nan, "z"]
    assert back["late_text"].tolist() == [np.nan, np.nan, "p", "q"]
    np.testing.assert_array_equal(back["amount"].to_numpy(), frame["amount"].to_numpy())
    assert back["count"].tolist() == [1, 2, 3, 4] and back["flag"].tolist() == [True, False, True, False]
    assert back["when"].tolist() == frame["when"].tolist()
    assert back["precise"].tolist() == frame["precise"].tolist()  # fractions of a second are kept
    assert back["kind"].tolist() == frame["kind"].astype(str).tolist()


def test_whole_second_times_are_written_like_pandas(tmp_path):
    write_csv(_frame(), tmp_path / "f.csv")
    lines = (tmp_path / "f.csv").read_text().splitlines()
    assert ",2023-01-01 00:00:01," in lines[1] and ".000" not in lines[1].split(",2023-01-01 00:00:01,")[0]


def test_empty_frame_writes_the_header(tmp_path):
    write_csv(_frame().iloc[:0], tmp_path / "f.csv")
    assert pd.read_csv(tmp_path / "f.csv").columns.tolist() == list(_frame().columns)


def test_failure_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("previous complete file\n")
    frame = _frame()
    frame["late_text"] = [None, None, "p", object()]  # the second batch cannot be written as text
    with pytest.raises((pa.ArrowTypeError, pa.ArrowInvalid)):
        write_csv(frame, path, batch_rows=2)
    assert path.read_text() == "previous complete file\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.csv"]
