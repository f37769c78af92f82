"""Where the Omniglot archives come from, and fetching them when a machine has none.

The two "minimal" background archives are the offline default dataset. Their source is the
data set's own repository, brendenlake/omniglot (its ``python/`` folder, MIT licensed, the
same files TFDS's ``omniglot`` builder downloads); the SHA-256 of each is pinned here.
``$METAUNLAB_OMNIGLOT_URL`` points the download at a mirror instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from metaunlab.data.download import download

OMNIGLOT_URL_ENV = "METAUNLAB_OMNIGLOT_URL"
OMNIGLOT_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"

# name -> SHA-256 of the published file.
MINIMAL_ARCHIVES: dict[str, str] = {
    "images_background_small1.zip":
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    "images_background_small2.zip":
        "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
}


def omniglot_cache_dir() -> Path:
    """Where downloaded archives go: ``$XDG_CACHE_HOME/metaunlab/omniglot`` (default
    ``~/.cache/metaunlab/omniglot``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()
    return Path(cache) / "metaunlab" / "omniglot"


def has_omniglot(folder: Path) -> bool:
    """Whether ``folder`` holds any Omniglot archive or extracted ``images_*`` folder."""
    return folder.is_dir() and any(
        (p.is_file() and p.suffix == ".zip") or p.is_dir() for p in folder.glob("images_*"))


def fetch_omniglot(folder: str | os.PathLike, *, env_var: str) -> Path:
    """Download the two minimal background archives into ``folder``, unless it holds
    Omniglot already.

    Args:
      folder: where the archives go (created if missing).
      env_var: the variable that names another folder, for the messages.

    Returns:
      ``folder``.

    Raises:
      DataError: an archive could not be downloaded or verified; the message names its URL
        and where to put a copy downloaded by hand.
    """
    folder = Path(folder)
    if has_omniglot(folder):
        return folder
    base = os.environ.get(OMNIGLOT_URL_ENV) or OMNIGLOT_URL
    print(f"Omniglot: downloading {', '.join(MINIMAL_ARCHIVES)} from {base} into {folder} "
          f"(set {env_var} to use archives stored elsewhere)", file=sys.stderr)
    for name, sha256 in MINIMAL_ARCHIVES.items():
        download(base.rstrip("/") + "/" + name, folder / name, sha256,
                 where_to_put_it=f"put it in {folder}, or set {env_var} to a folder that "
                                 "holds both archives")
    return folder
