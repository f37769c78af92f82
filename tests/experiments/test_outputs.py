"""One output rule for every command: an output flag is checked before any work, and refused
when it is, or resolves to, one of the command's inputs, a file of the work dir a command only
reads, or a place that cannot be written; the refusal is one sentence, exit status 2, and
every file is left as it was. (Outputs written through a symlink, on a trained work dir:
tests/test_read_only_commands.py.)"""

import json
import os
from pathlib import Path

import pytest


@pytest.fixture
def no_work(monkeypatch):
    """The first step of every command's work fails the test: a refusal comes before it."""
    from experiments.tools import benchmark, head_study, report
    from metaunlab.data import mini_imagenet_build
    from metaunlab.interop import workdir_import
    from metaunlab.trained_model import TrainedModel

    def started(*args, **kwargs):
        raise AssertionError("the command started its work before checking its output")

    monkeypatch.setattr(TrainedModel, "load", started)
    for module, name in ((report, "write_report"), (head_study, "run_head_study"),
                         (benchmark, "run"), (mini_imagenet_build, "build_from_imagenet"),
                         (workdir_import, "import_checkpoint")):
        monkeypatch.setattr(module, name, started)


@pytest.fixture
def inputs(tmp_path):
    """A work dir W, support and query folders S and Q, an image root R and its episode file
    (their contents are never read: the commands stop before)."""
    (tmp_path / "W").mkdir()
    (tmp_path / "W" / "config.json").write_text('{"the": "config"}')
    (tmp_path / "W" / "results.json").write_text('{"episodes": 2000}')
    for c in ("c0", "c1"):
        for folder in (tmp_path / "S" / c, tmp_path / "R" / c):
            folder.mkdir(parents=True)
            (folder / "a.png").write_bytes(b"support " + c.encode())
            (folder / "b.png").write_bytes(b"query " + c.encode())
    (tmp_path / "Q").mkdir()
    (tmp_path / "Q" / "q.png").write_bytes(b"a query image")
    (tmp_path / "episodes.json").write_text(json.dumps(
        [{"Support": [["c0/a.png"], ["c1/a.png"]], "Query": [["c0/b.png"], ["c1/b.png"]]}]))
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "a_folder").mkdir()
    os.symlink(tmp_path / "W" / "config.json", tmp_path / "link_to_config")
    return tmp_path


def _command(name: str, root: Path) -> list[str]:
    if name == "predict":
        return ["experiments.predict", f"--workdir={root / 'W'}", f"--support_dir={root / 'S'}",
                f"--query_dir={root / 'Q'}"]
    return ["experiments.evaluate", f"--workdir={root / 'W'}",
            f"--episodes={root / 'episodes.json'}", f"--image_root={root / 'R'}"]


@pytest.mark.parametrize("command, output, message", [
    ("evaluate", "W/results.json", "lies inside the work dir"),
    ("evaluate", "W/new.json", "lies inside the work dir"),
    ("evaluate", "episodes.json", "is the episode file"),
    ("evaluate", "R/c1/b.png", "is the image of the episode file"),
    ("predict", "W/config.json", "lies inside the work dir"),
    ("predict", "S/../W/config.json", "lies inside the work dir"),
    ("predict", "link_to_config", "lies inside the work dir"),
    ("predict", "Q/q.png", "lies inside the query folder"),
    ("predict", "S/c0/a.png", "lies inside the support folder"),
])
def test_an_output_onto_an_input_is_refused_before_any_work(command, output, message, inputs,
                                                            no_work, run_script, tree_of):
    before = tree_of(inputs)
    proc = run_script(*_command(command, inputs), f"--output={inputs / output}")
    assert proc.returncode == 2, proc.stderr
    assert f"error: --output={inputs / output} " in proc.stderr and message in proc.stderr
    assert "write the output elsewhere" in proc.stderr
    assert tree_of(inputs) == before and os.path.islink(inputs / "link_to_config")


@pytest.mark.parametrize("output, message", [
    ("/proc/metaunlab-predictions.csv", "cannot write into /proc"),
    ("/proc/self/status", "cannot write into /proc/"),
    ("a_file/predictions.csv", "is a file, not a folder"),
    ("a_folder", "is a folder; give the path of a file"),
])
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_an_output_that_cannot_be_written_is_reported_before_any_work(command, output, message,
                                                                      inputs, no_work,
                                                                      run_script, tree_of):
    output = output if output.startswith("/") else str(inputs / output)
    before = tree_of(inputs)
    proc = run_script(*_command(command, inputs), f"--output={output}")
    assert proc.returncode == 2, proc.stderr
    assert f"error: --output={output}" in proc.stderr and message in proc.stderr
    assert tree_of(inputs) == before


@pytest.mark.parametrize("args, message", [
    (["experiments.head_study", "--workdir={root}/W", "--output={root}/W/study"],
     "--output={root}/W/study lies inside the work dir"),
    (["experiments.report", "--workdir={root}/W", "--output_dir=/proc/report"],
     "--output_dir=/proc/report: cannot write into /proc"),
    (["experiments.benchmark", "--smoke", "--json=/proc/bench.json"],
     "--json=/proc/bench.json: cannot write into /proc"),
    (["experiments.prepare_data", "mini_imagenet", "--imagenet_dir={root}/S",
      "--csv_dir={root}/R", "--out={root}/S/mini"],
     "--out={root}/S/mini lies inside the ImageNet folder"),
    (["experiments.import_torch", "--checkpoint={root}/Q/q.png", "--arch=conv4",
      "--dataset=miniimagenet", "--workdir={root}/Q/q.png"],
     "--workdir={root}/Q/q.png is the .pth checkpoint"),
])
def test_every_command_checks_its_output_before_any_work(args, message, inputs, no_work,
                                                         run_script, tree_of):
    before = tree_of(inputs)
    proc = run_script(*(arg.format(root=inputs) for arg in args))
    assert proc.returncode == 2, proc.stderr
    assert f"error: {message.format(root=inputs)}" in proc.stderr
    assert tree_of(inputs) == before
