"""SIB on CIFAR-FS with WRN-28-10 (32 px variant), the published configuration.

    python -m experiments.cifar_fs --workdir=W --data_dir=DATA/cifar-fs \
        --config=experiments/configs/cifar_fs.py:1shot      # or :5shot

Data (--config.data.format=auto picks by the files present):
- the reference layout, DATA/cifar-fs/{train,val,test}/<class>/<image> (32x32, Bertinetto
  et al. 2019 split, 64/16/20 classes of CIFAR-100) and optionally
  val1000Episode_5_way_{1,5}_shot.json;
- or the cifar-100-python release (cifar-100-python.tar.gz or its extracted folder),
  regrouped by the split lists in metaunlab/data/splits/cifar_fs (format=archive);
- or TFDS: format=tfds_cifar100 (a prepared TFDS cifar100) or format=tfds (this package's
  cifar_fs builder), with --data_dir the TFDS data dir.

Hardware and time: an accelerator (WRN-28-10, 60 pretraining epochs, 50,000 meta-training
iterations); not run here, so no wall time is measured.

Expected (published, the authors' code: WRN-28-10, K = 3, last checkpoint, 2000 test episodes;
../shared/docs/sib-reference.md): 5-way 1-shot 79.76 +- 0.58, 5-way 5-shot 85.72 +- 0.37.
Not reproduced here.
"""

from metaunlab.experiments.configs.common import published_config


def get_config(variant: str = "1shot"):
    return published_config("cifar_fs", 32, variant)
