"""The FID Inception-v3 (``pt_inception-2015-12-05``): pool3 features (2048) and unbiased logits (1008).

This is the network every FID/KID/IS number in the literature runs on: the TensorFlow graph
``inception-2015-12-05`` converted to PyTorch by pytorch-fid (``pt_inception-2015-12-05-6726825d.pth``)
and by torch-fidelity (``weights-inception-2015-12-05-6726825d.pth``, the same tensors under the same
names). The architecture is torchvision's ``Inception3`` blocks with TensorFlow's differences, as both
projects patch them: the average pools of Mixed_5*, 6b-e and 7b exclude the zero padding
(``count_include_pad=False``) and Mixed_7c's pool branch is a max pool; 1008 classes.

Preprocessing (torch-fidelity's, which is bit-exact with the TensorFlow graph): uint8 images as floats,
TensorFlow 1.x bilinear resize to 299x299 (``align_corners=False``: source = target x in/out, no half-pixel
offset; written here by hand because neither torch nor torchvision offers that variant), then
``(x - 128) / 128``. Unbiased logits = pool3 @ fc.weight.T (the TF Inception Score code multiplies by
the softmax weights without the bias).

Weights: ``$PIE_BENCH_INCEPTION``, else either file name in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``), else a download of pytorch-fid's release file unless offline. Toy:
the same architecture with torchvision's seeded initialisation, written as a state dict under
``$PIE_BENCH_CACHE/toy/metrics`` and read back through the same loader (labelled toy).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import inception as tvi

from pie_bench.core.errors import ConfigError

from metrics.weights import (load_state_dict_file, shared_model, toy_folder, torch_hub_checkpoints, url_checkpoint)

INCEPTION_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
TORCH_FIDELITY_NAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_ENV = "PIE_BENCH_INCEPTION"
INPUT_SIZE = 299
TOY_SEED = 0


class FidInceptionA(tvi.InceptionA):
    """torchvision InceptionA with TensorFlow's average pool (padding excluded)."""

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        return torch.cat([self.branch1x1(x), b5, b3, bp], 1)


class FidInceptionC(tvi.InceptionC):
    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for m in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                  self.branch7x7dbl_5):
            d = m(d)
        bp = self.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        return torch.cat([self.branch1x1(x), b7, d, bp], 1)


class FidInceptionE(tvi.InceptionE):
    """InceptionE; ``max_pool``: Mixed_7c's pool branch (TensorFlow used a max pool there)."""

    def __init__(self, in_channels: int, max_pool: bool) -> None:
        super().__init__(in_channels)
        self.max_pool = max_pool

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], 1)


class FidInceptionV3(nn.Module):
    """The FID network; parameter names are torchvision's (= pytorch-fid's = torch-fidelity's)."""

    def __init__(self) -> None:
        super().__init__()
        conv = tvi.BasicConv2d
        self.Conv2d_1a_3x3 = conv(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = conv(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = conv(80, 192, kernel_size=3)
        self.Mixed_5b = FidInceptionA(192, pool_features=32)
        self.Mixed_5c = FidInceptionA(256, pool_features=64)
        self.Mixed_5d = FidInceptionA(288, pool_features=64)
        self.Mixed_6a = tvi.InceptionB(288)
        self.Mixed_6b = FidInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FidInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FidInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FidInceptionC(768, channels_7x7=192)
        self.Mixed_7a = tvi.InceptionD(768)
        self.Mixed_7b = FidInceptionE(1280, max_pool=False)
        self.Mixed_7c = FidInceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, images_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) uint8 -> (pool3 (B, 2048), unbiased logits (B, 1008)), float32."""
        x = resize_bilinear_tf1(images_u8.float(), INPUT_SIZE)
        x = (x - 128) / 128
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, 2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, 2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                     "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        pool = x.mean((2, 3))
        return pool, pool @ self.fc.weight.T


def resize_bilinear_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """TensorFlow 1.x ``resize_bilinear(align_corners=False)``: target pixel i samples source i * in / out
    (no half-pixel centres), linear between floor and floor + 1 (clamped at the edge)."""
    def axis(n_in: int):
        src = torch.arange(size, dtype=torch.float64) * (n_in / size)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        return lo, hi, (src - lo).to(x.dtype)

    h, w = x.shape[-2:]
    lo, hi, fy = axis(h)
    x = x[..., lo, :] + (x[..., hi, :] - x[..., lo, :]) * fy.view(-1, 1)
    lo, hi, fx = axis(w)
    return x[..., lo] + (x[..., hi] - x[..., lo]) * fx


def toy_inception_file() -> Path:
    """The FID architecture with torchvision's seeded initialisation (truncated-normal convs, unit BNs)."""
    def write(tmp: Path) -> None:
        torch.manual_seed(TOY_SEED)
        model = FidInceptionV3()
        ref = tvi.Inception3(num_classes=1008, aux_logits=False, init_weights=True)  # torchvision's init
        src = ref.state_dict()
        model.load_state_dict({k: src[k] for k in model.state_dict()})
        # random convs with unit BN statistics blow activations up ~1e10 by pool3; calibrating the BN
        # running statistics on a few seeded smooth-noise images keeps every layer near unit scale
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.momentum = None  # cumulative average over the calibration batches
        gen = torch.Generator().manual_seed(TOY_SEED)
        model.train()
        with torch.no_grad():
            for _ in range(2):  # smooth noise, pixel noise and flat colours: toy features stay in range for all
                smooth = F.interpolate(torch.rand(4, 3, 8, 8, generator=gen) * 255, size=INPUT_SIZE, mode="bilinear")
                pixels = torch.rand(2, 3, INPUT_SIZE, INPUT_SIZE, generator=gen) * 255
                flat = (torch.rand(2, 3, 1, 1, generator=gen) * 255).expand(-1, -1, INPUT_SIZE, INPUT_SIZE)
                batch = torch.cat([smooth, pixels, flat]).round().to(torch.uint8)
                model(batch)
            model.eval()
            # the pooled features share one large mean direction, which would give every image the same
            # softmax (IS = 1): the toy classifier ignores it and reads the differences between images (rows of
            # norm 10: logits spread a few units), so a toy IS moves with the images
            # pool3 at the real network's scale (mean ~0.4, not ~50): ReLU(s z) = s ReLU(z), so scaling the
            # affine of the BNs that end Mixed_7c's branches scales pool3 exactly; KID's cubic kernel and FID's
            # magnitude then land in the real weights' range
            pool, _ = model(batch)
            s = 0.4 / pool.mean().clamp(min=1e-12)
            last = model.Mixed_7c
            for conv in (last.branch1x1, last.branch3x3_2a, last.branch3x3_2b, last.branch3x3dbl_3a,
                         last.branch3x3dbl_3b, last.branch_pool):
                conv.bn.weight.mul_(s)
                conv.bn.bias.mul_(s)
            pool, _ = model(batch)
            mean_dir = pool.mean(0) / pool.mean(0).norm().clamp(min=1e-12)
            model.fc.weight.sub_(torch.outer(model.fc.weight @ mean_dir, mean_dir))
            model.fc.weight.div_(model.fc.weight.norm(dim=1, keepdim=True).clamp(min=1e-12) / 10)  # rows of norm 10
        torch.save(model.state_dict(), tmp / "inception-toy.pth")

    return toy_folder("inception", {"seed": TOY_SEED, "format": 7}, write) / "inception-toy.pth"


def real_inception_file() -> Path:
    how = (f"run once online: python -c \"import torch; torch.hub.load_state_dict_from_url('{INCEPTION_URL}')\" "
           "(pytorch-fid's FID Inception weights)")
    other = torch_hub_checkpoints() / TORCH_FIDELITY_NAME  # torch-fidelity's copy of the same weights
    if not os.environ.get(INCEPTION_ENV) and other.is_file():
        return other
    return url_checkpoint(INCEPTION_ENV, INCEPTION_URL, "FID Inception-v3 weights (pt_inception-2015-12-05)", how)


def load_inception(path: Path) -> FidInceptionV3:
    model = FidInceptionV3()
    sd = load_state_dict_file(path)
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: not the FID Inception-v3 state dict ({str(exc).splitlines()[0]})") from None
    return model.eval().requires_grad_(False)


def inception_model(backbone: str, device) -> tuple[FidInceptionV3, bool]:
    """(model, is_toy): ``real`` the FID weights; every other backbone (toy, shapes: ShapesEdit trains no
    Inception) the toy weights, labelled toy."""
    kind = "real" if backbone == "real" else "toy"
    model = shared_model(("inception", kind, str(device)),
                         lambda: load_inception(real_inception_file() if kind == "real" else toy_inception_file())
                         .to(device))
    return model, kind == "toy"


@torch.no_grad()
def inception_features(model: FidInceptionV3, images_u8: torch.Tensor,
                       chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    pools, logits = [], []
    for i in range(0, images_u8.shape[0], chunk):
        p, lg = model(images_u8[i:i + chunk].to(device))
        pools.append(p.double().cpu())
        logits.append(lg.double().cpu())
    return torch.cat(pools), torch.cat(logits)
