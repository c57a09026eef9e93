"""Attention-processor plumbing shared by the editors that control attention (Prompt-to-Prompt, iCD's
P2P, Pix2Pix-Zero's cross-attention guidance).

``HeadAttnProcessor`` is a diffusers attention processor with the pre/post-processing of diffusers'
``AttnProcessor2_0`` (spatial/group norm, cross norm, q/k norms, output projection, residual, rescale)
written once; a subclass only decides how the attention product is formed from the per-head query, key
and value. ``swapped_processors`` installs processors on a shared UNet for the duration of a block and
always puts the previous ones back, since every editor of a process shares one UNet.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional

import torch


class HeadAttnProcessor:
    """Subclasses implement ``attend(attn, q, k, v, mask)`` on (B, heads, tokens, head_dim) tensors and
    return the attention output in the same layout."""

    def attend(self, attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: Optional[torch.Tensor] = None,
                 attention_mask: Optional[torch.Tensor] = None, temb: Optional[torch.Tensor] = None,
                 *args, **kwargs) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, seq_len, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = self.attend(attn, query, key, value, attention_mask)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def attention_probs(attn, q: torch.Tensor, k: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Explicit probabilities (SDPA never exposes them), (B*heads, queries, keys), through diffusers'
    own ``get_attention_scores`` (its scale, upcasting and mask handling)."""
    b, h, n, d = q.shape
    flat_mask = None if mask is None else mask.reshape(b * h, -1, mask.shape[-1])
    return attn.get_attention_scores(q.reshape(b * h, n, d), k.reshape(b * h, -1, d), flat_mask)


@contextlib.contextmanager
def swapped_processors(unet, replace: Callable[[str, object], Optional[object]]) -> Iterator[dict]:
    """Give every attention layer ``replace(name, current)`` (None keeps the current processor) for the
    duration of the block; the previous processors are put back afterwards, whatever happens."""
    saved = dict(unet.attn_processors)
    procs = {}
    for name, proc in saved.items():
        new = replace(name, proc)
        procs[name] = proc if new is None else new
    unet.set_attn_processor(procs)
    try:
        yield procs
    finally:
        unet.set_attn_processor(saved)
