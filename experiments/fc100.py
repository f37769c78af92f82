"""Train and evaluate SIB on FC100: `python -m experiments.fc100 --workdir=W --data_dir=D`.

See experiments/configs/fc100.py for the settings and the data it expects.
"""

from .runner import main

if __name__ == "__main__":
    main("fc100", data_dir_flag=True)
