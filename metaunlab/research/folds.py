"""Results over folds of held-out alphabets: each fold's accuracy and their mean with a 95%
Student-t interval over folds.

Each fold's own interval measures the spread of its test episodes; the interval over folds
measures how much the accuracy depends on which alphabets are held out, which is what a
claim about unseen alphabets rests on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np
from scipy import stats

from metaunlab.results import accuracy_cell, markdown_table, setting_key
from metaunlab.train.parallel import is_primary
from metaunlab.train.workdir import write_json_atomic


def mean_over_folds(values: list[float]) -> dict[str, float]:
    """{"accuracy": mean, "ci95": half-width of the Student-t 95% interval, "folds": n}."""
    values = [float(v) for v in values]
    n = len(values)
    if n < 2:
        return {"accuracy": values[0] if values else math.nan, "ci95": math.nan, "folds": n}
    half = stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n)
    return {"accuracy": float(np.mean(values)), "ci95": float(half), "folds": n}


def summarize_folds(results: Mapping[int, Mapping]) -> dict:
    """{"folds": [k, ...], "settings": {key: {"n_way", "n_shot", "n_query", "per_fold":
    {k: {"sib", "k0"}}, "methods": {"sib": mean_over_folds, "k0": ...}}}} for the keys
    every fold has (and "sib_tuned" where every fold has it); `results` maps fold -> that
    run's results.json."""
    folds = sorted(results)
    keys = set.intersection(*(set(results[f]["settings"]) for f in folds))
    settings = {}
    for key in sorted(keys, key=setting_key):
        entries = {f: results[f]["settings"][key] for f in folds}
        first = entries[folds[0]]
        # "sib_tuned" (test.step_scales) where every fold has it.
        names = [m for m in ("sib", "sib_tuned", "k0")
                 if all(m in e["methods"] for e in entries.values())]
        per_fold = {f: {m: e["methods"][m] for m in names} for f, e in entries.items()}
        settings[key] = {
            "n_way": first["n_way"], "n_shot": first["n_shot"], "n_query": first["n_query"],
            "alphabets": {f: e.get("alphabets", []) for f, e in entries.items()},
            "per_fold": per_fold,
            "methods": {m: dict(mean_over_folds([per_fold[f][m]["accuracy"] for f in folds]),
                                steps=first["methods"][m]["steps"]) for m in names}}
    return {"folds": folds, "settings": settings}


def fold_table(summary: Mapping) -> str:
    folds = summary["folds"]
    tuned = any("sib_tuned" in e["methods"] for e in summary["settings"].values())
    header = ["setting", "queries per class"] + [f"fold {f} SIB / K = 0" for f in folds] + [
        "mean SIB"] + (["mean SIB, step tuned on val"] if tuned else []) + ["mean K = 0"]
    rows = []
    for key, entry in summary["settings"].items():
        methods = entry["methods"]
        cells = [f"{entry['per_fold'][f]['sib']['accuracy']:.2f} / "
                 f"{entry['per_fold'][f]['k0']['accuracy']:.2f}" for f in folds]
        rows.append([key, str(entry["n_query"]), *cells, accuracy_cell(methods["sib"])]
                    + ([accuracy_cell(methods.get("sib_tuned"))] if tuned else [])
                    + [accuracy_cell(methods["k0"])])
    return markdown_table(header, rows)


def write_fold_summary(workdir: str, summary: Mapping) -> str:
    """`<workdir>/folds.json` and `folds.md`; returns the table."""
    table = fold_table(summary)
    if is_primary():
        write_json_atomic(os.path.join(workdir, "folds.json"), summary)
        with open(os.path.join(workdir, "folds.md"), "w") as f:
            f.write(table + "\n")
    return table
