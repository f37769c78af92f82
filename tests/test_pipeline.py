"""End to end on a few real Omniglot characters and on fixture folders; CLI errors."""

import json
import os

import ml_collections
import numpy as np
import pytest

from experiments.configs.cifar_fs import get_config as cifar_fs_config
from metaunlab import evaluation
from metaunlab.data import augment
from metaunlab.data.episode_files import fixed_episodes_to_json
from metaunlab.data.episodes import EpisodeSampler, EpisodeShape
from metaunlab.data.errors import DataError
from metaunlab.train.pipeline import build_backbone, load_splits, train_and_evaluate
from metaunlab.trained_model import TrainedModel


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


def test_omniglot_end_to_end_writes_a_self_describing_workdir(tiny_omniglot_run):
    workdir = tiny_omniglot_run.workdir
    for name in ("config.json", "metrics.jsonl", "results.json", "results.md", "model.json"):
        assert (workdir / name).is_file(), name
    assert any((workdir / "tensorboard").iterdir())
    for stage in ("pretrain/last", "pretrain/best", "metatrain/5way_1shot/last",
                  "metatrain/5way_1shot/best"):
        assert any((workdir / stage).iterdir()), stage
    on_disk = json.loads((workdir / "results.json").read_text())
    entry = on_disk["settings"]["5way_1shot"]
    assert {k: entry[k] for k in ("dataset", "n_way", "n_shot", "n_query", "episodes")} == {
        "dataset": "omniglot", "n_way": 5, "n_shot": 1, "n_query": 15,
        "episodes": tiny_omniglot_run.config.test.episodes}
    for method in ("sib", "k0"):
        assert 20.0 < entry["methods"][method]["accuracy"] <= 100.0  # far above chance
        assert entry["methods"][method]["ci95"] > 0
    assert on_disk["wall_seconds"] > 0
    assert on_disk["metatrain_source"] == "features"  # Omniglot trains without randomness
    phases = {json.loads(line)["phase"] for line in (workdir / "metrics.jsonl").open()}
    assert {"pretrain", "pretrain_val", "metatrain_5way_1shot",
            "metatrain_5way_1shot_val"} <= phases


def test_rerun_with_the_same_workdir_resumes_without_retraining(tiny_omniglot_run):
    workdir = tiny_omniglot_run.workdir
    results = json.loads((workdir / "results.json").read_text())
    lines_before = (workdir / "metrics.jsonl").read_text().count("\n")
    again = train_and_evaluate(tiny_omniglot_run.config, str(workdir))
    # same checkpoints, same test episodes: the same results (as results.json stores them)
    assert json.loads(json.dumps(again["settings"])) == results["settings"]
    new_lines = (workdir / "metrics.jsonl").read_text().splitlines()[lines_before:]
    assert not [line for line in new_lines if '"phase": "pretrain"' in line
                or '"phase": "metatrain_5way_1shot"' in line]


def test_workdir_with_another_config_is_refused(tiny_omniglot_run):
    config = tiny_omniglot_run.config
    config.metatrain.lr = 0.5
    with pytest.raises(ValueError, match=r"metatrain\.lr"):
        train_and_evaluate(config, str(tiny_omniglot_run.workdir))


def test_evaluate_episode_file_matches_the_pipeline_evaluation(tiny_omniglot_run, tmp_path,
                                                               extract_test_images):
    """Episodes written as files and read back give the numbers of the in-memory path."""
    workdir, config = tiny_omniglot_run.workdir, tiny_omniglot_run.config
    test = load_splits(config.data).test
    image_root = tmp_path / "images"
    paths = extract_test_images(tiny_omniglot_run.data, test.class_names, image_root)
    assert len(paths) == len(test)  # dataset order: sorted classes, then sorted file names
    episodes = EpisodeSampler(test, EpisodeShape(5, 1, 4), seed=9).sample(0, 12)
    episode_file = tmp_path / "episodes.json"
    episode_file.write_text(json.dumps(fixed_episodes_to_json(episodes, paths)))

    model = TrainedModel.load(str(workdir))
    got = model.evaluate_episode_file(str(episode_file), str(image_root))
    feats = model.embed(test.images)
    scales = model.step_scales(5, 1)
    assert scales is not None  # the demo's config tunes the step on validation
    want = evaluation.evaluate_sib(model.head(5, 1), model.sib_params(5, 1), feats, episodes,
                                   steps=config.metatrain.sib_steps,
                                   lr=config.metatrain.inner_lr, step_scales=scales)
    assert got["episodes"] == 12
    assert got["by_shape"]["5way_1shot_4query"]["sib_tuned"]["step_scale"] == pytest.approx(
        scales.scale_at(4))
    for method in ("sib", "sib_tuned", "k0"):
        assert got["methods"][method]["accuracy"] == pytest.approx(
            want[method]["accuracy"], abs=1e-6)


def test_evaluate_cli_writes_output(tiny_omniglot_run, tmp_path, run_evaluate_cli,
                                    omniglot_pngs):
    image_root = tmp_path / "images"
    images = _class_images(omniglot_pngs(tiny_omniglot_run.data), 5, 5)
    for files in images.values():
        for name, data in files:
            (image_root / name).parent.mkdir(parents=True, exist_ok=True)
            (image_root / name).write_bytes(data)
    record = {"Support": [[n for n, _ in files[:2]] for files in images.values()],
              "Query": [[n for n, _ in files[2:]] for files in images.values()]}
    written = run_evaluate_cli(tiny_omniglot_run.workdir, [record, record], image_root,
                               tmp_path)
    assert written["episodes"] == 2 and set(written["methods"]) == {"sib", "sib_tuned", "k0"}


@pytest.mark.slow
def test_cifar_fs_reference_layout_runs_with_augmentation(tmp_path, write_reference_layout):
    """Pretraining and meta-training with augmentation from the reference layout. In the
    default suite: meta-training from augmented images on the reference layout, in the
    published checkpoint's continued run (tests/interop/test_workdir_import.py), and
    pretraining with augmentation, in the Omniglot demo (`omniglot_demo`)."""
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
    from metaunlab.train.pipeline import validation_episodes

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


def test_missing_omniglot_data_is_one_clear_sentence(tmp_path, run_script, tiny_omniglot_config):
    config = tiny_omniglot_config(tmp_path / "nowhere")
    with pytest.raises(DataError, match="nowhere"):
        train_and_evaluate(config, str(tmp_path / "w"))
    # One protocol, run in this process; that an error in a protocol run in a process of its
    # own reaches the parent is checked in tests/experiments/test_concurrent_runs.py.
    proc = run_script("experiments.omniglot", f"--workdir={tmp_path / 'w2'}",
                      f"--data_dir={tmp_path / 'nowhere'}", "--protocols=character")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert str(tmp_path / "nowhere") in proc.stderr


def test_missing_reference_layout_says_what_to_put_where(tmp_path):
    config = _tiny(cifar_fs_config("1shot"), tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"neither the reference layout train/.*cifar-100-python"):
        train_and_evaluate(config, str(tmp_path / "w"))


def test_too_many_ways_for_the_test_split_is_a_clear_error(few_characters, tmp_path,
                                                           tiny_omniglot_config):
    config = tiny_omniglot_config(few_characters)
    config.settings = "20way_1shot"  # only 10 test characters in the 40-character cut
    config.pretrain.epochs = 0
    with pytest.raises(DataError, match="n_way=20"):
        train_and_evaluate(config, str(tmp_path / "w"))


def test_too_few_images_per_class_is_a_clear_error(few_characters, tmp_path,
                                                   tiny_omniglot_config):
    config = tiny_omniglot_config(few_characters)
    config.metatrain.n_query = 25  # Omniglot has 20 drawings per character
    config.pretrain.epochs = 0
    with pytest.raises(DataError, match="images"):
        train_and_evaluate(config, str(tmp_path / "w"))


def test_bad_settings_string_is_a_clear_error():
    from metaunlab.train.pipeline import parse_settings

    assert parse_settings("5way_1shot, 20way_5shot") == [(5, 1), (20, 5)]
    with pytest.raises(ValueError, match=r"--config\.settings"):
        parse_settings("5-way")


@pytest.mark.slow
def test_cached_augmented_views_mode_trains_and_keeps_its_cache(few_characters, tmp_path,
                                                                tiny_omniglot_config):
    config = tiny_omniglot_config(few_characters)
    config.metatrain.transform = "omniglot_shift"
    config.metatrain.source = "features"
    config.metatrain.feature_views = 2
    results = train_and_evaluate(config, str(tmp_path / "w"))
    assert results["metatrain_source"] == "features_views2"
    cache = tmp_path / "w" / "feature_cache" / "train_views2.npy"
    views = np.load(cache)
    assert views.shape[1] == 2 and not np.allclose(views[:, 0], views[:, 1])
    assert results["settings"]["5way_1shot"]["methods"]["sib"]["accuracy"] > 20.0


def test_auto_source_is_faithful_when_meta_training_augments(few_characters, tmp_path,
                                                             tiny_omniglot_config):
    from metaunlab.train.pipeline import meta_training_source

    config = tiny_omniglot_config(few_characters)
    config.metatrain.transform = "omniglot_shift"
    splits = load_splits(config.data)
    backbone, transform = build_backbone(config, splits)
    source, feature_fn, train_transform, mode = meta_training_source(
        config, backbone, backbone.variables, splits.train.images, transform, str(tmp_path))
    assert mode == "images" and source is splits.train.images
    assert train_transform == augment.OMNIGLOT_SHIFT and feature_fn == backbone.features


def _class_images(pngs, count, per_class):
    """{character: [(alphabet/character/file.png, bytes)] * per_class} for the first `count`
    characters of `pngs` (the `omniglot_pngs` of a data folder)."""
    by_class = {}
    for name, png in pngs.items():
        by_class.setdefault(os.path.dirname(name), []).append((name, png))
    return {c: by_class[c][:per_class] for c in sorted(by_class)[:count]}


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_predict_cli_labels_folders_as_evaluate_scores_the_same_episode(
        tiny_omniglot_run, tmp_path, run_evaluate_cli, run_script, omniglot_pngs, tree_of,
        umask_022):
    """Both only read the work dir: they write their outputs, through symlinks (kept) with
    the umask's mode, and nothing into it."""
    import csv

    workdir = tiny_omniglot_run.workdir
    before = tree_of(workdir)
    images = _class_images(omniglot_pngs(tiny_omniglot_run.data), 5, 20)
    support, queries, image_root = tmp_path / "support", tmp_path / "queries", tmp_path / "all"
    truth, record = {}, {"Support": [], "Query": []}
    for c, files in images.items():
        label = c.replace("/", "_")
        (support / label).mkdir(parents=True)
        (support / label / "s.png").write_bytes(files[0][1])
        queries.mkdir(exist_ok=True)
        for i, (_, data) in enumerate(files[1:5]):
            (queries / f"{label}_{i}.png").write_bytes(data)
            truth[f"{label}_{i}.png"] = label
        for name, data in files[:5]:  # the same episode as a reference-format file
            (image_root / name).parent.mkdir(parents=True, exist_ok=True)
            (image_root / name).write_bytes(data)
        record["Support"].append([files[0][0]])
        record["Query"].append([n for n, _ in files[1:5]])
    out = tmp_path / "predictions.csv"
    outputs = {out: tmp_path / "kept" / "predictions.csv",
               # where `run_evaluate_cli` has evaluate write its --output
               tmp_path / "evaluate_output.json": tmp_path / "kept" / "evaluate.json"}
    (tmp_path / "kept").mkdir()
    for link, target in outputs.items():
        os.symlink(target, link)
    proc = run_script("experiments.predict", f"--workdir={workdir}", f"--support_dir={support}",
                      f"--query_dir={queries}", f"--output={out}")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 20
    accuracy = {key: 100.0 * np.mean([truth[os.path.basename(r["path"])] == r[key]
                                      for r in rows]) for key in ("label", "label_k0")}
    written = run_evaluate_cli(workdir, [record], image_root, tmp_path)
    for link, target in outputs.items():
        assert os.readlink(link) == str(target) and (target.stat().st_mode & 0o777) == 0o644
    # evaluate counts in float32 (60.0000038 for 12 of 20): equal up to its rounding.
    assert written["methods"]["sib"]["accuracy"] == pytest.approx(accuracy["label"], abs=1e-4)
    assert written["methods"]["k0"]["accuracy"] == pytest.approx(accuracy["label_k0"], abs=1e-4)
    # At the step tuned on validation, as evaluate's sib_tuned on the same episode.
    model = TrainedModel.load(str(workdir))
    tuned = model.predict_folders(str(support), str(queries), step="tuned")
    tuned_accuracy = 100.0 * np.mean([truth[os.path.basename(p)] == label
                                      for p, label in zip(tuned.paths, tuned.labels,
                                                          strict=True)])
    assert written["methods"]["sib_tuned"]["accuracy"] == pytest.approx(tuned_accuracy,
                                                                        abs=1e-4)
    from metaunlab.errors import ConfigError
    with pytest.raises(ConfigError, match=r"--step=tuned: .*\(best checkpoint\) has no step"):
        model.predict_folders(str(support), str(queries), checkpoint="best", step="tuned")

    # 95 queries, more than the 75 of meta-training: two transductive chunks, every query
    # predicted, through the library call.
    for c, files in images.items():
        for i, (_, data) in enumerate(files[5:]):
            (queries / f"{c.replace('/', '_')}_more{i}.png").write_bytes(data)
    predictions = TrainedModel.load(str(workdir)).predict_folders(str(support), str(queries))
    assert len(predictions.paths) == 95 and predictions.probabilities.shape == (95, 5)
    np.testing.assert_allclose(predictions.probabilities.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(predictions.k0_probabilities.sum(1), 1.0, atol=1e-5)
    assert tree_of(workdir) == before


def test_predict_refuses_a_way_count_with_no_trained_head(tiny_omniglot_run, tmp_path,
                                                          omniglot_pngs):
    from metaunlab.errors import ConfigError

    workdir = tiny_omniglot_run.workdir
    for c, files in _class_images(omniglot_pngs(tiny_omniglot_run.data), 3, 2).items():
        (tmp_path / "s" / c.replace("/", "_")).mkdir(parents=True)
        (tmp_path / "s" / c.replace("/", "_") / "a.png").write_bytes(files[0][1])
        (tmp_path / "q").mkdir(exist_ok=True)
        (tmp_path / "q" / f"{c.replace('/', '_')}.png").write_bytes(files[1][1])
    with pytest.raises(ConfigError, match=r"has 3 classes, but .* has SIB heads only for "
                                          r"5way_1shot; .* in a new work dir"):
        TrainedModel.load(str(workdir)).predict_folders(str(tmp_path / "s"), str(tmp_path / "q"))


def _write_features(path, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for offset, split in ((0, "train"), (20, "val"), (40, "test")):
        classes = 10 if split == "train" else 6
        centres = rng.normal(size=(classes, dim)) * 3
        labels = np.repeat(np.arange(classes), 20)
        arrays[f"{split}_features"] = np.abs(centres[labels] + rng.normal(size=(len(labels), dim)))
        arrays[f"{split}_labels"] = labels + offset
    np.savez(path, **arrays)


@pytest.fixture(scope="module")
def features_run(tmp_path_factory):
    """(work dir, config, results) of a run on a features file (no backbone), its step size
    tuned on validation at 1 and 15 queries per class."""
    from experiments.configs.features import get_config as features_config

    folder = tmp_path_factory.mktemp("features")
    _write_features(folder / "feats.npz")
    config = _tiny(features_config(), folder / "feats.npz")
    config.test.extra_query_counts = "1"
    config.test.step_scales = "0.25,4"
    results = train_and_evaluate(config, str(folder / "w"))
    return folder / "w", config, results


def test_a_features_file_meta_trains_evaluates_and_compares(features_run, tmp_path):
    from experiments.tools.compare import run_compare
    from metaunlab.errors import ConfigError

    workdir, config, results = features_run
    assert results["metatrain_source"] == "features_file"
    assert not (workdir / "pretrain").exists()  # no backbone, nothing pretrained
    entry = results["settings"]["5way_1shot"]["methods"]
    assert entry["sib"]["accuracy"] > 50.0 and entry["k0"]["accuracy"] > 50.0
    out = run_compare(str(workdir), num_episodes=6, shots=(1,),
                      methods=["protonet_cosine", "pt_map"], sib_steps=(0, 3), write=False,
                      progress=False)
    methods = out["settings"]["5way_1shot"]["methods"]
    # K = 3, the trained K, also at the step tuned on validation
    assert list(methods) == ["protonet_cosine", "pt_map", "sib_k0", "sib_k3", "sib_k3_tuned"]
    assert out["base_mean_images"] == 200
    model = TrainedModel.load(str(workdir))
    feats, labels = model.split_features("test")
    assert feats.shape == (120, 16) and labels.max() == 5
    with pytest.raises(ConfigError, match="has no backbone to embed images"):
        model.embed_files(["x.png"])
    config = ml_collections.ConfigDict(config.to_dict())
    config.data.root = ""
    with pytest.raises(ConfigError, match="name it with --data_dir"):
        train_and_evaluate(config, str(tmp_path / "w2"))


def test_a_second_run_on_a_busy_work_dir_is_refused(tmp_path, few_characters,
                                                   tiny_omniglot_config):
    from metaunlab.errors import ConfigError
    from metaunlab.files import WorkdirLock

    (tmp_path / "w").mkdir()
    with WorkdirLock(tmp_path / "w"):  # another run holds it
        with pytest.raises(ConfigError, match=r"w is in use by process \d+"):
            train_and_evaluate(tiny_omniglot_config(few_characters), str(tmp_path / "w"))
    assert not (tmp_path / "w" / "config.json").exists()


def test_non_finite_features_stop_the_run_naming_the_image():
    from metaunlab.errors import NonFiniteError

    def broken_backbone(variables, images):
        feats = images.reshape(len(images), -1)
        return feats.at[3].set(np.nan)

    with pytest.raises(NonFiniteError, match=r"NaN or infinite features for image 3 of 8 "
                                             r"\(embed test\)"):
        evaluation.embed(broken_backbone, None, np.zeros((8, 4, 4, 1), np.uint8),
                         lambda x: x.astype(np.float32), desc="embed test")


def test_mirrored_training_characters_are_new_classes(few_characters, tiny_omniglot_config):
    config = tiny_omniglot_config(few_characters)
    plain = load_splits(config.data)
    config.data.mirror_splits = ("train",)
    mirrored = load_splits(config.data)
    assert mirrored.train.num_classes == 2 * plain.train.num_classes  # rotations of both
    assert sum(name.endswith("@mirror@rot90") for name in mirrored.train.class_names) == (
        plain.train.num_classes // 4)
    assert mirrored.val.class_names == plain.val.class_names  # val and test untouched
    assert mirrored.test.class_names == plain.test.class_names
    config.data.mirror_splits = ("training",)
    from metaunlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data.mirror_splits names 'training'.*train, val"):
        load_splits(config.data)


def test_a_step_tuned_on_validation_is_tested_beside_the_reference(features_run):
    from metaunlab.methods.sib_head import sib_method
    from metaunlab.research import step_tuning

    workdir, config, results = features_run
    record = json.loads((workdir / "metatrain" / "5way_1shot" / "step_scales.json").read_text())
    assert record["queries_per_class"] == [1.0, 15.0] and record["checkpoint"] == "last"
    for q, chosen in zip(("1", "15"), record["scales"], strict=True):
        assert chosen == step_tuning._preferred(record["candidates"], record["val_accuracy"][q])

    model = TrainedModel.load(str(workdir))
    params = model.sib_params(5, 1)
    # The tuning read seeded validation episodes: its record is reproduced from them.
    val_feats, val_labels = model.split_features("val")
    val_eps = EpisodeSampler(val_labels, EpisodeShape(5, 1, 1), seed=config.val_seed,
                             split_name="val").sample(0, config.val_episodes)
    at_4x = evaluation.evaluate(sib_method(params, 3, 4 * config.metatrain.inner_lr),
                                val_feats, val_eps)
    assert record["candidates"] == [0.25, 4.0]
    assert record["val_accuracy"]["1"][1] == pytest.approx(at_4x.accuracy)

    test_feats, test_labels = model.split_features("test")
    for key, q, scale in (("5way_1shot", 15, record["scales"][1]),
                          ("5way_1shot_1query", 1, record["scales"][0])):
        methods = results["settings"][key]["methods"]
        assert list(methods) == ["sib", "sib_tuned", "k0"]
        assert methods["sib_tuned"]["step_scale"] == pytest.approx(scale, rel=1e-5)
        eps = EpisodeSampler(test_labels, EpisodeShape(5, 1, q), seed=config.test.seed,
                             split_name="test").sample(0, config.test.episodes)
        expected = evaluation.evaluate(
            sib_method(params, 3, scale * config.metatrain.inner_lr), test_feats, eps)
        assert methods["sib_tuned"]["accuracy"] == pytest.approx(expected.accuracy)
    assert "SIB, step tuned on val" in (workdir / "results.md").read_text()
    assert model.step_scales(5, 1).scales == tuple(record["scales"])
    assert model.step_scales(5, 1, checkpoint="best") is None

    from experiments.tools.compare import run_compare
    out = run_compare(str(workdir), num_episodes=6, shots=(1,), n_query=1,
                      methods=["protonet_cosine"], sib_steps=(0, 3), progress=False)
    assert out["settings"]["5way_1shot"]["method_order"] == [
        "protonet_cosine", "sib_k0", "sib_k3", "sib_k3_tuned"]


def test_an_any_way_head_serves_way_counts_it_was_not_trained_for(tmp_path):
    """A run with phi "equivariant" trained on 3- and 5-way episodes: its one head predicts
    a 4-way task and is compared on 6-way episodes."""
    from experiments.configs.features import get_config as features_config
    from experiments.tools.compare import run_compare
    from metaunlab.prediction import predict

    _write_features(tmp_path / "feats.npz")
    config = _tiny(features_config(), tmp_path / "feats.npz", settings="3way_1shot")
    config.metatrain.phi, config.metatrain.ways = "equivariant", "3,5"
    # Two blocks of 10 iterations, each one call of 10 (both way counts are drawn).
    config.metatrain.iterations = config.metatrain.val_every = config.metatrain.log_every = 10
    config.metatrain.iterations = 20
    train_and_evaluate(config, str(tmp_path / "w"))
    model = TrainedModel.load(str(tmp_path / "w"))
    assert model.head_for(4, 1) == "3way_1shot" and model.head(4, 1).n_way == 4
    feats, labels = model.split_features("test")
    support = np.array([np.flatnonzero(labels == c)[0] for c in range(4)])
    queries = np.concatenate([np.flatnonzero(labels == c)[1:4] for c in range(4)])
    sib_probs, k0_probs = predict(model, feats[support], np.arange(4), feats[queries])
    assert sib_probs.shape == k0_probs.shape == (12, 4)
    assert not np.allclose(sib_probs, k0_probs)  # the steps moved the predictions
    out = run_compare(str(tmp_path / "w"), ways=(6,), num_episodes=4, shots=(1,), methods=[],
                      sib_steps=(3,), write=False, progress=False)
    entry = out["settings"]["6way_1shot"]
    assert entry["sib_head"] == "3way_1shot" and list(entry["methods"]) == ["sib_k3"]
