"""Train and evaluate SIB on Omniglot under both protocols: `python -m experiments.omniglot
--workdir=W` runs the character split in W/character and held-out alphabets with
within-alphabet episodes in W/within_alphabet, then prints both (W/results.md).

`--protocols=within_alphabet` runs one of them; `--config=experiments/configs/omniglot.py:
<protocol>` runs one protocol in W itself, like every other experiment. See
experiments/configs/omniglot.py for the settings, the time and the accuracy.
"""

from .runner import main

PROTOCOLS = ("character", "within_alphabet")

if __name__ == "__main__":
    main("omniglot", data_dir_flag=True, protocols=PROTOCOLS)
