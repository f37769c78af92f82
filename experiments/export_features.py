"""Write a trained run's frozen features of its own splits as a features file.

    python -m experiments.export_features --workdir=W --output=FEATS.npz

FEATS.npz holds `train`, `val` and `test` features and labels (metaunlab/data/features.py),
embedded by W's backbone as W evaluates: what `python -m experiments.features` and
docs/tutorial.py read.
"""

from absl import app, flags

from . import cli

flags.DEFINE_string("workdir", None, "Work dir of a training run on images.", required=True)
flags.DEFINE_string("output", None, "The features .npz to write.", required=True)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    cli.set_default_verbosity()
    from metaunlab.data.features import SPLITS, save_feature_file
    from metaunlab.errors import ConfigError
    from metaunlab.outputs import check_output_file
    from metaunlab.trained_model import TrainedModel

    with cli.user_errors():
        # The work dir is only read: the file goes elsewhere.
        check_output_file(FLAGS.output, "--output", inputs=[("work dir", FLAGS.workdir)])
        model = TrainedModel.load(FLAGS.workdir)
        if model.features_file is not None:
            raise ConfigError(f"--workdir={FLAGS.workdir} was trained on the features file "
                              f"{model.features_file}; use that file.")
        splits = {split: model.split_features(split) for split in SPLITS}
        save_feature_file(FLAGS.output, splits)
    sizes = ", ".join(f"{split} {len(labels)}" for split, (_, labels) in splits.items())
    print(f"wrote {FLAGS.output}: {model.feat_dim}-dimensional features of {sizes} images")


if __name__ == "__main__":
    app.run(main)
