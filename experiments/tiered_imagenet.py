"""Train and evaluate SIB on tieredImageNet: `python -m experiments.tiered_imagenet --workdir=W`.

See experiments/configs/tiered_imagenet.py for the settings and the data it expects.
"""

from .runner import main

if __name__ == "__main__":
    main("tiered_imagenet", data_dir_flag=True)
