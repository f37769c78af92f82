""".pth files (metaunlab.interop.pth): both readers agree, and malicious pickles are refused."""

from __future__ import annotations

import pickle
import struct

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
