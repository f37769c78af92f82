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

import filelock

from metaunlab.data.download import download
from metaunlab.data.errors import DataError

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


def omniglot_sources(folder: Path) -> list[Path]:
    """The Omniglot archives (``images_*.zip``) and extracted ``images_*`` folders in
    ``folder``, sorted."""
    return sorted(p for p in folder.glob("images_*")
                  if (p.is_file() and p.suffix == ".zip") or p.is_dir())


def has_omniglot(folder: Path) -> bool:
    """Whether ``folder`` holds both minimal archives, or Omniglot archives or extracted
    ``images_*`` folders of other names (e.g. the full ``images_background.zip``) and neither
    minimal archive: a folder holding one minimal archive is a download cut short."""
    if not folder.is_dir():
        return False
    present = [p.name for p in omniglot_sources(folder)]
    minimal = [name for name in MINIMAL_ARCHIVES if name in present]
    return len(minimal) == len(MINIMAL_ARCHIVES) or (bool(present) and not minimal)


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
    where_to_put_it = f"put it in {folder}, or set {env_var} to a folder that holds both archives"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create {folder} ({error.strerror}); set {env_var} to a folder "
                        "you may write to, or that holds both archives.") from None
    # Runs started side by side (the demo's protocols) download once: the others wait here,
    # then find the archives.
    with filelock.FileLock(folder / ".download.lock"):
        missing = [name for name in MINIMAL_ARCHIVES if not (folder / name).is_file()]
        if missing and not has_omniglot(folder):
            print(f"Omniglot: downloading {', '.join(missing)} from {base} into {folder} "
                  f"(set {env_var} to use archives stored elsewhere)", file=sys.stderr)
            for name in missing:
                download(base.rstrip("/") + "/" + name, folder / name, MINIMAL_ARCHIVES[name],
                         where_to_put_it=where_to_put_it)
    return folder
