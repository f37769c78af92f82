"""Held-out alphabets, every fold: `python -m experiments.omniglot_folds --workdir=W`.

Runs the within-alphabet protocol of experiments/configs/omniglot.py once per fold of
metaunlab.data.omniglot_splits.MINIMAL_ALPHABET_FOLDS (each of the 8 alphabets is a test alphabet
in exactly one fold), each in W/fold<k> (rerun to resume), with any --config.<field>=
overrides applied to all, then writes W/folds.md and W/folds.json: per setting, each fold's
SIB and K = 0 accuracy and their mean over folds with a 95% Student-t interval over folds
(the spread of alphabets, not of episodes).
"""

from __future__ import annotations

import os

from absl import app, flags

from metaunlab.errors import ConfigError

from . import cli, runner

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory of the fold runs (W/fold<k>) and the summary.")
flags.DEFINE_list("folds", ["0", "1", "2", "3"], "The folds to run.")
flags.DEFINE_string("data_dir", None, "Omniglot folder; shortcut for --config.data.root.")
runner.define_parallel_runs_flag()
runner_config = os.path.join(runner.CONFIG_DIR, "omniglot.py")


def main(argv):
    del argv
    cli.set_default_verbosity()
    with cli.user_errors():
        if not FLAGS.workdir:
            raise ConfigError("--workdir is not set; name a directory for the fold runs.")
        from metaunlab.data.omniglot_splits import MINIMAL_ALPHABET_FOLDS
        from metaunlab.research.folds import summarize_folds, write_fold_summary

        try:
            folds = [int(f) for f in FLAGS.folds]
        except ValueError:
            folds = []
        if not folds or any(not 0 <= f < len(MINIMAL_ALPHABET_FOLDS) for f in folds):
            raise ConfigError(f"--folds={','.join(FLAGS.folds)}: give fold numbers from 0 to "
                              f"{len(MINIMAL_ALPHABET_FOLDS) - 1}, separated by commas.")
        runs = {}
        for fold in folds:
            workdir = os.path.join(FLAGS.workdir, f"fold{fold}")
            config = runner.config_for_workdir(runner_config, "within_alphabet", workdir)
            config.data.alphabet_fold = fold
            if FLAGS.data_dir:
                config.data.root = FLAGS.data_dir
            runs[fold] = (config, workdir)
        results = runner.run_each(runs, label="fold",
                                  processes=runner.parallel_runs(FLAGS.parallel_runs))
        print(write_fold_summary(FLAGS.workdir, summarize_folds(results)))


if __name__ == "__main__":
    runner.register_config_overrides(runner_config, "within_alphabet")
    app.run(main, flags_parser=runner.flags_parser(f"{runner_config}:within_alphabet"))
