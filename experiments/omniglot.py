"""Train and evaluate SIB on omniglot: `python -m experiments.omniglot --workdir=W`.

See experiments/configs/omniglot.py for the settings, the expected time and accuracy.
"""

from experiments.runner import main

if __name__ == "__main__":
    main("omniglot", data_dir_flag=True)
