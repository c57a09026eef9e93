"""Image-image similarity of the edit to the source (what was preserved) and, on ShapesEdit, to the exact
target: cosine similarities of image embeddings, per sample, higher = more alike. Opt-in (``--metrics
protocol,similarity``).

- ``clip_i_*`` (CLIP-I): cosine of the harness's CLIP image embeddings (``metrics.clip_score``: ViT-L/14
  OpenAI with ``--metrics-backbone real``, the one model the CLIP scores use), shown x100. iCD's
  ``calc_clip_score_images_images`` (``utils/metrics.py``) computes the same with transformers' CLIP ViT-L/14.
- ``dino_i_*`` (DINO-I, DreamBooth's): cosine of DINO ViT-S/16 CLS embeddings (``dino_deitsmall16_pretrain.pth``
  from the torch hub cache, ``$PIE_BENCH_DINO_S16``), after resize of the shorter side to 256 (bicubic), a
  224 centre crop and ImageNet normalisation (in [0, 1], not the structure metric's 0-255 quirk).
- ``dinov2_*``: the DINOv2 preservation score iCD reports (``calc_dinov2_images_images``): cosine of
  ``facebook/dinov2-base``'s ``pooler_output`` (final-norm CLS), with its image processor's preprocessing
  (PIL bicubic resize of the shorter side to 256, 224 centre crop, rescale, ImageNet normalisation; the
  PIL processor of the transformers iCD ran, not transformers 5's torchvision default). The issue asked for
  "DINOv2 self-similarity structure distance as the iCD paper uses it"; iCD's code compares pooled
  embeddings, not self-similarity matrices, so this follows the code. Weights: ``$PIE_BENCH_DINOV2`` (a
  transformers folder) or the Hugging Face cache; the toy is a tiny seeded ``Dinov2Model`` folder written
  with the base model's preprocessor config and read through the same loader.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from pie_bench.core.errors import ConfigError

from metrics.base import Metric, MetricBatch
from metrics.weights import check_backbone, offline, shared_model, to_uint8, toy_folder, url_checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINO_S16_URL = "https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth"
DINO_S16_ENV = "PIE_BENCH_DINO_S16"
VITS16 = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0, img_size=224)
DINOV2_ID = "facebook/dinov2-base"
DINOV2_ENV = "PIE_BENCH_DINOV2"
DINOV2_PREPROCESSOR = {"image_processor_type": "BitImageProcessor", "do_resize": True, "size": {"shortest_edge": 256},
                       "resample": 3, "do_center_crop": True, "crop_size": {"height": 224, "width": 224},
                       "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                       "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD), "do_convert_rgb": True}
TOY_DINOV2 = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=14,
                  image_size=518)
TOY_SEED = 0


def pil_resize_crop(images_u8: torch.Tensor, short: int = 256, crop: int = 224) -> torch.Tensor:
    """PIL bicubic resize of the shorter side, centre crop, ImageNet normalisation: (B, 3, crop, crop) floats."""
    out = []
    for im in images_u8:
        pil = Image.fromarray(np.ascontiguousarray(im.permute(1, 2, 0).cpu().numpy()))
        w, h = pil.size
        scale = short / min(w, h)
        pil = pil.resize((max(1, int(w * scale)) if w != min(w, h) else short,
                          max(1, int(h * scale)) if h != min(w, h) else short), Image.BICUBIC)
        w, h = pil.size
        left, top = int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))
        arr = np.asarray(pil.crop((left, top, left + crop, top + crop)), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(arr).permute(2, 0, 1))
    x = torch.stack(out)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a.double() / a.double().norm(dim=-1, keepdim=True).clamp(min=1e-12)
    b = b.double() / b.double().norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return (a * b).sum(-1).float()


class _Similarity(Metric):
    """Cosine of embed(reference) and embed(edited); ``reference``: the source or the target image."""

    higher_is_better = True
    region = "whole"
    scale = 1e2
    reference = "source"

    def __init__(self, chunk: int = 16) -> None:
        super().__init__()
        self.chunk = chunk

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.requires_target = cls.reference == "target"

    def embed(self, images_u8: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def compute(self, batch: MetricBatch) -> torch.Tensor:
        ref = batch.target if self.reference == "target" else batch.source
        out = []
        for i in range(0, ref.shape[0], self.chunk):
            both = torch.cat([to_uint8(ref[i:i + self.chunk]), to_uint8(batch.edited[i:i + self.chunk])])
            e = self.embed(both)
            a, b = e.chunk(2)
            out.append(_cosine(a, b).cpu())
        return torch.cat(out)


# -- CLIP-I -----------------------------------------------------------------------------------------


class ClipImageSource(_Similarity):
    name = "clip_i_source"
    label = "CLIP-I vs source x10^2"

    def load(self, backbone: str = "toy", device="cpu") -> None:
        from metrics.clip_score import load_clip_scorer

        check_backbone(backbone, self.name)
        super().load(backbone, device)
        self.scorer = shared_model(("clip", backbone, str(self.device)),
                                   lambda: load_clip_scorer(backbone, self.device))

    def embed(self, images_u8):
        return self.scorer.image_features(images_u8)


class ClipImageTarget(ClipImageSource):
    name = "clip_i_target"
    label = "CLIP-I vs target x10^2"
    reference = "target"


# -- DINO-I -----------------------------------------------------------------------------------------


def load_dino_s16(kind: str, device):
    from metrics.structure import load_dino, toy_dino_folder

    if kind == "toy":
        return load_dino(toy_dino_folder()).to(device)
    how = f"run once online: python -c \"import torch; torch.hub.load_state_dict_from_url('{DINO_S16_URL}')\""
    return load_dino(url_checkpoint(DINO_S16_ENV, DINO_S16_URL, "DINO ViT-S/16 weights (DINO-I)", how),
                     default_config=VITS16).to(device)


class DinoImageSource(_Similarity):
    name = "dino_i_source"
    label = "DINO-I vs source x10^2"

    def load(self, backbone: str = "toy", device="cpu") -> None:
        check_backbone(backbone, self.name)
        super().load(backbone, device)
        kind = "real" if backbone == "real" else "toy"  # ShapesEdit trains no DINO
        self.is_toy = kind == "toy"
        self.model = shared_model(("dino_s16", kind, str(self.device)), lambda: load_dino_s16(kind, self.device))

    def embed(self, images_u8):
        return self.model.cls_embedding(pil_resize_crop(images_u8).to(self.device))


class DinoImageTarget(DinoImageSource):
    name = "dino_i_target"
    label = "DINO-I vs target x10^2"
    reference = "target"


# -- DINOv2 (iCD) -------------------------------------------------------------------------------------


def toy_dinov2_folder() -> Path:
    def write(tmp: Path) -> None:
        import transformers
        from transformers import Dinov2Config, Dinov2Model

        transformers.utils.logging.disable_progress_bar()
        torch.manual_seed(TOY_SEED)
        Dinov2Model(Dinov2Config(**TOY_DINOV2)).save_pretrained(str(tmp))
        (tmp / "preprocessor_config.json").write_text(json.dumps(DINOV2_PREPROCESSOR, indent=2))

    return toy_folder("dinov2", {"cfg": TOY_DINOV2, "seed": TOY_SEED}, write)


def real_dinov2_folder() -> Path:
    how = f"run once online: huggingface-cli download {DINOV2_ID}, or set {DINOV2_ENV}=<transformers folder>"
    override = os.environ.get(DINOV2_ENV)
    if override:
        path = Path(override).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(f"{DINOV2_ENV}={override}: no config.json there (a transformers DINOv2 folder); {how}")
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(DINOV2_ID, local_files_only=offline()))
    except Exception as exc:  # a cache miss offline, network, auth: all mean "not here"
        raise ConfigError(f"DINOv2 weights ({DINOV2_ID}) are not in the Hugging Face cache"
                          f"{' and downloads are off' if offline() else ''} ({type(exc).__name__}); {how}") from None


def load_dinov2(folder: Path, device):
    import transformers
    from transformers import Dinov2Model

    transformers.utils.logging.disable_progress_bar()  # a bar per load would run through the run's progress

    try:
        model = Dinov2Model.from_pretrained(str(folder))
    except Exception as exc:
        raise ConfigError(f"{folder}: not a transformers DINOv2 folder ({type(exc).__name__})") from None
    return model.eval().requires_grad_(False).to(device)


class Dinov2Source(_Similarity):
    name = "dinov2_source"
    label = "DINOv2 vs source x10^2"
    folder: Optional[Path] = None

    def load(self, backbone: str = "toy", device="cpu") -> None:
        check_backbone(backbone, self.name)
        super().load(backbone, device)
        kind = "real" if backbone == "real" else "toy"  # ShapesEdit trains no DINOv2
        self.is_toy = kind == "toy"
        self.folder = real_dinov2_folder() if kind == "real" else toy_dinov2_folder()
        self.model = shared_model(("dinov2", kind, str(self.device)), lambda: load_dinov2(self.folder, self.device))

    def embed(self, images_u8):
        return self.model(pixel_values=pil_resize_crop(images_u8).to(self.device)).pooler_output


class Dinov2Target(Dinov2Source):
    name = "dinov2_target"
    label = "DINOv2 vs target x10^2"
    reference = "target"
