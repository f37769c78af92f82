"""A human-readable report of one work dir: learning curves, accuracy against K, histograms.

`write_report(workdir)` (`python -m experiments.report`) writes, next to the run's files,

* `report_curves.png`: loss and accuracy (training batches and validation episodes)
  against step, for pretraining and for each meta-training setting (from metrics.jsonl);
* `report_accuracy_vs_k.png`: test accuracy of each trained SIB head with K synthetic
  gradient steps, K in {0, 1, 2, 3, 5, 8}, on the same few hundred test episodes;
* `report_episode_hist.png`: per-episode accuracy of SIB (the trained K) and of K = 0 on
  those episodes, and the per-episode difference;
* `report.md`: links them with the run's config, results.json and, when present, the
  method comparison of `experiments.compare`.

Units: every accuracy of metrics.jsonl, training batch or validation, is a percentage.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from metaunlab import evaluation
from metaunlab.data.episodes import EpisodeSampler, EpisodeShape
from metaunlab.errors import ConfigError
from metaunlab.methods import sib_method
from metaunlab.outputs import output_file, write_output_text
from metaunlab.results import markdown_table, methods_table, sib_table
from metaunlab.train.metrics import read_metrics
from metaunlab.train.pipeline import parse_settings
from metaunlab.train.workdir import REWRITE_BY_TRAINING, REWRITE_CONFIG, read_json
from metaunlab.trained_model import TrainedModel, setting_name

from .compare import method_names, setting_names
from .plotting import pyplot

REPORT_STEPS = (0, 1, 2, 3, 5, 8)
CURVES = "report_curves.png"
ACCURACY_VS_K = "report_accuracy_vs_k.png"
HISTOGRAM = "report_episode_hist.png"


# ---- learning curves -------------------------------------------------------------------------

def learning_curves(records: Sequence[dict]) -> dict[str, dict[str, np.ndarray]]:
    """Per training phase ("pretrain", "metatrain_5way_1shot", ...): arrays of step, loss,
    accuracy (%) of the training records and val_step, val_accuracy (%) of its "_val"
    records. Phases appear in the order the run logged them."""
    phases: dict[str, dict[str, list]] = {}
    for record in records:
        phase = record.get("phase", "")
        base = phase[:-len("_val")] if phase.endswith("_val") else phase
        if not (base == "pretrain" or base.startswith("metatrain_")):
            continue
        curves = phases.setdefault(base, {"step": [], "loss": [], "accuracy": [],
                                          "val_step": [], "val_accuracy": []})
        if phase.endswith("_val"):
            if "accuracy" in record:
                curves["val_step"].append(record["step"])
                curves["val_accuracy"].append(record["accuracy"])
        elif "loss" in record:
            curves["step"].append(record["step"])
            curves["loss"].append(record["loss"])
            curves["accuracy"].append(record.get("accuracy", np.nan))
    return {name: {k: np.asarray(v, np.float64) for k, v in curves.items()}
            for name, curves in phases.items()}


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """The mean of each value and the ``window - 1`` before it (fewer at the start).

    Args:
      values: a 1-D series, e.g. the training loss of each log step.
      window: how many values each mean covers.

    Returns:
      An array as long as ``values``.
    """
    sums = np.cumsum(np.concatenate([[0.0], np.asarray(values, np.float64)]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def plot_learning_curves(curves: dict[str, dict[str, np.ndarray]], path: str) -> None:
    plt = pyplot()
    rows = max(len(curves), 1)
    fig, axes = plt.subplots(rows, 2, figsize=(11, 2.8 * rows), squeeze=False)
    if not curves:
        for ax in axes.flat:
            ax.text(0.5, 0.5, "no training records in metrics.jsonl", ha="center")
    for (name, c), (ax_loss, ax_acc) in zip(curves.items(), axes, strict=False):
        window = max(1, len(c["loss"]) // 20)
        ax_loss.plot(c["step"], c["loss"], lw=0.6, alpha=0.35, color="tab:blue",
                     label="each log step")
        ax_loss.plot(c["step"], running_mean(c["loss"], window), lw=1.8, color="tab:blue",
                     label=f"mean of the last {window} log steps")
        ax_loss.legend(fontsize=8)
        ax_loss.set_title(f"{name}: training loss")
        ax_loss.set_xlabel("step")
        if len(c["loss"]) and np.nanmin(c["loss"]) > 0:
            ax_loss.set_yscale("log")
        ax_acc.plot(c["step"], c["accuracy"], lw=1, label="train batches")
        if len(c["val_step"]):
            ax_acc.plot(c["val_step"], c["val_accuracy"], "o-", lw=1.5,
                        label="validation episodes")
        ax_acc.set_title(f"{name}: accuracy (%)")
        ax_acc.set_xlabel("step")
        ax_acc.legend(fontsize=8)
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- accuracy against K ----------------------------------------------------------------------

def accuracy_against_k(model, test_feats: np.ndarray, test_labels: np.ndarray,
                       settings: Sequence[tuple[int, int]], *, steps: Sequence[int],
                       num_episodes: int, n_query: int, seed: int,
                       checkpoint: str = "last") -> dict[str, dict]:
    """{setting: {"steps": [...], "accuracy": [...], "ci95": [...], "per_episode": {K: accs}}}
    for each trained (n_way, n_shot) head on the same seeded test episodes."""
    lr = model.config.metatrain.inner_lr
    out = {}
    for n_way, n_shot in settings:
        shape = EpisodeShape(n_way, n_shot, n_query)
        episodes = EpisodeSampler(test_labels, shape, seed=seed, split_name="test",
                                  groups=model.split_groups("test")).sample(0, num_episodes)
        params = model.sib_params(n_way, n_shot, checkpoint)
        head = model.head(n_way, n_shot)
        per_episode = {}
        for k in steps:
            method = sib_method(params, int(k), lr, head=head)
            per_episode[int(k)] = evaluation.evaluate(method, test_feats, episodes).accuracies
        stats = [evaluation.mean_and_ci95(per_episode[int(k)]) for k in steps]
        out[setting_name(n_way, n_shot)] = {
            "steps": [int(k) for k in steps], "accuracy": [m for m, _ in stats],
            "ci95": [c for _, c in stats], "episodes": int(num_episodes),
            "per_episode": per_episode}
    return out


def plot_accuracy_vs_k(results: dict[str, dict], trained_k: int, path: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, r in results.items():
        acc, ci = np.asarray(r["accuracy"]), np.asarray(r["ci95"])
        axes[0].errorbar(r["steps"], acc, yerr=ci, marker="o", capsize=3, label=name)
        axes[1].errorbar(r["steps"], acc - acc[0], yerr=ci, marker="o", capsize=3, label=name)
    for ax, title in zip(axes, ("test accuracy (%)", "gain over K = 0 (points)"), strict=True):
        ax.axvline(trained_k, color="grey", ls="--", lw=1)
        ax.set_xlabel("synthetic gradient steps K (dashed: K used in meta-training)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].axhline(0.0, color="black", lw=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_episode_histograms(results: dict[str, dict], trained_k: int, path: str) -> None:
    plt = pyplot()
    names = list(results)
    cols = max(len(names), 1)
    fig, axes = plt.subplots(2, cols, figsize=(4.2 * cols, 6), squeeze=False)
    for col, name in enumerate(names):
        per_episode = results[name]["per_episode"]
        sib_acc, k0_acc = per_episode[trained_k], per_episode[0]
        low = float(min(sib_acc.min(), k0_acc.min()))
        bins = np.linspace(low, 100.0, 21) if low < 100.0 else np.array([99.0, 100.0])
        ax = axes[0, col]
        ax.hist(k0_acc, bins=bins, histtype="step", lw=1.5,
                label=f"K = 0 (mean {k0_acc.mean():.2f})")
        ax.hist(sib_acc, bins=bins, histtype="step", lw=1.5,
                label=f"SIB K = {trained_k} (mean {sib_acc.mean():.2f})")
        ax.set_title(f"{name}: per-episode accuracy")
        ax.set_xlabel("episode accuracy (%)")
        ax.set_ylabel("episodes")
        ax.legend(fontsize=8, loc="upper left")
        diff = sib_acc - k0_acc
        ax = axes[1, col]
        span = max(float(np.abs(diff).max()), 1.0)
        ax.hist(diff, bins=np.linspace(-span, span, 25), color="tab:purple")
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_title(f"SIB - K=0: better {np.mean(diff > 0):.0%}, worse {np.mean(diff < 0):.0%}")
        ax.set_xlabel("difference (points)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- the report ------------------------------------------------------------------------------

def _k_table(k_results: dict[str, dict]) -> str:
    steps = next(iter(k_results.values()))["steps"]
    rows = [[name] + [f"{a:.2f} +- {c:.2f}" for a, c in zip(r["accuracy"], r["ci95"],
                                                               strict=True)]
            for name, r in k_results.items()]
    return markdown_table(["setting"] + [f"K={k}" for k in steps], rows)


def format_report(config: dict, results: dict, k_results: dict[str, dict], trained_k: int,
                  curves: dict[str, dict[str, np.ndarray]], workdir: str,
                  out_dir: str | None = None) -> str:
    """report.md; links to the comparison files are relative to `out_dir` (the report's)."""
    def link(name: str) -> str:
        return os.path.relpath(os.path.join(workdir, name), out_dir or workdir)

    lines = [f"# Run report: `{os.path.abspath(workdir)}`", ""]
    data = config.get("data", {})
    lines += [
        f"* dataset: {data.get('name', '?')}, backbone: {config.get('backbone', '?')}, "
        f"settings: {config.get('settings', '?')}",
        f"* pretraining: {config.get('pretrain', {}).get('epochs', '?')} epochs; "
        f"meta-training: {config.get('metatrain', {}).get('iterations', '?')} iterations of "
        f"{config.get('metatrain', {}).get('batch_size', '?')} episodes, "
        f"K = {trained_k}, inner lr {config.get('metatrain', {}).get('inner_lr', '?')}",
    ]
    if "wall_seconds" in results:
        lines.append(f"* wall time of the run: {results['wall_seconds']:.0f} s on "
                     f"{', '.join(results.get('devices', []))}")
    settings = results.get("settings", {})
    lines += ["", "## Test results (results.json)", "",
              sib_table(settings) if settings else
              "No test results yet (results.json has no settings)."]
    lines += ["", "## Learning curves", "",
              "Training loss and accuracy of each logged batch, and the validation accuracy "
              "used for model selection, against the step of each phase.", "",
              f"![learning curves]({CURVES})", ""]
    for name, c in curves.items():
        if len(c["val_accuracy"]):
            best = int(np.argmax(c["val_accuracy"]))
            lines.append(f"* {name}: {len(c['step'])} training records, best validation "
                         f"{c['val_accuracy'][best]:.2f}% at step {int(c['val_step'][best])}")
    if k_results:
        episodes = next(iter(k_results.values()))["episodes"]
        lines += ["", "## Accuracy against K", "",
                  f"Each trained SIB head on the same {episodes} seeded test episodes with K "
                  "synthetic gradient steps at test time (K = 0: the initialization network "
                  "alone, which ignores the unlabeled queries).", "",
                  f"![accuracy against K]({ACCURACY_VS_K})", "", _k_table(k_results)]
        lines += ["", "## Per-episode accuracy: SIB against K = 0", "",
                  f"![per-episode histograms]({HISTOGRAM})", ""]
        for name, r in k_results.items():
            diff = r["per_episode"][trained_k] - r["per_episode"][0]
            lines.append(f"* {name}: SIB better on {np.mean(diff > 0):.0%} of episodes, worse "
                         f"on {np.mean(diff < 0):.0%}, equal on {np.mean(diff == 0):.0%}; "
                         f"mean difference {diff.mean():+.2f} points")
    compare = results.get("compare")
    if compare and compare.get("settings"):
        lines += ["", "## Comparison with other methods", "",
                  "From `python -m experiments.compare` (details and timings in "
                  f"[compare.md]({link('compare.md')})).", "",
                  methods_table(compare["settings"], setting_names(compare),
                                method_names(compare))]
        lines += ["", f"![method comparison]({link('compare.png')})"]
    lines += ["", "## Config", "", "<details><summary>config.json</summary>", "", "```json",
              json.dumps(config, indent=2, sort_keys=True), "```", "", "</details>", ""]
    return "\n".join(lines)


def write_report(workdir: str, *, num_episodes: int = 300, steps: Sequence[int] = REPORT_STEPS,
                 checkpoint: str = "last", output_dir: str | None = None,
                 progress: bool = True) -> dict:
    """Write the PNGs and report.md into `output_dir` (default: the work dir).

    Returns {"curves": phases, "accuracy_vs_k": {setting: {...}} (no per-episode arrays),
    "files": [...]}.
    """
    from tqdm.auto import tqdm

    pyplot()  # matplotlib is there, before anything is computed
    out_dir = output_dir or workdir
    os.makedirs(out_dir, exist_ok=True)
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise ConfigError(f"{config_path} does not exist; --workdir must be a directory "
                                "written by a metaunlab training run.")
    config = read_json(config_path, REWRITE_CONFIG)
    results_path = os.path.join(workdir, "results.json")
    results = (read_json(results_path, REWRITE_BY_TRAINING) if os.path.exists(results_path)
               else {})

    curves = learning_curves(read_metrics(workdir))
    with output_file(os.path.join(out_dir, CURVES), ".png") as partial:
        plot_learning_curves(curves, partial)
    files = [CURVES]

    model = TrainedModel.load(workdir)
    trained_k = int(model.config.metatrain.sib_steps)
    steps = sorted({int(k) for k in steps} | {0, trained_k})
    trained = [s for s in parse_settings(model.config.settings)
               if setting_name(*s) in model.trained_settings()]
    k_results: dict[str, dict] = {}
    if trained:
        feats, test_labels = model.split_features("test")
        if progress:
            tqdm.write(f"report: accuracy against K on {num_episodes} episodes per setting")
        k_results = accuracy_against_k(model, feats, test_labels, trained, steps=steps,
                                       num_episodes=num_episodes,
                                       n_query=int(model.config.test.n_query),
                                       seed=int(model.config.test.seed),
                                       checkpoint=checkpoint)
        with output_file(os.path.join(out_dir, ACCURACY_VS_K), ".png") as partial:
            plot_accuracy_vs_k(k_results, trained_k, partial)
        with output_file(os.path.join(out_dir, HISTOGRAM), ".png") as partial:
            plot_episode_histograms(k_results, trained_k, partial)
        files += [ACCURACY_VS_K, HISTOGRAM]
    write_output_text(os.path.join(out_dir, "report.md"),
                      format_report(config, results, k_results, trained_k, curves, workdir,
                                    out_dir))
    files.append("report.md")
    summary = {name: {k: v for k, v in r.items() if k != "per_episode"}
               for name, r in k_results.items()}
    return {"curves": list(curves), "accuracy_vs_k": summary, "files": files}
