"""`experiments.cifar_fs` and `experiments.fc100` on fixtures in each supported form: the
cifar-100-python archive, and this package's TFDS builders' output. The default suite checks
what each experiment config reads from each form; the runs end to end are in `make test-slow`
(the pipeline end to end: tests/test_pipeline.py)."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metaunlab.train.pipeline import train_and_evaluate

ROOT = Path(__file__).resolve().parents[2]

# Conv-4 on the 32 px images, no augmentation (the exact-features path), tiny schedule.
TINY = {"backbone": "conv4", "data.transform": "omniglot", "data.verify_checksum": False,
        "val_episodes": 10, "pretrain.epochs": 1, "pretrain.warmup_steps": 2,
        "pretrain.decay_epochs": (), "pretrain.batch_size": 32, "pretrain.val_n_query": 3,
        "metatrain.iterations": 4, "metatrain.val_every": 2, "metatrain.n_query": 3,
        "test.n_query": 3, "test.episodes": 10}


def _flags(values):
    return [f"--config.{k}={'()' if v == () else v}" for k, v in values.items()]


@pytest.mark.slow
def test_cifar_fs_experiment_runs_on_the_cifar100_python_archive(tmp_path, make_cifar100_python):
    make_cifar100_python(tmp_path / "cifar100", train_per_class=3, test_per_class=1)
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cifar_fs", f"--workdir={tmp_path / 'w'}",
         f"--data_dir={tmp_path / 'cifar100'}", *_flags(TINY)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    assert results["dataset"] == "cifar_fs"
    assert results["settings"]["5way_1shot"]["episodes"] == 10
    assert "64 train / 16 val / 20 test classes" in proc.stderr + proc.stdout


def test_cifar_fs_archive_with_the_wrong_checksum_is_refused_in_one_sentence(
        tmp_path, make_cifar100_python, run_script):
    make_cifar100_python(tmp_path / "cifar100", train_per_class=1, test_per_class=1)
    proc = run_script("experiments.cifar_fs", f"--workdir={tmp_path / 'w'}",
                      f"--data_dir={tmp_path / 'cifar100'}")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "MD5" in proc.stderr
    assert "Traceback" not in proc.stderr


def _set(config, values):
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


@pytest.fixture
def tfds_data_dir(tmp_path, monkeypatch, make_cifar100_python, prepare_fake_tfds_cifar100,
                  write_mini_imagenet_caches):
    """`tfds_data_dir(name)`: a TFDS data dir holding `name` built from fixtures in the real
    on-disk forms."""

    def build(name):
        tfds = pytest.importorskip("tensorflow_datasets")
        from metaunlab.data import cifar100

        manual = tmp_path / "manual"
        if name == "mini_imagenet":
            write_mini_imagenet_caches(manual, classes=5, per_class=6, size=84)
        else:
            fake = make_cifar100_python(manual, train_per_class=3, test_per_class=1)
            monkeypatch.setattr(cifar100, "ARCHIVE_MD5",
                                hashlib.md5(fake.archive.read_bytes()).hexdigest())
            if name == "cifar100":  # TFDS's own cifar100, prepared
                prepare_fake_tfds_cifar100(fake, tmp_path / "tfds")
                return tmp_path / "tfds"
        import metaunlab.data.tfds.builders  # noqa: F401  (registers the builders)

        tfds.builder(name, data_dir=str(tmp_path / "tfds"),
                     file_format="array_record").download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
        return tmp_path / "tfds"

    return build


TFDS_FORMS = [
    ("cifar_fs", "tfds_cifar100", "cifar100"),
    ("cifar_fs", "tfds", "cifar_fs"),
    ("fc100", "tfds", "fc100"),
    ("miniimagenet", "tfds", "mini_imagenet"),
]


def _experiment_config(experiment, data_format, data_dir):
    import importlib

    config = importlib.import_module(f"experiments.configs.{experiment}").get_config("1shot")
    config.data.root = str(data_dir)
    config.data.format = data_format
    _set(config, TINY)
    if experiment == "miniimagenet":
        config.data.image_size = 84
        config.pretrain.batch_size = 16  # 5 classes x 6 images
    return config


@pytest.mark.parametrize("experiment,data_format,built", TFDS_FORMS)
def test_experiment_config_reads_each_tfds_form(tmp_path, monkeypatch, experiment,
                                                data_format, built, tfds_data_dir):
    """What the pipeline reads from each TFDS form, without training: the experiment's class
    splits, each class with as many images as the fixture holds, at the experiment's size."""
    from metaunlab.train.pipeline import load_splits

    config = _experiment_config(experiment, data_format, tfds_data_dir(built))
    splits = load_splits(config.data)
    classes = {"cifar_fs": (64, 16, 20), "fc100": (60, 20, 20),
               "miniimagenet": (5, 5, 5)}[experiment]
    per_class = 6 if experiment == "miniimagenet" else 3 + 1  # the fixture's train + test rows
    size = config.data.image_size
    for split, count in zip((splits.train, splits.val, splits.test), classes, strict=True):
        assert split.num_classes == count
        assert split.images.shape == (count * per_class, size, size, 3)
        np.testing.assert_array_equal(np.bincount(split.labels), np.full(count, per_class))


@pytest.mark.slow
@pytest.mark.parametrize("experiment,data_format,built", TFDS_FORMS)
def test_experiment_pipeline_runs_on_each_tfds_form(tmp_path, monkeypatch, experiment,
                                                    data_format, built, tfds_data_dir):
    config = _experiment_config(experiment, data_format, tfds_data_dir(built))
    results = train_and_evaluate(config, str(tmp_path / "w"))
    assert results["dataset"] == experiment
    assert results["settings"]["5way_1shot"]["episodes"] == 10
