"""What every `python -m experiments.<name>` shares: flags, clean errors, the pipeline call."""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from metaunlab.data.errors import DataError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def main(config_name: str, *, data_dir_flag: bool = False) -> None:
    """Define `--config` (a Python config file, `file.py:variant` allowed, with
    `--config.<field>=` overrides; default `experiments/configs/<config_name>.py`) and
    `--workdir`, then run the whole pipeline."""
    default_config = os.path.join(CONFIG_DIR, f"{config_name}.py")
    config_flag = config_flags.DEFINE_config_file(
        "config", default_config, "Experiment config file (with :variant and overrides).",
        lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results; "
                        "rerun with the same one to resume.", required=True)
    if data_dir_flag:
        flags.DEFINE_string("data_dir", None, "Data folder; shortcut for --config.data.root.")

    def run(argv):
        del argv
        # orbax logs every checkpoint step at INFO; progress bars already say what happens.
        logging.set_verbosity(logging.WARNING)
        from metaunlab.pipeline import train_and_evaluate  # after flag parsing: fast --help

        config = config_flag.value
        if data_dir_flag and flags.FLAGS.data_dir:
            config.data.root = flags.FLAGS.data_dir
        try:
            train_and_evaluate(config, flags.FLAGS.workdir)
        except (DataError, ValueError, FileNotFoundError) as error:
            # Errors a user can cause end in one sentence, not a traceback.
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    app.run(run)
