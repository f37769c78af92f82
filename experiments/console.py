"""The console scripts `metaunlab-<script>` that `pip install` puts on the PATH.

Each runs its module as `python -m experiments.<script>` does from a checkout (the module is
run as `__main__`, so its flags, `--help` and the spawned children of side-by-side runs behave
the same): `metaunlab-omniglot` is `experiments/omniglot.py`, `metaunlab-prepare-data` is
`experiments/prepare_data.py`.
"""

from __future__ import annotations

import functools
import runpy
from collections.abc import Callable

SCRIPTS = ("omniglot", "omniglot_folds", "miniimagenet", "tiered_imagenet", "cifar_fs", "fc100",
           "folders", "features", "export_features", "predict", "evaluate", "compare", "report",
           "crowding", "head_study", "import_torch", "prepare_data", "benchmark", "memory")


def run_script(script: str) -> None:
    """Run ``experiments/<script>.py`` as the program.

    Args:
      script: a name of ``SCRIPTS``.
    """
    runpy.run_module(f"{__package__}.{script}", run_name="__main__", alter_sys=True)


def __getattr__(name: str) -> Callable[[], None]:
    """``console.omniglot`` etc.: the entry points that pyproject.toml's scripts name."""
    if name in SCRIPTS:
        return functools.partial(run_script, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
