"""Train and evaluate SIB on miniimagenet: `python -m experiments.miniimagenet --workdir=W`.

See experiments/configs/miniimagenet.py for the settings, the expected time and accuracy.
"""

from .runner import main

if __name__ == "__main__":
    main("miniimagenet", data_dir_flag=True)
