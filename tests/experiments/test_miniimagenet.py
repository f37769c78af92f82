"""`python -m experiments.miniimagenet` and its pipeline on each form of miniImageNet (pickle
caches, folder layout). The default suite checks what the experiment's config reads from each
form; the runs end to end are in `make test-slow` (the pipeline end to end:
tests/test_pipeline.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.configs.miniimagenet import get_config as mini_config
from metaunlab.train.pipeline import load_splits, train_and_evaluate

ROOT = Path(__file__).resolve().parents[2]


def _tiny_flags(data_dir: Path, workdir: Path) -> list[str]:
    return [f"--workdir={workdir}", f"--data_dir={data_dir}",
            "--config.backbone=conv4", "--config.data.image_size=16",
            "--config.data.transform=omniglot",  # identity: the fast exact-features path
            "--config.val_episodes=10", "--config.pretrain.epochs=1",
            "--config.pretrain.warmup_steps=2", "--config.pretrain.decay_epochs=()",
            "--config.pretrain.batch_size=16", "--config.pretrain.val_n_query=3",
            "--config.metatrain.iterations=4", "--config.metatrain.val_every=2",
            "--config.metatrain.n_query=3", "--config.test.n_query=3",
            "--config.test.episodes=10"]


@pytest.mark.parametrize("form", ["caches", "folders"])
def test_the_experiment_config_reads_each_form_at_its_image_size(
        tmp_path, form, write_mini_imagenet_caches, write_mini_imagenet_folders):
    """Without training: the 1-shot config on pickle caches or class folders gives three
    splits of 5 classes of 6 images, resized to `data.image_size`."""
    write = write_mini_imagenet_caches if form == "caches" else write_mini_imagenet_folders
    write(tmp_path / "data", classes=5, per_class=6, size=84)
    config = mini_config("1shot")
    config.data.root = str(tmp_path / "data")
    config.data.image_size = 16
    splits = load_splits(config.data)
    for split in (splits.train, splits.val, splits.test):
        assert split.num_classes == 5 and split.images.shape == (30, 16, 16, 3)
        np.testing.assert_array_equal(np.bincount(split.labels), np.full(5, 6))


@pytest.mark.slow
def test_miniimagenet_experiment_runs_on_pickle_caches(tmp_path, write_mini_imagenet_caches):
    write_mini_imagenet_caches(tmp_path / "data", classes=5, per_class=6, size=84)
    proc = subprocess.run([sys.executable, "-m", "experiments.miniimagenet",
                           *_tiny_flags(tmp_path / "data", tmp_path / "w")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    entry = results["settings"]["5way_1shot"]
    assert results["dataset"] == "miniimagenet" and entry["episodes"] == 10
    assert entry["methods"]["sib"]["accuracy"] > 20.0  # colour classes: well above chance


@pytest.mark.slow
def test_miniimagenet_pipeline_runs_on_the_folder_layout(tmp_path, write_mini_imagenet_folders):
    write_mini_imagenet_folders(tmp_path / "data", classes=5, per_class=6, size=84)
    config = mini_config("1shot")
    config.data.root = str(tmp_path / "data")
    config.backbone = "conv4"
    config.data.image_size = 16
    config.data.transform = "omniglot"
    config.val_episodes = 10
    config.pretrain.update(epochs=1, warmup_steps=2, decay_epochs=(), batch_size=16,
                           val_n_query=3)
    config.metatrain.update(iterations=4, val_every=2, n_query=3)
    config.test.update(n_query=3, episodes=10)
    results = train_and_evaluate(config, str(tmp_path / "w"))
    assert results["settings"]["5way_1shot"]["methods"]["sib"]["accuracy"] > 20.0
    model = json.loads((tmp_path / "w" / "model.json").read_text())
    assert model["image_shape"] == [16, 16, 3]
