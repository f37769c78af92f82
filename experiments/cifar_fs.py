"""Train and evaluate SIB on cifar_fs: `python -m experiments.cifar_fs --workdir=W`.

See experiments/configs/cifar_fs.py for the settings, the expected time and accuracy.
"""

from .runner import main

if __name__ == "__main__":
    main("cifar_fs", data_dir_flag=True)
