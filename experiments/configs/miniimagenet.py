"""SIB on miniImageNet with WRN-28-10, the published configuration.

    python -m experiments.miniimagenet --workdir=W --data_dir=DATA/Mini-ImageNet \
        --config=experiments/configs/miniimagenet.py:1shot      # or :5shot

Data (Ravi & Larochelle split, 64/16/20 classes, 84x84), in either form, found by the
files present (or forced with --config.data.format=folders|pickle):
  - the reference layout, DATA/Mini-ImageNet/{train,val,test}/<class>/<image>, optionally
    with the fixed validation episodes DATA/Mini-ImageNet/val1000Episode_5_way_{1,5}_shot.json
    (paths relative to val/); `python -m experiments.prepare_data mini_imagenet
    --imagenet_dir=IMAGENET --csv_dir=CSVS --out=DATA/Mini-ImageNet` builds it from ImageNet;
  - the pickle caches DATA/mini-imagenet-cache-{train,val,test}.pkl.

Hardware and time: an accelerator (WRN-28-10, 60 pretraining epochs, 50,000 meta-training
iterations); not practical on a 2-core CPU and not run here, so no wall time is measured.

Expected (published, the authors' code: WRN-28-10, K = 3, last checkpoint, 2000 test episodes;
../shared/docs/sib-reference.md): 5-way 1-shot 70.70 +- 0.59, 5-way 5-shot 80.05 +- 0.36 (the
paper: 70.0 / 79.2). Not reproduced here.
"""

from metaunlab.experiments.configs.common import published_config


def get_config(variant: str = "1shot"):
    return published_config("miniimagenet", 84, variant)
