"""The reduced JPEG decode behind `prepare`: libjpeg-turbo through simplejpeg gives OpenCV's pixels exactly,
files it must not or cannot handle go to OpenCV, and the stored crops are the bytes the OpenCV path wrote."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
import simplejpeg

from siamtool.config import Config
from siamtool.data import prepare as prep
from siamtool.geometry import REDUCED_FLAGS
from siamtool.images import decode_reduced
from tests.conftest import shared

FACTORS = (1, 2, 4, 8)


def opencv(data: bytes, k: int) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(data, np.uint8), REDUCED_FLAGS[k])


def frames() -> list[bytes]:
    """Real frames of every real_lasot sequence (colour 4:2:0 and the grayscale toy-1), one upscaled to
    720p the way benchmarks/prepare_throughput.py does, and odd sizes in 4:4:4, 4:2:2 and 4:2:0."""
    root = shared("real_lasot")
    files = [sorted((seq / "img").glob("*.jpg"))[7] for seq in sorted(root.glob("*/*")) if (seq / "img").is_dir()]
    out = [f.read_bytes() for f in files]
    img = cv2.imdecode(np.frombuffer(out[0], np.uint8), cv2.IMREAD_COLOR)
    big = cv2.resize(img, (round(img.shape[1] * 720 / img.shape[0]), 720), interpolation=cv2.INTER_CUBIC)
    out.append(cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    odd = np.ascontiguousarray(cv2.resize(img, (203, 157), interpolation=cv2.INTER_AREA))
    for sub in ("444", "422", "420"):
        out.append(simplejpeg.encode_jpeg(odd, 90, "BGR", sub))
    return out


def test_simplejpeg_decodes_the_pixels_opencv_decodes_at_every_factor():
    for data in frames():
        for k in FACTORS:
            ours, ref = decode_reduced(data, k), opencv(data, k)
            assert ours.shape[2] == 4, "the simplejpeg path was not taken"  # else the test compares OpenCV with itself
            assert np.all(ours[..., 3] == 255)
            np.testing.assert_array_equal(ours[..., :3], ref)
            assert decode_reduced(data, k, "opencv").shape == ref.shape  # the old path, 3 channels


def _with_exif_orientation(data: bytes, orientation: int) -> bytes:
    """`data` with an APP1 Exif segment (little-endian TIFF, one IFD entry: Orientation) after SOI."""
    tiff = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += struct.pack("<I", 0)
    payload = b"Exif\0\0" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def test_files_simplejpeg_must_not_or_cannot_decode_go_to_opencv():
    data = frames()[0]
    rotated = _with_exif_orientation(data, 6)
    ref = opencv(rotated, 2)
    ours = decode_reduced(rotated, 2)
    assert ours.shape == ref.shape and ours.shape[:2] != decode_reduced(data, 2).shape[:2]  # OpenCV turned it
    np.testing.assert_array_equal(ours, ref)
    # Truncated, empty and non-image bytes: unreadable, as for OpenCV's imdecode (images.read_image).
    for bad in (data[: len(data) // 2], b"", b"not an image", data[:2]):
        assert decode_reduced(bad, 2) is None
    # Not a JPEG: OpenCV decodes it.
    png = cv2.imencode(".png", opencv(data, 1))[1].tobytes()
    np.testing.assert_array_equal(decode_reduced(png, 1), opencv(data, 1))
    with pytest.raises(ValueError, match="decoder must be one of"):
        decode_reduced(data, 1, "pillow")


def test_stored_crops_are_the_bytes_the_opencv_decode_path_wrote():
    """Every stored crop of real pairs (templates and searches, all decode factors) is byte-identical to
    the old path's: cv2.imdecode + BGR->BGRA of the region, then the same warp and encoder."""
    cfg = Config()
    cfg.data.pairs_per_sequence = 16
    specs = prep.sample_pairs(prep.index_lasot(shared("real_lasot"), "all").sequences, cfg.data).pairs
    new_t, old_t = prep.Timing(), prep.Timing()
    new, bad_new = prep.make_pairs(specs, prep.CropParams(cfg.data), new_t)
    old, bad_old = prep.make_pairs(specs, prep.CropParams(cfg.data, decoder="opencv"), old_t)
    assert len(new) == len(old) == len(specs) and bad_new == bad_old == []
    assert len(new_t.decode_factors) >= 2  # full-size and reduced decodes are both compared
    for a, b in zip(new, old):
        assert a.template_jpeg.tobytes() == b.template_jpeg.tobytes()
        assert a.search_jpeg.tobytes() == b.search_jpeg.tobytes()
