"""MasaCtrl (``masactrl``; PIE-Bench ``ddim+masactrl``) and Direct Inversion + MasaCtrl
(``direct_inversion_masactrl``; PIE-Bench ``directinversion+masactrl``).

Cao et al., "MasaCtrl: Tuning-Free Mutual Self-Attention Control for Consistent Image Synthesis and
Editing", ICCV 2023. Mutual self-attention: from denoising step ``S`` (``start_step``) and UNet layer
``L`` (``start_layer``) on, the target branch's self-attention queries attend to the source branch's
keys and values, so the target keeps the source's content while its prompt changes the layout/action.
PIE-Bench's code (``cure-lab/PnPInversion``: ``run_editing_masactrl.py``, ``models/masactrl/``; Ju et al.,
ICLR 2024 for the Direct Inversion variant): CompVis/stable-diffusion-v1-4, 50 DDIM steps (timesteps
981, ..., 1), CFG 7.5, ``step=4``, ``layper=10`` (``MutualSelfAttentionControl(4, 10)``), prompts
``["", target]``: the source branch is the **empty prompt** (so the image is inverted with ``""`` too,
DDIM at guidance 1). DDIM + MasaCtrl: both branches sample from the inverted ``x_T``; Direct Inversion +
MasaCtrl: the source branch's per-step error is corrected (its latent follows the inversion).
Published (PnP Inversion paper, main table; ``pie_bench/reference/pnp-inversion-paper.json``):
DDIM+MasaCtrl Structure 28.38e-3, PSNR 22.17, LPIPS 106.62e-3, MSE 86.97e-4, SSIM 79.67e-2, CLIP 23.96 /
21.16; DI+MasaCtrl 24.70e-3 / 22.64 / 87.94e-3 / 81.09e-4 / 81.33e-2 / 24.38 / 21.35.

The authors' semantics, kept: a layer is a transformer block counted in execution order (down, mid, up;
SD1.x has 16), controlled when its index is in ``range(start_layer, total_layers)``; a step when its
index is in ``range(start_step, total_steps)`` with ``total_steps`` 50 whatever the step count (the
authors never pass it); in a controlled layer both branches' queries attend to the source's keys and
values, separately in the unconditional and conditional halves; cross-attention is never touched.

Checked against the authors' code (adapted private copy on the toy backbone, ``tests/golden/README.md``):
final latents agree to 1.2e-4 for both variants. Deviations, each numerically invisible unless stated:
* Installed as diffusers attention processors (``editors.attention``, the P2P package's plumbing) with
  SDPA, not by patching ``Attention.forward`` with explicit probabilities.
* With the empty source prompt the source's unconditional and conditional rows are the same input, so one
  source row serves both halves (3 UNet rows per step instead of 4).
* The authors' extra "direct synthesis" pass (``image_fixed``, never used) is dropped; Direct
  Inversion's offsets are replaced by setting the source to the inversion (see ``direct_inversion_p2p``).
* On a UNet with another block count than ``total_layers`` (the toy and ShapesEdit UNets have 7) the
  controlled blocks are the same fraction of the UNet: index >= ceil(start_layer * blocks / total_layers)
  (7 blocks: 5 and 6, the finer decoder level, as 10-15 are SD1.x's finer two decoder levels). On SD1.x
  this is the authors' rule exactly.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
import torch
import torch.nn.functional as F

from editors.attention import HeadAttnProcessor, swapped_processors
from editors.base import EditOutput, Editor, EditorConfig, inversion_batch_outputs
from editors.inversion import DDIMSchedule, UNetCounter, invert_shared, unet_eps
from pie_bench.core.errors import ConfigError
from pie_bench.core.sample import Sample


@dataclass
class MasaCtrlConfig(EditorConfig):
    num_ddim_steps: int = 50
    guidance_scale: float = 7.5
    start_step: int = 4        # S: first denoising step with mutual self-attention
    start_layer: int = 10      # L: first controlled transformer block (of total_layers)
    total_steps: int = 50      # the authors' step_idx = range(start_step, total_steps)
    total_layers: int = 16     # the authors' MODEL_TYPE["SD"]: transformer blocks of an SD1.x UNet
    source_prompt: str = "empty"  # "empty" as PIE-Bench's driver (prompts ["", target]) or "source"
    share_inversion: bool = True


def transformer_self_layers(unet) -> list[str]:
    """Self-attention processor names of every transformer block in execution order (down, mid, up)."""
    from editors.p2p.layers import attention_layers

    order = {"down": 0, "mid": 1, "up": 2}
    layers = sorted((l for l in attention_layers(unet) if not l.is_cross), key=lambda l: order[l.place])
    return [l.name for l in layers]


class MutualSelfAttention:
    """The controller: which layers and steps are controlled, and for each batch row the row whose keys
    and values it attends to there (``kv_source[row]``; a source row maps to itself)."""

    def __init__(self, layers: set, start_step: int, total_steps: int, kv_source: list[int]):
        self.layers, self.start_step, self.total_steps = layers, start_step, total_steps
        self.kv_source = kv_source
        self.step = 0

    @property
    def active(self) -> bool:
        return self.start_step <= self.step < self.total_steps


class MutualSelfAttnProcessor(HeadAttnProcessor):
    def __init__(self, control: MutualSelfAttention):
        self.control = control

    def attend(self, attn, q, k, v, mask):
        if self.control.active:
            idx = torch.as_tensor(self.control.kv_source, device=k.device)
            k, v = k.index_select(0, idx), v.index_select(0, idx)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class MasaCtrlEditor(Editor):
    name = "masactrl"
    Config = MasaCtrlConfig
    paper = "MasaCtrl (Cao et al., ICCV 2023), DDIM inversion; PIE-Bench settings"
    requires = frozenset({"image", "target_prompt"})
    direct_inversion = False

    def load(self, backbone: str = "toy", device="cpu", dtype=torch.float32) -> None:
        from editors.backbone import load_backbone

        super().load(backbone, device, dtype)
        cfg = self.config
        if cfg.source_prompt not in ("empty", "source"):
            raise ConfigError(f"--editor-arg {self.name}.source_prompt={cfg.source_prompt!r}: expected empty or source")
        if cfg.num_ddim_steps < 1 or cfg.total_layers < 1:
            raise ConfigError(f"--editor-arg {self.name}: num_ddim_steps and total_layers must be >= 1")
        self.backbone = load_backbone(backbone, device, dtype)
        self.self_layers = transformer_self_layers(self.backbone.unet)
        n = len(self.self_layers)
        first = cfg.start_layer if n == cfg.total_layers else math.ceil(cfg.start_layer * n / cfg.total_layers)
        self.controlled = set(self.self_layers[first:])

    def _source_prompt(self, sample: Sample) -> str:
        return sample.source_prompt if self.config.source_prompt == "source" else ""

    def edit_batch(self, samples: list[Sample], generators: list[torch.Generator]) -> list[EditOutput]:
        cfg, bb = self.config, self.backbone
        b, g = len(samples), cfg.guidance_scale
        counter, sched = UNetCounter(), DDIMSchedule(bb.scheduler, cfg.num_ddim_steps)
        src_prompts = [self._source_prompt(s) for s in samples]
        texts = bb.encode_prompt(src_prompts + [s.target_prompt for s in samples] + [""])
        c_src, c_tgt, null = texts[:b], texts[b:2 * b], texts[2 * b:]
        t0 = time.perf_counter()
        traj, cached = invert_shared(bb, samples, src_prompts, c_src, sched, counter, cfg.share_inversion)
        inversion_s = (time.perf_counter() - t0) / b
        # UNet rows: [source ∅ (only when the source prompt is not ""), source c, target ∅, target c]
        split = cfg.source_prompt == "source" and g != 1
        ctx = ([null.expand(b, -1, -1)] if split else []) + [c_src, null.expand(b, -1, -1), c_tgt]
        ctx = torch.cat(ctx)
        s_u, s_c = (0, b) if split else (0, 0)
        t_u = s_c + b
        kv = list(range(t_u)) + [s_u + j for j in range(b)] + [s_c + j for j in range(b)]
        control = MutualSelfAttention(self.controlled, cfg.start_step, cfg.total_steps, kv)
        src, tgt = traj[-1].clone(), traj[-1].clone()
        n = sched.num_steps
        with swapped_processors(bb.unet, lambda name, _: MutualSelfAttnProcessor(control)
                                if name in self.controlled else None):
            for i, t in enumerate(sched.timesteps):
                control.step = i
                x = torch.cat(([src] if split else []) + [src, tgt, tgt])
                eps = unet_eps(bb.unet, x, t, ctx, counter)
                e_src = eps[s_u:s_u + b] + g * (eps[s_c:s_c + b] - eps[s_u:s_u + b]) if split else eps[:b]
                e_tgt = eps[t_u:t_u + b] + g * (eps[t_u + b:] - eps[t_u:t_u + b])
                src = traj[n - 1 - i] if self.direct_inversion else sched.step(src, e_src, t)
                tgt = sched.step(tgt, e_tgt, t)
        images = bb.decode(tgt)
        return inversion_batch_outputs(images, tgt, counter, inversion_s, cached,
                                       masactrl_layers=len(self.controlled))


class DirectInversionMasaCtrlEditor(MasaCtrlEditor):
    name = "direct_inversion_masactrl"
    paper = "Direct Inversion (Ju et al., ICLR 2024) + MasaCtrl (Cao et al., ICCV 2023); PIE-Bench settings"
    direct_inversion = True
