"""experiments.tools.compare (and `python -m experiments.compare`) end to end on a tiny trained
work dir (this module's copy of the demo's character run, `tiny_omniglot_run` in
tests/conftest.py), and
experiments.tools.report on the same work dir.

The report test stays in this module: it reads the `compare` section of results.json that
test_compare_cli_writes_table_plot_and_results_section writes into the module's work dir (the
`compare_section` fixture runs the same CLI call when, under pytest-xdist, this worker did
not run that test).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from experiments.tools.compare import DEFAULT_METHODS, run_compare
from experiments.tools.report import write_report
from metaunlab import evaluation
from metaunlab.data.episode_files import fixed_episodes_to_json
from metaunlab.data.episodes import EpisodeSampler, EpisodeShape
from metaunlab.errors import ConfigError
from metaunlab.methods import get_method, sib_method
from metaunlab.train.pipeline import load_splits
from metaunlab.trained_model import TrainedModel

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tiny_omniglot_run):
    """(work dir, config) of the tiny Omniglot run, this module's own copy."""
    return tiny_omniglot_run.workdir, tiny_omniglot_run.config


def _run_compare_cli(run_script, workdir):
    return run_script("experiments.compare", f"--workdir={workdir}", "--num_episodes=6",
                      "--shots=1", "--chunk=4",  # 2 chunks, the last one padded
                      "--sib_steps=0,3")


@pytest.fixture
def compare_section(tiny, run_script):
    """The `compare` section of the tiny work dir's results.json, as
    test_compare_cli_writes_table_plot_and_results_section writes it. In module order that
    test has run already and this does nothing; a pytest-xdist worker that was not sent that
    test runs the same CLI call here."""
    workdir, _ = tiny
    if "compare" not in json.loads((workdir / "results.json").read_text()):
        proc = _run_compare_cli(run_script, workdir)
        assert proc.returncode == 0, proc.stderr


def test_compare_cli_writes_table_plot_and_results_section(tiny, run_script):
    workdir, config = tiny
    proc = _run_compare_cli(run_script, workdir)
    assert proc.returncode == 0, proc.stderr
    assert "| pt_map |" in proc.stdout
    on_disk = json.loads((workdir / "results.json").read_text())
    assert "settings" in on_disk and "5way_1shot" in on_disk["settings"]  # kept
    out = on_disk["compare"]
    setting = out["settings"]["5way_1shot"]
    expected = list(DEFAULT_METHODS) + ["sib_k0", "sib_k3"]
    assert setting["method_order"] == expected and set(setting["methods"]) == set(expected)
    assert setting["episodes"] == 6 and setting["sib_head"] == "5way_1shot"
    for name, entry in setting["methods"].items():
        assert 0.0 <= entry["accuracy"] <= 100.0 and entry["ms_per_episode"] > 0, name
        assert entry["transductive"] == (name not in ("protonet_cosine", "simpleshot",
                                                      "logreg", "sib_k0"))
    assert out["base_mean_images"] > 0

    # Same episodes as the pipeline's test (same seed): SIB numbers agree with evaluation.
    model = TrainedModel.load(str(workdir))
    test = load_splits(config.data).test
    episodes = EpisodeSampler(test, EpisodeShape(5, 1, 15), seed=config.test.seed).sample(0, 6)
    head = sib_method(model.sib_params(5, 1), 3, config.metatrain.inner_lr)
    want = evaluation.evaluate(head, model.embed(test.images), episodes).accuracies
    assert setting["methods"]["sib_k3"]["accuracy"] == pytest.approx(want.mean(), abs=1e-4)

    table = (workdir / "compare.md").read_text()
    for name in expected:
        assert f"| {name} |" in table
    assert "5way_1shot" in table and "ms" in table
    assert "| sib_k3 | " in table.split("SIB's steps against the same head at K = 0")[1]
    assert (workdir / "compare.png").read_bytes()[:8] == PNG_MAGIC


def test_compare_on_an_episode_file(tiny, tmp_path, extract_test_images):
    workdir, config = tiny
    test = load_splits(config.data).test
    image_root = tmp_path / "images"
    paths = extract_test_images(Path(config.data.root), test.class_names, image_root)
    episodes = EpisodeSampler(test, EpisodeShape(5, 1, 2), seed=5).sample(0, 3)
    episode_file = tmp_path / "episodes.json"
    episode_file.write_text(json.dumps(fixed_episodes_to_json(episodes, paths)))
    out = run_compare(str(workdir), episodes_file=str(episode_file),
                      image_root=str(image_root), methods=["protonet_cosine", "bd_cspn"],
                      sib_steps=(), write=False, progress=False)
    assert out["source"]["kind"] == "file" and list(out["settings"]) == ["5way_1shot_2query"]
    setting = out["settings"]["5way_1shot_2query"]
    assert setting["episodes"] == 3 and setting["sib_head"] == "5way_1shot"
    assert list(setting["methods"]) == ["protonet_cosine", "bd_cspn"]


def test_report_writes_plots_and_markdown(tiny, compare_section, tmp_path):
    workdir, config = tiny
    out = write_report(str(workdir), num_episodes=5, steps=(0, 8), output_dir=str(tmp_path),
                       progress=False)
    assert out["curves"] == ["pretrain", "metatrain_5way_1shot"]
    trained = config.metatrain.sib_steps
    assert trained not in (0, 8)
    assert out["accuracy_vs_k"]["5way_1shot"]["steps"] == [0, trained, 8]  # + the trained K
    for name in ("report_curves.png", "report_accuracy_vs_k.png", "report_episode_hist.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC, name
    report = (tmp_path / "report.md").read_text()
    for name in ("report_curves.png", "report_accuracy_vs_k.png", "report_episode_hist.png",
                 "5way_1shot", '"settings": "5way_1shot"', "K=8", "compare.md"):
        assert name in report, name


def test_compare_cli_reports_bad_flags_in_one_sentence(tiny, run_script):
    workdir, _ = tiny
    proc = run_script("experiments.compare", f"--workdir={workdir}", "--episodes=x.json")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    assert "--image_root" in proc.stderr and "Traceback" not in proc.stderr


def test_compare_balanced_and_dirichlet_columns(tiny):
    workdir, _ = tiny
    out = run_compare(str(workdir), num_episodes=4, n_query=3, shots=(1,),
                      methods=["protonet_cosine", "pt_map"], sib_steps=(3,), chunk=4,
                      query_distributions=("balanced", "dirichlet:2", "Dirichlet:2"),
                      write=False, progress=False)
    assert out["setting_order"] == ["5way_1shot", "5way_1shot_dirichlet2"]
    assert out["source"]["query_distributions"] == ["balanced", "dirichlet:2"]
    for name, shares in (("5way_1shot", "balanced"), ("5way_1shot_dirichlet2", "dirichlet:2")):
        setting = out["settings"][name]
        assert setting["query_distribution"] == shares and setting["n_query"] == 3
        assert list(setting["methods"]) == ["protonet_cosine", "pt_map", "sib_k3"]
        for entry in setting["methods"].values():
            assert entry["query_distribution"] == shares and 0 <= entry["accuracy"] <= 100
    with pytest.raises(Exception, match="dirichlet:ALPHA"):
        run_compare(str(workdir), query_distributions=("zipf",), write=False, progress=False)
    with pytest.raises(Exception, match=r"--ways=5,20: .* not 20"):  # only a 5-way head
        run_compare(str(workdir), ways=(5, 20), write=False, progress=False)


def test_compare_on_an_imbalanced_episode_file(tiny, tmp_path):
    """An episode file with unequal (and zero) query counts per class runs every method,
    SIB included, on its padded, masked episodes."""
    workdir, config = tiny
    test = load_splits(config.data).test
    paths = [f"img{i}.png" for i in range(len(test.labels))]
    image_root = tmp_path / "images"
    image_root.mkdir()
    from PIL import Image
    episodes = EpisodeSampler(test, EpisodeShape(5, 1, 3), seed=5, query_totals=(6, 15),
                              query_distribution="dirichlet:1").sample(0, 5)
    for i in np.unique(np.concatenate([episodes.support_idx.ravel(),
                                       episodes.query_idx.ravel()])):  # the images it names
        Image.fromarray(test.images[i][..., 0]).save(image_root / paths[i])
    episode_file = tmp_path / "episodes.json"
    episode_file.write_text(json.dumps(fixed_episodes_to_json(episodes, paths)))
    out = run_compare(str(workdir), episodes_file=str(episode_file), image_root=str(image_root),
                      methods=["protonet_cosine", "tim_gd"], sib_steps=(3,), write=False,
                      progress=False)
    assert out["source"]["episodes"] == 5
    assert sum(s["episodes"] for s in out["settings"].values()) == 5
    for setting in out["settings"].values():
        assert set(setting["methods"]) == {"protonet_cosine", "tim_gd", "sib_k3"}
    model = TrainedModel.load(str(workdir))
    result = model.evaluate_episode_file(str(episode_file), str(image_root))
    assert result["episodes"] == 5 and 0 <= result["methods"]["sib"]["accuracy"] <= 100


def test_compare_on_validation_episodes_keeps_the_test_comparison(tiny, compare_section):
    """--split=val draws its episodes from the validation classes, which the pipeline's own
    validation episodes also use, and writes compare_val.* beside the test comparison."""
    workdir, config = tiny
    val = load_splits(config.data).val
    out = run_compare(str(workdir), split="val", num_episodes=5, n_query=2, shots=(1,), seed=7,
                      methods=["protonet_cosine"], sib_steps=(0,), chunk=5, progress=False)
    assert out["source"]["split"] == "val"
    episodes = EpisodeSampler(val, EpisodeShape(5, 1, 2), seed=7,
                              split_name="val").sample(0, 5)
    model = TrainedModel.load(str(workdir))
    feats, _ = model.split_features("val")
    expected = evaluation.evaluate(get_method("protonet_cosine"), feats, episodes)
    entry = out["settings"]["5way_1shot"]["methods"]["protonet_cosine"]
    assert entry["accuracy"] == pytest.approx(expected.accuracy, abs=1e-4)
    on_disk = json.loads((workdir / "results.json").read_text())
    assert on_disk["compare_val"]["source"]["split"] == "val"
    assert on_disk["compare"]["source"]["split"] == "test"  # not replaced
    assert "the val split" in (workdir / "compare_val.md").read_text()
    assert (workdir / "compare_val.png").exists()
    with pytest.raises(Exception, match="--split='validation'"):
        run_compare(str(workdir), split="validation", write=False, progress=False)


def test_compare_on_the_meta_training_classes(tiny, compare_section):
    """--split=train draws its episodes from the classes the head was meta-trained on and
    writes compare_train.* beside the test comparison."""
    workdir, config = tiny
    train = load_splits(config.data).train
    out = run_compare(str(workdir), split="train", num_episodes=5, n_query=2, shots=(1,),
                      seed=7, methods=["protonet_cosine"], sib_steps=(0,), chunk=5,
                      progress=False)
    assert out["source"]["split"] == "train"
    episodes = EpisodeSampler(train, EpisodeShape(5, 1, 2), seed=7,
                              split_name="train").sample(0, 5)
    assert int(np.max(episodes.support_idx)) < len(train.labels)
    feats, _ = TrainedModel.load(str(workdir)).split_features("train")
    expected = evaluation.evaluate(get_method("protonet_cosine"), feats, episodes)
    entry = out["settings"]["5way_1shot"]["methods"]["protonet_cosine"]
    assert entry["accuracy"] == pytest.approx(expected.accuracy, abs=1e-4)
    on_disk = json.loads((workdir / "results.json").read_text())
    assert on_disk["compare_train"]["source"]["split"] == "train"
    assert on_disk["compare"]["source"]["split"] == "test"
    assert "the train split" in (workdir / "compare_train.md").read_text()


def test_sib_at_multiples_of_its_trained_step_size(tiny):
    """--sib_step_scales adds SIB at multiples of the trained step size, each equal to
    sib_method at that step; K = 0 appears once; a non-positive scale is refused."""
    workdir, config = tiny
    out = run_compare(str(workdir), num_episodes=5, n_query=2, shots=(1,), seed=7,
                      methods=["protonet_cosine"], sib_steps=(0, 3), sib_step_scales=(1, 4),
                      chunk=5, write=False, progress=False)
    methods = out["settings"]["5way_1shot"]["methods"]
    assert set(methods) == {"protonet_cosine", "sib_k0", "sib_k3", "sib_k3_lr4x"}
    model = TrainedModel.load(str(workdir))
    feats, labels = model.split_features("test")
    episodes = EpisodeSampler(labels, EpisodeShape(5, 1, 2), seed=7,
                              split_name="test").sample(0, 5)
    params = model.sib_params(5, 1)
    lr = config.metatrain.inner_lr
    k0 = evaluation.evaluate(sib_method(params, 0, lr), feats, episodes).accuracies
    for name, scale in (("sib_k3", 1.0), ("sib_k3_lr4x", 4.0)):
        expected = evaluation.evaluate(sib_method(params, 3, lr * scale), feats, episodes)
        assert methods[name]["accuracy"] == pytest.approx(expected.accuracy, abs=1e-4)
        # each head that steps is paired with the same head at K = 0 on the same episodes
        paired = evaluation.paired_difference(expected.accuracies, k0)
        assert methods[name]["minus_k0"] == pytest.approx(paired, abs=1e-4)
    assert "minus_k0" not in methods["sib_k0"] and not methods["sib_k0"]["transductive"]
    with pytest.raises(Exception, match="sib_step_scales"):
        run_compare(str(workdir), sib_step_scales=(0.0,), write=False, progress=False)


def test_crowding_cli_reports_splits_and_the_heads_accuracy(tiny, run_script):
    """`python -m experiments.crowding` prints a crowding row per split and, per K, the head's
    accuracy on the seeded episodes (equal to evaluating the head on them) with its shares;
    a way with no trained head is refused by name."""
    workdir, config = tiny
    proc = run_script("experiments.crowding", f"--workdir={workdir}", "--ways=5", "--n_query=2",
                      "--num_episodes=5", "--seed=7")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1]
            for line in proc.stdout.splitlines() if line.startswith("| ")}
    for split in ("train", "val", "test"):
        between, within, norm = (float(x) for x in rows[split])
        assert -1.0 <= between <= 1.0 and -1.0 <= within <= 1.0 and 0.0 <= norm <= 1.0
    model = TrainedModel.load(str(workdir))
    feats, labels = model.split_features("test")
    episodes = EpisodeSampler(labels, EpisodeShape(5, 1, 2), seed=7,
                              split_name="test").sample(0, 5)
    mt = config.metatrain
    for steps in (0, mt.sib_steps):
        accuracy, share, predicted = rows[str(steps)]
        expected = evaluation.evaluate(sib_method(model.sib_params(5, 1), steps, mt.inner_lr),
                                       feats, episodes)
        assert float(accuracy.split("+-")[0]) == pytest.approx(expected.accuracy, abs=0.01)
        assert 0.2 <= float(share) <= 1.0  # at least 1 / N of the queries
        assert 1.0 <= float(predicted.split("of")[0]) <= 5.0
    from experiments.tools.crowding import crowding_report
    with pytest.raises(Exception, match="--ways=20"):
        crowding_report(str(workdir), n_way=20, n_query=2, num_episodes=5, seed=7,
                        split="test")


def test_head_study_scores_each_recipe_against_its_matched_k0_on_validation(tiny):
    """Each recipe meta-trains its own head; SIB and K = 0 are scored on the same validation
    episodes, the paired difference is SIB's minus K = 0's per episode, the baselines see the
    same episodes, and a recipe naming no metatrain field is refused."""
    from experiments.tools.head_study import format_study, parse_variants, run_head_study

    workdir, _ = tiny
    variants = parse_variants('{"plain": {"iterations": 4}, '
                              '"mixed": {"iterations": 4, "query_distribution": '
                              '"balanced,dirichlet:2"}}')
    study = run_head_study(str(workdir), variants, settings=[(5, 1)], query_counts=[2],
                           distributions=["balanced", "dirichlet:2"], episodes=6,
                           baselines=["protonet_cosine"], progress=False)
    assert study["split"] == "val"
    assert study["cells"] == ["5way_1shot_q2_balanced", "5way_1shot_q2_dir2"]
    for recipe in ("plain", "mixed"):
        for cell in study["cells"]:
            entry = study["results"][recipe][cell]
            assert len(entry["sib"]) == len(entry["k0"]) == 1
            assert entry["minus_k0"][0]["mean"] == pytest.approx(entry["sib"][0] - entry["k0"][0])
            # the run tunes its step on validation: so is every head of a study
            assert entry["tuned_minus_k0"][0]["mean"] == pytest.approx(
                entry["sib_tuned"][0] - entry["k0"][0])
    assert 0 <= study["baselines"]["5way_1shot_q2_dir2"]["protonet_cosine"]["accuracy"] <= 100
    assert "| mixed | 5way_1shot_q2_dir2 |" in format_study(study)
    with pytest.raises(Exception, match="not a metatrain field"):
        run_head_study(str(workdir), {"bad": {"no_such_field": 1}}, settings=[(5, 1)],
                       query_counts=[2], distributions=["balanced"], episodes=2,
                       baselines=[], progress=False)
    with pytest.raises(Exception, match="not JSON"):
        parse_variants("{plain")


def test_compare_against_another_work_dir_pairs_its_heads_on_the_same_episodes(tiny, tmp_path):
    """--against: another work dir's head runs on the same episodes and each head of this one
    gets its paired difference from it; a copy of the work dir is its exact match, and a
    work dir trained on other data is refused."""
    from experiments.tools.compare import format_markdown

    workdir, config = tiny
    other = tmp_path / "other"
    shutil.copytree(workdir, other)
    out = run_compare(str(workdir), num_episodes=5, n_query=2, shots=(1,), seed=7, methods=[],
                      sib_steps=(config.metatrain.sib_steps,), against=str(other), chunk=5,
                      write=False, progress=False)
    methods = out["settings"]["5way_1shot"]["methods"]
    mine = f"sib_k{config.metatrain.sib_steps}"
    theirs = f"against_{mine}"
    assert mine in methods and list(methods)[-1] == theirs
    assert methods[theirs]["accuracy"] == methods[mine]["accuracy"]
    assert methods[mine]["minus_against"] == pytest.approx({"mean": 0.0, "ci95": 0.0})
    assert f"## Against the heads of `{other}`" in format_markdown(out)
    stored = json.loads((other / "config.json").read_text())
    stored["data"]["split_seed"] += 1
    (other / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ConfigError, match="was not trained on the features of"):
        run_compare(str(workdir), against=str(other), write=False, progress=False)
