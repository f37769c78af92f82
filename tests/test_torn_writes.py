"""Every file a run writes reads back after a torn write: a half line in metrics.jsonl, damaged
JSON, the temporary files of interrupted writes, and the modes files are written with."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import files
from metaunlab.errors import ConfigError
from metaunlab.files import WorkdirLock, atomic_path
from metaunlab.head import Head
from metaunlab.research import step_tuning
from metaunlab.train import feature_cache, parallel
from metaunlab.train.metrics import MetricWriter, read_metrics
from metaunlab.train.train_loop import TrainLoop
from metaunlab.train.workdir import load_config, write_json_atomic
from metaunlab.trained_model import TrainedModel

TORN = '{"phase": "phase", "step": 6, "ti'  # what a kill during an append leaves


def _record(phase, step):
    return json.dumps({"phase": phase, "step": step, "time": 0.0, "loss": 1.0}) + "\n"


def _resume_and_run(folder, total_steps):
    """A training phase resumed in `folder` (its metrics, `folder`/ckpt) and run to
    `total_steps` with a stand-in step; the records it leaves."""
    writer = MetricWriter(folder)
    loop = TrainLoop("phase", str(folder / "ckpt"), total_steps, writer, parallel.data_mesh(),
                     log_at=lambda done: True, validate_at=lambda done: done == total_steps)
    state = {"step": jnp.asarray(0, jnp.int32), "best_accuracy": jnp.asarray(-1.0)}
    state = loop.resume(parallel.replicate(state, loop.mesh))
    metrics = {"loss": jnp.float32(1), "accuracy": jnp.float32(50)}
    loop.run(state, lambda s, step, n: (dict(s, step=s["step"] + n), metrics),
             validate=lambda s: {"accuracy": 50.0}, best_of=lambda s: {"step": s["step"]})
    writer.close()
    return [(r["phase"], r["step"]) for r in read_metrics(folder)]


def test_a_torn_last_metrics_line_is_dropped_with_a_warning_and_the_run_resumes(tmp_path,
                                                                               caplog):
    (tmp_path / "metrics.jsonl").write_text(_record("pretrain", 5) + TORN)
    assert _resume_and_run(tmp_path, 2) == [("pretrain", 5), ("phase", 1), ("phase", 2),
                                            ("phase_val", 2)]
    assert f"{tmp_path / 'metrics.jsonl'} line 2 is not a metrics record" in caplog.text
    # Every line of the file is a whole record again: the torn one is gone, not prefixed to
    # the first record the resumed run appended.
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [5, 1, 2, 2]


@pytest.mark.parametrize("content, steps", [
    (_record("a", 1) + TORN, [1]),
    (_record("a", 1) + TORN + _record("a", 3), [1]),  # a torn line a writer appended to
    (_record("a", 1) + "[1, 2]\n" + _record("a", 3), [1, 3]),
    (_record("a", 1) + '{"phase": "a"}\n' + _record("a", 3), [1, 3]),
], ids=["torn_last", "torn_then_appended", "not_a_dict", "no_step"])
def test_readers_skip_a_damaged_metrics_line_with_a_warning(tmp_path, caplog, content, steps):
    (tmp_path / "metrics.jsonl").write_text(content)
    assert [r["step"] for r in read_metrics(tmp_path)] == steps
    assert f"{tmp_path / 'metrics.jsonl'} line 2 is not a metrics record" in caplog.text
    assert (tmp_path / "metrics.jsonl").read_text() == content  # a reader changes nothing


def test_report_cli_reads_a_work_dir_whose_metrics_end_in_a_torn_line(tiny_omniglot_run,
                                                                     run_script, tmp_path,
                                                                     caplog):
    """`experiments.report` on the session's trained run with a half line appended."""
    metrics = tiny_omniglot_run.workdir / "metrics.jsonl"
    whole = metrics.read_text()
    metrics.write_text(whole + TORN)
    try:
        proc = run_script("experiments.report", f"--workdir={tiny_omniglot_run.workdir}",
                          "--num_episodes=5", "--steps=0,8", f"--output_dir={tmp_path}")
    finally:
        metrics.write_text(whole)
    assert proc.returncode == 0, proc.stderr
    assert f"metrics.jsonl line {len(whole.splitlines()) + 1} is not a metrics record" in (
        caplog.text)
    assert (tmp_path / "report_curves.png").stat().st_size > 0


# --- damaged JSON in a work dir -----------------------------------------------------------

def _config_json(workdir, text):
    (workdir / "config.json").write_text(text)
    return lambda: load_config(str(workdir))


def _model_json(workdir, text):
    (workdir / "config.json").write_text("{}")
    (workdir / "model.json").write_text(text)
    return lambda: TrainedModel.load(str(workdir))


def _step_scales_json(workdir, text):
    (workdir / step_tuning.FILE_NAME).write_text(text)
    return lambda: step_tuning.load(str(workdir), "last")


@pytest.mark.parametrize("write, text, message", [
    (_config_json, '{"backbone": "conv4", "da', r"config\.json is damaged, not valid JSON "
     r"\(.*\); restore it from a copy, or start the run again in a new --workdir\.$"),
    (_config_json, "[1, 2]", r"config\.json holds a JSON list, not the object metaunlab writes "
     r"there; restore it from a copy"),
    (_config_json, "\xff\xfe", r"config\.json is damaged, not valid JSON"),
    (_model_json, '{"image_shape": [28, 2', r"model\.json is damaged, not valid JSON \(.*\); "
     r"rerun the training command on this --workdir, which writes it again"),
    (_model_json, '"text"', r"model\.json holds a JSON str, not the object"),
    (_model_json, '{"image_shape": [28, 28]}', r"model\.json is not a model description "
     r"\(.*\); rerun the training command"),
    (_step_scales_json, '{"checkpoint": "la', r"step_scales\.json is damaged, not valid JSON "
     r"\(.*\); delete it and rerun the same command to tune again\.$"),
    (_step_scales_json, "3", r"step_scales\.json holds a JSON int, not the object"),
], ids=["config_truncated", "config_list", "config_not_utf8", "model_truncated", "model_str",
        "model_fields", "step_scales_truncated", "step_scales_int"])
def test_damaged_json_in_a_work_dir_is_one_sentence_naming_the_file(tmp_path, write, text,
                                                                     message):
    read = write(tmp_path, text)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ConfigError, match=message):
        read()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("name, text", [("config.json", "{"), ("config.json", "[]"),
                                        ("results.json", '{"settings": ')])
def test_report_cli_on_damaged_json_exits_2_naming_the_file(tmp_path, run_script, name, text):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / name).write_text(text)
    proc = run_script("experiments.report", f"--workdir={tmp_path}")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"error: {tmp_path / name} ")
    assert "Traceback" not in proc.stderr and (tmp_path / name).read_text() == text


def test_a_damaged_head_description_is_one_sentence(tmp_path):
    (tmp_path / "head.json").write_text('{"n_way": 5, "fe')
    with pytest.raises(ConfigError, match=r"head\.json is damaged, not valid JSON .*; meta-train "
                                          "the head again"):
        Head.load(str(tmp_path))


def test_a_damaged_feature_cache_is_computed_again_with_a_warning(tmp_path, monkeypatch, caplog):
    images, variables = np.zeros((4, 2, 2, 1), np.uint8), {"w": np.ones(3, np.float32)}
    fresh = np.arange(8, dtype=np.float32).reshape(4, 2)
    monkeypatch.setattr(feature_cache, "compute_views", lambda *args, **kwargs: fresh)
    np.save(tmp_path / "train_views0.npy", fresh + 1)
    (tmp_path / "train_views0.json").write_text('{"views": 0, "se')  # torn
    out = feature_cache.load_or_compute(str(tmp_path), None, variables, images, None, views=0,
                                        seed=0)
    np.testing.assert_array_equal(out, fresh)
    assert "train_views0.json is damaged, not valid JSON" in caplog.text
    assert json.loads((tmp_path / "train_views0.json").read_text())["views"] == 0


# --- temporary files of interrupted writes --------------------------------------------------

def test_the_partial_files_of_interrupted_writes_go_when_the_next_run_takes_the_lock(tmp_path,
                                                                                     caplog):
    setting = tmp_path / "metatrain" / "5way_1shot"
    setting.mkdir(parents=True)
    orphans = [tmp_path / ".config.json.k3j_9abc.partial",
               setting / ".head.json.0a1b2c3d.partial",
               tmp_path / ".train_views0.npy.zzzzzzzz.partial.npy"]
    kept = [tmp_path / "notes.partial", tmp_path / ".hidden", setting / "head.json"]
    for path in orphans + kept:
        path.write_text("x")
    with WorkdirLock(tmp_path):
        pass
    assert [p.exists() for p in orphans + kept] == [False] * 3 + [True] * 3
    for path in orphans:
        assert f"removed {path}, the temporary file of a write that was interrupted" in (
            caplog.text)


def test_an_interrupted_checkpoint_save_is_removed_when_its_phase_resumes(tmp_path, caplog):
    unfinished = tmp_path / "ckpt" / "last" / "3.orbax-checkpoint-tmp-1712345678"
    (unfinished / "default").mkdir(parents=True)
    (unfinished / "default" / "half").write_bytes(b"\0" * 10)
    assert _resume_and_run(tmp_path, 2) == [("phase", 1), ("phase", 2), ("phase_val", 2)]
    assert not unfinished.exists() and (tmp_path / "ckpt" / "last" / "2").is_dir()
    assert f"removing {unfinished}, the temporary folder of a checkpoint save" in caplog.text


# --- modes ----------------------------------------------------------------------------------

def _write_with_each_writer(folder):
    """config.json / model.json / results.json / step_scales.json, head.json and the feature
    cache, written by the functions that write them; their paths."""
    write_json_atomic(folder / "results.json", {"settings": {}})
    Head(5, 4).save(str(folder))
    with atomic_path(folder / "train_views0.npy", suffix=".npy") as partial:
        np.save(partial, np.zeros(3))
    return [folder / "results.json", folder / "head.json", folder / "train_views0.npy"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.parametrize("proc_status", [True, False], ids=["proc", "os_umask"])
def test_new_files_get_the_mode_of_the_umask(tmp_path, monkeypatch, umask, mode, proc_status):
    if not proc_status:  # a system without /proc/self/status: the umask read by os.umask
        monkeypatch.setattr(files, "_PROC_STATUS", str(tmp_path / "absent"), raising=False)
    old = os.umask(umask)
    try:
        written = _write_with_each_writer(tmp_path)
        assert os.umask(umask) == umask  # reading it left it as it was
    finally:
        os.umask(old)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {
        p.name: oct(mode) for p in written}


def test_a_replaced_file_keeps_its_mode(tmp_path):
    for path in _write_with_each_writer(tmp_path):
        path.chmod(0o640)
    for path in _write_with_each_writer(tmp_path):
        assert oct(path.stat().st_mode & 0o777) == oct(0o640), path.name
