"""Importing a PyTorch checkpoint into a work dir (metaunlab.interop.workdir_import, through
`python -m experiments.import_torch`), and a published-format WRN-28-10 + SIB checkpoint
end to end: import -> evaluate -> continue meta-training."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from metaunlab.errors import ConfigError
from metaunlab.interop import backbone_from_torch, load_pth, sib_from_torch


def test_import_cli_sib_checkpoint_round_trips_through_trained_model(torch, tmp_path, reference,
                                                                     assert_trees_equal,
                                                                     run_script):
    from metaunlab.trained_model import TrainedModel

    _, full = reference.checkpoints()
    path = tmp_path / "netSIBLast.pth"
    torch.save(full, path)
    workdir = tmp_path / "W"
    result = run_script("experiments.import_torch", f"--checkpoint={path}", "--arch=conv4",
                        "--dataset=miniimagenet", f"--workdir={workdir}", "--torch_free")
    assert result.returncode == 0, result.stderr

    model = TrainedModel.load(str(workdir))
    loaded = load_pth(path)
    assert_trees_equal(jax.tree_util.tree_map(np.asarray, model.variables),
                       backbone_from_torch("conv4", loaded["netFeat"]))
    expected = sib_from_torch(loaded["SIB"], arch="conv4")
    for checkpoint in ("last", "best"):
        assert_trees_equal(jax.tree_util.tree_map(np.asarray,
                                                  model.sib_params(5, 1, checkpoint)), expected)
    config = model.config
    assert (config.backbone, config.pretrain.epochs, config.metatrain.sib_steps) == (
        "conv4", 0, 3)
    assert config.metatrain.inner_lr == 1e-3 and config.settings == "5way_1shot"
    with open(workdir / "model.json") as f:
        assert json.load(f) == {"image_shape": [84, 84, 3], "feat_dim": 1600, "image_format": {
            "channels": 3, "image_size": 84, "resample": "bilinear", "invert": False}}
    assert model.trained_settings() == ["5way_1shot"]

    from experiments.import_torch import import_checkpoint

    with pytest.raises(ValueError, match="already holds a model"):
        import_checkpoint(str(path), "conv4", "miniimagenet", str(workdir))


def test_import_backbone_only_checkpoint(torch, tmp_path, reference, assert_trees_equal):
    from experiments.import_torch import import_checkpoint
    from metaunlab.trained_model import TrainedModel

    state, _ = reference.checkpoints()
    path = tmp_path / "feat.pth"
    torch.save(state, path)
    summary = import_checkpoint(str(path), "ConvNet_4_64", "miniImageNet", str(tmp_path / "W"))
    assert summary["sib"] is None and summary["feat_dim"] == 1600
    assert sorted(os.listdir(tmp_path / "W")) == ["config.json", "model.json", "pretrain"]
    model = TrainedModel.load(str(tmp_path / "W"))
    assert model.trained_settings() == []
    assert_trees_equal(jax.tree_util.tree_map(np.asarray, model.variables),
                       backbone_from_torch("conv4", _numpy_state_of(state)))
    with pytest.raises(ValueError, match="SIB head takes 1600 features"):
        _, full = reference.checkpoints()
        torch.save(full, tmp_path / "full.pth")
        import_checkpoint(str(tmp_path / "full.pth"), "conv4", "cifar_fs", str(tmp_path / "W2"))


def _numpy_state_of(state):
    return {k: v.numpy() for k, v in state.items()}


def test_import_errors_are_one_sentence_with_exit_code_2(tmp_path, zip_pth, run_script):
    from experiments.import_torch import import_checkpoint

    neither = tmp_path / "neither.pth"
    zip_pth(neither, b"\x80\x02}q\x00(X\x05\x00\x00\x00epochK\x03u.")
    workdir = str(tmp_path / "W")
    for args, error, message in (
            ((str(neither), "resnet50", "miniimagenet"), ValueError, "unknown architecture"),
            ((str(neither), "wrn28_10", "omniglot"), ValueError, "unknown --dataset"),
            ((str(tmp_path / "nope.pth"), "wrn28_10", "miniimagenet"), ConfigError,
             "does not exist")):
        with pytest.raises(error, match=message):
            import_checkpoint(*args, workdir)
    result = run_script("experiments.import_torch", f"--checkpoint={neither}", "--torch_free",
                        "--arch=wrn28_10", "--dataset=miniimagenet", f"--workdir={workdir}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: the checkpoint is neither a backbone state dict")
    assert result.stderr.strip().count("\n") == 0  # one sentence, no traceback
    assert not (tmp_path / "W").exists()


# --------------------------------------------------------------------------------------------
# a published-format WRN-28-10 + SIB checkpoint: import -> evaluate -> continue meta-training
# --------------------------------------------------------------------------------------------


def _reference_accuracy(torch, backbone, head, image_root, record, steps, lr):
    """The torch transcription's query accuracy on one JSON episode, images read by PIL."""
    from PIL import Image

    from metaunlab.data.augment import CIFAR_FS

    mean = torch.tensor(CIFAR_FS.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(CIFAR_FS.std).reshape(1, 3, 1, 1)

    def feats(groups):
        paths = [p for group in groups for p in group]
        pixels = np.stack([np.asarray(Image.open(image_root / p).convert("RGB"))
                           for p in paths])
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            return backbone((x - mean) / std)

    fs, fq = feats(record["Support"]), feats(record["Query"])
    ys = torch.arange(len(record["Support"])).repeat_interleave(len(record["Support"][0]))
    yq = torch.arange(len(record["Query"])).repeat_interleave(len(record["Query"][0]))
    head.train()  # the synthetic-gradient BatchNorm uses the query set's statistics
    logits = head(fs, ys, fq.requires_grad_(False), steps, lr)
    return 100.0 * float((logits.argmax(-1) == yq).float().mean())


# (--arch, the torch transcription's network, its feature size at 32 px). Both run whole
# commands end to end, outside the default suite: the WRN-28-10 run, which embeds every image
# with 36M parameters on the CPU, in `make test-slow`; the Conv-4 run, the same path through
# import, evaluate and continued meta-training, also in `make test-e2e`, which CI runs.
_ARCHS = [
    pytest.param("ConvNet_4_64", "conv4", 256, id="conv4", marks=pytest.mark.slow),
    pytest.param("WRN_28_10", "wrn", 640, id="wrn28_10", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("arch,net,feat_dim", _ARCHS)
def test_published_sib_checkpoint_imports_evaluates_and_meta_training_continues(
        torch, tmp_path, reference, write_reference_layout, run_evaluate_cli, run_script, arch,
        net, feat_dim):
    """The published format end to end on CIFAR-FS-shaped data (32 px; WRN-28-10 with strides
    (1, 2, 2)): the imported model's accuracy on an episode file equals the PyTorch
    transcription's, and rerunning the experiment on the work dir meta-trains onwards from
    the imported head (step 0 -> 1)."""
    nets = reference.nets
    module = nets["wrn"](1) if net == "wrn" else nets["conv4"]()
    backbone = reference.randomize_bn(reference.init_convs(module, 0), 1).eval()
    head = reference.sib(5, feat_dim, 2)
    path = tmp_path / "netSIBBest.pth"
    torch.save({"netFeat": backbone.state_dict(), "SIB": head.state_dict(), "lr": 1e-3,
                "nbStep": 3}, path)
    data = tmp_path / "cifar-fs"
    write_reference_layout(data, 32, classes_per_split=5, per_class=16, suffix=".png",
                           noise=50.0, seed=3)
    workdir = tmp_path / "W"

    result = run_script("experiments.import_torch", f"--checkpoint={path}", f"--arch={arch}",
                        "--dataset=cifar_fs", f"--workdir={workdir}", f"--data_dir={data}")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["next"] == (
        f"python -m experiments.cifar_fs --workdir={workdir} --data_dir={data}")

    # Evaluate: one episode of the reference JSON format on the test split.
    classes = sorted(os.listdir(data / "test"))
    record = {"Support": [[f"{c}/000.png"] for c in classes],
              "Query": [[f"{c}/{i:03d}.png" for i in range(1, 16)] for c in classes]}
    methods = run_evaluate_cli(workdir, [record], data / "test", tmp_path)["methods"]
    for method, steps in (("sib", 3), ("k0", 0)):
        want = _reference_accuracy(torch, backbone, head, data / "test", record, steps, 1e-3)
        # One query of 75 is 1.33 points; float32 means differ only in the 6th digit.
        assert methods[method]["accuracy"] == pytest.approx(want, abs=1e-3), method

    # Continue meta-training: the experiment on the same work dir, stored config, one step.
    proc = run_script("experiments.cifar_fs", f"--workdir={workdir}",
                      "--config.metatrain.iterations=1", "--config.test.episodes=10")
    assert proc.returncode == 0, proc.stderr
    assert "resuming from step 0 of 1" in proc.stderr + proc.stdout
    from metaunlab.trained_model import TrainedModel

    model = TrainedModel.load(str(workdir))
    imported = sib_from_torch(reference.numpy_state(head),
                              arch="wrn28_10" if net == "wrn" else "conv4")
    trained = jax.tree_util.tree_map(np.asarray, model.sib_params(5, 1, "last"))
    diffs = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda a, b: float(np.max(np.abs(a - b))), trained, imported))
    # One SGD step of size 1e-3 moved the imported head, and only a little.
    assert max(diffs) > 0 and max(diffs) < 1e-2, diffs
    results = json.loads((workdir / "results.json").read_text())
    assert results["settings"]["5way_1shot"]["episodes"] == 10
    # CIFAR-FS crops, flips and jitters its images: meta-training took the faithful path,
    # the backbone applied to augmented images inside every step
    assert results["metatrain_source"] == "images"


@pytest.mark.parametrize("meta,message", [
    ({"nbStep": 10**7, "lr": 1e-3}, r"nbStep is 10000000, not a number of synthetic steps "
                                    r"from 0 to 100"),
    ({"nbStep": 3, "lr": float("nan")}, r"lr is nan, not a step size in \(0, 10\]"),
    ({"nbStep": -1, "lr": 1e-3}, "nbStep is -1"),
])
def test_imported_scalars_are_bounded(meta, message):
    from metaunlab.data.errors import DataError
    from metaunlab.interop.workdir_import import _sib_schedule

    with pytest.raises(DataError, match=message):
        _sib_schedule(meta)
