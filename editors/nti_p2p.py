"""Null-text inversion + Prompt-to-Prompt (``nti_p2p``; PIE-Bench ``null-text-inversion+p2p``).

Mokady et al., "Null-text Inversion for Editing Real Images using Guided Diffusion Models", CVPR 2023
(``google/prompt-to-prompt: null_text_w_ptp.ipynb``; PIE-Bench's copy ``models/p2p/inversion.py``).
DDIM inversion at guidance 1, then per step Adam on the null-text embedding: ``inner_steps`` 10,
lr 1e-2 * (1 - i/100), early stop when the loss < 1e-5 + i * 2e-5, guidance 7.5; then the P2P edit with
the optimised embeddings (PIE-Bench: cross 0.4, self 0.6, Refine, LocalBlend, target word x2).

UNet weights are frozen (the reference leaves them trainable: ~45% more backward work and a full set of
weight gradients); the embedding, DDIM step and loss are fp32 whatever the model dtype (fp16 fails to
optimise it, diffusers #6329). The community diffusers port defaults ``early_stop_epsilon`` to 1e-6;
PIE-Bench uses 1e-5.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from editors.inversion import null_text_inversion
from editors.p2p.editor import InversionP2PEditor, P2PEditConfig
from pie_bench.core.errors import ConfigError


@dataclass
class NullTextP2PConfig(P2PEditConfig):
    inner_steps: int = 10               # num_inner_steps
    early_stop_epsilon: float = 1e-5
    early_stop_slope: float = 2e-5      # threshold grows by this per step: eps + i * slope
    learning_rate: float = 1e-2
    lr_decay: float = 1e-2              # lr_i = learning_rate * (1 - lr_decay * i)


class NullTextP2PEditor(InversionP2PEditor):
    name = "nti_p2p"
    Config = NullTextP2PConfig
    paper = "Null-text inversion (Mokady et al., CVPR 2023) + Prompt-to-Prompt; PIE-Bench settings"

    def load(self, backbone="toy", device="cpu", dtype=torch.float32):
        super().load(backbone, device, dtype)
        if self.config.inner_steps < 0:
            raise ConfigError(f"--editor-arg {self.name}.inner_steps must be >= 0")

    def null_embeddings(self, *, trajectory, cond_src, uncond, sched, counter, extras):
        cfg = self.config
        res = null_text_inversion(self.backbone.unet, trajectory, cond_src, uncond, sched,
                                  guidance=cfg.guidance_scale, inner_steps=cfg.inner_steps,
                                  early_stop_epsilon=cfg.early_stop_epsilon, early_stop_slope=cfg.early_stop_slope,
                                  lr=cfg.learning_rate, lr_decay=cfg.lr_decay, counter=counter)
        extras["per_sample"] = [{"nti_iterations": int(sum(step[j] for step in res.sample_iterations))}
                                for j in range(len(cond_src))]
        return res.embeddings
