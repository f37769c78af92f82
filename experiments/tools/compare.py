"""Every few-shot method on the same episodes and the same frozen backbone.

`run_compare(workdir)` (`python -m experiments.compare`) embeds the test split once with
the work dir's backbone and
evaluates, on identical episodes, the inductive and transductive baselines of
`metaunlab.methods` and the work dir's trained SIB heads with K in {0, 1, 3, 5}. It writes
`compare.md` (a table), `compare.png` (accuracy bars with 95% intervals) and a `compare`
section in `results.json`; on validation episodes (`split="val"`) `compare_val.md`,
`compare_val.png` and `compare_val`, and on the meta-training classes (`split="train"`)
`compare_train.*`.

Episodes: by default `num_episodes` seeded random test-split episodes for each trained
n_way (or those of `ways`), with 1 and 5 shots and 15 queries per class. The seed is the
run's `test.seed`, so the first episodes are the ones `results.json` was computed on.
Alternatively a fixed episode file in the reference JSON format (`episodes_file` +
`image_root`).

Query distributions (`query_distributions`, e.g. ("balanced", "dirichlet:2")): each
setting is evaluated once per distribution, on the same classes and support sets (the
sampler draws imbalanced query sets from a stream of their own), with n_way * n_query
queries in every episode. Balanced settings keep their names ("5way_1shot"); the others
carry the distribution ("5way_1shot_dirichlet2"). Every entry and every method result
records its "query_distribution".

Timing: each method runs on chunks of `chunk` episodes as one jitted batch
(`metaunlab.evaluation.evaluate`, one compilation per episode shape, triggered by a warm-up
call that is not timed); the reported milliseconds per episode are the wall time of the
whole timed pass divided by the number of episodes, so they are throughput numbers for
batched evaluation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from metaunlab import evaluation
from metaunlab.data.episode_files import read_episode_file
from metaunlab.data.episodes import Episodes, EpisodeSampler, EpisodeShape
from metaunlab.data.errors import DataError
from metaunlab.data.query_sets import QueryDistribution
from metaunlab.errors import ConfigError
from metaunlab.files import WorkdirLock
from metaunlab.head import Head
from metaunlab.methods import METHODS, Method, sib_method
from metaunlab.methods.sib_head import StepScales
from metaunlab.outputs import output_file, write_output_text
from metaunlab.research.protocols import protocol_name
from metaunlab.results import methods_table
from metaunlab.train.workdir import REWRITE_BY_TRAINING, read_json, write_json_atomic
from metaunlab.trained_model import TrainedModel, setting_name

from .plotting import pyplot

# Table order: inductive first, then transductive, each roughly by publication.
DEFAULT_METHODS = ("protonet_cosine", "simpleshot", "logreg", "transductive_ft", "bd_cspn",
                   "laplacianshot", "tim_gd", "alpha_tim", "pt_map")
SIB_STEPS = (0, 1, 3, 5)
SPLITS = ("train", "val", "test")
AGAINST = "against_"  # the name prefix of another work dir's heads (`run_compare(against=)`)
MAX_BASE_IMAGES = 20_000  # images averaged for the base-class mean (a seeded subset above)


@dataclasses.dataclass
class EpisodeSet:
    """The episodes of one setting, as indices into a feature array; `query_distribution`
    names how their query sets split between classes ("file" for an episode file's)."""

    name: str
    shape: EpisodeShape
    episodes: Episodes
    query_distribution: str = "balanced"


def distribution_setting_name(n_way: int, n_shot: int, distribution: QueryDistribution) -> str:
    """"5way_1shot" for balanced query sets, "5way_1shot_dirichlet2" otherwise."""
    name = setting_name(n_way, n_shot)
    if distribution.is_balanced:
        return name
    return f"{name}_{distribution.name.replace(':', '')}"


def parse_query_distributions(specs: Sequence[str]) -> list[QueryDistribution]:
    """Distinct query distributions from "balanced" / "dirichlet:ALPHA" specs, in order."""
    if not specs:
        raise ConfigError("--query_distribution needs at least one of balanced, "
                          "dirichlet:ALPHA.")
    out: list[QueryDistribution] = []
    for spec in specs:
        try:
            distribution = QueryDistribution.parse(spec)
        except DataError as e:
            raise ConfigError(f"--query_distribution: {e}") from None
        if distribution not in out:
            out.append(distribution)
    return out


def method_order(names: Sequence[str] | None = None) -> list[Method]:
    names = list(DEFAULT_METHODS) if names is None else list(names)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {', '.join(unknown)}; known: "
                         f"{', '.join(DEFAULT_METHODS)}")
    return [METHODS[n] for n in names]


def sib_methods(head: Head, params, lr: float, steps: Sequence[int] = SIB_STEPS,
                step_scales: Sequence[float] = (1.0,), tuned: StepScales | None = None,
                tuned_steps: int | None = None) -> list[Method]:
    """SIB at each K of `steps` and each multiple of the trained step size `lr` in
    `step_scales` (K = 0 once: it takes no step): `sib_k3`, or `sib_k3_lr0.5x` at half the
    trained step size. With `tuned`, the multiples chosen on validation for K =
    `tuned_steps` (`metaunlab.research.step_tuning`), also `sib_k3_tuned` after `sib_k3`. A head
    with a balanced readout (`metatrain.balanced_readout`) also gets `sib_k0_readout`, its
    initialization network read out as the balanced assignment without a synthetic step:
    what the readout adds apart from the steps."""
    methods = []
    for k in steps:
        for scale in (step_scales if k > 0 else (1.0,)):
            name = f"sib_k{k}" if scale == 1.0 else f"sib_k{k}_lr{scale:g}x"
            methods.append(sib_method(params, k, lr * scale, name=name, head=head))
        if k == 0 and head.readout is not None:
            methods.append(sib_method(params, 0, lr, name="sib_k0_readout", readout=True,
                                      head=head))
        if tuned is not None and k == tuned_steps and k > 0:
            methods.append(sib_method(params, k, lr, name=f"sib_k{k}_tuned", step_scales=tuned,
                                      head=head))
    return methods


def compare_methods(feats: np.ndarray, episode_set: EpisodeSet, methods: Sequence[Method], *,
                    base_mean: np.ndarray | None = None, chunk: int = 100,
                    progress: bool = True, k0_transductive: bool = False) -> dict[str, dict]:
    """`{method name: {"accuracy", "ci95", "ms_per_episode", "warm_up_s", "transductive",
    "paper"}}`; every SIB head that takes steps (`sib_k<K>...`, K > 0) also has "minus_k0",
    its paired difference from its matched control (`sib_k0_readout` for a head with a
    balanced readout, else `sib_k0`) over the same episodes (`evaluation.
    paired_difference`). `k0_transductive`: the head's K = 0 reads the queries (its
    features are centred on the episode's mean), so `sib_k0` is marked transductive."""
    results, per_episode = {}, {}
    bar = tqdm(methods, desc=f"compare {episode_set.name}", leave=False,
               disable=None if progress else True)  # None: a bar only on a terminal
    for method in bar:
        bar.set_postfix(method=method.name)
        result = evaluation.evaluate(method, feats, episode_set.episodes, base_mean=base_mean,
                                     chunk=chunk, timed=True)
        per_episode[method.name] = result.accuracies
        transductive = method.is_transductive or (method.name == "sib_k0" and k0_transductive)
        results[method.name] = {"accuracy": result.accuracy, "ci95": result.ci95,
                                "query_distribution": episode_set.query_distribution,
                                "ms_per_episode": result.ms_per_episode,
                                "warm_up_s": result.warm_up_s,
                                "transductive": transductive, "paper": method.paper}
    # The matched control keeps every part of the head: its readout where it has one.
    control = next((n for n in ("sib_k0_readout", "sib_k0") if n in per_episode), None)
    if control is not None:
        for name in results:
            if name.startswith("sib_k") and not name.startswith("sib_k0"):
                results[name]["minus_k0"] = evaluation.paired_difference(
                    per_episode[name], per_episode[control])
    for name in results:  # this work dir's head against another's (`run_compare(against=)`)
        if f"{AGAINST}{name}" in per_episode:
            results[name]["minus_against"] = evaluation.paired_difference(
                per_episode[name], per_episode[f"{AGAINST}{name}"])
    return results


def against_methods(other: TrainedModel, shape: EpisodeShape,
                    checkpoint: str) -> list[Method]:
    """The SIB head of another work dir for this shape, at its trained K and step size,
    named `against_sib_k<K>`; none where it has no head for the shape."""
    if other.head_for(shape.n_way, shape.n_shot) is None:
        return []
    steps, lr = int(other.config.metatrain.sib_steps), float(other.config.metatrain.inner_lr)
    return [sib_method(other.sib_params(shape.n_way, shape.n_shot, checkpoint), steps, lr,
                       name=f"{AGAINST}sib_k{steps}", head=other.head(shape.n_way, shape.n_shot))]


def _check_same_features(model: TrainedModel, other: TrainedModel) -> None:
    """Raises unless `other` was trained on the features `model` computes: the same
    features file, or the same data and the same frozen backbone, weight for weight."""
    same = (model.features_file == other.features_file
            and model.config.data.to_dict() == other.config.data.to_dict()
            and model.config.backbone == other.config.backbone)
    if same and model.features_file is None:
        mine, theirs = (jax.tree_util.tree_leaves(m.variables) for m in (model, other))
        same = len(mine) == len(theirs) and all(
            np.array_equal(a, b) for a, b in zip(mine, theirs, strict=True))
    if not same:
        raise ConfigError(f"--against={other.workdir} was not trained on the features of "
                          f"{model.workdir} (another features file, dataset or backbone); "
                          "compare heads trained on the same frozen backbone.")


def _trained_ways(settings: Sequence[str]) -> list[int]:
    ways = set()
    for name in settings:
        head, _, _ = name.partition("way_")
        if head.isdigit():
            ways.add(int(head))
    return sorted(ways)


def run_compare(workdir: str, *, episodes_file: str | None = None, image_root: str | None = None,
                num_episodes: int = 500, seed: int | None = None, n_query: int = 15,
                shots: Sequence[int] = (1, 5), methods: Sequence[str] | None = None,
                sib_steps: Sequence[int] = SIB_STEPS, checkpoint: str = "last",
                sib_step_scales: Sequence[float] = (1.0,),
                chunk: int = 100, query_distributions: Sequence[str] = ("balanced",),
                ways: Sequence[int] | None = None, split: str = "test",
                against: str | None = None, write: bool = True,
                progress: bool = True) -> dict:
    """Evaluate every method on the same episodes; write compare.md/.png and results.json.

    `sib_step_scales`: SIB also at these multiples of its trained step size (1 = as
    trained), to tell a step of the wrong size from a step in the wrong direction.
    Random episodes come from the run's `split`: "test", "val" to choose a method, a
    setting or a training recipe without looking at the test classes, or "train", the
    classes the head was meta-trained on, to tell what its training taught it from what
    carries over to new classes. A head whose step was tuned on validation
    (`test.step_scales`) adds `sib_k<K>_tuned`; on the "val" split it is measured on the
    classes its step was chosen on. `against`: another work dir trained on the same frozen
    features, whose head for each shape runs on the same episodes as `against_sib_k<K>`;
    this head's `sib_k<K>` then has `minus_against`, the paired difference from it.
    """
    if split not in SPLITS:
        raise ConfigError(f"--split={split!r}; use one of {', '.join(SPLITS)}.")
    if (episodes_file is None) != (image_root is None):
        raise ConfigError("--episodes and --image_root go together; give both or neither.")
    distributions = parse_query_distributions(query_distributions)
    if episodes_file is not None and distributions != [QueryDistribution()]:
        raise ConfigError("--query_distribution applies to random episodes; an episode file "
                          "fixes its own query sets (leave the flag out with --episodes).")
    if not sib_step_scales or any(not scale > 0 for scale in sib_step_scales):
        raise ConfigError(f"--sib_step_scales={','.join(map(str, sib_step_scales))}: give "
                          "positive multiples of the trained step size, e.g. 0.5,1.")
    if num_episodes < 1:
        raise ConfigError(f"--num_episodes must be positive, got {num_episodes}.")
    with contextlib.ExitStack() as stack:
        if write:
            pyplot()  # matplotlib is there, before anything is computed
            stack.enter_context(WorkdirLock(workdir))  # and no run writes results.json
        started = time.time()
        model = TrainedModel.load(workdir)
        config = model.config
        other = None
        if against is not None:
            other = TrainedModel.load(against)
            _check_same_features(model, other)
        seed = config.test.seed if seed is None else seed
        baselines = method_order(methods)

        if episodes_file is not None:  # check the file before the (slow) dataset load
            episode_file = read_episode_file(episodes_file, image_root)
        try:
            train_feats, _ = model.split_features("train", max_rows=MAX_BASE_IMAGES, seed=seed)
            base_mean, base_images = train_feats.mean(axis=0), len(train_feats)
        except (DataError, ConfigError):
            if episodes_file is None:
                raise
            base_mean, base_images = None, 0  # an episode file needs no training data

        if episodes_file is None:
            feats, test_labels = model.split_features(split)
            groups = model.split_groups(split)  # within-alphabet episodes, if the run's
            trained = _trained_ways(model.trained_settings())
            if not trained:
                raise ConfigError(f"{workdir} has no meta-trained SIB head; train one first.")
            if ways is not None:  # a head that serves any way count serves them all
                untrained = sorted(n for n in set(ways)
                                   if all(model.head_for(n, k) is None for k in shots))
                if untrained:
                    raise ConfigError(f"--ways={','.join(map(str, ways))}: {workdir} has SIB "
                                      f"heads for {', '.join(map(str, trained))}-way episodes "
                                      f"only, not {', '.join(map(str, untrained))}.")
            ways = trained if ways is None else sorted(set(ways))
            episode_sets = []
            for n_way in ways:
                for n_shot in shots:
                    shape = EpisodeShape(n_way, n_shot, n_query)
                    for distribution in distributions:
                        sampler = EpisodeSampler(test_labels, shape, seed=seed,
                                                 split_name=split, groups=groups,
                                                 query_distribution=distribution)
                        episode_sets.append(EpisodeSet(
                            distribution_setting_name(n_way, n_shot, distribution), shape,
                            sampler.sample(0, num_episodes), distribution.name))
            source = {"kind": "random", "split": split, "seed": int(seed),
                      "protocol": protocol_name(config),
                      "episodes_per_setting": int(num_episodes), "n_query": int(n_query),
                      "query_distributions": [d.name for d in distributions]}
        else:
            feats = model.embed_files(episode_file.paths)
            episode_sets = [
                EpisodeSet(f"{setting_name(shape.n_way, shape.n_shot)}_{shape.n_query}query",
                           shape, eps, "file")
                for shape, (_, eps) in sorted(episode_file.groups.items(),
                                              key=lambda kv: _shape_key(kv[0]))]
            source = {"kind": "file", "episodes_file": os.path.abspath(episodes_file),
                      "image_root": os.path.abspath(image_root),
                      "episodes": episode_file.num_episodes}

        settings = {}
        for episode_set in episode_sets:
            shape = episode_set.shape
            entry_methods = list(baselines)
            sib_head = model.head_for(shape.n_way, shape.n_shot)
            k0_transductive = False
            if sib_head is not None:  # else no SIB head for this n_way: the baselines still run
                params = model.sib_params(shape.n_way, shape.n_shot, checkpoint)
                head = model.head(shape.n_way, shape.n_shot)
                k0_transductive = head.k0_reads_queries
                entry_methods += sib_methods(
                    head, params, config.metatrain.inner_lr, sib_steps, sib_step_scales,
                    tuned=model.step_scales(shape.n_way, shape.n_shot, checkpoint),
                    tuned_steps=config.metatrain.sib_steps)
            if other is not None:
                entry_methods += against_methods(other, shape, checkpoint)
            results = compare_methods(feats, episode_set, entry_methods, base_mean=base_mean,
                                      chunk=chunk, progress=progress,
                                      k0_transductive=k0_transductive)
            settings[episode_set.name] = {
                "n_way": shape.n_way, "n_shot": shape.n_shot, "n_query": shape.n_query,
                "query_distribution": episode_set.query_distribution,
                "episodes": len(episode_set.episodes), "sib_head": sib_head,
                # results.json sorts keys; this keeps the table order (inductive first).
                "method_order": list(results), "methods": results}
            if progress:
                best = max(results, key=lambda m: results[m]["accuracy"])
                tqdm.write(f"compare {episode_set.name}: best {best} "
                           f"{results[best]['accuracy']:.2f}%")

        out = {"workdir": os.path.abspath(workdir), "dataset": config.data.name,
               "against": None if against is None else os.path.abspath(against),
               "backbone": config.backbone, "checkpoint": checkpoint, "source": source,
               "base_mean_images": int(base_images), "sib_trained_steps":
               int(config.metatrain.sib_steps), "sib_lr": float(config.metatrain.inner_lr),
               "chunk": int(chunk), "devices": [str(d) for d in jax.devices()],
               "setting_order": list(settings), "settings": settings}
        out["wall_seconds"] = time.time() - started
        if write:
            write_outputs(workdir, out)
        return out


def _shape_key(shape: EpisodeShape) -> tuple[int, int, int]:
    return shape.n_way, shape.n_shot, shape.n_query


# ---- outputs ---------------------------------------------------------------------------------

def output_name(results: dict) -> str:
    """"compare" for test episodes, "compare_val" / "compare_train" for validation / training
    episodes, which never replace the test comparison: the stem of the .md and .png files
    and the key in results.json."""
    split = results["source"].get("split", "test")
    return "compare" if split == "test" else f"compare_{split}"


def write_outputs(workdir: str, results: dict) -> None:
    name = output_name(results)
    write_output_text(os.path.join(workdir, f"{name}.md"), format_markdown(results))
    with output_file(os.path.join(workdir, f"{name}.png"), ".png") as partial:
        plot_comparison(results, partial)
    path = os.path.join(workdir, "results.json")
    existing = read_json(path, REWRITE_BY_TRAINING) if os.path.exists(path) else {}
    existing[name] = results
    write_json_atomic(path, existing)


def setting_names(results: dict) -> list[str]:
    """Settings in evaluation order (results.json sorts its keys; the order is kept aside)."""
    return list(results.get("setting_order", results["settings"]))


def method_names(results: dict) -> list[str]:
    """Method names in table order, across settings (a file may lack SIB for some)."""
    names: list[str] = []
    for entry in (results["settings"][s] for s in setting_names(results)):
        order = entry.get("method_order", list(entry["methods"]))
        names += [n for n in order if n not in names]
    return names


def _lookup(results: dict, name: str) -> dict | None:
    for entry in results["settings"].values():
        if name in entry["methods"]:
            return entry["methods"][name]
    return None


def _time_cell(entry: dict | None) -> str:
    return "n/a" if entry is None else f"{entry['ms_per_episode']:.2f} ({entry['warm_up_s']:.1f} s)"


def _paired_cell(entry: dict | None, key: str = "minus_k0") -> str:
    if entry is None or key not in entry:
        return "n/a"
    return f"{entry[key]['mean']:+.2f} +- {entry[key]['ci95']:.2f}"


def _methods_having(results: dict, names: Sequence[str], methods: Sequence[str],
                    key: str) -> list[str]:
    """The methods with `key` (a paired difference) in at least one of the settings."""
    return [m for m in methods
            if any(key in results["settings"][s]["methods"].get(m, {}) for s in names)]


def format_markdown(results: dict) -> str:
    source = results["source"]
    if source["kind"] == "random":
        shares = ", ".join(source.get("query_distributions", ["balanced"]))
        episodes = (f"{source['episodes_per_setting']} seeded random episodes per setting from "
                    f"the {source.get('split', 'test')} split (seed {source['seed']}, "
                    f"{source['n_query']} queries per "
                    f"class on average; query sets: {shares}, on the same support sets)")
    else:
        episodes = (f"the {source['episodes']} episodes of {source['episodes_file']} "
                    f"(images under {source['image_root']})")
    base = (f"the mean feature of {results['base_mean_images']} training-split images"
            if results["base_mean_images"] else "the support mean (training data unavailable)")
    lines = [
        "# Few-shot methods on the same frozen features", "",
        f"Work dir `{results['workdir']}`: {results['dataset']}, {results['backbone']} "
        f"backbone (frozen), SIB checkpoint `{results['checkpoint']}` (trained with "
        f"K = {results['sib_trained_steps']}, lr {results['sib_lr']:g}).",
        f"Episodes: {episodes}; every method sees exactly the same episodes.",
        f"Base-class mean for SimpleShot and LaplacianShot: {base}.",
        f"Accuracy: mean over episodes +- 1.96 std / sqrt(episodes), in percent. ms/episode: "
        f"wall time of batches of {results['chunk']} episodes under jit, after "
        f"compilation, on {', '.join(results['devices'])} (throughput, not latency; noisy "
        "on a shared machine).",
        f"Total wall time: {results['wall_seconds']:.0f} s.", "",
        "## Accuracy (%)", "",
    ]
    names, methods = setting_names(results), method_names(results)
    transductive = {m: _lookup(results, m)["transductive"] for m in methods}
    lines.append(methods_table(results["settings"], names, methods, transductive=transductive))
    paired = _methods_having(results, names, methods, "minus_k0")
    if paired:
        lines += ["", "## SIB's steps against the same head at K = 0 (paired difference over "
                  "the same episodes, +- its 95% interval)", "",
                  methods_table(results["settings"], names, paired, cell=_paired_cell)]
    against = _methods_having(results, names, methods, "minus_against")
    if against:
        lines += ["", f"## Against the heads of `{results['against']}` (`{AGAINST}*`; paired "
                  "difference over the same episodes, +- its 95% interval)", "",
                  methods_table(results["settings"], names, against,
                                cell=lambda entry: _paired_cell(entry, "minus_against"))]
    lines += ["", "## Milliseconds per episode (in brackets: seconds of the untimed first "
              "call, i.e. compilation plus one chunk)", "",
              methods_table(results["settings"], names, methods, cell=_time_cell)]
    lines += ["", "## Settings", ""]
    for setting in names:
        entry = results["settings"][setting]
        head = entry["sib_head"] or "none (no SIB head for this n_way)"
        shares = entry.get("query_distribution", "balanced")
        per_class = ("queries per class" if shares in ("balanced", "file") else
                     f"queries per class on average, {shares} class proportions")
        lines.append(f"* {setting}: {entry['n_way']}-way {entry['n_shot']}-shot, "
                     f"{entry['n_query']} {per_class}, {entry['episodes']} episodes, "
                     f"SIB head {head}")
    lines += ["", "## Methods", ""]
    for method in method_names(results):
        info = _lookup(results, method)
        lines.append(f"* `{method}` ({'transductive' if info['transductive'] else 'inductive'}"
                     f"): {info['paper']}")
    lines += ["", f"![accuracy per method and setting]({output_name(results)}.png)", ""]
    return "\n".join(lines)


def plot_comparison(results: dict, path: str) -> None:
    plt = pyplot()
    settings = setting_names(results)
    cols = min(2, len(settings))
    rows = -(-len(settings) // cols)
    names = method_names(results)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 0.38 * len(names) * rows + 1.5),
                             squeeze=False)
    for ax in axes.flat[len(settings):]:
        ax.set_visible(False)
    for ax, setting in zip(axes.flat, settings, strict=False):
        methods = results["settings"][setting]["methods"]
        shown = [n for n in names if n in methods]
        acc = np.array([methods[n]["accuracy"] for n in shown])
        ci = np.array([methods[n]["ci95"] for n in shown])
        colours = ["tab:green" if n.startswith("sib_") else
                   "tab:orange" if methods[n]["transductive"] else "tab:blue" for n in shown]
        y = np.arange(len(shown))
        # Bars grow from chance, the floor every method is measured against: a bar's length
        # is what the method adds over guessing, so a 1-point gap looks like 1 point.
        chance = 100.0 / results["settings"][setting]["n_way"]
        ax.barh(y, acc - chance, left=chance, xerr=ci, color=colours, capsize=3)
        ax.set_yticks(y, shown)
        ax.invert_yaxis()
        ax.set_xlim(chance, 100.0 + 0.12 * (100.0 - chance))  # room for the labels
        ax.axvline(100.0, color="grey", lw=0.8)
        ax.set_xlabel(f"accuracy (%), bars from chance ({chance:.0f}%)")
        ax.set_title(f"{setting} ({results['settings'][setting]['episodes']} episodes)")
        for yi, a, c in zip(y, acc, ci, strict=True):
            ax.text(a + c, yi, f" {a:.1f}", va="center", fontsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("tab:blue", "tab:orange",
                                                             "tab:green")]
    fig.legend(handles, ["inductive", "transductive", "SIB heads (K steps; K = 0 the control)"],
               loc="lower center", ncol=3, frameon=False)
    fig.suptitle(f"{results['dataset']}: accuracy +- 95% interval on identical episodes")
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
