"""Checksums of data files (metaunlab.data.checksums)."""

from __future__ import annotations

import hashlib

import pytest

from metaunlab.data.checksums import parse_checksums, verify_checksum
from metaunlab.data.errors import DataError


def test_checksums(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    good = "sha256:" + hashlib.sha256(b"abc").hexdigest()
    verify_checksum(path, good)
    verify_checksum(path, "md5:" + hashlib.md5(b"abc").hexdigest())
    with pytest.raises(DataError, match=r"a.bin has sha256 .* was expected"):
        verify_checksum(path, "sha256:" + "0" * 64)
    assert parse_checksums(f" a.bin={good.upper()} ,") == {"a.bin": good}
    with pytest.raises(DataError, match=r"not of the form"):
        parse_checksums("a.bin")
    with pytest.raises(DataError, match=r"has 3 hex digits"):
        parse_checksums("a.bin=md5:abc")
    with pytest.raises(DataError, match=r"algorithm one of"):
        parse_checksums("a.bin=crc32:abcd0123")
