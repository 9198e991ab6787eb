"""Score an analysis against the generator's truth files (accounts, roles, links)."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from sklearn.metrics import average_precision_score

TRANSFER_BANDS = [0, 1, 2, 4, 9, float("inf")]  # true transfers of a link, for recall by band
TRANSFER_LABELS = ["1", "2", "3-4", "5-9", "10+"]


def _prf(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    precision = tp / n_pred if n_pred else 1.0
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def evaluate(truth_accounts: pd.DataFrame, truth_links: pd.DataFrame, accounts: pd.DataFrame, links: pd.DataFrame) -> dict:
    """Account precision/recall/F1, average precision of the score, role accuracy, link quality.

    A predicted link is true when money really moved between the pair (criminal or legitimate);
    criminal-link recall counts the criminal pairs found.
    """
    truth = truth_accounts.assign(client_id=truth_accounts["client_id"].astype(str)).set_index("client_id")
    pred = accounts.assign(client_id=accounts["client_id"].astype(str)).set_index("client_id").reindex(truth.index)
    pred_role = pred["role"].fillna("normal")
    score = pred["score"].fillna(0.0)
    is_crim = truth["role"] != "normal"
    flagged = pred_role != "normal"
    out: dict = {"accounts": _prf(int((is_crim & flagged).sum()), int(flagged.sum()), int(is_crim.sum()))}
    out["accounts"]["average_precision"] = round(float(average_precision_score(is_crim, score)), 4) if is_crim.any() else None
    out["role_accuracy"] = round(float((pred_role[is_crim] == truth.loc[is_crim, "role"]).mean()), 4) if is_crim.any() else None
    out["normal_flagged"] = int((flagged & ~is_crim).sum())
    if "persona" in truth:
        lookalike_personas = sorted(set(truth.loc[~is_crim, "persona"]) - {"normal"})
        out["lookalikes_flagged"] = {p: int((flagged & ~is_crim & (truth["persona"] == p)).sum()) for p in lookalike_personas}
    truth_pairs = list(zip(truth_links["source"].astype(str), truth_links["target"].astype(str)))
    true_pairs = set(truth_pairs)
    crim_pairs = set(zip(*truth_links.loc[truth_links["kind"] == "criminal", ["source", "target"]].astype(str).to_numpy().T)) if (truth_links["kind"] == "criminal").any() else set()
    found = set(zip(links["source"].astype(str), links["target"].astype(str)))
    tp = len(found & true_pairs)
    out["links"] = _prf(tp, len(found), len(true_pairs))
    out["links"]["criminal_recall"] = round(len(found & crim_pairs) / len(crim_pairs), 4) if crim_pairs else None
    if "n_transfers" in truth_links:  # single transfers are indistinguishable from coincidence at density: say so
        bands = pd.cut(truth_links["n_transfers"].to_numpy(), TRANSFER_BANDS, labels=TRANSFER_LABELS)
        recall = pd.Series([p in found for p in truth_pairs]).groupby(bands, observed=True).mean()
        out["links"]["recall_by_transfers"] = {str(label): round(float(r), 4) for label, r in recall.items()}
    out["links"]["predicted"] = len(found)
    out["links"]["false"] = len(found - true_pairs)
    if "q_value" in links and len(links):
        out["links"]["estimated_fdr"] = round(float(links["q_value"].max()), 4)
    return out


def evaluate_dirs(truth_dir: str | os.PathLike, pred_dir: str | os.PathLike) -> dict:
    """:func:`evaluate` on a generator output folder and a ``tracer analyze`` output folder."""
    t, p = Path(truth_dir), Path(pred_dir)
    for path in (t / "truth_accounts.csv", t / "truth_links.csv", p / "accounts.csv", p / "links.csv"):
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing (truth from `tracer generate`, predictions from `tracer analyze`)")
    read = lambda path: pd.read_csv(path, dtype={"client_id": str, "source": str, "target": str}, keep_default_na=False, na_values=[""])
    return evaluate(read(t / "truth_accounts.csv"), read(t / "truth_links.csv"), read(p / "accounts.csv"), read(p / "links.csv"))


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    """One level of keys (``accounts.f1``) for tables."""
    flat: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat

