"""The two Omniglot protocols end to end: `python -m experiments.omniglot` runs the character
split and held-out alphabets with within-alphabet episodes, each in its own work dir, on a
cut of the real archives with 5 characters of each of the 8 alphabets (`five_per_alphabet`
and `omniglot_demo`, tests/conftest.py)."""

import json
import re

import pytest

from experiments.configs.omniglot import get_config as omniglot_config
from metaunlab.data.omniglot import MINIMAL_ALPHABET_FOLDS, alphabet_of
from metaunlab.train.pipeline import load_splits

PER_ALPHABET = 5  # characters of each alphabet in `five_per_alphabet` (tests/conftest.py)


def test_within_alphabet_split_holds_out_whole_alphabets(five_per_alphabet):
    config = omniglot_config("within_alphabet")
    config.data.root = str(five_per_alphabet)
    splits = load_splits(config.data)
    alphabets = {name: {alphabet_of(c) for c in getattr(splits, name).class_names}
                 for name in ("train", "val", "test")}
    test, val = MINIMAL_ALPHABET_FOLDS[config.data.alphabet_fold]
    assert alphabets["test"] == set(test) and alphabets["val"] == set(val)
    assert not alphabets["train"] & (set(test) | set(val))
    assert len(alphabets["train"]) == 5
    assert splits.test.num_classes == 2 * PER_ALPHABET  # test characters are not rotated


def test_demo_runs_both_protocols_each_in_its_own_workdir(omniglot_demo):
    """The demo's command cut to seconds (`omniglot_demo`, run once per test session; its
    character run serves the tests of evaluation, prediction and comparison)."""
    workdir = omniglot_demo.workdir
    summary = json.loads((workdir / "results.json").read_text())["protocols"]
    assert set(summary) == {"character", "within_alphabet"}
    for protocol in ("character", "within_alphabet"):
        run = json.loads((workdir / protocol / "results.json").read_text())
        assert run == summary[protocol] and run["protocol"] == protocol
        keys = {"5way_1shot": 15, "5way_1shot_1query": 1}  # --config.test.extra_query_counts=1
        assert set(run["settings"]) == set(keys)
        for key, n_query in keys.items():
            entry = run["settings"][key]
            assert (entry["protocol"], entry["n_way"], entry["n_shot"], entry["n_query"]) == (
                protocol, 5, 1, n_query)
            assert 20.0 < entry["methods"]["sib"]["accuracy"] <= 100.0
        if protocol == "within_alphabet":
            assert run["settings"]["5way_1shot"]["alphabets"] == sorted(
                MINIMAL_ALPHABET_FOLDS[0][0])
        stored = json.loads((workdir / protocol / "config.json").read_text())
        # overrides reach both protocols (--config.metatrain.iterations=10,
        # --config.test.step_scales=1,4)
        assert stored["metatrain"]["iterations"] == 10
        assert stored["test"]["step_scales"] == "1,4"
        # held-out alphabets meta-train with centred, power-transformed features, the
        # character split does not; both meta-train on balanced and imbalanced query sets
        # and assume no balance
        assert stored["metatrain"]["center_features"] == (protocol == "within_alphabet")
        assert stored["metatrain"]["power_transform"] == (protocol == "within_alphabet")
        assert stored["metatrain"]["query_distribution"] == "balanced,dirichlet:2"
        assert not stored["metatrain"]["balanced_readout"]
    table = (workdir / "results.md").read_text()
    assert "## character" in table and "## within_alphabet" in table
    assert "5way_1shot_1query" in omniglot_demo.stdout.split("## character")[-1]
    # On this CPU machine the two protocols ran side by side, each logging to its work dir,
    # and the parent showed their lines as they came.
    for protocol in ("character", "within_alphabet"):
        log = (workdir / protocol / "log.txt").read_text()
        assert "test 5way_1shot_1query" in log
        assert f"[{protocol}] test 5way_1shot_1query" in omniglot_demo.stdout
        # A log file gets lines, not progress-bar frames: one per log step, and the
        # compilation of each phase's step once.
        assert "\r" not in log and "it/s]" not in log and "step/s]" not in log
        assert re.search(r"^pretrain step 5/\d+: loss [\d.]+, acc [\d.]+%", log, re.M)
        assert log.count("metatrain_5way_1shot: first call (compiling the step) took") == 1


def test_fold_summary_is_the_mean_over_folds_with_a_student_t_interval(tmp_path):
    from metaunlab.research.folds import summarize_folds, write_fold_summary

    def run(sib, k0):
        return {"settings": {"20way_1shot_1query": {
            "n_way": 20, "n_shot": 1, "n_query": 1, "alphabets": ["A"],
            "methods": {"sib": {"accuracy": sib, "ci95": 0.5, "steps": 3},
                        "k0": {"accuracy": k0, "ci95": 0.5, "steps": 0}}}}}

    summary = summarize_folds({0: run(90.0, 85.0), 1: run(94.0, 87.0), 2: run(92.0, 86.0)})
    sib = summary["settings"]["20way_1shot_1query"]["methods"]["sib"]
    assert sib["accuracy"] == pytest.approx(92.0) and sib["folds"] == 3
    assert sib["ci95"] == pytest.approx(4.303 * 2.0 / 3 ** 0.5, rel=1e-3)  # t(0.975, 2) = 4.303
    table = write_fold_summary(str(tmp_path), summary)
    assert "92.00 +- 4.97" in table and (tmp_path / "folds.json").is_file()
    assert "tuned" not in table and "sib_tuned" not in sib

    def tuned(sib, step, k0):
        entry = run(sib, k0)
        entry["settings"]["20way_1shot_1query"]["methods"]["sib_tuned"] = {
            "accuracy": step, "ci95": 0.5, "steps": 3, "step_scale": 4.0}
        return entry

    summary = summarize_folds({0: tuned(90.0, 93.0, 85.0), 1: tuned(94.0, 95.0, 87.0)})
    methods = summary["settings"]["20way_1shot_1query"]["methods"]
    assert list(methods) == ["sib", "sib_tuned", "k0"]
    assert methods["sib_tuned"]["accuracy"] == pytest.approx(94.0)
    assert "mean SIB, step tuned on val" in write_fold_summary(str(tmp_path), summary)
    # A fold without it: the mean is of what every fold has.
    mixed = summarize_folds({0: tuned(90.0, 93.0, 85.0), 1: run(94.0, 87.0)})
    assert list(mixed["settings"]["20way_1shot_1query"]["methods"]) == ["sib", "k0"]
