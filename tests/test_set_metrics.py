"""Metrics over sets: the power spectra against hand-computed spectra of synthetic images, FID/KID/IS against
torch-fidelity on identical (toy) weights and images, the Inception loader's cache paths, the bootstrap, and
the diversity scores against independent implementations (torchmetrics' MS-SSIM, the lpips package, scipy's
pdist over torchvision's ResNet-50)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metrics import fid as fidm
from metrics import spectrum as sp
from metrics.sets import SetMetric, bootstrap

N = 256


def _freq_radius(n: int) -> np.ndarray:
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n) * n, np.fft.fftfreq(n) * n, indexing="ij"))
    f[0, 0] = 1.0
    return f


def pink(rng, b: int, n: int = N, power: float = 2.0) -> np.ndarray:
    """Periodic images whose power spectrum falls as 1/f^power (white noise shaped in Fourier space)."""
    return np.real(np.fft.ifft2(np.fft.fft2(rng.normal(0, 1, (b, n, n))) / _freq_radius(n) ** (power / 2)))


def test_spectral_slope_white_noise_is_zero_and_one_over_f_squared_is_minus_two():
    rng = np.random.default_rng(0)
    white = rng.normal(0.5, 0.1, (8, N, N))
    assert abs(sp.spectral_slope(sp.radial_spectra(white).mean(0))) < 0.05
    assert abs(sp.spectral_slope(sp.radial_spectra(pink(rng, 8)).mean(0)) + 2.0) < 0.08
    assert abs(sp.spectral_slope(sp.radial_spectra(pink(rng, 8, power=3.0)).mean(0)) + 3.0) < 0.12
    # PSD between the two sets is the slope difference; 0 between a set and itself
    metric = sp.SpectralSlopeDistance()
    w, p = sp.radial_spectra(white), sp.radial_spectra(pink(rng, 8))
    assert abs(metric.statistic(w, p, None) - 2.0) < 0.1 and metric.statistic(w, w, None) == 0.0


def test_white_noise_residual_spectrum_is_sigma_squared_times_one_minus_the_filter_squared():
    """E |DFT(r)|^2 / HW = s^2 |1 - G(f)|^2 for white noise of variance s^2 and the periodic Gaussian G."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    s = 0.1
    y = rng.normal(0.5, s, (16, N, N))
    delta = np.zeros((N, N))
    delta[0, 0] = 1.0
    g = np.fft.fft2(gaussian_filter(delta, sp.SIGMA, mode="wrap", truncate=4.0))
    expected_full = s ** 2 * np.abs(1 - np.fft.fftshift(g)) ** 2
    block = N // sp.SPECTRUM_SIDE
    expected = expected_full.reshape(sp.SPECTRUM_SIDE, block, sp.SPECTRUM_SIDE, block).mean((1, 3))
    measured = sp.residual_spectra(y).mean(0)
    # 16 images x 4 frequencies per block: each cell an average of 64 exponential draws (sd 1/8, mean |dev| ~10%)
    assert np.abs(measured - expected).mean() / expected.mean() < 0.12
    assert np.corrcoef(measured.ravel(), expected.ravel())[0, 1] > 0.9  # the filter's shape, DC to Nyquist
    assert abs(measured.mean() / expected.mean() - 1) < 0.01
    # PR between noise sets of variances s1^2 and s2^2 is |s1^2 - s2^2| ||(1 - G)^2||_F (in expectation)
    y2 = rng.normal(0.5, 2 * s, (16, N, N))
    pr = sp.ResidualPowerDistance().statistic(sp.residual_spectra(y2), sp.residual_spectra(y), None)
    want = 3 * s ** 2 * np.sqrt(((expected / s ** 2) ** 2).sum())
    assert abs(pr / want - 1) < 0.05
    assert sp.ResidualPowerDistance().statistic(sp.residual_spectra(y), sp.residual_spectra(y), None) == 0.0


def test_luminance_of_uint8_images():
    img = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    img[0, 0] = 255
    assert np.allclose(sp.luminance(img), 0.299)


# -- FID / KID / IS -----------------------------------------------------------------------------------


def test_frechet_distance_nuclear_norm_equals_scipy_sqrtm():
    from scipy import linalg

    rng = np.random.default_rng(2)
    for n_e, n_r, d in ((12, 9, 40), (60, 70, 20)):  # fewer samples than dimensions, and more
        a = rng.normal(0, 1, (n_e, d)) @ rng.normal(0, 1, (d, d))
        b = rng.normal(0.3, 1, (n_r, d))
        s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        covmean = linalg.sqrtm(s1 @ s2).real
        ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
        assert fidm.frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
    assert fidm.frechet_distance(a, a) == pytest.approx(0, abs=1e-8)


def test_kid_excludes_a_resampled_row_paired_with_its_own_copy():
    rng = np.random.default_rng(3)
    x, y = rng.normal(0, 1, (10, 8)), rng.normal(0, 1, (10, 8))
    idx = np.array([0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
    dup = fidm.kernel_mmd2(x[idx], y[idx], idx)
    # by hand: within-set pairs over distinct originals only
    k = lambda a, b: (a @ b.T / 8 + 1) ** 3  # noqa: E731
    keep = idx[:, None] != idx[None, :]
    xi, yi = x[idx], y[idx]
    want = (k(xi, xi)[keep].sum() + k(yi, yi)[keep].sum()) / keep.sum() - 2 * k(xi, yi).mean()
    assert dup == pytest.approx(want, rel=1e-12)
    assert math.isnan(fidm.kernel_mmd2(x[[0, 0]], y[[0, 0]], np.array([0, 0])))
    # paired: the cross sum also skips a sample against its own reference; 0 for an unchanged set
    cross = k(xi, yi)[keep].sum() / keep.sum()
    want_paired = (k(xi, xi)[keep].sum() + k(yi, yi)[keep].sum()) / keep.sum() - 2 * cross
    assert fidm.kernel_mmd2(x[idx], y[idx], idx, paired=True) == pytest.approx(want_paired, rel=1e-12)
    assert fidm.kernel_mmd2(x, x, paired=True) == pytest.approx(0, abs=1e-9)
    assert fidm.kernel_mmd2(x, x) < 0  # the unpaired estimator on identical sets: -2/(n-1)(E k(x,x) - E k(x,y))
    n = len(x)
    kxx = k(x, x)
    assert fidm.kernel_mmd2(x, x) == pytest.approx(-2 / (n - 1) * (np.diag(kxx).mean() - kxx.mean()), rel=1e-9)


@pytest.fixture(scope="module")
def toy_inception():
    from metrics.inception import load_inception, toy_inception_file

    path = toy_inception_file()
    return path, load_inception(path)


def _images(seed: int, n: int, size: int = 96) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 6, 6, generator=g) * 255
    img = torch.nn.functional.interpolate(base, size=size, mode="bilinear") + torch.randn(n, 3, size, size, generator=g) * 8
    return img.clamp(0, 255).round().to(torch.uint8)


def test_fid_kid_is_match_torch_fidelity_on_identical_toy_weights(toy_inception):
    torch_fidelity = pytest.importorskip("torch_fidelity")
    from metrics.inception import inception_features

    path, model = toy_inception
    n = 12
    a, b = _images(0, n), _images(1, n)

    class Images(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = x

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    ref = torch_fidelity.calculate_metrics(
        input1=Images(a), input2=Images(b), fid=True, kid=True, isc=True, kid_subset_size=n, kid_subsets=3,
        isc_splits=1, feature_extractor_weights_path=str(path), cuda=False, verbose=False, cache=False,
        batch_size=n)
    pa, la = inception_features(model, a)
    pb, _ = inception_features(model, b)
    fa = torch.cat([pa, la], 1).numpy()
    fb = torch.cat([pb, _], 1).numpy()
    ids = np.arange(n)
    ours = {"fid": fidm.FIDSource().statistic(fa, fb, ids),
            "kid": fidm.KIDSource(estimator="unpaired").statistic(fa, fb, ids),
            "isc": fidm.ISEdited().statistic(fa, None, ids)}
    assert ours["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-3)
    # KID sits near 0 here (-1.2e-4): float32 rounding of its O(1) kernel terms moved it by 2e-7 on an AVX-512 CPU,
    # so an absolute floor far below any estimator difference (2/(n-1) of the kernel gap) joins the relative one
    assert ours["kid"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-3, abs=1e-6)
    assert ours["isc"] == pytest.approx(ref["inception_score_mean"], rel=1e-3)
    assert ours["fid"] > 0 and ours["isc"] > 1.0  # toy weights still separate two image sets


def test_inception_weights_come_from_the_torch_hub_cache_under_either_projects_name(tmp_path, monkeypatch, toy_inception):
    from pie_bench.core.errors import ConfigError
    from metrics import inception

    path, _ = toy_inception
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("PIE_BENCH_OFFLINE", "1")
    monkeypatch.delenv(inception.INCEPTION_ENV, raising=False)
    with pytest.raises(ConfigError, match="pt_inception-2015-12-05-6726825d.pth.*downloads are off"):
        inception.real_inception_file()
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / inception.TORCH_FIDELITY_NAME).write_bytes(path.read_bytes())
    assert inception.real_inception_file() == cache / inception.TORCH_FIDELITY_NAME
    (cache / "pt_inception-2015-12-05-6726825d.pth").write_bytes(path.read_bytes())
    assert inception.load_inception(inception.real_inception_file()).fc.weight.shape == (1008, 2048)
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    monkeypatch.setenv(inception.INCEPTION_ENV, str(bad))
    with pytest.raises(ConfigError, match="not the FID Inception-v3 state dict"):
        inception.load_inception(inception.real_inception_file())


def test_tf1_bilinear_resize_matches_torch_fidelity():
    tf = pytest.importorskip("torch_fidelity.interpolate_compat_tensorflow")
    from metrics.inception import resize_bilinear_tf1

    x = _images(4, 2, 512).float()
    ours = resize_bilinear_tf1(x, 299)
    ref = tf.interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    assert (ours - ref).abs().max() < 0.02  # of 255: float32 rounding of the source coordinates


# -- the bootstrap ---------------------------------------------------------------------------------------


class _Mean(SetMetric):
    name = "mean_of_rows"
    reference = None
    min_n = 3

    def statistic(self, edited, reference, ids):
        return float(edited.mean())


def test_bootstrap_is_seeded_brackets_the_mean_and_is_nan_below_min_n():
    x = np.random.default_rng(5).normal(1.0, 1.0, (50, 1))
    a, b = bootstrap(_Mean(), x, None), bootstrap(_Mean(), x, None)
    assert a == b and a.ci_low < a.value < a.ci_high and a.n == 50
    se = x.std(ddof=1) / math.sqrt(50)  # the percentile interval of a mean is about +-1.96 se
    assert (a.ci_high - a.ci_low) / (2 * 1.96 * se) == pytest.approx(1.0, abs=0.25)
    small = bootstrap(_Mean(), x[:2], None)
    assert math.isnan(small.value) and "n=2 < 3" in small.reason


# -- diversity ---------------------------------------------------------------------------------------------


def test_ms_ssim_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.functional.image")
    from metrics.diversity import ms_ssim

    g = torch.Generator().manual_seed(6)
    a = torch.rand(3, 3, 192, 192, generator=g)
    b = (a + 0.2 * torch.randn(3, 3, 192, 192, generator=g)).clamp(0, 1)
    ref = tm.multiscale_structural_similarity_index_measure(b, a, data_range=1.0, reduction="none")
    assert torch.allclose(ms_ssim(b, a).double(), ref.double(), atol=1e-5)
    assert torch.allclose(ms_ssim(a, a), torch.ones(3), atol=1e-6)


def test_resnet_diversity_matches_scipy_pdist_on_the_same_weights():
    import torchvision
    from scipy.spatial.distance import pdist

    from metrics.diversity import ResNetDiversity, resnet_input, toy_resnet_file
    from metrics.weights import load_state_dict_file

    m = ResNetDiversity()
    m.load("toy")
    x = _images(7, 3, 128)
    ref = torchvision.models.resnet50(weights=None)
    ref.load_state_dict(load_state_dict_file(toy_resnet_file()))
    ref.fc = torch.nn.Identity()
    with torch.no_grad():
        f = ref.eval()(resnet_input(x)).double().numpy()
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    assert m.pairwise(x) == pytest.approx(pdist(f).mean(), rel=1e-6)
    assert m.pairwise(x[[0, 0, 0]]) == pytest.approx(0, abs=1e-6) and m.is_toy


def test_lpips_diversity_is_the_mean_over_pairs():
    from metrics.diversity import LpipsDiversity

    m = LpipsDiversity()
    m.load("toy")
    x = _images(8, 3, 128)
    t = x.float().div(255).mul(2).sub(1)
    pairs = [(0, 1), (0, 2), (1, 2)]
    with torch.no_grad():
        want = np.mean([float(m.model(t[i:i + 1], t[j:j + 1])) for i, j in pairs])
    assert m.pairwise(x) == pytest.approx(want, rel=1e-5) and m.pairwise(x[[1, 1]]) == pytest.approx(0, abs=1e-6)


def test_pr_gram_bootstrap_equals_resampling_the_sets():
    rng = np.random.default_rng(9)
    e, r = rng.random((7, 4, 4)), rng.random((7, 4, 4))
    draws = np.sort(rng.integers(0, 7, (20, 7)), axis=1)
    metric = sp.ResidualPowerDistance()
    direct = [metric.statistic(e[idx], r[idx], idx) for idx in draws]
    assert np.allclose(metric.resampled(e, r, draws), direct, rtol=1e-10)
