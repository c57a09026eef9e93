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


def luminance(images_u8: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, H, W) float32 luminance in [0, 1]. The spectra are taken in float32 after
    subtracting each image's mean (4x faster than float64 on a CPU core; the rounding floor is then ~1e-14
    of an image's variance, far below any bin the metrics read)."""
    weights = torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1) / 255.0
    return (images_u8.detach().cpu().to(torch.float32) * weights).sum(1)


_CACHE: dict[tuple, object] = {}


def gaussian_transfer(h: int, w: int, sigma: float = SIGMA) -> torch.Tensor:
    """G(f) on the half plane of ``rfft2``: the DFT of scipy's ``gaussian_filter(sigma, truncate=4,
    mode="wrap")`` impulse response, so the residual is ``R = (1 - G) Y`` with one FFT per image (the same
    numbers as filtering; the test checks it)."""
    key = ("g", h, w, sigma)
    if key not in _CACHE:
        from scipy.ndimage import gaussian_filter

        delta = np.zeros((h, w))
        delta[0, 0] = 1.0
        g = np.fft.rfft2(gaussian_filter(delta, sigma, mode="wrap", truncate=4.0))
        _CACHE[key] = torch.from_numpy(g.real.astype(np.float32))  # a symmetric kernel: G is real
    return _CACHE[key]


def _half_power(x: torch.Tensor) -> torch.Tensor:
    """|rfft2(x)|^2 / (H W) on the half plane (B, H, W/2 + 1)."""
    f = torch.view_as_real(torch.fft.rfft2(x))
    return (f * f).sum(-1) / (x.shape[-1] * x.shape[-2])


def _full_plane(half: torch.Tensor, w: int) -> torch.Tensor:
    """The full (B, H, W) periodogram of a real image from its half plane: P(ky, W - j) = P(-ky, j)."""
    h = half.shape[-2]
    neg = (-torch.arange(h)) % h
    right = half[:, neg][:, :, 1:w - w // 2].flip(-1)
    return torch.cat([half[:, :, :w // 2 + 1], right], dim=-1)


def residual_spectra(y, sigma: float = SIGMA, side: int = SPECTRUM_SIDE) -> np.ndarray:
    """(B, H, W) luminance -> (B, side, side) block-averaged, fft-shifted residual periodograms."""
    y = torch.as_tensor(y, dtype=torch.float32)
    b, h, w = y.shape
    # the mean only moves the DC bin, which (1 - G(0)) = 0 removes: subtracting it keeps float32 exact enough
    f = torch.fft.rfft2(y - y.mean((1, 2), keepdim=True)) * (1 - gaussian_transfer(h, w, sigma))
    fr = torch.view_as_real(f)
    p = torch.fft.fftshift(_full_plane((fr * fr).sum(-1) / (h * w), w), dim=(-2, -1))
    bh, bw = max(1, h // side), max(1, w // side)
    p = p[:, :bh * (h // bh), :bw * (w // bw)].reshape(b, h // bh, bh, w // bw, bw).mean((2, 4))
    return p.double().numpy()


def _rings(h: int, w: int) -> tuple:
    """Ring index of every half-plane frequency (0: DC and beyond H/2, dropped), its weight (2 for the
    columns that stand for themselves and their mirror image), the ring sizes, and the Hann window."""
    key = ("rings", h, w)
    if key not in _CACHE:
        fy, fx = np.meshgrid(np.fft.fftfreq(h) * h, np.arange(w // 2 + 1), indexing="ij")
        k = np.rint(np.hypot(fy, fx)).astype(np.int64)
        kmax = min(h, w) // 2
        k = np.where((k >= 1) & (k < kmax), k, 0)
        mult = np.full(k.shape, 2.0)
        mult[:, 0] = 1.0
        if w % 2 == 0:
            mult[:, -1] = 1.0
        counts = np.bincount(k.ravel(), weights=mult.ravel(), minlength=kmax)[1:kmax]
        win = np.outer(np.hanning(h), np.hanning(w))
        win *= np.sqrt(h * w / (win ** 2).sum())
        _CACHE[key] = (torch.from_numpy(k.ravel()), torch.from_numpy(mult.ravel()).float(), torch.from_numpy(counts),
                       kmax, torch.from_numpy(win).float())
    return _CACHE[key]


def radial_spectra(y) -> np.ndarray:
    """(B, H, W) -> (B, H/2 - 1): Hann-windowed periodogram averaged over rings k = 1 .. H/2 - 1."""
    y = torch.as_tensor(y, dtype=torch.float32)
    b, h, w = y.shape
    k, mult, counts, kmax, win = _rings(h, w)
    p = (_half_power((y - y.mean((1, 2), keepdim=True)) * win).reshape(b, -1) * mult).double()
    sums = torch.zeros(b, kmax, dtype=torch.float64).index_add_(1, k, p)[:, 1:kmax]
    return (sums / counts).numpy()


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

    def resampled(self, edited, reference, draws: np.ndarray) -> np.ndarray:
        """The statistic on every bootstrap resample at once: with paired differences d_i and resample counts
        c, ||sum_i c_i d_i / n||_F = sqrt(c^T G c) / n for the Gram matrix G = D D^T (exact, no copies)."""
        d = (edited.astype(np.float64) - reference.astype(np.float64)).reshape(len(edited), -1)
        gram = d @ d.T
        n = len(edited)
        counts = np.stack([np.bincount(idx, minlength=n) for idx in draws]).astype(np.float64)
        return np.sqrt(np.maximum(np.einsum("ri,ij,rj->r", counts, gram, counts), 0)) / n

    def describe(self) -> dict:
        return {**super().describe(), "filter": f"gaussian sigma={SIGMA}px wrap",
                "spectrum": f"{SPECTRUM_SIDE}^2 blocks"}


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
