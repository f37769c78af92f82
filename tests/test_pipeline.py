"""End to end on a few real Omniglot characters and on fixture folders; CLI errors."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from experiments.configs.cifar_fs import get_config as cifar_fs_config
from experiments.configs.omniglot import get_config as omniglot_config
from metaunlab import evaluation
from metaunlab.data import augment
from metaunlab.data.episode_files import fixed_episodes_to_json
from metaunlab.data.episodes import EpisodeSampler, EpisodeShape
from metaunlab.data.errors import DataError
from metaunlab.pipeline import build_backbone, load_splits, train_and_evaluate
from metaunlab.trained_model import TrainedModel

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def few_characters(tmp_path_factory, omniglot_small1, first_characters_archive) -> Path:
    """A real Omniglot archive cut down to the first 40 characters (same layout)."""
    out = tmp_path_factory.mktemp("omniglot") / "images_background.zip"
    first_characters_archive(omniglot_small1, out, 40)
    return out.parent


def _tiny(config, data_root, settings="5way_1shot"):
    config.data.root = str(data_root)
    config.settings = settings
    config.val_episodes = 20
    config.pretrain.epochs = 1
    config.pretrain.warmup_steps = 5
    config.pretrain.decay_epochs = ()
    config.pretrain.log_every = 5
    config.metatrain.iterations = 10
    config.metatrain.batch_size = 2
    config.metatrain.val_every = 5
    config.metatrain.log_every = 5
    config.test.episodes = 30
    return config


def _omniglot_tiny(data_root):
    config = _tiny(omniglot_config(), data_root)
    config.data.fractions = (0.5, 0.25, 0.25)
    return config


@pytest.fixture(scope="module")
def omniglot_run(few_characters, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    results = train_and_evaluate(_omniglot_tiny(few_characters), str(workdir))
    return workdir, results


def test_omniglot_end_to_end_writes_a_self_describing_workdir(omniglot_run):
    workdir, _ = omniglot_run
    for name in ("config.json", "metrics.jsonl", "results.json", "results.md", "model.json"):
        assert (workdir / name).is_file(), name
    assert any((workdir / "tensorboard").iterdir())
    for stage in ("pretrain/last", "pretrain/best", "metatrain/5way_1shot/last",
                  "metatrain/5way_1shot/best"):
        assert any((workdir / stage).iterdir()), stage
    on_disk = json.loads((workdir / "results.json").read_text())
    entry = on_disk["settings"]["5way_1shot"]
    assert {k: entry[k] for k in ("dataset", "n_way", "n_shot", "n_query", "episodes")} == {
        "dataset": "omniglot", "n_way": 5, "n_shot": 1, "n_query": 15, "episodes": 30}
    for method in ("sib", "k0"):
        assert 20.0 < entry["methods"][method]["accuracy"] <= 100.0  # far above chance
        assert entry["methods"][method]["ci95"] > 0
    assert on_disk["wall_seconds"] > 0
    assert on_disk["metatrain_source"] == "features"  # Omniglot trains without randomness
    phases = {json.loads(line)["phase"] for line in (workdir / "metrics.jsonl").open()}
    assert {"pretrain", "pretrain_val", "metatrain_5way_1shot",
            "metatrain_5way_1shot_val"} <= phases


def test_rerun_with_the_same_workdir_resumes_without_retraining(omniglot_run, few_characters):
    workdir, results = omniglot_run
    lines_before = (workdir / "metrics.jsonl").read_text().count("\n")
    again = train_and_evaluate(_omniglot_tiny(few_characters), str(workdir))
    assert again["settings"] == results["settings"]  # same checkpoints, same test episodes
    new_lines = (workdir / "metrics.jsonl").read_text().splitlines()[lines_before:]
    assert not [line for line in new_lines if '"phase": "pretrain"' in line
                or '"phase": "metatrain_5way_1shot"' in line]


def test_workdir_with_another_config_is_refused(omniglot_run, few_characters):
    workdir, _ = omniglot_run
    config = _omniglot_tiny(few_characters)
    config.metatrain.lr = 0.5
    with pytest.raises(ValueError, match=r"metatrain\.lr"):
        train_and_evaluate(config, str(workdir))


def test_evaluate_episode_file_matches_the_pipeline_evaluation(omniglot_run, few_characters,
                                                               tmp_path):
    """Episodes written as files and read back give the numbers of the in-memory path."""
    workdir, _ = omniglot_run
    config = _omniglot_tiny(few_characters)
    test = load_splits(config.data).test
    image_root = tmp_path / "images"
    paths = []
    with zipfile.ZipFile(few_characters / "images_background.zip") as archive:
        for name in sorted(archive.namelist()):
            if name.endswith(".png") and "/".join(name.split("/")[1:3]) in test.class_names:
                rel = "/".join(name.split("/")[1:])
                (image_root / rel).parent.mkdir(parents=True, exist_ok=True)
                (image_root / rel).write_bytes(archive.read(name))
                paths.append(rel)
    assert len(paths) == len(test)  # dataset order: sorted classes, then sorted file names
    episodes = EpisodeSampler(test, EpisodeShape(5, 1, 4), seed=9).sample(0, 12)
    episode_file = tmp_path / "episodes.json"
    episode_file.write_text(json.dumps(fixed_episodes_to_json(episodes, paths)))

    model = TrainedModel.load(str(workdir))
    got = model.evaluate_episode_file(str(episode_file), str(image_root))
    feats = model.embed(test.images)
    want = evaluation.evaluate_sib(model.sib_params(5, 1), feats, episodes,
                                   steps=config.metatrain.sib_steps,
                                   lr=config.metatrain.inner_lr)
    assert got["episodes"] == 12
    for method in ("sib", "k0"):
        assert got["methods"][method]["accuracy"] == pytest.approx(
            want[method]["accuracy"], abs=1e-6)


def test_evaluate_cli_writes_output(omniglot_run, few_characters, tmp_path, run_evaluate_cli):
    workdir, _ = omniglot_run
    image_root = tmp_path / "images"
    with zipfile.ZipFile(few_characters / "images_background.zip") as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".png"))[:200]
        for name in names:
            (image_root / name).parent.mkdir(parents=True, exist_ok=True)
            (image_root / name).write_bytes(archive.read(name))
    by_class = {}
    for name in names:
        by_class.setdefault(os.path.dirname(name), []).append(name)
    classes = sorted(by_class)[:5]
    record = {"Support": [by_class[c][:2] for c in classes],
              "Query": [by_class[c][2:5] for c in classes]}
    written = run_evaluate_cli(workdir, [record, record], image_root, tmp_path)
    assert written["episodes"] == 2 and set(written["methods"]) == {"sib", "k0"}


def test_cifar_fs_reference_layout_runs_with_augmentation(tmp_path, write_reference_layout):
    root = tmp_path / "cifar-fs"
    write_reference_layout(root, 32, classes_per_split=6, per_class=20)
    config = _tiny(cifar_fs_config("1shot"), root)
    config.backbone = "conv4"  # the published WRN-28-10 is too slow for a unit test on CPU
    config.metatrain.n_query = 5
    config.test.n_query = 5
    config.pretrain.batch_size = 32
    results = train_and_evaluate(config, str(tmp_path / "w"))
    assert results["metatrain_source"] == "images"  # crop, flip, jitter: faithful path
    entry = results["settings"]["5way_1shot"]
    assert entry["methods"]["sib"]["accuracy"] > 20.0


def test_reference_val_episode_file_is_used_when_present(tmp_path, write_reference_layout):
    from metaunlab.pipeline import validation_episodes

    root = tmp_path / "mini"
    write_reference_layout(root, 8, classes_per_split=5, per_class=4)
    config = _tiny(cifar_fs_config("1shot"), root)
    config.data.image_size = 8
    splits = load_splits(config.data)
    record = {"Support": [[p] for p in splits.val_paths[::4]],
              "Query": [[p] for p in splits.val_paths[1::4]]}
    (root / "val1000Episode_5_way_1_shot.json").write_text(json.dumps([record] * 3))
    episodes = validation_episodes(config, splits, EpisodeShape(5, 1, 1))
    assert episodes.batch_size == 3
    np.testing.assert_array_equal(episodes.support_idx[0], np.arange(0, 20, 4))


def test_missing_omniglot_data_is_one_clear_sentence(tmp_path):
    config = _omniglot_tiny(tmp_path / "nowhere")
    with pytest.raises(DataError, match="nowhere"):
        train_and_evaluate(config, str(tmp_path / "w"))
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.omniglot", f"--workdir={tmp_path / 'w2'}",
         f"--data_dir={tmp_path / 'nowhere'}"], cwd=ROOT, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert str(tmp_path / "nowhere") in proc.stderr


def test_missing_reference_layout_says_what_to_put_where(tmp_path):
    config = _tiny(cifar_fs_config("1shot"), tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"neither the reference layout train/.*cifar-100-python"):
        train_and_evaluate(config, str(tmp_path / "w"))


def test_too_many_ways_for_the_test_split_is_a_clear_error(few_characters, tmp_path):
    config = _omniglot_tiny(few_characters)
    config.settings = "20way_1shot"  # only 10 test characters in the 40-character cut
    config.pretrain.epochs = 0
    with pytest.raises(DataError, match="n_way=20"):
        train_and_evaluate(config, str(tmp_path / "w"))


def test_too_few_images_per_class_is_a_clear_error(few_characters, tmp_path):
    config = _omniglot_tiny(few_characters)
    config.metatrain.n_query = 25  # Omniglot has 20 drawings per character
    config.pretrain.epochs = 0
    with pytest.raises(DataError, match="images"):
        train_and_evaluate(config, str(tmp_path / "w"))


def test_bad_settings_string_is_a_clear_error():
    from metaunlab.pipeline import parse_settings

    assert parse_settings("5way_1shot, 20way_5shot") == [(5, 1), (20, 5)]
    with pytest.raises(ValueError, match=r"--config\.settings"):
        parse_settings("5-way")


def test_cached_augmented_views_mode_trains_and_keeps_its_cache(few_characters, tmp_path):
    config = _omniglot_tiny(few_characters)
    config.metatrain.transform = "omniglot_shift"
    config.metatrain.source = "features"
    config.metatrain.feature_views = 2
    results = train_and_evaluate(config, str(tmp_path / "w"))
    assert results["metatrain_source"] == "features_views2"
    cache = tmp_path / "w" / "feature_cache" / "train_views2.npy"
    views = np.load(cache)
    assert views.shape[1] == 2 and not np.allclose(views[:, 0], views[:, 1])
    assert results["settings"]["5way_1shot"]["methods"]["sib"]["accuracy"] > 20.0


def test_auto_source_is_faithful_when_meta_training_augments(few_characters, tmp_path):
    from metaunlab.pipeline import meta_training_source

    config = _omniglot_tiny(few_characters)
    config.metatrain.transform = "omniglot_shift"
    splits = load_splits(config.data)
    backbone, transform = build_backbone(config, splits)
    source, feature_fn, train_transform, mode = meta_training_source(
        config, backbone, backbone.variables, splits.train.images, transform, str(tmp_path))
    assert mode == "images" and source is splits.train.images
    assert train_transform == augment.OMNIGLOT_SHIFT and feature_fn == backbone.features
