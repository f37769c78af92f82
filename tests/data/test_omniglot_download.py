"""Omniglot's archives downloaded from a host: a local HTTP server on 127.0.0.1 stands in for
it, serving the real archives, a cut-off file, a file with another checksum, a web page and
an error, and a closed port stands in for a machine without network."""

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from experiments.configs.omniglot import get_config
from metaunlab.data.download import download
from metaunlab.data.errors import DataError
from metaunlab.data.omniglot_fetch import MINIMAL_ARCHIVES, OMNIGLOT_URL_ENV, fetch_omniglot
from metaunlab.data.sources import load_dataset_splits

from ..conftest import SMALL1_ARCHIVE

SHARED = SMALL1_ARCHIVE.parent
NAME = "images_background_small1.zip"
PUBLISHED = (SHARED / NAME).read_bytes()


class _Host(http.server.BaseHTTPRequestHandler):
    """``/good/<name>``: the shared archive; ``/cut/``: announces it whole, sends half;
    ``/other/``: as many bytes, other contents; ``/page/``: an HTML quota page;
    anything else: 404."""

    def do_GET(self):
        kind, _, name = self.path.strip("/").partition("/")
        body = (SHARED / name).read_bytes() if (SHARED / name).is_file() else b""
        if kind not in ("good", "cut", "other", "page") or not body:
            self.send_error(404, "Not Found")
            return
        if kind == "other":
            body = bytes(len(body))
        if kind == "page":
            body = b"<!DOCTYPE html><html><body>Download quota exceeded</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if kind == "page" else "application/zip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if kind == "cut" else body)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture(scope="module")
def host():
    """The base URL of a local HTTP server (``http://127.0.0.1:<port>``)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Host)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _files(folder: Path) -> list[str]:
    """The folder's files, less the lock that serialises downloads into it."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".download.lock")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_pinned_checksums_are_the_shared_archives() -> None:
    for name, sha256 in MINIMAL_ARCHIVES.items():
        assert hashlib.sha256((SHARED / name).read_bytes()).hexdigest() == sha256


def test_an_empty_default_folder_is_filled_from_the_host_and_then_read(
        host, tmp_path, monkeypatch) -> None:
    """The pipeline's default folder, empty, gets both archives, verified, and is read."""
    folder = tmp_path / "omniglot"
    monkeypatch.setenv("METAUNLAB_OMNIGLOT_DIR", str(folder))
    monkeypatch.setenv(OMNIGLOT_URL_ENV, f"{host}/good/")
    data = get_config().data
    data.image_size = 14
    splits, _ = load_dataset_splits(data)
    for name in MINIMAL_ARCHIVES:
        assert (folder / name).read_bytes() == (SHARED / name).read_bytes()
    assert _files(folder) == sorted(MINIMAL_ARCHIVES)  # no partial file left
    data.root = str(SHARED)
    from_shared, _ = load_dataset_splits(data)
    assert {k: s.class_names for k, s in splits.items()} == {
        k: s.class_names for k, s in from_shared.items()}
    # A second start finds them and downloads nothing (the host is gone).
    monkeypatch.setenv(OMNIGLOT_URL_ENV, f"http://127.0.0.1:{_closed_port()}/")
    assert fetch_omniglot(folder, env_var="METAUNLAB_OMNIGLOT_DIR") == folder


@pytest.mark.parametrize("kind,message", [
    ("cut", rf"download of .*/cut/{NAME} stopped after {len(PUBLISHED) // 2} of "
            rf"{len(PUBLISHED)} bytes; rerun to try again, or download"),
    ("other", rf"/other/{NAME} sent a file with SHA-256 [0-9a-f]{{64}}, not the published "
              rf"{MINIMAL_ARCHIVES[NAME]}; download"),
    ("page", rf"/page/{NAME} sent a web page instead of the file .*; download"),
    ("missing", rf"/missing/{NAME} answered HTTP 404 \(Not Found\); download"),
])
def test_a_bad_download_is_one_sentence_and_leaves_the_destination_as_it_was(
        host, tmp_path, kind, message) -> None:
    destination = tmp_path / NAME
    destination.write_bytes(b"an older copy")
    with pytest.raises(DataError, match=message) as raised:
        download(f"{host}/{kind}/{NAME}", destination, MINIMAL_ARCHIVES[NAME],
                 where_to_put_it=f"put it in {tmp_path}")
    assert str(raised.value).endswith(f"yourself and put it in {tmp_path}.")
    assert destination.read_bytes() == b"an older copy"
    assert [p.name for p in tmp_path.iterdir()] == [NAME]  # no partial file left


def test_no_network_says_what_to_download_and_where_to_put_it(tmp_path, monkeypatch) -> None:
    port = _closed_port()
    monkeypatch.setenv(OMNIGLOT_URL_ENV, f"http://127.0.0.1:{port}/python/")
    folder = tmp_path / "omniglot"
    with pytest.raises(DataError, match=(
            rf"cannot reach 127\.0\.0\.1:{port} \(.*\); download http://127\.0\.0\.1:{port}"
            rf"/python/{NAME} yourself and put it in {folder}, or set METAUNLAB_OMNIGLOT_DIR "
            r"to a folder that holds both archives\.$")):
        fetch_omniglot(folder, env_var="METAUNLAB_OMNIGLOT_DIR")
    assert _files(folder) == []


def test_a_download_cut_short_fetches_only_the_missing_archive(host, tmp_path, capsys) -> None:
    (tmp_path / NAME).write_bytes(PUBLISHED)
    other = "images_background_small2.zip"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(OMNIGLOT_URL_ENV, f"{host}/good/")
        fetch_omniglot(tmp_path, env_var="METAUNLAB_OMNIGLOT_DIR")
    assert f"downloading {other} from" in capsys.readouterr().err
    assert (tmp_path / other).read_bytes() == (SHARED / other).read_bytes()


def test_a_folder_with_archives_is_used_as_it_is(tmp_path) -> None:
    """Archives already there, even of other names, are never downloaded over."""
    (tmp_path / "images_background.zip").write_bytes(PUBLISHED)
    assert fetch_omniglot(tmp_path, env_var="X") == tmp_path
    assert [p.name for p in tmp_path.iterdir()] == ["images_background.zip"]
