"""Qwen-Image-Edit (``qwen_image_edit``): instruction editing with a 20B MMDiT conditioned on Qwen2.5-VL.

Paper: Wu et al., "Qwen-Image Technical Report", 2025 (arXiv:2508.02324); weights ``Qwen/Qwen-Image-Edit``
(Apache-2.0). The source image enters twice: through Qwen2.5-VL-7B, which reads it with the instruction inside
a fixed system prompt (semantic control), and as VAE latents concatenated to the noisy latents along the
sequence (appearance control). Run as shipped: diffusers' ``QwenImageEditPipeline`` (``editors.pipeline_editor``
says what the harness adds around the call).

Settings: the model card's example and evalscope's Qwen-Image-Edit run: true classifier-free guidance 4.0
with negative prompt " ", 50 steps; the pipeline's own flow-matching schedule (``FlowMatchEulerDiscreteScheduler``
with the checkpoint's dynamic shift) and the card's bf16 weights on a GPU. No PIE-Bench numbers published.

Resolution: the pipeline works at a ~1024x1024 area whatever the source size (``calculate_dimensions(1024 * 1024,
aspect)``), so PIE-Bench's 512x512 source is upsampled (LANCZOS, the pipeline's resize) and the 1024x1024 output
is brought back to 512x512. The source is pre-sized here with the pipeline's own ``calculate_dimensions`` and
``image_processor.resize``: for a list of images the pipeline skips that resize and would hand Qwen2.5-VL the
unresized source, so a batched call would read a different image than a single one; pre-sized, the pipeline's
resizes are identities and batch and single calls see the same pixels.

Memory (bf16 weights, counted from the published configs on the meta device): transformer 20.43 B parameters,
Qwen2.5-VL-7B text encoder (with its LM head, which the pipeline loads) 8.29 B, VAE 0.13 B: ~57.7 GB, so the whole
pipeline on one GPU needs an 80 GB card (H100) or more.

Backbones: ``qwen-image-edit`` (the hub id), a hub id or a local folder of a ``QwenImageEditPipeline``, ``toy``:
a tiny random Qwen-Image-Edit built from configs in code (its processor and byte-level tokenizer written here,
offline). Toy deviations, kept for CPU speed: its VAE compresses 32x (the real one 8x) so the 1024x1024 working
resolution is 16x16 tokens, and its Qwen2.5-VL reads the source at 56x56 (4 image tokens); with a byte-level
vocabulary the pipeline's fixed ``prompt_template_encode_start_idx`` (64 tokens of the real tokenizer) drops only
part of the system prompt.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from PIL import Image

from editors.backbone import TOY_SEED, _bytes_to_unicode, toy_folder
from editors.base import EditorConfig
from editors.pipeline_editor import PipelineEditor
from pie_bench.core.errors import ConfigError


def calculate_dimensions(target_area: int, ratio: float) -> tuple[int, int, None]:
    """The pipeline's own choice of working size (diffusers' function, imported where it is used)."""
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions as pipeline_dims

    return pipeline_dims(target_area, ratio)

QWEN_IMAGE_EDIT = "Qwen/Qwen-Image-Edit"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")
TOY_VL_PIXELS = 56 * 56  # the toy processor's image size: 4x4 patches of 14, merged 2x2 into 4 tokens


@dataclass
class QwenImageEditConfig(EditorConfig):
    num_inference_steps: int = 50
    true_cfg_scale: float = 4.0
    negative_prompt: str = " "  # the card's: a single space turns true CFG on with an (almost) empty prompt


def toy_configs() -> dict:
    z = 4
    return {
        "transformer": dict(patch_size=2, in_channels=4 * z, out_channels=z, num_layers=2, attention_head_dim=16,
                            num_attention_heads=2, joint_attention_dim=16, guidance_embeds=False,
                            axes_dims_rope=[8, 4, 4]),
        # latents_mean/std not 0/1, so the pipeline's (de)normalisation is exercised
        "vae": dict(base_dim=4, z_dim=z, dim_mult=[1] * 6, num_res_blocks=1, temperal_downsample=[False] * 5,
                    latents_mean=[-0.1, 0.05, 0.2, -0.15], latents_std=[1.5, 0.8, 1.2, 2.0]),
        "text": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=2, rope_theta=1e6,
                     rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}),
        "vision": dict(depth=2, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=16,
                       fullatt_block_indexes=[1]),
        # the checkpoint's scheduler_config.json
        "scheduler": dict(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=8192, max_shift=0.9, shift=1.0,
                          shift_terminal=0.02, time_shift_type="exponential", use_dynamic_shifting=True),
        "vl_pixels": TOY_VL_PIXELS,
    }


def write_qwen_tokenizer_files(folder: Path) -> dict[str, int]:
    """A byte-level BPE Qwen2Tokenizer (the 256 byte symbols, no merges, Qwen's chat and vision special tokens)
    saved in ``folder``; returns its vocabulary."""
    from transformers import Qwen2Tokenizer

    vocab = {ch: i for i, ch in enumerate(_bytes_to_unicode().values())}
    for tok in SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=dict(vocab), merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    tokenizer.save_pretrained(folder)
    return vocab


def build_toy_qwen_edit_folder(seed: int = TOY_SEED, root: Optional[Path] = None) -> Path:
    """Create (once) the toy Qwen-Image-Edit as a diffusers folder and return its path."""
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer,
                              Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor)

    cfg = toy_configs()

    def write(tmp: Path) -> None:
        vocab = write_qwen_tokenizer_files(tmp / "tokenizer")
        px = cfg["vl_pixels"]
        Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(min_pixels=px, max_pixels=px),
                         video_processor=Qwen2VLVideoProcessor(min_pixels=px, max_pixels=px),
                         tokenizer=Qwen2Tokenizer.from_pretrained(tmp / "tokenizer")).save_pretrained(tmp / "processor")
        ids = dict(image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
                   vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"])
        text = dict(cfg["text"], vocab_size=len(vocab), bos_token_id=vocab["<|endoftext|>"],
                    eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<|endoftext|>"])
        torch.manual_seed(seed)
        QwenImageTransformer2DModel(**cfg["transformer"]).save_pretrained(tmp / "transformer")
        torch.manual_seed(seed + 1)
        AutoencoderKLQwenImage(**cfg["vae"]).save_pretrained(tmp / "vae")
        torch.manual_seed(seed + 2)
        Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=cfg["vision"],
                                                            vocab_size=len(vocab), **ids)).save_pretrained(
            tmp / "text_encoder")
        FlowMatchEulerDiscreteScheduler(**cfg["scheduler"]).save_pretrained(tmp / "scheduler")
        (tmp / "model_index.json").write_text(json.dumps({
            "_class_name": "QwenImageEditPipeline", "_diffusers_version": "0.42.1",
            "processor": ["transformers", "Qwen2VLProcessor"],
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
            "tokenizer": ["transformers", "Qwen2Tokenizer"],
            "transformer": ["diffusers", "QwenImageTransformer2DModel"],
            "vae": ["diffusers", "AutoencoderKLQwenImage"]}, indent=2))

    return toy_folder("qwen-image-edit", cfg, seed, write, root)


class QwenImageEditEditor(PipelineEditor):
    name = "qwen_image_edit"
    Config = QwenImageEditConfig
    paper = "Wu et al., Qwen-Image Technical Report, 2025 (Qwen-Image-Edit)"
    backbones = ("qwen-image-edit (Qwen/Qwen-Image-Edit: 20.4B MMDiT + Qwen2.5-VL-7B + VAE, ~57.7 GB bf16 "
                 "weights), a hub id or local folder, toy")
    pipeline_name = "QwenImageEditPipeline"
    aliases = {"qwen-image-edit": QWEN_IMAGE_EDIT}

    @classmethod
    def build_toy(cls) -> Path:
        return build_toy_qwen_edit_folder()

    def load(self, backbone: str = "toy", device="cpu", dtype=torch.float32) -> None:
        if self.config.num_inference_steps < 2:
            # the checkpoint's schedule stretches sigmas so the last is shift_terminal; with one step the stretch
            # divides 0 by 0 and the pipeline's sigmas are NaN (diffusers 0.42.1)
            raise ConfigError(f"{self.name}: num_inference_steps must be at least 2 (got "
                              f"{self.config.num_inference_steps}): one step gives NaN sigmas with the "
                              "checkpoint's shift_terminal schedule")
        super().load(backbone, device, dtype)

    def call_settings(self, batch: int) -> dict:
        c = self.config
        return dict(num_inference_steps=c.num_inference_steps, true_cfg_scale=c.true_cfg_scale,
                    negative_prompt=[c.negative_prompt] * batch)

    def passes_per_step(self) -> int:
        return 2 if self.config.true_cfg_scale > 1 else 1

    def prepare_image(self, image: Image.Image) -> Image.Image:
        width, height, _ = calculate_dimensions(1024 * 1024, image.width / image.height)
        return self.pipe.image_processor.resize(image, height, width)

    def working_size(self, image: Image.Image) -> tuple[int, int]:
        # QwenImageEditPipeline.__call__: the ~1024x1024 area at the source's aspect, floored to the 2x2-packed
        # latent grid
        width, height, _ = calculate_dimensions(1024 * 1024, image.width / image.height)
        m = self.pipe.vae_scale_factor * 2
        return width // m * m, height // m * m

    @staticmethod
    def decode_pixels(pipe, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        # the tail of QwenImageEditPipeline.__call__, written as it is there (1 / (1 / std)) so the floats match
        z = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor).to(pipe.vae.dtype)
        cfg = pipe.vae.config
        mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1).to(z)
        inv_std = 1.0 / torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1).to(z)
        return pipe.vae.decode(z / inv_std + mean, return_dict=False)[0][:, :, 0]  # the one frame
