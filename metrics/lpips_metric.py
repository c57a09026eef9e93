"""LPIPS of the unedited background (PIE-Bench column "LPIPS x10^3").

Official: torchmetrics ``LearnedPerceptualImagePatchSimilarity(net_type='squeeze')`` on both images
multiplied by (1 - mask), scaled to [-1, 1], full frame. Here the ``lpips`` package computes it (same
network, same v0.1 linear heads; torchmetrics vendors the same code), and the parity test checks the two
agree given identical weights.

Weights: the linear heads ship inside the ``lpips`` wheel. The trunk is torchvision's ImageNet
checkpoint (``squeezenet1_1-b8a52dc0.pth`` ...), read from ``$PIE_BENCH_LPIPS_TRUNK`` or the torch hub
cache, downloaded only when online. The toy trunk is the same torchvision architecture with seeded
random weights, saved as a torchvision state dict and read back through the same loader.
"""
from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F

from pie_bench.core.errors import ConfigError

from metrics.base import Metric, MetricBatch, empty_background
from metrics.weights import check_backbone, load_state_dict_file, shared_model, toy_folder, url_checkpoint

TRUNKS = {"squeeze": "squeezenet1_1", "alex": "alexnet", "vgg": "vgg16"}
TRUNK_ENV = "PIE_BENCH_LPIPS_TRUNK"
TOY_SEED = 0
TOY_RESOLUTION = 128


def trunk_url(net: str) -> str:
    import torchvision

    weights = {"squeeze": "SqueezeNet1_1_Weights", "alex": "AlexNet_Weights", "vgg": "VGG16_Weights"}[net]
    return getattr(torchvision.models, weights).DEFAULT.url


def lin_weights_path(net: str) -> Path:
    import lpips

    return Path(inspect.getfile(lpips.LPIPS)).parent / "weights" / "v0.1" / f"{net}.pth"


def toy_trunk_file(net: str) -> Path:
    import torchvision

    arch = TRUNKS[net]

    def write(tmp: Path) -> None:
        torch.manual_seed(TOY_SEED)
        torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), tmp / f"{arch}-toy.pth")

    return toy_folder(f"lpips-{net}", {"arch": arch, "seed": TOY_SEED}, write) / f"{arch}-toy.pth"


def real_trunk_file(net: str) -> Path:
    url = trunk_url(net)
    how = (f"run once online: python -c \"import torch; torch.hub.load_state_dict_from_url('{url}')\" "
           f"(torchvision's ImageNet {TRUNKS[net]})")
    return url_checkpoint(TRUNK_ENV, url, f"LPIPS trunk {Path(url).name}", how)


def trunk_into(lp_net: torch.nn.Module, state_dict: dict, net: str, source: Path) -> None:
    """Load a torchvision classifier state dict (``features.<i>.*``) into lpips' sliced trunk, whose
    slices keep torchvision's module indices as names."""
    import torchvision

    tv = getattr(torchvision.models, TRUNKS[net])(weights=None)
    try:
        tv.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise ConfigError(f"{source}: not a torchvision {TRUNKS[net]} state dict ({str(exc).splitlines()[0]})") from None
    for sl in lp_net.children():
        for idx, module in sl.named_children():
            module.load_state_dict(tv.features[int(idx)].state_dict())


def build_lpips(net: str, trunk_file: Path, lin_file: Optional[Path] = None) -> torch.nn.Module:
    import lpips

    with warnings.catch_warnings():  # lpips 0.1.4 passes torchvision's deprecated pretrained=False
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
    trunk_into(model.net, load_state_dict_file(trunk_file), net, trunk_file)
    lin_file = lin_file or lin_weights_path(net)
    lins = load_state_dict_file(lin_file)
    missing, unexpected = model.load_state_dict(lins, strict=False)
    if unexpected or any(re.match(r"lin\d", k) for k in missing):  # lins.N alias lin<N>
        raise ConfigError(f"{lin_file}: not LPIPS v0.1 {net} linear heads")
    return model.eval().requires_grad_(False)


def load_lpips(net: str, backbone: str) -> torch.nn.Module:
    if backbone == "toy":
        return build_lpips(net, toy_trunk_file(net))
    return build_lpips(net, real_trunk_file(net))


class BackgroundLPIPS(Metric):
    name = "lpips_unedit_part"
    higher_is_better = False
    region = "background"
    scale = 1e3
    label = "LPIPS x10^3"

    def __init__(self, net: str = "squeeze", chunk: int = 8, resolution: Union[int, str, None] = "auto") -> None:
        """``resolution``: None scores at full size (the protocol). ``"auto"`` is None for real weights and
        128 for the toy trunk: a full-size SqueezeNet pass costs ~0.4 s per image on one CPU core, which
        would dominate a toy smoke run whose numbers mean nothing anyway. Downsizing is area averaging of
        the already-masked [-1, 1] images, so everything else stays on the real code path."""
        super().__init__()
        self.resolution = None if resolution == "full" else resolution
        if net not in TRUNKS:
            raise ConfigError(f"lpips_unedit_part: net={net!r} is not one of {', '.join(TRUNKS)}")
        self.net = net
        self.chunk = chunk
        self.model = None

    def load(self, backbone: str = "toy", device="cpu") -> None:
        check_backbone(backbone, self.name)
        super().load(backbone, device)
        # ShapesEdit trains no LPIPS trunk: "shapes" uses the toy one and says so (is_toy)
        weights_kind = "toy" if backbone == "shapes" else backbone
        self.is_toy = weights_kind == "toy"
        if self.resolution == "auto":
            self.resolution = TOY_RESOLUTION if self.is_toy else None
        self.model = shared_model(("lpips", self.net, weights_kind, str(self.device)),
                                  lambda: load_lpips(self.net, weights_kind).to(self.device))

    @torch.no_grad()
    def compute(self, batch: MetricBatch) -> torch.Tensor:
        if self.model is None:
            self.load("toy", self.device)
        keep = batch.background
        out = []
        for i in range(0, keep.shape[0], self.chunk):
            k = keep[i:i + self.chunk].to(self.device)
            a = (batch.source[i:i + self.chunk].to(self.device) * k) * 2 - 1
            b = (batch.edited[i:i + self.chunk].to(self.device) * k) * 2 - 1
            if self.resolution and a.shape[-1] > self.resolution:
                a = F.interpolate(a, size=(self.resolution, self.resolution), mode="area")
                b = F.interpolate(b, size=(self.resolution, self.resolution), mode="area")
            out.append(self.model(a, b).flatten().float().cpu())
        return torch.cat(out).masked_fill(empty_background(batch.mask), float("nan"))

    def describe(self) -> dict:
        return {**super().describe(), "net": self.net, "resolution": self.resolution or "full"}
