"""Meta-train and test SIB on your own features: `python -m experiments.features --workdir=W
--data_dir=FEATS.npz`.

See experiments/configs/features.py for the file it reads and the settings.
"""

from .runner import main

if __name__ == "__main__":
    main("features", data_dir_flag=True)
