"""The rectified-flow backbone family (Stable Diffusion 3 layout): MMDiT transformer, VAE, CLIP text
encoders (and T5 where the checkpoint has one) and ``FlowMatchEulerDiscreteScheduler``, loaded once per
process through ``StableDiffusion3Pipeline`` exactly as users load SD3.

``--backbone`` for the flow editors: ``toy`` (tiny random SD3 built from configs in code, written as a
diffusers folder and loaded back, as ``editors.backbone`` does for SD1.x), ``sd3`` / ``sd3.5``
(hub ids), ``shapes`` / ``shapes-flow`` (the ShapesEdit flow model, ``pie_bench.training.shapes_flow``),
a hub id or a local folder. Memory of the real checkpoints (bf16 weights): SD3-medium 2B transformer +
CLIP-L/G + T5-XXL ≈ 15 GB with T5, ≈ 6 GB without (counted in ``benchmarks/flow_cost.py``).

The editors work on unpacked latents (B, C, h, w) and call ``velocity``; guidance is classifier-free,
as SD3 runs it. FLUX specs (``toy-flux``, ``flux-dev``, ``flux-schnell``, a FluxPipeline folder) load the
FLUX family instead (``editors.flux_backbone``: same interface, guidance-distilled, packed inside);
``family`` says which ("sd3" / "flux").
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from editors.backbone import (TOY_RESOLUTION, TOY_SEED, LoadCache, image_to_tensor, images_to_uint8, pipeline_from_pretrained,
                              toy_folder, write_clip_tokenizer_files)
from editors.base import Editor
from pie_bench.core.errors import ConfigError
from pie_bench.core.paths import shapes_models_dir

ALIASES = {"sd3": "stabilityai/stable-diffusion-3-medium-diffusers",
           "sd3.5": "stabilityai/stable-diffusion-3.5-medium"}
UNET_BACKBONES = ("sd14", "sd15", "ip2p")
# what ``list-editors`` says of every editor on this family
FLOW_BACKBONES = ("rectified-flow backbones: sd3 / sd3.5 (SD3-medium ~15 GB bf16 weights with T5-XXL), "
                  "flux-dev / flux-schnell (FLUX.1 ~34 GB bf16 weights: transformer 23.8 GB + T5-XXL/CLIP 9.8 GB), "
                  "shapes (the ShapesEdit flow model, < 10 MB), toy, toy-flux")


def is_flow_alias(spec: str) -> bool:
    """One of the rectified-flow names (``sd3``, ``flux-dev``, ``toy-flux``, ``shapes-flow``, ...): never a
    UNet backbone. ``toy`` and ``shapes`` name a model of either family."""
    from editors import flux_backbone

    return spec in ALIASES or spec in flux_backbone.ALIASES or spec in (flux_backbone.TOY_SPEC, "shapes-flow")


def flow_backbone_unavailable(editor: str, backbone: str) -> Optional[str]:
    """Why ``editor`` (a flow editor) cannot run on ``backbone``: a UNet alias, or the ShapesEdit flow model
    not trained yet (``--editors all`` then leaves the editor out with this reason); None otherwise."""
    if backbone in UNET_BACKBONES:
        return (f"{editor} needs a rectified-flow backbone (sd3, sd3.5, flux-dev, flux-schnell, shapes, toy, "
                f"toy-flux), not the UNet {backbone!r}")
    if backbone == "shapes":
        try:
            shapes_models_dir("flow")
        except ConfigError:
            return ("the ShapesEdit flow model is not trained yet "
                    "(python -m pie_bench.training.shapes_train --init-from pie_bench/models/shapes --stages flow)")
    return None


def toy_sd3_configs() -> dict:
    text = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
                projection_dim=32, hidden_act="gelu")
    vae = dict(in_channels=3, out_channels=3, block_out_channels=(16, 32, 32), layers_per_block=1, latent_channels=4,
               down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
               norm_num_groups=8, sample_size=TOY_RESOLUTION, shift_factor=0.0609, scaling_factor=1.5305)
    transformer = dict(sample_size=TOY_RESOLUTION // 4, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                       attention_head_dim=8, num_attention_heads=4, joint_attention_dim=64,
                       caption_projection_dim=32, pooled_projection_dim=64, pos_embed_max_size=TOY_RESOLUTION // 4)
    return {"text_encoder": text, "vae": vae, "transformer": transformer}


def sd3_model_index() -> dict:
    """``model_index.json`` of an SD3 folder without T5 (the toy and the ShapesEdit flow model)."""
    return {"_class_name": "StableDiffusion3Pipeline", "_diffusers_version": "0.42.1",
            "transformer": ["diffusers", "SD3Transformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "text_encoder_3": [None, None],
            "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "tokenizer_3": [None, None], "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "image_encoder": [None, None], "feature_extractor": [None, None]}


def build_toy_sd3_folder(seed: int = TOY_SEED, root: Optional[Path] = None) -> Path:
    """Create (once) the toy SD3 as a diffusers folder (no T5, as SD3 loaded with ``text_encoder_3=None``)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    cfg = toy_sd3_configs()

    def write(tmp: Path) -> None:
        torch.manual_seed(seed)
        SD3Transformer2DModel(**cfg["transformer"]).save_pretrained(tmp / "transformer")
        torch.manual_seed(seed + 1)
        AutoencoderKL(**cfg["vae"]).save_pretrained(tmp / "vae")
        for i, name in enumerate(("text_encoder", "text_encoder_2")):
            torch.manual_seed(seed + 2 + i)
            CLIPTextModelWithProjection(CLIPTextConfig(**cfg["text_encoder"])).save_pretrained(tmp / name)
            write_clip_tokenizer_files(tmp / name.replace("text_encoder", "tokenizer"))
        FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(tmp / "scheduler")
        (tmp / "model_index.json").write_text(json.dumps(sd3_model_index(), indent=2))
        (tmp / "pie_bench.json").write_text(json.dumps({"toy": "sd3", "max_sequence_length": 4}))

    return toy_folder("sd3", cfg, seed, write, root)


@dataclass
class FlowBackbone:
    pipe: object  # StableDiffusion3Pipeline
    model_id: str
    is_toy: bool
    device: torch.device
    dtype: torch.dtype
    resolution: int
    max_sequence_length: int
    family: str = "sd3"

    @property
    def transformer(self):
        return self.pipe.transformer

    @property
    def vae(self):
        return self.pipe.vae

    def new_scheduler(self, **overrides):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(self.pipe.scheduler.config, **overrides)

    def schedule(self, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The pipeline's timesteps for ``steps`` (1000 * sigma, shifted as the scheduler config says) and its
        sigmas (one more: the final 0)."""
        sched = self.new_scheduler()
        sched.set_timesteps(steps, device=self.device)
        return sched.timesteps, sched.sigmas

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        emb, _, pooled, _ = self.pipe.encode_prompt(list(prompts), None, None, do_classifier_free_guidance=False,
                                                    device=self.device, max_sequence_length=self.max_sequence_length)
        return emb.to(self.dtype), pooled.to(self.dtype)

    @torch.no_grad()
    def velocity(self, z: torch.Tensor, t: torch.Tensor | float, cond: tuple, uncond: Optional[tuple] = None,
                 guidance: float = 1.0) -> torch.Tensor:
        """v(z, t) with classifier-free guidance (``uncond`` None or ``guidance`` 1: conditional only)."""
        b = len(z)
        t = torch.as_tensor(t, device=self.device, dtype=self.dtype).reshape(-1).expand(b)
        if uncond is None or guidance == 1.0:
            return self.transformer(hidden_states=z, timestep=t, encoder_hidden_states=cond[0],
                                    pooled_projections=cond[1]).sample
        v = self.transformer(hidden_states=torch.cat([z, z]), timestep=torch.cat([t, t]),
                             encoder_hidden_states=torch.cat([uncond[0], cond[0]]),
                             pooled_projections=torch.cat([uncond[1], cond[1]])).sample
        vu, vc = v.chunk(2)
        return vu + guidance * (vc - vu)

    def randn_like(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Gaussian noise shaped as ``z``, drawn from ``generator`` (the FLUX family draws it packed)."""
        return torch.randn(z.shape, generator=generator).to(z)

    @torch.no_grad()
    def encode_image(self, image: np.ndarray, *, sample: bool = False,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """uint8 (512,512,3) -> SD3 latent ((mean - shift) * scale), as the SD3 img2img pipeline prepares it;
        ``sample``: a posterior sample drawn from ``generator`` instead of the mean."""
        x = image_to_tensor(image, self.resolution).to(self.device, self.dtype)
        dist = self.vae.encode(x).latent_dist
        z = dist.sample(generator=generator) if sample else dist.mean
        return (z - self.vae.config.shift_factor) * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor, size: Optional[int] = 512, quantize: str = "truncate") -> np.ndarray:
        """``quantize`` as ``editors.backbone.Backbone.decode`` (diffusers' pipelines ``round``)."""
        x = self.vae.decode(z.to(self.dtype) / self.vae.config.scaling_factor + self.vae.config.shift_factor).sample
        return images_to_uint8(x, size, quantize)


def harness_settings(path: str) -> dict:
    """A folder's ``pie_bench.json`` (what the harness must know that diffusers' configs do not say: how many
    zero T5 tokens a model without T5 was trained with); SD3's pipeline defaults where there is none."""
    f = Path(path) / "pie_bench.json"
    return json.loads(f.read_text()) if f.is_file() else {}


_CACHE = LoadCache()


def resolve_flow_path(spec: str) -> tuple[str, bool]:
    if spec == "toy":
        return str(build_toy_sd3_folder()), True
    if spec in ("shapes", "shapes-flow"):
        return str(shapes_models_dir("flow")), False
    return ALIASES.get(spec, spec), False


def load_flow_backbone(spec: str = "toy", device="cpu", dtype: torch.dtype = torch.float32):
    """The flow backbone ``spec`` names: FLUX specs go to ``editors.flux_backbone``, the rest load as SD3."""
    from diffusers import StableDiffusion3Pipeline

    from editors.flux_backbone import is_flux_spec, load_flux_backbone

    if is_flux_spec(spec):
        return load_flux_backbone(spec, device, dtype)
    device = torch.device(device)

    def load() -> FlowBackbone:
        path, is_toy = resolve_flow_path(spec)
        index = json.loads((Path(path) / "model_index.json").read_text()) if Path(path).is_dir() else {}
        # components a folder leaves empty (T5, SD3.5's image encoder) are passed as None, as users load SD3
        # without T5 (``text_encoder_3=None, tokenizer_3=None``)
        empty = {k: None for k, v in index.items() if isinstance(v, list) and v[0] is None}
        pipe = pipeline_from_pretrained(StableDiffusion3Pipeline, path, spec, device, dtype,
                                        "download it once with `huggingface-cli download` or pass a local SD3 folder",
                                        **empty)
        vae_factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        return FlowBackbone(pipe=pipe, model_id=path if not is_toy else "toy:sd3", is_toy=is_toy, device=device,
                            dtype=dtype, resolution=int(pipe.transformer.config.sample_size) * vae_factor,
                            max_sequence_length=int(harness_settings(path).get("max_sequence_length", 256)))

    return _CACHE.get_or_load((spec, str(device), dtype), load)


class FlowEditor(Editor):
    """What the rectified-flow editors share: they list the flow backbones, refuse the UNet family with the
    reason, and load their backbone (SD3 or FLUX family, by the spec) into ``self.backbone`` once
    ``check_config`` has passed, so a bad setting fails before any weights load."""

    backbones = FLOW_BACKBONES

    @classmethod
    def backbone_unavailable(cls, backbone: str) -> Optional[str]:
        return flow_backbone_unavailable(cls.name, backbone)

    def check_config(self) -> None:
        """Raise ``ConfigError`` for settings the method cannot run with."""

    def load(self, backbone: str = "toy", device="cpu", dtype: torch.dtype = torch.float32) -> None:
        super().load(backbone, device, dtype)
        self.check_config()
        self.backbone = load_flow_backbone(self.backbone_id, device, dtype)

