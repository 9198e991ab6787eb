"""Spark engine equivalence: link inference and the whole analysis give the local engine's results,
on local[2] and on a standalone cluster (fixtures in conftest.py)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tracer import analyze, infer_links, load_transactions, synth
from tracer.cli import main

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def careful(tmp_path_factory) -> str:
    """careful, 300 accounts, with a deposit five days before the first row and one five days after
    the last: the earliest withdrawal is then far from either end in both orientations, so both
    engines must take the block grid's origin from the withdrawals (a local origin of 0 once gave
    other blocks than Spark's)."""
    path = tmp_path_factory.mktemp("careful") / "transactions.parquet"
    tx = synth.generate("careful", seed=1, accounts=300).transactions
    edges = pd.DataFrame({"client_id": [1, 1], "amount": [100.0, 100.0], "date": ["2022-12-27", "2024-01-05"],
                          "time": ["12:00:00", "12:00:00"]})
    pd.concat([edges.iloc[:1], tx, edges.iloc[1:]], ignore_index=True).to_parquet(path)
    return str(path)


@pytest.mark.parametrize("options", [{}, {"block_withdrawals": 3000}], ids=["one block", "many blocks"])
def test_spark_links_equal_local(spark, careful, options):
    from tracer.spark import load_spark
    from tracer.spark_link import infer_links_spark

    local = infer_links(load_transactions(careful).transactions, **options)
    remote = infer_links_spark(load_spark(spark, careful).transactions, **options)
    assert len(local.links) > 50  # a real result, not two empty frames
    for name in ("transfers", "links", "all_links"):
        pd.testing.assert_frame_equal(getattr(local, name), getattr(remote, name))
    assert np.array_equal(local.decoy_scores, remote.decoy_scores)
    assert local.stats == remote.stats


def test_spark_second_stage_equals_local(spark_local, tmp_path):
    """Cash relay: the second stage fires (on the driver, from the relay accounts' rows Spark
    collects) and both engines give the same transfers and links."""
    from tracer.spark import load_spark
    from tracer.spark_link import infer_links_spark

    path = tmp_path / "transactions.parquet"
    synth.generate("cash_relay", seed=1, accounts=300).transactions.to_parquet(path)
    local = infer_links(load_transactions(str(path)).transactions)
    remote = infer_links_spark(load_spark(spark_local, str(path)).transactions)
    assert local.stats["second_stage_links"] > 0
    for name in ("transfers", "links", "all_links"):
        pd.testing.assert_frame_equal(getattr(local, name), getattr(remote, name))
    assert np.array_equal(local.decoy_scores, remote.decoy_scores)
    assert local.stats == remote.stats


def test_spark_links_handle_stated_counterparties(spark_local, tmp_path):
    """Rows with a counterparty column skip inference on both engines alike."""
    from tracer.spark import load_spark
    from tracer.spark_link import infer_links_spark

    tx = synth.generate("careful", seed=2, accounts=200).transactions
    tx["counterparty"] = ""
    tx.loc[tx.index % 50 == 0, "counterparty"] = "EXTERNAL"
    path = tmp_path / "with_counterparty.csv"
    tx.to_csv(path, index=False)
    local = infer_links(load_transactions(path, counterparty="counterparty").transactions)
    remote = infer_links_spark(load_spark(spark_local, str(path), counterparty="counterparty").transactions)
    assert local.stats["stated_rows"] > 0
    pd.testing.assert_frame_equal(local.transfers, remote.transfers)
    pd.testing.assert_frame_equal(local.links, remote.links)


def test_spark_analysis_equals_local(spark, careful):
    """Roles, scores and reasons from the Spark engine equal the local engine's."""
    local = analyze(careful)
    remote = analyze(careful, engine="spark", spark_master=spark.sparkContext.master)
    assert (local.accounts["role"] != "normal").sum() > 0
    pd.testing.assert_frame_equal(local.accounts, remote.accounts)
    pd.testing.assert_frame_equal(local.links, remote.links)
    pd.testing.assert_frame_equal(local.networks, remote.networks)
    assert remote.summary["engine"] == "spark" and remote.summary["rows_analyzed"] == local.summary["rows_analyzed"]


def test_cli_engine_spark_writes_outputs(spark_local, careful, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", careful, "--out", str(out), "--engine", "spark", "--spark-master", spark_local.sparkContext.master]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"] == "spark" and summary["links"] > 0
    assert str(out) in capsys.readouterr().out
