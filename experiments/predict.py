"""Label a folder of unlabeled images with a trained work dir.

    python -m experiments.predict --workdir=W --support_dir=S --query_dir=Q \
        [--output=predictions.csv] [--class_columns] [--checkpoint=last|best] \
        [--step=trained|tuned]

S holds one folder per class (the folder name is the label) with any number of images each;
Q is a flat folder of unlabeled images. Images are read and preprocessed exactly as W's
training images. SIB refines on all the queries together (in chunks of W's training
query-set size when there are more: metaunlab/prediction.py says how), K = 0 beside it,
at its trained step size (the reference) or, with --step=tuned, at the multiple of it the
run chose on validation for that many queries per class (`test.step_scales`).
Writes `path,label,probability,label_k0,probability_k0` per query image (with
--class_columns, also one probability column per class).
"""

from absl import app, flags, logging

from . import cli

flags.DEFINE_string("workdir", None, "Work dir of a training run.", required=True)
flags.DEFINE_string("support_dir", None, "Folder of class folders of labeled images.",
                    required=True)
flags.DEFINE_string("query_dir", None, "Folder of unlabeled images.", required=True)
flags.DEFINE_string("output", "predictions.csv", "Where to write the predictions (CSV).")
flags.DEFINE_bool("class_columns", False, "Also write SIB's probability of every class.")
flags.DEFINE_enum("checkpoint", "last", ["last", "best"], "Which SIB checkpoint to use.")
flags.DEFINE_enum("step", "trained", ["trained", "tuned"],
                  "SIB's step size: as meta-trained, or as tuned on validation.")
flags.DEFINE_integer("seed", 0, "Seed of the order in which a large query set is chunked.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    cli.set_default_verbosity()
    from metaunlab.outputs import check_output_file
    from metaunlab.trained_model import TrainedModel

    with cli.user_errors():
        # Before any work, and never into what this read-only command reads.
        check_output_file(FLAGS.output, "--output", inputs=[
            ("work dir", FLAGS.workdir), ("support folder", FLAGS.support_dir),
            ("query folder", FLAGS.query_dir)])
        model = TrainedModel.load(FLAGS.workdir)
        predictions = model.predict_folders(FLAGS.support_dir, FLAGS.query_dir,
                                            checkpoint=FLAGS.checkpoint, seed=FLAGS.seed,
                                            step=FLAGS.step)
        predictions.to_csv(FLAGS.output, class_columns=FLAGS.class_columns)
    print(predictions.head)
    counts = ", ".join(f"{name} {n}" for name, n in predictions.class_counts().items())
    print(f"queries per predicted class (SIB): {counts}")
    warning = predictions.forced_even_warning()
    if warning:
        logging.warning(warning)
    print(f"wrote {len(predictions.paths)} predictions over {len(predictions.classes)} classes "
          f"to {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
