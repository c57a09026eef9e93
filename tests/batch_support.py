"""Shared check of the batching editors' tests: ``edit_batch`` gives each sample its single edit."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch


def batch_matches_single(editor, samples, seeds: Sequence[Optional[int]], latent_tol: float,
                         image_tol: Optional[int] = None) -> tuple[list, list]:
    """Run ``edit_batch`` on ``samples`` and ``edit`` on each alone, sample k with a generator seeded ``seeds[k]``
    (None: a fresh ``torch.Generator()``, its default seed); assert every final latent differs by less than
    ``latent_tol`` and, given ``image_tol``, every uint8 image by at most that many levels. Returns (batched,
    singles) for the test's own checks."""
    def gen(seed):
        return torch.Generator() if seed is None else torch.Generator().manual_seed(seed)

    batched = editor.edit_batch(samples, [gen(s) for s in seeds])
    singles = [editor.edit(s, gen(seed)) for s, seed in zip(samples, seeds)]
    for b, one in zip(batched, singles):
        assert float(np.abs(b.extras["final_latent"] - one.extras["final_latent"]).max()) < latent_tol
        if image_tol is not None:
            assert np.abs(b.image.astype(int) - one.image.astype(int)).max() <= image_tol
    return batched, singles
