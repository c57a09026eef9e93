"""The FLUX.1 backbone family: ``FluxTransformer2DModel`` (double- and single-stream MMDiT over packed 2x2
latent patches with rotary image/text ids), a 16-channel VAE, CLIP-L (pooled) + T5-XXL text encoders and
``FlowMatchEulerDiscreteScheduler`` with dynamic shifting, loaded once per process through
``FluxPipeline.from_pretrained`` exactly as users load FLUX.

``--backbone`` for the flow editors: ``flux-dev`` (black-forest-labs/FLUX.1-dev, guidance-distilled: the
guidance scale is an input of the transformer), ``flux-schnell`` (black-forest-labs/FLUX.1-schnell,
timestep-distilled, no guidance input), a hub id or a local FLUX folder, and ``toy-flux`` (a tiny random
FLUX built from configs in code, written as a diffusers folder and loaded back). Memory (bf16 weights,
counted in ``benchmarks/flow_cost.py``): 12 B transformer 23.8 GB + CLIP-L/T5-XXL 9.8 GB = 33.6 GB.

Same interface as ``editors.flow_backbone.FlowBackbone``, so every flow editor runs on either family: the
editors see UNPACKED latents (B, 16, h, w) and timesteps in the scheduler's units (1000 sigma); packing,
image ids and the transformer's [0, 1] timestep are handled here. ``velocity(z, t, cond, uncond, guidance)``
puts ``guidance`` into the guidance embedding (ignored by schnell, as FluxPipeline ignores it) and makes one
pass; ``uncond`` is used only when the caller asks for true CFG (``true_cfg_scale`` > 1, FluxPipeline's
``true_cfg_scale`` / ``negative_prompt``: neg + s (pos - neg), two passes).

Resolution: 512 px for the real checkpoints (PIE-Bench's size, as RF-Solver's and FireFlow's PIE-Bench
runs on FLUX; FluxPipeline's own default is 1024), the folder's ``pie_bench.json`` ``resolution`` where
it says (the toy: 64). T5 sequence length: FluxPipeline's 512, 256 for schnell (its model card).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from editors.backbone import TOY_RESOLUTION, TOY_SEED, LoadCache, pipeline_from_pretrained, toy_folder, write_clip_tokenizer_files
from editors.flow_backbone import FlowBackbone, harness_settings

ALIASES = {"flux-dev": "black-forest-labs/FLUX.1-dev", "flux-schnell": "black-forest-labs/FLUX.1-schnell"}
TOY_SPEC = "toy-flux"
REAL_RESOLUTION = 512
# T5 tokens: FluxPipeline's default 512; schnell's model card runs 256
MAX_SEQUENCE_LENGTH = {"black-forest-labs/FLUX.1-schnell": 256}
# FLUX.1-dev's scheduler_config.json
FLUX_SCHEDULER = dict(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15,
                      num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True)
MEMORY = "FLUX.1 ~34 GB bf16 weights: 12B transformer 23.8 GB + CLIP-L/T5-XXL 9.8 GB"


def is_flux_spec(spec: str) -> bool:
    """A FLUX alias, the toy, a folder whose ``model_index.json`` names FluxPipeline, or a hub id with FLUX in
    its name (a hub id's model index cannot be read offline before it is downloaded)."""
    if spec in ALIASES or spec == TOY_SPEC:
        return True
    index = Path(spec) / "model_index.json"
    if index.is_file():
        return json.loads(index.read_text()).get("_class_name") == "FluxPipeline"
    return not Path(spec).exists() and "/" in spec and "flux" in spec.lower()


# ---------------------------------------------------------------------------------------------
# the toy


T5_SPECIAL = ["<pad>", "</s>", "<unk>"]  # T5's ids 0, 1, 2


def write_t5_tokenizer_files(folder: Path) -> Path:
    """A T5-compatible Unigram tokenizer written offline: T5's special tokens (pad 0, eos 1, unk 2), the
    word-start marker, single characters with and without it, no sentinel ids; saved with T5TokenizerFast
    (``tokenizer.json`` + config) so FluxPipeline loads it as it loads T5-XXL's."""
    import string

    from transformers import T5TokenizerFast

    chars = string.ascii_letters + string.digits + string.punctuation
    pieces = [(t, 0.0) for t in T5_SPECIAL] + [("▁", -2.0)] + [("▁" + c, -1.0) for c in chars] + \
        [(c, -1.5) for c in chars]
    folder.mkdir(parents=True, exist_ok=True)
    tok = T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)
    tok.save_pretrained(folder)
    return folder


def toy_flux_configs() -> dict:
    clip = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
                projection_dim=32, hidden_act="gelu")
    t5 = dict(vocab_size=4 + 2 * 94, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
              relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
              decoder_start_token_id=0)
    # FLUX's VAE: 16 latent channels, no quant convs, its shift/scale; 3 blocks (factor 4) at the toy's 64 px
    vae = dict(in_channels=3, out_channels=3, block_out_channels=(16, 32, 32), layers_per_block=1, latent_channels=16,
               down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
               norm_num_groups=8, sample_size=TOY_RESOLUTION, shift_factor=0.1159, scaling_factor=0.3611,
               use_quant_conv=False, use_post_quant_conv=False)
    transformer = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
                       num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
                       axes_dims_rope=(4, 4, 8))
    return {"text_encoder": clip, "text_encoder_2": t5, "vae": vae, "transformer": transformer,
            "scheduler": FLUX_SCHEDULER}


def flux_model_index() -> dict:
    return {"_class_name": "FluxPipeline", "_diffusers_version": "0.42.1",
            "transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "T5TokenizerFast"],
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "image_encoder": [None, None], "feature_extractor": [None, None]}


def write_toy_flux_components(tmp: Path, cfg: dict, seed: int, pipeline_class: str = "FluxPipeline") -> None:
    """The toy FLUX's components, each from its own seed, and a model index naming ``pipeline_class`` (the
    Kontext toy is the same model under ``FluxKontextPipeline``, with another VAE config)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    FluxTransformer2DModel(**cfg["transformer"]).save_pretrained(tmp / "transformer")
    torch.manual_seed(seed + 1)
    AutoencoderKL(**cfg["vae"]).save_pretrained(tmp / "vae")
    torch.manual_seed(seed + 2)
    CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])).save_pretrained(tmp / "text_encoder")
    write_clip_tokenizer_files(tmp / "tokenizer")
    torch.manual_seed(seed + 3)
    T5EncoderModel(T5Config(**cfg["text_encoder_2"])).save_pretrained(tmp / "text_encoder_2")
    write_t5_tokenizer_files(tmp / "tokenizer_2")
    FlowMatchEulerDiscreteScheduler(**cfg["scheduler"]).save_pretrained(tmp / "scheduler")
    (tmp / "model_index.json").write_text(json.dumps(dict(flux_model_index(), _class_name=pipeline_class), indent=2))


def build_toy_flux_folder(seed: int = TOY_SEED, root: Optional[Path] = None) -> Path:
    """Create (once) the toy FLUX (guidance-distilled, as FLUX.1-dev) as a diffusers FluxPipeline folder."""
    cfg = toy_flux_configs()

    def write(tmp: Path) -> None:
        write_toy_flux_components(tmp, cfg, seed)
        (tmp / "pie_bench.json").write_text(json.dumps({"toy": "flux", "resolution": TOY_RESOLUTION}))

    return toy_folder("flux", cfg, seed, write, root)


# ---------------------------------------------------------------------------------------------
# the backbone


@dataclass
class FluxBackbone(FlowBackbone):
    """FLUX.1 behind the flow-backbone interface (fields, properties, scheduler, VAE encode and decode are
    FlowBackbone's: the same diffusers calls): packed latents, image ids and the guidance embedding inside."""

    family: str = "flux"

    @property
    def guidance_embeds(self) -> bool:
        """True for guidance-distilled checkpoints (dev): ``guidance`` is a transformer input."""
        return bool(self.transformer.config.guidance_embeds)

    @property
    def latent_size(self) -> int:
        vsf = self.pipe.vae_scale_factor
        return 2 * (self.resolution // (vsf * 2))  # FluxPipeline.prepare_latents: even, for the 2x2 packing

    def pack(self, z: torch.Tensor) -> torch.Tensor:
        b, c, h, w = z.shape
        return self.pipe._pack_latents(z, b, c, h, w)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        return self.pipe._unpack_latents(x, self.resolution, self.resolution, self.pipe.vae_scale_factor)

    def image_ids(self) -> torch.Tensor:
        n = self.latent_size // 2
        return self.pipe._prepare_latent_image_ids(1, n, n, self.device, self.dtype)

    def schedule(self, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """FluxPipeline's timesteps for ``steps`` at this resolution (sigmas linspace(1, 1/N, N), shifted by
        mu from the packed image sequence length) and its sigmas (one more: the final 0)."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

        sched = self.new_scheduler()
        cfg = sched.config
        sigmas = None if cfg.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
        mu = calculate_shift((self.latent_size // 2) ** 2, cfg.get("base_image_seq_len", 256),
                             cfg.get("max_image_seq_len", 4096), cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
        timesteps, _ = retrieve_timesteps(sched, steps, self.device, sigmas=sigmas, mu=mu)
        return timesteps, sched.sigmas

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(T5 embeddings, CLIP pooled embedding, text ids) as FluxPipeline.encode_prompt returns them."""
        emb, pooled, ids = self.pipe.encode_prompt(list(prompts), None, device=self.device,
                                                   max_sequence_length=self.max_sequence_length)
        return emb.to(self.dtype), pooled.to(self.dtype), ids

    def _guidance(self, guidance: float, b: int) -> Optional[torch.Tensor]:
        if not self.guidance_embeds:
            return None
        return torch.full([1], guidance, device=self.device, dtype=torch.float32).expand(b)

    @torch.no_grad()
    def velocity(self, z: torch.Tensor, t: torch.Tensor | float, cond: tuple, uncond: Optional[tuple] = None,
                 guidance: float = 1.0, true_cfg_scale: float = 1.0) -> torch.Tensor:
        """v(z, t) on unpacked latents, ``t`` in 1000-sigma units, as FluxPipeline's denoising loop calls the
        transformer (``timestep / 1000``, ``guidance`` in the embedding). ``uncond`` counts only with
        ``true_cfg_scale`` > 1 (a second pass, FluxPipeline's true CFG)."""
        b = len(z)
        x = self.pack(z)
        t = torch.as_tensor(t, device=self.device).reshape(-1).expand(b).to(x.dtype)
        g, ids = self._guidance(guidance, b), self.image_ids()

        def run(c):
            return self.transformer(hidden_states=x, timestep=t / 1000, guidance=g, pooled_projections=c[1],
                                    encoder_hidden_states=c[0], txt_ids=c[2], img_ids=ids, return_dict=False)[0]

        v = run(cond)
        if uncond is not None and true_cfg_scale > 1:
            vn = run(uncond)
            v = vn + true_cfg_scale * (v - vn)
        return self.unpack(v)

    def randn_like(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Gaussian noise shaped as ``z`` (unpacked), drawn in the packed layout (B, h w / 4, 4 C) as the
        FLUX reference code draws it (``torch.randn_like`` on packed latents: FlowEdit's FlowEditFLUX, the
        RF-Inversion community pipeline), so a seed gives the same noise here and there."""
        b, c, h, w = z.shape
        n = torch.randn((b, (h // 2) * (w // 2), c * 4), generator=generator).to(device=z.device, dtype=z.dtype)
        return self.unpack(n)


_CACHE = LoadCache()


def resolve_flux_path(spec: str) -> tuple[str, bool]:
    if spec == TOY_SPEC:
        return str(build_toy_flux_folder()), True
    return ALIASES.get(spec, spec), False


def load_flux_backbone(spec: str = TOY_SPEC, device="cpu", dtype: torch.dtype = torch.float32) -> FluxBackbone:
    from diffusers import FluxPipeline

    device = torch.device(device)

    def load() -> FluxBackbone:
        path, is_toy = resolve_flux_path(spec)
        pipe = pipeline_from_pretrained(FluxPipeline, path, spec, device, dtype,
                                        "download it once with `huggingface-cli download` (FLUX.1-dev is gated: "
                                        "accept its licence first) or pass a local FLUX folder")
        settings = harness_settings(path)
        return FluxBackbone(pipe=pipe, model_id="toy:flux" if is_toy else path, is_toy=is_toy, device=device,
                            dtype=dtype, resolution=int(settings.get("resolution", REAL_RESOLUTION)),
                            max_sequence_length=int(settings.get("max_sequence_length",
                                                                 MAX_SEQUENCE_LENGTH.get(path, 512))))

    return _CACHE.get_or_load((spec, str(device), dtype), load)
