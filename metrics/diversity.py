"""Diversity among one sample's K outputs (``bench --seeds K``), averaged over samples; higher = more diverse
(MS-SSIM: higher = more alike).

- ``diversity_resnet50``: the diversity score of the SDXS / IP-Adapter evaluations: each output through an
  ImageNet ResNet-50 (torchvision ``IMAGENET1K_V1``, ``resnet50-0676ba61.pth``; its transforms: resize the
  shorter side to 256 bilinear, centre crop 224, ImageNet normalisation), the 2048-d pooled features before
  the classifier, L2-normalised; the mean Euclidean distance over the K(K-1)/2 pairs (0 .. 2).
- ``diversity_lpips``: the mean LPIPS over the pairs (``metrics.lpips_metric``'s network and weights, full
  frame, [-1, 1]; toy trunk at 128^2 as the per-sample LPIPS).
- ``diversity_ms_ssim``: the mean MS-SSIM over the pairs, torchmetrics'
  ``MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0)`` with its defaults (Gaussian 11 / 1.5,
  K1 0.01, K2 0.03, betas 0.0448 .. 0.1333, ReLU-normalised terms, reflect padding, contrast term cropped by
  the padding, 2x2 average pooling between scales), written here in torch so it needs no test-only
  dependency; the test checks it against torchmetrics.

An editor that declares itself deterministic (``Editor.stochastic = False``) gives the same output for every
seed, so the harness reports 0 for it (MS-SSIM: 1) without running it K times, and says so.
"""
from __future__ import annotations

import itertools
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from metrics.sets import SeedMetric
from metrics.weights import load_state_dict_file, shared_model, toy_folder, url_checkpoint

RESNET_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
RESNET_ENV = "PIE_BENCH_RESNET50"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
TOY_SEED = 0


def _pairs(k: int):
    return list(itertools.combinations(range(k), 2))


# -- ResNet-50 --------------------------------------------------------------------------------------


def toy_resnet_file():
    import torchvision

    def write(tmp):
        torch.manual_seed(TOY_SEED)
        torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp / "resnet50-toy.pth")

    return toy_folder("resnet50", {"seed": TOY_SEED}, write) / "resnet50-toy.pth"


def load_resnet(backbone: str, device):
    import torchvision

    def build():
        if backbone == "real":
            path = url_checkpoint(RESNET_ENV, RESNET_URL, "ResNet-50 ImageNet weights (diversity score)",
                                  f"run once online: python -c \"import torch; torch.hub.load_state_dict_from_url("
                                  f"'{RESNET_URL}')\"")
        else:
            path = toy_resnet_file()
        model = torchvision.models.resnet50(weights=None)
        model.load_state_dict(load_state_dict_file(path))
        model.fc = torch.nn.Identity()  # the penultimate (pooled) features
        return model.eval().requires_grad_(False).to(device)

    return shared_model(("resnet50", backbone, str(device)), build)


def resnet_input(images_u8: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms import functional as TF

    x = TF.resize(images_u8.float() / 255.0, 256, antialias=True)
    x = TF.center_crop(x, 224)
    return TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)


class ResNetDiversity(SeedMetric):
    name = "diversity_resnet50"
    label = "diversity (ResNet-50)"

    def load(self, backbone: str = "toy", device="cpu") -> None:
        super().load(backbone, device)
        kind = "real" if backbone == "real" else "toy"  # ShapesEdit trains no ImageNet classifier
        self.is_toy = kind == "toy"
        self.model = load_resnet(kind, self.device)

    @torch.no_grad()
    def pairwise(self, outputs_u8: torch.Tensor) -> float:
        f = self.model(resnet_input(outputs_u8).to(self.device)).double().cpu()
        f = f / f.norm(dim=1, keepdim=True).clamp(min=1e-12)
        return float(np.mean([(f[i] - f[j]).norm().item() for i, j in _pairs(f.shape[0])]))


# -- LPIPS ------------------------------------------------------------------------------------------


class LpipsDiversity(SeedMetric):
    name = "diversity_lpips"
    label = "diversity (LPIPS)"

    def __init__(self, net: str = "squeeze") -> None:
        super().__init__()
        self.net = net

    def load(self, backbone: str = "toy", device="cpu") -> None:
        from metrics.lpips_metric import TOY_RESOLUTION, load_lpips

        super().load(backbone, device)
        kind = "real" if backbone == "real" else "toy"
        self.is_toy = kind == "toy"
        self.resolution = TOY_RESOLUTION if self.is_toy else None
        self.model = shared_model(("lpips", self.net, kind, str(self.device)),
                                  lambda: load_lpips(self.net, kind).to(self.device))

    @torch.no_grad()
    def pairwise(self, outputs_u8: torch.Tensor) -> float:
        x = outputs_u8.float().div(255.0).mul(2).sub(1).to(self.device)
        if self.resolution and x.shape[-1] > self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="area")
        pairs = _pairs(x.shape[0])
        a = torch.stack([x[i] for i, _ in pairs])
        b = torch.stack([x[j] for _, j in pairs])
        return float(self.model(a, b).flatten().double().mean())


# -- MS-SSIM ----------------------------------------------------------------------------------------


def _separable(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """"valid" filtering of (..., H, W) by g along both axes as shifted sums: on a CPU core ~20x faster than
    torch's 11x11 grouped conv or its 1-channel 1-D convs here (the same sums up to float reassociation)."""
    k = g.numel()
    h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    rows = x[..., 0:h, :] * g[0]
    for i in range(1, k):
        rows.add_(x[..., i:i + h, :], alpha=float(g[i]))
    out = rows[..., 0:w] * g[0]
    for i in range(1, k):
        out.add_(rows[..., i:i + w], alpha=float(g[i]))
    return out


def _ssim_and_cs(a: torch.Tensor, b: torch.Tensor, k1=0.01, k2=0.03, sigma=1.5, data_range=1.0):
    from metrics.ssim import gaussian_window

    g = gaussian_window(sigma, dtype=a.dtype).to(a.device)
    r = g.numel() // 2
    a = F.pad(a, (r, r, r, r), mode="reflect")
    b = F.pad(b, (r, r, r, r), mode="reflect")
    mu_a, mu_b, e_aa, e_bb, e_ab = _separable(torch.cat([a, b, a * a, b * b, a * b]), g).split(a.shape[0])
    var_a = (e_aa - mu_a ** 2).clamp(min=0)
    var_b = (e_bb - mu_b ** 2).clamp(min=0)
    cov = e_ab - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    cs_map = (2 * cov + c2) / (var_a + var_b + c2)
    ssim_map = ((2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1)) * cs_map
    return ssim_map.flatten(1).mean(1), cs_map[..., r:-r, r:-r].flatten(1).mean(1)


def ms_ssim(a: torch.Tensor, b: torch.Tensor, betas=MS_SSIM_BETAS) -> torch.Tensor:
    """Per-pair MS-SSIM of (B, C, H, W) images in [0, 1] (torchmetrics' definition, module docstring)."""
    if a.shape[0] > 1:  # one pair at a time: its maps stay in cache (the whole batch is memory-bound)
        return torch.cat([ms_ssim(a[i:i + 1], b[i:i + 1], betas) for i in range(a.shape[0])])
    terms = []
    for level in range(len(betas)):
        sim, cs = _ssim_and_cs(a, b)
        terms.append(torch.relu(cs) if level + 1 < len(betas) else torch.relu(sim))
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    stack = torch.stack(terms)
    return torch.prod(stack ** torch.tensor(betas, dtype=stack.dtype, device=stack.device).view(-1, 1), 0)


class MsSsimDiversity(SeedMetric):
    name = "diversity_ms_ssim"
    label = "MS-SSIM among seeds"
    higher_is_better: ClassVar[bool] = False  # more alike = less diverse
    uses_weights = False

    def pairwise(self, outputs_u8: torch.Tensor) -> float:
        x = outputs_u8.float().div(255.0)
        pairs = _pairs(x.shape[0])
        a = torch.stack([x[i] for i, _ in pairs])
        b = torch.stack([x[j] for _, j in pairs])
        return float(ms_ssim(a, b).double().mean())
    deterministic_value: ClassVar[float] = 1.0  # identical outputs
