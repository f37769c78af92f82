"""Render a report of a trained work dir: learning curves, accuracy against K, histograms.

    python -m experiments.report --workdir=W [--num_episodes=300] [--output_dir=DIR]

Writes report_curves.png, report_accuracy_vs_k.png, report_episode_hist.png and report.md
(with the run's config, results.json and, when `experiments.compare` has run, its table).
"""

import os

from absl import app, flags

from . import cli

flags.DEFINE_string("workdir", None, "Work dir of a training run.", required=True)
flags.DEFINE_integer("num_episodes", 300, "Test episodes per setting for accuracy against K.")
flags.DEFINE_list("steps", ["0", "1", "2", "3", "5", "8"], "SIB steps K to evaluate.")
flags.DEFINE_enum("checkpoint", "last", ["last", "best"], "Which SIB checkpoint to use.")
flags.DEFINE_string("output_dir", None, "Where to write the report (default: the work dir).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    cli.set_default_verbosity()
    from metaunlab.outputs import check_output_folder

    from .tools.report import write_report

    with cli.user_errors():
        # Before the report's evaluation; the work dir is the default place of the report.
        check_output_folder(FLAGS.output_dir or FLAGS.workdir, "--output_dir")
        out = write_report(FLAGS.workdir, num_episodes=FLAGS.num_episodes,
                           steps=[int(k) for k in FLAGS.steps], checkpoint=FLAGS.checkpoint,
                           output_dir=FLAGS.output_dir)
    out_dir = FLAGS.output_dir or FLAGS.workdir
    for name in out["files"]:
        print(os.path.join(out_dir, name))


if __name__ == "__main__":
    app.run(main)
