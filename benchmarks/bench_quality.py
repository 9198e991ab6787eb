"""Detection-quality benchmark: tracer against simple peers on the generator's scenarios.

    .venv/bin/python benchmarks/bench_quality.py                          # datajam, careful, cash_relay x seeds 0..4
    .venv/bin/python benchmarks/bench_quality.py --seeds 0,1 --scenarios careful --no-doc

For every (scenario, seed) the scenario is generated in memory at the generator's default size,
tracer's ``analyze`` is run on the transactions with default options and scored with
``tracer.evaluate.evaluate``; the peers of ``benchmarks/peers.py`` (naive exact-amount linking,
volume z-score, IsolationForest on aggregates) are scored the same way. Link inference's
``all_links`` (q-value of every tested pair) gives the FDR calibration table.

Writes the raw per-run results to ``docs/quality-runs.csv`` and the generated tables into
``docs/quality.md`` between the ``BEGIN GENERATED`` / ``END GENERATED`` markers (text outside the
markers is kept). Runs are sequential (one process); each careful/cash_relay run takes ~0.5 min.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tracer.analysis as _analysis  # noqa: E402
from tracer import synth  # noqa: E402
from tracer.analysis import analyze  # noqa: E402
from tracer.evaluate import evaluate, flatten  # noqa: E402
from tracer.link import infer_links  # noqa: E402
from tracer.load import load_transactions  # noqa: E402

import peers  # noqa: E402

SCENARIOS = ("datajam", "careful", "cash_relay")
Q_THRESHOLDS = (0.01, 0.05, 0.10)
LOOKALIKES = ("landlord", "employer", "family", "wealthy", "cash_earner")
ACCOUNT_METHODS = ("tracer", "zscore", "iforest")
METHOD_NAMES = {"tracer": "tracer", "naive": "naive (exact amount, 72 h, 3+)", "zscore": "volume z-score > 3",
                "iforest": "IsolationForest top 1 %"}
DOC = ROOT / "docs" / "quality.md"
RUNS_CSV = ROOT / "docs" / "quality-runs.csv"
BEGIN, END = "<!-- BEGIN GENERATED (benchmarks/bench_quality.py) -->", "<!-- END GENERATED -->"


# ------------------------------------------------------------------------------------ one run
def _analyze_capturing_links(tx: pd.DataFrame):
    """``analyze(tx)`` with default options, plus the ``LinkResult`` it computed (for ``all_links``).

    ``tracer.analysis.infer_links`` is wrapped for the call so link inference runs once; if the
    pipeline stops calling it, link inference is run separately (same default options).
    """
    captured = []
    original = _analysis.infer_links

    def spy(*args, **kwargs):
        res = original(*args, **kwargs)
        captured.append(res)
        return res

    _analysis.infer_links = spy
    try:
        t0 = time.perf_counter()
        result = analyze(tx)
        seconds = time.perf_counter() - t0
    finally:
        _analysis.infer_links = original
    linked = captured[-1] if captured else infer_links(load_transactions(tx).transactions)
    return result, linked, seconds


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def fdr_calibration(all_links: pd.DataFrame, truth_links: pd.DataFrame, thresholds=Q_THRESHOLDS) -> dict:
    """Estimated vs measured FDR of the links kept at each q threshold.

    ``est_max``: the largest q among kept links (the target-decoy FDR estimate of the kept set);
    ``est_mean``: the mean q of the kept links; ``measured``: share of kept links not in
    ``truth_links`` (any kind).
    """
    true_pairs = set(zip(truth_links["source"].astype(str), truth_links["target"].astype(str)))
    q = all_links["q_value"].to_numpy(np.float64)
    is_true = np.fromiter(((s, t) in true_pairs for s, t in zip(all_links["source"].astype(str), all_links["target"].astype(str))),
                          dtype=bool, count=len(all_links))
    out = {"fdr.tested_pairs": len(all_links)}
    for thr in thresholds:
        keep = q <= thr
        n = int(keep.sum())
        out[f"fdr.{thr:g}.kept"] = n
        out[f"fdr.{thr:g}.est_max"] = float(q[keep].max()) if n else np.nan
        out[f"fdr.{thr:g}.est_mean"] = float(q[keep].mean()) if n else np.nan
        out[f"fdr.{thr:g}.measured"] = float((~is_true[keep]).mean()) if n else np.nan
    return out


def criminal_transfer_recall(truth_links: pd.DataFrame, links: pd.DataFrame) -> float | None:
    """Criminal-link recall weighted by transfers: share of criminal transfers whose pair is linked."""
    crim = truth_links[truth_links["kind"] == "criminal"]
    if crim.empty:
        return None
    found = set(zip(links["source"].astype(str), links["target"].astype(str)))
    hit = np.fromiter(((s, t) in found for s, t in zip(crim["source"].astype(str), crim["target"].astype(str))), dtype=bool, count=len(crim))
    w = crim["n_transfers"].to_numpy(np.float64)
    return round(float(w[hit].sum() / w.sum()), 4)


def run_one(scenario: str, seed: int, verbose: bool = True) -> dict:
    """Generate one scenario, run tracer and the peers, return one flat row of metrics."""
    t0 = time.perf_counter()
    sc = synth.generate(scenario, seed=seed)
    tx, ta, tl = sc.transactions, sc.truth_accounts, sc.truth_links
    row: dict = {"scenario": scenario, "seed": seed, "rows": len(tx), "accounts": int(ta["client_id"].nunique()),
                 "criminals": int((ta["role"] != "normal").sum()), "truth_links": len(tl),
                 "criminal_links": int((tl["kind"] == "criminal").sum()),
                 "generate_seconds": round(time.perf_counter() - t0, 3)}

    result, linked, secs = _analyze_capturing_links(tx)
    row["tracer.seconds"] = round(secs, 3)
    row.update({f"tracer.{k}": v for k, v in flatten(evaluate(ta, tl, result.accounts, result.links)).items()})
    row["tracer.links.criminal_transfer_recall"] = criminal_transfer_recall(tl, result.links)
    row.update(fdr_calibration(linked.all_links, tl))

    naive, secs = _timed(peers.naive_links, tx)
    z, secs_z = _timed(peers.zscore_accounts, tx)
    m = flatten(evaluate(ta, tl, z, naive))
    row["naive.seconds"] = round(secs, 3)
    row.update({f"naive.{k}": v for k, v in m.items() if k.startswith("links.")})
    row["naive.links.criminal_transfer_recall"] = criminal_transfer_recall(tl, naive)
    row["zscore.seconds"] = round(secs_z, 3)
    row.update({f"zscore.{k}": v for k, v in m.items() if not k.startswith("links.") and k != "role_accuracy"})

    iso, secs = _timed(peers.iforest_accounts, tx, seed=seed)
    m = flatten(evaluate(ta, tl, iso, tl.iloc[:0]))
    row["iforest.seconds"] = round(secs, 3)
    row.update({f"iforest.{k}": v for k, v in m.items() if not k.startswith("links.") and k != "role_accuracy"})

    if verbose:
        g = row.get
        print(f"{scenario:<10} seed {seed}: {row['rows']:>7,} rows  tracer {g('tracer.seconds'):5.1f} s | "
              f"links P/R/crimR tracer {g('tracer.links.precision'):.3f}/{g('tracer.links.recall'):.3f}/{_f(g('tracer.links.criminal_recall'))} "
              f"naive {g('naive.links.precision'):.3f}/{g('naive.links.recall'):.3f}/{_f(g('naive.links.criminal_recall'))} | "
              f"accounts F1/AP tracer {g('tracer.accounts.f1'):.3f}/{_f(g('tracer.accounts.average_precision'))} "
              f"role {_f(g('tracer.role_accuracy'))} "
              f"z {g('zscore.accounts.f1'):.3f}/{_f(g('zscore.accounts.average_precision'))} "
              f"iforest {g('iforest.accounts.f1'):.3f}/{_f(g('iforest.accounts.average_precision'))}", flush=True)
    return row


def _f(x, nd=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{nd}f}"


# ------------------------------------------------------------------------------------ tables
def _pm(s: pd.Series, nd: int = 3) -> str:
    s = pd.to_numeric(s, errors="coerce").dropna()
    if s.empty:
        return "–"
    if len(s) == 1:
        return f"{s.iloc[0]:.{nd}f}"
    return f"{s.mean():.{nd}f} ± {s.std(ddof=1):.{nd}f}"


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series(np.nan, index=df.index)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _targets(df: pd.DataFrame) -> list[tuple[str, str, str, pd.Series]]:
    """(scenario, target text, value shown, per seed: True met / False missed, or for comparisons a
    margin Series named ``margin`` (> 0 better, 0 tie, < 0 worse))."""
    out = []
    c = lambda name: pd.to_numeric(_col(sub, name), errors="coerce")  # noqa: E731
    for scenario in df["scenario"].unique():
        sub = df[df["scenario"] == scenario]
        if scenario == "datajam":
            out.append((scenario, "links: every criminal link found", f"criminal-link recall {_pm(c('tracer.links.criminal_recall'))}",
                        c("tracer.links.criminal_recall") >= 1.0))
            out.append((scenario, "links: no false link", f"false links {_pm(c('tracer.links.false'), 1)}", c("tracer.links.false") == 0))
            out.append((scenario, "accounts: all criminals found", f"recall {_pm(c('tracer.accounts.recall'))}", c("tracer.accounts.recall") >= 1.0))
            out.append((scenario, "accounts: every criminal with the right role", f"role accuracy {_pm(c('tracer.role_accuracy'))}",
                        c("tracer.role_accuracy") >= 1.0))
            out.append((scenario, "accounts: no normal account flagged", f"normal flagged {_pm(c('tracer.normal_flagged'), 1)}",
                        c("tracer.normal_flagged") == 0))
        elif scenario == "careful":
            out.append((scenario, "links: criminal-link recall >= 0.90", _pm(c("tracer.links.criminal_recall")), c("tracer.links.criminal_recall") >= 0.90))
            out.append((scenario, "links: precision >= 0.95", _pm(c("tracer.links.precision")), c("tracer.links.precision") >= 0.95))
            out.append((scenario, "accounts: F1 >= 0.90", _pm(c("tracer.accounts.f1")), c("tracer.accounts.f1") >= 0.90))
            out.append((scenario, "accounts: right role >= 80 %", _pm(c("tracer.role_accuracy")), c("tracer.role_accuracy") >= 0.80))
            ll = c("tracer.lookalikes_flagged.landlord").fillna(0) + c("tracer.lookalikes_flagged.employer").fillna(0)
            out.append((scenario, "accounts: zero landlords/employers flagged", f"flagged {_pm(ll, 1)}", ll == 0))
        elif scenario == "cash_relay":
            out.append((scenario, "links: criminal-link recall >= 0.80", _pm(c("tracer.links.criminal_recall")), c("tracer.links.criminal_recall") >= 0.80))
            out.append((scenario, "links: ... at precision >= 0.90", _pm(c("tracer.links.precision")), c("tracer.links.precision") >= 0.90))
            out.append((scenario, "accounts: F1 >= 0.80", _pm(c("tracer.accounts.f1")), c("tracer.accounts.f1") >= 0.80))
        # beat every peer (every seed)
        best_f1 = np.maximum(c("zscore.accounts.f1"), c("iforest.accounts.f1"))
        best_ap = np.maximum(c("zscore.accounts.average_precision"), c("iforest.accounts.average_precision"))
        for text, margin in (
                ("beats peers: account F1 vs best peer", c("tracer.accounts.f1") - best_f1),
                ("beats peers: account AP vs best peer", c("tracer.accounts.average_precision") - best_ap),
                ("beats naive: link precision", c("tracer.links.precision") - c("naive.links.precision")),
                ("beats naive: criminal-link recall", c("tracer.links.criminal_recall") - c("naive.links.criminal_recall"))):
            out.append((scenario, text, f"margin {_pm(margin)}", margin.rename("margin")))
    return out


def _provenance() -> str:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.rstrip("\n")
        except Exception:  # noqa: BLE001
            return ""
    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = [ln[3:] for ln in git("status", "--porcelain", "--", "tracer").splitlines() if ln.strip()]
    digest = hashlib.sha256()
    for path in sorted((ROOT / "tracer").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    text = f"commit `{commit}`"
    if dirty:
        text += " with uncommitted changes to " + ", ".join(f"`{p}`" for p in dirty)
    return text + f" (sha256 of tracer/*.py `{digest.hexdigest()[:12]}`)"


def render(df: pd.DataFrame, provenance: str | None = None) -> str:
    """The generated part of docs/quality.md."""
    seeds = sorted(df["seed"].unique())
    scen = [s for s in SCENARIOS if s in set(df["scenario"])] + [s for s in df["scenario"].unique() if s not in SCENARIOS]
    if provenance is None:
        provenance = str(df["code"].iloc[0]) if "code" in df and len(df) else _provenance()
    parts = [f"Run {_dt.date.today().isoformat()} on {provenance}; scenarios {', '.join(scen)}; seeds "
             f"{', '.join(map(str, seeds))}; generator default sizes; tracer `analyze` with default options. "
             f"Cells are mean ± sample std (ddof 1) across seeds. Raw runs: `docs/quality-runs.csv`."]

    parts.append("### Targets (from the issues)\n\nA target is checked on every seed; *seeds met* counts the seeds "
                 "where it holds. \"Beats\" rows: margin = tracer minus the best peer on each seed; *met* when tracer is "
                 "better on every seed, *tied* when equal on all, *partly* when better on some and never worse, *missed* "
                 "when worse on any seed.")
    rows = []
    for scenario, text, value, met in _targets(df):
        if met.name == "margin":
            margin = met.dropna().round(4)
            n, k, tie = len(margin), int((margin > 0).sum()), int((margin == 0).sum())
            worse = n - k - tie
            seeds = f"{k}/{n} better" + (f", {tie} tied" if tie else "") + (f", {worse} worse" if worse else "")
            verdict = "**met**" if n and k == n else ("tied" if not worse and not k else ("partly" if not worse else "**missed**"))
        else:
            met = met[pd.notna(met)].astype(bool)
            n, k = len(met), int(met.sum())
            seeds = f"{k}/{n}"
            verdict = "**met**" if n and k == n else ("partly" if k else "**missed**")
        rows.append([scenario, text, value, seeds, verdict])
    parts.append(_table(["scenario", "target", "tracer (mean ± std)", "seeds met", "verdict"], rows))

    parts.append("### Links: tracer vs naive exact-amount matching\n\nA predicted link (ordered account pair) is "
                 "true when money really moved between the pair (criminal or legitimate transfer, `truth_links`); "
                 "criminal-link recall counts the criminal pairs found; *criminal transfers covered* weights each "
                 "criminal pair by its number of transfers (not an issue target: it shows whether the missed pairs are "
                 "the rare ones). tracer: links with q <= 0.05.")
    rows = []
    for s in scen:
        sub = df[df["scenario"] == s]
        for m in ("tracer", "naive"):
            rows.append([s, METHOD_NAMES[m], _pm(_col(sub, f"{m}.links.precision")), _pm(_col(sub, f"{m}.links.recall")),
                         _pm(_col(sub, f"{m}.links.criminal_recall")), _pm(_col(sub, f"{m}.links.criminal_transfer_recall")),
                         _pm(_col(sub, f"{m}.links.predicted"), 0),
                         _pm(_col(sub, f"{m}.links.false"), 0)])
    parts.append(_table(["scenario", "method", "precision", "recall", "criminal-link recall",
                         "criminal transfers covered", "links predicted", "false links"], rows))

    parts.append("### Accounts: tracer vs account peers\n\nFlagged = any role other than `normal` (peers: flagged "
                 "or not). AP = average precision of the method's continuous score (tracer `score`, z-score, "
                 "IsolationForest anomaly score) over all accounts. Role accuracy: share of criminals given their "
                 "true tier (tracer only). Look-alike columns: honest accounts of that persona flagged.")
    rows = []
    for s in scen:
        sub = df[df["scenario"] == s]
        for m in ACCOUNT_METHODS:
            rows.append([s, METHOD_NAMES[m], _pm(_col(sub, f"{m}.accounts.precision")), _pm(_col(sub, f"{m}.accounts.recall")),
                         _pm(_col(sub, f"{m}.accounts.f1")), _pm(_col(sub, f"{m}.accounts.average_precision")),
                         _pm(_col(sub, f"{m}.role_accuracy")) if m == "tracer" else "n/a",
                         _pm(_col(sub, f"{m}.normal_flagged"), 1),
                         *[_pm(_col(sub, f"{m}.lookalikes_flagged.{p}"), 1) for p in LOOKALIKES]])
    parts.append(_table(["scenario", "method", "precision", "recall", "F1", "AP", "role accuracy", "normal flagged",
                         *LOOKALIKES], rows))

    parts.append("### FDR calibration of link q-values\n\nFrom link inference's `all_links` (every tested pair with "
                 "its q-value), links kept at q <= threshold. *Estimated FDR (max q)* is the target-decoy "
                 "estimate for the kept set (the largest q kept); *mean q* is the average q of the kept links "
                 "(the expected share of false links if each q were a per-link error probability, a lower bound "
                 "of the set estimate). *Measured FDR*: share of kept links not in `truth_links`. Means across seeds.")
    rows = []
    for s in scen:
        sub = df[df["scenario"] == s]
        for thr in Q_THRESHOLDS:
            rows.append([s, f"{thr:g}", _pm(_col(sub, f"fdr.{thr:g}.kept"), 0), _pm(_col(sub, f"fdr.{thr:g}.est_max"), 4),
                         _pm(_col(sub, f"fdr.{thr:g}.est_mean"), 4), _pm(_col(sub, f"fdr.{thr:g}.measured"), 4)])
    parts.append(_table(["scenario", "q threshold", "links kept", "estimated FDR (max q)", "estimated FDR (mean q)",
                         "measured FDR"], rows))

    parts.append("### Runtime (seconds, this machine)\n\ntracer: whole `analyze` on the in-memory frame (load, link "
                 "inference, features, roles, graph). Peers: from the same frame.")
    rows = []
    for s in scen:
        sub = df[df["scenario"] == s]
        rows.append([s, _pm(sub["rows"], 0), _pm(_col(sub, "tracer.seconds"), 1), _pm(_col(sub, "naive.seconds"), 2),
                     _pm(_col(sub, "zscore.seconds"), 2), _pm(_col(sub, "iforest.seconds"), 2)])
    parts.append(_table(["scenario", "rows", "tracer", "naive links", "z-score", "IsolationForest"], rows))

    parts.append("### Per seed")
    rows = []
    for _, r in df.sort_values(["scenario", "seed"], key=lambda c: c.map({s: i for i, s in enumerate(scen)}) if c.name == "scenario" else c).iterrows():
        g = lambda k, nd=3: _f(r.get(k), nd)  # noqa: E731
        rows.append([r["scenario"], r["seed"], f"{r['rows']:,}",
                     f"{g('tracer.links.precision')} / {g('tracer.links.recall')} / {g('tracer.links.criminal_recall')}",
                     f"{g('naive.links.precision')} / {g('naive.links.recall')} / {g('naive.links.criminal_recall')}",
                     f"{g('tracer.accounts.precision')} / {g('tracer.accounts.recall')} / {g('tracer.accounts.f1')}",
                     g("tracer.accounts.average_precision"), g("tracer.role_accuracy"), g("tracer.normal_flagged", 0),
                     f"{g('zscore.accounts.f1')} / {g('zscore.accounts.average_precision')}",
                     f"{g('iforest.accounts.f1')} / {g('iforest.accounts.average_precision')}",
                     g("tracer.seconds", 1)])
    parts.append(_table(["scenario", "seed", "rows", "tracer links P / R / crim. R", "naive links P / R / crim. R",
                         "tracer accounts P / R / F1", "tracer AP", "role acc.", "normal flagged", "z-score F1 / AP",
                         "IForest F1 / AP", "tracer s"], rows))
    return "\n\n".join(parts) + "\n"


_TEMPLATE = f"""# Detection quality

How well tracer finds transfers (links) and criminal accounts on the generator's scenarios, against
simple peers. Reproduce with `.venv/bin/python benchmarks/bench_quality.py --seeds 0,1,2,3,4`; the
section between the markers is rewritten by the script.

{BEGIN}
{END}
"""


def write_doc(df: pd.DataFrame, path: Path = DOC, provenance: str | None = None) -> None:
    text = path.read_text() if path.exists() else _TEMPLATE
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + "\n\n" + BEGIN + "\n" + END + "\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(head + BEGIN + "\n" + render(df, provenance) + END + tail)


def summary_text(df: pd.DataFrame) -> str:
    cols = {"tracer.links.precision": "tr link P", "tracer.links.criminal_recall": "tr crimR", "naive.links.precision": "nv link P",
            "naive.links.criminal_recall": "nv crimR", "tracer.accounts.f1": "tr F1", "tracer.accounts.average_precision": "tr AP",
            "tracer.role_accuracy": "tr role", "zscore.accounts.f1": "z F1", "zscore.accounts.average_precision": "z AP",
            "iforest.accounts.f1": "if F1", "iforest.accounts.average_precision": "if AP", "tracer.seconds": "tr s"}
    present = [c for c in cols if c in df]
    means = df.groupby("scenario", sort=False)[present].mean(numeric_only=True).rename(columns=cols)
    return means.round(3).to_string()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default 0,1,2,3,4)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated scenarios")
    ap.add_argument("--csv", default=str(RUNS_CSV), help="raw per-run results (default docs/quality-runs.csv)")
    ap.add_argument("--doc", default=str(DOC), help="markdown file whose generated section is rewritten")
    ap.add_argument("--no-doc", action="store_true", help="do not write the CSV or the markdown")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(scenarios) - set(synth.SCENARIOS)
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    code = _provenance()  # the code imported now is the code measured (editable install)
    print(f"tracer: {code}", flush=True)
    rows = []
    t0 = time.perf_counter()
    for scenario in scenarios:
        for seed in seeds:
            rows.append({**run_one(scenario, seed), "code": code})
    df = pd.DataFrame(rows)
    print(f"\n{len(rows)} runs in {time.perf_counter() - t0:.0f} s; means per scenario:\n{summary_text(df)}")
    if not args.no_doc:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.csv, index=False)
        write_doc(df, Path(args.doc), code)
        print(f"wrote {args.csv} and {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
