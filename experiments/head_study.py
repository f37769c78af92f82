"""Meta-train SIB head recipes on a trained work dir's features and score them on validation.

    python -m experiments.head_study --workdir=W/within_alphabet --output=STUDY_DIR \
        --variants='{"reference": {}, "mixed": {"query_distribution": "balanced,dirichlet:2"}}' \
        [--settings=5way_1shot,20way_1shot] [--n_query=1,5] \
        [--query_distribution=balanced,dirichlet:2] [--seeds=0,1,2] [--episodes=500]

Each recipe is the work dir's `metatrain` config with the fields given; every head is scored
on the same validation episodes (--split=test only reports a recipe chosen on validation)
at its trained K and at K = 0 with every other part kept, with their paired difference
(experiments/tools/head_study.py). Writes
STUDY_DIR/study.json and STUDY_DIR/study.md; the work dir is only read.
"""

import json
import os

from absl import app, flags

from . import cli

flags.DEFINE_string("workdir", None, "Work dir of a trained run (its backbone is used).",
                    required=True)
flags.DEFINE_string("output", None, "Folder for study.json and study.md.", required=True)
flags.DEFINE_string("variants", '{"reference": {}}',
                    "JSON object: recipe name -> {metatrain field: value}.")
flags.DEFINE_list("settings", None, "<N>way_<K>shot settings (default: the run's).")
flags.DEFINE_list("n_query", ["1", "5"], "Queries per class of the validation episodes.")
flags.DEFINE_list("query_distribution", ["balanced", "dirichlet:2"],
                  "How validation query sets split between classes.")
flags.DEFINE_list("seeds", ["0"], "Meta-training seeds (added to metatrain.seed).")
flags.DEFINE_integer("episodes", 500, "Validation episodes per cell.")
flags.DEFINE_list("baselines", ["alpha_tim"], "Baselines scored on the same episodes.")
flags.DEFINE_enum("split", "val", ["val", "test"],
                  "val to choose a recipe; test only to report one chosen on val.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    cli.set_default_verbosity()
    from metaunlab.outputs import check_output_folder, write_output_text
    from metaunlab.train.config_checks import parse_settings
    from metaunlab.trained_model import TrainedModel

    from .tools.head_study import format_study, parse_variants, run_head_study

    with cli.user_errors():
        # Before the study's meta-training, and never into the work dir it only reads.
        check_output_folder(FLAGS.output, "--output", inputs=[("work dir", FLAGS.workdir)])
        variants = parse_variants(FLAGS.variants)
        settings = FLAGS.settings or TrainedModel.load(FLAGS.workdir).config.settings.split(",")
        study = run_head_study(
            FLAGS.workdir, variants, settings=parse_settings(",".join(settings)),
            query_counts=[int(q) for q in FLAGS.n_query],
            distributions=FLAGS.query_distribution, seeds=[int(s) for s in FLAGS.seeds],
            episodes=FLAGS.episodes, baselines=FLAGS.baselines, split=FLAGS.split)
        table = format_study(study)
        os.makedirs(FLAGS.output, exist_ok=True)
        write_output_text(os.path.join(FLAGS.output, "study.json"), json.dumps(study, indent=1))
        write_output_text(os.path.join(FLAGS.output, "study.md"), table + "\n")
    print(table)
    print(f"wrote {FLAGS.output}/study.json and study.md in {study['wall_seconds']:.0f} s")


if __name__ == "__main__":
    app.run(main)
