"""Structure distance (PIE-Bench column "Structure x10^3"), as the official evaluator computes it.

Definition (PnPInversion ``evaluation/matrics_calculator.py``, after Splice/Tumanyan et al.): each image
goes through ``Resize(224, max_size=480)`` and ImageNet ``Normalize``, then DINO ViT-B/8; the keys of
the last block's attention (all heads concatenated, CLS token included) give a token-by-token cosine
self-similarity matrix; the score is the MSE between the source's and the edited image's matrices.
Whole image, no mask.

Quirk reproduced on purpose: the evaluator feeds float pixels in 0-255 (not 0-1) to the ImageNet
normalisation, so the network sees values around +-1000. Changing that changes every number.

The ViT is implemented here with the DINO checkpoint's parameter names (no timm, no transformers), so
the official ``dino_vitb8_pretrain.pth`` (what ``torch.hub.load('facebookresearch/dino:main',
'dino_vitb8')`` downloads) loads as is; a transformers folder (``facebook/dino-vitb8`` layout) is mapped
onto the same module. LayerNorm eps is DINO's 1e-6 whatever a transformers config says.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from pie_bench.core.errors import ConfigError

from metrics.base import Metric, MetricBatch
from metrics.weights import (check_backbone, load_state_dict_file, offline, shared_model, toy_folder, url_checkpoint)

DINO_URL = "https://dl.fbaipublicfiles.com/dino/dino_vitb8_pretrain/dino_vitb8_pretrain.pth"
DINO_HF_ID = "facebook/dino-vitb8"
DINO_ENV = "PIE_BENCH_DINO"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VITB8 = dict(patch_size=8, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, img_size=224)
TOY_VIT = dict(patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, img_size=224)
TOY_SEED = 0


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.num_heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, dim * 3)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.mlp.fc2 = nn.Linear(int(dim * mlp_ratio), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.attn.proj(out.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class DinoViT(nn.Module):
    """DINO's VisionTransformer, up to the last block's qkv projection (all the metric needs)."""

    def __init__(self, patch_size: int, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 img_size: int = 224) -> None:
        super().__init__()
        self.config = dict(patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                           mlp_ratio=mlp_ratio, img_size=img_size)
        self.patch_size = patch_size
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        n = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.blocks = nn.ModuleList([_Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        # DINO's interpolate_pos_encoding, including its +0.1 on the scale factor; 224x224 needs none
        n = self.pos_embed.shape[1] - 1
        gh, gw = h // self.patch_size, w // self.patch_size
        if gh * gw == n and gh == gw:
            return self.pos_embed
        side = int(math.sqrt(n))
        grid = self.pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((gh + 0.1) / side, (gw + 0.1) / side), mode="bicubic")
        return torch.cat([self.pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)

    def cls_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D): the final-norm CLS token, DINO's image embedding (what DINO-I compares)."""
        b, _, h, w = x.shape
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1) + self._pos_embed(h, w)
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.norm(tokens)[:, 0]

    def last_keys(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1 + patches, D): the last block's keys, heads concatenated (CLS token first)."""
        b, _, h, w = x.shape
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1) + self._pos_embed(h, w)
        for blk in self.blocks[:-1]:
            tokens = blk(tokens)
        last = self.blocks[-1]
        d = tokens.shape[-1]
        return F.linear(last.norm1(tokens), last.attn.qkv.weight[d:2 * d], last.attn.qkv.bias[d:2 * d])


# ---------------------------------------------------------------------------------------------
# checkpoints: DINO's own .pth, or a transformers ViT folder


_HF5_NAMES = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
              "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense",
              "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}


# DINO name <-> transformers (< 5) ViT name; both directions of the conversion read these tables
_TOP_LEVEL = (("cls_token", "embeddings.cls_token"), ("pos_embed", "embeddings.position_embeddings"),
              ("patch_embed.proj.weight", "embeddings.patch_embeddings.projection.weight"),
              ("patch_embed.proj.bias", "embeddings.patch_embeddings.projection.bias"),
              ("norm.weight", "layernorm.weight"), ("norm.bias", "layernorm.bias"))
_PER_LAYER = (("attn.proj", "attention.output.dense"), ("norm1", "layernorm_before"),
              ("norm2", "layernorm_after"), ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense"))
_QKV = ("query", "key", "value")  # stacked in this order in DINO's fused attn.qkv


def hf_vit_to_dino(sd: dict, num_layers: int) -> dict:
    """Map a transformers ``ViTModel`` state dict (``facebook/dino-vitb8``; transformers < 5 names
    ``encoder.layer.N.attention.attention.key``, transformers >= 5 ``layers.N.attention.k_proj``) to
    DINO's parameter names."""
    norm = {}
    for k, v in sd.items():
        k = k.removeprefix("vit.")
        if k.startswith("layers."):
            _, i, rest = k.split(".", 2)
            for new, old in _HF5_NAMES.items():
                if rest.startswith(new + "."):
                    rest = old + rest[len(new):]
            k = f"encoder.layer.{i}.{rest}"
        norm[k] = v
    sd = norm
    out = {dino: sd[hf] for dino, hf in _TOP_LEVEL}
    for i in range(num_layers):
        p, q = f"encoder.layer.{i}.", f"blocks.{i}."
        for part in ("weight", "bias"):
            out[q + f"attn.qkv.{part}"] = torch.cat([sd[p + f"attention.attention.{n}.{part}"] for n in _QKV])
            for dino, hf in _PER_LAYER:
                out[q + f"{dino}.{part}"] = sd[p + f"{hf}.{part}"]
    return out


def dino_to_hf_vit(sd: dict, num_layers: int) -> dict:
    """Inverse of :func:`hf_vit_to_dino` (used to write the toy model as a transformers folder)."""
    d = sd["cls_token"].shape[-1]
    out = {hf: sd[dino] for dino, hf in _TOP_LEVEL}
    for i in range(num_layers):
        p, q = f"encoder.layer.{i}.", f"blocks.{i}."
        for part in ("weight", "bias"):
            for j, n in enumerate(_QKV):
                out[p + f"attention.attention.{n}.{part}"] = sd[q + f"attn.qkv.{part}"][j * d:(j + 1) * d].clone()
            for dino, hf in _PER_LAYER:
                out[p + f"{hf}.{part}"] = sd[q + f"{dino}.{part}"]
    return {k: v.contiguous() for k, v in out.items()}


def _hf_folder_config(folder: Path) -> dict:
    cfg = json.loads((folder / "config.json").read_text())
    patch = cfg.get("patch_size", 16)
    return dict(patch_size=patch, embed_dim=cfg["hidden_size"], depth=cfg["num_hidden_layers"],
                num_heads=cfg["num_attention_heads"], mlp_ratio=cfg["intermediate_size"] / cfg["hidden_size"],
                img_size=cfg.get("image_size", 224))


def load_dino(source: Path, default_config: Optional[dict] = None) -> DinoViT:
    """A DINO .pth/.safetensors file (ViT-B/8 shape unless ``default_config``) or a transformers folder."""
    source = Path(source)
    if source.is_dir():
        if not (source / "config.json").exists():
            raise ConfigError(f"{source}: not a transformers ViT folder (no config.json)")
        cfg = _hf_folder_config(source)
        files = [source / n for n in ("model.safetensors", "pytorch_model.bin") if (source / n).exists()]
        if not files:
            raise ConfigError(f"{source}: no model.safetensors or pytorch_model.bin in the DINO folder")
        try:
            sd = hf_vit_to_dino(load_state_dict_file(files[0]), cfg["depth"])
        except KeyError as exc:
            raise ConfigError(f"{files[0]}: not a transformers ViT checkpoint (missing {exc})") from None
    else:
        cfg = dict(default_config or VITB8)
        sd = load_state_dict_file(source)
    model = DinoViT(**cfg)
    sd = {k: v for k, v in sd.items() if not k.startswith("head")}
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError:  # size mismatch
        missing, unexpected = ["(shapes differ)"], []
    if missing or unexpected:
        raise ConfigError(f"{source}: not a DINO ViT checkpoint of the expected shape (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    return model.eval().requires_grad_(False)


def toy_dino_folder() -> Path:
    """Tiny seeded DINO-architecture ViT (patch 8, so the same 785 tokens as ViT-B/8 at 224), written
    as a transformers folder: config.json + model.safetensors."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        torch.manual_seed(TOY_SEED)
        model = DinoViT(**TOY_VIT)
        with torch.no_grad():  # non-trivial tokens: zero-initialised embeddings would make all rows equal
            model.cls_token.normal_(0, 0.02)
            model.pos_embed.normal_(0, 0.02)
        cfg = TOY_VIT
        (tmp / "config.json").write_text(json.dumps({
            "model_type": "vit", "architectures": ["ViTModel"], "hidden_size": cfg["embed_dim"],
            "num_hidden_layers": cfg["depth"], "num_attention_heads": cfg["num_heads"],
            "intermediate_size": int(cfg["embed_dim"] * cfg["mlp_ratio"]), "patch_size": cfg["patch_size"],
            "image_size": cfg["img_size"], "num_channels": 3, "qkv_bias": True, "layer_norm_eps": 1e-6,
            "hidden_act": "gelu", "pie_bench_toy": True}, indent=2))
        save_file(dino_to_hf_vit(model.state_dict(), cfg["depth"]), str(tmp / "model.safetensors"))

    return toy_folder("dino", {"cfg": TOY_VIT, "seed": TOY_SEED, "format": 1}, write)


def real_dino_source() -> Path:
    """``$PIE_BENCH_DINO`` (file or folder), the torch hub cache, the HF cache of facebook/dino-vitb8, or a
    download (torch hub URL) when online."""
    how = (f"run once online: python -c \"import torch; torch.hub.load_state_dict_from_url('{DINO_URL}')\", or "
           f"huggingface-cli download {DINO_HF_ID}")
    override = os.environ.get(DINO_ENV)
    if override:
        if not Path(override).expanduser().exists():
            raise ConfigError(f"{DINO_ENV}={override}: does not exist (DINO ViT-B/8 weights); {how}")
        return Path(override).expanduser()
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / Path(DINO_URL).name
    if hub_file.is_file():
        return hub_file
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(DINO_HF_ID, allow_patterns=["config.json", "model.safetensors"],
                                      local_files_only=True))
    except Exception:
        pass
    if offline():
        raise ConfigError(f"DINO ViT-B/8 weights (structure distance) not found: no {hub_file}, no cached "
                          f"{DINO_HF_ID}, and downloads are off; {how}, or set {DINO_ENV}=/path")
    return url_checkpoint(DINO_ENV, DINO_URL, "DINO ViT-B/8 weights (structure distance)", how)


def load_structure_model(backbone: str, device) -> DinoViT:
    if backbone == "toy":
        return load_dino(toy_dino_folder()).to(device)
    if backbone == "real":
        return load_dino(real_dino_source()).to(device)
    raise ConfigError(f"structure_distance: unknown backbone {backbone!r}")


# ---------------------------------------------------------------------------------------------


def dino_input(images01: torch.Tensor, size: int = 224, max_size: int = 480, antialias: bool = False) -> torch.Tensor:
    """[0,1] images -> what the official extractor sees: 0-255 floats, Resize(224, max_size=480),
    ImageNet Normalize applied to the 0-255 values (the quirk)."""
    from torchvision.transforms import functional as TF

    x = images01 * 255.0
    x = TF.resize(x, size, max_size=max_size, antialias=antialias)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def key_self_similarity(keys: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(B, T, D) -> (B, T, T) cosine similarity, the norm product clamped at eps as the evaluator does."""
    norms = keys.norm(dim=-1, keepdim=True)
    return keys @ keys.transpose(1, 2) / (norms @ norms.transpose(1, 2)).clamp(min=eps)


class StructureDistance(Metric):
    name = "structure_distance"
    higher_is_better = False
    region = "whole"
    scale = 1e3
    label = "Structure x10^3"

    def __init__(self, antialias: bool = False, chunk: int = 8) -> None:
        """``antialias``: torchvision's tensor ``Resize`` did not antialias before torchvision 0.17 (the
        paper's numbers, 2023); set True to match the evaluator run with a current torchvision."""
        super().__init__()
        self.antialias = antialias
        self.chunk = chunk
        self.model: Optional[DinoViT] = None

    def load(self, backbone: str = "toy", device="cpu") -> None:
        check_backbone(backbone, self.name)
        super().load(backbone, device)
        # ShapesEdit trains no DINO: "shapes" uses the toy one and says so (is_toy), offline and deterministic
        weights_kind = "toy" if backbone == "shapes" else backbone
        self.is_toy = weights_kind == "toy"
        self.model = shared_model(("dino", weights_kind, str(self.device)),
                                  lambda: load_structure_model(weights_kind, self.device))

    @torch.no_grad()
    def compute(self, batch: MetricBatch) -> torch.Tensor:
        if self.model is None:
            self.load(self.backbone if self.backbone != "none" else "toy", self.device)
        out = []
        for i in range(0, batch.source.shape[0], self.chunk):  # T x T matrices: bound memory per step
            src, edt = batch.source[i:i + self.chunk], batch.edited[i:i + self.chunk]
            x = dino_input(torch.cat([src, edt]).to(self.device), antialias=self.antialias)
            sims = key_self_similarity(self.model.last_keys(x))
            a, b = sims.chunk(2)
            out.append((a - b).pow(2).flatten(1).mean(1).float().cpu())
        return torch.cat(out)

    def describe(self) -> dict:
        return {**super().describe(), "model": "dino_vitb8" if not self.is_toy else "toy dino (patch 8)",
                "resize_antialias": self.antialias}
