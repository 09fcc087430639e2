"""The online target model's numeric core as two ONNX graphs, so the export is the whole tracker.

The Tracker's translation filter (`siamtool.tracking.online.TranslationFilter`) is a multi-channel DCF
on the search graph's (C, H, W) feature map, closed form in the Fourier domain. Everything in it that is
arithmetic on feature maps is exported here; what stays on the host is bookkeeping (the sample memory's
weighted sums, the label and window formulas, the peak calibration), specified in docs/runtimes.md.

* ``online_fit.onnx``: ``features`` (1,C,H,W), ``window`` (H,W), ``label`` (H,W) -> ``num_re``,
  ``num_im`` (C,H*W) and ``den`` (H*W): one sample's numerator ``conj(Y) X_c`` and denominator
  ``sum_c |X_c|^2``, with X the DFT of the energy-normalised, windowed features and Y the label's.
* ``online_apply.onnx``: ``features``, ``window``, ``num_re``, ``num_im``, ``den`` (the memory's weighted
  sums, ``den`` already regularised and multiplied by the peak) -> ``response`` (H,W) on the cell grid
  and ``fine`` (H*F,W*F), the same response band-limited onto an F = `UPSAMPLE` x finer grid.

Why matrices and not an FFT operator: on a 16 x 16 map the 2-D DFT is one (H W x H W) matrix product
(the Kronecker product of two 1-D DFT matrices), which every ONNX runtime runs (a MatMul with a constant),
while opset 17's DFT is missing from older runtimes such as Debian's OpenCV 4.6. The fine grid is two
more small constant matrices (one per axis): zero-padding the spectrum, with the Nyquist bins split
between +N/2 and -N/2 exactly as `tracking.online.upsampled_response` does, is linear in the spectrum.

All in float32; the Python tracker computes the same in float64 numpy, so the graphs match it to float32
rounding (`check_online_graphs`, tests/export/test_online_graphs.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from siamtool.onnx_format import HOST_CONSTANTS, ONLINE_APPLY_FILE, ONLINE_FIT_FILE, onnx_session

FIT_INPUTS, FIT_OUTPUTS = ["features", "window", "label"], ["num_re", "num_im", "den"]
APPLY_INPUTS = ["features", "window", "num_re", "num_im", "den"]
APPLY_OUTPUTS = ["response", "fine"]
UPSAMPLE = int(HOST_CONSTANTS["upsample"])
"""Fine-grid factor of the response (`TranslationFilter(upsample=4)` in the Tracker)."""
ENERGY_EPS = float(HOST_CONSTANTS["energy_eps"])
"""Added to the features' mean energy before the square root (`TranslationFilter._spectrum`)."""


def _axis_dft(n: int) -> np.ndarray:
    k = np.arange(n)
    return np.exp(-2j * np.pi * np.outer(k, k) / n)


def _axis_upsample(n: int, factor: int) -> np.ndarray:
    """(n * factor, n) complex: fine sample k of a 1-D inverse DFT from n bins, band-limited.

    Bin m stands for frequency m (m < n/2) or m - n; an even n's Nyquist bin is split half to +n/2, half
    to -n/2, which makes it a cosine (`upsampled_response`'s halving of the Nyquist row and column)."""
    k = np.arange(n * factor)[:, None]
    m = np.arange(n)[None, :]
    signed = np.where(m < (n + 1) // 2, m, m - n)
    out = np.exp(2j * np.pi * signed * k / (n * factor)) / n
    if n % 2 == 0:
        out[:, n // 2] = np.cos(np.pi * k[:, 0] * n / (n * factor)) / n
    return out


def dft_matrices(h: int, w: int, factor: int = UPSAMPLE) -> dict[str, np.ndarray]:
    """The constant matrices of both graphs, float64: forward DFT, inverse DFT, fine-grid inverse DFT,
    each split into real and imaginary parts; row-major flattening of (H, W) maps on both sides."""
    forward = np.kron(_axis_dft(h), _axis_dft(w))
    inverse = np.conj(forward) / (h * w)
    fine = np.kron(_axis_upsample(h, factor), _axis_upsample(w, factor))
    return {"fwd_re": forward.real, "fwd_im": forward.imag, "inv_re": inverse.real, "inv_im": inverse.imag,
            "fine_re": fine.real, "fine_im": fine.imag}


class _Spectrum(nn.Module):
    """features (1,C,H,W) and window (H,W) -> DFT (real, imag) of the normalised windowed map, (C, H*W)."""

    def __init__(self, h: int, w: int) -> None:
        super().__init__()
        m = dft_matrices(h, w)
        # x_flat @ F^T; F is symmetric (a Kronecker product of symmetric DFT matrices).
        self.register_buffer("fwd_re", torch.from_numpy(m["fwd_re"].T.astype(np.float32)))
        self.register_buffer("fwd_im", torch.from_numpy(m["fwd_im"].T.astype(np.float32)))
        self.hw = h * w

    def forward(self, features: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = features.reshape(-1, self.hw)
        x = x / torch.sqrt(torch.mean(x * x) + ENERGY_EPS)
        x = x * window.reshape(1, self.hw)
        return torch.matmul(x, self.fwd_re), torch.matmul(x, self.fwd_im)


class OnlineFitGraph(nn.Module):
    """One sample's numerator and denominator (see the module docstring)."""

    def __init__(self, h: int, w: int) -> None:
        super().__init__()
        self.spectrum = _Spectrum(h, w)

    def forward(self, features: torch.Tensor, window: torch.Tensor, label: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xr, xi = self.spectrum(features, window)
        y = label.reshape(1, -1)
        yr, yi = torch.matmul(y, self.spectrum.fwd_re), torch.matmul(y, self.spectrum.fwd_im)
        num_re = yr * xr + yi * xi  # conj(Y) X
        num_im = yr * xi - yi * xr
        den = torch.sum(xr * xr + xi * xi, dim=0)
        return num_re, num_im, den


class OnlineApplyGraph(nn.Module):
    """The filter's response to a search map, on the cell grid and the fine grid.

    The fine grid is separable: Re(U_h S U_w^T) with the (F H, H) and (F W, W) 1-D upsampling matrices
    (`_axis_upsample`), four small products per side instead of one (F^2 H W, H W) matrix (8 MB at 16 x 16)."""

    def __init__(self, h: int, w: int, factor: int = UPSAMPLE) -> None:
        super().__init__()
        self.spectrum = _Spectrum(h, w)
        m = dft_matrices(h, w, factor)
        for name in ("inv_re", "inv_im"):
            self.register_buffer(name, torch.from_numpy(m[name].T.astype(np.float32)))
        rows, cols = _axis_upsample(h, factor), _axis_upsample(w, factor).T
        for name, value in (("up_re", rows.real), ("up_im", rows.imag), ("upt_re", cols.real), ("upt_im", cols.imag)):
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(value, np.float32)))
        self.shape, self.fine_shape = (h, w), (h * factor, w * factor)

    def forward(self, features: torch.Tensor, window: torch.Tensor, num_re: torch.Tensor, num_im: torch.Tensor,
                den: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zr, zi = self.spectrum(features, window)
        sr = torch.sum(num_re * zr + num_im * zi, dim=0, keepdim=True) / den  # sum_c conj(A_c) Z_c / den
        si = torch.sum(num_re * zi - num_im * zr, dim=0, keepdim=True) / den
        response = torch.matmul(sr, self.inv_re) - torch.matmul(si, self.inv_im)
        sr, si = sr.reshape(self.shape), si.reshape(self.shape)
        ar = torch.matmul(self.up_re, sr) - torch.matmul(self.up_im, si)  # U_h S
        ai = torch.matmul(self.up_re, si) + torch.matmul(self.up_im, sr)
        fine = torch.matmul(ar, self.upt_re) - torch.matmul(ai, self.upt_im)  # Re((U_h S) U_w^T)
        return response.reshape(self.shape), fine


# ------------------------------------------------------------------------------- numpy reference


def reference_fit(features: np.ndarray, window: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, ...]:
    """numpy float64 FFT of the fit graph's formulas (`TranslationFilter.add_sample`), flattened like it."""
    x = np.asarray(features, np.float32).reshape(-1, *window.shape)
    x = x / np.sqrt(float(np.mean(x * x)) + ENERGY_EPS)
    xf = np.fft.fft2(x * window).reshape(x.shape[0], -1)
    yf = np.fft.fft2(label).reshape(1, -1)
    num = np.conj(yf) * xf
    return num.real, num.imag, np.sum(np.abs(xf) ** 2, axis=0)


def reference_apply(features: np.ndarray, window: np.ndarray, num_re: np.ndarray, num_im: np.ndarray,
                    den: np.ndarray, factor: int = UPSAMPLE) -> tuple[np.ndarray, np.ndarray]:
    """numpy float64 of the apply graph (`TranslationFilter.respond` with its own FFT code path)."""
    h, w = window.shape
    x = np.asarray(features, np.float32).reshape(-1, h, w)
    x = x / np.sqrt(float(np.mean(x * x)) + ENERGY_EPS)
    zf = np.fft.fft2(x * window).reshape(x.shape[0], -1)
    spectrum = (np.sum(np.conj(num_re + 1j * num_im) * zf, axis=0) / den).reshape(h, w)
    response = np.fft.ifft2(spectrum).real
    fine = dft_matrices(h, w, factor)
    fine_c = (fine["fine_re"] + 1j * fine["fine_im"]) @ spectrum.reshape(-1)
    return response, fine_c.real.reshape(h * factor, w * factor)


# ---------------------------------------------------------------------------------------- export


def export_online_graphs(out: Path, channels: int, h: int, w: int, opset: int) -> list[Path]:
    """Trace both graphs for (1, `channels`, h, w) features into `out`; returns their paths."""
    import onnx

    fit, apply = OnlineFitGraph(h, w).eval(), OnlineApplyGraph(h, w).eval()
    feats = torch.randn(1, channels, h, w)
    window = torch.ones(h, w)
    with torch.no_grad():
        num_re, num_im, den = fit(feats, window, window)
    paths = []
    for module, args, name, inputs, outputs in (
            (fit, (feats, window, window), ONLINE_FIT_FILE, FIT_INPUTS, FIT_OUTPUTS),
            (apply, (feats, window, num_re, num_im, den + 1.0), ONLINE_APPLY_FILE, APPLY_INPUTS, APPLY_OUTPUTS)):
        path = out / name
        with torch.no_grad():
            torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                              opset_version=opset, do_constant_folding=True, dynamo=False)
        onnx.checker.check_model(str(path))
        paths.append(path)
    return paths


def check_online_graphs(out: Path, features: np.ndarray, window: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Run both graphs in onnxruntime on real search features and compare with `reference_fit` /
    `reference_apply`: max |difference| as a fraction of the reference's largest magnitude, per output."""
    feats = np.ascontiguousarray(features, np.float32)
    window, label = window.astype(np.float32), label.astype(np.float32)
    fit = onnx_session(out / ONLINE_FIT_FILE)
    apply = onnx_session(out / ONLINE_APPLY_FILE)
    got = fit.run(None, {"features": feats, "window": window, "label": label})
    ref = reference_fit(feats, window, label)
    diffs = {name: _rel(g, r) for name, g, r in zip(FIT_OUTPUTS, got, ref)}
    den = ref[2] + 0.01 * ref[2].mean()
    args = {"features": feats, "window": window, "num_re": ref[0].astype(np.float32),
            "num_im": ref[1].astype(np.float32), "den": den.astype(np.float32)}
    got = apply.run(None, args)
    ref_apply = reference_apply(feats, window, ref[0], ref[1], den)
    diffs.update({name: _rel(g, r) for name, g, r in zip(APPLY_OUTPUTS, got, ref_apply)})
    return diffs


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64)
    return float(np.abs(np.asarray(a, np.float64) - ref).max() / max(float(np.abs(ref).max()), 1e-12))
