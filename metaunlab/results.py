"""Markdown tables of results: one formatter for every table a run or a tool prints.

`results.json` of a run holds, per setting ("5way_1shot", ...),

    {"n_way", "n_shot", "n_query", "episodes", "dataset", "protocol",
     "methods": {"sib": {"accuracy", "ci95", "steps", "minus_k0": {"mean", "ci95"}},
                 "k0": {"accuracy", "ci95", "steps", "transductive"},
                 ["sib_tuned": {..., "step_scale"}]}}

keyed "5way_1shot" at test.n_query queries per class and "5way_1shot_1query" at the other
counts of test.extra_query_counts; within-alphabet entries add "alphabets".

accuracies in percent with their 95% intervals (`evaluation.mean_and_ci95`); "minus_k0" is
the paired difference from K = 0 over the same episodes with its own 95% interval
(`evaluation.paired_difference`), and K = 0 is "transductive" where it reads the queries.
`experiments.compare` adds a "compare" section whose settings hold one entry per method.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence


def setting_name(n_way: int, n_shot: int) -> str:
    """(5, 1) -> "5way_1shot", the name of a meta-training setting and its folder."""
    return f"{n_way}way_{n_shot}shot"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def accuracy_cell(entry: Mapping | None) -> str:
    """"98.91 +- 0.12" for `{"accuracy", "ci95"}`, "n/a" for None."""
    return "n/a" if entry is None else f"{entry['accuracy']:.2f} +- {entry['ci95']:.2f}"


def setting_key(name: str) -> tuple:
    """"20way_1shot" -> (20, 1, ...): numeric order instead of results.json's sorted keys."""
    match = re.match(r"^(\d+)way_(\d+)shot(?:_(\d+)query)?", name)
    if not match:
        return (10**9, 0, 0, name)
    return (int(match[1]), int(match[2]), int(match[3] or 10**6), name)


def gain_cell(entry: Mapping | None, k0: Mapping) -> str:
    """"+1.23 +- 0.20": the paired difference from K = 0 where the entry has one, else the
    difference of the two means (results written before paired differences were kept)."""
    if entry is None:
        return "n/a"
    paired = entry.get("minus_k0")
    if paired is None:
        return f"{entry['accuracy'] - k0['accuracy']:+.2f}"
    return f"{paired['mean']:+.2f} +- {paired['ci95']:.2f}"


def sib_table(settings: Mapping[str, Mapping]) -> str:
    """SIB (K steps) against K = 0 on the same episodes, one row per setting, with SIB's
    paired difference from K = 0; with a "sib_tuned" entry (`test.step_scales`), also SIB at
    the step chosen on validation. A K = 0 that reads the queries is marked "(transductive)"."""
    tuned = any("sib_tuned" in entry["methods"] for entry in settings.values())
    rows = []
    for name in sorted(settings, key=setting_key):
        entry = settings[name]
        sib, k0 = entry["methods"]["sib"], entry["methods"]["k0"]
        row = [name, str(entry["n_query"]), str(entry["episodes"]),
               f"{accuracy_cell(sib)} (K={sib['steps']})"]
        if tuned:
            step = entry["methods"].get("sib_tuned")
            row.append("n/a" if step is None else
                       f"{accuracy_cell(step)} (x{step['step_scale']:.3g})")
        k0_mark = " (transductive)" if k0.get("transductive") else ""
        row += [accuracy_cell(k0) + k0_mark, gain_cell(sib, k0)]
        if tuned:
            row.append(gain_cell(step, k0))
        rows.append(row)
    header = ["setting", "queries per class", "episodes", "SIB"]
    header += ["SIB, step tuned on val"] if tuned else []
    header += ["K = 0", "SIB - K = 0 (paired)"]
    header += ["tuned - K = 0 (paired)"] if tuned else []
    return markdown_table(header, rows)


def methods_table(settings: Mapping[str, Mapping], setting_order: Sequence[str],
                  method_order: Sequence[str], cell=accuracy_cell,
                  transductive: Mapping[str, bool] | None = None) -> str:
    """One row per method, one column per setting; `cell(entry)` formats an entry (None
    where a setting lacks the method). With `transductive`, a column says which are."""
    header = ["method"] + (["transductive"] if transductive else []) + list(setting_order)
    rows = []
    for method in method_order:
        flag = ["yes" if transductive[method] else "no"] if transductive else []
        rows.append([method] + flag + [cell(settings[s]["methods"].get(method))
                                       for s in setting_order])
    return markdown_table(header, rows)
