"""Shared bits of the reference-style implementations."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch


@dataclass
class RefResult:
    latents: torch.Tensor            # the edited latent (1, C, h, w), fp32
    image: Optional[np.ndarray]      # uint8 (512, 512, 3)
    extras: dict = field(default_factory=dict)


class ClassicAttnProcessor:
    """Attention with explicit probabilities (softmax(QK^T)V as the original LDM/P2P code), optionally
    routing the probabilities through a ``hook(probs, is_cross, layer_name) -> probs``. Used for every
    layer by the reference implementations: no fused SDPA anywhere."""

    def __init__(self, name: str = "", hook=None):
        self.name, self.hook = name, hook

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *a, **k):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        ndim = hidden_states.ndim
        if ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        is_cross = encoder_hidden_states is not None
        context = encoder_hidden_states if is_cross else hidden_states
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if is_cross and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k_ = attn.head_to_batch_dim(attn.to_k(context))
        v = attn.head_to_batch_dim(attn.to_v(context))
        probs = (torch.einsum("bid,bjd->bij", q, k_) * attn.scale).softmax(dim=-1)
        if self.hook is not None:
            probs = self.hook(probs, is_cross, self.name)
        out = attn.batch_to_head_dim(torch.einsum("bij,bjd->bid", probs, v))
        out = attn.to_out[1](attn.to_out[0](out))
        if ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextmanager
def explicit_attention(unet, hook=None):
    """Every attention layer of ``unet`` runs ``ClassicAttnProcessor`` (with ``hook``) inside the block;
    the previous processors come back afterwards (the UNet is shared with the fast editors)."""
    saved = dict(unet.attn_processors)
    unet.set_attn_processor({name: ClassicAttnProcessor(name, hook) for name in saved})
    try:
        yield
    finally:
        unet.set_attn_processor(saved)


@contextmanager
def count_unet_rows(*unets):
    """Counts UNet forward evaluations (batch rows) inside the block: ``with count_unet_rows(u) as n: ...;
    n[0]``. Works for any implementation, since it hooks the modules, not the code calling them; pass
    every UNet an editor may call (iCD keeps one fused copy per adapter)."""
    n = [0]

    def hook(module, args, kwargs):
        x = args[0] if args else kwargs["sample"] if "sample" in kwargs else kwargs["hidden_states"]  # UNet / DiT
        n[0] += int(x.shape[0])

    seen, handles = set(), []
    for u in unets:
        if id(u) not in seen:
            seen.add(id(u))
            handles.append(u.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield n
    finally:
        for h in handles:
            h.remove()


def unets_of(editor) -> list:
    """Every UNet module an editor may run: its backbone's, plus per-adapter copies (iCD's ``models``)."""
    bb = getattr(editor, "backbone", None) or getattr(editor, "bb")
    extra = list(getattr(editor, "models", {}).values()) if isinstance(getattr(editor, "models", None), dict) else []
    out = []
    # a flow backbone's transformer; an instruction editor's pipeline's
    for u in [getattr(bb, "unet", None) or getattr(bb, "transformer", None) or bb.pipe.transformer, *extra]:
        if all(u is not o for o in out):
            out.append(u)
    return out


def decode_uint8(bb, latents: torch.Tensor) -> np.ndarray:
    """The reference's latent2image: decode in the VAE's dtype, to uint8 at 512."""
    return bb.decode(latents)
