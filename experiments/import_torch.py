"""Turn a PyTorch checkpoint of the SIB reference code into a metaunlab work directory.

    python -m experiments.import_torch --checkpoint=FILE.pth --arch=wrn28_10 \
        --dataset=miniimagenet --workdir=W [--shot=1] [--data_dir=DATA] [--torch_free]

FILE.pth is a backbone state dict or a meta-training checkpoint {"netFeat", "SIB", "lr",
"nbStep"}; see metaunlab/interop/workdir_import.py for what W receives. Afterwards
`python -m experiments.evaluate --workdir=W ...` evaluates the imported model and
`python -m experiments.<dataset> --workdir=W --data_dir=DATA` meta-trains SIB on the
imported backbone, or continues meta-training the imported head.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from absl import app, flags

from metaunlab.errors import ConfigError

from . import cli

# dataset name -> the experiment config module for it
DATASETS = {"miniimagenet": "miniimagenet", "cifar_fs": "cifar_fs"}


def _canonical_dataset(name: str) -> str:
    key = str(name).lower().replace("-", "_")
    if key not in DATASETS:
        raise ConfigError(f"unknown --dataset={name!r}; the reference checkpoints are for "
                         f"{' or '.join(DATASETS)}.")
    return key


def import_checkpoint(checkpoint: str, arch: str, dataset: str, workdir: str, shot: int = 1,
                      use_torch: bool | None = None, data_dir: str = "") -> dict[str, Any]:
    """The dataset's experiment config, then `metaunlab.interop.import_checkpoint`."""
    dataset = _canonical_dataset(dataset)
    config = importlib.import_module(f".configs.{DATASETS[dataset]}", __package__).get_config(
        "5shot" if shot == 5 else "1shot")
    if data_dir:
        config.data.root = data_dir
    # Heavy imports (JAX, orbax) only once the flags are known to be sane.
    from metaunlab.interop.workdir_import import import_checkpoint as write_workdir

    summary = write_workdir(checkpoint, arch, config, workdir, shot=shot, use_torch=use_torch)
    summary["next"] = (f"python -m experiments.{DATASETS[dataset]} --workdir={workdir} "
                       f"--data_dir={data_dir or 'DATA'}")
    return summary


flags.DEFINE_string("checkpoint", None, "The reference .pth file.", required=True)
flags.DEFINE_string("arch", None, "conv4 or wrn28_10 (ConvNet_4_64, WRN_28_10).", required=True)
flags.DEFINE_string("dataset", None, "miniimagenet or cifar_fs.", required=True)
flags.DEFINE_string("workdir", None, "The new work directory.", required=True)
flags.DEFINE_integer("shot", 1, "The shot the SIB head is filed under (N-way <shot>-shot).")
flags.DEFINE_string("data_dir", "", "The dataset folder, recorded in config.json so that "
                    "rerunning the experiment on --workdir finds it.")
flags.DEFINE_bool("torch_free", False, "Read the .pth with the restricted torch-free reader "
                  "even when torch is installed.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    cli.set_default_verbosity()
    from metaunlab.outputs import check_output_folder

    with cli.user_errors():
        # Before the checkpoint is read: the new work dir can be written.
        check_output_folder(FLAGS.workdir, "--workdir",
                            inputs=[(".pth checkpoint", FLAGS.checkpoint)])
        summary = import_checkpoint(FLAGS.checkpoint, FLAGS.arch, FLAGS.dataset, FLAGS.workdir,
                                    shot=FLAGS.shot,
                                    use_torch=False if FLAGS.torch_free else None,
                                    data_dir=FLAGS.data_dir)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    app.run(main)
