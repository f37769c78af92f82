"""Train and evaluate SIB on your own class folders: `python -m experiments.folders --workdir=W
--data_dir=MY_DATA`.

See experiments/configs/folders.py for the layouts it accepts and the settings.
"""

from .runner import main

if __name__ == "__main__":
    main("folders", data_dir_flag=True)
