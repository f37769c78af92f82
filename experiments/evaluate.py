"""Evaluate a trained work dir on a fixed episode file in the reference JSON format.

    python -m experiments.evaluate --workdir=W --episodes=FILE.json --image_root=DIR \
        [--output=OUT.json] [--checkpoint=last|best]

Episodes may have any number of ways, shots and queries; images are preprocessed exactly
as the model in W was trained (size, channels, polarity, normalisation). Prints and
writes accuracy +- 95% interval for SIB and for K = 0 on the same episodes.
"""

import json

from absl import app, flags

from . import cli

flags.DEFINE_string("workdir", None, "Work dir of a training run.", required=True)
flags.DEFINE_string("episodes", None, "Episode file (reference JSON format).", required=True)
flags.DEFINE_string("image_root", None, "Folder the episode paths are relative to.",
                    required=True)
flags.DEFINE_string("output", None, "Where to write the results JSON (optional).")
flags.DEFINE_enum("checkpoint", "last", ["last", "best"], "Which SIB checkpoint to use.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    cli.set_default_verbosity()
    from metaunlab.data.episode_files import read_episode_file
    from metaunlab.outputs import check_not_an_input, check_output_file, write_output_text
    from metaunlab.trained_model import TrainedModel

    with cli.user_errors():
        if FLAGS.output:  # before any work, and never into what this read-only command reads
            check_output_file(FLAGS.output, "--output", inputs=[
                ("work dir", FLAGS.workdir), ("episode file", FLAGS.episodes)])
            images = read_episode_file(FLAGS.episodes, FLAGS.image_root).paths
            check_not_an_input(FLAGS.output, "--output",
                               [("image of the episode file", image) for image in images])
        model = TrainedModel.load(FLAGS.workdir)
        results = model.evaluate_episode_file(FLAGS.episodes, FLAGS.image_root,
                                              checkpoint=FLAGS.checkpoint)
        if FLAGS.output:
            write_output_text(FLAGS.output, json.dumps(results, indent=2, sort_keys=True) + "\n")
    for name, entry in results["methods"].items():
        print(f"{name}: {entry['accuracy']:.2f} +- {entry['ci95']:.2f}% "
              f"over {results['episodes']} episodes")
    if not FLAGS.output:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main)
