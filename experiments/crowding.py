"""Why SIB's steps help on one task and hurt on another: feature crowding per split, and
how the trained head spreads its predictions, on a trained work dir.

    python -m experiments.crowding --workdir=W/within_alphabet --ways=20 --n_query=15

Prints, for each split, the mean cosine between features of different classes and of the
same class (`metaunlab.research.diagnostics.feature_crowding`), then, on `--num_episodes` seeded
1-shot episodes of `--split` (within one alphabet when the run tests that way), the
accuracy of the head at K = 0 and at its trained K, with the mean share of queries given
to the most-predicted class and the number of classes predicted
(`metaunlab.research.diagnostics.prediction_shares`; a balanced query set has share 1 / N).
"""

from absl import app, flags

from . import cli

flags.DEFINE_string("workdir", None, "Work dir of a training run.", required=True)
flags.DEFINE_integer("ways", 20, "Ways of the episodes (a head of that way must exist).")
flags.DEFINE_integer("n_query", 15, "Queries per class.")
flags.DEFINE_integer("num_episodes", 300, "Seeded episodes.")
flags.DEFINE_integer("seed", 7, "Episode seed.")
flags.DEFINE_enum("split", "test", ["train", "val", "test"], "Split of the episodes.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    cli.set_default_verbosity()
    from .tools.crowding import crowding_report

    with cli.user_errors():
        print(crowding_report(FLAGS.workdir, n_way=FLAGS.ways, n_query=FLAGS.n_query,
                              num_episodes=FLAGS.num_episodes, seed=FLAGS.seed,
                              split=FLAGS.split))


if __name__ == "__main__":
    app.run(main)
