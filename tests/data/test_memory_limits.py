"""Files that declare or expand to far more memory than they hold are refused with one
sentence before the memory is taken (metaunlab.data.limits), and the budget's override works.

The hostile files and the probe that measures each load's peak memory in a forked child of one
process are in tests/data/_memory_probe.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metaunlab.data.errors import DataError
from metaunlab.data.features import load_feature_file
from tests.data._memory_probe import write_hostile_files

ROOT = Path(__file__).resolve().parents[2]
PEAK_GROWTH_MIB = 200  # each load's peak resident memory over the process's size before it
BUDGET_ENV = "METAUNLAB_MEMORY_BUDGET"
_BUDGET_HINT = rf"set {BUDGET_ENV} to the bytes it may take"

# case -> what its message says (a regular expression searched in it)
MESSAGES = {
    "pickle_bytes_hex": r"pickle_bytes_hex\.pkl asks for bytes\(1073741824\), which allocates "
                        r"memory from a number written in the file .* refused",
    # The C unpickler zeroes a memo table as long as the index; this one keeps a dict.
    "pickle_memo_index": r"pickle_memo_index\.pkl holds NoneType, not a dict with 'image_data'",
    "pickle_reconstruct_shape": r"asks for 1\.0 GiB \(an empty numpy array of shape "
                                rf"\(134217728,\)\)[^,]*, more than the 64\.0 MiB .*{_BUDGET_HINT}",
    # numpy would allocate the declared 1 GiB, then read past the end of the empty list.
    "pickle_setstate_shape": r"is not a readable pickle \(UnpicklingError: a numpy array of "
                             r"shape \(134217728,\) and dtype object holds 0 items, not "
                             r"134217728\)",
    "pickle_void_scalar": r"asks for 2\.0 GiB \(a numpy \|V1073741824 scalar\)",
    "pickle_list_copies": r"asks for 128\.0 MiB \(list\(\) of 1048576 items\)",
    "pth_view_copies": r"pth_view_copies\.pth: its tensors take more than 48 MiB .* 4 times "
                       "what its storages hold",
    "pth_memo_index": r"pth_memo_index\.pth is not a PyTorch checkpoint",
    "features_bomb": rf"features_bomb\.npz declares 384\.0 MiB of arrays, more than the "
                     rf"64\.0 MiB .*{_BUDGET_HINT}",
    "features_header": r"train_features\.npy declares a float32 array of shape "
                       r"\(1000000000000, 64\) \(232\.8 TiB\) but its zip entry holds 0 bytes",
    "tiered_bomb": r"train_images\.npz declares 384\.0 MiB of arrays",
    "omniglot_bomb": rf"images_bomb\.zip declares 384\.0 MiB of members, .*{_BUDGET_HINT}",
    "omniglot_bzip2": r"images_bzip2\.zip:images_background/.*\.png is compressed with method "
                      r"12, not deflate",
    "cifar_bomb": r"asks for 384\.0 MiB \(its member cifar-100-python/train\)",
    "image_sparse": rf"sparse\.png is a 2\.0 GiB image file, more than the 256\.0 MiB "
                    rf".*{_BUDGET_HINT}",
    "image_pixels": r"large\.png declares 9000x9000 pixels, more than the 67108864 this "
                    r"library decodes",
    "image_pil_bomb": r"bomb_header\.png declares more than 178956970 pixels, which PIL "
                      r"refuses to decode",
}


@pytest.fixture(scope="module")
def probed(tmp_path_factory) -> dict[str, dict]:
    """case -> {"outcome", "data_error", "growth_mib"}, from one probe process."""
    folder = tmp_path_factory.mktemp("hostile")
    write_hostile_files(folder)
    env = {k: v for k, v in os.environ.items() if k != BUDGET_ENV}
    run = subprocess.run([sys.executable, "-m", "tests.data._memory_probe", str(folder)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    results = {result["case"]: result for result in map(json.loads, run.stdout.splitlines())}
    assert sorted(results) == sorted(MESSAGES)
    return results


@pytest.mark.parametrize("case", sorted(MESSAGES))
def test_hostile_file_is_refused_before_taking_memory(probed, case):
    result = probed[case]
    assert result["data_error"], result["outcome"]
    assert re.search(MESSAGES[case], result["outcome"]), result["outcome"]
    assert "\n" not in result["outcome"]
    assert result["growth_mib"] < PEAK_GROWTH_MIB, result


def _compressible_features(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_features"] = np.zeros((rows, 64), np.float32)
        arrays[f"{split}_labels"] = rng.integers(0, 5, rows)
    np.savez_compressed(path, **arrays)


def test_budget_override_admits_a_trusted_file(tmp_path, monkeypatch):
    from metaunlab.data import limits

    # Zeros compress about 1000 times: past the expansion a file may reach unless trusted.
    path = tmp_path / "feats.npz"
    _compressible_features(path, 4096)  # 3 MiB of features in about 30 KiB
    monkeypatch.setattr(limits, "FLOOR", 2**20)
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    with pytest.raises(DataError, match=rf"feats\.npz declares 3\.1 MiB of arrays, more than "
                                        rf"the 1\.0 MiB .*{_BUDGET_HINT}"):
        load_feature_file(path)
    monkeypatch.setenv(BUDGET_ENV, "8M")
    assert load_feature_file(path)["train"].features.shape == (4096, 64)
    monkeypatch.setenv(BUDGET_ENV, "lots")
    with pytest.raises(DataError, match=rf"{BUDGET_ENV}='lots' is not a size"):
        load_feature_file(path)
