"""A file that is no image is named in the message, with no in-memory object's repr."""

import pytest

from metaunlab.data.decode import ImageFormat, load_image_files
from metaunlab.data.errors import DataError


@pytest.mark.parametrize("data", [b"\x00" * 64, b"%PDF-1.4 a document", b"\xff\xd8\xff"])
def test_a_file_in_no_image_format_is_named_without_a_buffer_repr(tmp_path, data):
    (tmp_path / "query.png").write_bytes(data)
    with pytest.raises(DataError) as error:
        load_image_files([tmp_path / "query.png"], ImageFormat(channels=1, image_size=28))
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'query.png'} is not a readable image")
    assert "BytesIO" not in message and " at 0x" not in message
