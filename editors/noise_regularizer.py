"""Pix2Pix-Zero's inversion noise regulariser (Parmar et al., SIGGRAPH 2023, §3.1): gradient steps that push
a predicted ε toward i.i.d. N(0, 1) — an auto-correlation loss over a pyramid with random rolls and a KL
term. Its own module to keep ``editors/pix2pix_zero.py`` small; only that editor uses it.
"""
from __future__ import annotations

import random
import torch
import torch.nn.functional as F


def roll_rng(generator: torch.Generator) -> random.Random:
    """The Python RNG the roll amounts come from: seeded with the sample's seed, as PIE-Bench's driver
    reseeds Python's global RNG (``random.seed(1234)``) before every sample."""
    return random.Random(generator.initial_seed())


def draw_rolls(shape: torch.Size, rng: random.Random) -> list[torch.Tensor]:
    """Random roll amounts, one per (batch, channel) map and pyramid level, in [0, size/2).

    ``rng.randrange`` one at a time in (batch, channel, level) order: the authors' loop draws Python
    ``randrange(size // 2)`` per channel, then per level, so the same seed gives the same rolls."""
    b, c, h, _ = shape
    sizes = [h]
    while sizes[-1] > 8:
        sizes.append(sizes[-1] // 2)
    amounts = [[rng.randrange(s // 2) for s in sizes] for _ in range(b * c)]
    return [torch.tensor([a[i] for a in amounts]) for i in range(len(sizes))]


def auto_corr_loss(eps: torch.Tensor, rolls: list[torch.Tensor]) -> torch.Tensor:
    """Σ over maps and pyramid levels of mean(ε·roll(ε, k))² along height and width, vectorised over
    maps (each map has its own roll amount)."""
    x = eps.flatten(0, 1)  # (maps, H, W)
    loss = x.new_zeros(())
    for level, shifts in enumerate(rolls):
        h, w = x.shape[-2:]
        shifts = shifts.to(x.device)[:, None]
        rows = (torch.arange(h, device=x.device)[None] - shifts) % h  # torch.roll: out[i] = in[i - k]
        cols = (torch.arange(w, device=x.device)[None] - shifts) % w
        rolled_h = x.gather(1, rows[:, :, None].expand(-1, -1, w))
        rolled_w = x.gather(2, cols[:, None, :].expand(-1, h, -1))
        loss = loss + (x * rolled_h).mean((1, 2)).pow(2).sum() + (x * rolled_w).mean((1, 2)).pow(2).sum()
        if level + 1 < len(rolls):
            x = F.avg_pool2d(x[:, None], kernel_size=2)[:, 0]
    return loss


def kl_loss(eps: torch.Tensor) -> torch.Tensor:
    mean, var = eps.mean(), eps.var()
    return var + mean**2 - 1 - torch.log(var + 1e-7)


def regularize_noise(eps: torch.Tensor, rng, lambda_ac: float = 20.0,
                     lambda_kl: float = 20.0, num_reg_steps: int = 5, num_ac_rolls: int = 5) -> torch.Tensor:
    """Gradient steps on the predicted noise (in fp32 whatever the model dtype).

    ``rng``: one ``random.Random`` (``roll_rng``), or a list with one per batch row (``edit_batch``): each
    row then draws its rolls from its own RNG and gets its own KL term, so every row is regularised
    exactly as it would be alone, in one vectorised pass."""
    e = eps.detach().float()
    per_row = isinstance(rng, (list, tuple))
    if per_row and len(rng) != e.shape[0]:
        raise ValueError(f"regularize_noise: {len(rng)} RNGs for a batch of {e.shape[0]}")

    def rolls():
        if not per_row:
            return draw_rolls(e.shape, rng)
        parts = [draw_rolls((1, *e.shape[1:]), r) for r in rng]
        return [torch.cat(level) for level in zip(*parts)]

    def kl(var):
        return sum(kl_loss(var[i:i + 1]) for i in range(var.shape[0])) if per_row else kl_loss(var)

    with torch.enable_grad():
        for _ in range(num_reg_steps):
            if lambda_ac > 0:
                for _ in range(num_ac_rolls):
                    var = e.clone().requires_grad_(True)
                    (grad,) = torch.autograd.grad(auto_corr_loss(var, rolls()), var)
                    e = e - lambda_ac * grad / num_ac_rolls
            if lambda_kl > 0:
                var = e.clone().requires_grad_(True)
                (grad,) = torch.autograd.grad(kl(var), var)
                e = e - lambda_kl * grad
    return e.to(eps.dtype)
