"""The command line, in-process through tracer.cli.main and once through the installed entry point."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from tracer.analysis import ACCOUNT_COLUMNS, OUTPUT_FILES, Analysis
from tracer.cli import main
from tracer.link import LINK_COLUMNS

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "datajam"
CSV = FIXTURE / "transactions.csv"
SUBCOMMANDS = ("analyze", "trace", "export", "generate", "evaluate")


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("tracer: error:")]


@pytest.fixture(scope="module")
def truth() -> pd.DataFrame:
    return pd.read_csv(FIXTURE / "truth_accounts.csv", dtype={"client_id": str}).set_index("client_id")


@pytest.fixture(scope="module")
def upper(truth) -> str:
    (cid,) = truth.index[truth["role"] == "upper_tier"]
    return cid


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    """One ``tracer analyze`` of the fixture; later tests read (never write) its folder."""
    base = tmp_path_factory.mktemp("cli")
    out = base / "out"
    rc, stdout, stderr = run(["analyze", CSV, "--out", out, "--quiet"])
    return rc, stdout, stderr, out


# --- analyze -------------------------------------------------------------------------------------

def test_analyze_exits_zero_and_writes_every_output(analyzed):
    rc, stdout, _, out = analyzed
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert f"outputs in {out.resolve()}" in stdout
    for name in OUTPUT_FILES:
        assert name in stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no hidden staging folder left


def test_analyze_prints_a_summary(analyzed):
    _, stdout, _, out = analyzed
    s = json.loads((out / "summary.json").read_text())
    assert f"{s['rows_in']:,} in" in stdout
    assert f"{s['links']:,} confident links" in stdout
    nets = pd.read_csv(out / "networks.csv")
    for net in nets.itertuples():
        assert f"network {net.network_id}: {net.size} accounts" in stdout


def test_summary_row_counts(analyzed):
    out = analyzed[3]
    s = json.loads((out / "summary.json").read_text())
    assert s["rows_in"] == s["rows_analyzed"] + s["rows_rejected"]
    assert s["rows_in"] == len(pd.read_csv(CSV, dtype=str))
    assert s["rows_rejected"] == len(pd.read_csv(out / "rejected.csv")["row_id"].unique())


def test_output_tables_have_documented_columns(analyzed):
    out = analyzed[3]
    assert list(pd.read_csv(out / "accounts.csv", nrows=1).columns) == ACCOUNT_COLUMNS
    assert list(pd.read_csv(out / "links.csv").columns) == LINK_COLUMNS
    accounts = pd.read_csv(out / "accounts.csv", dtype={"client_id": str})
    assert set(accounts["client_id"]) == set(pd.read_csv(CSV, dtype={"client_id": str})["client_id"])


def test_transfer_rows_point_back_to_the_input(analyzed):
    out = analyzed[3]
    tx = pd.read_csv(CSV, dtype={"client_id": str})  # row_id is the 0-based data row
    transfers = pd.read_csv(out / "transfers.csv", dtype={"withdrawal_rows": str, "deposit_rows": str, "source": str, "target": str})
    assert len(transfers) > 0
    for side, account, sign, amount in (("withdrawal_rows", "source", -1, "amount_out"), ("deposit_rows", "target", 1, "amount_in")):
        parts = transfers[[side, account, amount]].assign(row=transfers[side].str.split()).explode("row")
        rows = parts["row"].astype(np.int64).to_numpy()
        assert rows.min() >= 0 and rows.max() < len(tx)
        assert (tx["client_id"].to_numpy()[rows] == parts[account].to_numpy()).all(), side
        assert (np.sign(tx["amount"].to_numpy()[rows]) == sign).all(), side
        summed = pd.Series(np.abs(tx["amount"].to_numpy()[rows]), index=parts.index).groupby(level=0).sum()
        np.testing.assert_allclose(summed.to_numpy(), transfers[amount].to_numpy(), atol=0.005)
    used = transfers["withdrawal_rows"].str.split().explode().astype(int)
    assert used.is_unique  # a withdrawal is spent on one transfer at most


def test_rerun_into_the_same_folder_replaces_it(analyzed, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for p in analyzed[3].iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    (out / "leftover.txt").write_text("from someone else's run")
    rc, _, _ = run(["analyze", CSV, "--out", out, "--quiet"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "accounts.csv").read_bytes() == (analyzed[3] / "accounts.csv").read_bytes()


def test_crash_while_writing_keeps_the_previous_output(analyzed, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    for p in analyzed[3].iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(self, *args, **kwargs):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(Analysis, "to_html", boom)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        run(["analyze", CSV, "--out", out, "--quiet"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial folder


# --- input errors --------------------------------------------------------------------------------

def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    misspelled = tmp_path / "misspelled.csv"
    misspelled.write_text("client_id,amout,date,time\n1,12.50,2024-01-01,10:00:00\n")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    return {
        "missing": (tmp_path / "nope.csv", "not found"),
        "misspelled": (misspelled, "amount"),
        "empty": (empty, "empty"),
    }


@pytest.mark.parametrize("case", ["missing", "misspelled", "empty"])
def test_bad_input_is_one_clear_error(tmp_path, capsys, case):
    path, words = _bad_inputs(tmp_path)[case]
    rc = main(["analyze", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    assert rc != 0
    lines = error_lines(captured.err)
    assert len(lines) == 1
    assert path.name in lines[0] and words in lines[0]
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_input_stderr_is_exactly_one_line(tmp_path, capsys):
    path, _ = _bad_inputs(tmp_path)["missing"]
    main(["analyze", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("content", ["client_id,amount,date,time\n",
                                     "client_id,amount,date,time\n1,abc,2024-01-01,10:00:00\n2,,2024-01-01,11:00:00\n"],
                         ids=["header-only", "all-rows-rejected"])
def test_no_usable_rows_is_not_a_traceback(tmp_path, content):
    path = tmp_path / "few.csv"
    path.write_text(content)
    rc, _, err = run(["analyze", path, "--out", tmp_path / "out", "--quiet"])
    assert rc == 0 or len(error_lines(err)) == 1


# --- help ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_for_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tracer {command}")
    assert "--out" in out or "--truth" in out


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in SUBCOMMANDS:
        assert command in out


def test_unknown_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(CSV), "--out", "x", "--no-such-option"])
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


# --- trace ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def traced(analyzed, upper, tmp_path_factory):
    """``tracer trace`` of the upper tier, from the CSV and from the analyze folder."""
    base = tmp_path_factory.mktemp("trace")
    fresh = run(["trace", CSV, upper, "--out", base / "fresh", "--quiet"])
    reused = run(["trace", analyzed[3], upper, "--out", base / "reused"])
    return base, fresh, reused


def test_trace_prints_chains_and_writes_map_and_exports(traced, upper, truth):
    base, (rc, stdout, _), _ = traced
    assert rc == 0
    assert f"money around {upper}" in stdout
    assert "hop 1:" in stdout and "hop 2:" in stdout
    for low in truth.index[truth["role"] == "low_level"]:
        assert f"{low} -> " in stdout
    out = base / "fresh"
    assert {"trace.html", "trace.graphml", "trace.gexf", "trace.json", "trace_nodes.csv", "trace_edges.csv"} <= {p.name for p in out.iterdir()}
    assert upper in (out / "trace.html").read_text()
    g = nx.read_graphml(out / "trace.graphml")
    assert upper in g and g.in_degree(upper) > 0


def test_trace_reuses_an_analyze_folder(traced):
    _, (_, fresh_stdout, _), (rc, stdout, stderr) = traced
    assert rc == 0
    assert "reusing the analysis" in stderr
    assert stdout.splitlines()[:-1] == fresh_stdout.splitlines()[:-1]  # same chains; only the paths differ


def test_trace_unknown_account(analyzed, tmp_path, capsys):
    rc = main(["trace", str(analyzed[3]), "no-such-account", "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert rc != 0
    (line,) = error_lines(err)
    assert "no-such-account" in line and "not in the data" in line
    assert "Traceback" not in err
    assert not (tmp_path / "t").exists()


# --- export -----------------------------------------------------------------------------------------

def test_export_network_readable_by_networkx(analyzed, tmp_path):
    src = analyzed[3]
    rc, stdout, _ = run(["export", src, "--network", 0, "--out", tmp_path])
    assert rc == 0
    members = set(pd.read_csv(src / "networks.csv").set_index("network_id").loc[0, "members"].split())
    links = pd.read_csv(src / "links.csv", dtype={"source": str, "target": str})
    inner = {(s, t) for s, t in zip(links["source"], links["target"]) if s in members and t in members}
    for g in (nx.read_graphml(tmp_path / "network_0.graphml"), nx.read_gexf(tmp_path / "network_0.gexf"),
              nx.node_link_graph(json.loads((tmp_path / "network_0.json").read_text()), edges="edges")):
        assert g.is_directed()
        assert {str(n) for n in g.nodes} == members
        assert {(str(u), str(v)) for u, v in g.edges} == inner
    nodes = pd.read_csv(tmp_path / "network_0_nodes.csv", dtype={"id": str})
    edges = pd.read_csv(tmp_path / "network_0_edges.csv", dtype={"source": str, "target": str})
    assert set(nodes["id"]) == members and set(zip(edges["source"], edges["target"])) == inner
    assert set(nodes["role"]) <= {"low_level", "intermediary", "upper_tier"}
    assert f"exported {len(members)} accounts and {len(inner)} links" in stdout


def test_export_other_selections(analyzed, upper, tmp_path):
    src = analyzed[3]
    rc, _, _ = run(["export", src, "--trace", upper, "--formats", "json", "--out", tmp_path])
    assert rc == 0 and (tmp_path / "trace.json").exists() and not (tmp_path / "trace.graphml").exists()
    rc, _, _ = run(["export", src, "--formats", "csv", "--out", tmp_path])
    assert rc == 0
    suspects = pd.read_csv(tmp_path / "suspects_nodes.csv", dtype={"id": str})
    assert upper in set(suspects["id"])
    rc, _, err = run(["export", src, "--accounts", f"{upper},ghost", "--out", tmp_path])
    assert rc != 0 and "ghost" in error_lines(err)[0]
    rc, _, err = run(["export", src, "--network", 0, "--formats", "pdf", "--out", tmp_path])
    assert rc != 0 and "pdf" in error_lines(err)[0]


# --- generate / evaluate ----------------------------------------------------------------------------

def test_generate_writes_truth(tmp_path):
    out = tmp_path / "gen"
    rc, stdout, _ = run(["generate", "--scenario", "datajam", "--out", out, "--seed", 3, "--quiet"])
    assert rc == 0
    assert {"transactions.csv", "truth_accounts.csv", "truth_links.csv", "truth_transfers.csv"} <= {p.name for p in out.iterdir()}
    assert f"written to {out.resolve()}" in stdout
    n_rows = len(pd.read_csv(out / "transactions.csv", usecols=["client_id"]))
    assert str(n_rows) in stdout.replace(",", "")  # the printed summary counts the rows written
    accounts = pd.read_csv(out / "truth_accounts.csv", dtype={"client_id": str})
    assert {"low_level", "intermediary", "upper_tier", "normal"} <= set(accounts["role"])
    links = pd.read_csv(out / "truth_links.csv", dtype={"source": str, "target": str})
    crim = set(accounts.loc[accounts["role"] != "normal", "client_id"])
    assert set(links.loc[links["kind"] == "criminal", "source"]) <= crim
    tx = pd.read_csv(out / "transactions.csv", dtype={"client_id": str}, nrows=1000)
    assert list(tx.columns) == ["client_id", "amount", "date", "time"]


def test_evaluate_prints_metrics(analyzed):
    rc, stdout, _ = run(["evaluate", "--truth", FIXTURE, "--pred", analyzed[3]])
    assert rc == 0
    metrics = json.loads(stdout)
    assert {"precision", "recall", "f1"} <= set(metrics["accounts"])
    assert {"precision", "recall", "f1", "criminal_recall"} <= set(metrics["links"])
    assert metrics["accounts"]["recall"] == 1.0 and metrics["accounts"]["precision"] == 1.0
    assert metrics["links"]["criminal_recall"] == 1.0
    assert metrics["normal_flagged"] == 0


def test_evaluate_missing_prediction_folder(tmp_path, capsys):
    rc = main(["evaluate", "--truth", str(FIXTURE), "--pred", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert rc != 0 and len(error_lines(err)) == 1 and "Traceback" not in err


# --- the installed entry point ------------------------------------------------------------------------

def test_installed_console_script(tmp_path):
    exe = Path(sys.executable).parent / "tracer"
    if not exe.exists():
        pytest.skip("tracer console script not installed in this environment")
    done = subprocess.run([str(exe), "analyze", str(CSV), "--out", "out", "--quiet"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(OUTPUT_FILES)
    assert f"outputs in {(tmp_path / 'out').resolve()}" in done.stdout
    assert "Traceback" not in done.stderr
    bad = subprocess.run([str(exe), "analyze", "missing.csv", "--out", "x", "--quiet"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr and len(error_lines(bad.stderr)) == 1
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("tracer ")
