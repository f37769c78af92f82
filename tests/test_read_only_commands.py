"""`predict` and `evaluate` only read the work dir: a missing head or checkpoint is reported
before any image is embedded, and leaves the work dir as it was (a run that succeeds leaves it
so too: test_pipeline.py's predict test). On copies of the demo's character run
(`tiny_omniglot_run`)."""

import json
import os
import shutil
from pathlib import Path

import pytest

from metaunlab.errors import ConfigError
from metaunlab.trained_model import TrainedModel

CHARACTERS, QUERIES = 5, 2  # the run's 5-way head; query images per character


@pytest.fixture(scope="module")
def task(tiny_omniglot_run, omniglot_pngs, tmp_path_factory) -> Path:
    """S (support: one image per character), Q (queries) and R with R/episodes.json, the
    same task as one episode of the reference format; 5 characters of the run's data."""
    root = tmp_path_factory.mktemp("task")
    per_character: dict[str, list[tuple[str, bytes]]] = {}
    for name, png in omniglot_pngs(tiny_omniglot_run.data).items():
        per_character.setdefault(os.path.dirname(name), []).append((name, png))
    episode = {"Support": [], "Query": []}
    for character in sorted(per_character)[:CHARACTERS]:
        images = per_character[character][:1 + QUERIES]
        label = character.replace("/", "_")
        for i, (name, png) in enumerate(images):
            folder = root / "S" / label if i == 0 else root / "Q"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{label}_{i}.png").write_bytes(png)
            (root / "R" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "R" / name).write_bytes(png)
        episode["Support"].append([images[0][0]])
        episode["Query"].append([name for name, _ in images[1:]])
    (root / "R" / "episodes.json").write_text(json.dumps([episode]))
    return root


def _command(name: str, workdir: Path, task: Path) -> list[str]:
    if name == "predict":
        return ["experiments.predict", f"--workdir={workdir}", f"--support_dir={task / 'S'}",
                f"--query_dir={task / 'Q'}"]
    return ["experiments.evaluate", f"--workdir={workdir}",
            f"--episodes={task / 'R' / 'episodes.json'}", f"--image_root={task / 'R'}"]


@pytest.fixture
def no_embedding(monkeypatch):
    def embedded(*args, **kwargs):
        raise AssertionError("images were embedded before the head was found")

    monkeypatch.setattr(TrainedModel, "embed_files", embedded)


def _copy_without(workdir: Path, destination: Path, checkpoint: str | None) -> Path:
    shutil.copytree(workdir, destination)
    if checkpoint:
        shutil.rmtree(destination / "metatrain" / "5way_1shot" / checkpoint)
    return destination


@pytest.mark.parametrize("command, removed, flags, message", [
    ("predict", "last", [], "No checkpoint in {W}/metatrain/5way_1shot/last; train first"),
    ("predict", "best", ["--checkpoint=best"], "No checkpoint in {W}/metatrain/5way_1shot/best"),
    ("predict", None, ["--checkpoint=best", "--step=tuned"],
     "--step=tuned: the 5way_1shot head of {W} (best checkpoint) has no step size tuned"),
    ("evaluate", "last", [], "No checkpoint in {W}/metatrain/5way_1shot/last; train first"),
])
def test_a_missing_head_is_reported_before_any_image_is_embedded(
        command, removed, flags, message, task, tiny_omniglot_run, tmp_path, no_embedding,
        run_script, tree_of):
    workdir = _copy_without(tiny_omniglot_run.workdir, tmp_path / "W", removed)
    before = tree_of(workdir)
    proc = run_script(*_command(command, workdir, task), *flags)
    assert proc.returncode == 2, proc.stderr
    assert f"error: {message.format(W=workdir)}" in proc.stderr
    assert tree_of(workdir) == before


def test_reading_a_checkpoint_that_is_not_there_creates_no_folder(tiny_omniglot_run, tmp_path,
                                                                 tree_of):
    workdir = _copy_without(tiny_omniglot_run.workdir, tmp_path / "W", "last")
    before = tree_of(workdir)
    model = TrainedModel.load(str(workdir))
    with pytest.raises(ConfigError, match=r"No checkpoint in .*/5way_1shot/last; train first"):
        model.sib_params(5, 1, "last")
    assert tree_of(workdir) == before
