"""Power-spectrum distances between the edited set and its reference set (weight-free; never toy).

Every image is first reduced to luminance ``Y = 0.299 R + 0.587 G + 0.114 B`` in [0, 1] (H x W, square).

**PR** (residual power distance): the residual ``r = Y - G_sigma * Y`` (Gaussian blur, sigma = 1 px,
scipy ``gaussian_filter`` truncated at 4 sigma, periodic boundary ``mode="wrap"`` so that the filter is
exactly a multiplication by its DFT: ``R(f) = (1 - G(f)) Y(f)``) removes the image content and keeps the
high-frequency noise a generator leaves. Its periodogram ``P(f) = |DFT(r)(f)|^2 / (H W)`` (white noise
of variance s^2 has E P = s^2 (1 - G(f))^2) is fft-shifted and averaged over ``block x block`` frequency
blocks (``block = H / 128``: a 128 x 128 spectrum per image, so a 700-image set fits in memory). With
``S_e``, ``S_r`` the mean block spectra of the edited and the reference set,

    PR = || S_e - S_r ||_F     (Frobenius norm; shown x10^3)

**PSD** (spectral slope distance): each ``Y`` minus its mean, times a 2-D Hann window (rescaled so the
window keeps the image's power: sum w^2 = H W), gives a periodogram; its radial average ``A(k)`` over
integer radii ``k = round(|f|)`` (f in cycles per image) for k = 1 .. H/2 - 1 is averaged over the set,
and a least-squares line ``log10 A(k) = a + b log10 k`` is fitted over ``k = 4 .. H/2 - 1`` (the Hann
window's main lobe smears k < 4). White noise has b = 0, a 1/f^2 image b = -2 (natural photographs
about -2). With b_e, b_r the slopes of the edited and the reference set's mean radial spectra,

    PSD = | b_e - b_r |

Both are 0 for the unchanged source (identity) and lower is better. Hand-checked in
``tests/test_set_metrics.py`` on white noise and on synthetic 1/f^2 images.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from metrics.sets import SetMetric

LUMA = np.array([0.299, 0.587, 0.114])
SIGMA = 1.0
SPECTRUM_SIDE = 128
FIT_FROM = 4


def luminance(images_u8: torch.Tensor) -> np.ndarray:
    x = images_u8.detach().cpu().numpy().astype(np.float64) / 255.0  # (B, 3, H, W)
    return np.tensordot(x, LUMA, axes=([1], [0]))  # (B, H, W)


def residual_spectra(y: np.ndarray, sigma: float = SIGMA, side: int = SPECTRUM_SIDE) -> np.ndarray:
    """(B, H, W) luminance -> (B, side, side) block-averaged, fft-shifted residual periodograms."""
    from scipy.ndimage import gaussian_filter

    b, h, w = y.shape
    r = y - gaussian_filter(y, sigma=(0, sigma, sigma), mode="wrap", truncate=4.0)
    p = np.abs(np.fft.fftshift(np.fft.fft2(r), axes=(-2, -1))) ** 2 / (h * w)
    bh, bw = max(1, h // side), max(1, w // side)
    return p[:, :bh * (h // bh), :bw * (w // bw)].reshape(b, h // bh, bh, w // bw, bw).mean((2, 4))


def radial_spectra(y: np.ndarray) -> np.ndarray:
    """(B, H, W) -> (B, H/2 - 1): Hann-windowed periodogram averaged over rings k = 1 .. H/2 - 1."""
    b, h, w = y.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    win *= np.sqrt(h * w / (win ** 2).sum())
    x = (y - y.mean((1, 2), keepdims=True)) * win
    p = np.abs(np.fft.fft2(x)) ** 2 / (h * w)
    fy, fx = np.meshgrid(np.fft.fftfreq(h) * h, np.fft.fftfreq(w) * w, indexing="ij")
    k = np.rint(np.hypot(fy, fx)).astype(int).ravel()
    kmax = min(h, w) // 2
    keep = (k >= 1) & (k < kmax)
    counts = np.bincount(k[keep], minlength=kmax)[1:kmax]
    sums = np.stack([np.bincount(k[keep], weights=pi.ravel()[keep], minlength=kmax)[1:kmax] for pi in p])
    return sums / counts


def spectral_slope(radial: np.ndarray, fit_from: int = FIT_FROM) -> float:
    """Least-squares slope of log10 A(k) against log10 k over k = fit_from .. (k = index + 1)."""
    k = np.arange(1, radial.shape[-1] + 1)
    sel = k >= fit_from
    a = np.maximum(radial[sel], 1e-30)
    return float(np.polyfit(np.log10(k[sel]), np.log10(a), 1)[0])


class ResidualPowerDistance(SetMetric):
    name = "pr_source"
    label = "PR vs source x10^3"
    scale = 1e3
    uses_weights = False
    features_key = "residual_spectrum"

    def features(self, images_u8: torch.Tensor) -> np.ndarray:
        return residual_spectra(luminance(images_u8)).astype(np.float32)

    def statistic(self, edited, reference, ids) -> float:
        diff = edited.astype(np.float64).mean(0) - reference.astype(np.float64).mean(0)
        return float(np.sqrt((diff ** 2).sum()))

    def describe(self) -> dict:
        return {**super().describe(), "filter": f"gaussian sigma={SIGMA}px wrap", "spectrum": f"{SPECTRUM_SIDE}^2 blocks"}


class ResidualPowerDistanceTarget(ResidualPowerDistance):
    name = "pr_target"
    label = "PR vs target x10^3"
    reference = "target"


class SpectralSlopeDistance(SetMetric):
    name = "psd_source"
    label = "PSD vs source"
    uses_weights = False
    features_key = "radial_spectrum"

    def features(self, images_u8: torch.Tensor) -> np.ndarray:
        return radial_spectra(luminance(images_u8))

    def statistic(self, edited, reference, ids) -> float:
        return abs(spectral_slope(edited.mean(0)) - spectral_slope(reference.mean(0)))

    def describe(self) -> dict:
        return {**super().describe(), "fit": f"k={FIT_FROM}..H/2-1, Hann window"}


class SpectralSlopeDistanceTarget(SpectralSlopeDistance):
    name = "psd_target"
    label = "PSD vs target"
    reference = "target"


class SpectralSlope(SpectralSlopeDistance):
    """The edited set's own slope (no reference): where the PSD distance comes from."""

    name = "spectral_slope"
    label = "spectral slope"
    reference = None
    higher_is_better: ClassVar[bool] = True

    def statistic(self, edited, reference, ids) -> float:
        return spectral_slope(edited.mean(0))
