"""matplotlib for the tools' plots: an optional dependency (`pip install "metaunlab[reports]"`)."""

from __future__ import annotations

from metaunlab.errors import ConfigError


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (files only, no display), or a ConfigError that
    says how to install it; call it before the long work whose results it will plot."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("the plots need matplotlib, which is not installed; install it with "
                          "pip install 'metaunlab[reports]'.") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
