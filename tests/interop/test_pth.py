""".pth files (metaunlab.interop.pth): both readers agree, and malicious pickles are refused."""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

from metaunlab.interop import PthError, UnsafePickleError, load_pth


def _assert_loaded_equal(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_loaded_equal(a[k], b[k])
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("zip_format", [True, False])
def test_pth_readers_agree(torch, tmp_path, zip_format, reference):
    state, full = reference.checkpoints()
    base = torch.randn(6, 5)
    extras = {"half": torch.randn(3).half(), "bf16": torch.randn(4).bfloat16(),
              "column": base[:, 2], "tail": base[3:], "long": torch.arange(4),
              "flag": torch.tensor(True), "empty": torch.zeros(0, 3)}
    for name, obj in (("state", state), ("full", full), ("extras", extras)):
        path = tmp_path / f"{name}.pth"
        torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
        with_torch, without = load_pth(path), load_pth(path, use_torch=False)
        _assert_loaded_equal(without, with_torch)
        reference = torch.load(path, weights_only=True)
        flat = reference["netFeat"] if name == "full" else reference
        got = without["netFeat"] if name == "full" else without
        for k, v in flat.items():
            want = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
            np.testing.assert_array_equal(np.asarray(got[k], want.dtype), want)
    assert without["half"].dtype == np.float16 and without["column"].shape == (6,)


def _payloads(marker):
    command = f"touch {marker}".encode()
    code = f"open({str(marker)!r}, 'w').write('pwned')".encode()
    return {
        "os.system": b"cos\nsystem\n(V" + command + b"\ntR.",
        "posix.system": b"cposix\nsystem\n(V" + command + b"\ntR.",
        "builtins.eval": b"cbuiltins\neval\n(V" + code + b"\ntR.",
        "builtins.exec": b"\x80\x02cbuiltins\nexec\nX" + struct.pack("<I", len(code)) + code
                         + b"\x85R.",
    }


@pytest.mark.parametrize("name", ["os.system", "posix.system", "builtins.eval",
                                  "builtins.exec"])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, name, zip_pth):
    marker = tmp_path / "pwned"
    payload = _payloads(marker)[name]
    zipped, raw = tmp_path / "evil.pth", tmp_path / "evil_legacy.pth"
    zip_pth(zipped, payload)
    raw.write_bytes(payload)
    for path in (zipped, raw):
        with pytest.raises(UnsafePickleError, match=f"refusing to load.*{name}"):
            load_pth(path, use_torch=False)
        assert not marker.exists()


def test_malicious_pickle_is_refused_through_torch_too(torch, tmp_path, zip_pth):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    zip_pth(path, _payloads(marker)["os.system"])
    with pytest.raises(UnsafePickleError, match="weights_only"):
        load_pth(path)
    assert not marker.exists()


def _tensor_pickle(size, stride, offset=0):
    """A hand-written data.pkl holding one float tensor over storage '0' of 4 elements."""
    def ints(values):
        return b"(" + b"".join(b"K" + bytes([v]) for v in values) + b"t"

    return (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n("
            b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000"
            b"X\x03\x00\x00\x00cpuK\x04tQ" + b"K" + bytes([offset]) + ints(size) + ints(stride)
            + b"\x89ccollections\nOrderedDict\n)RtR.")


def test_hand_written_tensor_records_are_checked(tmp_path, zip_pth):
    storage = {"0": np.arange(4, dtype="<f4").tobytes()}
    ok = tmp_path / "ok.pth"
    zip_pth(ok, _tensor_pickle((2,), (2,), offset=1), storage)
    np.testing.assert_array_equal(load_pth(ok, use_torch=False), [1.0, 3.0])
    bad = tmp_path / "bad.pth"
    zip_pth(bad, _tensor_pickle((3,), (2,), offset=1), storage)
    with pytest.raises(PthError, match="reads past its storage"):
        load_pth(bad, use_torch=False)
    evil_pid = tmp_path / "pid.pth"
    zip_pth(evil_pid, b"\x80\x02X\x04\x00\x00\x00evilQ.")
    with pytest.raises(UnsafePickleError, match="persistent id"):
        load_pth(evil_pid, use_torch=False)


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a pickle")
    with pytest.raises(PthError):
        load_pth(junk, use_torch=False)
    plain = tmp_path / "plain.pth"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(PthError, match="not a PyTorch checkpoint"):
        load_pth(plain, use_torch=False)
    with pytest.raises(PthError, match="does not exist"):
        load_pth(tmp_path / "missing.pth", use_torch=False)


def _storage_pickle(numel, size, stride):
    """data.pkl of one float tensor of `size`/`stride` over storage '0' declaring `numel`
    elements (pickle opcodes by hand, as `_tensor_pickle`, with 4-byte integers)."""
    def ints(values):
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"

    return (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n("
            b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000"
            b"X\x03\x00\x00\x00cpuJ" + struct.pack("<i", numel) + b"tQK\x00" + ints(size)
            + ints(stride) + b"\x89ccollections\nOrderedDict\n)RtR.")


def test_a_zip_bomb_is_refused_by_its_declared_size_before_anything_is_read(tmp_path):
    """640 MiB of zeros deflate to under 1 MiB: refused from the archive's directory, the
    import's peak memory far below 1 GB (measured in a fresh process), with either reader."""
    import zipfile

    numel = 160 * 2**20  # 640 MiB: 40 chunks of 16 MiB
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", _storage_pickle(numel, (numel,), (1,)))
        with archive.open("archive/data/0", "w", force_zip64=True) as f:
            chunk = bytes(2**24)
            for _ in range(numel * 4 // len(chunk)):
                f.write(chunk)
    assert bomb.stat().st_size < 2 * 2**20
    # VmHWM, not ru_maxrss: the latter keeps the high-water mark of the forked parent
    # (a test worker) across exec.
    code = ("from metaunlab.interop.pth import PthError, load_pth\n"
            "for use_torch in (False, None):\n"
            "    try:\n"
            f"        load_pth({str(bomb)!r}, use_torch=use_torch)\n"
            "    except PthError as error:\n"
            "        print('refused:', error)\n"
            "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
            "print('peak_kb', peak.split()[1])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("declares 671088640 bytes, beyond the 256 MiB per storage") == 2
    peak_kb = int(proc.stdout.split("peak_kb")[1])
    assert peak_kb < 1024 * 1024, peak_kb


def test_views_larger_than_their_storage_and_corrupt_streams_are_refused(tmp_path, zip_pth):
    import zipfile

    huge = tmp_path / "huge_view.pth"  # a zero-stride 100000 x 100000 view of one element
    zip_pth(huge, _storage_pickle(1, (100000, 100000), (0, 0)), {"0": bytes(4)})
    with pytest.raises(PthError, match="more elements than its storage"):
        load_pth(huge, use_torch=False)
    corrupt = tmp_path / "corrupt.pth"
    with zipfile.ZipFile(corrupt, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", _storage_pickle(1000, (1000,), (1,)))
        archive.writestr("archive/data/0", np.arange(1000, dtype="<f4").tobytes())
    data = bytearray(corrupt.read_bytes())
    start = data.index(b"archive/data/0") + len("archive/data/0") + 8  # inside the stream
    data[start:start + 64] = bytes(64)
    corrupt.write_bytes(bytes(data))
    with pytest.raises(PthError, match="re-download it"):
        load_pth(corrupt, use_torch=False)


def test_a_torch_read_view_larger_than_its_storage_is_refused(torch, tmp_path):
    huge = tmp_path / "huge_view.pth"
    torch.save({"w": torch.zeros(1).expand(100000, 100000)}, huge)
    with pytest.raises(PthError, match="more elements than its storage"):
        load_pth(huge, use_torch=True)
