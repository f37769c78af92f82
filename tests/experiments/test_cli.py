"""The command-line scripts explain themselves and fail clearly: --help, --print_config,
--verbosity, user errors as one sentence, bugs with their traceback."""

import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags, logging

from experiments import cli

ROOT = Path(__file__).resolve().parents[2]

# Each script, and flags its --help must list.
SCRIPTS = {
    "omniglot": ["--workdir", "--config", "--print_config", "--data_dir", "--distributed",
                 "--protocols"],
    "omniglot_folds": ["--workdir", "--folds", "--data_dir"],
    "miniimagenet": ["--workdir", "--config", "--data_dir"],
    "cifar_fs": ["--workdir", "--data_dir"], "fc100": ["--workdir"],
    "tiered_imagenet": ["--workdir"], "folders": ["--workdir"], "features": ["--data_dir"],
    "evaluate": ["--workdir", "--episodes", "--image_root", "--output"],
    "predict": ["--support_dir", "--query_dir", "--output", "--class_columns"],
    "compare": ["--workdir", "--num_episodes", "--methods"],
    "report": ["--workdir", "--num_episodes"], "benchmark": ["--quick", "--smoke", "--json"],
    "import_torch": ["--checkpoint", "--arch"], "prepare_data": ["--imagenet_dir", "--out"],
}  # experiments.memory takes no flags of its own


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _assert_help_lists_the_flags(script, proc):
    assert proc.returncode == 1, proc.stderr  # absl's --help exits with status 1
    assert f"experiments/{script}.py:" in proc.stdout  # the flags of the script itself
    for flag in SCRIPTS[script]:
        assert f"  {flag}" in proc.stdout or f"--[no]{flag[2:]}" in proc.stdout, (script, flag)
    if "--config" in SCRIPTS[script]:
        assert "--print_config" in proc.stdout and "--config.<field>" in proc.stdout


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_lists_the_flags_of_every_script(script, run_script):
    """Each script's --help, run in this process (the subprocess below checks that the real
    command gives the same)."""
    _assert_help_lists_the_flags(script, run_script(f"experiments.{script}", "--help"))


def test_help_of_a_real_process():
    """One script as a user starts it: `python -m experiments.omniglot --help` (a runner
    script, whose flags are defined by experiments.runner for the script)."""
    proc = _run("-m", "experiments.omniglot", "--help")
    _assert_help_lists_the_flags("omniglot", proc)


def test_print_config_shows_the_resolved_fields_without_a_workdir(run_script):
    proc = run_script("experiments.omniglot", "--print_config", "--config.metatrain.lr=0.02")
    assert proc.returncode == 0, proc.stderr
    assert "lr: 0.02" in proc.stdout and "sib_steps: 3" in proc.stdout
    assert "n_query: 15" in proc.stdout


def test_a_missing_data_dir_is_one_sentence_and_exit_status_2(tmp_path, run_script):
    proc = run_script("experiments.miniimagenet", f"--workdir={tmp_path / 'w'}",
                      f"--data_dir={tmp_path / 'nowhere'}")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "nowhere" in lines[0]
    proc = run_script("experiments.omniglot")  # no --workdir
    assert proc.returncode == 2 and "error: --workdir is not set" in proc.stderr


def test_a_bug_shows_its_traceback_not_one_sentence(tmp_path, run_script, monkeypatch):
    # A deliberate bug inside the pipeline: a ValueError the library did not mean for users.
    import metaunlab.train.pipeline as pipeline

    def broken(config, workdir):
        raise ValueError("an injected bug")

    monkeypatch.setattr(pipeline, "train_and_evaluate", broken)
    proc = run_script("experiments.omniglot", "--config=experiments/configs/omniglot.py",
                      f"--workdir={tmp_path / 'w'}")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ValueError: an injected bug" in proc.stderr
    assert "error: an injected bug" not in proc.stderr


def test_verbosity_is_left_to_the_flag_when_given():
    saved = logging.get_verbosity()
    try:
        flags.FLAGS(["prog", "--verbosity=1"])
        logging.set_verbosity(1)
        cli.set_default_verbosity()
        assert logging.get_verbosity() == 1
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["prog"])
        cli.set_default_verbosity()
        assert logging.get_verbosity() == logging.WARNING
    finally:
        flags.FLAGS.unparse_flags()
        logging.set_verbosity(saved)


def test_an_unknown_config_field_is_one_sentence_with_the_closest_names(run_script):
    proc = run_script("experiments.omniglot", "--print_config", "--config.metatrain.lrr=0.1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --config.metatrain.lrr is not a config field (did you mean "
        "--config.metatrain.lr?); --print_config lists every field.")
    proc = run_script("experiments.miniimagenet", "--print_config",
                      "--config=experiments/configs/miniimagenet.py:5shot", "--config.settingz=x")
    assert proc.returncode == 2 and "did you mean --config.settings?" in proc.stderr


def test_evaluate_refuses_an_output_folder_that_does_not_exist_before_any_work(tmp_path,
                                                                              run_script):
    proc = run_script("experiments.evaluate", f"--workdir={tmp_path}", "--episodes=e.json",
                      "--image_root=.", f"--output={tmp_path / 'missing' / 'out.json'}")
    assert proc.returncode == 2
    assert "error: --output=" in proc.stderr and "does not exist; create it" in proc.stderr
