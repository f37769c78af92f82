"""Images with an alpha channel decode as seen on a white page, and a blank image is reported:
a drawing on a transparent background must not become a black square without a word."""

import io

import numpy as np
import pytest
from PIL import Image

from metaunlab.data.decode import ImageFormat, decode_image

STROKES = np.full((12, 12), 255, np.uint8)  # black strokes on white
STROKES[3:9, 5:7] = 0
STROKES[6, 2:10] = 0


def _encoded(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="png")
    return buffer.getvalue()


def _strokes_on_transparent(mode: str) -> Image.Image:
    """The strokes, black and opaque where drawn, black and fully transparent elsewhere (a
    drawing program's export keeps no colour under transparent pixels)."""
    alpha = Image.fromarray(255 - STROKES)
    black = np.zeros_like(STROKES)
    if mode == "RGBA":
        return Image.merge("RGBA", [Image.fromarray(black)] * 3 + [alpha])
    if mode == "LA":
        return Image.merge("LA", [Image.fromarray(black), alpha])
    # A palette image: colour 0 white and transparent, colour 1 black.
    palette = Image.fromarray((STROKES == 0).astype(np.uint8)).convert("P")
    palette.putpalette([0, 0, 0, 0, 0, 0])
    palette.info["transparency"] = 0
    return palette


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
@pytest.mark.parametrize("fmt", [ImageFormat(channels=1, invert=True), ImageFormat(channels=3)],
                         ids=["omniglot", "rgb"])
def test_a_drawing_on_a_transparent_background_decodes_as_on_white(mode, fmt):
    on_white = decode_image(_encoded(Image.fromarray(STROKES)), "white.png", fmt)
    transparent = decode_image(_encoded(_strokes_on_transparent(mode)), "alpha.png", fmt)
    np.testing.assert_array_equal(transparent, on_white)
    assert len(np.unique(transparent)) == 2


def test_a_blank_image_is_decoded_with_a_warning_naming_it(caplog):
    blank = _encoded(Image.fromarray(np.full((8, 8), 255, np.uint8)))
    pixels = decode_image(blank, "q/blank.png", ImageFormat(channels=1, invert=True))
    assert (pixels == 0).all()
    assert "q/blank.png decodes to a blank image (every pixel 255)" in caplog.text
    caplog.clear()
    decode_image(_encoded(Image.fromarray(STROKES)), "q/drawn.png", ImageFormat(channels=1))
    assert caplog.text == ""
