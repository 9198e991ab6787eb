"""Example-based tests for tracer.load: every kind of bad input is handled on purpose."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tracer.load import REJECTION_REASONS, ColumnMapping, LoadError, MappingError, load_transactions

HEADER = "client_id,amount,date,time\n"


def write(tmp_path, text: str | bytes, name: str = "tx.csv"):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return p


def check_invariant(res):
    assert res.rows_in == len(res.transactions) + res.rejected["row_id"].nunique()
    assert not res.rejected["row_id"].duplicated().any()
    assert not set(res.rejected["row_id"]) & set(res.transactions["row_id"])
    assert set(res.rejected["reason"]) <= set(REJECTION_REASONS)
    assert res.transactions["row_id"].is_monotonic_increasing
    all_ids = sorted(set(res.rejected["row_id"]) | set(res.transactions["row_id"]))
    assert all_ids == list(range(res.rows_in))


def reasons(res) -> dict[int, str]:
    return dict(zip(res.rejected["row_id"], res.rejected["reason"]))


# ---------------------------------------------------------------- happy path and canonical frame

def test_seed_schema_no_options(tmp_path):
    p = write(tmp_path, HEADER + "A,12.50,2024-01-01,12:00:00\nB,-3,2024-02-29,23:59:59\nC,0.07,1999-12-31,00:00:01\n")
    res = load_transactions(p)
    tx = res.transactions
    check_invariant(res)
    assert list(tx.columns) == ["row_id", "client_id", "amount_cents", "timestamp", "direction", "duplicate"]
    assert str(tx["row_id"].dtype) == "int64"
    assert isinstance(tx["client_id"].dtype, pd.CategoricalDtype)
    assert str(tx["amount_cents"].dtype) == "int64"
    assert str(tx["timestamp"].dtype) == "datetime64[s]"
    assert list(tx["direction"].cat.categories) == ["deposit", "withdrawal"]
    assert tx["duplicate"].dtype == bool
    assert tx["amount_cents"].tolist() == [1250, -300, 7]
    assert tx["client_id"].astype(str).tolist() == ["A", "B", "C"]
    assert tx["direction"].astype(str).tolist() == ["deposit", "withdrawal", "deposit"]
    assert tx["timestamp"].tolist() == [pd.Timestamp("2024-01-01 12:00:00"), pd.Timestamp("2024-02-29 23:59:59"),
                                        pd.Timestamp("1999-12-31 00:00:01")]
    assert res.rows_in == 3 and res.rejected.empty
    assert res.to_pandas() is tx
    s = res.summary()
    assert s["rows_loaded"] == 3 and s["deposits"] == 2 and s["withdrawals"] == 1 and s["accounts"] == 3


def test_exact_cents_without_float():
    # 0.29 * 100 == 28.999999999999996 in floats; the loader never goes through float
    df = pd.DataFrame({"client_id": ["a"] * 5, "amount": ["0.29", "1.15", "-4.35", "123456789012345.99", "1.1"],
                       "date": ["2024-01-01"] * 5, "time": ["00:00:0%d" % i for i in range(5)]})
    res = load_transactions(df)
    assert res.transactions["amount_cents"].tolist() == [29, 115, -435, 12345678901234599, 110]


def test_amount_forms_accepted():
    vals = ["+5", ".5", "-.5", "1.", "1.500", "  7.25 ", "0007"]
    df = pd.DataFrame({"client_id": list("abcdefg"), "amount": vals, "date": "2024-01-01", "time": "00:00:00"})
    res = load_transactions(df)
    assert res.transactions["amount_cents"].tolist() == [500, 50, -50, 100, 150, 725, 700]


def test_duplicates_kept_and_flagged(tmp_path):
    rows = ["A,10,2024-01-01,10:00:00", "A,10,2024-01-01,10:00:00", "A,10.00,2024-01-01,10:00:00",
            "B,10,2024-01-01,10:00:00", "A,-10,2024-01-01,10:00:00"]
    res = load_transactions(write(tmp_path, HEADER + "\n".join(rows) + "\n"))
    assert res.transactions["duplicate"].tolist() == [False, True, True, False, False]
    assert res.summary()["duplicates_flagged"] == 2


def test_whitespace_ids_stripped_and_optional_columns(tmp_path):
    p = write(tmp_path, "client_id,amount,date,time,ref,chan\n A1 ,5,2024-01-01,00:00:00,T9,atm\n")
    res = load_transactions(p, txn_id="ref", channel="chan")
    tx = res.transactions
    assert tx["client_id"].astype(str).tolist() == ["A1"]
    assert tx["txn_id"].tolist() == ["T9"] and tx["channel"].tolist() == ["atm"]
    assert "counterparty" not in tx.columns


# ---------------------------------------------------------------- bad values -> rejected

@pytest.mark.parametrize("value,reason", [
    ("", "missing amount"), ("NA", "missing amount"), ("abc", "non-numeric amount"),
    ("$5", "non-numeric amount"), ("1e5", "non-numeric amount"), ("1,5", "non-numeric amount"),
    ("NaN", "amount is NaN"), ("inf", "amount is infinite"), ("-Infinity", "amount is infinite"),
    ("0", "zero amount"), ("-0.00", "zero amount"), ("1.005", "more than 2 decimal places"),
    ("0.001", "more than 2 decimal places"), ("1234567890123456", "amount too large"),
])
def test_bad_amounts(tmp_path, value, reason):
    p = write(tmp_path, HEADER + f'A,1,2024-01-01,00:00:00\nB,"{value}",2024-01-01,00:00:00\nC,2,2024-01-01,00:00:00\n')
    res = load_transactions(p)
    check_invariant(res)
    assert reasons(res) == {1: reason}
    assert res.rejected["column"].tolist() == ["amount"]
    assert res.transactions["row_id"].tolist() == [0, 2]


@pytest.mark.parametrize("date,time,column", [
    ("2023-02-29", "00:00:00", "date"), ("2024-13-01", "00:00:00", "date"), ("2024-04-31", "00:00:00", "date"),
    ("01/02/2024", "00:00:00", "date"), ("2024-1-5", "00:00:00", "date"), ("", "00:00:00", "date"),
    ("2024-01-01", "24:00:00", "time"), ("2024-01-01", "12:60:00", "time"), ("2024-01-01", "23:59:60", "time"),
    ("2024-01-01", "noon", "time"), ("2024-01-01", "", "time"), ("2024-01-01", "12:00", "time"),
])
def test_bad_dates_and_times(tmp_path, date, time, column):
    p = write(tmp_path, HEADER + f"A,1,{date},{time}\nB,2,2024-01-01,00:00:00\n")
    res = load_transactions(p)
    check_invariant(res)
    assert reasons(res) == {0: f"unparsable {column}"}
    assert res.rejected["column"].tolist() == [column]


def test_empty_client_id(tmp_path):
    res = load_transactions(write(tmp_path, HEADER + ",1,2024-01-01,00:00:00\n   ,1,2024-01-01,00:00:00\nA,1,2024-01-01,00:00:00\n"))
    check_invariant(res)
    assert reasons(res) == {0: "empty client_id", 1: "empty client_id"}


def test_first_failing_check_only(tmp_path):
    res = load_transactions(write(tmp_path, HEADER + ",abc,nodate,notime\n"))
    check_invariant(res)
    assert res.rejected[["column", "reason"]].values.tolist() == [["client_id", "empty client_id"]]
    assert res.rejected["raw"].tolist() == [",abc,nodate,notime"]


# ---------------------------------------------------------------- malformed lines

def test_truncated_last_line(tmp_path):
    res = load_transactions(write(tmp_path, HEADER + "A,1,2024-01-01,00:00:00\nB,2,2024-01"))
    check_invariant(res)
    assert reasons(res) == {1: "too few fields"}
    assert res.rejected["raw"].tolist() == ["B,2,2024-01"]


def test_row_ids_stay_correct_after_malformed_lines(tmp_path):
    rows = ["A,1,2024-01-01,00:00:00", "B,2,2024-01-01", "C,3,2024-01-01,00:00:00,extra",
            "D,4,2024-01-01,00:00:00", "", "E,5,2024-01-01,00:00:00", "F,6", "G,7,2024-01-01,00:00:00"]
    res = load_transactions(write(tmp_path, HEADER + "\n".join(rows) + "\n"))
    check_invariant(res)
    assert reasons(res) == {1: "too few fields", 2: "too many fields", 4: "blank line", 6: "too few fields"}
    tx = res.transactions
    assert tx["row_id"].tolist() == [0, 3, 5, 7]
    assert tx["client_id"].astype(str).tolist() == ["A", "D", "E", "G"]
    assert tx["amount_cents"].tolist() == [100, 400, 500, 700]


def test_quoted_newline_in_value_counts_as_one_row(tmp_path):
    text = HEADER.replace("time\n", "time,note\n") + 'A,1,2024-01-01,00:00:00,"two\nlines"\nB,2\nC,3,2024-01-01,00:00:00,x\n'
    res = load_transactions(write(tmp_path, text))
    check_invariant(res)
    assert reasons(res) == {1: "too few fields"}
    assert res.transactions["row_id"].tolist() == [0, 2]


def test_many_malformed_rows_in_large_file(tmp_path):
    # larger than one pyarrow block so that the multi-threaded first pass really splits the file
    n = 60_000
    lines = [f"C{i},{i + 1},2024-01-01,00:00:00" if i % 997 else f"C{i},{i + 1}" for i in range(n)]
    res = load_transactions(write(tmp_path, HEADER + "\n".join(lines) + "\n"))
    check_invariant(res)
    bad = [i for i in range(n) if i % 997 == 0]
    assert res.rejected["row_id"].tolist() == bad
    tx = res.transactions
    assert (tx["amount_cents"].to_numpy() == (tx["row_id"].to_numpy() + 1) * 100).all()
    assert (tx["client_id"].astype(str) == "C" + tx["row_id"].astype(str)).all()


# ---------------------------------------------------------------- files that cannot be used

def test_missing_file(tmp_path):
    with pytest.raises(LoadError, match="file not found"):
        load_transactions(tmp_path / "nope.csv")


def test_empty_file(tmp_path):
    with pytest.raises(LoadError, match=r"tx\.csv: file is empty"):
        load_transactions(write(tmp_path, ""))


def test_header_only_gives_empty_result(tmp_path):
    res = load_transactions(write(tmp_path, HEADER))
    assert res.rows_in == 0 and res.transactions.empty and res.rejected.empty
    assert str(res.transactions["amount_cents"].dtype) == "int64"
    res = load_transactions(write(tmp_path, HEADER.strip()))
    assert res.rows_in == 0


def test_misspelled_column_suggests_closest(tmp_path):
    p = write(tmp_path, "client_id,amout,date,time\nA,1,2024-01-01,00:00:00\n")
    with pytest.raises(LoadError) as ei:
        load_transactions(p)
    msg = str(ei.value)
    assert "tx.csv" in msg and "missing column 'amount'" in msg and "did you mean 'amout'" in msg
    assert "\n" not in msg


def test_column_names_matched_case_and_space_insensitively(tmp_path):
    res = load_transactions(write(tmp_path, "Client_ID, Amount ,DATE,Time\nA,1,2024-01-01,00:00:00\n"))
    assert len(res.transactions) == 1


def test_semicolon_file_autodetected(tmp_path):
    res = load_transactions(write(tmp_path, "client_id;amount;date;time\nA;1.5;2024-01-01;00:00:00\n"))
    assert res.delimiter == ";" and res.transactions["amount_cents"].tolist() == [150]


def test_tab_file_autodetected(tmp_path):
    res = load_transactions(write(tmp_path, "client_id\tamount\tdate\ttime\nA\t1.5\t2024-01-01\t00:00:00\n", "t.tsv"))
    assert res.transactions["amount_cents"].tolist() == [150]


def test_wrong_delimiter_given_is_a_clear_error(tmp_path):
    p = write(tmp_path, "client_id;amount;date;time\nA;1.5;2024-01-01;00:00:00\n")
    with pytest.raises(LoadError, match=r"delimiter=';'"):
        load_transactions(p, delimiter=",")


def test_non_utf8_is_a_clear_error_then_decodes_with_encoding(tmp_path):
    p = write(tmp_path, (HEADER + "Müller,1,2024-01-01,00:00:00\n").encode("latin-1"))
    with pytest.raises(LoadError) as ei:
        load_transactions(p)
    msg = str(ei.value)
    assert "tx.csv" in msg and "utf-8" in msg and "encoding=" in msg and "line 2" in msg
    res = load_transactions(p, encoding="latin-1")
    assert res.transactions["client_id"].astype(str).tolist() == ["Müller"]


def test_non_utf8_late_in_large_file(tmp_path):
    body = "".join(f"C{i},1,2024-01-01,00:00:00\n" for i in range(5000))
    p = write(tmp_path, (HEADER + body).encode() + "Zoë,1,2024-01-01,00:00:00\n".encode("latin-1"))
    with pytest.raises(LoadError, match=r"line 5002.*encoding="):
        load_transactions(p)


def test_utf8_bom_and_crlf(tmp_path):
    p = write(tmp_path, b"\xef\xbb\xbf" + (HEADER + "A,1,2024-01-01,00:00:00\n").replace("\n", "\r\n").encode())
    res = load_transactions(p)
    assert res.transactions["timestamp"].tolist() == [pd.Timestamp("2024-01-01")]


def test_unknown_override_and_bad_mapping():
    with pytest.raises(MappingError, match="did you mean 'amount'"):
        load_transactions(pd.DataFrame(), amout="x")
    with pytest.raises(MappingError, match="debit and credit"):
        ColumnMapping(debit="d")
    assert issubclass(MappingError, LoadError)


def test_not_parquet(tmp_path):
    with pytest.raises(LoadError, match="not a readable Parquet"):
        load_transactions(write(tmp_path, "garbage", "x.parquet"))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(LoadError, match="no .parquet files"):
        load_transactions(tmp_path / "emptydir")


# ---------------------------------------------------------------- other bank layouts

def test_debit_credit_columns(tmp_path):
    text = ("id,when,Debit,Credit\nA,2024-01-01 10:00:00,12.00,\nB,2024-01-01 10:00:00,,3.5\n"
            "C,2024-01-01 10:00:00,1,2\nD,2024-01-01 10:00:00,,\nE,2024-01-01 10:00:00,0.00,7\n"
            "F,2024-01-01 10:00:00,,-4\nG,2024-01-01T10:00:00,-5,0\nH,2024-01-01 10:00:00,x,\n")
    res = load_transactions(write(tmp_path, text), client_id="id", datetime="when", debit="Debit", credit="Credit")
    check_invariant(res)
    assert res.transactions["amount_cents"].tolist() == [-1200, 350, 700, -500]
    assert reasons(res) == {2: "debit and credit both filled", 3: "neither debit nor credit filled",
                            5: "negative credit", 7: "non-numeric amount"}


def test_direction_column(tmp_path):
    text = ("client_id,amount,type,date,time\nA,10,CREDIT,2024-01-01,00:00:00\nB,10, Debit ,2024-01-01,00:00:00\n"
            "C,10,refund,2024-01-01,00:00:00\nD,-10,dr,2024-01-01,00:00:00\nE,-10,deposit,2024-01-01,00:00:00\n")
    res = load_transactions(write(tmp_path, text), direction="type")
    check_invariant(res)
    assert res.transactions["amount_cents"].tolist() == [1000, -1000, -1000]
    assert reasons(res) == {2: "unknown direction value", 4: "sign contradicts direction"}
    res = load_transactions(write(tmp_path, text), direction="type", deposit_values={"refund", "credit"})
    assert reasons(res) == {4: "unknown direction value"}  # "deposit" is no longer a deposit value


def test_european_export(tmp_path):
    text = "Konto;Betrag;Datum;Uhrzeit\nA;1.234,56;31.01.2024;9:05\nB;-0,5;29.02.2023;10:00\nC;2,5;01.02.2024;25:00\n"
    m = ColumnMapping(client_id="Konto", amount="Betrag", date="Datum", time="Uhrzeit", date_format="%d.%m.%Y",
                      time_format="%H:%M", decimal=",", thousands=".")
    res = load_transactions(write(tmp_path, text), m)
    check_invariant(res)
    assert res.transactions["amount_cents"].tolist() == [123456]
    assert res.transactions["timestamp"].tolist() == [pd.Timestamp("2024-01-31 09:05")]
    assert reasons(res) == {1: "unparsable date", 2: "unparsable time"}


def test_date_only_no_time_column(tmp_path):
    res = load_transactions(write(tmp_path, "client_id,amount,date\nA,1,2024-05-06\n"), time=None)
    assert res.transactions["timestamp"].tolist() == [pd.Timestamp("2024-05-06")]


# ---------------------------------------------------------------- parquet and DataFrame

def test_parquet_typed_and_directory(tmp_path):
    t = pa.table({"client_id": ["A", "B", "C"], "amount": [1.1, -0.29, 0.001],
                  "date": pa.array([19723, 19724, 19725], pa.date32()), "time": ["01:00:00", "02:00:00", "03:00:00"]})
    pq.write_table(t, tmp_path / "one.parquet")
    res = load_transactions(tmp_path / "one.parquet")
    check_invariant(res)
    assert res.transactions["amount_cents"].tolist() == [110, -29]
    assert res.transactions["timestamp"].tolist() == [pd.Timestamp("2024-01-01 01:00"), pd.Timestamp("2024-01-02 02:00")]
    assert reasons(res) == {2: "more than 2 decimal places"}
    d = tmp_path / "parts"
    d.mkdir()
    pq.write_table(t.slice(0, 2), d / "part-0.parquet")
    pq.write_table(t.slice(2), d / "part-1.parquet")
    res2 = load_transactions(d)
    assert res2.rows_in == 3 and reasons(res2) == {2: "more than 2 decimal places"}


def test_parquet_string_columns_match_csv(tmp_path):
    text = HEADER + "A,1.5,2024-01-01,00:00:00\nB,x,2024-01-01,00:00:00\n"
    csv_res = load_transactions(write(tmp_path, text))
    pq.write_table(pa.table({c: pa.array(v, pa.string()) for c, v in
                             {"client_id": ["A", "B"], "amount": ["1.5", "x"], "date": ["2024-01-01"] * 2,
                              "time": ["00:00:00"] * 2}.items()}), tmp_path / "s.parquet")
    pq_res = load_transactions(tmp_path / "s.parquet")
    pd.testing.assert_frame_equal(csv_res.transactions, pq_res.transactions)
    assert csv_res.rejected[["row_id", "reason"]].equals(pq_res.rejected[["row_id", "reason"]])


def test_dataframe_with_datetime_and_nan():
    df = pd.DataFrame({"acct": ["A", "B", None], "amt": [5.0, np.nan, 1.0],
                       "ts": pd.to_datetime(["2024-01-01 10:00:00.700", "2024-01-02 00:00:00.000", "2024-01-03 00:00:00.000"])},
                      index=[10, 20, 30])
    res = load_transactions(df, client_id="acct", amount="amt", datetime="ts")
    check_invariant(res)
    assert res.transactions["row_id"].tolist() == [0]
    assert res.transactions["timestamp"].tolist() == [pd.Timestamp("2024-01-01 10:00:00")]
    assert reasons(res) == {1: "missing amount", 2: "empty client_id"}
    assert res.source == "<DataFrame>"


def test_gzip_csv(tmp_path):
    import gzip

    p = tmp_path / "tx.csv.gz"
    p.write_bytes(gzip.compress((HEADER + "A,1,2024-01-01,00:00:00\nB,2\n").encode()))
    res = load_transactions(p)
    check_invariant(res)
    assert res.transactions["amount_cents"].tolist() == [100] and reasons(res) == {1: "too few fields"}
