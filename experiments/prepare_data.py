"""Build a data set's on-disk form from its sources.

    python -m experiments.prepare_data mini_imagenet --imagenet_dir=IMAGENET \
        --csv_dir=CSVS --out=DATA/Mini-ImageNet

mini_imagenet: IMAGENET holds the ILSVRC-2012 train images, train/<wnid>/<wnid>_<n>.JPEG
(or is that train/ folder); CSVS holds the Ravi & Larochelle train.csv, val.csv and
test.csv. Writes the SIB reference layout DATA/Mini-ImageNet/{train,val,test}/<wnid>/*.jpg
(84x84), which `python -m experiments.miniimagenet --data_dir=DATA/Mini-ImageNet` reads.
Rerunning after an interruption keeps the images already written.
"""

import os

from absl import app, flags

from . import cli

flags.DEFINE_string("imagenet_dir", None, "ImageNet folder holding train/<wnid>/*.JPEG.")
flags.DEFINE_string("csv_dir", None, "Folder holding the split CSVs train/val/test.csv.")
flags.DEFINE_string("out", None, "Folder to write the data set into.")
flags.DEFINE_integer("image_size", 84, "Side of the square images written.")

_DATASETS = ("mini_imagenet",)


def run(argv):
    cli.set_default_verbosity()
    if len(argv) != 2 or argv[1] not in _DATASETS:
        cli.fail(f"name one data set to prepare, one of {', '.join(_DATASETS)}, e.g. "
                 "`python -m experiments.prepare_data mini_imagenet --imagenet_dir=... "
                 "--csv_dir=... --out=...`.")
    flag = flags.FLAGS
    missing = [name for name in ("imagenet_dir", "csv_dir", "out") if not flag[name].value]
    if missing:
        cli.fail(f"--{missing[0]} is not set; mini_imagenet needs --imagenet_dir, --csv_dir "
                 "and --out.")
    from metaunlab.data.mini_imagenet_build import build_from_imagenet
    from metaunlab.outputs import check_output_folder

    with cli.user_errors():
        # Written among the ImageNet files, new images would change the files each class
        # has (the CSVs number them); the split CSVs may share a folder with the output.
        check_output_folder(flag.out, "--out", inputs=[
            ("ImageNet folder", flag.imagenet_dir),
            *((f"{split} CSV", os.path.join(flag.csv_dir, f"{split}.csv"))
              for split in ("train", "val", "test"))])
        counts = build_from_imagenet(flag.imagenet_dir, flag.csv_dir, flag.out,
                                     image_size=flag.image_size)
    print(f"wrote {flag.out}: " + ", ".join(f"{n} {split}" for split, n in counts.items())
          + " images")


if __name__ == "__main__":
    app.run(run)
