"""CLIP similarity (PIE-Bench columns "CLIP Whole" and "CLIP Edited", plus the source's score).

Official: torchmetrics ``CLIPScore("openai/clip-vit-large-patch14")`` on a uint8 CHW image against a
prompt, i.e. ``max(100 * cos(E_image, E_text), 0)``, per image. "Edited" scores ``edited * mask``:
pixels outside the edit region are black, the frame is not cropped.

Here the model is open_clip's ViT-L/14 with the OpenAI weights (the same weights as the transformers
checkpoint, in open_clip's layout, hub id ``timm/vit_large_patch14_clip_224.openai``). Preprocessing
is open_clip's: PIL bicubic resize of the shorter side to 224, centre crop, CLIP mean/std, which is
what transformers' PIL ``CLIPImageProcessor`` does; the parity test runs torchmetrics' CLIPScore on the
same tiny random weights converted to transformers. Remaining documented differences: transformers >= 5
defaults to a torchvision-tensor image processor (bicubic+antialias on tensors, not PIL), which shifts
100*cos by ~4e-4 on the toy model (the PIL processor: ~1e-5); torchmetrics 1.9's CLIPScore also breaks
on transformers >= 5 (``get_*_features`` return ModelOutputs; the test adapts them); and prompts over 77
tokens: open_clip keeps the end-of-text token at position 77, torchmetrics cuts the sequence at 77
(dropping it). PIE-Bench prompts are far shorter.

Every backbone goes through one loader, open_clip's ``local-dir:`` schema over a folder holding
``open_clip_config.json`` + ``open_clip_model.safetensors``: the real weights' hub snapshot, the toy
model written to disk by :func:`toy_clip_folder`, or ShapesEdit's trained CLIP.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from pie_bench.core.errors import ConfigError

from metrics.base import Metric, MetricBatch, empty_edit
from metrics.weights import check_backbone, offline, shared_model, to_uint8, toy_folder

CLIP_HF_ID = "timm/vit_large_patch14_clip_224.openai"
CLIP_ENV = "PIE_BENCH_CLIP"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESS_CFG = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic",
                  "resize_mode": "shortest"}
# Tiny ViT CLIP at the real input size (224) and the real tokenizer/context, so preprocessing and
# tokenisation are exactly the real model's; only widths and depths shrink.
TOY_MODEL_CFG = {"embed_dim": 32, "quick_gelu": True,
                 "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
                 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
TOY_SEED = 0


def write_open_clip_folder(folder: Path, model: torch.nn.Module, model_cfg: dict,
                           preprocess_cfg: Optional[dict] = None) -> Path:
    """open_clip's hub layout: ``open_clip_config.json`` (model_cfg + preprocess_cfg) and safetensors."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or PREPROCESS_CFG}, indent=2))
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    return folder


TOY_SHARED_DIRECTION = 4.0


def toy_clip_folder() -> Path:
    """Seeded random weights, plus one shared direction in both towers' output projections: a purely
    random CLIP gives negative cosines about half the time, which max(100 cos, 0) turns into a toy
    leaderboard of zeros. With the shared component toy scores land around 15-40 and still move with
    the image and the prompt. (The final LayerNorm bias is 1 so the component's weight is constant.)"""
    def write(tmp: Path) -> None:
        import open_clip

        torch.manual_seed(TOY_SEED)
        model = open_clip.model.CLIP(**TOY_MODEL_CFG)
        with torch.no_grad():
            u = torch.randn(TOY_MODEL_CFG["embed_dim"])
            u /= u.norm()
            for ln, proj in ((model.visual.ln_post, model.visual.proj), (model.ln_final, model.text_projection)):
                ln.bias.fill_(1.0)
                proj += TOY_SHARED_DIRECTION * torch.outer(torch.ones(proj.shape[0]), u) / proj.shape[0]
        write_open_clip_folder(tmp, model, TOY_MODEL_CFG)

    return toy_folder("open_clip", {"cfg": TOY_MODEL_CFG, "pre": PREPROCESS_CFG, "seed": TOY_SEED,
                                    "shared": TOY_SHARED_DIRECTION}, write)


def _how_real() -> str:
    return (f"run once online: huggingface-cli download {CLIP_HF_ID} open_clip_config.json "
            f"open_clip_model.safetensors, or set {CLIP_ENV}=<folder with those two files>")


def real_clip_folder() -> Path:
    override = os.environ.get(CLIP_ENV)
    if override:
        path = Path(override).expanduser()
        if not (path / "open_clip_config.json").is_file():
            raise ConfigError(f"{CLIP_ENV}={override}: no open_clip_config.json there (CLIP ViT-L/14 OpenAI "
                              f"weights in open_clip's folder layout); {_how_real()}")
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(CLIP_HF_ID, allow_patterns=["open_clip_config.json", "open_clip_model.safetensors"],
                                      local_files_only=offline()))
    except Exception as exc:  # offline cache miss, network, auth: all mean "not here"
        raise ConfigError(f"CLIP ViT-L/14 OpenAI weights ({CLIP_HF_ID}) are not in the Hugging Face cache"
                          f"{' and downloads are off (HF_HUB_OFFLINE)' if offline() else ''} "
                          f"({type(exc).__name__}); {_how_real()}") from None


def shapes_clip_folder() -> Path:
    from pie_bench.core.paths import shapes_models_dir

    try:
        return shapes_models_dir("clip")  # open_clip_config.json + open_clip_model.safetensors
    except ConfigError as exc:
        raise ConfigError(f"--metrics-backbone shapes: no ShapesEdit CLIP ({exc})") from None


class ClipScorer:
    """One open_clip model + preprocessing + tokenizer, shared by the three CLIP metrics."""

    def __init__(self, model: torch.nn.Module, preprocess, tokenizer, device, folder: Optional[Path] = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.folder = Path(folder) if folder else None
        self._text_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_folder(cls, folder: Path, device) -> "ClipScorer":
        """The one loading path: open_clip's ``local-dir:`` schema (config + weights + tokenizer)."""
        import open_clip

        spec = f"local-dir:{Path(folder).resolve()}"
        try:
            model, preprocess = open_clip.create_model_from_pretrained(spec, device=device)
            tokenizer = open_clip.get_tokenizer(spec)
        except Exception as exc:
            raise ConfigError(f"{folder}: could not load the open_clip model ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        return cls(model, preprocess, tokenizer, device, folder)

    @torch.no_grad()
    def image_features(self, images_u8: torch.Tensor) -> torch.Tensor:
        pil = [Image.fromarray(np.ascontiguousarray(im.permute(1, 2, 0).cpu().numpy())) for im in images_u8]
        x = torch.stack([self.preprocess(p) for p in pil]).to(self.device)
        f = self.model.encode_image(x).float()
        return f / f.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        todo = list(dict.fromkeys(p for p in prompts if p not in self._text_cache))
        if todo:
            f = self.model.encode_text(self.tokenizer(todo).to(self.device)).float()
            f = f / f.norm(dim=-1, keepdim=True)
            if len(self._text_cache) > 4096:
                self._text_cache.clear()
            self._text_cache.update({p: f[i].cpu() for i, p in enumerate(todo)})
        return torch.stack([self._text_cache[p] for p in prompts]).to(self.device)

    def cosine(self, images_u8: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return (self.image_features(images_u8) * self.text_features(prompts)).sum(-1).cpu()

    def score(self, images_u8: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """max(100 * cos, 0) per image, as torchmetrics' CLIPScore on one image at a time."""
        return (100.0 * self.cosine(images_u8, prompts)).clamp(min=0)


def load_clip_scorer(backbone: str, device) -> ClipScorer:
    folder = {"toy": toy_clip_folder, "real": real_clip_folder, "shapes": shapes_clip_folder}[backbone]()
    return ClipScorer.from_folder(folder, device)


class _ClipMetric(Metric):
    higher_is_better = True
    scale = 1.0

    def __init__(self, chunk: int = 16) -> None:
        super().__init__()
        self.chunk = chunk
        self.scorer: Optional[ClipScorer] = None

    def load(self, backbone: str = "toy", device="cpu") -> None:
        check_backbone(backbone, self.name)
        super().load(backbone, device)
        self.scorer = shared_model(("clip", backbone, str(self.device)), lambda: load_clip_scorer(backbone, self.device))

    def images_and_prompts(self, batch: MetricBatch) -> tuple[torch.Tensor, Sequence[str]]:
        raise NotImplementedError

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        if self.scorer is None:
            self.load("toy", self.device)
        images, prompts = self.images_and_prompts(batch)
        out = [self.scorer.score(images[i:i + self.chunk], prompts[i:i + self.chunk])
               for i in range(0, images.shape[0], self.chunk)]
        return torch.cat(out).float()

    def describe(self) -> dict:
        folder = self.scorer.folder if self.scorer else None
        return {**super().describe(), "model": "ViT-L-14 openai" if self.backbone == "real" else
                f"{self.backbone} open_clip", "weights": str(folder) if folder else None}


class ClipWhole(_ClipMetric):
    name = "clip_similarity_target_image"
    region = "whole"
    label = "CLIP Whole"

    def images_and_prompts(self, batch):
        return to_uint8(batch.edited), list(batch.target_prompts)


class ClipEdited(_ClipMetric):
    name = "clip_similarity_target_image_edit_part"
    region = "edited"
    label = "CLIP Edited"

    def images_and_prompts(self, batch):
        return to_uint8(batch.edited) * batch.mask.to(torch.uint8), list(batch.target_prompts)

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        return super().compute(batch).masked_fill(empty_edit(batch.mask), float("nan"))


class ClipSource(_ClipMetric):
    """The source image against the source prompt: the same for every editor of a run, so each
    (source image, prompt) is scored once per process and looked up for the next editor."""

    name = "clip_similarity_source_image"
    region = "whole"
    label = "CLIP Source"
    CACHE_SIZE = 4096  # scalars; keyed by a digest of the image bytes, never by sample id alone

    def __init__(self, chunk: int = 16) -> None:
        super().__init__(chunk)
        self._seen: "OrderedDict[tuple, float]" = OrderedDict()

    def images_and_prompts(self, batch):
        return to_uint8(batch.source), list(batch.source_prompts)

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        images, prompts = self.images_and_prompts(batch)
        keys = [(hashlib.sha1(images[i].numpy().tobytes()).hexdigest(), prompts[i]) for i in range(len(prompts))]
        todo = [i for i, k in enumerate(keys) if k not in self._seen]
        if todo:
            fresh = super().compute(MetricBatch(source=batch.source[todo], edited=batch.edited[todo],
                                                mask=batch.mask[todo], source_prompts=[prompts[i] for i in todo],
                                                target_prompts=[batch.target_prompts[i] for i in todo]))
            for i, v in zip(todo, fresh.tolist()):
                self._seen[keys[i]] = v
            while len(self._seen) > self.CACHE_SIZE:
                self._seen.popitem(last=False)
        return torch.tensor([self._seen[k] for k in keys], dtype=torch.float32)
