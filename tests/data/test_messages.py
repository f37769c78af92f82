"""Messages say what stands at a path that is not what was asked for (a folder, a file, a
broken link), and never print a control character of a path to the terminal."""

import re

import pytest

from metaunlab import errors
from metaunlab.data.episode_files import resolve_episode_paths
from metaunlab.data.errors import DataError
from metaunlab.data.folders import load_class_folders
from metaunlab.data.omniglot import default_omniglot_dir, load_omniglot
from metaunlab.data.task_folders import query_images
from metaunlab.data.user_folders import load_user_folders

ODD = "run\x1b[31m\x07red\u202e"  # a colour escape, a bell and a right-to-left override
ODD_SHOWN = r"run\x1b[31m\x07red\u202e"


def _folder(root, name):
    (root / name).mkdir()


def _broken_link(root, name):
    (root / name).symlink_to(root / "moved" / name)


@pytest.mark.parametrize("make, what", [
    (_folder, "is a folder, not an image file"),
    (_broken_link, "is a broken symbolic link to {root}/moved/x.png"),
], ids=["folder", "broken_link"])
def test_an_episode_file_naming_something_else_than_an_image_says_what_it_is(tmp_path, make,
                                                                             what):
    (tmp_path / "a.png").write_bytes(b"")
    make(tmp_path, "x.png")
    records = [{"Support": [["a.png"]], "Query": [["x.png"]]}]
    with pytest.raises(DataError, match=re.escape(
            f"episode 0 in eps.json names 'x.png' but {tmp_path}/x.png "
            f"{what.format(root=tmp_path)}; check the image root")):
        resolve_episode_paths(records, tmp_path, source="eps.json")


@pytest.mark.parametrize("load", [query_images, lambda folder: load_class_folders([folder],
                                                                                 folder.parent)],
                         ids=["query_folder", "class_folder"])
def test_a_broken_link_among_images_is_called_a_broken_link(tmp_path, load):
    folder = tmp_path / "images"
    folder.mkdir()
    _broken_link(folder, "a.png")
    with pytest.raises(DataError, match=re.escape(
            f"{folder}/a.png is a broken symbolic link to {folder}/moved/a.png; ")):
        load(folder)


def test_an_omniglot_dir_that_is_a_file_is_called_a_file(tmp_path, monkeypatch):
    (tmp_path / "omniglot.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    monkeypatch.setenv("METAUNLAB_OMNIGLOT_DIR", str(tmp_path / "omniglot.zip"))
    with pytest.raises(DataError, match=re.escape(
            f"Omniglot folder {tmp_path}/omniglot.zip is a file, not a folder; put ")):
        load_omniglot(default_omniglot_dir())


@pytest.mark.parametrize("text, expected", [
    ("plain/path.png", "plain/path.png"),
    ("caf\u00e9/\u732b.png", "caf\u00e9/\u732b.png"),  # letters of any script stay
    (ODD, ODD_SHOWN),
    ("a\x00b\nc\td", r"a\x00b\nc\td"),
    (b"raw\xffbytes", r"raw\udcffbytes"),
])
def test_shown_escapes_only_what_a_terminal_would_not_print(text, expected):
    assert errors.shown(text) == expected


def test_control_characters_of_a_folder_name_are_escaped_in_the_message(tmp_path):
    with pytest.raises(DataError) as raised:
        load_user_folders(tmp_path / ODD)
    message = str(raised.value)
    assert f"data folder {tmp_path}/{ODD_SHOWN} does not exist;" in message
    assert not any(c in message for c in "\x1b\x07\u202e")


def test_a_nul_in_an_episode_file_path_is_escaped_in_the_message(tmp_path):
    records = [{"Support": [["a\x00b.png"]], "Query": [["c.png"]]}]
    with pytest.raises(DataError) as raised:
        resolve_episode_paths(records, tmp_path, source="eps.json")
    assert f"{tmp_path}/a\\x00b.png does not exist" in str(raised.value)
    assert "\x00" not in str(raised.value)


def test_a_cli_prints_the_control_characters_of_a_path_escaped(tmp_path, run_script):
    proc = run_script("experiments.report", f"--workdir={tmp_path / ODD}")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].startswith(f"error: {tmp_path}/{ODD_SHOWN}/config.json")
    assert not any(c in proc.stderr for c in "\x1b\x07\u202e")
