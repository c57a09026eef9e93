"""DDIM inversion, null-text inversion and negative-prompt inversion for Stable Diffusion editors.

* DDIM inversion (Song et al., ICLR 2021; as used by Prompt-to-Prompt's null-text notebook and PIE-Bench's
  ``models/p2p/inversion.py``): conditional prediction only (guidance 1); inversion step ``i`` evaluates
  the UNet at the latent ``z_i`` with timestep ``t = timesteps[-1 - i]`` and moves it from noise level
  ``t - stride`` (``final_alpha_cumprod`` below 0) to ``t``. ``z_N`` is the starting noise of the edit.
* Null-text inversion (Mokady et al., CVPR 2023): per sampling step, Adam on the unconditional embedding
  so that one guided DDIM step from the current latent lands on the DDIM trajectory; ``inner_steps``
  iterations at ``lr * (1 - lr_decay * i)``, stopping once the loss is below ``eps + i * slope``
  (checked after the update). UNet weights stay frozen (no weight gradients); the embedding, the step
  maths and the loss are fp32 whatever the model dtype. The conditional prediction is computed once per
  step and reused for the step that advances the latent (the reference recomputes it).
* Negative-prompt inversion (Miyake et al., 2023): the source prompt's embedding is the null embedding.

All latent maths is fp32; only UNet inputs are cast to the model dtype.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

Embeddings = Union[torch.Tensor, Sequence[torch.Tensor]]  # one (1, T, D) tensor, or one per sampling step


@dataclass
class UNetCounter:
    """UNet work done for one image: calls, per-sample forward evaluations, per-sample backward passes."""

    calls: int = 0
    evals: int = 0
    backward: int = 0

    def as_extras(self) -> dict:
        return {"unet_calls": self.calls, "unet_evals": self.evals, "unet_backward": self.backward}


def unet_eps(unet, x: torch.Tensor, t, context: torch.Tensor, counter: Optional[UNetCounter] = None) -> torch.Tensor:
    """Noise prediction in fp32 for latents ``x`` (fp32) and text ``context`` (batch 1 is broadcast)."""
    if context.shape[0] == 1 and x.shape[0] > 1:
        context = context.expand(x.shape[0], *context.shape[1:])
    if counter is not None:
        counter.calls += 1
        counter.evals += x.shape[0]
    out = unet(x.to(unet.dtype), t, encoder_hidden_states=context.to(unet.dtype), return_dict=False)[0]
    return out.float()


class DDIMSchedule:
    """Deterministic DDIM (eta 0) over a backbone scheduler's ``alphas_cumprod``, both directions.

    Equals ``DDIMScheduler.step`` (clip_sample off, no thresholding) for denoising and the reference
    ``next_step`` for inversion; written out because NTI backpropagates through it in fp32."""

    def __init__(self, scheduler, num_steps: int):
        from diffusers import DDIMScheduler

        sched = DDIMScheduler.from_config(scheduler.config)
        sched.set_timesteps(num_steps)
        self.num_steps = num_steps
        self.timesteps = sched.timesteps.clone()  # descending: 981, 961, ..., 1 for 50 PIE-Bench steps (steps_offset 1)
        self.stride = sched.config.num_train_timesteps // num_steps
        self.alphas_cumprod = sched.alphas_cumprod.float().clone()
        self.final_alpha = float(sched.final_alpha_cumprod)

    def alpha(self, t: int) -> float:
        t = int(t)
        return float(self.alphas_cumprod[t]) if t >= 0 else self.final_alpha

    @staticmethod
    def move(x: torch.Tensor, eps: torch.Tensor, alpha_from: float, alpha_to: float) -> torch.Tensor:
        x0 = (x - (1 - alpha_from) ** 0.5 * eps) / alpha_from ** 0.5
        return alpha_to ** 0.5 * x0 + (1 - alpha_to) ** 0.5 * eps

    def step(self, x, eps, t):
        """Denoise from timestep ``t`` to ``t - stride``."""
        return self.move(x, eps, self.alpha(t), self.alpha(int(t) - self.stride))

    def inverse_step(self, x, eps, t):
        """Invert from ``t - stride`` to ``t`` (eps predicted at ``t``)."""
        return self.move(x, eps, self.alpha(int(t) - self.stride), self.alpha(t))


@torch.no_grad()
def ddim_invert(unet, z0: torch.Tensor, cond: torch.Tensor, sched: DDIMSchedule,
                counter: Optional[UNetCounter] = None) -> list[torch.Tensor]:
    """DDIM inversion at guidance 1: returns ``[z_0, z_1, ..., z_N]`` (fp32), ``z_N`` the edit's start."""
    traj = [z0.float()]
    x = z0.float()
    for t in reversed(sched.timesteps):
        x = sched.inverse_step(x, unet_eps(unet, x, t, cond, counter), t)
        traj.append(x)
    return traj


def _uncond_at(uncond: Embeddings, i: int) -> torch.Tensor:
    return uncond if isinstance(uncond, torch.Tensor) else uncond[i]


@torch.no_grad()
def ddim_sample(unet, x_T: torch.Tensor, cond: torch.Tensor, uncond: Optional[Embeddings], sched: DDIMSchedule,
                guidance: float, counter: Optional[UNetCounter] = None) -> torch.Tensor:
    """Plain classifier-free-guided DDIM sampling from ``x_T`` (the reconstruction when ``x_T`` is an
    inversion and ``cond`` its prompt). ``uncond`` may be one embedding or one per step."""
    x = x_T.float()
    for i, t in enumerate(sched.timesteps):
        if guidance == 1 or uncond is None:
            eps = unet_eps(unet, x, t, cond, counter)
        else:
            eu, ec = unet_eps(unet, torch.cat([x, x]), t, torch.cat([_uncond_at(uncond, i), cond]), counter).chunk(2)
            eps = eu + guidance * (ec - eu)
        x = sched.step(x, eps, t)
    return x


@dataclass
class NullTextResult:
    embeddings: list[torch.Tensor]  # fp32 (B, T, D), one per sampling step (timesteps order)
    final_losses: list[float] = field(default_factory=list)  # per step: last loss, mean over the batch
    sample_iterations: list[list[int]] = field(default_factory=list)  # per step, per sample

    @property
    def iterations(self) -> list[int]:
        """Per step: the optimiser iterations run (by the sample that ran longest)."""
        return [max(step) for step in self.sample_iterations]


def null_text_inversion(unet, trajectory: Sequence[torch.Tensor], cond: torch.Tensor, uncond: torch.Tensor,
                        sched: DDIMSchedule, guidance: float = 7.5, inner_steps: int = 10,
                        early_stop_epsilon: float = 1e-5, early_stop_slope: float = 2e-5, lr: float = 1e-2,
                        lr_decay: float = 1e-2, counter: Optional[UNetCounter] = None) -> NullTextResult:
    """Optimise one null-text embedding per sampling step so guided DDIM sampling retraces ``trajectory``
    (``[z_0 .. z_N]`` from ``ddim_invert``). Each embedding warm-starts the next step's optimisation.

    A batch (``B`` latents, ``cond`` with ``B`` rows) optimises ``B`` embeddings at once and gives what
    ``B`` separate calls give: UNet rows do not interact, the loss is the sum of per-sample MSEs (so each
    embedding gets its own gradient), Adam is elementwise, and a sample that meets its early-stop
    threshold leaves the UNet batch and keeps its embedding while the others go on."""
    n = sched.num_steps
    if len(trajectory) != n + 1:
        raise ValueError(f"trajectory has {len(trajectory)} latents; expected {n + 1} for {n} steps")
    # Frozen for the optimisation whatever the caller left on (a shared backbone may have been made
    # trainable elsewhere): weight gradients would cost ~45% more backward work and are never used.
    trainable = [p for p in unet.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        return _null_text_loop(unet, trajectory, cond, uncond, sched, guidance, inner_steps,
                               early_stop_epsilon, early_stop_slope, lr, lr_decay, counter)
    finally:
        for p in trainable:
            p.requires_grad_(True)


def _null_text_loop(unet, trajectory, cond, uncond, sched, guidance, inner_steps, early_stop_epsilon,
                    early_stop_slope, lr, lr_decay, counter) -> NullTextResult:
    n = sched.num_steps
    result = NullTextResult(embeddings=[])
    with torch.inference_mode(False):
        x = trajectory[-1].detach().float().clone()
        b = x.shape[0]
        phi = uncond.detach().float().expand(b, *uncond.shape[1:]).clone()
        cond = cond.detach().clone()
        for i, t in enumerate(sched.timesteps):
            target = trajectory[n - 1 - i].detach().float()
            with torch.no_grad():
                eps_c = unet_eps(unet, x, t, cond, counter)
            done = [0] * b
            last = torch.full((b,), float("nan"), dtype=torch.float64)
            if inner_steps > 0:
                active = torch.ones(b, dtype=torch.bool)
                phi.requires_grad_(True)
                opt = torch.optim.Adam([phi], lr=lr * (1.0 - lr_decay * i))
                with torch.enable_grad():
                    for _ in range(inner_steps):
                        rows = active.nonzero().squeeze(1)
                        xa, ea = (x, eps_c) if len(rows) == b else (x[rows], eps_c[rows])
                        eps_u = unet_eps(unet, xa, t, phi if len(rows) == b else phi[rows], counter)
                        step = sched.step(xa, eps_u + guidance * (ea - eps_u), t)
                        per_sample = (step - target[rows]).pow(2).flatten(1).mean(1)
                        opt.zero_grad(set_to_none=True)
                        per_sample.sum().backward()
                        # rows that stopped get a zero gradient, but Adam's momentum would still move them
                        kept = phi.detach()[~active].clone()
                        opt.step()
                        with torch.no_grad():
                            phi[~active] = kept
                        if counter is not None:
                            counter.backward += len(rows)
                        losses = per_sample.detach().double().cpu()
                        last[rows] = losses
                        for r in rows.tolist():
                            done[r] += 1
                        active[rows[losses < early_stop_epsilon + i * early_stop_slope]] = False
                        if not active.any():
                            break
                phi = phi.detach()
            result.embeddings.append(phi.clone())
            result.sample_iterations.append(done)
            result.final_losses.append(float(last.mean()))
            with torch.no_grad():
                eps_u = unet_eps(unet, x, t, phi, counter)
                x = sched.step(x, eps_u + guidance * (eps_c - eps_u), t)
    return result


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two embeddings, flattened per batch row (``val`` 0 gives ``low``)."""
    if val <= 0:
        return low
    a, b = low.flatten(1).float(), high.flatten(1).float()
    omega = torch.acos(((a / a.norm(dim=1, keepdim=True)) * (b / b.norm(dim=1, keepdim=True))).sum(1).clamp(-1, 1))
    so = torch.sin(omega).clamp_min(1e-12)
    out = (torch.sin((1 - val) * omega) / so)[:, None] * a + (torch.sin(val * omega) / so)[:, None] * b
    return out.reshape(low.shape).to(low.dtype)


def negative_prompt_embeddings(cond: torch.Tensor, uncond: torch.Tensor, num_steps: int,
                               interp: float = 0.0) -> list[torch.Tensor]:
    """Negative-prompt inversion's null embeddings: the source prompt's embedding at every step
    (optionally slerped toward the empty prompt by ``interp``, PnPInversion's ``npi_interp``)."""
    emb = slerp(interp, cond, uncond)
    return [emb] * num_steps


# ---------------------------------------------------------------------------------------------
# inversion sharing between editors of one process (ddim_p2p, nti_p2p, npi_p2p invert identically)


@dataclass
class CachedInversion:
    trajectory: list[torch.Tensor]  # on the CPU
    nbytes: int


class InversionCache:
    """LRU of DDIM trajectories keyed by (backbone, dtype, steps, sample id, prompt, image hash), kept on
    the CPU under a byte budget (``PIE_BENCH_INVERSION_CACHE_MB``, default 2048; 0 disables)."""

    def __init__(self, budget_bytes: Optional[int] = None):
        if budget_bytes is None:
            budget_bytes = int(float(os.environ.get("PIE_BENCH_INVERSION_CACHE_MB", "2048")) * 2 ** 20)
        self.budget = budget_bytes
        self._items: "OrderedDict[tuple, CachedInversion]" = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def key(model_id: str, dtype, device, num_steps: int, sample_id: str, prompt: str, image: np.ndarray) -> tuple:
        digest = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
        return (model_id, str(dtype), str(torch.device(device).type), num_steps, sample_id, prompt, digest)

    def get(self, key: tuple, device) -> Optional[list[torch.Tensor]]:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
        return [z.to(device) for z in item.trajectory]

    def put(self, key: tuple, trajectory: Sequence[torch.Tensor]) -> None:
        cpu = [z.detach().to("cpu", copy=True) for z in trajectory]
        nbytes = sum(z.numel() * z.element_size() for z in cpu)
        if nbytes > self.budget:
            return
        with self._lock:
            self._items[key] = CachedInversion(cpu, nbytes)
            self._items.move_to_end(key)
            while sum(i.nbytes for i in self._items.values()) > self.budget:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0


INVERSION_CACHE = InversionCache()


def invert_shared(bb, samples, prompts: Sequence[str], cond: torch.Tensor, sched: DDIMSchedule,
                  counter: Optional[UNetCounter] = None, share: bool = True) -> tuple[list[torch.Tensor], int]:
    """DDIM trajectories (guidance 1, prompt ``prompts[j]`` embedded as ``cond[j]``) of ``samples``, batched,
    through ``INVERSION_CACHE``: any editor of this process that inverts the same image with the same
    prompt, model and steps (e.g. ``masactrl`` / ``direct_inversion_masactrl`` with the empty prompt, the
    PnP editors and the P2P ones with the source prompt) reuses it. Returns ``([z_0 .. z_N] with B rows
    each, how many samples came from the cache)``."""
    keys = [INVERSION_CACHE.key(bb.model_id, bb.dtype, bb.device, sched.num_steps, s.id, p, s.image)
            for s, p in zip(samples, prompts)]
    trajs = [INVERSION_CACHE.get(k, bb.device) if share else None for k in keys]
    cached = sum(t is not None for t in trajs)
    todo = [j for j, t in enumerate(trajs) if t is None]
    if todo:
        z0 = torch.cat([bb.encode_image(samples[j].image).float() for j in todo])
        fresh = ddim_invert(bb.unet, z0, cond[todo], sched, counter)
        for r, j in enumerate(todo):
            trajs[j] = [z[r:r + 1] for z in fresh]
            if share:
                INVERSION_CACHE.put(keys[j], trajs[j])
    return [torch.cat(zs) for zs in zip(*trajs)], cached
