"""The Prompt-to-Prompt controller and the diffusers attention processors it installs.

One ``P2PController`` edits one (source, target) pair. The sampling loop owns the step count and the
batch layout; the controller only needs to be told which UNet batch rows hold the source and target
conditional branches (``source_row`` / ``target_row``, negative indices welcome) and which step it is.
See ``editors/p2p/__init__.py`` for the API walk-through.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from pie_bench.core.errors import ConfigError

from editors.attention import HeadAttnProcessor, swapped_processors
from editors.p2p import align
from editors.p2p.layers import AttnLayer, attention_layers, blend_layers

MODES = ("refine", "replace", "auto")


class P2PController:
    """Prompt-to-Prompt attention control for one source/target pair.

    Cross-attention of the target row: for steps where the per-token weight ``alpha`` is 1, the
    target's probabilities become the source's, aligned to the target tokens (Refine: token alignment;
    Replace: word-swap matrix) and multiplied by the equalizer; ``alpha`` mixes them with the target's
    own. Self-attention of the target row, in layers at ``self_min_downscale`` or coarser and for steps
    in ``self_steps``, uses the source's probabilities (computed as SDPA with the source's query and key
    and the target's value, so no map is materialised). LocalBlend sums the (edited) cross-attention of
    the blend words over heads, layers and steps in the coarsest down/up layers, and after each step from
    ``int(blend_start * num_steps)`` on, pulls the target latent back to the source outside the mask.
    """

    def __init__(self, *, num_steps: int, max_length: int, mode: str, cross_alphas: torch.Tensor,
                 self_steps: tuple[int, int], refine: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                 replace: Optional[torch.Tensor] = None, equalizer: Optional[torch.Tensor] = None,
                 blend_tokens: Optional[tuple[Sequence[int], Sequence[int]]] = None, blend_start: float = 0.2,
                 blend_threshold: float = 0.3, source_row: int = -2, target_row: int = -1,
                 self_min_downscale: int = 2, blend_downscale: Optional[int] = None):
        if mode not in ("refine", "replace"):
            raise ConfigError(f"P2P controller mode {mode!r}: expected refine or replace")
        if (mode == "refine") != (refine is not None) or (mode == "replace") != (replace is not None):
            raise ValueError("give the refine mapper for mode=refine, the replace matrix for mode=replace")
        if cross_alphas.shape != (num_steps + 1, max_length):
            raise ValueError(f"cross_alphas must be ({num_steps + 1}, {max_length}), got {tuple(cross_alphas.shape)}")
        self.num_steps, self.max_length, self.mode = num_steps, max_length, mode
        self.cross_alphas = cross_alphas.float()
        self.self_steps = self_steps
        self.refine_mapper, self.refine_alphas = refine if refine is not None else (None, None)
        self.replace_matrix = replace
        self.equalizer = equalizer
        self.source_row, self.target_row = source_row, target_row
        self.self_min_downscale = self_min_downscale
        self.blend_downscale = blend_downscale
        self.blend_start, self.blend_threshold = blend_start, blend_threshold
        self.blend_weights: Optional[torch.Tensor] = None  # (2, T): source-row / target-row word indicator
        if blend_tokens is not None and (blend_tokens[0] or blend_tokens[1]):
            w = torch.zeros(2, max_length)
            w[0, list(blend_tokens[0])] = 1.0
            w[1, list(blend_tokens[1])] = 1.0
            self.blend_weights = w
        self.installed: list[AttnLayer] = []
        self._device_cache: dict = {}
        self.reset()

    # -- construction from prompts ---------------------------------------------------------------
    @classmethod
    def from_prompts(cls, tokenizer, source_prompt: str, target_prompt: str, *, num_steps: int,
                     mode: str = "refine", cross_replace_steps: Union[float, tuple, Mapping] = 0.4,
                     self_replace_steps: Union[float, tuple] = 0.6,
                     blend_words: Optional[tuple[Sequence[str], Sequence[str]]] = None,
                     equalizer: Union[Mapping[str, float], torch.Tensor, None] = None, blend_start: float = 0.2,
                     blend_threshold: float = 0.3, max_length: Optional[int] = None, source_row: int = -2,
                     target_row: int = -1, self_min_downscale: int = 2,
                     blend_downscale: Optional[int] = None, word_match: str = "lenient") -> "P2PController":
        """Build a controller from the two prompts.

        ``mode``: ``refine`` (token alignment, any prompts), ``replace`` (word swap, same word count) or
        ``auto`` (replace when the word counts match, else refine). ``blend_words``: ``((source words),
        (target words))`` for LocalBlend. ``equalizer``: ``{target word: weight}`` or a ``float[T]``.
        ``word_match``: how words are found in the prompts (``align.word_token_indices``): ``lenient``
        also ignores case and punctuation when the exact match fails, ``exact`` is the reference's rule."""
        if mode not in MODES:
            raise ConfigError(f"P2P controller mode {mode!r}: expected one of {', '.join(MODES)}")
        T = int(max_length or tokenizer.model_max_length)
        if mode == "auto":
            mode = align.choose_mode(source_prompt, target_prompt)
        refine = align.refinement_mapper(tokenizer, source_prompt, target_prompt, T) if mode == "refine" else None
        replace = align.replacement_mapper(tokenizer, source_prompt, target_prompt, T) if mode == "replace" else None
        eq = (equalizer if isinstance(equalizer, torch.Tensor)
              else align.equalizer(tokenizer, target_prompt, equalizer, T, word_match))
        tokens = None
        if blend_words is not None:
            src_words, tgt_words = blend_words
            tokens = (sorted({i for w in src_words
                              for i in align.word_token_indices(tokenizer, source_prompt, w, T, word_match)}),
                      sorted({i for w in tgt_words
                              for i in align.word_token_indices(tokenizer, target_prompt, w, T, word_match)}))
        return cls(num_steps=num_steps, max_length=T, mode=mode,
                   cross_alphas=align.time_word_alphas(tokenizer, target_prompt, num_steps, cross_replace_steps, T,
                                                       word_match),
                   self_steps=align.step_range(self_replace_steps, num_steps), refine=refine, replace=replace,
                   equalizer=eq, blend_tokens=tokens, blend_start=blend_start, blend_threshold=blend_threshold,
                   source_row=source_row, target_row=target_row, self_min_downscale=self_min_downscale,
                   blend_downscale=blend_downscale)

    # -- state -----------------------------------------------------------------------------------
    def reset(self) -> None:
        self.step = 0
        self.blend_sum: Optional[torch.Tensor] = None  # (2, N) running sum over steps, layers and heads
        self.blend_count = 0
        self.last_mask: Optional[torch.Tensor] = None
        self.blend_applied = 0

    @property
    def uses_local_blend(self) -> bool:
        return self.blend_weights is not None

    @property
    def cross_edit_steps(self) -> int:
        return int((self.cross_alphas.abs().sum(1) > 0).sum())

    def begin_step(self, index: int) -> None:
        """Call before the UNet evaluation of sampling step ``index`` (0 = the noisiest)."""
        if not 0 <= index <= self.num_steps:
            raise ValueError(f"step {index} outside 0..{self.num_steps}")
        self.step = index

    def describe(self) -> dict:
        return {"p2p_mode": self.mode, "p2p_local_blend": self.uses_local_blend,
                "p2p_reweight": self.equalizer is not None, "p2p_layers": len(self.installed),
                "p2p_blend_steps": self.blend_applied}

    # -- processors ------------------------------------------------------------------------------
    @contextmanager
    def attach(self, unet) -> Iterator["P2PController"]:
        """Install P2P processors on the layers this controller modifies (every other layer keeps its
        processor, normally diffusers' fused-SDPA ``AttnProcessor2_0``); restore them on exit."""
        with P2PBatch([self]).attach(unet):
            yield self

    @property
    def self_active(self) -> bool:
        return self.self_steps[0] <= self.step < self.self_steps[1]

    @property
    def cross_active(self) -> bool:
        return bool(self.cross_alphas[self.step].any())

    def _on(self, name: str, device, dtype=torch.float32) -> torch.Tensor:
        key = (name, device, dtype)
        if key not in self._device_cache:
            self._device_cache[key] = getattr(self, name).to(device=device, dtype=dtype)
        return self._device_cache[key]

    def _rows(self, batch: int) -> tuple[int, int]:
        s, t = self.source_row % batch, self.target_row % batch
        if s == t:
            raise ValueError(f"source_row {self.source_row} and target_row {self.target_row} are the same row "
                             f"of a batch of {batch}")
        return s, t

    def _edit_cross(self, base: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        dev = base.device
        if self.mode == "refine":
            ra = self._on("refine_alphas", dev)
            new = base[..., self._on("refine_mapper", dev, torch.int64)] * ra + own * (1 - ra)
        else:
            new = torch.matmul(base, self._on("replace_matrix", dev))
        if self.equalizer is not None:
            new = new * self._on("equalizer", dev)
        alpha = self._on("cross_alphas", dev)[self.step]
        return new * alpha + own * (1 - alpha)

    def _store(self, src: torch.Tensor, tgt: torch.Tensor) -> None:
        w = self._on("blend_weights", src.device)
        maps = torch.stack([(src @ w[0]).sum(0), (tgt @ w[1]).sum(0)])  # (2, N): summed over heads
        self.blend_sum = maps if self.blend_sum is None else self.blend_sum + maps
        self.blend_count += src.shape[0]

    # -- LocalBlend ------------------------------------------------------------------------------
    def blend_map(self, latent_hw: tuple[int, int]) -> Optional[torch.Tensor]:
        """LocalBlend's continuous map before thresholding: float (2, 1, h, w) in [0, 1] (rows: source
        words in the source branch, target words in the target branch; all-zero for a row whose words
        were not found), or None before any map was stored."""
        if self.blend_sum is None:
            return None
        h, w = latent_hw
        ds = self._blend_downscale_used
        maps = (self.blend_sum / max(self.blend_count, 1)).view(2, 1, h // ds, w // ds)
        maps = F.max_pool2d(maps, kernel_size=3, stride=1, padding=1)
        maps = F.interpolate(maps, size=(h, w))  # nearest, as the reference
        peak = maps.amax(dim=(2, 3), keepdim=True)
        return maps / peak.clamp_min(torch.finfo(maps.dtype).tiny)

    def blend_mask(self, latent_hw: tuple[int, int]) -> Optional[torch.Tensor]:
        """Bool (1, h, w) region the target may change (source mask OR target mask), or None."""
        maps = self.blend_map(latent_hw)
        if maps is None:
            return None
        # a row whose words were not found is all zero and selects nothing (reference: 0/0 = NaN -> False)
        mask = maps.gt(self.blend_threshold)
        return mask[0] | mask[1]

    def after_step(self, latents: torch.Tensor, source_row: int = 0, target_row: int = 1) -> torch.Tensor:
        """LocalBlend after the scheduler step of the current step: returns the latents with the target
        row pulled back to the source row outside the mask (unchanged before ``blend_start``)."""
        if not self.uses_local_blend or self.step + 1 <= int(self.blend_start * self.num_steps):
            return latents
        mask = self.blend_mask(tuple(latents.shape[-2:]))
        if mask is None:
            return latents
        self.last_mask = mask
        self.blend_applied += 1
        b = latents.shape[0]
        s, t = source_row % b, target_row % b
        out = latents.clone()
        m = mask.to(latents.dtype)
        out[t] = latents[s] + m * (latents[t] - latents[s])
        return out


class P2PBatch:
    """Several ``P2PController``s driven through one UNet batch (``--batch-size`` for the P2P editors):
    each member edits only its own source/target rows (``source_row``/``target_row``, negative indices
    counted from the end of the batch), so a batch of edits computes what the edits do one at a time.
    A single controller's ``attach`` is a batch of one."""

    def __init__(self, controllers: Sequence[P2PController]):
        if not controllers:
            raise ValueError("P2PBatch needs at least one controller")
        rows = [r for c in controllers for r in (c.source_row, c.target_row)]
        if len(set(rows)) != len(rows):
            raise ValueError(f"P2PBatch: controllers share UNet batch rows {rows}")
        self.controllers = list(controllers)

    def begin_step(self, index: int) -> None:
        for c in self.controllers:
            c.begin_step(index)

    def after_step(self, latents: torch.Tensor) -> torch.Tensor:
        """LocalBlend of every member; ``latents`` rows ``2j``/``2j+1`` are member ``j``'s source/target."""
        if latents.shape[0] != 2 * len(self.controllers):
            raise ValueError(f"{len(self.controllers)} controllers need {2 * len(self.controllers)} latent rows, "
                             f"got {latents.shape[0]}")
        return torch.cat([c.after_step(latents[2 * j:2 * j + 2]) for j, c in enumerate(self.controllers)])

    @contextmanager
    def attach(self, unet) -> Iterator["P2PBatch"]:
        """Install P2P processors on the layers some member modifies (every other layer keeps its
        processor, normally diffusers' fused-SDPA ``AttnProcessor2_0``); restore them on exit."""
        layers = attention_layers(unet)
        members = self.controllers
        blending = [c for c in members if c.uses_local_blend]
        downscales = {c.blend_downscale for c in blending}
        if len(downscales) > 1:
            raise ValueError(f"P2PBatch: members blend at different downscales {sorted(downscales, key=str)}")
        blend = {l.name for l in blend_layers(layers, downscales.pop())} if blending else set()
        if blending and not blend:
            raise ConfigError("LocalBlend needs cross-attention layers in the UNet's down/up blocks; found none")
        any_cross = any(bool(c.cross_alphas.any()) for c in members)
        self_from = [c.self_min_downscale for c in members if c.self_steps[1] > c.self_steps[0]]
        chosen: dict = {}
        for layer in layers:
            if layer.is_cross and (any_cross or layer.name in blend):
                chosen[layer.name] = P2PAttnProcessor(self, layer, store=layer.name in blend)
            elif not layer.is_cross and self_from and layer.downscale >= min(self_from):
                chosen[layer.name] = P2PAttnProcessor(self, layer)
        installed = [layer for layer in layers if layer.name in chosen]
        used = next((l.downscale for l in layers if l.name in blend), None)
        for c in members:
            c.installed = list(installed)
            c._blend_downscale_used = used
            c.reset()
        with swapped_processors(unet, lambda name, _: chosen.get(name)):
            yield self

    def attend(self, proc: "P2PAttnProcessor", attn, q, k, v, mask) -> torch.Tensor:
        """q, k, v: (B, heads, tokens, head_dim). Returns the attention output, same layout."""
        batch, layer = q.shape[0], proc.layer
        if not layer.is_cross:
            swaps = [c._rows(batch) for c in self.controllers
                     if c.self_active and layer.downscale >= c.self_min_downscale]
            if swaps:
                # target probabilities := source probabilities, i.e. softmax(q_s k_s^T) v_t
                q, k = q.clone(), k.clone()
                for s, t in swaps:
                    q[t], k[t] = q[s], k[s]
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        edits = [c for c in self.controllers if c.cross_active]
        stores = [c for c in self.controllers if proc.store and c.uses_local_blend]
        if not edits and not stores:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        for c in edits + stores:
            if k.shape[2] != c.max_length:
                raise ConfigError(f"P2P controller built for {c.max_length} text tokens but layer {layer.name} "
                                  f"attends to {k.shape[2]}; build it with max_length={k.shape[2]}")
        scores = torch.matmul(q, k.transpose(-1, -2)).float() * attn.scale
        if mask is not None:
            scores = scores + mask.float()
        probs = scores.softmax(dim=-1)
        for c in edits:
            s, t = c._rows(batch)
            probs[t] = c._edit_cross(probs[s], probs[t])
        for c in stores:
            s, t = c._rows(batch)
            c._store(probs[s], probs[t])
        return torch.matmul(probs.to(v.dtype), v)


class P2PAttnProcessor(HeadAttnProcessor):
    """A diffusers attention processor that routes the attention product through a ``P2PController``
    (the pre/post-processing is ``editors.attention.HeadAttnProcessor``'s)."""

    def __init__(self, controller: "P2PBatch", layer: AttnLayer, store: bool = False):
        self.controller, self.layer, self.store = controller, layer, store

    def attend(self, attn, q, k, v, mask):
        return self.controller.attend(self, attn, q, k, v, mask)
