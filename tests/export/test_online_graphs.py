"""The online model's exported graphs compute what the Python tracker's TranslationFilter computes."""

from __future__ import annotations

import numpy as np
import pytest

from siamtool.export.online import (
    ONLINE_APPLY_FILE,
    ONLINE_FIT_FILE,
    check_online_graphs,
    dft_matrices,
    export_online_graphs,
)
from siamtool.onnx_format import onnx_session
from siamtool.tracking.online import ScaleFilter, TranslationFilter, gaussian_label, target_window, upsampled_response

C, H, W = 6, 16, 16


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    out = tmp_path_factory.mktemp("online")
    export_online_graphs(out, C, H, W, 17)
    return onnx_session(out / ONLINE_FIT_FILE), onnx_session(out / ONLINE_APPLY_FILE), out


def _features(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((1, C, H, W)) * 3 + 1).astype(np.float32)


def test_fine_matrix_is_the_trackers_zero_padded_upsampling():
    rng = np.random.default_rng(0)
    spectrum = np.fft.rfft2(rng.standard_normal((H, W)))
    m = dft_matrices(H, W, 4)
    full = np.fft.fft2(np.fft.irfft2(spectrum, s=(H, W)))
    fine = ((m["fine_re"] + 1j * m["fine_im"]) @ full.reshape(-1)).real.reshape(4 * H, 4 * W)
    np.testing.assert_allclose(fine, upsampled_response(spectrum, (H, W), 4), atol=1e-10)


def test_fit_and_apply_graphs_match_the_translation_filter(graphs):
    fit, apply, _ = graphs
    flt = TranslationFilter(reg=0.01, sigma_factor=0.1, upsample=4, window=3.0)
    first, cell, size = _features(1), (6.3, 9.1), (3.0, 5.0)
    flt.add_sample(first[0], cell, size, permanent=True)
    flt.calibrate(first[0])
    window = flt._win.astype(np.float32)
    sigma = max(0.1 * np.sqrt(size[0] * size[1]), 0.25)
    label = gaussian_label((H, W), cell, sigma)
    num_re, num_im, den = fit.run(None, {"features": first, "window": window, "label": label})
    half = W // 2 + 1
    np.testing.assert_allclose((num_re + 1j * num_im).reshape(C, H, W)[..., :half], flt._num, rtol=0,
                               atol=1e-4 * np.abs(flt._num).max())
    den_reg = den + 0.01 * den.mean()
    np.testing.assert_allclose(den_reg.reshape(H, W)[:, :half], flt._den, rtol=1e-4)
    later = _features(2)
    response, fine = apply.run(None, {"features": later, "window": window, "num_re": num_re, "num_im": num_im,
                                      "den": (den_reg * flt.peak).astype(np.float32)})
    coarse_ref, fine_ref = flt.respond(later[0])
    scale = np.abs(coarse_ref).max()
    np.testing.assert_allclose(response, coarse_ref, atol=1e-4 * scale)
    np.testing.assert_allclose(fine, fine_ref, atol=1e-4 * scale)
    assert np.unravel_index(np.argmax(fine), fine.shape) == np.unravel_index(np.argmax(fine_ref), fine_ref.shape)


def test_check_online_graphs_reports_float32_rounding(graphs):
    _, _, out = graphs
    window = np.outer(np.hanning(H + 2)[1:-1], np.hanning(W + 2)[1:-1])
    diffs = check_online_graphs(out, _features(3), window, gaussian_label((H, W), (8.0, 8.0), 1.0))
    assert set(diffs) == {"num_re", "num_im", "den", "response", "fine"}
    assert max(diffs.values()) < 1e-4


def test_host_constants_are_the_trackers_own():
    from siamtool.onnx_format import HOST_CONSTANTS
    from siamtool.tracking import camera, tracker

    assert HOST_CONSTANTS["reference_frames"] == tracker.REFERENCE_FRAMES
    assert HOST_CONSTANTS["state_min_size"] == tracker.STATE_MIN_SIZE
    assert HOST_CONSTANTS["growth_tol"] == tracker.GROWTH_TOL
    assert HOST_CONSTANTS["upsample"] == TranslationFilter().upsample
    assert target_window(40, 4.0).min() == pytest.approx(HOST_CONSTANTS["window_floor"])
    scale = ScaleFilter()
    assert (scale.reg, scale.model_area) == (HOST_CONSTANTS["scale_reg"], HOST_CONSTANTS["scale_model_area"])
    camera_constants = (HOST_CONSTANTS["camera_width"], HOST_CONSTANTS["camera_rate"], HOST_CONSTANTS["camera_prior"])
    assert camera_constants == (camera.WIDTH, camera.RATE, camera.PRIOR)


def test_export_json_carries_the_whole_tracker(stable_export):
    import json

    from siamtool.onnx_format import REPORT_FILE, TRACK_KEY, TRACKER_FORMAT_VERSION, TRACKER_KEY

    report = json.loads((stable_export / REPORT_FILE).read_text())
    tracker = report[TRACKER_KEY]
    assert tracker["format_version"] == TRACKER_FORMAT_VERSION
    assert set(report[TRACK_KEY]) >= {"online_weight", "lost_threshold", "scale", "calibrate_size"}
    for name in tracker["online_graphs"].values():
        assert (stable_export / name).is_file()
    assert max(report["online_graphs_max_diff"].values()) < 1e-4
    graphs = tracker["opencv4_graphs"]
    assert (stable_export / graphs["template"]).is_file() and (stable_export / graphs["search"]).is_file()
    assert max(report["opencv4_graphs_max_diff"].values()) < 1e-4  # folded for OpenCV 4 and still right
