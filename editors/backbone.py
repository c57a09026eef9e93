"""The Stable Diffusion backbone shared by the editors: UNet, VAE, CLIP text encoder, tokenizer and
DDIM scheduler, loaded once per process.

``--backbone`` accepts ``toy``, ``sd14``, ``sd15``, ``shapes``, a Hugging Face hub id, or a local
folder in the diffusers layout. Every spec ends in the same ``from_pretrained`` calls: the toy
backbone is built from configs in code (tiny, seeded, random), written to disk in the diffusers
folder layout with ``save_pretrained`` and loaded back from there, so the path that real weights
take is the path the tests exercise. Hub loading honours ``HF_HUB_OFFLINE`` and the usual caches.

Variants: ``sd`` (4-channel UNet), ``ip2p`` (8-channel UNet, InstructPix2Pix) and ``icd`` (UNet with a
guidance-embedding input, ``time_cond_proj_dim``, as iCD's guidance-distilled teacher).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from pie_bench.core.errors import ConfigError
from pie_bench.core.paths import cache_root, shapes_models_dir

SD14 = "CompVis/stable-diffusion-v1-4"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
IP2P = "timbrooks/instruct-pix2pix"
ICD_TEACHER_UNET = "dbaranchuk/sd15-cfg-distill-unet"

# alias -> hub id, per variant. The IP2P and iCD editors need their own UNets whatever SD alias is given.
ALIASES = {
    "sd": {"sd14": SD14, "sd15": SD15},
    "ip2p": {"sd14": IP2P, "sd15": IP2P, "ip2p": IP2P},
    "icd": {"sd14": SD15, "sd15": SD15},
}

# PIE-Bench's scheduler: DDIM, beta 0.00085-0.012 scaled_linear, no clipping, alpha_T not set to one.
# steps_offset 1: PnPInversion builds its DDIMScheduler without steps_offset, but hands it to
# StableDiffusionPipeline, whose constructor rewrites any steps_offset != 1 to 1 (diffusers 0.10 as pinned,
# and 0.42). So the timesteps PIE-Bench runs are 981, 961, ..., 1 for 50 steps (901, ..., 1 for 10),
# checked by running the official code (tests/test_golden_official.py).
DDIM_KWARGS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                   set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000)

TOY_SEED = 0
TOY_RESOLUTION = 64  # pixels; latent 16x16 with the toy VAE's factor 4


# ---------------------------------------------------------------------------------------------
# tokenizer from local files: open_clip ships the real CLIP BPE vocabulary


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable-character table (transformers 5 no longer exports it)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def write_clip_tokenizer_files(folder: Path) -> Path:
    """Write CLIP's vocab.json / merges.txt (49408 tokens, as openai/clip-vit-large-patch14) built from
    open_clip's bundled BPE file, then save a CLIPTokenizer there."""
    import open_clip
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    bpe = Path(open_clip.__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    pairs = [tuple(m.split()) for m in merges]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(p) for p in pairs] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p in pairs) + "\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77,
                        pad_token="<|endoftext|>")
    tok.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------
# toy configs


def toy_configs(variant: str) -> dict:
    text = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
                projection_dim=32)
    vae = dict(in_channels=3, out_channels=3, block_out_channels=(16, 32, 32), layers_per_block=1, latent_channels=4,
               down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
               norm_num_groups=8, sample_size=TOY_RESOLUTION)
    unet = dict(sample_size=TOY_RESOLUTION // 4, in_channels=8 if variant == "ip2p" else 4, out_channels=4,
                block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, attention_head_dim=8,
                norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    if variant == "icd":
        unet["time_cond_proj_dim"] = 32
    return {"text_encoder": text, "vae": vae, "unet": unet}


def build_toy_folder(variant: str = "sd", seed: int = TOY_SEED, root: Optional[Path] = None) -> Path:
    """Create (once) the toy backbone as a diffusers folder and return its path."""
    cfg = toy_configs(variant)

    def write(tmp: Path) -> None:
        write_toy_sd(tmp, cfg, variant, seed)

    return toy_folder(variant, cfg, seed, write, root)


def toy_folder(name: str, cfg: dict, seed: int, write, root: Optional[Path] = None) -> Path:
    """A toy model folder built once per (config, seed) under the cache: ``write(tmp)`` fills a temporary
    folder that is then renamed into place, so concurrent processes never see a half-written model."""
    quiet_hf_progress()
    digest = hashlib.sha256(json.dumps([cfg, seed], sort_keys=True, default=list).encode()).hexdigest()[:10]
    folder = (root or cache_root() / "toy") / f"{name}-{digest}"
    if (folder / "model_index.json").exists():
        return folder
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    write(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process won the race
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def write_toy_sd(tmp: Path, cfg: dict, variant: str, seed: int) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    UNet2DConditionModel(**cfg["unet"]).save_pretrained(tmp / "unet")
    torch.manual_seed(seed + 1)
    AutoencoderKL(**cfg["vae"]).save_pretrained(tmp / "vae")
    torch.manual_seed(seed + 2)
    CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])).save_pretrained(tmp / "text_encoder")
    write_clip_tokenizer_files(tmp / "tokenizer")
    DDIMScheduler(**DDIM_KWARGS).save_pretrained(tmp / "scheduler")
    (tmp / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1", "pie_bench_toy": variant,
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"]}, indent=2))


# ---------------------------------------------------------------------------------------------
# backbone


@dataclass
class Backbone:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object  # a DDIMScheduler configured as PIE-Bench
    model_id: str
    variant: str
    is_toy: bool
    device: torch.device
    dtype: torch.dtype
    resolution: int  # the pixel size the model works at (512 for SD1.x, 64 for toy)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.vae_scale_factor

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def max_length(self) -> int:
        return int(self.tokenizer.model_max_length)

    def new_scheduler(self, cls=None, **overrides):
        """A fresh scheduler (schedulers keep per-run state) from this backbone's config."""
        from diffusers import DDIMScheduler

        return (cls or DDIMScheduler).from_config(self.scheduler.config, **overrides)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length, truncation=True,
                              return_tensors="pt").input_ids

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = self.tokenize(prompts).to(self.device)
        return self.text_encoder(ids)[0].to(self.dtype)

    def image_to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """uint8 (512,512,3) -> (1,3,R,R) in [-1,1] at the backbone's resolution."""
        return image_to_tensor(image, self.resolution).to(self.device, self.dtype)

    @torch.no_grad()
    def encode_image(self, image: np.ndarray, *, sample: bool = False, generator: Optional[torch.Generator] = None,
                     scale: bool = True) -> torch.Tensor:
        """VAE posterior mean (or a sample) times the scaling factor, as the P2P/NTI reference does."""
        dist = self.vae.encode(self.image_to_tensor(image)).latent_dist
        z = dist.sample(generator=generator) if sample else dist.mean
        return z * self.scaling_factor if scale else z

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, quantize: str = "truncate", size: Optional[int] = 512) -> np.ndarray:
        """Latents -> uint8 (B,size,size,3), resized (bicubic) from the backbone's resolution when that is not
        ``size``; ``size=None`` keeps the native resolution.

        ``quantize``: how [0, 1] floats become uint8 after ``x * 255``. ``truncate`` (default) is what
        PIE-Bench's P2P/NTI code does (``latent2image``: ``(image * 255).astype(np.uint8)``); ``round``
        rounds to nearest, for editors whose reference code rounds (e.g. diffusers' ``numpy_to_pil``)."""
        if quantize not in ("truncate", "round"):
            raise ValueError(f"decode: quantize must be 'truncate' or 'round', got {quantize!r}")
        return images_to_uint8(self.vae.decode(latents.to(self.dtype) / self.scaling_factor).sample, size, quantize)


def image_to_tensor(image: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 (H,W,3) -> (1,3,R,R) float32 in [-1,1], LANCZOS-resized to ``resolution`` when it differs."""
    if image.shape[0] != resolution:
        image = np.asarray(Image.fromarray(image).resize((resolution, resolution), Image.LANCZOS))
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def images_to_uint8(images: torch.Tensor, size: Optional[int] = 512, quantize: str = "truncate") -> np.ndarray:
    """VAE output in [-1,1] (B,3,R,R) -> uint8 (B,size,size,3), bicubic-resized when R is not ``size``."""
    images = (images.float() / 2 + 0.5).clamp(0, 1) * 255
    images = (images.round() if quantize == "round" else images.floor()).to(torch.uint8)
    images = images.permute(0, 2, 3, 1).cpu().numpy()
    if size is not None and images.shape[1] != size:
        images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in images])
    return images


class LoadCache(dict):
    """Models loaded once per process, by key. ``get_or_load(key, load)`` runs ``load()`` under this cache's lock
    the first time ``key`` is asked for, so two threads asking for one model load it once; each loader keeps its
    own cache (and lock), so a loader may call another while loading."""

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()

    def get_or_load(self, key, load):
        with self._lock:
            if key not in self:
                self[key] = load()
            return self[key]


_CACHE: LoadCache = LoadCache()


def resolve_model_path(spec: str, variant: str = "sd") -> tuple[str, bool]:
    """Map ``--backbone`` to (local dir or hub id, is_toy)."""
    if spec == "toy":
        return str(build_toy_folder(variant)), True
    if spec == "shapes":
        return str(shapes_models_dir(variant)), False  # ShapesEdit's trained models, bundled as data
    return ALIASES.get(variant, {}).get(spec, spec), False


def load_backbone(spec: str = "toy", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  variant: str = "sd", unet_id: Optional[str] = None) -> Backbone:
    """Load (or reuse) a backbone. ``unet_id`` swaps in another UNet (iCD's guidance-distilled teacher)."""
    device = torch.device(device)

    def load() -> Backbone:
        path, is_toy = resolve_model_path(spec, variant)
        return _load_components(path, is_toy, variant, device, dtype, unet_id, spec)

    return _CACHE.get_or_load((spec, variant, str(device), dtype, unet_id), load)


def quiet_hf_progress() -> None:
    """The harness shows its own progress; silence per-shard/per-step bars of diffusers and transformers."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def pipeline_from_pretrained(pipeline_cls, path: str, spec: str, device, dtype: torch.dtype, hint: str, **kwargs):
    """``pipeline_cls.from_pretrained(path)`` on ``device`` with its progress bars off (the flow, FLUX and
    instruction-editor backbones load this way). A folder or hub id that cannot be loaded is one ``ConfigError``
    naming the spec, the path and how to get the weights (``hint``)."""
    quiet_hf_progress()
    try:
        pipe = pipeline_cls.from_pretrained(path, dtype=dtype, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        where = f"local folder {path}" if Path(path).is_dir() else f"hub id {path}"
        raise ConfigError(f"backbone {spec!r}: cannot load {where}{offline} as {pipeline_cls.__name__}: "
                          f"{str(exc).splitlines()[0][:200]}; {hint}") from None
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def unet_from_state_dict_file(base: str, file: str, dtype: torch.dtype):
    """A UNet stored as a bare state dict, as iCD's authors ship the guidance-distilled teacher
    (``sd15_cfg_distill.pt``): the base model's UNet config with ``time_cond_proj_dim`` read off the weights."""
    from diffusers import UNet2DConditionModel

    if file.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(file)
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
    config = dict(UNet2DConditionModel.load_config(base, subfolder="unet"))
    proj = state.get("time_embedding.cond_proj.weight")
    config["time_cond_proj_dim"] = int(proj.shape[1]) if proj is not None else None
    unet = UNet2DConditionModel.from_config(config)
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"UNet weights {file} do not fit the UNet of {base} (missing "
                          f"{missing[:1] or 'none'}, unexpected {unexpected[:1] or 'none'}); pass the matching base model")
    return unet.to(dtype)


def _load_components(path: str, is_toy: bool, variant: str, device, dtype, unet_id, spec) -> Backbone:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    quiet_hf_progress()

    local = Path(path).is_dir()
    try:
        common = dict(torch_dtype=dtype)
        unet_src = unet_id or path
        if unet_id and Path(unet_id).is_file():
            unet = unet_from_state_dict_file(path, unet_id, dtype)
        else:
            unet = (UNet2DConditionModel.from_pretrained(unet_src, **common) if unet_id and Path(unet_id).joinpath("config.json").exists()
                    else UNet2DConditionModel.from_pretrained(unet_src, subfolder=None if unet_id else "unet", **common))
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **common)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", dtype=dtype)
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
        scheduler = DDIMScheduler.from_pretrained(path, subfolder="scheduler")
    except (OSError, ValueError, EnvironmentError) as exc:
        where = f"local folder {path}" if local else f"hub id {path}"
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ConfigError(f"backbone {spec!r}: cannot load {where}{offline}: {str(exc).splitlines()[0][:200]}; "
                          "download it once with `huggingface-cli download` or pass a local diffusers folder") from None
    # PIE-Bench's DDIM settings, whatever the checkpoint's scheduler config says
    scheduler = DDIMScheduler.from_config(scheduler.config, **DDIM_KWARGS)
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False)
        m.eval()
        m.to(device)
    vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    resolution = int(unet.config.sample_size) * vae_factor
    return Backbone(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                    model_id=path if not is_toy else f"toy:{variant}", variant=variant, is_toy=is_toy,
                    device=torch.device(device), dtype=dtype, resolution=resolution)
