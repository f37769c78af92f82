"""Downloading a published file: streamed, checksummed, written atomically.

A download either leaves the complete, verified file at its destination or leaves the
destination as it was: the bytes go to a temporary file beside it (``metaunlab.files``),
which is renamed into place only once its length and SHA-256 match what was published.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from metaunlab.data.checksums import file_digest
from metaunlab.data.errors import DataError, looks_like_html
from metaunlab.files import atomic_path

_CHUNK = 1 << 16
_TIMEOUT_SECONDS = 30


def download(url: str, destination: str | os.PathLike, sha256: str, *,
             where_to_put_it: str) -> Path:
    """Fetch ``url`` into ``destination`` unless the file there already has ``sha256``.

    Args:
      url: where the file is published (http, https or file).
      destination: the file to write; its folder is created if missing.
      sha256: the published file's SHA-256, lower-case hex.
      where_to_put_it: the end of the sentence a failure ends with, saying how to supply the
        file by hand (e.g. "put it in <folder>, or set $VAR to a folder that holds it").

    Returns:
      The destination path.

    Raises:
      DataError: the host cannot be reached, answers with an error or a web page, sends
        fewer bytes than it announced, or sends a file with another checksum. The
        destination is left as it was.
    """
    destination = Path(destination)
    if destination.is_file() and file_digest(destination) == sha256:
        return destination
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create {destination.parent} ({error.strerror}); "
                        f"{where_to_put_it}.") from None
    failure = f"download {url} yourself and {where_to_put_it}"
    try:
        response = urllib.request.urlopen(url, timeout=_TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        raise DataError(f"{url} answered HTTP {error.code} ({error.reason}); {failure}.") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        host = urllib.parse.urlsplit(url).netloc or url
        raise DataError(f"cannot reach {host} ({reason}); {failure}.") from None
    # atomic_path raises a one-sentence ConfigError when the folder is not writable.
    with response, atomic_path(destination) as partial:
        _stream(response, url, Path(partial), sha256, failure, label=destination.name)
    return destination


def _stream(response, url: str, partial: Path, sha256: str, failure: str, *,
            label: str) -> None:
    """Copy the response into ``partial``, checking its start, length and checksum."""
    announced = int(response.headers.get("Content-Length") or 0) or None
    digest, received, first = hashlib.sha256(), 0, b""
    bar = tqdm(total=announced, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
               desc=label, disable=None, file=sys.stderr)  # disable=None: a bar only on a terminal
    try:
        with bar, open(partial, "wb") as out:
            while chunk := response.read(_CHUNK):
                if not first:
                    first = chunk[:512]
                    if looks_like_html(first):
                        raise DataError(f"{url} sent a web page instead of the file (a login, "
                                        f"quota or error page); {failure}.")
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    except (TimeoutError, http.client.IncompleteRead, ConnectionError) as error:
        raise DataError(f"the download of {url} stopped after {received} bytes ({error}); "
                        f"rerun to try again, or {failure}.") from None
    if announced is not None and received < announced:
        raise DataError(f"the download of {url} stopped after {received} of {announced} "
                        f"bytes; rerun to try again, or {failure}.")
    if digest.hexdigest() != sha256:
        raise DataError(f"{url} sent a file with SHA-256 {digest.hexdigest()}, not the "
                        f"published {sha256}; {failure}.")

