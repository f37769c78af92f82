"""Predicting on folders: the query chunks, the CSV, and bad folders as one sentence."""

import csv
import os
import stat

import numpy as np
import pytest

from metaunlab.data.errors import DataError
from metaunlab.data.task_folders import query_images, support_images
from metaunlab.prediction import Predictions, transductive_chunks


def test_small_query_sets_are_one_chunk_and_large_ones_nearly_equal_seeded_chunks():
    np.testing.assert_array_equal(transductive_chunks(75, 75)[0], np.arange(75))
    chunks = transductive_chunks(160, 75, seed=3)
    assert [len(c) for c in chunks] == [54, 53, 53]
    assert sorted(np.concatenate(chunks).tolist()) == list(range(160))  # each query once
    assert not np.array_equal(np.concatenate(chunks), np.arange(160))  # shuffled
    again = transductive_chunks(160, 75, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(chunks, again, strict=True))


def test_csv_has_the_label_its_probability_k0_and_optional_class_columns(tmp_path):
    predictions = Predictions(["q/a.png", "q/b.png"], ["cat", "dog"],
                              np.array([[0.9, 0.1], [0.3, 0.7]]),
                              np.array([[0.4, 0.6], [0.2, 0.8]]))
    assert predictions.labels == ["cat", "dog"] and predictions.k0_labels == ["dog", "dog"]
    predictions.to_csv(tmp_path / "p.csv", class_columns=True)
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert list(rows[0]) == ["path", "label", "probability", "label_k0", "probability_k0",
                             "p_cat", "p_dog"]
    assert rows[0]["label"] == "cat" and float(rows[0]["probability"]) == 0.9
    assert rows[0]["label_k0"] == "dog" and float(rows[1]["p_dog"]) == 0.7
    predictions.to_csv(tmp_path / "short.csv")
    assert (tmp_path / "short.csv").read_text().splitlines()[0] == (
        "path,label,probability,label_k0,probability_k0")


def test_folders_are_read_as_classes_and_bad_ones_refused(tmp_path, caplog):
    for name in ("b_class", "a_class"):
        (tmp_path / "s" / name).mkdir(parents=True)
        for i in range(2 if name == "a_class" else 1):
            (tmp_path / "s" / name / f"{i}.png").write_bytes(b"")
    classes, files, labels = support_images(tmp_path / "s")
    assert classes == ["a_class", "b_class"] and labels.tolist() == [0, 0, 1]
    assert [f.name for f in files] == ["0.png", "1.png", "0.png"]
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "x.jpg").write_bytes(b"")
    assert [p.name for p in query_images(tmp_path / "q")] == ["x.jpg"]
    with pytest.raises(DataError, match=r"support folder .* does not exist"):
        support_images(tmp_path / "none")
    (tmp_path / "s" / "loose.png").write_bytes(b"")
    with pytest.raises(DataError, match="is a file directly inside the support folder"):
        support_images(tmp_path / "s")
    (tmp_path / "s" / "loose.png").unlink()
    # A file that is not an image is skipped, named in a warning.
    (tmp_path / "s" / "a_class" / "notes.txt").write_text("hi")
    caplog.clear()
    assert support_images(tmp_path / "s")[1] == files
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"skipping 1 file(s) of the class folder {tmp_path / 's' / 'a_class'} that are not "
        ".jpg/.jpeg/.png images: notes.txt"]
    (tmp_path / "q" / "x.jpg").unlink()
    (tmp_path / "q" / "table.csv").write_text("")
    with pytest.raises(DataError, match=r"query folder .* holds no \.jpg/\.jpeg/\.png images"):
        query_images(tmp_path / "q")
    (tmp_path / "s" / "a_class" / "sub").mkdir()
    with pytest.raises(DataError, match=r"a_class/sub is a folder, not an image file"):
        support_images(tmp_path / "s")
    (tmp_path / "one" / "c").mkdir(parents=True)
    with pytest.raises(DataError, match="has 1 class folder"):
        support_images(tmp_path / "one")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"query folder .* holds no \.jpg/\.jpeg/\.png images"):
        query_images(tmp_path / "empty")


def _one_hot_predictions(sib_labels, k0_labels, n_way=3):
    eye = np.eye(n_way)
    paths = [f"q/{i}.png" for i in range(len(sib_labels))]
    return Predictions(paths, [f"c{i}" for i in range(n_way)], eye[sib_labels], eye[k0_labels])


def test_class_counts_and_the_warning_when_sib_forces_even_counts():
    forced = _one_hot_predictions([0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 1, 2])
    assert forced.class_counts() == {"c0": 2, "c1": 2, "c2": 2}
    assert forced.class_counts(k0=True) == {"c0": 4, "c1": 1, "c2": 1}
    warning = forced.forced_even_warning()
    assert warning is not None and "1 to 4" in warning and "balanced_readout" in warning
    # Even counts that K = 0 agrees with, uneven SIB counts, or too few queries: no warning.
    for sib_labels, k0_labels in (([0, 0, 1, 1, 2, 2], [0, 0, 1, 2, 1, 2]),
                                  ([0, 0, 0, 0, 1, 2], [0, 0, 0, 0, 1, 2]),
                                  ([0, 1, 2], [0, 0, 0])):
        assert _one_hot_predictions(sib_labels, k0_labels).forced_even_warning() is None


def test_text_cells_a_spreadsheet_would_run_as_formulas_are_neutralised(tmp_path):
    hyperlink = '=HYPERLINK("x","y")'
    for name in (hyperlink, "+cmd", 'plain, "quoted"'):
        (tmp_path / "s" / name).mkdir(parents=True)
        (tmp_path / "s" / name / "a.png").write_bytes(b"")
    classes, _, _ = support_images(tmp_path / "s")
    paths = ["-1.png", "@SUM(A1).png", "\tt.png", "\rr.png", "=1+1.png", "q/ok-1.png"]
    probabilities = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    Predictions(paths, classes, probabilities, probabilities).to_csv(tmp_path / "p.csv")
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert [row[0] for row in rows] == ["'-1.png", "'@SUM(A1).png", "'\tt.png", "'\rr.png",
                                        "'=1+1.png", "q/ok-1.png"]
    labels = {row[1] for row in rows} | {row[3] for row in rows}
    assert labels == {"'+cmd", "'" + hyperlink, 'plain, "quoted"'}


@pytest.mark.parametrize("umask, existing_mode, mode", [
    (0o022, None, 0o644), (0o027, None, 0o640), (0o022, 0o600, 0o600), (0o022, 0o664, 0o664)])
def test_the_csv_is_written_through_a_symlink_with_the_umask_or_the_mode_it_had(
        umask, existing_mode, mode, tmp_path):
    target, link = tmp_path / "kept" / "p.csv", tmp_path / "link.csv"
    target.parent.mkdir()
    if existing_mode is not None:
        target.write_text("old")
        target.chmod(existing_mode)
    os.symlink(target, link)
    previous = os.umask(umask)
    try:
        _one_hot_predictions([0, 1], [0, 1]).to_csv(link)
    finally:
        os.umask(previous)
    assert os.readlink(link) == str(target)
    assert target.read_text().startswith("path,label,")
    assert stat.S_IMODE(target.stat().st_mode) == mode
