"""tracer.analysis on the datajam fixture: the acceptance target, tables, round trip, trace, atomic writes."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import networkx as nx
import pandas as pd
import pytest

from tracer.analysis import ACCOUNT_COLUMNS, OUTPUT_FILES, Analysis, Trace, analyze
from tracer.link import LINK_COLUMNS, TRANSFER_COLUMNS
from tracer.roles import ROLES

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "datajam"


def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(FIXTURE / name, dtype={"client_id": str, "source": str, "target": str}, keep_default_na=False)


@pytest.fixture(scope="module")
def truth() -> pd.DataFrame:
    return _read("truth_accounts.csv").set_index("client_id")


@pytest.fixture(scope="module")
def truth_links() -> pd.DataFrame:
    return _read("truth_links.csv")


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    return analyze(FIXTURE / "transactions.csv")


@pytest.fixture(scope="module")
def written(analysis, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("analysis") / "out"
    analysis.write(out)
    return out


def _ids(truth: pd.DataFrame, role: str) -> list[str]:
    return sorted(truth.index[truth["role"] == role])


# --- the acceptance target -----------------------------------------------------------------------

def test_every_criminal_flagged_with_its_true_role(analysis, truth):
    crim = truth[truth["role"] != "normal"]
    assert len(crim) > 0
    pred = analysis.accounts.set_index("client_id")["role"]
    wrong = {cid: (role, pred.get(cid)) for cid, role in crim["role"].items() if pred.get(cid) != role}
    assert not wrong, f"true role vs predicted: {wrong}"


def test_no_normal_account_flagged(analysis, truth):
    pred = analysis.accounts.set_index("client_id")["role"]
    normal = truth.index[truth["role"] == "normal"]
    flagged = sorted(c for c in normal if pred.get(c, "normal") != "normal")
    assert flagged == []


def test_criminals_form_the_one_true_network(analysis, truth):
    crim = truth[truth["role"] != "normal"]
    acc = analysis.accounts.set_index("client_id")
    for _, members in crim.groupby("network_id"):
        assert acc.loc[members.index, "network_id"].nunique() == 1
    assert len(analysis.networks) == crim["network_id"].nunique()
    assert analysis.summary["networks"] == len(analysis.networks)


def test_every_criminal_truth_link_is_found(analysis, truth_links):
    found = set(zip(analysis.links["source"].astype(str), analysis.links["target"].astype(str)))
    crim = truth_links[truth_links["kind"] == "criminal"]
    assert len(crim) > 0
    missing = [(s, t) for s, t in zip(crim["source"], crim["target"]) if (s, t) not in found]
    assert missing == []
    assert (analysis.links["q_value"] <= analysis.summary["options"]["max_q"]).all()


# --- tables and summary ---------------------------------------------------------------------------

def test_tables_have_documented_columns(analysis):
    assert list(analysis.accounts.columns) == ACCOUNT_COLUMNS
    assert list(analysis.links.columns) == LINK_COLUMNS
    assert list(analysis.transfers.columns) == TRANSFER_COLUMNS
    assert analysis.to_pandas() is analysis.accounts


def test_accounts_table_is_consistent(analysis):
    acc = analysis.accounts
    assert acc["client_id"].is_unique
    assert set(acc["role"]) <= set(ROLES)
    assert acc["score"].is_monotonic_decreasing
    flagged = acc["role"] != "normal"
    assert (acc.loc[flagged, "score"] >= 0.5).all() and (acc.loc[~flagged, "score"] < 0.5).all()
    assert (acc.loc[flagged, "network_id"] >= 0).all() and (acc.loc[~flagged, "network_id"] == -1).all()
    assert (acc.loc[flagged, "reasons"].str.len() > 0).all()


def test_summary_counts(analysis):
    s = analysis.summary
    assert s["rows_in"] == s["rows_analyzed"] + s["rows_rejected"]
    with open(FIXTURE / "transactions.csv") as fh:
        data_rows = sum(1 for line in fh if line.strip()) - 1
    assert s["rows_in"] == data_rows
    assert s["accounts"] == len(analysis.accounts)
    assert s["links"] == len(analysis.links) and s["transfers"] == len(analysis.transfers)
    assert s["roles"] == {r: int((analysis.accounts["role"] == r).sum()) for r in ROLES}


def test_graph_matches_links(analysis):
    g = analysis.graph
    assert set(g.edges) == set(zip(analysis.links["source"].astype(str), analysis.links["target"].astype(str)))
    flagged = analysis.accounts.loc[analysis.accounts["role"] != "normal", "client_id"]
    for cid in flagged:
        assert g.nodes[cid]["role"] != "normal"
    assert all(isinstance(n, str) for n in g.nodes)


def test_network_view(analysis):
    net = analysis.networks.iloc[0]
    g = analysis.network(int(net["network_id"]))
    assert sorted(g.nodes) == sorted(str(m) for m in net["members"].split())
    with pytest.raises(KeyError):
        analysis.network(999)


def test_suspects_include_context_but_not_the_population(analysis):
    s = analysis.suspects(hops=1)
    flagged = set(analysis.accounts.loc[analysis.accounts["role"] != "normal", "client_id"])
    assert flagged <= set(s.nodes)
    assert s.number_of_nodes() < len(analysis.accounts)
    assert set(analysis.suspects(hops=0).nodes) == flagged


# --- write / read ---------------------------------------------------------------------------------

def test_write_creates_every_output_file(written):
    assert sorted(p.name for p in written.iterdir()) == sorted(OUTPUT_FILES)
    assert not [p for p in written.parent.iterdir() if p.name.startswith(".")]


def test_read_round_trips_tables(analysis, written):
    back = Analysis.read(written)
    pd.testing.assert_frame_equal(back.accounts, analysis.accounts, check_dtype=False)
    pd.testing.assert_frame_equal(back.links, analysis.links, check_dtype=False)
    assert back.summary == analysis.summary
    assert set(back.graph.edges) == set(analysis.graph.edges) and set(back.graph.nodes) == set(analysis.graph.nodes)
    # transfers / networks: same values (times compared as text; their dtypes are checked separately)
    for name in ("transfers", "networks"):
        a, b = getattr(analysis, name), getattr(back, name)
        assert list(a.columns) == list(b.columns) and len(a) == len(b)
        for col in a.columns:
            if pd.api.types.is_numeric_dtype(a[col]):
                pd.testing.assert_series_equal(b[col], a[col], check_dtype=False, check_names=False)
            elif col.endswith("_time"):
                assert pd.to_datetime(b[col]).tolist() == a[col].tolist(), (name, col)
            else:
                assert b[col].astype(str).tolist() == a[col].astype(str).tolist(), (name, col)
    assert back.trace(str(analysis.networks.iloc[0]["members"].split()[0])).chains.shape[0] > 0


def test_read_keeps_float_columns_float(analysis, written):
    """The writer spells an integral float as "500"; every datajam transfer is $500.00."""
    back = Analysis.read(written)
    for name in ("links", "transfers"):
        floats = [c for c, t in getattr(analysis, name).dtypes.items() if pd.api.types.is_float_dtype(t)]
        assert floats and all(pd.api.types.is_float_dtype(getattr(back, name)[c]) for c in floats), name


def test_read_restores_time_columns_as_datetimes(written):
    back = Analysis.read(written)
    assert pd.api.types.is_datetime64_any_dtype(back.links["first_time"])
    assert pd.api.types.is_datetime64_any_dtype(back.transfers["first_time"])
    assert pd.api.types.is_datetime64_any_dtype(back.networks["first_time"])
    assert pd.api.types.is_datetime64_any_dtype(back.networks["last_time"])


def test_read_refuses_an_incomplete_folder(written, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in OUTPUT_FILES[:3]:
        (partial / name).write_bytes((written / name).read_bytes())
    with pytest.raises(FileNotFoundError, match="summary.json"):
        Analysis.read(partial)


def test_rewrite_replaces_the_folder_whole(analysis, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("from an older run")
    analysis.write(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    analysis.write(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_crash_during_write_leaves_previous_output_untouched(analysis, tmp_path, monkeypatch, exc):
    out = tmp_path / "out"
    analysis.write(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(self, *args, **kwargs):
        raise exc("disk on fire")

    monkeypatch.setattr(Analysis, "to_html", boom)
    with pytest.raises(exc):
        analysis.write(out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial or old folder left beside it
    with pytest.raises(exc):
        analysis.write(tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def test_output_permissions_follow_umask(analysis, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "out"
        analysis.write(out)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for name in OUTPUT_FILES:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


# --- trace ------------------------------------------------------------------------------------------

def test_trace_up_from_upper_tier_reaches_low_levels(analysis, truth):
    (upper,) = _ids(truth, "upper_tier")
    tr = analysis.trace(upper, hops=2, direction="up")
    assert isinstance(tr, Trace) and tr.account == upper
    reached = set(tr.graph.nodes)
    assert set(_ids(truth, "low_level")) <= reached
    assert set(_ids(truth, "intermediary")) <= reached
    chains = tr.chains
    assert list(chains.columns) == ["hop", *LINK_COLUMNS]
    assert set(chains["hop"]) == {1, 2}
    assert (chains.loc[chains["hop"] == 1, "target"] == upper).all()  # up: money flowing into the account
    hop1 = set(chains.loc[chains["hop"] == 1, "source"])
    assert (chains.loc[chains["hop"] == 2, "target"].isin(hop1)).all()
    text = str(tr)
    assert upper in text and "hop 2" in text and "$" in text


def test_trace_directions_and_hops(analysis, truth):
    (upper,) = _ids(truth, "upper_tier")
    low = _ids(truth, "low_level")[0]
    assert analysis.trace(upper, direction="down").chains.empty  # the top keeps the money
    down = analysis.trace(low, hops=2, direction="down")
    assert upper in down.graph
    assert (down.chains.loc[down.chains["hop"] == 1, "source"] == low).all()
    one = analysis.trace(upper, hops=1, direction="up")
    assert set(one.chains["hop"]) == {1}
    assert set(one.graph.nodes) == {upper, *_ids(truth, "intermediary")}
    both = analysis.trace(low, hops=4, direction="both")  # low -> mid -> top <- mid <- low
    assert set(_ids(truth, "low_level")) <= set(both.graph.nodes)


def test_trace_min_score_drops_weak_links(analysis, truth):
    (upper,) = _ids(truth, "upper_tier")
    full = analysis.trace(upper, hops=2, direction="up")
    cut = full.chains["score"].median()
    strong = analysis.trace(upper, hops=2, direction="up", min_score=cut)
    assert (strong.chains["score"] >= cut).all()
    assert len(strong.chains) < len(full.chains)
    assert upper in strong.graph


def test_trace_errors(analysis):
    with pytest.raises(KeyError, match="not in the data"):
        analysis.trace("no-such-account")
    lonely = analysis.accounts.loc[(analysis.accounts["role"] == "normal") & (analysis.accounts["link_in"] == 0)
                                   & (analysis.accounts["link_out"] == 0), "client_id"].iloc[0]
    with pytest.raises(KeyError, match="no confident links"):
        analysis.trace(lonely)
    with pytest.raises(ValueError):
        analysis.trace(analysis.links["source"].iloc[0], direction="sideways")


# --- options ---------------------------------------------------------------------------------------

def test_repr_html(analysis):
    html = analysis._repr_html_()
    s = analysis.summary
    assert html.startswith("<b>tracer analysis</b>")
    assert f"{s['rows_in']:,} rows" in html and f"{s['links']:,} confident links" in html
    assert f"upper_tier: {s['roles']['upper_tier']}" in html
    assert "accounts" in repr(analysis)


def test_seed_keeps_a_known_criminal_flagged(truth):
    low = _ids(truth, "low_level")[0]
    seeded = analyze(FIXTURE / "transactions.csv", seeds=(int(low),))  # ids given as numbers are normalised
    acc = seeded.accounts.set_index("client_id")
    assert acc.loc[low, "role"] != "normal"
    assert acc.loc[low, "network_id"] >= 0
    assert seeded.summary["options"]["seeds"] == [low]


def test_analyze_accepts_a_dataframe():
    df = pd.read_csv(FIXTURE / "transactions.csv", dtype=str, nrows=4000)
    a = analyze(df)
    assert a.summary["rows_in"] == 4000 and a.summary["source"] == "<DataFrame>"
    assert list(a.accounts.columns) == ACCOUNT_COLUMNS


def test_html_map_is_written(analysis, tmp_path):
    path = analysis.to_html(tmp_path / "map.html")
    html = path.read_text()
    upper = analysis.accounts.loc[analysis.accounts["role"] == "upper_tier", "client_id"].iloc[0]
    assert html.lstrip().lower().startswith("<!doctype html")
    assert upper in html


def test_export_default_is_suspects(analysis, tmp_path):
    written = analysis.export(tmp_path)
    g = nx.read_graphml(written["graphml"][0])
    assert set(g.nodes) == set(analysis.suspects().nodes)


def test_careful_lookalikes_are_not_flagged_on_an_unbenchmarked_seed():
    """Landlords, employers, family support, wealthy and cash-heavy honest accounts: none flagged,
    while the networks hidden among them are still found (issue targets: F1 >= 0.9)."""
    from tracer.evaluate import evaluate
    from tracer.synth import generate

    scenario = generate("careful", seed=21, accounts=1500)
    result = analyze(scenario.transactions)
    metrics = evaluate(scenario.truth_accounts, scenario.truth_links, result.accounts, result.links)
    assert set(metrics["lookalikes_flagged"]) >= {"landlord", "employer", "family", "wealthy", "cash_earner"}
    assert all(v == 0 for v in metrics["lookalikes_flagged"].values()), metrics["lookalikes_flagged"]
    assert metrics["accounts"]["f1"] >= 0.9, metrics["accounts"]
    assert metrics["links"]["precision"] >= 0.95, metrics["links"]


def test_link_recall_is_reported_by_the_true_links_transfer_count():
    """Recall per band of true transfers: a one-off payment and a weekly relationship are not
    equally findable, and the overall recall mixes them in the data's proportions."""
    from tracer.evaluate import evaluate

    truth_links = pd.DataFrame({"source": ["a", "b", "c", "d", "e"], "target": ["x", "x", "x", "x", "x"],
                                "kind": ["legit", "legit", "legit", "criminal", "legit"], "n_transfers": [1, 1, 2, 6, 30]})
    truth_accounts = pd.DataFrame({"client_id": list("abcdex"), "role": ["normal"] * 6})
    found = pd.DataFrame({"source": ["a", "d", "e"], "target": ["x", "x", "x"]})
    accounts = truth_accounts.assign(score=0.0)
    links = evaluate(truth_accounts, truth_links, accounts, found)["links"]
    assert links["recall_by_transfers"] == {"1": 0.5, "2": 0.0, "5-9": 1.0, "10+": 1.0}
    assert links["recall"] == 0.6
