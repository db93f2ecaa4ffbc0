"""Decoding a sample's members from someone else's corpus: bounded, never unpickling (pipeline.corpus.sample)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from pipeline.corpus.sample import decode_image, decode_soft_label
from tests.hostile.craft import npy_header_only, png_header_only


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_images_over_pillows_limit_raise_and_never_only_warn(monkeypatch: pytest.MonkeyPatch) -> None:
    assert decode_image(_png(12, 12)).shape == (12, 12, 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping decode_image would fail here too
        with pytest.raises(ValueError, match="decompression bomb"):
            decode_image(_png(12, 12))  # 144 pixels: Pillow alone would only warn (under twice its limit)
        with pytest.raises(ValueError, match="decompression bomb"):
            decode_image(_png(30, 30))  # over twice the limit: Pillow's own error, as a ValueError
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # a caller that turned Pillow's check off
    assert decode_image(_png(12, 12)).shape == (12, 12, 3)


def test_a_header_that_claims_a_huge_image_is_refused_before_decoding() -> None:
    with pytest.raises(ValueError, match="decompression bomb"):
        decode_image(png_header_only(100_000, 100_000))


def test_soft_labels_refuse_objects_and_headers_larger_than_their_bytes() -> None:
    buf = io.BytesIO()
    np.save(buf, np.linspace(0, 1, 7, dtype=np.float16))
    assert decode_soft_label(buf.getvalue()).dtype == np.float32
    with pytest.raises(ValueError, match="claims shape"):
        decode_soft_label(npy_header_only((10**12,)))
    objects = io.BytesIO()
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="unpickling"):
        decode_soft_label(objects.getvalue())
